//! GGUF files (llama.cpp's single-file format, versions 2 and 3) → `Config`, `Weights` and a
//! Hugging Face tokenizer, for `general.architecture = llama` checkpoints (PLT-SPEC section 1
//! layout with L = 1).
//!
//! The parser checks every count, length and offset against the file before it reads or
//! allocates, so a malformed file is an `Error` that names what is wrong, never a panic.
//! Tensors are dequantised to f32 at load (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K,
//! Q5_K, Q6_K). Conventions that fail silently when wrong:
//! - GGUF lists dimensions fastest-first; the row-major shape is the reverse
//!   (`token_embd` [D, V] in GGUF is [V, D] row-major).
//! - llama.cpp's converter permutes the rows of `attn_q` / `attn_k` (and their biases) so that
//!   its interleaved RoPE applies. PLT-SPEC uses rotate_half RoPE, so the loader undoes it per
//!   head: within a head's Dh rows, GGUF row `2j + i` is original row `i*Dh/2 + j`
//!   (i in {0, 1}, j < Dh/2). Skipping this gives fluent-looking garbage.
//! - `Weights::dtype` is F16 (or BF16) only when every matrix was stored in that type, and F32
//!   otherwise (quantised or mixed files): dequantised values such as `d*q + m` are generally not
//!   representable in f16, so the default device storage keeps them exactly.
//!
//! The tokenizer (`tokenizer.ggml.model = gpt2`, byte-level BPE) becomes a Hugging Face
//! `tokenizer.json`: the BPE vocabulary and merges, control tokens as special added tokens, and
//! the pre-tokenizer regexes llama.cpp uses for `tokenizer.ggml.pre` (a Sequence of Isolated
//! splits, then ByteLevel). Its encodings equal llama.cpp's on llama.cpp's own test vectors
//! (tests/gguf.rs, `tokenizers_match_llama_cpp_test_vectors`).

use crate::config::{Config, GateMode, Looping};
use crate::error::{Error, Result};
use crate::weights::{DType, Layer, Linear, Mlp, SelfAttn, Tensor, Weights};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

/// Alignment of the tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Deepest nesting of arrays inside arrays the parser accepts.
const MAX_ARRAY_DEPTH: usize = 8;
/// GGML_MAX_DIMS.
const MAX_DIMS: usize = 4;
/// GGML_MAX_NAME: tensor names are shorter than this.
const MAX_NAME: usize = 64;

fn err(msg: impl Into<String>) -> Error {
    Error::Input(format!("GGUF: {}", msg.into()))
}

// ---------------------------------------------------------------------------------------------
// Metadata values
// ---------------------------------------------------------------------------------------------

/// One metadata value (the 13 GGUF value types).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A typed GGUF array (all elements share one type; arrays may nest).
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    Str(Vec<String>),
    Array(Vec<Array>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

/// GGUF value type ids.
mod vt {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STR: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

fn value_type_name(t: u32) -> &'static str {
    match t {
        vt::U8 => "u8",
        vt::I8 => "i8",
        vt::U16 => "u16",
        vt::I16 => "i16",
        vt::U32 => "u32",
        vt::I32 => "i32",
        vt::F32 => "f32",
        vt::BOOL => "bool",
        vt::STR => "string",
        vt::ARRAY => "array",
        vt::U64 => "u64",
        vt::I64 => "i64",
        vt::F64 => "f64",
        _ => "unknown",
    }
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::F32(_) => "f32",
            Value::Bool(_) => "bool",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F64(_) => "f64",
        }
    }

    /// Any integer type holding a non-negative value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(x) => Some(x as u64),
            Value::U16(x) => Some(x as u64),
            Value::U32(x) => Some(x as u64),
            Value::U64(x) => Some(x),
            Value::I8(x) => u64::try_from(x).ok(),
            Value::I16(x) => u64::try_from(x).ok(),
            Value::I32(x) => u64::try_from(x).ok(),
            Value::I64(x) => u64::try_from(x).ok(),
            _ => None,
        }
    }

    /// f32 or f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(x) => Some(x as f64),
            Value::F64(x) => Some(x),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short rendering for summaries (arrays by type and length).
    pub fn brief(&self) -> String {
        match self {
            Value::Str(s) if s.chars().count() > 60 => format!("{:?}...", s.chars().take(60).collect::<String>()),
            Value::Str(s) => format!("{s:?}"),
            Value::Array(a) => format!("[{}; {}]", a.type_name(), a.len()),
            Value::U8(x) => x.to_string(),
            Value::I8(x) => x.to_string(),
            Value::U16(x) => x.to_string(),
            Value::I16(x) => x.to_string(),
            Value::U32(x) => x.to_string(),
            Value::I32(x) => x.to_string(),
            Value::U64(x) => x.to_string(),
            Value::I64(x) => x.to_string(),
            Value::F32(x) => x.to_string(),
            Value::F64(x) => x.to_string(),
            Value::Bool(x) => x.to_string(),
        }
    }
}

