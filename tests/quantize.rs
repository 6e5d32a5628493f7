//! `plt quantize`: a random PLT directory (L = 2, gates, a byte-level BPE tokenizer and a chat
//! template) quantised to every type loads back with its config, tokenizer and template, and
//! scores within each type's error of the source; llama.cpp's tensor names, q/k permutation and
//! keys; fallbacks; bad input is a clear error; SmolLM2 requantised still answers "Paris".

mod common;
use plt::gguf::{load_gguf, GgmlType, GgufFile};
use plt::quantize::{quantize, FileType, QuantizeOptions, Search};
use std::path::{Path, PathBuf};
use std::process::Command;

fn plt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plt")).args(args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn tmp(name: &str) -> PathBuf {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let d = std::env::temp_dir().join(format!("plt-quantize-{}-{seed}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn opts(ft: FileType) -> QuantizeOptions {
    QuantizeOptions { file_type: ft, threads: 2, allow_requantize: false, no_tokenizer: false, search: Search::Best }
}

const TEMPLATE: &str = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

/// A random PLT directory (`plt init`) with the shipped model's byte-level BPE tokenizer (V =
/// 4096) and a chat template; `extra` are more `plt init` flags.
fn plt_dir(dir: &Path, extra: &[&str]) {
    let seed = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() % 1000).to_string();
    let defaults = [
        ("--vocab", "4096"), ("--hidden", "256"), ("--intermediate", "512"), ("--layers", "2"), ("--heads", "4"),
        ("--kv-heads", "2"), ("--max-positions", "64"), ("--loops", "2"), ("--window", "3"), ("--seed", seed.as_str()),
    ];
    let mut args = vec!["init", dir.to_str().unwrap()];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
    let (ok, _, err) = plt(&args);
    assert!(ok, "plt init: {err}");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/plt2-shakespeare");
    std::fs::copy(shipped.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let tc = serde_json::json!({"add_bos_token": true, "bos_token": "<|endoftext|>", "chat_template": TEMPLATE});
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
}

const TOKENS: &str = "5,900,13,4000,40,3,4,8,1234,11,2,77,3001,9";

fn logprobs(model: &Path, extra: &[&str]) -> (Vec<f64>, serde_json::Value) {
    // f32 activations: the error measured is the weights' alone.
    let mut args = vec!["score", "--model", model.to_str().unwrap(), "--backend", "cpu", "--threads", "2", "--f32-activations"];
    args.extend_from_slice(extra);
    let (ok, out, err) = plt(&args);
    assert!(ok, "plt {args:?}: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    (v["logprobs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect(), v)
}

/// RMS(a - b) / RMS(b - mean(b)): the score error relative to the spread of the source's scores.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    let mean = b.iter().sum::<f64>() / b.len() as f64;
    let e: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let s: f64 = b.iter().map(|y| (y - mean).powi(2)).sum();
    (e / s).sqrt()
}

