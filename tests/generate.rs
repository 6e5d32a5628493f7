//! Text generation: streaming UTF-8, the library API (stop strings, budgets, cancel, next
//! turns), chat templates, and greedy GPU generation against the CPU reference.

mod common;
use common::*;
use plt::generate::{Engine, FinishReason, GenerateOptions, TextSession};
use plt::reference;
use plt::sampling::SamplerConfig;
use plt::tokenizer::{ChatMessage, StreamDecoder, Tokenizer};
use plt::DType;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A byte-level BPE tokenizer with one token per byte (ids 0..256) and no merges, so every
/// multi-byte character spans several tokens; id 256 is `<|end|>`.
fn byte_tokenizer_json() -> Vec<u8> {
    let vocab: serde_json::Map<String, serde_json::Value> =
        plt::tokenizer::byte_level_alphabet().iter().enumerate().map(|(i, c)| (c.to_string(), i.into())).chain([("<|end|>".to_string(), 256.into())]).collect();
    serde_json::to_vec(&serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 256, "content": "<|end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": []}
    }))
    .unwrap()
}

#[test]
fn streaming_never_splits_a_character() {
    let tok = Tokenizer::from_bytes(&byte_tokenizer_json(), 257).unwrap();
    let text = "héllo wörld — 世界 🎉 ok";
    let ids = tok.encode(text, false).unwrap();
    assert!(ids.len() > text.chars().count(), "multi-byte characters span several tokens");
    let mut s = StreamDecoder::new(true);
    let mut out = String::new();
    let mut pieces = 0;
    for &id in &ids {
        if let Some(p) = s.push(&tok, id).unwrap() {
            assert!(!p.contains('\u{FFFD}'), "a piece holds half a character: {p:?}");
            out += &p;
            pieces += 1;
        }
    }
    if let Some(p) = s.flush(&tok).unwrap() {
        out += &p;
    }
    assert_eq!(out, text);
    assert!(pieces >= text.chars().count() / 2);
    // A dangling half character comes out (as U+FFFD) only at the end.
    let mut s = StreamDecoder::new(true);
    let euro = tok.encode("€", false).unwrap();
    assert_eq!(euro.len(), 3);
    assert_eq!(s.push(&tok, euro[0]).unwrap(), None);
    assert_eq!(s.push(&tok, euro[1]).unwrap(), None);
    assert_eq!(s.flush(&tok).unwrap().as_deref(), Some("\u{FFFD}"));
}

