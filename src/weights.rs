//! Checkpoint tensors (PLT-SPEC section 1): `model.safetensors` or a sharded
//! `model.safetensors.index.json` → host tensors in f32, checked against the config.
//!
//! Structs are named after the checkpoint's tensor names, so loader and model map one-to-one.
//! Values are kept in f32 on the host (F16/BF16 widen exactly); `Weights::dtype` records what
//! the file stored, which decides the default GPU storage dtype.

use crate::config::{Config, GateMode};
use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors};
use std::collections::HashMap;
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
        let mut store = TensorStore::default();
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.exists() {
            store.add_file(&single)?;
        } else if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Safetensors {
                file: index.display().to_string(),
                msg: format!("not valid JSON: {e}"),
            })?;
            let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| Error::Safetensors {
                file: index.display().to_string(),
                msg: "no `weight_map` object".into(),
            })?;
            let mut shards: Vec<&str> = Vec::new();
            for (name, f) in map {
                let f = f.as_str().ok_or_else(|| Error::Safetensors {
                    file: index.display().to_string(),
                    msg: format!("weight_map entry `{name}` is not a file name"),
                })?;
                if f.contains('/') || f.contains('\\') || f.contains("..") {
                    return Err(Error::Safetensors {
                        file: index.display().to_string(),
                        msg: format!("shard name `{f}` must be a plain file name"),
                    });
                }
                if !shards.contains(&f) {
                    shards.push(f);
                }
            }
            shards.sort();
            for f in shards {
                store.add_file(&dir.join(f))?;
            }
        } else {
            return Err(Error::Input(format!(
                "{}: no model.safetensors or model.safetensors.index.json",
                dir.display()
            )));
        }
        Weights::from_store(&mut store, cfg)
    }

    /// Loads from the bytes of one safetensors file (used by tests, fuzzers and the browser).
    pub fn from_bytes(bytes: &[u8], cfg: &Config) -> Result<Weights> {
        let mut store = TensorStore::default();
        store.add_bytes("model.safetensors", bytes)?;
        Weights::from_store(&mut store, cfg)
    }

    fn from_store(s: &mut TensorStore, cfg: &Config) -> Result<Weights> {
        let (d, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (h, qd, kvd, dh) = (cfg.num_attention_heads, cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
        let gated = cfg.is_plt();
        // num_hidden_layers comes from config.json (up to 2^32): reserve only what tensors can back.
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers.min(1024));
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}.");
            let lin = |s: &mut TensorStore, name: &str, out: usize, inp: usize, bias: bool| -> Result<Linear> {
                let weight = s.take(&format!("{p}{name}.weight"), &[out, inp])?;
                let bias = if bias { s.take_opt(&format!("{p}{name}.bias"), &[out])? } else { None };
                Ok(Linear { weight, bias })
            };
            let plt_gate = if gated {
                let g = format!("{p}self_attn.plt_gate.");
                Some(match cfg.gate_mode {
                    GateMode::Query => PltGate {
                        weight: s.take(&format!("{g}weight"), &[h, dh])?,
                        bias: s.take(&format!("{g}bias"), &[h])?,
                        gate_norm: None,
                    },
                    GateMode::Hidden => PltGate {
                        weight: s.take(&format!("{g}weight"), &[h, d])?,
                        bias: s.take(&format!("{g}bias"), &[h])?,
                        gate_norm: Some(s.take(&format!("{g}gate_norm.weight"), &[d])?),
                    },
                })
            } else {
                None
            };
            layers.push(Layer {
                input_layernorm: s.take(&format!("{p}input_layernorm.weight"), &[d])?,
                self_attn: SelfAttn {
                    q_proj: lin(s, "self_attn.q_proj", qd, d, true)?,
                    k_proj: lin(s, "self_attn.k_proj", kvd, d, true)?,
                    v_proj: lin(s, "self_attn.v_proj", kvd, d, true)?,
                    o_proj: lin(s, "self_attn.o_proj", d, qd, false)?,
                    plt_gate,
                },
                post_attention_layernorm: s.take(&format!("{p}post_attention_layernorm.weight"), &[d])?,
                mlp: Mlp {
                    gate_proj: lin(s, "mlp.gate_proj", f, d, false)?,
                    up_proj: lin(s, "mlp.up_proj", f, d, false)?,
                    down_proj: lin(s, "mlp.down_proj", d, f, false)?,
                },
            });
        }
        let embed_tokens = s.take("model.embed_tokens.weight", &[v, d])?;
        let norm = s.take("model.norm.weight", &[d])?;
        let lm_head = if cfg.tie_word_embeddings { None } else { Some(s.take("lm_head.weight", &[v, d])?) };
        Ok(Weights { embed_tokens, layers, norm, lm_head, dtype: s.dominant_dtype() })
    }
}

/// Raw tensors read from one or more safetensors files, by name.
#[derive(Default)]
struct TensorStore {
    tensors: HashMap<String, (Dtype, Vec<usize>, Vec<f32>)>,
    dtype_bytes: HashMap<&'static str, usize>,
}

impl TensorStore {
    fn add_file(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        self.add_bytes(&name, &bytes)
    }

    fn add_bytes(&mut self, file: &str, bytes: &[u8]) -> Result<()> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Safetensors { file: file.to_string(), msg: e.to_string() })?;
        for (name, view) in st.tensors() {
            let dt = view.dtype();
            let data = view.data();
            let values: Vec<f32> = match dt {
                Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                Dtype::F16 => data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                Dtype::BF16 => data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                other => {
                    // Only an error if the model needs this tensor; keep a marker.
                    self.tensors.insert(name.clone(), (other, view.shape().to_vec(), vec![]));
                    continue;
                }
            };
            let key = match dt {
                Dtype::F32 => "F32",
                Dtype::F16 => "F16",
                _ => "BF16",
            };
            *self.dtype_bytes.entry(key).or_default() += data.len();
            if self.tensors.insert(name.clone(), (dt, view.shape().to_vec(), values)).is_some() {
                return Err(Error::Safetensors { file: file.to_string(), msg: format!("tensor `{name}` appears twice") });
            }
        }
        Ok(())
    }

    fn take_opt(&mut self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        let Some((dt, got, data)) = self.tensors.remove(name) else { return Ok(None) };
        if !matches!(dt, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(Error::TensorDtype { name: name.to_string(), dtype: format!("{dt:?}") });
        }
        if got != shape {
            return Err(Error::TensorShape { name: name.to_string(), expected: shape.to_vec(), got });
        }
        Ok(Some(Tensor::new(got, data)))
    }

    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.take_opt(name, shape)?.ok_or_else(|| Error::MissingTensor { name: name.to_string() })
    }

    fn dominant_dtype(&self) -> DType {
        let best = self.dtype_bytes.iter().max_by_key(|(_, n)| **n).map(|(k, _)| *k).unwrap_or("F32");
        DType::parse(best).unwrap_or(DType::F32)
    }
}
