//! Text generation for apps: load a model (directory or GGUF file) with a progress callback,
//! open a session, stream text through a callback or an iterator, stop on EOS, stop strings or
//! a token budget, cancel, and keep the session for the next turn. Async inside; `_blocking`
//! wrappers for native callers.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::load::{ModelSource, OpenModel};
use crate::model::{Schedule, GpuModel, Session, SessionOptions};
use crate::sampling::SamplerConfig;
use crate::tokenizer::Tokenizer;
use crate::weights::{DType, Weights};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A model on a device, with its tokenizer.
pub struct Engine {
    pub gpu: Arc<Gpu>,
    pub model: Arc<GpuModel>,
    pub tokenizer: Option<Arc<Tokenizer>>,
    /// Where it came from (for messages).
    pub source: String,
    /// `TextSession`s store their KV cache in f16 (`LoadOptions::kv_f16`).
    pub kv_f16: bool,
}

/// Options for `Engine::load`.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Device storage of the matrices (default: as stored; F16 for F16 files, F32 otherwise).
    pub dtype: Option<DType>,
    pub gpu: GpuOptions,
    /// Sessions of this engine keep their KV cache in f16 (`SessionOptions::kv_f16`).
    pub kv_f16: bool,
}

/// Reads a model (a directory of PLT-SPEC section 1, or a `.gguf` file) into host memory:
/// config, weights and tokenizer (`load::read_host`).
pub fn read_model(path: &Path) -> Result<(Config, Weights, Option<Tokenizer>)> {
    crate::load::read_host(&path.into())
}

impl Engine {
    /// Loads a model (a path, or files in memory) onto a new device: its headers are read and
    /// its plan made, then the tensors stream from the files to the device.
    /// `progress(stage, fraction)` reports the upload.
    pub async fn load(src: impl Into<ModelSource>, opts: &LoadOptions, progress: &mut dyn FnMut(&str, f32)) -> Result<Engine> {
        let src = src.into();
        progress("reading", 0.0);
        let model = crate::load::open(&src)?;
        progress("reading", 1.0);
        let gpu = Arc::new(Gpu::new(&opts.gpu).await?);
        let mut e = Engine::from_model(gpu, model, opts.dtype, &src.to_string(), progress)?;
        e.kv_f16 = opts.kv_f16;
        Ok(e)
    }

    /// An engine on `gpu` from an opened model (`load::open`): its tokenizer is built and its
    /// tensors are streamed to the device.
    pub fn from_model(gpu: Arc<Gpu>, model: OpenModel<'_>, dtype: Option<DType>, source: &str, progress: &mut dyn FnMut(&str, f32)) -> Result<Engine> {
        let tokenizer = model.tokenizer()?;
        let model = GpuModel::load(gpu.clone(), model, dtype, &mut |f| progress("uploading", f))?;
        Ok(Engine { gpu, model: Arc::new(model), tokenizer: tokenizer.map(Arc::new), source: source.to_string(), kv_f16: false })
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_blocking(src: impl Into<ModelSource>, opts: &LoadOptions, progress: &mut dyn FnMut(&str, f32)) -> Result<Engine> {
        pollster::block_on(Engine::load(src, opts, progress))
    }

    /// An engine from weights already in memory (e.g. fetched by a browser).
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
        Ok(Engine { gpu, model: Arc::new(model), tokenizer: tokenizer.map(Arc::new), source: source.to_string(), kv_f16: false })
    }

