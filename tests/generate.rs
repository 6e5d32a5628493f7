//! Text generation: streaming UTF-8, the library API (stop strings, budgets, cancel, next
//! turns), chat templates, greedy GPU generation against the CPU reference, and the same
//! generation on the GPU and CPU backends.

mod common;
use common::*;
use plt::generate::{Engine, FinishReason, GenerateOptions, Generation, ReferenceSession, TextSession};
use plt::reference;
use plt::sampling::{argmax, SamplerConfig};
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
        let want = argmax(last);
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

/// The same tiny model on every backend: fresh GPU, CPU backend and CPU reference text sessions
/// of `context` positions whose tokenizer ends at `eos`.
struct Backends {
    cfg: plt::Config,
    w: Arc<plt::Weights>,
    gpu: Arc<Engine>,
    cpu: Arc<Engine>,
    tok: Arc<Tokenizer>,
}

impl Backends {
    fn new(loops: usize, eos: &[u32]) -> Backends {
        let mut cfg = tiny();
        cfg.vocab_size = 257;
        cfg.num_loops = loops;
        cfg.window_left = 3;
        let w = weights(&cfg, 23, DType::F16, false);
        let tok = || {
            let mut t = Tokenizer::from_bytes(&byte_tokenizer_json(), 257).unwrap();
            t.eos = eos.to_vec();
            t
        };
        let gpu = Arc::new(Engine::from_parts(gpu(), &cfg, &w, Some(tok()), None, "test", &mut |_, _| {}).unwrap());
        let cpu = Arc::new(Engine::from_parts_cpu(&cfg, &w, Some(tok()), None, &Default::default(), "test (cpu)").unwrap());
        Backends { cfg, w: Arc::new(w), gpu, cpu, tok: Arc::new(tok()) }
    }

    /// GPU first, then the CPU backend and the reference.
    fn sessions(&self, context: usize) -> [TextSession; 3] {
        let reference = ReferenceSession::new(&self.cfg, self.w.clone(), context).unwrap();
        [
            TextSession::new(self.gpu.clone(), context).unwrap(),
            TextSession::new(self.cpu.clone(), context).unwrap(),
            TextSession::with_backend(Box::new(reference), Some(self.tok.clone()), "test (reference)"),
        ]
    }

    /// Runs `turns` (prompt, options, pieces to stream before cancelling) in one session per
    /// backend; checks that all give the same ids, text, streamed pieces and finish reason,
    /// and hold the same tokens; returns the GPU's generations.
    fn same(&self, context: usize, turns: &[(&str, &GenerateOptions, usize)]) -> Vec<Generation> {
        let [mut gpu, mut cpu_backend, mut reference] = self.sessions(context);
        let mut out = Vec::new();
        for (i, &(prompt, opts, pieces)) in turns.iter().enumerate() {
            let run = |ts: &mut TextSession| {
                let mut streamed = Vec::new();
                let g = ts
                    .generate_blocking(prompt, opts, &mut |p| {
                        streamed.push(p.to_string());
                        streamed.len() < pieces
                    })
                    .unwrap();
                assert_eq!(streamed.concat(), g.text, "the streamed pieces are the text");
                (g, streamed)
            };
            let (g, gs) = run(&mut gpu);
            for (name, other) in [("CPU backend", &mut cpu_backend), ("reference", &mut reference)] {
                let (c, cs) = run(other);
                let what = format!("turn {i} {prompt:?} {:?}, {name}", opts.sampler);
                assert_eq!(g.tokens, c.tokens, "{what}: ids");
                assert_eq!(g.text, c.text, "{what}: text");
                assert_eq!(gs, cs, "{what}: pieces");
                assert_eq!(g.finish, c.finish, "{what}: finish");
                assert_eq!(g.timings.prompt_tokens, c.timings.prompt_tokens, "{what}: prompt tokens");
                assert_eq!(gpu.backend().tokens(), other.backend().tokens(), "{what}: tokens held");
                assert_eq!(gpu.position(), other.position());
            }
            out.push(g);
        }
        out
    }
}

#[test]
fn gpu_and_cpu_backends_generate_the_same() {
    let b = Backends::new(2, &[256]);
    let sampled = SamplerConfig { temperature: 0.9, top_k: 40, top_p: 0.95, min_p: 0.05, repetition_penalty: 1.1, repeat_last_n: 64, seed: 7 };
    let mut texts = Vec::new();
    for sampler in [SamplerConfig::greedy(), sampled] {
        let base = GenerateOptions { sampler: sampler.clone(), ..greedy(16) };
        let all = usize::MAX;
        // The token budget; then a stop string taken from that text, and a cancel.
        let full = b.same(64, &[("To be, or", &base, all)]).remove(0);
        assert_eq!(full.finish, FinishReason::MaxTokens);
        assert_eq!(full.tokens.len(), 16);
        let chars: Vec<char> = full.text.chars().collect();
        assert!(chars.len() >= 6, "{:?}", full.text);
        let cut: String = chars[3..5].iter().collect();
        let stop = GenerateOptions { stop: vec!["never in the text".into(), cut.clone()], ..base.clone() };
        let g = b.same(64, &[("To be, or", &stop, all)]).remove(0);
        assert_eq!(g.finish, FinishReason::Stop(cut));
        let g = b.same(64, &[("To be, or", &base, 2)]).remove(0);
        assert_eq!(g.finish, FinishReason::Cancelled);
        // A full context ends the generation; with context shift it goes on.
        let g = b.same(12, &[("abc", &base, all)]).remove(0);
        assert_eq!(g.finish, FinishReason::ContextFull);
        let shift = GenerateOptions { context_shift: true, ..base.clone() };
        let g = b.same(12, &[("abc", &shift, all)]).remove(0);
        assert_eq!((g.finish, g.tokens.len()), (FinishReason::MaxTokens, 16));
        // A second turn feeds the first turn's last token and the new prompt.
        b.same(96, &[("ab", &base, all), ("cd", &base, all)]);
        // The model's EOS (a token the generation reaches), and past it with stop_at_eos off.
        let eos = full.tokens[6];
        let first = full.tokens.iter().position(|&t| t == eos).unwrap();
        let e = Backends::new(2, &[eos]);
        let g = e.same(64, &[("To be, or", &GenerateOptions { stop_at_eos: true, ..base.clone() }, all)]).remove(0);
        assert_eq!((g.finish, g.tokens.len()), (FinishReason::Eos, first));
        let g = e.same(64, &[("To be, or", &base, all)]).remove(0);
        assert_eq!(g.tokens, full.tokens);
        texts.push(full.text);
    }
    assert_ne!(texts[0], texts[1], "the seeded sampler draws, not the argmax");
    // A vanilla looped model and a single-loop one run on both as well.
    for loops in [1, 3] {
        let b = Backends::new(loops, &[256]);
        b.same(32, &[("To be", &greedy(10), usize::MAX)]);
    }
}

