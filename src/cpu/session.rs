//! `CpuSession`: one sequence of a `CpuModel`, with the caches of PLT-SPEC section 4 and the
//! passes of the GPU session, planned the same way (ARCHITECTURE.md, decision 1: one pass
//! over rows whose metadata carries their meaning):
//!
//! - prefill: per loop, one pass over the chunk's rows (loop 0 writes the global KV cache; loops
//!   l >= 1 take the cross-loop shift of the previous loop's rows and keep their last
//!   `window_left + 1` keys in their rings);
//! - fused decode: one pass of L rows (loop 0 first: its K/V enter the cache before the other
//!   rows attend to it), every weight read once for all of them;
//! - sequential decode: L passes of one row (a one-token prefill), the same numbers;
//! - vanilla models: L passes, each loop with its own full cache; L = 1: one pass.
//!
//! Each row's numbers do not depend on the pass it runs in (the kernels compute each row on its
//! own), so fused, sequential and prefill agree exactly, and so do any thread counts.

use super::kernels::{self, KvRow, QActs, Simd};
use super::model::{CpuModel, SyncPtr};
use crate::config::{Config, GateMode, Looping};
use crate::error::{Error, Result};
use crate::generate::{StepFuture, StepSession};
use crate::model::Schedule;
use crate::sampling::{sample_cpu, SamplerConfig};
use std::sync::Arc;

/// Positions one prefill pass takes at most (bounds the scratch memory).
const PREFILL_CHUNK: usize = 128;

/// Options of a CPU session.
#[derive(Clone, Debug)]
pub struct CpuSessionOptions {
    /// Positions the sequence can hold.
    pub context: usize,
    /// Keep keys and values in f16 (half the cache memory; values rounded).
    pub kv_f16: bool,
}

/// Keys and values of one layer: a full cache (slot = position) or a ring (slot = position
/// mod window), grown as positions arrive.
#[derive(Clone, Debug, Default)]
struct Kv {
    f16: bool,
    width: usize,
    k32: Vec<f32>,
    v32: Vec<f32>,
    k16: Vec<half::f16>,
    v16: Vec<half::f16>,
}

impl Kv {
    /// An empty cache of `slots` slots of `width` keys and values, its memory reserved (pages
    /// become resident as slots are written; the slots never move).
    fn new(width: usize, f16: bool, slots: usize) -> Result<Kv> {
        let mut kv = Kv { f16, width, ..Default::default() };
        let n = width.checked_mul(slots).ok_or_else(|| Error::Input(format!("a KV cache of {slots} positions x {width} values is too large")))?;
        let fail = |e: std::collections::TryReserveError| Error::Input(format!("cannot reserve a KV cache of {slots} positions x {width} values: {e}"));
        if f16 {
            kv.k16.try_reserve_exact(n).map_err(fail)?;
            kv.v16.try_reserve_exact(n).map_err(fail)?;
        } else {
            kv.k32.try_reserve_exact(n).map_err(fail)?;
            kv.v32.try_reserve_exact(n).map_err(fail)?;
        }
        Ok(kv)
    }

    fn slots(&self) -> usize {
        (if self.f16 { self.k16.len() } else { self.k32.len() }) / self.width.max(1)
    }

    /// Forgets every slot (the memory stays reserved).
    fn clear(&mut self) {
        self.k32.clear();
        self.v32.clear();
        self.k16.clear();
        self.v16.clear();
    }

    /// Writes slot `s` (at most one past the last), growing by one slot or overwriting.
    fn set(&mut self, s: usize, k: &[f32], v: &[f32]) {
        let w = self.width;
        if self.f16 {
            use half::slice::HalfFloatSliceExt;
            if s == self.slots() {
                self.k16.resize((s + 1) * w, half::f16::ZERO);
                self.v16.resize((s + 1) * w, half::f16::ZERO);
            }
            self.k16[s * w..(s + 1) * w].convert_from_f32_slice(k);
            self.v16[s * w..(s + 1) * w].convert_from_f32_slice(v);
        } else {
            if s == self.slots() {
                self.k32.resize((s + 1) * w, 0.0);
                self.v32.resize((s + 1) * w, 0.0);
            }
            self.k32[s * w..(s + 1) * w].copy_from_slice(k);
            self.v32[s * w..(s + 1) * w].copy_from_slice(v);
        }
    }