    pub fn cfg(&self) -> &Config {
        &self.model.cfg
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

/// Longest suffix of `text` that is a proper prefix of one of `stops` (held back while streaming).
fn held_back(text: &str, stops: &[String]) -> usize {
    let mut keep = 0;
    for s in stops {
        for n in (1..s.len()).rev() {
            if n <= text.len() && text.is_char_boundary(text.len() - n) && s.is_char_boundary(n) && text.ends_with(&s[..n]) {
                keep = keep.max(n);
                break;
            }
        }
    }
    keep
}

/// A conversation with one model: one sequence whose caches persist across `generate` calls.
pub struct TextSession {
    pub engine: Arc<Engine>,
    session: Session,
    /// A token drawn but not yet fed to the model (fed first by the next call).
    pending: Option<u32>,
}

impl TextSession {
    pub fn new(engine: Arc<Engine>, context: usize) -> Result<TextSession> {
        let opts = SessionOptions { batch: 1, context, prefill_chunk: 128.min(context), kv_f16: engine.kv_f16 };
        let session = Session::new(engine.model.clone(), opts)?;
        Ok(TextSession { engine, session, pending: None })
    }

    /// Forgets the conversation.
    pub fn reset(&mut self) -> Result<()> {
        self.pending = None;
        self.session.reset(0)
    }

    /// Drops the older half of the context: the newer half is prefilled again from position 0
    /// (RoPE positions and PLT's carried states are recomputed, so the caches stay exact).
    pub async fn shift_context(&mut self) -> Result<()> {
        let all = self.session.tokens(0).to_vec();
        let keep = all[all.len() - (self.context() / 2).min(all.len())..].to_vec();
        self.session.reset(0)?;
        if !keep.is_empty() {
            self.session.prefill(0, &keep, crate::model::Logits::None).await?;
        }
        Ok(())
    }

    /// Tokens in the context so far.
    pub fn position(&self) -> usize {
        self.session.position(0)
    }

    pub fn context(&self) -> usize {
        self.session.opts.context
    }

    /// Continues the conversation with `prompt` (its text is encoded; BOS is added at the start
    /// of a conversation) and generates. `on_text` receives each complete piece of text and
    /// returns false to stop.
    pub async fn generate(&mut self, prompt: &str, opts: &GenerateOptions, on_text: &mut dyn FnMut(&str) -> bool) -> Result<Generation> {
        let ids = self.encode_prompt(prompt)?;
        self.generate_ids(&ids, opts, on_text).await
    }

    /// `generate` from token ids (fed as they are).
    pub async fn generate_ids(&mut self, ids: &[u32], opts: &GenerateOptions, on_text: &mut dyn FnMut(&str) -> bool) -> Result<Generation> {
        let mut g = Generator::start(self, ids, opts.clone()).await?;
        while let Some(piece) = g.next_piece().await? {
            if !on_text(&piece) {
                g.cancel();
            }
        }
        Ok(g.finish())
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate_blocking(&mut self, prompt: &str, opts: &GenerateOptions, on_text: &mut dyn FnMut(&str) -> bool) -> Result<Generation> {
        pollster::block_on(self.generate(prompt, opts, on_text))
    }

    /// The prompt's ids (BOS at the start of a conversation, when the model wants one).
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        let first = self.position() == 0 && self.pending.is_none();
        self.engine.tokenizer()?.encode(prompt, first)
    }

    /// A blocking iterator over the text pieces of one generation (native callers).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn stream(&mut self, prompt: &str, opts: GenerateOptions) -> Result<Generator<'_>> {
        let ids = self.encode_prompt(prompt)?;
        pollster::block_on(Generator::start(self, &ids, opts))
    }
}

/// One generation in progress: prefill done at `start`, then one decode step (one submit, one
/// small readback) per `next_piece` until a stop condition.
pub struct Generator<'a> {
    ts: &'a mut TextSession,
    tok: Arc<Tokenizer>,
    opts: GenerateOptions,
    stream: crate::tokenizer::StreamDecoder,
    next: u32,
    out_ids: Vec<u32>,
    text: String,
    emitted: usize,
    timings: Timings,
    t_decode: f64,
    finish: Option<FinishReason>,
}

