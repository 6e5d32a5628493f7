//! The `plt` command: generate, chat, perplexity, info, score, init, quantize, bench.

use clap::{Args, Parser, Subcommand};
use plt::cpu::{CpuOptions, CpuSession, CpuSessionOptions};
use plt::generate::{Backend, Chat, Device, Engine, FinishReason, GenerateOptions, LoadOptions, ReferenceSession, TextSession};
use plt::gpu::GpuOptions;
use plt::init::{random_weights, write_model, InitOptions};
use plt::load::{Bytes, MemoryModel, ModelSource};
use plt::model::{Schedule, Logits, Session, SessionOptions};
use plt::progress::Progress;
use plt::sampling::SamplerConfig;
use plt::tokenizer::ChatMessage;
use plt::error::printable;
use plt::{reference, DType, Error, GateMode, Looping, Result};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The shipped default model (`models/plt2-shakespeare`), built into the binary so that `plt`
/// runs wherever it is installed; used when `--model` is not given. Its files are the ones the
/// directory has.
fn default_model() -> ModelSource {
    macro_rules! shipped {
        ($name:literal) => {
            Bytes::Static(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/models/plt2-shakespeare/", $name)))
        };
    }
    ModelSource::Memory(MemoryModel {
        name: "plt2-shakespeare (built in)".into(),
        config: shipped!("config.json"),
        safetensors: shipped!("model.safetensors").into(),
        tokenizer: Some(shipped!("tokenizer.json")),
        generation_config: Some(shipped!("generation_config.json")),
        tokenizer_config: Some(shipped!("tokenizer_config.json")),
    })
}

#[derive(Parser)]
#[command(name = "plt", version, about = "A wgpu runtime for the Parallel Loop Transformer")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate text from a prompt, streamed to stdout.
    Generate(GenerateArgs),
    /// An interactive chat using the model's chat template.
    Chat(ChatArgs),
    /// Perplexity of a text file, in context-sized chunks.
    Perplexity(PerplexityArgs),
    /// Print a model's config, sizes and KV-cache bytes.
    Info(InfoArgs),
    /// Print the log-probability of each token given the tokens before it, as JSON.
    Score(ScoreArgs),
    /// Write a random model directory (config.json, model.safetensors, tokenizer.json).
    Init(InitArgs),
    /// Quantise a model (a directory or a GGUF file) into one GGUF file.
    Quantize(QuantizeArgs),
    /// Measure decode latency and KV memory: PLT fused vs sequential vs non-looped vs vanilla
    /// (`plt bench compare A.json B.json ...` merges reports of different machines).
    #[command(args_conflicts_with_subcommands = true)]
    Bench(Box<plt::bench::BenchArgs>),
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// A model directory (config.json, safetensors, tokenizer.json) or a .gguf file.
    /// Default: the shipped PLT model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Device storage of the matrices: f32 or f16, every matrix dequantised to it (default: as
    /// stored, BF16 as f32, GGUF Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q4_K/Q5_K/Q6_K kept quantised).
    #[arg(long)]
    dtype: Option<String>,
    /// Use the adapter whose name contains this.
    #[arg(long)]
    adapter: Option<String>,
    /// KV-cache storage: f32 (default) or f16 (half the memory; keys and values rounded).
    #[arg(long)]
    kv_dtype: Option<String>,
    /// Where the model runs: auto (a hardware GPU when there is one, else the CPU backend),
    /// gpu (any adapter, software ones too), cpu (the native CPU backend), or reference (the
    /// f64 CPU oracle: exact and slow).
    #[arg(long, default_value = "auto")]
    backend: String,
    /// The same as `--backend cpu`.
    #[arg(long)]
    cpu: bool,
    /// CPU backend threads (default: one per physical core).
    #[arg(long)]
    threads: Option<usize>,
    /// CPU backend: quantised weights take f32 activations (the GPU's numbers; slower) instead
    /// of int8 ones.
    #[arg(long)]
    f32_activations: bool,
}

/// What `--backend` (or `--cpu`) asks for: a backend of `Engine`, or the reference.
enum Choice {
    Engine(Backend),
    Reference,
}

impl ModelArgs {
    fn choice(&self) -> Result<Choice> {
        if self.cpu {
            if self.backend != "auto" && self.backend != "cpu" {
                return Err(Error::Input(format!("--cpu and --backend {} contradict each other", self.backend)));
            }
            return Ok(Choice::Engine(Backend::Cpu));
        }
        if self.backend.eq_ignore_ascii_case("reference") {
            return Ok(Choice::Reference);
        }
        Backend::parse(&self.backend)
            .map(Choice::Engine)
            .ok_or_else(|| Error::Input(format!("--backend: expected auto, gpu, cpu or reference, got `{}`", self.backend)))
    }

    fn load_options(&self, backend: Backend) -> Result<LoadOptions> {
        if self.threads == Some(0) {
            return Err(Error::Input("--threads must be at least 1".into()));
        }
        Ok(LoadOptions {
            dtype: self.dtype.as_deref().map(parse_dtype).transpose()?,
            backend,
            gpu: GpuOptions { adapter: self.adapter.clone(), ..Default::default() },
            cpu: CpuOptions { threads: self.threads, f32_activations: self.f32_activations, ..Default::default() },
            kv_f16: parse_kv_dtype(self.kv_dtype.as_deref())?,
        })
    }

