//! Weights on the device (`GpuModel`): every matrix in the storage the kernels read, with the
//! fusions the graph relies on (q/k/v rows concatenated, gate/up rows interleaved, the PLT
//! gate's parts in one buffer) made by the load plan's targets. The device sink writes each
//! chunk of a tensor where its target says, with `queue.write_buffer` at an offset into buffers
//! created from the plan's sizes.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::WeightFormat;
use crate::gpu::Gpu;
use crate::load::{host_plan, BufferId, HostSource, LayerBuffer, LoadPlan, OpenModel, Place, PlannedTensor, Sink};
use crate::weights::{DType, Weights};
use std::collections::HashMap;
use std::sync::Arc;

/// Weights on the device. Each matrix is stored in its own format (f32, packed f16, or the
/// file's quantised blocks as records: `crate::format`); vectors as f32.
pub struct GpuModel {
    pub cfg: Config,
    pub gpu: Arc<Gpu>,
    /// Storage dtype of the matrices that are not kept quantised (F32 or F16).
    pub dtype: DType,
    /// Every buffer's storage on the device (`LoadPlan::formats`).
    pub(crate) formats: HashMap<BufferId, WeightFormat>,
    pub(crate) embed: wgpu::Buffer,           // [V, D]
    pub(crate) lm_head: Option<wgpu::Buffer>, // [V, D]; None: tied to `embed`
    pub(crate) norm: wgpu::Buffer,            // [D]
    pub(crate) layers: Vec<GpuLayer>,
    pub(crate) dummy: wgpu::Buffer,
}

pub(crate) struct GpuLayer {
    pub(crate) input_layernorm: wgpu::Buffer,          // [D]
    pub(crate) qkv_proj: wgpu::Buffer,                 // [H*Dh + 2*Hkv*Dh, D]: q_proj | k_proj | v_proj rows
    pub(crate) qkv_bias: Option<wgpu::Buffer>,         // [H*Dh + 2*Hkv*Dh]
    pub(crate) o_proj: wgpu::Buffer,                   // [D, H*Dh]
    pub(crate) post_attention_layernorm: wgpu::Buffer, // [D]
    pub(crate) gate_up_proj: wgpu::Buffer,             // [2F, D]: rows gate_0, up_0, gate_1, up_1, ..
    pub(crate) down_proj: wgpu::Buffer,                // [D, F]
    pub(crate) plt_gate: Option<wgpu::Buffer>,         // [H*GW] weight | [H] bias | [D] gate_norm
}

impl GpuModel {
    /// Uploads `w` (weights already in host memory). `dtype` is the matrices' device storage:
    /// F32 or F16 (BF16 is stored as F32); `None` keeps F16 for F16 checkpoints and F32 otherwise.
    pub fn new(gpu: Arc<Gpu>, cfg: &Config, w: &Weights, dtype: Option<DType>) -> Result<GpuModel> {
        GpuModel::new_with_progress(gpu, cfg, w, dtype, &mut |_| {})
    }

    /// `new`, calling `progress(fraction)` as tensors are uploaded.
    pub fn new_with_progress(
        gpu: Arc<Gpu>,
        cfg: &Config,
        w: &Weights,
        dtype: Option<DType>,
        progress: &mut dyn FnMut(f32),
    ) -> Result<GpuModel> {
        cfg.validate()?;
        let plan = host_plan(cfg, w)?;
        let source = HostSource::new(&plan, w);
        GpuModel::load(gpu, OpenModel::new(plan, vec![Box::new(source)]), dtype, progress)
    }

