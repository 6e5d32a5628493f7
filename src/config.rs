//! `config.json` → a validated model configuration (PLT-SPEC section 1).
//!
//! Parsed field by field from a JSON value, so that a wrong type or an impossible value is an
//! error naming the field. Unknown fields are ignored.

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// How loops l >= 1 compute their per-head gate (PLT-SPEC section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateMode {
    /// `g_h = sigmoid(dot(q_h, w[h]) + b[h])`, `q_h` after RoPE; `plt_gate.weight` is [H, Dh].
    Query,
    /// `g = sigmoid(W · RMSNorm(h_in; gate_norm) + b)`; `plt_gate.weight` is [H, D].
    Hidden,
}

/// How the loops are wired (PLT-SPEC sections 3 and 6): what the weights were trained as.
/// In config.json this is `plt_loop_mode`, `"parallel"` (PLT) or `"vanilla"`. How a decode step
/// of a PLT model is scheduled on the device is a separate choice (`model::Schedule`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Looping {
    /// PLT: cross-loop shift, shared loop-0 KV, gated sliding-window attention.
    Plt,
    /// The looped baseline: loop l takes loop l-1's output; every loop has its own full KV cache.
    Vanilla,
}

/// The most loops per token a config may ask for (`plt_num_loops`).
pub const MAX_LOOPS: usize = 64;

/// A validated `config.json`. Symbols in comments follow PLT-SPEC.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub vocab_size: usize,              // V
    pub hidden_size: usize,             // D
    pub intermediate_size: usize,       // F
    pub num_hidden_layers: usize,       // N
    pub num_attention_heads: usize,     // H
    pub num_key_value_heads: usize,     // Hkv
    pub head_dim: usize,                // Dh
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    /// How the RoPE frequencies are scaled (`rope_scaling`); `RopeScaling::None` for plain RoPE.
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub num_loops: usize,               // L (`plt_num_loops`)
    /// `left` of `plt_window_size`: the local window of token t is positions t-left ..= t.
    pub window_left: usize,
    pub normalize_per_loop: bool,
    pub emb_scale: f32,                 // a
    pub hidden_scale: f32,              // b
    pub gate_mode: GateMode,
    pub looping: Looping,
}

/// RoPE frequency scaling (config.json `rope_scaling`, GGUF `rope_freqs.weight`). It changes
/// only the inverse frequencies, so every backend takes them from `Config::rope_inv_freq`.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE: `inv_freq[j] = theta^(-2j/Dh)`.
    None,
    /// `linear`: positions divided by `factor` (every frequency divided by it).
    Linear { factor: f32 },
    /// Llama 3's `llama3` type: long wavelengths divided by `factor`, short ones kept, and a
    /// smooth blend between `original_max_position_embeddings / low_freq_factor` and
    /// `original_max_position_embeddings / high_freq_factor`.
    Llama3 { factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_max_position_embeddings: usize },
    /// Per-frequency divisors, [Dh/2] (llama.cpp's `rope_freqs.weight`, how GGUF files store
    /// Llama 3 scaling): `inv_freq[j] = theta^(-2j/Dh) / factors[j]`.
    FreqFactors(Vec<f32>),
}

impl RopeScaling {
    /// A short description (`none`, `linear x4`, `llama3 x32`, `per-frequency divisors`).
    pub fn describe(&self) -> String {
        match self {
            RopeScaling::None => "none".into(),
            RopeScaling::Linear { factor } => format!("linear x{factor}"),
            RopeScaling::Llama3 { factor, .. } => format!("llama3 x{factor}"),
            RopeScaling::FreqFactors(d) => {
                format!("per-frequency divisors {:.3}..{:.3}", d.iter().copied().fold(f32::INFINITY, f32::min), d.iter().copied().fold(0.0, f32::max))
            }
        }
    }