    /// The engine on the backend asked for, from an opened model; says where it runs and,
    /// when `auto` chose, why.
    fn engine(&self, model: plt::load::OpenModel<'_>, backend: Backend, source: &str, bar: &mut Progress) -> Result<Engine> {
        let opts = self.load_options(backend)?;
        let e = pollster::block_on(Engine::from_open(model, &opts, source, &mut |stage, f| bar.stage(stage, f))).map_err(|e| match e {
            Error::NoAdapter(msg) => Error::NoAdapter(format!(
                "{msg}. On Linux, `apt-get install -y mesa-vulkan-drivers` gives a software GPU adapter; `--backend cpu` runs without one"
            )),
            e => e,
        })?;
        eprintln!("{source} on {}", e.describe());
        if let Some(why) = &e.choice {
            eprintln!("note: {}: running on the CPU backend (`--backend gpu` uses the GPU anyway)", printable(why));
        }
        Ok(e)
    }
}

#[derive(Args, Clone)]
struct SampleArgs {
    /// Tokens to generate at most.
    #[arg(long, short = 'n', default_value_t = 128)]
    max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    #[arg(long, default_value_t = 1.1)]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    /// Random seed (default: from the clock, printed to stderr).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop before this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Keep going past the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
    /// How a PLT model's decode step runs its loops: fused (one pass of L rows) or sequential
    /// (L passes). `--mode` and the value `parallel` are older spellings of the same.
    #[arg(long, visible_alias = "mode", default_value = "fused")]
    schedule: String,
    /// Context length of the session (default: min(2048, the model's)).
    #[arg(long)]
    context: Option<usize>,
    /// When the context fills up, keep its newer half and go on (instead of stopping).
    #[arg(long)]
    context_shift: bool,
}

#[derive(Args)]
struct GenerateArgs {
    /// The prompt.
    prompt: String,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sample: SampleArgs,
    /// Wrap the prompt in the model's chat template as a user message.
    #[arg(long)]
    chat: bool,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sample: SampleArgs,
    /// A system message to start the conversation with.
    #[arg(long)]
    system: Option<String>,
}

#[derive(Args)]
struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text file.
    #[arg(long)]
    file: PathBuf,
    /// Tokens per chunk (default: min(256, the model's context)).
    #[arg(long)]
    context: Option<usize>,
    /// Score at most this many chunks.
    #[arg(long)]
    max_chunks: Option<usize>,
}

