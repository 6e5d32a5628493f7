//! A llama or qwen2 GGUF as a model: the configuration from `llama.*` / `qwen2.*` metadata (and
//! the PLT fields from `plt.*`, `PLT_KEYS`), the tensor names
//! (`blk.{i}.attn_q.weight`, ...) mapped to the model's weights, llama.cpp's q/k row
//! permutation undone, and Llama 3 RoPE scaling from `rope_freqs.weight`.
//!
//! llama.cpp's converter permutes the rows of `attn_q` / `attn_k` (and their biases) of `llama`
//! files so that its interleaved RoPE applies. PLT-SPEC uses rotate_half RoPE, so the loader
//! undoes it per head: within a head's Dh rows, GGUF row `2j + i` is original row `i*Dh/2 + j`
//! (i in {0, 1}, j < Dh/2). Skipping this gives fluent-looking garbage. `qwen2` files are not
//! permuted (llama.cpp runs them with rotate_half RoPE, its "NEOX" mode) and carry q/k/v biases.

use super::err;
use super::header::{GgmlType, GgufFile};
use super::tokenizer::END_OF_GENERATION_KEYS;
use super::value::Value;
use crate::config::{Config, Dims, RopeScaling};
use crate::error::{Error, Result};
use crate::load::plan::{plan_tensors, FileInfo, Format, Found, LayerWeight, LoadPlan, WeightId};
use crate::weights::{DType, Tensor};
use std::fmt::Write as _;

/// The `general.architecture` values this loader reads.
pub const ARCHITECTURES: [&str; 2] = ["llama", "qwen2"];

/// The file's `general.architecture`, one of `ARCHITECTURES`.
pub(crate) fn architecture(f: &GgufFile) -> Result<&str> {
    let arch = f.str_("general.architecture")?.ok_or_else(|| err("metadata `general.architecture` is absent"))?;
    if !ARCHITECTURES.contains(&arch) {
        return Err(err(format!("architecture `{arch}` is not supported (supported: {})", ARCHITECTURES.join(", "))));
    }
    Ok(arch)
}

/// The name of llama.cpp's per-frequency RoPE divisors ([Dh/2] F32; how Llama 3.x GGUF files
/// store their `llama3` RoPE scaling).
pub const ROPE_FREQS: &str = "rope_freqs.weight";

/// The values of tensor `rope_freqs.weight`, if the file has one, read with `read_at(absolute
/// offset, buffer)`; an error names the tensor when its type or size is wrong.
pub fn read_rope_freqs(f: &GgufFile, read_at: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>) -> Result<Option<Vec<f32>>> {
    let Some(t) = f.tensor(ROPE_FREQS) else { return Ok(None) };
    if t.dims.len() != 1 || !t.ty.can_dequantize() || t.n_bytes > 1 << 20 {
        return Err(err(format!(
            "tensor `{ROPE_FREQS}` must be a vector of floats, got dims {:?} of type {}",
            t.dims,
            t.ty.name()
        )));
    }
    let mut bytes = vec![0u8; t.n_bytes as usize];
    read_at(f.data_offset() + t.offset, &mut bytes).map_err(|e| err(format!("tensor `{ROPE_FREQS}`: {e}")))?;
    let values = super::quant::dequantize(t.ty, &bytes, t.n_elements as usize).map_err(|e| err(format!("tensor `{ROPE_FREQS}`: {e}")))?;
    Ok(Some(values))
}

/// The model configuration from `{arch}.*` metadata (`ARCHITECTURES`) and the tokenizer. A file
/// whose RoPE scaling is the tensor `rope_freqs.weight` (Llama 3.x) needs
/// `config_from_gguf_with` (this is an error naming the tensor for it: the scaling cannot be
/// ignored).
pub fn config_from_gguf(f: &GgufFile) -> Result<Config> {
    config_from_gguf_with(f, None)
}

