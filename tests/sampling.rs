//! GPU sampling picks exactly what the CPU reference sampler picks on the same logits, for every
//! sampler option, in a batch whose sequences use different samplers.

mod common;
use common::*;
use plt::model::{Schedule, GpuModel, Logits, Session, SessionOptions};
use plt::sampling::{sample_cpu, SamplerConfig};
use plt::DType;
use std::sync::Arc;

fn samplers() -> Vec<SamplerConfig> {
    let t = SamplerConfig { temperature: 0.9, seed: 1234, ..Default::default() };
    vec![
        SamplerConfig::greedy(),
        SamplerConfig { repetition_penalty: 1.3, ..SamplerConfig::greedy() },
        t.clone(),
        SamplerConfig { top_k: 5, ..t.clone() },
        SamplerConfig { top_p: 0.6, ..t.clone() },
        SamplerConfig { min_p: 0.2, temperature: 1.5, ..t.clone() },
        SamplerConfig { top_k: 12, top_p: 0.8, min_p: 0.05, repetition_penalty: 1.2, repeat_last_n: 8, seed: 99, ..t.clone() },
    ]
}

#[test]
fn gpu_pick_equals_cpu_pick() {
    let mut cfg = tiny();
    cfg.vocab_size = 300; // more than one sampling workgroup's worth of ids per thread
    cfg.num_loops = 2;
    cfg.window_left = 3;
    let w = weights(&cfg, 5, DType::F32, false);
    let m = Arc::new(GpuModel::new(gpu(), &cfg, &w, None).unwrap());
    let list = samplers();
    let b = list.len();
    let mut s = Session::new(m, SessionOptions { batch: b, context: 40, prefill_chunk: 8, kv_f16: false }).unwrap();
    for (i, sc) in list.iter().enumerate() {
        s.set_sampler(i, sc.clone()).unwrap();
        s.prefill_blocking(i, &tokens(3 + i, cfg.vocab_size, 10 + i as u64), Logits::None).unwrap();
    }
    let mut next: Vec<u32> = (0..b as u32).collect();
    let mut draws = 0;
    for step in 0..24 {
        let exec = if step % 2 == 0 { Schedule::Fused } else { Schedule::Sequential };
        let (ids, logits) = pollster::block_on(s.decode_sample(&next, exec, true)).unwrap();
        assert_eq!(ids.len(), b);
        for (i, sc) in list.iter().enumerate() {
            let hist = s.tokens(i);
            let want = sample_cpu(&logits[i * cfg.vocab_size..(i + 1) * cfg.vocab_size], hist, sc, hist.len() as u32, i as u32);
            assert_eq!(ids[i], want, "step {step}, sampler {sc:?}");
            draws += 1;
        }
        next = ids;
    }
    assert_eq!(draws, 24 * b);
    // Sampled (non-greedy) sequences did not all collapse to one token.
    let distinct: std::collections::HashSet<u32> = s.tokens(2).iter().copied().collect();
    assert!(distinct.len() > 3);
}

#[test]
fn prefill_sample_equals_cpu_pick_and_is_seeded() {
    let mut cfg = tiny();
    cfg.num_loops = 3;
    cfg.window_left = 2;
    let w = weights(&cfg, 6, DType::F16, false);
    let m = Arc::new(GpuModel::new(gpu(), &cfg, &w, None).unwrap());
    let prompt = tokens(9, cfg.vocab_size, 7);
    let sc = SamplerConfig { temperature: 1.0, top_p: 0.9, seed: 77, ..Default::default() };
    let mut a = Session::new(m.clone(), SessionOptions { batch: 1, context: 32, prefill_chunk: 4, kv_f16: false }).unwrap();
    let logits = a.prefill_blocking(0, &prompt, Logits::Last).unwrap();
    let want = sample_cpu(&logits, &prompt, &sc, prompt.len() as u32, 0);
    let run = || {
        let mut s = Session::new(m.clone(), SessionOptions { batch: 1, context: 32, prefill_chunk: 4, kv_f16: false }).unwrap();
        s.set_sampler(0, sc.clone()).unwrap();
        let mut t = pollster::block_on(s.prefill_sample(0, &prompt)).unwrap();
        let mut out = vec![t];
        for _ in 0..10 {
            t = pollster::block_on(s.decode_sample(&[t], Schedule::Fused, false)).unwrap().0[0];
            out.push(t);
        }
        out
    };
    let first = run();
    assert_eq!(first[0], want);
    assert_eq!(first, run(), "same seed, same model, same adapter: same tokens");
}

#[test]
fn bad_sampler_values_are_rejected() {
    let cfg = tiny();
    let w = weights(&cfg, 8, DType::F32, false);
    let m = Arc::new(GpuModel::new(gpu(), &cfg, &w, None).unwrap());
    let mut s = Session::new(m, SessionOptions { batch: 1, context: 8, prefill_chunk: 4, kv_f16: false }).unwrap();
    let e = s.set_sampler(0, SamplerConfig { temperature: -0.5, ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("temperature"));
    let e = s.set_sampler(0, SamplerConfig { top_p: 0.0, ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("top_p"));
    assert!(s.set_sampler(3, SamplerConfig::default()).is_err());
}
