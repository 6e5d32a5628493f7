//! The run: planning the configurations, uploading the model variants, and measuring every
//! (size, dtype, B, T) with one session per variant, within the time limit.

use super::args::{auto_on_off, parse_backend, parse_lanes, resolve, BenchArgs, BenchCommand, Dtype, Settings, Target};
use super::copy::{copy_bandwidth, cpu_bandwidth};
use super::render::{markdown, svg};
use super::report::{ratios, write_json, AdapterReport, Host, Kind, ModelInfo, Report, Skip};
use super::session::{self, decode_all, settle, BenchModel, Variant};
use crate::cpu::{CpuModel, CpuOptions, Pool};
use crate::generate::Backend;
use crate::config::{Config, Looping};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::init::gguf::{gguf_bytes, GgufInitOptions};
use crate::init::{random_weights, InitOptions};
use crate::load::{BufferId, LayerBuffer, MemorySource};
use crate::model::GpuModel;
use crate::progress::Progress;
use crate::weights::{DType, Weights};
use std::sync::Arc;
use std::time::Instant;

/// One (size, dtype, B, T): a session per model variant.
#[derive(Clone, Debug)]
struct Unit {
    /// Index in `Settings::sizes`.
    size: usize,
    dtype: Dtype,
    batch: usize,
    context: usize,
    /// Relative cost, for the progress estimate and the time limit.
    weight: f64,
}

