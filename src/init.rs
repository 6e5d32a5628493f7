//! Random model directories (`plt init`): a config, seeded well-conditioned weights in the
//! PLT-SPEC section 1 layout (one file or shards), and a small tokenizer, for tests and benchmarks;
//! or one GGUF file, quantised or not (`gguf`).

pub mod gguf;

use crate::config::{Config, Dims, GateMode};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::weights::{DType, Layer, Linear, Mlp, PltGate, SelfAttn, Tensor, Weights};
use safetensors::tensor::{Dtype, View};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

/// How `random_weights` and `write_model` build a model.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub seed: u64,
    /// Storage dtype in the file: F32, F16 or BF16. Values are rounded to it before writing.
    pub dtype: DType,
    /// 1 = `model.safetensors`; n > 1 = `model-0000k-of-0000n.safetensors` + the index json.
    pub shards: usize,
    /// Add Qwen2-style `q_proj.bias`, `k_proj.bias`, `v_proj.bias`.
    pub qkv_bias: bool,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions { seed: 0, dtype: DType::F32, shards: 1, qkv_bias: false }
    }
}

/// Random weights for `cfg` (values already rounded to `opts.dtype`, so a loaded model equals
/// them exactly).
///
/// Scales keep a random model's activations and logits non-degenerate: matrices
/// N(0, 1/fan_in), embeddings N(0, 1), norm weights 1 + 0.1 N(0, 1), gate weights N(0, 1/fan_in)
/// so that the gate logit is about N(0, 1) plus a N(0, 0.25) bias (gates spread over (0, 1)
/// instead of saturating), q/k/v biases N(0, 0.01).
///
/// Every tensor draws from its own stream, seeded by `opts.seed` and the tensor's name, so a
/// tensor's values do not depend on which other tensors exist (tied or not, biases or not).
pub fn random_weights(cfg: &Config, opts: &InitOptions) -> Weights {
    let (d, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (h, qd, kvd, dh) = (cfg.num_attention_heads, cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
    let dt = opts.dtype;
    // N(0, scale^2) + offset, rounded to the storage dtype.
    let gen = |name: &str, shape: Vec<usize>, offset: f32, scale: f32| -> Tensor {
        let n = shape.iter().product();
        let mut rng = Rng::new(opts.seed ^ fnv1a(name));
        let data = (0..n).map(|_| dt.round(offset + scale * rng.normal())).collect();
        Tensor::new(shape, data)
    };
    let matrix = |name: &str, out: usize, inp: usize| gen(name, vec![out, inp], 0.0, 1.0 / (inp as f32).sqrt());
    let norm = |name: &str| gen(name, vec![d], 1.0, 0.1);
    let linear = |p: &str, out: usize, inp: usize, bias: bool| Linear {
        weight: matrix(&format!("{p}.weight"), out, inp),
        bias: bias.then(|| gen(&format!("{p}.bias"), vec![out], 0.0, 0.1)),
    };

    let layers = (0..cfg.num_hidden_layers)
        .map(|i| {
            let p = format!("model.layers.{i}.");
            let g = format!("{p}self_attn.plt_gate.");
            let plt_gate = cfg.is_plt().then(|| {
                let fan_in = match cfg.gate_mode {
                    GateMode::Query => dh,
                    GateMode::Hidden => d,
                };
                PltGate {
                    weight: matrix(&format!("{g}weight"), h, fan_in),
                    bias: gen(&format!("{g}bias"), vec![h], 0.0, 0.5),
                    gate_norm: (cfg.gate_mode == GateMode::Hidden).then(|| norm(&format!("{g}gate_norm.weight"))),
                }
            });
            Layer {
                input_layernorm: norm(&format!("{p}input_layernorm.weight")),
                self_attn: SelfAttn {
                    q_proj: linear(&format!("{p}self_attn.q_proj"), qd, d, opts.qkv_bias),
                    k_proj: linear(&format!("{p}self_attn.k_proj"), kvd, d, opts.qkv_bias),
                    v_proj: linear(&format!("{p}self_attn.v_proj"), kvd, d, opts.qkv_bias),
                    o_proj: linear(&format!("{p}self_attn.o_proj"), d, qd, false),
                    plt_gate,
                },
                post_attention_layernorm: norm(&format!("{p}post_attention_layernorm.weight")),
                mlp: Mlp {
                    gate_proj: linear(&format!("{p}mlp.gate_proj"), f, d, false),
                    up_proj: linear(&format!("{p}mlp.up_proj"), f, d, false),
                    down_proj: linear(&format!("{p}mlp.down_proj"), d, f, false),
                },
            }
        })
        .collect();

    Weights {
        embed_tokens: gen("model.embed_tokens.weight", vec![v, d], 0.0, 1.0),
        layers,
        norm: norm("model.norm.weight"),
        lm_head: (!cfg.tie_word_embeddings).then(|| matrix("lm_head.weight", v, d)),
        dtype: dt,
    }
}

/// The model shapes `plt init --preset` knows: (name, description).
pub const PRESETS: &[(&str, &str)] = &[
    ("tiny", "the defaults: V 256, D 64, F 128, N 2, H 4, L 2, window 64"),
    (
        "loopcoder-v2",
        "LoopCoder-V2 (iquestpltcoder, ~7.6B): V 76800, D 5120, F 27648, N 14, H 40, Hkv 8, Dh 128, L 2, \
         window [64, 0], query gate, RoPE theta 500000, eps 1e-5, untied, context 131072",
    ),
    (
        "llama-3.2-1b",
        "Llama-3.2-1B's shape (~1.24B): V 128256, D 2048, F 8192, N 16, H 32, Hkv 8, Dh 64, L 1, tied, \
         RoPE theta 500000 with llama3 scaling (factor 32, low 1, high 4, original 8192), eps 1e-5, context 131072",
    ),
];

/// The config of preset `name` (`PRESETS`), BOS 1 and EOS 2; an error listing the presets when
/// there is none of that name.
pub fn preset_config(name: &str) -> Result<Config> {
    let dims = |v, d, f, n, h, ctx| Dims { vocab_size: v, hidden_size: d, intermediate_size: f, num_hidden_layers: n, num_attention_heads: h, max_position_embeddings: ctx };
    let mut c = match name {
        "tiny" => {
            let mut c = Config::with_defaults(dims(256, 64, 128, 2, 4, 2048));
            c.num_loops = 2;
            c
        }
        "loopcoder-v2" => {
            // PLT-SPEC s1 defaults for the PLT fields (window [64, 0], query gate, a = b = 1,
            // normalised per loop), the shapes of the public config.
            let mut c = Config::with_defaults(dims(76800, 5120, 27648, 14, 40, 131072));
            c.num_key_value_heads = 8;
            c.head_dim = 128;
            c.rope_theta = 500000.0;
            c.rms_norm_eps = 1e-5;
            c.num_loops = 2;
            c.window_left = 64;
            c.gate_mode = GateMode::Query;
            c.tie_word_embeddings = false;
            c
        }
        "llama-3.2-1b" => {
            let mut c = Config::with_defaults(dims(128256, 2048, 8192, 16, 32, 131072));
            c.num_key_value_heads = 8;
            c.head_dim = 64;
            c.rope_theta = 500000.0;
            c.rope_scaling = crate::config::RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            };
            c.rms_norm_eps = 1e-5;
            c.tie_word_embeddings = true;
            c
        }
        other => {
            let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
            return Err(Error::Input(format!("--preset: unknown preset `{other}` (expected one of {})", names.join(", "))));
        }
    };
    c.bos_token_id = Some(1);
    c.eos_token_ids = vec![2];
    c.validate()?;
    Ok(c)
}

/// Every tensor of `w` under its checkpoint name (PLT-SPEC section 1), in a fixed order:
/// embeddings, layer by layer, final norm, head. Absent optional tensors are skipped.
pub fn named_tensors(w: &Weights) -> Vec<(String, &Tensor)> {
    let mut out: Vec<(String, &Tensor)> = vec![("model.embed_tokens.weight".into(), &w.embed_tokens)];
    for (i, l) in w.layers.iter().enumerate() {
        let p = format!("model.layers.{i}.");
        out.push((format!("{p}input_layernorm.weight"), &l.input_layernorm));
        let a = &l.self_attn;
        for (name, lin) in [("q_proj", &a.q_proj), ("k_proj", &a.k_proj), ("v_proj", &a.v_proj), ("o_proj", &a.o_proj)] {
            out.push((format!("{p}self_attn.{name}.weight"), &lin.weight));
            if let Some(b) = &lin.bias {
                out.push((format!("{p}self_attn.{name}.bias"), b));
            }
        }
        if let Some(g) = &l.self_attn.plt_gate {
            out.push((format!("{p}self_attn.plt_gate.weight"), &g.weight));
            out.push((format!("{p}self_attn.plt_gate.bias"), &g.bias));
            if let Some(n) = &g.gate_norm {
                out.push((format!("{p}self_attn.plt_gate.gate_norm.weight"), n));
            }
        }
        out.push((format!("{p}post_attention_layernorm.weight"), &l.post_attention_layernorm));
        for (name, lin) in [("gate_proj", &l.mlp.gate_proj), ("up_proj", &l.mlp.up_proj), ("down_proj", &l.mlp.down_proj)] {
            out.push((format!("{p}mlp.{name}.weight"), &lin.weight));
            if let Some(b) = &lin.bias {
                out.push((format!("{p}mlp.{name}.bias"), b));
            }
        }
    }
    out.push(("model.norm.weight".into(), &w.norm));
    if let Some(head) = &w.lm_head {
        out.push(("lm_head.weight".into(), head));
    }
    out
}

/// Writes `config.json`, the safetensors file(s) and `tokenizer.json` into `dir` (created if
/// missing). Tensors are stored in `opts.dtype`; with `opts.shards` = n > 1 the tensors, in
/// `named_tensors` order, are cut into n contiguous runs of near-equal count.
pub fn write_model(dir: &Path, cfg: &Config, w: &Weights, opts: &InitOptions) -> Result<()> {
    cfg.validate()?;
    let tensors = named_tensors(w);
    let n = opts.shards;
    if n == 0 || n > tensors.len() {
        return Err(Error::Input(format!("shards must be between 1 and the tensor count ({}), got {n}", tensors.len())));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_file(&dir.join("config.json"), pretty(&cfg.to_json()).as_bytes())?;
    write_file(&dir.join("tokenizer.json"), pretty(&tokenizer_json(cfg.vocab_size)).as_bytes())?;

    let encoded: Vec<(String, Encoded)> = tensors.iter().map(|(name, t)| (name.clone(), Encoded::new(t, opts.dtype))).collect();
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    // A stale file of the other layout would shadow or confuse the new one:
    // the loader prefers model.safetensors over the index.
    let stale = if n == 1 { &index } else { &single };
    if stale.exists() {
        std::fs::remove_file(stale).map_err(|e| Error::io(stale, e))?;
    }
    if n == 1 {
        return write_file(&single, &serialize("model.safetensors", &encoded)?);
    }

    let mut weight_map = serde_json::Map::new();
    let mut total_size = 0usize;
    let count = encoded.len();
    for k in 0..n {
        let file = format!("model-{:05}-of-{:05}.safetensors", k + 1, n);
        // Tensor j goes to shard j*n/count: contiguous runs, none empty since n <= count.
        let part: Vec<&(String, Encoded)> =
            encoded.iter().enumerate().filter(|(j, _)| j * n / count == k).map(|(_, e)| e).collect();
        for (name, e) in part.iter().copied() {
            weight_map.insert(name.clone(), file.clone().into());
            total_size += e.bytes.len();
        }
        write_file(&dir.join(&file), &serialize(&file, part)?)?;
    }
    let index_json = serde_json::json!({
        "metadata": { "total_size": total_size },
        "weight_map": weight_map,
    });
    write_file(&index, pretty(&index_json).as_bytes())
}

/// A small valid Hugging Face `tokenizers` tokenizer.json for vocab size V: a WordLevel model
/// whose ids 0, 1, 2 are the special tokens `<unk>`, `<s>`, `</s>` (as many as V allows),
/// followed by the lowercase words a..z, aa..zz, aaa.. in shortlex order; exactly V unique
/// entries. Whitespace pre-tokenizer; unknown words map to `<unk>`.
pub fn tokenizer_json(vocab_size: usize) -> serde_json::Value {
    const SPECIALS: [&str; 3] = ["<unk>", "<s>", "</s>"];
    let n_special = vocab_size.min(SPECIALS.len());
    let mut vocab = serde_json::Map::new();
    for (id, s) in SPECIALS.iter().take(n_special).enumerate() {
        vocab.insert(s.to_string(), id.into());
    }
    for id in n_special..vocab_size {
        vocab.insert(shortlex_word(id - n_special), id.into());
    }
    let added_tokens: Vec<serde_json::Value> = SPECIALS
        .iter()
        .take(n_special)
        .enumerate()
        .map(|(id, s)| {
            serde_json::json!({
                "id": id, "content": s, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true,
            })
        })
        .collect();
    // With no special tokens (V = 0 is rejected by Config, but stay valid) the unk is a word.
    let unk = if n_special > 0 { SPECIALS[0].to_string() } else { shortlex_word(0) };
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": { "type": "Whitespace" },
        "post_processor": null,
        "decoder": null,
        "model": { "type": "WordLevel", "vocab": vocab, "unk_token": unk },
    })
}