    /// The divisor of each plain inverse frequency `inv_freq` (Dh/2 of them, in order).
    pub fn apply(&self, inv_freq: &mut [f64]) {
        match self {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => inv_freq.iter_mut().for_each(|f| *f /= *factor as f64),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                let (factor, low, high) = (*factor as f64, *low_freq_factor as f64, *high_freq_factor as f64);
                let old = *original_max_position_embeddings as f64;
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f64::consts::PI / *f;
                    if wavelen < high_wavelen {
                        continue;
                    }
                    if wavelen > low_wavelen {
                        *f /= factor;
                    } else {
                        let smooth = (old / wavelen - low) / (high - low);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
            RopeScaling::FreqFactors(d) => inv_freq.iter_mut().zip(d).for_each(|(f, &d)| *f /= d as f64),
        }
    }

    /// Checks the parameters (positive, finite; Llama 3's high factor above its low one;
    /// `head_dim / 2` frequency factors). The error names `field`.
    pub fn validate(&self, head_dim: usize, field: &str) -> Result<()> {
        let positive = |name: &str, v: f32| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(Error::config(field, format!("{name} = {v} must be positive and finite")))
            }
        };
        match self {
            RopeScaling::None => Ok(()),
            RopeScaling::Linear { factor } => positive("factor", *factor),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                positive("factor", *factor)?;
                positive("low_freq_factor", *low_freq_factor)?;
                positive("high_freq_factor", *high_freq_factor)?;
                if high_freq_factor <= low_freq_factor {
                    return Err(Error::config(
                        field,
                        format!("high_freq_factor ({high_freq_factor}) must be greater than low_freq_factor ({low_freq_factor})"),
                    ));
                }
                if *original_max_position_embeddings == 0 {
                    return Err(Error::config(field, "original_max_position_embeddings must be at least 1"));
                }
                Ok(())
            }
            RopeScaling::FreqFactors(d) => {
                if d.len() != head_dim / 2 {
                    return Err(Error::config(field, format!("{} frequency factors for a head size of {head_dim} (expected {})", d.len(), head_dim / 2)));
                }
                match d.iter().position(|&v| !(v > 0.0 && v.is_finite())) {
                    Some(j) => Err(Error::config(field, format!("frequency factor {j} = {} must be positive and finite", d[j]))),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The RoPE inverse frequencies of a head of `head_dim` values under base `theta` and
/// `scaling`, in f64: `theta^(-2j/Dh)`, then scaled. The one formula the reference, the CPU
/// backend and the device's angle table use.
pub fn rope_inv_freq(theta: f32, head_dim: usize, scaling: &RopeScaling) -> Vec<f64> {
    let mut f: Vec<f64> = (0..head_dim / 2).map(|j| (theta as f64).powf(-2.0 * j as f64 / head_dim as f64)).collect();
    scaling.apply(&mut f);
    f
}

/// The sizes every model states (the required fields of config.json).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub vocab_size: usize,              // V
    pub hidden_size: usize,             // D
    pub intermediate_size: usize,       // F
    pub num_hidden_layers: usize,       // N
    pub num_attention_heads: usize,     // H
    pub max_position_embeddings: usize,
}

/// The `model_type` of PLT checkpoints (LoopCoder-V2).
pub const PLT_MODEL_TYPE: &str = "iquestpltcoder";
/// `plt_num_loops` when a PLT checkpoint's config.json has none (its config class's default).
pub const PLT_CHECKPOINT_LOOPS: usize = 2;

/// `rms_norm_eps` when config.json has none.
pub const DEFAULT_RMS_NORM_EPS: f32 = 1e-5;
/// `rope_theta` when config.json has none.
pub const DEFAULT_ROPE_THETA: f32 = 10000.0;

impl Config {
    /// A config of the sizes `d` with PLT-SPEC section 1's default for every other field:
    /// Hkv = H, Dh = D / H, eps 1e-5, theta 10000, untied, no special tokens, L = 1, window
    /// [64, 0], per-loop norm on, a = b = 1, query gate, PLT looping. Every reader (config.json,
    /// GGUF metadata, `plt init`) starts here and sets what it reads; none of them is validated
    /// yet (`validate`).
    pub fn with_defaults(d: Dims) -> Config {
        Config {
            vocab_size: d.vocab_size,
            hidden_size: d.hidden_size,
            intermediate_size: d.intermediate_size,
            num_hidden_layers: d.num_hidden_layers,
            num_attention_heads: d.num_attention_heads,
            num_key_value_heads: d.num_attention_heads,
            head_dim: d.hidden_size.checked_div(d.num_attention_heads).unwrap_or(0),
            rms_norm_eps: DEFAULT_RMS_NORM_EPS,
            rope_theta: DEFAULT_ROPE_THETA,
            rope_scaling: RopeScaling::None,
            max_position_embeddings: d.max_position_embeddings,
            tie_word_embeddings: false,
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            num_loops: 1,
            window_left: 64,
            normalize_per_loop: true,
            emb_scale: 1.0,
            hidden_scale: 1.0,
            gate_mode: GateMode::Query,
            looping: Looping::Plt,
        }
    }

    pub fn from_file(path: &Path) -> Result<Config> {
        let bytes = crate::load::source::read_bounded(path, crate::load::source::MAX_CONFIG_BYTES)?;
        let text = String::from_utf8(bytes).map_err(|_| Error::Input(format!("{}: not UTF-8 text", path.display())))?;
        Config::from_json_str(&text)
    }

    pub fn from_json_str(text: &str) -> Result<Config> {
        let v: Value = serde_json::from_str(text).map_err(|e| Error::Json(format!("not valid JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| Error::Json("the top level is not a JSON object".into()))?;
        Config::from_json(obj)
    }

    /// The config of a `config.json` object; the warnings of `from_json_with_warnings` go to
    /// the log (`log::warn!`).
    pub fn from_json(o: &Map<String, Value>) -> Result<Config> {
        let (c, warnings) = Config::from_json_with_warnings(o)?;
        for w in warnings {
            log::warn!("config.json: {w}");
        }
        Ok(c)
    }

    /// Like `from_json`, and also returns the warnings: one for each PLT field that a PLT
    /// checkpoint (`model_type` `iquestpltcoder`) omits, naming the default taken (PLT-SPEC
    /// section 1). Other model types take the defaults silently.
    pub fn from_json_with_warnings(o: &Map<String, Value>) -> Result<(Config, Vec<String>)> {
        let plt_checkpoint = match field(o, "model_type") {
            None => false,
            Some(Value::String(s)) => s == PLT_MODEL_TYPE,
            Some(v) => return Err(Error::config("model_type", format!("expected a string, got {v}"))),
        };
        let vocab_size = req_usize(o, "vocab_size")?;
        let hidden_size = req_usize(o, "hidden_size")?;
        let intermediate_size = req_usize(o, "intermediate_size")?;
        let num_hidden_layers = req_usize(o, "num_hidden_layers")?;
        let num_attention_heads = req_usize(o, "num_attention_heads")?;
        // Checked here, before the divisions below (0 with an explicit num_key_value_heads and no
        // head_dim would divide by zero).
        if num_attention_heads == 0 {
            return Err(Error::config("num_attention_heads", "must be at least 1"));
        }
        let num_key_value_heads = opt_usize(o, "num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(Error::config(
                "num_key_value_heads",
                format!("{num_key_value_heads} must be positive and divide num_attention_heads ({num_attention_heads})"),
            ));
        }
        let head_dim = match opt_usize(o, "head_dim")? {
            Some(d) => d,
            None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(Error::config(
                        "head_dim",
                        format!("absent, and hidden_size ({hidden_size}) is not divisible by num_attention_heads ({num_attention_heads})"),
                    ));
                }
                hidden_size / num_attention_heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(Error::config("head_dim", format!("{head_dim} must be even (RoPE rotates half-pairs)")));
        }
        let rms_norm_eps = opt_f32(o, "rms_norm_eps")?.unwrap_or(DEFAULT_RMS_NORM_EPS);
        if !(rms_norm_eps > 0.0) {
            return Err(Error::config("rms_norm_eps", format!("{rms_norm_eps} must be positive")));
        }
        let (rope_theta, rope_scaling) = rope(o)?;
        let rope_theta = rope_theta.unwrap_or(DEFAULT_ROPE_THETA);
        if !(rope_theta > 0.0) {
            return Err(Error::config("rope_theta", format!("{rope_theta} must be positive")));
        }
        let max_position_embeddings = req_usize(o, "max_position_embeddings")?;
        let mut c = Config::with_defaults(Dims {
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            max_position_embeddings,
        });
        c.num_key_value_heads = num_key_value_heads;
        c.head_dim = head_dim;
        c.rms_norm_eps = rms_norm_eps;
        c.rope_theta = rope_theta;
        c.rope_scaling = rope_scaling;
        c.tie_word_embeddings = opt_bool(o, "tie_word_embeddings")?.unwrap_or(c.tie_word_embeddings);
        c.bos_token_id = opt_token(o, "bos_token_id", vocab_size)?;
        c.eos_token_ids = match o.get("eos_token_id") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| token_value(x, "eos_token_id", vocab_size))
                .collect::<Result<Vec<_>>>()?,
            Some(x) => vec![token_value(x, "eos_token_id", vocab_size)?],
        };
        if plt_checkpoint {
            c.num_loops = PLT_CHECKPOINT_LOOPS;
        }
        c.num_loops = opt_usize(o, "plt_num_loops")?.unwrap_or(c.num_loops);
        c.window_left = match o.get("plt_window_size") {
            None | Some(Value::Null) => c.window_left,
            Some(Value::Array(a)) if a.len() == 2 => {
                // At most 2^32-1 like every other size (left + 1 ring slots must not overflow).
                let left = a[0].as_u64().filter(|&n| n <= u32::MAX as u64).ok_or_else(|| {
                    Error::config("plt_window_size", format!("left must be a non-negative integer below 2^32, got {}", a[0]))
                })?;
                if a[1].as_u64() != Some(0) {
                    return Err(Error::config("plt_window_size", format!("right must be 0, got {}", a[1])));
                }
                left as usize
            }
            Some(x) => {
                return Err(Error::config("plt_window_size", format!("expected [left, 0], got {x}")));
            }
        };
        c.normalize_per_loop = opt_bool(o, "plt_normalize_per_loop")?.unwrap_or(c.normalize_per_loop);
        c.emb_scale = opt_f32(o, "plt_emb_scale")?.unwrap_or(c.emb_scale);
        c.hidden_scale = opt_f32(o, "plt_hidden_scale")?.unwrap_or(c.hidden_scale);
        if let Some(hidden) = opt_bool(o, "plt_gate_use_hidden_states")? {
            c.gate_mode = if hidden { GateMode::Hidden } else { GateMode::Query };
        }
        c.looping = match o.get("plt_loop_mode") {
            None | Some(Value::Null) => c.looping,
            Some(Value::String(s)) if s == "parallel" => Looping::Plt,
            Some(Value::String(s)) if s == "vanilla" => Looping::Vanilla,
            Some(x) => {
                return Err(Error::config("plt_loop_mode", format!("expected \"parallel\" or \"vanilla\", got {x}")));
            }
        };
        c.validate()?;
        let mut warnings = Vec::new();
        if plt_checkpoint {
            // A null scale states 1.0; a null loop count or gate mode states nothing.
            let omitted = |name: &str, null_is_a_value: bool| match o.get(name) {
                None => true,
                Some(Value::Null) => !null_is_a_value,
                Some(_) => false,
            };
            let gate = if c.gate_mode == GateMode::Hidden { "true (hidden-state gate)" } else { "false (query gate)" };
            for (name, null_is_a_value, default) in [
                ("plt_num_loops", false, c.num_loops.to_string()),
                ("plt_emb_scale", true, c.emb_scale.to_string()),
                ("plt_hidden_scale", true, c.hidden_scale.to_string()),
                ("plt_gate_use_hidden_states", false, gate.to_string()),
            ] {
                if omitted(name, null_is_a_value) {
                    warnings.push(format!("model_type {PLT_MODEL_TYPE} without `{name}`: taking the default {default}"));
                }
            }
        }
        Ok((c, warnings))
    }

