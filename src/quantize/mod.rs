//! `plt quantize`: a model directory (config.json, safetensors, tokenizer) or a GGUF file to one
//! GGUF file of a chosen type, streamed tensor by tensor (memory: about one tensor).
//!
//! The file follows llama.cpp's conventions for `general.architecture = llama`: its tensor names
//! (`gguf::tensor_name`), q/k rows permuted per head as llama.cpp's converter permutes them (the
//! loader's `unpermute_rows` undoes it exactly: rows are only moved), the `llama.*` keys,
//! `general.file_type` (llama.cpp's `llama_ftype` number) and `general.quantization_version` 2,
//! the tokenizer as `tokenizer.ggml.*` (`tokenizer`), plus the PLT fields as `plt.*`
//! (`gguf::PLT_KEYS`; a file without them is an L = 1 model, so llama.cpp reads L = 1 files as
//! ordinary llama models). A GGUF source keeps its metadata but for those keys.
//!
//! Which type each tensor gets (`tensor_type`):
//! - vectors (norms, biases) and the PLT gate's weight stay F32;
//! - F32 / F16 / BF16 files: every matrix in that type;
//! - otherwise the file type's base type (`FileType::base`), with llama.cpp's per-tensor rules:
//!   - the output matrix (`output.weight`, or `token_embd.weight` when the embeddings are tied)
//!     is Q6_K unless the base type is Q8_0, and Q8_0 when its rows are not whole 256-blocks;
//!   - Q4_K_M and Q5_K_M: `attn_v` and `ffn_down` of layer i are Q6_K where
//!     `use_more_bits(i, N)` (the first and last eighth of the layers, and every third layer
//!     between);
//!   - Q4_K_S: `attn_v` of layers 0..4 and `ffn_down` of the first eighth are Q5_K;
//! - a matrix whose rows are not whole blocks of the chosen type falls back as llama.cpp's does
//!   (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0), then to F16 (`init::gguf::matrix_type`); the
//!   report lists every fallback.
//!
//! A tensor already stored in its output type is copied as it is (rows re-permuted for q/k);
//! the others are decoded to f32 and quantised (`blocks`). Quantising a file whose matrices are
//! already quantised needs `allow_requantize`: its quality is bounded by the source's.

pub mod blocks;
pub mod tokenizer;

pub use blocks::{quantize_row, quantize_rows, Search};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::gguf::writer::{GgufWriter, TensorDecl};
use crate::gguf::{tensor_name, GgmlType, GgufFile, Value};
use crate::load::plan::{LayerWeight, LoadPlan, PlannedTensor, WeightId};
use crate::load::{ModelSource, Sink};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// An output file type (llama-quantize's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

impl FileType {
    pub const ALL: [FileType; 13] = [
        FileType::F32,
        FileType::F16,
        FileType::BF16,
        FileType::Q8_0,
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::Q4_K_S,
        FileType::Q4_K_M,
        FileType::Q5_K_S,
        FileType::Q5_K_M,
        FileType::Q6_K,
    ];

