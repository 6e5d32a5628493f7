//! The memory plan of `plt info` (src/load/memory.rs) on a small Q8_0 model whose every number
//! is worked out by hand here: bytes per format and buffer, bits per weight, KV bytes per token
//! (f32 and f16, PLT and vanilla), what exceeds a binding limit, what fits a budget; and the
//! same numbers in `plt info`'s JSON; and the plan against what the runtime allocates.

mod common;

use plt::gguf::GgmlType;
use plt::init::gguf::{gguf_bytes, GgufInitOptions};
use plt::load::memory::{MemoryOptions, MemoryPlan};
use plt::load::MemorySource;
use plt::{Config, Looping};
use serde_json::Value;

/// V 64, D 64, F 96, N 2, H 4, Hkv 2, Dh 16, L 3, window left 5, untied: every matrix row is
/// whole 32-blocks, so every matrix is Q8_0 (on the device a row of K weights is K/32 bodies of 32
/// bytes, then its K/32 f16 scales two to a word: 34 bytes per 32 weights when K/32 is even).
fn config(looping: &str) -> Config {
    Config::from_json(
        serde_json::json!({
            "vocab_size": 64, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 512,
            "plt_num_loops": 3, "plt_window_size": [5, 0], "plt_loop_mode": looping,
        })
        .as_object()
        .unwrap(),
    )
    .unwrap()
}

fn plan(cfg: &Config, context: usize, memory: Option<u64>, max_binding: Option<u64>) -> MemoryPlan {
    let bytes = gguf_bytes(cfg, &GgufInitOptions { seed: 1, matrix_type: GgmlType::Q8_0, qkv_bias: false }).unwrap();
    let open = plt::load::open_gguf(Box::new(MemorySource::new("m.gguf", bytes))).unwrap();
    let o = MemoryOptions { context, batch: 1, prefill_chunk: 16, dtype: None, memory, max_binding };
    MemoryPlan::new(&open.plan, &o).unwrap()
}

// By hand. Matrices: qkv (16*4 + 2*16*2) x 64 = 8192, o 64 x 64 = 4096, gate/up 2 x 96 x 64 =
// 12288, down 64 x 96 = 6144 per layer; embed and lm_head 64 x 64 = 4096 each.
/// Device bytes of `rows` Q8_0 rows of `k` weights.
const fn q8_rows(rows: u64, k: u64) -> u64 {
    rows * (k + k.div_ceil(64) * 4)
}
const QKV: u64 = q8_rows(128, 64);
const GATE_UP: u64 = q8_rows(192, 64);
const MATRIX_WEIGHTS: u64 = 2 * (8192 + 4096 + 12288 + 6144) + 2 * 4096;
// The down projection's rows (96 weights: 3 blocks) carry a padded scale word.
const MATRIX_BYTES: u64 = 2 * (QKV + q8_rows(64, 64) + GATE_UP + q8_rows(64, 96)) + 2 * q8_rows(64, 64);
const BITS: f64 = MATRIX_BYTES as f64 * 8.0 / MATRIX_WEIGHTS as f64;
// F32 vectors: per layer two norms (64) and the query gate (H*Dh + H = 68); the final norm.
const VECTOR_BYTES: u64 = 4 * (2 * (64 + 64 + 68) + 64);
// KV per token: 2 (K, V) * N * Hkv*Dh * element; PLT rings: (L-1) * (left+1) positions.
const KV_TOKEN_F32: u64 = 2 * 2 * 32 * 4;

