//! Typed descriptors of every compute kernel in `shaders/`: each one knows its WGSL file and
//! entry point, the `const` defines it is specialised with, the buffers it binds (by name here,
//! by binding number nowhere else) and its grid. The model graph (`model::graph`), the kernel
//! tests and the shader-validation test all build kernels through these types, so a kernel
//! setting is written once; `all_variants` lists every variant the runtime can build.

use crate::error::Result;
use crate::gpu::{Defines, Dim, Dispatch, Gpu, Pipeline};
pub use crate::format::WeightFormat;
use std::sync::Arc;

/// Rows per attention group (the `RG` define of shaders/attention.wgsl; `model::plan`).
pub const ATTN_GROUP_ROWS: usize = 4;
/// A pass of at most this many rows (or logit rows, for the head) uses the row-sharing decode
/// matmuls, one weight read for all rows; a longer one uses the tiled matmul.
pub const ROW_SHARING_MAX: u32 = 16;

/// Which matmul kernel a pass (or its head) runs: the choice `model::plan` makes once per pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulPath {
    /// Decode: each workgroup reads a block of weight rows once and applies it to every row of
    /// the pass (`matmul_rows`, or `matmul_rows_vec` with 16-byte loads when K % 8 == 0).
    RowSharing,
    /// Prefill: 64x64 output tiles (`matmul_tiled`).
    Tiled,
}

impl MatmulPath {
    /// The path for a pass that computes `rows` rows.
    pub fn for_rows(rows: u32) -> MatmulPath {
        if rows <= ROW_SHARING_MAX {
            MatmulPath::RowSharing
        } else {
            MatmulPath::Tiled
        }
    }
}

/// A shader entry point with its defines: enough to build or validate a pipeline.
#[derive(Clone, Debug)]
pub struct Variant {
    pub shader: &'static str,
    pub entry: &'static str,
    pub defines: Defines,
}

impl Variant {
    pub fn pipeline(&self, gpu: &Gpu) -> Result<Arc<Pipeline>> {
        gpu.pipeline(self.shader, self.entry, &self.defines)
    }
}

/// Binds `buffers` (binding number, buffer) to `v`'s pipeline with grid `grid`.
fn bind(gpu: &Gpu, v: &Variant, buffers: &[(u32, &wgpu::Buffer)], grid: [Dim; 3]) -> Result<Dispatch> {
    gpu.dispatch(&v.pipeline(gpu)?, buffers, grid)
}

fn rows_grid(logits: bool) -> Dim {
    if logits {
        Dim::LogitRows(1)
    } else {
        Dim::Rows(1)
    }
}

// ---------------------------------------------------------------------------------------------
// Matrix products (matmul.wgsl, matmul_vec.wgsl, matmul_common.wgsl)
// ---------------------------------------------------------------------------------------------

/// y[r] (+)= W x[r] (+ b) for the rows of a pass: W is [n, k] in `storage`: f32 bits, f16 pairs,
/// or quantised block records (`WeightFormat`, layouts in src/format.rs and shaders/quant.wgsl;
/// k a multiple of the block size, 32 or 256). Quantised weights run `matmul_rows_q` (row-sharing) or `matmul_tiled`
/// dequantising into its tile; `norm_eps` and `glu` are options of the float kernels only.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Matmul {
    pub k: usize,
    /// Output rows of W (for `glu`, gate/up pairs interleaved: n / 2 outputs are written).
    pub n: usize,
    pub storage: WeightFormat,
    pub path: MatmulPath,
    /// Row-sharing path: threads per output (8, 16 or 32; `Gpu::decode_lanes`).
    pub lanes: u32,
    /// Row-sharing path: reduce the lanes by subgroup shuffles (`Gpu::subgroup_reduce`).
    pub subgroups: bool,
    /// The pass's logit rows (from `logit_row0`) are the input and output rows (the lm_head).
    pub logit_rows: bool,
    /// Fold the RMSNorm of the input rows into the product with this epsilon (`NORM`; vec
    /// kernel only: K % 8 == 0).
    pub norm_eps: Option<f32>,
    /// Rows are (gate, up) pairs; write silu(gate) * up (`GLU`; vec kernel only).
    pub glu: bool,
    /// Where the outputs go in y (W may be one part of a larger matrix).
    pub out: OutMap,
}

