//! The CPU backend's dot products: one weight row against a tile of up to `TILE` activation
//! rows, for every storage format the backend keeps. Two implementations of each, chosen at
//! run time (`Simd::detect`): AVX2 + FMA + F16C on x86-64 where the CPU has them, and portable
//! Rust everywhere else. Accumulation is f32.
//!
//! - Float rows (F32, F16, BF16) take f32 activations: 8-wide FMAs (16-wide where the CPU has
//!   AVX-512), several accumulators per activation row, a scalar tail for lengths that are not
//!   a multiple of 16.
//! - Quantised rows (GGUF blocks as in the file: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K,
//!   Q6_K) take activations quantised to int8 in blocks of 32 (`QActs`: a scale per block and
//!   the integer sums of each 16 values), as CPU runtimes do. Every format is read as units of 32
//!   weights `w_i = s_h * (q_i - off) + min` (s_h: the unit's scale, one per half of 16 for
//!   Q6_K; q_i unsigned, or signed for Q8_0), so a unit's dot product with an activation block
//!   (x_i = dx * p_i) is exact integer arithmetic plus two scalar terms:
//!   `sum_h s_h dx (sum_{i in h} q_i p_i - off S_h) + min dx (S_0 + S_1)`, S_h = sum_{i in h} p_i.
//!   AVX2 forms the integer sums with `maddubs` (unsigned x signed bytes to pairs of i16) and
//!   `madd` (to i32), AVX-VNNI and AVX512-VNNI with `vpdpbusd` (the same sums in one
//!   instruction): lanes 0-3 hold the first 16 products, lanes 4-7 the second. A call takes one
//!   weight row, or two (prefill: each activation block loaded once for both).
//!
//! The result of an activation row never depends on the tile it was computed in, nor on how
//! many weight rows shared the call (each (weight row, activation row) has its own accumulator
//! and the same order of operations), so fused and sequential passes, prefill, and any number
//! of threads give the same numbers.

use crate::gguf::GgmlType;

/// Activation rows a kernel call handles at most (a weight row's units are decoded once for
/// all of them).
pub const TILE: usize = 4;

/// The instruction sets a kernel may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simd {
    Portable,
    /// x86-64 AVX2 with FMA and F16C.
    Avx2,
    /// AVX2 with FMA and F16C, and AVX-VNNI for the int8 dot products (`vpdpbusd`: one
    /// instruction where AVX2 takes two; the same sums).
    Avx2Vnni,
    /// AVX2 with FMA and F16C, and AVX512-VNNI with AVX512VL for the int8 dot products: the
    /// same `vpdpbusd` on 256-bit registers, EVEX-encoded (CPUs with AVX-512 but not AVX-VNNI,
    /// e.g. AMD Zen 4 as some hypervisors report it, Intel Ice Lake and later servers).
    Avx512Vnni,
}

impl Simd {
    /// The best the CPU offers. `PLT_CPU_SIMD=portable` or `=avx2` caps it (for tests and
    /// A/B runs).
    pub fn detect() -> Simd {
        let cap = std::env::var("PLT_CPU_SIMD").unwrap_or_default().to_ascii_lowercase();
        if cap == "portable" {
            return Simd::Portable;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                if cap != "avx2" && is_x86_feature_detected!("avxvnni") {
                    return Simd::Avx2Vnni;
                }
                if cap != "avx2" && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
                    return Simd::Avx512Vnni;
                }
                return Simd::Avx2;
            }
        }
        Simd::Portable
    }

    /// Whether this CPU can run `self`'s code.
    pub fn available(self) -> bool {
        match self {
            Simd::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c"),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2Vnni => Simd::Avx2.available() && is_x86_feature_detected!("avxvnni"),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512Vnni => Simd::Avx2.available() && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Simd::Portable => "portable",
            Simd::Avx2 => "avx2+fma+f16c",
            Simd::Avx2Vnni => "avx2+fma+f16c+avx-vnni",
            Simd::Avx512Vnni => "avx2+fma+f16c+avx512-vnni",
        }
    }
}

/// Whether the backend computes with rows of `ty` as they are (without converting them).
pub fn kept(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q8_0
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
    )
}

/// Whether `ty` is a float format (activations stay f32).
pub fn is_float(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// Bytes of one row of `cols` values of `ty` (whole blocks; `kept` types only).
pub fn row_bytes(ty: GgmlType, cols: usize) -> usize {
    match ty {
        GgmlType::F32 => 4 * cols,
        GgmlType::F16 | GgmlType::BF16 => 2 * cols,
        GgmlType::Q8_0 => cols / 32 * 34,
        GgmlType::Q4_0 => cols / 32 * 18,
        GgmlType::Q4_1 => cols / 32 * 20,
        GgmlType::Q5_0 => cols / 32 * 22,
        GgmlType::Q5_1 => cols / 32 * 24,
        GgmlType::Q4_K => cols / 256 * 144,
        GgmlType::Q5_K => cols / 256 * 176,
        GgmlType::Q6_K => cols / 256 * 210,
        other => {
            let (b, s) = other.block().unwrap_or((1, 4));
            cols / b as usize * s as usize
        }
    }
}

/// Activation rows quantised to int8 in blocks of 32.
#[derive(Clone, Debug, Default)]
pub struct QActs {
    /// Values per row (a multiple of 32).
    pub cols: usize,
    pub q: Vec<i8>,
    /// Scale of each block of 32 (x = d * q).
    pub d: Vec<f32>,
    /// Sum of the q of each 16 values.
    pub s: Vec<i32>,
    /// d times the sum of the q of each block of 32 (the block's sum of values, as the dot
    /// products see them).
    pub sx: Vec<f32>,
    /// -128 times the sum of each 4 quants (8 per block): with it VNNI multiplies weights
    /// offset to unsigned (q + 128) by the activations as they are, `vpdpbusd` starting from
    /// these sums giving the signed dot product exactly.
    pub nl: Vec<i32>,
}

impl QActs {
    /// Quantises `rows` rows of `x` ([rows, cols], cols a multiple of 32) in place of the
    /// previous contents.
    pub fn quantize(&mut self, x: &[f32], cols: usize) {
        self.quantize_on(x, cols, None);
    }

    /// `quantize`, split over `pool`'s threads when there are many rows (prefill).
    pub fn quantize_on(&mut self, x: &[f32], cols: usize, pool: Option<&super::pool::Pool>) {
        debug_assert!(cols.is_multiple_of(32) && x.len().is_multiple_of(cols.max(1)));
        let blocks = x.len() / 32;
        self.cols = cols;
        self.q.resize(x.len(), 0);
        self.d.resize(blocks, 0.0);
        self.s.resize(2 * blocks, 0);
        self.sx.resize(blocks, 0.0);
        self.nl.resize(8 * blocks, 0);
        // Pieces of 64 blocks (2,048 values), each written by one thread.
        const PIECE: usize = 64;
        let (q, d, s, sx) = (super::model::SyncPtr(self.q.as_mut_ptr()), super::model::SyncPtr(self.d.as_mut_ptr()), super::model::SyncPtr(self.s.as_mut_ptr()), super::model::SyncPtr(self.sx.as_mut_ptr()));
        let nl = super::model::SyncPtr(self.nl.as_mut_ptr());
        let piece = |p: usize| {
            for b in PIECE * p..(PIECE * (p + 1)).min(blocks) {
                // Safe: block b's outputs are written by this piece only, inside the lengths set above.
                unsafe {
                    let out = std::slice::from_raw_parts_mut(q.ptr().add(32 * b), 32);
                    let (db, s0, s1) = quantize_block(&x[32 * b..32 * b + 32], out);
                    *d.ptr().add(b) = db;
                    *s.ptr().add(2 * b) = s0;
                    *s.ptr().add(2 * b + 1) = s1;
                    *sx.ptr().add(b) = db * (s0 + s1) as f32;
                    for (k, four) in out.chunks_exact(4).enumerate() {
                        *nl.ptr().add(8 * b + k) = -128 * four.iter().map(|&v| v as i32).sum::<i32>();
                    }
                }
            }
        };
        let pieces = blocks.div_ceil(PIECE);
        match pool {
            Some(pool) if pieces >= 4 => pool.chunks(pieces, &piece),
            _ => (0..pieces).for_each(piece),
        }
    }

    fn rows(&self) -> usize {
        self.q.len() / self.cols.max(1)
    }
}

/// One block of 32 values to int8: its scale and the sums of each half's quants.
#[inline]
fn quantize_block(xb: &[f32], q: &mut [i8]) -> (f32, i32, i32) {
    let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(xb) {
        // Round half away from zero; |v * inv| <= 127 (a cast truncates, and saturates).
        let y = v * inv;
        *q = (y + 0.5f32.copysign(y)) as i8;
    }
    (d, q[..16].iter().map(|&v| v as i32).sum(), q[16..].iter().map(|&v| v as i32).sum())
}

/// Runs `$by_n!(CODE)` with the format code `$f` as a literal (for const generics).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_macros))]
macro_rules! by_format {
    ($f:expr, $by_n:ident) => {
        match $f {
            Q8_0 => $by_n!(0),
            Q4_0 => $by_n!(1),
            Q4_1 => $by_n!(2),
            Q5_0 => $by_n!(3),
            Q5_1 => $by_n!(4),
            Q4_K => $by_n!(5),
            Q5_K => $by_n!(6),
            _ => $by_n!(7),
        }
    };
}

/// `out[i] = W_row . x[r0 + i]` for the `out.len()` (<= TILE) float activation rows starting at
/// `r0` of `x` ([rows, cols]); `row` holds `cols` values of `ty` (F32, F16 or BF16).
pub fn dot_float(simd: Simd, ty: GgmlType, row: &[u8], cols: usize, x: &[f32], r0: usize, out: &mut [f32]) {
    let n = out.len();
    assert!(n <= TILE, "dot_float: bad shapes");
    if n > 0 {
        dot_float_rows(simd, ty, row, 1, cols, x, r0, n, out);
    }
}

/// `out[j * t + i] = W_j . x[r0 + i]` for the `rows` weight rows of `data` (consecutive rows of
/// `cols` values of `ty`: F32, F16 or BF16) and the `t` (<= TILE) f32 activation rows from
/// `r0` of `x` ([rows, cols]): a matmul's piece of work in one call. With AVX-512 the kernel
/// is 16 wide (`Simd::Avx512Vnni`), else 8 wide.
#[allow(clippy::too_many_arguments)]
pub fn dot_float_rows(simd: Simd, ty: GgmlType, data: &[u8], rows: usize, cols: usize, x: &[f32], r0: usize, t: usize, out: &mut [f32]) {
    let rb = row_bytes(ty, cols);
    assert!(
        (1..=TILE).contains(&t) && data.len() >= rows * rb && x.len() >= (r0 + t) * cols && out.len() >= rows * t,
        "dot_float_rows: bad shapes"
    );
    let fmt = float_code(ty);
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 | Simd::Avx2Vnni | Simd::Avx512Vnni => unsafe {
            // Safe: each variant is chosen only where the CPU has its instructions (`Simd`;
            // AVX512-VNNI comes with AVX512F); reads stay inside `data` and `x`, writes inside
            // `out` (checked above).
            macro_rules! by_n {
                ($kern:ident, $f:literal) => {
                    match t {
                        1 => avx2::$kern::<$f, 1>(data, rb, rows, cols, x, r0, out),
                        2 => avx2::$kern::<$f, 2>(data, rb, rows, cols, x, r0, out),
                        3 => avx2::$kern::<$f, 3>(data, rb, rows, cols, x, r0, out),
                        _ => avx2::$kern::<$f, 4>(data, rb, rows, cols, x, r0, out),
                    }
                };
            }
            match (fmt, simd == Simd::Avx512Vnni) {
                (0, false) => by_n!(float_rows, 0),
                (1, false) => by_n!(float_rows, 1),
                (_, false) => by_n!(float_rows, 2),
                (0, true) => by_n!(float_rows512, 0),
                (1, true) => by_n!(float_rows512, 1),
                (_, true) => by_n!(float_rows512, 2),
            }
        },
        _ => {
            for j in 0..rows {
                portable::dot_float(fmt, &data[j * rb..(j + 1) * rb], cols, x, r0, &mut out[j * t..(j + 1) * t]);
            }
        }
    }
}

