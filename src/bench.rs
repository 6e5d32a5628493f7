//! `plt bench`: decode latency and KV memory of PLT against non-looped and vanilla looped models
//! on the same weights, on any adapter.

use crate::error::{Error, Result};

/// Arguments of `plt bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// A CI-sized run.
    #[arg(long)]
    pub quick: bool,
}

pub fn run(_args: &BenchArgs) -> Result<()> {
    Err(Error::Input("plt bench is not implemented yet".into()))
}
