//! Text generation for apps: load a model (directory or GGUF file) with a progress callback,
//! open a session, stream text through a callback or an iterator, stop on EOS, stop strings or
//! a token budget, cancel, and keep the session for the next turn. Async inside; `_blocking`
//! wrappers for native callers.
//!
//! - this file: `Engine` (a model on a device), the options and results of a generation;
//! - `step`: `StepSession`, the face of one sequence on a backend (prefill, decode, draw),
//!   with the GPU `model::Session` and the CPU `ReferenceSession` behind it;
//! - `text`: `TextSession` and `Generator`, the one generation logic over any `StepSession`.

mod chat;
mod step;
mod text;

pub use chat::{Chat, ChatTurn};
pub use step::{MaybeSend, ReferenceSession, StepFuture, StepSession};
pub use text::{Generator, TextSession};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::load::{ModelSource, OpenModel};
use crate::cpu::{CpuModel, CpuOptions, CpuSession, CpuSessionOptions};
use crate::model::{GpuModel, Schedule, Session, SessionOptions};
use crate::sampling::SamplerConfig;
use crate::tokenizer::Tokenizer;
use crate::weights::{DType, Weights};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Where a model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// A hardware GPU adapter when there is one; else the CPU backend (software adapters such
    /// as llvmpipe, lavapipe, SwiftShader or WARP are slower than it). Named adapters
    /// (`GpuOptions::adapter`) are always used.
    #[default]
    Auto,
    /// A GPU adapter through wgpu (a software one too).
    Gpu,
    /// The native CPU backend (`crate::cpu`).
    Cpu,
}

impl Backend {
    pub fn parse(s: &str) -> Option<Backend> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Some(Backend::Auto),
            "gpu" => Some(Backend::Gpu),
            "cpu" => Some(Backend::Cpu),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Gpu => "gpu",
            Backend::Cpu => "cpu",
        }
    }
}

/// The loaded model of an engine: on a GPU, or on the CPU backend.
pub enum Device {
    Gpu { gpu: Arc<Gpu>, model: Arc<GpuModel> },
    Cpu(Arc<CpuModel>),
}

/// A model on a backend, with its tokenizer.
pub struct Engine {
    pub device: Device,
    pub tokenizer: Option<Arc<Tokenizer>>,
    /// Where it came from (for messages).
    pub source: String,
    /// `TextSession`s store their KV cache in f16 (`LoadOptions::kv_f16`).
    pub kv_f16: bool,
    /// Why `Backend::Auto` chose the backend it did (None for an explicit choice).
    pub choice: Option<String>,
}

/// Options for `Engine::load`.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Storage of the matrices (default: as stored; F16 for F16 files, GGUF blocks kept
    /// quantised, F32 otherwise on the GPU, BF16 kept on the CPU); a dtype converts every
    /// matrix to it.
    pub dtype: Option<DType>,
    pub backend: Backend,
    pub gpu: GpuOptions,
    pub cpu: CpuOptions,
    /// Sessions of this engine keep their KV cache in f16 (`SessionOptions::kv_f16`).
    pub kv_f16: bool,
}

/// Reads a model (a directory of PLT-SPEC section 1, or a `.gguf` file) into host memory:
/// config, weights and tokenizer (`load::read_host`).
pub fn read_model(path: &Path) -> Result<(Config, Weights, Option<Tokenizer>)> {
    crate::load::read_host(&path.into())
}

impl Engine {
    /// Loads a model (a path, or files in memory) onto the backend `opts` chooses: its headers
    /// are read and its plan made, then the tensors stream from the files to the device (or
    /// host memory). `progress(stage, fraction)` reports the upload.
    pub async fn load(src: impl Into<ModelSource>, opts: &LoadOptions, progress: &mut dyn FnMut(&str, f32)) -> Result<Engine> {
        let src = src.into();
        progress("reading", 0.0);
        let model = crate::load::open(&src)?;
        progress("reading", 1.0);
        Engine::from_open(model, opts, &src.to_string(), progress).await
    }