impl Array {
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::Str(v) => v.len(),
            Array::Array(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type's name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Array::U8(_) => "u8",
            Array::I8(_) => "i8",
            Array::U16(_) => "u16",
            Array::I16(_) => "i16",
            Array::U32(_) => "u32",
            Array::I32(_) => "i32",
            Array::F32(_) => "f32",
            Array::Bool(_) => "bool",
            Array::Str(_) => "string",
            Array::Array(_) => "array",
            Array::U64(_) => "u64",
            Array::I64(_) => "i64",
            Array::F64(_) => "f64",
        }
    }

    /// Element `i` as an integer, for arrays of any integer type (negative values included).
    pub fn int_at(&self, i: usize) -> Option<i64> {
        match self {
            Array::U8(v) => v.get(i).map(|&x| x as i64),
            Array::I8(v) => v.get(i).map(|&x| x as i64),
            Array::U16(v) => v.get(i).map(|&x| x as i64),
            Array::I16(v) => v.get(i).map(|&x| x as i64),
            Array::U32(v) => v.get(i).map(|&x| x as i64),
            Array::I32(v) => v.get(i).map(|&x| x as i64),
            Array::U64(v) => v.get(i).map(|&x| x.min(i64::MAX as u64) as i64),
            Array::I64(v) => v.get(i).copied(),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tensor types
// ---------------------------------------------------------------------------------------------

/// A ggml tensor type id (`ggml_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GgmlType(pub u32);

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q4_1: GgmlType = GgmlType(3);
    pub const Q5_0: GgmlType = GgmlType(6);
    pub const Q5_1: GgmlType = GgmlType(7);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const Q4_K: GgmlType = GgmlType(12);
    pub const Q5_K: GgmlType = GgmlType(13);
    pub const Q6_K: GgmlType = GgmlType(14);
    pub const BF16: GgmlType = GgmlType(30);

    /// (name, values per block, bytes per block) of every type ggml defines; None if unknown.
    fn info(self) -> Option<(&'static str, u64, u64)> {
        const K: u64 = 256;
        Some(match self.0 {
            0 => ("F32", 1, 4),
            1 => ("F16", 1, 2),
            2 => ("Q4_0", 32, 18),
            3 => ("Q4_1", 32, 20),
            6 => ("Q5_0", 32, 22),
            7 => ("Q5_1", 32, 24),
            8 => ("Q8_0", 32, 34),
            9 => ("Q8_1", 32, 36),
            10 => ("Q2_K", K, 2 + 2 + K / 16 + K / 4),
            11 => ("Q3_K", K, 2 + K / 4 + K / 8 + 12),
            12 => ("Q4_K", K, 2 + 2 + K / 2 + 12),
            13 => ("Q5_K", K, 2 + 2 + K / 2 + K / 8 + 12),
            14 => ("Q6_K", K, 2 + K / 2 + K / 4 + K / 16),
            15 => ("Q8_K", K, 4 + K + K / 8),
            16 => ("IQ2_XXS", K, 2 + K / 4),
            17 => ("IQ2_XS", K, 2 + K / 4 + K / 32),
            18 => ("IQ3_XXS", K, 2 + K / 4 + K / 8),
            19 => ("IQ1_S", K, 2 + K / 8 + K / 16),
            20 => ("IQ4_NL", 32, 18),
            21 => ("IQ3_S", K, 2 + K / 4 + K / 8 + K / 32 + 4),
            22 => ("IQ2_S", K, 2 + K / 4 + K / 16),
            23 => ("IQ4_XS", K, 2 + 2 + K / 2 + K / 64),
            24 => ("I8", 1, 1),
            25 => ("I16", 1, 2),
            26 => ("I32", 1, 4),
            27 => ("I64", 1, 8),
            28 => ("F64", 1, 8),
            29 => ("IQ1_M", K, K / 8 + K / 16 + K / 32),
            30 => ("BF16", 1, 2),
            34 => ("TQ1_0", K, 2 + 4 * 13),
            35 => ("TQ2_0", K, 2 + 64),
            39 => ("MXFP4", 32, 17),
            _ => return None,
        })
    }

    pub fn name(self) -> String {
        match self.info() {
            Some((n, _, _)) => n.to_string(),
            None => format!("unknown type {}", self.0),
        }
    }

    /// Values per block and bytes per block.
    pub fn block(self) -> Option<(u64, u64)> {
        self.info().map(|(_, b, s)| (b, s))
    }

    /// Whether `dequantize` supports this type.
    pub fn can_dequantize(self) -> bool {
        matches!(self.0, 0 | 1 | 2 | 3 | 6 | 7 | 8 | 12 | 13 | 14 | 30)
    }
}

/// One entry of the tensor-info table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions as GGUF lists them: fastest-varying first (`ne[0]` is the row length).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Byte offset of the data, relative to the start of the data section.
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    /// The row-major shape (the reverse of `dims`).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The container
// ---------------------------------------------------------------------------------------------

/// A parsed GGUF file: header, metadata, tensor infos, borrowing the file's bytes. Read-only:
/// every tensor's data range was checked against the file by `parse`.
#[derive(Debug)]
pub struct GgufFile<'a> {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
    bytes: &'a [u8],
    keys: HashMap<String, usize>,
    names: HashMap<String, usize>,
}

