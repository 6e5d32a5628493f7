//! GGUF files for tests: a file builder that can also write malformed files (on the library's
//! encoders, `plt::gguf::writer`), the inverse of the loader's dequantisers, and a tiny llama
//! GGUF with a byte-level BPE tokenizer built with them: the synthetic files of tests/gguf.rs.
#![allow(dead_code)]

use plt::gguf::GgmlType;
use plt::rng::Rng;
use plt::weights::{Layer, Linear, Mlp, SelfAttn, Tensor};
use plt::{Config, DType, Weights};

// ---------------------------------------------------------------------------------------------
// A GGUF file builder (valid files, or malformed ones for the loader's error tests)
// ---------------------------------------------------------------------------------------------

pub use plt::gguf::value_type as vt;
use plt::gguf::{writer, Array, Value};

pub fn gstr(s: &str) -> Vec<u8> {
    let mut b = Vec::new();
    writer::encode_str(s, &mut b);
    b
}

/// A metadata value: (GGUF value type, payload bytes). Raw, so that tests can write values
/// no valid file holds (unknown types, lying lengths).
#[derive(Clone, Debug)]
pub struct Val(pub u32, pub Vec<u8>);

/// A valid value, encoded by the library's writer.
pub fn val(v: Value) -> Val {
    let mut b = Vec::new();
    writer::encode_value(&v, &mut b);
    Val(writer::value_type_of(&v), b)
}

pub fn u32v(x: u32) -> Val {
    val(Value::U32(x))
}
pub fn f32v(x: f32) -> Val {
    val(Value::F32(x))
}
pub fn strv(s: &str) -> Val {
    val(Value::Str(s.into()))
}
pub fn boolv(b: bool) -> Val {
    val(Value::Bool(b))
}
/// An array of `n` elements of type `elem` whose payload is given raw (`n` may lie).
pub fn arr(elem: u32, n: u64, payload: Vec<u8>) -> Val {
    let mut b = elem.to_le_bytes().to_vec();
    b.extend_from_slice(&n.to_le_bytes());
    b.extend(payload);
    Val(vt::ARRAY, b)
}
pub fn str_arr(items: &[String]) -> Val {
    val(Value::Array(Array::Str(items.to_vec())))
}
pub fn i32_arr(items: &[i32]) -> Val {
    val(Value::Array(Array::I32(items.to_vec())))
}

#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    /// GGUF order: fastest-varying first.
    pub dims: Vec<u64>,
    pub ty: u32,
    pub data: Vec<u8>,
    /// Written into the info instead of the real offset (malformed files).
    pub offset: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Gguf {
    pub magic: [u8; 4],
    pub version: u32,
    pub n_tensors: Option<u64>,
    pub n_kv: Option<u64>,
    pub kv: Vec<(String, Val)>,
    pub tensors: Vec<TensorSpec>,
    /// Layout alignment (general.alignment is written separately, when wanted).
    pub alignment: u64,
}

impl Gguf {
    pub fn new() -> Gguf {
        Gguf { magic: *b"GGUF", version: 3, n_tensors: None, n_kv: None, kv: vec![], tensors: vec![], alignment: 32 }
    }
    pub fn set(&mut self, key: &str, v: Val) -> &mut Self {
        match self.kv.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = v,
            None => self.kv.push((key.to_string(), v)),
        }
        self
    }
    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.kv.retain(|(k, _)| k != key);
        self
    }
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) {
        self.tensors.push(TensorSpec { name: name.into(), dims: dims.to_vec(), ty: ty.0, data, offset: None });
    }
    pub fn tensor_mut(&mut self, name: &str) -> &mut TensorSpec {
        self.tensors.iter_mut().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"))
    }
    /// Byte offset where the data section starts, and the file. Laid out by the library's
    /// writer (`plt::gguf::writer`); the fields above can make it malformed on purpose.
    pub fn build(&self) -> (usize, Vec<u8>) {
        let mut b = self.magic.to_vec();
        b.extend(self.version.to_le_bytes());
        b.extend(self.n_tensors.unwrap_or(self.tensors.len() as u64).to_le_bytes());
        b.extend(self.n_kv.unwrap_or(self.kv.len() as u64).to_le_bytes());
        for (k, Val(t, payload)) in &self.kv {
            writer::encode_entry_raw(k, *t, payload, &mut b);
        }
        let offsets = writer::data_offsets(self.tensors.iter().map(|t| t.data.len() as u64), self.alignment);
        for (t, &off) in self.tensors.iter().zip(&offsets) {
            writer::encode_tensor_info(&t.name, &t.dims, t.ty, t.offset.unwrap_or(off), &mut b);
        }
        b.resize(writer::align_up(b.len() as u64, self.alignment) as usize, 0);
        let data_start = b.len();
        for (t, &off) in self.tensors.iter().zip(&offsets) {
            b.resize(data_start + off as usize, 0);
            b.extend(&t.data);
        }
        (data_start, b)
    }
    pub fn bytes(&self) -> Vec<u8> {
        self.build().1
    }
}

