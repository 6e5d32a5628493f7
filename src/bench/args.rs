//! The arguments of `plt bench`, the model sizes it can build, and the resolved settings of a
//! run (defaults filled in per adapter kind, every value checked before the device is opened).

use crate::config::{Config, Looping, RopeScaling};
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::weights::DType;
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

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
    /// Model sizes: micro, tiny, small, medium, smollm2-135m, llama-850m, llama-3.2-1b,
    /// loopcoder-v2, or `all`
    /// (sizes that do not fit the adapter or the memory are skipped with the reason). [default: GPU tiny,small,medium;
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
    /// Device storage of the weight matrices: f32, f16, or a block format kept quantised:
    /// q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k (rows that are not whole blocks fall back
    /// as llama.cpp's quantiser does). [default: f32,f16]
    #[arg(long, value_delimiter = ',')]
    pub dtype: Vec<String>,
    /// KV-cache storage: f32, f16, or `same` as the weight matrices (f16 for block formats).
    /// [default: same]
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
    /// Where the models run: auto (a hardware GPU when there is one, else the CPU backend),
    /// gpu (any adapter, software ones too) or cpu (the native CPU backend, batch 1).
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// CPU backend threads (default: one per physical core).
    #[arg(long)]
    pub threads: Option<usize>,
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
    /// Instead of a run: `compare` merges reports of other runs.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
}

/// What `plt bench` does instead of a run.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchCommand {
    /// Merge the JSON reports of runs on different machines or adapters into one table per
    /// (size, dtype), a column group per report, and optionally a bar chart.
    Compare(super::compare::CompareArgs),
}

// ---------------------------------------------------------------------------------------------
// Model sizes

/// One model shape (PLT-SPEC symbols). Loops, loop wiring and window are added per run.
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
    pub rope_theta: f32,
    /// RoPE scaling (Llama 3's for `llama-3.2-1b`).
    #[serde(skip)]
    pub rope_scaling: RopeScaling,
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
    ("llama-3.2-1b", [128256, 2048, 8192, 16, 32, 8], true),
    ("loopcoder-v2", [76800, 5120, 27648, 14, 40, 8], false),
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
        rope_theta: if matches!(n, "llama-3.2-1b" | "loopcoder-v2") { 500000.0 } else { crate::config::DEFAULT_ROPE_THETA },
        rope_scaling: if n == "llama-3.2-1b" {
            RopeScaling::Llama3 { factor: 32.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 }
        } else {
            RopeScaling::None
        },
    })
}

impl Size {
    /// The config of this size with `loops` loops wired as `looping`. Built through
    /// `Config::from_json` so that fields without a value here keep their defaults.
    pub fn config(&self, loops: usize, looping: Looping, window: usize, max_positions: usize) -> Result<Config> {
        self.config_unnamed(loops, looping, window, max_positions).map_err(|e| Error::Input(format!("size `{}`: {e}", self.name)))
    }

    /// `config`, its errors as `Config::from_json` gives them.
    fn config_unnamed(&self, loops: usize, looping: Looping, window: usize, max_positions: usize) -> Result<Config> {
        let v = serde_json::json!({
            "vocab_size": self.vocab, "hidden_size": self.hidden, "intermediate_size": self.ffn,
            "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads, "head_dim": self.head_dim,
            "max_position_embeddings": max_positions, "tie_word_embeddings": self.tied,
            "bos_token_id": (self.vocab > 1).then_some(1), "eos_token_id": (self.vocab > 2).then_some(2),
            "plt_num_loops": loops, "plt_window_size": [window, 0],
        });
        let obj = v.as_object().ok_or_else(|| Error::Input("bench: config is not an object".into()))?;
        let mut cfg = Config::from_json(obj)?;
        cfg.looping = looping;
        cfg.rope_theta = self.rope_theta;
        cfg.rope_scaling = self.rope_scaling.clone();
        cfg.validate().map_err(|e| Error::Input(format!("size `{}`: {e}", self.name)))?;
        Ok(cfg)
    }
}

// ---------------------------------------------------------------------------------------------
// Choices, as they appear in the JSON