    /// Grows to `n` slots (rings are written in any slot order).
    fn reserve_slots(&mut self, n: usize) {
        if self.slots() < n {
            if self.f16 {
                self.k16.resize(n * self.width, half::f16::ZERO);
                self.v16.resize(n * self.width, half::f16::ZERO);
            } else {
                self.k32.resize(n * self.width, 0.0);
                self.v32.resize(n * self.width, 0.0);
            }
        }
    }

    /// Key (value when `value`) of slot `s`, columns `at..at + n`, as stored.
    #[inline(always)]
    fn get(&self, s: usize, at: usize, n: usize, value: bool) -> KvRow<'_> {
        let i = s * self.width + at;
        match (self.f16, value) {
            (true, false) => KvRow::F16(&self.k16[i..i + n]),
            (true, true) => KvRow::F16(&self.v16[i..i + n]),
            (false, false) => KvRow::F32(&self.k32[i..i + n]),
            (false, true) => KvRow::F32(&self.v32[i..i + n]),
        }
    }

    /// The bytes of slots `0..n` (at most those written): keys, values.
    fn bytes_of(&self, n: usize) -> [&[u8]; 2] {
        let n = (n * self.width).min(self.k16.len().max(self.k32.len()));
        if self.f16 {
            [bytemuck::cast_slice(&self.k16[..n]), bytemuck::cast_slice(&self.v16[..n])]
        } else {
            [bytemuck::cast_slice(&self.k32[..n]), bytemuck::cast_slice(&self.v32[..n])]
        }
    }

    /// Bytes reserved.
    fn bytes(&self) -> usize {
        4 * (self.k32.capacity() + self.v32.capacity()) + 2 * (self.k16.capacity() + self.v16.capacity())
    }
}

thread_local! {
    /// Each thread's attention scratch: the full-cache outputs of a group of rows, and scores.
    static ATTENTION_SCRATCH: std::cell::RefCell<(Vec<f32>, kernels::AttendScratch)> = std::cell::RefCell::new(Default::default());
}

/// What a row of a pass attends to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum RowKind {
    /// Causal attention over full cache `c` (loop 0, L = 1, or vanilla loop c), which the row
    /// writes first.
    Causal(usize),
    /// A PLT loop l >= 1: global attention over loop 0's cache, local over its own window,
    /// mixed by the gate.
    Plt(usize),
}

#[derive(Clone, Copy, Debug)]
struct PassRow {
    pos: usize,
    kind: RowKind,
}

/// Scratch buffers of the passes, reused.
#[derive(Default)]
struct Scratch {
    u: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    tmp: Vec<f32>,
    gu: Vec<f32>,
    act: Vec<f32>,
    hin: Vec<f32>,
    gates: Vec<f32>,
    rope: Vec<(f32, f32)>,
    qa: QActs,
}

/// One sequence of a model on the CPU backend.
pub struct CpuSession {
    model: Arc<CpuModel>,
    opts: CpuSessionOptions,
    /// Full caches [cache][layer]: loop 0's (PLT and L = 1), or one per loop (vanilla).
    full: Vec<Vec<Kv>>,
    /// Rings of PLT loops l >= 1, [l - 1][layer].
    rings: Vec<Vec<Kv>>,
    /// Carried states C^l [L][D] (C^0 unused), zero at position 0.
    carried: Vec<Vec<f32>>,
    tokens: Vec<u32>,
    sampler: SamplerConfig,
    scratch: Scratch,
    /// RoPE inverse frequencies, [Dh/2], in f64.
    inv_freq: Vec<f64>,
}

impl CpuSession {
    pub fn new(model: Arc<CpuModel>, opts: CpuSessionOptions) -> Result<CpuSession> {
        let cfg = &model.cfg;
        if opts.context == 0 || opts.context > cfg.max_position_embeddings {
            return Err(Error::Input(format!(
                "context {} must be between 1 and max_position_embeddings ({})",
                opts.context, cfg.max_position_embeddings
            )));
        }
        let n = cfg.num_hidden_layers;
        let caches = if cfg.looping == Looping::Vanilla { cfg.num_loops } else { 1 };
        // Full caches hold the context; rings their window (no more than the context).
        let full = |n_layers: usize| (0..n_layers).map(|_| Kv::new(cfg.kv_dim(), opts.kv_f16, opts.context)).collect::<Result<Vec<_>>>();
        let ring = |n_layers: usize| (0..n_layers).map(|_| Kv::new(cfg.kv_dim(), opts.kv_f16, cfg.window_slots().min(opts.context))).collect::<Result<Vec<_>>>();
        let inv_freq = cfg.rope_inv_freq();
        Ok(CpuSession {
            full: (0..caches).map(|_| full(n)).collect::<Result<_>>()?,
            rings: if cfg.is_plt() { (1..cfg.num_loops).map(|_| ring(n)).collect::<Result<_>>()? } else { Vec::new() },
            carried: vec![vec![0.0; cfg.hidden_size]; cfg.num_loops],
            tokens: Vec::new(),
            sampler: SamplerConfig::default(),
            scratch: Scratch::default(),
            inv_freq,
            model,
            opts,
        })
    }