/// Where a matmul's outputs go: output o (a row of W, or with `glu` a pair) is column
/// `MatmulParams::out_offset + o * step` of y, whose rows are `stride` long; the bias is indexed
/// by that column. A whole matrix writes `OutMap::dense(outputs)` at offset 0; a part of one (a
/// window past the binding limit, or one format of a fused matrix whose tensors differ) its own
/// columns. (The offset is a uniform, so equal-sized parts share one pipeline.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutMap {
    pub stride: usize,
    pub step: usize,
}

impl OutMap {
    /// Columns 0 .. n of rows n long.
    pub fn dense(n: usize) -> OutMap {
        OutMap { stride: n, step: 1 }
    }
}

/// What a `Matmul` reads and writes.
pub struct MatmulIo<'a> {
    /// `MatmulParams::bytes` in a uniform buffer.
    pub params: &'a wgpu::Buffer,
    /// The pass record (`model::PassInfo`), a uniform buffer.
    pub pass: &'a wgpu::Buffer,
    pub x: &'a wgpu::Buffer,
    pub w: &'a wgpu::Buffer,
    /// [n] f32, read when `MatmulParams::bias`; any buffer otherwise.
    pub bias: &'a wgpu::Buffer,
    pub y: &'a wgpu::Buffer,
    /// [k] RMSNorm weight, read with `norm_eps`; any buffer otherwise.
    pub norm_weight: &'a wgpu::Buffer,
}

/// The per-dispatch switches of a matmul (`Params` in matmul_common.wgsl).
#[derive(Clone, Copy, Debug, Default)]
pub struct MatmulParams {
    /// y += product (the residual add) instead of y = product.
    pub accumulate: bool,
    pub bias: bool,
    /// The y column of output 0 (`OutMap`).
    pub out_offset: u32,
}

impl MatmulParams {
    pub fn bytes(self) -> [u8; 16] {
        bytemuck::cast([self.accumulate as u32, self.bias as u32, self.out_offset, 0])
    }
}

impl Matmul {
    /// Whether the 16-byte-load kernel applies (float weights, every row starts on 16 bytes).
    pub fn vec_loads(&self) -> bool {
        self.k % 8 == 0 && !self.storage.is_quantised()
    }

    /// Outputs written per row.
    pub fn outputs(&self) -> usize {
        if self.glu {
            self.n / 2
        } else {
            self.n
        }
    }

    pub fn variant(&self) -> Variant {
        let base = Defines::new()
            .u32("K", self.k)
            .u32("O", self.n)
            .bool("W_F16", self.storage == WeightFormat::F16)
            .u32("QFMT", self.storage.qfmt())
            .bool("ROWS_FROM_LOGITS", self.logit_rows)
            .u32("LANES", self.lanes as usize)
            .bool("SUBGROUPS", self.subgroups)
            .u32("YS", self.out.stride)
            .u32("YSTEP", self.out.step);
        match (self.path, self.vec_loads()) {
            (MatmulPath::RowSharing, _) if self.storage.is_quantised() => Variant { shader: "matmul_quant", entry: "matmul_rows_q", defines: base },
            (MatmulPath::Tiled, _) => Variant { shader: "matmul", entry: "matmul_tiled", defines: base },
            (MatmulPath::RowSharing, true) => Variant {
                shader: "matmul_vec",
                entry: "matmul_rows_vec",
                defines: base.bool("NORM", self.norm_eps.is_some()).f32("EPS", self.norm_eps.unwrap_or(0.0)).bool("GLU", self.glu),
            },
            (MatmulPath::RowSharing, false) => Variant { shader: "matmul", entry: "matmul_rows", defines: base },
        }
    }

    pub fn grid(&self) -> [Dim; 3] {
        match self.path {
            MatmulPath::Tiled => {
                let rows = if self.logit_rows { Dim::LogitRows(64) } else { Dim::Rows(64) };
                [Dim::Fixed(self.n.div_ceil(64) as u32), rows, Dim::Fixed(1)]
            }
            MatmulPath::RowSharing => {
                [Dim::Fixed(self.outputs().div_ceil(256 / self.lanes as usize) as u32), Dim::Fixed(1), Dim::Fixed(1)]
            }
        }
    }

    pub fn dispatch(&self, gpu: &Gpu, io: &MatmulIo) -> Result<Dispatch> {
        let b = [(0, io.params), (1, io.pass), (2, io.x), (3, io.w), (4, io.bias), (5, io.y), (6, io.norm_weight)];
        bind(gpu, &self.variant(), &b, self.grid())
    }
}