    /// Lower-case name (`q4_k_m`).
    pub fn name(self) -> &'static str {
        use FileType::*;
        match self {
            F32 => "f32",
            F16 => "f16",
            BF16 => "bf16",
            Q8_0 => "q8_0",
            Q4_0 => "q4_0",
            Q4_1 => "q4_1",
            Q5_0 => "q5_0",
            Q5_1 => "q5_1",
            Q4_K_S => "q4_k_s",
            Q4_K_M => "q4_k_m",
            Q5_K_S => "q5_k_s",
            Q5_K_M => "q5_k_m",
            Q6_K => "q6_k",
        }
    }

    /// A name in any case; `q4_k` and `q5_k` mean the _M recipes (as in llama-quantize).
    pub fn parse(s: &str) -> Option<FileType> {
        let s = s.to_ascii_lowercase();
        let s = match s.as_str() {
            "q4_k" => "q4_k_m",
            "q5_k" => "q5_k_m",
            o => o,
        };
        FileType::ALL.into_iter().find(|t| t.name() == s)
    }

    /// llama.cpp's `llama_ftype` number (`general.file_type`).
    pub fn llama_ftype(self) -> u32 {
        use FileType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q8_0 => 7,
            Q5_0 => 8,
            Q5_1 => 9,
            Q4_K_S => 14,
            Q4_K_M => 15,
            Q5_K_S => 16,
            Q5_K_M => 17,
            Q6_K => 18,
            BF16 => 32,
        }
    }

    /// The type most matrices get.
    pub fn base(self) -> GgmlType {
        use FileType::*;
        match self {
            F32 => GgmlType::F32,
            F16 => GgmlType::F16,
            BF16 => GgmlType::BF16,
            Q8_0 => GgmlType::Q8_0,
            Q4_0 => GgmlType::Q4_0,
            Q4_1 => GgmlType::Q4_1,
            Q5_0 => GgmlType::Q5_0,
            Q5_1 => GgmlType::Q5_1,
            Q4_K_S | Q4_K_M => GgmlType::Q4_K,
            Q5_K_S | Q5_K_M => GgmlType::Q5_K,
            Q6_K => GgmlType::Q6_K,
        }
    }

    fn is_float(self) -> bool {
        matches!(self, FileType::F32 | FileType::F16 | FileType::BF16)
    }
}

/// llama.cpp's choice of the layers that get more bits in the _M recipes: the first and last
/// eighth of `n` layers, and every third layer in between.
pub fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The type of weight `w` (of `cols` values per row) in a `ft` file: (type, the type the rules
/// chose when a fallback replaced it).
pub fn tensor_type(ft: FileType, w: WeightId, cfg: &Config, cols: usize, dims: usize) -> (GgmlType, Option<GgmlType>) {
    use LayerWeight as L;
    let matrix = dims == 2 && !matches!(w, WeightId::Layer(_, L::PltGate));
    if !matrix {
        return (GgmlType::F32, None);
    }
    if ft.is_float() {
        return (ft.base(), None);
    }
    let n = cfg.num_hidden_layers;
    let output = w == WeightId::LmHead || (cfg.tie_word_embeddings && w == WeightId::EmbedTokens);
    let mut ty = ft.base();
    if output {
        if !cols.is_multiple_of(256) {
            return (GgmlType::Q8_0, None).fit(cols);
        }
        if ty != GgmlType::Q8_0 {
            ty = GgmlType::Q6_K;
        }
    } else if let WeightId::Layer(i, l @ (L::VProj | L::DownProj)) = w {
        match ft {
            FileType::Q4_K_M | FileType::Q5_K_M if use_more_bits(i, n) => ty = GgmlType::Q6_K,
            FileType::Q4_K_S if (l == L::VProj && i < 4) || (l == L::DownProj && i < n / 8) => ty = GgmlType::Q5_K,
            _ => {}
        }
    }
    (ty, None).fit(cols)
}

trait Fit {
    fn fit(self, cols: usize) -> (GgmlType, Option<GgmlType>);
}

impl Fit for (GgmlType, Option<GgmlType>) {
    /// The fallback when rows are not whole blocks.
    fn fit(self, cols: usize) -> (GgmlType, Option<GgmlType>) {
        let t = crate::init::gguf::matrix_type(self.0, cols);
        (t, (t != self.0).then_some(self.0))
    }
}

pub use crate::gguf::permute_rows;

/// How `quantize` runs.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    pub file_type: FileType,
    /// Threads quantising rows (at least 1).
    pub threads: usize,
    /// Quantise a source whose matrices are already quantised.
    pub allow_requantize: bool,
    /// Leave the tokenizer out (a directory whose tokenizer GGUF cannot hold).
    pub no_tokenizer: bool,
    pub search: Search,
}