/// Runs `plt bench`: opens the adapter, measures its copy bandwidth, then every planned
/// configuration; writes the JSON (after every configuration, and complete at the end), prints
/// the markdown to stdout, and writes the optional markdown file and plot.
pub fn run(args: &BenchArgs) -> Result<()> {
    if let Some(BenchCommand::Compare(c)) = &args.command {
        return super::compare::run(c);
    }
    let t0 = Instant::now();
    let backend = parse_backend(args)?;
    resolve(args, Target::Gpu)?; // argument errors before opening the device
    let open_gpu = || {
        Gpu::new_blocking(&GpuOptions {
            adapter: args.adapter.clone(),
            subgroups: auto_on_off("--subgroups", &args.subgroups)?,
            fuse_norms: auto_on_off("--fuse-norms", &args.fuse_norms)?,
            decode_lanes: parse_lanes(&args.lanes)?,
            ..Default::default()
        })
    };
    let gpu: Option<Arc<Gpu>> = match backend {
        Backend::Cpu => None,
        Backend::Gpu => Some(Arc::new(open_gpu()?)),
        Backend::Auto => match open_gpu() {
            Ok(g) if !g.is_software() || args.adapter.is_some() => Some(Arc::new(g)),
            Ok(g) => {
                eprintln!("note: the only GPU adapter is a software one ({}): measuring the CPU backend (`--backend gpu` measures the adapter)", g.describe());
                None
            }
            Err(Error::NoAdapter(m)) if args.adapter.is_none() => {
                eprintln!("note: no GPU adapter ({m}): measuring the CPU backend");
                None
            }
            Err(e) => return Err(e),
        },
    };
    let target = match &gpu {
        Some(g) if g.is_software() => Target::Software,
        Some(_) => Target::Gpu,
        None => Target::Cpu,
    };
    let set = resolve(args, target)?;
    // The CPU backend's models share one thread pool.
    let pool = gpu.is_none().then(|| Arc::new(Pool::new(set.threads.unwrap_or(1))));
    let cpu_opts = CpuOptions { threads: set.threads, simd: None, pool: pool.clone(), f32_activations: false };
    let (adapter, copy) = match (&gpu, &pool) {
        (Some(gpu), _) => {
            eprintln!("plt bench on {}", gpu.describe());
            eprintln!("{}", gpu.kernel_summary());
            (adapter_report(gpu), copy_bandwidth(gpu, set.copy_bytes)?)
        }
        (None, Some(pool)) => {
            let simd = crate::cpu::Simd::detect();
            eprintln!("plt bench on the CPU backend ({} threads, {})", pool.threads(), simd.name());
            (cpu_adapter_report(pool, simd), cpu_bandwidth(pool, set.copy_bytes))
        }
        (None, None) => return Err(Error::Input("bench: no device".into())),
    };
    if gpu.is_some() {
        eprintln!(
            "copy bandwidth: {:.1} GB/s (buffer copy {:.1}, copy kernel {:.1} by {})",
            copy.gbps, copy.buffer_copy_gbps, copy.shader_copy_gbps, copy.shader_copy_timer
        );
    } else {
        eprintln!("memory bandwidth: {:.1} GB/s (copy {:.1}, read {:.1})", copy.gbps, copy.buffer_copy_gbps, copy.shader_copy_gbps);
    }

    let mut report = Report {
        schema: 1,
        plt_version: env!("CARGO_PKG_VERSION").to_string(),
        command: std::env::args().collect(),
        complete: false,
        elapsed_s: 0.0,
        adapter,
        host: Host {
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            loadavg_start: loadavg(),
            loadavg_end: None,
        },
        settings: set.clone(),
        copy_bandwidth: copy,
        models: Vec::new(),
        results: Vec::new(),
        ratios: Vec::new(),
        skipped: Vec::new(),
    };

    // Plan: one unit per (size, dtype, B, T), measuring every model variant there; what cannot
    // run is listed as skipped with the reason.
    let room = set.decode_positions();
    let max_ctx = set.context.iter().copied().max().unwrap_or(1);
    let mut kinds = vec![Kind::NonLooped];
    kinds.extend(set.loops.iter().map(|&l| Kind::Plt(l)));
    kinds.extend(set.loops.iter().map(|&l| Kind::Vanilla(l)));
    let mut units = Vec::new();
    for (si, s) in set.sizes.iter().enumerate() {
        for &dt in &set.dtype {
            for &b in &set.batch {
                for &t in &set.context {
                    let reason = if t <= room {
                        Some(format!("context {t} leaves no prompt before {room} decode positions (--steps/--warmup)"))
                    } else {
                        set.max_prefill_tokens
                            .filter(|&m| b * (t - room) > m)
                            .map(|m| format!("prefill of {} tokens is over --max-prefill-tokens {m}", b * (t - room)))
                    };
                    if let Some(reason) = reason {
                        for k in &kinds {
                            report.skipped.push(Skip::new(s, dt, *k, b, t, &reason));
                        }
                        continue;
                    }
                    // Cost model for the progress bar: prefill token-passes (attention grows with
                    // T) plus the decode steps, over every variant.
                    let l_all: usize = kinds.iter().map(|k| k.loops()).sum();
                    let params = (s.layers * (4 * s.hidden * s.hidden + 3 * s.hidden * s.ffn) + s.vocab * s.hidden) as f64;
                    let w = l_all as f64 * ((b * (t - room)) as f64 * (params + (t * s.layers * s.kv_heads * s.head_dim) as f64) + (room * b) as f64 * params)
                        + 2e7;
                    units.push(Unit { size: si, dtype: dt, batch: b, context: t, weight: w });
                }
            }
        }
    }
    let mut progress = Progress::new(units.iter().map(|u| u.weight).sum(), !args.no_progress);
    // Would work of this weight, at the pace so far, end after the time limit?
    let over_time = |p: &Progress, w: f64| set.time_limit_s.is_some_and(|lim| t0.elapsed().as_secs_f64() + w * p.seconds_per_unit() > lim);

    // One set of weights per size (generated once, with the PLT gates; the non-looped and vanilla
    // uploads leave them out), uploaded once per (dtype, variant); then per (B, T) one session
    // per variant, all prefilled, and their decode steps interleaved round-robin, so that every
    // variant sees the same conditions (a busy machine, clocks) at the same time.
    let mut weights = WeightCache::default();
    let mut i = 0;
    while i < units.len() {
        let (si, dt) = (units[i].size, units[i].dtype);
        let group_end = (i..units.len()).find(|&j| units[j].size != si || units[j].dtype != dt).unwrap_or(units.len());
        let s = &set.sizes[si];
        let mut models: Vec<Variant> = Vec::new();
        if !over_time(&progress, 0.0) {
            for &kind in &kinds {
                progress.show(&format!("{} {dt} {kind}: uploading weights", s.name), kind == Kind::NonLooped);
                match upload(gpu.as_ref(), &cpu_opts, &set, &mut weights, si, dt, kind, max_ctx) {
                    Ok((v, info)) => {
                        models.push(v);
                        report.models.push(info);
                    }
                    Err(e) => {
                        for u in &units[i..group_end] {
                            report.skipped.push(Skip::new(s, dt, kind, u.batch, u.context, &format!("model does not fit: {e}")));
                        }
                    }
                }
            }
        }
        for u in units[i..group_end].iter().cloned() {
            if over_time(&progress, u.weight) {
                for k in &kinds {
                    report.skipped.push(Skip::new(s, dt, *k, u.batch, u.context, &format!("--time-limit {:.0} s: would end too late at the pace so far", set.time_limit_s.unwrap_or(0.0))));
                }
                progress.advance(u.weight);
                continue;
            }
            let what = format!("{} {} B={} T={}", s.name, dt, u.batch, u.context);
            let mut live = Vec::new();
            for v in &models {
                progress.show(&format!("{what}: {} prefill", v.kind), v.kind == Kind::NonLooped);
                match session::open(gpu.as_ref(), &set, v, u.batch, u.context) {
                    Ok(l) => live.push(l),
                    Err(e) => report.skipped.push(Skip::new(s, dt, v.kind, u.batch, u.context, &format!("session failed: {e}"))),
                }
            }
            progress.show(&format!("{what}: decoding"), false);
            match decode_all(gpu.as_deref(), &set, &mut live) {
                Ok(()) => {
                    for l in live {
                        report.results.extend(l.records(s, &set));
                    }
                }
                Err(e) => {
                    for l in &live {
                        report.skipped.push(Skip::new(s, dt, l.variant.kind, u.batch, u.context, &format!("decode failed: {e}")));
                    }
                }
            }
            if let Some(g) = &gpu {
                settle(g);
            }
            progress.advance(u.weight);
            report.ratios = ratios(&report.results);
            report.elapsed_s = t0.elapsed().as_secs_f64();
            write_json(&args.json, &report)?;
        }
        drop(models);
        if let Some(g) = &gpu {
            settle(g);
        }
        i = group_end;
    }
    progress.finish();

    report.ratios = ratios(&report.results);
    report.elapsed_s = t0.elapsed().as_secs_f64();
    report.host.loadavg_end = loadavg();
    report.complete = true;
    write_json(&args.json, &report)?;
    let md = markdown(&report);
    print!("{md}");
    if let Some(p) = &args.markdown {
        std::fs::write(p, &md).map_err(|e| Error::Io { path: p.clone(), source: e })?;
    }
    if let Some(p) = &args.plot {
        std::fs::write(p, svg(&report)).map_err(|e| Error::Io { path: p.clone(), source: e })?;
    }
    eprintln!(
        "wrote {}{}{} in {:.1} s",
        args.json.display(),
        args.markdown.as_ref().map(|p| format!(", {}", p.display())).unwrap_or_default(),
        args.plot.as_ref().map(|p| format!(", {}", p.display())).unwrap_or_default(),
        report.elapsed_s
    );
    Ok(())
}

