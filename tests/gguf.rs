//! GGUF loading (src/gguf/, through src/load/): synthetic files (tests/support/gguf_writer.rs)
//! load to exactly the weights they encode (dequantised, q/k rows unpermuted, shapes reversed)
//! and the same reference logits, on the host and streamed to the device; malformed files give
//! errors, never panics. The real SmolLM2 file is tested in tests/smollm2.rs.

mod common;
#[path = "support/gguf_writer.rs"]
mod gguf_writer;
use gguf_writer::*;
use plt::gguf::{dequantize, load_gguf, load_gguf_bytes, GgmlType, GgufFile, GgufTokenizer};
use plt::init::named_tensors;
use plt::load::{ByteSource, MemorySource, ModelSource};
use plt::model::GpuModel;
use plt::rng::Rng;
use plt::weights::Tensor;
use plt::{reference, DType, Error, Weights};
use std::path::Path;

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
// Synthetic files
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

/// Streamed straight to the device with an explicit dtype (q/k rows un-permuted chunk by
/// chunk, every block dequantised on the way), a GGUF file gives the same device bytes as its
/// host weights uploaded, and its byte source is read once, front to back. (With no dtype the
/// quantised matrices stay quantised: tests/quant_model.rs.)
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
        let streamed = GpuModel::load(gpu.clone(), open, Some(m.weights.dtype), &mut |_| {}).unwrap();
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
    // A merge naming a token the vocabulary lacks, or not two tokens: refused at load, naming
    // the metadata key and the merge.
    check("merge of a missing token", &|g| {
        g.set("tokenizer.ggml.merges", str_arr(&["no_such_token x".to_string()]));
    }, &["`tokenizer.ggml.merges`: merge 0", "no_such_token", "not in the vocabulary"]);
    check("merge of one token", &|g| {
        g.set("tokenizer.ggml.merges", str_arr(&["single".to_string()]));
    }, &["`tokenizer.ggml.merges`: merge 0", "not two tokens"]);
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
        g.set("tokenizer.ggml.model", strv("bert"));
    }, &["tokenizer.ggml.model", "`bert`"]);
    check("SentencePiece scores length", &|g| {
        g.set("tokenizer.ggml.model", strv("llama"));
        g.set("tokenizer.ggml.scores", f32v(1.0));
    }, &["tokenizer.ggml.scores"]);
    check("SentencePiece byte token", &|g| {
        g.set("tokenizer.ggml.model", strv("llama"));
        let (tokens, _) = vocab();
        g.set("tokenizer.ggml.token_type", i32_arr(&vec![6; tokens.len()]));
    }, &["byte token"]);
    check("other architecture", &|g| {
        g.set("general.architecture", strv("gemma"));
    }, &["architecture `gemma`", "qwen2"]);
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
// Bad tensor data: errors name the file, the tensor and the first bad value or block
// ---------------------------------------------------------------------------------------------

/// A synthetic model whose matrices (q/k/v, o, gate/up, down; the embedding too when it is a
/// block format) are all of type `ty`, so the device keeps every block format quantised.
fn all_of(ty: GgmlType, dims: Dims) -> Gguf {
    let embed = if ty.block().unwrap().0 > 1 { ty } else { GgmlType::F16 };
    let var = Variant { tied: true, bias: false, types: [[ty; 7]; 2], embed };
    synthetic_dims(&var, dims, 23).0
}

/// Absolute byte offset of tensor `name`'s data in `g.build()` (the writer's layout).
fn data_offset(g: &Gguf, name: &str) -> usize {
    let mut at = g.build().0;
    for t in &g.tensors {
        if t.name == name {
            return at;
        }
        at = (at + t.data.len()).div_ceil(g.alignment as usize) * g.alignment as usize;
    }
    panic!("no tensor {name}")
}

/// The error of loading `bytes` (named `name`) on the host and streamed to the device with
/// `dtype` (None: block formats kept quantised; F32: dequantised at load); all three must be
/// errors and mention `parts`.
fn load_errors(gpu: &std::sync::Arc<plt::gpu::Gpu>, name: &str, bytes: &[u8], parts: &[&str]) {
    let host = plt::load::open_gguf(Box::new(MemorySource::new(name, bytes))).and_then(|m| m.read_weights());
    assert_mentions(&error_of(host), parts);
    for dtype in [None, Some(DType::F32)] {
        let open = plt::load::open_gguf(Box::new(MemorySource::new(name, bytes)));
        let msg = error_of(open.and_then(|m| GpuModel::load(gpu.clone(), m, dtype, &mut |_| {})));
        assert_mentions(&msg, parts);
    }
    gpu.check().unwrap();
}

