//! The load plan: what a model's files hold and where each tensor goes, decided from the headers
//! alone. For every tensor the model needs: its name, storage type in the file, shape, byte
//! size, file and offset, the model weight it is (`WeightId`) and its place on the device
//! (`Target`): the fused buffers the graph reads (q/k/v rows concatenated into `qkv_proj`,
//! gate/up rows interleaved into `gate_up_proj`, the PLT gate's parts in one buffer) and the
//! row un-permutation of GGUF q/k. Printable (`plt info`).

use crate::config::{Config, GateMode};
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::tokenizer::TokenizerInputs;
use crate::format::WeightFormat;
use crate::weights::DType;
use std::collections::HashMap;
use std::fmt;

/// How a tensor's values are stored in its file: a ggml type. F32, F16 and BF16 (the types of
/// safetensors files) are ggml types too, so one storage type covers every format.
pub type Storage = GgmlType;

/// A model weight (PLT-SPEC section 1's tensors, named after the checkpoint's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightId {
    EmbedTokens,
    Norm,
    LmHead,
    Layer(usize, LayerWeight),
}

/// A weight of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerWeight {
    InputLayernorm,
    QProj,
    QBias,
    KProj,
    KBias,
    VProj,
    VBias,
    OProj,
    PostAttentionLayernorm,
    GateProj,
    UpProj,
    DownProj,
    PltGate,
    PltGateBias,
    PltGateNorm,
}

impl WeightId {
    /// The row-major shape the config implies.
    pub fn shape(self, cfg: &Config) -> Vec<usize> {
        use LayerWeight as L;
        let (d, f, v, h) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_attention_heads);
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        match self {
            WeightId::EmbedTokens | WeightId::LmHead => vec![v, d],
            WeightId::Norm => vec![d],
            WeightId::Layer(_, w) => match w {
                L::InputLayernorm | L::PostAttentionLayernorm | L::PltGateNorm => vec![d],
                L::QProj => vec![qd, d],
                L::KProj | L::VProj => vec![kvd, d],
                L::QBias => vec![qd],
                L::KBias | L::VBias => vec![kvd],
                L::OProj => vec![d, qd],
                L::GateProj | L::UpProj => vec![f, d],
                L::DownProj => vec![d, f],
                L::PltGate => vec![h, if cfg.gate_mode == GateMode::Hidden { d } else { cfg.head_dim }],
                L::PltGateBias => vec![h],
            },
        }
    }

    /// Every weight `cfg` implies, in load-check order, and whether it must be present (the
    /// q/k/v biases are optional; `lm_head` is absent when tied; the gate exists only for PLT).
    /// Lazy: a config may claim billions of layers, and the first missing tensor ends the walk.
    pub fn all(cfg: &Config) -> impl Iterator<Item = (WeightId, bool)> {
        use LayerWeight as L;
        let (plt, hidden, tied) = (cfg.is_plt(), cfg.gate_mode == GateMode::Hidden, cfg.tie_word_embeddings);
        let layer = move |i: usize| {
            let gate: &[(L, bool)] = match (plt, hidden) {
                (false, _) => &[],
                (true, false) => &[(L::PltGate, true), (L::PltGateBias, true)],
                (true, true) => &[(L::PltGate, true), (L::PltGateBias, true), (L::PltGateNorm, true)],
            };
            let rest = [
                (L::InputLayernorm, true),
                (L::QProj, true),
                (L::QBias, false),
                (L::KProj, true),
                (L::KBias, false),
                (L::VProj, true),
                (L::VBias, false),
                (L::OProj, true),
                (L::PostAttentionLayernorm, true),
                (L::GateProj, true),
                (L::UpProj, true),
                (L::DownProj, true),
            ];
            gate.iter().copied().chain(rest).map(move |(w, required)| (WeightId::Layer(i, w), required))
        };
        (0..cfg.num_hidden_layers)
            .flat_map(layer)
            .chain([(WeightId::EmbedTokens, true), (WeightId::Norm, true)])
            .chain((!tied).then_some((WeightId::LmHead, true)))
    }
}