/// `out[i] = W_row . x[r0 + i]` for quantised activation rows; `row` holds `units * 32`
/// weights of the quantised type `ty`.
pub fn dot_quant(simd: Simd, ty: GgmlType, row: &[u8], acts: &QActs, r0: usize, out: &mut [f32]) {
    let n = out.len();
    let cols = acts.cols;
    assert!(n <= TILE && r0 + n <= acts.rows() && row.len() >= row_bytes(ty, cols), "dot_quant: bad shapes");
    let f = quant_code(ty);
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 | Simd::Avx2Vnni | Simd::Avx512Vnni => dot_quant_rows(simd, ty, row, 1, acts, r0, n, false, out),
        _ => portable::dot_quant(f, row, acts, r0, out),
    }
}

/// `out[j * t + i] = W_j . x[r0 + i]` for the `rows` weight rows of `data` (consecutive rows
/// of `ty`, each `acts.cols` weights) and the `t` (<= TILE) quantised activation rows from
/// `r0`: a matmul's piece of work in one call. `pairs`: two weight rows per sweep over the
/// activation blocks (each block loaded once for both; prefill's tiles), else one (decode,
/// where the weights stream from memory). Every row's result has the same bits either way,
/// and the same as `dot_quant`'s.
#[allow(clippy::too_many_arguments)]
pub fn dot_quant_rows(simd: Simd, ty: GgmlType, data: &[u8], rows: usize, acts: &QActs, r0: usize, t: usize, pairs: bool, out: &mut [f32]) {
    let cols = acts.cols;
    let rb = row_bytes(ty, cols);
    assert!(
        (1..=TILE).contains(&t) && r0 + t <= acts.rows() && data.len() >= rows * rb && out.len() >= rows * t,
        "dot_quant_rows: bad shapes"
    );
    let f = quant_code(ty);
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 | Simd::Avx2Vnni | Simd::Avx512Vnni => unsafe {
            // Safe: each variant is chosen only where the CPU has its instructions (`Simd`);
            // every unit read lies inside `data` and every write inside `out` (checked above).
            macro_rules! by_n {
                ($f:literal) => {
                    match (simd, t) {
                        (Simd::Avx2Vnni, 1) => avx2::rows_vnni::<$f, 1>(data, rb, rows, acts, r0, pairs, out),
                        (Simd::Avx2Vnni, 2) => avx2::rows_vnni::<$f, 2>(data, rb, rows, acts, r0, pairs, out),
                        (Simd::Avx2Vnni, 3) => avx2::rows_vnni::<$f, 3>(data, rb, rows, acts, r0, pairs, out),
                        (Simd::Avx2Vnni, _) => avx2::rows_vnni::<$f, 4>(data, rb, rows, acts, r0, pairs, out),
                        (Simd::Avx512Vnni, 1) => avx2::rows_vnni512::<$f, 1>(data, rb, rows, acts, r0, pairs, out),
                        (Simd::Avx512Vnni, 2) => avx2::rows_vnni512::<$f, 2>(data, rb, rows, acts, r0, pairs, out),
                        (Simd::Avx512Vnni, 3) => avx2::rows_vnni512::<$f, 3>(data, rb, rows, acts, r0, pairs, out),
                        (Simd::Avx512Vnni, _) => avx2::rows_vnni512::<$f, 4>(data, rb, rows, acts, r0, pairs, out),
                        (_, 1) => avx2::rows::<$f, 1>(data, rb, rows, acts, r0, pairs, out),
                        (_, 2) => avx2::rows::<$f, 2>(data, rb, rows, acts, r0, pairs, out),
                        (_, 3) => avx2::rows::<$f, 3>(data, rb, rows, acts, r0, pairs, out),
                        (_, _) => avx2::rows::<$f, 4>(data, rb, rows, acts, r0, pairs, out),
                    }
                };
            }
            by_format!(f, by_n)
        },
        _ => {
            // (One row per sweep: `pairs` only changes how the SIMD kernels walk the rows.)
            let _ = pairs;
            for j in 0..rows {
                portable::dot_quant(f, &data[j * rb..(j + 1) * rb], acts, r0, &mut out[j * t..(j + 1) * t]);
            }
        }
    }
}

/// `out[i] = W_row . x[r0 + i]` for the `out.len()` (<= TILE) f32 activation rows starting at
/// `r0` of `x` ([rows, cols]); `row` holds `cols` weights of the quantised type `ty`. The
/// weights are dequantised to f32 (as the GPU backend does) and multiplied by the activations
/// as they are: no activation rounding, slower than `dot_quant`.
pub fn dot_quant_f32(simd: Simd, ty: GgmlType, row: &[u8], cols: usize, x: &[f32], r0: usize, out: &mut [f32]) {
    let n = out.len();
    let block = ty.block().map_or(0, |(b, _)| b as usize);
    assert!(
        n <= TILE && block > 0 && cols.is_multiple_of(block) && row.len() >= row_bytes(ty, cols) && x.len() >= (r0 + n) * cols,
        "dot_quant_f32: bad shapes"
    );
    let f = quant_code(ty);
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 | Simd::Avx2Vnni | Simd::Avx512Vnni => unsafe {
            // Safe: as in `dot_float`; every unit read lies inside `row` (whole blocks, checked
            // above) and every activation read inside `x`.
            macro_rules! by_n {
                ($f:literal) => {
                    match n {
                        1 => avx2::dot_quant_f32::<$f, 1>(row, cols, x, r0, out),
                        2 => avx2::dot_quant_f32::<$f, 2>(row, cols, x, r0, out),
                        3 => avx2::dot_quant_f32::<$f, 3>(row, cols, x, r0, out),
                        _ => avx2::dot_quant_f32::<$f, 4>(row, cols, x, r0, out),
                    }
                };
            }
            by_format!(f, by_n)
        },
        _ => portable::dot_quant_f32(f, row, cols, x, r0, out),
    }
}

/// `sum a[i] b[i]` in f32 (attention's q.k), eight partial sums in a fixed order: the same
/// value for the same inputs on a given `Simd`.
#[inline]
pub fn dot_f32(simd: Simd, a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    match simd {
        #[cfg(target_arch = "x86_64")]
        // Safe: only chosen where the CPU has AVX2 and FMA; reads stay below `n`.
        Simd::Avx2 | Simd::Avx2Vnni | Simd::Avx512Vnni => unsafe { avx2::dot_f32(&a[..n], &b[..n]) },
        _ => dot_portable(&a[..n], |i| b[i]),
    }
}

/// The portable dot product: eight partial sums (lane i % 8), then the tail, in a fixed order.
#[inline]
pub fn dot_portable(a: &[f32], b: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let whole = a.len() / 8 * 8;
    for (i, &x) in a[..whole].iter().enumerate() {
        acc[i % 8] += x * b(i);
    }
    let mut s: f32 = acc.iter().sum();
    for (i, &x) in a.iter().enumerate().skip(whole) {
        s += x * b(i);
    }
    s
}

/// `y[i] += w * x[i]` (attention's weighted sum of values).
#[inline]
pub fn axpy(simd: Simd, w: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    match simd {
        #[cfg(target_arch = "x86_64")]
        // Safe: as in `dot_f32`.
        Simd::Avx2 | Simd::Avx2Vnni | Simd::Avx512Vnni => unsafe { avx2::axpy(w, &x[..n], &mut y[..n]) },
        _ => {
            for (y, &x) in y[..n].iter_mut().zip(&x[..n]) {
                *y += w * x;
            }
        }
    }
}

/// `sum a[i] b[i]` with `b` in f16 (an f16 KV cache's keys).
#[inline]
pub fn dot_f16(simd: Simd, a: &[f32], b: &[half::f16]) -> f32 {
    let n = a.len().min(b.len());
    match simd {
        #[cfg(target_arch = "x86_64")]
        // Safe: only chosen where the CPU has AVX2, FMA and F16C; reads stay below `n`.
        Simd::Avx2 | Simd::Avx2Vnni | Simd::Avx512Vnni => unsafe { avx2::dot_f16(&a[..n], &b[..n]) },
        _ => dot_portable(&a[..n], |i| b[i].to_f32()),
    }
}

/// `y[i] += w * x[i]` with `x` in f16 (an f16 KV cache's values).
#[inline]
pub fn axpy_f16(simd: Simd, w: f32, x: &[half::f16], y: &mut [f32]) {
    let n = x.len().min(y.len());
    match simd {
        #[cfg(target_arch = "x86_64")]
        // Safe: as in `dot_f16`.
        Simd::Avx2 | Simd::Avx2Vnni | Simd::Avx512Vnni => unsafe { avx2::axpy_f16(w, &x[..n], &mut y[..n]) },
        _ => {
            for (y, x) in y[..n].iter_mut().zip(&x[..n]) {
                *y += w * x.to_f32();
            }
        }
    }
}

/// The sum of `x` (a read of every value, as fast as the loads go: the bandwidth yardstick of
/// `plt bench`).
pub fn sum_f32(simd: Simd, x: &[f32]) -> f32 {
    match simd {
        #[cfg(target_arch = "x86_64")]
        // Safe: only chosen where the CPU has AVX2.
        Simd::Avx2 | Simd::Avx2Vnni | Simd::Avx512Vnni => unsafe { avx2::sum_f32(x) },
        _ => {
            let mut acc = [0f32; 16];
            let c = x.chunks_exact(16);
            let r: f32 = c.remainder().iter().sum();
            for v in c {
                for i in 0..16 {
                    acc[i] += v[i];
                }
            }
            acc.iter().sum::<f32>() + r
        }
    }
}

/// One head's key or value of one position, as a cache stores it.
#[derive(Clone, Copy)]
pub enum KvRow<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
}

/// SiLU: `x / (1 + e^-x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + crate::cpu::session::exp(-x))
}

/// SwiGLU's product `out[j] = silu(gate[j]) * up[j]`; the same numbers on every `Simd`.
pub fn swiglu(simd: Simd, gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() >= out.len() && up.len() >= out.len(), "swiglu: bad shapes");
    match simd {
        #[cfg(target_arch = "x86_64")]
        // Safe: only chosen where the CPU has AVX2, FMA and F16C; reads stay below out.len().
        Simd::Avx2 | Simd::Avx2Vnni | Simd::Avx512Vnni => unsafe { avx2::swiglu(gate, up, out) },
        _ => out.iter_mut().enumerate().for_each(|(j, o)| *o = silu(gate[j]) * up[j]),
    }
}

/// Asks for `bytes` to be brought into the core's L2 cache ahead of use (a hint; no-op where
/// the instruction set has none).
pub fn prefetch_l2<T>(data: &[T]) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
    #[cfg(target_arch = "x86_64")]
    {
        let (p, n) = (data.as_ptr() as *const i8, std::mem::size_of_val(data));
        let mut o = 0;
        while o < n {
            // Safe: a prefetch never faults; the address is inside `data`.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p.add(o)) };
            o += 64;
        }
    }
}

