//! Writing GGUF files (version 3, as llama.cpp's gguf-py writes them): metadata of every value
//! type, the tensor-info table, and the tensor data, streamed to any `std::io::Write`.
//!
//! The header (metadata, then every tensor's name, dimensions, type and data offset) is
//! computed up front from the declared tensors' sizes, so `GgufWriter` writes it first and then
//! takes the tensors' bytes in order, in as many pieces as the caller likes: a file of many
//! gigabytes is written with only the piece at hand in memory. Every tensor's data starts at a
//! multiple of the alignment (`general.alignment` when the metadata has it, else 32), padded
//! with zeros, as the reader (`GgufFile`) checks.
//!
//! `random_blocks` makes random, valid ggml blocks of the block formats the runtime keeps
//! quantised (and F32/F16/BF16 values), for `plt init` and `plt bench`.

use super::header::{GgmlType, DEFAULT_ALIGNMENT};
use super::value::{value_type as vt, Array, Value};
use crate::error::{Error, Result};
use crate::rng::Rng;
use std::io::Write;
use std::path::PathBuf;

/// GGML_MAX_NAME: tensor names are shorter than this.
const MAX_NAME: usize = 64;
/// GGML_MAX_DIMS.
const MAX_DIMS: usize = 4;

fn err(msg: impl Into<String>) -> Error {
    Error::Input(format!("GGUF writer: {}", msg.into()))
}

/// Appends a GGUF string (u64 length, then the UTF-8 bytes).
pub fn encode_str(s: &str, out: &mut Vec<u8>) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// The GGUF value type id of `v`.
pub fn value_type_of(v: &Value) -> u32 {
    match v {
        Value::U8(_) => vt::U8,
        Value::I8(_) => vt::I8,
        Value::U16(_) => vt::U16,
        Value::I16(_) => vt::I16,
        Value::U32(_) => vt::U32,
        Value::I32(_) => vt::I32,
        Value::F32(_) => vt::F32,
        Value::Bool(_) => vt::BOOL,
        Value::Str(_) => vt::STR,
        Value::Array(_) => vt::ARRAY,
        Value::U64(_) => vt::U64,
        Value::I64(_) => vt::I64,
        Value::F64(_) => vt::F64,
    }
}

/// The GGUF value type id of an array's elements.
fn element_type_of(a: &Array) -> u32 {
    match a {
        Array::U8(_) => vt::U8,
        Array::I8(_) => vt::I8,
        Array::U16(_) => vt::U16,
        Array::I16(_) => vt::I16,
        Array::U32(_) => vt::U32,
        Array::I32(_) => vt::I32,
        Array::F32(_) => vt::F32,
        Array::Bool(_) => vt::BOOL,
        Array::Str(_) => vt::STR,
        Array::Array(_) => vt::ARRAY,
        Array::U64(_) => vt::U64,
        Array::I64(_) => vt::I64,
        Array::F64(_) => vt::F64,
    }
}

/// Appends the payload of `v` (what follows its type id in a metadata entry).
pub fn encode_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend(x.to_le_bytes()),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::Str(s) => encode_str(s, out),
        Value::Array(a) => encode_array(a, out),
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
    }
}

/// An array's payload: element type id, u64 count, the elements.
fn encode_array(a: &Array, out: &mut Vec<u8>) {
    out.extend(element_type_of(a).to_le_bytes());
    out.extend((a.len() as u64).to_le_bytes());
    fn each<T>(v: &[T], out: &mut Vec<u8>, f: impl Fn(&T, &mut Vec<u8>)) {
        for x in v {
            f(x, out);
        }
    }
    match a {
        Array::U8(v) => out.extend(v),
        Array::I8(v) => each(v, out, |x, o| o.extend(x.to_le_bytes())),
        Array::U16(v) => each(v, out, |x, o| o.extend(x.to_le_bytes())),
        Array::I16(v) => each(v, out, |x, o| o.extend(x.to_le_bytes())),
        Array::U32(v) => each(v, out, |x, o| o.extend(x.to_le_bytes())),
        Array::I32(v) => each(v, out, |x, o| o.extend(x.to_le_bytes())),
        Array::F32(v) => each(v, out, |x, o| o.extend(x.to_le_bytes())),
        Array::Bool(v) => each(v, out, |x, o| o.push(*x as u8)),
        Array::Str(v) => each(v, out, |s, o| encode_str(s, o)),
        Array::Array(v) => each(v, out, encode_array),
        Array::U64(v) => each(v, out, |x, o| o.extend(x.to_le_bytes())),
        Array::I64(v) => each(v, out, |x, o| o.extend(x.to_le_bytes())),
        Array::F64(v) => each(v, out, |x, o| o.extend(x.to_le_bytes())),
    }
}