    /// Checks the rules that involve no parsing; also used for configs built in code.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(Error::config(field, "must be at least 1"));
            }
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(Error::config(
                "num_key_value_heads",
                format!("{} does not divide num_attention_heads ({})", self.num_key_value_heads, self.num_attention_heads),
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(Error::config("head_dim", format!("{} must be even", self.head_dim)));
        }
        // Tensor shapes multiply these; keep every product far from overflowing usize.
        if self.num_attention_heads.checked_mul(self.head_dim).is_none_or(|q| q > u32::MAX as usize) {
            return Err(Error::config(
                "head_dim",
                format!("{} heads of {} is more than 2^32 query values", self.num_attention_heads, self.head_dim),
            ));
        }
        if self.num_loops < 1 {
            return Err(Error::config("plt_num_loops", "must be at least 1"));
        }
        // L is not fixed by the checkpoint (every loop reuses the same tensors), so a config
        // could ask for billions of loops per token: cap it far above any trained model.
        if self.num_loops > MAX_LOOPS {
            return Err(Error::config("plt_num_loops", format!("{} is more than the supported {MAX_LOOPS}", self.num_loops)));
        }
        if self.vocab_size > u32::MAX as usize / 2 {
            return Err(Error::config("vocab_size", format!("{} is more than the supported {}", self.vocab_size, u32::MAX / 2)));
        }
        for (field, v) in [("plt_emb_scale", self.emb_scale), ("plt_hidden_scale", self.hidden_scale)] {
            if !v.is_finite() {
                return Err(Error::config(field, format!("{v} is not finite")));
            }
        }
        // The checks `from_json` makes, so that a config built in code (`plt init`) is one the
        // loader accepts (JSON cannot hold a non-finite number: it would be written as null).
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps.is_finite()) {
            return Err(Error::config("rms_norm_eps", format!("{} must be positive and finite", self.rms_norm_eps)));
        }
        if !(self.rope_theta > 0.0 && self.rope_theta.is_finite()) {
            return Err(Error::config("rope_theta", format!("{} must be positive and finite", self.rope_theta)));
        }
        self.rope_scaling.validate(self.head_dim, "rope_scaling")?;
        if self.window_left > u32::MAX as usize {
            return Err(Error::config("plt_window_size", format!("left must be a non-negative integer below 2^32, got {}", self.window_left)));
        }
        Ok(())
    }

    /// The RoPE inverse frequencies, [Dh/2] (`rope_inv_freq`).
    pub fn rope_inv_freq(&self) -> Vec<f64> {
        rope_inv_freq(self.rope_theta, self.head_dim, &self.rope_scaling)
    }

    /// Symbols used throughout: query/kv widths.
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
    /// Slots of one local ring buffer: the window covers left+1 positions.
    pub fn window_slots(&self) -> usize {
        self.window_left + 1
    }
    /// True when loops l >= 1 have gates, rings and the cross-loop shift.
    pub fn is_plt(&self) -> bool {
        self.num_loops > 1 && self.looping == Looping::Plt
    }

    /// KV-cache bytes for one sequence of `t` tokens with element size `elem` (PLT-SPEC section 4).
    /// Saturates at `usize::MAX` for sizes no machine can hold (hostile configs).
    pub fn kv_bytes(&self, t: usize, elem: usize) -> usize {
        let per_pos = (2 * self.num_hidden_layers).saturating_mul(self.kv_dim()).saturating_mul(elem);
        let l = self.num_loops;
        let positions = if l == 1 {
            t
        } else {
            match self.looping {
                Looping::Plt => t.saturating_add((l - 1).saturating_mul(self.window_slots())),
                Looping::Vanilla => l.saturating_mul(t),
            }
        };
        per_pos.saturating_mul(positions)
    }

    /// Parameter count of the weights this config implies.
    pub fn num_params(&self) -> usize {
        let (d, f, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let (qd, kvd, h) = (self.q_dim(), self.kv_dim(), self.num_attention_heads);
        let gate = if self.num_loops > 1 && self.looping == Looping::Plt {
            match self.gate_mode {
                GateMode::Query => h * self.head_dim + h,
                GateMode::Hidden => h * d + h + d,
            }
        } else {
            0
        };
        let layer = 2 * d + qd * d + 2 * kvd * d + d * qd + 3 * f * d + gate;
        v * d + self.num_hidden_layers * layer + d + if self.tie_word_embeddings { 0 } else { v * d }
    }

    /// The config as Hugging Face style JSON (what `plt init` writes).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("model_type".into(), "iquestpltcoder".into());
        m.insert("vocab_size".into(), self.vocab_size.into());
        m.insert("hidden_size".into(), self.hidden_size.into());
        m.insert("intermediate_size".into(), self.intermediate_size.into());
        m.insert("num_hidden_layers".into(), self.num_hidden_layers.into());
        m.insert("num_attention_heads".into(), self.num_attention_heads.into());
        m.insert("num_key_value_heads".into(), self.num_key_value_heads.into());
        m.insert("head_dim".into(), self.head_dim.into());
        m.insert("rms_norm_eps".into(), (self.rms_norm_eps as f64).into());
        m.insert("rope_theta".into(), (self.rope_theta as f64).into());
        match &self.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => {
                m.insert("rope_scaling".into(), serde_json::json!({"rope_type": "linear", "factor": *factor as f64}));
            }
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                m.insert(
                    "rope_scaling".into(),
                    serde_json::json!({"rope_type": "llama3", "factor": *factor as f64, "low_freq_factor": *low_freq_factor as f64,
                        "high_freq_factor": *high_freq_factor as f64, "original_max_position_embeddings": original_max_position_embeddings}),
                );
            }
            RopeScaling::FreqFactors(d) => {
                // This runtime's own type (llama.cpp's per-frequency divisors have no Hugging Face name).
                let d: Vec<f64> = d.iter().map(|&v| v as f64).collect();
                m.insert("rope_scaling".into(), serde_json::json!({"rope_type": "plt_freq_factors", "freq_factors": d}));
            }
        }
        m.insert("max_position_embeddings".into(), self.max_position_embeddings.into());
        m.insert("tie_word_embeddings".into(), self.tie_word_embeddings.into());
        if let Some(b) = self.bos_token_id {
            m.insert("bos_token_id".into(), b.into());
        }
        match self.eos_token_ids.as_slice() {
            [] => {}
            [e] => {
                m.insert("eos_token_id".into(), (*e).into());
            }
            es => {
                m.insert("eos_token_id".into(), es.to_vec().into());
            }
        }
        m.insert("plt_num_loops".into(), self.num_loops.into());
        m.insert("plt_window_size".into(), vec![self.window_left, 0].into());
        m.insert("plt_normalize_per_loop".into(), self.normalize_per_loop.into());
        m.insert("plt_emb_scale".into(), (self.emb_scale as f64).into());
        m.insert("plt_hidden_scale".into(), (self.hidden_scale as f64).into());
        m.insert("plt_gate_use_hidden_states".into(), (self.gate_mode == GateMode::Hidden).into());
        m.insert(
            "plt_loop_mode".into(),
            match self.looping {
                Looping::Plt => "parallel",
                Looping::Vanilla => "vanilla",
            }
            .into(),
        );
        Value::Object(m)
    }
}

