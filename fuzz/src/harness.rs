//! What each fuzz target does with one input. Shared by `fuzz/fuzz_targets/*.rs` and by
//! `tests/fuzz_regressions.rs` (which includes this file with `#[path]`), so a saved crash input
//! replays through exactly the code that found it. Uses only `plt`, `serde_json` and std.
//!
//! Every function returns the outcome of each library call it made, as `(call, Ok/Err text)`.
//! A panic, an abort, a hang or a huge allocation inside is the finding; an `Err` is the
//! library doing its job.

#![allow(dead_code)]

use plt::tokenizer::{StreamDecoder, Tokenizer};
use plt::{Config, Weights};
use std::sync::OnceLock;

pub type Outcome = Vec<(&'static str, Result<(), String>)>;

fn record<T>(out: &mut Outcome, call: &'static str, r: plt::Result<T>) -> Option<T> {
    match r {
        Ok(v) => {
            out.push((call, Ok(())));
            Some(v)
        }
        Err(e) => {
            out.push((call, Err(e.to_string())));
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Panics that plt catches
// ---------------------------------------------------------------------------------------------

/// Panic sites inside dependencies that `plt` runs under `catch_unwind` and turns into an
/// `Err` (file suffix, line). libfuzzer-sys's panic hook aborts on every panic, caught or not,
/// so the fuzz targets install `install_panic_hook` to let exactly these through.
/// - tokenizers 0.22.2 `DecoderWrapper::deserialize`: `.expect("Helper")` on a malformed
///   "decoder" object; caught in `plt::tokenizer::Tokenizer::from_bytes`.
pub const CAUGHT_PANICS: &[(&str, u32)] = &[("tokenizers-0.22.2/src/decoders/mod.rs", 90)];

/// Keeps libfuzzer-sys's aborting hook for every panic except those in `CAUGHT_PANICS`.
pub fn install_panic_hook() {
    let abort_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let caught = info
            .location()
            .is_some_and(|l| CAUGHT_PANICS.iter().any(|&(file, line)| l.file().ends_with(file) && l.line() == line));
        if !caught {
            abort_hook(info);
        }
    }));
}

// ---------------------------------------------------------------------------------------------
// load_model: config.json + model.safetensors
// ---------------------------------------------------------------------------------------------

/// The config the safetensors half of every `load_model` input is also loaded against: L = 2
/// (so the PLT gate tensors are expected), grouped-query attention, V=16, D=8, F=16, N=1.
/// `fuzz/make_seeds.py` writes seed checkpoints for exactly this config.
pub const FIXED_CONFIG: &str = r#"{"vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
    "max_position_embeddings": 32, "plt_num_loops": 2, "plt_window_size": [2, 0]}"#;

pub fn fixed_config() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(|| Config::from_json_str(FIXED_CONFIG).expect("FIXED_CONFIG is valid"))
}

/// `load_model` input layout: bytes 0..2 are the config length n (u16, little-endian, clamped
/// to what is there), then n bytes of config.json, then the safetensors file.
pub fn split_model_input(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 2 {
        return (&[], data);
    }
    let n = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    (&data[2..2 + n], &data[2 + n..])
}

/// The inverse of `split_model_input` (seeds, hand-made cases).
pub fn join_model_input(config: &[u8], safetensors: &[u8]) -> Vec<u8> {
    let n = u16::try_from(config.len()).expect("config part under 64 KiB");
    let mut v = n.to_le_bytes().to_vec();
    v.extend_from_slice(config);
    v.extend_from_slice(safetensors);
    v
}

/// `Config::from_json_str` on the config part (lossy UTF-8), then `Weights::from_bytes` of the
/// safetensors part under that config (and `plt info`'s sizes when it loads) and under `FIXED_CONFIG`.
pub fn load_model(data: &[u8]) -> Outcome {
    let mut out = Outcome::new();
    let (config, st) = split_model_input(data);
    let text = String::from_utf8_lossy(config);
    if let Some(cfg) = record(&mut out, "Config::from_json_str", Config::from_json_str(&text)) {
        if record(&mut out, "Weights::from_bytes(parsed config)", Weights::from_bytes(st, &cfg)).is_some() {
            // `plt info`'s figures for a model that loaded: parameter count and KV-cache sizes.
            let _ = cfg.num_params();
            let _ = cfg.kv_bytes(cfg.max_position_embeddings, 4);
        }
    }
    record(&mut out, "Weights::from_bytes(fixed config)", Weights::from_bytes(st, fixed_config()));
    out
}

