//! The native CPU backend: the model's passes (prefill, fused decode of L rows, sequential,
//! vanilla, L = 1) computed on the host with kernels written for CPUs, behind the same
//! `StepSession` face as the GPU session, so generation, the CLI and the benchmark choose a
//! backend with one option (`Backend`).
//!
//! - `pool`: the thread pool (one thread per physical core by default);
//! - `kernels`: dot products of a weight row with a tile of activation rows, per storage format
//!   (F32, F16, BF16; GGUF blocks with int8-quantised activations), AVX2/FMA/F16C or portable;
//! - `model`: `CpuModel` (weights as stored, filled from the load stream) and its matmul;
//! - `session`: `CpuSession` (caches, carried states, the passes, sampling).
//!
//! The f64 reference (`crate::reference`) stays the oracle; this backend is tested against it.

pub mod kernels;
pub mod model;
pub mod pool;
pub mod session;

pub use kernels::Simd;
pub use model::{CpuModel, CpuOptions};
pub use pool::{default_threads, Pool};
pub use session::{CpuSession, CpuSessionOptions};
