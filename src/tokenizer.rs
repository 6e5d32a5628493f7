//! Text ↔ token ids: a Hugging Face `tokenizer.json` (the `tokenizers` crate) or a
//! SentencePiece vocabulary (`spm`, from GGUF files), the model's
//! special tokens (BOS/EOS from config.json, generation_config.json, tokenizer_config.json),
//! chat templates (Jinja, rendered with minijinja) and streaming detokenisation that never
//! emits half of a multi-byte character.

use crate::config::Config;
use crate::error::{Error, Result};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

pub mod spm;

/// What a model's tokenizer is built from (`Tokenizer::for_model`): the bytes of its
/// tokenizer.json and the values of the optional generation_config.json and
/// tokenizer_config.json. A GGUF file's tokenizer metadata is turned into the same three.
#[derive(Clone, Debug, Default)]
pub struct TokenizerInputs {
    /// Where `json` came from, for errors: `tokenizer.json`, or a GGUF file's metadata.
    pub source: String,
    pub json: Vec<u8>,
    pub generation_config: Option<serde_json::Value>,
    pub tokenizer_config: Option<serde_json::Value>,
}

impl TokenizerInputs {
    /// The text of one of the optional JSON files, parsed (the error names the file).
    pub fn parse_json(name: &str, bytes: &[u8]) -> Result<serde_json::Value> {
        serde_json::from_slice(bytes).map_err(|e| Error::Tokenizer(format!("{name}: not valid JSON: {e}")))
    }

    /// The files of a model directory; `None` when it has no tokenizer.json.
    pub fn from_dir(dir: &Path) -> Result<Option<TokenizerInputs>> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Ok(None);
        }
        let json = crate::load::source::read_bounded(&path, crate::load::source::MAX_TOKENIZER_BYTES)?;
        let read_json = |name: &str| -> Result<Option<serde_json::Value>> {
            let p = dir.join(name);
            if !p.exists() {
                return Ok(None);
            }
            let bytes = crate::load::source::read_bounded(&p, crate::load::source::MAX_CONFIG_BYTES)?;
            TokenizerInputs::parse_json(name, &bytes).map(Some)
        };
        Ok(Some(TokenizerInputs {
            source: "tokenizer.json".into(),
            json,
            generation_config: read_json("generation_config.json")?,
            tokenizer_config: read_json("tokenizer_config.json")?,
        }))
    }
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> ChatMessage {
        ChatMessage { role: role.to_string(), content: content.to_string() }
    }
}

/// The tokenizer proper: a Hugging Face one, or a SentencePiece vocabulary.
enum Inner {
    Hf(Box<tokenizers::Tokenizer>),
    Spm(Box<spm::Spm>),
}

impl Inner {
    fn token_to_id(&self, s: &str) -> Option<u32> {
        match self {
            Inner::Hf(t) => t.token_to_id(s),
            Inner::Spm(t) => t.token_to_id(s),
        }
    }
    fn id_to_token(&self, id: u32) -> Option<String> {
        match self {
            Inner::Hf(t) => t.id_to_token(id),
            Inner::Spm(t) => t.id_to_token(id),
        }
    }
    fn vocab_size(&self) -> usize {
        match self {
            Inner::Hf(t) => t.get_vocab_size(true),
            Inner::Spm(t) => t.vocab_size(),
        }
    }
}

pub struct Tokenizer {
    inner: Inner,
    pub bos: Option<u32>,
    pub eos: Vec<u32>,
    /// Prepend BOS when encoding a prompt (and the tokenizer's post-processor did not).
    pub add_bos: bool,
    pub chat_template: Option<String>,
}