// ---------------------------------------------------------------------------------------------
// Norms (norm.wgsl)
// ---------------------------------------------------------------------------------------------

/// Which rows an RMSNorm reads and where it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormRows {
    /// out[r] = RMSNorm(x[r]) for the pass's rows (`rmsnorm`).
    Pass,
    /// The logit rows only, compacted from row 0 of out (`rmsnorm_logits`).
    Logits,
    /// Each row's carried state: out[row.cdst] = Norm(x[r]) where cdst is set (`norm_carry`).
    Carry,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Norm {
    pub d: usize,
    pub eps: f32,
    pub rows: NormRows,
    /// Threads per row (the runtime uses `NORM_WG`; tests also try others).
    pub wg: usize,
}

/// Threads per row of the runtime's norms.
pub const NORM_WG: usize = 64;

pub struct NormIo<'a> {
    /// `NormParams::bytes` in a uniform buffer.
    pub params: &'a wgpu::Buffer,
    pub pass: &'a wgpu::Buffer,
    pub rows: &'a wgpu::Buffer,
    pub x: &'a wgpu::Buffer,
    pub weight: &'a wgpu::Buffer,
    pub out: &'a wgpu::Buffer,
}

/// `Params` of norm.wgsl.
#[derive(Clone, Copy, Debug, Default)]
pub struct NormParams {
    /// `plt_normalize_per_loop`: the carried state is normalised (else copied raw).
    pub normalize_carry: bool,
}

impl NormParams {
    pub fn bytes(self) -> [u8; 16] {
        bytemuck::cast([self.normalize_carry as u32, 0, 0, 0])
    }
}

impl Norm {
    pub fn variant(&self) -> Variant {
        let entry = match self.rows {
            NormRows::Pass => "rmsnorm",
            NormRows::Logits => "rmsnorm_logits",
            NormRows::Carry => "norm_carry",
        };
        Variant { shader: "norm", entry, defines: Defines::new().u32("D", self.d).f32("EPS", self.eps).u32("WG", self.wg) }
    }

    pub fn grid(&self) -> [Dim; 3] {
        [rows_grid(self.rows == NormRows::Logits), Dim::Fixed(1), Dim::Fixed(1)]
    }

    pub fn dispatch(&self, gpu: &Gpu, io: &NormIo) -> Result<Dispatch> {
        let b = [(0, io.params), (1, io.pass), (2, io.rows), (3, io.x), (4, io.weight), (5, io.out)];
        bind(gpu, &self.variant(), &b, self.grid())
    }
}

// ---------------------------------------------------------------------------------------------
// Embedding and the cross-loop input (embed.wgsl)
// ---------------------------------------------------------------------------------------------

/// x[r] = e_scale * E[token] + c_scale * cbuf[csrc] (PLT-SPEC section 3's loop input).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Embed {
    pub d: usize,
    /// The table's storage (a quantised one needs d a multiple of its block size, 32 or 256).
    pub storage: WeightFormat,
    /// The bound table holds embedding rows `first .. first + rows` (one part of a table split
    /// to fit the binding limit); the dispatch writes the rows whose token is among them.
    pub first: usize,
    pub rows: usize,
}

pub struct EmbedIo<'a> {
    pub rows: &'a wgpu::Buffer,
    pub embed: &'a wgpu::Buffer,
    pub carried: &'a wgpu::Buffer,
    pub out: &'a wgpu::Buffer,
}

impl Embed {
    pub fn variant(&self) -> Variant {
        let defines = Defines::new().u32("D", self.d).bool("W_F16", self.storage == WeightFormat::F16).u32("QFMT", self.storage.qfmt());
        Variant { shader: "embed", entry: "embed_input", defines: defines.u32("V0", self.first).u32("VN", self.rows) }
    }

    pub fn grid(&self) -> [Dim; 3] {
        [Dim::Fixed(self.d.div_ceil(64) as u32), Dim::Rows(1), Dim::Fixed(1)]
    }

    pub fn dispatch(&self, gpu: &Gpu, io: &EmbedIo) -> Result<Dispatch> {
        bind(gpu, &self.variant(), &[(0, io.rows), (1, io.embed), (2, io.carried), (3, io.out)], self.grid())
    }
}

