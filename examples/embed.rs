//! Embedding the runtime: open the GPU, load a model directory, prefill a prompt and decode
//! greedily with the fused cross-loop-parallel step.
//!
//!     cargo run --release --example embed -- [MODEL_DIR]
//!
//! Without MODEL_DIR it writes a small random PLT-2 model to a temporary directory first.

use plt::gpu::{Gpu, GpuOptions};
use plt::init::{random_weights, write_model, InitOptions};
use plt::model::{Schedule, GpuModel, Logits, Session, SessionOptions};
use plt::sampling::argmax;
use std::sync::Arc;
use std::time::Instant;

fn main() -> plt::Result<()> {
    let dir = match std::env::args().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            let dir = std::env::temp_dir().join("plt-example-model");
            let cfg = plt::Config::from_json_str(
                r#"{"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "max_position_embeddings": 512,
                    "plt_num_loops": 2, "plt_window_size": [8, 0]}"#,
            )?;
            let opts = InitOptions { seed: 1, ..Default::default() };
            write_model(&dir, &cfg, &random_weights(&cfg, &opts), &opts)?;
            dir
        }
    };

    // One device for the process; models and sessions share it.
    let gpu = Arc::new(Gpu::new_blocking(&GpuOptions::default())?);
    println!("adapter: {}", gpu.describe());
    let model = Arc::new(GpuModel::load_dir(gpu, &dir, None)?);
    let cfg = model.cfg.clone();
    println!("model: L = {}, {} layers, hidden {}, vocab {}", cfg.num_loops, cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size);

    // A session owns the caches and scratch buffers of B sequences (here 1), created once.
    let mut session = Session::new(model, SessionOptions { batch: 1, context: 128, prefill_chunk: 64, kv_f16: false })?;
    let prompt: Vec<u32> = vec![1, 17, 42, 99, 7];
    let mut logits = session.prefill_blocking(0, &prompt, Logits::Last)?;

    let mut out = Vec::new();
    let start = Instant::now();
    for _ in 0..16 {
        let next = argmax(&logits);
        out.push(next);
        // One submit: all L loops of this token run as L rows of one pass over the weights.
        logits = session.decode_blocking(&[next], Schedule::Fused, true)?;
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0 / out.len() as f64;
    println!("greedy tokens: {out:?}");
    println!("{ms:.2} ms per decode step");
    Ok(())
}