#[derive(Args)]
struct QuantizeArgs {
    /// The model: a directory (config.json, safetensors, tokenizer.json) or a .gguf file.
    src: PathBuf,
    /// The GGUF file to write (its name must end in .gguf).
    out: PathBuf,
    /// f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k_s, q4_k_m (q4_k), q5_k_s, q5_k_m (q5_k)
    /// or q6_k.
    #[arg(long = "type")]
    ty: String,
    /// Quantise a source whose matrices are already quantised (the result's quality is bounded
    /// by the source's).
    #[arg(long)]
    allow_requantize: bool,
    /// Write no tokenizer (for a directory whose tokenizer GGUF cannot hold).
    #[arg(long)]
    no_tokenizer: bool,
    /// Threads (default: the available cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args)]
struct InfoArgs {
    /// A model directory or a .gguf file (default: the shipped PLT model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Print the load plan (every tensor: storage, shape, bytes, offset, destination) and the
    /// memory plan instead of the JSON summary.
    #[arg(long)]
    plan: bool,
    /// Memory plan: positions per sequence. [default: the model's max_position_embeddings]
    #[arg(long)]
    context: Option<usize>,
    /// Memory plan: sequences decoded together.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Memory plan: the matrices' storage (f32 or f16; default: as loading keeps them).
    #[arg(long)]
    dtype: Option<String>,
    /// Memory plan: device memory to fit, e.g. 8GB, 24GiB, or bytes.
    #[arg(long)]
    memory: Option<String>,
    /// Memory plan: the adapter's largest storage binding (e.g. 128MiB, 2GiB): buffers over it
    /// are listed.
    #[arg(long)]
    max_binding: Option<String>,
    /// Memory plan: list every buffer (default: the 8 largest).
    #[arg(long)]
    all_buffers: bool,
}

#[derive(Args)]
struct InitArgs {
    /// Where to write: a directory (config.json, safetensors, tokenizer.json), or a file ending in
    /// .gguf (one GGUF file; quantised dtypes are GGUF only).
    dir: PathBuf,
    /// Start from a preset shape (flags given override it): tiny (the defaults),
    /// loopcoder-v2 (LoopCoder-V2's real shape; `--layers N` shortens it) or llama-3.2-1b
    /// (Llama-3.2-1B's shape, Llama 3 RoPE scaling included).
    #[arg(long)]
    preset: Option<String>,
    /// Write one GGUF file (implied by a quantised --dtype or a path ending in .gguf).
    #[arg(long)]
    gguf: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// [default: 256]
    #[arg(long)]
    vocab: Option<usize>,
    /// [default: 64]
    #[arg(long)]
    hidden: Option<usize>,
    /// [default: 128]
    #[arg(long)]
    intermediate: Option<usize>,
    /// [default: 2]
    #[arg(long)]
    layers: Option<usize>,
    /// [default: 4]
    #[arg(long)]
    heads: Option<usize>,
    /// Key/value heads (default: --heads).
    #[arg(long)]
    kv_heads: Option<usize>,
    /// Head dim (default: hidden / heads).
    #[arg(long)]
    head_dim: Option<usize>,
    /// L, the number of loops. [default: 2]
    #[arg(long)]
    loops: Option<usize>,
    /// `left` of the local window (it covers left+1 positions). [default: 64]
    #[arg(long)]
    window: Option<usize>,
    /// Gate mode: query or hidden. [default: query]
    #[arg(long)]
    gate: Option<String>,
    /// How the loops are wired: plt (cross-loop parallel, written as plt_loop_mode "parallel")
    /// or vanilla. `--loop-mode` and the value `parallel` are older spellings.
    #[arg(long, visible_alias = "loop-mode", default_value = "plt")]
    looping: String,
    /// Carry loop outputs without the final norm (plt_normalize_per_loop = false).
    #[arg(long)]
    no_normalize_per_loop: bool,
    /// [default: 1.0]
    #[arg(long)]
    emb_scale: Option<f32>,
    /// [default: 1.0]
    #[arg(long)]
    hidden_scale: Option<f32>,
    #[arg(long)]
    tie_embeddings: bool,
    #[arg(long)]
    qkv_bias: bool,
    /// [default: 2048]
    #[arg(long)]
    max_positions: Option<usize>,
    /// [default: 10000]
    #[arg(long)]
    rope_theta: Option<f32>,
    /// [default: 1e-5]
    #[arg(long)]
    rms_norm_eps: Option<f32>,
    /// Storage of the matrices: f32, f16 or bf16 (safetensors or GGUF), or q8_0, q4_0, q4_1,
    /// q5_0, q5_1, q4_k, q5_k, q6_k (GGUF: random valid blocks; a matrix whose rows are not
    /// whole blocks falls back as llama.cpp's quantiser does, norms stay f32).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Number of safetensors shards (1 = model.safetensors).
    #[arg(long, default_value_t = 1)]
    shards: usize,
}

#[derive(Args)]
struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Comma-separated token ids.
    #[arg(long, conflicts_with = "text")]
    tokens: Option<String>,
    /// Text, encoded with the model's tokenizer.json.
    #[arg(long)]
    text: Option<String>,
    /// How the decode steps after the prefill run a PLT model's loops: fused (one pass of L
    /// rows) or sequential (L passes). `--mode` and `parallel` are older spellings. The JSON's
    /// `mode` keeps its values: "parallel" (fused), "sequential", "vanilla", "reference".
    #[arg(long, visible_alias = "mode", default_value = "fused")]
    schedule: String,
    /// Tokens fed by the prefill (the rest are decoded one step at a time). Default: half.
    #[arg(long)]
    prefill: Option<usize>,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,wgpu_hal::gles=off")).init();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Generate(a) => generate(a),
        Cmd::Chat(a) => chat(a),
        Cmd::Perplexity(a) => perplexity(a),
        Cmd::Info(a) => info(&model_source(&a.model), &a),
        Cmd::Score(a) => score(a),
        Cmd::Init(a) => init(a),
        Cmd::Quantize(a) => quantize(a),
        Cmd::Bench(a) => plt::bench::run(&a),
    };
    if let Err(e) = r {
        eprintln!("error: {}", printable(&e.to_string()));
        std::process::exit(1);
    }
}

fn model_source(m: &Option<PathBuf>) -> ModelSource {
    m.as_ref().map(ModelSource::from).unwrap_or_else(default_model)
}

/// `--kv-dtype`: true for f16.
fn parse_kv_dtype(s: Option<&str>) -> Result<bool> {
    match s {
        None | Some("f32") => Ok(false),
        Some("f16") => Ok(true),
        Some(o) => Err(Error::Input(format!("--kv-dtype: expected f32 or f16, got `{o}`"))),
    }
}

fn parse_dtype(s: &str) -> Result<DType> {
    DType::parse(s).ok_or_else(|| Error::Input(format!("--dtype: expected f32, f16 or bf16, got `{s}`")))
}

fn parse_schedule(s: &str) -> Result<Schedule> {
    Schedule::parse(s).ok_or_else(|| Error::Input(format!("--schedule (or --mode): expected fused or sequential, got `{s}`")))
}

fn sampler(a: &SampleArgs) -> Result<SamplerConfig> {
    let seed = a.seed.unwrap_or_else(|| {
        let s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        eprintln!("seed: {s}");
        s
    });
    let s = SamplerConfig {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repetition_penalty: a.repeat_penalty,
        repeat_last_n: a.repeat_last_n,
        seed,
    };
    // Named by the flag that set the value (the library names the field).
    s.check().map_err(|(field, msg)| {
        let flag = match field {
            "top_p" => "--top-p",
            "min_p" => "--min-p",
            "repetition_penalty" => "--repeat-penalty",
            "repeat_last_n" => "--repeat-last-n",
            _ => "--temperature",
        };
        Error::Input(format!("{flag}: {msg}"))
    })?;
    Ok(s)
}

