//! The `plt` command: `init` (random models), `score` (log-probabilities, the cross-implementation
//! check), `info` (config, sizes, KV bytes).

use clap::{Parser, Subcommand};
use plt::gpu::{Gpu, GpuOptions};
use plt::init::{random_weights, write_model, InitOptions};
use plt::model::{Exec, GpuModel, Logits, Session, SessionOptions};
use plt::tokenizer::Tokenizer;
use plt::{reference, Config, DType, Error, GateMode, LoopMode, Result, Weights};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "plt", version, about = "A wgpu runtime for the Parallel Loop Transformer")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a random model directory (config.json, model.safetensors, tokenizer.json).
    Init(InitArgs),
    /// Print the log-probability of each token given the tokens before it, as JSON.
    Score(ScoreArgs),
    /// Measure decode latency and KV memory: PLT fused vs sequential vs non-looped vs vanilla.
    Bench(plt::bench::BenchArgs),
    /// Print a model's config, parameter count and KV-cache bytes.
    Info {
        #[arg(long)]
        model: PathBuf,
    },
}

#[derive(clap::Args)]
struct InitArgs {
    dir: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 256)]
    vocab: usize,
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    #[arg(long, default_value_t = 128)]
    intermediate: usize,
    #[arg(long, default_value_t = 2)]
    layers: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Key/value heads (default: --heads).
    #[arg(long)]
    kv_heads: Option<usize>,
    /// Head dim (default: hidden / heads).
    #[arg(long)]
    head_dim: Option<usize>,
    /// L, the number of loops.
    #[arg(long, default_value_t = 2)]
    loops: usize,
    /// `left` of the local window (it covers left+1 positions).
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Gate mode: query or hidden.
    #[arg(long, default_value = "query")]
    gate: String,
    /// Loop mode: parallel (PLT) or vanilla.
    #[arg(long, default_value = "parallel")]
    loop_mode: String,
    /// Carry loop outputs without the final norm (plt_normalize_per_loop = false).
    #[arg(long)]
    no_normalize_per_loop: bool,
    #[arg(long, default_value_t = 1.0)]
    emb_scale: f32,
    #[arg(long, default_value_t = 1.0)]
    hidden_scale: f32,
    #[arg(long)]
    tie_embeddings: bool,
    #[arg(long)]
    qkv_bias: bool,
    #[arg(long, default_value_t = 2048)]
    max_positions: usize,
    #[arg(long, default_value_t = 10000.0)]
    rope_theta: f32,
    #[arg(long, default_value_t = 1e-5)]
    rms_norm_eps: f32,
    /// Storage dtype in the file: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Number of safetensors shards (1 = model.safetensors).
    #[arg(long, default_value_t = 1)]
    shards: usize,
}

#[derive(clap::Args)]
struct ScoreArgs {
    #[arg(long)]
    model: PathBuf,
    /// Comma-separated token ids.
    #[arg(long, conflicts_with = "text")]
    tokens: Option<String>,
    /// Text, encoded with the model's tokenizer.json.
    #[arg(long)]
    text: Option<String>,
    /// Decode execution for the tokens after the prefill: parallel (fused, one pass of L rows)
    /// or sequential (L passes).
    #[arg(long, default_value = "parallel")]
    mode: String,
    /// Tokens fed by the prefill (the rest are decoded one step at a time). Default: half.
    #[arg(long)]
    prefill: Option<usize>,
    /// Use the CPU reference instead of the GPU.
    #[arg(long)]
    cpu: bool,
    /// Device storage of the matrices: f32 or f16 (default: as stored, BF16 as f32).
    #[arg(long)]
    dtype: Option<String>,
    /// Pick the adapter whose name contains this.
    #[arg(long)]
    adapter: Option<String>,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,wgpu_hal::gles=off")).init();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Init(a) => init(a),
        Cmd::Score(a) => score(a),
        Cmd::Info { model } => info(&model),
        Cmd::Bench(a) => plt::bench::run(&a),
    };
    if let Err(e) = r {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn parse_dtype(s: &str) -> Result<DType> {
    DType::parse(s).ok_or_else(|| Error::Input(format!("unknown dtype `{s}` (expected f32, f16 or bf16)")))
}

fn init(a: InitArgs) -> Result<()> {
    let head_dim = a.head_dim.unwrap_or(if a.heads > 0 { a.hidden / a.heads } else { 0 });
    let cfg = Config {
        vocab_size: a.vocab,
        hidden_size: a.hidden,
        intermediate_size: a.intermediate,
        num_hidden_layers: a.layers,
        num_attention_heads: a.heads,
        num_key_value_heads: a.kv_heads.unwrap_or(a.heads),
        head_dim,
        rms_norm_eps: a.rms_norm_eps,
        rope_theta: a.rope_theta,
        max_position_embeddings: a.max_positions,
        tie_word_embeddings: a.tie_embeddings,
        bos_token_id: (a.vocab > 1).then_some(1),
        eos_token_ids: if a.vocab > 2 { vec![2] } else { vec![] },
        num_loops: a.loops,
        window_left: a.window,
        normalize_per_loop: !a.no_normalize_per_loop,
        emb_scale: a.emb_scale,
        hidden_scale: a.hidden_scale,
        gate_mode: match a.gate.as_str() {
            "query" => GateMode::Query,
            "hidden" => GateMode::Hidden,
            g => return Err(Error::Input(format!("--gate: expected query or hidden, got `{g}`"))),
        },
        loop_mode: match a.loop_mode.as_str() {
            "parallel" => LoopMode::Parallel,
            "vanilla" => LoopMode::Vanilla,
            m => return Err(Error::Input(format!("--loop-mode: expected parallel or vanilla, got `{m}`"))),
        },
    };
    cfg.validate()?;
    let opts = InitOptions { seed: a.seed, dtype: parse_dtype(&a.dtype)?, shards: a.shards, qkv_bias: a.qkv_bias };
    let w = random_weights(&cfg, &opts);
    write_model(&a.dir, &cfg, &w, &opts)?;
    eprintln!("wrote {} ({} parameters, {})", a.dir.display(), cfg.num_params(), opts.dtype.name());
    Ok(())
}

fn load(dir: &Path) -> Result<(Config, Weights)> {
    let cfg = Config::from_file(&dir.join("config.json"))?;
    let w = Weights::load_dir(dir, &cfg)?;
    Ok((cfg, w))
}

fn parse_tokens(s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<u32>().map_err(|_| Error::Input(format!("--tokens: `{t}` is not a token id"))))
        .collect()
}

