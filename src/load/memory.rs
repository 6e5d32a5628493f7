//! The memory plan of a model (`plt info`): device bytes of the weights by storage format and
//! by buffer, bits per matrix weight, KV-cache bytes per token, and whether weights + KV +
//! activations fit a memory budget and which buffers exceed a storage-binding limit. Computed
//! from a `LoadPlan` alone (headers, no tensor data), with the sizes the runtime allocates:
//! weights as `LoadPlan::formats` stores them, the KV cache and rings as
//! `model::buffers::SessionBuffers` sizes them (PLT-SPEC s4: loop 0's full cache, plus for PLT
//! one ring of left+1 positions per loop > 0; vanilla looping keeps L full caches).

use super::plan::LoadPlan;
use crate::config::{Config, Looping};
use crate::error::{Error, Result};
use crate::weights::DType;
use serde::Serialize;
use std::fmt::Write as _;

/// What the plan is asked about.
#[derive(Clone, Debug)]
pub struct MemoryOptions {
    /// Positions each sequence holds.
    pub context: usize,
    /// Sequences decoded together.
    pub batch: usize,
    /// Prompt tokens per prefill pass (the activations' rows).
    pub prefill_chunk: usize,
    /// The matrices' storage (`--dtype`); None keeps quantised blocks (as loading does).
    pub dtype: Option<DType>,
    /// Device memory available, bytes.
    pub memory: Option<u64>,
    /// The adapter's largest storage binding, bytes.
    pub max_binding: Option<u64>,
}

/// One device buffer of the plan.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BufferBytes {
    pub buffer: String,
    /// Storage format (the formats of its parts joined by `+` for a fused matrix whose tensors
    /// differ; the KV cache's element type for `layers.{i}.kv_cache`).
    pub format: String,
    pub bytes: u64,
    /// Device buffers it is stored in (more than 1: windows past `--max-binding`, or one part
    /// per format).
    pub parts: usize,
}

/// The KV bytes of one KV element type.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KvBytes {
    /// Bytes each further position of a sequence adds (every layer's K and V).
    pub per_token: u64,
    /// Bytes a sequence holds whatever its length: the rings of loops > 0 (PLT).
    pub fixed: u64,
    /// Bytes of `batch` sequences of `context` positions.
    pub at_context: u64,
    /// Bytes of one layer's cache buffer (`layers.{i}.kv_cache`, all sequences).
    pub layer_buffer: u64,
}

/// Totals for one KV element type.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Budget {
    pub kv: String,
    /// weights + KV at context + activations.
    pub total: u64,
    /// Whether `total` fits `--memory` (None without it).
    pub fits: Option<bool>,
}

/// The memory plan.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MemoryPlan {
    pub context: usize,
    pub batch: usize,
    /// Device bytes of every weight buffer.
    pub weight_bytes: u64,
    /// (format, buffers, bytes), largest first.
    pub by_format: Vec<(String, usize, u64)>,
    /// Every weight buffer, largest first.
    pub buffers: Vec<BufferBytes>,
    /// Weights of the matrix buffers and their bits per weight on the device.
    pub matrix_params: u64,
    pub bits_per_weight: f64,
    pub kv_f32: KvBytes,
    pub kv_f16: KvBytes,
    /// Scratch, logits, carried states and tables of a session (an estimate from the session's
    /// buffer sizes, f32).
    pub activation_bytes: u64,
    pub budgets: Vec<Budget>,
    pub memory: Option<u64>,
    pub max_binding: Option<u64>,
    /// Buffers larger than `max_binding` (weights, and the KV cache with f32 / f16 elements):
    /// the runtime must bind them in windows.
    pub over_binding: Vec<BufferBytes>,
}

/// KV bytes for `elem`-byte elements, as the runtime allocates them.
fn kv(c: &Config, o: &MemoryOptions, elem: u64) -> KvBytes {
    let (n, kvd, b) = (c.num_hidden_layers as u64, c.kv_dim() as u64, o.batch as u64);
    let copies = if c.num_loops > 1 && c.looping == Looping::Vanilla { c.num_loops as u64 } else { 1 };
    let per_token = 2 * n * kvd * elem * copies;
    let fixed = if c.is_plt() { 2 * n * kvd * elem * (c.num_loops as u64 - 1) * c.window_slots() as u64 } else { 0 };
    KvBytes { per_token, fixed, at_context: b * (per_token * o.context as u64 + fixed), layer_buffer: 2 * copies * b * o.context as u64 * kvd * elem }
}

