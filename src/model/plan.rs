//! What a call computes, before any device is involved: the rows of each pass (PLT-SPEC
//! sections 3, 5 and 6), which matmul path each pass takes, and the carried-state copies around
//! the passes. A `Planner` turns (prefill chunk | decode step) into a `CallPlan`; the session
//! encodes it. Nothing here holds a wgpu type, so a test can build and check plans without a GPU
//! (and a second backend can execute the same plans).

use crate::config::{Config, Looping};
use crate::kernels::{MatmulPath, ATTN_GROUP_ROWS};

/// "No such row/slot" in `Row` fields.
pub const NONE: u32 = u32::MAX;

/// Decode passes of sessions whose context exceeds this split the global attention over
/// positions (flash-decoding: `attention` per split, then `attention_combine`).
pub const ATTN_SPLIT_MIN: usize = 128;
/// At most this many splits per row (longer contexts get longer splits).
pub const ATTN_MAX_SPLITS: usize = 64;

/// One row of a pass: one (sequence, loop, position). Mirrored by `struct Row` in
/// shaders/prelude.wgsl; every kernel reads its row's record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Row {
    /// Absolute position t (RoPE angle, cache position).
    pub pos: u32,
    /// Loop l.
    pub lp: u32,
    /// Sequence b of the batch.
    pub seq: u32,
    /// Token id x_t.
    pub token: u32,
    /// Full-cache slot this row's K/V is written to (NONE: no write; PLT loops >= 1).
    pub kv_slot: u32,
    /// Full-cache slot this row attends to causally (positions 0..=t).
    pub attn_slot: u32,
    /// Ring of this row's loop (NONE: no local branch and no gate: loop 0, non-PLT models).
    pub ring: u32,
    /// Positions t, t-1, .., t-fresh+1 of this loop are rows r, r-1, .. of this pass (their K/V
    /// is read from the pass's own qkv rows, not the ring).
    pub fresh: u32,
    /// 1: store this row's K/V in its ring after attention.
    pub ring_write: u32,
    /// Carried-state row (of the session's carried-state scratch) of the cross-loop input;
    /// NONE for loop 0.
    pub csrc: u32,
    /// Scratch row that receives Norm(h) after the last layer (NONE: none).
    pub cdst: u32,
    /// a of the loop input (1 for loop 0).
    pub e_scale: f32,
    /// b of the loop input (0 for loop 0).
    pub c_scale: f32,
    /// The next row of this row's attention group, 0 for none (`group_attention_rows`).
    pub gnext: u32,
    /// 1 when an earlier row of the pass leads this row's attention group.
    pub gfollow: u32,
    pub _pad: u32,
}

impl Row {
    /// A row that writes no cache, has no ring and no carried input or output.
    pub fn plain(pos: usize, token: u32) -> Row {
        Row {
            pos: pos as u32,
            lp: 0,
            seq: 0,
            token,
            kv_slot: NONE,
            attn_slot: 0,
            ring: NONE,
            fresh: 1,
            ring_write: 0,
            csrc: NONE,
            cdst: NONE,
            e_scale: 1.0,
            c_scale: 0.0,
            gnext: 0,
            gfollow: 0,
            _pad: 0,
        }
    }
}

/// Per-pass values, mirrored by `struct Pass` in shaders/prelude.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PassInfo {
    /// Rows in the pass.
    pub rows: u32,
    /// First row whose logits are wanted.
    pub logit_row0: u32,
    /// How many.
    pub logit_rows: u32,
    /// Sequence of the first logit row (sampling: logit row i is sequence seq0 + i).
    pub seq0: u32,
}

/// How a decode step of a PLT model schedules its L loops on the device (the model's wiring,
/// PLT or vanilla, is `config::Looping`; vanilla models always run L passes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// One pass of B*L rows sharing every weight read (PLT-SPEC section 5).
    Fused,
    /// L passes of B rows: the same numbers, L times the weight reads.
    Sequential,
}

impl Schedule {
    /// `fused` or `sequential`; `parallel` is accepted for `fused` (the CLI's older spelling).
    pub fn parse(s: &str) -> Option<Schedule> {
        match s {
            "parallel" | "fused" => Some(Schedule::Fused),
            "sequential" => Some(Schedule::Sequential),
            _ => None,
        }
    }
}

/// Which logits a prefill returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    None,
    Last,
    All,
}

/// (positions per split, splits) of the global attention in a session of `context` positions,
/// or None when it does not split (see `ATTN_SPLIT_MIN`).
pub fn attention_split(context: usize) -> Option<(usize, usize)> {
    if context <= ATTN_SPLIT_MIN {
        return None;
    }
    let split = ATTN_SPLIT_MIN.max(context.div_ceil(ATTN_MAX_SPLITS)).next_multiple_of(64);
    Some((split, context.div_ceil(split)))
}

