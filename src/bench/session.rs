//! One measured session: a model variant at one (B, T). `open` creates it, measures its memory
//! against PLT-SPEC section 4 and prefills every sequence up to the decode window; `decode_all`
//! then decodes the window of several sessions together, round-robin step by step, each session
//! alternating its two slots (fused and sequential for PLT, the same mode twice otherwise),
//! warm-up steps first; `Live::records` turns the samples into report records.

use super::args::{Dtype, Readback, Settings, Size};
use super::report::{Dist, Kind, Kv, Prefill, Record};
use crate::config::Config;
use crate::cpu::{CpuModel, CpuSession, CpuSessionOptions};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::{GpuModel, Logits, Schedule, Session, SessionOptions};
use crate::rng::Rng;
use std::sync::Arc;
use std::time::Instant;

/// Waits for the device to finish, so dropped buffers are really freed before the next
/// measurement of the allocator.
pub fn settle(gpu: &Gpu) {
    let _ = gpu.device.poll(wgpu::PollType::wait_indefinitely());
}

/// Live device allocations whose label matches `pred`: (bytes, count), and the total bytes.
fn allocator_bytes(gpu: &Gpu, pred: impl Fn(&str) -> bool) -> Option<(u64, u64, u64)> {
    let r = gpu.device.generate_allocator_report()?;
    let m = r.allocations.iter().filter(|a| pred(&a.name));
    Some((m.clone().map(|a| a.size).sum(), m.count() as u64, r.total_allocated_bytes))
}

/// The session's KV buffers, by the labels `model::buffers` gives them: `layers.{i}.kv_cache` (the
/// global cache, or the L full caches of vanilla) and `layers.{i}.ring` (PLT's local rings).
fn is_kv_label(name: &str) -> bool {
    name.starts_with("layers.") && (name.ends_with(".kv_cache") || name.ends_with(".ring"))
}

/// A variant's model: on the GPU or on the CPU backend.
#[derive(Clone)]
pub enum BenchModel {
    Gpu(Arc<GpuModel>),
    Cpu(Arc<CpuModel>),
}

impl BenchModel {
    pub fn cfg(&self) -> &Config {
        match self {
            BenchModel::Gpu(m) => &m.cfg,
            BenchModel::Cpu(m) => &m.cfg,
        }
    }
    /// Bytes of the matrices one pass reads (every layer's and the head).
    pub fn weight_bytes(&self) -> u64 {
        match self {
            BenchModel::Gpu(m) => m.weight_bytes(),
            BenchModel::Cpu(m) => m.weight_bytes(),
        }
    }
    /// Bytes of the head (the embedding when tied), read once per step.
    pub fn head_bytes(&self) -> u64 {
        match self {
            BenchModel::Gpu(m) => m.head_bytes(),
            BenchModel::Cpu(m) => m.head().bytes(),
        }
    }
}

/// A model variant on the device, uploaded from its size's weights.
#[derive(Clone)]
pub struct Variant {
    pub kind: Kind,
    pub dtype: Dtype,
    pub model: BenchModel,
    /// Bytes the upload allocated (the runtime's counter; the CPU backend's weight bytes).
    pub model_bytes: u64,
}

/// The sequence(s) being measured.
enum Seq {
    Gpu(Box<Session>),
    /// One sequence (the CPU backend runs batch 1).
    Cpu(Box<CpuSession>),
}

/// One session being measured: a model variant at one (B, T).
pub struct Live {
    pub variant: Variant,
    session: Seq,
    batch: usize,
    context: usize,
    prefill: Prefill,
    kv: Kv,
    session_bytes: u64,
    session_device_bytes: Option<u64>,
    setup_s: f64,
    /// Next input token of each sequence.
    tokens: Vec<u32>,
    /// Per slot (fused, sequential): wall and GPU ms of the measured steps, (passes, rows).
    wall: [Vec<f64>; 2],
    gpu: [Option<Vec<f64>>; 2],
    /// Host ms up to the submit, and dispatches, per measured step.
    host: [Vec<f64>; 2],
    dispatches: [usize; 2],
    shape: [(usize, usize); 2],
    allocated_during_decode: u64,
    profile: [Option<Vec<(String, f64)>>; 2],
}