/// The random weights of one size (with the PLT gates; the non-looped and vanilla uploads leave
/// them out), kept while that size's variants are uploaded and dropped before the next size's
/// are generated: host weights for the float dtypes, an in-memory GGUF file per block format.
/// Owned by the run.
#[derive(Default)]
struct WeightCache {
    /// (index of the size in `Settings::sizes`, its weights).
    current: Option<(usize, Arc<Weights>)>,
    /// (index of the size, block format, the GGUF file's bytes).
    gguf: Option<(usize, Dtype, Arc<Vec<u8>>)>,
}

/// Bytes of memory available to this process (Linux: `MemAvailable`), where the system says.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// An error naming the need and what is available when `need` bytes for `what` are more than
/// the system says it has (the size is then skipped with that reason instead of the run being
/// killed for memory); nothing where the system does not say.
pub(crate) fn memory_guard(what: &str, need: u64, available: Option<u64>) -> Result<()> {
    match available {
        Some(avail) if need > avail => Err(Error::Input(format!(
            "{what} needs about {:.1} GiB of memory but only {:.1} GiB are available",
            need as f64 / (1u64 << 30) as f64,
            avail as f64 / (1u64 << 30) as f64
        ))),
        _ => Ok(()),
    }
}

impl WeightCache {
    /// The weights of `set.sizes[size]`, generated on first use (every tensor's values depend
    /// only on the seed and the tensor's name); in f32, rounded to f16 by an f16 upload.
    fn get(&mut self, set: &Settings, size: usize) -> Result<Arc<Weights>> {
        if let Some((i, w)) = &self.current {
            if *i == size {
                return Ok(w.clone());
            }
        }
        self.current = None; // free the previous size's weights first
        self.gguf = None;
        // Gates belong to the physical layer: the same for any L.
        let cfg = set.sizes[size].config(2, Looping::Plt, set.window, 2)?;
        memory_guard(&format!("{}'s random f32 weights", set.sizes[size].name), cfg.num_params() as u64 * 4, available_memory())?;
        let w = Arc::new(random_weights(&cfg, &InitOptions { seed: set.seed, dtype: DType::F32, shards: 1, qkv_bias: false }));
        self.current = Some((size, w.clone()));
        Ok(w)
    }