/// Links the rows of one pass that attend to the same cache slot into groups of up to
/// `ATTN_GROUP_ROWS` (in row order), so that one attention workgroup reads each cached key and
/// value once for the whole group: in a fused PLT decode pass, the L loops of a sequence (loops
/// >= 1 attend to loop 0's cache); in a prefill chunk, consecutive positions. Rows left at the
/// zeroed defaults each attend alone.
pub fn group_attention_rows(rows: &mut [Row]) {
    // (slot, leader's last row, rows in the group) of the open groups.
    let mut open: Vec<(u32, usize, usize)> = Vec::new();
    for i in 0..rows.len() {
        rows[i].gnext = 0;
        rows[i].gfollow = 0;
        let slot = rows[i].attn_slot;
        match open.iter_mut().find(|g| g.0 == slot) {
            Some(g) if g.2 < ATTN_GROUP_ROWS => {
                rows[g.1].gnext = i as u32;
                rows[i].gfollow = 1;
                g.1 = i;
                g.2 += 1;
            }
            Some(g) => *g = (slot, i, 1),
            None => open.push((slot, i, 1)),
        }
    }
}

/// The two places carried states live: `Carry` [L*B, D] holds C^l of sequence b at row l*B + b
/// between calls; `Scratch` has IN rows (0..) that the embedding reads and OUT rows (from
/// `Planner::out_base`) that `norm_carry` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowBuf {
    Carry,
    Scratch,
}

/// A copy of `rows` carried-state rows between the two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowCopy {
    pub src: RowBuf,
    pub src_row: usize,
    pub dst: RowBuf,
    pub dst_row: usize,
    pub rows: usize,
}

/// One pass over the weights.
#[derive(Clone, Debug)]
pub struct PassPlan {
    pub rows: Vec<Row>,
    pub logit_row0: u32,
    pub logit_rows: u32,
    /// Sequence of logit row 0.
    pub seq0: u32,
    /// Run the embedding (every loop of a PLT model; loop 0 only otherwise: later loops of a
    /// vanilla model continue from the previous pass's hidden rows).
    pub embed: bool,
    /// Write Norm(h) of rows with a carried-state destination.
    pub carry_out: bool,
    /// Compute the logit rows.
    pub logits: bool,
    /// Draw a token from each logit row on the device.
    pub sample: bool,
    /// The matmul path of the layers (by `rows`) and of the lm_head (by `logit_rows`).
    pub body: MatmulPath,
    pub head: MatmulPath,
    /// Carried-state copies before this pass.
    pub before: Vec<RowCopy>,
}

impl PassPlan {
    #[allow(clippy::too_many_arguments)]
    fn new(mut rows: Vec<Row>, logit_row0: usize, logit_rows: usize, seq0: usize, embed: bool, carry_out: bool, logits: bool, sample: bool) -> PassPlan {
        group_attention_rows(&mut rows);
        let n = rows.len() as u32;
        PassPlan {
            rows,
            logit_row0: logit_row0 as u32,
            logit_rows: logit_rows as u32,
            seq0: seq0 as u32,
            embed,
            carry_out,
            logits,
            sample,
            body: MatmulPath::for_rows(n),
            head: MatmulPath::for_rows(logit_rows as u32),
            before: Vec::new(),
        }
    }

    /// The record the shaders read (`struct Pass`).
    pub fn info(&self) -> PassInfo {
        PassInfo { rows: self.rows.len() as u32, logit_row0: self.logit_row0, logit_rows: self.logit_rows, seq0: self.seq0 }
    }
}

/// Everything one call (one prefill chunk, or one decode step) does, in order: each pass's
/// copies and pass, then `after`; one submit.
#[derive(Clone, Debug)]
pub struct CallPlan {
    pub passes: Vec<PassPlan>,
    pub after: Vec<RowCopy>,
    /// Logit rows the last pass computes (read back and/or sampled).
    pub logit_rows: usize,
    /// The last pass samples.
    pub sample: bool,
}

impl CallPlan {
    /// Rows of every pass together.
    pub fn rows(&self) -> usize {
        self.passes.iter().map(|p| p.rows.len()).sum()
    }
}

/// Builds the rows of a session's passes: its model's config and batch.
pub struct Planner<'a> {
    pub cfg: &'a Config,
    pub batch: usize,
}

