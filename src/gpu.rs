//! The GPU context: adapter and device choice, the pipeline cache (WGSL from `shaders/`,
//! specialised by `const` defines, validated with naga), bind groups by binding number,
//! dispatch descriptions, and buffer readback that works natively and in the browser.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// The WGSL sources, by file name. Every pipeline is `prelude + defines + file`.
pub const SHADERS: &[(&str, &str)] = &[
    ("prelude", include_str!("../shaders/prelude.wgsl")),
    ("embed", include_str!("../shaders/embed.wgsl")),
    ("norm", include_str!("../shaders/norm.wgsl")),
    ("reduce", include_str!("../shaders/reduce.wgsl")),
    ("reduce_u32", include_str!("../shaders/reduce_u32.wgsl")),
    ("matmul_common", include_str!("../shaders/matmul_common.wgsl")),
    ("matmul", include_str!("../shaders/matmul.wgsl")),
    ("matmul_vec", include_str!("../shaders/matmul_vec.wgsl")),
    ("matmul_quant", include_str!("../shaders/matmul_quant.wgsl")),
    ("quant", include_str!("../shaders/quant.wgsl")),
    ("rope", include_str!("../shaders/rope.wgsl")),
    ("attention", include_str!("../shaders/attention.wgsl")),
    ("elementwise", include_str!("../shaders/elementwise.wgsl")),
    ("subgroups", include_str!("../shaders/subgroups.wgsl")),
    ("sample", include_str!("../shaders/sample.wgsl")),
    ("copy", include_str!("../shaders/copy.wgsl")),
];

/// A compile-time constant prepended to a shader.
#[derive(Clone, Debug, PartialEq)]
pub enum Define {
    U32(u32),
    F32(f32),
    Bool(bool),
}

/// Defines of one pipeline, in a fixed order (part of the cache key).
#[derive(Clone, Debug, Default)]
pub struct Defines(Vec<(&'static str, Define)>);

impl Defines {
    pub fn new() -> Self {
        Defines(Vec::new())
    }
    pub fn u32(mut self, name: &'static str, v: usize) -> Self {
        self.0.push((name, Define::U32(v as u32)));
        self
    }
    pub fn f32(mut self, name: &'static str, v: f32) -> Self {
        self.0.push((name, Define::F32(v)));
        self
    }
    pub fn bool(mut self, name: &'static str, v: bool) -> Self {
        self.0.push((name, Define::Bool(v)));
        self
    }
    /// The names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|(n, _)| *n).collect()
    }
    /// These defines without `name` (tests of the errors a missing define gives).
    pub fn without(mut self, name: &str) -> Self {
        self.0.retain(|(n, _)| *n != name);
        self
    }
    /// Replaces the value of `name` with a u32 (tests of the errors a wrongly typed define gives).
    pub fn with_u32(self, name: &'static str, v: usize) -> Self {
        self.without(name).u32(name, v)
    }
    fn render(&self) -> String {
        let mut s = String::new();
        for (name, v) in &self.0 {
            match v {
                Define::U32(x) => s += &format!("const {name}: u32 = {x}u;\n"),
                // `{:?}` prints enough digits to round-trip, and always a decimal point or exponent.
                Define::F32(x) => s += &format!("const {name}: f32 = {x:?};\n"),
                Define::Bool(x) => s += &format!("const {name}: bool = {x};\n"),
            }
        }
        s
    }
}

/// Full WGSL source of a shader with its defines (also what the naga tests validate).
///
/// Two line directives, each at the start of a line: `// #include NAME` pulls in another file of
/// SHADERS (one level), and `// #if NAME` / `// #else` / `// #endif` keep one of two blocks by a
/// bool define NAME (nesting allowed). `enable` directives of the kept text move to the top,
/// ahead of the defines, where WGSL wants them.
pub fn shader_source(shader: &str, defines: &Defines) -> Result<String> {
    let err = |msg: String| Error::Shader { shader: shader.into(), entry: String::new(), msg };
    let find = |name: &str| SHADERS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s);
    let body = find(shader).ok_or_else(|| err("no such shader".into()))?;
    let mut text = String::new();
    for line in body.lines() {
        match line.strip_prefix("// #include ") {
            Some(name) => {
                text += find(name.trim()).ok_or_else(|| err(format!("includes `{}`, which is not a shader", name.trim())))?
            }
            None => text += line,
        }
        text.push('\n');
    }
    let flag = |name: &str| {
        defines.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()).ok_or_else(|| err(format!("`// #if {name}` needs a bool define `{name}`; none was given")))
    };
    let (mut enables, mut kept) = (String::new(), String::new());
    // (keep this block, keep the enclosing one) per open `#if`.
    let mut open: Vec<(bool, bool)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let live = open.last().map_or(true, |&(keep, outer)| keep && outer);
        let t = line.trim();
        if let Some(name) = t.strip_prefix("// #if ") {
            match flag(name.trim())? {
                Define::Bool(b) => open.push((b, live)),
                other => return Err(err(format!("`// #if {}` needs a bool define, not {other:?}", name.trim()))),
            }
        } else if t == "// #else" {
            let top = open.last_mut().ok_or_else(|| err(format!("line {}: `// #else` without `// #if`", i + 1)))?;
            top.0 = !top.0;
        } else if t == "// #endif" {
            open.pop().ok_or_else(|| err(format!("line {}: `// #endif` without `// #if`", i + 1)))?;
        } else if live {
            let out = if t.starts_with("enable ") { &mut enables } else { &mut kept };
            *out += line;
            out.push('\n');
        }
    }
    if !open.is_empty() {
        return Err(err("`// #if` without `// #endif`".into()));
    }
    Ok(format!("{enables}{}{}\n{kept}", defines.render(), find("prelude").unwrap_or_default()))
}