/// Appends one metadata entry whose payload is already encoded: key, type id, payload.
pub fn encode_entry_raw(key: &str, ty: u32, payload: &[u8], out: &mut Vec<u8>) {
    encode_str(key, out);
    out.extend(ty.to_le_bytes());
    out.extend(payload);
}

/// Appends one metadata entry: key, type id, payload.
pub fn encode_entry(key: &str, v: &Value, out: &mut Vec<u8>) {
    encode_str(key, out);
    out.extend(value_type_of(v).to_le_bytes());
    encode_value(v, out);
}

/// Appends one entry of the tensor-info table: name, dimension count, dimensions
/// (fastest-varying first), type id, data offset (relative to the data section).
pub fn encode_tensor_info(name: &str, dims: &[u64], ty: u32, offset: u64, out: &mut Vec<u8>) {
    encode_str(name, out);
    out.extend((dims.len() as u32).to_le_bytes());
    for d in dims {
        out.extend(d.to_le_bytes());
    }
    out.extend(ty.to_le_bytes());
    out.extend(offset.to_le_bytes());
}

/// `n` rounded up to a multiple of `alignment`.
pub fn align_up(n: u64, alignment: u64) -> u64 {
    n.div_ceil(alignment) * alignment
}

/// The data offsets of tensors of `sizes` bytes, each at a multiple of `alignment`, in order.
pub fn data_offsets(sizes: impl IntoIterator<Item = u64>, alignment: u64) -> Vec<u64> {
    let mut at = 0;
    sizes
        .into_iter()
        .map(|n| {
            let o = at;
            at = align_up(at + n, alignment);
            o
        })
        .collect()
}

/// A tensor to write: its name, its dimensions as GGUF lists them (fastest-varying first, so a
/// row-major [rows, cols] matrix is `[cols, rows]`), and its type.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDecl {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorDecl {
    /// A tensor of row-major `shape` (a matrix [rows, cols], a vector [n]).
    pub fn new(name: impl Into<String>, shape: &[usize], ty: GgmlType) -> TensorDecl {
        TensorDecl { name: name.into(), dims: shape.iter().rev().map(|&d| d as u64).collect(), ty }
    }

    /// Values in the tensor.
    pub fn elems(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes of its data; an error when the type is unknown or its rows are not whole blocks.
    pub fn bytes(&self) -> Result<u64> {
        let (block, block_bytes) = self.ty.block().ok_or_else(|| err(format!("tensor `{}`: unknown ggml type {}", self.name, self.ty.0)))?;
        let row = self.dims.first().copied().unwrap_or(1);
        if !row.is_multiple_of(block) {
            return Err(err(format!(
                "tensor `{}`: rows of {row} values are not whole {} blocks of {block}",
                self.name,
                self.ty.name()
            )));
        }
        self.elems().checked_div(block).and_then(|b| b.checked_mul(block_bytes)).ok_or_else(|| err(format!("tensor `{}` is too large", self.name)))
    }
}

/// Streams a GGUF file: `new` writes the header, `write` the tensors' data in declaration
/// order (any number of pieces per tensor, padding added between tensors), `finish` checks that
/// every tensor was written in full.
pub struct GgufWriter<W: Write> {
    out: W,
    /// Named in I/O errors (the caller that knows the file renames it: `init::gguf::write_gguf`).
    path: PathBuf,
    tensors: Vec<TensorDecl>,
    sizes: Vec<u64>,
    alignment: u64,
    /// The tensor being written, and the bytes of it written so far.
    current: usize,
    written: u64,
    /// Bytes of the whole file written so far.
    pos: u64,
    data_start: u64,
}

