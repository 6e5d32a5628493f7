//! `TextSession`, a conversation over any `StepSession`, and `Generator`, one generation in
//! progress: the prompt fed, then one step per token until EOS, a stop string, the token
//! budget, a cancel or a full context. The same logic runs on every backend.

use super::step::StepSession;
use super::{now_ms, Engine, FinishReason, GenerateOptions, Generation, Timings};
use crate::error::{Error, Result};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use std::sync::atomic::Ordering;
use std::sync::Arc;

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
    session: Box<dyn StepSession>,
    tokenizer: Option<Arc<Tokenizer>>,
    /// The model's name in messages.
    source: String,
    /// A token drawn but not yet fed to the model (fed first by the next call).
    pending: Option<u32>,
    /// Context shifts so far (`shift_context`).
    shifts: usize,
}

impl TextSession {
    /// A conversation of up to `context` positions on `engine`'s backend.
    pub fn new(engine: Arc<Engine>, context: usize) -> Result<TextSession> {
        Ok(TextSession::with_backend(engine.step_session(context)?, engine.tokenizer.clone(), &engine.source))
    }

    /// A conversation on any backend (e.g. `ReferenceSession` on the CPU). `source` names the
    /// model in messages.
    pub fn with_backend(session: Box<dyn StepSession>, tokenizer: Option<Arc<Tokenizer>>, source: &str) -> TextSession {
        TextSession { session, tokenizer, source: source.to_string(), pending: None, shifts: 0 }
    }

    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_deref().ok_or_else(|| self.no_tokenizer())
    }

    fn no_tokenizer(&self) -> Error {
        Error::Tokenizer(format!("{} has no tokenizer", self.source))
    }

    /// The backend's sequence.
    pub fn backend(&self) -> &dyn StepSession {
        self.session.as_ref()
    }

    /// Forgets the conversation.
    pub fn reset(&mut self) -> Result<()> {
        self.pending = None;
        self.session.reset()
    }

    /// Drops the older half of the context (`StepSession::shift_context`).
    pub async fn shift_context(&mut self) -> Result<()> {
        self.session.shift_context().await?;
        self.shifts += 1;
        Ok(())
    }

    /// Context shifts so far.
    pub fn shifts(&self) -> usize {
        self.shifts
    }

    /// Tokens in the context so far.
    pub fn position(&self) -> usize {
        self.session.position()
    }

    pub fn context(&self) -> usize {
        self.session.context()
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
        self.tokenizer()?.encode(prompt, first)
    }

    /// A blocking iterator over the text pieces of one generation (native callers).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn stream(&mut self, prompt: &str, opts: GenerateOptions) -> Result<Generator<'_>> {
        let ids = self.encode_prompt(prompt)?;
        pollster::block_on(Generator::start(self, &ids, opts))
    }
}

/// One generation in progress: prefill done at `start`, then one decode step (on the GPU: one
/// submit, one small readback) per `next_piece` until a stop condition.
pub struct Generator<'a> {
    ts: &'a mut TextSession,
    tok: Arc<Tokenizer>,
    opts: GenerateOptions,
    stream: StreamDecoder,
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
        opts.validate()?;
        let tok = ts.tokenizer.clone().ok_or_else(|| ts.no_tokenizer())?;
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
        ts.session.set_sampler(opts.sampler.clone())?;
        let t0 = now_ms();
        let next = ts.session.prefill_sample(&feed).await?;
        ts.pending = Some(next);
        let t1 = now_ms();
        let timings = Timings { prompt_tokens: feed.len(), prefill_ms: t1 - t0, ..Default::default() };
        let opts_max_tokens = opts.max_tokens;
        Ok(Generator {
            ts,
            tok,
            opts,
            stream: StreamDecoder::new(true),
            next,
            out_ids: Vec::new(),
            text: String::new(),
            emitted: 0,
            timings,
            t_decode: t1,
            // No token asked for: the prompt is fed (and the next token drawn, pending), nothing
            // is emitted.
            finish: (opts_max_tokens == 0).then_some(FinishReason::MaxTokens),
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
                    self.next = self.ts.session.decode_sample(next, self.opts.schedule).await?;
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