impl Tokenizer {
    /// Parses a tokenizer (a tokenizer.json, or the SentencePiece document of
    /// `spm::SpmVocab::to_json`) and checks that every id it can produce is below `vocab_size`.
    pub fn from_bytes(bytes: &[u8], vocab_size: usize) -> Result<Tokenizer> {
        if spm::is_spm_json(bytes) {
            let t = spm::Spm::from_json(bytes)?;
            if t.vocab_size() > vocab_size {
                return Err(Error::Tokenizer(format!("the tokenizer has {} tokens but the model's vocab_size is {vocab_size}", t.vocab_size())));
            }
            return Ok(Tokenizer { inner: Inner::Spm(Box::new(t)), bos: None, eos: Vec::new(), add_bos: false, chat_template: None });
        }
        // tokenizers 0.22 panics (`.expect("Helper")`) on some malformed JSON, e.g. a file cut
        // inside its "decoder" object: turn that into an error too (found by fuzzing).
        let parsed = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(bytes)).map_err(|p| {
            let why = p.downcast_ref::<String>().map(String::as_str).or_else(|| p.downcast_ref::<&str>().copied());
            Error::Tokenizer(format!("malformed tokenizer.json ({})", why.unwrap_or("the parser panicked")))
        })?;
        let inner = parsed.map_err(|e| Error::Tokenizer(e.to_string()))?;
        let n = inner.get_vocab_size(true);
        if n > vocab_size {
            return Err(Error::Tokenizer(format!("the tokenizer has {n} tokens but the model's vocab_size is {vocab_size}")));
        }
        // The count alone does not bound the ids: a vocabulary may skip ids (`{"a": 4000000000}`).
        if let Some((tok, id)) = inner.get_vocab(true).into_iter().max_by_key(|&(_, id)| id).filter(|&(_, id)| id as usize >= vocab_size) {
            return Err(Error::Tokenizer(format!("token {tok:?} has id {id}, outside the model's vocab_size {vocab_size}")));
        }
        Ok(Tokenizer { inner: Inner::Hf(Box::new(inner)), bos: None, eos: Vec::new(), add_bos: false, chat_template: None })
    }

    pub fn from_file(path: &Path, vocab_size: usize) -> Result<Tokenizer> {
        let bytes = crate::load::source::read_bounded(path, crate::load::source::MAX_TOKENIZER_BYTES)?;
        Tokenizer::from_bytes(&bytes, vocab_size).map_err(|e| e.in_file(&path.display().to_string()))
    }

    /// The tokenizer of a model directory (`TokenizerInputs::from_dir`, `for_model`); `None`
    /// when the directory has no tokenizer.json.
    pub fn from_dir(dir: &Path, cfg: &Config) -> Result<Option<Tokenizer>> {
        TokenizerInputs::from_dir(dir)?.map(|i| Tokenizer::for_model(&i, cfg)).transpose()
    }

    /// A model's tokenizer with its special tokens and chat template, by one set of rules for
    /// every kind of model (a directory, a GGUF file, the browser's fetched files):
    /// - BOS and EOS ids from config.json, replaced by generation_config.json's `bos_token_id` /
    ///   `eos_token_id` (an id or a list) where it has them;
    /// - tokenizer_config.json's `chat_template` and `add_bos_token`, and its `bos_token` /
    ///   `eos_token` (text, or `{"content": text}`) for BOS / EOS still unset.
    ///
    /// Every special id must be inside the model's vocabulary.
    pub fn for_model(inputs: &TokenizerInputs, cfg: &Config) -> Result<Tokenizer> {
        let mut t = Tokenizer::from_bytes(&inputs.json, cfg.vocab_size).map_err(|e| e.in_file(&inputs.source))?;
        t.bos = cfg.bos_token_id;
        t.eos = cfg.eos_token_ids.clone();
        if let Some(g) = &inputs.generation_config {
            // Each id checked whole (a u64 cast to u32 would wrap into the vocabulary).
            let id = |field: &str, v: &serde_json::Value| match v.as_u64() {
                Some(n) if n < cfg.vocab_size as u64 => Ok(n as u32),
                Some(n) => Err(Error::Input(format!(
                    "generation_config.json: field `{field}`: token id {n} is outside the vocabulary (vocab_size {})",
                    cfg.vocab_size
                ))),
                None => Err(Error::Input(format!("generation_config.json: field `{field}`: expected a token id, got {v}"))),
            };
            match g.get("bos_token_id") {
                None | Some(serde_json::Value::Null) => {}
                Some(v) => t.bos = Some(id("bos_token_id", v)?),
            }
            match g.get("eos_token_id") {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::Array(a)) => t.eos = a.iter().map(|v| id("eos_token_id", v)).collect::<Result<_>>()?,
                Some(v) => t.eos = vec![id("eos_token_id", v)?],
            }
        }
        if let Some(tc) = &inputs.tokenizer_config {
            let bad = |field: &str, want: &str, v: &serde_json::Value| {
                let mut got = v.to_string();
                if got.len() > 80 {
                    got = format!("{}...", got.chars().take(60).collect::<String>());
                }
                Error::Tokenizer(format!("tokenizer_config.json: field `{field}`: expected {want}, got {got}"))
            };
            t.chat_template = match tc.get("chat_template") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                // Several named templates: the one named "default", as transformers takes it.
                Some(v @ serde_json::Value::Array(list)) => {
                    let named = |e: &serde_json::Value| Some((e.get("name")?.as_str()?.to_string(), e.get("template")?.as_str()?.to_string()));
                    let list: Vec<(String, String)> =
                        list.iter().map(named).collect::<Option<_>>().ok_or_else(|| bad("chat_template", "a string or a list of {\"name\", \"template\"} objects", v))?;
                    let default = list.into_iter().find(|(n, _)| n == "default");
                    Some(default.ok_or_else(|| bad("chat_template", "a template named \"default\" in the list", v))?.1)
                }
                Some(v) => return Err(bad("chat_template", "a string or a list of {\"name\", \"template\"} objects", v)),
            };
            match tc.get("add_bos_token") {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::Bool(b)) => t.add_bos = *b,
                Some(v) => return Err(bad("add_bos_token", "true or false", v)),
            }
            let special = |key: &str| -> Result<Option<String>> {
                match tc.get(key) {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                    Some(v) => match v.get("content") {
                        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                        _ => Err(bad(key, "a token's text or {\"content\": text}", v)),
                    },
                }
            };
            let (bos_text, eos_text) = (special("bos_token")?, special("eos_token")?);
            if t.bos.is_none() {
                t.bos = bos_text.and_then(|s| t.inner.token_to_id(&s));
            }
            if t.eos.is_empty() {
                t.eos = eos_text.and_then(|s| t.inner.token_to_id(&s)).into_iter().collect();
            }
        }
        for &id in t.bos.iter().chain(&t.eos) {
            if id as usize >= cfg.vocab_size {
                return Err(Error::Tokenizer(format!("special token id {id} is outside the vocabulary ({})", cfg.vocab_size)));
            }
        }
        Ok(t)
    }

    /// Token ids of `text`. Special-token strings in the text (e.g. `<|im_start|>`) become their
    /// ids; with `add_bos`, BOS is prepended unless the tokenizer already put it there.
    /// Text longer than `MAX_TEXT_BYTES` is an error.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(Error::Tokenizer(format!(
                "text of {} bytes is more than the {MAX_TEXT_BYTES} bytes the tokenizer takes",
                text.len()
            )));
        }
        let mut ids = match &self.inner {
            Inner::Hf(t) => t.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?.get_ids().to_vec(),
            Inner::Spm(t) => t.encode(text)?,
        };
        if add_bos && self.add_bos {
            if let Some(b) = self.bos {
                if ids.first() != Some(&b) {
                    ids.insert(0, b);
                }
            }
        }
        Ok(ids)
    }

    /// Text of `ids` (special tokens included unless `skip_special`).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        match &self.inner {
            Inner::Hf(t) => t.decode(ids, skip_special).map_err(|e| Error::Tokenizer(e.to_string())),
            Inner::Spm(t) => t.decode(ids, skip_special),
        }
    }

    /// Text of `ids` as a continuation of earlier text: `decode`, but a SentencePiece
    /// tokenizer keeps the leading space that `decode` removes (the one its encoder puts in
    /// front of a text), so that generated text streams with the spaces between words.
    pub fn decode_continuation(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        match &self.inner {
            Inner::Spm(t) => t.decode_continuation(ids, skip_special),
            Inner::Hf(_) => self.decode(ids, skip_special),
        }
    }

    /// Whether this is a SentencePiece tokenizer (`spm`).
    pub fn is_sentencepiece(&self) -> bool {
        matches!(self.inner, Inner::Spm(_))
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos.contains(&id)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }


    /// Renders `messages` with the model's chat template (or a plain `role: content` layout
    /// when it has none). A template whose text grows past `MAX_TEXT_BYTES` stops there with
    /// an error, in its output or in text it captures (`{% set %}` blocks, filter blocks).
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let Some(template) = &self.chat_template else {
            let mut s = String::new();
            for m in messages {
                s += &format!("{}: {}\n", m.role, m.content);
            }
            if add_generation_prompt {
                s += "assistant:";
            }
            return Ok(s);
        };
        let mut env = minijinja::Environment::new();
        // The template comes from the model files: bound its work (nested loops can run for
        // hours) so that a hostile one is an error, not a hang.
        env.set_fuel(Some(CHAT_TEMPLATE_FUEL));
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        // Bound the text it makes as well: the output goes to a writer that refuses bytes past
        // the limit, and every `{{ ... }}` is counted, wherever it goes (a captured block
        // collects its text in memory without reaching the writer). Either stops the
        // rendering at once.
        let exceeded = Arc::new(AtomicBool::new(false));
        let left = Arc::new(AtomicUsize::new(MAX_TEXT_BYTES));
        let (exceeded_f, left_f) = (exceeded.clone(), left.clone());
        env.set_formatter(move |out, state, value| {
            let mut size = ByteCount { n: 0, max: MAX_TEXT_BYTES };
            let fits = write!(size, "{value}").is_ok()
                && left_f.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(size.n)).is_ok();
            if !fits {
                exceeded_f.store(true, Ordering::Relaxed);
                return Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, template_too_long()));
            }
            minijinja::escape_formatter(out, state, value)
        });
        let tmpl = env.template_from_str(template).map_err(|e| Error::Tokenizer(format!("chat template: {e}")))?;
        let tok_text = |id: Option<u32>| id.and_then(|i| self.inner.id_to_token(i)).unwrap_or_default();
        let mut out = BoundedWriter { buf: Vec::new(), exceeded: false };
        let rendered = tmpl.render_captured_to(
            minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => tok_text(self.bos),
                eos_token => tok_text(self.eos.first().copied()),
            },
            &mut out,
        );
        if out.exceeded || exceeded.load(Ordering::Relaxed) {
            return Err(Error::Tokenizer(template_too_long()));
        }
        rendered.map_err(|e| Error::Tokenizer(format!("chat template: {e}")))?;
        String::from_utf8(out.buf).map_err(|e| Error::Tokenizer(format!("chat template: output is not UTF-8: {e}")))
    }
}