// ---------------------------------------------------------------------------------------------
// Attention shapes, RoPE and cache stores (rope.wgsl), attention (attention.wgsl)
// ---------------------------------------------------------------------------------------------

/// The shapes every attention-side kernel is specialised with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub hidden: usize,
    /// Positions per cache slot (the session's context).
    pub positions: usize,
    /// Full-cache slots (B, or L*B for vanilla models).
    pub slots: usize,
    /// Ring length (left + 1).
    pub window: usize,
    /// Rings (B*(L-1); at least 1, unused without a local branch).
    pub rings: usize,
    /// 0: no gate (no local branch), 1: query gate, 2: hidden-state gate.
    pub gate_mode: u32,
    pub eps: f32,
    /// KV cache and rings as f16 pairs.
    pub kv_f16: bool,
}

impl AttnShape {
    fn defines(&self) -> Defines {
        Defines::new()
            .u32("H", self.heads)
            .u32("HKV", self.kv_heads)
            .u32("DH", self.head_dim)
            .u32("D", self.hidden)
            .u32("TMAX", self.positions)
            .u32("SLOTS", self.slots)
            .u32("W", self.window)
            .u32("RINGS", self.rings.max(1))
            .u32("GATE_MODE", self.gate_mode as usize)
            .f32("EPS", self.eps)
            .u32("RG", ATTN_GROUP_ROWS)
            .bool("KV_F16", self.kv_f16)
    }
}

/// The RoPE angles' cosines and sines, [positions][head_dim / 2] pairs (cos, sin), computed in
/// f64 and rounded once: `rope_store` reads them instead of evaluating `pow`, `cos` and `sin` on
/// the device, whose precision the APIs leave loose (Vulkan allows an absolute error of 2^-11
/// for sin and cos, and large angles make it worse), so every adapter rotates by the same
/// numbers. `inv_freq` is `Config::rope_inv_freq` ([Dh/2], scaled RoPE included), as
/// `reference::rope_with`.
pub fn rope_table(inv_freq: &[f64], positions: usize) -> Vec<f32> {
    let half = inv_freq.len();
    let mut t = Vec::with_capacity(positions * half * 2);
    for pos in 0..positions {
        for &inv_freq in inv_freq {
            let (sin, cos) = (pos as f64 * inv_freq).sin_cos();
            t.push(cos as f32);
            t.push(sin as f32);
        }
    }
    t
}

/// RoPE on q and k of the pass's rows, then K/V into the global cache (`rope_store`), or the
/// rows' K/V into their loop's ring (`ring_store`, after attention).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    pub shape: AttnShape,
    /// `ring_store` instead of `rope_store`.
    pub ring: bool,
}

pub struct RopeIo<'a> {
    pub rows: &'a wgpu::Buffer,
    pub qkv: &'a wgpu::Buffer,
    /// The global cache (`rope_store`).
    pub kv: &'a wgpu::Buffer,
    /// The rings (`ring_store`).
    pub ring: &'a wgpu::Buffer,
    /// `rope_table(inv_freq, positions)` (`rope_store`).
    pub table: &'a wgpu::Buffer,
}

impl Rope {
    pub fn variant(&self) -> Variant {
        let entry = if self.ring { "ring_store" } else { "rope_store" };
        Variant { shader: "rope", entry, defines: self.shape.defines() }
    }

    pub fn grid(&self) -> [Dim; 3] {
        [Dim::Rows(1), Dim::Fixed(1), Dim::Fixed(1)]
    }

    pub fn dispatch(&self, gpu: &Gpu, io: &RopeIo) -> Result<Dispatch> {
        bind(gpu, &self.variant(), &[(0, io.rows), (1, io.qkv), (2, io.kv), (3, io.ring), (4, io.table)], self.grid())
    }
}

/// How an attention dispatch covers the global positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnSplit {
    /// One workgroup per (row, head) over all positions, local branch and gate included.
    Whole,
    /// Flash-decoding: (row, head, split) workgroups of `len` positions write partials.
    Partials { len: usize, splits: usize },
    /// Merges the partials, runs the local branch and the gate (`attention_combine`).
    Combine { len: usize, splits: usize },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attention {
    pub shape: AttnShape,
    pub split: AttnSplit,
}