/// The RoPE base and scaling (PLT-SPEC section 1): `rope_scaling`, or `rope_parameters` with a
/// scaling type, is read when its type is implemented (`linear`, `llama3`; `default` is no
/// scaling) and refused by name otherwise (ignoring a scaling would change every number).
/// `rope_theta`, or `rope_parameters.rope_theta` when it is absent; `None` when neither states it.
fn rope(o: &Map<String, Value>) -> Result<(Option<f32>, RopeScaling)> {
    let top = opt_f32(o, "rope_theta")?;
    let mut scaling = RopeScaling::None;
    if let Some(v) = field(o, "rope_scaling") {
        scaling = scaling_type(v, "rope_scaling")?;
    }
    let Some(params) = field(o, "rope_parameters") else { return Ok((top, scaling)) };
    let Some(p) = params.as_object() else {
        return Err(Error::config("rope_parameters", format!("expected an object, got {params}")));
    };
    // Per-layer-type parameters ({"full_attention": {...}, ...}) would give layers different RoPE.
    if let Some((k, _)) = p.iter().find(|(_, v)| v.is_object()) {
        return Err(Error::config("rope_parameters", format!("per-layer-type parameters (`{k}`) are not implemented")));
    }
    if p.contains_key("rope_type") || p.contains_key("type") {
        let s = scaling_type(params, "rope_parameters")?;
        if s != RopeScaling::None {
            if scaling != RopeScaling::None && scaling != s {
                return Err(Error::config("rope_parameters", "its scaling differs from `rope_scaling`"));
            }
            scaling = s;
        }
    }
    let inner = opt_f32(p, "rope_theta").map_err(|_| {
        Error::config("rope_parameters", format!("rope_theta: expected a number, got {}", p.get("rope_theta").unwrap_or(&Value::Null)))
    })?;
    let theta = match (top, inner) {
        (Some(a), Some(b)) if a != b => {
            return Err(Error::config("rope_parameters", format!("rope_theta {b} differs from the top-level rope_theta {a}")))
        }
        (Some(a), _) => Some(a),
        (None, Some(b)) if b <= 0.0 => return Err(Error::config("rope_parameters", format!("rope_theta {b} must be positive"))),
        (None, b) => b,
    };
    Ok((theta, scaling))
}