    /// An engine from an opened model (`load::open`) on the backend `opts` chooses.
    pub async fn from_open(model: OpenModel<'_>, opts: &LoadOptions, source: &str, progress: &mut dyn FnMut(&str, f32)) -> Result<Engine> {
        let (gpu, choice) = match opts.backend {
            Backend::Cpu => (None, None),
            Backend::Gpu => (Some(Gpu::new(&opts.gpu).await?), None),
            Backend::Auto => match Gpu::new(&opts.gpu).await {
                Ok(g) if !g.is_software() || opts.gpu.adapter.is_some() => (Some(g), None),
                Ok(g) => (None, Some(format!("the only GPU adapter is a software one ({}), slower than the CPU backend", g.describe()))),
                Err(Error::NoAdapter(msg)) if opts.gpu.adapter.is_none() => (None, Some(format!("no GPU adapter ({msg})"))),
                Err(e) => return Err(e),
            },
        };
        let mut e = match gpu {
            Some(g) => Engine::from_model(Arc::new(g), model, opts.dtype, source, progress)?,
            None => Engine::from_model_cpu(model, opts.dtype, &opts.cpu, source, progress)?,
        };
        e.kv_f16 = opts.kv_f16;
        e.choice = choice;
        Ok(e)
    }

    /// An engine on `gpu` from an opened model (`load::open`): its tokenizer is built and its
    /// tensors are streamed to the device.
    pub fn from_model(gpu: Arc<Gpu>, model: OpenModel<'_>, dtype: Option<DType>, source: &str, progress: &mut dyn FnMut(&str, f32)) -> Result<Engine> {
        let tokenizer = model.tokenizer()?;
        let model = GpuModel::load(gpu.clone(), model, dtype, &mut |f| progress("uploading", f))?;
        Ok(Engine::new(Device::Gpu { gpu, model: Arc::new(model) }, tokenizer, source))
    }

    /// An engine on the CPU backend from an opened model: the tensors stream into host memory
    /// in their storage formats.
    pub fn from_model_cpu(model: OpenModel<'_>, dtype: Option<DType>, opts: &CpuOptions, source: &str, progress: &mut dyn FnMut(&str, f32)) -> Result<Engine> {
        let tokenizer = model.tokenizer()?;
        let model = CpuModel::load(model, dtype, opts, &mut |f| progress("loading", f))?;
        Ok(Engine::new(Device::Cpu(Arc::new(model)), tokenizer, source))
    }

    fn new(device: Device, tokenizer: Option<Tokenizer>, source: &str) -> Engine {
        Engine { device, tokenizer: tokenizer.map(Arc::new), source: source.to_string(), kv_f16: false, choice: None }
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_blocking(src: impl Into<ModelSource>, opts: &LoadOptions, progress: &mut dyn FnMut(&str, f32)) -> Result<Engine> {
        pollster::block_on(Engine::load(src, opts, progress))
    }

    /// An engine on `gpu` from weights already in memory (e.g. fetched by a browser).
    pub fn from_parts(
        gpu: Arc<Gpu>,
        cfg: &Config,
        w: &Weights,
        tokenizer: Option<Tokenizer>,
        dtype: Option<DType>,
        source: &str,
        progress: &mut dyn FnMut(&str, f32),
    ) -> Result<Engine> {
        let model = GpuModel::new_with_progress(gpu.clone(), cfg, w, dtype, &mut |f| progress("uploading", f))?;
        Ok(Engine::new(Device::Gpu { gpu, model: Arc::new(model) }, tokenizer, source))
    }

    /// An engine on the CPU backend from weights in memory.
    pub fn from_parts_cpu(cfg: &Config, w: &Weights, tokenizer: Option<Tokenizer>, dtype: Option<DType>, opts: &CpuOptions, source: &str) -> Result<Engine> {
        let model = CpuModel::from_weights(cfg, w, dtype, opts)?;
        Ok(Engine::new(Device::Cpu(Arc::new(model)), tokenizer, source))
    }

    pub fn cfg(&self) -> &Config {
        match &self.device {
            Device::Gpu { model, .. } => &model.cfg,
            Device::Cpu(m) => &m.cfg,
        }
    }

    /// The GPU, for an engine on one.
    pub fn gpu(&self) -> Option<&Arc<Gpu>> {
        match &self.device {
            Device::Gpu { gpu, .. } => Some(gpu),
            Device::Cpu(_) => None,
        }
    }

    /// The model on the GPU, for an engine on one.
    pub fn gpu_model(&self) -> Option<&Arc<GpuModel>> {
        match &self.device {
            Device::Gpu { model, .. } => Some(model),
            Device::Cpu(_) => None,
        }
    }

    /// The model on the CPU backend, for an engine on it.
    pub fn cpu_model(&self) -> Option<&Arc<CpuModel>> {
        match &self.device {
            Device::Cpu(m) => Some(m),
            Device::Gpu { .. } => None,
        }
    }

    /// The backend it runs on: `gpu` or `cpu`.
    pub fn backend(&self) -> Backend {
        match self.device {
            Device::Gpu { .. } => Backend::Gpu,
            Device::Cpu(_) => Backend::Cpu,
        }
    }

    /// The adapter or the CPU backend, in words.
    pub fn describe(&self) -> String {
        match &self.device {
            Device::Gpu { gpu, .. } => gpu.describe(),
            Device::Cpu(m) => m.describe(),
        }
    }

    /// Bytes of the matrices a decode step reads.
    pub fn weight_bytes(&self) -> u64 {
        match &self.device {
            Device::Gpu { model, .. } => model.weight_bytes(),
            Device::Cpu(m) => m.weight_bytes(),
        }
    }

    /// A new sequence of up to `context` positions on this engine's backend.
    pub fn step_session(&self, context: usize) -> Result<Box<dyn StepSession>> {
        Ok(match &self.device {
            Device::Gpu { model, .. } => {
                let opts = SessionOptions { batch: 1, context, prefill_chunk: 128.min(context), kv_f16: self.kv_f16 };
                Box::new(Session::new(model.clone(), opts)?)
            }
            Device::Cpu(m) => Box::new(CpuSession::new(m.clone(), CpuSessionOptions { context, kv_f16: self.kv_f16 })?),
        })
    }

    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_deref().ok_or_else(|| Error::Tokenizer(format!("{} has no tokenizer", self.source)))
    }
}