/// A cursor that checks every read against the end of the file.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() as u64 {
            return Err(err(format!(
                "file truncated: {} needs {n} bytes at offset {} but the file has {} bytes",
                what(),
                self.pos,
                self.b.len()
            )));
        }
        let s = &self.b[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let n = self.u64(&|| format!("the length of {}", what()))?;
        let s = self.take(n, what)?;
        String::from_utf8(s.to_vec()).map_err(|e| err(format!("{} is not valid UTF-8: {e}", what())))
    }

    /// A value of type `t`; `depth` counts enclosing arrays.
    fn value(&mut self, t: u32, depth: usize, what: &dyn Fn() -> String) -> Result<Value> {
        Ok(match t {
            vt::U8 => Value::U8(self.array::<1>(what)?[0]),
            vt::I8 => Value::I8(self.array::<1>(what)?[0] as i8),
            vt::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            vt::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            vt::U32 => Value::U32(u32::from_le_bytes(self.array(what)?)),
            vt::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            vt::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            vt::BOOL => Value::Bool(self.array::<1>(what)?[0] != 0),
            vt::STR => Value::Str(self.string(what)?),
            vt::U64 => Value::U64(u64::from_le_bytes(self.array(what)?)),
            vt::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            vt::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            vt::ARRAY => Value::Array(self.array_value(depth, what)?),
            other => return Err(err(format!("{} has unknown value type {other}", what()))),
        })
    }

    /// An array: element type, count, elements. Every element takes at least one byte of the
    /// file, so the count is checked against the bytes left before anything is allocated.
    fn array_value(&mut self, depth: usize, what: &dyn Fn() -> String) -> Result<Array> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(err(format!("{} nests arrays deeper than {MAX_ARRAY_DEPTH} levels", what())));
        }
        let t = self.u32(&|| format!("the element type of {}", what()))?;
        let n = self.u64(&|| format!("the element count of {}", what()))?;
        let min_size: u64 = match t {
            vt::U8 | vt::I8 | vt::BOOL => 1,
            vt::U16 | vt::I16 => 2,
            vt::U32 | vt::I32 | vt::F32 => 4,
            vt::U64 | vt::I64 | vt::F64 | vt::STR => 8,
            vt::ARRAY => 12,
            other => return Err(err(format!("{} has unknown element type {other}", what()))),
        };
        if n.checked_mul(min_size).is_none_or(|b| b > self.remaining() as u64) {
            return Err(err(format!(
                "{} claims {n} elements of type {} at offset {}, more than the {} bytes left in the file",
                what(),
                value_type_name(t),
                self.pos,
                self.remaining()
            )));
        }
        let n = n as usize;
        let elem = |i: usize| move || format!("element {i} of {}", what());
        macro_rules! fixed {
            ($variant:ident, $ty:ty, $w:literal) => {{
                let raw = self.take(n as u64 * $w, what)?;
                Array::$variant(raw.chunks_exact($w).map(|c| <$ty>::from_le_bytes(c.try_into().unwrap())).collect())
            }};
        }
        Ok(match t {
            vt::U8 => Array::U8(self.take(n as u64, what)?.to_vec()),
            vt::I8 => Array::I8(self.take(n as u64, what)?.iter().map(|&b| b as i8).collect()),
            vt::BOOL => Array::Bool(self.take(n as u64, what)?.iter().map(|&b| b != 0).collect()),
            vt::U16 => fixed!(U16, u16, 2),
            vt::I16 => fixed!(I16, i16, 2),
            vt::U32 => fixed!(U32, u32, 4),
            vt::I32 => fixed!(I32, i32, 4),
            vt::F32 => fixed!(F32, f32, 4),
            vt::U64 => fixed!(U64, u64, 8),
            vt::I64 => fixed!(I64, i64, 8),
            vt::F64 => fixed!(F64, f64, 8),
            vt::STR => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.string(&elem(i))?);
                }
                Array::Str(v)
            }
            _ => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.array_value(depth + 1, &elem(i))?);
                }
                Array::Array(v)
            }
        })
    }
}

