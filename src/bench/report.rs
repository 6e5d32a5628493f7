//! The JSON report of `plt bench` (its format is documented in docs/benchmarks.md): the model
//! variants and decode modes it names, timing distributions, one record per mode and
//! configuration, the ratios between modes, and the adapter and host the run was on.

use super::args::{Dtype, Settings, Size};
use crate::config::{Config, Looping};
use crate::error::{Error, Result};
use serde::{Serialize, Serializer};
use std::fmt;
use std::path::Path;

/// How a decode step of a session was run: a row of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Mode {
    /// The model with L = 1.
    #[serde(rename = "non-looped")]
    NonLooped,
    /// PLT-L, one pass of B*L rows.
    #[serde(rename = "plt-fused")]
    PltFused,
    /// PLT-L, L passes of B rows.
    #[serde(rename = "plt-sequential")]
    PltSequential,
    /// The vanilla looped baseline: L passes, L full KV caches.
    #[serde(rename = "vanilla")]
    Vanilla,
}

impl Mode {
    /// All modes, in the order the report's tables and plot list them.
    pub const ALL: [Mode; 4] = [Mode::NonLooped, Mode::PltFused, Mode::PltSequential, Mode::Vanilla];

    /// The name in the JSON and the tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::NonLooped => "non-looped",
            Mode::PltFused => "plt-fused",
            Mode::PltSequential => "plt-sequential",
            Mode::Vanilla => "vanilla",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A model variant uploaded from one set of weights. In the JSON: `non-looped`, `plt-L` or
/// `vanilla-L`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// L = 1.
    NonLooped,
    /// PLT-L, decoded fused and sequentially.
    Plt(usize),
    /// The vanilla looped baseline with L loops.
    Vanilla(usize),
}

impl Kind {
    pub fn loops(self) -> usize {
        match self {
            Kind::NonLooped => 1,
            Kind::Plt(l) | Kind::Vanilla(l) => l,
        }
    }
    /// How the variant's loops are wired.
    pub fn looping(self) -> Looping {
        match self {
            Kind::NonLooped | Kind::Plt(_) => Looping::Plt,
            Kind::Vanilla(_) => Looping::Vanilla,
        }
    }
    /// The modes (report rows) one session of this kind measures, one per alternating slot.
    pub fn modes(self) -> [Mode; 2] {
        match self {
            Kind::NonLooped => [Mode::NonLooped; 2],
            Kind::Plt(_) => [Mode::PltFused, Mode::PltSequential],
            Kind::Vanilla(_) => [Mode::Vanilla; 2],
        }
    }
    /// The config of this variant of size `s`.
    pub fn config(self, s: &Size, set: &Settings, max_positions: usize) -> Result<Config> {
        s.config(self.loops(), self.looping(), set.window, max_positions)
    }
    /// The PLT-SPEC section 4 formula of the variant's KV bytes, in words.
    pub fn kv_formula(self) -> &'static str {
        match self {
            Kind::NonLooped => "2*N*Hkv*Dh*s*T",
            Kind::Plt(_) => "2*N*Hkv*Dh*s*(T + (L-1)*(left+1))",
            Kind::Vanilla(_) => "2*N*Hkv*Dh*s*L*T",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::NonLooped => f.write_str("non-looped"),
            Kind::Plt(l) => write!(f, "plt-{l}"),
            Kind::Vanilla(l) => write!(f, "vanilla-{l}"),
        }
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What timed the copy kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Timer {
    /// GPU timestamps at the start and end of the pass.
    #[serde(rename = "timestamps")]
    Timestamps,
    /// The wall clock around submit and wait.
    #[serde(rename = "wall")]
    Wall,
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Timer::Timestamps => "timestamps",
            Timer::Wall => "wall",
        })
    }
}

