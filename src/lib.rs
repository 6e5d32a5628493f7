//! PLT: a wgpu runtime for the Parallel Loop Transformer (PLT-SPEC is the model it computes).

// The benchmark drives the device with blocking calls: native only.
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod config;
pub mod cpu;
pub mod error;
pub mod format;
pub mod generate;
pub mod gguf;
pub mod gpu;
pub mod init;
pub mod kernels;
pub mod load;
pub mod model;
// A progress bar on a terminal (stderr): native only.
#[cfg(not(target_arch = "wasm32"))]
pub mod progress;
// `plt quantize` (files and threads): native only.
#[cfg(not(target_arch = "wasm32"))]
pub mod quantize;
pub mod reference;
pub mod rng;
pub mod sampling;
pub mod tokenizer;
pub mod weights;

pub use config::{Config, Dims, GateMode, Looping};
pub use error::{Error, Result};
pub use weights::{DType, Weights};