/// Scratch of `attend_many`, kept by the caller from call to call (no allocation once grown).
#[derive(Default)]
pub struct AttendScratch {
    scores: Vec<f32>,
    /// Each position's key and value: address and whether it is f16 (the AVX2 kernel).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    rows: Vec<[(usize, bool); 2]>,
}

/// Attention of one head for several queries over the same positions: `kv(p, value)` gives
/// position p's key (or value); query i's output goes to `outs[i * Dh..]`. Each key and value is read
/// once for all queries, and query i's numbers are what it gets alone (scores, softmax and the
/// weighted sum in position order, the same operations whatever the other queries are).
pub fn attend_many<'a, K: Fn(usize, bool) -> KvRow<'a>>(
    simd: Simd,
    qs: &[&[f32]],
    range: std::ops::Range<usize>,
    kv: &K,
    outs: &mut [f32],
    scratch: &mut AttendScratch,
) {
    assert!(!qs.is_empty() && qs.iter().all(|q| q.len() == qs[0].len()) && outs.len() >= qs.len() * qs[0].len(), "attend_many: bad shapes");
    match simd {
        #[cfg(target_arch = "x86_64")]
        // Safe: only chosen where the CPU has AVX2, FMA and F16C.
        Simd::Avx2 | Simd::Avx2Vnni | Simd::Avx512Vnni => unsafe { avx2::attend_many(qs, range, kv, outs, scratch) },
        _ => attend_many_with(qs, range, kv, outs, &mut scratch.scores, |q, k| match k {
            KvRow::F32(k) => dot_f32(Simd::Portable, q, k),
            KvRow::F16(k) => dot_f16(Simd::Portable, q, k),
        }, |w, v, o| match v {
            KvRow::F32(v) => axpy(Simd::Portable, w, v, o),
            KvRow::F16(v) => axpy_f16(Simd::Portable, w, v, o),
        }),
    }
}

/// The body of `attend_many`, over a dot product and an axpy of one instruction set.
#[inline(always)]
fn attend_many_with<'a, K, D, A>(qs: &[&[f32]], range: std::ops::Range<usize>, kv: &K, outs: &mut [f32], scores: &mut Vec<f32>, dot: D, axpy: A)
where
    K: Fn(usize, bool) -> KvRow<'a>,
    D: Fn(&[f32], KvRow<'_>) -> f32,
    A: Fn(f32, KvRow<'_>, &mut [f32]),
{
    let (n, len) = (qs.len(), range.len());
    let scale = 1.0 / (qs[0].len() as f32).sqrt();
    scores.clear();
    scores.resize(n * len, 0.0);
    // scores[i * len + j]: query i against position range.start + j.
    for (j, p) in range.clone().enumerate() {
        let k = kv(p, false);
        for (i, q) in qs.iter().enumerate() {
            scores[i * len + j] = dot(q, k) * scale;
        }
    }
    let mut z = [0f32; 16];
    let mut zs = Vec::new();
    let z: &mut [f32] = if n <= 16 { &mut z[..n] } else { zs.resize(n, 0.0); &mut zs };
    for (i, sc) in scores.chunks_mut(len).enumerate() {
        let max = sc.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        for s in sc.iter_mut() {
            *s = super::session::exp(*s - max);
            z[i] += *s;
        }
    }
    let dh = qs[0].len();
    outs[..n * dh].iter_mut().for_each(|x| *x = 0.0);
    for (j, p) in range.enumerate() {
        let v = kv(p, true);
        for (i, o) in outs.chunks_mut(dh).take(n).enumerate() {
            axpy(scores[i * len + j], v, o);
        }
    }
    for (o, &z) in outs.chunks_mut(dh).zip(z.iter()) {
        o.iter_mut().for_each(|x| *x /= z);
    }
}

fn float_code(ty: GgmlType) -> u8 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::BF16 => 2,
        other => panic!("dot_float: {} is not a float format", other.name()),
    }
}

const Q8_0: u8 = 0;
const Q4_0: u8 = 1;
const Q4_1: u8 = 2;
const Q5_0: u8 = 3;
const Q5_1: u8 = 4;
const Q4_K: u8 = 5;
const Q5_K: u8 = 6;
const Q6_K: u8 = 7;

fn quant_code(ty: GgmlType) -> u8 {
    match ty {
        GgmlType::Q8_0 => Q8_0,
        GgmlType::Q4_0 => Q4_0,
        GgmlType::Q4_1 => Q4_1,
        GgmlType::Q5_0 => Q5_0,
        GgmlType::Q5_1 => Q5_1,
        GgmlType::Q4_K => Q4_K,
        GgmlType::Q5_K => Q5_K,
        GgmlType::Q6_K => Q6_K,
        other => panic!("dot_quant: {} is not a kept quantised format", other.name()),
    }
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Q4_K / Q5_K: the 6-bit scale and min of sub-block `j` (0..8) from the 12 packed bytes.
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        (((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4)) as f32, ((q[j + 4] >> 4) | ((q[j] >> 6) << 4)) as f32)
    }
}

/// The scalars of one unit of 32 weights: `w_i = s[i / 16] * (q_i - off) + min`.
#[derive(Clone, Copy, Debug)]
struct UnitScales {
    s: [f32; 2],
    off: i32,
    min: f32,
}

/// The scalars of unit `u` of a row of format `f`, and the byte offsets of its quants: for the
/// 32-weight formats the block starts at `u * block_bytes`.
#[inline(always)]
fn unit_scales(f: u8, row: &[u8], u: usize) -> UnitScales {
    let one = |d: f32, off: i32, min: f32| UnitScales { s: [d, d], off, min };
    match f {
        Q8_0 => one(f16_at(row, 34 * u), 0, 0.0),
        Q4_0 => one(f16_at(row, 18 * u), 8, 0.0),
        Q4_1 => one(f16_at(row, 20 * u), 0, f16_at(row, 20 * u + 2)),
        Q5_0 => one(f16_at(row, 22 * u), 16, 0.0),
        Q5_1 => one(f16_at(row, 24 * u), 0, f16_at(row, 24 * u + 2)),
        Q4_K | Q5_K => {
            let b = &row[if f == Q4_K { 144 } else { 176 } * (u / 8)..];
            let (sc, m) = scale_min_k4(u % 8, &b[4..16]);
            one(f16_at(b, 0) * sc, 0, -f16_at(b, 2) * m)
        }
        _ => {
            let b = &row[210 * (u / 8)..];
            let (d, j) = (f16_at(b, 208), u % 8);
            UnitScales { s: [d * (b[192 + 2 * j] as i8) as f32, d * (b[192 + 2 * j + 1] as i8) as f32], off: 32, min: 0.0 }
        }
    }
}

mod portable {
    use super::*;

    pub fn dot_float(fmt: u8, row: &[u8], cols: usize, x: &[f32], r0: usize, out: &mut [f32]) {
        let w = |i: usize| -> f32 {
            match fmt {
                0 => f32::from_le_bytes([row[4 * i], row[4 * i + 1], row[4 * i + 2], row[4 * i + 3]]),
                1 => f16_at(row, 2 * i),
                _ => half::bf16::from_le_bytes([row[2 * i], row[2 * i + 1]]).to_f32(),
            }
        };
        for (o, out) in out.iter_mut().enumerate() {
            *out = dot_portable(&x[(r0 + o) * cols..(r0 + o + 1) * cols], w);
        }
    }

    /// Unit `u`'s 32 quants (unsigned, or int8 bits for Q8_0).
    pub fn unit_quants(f: u8, row: &[u8], u: usize) -> [u8; 32] {
        let mut q = [0u8; 32];
        let nib = |qs: &[u8], q: &mut [u8; 32]| {
            for j in 0..16 {
                q[j] = qs[j] & 0xF;
                q[j + 16] = qs[j] >> 4;
            }
        };
        match f {
            Q8_0 => q.copy_from_slice(&row[34 * u + 2..34 * u + 34]),
            Q4_0 => nib(&row[18 * u + 2..], &mut q),
            Q4_1 => nib(&row[20 * u + 4..], &mut q),
            Q5_0 | Q5_1 => {
                let o = if f == Q5_0 { 22 * u + 2 } else { 24 * u + 4 };
                let qh = u32::from_le_bytes([row[o], row[o + 1], row[o + 2], row[o + 3]]);
                nib(&row[o + 4..], &mut q);
                for (j, q) in q.iter_mut().enumerate() {
                    *q |= (((qh >> j) & 1) as u8) << 4;
                }
            }
            Q4_K | Q5_K => {
                let j = u % 8;
                let (b, qs_at) = if f == Q4_K { (&row[144 * (u / 8)..], 16) } else { (&row[176 * (u / 8)..], 48) };
                let qs = &b[qs_at + 32 * (j / 2)..qs_at + 32 * (j / 2) + 32];
                for l in 0..32 {
                    q[l] = if j.is_multiple_of(2) { qs[l] & 0xF } else { qs[l] >> 4 };
                    if f == Q5_K {
                        q[l] |= ((b[16 + l] >> j) & 1) << 4;
                    }
                }
            }
            _ => {
                let b = &row[210 * (u / 8)..];
                let j = u % 8;
                let (h, k) = (j / 4, j % 4);
                let ql = &b[64 * h + 32 * (k & 1)..];
                let qh = &b[128 + 32 * h..];
                for l in 0..32 {
                    let lo = if k < 2 { ql[l] & 0xF } else { ql[l] >> 4 };
                    q[l] = lo | (((qh[l] >> (2 * k)) & 3) << 4);
                }
            }
        }
        q
    }

    pub fn dot_quant(f: u8, row: &[u8], acts: &QActs, r0: usize, out: &mut [f32]) {
        let units = acts.cols / 32;
        let mut acc = [0f32; TILE];
        for u in 0..units {
            let sc = unit_scales(f, row, u);
            let q = unit_quants(f, row, u);
            for (o, acc) in acc.iter_mut().enumerate().take(out.len()) {
                let b = (r0 + o) * units + u;
                let p = &acts.q[32 * b..32 * b + 32];
                let mut h = [0i32; 2];
                for i in 0..32 {
                    let w = if f == Q8_0 { q[i] as i8 as i32 } else { q[i] as i32 };
                    h[i / 16] += w * p[i] as i32;
                }
                let (s0, s1) = (acts.s[2 * b], acts.s[2 * b + 1]);
                let dx = acts.d[b];
                // The vector code's order: the integer sums scaled per lane and accumulated,
                // then the scalar terms.
                *acc += (sc.s[0] * dx) * h[0] as f32 + (sc.s[1] * dx) * h[1] as f32;
                *acc += dx * (sc.min * (s0 + s1) as f32 - sc.off as f32 * (sc.s[0] * s0 as f32 + sc.s[1] * s1 as f32));
            }
        }
        out.copy_from_slice(&acc[..out.len()]);
    }