pub struct AttentionIo<'a> {
    pub rows: &'a wgpu::Buffer,
    pub qkv: &'a wgpu::Buffer,
    pub kv: &'a wgpu::Buffer,
    pub ring: &'a wgpu::Buffer,
    /// The PLT gate: [H*GW] weight | [H] bias | [D] gate_norm.
    pub gate: &'a wgpu::Buffer,
    /// The layer's input rows (the hidden-state gate reads them).
    pub hidden: &'a wgpu::Buffer,
    pub out: &'a wgpu::Buffer,
    /// Split partials, [rows][H][splits][Dh + 2].
    pub partials: &'a wgpu::Buffer,
}

impl Attention {
    pub fn variant(&self) -> Variant {
        let (entry, len, n) = match self.split {
            AttnSplit::Whole => ("attention", 0, 1),
            AttnSplit::Partials { len, splits } => ("attention", len, splits),
            AttnSplit::Combine { len, splits } => ("attention_combine", len, splits),
        };
        Variant { shader: "attention", entry, defines: self.shape.defines().u32("SPLIT", len).u32("NSPLIT", n) }
    }

    pub fn grid(&self) -> [Dim; 3] {
        let z = match self.split {
            AttnSplit::Partials { splits, .. } => splits as u32,
            _ => 1,
        };
        [Dim::Rows(1), Dim::Fixed(self.shape.heads as u32), Dim::Fixed(z)]
    }

    pub fn dispatch(&self, gpu: &Gpu, io: &AttentionIo) -> Result<Dispatch> {
        let b = [(0, io.rows), (1, io.qkv), (2, io.kv), (3, io.ring), (4, io.gate), (5, io.hidden), (6, io.out), (7, io.partials)];
        bind(gpu, &self.variant(), &b, self.grid())
    }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU (elementwise.wgsl), sampling (sample.wgsl), the subgroup probe (subgroups.wgsl)
// ---------------------------------------------------------------------------------------------

/// act[r][j] = silu(gu[r][2j]) * gu[r][2j + 1] (gate/up pairs interleaved).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Swiglu {
    pub f: usize,
}

pub struct SwigluIo<'a> {
    pub gate_up: &'a wgpu::Buffer,
    pub out: &'a wgpu::Buffer,
}

impl Swiglu {
    pub fn variant(&self) -> Variant {
        Variant { shader: "elementwise", entry: "swiglu", defines: Defines::new().u32("F", self.f) }
    }

    pub fn grid(&self) -> [Dim; 3] {
        [Dim::Fixed(self.f.div_ceil(64) as u32), Dim::Rows(1), Dim::Fixed(1)]
    }

    pub fn dispatch(&self, gpu: &Gpu, io: &SwigluIo) -> Result<Dispatch> {
        bind(gpu, &self.variant(), &[(0, io.gate_up), (1, io.out)], self.grid())
    }
}

/// One token drawn per logit row with its sequence's sampler (`sampling`'s GPU half).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub vocab: usize,
    /// Penalty history length per sequence (`sampling::MAX_PENALTY_WINDOW`).
    pub history: usize,
}

pub struct SampleIo<'a> {
    pub pass: &'a wgpu::Buffer,
    /// [B] `model::SampleParams`.
    pub params: &'a wgpu::Buffer,
    pub history: &'a wgpu::Buffer,
    pub logits: &'a wgpu::Buffer,
    pub work: &'a wgpu::Buffer,
    pub chosen: &'a wgpu::Buffer,
}

impl Sample {
    pub fn variant(&self) -> Variant {
        Variant { shader: "sample", entry: "sample", defines: Defines::new().u32("V", self.vocab).u32("HMAX", self.history) }
    }

    pub fn grid(&self) -> [Dim; 3] {
        [Dim::LogitRows(1), Dim::Fixed(1), Dim::Fixed(1)]
    }

    pub fn dispatch(&self, gpu: &Gpu, io: &SampleIo) -> Result<Dispatch> {
        let b = [(0, io.pass), (1, io.params), (2, io.history), (3, io.logits), (4, io.work), (5, io.chosen)];
        bind(gpu, &self.variant(), &b, self.grid())
    }
}

/// One workgroup of 256 reporting the subgroup layout (`Gpu::new`'s probe).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SubgroupProbe;

impl SubgroupProbe {
    pub fn variant(&self) -> Variant {
        Variant { shader: "subgroups", entry: "subgroup_probe", defines: Defines::new() }
    }

