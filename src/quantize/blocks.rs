//! Quantisers: rows of f32 values to ggml blocks (the layouts `gguf::dequantize` reads).
//!
//! - F32, F16, BF16: each value rounded to nearest (F16 overflow is an error, not infinity).
//! - Q8_0: one f16 scale per 32 values, `d = max|x| / 127`, values rounded to nearest.
//! - Q4_0, Q5_0 (symmetric, `x = d*q`, q in -8..=7 / -16..=15) and Q4_1, Q5_1 (`x = d*q + m`,
//!   q in 0..=15 / 0..=31): a scale search per block, errors weighted by `x²`. Candidate grids around the plain
//!   round-to-nearest one (the value of largest magnitude on the end of the range) are tried;
//!   for each, the block's values are rounded on that grid, the scale (and offset) are refitted
//!   by least squares to those integers, and the candidate of smallest squared error wins. The
//!   stored f16 scale is then used to round every value once more (nearest for that scale).
//! - K-quants (256-value super-blocks): the same search per sub-block, with importance weights
//!   `w = rms(block) + |x|` (large values matter more). Q4_K / Q5_K: per 32-value sub-block a
//!   scale and a non-negative min (`x = d*sc*q - dmin*m`, q in 0..=15 / 0..=31), whose 8 scales
//!   and 8 mins are then stored as 6-bit multiples of the super-block's f16 `d` and `dmin`.
//!   Q6_K: per 16-value sub-block a signed scale (q in -32..=31), the 16 scales stored as int8
//!   multiples of the super-block's f16 `d`. Values are rounded last, on the stored scales.
//!
//! `Search::Nearest` skips the search (the plain round-to-nearest grid, no refit): the baseline
//! the tests compare the search with.

use crate::error::{Error, Result};
use crate::gguf::GgmlType;

/// How block scales are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Search {
    /// The grid search with least-squares refits (the module doc).
    Best,
    /// Plain round-to-nearest: the extreme values on the ends of the integer range.
    Nearest,
}

/// The types `quantize_row` writes: the block formats the runtime keeps quantised, and floats
/// (the set `plt::gguf::writer::random_blocks` makes).
pub const TYPES: [GgmlType; 11] = crate::gguf::writer::RANDOM_TYPES;

fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// `x` as stored in an f16.
fn f16_round(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// Bytes of `n` values of `ty` (`n` a multiple of the block size).
pub fn row_bytes(ty: GgmlType, n: usize) -> Option<usize> {
    let (block, bytes) = ty.block()?;
    (n as u64).is_multiple_of(block).then_some((n as u64 / block * bytes) as usize)
}

/// Quantises `x` (whole blocks of `ty`) into `out` (exactly `row_bytes(ty, x.len())` bytes).
/// Errors: a type it does not write, a length that is not whole blocks, a value that is NaN or
/// infinite, a scale that overflows f16 (values beyond about 65504 times the block's integer
/// range).
pub fn quantize_row(ty: GgmlType, x: &[f32], out: &mut [u8], search: Search) -> Result<()> {
    let Some(need) = row_bytes(ty, x.len()) else {
        return Err(Error::Input(format!("{} values are not whole {} blocks", x.len(), ty.name())));
    };
    if out.len() != need {
        return Err(Error::Input(format!("{} bytes given for {} {} values ({need} needed)", out.len(), x.len(), ty.name())));
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::Input(format!("value {i} is {}", x[i])));
    }
    let (block, bytes) = ty.block().map(|(b, s)| (b as usize, s as usize)).unwrap_or((1, 4));
    let blocks = x.chunks_exact(block).zip(out.chunks_exact_mut(bytes));
    match ty {
        GgmlType::F32 => blocks.for_each(|(x, o)| o.copy_from_slice(&x[0].to_le_bytes())),
        GgmlType::F16 => {
            for (i, (x, o)) in blocks.enumerate() {
                let h = half::f16::from_f32(x[0]);
                if h.is_infinite() {
                    return Err(Error::Input(format!("value {i} ({}) is beyond the F16 range", x[0])));
                }
                o.copy_from_slice(&h.to_le_bytes());
            }
        }
        GgmlType::BF16 => blocks.for_each(|(x, o)| o.copy_from_slice(&half::bf16::from_f32(x[0]).to_le_bytes())),
        GgmlType::Q8_0 => blocks.for_each(|(x, o)| q8_0(x, o)),
        GgmlType::Q4_0 => blocks.for_each(|(x, o)| q_0(x, o, 8, search)),
        GgmlType::Q5_0 => blocks.for_each(|(x, o)| q_0(x, o, 16, search)),
        GgmlType::Q4_1 => blocks.for_each(|(x, o)| q_1(x, o, 15, search)),
        GgmlType::Q5_1 => blocks.for_each(|(x, o)| q_1(x, o, 31, search)),
        GgmlType::Q4_K => blocks.for_each(|(x, o)| q_k45(x, o, 15, search)),
        GgmlType::Q5_K => blocks.for_each(|(x, o)| q_k45(x, o, 31, search)),
        GgmlType::Q6_K => blocks.for_each(|(x, o)| q6_k(x, o, search)),
        other => return Err(Error::Input(format!("no quantiser for {}", other.name()))),
    }
    if let Some(bad) = crate::gguf::first_non_finite(ty, out) {
        return Err(Error::Input(format!(
            "block {} needs a scale beyond the f16 range (values too large for {})",
            bad.index,
            ty.name()
        )));
    }
    Ok(())
}