    /// The GGUF file of `set.sizes[size]` with matrices in block format `dtype` (and the PLT
    /// gates), written on first use by `init::gguf`.
    fn gguf(&mut self, set: &Settings, size: usize, dtype: Dtype) -> Result<Arc<Vec<u8>>> {
        if let Some((i, d, b)) = &self.gguf {
            if *i == size && *d == dtype {
                return Ok(b.clone());
            }
        }
        self.current = None;
        self.gguf = None;
        let cfg = set.sizes[size].config(2, Looping::Plt, set.window, 2)?;
        let (block, block_bytes) = dtype.ggml().block().unwrap_or((1, 4));
        let need = (cfg.num_params() as u64).div_ceil(block) * block_bytes;
        memory_guard(&format!("{}'s random {dtype} GGUF file", set.sizes[size].name), need, available_memory())?;
        let bytes = Arc::new(gguf_bytes(&cfg, &GgufInitOptions { seed: set.seed, matrix_type: dtype.ggml(), qkv_bias: false })?);
        self.gguf = Some((size, dtype, bytes.clone()));
        Ok(bytes)
    }
}

/// Uploads variant `kind` of `set.sizes[size]` in `dtype` (to the GPU, or into the CPU
/// backend's memory when there is no `gpu`): the model and its report entry.
#[allow(clippy::too_many_arguments)]
fn upload(gpu: Option<&Arc<Gpu>>, cpu: &CpuOptions, set: &Settings, weights: &mut WeightCache, size: usize, dtype: Dtype, kind: Kind, max_ctx: usize) -> Result<(Variant, ModelInfo)> {
    let s = &set.sizes[size];
    let cfg = kind.config(s, set, max_ctx)?;
    let source = match dtype.storage() {
        Some(_) => None,
        None => Some(weights.gguf(set, size, dtype)?),
    };
    let w = match source {
        Some(_) => None,
        None => Some(weights.get(set, size)?),
    };
    // The file's blocks kept (no dtype), under this variant's config.
    fn open_gguf<'a>(bytes: &'a [u8], name: String, cfg: &Config) -> Result<crate::load::OpenModel<'a>> {
        let src = Box::new(MemorySource::new("bench.gguf", bytes));
        crate::gguf::open(src, name, Some(cfg.clone())).map(|(open, _)| open)
    }
    let name = format!("{} {dtype} (random GGUF)", s.name);
    // The model's copy of the weights: in host memory for the CPU backend and a software adapter.
    let host_copy = gpu.is_none_or(|g| g.info.device_type == wgpu::DeviceType::Cpu);
    if host_copy {
        let need = match (dtype.storage(), &source) {
            (_, Some(bytes)) => bytes.len() as u64,
            (Some(DType::F32), None) => cfg.num_params() as u64 * 4,
            (_, None) => cfg.num_params() as u64 * 2,
        };
        memory_guard(&format!("{} {dtype} {kind}", s.name), need, available_memory())?;
    }
    let t = Instant::now();
    let Some(gpu) = gpu else {
        let model = match (&w, &source) {
            (Some(w), _) => CpuModel::from_weights(&cfg, w, dtype.storage(), cpu)?,
            (None, Some(bytes)) => CpuModel::load(open_gguf(bytes, name, &cfg)?, None, cpu, &mut |_| {})?,
            (None, None) => return Err(Error::Input("bench: no weights".into())),
        };
        let info = model_info(s, dtype, kind, &cfg, model.weight_bytes(), model.head().bytes(), model.formats(), model.total_bytes(), t);
        let model_bytes = info.model_bytes;
        return Ok((Variant { kind, dtype, model: BenchModel::Cpu(Arc::new(model)), model_bytes }, info));
    };
    settle(gpu);
    let before = gpu.allocated_bytes();
    let model = match (&w, &source) {
        (Some(w), _) => GpuModel::new(gpu.clone(), &cfg, w, dtype.storage())?,
        (None, Some(bytes)) => GpuModel::load(gpu.clone(), open_gguf(bytes, name, &cfg)?, None, &mut |_| {})?,
        (None, None) => return Err(Error::Input("bench: no weights".into())),
    };
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(e.to_string()))?;
    gpu.check()?;
    let model_bytes = gpu.allocated_bytes() - before;
    let mut formats = std::collections::BTreeMap::new();
    for (id, _) in matrix_buffers(&cfg) {
        for (f, bytes) in model.part_bytes(id) {
            *formats.entry(f.name().to_string()).or_insert(0u64) += bytes;
        }
    }
    let info = model_info(s, dtype, kind, &cfg, model.weight_bytes(), model.head_bytes(), formats, model_bytes, t);
    Ok((Variant { kind, dtype, model: BenchModel::Gpu(Arc::new(model)), model_bytes }, info))
}

