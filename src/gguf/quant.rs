//! Dequantisation of ggml tensor data to f32 (block layouts as in ggml-quants.c): F32, F16,
//! BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K. These are the reference every
//! quantised kernel is tested against.

use super::err;
use super::header::GgmlType;
use crate::error::Result;

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Q4_K / Q5_K: the 6-bit scale and min of sub-block `j` (0..8) from the 12 packed bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        (((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4)) as f32, ((q[j + 4] >> 4) | ((q[j] >> 6) << 4)) as f32)
    }
}

/// The first number in `data` (whole blocks of `ty`) that is NaN or infinite, found from the
/// raw bytes without decoding: a value of an F32/F16/BF16 tensor, or a block's f16 scale or min
/// (the only numbers a block holds that can be non-finite: its quants and sub-block scales are
/// integers, and finite scales decode to finite values). None when every one is finite, and for
/// types `dequantize` rejects.
pub fn first_non_finite(ty: GgmlType, data: &[u8]) -> Option<NonFinite> {
    // An f16 or bf16 is non-finite exactly when its exponent bits are all ones.
    fn first<const N: usize>(data: &[u8], bad: impl Fn([u8; N]) -> Option<f32>) -> Option<NonFinite> {
        data.chunks_exact(N)
            .enumerate()
            .find_map(|(index, c)| bad(c.try_into().unwrap()).map(|value| NonFinite { index, field: None, value }))
    }
    let f16 = |h: u16| (h & 0x7C00 == 0x7C00).then(|| half::f16::from_bits(h).to_f32());
    let fields: &[(usize, &'static str)] = match ty {
        GgmlType::F32 => return first(data, |c| Some(f32::from_le_bytes(c)).filter(|x| !x.is_finite())),
        GgmlType::F16 => return first(data, |c| f16(u16::from_le_bytes(c))),
        GgmlType::BF16 => {
            return first(data, |c| {
                let h = u16::from_le_bytes(c);
                (h & 0x7F80 == 0x7F80).then(|| half::bf16::from_bits(h).to_f32())
            })
        }
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[(0, "scale `d`")],
        GgmlType::Q4_1 | GgmlType::Q5_1 => &[(0, "scale `d`"), (2, "min `m`")],
        GgmlType::Q4_K | GgmlType::Q5_K => &[(0, "super-block scale `d`"), (2, "super-block min `dmin`")],
        GgmlType::Q6_K => &[(208, "super-block scale `d`")],
        _ => return None,
    };
    let block_bytes = ty.block()?.1 as usize;
    for (index, b) in data.chunks_exact(block_bytes).enumerate() {
        for &(at, field) in fields {
            if let Some(value) = f16(u16::from_le_bytes([b[at], b[at + 1]])) {
                return Some(NonFinite { index, field: Some(field), value });
            }
        }
    }
    None
}

/// A NaN or infinity in tensor data (`first_non_finite`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NonFinite {
    /// The value's index (F32/F16/BF16) or the block's index (quantised types), counted from
    /// the start of the bytes examined.
    pub index: usize,
    /// The block field that holds it ("scale `d`", ...); None for a plain value.
    pub field: Option<&'static str>,
    pub value: f32,
}

impl NonFinite {
    /// "NaN", "+Inf" or "-Inf".
    pub fn kind(&self) -> &'static str {
        if self.value.is_nan() {
            "NaN"
        } else if self.value > 0.0 {
            "+Inf"
        } else {
            "-Inf"
        }
    }
}