/// `config_from_gguf`, with the values of tensor `rope_freqs.weight` (`read_rope_freqs`) when
/// the file has one.
pub fn config_from_gguf_with(f: &GgufFile, rope_freqs: Option<Vec<f32>>) -> Result<Config> {
    let arch = architecture(f)?;
    let k = |s: &str| format!("{arch}.{s}");
    let hidden_size = f.req_usize(&k("embedding_length"))?;
    let num_hidden_layers = f.req_usize(&k("block_count"))?;
    let intermediate_size = f.req_usize(&k("feed_forward_length"))?;
    let num_attention_heads = f.req_usize(&k("attention.head_count"))?;
    let num_key_value_heads = f.usize_(&k("attention.head_count_kv"))?.unwrap_or(num_attention_heads);
    for (key, v) in [
        ("embedding_length", hidden_size),
        ("block_count", num_hidden_layers),
        ("feed_forward_length", intermediate_size),
        ("attention.head_count", num_attention_heads),
        ("attention.head_count_kv", num_key_value_heads),
    ] {
        if v == 0 {
            return Err(err(format!("metadata `{}` must be at least 1", k(key))));
        }
    }
    if num_attention_heads % num_key_value_heads != 0 {
        return Err(err(format!(
            "metadata `{}` = {num_key_value_heads} does not divide `{}` = {num_attention_heads}",
            k("attention.head_count_kv"),
            k("attention.head_count")
        )));
    }
    // Dh: attention.key_length, else rope.dimension_count, else D / H.
    let key_length = f.usize_(&k("attention.key_length"))?;
    let rope_dims = f.usize_(&k("rope.dimension_count"))?;
    // The key the head size comes from, for the errors below.
    let head_key = if key_length.is_some() {
        k("attention.key_length")
    } else if rope_dims.is_some() {
        k("rope.dimension_count")
    } else {
        format!("{} / {}", k("embedding_length"), k("attention.head_count"))
    };
    let head_dim = match key_length.or(rope_dims) {
        Some(d) => d,
        None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
        None => {
            return Err(err(format!(
                "`{}` ({hidden_size}) is not divisible by `{}` ({num_attention_heads}) and no head size is given",
                k("embedding_length"),
                k("attention.head_count")
            )))
        }
    };
    if head_dim == 0 || head_dim % 2 != 0 {
        return Err(err(format!("metadata `{head_key}` = {head_dim}: the head size must be even and positive")));
    }
    if let Some(r) = rope_dims.filter(|&r| r != head_dim) {
        return Err(err(format!(
            "metadata `{}` = {r} differs from the head size {head_dim} (partial RoPE is not supported)",
            k("rope.dimension_count")
        )));
    }
    if let Some(v) = f.usize_(&k("attention.value_length"))?.filter(|&v| v != head_dim) {
        return Err(err(format!("metadata `{}` = {v} differs from the key head size {head_dim}", k("attention.value_length"))));
    }
    if let Some(e) = f.usize_(&k("expert_count"))?.filter(|&e| e > 0) {
        return Err(err(format!("metadata `{}` = {e}: mixture-of-experts models are not supported", k("expert_count"))));
    }
    let mut rope_scaling = match f.str_(&k("rope.scaling.type"))? {
        None | Some("none") => RopeScaling::None,
        Some(t) => {
            let factor = f.f32_(&k("rope.scaling.factor"))?;
            match (t, factor) {
                (_, Some(1.0)) => RopeScaling::None,
                ("linear", Some(factor)) => RopeScaling::Linear { factor },
                ("linear", None) => return Err(err(format!("metadata `{}` is required by linear RoPE scaling", k("rope.scaling.factor")))),
                _ => {
                    return Err(err(format!(
                        "metadata `{}` = `{t}`: this RoPE scaling is not supported (only `linear`, and Llama 3's as tensor `{ROPE_FREQS}`)",
                        k("rope.scaling.type")
                    )))
                }
            }
        }
    };
    if f.tensor(ROPE_FREQS).is_some() {
        let Some(d) = rope_freqs else {
            return Err(err(format!(
                "tensor `{ROPE_FREQS}` holds this file's RoPE frequency scaling and was not read (`config_from_gguf_with`)"
            )));
        };
        if d.len() != head_dim / 2 {
            return Err(err(format!("tensor `{ROPE_FREQS}` has {} values; the head size {head_dim} needs {}", d.len(), head_dim / 2)));
        }
        if let Some(j) = d.iter().position(|&v| !(v > 0.0 && v.is_finite())) {
            return Err(err(format!("tensor `{ROPE_FREQS}`: value {j} = {} must be positive and finite", d[j])));
        }
        if rope_scaling != RopeScaling::None {
            return Err(err(format!("both `{}` and tensor `{ROPE_FREQS}` scale RoPE; only one may", k("rope.scaling.type"))));
        }
        // All ones: no scaling (written by some converters for unscaled models).
        if d.iter().any(|&v| v != 1.0) {
            rope_scaling = RopeScaling::FreqFactors(d);
        }
    }
    let rms_norm_eps = f.f32_(&k("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5);
    let rope_theta = f.f32_(&k("rope.freq_base"))?.unwrap_or(10000.0);
    for (key, v) in [("attention.layer_norm_rms_epsilon", rms_norm_eps), ("rope.freq_base", rope_theta)] {
        if v <= 0.0 {
            return Err(err(format!("metadata `{}` = {v} must be positive", k(key))));
        }
    }
    let max_position_embeddings = f.req_usize(&k("context_length"))?.max(1);
    // V: the tokenizer's token count, else `{arch}.vocab_size`, else the embedding's rows.
    let vocab_size = match f.get("tokenizer.ggml.tokens") {
        Some(Value::Array(a)) => a.len(),
        Some(v) => return Err(err(format!("metadata `tokenizer.ggml.tokens` must be an array, got {}", v.type_name()))),
        None => match f.usize_(&k("vocab_size"))? {
            Some(v) => v,
            None => match f.tensor("token_embd.weight") {
                Some(t) if t.dims.len() == 2 => t.dims[1] as usize,
                _ => return Err(err("cannot tell the vocabulary size (no tokenizer, no vocab_size, no 2-D token_embd)")),
            },
        },
    };
    if vocab_size == 0 || vocab_size > u32::MAX as usize / 2 {
        return Err(err(format!("vocabulary size {vocab_size} is out of range")));
    }
    let bos_token_id = f.token_("tokenizer.ggml.bos_token_id", vocab_size)?;
    let mut eos_token_ids = Vec::new();
    for key in END_OF_GENERATION_KEYS {
        if let Some(id) = f.token_(key, vocab_size)? {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
    }
    let mut cfg = Config::with_defaults(Dims {
        vocab_size,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        max_position_embeddings,
    });
    cfg.num_key_value_heads = num_key_value_heads;
    cfg.head_dim = head_dim;
    cfg.rms_norm_eps = rms_norm_eps;
    cfg.rope_theta = rope_theta;
    cfg.rope_scaling = rope_scaling;
    cfg.tie_word_embeddings = f.tensor("output.weight").is_none();
    cfg.bos_token_id = bos_token_id;
    cfg.eos_token_ids = eos_token_ids;
    plt_config(f, &mut cfg)?;
    // The config's own checks name config.json fields: name the metadata key they came from.
    cfg.validate().map_err(|e| match e {
        Error::Config { field, msg } => err(format!("metadata `{}`: {msg}", gguf_key(&field, &k, &head_key))),
        e => e,
    })?;
    Ok(cfg)
}

/// The metadata key a config.json field is read from (`config_from_gguf`, `plt_config`).
fn gguf_key(field: &str, k: &dyn Fn(&str) -> String, head_key: &str) -> String {
    match field {
        "vocab_size" => "tokenizer.ggml.tokens".into(),
        "hidden_size" => k("embedding_length"),
        "intermediate_size" => k("feed_forward_length"),
        "num_hidden_layers" => k("block_count"),
        "num_attention_heads" => k("attention.head_count"),
        "num_key_value_heads" => k("attention.head_count_kv"),
        "head_dim" => head_key.into(),
        "max_position_embeddings" => k("context_length"),
        "rms_norm_eps" => k("attention.layer_norm_rms_epsilon"),
        "rope_theta" => k("rope.freq_base"),
        f => match f.strip_prefix("plt_") {
            Some(rest) => format!("plt.{rest}"),
            None => f.into(),
        },
    }
}

/// The PLT metadata keys (this runtime's own; llama.cpp's llama files have none, and without
/// them a file is a plain L = 1 model): the fields of config.json's `plt_*` (PLT-SPEC s1).
pub const PLT_KEYS: [&str; 7] = [
    "plt.num_loops",
    "plt.window_size",
    "plt.normalize_per_loop",
    "plt.emb_scale",
    "plt.hidden_scale",
    "plt.gate_use_hidden_states",
    "plt.loop_mode",
];

/// Reads the `plt.*` keys into `cfg` (absent keys keep the defaults of PLT-SPEC s1).
fn plt_config(f: &GgufFile, cfg: &mut Config) -> Result<()> {
    use crate::config::{GateMode, Looping};
    if let Some(l) = f.usize_("plt.num_loops")? {
        cfg.num_loops = l;
    }
    match f.get("plt.window_size") {
        None => {}
        Some(Value::Array(a)) if a.len() == 2 && a.int_at(0).is_some() => {
            let (left, right) = (a.int_at(0).unwrap_or(-1), a.int_at(1).unwrap_or(-1));
            if right != 0 {
                return Err(err(format!("metadata `plt.window_size`: right must be 0, got {right}")));
            }
            cfg.window_left = usize::try_from(left)
                .ok()
                .filter(|&l| l < u32::MAX as usize)
                .ok_or_else(|| err(format!("metadata `plt.window_size`: left must be a non-negative integer below 2^32, got {left}")))?;
        }
        Some(v) => return Err(err(format!("metadata `plt.window_size` must be an integer array [left, 0], got {}", v.brief()))),
    }
    if let Some(b) = f.bool_("plt.normalize_per_loop")? {
        cfg.normalize_per_loop = b;
    }
    if let Some(a) = f.f32_("plt.emb_scale")? {
        cfg.emb_scale = a;
    }
    if let Some(b) = f.f32_("plt.hidden_scale")? {
        cfg.hidden_scale = b;
    }
    if let Some(h) = f.bool_("plt.gate_use_hidden_states")? {
        cfg.gate_mode = if h { GateMode::Hidden } else { GateMode::Query };
    }
    if let Some(m) = f.str_("plt.loop_mode")? {
        cfg.looping = match m {
            "parallel" => Looping::Plt,
            "vanilla" => Looping::Vanilla,
            o => return Err(err(format!("metadata `plt.loop_mode` must be \"parallel\" or \"vanilla\", got {o:?}"))),
        };
    }
    Ok(())
}

/// A weight's name in a llama GGUF (the PLT gate names are this loader's own: llama files have none).
pub fn tensor_name(w: WeightId) -> String {
    use LayerWeight as L;
    let (i, part) = match w {
        WeightId::EmbedTokens => return "token_embd.weight".into(),
        WeightId::Norm => return "output_norm.weight".into(),
        WeightId::LmHead => return "output.weight".into(),
        WeightId::Layer(i, l) => (
            i,
            match l {
                L::InputLayernorm => "attn_norm.weight",
                L::QProj => "attn_q.weight",
                L::QBias => "attn_q.bias",
                L::KProj => "attn_k.weight",
                L::KBias => "attn_k.bias",
                L::VProj => "attn_v.weight",
                L::VBias => "attn_v.bias",
                L::OProj => "attn_output.weight",
                L::PostAttentionLayernorm => "ffn_norm.weight",
                L::GateProj => "ffn_gate.weight",
                L::UpProj => "ffn_up.weight",
                L::DownProj => "ffn_down.weight",
                L::PltGate => "plt_gate.weight",
                L::PltGateBias => "plt_gate.bias",
                L::PltGateNorm => "plt_gate_norm.weight",
            },
        ),
    };
    format!("blk.{i}.{part}")
}

/// The load plan of a GGUF file under `cfg` (`file` is the file's name and size). Block
/// formats stay blocks on the device; the float matrices (the others, but for the PLT gate, an
/// F32 vector buffer) are F16 (or BF16) there only when every one of them was stored in that
/// type, and F32 otherwise: a mixed file's values are kept exactly.
pub(crate) fn plan(f: &GgufFile, cfg: Config, source: String, file: FileInfo) -> Result<LoadPlan> {
    let mut find = |name: &str, shape: &[usize]| -> Result<Option<Found>> {
        let Some(t) = f.tensor(name) else { return Ok(None) };
        let got = t.shape();
        if got != shape {
            return Err(Error::TensorShape { file: file.name.clone(), name: name.to_string(), expected: shape.to_vec(), got });
        }
        if !t.ty.can_dequantize() {
            return Err(err(format!(
                "tensor `{name}` has type {}, which this loader does not dequantise \
                 (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)",
                t.ty.name()
            )));
        }
        Ok(Some(Found { storage: t.ty, shape: got, file: 0, offset: f.data_offset() + t.offset, bytes: t.n_bytes }))
    };
    // llama.cpp permutes the q/k rows of llama files only.
    let permuted = architecture(f)? == "llama";
    let tensors = plan_tensors(&source, &cfg, &tensor_name, &mut find, permuted)?;
    // The float type of the matrices that are not kept as blocks (the PLT gate, an F32 vector
    // buffer on the device, does not count): an all-F16 file stays F16 on the device.
    let floats: Vec<GgmlType> = tensors
        .iter()
        .filter(|t| t.shape.len() == 2 && !matches!(t.weight, WeightId::Layer(_, LayerWeight::PltGate)))
        .map(|t| t.storage)
        .filter(|&ty| crate::format::WeightFormat::of_ggml(ty).is_none())
        .collect();
    let stored_dtype = if !floats.is_empty() && floats.iter().all(|&t| t == GgmlType::F16) {
        DType::F16
    } else if !floats.is_empty() && floats.iter().all(|&t| t == GgmlType::BF16) {
        DType::BF16
    } else {
        DType::F32
    };
    let mut notes = f.summary();
    let c = &cfg;
    let _ = writeln!(
        notes,
        "  model: {} N={} D={} F={} H={} Hkv={} Dh={} V={} theta={} rope-scaling={} eps={:e} context={} tied={} weights {}",
        architecture(f)?,
        c.num_hidden_layers,
        c.hidden_size,
        c.intermediate_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        c.vocab_size,
        c.rope_theta,
        c.rope_scaling.describe(),
        c.rms_norm_eps,
        c.max_position_embeddings,
        c.tie_word_embeddings,
        stored_dtype.name()
    );
    let mut p = LoadPlan::new(source, Format::Gguf, cfg, stored_dtype, vec![file], tensors);
    p.notes = notes;
    Ok(p)
}

/// Undoes llama.cpp's q/k row permutation in place on whole heads: `values` holds groups of
/// `head_rows` rows of `row_len` values; within each, GGUF row `2j + i` holds original row
/// `i*head_rows/2 + j`.
/// Rows are moved whole, so `values` may be f32 values or the bytes of quantised block rows
/// (`row_len` bytes per row).
pub fn unpermute_rows<T: Copy + Default>(values: &mut [T], row_len: usize, head_rows: usize) {
    reorder_head_rows(values, row_len, head_rows, false);
}

/// llama.cpp's q/k row permutation (what its converter applies to llama files), the inverse of
/// `unpermute_rows`: within each group of `head_rows` rows, original row `i*head_rows/2 + j`
/// becomes row `2j + i`.
pub fn permute_rows<T: Copy + Default>(values: &mut [T], row_len: usize, head_rows: usize) {
    reorder_head_rows(values, row_len, head_rows, true);
}

/// Moves whole rows between the original order and llama.cpp's (`to_gguf`: into its order).
fn reorder_head_rows<T: Copy + Default>(values: &mut [T], row_len: usize, head_rows: usize, to_gguf: bool) {
    let (group, half) = (head_rows * row_len, head_rows / 2);
    if group == 0 {
        return;
    }
    let mut tmp = vec![T::default(); group];
    for g in values.chunks_exact_mut(group) {
        tmp.copy_from_slice(g);
        for j in 0..half {
            for i in 0..2 {
                let (original, file) = (i * half + j, 2 * j + i);
                let (src, dst) = if to_gguf { (original, file) } else { (file, original) };
                g[dst * row_len..(dst + 1) * row_len].copy_from_slice(&tmp[src * row_len..(src + 1) * row_len]);
            }
        }
    }
}

/// `unpermute_rows` on a [rows, cols] matrix or a [rows] bias split into `heads` heads.
pub fn unpermute_qk(t: &Tensor, heads: usize, name: &str) -> Result<Tensor> {
    let rows = t.shape.first().copied().unwrap_or(0);
    let cols = t.data.len().checked_div(rows).unwrap_or(0);
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(err(format!("tensor `{name}`: {rows} rows cannot be split into {heads} heads of even size")));
    }
    let mut data = t.data.clone();
    unpermute_rows(&mut data, cols, rows / heads);
    Ok(Tensor::new(t.shape.clone(), data))
}
