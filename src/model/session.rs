//! A `Session`: one batch of sequences on one model, its buffers and bound graph created once.
//! Every call follows the same four steps (see ARCHITECTURE.md, "One fused decode step"):
//! plan the rows (`Planner`), upload the row tables (`write_tables`), record each pass's
//! dispatches (`encode`), submit and read back the few bytes wanted (`finish`).

use super::buffers::{SampleParams, SessionBuffers, CHOSEN_AT};
use super::graph::Graph;
use super::plan::{CallPlan, Logits, PassPlan, Planner, Row, RowBuf, Schedule};
use super::profile::Profiler;
use super::upload::GpuModel;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::sampling::{SamplerConfig, MAX_PENALTY_WINDOW};
use std::sync::Arc;

/// Session sizes.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// B: sequences decoded together.
    pub batch: usize,
    /// Positions each sequence can hold (the global cache length).
    pub context: usize,
    /// Prompt tokens per prefill pass.
    pub prefill_chunk: usize,
    /// Store the KV cache and the local rings as f16 (half the memory and the attention's
    /// reads; keys and values rounded to f16, the attention math stays f32). Default f32.
    pub kv_f16: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { batch: 1, context: 512, prefill_chunk: 128, kv_f16: false }
    }
}

/// What the last call did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Passes over the weights in the last call.
    pub passes: usize,
    /// Rows those passes computed, all together.
    pub rows: usize,
    /// Queue submits of this session so far.
    pub submits: u64,
    /// GPU time of the last call from timestamp queries (where the adapter has them), in ns.
    pub gpu_ns: Option<u64>,
    /// Dispatches (kernel launches) the last call recorded.
    pub dispatches: usize,
    /// Host time of the last decode call up to its submit (row tables, recording, submit), in
    /// ns: the CPU cost per step that a GPU fast enough to hide nothing else would still pay.
    /// Native builds only.
    pub host_ns: Option<u64>,
}

/// Everything a batch of B sequences needs, allocated once.
pub struct Session {
    pub model: Arc<GpuModel>,
    pub opts: SessionOptions,
    /// Next position of each sequence.
    pos: Vec<usize>,
    /// Every sequence's tokens so far (the repetition penalty's history, the RNG's step).
    tokens: Vec<Vec<u32>>,
    samplers: Vec<SamplerConfig>,
    bufs: SessionBuffers,
    graph: Graph,
    profiler: Option<Profiler>,
    pub stats: Stats,
    /// When the current decode call began (`Stats::host_ns`).
    #[cfg(not(target_arch = "wasm32"))]
    call_start: Option<std::time::Instant>,
}

impl Session {
    pub fn new(model: Arc<GpuModel>, opts: SessionOptions) -> Result<Session> {
        let c = &model.cfg;
        if opts.batch == 0 {
            return Err(Error::Input("batch must be at least 1".into()));
        }
        if opts.context == 0 || opts.context > c.max_position_embeddings {
            return Err(Error::Input(format!(
                "context {} must be between 1 and max_position_embeddings ({})",
                opts.context, c.max_position_embeddings
            )));
        }
        if opts.prefill_chunk == 0 {
            return Err(Error::Input("prefill chunk must be at least 1".into()));
        }
        let opts = SessionOptions { prefill_chunk: opts.prefill_chunk.min(opts.context), ..opts };
        let gpu = model.gpu.clone();
        let bufs = SessionBuffers::new(&gpu, c, &opts)?;
        let graph = Graph::bind(&gpu, &model, &bufs, &opts)?;
        gpu.check()?;
        let b = opts.batch;
        Ok(Session {
            model,
            pos: vec![0; b],
            tokens: vec![Vec::new(); b],
            samplers: vec![SamplerConfig::default(); b],
            bufs,
            graph,
            profiler: None,
            stats: Stats::default(),
            #[cfg(not(target_arch = "wasm32"))]
            call_start: None,
            opts,
        })
    }

    pub fn cfg(&self) -> &Config {
        &self.model.cfg
    }