/// A buffer on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferId {
    EmbedTokens,
    LmHead,
    Norm,
    Layer(usize, LayerBuffer),
}

/// A buffer of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerBuffer {
    QkvBias,
    PltGate,
    InputLayernorm,
    QkvProj,
    OProj,
    PostAttentionLayernorm,
    GateUpProj,
    DownProj,
}

/// Where a tensor's values go in its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Contiguous, from this element on.
    At(usize),
    /// Row i becomes row 2i + lane (gate: lane 0, up: lane 1): the gate/up pairs the decode
    /// matmul's GLU epilogue reads side by side (shaders/matmul_vec.wgsl).
    Interleaved(usize),
}

/// A tensor's destination on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub buffer: BufferId,
    pub place: Place,
}

impl Target {
    /// The destination of weight `w`.
    pub fn of(w: WeightId, cfg: &Config) -> Target {
        use LayerBuffer as B;
        use LayerWeight as L;
        let (d, qd, kvd, h) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim(), cfg.num_attention_heads);
        let gate_w = if cfg.gate_mode == GateMode::Hidden { h * d } else { h * cfg.head_dim };
        let (buffer, place) = match w {
            WeightId::EmbedTokens => (BufferId::EmbedTokens, Place::At(0)),
            WeightId::LmHead => (BufferId::LmHead, Place::At(0)),
            WeightId::Norm => (BufferId::Norm, Place::At(0)),
            WeightId::Layer(i, w) => {
                let (b, place) = match w {
                    L::InputLayernorm => (B::InputLayernorm, Place::At(0)),
                    L::QProj => (B::QkvProj, Place::At(0)),
                    L::KProj => (B::QkvProj, Place::At(qd * d)),
                    L::VProj => (B::QkvProj, Place::At((qd + kvd) * d)),
                    L::QBias => (B::QkvBias, Place::At(0)),
                    L::KBias => (B::QkvBias, Place::At(qd)),
                    L::VBias => (B::QkvBias, Place::At(qd + kvd)),
                    L::OProj => (B::OProj, Place::At(0)),
                    L::PostAttentionLayernorm => (B::PostAttentionLayernorm, Place::At(0)),
                    L::GateProj => (B::GateUpProj, Place::Interleaved(0)),
                    L::UpProj => (B::GateUpProj, Place::Interleaved(1)),
                    L::DownProj => (B::DownProj, Place::At(0)),
                    L::PltGate => (B::PltGate, Place::At(0)),
                    L::PltGateBias => (B::PltGate, Place::At(gate_w)),
                    L::PltGateNorm => (B::PltGate, Place::At(gate_w + h)),
                };
                (BufferId::Layer(i, b), place)
            }
        };
        Target { buffer, place }
    }
}

/// A device buffer the plan fills.
#[derive(Clone, Debug, PartialEq)]
pub struct BufferPlan {
    pub id: BufferId,
    /// The buffer's label (`layers.3.qkv_proj`), used in errors about limits.
    pub label: String,
    /// Values it holds.
    pub elems: usize,
    /// A matrix, stored in its device format (`LoadPlan::formats`); vectors are always F32.
    pub matrix: bool,
}

