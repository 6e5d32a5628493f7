//! The GGUF container: header, metadata and the tensor-info table, read from a byte source
//! without touching tensor data. Every count, length and offset is checked against the file's
//! size before it is read or allocated, so a malformed file is an `Error` naming what is wrong.

use super::value::{value_type as vt, value_type_name, Array, Value};
use super::err;
use crate::error::Result;
use crate::load::source::{ByteSource, MemorySource, SeqReader};
use std::collections::HashMap;
use std::fmt::Write as _;

/// Alignment of the tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Deepest nesting of arrays inside arrays the parser accepts.
const MAX_ARRAY_DEPTH: usize = 8;
/// GGML_MAX_DIMS.
const MAX_DIMS: usize = 4;
/// GGML_MAX_NAME: tensor names are shorter than this.
const MAX_NAME: usize = 64;


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

    /// The type of a name, any case (`q4_k`, `F16`); None for names ggml does not define.
    pub fn parse_name(name: &str) -> Option<GgmlType> {
        (0..64).map(GgmlType).find(|t| t.info().is_some_and(|(n, _, _)| n.eq_ignore_ascii_case(name)))
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


/// A parsed GGUF header: version, metadata and tensor infos. Every tensor's data range was
/// checked against the file's size when it was read.
#[derive(Debug)]
pub struct GgufFile {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
    file_size: u64,
    keys: HashMap<String, usize>,
    names: HashMap<String, usize>,
}

/// A cursor that checks every read against the end of the file.
struct Reader<'r, 's> {
    r: &'r mut SeqReader<'s>,
}

impl Reader<'_, '_> {
    fn remaining(&self) -> u64 {
        self.r.remaining()
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&[u8]> {
        if n > self.remaining() {
            return Err(err(format!(
                "file truncated: {} needs {n} bytes at offset {} but the file has {} bytes",
                what(),
                self.r.pos,
                self.r.size()
            )));
        }
        self.r.take(n)
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
        let s = self.take(n, what)?.to_vec();
        String::from_utf8(s).map_err(|e| err(format!("{} is not valid UTF-8: {e}", what())))
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
        if n.checked_mul(min_size).is_none_or(|b| b > self.remaining()) {
            return Err(err(format!(
                "{} claims {n} elements of type {} at offset {}, more than the {} bytes left in the file",
                what(),
                value_type_name(t),
                self.r.pos,
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

impl GgufFile {
    /// Parses the header of a GGUF file held in memory.
    pub fn parse(bytes: &[u8]) -> Result<GgufFile> {
        GgufFile::read(&mut MemorySource::new("model.gguf", bytes))
    }

    /// Reads the header, metadata and tensor infos from the front of `src`, and checks every
    /// tensor's data range against its size. Tensor data is not read.
    pub fn read(src: &mut dyn ByteSource) -> Result<GgufFile> {
        Ok(GgufFile::read_ahead(src)?.0)
    }

    /// `read`, and the bytes fetched past the header (with their offset), which a stream
    /// cannot read again.
    pub(crate) fn read_ahead(src: &mut dyn ByteSource) -> Result<(GgufFile, Vec<u8>, u64)> {
        let mut seq = SeqReader::new(src);
        let f = GgufFile::parse_from(&mut seq)?;
        let (rest, at) = seq.into_rest();
        Ok((f, rest, at))
    }

    fn parse_from(seq: &mut SeqReader<'_>) -> Result<GgufFile> {
        let file_size = seq.size();
        let mut r = Reader { r: seq };
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
            if n.checked_mul(min).is_none_or(|b| b > r.remaining()) {
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
        let data_offset = r.r.pos.div_ceil(alignment) * alignment;
        for t in &tensors {
            let end = data_offset.checked_add(t.offset).and_then(|s| s.checked_add(t.n_bytes));
            if end.is_none_or(|e| e > file_size) {
                return Err(err(format!(
                    "tensor `{}` ({}, {} bytes) at data offset {} runs past the end of the file ({} bytes, data section at {data_offset})",
                    t.name,
                    t.ty.name(),
                    t.n_bytes,
                    t.offset,
                    file_size
                )));
            }
        }
        Ok(GgufFile { version, metadata, tensors, alignment, data_offset, file_size, keys, names })
    }

    /// 2 or 3.

    /// Absolute byte offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The file's size in bytes.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Every metadata entry, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.keys.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.names.get(name).map(|&i| &self.tensors[i])
    }

    pub(crate) fn str_(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(v) => Err(err(format!("metadata `{key}` must be a string, got {}", v.type_name()))),
        }
    }

    pub(crate) fn usize_(&self, key: &str) -> Result<Option<usize>> {
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

    pub(crate) fn req_usize(&self, key: &str) -> Result<usize> {
        self.usize_(key)?.ok_or_else(|| err(format!("metadata `{key}` is required but absent")))
    }

    pub(crate) fn f32_(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if (x as f32).is_finite() => Ok(Some(x as f32)),
                _ => Err(err(format!("metadata `{key}` must be a finite float, got {} {}", v.type_name(), v.brief()))),
            },
        }
    }

    pub(crate) fn bool_(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(err(format!("metadata `{key}` must be a bool, got {}", v.type_name()))),
        }
    }

    /// A token id from metadata, checked against the vocabulary.
    pub(crate) fn token_(&self, key: &str, vocab: usize) -> Result<Option<u32>> {
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