/// One tensor written.
#[derive(Clone, Debug)]
pub struct TensorReport {
    pub name: String,
    pub shape: Vec<usize>,
    pub ty: GgmlType,
    /// The type the rules chose, when rows that are not whole blocks of it made `ty` a fallback.
    pub wanted: Option<GgmlType>,
    /// The source's type.
    pub source: GgmlType,
    pub bytes: u64,
}

/// What `quantize` wrote.
#[derive(Clone, Debug)]
pub struct QuantizeReport {
    pub bytes: u64,
    pub tensors: Vec<TensorReport>,
    /// Things the user must know (requantising, no tokenizer, fallbacks).
    pub warnings: Vec<String>,
}

impl QuantizeReport {
    /// (type, tensors, bytes), largest first.
    pub fn by_type(&self) -> Vec<(GgmlType, usize, u64)> {
        let mut by: Vec<(GgmlType, usize, u64)> = Vec::new();
        for t in &self.tensors {
            match by.iter_mut().find(|e| e.0 == t.ty) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += t.bytes;
                }
                None => by.push((t.ty, 1, t.bytes)),
            }
        }
        by.sort_by_key(|e| std::cmp::Reverse(e.2));
        by
    }
}

fn is_gguf(p: &Path) -> bool {
    p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// `p` made absolute with its parent resolved (the file itself need not exist).
fn resolved(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    let parent = p.parent().filter(|x| !x.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match (parent.canonicalize(), p.file_name()) {
        (Ok(d), Some(n)) => d.join(n),
        _ => p.to_path_buf(),
    }
}

/// Quantises the model at `src` into the GGUF file `out` (the module doc). `progress(fraction)`
/// after each tensor. The file is written under a temporary name next to `out` and renamed when
/// complete, so an error leaves no partial `out`.
pub fn quantize(src: &Path, out: &Path, opts: &QuantizeOptions, progress: &mut dyn FnMut(f32)) -> Result<QuantizeReport> {
    if !out.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        return Err(Error::Input(format!("{}: the output is one GGUF file and its name must end in .gguf", out.display())));
    }
    if out.is_dir() {
        return Err(Error::Input(format!("{}: the output is a directory", out.display())));
    }
    if resolved(src) == resolved(out) {
        return Err(Error::Input(format!("{}: the output is the input; write to another file", out.display())));
    }
    if opts.threads == 0 {
        return Err(Error::Input("threads must be at least 1".into()));
    }
    let source = ModelSource::Path(src.to_path_buf());
    let mut model = crate::load::open(&source)?;
    let gguf_src = is_gguf(src);
    let mut warnings = Vec::new();
    // Quantised matrices in the source.
    let mut quantised: Vec<(GgmlType, usize)> = Vec::new();
    for t in &model.plan.tensors {
        if !matches!(t.storage, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            match quantised.iter_mut().find(|e| e.0 == t.storage) {
                Some(e) => e.1 += 1,
                None => quantised.push((t.storage, 1)),
            }
        }
    }
    if !quantised.is_empty() {
        let list: Vec<String> = quantised.iter().map(|(t, n)| format!("{} x{n}", t.name())).collect();
        let what = format!(
            "{} already holds quantised tensors ({}): requantising them bounds the result's quality by the source's, \
             and it is worse than quantising the original F32/F16/BF16 weights",
            src.display(),
            list.join(", ")
        );
        if !opts.allow_requantize {
            return Err(Error::Input(format!("{what}. Pass --allow-requantize to do it anyway")));
        }
        warnings.push(what);
    }
    let cfg = model.plan.cfg.clone();
    let ft = opts.file_type;
    // What the writer does not carry yet is refused, never dropped: a file without its
    // scaling or with another architecture's row order would load as a different model.
    match &cfg.rope_scaling {
        crate::config::RopeScaling::None | crate::config::RopeScaling::Linear { .. } => {}
        other => {
            return Err(Error::Input(format!(
                "{}: RoPE scaling `{}` is not written by plt quantize yet (only none and linear)",
                src.display(),
                other.describe()
            )))
        }
    }
    if gguf_src {
        let f = GgufFile::read(&mut crate::load::FileSource::open(src)?)?;
        let arch = f.get("general.architecture").map(|v| v.brief()).unwrap_or_default();
        if arch.trim_matches('"') != "llama" {
            return Err(Error::Input(format!(
                "{}: GGUF architecture {arch}: plt quantize writes llama files (requantising other architectures is not supported yet)",
                src.display()
            )));
        }
    }

    // The output tensors, in the source's reading order.
    let mut plan_out: HashMap<WeightId, (GgmlType, Option<GgmlType>)> = HashMap::new();
    let mut decls = Vec::new();
    for t in &model.plan.tensors {
        let (ty, wanted) = tensor_type(ft, t.weight, &cfg, t.cols(), t.shape.len());
        plan_out.insert(t.weight, (ty, wanted));
        decls.push(TensorDecl::new(tensor_name(t.weight), &t.shape, ty));
    }

    // Metadata.
    let mut meta: Vec<(String, Value)>;
    if gguf_src {
        let f = GgufFile::read(&mut crate::load::FileSource::open(src)?)?;
        let skip = |k: &str| k == "general.file_type" || k == "general.quantization_version" || k.starts_with("plt.");
        meta = f.metadata().iter().filter(|(k, _)| !skip(k)).cloned().collect();
        meta.extend(crate::init::gguf::plt_metadata(&cfg));
        if f.get("tokenizer.ggml.model").is_none() {
            warnings.push(format!("{} has no tokenizer: neither has the output", src.display()));
        }
    } else {
        let name = src.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
        meta = crate::init::gguf::model_metadata(&cfg, &name);
        match (&model.plan.tokenizer, opts.no_tokenizer) {
            (_, true) => warnings.push("--no-tokenizer: the output has no tokenizer".into()),
            (None, false) => warnings.push(format!("{} has no tokenizer.json: the output has no tokenizer", src.display())),
            (Some(t), false) => meta.extend(tokenizer::metadata(t, &cfg)?),
        }
    }
    if gguf_src && opts.no_tokenizer {
        meta.retain(|(k, _)| !k.starts_with("tokenizer."));
        warnings.push("--no-tokenizer: the output has no tokenizer".into());
    }
    meta.push(("general.file_type".into(), Value::U32(ft.llama_ftype())));
    meta.push(("general.quantization_version".into(), Value::U32(2)));

    // Write under a temporary name, then rename.
    let tmp = {
        let mut n = out.as_os_str().to_owned();
        n.push(".part");
        PathBuf::from(n)
    };
    let result = (|| -> Result<Vec<TensorReport>> {
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let w = GgufWriter::new(std::io::BufWriter::with_capacity(1 << 20, file), &meta, decls)?;
        let mut sink = QuantSink { w: Some(w), types: plan_out, opts: opts.clone(), cfg: cfg.clone(), values: Vec::new(), raw: Vec::new(), reports: Vec::new(), source: src.display().to_string() };
        model.stream(&mut sink, progress)?;
        let w = sink.w.take().ok_or_else(|| Error::Input("the writer was not finished".into()))?;
        let f = w.finish()?.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        Ok(sink.reports)
    })();
    let tensors = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            // The writer's I/O errors name the output.
            return Err(match e {
                Error::Io { path, source } if path == Path::new("GGUF output") => Error::io(out, source),
                other => other,
            });
        }
    };
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    let bytes = std::fs::metadata(out).map_err(|e| Error::io(out, e))?.len();
    // Fallbacks, grouped.
    let mut fb: Vec<(GgmlType, GgmlType, usize, usize)> = Vec::new();
    for t in &tensors {
        if let Some(w) = t.wanted {
            let cols = *t.shape.last().unwrap_or(&0);
            match fb.iter_mut().find(|e| e.0 == w && e.1 == t.ty && e.2 == cols) {
                Some(e) => e.3 += 1,
                None => fb.push((w, t.ty, cols, 1)),
            }
        }
    }
    for (w, t, cols, n) in fb {
        let block = w.block().map(|b| b.0).unwrap_or(1);
        warnings.push(format!(
            "{n} tensor(s) with rows of {cols} values (not whole {} blocks of {block}) stored as {} instead",
            w.name(),
            t.name()
        ));
    }
    Ok(QuantizeReport { bytes, tensors, warnings })
}

