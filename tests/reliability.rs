//! Reliability: adapter limits, long sessions with flat memory, freeing on drop, device loss.

mod common;
use common::*;
use plt::generate::{Engine, FinishReason, GenerateOptions, TextSession};
use plt::gpu::{Gpu, GpuOptions};
use plt::load::{BufferId, LayerBuffer};
use plt::model::{Schedule, GpuModel, Logits, Session, SessionOptions};
use plt::sampling::SamplerConfig;
use plt::DType;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn own_gpu(opts: GpuOptions) -> Arc<Gpu> {
    Arc::new(Gpu::new_blocking(&opts).expect("an adapter"))
}

/// A lost device surfaces as an error from the next call, not a hang or a panic, and a new
/// device and session work afterwards.
#[test]
fn device_loss_is_an_error_and_recoverable() {
    let mut cfg = tiny();
    cfg.num_loops = 2;
    let w = weights(&cfg, 3, DType::F32, false);
    let gpu = own_gpu(GpuOptions::default());
    let m = Arc::new(GpuModel::new(gpu.clone(), &cfg, &w, None).unwrap());
    let mut s = Session::new(m, SessionOptions { batch: 1, context: 16, prefill_chunk: 8, kv_f16: false }).unwrap();
    s.prefill_blocking(0, &[1, 2, 3], Logits::Last).unwrap();
    gpu.device.destroy();
    let t = Instant::now();
    let r = s.decode_blocking(&[4], Schedule::Fused, true);
    assert!(t.elapsed() < Duration::from_secs(30), "the call returned promptly");
    let e = r.expect_err("a decode on a lost device fails");
    assert!(e.to_string().to_lowercase().contains("lost") || e.to_string().contains("GPU"), "{e}");
    assert!(s.decode_blocking(&[4], Schedule::Fused, true).is_err(), "and keeps failing");
    // A new device works.
    let gpu2 = own_gpu(GpuOptions::default());
    let m2 = Arc::new(GpuModel::new(gpu2, &cfg, &w, None).unwrap());
    let mut s2 = Session::new(m2, SessionOptions { batch: 1, context: 16, prefill_chunk: 8, kv_f16: false }).unwrap();
    let logits = s2.prefill_blocking(0, &[1, 2, 3], Logits::Last).unwrap();
    assert_eq!(logits.len(), cfg.vocab_size);
}

/// A device with small limits: a matrix past `max_storage_buffer_binding_size` is split into
/// windows of rows that fit (one dispatch each) and the model still computes the reference's
/// logits; a session buffer past the limit is an error that names the buffer and the limit.
#[test]
fn small_adapter_limits_split_weights_and_name_session_buffers() {
    let cfg = tiny(); // gate_up_proj: 144 x 40: 23040 bytes in f32, 11520 in f16
    let w = weights(&cfg, 4, DType::F32, false);
    let gpu = own_gpu(GpuOptions { max_storage_buffer_binding_size: Some(16384), ..Default::default() });
    assert_eq!(gpu.limits.max_storage_buffer_binding_size, 16384);
    let m = Arc::new(GpuModel::new(gpu.clone(), &cfg, &w, Some(DType::F32)).unwrap());
    assert_eq!(m.parts(BufferId::Layer(0, LayerBuffer::GateUpProj)), 2, "gate_up_proj in f32 needs two windows");
    let toks = [1, 2, 3, 4];
    let want = plt::reference::forward(&cfg, &w, &toks);
    let mut s = Session::new(m.clone(), SessionOptions { batch: 1, context: 8, prefill_chunk: 4, kv_f16: false }).unwrap();
    let got = s.prefill_blocking(0, &toks, Logits::Last).unwrap();
    let e = nmse(&got, &want[toks.len() - 1]);
    assert!(e < 1e-9, "windowed f32 model: nmse {e:e}");
    // A session whose buffers cannot fit the binding limit.
    let e = Session::new(m, SessionOptions { batch: 8, context: 256, prefill_chunk: 256, kv_f16: false }).err().expect("too big");
    let msg = e.to_string();
    assert!(msg.contains("max_storage_buffer_binding_size") && msg.contains("16384"), "{msg}");
    assert!(msg.contains("buffer `"), "names the buffer: {msg}");
}

/// Lets wgpu finish pending work and destroy dropped resources (and upload staging buffers).
fn settle(gpu: &Gpu) -> u64 {
    gpu.queue.submit([]);
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    gpu.live_buffer_bytes().unwrap_or_else(|| panic!("wgpu's buffer counters are not kept on {}", gpu.describe()))
}