    pub fn dispatch(&self, gpu: &Gpu, out: &wgpu::Buffer) -> Result<Dispatch> {
        bind(gpu, &self.variant(), &[(0, out)], [Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(1)])
    }
}

/// dst = src, one vec4 per invocation over `vec4s` elements (`plt bench`'s copy bandwidth).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Copy {
    pub vec4s: u64,
}

impl Copy {
    pub fn variant(&self) -> Variant {
        Variant { shader: "copy", entry: "copy", defines: Defines::new() }
    }

    /// Workgroups of 256 covering the elements, split over y past 32,768 along x.
    pub fn grid(&self) -> [Dim; 3] {
        let groups = self.vec4s.div_ceil(256) as u32;
        let gx = groups.clamp(1, 32768);
        [Dim::Fixed(gx), Dim::Fixed(groups.div_ceil(gx)), Dim::Fixed(1)]
    }

    pub fn dispatch(&self, gpu: &Gpu, src: &wgpu::Buffer, dst: &wgpu::Buffer) -> Result<Dispatch> {
        bind(gpu, &self.variant(), &[(0, src), (1, dst)], self.grid())
    }
}

// ---------------------------------------------------------------------------------------------
// Every variant
// ---------------------------------------------------------------------------------------------

/// Every kernel variant the runtime can build, at small representative shapes: each storage
/// format (float and quantised), lane count, reduction, option and entry point, with K both a multiple of 8 (the vec
/// kernel) and not, head dims below, at and above 64, split and whole attention, every gate mode.
/// The shader-validation test translates each one; a new setting added to a descriptor shows up
/// here by construction.
pub fn all_variants() -> Vec<Variant> {
    let mut v = Vec::new();
    for storage in WeightFormat::ALL {
        // Quantised rows are whole blocks (32 weights, 256 for the K-quants).
        let ks: &[usize] = match storage.block() {
            1 => &[33, 40],
            32 => &[32, 96],
            _ => &[256, 512],
        };
        for logit_rows in [false, true] {
            for subgroups in [false, true] {
                for &k in ks {
                    for path in [MatmulPath::Tiled, MatmulPath::RowSharing] {
                        let lanes: &[u32] = if path == MatmulPath::Tiled { &[8] } else { &[8, 16, 32] };
                        let float_vec = k % 8 == 0 && path == MatmulPath::RowSharing && !storage.is_quantised();
                        let norms: &[Option<f32>] = if float_vec { &[None, Some(1e-5)] } else { &[None] };
                        let glus: &[bool] = if float_vec { &[false, true] } else { &[false] };
                        for &lanes in lanes {
                            for &norm_eps in norms {
                                for &glu in glus {
                                    let out = if glu { OutMap { stride: 80, step: 1 } } else { OutMap { stride: 150, step: 2 } };
                                    let m = Matmul { k, n: 70, storage, path, lanes, subgroups, logit_rows, norm_eps, glu, out };
                                    v.push(m.variant());
                                }
                            }
                        }
                    }
                }
            }
        }
        v.push(Embed { d: if storage.is_quantised() { 2 * storage.block() } else { 40 }, storage, first: 100, rows: 50 }.variant());
    }
    for rows in [NormRows::Pass, NormRows::Logits, NormRows::Carry] {
        v.push(Norm { d: 40, eps: 1e-5, rows, wg: NORM_WG }.variant());
    }
    v.push(Swiglu { f: 72 }.variant());
    v.push(SubgroupProbe.variant());
    v.push(Copy { vec4s: 1 }.variant());
    v.push(Sample { vocab: 300, history: 256 }.variant());
    for kv_f16 in [false, true] {
        for gate_mode in [0, 1, 2] {
            for head_dim in [10, 64, 130] {
                let shape = AttnShape {
                    heads: 4,
                    kv_heads: 2,
                    head_dim,
                    hidden: 40,
                    positions: 64,
                    slots: 2,
                    window: 3,
                    rings: 2,
                    gate_mode,
                    eps: 1e-5,
                    kv_f16,
                };
                for ring in [false, true] {
                    v.push(Rope { shape, ring }.variant());
                }
                for split in [AttnSplit::Whole, AttnSplit::Partials { len: 16, splits: 4 }, AttnSplit::Combine { len: 16, splits: 4 }] {
                    v.push(Attention { shape, split }.variant());
                }
            }
        }
    }
    v
}