/// Receives the source's tensors, quantises each when complete, and writes it.
struct QuantSink<W: Write> {
    w: Option<GgufWriter<W>>,
    types: HashMap<WeightId, (GgmlType, Option<GgmlType>)>,
    opts: QuantizeOptions,
    cfg: Config,
    /// The tensor being received: decoded values, or raw blocks to copy.
    values: Vec<f32>,
    raw: Vec<u8>,
    reports: Vec<TensorReport>,
    source: String,
}

impl<W: Write> QuantSink<W> {
    fn ty(&self, t: &PlannedTensor) -> (GgmlType, Option<GgmlType>) {
        self.types.get(&t.weight).copied().unwrap_or((GgmlType::F32, None))
    }

    /// Heads of q/k weights and biases (rows are permuted per head), else None.
    fn heads(&self, t: &PlannedTensor) -> Option<usize> {
        use LayerWeight as L;
        match t.weight {
            WeightId::Layer(_, L::QProj | L::QBias) => Some(self.cfg.num_attention_heads),
            WeightId::Layer(_, L::KProj | L::KBias) => Some(self.cfg.num_key_value_heads),
            _ => None,
        }
    }

    fn write(&mut self, t: &PlannedTensor, ty: GgmlType, wanted: Option<GgmlType>, bytes: &[u8]) -> Result<()> {
        let name = tensor_name(t.weight);
        self.w.as_mut().ok_or_else(|| Error::Input("writer closed".into()))?.write_tensor(&name, bytes)?;
        self.reports.push(TensorReport { name, shape: t.shape.clone(), ty, wanted, source: t.storage, bytes: bytes.len() as u64 });
        Ok(())
    }
}

