//! Quantised matrices kept quantised on the device: small random llama models written as GGUF
//! files (tests/support/gguf_writer.rs) with Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 matrices, and a
//! model of hidden size 256 with Q4_K, Q5_K and Q6_K ones, loaded with no dtype
//! (`LoadPlan::formats`: matrices in rows of whole blocks stay block records; a fused q/k/v or
//! gate/up whose parts differ in format is dequantised), against the CPU reference on
//! the same dequantised weights: prefill (the tiled matmul, > 16 rows), decode (the row-sharing
//! one, batch 2) and the embedding / tied lm_head read from blocks.

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

/// Every matrix quantised, fused parts of one format, every block format, a tied embedding.
fn all_quantised() -> Variant {
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
fn k_quantised() -> Variant {
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
const K_DIMS: Dims = Dims { d: 256, h: 4, hkv: 2, dh: 64, f: 512 };

/// The device format a matrix of file types `parts` in rows of `cols` gets: theirs when all
/// are the same block format and the rows are whole blocks, else F32 (the synthetic files'
/// plan stores F32).
fn expected(parts: &[GgmlType], cols: usize) -> WeightFormat {
    match WeightFormat::of_ggml(parts[0]) {
        Some(f) if parts.iter().all(|&t| t == parts[0]) && f.fits(cols) => f,
        _ => WeightFormat::F32,
    }
}

#[test]
fn quantised_gguf_models_match_the_reference_on_their_dequantised_weights() {
    let mut vars = vec![(all_quantised(), TINY)];
    vars.extend(variants().into_iter().map(|v| (v, TINY)));
    vars.push((k_quantised(), K_DIMS));
    for (vi, (var, dims)) in vars.iter().enumerate() {
        let (g, _) = synthetic_dims(var, *dims, 31 + vi as u64);
        let bytes = g.bytes();
        let host = load_gguf_bytes(&bytes).unwrap();
        let open = plt::load::open_gguf(Box::new(MemorySource::new("synthetic.gguf", bytes))).unwrap();
        let model = GpuModel::load(gpu(), open, None, &mut |_| {}).unwrap();
        // Each matrix in the format the rule gives.
        for (i, t) in var.types.iter().enumerate() {
            let f = |b| model.format(BufferId::Layer(i, b));
            assert_eq!(f(LayerBuffer::QkvProj), expected(&t[0..3], dims.d), "variant {vi} layer {i} qkv");
            assert_eq!(f(LayerBuffer::OProj), expected(&t[3..4], dims.h * dims.dh), "variant {vi} layer {i} o_proj");
            assert_eq!(f(LayerBuffer::GateUpProj), expected(&t[4..6], dims.d), "variant {vi} layer {i} gate/up");
            assert_eq!(f(LayerBuffer::DownProj), expected(&t[6..7], dims.f), "variant {vi} layer {i} down");
        }
        assert_eq!(model.format(BufferId::EmbedTokens), expected(&[var.embed], dims.d), "variant {vi} embed");
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
            assert_eq!(model.format(BufferId::Layer(i, b)), WeightFormat::F16);
        }
    }
    assert_eq!(model.format(BufferId::EmbedTokens), WeightFormat::F16);
}
