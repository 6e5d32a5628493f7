//! `tokenizer.json` (Hugging Face `tokenizers` format): encode and decode, checked against the
//! model's vocabulary size.

use crate::error::{Error, Result};
use std::path::Path;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    pub fn from_file(path: &Path, vocab_size: usize) -> Result<Tokenizer> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Tokenizer::from_bytes(&bytes, vocab_size)
    }

    /// Parses a tokenizer and checks that every id it can produce is below `vocab_size`.
    pub fn from_bytes(bytes: &[u8], vocab_size: usize) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let n = inner.get_vocab_size(true);
        if n > vocab_size {
            return Err(Error::Tokenizer(format!(
                "the tokenizer has {n} tokens but the model's vocab_size is {vocab_size}"
            )));
        }
        Ok(Tokenizer { inner })
    }

    /// Token ids of `text` (special tokens of the tokenizer's post-processor included).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| Error::Tokenizer(e.to_string()))
    }
}
