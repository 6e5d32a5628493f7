//! Tensors flow from the byte sources to a sink: each tensor is read in bounded chunks of rows,
//! in file order, checked for NaN and infinities on its raw bytes (values, or quantised blocks'
//! scales and mins; the error names the file, the tensor and the first bad value or block),
//! dequantised to f32 (GGUF q/k rows un-permuted), and handed to the sink, which places them (or,
//! where the sink keeps a quantised format resident, handed over as the file's blocks, q/k rows
//! un-permuted as whole block rows): `HostSink` builds the host `Weights` the CPU reference uses;
//! the device sink (`model::upload`) writes the GPU buffers. `Weights` already in memory are fed
//! through the same path as one F32 file (`host_plan`, `HostSource`).

use super::plan::{FileInfo, Format, LayerWeight, LoadPlan, PlannedTensor, Storage, WeightId};
use super::source::ByteSource;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::gguf::{dequantize, first_non_finite, unpermute_rows, NonFinite};
use crate::weights::{Layer, Linear, Mlp, PltGate, SelfAttn, Tensor, Weights};
use std::collections::HashMap;

/// Receives the tensors of a plan and places them.
pub trait Sink {
    /// Called once, before any tensor.
    fn begin(&mut self, plan: &LoadPlan) -> Result<()>;
    /// Rows `first_row..` of tensor `t` (`values.len() / t.cols()` of them), in the model's row
    /// order. Chunks of one tensor arrive in increasing row order.
    fn rows(&mut self, t: &PlannedTensor, first_row: usize, values: &[f32]) -> Result<()>;
    /// Called once, after the last tensor.
    fn finish(&mut self) -> Result<()>;
    /// Whether tensor `t` goes to `blocks` as its file's quantised blocks instead of to `rows`
    /// dequantised (the device sink keeps 32-weight-block formats resident).
    fn wants_blocks(&self, _t: &PlannedTensor) -> bool {
        false
    }
    /// Rows `first_row..` of tensor `t` as the file's blocks (whole rows, GGUF q/k rows already
    /// un-permuted), for tensors `wants_blocks` chose.
    fn blocks(&mut self, t: &PlannedTensor, _first_row: usize, _raw: &[u8]) -> Result<()> {
        Err(Error::Input(format!("tensor `{}`: this sink takes no quantised blocks", t.name)))
    }
}

/// Values a chunk holds at most (4 MiB of f32), unless one row is longer.
const CHUNK_VALUES: usize = 1 << 20;

/// Rows per chunk of `t`: whole heads for tensors that are un-permuted, an even count otherwise
/// (so that f16 chunks start on 4-byte boundaries); a vector is one chunk.
fn chunk_rows(t: &PlannedTensor) -> usize {
    if t.shape.len() < 2 {
        return 1;
    }
    let align = match t.unpermute_heads {
        Some(h) => (t.rows() / h.max(1)).max(1),
        None => 2,
    };
    let fit = (CHUNK_VALUES / t.cols().max(1)) / align * align;
    fit.max(align)
}

