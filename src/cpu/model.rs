//! `CpuModel`: a model's weights in host memory in their storage formats (F32, F16, BF16 as
//! stored; GGUF's Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K blocks as in the file), filled
//! from the load plan's stream, and the matmul that runs a `Linear` over rows of activations
//! on the thread pool.

use super::kernels::{self, QActs, Simd, TILE};
use super::pool::Pool;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::load::{LayerWeight, LoadPlan, OpenModel, PlannedTensor, Sink, WeightId};
use crate::weights::DType;
use std::collections::HashMap;
use std::sync::Arc;

/// A matrix [rows, cols] in a storage format the kernels read (`kernels::kept`).
#[derive(Clone, Debug)]
pub struct Mat {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: Bytes,
}

/// One block of host memory for all of a model's matrices. On Linux it is aligned to 2 MiB
/// and asked for transparent huge pages (`madvise(MADV_HUGEPAGE)`) before it is first
/// written: a decode step streams every matrix, and with 4 KiB pages that is a TLB miss and a
/// restart of the hardware prefetcher every 64 cache lines (measured in docs/benchmarks.md,
/// "CPU backend"). Zeroed when made; each matrix is then written by the loader.
pub struct Arena {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

// Safe: the block is plain bytes, written only through `&mut Arena` (while loading) and read
// through shared slices afterwards.
unsafe impl Send for Arena {}
unsafe impl Sync for Arena {}

impl Arena {
    /// Huge pages are 2 MiB on x86-64 and (usually) on aarch64 Linux.
    const HUGE: usize = 2 << 20;

    fn new(len: usize) -> Result<Arena> {
        let huge = cfg!(target_os = "linux") && len >= Arena::HUGE;
        let align = if huge { Arena::HUGE } else { 64 };
        let size = len.max(1).checked_next_multiple_of(align).ok_or_else(|| Error::Input(format!("{len} bytes of matrices are too many")))?;
        let layout = std::alloc::Layout::from_size_align(size, align).map_err(|e| Error::Input(format!("{len} bytes of matrices: {e}")))?;
        // Safe: `layout` has a non-zero size.
        let ptr = std::ptr::NonNull::new(unsafe { std::alloc::alloc(layout) })
            .ok_or_else(|| Error::Input(format!("cannot allocate {} MiB of host memory for the model's matrices", size >> 20)))?;
        #[cfg(target_os = "linux")]
        if huge {
            extern "C" {
                fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
            }
            const MADV_HUGEPAGE: i32 = 14;
            // Safe: the range is the allocation just made. Only advice: the kernel may ignore it
            // (transparent huge pages off), and the result does not matter.
            unsafe { madvise(ptr.as_ptr().cast(), size, MADV_HUGEPAGE) };
        }
        // Safe: the allocation holds `size` bytes; zeroing them makes every slice valid.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, size) };
        Ok(Arena { ptr, layout })
    }

