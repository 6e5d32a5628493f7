//! `plt bench`: decode latency and KV memory of PLT against the non-looped model and the vanilla
//! looped baseline on the same weights (PLT-SPEC sections 4, 5 and 6), on any adapter.
//!
//! For every model size and storage dtype, one set of random weights (`init::random_weights`:
//! a tensor's values depend only on the seed and its name) is uploaded as
//! - the non-looped model (L = 1),
//! - PLT-L for each L, decoded both fused (one pass of B*L rows) and sequentially (L passes),
//! - the vanilla looped model with L loops (L passes, L full caches),
//!
//! and for every batch size B and context length T one session is made, prefilled to just below
//! T, and decoded step by step at the last positions before T. Per step: wall time of one decode
//! call (one submit and the readback of the sampled token ids, or of the logits with `--logits`)
//! and GPU time from timestamp queries where the adapter has them. Fused and sequential steps of
//! a PLT session alternate, so both see the same positions. The report gives the ratios that
//! matter (PLT fused / non-looped, vanilla / PLT fused, sequential / fused), the weight bytes each
//! step streams against a copy-bandwidth measurement of the same adapter, KV-cache bytes
//! (allocated, checked against section 4) and device memory.
//! Output: a JSON file (every figure), a markdown table on stdout, optionally an SVG plot.
//!
//! The parts: `args` (the command line, model sizes, resolved settings), `run` (the plan and the
//! loop over configurations), `session` (one measured session: memory, prefill, alternating
//! decode steps), `copy` (the copy-bandwidth yardstick), `report` (the JSON), `render` (markdown
//! and SVG). The progress bar is `crate::progress`. `compare` (`plt bench compare`) merges
//! reports of different machines or adapters.

mod args;
mod compare;
mod copy;
mod render;
mod report;
mod run;
mod session;

pub use args::{preset, resolve, BenchArgs, BenchCommand, Dtype, KvDtype, Readback, Settings, Size, PRESETS};
pub use compare::{merge, CompareArgs, Comparison};
pub use copy::copy_bandwidth;
pub use render::{markdown, svg};
pub use report::{AdapterReport, CopyBw, Dist, Host, Kind, Kv, Mode, ModelInfo, Pair, Prefill, Ratio, Record, Report, Skip, Timer};
pub use run::run;
