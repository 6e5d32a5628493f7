//! More architectures: Llama 3 RoPE frequency scaling (config.json `rope_scaling` and GGUF
//! `rope_freqs.weight`) and `qwen2` GGUF files (q/k/v biases, q/k rows not permuted). Random
//! models written by the runtime's own writers load, and the CPU backend's and the GPU's logits
//! match the f64 reference; the reference's Llama 3 frequencies match the formula written out
//! again here; bad scaling input is an error naming the key or tensor.

mod common;
#[path = "support/gguf_writer.rs"]
mod gguf_writer;

use common::{gpu, nmse, tokens};
use plt::config::RopeScaling;
use plt::cpu::{CpuModel, CpuOptions, CpuSession, CpuSessionOptions};
use plt::gguf::{load_gguf_bytes, GgmlType};
use plt::init::gguf::{write_gguf_arch_to, GgufInitOptions};
use plt::init::{random_weights, InitOptions};
use plt::load::{MemorySource, ModelSource};
use plt::model::{GpuModel, Logits, Session, SessionOptions};
use plt::{reference, Config, Weights};
use std::sync::Arc;

/// f32 accumulation against the reference's f64.
const TOL: f64 = 1e-9;

/// A standard (L = 1) model, V=300 (the GGUF writer's tokenizer needs 259 tokens), D=32, H=4,
/// Hkv=2, Dh=8, theta 10000, with `scaling` (a JSON `rope_scaling` or null).
fn config(scaling: serde_json::Value, tied: bool) -> Config {
    let v = serde_json::json!({
        "vocab_size": 300, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "rope_theta": 10000.0,
        "max_position_embeddings": 64, "tie_word_embeddings": tied, "bos_token_id": 1, "eos_token_id": 2,
        "rope_scaling": scaling,
    });
    Config::from_json(v.as_object().unwrap()).unwrap()
}

/// Llama 3 scaling with a short original context, so that at Dh = 8 one frequency is kept, one
/// blended and two divided.
fn llama3_json() -> serde_json::Value {
    serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64})
}

/// Hugging Face's `_compute_llama3_parameters`, written out again: the divisor of each plain
/// inverse frequency.
fn llama3_divisors(theta: f64, dh: usize, factor: f64, low: f64, high: f64, original: f64) -> Vec<f32> {
    let (low_wavelen, high_wavelen) = (original / low, original / high);
    (0..dh / 2)
        .map(|j| {
            let inv = 1.0 / theta.powf((2 * j) as f64 / dh as f64);
            let wavelen = 2.0 * std::f64::consts::PI / inv;
            let llama = if wavelen > low_wavelen { inv / factor } else { inv };
            let smooth = (original / wavelen - low) / (high - low);
            let smoothed = (1.0 - smooth) * llama / factor + smooth * llama;
            let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
            (inv / if medium { smoothed } else { llama }) as f32
        })
        .collect()
}

fn cpu_logits(m: Arc<CpuModel>, toks: &[u32]) -> Vec<Vec<f32>> {
    let v = m.cfg.vocab_size;
    let mut s = CpuSession::new(m, CpuSessionOptions { context: 32, kv_f16: false }).unwrap();
    s.prefill_logits(toks, true).unwrap().chunks(v).map(|c| c.to_vec()).collect()
}

fn gpu_logits(cfg: &Config, w: &Weights, toks: &[u32]) -> Vec<Vec<f32>> {
    let m = Arc::new(GpuModel::new(gpu(), cfg, w, None).unwrap());
    let mut s = Session::new(m, SessionOptions { batch: 1, context: 32, prefill_chunk: 8, kv_f16: false }).unwrap();
    let all = pollster::block_on(s.prefill(0, toks, Logits::All)).unwrap();
    all.chunks(cfg.vocab_size).map(|c| c.to_vec()).collect()
}

fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: positions");
    for (p, (g, w)) in got.iter().zip(want).enumerate() {
        let e = nmse(g, w);
        assert!(e < tol, "{what}: position {p}: nmse {e:e}");
    }
}

