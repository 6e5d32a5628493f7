//! Fuzz regressions. Every input the fuzzers of `fuzz/` found that panicked, hung or
//! allocated without bound is saved under `tests/fuzz-cases/<target>/` and replayed here through
//! the same harness (`fuzz/src/harness.rs`, included by path); hand-made hostile inputs for each
//! loader follow. Each must come back as an `Err`, never a panic, within seconds, and the call
//! must never hold more than a small multiple of its input's size: a counting allocator
//! measures the peak of live bytes during the call and refuses (aborting the test binary with
//! "memory allocation of N bytes failed") any single request over `REFUSE_OVER`. No GPU.

#[path = "../fuzz/src/harness.rs"]
mod harness;

use plt::gguf::load_gguf_bytes;
use plt::tokenizer::Tokenizer;
use plt::{Config, Weights};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Memory and time bounds
// ---------------------------------------------------------------------------------------------

/// While a measured call runs, any single allocation larger than this fails.
const REFUSE_OVER: usize = 256 << 20;
/// Allowed peak: this many times the input's size, plus `SLACK` bytes (tokenizer tables etc.).
const FACTOR: usize = 16;
const SLACK: usize = 8 << 20;
/// Allowed time for one call (debug build, possibly on a busy machine).
const MAX_TIME: Duration = Duration::from_secs(20);

struct Counting;

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn on_alloc(size: usize) -> bool {
    ACTIVE
        .try_with(|a| {
            if !a.get() {
                return true;
            }
            if size > REFUSE_OVER {
                LARGEST.with(|l| l.set(l.get().max(size)));
                return false;
            }
            LARGEST.with(|l| l.set(l.get().max(size)));
            LIVE.with(|l| {
                l.set(l.get() + size as isize);
                PEAK.with(|p| p.set(p.get().max(l.get())));
            });
            true
        })
        .unwrap_or(true)
}