impl BufferPlan {
    fn new(id: BufferId, cfg: &Config) -> BufferPlan {
        use LayerBuffer as B;
        let (d, f, v, h) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_attention_heads);
        let qkv = cfg.q_dim() + 2 * cfg.kv_dim();
        let gate_w = if cfg.gate_mode == GateMode::Hidden { h * d + d } else { h * cfg.head_dim };
        let (label, elems, matrix) = match id {
            BufferId::EmbedTokens => ("embed_tokens".to_string(), v * d, true),
            BufferId::LmHead => ("lm_head".to_string(), v * d, true),
            BufferId::Norm => ("norm".to_string(), d, false),
            BufferId::Layer(i, b) => {
                let (name, elems, matrix) = match b {
                    B::QkvBias => ("qkv_bias", qkv, false),
                    B::PltGate => ("plt_gate", gate_w + h, false),
                    B::InputLayernorm => ("input_layernorm", d, false),
                    B::QkvProj => ("qkv_proj", qkv * d, true),
                    B::OProj => ("o_proj", d * cfg.q_dim(), true),
                    B::PostAttentionLayernorm => ("post_attention_layernorm", d, false),
                    B::GateUpProj => ("gate_up_proj", 2 * f * d, true),
                    B::DownProj => ("down_proj", d * f, true),
                };
                (format!("layers.{i}.{name}"), elems, matrix)
            }
        };
        BufferPlan { id, label, elems, matrix }
    }

    /// Bytes on the device with matrices stored as `dtype` (F16, else F32).
    pub fn bytes(&self, dtype: DType) -> u64 {
        let size = if self.matrix && dtype == DType::F16 { 2 } else { 4 };
        (self.elems * size) as u64
    }
}

/// One device buffer of a matrix: a run of its storage rows in one format. Row j of the part
/// computes output column `out0 + j * step` of the matrix product (step 2: one of a gate/up
/// pair stored apart, see `BufferLayout::interleaved`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartPlan {
    /// Its first storage row.
    pub first: usize,
    pub rows: usize,
    pub format: WeightFormat,
    pub out0: usize,
    pub step: usize,
}

impl PartPlan {
    /// Device bytes for rows of `cols` values.
    pub fn bytes(&self, cols: usize) -> u64 {
        (self.rows * self.format.row_bytes(cols)) as u64
    }
}

/// How one plan buffer is stored on the device: its rows (storage order) in parts, each a
/// device buffer of one format and at most one window (the binding limit) of bytes.
///
/// Storage rows: a tensor placed `At(e)` holds rows `e / cols ..`; a gate/up pair of one format
/// is interleaved (gate row i at 2i, up row i at 2i + 1: what the decode matmul's SwiGLU
/// epilogue reads); a pair whose formats differ is stored apart (gate rows, then up rows) and
/// its parts write the interleaved output columns with step 2.
#[derive(Clone, Debug, PartialEq)]
pub struct BufferLayout {
    /// A matrix (else a vector buffer: F32, one part, tensors placed at element offsets).
    pub matrix: bool,
    /// Values per row (a vector buffer: one row).
    pub cols: usize,
    pub interleaved: bool,
    pub parts: Vec<PartPlan>,
}

impl BufferLayout {
    fn vector(elems: usize) -> BufferLayout {
        BufferLayout { matrix: false, cols: elems, interleaved: false, parts: vec![PartPlan { first: 0, rows: 1, format: WeightFormat::F32, out0: 0, step: 1 }] }
    }