    fn planner(&self) -> Planner<'_> {
        Planner { cfg: &self.model.cfg, batch: self.opts.batch }
    }

    /// Next position of sequence `seq` (tokens it has consumed).
    pub fn position(&self, seq: usize) -> usize {
        self.pos[seq]
    }

    /// The tokens sequence `seq` holds (prompt and generated).
    pub fn tokens(&self, seq: usize) -> &[u32] {
        &self.tokens[seq]
    }

    /// Forgets sequence `seq`: position 0, carried states zero.
    pub fn reset(&mut self, seq: usize) -> Result<()> {
        self.check_seq(seq)?;
        self.pos[seq] = 0;
        self.tokens[seq].clear();
        let (b, d) = (self.opts.batch, self.cfg().hidden_size);
        let zeros = vec![0u8; d * 4];
        for l in 0..self.cfg().num_loops {
            self.model.gpu.queue.write_buffer(&self.bufs.carry, ((l * b + seq) * d * 4) as u64, &zeros);
        }
        Ok(())
    }

    /// Sets the sampler of sequence `seq` (used by `prefill_sample` and `decode_sample`).
    pub fn set_sampler(&mut self, seq: usize, sampler: SamplerConfig) -> Result<()> {
        self.check_seq(seq)?;
        sampler.validate()?;
        self.samplers[seq] = sampler;
        Ok(())
    }

    fn check_seq(&self, seq: usize) -> Result<()> {
        if seq >= self.opts.batch {
            return Err(Error::Input(format!("sequence {seq} is outside the batch of {}", self.opts.batch)));
        }
        Ok(())
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        let v = self.cfg().vocab_size;
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= v) {
            return Err(Error::Input(format!("token id {t} is out of range (vocab_size {v})")));
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Prefill and decode: plan -> tables -> encode -> finish
    // -----------------------------------------------------------------------------------------

    /// Prefills `tokens` for sequence `seq` at its next positions (PLT-SPEC section 3: L passes
    /// per chunk, each batched over the chunk's tokens). Returns the requested logits, [n, V].
    pub async fn prefill(&mut self, seq: usize, tokens: &[u32], want: Logits) -> Result<Vec<f32>> {
        Ok(self.prefill_inner(seq, tokens, want, false).await?.0)
    }

    /// Prefills `tokens` and draws the next token on the GPU with the sequence's sampler
    /// (only the id is read back).
    pub async fn prefill_sample(&mut self, seq: usize, tokens: &[u32]) -> Result<u32> {
        let (_, ids) = self.prefill_inner(seq, tokens, Logits::Last, true).await?;
        ids.first().copied().ok_or_else(|| Error::Gpu("no token was sampled".into()))
    }

    async fn prefill_inner(&mut self, seq: usize, tokens: &[u32], want: Logits, sample: bool) -> Result<(Vec<f32>, Vec<u32>)> {
        self.check_seq(seq)?;
        self.check_tokens(tokens)?;
        if tokens.is_empty() {
            return Err(Error::Input("prefill needs at least one token".into()));
        }
        let start = self.pos[seq];
        if start + tokens.len() > self.opts.context {
            return Err(Error::Input(format!(
                "{} tokens after position {start} exceed the session's context of {}",
                tokens.len(),
                self.opts.context
            )));
        }
        let mut out = Vec::new();
        let mut ids = Vec::new();
        let chunks: Vec<&[u32]> = tokens.chunks(self.opts.prefill_chunk).collect();
        for (ci, chunk) in chunks.iter().enumerate() {
            let t_n = chunk.len();
            let last_chunk = ci + 1 == chunks.len();
            let logits = match want {
                Logits::All => (0, t_n),
                Logits::Last if last_chunk => (t_n - 1, 1),
                _ if sample && last_chunk => (t_n - 1, 1),
                _ => (0, 0),
            };
            let sample_here = sample && last_chunk;
            let plan = self.planner().prefill(seq, self.pos[seq], chunk, logits, sample_here);
            if sample_here {
                // Sampling reads row 0 of the logits: the last row only is asked for.
                self.write_samplers(seq..seq + 1, &[chunk]);
            }
            let want_logits = want != Logits::None && logits.1 > 0;
            let (l, chosen) = self.run(&plan, want_logits, "prefill").await?;
            let first = self.pos[seq] + logits.0;
            out.extend_from_slice(&l);
            ids = chosen;
            self.stats.rows = t_n; // a prefill reports the rows of one pass
            self.pos[seq] += t_n;
            self.tokens[seq].extend_from_slice(chunk);
            check_logits(&l, self.cfg().vocab_size, |r| format!("prefill: sequence {seq}'s logits at position {}", first + r))?;
            check_ids(&ids, |_| format!("prefill: sequence {seq}'s logits at position {}", self.pos[seq] - 1))?;
        }
        Ok((out, ids))
    }

    /// One decode step for every sequence of the batch: `tokens[b]` at its next position.
    /// PLT models run `schedule`; vanilla models always run L passes. One submit; returns the
    /// logits [B, V] of the last loop when `want_logits`.
    pub async fn decode(&mut self, tokens: &[u32], schedule: Schedule, want_logits: bool) -> Result<Vec<f32>> {
        Ok(self.decode_inner(tokens, schedule, want_logits, false).await?.0)
    }

    /// One decode step that also draws each sequence's next token on the GPU with its sampler;
    /// reads back only the B ids (and the logits if `want_logits`).
    pub async fn decode_sample(&mut self, tokens: &[u32], schedule: Schedule, want_logits: bool) -> Result<(Vec<u32>, Vec<f32>)> {
        let (logits, ids) = self.decode_inner(tokens, schedule, want_logits, true).await?;
        Ok((ids, logits))
    }

    async fn decode_inner(&mut self, tokens: &[u32], schedule: Schedule, want_logits: bool, sample: bool) -> Result<(Vec<f32>, Vec<u32>)> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.call_start = Some(std::time::Instant::now());
        }
        let bsz = self.opts.batch;
        if tokens.len() != bsz {
            return Err(Error::Input(format!("decode needs {bsz} tokens (one per sequence), got {}", tokens.len())));
        }
        self.check_tokens(tokens)?;
        if let Some(b) = (0..bsz).find(|&b| self.pos[b] >= self.opts.context) {
            return Err(Error::Input(format!("sequence {b} is full (context {})", self.opts.context)));
        }
        let plan = self.planner().decode(&self.pos, tokens, schedule, want_logits || sample, sample);
        if sample {
            let news: Vec<&[u32]> = tokens.chunks(1).collect();
            self.write_samplers(0..bsz, &news);
        }
        let out = self.run(&plan, want_logits, "decode").await?;
        let at = self.pos.clone();
        for (b, p) in self.pos.iter_mut().enumerate() {
            *p += 1;
            self.tokens[b].push(tokens[b]);
        }
        check_logits(&out.0, self.cfg().vocab_size, |b| format!("decode: sequence {b}'s logits at position {}", at[b]))?;
        check_ids(&out.1, |b| format!("decode: sequence {b}'s logits at position {}", at[b]))?;
        Ok(out)
    }

    /// Uploads `plan`'s tables, records it in one command buffer, submits and reads back.
    async fn run(&mut self, plan: &CallPlan, want_logits: bool, label: &str) -> Result<(Vec<f32>, Vec<u32>)> {
        self.write_tables(&plan.passes);
        let mut enc = self.model.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        self.stats.dispatches = self.encode(&mut enc, plan);
        let out = self.finish(enc, plan.logit_rows, want_logits, plan.sample).await?;
        self.stats.passes = plan.passes.len();
        self.stats.rows = plan.rows();
        Ok(out)
    }

    /// Uploads each pass's rows and pass record (record set p for pass p).
    fn write_tables(&self, passes: &[PassPlan]) {
        let q = &self.model.gpu.queue;
        let row_bytes = std::mem::size_of::<Row>();
        for (p, pass) in passes.iter().enumerate() {
            debug_assert!(pass.rows.len() <= self.bufs.rmax);
            q.write_buffer(&self.bufs.rows_table, (p * self.bufs.rmax * row_bytes) as u64, bytemuck::cast_slice(&pass.rows));
            q.write_buffer(&self.bufs.pass_table, (p * 16) as u64, bytemuck::bytes_of(&pass.info()));
        }
    }

    /// Records every pass of `plan` with its copies; returns the dispatches recorded.
    fn encode(&self, enc: &mut wgpu::CommandEncoder, plan: &CallPlan) -> usize {
        let mut dispatches = 0;
        let n = plan.passes.len();
        for (p, pass) in plan.passes.iter().enumerate() {
            self.copy_rows(enc, &pass.before);
            dispatches += self.encode_pass(enc, p, pass, p == 0, p + 1 == n);
        }
        self.copy_rows(enc, &plan.after);
        dispatches
    }

    fn copy_rows(&self, enc: &mut wgpu::CommandEncoder, copies: &[super::plan::RowCopy]) {
        let rb = (self.cfg().hidden_size * 4) as u64;
        let buf = |b: RowBuf| match b {
            RowBuf::Carry => &self.bufs.carry,
            RowBuf::Scratch => &self.bufs.carry_scratch,
        };
        for c in copies.iter().filter(|c| c.rows > 0) {
            enc.copy_buffer_to_buffer(buf(c.src), c.src_row as u64 * rb, buf(c.dst), c.dst_row as u64 * rb, c.rows as u64 * rb);
        }
    }

    /// Records pass `p` (its rows are record set `p` of the rows table). `first`/`last`: this
    /// pass opens/closes the call (where its timestamps are written). Returns the number of
    /// dispatches recorded.
    fn encode_pass(&self, enc: &mut wgpu::CommandEncoder, p: usize, plan: &PassPlan, first: bool, last: bool) -> usize {
        let b = &self.bufs;
        let row_bytes = std::mem::size_of::<Row>() as u64;
        enc.copy_buffer_to_buffer(&b.rows_table, p as u64 * b.rmax as u64 * row_bytes, &b.rows, 0, plan.rows.len() as u64 * row_bytes);
        enc.copy_buffer_to_buffer(&b.pass_table, p as u64 * 16, &b.pass, 0, 16);
        let list = self.graph.dispatches(plan);
        let (r, lr) = (plan.rows.len() as u32, plan.logit_rows);
        if let Some(prof) = &self.profiler {
            prof.record(enc, &list, r, lr);
            return list.len();
        }
        let timestamp_writes = b.timestamps.as_ref().filter(|_| first || last).map(|(qs, _)| wgpu::ComputePassTimestampWrites {
            query_set: qs,
            beginning_of_pass_write_index: first.then_some(0),
            end_of_pass_write_index: last.then_some(1),
        });
        let mut cp = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("plt pass"), timestamp_writes });
        for (_, d) in &list {
            d.record(&mut cp, r, lr);
        }
        list.len()
    }

    /// Uploads the sampler settings and recent tokens of `seqs` (`new[i]` are the tokens this
    /// call adds to `seqs[i]`; the id drawn is for position `step`).
    fn write_samplers(&self, seqs: std::ops::Range<usize>, new: &[&[u32]]) {
        let q = &self.model.gpu.queue;
        for (i, s) in seqs.enumerate() {
            let sc = &self.samplers[s];
            let n = sc.repeat_last_n.min(MAX_PENALTY_WINDOW);
            let mut recent: Vec<u32> = self.tokens[s].iter().chain(new[i].iter()).copied().collect();
            recent.drain(..recent.len().saturating_sub(n));
            let p = SampleParams {
                temperature: sc.temperature,
                top_k: sc.top_k.min(u32::MAX as usize) as u32,
                top_p: sc.top_p,
                min_p: sc.min_p,
                penalty: sc.repetition_penalty,
                hist_len: recent.len() as u32,
                seed_lo: sc.seed as u32,
                seed_hi: (sc.seed >> 32) as u32,
                step: (self.pos[s] + new[i].len()) as u32,
                _pad: [0; 3],
            };
            let ps = std::mem::size_of::<SampleParams>();
            q.write_buffer(&self.bufs.sample_params, (s * ps) as u64, bytemuck::bytes_of(&p));
            if !recent.is_empty() {
                q.write_buffer(&self.bufs.history, (s * MAX_PENALTY_WINDOW * 4) as u64, bytemuck::cast_slice(&recent));
            }
        }
    }

    /// Submits `enc`; reads back, in one mapping, `logit_rows` rows of logits (if `want_logits`),
    /// the ids sampled from them (if `sampled`) and the GPU time (if the adapter has timestamps).
    async fn finish(&mut self, mut enc: wgpu::CommandEncoder, logit_rows: usize, want_logits: bool, sampled: bool) -> Result<(Vec<f32>, Vec<u32>)> {
        let gpu = self.model.gpu.clone();
        let b = &self.bufs;
        let v = self.model.cfg.vocab_size;
        let logit_bytes = if want_logits { (logit_rows * v * 4) as u64 } else { 0 };
        let id_bytes = if sampled { (logit_rows * 4) as u64 } else { 0 };
        if logit_bytes > 0 {
            enc.copy_buffer_to_buffer(&b.logits, 0, &b.readback, b.logits_at, logit_bytes);
        }
        if id_bytes > 0 {
            enc.copy_buffer_to_buffer(&b.chosen, 0, &b.readback, CHOSEN_AT, id_bytes);
        }
        if let Some((qs, resolve)) = &b.timestamps {
            enc.resolve_query_set(qs, 0..2, resolve, 0);
            enc.copy_buffer_to_buffer(resolve, 0, &b.readback, 0, 16);
        }
        let profiled = self.profiler.as_ref().map_or(0, |p| p.resolve(&mut enc));
        gpu.queue.submit([enc.finish()]);
        self.stats.host_ns = None;
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.stats.host_ns = self.call_start.take().map(|t| t.elapsed().as_nanos() as u64);
        }
        self.stats.submits += 1;
        self.stats.gpu_ns = None;
        if let Some(p) = &mut self.profiler {
            p.collect(&gpu, profiled).await?;
        }
        // The smallest range that covers what is wanted.
        let b = &self.bufs;
        let ts = b.timestamps.is_some();
        let start = if ts { 0 } else if id_bytes > 0 { CHOSEN_AT } else { b.logits_at };
        let end = if logit_bytes > 0 {
            b.logits_at + logit_bytes
        } else if id_bytes > 0 {
            CHOSEN_AT + id_bytes
        } else if ts {
            16
        } else {
            gpu.check()?;
            return Ok((Vec::new(), Vec::new()));
        };
        let bytes = gpu.read_range(&b.readback, start, end - start).await?;
        let at = |off: u64, len: u64| &bytes[(off - start) as usize..(off - start + len) as usize];
        if ts {
            let t: [u64; 2] = bytemuck::pod_read_unaligned(at(0, 16));
            let period = gpu.queue.get_timestamp_period() as f64;
            self.stats.gpu_ns = Some((t[1].saturating_sub(t[0]) as f64 * period) as u64);
        }
        let logits = if logit_bytes > 0 { bytemuck::pod_collect_to_vec(at(b.logits_at, logit_bytes)) } else { Vec::new() };
        let ids = if id_bytes > 0 { bytemuck::pod_collect_to_vec(at(CHOSEN_AT, id_bytes)) } else { Vec::new() };
        Ok((logits, ids))
    }

    // -----------------------------------------------------------------------------------------
    // Blocking wrappers and profiling
    // -----------------------------------------------------------------------------------------

    /// `prefill`, blocking (native callers).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn prefill_blocking(&mut self, seq: usize, tokens: &[u32], want: Logits) -> Result<Vec<f32>> {
        pollster::block_on(self.prefill(seq, tokens, want))
    }

    /// `decode`, blocking (native callers).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn decode_blocking(&mut self, tokens: &[u32], schedule: Schedule, want_logits: bool) -> Result<Vec<f32>> {
        pollster::block_on(self.decode(tokens, schedule, want_logits))
    }

    /// Times every dispatch of the following calls separately (a measuring aid: one compute
    /// pass per dispatch, so the total is higher than a normal step). Needs timestamp queries.
    pub fn set_profiling(&mut self, on: bool) -> Result<()> {
        self.profiler = if on { Some(Profiler::new(&self.model.gpu)?) } else { None };
        Ok(())
    }

    /// (dispatch label, GPU milliseconds) of the last call, when profiling.
    pub fn profile(&self) -> &[(String, f64)] {
        self.profiler.as_ref().map(|p| p.last.as_slice()).unwrap_or(&[])
    }
}