fn on_dealloc(size: usize) {
    let _ = ACTIVE.try_with(|a| {
        if a.get() {
            LIVE.with(|l| l.set(l.get() - size as isize));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !on_alloc(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !on_alloc(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_dealloc(layout.size());
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !on_alloc(new_size) {
            return std::ptr::null_mut();
        }
        on_dealloc(layout.size());
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Debug)]
struct Cost {
    peak: usize,
    largest: usize,
    time: Duration,
}

/// Runs `f` with this thread's allocations counted; a panic is returned as its message.
fn measured<T>(f: impl FnOnce() -> T) -> (Result<T, String>, Cost) {
    // Build the harness's fixed tokenizers and config outside the measurement.
    let _ = (harness::word_tokenizer(), harness::byte_tokenizer(), harness::fixed_config());
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    LARGEST.with(|l| l.set(0));
    ACTIVE.with(|a| a.set(true));
    let start = Instant::now();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let time = start.elapsed();
    ACTIVE.with(|a| a.set(false));
    let cost = Cost { peak: PEAK.with(|p| p.get()).max(0) as usize, largest: LARGEST.with(|l| l.get()), time };
    let r = r.map_err(|p| {
        p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
    });
    (r, cost)
}

/// Asserts `f` did not panic and stayed within the bounds for an input of `len` bytes.
fn bounded<T>(what: &str, len: usize, f: impl FnOnce() -> T) -> T {
    bounded_by(what, len, FACTOR, f)
}

/// `bounded` with another factor: encoding text with `tokenizers` keeps alignment tables of
/// 80 (WordLevel) to 170 (byte-level BPE) bytes per input byte: linear, but more than the
/// loaders' 16.
fn bounded_by<T>(what: &str, len: usize, factor: usize, f: impl FnOnce() -> T) -> T {
    let (r, cost) = measured(f);
    let r = r.unwrap_or_else(|msg| panic!("{what}: panicked: {msg}"));
    let allowed = factor * len + SLACK;
    assert!(cost.peak <= allowed, "{what}: peak {} bytes for an input of {len} bytes (allowed {allowed}); {cost:?}", cost.peak);
    assert!(cost.largest <= allowed, "{what}: one allocation of {} bytes for an input of {len} bytes; {cost:?}", cost.largest);
    assert!(cost.time <= MAX_TIME, "{what}: took {:?}", cost.time);
    r
}

/// The error text of the last call of a harness outcome, which must have failed.
fn last_err(what: &str, out: &harness::Outcome) -> String {
    match out.last() {
        Some((_, Err(e))) => e.clone(),
        other => panic!("{what}: expected the last call to fail, got {other:?} (all: {out:?})"),
    }
}

fn err_of<T>(what: &str, len: usize, f: impl FnOnce() -> plt::Result<T>) -> String {
    match bounded(what, len, f) {
        Ok(_) => panic!("{what}: expected an error"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error `{msg}` should mention `{p}`");
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// Seeds and saved fuzz findings
// ---------------------------------------------------------------------------------------------

/// The committed seed corpora really reach the deep paths (a seed that stops loading would
/// silently make the fuzzers shallow), and every seed stays within the bounds.
#[test]
fn seeds_load_through_the_harness() {
    let seeds = root().join("fuzz/seeds");
    let ok = |out: &harness::Outcome, call: &str| out.iter().any(|(c, r)| *c == call && r.is_ok());
    let mut n = 0;
    for f in files(&seeds.join("load_model")) {
        let data = std::fs::read(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let out = bounded(&name, data.len(), || harness::load_model(&data));
        if name.starts_with("fixed-") && !name.contains("tied") {
            assert!(ok(&out, "Weights::from_bytes(fixed config)"), "{name}: {out:?}");
        }
        if name != "tiny-safetensors" {
            assert!(ok(&out, "Config::from_json_str"), "{name}: {out:?}");
        }
        if name != "tiny-safetensors" && name != "config-only" {
            assert!(ok(&out, "Weights::from_bytes(parsed config)"), "{name}: {out:?}");
        }
        n += 1;
    }
    for f in files(&seeds.join("gguf")) {
        let data = std::fs::read(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let out = bounded(&name, data.len(), || harness::gguf(&data));
        assert!(ok(&out, "GgufFile::parse"), "{name}: {out:?}");
        if !["all-value-types", "kquant-blocks"].contains(&name.as_str()) {
            assert!(ok(&out, "load_gguf_bytes"), "{name}: {out:?}");
        }
        if !["all-value-types", "kquant-blocks", "no-tokenizer"].contains(&name.as_str()) {
            assert!(ok(&out, "Tokenizer::from_bytes(gguf json)"), "{name}: {out:?}");
        }
        n += 1;
    }
    for f in files(&seeds.join("tokenizer")) {
        let data = std::fs::read(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let out = bounded(&name, data.len(), || harness::tokenizer(&data));
        if data.first() == Some(&0) {
            assert!(ok(&out, "Tokenizer::from_bytes"), "{name}: {out:?}");
        }
        assert!(out.iter().all(|(c, r)| r.is_ok() || *c == "Tokenizer::from_bytes"), "{name}: {out:?}");
        n += 1;
    }
    // Real templates' shapes (ChatML, [INST], header ids, one that raises on a missing system
    // message) render the fixed conversation both ways and encode.
    for f in files(&seeds.join("chat_template")) {
        let data = std::fs::read(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let out = bounded(&name, data.len(), || harness::chat_template(&data));
        assert_eq!(out.len(), 4, "{name}: {out:?}");
        assert!(out.iter().all(|(_, r)| r.is_ok()), "{name}: {out:?}");
        n += 1;
    }
    assert!(n >= 34, "only {n} seeds");
}

/// Hostile chat templates through the fuzz harness: endless work, output without end (direct,
/// captured by `set`, through a filter), deep recursion and syntax errors are each an `Err`
/// from rendering, in bounded time and memory (the output bound is 16 MiB of text).
#[test]
fn hostile_chat_templates_are_errors() {
    let cases = [
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
        "{% set s %}{% for i in range(100000) %}{{ 'y' * 100000 }}{% endfor %}{% endset %}{{ s | length }}",
        "{% filter upper %}{% for i in range(100000) %}{{ 'z' * 100000 }}{% endfor %}{% endfilter %}",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "{% for m in messages %}",
        "{{ raise_exception('no') }}",
    ];
    for t in cases {
        let (r, cost) = measured(|| harness::chat_template(t.as_bytes()));
        let out = r.unwrap_or_else(|m| panic!("{t}: panicked: {m}"));
        assert!(cost.peak < REFUSE_OVER && cost.time <= MAX_TIME, "{t}: {cost:?}");
        assert!(out.iter().any(|(c, r)| *c == "Tokenizer::apply_chat_template" && r.is_err()), "{t}: {out:?}");
    }
}

/// Every input a fuzzer flagged (tests/fuzz-cases/<target>/) fails cleanly: no panic, no
/// abort, bounded time and memory. For the loaders the final call must be an error.
#[test]
fn saved_fuzz_cases_are_clean_errors() {
    let cases = root().join("tests/fuzz-cases");
    let mut n = 0;
    let loaders: [(&str, fn(&[u8]) -> harness::Outcome); 2] = [("load_model", harness::load_model), ("gguf", harness::gguf)];
    for (target, load) in loaders {
        for f in files(&cases.join(target)) {
            let data = std::fs::read(&f).unwrap();
            let what = f.display().to_string();
            let out = bounded(&what, data.len(), || load(&data));
            last_err(&what, &out);
            n += 1;
        }
    }
    for f in files(&cases.join("tokenizer")) {
        let data = std::fs::read(&f).unwrap();
        let what = f.display().to_string();
        // A caught panic runs the panic hook (a backtrace under RUST_BACKTRACE): bound it
        // loosely; the point is no panic escapes and nothing hangs.
        let (r, cost) = measured(|| harness::tokenizer(&data));
        let out = r.unwrap_or_else(|m| panic!("{what}: panicked: {m}"));
        assert!(cost.peak < REFUSE_OVER && cost.time <= MAX_TIME, "{what}: {cost:?}");
        if data.first() == Some(&0) {
            last_err(&what, &out);
        }
        n += 1;
    }
    eprintln!("{n} saved fuzz cases replayed");
}

// ---------------------------------------------------------------------------------------------
// Hand-made hostile inputs: safetensors + config.json
// ---------------------------------------------------------------------------------------------

/// A safetensors file from a header (any JSON text) and data bytes.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

fn fixed_seed() -> (Vec<u8>, Vec<u8>) {
    let data = std::fs::read(root().join("fuzz/seeds/load_model/fixed-f32")).unwrap();
    let (c, s) = harness::split_model_input(&data);
    (c.to_vec(), s.to_vec())
}

fn load_fixed(what: &str, bytes: &[u8]) -> String {
    err_of(what, bytes.len(), || Weights::from_bytes(bytes, harness::fixed_config()))
}

#[test]
fn hostile_safetensors_are_errors() {
    let (_, good) = fixed_seed();
    // Header lengths: u64::MAX, past the end, just under safetensors' 100 MB header cap (with
    // only a few bytes present), zero.
    for n in [u64::MAX, u64::MAX - 7, good.len() as u64, 100_000_000, 99_999_999, 0] {
        let mut b = good.clone();
        b[..8].copy_from_slice(&n.to_le_bytes());
        assert_mentions(&load_fixed(&format!("header length {n}"), &b), &["model.safetensors"]);
    }
    // Shapes whose element count is astronomically large or overflows, with 8 bytes of data.
    for shape in ["[4294967296, 4294967296]", "[9223372036854775807, 4]", "[18446744073709551615]", "[0, 18446744073709551615, 2]"] {
        let h = format!(r#"{{"model.norm.weight": {{"dtype": "F32", "shape": {shape}, "data_offsets": [0, 8]}}}}"#);
        assert_mentions(&load_fixed(&format!("shape {shape}"), &safetensors(&h, &[0; 8])), &["model.safetensors"]);
    }
    // Offsets far past the data, reversed, overlapping; an unknown dtype; a huge declared
    // tensor count by many tiny entries is just a long header (bounded by the file).
    for (offsets, dtype) in [("[0, 1152921504606846976]", "F32"), ("[8, 0]", "F32"), ("[0, 18446744073709551615]", "F16"), ("[0, 8]", "F128")] {
        let h = format!(r#"{{"x": {{"dtype": "{dtype}", "shape": [2], "data_offsets": {offsets}}}}}"#);
        assert_mentions(&load_fixed(&format!("offsets {offsets} {dtype}"), &safetensors(&h, &[0; 8])), &["model.safetensors"]);
    }
    // A header nested 100 000 deep (serde_json's recursion limit, not the stack).
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    assert_mentions(&load_fixed("nested header", &safetensors(&deep, &[])), &["model.safetensors"]);
    // Invalid UTF-8 in the header, and in a tensor name.
    let mut b = safetensors(r#"{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#, &[0; 4]);
    b[11] = 0xFF;
    assert_mentions(&load_fixed("invalid UTF-8 header", &b), &["model.safetensors"]);
    // Every byte of the good file's length field, and a few data cuts.
    for cut in [0, 1, 7, 8, 9, good.len() / 2, good.len() - 1] {
        load_fixed(&format!("cut at {cut}"), &good[..cut]);
    }
}

#[test]
fn hostile_configs_are_errors() {
    let (cfg, st) = fixed_seed();
    let base: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
    let config_err = |what: &str, text: &str| err_of(what, text.len(), || Config::from_json_str(text));
    // Deeply nested, invalid UTF-8 (as the lossy text the CLI would never even read), empty.
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    assert_mentions(&config_err("nested", &deep), &["config.json", "not valid JSON"]);
    let deep_obj = "{\"a\":".repeat(50_000) + "1" + &"}".repeat(50_000);
    assert_mentions(&config_err("nested object", &deep_obj), &["config.json", "not valid JSON"]);
    assert_mentions(&config_err("lossy", &String::from_utf8_lossy(&[b'{', 0xFF, b'}'])), &["config.json"]);
    assert_mentions(&config_err("empty", ""), &["config.json"]);
    // Values past every bound the parser sets.
    for (field, bad) in [
        ("vocab_size", serde_json::json!(u64::MAX)),
        ("vocab_size", serde_json::json!(4294967295u64)),
        ("hidden_size", serde_json::json!(4294967296u64)),
        ("num_hidden_layers", serde_json::json!(1e300)),
        ("head_dim", serde_json::json!(-2)),
        ("rope_theta", serde_json::json!(0.0)),
        ("eos_token_id", serde_json::json!([1, 2, u64::MAX])),
        ("plt_window_size", serde_json::json!([-1, 0])),
        // left + 1 ring slots wrapped to 0: a shader division by zero on the GPU, an overflow
        // panic in debug builds without the cap on left in config.rs.
        ("plt_window_size", serde_json::json!([u64::MAX, 0])),
        ("plt_window_size", serde_json::json!([4294967296u64, 0])),
        ("head_dim", serde_json::json!(4294967294u64)),
        // L is no tensor shape (an L = 2 checkpoint fits any L >= 2): uncapped, a hang in the CPU
        // reference and an overflow in `kv_bytes`; config.rs caps it (MAX_LOOPS).
        ("plt_num_loops", serde_json::json!(4294967295u64)),
        // With an explicit num_key_value_heads and no head_dim: `hidden_size % 0` unless checked
        // first, a panic in release builds too (found by the load_model fuzzer).
        ("num_attention_heads", serde_json::json!(0)),
    ] {
        let mut v = base.clone();
        v[field] = bad.clone();
        if field == "head_dim" {
            // Query width H * Dh past 2^64 (an overflow panic in debug builds: found by this test).
            v["num_attention_heads"] = 4294967295u64.into();
            v["num_key_value_heads"] = 4294967295u64.into();
        }
        if field == "num_attention_heads" {
            v.as_object_mut().unwrap().remove("head_dim");
        }
        let text = v.to_string();
        assert_mentions(&config_err(&format!("{field} = {bad}"), &text), &[&format!("`{field}`")]);
    }
    // Huge but legal shapes: the config parses, the weights are missing (never allocated).
    for (field, huge) in [
        ("num_hidden_layers", 4294967295u64),
        ("vocab_size", 2147483647),
        ("hidden_size", 4294967295),
        ("intermediate_size", 4294967295),
    ] {
        let mut v = base.clone();
        v[field] = huge.into();
        let data = harness::join_model_input(v.to_string().as_bytes(), &st);
        let what = format!("{field} = {huge}");
        let out = bounded(&what, data.len(), || harness::load_model(&data));
        assert!(out[0].1.is_ok(), "{what}: {out:?}");
        let e = out[1].1.clone().expect_err(&what);
        assert!(e.contains("has shape") || e.contains("missing"), "{what}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// GGUF
// ---------------------------------------------------------------------------------------------

fn gstr(s: &[u8]) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(s);
    b
}

/// A GGUF v3 header with raw key/value bytes (key, type, payload) and raw tensor infos, then
/// `tail` (data).
fn gguf(n_tensors: u64, n_kv: u64, kv: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b.extend_from_slice(kv);
    b.extend_from_slice(tail);
    b
}

fn kv(key: &str, ty: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = gstr(key.as_bytes());
    b.extend(ty.to_le_bytes());
    b.extend_from_slice(payload);
    b
}

fn u32kv(key: &str, x: u32) -> Vec<u8> {
    kv(key, 4, &x.to_le_bytes())
}

fn gguf_err(what: &str, b: &[u8]) -> String {
    let e = err_of(what, b.len(), || load_gguf_bytes(b));
    assert!(e.starts_with("model.gguf: GGUF: ") || e.contains("tensor"), "{what}: {e}");
    e
}

#[test]
fn hostile_gguf_files_are_errors() {
    // Counts far beyond the file.
    assert_mentions(&gguf_err("n_kv u64::MAX", &gguf(0, u64::MAX, &[], &[])), &["metadata count"]);
    assert_mentions(&gguf_err("n_tensors u64::MAX", &gguf(u64::MAX, 0, &[], &[])), &["tensor count"]);
    assert_mentions(&gguf_err("n_tensors 2^40", &gguf(1 << 40, 0, &[], &[0; 64])), &["tensor count"]);
    // A string length of u64::MAX (key), and of a value.
    let mut k = u64::MAX.to_le_bytes().to_vec();
    k.extend([0; 16]);
    assert_mentions(&gguf_err("key length", &gguf(0, 1, &k, &[])), &["truncated"]);
    assert_mentions(&gguf_err("value length", &gguf(0, 1, &kv("general.name", 8, &u64::MAX.to_le_bytes()), &[])), &["truncated"]);
    // A gigantic vocabulary: an array of 2^60 strings, of 2^62 u32s, 2^40 nested arrays.
    for (elem, n) in [(8u32, 1u64 << 60), (4, 1 << 62), (9, 1 << 40), (8, u64::MAX)] {
        let mut p = elem.to_le_bytes().to_vec();
        p.extend(n.to_le_bytes());
        p.extend(gstr(b"<s>"));
        let b = gguf(0, 1, &kv("tokenizer.ggml.tokens", 9, &p), &[]);
        assert_mentions(&gguf_err(&format!("{n} tokens of type {elem}"), &b), &["tokenizer.ggml.tokens", "elements"]);
    }
    // Arrays nested deeper than the parser allows.
    let mut p = Vec::new();
    for _ in 0..64 {
        p.extend(9u32.to_le_bytes());
        p.extend(1u64.to_le_bytes());
    }
    p.extend(0u32.to_le_bytes());
    p.extend(0u64.to_le_bytes());
    assert_mentions(&gguf_err("nested arrays", &gguf(0, 1, &kv("x", 9, &p), &[])), &["nests arrays"]);
    // Invalid UTF-8 in a key and in a string value.
    assert_mentions(&gguf_err("key utf-8", &gguf(0, 1, &kv("\u{0}", 4, &[0; 4]).iter().map(|&x| if x == 0 { 0xFF } else { x }).collect::<Vec<_>>(), &[])), &["GGUF"]);
    let b = gguf(0, 1, &kv("general.architecture", 8, &gstr(&[0xC3, 0x28])), &[]);
    assert_mentions(&gguf_err("value utf-8", &b), &["UTF-8"]);
    // A tensor whose dims multiply past u64, or declare 2^62 elements of data that is not there.
    let tensor = |dims: &[u64], ty: u32, offset: u64| {
        let mut t = gstr(b"token_embd.weight");
        t.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            t.extend(d.to_le_bytes());
        }
        t.extend(ty.to_le_bytes());
        t.extend(offset.to_le_bytes());
        t
    };
    for (dims, ty, off, needle) in [
        (&[u64::MAX, u64::MAX][..], 0, 0, "overflows"),
        (&[1 << 31, 1 << 31], 0, 0, "overflows"),
        (&[1 << 30, 1 << 30], 0, 0, "past the end"),
        (&[1 << 62], 2, 0, "past the end"),
        (&[4, 4], 0, u64::MAX - 31, "past the end"),
        (&[4, 4], 99, 0, "unknown ggml type"),
        (&[33, 4], 2, 0, "block size"),
        (&[1, 1, 1, 1, 1], 0, 0, "dimensions"),
    ] {
        let b = gguf(1, 0, &tensor(dims, ty, off), &[0; 64]);
        assert_mentions(&gguf_err(&format!("tensor {dims:?} type {ty}"), &b), &[needle]);
    }
    // Model metadata with the largest legal counts: errors (tensors missing), never a
    // pre-allocation of 2^32 layers.
    let mut meta = kv("general.architecture", 8, &gstr(b"llama"));
    for (k, x) in [
        ("llama.block_count", u32::MAX),
        ("llama.context_length", u32::MAX),
        ("llama.embedding_length", 8),
        ("llama.feed_forward_length", u32::MAX),
        ("llama.attention.head_count", 2),
        ("llama.vocab_size", u32::MAX / 2),
    ] {
        meta.extend(u32kv(k, x));
    }
    assert_mentions(&gguf_err("block_count u32::MAX", &gguf(0, 7, &meta, &[])), &["missing"]);
    // A real seed with every length field bumped to u64::MAX in turn must never panic.
    let seed = std::fs::read(root().join("fuzz/seeds/gguf/f32-tied")).unwrap();
    for at in (8..seed.len().min(4096) - 8).step_by(8) {
        let mut b = seed.clone();
        b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        bounded(&format!("u64::MAX at {at}"), b.len(), || harness::gguf(&b));
    }
}

/// A llama GGUF header whose metadata reaches the config checks: D = 8, H = 2, L = 1,
/// V = 16, plus `extra` key/value pairs (each a `kv`).
fn llama_meta(extra: &[Vec<u8>]) -> Vec<u8> {
    let mut meta = kv("general.architecture", 8, &gstr(b"llama"));
    for (k, x) in [
        ("llama.block_count", 1),
        ("llama.context_length", 64),
        ("llama.embedding_length", 8),
        ("llama.feed_forward_length", 16),
        ("llama.vocab_size", 16),
    ] {
        meta.extend(u32kv(k, x));
    }
    let mut n = 6;
    if !extra.iter().any(|e| e.starts_with(&gstr(b"llama.attention.head_count"))) {
        meta.extend(u32kv("llama.attention.head_count", 2));
        n += 1;
    }
    for e in extra {
        meta.extend_from_slice(e);
        n += 1;
    }
    gguf(0, n, &meta, &[])
}

/// Every error names what the user wrote: the GGUF metadata key (not the config.json field it
/// becomes), the CLI flag (not the library's field), and the value.
#[test]
fn errors_name_the_key_flag_and_value_as_written() {
    // GGUF: the config's own checks, named by the metadata key and the file.
    for (what, extra, needle) in [
        ("plt.num_loops 100", vec![u32kv("plt.num_loops", 100)], "model.gguf: GGUF: metadata `plt.num_loops`: 100 is more than"),
        ("plt.num_loops 0", vec![u32kv("plt.num_loops", 0)], "model.gguf: GGUF: metadata `plt.num_loops`: must be at least 1"),
        (
            "2^31 heads of 4",
            vec![u32kv("llama.attention.head_count", 1 << 31), u32kv("llama.attention.key_length", 4)],
            "metadata `llama.attention.key_length`: 2147483648 heads of 4",
        ),
        ("key_length 5", vec![u32kv("llama.attention.key_length", 5)], "metadata `llama.attention.key_length` = 5"),
        ("rope.dimension_count 7", vec![u32kv("llama.rope.dimension_count", 7)], "metadata `llama.rope.dimension_count` = 7"),
    ] {
        let e = gguf_err(what, &llama_meta(&extra));
        assert!(e.contains(needle) && !e.contains("config.json"), "{what}: {e}");
    }
    // A tensor error names the file (a shape or dtype: the file holding the tensor; a missing
    // tensor: the model, since no file has it).
    let (fc, fst) = fixed_seed();
    let base: serde_json::Value = serde_json::from_slice(&fc).unwrap();
    for (field, x, start) in [
        ("hidden_size", 12, "model.safetensors: tensor `model."),
        ("num_hidden_layers", 2, "model.safetensors: tensor `model.layers.1."),
    ] {
        let mut v = base.clone();
        v[field] = x.into();
        let c = Config::from_json_str(&v.to_string()).unwrap();
        let e = Weights::from_bytes(&fst, &c).unwrap_err().to_string();
        assert!(e.starts_with(start) && (e.contains("has shape") || e.contains("is missing")), "{field} {x}: {e}");
    }
    let e = gguf_err("no tensors", &llama_meta(&[]));
    assert!(e.starts_with("model.gguf: tensor `") && e.ends_with("is missing from the checkpoint"), "{e}");
    // generation_config.json: each special id checked whole and named by its field (a u64
    // id was cast to u32, so 2^32 became token 0).
    let cfg = Config::from_json_str(&String::from_utf8_lossy(&fc)).unwrap();
    for (g, want) in [
        (serde_json::json!({"bos_token_id": 4294967296u64}), "field `bos_token_id`: token id 4294967296 is outside the vocabulary (vocab_size 16)"),
        (serde_json::json!({"eos_token_id": [2, 4294967298u64]}), "field `eos_token_id`: token id 4294967298 is outside the vocabulary (vocab_size 16)"),
        (serde_json::json!({"eos_token_id": "</s>"}), "field `eos_token_id`: expected a token id, got \"</s>\""),
    ] {
        let inputs = plt::tokenizer::TokenizerInputs {
            source: "tokenizer.json".into(),
            json: serde_json::to_vec(&plt::init::tokenizer_json(16)).unwrap(),
            generation_config: Some(g.clone()),
            tokenizer_config: None,
        };
        let e = Tokenizer::for_model(&inputs, &cfg).err().map(|e| e.to_string()).unwrap_or_else(|| "(accepted)".into());
        assert_eq!(e, format!("generation_config.json: {want}"), "{g}");
    }
    // tokenizer_config.json: a field of the wrong type is an error naming it (it was ignored),
    // a list of named templates gives the one named "default", and a tokenizer.json that does
    // not parse names the file.
    let tok_inputs = |json: Vec<u8>, tc: Option<serde_json::Value>| plt::tokenizer::TokenizerInputs {
        source: "tokenizer.json".into(),
        json,
        generation_config: None,
        tokenizer_config: tc,
    };
    let tj = || serde_json::to_vec(&plt::init::tokenizer_json(16)).unwrap();
    for (tc, want) in [
        (serde_json::json!({"chat_template": 7}), "field `chat_template`: expected a string or a list of {\"name\", \"template\"} objects, got 7"),
        (serde_json::json!({"chat_template": [{"name": "tool_use", "template": "x"}]}), "field `chat_template`: expected a template named \"default\" in the list, got [{\"name\":\"tool_use\",\"template\":\"x\"}]"),
        (serde_json::json!({"add_bos_token": "yes"}), "field `add_bos_token`: expected true or false, got \"yes\""),
        (serde_json::json!({"eos_token": {"text": "</s>"}}), "field `eos_token`: expected a token's text or {\"content\": text}, got {\"text\":\"</s>\"}"),
    ] {
        let e = Tokenizer::for_model(&tok_inputs(tj(), Some(tc.clone())), &cfg).err().map(|e| e.to_string()).unwrap_or_else(|| "(accepted)".into());
        assert_eq!(e, format!("tokenizer: tokenizer_config.json: {want}"), "{tc}");
    }
    let named = serde_json::json!({"chat_template": [{"name": "rag", "template": "r"}, {"name": "default", "template": "d"}]});
    assert_eq!(Tokenizer::for_model(&tok_inputs(tj(), Some(named)), &cfg).unwrap().chat_template.as_deref(), Some("d"));
    let e = Tokenizer::for_model(&tok_inputs(b"{".to_vec(), None), &cfg).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.starts_with("tokenizer: tokenizer.json: "), "{e}");
    // config.json: the value that is wrong.
    let mut v: serde_json::Value = serde_json::from_slice(&fixed_seed().0).unwrap();
    v["vocab_size"] = 4294967295u64.into();
    let e = Config::from_json_str(&v.to_string()).unwrap_err().to_string();
    assert_eq!(e, "config.json: field `vocab_size`: 4294967295 is more than the supported 2147483647");
    // The sampler names its fields as they are spelled in `SamplerConfig`.
    use plt::sampling::SamplerConfig;
    for (field, sc) in [
        ("top_p", SamplerConfig { top_p: 0.0, ..Default::default() }),
        ("min_p", SamplerConfig { min_p: 1.0, ..Default::default() }),
        ("repetition_penalty", SamplerConfig { repetition_penalty: 0.0, ..Default::default() }),
        ("repeat_last_n", SamplerConfig { repeat_last_n: 1000, ..Default::default() }),
    ] {
        let e = sc.validate().unwrap_err().to_string();
        assert!(e.starts_with(&format!("{field}: ")), "{field}: {e}");
    }
    // The CLI names the flag as typed.
    let tmp = std::env::temp_dir().join(format!("plt-flags-{}", std::process::id()));
    let m = tmp.join("m");
    let ms = m.to_str().unwrap();
    let plt_bin = env!("CARGO_BIN_EXE_plt");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(plt_bin).args(args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (ok, err) = run(&["init", ms, "--vocab", "20", "--hidden", "16", "--intermediate", "16", "--heads", "2"]);
    assert!(ok, "{err}");
    let z = tmp.join("z");
    let zs = z.to_str().unwrap();
    for (args, line) in [
        (vec!["generate", "--model", ms, "--repeat-penalty", "0", "hi"], "error: --repeat-penalty: 0 must be a finite number > 0"),
        (vec!["generate", "--model", ms, "--top-p", "1.5", "hi"], "error: --top-p: 1.5 must be in (0, 1]"),
        (vec!["chat", "--model", ms, "--min-p", "1"], "error: --min-p: 1 must be in [0, 1)"),
        (vec!["generate", "--model", ms, "--repeat-last-n", "300", "hi"], "error: --repeat-last-n: 300 is more than 256"),
        (vec!["init", zs, "--heads", "3", "--kv-heads", "2"], "error: --kv-heads: 2 does not divide num_attention_heads (3)"),
        (vec!["init", zs, "--vocab", "3000000000"], "error: --vocab: 3000000000 is more than the supported 2147483647"),
        (vec!["init", zs, "--loops", "65"], "error: --loops: 65 is more than the supported 64"),
        (vec!["score", "--model", ms, "--tokens", "1,2", "--dtype", "f8"], "error: --dtype: expected f32, f16 or bf16, got `f8`"),
        (vec!["score", "--model", ms, "--tokens", "1,2", "--kv-dtype", "q4"], "error: --kv-dtype: expected f32 or f16, got `q4`"),
        (vec!["info", "--model", ms, "--batch", "0"], "error: memory plan: --batch 0 must be at least 1"),
        (vec!["info", "--model", ms, "--context", "0"], "error: memory plan: --context 0 must be at least 1"),
        (
            vec!["info", "--model", ms, "--batch", "1099511627776", "--context", "1073741824"],
            "error: memory plan: --batch 1099511627776 x --context 1073741824 is more than 2^32 positions",
        ),
        (vec!["bench", "--kv-heads", "3"], "error: --kv-heads: 3 must be positive and divide num_attention_heads (4)"),
        (vec!["bench", "--loops", "2,100"], "error: --loops: 100 is more than the supported 64"),
        (vec!["bench", "--window", "4294967296"], "error: --window: 4294967296 is more than the supported 4294967295"),
        (vec!["bench", "--batch", "1,0"], "error: --batch: 0 must be at least 1"),
    ] {
        let (ok, err) = run(&args);
        assert!(!ok && err.lines().any(|l| l == line), "plt {args:?}: {err}");
    }
    assert!(!z.exists(), "nothing is written for a bad flag");
    let _ = std::fs::remove_dir_all(&tmp);
}

// ---------------------------------------------------------------------------------------------
// Tokenizers
// ---------------------------------------------------------------------------------------------

#[test]
fn hostile_tokenizers_are_errors() {
    let tok_err = |what: &str, b: &[u8]| err_of(what, b.len(), || Tokenizer::from_bytes(b, 64));
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    assert_mentions(&tok_err("nested", deep.as_bytes()), &["tokenizer"]);
    assert_mentions(&tok_err("invalid UTF-8", &[b'{', 0xFF, 0xFE, b'}']), &["tokenizer"]);
    assert_mentions(&tok_err("empty", b""), &["tokenizer"]);
    assert_mentions(&tok_err("not an object", b"[1, 2]"), &["tokenizer"]);
    // Cut inside the "decoder" object, or a non-string key there: tokenizers 0.22 panics
    // (`expect("Helper")`, found by the tokenizer fuzzer); plt::Tokenizer turns it into an error.
    let mut t = plt::init::tokenizer_json(8);
    t["decoder"] = serde_json::json!({"type": "ByteLevel", "add_prefix_space": true});
    let text = serde_json::to_string(&t).unwrap();
    // The panic is caught inside plt, but the panic hook still runs, and with RUST_BACKTRACE set
    // (as CI sets it) it symbolises a backtrace: about 150 MB, freed at once. Hence the bound.
    let caught = |what: &str, b: &[u8]| {
        let (r, cost) = measured(|| Tokenizer::from_bytes(b, 64));
        let e = r.unwrap_or_else(|m| panic!("{what}: panicked through: {m}")).err().unwrap_or_else(|| panic!("{what}: loaded"));
        assert!(cost.peak < REFUSE_OVER && cost.time <= MAX_TIME, "{what}: {cost:?}");
        e.to_string()
    };
    let at = text.find("\"decoder\"").unwrap() + 30;
    assert_mentions(&caught("cut in decoder", &text.as_bytes()[..at]), &["tokenizer", "malformed", "Helper"]);
    let broken = text.replacen("\"add_prefix_space\"", "1", 1);
    assert_mentions(&caught("decoder key 1", broken.as_bytes()), &["tokenizer", "malformed", "key must be a string"]);
    // More tokens than the model's vocabulary.
    let json = serde_json::to_vec(&plt::init::tokenizer_json(65)).unwrap();
    assert_mentions(&tok_err("65 tokens for V = 64", &json), &["65 tokens", "64"]);
    // Few tokens, but one id far past the vocabulary (checking only the count accepts it).
    let mut t = plt::init::tokenizer_json(3);
    t["model"]["vocab"]["far"] = 4_000_000_000u64.into();
    let json = serde_json::to_vec(&t).unwrap();
    assert_mentions(&tok_err("id 4e9", &json), &["\"far\"", "4000000000", "vocab_size 64"]);
    let mut t = plt::init::tokenizer_json(3);
    t["added_tokens"][0]["id"] = 64.into();
    t["model"]["vocab"]["<unk>"] = 64.into();
    assert_mentions(&tok_err("added id 64", &serde_json::to_vec(&t).unwrap()), &["64"]);

    // The fixed tokenizers on hostile text and ids: never a panic, bounded.
    let long = "é".repeat(200_000);
    for (name, tok) in [("word", harness::word_tokenizer()), ("byte", harness::byte_tokenizer())] {
        bounded_by(&format!("{name}: long text"), long.len(), 256, || tok.encode(&long, true).unwrap());
        let ids = [u32::MAX, 0, 1 << 31, 256, 257, 63, 64];
        bounded(&format!("{name}: odd ids"), 28, || tok.decode(&ids, false).unwrap());
        bounded(&format!("{name}: stream odd ids"), 28, || {
            let mut s = plt::tokenizer::StreamDecoder::new(true);
            for id in ids {
                s.push(tok, id).unwrap();
            }
            s.flush(tok).unwrap()
        });
    }
    // The harness's own modes with hostile payloads.
    for data in [&b"\x02\xff\xfe\xe2\x82"[..], b"\x03\xff\xff\xff\xff\x00", b"\x01<s></s><unk>", b"\x00{}"] {
        bounded(&format!("{data:?}"), data.len(), || harness::tokenizer(data));
    }
}

/// A chat template comes from the model files (tokenizer_config.json, GGUF metadata), so it is
/// input too. minijinja caps `range` at 100 000 items and parse depth at 150, but not the work of
/// nested loops: this template runs 10^10 iterations, so without a limit `plt chat` on such a
/// model hangs. `Tokenizer::apply_chat_template` runs templates on minijinja fuel
/// (`CHAT_TEMPLATE_FUEL`), so this is an error within seconds.
#[test]
fn chat_template_work_is_bounded() {
    let mut tok = Tokenizer::from_bytes(&harness::byte_tokenizer_json(), 257).unwrap();
    tok.chat_template = Some("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}".into());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = tok.apply_chat_template(&[plt::tokenizer::ChatMessage::new("user", "hi")], true);
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(r) => assert!(r.is_err(), "rendered: {r:?}"),
        Err(_) => panic!("rendering a 10^10-iteration chat template did not stop within 10 s"),
    }
    // The fuel still covers a real (ChatML, SmolLM2-style) template over a long conversation.
    let mut tok = Tokenizer::from_bytes(&harness::byte_tokenizer_json(), 257).unwrap();
    tok.chat_template = Some(
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
         {{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}\
         {{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}\
         {% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
            .into(),
    );
    let msgs: Vec<_> = (0..5000)
        .map(|i| plt::tokenizer::ChatMessage::new(if i % 2 == 0 { "user" } else { "assistant" }, &format!("message {i}")))
        .collect();
    let text = tok.apply_chat_template(&msgs, true).expect("a 5000-message ChatML conversation renders");
    assert!(text.contains("message 4999<|im_end|>") && text.ends_with("<|im_start|>assistant\n"), "{}", &text[text.len() - 80..]);
}

/// A chat template can also make text without bound in little work: 100 000 iterations of a
/// 100 000-byte string are 10 GB, and the process aborts on the allocation. The rendering is
/// bounded (`MAX_TEXT_BYTES`), in the output and in text captured by `{% set %}` or filter
/// blocks, so each of these is an error within the limit's memory.
#[test]
fn chat_template_text_is_bounded() {
    use plt::tokenizer::{ChatMessage, MAX_TEXT_BYTES};
    let line = "y".repeat(1000);
    let hostile = [
        r#"{% for i in range(100000) %}{{ "x" * 100000 }}{% endfor %}"#.to_string(),
        r#"{% set s %}{% for i in range(100000) %}{{ "x" * 100000 }}{% endfor %}{% endset %}{{ s | length }}"#.into(),
        r#"{% filter upper %}{% for i in range(100000) %}{{ messages[0].content * 10000 }}{% endfor %}{% endfilter %}"#.into(),
        format!("{{% for i in range(100000) %}}{line}{{% endfor %}}"),
        r#"{% for i in range(100000) %}{{ messages * 1000 }}{% endfor %}"#.into(),
    ];
    let msgs = [ChatMessage::new("user", &"hello ".repeat(10))];
    for template in hostile {
        let mut tok = Tokenizer::from_bytes(&harness::byte_tokenizer_json(), 257).unwrap();
        tok.chat_template = Some(template.clone());
        let r = bounded_by(&template, MAX_TEXT_BYTES, 4, || tok.apply_chat_template(&msgs, true));
        let e = r.expect_err(&template).to_string();
        assert!(e.contains(&format!("chat template output exceeds {MAX_TEXT_BYTES} bytes")), "{template}: {e}");
    }
    // Just under the limit renders; the tokenizer takes text up to the limit and no more.
    let mut tok = Tokenizer::from_bytes(&harness::byte_tokenizer_json(), 257).unwrap();
    let n = MAX_TEXT_BYTES / 100_000;
    tok.chat_template = Some(format!(r#"{{% for i in range({n}) %}}{{{{ "x" * 100000 }}}}{{% endfor %}}"#));
    assert_eq!(tok.apply_chat_template(&msgs, false).unwrap().len(), n * 100_000);
    tok.chat_template = Some(format!(r#"{{% for i in range({}) %}}{{{{ "x" * 100000 }}}}{{% endfor %}}"#, n + 1));
    assert!(tok.apply_chat_template(&msgs, false).is_err());
    let text = "x".repeat(MAX_TEXT_BYTES + 1);
    let e = tok.encode(&text, false).unwrap_err().to_string();
    assert!(e.contains(&MAX_TEXT_BYTES.to_string()) && e.contains(&text.len().to_string()), "{e}");
}

/// `StreamDecoder` holds text back while the decoded window ends in U+FFFD (half a character),
/// and every `push` decodes the whole window. A run of ids that decode to U+FFFD (invalid
/// UTF-8 bytes, or a real U+FFFD) therefore stalls streaming until a normal character comes and
/// makes the run quadratic. Found by the `tokenizer` fuzzer (tests/fuzz-cases/tokenizer/
/// stream-fffd-quadratic: a timeout under ASan). Fixed: `push` emits all but the last 4 pending
/// ids once their text is final, so the window stays bounded.
#[test]
fn stream_decoding_invalid_bytes_is_linear() {
    let tok = harness::byte_tokenizer();
    // The id of the lone byte 0xFF (not UTF-8 on its own; GPT-2's byte map shows it as `ÿ`).
    let ff = (0..256u32).find(|&i| tok.decode(&[i], false).unwrap() == "\u{FFFD}" && tok.token_text(i).as_deref() == Some("ÿ")).unwrap();
    let time = |n: usize| {
        let start = Instant::now();
        let mut s = plt::tokenizer::StreamDecoder::new(false);
        let mut out = String::new();
        for _ in 0..n {
            out += &s.push(tok, ff).unwrap().unwrap_or_default();
        }
        out += &s.flush(tok).unwrap().unwrap_or_default();
        assert_eq!(out.chars().count(), n);
        start.elapsed()
    };
    // Best of 3 (the machine may be busy): linear is 4x the time for 4x the ids, quadratic 16x.
    let best = |n: usize| (0..3).map(|_| time(n)).min().unwrap();
    let (a, b) = (best(4000), best(16000));
    eprintln!("4000 ids: {a:?}, 16000 ids: {b:?}");
    assert!(b < a * 8, "4x the ids took {:.1}x the time", b.as_secs_f64() / a.as_secs_f64());
}

/// Bounding the held-back window must not split characters: multi-byte characters, one byte
/// per id, after a run of invalid bytes, come out whole, and the text equals a one-shot decode.
#[test]
fn stream_decoding_keeps_characters_whole_after_invalid_bytes() {
    let tok = harness::byte_tokenizer();
    let ff = (0..256u32).find(|&i| tok.decode(&[i], false).unwrap() == "\u{FFFD}" && tok.token_text(i).as_deref() == Some("ÿ")).unwrap();
    let text = "é😀 ok ∑x 😀😀 end";
    let mut ids = vec![ff; 9];
    ids.extend(tok.encode(text, false).unwrap());
    ids.extend([ff; 3]);
    ids.extend(tok.encode("😀", false).unwrap());
    assert!(ids.len() > text.len(), "one id per byte");
    let mut s = plt::tokenizer::StreamDecoder::new(false);
    let mut pieces = Vec::new();
    for &id in &ids {
        pieces.extend(s.push(tok, id).unwrap());
    }
    pieces.extend(s.flush(tok).unwrap());
    let out: String = pieces.concat();
    assert_eq!(out, tok.decode(&ids, false).unwrap());
    assert_eq!(out, format!("{}{text}{}😀", "\u{FFFD}".repeat(9), "\u{FFFD}".repeat(3)));
    assert!(pieces.iter().all(|p| !p.is_empty()));
}

/// Ids that decode to nothing (a special token skipped from the text) inside a character must
/// not count as its bytes: a 4-byte character whose lead byte is followed by 13 such ids and
/// then its 3 continuation bytes was cut after the lead byte (streamed `�` and lost the
/// rest; a one-shot decode gives the character). Found by the `tokenizer` fuzzer
/// (tests/fuzz-cases/tokenizer/stream-empty-ids-split-char). Fixed: `push` leaves ids that decode
/// to nothing out of its window.
#[test]
fn stream_decoding_keeps_characters_whole_across_empty_ids() {
    let tok = harness::byte_tokenizer();
    // The id of byte `b`, for bytes GPT-2's byte map shows as themselves (printable Latin-1).
    let byte = |b: u8| (0..256u32).find(|&i| tok.token_text(i) == Some((b as char).to_string())).unwrap();
    // U+A1D30: F2 A1 B4 B0, every byte one the map shows as itself.
    let ch = "\u{A1D30}";
    assert_eq!(ch.as_bytes(), [0xF2, 0xA1, 0xB4, 0xB0]);
    // Ids that decode to nothing: past the vocabulary (257), and the special token (256) when
    // special tokens are skipped.
    for (skip, empty) in [(false, 257), (true, 257), (true, 256)] {
        assert_eq!(tok.decode(&[empty], skip).unwrap(), "");
        let mut ids: Vec<u32> = vec![byte(b'"'), byte(0xF9), byte(0xF2)];
        ids.extend([empty; 13]);
        ids.extend([0xA1, 0xB4, 0xB0, b'm', b'C'].map(byte));
        let mut s = plt::tokenizer::StreamDecoder::new(skip);
        let mut out = String::new();
        for &id in &ids {
            out += &s.push(tok, id).unwrap().unwrap_or_default();
        }
        out += &s.flush(tok).unwrap().unwrap_or_default();
        assert_eq!(out, tok.decode(&ids, skip).unwrap());
        assert_eq!(out, format!("\"\u{FFFD}{ch}mC"), "skip_special {skip}, empty id {empty}");
    }
}

// ---------------------------------------------------------------------------------------------
// The error table of docs/reliability.md
// ---------------------------------------------------------------------------------------------

/// Prints, as Markdown table rows, the exact error of every bad input that the test suite
/// tries (tests/loading.rs, tests/model.rs, tests/cli.rs, tests/sampling.rs, tests/generate.rs
/// and this file), for docs/reliability.md. Needs an adapter (lavapipe will do) for the
/// session rows. Regenerate with:
///   cargo test --test fuzz_regressions -- --ignored --nocapture error_table
#[test]
#[ignore]
fn error_table() {
    use plt::init::{named_tensors, random_weights, write_model, InitOptions};
    use safetensors::tensor::{Dtype, TensorView};
    let row = |src: &str, input: &str, e: String| {
        let e = e.replace('|', "\\|").replace('\n', " ");
        // Double backticks: the messages quote names in single ones.
        println!("| {src} | {} | `` {e} `` |", input.replace('|', "\\|"));
    };
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("error-table");
    let _ = std::fs::remove_dir_all(&tmp);
    let fresh = |name: &str| {
        let d = tmp.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let show = |p: &Path| p.strip_prefix(&tmp).map(|q| format!("<dir>/{}", q.display())).unwrap_or(p.display().to_string());
    let tidy = |e: String| e.replace(&tmp.display().to_string(), "<dir>");
    let cfg_of = |loops: usize, hidden_gate: bool, tied: bool| {
        let v = serde_json::json!({
            "vocab_size": 37, "hidden_size": 16, "intermediate_size": 24,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 64, "tie_word_embeddings": tied,
            "plt_num_loops": loops, "plt_window_size": [3, 0],
            "plt_gate_use_hidden_states": hidden_gate, "bos_token_id": 1, "eos_token_id": 2,
        });
        Config::from_json(v.as_object().unwrap()).unwrap()
    };

    // --- tests/loading.rs: config.json
    let cfg = cfg_of(2, true, false);
    let opts = InitOptions { seed: 11, qkv_bias: true, ..Default::default() };
    let w = random_weights(&cfg, &opts);
    let dir = fresh("good");
    write_model(&dir, &cfg, &w, &opts).unwrap();
    let cpath = dir.join("config.json");
    let good_cfg = std::fs::read(&cpath).unwrap();
    let src = "loading.rs config";
    let missing = tmp.join("none/config.json");
    row(src, "config.json missing", tidy(Config::from_file(&missing).unwrap_err().to_string()));
    for (input, text) in [("`{ not json`", &b"{ not json"[..]), ("`[1, 2]`", b"[1, 2]"), ("bytes FF FE 00", &[0xff, 0xfe, 0x00])] {
        std::fs::write(&cpath, text).unwrap();
        row(src, input, tidy(Config::from_file(&cpath).unwrap_err().to_string()));
    }
    let good_json = cfg.to_json();
    for (field, bad) in [
        ("hidden_size", serde_json::json!("16")),
        ("num_hidden_layers", serde_json::json!(1.5)),
        ("num_attention_heads", serde_json::json!([])),
        ("tie_word_embeddings", serde_json::json!("false")),
        ("rope_theta", serde_json::json!("big")),
        ("plt_window_size", serde_json::json!([3, 1])),
        ("plt_gate_use_hidden_states", serde_json::json!(1)),
        ("eos_token_id", serde_json::json!(["</s>"])),
    ] {
        let mut v = good_json.clone();
        v[field] = bad.clone();
        row(src, &format!("`{field}: {bad}`"), Config::from_json_str(&v.to_string()).unwrap_err().to_string());
    }
    let mut v = good_json.clone();
    v.as_object_mut().unwrap().remove("vocab_size");
    row(src, "`vocab_size` removed", Config::from_json_str(&v.to_string()).unwrap_err().to_string());
    // src/config.rs unit test bad_fields_are_named (on a minimal config)
    let min = serde_json::json!({"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 32});
    for extra in [
        r#"{"num_key_value_heads": 3}"#, r#"{"plt_window_size": [4, 1]}"#, r#"{"plt_window_size": 4}"#,
        r#"{"plt_num_loops": 0}"#, r#"{"hidden_size": 0}"#, r#"{"hidden_size": -8}"#, r#"{"plt_loop_mode": "serial"}"#,
        r#"{"head_dim": 5}"#, r#"{"rms_norm_eps": 0}"#, r#"{"eos_token_id": 99}"#,
        r#"{"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}"#, r#"{"rope_parameters": {"rope_type": "llama3"}}"#,
    ] {
        let mut v = min.clone();
        for (k, x) in serde_json::from_str::<serde_json::Value>(extra).unwrap().as_object().unwrap() {
            v[k] = x.clone();
        }
        row("config.rs unit", &format!("`{extra}`"), Config::from_json_str(&v.to_string()).unwrap_err().to_string());
    }
    std::fs::write(&cpath, &good_cfg).unwrap();

    // --- tests/loading.rs: checkpoints
    let src = "loading.rs weights";
    let st = dir.join("model.safetensors");
    let good = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let data_start = 8 + n;
    let load = |b: &[u8]| {
        std::fs::write(&st, b).unwrap();
        tidy(Weights::load_dir(&dir, &cfg).unwrap_err().to_string())
    };
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    row(src, "4096 bytes of garbage", load(&garbage));
    row(src, "empty file", load(&[]));
    row(src, "first 5 bytes", load(&good[..5]));
    let mut long = good.clone();
    long[..8].copy_from_slice(&(good.len() as u64 + 100).to_le_bytes());
    row(src, "header length = file length + 100", load(&long));
    long[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    row(src, "header length u64::MAX", load(&long));
    let mut bad_json = good.clone();
    bad_json[8] = b'[';
    bad_json[9] = b'?';
    row(src, "header not JSON", load(&bad_json));
    row(src, "last byte cut", load(&good[..good.len() - 1]));
    row(src, "cut 3 bytes into the data", load(&good[..data_start + 3]));
    row(src, "cut at the data", load(&good[..data_start]));
    let mut extra = good.clone();
    extra.extend_from_slice(&[0; 16]);
    row(src, "16 trailing bytes", load(&extra));
    std::fs::write(&st, &good).unwrap();
    let raw = || -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
        named_tensors(&w)
            .into_iter()
            .map(|(n, t)| (n, Dtype::F32, t.shape.clone(), t.data.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .collect()
    };
    let ser = |t: &[(String, Dtype, Vec<usize>, Vec<u8>)]| {
        let views: Vec<(String, TensorView)> =
            t.iter().map(|(n, dt, s, b)| (n.clone(), TensorView::new(*dt, s.clone(), b).unwrap())).collect();
        safetensors::serialize(views, None).unwrap()
    };
    let from = |t: &[(String, Dtype, Vec<usize>, Vec<u8>)]| Weights::from_bytes(&ser(t), &cfg).unwrap_err().to_string();
    let mut r = raw();
    let t = r.iter_mut().find(|t| t.0 == "model.layers.1.self_attn.k_proj.weight").unwrap();
    t.2 = vec![16, 8];
    row(src, "k_proj stored [16, 8]", from(&r));
    let mut r = raw();
    let t = r.iter_mut().find(|t| t.0 == "model.layers.0.post_attention_layernorm.weight").unwrap();
    t.2 = vec![17];
    t.3.extend_from_slice(&1f32.to_le_bytes());
    row(src, "a norm of 17 values", from(&r));
    let mut r = raw();
    r.iter_mut().find(|t| t.0 == "model.layers.1.self_attn.plt_gate.bias").unwrap().2 = vec![1, 4];
    row(src, "gate bias stored [1, 4]", from(&r));
    let mut r = raw();
    let t = r.iter_mut().find(|t| t.0 == "model.norm.weight").unwrap();
    t.1 = Dtype::I32;
    row(src, "model.norm.weight as I32", from(&r));
    let mut r = raw();
    r.iter_mut().find(|t| t.0 == "model.layers.1.mlp.down_proj.weight").unwrap().3[4 * 21..4 * 22].copy_from_slice(&f32::NAN.to_le_bytes());
    row(src, "a NaN at value 21 of down_proj", from(&r));
    for (tensor, dt) in [("model.layers.0.mlp.up_proj.weight", Dtype::F64), ("model.layers.1.self_attn.q_proj.bias", Dtype::U8)] {
        let mut r = raw();
        let t = r.iter_mut().find(|t| t.0 == tensor).unwrap();
        let n: usize = t.2.iter().product();
        t.1 = dt;
        t.3 = vec![0; n * dt.bitsize() / 8];
        row(src, &format!("{tensor} as {dt:?}"), from(&r));
    }
    for name in [
        "model.embed_tokens.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.0.self_attn.plt_gate.gate_norm.weight",
        "model.layers.1.self_attn.plt_gate.weight",
        "model.norm.weight",
        "lm_head.weight",
    ] {
        let r: Vec<_> = raw().into_iter().filter(|t| t.0 != name).collect();
        row(src, &format!("{name} absent"), from(&r));
    }
    let mut r = raw();
    let mut alias = r.iter().find(|t| t.0 == "model.layers.0.self_attn.plt_gate.weight").unwrap().clone();
    alias.0 = "model.layers.0.self_attn.loop_gate_proj.weight".into();
    r.push(alias);
    row(src, "plt_gate.weight and its alias loop_gate_proj.weight", from(&r));
    std::fs::remove_file(&st).unwrap();
    row(src, "no model.safetensors", tidy(Weights::load_dir(&dir, &cfg).unwrap_err().to_string()));
    row(src, "directory does not exist", tidy(Weights::load_dir(&dir.join("does-not-exist"), &cfg).unwrap_err().to_string()));
    // shards
    let src = "loading.rs shards";
    let scfg = cfg_of(2, false, false);
    let sopts = InitOptions { seed: 4, shards: 3, ..Default::default() };
    let sw = random_weights(&scfg, &sopts);
    let sharded = |name: &str| {
        let d = fresh(name);
        write_model(&d, &scfg, &sw, &sopts).unwrap();
        d
    };
    let index = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("model.safetensors.index.json")).unwrap()).unwrap()
    };
    let err_dir = |d: &Path| tidy(Weights::load_dir(d, &scfg).unwrap_err().to_string());
    let d = sharded("shard-missing");
    std::fs::remove_file(d.join("model-00002-of-00003.safetensors")).unwrap();
    row(src, "shard 2 of 3 deleted", err_dir(&d));
    for evil in ["../model-00001-of-00003.safetensors", "/etc/passwd", "..\\x.safetensors"] {
        let d = sharded("shard-escape");
        let mut v = index(&d);
        v["weight_map"]["model.norm.weight"] = evil.into();
        std::fs::write(d.join("model.safetensors.index.json"), v.to_string()).unwrap();
        row(src, &format!("weight_map entry `{evil}`"), err_dir(&d));
    }
    let d = sharded("index-bad");
    std::fs::write(d.join("model.safetensors.index.json"), "{\"weight_map\": ").unwrap();
    row(src, "index not JSON", err_dir(&d));
    std::fs::write(d.join("model.safetensors.index.json"), "{\"metadata\": {}}").unwrap();
    row(src, "index without weight_map", err_dir(&d));
    let d = sharded("index-num");
    let mut v = index(&d);
    v["weight_map"]["model.norm.weight"] = 3.into();
    std::fs::write(d.join("model.safetensors.index.json"), v.to_string()).unwrap();
    row(src, "weight_map entry `3`", err_dir(&d));
    let d = sharded("shard-corrupt");
    let p = d.join("model-00003-of-00003.safetensors");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() - 4]).unwrap();
    row(src, "shard 3 cut by 4 bytes", err_dir(&d));
    let d = sharded("shard-dup");
    let v = index(&d);
    let home = v["weight_map"]["model.norm.weight"].as_str().unwrap().to_string();
    let other = if home.contains("00001") { "model-00002-of-00003.safetensors" } else { "model-00001-of-00003.safetensors" };
    let src_b = std::fs::read(d.join(&home)).unwrap();
    let src_st = safetensors::SafeTensors::deserialize(&src_b).unwrap();
    let dst_b = std::fs::read(d.join(other)).unwrap();
    let dst_st = safetensors::SafeTensors::deserialize(&dst_b).unwrap();
    let mut all = dst_st.tensors();
    all.push(("model.norm.weight".to_string(), src_st.tensor("model.norm.weight").unwrap()));
    std::fs::write(d.join(other), safetensors::serialize(all, None).unwrap()).unwrap();
    row(src, "model.norm.weight in two shards", err_dir(&d));
    let one = cfg_of(1, false, true);
    let ow = random_weights(&one, &InitOptions::default());
    for shards in [0, named_tensors(&ow).len() + 1] {
        let e = write_model(&fresh("shards-n"), &one, &ow, &InitOptions { shards, ..Default::default() }).unwrap_err();
        row(src, &format!("write_model with {shards} shards"), e.to_string());
    }

    // --- this file: hostile inputs (see the tests above for the exact bytes)
    let src = "fuzz_regressions.rs";
    let (fcfg, fst) = fixed_seed();
    let _ = fcfg;
    let fixed = |b: &[u8]| Weights::from_bytes(b, harness::fixed_config()).unwrap_err().to_string();
    let mut b = fst.clone();
    b[..8].copy_from_slice(&99_999_999u64.to_le_bytes());
    row(src, "safetensors header length 99 999 999 (file of 5 KB)", fixed(&b));
    b[..8].copy_from_slice(&100_000_000u64.to_le_bytes());
    row(src, "safetensors header length 100 000 000", fixed(&b));
    b[..8].copy_from_slice(&0u64.to_le_bytes());
    row(src, "safetensors header length 0", fixed(&b));
    for shape in ["[4294967296, 4294967296]", "[18446744073709551615]"] {
        let h = format!(r#"{{"model.norm.weight": {{"dtype": "F32", "shape": {shape}, "data_offsets": [0, 8]}}}}"#);
        row(src, &format!("tensor shape {shape}, 8 bytes of data"), fixed(&safetensors(&h, &[0; 8])));
    }
    for (offsets, dtype) in [("[0, 1152921504606846976]", "F32"), ("[8, 0]", "F32"), ("[0, 8]", "F128")] {
        let h = format!(r#"{{"x": {{"dtype": "{dtype}", "shape": [2], "data_offsets": {offsets}}}}}"#);
        row(src, &format!("tensor {dtype} data_offsets {offsets}"), fixed(&safetensors(&h, &[0; 8])));
    }
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    row(src, "safetensors header nested 100 000 deep", fixed(&safetensors(&deep, &[])));
    row(src, "config.json nested 100 000 deep", Config::from_json_str(&deep).unwrap_err().to_string());
    let base: serde_json::Value = serde_json::from_slice(&fixed_seed().0).unwrap();
    for (field, bad) in [
        ("vocab_size", serde_json::json!(u64::MAX)),
        ("hidden_size", serde_json::json!(4294967296u64)),
        ("num_hidden_layers", serde_json::json!(1e300)),
        ("plt_window_size", serde_json::json!([-1, 0])),
        ("plt_window_size", serde_json::json!([u64::MAX, 0])),
        ("plt_num_loops", serde_json::json!(4294967295u64)),
        ("vocab_size", serde_json::json!(4294967295u64)),
    ] {
        let mut v = base.clone();
        v[field] = bad.clone();
        row(src, &format!("`{field}: {bad}`"), Config::from_json_str(&v.to_string()).unwrap_err().to_string());
    }
    let mut v = base.clone();
    v["num_attention_heads"] = 0.into();
    v.as_object_mut().unwrap().remove("head_dim");
    row(src, "`num_attention_heads: 0`, `num_key_value_heads: 1`, no `head_dim` (was a division by zero)", Config::from_json_str(&v.to_string()).unwrap_err().to_string());
    let mut v = base.clone();
    v["num_attention_heads"] = 4294967295u64.into();
    v["num_key_value_heads"] = 4294967295u64.into();
    v["head_dim"] = 4294967294u64.into();
    row(src, "`num_attention_heads = num_key_value_heads: 4294967295, head_dim: 4294967294`", Config::from_json_str(&v.to_string()).unwrap_err().to_string());
    for (field, huge) in [("num_hidden_layers", 4294967295u64), ("hidden_size", 4294967295)] {
        let mut v = base.clone();
        v[field] = huge.into();
        let c = Config::from_json_str(&v.to_string()).unwrap();
        row(src, &format!("`{field}: {huge}` with the fixed checkpoint"), Weights::from_bytes(&fst, &c).unwrap_err().to_string());
    }
    let g = |what: &str, b: &[u8]| row(src, what, load_gguf_bytes(b).unwrap_err().to_string());
    g("GGUF metadata count u64::MAX", &gguf(0, u64::MAX, &[], &[]));
    g("GGUF tensor count 2^40 (file of 88 bytes)", &gguf(1 << 40, 0, &[], &[0; 64]));
    g("GGUF value string length u64::MAX", &gguf(0, 1, &kv("general.name", 8, &u64::MAX.to_le_bytes()), &[]));
    for (elem, n) in [(8u32, 1u64 << 60), (4, 1 << 62), (9, 1 << 40)] {
        let mut p = elem.to_le_bytes().to_vec();
        p.extend(n.to_le_bytes());
        g(&format!("GGUF tokenizer.ggml.tokens: {n} elements of type {elem}"), &gguf(0, 1, &kv("tokenizer.ggml.tokens", 9, &p), &[]));
    }
    let mut p = Vec::new();
    for _ in 0..64 {
        p.extend(9u32.to_le_bytes());
        p.extend(1u64.to_le_bytes());
    }
    g("GGUF arrays nested 64 deep", &gguf(0, 1, &kv("x", 9, &p), &[]));
    g("GGUF string value not UTF-8", &gguf(0, 1, &kv("general.architecture", 8, &gstr(&[0xC3, 0x28])), &[]));
    let tensor = |dims: &[u64], ty: u32, offset: u64| {
        let mut t = gstr(b"token_embd.weight");
        t.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            t.extend(d.to_le_bytes());
        }
        t.extend(ty.to_le_bytes());
        t.extend(offset.to_le_bytes());
        t
    };
    for (dims, ty, off) in [(&[u64::MAX, u64::MAX][..], 0, 0), (&[1 << 62], 2, 0), (&[4, 4], 0, u64::MAX - 31), (&[4, 4], 99, 0), (&[33, 4], 2, 0)] {
        g(&format!("GGUF tensor dims {dims:?} type {ty} offset {off}"), &gguf(1, 0, &tensor(dims, ty, off), &[0; 64]));
    }
    let mut meta = kv("general.architecture", 8, &gstr(b"llama"));
    for (k, x) in [
        ("llama.block_count", u32::MAX),
        ("llama.context_length", u32::MAX),
        ("llama.embedding_length", 8),
        ("llama.feed_forward_length", u32::MAX),
        ("llama.attention.head_count", 2),
        ("llama.vocab_size", u32::MAX / 2),
    ] {
        meta.extend(u32kv(k, x));
    }
    g("GGUF llama metadata with block_count u32::MAX, no tensors", &gguf(0, 7, &meta, &[]));
    g("GGUF llama metadata with plt.num_loops 100", &llama_meta(&[u32kv("plt.num_loops", 100)]));
    g("GGUF llama metadata with attention.key_length 5", &llama_meta(&[u32kv("llama.attention.key_length", 5)]));
    let t = |b: &[u8], v: usize| Tokenizer::from_bytes(b, v).err().map(|e| e.to_string()).unwrap_or_else(|| "(accepted)".into());
    row(src, "tokenizer.json nested 100 000 deep", t(deep.as_bytes(), 64));
    row(src, "tokenizer.json bytes `{ FF FE }`", t(&[b'{', 0xFF, 0xFE, b'}'], 64));
    row(src, "tokenizer.json empty", t(b"", 64));
    row(src, "tokenizer.json of 65 tokens for vocab_size 64", t(&serde_json::to_vec(&plt::init::tokenizer_json(65)).unwrap(), 64));
    let mut tj = plt::init::tokenizer_json(8);
    tj["decoder"] = serde_json::json!({"type": "ByteLevel", "add_prefix_space": true});
    let text = serde_json::to_string(&tj).unwrap().replacen("\"add_prefix_space\"", "1", 1);
    row(src, "tokenizer.json with `\"decoder\": {\"type\": \"ByteLevel\", 1: true}` (tokenizers panics inside)", t(text.as_bytes(), 64));
    let mut tj = plt::init::tokenizer_json(3);
    tj["model"]["vocab"]["far"] = 4_000_000_000u64.into();
    row(src, "tokenizer.json with a token id 4 000 000 000, vocab_size 64", t(&serde_json::to_vec(&tj).unwrap(), 64));
    let gcfg = Config::from_json_str(&String::from_utf8_lossy(&fixed_seed().0)).unwrap();
    let inputs = plt::tokenizer::TokenizerInputs {
        source: "tokenizer.json".into(),
        json: serde_json::to_vec(&plt::init::tokenizer_json(16)).unwrap(),
        generation_config: Some(serde_json::json!({"bos_token_id": 4294967296u64})),
        tokenizer_config: None,
    };
    row(src, "generation_config.json `bos_token_id: 4294967296`, vocab_size 16 (was cast to token 0)",
        Tokenizer::for_model(&inputs, &gcfg).err().map(|e| e.to_string()).unwrap_or_else(|| "(accepted)".into()));

    // --- tests/sampling.rs (validated on the CPU)
    use plt::sampling::SamplerConfig;
    for (input, sc) in [
        ("temperature -0.5", SamplerConfig { temperature: -0.5, ..Default::default() }),
        ("top_p 0", SamplerConfig { top_p: 0.0, ..Default::default() }),
        ("min_p 1", SamplerConfig { min_p: 1.0, ..Default::default() }),
        ("repetition_penalty 0", SamplerConfig { repetition_penalty: 0.0, ..Default::default() }),
        ("repeat_last_n 1 000 000", SamplerConfig { repeat_last_n: 1_000_000, ..Default::default() }),
    ] {
        row("sampling.rs", &format!("sampler {input}"), sc.validate().unwrap_err().to_string());
    }

    // --- tests/generate.rs: chat template raising
    let tok = harness::byte_tokenizer_json();
    let mut tk = Tokenizer::from_bytes(&tok, 257).unwrap();
    tk.chat_template = Some("{{ raise_exception('only user turns') }}".into());
    row("generate.rs", "chat template `raise_exception('only user turns')`",
        tk.apply_chat_template(&[plt::tokenizer::ChatMessage::new("user", "hi")], true).unwrap_err().to_string());
    tk.chat_template = Some(r#"{% for i in range(100000) %}{{ "x" * 100000 }}{% endfor %}"#.into());
    row("fuzz_regressions.rs", "chat template of 10 GB of text",
        tk.apply_chat_template(&[plt::tokenizer::ChatMessage::new("user", "hi")], true).unwrap_err().to_string());
    tk.chat_template = Some("{% for m in messages %}".into());
    row("fuzz_regressions.rs", "chat template `{% for m in messages %}` (unclosed)",
        tk.apply_chat_template(&[plt::tokenizer::ChatMessage::new("user", "hi")], true).unwrap_err().to_string());

    // --- GPU: tests/model.rs bad_calls_are_clear_errors, tests/sampling.rs, tests/generate.rs
    match plt::gpu::Gpu::new_blocking(&Default::default()) {
        Err(e) => row("model.rs", "no adapter", e.to_string()),
        Ok(gpu) => {
            use plt::model::{Schedule, GpuModel, Logits, Session, SessionOptions};
            use std::sync::Arc;
            let gpu = Arc::new(gpu);
            let mut cfg = Config::from_json_str(
                r#"{"vocab_size": 67, "hidden_size": 40, "intermediate_size": 72, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 10,
                    "max_position_embeddings": 256, "rope_theta": 10000.0}"#,
            )
            .unwrap();
            cfg.num_loops = 2;
            let w = random_weights(&cfg, &InitOptions { seed: 71, ..Default::default() });
            let m = Arc::new(GpuModel::new(gpu.clone(), &cfg, &w, None).unwrap());
            let mut s = Session::new(m.clone(), SessionOptions { batch: 2, context: 6, prefill_chunk: 4, kv_f16: false }).unwrap();
            let src = "model.rs (batch 2, context 6)";
            let e = |r: plt::Result<Vec<f32>>| r.unwrap_err().to_string();
            row(src, "prefill tokens [1, 999] (V = 67)", e(pollster::block_on(s.prefill(0, &[1, 999], Logits::None))));
            row(src, "prefill 7 tokens", e(pollster::block_on(s.prefill(0, &[1; 7], Logits::None))));
            row(src, "prefill sequence 2", e(pollster::block_on(s.prefill(2, &[1], Logits::None))));
            row(src, "prefill no tokens", e(pollster::block_on(s.prefill(0, &[], Logits::None))));
            row(src, "decode 1 token for batch 2", e(pollster::block_on(s.decode(&[1], Schedule::Fused, true))));
            pollster::block_on(s.prefill(0, &[1, 2, 3, 4, 5, 6], Logits::None)).unwrap();
            row(src, "decode when sequence 0 is full", e(pollster::block_on(s.decode(&[1, 1], Schedule::Fused, true))));
            let too_long = SessionOptions { batch: 1, context: cfg.max_position_embeddings + 1, prefill_chunk: 4, kv_f16: false };
            row(src, "context 257 > max_position_embeddings 256", Session::new(m.clone(), too_long).err().unwrap().to_string());
            row("sampling.rs", "set_sampler on sequence 3 of 2", s.set_sampler(3, SamplerConfig::default()).unwrap_err().to_string());
            // generate.rs: a prompt longer than the session's context
            let mut gcfg = cfg.clone();
            gcfg.vocab_size = 257;
            gcfg.eos_token_ids = vec![256];
            gcfg.window_left = 3;
            let gw = random_weights(&gcfg, &InitOptions { seed: 17, dtype: plt::DType::F16, ..Default::default() });
            let gtok = Tokenizer::from_bytes(&harness::byte_tokenizer_json(), 257).unwrap();
            let eng = Arc::new(plt::generate::Engine::from_parts(gpu, &gcfg, &gw, Some(gtok), None, "t", &mut |_, _| {}).unwrap());
            let mut ts = plt::generate::TextSession::new(eng, 8).unwrap();
            let opts = plt::generate::GenerateOptions { max_tokens: 5, ..Default::default() };
            row("generate.rs", "prompt of 20 tokens in a session of context 8",
                ts.generate_blocking("a much longer prompt", &opts, &mut |_| true).unwrap_err().to_string());
        }
    }

    // --- tests/cli.rs bad_input_is_a_one_line_error (stderr's `error:` line)
    let plt_bin = env!("CARGO_BIN_EXE_plt");
    let cli = |args: &[&str]| -> String {
        let out = std::process::Command::new(plt_bin).args(args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        tidy(err.lines().find(|l| l.starts_with("error:")).unwrap_or(err.lines().next().unwrap_or("")).to_string())
    };
    let mdir = tmp.join("cli-m");
    let ms = mdir.to_str().unwrap().to_string();
    let ok = std::process::Command::new(plt_bin)
        .args(["init", &ms, "--vocab", "20", "--hidden", "16", "--intermediate", "16", "--heads", "2"])
        .output()
        .unwrap();
    assert!(ok.status.success());
    let (x, y) = (tmp.join("x"), tmp.join("y"));
    let cases: Vec<Vec<&str>> = vec![
        vec!["score", "--model", "/nonexistent/model", "--tokens", "1,2"],
        vec!["score", "--model", &ms, "--tokens", "1,2000"],
        vec!["score", "--model", &ms, "--tokens", "1,x"],
        vec!["score", "--model", &ms, "--tokens", "1"],
        vec!["score", "--model", &ms, "--tokens", "1,2", "--mode", "diagonal"],
        vec!["score", "--model", &ms, "--tokens", "1,2", "--dtype", "f8"],
        vec!["init", x.to_str().unwrap(), "--heads", "3", "--kv-heads", "2"],
        vec!["init", y.to_str().unwrap(), "--gate", "sideways"],
        vec!["init", y.to_str().unwrap(), "--dtype", "q4_k"],
        vec!["init", "y.gguf", "--dtype", "q3_k"],
        vec!["init", "y.gguf", "--preset", "gpt-5"],
        vec!["init", "/nonexistent/dir/y.gguf", "--dtype", "q8_0"],
        vec!["info", "--model", &ms, "--memory", "lots"],
        vec!["info", "--model", &ms, "--batch", "0"],
        vec!["generate", "--model", &ms, "--repeat-penalty", "0", "hi"],
        vec!["init", y.to_str().unwrap(), "--vocab", "3000000000"],
    ];
    for args in &cases {
        let shown: Vec<String> = args.iter().map(|a| if a.starts_with(&*tmp.display().to_string()) { show(Path::new(a)) } else { a.to_string() }).collect();
        row("cli.rs", &format!("`plt {}`", shown.join(" ")), cli(args));
    }
    std::fs::write(mdir.join("config.json"), "{ not json").unwrap();
    row("cli.rs", "`plt score` with config.json `{ not json`", cli(&["score", "--model", &ms, "--tokens", "1,2"]));
    let _ = std::fs::remove_dir_all(&tmp);
}
