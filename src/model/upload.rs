//! Weights on the device (`GpuModel`): every matrix in the storage the kernels read, with the
//! fusions the graph relies on (q/k/v rows concatenated, gate/up rows interleaved, the PLT
//! gate's parts in one buffer) made by the load plan's targets. The device sink writes each
//! chunk of a tensor where its target says, with `queue.write_buffer` at an offset into buffers
//! created from the plan's sizes.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::WeightFormat;
use crate::gpu::Gpu;
use crate::load::{host_plan, BufferId, BufferLayout, HostSource, LayerBuffer, LoadPlan, OpenModel, PartPlan, Place, PlannedTensor, Sink};
use crate::weights::{DType, Weights};
use std::collections::HashMap;
use std::sync::Arc;

/// Weights on the device. Each matrix is stored in the formats of its tensors (f32, packed f16,
/// or the file's quantised blocks as records: `crate::format`), in parts that fit the binding
/// limit (`Matrix`); vectors as f32.
pub struct GpuModel {
    pub cfg: Config,
    pub gpu: Arc<Gpu>,
    /// Storage dtype of the matrices that are not kept quantised (F32 or F16).
    pub dtype: DType,
    /// Every buffer's layout on the device (`LoadPlan::layouts`).
    pub(crate) layouts: HashMap<BufferId, BufferLayout>,
    pub(crate) embed: Matrix,           // [V, D]
    pub(crate) lm_head: Option<Matrix>, // [V, D]; None: tied to `embed`
    pub(crate) norm: wgpu::Buffer,      // [D]
    pub(crate) layers: Vec<GpuLayer>,
    pub(crate) dummy: wgpu::Buffer,
}

/// A matrix on the device: one buffer per part of its layout (`BufferLayout`). A part's row j
/// computes output column `out0 + j * step`; the matmuls dispatch once per part.
pub(crate) struct Matrix {
    pub(crate) parts: Vec<(wgpu::Buffer, PartPlan)>,
    /// Gate/up pairs interleaved in one format (the SwiGLU epilogue's layout).
    pub(crate) interleaved: bool,
}