/// The source as naga (wgpu's native shader front end) takes it: naga 30 allows subgroup
/// operations without `enable subgroups;` and rejects that directive, which browsers require;
/// the line is commented out (line numbers stay the same).
pub fn naga_dialect(source: &str) -> String {
    source.replace("enable subgroups;", "// enable subgroups; (implied in naga)")
}

/// Parses and validates a shader (standard WGSL, as `shader_source` gives it) with naga; returns
/// the module, its info, and for `entry` the binding numbers (group 0) that the entry point uses.
pub fn validate_shader(shader: &str, entry: &str, source: &str) -> Result<(naga::Module, Vec<u32>)> {
    let err = |msg: String| Error::Shader { shader: shader.into(), entry: entry.into(), msg };
    let source = &naga_dialect(source);
    let module = naga::front::wgsl::parse_str(source).map_err(|e| err(e.emit_to_string(source)))?;
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default() | naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32 | naga::valid::Capabilities::SUBGROUP)
        .validate(&module)
        .map_err(|e| err(format!("{:?}", e.into_inner())))?;
    let index = module
        .entry_points
        .iter()
        .position(|e| e.name == entry)
        .ok_or_else(|| err("no such entry point".into()))?;
    let fi = info.get_entry_point(index);
    let mut used = Vec::new();
    for (h, gv) in module.global_variables.iter() {
        if let Some(b) = &gv.binding {
            if !fi[h].is_empty() {
                used.push(b.binding);
            }
        }
    }
    used.sort();
    Ok((module, used))
}

/// A compute pipeline and the bindings its entry point uses.
pub struct Pipeline {
    pub label: String,
    pub pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    used: Vec<u32>,
}

/// How many workgroups along one axis: fixed, or from the pass's row counts at encode time.
#[derive(Clone, Copy, Debug)]
pub enum Dim {
    Fixed(u32),
    /// ceil(rows / div)
    Rows(u32),
    /// ceil(logit_rows / div)
    LogitRows(u32),
}

/// One kernel launch: pipeline, bind group, grid.
pub struct Dispatch {
    pub pipeline: Arc<Pipeline>,
    pub bind_group: wgpu::BindGroup,
    pub grid: [Dim; 3],
}

