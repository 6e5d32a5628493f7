//! The PLT forward graph on the GPU (PLT-SPEC sections 3, 5 and 6).
//!
//! `GpuModel` holds the weights on one device; a `Session` holds everything that one batch of
//! sequences needs (caches of section 4, scratch buffers, dispatch lists), created once and
//! reused: nothing is allocated per token, and each call is one command buffer, one submit.
//!
//! Every pass runs the same dispatch list over R rows; a row is one (sequence, loop, position)
//! and carries its own metadata (`Row`), so one graph serves
//! - prefill: L passes over a chunk of prompt tokens (one per loop, section 3),
//! - the fused decode step: ONE pass of B*L rows, loop-major (row l*B + b), section 5,
//! - sequential decode: L passes of B rows (the reference for the fused step),
//! - vanilla looped mode: L passes of B rows, each loop on its own full cache (section 6).

use crate::config::{Config, GateMode, Looping};
use crate::error::{Error, Result};
use crate::gpu::{Defines, Dim, Dispatch, Gpu};
use crate::sampling::{SamplerConfig, MAX_PENALTY_WINDOW};
use crate::weights::{DType, Weights};
use std::sync::Arc;

/// "No such row/slot" in `Row` fields.
pub const NONE: u32 = u32::MAX;
/// Above this many rows a pass uses the tiled matmul; at or below it, the row-sharing one.
const ROWS_KERNEL_MAX: u32 = 16;
/// Offset of the sampled ids in the readback buffer (after the timestamps).
const CHOSEN_AT: u64 = 16;

/// Per-row metadata, mirrored by `struct Row` in shaders/prelude.wgsl (see there for fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Row {
    pub pos: u32,
    pub lp: u32,
    pub seq: u32,
    pub token: u32,
    pub kv_slot: u32,
    pub attn_slot: u32,
    pub ring: u32,
    pub fresh: u32,
    pub ring_write: u32,
    pub csrc: u32,
    pub cdst: u32,
    pub e_scale: f32,
    pub c_scale: f32,
    /// The next row of this row's attention group, 0 for none (`group_attention_rows`).
    pub gnext: u32,
    /// 1 when an earlier row of the pass leads this row's attention group.
    pub gfollow: u32,
    pub _pad: u32,
}

/// Rows per attention group (the `RG` define of shaders/attention.wgsl).
pub const ATTN_GROUP_ROWS: usize = 4;

/// Decode passes of sessions whose context exceeds this split the global attention over
/// positions (flash-decoding: `attention` per split, then `attention_combine`).
pub const ATTN_SPLIT_MIN: usize = 128;
/// At most this many splits per row (longer contexts get longer splits).
pub const ATTN_MAX_SPLITS: usize = 64;

/// (positions per split, splits) of the global attention in a session of `context` positions,
/// or None when it does not split (see `ATTN_SPLIT_MIN`).
pub fn attention_split(context: usize) -> Option<(usize, usize)> {
    if context <= ATTN_SPLIT_MIN {
        return None;
    }
    let split = ATTN_SPLIT_MIN.max(context.div_ceil(ATTN_MAX_SPLITS)).next_multiple_of(64);
    Some((split, context.div_ceil(split)))
}

/// Links the rows of one pass that attend to the same cache slot into groups of up to
/// `ATTN_GROUP_ROWS` (in row order), so that one attention workgroup reads each cached key and
/// value once for the whole group: in a fused PLT decode pass, the L loops of a sequence (loops
/// >= 1 attend to loop 0's cache); in a prefill chunk, consecutive positions. Rows left at the
/// zeroed defaults each attend alone.
pub fn group_attention_rows(rows: &mut [Row]) {
    // (slot, leader's last row, rows in the group) of the open groups.
    let mut open: Vec<(u32, usize, usize)> = Vec::new();
    for i in 0..rows.len() {
        rows[i].gnext = 0;
        rows[i].gfollow = 0;
        let slot = rows[i].attn_slot;
        match open.iter_mut().find(|g| g.0 == slot) {
            Some(g) if g.2 < ATTN_GROUP_ROWS => {
                rows[g.1].gnext = i as u32;
                rows[i].gfollow = 1;
                g.1 = i;
                g.2 += 1;
            }
            Some(g) => *g = (slot, i, 1),
            None => open.push((slot, i, 1)),
        }
    }
}

/// Per-pass values, mirrored by `struct Pass` in shaders/prelude.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PassInfo {
    pub rows: u32,
    pub logit_row0: u32,
    pub logit_rows: u32,
    pub seq0: u32,
}

/// Per-sequence sampler settings, mirrored by `SampleParams` in shaders/sample.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct SampleParams {
    temperature: f32,
    top_k: u32,
    top_p: f32,
    min_p: f32,
    penalty: f32,
    hist_len: u32,
    seed_lo: u32,
    seed_hi: u32,
    step: u32,
    _pad: [u32; 3],
}

/// How a decode step of a PLT model schedules its L loops on the device (the model's wiring,
/// PLT or vanilla, is `config::Looping`; vanilla models always run L passes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// One pass of B*L rows sharing every weight read (PLT-SPEC section 5).
    Fused,
    /// L passes of B rows: the same numbers, L times the weight reads.
    Sequential,
}

impl Schedule {
    /// `fused` or `sequential`; `parallel` is accepted for `fused` (the CLI's older spelling).
    pub fn parse(s: &str) -> Option<Schedule> {
        match s {
            "parallel" | "fused" => Some(Schedule::Fused),
            "sequential" => Some(Schedule::Sequential),
            _ => None,
        }
    }
}

/// Which logits a prefill returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    None,
    Last,
    All,
}

/// Weights on the device. Matrices are stored as f32 or packed f16; vectors as f32.
pub struct GpuModel {
    pub cfg: Config,
    pub gpu: Arc<Gpu>,
    /// Storage dtype of the matrices on the device (F32 or F16).
    pub dtype: DType,
    embed: wgpu::Buffer,           // [V, D]
    lm_head: Option<wgpu::Buffer>, // [V, D]; None: tied to `embed`
    norm: wgpu::Buffer,            // [D]
    layers: Vec<GpuLayer>,
    dummy: wgpu::Buffer,
}

struct GpuLayer {
    input_layernorm: wgpu::Buffer,          // [D]
    qkv_proj: wgpu::Buffer,                 // [H*Dh + 2*Hkv*Dh, D]: q_proj | k_proj | v_proj rows
    qkv_bias: Option<wgpu::Buffer>,         // [H*Dh + 2*Hkv*Dh]
    o_proj: wgpu::Buffer,                   // [D, H*Dh]
    post_attention_layernorm: wgpu::Buffer, // [D]
    gate_up_proj: wgpu::Buffer,             // [2F, D]: rows gate_0, up_0, gate_1, up_1, ..
    down_proj: wgpu::Buffer,                // [D, F]
    plt_gate: Option<wgpu::Buffer>,         // [H*GW] weight | [H] bias | [D] gate_norm
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

/// Rows of `a` and `b` (both [n, k]) alternated: a_0, b_0, a_1, b_1, .. (the gate/up pairs the
/// GLU epilogue of the decode matmul pairs up; see shaders/matmul_vec.wgsl).
fn interleave_rows(a: &[f32], b: &[f32], k: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    for (ra, rb) in a.chunks_exact(k).zip(b.chunks_exact(k)) {
        out.extend_from_slice(ra);
        out.extend_from_slice(rb);
    }
    out
}

impl GpuModel {
    /// Uploads `w`. `dtype` is the matrices' device storage: F32 or F16 (BF16 is stored as F32);
    /// `None` keeps F16 for F16 checkpoints and F32 otherwise.
    pub fn new(gpu: Arc<Gpu>, cfg: &Config, w: &Weights, dtype: Option<DType>) -> Result<GpuModel> {
        GpuModel::new_with_progress(gpu, cfg, w, dtype, &mut |_| {})
    }