pub(crate) struct GpuLayer {
    pub(crate) input_layernorm: wgpu::Buffer,          // [D]
    pub(crate) qkv_proj: Matrix,                       // [H*Dh + 2*Hkv*Dh, D]: q_proj | k_proj | v_proj rows
    pub(crate) qkv_bias: Option<wgpu::Buffer>,         // [H*Dh + 2*Hkv*Dh]
    pub(crate) o_proj: Matrix,                         // [D, H*Dh]
    pub(crate) post_attention_layernorm: wgpu::Buffer, // [D]
    pub(crate) gate_up_proj: Matrix,                   // [2F, D]: rows gate_0, up_0, gate_1, up_1, .. (or apart)
    pub(crate) down_proj: Matrix,                      // [D, F]
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
        let layouts = model.plan.layouts(dtype, gpu.weight_window())?;
        let dtype = model.plan.device_dtype(dtype);
        let mut sink = DeviceSink { gpu: &gpu, layouts: layouts.clone(), buffers: HashMap::new(), held: HashMap::new(), bytes: Vec::new(), unsubmitted: 0 };
        model.stream(&mut sink, progress)?;
        let mut b = sink.buffers;
        let mut matrix = |id: BufferId| {
            let bufs = b.remove(&id)?;
            let l = &layouts[&id];
            Some(Matrix { parts: bufs.into_iter().zip(l.parts.iter().copied()).collect(), interleaved: l.interleaved })
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let missing = |what: &str| Error::Input(format!("the load plan has no `layers.{i}.{what}`"));
            let id = |lb| BufferId::Layer(i, lb);
            let mut vector = |lb| matrix(id(lb)).and_then(|m| m.parts.into_iter().next()).map(|p| p.0);
            let input_layernorm = vector(LayerBuffer::InputLayernorm).ok_or_else(|| missing("input_layernorm"))?;
            let qkv_bias = vector(LayerBuffer::QkvBias);
            let post_attention_layernorm = vector(LayerBuffer::PostAttentionLayernorm).ok_or_else(|| missing("post_attention_layernorm"))?;
            let plt_gate = vector(LayerBuffer::PltGate).filter(|_| cfg.is_plt());
            layers.push(GpuLayer {
                input_layernorm,
                qkv_proj: matrix(id(LayerBuffer::QkvProj)).ok_or_else(|| missing("qkv_proj"))?,
                qkv_bias,
                o_proj: matrix(id(LayerBuffer::OProj)).ok_or_else(|| missing("o_proj"))?,
                post_attention_layernorm,
                gate_up_proj: matrix(id(LayerBuffer::GateUpProj)).ok_or_else(|| missing("gate_up_proj"))?,
                down_proj: matrix(id(LayerBuffer::DownProj)).ok_or_else(|| missing("down_proj"))?,
                plt_gate,
            });
        }
        let missing = |what: &str| Error::Input(format!("the load plan has no `{what}`"));
        let embed = matrix(BufferId::EmbedTokens).ok_or_else(|| missing("embed_tokens"))?;
        let lm_head = matrix(BufferId::LmHead);
        let norm = matrix(BufferId::Norm).and_then(|m| m.parts.into_iter().next()).map(|p| p.0).ok_or_else(|| missing("norm"))?;
        let dummy = gpu.storage("dummy", 16)?;
        gpu.check()?;
        progress(1.0);
        Ok(GpuModel { cfg, gpu, dtype, layouts, embed, lm_head, norm, layers, dummy })
    }

    /// Loads `config.json` and the safetensors of `dir` onto `gpu` (see `new` for `dtype`).
    pub fn load_dir(gpu: Arc<Gpu>, dir: &std::path::Path, dtype: Option<DType>) -> Result<GpuModel> {
        let cfg = Config::from_file(&dir.join("config.json"))?;
        GpuModel::load(gpu, crate::load::open_checkpoint(dir, cfg)?, dtype, &mut |_| {})
    }

    /// Every weight buffer's label and bytes as the device holds them (the parts of a matrix
    /// one after another, each rounded up to 16 bytes), in upload order: for tests that check
    /// what the loader wrote.
    pub async fn read_back(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut named: Vec<(String, Vec<&wgpu::Buffer>)> = Vec::new();
        fn parts(m: &Matrix) -> Vec<&wgpu::Buffer> {
            m.parts.iter().map(|p| &p.0).collect()
        }
        for (i, l) in self.layers.iter().enumerate() {
            let list = [
                ("qkv_bias", l.qkv_bias.iter().collect::<Vec<_>>()),
                ("plt_gate", l.plt_gate.iter().collect()),
                ("input_layernorm", vec![&l.input_layernorm]),
                ("qkv_proj", parts(&l.qkv_proj)),
                ("o_proj", parts(&l.o_proj)),
                ("post_attention_layernorm", vec![&l.post_attention_layernorm]),
                ("gate_up_proj", parts(&l.gate_up_proj)),
                ("down_proj", parts(&l.down_proj)),
            ];
            for (name, b) in list {
                if !b.is_empty() {
                    named.push((format!("layers.{i}.{name}"), b));
                }
            }
        }
        named.push(("embed_tokens".into(), parts(&self.embed)));
        if let Some(m) = &self.lm_head {
            named.push(("lm_head".into(), parts(m)));
        }
        named.push(("norm".into(), vec![&self.norm]));
        let mut out = Vec::with_capacity(named.len());
        for (name, bufs) in named {
            let mut bytes = Vec::new();
            for b in bufs {
                let rb = self.gpu.readback(&name, b.size())?;
                let mut enc = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("read back") });
                enc.copy_buffer_to_buffer(b, 0, &rb, 0, b.size());
                self.gpu.queue.submit([enc.finish()]);
                bytes.extend(self.gpu.read(&rb, b.size()).await?);
            }
            out.push((name, bytes));
        }
        Ok(out)
    }

    /// The storage of a weight buffer on the device: the format of its first part (`formats`
    /// lists every one of a fused matrix whose tensors differ).
    pub fn format(&self, id: BufferId) -> WeightFormat {
        self.formats(id).first().copied().unwrap_or(WeightFormat::F32)
    }

    /// The formats of a weight buffer's parts, in row order, each once where neighbours repeat.
    pub fn formats(&self, id: BufferId) -> Vec<WeightFormat> {
        self.layouts.get(&id).map(|l| l.formats()).unwrap_or_default()
    }

    /// Device buffers a weight buffer is split into (more than one: a fused matrix of several
    /// formats, or one past the binding limit).
    pub fn parts(&self, id: BufferId) -> usize {
        self.layouts.get(&id).map(|l| l.parts.len()).unwrap_or(0)
    }

    /// The buffer of the lm_head's matrix (the embedding's when tied).
    pub fn head_id(&self) -> BufferId {
        if self.lm_head.is_some() {
            BufferId::LmHead
        } else {
            BufferId::EmbedTokens
        }
    }

    /// Bytes of weights one pass reads (every matrix once, plus the lm_head rows it needs).
    pub fn weight_bytes(&self) -> u64 {
        let bytes = |id: BufferId| self.layouts.get(&id).map(|l| l.bytes()).unwrap_or(0);
        let mut total = bytes(self.head_id());
        for i in 0..self.cfg.num_hidden_layers {
            for b in [LayerBuffer::QkvProj, LayerBuffer::OProj, LayerBuffer::GateUpProj, LayerBuffer::DownProj] {
                total += bytes(BufferId::Layer(i, b));
            }
        }
        total
    }

    /// (format, device bytes) of each part of a weight buffer.
    pub fn part_bytes(&self, id: BufferId) -> Vec<(WeightFormat, u64)> {
        self.layouts.get(&id).map(|l| l.parts.iter().map(|p| (p.format, p.bytes(l.cols))).collect()).unwrap_or_default()
    }

    /// Bytes of the lm_head's matrix on the device.
    pub fn head_bytes(&self) -> u64 {
        self.layouts.get(&self.head_id()).map(|l| l.bytes()).unwrap_or(0)
    }
}


