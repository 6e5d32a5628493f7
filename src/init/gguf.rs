//! Random models as one GGUF file (`plt init --dtype q4_k`, `plt bench --dtype q4_k`): llama
//! metadata plus the `plt.*` keys, a byte-level BPE tokenizer, and every tensor generated and
//! written in turn (`gguf::writer`), so memory stays bounded by one piece of one tensor however
//! large the model.
//!
//! Matrices take the requested type; one whose rows are not whole blocks of it falls back as
//! llama.cpp's quantiser does (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, then F16 when rows are
//! not whole 32-weight blocks either). Norms, biases and the PLT gate stay F32. Weights have the
//! spread of `random_weights` (matrices N(0, 1/fan_in), embeddings N(0, 1), norms 1 + 0.1 N(0, 1),
//! gate weights N(0, 1/fan_in), gate bias N(0, 0.25), q/k/v biases N(0, 0.01)); each tensor draws
//! from its own stream seeded by the seed and its name.
//!
//! RoPE scaling is written as llama.cpp writes it: `linear` as `{arch}.rope.scaling.*` keys,
//! Llama 3's (and any per-frequency scaling) as tensor `rope_freqs.weight` (F32 divisors, first
//! in the file). The architecture is `llama` (`write_gguf_to`) or `qwen2`
//! (`write_gguf_arch_to`: `qwen2.*` keys, q/k rows as they are).

use super::fnv1a;
use crate::config::{rope_inv_freq, Config, GateMode, Looping, RopeScaling};
use crate::error::{Error, Result};
use crate::gguf::writer::{random_blocks, GgufWriter, TensorDecl};
use crate::gguf::{tensor_name, Array, GgmlType, Value};
use crate::load::plan::{LayerWeight, WeightId};
use crate::rng::Rng;
use std::io::Write;
use std::path::Path;

/// Bytes of random blocks generated and written at a time.
const PIECE_BYTES: usize = 8 << 20;

/// How `write_gguf` builds a model.
#[derive(Clone, Debug)]
pub struct GgufInitOptions {
    pub seed: u64,
    /// The matrices' type: F32, F16, BF16, or a block format the runtime keeps quantised.
    pub matrix_type: GgmlType,
    /// Add Qwen2-style q/k/v biases.
    pub qkv_bias: bool,
}

/// The type a matrix with rows of `cols` gets when `ty` is asked for (the fallbacks of the
/// module doc).
pub fn matrix_type(ty: GgmlType, cols: usize) -> GgmlType {
    let fits = |t: GgmlType| t.block().is_some_and(|(b, _)| (cols as u64).is_multiple_of(b));
    let mut t = ty;
    if !fits(t) {
        t = match ty {
            GgmlType::Q4_K => GgmlType::Q5_0,
            GgmlType::Q5_K => GgmlType::Q5_1,
            GgmlType::Q6_K => GgmlType::Q8_0,
            other => other,
        };
    }
    if fits(t) {
        t
    } else {
        GgmlType::F16
    }
}

/// One tensor of the file: its declaration and the spread of its values (around `offset`).
struct Planned {
    decl: TensorDecl,
    std: f32,
    offset: f32,
    /// Fixed F32 values instead of random ones (`rope_freqs.weight`).
    values: Option<Vec<f32>>,
}

/// The per-frequency RoPE divisors that stand for `cfg`'s scaling in a GGUF file (None: no
/// scaling, or one written as metadata keys).
pub fn rope_freq_factors(cfg: &Config) -> Option<Vec<f32>> {
    match &cfg.rope_scaling {
        RopeScaling::None | RopeScaling::Linear { .. } => None,
        RopeScaling::FreqFactors(d) => Some(d.clone()),
        RopeScaling::Llama3 { .. } => {
            let plain = rope_inv_freq(cfg.rope_theta, cfg.head_dim, &RopeScaling::None);
            Some(plain.iter().zip(cfg.rope_inv_freq()).map(|(p, s)| (p / s) as f32).collect())
        }
    }
}

