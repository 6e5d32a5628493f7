//! The CPU backend (src/cpu/) against the f64 reference: every mode (prefill, fused and
//! sequential decode, vanilla, L = 1), both gates, biases, tied and untied heads, windows
//! shorter than the sequence, F32/F16/BF16 storage, f16 caches, and GGUF files of every kept
//! block format (int8 activations: a looser tolerance; f32 activations: the float formats' one);
//! fused, sequential and prefill give the same bits, and so do 1 and 3 threads. Bad input is an
//! error, never a panic.

mod common;
#[path = "support/gguf_writer.rs"]
mod gguf_writer;

use common::{nmse, small_config, tokens};
use gguf_writer::*;
use plt::cpu::{CpuModel, CpuOptions, CpuSession, CpuSessionOptions, Simd};
use plt::generate::StepSession;
use plt::init::{random_weights, InitOptions};
use plt::load::MemorySource;
use plt::model::Schedule;
use plt::{reference, Config, DType, Looping, Weights};
use std::sync::Arc;

/// f32 accumulation against the reference's f64.
const TOL: f64 = 1e-9;
/// Int8 activations in the block formats' dot products: about 0.5% relative error per matmul,
/// which these tiny random models (near-cancelling logits) amplify to nmse ~2e-3 at worst
/// (measured: 1.9e-3); a wrong decoder gives nmse ~1.
const QTOL: f64 = 5e-3;

fn model(cfg: &Config, w: &Weights, dtype: DType, threads: usize) -> Arc<CpuModel> {
    Arc::new(CpuModel::from_weights(cfg, w, Some(dtype), &CpuOptions { threads: Some(threads), ..Default::default() }).unwrap())
}

fn session(m: &Arc<CpuModel>, kv_f16: bool) -> CpuSession {
    CpuSession::new(m.clone(), CpuSessionOptions { context: 40, kv_f16 }).unwrap()
}

/// Logits of `toks`: a prefill of the first `p` (every position), then one decode per token.
fn run(m: &Arc<CpuModel>, toks: &[u32], p: usize, schedule: Schedule, kv_f16: bool) -> Vec<Vec<f32>> {
    let v = m.cfg.vocab_size;
    let mut s = session(m, kv_f16);
    let mut out: Vec<Vec<f32>> = s.prefill_logits(&toks[..p], true).unwrap().chunks(v).map(|c| c.to_vec()).collect();
    for &t in &toks[p..] {
        out.push(s.decode_logits(t, schedule).unwrap());
    }
    out
}

fn configs() -> Vec<(&'static str, Config)> {
    let mut vanilla = small_config(2, 2, false, false);
    vanilla.looping = Looping::Vanilla;
    let mut no_norm = small_config(2, 3, false, true);
    no_norm.normalize_per_loop = false;
    no_norm.emb_scale = 0.5;
    no_norm.hidden_scale = 1.5;
    vec![
        ("PLT-3 hidden gate, untied", small_config(2, 3, true, false)),
        ("PLT-2 query gate, tied", small_config(2, 2, false, true)),
        ("PLT-3 no per-loop norm, scaled inputs", no_norm),
        ("vanilla-2", vanilla),
        ("L = 1", small_config(3, 1, false, false)),
    ]
}

