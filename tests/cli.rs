//! The `plt` binary: `init` writes models of every option, `score` prints stable JSON, the GPU
//! (`--backend gpu`) and the CPU backend (`--backend cpu`) agree with the reference
//! (`--backend reference`), bad input is a one-line error, never a panic, and the shipped model
//! is built in (no `--model`, from anywhere).

use std::path::Path;
use std::process::Command;

fn plt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plt")).args(args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn score(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["score", "--model", dir.to_str().unwrap(), "--tokens", "5,9,13,7,40,3,4,8,9,11,2"];
    args.extend_from_slice(extra);
    let (ok, out, err) = plt(&args);
    assert!(ok, "plt {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {out}"))
}

fn logprobs(v: &serde_json::Value) -> Vec<f64> {
    v["logprobs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn init_and_score_every_option_gpu_and_cpu_match_the_reference() {
    let tmp = std::env::temp_dir().join(format!("plt-cli-{}", std::process::id()));
    let base = ["--vocab", "50", "--hidden", "32", "--intermediate", "48", "--layers", "2", "--heads", "4", "--max-positions", "64"];
    let variants: &[&[&str]] = &[
        &["--loops", "1"],
        &["--loops", "2", "--window", "2"],
        &["--loops", "3", "--gate", "hidden", "--window", "3", "--kv-heads", "2"],
        &["--loops", "2", "--looping", "vanilla"],
        &["--loops", "2", "--loop-mode", "parallel", "--window", "1"], // the older spelling
        &["--loops", "2", "--tie-embeddings", "--qkv-bias", "--dtype", "f16"],
        &["--loops", "2", "--dtype", "bf16", "--shards", "3", "--kv-heads", "1", "--head-dim", "12"],
        &["--loops", "3", "--no-normalize-per-loop", "--emb-scale", "0.5", "--hidden-scale", "2", "--window", "0"],
    ];
    for (i, v) in variants.iter().enumerate() {
        let dir = tmp.join(format!("m{i}"));
        let seed = format!("{}", 100 + i);
        let mut args = vec!["init", dir.to_str().unwrap(), "--seed", &seed];
        args.extend_from_slice(&base);
        args.extend_from_slice(v);
        let (ok, _, err) = plt(&args);
        assert!(ok, "init {v:?}: {err}");
        let reference = score(&dir, &["--backend", "reference"]);
        assert_eq!((reference["adapter"].as_str(), reference["backend"].as_str()), (Some("cpu-reference"), Some("reference")));
        let want = logprobs(&reference);
        assert_eq!(want.len(), 10, "T-1 log-probabilities");
        assert!(want.iter().all(|x| x.is_finite() && *x < 0.0));
        for backend in ["gpu", "cpu"] {
            // (flag, value, the JSON's stable `mode`): the older `--mode parallel` is the fused schedule.
            for (flag, value, mode) in [("--schedule", "fused", "parallel"), ("--schedule", "sequential", "sequential"), ("--mode", "parallel", "parallel")] {
                let got_json = score(&dir, &["--backend", backend, flag, value]);
                let got = logprobs(&got_json);
                assert_eq!(got.len(), want.len());
                for (t, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() < 1e-4, "{v:?} {backend} {mode}: token {t}: {g} vs reference {w}");
                }
                let expect_mode = if v.contains(&"vanilla") { "vanilla" } else { mode };
                assert_eq!(got_json["mode"], expect_mode);
                assert_eq!(got_json["backend"], backend);
                assert!(got_json["adapter"].as_str().unwrap().len() > 3);
            }
            // An f16 KV cache: keys and values rounded, so close to the reference, not equal.
            let got = logprobs(&score(&dir, &["--backend", backend, "--kv-dtype", "f16"]));
            for (t, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() < 1e-2, "{v:?} {backend} --kv-dtype f16: token {t}: {g} vs reference {w}");
            }
        }
    }
    // --text uses the model's tokenizer.json; same numbers as the ids it encodes to.
    let dir = tmp.join("m1");
    let (ok, out, err) = plt(&["score", "--model", dir.to_str().unwrap(), "--text", "a b c zz q", "--backend", "reference"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<String> = v["tokens"].as_array().unwrap().iter().map(|x| x.to_string()).collect();
    assert_eq!(ids.len(), 5);
    let (_, out2, _) = plt(&["score", "--model", dir.to_str().unwrap(), "--tokens", &ids.join(","), "--backend", "reference"]);
    let v2: serde_json::Value = serde_json::from_str(&out2).unwrap();
    assert_eq!(v["logprobs"], v2["logprobs"]);
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn bad_input_is_a_one_line_error() {
    let tmp = std::env::temp_dir().join(format!("plt-cli-bad-{}", std::process::id()));
    let dir = tmp.join("m");
    let (ok, _, err) = plt(&["init", dir.to_str().unwrap(), "--vocab", "20", "--hidden", "16", "--intermediate", "16", "--heads", "2"]);
    assert!(ok, "{err}");
    let d = dir.to_str().unwrap();
    let (x, y) = (tmp.join("x"), tmp.join("y"));
    let text_file = dir.join("config.json").to_str().unwrap().to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["score", "--model", "/nonexistent/model", "--tokens", "1,2"], "not a model directory"),
        (&["score", "--model", d, "--tokens", "1,2000"], "2000"),
        (&["score", "--model", d, "--tokens", "1,x"], "`x`"),
        (&["score", "--model", d, "--tokens", "1"], "at least 2"),
        (&["score", "--model", d, "--tokens", "1,2", "--schedule", "diagonal"], "--schedule"),
        (&["score", "--model", d, "--tokens", "1,2", "--dtype", "f8"], "--dtype"),
        (&["score", "--model", d, "--tokens", "1,2", "--kv-dtype", "q4"], "--kv-dtype"),
        (&["init", x.to_str().unwrap(), "--heads", "3", "--kv-heads", "2"], "--kv-heads"),
        (&["init", y.to_str().unwrap(), "--gate", "sideways"], "--gate"),
        (&["score", "--model", d, "--tokens", "1,2,3,4", "--prefill", "4"], "--prefill 4"),
        (&["score", "--model", d, "--tokens", "1,2,3,4", "--prefill", "0"], "--prefill 0"),
        (&["generate", "--model", d, "--stop", "", "hi"], "stop strings"),
        (&["generate", "--model", d, "--context", "1000000", "hi"], "--context 1000000"),
        (&["generate", "--model", d, "--context", "0", "hi"], "--context 0"),
        (&["generate", "--model", d, "--adapter", "NoSuchAdapter", "hi"], "nosuchadapter"),
        (&["generate", "--model", d, "--backend", "tpu", "hi"], "--backend"),
        (&["generate", "--model", d, "--backend", "gpu", "--cpu", "hi"], "--cpu"),
        (&["generate", "--model", d, "--backend", "cpu", "--threads", "0", "hi"], "--threads"),
        (&["perplexity", "--model", d, "--file", &text_file, "--backend", "reference"], "reference"),
        (&["perplexity", "--model", d, "--file", d, "--max-chunks", "0"], "--max-chunks"),
        (&["perplexity", "--model", d, "--file", d], "not a regular file"),
        (&["init", y.to_str().unwrap(), "--dtype", "q4_k"], ".gguf"),
        (&["init", "y.gguf", "--dtype", "q3_k"], "--dtype"),
        (&["init", "y.gguf", "--preset", "gpt-5"], "loopcoder-v2"),
        (&["init", "/nonexistent/dir/y.gguf", "--dtype", "q8_0"], "/nonexistent/dir/y.gguf"),
    ];
    for (args, needle) in cases {
        let (ok, out, err) = plt(args);
        assert!(!ok, "{args:?} should fail");
        assert!(out.is_empty(), "{args:?} printed to stdout: {out}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("{args:?}: {err}"));
        assert!(line.contains(needle), "{args:?}: `{line}` does not mention {needle}");
    }
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    let (ok, _, err) = plt(&["score", "--model", d, "--tokens", "1,2"]);
    assert!(!ok && err.contains("not valid JSON"), "{err}");
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn generate_prints_the_same_on_every_backend() {
    let tmp = std::env::temp_dir().join(format!("plt-cli-gen-{}", std::process::id()));
    let dir = tmp.join("m");
    let (ok, _, err) = plt(&["init", dir.to_str().unwrap(), "--seed", "5", "--loops", "2", "--window", "3"]);
    assert!(ok, "{err}");
    let d = dir.to_str().unwrap();
    for extra in [&["--temperature", "0"][..], &["--temperature", "0.9", "--seed", "11"]] {
        let mut args = vec!["generate", "ab", "--model", d, "-n", "12", "--ignore-eos", "--context", "10", "--context-shift"];
        args.extend_from_slice(extra);
        let run = |backend: &[&str], says: &str| {
            let mut a = args.clone();
            a.extend_from_slice(backend);
            let (ok, out, err) = plt(&a);
            assert!(ok, "{a:?}: {err}");
            assert!(err.contains(says), "{a:?}: {err}");
            out
        };
        let gpu = run(&["--backend", "gpu"], " on ");
        assert!(gpu.starts_with("ab") && gpu.len() > 2, "{gpu:?}");
        assert_eq!(run(&["--backend", "reference"], "CPU reference"), gpu, "{extra:?}: reference");
        assert_eq!(run(&["--cpu", "--threads", "1"], "CPU backend (1 thread"), gpu, "{extra:?}: CPU backend");
        assert_eq!(run(&["--backend", "cpu", "--threads", "3"], "CPU backend (3 threads"), gpu, "{extra:?}: CPU backend");
    }
    // auto takes the CPU backend when the only adapters are software ones, and says why.
    let (ok, _, err) = plt(&["generate", "ab", "--model", d, "-n", "2"]);
    assert!(ok, "{err}");
    assert!(err.contains("CPU backend") && err.contains("software"), "{err}");
    // -n 0: the prompt is fed, nothing is generated.
    let (ok, out, err) = plt(&["generate", "ab", "--model", d, "-n", "0"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim_end(), "ab", "{err}");
    assert!(err.contains("; 0 tokens"), "{err}");
    std::fs::remove_dir_all(&tmp).ok();
}

/// With no `--model`, the binary runs the shipped model, which it carries inside: from another
/// directory, and from a copy of the binary away from the source tree. The built-in model gives
/// the same numbers as the directory it was built from.
#[test]
fn the_default_model_is_built_in() {
    let tmp = std::env::temp_dir().join(format!("plt-cli-default-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let copy = tmp.join("plt-copy");
    std::fs::copy(env!("CARGO_BIN_EXE_plt"), &copy).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/plt2-shakespeare");
    let (ok, want, err) = plt(&["score", "--model", dir.to_str().unwrap(), "--tokens", "5,9,13,7,40", "--backend", "reference"]);
    assert!(ok, "{err}");
    for bin in [Path::new(env!("CARGO_BIN_EXE_plt")), copy.as_path()] {
        let run = |args: &[&str]| {
            let out = Command::new(bin).args(args).current_dir(&tmp).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap();
            let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
            assert!(out.status.success(), "{} {args:?}: {stderr}", bin.display());
            stdout
        };
        let info: serde_json::Value = serde_json::from_str(&run(&["info"])).unwrap();
        assert_eq!(info["config"]["num_hidden_layers"], 4, "{info}");
        assert!(info["model"].as_str().unwrap().contains("built in"), "{info}");
        assert_eq!(run(&["score", "--tokens", "5,9,13,7,40", "--backend", "reference"]), want, "{}: built-in vs directory", bin.display());
        let text = run(&["generate", "ROMEO:", "-n", "12", "--temperature", "0"]);
        assert!(text.starts_with("ROMEO:") && text.len() > "ROMEO:".len(), "{}: {text:?}", bin.display());
    }
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn init_writes_quantised_gguf_models_that_info_and_score_read() {
    let tmp = std::env::temp_dir().join(format!("plt-cli-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for (i, (dtype, name)) in [("q4_k", "Q4_K"), ("q8_0", "Q8_0"), ("q5_1", "Q5_1")].into_iter().enumerate() {
        let file = tmp.join(format!("m{i}.gguf"));
        let f = file.to_str().unwrap();
        let seed = format!("{}", 200 + i);
        let (ok, _, err) = plt(&["init", f, "--dtype", dtype, "--seed", &seed, "--vocab", "300", "--hidden", "256", "--intermediate", "512", "--heads", "4", "--kv-heads", "2", "--window", "2"]);
        assert!(ok, "init {dtype}: {err}");
        assert!(err.contains(&format!("{name} 16 tensors")), "{dtype}: {err}");
        let (ok, plan, err) = plt(&["info", "--model", f, "--plan"]);
        assert!(ok, "{err}");
        assert!(plan.contains(&format!("quantised blocks kept): {name}")) && plan.contains("L=2"), "{plan}");
        let want = logprobs(&score(&file, &["--backend", "reference"]));
        // The CPU backend's int8 activations: close, not equal.
        for (backend, tol) in [("gpu", 1e-4), ("cpu", 0.05)] {
            let got = logprobs(&score(&file, &["--backend", backend]));
            assert_eq!(got.len(), 10);
            for (t, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() < tol, "{dtype}: token {t}: {backend} {g} vs reference {w}");
            }
        }
    }
    std::fs::remove_dir_all(&tmp).ok();
}

/// What a file says reaches the terminal escaped: an architecture name holding an escape
/// sequence, a carriage return and a bidi override is printed as `\u{..}` escapes.
#[test]
fn file_contents_are_escaped_for_the_terminal() {
    let tmp = std::env::temp_dir().join(format!("plt-cli-esc-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let s = |x: &str| [(x.len() as u64).to_le_bytes().to_vec(), x.as_bytes().to_vec()].concat();
    let mut g = b"GGUF".to_vec();
    g.extend(3u32.to_le_bytes());
    g.extend(0u64.to_le_bytes());
    g.extend(1u64.to_le_bytes());
    g.extend(s("general.architecture"));
    g.extend(8u32.to_le_bytes());
    g.extend(s("ll\u{1b}[31mama\rX\u{202e}"));
    let file = tmp.join("evil.gguf");
    std::fs::write(&file, g).unwrap();
    let (ok, _, err) = plt(&["info", "--model", file.to_str().unwrap(), "--plan"]);
    assert!(!ok);
    assert!(!err.contains('\u{1b}') && !err.contains('\r') && !err.contains('\u{202e}'), "{err:?}");
    assert!(err.contains("\\u{1b}[31mama\\u{d}X\\u{202e}"), "{err}");
    std::fs::remove_dir_all(&tmp).ok();
}