    pub fn model(&self) -> &Arc<CpuModel> {
        &self.model
    }

    /// Feeds `tokens` at the next positions without computing logits.
    pub fn prefill_tokens(&mut self, tokens: &[u32]) -> Result<()> {
        self.check(tokens)?;
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            self.prefill_chunk(chunk);
        }
        Ok(())
    }

    /// Bytes reserved for the caches (the context's positions, the rings' window).
    pub fn cache_bytes(&self) -> usize {
        self.full.iter().chain(&self.rings).flatten().map(Kv::bytes).sum()
    }

    fn check(&self, tokens: &[u32]) -> Result<()> {
        let v = self.model.cfg.vocab_size;
        if tokens.is_empty() {
            return Err(Error::Input("prefill needs at least one token".into()));
        }
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= v) {
            return Err(Error::Input(format!("token id {t} is out of range (vocab_size {v})")));
        }
        let start = self.tokens.len();
        if start + tokens.len() > self.opts.context {
            return Err(Error::Input(format!(
                "{} tokens after position {start} exceed the session's context of {}",
                tokens.len(),
                self.opts.context
            )));
        }
        Ok(())
    }

    /// Feeds `tokens` at the next positions; returns the logits of every position when `all`,
    /// else of the last one ([n, V]).
    pub fn prefill_logits(&mut self, tokens: &[u32], all: bool) -> Result<Vec<f32>> {
        self.check(tokens)?;
        let mut logits = Vec::new();
        for (i, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
            let last = (i + 1) * PREFILL_CHUNK >= tokens.len();
            let h = self.prefill_chunk(chunk);
            if all || last {
                let d = self.model.cfg.hidden_size;
                let rows = if all { chunk.len() } else { 1 };
                logits.extend(self.head(&h[(chunk.len() - rows) * d..], rows)?);
            }
        }
        Ok(logits)
    }

    /// Feeds one token with the loops run as `schedule` says; returns its logits.
    pub fn decode_logits(&mut self, token: u32, schedule: Schedule) -> Result<Vec<f32>> {
        self.check(&[token])?;
        let cfg = &self.model.cfg;
        if !cfg.is_plt() || schedule == Schedule::Sequential {
            let h = self.prefill_chunk(&[token]);
            return self.head(&h, 1);
        }
        // PLT fused: one pass of L rows at position t.
        let (d, l_n, t) = (cfg.hidden_size, cfg.num_loops, self.tokens.len());
        let e = self.embed(&[token])?;
        let mut h = Vec::with_capacity(l_n * d);
        h.extend_from_slice(&e);
        for l in 1..l_n {
            h.extend(self.loop_input(&e, &self.carried[l]));
        }
        let rows: Vec<PassRow> = (0..l_n).map(|l| PassRow { pos: t, kind: if l == 0 { RowKind::Causal(0) } else { RowKind::Plt(l) } }).collect();
        self.pass(&rows, &mut h);
        for l in 0..l_n - 1 {
            self.carried[l + 1] = self.carry_norm(&h[l * d..(l + 1) * d]);
        }
        self.tokens.push(token);
        self.head(&h[(l_n - 1) * d..], 1)
    }

    /// One chunk of prefill (every loop); returns the last loop's output rows [T, D].
    fn prefill_chunk(&mut self, tokens: &[u32]) -> Vec<f32> {
        let cfg = self.model.cfg.clone();
        let (d, p0, t_n) = (cfg.hidden_size, self.tokens.len(), tokens.len());
        let e = self.embed(tokens).expect("token ids were checked");
        let rows = |kind: RowKind| -> Vec<PassRow> { (0..t_n).map(|i| PassRow { pos: p0 + i, kind }).collect() };
        let mut h = e.clone();
        self.pass(&rows(RowKind::Causal(0)), &mut h);
        for l in 1..cfg.num_loops {
            if cfg.looping == Looping::Vanilla {
                self.pass(&rows(RowKind::Causal(l)), &mut h);
                continue;
            }
            // The cross-loop shift: C_t = Norm(H^{l-1}_{t-1}); the first row takes C^l.
            let mut x = Vec::with_capacity(t_n * d);
            for i in 0..t_n {
                let c = if i == 0 { self.carried[l].clone() } else { self.carry_norm(&h[(i - 1) * d..i * d]) };
                x.extend(self.loop_input(&e[i * d..(i + 1) * d], &c));
            }
            self.carried[l] = self.carry_norm(&h[(t_n - 1) * d..]);
            h = x;
            self.pass(&rows(RowKind::Plt(l)), &mut h);
        }
        self.tokens.extend_from_slice(tokens);
        h
    }

    /// Embedding rows of `tokens`, [T, D].
    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let d = self.model.cfg.hidden_size;
        let mut e = vec![0.0; tokens.len() * d];
        let m = &self.model.embed.parts[0];
        for (i, &t) in tokens.iter().enumerate() {
            m.row_f32(t as usize, &mut e[i * d..(i + 1) * d])?;
        }
        Ok(e)
    }

    /// X = a E + b C.
    fn loop_input(&self, e: &[f32], c: &[f32]) -> Vec<f32> {
        let (a, b) = (self.model.cfg.emb_scale, self.model.cfg.hidden_scale);
        e.iter().zip(c).map(|(&e, &c)| a * e + b * c).collect()
    }

    /// The carried state of an output row: RMSNorm(.; model.norm) when normalize_per_loop.
    fn carry_norm(&self, h: &[f32]) -> Vec<f32> {
        if self.model.cfg.normalize_per_loop {
            let mut out = vec![0.0; h.len()];
            rmsnorm(h, &self.model.norm, self.model.cfg.rms_norm_eps, &mut out);
            out
        } else {
            h.to_vec()
        }
    }

    /// Logits of `rows` rows of h ([rows, D]): RMSNorm, then the head.
    fn head(&mut self, h: &[f32], rows: usize) -> Result<Vec<f32>> {
        let m = self.model.clone();
        let (d, v) = (m.cfg.hidden_size, m.cfg.vocab_size);
        let mut u = vec![0.0; rows * d];
        rmsnorm(&h[..rows * d], &m.norm, m.cfg.rms_norm_eps, &mut u);
        let mut logits = vec![f32::NAN; rows * v];
        m.matmul(m.head(), &u, rows, &mut logits, &mut self.scratch.qa);
        if let Some(i) = logits.iter().position(|x| !x.is_finite()) {
            let x = logits[i];
            let kind = if x.is_nan() { "NaN" } else if x > 0.0 { "+Inf" } else { "-Inf" };
            return Err(Error::NonFinite(format!(
                "the logits at position {} are not finite (token id {} is {kind}): the computation left f32's range; the \
                 sequence's caches may hold non-finite values, so reset it before using it again",
                self.tokens.len().saturating_sub(rows - i / v),
                i % v
            )));
        }
        Ok(logits)
    }

    /// One pass of the layers over `rows` (h: their inputs [R, D], replaced by the outputs).
    fn pass(&mut self, rows: &[PassRow], h: &mut [f32]) {
        let m = self.model.clone();
        let cfg = &m.cfg;
        let (d, qd, kvd, dh, hn) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim(), cfg.head_dim, cfg.num_attention_heads);
        let (f, r_n, eps) = (cfg.intermediate_size, rows.len(), cfg.rms_norm_eps);
        let s = &mut self.scratch;
        s.u.resize(r_n * d, 0.0);
        s.qkv.resize(r_n * (qd + 2 * kvd), 0.0);
        s.att.resize(r_n * qd, 0.0);
        s.tmp.resize(r_n * d, 0.0);
        s.gu.resize(r_n * 2 * f, 0.0);
        s.act.resize(r_n * f, 0.0);
        s.gates.resize(r_n * hn, 1.0);
        // cos/sin of every row's position, once for all layers.
        s.rope.clear();
        for r in rows {
            s.rope.extend(self.inv_freq.iter().map(|&fq| {
                let (sin, cos) = (r.pos as f64 * fq).sin_cos();
                (cos as f32, sin as f32)
            }));
        }
        let any_plt = rows.iter().any(|r| matches!(r.kind, RowKind::Plt(_)));
        // Where each PLT loop's rows of this pass start: (first row, its position).
        let mut fresh = vec![(usize::MAX, usize::MAX); cfg.num_loops];
        for (i, r) in rows.iter().enumerate() {
            if let RowKind::Plt(l) = r.kind {
                if fresh[l].0 == usize::MAX {
                    fresh[l] = (i, r.pos);
                }
            }
        }
        let width = qd + 2 * kvd;
        for (li, layer) in m.layers.iter().enumerate() {
            if any_plt && cfg.gate_mode == GateMode::Hidden {
                s.hin.clear();
                s.hin.extend_from_slice(h);
            }
            rmsnorm(h, &layer.input_layernorm, eps, &mut s.u);
            // A decode step's attention reads keys and values the weight stream has pushed out
            // of the caches since the last step: the qkv matmul asks for them on its way.
            let mut ahead: Vec<&[u8]> = Vec::new();
            if r_n <= kernels::TILE {
                let mut caches = Vec::new();
                for r in rows {
                    let c = match r.kind {
                        RowKind::Causal(c) => c,
                        RowKind::Plt(l) => {
                            ahead.extend(self.rings[l - 1][li].bytes_of(cfg.window_slots()));
                            0
                        }
                    };
                    if !caches.contains(&c) {
                        caches.push(c);
                        ahead.extend(self.full[c][li].bytes_of(r.pos));
                    }
                }
            }
            m.matmul_ahead(&layer.qkv, &s.u, r_n, &mut s.qkv, &mut s.qa, &ahead);
            for (r, row) in s.qkv.chunks_mut(width).enumerate() {
                let cs = &s.rope[r * dh / 2..(r + 1) * dh / 2];
                for head in row[..qd + kvd].chunks_mut(dh) {
                    rope(head, cs);
                }
            }
            // Loop 0 (and vanilla) rows write their cache before any row attends.
            for (r, row) in rows.iter().enumerate() {
                if let RowKind::Causal(c) = row.kind {
                    let q = &s.qkv[r * width..(r + 1) * width];
                    self.full[c][li].set(row.pos, &q[qd..qd + kvd], &q[qd + kvd..]);
                }
            }
            // The gates of PLT rows.
            for (r, row) in rows.iter().enumerate() {
                if !matches!(row.kind, RowKind::Plt(_)) {
                    continue;
                }
                let g = layer.gate.as_ref().expect("PLT layers have gates");
                let gates = &mut s.gates[r * hn..(r + 1) * hn];
                match cfg.gate_mode {
                    GateMode::Query => {
                        let q = &s.qkv[r * width..r * width + qd];
                        for (hh, gv) in gates.iter_mut().enumerate() {
                            *gv = sigmoid(kernels::dot_f32(m.simd, &q[hh * dh..(hh + 1) * dh], &g.weight[hh * g.cols..(hh + 1) * g.cols]) + g.bias[hh]);
                        }
                    }
                    GateMode::Hidden => {
                        let mut n = vec![0.0; d];
                        rmsnorm(&s.hin[r * d..(r + 1) * d], g.norm.as_deref().expect("hidden gates have a norm"), eps, &mut n);
                        for (hh, gv) in gates.iter_mut().enumerate() {
                            *gv = sigmoid(kernels::dot_f32(m.simd, &n, &g.weight[hh * g.cols..(hh + 1) * g.cols]) + g.bias[hh]);
                        }
                    }
                }
            }
            // Attention, one (group of rows, head) per piece of work. A group is the rows of one
            // position that attend to loop 0's cache (the L rows of a fused step: loop 0 causal,
            // loops >= 1 in their global branch): each key and value is read once for all of
            // them; each row's numbers are what it would get alone.
            {
                let out = SyncPtr(s.att.as_mut_ptr());
                let (qkv, gates) = (&s.qkv, &s.gates);
                let (full, rings) = (&self.full, &self.rings);
                let group = hn / cfg.num_key_value_heads;
                let (left, slots) = (cfg.window_left, cfg.window_slots());
                let simd = m.simd;
                let groups = &attention_groups(rows);
                m.pool.chunks(groups.len() * hn, &|i| {
                    let (members, hh) = (&groups[i / hn], i % hn);
                    let at = (hh / group) * dh;
                    let q = |r: usize| &qkv[r * width + hh * dh..r * width + (hh + 1) * dh];
                    // Safe: each (row, head) is in one group and writes its own Dh values.
                    let o = |r: usize| unsafe { std::slice::from_raw_parts_mut(out.ptr().add(r * qd + hh * dh), dh) };
                    let first_row = rows[members[0]];
                    let cache = match first_row.kind {
                        RowKind::Causal(c) => c,
                        RowKind::Plt(_) => 0,
                    };
                    let kv = &full[cache][li];
                    // The full-cache attention of every member: the causal output of loop 0
                    // rows, the global branch of PLT rows.
                    let qs: Vec<&[f32]> = members.iter().map(|&r| q(r)).collect();
                    // This thread's scratch, kept from piece to piece and step to step.
                    ATTENTION_SCRATCH.with_borrow_mut(|(global, scores)| {
                        global.resize(dh * members.len(), 0.0);
                        kernels::attend_many(simd, &qs, 0..first_row.pos + 1, &|p, v| kv.get(p, at, dh, v), global, scores);
                        for (&r, global) in members.iter().zip(global.chunks(dh)) {
                            let row = rows[r];
                            let o = o(r);
                            let RowKind::Plt(l) = row.kind else {
                                o.copy_from_slice(global);
                                continue;
                            };
                            let ring = &rings[l - 1][li];
                            let (base, first) = fresh[l];
                            let lo = row.pos.saturating_sub(left);
                            attend(
                                simd,
                                q(r),
                                lo..row.pos + 1,
                                |p, v| {
                                    if p >= first {
                                        let fr = &qkv[(base + p - first) * width..];
                                        let off = if v { qd + kvd } else { qd };
                                        KvRow::F32(&fr[off + at..off + at + dh])
                                    } else {
                                        ring.get(p % slots, at, dh, v)
                                    }
                                },
                                o,
                                scores,
                            );
                            let g = gates[r * hn + hh];
                            for (o, gl) in o.iter_mut().zip(global) {
                                *o = g * gl + (1.0 - g) * *o;
                            }
                        }
                    });
                });
            }
            // PLT rows keep their last window_left + 1 keys in their rings.
            for (l, &(base, first)) in fresh.iter().enumerate() {
                if base == usize::MAX {
                    continue;
                }
                let n = rows[base..].iter().take_while(|r| r.kind == RowKind::Plt(l)).count();
                let ring = &mut self.rings[l - 1][li];
                ring.reserve_slots(cfg.window_slots().min(first + n));
                for i in n.saturating_sub(cfg.window_slots())..n {
                    let q = &s.qkv[(base + i) * width..(base + i + 1) * width];
                    ring.set((first + i) % cfg.window_slots(), &q[qd..qd + kvd], &q[qd + kvd..]);
                }
            }
            m.matmul(&layer.o_proj, &s.att, r_n, &mut s.tmp, &mut s.qa);
            for (x, y) in h.iter_mut().zip(&s.tmp) {
                *x += y;
            }
            rmsnorm(h, &layer.post_attention_layernorm, eps, &mut s.u);
            m.matmul(&layer.gate_up, &s.u, r_n, &mut s.gu, &mut s.qa);
            for (a, gu) in s.act.chunks_mut(f).zip(s.gu.chunks(2 * f)) {
                kernels::swiglu(m.simd, &gu[..f], &gu[f..], a);
            }
            m.matmul(&layer.down, &s.act, r_n, &mut s.tmp, &mut s.qa);
            for (x, y) in h.iter_mut().zip(&s.tmp) {
                *x += y;
            }
        }
    }

    fn reset_state(&mut self) {
        for kv in self.full.iter_mut().chain(self.rings.iter_mut()).flatten() {
            kv.clear();
        }
        for c in &mut self.carried {
            c.iter_mut().for_each(|x| *x = 0.0);
        }
        self.tokens.clear();
    }

    fn draw(&self, logits: &[f32]) -> u32 {
        sample_cpu(logits, &self.tokens, &self.sampler, self.tokens.len() as u32, 0)
    }
}