#[test]
fn random_plt_models_round_trip_through_every_type() {
    let root = tmp("plt");
    for (variant, extra) in [("query", &[][..]), ("hidden", &["--gate", "hidden", "--qkv-bias", "--dtype", "bf16"][..])] {
        let dir = root.join(variant);
        plt_dir(&dir, extra);
        let src_cfg = plt::Config::from_file(&dir.join("config.json")).unwrap();
        let (want, src_json) = logprobs(&dir, &["--tokens", TOKENS]);
        let (_, src_text) = logprobs(&dir, &["--text", "The quick brown fox, 42 times!"]);
        // Bounds on the score error relative to the scores' spread: about 2.5 times the most
        // each type measured on these models over several seeds.
        for (ty, bound) in [
            ("f32", 1e-5),
            ("f16", 5e-3),
            ("bf16", 0.02),
            ("q8_0", 0.05),
            ("q6_k", 0.12),
            ("q5_k_m", 0.25),
            ("q5_0", 0.3),
            ("q4_1", 0.5),
            ("q4_k_m", 0.5),
            ("q4_k_s", 0.5),
            ("q4_0", 0.5),
        ] {
            let out = root.join(format!("{variant}-{ty}.gguf"));
            let (ok, _, err) = plt(&["quantize", dir.to_str().unwrap(), out.to_str().unwrap(), "--type", ty, "--threads", "2"]);
            assert!(ok, "{variant} {ty}: {err}");
            let m = load_gguf(&out).unwrap();
            assert_eq!(m.cfg.to_json(), src_cfg.to_json(), "{variant} {ty}");
            let tk = m.tokenizer.as_ref().expect("the GGUF has a tokenizer");
            assert_eq!(tk.chat_template.as_deref(), Some(TEMPLATE));
            assert!(tk.add_bos);
            let (got, json) = logprobs(&out, &["--tokens", TOKENS]);
            let e = rel(&got, &want);
            eprintln!("{variant} {ty}: score error {e:.5} of the spread");
            assert!(e < bound, "{variant} {ty}: score error {e} of the spread (bound {bound}): {got:?} vs {want:?}");
            assert_eq!(json["tokens"], src_json["tokens"]);
            // The tokenizer encodes as the directory's does.
            let (_, text) = logprobs(&out, &["--text", "The quick brown fox, 42 times!"]);
            assert_eq!(text["tokens"], src_text["tokens"], "{variant} {ty}");
        }
        // The K-quant recipe: rows of 256 (D) take Q4_K, but ffn_down and attn_v Q6_K where
        // use_more_bits, and the untied output Q6_K; vectors and the PLT gate F32.
        let f = GgufFile::read(&mut plt::load::FileSource::open(&root.join(format!("{variant}-q4_k_m.gguf"))).unwrap()).unwrap();
        let ty = |n: &str| f.tensor(n).unwrap_or_else(|| panic!("no {n}")).ty;
        assert_eq!(ty("blk.0.attn_q.weight"), GgmlType::Q4_K);
        assert_eq!(ty("blk.1.ffn_up.weight"), GgmlType::Q4_K);
        // Of 2 layers, use_more_bits picks layer 1 only.
        assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::Q4_K);
        assert_eq!(ty("blk.1.ffn_down.weight"), GgmlType::Q6_K);
        assert_eq!(ty("blk.0.attn_v.weight"), GgmlType::Q4_K);
        assert_eq!(ty("blk.1.attn_v.weight"), GgmlType::Q6_K);
        assert_eq!(ty("output.weight"), GgmlType::Q6_K);
        assert_eq!(ty("token_embd.weight"), GgmlType::Q4_K);
        assert_eq!(ty("blk.1.plt_gate.weight"), GgmlType::F32);
        assert_eq!(ty("blk.1.plt_gate.bias"), GgmlType::F32);
        assert_eq!(ty("blk.0.attn_norm.weight"), GgmlType::F32);
        assert_eq!(f.get("general.file_type").and_then(|v| v.as_u64()), Some(15));
        assert_eq!(f.get("general.architecture").and_then(|v| v.as_str()), Some("llama"));
        assert_eq!(f.get("plt.num_loops").and_then(|v| v.as_u64()), Some(2));
        assert_eq!(f.get("tokenizer.ggml.pre").and_then(|v| v.as_str()), Some("gpt-2"));
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// q/k rows are stored permuted as llama.cpp's converter stores them: an F32 file holds the
/// directory's values exactly, q/k rows moved within each head (row 2j + i = original
/// i * Dh/2 + j), and loads back to the same weights.
#[test]
fn llama_layout_and_exact_f32_round_trip() {
    let root = tmp("layout");
    let dir = root.join("m");
    plt_dir(&dir, &["--loops", "1", "--qkv-bias"]);
    let out = root.join("m.gguf");
    let r = quantize(&dir, &out, &opts(FileType::F32), &mut |_| {}).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let (_, w, _) = plt::load::read_host(&plt::load::ModelSource::Path(dir.clone())).unwrap();
    let m = load_gguf(&out).unwrap();
    assert_eq!(m.weights.layers[1].self_attn.q_proj.weight.data, w.layers[1].self_attn.q_proj.weight.data);
    assert_eq!(m.weights.layers[0].self_attn.k_proj.bias.as_ref().unwrap().data, w.layers[0].self_attn.k_proj.bias.as_ref().unwrap().data);
    let bytes = std::fs::read(&out).unwrap();
    let f = GgufFile::parse(&bytes).unwrap();
    let t = f.tensor("blk.1.attn_q.weight").unwrap();
    let at = (f.data_offset() + t.offset) as usize;
    let stored: Vec<f32> = bytes[at..at + t.n_bytes as usize].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let (d, dh) = (256, 64);
    let orig = &w.layers[1].self_attn.q_proj.weight.data;
    for head in 0..4 {
        for j in 0..dh / 2 {
            for i in 0..2 {
                let (g, o) = (head * dh + 2 * j + i, head * dh + i * dh / 2 + j);
                assert_eq!(&stored[g * d..(g + 1) * d], &orig[o * d..(o + 1) * d]);
            }
        }
    }
    for name in ["token_embd.weight", "blk.0.attn_k.weight", "blk.1.ffn_down.weight", "output_norm.weight", "output.weight"] {
        assert!(f.tensor(name).is_some(), "{name}");
    }
    assert!(f.tensor("blk.0.plt_gate.weight").is_none());
    for key in ["llama.block_count", "llama.attention.head_count_kv", "llama.rope.freq_base", "tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.chat_template"] {
        assert!(f.get(key).is_some(), "{key}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn rows_that_are_not_whole_blocks_fall_back_and_say_so() {
    let root = tmp("fallback");
    let dir = root.join("m");
    plt_dir(&dir, &["--hidden", "96", "--heads", "2", "--kv-heads", "1", "--intermediate", "160"]);
    let out = root.join("m.gguf");
    let r = quantize(&dir, &out, &opts(FileType::Q4_K_M), &mut |_| {}).unwrap();
    let w = r.warnings.join("\n");
    assert!(w.contains("rows of 96 values (not whole Q4_K blocks of 256) stored as Q5_0"), "{w}");
    assert!(w.contains("rows of 160 values (not whole Q6_K blocks of 256) stored as Q8_0"), "{w}");
    let r = quantize(&dir, &out, &opts(FileType::Q4_0), &mut |_| {}).unwrap();
    assert!(r.tensors.iter().all(|t| t.ty != GgmlType::F16), "96 and 160 are whole 32-blocks");
    load_gguf(&out).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_input_is_a_clear_error() {
    let root = tmp("bad");
    let dir = root.join("m");
    plt_dir(&dir, &["--hidden", "64", "--intermediate", "96"]);
    let d = dir.to_str().unwrap();
    let out = root.join("o.gguf");
    let o = out.to_str().unwrap();
    for (args, want) in [
        (vec!["quantize", d, o, "--type", "q3_k"], "--type: expected one of f32, f16"),
        (vec!["quantize", d, root.join("o.bin").to_str().unwrap(), "--type", "q8_0"], "must end in .gguf"),
        (vec!["quantize", "/nonexistent/model", o, "--type", "q8_0"], "not a model directory"),
        (vec!["quantize", d, o, "--type", "q8_0", "--threads", "0"], "--threads"),
    ] {
        let (ok, _, err) = plt(&args);
        assert!(!ok && err.contains(want) && !err.contains("panicked"), "{args:?}: {err}");
    }
    // Output = input; requantising without --allow-requantize.
    assert!(quantize(&dir, &out, &opts(FileType::Q8_0), &mut |_| {}).is_ok());
    let (ok, _, err) = plt(&["quantize", o, o, "--type", "q4_0"]);
    assert!(!ok && err.contains("the output is the input"), "{err}");
    let again = root.join("again.gguf");
    let (ok, _, err) = plt(&["quantize", o, again.to_str().unwrap(), "--type", "q4_0"]);
    assert!(!ok && err.contains("--allow-requantize") && err.contains("Q8_0"), "{err}");
    let (ok, _, err) = plt(&["quantize", o, again.to_str().unwrap(), "--type", "q4_0", "--allow-requantize"]);
    assert!(ok && err.contains("warning") && err.contains("bounds the result's quality"), "{err}");
    // A tokenizer GGUF cannot hold (plt init's WordLevel one), unless --no-tokenizer.
    let plain = root.join("plain");
    let (ok, _, err) = plt(&["init", plain.to_str().unwrap(), "--vocab", "64", "--hidden", "32", "--intermediate", "64"]);
    assert!(ok, "{err}");
    let e = quantize(&plain, &out, &opts(FileType::Q8_0), &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("WordLevel") && e.contains("--no-tokenizer"), "{e}");
    let r = quantize(&plain, &out, &QuantizeOptions { no_tokenizer: true, ..opts(FileType::Q8_0) }, &mut |_| {}).unwrap();
    assert!(r.warnings.iter().any(|w| w.contains("no tokenizer")));
    assert!(load_gguf(&out).unwrap().tokenizer.is_none());
    // A NaN weight: an error naming the tensor, and no output file.
    let cfg = plt::Config::from_file(&plain.join("config.json")).unwrap();
    let mut w = common::weights(&cfg, 3, plt::DType::F32, false);
    w.layers[1].mlp.up_proj.weight.data[37] = f32::NAN;
    let nan = root.join("nan");
    plt::init::write_model(&nan, &cfg, &w, &plt::init::InitOptions::default()).unwrap();
    let bad_out = root.join("nan.gguf");
    let e = quantize(&nan, &bad_out, &QuantizeOptions { no_tokenizer: true, ..opts(FileType::Q4_0) }, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("model.layers.1.mlp.up_proj.weight") && e.contains("NaN"), "{e}");
    assert!(!bad_out.exists() && !root.join("nan.gguf.part").exists());
    // RoPE scaling the writer does not carry (Llama 3's) is refused, not dropped.
    let scaled = root.join("scaled");
    plt_dir(&scaled, &["--hidden", "64", "--intermediate", "96"]);
    let cfg_path = scaled.join("config.json");
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    c["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
    std::fs::write(&cfg_path, c.to_string()).unwrap();
    let scaled_out = root.join("scaled.gguf");
    let e = quantize(&scaled, &scaled_out, &opts(FileType::Q8_0), &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("RoPE scaling `llama3 x8`"), "{e}");
    assert!(!scaled_out.exists());
    std::fs::remove_dir_all(&root).unwrap();
}

/// SmolLM2-135M-Instruct (Q4_1) requantised to every type (F16 and the block types) still answers
/// the capital of France greedily on the CPU backend.
#[test]
fn smollm2_requantised_still_knows_paris() {
    use plt::cpu::{CpuModel, CpuOptions, CpuSession, CpuSessionOptions};
    use plt::model::Schedule;
    const FRANCE: &str = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let src = common::smollm2_gguf();
    let root = tmp("smollm2");
    // Every type but the two 32/16-bit float copies of what F16 already shows.
    for ft in FileType::ALL.into_iter().filter(|&t| t != FileType::F32 && t != FileType::BF16) {
        let out = root.join(format!("{}.gguf", ft.name()));
        if ft == FileType::Q8_0 {
            let e = quantize(&src, &out, &opts(ft), &mut |_| {}).unwrap_err().to_string();
            assert!(e.contains("--allow-requantize"), "{e}");
        }
        let t0 = std::time::Instant::now();
        let r = quantize(&src, &out, &QuantizeOptions { allow_requantize: true, ..opts(ft) }, &mut |_| {}).unwrap();
        eprintln!("{}: {:.1} s, {} bytes, {:?}", ft.name(), t0.elapsed().as_secs_f64(), r.bytes, r.by_type());
        let model = plt::load::open_gguf(Box::new(plt::load::FileSource::open(&out).unwrap())).unwrap();
        let tk = model.tokenizer().unwrap().unwrap();
        let cpu = std::sync::Arc::new(CpuModel::load(model, None, &CpuOptions::default(), &mut |_| {}).unwrap());
        let ids = tk.encode(FRANCE, false).unwrap();
        let mut s = CpuSession::new(cpu, CpuSessionOptions { context: ids.len() + 8, kv_f16: false }).unwrap();
        let mut out_ids = vec![plt::sampling::argmax(&s.prefill_logits(&ids, false).unwrap())];
        while out_ids.len() < 7 {
            let l = s.decode_logits(*out_ids.last().unwrap(), Schedule::Fused).unwrap();
            out_ids.push(plt::sampling::argmax(&l));
        }
        let text = tk.decode(&out_ids, false).unwrap();
        assert!(text.contains("Paris"), "{}: {text:?}", ft.name());
        std::fs::remove_file(&out).unwrap();
    }
    std::fs::remove_dir_all(&root).unwrap();
}