/// A NaN or an infinity wherever a tensor stores a float (a block's f16 scale `d`, Q4_1/Q5_1's
/// min `m`, the K-quants' super-block `d` and `dmin`, an F32/F16/BF16 value) is an error naming
/// the file, the tensor and the first bad block or value, on the host and on the device, with
/// blocks kept quantised and dequantised at load.
#[test]
fn non_finite_scales_and_values_are_errors_naming_the_block() {
    use GgmlType as G;
    let gpu = common::gpu();
    // f16 bits of NaN, +Inf, -Inf.
    let bad = [(0x7E00u16, "NaN"), (0x7C00, "+Inf"), (0xFC00, "-Inf")];
    let scales = [
        (G::Q8_0, 0, "scale `d`"),
        (G::Q4_0, 0, "scale `d`"),
        (G::Q5_0, 0, "scale `d`"),
        (G::Q4_1, 0, "scale `d`"),
        (G::Q4_1, 2, "min `m`"),
        (G::Q5_1, 0, "scale `d`"),
        (G::Q5_1, 2, "min `m`"),
        (G::Q4_K, 0, "super-block scale `d`"),
        (G::Q4_K, 2, "super-block min `dmin`"),
        (G::Q5_K, 0, "super-block scale `d`"),
        (G::Q5_K, 2, "super-block min `dmin`"),
        (G::Q6_K, 208, "super-block scale `d`"),
    ];
    let name = "blk.1.ffn_down.weight"; // [D, F]: rows of F = 512 values
    for (i, &(ty, at, field)) in scales.iter().enumerate() {
        let base = all_of(ty, K_DIMS);
        let (block, block_bytes) = ty.block().unwrap();
        let per_row = (K_DIMS.f as u64 / block) as usize;
        // The second block of row 1, then a later one: the error names the first.
        let first = per_row + 1;
        let (bits, kind) = bad[i % 3];
        let mut g = base.clone();
        let data = &mut g.tensor_mut(name).data;
        for b in [first, first + 3] {
            data[b * block_bytes as usize + at..][..2].copy_from_slice(&bits.to_le_bytes());
        }
        let want = format!("block {first} has a non-finite {field} ({kind})");
        load_errors(&gpu, "bad-scale.gguf", &g.bytes(), &["bad-scale.gguf", name, ty.name().as_str(), &want]);
        // The same block with a finite scale loads.
        assert!(load_gguf_bytes(&base.bytes()).is_ok(), "{}", ty.name());
    }
    // Values of float tensors: a matrix, and an F32 vector.
    for (i, ty) in [G::F32, G::F16, G::BF16].into_iter().enumerate() {
        let mut g = all_of(ty, K_DIMS);
        let (bits, kind) = bad[i];
        let width = ty.block().unwrap().1 as usize;
        let at = K_DIMS.f + 3; // row 1, column 3
        let value = match ty {
            G::F32 => half::f16::from_bits(bits).to_f32().to_le_bytes().to_vec(),
            G::BF16 => half::bf16::from_f32(half::f16::from_bits(bits).to_f32()).to_le_bytes().to_vec(),
            _ => bits.to_le_bytes().to_vec(),
        };
        g.tensor_mut(name).data[at * width..][..width].copy_from_slice(&value);
        let want = format!("value {at} (row 1, column 3) is {kind}");
        load_errors(&gpu, "bad-value.gguf", &g.bytes(), &["bad-value.gguf", name, ty.name().as_str(), &want]);
    }
    let mut g = all_of(G::Q8_0, K_DIMS);
    g.tensor_mut("output_norm.weight").data[4 * 7..][..4].copy_from_slice(&f32::NAN.to_le_bytes());
    load_errors(&gpu, "bad-norm.gguf", &g.bytes(), &["bad-norm.gguf", "output_norm.weight", "value 7 (row 0, column 7) is NaN"]);
}