    /// Streams an opened model's tensors into device buffers made from its plan; no tensor is
    /// held whole in host memory. `dtype` as for `new`, and with `None` the matrices a GGUF
    /// file holds in 32-weight-block formats stay quantised on the device (`LoadPlan::formats`:
    /// other matrices, and fused ones whose parts differ, are dequantised); an explicit dtype
    /// dequantises every matrix to it.
    pub fn load(gpu: Arc<Gpu>, mut model: OpenModel<'_>, dtype: Option<DType>, progress: &mut dyn FnMut(f32)) -> Result<GpuModel> {
        let cfg = model.plan.cfg.clone();
        cfg.validate()?;
        let formats = model.plan.formats(dtype);
        let dtype = model.plan.device_dtype(dtype);
        let mut sink = DeviceSink { gpu: &gpu, formats: formats.clone(), buffers: HashMap::new(), held: HashMap::new(), bytes: Vec::new(), unsubmitted: 0 };
        model.stream(&mut sink, progress)?;
        let mut b = sink.buffers;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let mut take = |lb: LayerBuffer| b.remove(&BufferId::Layer(i, lb));
            let missing = |what: &str| Error::Input(format!("the load plan has no `layers.{i}.{what}`"));
            layers.push(GpuLayer {
                input_layernorm: take(LayerBuffer::InputLayernorm).ok_or_else(|| missing("input_layernorm"))?,
                qkv_proj: take(LayerBuffer::QkvProj).ok_or_else(|| missing("qkv_proj"))?,
                qkv_bias: take(LayerBuffer::QkvBias),
                o_proj: take(LayerBuffer::OProj).ok_or_else(|| missing("o_proj"))?,
                post_attention_layernorm: take(LayerBuffer::PostAttentionLayernorm).ok_or_else(|| missing("post_attention_layernorm"))?,
                gate_up_proj: take(LayerBuffer::GateUpProj).ok_or_else(|| missing("gate_up_proj"))?,
                down_proj: take(LayerBuffer::DownProj).ok_or_else(|| missing("down_proj"))?,
                plt_gate: take(LayerBuffer::PltGate).filter(|_| cfg.is_plt()),
            });
        }
        let missing = |what: &str| Error::Input(format!("the load plan has no `{what}`"));
        let embed = b.remove(&BufferId::EmbedTokens).ok_or_else(|| missing("embed_tokens"))?;
        let lm_head = b.remove(&BufferId::LmHead);
        let norm = b.remove(&BufferId::Norm).ok_or_else(|| missing("norm"))?;
        let dummy = gpu.storage("dummy", 16)?;
        gpu.check()?;
        progress(1.0);
        Ok(GpuModel { cfg, gpu, dtype, formats, embed, lm_head, norm, layers, dummy })
    }

    /// Loads `config.json` and the safetensors of `dir` onto `gpu` (see `new` for `dtype`).
    pub fn load_dir(gpu: Arc<Gpu>, dir: &std::path::Path, dtype: Option<DType>) -> Result<GpuModel> {
        let cfg = Config::from_file(&dir.join("config.json"))?;
        GpuModel::load(gpu, crate::load::open_checkpoint(dir, cfg)?, dtype, &mut |_| {})
    }

    /// Every weight buffer's label and bytes as the device holds them (sizes rounded up to 16
    /// bytes), in upload order: for tests that check what the loader wrote.
    pub async fn read_back(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut named: Vec<(String, &wgpu::Buffer)> = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let parts = [
                ("qkv_bias", l.qkv_bias.as_ref()),
                ("plt_gate", l.plt_gate.as_ref()),
                ("input_layernorm", Some(&l.input_layernorm)),
                ("qkv_proj", Some(&l.qkv_proj)),
                ("o_proj", Some(&l.o_proj)),
                ("post_attention_layernorm", Some(&l.post_attention_layernorm)),
                ("gate_up_proj", Some(&l.gate_up_proj)),
                ("down_proj", Some(&l.down_proj)),
            ];
            for (name, b) in parts {
                if let Some(b) = b {
                    named.push((format!("layers.{i}.{name}"), b));
                }
            }
        }
        named.push(("embed_tokens".into(), &self.embed));
        if let Some(b) = &self.lm_head {
            named.push(("lm_head".into(), b));
        }
        named.push(("norm".into(), &self.norm));
        let mut out = Vec::with_capacity(named.len());
        for (name, b) in named {
            let rb = self.gpu.readback(&name, b.size())?;
            let mut enc = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("read back") });
            enc.copy_buffer_to_buffer(b, 0, &rb, 0, b.size());
            self.gpu.queue.submit([enc.finish()]);
            out.push((name, self.gpu.read(&rb, b.size()).await?));
        }
        Ok(out)
    }

    /// The storage of a weight buffer on the device.
    pub fn format(&self, id: BufferId) -> WeightFormat {
        self.formats.get(&id).copied().unwrap_or(WeightFormat::F32)
    }

    /// The storage of the lm_head's matrix (the embedding's when tied).
    pub fn head_format(&self) -> WeightFormat {
        self.format(if self.lm_head.is_some() { BufferId::LmHead } else { BufferId::EmbedTokens })
    }

    /// Bytes of weights one pass reads (every matrix once, plus the lm_head rows it needs).
    pub fn weight_bytes(&self) -> u64 {
        let c = &self.cfg;
        let (d, f) = (c.hidden_size, c.intermediate_size);
        let mut total = self.head_format().bytes(c.vocab_size * d);
        for i in 0..c.num_hidden_layers {
            let m = |b: LayerBuffer, elems: usize| self.format(BufferId::Layer(i, b)).bytes(elems);
            total += m(LayerBuffer::QkvProj, (c.q_dim() + 2 * c.kv_dim()) * d) + m(LayerBuffer::OProj, d * c.q_dim());
            total += m(LayerBuffer::GateUpProj, 2 * f * d) + m(LayerBuffer::DownProj, d * f);
        }
        total
    }
}