#[test]
fn chat_templates_render() {
    let mut tok = Tokenizer::from_bytes(&byte_tokenizer_json(), 257).unwrap();
    let msgs = [ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi?")];
    assert_eq!(tok.apply_chat_template(&msgs, true).unwrap(), "system: Be brief.\nuser: Hi?\nassistant:");
    tok.chat_template = Some(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}".into(),
    );
    assert_eq!(
        tok.apply_chat_template(&msgs, true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    );
    // Python-style methods used by real templates work (pycompat).
    tok.chat_template = Some("{{ messages[0].content.strip().upper() }}".into());
    assert_eq!(tok.apply_chat_template(&[ChatMessage::new("user", "  x ")], false).unwrap(), "X");
    tok.chat_template = Some("{{ raise_exception('only user turns') }}".into());
    assert!(tok.apply_chat_template(&msgs, true).unwrap_err().to_string().contains("only user turns"));
}

fn engine(loops: usize) -> Arc<Engine> {
    let mut cfg = tiny();
    cfg.vocab_size = 257;
    cfg.num_loops = loops;
    cfg.window_left = 3;
    cfg.eos_token_ids = vec![256];
    let w = weights(&cfg, 17, DType::F16, false);
    let mut tok = Tokenizer::from_bytes(&byte_tokenizer_json(), 257).unwrap();
    tok.eos = vec![256];
    Arc::new(Engine::from_parts(gpu(), &cfg, &w, Some(tok), None, "test", &mut |_, _| {}).unwrap())
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions { max_tokens, sampler: SamplerConfig::greedy(), stop_at_eos: false, ..Default::default() }
}

#[test]
fn greedy_generation_matches_the_reference() {
    let e = engine(2);
    let mut ts = TextSession::new(e.clone(), 64).unwrap();
    let mut streamed = String::new();
    let g = ts.generate_blocking("To be, or", &greedy(12), &mut |p| {
        streamed += p;
        true
    }).unwrap();
    assert_eq!(g.finish, FinishReason::MaxTokens);
    assert_eq!(g.tokens.len(), 12);
    assert_eq!(streamed, g.text, "the streamed pieces are the text");
    // The reference's argmax, one token at a time on the same weights.
    let cfg = e.cfg().clone();
    let w = weights(&cfg, 17, DType::F16, false);
    let mut seq = e.tokenizer().unwrap().encode("To be, or", true).unwrap();
    for (i, &got) in g.tokens.iter().enumerate() {
        let logits = reference::forward(&cfg, &w, &seq);
        let last = logits.last().unwrap();
        let want = (0..last.len()).max_by(|&a, &b| last[a].total_cmp(&last[b]).then(b.cmp(&a))).unwrap() as u32;
        assert_eq!(got, want, "token {i}");
        seq.push(got);
    }
}

#[test]
fn stop_strings_budgets_and_cancel() {
    let e = engine(3);
    // Learn what greedy produces, then stop on a piece of it.
    let mut ts = TextSession::new(e.clone(), 64).unwrap();
    let full = ts.generate_blocking("abc", &greedy(10), &mut |_| true).unwrap();
    assert!(full.text.chars().count() >= 4, "{:?}", full.text);
    let cut: String = full.text.chars().skip(2).take(2).collect();
    let mut ts = TextSession::new(e.clone(), 64).unwrap();
    let mut streamed = String::new();
    let opts = GenerateOptions { stop: vec![cut.clone()], ..greedy(10) };
    let g = ts.generate_blocking("abc", &opts, &mut |p| {
        streamed += p;
        true
    }).unwrap();
    assert_eq!(g.finish, FinishReason::Stop(cut.clone()));
    let want_prefix = &full.text[..full.text.find(&cut).unwrap()];
    assert_eq!(g.text, want_prefix, "text ends before the stop string");
    assert_eq!(streamed, g.text, "no part of the stop string was streamed");

    // Cancel from the callback, and from another thread's flag.
    let mut ts = TextSession::new(e.clone(), 64).unwrap();
    let mut n = 0;
    let g = ts.generate_blocking("abc", &greedy(50), &mut |_| {
        n += 1;
        n < 3
    }).unwrap();
    assert_eq!(g.finish, FinishReason::Cancelled);
    assert!(g.tokens.len() < 10);
    let flag = Arc::new(AtomicBool::new(true));
    let mut ts = TextSession::new(e.clone(), 64).unwrap();
    let g = ts.generate_blocking("abc", &GenerateOptions { cancel: Some(flag.clone()), ..greedy(50) }, &mut |_| true).unwrap();
    assert_eq!(g.finish, FinishReason::Cancelled);
    assert_eq!(g.tokens.len(), 1);
    flag.store(false, Ordering::Relaxed);

    // The context limit ends a generation cleanly.
    let mut ts = TextSession::new(e.clone(), 8).unwrap();
    let g = ts.generate_blocking("abc", &greedy(50), &mut |_| true).unwrap();
    assert_eq!(g.finish, FinishReason::ContextFull);
    assert!(ts.generate_blocking("a much longer prompt", &greedy(5), &mut |_| true).is_err());
}

#[test]
fn a_session_continues_across_turns_and_iterates() {
    let e = engine(2);
    // Two turns in one session equal one generation over the concatenated tokens.
    let mut ts = TextSession::new(e.clone(), 96).unwrap();
    let t1 = ts.generate_blocking("ab", &greedy(5), &mut |_| true).unwrap();
    let t2 = ts.generate_blocking("cd", &greedy(5), &mut |_| true).unwrap();
    let tok = e.tokenizer().unwrap();
    let mut ids = tok.encode("ab", true).unwrap();
    ids.extend(&t1.tokens);
    ids.extend(tok.encode("cd", false).unwrap());
    let mut fresh = TextSession::new(e.clone(), 96).unwrap();
    let once = pollster::block_on(fresh.generate_ids(&ids, &greedy(5), &mut |_| true)).unwrap();
    assert_eq!(t2.tokens, once.tokens, "turn 2 sees turn 1's tokens");
    // The iterator yields the same text as the callback.
    let mut ts = TextSession::new(e.clone(), 96).unwrap();
    let pieces: Vec<String> = ts.stream("ab", greedy(5)).unwrap().map(|p| p.unwrap()).collect();
    assert_eq!(pieces.concat(), t1.text);
    // Seeded sampling repeats.
    let sampled = GenerateOptions { sampler: SamplerConfig { temperature: 1.0, top_p: 0.9, seed: 5, ..Default::default() }, ..greedy(8) };
    let run = || TextSession::new(e.clone(), 96).unwrap().generate_blocking("ab", &sampled, &mut |_| true).unwrap().tokens;
    assert_eq!(run(), run());
}