/// Device storage of the weight matrices (`--dtype`): floats (the random weights uploaded in
/// that type) or a block format (the random model written as an in-memory GGUF file with blocks
/// of that type and loaded with its blocks kept: `init::gguf`; matrices whose rows are not whole
/// blocks fall back as llama.cpp's quantiser does, and the report's `formats` says so).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[allow(non_camel_case_types)] // the ggml names
pub enum Dtype {
    #[serde(rename = "f32")]
    F32,
    #[serde(rename = "f16")]
    F16,
    #[serde(rename = "q8_0")]
    Q8_0,
    #[serde(rename = "q4_0")]
    Q4_0,
    #[serde(rename = "q4_1")]
    Q4_1,
    #[serde(rename = "q5_0")]
    Q5_0,
    #[serde(rename = "q5_1")]
    Q5_1,
    #[serde(rename = "q4_k")]
    Q4_K,
    #[serde(rename = "q5_k")]
    Q5_K,
    #[serde(rename = "q6_k")]
    Q6_K,
}

impl Dtype {
    pub const ALL: [Dtype; 10] =
        [Dtype::F32, Dtype::F16, Dtype::Q8_0, Dtype::Q4_0, Dtype::Q4_1, Dtype::Q5_0, Dtype::Q5_1, Dtype::Q4_K, Dtype::Q5_K, Dtype::Q6_K];
    pub fn parse(s: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.as_str() == s)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Q8_0 => "q8_0",
            Dtype::Q4_0 => "q4_0",
            Dtype::Q4_1 => "q4_1",
            Dtype::Q5_0 => "q5_0",
            Dtype::Q5_1 => "q5_1",
            Dtype::Q4_K => "q4_k",
            Dtype::Q5_K => "q5_k",
            Dtype::Q6_K => "q6_k",
        }
    }
    /// The runtime's float storage type; None for the block formats.
    pub fn storage(self) -> Option<DType> {
        match self {
            Dtype::F32 => Some(DType::F32),
            Dtype::F16 => Some(DType::F16),
            _ => None,
        }
    }
    /// The ggml type of the matrices in the file (F32 and F16 for the floats).
    pub fn ggml(self) -> GgmlType {
        GgmlType::parse_name(self.as_str()).unwrap_or(GgmlType::F32)
    }
    /// A block format (kept quantised on the device).
    pub fn is_quantised(self) -> bool {
        self.storage().is_none()
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// KV-cache storage (`--kv-dtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum KvDtype {
    #[serde(rename = "f32")]
    F32,
    #[serde(rename = "f16")]
    F16,
    /// As the weight matrices.
    #[serde(rename = "same")]
    Same,
}

impl KvDtype {
    pub fn parse(s: &str) -> Option<KvDtype> {
        [KvDtype::F32, KvDtype::F16, KvDtype::Same].into_iter().find(|k| k.as_str() == s)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
            KvDtype::Same => "same",
        }
    }
    /// Whether a session of a model with `matrices` storage keeps its KV cache in f16 (`same`:
    /// f16 for f16 and block-format matrices, f32 for f32 ones).
    pub fn is_f16(self, matrices: Dtype) -> bool {
        match self {
            KvDtype::F32 => false,
            KvDtype::F16 => true,
            KvDtype::Same => matrices != Dtype::F32,
        }
    }
}

/// What a decode step reads back (`--logits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Readback {
    /// The B token ids sampled on the GPU (greedy), as generation does.
    #[serde(rename = "ids")]
    Ids,
    /// The full logits [B, V].
    #[serde(rename = "logits")]
    Logits,
}

// ---------------------------------------------------------------------------------------------
// What to run