/// Reads every tensor of `plan` from `sources` (indexed like `plan.files`) into `sink`;
/// `progress(fraction)` after each tensor.
pub fn stream(plan: &LoadPlan, sources: &mut [Box<dyn ByteSource + '_>], sink: &mut dyn Sink, progress: &mut dyn FnMut(f32)) -> Result<()> {
    if sources.len() != plan.files.len() {
        return Err(Error::Input(format!("the plan has {} files but {} sources were given", plan.files.len(), sources.len())));
    }
    sink.begin(plan)?;
    let total = plan.file_bytes().max(1);
    let mut done = 0u64;
    let mut raw: Vec<u8> = Vec::new();
    for t in &plan.tensors {
        let src = &mut sources[t.file];
        let file = &plan.files[t.file].name;
        let (rows, cols) = (t.rows(), t.cols());
        let row_bytes = t.bytes / rows as u64;
        let step = chunk_rows(t);
        // Quantised matrices the sink keeps as blocks (whole rows: the plan checked that rows
        // are whole blocks before choosing that).
        let blocks = t.shape.len() == 2 && sink.wants_blocks(t);
        let mut r0 = 0;
        while r0 < rows {
            let n = step.min(rows - r0);
            raw.resize(n * row_bytes as usize, 0);
            let at = t.offset + r0 as u64 * row_bytes;
            src.read_at(at, &mut raw).map_err(|e| {
                Error::Input(format!("{file}: tensor `{}`: reading bytes {at}..{}: {e}", t.name, at + raw.len() as u64))
            })?;
            // Every number the chunk stores is finite, checked on the raw bytes before any sink
            // sees them (a NaN scale would decode to NaN weights on the host and the device alike).
            if let Some(bad) = first_non_finite(t.storage, &raw) {
                return Err(non_finite(file, t, r0 * cols, bad));
            }
            if blocks {
                if let Some(heads) = t.unpermute_heads {
                    unpermute_rows(&mut raw, row_bytes as usize, rows / heads);
                }
                sink.blocks(t, r0, &raw)?;
                r0 += n;
                continue;
            }
            let mut values = dequantize(t.storage, &raw, n * cols)
                .map_err(|e| Error::Input(format!("{file}: tensor `{}`: {e}", t.name)))?;
            if let Some(heads) = t.unpermute_heads {
                // A vector (a bias) is un-permuted value by value; a chunk holds whole heads.
                let (head_rows, row_len) = if t.shape.len() < 2 { (t.shape[0] / heads, 1) } else { (rows / heads, cols) };
                unpermute_rows(&mut values, row_len, head_rows);
            }
            sink.rows(t, r0, &values)?;
            r0 += n;
        }
        done += t.bytes;
        progress(done as f32 / total as f32);
    }
    sink.finish()
}

/// The error for a NaN or infinity in tensor `t` of `file`, found in a chunk that starts at
/// value `first` of the tensor (indices count values and blocks in the file's order).
fn non_finite(file: &str, t: &PlannedTensor, first: usize, bad: NonFinite) -> Error {
    let what = match (bad.field, t.storage.block()) {
        (Some(field), Some((block, _))) => {
            format!("block {} has a non-finite {field} ({})", first / block as usize + bad.index, bad.kind())
        }
        _ => {
            let (i, cols) = (first + bad.index, t.cols().max(1));
            format!("value {i} (row {}, column {}) is {}", i / cols, i % cols, bad.kind())
        }
    };
    Error::Input(format!("{file}: tensor `{}` ({}): {what}", t.name, t.storage.name()))
}

/// Builds the host `Weights` (f32) of a plan.
#[derive(Default)]
pub struct HostSink {
    tensors: HashMap<WeightId, Tensor>,
}

impl Sink for HostSink {
    fn begin(&mut self, _plan: &LoadPlan) -> Result<()> {
        Ok(())
    }

    fn rows(&mut self, t: &PlannedTensor, first_row: usize, values: &[f32]) -> Result<()> {
        let dst = self.tensors.entry(t.weight).or_insert_with(|| Tensor::new(t.shape.clone(), vec![0.0; t.elems()]));
        let at = first_row * t.cols();
        dst.data[at..at + values.len()].copy_from_slice(values);
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

impl HostSink {
    /// The weights, arranged as the checkpoint names them.
    pub fn into_weights(mut self, plan: &LoadPlan) -> Result<Weights> {
        use LayerWeight as L;
        let mut take_opt = |w: WeightId| self.tensors.remove(&w);
        let mut take = |w: WeightId| {
            take_opt(w).ok_or_else(|| Error::MissingTensor { model: plan.source.clone(), name: super::safetensors::tensor_name(w) })
        };
        let cfg = &plan.cfg;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers.min(1024));
        for i in 0..cfg.num_hidden_layers {
            let l = |w| WeightId::Layer(i, w);
            let lin = |take: &mut dyn FnMut(WeightId) -> Result<Tensor>, w, b: Option<L>| -> Result<Linear> {
                let weight = take(l(w))?;
                let bias = match b {
                    Some(b) => take(l(b)).ok(),
                    None => None,
                };
                Ok(Linear { weight, bias })
            };
            let plt_gate = match take(l(L::PltGate)) {
                Ok(weight) => Some(PltGate { weight, bias: take(l(L::PltGateBias))?, gate_norm: take(l(L::PltGateNorm)).ok() }),
                Err(_) => None,
            };
            layers.push(Layer {
                input_layernorm: take(l(L::InputLayernorm))?,
                self_attn: SelfAttn {
                    q_proj: lin(&mut take, L::QProj, Some(L::QBias))?,
                    k_proj: lin(&mut take, L::KProj, Some(L::KBias))?,
                    v_proj: lin(&mut take, L::VProj, Some(L::VBias))?,
                    o_proj: lin(&mut take, L::OProj, None)?,
                    plt_gate,
                },
                post_attention_layernorm: take(l(L::PostAttentionLayernorm))?,
                mlp: Mlp {
                    gate_proj: lin(&mut take, L::GateProj, None)?,
                    up_proj: lin(&mut take, L::UpProj, None)?,
                    down_proj: lin(&mut take, L::DownProj, None)?,
                },
            });
        }
        let embed_tokens = take(WeightId::EmbedTokens)?;
        let norm = take(WeightId::Norm)?;
        let lm_head = take(WeightId::LmHead).ok();
        Ok(Weights { embed_tokens, layers, norm, lm_head, dtype: plan.stored_dtype })
    }
}

/// The tensor of `w` in `weights`, if it has one.
fn host_tensor(w: &Weights, id: WeightId) -> Option<&Tensor> {
    use LayerWeight as L;
    match id {
        WeightId::EmbedTokens => Some(&w.embed_tokens),
        WeightId::Norm => Some(&w.norm),
        WeightId::LmHead => w.lm_head.as_ref(),
        WeightId::Layer(i, l) => {
            let layer = w.layers.get(i)?;
            let (a, m) = (&layer.self_attn, &layer.mlp);
            match l {
                L::InputLayernorm => Some(&layer.input_layernorm),
                L::PostAttentionLayernorm => Some(&layer.post_attention_layernorm),
                L::QProj => Some(&a.q_proj.weight),
                L::KProj => Some(&a.k_proj.weight),
                L::VProj => Some(&a.v_proj.weight),
                L::OProj => Some(&a.o_proj.weight),
                L::QBias => a.q_proj.bias.as_ref(),
                L::KBias => a.k_proj.bias.as_ref(),
                L::VBias => a.v_proj.bias.as_ref(),
                L::GateProj => Some(&m.gate_proj.weight),
                L::UpProj => Some(&m.up_proj.weight),
                L::DownProj => Some(&m.down_proj.weight),
                L::PltGate => a.plt_gate.as_ref().map(|g| &g.weight),
                L::PltGateBias => a.plt_gate.as_ref().map(|g| &g.bias),
                L::PltGateNorm => a.plt_gate.as_ref().and_then(|g| g.gate_norm.as_ref()),
            }
        }
    }
}

/// A plan for `weights` already in memory under `cfg`: every tensor `cfg` uses that `weights`
/// has, as F32 in one virtual file (read with `HostSource`). Absent tensors are left out (a
/// random model without gates, say); a shape that differs from the config's is an error.
pub fn host_plan(cfg: &Config, weights: &Weights) -> Result<LoadPlan> {
    if weights.layers.len() != cfg.num_hidden_layers {
        return Err(Error::Input(format!("the weights have {} layers, the config {}", weights.layers.len(), cfg.num_hidden_layers)));
    }
    let mut offset = 0u64;
    let mut tensors = Vec::new();
    for (id, _) in WeightId::all(cfg) {
        let Some(t) = host_tensor(weights, id) else { continue };
        let name = super::safetensors::tensor_name(id);
        let shape = id.shape(cfg);
        if t.shape != shape {
            return Err(Error::TensorShape { file: "weights in memory".into(), name, expected: shape, got: t.shape.clone() });
        }
        let bytes = 4 * t.data.len() as u64;
        let target = super::plan::Target::of(id, cfg);
        tensors.push(PlannedTensor { name, weight: id, storage: Storage::F32, shape, file: 0, offset, bytes, target, unpermute_heads: None });
        offset += bytes;
    }
    let files = vec![FileInfo { name: "weights in memory".into(), size: offset }];
    Ok(LoadPlan::new("weights in memory".into(), Format::HostWeights, cfg.clone(), weights.dtype, files, tensors))
}

/// The virtual F32 file of `host_plan`: each tensor's values, little-endian, at its offset.
pub struct HostSource<'w> {
    /// (offset, values), by offset.
    parts: Vec<(u64, &'w [f32])>,
    size: u64,
}

impl<'w> HostSource<'w> {
    pub fn new(plan: &LoadPlan, weights: &'w Weights) -> HostSource<'w> {
        let parts = plan
            .tensors
            .iter()
            .filter_map(|t| host_tensor(weights, t.weight).map(|h| (t.offset, h.data.as_slice())))
            .collect();
        HostSource { parts, size: plan.files.first().map(|f| f.size).unwrap_or(0) }
    }
}

impl ByteSource for HostSource<'_> {
    fn name(&self) -> &str {
        "weights in memory"
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let (mut at, mut pos) = (offset, 0);
        // The part holding `offset`: the last one starting at or before it.
        let mut i = self.parts.partition_point(|(o, _)| *o <= offset).saturating_sub(1);
        while pos < buf.len() {
            while i < self.parts.len() && at >= self.parts[i].0 + 4 * self.parts[i].1.len() as u64 {
                i += 1;
            }
            let Some(&(start, vals)) = self.parts.get(i).filter(|(start, _)| at >= *start && (at - start) % 4 == 0) else {
                return Err(Error::Input(format!("weights in memory: no F32 value at byte {at} ({} bytes)", self.size)));
            };
            let first = ((at - start) / 4) as usize;
            let n = ((buf.len() - pos) / 4).min(vals.len() - first);
            if n == 0 {
                return Err(Error::Input(format!("weights in memory: a read of {} bytes at {offset} ends inside a value", buf.len())));
            }
            // f32 values are little-endian on every target this runs on (x86, ARM, wasm32).
            buf[pos..pos + 4 * n].copy_from_slice(bytemuck::cast_slice(&vals[first..first + n]));
            pos += 4 * n;
            at += 4 * n as u64;
        }
        Ok(())
    }
}