impl<W: Write> GgufWriter<W> {
    /// Writes the header of a file with `metadata` (in order) and `tensors` (their data
    /// follows in this order). Errors name what is wrong: a repeated key or tensor name, a
    /// name too long, too many dimensions, rows that are not whole blocks, a
    /// `general.alignment` that is not a u32 power of two.
    pub fn new(mut out: W, metadata: &[(String, Value)], tensors: Vec<TensorDecl>) -> Result<Self> {
        let path = PathBuf::from("GGUF output");
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, Value::U32(a))) if a.is_power_of_two() => *a as u64,
            Some((_, v)) => return Err(err(format!("`general.alignment` must be a u32 power of two, got {} {}", v.type_name(), v.brief()))),
        };
        for (i, (k, _)) in metadata.iter().enumerate() {
            if metadata[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(err(format!("metadata key `{k}` is given twice")));
            }
        }
        let mut sizes = Vec::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            if t.name.is_empty() || t.name.len() >= MAX_NAME {
                return Err(err(format!("tensor name `{}` must be 1 to {} bytes long", t.name, MAX_NAME - 1)));
            }
            if tensors[..i].iter().any(|u| u.name == t.name) {
                return Err(err(format!("tensor `{}` is declared twice", t.name)));
            }
            if t.dims.is_empty() || t.dims.len() > MAX_DIMS || t.dims.contains(&0) {
                return Err(err(format!("tensor `{}`: dimensions {:?} must be 1 to {MAX_DIMS} positive sizes", t.name, t.dims)));
            }
            sizes.push(t.bytes()?);
        }
        let offsets = data_offsets(sizes.iter().copied(), alignment);
        let mut h = b"GGUF".to_vec();
        h.extend(3u32.to_le_bytes());
        h.extend((tensors.len() as u64).to_le_bytes());
        h.extend((metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            encode_entry(k, v, &mut h);
        }
        for (t, &o) in tensors.iter().zip(&offsets) {
            encode_tensor_info(&t.name, &t.dims, t.ty.0, o, &mut h);
        }
        h.resize(align_up(h.len() as u64, alignment) as usize, 0);
        out.write_all(&h).map_err(|e| Error::io(&path, e))?;
        let data_start = h.len() as u64;
        Ok(GgufWriter { out, path, tensors, sizes, alignment, current: 0, written: 0, pos: data_start, data_start })
    }

    /// Where the data section starts (the header's size).
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// The size of the finished file.
    pub fn file_size(&self) -> u64 {
        let offsets = data_offsets(self.sizes.iter().copied(), self.alignment);
        self.data_start + offsets.last().zip(self.sizes.last()).map(|(o, s)| o + s).unwrap_or(0)
    }

    /// The tensor whose bytes come next (None when all are written).
    pub fn next_tensor(&self) -> Option<&TensorDecl> {
        self.tensors.get(self.current)
    }

    /// Appends `bytes` to the tensor being written; a piece may not run past its end. When a
    /// tensor is complete, the padding up to the next one's offset follows.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(t) = self.tensors.get(self.current) else {
            return Err(err(format!("{} bytes written after the last tensor", bytes.len())));
        };
        let left = self.sizes[self.current] - self.written;
        if bytes.len() as u64 > left {
            return Err(err(format!("tensor `{}`: {} bytes written where {left} remain of {}", t.name, bytes.len(), self.sizes[self.current])));
        }
        self.out.write_all(bytes).map_err(|e| Error::io(&self.path, e))?;
        self.written += bytes.len() as u64;
        self.pos += bytes.len() as u64;
        if self.written == self.sizes[self.current] {
            self.current += 1;
            self.written = 0;
            if self.current < self.tensors.len() {
                let pad = align_up(self.pos, self.alignment) - self.pos;
                self.out.write_all(&vec![0u8; pad as usize]).map_err(|e| Error::io(&self.path, e))?;
                self.pos += pad;
            }
        }
        Ok(())
    }

    /// Writes the whole data of tensor `name`, which must be the next one and exactly its size.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        match self.tensors.get(self.current) {
            Some(t) if t.name == name && self.written == 0 && data.len() as u64 == self.sizes[self.current] => self.write(data),
            Some(t) if t.name == name => Err(err(format!("tensor `{name}` has {} bytes, got {}", self.sizes[self.current] - self.written, data.len()))),
            Some(t) => Err(err(format!("tensor `{name}` written where `{}` comes next", t.name))),
            None => Err(err(format!("tensor `{name}` written after the last tensor"))),
        }
    }

    /// Checks that every tensor was written, flushes, and returns the writer.
    pub fn finish(mut self) -> Result<W> {
        if let Some(t) = self.tensors.get(self.current) {
            return Err(err(format!("tensor `{}` is incomplete ({} of {} bytes written)", t.name, self.written, self.sizes[self.current])));
        }
        self.out.flush().map_err(|e| Error::io(&self.path, e))?;
        Ok(self.out)
    }
}