    fn slice_mut(&mut self, at: usize, len: usize) -> &mut [u8] {
        assert!(at.checked_add(len).is_some_and(|e| e <= self.layout.size()), "arena: range out of bounds");
        // Safe: in bounds (checked), initialised (zeroed at creation), and `&mut self` is the
        // only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(at), len) }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // Safe: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// A matrix's bytes: a range of its model's `Arena`.
#[derive(Clone)]
pub struct Bytes {
    arena: Arc<Arena>,
    at: usize,
    len: usize,
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // Safe: the range was checked when the matrix was placed, and the arena is no longer
        // written once shared.
        unsafe { std::slice::from_raw_parts(self.arena.ptr.as_ptr().add(self.at), self.len) }
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({} at {})", self.len, self.at)
    }
}

impl Mat {
    pub fn row_bytes(&self) -> usize {
        kernels::row_bytes(self.ty, self.cols)
    }

    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// Row `r` as f32 values, into `out` (`cols` values).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) -> Result<()> {
        let v = crate::gguf::dequantize(self.ty, self.row(r), self.cols)?;
        out.copy_from_slice(&v);
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.data.len() as u64
    }
}

/// `y = x W^T (+ bias)` where W is the rows of its parts one after another (q/k/v, or gate then
/// up), each part in its own format.
#[derive(Clone, Debug)]
pub struct Linear {
    pub parts: Vec<Mat>,
    pub bias: Option<Vec<f32>>,
    /// Rows of all parts.
    pub out: usize,
    pub cols: usize,
    /// Units of work: (part, first row, rows), a few per thread and more.
    pieces: Vec<(usize, usize, usize)>,
}

/// Weight rows per unit of matmul work.
const PIECE_ROWS: usize = 16;

impl Linear {
    fn new(parts: Vec<Mat>, bias: Option<Vec<f32>>) -> Linear {
        let cols = parts[0].cols;
        let out = parts.iter().map(|p| p.rows).sum();
        let mut pieces = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let mut r = 0;
            while r < p.rows {
                let n = PIECE_ROWS.min(p.rows - r);
                pieces.push((i, r, n));
                r += n;
            }
        }
        Linear { parts, bias, out, cols, pieces }
    }

    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(Mat::bytes).sum()
    }
}

/// A PLT layer's gate (f32: it is small): weight [H, Dh] or [H, D], bias [H], norm [D].
#[derive(Clone, Debug)]
pub struct Gate {
    pub weight: Vec<f32>,
    pub cols: usize,
    pub bias: Vec<f32>,
    pub norm: Option<Vec<f32>>,
}

#[derive(Clone, Debug)]
pub struct CpuLayer {
    pub input_layernorm: Vec<f32>,
    pub qkv: Linear,
    pub o_proj: Linear,
    pub post_attention_layernorm: Vec<f32>,
    /// Gate rows then up rows: [2F, D].
    pub gate_up: Linear,
    pub down: Linear,
    pub gate: Option<Gate>,
}

/// Options of the CPU backend.
#[derive(Clone, Debug, Default)]
pub struct CpuOptions {
    /// Threads (default: one per physical core).
    pub threads: Option<usize>,
    /// Instruction set (default: the best the CPU has, `Simd::detect`).
    pub simd: Option<Simd>,
    /// A pool to share with other models (then `threads` is the pool's); default: a new one.
    pub pool: Option<Arc<Pool>>,
    /// Quantised rows take f32 activations: the GPU backend's numbers, slower. Default (false):
    /// int8 activations.
    pub f32_activations: bool,
}

/// A model on the CPU backend.
pub struct CpuModel {
    pub cfg: Config,
    pub layers: Vec<CpuLayer>,
    /// The embedding [V, D] (one part), also the head when tied.
    pub embed: Linear,
    pub norm: Vec<f32>,
    /// None when tied to the embedding.
    pub lm_head: Option<Linear>,
    pub pool: Arc<Pool>,
    pub simd: Simd,
    /// Quantised rows take f32 activations (`CpuOptions::f32_activations`).
    pub f32_activations: bool,
}

impl CpuModel {
    /// Streams an opened model into host memory. `dtype`: convert every matrix to this float
    /// format (default: keep each as stored; GGUF types the kernels do not read become F16).
    pub fn load(mut model: OpenModel<'_>, dtype: Option<DType>, opts: &CpuOptions, progress: &mut dyn FnMut(f32)) -> Result<CpuModel> {
        model.plan.cfg.validate()?;
        let mut sink = CpuSink { dtype, arena: None, mats: HashMap::new(), vecs: HashMap::new() };
        model.stream(&mut sink, progress)?;
        sink.into_model(&model.plan, opts)
    }