/// Dropping a session (and then its model) gives their device memory back.
#[test]
fn dropping_frees_device_memory() {
    let gpu = own_gpu(GpuOptions::default());
    let base = settle(&gpu);
    let cfg = tiny();
    let w = weights(&cfg, 5, DType::F32, false);
    let m = Arc::new(GpuModel::new(gpu.clone(), &cfg, &w, None).unwrap());
    let with_model = settle(&gpu);
    let mut s = Session::new(m.clone(), SessionOptions { batch: 2, context: 64, prefill_chunk: 16, kv_f16: false }).unwrap();
    s.prefill_blocking(0, &[1, 2, 3], Logits::Last).unwrap();
    let with_session = settle(&gpu);
    assert!(with_session > with_model && with_model > base, "{base} {with_model} {with_session}");
    drop(s);
    assert_eq!(settle(&gpu), with_model, "the session's buffers are freed");
    drop(m);
    assert_eq!(settle(&gpu), base, "the model's buffers are freed");
}

/// 10,000 tokens in one session: the context shifts (keeps its newer half, re-prefilled) instead
/// of overflowing, and neither our allocations nor wgpu's live buffer memory grow after warm-up.
#[test]
fn ten_thousand_tokens_in_one_session_with_flat_memory() {
    let gpu = own_gpu(GpuOptions::default());
    let mut cfg = tiny();
    cfg.hidden_size = 16;
    cfg.num_attention_heads = 2;
    cfg.num_key_value_heads = 1;
    cfg.head_dim = 8;
    cfg.intermediate_size = 16;
    cfg.num_hidden_layers = 1;
    cfg.vocab_size = 257;
    cfg.num_loops = 2;
    cfg.window_left = 4;
    let w = weights(&cfg, 6, DType::F16, false);
    let tok = plt::tokenizer::Tokenizer::from_bytes(&serde_json::to_vec(&plt::init::tokenizer_json(257)).unwrap(), 257).unwrap();
    let e = Arc::new(Engine::from_parts(gpu.clone(), &cfg, &w, Some(tok), None, "t", &mut |_, _| {}).unwrap());
    let mut ts = TextSession::new(e, 64).unwrap();
    let opts = GenerateOptions {
        max_tokens: 10_000,
        sampler: SamplerConfig { temperature: 1.0, seed: 9, ..Default::default() },
        stop_at_eos: false,
        context_shift: true,
        ..Default::default()
    };
    // Warm up (first shift included), then measure.
    let mut g = pollster::block_on(plt::generate::Generator::start(&mut ts, &[3, 4, 5], opts)).unwrap_or_else(|e| panic!("{e}"));
    let mut n = 0usize;
    let (mut ours, mut live) = (0, None);
    let start = Instant::now();
    while let Some(p) = pollster::block_on(g.next_piece()).unwrap() {
        let _ = p;
        n = g.generated();
        if n == 200 {
            ours = gpu.allocated_bytes();
            live = gpu.live_buffer_bytes();
        }
        if n > 200 && n % 1000 == 0 {
            assert_eq!(gpu.allocated_bytes(), ours, "allocation after warm-up at token {n}");
            assert_eq!(gpu.live_buffer_bytes(), live, "live device memory grew at token {n}");
        }
    }
    let gen = g.finish();
    assert_eq!(gen.finish, FinishReason::MaxTokens);
    assert_eq!(gen.tokens.len(), 10_000);
    assert!(n >= 9_000);
    eprintln!("10,000 tokens in {:.1} s", start.elapsed().as_secs_f64());
}

/// Kernel options the adapter or the kernels cannot honour are errors naming the option, not a
/// silently different device: lanes per output outside 8/16/32; subgroups required where the
/// adapter has none of at least 8 (on an adapter that has them, the probe must have passed).
#[test]
fn kernel_options_are_checked() {
    let e = Gpu::new_blocking(&GpuOptions { decode_lanes: Some(12), ..Default::default() }).err().expect("12 lanes must be refused");
    assert!(e.to_string().contains("decode lanes must be 8, 16 or 32, not 12"), "{e}");
    match Gpu::new_blocking(&GpuOptions { subgroups: Some(true), ..Default::default() }) {
        Ok(g) => {
            let n = g.subgroup_size.expect("subgroups required and granted: a size");
            assert!(n >= 8 && n.is_power_of_two(), "{n}");
            assert!(g.subgroup_reduce(8) && !g.subgroup_reduce(n * 2));
        }
        Err(e) => assert!(e.to_string().contains("subgroups were required"), "{e}"),
    }
    let g = Gpu::new_blocking(&GpuOptions { subgroups: Some(false), ..Default::default() }).unwrap();
    assert_eq!(g.subgroup_size, None);
    assert!(!g.subgroup_reduce(8));
}

