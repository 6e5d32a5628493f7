//! SentencePiece vocabularies as llama.cpp runs them (`tokenizer.ggml.model = llama`: Llama 2,
//! Mistral, TinyLlama, ...): BPE by score, with byte fallback.
//!
//! Encoding (llama.cpp's `llm_tokenizer_spm`): the text is split at the special tokens (control,
//! user-defined and unknown tokens, longest first); each other piece gets a leading space when it
//! starts the text or follows a special token (`add_space_prefix`), has its spaces replaced by
//! `▁` (U+2581), and is split into characters; then, repeatedly, the adjacent pair whose
//! concatenation is a token with the highest score is merged (ties: the leftmost pair). A final
//! piece that is not a token becomes its bytes' `<0xNN>` tokens.
//!
//! Decoding: `▁` is a space, a byte token is its byte (bytes are joined before UTF-8 is read, so a
//! character split over byte tokens comes out whole; invalid bytes become U+FFFD), control and
//! unknown tokens are their text unless skipped. `decode` removes the one space the encoder adds
//! in front (the text round-trips); `decode_continuation` keeps it, for text that continues a
//! prompt (streaming).
//!
//! The vocabulary travels as a JSON document (`SpmVocab::to_json`) in place of a
//! tokenizer.json, so that everything that carries a tokenizer's bytes carries this one too.

use crate::error::{Error, Result};
use std::collections::{BinaryHeap, HashMap};

/// llama.cpp token types (`tokenizer.ggml.token_type`).
pub const TYPE_NORMAL: i32 = 1;
pub const TYPE_UNKNOWN: i32 = 2;
pub const TYPE_CONTROL: i32 = 3;
pub const TYPE_USER_DEFINED: i32 = 4;
pub const TYPE_UNUSED: i32 = 5;
pub const TYPE_BYTE: i32 = 6;

/// The key of the JSON document that holds a SentencePiece vocabulary.
pub const JSON_KEY: &str = "plt_sentencepiece";

/// A SentencePiece vocabulary: the tokens, their scores and types, and the encoder's options.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpmVocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    /// llama.cpp token types (`TYPE_*`).
    pub types: Vec<i32>,
    /// Prepend a space to text that starts the input or follows a special token.
    pub add_space_prefix: bool,
    /// The token of bytes that have no byte token (none: such a byte is an error).
    pub unk: Option<u32>,
}

impl SpmVocab {
    /// The JSON document (`{"plt_sentencepiece": {...}}`) `Spm::from_json` reads.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ JSON_KEY: self })
    }
}

/// A SentencePiece tokenizer (see the module doc).
#[derive(Clone, Debug)]
pub struct Spm {
    vocab: SpmVocab,
    ids: HashMap<String, u32>,
    /// The token of each byte value (`<0xNN>`), if any.
    byte_tokens: Vec<Option<u32>>,
    /// The byte each byte token stands for.
    byte_of: HashMap<u32, u8>,
    /// Special tokens matched in the text, longest first.
    specials: Vec<(String, u32)>,
}

/// Whether `bytes` holds a SentencePiece JSON document (`SpmVocab::to_json`, as serialised).
pub fn is_spm_json(bytes: &[u8]) -> bool {
    let head = bytes.iter().position(|b| !b.is_ascii_whitespace()).map(|i| &bytes[i..]).unwrap_or(&[]);
    let key = format!("{{\"{JSON_KEY}\"");
    head.starts_with(key.as_bytes())
}

/// A pair of adjacent symbols whose concatenation is a token.
#[derive(Debug, PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    /// The highest score first; on a tie, the leftmost.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.score.total_cmp(&o.score).then_with(|| o.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// One symbol of the text being merged: a byte range, and its neighbours in the chain.
#[derive(Clone, Copy, Debug)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

fn tok_err(msg: String) -> Error {
    Error::Tokenizer(msg)
}

