//! safetensors checkpoints (PLT-SPEC section 1): `model.safetensors`, or the shards listed by
//! `model.safetensors.index.json`. Only the headers are read here (8 bytes of length, then the
//! JSON); they are checked as the `safetensors` crate checks a whole file (same errors), and the
//! tensors the config needs become the plan's entries.

use super::plan::{plan_tensors, FileInfo, Format, Found, LayerWeight, LoadPlan, Storage, WeightId};
use super::source::ByteSource;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::weights::DType;
use safetensors::tensor::{Dtype, Metadata, TensorInfo};
use safetensors::SafeTensorError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The longest header the `safetensors` crate accepts.
const MAX_HEADER_SIZE: u64 = 100_000_000;

/// The header's JSON, as the `safetensors` crate reads it (the same name, so that a wrong type
/// is reported in the same words).
#[derive(serde::Deserialize)]
struct HashMetadata {
    #[serde(rename = "__metadata__")]
    metadata: Option<HashMap<String, String>>,
    #[serde(flatten)]
    tensors: HashMap<String, TensorInfo>,
}

/// The tensors of one file: name, info, in offset order; `data_start` is where offsets count from.
struct Header {
    tensors: Vec<(String, TensorInfo)>,
    data_start: u64,
}

/// Reads and checks the header of one safetensors file.
fn read_header(src: &mut dyn ByteSource) -> Result<Header> {
    let file = src.name().to_string();
    let fail = |e: SafeTensorError| Error::Safetensors { file: file.clone(), msg: e.to_string() };
    let size = src.size();
    if size < 8 {
        return Err(fail(SafeTensorError::HeaderTooSmall));
    }
    let mut len = [0u8; 8];
    src.read_at(0, &mut len)?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER_SIZE {
        return Err(fail(SafeTensorError::HeaderTooLarge));
    }
    if n + 8 > size {
        return Err(fail(SafeTensorError::InvalidHeaderLength));
    }
    let mut json = vec![0u8; n as usize];
    src.read_at(8, &mut json)?;
    let text = std::str::from_utf8(&json).map_err(|e| fail(SafeTensorError::InvalidHeader(e)))?;
    let header: HashMetadata = serde_json::from_str(text).map_err(|e| fail(SafeTensorError::InvalidHeaderDeserialization(e)))?;
    let mut tensors: Vec<(String, TensorInfo)> = header.tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.1.data_offsets.cmp(&b.1.data_offsets));
    // Checks that the offsets are contiguous from 0 and match each shape and dtype.
    let meta = Metadata::new(header.metadata, tensors.clone()).map_err(fail)?;
    if meta.data_len() as u64 + 8 + n != size {
        return Err(fail(SafeTensorError::MetadataIncompleteBuffer));
    }
    Ok(Header { tensors, data_start: 8 + n })
}

/// A weight's name in a Hugging Face checkpoint.
pub fn tensor_name(w: WeightId) -> String {
    use LayerWeight as L;
    let (i, part) = match w {
        WeightId::EmbedTokens => return "model.embed_tokens.weight".into(),
        WeightId::Norm => return "model.norm.weight".into(),
        WeightId::LmHead => return "lm_head.weight".into(),
        WeightId::Layer(i, l) => (
            i,
            match l {
                L::InputLayernorm => "input_layernorm.weight",
                L::QProj => "self_attn.q_proj.weight",
                L::QBias => "self_attn.q_proj.bias",
                L::KProj => "self_attn.k_proj.weight",
                L::KBias => "self_attn.k_proj.bias",
                L::VProj => "self_attn.v_proj.weight",
                L::VBias => "self_attn.v_proj.bias",
                L::OProj => "self_attn.o_proj.weight",
                L::PostAttentionLayernorm => "post_attention_layernorm.weight",
                L::GateProj => "mlp.gate_proj.weight",
                L::UpProj => "mlp.up_proj.weight",
                L::DownProj => "mlp.down_proj.weight",
                L::PltGate => "self_attn.plt_gate.weight",
                L::PltGateBias => "self_attn.plt_gate.bias",
                L::PltGateNorm => "self_attn.plt_gate.gate_norm.weight",
            },
        ),
    };
    format!("model.layers.{i}.{part}")
}

/// The canonical name (`tensor_name`) of a gate tensor stored under one of the names the public
/// PLT inference code also reads (PLT-SPEC section 1): `model.layers.{i}.self_attn.loop_gate_proj.*`
/// and `model.gate_projections.{i}.*`, `{i}` the layer index, for the gate's `weight` and `bias`.
pub fn gate_alias_target(name: &str) -> Option<String> {
    let (layer, part) = if let Some(rest) = name.strip_prefix("model.layers.") {
        let (i, tail) = rest.split_once('.')?;
        (i, tail.strip_prefix("self_attn.loop_gate_proj.")?)
    } else {
        name.strip_prefix("model.gate_projections.")?.split_once('.')?
    };
    let is_index = !layer.is_empty() && layer.bytes().all(|b| b.is_ascii_digit());
    (is_index && matches!(part, "weight" | "bias")).then(|| format!("model.layers.{layer}.self_attn.plt_gate.{part}"))
}

