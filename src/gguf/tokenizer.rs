//! The tokenizer stored in GGUF metadata. `tokenizer.ggml.model = llama` (SentencePiece: Llama 2,
//! Mistral, TinyLlama) becomes a `crate::tokenizer::spm` vocabulary (tokens, scores, types, byte
//! fallback, `tokenizer.ggml.add_space_prefix`); `gpt2` (byte-level BPE) becomes a
//! Hugging Face `tokenizer.json`: the BPE vocabulary and merges, control tokens as special added
//! tokens, and the pre-tokenizer regexes llama.cpp uses for `tokenizer.ggml.pre` (a Sequence of
//! Isolated splits, then ByteLevel). Its encodings equal llama.cpp's on llama.cpp's own test
//! vectors (tests/vocab.rs; tests/smollm2.rs for the other pre-tokenizers). The special tokens, BOS
//! rule and chat template become the `generation_config` / `tokenizer_config` values that
//! `Tokenizer::for_model` reads, so a GGUF model's tokenizer is set up by the same rules as a
//! directory's.

use super::err;
use super::header::GgufFile;
use super::value::{Array, Value};
use crate::error::Result;
use crate::tokenizer::spm::{SpmVocab, TYPE_NORMAL};
use crate::tokenizer::TokenizerInputs;

/// Metadata keys of the tokens that end a generation: end of sequence, end of turn, end of message.
pub const END_OF_GENERATION_KEYS: [&str; 3] =
    ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"];

/// The tokenizer stored in a GGUF file, as a Hugging Face `tokenizers` JSON.
#[derive(Clone, Debug)]
pub struct GgufTokenizer {
    /// A `tokenizer.json` document that `tokenizers::Tokenizer::from_bytes` accepts, or for a
    /// SentencePiece vocabulary the document of `SpmVocab::to_json` (`plt::tokenizer::Tokenizer`
    /// reads both).
    pub tokenizer_json: serde_json::Value,
    /// `tokenizer.ggml.model`: `gpt2` or `llama`.
    pub model: String,
    /// `tokenizer.chat_template` (Jinja), if present.
    pub chat_template: Option<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// End-of-turn and end-of-message tokens (`tokenizer.ggml.eot_token_id`, `eom_token_id`):
    /// like EOS, they end a generation.
    pub end_of_turn: Vec<u32>,
    /// Whether prompts start with BOS (`tokenizer.ggml.add_bos_token`, else llama.cpp's default
    /// for the pre-tokenizer). The JSON's post-processor also adds it when a caller encodes with
    /// `add_special_tokens = true`.
    pub add_bos: bool,
}

impl GgufTokenizer {
    /// The JSON bytes, for `plt::tokenizer::Tokenizer::from_bytes`.
    pub fn json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.tokenizer_json).expect("a JSON value serialises")
    }

    /// What `Tokenizer::for_model` builds the tokenizer from: the JSON, and the special tokens,
    /// BOS rule and chat template as a model directory's generation_config.json and
    /// tokenizer_config.json would give them.
    pub fn inputs(&self) -> TokenizerInputs {
        let mut eos: Vec<u32> = self.eos.into_iter().collect();
        for &id in &self.end_of_turn {
            if !eos.contains(&id) {
                eos.push(id);
            }
        }
        let mut generation = serde_json::Map::new();
        if let Some(b) = self.bos {
            generation.insert("bos_token_id".into(), b.into());
        }
        if !eos.is_empty() {
            generation.insert("eos_token_id".into(), eos.into());
        }
        let mut tokenizer = serde_json::Map::new();
        tokenizer.insert("add_bos_token".into(), self.add_bos.into());
        if let Some(t) = &self.chat_template {
            tokenizer.insert("chat_template".into(), t.clone().into());
        }
        TokenizerInputs {
            source: "GGUF metadata `tokenizer.ggml.*`".into(),
            json: self.json_bytes(),
            generation_config: Some(generation.into()),
            tokenizer_config: Some(tokenizer.into()),
        }
    }
}

