//! Loading a model, in one place and as a stream (ARCHITECTURE.md, decision 24):
//!
//! 1. header: the safetensors headers (one file or shards) or the GGUF header and metadata are
//!    read without touching tensor data (`safetensors`, `crate::gguf`);
//! 2. plan: `LoadPlan` holds the config, the tokenizer's inputs and, for every tensor, its
//!    storage type, shape, bytes, file and offset, and its place on the device (`plan`);
//! 3. bytes: each file is a `ByteSource` read front to back in bounded pieces: a file on disk,
//!    bytes in memory (`source`);
//! 4. sink: each tensor, dequantised to f32 in chunks of rows, goes to a `Sink` that places it:
//!    the host `Weights` (`stream::HostSink`) or the device buffers (`model::GpuModel::load`).
//!
//! Nothing holds a whole file; only the host sink holds the whole model (the CPU reference
//! needs it).

pub mod memory;
pub mod plan;
pub mod safetensors;
pub mod source;
pub mod stream;

pub use plan::{BufferId, BufferLayout, BufferPlan, FileInfo, PartPlan, Format, LayerBuffer, LayerWeight, LoadPlan, Place, PlannedTensor, Storage, Target, WeightId};
pub use source::{ByteSource, Bytes, FileData, FileSource, MemorySource, Opener};
pub use stream::{host_plan, stream, HostSink, HostSource, Sink};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::tokenizer::{Tokenizer, TokenizerInputs};
use crate::weights::Weights;
use std::path::{Path, PathBuf};

/// Where a model is.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// A model directory (PLT-SPEC section 1) or a `.gguf` file.
    Path(PathBuf),
    /// A model directory's files, in memory.
    Memory(MemoryModel),
    /// A GGUF file in memory (a browser's fetched or picked file); `name` is for messages.
    GgufBytes { name: String, bytes: Bytes },
    /// A GGUF file read a range at a time through the sources `file` opens (a browser's
    /// `Blob`): never whole in memory. `name` is for messages.
    GgufFile { name: String, file: Opener },
}

/// The files of a model directory held in memory (a browser's fetched files, the binary's
/// built-in model): config.json, one model.safetensors, and the tokenizer's files.
#[derive(Clone, Debug)]
pub struct MemoryModel {
    /// A name for messages.
    pub name: String,
    pub config: Bytes,
    /// The weights: bytes, or (a browser's `Blob`) a file read a range at a time.
    pub safetensors: FileData,
    pub tokenizer: Option<Bytes>,
    pub generation_config: Option<Bytes>,
    pub tokenizer_config: Option<Bytes>,
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Path(p) => write!(f, "{}", p.display()),
            ModelSource::Memory(m) => f.write_str(&m.name),
            ModelSource::GgufBytes { name, .. } | ModelSource::GgufFile { name, .. } => f.write_str(name),
        }
    }
}

impl From<&Path> for ModelSource {
    fn from(p: &Path) -> ModelSource {
        ModelSource::Path(p.to_path_buf())
    }
}

impl From<&PathBuf> for ModelSource {
    fn from(p: &PathBuf) -> ModelSource {
        ModelSource::Path(p.clone())
    }
}

impl From<PathBuf> for ModelSource {
    fn from(p: PathBuf) -> ModelSource {
        ModelSource::Path(p)
    }
}

impl From<MemoryModel> for ModelSource {
    fn from(m: MemoryModel) -> ModelSource {
        ModelSource::Memory(m)
    }
}

impl From<&ModelSource> for ModelSource {
    fn from(m: &ModelSource) -> ModelSource {
        m.clone()
    }
}

/// A model whose headers are read and whose plan is made, with the byte sources its tensors
/// will be read from.
pub struct OpenModel<'a> {
    pub plan: LoadPlan,
    sources: Vec<Box<dyn ByteSource + 'a>>,
}

impl<'a> OpenModel<'a> {
    pub fn new(plan: LoadPlan, sources: Vec<Box<dyn ByteSource + 'a>>) -> OpenModel<'a> {
        OpenModel { plan, sources }
    }

    /// The model's tokenizer (`Tokenizer::for_model`); `None` when it has none.
    pub fn tokenizer(&self) -> Result<Option<Tokenizer>> {
        self.plan.tokenizer.as_ref().map(|t| Tokenizer::for_model(t, &self.plan.cfg)).transpose()
    }

    /// Streams every tensor into `sink`.
    pub fn stream(&mut self, sink: &mut dyn Sink, progress: &mut dyn FnMut(f32)) -> Result<()> {
        stream::stream(&self.plan, &mut self.sources, sink, progress)
    }

    /// The weights in host memory (f32).
    pub fn read_weights(mut self) -> Result<Weights> {
        let mut sink = HostSink::default();
        self.stream(&mut sink, &mut |_| {})?;
        sink.into_weights(&self.plan)
    }
}

/// Opens a model: reads its headers and makes the plan (no tensor data is read).
pub fn open(src: &ModelSource) -> Result<OpenModel<'static>> {
    open_as(src, None)
}