    /// The layout of matrix `b` from its tensors and their device formats.
    fn matrix(b: &BufferPlan, tensors: &[&PlannedTensor], formats: &[WeightFormat], window: u64) -> Result<BufferLayout> {
        let cols = tensors.first().map(|t| t.cols()).unwrap_or(1).max(1);
        let rows = b.elems / cols;
        let pair = tensors.iter().any(|t| matches!(t.target.place, Place::Interleaved(_)));
        let uniform = formats.windows(2).all(|w| w[0] == w[1]);
        let interleaved = pair && uniform;
        // Runs of storage rows in one format: (first, rows, format, out0, step).
        let mut runs: Vec<(usize, usize, WeightFormat, usize, usize)> = Vec::new();
        for (t, &f) in tensors.iter().zip(formats) {
            if t.cols() != cols {
                return Err(Error::Input(format!("tensor `{}`: rows of {} values in `{}`, whose rows hold {cols}", t.name, t.cols(), b.label)));
            }
            let run = match t.target.place {
                Place::At(e) => (e / cols, t.rows(), f, e / cols, 1),
                Place::Interleaved(_) if interleaved => (0, rows, f, 0, 1),
                Place::Interleaved(lane) => (lane * t.rows(), t.rows(), f, lane, 2),
            };
            if !runs.contains(&run) {
                runs.push(run);
            }
        }
        runs.sort_by_key(|r| r.0);
        // Neighbouring runs of one format make one part (q/k/v of one format: one dispatch).
        let mut merged: Vec<(usize, usize, WeightFormat, usize, usize)> = Vec::new();
        for r in runs {
            match merged.last_mut() {
                Some(m) if m.2 == r.2 && m.4 == 1 && r.4 == 1 && m.0 + m.1 == r.0 && m.3 + m.1 == r.3 => m.1 += r.1,
                _ => merged.push(r),
            }
        }
        let mut parts = Vec::new();
        for (first, n, format, out0, step) in merged {
            let row = format.row_bytes(cols) as u64;
            // Whole gate/up pairs per part; an even row count keeps f16 parts 4-byte aligned.
            let fit = ((window / 16 * 16) / row.max(1)) as usize / 2 * 2;
            if fit == 0 {
                return Err(Error::Limit { what: format!("a row pair of `{}` ({} bytes)", b.label, 2 * row), limit: "max_storage_buffer_binding_size", needed: 2 * row, max: window });
            }
            let mut at = 0;
            while at < n {
                let k = fit.min(n - at);
                parts.push(PartPlan { first: first + at, rows: k, format, out0: out0 + at * step, step });
                at += k;
            }
        }
        Ok(BufferLayout { matrix: true, cols, interleaved, parts })
    }

    /// The part holding storage row `row` and that row's index in it.
    pub fn locate(&self, row: usize) -> Option<(usize, usize)> {
        self.parts.iter().position(|p| p.first <= row && row < p.first + p.rows).map(|i| (i, row - self.parts[i].first))
    }

    /// The storage row of row `row` of a tensor placed at `place` (`rows`: the tensor's).
    pub fn storage_row(&self, place: Place, rows: usize, row: usize) -> usize {
        match place {
            Place::At(e) => e / self.cols + row,
            Place::Interleaved(lane) if self.interleaved => 2 * row + lane,
            Place::Interleaved(lane) => lane * rows + row,
        }
    }

    /// Every part one format (the formats of all parts, in order, otherwise).
    pub fn formats(&self) -> Vec<WeightFormat> {
        let mut f: Vec<WeightFormat> = self.parts.iter().map(|p| p.format).collect();
        f.dedup();
        f
    }

    /// Device bytes of every part.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.bytes(self.cols)).sum()
    }
}

/// One model file.
#[derive(Clone, Debug, PartialEq)]
pub struct FileInfo {
    pub name: String,
    pub size: u64,
}

/// One tensor to load.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedTensor {
    /// Its name in the file.
    pub name: String,
    pub weight: WeightId,
    pub storage: Storage,
    /// Row-major (GGUF's dimensions reversed).
    pub shape: Vec<usize>,
    /// Index into `LoadPlan::files`.
    pub file: usize,
    /// Absolute byte offset in the file.
    pub offset: u64,
    pub bytes: u64,
    pub target: Target,
    /// GGUF q/k weights and biases: rows are un-permuted per head (`gguf::unpermute_rows`) with
    /// this many heads.
    pub unpermute_heads: Option<usize>,
}

impl PlannedTensor {
    /// Rows: the first dimension (a vector is one row).
    pub fn rows(&self) -> usize {
        if self.shape.len() < 2 {
            1
        } else {
            self.shape[0]
        }
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.elems() / self.rows().max(1)
    }