/// Q8_0: `d = max|x| / 127`.
fn q8_0(x: &[f32], o: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = f16_round(amax / 127.0);
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    o[..2].copy_from_slice(&f16_bytes(d));
    for (q, v) in o[2..34].iter_mut().zip(x) {
        *q = ((v * id).round().clamp(-127.0, 127.0) as i8) as u8;
    }
}

/// Candidate offsets of the grid's end (in integer steps) tried by the searches: symmetric
/// (the largest value's integer) and affine (the range's).
const STEPS: [f32; 9] = [0.0, -0.4, -0.2, 0.2, 0.4, 0.6, 0.9, 1.3, 1.8];
const AFFINE_STEPS: [f32; 21] = [0.0, -1.0, -0.9, -0.8, -0.7, -0.6, -0.5, -0.4, -0.3, -0.2, -0.1, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/// The symmetric scale of `x` for integers in `-n..=n-1` (weights `w`): the value of largest
/// magnitude, `m`, sits on `-n` for the plain grid; candidates put it on `-n + s` for `s` in
/// `STEPS` and refit `d = Σwxq / Σwq²`. Returns the scale of smallest weighted error.
fn symmetric_scale(x: &[f32], w: &[f32], n: i32, search: Search) -> f32 {
    let m = x.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    if m == 0.0 {
        return 0.0;
    }
    let (lo, hi) = (-(n as f32), (n - 1) as f32);
    if search == Search::Nearest {
        return m / lo;
    }
    let mut best = (f32::NEG_INFINITY, m / lo);
    for s in STEPS {
        let is = (lo + s) / m;
        let (mut sxq, mut sqq) = (0f32, 0f32);
        for (&v, &wi) in x.iter().zip(w) {
            let q = (v * is).round().clamp(lo, hi);
            sxq += wi * v * q;
            sqq += wi * q * q;
        }
        // Error = Σwx² - (Σwxq)²/Σwq²: the largest (Σwxq)²/Σwq² wins.
        if sqq > 0.0 && sxq * sxq / sqq > best.0 {
            best = (sxq * sxq / sqq, sxq / sqq);
        }
    }
    best.1
}

/// The affine fit `x ≈ d*q + m` of `x` for integers in `0..=n` (weights `w`); with
/// `min_le_zero`, `m <= 0` (K-quants store `-m` unsigned). Returns (d >= 0, m).
fn affine_scale(x: &[f32], w: &[f32], n: i32, min_le_zero: bool, search: Search) -> (f32, f32) {
    let mut lo = x.iter().fold(f32::INFINITY, |a, &v| a.min(v));
    let hi = x.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    if min_le_zero {
        lo = lo.min(0.0);
    }
    if hi <= lo {
        return (0.0, lo);
    }
    let nf = n as f32;
    let plain = ((hi - lo) / nf, lo);
    if search == Search::Nearest {
        return plain;
    }
    let err = |d: f32, m: f32| -> f32 {
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        x.iter().zip(w).map(|(&v, &wi)| {
            let q = ((v - m) * id).round().clamp(0.0, nf);
            let e = d * q + m - v;
            wi * e * e
        }).sum()
    };
    let mut best = (err(plain.0, plain.1), plain);
    let sxx: f32 = x.iter().zip(w).map(|(&v, &wi)| wi * v * v).sum();
    for s in AFFINE_STEPS {
        let is = (nf + s) / (hi - lo);
        let (mut a, mut b, mut c, mut sx, mut sy) = (0f32, 0f32, 0f32, 0f32, 0f32);
        for (&v, &wi) in x.iter().zip(w) {
            let q = ((v - lo) * is).round().clamp(0.0, nf);
            a += wi;
            b += wi * q;
            c += wi * q * q;
            sx += wi * v;
            sy += wi * q * v;
        }
        let det = a * c - b * b;
        if det <= 0.0 {
            continue;
        }
        let (mut d, mut m) = ((a * sy - b * sx) / det, (c * sx - b * sy) / det);
        if min_le_zero && m > 0.0 {
            m = 0.0;
            d = sy / c;
        }
        if d.is_nan() || d <= 0.0 {
            continue;
        }
        // Σw(dq + m - x)² from the sums (an upper bound of the error after rounding again).
        let e = d * d * c + 2.0 * d * m * b + m * m * a - 2.0 * d * sy - 2.0 * m * sx + sxx;
        if e < best.0 {
            best = (e, (d, m));
        }
    }
    best.1
}

/// Q4_0 / Q5_0: `x = d * q`, q in `-n..=n-1`, stored as `q + n`.
fn q_0(x: &[f32], o: &mut [u8], n: i32, search: Search) {
    let w = block_weights(x);
    let d = f16_round(symmetric_scale(x, &w, n, search));
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0u8; 32];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = ((v * id).round().clamp(-(n as f32), (n - 1) as f32) as i32 + n) as u8;
    }
    o[..2].copy_from_slice(&f16_bytes(d));
    pack_32(&q, &mut o[2..], n == 16);
}

