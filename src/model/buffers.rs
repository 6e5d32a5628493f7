//! Every device buffer a session needs (PLT-SPEC section 4's caches, the carried states, the
//! scratch rows of a pass, the sampler's inputs and the readback area), allocated once when the
//! session starts: nothing is allocated per token.

use super::plan::{attention_split, PassInfo, Planner};
use super::session::SessionOptions;
use crate::config::{Config, Looping};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::{rope_table, ROW_SHARING_MAX};
use crate::sampling::MAX_PENALTY_WINDOW;

/// Per-sequence sampler settings, mirrored by `SampleParams` in shaders/sample.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct SampleParams {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub penalty: f32,
    pub hist_len: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub step: u32,
    pub _pad: [u32; 3],
}

/// Offset of the sampled ids in the readback buffer (after the two timestamps).
pub(crate) const CHOSEN_AT: u64 = 16;

pub(crate) struct SessionBuffers {
    /// Rows a pass can have (max of the prefill chunk and B*L).
    pub rmax: usize,
    /// [Rmax] Row: the live row records the kernels read.
    pub rows: wgpu::Buffer,
    /// [L][Rmax] Row: one record set per pass of a call, copied into `rows` before each pass.
    pub rows_table: wgpu::Buffer,
    /// Pass (uniform), and [L] Pass records copied into it.
    pub pass: wgpu::Buffer,
    pub pass_table: wgpu::Buffer,
    /// h [Rmax, D]: the residual stream.
    pub hidden: wgpu::Buffer,
    /// u [Rmax, D]: RMSNorm(h).
    pub normed: wgpu::Buffer,
    /// [Rmax, H*Dh + 2*Hkv*Dh].
    pub qkv: wgpu::Buffer,
    /// [Rmax, H*Dh] attention output.
    pub att: wgpu::Buffer,
    /// [Rmax, 2F] gate/up pairs (tiled path), and [Rmax, F] silu(gate) * up.
    pub gate_up: wgpu::Buffer,
    pub act: wgpu::Buffer,
    /// Split-attention partials of up to ROW_SHARING_MAX rows, [rows][H][splits][Dh + 2].
    pub partials: wgpu::Buffer,
    /// [Lmax, V] logit rows.
    pub logits: wgpu::Buffer,
    /// [0, 16): 2 timestamps; [16, ..): chosen ids [Lmax]; [logits_at, ..): logits [Lmax, V].
    pub readback: wgpu::Buffer,
    pub logits_at: u64,
    /// [B] SampleParams, [B][MAX_PENALTY_WINDOW] recent tokens, [Lmax, V] sampler scratch,
    /// [Lmax] sampled ids.
    pub sample_params: wgpu::Buffer,
    pub history: wgpu::Buffer,
    pub sample_work: wgpu::Buffer,
    pub chosen: wgpu::Buffer,
    /// [L*B, D]: C^l of sequence b at row l*B + b (section 4).
    pub carry: wgpu::Buffer,
    /// [L*B + max(P, L*B), D]: carried-state IN rows 0.., OUT rows from L*B.
    pub carry_scratch: wgpu::Buffer,
    /// Per layer: [2][slots][T_max][Hkv*Dh] global cache; [2][B*(L-1)][left+1][Hkv*Dh] rings.
    pub kv: Vec<wgpu::Buffer>,
    pub rings: Vec<wgpu::Buffer>,
    /// [T_max][Dh/2] (cos, sin) of the RoPE angles (`kernels::rope_table`).
    pub rope_table: wgpu::Buffer,
    /// 2 timestamp queries (start and end of a call), where the adapter has them.
    pub timestamps: Option<(wgpu::QuerySet, wgpu::Buffer)>,
}

impl SessionBuffers {
    /// `opts.prefill_chunk` is already clamped to the context.
    pub fn new(gpu: &Gpu, c: &Config, opts: &SessionOptions) -> Result<SessionBuffers> {
        let (b, l, d, f, v) = (opts.batch, c.num_loops, c.hidden_size, c.intermediate_size, c.vocab_size);
        let (h, dh, qd, kvd) = (c.num_attention_heads, c.head_dim, c.q_dim(), c.kv_dim());
        let p = opts.prefill_chunk;
        let planner = Planner { cfg: c, batch: b };
        let rmax = planner.max_rows(p);
        let lmax = p.max(b);
        let vanilla = c.num_loops > 1 && c.looping == Looping::Vanilla;
        let slots = if vanilla { l * b } else { b };
        let rings = if c.is_plt() { b * (l - 1) } else { 0 };
        let f4 = |n: usize| (n * 4) as u64;
        // KV elements: 4 bytes, or 2 with kv_f16 (kvd is even: head_dim is).
        let kv_bytes = |n: usize| (n * if opts.kv_f16 { 2 } else { 4 }) as u64;
        let row_words = std::mem::size_of::<super::plan::Row>() / 4;
        let logits_at = (CHOSEN_AT + f4(lmax)).next_multiple_of(256);
        // The unsplit attention binds the partials too, unused: a few bytes.
        let part_elems = attention_split(opts.context).map_or(1, |(_, n)| rmax.min(ROW_SHARING_MAX as usize) * h * n * (dh + 2));
        let mut kv = Vec::new();
        let mut ring = Vec::new();
        for i in 0..c.num_hidden_layers {
            kv.push(gpu.storage(&format!("layers.{i}.kv_cache"), kv_bytes(2 * slots * opts.context * kvd))?);
            if c.is_plt() {
                ring.push(gpu.storage(&format!("layers.{i}.ring"), kv_bytes(2 * rings * c.window_slots() * kvd))?);
            }
        }
        let timestamps = gpu.has_timestamps().then(|| {
            let qs = gpu.device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("step time"), ty: wgpu::QueryType::Timestamp, count: 2 });
            let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: 256,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (qs, resolve)
        });
        Ok(SessionBuffers {
            rmax,
            rows: gpu.storage("rows", f4(rmax * row_words))?,
            rows_table: gpu.storage("rows_table", f4(l * rmax * row_words))?,
            pass: gpu.uniform("pass", bytemuck::bytes_of(&PassInfo::default())),
            pass_table: gpu.storage("pass_table", (l * std::mem::size_of::<PassInfo>()) as u64)?,
            hidden: gpu.storage("hidden", f4(rmax * d))?,
            normed: gpu.storage("normed", f4(rmax * d))?,
            qkv: gpu.storage("qkv", f4(rmax * (qd + 2 * kvd)))?,
            att: gpu.storage("att", f4(rmax * qd))?,
            gate_up: gpu.storage("gate_up", f4(rmax * 2 * f))?,
            act: gpu.storage("act", f4(rmax * f))?,
            partials: gpu.storage("attention_partials", f4(part_elems))?,
            logits: gpu.storage("logits", f4(lmax * v))?,
            readback: gpu.readback("readback", logits_at + f4(lmax * v))?,
            logits_at,
            sample_params: gpu.storage("sample_params", (b * std::mem::size_of::<SampleParams>()) as u64)?,
            history: gpu.storage("history", f4(b * MAX_PENALTY_WINDOW))?,
            sample_work: gpu.storage("sample_work", f4(lmax * v))?,
            chosen: gpu.storage("chosen", f4(lmax))?,
            carry: gpu.storage("carry", f4(l * b * d))?,
            carry_scratch: gpu.storage("cbuf", f4((l * b + p.max(l * b)) * d))?,
            kv,
            rings: ring,
            rope_table: gpu.storage_init("rope_table", bytemuck::cast_slice(&rope_table(&c.rope_inv_freq(), opts.context)))?,
            timestamps,
        })
    }
}