impl<W: Write> Sink for QuantSink<W> {
    fn begin(&mut self, _plan: &LoadPlan) -> Result<()> {
        Ok(())
    }

    fn wants_blocks(&self, t: &PlannedTensor) -> bool {
        // Copied as stored when the output type is the source's.
        self.ty(t).0 == t.storage
    }

    fn blocks(&mut self, t: &PlannedTensor, first_row: usize, raw: &[u8]) -> Result<()> {
        if first_row == 0 {
            self.raw.clear();
        }
        self.raw.extend_from_slice(raw);
        if self.raw.len() as u64 == t.bytes {
            let mut raw = std::mem::take(&mut self.raw);
            if let Some(h) = self.heads(t) {
                permute_rows(&mut raw, (t.bytes / t.rows() as u64) as usize, t.rows() / h);
            }
            let (ty, wanted) = self.ty(t);
            self.write(t, ty, wanted, &raw)?;
            self.raw = raw;
        }
        Ok(())
    }

    fn rows(&mut self, t: &PlannedTensor, first_row: usize, values: &[f32]) -> Result<()> {
        if first_row == 0 {
            self.values.clear();
        }
        self.values.extend_from_slice(values);
        if self.values.len() < t.elems() {
            return Ok(());
        }
        let mut v = std::mem::take(&mut self.values);
        if let Some(h) = self.heads(t) {
            let (row_len, head_rows) = if t.shape.len() < 2 { (1, t.elems() / h) } else { (t.cols(), t.rows() / h) };
            permute_rows(&mut v, row_len, head_rows);
        }
        let (ty, wanted) = self.ty(t);
        let rows = if t.shape.len() < 2 { 1 } else { t.rows() };
        let bytes = quantize_rows(ty, &v, rows, self.opts.threads, self.opts.search)
            .map_err(|e| Error::Input(format!("{}: tensor `{}` ({} as {}): {e}", self.source, t.name, t.storage.name(), ty.name())))?;
        self.write(t, ty, wanted, &bytes)?;
        self.values = v;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_undone_by_the_loader() {
        let x: Vec<u32> = (0..6 * 8 * 3).collect();
        let mut y = x.clone();
        permute_rows(&mut y, 3, 8);
        assert_ne!(x, y);
        crate::gguf::unpermute_rows(&mut y, 3, 8);
        assert_eq!(x, y);
    }

    #[test]
    fn more_bits_follow_llama_cpp() {
        // 30 layers: 0..3, 26..29, and (i - 3) % 3 == 2 between.
        let picked: Vec<usize> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(picked, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }

    #[test]
    fn type_rules() {
        let cfg = Config::from_json(
            serde_json::json!({"vocab_size": 512, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 8,
                "num_attention_heads": 4, "max_position_embeddings": 64})
            .as_object()
            .unwrap(),
        )
        .unwrap();
        let l = |i, w| WeightId::Layer(i, w);
        use FileType as F;
        use GgmlType as G;
        use LayerWeight as L;
        assert_eq!(tensor_type(F::Q4_K_M, l(0, L::QProj), &cfg, 256, 2), (G::Q4_K, None));
        assert_eq!(tensor_type(F::Q4_K_M, l(0, L::VProj), &cfg, 256, 2), (G::Q6_K, None));
        assert_eq!(tensor_type(F::Q4_K_M, l(2, L::VProj), &cfg, 256, 2), (G::Q4_K, None));
        assert_eq!(tensor_type(F::Q4_K_M, l(7, L::DownProj), &cfg, 512, 2), (G::Q6_K, None));
        assert_eq!(tensor_type(F::Q4_K_S, l(3, L::VProj), &cfg, 256, 2), (G::Q5_K, None));
        assert_eq!(tensor_type(F::Q4_K_M, l(0, L::InputLayernorm), &cfg, 256, 1), (G::F32, None));
        assert_eq!(tensor_type(F::Q4_K_M, l(0, L::PltGate), &cfg, 64, 2), (G::F32, None));
        assert_eq!(tensor_type(F::Q4_0, WeightId::LmHead, &cfg, 256, 2), (G::Q6_K, None));
        assert_eq!(tensor_type(F::Q8_0, WeightId::LmHead, &cfg, 256, 2), (G::Q8_0, None));
        // Tied: the embeddings are the output; untied, they take the base type.
        assert_eq!(tensor_type(F::Q4_K_M, WeightId::EmbedTokens, &cfg, 256, 2), (G::Q4_K, None));
        let mut tied = cfg.clone();
        tied.tie_word_embeddings = true;
        assert_eq!(tensor_type(F::Q4_K_M, WeightId::EmbedTokens, &tied, 256, 2), (G::Q6_K, None));
        assert_eq!(tensor_type(F::Q4_K_M, WeightId::EmbedTokens, &tied, 576, 2), (G::Q8_0, None));
        // Fallbacks.
        assert_eq!(tensor_type(F::Q4_K_M, l(2, L::QProj), &cfg, 576, 2), (G::Q5_0, Some(G::Q4_K)));
        assert_eq!(tensor_type(F::Q5_K_S, l(2, L::QProj), &cfg, 576, 2), (G::Q5_1, Some(G::Q5_K)));
        assert_eq!(tensor_type(F::Q6_K, l(2, L::QProj), &cfg, 576, 2), (G::Q8_0, Some(G::Q6_K)));
        assert_eq!(tensor_type(F::Q4_0, l(2, L::QProj), &cfg, 40, 2), (G::F16, Some(G::Q4_0)));
        assert_eq!(FileType::parse("Q4_K"), Some(FileType::Q4_K_M));
        assert_eq!(FileType::parse("q3_k"), None);
    }
}
