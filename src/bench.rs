//! `plt bench`: decode latency and KV memory of PLT against the non-looped model and the vanilla
//! looped baseline on the same weights (PLT-SPEC sections 4, 5 and 6), on any adapter.
//!
//! For every model size and storage dtype, one set of random weights (`init::random_weights`:
//! a tensor's values depend only on the seed and its name) is uploaded as
//! - the non-looped model (L = 1),
//! - PLT-L for each L, decoded both fused (one pass of B*L rows) and sequentially (L passes),
//! - the vanilla looped model with L loops (L passes, L full caches),
//!
//! and for every batch size B and context length T one session is made, prefilled to just below
//! T, and decoded step by step at the last positions before T. Per step: wall time of one
//! `decode` call (one submit + the logits readback) and GPU time from timestamp queries where the
//! adapter has them. Fused and sequential steps of a PLT session alternate, so both see the same
//! positions. The report gives the ratios that matter (PLT fused / non-looped, vanilla / PLT fused,
//! sequential / fused), the weight bytes each step streams against a copy-bandwidth measurement
//! of the same adapter, KV-cache bytes (allocated, checked against section 4) and device memory.
//! Output: a JSON file (every figure), a markdown table on stdout, optionally an SVG plot.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::init::{random_weights, InitOptions};
use crate::model::{Schedule, GpuModel, Logits, Session, SessionOptions};
use crate::rng::Rng;
use crate::weights::{DType, Weights};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Arguments of `plt bench`. Lists are comma-separated. Defaults depend on the run: on a GPU
/// the full grid (sizes tiny,small,medium; L 2,3; B 1,4,16; T 128,1024,4096; f32,f16); on a
/// software adapter the same grid at size tiny, where sessions whose prefill is over 1024 tokens
/// are skipped (listed with the reason: on lavapipe prefill is most of the time), so that it ends
/// within minutes; `--quick` a CI-sized run.
/// Explicit flags always win.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BenchArgs {
    /// A CI-sized run (seconds on a software adapter): size micro, L 2, B 1,2, T 16,32, window 8,
    /// 2 measured steps.
    #[arg(long)]
    pub quick: bool,
    /// Model sizes: micro, tiny, small, medium, smollm2-135m, llama-850m, or `all` (sizes that do
    /// not fit the adapter are skipped with the reason). [default: GPU tiny,small,medium;
    /// software adapter tiny]
    #[arg(long, value_delimiter = ',')]
    pub preset: Vec<String>,
    /// A custom size (named `custom`; unset fields come from `tiny`): hidden size D.
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Custom size: layers N.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Custom size: query heads H.
    #[arg(long)]
    pub heads: Option<usize>,
    /// Custom size: key/value heads Hkv.
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// Custom size: head dim Dh (default D / H).
    #[arg(long)]
    pub head_dim: Option<usize>,
    /// Custom size: MLP width F.
    #[arg(long)]
    pub ffn: Option<usize>,
    /// Custom size: vocabulary V.
    #[arg(long)]
    pub vocab: Option<usize>,
    /// Loop counts L compared against L = 1 (each >= 2). [default: 2,3]
    #[arg(long, value_delimiter = ',')]
    pub loops: Vec<usize>,
    /// Batch sizes B. [default: 1,4,16]
    #[arg(long, value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Context lengths T: sessions hold T positions and decode at positions just below T.
    /// [default: 128,1024,4096]
    #[arg(long, value_delimiter = ',')]
    pub context: Vec<usize>,
    /// Device storage of the weight matrices: f32, f16. [default: f32,f16]
    #[arg(long, value_delimiter = ',')]
    pub dtype: Vec<String>,
    /// KV-cache storage: f32, f16, or `same` as the weight matrices. [default: same]
    #[arg(long)]
    pub kv_dtype: Option<String>,
    /// `left` of the PLT local window (PLT-SPEC plt_window_size). [default: 64; quick 8]
    #[arg(long)]
    pub window: Option<usize>,
    /// Measured decode steps per mode (after the warm-up). [default: GPU 24, software 12, quick 2]
    #[arg(long)]
    pub steps: Option<usize>,
    /// Warm-up decode steps per mode, not measured. [default: GPU 3, otherwise 1]
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Prompt tokens per prefill pass. [default: 128]
    #[arg(long)]
    pub prefill_chunk: Option<usize>,
    /// Skip sessions whose prefill (B * tokens before the decode window) exceeds this; 0 = no
    /// limit. [default: none on a GPU; 1024 on a software adapter, where prefill is the slow part]
    #[arg(long)]
    pub max_prefill_tokens: Option<usize>,
    /// Seconds the run may take: a (size, dtype, B, T) is started only if, at the pace so far,
    /// it should end in time; the rest are listed as skipped. The JSON is rewritten after each
    /// one, so a cut-off run keeps what it measured. 0 = no limit. [default: none on a GPU;
    /// 540 on a software adapter]
    #[arg(long)]
    pub time_limit: Option<f64>,
    /// Bytes per copy in the copy-bandwidth measurement, in MiB (capped by the adapter's binding
    /// limit). [default: GPU 512, software 16, quick 4]
    #[arg(long)]
    pub copy_mib: Option<u64>,
    /// Seed of the random weights and prompts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Pick the adapter whose name contains this (case-insensitive).
    #[arg(long)]
    pub adapter: Option<String>,
    /// Decode matmuls reduce by subgroup shuffles: auto (when the adapter has subgroups and the
    /// probe passes), on (an error without), off. For A/B runs. [default: auto]
    #[arg(long, default_value = "auto")]
    pub subgroups: String,
    /// Decode passes fold RMSNorm into the next matmul: auto (GPUs yes, CPU adapters no), on,
    /// off. For A/B runs. [default: auto]
    #[arg(long, default_value = "auto")]
    pub fuse_norms: String,
    /// Threads per output in the decode matmuls: auto (8 on CPU adapters and for matrices of
    /// 8,192 outputs or more, else 32), 8, 16 or 32. For A/B runs. [default: auto]
    #[arg(long, default_value = "auto")]
    pub lanes: String,
    /// Where the JSON report goes.
    #[arg(long, default_value = "bench.json")]
    pub json: PathBuf,
    /// Also write the markdown tables to this file (they always go to stdout).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Draw median decode latency against context length, per mode, as SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Read the full logits [B, V] back every decode step (`Session::decode`) instead of
    /// sampling on the GPU and reading back the B token ids (`decode_sample`, greedy: what
    /// generation does).
    #[arg(long)]
    pub logits: bool,
    /// Also time every dispatch of one extra fused/sequential step per session (GPU timestamps
    /// around each dispatch, `Session::set_profiling`), summed by kernel, into the JSON.
    #[arg(long)]
    pub profile: bool,
    /// No progress bar on stderr.
    #[arg(long)]
    pub no_progress: bool,
}

// ---------------------------------------------------------------------------------------------
// Model sizes

/// One model shape (PLT-SPEC symbols). Loops, loop mode and window are added per run.
#[derive(Clone, Debug, Serialize)]
pub struct Size {
    pub name: String,
    pub vocab: usize,     // V
    pub hidden: usize,    // D
    pub ffn: usize,       // F
    pub layers: usize,    // N
    pub heads: usize,     // H
    pub kv_heads: usize,  // Hkv
    pub head_dim: usize,  // Dh
    pub tied: bool,       // tie_word_embeddings
}

/// The presets, smallest first: (name, [V, D, F, N, H, Hkv], tied embeddings). `smollm2-135m`
/// and `llama-850m` have the shapes other runtimes were timed on (vocab 32000 for both, as in
/// those measurements; SmolLM2 ties its embeddings).
pub const PRESETS: &[(&str, [usize; 6], bool)] = &[
    //                V      D     F     N   H   Hkv
    ("micro", [64, 32, 64, 1, 2, 1], false),
    ("tiny", [512, 64, 192, 2, 4, 2], false),
    ("small", [4096, 256, 768, 6, 8, 2], false),
    ("medium", [16384, 512, 1536, 12, 8, 4], false),
    ("smollm2-135m", [32000, 576, 1536, 30, 9, 3], true),
    ("llama-850m", [32000, 2048, 5632, 16, 16, 4], false),
];

pub fn preset(name: &str) -> Option<Size> {
    PRESETS.iter().find(|(n, _, _)| *n == name).map(|&(n, [vocab, hidden, ffn, layers, heads, kv_heads], tied)| Size {
        name: n.to_string(),
        vocab,
        hidden,
        ffn,
        layers,
        heads,
        kv_heads,
        head_dim: hidden / heads,
        tied,
    })
}