/// The RoPE scaling object `v` of field `name`: `default` (none), `linear` (`factor`), `llama3`
/// (`factor`, `low_freq_factor`, `high_freq_factor`, `original_max_position_embeddings`), and
/// this runtime's `plt_freq_factors` (`freq_factors`); any other type is refused by name.
fn scaling_type(v: &Value, name: &str) -> Result<RopeScaling> {
    let ty = v.as_object().and_then(|m| field(m, "rope_type").or_else(|| field(m, "type")));
    let m = v.as_object();
    let num = |key: &str| -> Result<f32> {
        match m.and_then(|m| m.get(key)) {
            Some(x) => x.as_f64().map(|x| x as f32).ok_or_else(|| Error::config(name, format!("`{key}`: expected a number, got {x}"))),
            None => Err(Error::config(name, format!("`{key}` is required"))),
        }
    };
    match ty {
        Some(Value::String(t)) if t == "default" => Ok(RopeScaling::None),
        Some(Value::String(t)) if t == "linear" => Ok(RopeScaling::Linear { factor: num("factor")? }),
        Some(Value::String(t)) if t == "llama3" => {
            let original = match m.and_then(|m| m.get("original_max_position_embeddings")) {
                Some(x) => x.as_u64().filter(|&n| n >= 1 && n <= u32::MAX as u64).ok_or_else(|| {
                    Error::config(name, format!("`original_max_position_embeddings`: expected a positive integer, got {x}"))
                })? as usize,
                None => return Err(Error::config(name, "`original_max_position_embeddings` is required")),
            };
            Ok(RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: original,
            })
        }
        Some(Value::String(t)) if t == "plt_freq_factors" => match m.and_then(|m| m.get("freq_factors")) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_f64().map(|x| x as f32).ok_or_else(|| Error::config(name, format!("`freq_factors`: expected numbers, got {x}"))))
                .collect::<Result<Vec<f32>>>()
                .map(RopeScaling::FreqFactors),
            _ => Err(Error::config(name, "`freq_factors` must be an array of numbers")),
        },
        Some(Value::String(t)) => Err(Error::config(
            name,
            format!("type `{t}` is not implemented (only `linear` and `llama3` are; a config with this RoPE scaling cannot be run as it was trained)"),
        )),
        _ => Err(Error::config(name, format!("expected an object with a `rope_type` (or `type`) string, got {v}"))),
    }
}