    /// A model from weights in memory (f32), stored as `dtype` (default F32).
    pub fn from_weights(cfg: &Config, w: &crate::weights::Weights, dtype: Option<DType>, opts: &CpuOptions) -> Result<CpuModel> {
        let plan = crate::load::host_plan(cfg, w)?;
        let src = crate::load::HostSource::new(&plan, w);
        CpuModel::load(OpenModel::new(plan, vec![Box::new(src)]), dtype, opts, &mut |_| {})
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The lm_head as a `Linear` (the embedding when tied).
    pub fn head(&self) -> &Linear {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Bytes of the matrices a decode step reads (every layer's and the head).
    pub fn weight_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.qkv.bytes() + l.o_proj.bytes() + l.gate_up.bytes() + l.down.bytes()).sum::<u64>() + self.head().bytes()
    }

    /// Bytes of every tensor held (matrices and vectors).
    pub fn total_bytes(&self) -> u64 {
        let vec = |v: &Vec<f32>| 4 * v.len() as u64;
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                let g = l.gate.as_ref().map_or(0, |g| 4 * (g.weight.len() + g.bias.len() + g.norm.as_ref().map_or(0, Vec::len)) as u64);
                l.qkv.bytes() + l.o_proj.bytes() + l.gate_up.bytes() + l.down.bytes() + vec(&l.input_layernorm) + vec(&l.post_attention_layernorm) + g
            })
            .sum();
        layers + self.embed.bytes() + self.lm_head.as_ref().map_or(0, Linear::bytes) + vec(&self.norm)
    }

    /// Bytes by storage format of those matrices.
    pub fn formats(&self) -> std::collections::BTreeMap<String, u64> {
        let mut m = std::collections::BTreeMap::new();
        let lins = self.layers.iter().flat_map(|l| [&l.qkv, &l.o_proj, &l.gate_up, &l.down]).chain([self.head()]);
        for lin in lins {
            for p in &lin.parts {
                *m.entry(p.ty.name()).or_insert(0) += p.bytes();
            }
        }
        m
    }

    /// "CPU backend (2 threads, avx2+fma+f16c)", and ", f32 activations" when set.
    pub fn describe(&self) -> String {
        let acts = if self.f32_activations { ", f32 activations" } else { "" };
        format!("CPU backend ({} thread{}, {}{acts})", self.threads(), if self.threads() == 1 { "" } else { "s" }, self.simd.name())
    }

    /// `y[r] = lin(x[r])` for `rows` rows of x ([rows, lin.cols]) into y ([rows, lin.out]);
    /// `qa` is scratch for the quantised activations (unused with `f32_activations`).
    pub fn matmul(&self, lin: &Linear, x: &[f32], rows: usize, y: &mut [f32], qa: &mut QActs) {
        self.matmul_ahead(lin, x, rows, y, qa, &[]);
    }

    /// `matmul`, and the bytes of `ahead` (what comes next, e.g. the attention's keys and
    /// values) asked into the caches along the way: each piece of work prefetches its share,
    /// so the requests ride on the weight stream instead of stalling one thread later.
    pub fn matmul_ahead(&self, lin: &Linear, x: &[f32], rows: usize, y: &mut [f32], qa: &mut QActs, ahead: &[&[u8]]) {
        let (k, o) = (lin.cols, lin.out);
        assert!(x.len() >= rows * k && y.len() >= rows * o, "matmul: bad shapes");
        let exact = self.f32_activations;
        if !exact && lin.parts.iter().any(|p| !kernels::is_float(p.ty)) {
            qa.quantize_on(&x[..rows * k], k, Some(&self.pool));
        }
        let qa = &*qa;
        let out = SyncPtr(y.as_mut_ptr());
        let offsets: Vec<usize> = lin.parts.iter().scan(0, |a, p| {
            let at = *a;
            *a += p.rows;
            Some(at)
        }).collect();
        let simd = self.simd;
        let lines: usize = ahead.iter().map(|a| a.len().div_ceil(64)).sum();
        let pieces = lin.pieces.len();
        // Prefill (more rows than a tile): two weight rows per call. Decode (B * L rows)
        // streams the weights from memory, where one row at a time measured faster.
        let pair = rows > TILE && !exact;
        self.pool.chunks(pieces, &|i| {
            if lines > 0 {
                prefetch_share(ahead, lines * i / pieces..lines * (i + 1) / pieces);
            }
            let (part, first, n) = lin.pieces[i];
            let m = &lin.parts[part];
            let float = kernels::is_float(m.ty);
            let rb = m.row_bytes();
            let store = |wr: usize, r0: usize, tile: &[f32]| {
                let col = offsets[part] + wr;
                let b = lin.bias.as_ref().map_or(0.0, |b| b[col]);
                for (j, &v) in tile.iter().enumerate() {
                    // Safe: each (row, column) is written by exactly one piece.
                    unsafe { *out.ptr().add((r0 + j) * o + col) = v + b };
                }
            };
            let mut r0 = 0;
            while r0 < rows {
                let t = TILE.min(rows - r0);
                if float || !exact {
                    // The piece's weight rows in one call: [n, t] results.
                    let mut res = [0f32; PIECE_ROWS * TILE];
                    let (data, out) = (&m.data[first * rb..(first + n) * rb], &mut res[..n * t]);
                    if float {
                        kernels::dot_float_rows(simd, m.ty, data, n, k, x, r0, t, out);
                    } else {
                        kernels::dot_quant_rows(simd, m.ty, data, n, qa, r0, t, pair, out);
                    }
                    for (j, tile) in res[..n * t].chunks_exact(t).enumerate() {
                        store(first + j, r0, tile);
                    }
                    r0 += t;
                    continue;
                }
                let mut tile = [0f32; TILE];
                for wr in first..first + n {
                    let row = &m.data[wr * rb..(wr + 1) * rb];
                    kernels::dot_quant_f32(simd, m.ty, row, k, x, r0, &mut tile[..t]);
                    store(wr, r0, &tile[..t]);
                }
                r0 += t;
            }
        });
    }
}