/// The report entry of an uploaded model.
#[allow(clippy::too_many_arguments)]
fn model_info(
    s: &super::args::Size,
    dtype: Dtype,
    kind: Kind,
    cfg: &Config,
    weight_bytes: u64,
    head_bytes: u64,
    formats: std::collections::BTreeMap<String, u64>,
    model_bytes: u64,
    started: Instant,
) -> ModelInfo {
    let matrix_params = matrix_params(cfg);
    ModelInfo {
        preset: s.name.clone(),
        dtype,
        model: kind,
        loops: kind.loops(),
        parameters: cfg.num_params(),
        weight_bytes,
        matrix_params,
        bits_per_weight: weight_bytes as f64 * 8.0 / matrix_params as f64,
        head_bytes,
        formats,
        model_bytes,
        upload_s: started.elapsed().as_secs_f64(),
    }
}

/// The matrix buffers one pass reads and their weights: every layer's four, and the lm_head
/// (the embedding when tied).
fn matrix_buffers(cfg: &Config) -> Vec<(BufferId, usize)> {
    let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
    let head = if cfg.tie_word_embeddings { BufferId::EmbedTokens } else { BufferId::LmHead };
    let mut out = vec![(head, cfg.vocab_size * d)];
    for i in 0..cfg.num_hidden_layers {
        out.push((BufferId::Layer(i, LayerBuffer::QkvProj), (cfg.q_dim() + 2 * cfg.kv_dim()) * d));
        out.push((BufferId::Layer(i, LayerBuffer::OProj), d * cfg.q_dim()));
        out.push((BufferId::Layer(i, LayerBuffer::GateUpProj), 2 * f * d));
        out.push((BufferId::Layer(i, LayerBuffer::DownProj), d * f));
    }
    out
}