/// GPT-2's pre-tokenizer regex, as in Hugging Face's `ByteLevel` (llama.cpp's has no final `\s+`,
/// which only matters for unmatched pieces that Isolated splitting keeps anyway).
const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's (llama.cpp's case-insensitive-contraction form of it).
const LLAMA3_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: Llama 3's with single digits.
const QWEN2_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen3.5's: Qwen2's with combining marks joined to letters.
const QWEN35_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// The `tokenizer.ggml.pre` values `pre_tokenizer` knows (checked against llama.cpp's test
/// vectors: gpt-2, mpt, starcoder, refact, command-r, llama-bpe, qwen2, qwen35, falcon,
/// deepseek-coder; the others share one of these regex sets in llama.cpp).
pub const SUPPORTED_PRE_TOKENIZERS: &[&str] = &[
    "gpt-2", "phi-2", "mpt", "olmo", "smollm", "starcoder", "refact", "codeshell", "command-r", "llama3", "llama-v3",
    "llama-bpe", "qwen2", "deepseek-r1-qwen", "qwen35", "falcon", "deepseek-coder",
];

/// The regexes llama.cpp applies, in order, for a `tokenizer.ggml.pre` value (each an Isolated
/// split of the pieces before it), whether it ignores merges for whole words that are in the
/// vocabulary, and whether it adds BOS by default.
fn pre_tokenizer(pre: &str) -> Option<(Vec<&'static str>, bool, bool)> {
    Some(match pre {
        "gpt-2" | "phi-2" | "mpt" | "olmo" => (vec![GPT2_RE], false, false),
        "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" => (vec![r"\p{N}", GPT2_RE], false, false),
        "llama3" | "llama-v3" | "llama-bpe" => (vec![LLAMA3_RE], true, true),
        "qwen2" | "deepseek-r1-qwen" => (vec![QWEN2_RE], false, false),
        "qwen35" => (vec![QWEN35_RE], false, false),
        "falcon" => (vec![r"[\p{P}\$\+<=>\^~\|`]+", GPT2_RE, "[0-9][0-9][0-9]"], false, false),
        "deepseek-coder" => (vec!["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[一-龥ࠀ-一가-퟿]+", r"\p{N}"], false, false),
        _ => return None,
    })
}