/// Bytes written between submits: each submit lets wgpu release the staging memory of the
/// writes before it, so uploading never holds more than about this much of it.
const SUBMIT_EVERY: usize = 16 << 20;

/// The sink that writes a plan's tensors into device buffers.
struct DeviceSink<'g> {
    gpu: &'g Gpu,
    /// Each buffer's format (`LoadPlan::formats`): vectors F32, matrices F32, F16 or quantised.
    formats: HashMap<BufferId, WeightFormat>,
    buffers: HashMap<BufferId, wgpu::Buffer>,
    /// The first tensor of an interleaved pair (gate or up), in device bytes, until its partner
    /// arrives: (lane, bytes).
    held: HashMap<BufferId, (usize, Vec<u8>)>,
    /// Scratch for one chunk's device bytes.
    bytes: Vec<u8>,
    unsubmitted: usize,
}

impl DeviceSink<'_> {
    fn format(&self, id: BufferId) -> WeightFormat {
        self.formats.get(&id).copied().unwrap_or(WeightFormat::F32)
    }

    /// `values` in the (float) storage of buffer `id`, appended to `out`.
    fn encode(&self, id: BufferId, values: &[f32], out: &mut Vec<u8>) {
        if self.format(id) == WeightFormat::F16 {
            out.extend(values.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()));
        } else {
            out.extend_from_slice(bytemuck::cast_slice(values));
        }
    }

    /// Writes `data` at byte `offset` of buffer `id`; a write of a length that is not a multiple
    /// of 4 (the last value of an odd-length f16 matrix) is padded with zeros, which the buffer
    /// holds anyway (its size is rounded up to 16 bytes).
    fn write(&mut self, id: BufferId, offset: u64, data: &mut Vec<u8>) -> Result<()> {
        let buf = self.buffers.get(&id).ok_or_else(|| Error::Input(format!("the load plan has no buffer for {id:?}")))?;
        if offset % wgpu::COPY_BUFFER_ALIGNMENT != 0 {
            return Err(Error::Gpu(format!("a write into {id:?} at byte {offset} is not 4-byte aligned")));
        }
        while data.len() % wgpu::COPY_BUFFER_ALIGNMENT as usize != 0 {
            data.push(0);
        }
        if !data.is_empty() {
            self.gpu.queue.write_buffer(buf, offset, data);
        }
        self.unsubmitted += data.len();
        if self.unsubmitted >= SUBMIT_EVERY {
            self.gpu.queue.submit(std::iter::empty());
            let _ = self.gpu.device.poll(wgpu::PollType::Poll);
            self.unsubmitted = 0;
        }
        Ok(())
    }

    /// Places rows `first_row..` of `t`, already in the buffer's storage (`mine`: whole rows),
    /// where its target says: at an element offset, or interleaved with its partner's rows.
    fn place(&mut self, t: &PlannedTensor, first_row: usize, mine: Vec<u8>) -> Result<()> {
        let id = t.target.buffer;
        let format = self.format(id);
        let cols = t.cols();
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.clear();
        match t.target.place {
            Place::At(at) => {
                // Element offsets of a quantised buffer are whole rows of whole blocks.
                bytes.extend_from_slice(&mine);
                self.write(id, format.bytes(at + first_row * cols), &mut bytes)?;
            }
            Place::Interleaved(lane) => match self.held.remove(&id) {
                // The partner is whole (tensors arrive one after another): pair the rows.
                Some((held_lane, other)) if held_lane != lane => {
                    let row = format.row_bytes(cols);
                    let rows = mine.len() / row.max(1);
                    for r in 0..rows {
                        let theirs = other.get((first_row + r) * row..(first_row + r + 1) * row).ok_or_else(|| {
                            Error::Input(format!("tensor `{}`: its interleaved partner has fewer rows", t.name))
                        })?;
                        let ours = &mine[r * row..(r + 1) * row];
                        let (a, b) = if lane == 0 { (ours, theirs) } else { (theirs, ours) };
                        bytes.extend_from_slice(a);
                        bytes.extend_from_slice(b);
                    }
                    self.write(id, (2 * first_row * row) as u64, &mut bytes)?;
                    if first_row + rows < t.rows() {
                        self.held.insert(id, (held_lane, other));
                    }
                }
                // The first of the pair: keep it until the other arrives.
                held => {
                    let (_, mut kept) = held.unwrap_or((lane, Vec::new()));
                    kept.extend_from_slice(&mine);
                    self.held.insert(id, (lane, kept));
                }
            },
        }
        self.bytes = bytes;
        Ok(())
    }
}