/// GPT-2's byte-level alphabet: the printable character that byte-level BPE tokenizers use for
/// each byte value (printable Latin-1 bytes stand for themselves, the others map to U+0100..).
/// For building or reading byte-level vocabularies (tests, fuzz harnesses, converters).
pub fn byte_level_alphabet() -> Vec<char> {
    let mut bs: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = vec![' '; 256];
    for (b, c) in bs.iter().zip(&cs) {
        out[*b as usize] = char::from_u32(*c).unwrap_or(' ');
    }
    out
}

/// minijinja instructions a chat template may run per rendering: real templates take a few
/// hundred per message, so this covers conversations of tens of thousands of messages and stops
/// a runaway template within a second or two.
pub const CHAT_TEMPLATE_FUEL: u64 = 20_000_000;

/// The most bytes of text the tokenizer encodes, and the most a chat template may render: about
/// 4 million tokens, far more than any model's context, while the tokenizer's working tables
/// (up to ~170 bytes per input byte) stay within a few GB.
pub const MAX_TEXT_BYTES: usize = 16 << 20;

fn template_too_long() -> String {
    format!("chat template output exceeds {MAX_TEXT_BYTES} bytes")
}

/// Counts the bytes written to it, failing past `max` (so that formatting a huge value stops).
struct ByteCount {
    n: usize,
    max: usize,
}