    /// `new`, calling `progress(fraction)` as layers are uploaded.
    pub fn new_with_progress(
        gpu: Arc<Gpu>,
        cfg: &Config,
        w: &Weights,
        dtype: Option<DType>,
        progress: &mut dyn FnMut(f32),
    ) -> Result<GpuModel> {
        cfg.validate()?;
        if w.layers.len() != cfg.num_hidden_layers {
            return Err(Error::Input(format!(
                "the weights have {} layers, the config {}",
                w.layers.len(),
                cfg.num_hidden_layers
            )));
        }
        let dtype = match dtype.unwrap_or(w.dtype) {
            DType::F16 => DType::F16,
            _ => DType::F32,
        };
        let mat = |label: &str, parts: &[&[f32]]| -> Result<wgpu::Buffer> {
            let bytes: Vec<u8> = match dtype {
                DType::F16 => {
                    let mut h: Vec<half::f16> =
                        parts.iter().flat_map(|p| p.iter().map(|&x| half::f16::from_f32(x))).collect();
                    if h.len() % 2 == 1 {
                        h.push(half::f16::ZERO);
                    }
                    bytemuck::cast_slice(&h).to_vec()
                }
                _ => parts.iter().flat_map(|p| f32_bytes(p)).collect(),
            };
            gpu.storage_init(label, &bytes)
        };
        let vec = |label: &str, v: &[f32]| gpu.storage_init(label, &f32_bytes(v));
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for (i, l) in w.layers.iter().enumerate() {
            let a = &l.self_attn;
            let (q, k, v) = (&a.q_proj, &a.k_proj, &a.v_proj);
            let qkv_bias = if q.bias.is_some() || k.bias.is_some() || v.bias.is_some() {
                let b = |lin: &crate::weights::Linear, n: usize| {
                    lin.bias.as_ref().map(|t| t.data.clone()).unwrap_or_else(|| vec![0.0; n])
                };
                let all = [b(q, cfg.q_dim()), b(k, cfg.kv_dim()), b(v, cfg.kv_dim())].concat();
                Some(vec(&format!("layers.{i}.qkv_bias"), &all)?)
            } else {
                None
            };
            let plt_gate = match &a.plt_gate {
                Some(g) if cfg.is_plt() => {
                    let gn = g.gate_norm.as_ref().map(|t| t.data.clone()).unwrap_or_default();
                    Some(vec(&format!("layers.{i}.plt_gate"), &[g.weight.data.clone(), g.bias.data.clone(), gn].concat())?)
                }
                _ => None,
            };
            layers.push(GpuLayer {
                input_layernorm: vec(&format!("layers.{i}.input_layernorm"), &l.input_layernorm.data)?,
                qkv_proj: mat(&format!("layers.{i}.qkv_proj"), &[&q.weight.data, &k.weight.data, &v.weight.data])?,
                qkv_bias,
                o_proj: mat(&format!("layers.{i}.o_proj"), &[&a.o_proj.weight.data])?,
                post_attention_layernorm: vec(
                    &format!("layers.{i}.post_attention_layernorm"),
                    &l.post_attention_layernorm.data,
                )?,
                gate_up_proj: mat(
                    &format!("layers.{i}.gate_up_proj"),
                    &[&interleave_rows(&l.mlp.gate_proj.weight.data, &l.mlp.up_proj.weight.data, cfg.hidden_size)],
                )?,
                down_proj: mat(&format!("layers.{i}.down_proj"), &[&l.mlp.down_proj.weight.data])?,
                plt_gate,
            });
            progress((i + 1) as f32 / (cfg.num_hidden_layers + 1) as f32);
        }
        let embed = mat("embed_tokens", &[&w.embed_tokens.data])?;
        let lm_head = match &w.lm_head {
            Some(t) => Some(mat("lm_head", &[&t.data])?),
            None => None,
        };
        let norm = vec("norm", &w.norm.data)?;
        let dummy = gpu.storage("dummy", 16)?;
        gpu.check()?;
        progress(1.0);
        Ok(GpuModel { cfg: cfg.clone(), gpu, dtype, embed, lm_head, norm, layers, dummy })
    }

    /// Loads `config.json` and the safetensors of `dir` onto `gpu` (see `new` for `dtype`).
    pub fn load_dir(gpu: Arc<Gpu>, dir: &std::path::Path, dtype: Option<DType>) -> Result<GpuModel> {
        let cfg = Config::from_file(&dir.join("config.json"))?;
        let w = Weights::load_dir(dir, &cfg)?;
        GpuModel::new(gpu, &cfg, &w, dtype)
    }

    /// Bytes of weights one pass reads (every matrix once, plus the lm_head rows it needs).
    pub fn weight_bytes(&self) -> u64 {
        let c = &self.cfg;
        let per = (c.q_dim() + 2 * c.kv_dim()) * c.hidden_size + c.hidden_size * c.q_dim() + 3 * c.intermediate_size * c.hidden_size;
        ((c.num_hidden_layers * per + c.vocab_size * c.hidden_size) * self.dtype.size()) as u64
    }
}

/// Session sizes.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// B: sequences decoded together.
    pub batch: usize,
    /// Positions each sequence can hold (the global cache length).
    pub context: usize,
    /// Prompt tokens per prefill pass.
    pub prefill_chunk: usize,
    /// Store the KV cache and the local rings as f16 (half the memory and the attention's
    /// reads; keys and values rounded to f16, the attention math stays f32). Default f32.
    pub kv_f16: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { batch: 1, context: 512, prefill_chunk: 128, kv_f16: false }
    }
}

/// A matmul with both kernels bound; the pass's row count picks one.
struct Mm {
    tiled: Dispatch,
    rows: Dispatch,
    /// For a matmul whose input is an RMSNorm: the decode kernel that normalises the raw rows
    /// itself (`NORM`), so decode passes skip the norm dispatch. None where K % 8 != 0 or the
    /// adapter does not fuse norms (`Gpu::fuse_norms`).
    rows_normed: Option<Dispatch>,
    /// The row-sharing kernels apply SwiGLU themselves (gate_up, K % 8 == 0: `GLU`).
    glu: bool,
}

impl Mm {
    fn pick(&self, rows: u32, logit_rows: u32, logits: bool) -> &Dispatch {
        let n = if logits { logit_rows } else { rows };
        if n <= ROWS_KERNEL_MAX {
            &self.rows
        } else {
            &self.tiled
        }
    }
}

/// Per-dispatch timestamps (`Session::set_profiling`).
struct Profiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    labels: std::cell::RefCell<Vec<String>>,
    last: Vec<(String, f64)>,
}

const PROFILE_QUERIES: u32 = 4096;

