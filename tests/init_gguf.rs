//! `plt init`'s GGUF models (src/init/gguf.rs): a random model in every quantised type loads
//! with its PLT configuration from the `plt.*` keys, keeps its matrices quantised on the device
//! (llama.cpp's fallback type where rows are not whole blocks), and its GPU log-probabilities
//! (prefill and the fused decode step) match the CPU reference on the same dequantised weights.

mod common;

use common::{gpu, nmse};
use plt::format::WeightFormat;
use plt::gguf::{load_gguf_bytes, GgmlType};
use plt::init::gguf::{gguf_bytes, matrix_type, GgufInitOptions};
use plt::load::{BufferId, LayerBuffer, MemorySource};
use plt::model::{GpuModel, Logits, Schedule, Session, SessionOptions};
use plt::{reference, Config};
use std::sync::Arc;

/// GPU f32 accumulation against the reference's f64 (as tests/model.rs).
const TOL: f64 = 1e-9;

fn log_softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
    x.iter().map(|&v| (v as f64 - lse) as f32).collect()
}

/// A small PLT config; `d` = 256 keeps K-quant rows whole super-blocks, 64 does not.
fn config(d: usize, f: usize, loops: usize, hidden_gate: bool, tied: bool) -> Config {
    Config::from_json(
        serde_json::json!({
            "vocab_size": 300, "hidden_size": d, "intermediate_size": f, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": d / 4,
            "max_position_embeddings": 64, "plt_num_loops": loops, "plt_window_size": [3, 0],
            "plt_gate_use_hidden_states": hidden_gate, "tie_word_embeddings": tied, "rope_theta": 500000.0,
            "bos_token_id": 1, "eos_token_id": 2,
        })
        .as_object()
        .unwrap(),
    )
    .unwrap()
}

#[test]
fn init_gguf_models_stay_quantised_and_match_the_reference() {
    use GgmlType as G;
    let types = [G::Q8_0, G::Q4_0, G::Q4_1, G::Q5_0, G::Q5_1, G::Q4_K, G::Q5_K, G::Q6_K];
    // Every type at D = 256, then the K-quants at D = 64 (their fallbacks Q5_0, Q5_1, Q8_0).
    let cases: Vec<(GgmlType, usize, usize)> = types.iter().map(|&t| (t, 256, 512)).chain([G::Q4_K, G::Q5_K, G::Q6_K].iter().map(|&t| (t, 64, 96))).collect();
    for (ci, &(ty, d, f)) in cases.iter().enumerate() {
        let cfg = config(d, f, 2 + ci % 2, ci % 2 == 1, ci % 3 == 0);
        let what = format!("{} D={d} L={} gate {:?} tied {}", ty.name(), cfg.num_loops, cfg.gate_mode, cfg.tie_word_embeddings);
        let bytes = gguf_bytes(&cfg, &GgufInitOptions { seed: 70 + ci as u64, matrix_type: ty, qkv_bias: ci % 4 == 1 }).unwrap();
        let host = load_gguf_bytes(&bytes).unwrap();
        assert_eq!(host.cfg.to_json(), cfg.to_json(), "{what}: the config read back");
        let open = plt::load::open_gguf(Box::new(MemorySource::new("init.gguf", bytes))).unwrap();
        let model = GpuModel::load(gpu(), open, None, &mut |_| {}).unwrap();
        let want = |cols: usize| WeightFormat::of_ggml(matrix_type(ty, cols)).unwrap();
        assert!(want(d).is_quantised());
        for i in 0..cfg.num_hidden_layers {
            let got = |b| model.format(BufferId::Layer(i, b));
            assert_eq!(got(LayerBuffer::QkvProj), want(d), "{what}: layer {i} qkv");
            assert_eq!(got(LayerBuffer::OProj), want(cfg.q_dim()), "{what}: layer {i} o_proj");
            assert_eq!(got(LayerBuffer::GateUpProj), want(d), "{what}: layer {i} gate/up");
            assert_eq!(got(LayerBuffer::DownProj), want(f), "{what}: layer {i} down");
        }
        assert_eq!(model.format(BufferId::EmbedTokens), want(d), "{what}: embed");
        assert_eq!(model.format(model.head_id()), want(d), "{what}: lm_head");
        // Under a byte per weight (Q8_0's 36 bytes per 32 weights is the most).
        assert!(model.weight_bytes() < cfg.num_params() as u64 * 9 / 8 + 8 * 1024, "{what}: {} device bytes", model.weight_bytes());

        let v = cfg.vocab_size;
        let toks = common::tokens(16, v, 90 + ci as u64);
        let want_logits = reference::forward(&host.cfg, &host.weights, &toks);
        let mut s = Session::new(Arc::new(model), SessionOptions { batch: 1, context: 32, prefill_chunk: 32, kv_f16: false }).unwrap();
        // Prefill of 12 rows (the tiled matmul), then the fused decode step (the row-sharing one).
        let got = pollster::block_on(s.prefill(0, &toks[..12], Logits::All)).unwrap();
        let mut rows: Vec<(usize, Vec<f32>)> = got.chunks(v).enumerate().map(|(t, r)| (t, r.to_vec())).collect();
        for (t, &tok) in toks.iter().enumerate().take(16).skip(12) {
            rows.push((t, pollster::block_on(s.decode(&[tok], Schedule::Fused, true)).unwrap()));
        }
        for (t, row) in rows {
            let e = nmse(&log_softmax(&row), &log_softmax(&want_logits[t]));
            assert!(e < TOL, "{what}: position {t}: log-probability nmse {e:e}");
        }
    }
}

/// A PLT GGUF whose matrices are all F16 (its gate an F32 vector) keeps them F16 on the device;
/// BF16 and F32 ones are F32 there.
#[test]
fn float_gguf_models_keep_their_float_type() {
    for (hidden_gate, ty, want) in [(false, GgmlType::F16, WeightFormat::F16), (true, GgmlType::F16, WeightFormat::F16), (false, GgmlType::BF16, WeightFormat::F32), (true, GgmlType::F32, WeightFormat::F32)] {
        let cfg = config(64, 96, 2, hidden_gate, false);
        let bytes = gguf_bytes(&cfg, &GgufInitOptions { seed: 5, matrix_type: ty, qkv_bias: false }).unwrap();
        let open = plt::load::open_gguf(Box::new(MemorySource::new("f.gguf", bytes))).unwrap();
        let model = GpuModel::load(gpu(), open, None, &mut |_| {}).unwrap();
        for id in [BufferId::Layer(0, LayerBuffer::QkvProj), BufferId::Layer(1, LayerBuffer::GateUpProj), BufferId::EmbedTokens, BufferId::LmHead] {
            assert_eq!(model.formats(id), [want], "{ty:?} hidden gate {hidden_gate}: {id:?}");
        }
    }
}
