//! A model directory's tokenizer (tokenizer.json, tokenizer_config.json, generation_config.json)
//! as GGUF `tokenizer.*` metadata, the way llama.cpp stores byte-level BPE tokenizers:
//! `tokenizer.ggml.model = gpt2`, the tokens by id, their types (1 normal, 3 control = a special
//! added token, 4 user-defined = a non-special added token, 5 unused = an id no token has, named
//! `[PAD{id}]`), the merges as `"a b"` strings, the pre-tokenizer's llama.cpp name
//! (`tokenizer.ggml.pre`, recognised from tokenizer.json's pre-tokenizer), BOS/EOS (a second and
//! third end-of-generation id go to `eot_token_id` / `eom_token_id`), whether prompts start with
//! BOS, and the chat template.
//!
//! The result is checked, not trusted: the tokenizer the GGUF reader builds from it
//! (`gguf::GgufTokenizer`) must encode a sample text exactly as the directory's own does.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::gguf::writer::GgufWriter;
use crate::gguf::{Array, GgufFile, GgufTokenizer, Value};
use crate::tokenizer::{Tokenizer, TokenizerInputs};
use serde_json::Value as Json;

fn err(msg: impl Into<String>) -> Error {
    Error::Tokenizer(format!("tokenizer.json: {} (--no-tokenizer writes the file without a tokenizer)", msg.into()))
}

/// Hugging Face's Llama 3 and Qwen2 split regexes (as their tokenizer.json files spell them).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Text the converted tokenizer must encode exactly as the original.
const SAMPLE: &str = "Hello world! It's 2024: the café's naïve résumé costs $12,345.67.\n\n\tIndented   spaces, \
    CamelCase_identifiers, don't/won't/I'LL. 日本語のテキスト, emoji 🙂, x=a+b*(c-d)/e;\r\n  end  ";

/// The llama.cpp pre-tokenizer name of a tokenizer.json `pre_tokenizer`.
fn pre_name(pre: &Json) -> Option<&'static str> {
    let parts: Vec<&Json> = match pre.get("type").and_then(Json::as_str) {
        Some("Sequence") => pre.get("pretokenizers")?.as_array()?.iter().collect(),
        Some(_) => vec![pre],
        None => return None,
    };
    let kind = |p: &Json| -> String {
        let t = p.get("type").and_then(Json::as_str).unwrap_or("");
        match t {
            "ByteLevel" => format!("ByteLevel/{}", p.get("use_regex").and_then(Json::as_bool).unwrap_or(true)),
            "Digits" => format!("Digits/{}", p.get("individual_digits").and_then(Json::as_bool).unwrap_or(false)),
            "Split" => {
                let re = p.get("pattern").and_then(|x| x.get("Regex").or_else(|| x.get("String"))).and_then(Json::as_str).unwrap_or("");
                let behavior = p.get("behavior").and_then(Json::as_str).unwrap_or("");
                match (re, behavior) {
                    (LLAMA3_SPLIT, "Isolated") => "Split/llama3".into(),
                    (QWEN2_SPLIT, "Isolated") => "Split/qwen2".into(),
                    (r"\p{N}", "Isolated") => "Digits/true".into(),
                    _ => format!("Split/{re}"),
                }
            }
            other => other.to_string(),
        }
    };
    let kinds: Vec<String> = parts.into_iter().map(kind).collect();
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    Some(match kinds.as_slice() {
        ["ByteLevel/true"] => "gpt-2",
        ["Digits/true", "ByteLevel/true"] => "smollm",
        ["Split/llama3", "ByteLevel/false"] => "llama-bpe",
        ["Split/qwen2", "ByteLevel/false"] => "qwen2",
        _ => return None,
    })
}