/// The checkpoint files of a model directory: `model.safetensors`, or the shards that
/// `model.safetensors.index.json` names (each once, sorted).
pub fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if single.exists() {
        return Ok(vec![single]);
    }
    if !index.exists() {
        return Err(Error::Input(format!("{}: no model.safetensors or model.safetensors.index.json", dir.display())));
    }
    let bad = |msg: String| Error::Safetensors { file: index.display().to_string(), msg };
    let bytes = super::source::read_bounded(&index, super::source::MAX_CONFIG_BYTES)?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut shards: Vec<&str> = Vec::new();
    for (name, f) in map {
        let f = f.as_str().ok_or_else(|| bad(format!("weight_map entry `{name}` is not a file name")))?;
        if f.contains('/') || f.contains('\\') || f.contains("..") {
            return Err(bad(format!("shard name `{f}` must be a plain file name")));
        }
        if !shards.contains(&f) {
            shards.push(f);
        }
    }
    shards.sort();
    Ok(shards.into_iter().map(|f| dir.join(f)).collect())
}

fn storage_of(dt: Dtype) -> Option<Storage> {
    match dt {
        Dtype::F32 => Some(Storage::F32),
        Dtype::F16 => Some(Storage::F16),
        Dtype::BF16 => Some(Storage::BF16),
        _ => None,
    }
}

/// The plan for the safetensors files `sources` under `cfg`.
pub(crate) fn plan(source: String, cfg: Config, sources: &mut [Box<dyn ByteSource + '_>]) -> Result<LoadPlan> {
    let mut files = Vec::new();
    // name -> (file, info, data start)
    let mut all: HashMap<String, (usize, TensorInfo, u64)> = HashMap::new();
    // Bytes per stored dtype over every tensor: the most common one is the checkpoint's dtype.
    let mut dtype_bytes = [(DType::F32, 0usize), (DType::F16, 0), (DType::BF16, 0)];
    for (fi, src) in sources.iter_mut().enumerate() {
        let header = read_header(src.as_mut())?;
        files.push(FileInfo { name: src.name().to_string(), size: src.size() });
        for (name, info) in header.tensors {
            let key = match info.dtype {
                Dtype::F32 => Some(0),
                Dtype::F16 => Some(1),
                Dtype::BF16 => Some(2),
                _ => None,
            };
            if let Some(k) = key {
                dtype_bytes[k].1 += info.data_offsets.1 - info.data_offsets.0;
            }
            if all.insert(name.clone(), (fi, info, header.data_start)).is_some() {
                return Err(Error::Safetensors { file: src.name().to_string(), msg: format!("tensor `{name}` appears twice") });
            }
        }
    }
    // Gate tensors stored under an alias: canonical name -> the name in the file. One tensor under
    // two names is ambiguous, so an error naming both.
    let mut aliased: HashMap<String, String> = HashMap::new();
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    for name in names {
        let Some(canonical) = gate_alias_target(name) else { continue };
        let msg = if all.contains_key(&canonical) {
            Some(format!("tensor `{name}` is another name of tensor `{canonical}`, and both are present: keep one of them"))
        } else {
            aliased.get(&canonical).map(|other| {
                format!("tensors `{other}` and `{name}` are both names of the gate tensor `{canonical}`: keep one of them")
            })
        };
        if let Some(msg) = msg {
            return Err(Error::Safetensors { file: files[all[name].0].name.clone(), msg });
        }
        aliased.insert(canonical, name.clone());
    }
    let stored_dtype = dtype_bytes.iter().rev().max_by_key(|(_, n)| *n).map(|(d, _)| *d).unwrap_or(DType::F32);
    let mut find = |name: &str, shape: &[usize]| -> Result<Option<Found>> {
        let name = aliased.get(name).map_or(name, String::as_str);
        let Some((file, info, start)) = all.get(name) else { return Ok(None) };
        let Some(storage) = storage_of(info.dtype) else {
            return Err(Error::TensorDtype { file: files[*file].name.clone(), name: name.to_string(), dtype: format!("{:?}", info.dtype) });
        };
        if info.shape != shape {
            return Err(Error::TensorShape {
                file: files[*file].name.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                got: info.shape.clone(),
            });
        }
        let (s, e) = info.data_offsets;
        Ok(Some(Found { storage, shape: info.shape.clone(), file: *file, offset: start + s as u64, bytes: (e - s) as u64 }))
    };
    let mut tensors = plan_tensors(&source, &cfg, &tensor_name, &mut find, false)?;
    for t in &mut tensors {
        if let Some(stored) = aliased.get(&t.name) {
            t.name = stored.clone();
        }
    }
    Ok(LoadPlan::new(source, Format::Safetensors, cfg, stored_dtype, files, tensors))
}