/// The k-th lowercase word in shortlex order: a..z, aa..az, ba..zz, aaa..
fn shortlex_word(mut k: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'a' + (k % 26) as u8);
        if k < 26 {
            break;
        }
        k = k / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

/// FNV-1a of a tensor name: separates the per-tensor random streams.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// A tensor's little-endian bytes in its storage dtype, for `safetensors::serialize`.
struct Encoded {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Encoded {
    fn new(t: &Tensor, dtype: DType) -> Encoded {
        let (dtype, bytes) = match dtype {
            DType::F32 => (Dtype::F32, t.data.iter().flat_map(|x| x.to_le_bytes()).collect()),
            DType::F16 => (Dtype::F16, t.data.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect()),
            DType::BF16 => (Dtype::BF16, t.data.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect()),
        };
        Encoded { dtype, shape: t.shape.clone(), bytes }
    }
}

impl View for &Encoded {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn serialize<'a>(file: &str, tensors: impl IntoIterator<Item = &'a (String, Encoded)>) -> Result<Vec<u8>> {
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(tensors.into_iter().map(|(name, e)| (name.as_str(), e)), Some(metadata))
        .map_err(|e| Error::Safetensors { file: file.to_string(), msg: e.to_string() })
}

fn pretty(v: &serde_json::Value) -> String {
    // Serializing a Value cannot fail (its map keys are strings).
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

// `Error::Io` is the crate's one I/O error variant; its path names the file that failed.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: serde_json::Value) -> Config {
        let mut v = serde_json::json!({"vocab_size": 40, "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 64, "plt_num_loops": 2});
        for (k, x) in extra.as_object().unwrap() {
            v.as_object_mut().unwrap().insert(k.clone(), x.clone());
        }
        Config::from_json(v.as_object().unwrap()).unwrap()
    }

    fn rmsnorm(x: &[f32], w: &[f32]) -> Vec<f32> {
        let r = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32 + 1e-5).sqrt();
        x.iter().zip(w).map(|(v, w)| v / r * w).collect()
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn sigmoid(x: f32) -> f32 {
        1.0 / (1.0 + (-x).exp())
    }

    /// Gates of many random rows: mean, spread, and the share that is saturated.
    fn gate_stats(gates: &[f32]) -> (f32, f32, f32) {
        let n = gates.len() as f32;
        let mean = gates.iter().sum::<f32>() / n;
        let sd = (gates.iter().map(|g| (g - mean).powi(2)).sum::<f32>() / n).sqrt();
        let saturated = gates.iter().filter(|g| **g < 0.02 || **g > 0.98).count() as f32 / n;
        (mean, sd, saturated)
    }

    #[test]
    fn deterministic_and_rounded() {
        let c = cfg(serde_json::json!({}));
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let opts = InitOptions { seed: 7, dtype, shards: 1, qkv_bias: true };
            let a = random_weights(&c, &opts);
            let b = random_weights(&c, &opts);
            let (ta, tb) = (named_tensors(&a), named_tensors(&b));
            assert_eq!(ta.len(), tb.len());
            for ((na, xa), (nb, xb)) in ta.iter().zip(&tb) {
                assert_eq!(na, nb);
                assert_eq!(xa, xb);
                assert!(xa.data.iter().all(|x| dtype.round(*x) == *x && x.is_finite()), "{na} not rounded");
            }
        }
        let other = random_weights(&c, &InitOptions { seed: 8, ..Default::default() });
        assert_ne!(other.embed_tokens, random_weights(&c, &InitOptions { seed: 7, ..Default::default() }).embed_tokens);
    }

    #[test]
    fn tensor_set_follows_the_config() {
        let count = |c: &Config, bias: bool| {
            named_tensors(&random_weights(c, &InitOptions { qkv_bias: bias, ..Default::default() })).len()
        };
        // per layer: 2 norms + 4 attn + 3 mlp = 9; + embed + norm + head
        assert_eq!(count(&cfg(serde_json::json!({"plt_num_loops": 1})), false), 2 * 9 + 3);
        assert_eq!(count(&cfg(serde_json::json!({"plt_num_loops": 1})), true), 2 * 12 + 3);
        assert_eq!(count(&cfg(serde_json::json!({"plt_loop_mode": "vanilla"})), false), 2 * 9 + 3);
        assert_eq!(count(&cfg(serde_json::json!({"tie_word_embeddings": true})), false), 2 * 11 + 2);
        assert_eq!(count(&cfg(serde_json::json!({"plt_gate_use_hidden_states": true})), false), 2 * 12 + 3);
        let c = cfg(serde_json::json!({}));
        let total: usize = named_tensors(&random_weights(&c, &InitOptions::default())).iter().map(|(_, t)| t.data.len()).sum();
        assert_eq!(total, c.num_params());
    }

    #[test]
    fn gates_are_spread_over_the_unit_interval() {
        let mut rng = Rng::new(99);
        for mode in [false, true] {
            let c = cfg(serde_json::json!({"plt_gate_use_hidden_states": mode}));
            let w = random_weights(&c, &InitOptions { seed: 3, ..Default::default() });
            let mut gates = vec![];
            for l in &w.layers {
                let g = l.self_attn.plt_gate.as_ref().unwrap();
                for _ in 0..64 {
                    // A residual-stream row: embeddings are N(0, 1) per element.
                    let x = rng.normals(c.hidden_size, 1.0);
                    if let Some(gn) = &g.gate_norm {
                        let u = rmsnorm(&x, &gn.data);
                        gates.extend((0..c.num_attention_heads).map(|h| sigmoid(dot(g.weight.row(h), &u) + g.bias.data[h])));
                    } else {
                        // q_h before RoPE: the rotation keeps its norm, so the spread is the same.
                        let u = rmsnorm(&x, &l.input_layernorm.data);
                        let q = &l.self_attn.q_proj.weight;
                        for h in 0..c.num_attention_heads {
                            let qh: Vec<f32> = (0..c.head_dim).map(|j| dot(q.row(h * c.head_dim + j), &u)).collect();
                            gates.push(sigmoid(dot(&qh, g.weight.row(h)) + g.bias.data[h]));
                        }
                    }
                }
            }
            let (mean, sd, saturated) = gate_stats(&gates);
            assert!((0.25..0.75).contains(&mean) && sd > 0.1 && saturated < 0.1, "hidden={mode}: {mean} {sd} {saturated}");
        }
    }

    #[test]
    fn presets_have_their_shapes() {
        let c = preset_config("loopcoder-v2").unwrap();
        let shape = (c.vocab_size, c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads);
        assert_eq!(shape, (76800, 5120, 27648, 14, 40));
        assert_eq!((c.num_key_value_heads, c.head_dim, c.num_loops, c.window_left, c.rope_theta), (8, 128, 2, 64, 500000.0));
        assert!(c.is_plt() && c.gate_mode == GateMode::Query && !c.tie_word_embeddings);
        // ~7.6B parameters (MODELS.md).
        assert!((7_400_000_000..7_800_000_000).contains(&c.num_params()), "{}", c.num_params());
        assert_eq!(preset_config("tiny").unwrap().hidden_size, 64);
        let c = preset_config("llama-3.2-1b").unwrap();
        assert_eq!(
            (c.vocab_size, c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim),
            (128256, 2048, 8192, 16, 32, 8, 64)
        );
        assert!(c.tie_word_embeddings && c.num_loops == 1 && c.rope_theta == 500000.0);
        assert!(matches!(c.rope_scaling, crate::config::RopeScaling::Llama3 { factor, original_max_position_embeddings: 8192, .. } if factor == 32.0));
        // Llama-3.2-1B has 1.236B parameters with its tied embeddings.
        assert_eq!(c.num_params(), 1_235_814_400);
        assert!(preset_config("huge").unwrap_err().to_string().contains("loopcoder-v2"));
    }

    #[test]
    fn tokenizer_has_exactly_v_unique_entries() {
        for v in [1, 2, 3, 4, 29, 30, 31, 1000] {
            let t = tokenizer_json(v);
            let vocab = t["model"]["vocab"].as_object().unwrap();
            assert_eq!(vocab.len(), v);
            let mut ids: Vec<u64> = vocab.values().map(|x| x.as_u64().unwrap()).collect();
            ids.sort();
            assert_eq!(ids, (0..v as u64).collect::<Vec<_>>());
            assert_eq!(t["added_tokens"].as_array().unwrap().len(), v.min(3));
        }
        let t = tokenizer_json(40);
        assert_eq!(t["model"]["vocab"]["<unk>"], 0);
        assert_eq!(t["model"]["vocab"]["</s>"], 2);
        assert_eq!(t["model"]["vocab"]["a"], 3);
        assert_eq!(t["model"]["vocab"]["z"], 28);
        assert_eq!(t["model"]["vocab"]["aa"], 29);
        assert_eq!(shortlex_word(26 + 26 * 26), "aaa");
    }
}