/// A session's other buffers (f32): the rows of the largest pass through the layer scratch
/// and their row records (one set per loop), logits, sampling and readback for max(chunk, B)
/// rows, the penalty histories, carried states, the RoPE table.
fn activations(c: &Config, o: &MemoryOptions) -> u64 {
    let (d, f, v, l) = (c.hidden_size, c.intermediate_size, c.vocab_size, c.num_loops);
    let rows = o.prefill_chunk.max(o.batch * l);
    let lrows = o.prefill_chunk.max(o.batch);
    let scratch = rows * (2 * d + c.q_dim() + 2 * c.kv_dim() + c.q_dim() + 3 * f);
    let records = rows * (l + 1) * std::mem::size_of::<crate::model::Row>() / 4;
    let logits = 3 * lrows * v;
    let history = o.batch * crate::sampling::MAX_PENALTY_WINDOW;
    let carry = l * o.batch * d + (o.prefill_chunk.max(l * o.batch) + l * o.batch) * d;
    let rope = o.context * c.head_dim;
    4 * (scratch + records + logits + history + carry + rope) as u64
}

impl MemoryPlan {
    /// The plan of `p` under `o`.
    pub fn new(p: &LoadPlan, o: &MemoryOptions) -> Result<MemoryPlan> {
        if o.context == 0 {
            return Err(Error::Input("memory plan: --context 0 must be at least 1".into()));
        }
        if o.batch == 0 {
            return Err(Error::Input("memory plan: --batch 0 must be at least 1".into()));
        }
        // Every figure below multiplies these by the model's sizes: keep the products far from
        // overflowing (they wrapped silently). No session holds 2^32 positions.
        if o.batch.checked_mul(o.context).is_none_or(|n| n > u32::MAX as usize) {
            return Err(Error::Input(format!(
                "memory plan: --batch {} x --context {} is more than 2^32 positions",
                o.batch, o.context
            )));
        }
        // Laid out as the runtime lays them out: a matrix past `max_binding` in windows.
        let layouts = p.layouts(o.dtype, o.max_binding.unwrap_or(u64::MAX))?;
        let mut buffers: Vec<BufferBytes> = p
            .buffers
            .iter()
            .map(|b| {
                let l = &layouts[&b.id];
                let format = l.formats().iter().map(|f| f.name()).collect::<Vec<_>>().join("+");
                BufferBytes { buffer: b.label.clone(), format, bytes: l.bytes(), parts: l.parts.len() }
            })
            .collect();
        buffers.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.buffer.cmp(&b.buffer)));
        let (mut matrix_params, mut matrix_bytes) = (0u64, 0u64);
        for b in p.buffers.iter().filter(|b| b.matrix) {
            matrix_params += b.elems as u64;
            matrix_bytes += layouts[&b.id].bytes();
        }
        let by_format = p.device_bytes_by_format(o.dtype).into_iter().map(|(f, n, b)| (f.name().to_string(), n, b)).collect();
        let weight_bytes = buffers.iter().map(|b| b.bytes).sum();
        let c = &p.cfg;
        let (kv_f32, kv_f16) = (kv(c, o, 4), kv(c, o, 2));
        let activation_bytes = activations(c, o);
        let budgets = [("f32", &kv_f32), ("f16", &kv_f16)]
            .into_iter()
            .map(|(name, k)| {
                let total = weight_bytes + k.at_context + activation_bytes;
                Budget { kv: name.into(), total, fits: o.memory.map(|m| total <= m) }
            })
            .collect();
        let mut over_binding = Vec::new();
        if let Some(max) = o.max_binding {
            // Weight matrices past the limit are split into windows (`parts`); listed here so
            // the plan shows them.
            over_binding.extend(buffers.iter().filter(|b| b.bytes > max).cloned());
            for (name, k) in [("f32", &kv_f32), ("f16", &kv_f16)] {
                if k.layer_buffer > max {
                    over_binding.push(BufferBytes { buffer: "layers.*.kv_cache".into(), format: name.into(), bytes: k.layer_buffer, parts: 1 });
                }
            }
        }
        Ok(MemoryPlan {
            context: o.context,
            batch: o.batch,
            weight_bytes,
            by_format,
            buffers,
            matrix_params,
            bits_per_weight: if matrix_params > 0 { matrix_bytes as f64 * 8.0 / matrix_params as f64 } else { 0.0 },
            kv_f32,
            kv_f16,
            activation_bytes,
            budgets,
            memory: o.memory,
            max_binding: o.max_binding,
            over_binding,
        })
    }

    /// The plan as `plt info --plan` prints it: the `show` largest buffers (all with None).
    pub fn text(&self, show: Option<usize>) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "memory plan (context {}, batch {}):", self.context, self.batch);
        let by: Vec<String> = self.by_format.iter().map(|(f, n, b)| format!("{f} {} ({n})", human(*b))).collect();
        let _ = writeln!(s, "  weights: {} ({} bytes): {}", human(self.weight_bytes), self.weight_bytes, by.join(", "));
        let _ = writeln!(s, "  matrices: {} weights, {:.3} bits per weight", self.matrix_params, self.bits_per_weight);
        let n = show.unwrap_or(self.buffers.len()).min(self.buffers.len());
        let _ = writeln!(s, "  buffers, largest first ({n} of {}{}):", self.buffers.len(), if n < self.buffers.len() { "; --all-buffers for every one" } else { "" });
        for b in &self.buffers[..n] {
            let _ = writeln!(s, "    {:<36} {:>5} {:>12}", b.buffer, b.format, human(b.bytes));
        }
        for (name, k) in [("f32", &self.kv_f32), ("f16", &self.kv_f16)] {
            let _ = writeln!(
                s,
                "  KV {name}: {} bytes per token, {} fixed (rings) per sequence, {} at context; {} per layer buffer",
                k.per_token,
                k.fixed,
                human(k.at_context),
                human(k.layer_buffer)
            );
        }
        let _ = writeln!(s, "  activations (estimate): {}", human(self.activation_bytes));
        for b in &self.budgets {
            let fits = match (b.fits, self.memory) {
                (Some(true), Some(m)) => format!(": fits {}", human(m)),
                (Some(false), Some(m)) => format!(": does NOT fit {}", human(m)),
                _ => String::new(),
            };
            let _ = writeln!(s, "  total with {} KV: {}{fits}", b.kv, human(b.total));
        }
        if let Some(max) = self.max_binding {
            if self.over_binding.is_empty() {
                let _ = writeln!(s, "  every buffer fits the binding limit of {}", human(max));
            } else {
                let _ = writeln!(s, "  over the binding limit of {}:", human(max));
                for b in &self.over_binding {
                    let what = if b.buffer.contains("kv_cache") {
                        "a session with it is refused: shorter context, smaller batch or f16 KV".to_string()
                    } else {
                        format!("stored as {} windows, one dispatch each", b.parts)
                    };
                    let _ = writeln!(s, "    {:<36} {:>5} {:>12}  {what}", b.buffer, b.format, human(b.bytes));
                }
            }
        }
        s
    }
}