/// Prefetches cache lines `range` of the concatenated `regions` (64-byte lines per region).
fn prefetch_share(regions: &[&[u8]], range: std::ops::Range<usize>) {
    let mut at = 0;
    for r in regions {
        let n = r.len().div_ceil(64);
        let (lo, hi) = (range.start.max(at), range.end.min(at + n));
        if lo < hi {
            let (a, b) = ((lo - at) * 64, ((hi - at) * 64).min(r.len()));
            kernels::prefetch_l2(&r[a..b]);
        }
        at += n;
        if at >= range.end {
            break;
        }
    }
}

/// A pointer threads write disjoint elements through.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr<T>(pub *mut T);
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// The pointer (a method, so that closures capture the whole `SyncPtr`).
    pub fn ptr(&self) -> *mut T {
        self.0
    }
}

/// A matrix being filled: its place in the arena and the bytes written so far.
struct Placed {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    at: usize,
    len: usize,
    filled: usize,
}

/// Places the streamed tensors: matrices in their storage format in one `Arena` (each at its
/// place, 4 KiB aligned, laid out in the plan's order), vectors in f32.
struct CpuSink {
    dtype: Option<DType>,
    arena: Option<Arena>,
    mats: HashMap<WeightId, Placed>,
    vecs: HashMap<WeightId, Vec<f32>>,
}

impl CpuSink {
    /// Tensors held as f32 vectors rather than matrices in the arena: vectors, and the PLT
    /// gates (small, read by `dot_f32`).
    fn in_f32(t: &PlannedTensor) -> bool {
        t.shape.len() < 2 || matches!(t.weight, WeightId::Layer(_, LayerWeight::PltGate))
    }

    /// The format a float matrix of storage `st` is kept in.
    fn float_format(&self, st: GgmlType) -> GgmlType {
        match self.dtype {
            Some(DType::F32) => GgmlType::F32,
            Some(DType::F16) => GgmlType::F16,
            Some(DType::BF16) => GgmlType::BF16,
            None if st == GgmlType::F32 || st == GgmlType::F16 || st == GgmlType::BF16 => st,
            // Block types the kernels do not read: dequantised, held in F16.
            None => GgmlType::F16,
        }
    }
}