impl GgufTokenizer {
    /// Builds the tokenizer from `tokenizer.*` metadata; None when the file has none.
    /// Supported: `tokenizer.ggml.model = llama` (SentencePiece), and `gpt2` (byte-level BPE) with a
    /// `tokenizer.ggml.pre` of `SUPPORTED_PRE_TOKENIZERS`; any other model or pre-tokenizer (or
    /// none) is an error naming it.
    pub fn from_gguf(f: &GgufFile, vocab_size: usize) -> Result<Option<GgufTokenizer>> {
        let Some(model) = f.str_("tokenizer.ggml.model")? else { return Ok(None) };
        if model == "llama" {
            return sentencepiece(f, vocab_size).map(Some);
        }
        if model != "gpt2" {
            return Err(err(format!(
                "metadata `tokenizer.ggml.model` = `{model}` is not supported (supported: `llama`, SentencePiece; `gpt2`, byte-level BPE)"
            )));
        }
        let tokens = match f.get("tokenizer.ggml.tokens") {
            Some(Value::Array(Array::Str(t))) => t,
            Some(v) => return Err(err(format!("metadata `tokenizer.ggml.tokens` must be an array of strings, got {}", v.brief()))),
            None => return Err(err("metadata `tokenizer.ggml.tokens` is absent")),
        };
        if tokens.len() > vocab_size {
            return Err(err(format!("the tokenizer has {} tokens but the model's vocabulary is {vocab_size}", tokens.len())));
        }
        let merges = match f.get("tokenizer.ggml.merges") {
            Some(Value::Array(Array::Str(m))) => m.as_slice(),
            Some(Value::Array(a)) if a.is_empty() => &[],
            Some(v) => return Err(err(format!("metadata `tokenizer.ggml.merges` must be an array of strings, got {}", v.brief()))),
            None => return Err(err("metadata `tokenizer.ggml.merges` is absent (a gpt2 tokenizer needs merges)")),
        };
        let types = match f.get("tokenizer.ggml.token_type") {
            None => None,
            Some(Value::Array(a)) if a.len() == tokens.len() && a.int_at(0).is_some() || a.is_empty() && tokens.is_empty() => Some(a),
            Some(v) => {
                return Err(err(format!(
                    "metadata `tokenizer.ggml.token_type` must be an integer array of {} elements, got {}",
                    tokens.len(),
                    v.brief()
                )))
            }
        };
        let pre_name = f.str_("tokenizer.ggml.pre")?;
        let Some((regexes, ignore_merges, default_add_bos)) = pre_name.and_then(pre_tokenizer) else {
            return Err(err(format!(
                "metadata `tokenizer.ggml.pre` = {} is not a supported pre-tokenizer (supported: {})",
                pre_name.map(|p| format!("`{p}`")).unwrap_or_else(|| "(absent)".into()),
                SUPPORTED_PRE_TOKENIZERS.join(", ")
            )));
        };
        let bos = f.token_("tokenizer.ggml.bos_token_id", tokens.len())?;
        let eos = f.token_("tokenizer.ggml.eos_token_id", tokens.len())?;
        let mut end_of_turn = Vec::new();
        for key in &END_OF_GENERATION_KEYS[1..] {
            end_of_turn.extend(f.token_(key, tokens.len())?);
        }
        let add_bos = f.bool_("tokenizer.ggml.add_bos_token")?.unwrap_or(default_add_bos);
        let add_eos = f.bool_("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let chat_template = f.str_("tokenizer.chat_template")?.map(str::to_string);

        let mut vocab = serde_json::Map::with_capacity(tokens.len());
        let mut added = Vec::new();
        for (id, tok) in tokens.iter().enumerate() {
            // A repeated token keeps its first id (as llama.cpp's text-to-token map does).
            if !vocab.contains_key(tok) {
                vocab.insert(tok.clone(), id.into());
            }
            let ty = types.and_then(|a| a.int_at(id)).unwrap_or(1);
            if (ty == TOKEN_CONTROL || ty == TOKEN_USER_DEFINED) && !tok.is_empty() {
                added.push(serde_json::json!({
                    "id": id, "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": ty == TOKEN_CONTROL,
                }));
            }
        }
        let mut pairs = Vec::with_capacity(merges.len());
        for (i, m) in merges.iter().enumerate() {
            // llama.cpp splits at the first space after the first character.
            let cut = m.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(p, _)| p);
            let Some(cut) = cut else {
                return Err(err(format!("metadata `tokenizer.ggml.merges`: merge {i} ({m:?}) is not two tokens separated by a space")));
            };
            let (a, b) = (&m[..cut], &m[cut + 1..]);
            // tokenizers rejects a merge whose parts or result are not tokens; say which.
            for part in [a, b, &format!("{a}{b}")] {
                if !vocab.contains_key(part) {
                    return Err(err(format!("metadata `tokenizer.ggml.merges`: merge {i} ({m:?}) needs the token {part:?}, which is not in the vocabulary")));
                }
            }
            pairs.push(serde_json::json!([a, b]));
        }
        let mut pretokenizers: Vec<serde_json::Value> = regexes
            .iter()
            .map(|r| serde_json::json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false}))
            .collect();
        pretokenizers.push(serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}));
        let special = |id: u32| {
            let content = &tokens[id as usize];
            (content.clone(), serde_json::json!({"id": content, "ids": [id], "tokens": [content]}))
        };
        let post_processor = match (add_bos.then_some(bos).flatten(), add_eos.then_some(eos).flatten()) {
            (None, None) => serde_json::Value::Null,
            (b, e) => {
                let mut single = Vec::new();
                let mut pair = Vec::new();
                let mut specials = serde_json::Map::new();
                let piece = |id: u32| serde_json::json!({"SpecialToken": {"id": tokens[id as usize], "type_id": 0}});
                if let Some(b) = b {
                    single.push(piece(b));
                    pair.push(piece(b));
                    let (k, v) = special(b);
                    specials.insert(k, v);
                }
                single.push(serde_json::json!({"Sequence": {"id": "A", "type_id": 0}}));
                pair.push(serde_json::json!({"Sequence": {"id": "A", "type_id": 0}}));
                if let Some(e) = e {
                    single.push(piece(e));
                    pair.push(piece(e));
                    let (k, v) = special(e);
                    specials.insert(k, v);
                }
                if let Some(b) = b {
                    pair.push(piece(b));
                }
                pair.push(serde_json::json!({"Sequence": {"id": "B", "type_id": 1}}));
                if let Some(e) = e {
                    pair.push(piece(e));
                }
                serde_json::json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
            }
        };
        let tokenizer_json = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": pretokenizers},
            "post_processor": post_processor,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": ignore_merges, "vocab": vocab, "merges": pairs,
            },
        });
        Ok(Some(GgufTokenizer {
            tokenizer_json,
            model: model.to_string(),
            chat_template,
            bos,
            eos,
            end_of_turn,
            add_bos: add_bos && bos.is_some(),
        }))
    }
}

