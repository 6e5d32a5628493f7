//! The PLT forward graph on the GPU (PLT-SPEC sections 3, 5 and 6).
//!
//! - `upload`: `GpuModel`, the weights on one device.
//! - `plan`: the rows of each pass (`Row`, `PassPlan`, `CallPlan`, `Planner`), with no device
//!   types: prefill is L passes over a chunk of prompt tokens (section 3); the fused decode step
//!   is ONE pass of B*L rows, loop-major (row l*B + b, section 5); the sequential schedule and
//!   vanilla models run L passes of B rows (section 6).
//! - `buffers`: every buffer a session needs, allocated once (nothing per token).
//! - `graph`: every kernel (`crate::kernels`) bound to those buffers once, and the order they
//!   run in for a pass plan.
//! - `session`: `Session`, which plans, encodes, submits and reads back: one command buffer and
//!   one submit per call.
//! - `profile`: per-dispatch GPU times, a measuring aid.

mod buffers;
mod graph;
pub mod plan;
mod profile;
mod session;
mod upload;

pub use crate::kernels::ATTN_GROUP_ROWS;
pub use plan::{
    attention_split, group_attention_rows, CallPlan, Logits, PassInfo, PassPlan, Planner, Row, RowBuf, RowCopy, Schedule,
    ATTN_MAX_SPLITS, ATTN_SPLIT_MIN, NONE,
};
pub use session::{Session, SessionOptions, Stats};
pub use upload::GpuModel;