    pub fn dot_quant_f32(f: u8, row: &[u8], cols: usize, x: &[f32], r0: usize, out: &mut [f32]) {
        // Eight partial sums per row, as the vector code keeps eight lanes.
        let mut acc = [[0f32; 8]; TILE];
        for u in 0..cols / 32 {
            let sc = unit_scales(f, row, u);
            let q = unit_quants(f, row, u);
            let w: [f32; 32] = std::array::from_fn(|i| {
                let q = if f == Q8_0 { q[i] as i8 as i32 } else { q[i] as i32 - sc.off };
                sc.s[i / 16] * q as f32 + sc.min
            });
            for (o, acc) in acc.iter_mut().enumerate().take(out.len()) {
                let xr = &x[(r0 + o) * cols + 32 * u..(r0 + o) * cols + 32 * u + 32];
                for (i, (&w, &xv)) in w.iter().zip(xr).enumerate() {
                    acc[i % 8] += w * xv;
                }
            }
        }
        for (out, acc) in out.iter_mut().zip(&acc) {
            *out = acc.iter().sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    /// `attend_many` in three sweeps over the positions, each with its own registers: scores
    /// (blocks of 4 positions x up to 2 queries, one 8-wide accumulator each, reduced together),
    /// softmax (8 exponentials at a time), and the weighted sum of values (32 output columns x up
    /// to 2 queries held in registers across all positions). Query i's operations do not depend
    /// on the others or on where the blocks fall, so its result is the same in any group.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn attend_many<'a, K: Fn(usize, bool) -> KvRow<'a>>(
        qs: &[&[f32]],
        range: std::ops::Range<usize>,
        kv: &K,
        outs: &mut [f32],
        scratch: &mut AttendScratch,
    ) {
        let (n, len, dh) = (qs.len(), range.len(), qs[0].len());
        if dh % 8 != 0 || len == 0 {
            let dot = |q: &[f32], k: KvRow<'_>| match k {
                KvRow::F32(k) => dot_f32(q, k),
                KvRow::F16(k) => dot_f16(q, k),
            };
            let axpy = |w, v: KvRow<'_>, o: &mut [f32]| match v {
                KvRow::F32(v) => axpy(w, v, o),
                KvRow::F16(v) => axpy_f16(w, v, o),
            };
            return attend_many_with(qs, range, kv, outs, &mut scratch.scores, dot, axpy);
        }
        // Every position's key and value as (address, f16?), checked once.
        scratch.rows.clear();
        scratch.rows.reserve(len);
        let mut short = false;
        for p in range {
            let (k, v) = (row_at(kv(p, false), dh), row_at(kv(p, true), dh));
            short |= k.2 | v.2;
            scratch.rows.push([(k.0, k.1), (v.0, v.1)]);
        }
        assert!(!short, "attend_many: short key/value row");
        scratch.scores.clear();
        scratch.scores.resize(n * len, 0.0);
        let (rows, sc) = (&scratch.rows, scratch.scores.as_mut_ptr());
        let scale = 1.0 / (dh as f32).sqrt();
        let mut i = 0;
        while i < n {
            if i + 1 < n {
                scores::<2>([qs[i].as_ptr(), qs[i + 1].as_ptr()], rows, dh, scale, sc.add(i * len), len);
                i += 2;
            } else {
                scores::<1>([qs[i].as_ptr()], rows, dh, scale, sc.add(i * len), len);
                i += 1;
            }
        }
        let mut z = [0f32; 16];
        let mut zs = Vec::new();
        let z: &mut [f32] = if n <= 16 { &mut z[..n] } else { zs.resize(n, 0.0); &mut zs };
        for (i, z) in z.iter_mut().enumerate() {
            *z = softmax_numerators(std::slice::from_raw_parts_mut(sc.add(i * len), len));
        }
        let mut i = 0;
        while i < n {
            let o = outs.as_mut_ptr().add(i * dh);
            if i + 1 < n {
                weighted_values::<2>(rows, sc.add(i * len), len, dh, o);
                i += 2;
            } else {
                weighted_values::<1>(rows, sc.add(i * len), len, dh, o);
                i += 1;
            }
        }
        for (o, &z) in outs.chunks_mut(dh).zip(z.iter()) {
            o.iter_mut().for_each(|x| *x /= z);
        }
    }

    /// A key or value row's address, whether it is f16, and whether it is shorter than `dh`.
    #[inline(always)]
    fn row_at(r: KvRow<'_>, dh: usize) -> (usize, bool, bool) {
        match r {
            KvRow::F32(s) => (s.as_ptr() as usize, false, s.len() < dh),
            KvRow::F16(s) => (s.as_ptr() as usize, true, s.len() < dh),
        }
    }

    /// Positions a key or value is prefetched ahead of its use.
    const KV_AHEAD: usize = 8;

    /// Prefetches a key or value row (`dh` values at `(address, f16?)`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn prefetch_row((a, f16): (usize, bool), dh: usize) {
        let bytes = if f16 { 2 * dh } else { 4 * dh };
        let mut o = 0;
        while o < bytes {
            _mm_prefetch::<_MM_HINT_T0>((a + o) as *const i8);
            o += 64;
        }
    }

    /// The 4 lanes' sums of 4 accumulators, each lane reduced alone ((0+1)+(2+3)) + ((4+5)+(6+7)).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn reduce4(a: [__m256; 4]) -> __m128 {
        let h = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
        _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h))
    }

    /// Scores of Q queries (rows of `len` at `out`, `len` apart) against the keys of `rows`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scores<const Q: usize>(q: [*const f32; Q], rows: &[[(usize, bool); 2]], dh: usize, scale: f32, out: *mut f32, len: usize) {
        let sv = _mm_set1_ps(scale);
        let mut j = 0;
        while j < len {
            let m = (len - j).min(4);
            // Keys come from memory the weights have streamed through: ask for them ahead.
            for t in 0..4 {
                if let Some(r) = rows.get(j + KV_AHEAD + t) {
                    prefetch_row(r[0], dh);
                }
            }
            let ks: [(usize, bool); 4] = std::array::from_fn(|t| rows[j + t.min(m - 1)][0]);
            let s: [__m128; Q] = if ks.iter().all(|k| k.1) {
                score4::<1, Q>(q, ks.map(|k| k.0 as *const u8), dh)
            } else if ks.iter().all(|k| !k.1) {
                score4::<0, Q>(q, ks.map(|k| k.0 as *const u8), dh)
            } else {
                // Rows of both kinds (a window's fresh rows beside its ring): one at a time,
                // each lane computed exactly as in a block.
                let mut lanes = [[0f32; 4]; Q];
                for (t, &(a, f16)) in ks.iter().enumerate().take(m) {
                    let one = if f16 { score4::<1, Q>(q, [a as *const u8; 4], dh) } else { score4::<0, Q>(q, [a as *const u8; 4], dh) };
                    for (l, v) in lanes.iter_mut().zip(one) {
                        l[t] = _mm_cvtss_f32(v);
                    }
                }
                lanes.map(|l| _mm_loadu_ps(l.as_ptr()))
            };
            for (a, s) in s.into_iter().enumerate() {
                let mut v = [0f32; 4];
                _mm_storeu_ps(v.as_mut_ptr(), _mm_mul_ps(s, sv));
                std::ptr::copy_nonoverlapping(v.as_ptr(), out.add(a * len + j), m);
            }
            j += 4;
        }
    }

    /// q . k for 4 keys (F: 0 f32, 1 f16) and Q queries, `dh` a multiple of 8.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn score4<const F: u8, const Q: usize>(q: [*const f32; Q], k: [*const u8; 4], dh: usize) -> [__m128; Q] {
        let mut acc = [[_mm256_setzero_ps(); 4]; Q];
        let mut c = 0;
        while c < dh {
            let qv: [__m256; Q] = std::array::from_fn(|a| _mm256_loadu_ps(q[a].add(c)));
            for t in 0..4 {
                let kt = load8::<F>(k[t], c);
                for a in 0..Q {
                    acc[a][t] = _mm256_fmadd_ps(qv[a], kt, acc[a][t]);
                }
            }
            c += 8;
        }
        acc.map(|a| reduce4(a))
    }

    /// `exp` on 8 lanes with the scalar function's operations (no fused multiply-adds), so each
    /// lane equals `session::exp` of it.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn exp8(x: __m256) -> __m256 {
        let c = |v: f32| _mm256_set1_ps(v);
        // (max and min return their second operand when either is NaN: NaN goes through.)
        let xc = _mm256_min_ps(c(88.7), _mm256_max_ps(c(-87.3), x));
        let shift = c(12_582_912.0);
        let k = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(xc, c(std::f32::consts::LOG2_E)), shift), shift);
        let r = _mm256_sub_ps(_mm256_sub_ps(xc, _mm256_mul_ps(k, c(0.693_145_75))), _mm256_mul_ps(k, c(1.428_606_8e-6)));
        let mut p = c(1.0 / 720.0);
        for coef in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm256_add_ps(c(coef), _mm256_mul_ps(r, p));
        }
        let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127))));
        let y = _mm256_mul_ps(p, scale);
        // Below -87.3: 0, above 88.7: infinity, as the scalar function gives.
        let y = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(x, c(-87.3)), y);
        _mm256_blendv_ps(y, c(f32::INFINITY), _mm256_cmp_ps::<_CMP_GT_OQ>(x, c(88.7)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let n = out.len();
        let (g, u, o) = (gate.as_ptr(), up.as_ptr(), out.as_mut_ptr());
        let one = _mm256_set1_ps(1.0);
        let mut i = 0;
        while i + 8 <= n {
            let x = _mm256_loadu_ps(g.add(i));
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
            let silu = _mm256_div_ps(x, _mm256_add_ps(one, e));
            _mm256_storeu_ps(o.add(i), _mm256_mul_ps(silu, _mm256_loadu_ps(u.add(i))));
            i += 8;
        }
        for j in i..n {
            out[j] = super::silu(gate[j]) * up[j];
        }
    }

    /// Replaces scores by exp(score - max) and returns their sum.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn softmax_numerators(s: &mut [f32]) -> f32 {
        let n = s.len();
        let p = s.as_mut_ptr();
        let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i + 8 <= n {
            mv = _mm256_max_ps(mv, _mm256_loadu_ps(p.add(i)));
            i += 8;
        }
        let mut m = [0f32; 8];
        _mm256_storeu_ps(m.as_mut_ptr(), mv);
        let max = m.iter().chain(&s[i..]).cloned().fold(f32::NEG_INFINITY, f32::max);
        let (maxv, mut zv) = (_mm256_set1_ps(max), _mm256_setzero_ps());
        let mut i = 0;
        while i + 8 <= n {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), maxv));
            _mm256_storeu_ps(p.add(i), e);
            zv = _mm256_add_ps(zv, e);
            i += 8;
        }
        let mut z = hsum(zv);
        for x in &mut s[i..] {
            *x = crate::cpu::session::exp(*x - max);
            z += *x;
        }
        z
    }

    /// `out[a] = sum_j w[a][j] v_j` (not yet divided by the softmax sum) for Q queries whose
    /// weights are rows of `len` at `w`, 32 columns at a time held in registers.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weighted_values<const Q: usize>(rows: &[[(usize, bool); 2]], w: *const f32, len: usize, dh: usize, out: *mut f32) {
        // Each column's sum is the same chain of FMAs however the columns are grouped: one
        // query takes 64 columns at a time (8 accumulators hide the FMA latency), two take 32.
        let mut c = 0;
        while c < dh {
            let step = match ((dh - c) / 8, Q) {
                (1, _) => weighted_columns::<1, Q>(rows, w, len, dh, c, out),
                (2, _) => weighted_columns::<2, Q>(rows, w, len, dh, c, out),
                (3, _) => weighted_columns::<3, Q>(rows, w, len, dh, c, out),
                (4, _) | (_, 2) => weighted_columns::<4, Q>(rows, w, len, dh, c, out),
                (5, _) => weighted_columns::<5, Q>(rows, w, len, dh, c, out),
                (6, _) => weighted_columns::<6, Q>(rows, w, len, dh, c, out),
                (7, _) => weighted_columns::<7, Q>(rows, w, len, dh, c, out),
                _ => weighted_columns::<8, Q>(rows, w, len, dh, c, out),
            };
            c += step;
        }
    }

    #[inline]
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weighted_columns<const W: usize, const Q: usize>(rows: &[[(usize, bool); 2]], w: *const f32, len: usize, dh: usize, c: usize, out: *mut f32) -> usize {
        let mut acc = [[_mm256_setzero_ps(); W]; Q];
        for (j, r) in rows.iter().enumerate() {
            if c == 0 {
                if let Some(r) = rows.get(j + KV_AHEAD) {
                    prefetch_row(r[1], dh);
                }
            }
            let (v, f16) = r[1];
            let wj: [__m256; Q] = std::array::from_fn(|a| _mm256_set1_ps(*w.add(a * len + j)));
            for u in 0..W {
                let x = if f16 { load8::<1>(v as *const u8, c + 8 * u) } else { load8::<0>(v as *const u8, c + 8 * u) };
                for a in 0..Q {
                    acc[a][u] = _mm256_fmadd_ps(wj[a], x, acc[a][u]);
                }
            }
        }
        for (a, acc) in acc.iter().enumerate() {
            for (u, &x) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.add(a * dh + c + 8 * u), x);
            }
        }
        8 * W
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc);
            i += 8;
        }
        let mut s = hsum(acc);
        while i < n {
            s += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        s
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn sum_f32(x: &[f32]) -> f32 {
        let (n, p) = (x.len(), x.as_ptr());
        let mut a = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, a) in a.iter_mut().enumerate() {
                *a = _mm256_add_ps(*a, _mm256_loadu_ps(p.add(i + 8 * k)));
            }
            i += 32;
        }
        let mut s = hsum(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
        while i < n {
            s += *p.add(i);
            i += 1;
        }
        s
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(a: &[f32], b: &[half::f16]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            let k = _mm256_cvtph_ps(_mm_loadu_si128(pb.add(i) as *const __m128i));
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), k, acc);
            i += 8;
        }
        let mut s = hsum(acc);
        while i < n {
            s += *pa.add(i) * (*pb.add(i)).to_f32();
            i += 1;
        }
        s
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy_f16(w: f32, x: &[half::f16], y: &mut [f32]) {
        let n = x.len();
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let wv = _mm256_set1_ps(w);
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm256_cvtph_ps(_mm_loadu_si128(px.add(i) as *const __m128i));
            _mm256_storeu_ps(py.add(i), _mm256_fmadd_ps(wv, v, _mm256_loadu_ps(py.add(i))));
            i += 8;
        }
        while i < n {
            *py.add(i) += w * (*px.add(i)).to_f32();
            i += 1;
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy(w: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len();
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let wv = _mm256_set1_ps(w);
        let mut i = 0;
        while i + 8 <= n {
            _mm256_storeu_ps(py.add(i), _mm256_fmadd_ps(wv, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i))));
            i += 8;
        }
        while i < n {
            *py.add(i) += w * *px.add(i);
            i += 1;
        }
    }

    /// `s` plus the scalar products of a float row's elements `range` with `x`'s (the tail of
    /// a dot product past the last whole vector).
    #[inline]
    unsafe fn float_tail<const F: u8>(row: &[u8], range: std::ops::Range<usize>, x: *const f32, mut s: f32) -> f32 {
        for j in range {
            let wv = match F {
                0 => f32::from_le_bytes([row[4 * j], row[4 * j + 1], row[4 * j + 2], row[4 * j + 3]]),
                1 => f16_at(row, 2 * j),
                _ => half::bf16::from_le_bytes([row[2 * j], row[2 * j + 1]]).to_f32(),
            };
            s += wv * *x.add(j);
        }
        s
    }

    /// Eight weights of a float row from element `i` on, as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8<const F: u8>(row: *const u8, i: usize) -> __m256 {
        match F {
            0 => _mm256_loadu_ps(row.add(4 * i) as *const f32),
            1 => _mm256_cvtph_ps(_mm_loadu_si128(row.add(2 * i) as *const __m128i)),
            _ => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(row.add(2 * i) as *const __m128i)))),
        }
    }

    /// One float weight row (`cols` values) against the N activation rows at `xs`; the bytes
    /// at `ahead` (the caller's choice of what is read next) are prefetched as the row is read.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_float<const F: u8, const N: usize>(row: &[u8], cols: usize, xs: [*const f32; N], ahead: *const u8, out: &mut [f32]) {
        let w = row.as_ptr();
        // Four accumulators per row: one FMA each per step, so their latency is hidden.
        let mut a0 = [_mm256_setzero_ps(); N];
        let mut a1 = [_mm256_setzero_ps(); N];
        let mut a2 = [_mm256_setzero_ps(); N];
        let mut a3 = [_mm256_setzero_ps(); N];
        let mut i = 0;
        let elem = if F == 0 { 4 } else { 2 };
        // 32 weights per step (one 64-byte line of f16 or bf16, two of f32), prefetched ahead.
        while i + 32 <= cols {
            let p = ahead.wrapping_add(elem * i);
            _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
            if F == 0 {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64) as *const i8);
            }
            let w0 = load8::<F>(w, i);
            let w1 = load8::<F>(w, i + 8);
            let w2 = load8::<F>(w, i + 16);
            let w3 = load8::<F>(w, i + 24);
            for o in 0..N {
                a0[o] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xs[o].add(i)), a0[o]);
                a1[o] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xs[o].add(i + 8)), a1[o]);
                a2[o] = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xs[o].add(i + 16)), a2[o]);
                a3[o] = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xs[o].add(i + 24)), a3[o]);
            }
            i += 32;
        }
        if i + 16 <= cols {
            let w0 = load8::<F>(w, i);
            let w1 = load8::<F>(w, i + 8);
            for o in 0..N {
                a0[o] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xs[o].add(i)), a0[o]);
                a1[o] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xs[o].add(i + 8)), a1[o]);
            }
            i += 16;
        }
        for o in 0..N {
            let s = hsum(_mm256_add_ps(_mm256_add_ps(a0[o], a1[o]), _mm256_add_ps(a2[o], a3[o])));
            out[o] = float_tail::<F>(row, i..cols, xs[o], s);
        }
    }

    /// Sixteen weights of a float row from element `i` on, as f32 (AVX-512).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    unsafe fn load16<const F: u8>(row: *const u8, i: usize) -> __m512 {
        match F {
            0 => _mm512_loadu_ps(row.add(4 * i) as *const f32),
            1 => _mm512_cvtph_ps(_mm256_loadu_si256(row.add(2 * i) as *const __m256i)),
            _ => _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(row.add(2 * i) as *const __m256i)))),
        }
    }

    /// `dot_float` on 16-wide registers: half the instructions per weight, so the second and
    /// later activation rows of a fused step stay hidden behind the weight stream. The bytes at
    /// `ahead` go into L2; within a row the caller passes those 4 KiB ahead (with the model's
    /// huge pages: measured faster than no prefetch, than 2 KiB and than into L1; 8 and 16 KiB
    /// within the noise).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    unsafe fn dot_float512<const F: u8, const N: usize>(row: &[u8], cols: usize, xs: [*const f32; N], ahead: *const u8, out: &mut [f32]) {
        let w = row.as_ptr();
        // Two accumulators per activation row.
        let mut a0 = [_mm512_setzero_ps(); N];
        let mut a1 = [_mm512_setzero_ps(); N];
        let mut i = 0;
        let elem = if F == 0 { 4 } else { 2 };
        while i + 32 <= cols {
            let p = ahead.wrapping_add(elem * i);
            _mm_prefetch::<_MM_HINT_T1>(p as *const i8);
            if F == 0 {
                _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(64) as *const i8);
            }
            let w0 = load16::<F>(w, i);
            let w1 = load16::<F>(w, i + 16);
            for o in 0..N {
                a0[o] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xs[o].add(i)), a0[o]);
                a1[o] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xs[o].add(i + 16)), a1[o]);
            }
            i += 32;
        }
        if i + 16 <= cols {
            let w0 = load16::<F>(w, i);
            for o in 0..N {
                a0[o] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xs[o].add(i)), a0[o]);
            }
            i += 16;
        }
        for o in 0..N {
            let s = _mm512_reduce_add_ps(_mm512_add_ps(a0[o], a1[o]));
            out[o] = float_tail::<F>(row, i..cols, xs[o], s);
        }
    }

    /// A piece of a float matmul: `rows` weight rows of `rb` bytes from `data` into `out`
    /// ([rows, N]), one kernel call per row (per `COL_CHUNK` of a longer row) inside one
    /// target-feature function.
    ///
    /// A row longer than `COL_CHUNK` is summed chunk by chunk, the chunks' sums added in order
    /// whatever the loop order, so every N gives the same bits. One activation row takes the
    /// weight rows one after the other (one stream); two or more take the piece's rows chunk by
    /// chunk, so that the activations' chunk stays in L1 while the weights stream past it (the
    /// down projection of `llama-850m`, 5632 columns: two activation rows are 45 KB, more than
    /// L1 holds beside the weights; read from L2 for every weight row, they made the fused
    /// step's second row cost a fifth of that matmul). The weights are prefetched in the order
    /// they are read: PREFETCH bytes ahead in a row, or the next row's chunk.
    macro_rules! float_rows_fn {
        ($name:ident, $kern:ident, $feat:literal) => {
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = $feat)]
            pub unsafe fn $name<const F: u8, const N: usize>(data: &[u8], rb: usize, rows: usize, cols: usize, x: &[f32], r0: usize, out: &mut [f32]) {
                let xs: [*const f32; N] = std::array::from_fn(|o| x.as_ptr().add((r0 + o) * cols));
                // Prefetch addresses are hints (one past `data` is never read), so wrapping.
                let base = data.as_ptr();
                if cols <= COL_CHUNK {
                    for w in 0..rows {
                        $kern::<F, N>(&data[w * rb..(w + 1) * rb], cols, xs, base.wrapping_add(w * rb + PREFETCH), &mut out[w * N..(w + 1) * N]);
                    }
                    return;
                }
                let elem = if F == 0 { 4 } else { 2 };
                out[..rows * N].fill(0.0);
                let mut part = [0f32; N];
                let mut chunk = |w: usize, c0: usize| {
                    let c1 = (c0 + COL_CHUNK).min(cols);
                    let ahead = if N == 1 {
                        w * rb + c0 * elem + PREFETCH
                    } else if w + 1 < rows {
                        (w + 1) * rb + c0 * elem
                    } else {
                        (c0 + COL_CHUNK) * elem
                    };
                    $kern::<F, N>(&data[w * rb + c0 * elem..w * rb + c1 * elem], c1 - c0, xs.map(|p| p.add(c0)), base.wrapping_add(ahead), &mut part);
                    for (o, p) in out[w * N..(w + 1) * N].iter_mut().zip(&part) {
                        *o += p;
                    }
                };
                if N == 1 {
                    for w in 0..rows {
                        for c0 in (0..cols).step_by(COL_CHUNK) {
                            chunk(w, c0);
                        }
                    }
                } else {
                    for c0 in (0..cols).step_by(COL_CHUNK) {
                        for w in 0..rows {
                            chunk(w, c0);
                        }
                    }
                }
            }
        };
    }
    float_rows_fn!(float_rows, dot_float, "avx2,fma,f16c");
    float_rows_fn!(float_rows512, dot_float512, "avx2,fma,f16c,avx512f");

    /// 16 nibbles bytes -> 32 values: low nibbles first (weights 0..15), then high ones.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles16(p: *const u8) -> __m256i {
        let b = _mm_loadu_si128(p as *const __m128i);
        let m = _mm_set1_epi8(0x0F);
        _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16::<4>(b), m), _mm_and_si128(b, m))
    }

    /// 32 bits -> 32 bytes of 0x10 where the bit is set (bit j for byte j).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn bits32(qh: u32) -> __m256i {
        let v = _mm256_set1_epi32(qh as i32);
        let shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
        let bytes = _mm256_shuffle_epi8(v, shuf);
        let mask = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, mask), mask);
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }

    /// f16 bits to f32 with F16C.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn h2f(p: *const u8) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128((p as *const u16).read_unaligned() as i32)))
    }

    /// Two adjacent f16 (d, m) to f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn h2f2(p: *const u8) -> (f32, f32) {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const u32).read_unaligned() as i32));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }

    /// Whether format `F`'s quants are read as signed bytes (their offset subtracted): then the
    /// dot product takes the sign trick and no correction term.
    const fn signed(f: u8) -> bool {
        matches!(f, Q8_0 | Q4_0 | Q5_0 | Q6_K)
    }

    /// Unit `u`: its 32 quants (signed bytes with the offset subtracted for `signed` formats,
    /// else unsigned), its scale per half (lanes 0-3, 4-7), and its min.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unit<const F: u8>(row: *const u8, u: usize) -> (__m256i, __m256, f32) {
        let low4 = _mm256_set1_epi8(0x0F);
        match F {
            Q8_0 => (_mm256_loadu_si256(row.add(34 * u + 2) as *const __m256i), _mm256_set1_ps(h2f(row.add(34 * u))), 0.0),
            Q4_0 => {
                let b = row.add(18 * u);
                (_mm256_sub_epi8(nibbles16(b.add(2)), _mm256_set1_epi8(8)), _mm256_set1_ps(h2f(b)), 0.0)
            }
            Q4_1 => {
                let b = row.add(20 * u);
                let (d, m) = h2f2(b);
                (nibbles16(b.add(4)), _mm256_set1_ps(d), m)
            }
            Q5_0 | Q5_1 => {
                let (b, o) = if F == Q5_0 { (row.add(22 * u), 2) } else { (row.add(24 * u), 4) };
                let qh = u32::from_le((b.add(o) as *const u32).read_unaligned());
                let q = _mm256_or_si256(nibbles16(b.add(o + 4)), bits32(qh));
                if F == Q5_0 {
                    (_mm256_sub_epi8(q, _mm256_set1_epi8(16)), _mm256_set1_ps(h2f(b)), 0.0)
                } else {
                    let (d, m) = h2f2(b);
                    (q, _mm256_set1_ps(d), m)
                }
            }
            Q4_K | Q5_K => {
                let j = u % 8;
                let (b, qs_at) = if F == Q4_K { (row.add(144 * (u / 8)), 16) } else { (row.add(176 * (u / 8)), 48) };
                let qs = _mm256_loadu_si256(b.add(qs_at + 32 * (j / 2)) as *const __m256i);
                let mut q = _mm256_and_si256(_mm256_srl_epi16(qs, _mm_cvtsi32_si128(4 * (j % 2) as i32)), low4);
                if F == Q5_K {
                    let qh = _mm256_loadu_si256(b.add(16) as *const __m256i);
                    let bit = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(j as i32)), _mm256_set1_epi8(1));
                    q = _mm256_or_si256(q, _mm256_slli_epi16::<4>(bit));
                }
                let (d, dmin) = h2f2(b);
                let (sc, m) = scale_min_k4(j, std::slice::from_raw_parts(b.add(4), 12));
                (q, _mm256_set1_ps(d * sc), -dmin * m)
            }
            _ => {
                let b = row.add(210 * (u / 8));
                let j = u % 8;
                let (h, k) = (j / 4, j % 4);
                let ql = _mm256_loadu_si256(b.add(64 * h + 32 * (k & 1)) as *const __m256i);
                let lo = _mm256_and_si256(_mm256_srl_epi16(ql, _mm_cvtsi32_si128(4 * (k / 2) as i32)), low4);
                let qh = _mm256_loadu_si256(b.add(128 + 32 * h) as *const __m256i);
                let hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k as i32)), _mm256_set1_epi8(3));
                let q = _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16::<4>(hi)), _mm256_set1_epi8(32));
                let d = h2f(b.add(208));
                let (s0, s1) = (*b.add(192 + 2 * j) as i8 as f32, *b.add(193 + 2 * j) as i8 as f32);
                (q, _mm256_set_m128(_mm_set1_ps(d * s1), _mm_set1_ps(d * s0)), 0.0)
            }
        }
    }

    /// Average bytes per unit of 32 weights, by format code.
    const UNIT_BYTES: [usize; 8] = [34, 18, 20, 22, 24, 18, 22, 26];
    /// How far ahead of the unit being read the weights are prefetched.
    const PREFETCH: usize = 4096;

    /// Columns of a float weight row summed at a time (a multiple of 32): a fused step's two
    /// activation rows' chunk (16 KiB) stays in L1 beside the weights.
    const COL_CHUNK: usize = 2048;

    /// The body of the quantised dot products: `R` (1 or 2) weight rows against `N` activation
    /// rows, each activation block loaded once for all weight rows (prefill's tiles take two).
    /// The float operations per (weight row, activation row) do not depend on `R` or `N`:
    /// units are taken in pairs, `t = cvt(dot_a) * sv_a`, `t = cvt(dot_b) * sv_b + t` (one FMA),
    /// `acc += t`, and an odd last unit `acc = cvt(dot) * sv + acc`; the integer sums are exact.
    /// So a row's result is the same bits in any tile (fused, sequential, prefill, any thread
    /// count). The pairing keeps the loop-carried chain to one add per two units.
    ///
    /// `$vnni`: the integer sums with VNNI's `vpdpbusd` (1: AVX-VNNI, 2: AVX512-VNNI; signed
    /// quants: the weights offset to unsigned, q + 128, times the activations as they are,
    /// starting from -128 * sum(p) (`QActs::nl`): one instruction per product) or with
    /// AVX2's `maddubs` + `madd` (0; signed quants: the sign trick, |q| times p with q's sign).
    macro_rules! dot_quant_body {
        ($rows:ident, $acts:ident, $r0:ident, $outs:ident, $vnni:literal) => {{
            let (rows, acts, r0, outs) = ($rows, $acts, $r0, $outs);
            let units = acts.cols / 32;
            let mut acc = [[_mm256_setzero_ps(); N]; R];
            let mut corr = [[0f32; N]; R];
            let rp: [*const u8; R] = std::array::from_fn(|i| rows[i].as_ptr());
            let (qp, dp, sp, np) = (acts.q.as_ptr(), acts.d.as_ptr(), acts.sx.as_ptr(), acts.nl.as_ptr());
            let zero = _mm256_setzero_si256();
            let ones = _mm256_set1_epi16(1);
            let bias = _mm256_set1_epi8(-128);
            let vnni = $vnni != 0;
            // `vpdpbusd`: src + the sums of each lane's four unsigned-by-signed byte products.
            macro_rules! dpbusd {
                ($src:expr, $a:expr, $b:expr) => {
                    if $vnni == 1 {
                        _mm256_dpbusd_avx_epi32($src, $a, $b)
                    } else {
                        _mm256_dpbusd_epi32($src, $a, $b)
                    }
                };
            }
            // Unit u of every weight row: quants, scale, min, and what every activation row
            // shares (VNNI signed: q + 128; AVX2 signed: |q|).
            macro_rules! decode {
                ($u:expr) => {{
                    let u = $u;
                    let mut q = [zero; R];
                    let mut sc = [_mm256_setzero_ps(); R];
                    let mut mn = [0f32; R];
                    let mut pre = [zero; R];
                    for i in 0..R {
                        // The weights stream from memory once: ask for them a few units ahead,
                        // into L2 (measured faster than into L1 with the huge-page weights).
                        _mm_prefetch::<_MM_HINT_T1>(rp[i].wrapping_add(UNIT_BYTES[F as usize] * u + PREFETCH) as *const i8);
                        let (qi, si, mi) = unit::<F>(rp[i], u);
                        q[i] = qi;
                        sc[i] = si;
                        mn[i] = mi;
                        pre[i] = if !signed(F) {
                            zero
                        } else if vnni {
                            _mm256_xor_si256(qi, bias)
                        } else {
                            _mm256_sign_epi8(qi, qi)
                        };
                    }
                    (q, sc, mn, pre)
                }};
            }
            // The integer sums of activation block `b` with unit (q, pre) of weight row i.
            macro_rules! dots {
                ($b:expr, $q:expr, $pre:expr) => {{
                    let p = _mm256_loadu_si256(qp.add(32 * $b) as *const __m256i);
                    let start = if vnni && signed(F) { _mm256_loadu_si256(np.add(8 * $b) as *const __m256i) } else { zero };
                    let mut d = [zero; R];
                    for i in 0..R {
                        d[i] = if vnni {
                            if signed(F) {
                                dpbusd!(start, $pre[i], p)
                            } else {
                                dpbusd!(zero, $q[i], p)
                            }
                        } else if signed(F) {
                            _mm256_madd_epi16(_mm256_maddubs_epi16($pre[i], _mm256_sign_epi8(p, $q[i])), ones)
                        } else {
                            _mm256_madd_epi16(_mm256_maddubs_epi16($q[i], p), ones)
                        };
                    }
                    d
                }};
            }
            let mut u = 0;
            while u + 2 <= units {
                let (qa, sa, ma, pa) = decode!(u);
                let (qb, sb, mb, pb) = decode!(u + 1);
                for o in 0..N {
                    let b = (r0 + o) * units + u;
                    let da = dots!(b, qa, pa);
                    let db = dots!(b + 1, qb, pb);
                    let (xa, xb) = (_mm256_broadcast_ss(&*dp.add(b)), _mm256_broadcast_ss(&*dp.add(b + 1)));
                    for i in 0..R {
                        let t = _mm256_mul_ps(_mm256_cvtepi32_ps(da[i]), _mm256_mul_ps(sa[i], xa));
                        let t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(db[i]), _mm256_mul_ps(sb[i], xb), t);
                        acc[i][o] = _mm256_add_ps(acc[i][o], t);
                        if !signed(F) {
                            corr[i][o] += ma[i] * *sp.add(b) + mb[i] * *sp.add(b + 1);
                        }
                    }
                }
                u += 2;
            }
            if u < units {
                let (qa, sa, ma, pa) = decode!(u);
                for o in 0..N {
                    let b = (r0 + o) * units + u;
                    let da = dots!(b, qa, pa);
                    let xa = _mm256_broadcast_ss(&*dp.add(b));
                    for i in 0..R {
                        acc[i][o] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(da[i]), _mm256_mul_ps(sa[i], xa), acc[i][o]);
                        if !signed(F) {
                            corr[i][o] += ma[i] * *sp.add(b);
                        }
                    }
                }
            }
            for i in 0..R {
                for o in 0..N {
                    outs[i][o] = hsum(acc[i][o]) + corr[i][o];
                }
            }
        }};
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_quant<const F: u8, const R: usize, const N: usize>(rows: [&[u8]; R], acts: &QActs, r0: usize, outs: [&mut [f32]; R]) {
        dot_quant_body!(rows, acts, r0, outs, 0)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    unsafe fn dot_quant_vnni<const F: u8, const R: usize, const N: usize>(rows: [&[u8]; R], acts: &QActs, r0: usize, outs: [&mut [f32]; R]) {
        dot_quant_body!(rows, acts, r0, outs, 1)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    unsafe fn dot_quant_vnni512<const F: u8, const R: usize, const N: usize>(rows: [&[u8]; R], acts: &QActs, r0: usize, outs: [&mut [f32]; R]) {
        dot_quant_body!(rows, acts, r0, outs, 2)
    }

    /// A piece of a matmul: `rows` weight rows of `rb` bytes from `data`, pairs of them per
    /// kernel call when `pairs`, into `out` ([rows, N]).
    macro_rules! rows_fn {
        ($name:ident, $kern:ident, $feat:literal) => {
            #[target_feature(enable = $feat)]
            pub unsafe fn $name<const F: u8, const N: usize>(data: &[u8], rb: usize, rows: usize, acts: &QActs, r0: usize, pairs: bool, out: &mut [f32]) {
                let mut w = 0;
                if pairs {
                    while w + 2 <= rows {
                        let (a, b) = out[w * N..(w + 2) * N].split_at_mut(N);
                        $kern::<F, 2, N>([&data[w * rb..(w + 1) * rb], &data[(w + 1) * rb..(w + 2) * rb]], acts, r0, [a, b]);
                        w += 2;
                    }
                }
                while w < rows {
                    $kern::<F, 1, N>([&data[w * rb..(w + 1) * rb]], acts, r0, [&mut out[w * N..(w + 1) * N]]);
                    w += 1;
                }
            }
        };
    }
    rows_fn!(rows, dot_quant, "avx2,fma,f16c");
    rows_fn!(rows_vnni, dot_quant_vnni, "avx2,fma,f16c,avxvnni");
    rows_fn!(rows_vnni512, dot_quant_vnni512, "avx2,fma,f16c,avx512vnni,avx512vl");

    /// Eight quants (bytes `8 * k..8 * k + 8` of `q`, signed or not) as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn widen8<const F: u8, const K: i32>(q: __m256i) -> __m256 {
        let h = if K < 2 { _mm256_castsi256_si128(q) } else { _mm256_extracti128_si256::<1>(q) };
        let h = if K % 2 == 0 { h } else { _mm_unpackhi_epi64(h, h) };
        _mm256_cvtepi32_ps(if signed(F) { _mm256_cvtepi8_epi32(h) } else { _mm256_cvtepu8_epi32(h) })
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_quant_f32<const F: u8, const N: usize>(row: &[u8], cols: usize, x: &[f32], r0: usize, out: &mut [f32]) {
        let units = cols / 32;
        let xs: [*const f32; N] = std::array::from_fn(|o| x.as_ptr().add((r0 + o) * cols));
        // Two accumulators per row: the first half of each unit in one, the second in the
        // other. A unit's products are summed apart and added once, so the dependency chains
        // through the accumulators are one operation per unit.
        let mut a0 = [_mm256_setzero_ps(); N];
        let mut a1 = [_mm256_setzero_ps(); N];
        let rp = row.as_ptr();
        for u in 0..units {
            _mm_prefetch::<_MM_HINT_T0>(rp.wrapping_add(UNIT_BYTES[F as usize] * u + PREFETCH) as *const i8);
            let (q, scale, min) = unit::<F>(rp, u);
            // `scale` holds the first half's scale in lanes 0-3, the second's in 4-7.
            let s0 = _mm256_permute2f128_ps::<0x00>(scale, scale);
            let s1 = _mm256_permute2f128_ps::<0x11>(scale, scale);
            let (q0, q1, q2, q3) = (widen8::<F, 0>(q), widen8::<F, 1>(q), widen8::<F, 2>(q), widen8::<F, 3>(q));
            let i = 32 * u;
            if signed(F) {
                // w = s_h q: each half's quants dotted with the activations, then scaled.
                for o in 0..N {
                    let p0 = _mm256_fmadd_ps(q1, _mm256_loadu_ps(xs[o].add(i + 8)), _mm256_mul_ps(q0, _mm256_loadu_ps(xs[o].add(i))));
                    let p1 = _mm256_fmadd_ps(q3, _mm256_loadu_ps(xs[o].add(i + 24)), _mm256_mul_ps(q2, _mm256_loadu_ps(xs[o].add(i + 16))));
                    a0[o] = _mm256_fmadd_ps(p0, s0, a0[o]);
                    a1[o] = _mm256_fmadd_ps(p1, s1, a1[o]);
                }
            } else {
                // w = s_h q + min, formed once for all rows.
                let m = _mm256_set1_ps(min);
                let (w0, w1) = (_mm256_fmadd_ps(q0, s0, m), _mm256_fmadd_ps(q1, s0, m));
                let (w2, w3) = (_mm256_fmadd_ps(q2, s1, m), _mm256_fmadd_ps(q3, s1, m));
                for o in 0..N {
                    let p0 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xs[o].add(i + 8)), _mm256_mul_ps(w0, _mm256_loadu_ps(xs[o].add(i))));
                    let p1 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xs[o].add(i + 24)), _mm256_mul_ps(w2, _mm256_loadu_ps(xs[o].add(i + 16))));
                    a0[o] = _mm256_add_ps(p0, a0[o]);
                    a1[o] = _mm256_add_ps(p1, a1[o]);
                }
            }
        }
        for o in 0..N {
            out[o] = hsum(_mm256_add_ps(a0[o], a1[o]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::dequantize;
    use crate::rng::Rng;

    /// Random valid blocks of `ty` for `rows` rows of `cols` (finite scales of moderate size).
    fn random_rows(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
        crate::gguf::writer::random_blocks(ty, rows, cols, 0.05, rng).unwrap()
    }

    fn nmse(a: &[f32], b: &[f64]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).powi(2)).sum();
        let den: f64 = b.iter().map(|y| y * y).sum::<f64>().max(1e-30);
        num / den
    }

    const QUANTISED: [GgmlType; 8] = [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K];

    /// Three random rows of `ty` (of `k_cols` weights for the 256-weight formats, else `cols`),
    /// their dequantised values, and `nx` random activation rows: (cols, rows, blocks, values, x).
    fn case(ty: GgmlType, cols: usize, k_cols: usize, nx: usize, rng: &mut Rng) -> (usize, usize, Vec<u8>, Vec<f32>, Vec<f32>) {
        let cols = if ty.block().unwrap().0 == 256 { k_cols } else { cols };
        let rows = 3;
        let w = random_rows(ty, rows, cols, rng);
        let wf = dequantize(ty, &w, rows * cols).unwrap();
        let x: Vec<f32> = (0..nx * cols).map(|_| rng.normal()).collect();
        (cols, rows, w, wf, x)
    }

    /// Every instruction set this CPU runs.
    fn simds() -> Vec<Simd> {
        [Simd::Portable, Simd::Avx2, Simd::Avx2Vnni, Simd::Avx512Vnni].into_iter().filter(|s| s.available()).collect()
    }

    /// Every quantised format against the f64 dot of its dequantised weights with the
    /// activations (the int8 activations' rounding is the only error), and the SIMD code
    /// against the portable code (the same integer sums: equal to f32 rounding).
    #[test]
    fn quantised_dots_match_the_dequantised_weights() {
        let mut rng = Rng::new(7);
        for ty in QUANTISED {
            let (cols, rows, w, wf, x) = case(ty, 96, 512, 5, &mut rng);
            let mut acts = QActs::default();
            acts.quantize(&x, cols);
            let rb = row_bytes(ty, cols);
            let mut per_simd = Vec::new();
            for simd in simds() {
                let mut got = Vec::new();
                let mut want = Vec::new();
                for r in 0..rows {
                    // Tiles of 4 and 1: each row's result must not depend on its tile.
                    let mut out = [f32::NAN; 5];
                    dot_quant(simd, ty, &w[r * rb..(r + 1) * rb], &acts, 0, &mut out[..4]);
                    dot_quant(simd, ty, &w[r * rb..(r + 1) * rb], &acts, 4, &mut out[4..5]);
                    let mut single = [f32::NAN];
                    dot_quant(simd, ty, &w[r * rb..(r + 1) * rb], &acts, 2, &mut single);
                    assert_eq!(single[0].to_bits(), out[2].to_bits(), "{} {simd:?}: a row's result depends on its tile", ty.name());
                    for (o, &v) in out.iter().enumerate() {
                        got.push(v);
                        let xr = &x[o * cols..(o + 1) * cols];
                        want.push(wf[r * cols..(r + 1) * cols].iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>());
                    }
                }
                let e = nmse(&got, &want);
                assert!(e < 1e-4, "{} {simd:?}: nmse {e}", ty.name());
                per_simd.push(got);
            }
            let want: Vec<f64> = per_simd[0].iter().map(|&v| v as f64).collect();
            for (simd, got) in simds().iter().zip(&per_simd).skip(1) {
                let e = nmse(got, &want);
                assert!(e < 1e-10, "{}: {simd:?} and portable differ by nmse {e}", ty.name());
            }
            // AVX-VNNI and AVX512-VNNI form the same integer sums as AVX2: the same bits.
            let bits = |x: &Vec<f32>| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            if let Some(a) = simds().iter().position(|&s| s == Simd::Avx2) {
                for vnni in [Simd::Avx2Vnni, Simd::Avx512Vnni] {
                    if let Some(v) = simds().iter().position(|&s| s == vnni) {
                        assert_eq!(bits(&per_simd[a]), bits(&per_simd[v]), "{}: {vnni:?} differs from AVX2", ty.name());
                    }
                }
            }
        }
    }

    /// Two weight rows per call give each row the bits of a one-row call, on every format,
    /// instruction set and tile size (odd activation counts, r0 inside the rows).
    #[test]
    fn two_row_quantised_dots_equal_one_row_dots() {
        let mut rng = Rng::new(17);
        for ty in QUANTISED {
            let (cols, rows, w, _, x) = case(ty, 160, 512, 7, &mut rng);
            let nx = x.len() / cols;
            let mut acts = QActs::default();
            acts.quantize(&x, cols);
            let rb = row_bytes(ty, cols);
            for simd in simds() {
                for (a, b) in [(0, 1), (2, 0), (1, 2)] {
                    assert!(a < rows && b < rows);
                    let (ra, rb_) = (&w[a * rb..(a + 1) * rb], &w[b * rb..(b + 1) * rb]);
                    let both: Vec<u8> = [ra, rb_].concat();
                    for n in 1..=TILE {
                        for r0 in 0..=nx - n {
                            let mut o = [f32::NAN; 2 * TILE];
                            dot_quant_rows(simd, ty, &both, 2, &acts, r0, n, true, &mut o[..2 * n]);
                            let (o0, o1) = o.split_at(n);
                            let (mut w0, mut w1) = ([f32::NAN; TILE], [f32::NAN; TILE]);
                            dot_quant(simd, ty, ra, &acts, r0, &mut w0[..n]);
                            dot_quant(simd, ty, rb_, &acts, r0, &mut w1[..n]);
                            for j in 0..n {
                                assert!(o0[j].is_finite() && o1[j].is_finite(), "{} {simd:?}: not written", ty.name());
                                assert_eq!(o0[j].to_bits(), w0[j].to_bits(), "{} {simd:?} n {n} r0 {r0}: first row differs", ty.name());
                                assert_eq!(o1[j].to_bits(), w1[j].to_bits(), "{} {simd:?} n {n} r0 {r0}: second row differs", ty.name());
                            }
                        }
                    }
                }
                // An odd number of rows: pairs, then one alone; the same bits as one at a time.
                for n in 1..=TILE {
                    let (mut paired, mut single) = ([f32::NAN; 3 * TILE], [f32::NAN; 3 * TILE]);
                    dot_quant_rows(simd, ty, &w, rows, &acts, nx - n, n, true, &mut paired[..rows * n]);
                    dot_quant_rows(simd, ty, &w, rows, &acts, nx - n, n, false, &mut single[..rows * n]);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&paired[..rows * n]), bits(&single[..rows * n]), "{} {simd:?} n {n}: 3 rows in pairs", ty.name());
                }
            }
        }
    }

    /// Every quantised format with f32 activations against the f64 dot of its dequantised
    /// weights (only f32 accumulation differs), over tiles of every size; the SIMD code against
    /// the portable code; each row's bits independent of the tile it was computed in.
    #[test]
    fn quantised_dots_with_f32_activations_match_the_dequantised_weights() {
        let mut rng = Rng::new(13);
        for ty in QUANTISED {
            let (cols, rows, w, wf, x) = case(ty, 160, 768, 7, &mut rng);
            let nx = x.len() / cols;
            let rb = row_bytes(ty, cols);
            let mut per_simd = Vec::new();
            for simd in simds() {
                let mut got = Vec::new();
                let mut want = Vec::new();
                for r in 0..rows {
                    let row = &w[r * rb..(r + 1) * rb];
                    // Tiles of 3, 1 and 3.
                    let mut out = [f32::NAN; 7];
                    dot_quant_f32(simd, ty, row, cols, &x, 0, &mut out[..3]);
                    dot_quant_f32(simd, ty, row, cols, &x, 3, &mut out[3..4]);
                    dot_quant_f32(simd, ty, row, cols, &x, 4, &mut out[4..7]);
                    // Every tile size gives every row the same bits.
                    for n in 1..=TILE {
                        for r0 in 0..=nx - n {
                            let mut tile = [f32::NAN; TILE];
                            dot_quant_f32(simd, ty, row, cols, &x, r0, &mut tile[..n]);
                            for (j, v) in tile[..n].iter().enumerate() {
                                assert_eq!(v.to_bits(), out[r0 + j].to_bits(), "{} {simd:?}: row {} differs in a tile of {n}", ty.name(), r0 + j);
                            }
                        }
                    }
                    for (o, &v) in out.iter().enumerate() {
                        got.push(v);
                        let xr = &x[o * cols..(o + 1) * cols];
                        want.push(wf[r * cols..(r + 1) * cols].iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>());
                    }
                }
                let e = nmse(&got, &want);
                assert!(e < 1e-10, "{} {simd:?}: nmse {e}", ty.name());
                per_simd.push(got);
            }
            if per_simd.len() == 2 {
                let want: Vec<f64> = per_simd[0].iter().map(|&v| v as f64).collect();
                let e = nmse(&per_simd[1], &want);
                assert!(e < 1e-10, "{}: SIMD and portable differ by nmse {e}", ty.name());
            }
        }
    }

    #[test]
    fn float_dots_match_f64_on_odd_lengths() {
        let mut rng = Rng::new(11);
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            for cols in [1, 7, 16, 37, 48, 200, 576, 2048, 2085, 5632] {
                let w: Vec<f32> = (0..cols).map(|_| rng.normal()).collect();
                let bytes: Vec<u8> = match ty {
                    GgmlType::F32 => w.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    GgmlType::F16 => w.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
                    _ => w.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
                };
                let wf = dequantize(ty, &bytes, cols).unwrap();
                let x: Vec<f32> = (0..3 * cols).map(|_| rng.normal()).collect();
                for simd in simds() {
                    let mut out = [f32::NAN; 3];
                    dot_float(simd, ty, &bytes, cols, &x, 0, &mut out);
                    let want: Vec<f64> = (0..3).map(|o| wf.iter().zip(&x[o * cols..]).map(|(&a, &b)| a as f64 * b as f64).sum()).collect();
                    let e = nmse(&out, &want);
                    assert!(e < 1e-10, "{} cols {cols} {simd:?}: nmse {e}", ty.name());
                    // Each activation row gets the same bits alone, in a pair or in the tile
                    // (fused and sequential passes agree exactly).
                    for o in 0..3 {
                        let mut one = [f32::NAN];
                        dot_float(simd, ty, &bytes, cols, &x, o, &mut one);
                        assert_eq!(one[0].to_bits(), out[o].to_bits(), "{} cols {cols} {simd:?}: row {o} alone differs from its tile", ty.name());
                    }
                    let mut two = [f32::NAN; 2];
                    dot_float(simd, ty, &bytes, cols, &x, 1, &mut two);
                    assert_eq!([two[0].to_bits(), two[1].to_bits()], [out[1].to_bits(), out[2].to_bits()], "{} cols {cols} {simd:?}: a pair differs from its tile", ty.name());
                }
            }
        }
    }

    /// A piece of several weight rows (rows longer than a column chunk are summed chunk by
    /// chunk, in a different loop order for one and for several activation rows): every
    /// (weight row, activation row) has the bits of its own single-row call.
    #[test]
    fn float_pieces_match_single_rows() {
        let mut rng = Rng::new(13);
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            for cols in [576, 2085, 5632] {
                let rows = 5;
                let rb = row_bytes(ty, cols);
                let w: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
                let bytes: Vec<u8> = match ty {
                    GgmlType::F32 => w.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    GgmlType::F16 => w.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
                    _ => w.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
                };
                let x: Vec<f32> = (0..(TILE + 1) * cols).map(|_| rng.normal()).collect();
                for simd in simds() {
                    for t in 1..=TILE {
                        let mut out = vec![f32::NAN; rows * t];
                        dot_float_rows(simd, ty, &bytes, rows, cols, &x, 1, t, &mut out);
                        for j in 0..rows {
                            for i in 0..t {
                                let mut one = [f32::NAN];
                                dot_float(simd, ty, &bytes[j * rb..(j + 1) * rb], cols, &x, 1 + i, &mut one);
                                assert_eq!(out[j * t + i].to_bits(), one[0].to_bits(), "{} cols {cols} {simd:?} t {t}: weight row {j}, activation row {i}", ty.name());
                            }
                        }
                    }
                }
            }
        }
    }

    /// Attention of several queries over f16, f32 and mixed key/value rows against f64 softmax
    /// attention of the values as stored, on head sizes that are and are not multiples of 8 and
    /// odd position counts; each query's output has the same bits alone as in any group.
    #[test]
    fn attention_matches_f64_and_each_query_is_alone() {
        let mut rng = Rng::new(17);
        for dh in [8, 12, 48, 64, 72, 128] {
            for len in [1, 3, 5, 17, 130] {
                for kinds in ["f16", "f32", "mixed"] {
                    let keys: Vec<Vec<f32>> = (0..len).map(|_| (0..dh).map(|_| rng.normal()).collect()).collect();
                    let values: Vec<Vec<f32>> = (0..len).map(|_| (0..dh).map(|_| rng.normal()).collect()).collect();
                    let h = |v: &Vec<f32>| v.iter().map(|&x| half::f16::from_f32(x)).collect::<Vec<_>>();
                    let (k16, v16): (Vec<_>, Vec<_>) = (keys.iter().map(h).collect(), values.iter().map(h).collect());
                    let half_at = |p: usize| kinds == "f16" || (kinds == "mixed" && p % 3 != 1);
                    let kv = |p: usize, value: bool| -> KvRow<'_> {
                        match (half_at(p), value) {
                            (true, false) => KvRow::F16(&k16[p]),
                            (true, true) => KvRow::F16(&v16[p]),
                            (false, false) => KvRow::F32(&keys[p]),
                            (false, true) => KvRow::F32(&values[p]),
                        }
                    };
                    let stored = |p: usize, value: bool| -> Vec<f64> {
                        match kv(p, value) {
                            KvRow::F16(r) => r.iter().map(|x| x.to_f64()).collect(),
                            KvRow::F32(r) => r.iter().map(|&x| x as f64).collect(),
                        }
                    };
                    let n = 5;
                    let qs: Vec<Vec<f32>> = (0..n).map(|_| (0..dh).map(|_| 2.0 * rng.normal()).collect()).collect();
                    let refs: Vec<&[f32]> = qs.iter().map(|q| q.as_slice()).collect();
                    for simd in simds() {
                        let mut scratch = AttendScratch::default();
                        let mut all = vec![f32::NAN; n * dh];
                        attend_many(simd, &refs, 0..len, &kv, &mut all, &mut scratch);
                        for (i, q) in qs.iter().enumerate() {
                            let scores: Vec<f64> = (0..len).map(|p| stored(p, false).iter().zip(q).map(|(k, &q)| k * q as f64).sum::<f64>() / (dh as f64).sqrt()).collect();
                            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                            let z: f64 = e.iter().sum();
                            let want: Vec<f64> = (0..dh).map(|c| (0..len).map(|p| e[p] * stored(p, true)[c]).sum::<f64>() / z).collect();
                            let got = &all[i * dh..(i + 1) * dh];
                            let err = nmse(got, &want);
                            assert!(err < 1e-10, "dh {dh} len {len} {kinds} {simd:?} query {i}: nmse {err}");
                            let mut alone = vec![f32::NAN; dh];
                            attend_many(simd, &[q], 0..len, &kv, &mut alone, &mut scratch);
                            assert!(alone.iter().zip(got).all(|(a, b)| a.to_bits() == b.to_bits()), "dh {dh} len {len} {kinds} {simd:?}: query {i} alone differs from its group");
                        }
                    }
                }
            }
        }
    }

    /// SwiGLU against f64, every `Simd` the same bits (they share the exponential's arithmetic).
    #[test]
    fn swiglu_matches_f64_on_every_simd() {
        let mut rng = Rng::new(19);
        let n = 203;
        let mut gate: Vec<f32> = (0..n).map(|_| 4.0 * rng.normal()).collect();
        gate[5] = -95.0;
        gate[6] = 95.0;
        let up: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let want: Vec<f64> = gate.iter().zip(&up).map(|(&g, &u)| g as f64 / (1.0 + (-(g as f64)).exp()) * u as f64).collect();
        let mut outs = Vec::new();
        for simd in simds() {
            let mut out = vec![f32::NAN; n];
            swiglu(simd, &gate, &up, &mut out);
            let e = nmse(&out, &want);
            assert!(e < 1e-12, "{simd:?}: nmse {e}");
            outs.push(out);
        }
        for (simd, o) in simds().iter().zip(&outs).skip(1) {
            assert!(o.iter().zip(&outs[0]).all(|(a, b)| a.to_bits() == b.to_bits()), "{simd:?} differs from the portable SwiGLU");
        }
    }

    #[test]
    fn activations_quantise_within_half_a_step() {
        let mut rng = Rng::new(3);
        let x: Vec<f32> = (0..64).map(|_| rng.normal() * 3.0).collect();
        let mut a = QActs::default();
        a.quantize(&x, 64);
        for (i, &v) in x.iter().enumerate() {
            let d = a.d[i / 32];
            assert!((a.q[i] as f32 * d - v).abs() <= 0.5 * d * 1.0001, "value {i}");
        }
        assert_eq!(a.s[1], a.q[16..32].iter().map(|&q| q as i32).sum::<i32>());
        let mut z = QActs::default();
        z.quantize(&[0.0; 32], 32);
        assert_eq!((z.d[0], z.s[0]), (0.0, 0));
    }
}