impl<'a> Generator<'a> {
    /// Feeds the pending token and `prompt`, and draws the first token.
    pub async fn start(ts: &'a mut TextSession, prompt: &[u32], opts: GenerateOptions) -> Result<Generator<'a>> {
        opts.sampler.validate()?;
        let tok = ts.engine.tokenizer.clone().ok_or_else(|| Error::Tokenizer(format!("{} has no tokenizer", ts.engine.source)))?;
        let feed: Vec<u32> = ts.pending.iter().copied().chain(prompt.iter().copied()).collect();
        if feed.is_empty() {
            return Err(Error::Input("the prompt is empty".into()));
        }
        let room = ts.context() - ts.position();
        if feed.len() >= room {
            return Err(Error::Input(format!(
                "the prompt needs {} tokens but only {} of the context's {} are left",
                feed.len(),
                room.saturating_sub(1),
                ts.context()
            )));
        }
        ts.session.set_sampler(0, opts.sampler.clone())?;
        let t0 = now_ms();
        let next = ts.session.prefill_sample(0, &feed).await?;
        ts.pending = Some(next);
        let t1 = now_ms();
        let timings = Timings { prompt_tokens: feed.len(), prefill_ms: t1 - t0, ..Default::default() };
        Ok(Generator {
            ts,
            tok,
            opts,
            stream: crate::tokenizer::StreamDecoder::new(true),
            next,
            out_ids: Vec::new(),
            text: String::new(),
            emitted: 0,
            timings,
            t_decode: t1,
            finish: None,
        })
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> usize {
        self.out_ids.len()
    }

    /// Stops at the next step.
    pub fn cancel(&mut self) {
        if self.finish.is_none() {
            self.finish = Some(FinishReason::Cancelled);
        }
    }

    /// The next piece of text (never empty), or `None` when the generation is over.
    pub async fn next_piece(&mut self) -> Result<Option<String>> {
        loop {
            if self.finish.is_some() {
                return Ok(self.drain());
            }
            let next = self.next;
            if self.opts.stop_at_eos && self.tok.is_eos(next) {
                self.finish = Some(FinishReason::Eos);
                continue;
            }
            self.out_ids.push(next);
            if let Some(piece) = self.stream.push(&self.tok, next)? {
                self.text += &piece;
            }
            let stop = self.opts.stop.iter().filter_map(|s| self.text.find(s.as_str()).map(|i| (i, s.clone()))).min_by_key(|(i, _)| *i);
            let mut piece = None;
            if let Some((at, s)) = stop {
                self.text.truncate(at);
                self.finish = Some(FinishReason::Stop(s));
            } else {
                let safe = self.text.len() - held_back(&self.text, &self.opts.stop);
                if safe > self.emitted {
                    piece = Some(self.text[self.emitted..safe].to_string());
                    self.emitted = safe;
                }
                if self.opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                    self.finish = Some(FinishReason::Cancelled);
                } else if self.out_ids.len() >= self.opts.max_tokens {
                    self.finish = Some(FinishReason::MaxTokens);
                } else if self.ts.position() + 1 >= self.ts.context() && !self.opts.context_shift {
                    self.finish = Some(FinishReason::ContextFull);
                } else {
                    if self.ts.position() + 1 >= self.ts.context() {
                        self.ts.shift_context().await?;
                    }
                    let (ids, _) = self.ts.session.decode_sample(&[next], self.opts.schedule, false).await?;
                    self.next = ids[0];
                    self.ts.pending = Some(self.next);
                }
            }
            if piece.is_some() {
                return Ok(piece);
            }
        }
    }

    /// Text still held back once the generation is over.
    fn drain(&mut self) -> Option<String> {
        if !matches!(self.finish, Some(FinishReason::Stop(_))) {
            if let Ok(Some(rest)) = self.stream.flush(&self.tok) {
                self.text += &rest;
            }
        }
        if self.text.len() > self.emitted {
            let p = self.text[self.emitted..].to_string();
            self.emitted = self.text.len();
            return Some(p);
        }
        None
    }

    /// The whole generation (call after `next_piece` returned `None`, or to stop early).
    pub fn finish(mut self) -> Generation {
        if self.finish.is_none() {
            self.finish = Some(FinishReason::Cancelled);
        }
        self.drain();
        self.timings.generated_tokens = self.out_ids.len();
        self.timings.decode_ms = now_ms() - self.t_decode;
        Generation {
            text: std::mem::take(&mut self.text),
            tokens: std::mem::take(&mut self.out_ids),
            finish: self.finish.clone().unwrap_or(FinishReason::Cancelled),
            timings: self.timings,
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Iterator for Generator<'_> {
    type Item = Result<String>;
    fn next(&mut self) -> Option<Result<String>> {
        pollster::block_on(self.next_piece()).transpose()
    }
}