struct LayerOps {
    input_norm: Dispatch,
    qkv: Mm,
    rope_store: Dispatch,
    attention: Dispatch,
    /// Passes of up to ROWS_KERNEL_MAX rows in long sessions: split global attention, combine.
    attention_split: Option<(Dispatch, Dispatch)>,
    ring_store: Option<Dispatch>,
    o_proj: Mm,
    post_norm: Dispatch,
    gate_up: Mm,
    swiglu: Dispatch,
    down: Mm,
}

struct Graph {
    embed: Dispatch,
    layers: Vec<LayerOps>,
    norm_carry: Dispatch,
    final_norm: Dispatch,
    lm_head: Mm,
    sample: Dispatch,
}

/// What one pass of a call does.
#[derive(Clone, Copy, Debug)]
struct PassPlan {
    rows: u32,
    logit_row0: u32,
    logit_rows: u32,
    embed: bool,
    carry_out: bool,
    logits: bool,
    /// Choose a token from each logit row on the GPU (row i is sequence seq0 + i).
    sample: bool,
    seq0: u32,
}

/// What the last call did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Passes over the weights in the last call.
    pub passes: usize,
    /// Rows those passes computed, all together.
    pub rows: usize,
    /// Queue submits of this session so far.
    pub submits: u64,
    /// GPU time of the last call from timestamp queries (where the adapter has them), in ns.
    pub gpu_ns: Option<u64>,
    /// Dispatches (kernel launches) the last call recorded.
    pub dispatches: usize,
    /// Host time of the last decode call up to its submit (row tables, recording, submit), in
    /// ns: the CPU cost per step that a GPU fast enough to hide nothing else would still pay.
    /// Native builds only.
    pub host_ns: Option<u64>,
}

/// Everything a batch of B sequences needs, allocated once.
pub struct Session {
    pub model: Arc<GpuModel>,
    pub opts: SessionOptions,
    /// Next position of each sequence.
    pos: Vec<usize>,
    rmax: usize,
    rows_live: wgpu::Buffer,  // [Rmax] Row
    rows_table: wgpu::Buffer, // [L][Rmax] Row: one record set per pass of a call
    pass_live: wgpu::Buffer,  // Pass (uniform)
    pass_table: wgpu::Buffer, // [L] Pass
    logits: wgpu::Buffer,     // [Lmax, V]
    readback: wgpu::Buffer,   // [0, 16): 2 timestamps; [16, ..): chosen ids [Lmax]; [logits_at, ..): logits [Lmax, V]
    logits_at: u64,
    sample_params: wgpu::Buffer, // [B] SampleParams
    history: wgpu::Buffer,       // [B][MAX_PENALTY_WINDOW] recent tokens
    chosen: wgpu::Buffer,        // [Lmax] sampled ids
    /// Every sequence's tokens so far (the repetition penalty's history, the RNG's step).
    tokens: Vec<Vec<u32>>,
    samplers: Vec<SamplerConfig>,
    timestamps: Option<(wgpu::QuerySet, wgpu::Buffer)>, // 2 queries: start and end of a call
    profiler: Option<Profiler>,
    carry: wgpu::Buffer,      // [L*B, D]: C^l of sequence b at row l*B + b (section 4)
    cbuf: wgpu::Buffer,       // [L*B + max(P, L*B), D]: IN rows 0.., OUT rows L*B..
    graph: Graph,
    _kv: Vec<wgpu::Buffer>,   // per layer [2][slots][T_max][Hkv*Dh]
    _ring: Vec<wgpu::Buffer>, // per layer [2][B*(L-1)][left+1][Hkv*Dh]
    _scratch: Vec<wgpu::Buffer>,
    pub stats: Stats,
    /// When the current decode call began (`Stats::host_ns`).
    #[cfg(not(target_arch = "wasm32"))]
    call_start: Option<std::time::Instant>,
}

