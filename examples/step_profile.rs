//! Where a decode step's GPU time goes: every dispatch timed on its own (timestamp queries).
//!
//!     cargo run --release --example step_profile -- MODEL_DIR [fused|sequential]
use plt::gpu::{Gpu, GpuOptions};
use plt::model::{Schedule, GpuModel, Logits, Session, SessionOptions};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

fn main() -> plt::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or_else(|| plt::Error::Input("usage: step_profile MODEL_DIR [fused|sequential]".into()))?;
    let schedule = Schedule::parse(&args.next().unwrap_or("fused".into())).unwrap_or(Schedule::Fused);
    let gpu = Arc::new(Gpu::new_blocking(&GpuOptions::default())?);
    println!("adapter: {}", gpu.describe());
    let model = Arc::new(GpuModel::load_dir(gpu, std::path::Path::new(&dir), None)?);
    let v = model.cfg.vocab_size as u32;
    let mut s = Session::new(model, SessionOptions { batch: 1, context: 256, prefill_chunk: 64, kv_f16: false })?;
    s.prefill_blocking(0, &[1, 2, 3, 4], Logits::Last)?;
    let mut walls = Vec::new();
    for i in 0..10 {
        let t = Instant::now();
        s.decode_blocking(&[(5 + i) % v], schedule, true)?;
        walls.push(t.elapsed().as_secs_f64() * 1e3);
    }
    walls.sort_by(f64::total_cmp);
    println!("{schedule:?} decode step: wall median {:.2} ms, GPU {:.2} ms", walls[5], s.stats.gpu_ns.unwrap_or(0) as f64 / 1e6);
    s.set_profiling(true)?;
    let mut total: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let steps = 5;
    for i in 0..steps {
        s.decode_blocking(&[(20 + i) % v], schedule, true)?;
        for (label, ms) in s.profile() {
            let e = total.entry(label.clone()).or_default();
            e.0 += ms / steps as f64;
            e.1 += 1;
        }
    }
    let sum: f64 = total.values().map(|e| e.0).sum();
    let mut rows: Vec<_> = total.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    println!("{:<22} {:>10} {:>7} {:>6}", "dispatch", "ms/step", "share", "count");
    for (label, (ms, n)) in rows {
        println!("{label:<22} {ms:>10.3} {:>6.1}% {:>6}", 100.0 * ms / sum, n / steps as usize);
    }
    println!("{:<22} {sum:>10.3}", "sum (one pass each)");
    Ok(())
}