/// The generation options of the flags, checked before any model is loaded.
fn options(a: &SampleArgs) -> Result<GenerateOptions> {
    let o = options_unchecked(a)?;
    o.validate()?;
    Ok(o)
}

fn options_unchecked(a: &SampleArgs) -> Result<GenerateOptions> {
    Ok(GenerateOptions {
        max_tokens: a.max_tokens,
        sampler: sampler(a)?,
        stop: a.stop.clone(),
        stop_at_eos: !a.ignore_eos,
        schedule: parse_schedule(&a.schedule)?,
        cancel: None,
        context_shift: a.context_shift,
    })
}

/// A text session on the backend `--backend` names (the CPU reference too): the same
/// generation on each.
fn open(m: &ModelArgs, context: Option<usize>) -> Result<TextSession> {
    let path = model_source(&m.model);
    let backend = match m.choice()? {
        Choice::Reference => {
            let (cfg, w, tok) = plt::load::read_host(&path)?;
            let context = session_context(context, cfg.max_position_embeddings)?;
            let session = ReferenceSession::new(&cfg, Arc::new(w), context)?;
            eprintln!("{path} on the CPU reference (exact and slow)");
            return Ok(TextSession::with_backend(Box::new(session), tok.map(Arc::new), &path.to_string()));
        }
        Choice::Engine(b) => b,
    };
    let mut bar = Progress::new(1.0, true);
    let engine = m.engine(plt::load::open(&path)?, backend, &path.to_string(), &mut bar)?;
    let context = session_context(context, engine.cfg().max_position_embeddings)?;
    TextSession::new(Arc::new(engine), context)
}

/// Bytes of memory available to this process (Linux: `MemAvailable`), where the system says.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb.saturating_mul(1024))
}

/// The session context: `--context` when given (an error past the model's
/// max_position_embeddings, as at 0), else 2048 or the model's maximum if smaller.
fn session_context(asked: Option<usize>, max: usize) -> Result<usize> {
    match asked {
        Some(c) if c == 0 || c > max => Err(Error::Input(format!("--context {c} must be between 1 and the model's max_position_embeddings ({max})"))),
        Some(c) => Ok(c),
        None => Ok(2048.min(max)),
    }
}

fn print_piece(p: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(p.as_bytes()).is_ok() && out.flush().is_ok()
}

fn run_turn(ts: &mut TextSession, prompt: &str, opts: &GenerateOptions) -> Result<()> {
    let g = ts.generate_blocking(prompt, opts, &mut print_piece)?;
    let t = g.timings;
    let why = match &g.finish {
        FinishReason::Eos => "end of sequence".to_string(),
        FinishReason::Stop(s) => format!("stop string {s:?}"),
        FinishReason::MaxTokens => "max tokens".into(),
        FinishReason::Cancelled => "cancelled".into(),
        FinishReason::ContextFull => "context full".into(),
    };
    eprintln!(
        "\n[{} prompt tokens in {:.0} ms; {} tokens, {:.1} tok/s, {:.1} ms/token; stopped: {why}]",
        t.prompt_tokens,
        t.prefill_ms,
        t.generated_tokens,
        t.tokens_per_second(),
        t.ms_per_token()
    );
    Ok(())
}

fn generate(a: GenerateArgs) -> Result<()> {
    let opts = options(&a.sample)?;
    let mut ts = open(&a.model, a.sample.context)?;
    let prompt = if a.chat {
        ts.tokenizer()?.apply_chat_template(&[ChatMessage::new("user", &a.prompt)], true)?
    } else {
        a.prompt.clone()
    };
    if !a.chat {
        print_piece(&a.prompt);
    }
    run_turn(&mut ts, &prompt, &opts)
}

fn chat(a: ChatArgs) -> Result<()> {
    let opts = options(&a.sample)?;
    let mut ts = open(&a.model, a.sample.context)?;
    ts.tokenizer()?;
    let mut chat = Chat::new(None);
    chat.messages.extend(a.system.iter().map(|s| ChatMessage::new("system", s)));
    let tty = std::io::stdin().is_terminal();
    eprintln!("(chat: /reset starts over, /exit or end of input quits; context {} tokens)", ts.context());
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if tty {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.map_err(|e| Error::Input(format!("reading stdin: {e}")))?;
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                chat.reset(&mut ts)?;
                continue;
            }
            _ => {}
        }
        // A turn that fails is reported and the conversation goes on.
        match pollster::block_on(chat.turn(&mut ts, line, &opts, &mut print_piece)) {
            Ok(t) => {
                let g = &t.generation;
                let mut notes = Vec::new();
                if t.dropped > 0 {
                    notes.push(format!("context full: dropped the {} oldest message(s) and started over", t.dropped));
                } else if t.restarted {
                    notes.push("started over from the conversation".to_string());
                }
                if g.finish == FinishReason::ContextFull {
                    notes.push("reply cut at the context end; the next turn drops the oldest messages".to_string());
                }
                let notes = if notes.is_empty() { String::new() } else { format!("; {}", notes.join("; ")) };
                eprintln!("\n[{} tokens, {:.1} tok/s, context {}/{}{notes}]", g.timings.generated_tokens, g.timings.tokens_per_second(), ts.position(), ts.context());
            }
            Err(e) => eprintln!("\nerror: {}", printable(&e.to_string())),
        }
    }
    Ok(())
}

