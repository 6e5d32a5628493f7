//! The load plan (src/load/): every tensor placed where the device expects it, each file read
//! once front to back in bounded pieces (what a network stream can serve), and the device
//! upload writing exactly the bytes the graph reads.

mod common;
use plt::init::{named_tensors, random_weights, write_model, InitOptions};
use plt::load::{ByteSource, FileSource, LayerWeight, ModelSource, Place, WeightId};
use plt::model::GpuModel;
use plt::{Config, DType, Weights};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

fn tmp_dir(name: &str) -> PathBuf {
    common::tmp_dir("load_plan", name)
}

/// A valid single-file model directory plus its config and weights.
fn good_model(name: &str) -> (PathBuf, Config, Weights) {
    common::good_model("load_plan", name)
}

#[test]
fn the_plan_places_every_tensor() {
    let (dir, cfg, w) = good_model("plan");
    let model = plt::load::open(&ModelSource::from(&dir)).unwrap();
    let plan = &model.plan;
    assert_eq!(plan.cfg, cfg);
    assert_eq!(plan.tensors.len(), named_tensors(&w).len());
    assert!(plan.tensors.windows(2).all(|p| (p[0].file, p[0].offset + p[0].bytes) <= (p[1].file, p[1].offset)), "reading order");
    assert_eq!(plan.bytes_by_storage().iter().map(|(_, _, b)| b).sum::<u64>(), plan.file_bytes());
    assert!(plan.tokenizer.is_some());
    let (d, qd, kvd, h) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim(), cfg.num_attention_heads);
    let place = |l: LayerWeight| plan.tensors.iter().find(|t| t.weight == WeightId::Layer(1, l)).unwrap().target.place;
    assert_eq!(place(LayerWeight::QProj), Place::At(0));
    assert_eq!(place(LayerWeight::KProj), Place::At(qd * d));
    assert_eq!(place(LayerWeight::VProj), Place::At((qd + kvd) * d));
    assert_eq!(place(LayerWeight::VBias), Place::At(qd + kvd));
    assert_eq!(place(LayerWeight::GateProj), Place::Interleaved(0));
    assert_eq!(place(LayerWeight::UpProj), Place::Interleaved(1));
    // Hidden-state gate: weight [H, D] | bias [H] | gate_norm [D].
    assert_eq!(place(LayerWeight::PltGateBias), Place::At(h * d));
    assert_eq!(place(LayerWeight::PltGateNorm), Place::At(h * d + h));
    let labels: Vec<&str> = plan.buffers.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(
        labels[..8],
        ["layers.0.qkv_bias", "layers.0.plt_gate", "layers.0.input_layernorm", "layers.0.qkv_proj", "layers.0.o_proj",
         "layers.0.post_attention_layernorm", "layers.0.gate_up_proj", "layers.0.down_proj"]
    );
    assert_eq!(plan.buffers[3].elems, (qd + 2 * kvd) * d);
    let text = plan.to_string();
    for (name, _) in named_tensors(&w) {
        assert!(text.contains(&name), "the printed plan lists {name}");
    }
    assert!(text.contains("F32") && text.contains("gate_up_proj rows 2i+1"), "{text}");
    common::assert_same_weights(&model.read_weights().unwrap(), &w, "through the plan");
}

/// Every shard is read once, front to back (header, then tensors in offset order), in pieces of
/// at most 4 MiB however large a tensor is: what a network stream can serve.
#[test]
fn files_are_read_front_to_back_in_bounded_pieces() {
    let cfg = Config::from_json(
        serde_json::json!({"vocab_size": 9000, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 64})
        .as_object()
        .unwrap(),
    )
    .unwrap();
    let opts = InitOptions { seed: 9, shards: 2, ..Default::default() };
    let w = random_weights(&cfg, &opts);
    let dir = tmp_dir("stream-order");
    write_model(&dir, &cfg, &w, &opts).unwrap();
    let mut logs = Vec::new();
    let mut sources: Vec<Box<dyn ByteSource>> = Vec::new();
    for k in 1..=2 {
        let reads = Rc::new(RefCell::new(Vec::new()));
        let inner = FileSource::open(&dir.join(format!("model-{k:05}-of-00002.safetensors"))).unwrap();
        logs.push((inner.size(), reads.clone()));
        sources.push(Box::new(common::Recording { inner: Box::new(inner), reads }));
    }
    let model = plt::load::open_safetensors("two shards", cfg.clone(), sources).unwrap();
    common::assert_same_weights(&model.read_weights().unwrap(), &w, "streamed");
    for (size, reads) in logs {
        let reads = reads.borrow();
        let total: u64 = reads.iter().map(|&(_, n)| n as u64).sum();
        assert_eq!(total, size, "every byte read once");
        let largest = reads.iter().map(|&(_, n)| n).max().unwrap();
        assert!(largest <= 4 << 20, "a read of {largest} bytes");
    }
}