/// The largest nmse over positions.
fn max_nmse(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    a.iter().zip(b).map(|(x, y)| nmse(x, y)).fold(0.0, f64::max)
}

/// config.json's `llama3` scaling: the reference equals one run with the divisors of the formula
/// above, differs from unscaled RoPE, and the CPU backend and the GPU match it; the model
/// directory written with it loads back with the same scaling.
#[test]
fn llama3_rope_scaling_from_config_json_matches_the_formula() {
    let cfg = config(llama3_json(), true);
    let divisors = llama3_divisors(10000.0, 8, 8.0, 1.0, 4.0, 64.0);
    assert!(divisors[0] == 1.0 && divisors[1] > 1.0 && divisors[1] < 8.0 && divisors[2] == 8.0 && divisors[3] == 8.0, "{divisors:?}");
    let by_formula = Config { rope_scaling: RopeScaling::FreqFactors(divisors), ..cfg.clone() };
    let unscaled = Config { rope_scaling: RopeScaling::None, ..cfg.clone() };
    let w = random_weights(&cfg, &InitOptions { seed: 5, ..Default::default() });
    let toks = tokens(24, cfg.vocab_size, 3);
    let want = reference::forward(&cfg, &w, &toks);
    assert_close(&reference::forward(&by_formula, &w, &toks), &want, 1e-12, "divisors of the formula");
    assert!(max_nmse(&reference::forward(&unscaled, &w, &toks), &want) > 1e-6, "scaling changes nothing");
    let cpu = Arc::new(CpuModel::from_weights(&cfg, &w, None, &CpuOptions { threads: Some(2), ..Default::default() }).unwrap());
    assert_close(&cpu_logits(cpu, &toks), &want, TOL, "CPU backend");
    assert_close(&gpu_logits(&cfg, &w, &toks), &want, TOL, "GPU");
    // Through a model directory's config.json.
    let dir = common::tmp_dir("arch", "llama3-dir");
    plt::init::write_model(&dir, &cfg, &w, &InitOptions { seed: 5, ..Default::default() }).unwrap();
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(text.contains("\"llama3\""), "{text}");
    let (back, _, _) = plt::load::read_host(&ModelSource::Path(dir)).unwrap();
    assert_eq!(back.rope_scaling, cfg.rope_scaling);
}

/// A Llama 3 GGUF (the writer stores the scaling as `rope_freqs.weight`, as llama.cpp does)
/// loads with those divisors, and the CPU backend matches the reference; a qwen2 GGUF loads
/// with its biases and unpermuted q/k rows, and the CPU backend and GPU match the reference.
#[test]
fn llama3_and_qwen2_gguf_files_load_and_match_the_reference() {
    let opts = |qkv_bias| GgufInitOptions { seed: 9, matrix_type: GgmlType::F32, qkv_bias };
    let toks = tokens(20, 300, 4);
    // Llama 3 scaling.
    let cfg = config(llama3_json(), false);
    let bytes = write_gguf_arch_to(Vec::new(), &cfg, &opts(false), "llama").unwrap().0;
    let m = load_gguf_bytes(&bytes).unwrap();
    let RopeScaling::FreqFactors(d) = &m.cfg.rope_scaling else { panic!("{:?}", m.cfg.rope_scaling) };
    assert_eq!(d, &llama3_divisors(10000.0, 8, 8.0, 1.0, 4.0, 64.0));
    let want = reference::forward(&m.cfg, &m.weights, &toks);
    assert_close(&reference::forward(&cfg, &m.weights, &toks), &want, 1e-10, "llama3 type vs its divisors");
    let open = plt::load::open_gguf(Box::new(MemorySource::new("llama3.gguf", bytes))).unwrap();
    let cpu = Arc::new(CpuModel::load(open, None, &CpuOptions { threads: Some(2), f32_activations: true, ..Default::default() }, &mut |_| {}).unwrap());
    assert_close(&cpu_logits(cpu, &toks), &want, TOL, "llama3 GGUF, CPU backend");

    // qwen2, tied and untied.
    for tied in [true, false] {
        let cfg = config(serde_json::Value::Null, tied);
        let bytes = write_gguf_arch_to(Vec::new(), &cfg, &opts(true), "qwen2").unwrap().0;
        let m = load_gguf_bytes(&bytes).unwrap();
        assert_eq!(m.cfg, cfg, "qwen2 config (tied {tied})");
        assert!(m.weights.layers[0].self_attn.q_proj.bias.is_some(), "q bias");
        assert_eq!(m.tokenizer.as_ref().unwrap().model, "gpt2");
        // The same file as llama: q/k rows un-permuted there, as stored here.
        let as_llama = load_gguf_bytes(&write_gguf_arch_to(Vec::new(), &cfg, &opts(true), "llama").unwrap().0).unwrap();
        let (q, ql) = (&m.weights.layers[0].self_attn.q_proj.weight, &as_llama.weights.layers[0].self_attn.q_proj.weight);
        assert!(plt::gguf::unpermute_qk(q, 4, "q").unwrap().data == ql.data, "q rows");
        assert!(q.data != ql.data, "qwen2 q rows are not un-permuted");
        let want = reference::forward(&m.cfg, &m.weights, &toks);
        let open = plt::load::open_gguf(Box::new(MemorySource::new("qwen2.gguf", bytes))).unwrap();
        let cpu = Arc::new(CpuModel::load(open, None, &CpuOptions { threads: Some(2), f32_activations: true, ..Default::default() }, &mut |_| {}).unwrap());
        assert_close(&cpu_logits(cpu, &toks), &want, TOL, &format!("qwen2 GGUF (tied {tied}), CPU backend"));
        if tied {
            assert_close(&gpu_logits(&m.cfg, &m.weights, &toks), &want, TOL, "qwen2 GGUF, GPU");
        }
    }
}