impl Dispatch {
    /// Workgroup counts for a pass of `rows` rows, `logit_rows` of which give logits; an x count
    /// past the 65535 limit is split over y (kernels that can see it use `group_index`).
    pub fn workgroups(&self, rows: u32, logit_rows: u32) -> [u32; 3] {
        let mut n = [0u32; 3];
        for (i, d) in self.grid.iter().enumerate() {
            n[i] = match *d {
                Dim::Fixed(x) => x,
                Dim::Rows(div) => rows.div_ceil(div),
                Dim::LogitRows(div) => logit_rows.div_ceil(div),
            };
        }
        if n[0] > 65535 && n[1] == 1 {
            n[1] = n[0].div_ceil(65535);
            n[0] = 65535;
        }
        n
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, rows: u32, logit_rows: u32) {
        let [x, y, z] = self.workgroups(rows, logit_rows);
        if x == 0 || y == 0 || z == 0 {
            return;
        }
        pass.set_pipeline(&self.pipeline.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Options for choosing an adapter.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Pick the first adapter whose name contains this (case-insensitive).
    pub adapter: Option<String>,
    /// Ask for at most this `max_storage_buffer_binding_size` (tests of small adapters).
    pub max_storage_buffer_binding_size: Option<u64>,
    /// Ask for at most this `max_buffer_size`.
    pub max_buffer_size: Option<u64>,
    /// Split weight matrices into parts of at most this many bytes (default: the binding
    /// limit, `max_storage_buffer_binding_size`; tests set it small to exercise the split).
    pub weight_window: Option<u64>,
    /// Decode passes fold each RMSNorm into the matmul that reads it (one dispatch instead of
    /// two). Default: on for GPUs, off for CPU adapters (lavapipe), where the folded kernel's
    /// extra work per weight chunk costs more than the dispatch it saves (measured:
    /// docs/benchmarks.md).
    pub fuse_norms: Option<bool>,
    /// Decode matmuls reduce their lanes with subgroup shuffles instead of workgroup memory and
    /// barriers. Default (`None`): when the adapter has the `subgroups` feature with subgroups
    /// of at least 8 invocations and a probe dispatch confirms the lane layout the kernels rely on
    /// (`shaders/subgroups.wgsl`). `Some(true)` makes their absence an error; `Some(false)`: never.
    pub subgroups: Option<bool>,
    /// Threads per output in the decode matmuls (8, 16 or 32; 256 / lanes outputs per
    /// workgroup). Default (`None`): per matmul, `Gpu::decode_lanes`.
    pub decode_lanes: Option<u32>,
}

/// Smallest subgroup the shuffle reductions work with (8 lanes per output in the decode matmuls).
const SUBGROUP_MIN: u32 = 8;

/// The device, queue and caches shared by every model and session on one adapter.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// `GpuOptions::fuse_norms`, resolved for this adapter.
    pub fuse_norms: bool,
    /// The subgroup size the decode matmuls may count on (the probe's, capped by the adapter's
    /// minimum), when they use subgroup shuffles (`GpuOptions::subgroups`); `None`:
    /// workgroup-memory reductions. A matmul with more lanes per output than this reduces in
    /// workgroup memory.
    pub subgroup_size: Option<u32>,
    /// `GpuOptions::decode_lanes`.
    pub decode_lanes: Option<u32>,
    /// `GpuOptions::weight_window`.
    weight_window: Option<u64>,
    pipelines: Mutex<HashMap<String, Arc<Pipeline>>>,
    /// Bytes of every buffer created through this context (monotonic: a per-token allocation
    /// shows up as growth between decode steps).
    allocated: std::sync::atomic::AtomicU64,
    /// The first uncaptured device error (validation, out of memory), reported by `check`.
    error: Arc<Mutex<Option<String>>>,
    lost: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    /// Chooses an adapter (honouring `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and `opts`) and opens
    /// a device with the adapter's own limits.
    pub async fn new(opts: &GpuOptions) -> Result<Gpu> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = match &opts.adapter {
            Some(want) => {
                let want = want.to_lowercase();
                let all = instance.enumerate_adapters(wgpu::Backends::all()).await;
                let names: Vec<String> = all.iter().map(|a| a.get_info().name).collect();
                all.into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&want))
                    .ok_or_else(|| Error::NoAdapter(format!("no adapter matches `{want}`; found {names:?}")))?
            }
            None => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    ..Default::default()
                })
                .await
                .map_err(|e| Error::NoAdapter(e.to_string()))?,
        };
        let info = adapter.get_info();
        let mut limits = adapter.limits();
        if let Some(m) = opts.max_storage_buffer_binding_size {
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(m);
        }
        if let Some(m) = opts.max_buffer_size {
            limits.max_buffer_size = limits.max_buffer_size.min(m);
        }
        if let Some(l) = opts.decode_lanes {
            if ![8, 16, 32].contains(&l) {
                return Err(Error::Input(format!("decode lanes must be 8, 16 or 32, not {l}")));
            }
        }
        // Optional features, used when present: GPU timestamps for the benchmark, subgroups.
        let mut features = adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
        let sub_ok = adapter.features().contains(wgpu::Features::SUBGROUP) && info.subgroup_min_size >= SUBGROUP_MIN;
        if opts.subgroups == Some(true) && !sub_ok {
            return Err(Error::Device(format!(
                "subgroups were required, but {} has {} (subgroup sizes {}..={}; the kernels need at least {SUBGROUP_MIN})",
                info.name,
                if adapter.features().contains(wgpu::Features::SUBGROUP) { "the feature" } else { "no `subgroups` feature" },
                info.subgroup_min_size,
                info.subgroup_max_size
            )));
        }
        let want_subgroups = sub_ok && opts.subgroups != Some(false);
        if want_subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("plt"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Device(e.to_string()))?;
        let error = Arc::new(Mutex::new(None::<String>));
        let e2 = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = e2.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }));
        let lost = Arc::new(Mutex::new(None::<String>));
        let l2 = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            *l2.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{reason:?}: {msg}"));
        });
        log::info!("adapter: {} ({:?}, {:?}, {})", info.name, info.backend, info.device_type, info.driver);
        let fuse_norms = opts.fuse_norms.unwrap_or(info.device_type != wgpu::DeviceType::Cpu);
        let mut gpu = Gpu {
            device,
            queue,
            info,
            limits,
            features,
            fuse_norms,
            subgroup_size: None,
            decode_lanes: opts.decode_lanes,
            weight_window: opts.weight_window,
            pipelines: Mutex::new(HashMap::new()),
            allocated: Default::default(),
            error,
            lost,
        };
        if want_subgroups {
            // A probe that cannot even run (a browser's compiler refusing it, say) only turns the
            // subgroup path off.
            gpu.subgroup_size = match gpu.probe_subgroups().await {
                Ok(s) => s.map(|s| s.min(gpu.info.subgroup_min_size)),
                Err(e) => {
                    log::warn!("subgroup probe did not run ({e}): decode matmuls reduce in workgroup memory");
                    None
                }
            };
            if gpu.subgroup_size.is_none() && opts.subgroups == Some(true) {
                return Err(Error::Device(format!("subgroups were required, but {}'s subgroups failed the layout probe", gpu.info.name)));
            }
        }
        log::info!("subgroup reductions: {:?}", gpu.subgroup_size);
        Ok(gpu)
    }

    /// Runs `subgroups.wgsl`'s probe: one workgroup of 256 reports, per invocation, the subgroup
    /// size when its subgroup invocation id is its local index modulo that size (subgroups are
    /// runs of consecutive invocations) and a shuffle by xor 1, 2 and 4 reached the expected
    /// neighbours. Returns the size when every invocation agrees, it is a power of two >= 8.
    async fn probe_subgroups(&self) -> Result<Option<u32>> {
        let out = self.storage("subgroup_probe", 256 * 4)?;
        let d = crate::kernels::SubgroupProbe.dispatch(self, &out)?;
        self.run(&[&d], 1, 1)?;
        let got: Vec<u32> = self.read_storage_f32(&out, 256).await?.iter().map(|v| v.to_bits()).collect();
        let size = got[0];
        let ok = size >= SUBGROUP_MIN && size.is_power_of_two() && size <= 256 && got.iter().all(|&v| v == size);
        if !ok {
            log::warn!("subgroup probe failed ({:?}...): decode matmuls reduce in workgroup memory", &got[..16]);
        }
        Ok(ok.then_some(size))
    }

    pub fn new_blocking(opts: &GpuOptions) -> Result<Gpu> {
        pollster::block_on(Gpu::new(opts))
    }

    /// "name (backend, type, driver)".
    pub fn describe(&self) -> String {
        let i = &self.info;
        let driver = if i.driver.is_empty() { String::new() } else { format!(", {} {}", i.driver, i.driver_info) };
        format!("{} ({:?}, {:?}{})", i.name, i.backend, i.device_type, driver.trim_end())
    }

    /// Total bytes of the buffers created through this context so far.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self, bytes: u64) {
        self.allocated.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes of device buffers alive now, as wgpu's own counters see them (native backends;
    /// `None` where they are not kept, as on the web).
    pub fn live_buffer_bytes(&self) -> Option<u64> {
        let n = self.device.get_internal_counters().hal.buffer_memory.read();
        (n > 0).then_some(n as u64)
    }

    /// Whether the device was lost (destroyed, reset, or its driver failed).
    pub fn is_lost(&self) -> bool {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Threads per output of a decode matmul with `outputs` outputs: `GpuOptions::decode_lanes`,
    /// else 8 on CPU adapters (their "threads" are SIMD lanes: fewer, longer loops are cheaper)
    /// and for large matrices, and 32 on GPUs when 8 would leave fewer than 256 workgroups (a
    /// 576-wide projection gets 72 workgroups instead of 18, enough to spread over the SMs).
    pub fn decode_lanes(&self, outputs: usize) -> u32 {
        if let Some(l) = self.decode_lanes {
            return l;
        }
        if self.is_software() || outputs.div_ceil(32) >= 256 {
            8
        } else {
            32
        }
    }

    /// The adapter-dependent kernel choices in one line, e.g. "decode matmuls: 8 lanes per
    /// output (auto), subgroup reductions (size 8); norms folded: no".
    pub fn kernel_summary(&self) -> String {
        let lanes = match self.decode_lanes {
            Some(l) => format!("{l} lanes per output"),
            None if self.is_software() => "8 lanes per output (auto)".to_string(),
            None => "32 lanes per output below 8192 outputs, else 8 (auto)".to_string(),
        };
        let reduce = match self.subgroup_size {
            Some(n) => format!("subgroup reductions (size {n})"),
            None => "workgroup-memory reductions".to_string(),
        };
        format!("decode matmuls: {lanes}, {reduce}; norms folded: {}", if self.fuse_norms { "yes" } else { "no" })
    }

    /// Whether a decode matmul with `lanes` threads per output reduces by subgroup shuffles.
    pub fn subgroup_reduce(&self, lanes: u32) -> bool {
        self.subgroup_size.is_some_and(|s| s >= lanes)
    }

    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Returns (and clears) the first device error since the last check, or the device loss.
    pub fn check(&self) -> Result<()> {
        if let Some(l) = self.lost.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Err(Error::Gpu(format!("device lost ({l})")));
        }
        if let Some(e) = self.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(Error::Gpu(e));
        }
        Ok(())
    }

    /// The pipeline for `shader`'s `entry` with `defines`, built once and cached.
    pub fn pipeline(&self, shader: &str, entry: &str, defines: &Defines) -> Result<Arc<Pipeline>> {
        let source = shader_source(shader, defines)?;
        let key = format!("{shader}:{entry}\n{}", defines.render());
        if let Some(p) = self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(p.clone());
        }
        let (_, used) = validate_shader(shader, entry, &source)?;
        // Native wgpu compiles WGSL with naga; browsers take the standard text.
        #[cfg(not(target_arch = "wasm32"))]
        let source = naga_dialect(&source);
        let label = format!("{shader}:{entry}");
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        let layout = pipeline.get_bind_group_layout(0);
        let p = Arc::new(Pipeline { label, pipeline, layout, used });
        self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).insert(key, p.clone());
        Ok(p)
    }

    /// A dispatch of `pipeline` with buffers given by binding number; bindings the entry point
    /// does not use are left out (its layout has none), a used one that is missing is an error.
    pub fn dispatch(&self, pipeline: &Arc<Pipeline>, buffers: &[(u32, &wgpu::Buffer)], grid: [Dim; 3]) -> Result<Dispatch> {
        let mut entries = Vec::new();
        for &b in &pipeline.used {
            let buf = buffers.iter().find(|(n, _)| *n == b).map(|(_, buf)| *buf).ok_or_else(|| Error::Shader {
                shader: pipeline.label.clone(),
                entry: String::new(),
                msg: format!("binding {b} was not given a buffer"),
            })?;
            entries.push(wgpu::BindGroupEntry { binding: b, resource: buf.as_entire_binding() });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&pipeline.label),
            layout: &pipeline.layout,
            entries: &entries,
        });
        Ok(Dispatch { pipeline: pipeline.clone(), bind_group, grid })
    }

    /// A storage buffer of `bytes` (rounded up to 16), zero-initialised, checked against limits.
    pub fn storage(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
        let size = bytes.max(16).next_multiple_of(16);
        self.check_binding(label, size)?;
        self.count(size);
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }))
    }

    /// A storage buffer holding `data`.
    pub fn storage_init(&self, label: &str, data: &[u8]) -> Result<wgpu::Buffer> {
        let buf = self.storage(label, data.len() as u64)?;
        if !data.is_empty() {
            self.queue.write_buffer(&buf, 0, data);
        }
        Ok(buf)
    }

    pub fn uniform(&self, label: &str, data: &[u8]) -> wgpu::Buffer {
        self.count((data.len() as u64).max(16).next_multiple_of(16));
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (data.len() as u64).max(16).next_multiple_of(16),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, data);
        buf
    }

    /// A buffer the CPU reads results from.
    pub fn readback(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
        let size = bytes.max(16).next_multiple_of(16);
        if size > self.limits.max_buffer_size {
            return Err(Error::Limit {
                what: format!("buffer `{label}`"),
                limit: "max_buffer_size",
                needed: size,
                max: self.limits.max_buffer_size,
            });
        }
        self.count(size);
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// The most bytes one part of a weight matrix may hold (`GpuOptions::weight_window`, at most
    /// what one storage binding and one buffer may be).
    pub fn weight_window(&self) -> u64 {
        let max = (self.limits.max_storage_buffer_binding_size as u64).min(self.limits.max_buffer_size);
        self.weight_window.map_or(max, |w| w.min(max))
    }

    fn check_binding(&self, label: &str, size: u64) -> Result<()> {
        let max = (self.limits.max_storage_buffer_binding_size as u64).min(self.limits.max_buffer_size);
        if size > max {
            return Err(Error::Limit {
                what: format!("buffer `{label}`"),
                limit: "max_storage_buffer_binding_size",
                needed: size,
                max,
            });
        }
        Ok(())
    }

    /// Runs `dispatches` in one compute pass and one submit (kernel tests, one-off work).
    pub fn run(&self, dispatches: &[&Dispatch], rows: u32, logit_rows: u32) -> Result<()> {
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("run") });
        {
            let mut cp = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("run"), timestamp_writes: None });
            for d in dispatches {
                d.record(&mut cp, rows, logit_rows);
            }
        }
        self.queue.submit([enc.finish()]);
        self.check()
    }

    /// Copies a storage buffer's first `count` f32 values back (allocates; not for per-token use).
    pub async fn read_storage_f32(&self, buf: &wgpu::Buffer, count: usize) -> Result<Vec<f32>> {
        let bytes = (count * 4) as u64;
        let rb = self.readback("read_storage", bytes)?;
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("read") });
        enc.copy_buffer_to_buffer(buf, 0, &rb, 0, bytes.next_multiple_of(4));
        self.queue.submit([enc.finish()]);
        self.read_f32(&rb, count).await
    }

    /// Maps `buf` (a readback buffer) and copies out its first `bytes` bytes.
    pub async fn read(&self, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        self.read_range(buf, 0, bytes).await
    }

    /// Maps `buf` (a readback buffer) and copies out `bytes` bytes from `offset` (a multiple of 8).
    pub async fn read_range(&self, buf: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        let slice = buf.slice(offset..offset + bytes.max(4).next_multiple_of(4));
        let (tx, rx) = oneshot();
        slice.map_async(wgpu::MapMode::Read, move |r| tx.send(r));
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        }
        let mapped = rx.await;
        self.check()?;
        mapped.map_err(|e| Error::Gpu(format!("reading back `{buf:?}`: {e}")))?;
        let out = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("reading back `{buf:?}`: {e}")))?
            .to_vec();
        buf.unmap();
        Ok(out[..bytes as usize].to_vec())
    }

    pub async fn read_f32(&self, buf: &wgpu::Buffer, count: usize) -> Result<Vec<f32>> {
        let bytes = self.read(buf, (count * 4) as u64).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}

/// A one-value channel whose receiver is a future (buffer mapping completes by callback).
fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new((None, None::<Waker>)));
    (Sender(shared.clone()), Receiver(shared))
}

struct Sender<T>(Arc<Mutex<(Option<T>, Option<Waker>)>>);
struct Receiver<T>(Arc<Mutex<(Option<T>, Option<Waker>)>>);

impl<T> Sender<T> {
    fn send(self, v: T) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = Some(v);
        if let Some(w) = g.1.take() {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match g.0.take() {
            Some(v) => Poll::Ready(v),
            None => {
                g.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
