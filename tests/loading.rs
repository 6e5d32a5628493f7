//! Model directories (PLT-SPEC section 1) round-trip through `plt::init` and the loader, and
//! bad inputs give errors that name the file, field or tensor: never a panic. No GPU.

mod common;

use plt::init::{named_tensors, random_weights, tokenizer_json, write_model, InitOptions};
use plt::{Config, DType, Weights};
use safetensors::tensor::{Dtype, TensorView};
use std::path::{Path, PathBuf};

fn tmp_dir(name: &str) -> PathBuf {
    common::tmp_dir("loading", name)
}

fn error_of<T: std::fmt::Debug>(r: plt::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error `{msg}` should mention `{p}`");
    }
}

#[test]
fn written_models_load_back_exactly() {
    let mut cases = 0;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for shards in [1, 3] {
            for tied in [false, true] {
                for qkv_bias in [false, true] {
                    for hidden_gate in [false, true] {
                        for loops in [1, 2] {
                            let layers = if loops == 1 { 1 } else { 2 };
                            let cfg = common::small_config(layers, loops, hidden_gate, tied);
                            let opts = InitOptions { seed: cases, dtype, shards, qkv_bias };
                            let what = format!("{opts:?} tied={tied} hidden_gate={hidden_gate} L={loops} N={layers}");
                            let dir = tmp_dir(&format!("roundtrip-{cases}"));
                            let want = random_weights(&cfg, &opts);
                            write_model(&dir, &cfg, &want, &opts).unwrap();

                            let back_cfg = Config::from_file(&dir.join("config.json")).unwrap();
                            assert_eq!(back_cfg, cfg, "{what}: config");
                            let got = Weights::load_dir(&dir, &back_cfg).unwrap();
                            common::assert_same_weights(&got, &want, &what);

                            let expect_gate = loops > 1;
                            let l0 = &got.layers[0];
                            assert_eq!(l0.self_attn.plt_gate.is_some(), expect_gate, "{what}");
                            if let Some(g) = &l0.self_attn.plt_gate {
                                assert_eq!(g.weight.shape, vec![4, if hidden_gate { 16 } else { 4 }], "{what}");
                                assert_eq!(g.gate_norm.is_some(), hidden_gate, "{what}");
                            }
                            assert_eq!(l0.self_attn.q_proj.bias.is_some(), qkv_bias, "{what}");
                            assert_eq!(l0.self_attn.v_proj.bias.as_ref().map(|b| b.shape.clone()), qkv_bias.then(|| vec![8]));
                            assert_eq!(got.lm_head.is_some(), !tied, "{what}");

                            let files: Vec<String> = std::fs::read_dir(&dir)
                                .unwrap()
                                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                                .collect();
                            if shards == 1 {
                                assert!(files.contains(&"model.safetensors".to_string()), "{what}: {files:?}");
                                assert!(!files.iter().any(|f| f.contains("index")), "{what}: {files:?}");
                            } else {
                                for k in 1..=3 {
                                    let f = format!("model-{k:05}-of-00003.safetensors");
                                    assert!(files.contains(&f), "{what}: {files:?}");
                                }
                                assert!(!files.contains(&"model.safetensors".to_string()), "{what}: {files:?}");
                            }
                            assert!(files.contains(&"tokenizer.json".to_string()), "{what}");
                            std::fs::remove_dir_all(&dir).unwrap();
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(cases, 96);
}

#[test]
fn vanilla_loops_have_no_gates_and_from_bytes_matches() {
    let v = serde_json::json!({
        "vocab_size": 37, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 64, "plt_num_loops": 3,
        "plt_loop_mode": "vanilla",
    });
    let cfg = Config::from_json(v.as_object().unwrap()).unwrap();
    let opts = InitOptions { seed: 5, dtype: DType::BF16, ..Default::default() };
    let want = random_weights(&cfg, &opts);
    assert!(want.layers.iter().all(|l| l.self_attn.plt_gate.is_none()));
    let dir = tmp_dir("vanilla");
    write_model(&dir, &cfg, &want, &opts).unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    common::assert_same_weights(&Weights::from_bytes(&bytes, &cfg).unwrap(), &want, "from_bytes");
    common::assert_same_weights(&Weights::load_dir(&dir, &cfg).unwrap(), &want, "load_dir");
}

#[test]
fn rewriting_a_directory_switches_layout() {
    let cfg = common::small_config(2, 2, false, false);
    let dir = tmp_dir("relayout");
    let single = InitOptions { seed: 1, ..Default::default() };
    let sharded = InitOptions { seed: 2, shards: 4, ..Default::default() };
    for opts in [&single, &sharded, &single] {
        let w = random_weights(&cfg, opts);
        write_model(&dir, &cfg, &w, opts).unwrap();
        common::assert_same_weights(&Weights::load_dir(&dir, &cfg).unwrap(), &w, &format!("{opts:?}"));
    }
}

#[test]
fn index_json_lists_every_tensor_once() {
    let cfg = common::small_config(2, 2, true, false);
    let opts = InitOptions { seed: 3, shards: 3, dtype: DType::F16, qkv_bias: true };
    let w = random_weights(&cfg, &opts);
    let dir = tmp_dir("index");
    write_model(&dir, &cfg, &w, &opts).unwrap();
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap()).unwrap();
    let map = index["weight_map"].as_object().unwrap();
    let names = named_tensors(&w);
    assert_eq!(map.len(), names.len());
    let mut total = 0;
    for (name, t) in &names {
        let file = map[name].as_str().unwrap();
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let view = st.tensor(name).unwrap();
        assert_eq!(view.dtype(), Dtype::F16);
        assert_eq!(view.shape(), &t.shape[..]);
        total += view.data().len();
    }
    assert_eq!(index["metadata"]["total_size"].as_u64().unwrap() as usize, total);
}

#[test]
fn shard_count_is_checked() {
    let cfg = common::small_config(1, 1, false, true);
    let w = random_weights(&cfg, &InitOptions::default());
    let n = named_tensors(&w).len();
    for shards in [0, n + 1] {
        let opts = InitOptions { shards, ..Default::default() };
        let msg = error_of(write_model(&tmp_dir("shard-count"), &cfg, &w, &opts));
        assert_mentions(&msg, &["shards"]);
    }
    // One tensor per shard is the most.
    let dir = tmp_dir("shard-max");
    write_model(&dir, &cfg, &w, &InitOptions { shards: n, ..Default::default() }).unwrap();
    common::assert_same_weights(&Weights::load_dir(&dir, &cfg).unwrap(), &w, "one tensor per shard");
}

#[test]
fn tokenizer_json_maps_every_id() {
    for v in [1, 3, 37, 300] {
        let t = tokenizer_json(v);
        assert_eq!(t["model"]["type"], "WordLevel");
        let vocab = t["model"]["vocab"].as_object().unwrap();
        assert_eq!(vocab.len(), v);
        let mut ids: Vec<u64> = vocab.values().map(|x| x.as_u64().unwrap()).collect();
        ids.sort();
        assert_eq!(ids, (0..v as u64).collect::<Vec<_>>(), "V={v}");
        for key in ["version", "truncation", "padding", "added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder"] {
            assert!(t.get(key).is_some(), "V={v}: `{key}` missing");
        }
    }
    let t = tokenizer_json(37);
    let specials: Vec<(u64, &str)> = t["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_u64().unwrap(), a["content"].as_str().unwrap()))
        .collect();
    assert_eq!(specials, vec![(0, "<unk>"), (1, "<s>"), (2, "</s>")]);
    assert_eq!(t["model"]["unk_token"], "<unk>");
}

// ---------------------------------------------------------------------------------------------
// Bad inputs

/// A valid single-file model directory plus its config and weights.
fn good_model(name: &str) -> (PathBuf, Config, Weights) {
    common::good_model("loading", name)
}

/// The tensors of `w` as (name, dtype, shape, little-endian bytes), in f32.
fn raw_tensors(w: &Weights) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    named_tensors(w)
        .into_iter()
        .map(|(n, t)| (n, Dtype::F32, t.shape.clone(), t.data.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect()
}

fn serialize(tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, dt, shape, bytes)| (n.clone(), TensorView::new(*dt, shape.clone(), bytes).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// The JSON header of a safetensors file, and where the data starts.
fn header(bytes: &[u8]) -> (String, usize) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (String::from_utf8(bytes[8..8 + n].to_vec()).unwrap(), 8 + n)
}

#[test]
fn config_errors_name_the_problem() {
    let (dir, cfg, _) = good_model("bad-config");
    let path = dir.join("config.json");
    std::fs::remove_file(&path).unwrap();
    assert_mentions(&error_of(Config::from_file(&path)), &["config.json"]);

    std::fs::write(&path, "{ not json").unwrap();
    assert_mentions(&error_of(Config::from_file(&path)), &["config.json", "not valid JSON"]);
    std::fs::write(&path, "[1, 2]").unwrap();
    assert_mentions(&error_of(Config::from_file(&path)), &["config.json", "object"]);
    std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
    assert_mentions(&error_of(Config::from_file(&path)), &["config.json"]);

    let good = cfg.to_json();
    let cases: [(&str, serde_json::Value); 8] = [
        ("hidden_size", "16".into()),
        ("num_hidden_layers", 1.5.into()),
        ("num_attention_heads", serde_json::Value::Array(vec![])),
        ("tie_word_embeddings", "false".into()),
        ("rope_theta", "big".into()),
        ("plt_window_size", serde_json::json!([3, 1])),
        ("plt_gate_use_hidden_states", 1.into()),
        ("eos_token_id", serde_json::json!(["</s>"])),
    ];
    for (field, bad) in cases {
        let mut v = good.clone();
        v[field] = bad.clone();
        std::fs::write(&path, v.to_string()).unwrap();
        let msg = error_of(Config::from_file(&path));
        assert_mentions(&msg, &["config.json", &format!("`{field}`")]);
    }
    let mut v = good.clone();
    v.as_object_mut().unwrap().remove("vocab_size");
    std::fs::write(&path, v.to_string()).unwrap();
    assert_mentions(&error_of(Config::from_file(&path)), &["`vocab_size`", "required"]);
}

#[test]
fn missing_checkpoint_is_reported() {
    let (dir, cfg, _) = good_model("no-weights");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    assert_mentions(&error_of(Weights::load_dir(&dir, &cfg)), &["model.safetensors"]);
    let nowhere = dir.join("does-not-exist");
    assert_mentions(&error_of(Weights::load_dir(&nowhere, &cfg)), &["does-not-exist"]);
}

#[test]
fn corrupt_files_are_errors() {
    let (dir, cfg, _) = good_model("corrupt");
    let path = dir.join("model.safetensors");
    let good = std::fs::read(&path).unwrap();
    let (_, data_start) = header(&good);
    let load = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        error_of(Weights::load_dir(&dir, &cfg))
    };

    // Garbage, empty, and a header length that cannot even be read.
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    assert_mentions(&load(&garbage), &["model.safetensors"]);
    assert_mentions(&load(&[]), &["model.safetensors"]);
    assert_mentions(&load(&good[..5]), &["model.safetensors"]);

    // Header length larger than the file.
    let mut long = good.clone();
    long[..8].copy_from_slice(&(good.len() as u64 + 100).to_le_bytes());
    assert_mentions(&load(&long), &["model.safetensors", "header"]);
    // ... and an absurd one (would overflow a naive `8 + n`).
    long[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_mentions(&load(&long), &["model.safetensors", "header"]);

    // Header that is not JSON (same length, so the length field still fits).
    let mut bad_json = good.clone();
    bad_json[8] = b'[';
    bad_json[9] = b'?';
    assert_mentions(&load(&bad_json), &["model.safetensors", "JSON"]);

    // Truncated data, and trailing bytes.
    assert_mentions(&load(&good[..good.len() - 1]), &["model.safetensors"]);
    assert_mentions(&load(&good[..data_start + 3]), &["model.safetensors"]);
    assert_mentions(&load(&good[..data_start]), &["model.safetensors"]);
    let mut extra = good.clone();
    extra.extend_from_slice(&[0; 16]);
    assert_mentions(&load(&extra), &["model.safetensors"]);

    // Every truncation point, straight from bytes: an error each time, never a panic.
    for cut in (0..good.len()).step_by(97).chain([good.len() - 2]) {
        assert!(Weights::from_bytes(&good[..cut], &cfg).is_err(), "cut at {cut}");
    }
    // Scribbles over the header: may even parse, but never panics.
    for i in 8..data_start {
        for b in [b'"', b'9', b'}', 0] {
            let mut m = good.clone();
            m[i] = b;
            let _ = Weights::from_bytes(&m, &cfg);
        }
    }
    // The original still loads.
    std::fs::write(&path, &good).unwrap();
    Weights::load_dir(&dir, &cfg).unwrap();
}

#[test]
fn wrong_shape_names_tensor_and_both_shapes() {
    let (dir, cfg, w) = good_model("shape");
    let path = dir.join("model.safetensors");

    // k_proj is [Hkv*Dh, D] = [8, 16]; store it as [16, 8] (same bytes, so the file is valid).
    let mut bytes = std::fs::read(&path).unwrap();
    let name = "model.layers.1.self_attn.k_proj.weight";
    let (h, _) = header(&bytes);
    let entry = &h[h.find(&format!("\"{name}\"")).unwrap()..];
    let entry = &entry[..entry.find('}').unwrap()];
    let shape_at = entry.find("[8,16]").expect("k_proj shape in header");
    let at = h.find(entry).unwrap() + shape_at;
    bytes[8 + at..8 + at + 6].copy_from_slice(b"[16,8]");
    std::fs::write(&path, &bytes).unwrap();
    let msg = error_of(Weights::load_dir(&dir, &cfg));
    assert_mentions(&msg, &[name, "[16, 8]", "[8, 16]"]);

    // A norm with one element too many, written as a real file.
    let mut raw = raw_tensors(&w);
    let norm = raw.iter_mut().find(|t| t.0 == "model.layers.0.post_attention_layernorm.weight").unwrap();
    norm.2 = vec![17];
    norm.3.extend_from_slice(&1f32.to_le_bytes());
    let msg = error_of(Weights::from_bytes(&serialize(&raw), &cfg));
    assert_mentions(&msg, &["model.layers.0.post_attention_layernorm.weight", "[17]", "[16]"]);

    // A 1-D gate bias stored as 2-D.
    let mut raw = raw_tensors(&w);
    raw.iter_mut().find(|t| t.0 == "model.layers.1.self_attn.plt_gate.bias").unwrap().2 = vec![1, 4];
    let msg = error_of(Weights::from_bytes(&serialize(&raw), &cfg));
    assert_mentions(&msg, &["model.layers.1.self_attn.plt_gate.bias", "[1, 4]", "[4]"]);
}

#[test]
fn wrong_dtype_names_the_tensor() {
    let (dir, cfg, w) = good_model("dtype");
    let path = dir.join("model.safetensors");
    let good = std::fs::read(&path).unwrap();

    // Rewrite one tensor's dtype in place: F32 -> I32 (same size, still a valid file).
    let name = "model.norm.weight";
    let (h, _) = header(&good);
    let start = h.find(&format!("\"{name}\"")).unwrap();
    let dt_at = start + h[start..].find("\"F32\"").unwrap();
    let mut bytes = good.clone();
    bytes[8 + dt_at + 1] = b'I';
    std::fs::write(&path, &bytes).unwrap();
    let msg = error_of(Weights::load_dir(&dir, &cfg));
    assert_mentions(&msg, &[name, "I32"]);

    // A real file with an F64 matrix and a U8 bias.
    for (tensor, dt) in [("model.layers.0.mlp.up_proj.weight", Dtype::F64), ("model.layers.1.self_attn.q_proj.bias", Dtype::U8)] {
        let mut raw = raw_tensors(&w);
        let t = raw.iter_mut().find(|t| t.0 == tensor).unwrap();
        let n: usize = t.2.iter().product();
        t.1 = dt;
        t.3 = vec![0; n * dt.bitsize() / 8];
        let msg = error_of(Weights::from_bytes(&serialize(&raw), &cfg));
        assert_mentions(&msg, &[tensor, &format!("{dt:?}")]);
    }

    // An unused tensor in an odd dtype is not an error (checkpoints carry extras).
    let mut raw = raw_tensors(&w);
    raw.push(("model.layers.0.self_attn.rotary_emb.inv_freq".into(), Dtype::I64, vec![2], vec![0; 16]));
    Weights::from_bytes(&serialize(&raw), &cfg).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let (_, cfg, w) = good_model("missing");
    for name in [
        "model.embed_tokens.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.0.self_attn.plt_gate.gate_norm.weight",
        "model.layers.1.self_attn.plt_gate.weight",
        "model.norm.weight",
        "lm_head.weight",
    ] {
        let raw: Vec<_> = raw_tensors(&w).into_iter().filter(|t| t.0 != name).collect();
        let msg = error_of(Weights::from_bytes(&serialize(&raw), &cfg));
        assert_mentions(&msg, &[name, "missing"]);
    }
    // Optional biases may be absent: a bias-free file loads for the same config.
    let raw: Vec<_> = raw_tensors(&w).into_iter().filter(|t| !t.0.ends_with("proj.bias")).collect();
    let got = Weights::from_bytes(&serialize(&raw), &cfg).unwrap();
    assert!(got.layers.iter().all(|l| l.self_attn.q_proj.bias.is_none()));
}

#[test]
fn bad_shards_are_reported() {
    let cfg = common::small_config(2, 2, false, false);
    let opts = InitOptions { seed: 4, shards: 3, ..Default::default() };
    let w = random_weights(&cfg, &opts);
    let fresh = |name: &str| -> PathBuf {
        let dir = tmp_dir(name);
        write_model(&dir, &cfg, &w, &opts).unwrap();
        dir
    };
    let index_of = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap()).unwrap()
    };
    let write_index = |dir: &Path, v: &serde_json::Value| {
        std::fs::write(dir.join("model.safetensors.index.json"), v.to_string()).unwrap();
    };

    // A shard the index names is gone.
    let dir = fresh("shard-missing");
    std::fs::remove_file(dir.join("model-00002-of-00003.safetensors")).unwrap();
    assert_mentions(&error_of(Weights::load_dir(&dir, &cfg)), &["model-00002-of-00003.safetensors"]);

    // Paths that leave the model directory.
    for evil in ["../model-00001-of-00003.safetensors", "sub/../model-00001-of-00003.safetensors", "/etc/passwd", "..\\x.safetensors", ".."] {
        let dir = fresh("shard-escape");
        let mut v = index_of(&dir);
        v["weight_map"]["model.norm.weight"] = evil.into();
        write_index(&dir, &v);
        assert_mentions(&error_of(Weights::load_dir(&dir, &cfg)), &["model.safetensors.index.json", evil]);
    }

    // The index is not JSON, has no weight_map, or maps a tensor to a non-string.
    let dir = fresh("index-bad");
    std::fs::write(dir.join("model.safetensors.index.json"), "{\"weight_map\": ").unwrap();
    assert_mentions(&error_of(Weights::load_dir(&dir, &cfg)), &["model.safetensors.index.json", "JSON"]);
    write_index(&dir, &serde_json::json!({"metadata": {}}));
    assert_mentions(&error_of(Weights::load_dir(&dir, &cfg)), &["model.safetensors.index.json", "weight_map"]);
    let mut v = index_of(&fresh("index-bad"));
    v["weight_map"]["model.norm.weight"] = 3.into();
    write_index(&dir, &v);
    assert_mentions(&error_of(Weights::load_dir(&dir, &cfg)), &["model.safetensors.index.json", "model.norm.weight"]);

    // A corrupt shard is named.
    let dir = fresh("shard-corrupt");
    let shard = dir.join("model-00003-of-00003.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 4]).unwrap();
    assert_mentions(&error_of(Weights::load_dir(&dir, &cfg)), &["model-00003-of-00003.safetensors"]);

    // The index maps a tensor to a shard that does not hold it, and nothing else does.
    let dir = fresh("shard-wrong-map");
    let name = "model.layers.1.mlp.up_proj.weight";
    let v = index_of(&dir);
    let home = v["weight_map"][name].as_str().unwrap().to_string();
    let shard = dir.join(&home);
    let bytes = std::fs::read(&shard).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, TensorView)> = st.tensors().into_iter().filter(|(n, _)| n != name).collect();
    std::fs::write(&shard, safetensors::serialize(kept, None).unwrap()).unwrap();
    assert_mentions(&error_of(Weights::load_dir(&dir, &cfg)), &[name, "missing"]);

    // The same tensor in two shards.
    let dir = fresh("shard-dup");
    let v = index_of(&dir);
    let name = "model.norm.weight";
    let home = v["weight_map"][name].as_str().unwrap().to_string();
    let other = if home == "model-00001-of-00003.safetensors" { "model-00002-of-00003.safetensors" } else { "model-00001-of-00003.safetensors" };
    let src = std::fs::read(dir.join(&home)).unwrap();
    let src = safetensors::SafeTensors::deserialize(&src).unwrap();
    let dst_bytes = std::fs::read(dir.join(other)).unwrap();
    let dst = safetensors::SafeTensors::deserialize(&dst_bytes).unwrap();
    let mut all = dst.tensors();
    all.push((name.to_string(), src.tensor(name).unwrap()));
    let merged = safetensors::serialize(all, None).unwrap();
    std::fs::write(dir.join(other), merged).unwrap();
    assert_mentions(&error_of(Weights::load_dir(&dir, &cfg)), &[name, "twice"]);
}

/// A NaN or an infinity in an F32, F16 or BF16 tensor of a safetensors checkpoint is an error
/// naming the file, the tensor and the first bad value (its row and column).
#[test]
fn non_finite_values_name_the_file_tensor_and_value() {
    let (dir, cfg, w) = good_model("non-finite");
    let name = "model.layers.1.mlp.down_proj.weight";
    let cols = cfg.intermediate_size;
    for (dt, bad, kind) in [(Dtype::F32, f32::NAN, "NaN"), (Dtype::F16, f32::INFINITY, "+Inf"), (Dtype::BF16, f32::NEG_INFINITY, "-Inf")] {
        let mut raw = raw_tensors(&w);
        let t = raw.iter_mut().find(|t| t.0 == name).unwrap();
        let mut vals: Vec<f32> = t.3.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        // Row 2, column 5, and a later one: the error names the first.
        vals[2 * cols + 5] = bad;
        vals[3 * cols] = bad;
        t.1 = dt;
        t.3 = match dt {
            Dtype::F32 => vals.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Dtype::F16 => vals.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
            _ => vals.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
        };
        std::fs::write(dir.join("model.safetensors"), serialize(&raw)).unwrap();
        let msg = error_of(Weights::load_dir(&dir, &cfg));
        let want = format!("value {} (row 2, column 5) is {kind}", 2 * cols + 5);
        assert_mentions(&msg, &["model.safetensors", name, &want]);
    }
}

/// `raw` with the tensor `from` renamed `to`.
fn renamed(mut raw: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>, from: &str, to: &str) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    raw.iter_mut().find(|t| t.0 == from).unwrap_or_else(|| panic!("no tensor {from}")).0 = to.to_string();
    raw
}

#[test]
fn gate_tensors_load_under_their_alias_names() {
    let (dir, cfg, w) = good_model("gate-alias");
    let gate = |i: usize, part: &str| format!("model.layers.{i}.self_attn.plt_gate.{part}");
    // Layer 0 under `self_attn.loop_gate_proj`, layer 1 under `model.gate_projections.{i}`.
    let aliases = [
        (gate(0, "weight"), "model.layers.0.self_attn.loop_gate_proj.weight".to_string()),
        (gate(0, "bias"), "model.layers.0.self_attn.loop_gate_proj.bias".to_string()),
        (gate(1, "weight"), "model.gate_projections.1.weight".to_string()),
        (gate(1, "bias"), "model.gate_projections.1.bias".to_string()),
    ];
    let mut raw = raw_tensors(&w);
    for (from, to) in &aliases {
        raw = renamed(raw, from, to);
    }
    let bytes = serialize(&raw);
    common::assert_same_weights(&Weights::from_bytes(&bytes, &cfg).unwrap(), &w, "aliased gates");
    std::fs::write(dir.join("model.safetensors"), &bytes).unwrap();
    common::assert_same_weights(&Weights::load_dir(&dir, &cfg).unwrap(), &w, "aliased gates from a directory");
    // The plan names each tensor as the file stores it.
    let plan = plt::load::open(&dir.as_path().into()).unwrap().plan;
    for (_, to) in &aliases {
        assert!(plan.tensors.iter().any(|t| &t.name == to), "{to} not in the plan");
    }

    // Errors about an aliased tensor name it as stored.
    let mut bad = raw.clone();
    bad.iter_mut().find(|t| t.0 == aliases[2].1).unwrap().2 = vec![16, 4];
    assert_mentions(&error_of(Weights::from_bytes(&serialize(&bad), &cfg)), &[&aliases[2].1, "[16, 4]", "[4, 16]"]);
    let mut bad = raw.clone();
    bad.iter_mut().find(|t| t.0 == aliases[1].1).unwrap().3[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_mentions(&error_of(Weights::from_bytes(&serialize(&bad), &cfg)), &[&aliases[1].1]);

    // One gate tensor under two names: an error naming both, whichever two they are.
    let original = raw_tensors(&w);
    let copy_of = |name: &str, as_name: &str| {
        let mut t = original.iter().find(|t| t.0 == name).unwrap().clone();
        t.0 = as_name.to_string();
        t
    };
    let mut both = original.clone();
    both.push(copy_of(&gate(0, "weight"), "model.layers.0.self_attn.loop_gate_proj.weight"));
    assert_mentions(&error_of(Weights::from_bytes(&serialize(&both), &cfg)), &[&gate(0, "weight"), "loop_gate_proj.weight"]);
    let mut both = original.clone();
    both.push(copy_of(&gate(1, "bias"), "model.gate_projections.1.bias"));
    assert_mentions(&error_of(Weights::from_bytes(&serialize(&both), &cfg)), &[&gate(1, "bias"), "model.gate_projections.1.bias"]);
    let mut both = renamed(original.clone(), &gate(1, "weight"), "model.gate_projections.1.weight");
    both.push(copy_of(&gate(1, "weight"), "model.layers.1.self_attn.loop_gate_proj.weight"));
    assert_mentions(
        &error_of(Weights::from_bytes(&serialize(&both), &cfg)),
        &["model.gate_projections.1.weight", "model.layers.1.self_attn.loop_gate_proj.weight"],
    );
    // The gate norm has no alias: renamed, it is missing.
    let norm = renamed(original, "model.layers.0.self_attn.plt_gate.gate_norm.weight", "model.layers.0.self_attn.loop_gate_proj.gate_norm.weight");
    assert_mentions(&error_of(Weights::from_bytes(&serialize(&norm), &cfg)), &["model.layers.0.self_attn.plt_gate.gate_norm.weight", "missing"]);
}

#[test]
fn lm_head_follows_tie_word_embeddings_not_the_file() {
    let (_, untied, w) = good_model("tying");
    assert!(!untied.tie_word_embeddings && w.lm_head.is_some());
    let with_head = serialize(&raw_tensors(&w));
    let without_head: Vec<_> = raw_tensors(&w).into_iter().filter(|t| t.0 != "lm_head.weight").collect();
    let without_head = serialize(&without_head);
    // Untied: the head is required, even though embed_tokens could stand in.
    assert_mentions(&error_of(Weights::from_bytes(&without_head, &untied)), &["lm_head.weight", "missing"]);
    let got = Weights::from_bytes(&with_head, &untied).unwrap();
    assert_eq!(got.lm_head().data, w.lm_head.as_ref().unwrap().data);
    // Tied: the head is embed_tokens, and a stored lm_head.weight is not used.
    let tied = Config { tie_word_embeddings: true, ..untied };
    assert_ne!(w.lm_head.as_ref().unwrap().data, w.embed_tokens.data);
    for bytes in [&with_head, &without_head] {
        let got = Weights::from_bytes(bytes, &tied).unwrap();
        assert!(got.lm_head.is_none());
        assert_eq!(got.lm_head().data, w.embed_tokens.data);
    }
}

#[test]
fn plt_checkpoint_config_warnings_reach_stderr() {
    let (dir, cfg, _) = good_model("plt-warnings");
    let path = dir.join("config.json");
    let mut v = cfg.to_json();
    assert_eq!(v["model_type"], "iquestpltcoder");
    v.as_object_mut().unwrap().remove("plt_emb_scale");
    v.as_object_mut().unwrap().remove("plt_num_loops");
    std::fs::write(&path, v.to_string()).unwrap();
    let info = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_plt"))
            .args(["info", "--model", dir.to_str().unwrap()])
            .env("XDG_RUNTIME_DIR", "/tmp")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let stderr = info();
    assert_mentions(&stderr, &["`plt_emb_scale`", "`plt_num_loops`", "default 2"]);
    assert!(!stderr.contains("plt_hidden_scale"), "{stderr}");
    // The loaded model took the defaults: 2 loops.
    assert_eq!(Config::from_file(&path).unwrap().num_loops, 2);
    // A config that states every field loads silently.
    std::fs::write(&path, cfg.to_json().to_string()).unwrap();
    assert!(!info().contains("config.json"), "warnings for a complete config");
}

/// Files that are not regular files (a FIFO would block the open forever) and small files
/// (config, index, tokenizer) past their size bound are errors naming the file, before
/// anything is read whole.
#[test]
fn special_and_oversized_files_are_errors() {
    let (dir, _, _) = good_model("special");
    let fifo = dir.join("model.safetensors");
    std::fs::remove_file(&fifo).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().map(|s| s.success()).unwrap_or(false);
    if made {
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.clone();
        std::thread::spawn(move || tx.send(error_of(plt::load::open(&plt::load::ModelSource::Path(d)).map(|_| ()))).ok());
        let msg = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("opening a FIFO must not block");
        assert_mentions(&msg, &["model.safetensors", "not a regular file"]);
        std::fs::remove_file(&fifo).unwrap();
    }
    // An index far past any real one (16 MiB bound).
    let index = dir.join("model.safetensors.index.json");
    let f = std::fs::File::create(&index).unwrap();
    f.set_len(17 << 20).unwrap();
    assert_mentions(&error_of(plt::load::open(&plt::load::ModelSource::Path(dir.clone())).map(|_| ())), &["model.safetensors.index.json", "more than"]);
    let cfg = dir.join("config.json");
    std::fs::File::create(&cfg).unwrap().set_len(17 << 20).unwrap();
    assert_mentions(&error_of(Config::from_file(&cfg)), &["config.json", "more than"]);
}
