//! The face of one sequence that generation drives, `StepSession`, and its implementations:
//! the GPU `model::Session` (sequence 0; the sampler runs on the device and only the id comes
//! back) and `ReferenceSession` (the CPU reference decoder with `sampling::sample_cpu`).
//!
//! Both draw with the same rules and the same random numbers: the draw for a token depends on
//! the logits, the sampler, the tokens held (the repetition penalty's window) and the position
//! of the token drawn (the RNG's step), never on the backend. So the same logits give the same
//! ids on every backend, and `Generator` runs one generation logic over any of them.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{Logits, Schedule, Session};
use crate::reference::DecodeState;
use crate::sampling::{sample_cpu, SamplerConfig};
use crate::weights::Weights;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A step's result, later. `Send` on native targets; on the web (one thread, GPU futures that
/// are not `Send`) without the bound.
#[cfg(not(target_arch = "wasm32"))]
pub type StepFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;
#[cfg(target_arch = "wasm32")]
pub type StepFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + 'a>>;

/// `Send` on native targets (a session can move to another thread), no bound on the web.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + ?Sized> MaybeSend for T {}
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSend for T {}

/// One sequence of a model on some backend: its caches, the tokens it holds and a sampler.
/// Every call that draws uses the sampler set last; the id drawn is for position
/// `position()` after the call's tokens are fed (the RNG's step), from row 0.
pub trait StepSession: MaybeSend {
    /// Feeds `tokens` at the next positions, drawing nothing.
    fn prefill<'a>(&'a mut self, tokens: &'a [u32]) -> StepFuture<'a, ()>;

    /// Feeds `tokens` at the next positions and draws the next id.
    fn prefill_sample<'a>(&'a mut self, tokens: &'a [u32]) -> StepFuture<'a, u32>;

    /// Feeds one token and draws the next id. `schedule`: how a PLT model's loops run where
    /// the backend offers a choice (the numbers are the same either way).
    fn decode_sample(&mut self, token: u32, schedule: Schedule) -> StepFuture<'_, u32>;

    /// Forgets the sequence: position 0, no tokens, carried states zero.
    fn reset(&mut self) -> Result<()>;

    /// Tokens fed so far (the next position).
    fn position(&self) -> usize;

    /// Positions the sequence can hold.
    fn context(&self) -> usize;

    fn set_sampler(&mut self, sampler: SamplerConfig) -> Result<()>;

    /// The tokens fed so far, in order.
    fn tokens(&self) -> &[u32];

    /// Drops the older half of the context: the newer half is fed again from position 0
    /// (RoPE positions and PLT's carried states are recomputed, so the caches stay exact).
    fn shift_context(&mut self) -> StepFuture<'_, ()> {
        Box::pin(async move {
            let all = self.tokens();
            let keep = all[all.len() - (self.context() / 2).min(all.len())..].to_vec();
            self.reset()?;
            if !keep.is_empty() {
                self.prefill(&keep).await?;
            }
            Ok(())
        })
    }
}

/// The GPU session as a `StepSession`: it drives sequence 0 (a session of batch 1).
impl StepSession for Session {
    fn prefill<'a>(&'a mut self, tokens: &'a [u32]) -> StepFuture<'a, ()> {
        Box::pin(async move { Session::prefill(self, 0, tokens, Logits::None).await.map(|_| ()) })
    }

    fn prefill_sample<'a>(&'a mut self, tokens: &'a [u32]) -> StepFuture<'a, u32> {
        Box::pin(Session::prefill_sample(self, 0, tokens))
    }

    fn decode_sample(&mut self, token: u32, schedule: Schedule) -> StepFuture<'_, u32> {
        Box::pin(async move {
            let (ids, _) = Session::decode_sample(self, &[token], schedule, false).await?;
            ids.first().copied().ok_or_else(|| Error::Gpu("no token was sampled".into()))
        })
    }

    fn reset(&mut self) -> Result<()> {
        Session::reset(self, 0)
    }

    fn position(&self) -> usize {
        Session::position(self, 0)
    }

    fn context(&self) -> usize {
        self.opts.context
    }

    fn set_sampler(&mut self, sampler: SamplerConfig) -> Result<()> {
        Session::set_sampler(self, 0, sampler)
    }

    fn tokens(&self) -> &[u32] {
        Session::tokens(self, 0)
    }
}

/// One sequence on the CPU reference (`reference::DecodeState`, f64 accumulation: exact and
/// slow), drawing with `sampling::sample_cpu`, the GPU sampler's reference.
pub struct ReferenceSession {
    cfg: Config,
    weights: Arc<Weights>,
    state: DecodeState,
    tokens: Vec<u32>,
    sampler: SamplerConfig,
    context: usize,
}

impl ReferenceSession {
    /// A sequence of up to `context` positions of the model (`cfg`, `weights`).
    pub fn new(cfg: &Config, weights: Arc<Weights>, context: usize) -> Result<ReferenceSession> {
        cfg.validate()?;
        if context == 0 || context > cfg.max_position_embeddings {
            return Err(Error::Input(format!(
                "context {context} must be between 1 and max_position_embeddings ({})",
                cfg.max_position_embeddings
            )));
        }
        Ok(ReferenceSession {
            state: DecodeState::new(cfg),
            cfg: cfg.clone(),
            weights,
            tokens: Vec::new(),
            sampler: SamplerConfig::default(),
            context,
        })
    }

    /// Feeds `tokens` one position at a time; returns the logits after the last one.
    fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let v = self.cfg.vocab_size;
        if tokens.is_empty() {
            return Err(Error::Input("prefill needs at least one token".into()));
        }
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= v) {
            return Err(Error::Input(format!("token id {t} is out of range (vocab_size {v})")));
        }
        let start = self.tokens.len();
        if start + tokens.len() > self.context {
            return Err(Error::Input(format!(
                "{} tokens after position {start} exceed the session's context of {}",
                tokens.len(),
                self.context
            )));
        }
        let mut logits = Vec::new();
        for &t in tokens {
            logits = self.state.step(&self.cfg, &self.weights, t);
            self.tokens.push(t);
        }
        Ok(logits)
    }

    /// The id drawn from `logits` at the current position (row 0).
    fn draw(&self, logits: &[f32]) -> u32 {
        sample_cpu(logits, &self.tokens, &self.sampler, self.tokens.len() as u32, 0)
    }
}

impl StepSession for ReferenceSession {
    fn prefill<'a>(&'a mut self, tokens: &'a [u32]) -> StepFuture<'a, ()> {
        Box::pin(async move { self.feed(tokens).map(|_| ()) })
    }

    fn prefill_sample<'a>(&'a mut self, tokens: &'a [u32]) -> StepFuture<'a, u32> {
        Box::pin(async move {
            let logits = self.feed(tokens)?;
            Ok(self.draw(&logits))
        })
    }

    fn decode_sample(&mut self, token: u32, _schedule: Schedule) -> StepFuture<'_, u32> {
        Box::pin(async move {
            let logits = self.feed(&[token])?;
            Ok(self.draw(&logits))
        })
    }

    fn reset(&mut self) -> Result<()> {
        self.state = DecodeState::new(&self.cfg);
        self.tokens.clear();
        Ok(())
    }

    fn position(&self) -> usize {
        self.tokens.len()
    }

    fn context(&self) -> usize {
        self.context
    }

    fn set_sampler(&mut self, sampler: SamplerConfig) -> Result<()> {
        sampler.validate()?;
        self.sampler = sampler;
        Ok(())
    }

    fn tokens(&self) -> &[u32] {
        &self.tokens
    }
}
