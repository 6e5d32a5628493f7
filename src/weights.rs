//! The model's weights in host memory (PLT-SPEC section 1), in f32: what the CPU reference
//! computes with. Structs are named after the checkpoint's tensor names, so loader and model map
//! one-to-one. Values are kept in f32 (F16/BF16 widen exactly); `Weights::dtype` records what
//! the file stored, which decides the default GPU storage dtype. Files are read by
//! `crate::load`.

use crate::config::Config;
use crate::error::Result;
use std::path::Path;

/// Element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            _ => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
        }
    }
    pub fn parse(s: &str) -> Option<DType> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Some(DType::F32),
            "f16" => Some(DType::F16),
            "bf16" => Some(DType::BF16),
            _ => None,
        }
    }
    /// Rounds a value to what this dtype can store (identity for F32).
    pub fn round(self, x: f32) -> f32 {
        match self {
            DType::F32 => x,
            DType::F16 => half::f16::from_f32(x).to_f32(),
            DType::BF16 => half::bf16::from_f32(x).to_f32(),
        }
    }
}

/// A host tensor: row-major f32 values and the shape as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "tensor data does not match its shape");
        Tensor { shape, data }
    }
    /// Row `i` of a 2-D tensor.
    pub fn row(&self, i: usize) -> &[f32] {
        let k = self.shape[self.shape.len() - 1];
        &self.data[i * k..(i + 1) * k]
    }
}

/// `y = W x (+ b)`, `W` is [out, in].
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

/// `self_attn.plt_gate.*` (present only when L > 1 in parallel mode).
#[derive(Clone, Debug)]
pub struct PltGate {
    pub weight: Tensor,            // query gate [H, Dh]; hidden-state gate [H, D]
    pub bias: Tensor,              // [H]
    pub gate_norm: Option<Tensor>, // [D], hidden-state gate only
}

#[derive(Clone, Debug)]
pub struct SelfAttn {
    pub q_proj: Linear, // [H*Dh, D]
    pub k_proj: Linear, // [Hkv*Dh, D]
    pub v_proj: Linear, // [Hkv*Dh, D]
    pub o_proj: Linear, // [D, H*Dh]
    pub plt_gate: Option<PltGate>,
}

#[derive(Clone, Debug)]
pub struct Mlp {
    pub gate_proj: Linear, // [F, D]
    pub up_proj: Linear,   // [F, D]
    pub down_proj: Linear, // [D, F]
}

#[derive(Clone, Debug)]
pub struct Layer {
    pub input_layernorm: Tensor, // [D]
    pub self_attn: SelfAttn,
    pub post_attention_layernorm: Tensor, // [D]
    pub mlp: Mlp,
}

#[derive(Clone, Debug)]
pub struct Weights {
    pub embed_tokens: Tensor, // [V, D]
    pub layers: Vec<Layer>,   // N
    pub norm: Tensor,         // [D]
    /// [V, D]; `None` when `tie_word_embeddings` (the head reuses `embed_tokens`).
    pub lm_head: Option<Tensor>,
    /// The dtype most of the checkpoint's matrices were stored in.
    pub dtype: DType,
}

impl Weights {
    pub fn lm_head(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }

    /// Loads `model.safetensors` or the shards of `model.safetensors.index.json` in `dir`.
    pub fn load_dir(dir: &Path, cfg: &Config) -> Result<Weights> {
        crate::load::open_checkpoint(dir, cfg.clone())?.read_weights()
    }

    /// Loads from the bytes of one safetensors file (used by tests, fuzzers and the browser).
    pub fn from_bytes(bytes: &[u8], cfg: &Config) -> Result<Weights> {
        crate::load::open_safetensors_bytes(bytes, cfg.clone())?.read_weights()
    }
}
