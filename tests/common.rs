//! Shared helpers for the GPU tests: one device per test binary, random models, error metrics.
#![allow(dead_code)]

use plt::gpu::{Gpu, GpuOptions};
use plt::init::{random_weights, InitOptions};
use plt::{Config, DType, Weights};
use std::sync::{Arc, OnceLock};

/// The adapter. A missing adapter fails the test (never a silent skip), in CI and out of it.
pub fn gpu() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| {
        let g = Gpu::new_blocking(&GpuOptions::default()).unwrap_or_else(|e| panic!("no GPU adapter for the tests: {e}"));
        eprintln!("adapter: {}", g.describe());
        Arc::new(g)
    })
    .clone()
}

/// Normalised mean squared error: sum (a-b)^2 / sum b^2 (scale-free).
pub fn nmse(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    for (&g, &w) in got.iter().zip(want) {
        if !g.is_finite() {
            return f64::INFINITY;
        }
        num += (g as f64 - w as f64).powi(2);
        den += (w as f64).powi(2);
    }
    num / den.max(1e-30)
}

/// A small config; tests override fields.
pub fn tiny() -> Config {
    Config::from_json_str(
        r#"{"vocab_size": 67, "hidden_size": 40, "intermediate_size": 72, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 10,
            "max_position_embeddings": 256, "rope_theta": 10000.0}"#,
    )
    .unwrap()
}

pub fn weights(cfg: &Config, seed: u64, dtype: DType, qkv_bias: bool) -> Weights {
    random_weights(cfg, &InitOptions { seed, dtype, shards: 1, qkv_bias })
}

pub fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut r = plt::rng::Rng::new(seed);
    (0..n).map(|_| r.below(vocab as u64) as u32).collect()
}