/// median, p90 (nearest rank), mean, min, max of a sample, in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Dist {
    pub n: usize,
    pub median: f64,
    pub p90: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl Dist {
    pub fn of(xs: &[f64]) -> Option<Dist> {
        if xs.is_empty() {
            return None;
        }
        let mut s = xs.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 { s[n / 2] } else { 0.5 * (s[n / 2 - 1] + s[n / 2]) };
        let p90 = s[((0.9 * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some(Dist { n, median, p90, mean: s.iter().sum::<f64>() / n as f64, min: s[0], max: s[n - 1] })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Prefill {
    /// Prompt tokens prefilled, all sequences together.
    pub tokens: usize,
    /// Passes over the weights per prompt chunk (L for looped models).
    pub passes_per_chunk: usize,
    pub wall_s: f64,
    pub tokens_per_s: f64,
    pub gpu_s: Option<f64>,
    pub gpu_tokens_per_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Kv {
    /// PLT-SPEC section 4 at the session's context T, times B, with the element size the
    /// session actually uses (`elem_bytes`; 4 where it could not be measured).
    pub spec_bytes: u64,
    pub spec_bytes_per_sequence: u64,
    /// Element size of the cache: allocated bytes / the section 4 element count.
    pub elem_bytes: Option<u64>,
    /// Bytes of the session's KV buffers (global cache + rings, or L full caches for vanilla),
    /// from the device allocator's report (buffers labelled `*kv_cache*` / `*ring*`); null where
    /// the backend gives no report.
    pub allocated_bytes: Option<u64>,
    /// How many buffers those are (N, or 2N with PLT's rings).
    pub buffers: u64,
    /// allocated = spec, up to the allocator's alignment (256 bytes per buffer at most).
    pub matches_spec: Option<bool>,
    /// The section 4 formula used, in words.
    pub formula: &'static str,
}

/// One mode at one (size, dtype, L, B, T).
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub preset: String,
    pub dtype: Dtype,
    pub mode: Mode,
    pub loops: usize,
    pub batch: usize,
    pub context: usize,
    /// Passes over the weights and rows computed per decode step (from the session's stats).
    pub passes: usize,
    pub rows: usize,
    pub warmup: usize,
    /// Decode positions [first, last] of the measured steps.
    pub positions: [usize; 2],
    pub wall_ms: Dist,
    pub gpu_ms: Option<Dist>,
    /// Host time of a step up to its submit (recording the dispatches, submitting): what the
    /// CPU adds per step however fast the GPU is (native builds).
    pub host_ms: Option<Dist>,
    /// Dispatches per step.
    pub dispatches: usize,
    /// Every measured step, in the order run (ms).
    pub wall_samples_ms: Vec<f64>,
    pub gpu_samples_ms: Option<Vec<f64>>,
    pub prefill: Prefill,
    pub kv: Kv,
    /// Weights uploaded for this model (the runtime's allocation counter).
    pub model_bytes: u64,
    /// Everything the session allocated (the runtime's counter): its peak, since nothing is
    /// allocated per token; `allocated_during_decode` shows that.
    pub session_bytes: u64,
    /// The same from the device allocator (with its alignment), where the backend reports it.
    pub session_device_bytes: Option<u64>,
    pub allocated_during_decode: u64,
    /// Seconds to create and prefill the session (shared by the two modes of a PLT session).
    pub setup_s: f64,
    /// Weight bytes one step reads: passes * layer matrices + the lm_head once.
    pub weight_bytes_per_step: u64,
    /// The model's device bits per matrix weight (`ModelInfo::bits_per_weight`).
    pub bits_per_weight: f64,
    /// weight_bytes_per_step / median step time, GB/s (1e9 bytes).
    pub weight_gbps_wall: f64,
    pub weight_gbps_gpu: Option<f64>,
    /// Achieved weight bandwidth over the adapter's copy bandwidth (GPU time where there is
    /// one, else wall).
    pub fraction_of_copy_bw: f64,
    /// With `--profile`: GPU milliseconds of one step by kernel (summed over layers), in
    /// dispatch order. Each dispatch then runs in its own pass, so the sum exceeds a normal step.
    pub profile: Option<Vec<(String, f64)>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Pair {
    pub wall: f64,
    pub gpu: Option<f64>,
}

/// The ratios of one (size, dtype, L, B, T), quotients of the records' median step times.
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    pub preset: String,
    pub dtype: Dtype,
    pub loops: usize,
    pub batch: usize,
    pub context: usize,
    pub plt_fused_over_nonlooped: Pair,
    pub vanilla_over_plt_fused: Pair,
    pub sequential_over_fused: Pair,
    /// KV bytes (spec): PLT / non-looped and vanilla / PLT.
    pub kv_plt_over_nonlooped: f64,
    pub kv_vanilla_over_plt: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Skip {
    pub preset: String,
    pub dtype: Dtype,
    pub model: Kind,
    pub batch: Option<usize>,
    pub context: Option<usize>,
    pub reason: String,
}

impl Skip {
    pub fn new(s: &Size, dtype: Dtype, kind: Kind, batch: usize, context: usize, reason: &str) -> Skip {
        Skip {
            preset: s.name.clone(),
            dtype,
            model: kind,
            batch: Some(batch),
            context: Some(context),
            reason: reason.to_string(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    pub preset: String,
    pub dtype: Dtype,
    pub model: Kind,
    pub loops: usize,
    pub parameters: usize,
    /// `GpuModel::weight_bytes`: one pass over every matrix plus the lm_head.
    pub weight_bytes: u64,
    /// Weights of those matrices (layer matrices and the lm_head).
    pub matrix_params: u64,
    /// weight_bytes * 8 / matrix_params: the device's bits per matrix weight (block records
    /// included: Q8_0 9, Q4_0 5, Q4_K 4.5).
    pub bits_per_weight: f64,
    /// Device bytes of the lm_head (the embedding when tied), read once per step.
    pub head_bytes: u64,
    /// Device bytes of those matrices by storage format (a block format's fallbacks show here).
    pub formats: std::collections::BTreeMap<String, u64>,
    pub model_bytes: u64,
    pub upload_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CopyBw {
    /// Bytes per copy (each copy reads and writes this many).
    pub bytes: u64,
    pub copies: u64,
    /// `copy_buffer_to_buffer`, (read + write bytes) / wall time of a submit of `copies` copies;
    /// best of 5 rounds, and their median.
    pub buffer_copy_gbps: f64,
    pub buffer_copy_gbps_median: f64,
    /// A vec4 copy kernel, (read + write bytes) / time, GPU timestamps where available.
    pub shader_copy_gbps: f64,
    pub shader_copy_gbps_median: f64,
    pub shader_copy_timer: Timer,
    /// The adapter's limit used for the fractions: the best of the above.
    pub gbps: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub vendor: u32,
    pub device: u32,
    pub describe: String,
    pub software: bool,
    pub timestamps: bool,
    /// What the adapter offers / what the runtime's device enabled.
    pub adapter_features: Vec<String>,
    pub device_features: Vec<String>,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    /// Whether the device allocator reports allocations (needed for `kv.allocated_bytes`).
    pub allocator_report: bool,
    /// The subgroup size when decode matmuls reduce by subgroup shuffles (else null).
    pub subgroup_reduction: Option<u32>,
    /// Decode passes fold RMSNorm into the next matmul.
    pub fuse_norms: bool,
    /// `--lanes` (null: auto, per matmul: `Gpu::decode_lanes`).
    pub decode_lanes: Option<u32>,
}

/// The machine the run was on: on a software adapter the CPU is the device, and a busy one
/// slows every figure (load averages from /proc/loadavg where there is one).
#[derive(Clone, Debug, Serialize)]
pub struct Host {
    pub os: String,
    pub arch: String,
    pub cpus: usize,
    pub loadavg_start: Option<[f64; 3]>,
    pub loadavg_end: Option<[f64; 3]>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: u32,
    pub plt_version: String,
    pub command: Vec<String>,
    /// False while the run is still going (the file is rewritten after every session).
    pub complete: bool,
    pub elapsed_s: f64,
    pub adapter: AdapterReport,
    pub host: Host,
    pub settings: Settings,
    pub copy_bandwidth: CopyBw,
    pub models: Vec<ModelInfo>,
    pub results: Vec<Record>,
    pub ratios: Vec<Ratio>,
    pub skipped: Vec<Skip>,
}


/// The ratios of every (size, dtype, L, B, T) that has all four modes.
pub fn ratios(results: &[Record]) -> Vec<Ratio> {
    let find = |r: &Record, mode: Mode, loops: usize| {
        results.iter().find(|x| x.preset == r.preset && x.dtype == r.dtype && x.batch == r.batch && x.context == r.context && x.mode == mode && x.loops == loops)
    };
    let pair = |a: &Record, b: &Record| Pair {
        wall: a.wall_ms.median / b.wall_ms.median,
        gpu: a.gpu_ms.as_ref().zip(b.gpu_ms.as_ref()).map(|(x, y)| x.median / y.median),
    };
    let mut out = Vec::new();
    for fused in results.iter().filter(|r| r.mode == Mode::PltFused) {
        let (Some(base), Some(seq), Some(van)) = (find(fused, Mode::NonLooped, 1), find(fused, Mode::PltSequential, fused.loops), find(fused, Mode::Vanilla, fused.loops)) else {
            continue;
        };
        out.push(Ratio {
            preset: fused.preset.clone(),
            dtype: fused.dtype,
            loops: fused.loops,
            batch: fused.batch,
            context: fused.context,
            plt_fused_over_nonlooped: pair(fused, base),
            vanilla_over_plt_fused: pair(van, fused),
            sequential_over_fused: pair(seq, fused),
            kv_plt_over_nonlooped: fused.kv.spec_bytes as f64 / base.kv.spec_bytes as f64,
            kv_vanilla_over_plt: van.kv.spec_bytes as f64 / fused.kv.spec_bytes as f64,
        });
    }
    out
}

/// Writes `report` to `path` (with each record's fraction of the copy bandwidth filled in),
/// through a temporary file and a rename, so that a reader never sees half a file.
pub fn write_json(path: &Path, report: &Report) -> Result<()> {
    let mut r = report.clone();
    let bw = r.copy_bandwidth.gbps;
    for rec in &mut r.results {
        rec.fraction_of_copy_bw = rec.weight_gbps_gpu.unwrap_or(rec.weight_gbps_wall) / bw;
    }
    let text = serde_json::to_string_pretty(&r).map_err(|e| Error::Input(format!("bench JSON: {e}")))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n").map_err(|e| Error::Io { path: tmp.clone(), source: e })?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })
}

#[cfg(test)]
mod tests {
    use super::super::args::{KvDtype, Readback};
    use super::*;

    #[test]
    fn dist_median_and_p90() {
        let d = Dist::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((d.median, d.p90, d.min, d.max, d.mean), (3.0, 5.0, 1.0, 5.0, 3.0));
        let d = Dist::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!((d.median, d.p90), (2.5, 4.0));
        let xs: Vec<f64> = (1..=20).map(|x| x as f64).collect();
        assert_eq!(Dist::of(&xs).unwrap().p90, 18.0);
        assert!(Dist::of(&[]).is_none());
    }

    /// Modes, variants and the other choices serialise to the strings docs/benchmarks.md
    /// documents.
    #[test]
    fn names_in_the_json() {
        let j = |v: serde_json::Value| v.as_str().unwrap().to_string();
        let want = ["non-looped", "plt-fused", "plt-sequential", "vanilla"];
        for (m, w) in Mode::ALL.into_iter().zip(want) {
            assert_eq!(j(serde_json::to_value(m).unwrap()), w);
            assert_eq!(m.as_str(), w);
        }
        for (k, w) in [(Kind::NonLooped, "non-looped"), (Kind::Plt(2), "plt-2"), (Kind::Vanilla(3), "vanilla-3")] {
            assert_eq!(j(serde_json::to_value(k).unwrap()), w);
            assert_eq!(k.to_string(), w);
        }
        assert_eq!(j(serde_json::to_value(Timer::Timestamps).unwrap()), "timestamps");
        assert_eq!(j(serde_json::to_value(Timer::Wall).unwrap()), "wall");
        for d in Dtype::ALL {
            assert_eq!(j(serde_json::to_value(d).unwrap()), d.as_str());
            assert_eq!(Dtype::parse(d.as_str()), Some(d));
        }
        for (k, s) in [(KvDtype::F32, "f32"), (KvDtype::F16, "f16"), (KvDtype::Same, "same")] {
            assert_eq!(j(serde_json::to_value(k).unwrap()), s);
            assert_eq!((KvDtype::parse(s), k.as_str()), (Some(k), s));
        }
        assert_eq!(j(serde_json::to_value(Readback::Ids).unwrap()), "ids");
        assert_eq!(j(serde_json::to_value(Readback::Logits).unwrap()), "logits");
        assert!(KvDtype::Same.is_f16(Dtype::F16) && !KvDtype::Same.is_f16(Dtype::F32) && KvDtype::Same.is_f16(Dtype::Q4_K));
    }
}