/// Q4_1 / Q5_1: `x = d * q + m`, q in `0..=n`.
fn q_1(x: &[f32], o: &mut [u8], n: i32, search: Search) {
    let w = block_weights(x);
    let (d, m) = affine_scale(x, &w, n, false, search);
    let (d, m) = (f16_round(d), f16_round(m));
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0u8; 32];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = ((v - m) * id).round().clamp(0.0, n as f32) as u8;
    }
    o[..2].copy_from_slice(&f16_bytes(d));
    o[2..4].copy_from_slice(&f16_bytes(m));
    pack_32(&q, &mut o[4..], n == 31);
}

/// The nibbles of 32 values (value j < 16 in the low nibble of byte j, j >= 16 in the high
/// one of byte j - 16), after a u32 of 5th bits (bit j for value j) when `five`.
fn pack_32(q: &[u8; 32], o: &mut [u8], five: bool) {
    let qs = if five {
        let qh = q.iter().enumerate().fold(0u32, |h, (j, &v)| h | (((v >> 4) as u32 & 1) << j));
        o[..4].copy_from_slice(&qh.to_le_bytes());
        &mut o[4..20]
    } else {
        &mut o[..16]
    };
    for j in 0..16 {
        qs[j] = (q[j] & 0xF) | ((q[j + 16] & 0xF) << 4);
    }
}

/// Importance weights of a 32-value block: `x²` (the largest values are kept most exactly).
fn block_weights(x: &[f32]) -> Vec<f32> {
    x.iter().map(|v| v * v).collect()
}

/// Importance weights of a super-block: `rms + |x|`.
fn weights(x: &[f32]) -> Vec<f32> {
    let rms = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
    x.iter().map(|v| rms + v.abs()).collect()
}

