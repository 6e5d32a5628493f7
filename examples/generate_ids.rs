//! Generates from a prompt and prints the token ids as one JSON object: the native side of the
//! browser test's cross-backend check (`tests/browser/`), and a minimal use of the text API.
//! The model loads as the browser loads it (`plt::load::open`, streamed to the GPU: GGUF blocks
//! kept quantised).
//!
//!     cargo run --release --example generate_ids -- --model DIR|FILE.gguf [--prompt TEXT] [-n N]
//!         [--seed S] [--temperature T] [--mode fused|sequential|vanilla] [--context C]
//!         [--chat MESSAGE]... [--system TEXT] [--regenerate]
//!
//! Output: {"adapter", "mode", "prompt_tokens", "tokens", "text", "finish", "weight_bytes"}; with `--chat`,
//! one chat turn per message on one session (`plt::generate::Chat`) instead of the prompt:
//! {"adapter", "mode", "turns": [{"tokens", "reply", "restarted", "dropped"}, ...]}, and with
//! `--regenerate` the last turn taken back and asked again after them (`"regenerated"`).

use plt::generate::{Chat, Engine, GenerateOptions, TextSession};
use plt::gpu::{Gpu, GpuOptions};
use plt::model::Schedule;
use plt::sampling::SamplerConfig;
use plt::Looping;
use std::sync::Arc;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> plt::Result<()> {
    let (mut model, mut prompt, mut n, mut seed, mut temperature, mut mode, mut context) =
        (None, "To be, or not to be".to_string(), 32usize, 0u64, 0.0f32, "fused".to_string(), 2048usize);
    let (mut chat, mut system, mut regenerate) = (Vec::new(), None, false);
    let mut args = std::env::args().skip(1);
    let bad = |what: &str| plt::Error::Input(format!("{what}: missing or bad value"));
    while let Some(a) = args.next() {
        let mut v = || args.next().ok_or_else(|| bad(&a));
        match a.as_str() {
            "--model" => model = Some(v()?),
            "--prompt" => prompt = v()?,
            "-n" | "--max-tokens" => n = v()?.parse().map_err(|_| bad("-n"))?,
            "--seed" => seed = v()?.parse().map_err(|_| bad("--seed"))?,
            "--temperature" => temperature = v()?.parse().map_err(|_| bad("--temperature"))?,
            "--mode" => mode = v()?,
            "--context" => context = v()?.parse().map_err(|_| bad("--context"))?,
            "--chat" => chat.push(v()?),
            "--system" => system = Some(v()?),
            "--regenerate" => regenerate = true,
            other => return Err(plt::Error::Input(format!("unknown argument `{other}`"))),
        }
    }
    let dir = model.ok_or_else(|| bad("--model"))?;
    let src = plt::load::ModelSource::from(std::path::PathBuf::from(&dir));
    let mut cfg = plt::load::open(&src)?.plan.cfg.clone();
    let schedule = match mode.as_str() {
        "fused" | "parallel" => Schedule::Fused,
        "sequential" => Schedule::Sequential,
        "vanilla" => {
            if cfg.is_plt() {
                cfg.looping = Looping::Vanilla;
            }
            Schedule::Fused
        }
        m => return Err(plt::Error::Input(format!("--mode: expected fused, sequential or vanilla, got `{m}`"))),
    };
    let gpu = Arc::new(Gpu::new_blocking(&GpuOptions::default())?);
    let model = plt::load::open_with_config(&src, cfg.clone())?;
    let engine = Engine::from_model(gpu, model, None, &dir, &mut |_, _| {})?;
    let adapter = engine.describe();
    let weight_bytes = engine.weight_bytes();
    let context = context.min(cfg.max_position_embeddings);
    let mut ts = TextSession::new(Arc::new(engine), context)?;
    let prompt_tokens = ts.encode_prompt(&prompt)?;
    let opts = GenerateOptions {
        max_tokens: n,
        sampler: SamplerConfig { temperature, seed, ..SamplerConfig::default() },
        schedule,
        ..GenerateOptions::default()
    };
    if !chat.is_empty() {
        let mut c = Chat::new(system.as_deref());
        let mut turns = Vec::new();
        let json = |t: plt::generate::ChatTurn| serde_json::json!({"tokens": t.generation.tokens, "reply": t.reply, "restarted": t.restarted, "dropped": t.dropped});
        for m in &chat {
            turns.push(json(pollster::block_on(c.turn(&mut ts, m, &opts, &mut |_| true))?));
        }
        let mut out = serde_json::json!({"adapter": adapter, "mode": mode, "turns": turns});
        if regenerate {
            let last = c.undo().ok_or_else(|| bad("--regenerate"))?;
            out["regenerated"] = json(pollster::block_on(c.turn(&mut ts, &last, &opts, &mut |_| true))?);
        }
        println!("{out}");
        return Ok(());
    }
    let g = ts.generate_blocking(&prompt, &opts, &mut |_| true)?;
    let out = serde_json::json!({
        "adapter": adapter,
        "mode": mode,
        "prompt_tokens": prompt_tokens,
        "tokens": g.tokens,
        "text": g.text,
        "finish": format!("{:?}", g.finish),
        "weight_bytes": weight_bytes,
    });
    println!("{out}");
    Ok(())
}