fn score(a: ScoreArgs) -> Result<()> {
    let (cfg, w) = load(&a.model)?;
    let tokens = match (&a.tokens, &a.text) {
        (Some(t), _) => parse_tokens(t)?,
        (None, Some(text)) => Tokenizer::from_file(&a.model.join("tokenizer.json"), cfg.vocab_size)?.encode(text)?,
        (None, None) => return Err(Error::Input("give --tokens or --text".into())),
    };
    if tokens.len() < 2 {
        return Err(Error::Input(format!("need at least 2 tokens to score, got {}", tokens.len())));
    }
    if let Some(t) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
        return Err(Error::Input(format!("token id {t} is out of range (vocab_size {})", cfg.vocab_size)));
    }
    let exec = Exec::parse(&a.mode)
        .ok_or_else(|| Error::Input(format!("--mode: expected parallel or sequential, got `{}`", a.mode)))?;
    let n = tokens.len();
    let prefill = a.prefill.unwrap_or(n / 2).clamp(1, n);
    let mode = if cfg.num_loops > 1 && cfg.loop_mode == LoopMode::Vanilla { "vanilla".to_string() } else { a.mode.clone() };
    // logits[t] predicts tokens[t+1]; the last token's logits are not needed.
    let (logits, adapter): (Vec<Vec<f32>>, String) = if a.cpu {
        (reference::forward(&cfg, &w, &tokens[..n - 1]), "cpu-reference".into())
    } else {
        let dtype = a.dtype.as_deref().map(parse_dtype).transpose()?;
        let gpu = Arc::new(Gpu::new_blocking(&GpuOptions { adapter: a.adapter.clone() })?);
        let adapter = gpu.describe();
        let model = Arc::new(GpuModel::new(gpu, &cfg, &w, dtype)?);
        let opts = SessionOptions { batch: 1, context: n.min(cfg.max_position_embeddings), prefill_chunk: 128 };
        let mut s = Session::new(model, opts)?;
        let v = cfg.vocab_size;
        let mut out: Vec<Vec<f32>> = pollster::block_on(s.prefill(0, &tokens[..prefill], Logits::All))?
            .chunks(v)
            .map(|c| c.to_vec())
            .collect();
        for &t in &tokens[prefill..n - 1] {
            out.push(pollster::block_on(s.decode(&[t], exec, true))?);
        }
        out.truncate(n - 1);
        (out, adapter)
    };
    let logprobs: Vec<f64> = (0..n - 1).map(|t| reference::logprob(&logits[t], tokens[t + 1])).collect();
    let json = serde_json::json!({
        "logprobs": logprobs,
        "adapter": adapter,
        "mode": if a.cpu { "reference".to_string() } else { mode },
        "tokens": tokens,
        "prefill": if a.cpu { n - 1 } else { prefill },
    });
    println!("{json}");
    Ok(())
}

fn info(dir: &Path) -> Result<()> {
    let cfg = Config::from_file(&dir.join("config.json"))?;
    let json = serde_json::json!({
        "config": cfg.to_json(),
        "parameters": cfg.num_params(),
        "kv_bytes_per_token_f32": cfg.kv_bytes(1, 4) - cfg.kv_bytes(0, 4),
        "kv_bytes_fixed_f32": cfg.kv_bytes(0, 4),
        "kv_bytes_at_max_positions_f32": cfg.kv_bytes(cfg.max_position_embeddings, 4),
    });
    println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
    Ok(())
}