fn perplexity(a: PerplexityArgs) -> Result<()> {
    let path = model_source(&a.model.model);
    if a.max_chunks == Some(0) {
        return Err(Error::Input("--max-chunks must be at least 1".into()));
    }
    let mut file = std::fs::File::open(&a.file).map_err(|e| Error::io(&a.file, e))?;
    let meta = file.metadata().map_err(|e| Error::io(&a.file, e))?;
    if !meta.is_file() {
        return Err(Error::Input(format!("{} is not a regular file", a.file.display())));
    }
    let backend = match a.model.choice()? {
        Choice::Engine(b) => b,
        Choice::Reference => return Err(Error::Input("perplexity runs on --backend auto, gpu or cpu (the reference is too slow for a file)".into())),
    };
    let mut bar = Progress::new(1.0, true);
    let engine = a.model.engine(plt::load::open(&path)?, backend, &path.to_string(), &mut bar)?;
    let tok = engine.tokenizer()?;
    let max = engine.cfg().max_position_embeddings;
    let ctx = match a.context {
        Some(c) if c < 2 || c > max => return Err(Error::Input(format!("--context {c} must be between 2 and the model's max_position_embeddings ({max})"))),
        Some(c) => c,
        None => 256.min(max),
    };
    let v = engine.cfg().vocab_size;
    // Every position's logits of one chunk, from position 0.
    type ChunkLogits = Box<dyn FnMut(&[u32]) -> Result<Vec<f32>>>;
    let mut chunk_logits: ChunkLogits = match &engine.device {
        Device::Gpu { model, .. } => {
            let mut s = Session::new(model.clone(), SessionOptions { batch: 1, context: ctx, prefill_chunk: 128.min(ctx), kv_f16: engine.kv_f16 })?;
            Box::new(move |c: &[u32]| {
                s.reset(0)?;
                s.prefill_blocking(0, c, Logits::All)
            })
        }
        Device::Cpu(m) => {
            let mut s = CpuSession::new(m.clone(), CpuSessionOptions { context: ctx, kv_f16: engine.kv_f16 })?;
            Box::new(move |c: &[u32]| {
                plt::generate::StepSession::reset(&mut s)?;
                s.prefill_logits(c, true)
            })
        }
    };
    let (mut nll, mut n, mut chunks) = (0.0f64, 0usize, 0usize);
    let start = Instant::now();
    // The file is read, tokenised and scored a piece at a time: memory stays flat in its size.
    // Pieces end after a line break (the rest waits for the next read), so a token never
    // spans two pieces unless a line is longer than the read size.
    let total = meta.len().max(1) as f32;
    let mut text = TextPieces::new(&mut file);
    let mut ids: Vec<u32> = Vec::new();
    let mut read = 0u64;
    loop {
        let piece = text.next_piece().map_err(|e| Error::io(&a.file, e))?;
        let last = piece.is_none();
        if let Some((p, bytes)) = piece {
            ids.extend(tok.encode(&p, false)?);
            read += bytes as u64;
        }
        while ids.len() >= ctx || (last && ids.len() >= 2) {
            let c: Vec<u32> = ids.drain(..ctx.min(ids.len())).collect();
            let logits = chunk_logits(&c)?;
            for t in 0..c.len() - 1 {
                nll -= reference::logprob(&logits[t * v..(t + 1) * v], c[t + 1]);
                n += 1;
            }
            chunks += 1;
            bar.stage("perplexity", read as f32 / total);
            if Some(chunks) == a.max_chunks {
                break;
            }
        }
        if last || Some(chunks) == a.max_chunks {
            break;
        }
    }
    if n == 0 {
        return Err(Error::Input(format!("{} has fewer than 2 tokens", a.file.display())));
    }
    let ppl = (nll / n as f64).exp();
    println!(
        "{}",
        serde_json::json!({
            "file": a.file.display().to_string(), "tokens_scored": n, "chunks": chunks, "context": ctx,
            "mean_nll": nll / n as f64, "perplexity": ppl, "seconds": start.elapsed().as_secs_f64(),
            "backend": engine.backend().name(), "adapter": engine.describe(),
        })
    );
    Ok(())
}

/// A text file read in pieces of about `PIECE` bytes that end after a line break (or at a
/// character boundary when a line is longer), never splitting a UTF-8 character.
struct TextPieces<'f> {
    file: &'f mut std::fs::File,
    carry: Vec<u8>,
    eof: bool,
}

const PIECE: usize = 1 << 16;