#[test]
fn every_mode_matches_the_reference() {
    for (name, cfg) in configs() {
        // 14 positions: past the window (left 3) in prefill and in decode.
        let toks = tokens(14, cfg.vocab_size, 5);
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let w = random_weights(&cfg, &InitOptions { seed: 9, qkv_bias: true, dtype, ..Default::default() });
            let want = reference::forward(&cfg, &w, &toks);
            let m = model(&cfg, &w, dtype, 2);
            let fused = run(&m, &toks, 6, Schedule::Fused, false);
            for (t, (g, w)) in fused.iter().zip(&want).enumerate() {
                let e = nmse(g, w);
                assert!(e < TOL, "{name} {dtype:?}: position {t}: nmse {e:e}");
            }
            // Sequential decode, a one-token-at-a-time prefill and another thread count give
            // the same bits.
            let seq = run(&m, &toks, 6, Schedule::Sequential, false);
            assert_eq!(bits(&seq), bits(&fused), "{name} {dtype:?}: sequential differs from fused");
            let one = run(&m, &toks, 1, Schedule::Fused, false);
            assert_eq!(bits(&one), bits(&fused), "{name} {dtype:?}: decode differs from prefill");
            let m3 = model(&cfg, &w, dtype, 3);
            assert_eq!(bits(&run(&m3, &toks, 6, Schedule::Fused, false)), bits(&fused), "{name} {dtype:?}: 3 threads differ from 2");
            // f16 caches: close.
            let half = run(&m, &toks, 6, Schedule::Fused, true);
            for (t, (g, w)) in half.iter().zip(&want).enumerate() {
                let e = nmse(g, w);
                assert!(e < 1e-5, "{name} {dtype:?} f16 KV: position {t}: nmse {e:e}");
            }
        }
    }
}

fn bits(x: &[Vec<f32>]) -> Vec<Vec<u32>> {
    x.iter().map(|r| r.iter().map(|v| v.to_bits()).collect()).collect()
}

/// The portable kernels give the reference's numbers too (the AVX2 ones ran above where the
/// CPU has them).
#[test]
fn portable_kernels_match_the_reference() {
    let cfg = small_config(2, 3, true, false);
    let toks = tokens(10, cfg.vocab_size, 6);
    let w = random_weights(&cfg, &InitOptions { seed: 19, qkv_bias: true, dtype: DType::F16, ..Default::default() });
    let want = reference::forward(&cfg, &w, &toks);
    let m = Arc::new(CpuModel::from_weights(&cfg, &w, Some(DType::F16), &CpuOptions { threads: Some(2), simd: Some(Simd::Portable), ..Default::default() }).unwrap());
    for (t, (g, w)) in run(&m, &toks, 4, Schedule::Fused, false).iter().zip(&want).enumerate() {
        let e = nmse(g, w);
        assert!(e < TOL, "portable: position {t}: nmse {e:e}");
    }
}

/// The synthetic GGUF files of every kept block format (mixed in fused matrices, a quantised
/// tied embedding), with the variant each was written from.
fn quantised_ggufs() -> Vec<(Variant, Gguf)> {
    let mut vars = vec![(all_quantised(), TINY), (k_quantised(), K_DIMS)];
    vars.extend(variants().into_iter().map(|v| (v, TINY)));
    vars.into_iter()
        .enumerate()
        .map(|(vi, (var, dims))| {
            let (g, _) = synthetic_dims(&var, dims, 40 + vi as u64);
            (var, g)
        })
        .collect()
}

/// A CPU model (2 threads) of GGUF file bytes.
fn load_gguf(bytes: Vec<u8>, dtype: Option<DType>, f32_activations: bool) -> Arc<CpuModel> {
    let open = plt::load::open_gguf(Box::new(MemorySource::new("synthetic.gguf", bytes))).unwrap();
    Arc::new(CpuModel::load(open, dtype, &CpuOptions { threads: Some(2), f32_activations, ..Default::default() }, &mut |_| {}).unwrap())
}

/// Every position's logits within `tol` (nmse) of the reference's.
fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>], tol: f64, what: &str) {
    for (t, (g, w)) in got.iter().zip(want).enumerate() {
        let e = nmse(g, w);
        assert!(e < tol, "{what}: position {t}: nmse {e:e}");
    }
}