/// Weights of the matrices one pass reads (what `GpuModel::weight_bytes` counts the bytes of).
fn matrix_params(cfg: &Config) -> u64 {
    matrix_buffers(cfg).iter().map(|(_, n)| *n as u64).sum()
}

/// The load averages over 1, 5 and 15 minutes, where the system reports them.
fn loadavg() -> Option<[f64; 3]> {
    let t = std::fs::read_to_string("/proc/loadavg").ok()?;
    let v: Vec<f64> = t.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect();
    (v.len() == 3).then(|| [v[0], v[1], v[2]])
}

fn feature_names(f: wgpu::Features) -> Vec<String> {
    f.iter_names().map(|(n, _)| n.to_string()).collect()
}

/// The CPU backend in the report's adapter fields: the CPU's model name, its threads and
/// instruction set.
fn cpu_adapter_report(pool: &Pool, simd: crate::cpu::Simd) -> AdapterReport {
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|n| n.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let describe = format!("CPU backend: {name} ({} threads, {})", pool.threads(), simd.name());
    AdapterReport {
        name,
        backend: "cpu".into(),
        device_type: "Cpu".into(),
        driver: "plt CPU backend".into(),
        driver_info: simd.name().into(),
        vendor: 0,
        device: 0,
        describe,
        software: false,
        timestamps: false,
        adapter_features: vec![simd.name().into()],
        device_features: vec![format!("{} threads", pool.threads())],
        max_storage_buffer_binding_size: 0,
        max_buffer_size: 0,
        max_compute_workgroup_storage_size: 0,
        max_compute_invocations_per_workgroup: 0,
        allocator_report: false,
        subgroup_reduction: None,
        fuse_norms: false,
        decode_lanes: None,
    }
}

/// The adapter of `gpu`, its limits and the kernel choices the runtime made for it.
fn adapter_report(gpu: &Gpu) -> AdapterReport {
    let i = &gpu.info;
    // `Gpu` keeps only the features it enabled; the adapter's full set comes from
    // enumerating the adapters again and finding the same one.
    let adapter_features = pollster::block_on(async {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        instance
            .enumerate_adapters(wgpu::Backends::all())
            .await
            .into_iter()
            .find(|a| {
                let o = a.get_info();
                o.name == i.name && o.backend == i.backend && o.device == i.device && o.vendor == i.vendor
            })
            .map(|a| feature_names(a.features()))
    })
    .unwrap_or_else(|| feature_names(gpu.features));
    AdapterReport {
        name: i.name.clone(),
        backend: format!("{:?}", i.backend),
        device_type: format!("{:?}", i.device_type),
        driver: i.driver.clone(),
        driver_info: i.driver_info.clone(),
        vendor: i.vendor,
        device: i.device,
        describe: gpu.describe(),
        software: gpu.is_software(),
        timestamps: gpu.has_timestamps(),
        adapter_features,
        device_features: feature_names(gpu.features),
        max_storage_buffer_binding_size: gpu.limits.max_storage_buffer_binding_size,
        max_buffer_size: gpu.limits.max_buffer_size,
        max_compute_workgroup_storage_size: gpu.limits.max_compute_workgroup_storage_size,
        max_compute_invocations_per_workgroup: gpu.limits.max_compute_invocations_per_workgroup,
        allocator_report: gpu.device.generate_allocator_report().is_some(),
        subgroup_reduction: gpu.subgroup_size,
        fuse_norms: gpu.fuse_norms,
        decode_lanes: gpu.decode_lanes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_guard_names_the_need_and_what_is_available() {
        let e = memory_guard("llama-3.2-1b f32", 5 << 30, Some(2 << 30)).unwrap_err().to_string();
        assert!(e.contains("llama-3.2-1b f32") && e.contains("5.0 GiB") && e.contains("2.0 GiB"), "{e}");
        assert!(memory_guard("x", 1 << 30, Some(2 << 30)).is_ok());
        assert!(memory_guard("x", u64::MAX, None).is_ok());
    }
}