/// Bad scaling input names the key or the tensor.
#[test]
fn bad_rope_scaling_is_an_error_naming_it() {
    use gguf_writer::*;
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (base, _) = synthetic(&variants()[0], 1);
    let dh = tiny_config(false).head_dim;
    let cases: Vec<(Gguf, &[&str])> = vec![
        {
            let mut g = base.clone();
            g.tensor("rope_freqs.weight", &[3], GgmlType::F32, f32s(&[1.0, 2.0, 3.0]));
            (g, &["rope_freqs.weight", "3 values"])
        },
        {
            let mut g = base.clone();
            let mut d = vec![1.0; dh / 2];
            d[1] = f32::NAN;
            g.tensor("rope_freqs.weight", &[(dh / 2) as u64], GgmlType::F32, f32s(&d));
            (g, &["rope_freqs.weight", "value 1"])
        },
        {
            let mut g = base.clone();
            g.set("llama.rope.scaling.type", strv("yarn")).set("llama.rope.scaling.factor", f32v(4.0));
            (g, &["llama.rope.scaling.type", "yarn"])
        },
    ];
    for (g, parts) in cases {
        let e = load_gguf_bytes(&g.bytes()).unwrap_err().to_string();
        assert!(parts.iter().all(|p| e.contains(p)), "{parts:?}: {e}");
    }
    // A linear scaling key is read; all-ones divisors are no scaling.
    let mut g = base.clone();
    g.set("llama.rope.scaling.type", strv("linear")).set("llama.rope.scaling.factor", f32v(4.0));
    assert_eq!(load_gguf_bytes(&g.bytes()).unwrap().cfg.rope_scaling, RopeScaling::Linear { factor: 4.0 });
    let mut g = base.clone();
    g.tensor("rope_freqs.weight", &[(dh / 2) as u64], GgmlType::F32, f32s(&vec![1.0; dh / 2]));
    assert_eq!(load_gguf_bytes(&g.bytes()).unwrap().cfg.rope_scaling, RopeScaling::None);
    // config.json: an unimplemented type is refused by name.
    let v = serde_json::json!({"vocab_size": 10, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "max_position_embeddings": 8, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}});
    let e = Config::from_json(v.as_object().unwrap()).unwrap_err().to_string();
    assert!(e.contains("rope_scaling") && e.contains("`yarn`"), "{e}");
}