// ---------------------------------------------------------------------------------------------
// Quantisers: known values → the block bytes llama.cpp would write (the inverse of the loader)
// ---------------------------------------------------------------------------------------------

pub fn f16_bits(x: f32) -> (half::f16, [u8; 2]) {
    let h = half::f16::from_f32(x);
    (h, h.to_le_bytes())
}

/// `rows` rows of `cols` values of type `ty`, random but exactly representable: the file bytes
/// (row-major, rows contiguous) and the values they decode to.
pub fn quantised(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> (Vec<u8>, Vec<f32>) {
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
            // K-quant super-blocks: random d (dmin), scale bytes and quants, decoded by the
            // loader's dequantiser (the reference).
            GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
                assert_eq!(cols % 256, 0);
                let mut row = Vec::new();
                for _ in 0..cols / 256 {
                    // Weights of about 0.05 (sub-block scales up to 63, int8 ones up to 128).
                    let (_, db) = f16_bits(small(rng).abs() * if ty == GgmlType::Q6_K { 0.001 } else { 0.01 });
                    let (_, mb) = f16_bits(small(rng).abs() * 0.01);
                    if ty == GgmlType::Q6_K {
                        row.extend((0..208).map(|_| rng.below(256) as u8));
                        row.extend(db);
                    } else {
                        row.extend(db);
                        row.extend(mb);
                        row.extend((0..if ty == GgmlType::Q4_K { 140 } else { 172 }).map(|_| rng.below(256) as u8));
                    }
                }
                vals.extend(plt::gguf::dequantize(ty, &row, cols).unwrap());
                bytes.extend(row);
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
pub fn permute_rows<T: Clone>(data: &[T], rows: usize, heads: usize) -> Vec<T> {
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

pub const MERGES: [&str; 10] = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "1 2"];

/// Control tokens, the 256 byte tokens, one token per merge, and a user-defined `<sep>`.
pub fn vocab() -> (Vec<String>, Vec<i32>) {
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

pub fn tok_id(name: &str) -> u32 {
    vocab().0.iter().position(|t| t == name).unwrap_or_else(|| panic!("no token {name}")) as u32
}

/// Per-tensor types of the synthetic models: every supported block type appears.
pub struct Variant {
    pub tied: bool,
    pub bias: bool,
    /// (q, k, v, o, gate, up, down) per layer.
    pub types: [[GgmlType; 7]; 2],
    pub embed: GgmlType,
}

pub fn variants() -> Vec<Variant> {
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

/// Every matrix quantised, fused parts of one format, every block format, a tied embedding.
pub fn all_quantised() -> Variant {
    use GgmlType as G;
    Variant {
        tied: true,
        bias: true,
        types: [[G::Q4_0, G::Q4_0, G::Q4_0, G::Q5_0, G::Q8_0, G::Q8_0, G::Q5_1], [G::Q4_1, G::Q4_1, G::Q4_1, G::Q8_0, G::Q5_1, G::Q5_1, G::Q4_0]],
        embed: G::Q5_0,
    }
}

/// K-quant matrices: Q4_K, Q5_K and Q6_K, a fused q/k/v of mixed K-quants, a Q6_K tied
/// embedding (as llama.cpp's Q4_K_M files hold).
pub fn k_quantised() -> Variant {
    use GgmlType as G;
    Variant {
        tied: true,
        bias: true,
        types: [[G::Q4_K, G::Q4_K, G::Q4_K, G::Q6_K, G::Q4_K, G::Q4_K, G::Q6_K], [G::Q6_K, G::Q4_K, G::Q6_K, G::Q5_K, G::Q5_K, G::Q5_K, G::Q4_K]],
        embed: G::Q6_K,
    }
}

/// Every matrix's rows whole 256-weight super-blocks (a GGUF file holds K-quant rows of whole
/// super-blocks only).
pub const K_DIMS: Dims = Dims { d: 256, h: 4, hkv: 2, dh: 64, f: 512 };

pub const D: usize = 64;
pub const H: usize = 4;
pub const HKV: usize = 2;
pub const DH: usize = 16;
pub const F: usize = 96;
pub const N: usize = 2;

/// The sizes of a synthetic model.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub d: usize,
    pub h: usize,
    pub hkv: usize,
    pub dh: usize,
    pub f: usize,
}

/// The tiny model's sizes.
pub const TINY: Dims = Dims { d: D, h: H, hkv: HKV, dh: DH, f: F };

pub fn tiny_config(tied: bool) -> Config {
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
pub fn synthetic(var: &Variant, seed: u64) -> (Gguf, Weights) {
    synthetic_dims(var, TINY, seed)
}

/// `synthetic` with other sizes.
pub fn synthetic_dims(var: &Variant, dims: Dims, seed: u64) -> (Gguf, Weights) {
    let mut rng = Rng::new(seed);
    let (tokens, types) = vocab();
    let v = tokens.len();
    let mut g = Gguf::new();
    g.set("general.architecture", strv("llama"))
        .set("general.name", strv("tiny test llama"))
        .set("general.alignment", u32v(32))
        .set("llama.block_count", u32v(N as u32))
        .set("llama.context_length", u32v(128))
        .set("llama.embedding_length", u32v(dims.d as u32))
        .set("llama.feed_forward_length", u32v(dims.f as u32))
        .set("llama.attention.head_count", u32v(dims.h as u32))
        .set("llama.attention.head_count_kv", u32v(dims.hkv as u32))
        .set("llama.rope.freq_base", f32v(50000.0))
        .set("llama.attention.layer_norm_rms_epsilon", f32v(1e-6))
        .set("llama.rope.dimension_count", u32v(dims.dh as u32))
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
    let embed_tokens = mat(&mut g, &mut rng, "token_embd.weight", var.embed, v, dims.d, None);
    let mut layers = Vec::new();
    for i in 0..N {
        let p = format!("blk.{i}.");
        let t = var.types[i];
        let input_layernorm = vector(&mut g, &mut rng, &format!("{p}attn_norm.weight"), dims.d, None, 1.0);
        let q = mat(&mut g, &mut rng, &format!("{p}attn_q.weight"), t[0], dims.h * dims.dh, dims.d, Some(dims.h));
        let k = mat(&mut g, &mut rng, &format!("{p}attn_k.weight"), t[1], dims.hkv * dims.dh, dims.d, Some(dims.hkv));
        let vw = mat(&mut g, &mut rng, &format!("{p}attn_v.weight"), t[2], dims.hkv * dims.dh, dims.d, None);
        let (qb, kb, vb) = if var.bias {
            (
                Some(vector(&mut g, &mut rng, &format!("{p}attn_q.bias"), dims.h * dims.dh, Some(dims.h), 0.0)),
                Some(vector(&mut g, &mut rng, &format!("{p}attn_k.bias"), dims.hkv * dims.dh, Some(dims.hkv), 0.0)),
                Some(vector(&mut g, &mut rng, &format!("{p}attn_v.bias"), dims.hkv * dims.dh, None, 0.0)),
            )
        } else {
            (None, None, None)
        };
        let o = mat(&mut g, &mut rng, &format!("{p}attn_output.weight"), t[3], dims.d, dims.h * dims.dh, None);
        let post_attention_layernorm = vector(&mut g, &mut rng, &format!("{p}ffn_norm.weight"), dims.d, None, 1.0);
        let gate = mat(&mut g, &mut rng, &format!("{p}ffn_gate.weight"), t[4], dims.f, dims.d, None);
        let up = mat(&mut g, &mut rng, &format!("{p}ffn_up.weight"), t[5], dims.f, dims.d, None);
        let down = mat(&mut g, &mut rng, &format!("{p}ffn_down.weight"), t[6], dims.d, dims.f, None);
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
    let norm = vector(&mut g, &mut rng, "output_norm.weight", dims.d, None, 1.0);
    let lm_head = (!var.tied).then(|| mat(&mut g, &mut rng, "output.weight", GgmlType::F16, v, dims.d, None));
    (g, Weights { embed_tokens, layers, norm, lm_head, dtype: DType::F32 })
}