/// GGUF files with every kept block format against the reference on their dequantised weights
/// (int8 activations: `QTOL`), and as f32.
#[test]
fn quantised_gguf_models_match_the_reference() {
    for (vi, (var, g)) in quantised_ggufs().iter().enumerate() {
        let host = plt::gguf::load_gguf_bytes(&g.bytes()).unwrap();
        let m = load_gguf(g.bytes(), None, false);
        // Every block format stays as stored.
        let formats = m.formats();
        for t in var.types.iter().flatten() {
            assert!(formats.contains_key(&t.name()), "variant {vi}: {} was not kept ({formats:?})", t.name());
        }
        let toks = tokens(12, host.cfg.vocab_size, 8);
        let want = reference::forward(&host.cfg, &host.weights, &toks);
        let fused = run(&m, &toks, 5, Schedule::Fused, false);
        assert_close(&fused, &want, QTOL, &format!("variant {vi}"));
        assert_eq!(bits(&run(&m, &toks, 5, Schedule::Sequential, false)), bits(&fused), "variant {vi}: sequential differs from fused");
        // A prefill of 5 rows takes two weight rows per kernel call, decode one: the same bits.
        assert_eq!(bits(&run(&m, &toks, 1, Schedule::Fused, false)), bits(&fused), "variant {vi}: decode differs from prefill");
        // Dequantised to f32 at load, the same files give the reference's numbers.
        let f = load_gguf(g.bytes(), Some(DType::F32), false);
        assert_close(&run(&f, &toks, 5, Schedule::Fused, false), &want, TOL, &format!("variant {vi} as f32"));
    }
}

/// The same files with f32 activations (the blocks kept as stored): the reference's numbers,
/// and the same bits fused and sequential.
#[test]
fn f32_activations_match_the_reference_exactly() {
    for (vi, (var, g)) in quantised_ggufs().iter().enumerate() {
        let host = plt::gguf::load_gguf_bytes(&g.bytes()).unwrap();
        let m = load_gguf(g.bytes(), None, true);
        let formats = m.formats();
        for t in var.types.iter().flatten() {
            assert!(formats.contains_key(&t.name()), "variant {vi}: {} was not kept ({formats:?})", t.name());
        }
        assert!(m.describe().contains("f32 activations"), "{}", m.describe());
        let toks = tokens(12, host.cfg.vocab_size, 8);
        let want = reference::forward(&host.cfg, &host.weights, &toks);
        let fused = run(&m, &toks, 5, Schedule::Fused, false);
        assert_close(&fused, &want, TOL, &format!("variant {vi}, f32 activations"));
        assert_eq!(bits(&run(&m, &toks, 5, Schedule::Sequential, false)), bits(&fused), "variant {vi}, f32 activations: sequential differs from fused");
    }
}

#[test]
fn bad_input_is_an_error() {
    let cfg = small_config(1, 2, false, true);
    let w = random_weights(&cfg, &InitOptions { seed: 1, ..Default::default() });
    let m = model(&cfg, &w, DType::F32, 2);
    let mut s = session(&m, false);
    let e = s.prefill_logits(&[cfg.vocab_size as u32], false).unwrap_err().to_string();
    assert!(e.contains("out of range"), "{e}");
    assert!(s.prefill_logits(&[], false).is_err());
    let long = tokens(41, cfg.vocab_size, 2);
    let e = s.prefill_logits(&long, false).unwrap_err().to_string();
    assert!(e.contains("context of 40"), "{e}");
    // Nothing was fed by the failed calls.
    assert_eq!(s.position(), 0);
    assert!(CpuSession::new(m.clone(), CpuSessionOptions { context: 0, kv_f16: false }).is_err());
    assert!(CpuSession::new(m, CpuSessionOptions { context: cfg.max_position_embeddings + 1, kv_f16: false }).is_err());
}

/// Finite weights whose activations leave f32's range (embeddings of 1e18, a final norm weight
/// of 3e38) give an `Error::NonFinite` naming the position and the token id, as on the GPU.
#[test]
fn non_finite_logits_are_non_finite_errors() {
    let cfg = small_config(2, 2, false, true);
    let mut w = random_weights(&cfg, &InitOptions { seed: 3, ..Default::default() });
    w.embed_tokens.data.iter_mut().for_each(|x| *x = x.signum() * 1e18);
    w.norm.data.iter_mut().for_each(|x| *x = 3e38);
    let m = model(&cfg, &w, DType::F32, 2);
    let mut s = session(&m, false);
    let e = s.prefill_logits(&[1, 2, 3], true).unwrap_err();
    assert!(matches!(e, plt::Error::NonFinite(_)), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("the logits at position 0 are not finite (token id"), "{msg}");
    assert!(msg.contains("reset"), "{msg}");
}
