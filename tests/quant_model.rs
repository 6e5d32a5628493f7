//! Quantised matrices kept quantised on the device: small random llama models written as GGUF
//! files (tests/support/gguf_writer.rs) with Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 matrices, and a
//! model of hidden size 256 with Q4_K, Q5_K and Q6_K ones, loaded with no dtype
//! (`LoadPlan::layouts`: matrices in rows of whole blocks stay block records; a fused q/k/v or
//! gate/up whose tensors differ keeps each one's format, one part each), against the CPU reference on
//! the same dequantised weights: prefill (the tiled matmul, > 16 rows), decode (the row-sharing
//! one, batch 2) and the embedding / tied lm_head read from blocks; and again with every matrix
//! split into windows (what a matrix past the adapter's binding limit gets).

mod common;
#[path = "support/gguf_writer.rs"]
mod gguf_writer;

use common::{gpu, nmse};
use gguf_writer::*;
use plt::format::WeightFormat;
use plt::gguf::{load_gguf_bytes, GgmlType};
use plt::load::{BufferId, LayerBuffer, MemorySource};
use plt::model::{GpuModel, Logits, Schedule, Session, SessionOptions};
use plt::reference;
use std::sync::Arc;

/// GPU f32 accumulation against the reference's f64 (as tests/model.rs).
const TOL: f64 = 1e-9;

/// The device formats of a matrix of file types `parts` in rows of `cols`, part by part: each
/// tensor keeps its block format where its rows are whole blocks, else F32 (the synthetic
/// files' plan stores F32); neighbours of one format share a part. A fused matrix whose
/// tensors differ keeps each one's format (one dispatch per format, never requantised).
fn expected(parts: &[GgmlType], cols: usize) -> Vec<WeightFormat> {
    let mut f: Vec<WeightFormat> = parts.iter().map(|&t| WeightFormat::of_ggml(t).filter(|f| f.fits(cols)).unwrap_or(WeightFormat::F32)).collect();
    f.dedup();
    f
}

/// Every variant: the all-quantised one, the mixed ones (floats beside blocks), the K-quants.
fn all_variants() -> Vec<(Variant, Dims)> {
    let mut vars = vec![(all_quantised(), TINY)];
    vars.extend(variants().into_iter().map(|v| (v, TINY)));
    vars.push((k_quantised(), K_DIMS));
    vars
}

#[test]
fn quantised_gguf_models_match_the_reference_on_their_dequantised_weights() {
    for (vi, (var, dims)) in all_variants().iter().enumerate() {
        check_variant(gpu(), vi, var, *dims);
    }
}

/// The same models with every matrix split into parts of at most 1 KiB (what a matrix past
/// the adapter's binding limit gets: windows of rows, one dispatch each; the embedding one
/// dispatch per part too).
#[test]
fn windowed_models_match_the_reference() {
    let g = Arc::new(plt::gpu::Gpu::new_blocking(&plt::gpu::GpuOptions { weight_window: Some(1024), ..Default::default() }).unwrap());
    for (vi, (var, dims)) in all_variants().iter().enumerate() {
        check_variant(g.clone(), vi, var, *dims);
    }
    // A PLT model (hidden-state gates, untied, q/k/v biases) in f16 and f32: its gate vectors
    // share a buffer, its fused decode runs the L loops as rows of one pass over every window.
    let cfg = common::small_config(2, 3, true, false);
    let w = plt::init::random_weights(&cfg, &plt::init::InitOptions { seed: 71, qkv_bias: true, ..Default::default() });
    let toks = common::tokens(12, cfg.vocab_size, 72);
    let want = reference::forward(&cfg, &w, &toks);
    for dtype in [plt::DType::F32, plt::DType::F16] {
        let w = if dtype == plt::DType::F16 { plt::init::random_weights(&cfg, &plt::init::InitOptions { seed: 71, qkv_bias: true, dtype, ..Default::default() }) } else { w.clone() };
        let want = if dtype == plt::DType::F16 { reference::forward(&cfg, &w, &toks) } else { want.clone() };
        let model = GpuModel::new(g.clone(), &cfg, &w, Some(dtype)).unwrap();
        assert!(model.parts(BufferId::Layer(0, LayerBuffer::GateUpProj)) > 1 && model.parts(BufferId::LmHead) > 1, "PLT {dtype:?}: not split");
        let mut s = Session::new(Arc::new(model), SessionOptions { batch: 1, context: 16, prefill_chunk: 16, kv_f16: false }).unwrap();
        let got = pollster::block_on(s.prefill(0, &toks[..6], Logits::All)).unwrap();
        for (t, row) in got.chunks(cfg.vocab_size).enumerate() {
            let e = nmse(row, &want[t]);
            assert!(e < TOL, "PLT {dtype:?} prefill position {t}: nmse {e:e}");
        }
        for t in 6..12 {
            let got = pollster::block_on(s.decode(&[toks[t]], Schedule::Fused, true)).unwrap();
            let e = nmse(&got, &want[t]);
            assert!(e < TOL, "PLT {dtype:?} fused decode position {t}: nmse {e:e}");
        }
    }
}