impl Size {
    /// The config of this size with `loops` loops in `mode` ("parallel" or "vanilla"). Built
    /// through `Config::from_json` so that fields added later keep their defaults.
    pub fn config(&self, loops: usize, mode: &str, window: usize, max_positions: usize) -> Result<Config> {
        let v = serde_json::json!({
            "vocab_size": self.vocab, "hidden_size": self.hidden, "intermediate_size": self.ffn,
            "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads, "head_dim": self.head_dim,
            "max_position_embeddings": max_positions, "tie_word_embeddings": self.tied,
            "bos_token_id": 1, "eos_token_id": 2,
            "plt_num_loops": loops, "plt_window_size": [window, 0], "plt_loop_mode": mode,
        });
        let obj = v.as_object().ok_or_else(|| Error::Input("bench: config is not an object".into()))?;
        Config::from_json(obj).map_err(|e| Error::Input(format!("size `{}`: {e}", self.name)))
    }
}

// ---------------------------------------------------------------------------------------------
// What to run

/// The resolved settings of a run (defaults filled in), recorded in the JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub quick: bool,
    /// The adapter is a software one (its defaults were used where no flag was given).
    pub software: bool,
    pub sizes: Vec<Size>,
    pub loops: Vec<usize>,
    pub batch: Vec<usize>,
    pub context: Vec<usize>,
    pub dtype: Vec<String>,
    pub window: usize,
    pub steps: usize,
    pub warmup: usize,
    pub prefill_chunk: usize,
    pub max_prefill_tokens: Option<usize>,
    pub time_limit_s: Option<f64>,
    pub copy_bytes: u64,
    pub seed: u64,
    /// What a decode step reads back: "ids" (GPU sampling) or "logits".
    pub readback: String,
    /// KV-cache storage: "f32", "f16", or "same" (as the weight matrices).
    pub kv_dtype: String,
    pub profile: bool,
}

impl Settings {
    /// Positions a session decodes at: warm-up and measured steps for two alternating slots
    /// (fused and sequential for PLT; the same mode twice otherwise).
    pub fn decode_positions(&self) -> usize {
        2 * (self.warmup + self.steps) + if self.profile { 2 } else { 0 }
    }
}

/// Defaults that depend on the run: `--quick`, a software adapter (where a decode pass of even
/// a tiny model takes a good part of a second and prefill is the slow part), or a GPU.
struct Defaults {
    sizes: &'static [&'static str],
    loops: &'static [usize],
    batch: &'static [usize],
    context: &'static [usize],
    steps: usize,
    warmup: usize,
    window: usize,
    max_prefill_tokens: Option<usize>,
    time_limit_s: Option<f64>,
    copy_mib: u64,
}

const QUICK: Defaults = Defaults {
    sizes: &["micro"],
    loops: &[2],
    batch: &[1, 2],
    context: &[16, 32],
    steps: 2,
    warmup: 1,
    window: 8,
    max_prefill_tokens: None,
    time_limit_s: None,
    copy_mib: 4,
};
const SOFTWARE: Defaults = Defaults {
    sizes: &["tiny"],
    loops: &[2, 3],
    batch: &[1, 4, 16],
    context: &[128, 1024, 4096],
    steps: 12,
    warmup: 1,
    window: 64,
    max_prefill_tokens: Some(1024),
    time_limit_s: Some(540.0),
    copy_mib: 16,
};
const GPU: Defaults = Defaults {
    sizes: &["tiny", "small", "medium"],
    loops: &[2, 3],
    batch: &[1, 4, 16],
    context: &[128, 1024, 4096],
    steps: 24,
    warmup: 3,
    window: 64,
    max_prefill_tokens: None,
    time_limit_s: None,
    copy_mib: 512,
};

fn resolve(a: &BenchArgs, software: bool) -> Result<Settings> {
    auto_on_off("--subgroups", &a.subgroups)?;
    auto_on_off("--fuse-norms", &a.fuse_norms)?;
    parse_lanes(&a.lanes)?;
    let d = if a.quick {
        &QUICK
    } else if software {
        &SOFTWARE
    } else {
        &GPU
    };
    let or = |v: &Vec<usize>, def: &[usize]| if v.is_empty() { def.to_vec() } else { v.clone() };
    let mut names: Vec<String> = a.preset.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    let custom = a.hidden.is_some() || a.layers.is_some() || a.heads.is_some() || a.kv_heads.is_some() || a.head_dim.is_some() || a.ffn.is_some() || a.vocab.is_some();
    if names.is_empty() && !custom {
        names = d.sizes.iter().map(|s| s.to_string()).collect();
    }
    if names.iter().any(|n| n == "all") {
        names = PRESETS.iter().map(|(n, _, _)| n.to_string()).collect();
    }
    let mut sizes = Vec::new();
    for n in &names {
        let s = preset(n).ok_or_else(|| {
            let all: Vec<&str> = PRESETS.iter().map(|(n, _, _)| *n).collect();
            Error::Input(format!("--preset: unknown size `{n}` (expected one of {}, all)", all.join(", ")))
        })?;
        sizes.push(s);
    }
    if custom {
        let mut s = preset("tiny").ok_or_else(|| Error::Input("no tiny preset".into()))?;
        s.name = "custom".into();
        s.hidden = a.hidden.unwrap_or(s.hidden);
        s.layers = a.layers.unwrap_or(s.layers);
        s.heads = a.heads.unwrap_or(s.heads);
        s.kv_heads = a.kv_heads.unwrap_or(s.heads.min(s.kv_heads));
        s.ffn = a.ffn.unwrap_or(s.ffn);
        s.vocab = a.vocab.unwrap_or(s.vocab);
        s.head_dim = a.head_dim.unwrap_or(s.hidden.checked_div(s.heads).unwrap_or(0));
        s.config(1, "parallel", 64, 16)?;
        sizes.push(s);
    }
    let loops = or(&a.loops, d.loops);
    if let Some(l) = loops.iter().find(|&&l| l < 2) {
        return Err(Error::Input(format!("--loops: {l} is not a looped model (L = 1 is always measured as the baseline)")));
    }
    let batch = or(&a.batch, d.batch);
    let context = or(&a.context, d.context);
    if batch.contains(&0) || context.contains(&0) {
        return Err(Error::Input("--batch and --context values must be at least 1".into()));
    }
    let dtype = if a.dtype.is_empty() { vec!["f32".to_string(), "f16".to_string()] } else { a.dtype.clone() };
    for t in &dtype {
        if !matches!(t.as_str(), "f32" | "f16") {
            return Err(Error::Input(format!("--dtype: expected f32 or f16, got `{t}`")));
        }
    }
    let steps = a.steps.unwrap_or(d.steps);
    if steps == 0 {
        return Err(Error::Input("--steps must be at least 1".into()));
    }
    Ok(Settings {
        quick: a.quick,
        software,
        sizes,
        loops,
        batch,
        context,
        dtype,
        window: a.window.unwrap_or(d.window),
        steps,
        warmup: a.warmup.unwrap_or(d.warmup),
        prefill_chunk: a.prefill_chunk.unwrap_or(128).max(1),
        max_prefill_tokens: a.max_prefill_tokens.or(d.max_prefill_tokens).filter(|&m| m > 0),
        time_limit_s: a.time_limit.or(d.time_limit_s).filter(|&t| t > 0.0),
        copy_bytes: a.copy_mib.unwrap_or(d.copy_mib).max(1) << 20,
        seed: a.seed,
        readback: if a.logits { "logits".into() } else { "ids".into() },
        kv_dtype: match a.kv_dtype.as_deref().unwrap_or("same") {
            k @ ("f32" | "f16" | "same") => k.to_string(),
            k => return Err(Error::Input(format!("--kv-dtype: expected f32, f16 or same, got `{k}`"))),
        },
        profile: a.profile,
    })
}

/// A model variant uploaded from one set of weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// L = 1.
    NonLooped,
    /// PLT-L, decoded fused and sequentially.
    Plt(usize),
    /// The vanilla looped baseline with L loops.
    Vanilla(usize),
}

impl Kind {
    fn loops(self) -> usize {
        match self {
            Kind::NonLooped => 1,
            Kind::Plt(l) | Kind::Vanilla(l) => l,
        }
    }
    fn label(self) -> String {
        match self {
            Kind::NonLooped => "non-looped".into(),
            Kind::Plt(l) => format!("plt-{l}"),
            Kind::Vanilla(l) => format!("vanilla-{l}"),
        }
    }
    /// The modes (report rows) one session of this kind measures, one per alternating slot.
    fn modes(self) -> [&'static str; 2] {
        match self {
            Kind::NonLooped => ["non-looped"; 2],
            Kind::Plt(_) => ["plt-fused", "plt-sequential"],
            Kind::Vanilla(_) => ["vanilla"; 2],
        }
    }
    fn config(self, s: &Size, set: &Settings, max_positions: usize) -> Result<Config> {
        match self {
            Kind::NonLooped => s.config(1, "parallel", set.window, max_positions),
            Kind::Plt(l) => s.config(l, "parallel", set.window, max_positions),
            Kind::Vanilla(l) => s.config(l, "vanilla", set.window, max_positions),
        }
    }
}

/// One (size, dtype, B, T): a session per model variant.
#[derive(Clone, Debug)]
struct Unit {
    size: usize,
    dtype: String,
    batch: usize,
    context: usize,
    /// Relative cost, for the progress estimate.
    weight: f64,
}