impl Session {
    pub fn new(model: Arc<GpuModel>, opts: SessionOptions) -> Result<Session> {
        let c = model.cfg.clone();
        let gpu = model.gpu.clone();
        if opts.batch == 0 {
            return Err(Error::Input("batch must be at least 1".into()));
        }
        if opts.context == 0 || opts.context > c.max_position_embeddings {
            return Err(Error::Input(format!(
                "context {} must be between 1 and max_position_embeddings ({})",
                opts.context, c.max_position_embeddings
            )));
        }
        if opts.prefill_chunk == 0 {
            return Err(Error::Input("prefill chunk must be at least 1".into()));
        }
        let (b, l, d, f, v) = (opts.batch, c.num_loops, c.hidden_size, c.intermediate_size, c.vocab_size);
        let (h, hkv, dh) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let (qd, kvd) = (c.q_dim(), c.kv_dim());
        let qkvd = qd + 2 * kvd;
        let p = opts.prefill_chunk.min(opts.context);
        let rmax = p.max(b * l);
        let lmax = p.max(b);
        let plt = c.is_plt();
        let vanilla = c.num_loops > 1 && c.looping == Looping::Vanilla;
        let slots = if vanilla { l * b } else { b };
        let rings = if plt { b * (l - 1) } else { 0 };
        let w = c.window_slots();
        let f4 = |n: usize| (n * 4) as u64;
        // KV elements: 4 bytes, or 2 with kv_f16 (kvd is even: head_dim is).
        let kv_bytes = |n: usize| (n * if opts.kv_f16 { 2 } else { 4 }) as u64;

        let rows_live = gpu.storage("rows", f4(rmax * 16))?;
        let rows_table = gpu.storage("rows_table", f4(l * rmax * 16))?;
        let pass_live = gpu.uniform("pass", bytemuck::bytes_of(&PassInfo::default()));
        let pass_table = gpu.storage("pass_table", f4(l * 4))?;
        let hidden = gpu.storage("hidden", f4(rmax * d))?; // h: the residual stream
        let normed = gpu.storage("normed", f4(rmax * d))?; // u: RMSNorm(h)
        let qkv = gpu.storage("qkv", f4(rmax * qkvd))?;
        let att = gpu.storage("att", f4(rmax * qd))?;
        let gu = gpu.storage("gate_up", f4(rmax * 2 * f))?;
        let act = gpu.storage("act", f4(rmax * f))?;
        let logits = gpu.storage("logits", f4(lmax * v))?;
        let logits_at = (16 + f4(lmax)).next_multiple_of(256);
        let readback = gpu.readback("readback", logits_at + f4(lmax * v))?;
        let sample_params = gpu.storage("sample_params", (b * std::mem::size_of::<SampleParams>()) as u64)?;
        let history = gpu.storage("history", f4(b * MAX_PENALTY_WINDOW))?;
        let chosen = gpu.storage("chosen", f4(lmax))?;
        let work = gpu.storage("sample_work", f4(lmax * v))?;
        let timestamps = gpu.has_timestamps().then(|| {
            let qs = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("step time"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: 256,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (qs, resolve)
        });
        let carry = gpu.storage("carry", f4(l * b * d))?;
        let cbuf = gpu.storage("cbuf", f4((l * b + p.max(l * b)) * d))?;
        let mut kv = Vec::new();
        let mut ring = Vec::new();
        for i in 0..c.num_hidden_layers {
            kv.push(gpu.storage(&format!("layers.{i}.kv_cache"), kv_bytes(2 * slots * opts.context * kvd))?);
            if plt {
                ring.push(gpu.storage(&format!("layers.{i}.ring"), kv_bytes(2 * rings * w * kvd))?);
            }
        }

        // Pipelines, specialised to this model's shapes.
        let wf16 = model.dtype == DType::F16;
        let gate_mode = match (plt, c.gate_mode) {
            (false, _) => 0,
            (true, GateMode::Query) => 1,
            (true, GateMode::Hidden) => 2,
        };
        let norm_defs = Defines::new().u32("D", d).f32("EPS", c.rms_norm_eps).u32("WG", 64);
        let shape_defs = || {
            Defines::new()
                .u32("H", h)
                .u32("HKV", hkv)
                .u32("DH", dh)
                .u32("D", d)
                .f32("THETA", c.rope_theta)
                .u32("TMAX", opts.context)
                .u32("SLOTS", slots)
                .u32("W", w)
                .u32("RINGS", rings.max(1))
                .u32("GATE_MODE", gate_mode)
                .f32("EPS", c.rms_norm_eps)
                .u32("RG", ATTN_GROUP_ROWS)
                .bool("KV_F16", opts.kv_f16)
        };
        let split = attention_split(opts.context);
        let attn_defs = |split: Option<(usize, usize)>| {
            let (len, n) = split.unwrap_or((0, 1));
            shape_defs().u32("SPLIT", len).u32("NSPLIT", n)
        };
        // `lanes`: threads per output of the row-sharing kernels (the tiled kernel ignores it).
        let mm_defs = |k: usize, o: usize, logits: bool, lanes: u32| {
            Defines::new()
                .u32("K", k)
                .u32("O", o)
                .bool("W_F16", wf16)
                .bool("ROWS_FROM_LOGITS", logits)
                .u32("LANES", lanes as usize)
                .bool("SUBGROUPS", gpu.subgroup_reduce(lanes))
        };
        let vec_defs = |k: usize, o: usize, logits: bool, lanes: u32, norm: bool| {
            mm_defs(k, o, logits, lanes).bool("NORM", norm).f32("EPS", c.rms_norm_eps)
        };
        let p_rmsnorm = gpu.pipeline("norm", "rmsnorm", &norm_defs)?;
        let p_embed = gpu.pipeline("embed", "embed_input", &Defines::new().u32("D", d).bool("W_F16", wf16))?;
        let p_rope = gpu.pipeline("rope", "rope_store", &shape_defs())?;
        let p_ring = gpu.pipeline("rope", "ring_store", &shape_defs())?;
        let p_attn = gpu.pipeline("attention", "attention", &attn_defs(None))?;
        // Split attention: partials of up to ROWS_KERNEL_MAX rows, [rows][H][splits][Dh + 2].
        // (The unsplit kernel binds it too, unused: a few bytes.)
        let part_elems = split.map_or(1, |(_, n)| rmax.min(ROWS_KERNEL_MAX as usize) * h * n * (dh + 2));
        let part = gpu.storage("attention_partials", f4(part_elems))?;
        let split_ops = match split {
            Some((_, n)) => {
                let p_split = gpu.pipeline("attention", "attention", &attn_defs(split))?;
                let p_comb = gpu.pipeline("attention", "attention_combine", &attn_defs(split))?;
                Some((p_split, p_comb, n))
            }
            None => None,
        };
        let p_swiglu = gpu.pipeline("elementwise", "swiglu", &Defines::new().u32("F", f))?;
        let uni = |acc: bool, bias: bool| gpu.uniform("mm_params", bytemuck::cast_slice(&[acc as u32, bias as u32, 0, 0]));
        // `norm`: (raw input rows, RMSNorm weight) when `x` is that norm's output.
        // `glu`: the SwiGLU output buffer when the weight rows are gate/up pairs: the decode
        // kernel (K % 8 == 0) writes silu(gate) * up there itself (GLU); the others write `y`
        // (the pairs) and the swiglu dispatch follows them.
        let mm = |k: usize, o: usize, x: &wgpu::Buffer, wt: &wgpu::Buffer, bias: Option<&wgpu::Buffer>, y: &wgpu::Buffer, acc: bool, logits: bool, norm: Option<(&wgpu::Buffer, &wgpu::Buffer)>, glu: Option<&wgpu::Buffer>| -> Result<Mm> {
            let defs = mm_defs(k, o, logits, 8);
            let params = uni(acc, bias.is_some());
            let bias = bias.unwrap_or(&model.dummy);
            // Input, output and norm weight of each variant (binding 6 is unused without NORM:
            // a dummy).
            let bind = |x, y, nw| [(0, &params), (1, &pass_live), (2, x), (3, wt), (4, bias), (5, y), (6, nw)];
            let rows_dim = if logits { Dim::LogitRows(64) } else { Dim::Rows(64) };
            let tiled = gpu.pipeline("matmul", "matmul_tiled", &defs)?;
            let glu = glu.filter(|_| k % 8 == 0);
            let (ry, outs) = match glu {
                Some(act) => (act, o / 2),
                None => (y, o),
            };
            let lanes = gpu.decode_lanes(outs);
            let rows_grid = [Dim::Fixed(outs.div_ceil(256 / lanes as usize) as u32), Dim::Fixed(1), Dim::Fixed(1)];
            // 16-byte loads when every weight row starts on a 16-byte boundary.
            let rowsk = if k % 8 == 0 {
                gpu.pipeline("matmul_vec", "matmul_rows_vec", &vec_defs(k, o, logits, lanes, false).bool("GLU", glu.is_some()))?
            } else {
                gpu.pipeline("matmul", "matmul_rows", &mm_defs(k, o, logits, lanes))?
            };
            let rows_normed = match norm {
                Some((raw, nw)) if k % 8 == 0 && gpu.fuse_norms => {
                    let p = gpu.pipeline("matmul_vec", "matmul_rows_vec", &vec_defs(k, o, logits, lanes, true).bool("GLU", glu.is_some()))?;
                    Some(gpu.dispatch(&p, &bind(raw, ry, nw), rows_grid)?)
                }
                _ => None,
            };
            Ok(Mm {
                tiled: gpu.dispatch(&tiled, &bind(x, y, &model.dummy), [Dim::Fixed(o.div_ceil(64) as u32), rows_dim, Dim::Fixed(1)])?,
                rows: gpu.dispatch(&rowsk, &bind(x, ry, &model.dummy), rows_grid)?,
                rows_normed,
                glu: glu.is_some(),
            })
        };
        let norm_apply = gpu.uniform("norm_params", bytemuck::cast_slice(&[c.normalize_per_loop as u32, 0, 0, 0]));
        let norm = |pipe: &Arc<crate::gpu::Pipeline>, x: &wgpu::Buffer, wt: &wgpu::Buffer, out: &wgpu::Buffer, dim: Dim| {
            gpu.dispatch(
                pipe,
                &[(0, &norm_apply), (1, &pass_live), (2, &rows_live), (3, x), (4, wt), (5, out)],
                [dim, Dim::Fixed(1), Dim::Fixed(1)],
            )
        };

        let mut layers = Vec::new();
        for (i, lw) in model.layers.iter().enumerate() {
            let ring_i = ring.get(i).unwrap_or(&model.dummy);
            let gate = lw.plt_gate.as_ref().unwrap_or(&model.dummy);
            layers.push(LayerOps {
                input_norm: norm(&p_rmsnorm, &hidden, &lw.input_layernorm, &normed, Dim::Rows(1))?,
                qkv: mm(d, qkvd, &normed, &lw.qkv_proj, lw.qkv_bias.as_ref(), &qkv, false, false, Some((&hidden, &lw.input_layernorm)), None)?,
                rope_store: gpu.dispatch(
                    &p_rope,
                    &[(0, &rows_live), (1, &qkv), (2, &kv[i])],
                    [Dim::Rows(1), Dim::Fixed(1), Dim::Fixed(1)],
                )?,
                attention: gpu.dispatch(
                    &p_attn,
                    &[(0, &rows_live), (1, &qkv), (2, &kv[i]), (3, ring_i), (4, gate), (5, &hidden), (6, &att), (7, &part)],
                    [Dim::Rows(1), Dim::Fixed(h as u32), Dim::Fixed(1)],
                )?,
                attention_split: match &split_ops {
                    Some((p_split, p_comb, n)) => {
                        let binds = [(0, &rows_live), (1, &qkv), (2, &kv[i]), (3, ring_i), (4, gate), (5, &hidden), (6, &att), (7, &part)];
                        Some((
                            gpu.dispatch(p_split, &binds, [Dim::Rows(1), Dim::Fixed(h as u32), Dim::Fixed(*n as u32)])?,
                            gpu.dispatch(p_comb, &binds, [Dim::Rows(1), Dim::Fixed(h as u32), Dim::Fixed(1)])?,
                        ))
                    }
                    None => None,
                },
                ring_store: if plt {
                    Some(gpu.dispatch(
                        &p_ring,
                        &[(0, &rows_live), (1, &qkv), (3, ring_i)],
                        [Dim::Rows(1), Dim::Fixed(1), Dim::Fixed(1)],
                    )?)
                } else {
                    None
                },
                o_proj: mm(qd, d, &att, &lw.o_proj, None, &hidden, true, false, None, None)?,
                post_norm: norm(&p_rmsnorm, &hidden, &lw.post_attention_layernorm, &normed, Dim::Rows(1))?,
                gate_up: mm(d, 2 * f, &normed, &lw.gate_up_proj, None, &gu, false, false, Some((&hidden, &lw.post_attention_layernorm)), Some(&act))?,
                swiglu: gpu.dispatch(
                    &p_swiglu,
                    &[(0, &gu), (1, &act)],
                    [Dim::Fixed(f.div_ceil(64) as u32), Dim::Rows(1), Dim::Fixed(1)],
                )?,
                down: mm(f, d, &act, &lw.down_proj, None, &hidden, true, false, None, None)?,
            });
        }
        let graph = Graph {
            embed: gpu.dispatch(
                &p_embed,
                &[(0, &rows_live), (1, &model.embed), (2, &cbuf), (3, &hidden)],
                [Dim::Fixed(d.div_ceil(64) as u32), Dim::Rows(1), Dim::Fixed(1)],
            )?,
            layers,
            norm_carry: norm(&gpu.pipeline("norm", "norm_carry", &norm_defs)?, &hidden, &model.norm, &cbuf, Dim::Rows(1))?,
            final_norm: norm(
                &gpu.pipeline("norm", "rmsnorm_logits", &norm_defs)?,
                &hidden,
                &model.norm,
                &normed,
                Dim::LogitRows(1),
            )?,
            lm_head: mm(d, v, &normed, model.lm_head.as_ref().unwrap_or(&model.embed), None, &logits, false, true, Some((&hidden, &model.norm)), None)?,
            sample: gpu.dispatch(
                &gpu.pipeline("sample", "sample", &Defines::new().u32("V", v).u32("HMAX", MAX_PENALTY_WINDOW))?,
                &[(0, &pass_live), (1, &sample_params), (2, &history), (3, &logits), (4, &work), (5, &chosen)],
                [Dim::LogitRows(1), Dim::Fixed(1), Dim::Fixed(1)],
            )?,
        };
        gpu.check()?;
        Ok(Session {
            model,
            pos: vec![0; b],
            rmax,
            rows_live,
            rows_table,
            pass_live,
            pass_table,
            logits,
            readback,
            logits_at,
            sample_params,
            history,
            chosen,
            tokens: vec![Vec::new(); b],
            samplers: vec![SamplerConfig::default(); b],
            timestamps,
            profiler: None,
            carry,
            cbuf,
            graph,
            _kv: kv,
            _ring: ring,
            _scratch: vec![hidden, normed, qkv, att, gu, act, work],
            stats: Stats::default(),
            #[cfg(not(target_arch = "wasm32"))]
            call_start: None,
            opts: SessionOptions { prefill_chunk: p, ..opts },
        })
    }

    pub fn cfg(&self) -> &Config {
        &self.model.cfg
    }

    /// Next position of sequence `seq` (tokens it has consumed).
    pub fn position(&self, seq: usize) -> usize {
        self.pos[seq]
    }

    /// Forgets sequence `seq`: position 0, carried states zero.
    pub fn reset(&mut self, seq: usize) -> Result<()> {
        self.check_seq(seq)?;
        self.pos[seq] = 0;
        self.tokens[seq].clear();
        let (b, d) = (self.opts.batch, self.cfg().hidden_size);
        let zeros = vec![0u8; d * 4];
        for l in 0..self.cfg().num_loops {
            self.model.gpu.queue.write_buffer(&self.carry, ((l * b + seq) * d * 4) as u64, &zeros);
        }
        Ok(())
    }

    fn check_seq(&self, seq: usize) -> Result<()> {
        if seq >= self.opts.batch {
            return Err(Error::Input(format!("sequence {seq} is outside the batch of {}", self.opts.batch)));
        }
        Ok(())
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        let v = self.cfg().vocab_size;
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= v) {
            return Err(Error::Input(format!("token id {t} is out of range (vocab_size {v})")));
        }
        Ok(())
    }

