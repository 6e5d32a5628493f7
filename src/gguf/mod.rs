//! GGUF files (llama.cpp's single-file format, versions 2 and 3) for
//! `general.architecture = llama` and `qwen2` checkpoints (PLT-SPEC section 1 layout; L = 1
//! unless the `plt.*` keys say otherwise): the
//! header and metadata (`header`, `value`), the block formats (`quant`), the model's
//! configuration and tensor names (`model`), the tokenizer (`tokenizer`), and a writer
//! (`writer`: files streamed tensor by tensor, random blocks). Loading goes through
//! `crate::load` like every other format: header -> plan -> bytes -> sink.
//!
//! Conventions that fail silently when wrong:
//! - GGUF lists dimensions fastest-first; the row-major shape is the reverse
//!   (`token_embd` [D, V] in GGUF is [V, D] row-major).
//! - q/k rows of `llama` files are permuted for llama.cpp's interleaved RoPE and are
//!   un-permuted at load (`model::unpermute_rows`); `qwen2` files are not permuted.
//! - Llama 3 RoPE scaling is the tensor `rope_freqs.weight` (per-frequency divisors), read with
//!   the header into `Config::rope_scaling`.
//! - `Weights::dtype` is F16 (or BF16) only when every matrix was stored in that type, and F32
//!   otherwise (`model::plan`).

mod header;
mod model;
mod quant;
mod tokenizer;
mod value;
pub mod writer;

pub use header::{GgmlType, GgufFile, TensorInfo, DEFAULT_ALIGNMENT};
pub use model::{config_from_gguf, config_from_gguf_with, read_rope_freqs, tensor_name, ARCHITECTURES, PLT_KEYS, ROPE_FREQS, permute_rows, unpermute_qk, unpermute_rows};
pub use quant::{dequantize, first_non_finite, NonFinite};
pub use tokenizer::{GgufTokenizer, END_OF_GENERATION_KEYS, SUPPORTED_PRE_TOKENIZERS};
pub use value::{value_type, value_type_name, Array, Value};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::load::plan::FileInfo;
use crate::load::source::{ByteSource, FileSource, MemorySource, ReadAhead};
use crate::load::OpenModel;
use crate::weights::Weights;
use std::path::Path;

fn err(msg: impl Into<String>) -> Error {
    Error::Input(format!("GGUF: {}", msg.into()))
}

/// A GGUF model read into host memory.
#[derive(Clone, Debug)]
pub struct GgufModel {
    pub cfg: Config,
    pub weights: Weights,
    /// None when the file has no `tokenizer.ggml.model`.
    pub tokenizer: Option<GgufTokenizer>,
    /// Human-readable lines about the file (header, general.* keys, tensor types).
    pub metadata_summary: String,
}

/// Opens a GGUF file from `src`: reads its header, and plans its tensors under `cfg` (default:
/// the file's own configuration). Returns the tokenizer conversion too (None: no tokenizer).
/// Errors in the header, metadata and tensor infos name `source`.
pub(crate) fn open<'a>(src: Box<dyn ByteSource + 'a>, source: String, cfg: Option<Config>) -> Result<(OpenModel<'a>, Option<GgufTokenizer>)> {
    open_inner(src, source.clone(), cfg).map_err(|e| match e {
        Error::Input(m) => Error::Input(format!("{source}: {m}")),
        other => other,
    })
}

fn open_inner<'a>(mut src: Box<dyn ByteSource + 'a>, source: String, cfg: Option<Config>) -> Result<(OpenModel<'a>, Option<GgufTokenizer>)> {
    let (f, rest, at) = GgufFile::read_ahead(src.as_mut())?;
    let cfg = match cfg {
        Some(c) => c,
        None => {
            // The RoPE divisors are part of the configuration: read them now, from the bytes
            // already fetched when they are there (llama.cpp writes them first).
            let freqs = read_rope_freqs(&f, &mut |offset, buf| {
                let end = at + rest.len() as u64;
                if offset >= at && offset + buf.len() as u64 <= end {
                    let from = (offset - at) as usize;
                    buf.copy_from_slice(&rest[from..from + buf.len()]);
                    Ok(())
                } else {
                    src.read_at(offset, buf)
                }
            })?;
            config_from_gguf_with(&f, freqs)?
        }
    };
    let tokenizer = GgufTokenizer::from_gguf(&f, cfg.vocab_size)?;
    let file = FileInfo { name: src.name().to_string(), size: src.size() };
    let mut plan = model::plan(&f, cfg, source, file)?;
    plan.tokenizer = tokenizer.as_ref().map(GgufTokenizer::inputs);
    Ok((OpenModel::new(plan, vec![Box::new(ReadAhead::new(src, rest, at))]), tokenizer))
}

/// Reads a GGUF file into host memory (see the module doc for the conventions).
pub fn load_gguf(path: &Path) -> Result<GgufModel> {
    let src = FileSource::open(path)?;
    read(Box::new(src), path.display().to_string())
}

/// `load_gguf` from the bytes of a file in memory.
pub fn load_gguf_bytes(bytes: &[u8]) -> Result<GgufModel> {
    read(Box::new(MemorySource::new("model.gguf", bytes)), "model.gguf".into())
}

fn read(src: Box<dyn ByteSource + '_>, source: String) -> Result<GgufModel> {
    let (model, tokenizer) = open(src, source, None)?;
    let cfg = model.plan.cfg.clone();
    let metadata_summary = model.plan.notes.clone();
    let weights = model.read_weights()?;
    Ok(GgufModel { cfg, weights, tokenizer, metadata_summary })
}