// ---------------------------------------------------------------------------------------------
// The report

/// median, p90 (nearest rank), mean, min, max of a sample, in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Dist {
    pub n: usize,
    pub median: f64,
    pub p90: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl Dist {
    pub fn of(xs: &[f64]) -> Option<Dist> {
        if xs.is_empty() {
            return None;
        }
        let mut s = xs.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 { s[n / 2] } else { 0.5 * (s[n / 2 - 1] + s[n / 2]) };
        let p90 = s[((0.9 * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some(Dist { n, median, p90, mean: s.iter().sum::<f64>() / n as f64, min: s[0], max: s[n - 1] })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Prefill {
    /// Prompt tokens prefilled, all sequences together.
    pub tokens: usize,
    /// Passes over the weights per prompt chunk (L for looped models).
    pub passes_per_chunk: usize,
    pub wall_s: f64,
    pub tokens_per_s: f64,
    pub gpu_s: Option<f64>,
    pub gpu_tokens_per_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Kv {
    /// PLT-SPEC section 4 at the session's context T, times B, with the element size the
    /// session actually uses (`elem_bytes`; 4 where it could not be measured).
    pub spec_bytes: u64,
    pub spec_bytes_per_sequence: u64,
    /// Element size of the cache: allocated bytes / the section 4 element count.
    pub elem_bytes: Option<u64>,
    /// Bytes of the session's KV buffers (global cache + rings, or L full caches for vanilla),
    /// from the device allocator's report (buffers labelled `*kv_cache*` / `*ring*`); null where
    /// the backend gives no report.
    pub allocated_bytes: Option<u64>,
    /// How many buffers those are (N, or 2N with PLT's rings).
    pub buffers: u64,
    /// allocated = spec, up to the allocator's alignment (256 bytes per buffer at most).
    pub matches_spec: Option<bool>,
    /// The section 4 formula used, in words.
    pub formula: String,
}

/// One mode at one (size, dtype, L, B, T).
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub preset: String,
    pub dtype: String,
    /// non-looped | plt-fused | plt-sequential | vanilla
    pub mode: String,
    pub loops: usize,
    pub batch: usize,
    pub context: usize,
    /// Passes over the weights and rows computed per decode step (from the session's stats).
    pub passes: usize,
    pub rows: usize,
    pub warmup: usize,
    /// Decode positions [first, last] of the measured steps.
    pub positions: [usize; 2],
    pub wall_ms: Dist,
    pub gpu_ms: Option<Dist>,
    /// Host time of a step up to its submit (recording the dispatches, submitting): what the
    /// CPU adds per step however fast the GPU is (native builds).
    pub host_ms: Option<Dist>,
    /// Dispatches per step.
    pub dispatches: usize,
    /// Every measured step, in the order run (ms).
    pub wall_samples_ms: Vec<f64>,
    pub gpu_samples_ms: Option<Vec<f64>>,
    pub prefill: Prefill,
    pub kv: Kv,
    /// Weights uploaded for this model (the runtime's allocation counter).
    pub model_bytes: u64,
    /// Everything the session allocated (the runtime's counter): its peak, since nothing is
    /// allocated per token; `allocated_during_decode` shows that.
    pub session_bytes: u64,
    /// The same from the device allocator (with its alignment), where the backend reports it.
    pub session_device_bytes: Option<u64>,
    pub allocated_during_decode: u64,
    /// Seconds to create and prefill the session (shared by the two modes of a PLT session).
    pub setup_s: f64,
    /// Weight bytes one step reads: passes * layer matrices + the lm_head once.
    pub weight_bytes_per_step: u64,
    /// weight_bytes_per_step / median step time, GB/s (1e9 bytes).
    pub weight_gbps_wall: f64,
    pub weight_gbps_gpu: Option<f64>,
    /// Achieved weight bandwidth over the adapter's copy bandwidth (GPU time where there is
    /// one, else wall).
    pub fraction_of_copy_bw: f64,
    /// With `--profile`: GPU milliseconds of one step by kernel (summed over layers), in
    /// dispatch order. Each dispatch then runs in its own pass, so the sum exceeds a normal step.
    pub profile: Option<Vec<(String, f64)>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Pair {
    pub wall: f64,
    pub gpu: Option<f64>,
}

/// The ratios of one (size, dtype, L, B, T), quotients of the records' median step times.
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    pub preset: String,
    pub dtype: String,
    pub loops: usize,
    pub batch: usize,
    pub context: usize,
    pub plt_fused_over_nonlooped: Pair,
    pub vanilla_over_plt_fused: Pair,
    pub sequential_over_fused: Pair,
    /// KV bytes (spec): PLT / non-looped and vanilla / PLT.
    pub kv_plt_over_nonlooped: f64,
    pub kv_vanilla_over_plt: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Skip {
    pub preset: String,
    pub dtype: String,
    pub model: String,
    pub batch: Option<usize>,
    pub context: Option<usize>,
    pub reason: String,
}

impl Skip {
    fn new(s: &Size, dtype: &str, kind: Kind, batch: usize, context: usize, reason: &str) -> Skip {
        Skip {
            preset: s.name.clone(),
            dtype: dtype.to_string(),
            model: kind.label(),
            batch: Some(batch),
            context: Some(context),
            reason: reason.to_string(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    pub preset: String,
    pub dtype: String,
    /// non-looped | plt-L | vanilla-L
    pub model: String,
    pub loops: usize,
    pub parameters: usize,
    /// `GpuModel::weight_bytes`: one pass over every matrix plus the lm_head.
    pub weight_bytes: u64,
    pub model_bytes: u64,
    pub upload_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CopyBw {
    /// Bytes per copy (each copy reads and writes this many).
    pub bytes: u64,
    pub copies: u64,
    /// `copy_buffer_to_buffer`, (read + write bytes) / wall time of a submit of `copies` copies;
    /// best of 5 rounds, and their median.
    pub buffer_copy_gbps: f64,
    pub buffer_copy_gbps_median: f64,
    /// A vec4 copy kernel, (read + write bytes) / time, GPU timestamps where available.
    pub shader_copy_gbps: f64,
    pub shader_copy_gbps_median: f64,
    pub shader_copy_timer: String,
    /// The adapter's limit used for the fractions: the best of the above.
    pub gbps: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub vendor: u32,
    pub device: u32,
    pub describe: String,
    pub software: bool,
    pub timestamps: bool,
    /// What the adapter offers / what the runtime's device enabled.
    pub adapter_features: Vec<String>,
    pub device_features: Vec<String>,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    /// Whether the device allocator reports allocations (needed for `kv.allocated_bytes`).
    pub allocator_report: bool,
    /// The subgroup size when decode matmuls reduce by subgroup shuffles (else null).
    pub subgroup_reduction: Option<u32>,
    /// Decode passes fold RMSNorm into the next matmul.
    pub fuse_norms: bool,
    /// `--lanes` (null: auto, per matmul: `Gpu::decode_lanes`).
    pub decode_lanes: Option<u32>,
}

/// The machine the run was on: on a software adapter the CPU is the device, and a busy one
/// slows every figure (load averages from /proc/loadavg where there is one).
#[derive(Clone, Debug, Serialize)]
pub struct Host {
    pub os: String,
    pub arch: String,
    pub cpus: usize,
    pub loadavg_start: Option<[f64; 3]>,
    pub loadavg_end: Option<[f64; 3]>,
}

fn loadavg() -> Option<[f64; 3]> {
    let t = std::fs::read_to_string("/proc/loadavg").ok()?;
    let v: Vec<f64> = t.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect();
    (v.len() == 3).then(|| [v[0], v[1], v[2]])
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: u32,
    pub plt_version: String,
    pub command: Vec<String>,
    /// False while the run is still going (the file is rewritten after every session).
    pub complete: bool,
    pub elapsed_s: f64,
    pub adapter: AdapterReport,
    pub host: Host,
    pub settings: Settings,
    pub copy_bandwidth: CopyBw,
    pub models: Vec<ModelInfo>,
    pub results: Vec<Record>,
    pub ratios: Vec<Ratio>,
    pub skipped: Vec<Skip>,
}

// ---------------------------------------------------------------------------------------------
// The run

pub fn run(args: &BenchArgs) -> Result<()> {
    let t0 = Instant::now();
    resolve(args, false)?; // argument errors before opening the device
    let gpu = Arc::new(Gpu::new_blocking(&GpuOptions {
        adapter: args.adapter.clone(),
        subgroups: auto_on_off("--subgroups", &args.subgroups)?,
        fuse_norms: auto_on_off("--fuse-norms", &args.fuse_norms)?,
        decode_lanes: parse_lanes(&args.lanes)?,
        ..Default::default()
    })?);
    let set = resolve(args, gpu.is_software())?;
    let adapter = adapter_report(&gpu);
    eprintln!("plt bench on {}", gpu.describe());
    eprintln!("{}", gpu.kernel_summary());
    let copy = copy_bandwidth(&gpu, set.copy_bytes)?;
    eprintln!(
        "copy bandwidth: {:.1} GB/s (buffer copy {:.1}, copy kernel {:.1} by {})",
        copy.gbps, copy.buffer_copy_gbps, copy.shader_copy_gbps, copy.shader_copy_timer
    );

    let mut report = Report {
        schema: 1,
        plt_version: env!("CARGO_PKG_VERSION").to_string(),
        command: std::env::args().collect(),
        complete: false,
        elapsed_s: 0.0,
        adapter,
        host: Host {
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            loadavg_start: loadavg(),
            loadavg_end: None,
        },
        settings: set.clone(),
        copy_bandwidth: copy,
        models: Vec::new(),
        results: Vec::new(),
        ratios: Vec::new(),
        skipped: Vec::new(),
    };

    // Plan: one unit per (size, dtype, B, T), measuring every model variant there; what cannot
    // run is listed as skipped with the reason.
    let room = set.decode_positions();
    let max_ctx = set.context.iter().copied().max().unwrap_or(1);
    let mut kinds = vec![Kind::NonLooped];
    kinds.extend(set.loops.iter().map(|&l| Kind::Plt(l)));
    kinds.extend(set.loops.iter().map(|&l| Kind::Vanilla(l)));
    let mut units = Vec::new();
    for (si, s) in set.sizes.iter().enumerate() {
        for dt in &set.dtype {
            for &b in &set.batch {
                for &t in &set.context {
                    let reason = if t <= room {
                        Some(format!("context {t} leaves no prompt before {room} decode positions (--steps/--warmup)"))
                    } else {
                        set.max_prefill_tokens
                            .filter(|&m| b * (t - room) > m)
                            .map(|m| format!("prefill of {} tokens is over --max-prefill-tokens {m}", b * (t - room)))
                    };
                    if let Some(reason) = reason {
                        for k in &kinds {
                            report.skipped.push(Skip::new(s, dt, *k, b, t, &reason));
                        }
                        continue;
                    }
                    // Cost model for the progress bar: prefill token-passes (attention grows with
                    // T) plus the decode steps, over every variant.
                    let l_all: usize = kinds.iter().map(|k| k.loops()).sum();
                    let params = (s.layers * (4 * s.hidden * s.hidden + 3 * s.hidden * s.ffn) + s.vocab * s.hidden) as f64;
                    let w = l_all as f64 * ((b * (t - room)) as f64 * (params + (t * s.layers * s.kv_heads * s.head_dim) as f64) + (room * b) as f64 * params)
                        + 2e7;
                    units.push(Unit { size: si, dtype: dt.clone(), batch: b, context: t, weight: w });
                }
            }
        }
    }
    let mut progress = Progress::new(units.iter().map(|u| u.weight).sum(), !args.no_progress);
    // Would work of this weight, at the pace so far, end after the time limit?
    let over_time = |p: &Progress, w: f64| {
        set.time_limit_s.is_some_and(|lim| {
            let pace = if p.done > 0.0 { p.start.elapsed().as_secs_f64() / p.done } else { 0.0 };
            t0.elapsed().as_secs_f64() + w * pace > lim
        })
    };

    // One set of weights per size (generated once, with the PLT gates; the non-looped and vanilla
    // uploads leave them out), uploaded once per (dtype, variant); then per (B, T) one session
    // per variant, all prefilled, and their decode steps interleaved round-robin, so that every
    // variant sees the same conditions (a busy machine, clocks) at the same time.
    let mut i = 0;
    while i < units.len() {
        let (si, dt) = (units[i].size, units[i].dtype.clone());
        let group_end = (i..units.len()).find(|&j| units[j].size != si || units[j].dtype != dt).unwrap_or(units.len());
        let s = &set.sizes[si];
        let mut models: Vec<(Kind, Arc<GpuModel>, u64)> = Vec::new();
        if !over_time(&progress, 0.0) {
            for &kind in &kinds {
                progress.show(&format!("{} {} {}: uploading weights", s.name, dt, kind.label()), kind == Kind::NonLooped);
                match upload(&gpu, &set, s, &dt, kind, max_ctx, &mut report) {
                    Ok(m) => models.push((kind, m, report.models.last().map(|m| m.model_bytes).unwrap_or(0))),
                    Err(e) => {
                        for u in &units[i..group_end] {
                            report.skipped.push(Skip::new(s, &dt, kind, u.batch, u.context, &format!("model does not fit: {e}")));
                        }
                    }
                }
            }
        }
        for u in units[i..group_end].iter().cloned() {
            if over_time(&progress, u.weight) {
                for k in &kinds {
                    report.skipped.push(Skip::new(s, &dt, *k, u.batch, u.context, &format!("--time-limit {:.0} s: would end too late at the pace so far", set.time_limit_s.unwrap_or(0.0))));
                }
                progress.advance(u.weight);
                continue;
            }
            let what = format!("{} {} B={} T={}", s.name, dt, u.batch, u.context);
            let mut live = Vec::new();
            for (kind, model, model_bytes) in &models {
                progress.show(&format!("{what}: {} prefill", kind.label()), *kind == Kind::NonLooped);
                match open(&gpu, &set, model, *kind, &u, *model_bytes) {
                    Ok(l) => live.push(l),
                    Err(e) => report.skipped.push(Skip::new(s, &dt, *kind, u.batch, u.context, &format!("session failed: {e}"))),
                }
            }
            progress.show(&format!("{what}: decoding"), false);
            match decode_all(&gpu, &set, &mut live) {
                Ok(()) => {
                    for l in live {
                        report.results.extend(l.records(s, &set));
                    }
                }
                Err(e) => {
                    for l in &live {
                        report.skipped.push(Skip::new(s, &dt, l.kind, u.batch, u.context, &format!("decode failed: {e}")));
                    }
                }
            }
            settle(&gpu);
            progress.advance(u.weight);
            report.ratios = ratios(&report.results);
            report.elapsed_s = t0.elapsed().as_secs_f64();
            write_json(&args.json, &report)?;
        }
        drop(models);
        settle(&gpu);
        i = group_end;
    }
    progress.finish();

    report.ratios = ratios(&report.results);
    report.elapsed_s = t0.elapsed().as_secs_f64();
    report.host.loadavg_end = loadavg();
    report.complete = true;
    write_json(&args.json, &report)?;
    let md = markdown(&report);
    print!("{md}");
    if let Some(p) = &args.markdown {
        std::fs::write(p, &md).map_err(|e| Error::Io { path: p.clone(), source: e })?;
    }
    if let Some(p) = &args.plot {
        std::fs::write(p, svg(&report)).map_err(|e| Error::Io { path: p.clone(), source: e })?;
    }
    eprintln!(
        "wrote {}{}{} in {:.1} s",
        args.json.display(),
        args.markdown.as_ref().map(|p| format!(", {}", p.display())).unwrap_or_default(),
        args.plot.as_ref().map(|p| format!(", {}", p.display())).unwrap_or_default(),
        report.elapsed_s
    );
    Ok(())
}

/// Weights of each size, generated once (the last size's are kept between model uploads).
fn weights_for(s: &Size, set: &Settings) -> Result<Arc<Weights>> {
    use std::sync::Mutex;
    static CACHE: Mutex<Option<(String, u64, Arc<Weights>)>> = Mutex::new(None);
    let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let key = format!("{s:?} w{}", set.window);
    if let Some((k, seed, w)) = c.as_ref() {
        if *k == key && *seed == set.seed {
            return Ok(w.clone());
        }
    }
    *c = None; // free the previous size's weights first
    // With the gates of PLT (any L: gates belong to the physical layer); in f32, rounded to f16
    // by the f16 upload.
    let cfg = s.config(2, "parallel", set.window, 2)?;
    let w = Arc::new(random_weights(&cfg, &InitOptions { seed: set.seed, dtype: DType::F32, shards: 1, qkv_bias: false }));
    *c = Some((key, set.seed, w.clone()));
    Ok(w)
}

fn upload(gpu: &Arc<Gpu>, set: &Settings, s: &Size, dt: &str, kind: Kind, max_ctx: usize, report: &mut Report) -> Result<Arc<GpuModel>> {
    let cfg = kind.config(s, set, max_ctx)?;
    let w = weights_for(s, set)?;
    let dtype = if dt == "f16" { DType::F16 } else { DType::F32 };
    settle(gpu);
    let before = gpu.allocated_bytes();
    let t = Instant::now();
    let model = GpuModel::new(gpu.clone(), &cfg, &w, Some(dtype))?;
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(e.to_string()))?;
    gpu.check()?;
    report.models.push(ModelInfo {
        preset: s.name.clone(),
        dtype: dt.to_string(),
        model: kind.label(),
        loops: kind.loops(),
        parameters: cfg.num_params(),
        weight_bytes: model.weight_bytes(),
        model_bytes: gpu.allocated_bytes() - before,
        upload_s: t.elapsed().as_secs_f64(),
    });
    Ok(Arc::new(model))
}

/// Waits for the device to finish, so dropped buffers are really freed before the next
/// measurement of the allocator.
fn settle(gpu: &Gpu) {
    let _ = gpu.device.poll(wgpu::PollType::wait_indefinitely());
}

/// Live device allocations whose label matches `pred`: (bytes, count), and the total bytes.
fn allocator_bytes(gpu: &Gpu, pred: impl Fn(&str) -> bool) -> Option<(u64, u64, u64)> {
    let r = gpu.device.generate_allocator_report()?;
    let m = r.allocations.iter().filter(|a| pred(&a.name));
    Some((m.clone().map(|a| a.size).sum(), m.count() as u64, r.total_allocated_bytes))
}

/// The session's KV buffers, by the labels `model.rs` gives them: `layers.{i}.kv_cache` (the
/// global cache, or the L full caches of vanilla) and `layers.{i}.ring` (PLT's local rings).
fn is_kv_label(name: &str) -> bool {
    name.starts_with("layers.") && (name.ends_with(".kv_cache") || name.ends_with(".ring"))
}

/// One session being measured: a model variant at one (B, T).
struct Live {
    kind: Kind,
    dtype: String,
    model: Arc<GpuModel>,
    session: Session,
    batch: usize,
    context: usize,
    prefill: Prefill,
    kv: Kv,
    model_bytes: u64,
    session_bytes: u64,
    session_device_bytes: Option<u64>,
    setup_s: f64,
    /// Next input token of each sequence.
    tokens: Vec<u32>,
    /// Per slot (fused, sequential): wall and GPU ms of the measured steps, (passes, rows).
    wall: [Vec<f64>; 2],
    gpu: [Option<Vec<f64>>; 2],
    /// Host ms up to the submit, and dispatches, per measured step.
    host: [Vec<f64>; 2],
    dispatches: [usize; 2],
    shape: [(usize, usize); 2],
    allocated_during_decode: u64,
    profile: [Option<Vec<(String, f64)>>; 2],
}

/// Creates a session of `model` for (B, T), measures its memory, and prefills every sequence
/// to T - room (the prefill figures).
fn open(gpu: &Arc<Gpu>, set: &Settings, model: &Arc<GpuModel>, kind: Kind, u: &Unit, model_bytes: u64) -> Result<Live> {
    let cfg = model.cfg.clone();
    let (b, t) = (u.batch, u.context);
    let p = t - set.decode_positions();

    settle(gpu);
    let t_setup = Instant::now();
    let before = gpu.allocated_bytes();
    let dev_before = allocator_bytes(gpu, is_kv_label);
    let kv_f16 = set.kv_dtype == "f16" || (set.kv_dtype == "same" && u.dtype == "f16");
    let mut session = Session::new(model.clone(), SessionOptions { batch: b, context: t, prefill_chunk: set.prefill_chunk, kv_f16 })?;
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(e.to_string()))?;
    gpu.check()?;
    let session_bytes = gpu.allocated_bytes() - before;
    let dev_after = allocator_bytes(gpu, is_kv_label);
    let (kv_alloc, kv_buffers, session_dev) = match (dev_before, dev_after) {
        (Some((k0, n0, t0)), Some((k1, n1, t1))) => (Some(k1.saturating_sub(k0)), n1.saturating_sub(n0), Some(t1.saturating_sub(t0))),
        _ => (None, 0, None),
    };

    // KV bytes: section 4 per sequence at T, with the element size the allocation implies. The
    // allocator may round each buffer up to its alignment: allow up to 256 bytes per buffer.
    let elems = cfg.kv_bytes(t, 1) as u64 * b as u64;
    let slack = 256 * kv_buffers;
    let fits = |a: u64, e: u64| a >= e * elems && a - e * elems <= slack;
    let elem = kv_alloc.and_then(|a| [4u64, 2, 1].into_iter().find(|&e| fits(a, e)));
    let spec_per_seq = cfg.kv_bytes(t, elem.unwrap_or(4) as usize) as u64;
    let kv = Kv {
        spec_bytes: spec_per_seq * b as u64,
        spec_bytes_per_sequence: spec_per_seq,
        elem_bytes: elem,
        allocated_bytes: kv_alloc,
        buffers: kv_buffers,
        matches_spec: kv_alloc.map(|a| fits(a, elem.unwrap_or(4))),
        formula: match kind {
            Kind::NonLooped => "2*N*Hkv*Dh*s*T".into(),
            Kind::Plt(_) => "2*N*Hkv*Dh*s*(T + (L-1)*(left+1))".into(),
            Kind::Vanilla(_) => "2*N*Hkv*Dh*s*L*T".into(),
        },
    };

    // Prefill: random prompts, chunk by chunk so that every chunk's GPU time is summed. The same
    // prompts for every variant (the seed depends on B and T only).
    let mut rng = Rng::new(set.seed ^ 0x5eed ^ ((b as u64) << 32) ^ t as u64);
    let v = cfg.vocab_size as u64;
    let chunk = set.prefill_chunk;
    let prompts: Vec<Vec<u32>> = (0..b).map(|_| (0..p).map(|_| rng.below(v) as u32).collect()).collect();
    // A short untimed prefill first (first use of the prefill pipelines: more rows than the
    // decode kernels take), then start over.
    session.prefill_blocking(0, &prompts[0][..p.min(chunk).min(32)], Logits::None)?;
    session.reset(0)?;
    settle(gpu);
    let mut gpu_ns = Some(0u64);
    let tp = Instant::now();
    for (seq, prompt) in prompts.iter().enumerate() {
        for c in prompt.chunks(chunk) {
            session.prefill_blocking(seq, c, Logits::None)?;
            gpu_ns = gpu_ns.zip(session.stats.gpu_ns).map(|(a, x)| a + x);
        }
    }
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(e.to_string()))?;
    gpu.check()?;
    let wall_s = tp.elapsed().as_secs_f64();
    let prefill = Prefill {
        tokens: b * p,
        passes_per_chunk: session.stats.passes,
        wall_s,
        tokens_per_s: (b * p) as f64 / wall_s.max(1e-12),
        gpu_s: gpu_ns.map(|n| n as f64 * 1e-9),
        gpu_tokens_per_s: gpu_ns.map(|n| (b * p) as f64 / (n as f64 * 1e-9).max(1e-12)),
    };
    Ok(Live {
        kind,
        dtype: u.dtype.clone(),
        model: model.clone(),
        session,
        batch: b,
        context: t,
        prefill,
        kv,
        model_bytes,
        session_bytes,
        session_device_bytes: session_dev,
        setup_s: t_setup.elapsed().as_secs_f64(),
        tokens: (0..b).map(|_| rng.below(v) as u32).collect(),
        wall: [vec![], vec![]],
        gpu: [Some(vec![]), Some(vec![])],
        shape: [(0, 0); 2],
        allocated_during_decode: 0,
        profile: [None, None],
        host: [Vec::new(), Vec::new()],
        dispatches: [0, 0],
    })
}

/// One decode step of every sequence of `l`: wall ms, and the next tokens (greedy).
fn step(l: &mut Live, schedule: Schedule, logits_back: bool) -> Result<f64> {
    let b = l.batch;
    let ts = Instant::now();
    let (ms, next) = if logits_back {
        let logits = l.session.decode_blocking(&l.tokens, schedule, true)?;
        let ms = ts.elapsed().as_secs_f64() * 1e3;
        // Greedy next tokens (outside the timing).
        (ms, logits.chunks(l.model.cfg.vocab_size).map(crate::sampling::argmax).collect::<Vec<u32>>())
    } else {
        let (ids, _) = pollster::block_on(l.session.decode_sample(&l.tokens, schedule, false))?;
        (ts.elapsed().as_secs_f64() * 1e3, ids)
    };
    if next.len() != b {
        return Err(Error::Gpu(format!("decode returned {} tokens for a batch of {b}", next.len())));
    }
    l.tokens = next;
    Ok(ms)
}

/// Decodes the sessions' windows, round-robin over the sessions step by step; within a session
/// the two slots alternate (fused / sequential for PLT). Warm-up steps first.
fn decode_all(gpu: &Gpu, set: &Settings, live: &mut [Live]) -> Result<()> {
    let schedules = [Schedule::Fused, Schedule::Sequential];
    let logits_back = set.readback == "logits";
    let timed = 2 * (set.warmup + set.steps);
    let alloc: Vec<u64> = live.iter().map(|_| gpu.allocated_bytes()).collect();
    for k in 0..timed {
        let slot = k % 2;
        for l in live.iter_mut() {
            let ms = step(l, schedules[slot], logits_back)?;
            if k >= 2 * set.warmup {
                l.wall[slot].push(ms);
                let g = l.session.stats.gpu_ns;
                l.gpu[slot] = l.gpu[slot].take().zip(g).map(|(mut xs, n)| {
                    xs.push(n as f64 * 1e-6);
                    xs
                });
            }
            l.shape[slot] = (l.session.stats.passes, l.session.stats.rows);
            if k >= 2 * set.warmup {
                if let Some(n) = l.session.stats.host_ns {
                    l.host[slot].push(n as f64 * 1e-6);
                }
                l.dispatches[slot] = l.session.stats.dispatches;
            }
        }
    }
    for (l, a) in live.iter_mut().zip(alloc) {
        l.allocated_during_decode = gpu.allocated_bytes() - a;
    }
    // One profiled step per slot (outside the statistics).
    if set.profile && gpu.has_timestamps() {
        for l in live.iter_mut() {
            l.session.set_profiling(true)?;
            for (slot, &schedule) in schedules.iter().enumerate() {
                step(l, schedule, logits_back)?;
                let mut by: Vec<(String, f64)> = Vec::new();
                for (label, ms) in l.session.profile() {
                    match by.iter_mut().find(|(x, _)| x == label) {
                        Some(e) => e.1 += ms,
                        None => by.push((label.clone(), *ms)),
                    }
                }
                l.profile[slot] = Some(by);
            }
            l.session.set_profiling(false)?;
        }
    }
    Ok(())
}

impl Live {
    /// One record per mode the session measured.
    fn records(self, s: &Size, set: &Settings) -> Vec<Record> {
        let cfg = &self.model.cfg;
        let modes = self.kind.modes();
        let p = self.context - set.decode_positions();
        let timed = 2 * (set.warmup + set.steps);
        let wbytes = self.model.weight_bytes();
        let head = (cfg.vocab_size * cfg.hidden_size * self.model.dtype.size()) as u64;
        let layer_bytes = wbytes.saturating_sub(head);
        let pooled = modes[0] == modes[1];
        let slots: &[usize] = if pooled { &[0] } else { &[0, 1] };
        let mut out = Vec::new();
        for &slot in slots {
            // Single-mode sessions measured both slots with the same mode: pool them.
            let host = if pooled { [self.host[0].as_slice(), self.host[1].as_slice()].concat() } else { self.host[slot].clone() };
            let (w, g): (Vec<f64>, Option<Vec<f64>>) = if pooled {
                let w = [self.wall[0].as_slice(), self.wall[1].as_slice()].concat();
                let g = self.gpu[0].as_ref().zip(self.gpu[1].as_ref()).map(|(a, b)| [a.as_slice(), b.as_slice()].concat());
                (w, g)
            } else {
                (self.wall[slot].clone(), self.gpu[slot].clone())
            };
            let Some(wall_ms) = Dist::of(&w) else { continue };
            let gpu_ms = g.as_deref().and_then(Dist::of);
            let (passes, rows) = self.shape[slot];
            let step_bytes = passes as u64 * layer_bytes + head;
            let gbps = |ms: f64| step_bytes as f64 / (ms * 1e-3) / 1e9;
            out.push(Record {
                preset: s.name.clone(),
                dtype: self.dtype.clone(),
                mode: modes[slot].to_string(),
                loops: self.kind.loops(),
                batch: self.batch,
                context: self.context,
                passes,
                rows,
                warmup: set.warmup,
                positions: [p + 2 * set.warmup, p + timed - 1],
                weight_gbps_wall: gbps(wall_ms.median),
                weight_gbps_gpu: gpu_ms.as_ref().map(|d| gbps(d.median)),
                wall_ms,
                gpu_ms,
                host_ms: Dist::of(&host),
                dispatches: self.dispatches[slot],
                wall_samples_ms: w,
                gpu_samples_ms: g,
                prefill: self.prefill.clone(),
                kv: self.kv.clone(),
                model_bytes: self.model_bytes,
                session_bytes: self.session_bytes,
                session_device_bytes: self.session_device_bytes,
                allocated_during_decode: self.allocated_during_decode,
                setup_s: self.setup_s,
                weight_bytes_per_step: step_bytes,
                fraction_of_copy_bw: 0.0,
                profile: self.profile[slot].clone(),
            });
        }
        out
    }
}


/// The ratios of every (size, dtype, L, B, T) that has all four modes.
fn ratios(results: &[Record]) -> Vec<Ratio> {
    let find = |r: &Record, mode: &str, loops: usize| {
        results.iter().find(|x| x.preset == r.preset && x.dtype == r.dtype && x.batch == r.batch && x.context == r.context && x.mode == mode && x.loops == loops)
    };
    let pair = |a: &Record, b: &Record| Pair {
        wall: a.wall_ms.median / b.wall_ms.median,
        gpu: a.gpu_ms.as_ref().zip(b.gpu_ms.as_ref()).map(|(x, y)| x.median / y.median),
    };
    let mut out = Vec::new();
    for fused in results.iter().filter(|r| r.mode == "plt-fused") {
        let (Some(base), Some(seq), Some(van)) = (find(fused, "non-looped", 1), find(fused, "plt-sequential", fused.loops), find(fused, "vanilla", fused.loops)) else {
            continue;
        };
        out.push(Ratio {
            preset: fused.preset.clone(),
            dtype: fused.dtype.clone(),
            loops: fused.loops,
            batch: fused.batch,
            context: fused.context,
            plt_fused_over_nonlooped: pair(fused, base),
            vanilla_over_plt_fused: pair(van, fused),
            sequential_over_fused: pair(seq, fused),
            kv_plt_over_nonlooped: fused.kv.spec_bytes as f64 / base.kv.spec_bytes as f64,
            kv_vanilla_over_plt: van.kv.spec_bytes as f64 / fused.kv.spec_bytes as f64,
        });
    }
    out
}

fn write_json(path: &Path, report: &Report) -> Result<()> {
    let mut r = report.clone();
    let bw = r.copy_bandwidth.gbps;
    for rec in &mut r.results {
        rec.fraction_of_copy_bw = rec.weight_gbps_gpu.unwrap_or(rec.weight_gbps_wall) / bw;
    }
    let text = serde_json::to_string_pretty(&r).map_err(|e| Error::Input(format!("bench JSON: {e}")))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
    }
    // Write then rename, so a reader never sees half a file.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n").map_err(|e| Error::Io { path: tmp.clone(), source: e })?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })
}

// ---------------------------------------------------------------------------------------------
// The adapter

fn feature_names(f: wgpu::Features) -> Vec<String> {
    f.iter_names().map(|(n, _)| n.to_string()).collect()
}

fn adapter_report(gpu: &Gpu) -> AdapterReport {
    let i = &gpu.info;
    // `Gpu` keeps only the features it enabled; the adapter's full set comes from enumerating
    // the adapters again and finding the same one.
    let adapter_features = pollster::block_on(async {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        instance
            .enumerate_adapters(wgpu::Backends::all())
            .await
            .into_iter()
            .find(|a| {
                let o = a.get_info();
                o.name == i.name && o.backend == i.backend && o.device == i.device && o.vendor == i.vendor
            })
            .map(|a| feature_names(a.features()))
    })
    .unwrap_or_else(|| feature_names(gpu.features));
    AdapterReport {
        name: i.name.clone(),
        backend: format!("{:?}", i.backend),
        device_type: format!("{:?}", i.device_type),
        driver: i.driver.clone(),
        driver_info: i.driver_info.clone(),
        vendor: i.vendor,
        device: i.device,
        describe: gpu.describe(),
        software: gpu.is_software(),
        timestamps: gpu.has_timestamps(),
        adapter_features,
        device_features: feature_names(gpu.features),
        max_storage_buffer_binding_size: gpu.limits.max_storage_buffer_binding_size,
        max_buffer_size: gpu.limits.max_buffer_size,
        max_compute_workgroup_storage_size: gpu.limits.max_compute_workgroup_storage_size,
        max_compute_invocations_per_workgroup: gpu.limits.max_compute_invocations_per_workgroup,
        allocator_report: gpu.device.generate_allocator_report().is_some(),
        subgroup_reduction: gpu.subgroup_size,
        fuse_norms: gpu.fuse_norms,
        decode_lanes: gpu.decode_lanes,
    }
}

/// `--lanes`: auto -> None, else 8, 16 or 32.
fn parse_lanes(v: &str) -> Result<Option<u32>> {
    match v {
        "auto" => Ok(None),
        "8" | "16" | "32" => Ok(Some(v.parse().unwrap_or(8))),
        o => Err(Error::Input(format!("--lanes: expected auto, 8, 16 or 32, got `{o}`"))),
    }
}

/// `auto` -> None, `on` -> Some(true), `off` -> Some(false).
fn auto_on_off(flag: &str, v: &str) -> Result<Option<bool>> {
    match v {
        "auto" => Ok(None),
        "on" => Ok(Some(true)),
        "off" => Ok(Some(false)),
        o => Err(Error::Input(format!("{flag}: expected auto, on or off, got `{o}`"))),
    }
}



const COPY_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(256)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < arrayLength(&src)) {
        dst[i] = src[i];
    }
}
"#;

/// Copy bandwidth of the adapter: `bytes` read and written per copy, (read + write) / time.
fn copy_bandwidth(gpu: &Gpu, bytes: u64) -> Result<CopyBw> {
    let max = gpu.limits.max_storage_buffer_binding_size.min(gpu.limits.max_buffer_size);
    let size = bytes.min(max) / 256 * 256;
    let dev = &gpu.device;
    let buf = |label: &str| {
        dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    };
    let (src, dst) = (buf("bench copy src"), buf("bench copy dst"));
    let wait = || dev.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(e.to_string()));
    let copies: u64 = if gpu.is_software() { 2 } else { 8 };
    const ROUNDS: usize = 5;
    let moved = (2 * size * copies) as f64;

    // copy_buffer_to_buffer, timed by the wall clock around submit + wait.
    let mut buffer_gbps = Vec::new();
    for round in 0..=ROUNDS {
        let mut enc = dev.create_command_encoder(&Default::default());
        for _ in 0..copies {
            enc.copy_buffer_to_buffer(&src, 0, &dst, 0, size);
        }
        let t = Instant::now();
        gpu.queue.submit([enc.finish()]);
        wait()?;
        if round > 0 {
            buffer_gbps.push(moved / t.elapsed().as_secs_f64() / 1e9);
        }
    }

    // A copy kernel, timed by pass timestamps where the adapter has them.
    let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some("bench copy"), source: wgpu::ShaderSource::Wgsl(COPY_WGSL.into()) });
    let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("bench copy"),
        layout: None,
        module: &module,
        entry_point: Some("copy"),
        compilation_options: Default::default(),
        cache: None,
    });
    let bind = dev.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("bench copy"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: src.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: dst.as_entire_binding() },
        ],
    });
    let groups = (size / 16).div_ceil(256) as u32;
    let gx = groups.min(32768);
    let gy = groups.div_ceil(gx);
    let ts = gpu.has_timestamps().then(|| {
        let qs = dev.create_query_set(&wgpu::QuerySetDescriptor { label: Some("bench copy"), ty: wgpu::QueryType::Timestamp, count: 2 });
        let resolve = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench copy timestamps"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench copy timestamps read"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        (qs, resolve, read)
    });
    let mut shader_gbps = Vec::new();
    for round in 0..=ROUNDS {
        let mut enc = dev.create_command_encoder(&Default::default());
        {
            let timestamp_writes = ts.as_ref().map(|(qs, _, _)| wgpu::ComputePassTimestampWrites {
                query_set: qs,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            });
            let mut cp = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("bench copy"), timestamp_writes });
            cp.set_pipeline(&pipeline);
            cp.set_bind_group(0, &bind, &[]);
            for _ in 0..copies {
                cp.dispatch_workgroups(gx, gy, 1);
            }
        }
        if let Some((qs, resolve, read)) = &ts {
            enc.resolve_query_set(qs, 0..2, resolve, 0);
            enc.copy_buffer_to_buffer(resolve, 0, read, 0, 16);
        }
        let t = Instant::now();
        gpu.queue.submit([enc.finish()]);
        wait()?;
        let wall = t.elapsed().as_secs_f64();
        let secs = match &ts {
            Some((_, _, read)) => {
                let b = pollster::block_on(gpu.read(read, 16))?;
                let v: [u64; 2] = bytemuck::pod_read_unaligned(&b[..16]);
                let ns = v[1].saturating_sub(v[0]) as f64 * gpu.queue.get_timestamp_period() as f64;
                // A zero or absurd interval (some drivers) falls back to the wall clock.
                if ns > 0.0 && ns * 1e-9 <= wall * 1.5 {
                    ns * 1e-9
                } else {
                    wall
                }
            }
            None => wall,
        };
        if round > 0 {
            shader_gbps.push(moved / secs / 1e9);
        }
    }
    gpu.check()?;
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let med = |v: &[f64]| Dist::of(v).map(|d| d.median).unwrap_or(0.0);
    let (b, s) = (best(&buffer_gbps), best(&shader_gbps));
    Ok(CopyBw {
        bytes: size,
        copies,
        buffer_copy_gbps: b,
        buffer_copy_gbps_median: med(&buffer_gbps),
        shader_copy_gbps: s,
        shader_copy_gbps_median: med(&shader_gbps),
        shader_copy_timer: if ts.is_some() { "timestamps".into() } else { "wall".into() },
        gbps: b.max(s),
    })
}