impl<'f> TextPieces<'f> {
    fn new(file: &'f mut std::fs::File) -> Self {
        TextPieces { file, carry: Vec::new(), eof: false }
    }

    /// The next piece and the file bytes it covers; `None` at the end.
    fn next_piece(&mut self) -> std::io::Result<Option<(String, usize)>> {
        use std::io::Read;
        if !self.eof {
            let have = self.carry.len();
            self.carry.resize(have + PIECE, 0);
            let mut got = 0;
            while got < PIECE {
                let k = self.file.read(&mut self.carry[have + got..])?;
                if k == 0 {
                    self.eof = true;
                    break;
                }
                got += k;
            }
            self.carry.truncate(have + got);
        }
        if self.carry.is_empty() {
            return Ok(None);
        }
        let cut = if self.eof {
            self.carry.len()
        } else {
            match self.carry.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                // No line break: cut before an incomplete character at the end.
                None => (0..self.carry.len().min(4)).map(|k| self.carry.len() - k).find(|&i| std::str::from_utf8(&self.carry[..i]).is_ok()).unwrap_or(self.carry.len()),
            }
        };
        let rest = self.carry.split_off(cut);
        let bytes = std::mem::replace(&mut self.carry, rest);
        let text = String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8 text: {e}")))?;
        let n = text.len();
        Ok(Some((text, n)))
    }
}

fn info(src: &ModelSource, a: &InfoArgs) -> Result<()> {
    use plt::load::memory::{parse_bytes, MemoryOptions, MemoryPlan};
    let model = plt::load::open(src)?;
    let plan = &model.plan;
    let flag = |name: &str, v: &Option<String>| v.as_deref().map(|s| parse_bytes(s).map_err(|e| Error::Input(format!("{name}: {e}")))).transpose();
    let context = a.context.unwrap_or(plan.cfg.max_position_embeddings);
    let memory = MemoryPlan::new(
        plan,
        &MemoryOptions {
            context,
            batch: a.batch,
            prefill_chunk: 128.min(context),
            dtype: a.dtype.as_deref().map(parse_dtype).transpose()?,
            memory: flag("--memory", &a.memory)?,
            max_binding: flag("--max-binding", &a.max_binding)?,
        },
    )?;
    if a.plan {
        // A closed pipe (`| head`) ends the listing, not the program.
        // The plan's summary, the memory plan, then the metadata and every tensor.
        let (summary, full) = (plan.summary(), plan.to_string());
        let text = summary.clone() + &memory.text(if a.all_buffers { None } else { Some(8) }) + full.strip_prefix(summary.as_str()).unwrap_or(&full);
        // Names and metadata come from the file: escape what a terminal would act on.
        let text: String = text.lines().map(|l| printable(l).into_owned() + "\n").collect();
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
        return Ok(());
    }
    let cfg = &plan.cfg;
    let tok = model.tokenizer()?;
    let layer_kv = 2 * cfg.num_hidden_layers * cfg.kv_dim() * 4;
    let json = serde_json::json!({
        "model": src.to_string(),
        "config": cfg.to_json(),
        "parameters": cfg.num_params(),
        "stored_dtype": plan.stored_dtype.name(),
        "weight_bytes_f16": cfg.num_params() * 2,
        "weight_bytes_f32": cfg.num_params() * 4,
        "kv_bytes_per_token_f32": layer_kv,
        "kv_bytes_fixed_f32": cfg.kv_bytes(0, 4),
        "kv_bytes_at_max_positions_f32": cfg.kv_bytes(cfg.max_position_embeddings, 4),
        "load_plan": plan.summary_json(),
        "memory_plan": memory,
        "tokenizer": tok.as_ref().map(|t| serde_json::json!({
            "vocab": t.vocab_size(), "bos": t.bos, "eos": t.eos, "add_bos": t.add_bos, "chat_template": t.chat_template.is_some(),
        })),
    });
    println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
    Ok(())
}