impl Sink for CpuSink {
    fn begin(&mut self, plan: &LoadPlan) -> Result<()> {
        let mut end = 0usize;
        for t in plan.tensors.iter().filter(|t| !CpuSink::in_f32(t)) {
            let ty = if self.wants_blocks(t) { t.storage } else { self.float_format(t.storage) };
            let (rows, cols) = (t.rows(), t.cols());
            let len = rows.checked_mul(kernels::row_bytes(ty, cols)).ok_or_else(|| Error::Input(format!("tensor `{}` is too large", t.name)))?;
            let at = end.next_multiple_of(4096);
            end = at.checked_add(len).ok_or_else(|| Error::Input(format!("tensor `{}` is too large", t.name)))?;
            self.mats.insert(t.weight, Placed { ty, rows, cols, at, len, filled: 0 });
        }
        self.arena = Some(Arena::new(end)?);
        Ok(())
    }

    fn wants_blocks(&self, t: &PlannedTensor) -> bool {
        let block = t.storage.block().map_or(1, |b| b.0 as usize);
        self.dtype.is_none()
            && kernels::kept(t.storage)
            && !kernels::is_float(t.storage)
            && t.cols().is_multiple_of(block)
            && !CpuSink::in_f32(t)
    }

    fn blocks(&mut self, t: &PlannedTensor, first_row: usize, raw: &[u8]) -> Result<()> {
        self.place(t, first_row, raw.len())?.copy_from_slice(raw);
        Ok(())
    }

