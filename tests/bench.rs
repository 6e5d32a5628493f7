//! `plt bench --quick`: the JSON report is complete and self-consistent, the markdown and the
//! plot are written. No timing thresholds: speed is what the benchmark measures, not pass/fail.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn plt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plt")).args(args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("plt-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an unsigned integer: {v}"))
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-9 * a.abs().max(b.abs()), "{what}: {a} != {b}");
}

/// A timing distribution: n, median, p90 (nearest rank), mean, min, max of its samples.
fn check_dist(d: &Value, samples: &Value, n: u64, what: &str) {
    let mut xs: Vec<f64> = samples.as_array().unwrap_or_else(|| panic!("{what}: no samples")).iter().map(f).collect();
    assert_eq!(u(&d["n"]), n, "{what}: sample count");
    assert_eq!(xs.len() as u64, n, "{what}: samples");
    xs.sort_by(f64::total_cmp);
    let k = xs.len();
    let (med, p90, mean, min, max) = (f(&d["median"]), f(&d["p90"]), f(&d["mean"]), f(&d["min"]), f(&d["max"]));
    assert!(min > 0.0, "{what}: min {min}");
    assert!(min <= med && med <= p90 && p90 <= max, "{what}: min {min} median {med} p90 {p90} max {max}");
    close(med, if k % 2 == 1 { xs[k / 2] } else { 0.5 * (xs[k / 2 - 1] + xs[k / 2]) }, &format!("{what}: median"));
    close(p90, xs[((0.9 * k as f64).ceil() as usize).max(1) - 1], &format!("{what}: p90"));
    close(mean, xs.iter().sum::<f64>() / k as f64, &format!("{what}: mean"));
    assert_eq!((min, max), (xs[0], xs[k - 1]), "{what}: min/max");
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn quick_bench_report_is_complete_and_consistent() {
    quick_report("gpu");
}

/// The CPU backend's report: the same checks (its KV reservation against section 4 too).
#[test]
fn quick_cpu_bench_report_is_complete_and_consistent() {
    quick_report("cpu");
}

fn quick_report(backend: &str) {
    let cpu = backend == "cpu";
    let dir = tmp(&format!("quick-{backend}"));
    let (json, md, svg) = (dir.join("bench.json"), dir.join("bench.md"), dir.join("bench.svg"));
    let (ok, stdout, stderr) = plt(&[
        "bench",
        "--backend",
        backend,
        "--quick",
        "--json",
        json.to_str().unwrap(),
        "--markdown",
        md.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(ok, "plt bench --quick failed:\n{stderr}");
    let r: Value = serde_json::from_str(&read(&json)).expect("the report is JSON");

    // The run and the adapter.
    assert_eq!(r["schema"], 1);
    assert_eq!(r["complete"], true);
    assert!(f(&r["elapsed_s"]) > 0.0);
    let a = &r["adapter"];
    for k in ["name", "backend", "device_type", "describe"] {
        assert!(!a[k].as_str().unwrap().is_empty(), "adapter.{k} is empty");
    }
    assert!(a["driver"].is_string() && a["driver_info"].is_string());
    let adapter_features: Vec<&str> = a["adapter_features"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    let timestamps = a["timestamps"].as_bool().unwrap();
    if cpu {
        assert_eq!((a["backend"].as_str(), timestamps), (Some("cpu"), false), "{a}");
        assert_eq!(r["settings"]["backend"], "cpu");
        assert!(u(&r["settings"]["threads"]) >= 1);
    } else {
        for x in a["device_features"].as_array().unwrap() {
            assert!(adapter_features.contains(&x.as_str().unwrap()), "device feature {x} not offered by the adapter");
        }
        assert_eq!(timestamps, adapter_features.contains(&"TIMESTAMP_QUERY"));
        assert!(u(&a["max_storage_buffer_binding_size"]) > 0 && u(&a["max_buffer_size"]) > 0);
    }
    assert!(u(&r["host"]["cpus"]) > 0);

    // Copy bandwidth.
    let c = &r["copy_bandwidth"];
    assert!(u(&c["bytes"]) > 0 && u(&c["copies"]) > 0);
    let (bc, sc, bw) = (f(&c["buffer_copy_gbps"]), f(&c["shader_copy_gbps"]), f(&c["gbps"]));
    assert!(bc > 0.0 && sc > 0.0);
    close(bw, bc.max(sc), "copy_bandwidth.gbps = the best of the two");
    assert!(f(&c["buffer_copy_gbps_median"]) <= bc && f(&c["shader_copy_gbps_median"]) <= sc);

    // Settings: every configuration of the grid must be present (--quick skips none).
    let s = &r["settings"];
    assert_eq!(s["quick"], true);
    let list = |k: &str| -> Vec<u64> { s[k].as_array().unwrap().iter().map(u).collect() };
    let (loops, batches, contexts) = (list("loops"), list("batch"), list("context"));
    let dtypes: Vec<&str> = s["dtype"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    let sizes = s["sizes"].as_array().unwrap();
    assert!(!loops.is_empty() && !batches.is_empty() && !contexts.is_empty() && !dtypes.is_empty() && !sizes.is_empty());
    let (steps, warmup, window) = (u(&s["steps"]), u(&s["warmup"]), u(&s["window"]));
    let decode_positions = 2 * (warmup + steps) + if s["profile"] == true { 2 } else { 0 };
    assert_eq!(r["skipped"].as_array().unwrap().len(), 0, "skipped: {}", r["skipped"]);

    // Models: one upload per (size, dtype, variant), all from the same weights.
    let models = r["models"].as_array().unwrap();
    assert_eq!(models.len(), sizes.len() * dtypes.len() * (1 + 2 * loops.len()));
    let model = |preset: &str, dtype: &str, name: &str| -> &Value {
        models
            .iter()
            .find(|m| m["preset"] == preset && m["dtype"] == dtype && m["model"] == name)
            .unwrap_or_else(|| panic!("no model {preset} {dtype} {name}"))
    };

    let results = r["results"].as_array().unwrap();
    let ratios = r["ratios"].as_array().unwrap();
    assert_eq!(results.len(), sizes.len() * dtypes.len() * batches.len() * contexts.len() * (1 + 3 * loops.len()));
    assert_eq!(ratios.len(), sizes.len() * dtypes.len() * batches.len() * contexts.len() * loops.len());

    for size in sizes {
        let name = size["name"].as_str().unwrap();
        let (n, hkv, dh, v, d) = (u(&size["layers"]), u(&size["kv_heads"]), u(&size["head_dim"]), u(&size["vocab"]), u(&size["hidden"]));
        for &dtype in &dtypes {
            let elem_w = if dtype == "f16" { 2 } else { 4 };
            let base = model(name, dtype, "non-looped");
            let wbytes = u(&base["weight_bytes"]);
            let head = v * d * elem_w;
            for &l in &loops {
                let plt = model(name, dtype, &format!("plt-{l}"));
                let van = model(name, dtype, &format!("vanilla-{l}"));
                // Same matrices in every variant: same bytes per pass; PLT adds only the gates.
                assert_eq!(u(&plt["weight_bytes"]), wbytes);
                assert_eq!(u(&van["weight_bytes"]), wbytes);
                assert_eq!(u(&van["parameters"]), u(&base["parameters"]));
                assert!(u(&plt["parameters"]) > u(&base["parameters"]));
            }
            assert!(u(&base["model_bytes"]) >= wbytes, "model bytes below the weight bytes");
            for &b in &batches {
                for &t in &contexts {
                    let find = |mode: &str, l: u64| -> &Value {
                        results
                            .iter()
                            .find(|x| x["preset"] == name && x["dtype"] == dtype && x["batch"] == b && x["context"] == t && x["mode"] == mode && x["loops"] == l)
                            .unwrap_or_else(|| panic!("no result {name} {dtype} B={b} T={t} {mode} L={l}"))
                    };
                    // Section 4 per sequence at T, f32 elements unless the report measured another size.
                    let kv_spec = |l: u64, mode: &str, elem: u64| -> u64 {
                        let per_pos = 2 * n * hkv * dh * elem;
                        match mode {
                            "non-looped" => per_pos * t,
                            "vanilla" => per_pos * l * t,
                            _ => per_pos * (t + (l - 1) * (window + 1)),
                        }
                    };
                    let check = |x: &Value, mode: &str, l: u64, passes: u64, rows: u64, samples: u64| {
                        let what = format!("{name} {dtype} B={b} T={t} {mode} L={l}");
                        assert_eq!(u(&x["passes"]), passes, "{what}: passes");
                        assert_eq!(u(&x["rows"]), rows, "{what}: rows");
                        check_dist(&x["wall_ms"], &x["wall_samples_ms"], samples, &format!("{what} wall"));
                        if timestamps {
                            check_dist(&x["gpu_ms"], &x["gpu_samples_ms"], samples, &format!("{what} gpu"));
                        } else {
                            assert!(x["gpu_ms"].is_null() && x["gpu_samples_ms"].is_null(), "{what}: GPU times without timestamps");
                        }
                        let pos = x["positions"].as_array().unwrap();
                        let (p0, p1) = (u(&pos[0]), u(&pos[1]));
                        assert!(p1 < t && p1 + 1 - p0 == 2 * steps, "{what}: positions {p0}..{p1}");
                        // Prefill: every sequence up to the decode window.
                        let pf = &x["prefill"];
                        assert_eq!(u(&pf["tokens"]), b * (t - decode_positions), "{what}: prefill tokens");
                        assert_eq!(u(&pf["passes_per_chunk"]), l, "{what}: prefill passes");
                        close(f(&pf["tokens_per_s"]), f(&pf["tokens"]) / f(&pf["wall_s"]), &format!("{what}: prefill tokens/s"));
                        // KV bytes: the allocation matches PLT-SPEC section 4.
                        let kv = &x["kv"];
                        let elem = kv["elem_bytes"].as_u64().unwrap_or(4);
                        assert_eq!(u(&kv["spec_bytes_per_sequence"]), kv_spec(l, mode, elem), "{what}: KV spec");
                        assert_eq!(u(&kv["spec_bytes"]), b * kv_spec(l, mode, elem), "{what}: KV spec x B");
                        if cpu {
                            // The CPU session reserves section 4's bytes exactly.
                            assert_eq!((u(&kv["allocated_bytes"]), &kv["matches_spec"]), (u(&kv["spec_bytes"]), &Value::Bool(true)), "{what}");
                        }
                        if a["allocator_report"] == true {
                            let alloc = u(&kv["allocated_bytes"]);
                            let slack = 256 * u(&kv["buffers"]);
                            let spec = u(&kv["spec_bytes"]);
                            assert!(alloc >= spec && alloc - spec <= slack, "{what}: KV allocated {alloc} vs spec {spec}");
                            assert_eq!(kv["matches_spec"], true, "{what}");
                            assert_eq!(u(&kv["buffers"]), if mode.starts_with("plt") { 2 * n } else { n }, "{what}: KV buffers");
                        }
                        // Memory: the session holds its KV; nothing allocated per step.
                        assert!(u(&x["session_bytes"]) >= u(&kv["spec_bytes"]), "{what}: session bytes below KV");
                        assert_eq!(u(&x["allocated_during_decode"]), 0, "{what}: allocation during decode");
                        assert!(u(&x["model_bytes"]) >= wbytes, "{what}: model bytes");
                        // Weight streaming: passes x layer matrices + the head once, over the median.
                        let step_bytes = passes * (wbytes - head) + head;
                        assert_eq!(u(&x["weight_bytes_per_step"]), step_bytes, "{what}: weight bytes per step");
                        let gbps = |ms: f64| step_bytes as f64 / (ms * 1e-3) / 1e9;
                        close(f(&x["weight_gbps_wall"]), gbps(f(&x["wall_ms"]["median"])), &format!("{what}: weight GB/s"));
                        let achieved = if timestamps {
                            let g = f(&x["weight_gbps_gpu"]);
                            close(g, gbps(f(&x["gpu_ms"]["median"])), &format!("{what}: weight GB/s (GPU)"));
                            g
                        } else {
                            f(&x["weight_gbps_wall"])
                        };
                        close(f(&x["fraction_of_copy_bw"]), achieved / bw, &format!("{what}: fraction of copy bandwidth"));
                    };
                    let base = find("non-looped", 1);
                    check(base, "non-looped", 1, 1, b, 2 * steps);
                    for &l in &loops {
                        let fused = find("plt-fused", l);
                        let seq = find("plt-sequential", l);
                        let van = find("vanilla", l);
                        check(fused, "plt-fused", l, 1, b * l, steps);
                        check(seq, "plt-sequential", l, l, b * l, steps);
                        check(van, "vanilla", l, l, b * l, 2 * steps);
                        // Fused and sequential ran in the same session: same prefill and KV.
                        assert_eq!(fused["prefill"], seq["prefill"]);
                        assert_eq!(fused["kv"], seq["kv"]);

                        let ratio = ratios
                            .iter()
                            .find(|x| x["preset"] == name && x["dtype"] == dtype && x["batch"] == b && x["context"] == t && x["loops"] == l)
                            .unwrap_or_else(|| panic!("no ratios for {name} {dtype} B={b} T={t} L={l}"));
                        let med = |x: &Value, k: &str| f(&x[k]["median"]);
                        for (key, num, den) in [
                            ("plt_fused_over_nonlooped", fused, base),
                            ("vanilla_over_plt_fused", van, fused),
                            ("sequential_over_fused", seq, fused),
                        ] {
                            close(f(&ratio[key]["wall"]), med(num, "wall_ms") / med(den, "wall_ms"), key);
                            if timestamps {
                                close(f(&ratio[key]["gpu"]), med(num, "gpu_ms") / med(den, "gpu_ms"), key);
                            } else {
                                assert!(ratio[key]["gpu"].is_null());
                            }
                        }
                        let kvb = |x: &Value| f(&x["kv"]["spec_bytes"]);
                        close(f(&ratio["kv_plt_over_nonlooped"]), kvb(fused) / kvb(base), "kv_plt_over_nonlooped");
                        close(f(&ratio["kv_vanilla_over_plt"]), kvb(van) / kvb(fused), "kv_vanilla_over_plt");
                    }
                }
            }
        }
    }

    // Markdown: on stdout and in the file, one table row per result and per ratio.
    let text = read(&md);
    assert_eq!(stdout, text, "stdout is the markdown report");
    assert!(text.contains("### Ratios") && text.contains("### Decode steps"));
    let rows = text.lines().filter(|l| l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("| model")).count();
    assert_eq!(rows, results.len() + ratios.len());

    // The plot: one panel per (size, dtype, B), one line per mode and L in each.
    let plot = read(&svg);
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
    let lines = plot.matches("<polyline").count();
    assert_eq!(lines, sizes.len() * dtypes.len() * batches.len() * (1 + 3 * loops.len()));

    if cpu {
        std::fs::remove_dir_all(&dir).ok();
        return;
    }
    // `plt bench compare` reads the real report: this one next to a copy of it with another
    // adapter name, the CPU backend and a larger window.
    let mut other = r.clone();
    other["adapter"]["name"] = "CPU test".into();
    other["backend"] = "cpu".into();
    other["settings"]["window"] = (window + 1).into();
    let json2 = dir.join("other.json");
    std::fs::write(&json2, other.to_string()).unwrap();
    let (ok, _, stderr) = plt(&["bench", "compare", json.to_str().unwrap(), json2.to_str().unwrap()]);
    assert!(!ok && stderr.contains("settings.window") && stderr.contains("other.json"), "{stderr}");
    other["settings"]["window"] = window.into();
    std::fs::write(&json2, other.to_string()).unwrap();
    let (cmp_md, cmp_svg) = (dir.join("compare.md"), dir.join("compare.svg"));
    let (ok, stdout, stderr) = plt(&["bench", "compare", json.to_str().unwrap(), json2.to_str().unwrap(), "--markdown", cmp_md.to_str().unwrap(), "--svg", cmp_svg.to_str().unwrap()]);
    assert!(ok, "plt bench compare failed:\n{stderr}");
    assert!(stdout.is_empty(), "the markdown goes to the file: {stdout}");
    let text = read(&cmp_md);
    let cpus = u(&r["host"]["cpus"]);
    assert!(text.contains(&format!("| [2] | CPU test (cpu, {}, {cpus} thread", a["backend"].as_str().unwrap().to_lowercase())), "{text}");
    // One row per result, the same figures in both column groups; one ratio row per ratio.
    let body: Vec<&str> = text.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| mode") && !l.starts_with("| L ") && !l.starts_with("| [") && !l.starts_with("| |")).collect();
    assert_eq!(body.len(), results.len() + ratios.len(), "{text}");
    for l in &body {
        let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
        let k = cells.len() - 6;
        assert_eq!(cells[k..k + 3], cells[k + 3..], "{l}");
        assert!(!l.contains('—'), "{l}");
    }
    let plot = read(&cmp_svg);
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
    assert_eq!(plot.matches("<g class=\"row\">").count(), results.len());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_bench_arguments_are_one_line_errors() {
    for (args, want) in [
        (&["bench", "--preset", "gpt-9"][..], "unknown size `gpt-9`"),
        (&["bench", "--loops", "1"][..], "--loops"),
        (&["bench", "--dtype", "f8"][..], "--dtype"),
        (&["bench", "--dtype", "q3_k"][..], "q4_k"),
        (&["bench", "--batch", "0"][..], "--batch"),
        (&["bench", "--subgroups", "maybe"][..], "--subgroups: expected auto, on or off"),
        (&["bench", "--fuse-norms", "yes"][..], "--fuse-norms: expected auto, on or off"),
        (&["bench", "--lanes", "12"][..], "--lanes: expected auto, 8, 16 or 32"),
        (&["bench", "--backend", "npu"][..], "--backend: expected auto, gpu or cpu"),
        (&["bench", "--backend", "cpu", "--adapter", "x"][..], "--adapter"),
        (&["bench", "--backend", "cpu", "--threads", "0"][..], "--threads"),
        (&["bench", "compare", "/nonexistent/a.json", "/nonexistent/b.json"][..], "/nonexistent/a.json"),
        (&["bench", "compare", "Cargo.toml", "Cargo.toml"][..], "Cargo.toml: not JSON"),
        (&["bench", "compare", "tests/browser/package.json", "tests/browser/package.json"][..], "package.json: not a plt bench report (no `schema`)"),
    ] {
        let (ok, _, err) = plt(args);
        assert!(!ok, "plt {args:?} should fail");
        assert!(err.contains(want), "plt {args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "plt {args:?}: {err}");
    }
}

/// Block-format dtypes: the random model goes through an in-memory GGUF file and keeps its
/// blocks; the report's bits per weight, formats and weight bytes follow from the shapes.
#[test]
fn quantised_bench_keeps_blocks_and_reports_bits_per_weight() {
    // The GPU and the CPU backend both hold the file's blocks.
    for backend in ["gpu", "cpu"] {
        quantised_bench(backend);
    }
}

fn quantised_bench(backend: &str) {
    let dir = tmp(&format!("quant-{backend}"));
    let json = dir.join("bench.json");
    let args = ["bench", "--backend", backend, "--quick", "--preset", "tiny", "--dtype", "q8_0,q4_k", "--batch", "1", "--context", "32", "--no-progress", "--json", json.to_str().unwrap()];
    let (ok, stdout, stderr) = plt(&args);
    assert!(ok, "plt bench failed:\n{stderr}");
    let r: Value = serde_json::from_str(&read(&json)).expect("the report is JSON");
    assert_eq!(r["complete"], true);
    let size = &r["settings"]["sizes"][0];
    let (v, d, ff, n, h, hkv, dh) = (u(&size["vocab"]), u(&size["hidden"]), u(&size["ffn"]), u(&size["layers"]), u(&size["heads"]), u(&size["kv_heads"]), u(&size["head_dim"]));
    let (qd, kvd) = (h * dh, hkv * dh);
    let params = v * d + n * ((qd + 2 * kvd) * d + d * qd + 3 * ff * d);
    // tiny's rows (64 and 192 wide) are whole 32-blocks but not 256-blocks: q4_k falls back to
    // Q5_0 (llama.cpp's rule). On the device, the file's bytes (rows of an even number of
    // blocks): Q8_0 34 bytes, Q5_0 22 bytes per 32 weights.
    for (dtype, format, record) in [("q8_0", "Q8_0", 34), ("q4_k", "Q5_0", 22)] {
        let models: Vec<&Value> = r["models"].as_array().unwrap().iter().filter(|m| m["dtype"] == dtype).collect();
        assert_eq!(models.len(), 3, "{dtype}: non-looped, plt-2, vanilla-2");
        for m in &models {
            let what = format!("{dtype} {}", m["model"]);
            let wbytes = params * record / 32;
            assert_eq!(u(&m["matrix_params"]), params, "{what}");
            assert_eq!(u(&m["weight_bytes"]), wbytes, "{what}");
            assert_eq!(u(&m["head_bytes"]), v * d * record / 32, "{what}");
            close(f(&m["bits_per_weight"]), record as f64 * 8.0 / 32.0, &format!("{what}: bits per weight"));
            let formats = m["formats"].as_object().unwrap();
            assert_eq!(formats.len(), 1, "{what}: {formats:?}");
            assert_eq!(u(&formats[format]), wbytes, "{what}: {formats:?}");
        }
        let results: Vec<&Value> = r["results"].as_array().unwrap().iter().filter(|x| x["dtype"] == dtype).collect();
        assert_eq!(results.len(), 4, "{dtype}: four modes");
        for x in results {
            let what = format!("{dtype} {}", x["mode"]);
            let head = v * d * record / 32;
            let step = u(&x["passes"]) * (params * record / 32 - head) + head;
            assert_eq!(u(&x["weight_bytes_per_step"]), step, "{what}");
            close(f(&x["bits_per_weight"]), record as f64 / 4.0, &what);
            let gbps = step as f64 / (f(&x["wall_ms"]["median"]) * 1e-3) / 1e9;
            close(f(&x["weight_gbps_wall"]), gbps, &format!("{what}: weight GB/s"));
            assert_eq!(u(&x["allocated_during_decode"]), 0, "{what}");
        }
        assert!(stdout.contains(&format!("Matrices of tiny {dtype}:")) && stdout.contains(&format!("| tiny | {dtype} | plt-fused |")), "{stdout}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