impl Sink for DeviceSink<'_> {
    /// Creates every buffer of the plan (zero-filled, so absent biases read as zeros).
    fn begin(&mut self, plan: &LoadPlan) -> Result<()> {
        for b in &plan.buffers {
            let bytes = self.format(b.id).bytes(b.elems);
            self.buffers.insert(b.id, self.gpu.storage(&b.label, bytes)?);
        }
        Ok(())
    }

    fn wants_blocks(&self, t: &PlannedTensor) -> bool {
        self.format(t.target.buffer).is_quantised()
    }

    fn blocks(&mut self, t: &PlannedTensor, first_row: usize, raw: &[u8]) -> Result<()> {
        let format = self.format(t.target.buffer);
        if format.ggml() != t.storage {
            return Err(Error::Input(format!("tensor `{}`: {} blocks for a {} buffer", t.name, t.storage.name(), format.name())));
        }
        let mut mine = Vec::new();
        format.repack(raw, &mut mine).map_err(|e| Error::Input(format!("tensor `{}`: {e}", t.name)))?;
        self.place(t, first_row, mine)
    }

    fn rows(&mut self, t: &PlannedTensor, first_row: usize, values: &[f32]) -> Result<()> {
        let format = self.format(t.target.buffer);
        if format.is_quantised() {
            return Err(Error::Input(format!("tensor `{}`: f32 values for a {} buffer", t.name, format.name())));
        }
        let mut mine = Vec::with_capacity(values.len() * 4);
        self.encode(t.target.buffer, values, &mut mine);
        self.place(t, first_row, mine)
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(id) = self.held.keys().next() {
            return Err(Error::Input(format!("{id:?}: one half of the interleaved pair never arrived")));
        }
        self.gpu.queue.submit(std::iter::empty());
        Ok(())
    }
}