    /// The row of sequence `b`, loop `l`, position `pos`; `csrc`/`cdst` are cbuf rows.
    fn row(&self, b: usize, l: usize, pos: usize, token: u32, fresh: usize, ring_write: bool, csrc: u32, cdst: u32) -> Row {
        let c = self.cfg();
        let bsz = self.opts.batch;
        let plt = c.is_plt();
        let vanilla = c.num_loops > 1 && c.looping == Looping::Vanilla;
        let (kv_slot, attn_slot) = if vanilla {
            ((l * bsz + b) as u32, (l * bsz + b) as u32)
        } else if l == 0 {
            (b as u32, b as u32)
        } else {
            (NONE, b as u32)
        };
        let local = plt && l > 0;
        Row {
            pos: pos as u32,
            lp: l as u32,
            seq: b as u32,
            token,
            kv_slot,
            attn_slot,
            ring: if local { (b * (c.num_loops - 1) + l - 1) as u32 } else { NONE },
            fresh: fresh as u32,
            ring_write: (local && ring_write) as u32,
            csrc: if local { csrc } else { NONE },
            cdst: if plt && l + 1 < c.num_loops { cdst } else { NONE },
            e_scale: if local { c.emb_scale } else { 1.0 },
            c_scale: if local { c.hidden_scale } else { 0.0 },
            gnext: 0,
            gfollow: 0,
            _pad: 0,
        }
    }

