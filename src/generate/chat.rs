//! `Chat`: a multi-turn conversation over a `TextSession`, with the model's chat template and
//! one policy for a full context, shared by the CLI and the browser. Each turn feeds only what
//! the template adds to what was fed before; when the next message and room for a reply do not
//! fit what is left of the context, the conversation starts over from its messages with the
//! oldest turns dropped (the system messages are kept), and the turn says how many it dropped.
//! A reply cut by the context end (or a context shift inside a long reply) leaves the session
//! out of step with the messages: the next turn starts over the same way. A turn never ends
//! the conversation: only a message that cannot fit even alone is an error, and the message is
//! not kept.

use super::text::TextSession;
use super::{FinishReason, GenerateOptions, Generation};
use crate::error::{Error, Result};
use crate::tokenizer::ChatMessage;

/// A conversation: its messages and what of them the session holds.
#[derive(Clone, Debug, Default)]
pub struct Chat {
    pub messages: Vec<ChatMessage>,
    /// The rendered conversation the session has been fed (no generation prompt).
    fed: String,
    /// The session's context no longer holds exactly `fed` (a reply was cut or shifted).
    stale: bool,
}

/// What one turn did.
#[derive(Clone, Debug)]
pub struct ChatTurn {
    pub generation: Generation,
    /// The reply as kept in the conversation (trimmed).
    pub reply: String,
    /// Oldest messages dropped (not counting system messages) to make room for this turn.
    pub dropped: usize,
    /// The session started over from the messages (after dropping, or because the previous
    /// reply left it out of step).
    pub restarted: bool,
}

impl Chat {
    /// A conversation with an optional system prompt.
    pub fn new(system: Option<&str>) -> Chat {
        Chat { messages: system.filter(|s| !s.is_empty()).map(|s| vec![ChatMessage::new("system", s)]).unwrap_or_default(), ..Default::default() }
    }

    /// Forgets every turn (the system messages stay) and the session's context.
    pub fn reset(&mut self, ts: &mut TextSession) -> Result<()> {
        self.messages.retain(|m| m.role == "system");
        self.fed.clear();
        self.stale = false;
        ts.reset()
    }

    /// Says that the session was used for something else (reset, or another prompt): the next
    /// turn starts over from the messages.
    pub fn session_lost(&mut self) {
        self.stale = true;
    }

    /// Takes back the last exchange: the last user message and the reply after it (for a
    /// "regenerate"); returns the user's message, or None when there is no user message. The
    /// next turn starts over from the messages that remain.
    pub fn undo(&mut self) -> Option<String> {
        let at = self.messages.iter().rposition(|m| m.role == "user")?;
        let user = self.messages.remove(at).content;
        self.messages.truncate(at);
        self.stale = true;
        Some(user)
    }

    /// Positions to keep free for the reply: the token budget, at most half the context.
    fn reserve(ts: &TextSession, opts: &GenerateOptions) -> usize {
        opts.max_tokens.clamp(1, (ts.context() / 2).max(1))
    }

    /// Adds `user`'s message and generates the assistant's reply (`on_text` as for
    /// `TextSession::generate`).
    pub async fn turn(&mut self, ts: &mut TextSession, user: &str, opts: &GenerateOptions, on_text: &mut dyn FnMut(&str) -> bool) -> Result<ChatTurn> {
        opts.validate()?;
        self.messages.push(ChatMessage::new("user", user));
        let (prompt, dropped, restarted) = match self.prepare(ts, opts) {
            Ok(p) => p,
            Err(e) => {
                self.messages.pop();
                return Err(e);
            }
        };
        if restarted {
            ts.reset()?;
        }
        let shifts = ts.shifts();
        let generation = match ts.generate(&prompt, opts, on_text).await {
            Ok(g) => g,
            Err(e) => {
                // The session may hold part of the prompt: start over next time.
                self.messages.pop();
                self.stale = true;
                return Err(e);
            }
        };
        let reply = generation.text.trim().to_string();
        self.messages.push(ChatMessage::new("assistant", &reply));
        let tok = ts.tokenizer()?;
        self.fed = tok.apply_chat_template(&self.messages, false)?;
        // A reply cut by the context end, or one during which the context shifted, leaves the
        // session holding something other than `fed`.
        self.stale = generation.finish == FinishReason::ContextFull || ts.shifts() != shifts;
        Ok(ChatTurn { generation, reply, dropped, restarted })
    }

    /// The text to feed for the last message: the template's addition to what was fed, or
    /// (restart) the whole rendering with the oldest turns dropped until it and the reply's
    /// reserve fit the context. Returns (text, messages dropped, restart).
    fn prepare(&mut self, ts: &mut TextSession, opts: &GenerateOptions) -> Result<(String, usize, bool)> {
        let tok = ts.tokenizer()?;
        let reserve = Self::reserve(ts, opts);
        let context = ts.context();
        let full = tok.apply_chat_template(&self.messages, true)?;
        if !self.stale && !self.fed.is_empty() {
            if let Some(rest) = full.strip_prefix(self.fed.as_str()) {
                // +1: the token drawn last and not yet fed.
                let need = tok.encode(rest, false)?.len() + 1;
                if ts.position() + need + reserve <= context {
                    return Ok((rest.to_string(), 0, false));
                }
            }
        }
        // Start over from the messages, dropping the oldest turns until they fit.
        // (On a copy: a message that cannot fit leaves the conversation as it was.)
        let mut kept = self.messages.clone();
        let mut dropped = 0;
        let restart = ts.position() > 0;
        loop {
            let full = tok.apply_chat_template(&kept, true)?;
            let need = tok.encode(&full, true)?.len();
            if need + reserve <= context {
                self.messages = kept;
                return Ok((full, dropped, restart));
            }
            // The oldest message that is not a system message, unless it is the new one.
            let non_system: Vec<usize> = kept.iter().enumerate().filter(|(_, m)| m.role != "system").map(|(i, _)| i).collect();
            if non_system.len() <= 1 {
                return Err(Error::Input(format!(
                    "the message needs {need} tokens with the conversation's system prompt, but the context holds {context} with {reserve} kept for the reply"
                )));
            }
            kept.remove(non_system[0]);
            dropped += 1;
        }
    }
}