/// In a tensor read in several chunks (ffn_down of 256 rows of 8192 values: 2M values, two
/// chunks of rows), the block index counts from the tensor's start, not the chunk's.
#[test]
fn a_non_finite_scale_in_a_later_chunk_is_counted_from_the_tensor_start() {
    let gpu = common::gpu();
    let dims = Dims { f: 8192, ..K_DIMS };
    let mut g = all_of(GgmlType::Q4_0, dims);
    let name = "blk.0.ffn_down.weight";
    let block = 200 * (8192 / 32) + 5; // row 200, block 5 of the row
    g.tensor_mut(name).data[block * 18..][..2].copy_from_slice(&0x7C00u16.to_le_bytes());
    load_errors(&gpu, "big.gguf", &g.bytes(), &["big.gguf", name, &format!("block {block} has a non-finite scale `d` (+Inf)")]);
}

/// A byte source that claims more bytes than it has (a stream that ends early).
struct EndsEarly(MemorySource<Vec<u8>>, u64);

impl ByteSource for EndsEarly {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn size(&self) -> u64 {
        self.1
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> plt::Result<()> {
        self.0.read_at(offset, buf)
    }
}

/// Unknown type ids, data past the end of the file, a file cut inside a tensor, rows that are
/// not whole blocks (32 and 256 values), and a source that ends while a tensor streams: each an
/// error naming the file and the tensor.
#[test]
fn bad_tensor_data_errors_name_the_file_and_the_tensor() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let base = all_of(GgmlType::Q4_K, K_DIMS);
    // Through a file on disk (the path is named) and bytes in memory (the source's name).
    let check = |what: &str, g: &Gguf, bytes: Option<Vec<u8>>, parts: &[&str]| {
        let bytes = bytes.unwrap_or_else(|| g.bytes());
        let path = dir.join(format!("bad-{}.gguf", what.replace(' ', "-")));
        std::fs::write(&path, &bytes).unwrap();
        let msg = error_of(plt::load::open(&ModelSource::Path(path.clone())).and_then(|m| m.read_weights()));
        assert_mentions(&msg, &[&path.display().to_string()]);
        assert_mentions(&msg, parts);
        let msg = error_of(plt::load::open_gguf(Box::new(MemorySource::new("in-memory.gguf", bytes))).and_then(|m| m.read_weights()));
        assert_mentions(&msg, &["in-memory.gguf"]);
        assert_mentions(&msg, parts);
    };
    let mut g = base.clone();
    g.tensor_mut("blk.0.attn_v.weight").ty = 1000;
    check("unknown type", &g, None, &["blk.0.attn_v.weight", "unknown ggml type 1000"]);
    let mut g = base.clone();
    g.tensor_mut("blk.0.ffn_up.weight").dims = vec![384, 256];
    check("row of 384", &g, None, &["blk.0.ffn_up.weight", "rows of 384 values", "block size 256"]);
    let mut g = all_of(GgmlType::Q5_1, K_DIMS);
    g.tensor_mut("blk.0.ffn_up.weight").dims = vec![48, 100];
    check("row of 48", &g, None, &["blk.0.ffn_up.weight", "rows of 48 values", "block size 32"]);
    let mut g = base.clone();
    g.tensor_mut("blk.1.attn_output.weight").offset = Some(1 << 40);
    check("offset past the end", &g, None, &["blk.1.attn_output.weight", "past the end"]);
    // Cut in the middle of a tensor that has others after it.
    let name = "blk.0.ffn_gate.weight";
    let cut = data_offset(&base, name) + base.tensors.iter().find(|t| t.name == name).unwrap().data.len() / 2;
    check("cut inside a tensor", &base, Some(base.bytes()[..cut].to_vec()), &[name, "past the end"]);
    // A source whose bytes end inside that tensor after the header was read.
    let bytes = base.bytes();
    assert!(cut > 64 << 10, "the cut must lie past the header's read-ahead");
    let src = EndsEarly(MemorySource::new("stream.gguf", bytes[..cut].to_vec()), bytes.len() as u64);
    let msg = error_of(plt::load::open_gguf(Box::new(src)).and_then(|m| m.read_weights()));
    assert_mentions(&msg, &["stream.gguf", &format!("tensor `{name}`"), "past the end"]);
}