    pub fn elems(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Which reader made the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `model.safetensors` or the shards of `model.safetensors.index.json`.
    Safetensors,
    Gguf,
    /// `Weights` already in memory, laid out as one F32 file.
    HostWeights,
}

/// Everything the loader decided before reading any tensor data.
#[derive(Clone, Debug)]
pub struct LoadPlan {
    /// Where the model came from (for messages).
    pub source: String,
    pub format: Format,
    pub cfg: Config,
    /// The dtype most of the matrices are stored in; decides `Weights::dtype` and the default
    /// device storage.
    pub stored_dtype: DType,
    pub files: Vec<FileInfo>,
    /// In reading order: by file, then by offset.
    pub tensors: Vec<PlannedTensor>,
    /// The device buffers, in creation order.
    pub buffers: Vec<BufferPlan>,
    /// None when the model has no tokenizer.
    pub tokenizer: Option<TokenizerInputs>,
    /// Lines about the file that are not part of the plan (a GGUF's header and general.* keys).
    pub notes: String,
}

impl LoadPlan {
    /// A plan for `tensors` (any order): sorts them for reading and lists the buffers they fill.
    pub(crate) fn new(source: String, format: Format, cfg: Config, stored_dtype: DType, files: Vec<FileInfo>, mut tensors: Vec<PlannedTensor>) -> LoadPlan {
        tensors.sort_by_key(|t| (t.file, t.offset));
        let mut buffers = Vec::new();
        let used: std::collections::HashSet<BufferId> = tensors.iter().map(|t| t.target.buffer).collect();
        let mut add = |id: BufferId| {
            if used.contains(&id) {
                buffers.push(BufferPlan::new(id, &cfg));
            }
        };
        for i in 0..cfg.num_hidden_layers {
            use LayerBuffer as B;
            for b in [B::QkvBias, B::PltGate, B::InputLayernorm, B::QkvProj, B::OProj, B::PostAttentionLayernorm, B::GateUpProj, B::DownProj] {
                add(BufferId::Layer(i, b));
            }
        }
        for id in [BufferId::EmbedTokens, BufferId::LmHead, BufferId::Norm] {
            add(id);
        }
        LoadPlan { source, format, cfg, stored_dtype, files, tensors, buffers, tokenizer: None, notes: String::new() }
    }