    /// Records pass `p` (its rows are record set `p` of `rows_table`).
    /// `first`/`last`: this pass opens/closes the call (where its timestamps are written).
    /// Returns the number of dispatches recorded (`Stats::dispatches`).
    fn encode_pass(&self, enc: &mut wgpu::CommandEncoder, p: usize, plan: &PassPlan, first: bool, last: bool) -> usize {
        let row_bytes = std::mem::size_of::<Row>() as u64;
        enc.copy_buffer_to_buffer(
            &self.rows_table,
            p as u64 * self.rmax as u64 * row_bytes,
            &self.rows_live,
            0,
            plan.rows as u64 * row_bytes,
        );
        enc.copy_buffer_to_buffer(&self.pass_table, p as u64 * 16, &self.pass_live, 0, 16);
        let timestamp_writes = self.timestamps.as_ref().filter(|_| first || last).map(|(qs, _)| wgpu::ComputePassTimestampWrites {
            query_set: qs,
            beginning_of_pass_write_index: first.then_some(0),
            end_of_pass_write_index: last.then_some(1),
        });
        let list = self.dispatch_list(plan);
        let (r, lr) = (plan.rows, plan.logit_rows);
        if let Some(prof) = &self.profiler {
            // One compute pass per dispatch, each with its own pair of timestamps.
            drop(timestamp_writes);
            let mut labels = prof.labels.borrow_mut();
            for (label, d) in &list {
                let k = labels.len() as u32;
                if 2 * k + 1 >= PROFILE_QUERIES {
                    d.record(&mut enc.begin_compute_pass(&Default::default()), r, lr);
                    continue;
                }
                labels.push(label.to_string());
                let tw = wgpu::ComputePassTimestampWrites {
                    query_set: &prof.queries,
                    beginning_of_pass_write_index: Some(2 * k),
                    end_of_pass_write_index: Some(2 * k + 1),
                };
                let mut cp = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: Some(tw) });
                d.record(&mut cp, r, lr);
            }
            return list.len();
        }
        let mut cp = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("plt pass"), timestamp_writes });
        for (_, d) in &list {
            d.record(&mut cp, r, lr);
        }
        list.len()
    }

    /// The dispatches of one pass, in order, with a label each.
    fn dispatch_list<'a>(&'a self, plan: &PassPlan) -> Vec<(&'static str, &'a Dispatch)> {
        let (r, lr) = (plan.rows, plan.logit_rows);
        let g = &self.graph;
        let mut v: Vec<(&'static str, &Dispatch)> = Vec::new();
        if plan.embed {
            v.push(("embed_input", &g.embed));
        }
        // An RMSNorm and the matmul that reads it, or (decode passes) the matmul normalising its
        // input itself.
        let normed = |v: &mut Vec<(&'static str, &'a Dispatch)>, norm: (&'static str, &'a Dispatch), mm: (&'static str, &'a Mm), logits: bool| {
            let n = if logits { lr } else { r };
            match &mm.1.rows_normed {
                Some(fused) if n <= ROWS_KERNEL_MAX => v.push((mm.0, fused)),
                _ => {
                    v.push(norm);
                    v.push((mm.0, mm.1.pick(r, lr, logits)));
                }
            }
        };
        for layer in &g.layers {
            normed(&mut v, ("input_norm", &layer.input_norm), ("qkv_proj", &layer.qkv), false);
            v.push(("rope_store", &layer.rope_store)); // row 0's K/V reaches the global cache first
            match &layer.attention_split {
                Some((split, combine)) if r <= ROWS_KERNEL_MAX => {
                    v.push(("attention", split));
                    v.push(("attention_combine", combine));
                }
                _ => v.push(("attention", &layer.attention)),
            }
            if let Some(rs) = &layer.ring_store {
                v.push(("ring_store", rs)); // after attention has read the ring's older slots
            }
            v.push(("o_proj+residual", layer.o_proj.pick(r, lr, false)));
            normed(&mut v, ("post_norm", &layer.post_norm), ("gate_up_proj", &layer.gate_up), false);
            if r > ROWS_KERNEL_MAX || !layer.gate_up.glu {
                v.push(("swiglu", &layer.swiglu)); // (else the decode kernel applied it)
            }
            v.push(("down_proj+residual", layer.down.pick(r, lr, false)));
        }
        if plan.carry_out {
            v.push(("norm_carry", &g.norm_carry));
        }
        if plan.logits {
            normed(&mut v, ("final_norm", &g.final_norm), ("lm_head", &g.lm_head), true);
            if plan.sample {
                v.push(("sample", &g.sample));
            }
        }
        v
    }

    /// Times every dispatch of the following calls separately (a measuring aid: one compute
    /// pass per dispatch, so the total is higher than a normal step). Needs timestamp queries.
    pub fn set_profiling(&mut self, on: bool) -> Result<()> {
        if !on {
            self.profiler = None;
            return Ok(());
        }
        let gpu = &self.model.gpu;
        if !gpu.has_timestamps() {
            return Err(Error::Input("profiling needs an adapter with timestamp queries".into()));
        }
        let queries = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count: PROFILE_QUERIES,
        });
        let bytes = PROFILE_QUERIES as u64 * 8;
        let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = gpu.readback("profile readback", bytes)?;
        self.profiler = Some(Profiler { queries, resolve, readback, labels: Default::default(), last: Vec::new() });
        Ok(())
    }

    /// (dispatch label, GPU milliseconds) of the last call, when profiling.
    pub fn profile(&self) -> &[(String, f64)] {
        self.profiler.as_ref().map(|p| p.last.as_slice()).unwrap_or(&[])
    }

    /// Links each pass's rows into attention groups and uploads them and the pass records.
    fn write_tables(&self, passes: &mut [(Vec<Row>, PassPlan)]) {
        let q = &self.model.gpu.queue;
        let row_bytes = std::mem::size_of::<Row>();
        for (p, (rows, plan)) in passes.iter_mut().enumerate() {
            debug_assert!(rows.len() <= self.rmax);
            group_attention_rows(rows);
            q.write_buffer(&self.rows_table, (p * self.rmax * row_bytes) as u64, bytemuck::cast_slice(rows));
            let info = PassInfo { rows: plan.rows, logit_row0: plan.logit_row0, logit_rows: plan.logit_rows, seq0: plan.seq0 };
            q.write_buffer(&self.pass_table, (p * 16) as u64, bytemuck::bytes_of(&info));
        }
    }

    fn copy_rows(enc: &mut wgpu::CommandEncoder, src: &wgpu::Buffer, src_row: usize, dst: &wgpu::Buffer, dst_row: usize, n: usize, d: usize) {
        if n > 0 {
            let rb = (d * 4) as u64;
            enc.copy_buffer_to_buffer(src, src_row as u64 * rb, dst, dst_row as u64 * rb, n as u64 * rb);
        }
    }

    /// Submits `enc`; reads back, in one mapping, `logit_rows` rows of logits (if `want_logits`),
    /// the ids sampled from them (if `sampled`) and the GPU time (if the adapter has timestamps).
    async fn finish(&mut self, mut enc: wgpu::CommandEncoder, logit_rows: usize, want_logits: bool, sampled: bool) -> Result<(Vec<f32>, Vec<u32>)> {
        let gpu = self.model.gpu.clone();
        let v = self.cfg().vocab_size;
        let logit_bytes = if want_logits { (logit_rows * v * 4) as u64 } else { 0 };
        let id_bytes = if sampled { (logit_rows * 4) as u64 } else { 0 };
        if logit_bytes > 0 {
            enc.copy_buffer_to_buffer(&self.logits, 0, &self.readback, self.logits_at, logit_bytes);
        }
        if id_bytes > 0 {
            enc.copy_buffer_to_buffer(&self.chosen, 0, &self.readback, CHOSEN_AT, id_bytes);
        }
        if let Some((qs, resolve)) = &self.timestamps {
            enc.resolve_query_set(qs, 0..2, resolve, 0);
            enc.copy_buffer_to_buffer(resolve, 0, &self.readback, 0, 16);
        }
        let profiled = match &self.profiler {
            Some(p) => {
                let n = p.labels.borrow().len() as u32 * 2;
                if n > 0 {
                    enc.resolve_query_set(&p.queries, 0..n, &p.resolve, 0);
                    enc.copy_buffer_to_buffer(&p.resolve, 0, &p.readback, 0, n as u64 * 8);
                }
                n
            }
            None => 0,
        };
        gpu.queue.submit([enc.finish()]);
        self.stats.host_ns = None;
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.stats.host_ns = self.call_start.take().map(|t| t.elapsed().as_nanos() as u64);
        }
        self.stats.submits += 1;
        self.stats.gpu_ns = None;
        if let Some(p) = &mut self.profiler {
            let labels = std::mem::take(&mut *p.labels.borrow_mut());
            p.last.clear();
            if profiled > 0 {
                let bytes = gpu.read(&p.readback, profiled as u64 * 8).await?;
                let t: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
                let period = gpu.queue.get_timestamp_period() as f64;
                for (k, label) in labels.into_iter().enumerate() {
                    p.last.push((label, t[2 * k + 1].saturating_sub(t[2 * k]) as f64 * period / 1e6));
                }
            }
        }
        // The smallest range that covers what is wanted.
        let ts = self.timestamps.is_some();
        let start = if ts { 0 } else if id_bytes > 0 { CHOSEN_AT } else { self.logits_at };
        let end = if logit_bytes > 0 {
            self.logits_at + logit_bytes
        } else if id_bytes > 0 {
            CHOSEN_AT + id_bytes
        } else if ts {
            16
        } else {
            gpu.check()?;
            return Ok((Vec::new(), Vec::new()));
        };
        let bytes = gpu.read_range(&self.readback, start, end - start).await?;
        let at = |off: u64, len: u64| &bytes[(off - start) as usize..(off - start + len) as usize];
        if ts {
            let t: [u64; 2] = bytemuck::pod_read_unaligned(at(0, 16));
            let period = gpu.queue.get_timestamp_period() as f64;
            self.stats.gpu_ns = Some((t[1].saturating_sub(t[0]) as f64 * period) as u64);
        }
        let logits = if logit_bytes > 0 { bytemuck::pod_collect_to_vec(at(self.logits_at, logit_bytes)) } else { Vec::new() };
        let ids = if id_bytes > 0 { bytemuck::pod_collect_to_vec(at(CHOSEN_AT, id_bytes)) } else { Vec::new() };
        Ok((logits, ids))
    }

    /// Sets the sampler of sequence `seq` (used by `prefill_sample` and `decode_sample`).
    pub fn set_sampler(&mut self, seq: usize, sampler: SamplerConfig) -> Result<()> {
        self.check_seq(seq)?;
        sampler.validate()?;
        self.samplers[seq] = sampler;
        Ok(())
    }

    /// The tokens sequence `seq` holds (prompt and generated).
    pub fn tokens(&self, seq: usize) -> &[u32] {
        &self.tokens[seq]
    }

    /// Uploads the sampler settings and recent tokens of `seqs` (`new[i]` are the tokens this call
    /// adds to `seqs[i]`; the id drawn is for position `step`).
    fn write_samplers(&self, seqs: std::ops::Range<usize>, new: &[&[u32]]) {
        let q = &self.model.gpu.queue;
        for (i, s) in seqs.enumerate() {
            let sc = &self.samplers[s];
            let n = sc.repeat_last_n.min(MAX_PENALTY_WINDOW);
            let mut recent: Vec<u32> = self.tokens[s].iter().chain(new[i].iter()).copied().collect();
            recent.drain(..recent.len().saturating_sub(n));
            let p = SampleParams {
                temperature: sc.temperature,
                top_k: sc.top_k.min(u32::MAX as usize) as u32,
                top_p: sc.top_p,
                min_p: sc.min_p,
                penalty: sc.repetition_penalty,
                hist_len: recent.len() as u32,
                seed_lo: sc.seed as u32,
                seed_hi: (sc.seed >> 32) as u32,
                step: (self.pos[s] + new[i].len()) as u32,
                _pad: [0; 3],
            };
            let ps = std::mem::size_of::<SampleParams>();
            q.write_buffer(&self.sample_params, (s * ps) as u64, bytemuck::bytes_of(&p));
            if !recent.is_empty() {
                q.write_buffer(&self.history, (s * MAX_PENALTY_WINDOW * 4) as u64, bytemuck::cast_slice(&recent));
            }
        }
    }

    /// Prefills `tokens` for sequence `seq` at its next positions (PLT-SPEC section 3: L passes
    /// per chunk, each batched over the chunk's tokens). Returns the requested logits, [n, V].
    pub async fn prefill(&mut self, seq: usize, tokens: &[u32], want: Logits) -> Result<Vec<f32>> {
        Ok(self.prefill_inner(seq, tokens, want, false).await?.0)
    }

    /// Prefills `tokens` and draws the next token on the GPU with the sequence's sampler
    /// (only the id is read back).
    pub async fn prefill_sample(&mut self, seq: usize, tokens: &[u32]) -> Result<u32> {
        let (_, ids) = self.prefill_inner(seq, tokens, Logits::Last, true).await?;
        ids.first().copied().ok_or_else(|| Error::Gpu("no token was sampled".into()))
    }

    async fn prefill_inner(&mut self, seq: usize, tokens: &[u32], want: Logits, sample: bool) -> Result<(Vec<f32>, Vec<u32>)> {
        self.check_seq(seq)?;
        self.check_tokens(tokens)?;
        if tokens.is_empty() {
            return Err(Error::Input("prefill needs at least one token".into()));
        }
        let start = self.pos[seq];
        if start + tokens.len() > self.opts.context {
            return Err(Error::Input(format!(
                "{} tokens after position {start} exceed the session's context of {}",
                tokens.len(),
                self.opts.context
            )));
        }
        let c = self.cfg().clone();
        let (l_n, bsz, d) = (c.num_loops, self.opts.batch, c.hidden_size);
        let plt = c.is_plt();
        let w = c.window_slots();
        let out_base = l_n * bsz; // first OUT row of cbuf
        let mut out = Vec::new();
        let mut ids = Vec::new();
        let chunks: Vec<&[u32]> = tokens.chunks(self.opts.prefill_chunk).collect();
        for (ci, chunk) in chunks.iter().enumerate() {
            let p0 = self.pos[seq];
            let t_n = chunk.len();
            let last_chunk = ci + 1 == chunks.len();
            let (lr0, lrn) = match want {
                Logits::All => (0, t_n),
                Logits::Last if last_chunk => (t_n - 1, 1),
                _ if sample && last_chunk => (t_n - 1, 1),
                _ => (0, 0),
            };
            let sample_here = sample && last_chunk;
            let mut passes = Vec::with_capacity(l_n);
            for l in 0..l_n {
                let rows: Vec<Row> = (0..t_n)
                    .map(|t| {
                        // Loop l's input at row t is C_t = Norm(H^{l-1}_{t-1}): row t-1 of the
                        // previous pass's norm output, or for t = 0 the carried state (IN row 0).
                        let csrc = if t == 0 { 0 } else { (out_base + t - 1) as u32 };
                        self.row(seq, l, p0 + t, chunk[t], t + 1, t + w >= t_n, csrc, (out_base + t) as u32)
                    })
                    .collect();
                let plan = PassPlan {
                    rows: t_n as u32,
                    logit_row0: lr0 as u32,
                    logit_rows: lrn as u32,
                    embed: l == 0 || plt,
                    carry_out: plt && l + 1 < l_n,
                    logits: l + 1 == l_n && lrn > 0,
                    sample: l + 1 == l_n && sample_here,
                    seq0: seq as u32,
                };
                passes.push((rows, plan));
            }
            self.write_tables(&mut passes);
            if sample_here {
                // Sampling reads row 0 of the logits: ask for the last row only.
                debug_assert_eq!(lrn, 1);
                self.write_samplers(seq..seq + 1, &[chunk]);
            }
            let gpu = self.model.gpu.clone();
            let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("prefill") });
            let mut dispatches = 0;
            for (l, (_, plan)) in passes.iter().enumerate() {
                if plt && l > 0 {
                    // C_{p0} for loop l is the carried state; the new one is Norm(H^{l-1}) of
                    // the chunk's last token. Read the old one before writing the new one.
                    Self::copy_rows(&mut enc, &self.carry, l * bsz + seq, &self.cbuf, 0, 1, d);
                    Self::copy_rows(&mut enc, &self.cbuf, out_base + t_n - 1, &self.carry, l * bsz + seq, 1, d);
                }
                dispatches += self.encode_pass(&mut enc, l, plan, l == 0, l + 1 == passes.len());
            }
            let want_logits = want != Logits::None && lrn > 0;
            self.stats.dispatches = dispatches;
            let (logits, chosen) = self.finish(enc, lrn, want_logits, sample_here).await?;
            out.extend_from_slice(&logits);
            ids = chosen;
            self.pos[seq] += t_n;
            self.tokens[seq].extend_from_slice(chunk);
            self.stats.passes = passes.len();
            self.stats.rows = t_n;
        }
        Ok((out, ids))
    }

    /// `prefill`, blocking (native callers).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn prefill_blocking(&mut self, seq: usize, tokens: &[u32], want: Logits) -> Result<Vec<f32>> {
        pollster::block_on(self.prefill(seq, tokens, want))
    }

    /// `decode`, blocking (native callers).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn decode_blocking(&mut self, tokens: &[u32], schedule: Schedule, want_logits: bool) -> Result<Vec<f32>> {
        pollster::block_on(self.decode(tokens, schedule, want_logits))
    }

    /// One decode step for every sequence of the batch: `tokens[b]` at its next position.
    /// PLT models run `schedule`; vanilla models always run L passes. One submit; returns the logits
    /// [B, V] of the last loop when `want_logits`.
    pub async fn decode(&mut self, tokens: &[u32], schedule: Schedule, want_logits: bool) -> Result<Vec<f32>> {
        Ok(self.decode_inner(tokens, schedule, want_logits, false).await?.0)
    }

    /// One decode step that also draws each sequence's next token on the GPU with its sampler;
    /// reads back only the B ids (and the logits if `want_logits`).
    pub async fn decode_sample(&mut self, tokens: &[u32], schedule: Schedule, want_logits: bool) -> Result<(Vec<u32>, Vec<f32>)> {
        let (logits, ids) = self.decode_inner(tokens, schedule, want_logits, true).await?;
        Ok((ids, logits))
    }

    async fn decode_inner(&mut self, tokens: &[u32], schedule: Schedule, want_logits: bool, sample: bool) -> Result<(Vec<f32>, Vec<u32>)> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.call_start = Some(std::time::Instant::now());
        }
        let bsz = self.opts.batch;
        if tokens.len() != bsz {
            return Err(Error::Input(format!("decode needs {bsz} tokens (one per sequence), got {}", tokens.len())));
        }
        self.check_tokens(tokens)?;
        if let Some(b) = (0..bsz).find(|&b| self.pos[b] >= self.opts.context) {
            return Err(Error::Input(format!("sequence {b} is full (context {})", self.opts.context)));
        }
        let c = self.cfg().clone();
        let (l_n, d) = (c.num_loops, c.hidden_size);
        let plt = c.is_plt();
        let out_base = l_n * bsz;
        let logits_needed = want_logits || sample;
        let logit_rows = if logits_needed { bsz as u32 } else { 0 };
        // Row (l, b): input C^l_b from IN row l*B + b; output Norm(h) to OUT row l*B + b.
        let row = |l: usize, b: usize| {
            self.row(b, l, self.pos[b], tokens[b], 1, true, (l * bsz + b) as u32, (out_base + l * bsz + b) as u32)
        };
        let mut passes: Vec<(Vec<Row>, PassPlan)> = if plt && schedule == Schedule::Fused {
            let rows: Vec<Row> = (0..l_n).flat_map(|l| (0..bsz).map(move |b| (l, b))).map(|(l, b)| row(l, b)).collect();
            let plan = PassPlan {
                rows: (l_n * bsz) as u32,
                logit_row0: ((l_n - 1) * bsz) as u32,
                logit_rows,
                embed: true,
                carry_out: l_n > 1,
                logits: logits_needed,
                sample,
                seq0: 0,
            };
            vec![(rows, plan)]
        } else {
            (0..l_n)
                .map(|l| {
                    let rows: Vec<Row> = (0..bsz).map(|b| row(l, b)).collect();
                    let plan = PassPlan {
                        rows: bsz as u32,
                        logit_row0: 0,
                        logit_rows,
                        embed: l == 0 || plt,
                        carry_out: plt && l + 1 < l_n,
                        logits: logits_needed && l + 1 == l_n,
                        sample: sample && l + 1 == l_n,
                        seq0: 0,
                    };
                    (rows, plan)
                })
                .collect()
        };
        self.write_tables(&mut passes);
        if sample {
            let news: Vec<&[u32]> = tokens.chunks(1).collect();
            self.write_samplers(0..bsz, &news);
        }
        let gpu = self.model.gpu.clone();
        let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("decode") });
        if plt {
            Self::copy_rows(&mut enc, &self.carry, bsz, &self.cbuf, bsz, (l_n - 1) * bsz, d);
        }
        let mut dispatches = 0;
        for (p, (_, plan)) in passes.iter().enumerate() {
            dispatches += self.encode_pass(&mut enc, p, plan, p == 0, p + 1 == passes.len());
        }
        if plt {
            // C^{l+1} <- Norm(H^l) for l < L-1, after every loop has read its old C^l.
            Self::copy_rows(&mut enc, &self.cbuf, out_base, &self.carry, bsz, (l_n - 1) * bsz, d);
        }
        self.stats.dispatches = dispatches;
        let out = self.finish(enc, logit_rows as usize, want_logits, sample).await?;
        for (b, p) in self.pos.iter_mut().enumerate() {
            *p += 1;
            self.tokens[b].push(tokens[b]);
        }
        self.stats.passes = passes.len();
        self.stats.rows = passes.iter().map(|(r, _)| r.len()).sum();
        Ok(out)
    }
}
