//! Weights on the device (`GpuModel`): every matrix in the storage the kernels read, with the
//! fusions the graph relies on made at upload (q/k/v rows concatenated, gate/up rows
//! interleaved, the PLT gate's parts in one buffer).

use crate::config::Config;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::weights::{DType, Weights};
use std::sync::Arc;

/// Weights on the device. Matrices are stored as f32 or packed f16; vectors as f32.
pub struct GpuModel {
    pub cfg: Config,
    pub gpu: Arc<Gpu>,
    /// Storage dtype of the matrices on the device (F32 or F16).
    pub dtype: DType,
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

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

/// Rows of `a` and `b` (both [n, k]) alternated: a_0, b_0, a_1, b_1, .. (the gate/up pairs the
/// GLU epilogue of the decode matmul pairs up; see shaders/matmul_vec.wgsl).
fn interleave_rows(a: &[f32], b: &[f32], k: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    for (ra, rb) in a.chunks_exact(k).zip(b.chunks_exact(k)) {
        out.extend_from_slice(ra);
        out.extend_from_slice(rb);
    }
    out
}

impl GpuModel {
    /// Uploads `w`. `dtype` is the matrices' device storage: F32 or F16 (BF16 is stored as F32);
    /// `None` keeps F16 for F16 checkpoints and F32 otherwise.
    pub fn new(gpu: Arc<Gpu>, cfg: &Config, w: &Weights, dtype: Option<DType>) -> Result<GpuModel> {
        GpuModel::new_with_progress(gpu, cfg, w, dtype, &mut |_| {})
    }

    /// `new`, calling `progress(fraction)` as layers are uploaded.
    pub fn new_with_progress(
        gpu: Arc<Gpu>,
        cfg: &Config,
        w: &Weights,
        dtype: Option<DType>,
        progress: &mut dyn FnMut(f32),
    ) -> Result<GpuModel> {
        cfg.validate()?;
        if w.layers.len() != cfg.num_hidden_layers {
            return Err(Error::Input(format!(
                "the weights have {} layers, the config {}",
                w.layers.len(),
                cfg.num_hidden_layers
            )));
        }
        let dtype = match dtype.unwrap_or(w.dtype) {
            DType::F16 => DType::F16,
            _ => DType::F32,
        };
        let mat = |label: &str, parts: &[&[f32]]| -> Result<wgpu::Buffer> {
            let bytes: Vec<u8> = match dtype {
                DType::F16 => {
                    let mut h: Vec<half::f16> =
                        parts.iter().flat_map(|p| p.iter().map(|&x| half::f16::from_f32(x))).collect();
                    if h.len() % 2 == 1 {
                        h.push(half::f16::ZERO);
                    }
                    bytemuck::cast_slice(&h).to_vec()
                }
                _ => parts.iter().flat_map(|p| f32_bytes(p)).collect(),
            };
            gpu.storage_init(label, &bytes)
        };
        let vec = |label: &str, v: &[f32]| gpu.storage_init(label, &f32_bytes(v));
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for (i, l) in w.layers.iter().enumerate() {
            let a = &l.self_attn;
            let (q, k, v) = (&a.q_proj, &a.k_proj, &a.v_proj);
            let qkv_bias = if q.bias.is_some() || k.bias.is_some() || v.bias.is_some() {
                let b = |lin: &crate::weights::Linear, n: usize| {
                    lin.bias.as_ref().map(|t| t.data.clone()).unwrap_or_else(|| vec![0.0; n])
                };
                let all = [b(q, cfg.q_dim()), b(k, cfg.kv_dim()), b(v, cfg.kv_dim())].concat();
                Some(vec(&format!("layers.{i}.qkv_bias"), &all)?)
            } else {
                None
            };
            let plt_gate = match &a.plt_gate {
                Some(g) if cfg.is_plt() => {
                    let gn = g.gate_norm.as_ref().map(|t| t.data.clone()).unwrap_or_default();
                    Some(vec(&format!("layers.{i}.plt_gate"), &[g.weight.data.clone(), g.bias.data.clone(), gn].concat())?)
                }
                _ => None,
            };
            layers.push(GpuLayer {
                input_layernorm: vec(&format!("layers.{i}.input_layernorm"), &l.input_layernorm.data)?,
                qkv_proj: mat(&format!("layers.{i}.qkv_proj"), &[&q.weight.data, &k.weight.data, &v.weight.data])?,
                qkv_bias,
                o_proj: mat(&format!("layers.{i}.o_proj"), &[&a.o_proj.weight.data])?,
                post_attention_layernorm: vec(
                    &format!("layers.{i}.post_attention_layernorm"),
                    &l.post_attention_layernorm.data,
                )?,
                gate_up_proj: mat(
                    &format!("layers.{i}.gate_up_proj"),
                    &[&interleave_rows(&l.mlp.gate_proj.weight.data, &l.mlp.up_proj.weight.data, cfg.hidden_size)],
                )?,
                down_proj: mat(&format!("layers.{i}.down_proj"), &[&l.mlp.down_proj.weight.data])?,
                plt_gate,
            });
            progress((i + 1) as f32 / (cfg.num_hidden_layers + 1) as f32);
        }
        let embed = mat("embed_tokens", &[&w.embed_tokens.data])?;
        let lm_head = match &w.lm_head {
            Some(t) => Some(mat("lm_head", &[&t.data])?),
            None => None,
        };
        let norm = vec("norm", &w.norm.data)?;
        let dummy = gpu.storage("dummy", 16)?;
        gpu.check()?;
        progress(1.0);
        Ok(GpuModel { cfg: cfg.clone(), gpu, dtype, embed, lm_head, norm, layers, dummy })
    }

    /// Loads `config.json` and the safetensors of `dir` onto `gpu` (see `new` for `dtype`).
    pub fn load_dir(gpu: Arc<Gpu>, dir: &std::path::Path, dtype: Option<DType>) -> Result<GpuModel> {
        let cfg = Config::from_file(&dir.join("config.json"))?;
        let w = Weights::load_dir(dir, &cfg)?;
        GpuModel::new(gpu, &cfg, &w, dtype)
    }

    /// Bytes of weights one pass reads (every matrix once, plus the lm_head rows it needs).
    pub fn weight_bytes(&self) -> u64 {
        let c = &self.cfg;
        let per = (c.q_dim() + 2 * c.kv_dim()) * c.hidden_size + c.hidden_size * c.q_dim() + 3 * c.intermediate_size * c.hidden_size;
        ((c.num_hidden_layers * per + c.vocab_size * c.hidden_size) * self.dtype.size()) as u64
    }
}