/// The id the sampling kernel draws for a row whose logits hold a NaN or an infinity (the
/// logits themselves are not read back).
pub const NON_FINITE_ID: u32 = 0xffff_fffe;

/// An error for the first row the sampling kernel flagged (`NON_FINITE_ID`); `row(r)` names it.
fn check_ids(ids: &[u32], row: impl Fn(usize) -> String) -> Result<()> {
    match ids.iter().position(|&id| id == NON_FINITE_ID) {
        None => Ok(()),
        Some(r) => Err(Error::NonFinite(format!(
            "{} are not finite (found while sampling): the computation left f32's range; the sequence's caches may hold \
             non-finite values, so reset it before using it again",
            row(r)
        ))),
    }
}

/// An error for the first NaN or infinity in `logits` ([rows, V]), read back from the device;
/// `row(r)` names row r (the call, the sequence and the position). Finite weights can still
/// overflow (activations past f32's range), and such logits would otherwise reach the caller,
/// or the CPU sampler, as numbers. The call's positions have advanced when this is returned
/// (its caches were written), so the sequence needs `reset` before it is used again.
fn check_logits(logits: &[f32], v: usize, row: impl Fn(usize) -> String) -> Result<()> {
    let Some(i) = logits.iter().position(|x| !x.is_finite()) else {
        return Ok(());
    };
    let x = logits[i];
    let kind = if x.is_nan() { "NaN" } else if x > 0.0 { "+Inf" } else { "-Inf" };
    Err(Error::NonFinite(format!(
        "{} are not finite (token id {} is {kind}): the computation left f32's range; the sequence's caches may hold \
         non-finite values, so reset it before using it again",
        row(i / v.max(1)),
        i % v.max(1)
    )))
}
