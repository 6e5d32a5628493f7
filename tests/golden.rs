//! Cross-implementation check of the shipped model (models/plt2-shakespeare, trained by train/)
//! against the trainer's golden outputs (golden.json: per-token log-probabilities of fixed texts
//! and greedy continuations, from the trainer's own float64 forward pass on the stored F16
//! weights). The runtime must reproduce them on the GPU (chunked prefill, and fused CLP decode
//! after a short prefill), in the CPU reference, and in the tokenizer (BOS included).
//! `PLT_GOLDEN_MODEL=DIR` checks another exported directory instead.

mod common;
use common::*;
use plt::model::{Schedule, GpuModel, Logits, Session, SessionOptions};
use plt::sampling::argmax;
use plt::tokenizer::Tokenizer;
use plt::{reference, Config, Weights};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

/// |log p| difference allowed: F16 weights are shared by both sides, so what differs is f32 GPU
/// arithmetic against float64 (about 1e-5 here; 2e-3 leaves room for other adapters).
const TOL: f64 = 2e-3;

fn model_dir() -> PathBuf {
    match std::env::var_os("PLT_GOLDEN_MODEL") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/plt2-shakespeare"),
    }
}

struct Text {
    text: String,
    tokens: Vec<u32>,
    logprobs: Vec<f64>,
}

struct Greedy {
    prompt: Vec<u32>,
    continuation: Vec<u32>,
}

struct Golden {
    cfg: Config,
    w: Weights,
    texts: Vec<Text>,
    greedy: Vec<Greedy>,
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("token list").iter().map(|x| x.as_u64().expect("token id") as u32).collect()
}