/// Creates a session of `variant` for (B, T), measures its memory, and prefills every sequence
/// up to the decode window (the prefill figures).
pub fn open(gpu: Option<&Arc<Gpu>>, set: &Settings, variant: &Variant, batch: usize, context: usize) -> Result<Live> {
    let model = match (&variant.model, gpu) {
        (BenchModel::Cpu(m), _) => return open_cpu(m, set, variant, batch, context),
        (BenchModel::Gpu(m), Some(_)) => m,
        (BenchModel::Gpu(_), None) => return Err(Error::Input("bench: a GPU model without its GPU".into())),
    };
    let gpu = gpu.expect("checked above");
    let kind = variant.kind;
    let cfg = model.cfg.clone();
    let (b, t) = (batch, context);
    let p = t - set.decode_positions();

    settle(gpu);
    let t_setup = Instant::now();
    let before = gpu.allocated_bytes();
    let dev_before = allocator_bytes(gpu, is_kv_label);
    let kv_f16 = set.kv_dtype.is_f16(variant.dtype);
    let mut session = Session::new(model.clone(), SessionOptions { batch: b, context: t, prefill_chunk: set.prefill_chunk, kv_f16 })?;
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(e.to_string()))?;
    gpu.check()?;
    let session_bytes = gpu.allocated_bytes() - before;
    let dev_after = allocator_bytes(gpu, is_kv_label);
    let (kv_alloc, kv_buffers, session_dev) = match (dev_before, dev_after) {
        (Some((k0, n0, t0)), Some((k1, n1, t1))) => (Some(k1.saturating_sub(k0)), n1.saturating_sub(n0), Some(t1.saturating_sub(t0))),
        _ => (None, 0, None),
    };

    // KV bytes: section 4 per sequence at T, with the element size the allocation implies. The
    // allocator may round each buffer up to its alignment: allow up to 256 bytes per buffer.
    let elems = cfg.kv_bytes(t, 1) as u64 * b as u64;
    let slack = 256 * kv_buffers;
    let fits = |a: u64, e: u64| a >= e * elems && a - e * elems <= slack;
    let elem = kv_alloc.and_then(|a| [4u64, 2, 1].into_iter().find(|&e| fits(a, e)));
    let spec_per_seq = cfg.kv_bytes(t, elem.unwrap_or(4) as usize) as u64;
    let kv = Kv {
        spec_bytes: spec_per_seq * b as u64,
        spec_bytes_per_sequence: spec_per_seq,
        elem_bytes: elem,
        allocated_bytes: kv_alloc,
        buffers: kv_buffers,
        matches_spec: kv_alloc.map(|a| fits(a, elem.unwrap_or(4))),
        formula: kind.kv_formula(),
    };

    // Prefill: random prompts, chunk by chunk so that every chunk's GPU time is summed. The same
    // prompts for every variant (the seed depends on B and T only).
    let mut rng = Rng::new(set.seed ^ 0x5eed ^ ((b as u64) << 32) ^ t as u64);
    let v = cfg.vocab_size as u64;
    let chunk = set.prefill_chunk;
    let prompts: Vec<Vec<u32>> = (0..b).map(|_| (0..p).map(|_| rng.below(v) as u32).collect()).collect();
    // A short untimed prefill first (first use of the prefill pipelines: more rows than the
    // decode kernels take), then start over.
    session.prefill_blocking(0, &prompts[0][..p.min(chunk).min(32)], Logits::None)?;
    session.reset(0)?;
    settle(gpu);
    let mut gpu_ns = Some(0u64);
    let tp = Instant::now();
    for (seq, prompt) in prompts.iter().enumerate() {
        for c in prompt.chunks(chunk) {
            session.prefill_blocking(seq, c, Logits::None)?;
            gpu_ns = gpu_ns.zip(session.stats.gpu_ns).map(|(a, x)| a + x);
        }
    }
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(e.to_string()))?;
    gpu.check()?;
    let wall_s = tp.elapsed().as_secs_f64();
    let prefill = Prefill {
        tokens: b * p,
        passes_per_chunk: session.stats.passes,
        wall_s,
        tokens_per_s: (b * p) as f64 / wall_s.max(1e-12),
        gpu_s: gpu_ns.map(|n| n as f64 * 1e-9),
        gpu_tokens_per_s: gpu_ns.map(|n| (b * p) as f64 / (n as f64 * 1e-9).max(1e-12)),
    };
    Ok(Live {
        variant: variant.clone(),
        session: Seq::Gpu(Box::new(session)),
        batch: b,
        context: t,
        prefill,
        kv,
        session_bytes,
        session_device_bytes: session_dev,
        setup_s: t_setup.elapsed().as_secs_f64(),
        tokens: (0..b).map(|_| rng.below(v) as u32).collect(),
        wall: [vec![], vec![]],
        gpu: [Some(vec![]), Some(vec![])],
        shape: [(0, 0); 2],
        allocated_during_decode: 0,
        profile: [None, None],
        host: [Vec::new(), Vec::new()],
        dispatches: [0, 0],
    })
}