#[test]
fn memory_plan_numbers_by_hand() {
    let p = plan(&config("parallel"), 100, None, None);
    assert_eq!(p.matrix_params, MATRIX_WEIGHTS);
    assert_eq!(p.bits_per_weight, BITS);
    assert_eq!(p.weight_bytes, MATRIX_BYTES + VECTOR_BYTES);
    assert_eq!(p.by_format, vec![("Q8_0".to_string(), 10, MATRIX_BYTES), ("F32".to_string(), 7, VECTOR_BYTES)]);
    assert_eq!(p.buffers.len(), 17);
    assert_eq!((p.buffers[0].buffer.as_str(), p.buffers[0].format.as_str(), p.buffers[0].bytes), ("layers.0.gate_up_proj", "Q8_0", GATE_UP));
    assert!(p.buffers.windows(2).all(|w| w[0].bytes >= w[1].bytes), "largest first");
    assert_eq!(p.kv_f32.per_token, KV_TOKEN_F32);
    assert_eq!(p.kv_f16.per_token, KV_TOKEN_F32 / 2);
    assert_eq!(p.kv_f32.fixed, KV_TOKEN_F32 * 2 * 6);
    assert_eq!(p.kv_f32.at_context, KV_TOKEN_F32 * (100 + 2 * 6));
    assert_eq!(p.kv_f16.at_context, KV_TOKEN_F32 / 2 * (100 + 2 * 6));
    // PLT-SPEC s4's formula, as the config computes it.
    assert_eq!(p.kv_f32.at_context, config("parallel").kv_bytes(100, 4) as u64);
    // One layer's cache buffer: K and V for 100 positions.
    assert_eq!(p.kv_f32.layer_buffer, 2 * 100 * 32 * 4);
    assert!(p.activation_bytes > 0);
    assert_eq!(p.budgets[0].total, p.weight_bytes + p.kv_f32.at_context + p.activation_bytes);
    assert_eq!(p.budgets[1].total, p.weight_bytes + p.kv_f16.at_context + p.activation_bytes);

    // Vanilla looping: L full caches, no rings.
    let cfg = config("vanilla");
    assert_eq!(cfg.looping, Looping::Vanilla);
    let v = plan(&cfg, 100, None, None);
    assert_eq!((v.kv_f32.per_token, v.kv_f32.fixed, v.kv_f32.at_context), (3 * KV_TOKEN_F32, 0, 3 * KV_TOKEN_F32 * 100));
    assert_eq!(v.kv_f32.at_context, cfg.kv_bytes(100, 4) as u64);

    // A budget of exactly the f16 total fits it and not the f32 one; the binding limit of one
    // qkv_proj leaves only the two gate_up_proj buffers and the f32 KV layer buffer (25600
    // bytes) over it (the f16 one is 12800 bytes, over too).
    let f16_total = p.budgets[1].total;
    let q = plan(&config("parallel"), 100, Some(f16_total), Some(QKV));
    assert_eq!((q.budgets[0].fits, q.budgets[1].fits), (Some(false), Some(true)));
    let over: Vec<(&str, &str, u64)> = q.over_binding.iter().map(|b| (b.buffer.as_str(), b.format.as_str(), b.bytes)).collect();
    assert_eq!(
        over,
        vec![
            ("layers.0.gate_up_proj", "Q8_0", GATE_UP),
            ("layers.1.gate_up_proj", "Q8_0", GATE_UP),
            ("layers.*.kv_cache", "f32", 25600),
            ("layers.*.kv_cache", "f16", 12800)
        ]
    );
    let text = q.text(Some(3));
    assert!(text.contains(&format!("{BITS:.3} bits per weight")) && text.contains("3 of 17") && text.contains("does NOT fit"), "{text}");
}