/// RMSNorm of each row of x (rows of w.len()) into out; statistics in f64.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks(d).zip(out.chunks_mut(d)) {
        // Eight f64 partial sums (lane i % 8, then in order): independent chains that vectorise.
        let mut acc = [0f64; 8];
        let whole = d / 8 * 8;
        for c in xr[..whole].chunks_exact(8) {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += v as f64 * v as f64;
            }
        }
        let ms = (acc.iter().sum::<f64>() + xr[whole..].iter().map(|&v| v as f64 * v as f64).sum::<f64>()) / d as f64;
        let inv = (1.0 / (ms + eps as f64).sqrt()) as f32;
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * inv * g;
        }
    }
}

/// RoPE (rotate-half pairs j, j + Dh/2) with the row's (cos, sin) per pair.
fn rope(v: &mut [f32], cs: &[(f32, f32)]) {
    let half = v.len() / 2;
    for (j, &(cos, sin)) in cs.iter().enumerate() {
        let (a, b) = (v[j], v[j + half]);
        v[j] = a * cos - b * sin;
        v[j + half] = b * cos + a * sin;
    }
}

/// One head's attention over positions `range` for one query (`kernels::attend_many`).
fn attend<'a>(simd: Simd, q: &[f32], range: std::ops::Range<usize>, kv: impl Fn(usize, bool) -> KvRow<'a>, o: &mut [f32], scores: &mut kernels::AttendScratch) {
    kernels::attend_many(simd, &[q], range, &kv, o, scores);
}