/// How one generation runs.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Generation ends before any of these strings (they are not part of the output).
    pub stop: Vec<String>,
    /// End at the model's EOS token(s).
    pub stop_at_eos: bool,
    /// How a PLT model's decode steps run its loops.
    pub schedule: Schedule,
    /// Set from any thread to stop at the next token.
    pub cancel: Option<Arc<AtomicBool>>,
    /// When the context is full, keep its newer half (re-prefilled from position 0) and go on,
    /// instead of stopping with `FinishReason::ContextFull`.
    pub context_shift: bool,
}

impl GenerateOptions {
    /// Checks the options a caller may get wrong: the sampler's, and stop strings (an empty one
    /// would match before any text).
    pub fn validate(&self) -> Result<()> {
        self.sampler.validate()?;
        if self.stop.iter().any(|s| s.is_empty()) {
            return Err(Error::Input("stop strings must not be empty (an empty one matches before any text)".into()));
        }
        Ok(())
    }
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 128,
            sampler: SamplerConfig::default(),
            stop: Vec::new(),
            stop_at_eos: true,
            schedule: Schedule::Fused,
            cancel: None,
            context_shift: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum FinishReason {
    Eos,
    Stop(String),
    MaxTokens,
    Cancelled,
    ContextFull,
}

/// Timings of one generation (host wall time).
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub prompt_tokens: usize,
    pub prefill_ms: f64,
    pub generated_tokens: usize,
    pub decode_ms: f64,
}

impl Timings {
    /// Decode speed: generated tokens per second after the first.
    pub fn tokens_per_second(&self) -> f64 {
        if self.decode_ms > 0.0 {
            self.generated_tokens.saturating_sub(1) as f64 / (self.decode_ms / 1000.0)
        } else {
            0.0
        }
    }
    pub fn ms_per_token(&self) -> f64 {
        if self.generated_tokens > 1 {
            self.decode_ms / (self.generated_tokens - 1) as f64
        } else {
            0.0
        }
    }
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    pub finish: FinishReason,
    pub timings: Timings,
}

/// Milliseconds of host wall time.
fn now_ms() -> f64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::time::{SystemTime, UNIX_EPOCH};
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
    }
    #[cfg(target_arch = "wasm32")]
    {
        js_now()
    }
}

#[cfg(target_arch = "wasm32")]
fn js_now() -> f64 {
    // std's clocks panic on wasm32-unknown-unknown; the JS clock works in pages and workers.
    js_sys::Date::now()
}