fn field<'a>(o: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    match o.get(name) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    }
}

fn req_usize(o: &Map<String, Value>, name: &str) -> Result<usize> {
    opt_usize(o, name)?.ok_or_else(|| Error::config(name, "is required"))
}

fn opt_usize(o: &Map<String, Value>, name: &str) -> Result<Option<usize>> {
    match field(o, name) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= u32::MAX as u64 => Ok(Some(n as usize)),
            _ => Err(Error::config(name, format!("expected a non-negative integer, got {v}"))),
        },
    }
}

fn opt_f32(o: &Map<String, Value>, name: &str) -> Result<Option<f32>> {
    match field(o, name) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if (x as f32).is_finite() => Ok(Some(x as f32)),
            Some(x) if x.is_finite() => Err(Error::config(name, format!("{x} does not fit a 32-bit float"))),
            _ => Err(Error::config(name, format!("expected a number, got {v}"))),
        },
    }
}

fn opt_bool(o: &Map<String, Value>, name: &str) -> Result<Option<bool>> {
    match field(o, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(Error::config(name, format!("expected true or false, got {v}"))),
    }
}

fn token_value(v: &Value, name: &str, vocab: usize) -> Result<u32> {
    match v.as_u64() {
        Some(n) if (n as usize) < vocab => Ok(n as u32),
        Some(n) => Err(Error::config(name, format!("token id {n} is outside the vocabulary (vocab_size {vocab})"))),
        None => Err(Error::config(name, format!("expected a token id, got {v}"))),
    }
}