/// A CPU backend session of `variant` for (1, T), prefilled up to the decode window.
fn open_cpu(model: &Arc<CpuModel>, set: &Settings, variant: &Variant, batch: usize, context: usize) -> Result<Live> {
    if batch != 1 {
        return Err(Error::Input(format!("the CPU backend runs one sequence (batch 1), not {batch}")));
    }
    let cfg = &model.cfg;
    let t = context;
    let p = t - set.decode_positions();
    let t_setup = Instant::now();
    let kv_f16 = set.kv_dtype.is_f16(variant.dtype);
    let mut session = CpuSession::new(model.clone(), CpuSessionOptions { context: t, kv_f16 })?;
    let session_bytes = session.cache_bytes() as u64;
    let elem = if kv_f16 { 2 } else { 4 };
    let spec_per_seq = cfg.kv_bytes(t, elem) as u64;
    let kv = Kv {
        spec_bytes: spec_per_seq,
        spec_bytes_per_sequence: spec_per_seq,
        elem_bytes: Some(elem as u64),
        allocated_bytes: Some(session.cache_bytes() as u64),
        buffers: 0,
        matches_spec: Some(session.cache_bytes() as u64 == spec_per_seq),
        formula: variant.kind.kv_formula(),
    };
    let mut rng = Rng::new(set.seed ^ 0x5eed ^ (1u64 << 32) ^ t as u64);
    let v = cfg.vocab_size as u64;
    let prompt: Vec<u32> = (0..p).map(|_| rng.below(v) as u32).collect();
    let tp = Instant::now();
    for c in prompt.chunks(set.prefill_chunk) {
        session.prefill_tokens(c)?;
    }
    let wall_s = tp.elapsed().as_secs_f64();
    let passes = if variant.kind.loops() > 1 { variant.kind.loops() } else { 1 };
    let prefill = Prefill { tokens: p, passes_per_chunk: passes, wall_s, tokens_per_s: p as f64 / wall_s.max(1e-12), gpu_s: None, gpu_tokens_per_s: None };
    Ok(Live {
        variant: variant.clone(),
        session: Seq::Cpu(Box::new(session)),
        batch: 1,
        context: t,
        prefill,
        kv,
        session_bytes,
        session_device_bytes: None,
        setup_s: t_setup.elapsed().as_secs_f64(),
        tokens: vec![rng.below(v) as u32],
        wall: [vec![], vec![]],
        gpu: [None, None],
        shape: [(0, 0); 2],
        allocated_during_decode: 0,
        profile: [None, None],
        host: [Vec::new(), Vec::new()],
        dispatches: [0, 0],
    })
}