/// Every tensor of a random `cfg` model, embeddings first, in file order.
fn plan(cfg: &Config, opts: &GgufInitOptions) -> Vec<Planned> {
    use LayerWeight as L;
    let (d, dh) = (cfg.hidden_size, cfg.head_dim);
    let mut ids: Vec<WeightId> = WeightId::all(cfg)
        .filter(|&(w, required)| required || opts.qkv_bias && matches!(w, WeightId::Layer(_, L::QBias | L::KBias | L::VBias)))
        .map(|(w, _)| w)
        .collect();
    ids.sort_by_key(|w| !matches!(w, WeightId::EmbedTokens)); // stable: the rest keep their order
    let freqs = rope_freq_factors(cfg).map(|d| Planned {
        decl: TensorDecl::new(crate::gguf::ROPE_FREQS.to_string(), &[d.len()], GgmlType::F32),
        std: 0.0,
        offset: 0.0,
        values: Some(d),
    });
    freqs.into_iter().chain(ids.into_iter()
        .map(|w| {
            let shape = w.shape(cfg);
            let fan_in = |n: usize| 1.0 / (n as f32).sqrt();
            let (ty, std, offset) = match w {
                WeightId::EmbedTokens => (matrix_type(opts.matrix_type, d), 1.0, 0.0),
                WeightId::Norm => (GgmlType::F32, 0.1, 1.0),
                WeightId::LmHead => (matrix_type(opts.matrix_type, d), fan_in(d), 0.0),
                WeightId::Layer(_, l) => match l {
                    L::InputLayernorm | L::PostAttentionLayernorm | L::PltGateNorm => (GgmlType::F32, 0.1, 1.0),
                    L::QBias | L::KBias | L::VBias => (GgmlType::F32, 0.1, 0.0),
                    L::PltGate => (GgmlType::F32, fan_in(if cfg.gate_mode == GateMode::Hidden { d } else { dh }), 0.0),
                    L::PltGateBias => (GgmlType::F32, 0.5, 0.0),
                    _ => (matrix_type(opts.matrix_type, shape[1]), fan_in(shape[1]), 0.0),
                },
            };
            Planned { decl: TensorDecl::new(tensor_name(w), &shape, ty), std, offset, values: None }
        }))
        .collect()
}

/// The special tokens of the tokenizer init writes (ids 0, 1, 2; BOS 1, EOS 2 as `plt init`'s
/// config).
const SPECIALS: [&str; 3] = ["<unk>", "<s>", "</s>"];

/// The model metadata of a `cfg` model under architecture `arch` (`llama` or `qwen2`):
/// `general.architecture`, `general.name`, `general.alignment` 32, the `{arch}.*`
/// hyperparameters (and linear RoPE scaling's keys), then its `plt.*` keys (PLT-SPEC s1's
/// `plt_*` fields, `gguf::PLT_KEYS`): what every GGUF file this runtime writes starts with.
pub fn model_metadata_arch(cfg: &Config, name: &str, arch: &str) -> Vec<(String, Value)> {
    let u = |x: usize| Value::U32(x.min(u32::MAX as usize) as u32);
    let s = |x: &str| Value::Str(x.to_string());
    let a = |k: &str| format!("{arch}.{k}");
    let mut m: Vec<(String, Value)> = vec![
        ("general.architecture".into(), s(arch)),
        ("general.name".into(), s(name)),
        ("general.alignment".into(), Value::U32(32)),
        (a("block_count"), u(cfg.num_hidden_layers)),
        (a("context_length"), u(cfg.max_position_embeddings)),
        (a("embedding_length"), u(cfg.hidden_size)),
        (a("feed_forward_length"), u(cfg.intermediate_size)),
        (a("attention.head_count"), u(cfg.num_attention_heads)),
        (a("attention.head_count_kv"), u(cfg.num_key_value_heads)),
        (a("attention.key_length"), u(cfg.head_dim)),
        (a("attention.value_length"), u(cfg.head_dim)),
        (a("rope.dimension_count"), u(cfg.head_dim)),
        (a("rope.freq_base"), Value::F32(cfg.rope_theta)),
        (a("attention.layer_norm_rms_epsilon"), Value::F32(cfg.rms_norm_eps)),
        (a("vocab_size"), u(cfg.vocab_size)),
    ];
    m.extend(plt_metadata(cfg));
    if let RopeScaling::Linear { factor } = cfg.rope_scaling {
        m.push((a("rope.scaling.type"), s("linear")));
        m.push((a("rope.scaling.factor"), Value::F32(factor)));
    }
    m
}

/// `model_metadata_arch` of the llama architecture.
pub fn model_metadata(cfg: &Config, name: &str) -> Vec<(String, Value)> {
    model_metadata_arch(cfg, name, "llama")
}