// ---------------------------------------------------------------------------------------------
// Progress on stderr: one redrawn line on a terminal, one line per step otherwise.

struct Progress {
    total: f64,
    done: f64,
    start: Instant,
    tty: bool,
    on: bool,
}

impl Progress {
    fn new(total: f64, on: bool) -> Progress {
        Progress { total: total.max(1e-9), done: 0.0, start: Instant::now(), tty: std::io::stderr().is_terminal(), on }
    }
    /// A redrawn line on a terminal; elsewhere (logs) only the `major` steps, one line each.
    fn show(&mut self, what: &str, major: bool) {
        if !self.on || !(self.tty || major) {
            return;
        }
        let f = (self.done / self.total).clamp(0.0, 1.0);
        let el = self.start.elapsed().as_secs_f64();
        let eta = if f > 0.01 { format!(" eta {}", mmss(el / f - el)) } else { String::new() };
        const W: usize = 24;
        let filled = (f * W as f64).round() as usize;
        let bar = format!("[{}{}] {:3.0}% {}{}  {}", "#".repeat(filled), "-".repeat(W - filled), f * 100.0, mmss(el), eta, what);
        let mut e = std::io::stderr();
        if self.tty {
            let _ = write!(e, "\r\x1b[2K{bar}");
        } else {
            let _ = writeln!(e, "{bar}");
        }
        let _ = e.flush();
    }
    fn advance(&mut self, w: f64) {
        self.done += w;
    }
    fn finish(&mut self) {
        if self.on && self.tty {
            eprintln!("\r\x1b[2K[{}] 100% {}", "#".repeat(24), mmss(self.start.elapsed().as_secs_f64()));
        }
    }
}