    fn rows(&mut self, t: &PlannedTensor, first_row: usize, values: &[f32]) -> Result<()> {
        if CpuSink::in_f32(t) {
            let v = self.vecs.entry(t.weight).or_insert_with(|| vec![0.0; t.elems()]);
            let at = first_row * t.cols();
            let dst = v.get_mut(at..at + values.len()).ok_or_else(|| Error::Input(format!("tensor `{}`: more values arrived than its shape holds", t.name)))?;
            dst.copy_from_slice(values);
            return Ok(());
        }
        let ty = self.float_format(t.storage);
        let size = if ty == GgmlType::F32 { 4 } else { 2 };
        let out = self.place(t, first_row, values.len() * size)?;
        for (o, &v) in out.chunks_exact_mut(size).zip(values) {
            match ty {
                GgmlType::F32 => o.copy_from_slice(&v.to_le_bytes()),
                GgmlType::F16 => o.copy_from_slice(&half::f16::from_f32(v).to_le_bytes()),
                _ => o.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

impl CpuSink {
    /// The next `len` bytes of tensor `t`'s place, which must start at row `first_row`.
    fn place(&mut self, t: &PlannedTensor, first_row: usize, len: usize) -> Result<&mut [u8]> {
        let m = self.mats.get_mut(&t.weight).ok_or_else(|| Error::Input(format!("tensor `{}` was not in the load plan", t.name)))?;
        if m.filled != first_row * kernels::row_bytes(m.ty, m.cols) {
            return Err(Error::Input(format!("tensor `{}`: rows arrived out of order", t.name)));
        }
        if m.filled + len > m.len {
            return Err(Error::Input(format!("tensor `{}`: more rows arrived than its shape holds", t.name)));
        }
        let at = m.at + m.filled;
        m.filled += len;
        Ok(self.arena.as_mut().expect("begin made the arena").slice_mut(at, len))
    }

    fn into_model(mut self, plan: &LoadPlan, opts: &CpuOptions) -> Result<CpuModel> {
        use LayerWeight as L;
        let cfg = plan.cfg.clone();
        let missing = |w: WeightId| Error::MissingTensor { model: plan.source.clone(), name: crate::load::safetensors::tensor_name(w) };
        let arena = Arc::new(match self.arena.take() {
            Some(a) => a,
            None => Arena::new(0)?,
        });
        // A matrix the plan placed (None when it has none), whole.
        let mut take = |w: WeightId| -> Result<Option<Mat>> {
            let Some(p) = self.mats.remove(&w) else { return Ok(None) };
            if p.filled != p.len {
                return Err(Error::Input(format!("tensor `{}`: {} of its {} bytes arrived", crate::load::safetensors::tensor_name(w), p.filled, p.len)));
            }
            Ok(Some(Mat { ty: p.ty, rows: p.rows, cols: p.cols, data: Bytes { arena: arena.clone(), at: p.at, len: p.len } }))
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        let mut mats = Vec::new();
        for i in 0..cfg.num_hidden_layers {
            let l = |w| WeightId::Layer(i, w);
            let mut mat = |w| take(w)?.ok_or_else(|| missing(w));
            let qkv = vec![mat(l(L::QProj))?, mat(l(L::KProj))?, mat(l(L::VProj))?];
            let o = mat(l(L::OProj))?;
            let gu = vec![mat(l(L::GateProj))?, mat(l(L::UpProj))?];
            let down = mat(l(L::DownProj))?;
            mats.push((qkv, o, gu, down));
        }
        let embed = take(WeightId::EmbedTokens)?.ok_or_else(|| missing(WeightId::EmbedTokens))?;
        let lm_head = take(WeightId::LmHead)?;
        let mut vec = |w: WeightId| self.vecs.remove(&w);
        for (i, (qkv, o, gu, down)) in mats.into_iter().enumerate() {
            let l = |w| WeightId::Layer(i, w);
            let bias = match (vec(l(L::QBias)), vec(l(L::KBias)), vec(l(L::VBias))) {
                (None, None, None) => None,
                (q, k, v) => {
                    let mut b = q.unwrap_or_else(|| vec![0.0; cfg.q_dim()]);
                    b.extend(k.unwrap_or_else(|| vec![0.0; cfg.kv_dim()]));
                    b.extend(v.unwrap_or_else(|| vec![0.0; cfg.kv_dim()]));
                    Some(b)
                }
            };
            let gate = match vec(l(L::PltGate)) {
                Some(weight) if cfg.is_plt() => {
                    let bias = vec(l(L::PltGateBias)).ok_or_else(|| missing(l(L::PltGateBias)))?;
                    // [H, cols] (the plan checked the shape against the config).
                    let cols = weight.len() / cfg.num_attention_heads.max(1);
                    Some(Gate { weight, cols, bias, norm: vec(l(L::PltGateNorm)) })
                }
                _ => None,
            };
            if cfg.is_plt() && gate.is_none() {
                return Err(missing(l(L::PltGate)));
            }
            layers.push(CpuLayer {
                input_layernorm: vec(l(L::InputLayernorm)).ok_or_else(|| missing(l(L::InputLayernorm)))?,
                qkv: Linear::new(qkv, bias),
                o_proj: Linear::new(vec![o], None),
                post_attention_layernorm: vec(l(L::PostAttentionLayernorm)).ok_or_else(|| missing(l(L::PostAttentionLayernorm)))?,
                gate_up: Linear::new(gu, None),
                down: Linear::new(vec![down], None),
                gate,
            });
        }
        let norm = vec(WeightId::Norm).ok_or_else(|| missing(WeightId::Norm))?;
        let threads = opts.threads.unwrap_or_else(super::pool::default_threads);
        Ok(CpuModel {
            cfg,
            layers,
            embed: Linear::new(vec![embed], None),
            norm,
            lm_head: lm_head.map(|m| Linear::new(vec![m], None)),
            pool: opts.pool.clone().unwrap_or_else(|| Arc::new(Pool::new(threads))),
            simd: opts.simd.unwrap_or_else(Simd::detect),
            f32_activations: opts.f32_activations,
        })
    }
}