/// Bytes written between submits: each submit lets wgpu release the staging memory of the
/// writes before it, so uploading never holds more than about this much of it.
const SUBMIT_EVERY: usize = 16 << 20;

/// The sink that writes a plan's tensors into device buffers.
struct DeviceSink<'g> {
    gpu: &'g Gpu,
    /// Each buffer's layout (`LoadPlan::layouts`): vectors F32, matrices in parts of F32, F16
    /// or quantised records.
    layouts: HashMap<BufferId, BufferLayout>,
    /// Each buffer's parts.
    buffers: HashMap<BufferId, Vec<wgpu::Buffer>>,
    /// The first tensor of an interleaved pair (gate or up), in device bytes, until its partner
    /// arrives: (lane, bytes).
    held: HashMap<BufferId, (usize, Vec<u8>)>,
    /// Scratch for one chunk's device bytes.
    bytes: Vec<u8>,
    unsubmitted: usize,
}

impl DeviceSink<'_> {
    fn layout(&self, id: BufferId) -> Result<&BufferLayout> {
        self.layouts.get(&id).ok_or_else(|| Error::Input(format!("the load plan has no buffer for {id:?}")))
    }

    /// The device format of tensor `t`'s rows: the format of the part its first row lands in.
    fn format_of(&self, t: &PlannedTensor) -> Result<WeightFormat> {
        let l = self.layout(t.target.buffer)?;
        if !l.matrix {
            return Ok(WeightFormat::F32);
        }
        let row = l.storage_row(t.target.place, t.rows(), 0);
        let (part, _) = l.locate(row).ok_or_else(|| Error::Input(format!("tensor `{}`: row {row} is outside its buffer", t.name)))?;
        Ok(l.parts[part].format)
    }

    /// `values` in `format` (a float one), appended to `out`.
    fn encode(format: WeightFormat, values: &[f32], out: &mut Vec<u8>) {
        if format == WeightFormat::F16 {
            out.extend(values.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()));
        } else {
            out.extend_from_slice(bytemuck::cast_slice(values));
        }
    }

    /// Writes `data` at byte `offset` of part `part` of buffer `id`; a write of a length that is
    /// not a multiple of 4 (the last value of an odd-length f16 matrix) is padded with zeros,
    /// which the buffer holds anyway (its size is rounded up to 16 bytes).
    fn write(&mut self, id: BufferId, part: usize, offset: u64, data: &mut Vec<u8>) -> Result<()> {
        let buf = self.buffers.get(&id).and_then(|b| b.get(part)).ok_or_else(|| Error::Input(format!("the load plan has no buffer for {id:?}")))?;
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

    /// Writes whole storage rows `row0..` of matrix `id` (`data`, in their parts' format) into
    /// the parts that hold them.
    fn write_rows(&mut self, id: BufferId, row0: usize, data: &[u8], format: WeightFormat) -> Result<()> {
        let (cols, parts) = {
            let l = self.layout(id)?;
            (l.cols, l.parts.clone())
        };
        let row = format.row_bytes(cols);
        let rows = data.len() / row.max(1);
        let mut done = 0;
        let mut piece = Vec::new();
        while done < rows {
            let at = row0 + done;
            let Some(pi) = parts.iter().position(|p| p.first <= at && at < p.first + p.rows) else {
                return Err(Error::Input(format!("{id:?}: storage row {at} is outside its parts")));
            };
            let p = parts[pi];
            if p.format != format {
                return Err(Error::Input(format!("{id:?}: rows in {} for a {} part", format.name(), p.format.name())));
            }
            let n = (p.first + p.rows - at).min(rows - done);
            piece.clear();
            piece.extend_from_slice(&data[done * row..(done + n) * row]);
            self.write(id, pi, ((at - p.first) * row) as u64, &mut piece)?;
            done += n;
        }
        Ok(())
    }

    /// Places rows `first_row..` of `t`, already in its device format `format` (`mine`: whole
    /// rows), where its target says: into a vector buffer at an element offset; a matrix's rows at their
    /// storage rows (`BufferLayout::storage_row`), interleaved with its partner's where the
    /// layout interleaves them.
    fn place(&mut self, t: &PlannedTensor, first_row: usize, mine: Vec<u8>, format: WeightFormat) -> Result<()> {
        let id = t.target.buffer;
        let cols = t.cols();
        if !self.layout(id)?.matrix {
            let Place::At(at) = t.target.place else {
                return Err(Error::Input(format!("tensor `{}`: a vector buffer's tensor cannot be interleaved", t.name)));
            };
            let mut bytes = mine;
            return self.write(id, 0, format.bytes(at + first_row * cols), &mut bytes);
        }
        let interleaved = self.layout(id)?.interleaved;
        match t.target.place {
            Place::Interleaved(lane) if interleaved => match self.held.remove(&id) {
                // The partner is whole (tensors arrive one after another): pair the rows.
                Some((held_lane, other)) if held_lane != lane => {
                    let mut bytes = std::mem::take(&mut self.bytes);
                    bytes.clear();
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
                    let r = self.write_rows(id, 2 * first_row, &bytes, format);
                    self.bytes = bytes;
                    r?;
                    if first_row + rows < t.rows() {
                        self.held.insert(id, (held_lane, other));
                    }
                    Ok(())
                }
                // The first of the pair: keep it until the other arrives.
                held => {
                    let (_, mut kept) = held.unwrap_or((lane, Vec::new()));
                    kept.extend_from_slice(&mine);
                    self.held.insert(id, (lane, kept));
                    Ok(())
                }
            },
            place => {
                let row0 = self.layout(id)?.storage_row(place, t.rows(), first_row);
                self.write_rows(id, row0, &mine, format)
            }
        }
    }
}