fn mmss(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

// ---------------------------------------------------------------------------------------------
// Markdown

fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn mib(b: u64) -> String {
    let m = b as f64 / (1u64 << 20) as f64;
    if m >= 100.0 {
        format!("{m:.0}")
    } else if m >= 1.0 {
        format!("{m:.1}")
    } else {
        format!("{m:.2}")
    }
}

/// Three significant digits.
fn sig(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let d = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.d$}")
}

fn ratio(x: f64) -> String {
    format!("{x:.2}")
}

/// The markdown report: adapter, ratios, every record, skipped sessions.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let a = &r.adapter;
    let set = &r.settings;
    let bw = r.copy_bandwidth.gbps;
    s += &format!("## plt bench on {}\n\n", a.describe);
    let load = |l: Option<[f64; 3]>| l.map(|l| format!("{:.1}", l[0])).unwrap_or_else(|| "?".into());
    s += &format!(
        "Timer: wall clock per decode call (one submit, {} read back){}. Copy bandwidth {} GB/s \
         ({} MiB x {}; buffer copy {}, copy kernel {}). {} measured steps after {} warm-up per mode; \
         window left = {}; KV cache {}; {} CPUs, load average {} at the start and {} at the end; {:.0} s in all.\n\n",
        if set.readback == "logits" { "logits" } else { "token ids" },
        if a.timestamps { " and GPU timestamps" } else { " (no GPU timestamps on this adapter)" },
        sig(bw),
        r.copy_bandwidth.bytes >> 20,
        r.copy_bandwidth.copies,
        sig(r.copy_bandwidth.buffer_copy_gbps),
        sig(r.copy_bandwidth.shader_copy_gbps),
        set.steps,
        set.warmup,
        set.window,
        if set.kv_dtype == "same" { "in the matrices' dtype".to_string() } else { set.kv_dtype.clone() },
        r.host.cpus,
        load(r.host.loadavg_start),
        load(r.host.loadavg_end),
        r.elapsed_s
    );
    let gpu = a.timestamps;
    s += "### Ratios (median decode step time)\n\n";
    s += "| model | dtype | L | B | T | PLT fused / non-looped | vanilla / PLT fused | sequential / fused | KV PLT / non-looped | KV vanilla / PLT |\n";
    s += "|---|---|---|---|---|---|---|---|---|---|\n";
    let pr = |p: &Pair| match p.gpu.filter(|_| gpu) {
        Some(g) => format!("{} (GPU {})", ratio(p.wall), ratio(g)),
        None => ratio(p.wall),
    };
    for x in &r.ratios {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            x.preset,
            x.dtype,
            x.loops,
            x.batch,
            x.context,
            pr(&x.plt_fused_over_nonlooped),
            pr(&x.vanilla_over_plt_fused),
            pr(&x.sequential_over_fused),
            ratio(x.kv_plt_over_nonlooped),
            ratio(x.kv_vanilla_over_plt)
        );
    }
    s += "\n### Decode steps\n\n";
    s += "| model | dtype | mode | L | B | T | passes | dispatches | median ms | p90 ms | GPU median ms | host ms to submit | prefill tok/s | KV MiB (spec) | KV alloc = spec | session MiB | weights GB/s | of copy bw |\n";
    s += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for x in &r.results {
        let wg = x.weight_gbps_gpu.unwrap_or(x.weight_gbps_wall);
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {}% |\n",
            x.preset,
            x.dtype,
            x.mode,
            x.loops,
            x.batch,
            x.context,
            x.passes,
            x.dispatches,
            ms(x.wall_ms.median),
            ms(x.wall_ms.p90),
            x.gpu_ms.as_ref().map(|d| ms(d.median)).unwrap_or_else(|| "-".into()),
            x.host_ms.as_ref().map(|d| ms(d.median)).unwrap_or_else(|| "-".into()),
            x.prefill.tokens_per_s,
            mib(x.kv.spec_bytes),
            match x.kv.matches_spec {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "n/a",
            },
            mib(x.session_bytes),
            sig(wg),
            sig(100.0 * wg / bw)
        );
    }
    if !r.skipped.is_empty() {
        // One row per (size, dtype, B, T, reason), naming the variants (or "all").
        let all = 1 + 2 * set.loops.len();
        let mut rows: Vec<(&Skip, Vec<&str>)> = Vec::new();
        for k in &r.skipped {
            let same = |x: &Skip| x.preset == k.preset && x.dtype == k.dtype && x.batch == k.batch && x.context == k.context && x.reason == k.reason;
            match rows.iter_mut().find(|(x, _)| same(x)) {
                Some((_, v)) => v.push(&k.model),
                None => rows.push((k, vec![&k.model])),
            }
        }
        s += "\n### Skipped\n\n| model | dtype | variants | B | T | reason |\n|---|---|---|---|---|---|\n";
        for (k, v) in rows {
            let o = |v: Option<usize>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
            let variants = if v.len() == all { "all".to_string() } else { v.join(", ") };
            s += &format!("| {} | {} | {} | {} | {} | {} |\n", k.preset, k.dtype, variants, o(k.batch), o(k.context), k.reason);
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// SVG: median decode latency against context length, one panel per (size, dtype, B), one line
// per mode and L.

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// "Nice" tick step for a 0..max axis with about `n` ticks.
fn tick_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(1e-12);
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    p * if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    }
}