impl<'a> GgufFile<'a> {
    /// Parses the header, metadata and tensor infos, and checks every tensor's data range.
    pub fn parse(bytes: &'a [u8]) -> Result<GgufFile<'a>> {
        let mut r = Reader { b: bytes, pos: 0 };
        let magic = r.array::<4>(&|| "the magic".into())?;
        if &magic != b"GGUF" {
            return Err(err(format!("bad magic {magic:02x?}: not a GGUF file (expected the bytes \"GGUF\")")));
        }
        let version = r.u32(&|| "the version".into())?;
        if (2..=3).contains(&version.swap_bytes()) {
            return Err(err("this is a big-endian GGUF file; only little-endian files are supported"));
        }
        if !(2..=3).contains(&version) {
            return Err(err(format!("version {version} is not supported (only 2 and 3)")));
        }
        let n_tensors = r.u64(&|| "the tensor count".into())?;
        let n_kv = r.u64(&|| "the metadata count".into())?;
        // A key-value pair takes at least 8 (key length) + 4 (type) + 1 bytes, a tensor info at
        // least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
        for (what, n, min) in [("metadata count", n_kv, 13u64), ("tensor count", n_tensors, 24)] {
            if n.checked_mul(min).is_none_or(|b| b > r.remaining() as u64) {
                return Err(err(format!(
                    "{what} {n} needs more than the {} bytes left in the file: it is corrupt or the file is truncated",
                    r.remaining()
                )));
            }
        }
        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut keys = HashMap::with_capacity(n_kv as usize);
        for i in 0..n_kv as usize {
            let key = r.string(&|| format!("metadata key {i}"))?;
            let t = r.u32(&|| format!("the type of metadata `{key}`"))?;
            let value = r.value(t, 0, &|| format!("metadata `{key}`"))?;
            if keys.insert(key.clone(), metadata.len()).is_some() {
                return Err(err(format!("metadata key `{key}` appears twice")));
            }
            metadata.push((key, value));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, Value::U32(a))) if a.is_power_of_two() => *a as u64,
            Some((_, v)) => {
                return Err(err(format!(
                    "metadata `general.alignment` must be a u32 power of two, got {} {}",
                    v.type_name(),
                    v.brief()
                )))
            }
        };
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut names = HashMap::with_capacity(n_tensors as usize);
        for i in 0..n_tensors as usize {
            let name = r.string(&|| format!("the name of tensor {i}"))?;
            if name.is_empty() || name.len() >= MAX_NAME {
                return Err(err(format!("tensor {i} has a name of {} bytes (1 to {} allowed)", name.len(), MAX_NAME - 1)));
            }
            let what = |field: &str| format!("the {field} of tensor `{name}`");
            let n_dims = r.u32(&|| what("dimension count"))?;
            if n_dims as usize > MAX_DIMS {
                return Err(err(format!("tensor `{name}` has {n_dims} dimensions (at most {MAX_DIMS})")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64(&|| what("dimensions"))?);
            }
            let ty = GgmlType(r.u32(&|| what("type"))?);
            let offset = r.u64(&|| what("data offset"))?;
            let Some((block, block_bytes)) = ty.block() else {
                return Err(err(format!("tensor `{name}` has unknown ggml type {}", ty.0)));
            };
            let n_elements = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).filter(|&n| n <= i64::MAX as u64);
            let Some(n_elements) = n_elements else {
                return Err(err(format!("tensor `{name}` has dimensions {dims:?} whose product overflows")));
            };
            let row = dims.first().copied().unwrap_or(1);
            if row % block != 0 {
                return Err(err(format!(
                    "tensor `{name}` ({}) has rows of {row} values, not a multiple of the block size {block}",
                    ty.name()
                )));
            }
            let Some(n_bytes) = (n_elements / block).checked_mul(block_bytes) else {
                return Err(err(format!("tensor `{name}` has dimensions {dims:?} whose size in bytes overflows")));
            };
            if usize::try_from(n_elements).is_err() {
                return Err(err(format!("tensor `{name}` has {n_elements} values, more than this machine can address")));
            }
            if offset % alignment != 0 {
                return Err(err(format!("tensor `{name}` has data offset {offset}, not a multiple of the alignment {alignment}")));
            }
            if names.insert(name.clone(), tensors.len()).is_some() {
                return Err(err(format!("tensor `{name}` appears twice")));
            }
            tensors.push(TensorInfo { name, dims, ty, offset, n_elements, n_bytes });
        }
        let data_offset = (r.pos as u64).div_ceil(alignment) * alignment;
        for t in &tensors {
            let end = data_offset.checked_add(t.offset).and_then(|s| s.checked_add(t.n_bytes));
            if end.is_none_or(|e| e > bytes.len() as u64) {
                return Err(err(format!(
                    "tensor `{}` ({}, {} bytes) at data offset {} runs past the end of the file ({} bytes, data section at {data_offset})",
                    t.name,
                    t.ty.name(),
                    t.n_bytes,
                    t.offset,
                    bytes.len()
                )));
            }
        }
        Ok(GgufFile { version, metadata, tensors, alignment, data_offset, bytes, keys, names })
    }

    /// 2 or 3.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// `general.alignment`, or 32.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute byte offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.keys.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.names.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor.
    pub fn tensor_data(&self, name: &str) -> Option<&'a [u8]> {
        let t = self.tensor(name)?;
        let start = usize::try_from(self.data_offset.checked_add(t.offset)?).ok()?;
        self.bytes.get(start..start.checked_add(usize::try_from(t.n_bytes).ok()?)?)
    }

    /// A tensor, dequantised to f32, in its row-major shape.
    pub fn dequantize(&self, name: &str) -> Result<Tensor> {
        let (Some(t), Some(bytes)) = (self.tensor(name), self.tensor_data(name)) else {
            return Err(Error::MissingTensor { name: name.to_string() });
        };
        let data = dequantize(t.ty, bytes, t.n_elements as usize).map_err(|e| err(format!("tensor `{name}`: {e}")))?;
        Ok(Tensor::new(t.shape(), data))
    }

    fn str_(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(v) => Err(err(format!("metadata `{key}` must be a string, got {}", v.type_name()))),
        }
    }

    fn usize_(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Err(err(format!(
                "metadata `{key}` is an array of {} values (per-layer values are not supported)",
                a.len()
            ))),
            Some(v) => match v.as_u64() {
                Some(n) if n <= u32::MAX as u64 => Ok(Some(n as usize)),
                _ => Err(err(format!("metadata `{key}` must be a non-negative integer, got {} {}", v.type_name(), v.brief()))),
            },
        }
    }

    fn req_usize(&self, key: &str) -> Result<usize> {
        self.usize_(key)?.ok_or_else(|| err(format!("metadata `{key}` is required but absent")))
    }

    fn f32_(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if (x as f32).is_finite() => Ok(Some(x as f32)),
                _ => Err(err(format!("metadata `{key}` must be a finite float, got {} {}", v.type_name(), v.brief()))),
            },
        }
    }

    fn bool_(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(err(format!("metadata `{key}` must be a bool, got {}", v.type_name()))),
        }
    }

    /// A token id from metadata, checked against the vocabulary.
    fn token_(&self, key: &str, vocab: usize) -> Result<Option<u32>> {
        match self.usize_(key)? {
            None => Ok(None),
            Some(id) if id < vocab => Ok(Some(id as u32)),
            Some(id) => Err(err(format!("metadata `{key}` = {id} is outside the vocabulary of {vocab} tokens"))),
        }
    }

    /// A few lines describing the file: header, general.* keys, tensor types, model shape.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "GGUF v{}, {} metadata keys, {} tensors, alignment {}, data at byte {}\n",
            self.version,
            self.metadata.len(),
            self.tensors.len(),
            self.alignment,
            self.data_offset
        );
        for (k, v) in &self.metadata {
            if k.starts_with("general.") || (!k.starts_with("tokenizer.") && !k.contains("chat_template")) {
                let _ = writeln!(s, "  {k} = {}", v.brief());
            }
        }
        let mut by_type: Vec<(String, usize, u64)> = Vec::new();
        for t in &self.tensors {
            let name = t.ty.name();
            match by_type.iter_mut().find(|(n, _, _)| *n == name) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += t.n_elements;
                }
                None => by_type.push((name, 1, t.n_elements)),
            }
        }
        let params: u64 = self.tensors.iter().map(|t| t.n_elements).sum();
        let types: Vec<String> = by_type.iter().map(|(n, c, e)| format!("{n} x{c} ({e} values)")).collect();
        let _ = writeln!(s, "  tensors: {params} values; {}", types.join(", "));
        if let (Ok(Some(m)), Some(tokens)) = (self.str_("tokenizer.ggml.model"), self.get("tokenizer.ggml.tokens")) {
            let pre = self.str_("tokenizer.ggml.pre").ok().flatten().unwrap_or("(none)");
            let n = tokens.as_array().map(|a| a.len()).unwrap_or(0);
            let merges = self.get("tokenizer.ggml.merges").and_then(|v| v.as_array()).map(|a| a.len()).unwrap_or(0);
            let _ = writeln!(s, "  tokenizer: {m} (pre `{pre}`), {n} tokens, {merges} merges");
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Dequantisation (block layouts as in ggml-quants.c)
// ---------------------------------------------------------------------------------------------

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

/// Undoes llama.cpp's q/k row permutation: within each of `heads` groups of Dh rows, GGUF row
/// `2j + i` holds original row `i*Dh/2 + j`. Works on [rows, cols] matrices and [rows] biases.
pub fn unpermute_qk(t: &Tensor, heads: usize, name: &str) -> Result<Tensor> {
    let rows = t.shape.first().copied().unwrap_or(0);
    let cols = t.data.len().checked_div(rows).unwrap_or(0);
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(err(format!("tensor `{name}`: {rows} rows cannot be split into {heads} heads of even size")));
    }
    let (dh, half) = (rows / heads, rows / heads / 2);
    let mut data = vec![0f32; t.data.len()];
    for h in 0..heads {
        for j in 0..half {
            for i in 0..2 {
                let (src, dst) = (h * dh + 2 * j + i, h * dh + i * half + j);
                data[dst * cols..(dst + 1) * cols].copy_from_slice(&t.data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Ok(Tensor::new(t.shape.clone(), data))
}

// ---------------------------------------------------------------------------------------------
// Model: config and weights
// ---------------------------------------------------------------------------------------------

/// The tokenizer stored in a GGUF file, as a Hugging Face `tokenizers` JSON.
#[derive(Clone, Debug)]
pub struct GgufTokenizer {
    /// A `tokenizer.json` document that `tokenizers::Tokenizer::from_bytes` accepts.
    pub tokenizer_json: serde_json::Value,
    /// `tokenizer.chat_template` (Jinja), if present.
    pub chat_template: Option<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Whether prompts start with BOS (`tokenizer.ggml.add_bos_token`, else llama.cpp's default
    /// for the pre-tokenizer). The JSON's post-processor also adds it when a caller encodes with
    /// `add_special_tokens = true`.
    pub add_bos: bool,
}

impl GgufTokenizer {
    /// The JSON bytes, for `plt::tokenizer::Tokenizer::from_bytes`.
    pub fn json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.tokenizer_json).expect("a JSON value serialises")
    }
}

/// A model loaded from a GGUF file.
#[derive(Clone, Debug)]
pub struct GgufModel {
    pub cfg: Config,
    pub weights: Weights,
    /// None when the file has no `tokenizer.ggml.model`.
    pub tokenizer: Option<GgufTokenizer>,
    /// Human-readable lines about the file (header, general.* keys, tensor types).
    pub metadata_summary: String,
}

/// Reads and loads a GGUF file (see the module doc for the conventions).
pub fn load_gguf(path: &Path) -> Result<GgufModel> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    load_gguf_bytes(&bytes).map_err(|e| match e {
        Error::Input(m) => Error::Input(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// `load_gguf` from the bytes of a file in memory.
pub fn load_gguf_bytes(bytes: &[u8]) -> Result<GgufModel> {
    let f = GgufFile::parse(bytes)?;
    let cfg = config_from_gguf(&f)?;
    let tokenizer = GgufTokenizer::from_gguf(&f, cfg.vocab_size)?;
    let weights = weights_from_gguf(&f, &cfg)?;
    let mut metadata_summary = f.summary();
    let _ = writeln!(
        metadata_summary,
        "  model: N={} D={} F={} H={} Hkv={} Dh={} V={} theta={} eps={:e} context={} tied={} weights {}",
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
        cfg.vocab_size,
        cfg.rope_theta,
        cfg.rms_norm_eps,
        cfg.max_position_embeddings,
        cfg.tie_word_embeddings,
        weights.dtype.name()
    );
    Ok(GgufModel { cfg, weights, tokenizer, metadata_summary })
}

/// The model configuration from `{arch}.*` metadata (llama only) and the tokenizer.
pub fn config_from_gguf(f: &GgufFile) -> Result<Config> {
    let arch = f.str_("general.architecture")?.ok_or_else(|| err("metadata `general.architecture` is absent"))?;
    if arch != "llama" {
        return Err(err(format!("architecture `{arch}` is not supported (only `llama`)")));
    }
    let k = |s: &str| format!("{arch}.{s}");
    let hidden_size = f.req_usize(&k("embedding_length"))?;
    let num_hidden_layers = f.req_usize(&k("block_count"))?;
    let intermediate_size = f.req_usize(&k("feed_forward_length"))?;
    let num_attention_heads = f.req_usize(&k("attention.head_count"))?;
    let num_key_value_heads = f.usize_(&k("attention.head_count_kv"))?.unwrap_or(num_attention_heads);
    for (key, v) in [
        ("embedding_length", hidden_size),
        ("block_count", num_hidden_layers),
        ("feed_forward_length", intermediate_size),
        ("attention.head_count", num_attention_heads),
        ("attention.head_count_kv", num_key_value_heads),
    ] {
        if v == 0 {
            return Err(err(format!("metadata `{}` must be at least 1", k(key))));
        }
    }
    if num_attention_heads % num_key_value_heads != 0 {
        return Err(err(format!(
            "metadata `{}` = {num_key_value_heads} does not divide `{}` = {num_attention_heads}",
            k("attention.head_count_kv"),
            k("attention.head_count")
        )));
    }
    // Dh: attention.key_length, else rope.dimension_count, else D / H.
    let key_length = f.usize_(&k("attention.key_length"))?;
    let rope_dims = f.usize_(&k("rope.dimension_count"))?;
    let head_dim = match key_length.or(rope_dims) {
        Some(d) => d,
        None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
        None => {
            return Err(err(format!(
                "`{}` ({hidden_size}) is not divisible by `{}` ({num_attention_heads}) and no head size is given",
                k("embedding_length"),
                k("attention.head_count")
            )))
        }
    };
    if head_dim == 0 || head_dim % 2 != 0 {
        return Err(err(format!("head size {head_dim} must be even and positive")));
    }
    if let Some(r) = rope_dims.filter(|&r| r != head_dim) {
        return Err(err(format!(
            "metadata `{}` = {r} differs from the head size {head_dim} (partial RoPE is not supported)",
            k("rope.dimension_count")
        )));
    }
    if let Some(v) = f.usize_(&k("attention.value_length"))?.filter(|&v| v != head_dim) {
        return Err(err(format!("metadata `{}` = {v} differs from the key head size {head_dim}", k("attention.value_length"))));
    }
    if let Some(e) = f.usize_(&k("expert_count"))?.filter(|&e| e > 0) {
        return Err(err(format!("metadata `{}` = {e}: mixture-of-experts models are not supported", k("expert_count"))));
    }
    if let Some(t) = f.str_(&k("rope.scaling.type"))?.filter(|t| *t != "none") {
        let factor = f.f32_(&k("rope.scaling.factor"))?;
        if factor.is_some_and(|x| x != 1.0) || factor.is_none() {
            return Err(err(format!("metadata `{}` = `{t}`: RoPE scaling is not supported", k("rope.scaling.type"))));
        }
    }
    if f.tensor("rope_freqs.weight").is_some() {
        return Err(err("tensor `rope_freqs.weight` (Llama 3.1 RoPE frequency scaling) is not supported"));
    }
    let rms_norm_eps = f.f32_(&k("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5);
    let rope_theta = f.f32_(&k("rope.freq_base"))?.unwrap_or(10000.0);
    for (key, v) in [("attention.layer_norm_rms_epsilon", rms_norm_eps), ("rope.freq_base", rope_theta)] {
        if v <= 0.0 {
            return Err(err(format!("metadata `{}` = {v} must be positive", k(key))));
        }
    }
    let max_position_embeddings = f.req_usize(&k("context_length"))?.max(1);
    // V: the tokenizer's token count, else `{arch}.vocab_size`, else the embedding's rows.
    let vocab_size = match f.get("tokenizer.ggml.tokens") {
        Some(Value::Array(a)) => a.len(),
        Some(v) => return Err(err(format!("metadata `tokenizer.ggml.tokens` must be an array, got {}", v.type_name()))),
        None => match f.usize_(&k("vocab_size"))? {
            Some(v) => v,
            None => match f.tensor("token_embd.weight") {
                Some(t) if t.dims.len() == 2 => t.dims[1] as usize,
                _ => return Err(err("cannot tell the vocabulary size (no tokenizer, no vocab_size, no 2-D token_embd)")),
            },
        },
    };
    if vocab_size == 0 || vocab_size > u32::MAX as usize / 2 {
        return Err(err(format!("vocabulary size {vocab_size} is out of range")));
    }
    let bos_token_id = f.token_("tokenizer.ggml.bos_token_id", vocab_size)?;
    let mut eos_token_ids = Vec::new();
    for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"] {
        if let Some(id) = f.token_(key, vocab_size)? {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
    }
    let cfg = Config {
        vocab_size,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps,
        rope_theta,
        max_position_embeddings,
        tie_word_embeddings: f.tensor("output.weight").is_none(),
        bos_token_id,
        eos_token_ids,
        num_loops: 1,
        window_left: 64,
        normalize_per_loop: true,
        emb_scale: 1.0,
        hidden_scale: 1.0,
        gate_mode: GateMode::Query,
        looping: Looping::Plt,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The tensors of a llama GGUF as `Weights` (names mapped, q/k rows unpermuted).
pub fn weights_from_gguf(f: &GgufFile, cfg: &Config) -> Result<Weights> {
    let (d, ff, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (h, hkv, qd, kvd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.q_dim(), cfg.kv_dim());
    let mut matrix_types: Vec<GgmlType> = Vec::new();
    let mut take_opt = |name: &str, shape: &[usize]| -> Result<Option<Tensor>> {
        let Some(t) = f.tensor(name) else { return Ok(None) };
        let got = t.shape();
        if got != shape {
            return Err(Error::TensorShape { name: name.to_string(), expected: shape.to_vec(), got });
        }
        if !t.ty.can_dequantize() {
            return Err(err(format!(
                "tensor `{name}` has type {}, which this loader does not dequantise \
                 (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)",
                t.ty.name()
            )));
        }
        if shape.len() == 2 {
            matrix_types.push(t.ty);
        }
        f.dequantize(name).map(Some)
    };
    macro_rules! take {
        ($name:expr, $shape:expr) => {{
            let name: String = $name;
            take_opt(&name, $shape)?.ok_or(Error::MissingTensor { name })?
        }};
    }
    // block_count comes from the file (up to 2^32): reserve only what tensors can back.
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers.min(1024));
    for i in 0..cfg.num_hidden_layers {
        let p = format!("blk.{i}.");
        let q = take!(format!("{p}attn_q.weight"), &[qd, d]);
        let k = take!(format!("{p}attn_k.weight"), &[kvd, d]);
        let q_bias = take_opt(&format!("{p}attn_q.bias"), &[qd])?;
        let k_bias = take_opt(&format!("{p}attn_k.bias"), &[kvd])?;
        let v_bias = take_opt(&format!("{p}attn_v.bias"), &[kvd])?;
        let unperm = |t: Option<Tensor>, heads: usize, what: &str| -> Result<Option<Tensor>> {
            t.map(|t| unpermute_qk(&t, heads, &format!("{p}{what}"))).transpose()
        };
        let self_attn = SelfAttn {
            q_proj: Linear { weight: unpermute_qk(&q, h, &format!("{p}attn_q.weight"))?, bias: unperm(q_bias, h, "attn_q.bias")? },
            k_proj: Linear { weight: unpermute_qk(&k, hkv, &format!("{p}attn_k.weight"))?, bias: unperm(k_bias, hkv, "attn_k.bias")? },
            v_proj: Linear { weight: take!(format!("{p}attn_v.weight"), &[kvd, d]), bias: v_bias },
            o_proj: Linear { weight: take!(format!("{p}attn_output.weight"), &[d, qd]), bias: None },
            plt_gate: None,
        };
        layers.push(Layer {
            input_layernorm: take!(format!("{p}attn_norm.weight"), &[d]),
            self_attn,
            post_attention_layernorm: take!(format!("{p}ffn_norm.weight"), &[d]),
            mlp: Mlp {
                gate_proj: Linear { weight: take!(format!("{p}ffn_gate.weight"), &[ff, d]), bias: None },
                up_proj: Linear { weight: take!(format!("{p}ffn_up.weight"), &[ff, d]), bias: None },
                down_proj: Linear { weight: take!(format!("{p}ffn_down.weight"), &[d, ff]), bias: None },
            },
        });
    }
    let embed_tokens = take!("token_embd.weight".to_string(), &[v, d]);
    let norm = take!("output_norm.weight".to_string(), &[d]);
    let lm_head = if cfg.tie_word_embeddings { None } else { Some(take!("output.weight".to_string(), &[v, d])) };
    let dtype = if !matrix_types.is_empty() && matrix_types.iter().all(|&t| t == GgmlType::F16) {
        DType::F16
    } else if !matrix_types.is_empty() && matrix_types.iter().all(|&t| t == GgmlType::BF16) {
        DType::BF16
    } else {
        DType::F32
    };
    Ok(Weights { embed_tokens, layers, norm, lm_head, dtype })
}

// ---------------------------------------------------------------------------------------------
// Tokenizer: GGUF `gpt2` (byte-level BPE) → Hugging Face tokenizer.json
// ---------------------------------------------------------------------------------------------

/// GPT-2's pre-tokenizer regex, as in Hugging Face's `ByteLevel` (llama.cpp's has no final `\s+`,
/// which only matters for unmatched pieces that Isolated splitting keeps anyway).
const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's (llama.cpp's case-insensitive-contraction form of it).
const LLAMA3_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: Llama 3's with single digits.
const QWEN2_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen3.5's: Qwen2's with combining marks joined to letters.
const QWEN35_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// The `tokenizer.ggml.pre` values `pre_tokenizer` knows (checked against llama.cpp's test
/// vectors: gpt-2, mpt, starcoder, refact, command-r, llama-bpe, qwen2, qwen35, falcon,
/// deepseek-coder; the others share one of these regex sets in llama.cpp).
pub const SUPPORTED_PRE_TOKENIZERS: &[&str] = &[
    "gpt-2", "phi-2", "mpt", "olmo", "smollm", "starcoder", "refact", "codeshell", "command-r", "llama3", "llama-v3",
    "llama-bpe", "qwen2", "deepseek-r1-qwen", "qwen35", "falcon", "deepseek-coder",
];

/// The regexes llama.cpp applies, in order, for a `tokenizer.ggml.pre` value (each an Isolated
/// split of the pieces before it), whether it ignores merges for whole words that are in the
/// vocabulary, and whether it adds BOS by default.
fn pre_tokenizer(pre: &str) -> Option<(Vec<&'static str>, bool, bool)> {
    Some(match pre {
        "gpt-2" | "phi-2" | "mpt" | "olmo" => (vec![GPT2_RE], false, false),
        "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" => (vec![r"\p{N}", GPT2_RE], false, false),
        "llama3" | "llama-v3" | "llama-bpe" => (vec![LLAMA3_RE], true, true),
        "qwen2" | "deepseek-r1-qwen" => (vec![QWEN2_RE], false, false),
        "qwen35" => (vec![QWEN35_RE], false, false),
        "falcon" => (vec![r"[\p{P}\$\+<=>\^~\|`]+", GPT2_RE, "[0-9][0-9][0-9]"], false, false),
        "deepseek-coder" => (vec!["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[一-龥ࠀ-一가-퟿]+", r"\p{N}"], false, false),
        _ => return None,
    })
}

impl GgufTokenizer {
    /// Builds the tokenizer from `tokenizer.*` metadata; None when the file has none.
    /// Supported: `tokenizer.ggml.model = gpt2` (byte-level BPE) with a `tokenizer.ggml.pre` of
    /// `SUPPORTED_PRE_TOKENIZERS`; any other model or pre-tokenizer (or none) is an error naming it.
    pub fn from_gguf(f: &GgufFile, vocab_size: usize) -> Result<Option<GgufTokenizer>> {
        let Some(model) = f.str_("tokenizer.ggml.model")? else { return Ok(None) };
        if model != "gpt2" {
            return Err(err(format!(
                "metadata `tokenizer.ggml.model` = `{model}` is not supported (only `gpt2`, byte-level BPE)"
            )));
        }
        let tokens = match f.get("tokenizer.ggml.tokens") {
            Some(Value::Array(Array::Str(t))) => t,
            Some(v) => return Err(err(format!("metadata `tokenizer.ggml.tokens` must be an array of strings, got {}", v.brief()))),
            None => return Err(err("metadata `tokenizer.ggml.tokens` is absent")),
        };
        if tokens.len() > vocab_size {
            return Err(err(format!("the tokenizer has {} tokens but the model's vocabulary is {vocab_size}", tokens.len())));
        }
        let merges = match f.get("tokenizer.ggml.merges") {
            Some(Value::Array(Array::Str(m))) => m.as_slice(),
            Some(Value::Array(a)) if a.is_empty() => &[],
            Some(v) => return Err(err(format!("metadata `tokenizer.ggml.merges` must be an array of strings, got {}", v.brief()))),
            None => return Err(err("metadata `tokenizer.ggml.merges` is absent (a gpt2 tokenizer needs merges)")),
        };
        let types = match f.get("tokenizer.ggml.token_type") {
            None => None,
            Some(Value::Array(a)) if a.len() == tokens.len() && a.int_at(0).is_some() || a.is_empty() && tokens.is_empty() => Some(a),
            Some(v) => {
                return Err(err(format!(
                    "metadata `tokenizer.ggml.token_type` must be an integer array of {} elements, got {}",
                    tokens.len(),
                    v.brief()
                )))
            }
        };
        let pre_name = f.str_("tokenizer.ggml.pre")?;
        let Some((regexes, ignore_merges, default_add_bos)) = pre_name.and_then(pre_tokenizer) else {
            return Err(err(format!(
                "metadata `tokenizer.ggml.pre` = {} is not a supported pre-tokenizer (supported: {})",
                pre_name.map(|p| format!("`{p}`")).unwrap_or_else(|| "(absent)".into()),
                SUPPORTED_PRE_TOKENIZERS.join(", ")
            )));
        };
        let bos = f.token_("tokenizer.ggml.bos_token_id", tokens.len())?;
        let eos = f.token_("tokenizer.ggml.eos_token_id", tokens.len())?;
        let add_bos = f.bool_("tokenizer.ggml.add_bos_token")?.unwrap_or(default_add_bos);
        let add_eos = f.bool_("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let chat_template = f.str_("tokenizer.chat_template")?.map(str::to_string);

        let mut vocab = serde_json::Map::with_capacity(tokens.len());
        let mut added = Vec::new();
        for (id, tok) in tokens.iter().enumerate() {
            // A repeated token keeps its first id (as llama.cpp's text-to-token map does).
            if !vocab.contains_key(tok) {
                vocab.insert(tok.clone(), id.into());
            }
            let ty = types.and_then(|a| a.int_at(id)).unwrap_or(1);
            if (ty == TOKEN_CONTROL || ty == TOKEN_USER_DEFINED) && !tok.is_empty() {
                added.push(serde_json::json!({
                    "id": id, "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": ty == TOKEN_CONTROL,
                }));
            }
        }
        let mut pairs = Vec::with_capacity(merges.len());
        for (i, m) in merges.iter().enumerate() {
            // llama.cpp splits at the first space after the first character.
            let cut = m.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(p, _)| p);
            let Some(cut) = cut else {
                return Err(err(format!("tokenizer merge {i} ({m:?}) is not two tokens separated by a space")));
            };
            let (a, b) = (&m[..cut], &m[cut + 1..]);
            // tokenizers rejects a merge whose parts or result are not tokens; say which.
            for part in [a, b, &format!("{a}{b}")] {
                if !vocab.contains_key(part) {
                    return Err(err(format!("tokenizer merge {i} ({m:?}) needs the token {part:?}, which is not in the vocabulary")));
                }
            }
            pairs.push(serde_json::json!([a, b]));
        }
        let mut pretokenizers: Vec<serde_json::Value> = regexes
            .iter()
            .map(|r| serde_json::json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false}))
            .collect();
        pretokenizers.push(serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}));
        let special = |id: u32| {
            let content = &tokens[id as usize];
            (content.clone(), serde_json::json!({"id": content, "ids": [id], "tokens": [content]}))
        };
        let post_processor = match (add_bos.then_some(bos).flatten(), add_eos.then_some(eos).flatten()) {
            (None, None) => serde_json::Value::Null,
            (b, e) => {
                let mut single = Vec::new();
                let mut pair = Vec::new();
                let mut specials = serde_json::Map::new();
                let piece = |id: u32| serde_json::json!({"SpecialToken": {"id": tokens[id as usize], "type_id": 0}});
                if let Some(b) = b {
                    single.push(piece(b));
                    pair.push(piece(b));
                    let (k, v) = special(b);
                    specials.insert(k, v);
                }
                single.push(serde_json::json!({"Sequence": {"id": "A", "type_id": 0}}));
                pair.push(serde_json::json!({"Sequence": {"id": "A", "type_id": 0}}));
                if let Some(e) = e {
                    single.push(piece(e));
                    pair.push(piece(e));
                    let (k, v) = special(e);
                    specials.insert(k, v);
                }
                if let Some(b) = b {
                    pair.push(piece(b));
                }
                pair.push(serde_json::json!({"Sequence": {"id": "B", "type_id": 1}}));
                if let Some(e) = e {
                    pair.push(piece(e));
                }
                serde_json::json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
            }
        };
        let tokenizer_json = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": pretokenizers},
            "post_processor": post_processor,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": ignore_merges, "vocab": vocab, "merges": pairs,
            },
        });
        Ok(Some(GgufTokenizer { tokenizer_json, chat_template, bos, eos, add_bos: add_bos && bos.is_some() }))
    }
}
