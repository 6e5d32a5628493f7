//! The model end to end on the GPU against the CPU reference (PLT-SPEC sections 3, 5, 6).

mod common;
use common::*;
use plt::model::{Exec, GpuModel, Logits, Session, SessionOptions};
use plt::reference;
use plt::{Config, DType, GateMode, LoopMode};
use std::sync::Arc;

fn session(cfg: &Config, dtype: DType, bias: bool, seed: u64, opts: SessionOptions) -> (Session, plt::Weights) {
    let w = weights(cfg, seed, dtype, bias);
    let m = GpuModel::new(gpu(), cfg, &w, Some(dtype)).unwrap();
    (Session::new(Arc::new(m), opts).unwrap(), w)
}

fn rows(all: &[f32], v: usize) -> Vec<Vec<f32>> {
    all.chunks(v).map(|c| c.to_vec()).collect()
}

#[test]
fn smoke_l1_prefill_matches_reference() {
    let cfg = tiny();
    let (mut s, w) = session(&cfg, DType::F32, false, 1, SessionOptions { batch: 1, context: 64, prefill_chunk: 16 });
    let toks = tokens(11, cfg.vocab_size, 2);
    let got = pollster::block_on(s.prefill(0, &toks, Logits::All)).unwrap();
    let want = reference::forward(&cfg, &w, &toks);
    for (t, (g, wnt)) in rows(&got, cfg.vocab_size).iter().zip(&want).enumerate() {
        let e = nmse(g, wnt);
        assert!(e < 1e-8, "position {t}: nmse {e}");
    }
}

#[test]
fn smoke_plt2_prefill_and_decode() {
    let mut cfg = tiny();
    cfg.num_loops = 2;
    cfg.window_left = 2;
    for exec in [Exec::Fused, Exec::Sequential] {
        let (mut s, w) = session(&cfg, DType::F32, false, 3, SessionOptions { batch: 1, context: 64, prefill_chunk: 4 });
        let toks = tokens(12, cfg.vocab_size, 4);
        let want = reference::forward(&cfg, &w, &toks);
        let got = pollster::block_on(s.prefill(0, &toks[..6], Logits::All)).unwrap();
        for (t, g) in rows(&got, cfg.vocab_size).iter().enumerate() {
            let e = nmse(g, &want[t]);
            assert!(e < 1e-8, "prefill position {t}: nmse {e}");
        }
        for t in 6..12 {
            let g = pollster::block_on(s.decode(&[toks[t]], exec, true)).unwrap();
            let e = nmse(&g, &want[t]);
            assert!(e < 1e-8, "{exec:?} decode position {t}: nmse {e}");
        }
    }
    let _ = (GateMode::Query, LoopMode::Parallel);
}