/// The `tokenizer.*` metadata of a model directory's tokenizer (the module doc).
pub fn metadata(inputs: &TokenizerInputs, cfg: &Config) -> Result<Vec<(String, Value)>> {
    let json: Json = serde_json::from_slice(&inputs.json).map_err(|e| err(format!("not valid JSON: {e}")))?;
    let model = json.get("model").ok_or_else(|| err("no `model`"))?;
    let ty = model.get("type").and_then(Json::as_str).unwrap_or("(none)");
    if ty != "BPE" {
        return Err(err(format!("a `{ty}` model cannot be stored as a GGUF tokenizer (only byte-level BPE, `tokenizer.ggml.model = gpt2`)")));
    }
    let pre = json.get("pre_tokenizer").cloned().unwrap_or(Json::Null);
    let Some(pre_name) = pre_name(&pre) else {
        return Err(err(format!(
            "pre-tokenizer {} is not one llama.cpp names (known: GPT-2 byte-level, SmolLM's digits + byte-level, Llama 3's and Qwen2's splits)",
            serde_json::to_string(&pre).unwrap_or_default()
        )));
    };
    let v = cfg.vocab_size;
    let mut tokens: Vec<Option<String>> = vec![None; v];
    let mut types = vec![1i32; v];
    let vocab = model.get("vocab").and_then(Json::as_object).ok_or_else(|| err("`model.vocab` is not an object"))?;
    let mut place = |tok: &str, id: Option<u64>, ty: i32| -> Result<()> {
        let id = id.ok_or_else(|| err(format!("token {tok:?} has no integer id")))? as usize;
        if id >= v {
            return Err(err(format!("token {tok:?} has id {id}, outside the model's vocabulary ({v})")));
        }
        tokens[id] = Some(tok.to_string());
        types[id] = ty;
        Ok(())
    };
    for (tok, id) in vocab {
        place(tok, id.as_u64(), 1)?;
    }
    for a in json.get("added_tokens").and_then(Json::as_array).map(Vec::as_slice).unwrap_or(&[]) {
        let content = a.get("content").and_then(Json::as_str).ok_or_else(|| err("an added token has no `content`"))?;
        let special = a.get("special").and_then(Json::as_bool).unwrap_or(false);
        place(content, a.get("id").and_then(Json::as_u64), if special { 3 } else { 4 })?;
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| {
            t.unwrap_or_else(|| {
                types[id] = 5;
                format!("[PAD{id}]")
            })
        })
        .collect();
    let mut merges = Vec::new();
    for (i, m) in model.get("merges").and_then(Json::as_array).map(Vec::as_slice).unwrap_or(&[]).iter().enumerate() {
        merges.push(match m {
            Json::String(s) => s.clone(),
            Json::Array(p) if p.len() == 2 && p.iter().all(Json::is_string) => format!("{} {}", p[0].as_str().unwrap_or(""), p[1].as_str().unwrap_or("")),
            other => return Err(err(format!("merge {i} ({other}) is neither \"a b\" nor [a, b]"))),
        });
    }
    let original = Tokenizer::for_model(inputs, cfg)?;
    let s = |x: &str| Value::Str(x.to_string());
    let mut m: Vec<(String, Value)> = vec![
        ("tokenizer.ggml.model".into(), s("gpt2")),
        ("tokenizer.ggml.pre".into(), s(pre_name)),
        ("tokenizer.ggml.tokens".into(), Value::Array(Array::Str(tokens))),
        ("tokenizer.ggml.token_type".into(), Value::Array(Array::I32(types))),
        ("tokenizer.ggml.merges".into(), Value::Array(Array::Str(merges))),
    ];
    if let Some(b) = original.bos {
        m.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(b)));
    }
    for (key, &id) in crate::gguf::END_OF_GENERATION_KEYS.iter().zip(&original.eos) {
        m.push((key.to_string(), Value::U32(id)));
    }
    m.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(original.add_bos)));
    if let Some(t) = &original.chat_template {
        m.push(("tokenizer.chat_template".into(), Value::Str(t.clone())));
    }
    check(&m, &original, cfg, pre_name)?;
    Ok(m)
}

/// The GGUF reader's tokenizer from `meta` encodes `SAMPLE` as `original` does.
fn check(meta: &[(String, Value)], original: &Tokenizer, cfg: &Config, pre: &str) -> Result<()> {
    let mut meta = meta.to_vec();
    meta.push(("general.architecture".into(), Value::Str("llama".into())));
    let bytes = GgufWriter::new(Vec::new(), &meta, vec![])?.finish()?;
    let f = GgufFile::parse(&bytes)?;
    let converted = GgufTokenizer::from_gguf(&f, cfg.vocab_size)?.ok_or_else(|| err("the converted tokenizer is empty"))?;
    let converted = Tokenizer::for_model(&converted.inputs(), cfg)?;
    for text in SAMPLE.split_inclusive('\n').chain([SAMPLE]) {
        let (a, b) = (original.encode(text, true)?, converted.encode(text, true)?);
        if a != b {
            return Err(err(format!(
                "stored as GGUF (pre-tokenizer `{pre}`) it would encode {text:?} as {b:?} instead of {a:?}"
            )));
        }
    }
    Ok(())
}