impl Spm {
    /// Checks and indexes `vocab`: as many scores and types as tokens, and the unknown token
    /// inside the vocabulary.
    pub fn new(vocab: SpmVocab) -> Result<Spm> {
        let n = vocab.tokens.len();
        if vocab.scores.len() != n || vocab.types.len() != n {
            return Err(tok_err(format!(
                "SentencePiece vocabulary: {n} tokens but {} scores and {} types",
                vocab.scores.len(),
                vocab.types.len()
            )));
        }
        if n > u32::MAX as usize / 2 {
            return Err(tok_err(format!("SentencePiece vocabulary of {n} tokens is too large")));
        }
        if let Some(u) = vocab.unk.filter(|&u| u as usize >= n) {
            return Err(tok_err(format!("SentencePiece vocabulary: unknown token id {u} is outside its {n} tokens")));
        }
        let mut ids = HashMap::with_capacity(n);
        let mut byte_tokens = vec![None; 256];
        let mut byte_of = HashMap::new();
        let mut specials = Vec::new();
        for (id, (tok, &ty)) in vocab.tokens.iter().zip(&vocab.types).enumerate() {
            let id = id as u32;
            // A repeated token keeps its first id (as llama.cpp's text-to-token map does).
            ids.entry(tok.clone()).or_insert(id);
            if ty == TYPE_BYTE {
                let b = tok
                    .strip_prefix("<0x")
                    .and_then(|h| h.strip_suffix('>'))
                    .filter(|h| h.len() == 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| tok_err(format!("SentencePiece vocabulary: byte token {id} is {tok:?}, not <0xNN>")))?;
                byte_of.insert(id, b);
                byte_tokens[b as usize].get_or_insert(id);
            }
            if matches!(ty, TYPE_CONTROL | TYPE_USER_DEFINED | TYPE_UNKNOWN) && !tok.is_empty() {
                specials.push((tok.clone(), id));
            }
        }
        // Bytes without a `<0xNN>` token: a token of the byte itself (ASCII), as llama.cpp falls back.
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            if slot.is_none() && b < 0x80 {
                *slot = ids.get(&(b as u8 as char).to_string()).copied();
            }
        }
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        Ok(Spm { vocab, ids, byte_tokens, byte_of, specials })
    }

    /// A tokenizer from the JSON document of `SpmVocab::to_json`.
    pub fn from_json(bytes: &[u8]) -> Result<Spm> {
        #[derive(serde::Deserialize)]
        struct Doc {
            plt_sentencepiece: SpmVocab,
        }
        let doc: Doc = serde_json::from_slice(bytes).map_err(|e| tok_err(format!("SentencePiece vocabulary JSON: {e}")))?;
        Spm::new(doc.plt_sentencepiece)
    }

    pub fn vocab(&self) -> &SpmVocab {
        &self.vocab
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.tokens.len()
    }

    pub fn token_to_id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.vocab.tokens.get(id as usize).cloned()
    }

    /// The ids of `text` (no BOS): special tokens in the text are their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut prev_special = true;
        for piece in self.partition(text) {
            match piece {
                Piece::Special(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Piece::Text(t) => {
                    let mut s = String::with_capacity(t.len() + 3);
                    if self.vocab.add_space_prefix && prev_special {
                        s.push(' ');
                    }
                    s.push_str(t);
                    self.encode_piece(&s.replace(' ', "\u{2581}"), &mut out)?;
                    prev_special = false;
                }
            }
        }
        Ok(out)
    }

    /// `text` split at the special tokens (longest first; each splits every text piece left by
    /// the longer ones at all its occurrences), as llama.cpp partitions it.
    fn partition<'t>(&self, text: &'t str) -> Vec<Piece<'t>> {
        let mut pieces = if text.is_empty() { vec![] } else { vec![Piece::Text(text)] };
        for (sp, id) in &self.specials {
            if !pieces.iter().any(|p| matches!(p, Piece::Text(t) if t.contains(sp.as_str()))) {
                continue;
            }
            let mut next = Vec::with_capacity(pieces.len() + 2);
            for p in pieces {
                let Piece::Text(mut t) = p else {
                    next.push(p);
                    continue;
                };
                while let Some(at) = t.find(sp.as_str()) {
                    if at > 0 {
                        next.push(Piece::Text(&t[..at]));
                    }
                    next.push(Piece::Special(*id));
                    t = &t[at + sp.len()..];
                }
                if !t.is_empty() {
                    next.push(Piece::Text(t));
                }
            }
            pieces = next;
        }
        pieces
    }

    /// The SentencePiece merges on one escaped piece of text.
    fn encode_piece(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            symbols.push(Symbol { start, len: c.len_utf8(), prev: i.checked_sub(1), next: Some(i + 1) });
        }
        if let Some(last) = symbols.last_mut() {
            last.next = None;
        }
        let mut queue = BinaryHeap::new();
        let bigram = |symbols: &[Symbol], left: Option<usize>, right: Option<usize>, queue: &mut BinaryHeap<Bigram>| {
            let (Some(l), Some(r)) = (left, right) else { return };
            let (a, b) = (symbols[l], symbols[r]);
            let s = &text[a.start..b.start + b.len];
            if let Some(&id) = self.ids.get(s) {
                queue.push(Bigram { score: self.vocab.scores[id as usize], left: l, right: r, size: s.len() });
            }
        };
        for i in 1..symbols.len() {
            bigram(&symbols, Some(i - 1), Some(i), &mut queue);
        }
        while let Some(bg) = queue.pop() {
            let (l, r) = (symbols[bg.left], symbols[bg.right]);
            // Skip pairs one of whose symbols has been merged since.
            if l.len == 0 || r.len == 0 || l.len + r.len != bg.size {
                continue;
            }
            symbols[bg.left].len += r.len;
            symbols[bg.right].len = 0;
            symbols[bg.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(bg.left);
            }
            bigram(&symbols, symbols[bg.left].prev, Some(bg.left), &mut queue);
            bigram(&symbols, Some(bg.left), symbols[bg.left].next, &mut queue);
        }
        let mut at = if symbols.is_empty() { None } else { Some(0) };
        while let Some(i) = at {
            let s = symbols[i];
            let piece = &text[s.start..s.start + s.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        let id = self.byte_tokens[b as usize].or(self.vocab.unk).ok_or_else(|| {
                            tok_err(format!("byte 0x{b:02X} has no token in the SentencePiece vocabulary (no <0x{b:02X}>, no unknown token)"))
                        })?;
                        out.push(id);
                    }
                }
            }
            at = s.next;
        }
        Ok(())
    }

    /// The bytes of `ids`: `▁` as a space, byte tokens as their bytes, control and unknown
    /// tokens as their text unless `skip_special`.
    fn bytes(&self, ids: &[u32], skip_special: bool) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for &id in ids {
            let Some(tok) = self.vocab.tokens.get(id as usize) else {
                return Err(tok_err(format!("token id {id} is outside the vocabulary of {}", self.vocab.tokens.len())));
            };
            match self.vocab.types[id as usize] {
                TYPE_BYTE => out.push(self.byte_of[&id]),
                TYPE_CONTROL | TYPE_UNKNOWN if skip_special => {}
                TYPE_CONTROL | TYPE_UNKNOWN | TYPE_USER_DEFINED => out.extend_from_slice(tok.as_bytes()),
                TYPE_UNUSED => {}
                _ => out.extend_from_slice(tok.replace('\u{2581}', " ").as_bytes()),
            }
        }
        Ok(out)
    }

    /// The text of `ids`, without the space the encoder put in front.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let b = self.bytes(ids, skip_special)?;
        let b = if self.vocab.add_space_prefix && b.first() == Some(&b' ') { &b[1..] } else { &b[..] };
        Ok(String::from_utf8_lossy(b).into_owned())
    }

    /// The text of `ids` as it continues earlier text (the leading space kept).
    pub fn decode_continuation(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.bytes(ids, skip_special)?).into_owned())
    }
}