/// The `plt.*` keys of `cfg` (`gguf::PLT_KEYS`, in that order).
pub fn plt_metadata(cfg: &Config) -> Vec<(String, Value)> {
    let values = [
        Value::U32(cfg.num_loops.min(u32::MAX as usize) as u32),
        Value::Array(Array::U32(vec![cfg.window_left.min(u32::MAX as usize) as u32, 0])),
        Value::Bool(cfg.normalize_per_loop),
        Value::F32(cfg.emb_scale),
        Value::F32(cfg.hidden_scale),
        Value::Bool(cfg.gate_mode == GateMode::Hidden),
        Value::Str(if cfg.looping == Looping::Vanilla { "vanilla" } else { "parallel" }.to_string()),
    ];
    crate::gguf::PLT_KEYS.iter().map(|k| k.to_string()).zip(values).collect()
}

/// The metadata of a random `cfg` model: llama keys, the `plt.*` keys, and a byte-level BPE
/// tokenizer of exactly V tokens (the specials, the 256 byte tokens, then filler words `aa`,
/// `ab`, ..; a vocabulary under 259 keeps the first V of them) with no merges.
pub fn metadata(cfg: &Config, name: &str) -> Vec<(String, Value)> {
    metadata_arch(cfg, name, "llama")
}

/// `metadata` under architecture `arch` (`llama` or `qwen2`: the keys' prefix, and qwen2's
/// pre-tokenizer).
pub fn metadata_arch(cfg: &Config, name: &str, arch: &str) -> Vec<(String, Value)> {
    let v = cfg.vocab_size;
    let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    tokens.extend(crate::tokenizer::byte_level_alphabet().into_iter().map(|c| c.to_string()));
    let mut k = 26; // shortlex words of two letters and more
    while tokens.len() < v {
        tokens.push(super::shortlex_word(k));
        k += 1;
    }
    tokens.truncate(v);
    let types: Vec<i32> = (0..v).map(|i| if i < SPECIALS.len() { 3 } else { 1 }).collect();
    let s = |x: &str| Value::Str(x.to_string());
    let mut m = model_metadata_arch(cfg, name, arch);
    let tok: Vec<(&str, Value)> = vec![
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.pre", s(if arch == "qwen2" { "qwen2" } else { "gpt-2" })),
        ("tokenizer.ggml.tokens", Value::Array(Array::Str(tokens))),
        ("tokenizer.ggml.token_type", Value::Array(Array::I32(types))),
        ("tokenizer.ggml.merges", Value::Array(Array::Str(vec![]))),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
    ];
    m.extend(tok.into_iter().map(|(k, v)| (k.to_string(), v)));
    if let Some(b) = cfg.bos_token_id {
        m.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(b)));
    }
    if let Some(&e) = cfg.eos_token_ids.first() {
        m.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(e)));
    }
    m
}

/// What `write_gguf` wrote.
#[derive(Clone, Debug)]
pub struct GgufInitReport {
    pub bytes: u64,
    /// (type, tensors, bytes of data), largest first.
    pub by_type: Vec<(GgmlType, usize, u64)>,
}

/// Writes a random `cfg` model as a GGUF file to `out`, tensor by tensor, in pieces of at most
/// a few MiB. Returns the writer and what was written.
pub fn write_gguf_to<W: Write>(out: W, cfg: &Config, opts: &GgufInitOptions) -> Result<(W, GgufInitReport)> {
    write_gguf_arch_to(out, cfg, opts, "llama")
}