/// The rows of a pass grouped for attention: consecutive rows of one position that attend to
/// loop 0's cache (loop 0's causal row and PLT loops' global branch) form one group; every
/// other row is a group of its own.
fn attention_groups(rows: &[PassRow]) -> Vec<Vec<usize>> {
    let shares = |r: &PassRow| matches!(r.kind, RowKind::Causal(0) | RowKind::Plt(_));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        match groups.last_mut() {
            Some(g) if shares(r) && shares(&rows[g[0]]) && rows[g[0]].pos == r.pos => g.push(i),
            _ => groups.push(vec![i]),
        }
    }
    groups
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// e^x in f32 from arithmetic alone (so loops over it vectorise): x = k ln2 + r with |r| <=
/// ln2/2, e^r by a degree-6 polynomial (relative error below 2e-7 over the whole range), 2^k
/// from the exponent bits. Saturates to 0 below -87.3 and to +inf above 88.7; NaN stays NaN.
#[inline]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let xc = x.clamp(-87.3, 88.7);
    // Round to nearest by adding and removing 1.5 * 2^23 (no libm call, so it vectorises).
    const SHIFT: f32 = 12_582_912.0;
    let k = (xc * std::f32::consts::LOG2_E + SHIFT) - SHIFT;
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((k as i32 + 127) as u32) << 23);
    let y = p * scale;
    if x > 88.7 {
        f32::INFINITY
    } else if x < -87.3 {
        0.0
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

impl StepSession for CpuSession {
    fn prefill<'a>(&'a mut self, tokens: &'a [u32]) -> StepFuture<'a, ()> {
        Box::pin(async move { self.prefill_tokens(tokens) })
    }

    fn prefill_sample<'a>(&'a mut self, tokens: &'a [u32]) -> StepFuture<'a, u32> {
        Box::pin(async move {
            let logits = self.prefill_logits(tokens, false)?;
            Ok(self.draw(&logits))
        })
    }

    fn decode_sample(&mut self, token: u32, schedule: Schedule) -> StepFuture<'_, u32> {
        Box::pin(async move {
            let logits = self.decode_logits(token, schedule)?;
            Ok(self.draw(&logits))
        })
    }

    fn reset(&mut self) -> Result<()> {
        self.reset_state();
        Ok(())
    }

    fn position(&self) -> usize {
        self.tokens.len()
    }

    fn context(&self) -> usize {
        self.opts.context
    }

    fn set_sampler(&mut self, sampler: SamplerConfig) -> Result<()> {
        sampler.validate()?;
        self.sampler = sampler;
        Ok(())
    }

    fn tokens(&self) -> &[u32] {
        &self.tokens
    }
}

/// The config a session runs (for callers holding only the session).
impl CpuSession {
    pub fn cfg(&self) -> &Config {
        &self.model.cfg
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_matches_std_within_its_error_bound() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (super::exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert_eq!((super::exp(-200.0), super::exp(200.0)), (0.0, f32::INFINITY));
        assert!(super::exp(f32::NAN).is_nan());
        assert_eq!(super::exp(0.0), 1.0);
    }
}