/// Q4_K (n = 15) / Q5_K (n = 31): 8 sub-blocks of 32, `x = d*sc*q - dmin*mn`.
fn q_k45(x: &[f32], o: &mut [u8], n: i32, search: Search) {
    let w = weights(x);
    let mut fits = [(0f32, 0f32); 8];
    for (j, f) in fits.iter_mut().enumerate() {
        let r = 32 * j..32 * j + 32;
        *f = affine_scale(&x[r.clone()], &w[r], n, true, search);
    }
    let max_d = fits.iter().fold(0f32, |a, f| a.max(f.0));
    let max_m = fits.iter().fold(0f32, |a, f| a.max(-f.1));
    let (mut d, mut dmin) = (f16_round(max_d / 63.0), f16_round(max_m / 63.0));
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..8 {
        sc[j] = if d > 0.0 { (fits[j].0 / d).round().clamp(0.0, 63.0) as u8 } else { 0 };
        mn[j] = if dmin > 0.0 { (-fits[j].1 / dmin).round().clamp(0.0, 63.0) as u8 } else { 0 };
    }
    // Values rounded on the stored scales, and their weighted error.
    let round = |d: f32, dmin: f32, q: &mut [u8; 256]| -> f32 {
        let mut err = 0f32;
        for j in 0..8 {
            let (dl, ml) = (d * sc[j] as f32, dmin * mn[j] as f32);
            let id = if dl > 0.0 { 1.0 / dl } else { 0.0 };
            for i in 32 * j..32 * j + 32 {
                q[i] = ((x[i] + ml) * id).round().clamp(0.0, n as f32) as u8;
                let e = dl * q[i] as f32 - ml - x[i];
                err += w[i] * e * e;
            }
        }
        err
    };
    let mut q = [0u8; 256];
    let mut err = round(d, dmin, &mut q);
    if search == Search::Best {
        // Refit the super-block's d and dmin to the integers by weighted least squares
        // (x ≈ d * a - dmin * b with a = sc*q, b = mn), kept when the error drops.
        for _ in 0..2 {
            let (mut aa, mut ab, mut bb, mut ax, mut bx) = (0f32, 0f32, 0f32, 0f32, 0f32);
            for i in 0..256 {
                let (a, b) = ((sc[i / 32] as u32 * q[i] as u32) as f32, mn[i / 32] as f32);
                aa += w[i] * a * a;
                ab += w[i] * a * b;
                bb += w[i] * b * b;
                ax += w[i] * a * x[i];
                bx += w[i] * b * x[i];
            }
            let det = aa * bb - ab * ab;
            let (nd, nm) = if bb > 0.0 && det > 0.0 {
                let nd = (ax * bb - ab * bx) / det;
                (nd, (ab * nd - bx) / bb)
            } else if aa > 0.0 {
                (ax / aa, dmin)
            } else {
                break;
            };
            let (nd, nm) = (f16_round(nd), f16_round(nm));
            if !(nd.is_finite() && nm.is_finite()) || nd <= 0.0 || nm < 0.0 {
                break;
            }
            let mut nq = [0u8; 256];
            let ne = round(nd, nm, &mut nq);
            if ne >= err {
                break;
            }
            (d, dmin, q, err) = (nd, nm, nq, ne);
        }
    }
    o[..2].copy_from_slice(&f16_bytes(d));
    o[2..4].copy_from_slice(&f16_bytes(dmin));
    // The 12 scale bytes: sub-blocks 0..4 in the low 6 bits of bytes j (scale) and j + 4 (min);
    // 4..8 in the nibbles of byte j + 4 with their top 2 bits in bytes j - 4 and j.
    let s = &mut o[4..16];
    s.fill(0);
    for j in 0..4 {
        s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        s[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
        s[j + 8] = (sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4);
    }
    let qs_at = if n == 31 {
        // Q5_K: bit (2i + s) of qh[l] is the 5th bit of value 64i + 32s + l.
        let qh = &mut o[16..48];
        qh.fill(0);
        for (i, &v) in q.iter().enumerate() {
            qh[i % 32] |= ((v >> 4) & 1) << (i / 32);
        }
        48
    } else {
        16
    };
    let qs = &mut o[qs_at..qs_at + 128];
    for i in 0..4 {
        for l in 0..32 {
            qs[32 * i + l] = (q[64 * i + l] & 0xF) | ((q[64 * i + 32 + l] & 0xF) << 4);
        }
    }
}

/// Q6_K: 16 sub-blocks of 16, `x = d * sc * q`, q in -32..=31, sc an int8.
fn q6_k(x: &[f32], o: &mut [u8], search: Search) {
    let w = weights(x);
    let mut scales = [0f32; 16];
    for (j, s) in scales.iter_mut().enumerate() {
        let r = 16 * j..16 * j + 16;
        *s = symmetric_scale(&x[r.clone()], &w[r], 32, search);
    }
    let amax = scales.iter().fold(0f32, |a, s| a.max(s.abs()));
    let mut d = f16_round(amax / 127.0);
    let sc: [i8; 16] = std::array::from_fn(|j| if d > 0.0 { (scales[j] / d).round().clamp(-127.0, 127.0) as i8 } else { 0 });
    let round = |d: f32, q: &mut [u8; 256]| -> f32 {
        let mut err = 0f32;
        for (j, &s) in sc.iter().enumerate() {
            let dl = d * s as f32;
            let id = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            for i in 16 * j..16 * j + 16 {
                let v = (x[i] * id).round().clamp(-32.0, 31.0);
                q[i] = (v as i32 + 32) as u8;
                let e = dl * v - x[i];
                err += w[i] * e * e;
            }
        }
        err
    };
    let mut q = [0u8; 256];
    let mut err = round(d, &mut q);
    if search == Search::Best {
        // Refit the super-block's d to the integers (x ≈ d * sc * q), kept when the error drops.
        for _ in 0..2 {
            let (mut aa, mut ax) = (0f32, 0f32);
            for i in 0..256 {
                let a = sc[i / 16] as f32 * (q[i] as f32 - 32.0);
                aa += w[i] * a * a;
                ax += w[i] * a * x[i];
            }
            if aa <= 0.0 {
                break;
            }
            let nd = f16_round(ax / aa);
            let mut nq = [0u8; 256];
            let ne = round(nd, &mut nq);
            if !nd.is_finite() || ne >= err {
                break;
            }
            (d, q, err) = (nd, nq, ne);
        }
    }
    // Per half of 128 values: ql[64], qh[32]; value l + 32k (k = 0..4) of the half has its low
    // nibble in ql[l + 32 (k % 2)] (low nibble for k < 2, high for k >= 2) and its top 2 bits at
    // bit 2k of qh[l].
    let (ql, rest) = o.split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    for h in 0..2 {
        let (ql, qh, q) = (&mut ql[64 * h..64 * h + 64], &mut qh[32 * h..32 * h + 32], &q[128 * h..128 * h + 128]);
        for l in 0..32 {
            let (q1, q2, q3, q4) = (q[l], q[l + 32], q[l + 64], q[l + 96]);
            ql[l] = (q1 & 0xF) | ((q3 & 0xF) << 4);
            ql[l + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
            qh[l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    for (r, &s) in rest.iter_mut().zip(&sc) {
        *r = s as u8;
    }
    rest[16..18].copy_from_slice(&f16_bytes(d));
}

/// Quantises `rows` rows of `x` (row length `x.len() / rows`) on up to `threads` threads into
/// one buffer; an error names the first bad row.
pub fn quantize_rows(ty: GgmlType, x: &[f32], rows: usize, threads: usize, search: Search) -> Result<Vec<u8>> {
    let cols = x.len().checked_div(rows).unwrap_or(0);
    let rb = row_bytes(ty, cols).ok_or_else(|| Error::Input(format!("rows of {cols} values are not whole {} blocks", ty.name())))?;
    let mut out = vec![0u8; rb * rows];
    if rows == 0 {
        return Ok(out);
    }
    let threads = threads.clamp(1, rows);
    let per = rows.div_ceil(threads);
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(per * rb)
            .zip(x.chunks(per * cols))
            .enumerate()
            .map(|(k, (o, x))| {
                s.spawn(move || {
                    for (r, (o, x)) in o.chunks_exact_mut(rb).zip(x.chunks_exact(cols)).enumerate() {
                        quantize_row(ty, x, o, search).map_err(|e| Error::Input(format!("row {}: {e}", k * per + r)))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(Error::Input("a quantiser thread panicked".into())))).collect()
    });
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::dequantize;
    use crate::rng::Rng;

    /// RMS(dequant(quant(x)) - x) / RMS(x) over `rows` Gaussian rows of 256 values.
    fn rel_rms(ty: GgmlType, search: Search, seed: u64) -> f64 {
        let mut rng = Rng::new(seed);
        let x: Vec<f32> = (0..64 * 256).map(|_| rng.normal()).collect();
        let q = quantize_rows(ty, &x, 64, 2, search).unwrap();
        let y = dequantize(ty, &q, x.len()).unwrap();
        let (mut e, mut s) = (0f64, 0f64);
        for (a, b) in x.iter().zip(&y) {
            e += ((a - b) as f64).powi(2);
            s += (*a as f64).powi(2);
        }
        (e / s).sqrt()
    }

    #[test]
    fn every_type_round_trips_within_its_bound() {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        // Bounds: a little above the measured error of each format on N(0, 1) values.
        for (ty, bound) in [
            (GgmlType::F32, 1e-9),
            (GgmlType::F16, 5e-4),
            (GgmlType::BF16, 4e-3),
            (GgmlType::Q8_0, 0.0065),
            (GgmlType::Q6_K, 0.022),
            (GgmlType::Q5_1, 0.042),
            (GgmlType::Q5_0, 0.046),
            (GgmlType::Q5_K, 0.042),
            (GgmlType::Q4_1, 0.083),
            (GgmlType::Q4_0, 0.09),
            (GgmlType::Q4_K, 0.08),
        ] {
            let e = rel_rms(ty, Search::Best, seed);
            assert!(e < bound, "{}: relative RMS error {e} (bound {bound}, seed {seed})", ty.name());
            // The search beats plain round-to-nearest: the K-quants' by 3% or more in RMS error;
            // the 32-value blocks', whose search weighs large values more (`x²`), at all.
            let gain = match ty {
                GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => 0.97,
                GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => 0.995,
                _ => continue,
            };
            let plain = rel_rms(ty, Search::Nearest, seed);
            assert!(e < plain * gain, "{}: search {e} vs nearest {plain} (seed {seed})", ty.name());
        }
    }

    #[test]
    fn edge_rows() {
        for ty in TYPES {
            let n = ty.block().unwrap().0.max(32) as usize * 2;
            let mut out = vec![0u8; row_bytes(ty, n).unwrap()];
            // All zeros: zeros back.
            quantize_row(ty, &vec![0.0; n], &mut out, Search::Best).unwrap();
            assert!(dequantize(ty, &out, n).unwrap().iter().all(|&v| v == 0.0), "{}", ty.name());
            // A constant row: back within the format's step.
            quantize_row(ty, &vec![0.37; n], &mut out, Search::Best).unwrap();
            for v in dequantize(ty, &out, n).unwrap() {
                assert!((v - 0.37).abs() < 0.37 * 0.02, "{}: {v}", ty.name());
            }
            // One huge outlier among small values: the outlier survives.
            let mut x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 13) as f32 * 1e-3 - 6e-3).collect();
            x[5] = 1000.0;
            quantize_row(ty, &x, &mut out, Search::Best).unwrap();
            let y = dequantize(ty, &out, n).unwrap();
            assert!((y[5] - 1000.0).abs() < 1000.0 * 0.02, "{}: {}", ty.name(), y[5]);
            // NaN and infinity: errors naming the value.
            x[7] = f32::NAN;
            let e = quantize_row(ty, &x, &mut out, Search::Best).unwrap_err().to_string();
            assert!(e.contains("value 7 is NaN"), "{}: {e}", ty.name());
        }
        // Values that no f16 scale can hold.
        let mut out = vec![0u8; 34];
        let e = quantize_row(GgmlType::Q8_0, &[1e30; 32], &mut out, Search::Best).unwrap_err().to_string();
        assert!(e.contains("beyond the f16 range"), "{e}");
        let e = quantize_row(GgmlType::Q4_K, &[1.0; 32], &mut out, Search::Best).unwrap_err().to_string();
        assert!(e.contains("not whole Q4_K blocks"), "{e}");
    }

    #[test]
    fn rows_split_over_threads_equal_one_thread() {
        let mut rng = Rng::new(9);
        let x: Vec<f32> = (0..7 * 512).map(|_| rng.normal()).collect();
        for ty in [GgmlType::Q4_K, GgmlType::Q5_0, GgmlType::Q6_K] {
            assert_eq!(quantize_rows(ty, &x, 7, 1, Search::Best).unwrap(), quantize_rows(ty, &x, 7, 3, Search::Best).unwrap());
        }
    }
}