fn load() -> Golden {
    let dir = model_dir();
    let cfg = Config::from_file(&dir.join("config.json")).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let w = Weights::load_dir(&dir, &cfg).unwrap();
    let text = std::fs::read_to_string(dir.join("golden.json")).expect("golden.json");
    let g: Value = serde_json::from_str(&text).unwrap();
    let texts: Vec<Text> = g["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Text {
            text: t["text"].as_str().unwrap().to_string(),
            tokens: ids(&t["tokens"]),
            logprobs: t["logprobs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect(),
        })
        .collect();
    let greedy: Vec<Greedy> = g["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Greedy { prompt: ids(&t["prompt_tokens"]), continuation: ids(&t["continuation"]) })
        .collect();
    assert!(!texts.is_empty() && !greedy.is_empty(), "golden.json has no texts or no greedy runs");
    for t in &texts {
        assert_eq!(t.logprobs.len() + 1, t.tokens.len(), "golden.json: {:?}", t.text);
    }
    Golden { cfg, w, texts, greedy }
}

fn model(g: &Golden) -> Arc<GpuModel> {
    // Device storage as stored (F16).
    Arc::new(GpuModel::new(gpu(), &g.cfg, &g.w, None).unwrap())
}


/// Largest |logprob - golden| over positions; `logits[t]` predicts `tokens[t+1]`.
fn worst(name: &str, logits: &[Vec<f32>], t: &Text) -> f64 {
    assert_eq!(logits.len(), t.logprobs.len(), "{name}: {:?}", t.text);
    let mut worst = 0.0f64;
    for (i, l) in logits.iter().enumerate() {
        let lp = reference::logprob(l, t.tokens[i + 1]);
        let d = (lp - t.logprobs[i]).abs();
        assert!(d.is_finite() && d < TOL, "{name}: {:?} position {i}: logprob {lp} vs golden {} (|diff| {d:e})", t.text, t.logprobs[i]);
        worst = worst.max(d);
    }
    worst
}

/// The tokenizer.json the runtime loads encodes the golden texts as the trainer's tokenizer did.
#[test]
fn golden_tokenizer_matches() {
    let g = load();
    let tok = Tokenizer::from_dir(&model_dir(), &g.cfg).unwrap().expect("tokenizer.json");
    for t in &g.texts {
        // A prompt's encoding: BOS (tokenizer_config.json add_bos_token) then the text.
        assert_eq!(tok.encode(&t.text, true).unwrap(), t.tokens, "{:?}", t.text);
    }
}

/// Chunked GPU prefill (chunks of 7, so chunks, the local window and the carried states all
/// cross boundaries) gives the golden log-probabilities at every position.
#[test]
fn golden_prefill_matches() {
    let g = load();
    let m = model(&g);
    let v = g.cfg.vocab_size;
    let mut w = 0.0f64;
    for t in &g.texts {
        let n = t.tokens.len();
        let mut s = Session::new(m.clone(), SessionOptions { batch: 1, context: n, prefill_chunk: 7, kv_f16: false }).unwrap();
        let all = s.prefill_blocking(0, &t.tokens[..n - 1], Logits::All).unwrap();
        let logits: Vec<Vec<f32>> = all.chunks(v).map(|c| c.to_vec()).collect();
        w = w.max(worst("gpu prefill", &logits, t));
    }
    eprintln!("gpu prefill: max |dlogprob| {w:e}");
}

/// A 3-token prefill, then fused cross-loop-parallel decode one token at a time (the first and
/// the last text; the last is longer than the local window, so the ring buffer wraps).
#[test]
fn golden_fused_decode_matches() {
    let g = load();
    let m = model(&g);
    let v = g.cfg.vocab_size;
    let mut w = 0.0f64;
    let last = g.texts.len() - 1;
    for t in [&g.texts[0], &g.texts[last]] {
        let n = t.tokens.len();
        let p = 3.min(n - 1);
        let mut s = Session::new(m.clone(), SessionOptions { batch: 1, context: n, prefill_chunk: 16, kv_f16: false }).unwrap();
        let all = s.prefill_blocking(0, &t.tokens[..p], Logits::All).unwrap();
        let mut logits: Vec<Vec<f32>> = all.chunks(v).map(|c| c.to_vec()).collect();
        for &tok in &t.tokens[p..n - 1] {
            logits.push(s.decode_blocking(&[tok], Schedule::Fused, true).unwrap());
        }
        w = w.max(worst("gpu fused decode", &logits, t));
    }
    eprintln!("gpu fused decode: max |dlogprob| {w:e}");
}

/// Greedy generation on the GPU (prefill the prompt, then fused decode) reproduces the trainer's
/// greedy continuations token for token.
#[test]
fn golden_greedy_generation_matches() {
    let g = load();
    let m = model(&g);
    for gr in &g.greedy {
        let n = gr.prompt.len() + gr.continuation.len();
        let mut s = Session::new(m.clone(), SessionOptions { batch: 1, context: n, prefill_chunk: 16, kv_f16: false }).unwrap();
        let mut logits = s.prefill_blocking(0, &gr.prompt, Logits::Last).unwrap();
        let mut got = Vec::new();
        for i in 0..gr.continuation.len() {
            let next = argmax(&logits);
            got.push(next);
            if i + 1 < gr.continuation.len() {
                logits = s.decode_blocking(&[next], Schedule::Fused, true).unwrap();
            }
        }
        assert_eq!(got, gr.continuation, "greedy continuation of prompt {:?}", gr.prompt);
    }
}

/// The CPU reference agrees with the trainer too (the same model, a third implementation).
#[test]
fn golden_cpu_reference_matches() {
    let g = load();
    let mut w = 0.0f64;
    for t in &g.texts {
        let logits = reference::forward(&g.cfg, &g.w, &t.tokens[..t.tokens.len() - 1]);
        w = w.max(worst("cpu reference", &logits, t));
    }
    eprintln!("cpu reference: max |dlogprob| {w:e}");
}

/// The CPU backend (`plt::cpu`, weights as stored: F16): chunked prefill, fused decode and the
/// greedy continuations, against the same golden numbers.
#[test]
fn golden_cpu_backend_matches() {
    use plt::cpu::{CpuModel, CpuOptions, CpuSession, CpuSessionOptions};
    let g = load();
    let m = Arc::new(CpuModel::from_weights(&g.cfg, &g.w, None, &CpuOptions::default()).unwrap());
    let v = g.cfg.vocab_size;
    let (mut wp, mut wd) = (0.0f64, 0.0f64);
    for t in &g.texts {
        let n = t.tokens.len();
        let mut s = CpuSession::new(m.clone(), CpuSessionOptions { context: n, kv_f16: false }).unwrap();
        let logits: Vec<Vec<f32>> = s.prefill_logits(&t.tokens[..n - 1], true).unwrap().chunks(v).map(|c| c.to_vec()).collect();
        wp = wp.max(worst("cpu backend prefill", &logits, t));
        let mut s = CpuSession::new(m.clone(), CpuSessionOptions { context: n, kv_f16: false }).unwrap();
        let p = 3.min(n - 1);
        let mut logits: Vec<Vec<f32>> = s.prefill_logits(&t.tokens[..p], true).unwrap().chunks(v).map(|c| c.to_vec()).collect();
        for &tok in &t.tokens[p..n - 1] {
            logits.push(s.decode_logits(tok, Schedule::Fused).unwrap());
        }
        wd = wd.max(worst("cpu backend fused decode", &logits, t));
    }
    for gr in &g.greedy {
        let n = gr.prompt.len() + gr.continuation.len();
        let mut s = CpuSession::new(m.clone(), CpuSessionOptions { context: n, kv_f16: false }).unwrap();
        let mut logits = s.prefill_logits(&gr.prompt, false).unwrap();
        let mut got = Vec::new();
        for i in 0..gr.continuation.len() {
            let next = argmax(&logits);
            got.push(next);
            if i + 1 < gr.continuation.len() {
                logits = s.decode_logits(next, Schedule::Fused).unwrap();
            }
        }
        assert_eq!(got, gr.continuation, "CPU backend: greedy continuation of prompt {:?}", gr.prompt);
    }
    eprintln!("cpu backend: max |dlogprob| prefill {wp:e}, fused decode {wd:e}");
}