// ---------------------------------------------------------------------------------------------
// gguf
// ---------------------------------------------------------------------------------------------

/// A short text with ASCII, a merge-able word, multi-byte characters and a control token.
const SAMPLE: &str = "hello world 12 héllo — 世界 🎉<|im_start|> x";

/// `GgufFile::parse` (+ `summary`, `config_from_gguf`, the tokenizer conversion and, when that
/// works, `Tokenizer::from_bytes` + encode/decode of its JSON), then the whole
/// `load_gguf_bytes`.
pub fn gguf(data: &[u8]) -> Outcome {
    use plt::gguf::{config_from_gguf, load_gguf_bytes, GgufFile, GgufTokenizer};
    let mut out = Outcome::new();
    if let Some(f) = record(&mut out, "GgufFile::parse", GgufFile::parse(data)) {
        let _ = f.summary();
        let cfg = record(&mut out, "config_from_gguf", config_from_gguf(&f));
        // Reach the tokenizer conversion even when the model metadata is bad.
        let vocab = cfg.as_ref().map(|c| c.vocab_size).unwrap_or(1 << 20);
        if let Some(Some(t)) = record(&mut out, "GgufTokenizer::from_gguf", GgufTokenizer::from_gguf(&f, vocab)) {
            let json = t.json_bytes();
            if let Some(tok) = record(&mut out, "Tokenizer::from_bytes(gguf json)", Tokenizer::from_bytes(&json, vocab)) {
                exercise_tokenizer(&mut out, &tok, SAMPLE, &[0, 1, 2, 3, 200, 300, u32::MAX]);
            }
        }
    }
    record(&mut out, "load_gguf_bytes", load_gguf_bytes(data));
    out
}

// ---------------------------------------------------------------------------------------------
// tokenizer
// ---------------------------------------------------------------------------------------------

/// `plt::init::tokenizer_json(64)`: WordLevel, whitespace pre-tokenizer, `<unk>` `<s>` `</s>`.
pub fn word_tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let json = serde_json::to_vec(&plt::init::tokenizer_json(64)).unwrap();
        Tokenizer::from_bytes(&json, 64).expect("init's tokenizer loads")
    })
}

/// A byte-level BPE tokenizer.json with one token per byte (ids 0..256, no merges, so every
/// multi-byte character spans several ids) and a special `<|end|>` = 256 (as tests/generate.rs).
pub fn byte_tokenizer_json() -> Vec<u8> {
    let vocab: serde_json::Map<String, serde_json::Value> = plt::tokenizer::byte_level_alphabet()
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), i.into()))
        .chain([("<|end|>".to_string(), 256.into())])
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 256, "content": "<|end|>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": []}
    }))
    .unwrap()
}

pub fn byte_tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_bytes(&byte_tokenizer_json(), 257).expect("byte tokenizer loads"))
}

/// The vocabulary bound `Tokenizer::from_bytes` gets for fuzzed tokenizer.json files.
pub const FUZZ_VOCAB: usize = 1 << 16;

/// encode (with and without BOS), decode (with and without specials) and stream-decode.
/// Returns the streamed text (skip_special = false) and the ids streamed.
fn exercise_tokenizer(out: &mut Outcome, tok: &Tokenizer, text: &str, extra_ids: &[u32]) -> Option<(Vec<u32>, String)> {
    record(out, "encode(add_bos)", tok.encode(text, true));
    let ids = record(out, "encode", tok.encode(text, false))?;
    let mut all = ids.clone();
    all.extend_from_slice(extra_ids);
    for skip in [false, true] {
        record(out, "decode", tok.decode(&all, skip));
    }
    let mut s = StreamDecoder::new(false);
    let mut streamed = String::new();
    for &id in &all {
        if let Some(Some(p)) = record(out, "StreamDecoder::push", s.push(tok, id)) {
            streamed += &p;
        }
    }
    if let Some(Some(p)) = record(out, "StreamDecoder::flush", s.flush(tok)) {
        streamed += &p;
    }
    Some((all, streamed))
}