#[test]
fn plt_info_json_carries_the_memory_plan() {
    let dir = std::env::temp_dir().join(format!("plt-memory-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("m.gguf");
    std::fs::write(&file, gguf_bytes(&config("parallel"), &GgufInitOptions { seed: 1, matrix_type: GgmlType::Q8_0, qkv_bias: false }).unwrap()).unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["info", "--model", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_plt")).args(&args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (ok, out, err) = run(&["--context", "100", "--memory", "1GB", "--max-binding", "10000"]);
    assert!(ok, "{err}");
    let j: Value = serde_json::from_str(&out).unwrap();
    let m = &j["memory_plan"];
    assert_eq!(m["context"], 100);
    assert_eq!(m["bits_per_weight"], BITS);
    assert_eq!(m["matrix_params"], MATRIX_WEIGHTS);
    assert_eq!(m["weight_bytes"], MATRIX_BYTES + VECTOR_BYTES);
    assert_eq!(m["by_format"][0], serde_json::json!(["Q8_0", 10, MATRIX_BYTES]));
    assert_eq!(m["kv_f32"]["per_token"], KV_TOKEN_F32);
    assert_eq!(m["kv_f16"]["per_token"], KV_TOKEN_F32 / 2);
    assert_eq!(m["kv_f32"]["at_context"], KV_TOKEN_F32 * 112);
    assert_eq!(m["memory"], 1_000_000_000u64);
    assert_eq!(m["budgets"][0]["fits"], true);
    let over: Vec<&str> = m["over_binding"].as_array().unwrap().iter().map(|b| b["buffer"].as_str().unwrap()).collect();
    assert_eq!(over, vec!["layers.0.gate_up_proj", "layers.1.gate_up_proj", "layers.*.kv_cache", "layers.*.kv_cache"]);
    // The printed plan has it too; a bad byte count is a one-line error naming the flag.
    let (ok, out, _) = run(&["--plan", "--all-buffers"]);
    assert!(ok && out.contains("memory plan (context 512, batch 1)") && out.contains("17 of 17"), "{out}");
    let (ok, _, err) = run(&["--memory", "lots"]);
    assert!(!ok && err.trim().lines().count() == 1 && err.contains("--memory"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The plan against what the runtime allocates: the model's buffers, and a session's.
#[test]
fn memory_plan_matches_the_runtime_allocations() {
    use plt::model::{GpuModel, Session, SessionOptions};
    let gpu = common::gpu();
    let mut sessions = Vec::new();
    for (looping, kv_f16) in [("parallel", false), ("parallel", true), ("vanilla", false)] {
        let cfg = config(looping);
        let bytes = gguf_bytes(&cfg, &GgufInitOptions { seed: 1, matrix_type: GgmlType::Q8_0, qkv_bias: false }).unwrap();
        let open = plt::load::open_gguf(Box::new(MemorySource::new("m.gguf", &bytes[..]))).unwrap();
        let o = MemoryOptions { context: 100, batch: 2, prefill_chunk: 16, dtype: None, memory: None, max_binding: None };
        let p = MemoryPlan::new(&open.plan, &o).unwrap();
        let before = gpu.allocated_bytes();
        let model = std::sync::Arc::new(GpuModel::load(gpu.clone(), open, None, &mut |_| {}).unwrap());
        let weights = gpu.allocated_bytes() - before;
        let s = Session::new(model, SessionOptions { batch: 2, context: 100, prefill_chunk: 16, kv_f16 }).unwrap();
        let session = gpu.allocated_bytes() - before - weights;
        let kv = if kv_f16 { &p.kv_f16 } else { &p.kv_f32 };
        let what = format!("{looping} kv_f16 {kv_f16}: weights {weights} (plan {}), session {session} (plan KV {} + activations {})", p.weight_bytes, kv.at_context, p.activation_bytes);
        // The weights as planned (the model's few bytes of other buffers aside).
        assert!(weights >= p.weight_bytes && weights - p.weight_bytes <= 1024, "{what}");
        // The session: the KV as planned plus activations within 10% of the estimate.
        let rest = session as i64 - kv.at_context as i64 - p.activation_bytes as i64;
        assert!(rest.unsigned_abs() <= p.activation_bytes / 10, "{what}");
        sessions.push((session, kv.at_context));
        drop(s);
    }
    // f32 against f16 KV elements: the sessions differ by exactly the planned KV bytes.
    assert_eq!(sessions[0].0 - sessions[1].0, sessions[0].1 - sessions[1].1);
}