impl Sink for DeviceSink<'_> {
    /// Creates every part of every buffer of the plan (zero-filled, so absent biases read as
    /// zeros).
    fn begin(&mut self, plan: &LoadPlan) -> Result<()> {
        for b in &plan.buffers {
            let l = self.layout(b.id)?;
            let n = l.parts.len();
            let mut bufs = Vec::with_capacity(n);
            for (i, p) in l.parts.iter().enumerate() {
                let label = if n == 1 { b.label.clone() } else { format!("{} part {}/{n} (rows {}..{})", b.label, i + 1, p.first, p.first + p.rows) };
                bufs.push(self.gpu.storage(&label, p.bytes(l.cols))?);
            }
            self.buffers.insert(b.id, bufs);
        }
        Ok(())
    }

    fn wants_blocks(&self, t: &PlannedTensor) -> bool {
        self.format_of(t).map(|f| f.is_quantised()).unwrap_or(false)
    }

    fn blocks(&mut self, t: &PlannedTensor, first_row: usize, raw: &[u8]) -> Result<()> {
        let format = self.format_of(t)?;
        if format.ggml() != t.storage {
            return Err(Error::Input(format!("tensor `{}`: {} blocks for a {} buffer", t.name, t.storage.name(), format.name())));
        }
        let mut mine = Vec::new();
        format.repack(raw, t.cols(), &mut mine).map_err(|e| Error::Input(format!("tensor `{}`: {e}", t.name)))?;
        self.place(t, first_row, mine, format)
    }

    fn rows(&mut self, t: &PlannedTensor, first_row: usize, values: &[f32]) -> Result<()> {
        let format = self.format_of(t)?;
        if format.is_quantised() {
            return Err(Error::Input(format!("tensor `{}`: f32 values for a {} buffer", t.name, format.name())));
        }
        let mut mine = Vec::with_capacity(values.len() * 4);
        Self::encode(format, values, &mut mine);
        self.place(t, first_row, mine, format)
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(id) = self.held.keys().next() {
            return Err(Error::Input(format!("{id:?}: one half of the interleaved pair never arrived")));
        }
        self.gpu.queue.submit(std::iter::empty());
        Ok(())
    }
}