/// `tokenizer` input layout: byte 0 picks the mode, the rest is its data.
/// - 0: the rest is a tokenizer.json for `Tokenizer::from_bytes(_, FUZZ_VOCAB)`; if it loads,
///   its ids must all be below the bound, and it encodes/decodes/streams a sample text.
/// - 1: the rest is text (lossy UTF-8) for the WordLevel tokenizer of `plt::init` (V = 64),
///   and each byte is also an id (most out of range).
/// - 2: the same with the byte-level BPE tokenizer (V = 257); here streaming must reproduce
///   `decode` exactly (the StreamDecoder contract: no text lost, doubled or split).
/// - 3: the rest is u16 ids (little-endian) for both fixed tokenizers.
pub fn tokenizer(data: &[u8]) -> Outcome {
    let mut out = Outcome::new();
    let Some((&mode, rest)) = data.split_first() else { return out };
    match mode % 4 {
        0 => {
            if let Some(tok) = record(&mut out, "Tokenizer::from_bytes", Tokenizer::from_bytes(rest, FUZZ_VOCAB)) {
                if let Some((ids, _)) = exercise_tokenizer(&mut out, &tok, SAMPLE, &[]) {
                    // from_bytes promises every id the tokenizer can produce is below the bound.
                    assert!(ids.iter().all(|&i| (i as usize) < FUZZ_VOCAB), "ids {ids:?} reach past vocab_size {FUZZ_VOCAB}");
                }
                exercise_tokenizer(&mut out, &tok, "", &[0, 1, 2, 255, 256, 65535, u32::MAX]);
            }
        }
        1 | 2 => {
            let text = String::from_utf8_lossy(rest);
            let ids: Vec<u32> = rest.iter().map(|&b| b as u32 + if mode % 4 == 2 { 2 } else { 0 }).collect();
            let tok = if mode % 4 == 1 { word_tokenizer() } else { byte_tokenizer() };
            for extra in [&[][..], &ids[..]] {
                if let Some((all, streamed)) = exercise_tokenizer(&mut out, tok, &text, extra) {
                    if mode % 4 == 2 {
                        let full = tok.decode(&all, false).expect("byte tokenizer decodes any ids");
                        assert_eq!(streamed, full, "streamed text differs from decode of ids {all:?}");
                    }
                }
            }
        }
        _ => {
            let ids: Vec<u32> = rest.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32).collect();
            for tok in [word_tokenizer(), byte_tokenizer()] {
                exercise_tokenizer(&mut out, tok, "", &ids);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// chat_template: a model's Jinja chat template
// ---------------------------------------------------------------------------------------------

/// The conversation every `chat_template` input renders: each role, non-ASCII text, an empty
/// message.
pub const CHAT_MESSAGES: &[(&str, &str)] = &[("system", "You are terse."), ("user", "héllo — 世界"), ("assistant", ""), ("user", "and?")];

/// `chat_template` input: the whole input (lossy UTF-8) is the chat template of the byte-level
/// tokenizer, rendered for `CHAT_MESSAGES` with and without the generation prompt; a rendering
/// that succeeds is encoded (as a prompt, with BOS). The template's work and output are bounded
/// (`Tokenizer::apply_chat_template`): a template that loops forever or prints without end is
/// an `Err`.
pub fn chat_template(data: &[u8]) -> Outcome {
    thread_local! {
        static TOK: std::cell::RefCell<Option<Tokenizer>> = const { std::cell::RefCell::new(None) };
    }
    let mut out = Outcome::new();
    let template = String::from_utf8_lossy(data).into_owned();
    let messages: Vec<plt::tokenizer::ChatMessage> = CHAT_MESSAGES.iter().map(|(r, c)| plt::tokenizer::ChatMessage::new(r, c)).collect();
    TOK.with(|cell| {
        let mut slot = cell.borrow_mut();
        let tok = slot.get_or_insert_with(|| Tokenizer::from_bytes(&byte_tokenizer_json(), 257).expect("the byte tokenizer loads"));
        tok.chat_template = Some(template);
        for generation_prompt in [false, true] {
            if let Some(text) = record(&mut out, "Tokenizer::apply_chat_template", tok.apply_chat_template(&messages, generation_prompt)) {
                record(&mut out, "Tokenizer::encode", tok.encode(&text, true));
            }
        }
    });
    out
}