/// A chat that reaches the context end keeps going: each turn that does not fit drops the
/// oldest messages (the system prompt stays) and starts over; the session then holds exactly
/// the kept conversation's rendering plus the reply; a reply cut by the context end makes the
/// next turn start over; a message that cannot fit even alone is an error that keeps the
/// conversation usable. 30 turns on a 64-position context, on the CPU backend.
#[test]
fn a_chat_survives_the_context_end() {
    let b = Backends::new(2, &[]);
    let mut tok = Tokenizer::from_bytes(&byte_tokenizer_json(), 257).unwrap();
    tok.chat_template = Some("{% for m in messages %}<{{ m.role[0] }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<a>{% endif %}".into());
    let tok = Arc::new(tok);
    let cpu = ReferenceSession::new(&b.cfg, b.w.clone(), 64).unwrap();
    let mut ts = TextSession::with_backend(Box::new(cpu), Some(tok.clone()), "test (cpu)");
    let mut chat = plt::generate::Chat::new(Some("sys"));
    let opts = GenerateOptions { max_tokens: 8, stop_at_eos: false, sampler: SamplerConfig { temperature: 0.0, ..Default::default() }, ..Default::default() };
    let (mut dropped, mut restarts) = (0, 0);
    for turn in 0..30 {
        let t = pollster::block_on(chat.turn(&mut ts, &format!("q{turn}"), &opts, &mut |_| true)).unwrap();
        dropped += t.dropped;
        restarts += t.restarted as usize;
        assert_eq!(chat.messages[0].role, "system", "turn {turn}: the system prompt stays");
        assert_eq!(chat.messages.last().unwrap().content, t.reply);
        assert!(ts.position() <= ts.context());
        if t.restarted {
            // The session holds the kept conversation (BOS + rendering) and the reply's fed tokens.
            let mut kept = chat.messages.clone();
            kept.pop();
            let prompt = tok.apply_chat_template(&kept, true).unwrap();
            let want = tok.encode(&prompt, true).unwrap().len() + t.generation.tokens.len() - 1;
            assert_eq!(ts.position(), want, "turn {turn}");
        }
    }
    assert!(dropped > 0 && restarts > 0, "30 turns must overflow 64 positions: dropped {dropped}, restarts {restarts}");
    // Too long for the context even alone: an error, and the conversation goes on.
    let long = "x".repeat(80);
    let n = chat.messages.len();
    let e = pollster::block_on(chat.turn(&mut ts, &long, &opts, &mut |_| true)).unwrap_err().to_string();
    assert!(e.contains("the context holds 64"), "{e}");
    assert_eq!(chat.messages.len(), n, "the failed message is not kept");
    pollster::block_on(chat.turn(&mut ts, "again", &opts, &mut |_| true)).unwrap();
    // A reply cut by the context end: the next turn starts over from the messages.
    let long_reply = GenerateOptions { max_tokens: 100, ..opts.clone() };
    let t = pollster::block_on(chat.turn(&mut ts, "long", &long_reply, &mut |_| true)).unwrap();
    assert_eq!(t.generation.finish, FinishReason::ContextFull);
    let t = pollster::block_on(chat.turn(&mut ts, "next", &opts, &mut |_| true)).unwrap();
    assert!(t.restarted, "after a cut reply the session starts over");
    // Regenerate: the last exchange taken back and asked again gives the same greedy reply,
    // from a session that starts over.
    let n = chat.messages.len();
    assert_eq!(chat.undo().as_deref(), Some("next"));
    assert_eq!(chat.messages.len(), n - 2, "the user message and its reply are gone");
    let again = pollster::block_on(chat.turn(&mut ts, "next", &opts, &mut |_| true)).unwrap();
    assert!(again.restarted);
    assert_eq!(again.reply, t.reply);
    // A session used for something else: the next turn starts over too.
    ts.reset().unwrap();
    chat.session_lost();
    let t = pollster::block_on(chat.turn(&mut ts, "after", &opts, &mut |_| true)).unwrap();
    let mut kept = chat.messages.clone();
    kept.pop();
    let prompt = tok.apply_chat_template(&kept, true).unwrap();
    assert_eq!(ts.position(), tok.encode(&prompt, true).unwrap().len() + t.generation.tokens.len() - 1, "the whole conversation is fed again");
    let mut none = plt::generate::Chat::new(Some("sys"));
    assert_eq!(none.undo(), None, "nothing to take back");
}