/// `tokenizer.ggml.model = llama`: the tokens with their scores and types (absent scores are 0,
/// absent types normal), BOS added by default, a leading space unless
/// `tokenizer.ggml.add_space_prefix` is false, and `<unk>` (`tokenizer.ggml.unknown_token_id`,
/// else id 0 as llama.cpp) for bytes without a byte token.
fn sentencepiece(f: &GgufFile, vocab_size: usize) -> Result<GgufTokenizer> {
    let tokens = match f.get("tokenizer.ggml.tokens") {
        Some(Value::Array(Array::Str(t))) => t.clone(),
        Some(v) => return Err(err(format!("metadata `tokenizer.ggml.tokens` must be an array of strings, got {}", v.brief()))),
        None => return Err(err("metadata `tokenizer.ggml.tokens` is absent")),
    };
    let n = tokens.len();
    if n > vocab_size {
        return Err(err(format!("the tokenizer has {n} tokens but the model's vocabulary is {vocab_size}")));
    }
    let scores = match f.get("tokenizer.ggml.scores") {
        None => vec![0.0; n],
        Some(Value::Array(Array::F32(s))) if s.len() == n => s.clone(),
        Some(Value::Array(Array::F64(s))) if s.len() == n => s.iter().map(|&x| x as f32).collect(),
        Some(v) => return Err(err(format!("metadata `tokenizer.ggml.scores` must be a float array of {n} elements, got {}", v.brief()))),
    };
    if let Some(i) = scores.iter().position(|x| x.is_nan()) {
        return Err(err(format!("metadata `tokenizer.ggml.scores`: score {i} is NaN")));
    }
    let types: Vec<i32> = match f.get("tokenizer.ggml.token_type") {
        None => vec![TYPE_NORMAL; n],
        Some(Value::Array(a)) if a.len() == n && (0..n).all(|i| a.int_at(i).is_some_and(|t| (0..=6).contains(&t))) => {
            (0..n).map(|i| a.int_at(i).unwrap_or(1) as i32).collect()
        }
        Some(v) => {
            return Err(err(format!("metadata `tokenizer.ggml.token_type` must be an array of {n} token types (0..=6), got {}", v.brief())))
        }
    };
    let unk = match f.token_("tokenizer.ggml.unknown_token_id", n)? {
        Some(u) => Some(u),
        None => (n > 0).then_some(0),
    };
    let add_space_prefix = f.bool_("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
    let bos = f.token_("tokenizer.ggml.bos_token_id", n)?;
    let eos = f.token_("tokenizer.ggml.eos_token_id", n)?;
    let mut end_of_turn = Vec::new();
    for key in &END_OF_GENERATION_KEYS[1..] {
        end_of_turn.extend(f.token_(key, n)?);
    }
    let add_bos = f.bool_("tokenizer.ggml.add_bos_token")?.unwrap_or(true);
    let chat_template = f.str_("tokenizer.chat_template")?.map(str::to_string);
    let vocab = SpmVocab { tokens, scores, types, add_space_prefix, unk };
    // Checks the byte tokens and the sizes, with the error naming the metadata.
    crate::tokenizer::spm::Spm::new(vocab.clone()).map_err(|e| err(format!("tokenizer: {e}")))?;
    Ok(GgufTokenizer {
        tokenizer_json: vocab.to_json(),
        model: "llama".into(),
        chat_template,
        bos,
        eos,
        end_of_turn,
        add_bos: add_bos && bos.is_some(),
    })
}