    /// Bytes of tensor data read from the files.
    pub fn file_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes).sum()
    }

    /// (storage type, tensors, bytes), largest first.
    pub fn bytes_by_storage(&self) -> Vec<(String, usize, u64)> {
        let mut by: Vec<(String, usize, u64)> = Vec::new();
        for t in &self.tensors {
            let name = t.storage.name();
            match by.iter_mut().find(|(n, _, _)| *n == name) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += t.bytes;
                }
                None => by.push((name, 1, t.bytes)),
            }
        }
        by.sort_by_key(|e| std::cmp::Reverse(e.2));
        by
    }

    /// The matrices' device storage for a requested dtype: F16, or F32 for anything else
    /// (BF16 included); `None` keeps F16 files in F16.
    pub fn device_dtype(&self, requested: Option<DType>) -> DType {
        match requested.unwrap_or(self.stored_dtype) {
            DType::F16 => DType::F16,
            _ => DType::F32,
        }
    }

    /// The device format of each tensor of a matrix for a requested dtype: with `None`, a
    /// tensor in a block format (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: 32-weight blocks; Q4_K, Q5_K,
    /// Q6_K: 256-weight super-blocks) in rows of whole blocks (`WeightFormat::fits`) keeps it
    /// (the blocks stay quantised on the device); any other (F32/F16/BF16, other ggml types,
    /// rows that are not whole blocks) is dequantised to `device_dtype(None)`. An explicit
    /// dtype dequantises every matrix to it.
    pub fn tensor_format(&self, t: &PlannedTensor, requested: Option<DType>) -> WeightFormat {
        match WeightFormat::of_ggml(t.storage) {
            Some(q) if requested.is_none() && t.shape.len() == 2 && q.fits(t.cols()) => q,
            _ => WeightFormat::float(self.device_dtype(requested)),
        }
    }

    /// How every buffer is laid out on the device for a requested dtype (`tensor_format`), in
    /// parts of at most `window` bytes (`BufferLayout`): the fused matrices keep each tensor's
    /// format (one part, and so one dispatch, per format: a q/k/v or gate/up whose parts
    /// differ is never requantised), and a matrix past the window (the adapter's
    /// `max_storage_buffer_binding_size`) is split by rows. Vectors are F32, one part.
    pub fn layouts(&self, requested: Option<DType>, window: u64) -> Result<HashMap<BufferId, BufferLayout>> {
        let mut out = HashMap::new();
        for b in &self.buffers {
            let parts: Vec<&PlannedTensor> = self.tensors.iter().filter(|t| t.target.buffer == b.id).collect();
            let layout = if !b.matrix {
                BufferLayout::vector(b.elems)
            } else {
                let formats: Vec<WeightFormat> = parts.iter().map(|t| self.tensor_format(t, requested)).collect();
                BufferLayout::matrix(b, &parts, &formats, window)?
            };
            out.insert(b.id, layout);
        }
        Ok(out)
    }

    /// (format, parts, device bytes) of the buffers laid out by `layouts(requested, ..)`,
    /// largest first.
    pub fn device_bytes_by_format(&self, requested: Option<DType>) -> Vec<(WeightFormat, usize, u64)> {
        let mut by: Vec<(WeightFormat, usize, u64)> = Vec::new();
        let Ok(layouts) = self.layouts(requested, u64::MAX) else { return by };
        for b in &self.buffers {
            for p in &layouts[&b.id].parts {
                let bytes = p.bytes(layouts[&b.id].cols);
                match by.iter_mut().find(|e| e.0 == p.format) {
                    Some(e) => {
                        e.1 += 1;
                        e.2 += bytes;
                    }
                    None => by.push((p.format, 1, bytes)),
                }
            }
        }
        by.sort_by_key(|e| std::cmp::Reverse(e.2));
        by
    }

    /// Bytes of all device buffers with matrices stored as `dtype`.
    pub fn device_bytes(&self, dtype: DType) -> u64 {
        self.buffers.iter().map(|b| b.bytes(dtype)).sum()
    }

    /// The largest device buffer (what must fit the adapter's binding limit).
    pub fn largest_buffer(&self) -> Option<&BufferPlan> {
        self.buffers.iter().max_by_key(|b| b.bytes(DType::F32))
    }

    /// The plan's totals, as `plt info` prints them.
    pub fn summary_json(&self) -> serde_json::Value {
        let largest = |dtype| {
            self.buffers.iter().max_by_key(|b| b.bytes(dtype)).map(|b| serde_json::json!({"buffer": b.label, "bytes": b.bytes(dtype)}))
        };
        serde_json::json!({
            "format": format!("{:?}", self.format),
            "files": self.files.iter().map(|f| serde_json::json!({"name": f.name, "bytes": f.size})).collect::<Vec<_>>(),
            "tensors": self.tensors.len(),
            "tensor_bytes": self.file_bytes(),
            "bytes_by_storage": self.bytes_by_storage().iter().map(|(n, c, b)| (n.clone(), serde_json::json!({"tensors": c, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
            "device_buffers": self.buffers.len(),
            "device_bytes_f32": self.device_bytes(DType::F32),
            "device_bytes_f16": self.device_bytes(DType::F16),
            "largest_buffer_f32": largest(DType::F32),
            "largest_buffer_f16": largest(DType::F16),
            "device_bytes_resident": self.device_bytes_by_format(None).iter().map(|(f, c, b)| (f.name().to_string(), serde_json::json!({"buffers": c, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
        })
    }

    /// The header lines of the printed plan: source, sizes and totals.
    pub fn summary(&self) -> String {
        let c = &self.cfg;
        let mut s = format!("{} ({:?}, {} file(s), {} bytes)\n", self.source, self.format, self.files.len(), self.files.iter().map(|f| f.size).sum::<u64>());
        s += &format!(
            "  model: N={} D={} F={} H={} Hkv={} Dh={} V={} L={} tied={} stored {}\n",
            c.num_hidden_layers,
            c.hidden_size,
            c.intermediate_size,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
            c.vocab_size,
            c.num_loops,
            c.tie_word_embeddings,
            self.stored_dtype.name()
        );
        let by: Vec<String> = self.bytes_by_storage().iter().map(|(n, c, b)| format!("{n} {b} bytes ({c})")).collect();
        s += &format!("  tensors: {}, {} bytes: {}\n", self.tensors.len(), self.file_bytes(), by.join(", "));
        s += &format!(
            "  device: {} buffers, {} bytes with f32 matrices, {} with f16; largest `{}`\n",
            self.buffers.len(),
            self.device_bytes(DType::F32),
            self.device_bytes(DType::F16),
            self.largest_buffer().map(|b| b.label.as_str()).unwrap_or("-")
        );
        let by: Vec<String> = self.device_bytes_by_format(None).iter().map(|(f, c, b)| format!("{} {b} bytes ({c})", f.name())).collect();
        s += &format!("  device by default (quantised blocks kept): {}\n", by.join(", "));
        s += &format!("  tokenizer: {}\n", if self.tokenizer.is_some() { "yes" } else { "none" });
        s
    }
}

impl fmt::Display for LoadPlan {
    /// The summary, then one line per tensor: name, storage, shape, bytes, file and offset, and
    /// its destination.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())?;
        f.write_str(&self.notes)?;
        for t in &self.tensors {
            let label = self.buffers.iter().find(|b| b.id == t.target.buffer).map(|b| b.label.as_str()).unwrap_or("?");
            let place = match t.target.place {
                Place::At(0) => String::new(),
                Place::At(e) => format!(" at {e}"),
                Place::Interleaved(lane) => format!(" rows 2i+{lane}"),
            };
            let unperm = t.unpermute_heads.map(|h| format!(", un-permuted in {h} heads")).unwrap_or_default();
            writeln!(
                f,
                "  {:<48} {:>5} {:<14} {:>11} {}@{} -> {label}{place}{unperm}",
                t.name,
                t.storage.name(),
                format!("{:?}", t.shape),
                t.bytes,
                self.files.get(t.file).map(|x| x.name.as_str()).unwrap_or("?"),
                t.offset
            )?;
        }
        Ok(())
    }
}

/// A tensor as a file's header describes it, checked by the format's own rules.
pub(crate) struct Found {
    pub storage: Storage,
    pub shape: Vec<usize>,
    pub file: usize,
    pub offset: u64,
    pub bytes: u64,
}

/// The tensors `cfg` needs, found in a file's header: `name` gives each weight's name in the
/// format, `find(name, expected_shape)` looks it up and checks it (`None`: absent). A missing
/// required tensor is an error naming it and `source` (the model). With `unpermute_qk`, q/k
/// rows are un-permuted (GGUF).
pub(crate) fn plan_tensors(
    source: &str,
    cfg: &Config,
    name: &dyn Fn(WeightId) -> String,
    find: &mut dyn FnMut(&str, &[usize]) -> Result<Option<Found>>,
    unpermute_qk: bool,
) -> Result<Vec<PlannedTensor>> {
    use LayerWeight as L;
    let mut out = Vec::new();
    for (weight, required) in WeightId::all(cfg) {
        let name = name(weight);
        let shape = weight.shape(cfg);
        let Some(found) = find(&name, &shape)? else {
            if required {
                return Err(Error::MissingTensor { model: source.to_string(), name });
            }
            continue;
        };
        let unpermute_heads = match weight {
            WeightId::Layer(_, L::QProj | L::QBias) if unpermute_qk => Some(cfg.num_attention_heads),
            WeightId::Layer(_, L::KProj | L::KBias) if unpermute_qk => Some(cfg.num_key_value_heads),
            _ => None,
        };
        out.push(PlannedTensor {
            name,
            weight,
            storage: found.storage,
            shape: found.shape,
            file: found.file,
            offset: found.offset,
            bytes: found.bytes,
            target: Target::of(weight, cfg),
            unpermute_heads,
        });
    }
    Ok(out)
}