/// Loads variant `vi` on `gpu` and compares prefill and decode logits with the reference.
fn check_variant(gpu: Arc<plt::gpu::Gpu>, vi: usize, var: &Variant, dims: Dims) {
    let window = gpu.weight_window();
    let (g, _) = synthetic_dims(var, dims, 31 + vi as u64);
    let bytes = g.bytes();
    let host = load_gguf_bytes(&bytes).unwrap();
    let open = plt::load::open_gguf(Box::new(MemorySource::new("synthetic.gguf", bytes))).unwrap();
    let model = GpuModel::load(gpu, open, None, &mut |_| {}).unwrap();
    // Each matrix in the formats the rule gives, in parts that fit the window.
    for (i, t) in var.types.iter().enumerate() {
        let f = |b| model.formats(BufferId::Layer(i, b));
        assert_eq!(f(LayerBuffer::QkvProj), expected(&t[0..3], dims.d), "variant {vi} layer {i} qkv");
        assert_eq!(f(LayerBuffer::OProj), expected(&t[3..4], dims.h * dims.dh), "variant {vi} layer {i} o_proj");
        assert_eq!(f(LayerBuffer::GateUpProj), expected(&t[4..6], dims.d), "variant {vi} layer {i} gate/up");
        assert_eq!(f(LayerBuffer::DownProj), expected(&t[6..7], dims.f), "variant {vi} layer {i} down");
        if window <= 1024 {
            for b in [LayerBuffer::QkvProj, LayerBuffer::GateUpProj, LayerBuffer::DownProj] {
                assert!(model.parts(BufferId::Layer(i, b)) > 2, "variant {vi} layer {i} {b:?}: not split");
            }
        }
    }
    assert_eq!(model.formats(BufferId::EmbedTokens), expected(&[var.embed], dims.d), "variant {vi} embed");
    if window <= 1024 {
        assert!(model.parts(BufferId::EmbedTokens) > 2, "variant {vi}: the embedding is not split");
    }
    if vi == 0 {
        // At most Q8_0's 36 bytes per 32 weights (f16 would be 2 bytes per weight).
        assert!(model.weight_bytes() <= host.cfg.num_params() as u64 * 9 / 8, "variant 0: {} device bytes", model.weight_bytes());
    }
    let cfg = host.cfg.clone();
    let v = cfg.vocab_size;
    let (a, b) = (common::tokens(24, v, 40 + vi as u64), common::tokens(24, v, 50 + vi as u64));
    let (wa, wb) = (reference::forward(&cfg, &host.weights, &a), reference::forward(&cfg, &host.weights, &b));
    let mut s = Session::new(Arc::new(model), SessionOptions { batch: 2, context: 32, prefill_chunk: 32, kv_f16: false }).unwrap();
    // Prefill of 20 rows (the tiled matmul), every position's logits.
    for (seq, (toks, want)) in [(&a, &wa), (&b, &wb)].into_iter().enumerate() {
        let got = pollster::block_on(s.prefill(seq, &toks[..20], Logits::All)).unwrap();
        for (t, row) in got.chunks(v).enumerate() {
            let e = nmse(row, &want[t]);
            assert!(e < TOL, "variant {vi} seq {seq} prefill position {t}: nmse {e:e}");
            let dl = (reference::logprob(row, toks[t + 1]) - reference::logprob(&want[t], toks[t + 1])).abs();
            assert!(dl < 1e-3, "variant {vi} position {t}: logprob off by {dl}");
        }
    }
    // Decode, both sequences in one pass (the row-sharing matmul).
    for t in 20..24 {
        let got = pollster::block_on(s.decode(&[a[t], b[t]], Schedule::Fused, true)).unwrap();
        for (seq, want) in [&wa, &wb].into_iter().enumerate() {
            let e = nmse(&got[seq * v..(seq + 1) * v], &want[t]);
            assert!(e < TOL, "variant {vi} seq {seq} decode position {t}: nmse {e:e}");
        }
    }
}

/// With an explicit dtype every matrix is dequantised to it; the plan's device bytes per format
/// (`plt info --plan`) say the same.
#[test]
fn explicit_dtype_dequantises_every_matrix() {
    let (g, _) = synthetic(&all_quantised(), 61);
    let open = plt::load::open_gguf(Box::new(MemorySource::new("synthetic.gguf", g.bytes()))).unwrap();
    let names = |dtype| open.plan.device_bytes_by_format(dtype).iter().map(|e| e.0).collect::<Vec<_>>();
    let resident = names(None);
    assert!(WeightFormat::QUANTISED.iter().filter(|f| f.block() == 32).all(|f| resident.contains(f)), "{resident:?}");
    let (kg, _) = synthetic_dims(&k_quantised(), K_DIMS, 62);
    let kopen = plt::load::open_gguf(Box::new(MemorySource::new("synthetic.gguf", kg.bytes()))).unwrap();
    let kres = kopen.plan.device_bytes_by_format(None).iter().map(|e| e.0).collect::<Vec<_>>();
    assert!(WeightFormat::QUANTISED.iter().filter(|f| f.block() == 256).all(|f| kres.contains(f)), "{kres:?}");
    assert!(names(Some(plt::DType::F16)).iter().all(|f| matches!(f, WeightFormat::F16 | WeightFormat::F32)));
    assert!(open.plan.summary().contains("quantised blocks kept): Q"), "{}", open.plan.summary());
    let model = GpuModel::load(gpu(), open, Some(plt::DType::F16), &mut |_| {}).unwrap();
    for i in 0..N {
        for b in [LayerBuffer::QkvProj, LayerBuffer::OProj, LayerBuffer::GateUpProj, LayerBuffer::DownProj] {
            assert_eq!(model.formats(BufferId::Layer(i, b)), [WeightFormat::F16]);
        }
    }
    assert_eq!(model.formats(BufferId::EmbedTokens), [WeightFormat::F16]);
}