/// `write_gguf_to` under architecture `arch` (`llama` or `qwen2`, `metadata_arch`).
pub fn write_gguf_arch_to<W: Write>(out: W, cfg: &Config, opts: &GgufInitOptions, arch: &str) -> Result<(W, GgufInitReport)> {
    cfg.validate()?;
    if !crate::gguf::ARCHITECTURES.contains(&arch) {
        return Err(Error::Input(format!("architecture `{arch}` is not one of {}", crate::gguf::ARCHITECTURES.join(", "))));
    }
    if !crate::gguf::writer::RANDOM_TYPES.contains(&opts.matrix_type) {
        return Err(Error::Input(format!("no random {} matrices (expected F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K or Q6_K)", opts.matrix_type.name())));
    }
    let tensors = plan(cfg, opts);
    let mut w = GgufWriter::new(out, &metadata_arch(cfg, "plt init random model", arch), tensors.iter().map(|t| t.decl.clone()).collect())?;
    let bytes = w.file_size();
    let mut by_type: Vec<(GgmlType, usize, u64)> = Vec::new();
    for t in &tensors {
        let (cols, rows) = (t.decl.dims[0] as usize, t.decl.dims.get(1).copied().unwrap_or(1) as usize);
        if let Some(values) = &t.values {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.write(&bytes)?;
            let e = by_type.iter().position(|e| e.0 == GgmlType::F32).unwrap_or_else(|| {
                by_type.push((GgmlType::F32, 0, 0));
                by_type.len() - 1
            });
            by_type[e].1 += 1;
            by_type[e].2 += bytes.len() as u64;
            continue;
        }
        let mut rng = Rng::new(opts.seed ^ fnv1a(&t.decl.name));
        let row_bytes = (t.decl.bytes()? / rows as u64) as usize;
        let step = (PIECE_BYTES / row_bytes.max(1)).max(1);
        let mut r = 0;
        while r < rows {
            let n = step.min(rows - r);
            let mut piece = random_blocks(t.decl.ty, n, cols, t.std, &mut rng)?;
            if t.offset != 0.0 {
                // Floats only (norms): shift by the offset.
                for c in piece.chunks_exact_mut(4) {
                    let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]) + t.offset;
                    c.copy_from_slice(&x.to_le_bytes());
                }
            }
            w.write(&piece)?;
            r += n;
        }
        let b = t.decl.bytes()?;
        match by_type.iter_mut().find(|e| e.0 == t.decl.ty) {
            Some(e) => {
                e.1 += 1;
                e.2 += b;
            }
            None => by_type.push((t.decl.ty, 1, b)),
        }
    }
    by_type.sort_by_key(|e| std::cmp::Reverse(e.2));
    Ok((w.finish()?, GgufInitReport { bytes, by_type }))
}

/// `write_gguf_to` a file at `path` (created or truncated).
pub fn write_gguf(path: &Path, cfg: &Config, opts: &GgufInitOptions) -> Result<GgufInitReport> {
    let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let (out, report) = write_gguf_to(std::io::BufWriter::with_capacity(1 << 20, f), cfg, opts).map_err(|e| match e {
        Error::Io { source, .. } => Error::io(path, source),
        other => other,
    })?;
    out.into_inner().map_err(|e| Error::io(path, e.into_error()))?.sync_all().map_err(|e| Error::io(path, e))?;
    Ok(report)
}

/// `write_gguf_to` memory: the bytes of the file.
pub fn gguf_bytes(cfg: &Config, opts: &GgufInitOptions) -> Result<Vec<u8>> {
    Ok(write_gguf_to(Vec::new(), cfg, opts)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_types_follow_llama_cpp() {
        use GgmlType as G;
        assert_eq!(matrix_type(G::Q4_K, 512), G::Q4_K);
        assert_eq!(matrix_type(G::Q4_K, 96), G::Q5_0);
        assert_eq!(matrix_type(G::Q5_K, 96), G::Q5_1);
        assert_eq!(matrix_type(G::Q6_K, 96), G::Q8_0);
        assert_eq!(matrix_type(G::Q6_K, 40), G::F16);
        assert_eq!(matrix_type(G::Q8_0, 40), G::F16);
        assert_eq!(matrix_type(G::F32, 40), G::F32);
    }

    #[test]
    fn files_load_with_their_config_and_types() {
        let cfg = Config::from_json(
            serde_json::json!({"vocab_size": 300, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64, "plt_num_loops": 3,
                "plt_window_size": [5, 0], "plt_gate_use_hidden_states": true, "plt_emb_scale": 0.5, "plt_hidden_scale": 2.0,
                "plt_normalize_per_loop": false, "rope_theta": 500000.0, "bos_token_id": 1, "eos_token_id": 2})
            .as_object()
            .unwrap(),
        )
        .unwrap();
        let opts = GgufInitOptions { seed: 4, matrix_type: GgmlType::Q4_K, qkv_bias: true };
        let bytes = gguf_bytes(&cfg, &opts).unwrap();
        let m = crate::gguf::load_gguf_bytes(&bytes).unwrap();
        assert_eq!(m.cfg.to_json(), cfg.to_json());
        let f = crate::gguf::GgufFile::parse(&bytes).unwrap();
        // D = 64 and F = 96 rows are not whole 256-blocks: Q5_0 (llama.cpp's fallback).
        assert_eq!(f.tensor("blk.0.ffn_down.weight").unwrap().ty, GgmlType::Q5_0);
        assert_eq!(f.tensor("blk.1.plt_gate.weight").unwrap().ty, GgmlType::F32);
        assert_eq!(f.tensor("blk.1.attn_q.bias").unwrap().ty, GgmlType::F32);
        assert!(m.tokenizer.is_some());
        // Deterministic.
        assert_eq!(gguf_bytes(&cfg, &opts).unwrap(), bytes);
    }
}