/// What the device must hold, built the straightforward way from host weights: q|k|v rows
/// concatenated, gate/up rows interleaved, the gate's parts in one buffer, missing biases as
/// zeros, matrices in `dtype` and vectors in f32, each buffer padded with zeros to 16 bytes.
fn expected_device_bytes(cfg: &Config, w: &Weights, dtype: DType) -> Vec<(String, Vec<u8>)> {
    let pad = |mut b: Vec<u8>| {
        b.resize(b.len().max(16).next_multiple_of(16), 0);
        b
    };
    let mat = |parts: &[&[f32]]| -> Vec<u8> {
        let all: Vec<f32> = parts.concat();
        pad(match dtype {
            DType::F16 => all.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
            _ => all.iter().flat_map(|x| x.to_le_bytes()).collect(),
        })
    };
    let vec = |v: &[f32]| pad(v.iter().flat_map(|x| x.to_le_bytes()).collect());
    let mut out = Vec::new();
    for (i, l) in w.layers.iter().enumerate() {
        let a = &l.self_attn;
        let p = |name: &str| format!("layers.{i}.{name}");
        let bias = |lin: &plt::weights::Linear, n: usize| lin.bias.as_ref().map(|t| t.data.clone()).unwrap_or(vec![0.0; n]);
        if a.q_proj.bias.is_some() || a.k_proj.bias.is_some() || a.v_proj.bias.is_some() {
            out.push((p("qkv_bias"), vec(&[bias(&a.q_proj, cfg.q_dim()), bias(&a.k_proj, cfg.kv_dim()), bias(&a.v_proj, cfg.kv_dim())].concat())));
        }
        if let Some(g) = a.plt_gate.as_ref().filter(|_| cfg.is_plt()) {
            let norm = g.gate_norm.as_ref().map(|t| t.data.clone()).unwrap_or_default();
            out.push((p("plt_gate"), vec(&[g.weight.data.clone(), g.bias.data.clone(), norm].concat())));
        }
        out.push((p("input_layernorm"), vec(&l.input_layernorm.data)));
        out.push((p("qkv_proj"), mat(&[&a.q_proj.weight.data, &a.k_proj.weight.data, &a.v_proj.weight.data])));
        out.push((p("o_proj"), mat(&[&a.o_proj.weight.data])));
        out.push((p("post_attention_layernorm"), vec(&l.post_attention_layernorm.data)));
        let d = cfg.hidden_size;
        let pairs: Vec<f32> = l.mlp.gate_proj.weight.data.chunks(d).zip(l.mlp.up_proj.weight.data.chunks(d)).flat_map(|(g, u)| [g, u].concat()).collect();
        out.push((p("gate_up_proj"), mat(&[&pairs])));
        out.push((p("down_proj"), mat(&[&l.mlp.down_proj.weight.data])));
    }
    out.push(("embed_tokens".into(), mat(&[&w.embed_tokens.data])));
    if let Some(t) = &w.lm_head {
        out.push(("lm_head".into(), mat(&[&t.data])));
    }
    out.push(("norm".into(), vec(&w.norm.data)));
    out
}

/// The device upload streams from the files into buffers made from the plan and writes the
/// bytes the graph reads: checked buffer by buffer on odd sizes (rows of odd length in f16,
/// where a row is not 4-byte aligned), both gate modes, biases, tied and untied heads.
#[test]
fn the_device_holds_exactly_the_planned_bytes() {
    let gpu = common::gpu();
    for (k, (file_dtype, tied, hidden, bias)) in
        [(DType::F32, false, true, true), (DType::F16, true, false, false), (DType::BF16, false, false, true)].into_iter().enumerate()
    {
        let cfg = Config::from_json(
            serde_json::json!({"vocab_size": 67, "hidden_size": 41, "intermediate_size": 23, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 10, "max_position_embeddings": 64,
                "tie_word_embeddings": tied, "plt_num_loops": 2, "plt_gate_use_hidden_states": hidden})
            .as_object()
            .unwrap(),
        )
        .unwrap();
        let opts = InitOptions { seed: 30 + k as u64, dtype: file_dtype, shards: 1 + k % 2, qkv_bias: bias };
        let w = random_weights(&cfg, &opts);
        let dir = tmp_dir(&format!("device-{k}"));
        write_model(&dir, &cfg, &w, &opts).unwrap();
        let host = Weights::load_dir(&dir, &cfg).unwrap();
        for dtype in [None, Some(DType::F32), Some(DType::F16)] {
            let src = ModelSource::from(&dir);
            let m = GpuModel::load(gpu.clone(), plt::load::open(&src).unwrap(), dtype, &mut |_| {}).unwrap();
            let want_dtype = match dtype.unwrap_or(file_dtype) {
                DType::F16 => DType::F16,
                _ => DType::F32,
            };
            assert_eq!(m.dtype, want_dtype);
            let got = pollster::block_on(m.read_back()).unwrap();
            let want = expected_device_bytes(&cfg, &host, want_dtype);
            let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
            assert_eq!(names(&got), names(&want), "{file_dtype:?} -> {dtype:?}: buffers");
            for ((name, g), (_, e)) in got.iter().zip(&want) {
                assert!(g == e, "{file_dtype:?} -> {dtype:?}: `{name}` differs ({} vs {} bytes)", g.len(), e.len());
            }
            // Weights already in memory go through the same sink.
            let from_host = GpuModel::new(gpu.clone(), &cfg, &host, dtype).unwrap();
            assert!(pollster::block_on(from_host.read_back()).unwrap() == got, "{file_dtype:?} -> {dtype:?}: GpuModel::new");
        }
    }
}