fn opt_token(o: &Map<String, Value>, name: &str, vocab: usize) -> Result<Option<u32>> {
    field(o, name).map(|v| token_value(v, name, vocab)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 32}"#;

    fn with(extra: &str) -> Result<Config> {
        let mut v: Value = serde_json::from_str(MIN).unwrap();
        let e: Value = serde_json::from_str(extra).unwrap();
        for (k, x) in e.as_object().unwrap() {
            v.as_object_mut().unwrap().insert(k.clone(), x.clone());
        }
        Config::from_json(v.as_object().unwrap())
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = Config::from_json_str(MIN).unwrap();
        assert_eq!(c.num_key_value_heads, 2);
        assert_eq!(c.head_dim, 4);
        assert_eq!(c.rms_norm_eps, 1e-5);
        assert_eq!(c.rope_theta, 10000.0);
        assert_eq!(c.num_loops, 1);
        assert_eq!(c.window_left, 64);
        assert!(c.normalize_per_loop);
        assert_eq!((c.emb_scale, c.hidden_scale), (1.0, 1.0));
        assert_eq!(c.gate_mode, GateMode::Query);
        assert_eq!(c.looping, Looping::Plt);
        assert!(!c.tie_word_embeddings);
        // null scales mean 1.0
        let c = with(r#"{"plt_emb_scale": null, "plt_hidden_scale": null, "eos_token_id": [1, 2]}"#).unwrap();
        assert_eq!((c.emb_scale, c.hidden_scale), (1.0, 1.0));
        assert_eq!(c.eos_token_ids, vec![1, 2]);
    }

    #[test]
    fn round_trips_through_json() {
        let c = with(r#"{"plt_num_loops": 3, "plt_window_size": [5, 0], "plt_gate_use_hidden_states": true,
            "plt_loop_mode": "vanilla", "num_key_value_heads": 1, "head_dim": 6, "tie_word_embeddings": true,
            "plt_emb_scale": 0.5, "plt_hidden_scale": 2.0, "plt_normalize_per_loop": false, "bos_token_id": 1}"#)
        .unwrap();
        let back = Config::from_json(c.to_json().as_object().unwrap()).unwrap();
        assert_eq!(c, back);
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (r#"{"num_key_value_heads": 3}"#, "num_key_value_heads"),
            (r#"{"plt_window_size": [4, 1]}"#, "plt_window_size"),
            (r#"{"plt_window_size": 4}"#, "plt_window_size"),
            (r#"{"plt_num_loops": 0}"#, "plt_num_loops"),
            (r#"{"plt_num_loops": 65}"#, "plt_num_loops"),
            (r#"{"plt_num_loops": 4294967295}"#, "plt_num_loops"),
            (r#"{"hidden_size": "8"}"#, "hidden_size"),
            (r#"{"hidden_size": 0}"#, "hidden_size"),
            (r#"{"hidden_size": -8}"#, "hidden_size"),
            (r#"{"plt_loop_mode": "serial"}"#, "plt_loop_mode"),
            (r#"{"tie_word_embeddings": 1}"#, "tie_word_embeddings"),
            (r#"{"head_dim": 5}"#, "head_dim"),
            (r#"{"rms_norm_eps": 0}"#, "rms_norm_eps"),
            (r#"{"eos_token_id": 99}"#, "eos_token_id"),
            (r#"{"plt_gate_use_hidden_states": "yes"}"#, "plt_gate_use_hidden_states"),
        ];
        for (extra, field) in cases {
            let e = with(extra).unwrap_err();
            assert!(e.to_string().contains(&format!("`{field}`")), "{extra}: {e}");
        }
        let e = Config::from_json_str(r#"{"hidden_size": 8}"#).unwrap_err();
        assert!(e.to_string().contains("vocab_size"), "{e}");
        assert!(Config::from_json_str("not json").unwrap_err().to_string().contains("not valid JSON"));
    }

    #[test]
    fn plt_checkpoints_default_to_two_loops_and_warn_for_omitted_fields() {
        let parse = |extra: &str| {
            let mut v: Value = serde_json::from_str(MIN).unwrap();
            for (k, x) in serde_json::from_str::<Value>(extra).unwrap().as_object().unwrap() {
                v.as_object_mut().unwrap().insert(k.clone(), x.clone());
            }
            Config::from_json_with_warnings(v.as_object().unwrap())
        };
        let (c, w) = parse(r#"{"model_type": "iquestpltcoder"}"#).unwrap();
        assert_eq!(c.num_loops, 2);
        assert_eq!(w.len(), 4, "{w:?}");
        for (field, default) in [
            ("plt_num_loops", "default 2"),
            ("plt_emb_scale", "default 1"),
            ("plt_hidden_scale", "default 1"),
            ("plt_gate_use_hidden_states", "default false"),
        ] {
            assert!(w.iter().any(|m| m.contains(&format!("`{field}`")) && m.contains(default)), "{field}: {w:?}");
        }
        // A stated value, or a null scale (which states 1.0), is not warned about.
        let (c, w) = parse(r#"{"model_type": "iquestpltcoder", "plt_num_loops": 3, "plt_emb_scale": null,
            "plt_hidden_scale": 0.5, "plt_gate_use_hidden_states": true}"#)
        .unwrap();
        assert_eq!((c.num_loops, c.hidden_scale, c.gate_mode), (3, 0.5, GateMode::Hidden));
        assert!(w.is_empty(), "{w:?}");
        let (_, w) = parse(r#"{"model_type": "iquestpltcoder", "plt_num_loops": null, "plt_emb_scale": 1.0,
            "plt_hidden_scale": 1.0, "plt_gate_use_hidden_states": false}"#)
        .unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("`plt_num_loops`"), "{w:?}");
        // An explicit L = 1 stays 1.
        assert_eq!(parse(r#"{"model_type": "iquestpltcoder", "plt_num_loops": 1}"#).unwrap().0.num_loops, 1);
        // Other model types keep L = 1, silently.
        for extra in [r#"{"model_type": "llama"}"#, "{}", r#"{"model_type": null}"#] {
            let (c, w) = parse(extra).unwrap();
            assert_eq!(c.num_loops, 1, "{extra}");
            assert!(w.is_empty(), "{extra}: {w:?}");
        }
        // What `to_json` writes states every field.
        let c = with(r#"{"plt_num_loops": 3}"#).unwrap();
        let (back, w) = Config::from_json_with_warnings(c.to_json().as_object().unwrap()).unwrap();
        assert_eq!((back, w.len()), (c, 0));
        let e = parse(r#"{"model_type": 7}"#).unwrap_err().to_string();
        assert!(e.contains("`model_type`"), "{e}");
    }

    #[test]
    fn rope_scaling_is_refused_by_name_and_type() {
        for (extra, field, ty) in [
            (r#"{"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}"#, "rope_scaling", "`yarn`"),
            (r#"{"rope_scaling": {"type": "linear"}}"#, "rope_scaling", "factor"),
            (r#"{"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0}}"#, "rope_scaling", "is required"),
            (r#"{"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0, "original_max_position_embeddings": 8192}}"#, "rope_scaling", "greater"),
            (r#"{"rope_scaling": {"rope_type": "llama3", "factor": -8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#, "rope_scaling", "factor"),
            (r#"{"rope_scaling": {"type": "dynamic", "factor": 2.0}}"#, "rope_scaling", "`dynamic`"),
            (r#"{"rope_scaling": {"factor": 2.0}}"#, "rope_scaling", "rope_type"),
            (r#"{"rope_scaling": "yarn"}"#, "rope_scaling", "rope_type"),
            (r#"{"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0}}"#, "rope_parameters", "`yarn`"),
            (r#"{"rope_parameters": {"rope_type": "longrope"}}"#, "rope_parameters", "`longrope`"),
            (r#"{"rope_parameters": {"full_attention": {"rope_type": "default"}}}"#, "rope_parameters", "full_attention"),
            (r#"{"rope_parameters": 3}"#, "rope_parameters", "object"),
            (r#"{"rope_parameters": {"rope_theta": "big"}}"#, "rope_parameters", "rope_theta"),
            (r#"{"rope_parameters": {"rope_theta": 5.0}, "rope_theta": 6.0}"#, "rope_parameters", "differs"),
            (r#"{"rope_parameters": {"rope_theta": -5.0}}"#, "rope_parameters", "positive"),
        ] {
            let e = with(extra).unwrap_err().to_string();
            assert!(e.contains(&format!("`{field}`")) && e.contains(ty), "{extra}: {e}");
        }
        // No scaling: null, absent, or the "default" type; rope_parameters may state the base.
        assert_eq!(with(r#"{"rope_scaling": null, "rope_theta": 500000.0}"#).unwrap().rope_theta, 500000.0);
        assert_eq!(with(r#"{"rope_scaling": {"rope_type": "default"}}"#).unwrap().rope_theta, 10000.0);
        let c = with(r#"{"rope_parameters": {"rope_type": "default", "rope_theta": 250000.0}}"#).unwrap();
        assert_eq!(c.rope_theta, 250000.0);
        let c = with(r#"{"rope_parameters": {"rope_theta": 250000.0}, "rope_theta": 250000.0}"#).unwrap();
        assert_eq!(c.rope_theta, 250000.0);
        assert_eq!(with(r#"{"rope_parameters": null}"#).unwrap().rope_theta, 10000.0);
    }

    #[test]
    fn llama3_and_linear_scaling_are_read_and_scale_the_frequencies() {
        let c = with(
            r#"{"rope_theta": 500000.0, "head_dim": 64, "rope_scaling": {"rope_type": "llama3", "factor": 32.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#,
        )
        .unwrap();
        let want = RopeScaling::Llama3 { factor: 32.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 };
        assert_eq!(c.rope_scaling, want);
        let plain = rope_inv_freq(500000.0, 64, &RopeScaling::None);
        let f = c.rope_inv_freq();
        // Short wavelengths (< 8192/4) are kept, long ones (> 8192) divided by 32, between blended.
        for (j, (&p, &s)) in plain.iter().zip(&f).enumerate() {
            let wavelen = 2.0 * std::f64::consts::PI / p;
            if wavelen < 2048.0 {
                assert_eq!(s, p, "{j}");
            } else if wavelen > 8192.0 {
                assert!((s - p / 32.0).abs() <= 1e-15 * p, "{j}");
            } else {
                assert!(s < p && s > p / 32.0, "{j}");
            }
        }
        // It survives config.json written by `to_json`, and rope_parameters may state it too.
        let back = Config::from_json(c.to_json().as_object().unwrap()).unwrap();
        assert_eq!(back.rope_scaling, want);
        let c = with(r#"{"rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}}"#).unwrap();
        assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 4.0 });
        assert_eq!(c.rope_inv_freq()[1], rope_inv_freq(10000.0, 4, &RopeScaling::None)[1] / 4.0);
    }

    #[test]
    fn kv_bytes_follow_section_4() {
        let c = with(r#"{"plt_num_loops": 2, "plt_window_size": [3, 0], "num_hidden_layers": 2}"#).unwrap();
        // 2 * N * Hkv * Dh * s * (T + (L-1)(left+1)) = 2*2*2*4*4 * (10 + 4)
        assert_eq!(c.kv_bytes(10, 4), 2 * 2 * 2 * 4 * 4 * 14);
    }
}