impl std::fmt::Write for ByteCount {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.n += s.len();
        if self.n > self.max {
            return Err(std::fmt::Error);
        }
        Ok(())
    }
}

/// Collects a rendering, refusing any write that would take it past `MAX_TEXT_BYTES`.
struct BoundedWriter {
    buf: Vec<u8>,
    exceeded: bool,
}

impl std::io::Write for BoundedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > MAX_TEXT_BYTES {
            self.exceeded = true;
            return Err(std::io::Error::other(template_too_long()));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Incremental detokenisation: decodes a sliding window of recent ids and emits only text that
/// is complete (a piece ending in U+FFFD is a character still missing bytes, so it waits).
#[derive(Clone, Debug, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    /// ids[prefix..read] is context already emitted; ids[read..] not yet.
    prefix: usize,
    read: usize,
    skip_special: bool,
}

/// Ids a `StreamDecoder` may hold back waiting for the rest of a character (see `push`).
const HOLD_BACK_IDS: usize = 4;

impl StreamDecoder {
    pub fn new(skip_special: bool) -> StreamDecoder {
        StreamDecoder { skip_special, ..Default::default() }
    }

    /// Adds one id; returns the new complete text, if any.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<Option<String>> {
        // An id that decodes to nothing (a special token skipped, an empty piece) adds no
        // bytes: it stays out of the window, so that the ids held back below are ones that
        // carry bytes (a character split by such ids would otherwise be cut before its end).
        if tok.decode_continuation(&[id], self.skip_special)?.is_empty() {
            return Ok(None);
        }
        self.ids.push(id);
        let before = tok.decode_continuation(&self.ids[self.prefix..self.read], self.skip_special)?;
        let now = tok.decode_continuation(&self.ids[self.prefix..], self.skip_special)?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') && now.starts_with(&before) {
            let piece = now[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            return Ok(Some(piece));
        }
        // Held back while the text ends in U+FFFD: a character still missing bytes, or bytes that
        // are not UTF-8 at all (they never complete). A character has at most 4 bytes, and each
        // id in the window carries at least one, so once more than 4 ids are pending, the text up to the last 4 of them is final when decoding
        // more ids did not change it: emit that, so the window (and each push's work) stays bounded.
        let pending = self.ids.len() - self.read;
        if pending > HOLD_BACK_IDS && now.starts_with(&before) {
            let cut = self.ids.len() - HOLD_BACK_IDS;
            let head = tok.decode_continuation(&self.ids[self.prefix..cut], self.skip_special)?;
            if head.len() > before.len() && now.starts_with(&head) && head.starts_with(&before) {
                let piece = head[before.len()..].to_string();
                self.prefix = self.read;
                self.read = cut;
                return Ok(Some(piece));
            }
        }
        if !now.starts_with(&before) {
            // Decoding is not prefix-stable here (a normaliser joined pieces): restart the window.
            let piece = now.get(before.len()..).unwrap_or("").to_string();
            self.prefix = self.ids.len();
            self.read = self.ids.len();
            return Ok((!piece.is_empty()).then_some(piece));
        }
        Ok(None)
    }

    /// Whatever is still held back (at the end of a generation).
    pub fn flush(&mut self, tok: &Tokenizer) -> Result<Option<String>> {
        let before = tok.decode_continuation(&self.ids[self.prefix..self.read], self.skip_special)?;
        let now = tok.decode_continuation(&self.ids[self.prefix..], self.skip_special)?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        let piece = now.get(before.len()..).unwrap_or("").to_string();
        Ok((!piece.is_empty()).then_some(piece))
    }
}