/// One decode step of every sequence of `l`: wall ms, and the next tokens (greedy).
fn step(l: &mut Live, schedule: Schedule, logits_back: bool) -> Result<f64> {
    let b = l.batch;
    let v = l.variant.model.cfg().vocab_size;
    let ts = Instant::now();
    let (ms, next) = match &mut l.session {
        Seq::Cpu(s) => {
            // The logits are on the host either way; the greedy pick is part of the step.
            let logits = s.decode_logits(l.tokens[0], schedule)?;
            let id = crate::sampling::argmax(&logits);
            (ts.elapsed().as_secs_f64() * 1e3, vec![id])
        }
        Seq::Gpu(s) if logits_back => {
            let logits = s.decode_blocking(&l.tokens, schedule, true)?;
            let ms = ts.elapsed().as_secs_f64() * 1e3;
            // Greedy next tokens (outside the timing).
            (ms, logits.chunks(v).map(crate::sampling::argmax).collect::<Vec<u32>>())
        }
        Seq::Gpu(s) => {
            let (ids, _) = pollster::block_on(s.decode_sample(&l.tokens, schedule, false))?;
            (ts.elapsed().as_secs_f64() * 1e3, ids)
        }
    };
    if next.len() != b {
        return Err(Error::Gpu(format!("decode returned {} tokens for a batch of {b}", next.len())));
    }
    l.tokens = next;
    Ok(ms)
}

/// Decodes the sessions' windows, round-robin over the sessions step by step; within a session
/// the two slots alternate (fused / sequential for PLT). Warm-up steps first.
pub fn decode_all(gpu: Option<&Gpu>, set: &Settings, live: &mut [Live]) -> Result<()> {
    let schedules = [Schedule::Fused, Schedule::Sequential];
    let logits_back = set.readback == Readback::Logits;
    let timed = 2 * (set.warmup + set.steps);
    let allocated = |l: &Live| match &l.session {
        Seq::Gpu(_) => gpu.map_or(0, |g| g.allocated_bytes()),
        Seq::Cpu(s) => s.cache_bytes() as u64,
    };
    let alloc: Vec<u64> = live.iter().map(allocated).collect();
    for k in 0..timed {
        let slot = k % 2;
        for l in live.iter_mut() {
            let ms = step(l, schedules[slot], logits_back)?;
            let Seq::Gpu(session) = &l.session else {
                // CPU: (passes, rows over all passes): one pass of L rows fused, L passes of
                // one row otherwise.
                let loops = l.variant.kind.loops();
                let fused = schedules[slot] == Schedule::Fused && matches!(l.variant.kind, Kind::Plt(_));
                l.shape[slot] = if fused { (1, loops) } else { (loops, loops) };
                if k >= 2 * set.warmup {
                    l.wall[slot].push(ms);
                }
                continue;
            };
            if k >= 2 * set.warmup {
                l.wall[slot].push(ms);
                let g = session.stats.gpu_ns;
                l.gpu[slot] = l.gpu[slot].take().zip(g).map(|(mut xs, n)| {
                    xs.push(n as f64 * 1e-6);
                    xs
                });
            }
            l.shape[slot] = (session.stats.passes, session.stats.rows);
            if k >= 2 * set.warmup {
                if let Some(n) = session.stats.host_ns {
                    l.host[slot].push(n as f64 * 1e-6);
                }
                l.dispatches[slot] = session.stats.dispatches;
            }
        }
    }
    for (l, a) in live.iter_mut().zip(alloc) {
        l.allocated_during_decode = allocated(l).saturating_sub(a);
    }
    // One profiled step per slot (outside the statistics).
    if set.profile && gpu.is_some_and(|g| g.has_timestamps()) {
        for l in live.iter_mut() {
            let Seq::Gpu(session) = &mut l.session else { continue };
            session.set_profiling(true)?;
            for (slot, &schedule) in schedules.iter().enumerate() {
                step(l, schedule, logits_back)?;
                let Seq::Gpu(session) = &l.session else { continue };
                let mut by: Vec<(String, f64)> = Vec::new();
                for (label, ms) in session.profile() {
                    match by.iter_mut().find(|(x, _)| x == label) {
                        Some(e) => e.1 += ms,
                        None => by.push((label.clone(), *ms)),
                    }
                }
                l.profile[slot] = Some(by);
            }
            if let Seq::Gpu(session) = &mut l.session {
                session.set_profiling(false)?;
            }
        }
    }
    Ok(())
}