fn quantize(a: QuantizeArgs) -> Result<()> {
    use plt::quantize::{FileType, QuantizeOptions, Search};
    let file_type = FileType::parse(&a.ty).ok_or_else(|| {
        let names: Vec<&str> = FileType::ALL.iter().map(|t| t.name()).collect();
        Error::Input(format!("--type: expected one of {}, got `{}`", names.join(", "), a.ty))
    })?;
    let threads = match a.threads {
        Some(0) => return Err(Error::Input("--threads must be at least 1".into())),
        Some(n) => n,
        None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    let opts = QuantizeOptions { file_type, threads, allow_requantize: a.allow_requantize, no_tokenizer: a.no_tokenizer, search: Search::Best };
    let t = Instant::now();
    let mut bar = Progress::new(1.0, true);
    let r = plt::quantize::quantize(&a.src, &a.out, &opts, &mut |f| bar.stage("quantising", f))?;
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    let by: Vec<String> = r.by_type().iter().map(|(t, n, b)| format!("{} {n} tensors {b} bytes", t.name())).collect();
    eprintln!("wrote {} ({}, {} bytes: {}) in {:.1} s", a.out.display(), file_type.name(), r.bytes, by.join(", "), t.elapsed().as_secs_f64());
    Ok(())
}

fn init(a: InitArgs) -> Result<()> {
    let mut cfg = plt::init::preset_config(a.preset.as_deref().unwrap_or("tiny"))?;
    let preset_heads = cfg.num_attention_heads;
    cfg.vocab_size = a.vocab.unwrap_or(cfg.vocab_size);
    cfg.hidden_size = a.hidden.unwrap_or(cfg.hidden_size);
    cfg.intermediate_size = a.intermediate.unwrap_or(cfg.intermediate_size);
    cfg.num_hidden_layers = a.layers.unwrap_or(cfg.num_hidden_layers);
    cfg.num_attention_heads = a.heads.unwrap_or(cfg.num_attention_heads);
    // Without a preset, Hkv follows --heads and Dh is D / H, as before presets existed.
    let plain = a.preset.is_none() || a.heads.is_some() || a.hidden.is_some();
    cfg.num_key_value_heads = match a.kv_heads {
        Some(k) => k,
        None if a.preset.is_none() || a.heads.is_some_and(|h| h != preset_heads) => cfg.num_attention_heads,
        None => cfg.num_key_value_heads,
    };
    cfg.head_dim = match a.head_dim {
        Some(d) => d,
        None if plain => cfg.hidden_size.checked_div(cfg.num_attention_heads).unwrap_or(0),
        None => cfg.head_dim,
    };
    cfg.max_position_embeddings = a.max_positions.unwrap_or(cfg.max_position_embeddings);
    cfg.rms_norm_eps = a.rms_norm_eps.unwrap_or(cfg.rms_norm_eps);
    cfg.rope_theta = a.rope_theta.unwrap_or(cfg.rope_theta);
    cfg.tie_word_embeddings |= a.tie_embeddings;
    cfg.bos_token_id = (cfg.vocab_size > 1).then_some(1);
    cfg.eos_token_ids = if cfg.vocab_size > 2 { vec![2] } else { vec![] };
    cfg.num_loops = a.loops.unwrap_or(cfg.num_loops);
    cfg.window_left = a.window.unwrap_or(cfg.window_left);
    cfg.normalize_per_loop &= !a.no_normalize_per_loop;
    cfg.emb_scale = a.emb_scale.unwrap_or(cfg.emb_scale);
    cfg.hidden_scale = a.hidden_scale.unwrap_or(cfg.hidden_scale);
    if let Some(g) = &a.gate {
        cfg.gate_mode = match g.as_str() {
            "query" => GateMode::Query,
            "hidden" => GateMode::Hidden,
            g => return Err(Error::Input(format!("--gate: expected query or hidden, got `{g}`"))),
        };
    }
    cfg.looping = match a.looping.as_str() {
        "plt" | "parallel" => Looping::Plt,
        "vanilla" => Looping::Vanilla,
        m => return Err(Error::Input(format!("--looping: expected plt or vanilla, got `{m}`"))),
    };
    // The config's checks name config.json fields: name the flag that sets each instead.
    cfg.validate().map_err(|e| {
        e.named_by_flag(&[
            ("vocab_size", "--vocab"),
            ("hidden_size", "--hidden"),
            ("intermediate_size", "--intermediate"),
            ("num_hidden_layers", "--layers"),
            ("num_attention_heads", "--heads"),
            ("num_key_value_heads", "--kv-heads"),
            ("head_dim", "--head-dim"),
            ("max_position_embeddings", "--max-positions"),
            ("rms_norm_eps", "--rms-norm-eps"),
            ("rope_theta", "--rope-theta"),
            ("plt_num_loops", "--loops"),
            ("plt_window_size", "--window"),
            ("plt_emb_scale", "--emb-scale"),
            ("plt_hidden_scale", "--hidden-scale"),
        ])
    })?;
    let ty = plt::gguf::GgmlType::parse_name(&a.dtype)
        .filter(|t| plt::gguf::writer::RANDOM_TYPES.contains(t))
        .ok_or_else(|| Error::Input(format!("--dtype: expected f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k or q6_k, got `{}`", a.dtype)))?;
    let ends_gguf = a.dir.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let quantised = DType::parse(&a.dtype).is_none();
    if a.gguf || quantised || ends_gguf {
        if !ends_gguf {
            return Err(Error::Input(format!(
                "{}: a GGUF model is one file and its name must end in .gguf{}",
                a.dir.display(),
                if quantised { format!(" (--dtype {} is written as GGUF)", a.dtype) } else { String::new() }
            )));
        }
        if a.shards != 1 {
            return Err(Error::Input("--shards: a GGUF model is one file".into()));
        }
        let t = Instant::now();
        let opts = plt::init::gguf::GgufInitOptions { seed: a.seed, matrix_type: ty, qkv_bias: a.qkv_bias };
        let r = plt::init::gguf::write_gguf(&a.dir, &cfg, &opts)?;
        let by: Vec<String> = r.by_type.iter().map(|(t, n, b)| format!("{} {n} tensors {b} bytes", t.name())).collect();
        eprintln!(
            "wrote {} ({} parameters, {} bytes: {}) in {:.1} s",
            a.dir.display(),
            cfg.num_params(),
            r.bytes,
            by.join(", "),
            t.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let opts = InitOptions { seed: a.seed, dtype: parse_dtype(&a.dtype)?, shards: a.shards, qkv_bias: a.qkv_bias };
    // A safetensors directory is built in memory (f32 values plus the encoded file): refuse a
    // size this machine cannot hold instead of aborting on the allocation.
    let need = (cfg.num_params() as u64).saturating_mul(4 + opts.dtype.size() as u64);
    if let Some(avail) = available_memory() {
        if need > avail {
            return Err(Error::Input(format!(
                "the model's {} parameters need about {} bytes of memory to write as safetensors, more than the {avail} available; \
                 write a GGUF file instead (a path ending in .gguf, or --gguf), which is written tensor by tensor",
                cfg.num_params(),
                need
            )));
        }
    }
    let w = random_weights(&cfg, &opts);
    write_model(&a.dir, &cfg, &w, &opts)?;
    eprintln!("wrote {} ({} parameters, {})", a.dir.display(), cfg.num_params(), opts.dtype.name());
    Ok(())
}

fn parse_tokens(s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<u32>().map_err(|_| Error::Input(format!("--tokens: `{t}` is not a token id"))))
        .collect()
}

fn score(a: ScoreArgs) -> Result<()> {
    let src = model_source(&a.model.model);
    let model = plt::load::open(&src)?;
    let cfg = model.plan.cfg.clone();
    let tokens = match (&a.tokens, &a.text) {
        (Some(t), _) => parse_tokens(t)?,
        (None, Some(text)) => model.tokenizer()?.ok_or_else(|| Error::Tokenizer("the model has no tokenizer.json".into()))?.encode(text, true)?,
        (None, None) => return Err(Error::Input("give --tokens or --text".into())),
    };
    if tokens.len() < 2 {
        return Err(Error::Input(format!("need at least 2 tokens to score, got {}", tokens.len())));
    }
    if let Some(t) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
        return Err(Error::Input(format!("token id {t} is out of range (vocab_size {})", cfg.vocab_size)));
    }
    let schedule = parse_schedule(&a.schedule)?;
    let n = tokens.len();
    if n > cfg.max_position_embeddings {
        return Err(Error::Input(format!("{n} tokens exceed max_position_embeddings ({})", cfg.max_position_embeddings)));
    }
    let prefill = match a.prefill {
        Some(p) if p == 0 || p > n - 1 => return Err(Error::Input(format!("--prefill {p} must be between 1 and {} (the tokens before the last)", n - 1))),
        Some(p) => p,
        None => (n / 2).clamp(1, n - 1),
    };
    // The JSON's `mode` values are stable: "parallel" names the fused schedule.
    let mode = if cfg.num_loops > 1 && cfg.looping == Looping::Vanilla {
        "vanilla"
    } else {
        match schedule {
            Schedule::Fused => "parallel",
            Schedule::Sequential => "sequential",
        }
    };
    let choice = a.model.choice()?;
    let reference = matches!(choice, Choice::Reference);
    // logits[t] predicts tokens[t+1]; the last token's logits are not needed.
    let (logits, adapter, backend): (Vec<Vec<f32>>, String, &str) = match choice {
        Choice::Reference => {
            let w = model.read_weights()?;
            (reference::forward(&cfg, &w, &tokens[..n - 1]), "cpu-reference".into(), "reference")
        }
        Choice::Engine(b) => {
            let mut bar = Progress::new(1.0, false);
            let engine = a.model.engine(model, b, &src.to_string(), &mut bar)?;
            let v = cfg.vocab_size;
            let mut out: Vec<Vec<f32>> = Vec::new();
            match &engine.device {
                Device::Gpu { model, .. } => {
                    let mut s = Session::new(model.clone(), SessionOptions { batch: 1, context: n, prefill_chunk: 128, kv_f16: engine.kv_f16 })?;
                    out.extend(s.prefill_blocking(0, &tokens[..prefill], Logits::All)?.chunks(v).map(|c| c.to_vec()));
                    for &t in &tokens[prefill..n - 1] {
                        out.push(s.decode_blocking(&[t], schedule, true)?);
                    }
                }
                Device::Cpu(m) => {
                    let mut s = CpuSession::new(m.clone(), CpuSessionOptions { context: n, kv_f16: engine.kv_f16 })?;
                    out.extend(s.prefill_logits(&tokens[..prefill], true)?.chunks(v).map(|c| c.to_vec()));
                    for &t in &tokens[prefill..n - 1] {
                        out.push(s.decode_logits(t, schedule)?);
                    }
                }
            }
            out.truncate(n - 1);
            (out, engine.describe(), engine.backend().name())
        }
    };
    let logprobs: Vec<f64> = (0..n - 1).map(|t| reference::logprob(&logits[t], tokens[t + 1])).collect();
    let json = serde_json::json!({
        "logprobs": logprobs,
        "backend": backend,
        "adapter": adapter,
        "mode": if reference { "reference" } else { mode },
        "tokens": tokens,
        "prefill": if reference { n - 1 } else { prefill },
    });
    println!("{json}");
    Ok(())
}