// ---------------------------------------------------------------------------------------------
// Random blocks

/// The types `random_blocks` makes: the block formats the runtime keeps quantised, and floats.
pub const RANDOM_TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

fn f16(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// A quant near `center + spread * N(0, 1)`, clamped to `0..=max`.
fn quant(rng: &mut Rng, center: f32, spread: f32, max: i32) -> u8 {
    ((center + spread * rng.normal()).round() as i32).clamp(0, max) as u8
}

/// `rows` rows of `cols` random values of type `ty`, as the file stores them (rows contiguous).
/// The quants of every block are near-Gaussian around the format's zero, and its scales are
/// chosen (with a +-20% spread per block) so that the dequantised weights have mean about 0 and
/// standard deviation about `std`: what a quantised trained matrix looks like. Every block is
/// valid: finite f16 scales, in-range scale bytes. Floats are `std * N(0, 1)`.
pub fn random_blocks(ty: GgmlType, rows: usize, cols: usize, std: f32, rng: &mut Rng) -> Result<Vec<u8>> {
    if !RANDOM_TYPES.contains(&ty) {
        return Err(err(format!("no random blocks of type {}", ty.name())));
    }
    if !(std.is_finite() && std > 0.0) {
        return Err(err(format!("standard deviation {std} must be finite and positive")));
    }
    let (block, block_bytes) = ty.block().unwrap_or((1, 4));
    let (block, block_bytes) = (block as usize, block_bytes as usize);
    if !cols.is_multiple_of(block) {
        return Err(err(format!("rows of {cols} values are not whole {} blocks of {block}", ty.name())));
    }
    let n_blocks = rows * (cols / block);
    let mut out = Vec::with_capacity(n_blocks * block_bytes);
    // The block's scale for quants of `spread`: std / spread, jittered.
    let scale = |rng: &mut Rng, spread: f32| std / spread * (0.8 + 0.4 * rng.uniform() as f32);
    for _ in 0..n_blocks {
        match ty {
            GgmlType::F32 => out.extend((std * rng.normal()).to_le_bytes()),
            GgmlType::F16 => out.extend(f16(std * rng.normal())),
            GgmlType::BF16 => out.extend(half::bf16::from_f32(std * rng.normal()).to_le_bytes()),
            // d * q, q an int8.
            GgmlType::Q8_0 => {
                out.extend(f16(scale(rng, 40.0)));
                out.extend((0..32).map(|_| (quant(rng, 127.0, 40.0, 254) as i32 - 127) as i8 as u8));
            }
            // d * (q - 8) / d * (q - 16), or d * q + m; value j < 16 in the low nibble of byte j,
            // value j + 16 in its high nibble; Q5's fifth bits in a u32.
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let five = matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1);
                let offset = matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1);
                let (max, spread) = if five { (31, 5.0) } else { (15, 2.5) };
                let center = if offset { max as f32 / 2.0 } else { (max + 1) as f32 / 2.0 };
                let d = scale(rng, spread);
                let q: Vec<u8> = (0..32).map(|_| quant(rng, center, spread, max)).collect();
                out.extend(f16(d));
                if offset {
                    // The minimum: minus the middle quant's value, so the weights centre on 0.
                    let d16 = half::f16::from_f32(d).to_f32();
                    out.extend(f16(-center * d16));
                }
                if five {
                    let qh: u32 = (0..32).map(|j| ((q[j] >> 4) as u32 & 1) << j).sum();
                    out.extend(qh.to_le_bytes());
                }
                out.extend((0..16).map(|j| (q[j] & 0xF) | ((q[j + 16] & 0xF) << 4)));
            }
            // 8 sub-blocks of 32: w = d * sc * q - dmin * m, sc and m 6-bit.
            GgmlType::Q4_K | GgmlType::Q5_K => {
                let q5 = ty == GgmlType::Q5_K;
                let (max, spread) = if q5 { (31, 5.0) } else { (15, 2.5) };
                let center = max as f32 / 2.0;
                let sc: Vec<u8> = (0..8).map(|_| 40 + rng.below(24) as u8).collect();
                let d = scale(rng, spread * 51.5);
                // dmin * m = d * sc * center: m = sc * center / k with dmin = k * d, m < 64.
                let k = max as f32 / 2.0 + 1.0;
                let m: Vec<u8> = sc.iter().map(|&s| ((s as f32 * center / k).round() as u8).min(63)).collect();
                let q: Vec<u8> = (0..256).map(|_| quant(rng, center, spread, max)).collect();
                out.extend(f16(d));
                out.extend(f16(d * k));
                let mut scales = [0u8; 12];
                for j in 0..4 {
                    scales[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
                    scales[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
                    scales[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
                }
                out.extend(scales);
                if q5 {
                    // Bit s of qh[l]: the fifth bit of value l of sub-block s.
                    out.extend((0..32).map(|l| (0..8).map(|s| ((q[32 * s + l] >> 4) & 1) << s).sum::<u8>()));
                }
                // Byte l of pair i: value l of sub-block 2i (low nibble) and of 2i + 1 (high).
                for i in 0..4 {
                    out.extend((0..32).map(|l| (q[64 * i + l] & 0xF) | ((q[64 * i + 32 + l] & 0xF) << 4)));
                }
            }
            // 16 sub-blocks of 16: w = d * sc * (q - 32), q 6-bit, sc an int8.
            GgmlType::Q6_K => {
                let sc: Vec<u8> = (0..16).map(|_| 64 + rng.below(64) as u8).collect();
                let d = scale(rng, 10.0 * 95.5);
                let q: Vec<u8> = (0..256).map(|_| quant(rng, 32.0, 10.0, 63)).collect();
                let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
                for h in 0..2 {
                    let y = &q[128 * h..];
                    for l in 0..32 {
                        ql[64 * h + l] = (y[l] & 0xF) | ((y[l + 64] & 0xF) << 4);
                        ql[64 * h + l + 32] = (y[l + 32] & 0xF) | ((y[l + 96] & 0xF) << 4);
                        qh[32 * h + l] = (y[l] >> 4) | ((y[l + 32] >> 4) << 2) | ((y[l + 64] >> 4) << 4) | ((y[l + 96] >> 4) << 6);
                    }
                }
                out.extend(ql);
                out.extend(qh);
                out.extend(sc);
                out.extend(f16(d));
            }
            _ => unreachable!("checked against RANDOM_TYPES"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{dequantize, GgufFile};

    #[test]
    fn random_blocks_decode_to_weights_of_the_asked_spread() {
        for (i, ty) in RANDOM_TYPES.into_iter().enumerate() {
            for std in [0.02f32, 0.005, 1.0] {
                let mut rng = Rng::new(i as u64 + 11);
                let (rows, cols) = (8, 512);
                let b = random_blocks(ty, rows, cols, std, &mut rng).unwrap();
                let w = dequantize(ty, &b, rows * cols).unwrap();
                assert!(w.iter().all(|x| x.is_finite()), "{}", ty.name());
                let n = w.len() as f64;
                let mean = w.iter().map(|&x| x as f64).sum::<f64>() / n;
                let sd = (w.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
                let s = std as f64;
                assert!(mean.abs() < 0.1 * s && (0.8 * s..1.2 * s).contains(&sd), "{} std {std}: mean {mean} sd {sd}", ty.name());
                // Not constant: many distinct values.
                let mut v: Vec<u32> = w.iter().map(|x| x.to_bits()).collect();
                v.sort();
                v.dedup();
                assert!(v.len() > 100, "{}: {} distinct values", ty.name(), v.len());
            }
        }
        assert!(random_blocks(GgmlType::Q4_K, 1, 32, 0.02, &mut Rng::new(0)).unwrap_err().to_string().contains("256"));
        assert!(random_blocks(GgmlType(10), 1, 256, 0.02, &mut Rng::new(0)).unwrap_err().to_string().contains("Q2_K"));
        assert!(random_blocks(GgmlType::F32, 1, 4, f32::NAN, &mut Rng::new(0)).is_err());
    }

    fn all_values() -> Vec<(String, Value)> {
        let v = |k: &str, x: Value| (k.to_string(), x);
        vec![
            v("general.alignment", Value::U32(64)),
            v("a.u8", Value::U8(7)),
            v("a.i8", Value::I8(-7)),
            v("a.u16", Value::U16(700)),
            v("a.i16", Value::I16(-700)),
            v("a.i32", Value::I32(-70000)),
            v("a.f32", Value::F32(1.5)),
            v("a.bool", Value::Bool(true)),
            v("a.str", Value::Str("héllo".into())),
            v("a.u64", Value::U64(1 << 40)),
            v("a.i64", Value::I64(-(1 << 40))),
            v("a.f64", Value::F64(-2.25)),
            v("a.arr", Value::Array(Array::Array(vec![Array::Str(vec!["x".into(), "".into()]), Array::F64(vec![1.0])]))),
            v("a.bools", Value::Array(Array::Bool(vec![true, false]))),
            v("a.empty", Value::Array(Array::U8(vec![]))),
        ]
    }

    #[test]
    fn files_read_back_as_written() {
        let meta = all_values();
        let tensors = vec![
            TensorDecl::new("a", &[3, 64], GgmlType::Q8_0),
            TensorDecl::new("b", &[5], GgmlType::F32),
            TensorDecl::new("c", &[2, 256], GgmlType::Q6_K),
        ];
        let mut rng = Rng::new(3);
        let data: Vec<Vec<u8>> = tensors.iter().map(|t| random_blocks(t.ty, t.dims[1..].iter().product::<u64>() as usize, t.dims[0] as usize, 0.1, &mut rng).unwrap()).collect();
        let mut w = GgufWriter::new(Vec::new(), &meta, tensors.clone()).unwrap();
        // The first tensor in two pieces.
        w.write(&data[0][..10]).unwrap();
        w.write(&data[0][10..]).unwrap();
        w.write_tensor("b", &data[1]).unwrap();
        w.write_tensor("c", &data[2]).unwrap();
        let size = w.file_size();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() as u64, size);
        let f = GgufFile::parse(&bytes).unwrap();
        for (k, v) in &meta {
            assert_eq!(f.get(k), Some(v), "{k}");
        }
        for (t, d) in tensors.iter().zip(&data) {
            let info = f.tensor(&t.name).unwrap();
            assert_eq!((&info.dims, info.ty), (&t.dims, t.ty));
            assert_eq!(info.offset % 64, 0);
            let at = (f.data_offset() + info.offset) as usize;
            assert_eq!(&bytes[at..at + d.len()], &d[..], "{}", t.name);
        }
    }

    #[test]
    fn bad_declarations_and_writes_are_errors() {
        let t = |n: &str, s: &[usize], ty| TensorDecl::new(n, s, ty);
        let e = |meta: &[(String, Value)], ts: Vec<TensorDecl>| GgufWriter::new(Vec::new(), meta, ts).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e(&[], vec![t("x", &[2, 100], GgmlType::Q4_0)]).contains("whole Q4_0 blocks"));
        assert!(e(&[], vec![t("x", &[2], GgmlType::F32), t("x", &[2], GgmlType::F32)]).contains("twice"));
        assert!(e(&[], vec![t(&"n".repeat(64), &[2], GgmlType::F32)]).contains("name"));
        assert!(e(&[], vec![t("x", &[1, 1, 1, 1, 1], GgmlType::F32)]).contains("dimensions"));
        assert!(e(&[("general.alignment".into(), Value::U32(48))], vec![]).contains("general.alignment"));
        assert!(e(&[("k".into(), Value::U8(1)), ("k".into(), Value::U8(2))], vec![]).contains("`k`"));
        let mut w = GgufWriter::new(Vec::new(), &[], vec![t("x", &[4], GgmlType::F32), t("y", &[4], GgmlType::F32)]).unwrap();
        assert!(w.write_tensor("y", &[0; 16]).unwrap_err().to_string().contains("`x` comes next"));
        assert!(w.write_tensor("x", &[0; 12]).unwrap_err().to_string().contains("16 bytes"));
        assert!(w.write(&[0; 17]).unwrap_err().to_string().contains("remain"));
        w.write(&[0; 16]).unwrap();
        w.write(&[0; 8]).unwrap();
        assert!(w.finish().unwrap_err().to_string().contains("`y` is incomplete"));
    }
}