/// A sliding window far longer than any sequence (2^32 - 1 positions) costs the CPU decoder
/// only the positions it has seen: its rings grow with the sequence, and its logits still match
/// the full forward.
#[test]
fn huge_window_on_the_cpu_allocates_what_it_uses() {
    let mut v = serde_json::json!({
        "vocab_size": 37, "hidden_size": 16, "intermediate_size": 24,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 64, "plt_num_loops": 3, "plt_window_size": [u32::MAX, 0],
    });
    let cfg = plt::config::Config::from_json(v.as_object_mut().unwrap()).unwrap();
    assert_eq!(cfg.window_slots(), u32::MAX as usize + 1);
    let w = plt::init::random_weights(&cfg, &plt::init::InitOptions { seed: 3, ..Default::default() });
    let toks = tokens(6, cfg.vocab_size, 9);
    let want = plt::reference::forward(&cfg, &w, &toks);
    let mut d = plt::reference::Decoder::new(&cfg, &w);
    for (t, &tok) in toks.iter().enumerate() {
        let got = d.step(tok);
        assert!(nmse(&got, &want[t]) < 1e-12, "position {t}");
    }
}

/// Finite weights whose activations leave f32's range (embeddings of 1e18, whose squares still
/// sum within f32, and a final norm weight of 3e38, so the final norm and the lm_head overflow
/// whether the norm is folded into the matmul or not) give non-finite logits: prefill and
/// decode return an error naming the sequence, the position and the token id instead of the
/// numbers, with the positions advanced past the call (its caches were written). The same
/// model with its own weights gives finite logits. (WGSL lets an implementation assume that
/// no overflow happens; lavapipe, like IEEE hardware, gives infinities, which the check sees.
/// Computed from them, values are not defined: on lavapipe a later position's logits, whose
/// loop 1 reads loop 0's infinite carried state, come out as zeros. So only logits computed
/// from finite inputs are checked here: position 0 of clean caches.)
#[test]
fn non_finite_logits_are_errors_naming_sequence_and_position() {
    let mut cfg = tiny();
    cfg.num_loops = 2;
    let good = weights(&cfg, 5, DType::F32, false);
    let mut bad = good.clone();
    bad.embed_tokens.data.iter_mut().for_each(|x| *x = x.signum() * 1e18);
    bad.norm.data.iter_mut().for_each(|x| *x = 3e38);
    let gpu = gpu();
    let opts = SessionOptions { batch: 2, context: 16, prefill_chunk: 8, kv_f16: false };
    let ok = Arc::new(GpuModel::new(gpu.clone(), &cfg, &good, None).unwrap());
    let mut s = Session::new(ok, opts.clone()).unwrap();
    s.prefill_blocking(1, &[1, 2, 3], Logits::All).unwrap();
    s.decode_blocking(&[4, 5], Schedule::Fused, true).unwrap();

    let m = Arc::new(GpuModel::new(gpu, &cfg, &bad, None).unwrap());
    let mut s = Session::new(m, opts).unwrap();
    let e = s.prefill_blocking(1, &[1, 2, 3], Logits::All).unwrap_err();
    assert!(matches!(e, plt::Error::NonFinite(_)), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("prefill: sequence 1's logits at position 0 are not finite (token id"), "{msg}");
    assert!(msg.contains("reset"), "{msg}");
    assert_eq!(s.position(1), 3);
    let msg = s.decode_blocking(&[4, 5], Schedule::Fused, true).unwrap_err().to_string();
    assert!(msg.contains("decode: sequence 0's logits at position 0 are not finite"), "{msg}");
    assert_eq!((s.position(0), s.position(1)), (1, 4));
    // A reset sequence starts again from clean caches.
    s.reset(0).unwrap();
    let msg = s.prefill_blocking(0, &[6], Logits::Last).unwrap_err().to_string();
    assert!(msg.contains("prefill: sequence 0's logits at position 0 are not finite"), "{msg}");
    // Sampling on the device reads back ids only: the sampling kernel flags the rows instead.
    s.reset(0).unwrap();
    s.reset(1).unwrap();
    let msg = pollster::block_on(s.decode_sample(&[7, 8], Schedule::Fused, false)).unwrap_err().to_string();
    assert!(msg.contains("decode: sequence 0's logits at position 0 are not finite (found while sampling)"), "{msg}");
}