pub fn svg(r: &Report) -> String {
    let mut panels: Vec<(String, String, usize)> = Vec::new();
    for x in &r.results {
        let k = (x.preset.clone(), x.dtype.clone(), x.batch);
        if !panels.contains(&k) {
            panels.push(k);
        }
    }
    let (pw, ph) = (360.0, 250.0);
    let (ml, mr, mt, mb) = (56.0, 12.0, 28.0, 40.0);
    let cols = panels.len().clamp(1, 3);
    let rows = panels.len().div_ceil(cols).max(1);
    let legend_h = 56.0;
    let (w, h) = (cols as f64 * pw + 20.0, rows as f64 * ph + legend_h + 40.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    s += &format!("<text x=\"10\" y=\"20\" font-size=\"14\">plt bench: median decode step (wall, ms) vs context length on {}</text>\n", esc(&r.adapter.describe));
    // Series: (mode, loops) in a fixed order.
    let mut series: Vec<(String, usize)> = Vec::new();
    for x in &r.results {
        let k = (x.mode.clone(), x.loops);
        if !series.contains(&k) {
            series.push(k);
        }
    }
    series.sort_by_key(|(m, l)| (["non-looped", "plt-fused", "plt-sequential", "vanilla"].iter().position(|x| x == m).unwrap_or(9), *l));
    let color = |m: &str| match m {
        "non-looped" => "#222222",
        "plt-fused" => "#1f77b4",
        "plt-sequential" => "#ff7f0e",
        _ => "#d62728",
    };
    let dash = |l: usize| match l {
        1 | 2 => "",
        3 => "6,3",
        _ => "2,2",
    };
    let name = |m: &str, l: usize| if m == "non-looped" { "non-looped (L=1)".to_string() } else { format!("{m} L={l}") };
    // Legend.
    for (i, (m, l)) in series.iter().enumerate() {
        let (x, y) = (14.0 + (i % 4) as f64 * 180.0, 38.0 + (i / 4) as f64 * 16.0);
        s += &format!(
            "<line x1=\"{x}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{}\" stroke-width=\"2\" stroke-dasharray=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            x + 24.0,
            color(m),
            dash(*l),
            x + 30.0,
            y + 4.0,
            esc(&name(m, *l))
        );
    }
    for (pi, (preset, dtype, b)) in panels.iter().enumerate() {
        let ox = 10.0 + (pi % cols) as f64 * pw;
        let oy = legend_h + 20.0 + (pi / cols) as f64 * ph;
        let recs: Vec<&Record> = r.results.iter().filter(|x| &x.preset == preset && &x.dtype == dtype && x.batch == *b).collect();
        let mut ctxs: Vec<usize> = recs.iter().map(|x| x.context).collect();
        ctxs.sort();
        ctxs.dedup();
        let (lo, hi) = ((ctxs[0] as f64).log2(), (ctxs[ctxs.len() - 1] as f64).log2());
        let (lo, hi) = if hi - lo < 1e-9 { (lo - 1.0, hi + 1.0) } else { (lo, hi) };
        let ymax_data = recs.iter().map(|x| x.wall_ms.median).fold(0.0, f64::max).max(1e-6);
        let step = tick_step(ymax_data, 5.0);
        let ymax = (ymax_data / step).ceil() * step;
        let (x0, x1, y0, y1) = (ox + ml, ox + pw - mr, oy + ph - mb, oy + mt);
        let px = |c: usize| x0 + ((c as f64).log2() - lo) / (hi - lo) * (x1 - x0);
        let py = |v: f64| y0 - v / ymax * (y0 - y1);
        s += &format!("<text x=\"{}\" y=\"{}\" font-size=\"12\" font-weight=\"bold\">{} {} B={}</text>\n", x0, oy + 16.0, esc(preset), esc(dtype), b);
        s += &format!("<rect x=\"{x0}\" y=\"{y1}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\n", x1 - x0, y0 - y1);
        let decimals = (-step.log10().floor()).max(0.0) as usize;
        let mut v = 0.0;
        while v <= ymax + 1e-9 {
            let y = py(v);
            s += &format!(
                "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.decimals$}</text>\n",
                x0 - 4.0,
                y + 4.0,
            );
            v += step;
        }
        for &c in &ctxs {
            s += &format!("<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{c}</text>\n", px(c), y0 + 14.0);
        }
        s += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">context length T</text>\n", (x0 + x1) / 2.0, y0 + 30.0);
        s += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 {} {})\">ms / step</text>\n", ox + 14.0, (y0 + y1) / 2.0, ox + 14.0, (y0 + y1) / 2.0);
        for (m, l) in &series {
            let mut pts: Vec<(usize, f64)> = recs.iter().filter(|x| &x.mode == m && x.loops == *l).map(|x| (x.context, x.wall_ms.median)).collect();
            if pts.is_empty() {
                continue;
            }
            pts.sort_by_key(|p| p.0);
            let path: Vec<String> = pts.iter().map(|&(c, v)| format!("{:.1},{:.1}", px(c), py(v))).collect();
            s += &format!(
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" stroke-dasharray=\"{}\"><title>{}</title></polyline>\n",
                path.join(" "),
                color(m),
                dash(*l),
                esc(&name(m, *l))
            );
            for &(c, v) in &pts {
                s += &format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{}\"><title>{} T={c}: {} ms</title></circle>\n", px(c), py(v), color(m), esc(&name(m, *l)), ms(v));
            }
        }
    }
    s += "</svg>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dist_median_and_p90() {
        let d = Dist::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((d.median, d.p90, d.min, d.max, d.mean), (3.0, 5.0, 1.0, 5.0, 3.0));
        let d = Dist::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!((d.median, d.p90), (2.5, 4.0));
        let xs: Vec<f64> = (1..=20).map(|x| x as f64).collect();
        assert_eq!(Dist::of(&xs).unwrap().p90, 18.0);
        assert!(Dist::of(&[]).is_none());
    }

    #[test]
    fn presets_are_valid_configs() {
        for (n, _, _) in PRESETS {
            let s = preset(n).unwrap();
            for (l, m) in [(1, "parallel"), (2, "parallel"), (3, "vanilla")] {
                s.config(l, m, 64, 4096).unwrap();
            }
        }
        let s = preset("llama-850m").unwrap();
        let p = s.config(1, "parallel", 64, 4096).unwrap().num_params();
        assert!((800_000_000..900_000_000).contains(&p), "{p}");
        let s = preset("smollm2-135m").unwrap();
        assert_eq!((s.hidden, s.layers, s.heads, s.kv_heads, s.ffn, s.vocab, s.head_dim), (576, 30, 9, 3, 1536, 32000, 64));
    }

    #[test]
    fn tick_steps_are_round() {
        assert_eq!(tick_step(10.0, 5.0), 2.0);
        assert_eq!(tick_step(0.7, 5.0), 0.2);
        assert_eq!(tick_step(1234.0, 5.0), 500.0);
    }
}