/// `open` with `cfg` in place of the model's own configuration (config.json or GGUF metadata):
/// the same weights wired differently (a vanilla looped reading of a PLT checkpoint), or a
/// config already read.
pub fn open_with_config(src: &ModelSource, cfg: Config) -> Result<OpenModel<'static>> {
    open_as(src, Some(cfg))
}

fn open_as(src: &ModelSource, cfg: Option<Config>) -> Result<OpenModel<'static>> {
    match src {
        ModelSource::GgufBytes { name, bytes } => {
            let (model, _) = crate::gguf::open(Box::new(MemorySource::new(name, bytes.clone())), name.clone(), cfg)?;
            Ok(model)
        }
        ModelSource::GgufFile { name, file } => {
            let (model, _) = crate::gguf::open(file.open()?, name.clone(), cfg)?;
            Ok(model)
        }
        ModelSource::Path(path) => {
            if path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
                let file = FileSource::open(path)?;
                let (model, _) = crate::gguf::open(Box::new(file), path.display().to_string(), cfg)?;
                return Ok(model);
            }
            if !path.is_dir() {
                return Err(Error::Input(format!("{}: not a model directory or a .gguf file", path.display())));
            }
            let cfg = match cfg {
                Some(c) => c,
                None => Config::from_file(&path.join("config.json"))?,
            };
            open_dir(path, cfg)
        }
        ModelSource::Memory(m) => {
            let cfg = match cfg {
                Some(c) => c,
                None => {
                    let text = std::str::from_utf8(&m.config).map_err(|e| Error::Json(format!("not valid UTF-8: {e}")))?;
                    Config::from_json_str(text)?
                }
            };
            let json = |name: &str, b: &Option<Bytes>| b.as_ref().map(|b| TokenizerInputs::parse_json(name, b)).transpose();
            let tokenizer = match &m.tokenizer {
                None => None,
                Some(t) => Some(TokenizerInputs {
                    source: "tokenizer.json".into(),
                    json: t.to_vec(),
                    generation_config: json("generation_config.json", &m.generation_config)?,
                    tokenizer_config: json("tokenizer_config.json", &m.tokenizer_config)?,
                }),
            };
            let sources: Vec<Box<dyn ByteSource>> = vec![m.safetensors.open("model.safetensors")?];
            let mut model = open_safetensors(&m.name, cfg, sources)?;
            model.plan.tokenizer = tokenizer;
            Ok(model)
        }
    }
}

/// The safetensors of a model directory under `cfg`, and its tokenizer's files.
fn open_dir(dir: &Path, cfg: Config) -> Result<OpenModel<'static>> {
    let mut model = open_checkpoint(dir, cfg)?;
    model.plan.tokenizer = TokenizerInputs::from_dir(dir)?;
    Ok(model)
}

/// The safetensors of a model directory under `cfg` (no tokenizer).
pub fn open_checkpoint(dir: &Path, cfg: Config) -> Result<OpenModel<'static>> {
    let mut sources: Vec<Box<dyn ByteSource>> = Vec::new();
    for f in safetensors::checkpoint_files(dir)? {
        sources.push(Box::new(FileSource::open(&f)?));
    }
    open_safetensors(&dir.display().to_string(), cfg, sources)
}

/// One safetensors file in memory under `cfg` (no tokenizer).
pub fn open_safetensors_bytes(bytes: &[u8], cfg: Config) -> Result<OpenModel<'_>> {
    open_safetensors("model.safetensors", cfg, vec![Box::new(MemorySource::new("model.safetensors", bytes))])
}

/// safetensors files (one, or every shard) from any byte sources, under `cfg`; `name` is for
/// messages. The headers are read now, the tensors when the model is streamed.
pub fn open_safetensors<'a>(name: &str, cfg: Config, mut sources: Vec<Box<dyn ByteSource + 'a>>) -> Result<OpenModel<'a>> {
    let plan = safetensors::plan(name.to_string(), cfg, &mut sources)?;
    Ok(OpenModel::new(plan, sources))
}

/// A GGUF file from any byte source, with its own configuration and tokenizer.
pub fn open_gguf<'a>(src: Box<dyn ByteSource + 'a>) -> Result<OpenModel<'a>> {
    let name = src.name().to_string();
    Ok(crate::gguf::open(src, name, None)?.0)
}

/// Reads a model into host memory: config, weights (f32) and tokenizer.
pub fn read_host(src: &ModelSource) -> Result<(Config, Weights, Option<Tokenizer>)> {
    let model = open(src)?;
    let cfg = model.plan.cfg.clone();
    let tokenizer_inputs = model.plan.tokenizer.clone();
    let weights = model.read_weights()?;
    let tokenizer = tokenizer_inputs.map(|t| Tokenizer::for_model(&t, &cfg)).transpose()?;
    Ok((cfg, weights, tokenizer))
}