/// The resolved settings of a run (defaults filled in), recorded in the JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub quick: bool,
    /// "gpu" or "cpu".
    pub backend: String,
    /// CPU backend threads (null on a GPU).
    pub threads: Option<usize>,
    /// The adapter is a software one (its defaults were used where no flag was given).
    pub software: bool,
    pub sizes: Vec<Size>,
    pub loops: Vec<usize>,
    pub batch: Vec<usize>,
    pub context: Vec<usize>,
    pub dtype: Vec<Dtype>,
    pub window: usize,
    pub steps: usize,
    pub warmup: usize,
    pub prefill_chunk: usize,
    pub max_prefill_tokens: Option<usize>,
    pub time_limit_s: Option<f64>,
    pub copy_bytes: u64,
    pub seed: u64,
    /// What a decode step reads back: "ids" (GPU sampling) or "logits".
    pub readback: Readback,
    /// KV-cache storage: "f32", "f16", or "same" (as the weight matrices).
    pub kv_dtype: KvDtype,
    pub profile: bool,
}

impl Settings {
    /// Positions a session decodes at: warm-up and measured steps for two alternating slots
    /// (fused and sequential for PLT; the same mode twice otherwise), and with `--profile` one
    /// profiled step per slot.
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
const CPU: Defaults = Defaults {
    sizes: &["tiny", "small", "medium"],
    loops: &[2, 3],
    batch: &[1],
    context: &[128, 1024],
    steps: 12,
    warmup: 2,
    window: 64,
    max_prefill_tokens: None,
    time_limit_s: Some(540.0),
    copy_mib: 256,
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

/// What a run measures on: its defaults differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Gpu,
    /// A software adapter (llvmpipe, lavapipe, SwiftShader, WARP).
    Software,
    /// The CPU backend.
    Cpu,
}

/// `--backend`: auto, gpu or cpu.
pub fn parse_backend(a: &BenchArgs) -> Result<crate::generate::Backend> {
    let b = crate::generate::Backend::parse(&a.backend).ok_or_else(|| Error::Input(format!("--backend: expected auto, gpu or cpu, got `{}`", a.backend)))?;
    if b == crate::generate::Backend::Cpu && a.adapter.is_some() {
        return Err(Error::Input("--adapter names a GPU adapter; --backend cpu uses none".into()));
    }
    if a.threads == Some(0) {
        return Err(Error::Input("--threads must be at least 1".into()));
    }
    Ok(b)
}

/// The settings of `a` on `target`; argument errors are one-line `Error::Input`s naming the
/// flag.
pub fn resolve(a: &BenchArgs, target: Target) -> Result<Settings> {
    auto_on_off("--subgroups", &a.subgroups)?;
    auto_on_off("--fuse-norms", &a.fuse_norms)?;
    parse_lanes(&a.lanes)?;
    parse_backend(a)?;
    let software = target == Target::Software;
    let d = if a.quick {
        &QUICK
    } else {
        match target {
            Target::Software => &SOFTWARE,
            Target::Cpu => &CPU,
            Target::Gpu => &GPU,
        }
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
        // Named by the flags that set the fields.
        s.config_unnamed(1, Looping::Plt, 64, 16).map_err(|e| {
            e.named_by_flag(&[
                ("vocab_size", "--vocab"),
                ("hidden_size", "--hidden"),
                ("intermediate_size", "--ffn"),
                ("num_hidden_layers", "--layers"),
                ("num_attention_heads", "--heads"),
                ("num_key_value_heads", "--kv-heads"),
                ("head_dim", "--head-dim"),
            ])
        })?;
        sizes.push(s);
    }
    let loops = or(&a.loops, d.loops);
    if let Some(l) = loops.iter().find(|&&l| l < 2) {
        return Err(Error::Input(format!("--loops: {l} is not a looped model (L = 1 is always measured as the baseline)")));
    }
    // Checked here, not by each size's config in the middle of a run.
    if let Some(l) = loops.iter().find(|&&l| l > crate::config::MAX_LOOPS) {
        return Err(Error::Input(format!("--loops: {l} is more than the supported {}", crate::config::MAX_LOOPS)));
    }
    if let Some(w) = a.window.filter(|&w| w > u32::MAX as usize) {
        return Err(Error::Input(format!("--window: {w} is more than the supported {}", u32::MAX)));
    }
    let batch = if target == Target::Cpu && a.batch.is_empty() { vec![1] } else { or(&a.batch, d.batch) };
    let context = or(&a.context, d.context);
    for (flag, values) in [("--batch", &batch), ("--context", &context)] {
        if values.contains(&0) {
            return Err(Error::Input(format!("{flag}: 0 must be at least 1")));
        }
    }
    let dtype = if a.dtype.is_empty() {
        vec![Dtype::F32, Dtype::F16]
    } else {
        a.dtype
            .iter()
            .map(|t| {
                Dtype::parse(t.trim()).ok_or_else(|| {
                    let all: Vec<&str> = Dtype::ALL.iter().map(|d| d.as_str()).collect();
                    Error::Input(format!("--dtype: expected one of {}, got `{t}`", all.join(", ")))
                })
            })
            .collect::<Result<_>>()?
    };
    let steps = a.steps.unwrap_or(d.steps);
    if steps == 0 {
        return Err(Error::Input("--steps must be at least 1".into()));
    }
    let kv = a.kv_dtype.as_deref().unwrap_or("same");
    Ok(Settings {
        quick: a.quick,
        backend: if target == Target::Cpu { "cpu" } else { "gpu" }.into(),
        threads: (target == Target::Cpu).then(|| a.threads.unwrap_or_else(crate::cpu::default_threads)),
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
        readback: if a.logits { Readback::Logits } else { Readback::Ids },
        kv_dtype: KvDtype::parse(kv).ok_or_else(|| Error::Input(format!("--kv-dtype: expected f32, f16 or same, got `{kv}`")))?,
        profile: a.profile,
    })
}

/// `--lanes`: auto -> None, else 8, 16 or 32.
pub fn parse_lanes(v: &str) -> Result<Option<u32>> {
    match v {
        "auto" => Ok(None),
        "8" | "16" | "32" => Ok(Some(v.parse().unwrap_or(8))),
        o => Err(Error::Input(format!("--lanes: expected auto, 8, 16 or 32, got `{o}`"))),
    }
}

/// `auto` -> None, `on` -> Some(true), `off` -> Some(false).
pub fn auto_on_off(flag: &str, v: &str) -> Result<Option<bool>> {
    match v {
        "auto" => Ok(None),
        "on" => Ok(Some(true)),
        "off" => Ok(Some(false)),
        o => Err(Error::Input(format!("{flag}: expected auto, on or off, got `{o}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_configs() {
        for (n, _, _) in PRESETS {
            let s = preset(n).unwrap();
            for (l, m) in [(1, Looping::Plt), (2, Looping::Plt), (3, Looping::Vanilla)] {
                assert_eq!(s.config(l, m, 64, 4096).unwrap().looping, m);
            }
        }
        let s = preset("llama-850m").unwrap();
        let p = s.config(1, Looping::Plt, 64, 4096).unwrap().num_params();
        assert!((800_000_000..900_000_000).contains(&p), "{p}");
        let s = preset("smollm2-135m").unwrap();
        assert_eq!((s.hidden, s.layers, s.heads, s.kv_heads, s.ffn, s.vocab, s.head_dim), (576, 30, 9, 3, 1536, 32000, 64));
        // The bench's llama-3.2-1b is `plt init --preset llama-3.2-1b` (L = 1).
        let c = preset("llama-3.2-1b").unwrap().config(1, Looping::Plt, 64, 131072).unwrap();
        let mut want = crate::init::preset_config("llama-3.2-1b").unwrap();
        want.window_left = 64;
        assert_eq!(c, want);
        // The bench's loopcoder-v2 has `plt init --preset loopcoder-v2`'s shape (L = 2).
        let c = preset("loopcoder-v2").unwrap().config(2, Looping::Plt, 64, 131072).unwrap();
        let w = crate::init::preset_config("loopcoder-v2").unwrap();
        let shape = |c: &Config| {
            (c.vocab_size, c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim)
        };
        assert_eq!(shape(&c), shape(&w));
        assert_eq!((c.num_loops, c.window_left, c.tie_word_embeddings, c.rope_theta), (w.num_loops, w.window_left, w.tie_word_embeddings, w.rope_theta));
        assert_eq!(c.num_params(), w.num_params());
    }
}
