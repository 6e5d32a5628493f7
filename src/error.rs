//! The crate's one error type. Every variant names what failed: the field, tensor, shader or limit.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot access {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("config.json: {0}")]
    Json(String),

    /// A config field with a wrong type or an impossible value.
    #[error("config.json: field `{field}`: {msg}")]
    Config { field: String, msg: String },

    #[error("{file}: {msg}")]
    Safetensors { file: String, msg: String },

    /// `model`: the model (its directory, GGUF file or name), since no file has the tensor.
    #[error("{model}: tensor `{name}` is missing from the checkpoint")]
    MissingTensor { model: String, name: String },

    /// `file`: the file that holds the tensor.
    #[error("{file}: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    TensorShape { file: String, name: String, expected: Vec<usize>, got: Vec<usize> },

    #[error("{file}: tensor `{name}` has dtype {dtype}, expected one of F32, F16, BF16")]
    TensorDtype { file: String, name: String, dtype: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("no GPU adapter found ({0}). On Linux without a GPU, install Mesa's software Vulkan driver: `apt-get install -y mesa-vulkan-drivers`; or pass --cpu to use the (slow) CPU reference")]
    NoAdapter(String),

    #[error("GPU device request failed: {0}")]
    Device(String),

    /// A shader failed to parse or validate (names the shader and entry point).
    #[error("shader `{shader}` ({entry}): {msg}")]
    Shader { shader: String, entry: String, msg: String },

    /// A buffer or dispatch would exceed an adapter limit.
    #[error("{what} needs {needed} but the adapter's limit `{limit}` is {max}")]
    Limit { what: String, limit: &'static str, needed: u64, max: u64 },

    #[error("GPU error: {0}")]
    Gpu(String),

    /// The model computed a NaN or an infinity from finite inputs (names the call, the
    /// sequence, the position and the first bad logit).
    #[error("{0}")]
    NonFinite(String),

    /// Bad arguments from a caller (token ids out of range, prompt too long, ...).
    #[error("{0}")]
    Input(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub(crate) fn config(field: &str, msg: impl Into<String>) -> Self {
        Error::Config { field: field.to_string(), msg: msg.into() }
    }

    /// A config error named by the command-line flag that set its field (`flags`: pairs of
    /// config.json field and flag), as `--flag: ...`; any other error as it is.
    pub fn named_by_flag(self, flags: &[(&str, &str)]) -> Self {
        match self {
            Error::Config { field, msg } => match flags.iter().find(|(f, _)| *f == field) {
                Some((_, flag)) => Error::Input(format!("{flag}: {msg}")),
                None => Error::Config { field, msg },
            },
            e => e,
        }
    }

    /// A tokenizer error that names the file (or metadata) it came from: `tokenizer: FILE: ...`;
    /// any other error as it is.
    pub fn in_file(self, file: &str) -> Self {
        match self {
            Error::Tokenizer(m) => Error::Tokenizer(format!("{file}: {m}")),
            e => e,
        }
    }
}

/// `s` safe to print to a terminal: control characters (escape sequences, carriage returns,
/// line breaks) and the bidirectional-text controls that could reorder what is shown are
/// written as `\u{..}` escapes; everything else is kept. Errors and file contents (tensor names,
/// metadata, templates) pass through this before the CLI prints them.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}');
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(s.chars().map(|c| if bad(c) { format!("\\u{{{:x}}}", c as u32) } else { c.to_string() }).collect())
}