/// Bytes in GB/MB/KB (powers of 1000) with three significant digits.
pub fn human(b: u64) -> String {
    let x = b as f64;
    let (v, unit) = if x >= 1e9 {
        (x / 1e9, "GB")
    } else if x >= 1e6 {
        (x / 1e6, "MB")
    } else if x >= 1e3 {
        (x / 1e3, "kB")
    } else {
        return format!("{b} B");
    };
    if v >= 100.0 {
        format!("{v:.0} {unit}")
    } else if v >= 10.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.2} {unit}")
    }
}

/// A byte count: a plain number, or with a unit (kB, MB, GB, TB: powers of 1000; KiB, MiB, GiB,
/// TiB: powers of 1024; any case), e.g. `8GB`, `1.5GiB`, `134217728`.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim().to_ascii_lowercase());
    let scale: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1048576.0,
        "gib" => 1073741824.0,
        "tib" => 1099511627776.0,
        _ => return Err(Error::Input(format!("`{s}` is not a byte count (e.g. 8GB, 512MiB, 134217728)"))),
    };
    let x: f64 = num.parse().map_err(|_| Error::Input(format!("`{s}` is not a byte count (e.g. 8GB, 512MiB, 134217728)")))?;
    let v = x * scale;
    if !(v.is_finite() && v >= 0.0 && v < u64::MAX as f64) {
        return Err(Error::Input(format!("`{s}` is out of range")));
    }
    Ok(v.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_parse() {
        assert_eq!(parse_bytes("8GB").unwrap(), 8_000_000_000);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 1_610_612_736);
        assert_eq!(parse_bytes("128 MiB").unwrap(), 128 << 20);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        for bad in ["", "GB", "8XB", "-1", "1e999"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(human(999), "999 B");
        assert_eq!(human(8_000_000_000), "8.00 GB");
    }
}