/// `n` values of type `ty` from `data` (which must hold exactly those values).
pub fn dequantize(ty: GgmlType, data: &[u8], n: usize) -> Result<Vec<f32>> {
    let Some((block, block_bytes)) = ty.block() else {
        return Err(err(format!("unknown ggml type {}", ty.0)));
    };
    let (block, block_bytes) = (block as usize, block_bytes as usize);
    if !n.is_multiple_of(block) || (n / block).checked_mul(block_bytes) != Some(data.len()) {
        return Err(err(format!("{} data of {} bytes does not hold {n} values", ty.name(), data.len())));
    }
    let mut out = Vec::with_capacity(n);
    let blocks = data.chunks_exact(block_bytes);
    match ty {
        GgmlType::F32 => out.extend(blocks.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        GgmlType::F16 => out.extend(blocks.map(|c| f16_at(c, 0))),
        GgmlType::BF16 => out.extend(blocks.map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())),
        // x = d * (q - 8); value j < 16 is the low nibble of byte j, value j >= 16 the high one.
        GgmlType::Q4_0 => {
            for b in blocks {
                let (d, qs) = (f16_at(b, 0), &b[2..18]);
                out.extend(qs.iter().map(|&q| d * ((q & 0xF) as i32 - 8) as f32));
                out.extend(qs.iter().map(|&q| d * ((q >> 4) as i32 - 8) as f32));
            }
        }
        // x = d * q + m, nibbles as in Q4_0.
        GgmlType::Q4_1 => {
            for b in blocks {
                let (d, m, qs) = (f16_at(b, 0), f16_at(b, 2), &b[4..20]);
                out.extend(qs.iter().map(|&q| d * (q & 0xF) as f32 + m));
                out.extend(qs.iter().map(|&q| d * (q >> 4) as f32 + m));
            }
        }
        // 5-bit: the 5th bit of value j is bit j of the u32 qh.
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let q5_1 = ty == GgmlType::Q5_1;
            for b in blocks {
                let d = f16_at(b, 0);
                let (m, o) = if q5_1 { (f16_at(b, 2), 4) } else { (0.0, 2) };
                let qh = u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
                let qs = &b[o + 4..o + 20];
                for half in 0..2 {
                    for (j, &q) in qs.iter().enumerate() {
                        let lo = if half == 0 { q & 0xF } else { q >> 4 };
                        let hi = ((qh >> (j + 16 * half)) & 1) as u8;
                        let q = (lo | (hi << 4)) as i32;
                        out.push(if q5_1 { d * q as f32 + m } else { d * (q - 16) as f32 });
                    }
                }
            }
        }
        // x = d * q, q an int8.
        GgmlType::Q8_0 => {
            for b in blocks {
                let d = f16_at(b, 0);
                out.extend(b[2..34].iter().map(|&q| d * (q as i8) as f32));
            }
        }
        // 256 values: d, dmin, 12 bytes of 6-bit scales/mins for 8 sub-blocks of 32, then qs
        // (Q5_K: qh [32] before qs). Value l of sub-block pair (2i, 2i+1) uses byte l of qs[32i..].
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let q5 = ty == GgmlType::Q5_K;
            for b in blocks {
                let (d, dmin, scales) = (f16_at(b, 0), f16_at(b, 2), &b[4..16]);
                let (qh, qs) = if q5 { (&b[16..48], &b[48..176]) } else { (&b[0..0], &b[16..144]) };
                for i in 0..4 {
                    let q = &qs[32 * i..32 * i + 32];
                    for s in 0..2 {
                        let (sc, mn) = scale_min_k4(2 * i + s, scales);
                        let (dl, ml) = (d * sc, dmin * mn);
                        for (l, &byte) in q.iter().enumerate() {
                            let mut v = if s == 0 { byte & 0xF } else { byte >> 4 } as u32;
                            if q5 {
                                v |= (((qh[l] >> (2 * i + s)) & 1) as u32) << 4;
                            }
                            out.push(dl * v as f32 - ml);
                        }
                    }
                }
            }
        }
        // 256 values: ql [128], qh [64], int8 scales [16], d.
        GgmlType::Q6_K => {
            for b in blocks {
                let (ql, qh, sc, d) = (&b[0..128], &b[128..192], &b[192..208], f16_at(b, 208));
                for half in 0..2 {
                    let (ql, qh, sc) = (&ql[64 * half..], &qh[32 * half..], &sc[8 * half..]);
                    let mut y = [0f32; 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                        y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                        y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                        y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                    }
                    out.extend_from_slice(&y);
                }
            }
        }
        other => {
            return Err(err(format!(
                "ggml type {} is not supported (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)",
                other.name()
            )))
        }
    }
    Ok(out)
}