enum Piece<'t> {
    Text(&'t str),
    Special(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: specials, the bytes, and pieces with scores.
    fn toy() -> Spm {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![TYPE_UNKNOWN, TYPE_CONTROL, TYPE_CONTROL];
        for b in 0..256 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(TYPE_BYTE);
        }
        let mut scores = vec![0.0; tokens.len()];
        for (t, s) in [("▁", -1.0), ("h", -2.0), ("e", -2.0), ("l", -2.0), ("o", -2.0), ("he", -3.0), ("ll", -1.5), ("llo", -4.0), ("▁he", -5.0), ("hello", -6.0), ("▁hello", -7.0), ("é", -2.0)] {
            tokens.push(t.into());
            types.push(TYPE_NORMAL);
            scores.push(s);
        }
        Spm::new(SpmVocab { tokens, scores, types, add_space_prefix: true, unk: Some(0) }).unwrap()
    }

    #[test]
    fn merges_by_score_with_byte_fallback_and_specials() {
        let t = toy();
        let id = |s: &str| t.token_to_id(s).unwrap();
        // ▁ h e l l o: "ll" (-1.5) first, then "▁h"? no such token; "he" (-3) then "▁he" (-5),
        // then "llo" (-4) happened before "▁he"; "hello" needs "he"+"llo"; "▁hello" needs "▁he"+"llo".
        assert_eq!(t.encode("hello").unwrap(), vec![id("▁hello")]);
        // A character with no token becomes its UTF-8 bytes; specials are their ids and the
        // text after them gets the space prefix again.
        assert_eq!(t.encode("ß<s>é").unwrap(), vec![id("▁"), id("<0xC3>"), id("<0x9F>"), id("<s>"), id("▁"), id("é")]);
        assert_eq!(t.encode("").unwrap(), Vec::<u32>::new());
        for s in ["hello", " hello  ß", "é\u{1F999}o"] {
            let ids = t.encode(s).unwrap();
            assert_eq!(t.decode(&ids, false).unwrap(), s);
            assert_eq!(t.decode_continuation(&ids, false).unwrap(), format!(" {s}"));
        }
        assert_eq!(t.decode(&[id("<s>"), id("▁hello")], true).unwrap(), "hello");
        assert_eq!(t.decode(&[id("<s>"), id("▁hello")], false).unwrap(), "<s> hello");
        // The JSON form round-trips.
        let back = Spm::from_json(&serde_json::to_vec(&t.vocab().to_json()).unwrap()).unwrap();
        assert_eq!(back.vocab(), t.vocab());
        assert!(is_spm_json(&serde_json::to_vec(&t.vocab().to_json()).unwrap()));
        assert!(Spm::from_json(b"{\"plt_sentencepiece\": {\"tokens\": 3}}").is_err());
    }
}