impl Live {
    /// One record per mode the session measured.
    pub fn records(self, s: &Size, set: &Settings) -> Vec<Record> {
        let cfg = self.variant.model.cfg();
        let modes = self.variant.kind.modes();
        let p = self.context - set.decode_positions();
        let timed = 2 * (set.warmup + set.steps);
        let wbytes = self.variant.model.weight_bytes();
        let head = self.variant.model.head_bytes();
        let layer_bytes = wbytes.saturating_sub(head);
        let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
        let matrix_params = (cfg.vocab_size * d + cfg.num_hidden_layers * ((cfg.q_dim() + 2 * cfg.kv_dim()) * d + d * cfg.q_dim() + 3 * f * d)).max(1);
        let pooled = modes[0] == modes[1];
        let slots: &[usize] = if pooled { &[0] } else { &[0, 1] };
        let mut out = Vec::new();
        for &slot in slots {
            // Single-mode sessions measured both slots with the same mode: pool them.
            let host = if pooled { [self.host[0].as_slice(), self.host[1].as_slice()].concat() } else { self.host[slot].clone() };
            let (w, g): (Vec<f64>, Option<Vec<f64>>) = if pooled {
                let w = [self.wall[0].as_slice(), self.wall[1].as_slice()].concat();
                let g = self.gpu[0].as_ref().zip(self.gpu[1].as_ref()).map(|(a, b)| [a.as_slice(), b.as_slice()].concat());
                (w, g)
            } else {
                (self.wall[slot].clone(), self.gpu[slot].clone())
            };
            let Some(wall_ms) = Dist::of(&w) else { continue };
            let gpu_ms = g.as_deref().and_then(Dist::of);
            let (passes, rows) = self.shape[slot];
            let step_bytes = passes as u64 * layer_bytes + head;
            let gbps = |ms: f64| step_bytes as f64 / (ms * 1e-3) / 1e9;
            out.push(Record {
                preset: s.name.clone(),
                dtype: self.variant.dtype,
                mode: modes[slot],
                loops: self.variant.kind.loops(),
                batch: self.batch,
                context: self.context,
                passes,
                rows,
                warmup: set.warmup,
                positions: [p + 2 * set.warmup, p + timed - 1],
                weight_gbps_wall: gbps(wall_ms.median),
                weight_gbps_gpu: gpu_ms.as_ref().map(|d| gbps(d.median)),
                wall_ms,
                gpu_ms,
                host_ms: Dist::of(&host),
                dispatches: self.dispatches[slot],
                wall_samples_ms: w,
                gpu_samples_ms: g,
                prefill: self.prefill.clone(),
                kv: self.kv.clone(),
                model_bytes: self.variant.model_bytes,
                session_bytes: self.session_bytes,
                session_device_bytes: self.session_device_bytes,
                allocated_during_decode: self.allocated_during_decode,
                setup_s: self.setup_s,
                weight_bytes_per_step: step_bytes,
                bits_per_weight: wbytes as f64 * 8.0 / matrix_params as f64,
                fraction_of_copy_bw: 0.0,
                profile: self.profile[slot].clone(),
            });
        }
        out
    }
}