impl Planner<'_> {
    /// First OUT row of the carried-state scratch (IN rows come first: one per (loop, sequence)).
    pub fn out_base(&self) -> usize {
        self.cfg.num_loops * self.batch
    }

    /// Rows a pass of a session with prefill chunk `chunk` can have.
    pub fn max_rows(&self, chunk: usize) -> usize {
        chunk.max(self.batch * self.cfg.num_loops)
    }

    fn vanilla(&self) -> bool {
        self.cfg.num_loops > 1 && self.cfg.looping == Looping::Vanilla
    }

    /// The row of sequence `b`, loop `l`, position `pos`; `csrc`/`cdst` are scratch rows.
    #[allow(clippy::too_many_arguments)]
    pub fn row(&self, b: usize, l: usize, pos: usize, token: u32, fresh: usize, ring_write: bool, csrc: usize, cdst: usize) -> Row {
        let c = self.cfg;
        let plt = c.is_plt();
        let (kv_slot, attn_slot) = if self.vanilla() {
            ((l * self.batch + b) as u32, (l * self.batch + b) as u32)
        } else if l == 0 {
            (b as u32, b as u32)
        } else {
            (NONE, b as u32)
        };
        let local = plt && l > 0;
        Row {
            pos: pos as u32,
            lp: l as u32,
            seq: b as u32,
            token,
            kv_slot,
            attn_slot,
            ring: if local { (b * (c.num_loops - 1) + l - 1) as u32 } else { NONE },
            fresh: fresh as u32,
            ring_write: (local && ring_write) as u32,
            csrc: if local { csrc as u32 } else { NONE },
            cdst: if plt && l + 1 < c.num_loops { cdst as u32 } else { NONE },
            e_scale: if local { c.emb_scale } else { 1.0 },
            c_scale: if local { c.hidden_scale } else { 0.0 },
            gnext: 0,
            gfollow: 0,
            _pad: 0,
        }
    }

    /// One prefill chunk of sequence `seq` starting at position `p0` (PLT-SPEC section 3): L
    /// passes of the chunk's rows. `logits` = (first row, rows) wanted from the last loop;
    /// `sample`: draw the next token from the last of them.
    pub fn prefill(&self, seq: usize, p0: usize, chunk: &[u32], logits: (usize, usize), sample: bool) -> CallPlan {
        let c = self.cfg;
        let (l_n, plt, w, t_n) = (c.num_loops, c.is_plt(), c.window_slots(), chunk.len());
        let out = self.out_base();
        let (lr0, lrn) = logits;
        let passes = (0..l_n)
            .map(|l| {
                let rows = (0..t_n)
                    .map(|t| {
                        // Loop l's input at row t is C_t = Norm(H^{l-1}_{t-1}): OUT row t-1 of
                        // the previous pass, or for t = 0 the carried state (IN row 0).
                        let csrc = if t == 0 { 0 } else { out + t - 1 };
                        self.row(seq, l, p0 + t, chunk[t], t + 1, t + w >= t_n, csrc, out + t)
                    })
                    .collect();
                let last = l + 1 == l_n;
                let mut pass = PassPlan::new(rows, lr0, lrn, seq, l == 0 || plt, plt && !last, last && lrn > 0, last && sample);
                if plt && l > 0 {
                    // C_{p0} for loop l is the carried state; the new one is Norm(H^{l-1}) of the
                    // chunk's last token. Read the old one before writing the new one.
                    let carry_row = l * self.batch + seq;
                    pass.before = vec![
                        RowCopy { src: RowBuf::Carry, src_row: carry_row, dst: RowBuf::Scratch, dst_row: 0, rows: 1 },
                        RowCopy { src: RowBuf::Scratch, src_row: out + t_n - 1, dst: RowBuf::Carry, dst_row: carry_row, rows: 1 },
                    ];
                }
                pass
            })
            .collect();
        CallPlan { passes, after: Vec::new(), logit_rows: lrn, sample }
    }

    /// One decode step: `tokens[b]` at `positions[b]` for every sequence. A PLT model with the
    /// fused schedule runs ONE pass of B*L rows, loop-major (row l*B + b; PLT-SPEC section 5),
    /// loop-0 rows first so their K/V reaches the global cache before any row attends; otherwise
    /// L passes of B rows. `logits`: the last loop's logits are computed (B rows).
    pub fn decode(&self, positions: &[usize], tokens: &[u32], schedule: Schedule, logits: bool, sample: bool) -> CallPlan {
        let c = self.cfg;
        let (l_n, bsz, plt) = (c.num_loops, self.batch, c.is_plt());
        let out = self.out_base();
        let logit_rows = if logits { bsz } else { 0 };
        // Row (l, b): input C^l_b from IN row l*B + b; output Norm(h) to OUT row l*B + b.
        let row = |l: usize, b: usize| self.row(b, l, positions[b], tokens[b], 1, true, l * bsz + b, out + l * bsz + b);
        let passes = if plt && schedule == Schedule::Fused {
            let rows = (0..l_n).flat_map(|l| (0..bsz).map(move |b| (l, b))).map(|(l, b)| row(l, b)).collect();
            vec![PassPlan::new(rows, (l_n - 1) * bsz, logit_rows, 0, true, l_n > 1, logits, sample)]
        } else {
            (0..l_n)
                .map(|l| {
                    let last = l + 1 == l_n;
                    let rows = (0..bsz).map(|b| row(l, b)).collect();
                    PassPlan::new(rows, 0, logit_rows, 0, l == 0 || plt, plt && !last, logits && last, sample && last)
                })
                .collect::<Vec<_>>()
        };
        let mut plan = CallPlan { passes, after: Vec::new(), logit_rows, sample };
        if plt {
            // Loops >= 1 read C^l from IN rows; C^{l+1} <- Norm(H^l) for l < L-1 after every loop
            // has read its old C^l.
            let n = (l_n - 1) * bsz;
            plan.passes[0].before.push(RowCopy { src: RowBuf::Carry, src_row: bsz, dst: RowBuf::Scratch, dst_row: bsz, rows: n });
            plan.after.push(RowCopy { src: RowBuf::Scratch, src_row: out, dst: RowBuf::Carry, dst_row: bsz, rows: n });
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(loops: usize, looping: Looping) -> Config {
        let json = serde_json::json!({
            "vocab_size": 50, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 64,
            "plt_num_loops": loops, "plt_window_size": [3, 0],
        });
        let mut c = Config::from_json_str(&json.to_string()).unwrap();
        c.looping = looping;
        c
    }

    /// Plans are built and checked without a device: the fused step is one pass of B*L rows,
    /// loop-major, loop 0 writing the global cache and later loops reading it and their ring.
    #[test]
    fn fused_decode_is_one_loop_major_pass() {
        let c = cfg(3, Looping::Plt);
        let p = Planner { cfg: &c, batch: 2 };
        let plan = p.decode(&[5, 9], &[7, 8], Schedule::Fused, true, true);
        assert_eq!(plan.passes.len(), 1);
        let pass = &plan.passes[0];
        assert_eq!(pass.rows.len(), 6);
        assert_eq!((pass.logit_row0, pass.logit_rows, pass.sample), (4, 2, true));
        assert_eq!(pass.body, MatmulPath::RowSharing);
        for (i, r) in pass.rows.iter().enumerate() {
            let (l, b) = (i / 2, i % 2);
            assert_eq!((r.lp as usize, r.seq as usize, r.token), (l, b, [7, 8][b]));
            assert_eq!(r.kv_slot, if l == 0 { b as u32 } else { NONE });
            assert_eq!(r.attn_slot, b as u32);
            assert_eq!(r.ring == NONE, l == 0);
            assert_eq!(r.cdst == NONE, l == 2, "the last loop carries nothing");
        }
        // Loops 0 and 1 of a sequence (and 2) attend together: one group per sequence.
        assert_eq!((pass.rows[0].gnext, pass.rows[2].gfollow), (2, 1));
        assert_eq!(pass.before, vec![RowCopy { src: RowBuf::Carry, src_row: 2, dst: RowBuf::Scratch, dst_row: 2, rows: 4 }]);
        assert_eq!(plan.after, vec![RowCopy { src: RowBuf::Scratch, src_row: 6, dst: RowBuf::Carry, dst_row: 2, rows: 4 }]);
        let seq = p.decode(&[5, 9], &[7, 8], Schedule::Sequential, true, false);
        assert_eq!(seq.passes.iter().map(|p| p.rows.len()).collect::<Vec<_>>(), vec![2, 2, 2]);
        assert!(seq.passes.iter().all(|p| p.embed) && !seq.passes[0].logits && seq.passes[2].logits);
    }

    /// Vanilla models give each loop its own cache slot and no cross-loop input; a long prefill
    /// chunk takes the tiled path.
    #[test]
    fn vanilla_and_prefill_rows() {
        let c = cfg(2, Looping::Vanilla);
        let p = Planner { cfg: &c, batch: 2 };
        let plan = p.decode(&[0, 0], &[1, 2], Schedule::Fused, false, false);
        assert_eq!(plan.passes.len(), 2, "vanilla models always run L passes");
        assert_eq!(plan.passes[1].rows[1].kv_slot, 3);
        assert!(!plan.passes[1].embed && plan.after.is_empty());
        let c = cfg(2, Looping::Plt);
        let p = Planner { cfg: &c, batch: 1 };
        let chunk: Vec<u32> = (0..20).collect();
        let plan = p.prefill(0, 4, &chunk, (19, 1), false);
        assert_eq!(plan.passes.len(), 2);
        let l1 = &plan.passes[1];
        assert_eq!((l1.body, l1.head), (MatmulPath::Tiled, MatmulPath::RowSharing));
        assert_eq!((l1.rows[0].csrc, l1.rows[5].csrc), (0, (p.out_base() + 4) as u32));
        assert_eq!(l1.rows.iter().filter(|r| r.ring_write == 1).count(), c.window_slots());
        assert_eq!(l1.before.len(), 2);
    }
}
