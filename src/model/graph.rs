//! The forward graph of one pass: every kernel bound to the session's buffers once
//! (`Graph::bind`), and the order they run in for a given pass plan (`Graph::dispatches`). The
//! bindings of a kernel and its place in the order are side by side in this file.

use super::buffers::SessionBuffers;
use super::plan::{attention_split, PassPlan};
use super::upload::{GpuModel, Matrix};
use crate::config::{Config, GateMode};
use crate::error::Result;
use crate::gpu::{Dispatch, Gpu};
use crate::kernels::*;
use crate::sampling::MAX_PENALTY_WINDOW;

/// A matmul with kernels bound for each path, one per part of its matrix (`upload::Matrix`:
/// windows of the binding limit, formats of a fused matrix); the pass plan picks the path.
struct Mm {
    tiled: Vec<Dispatch>,
    rows: Vec<Dispatch>,
    /// For a matmul whose input is an RMSNorm: the row-sharing kernels that normalise the raw
    /// rows themselves (`NORM`), so decode passes skip the norm dispatch. None where K % 8 != 0,
    /// a part is quantised, or the adapter does not fold norms (`Gpu::fuse_norms`).
    rows_normed: Option<Vec<Dispatch>>,
    /// The row-sharing kernels apply SwiGLU themselves (gate/up, K % 8 == 0: `GLU`).
    glu: bool,
}

impl Mm {
    fn pick(&self, path: MatmulPath) -> &[Dispatch] {
        match path {
            MatmulPath::RowSharing => &self.rows,
            MatmulPath::Tiled => &self.tiled,
        }
    }
}

struct LayerOps {
    input_norm: Dispatch,
    qkv: Mm,
    rope_store: Dispatch,
    attention: Dispatch,
    /// Row-sharing passes of long sessions: split global attention, then combine.
    attention_split: Option<(Dispatch, Dispatch)>,
    ring_store: Option<Dispatch>,
    o_proj: Mm,
    post_norm: Dispatch,
    gate_up: Mm,
    swiglu: Dispatch,
    down: Mm,
}

pub(crate) struct Graph {
    /// One per part of the embedding table.
    embed: Vec<Dispatch>,
    layers: Vec<LayerOps>,
    norm_carry: Dispatch,
    final_norm: Dispatch,
    lm_head: Mm,
    sample: Dispatch,
}

/// What a matmul of the graph reads and writes.
struct MmSpec<'a> {
    k: usize,
    n: usize,
    x: &'a wgpu::Buffer,
    w: &'a Matrix,
    bias: Option<&'a wgpu::Buffer>,
    y: &'a wgpu::Buffer,
    /// y += W x (the residual add).
    accumulate: bool,
    /// The lm_head: logit rows in and out.
    logit_rows: bool,
    /// (raw input rows, RMSNorm weight) when `x` is that norm's output.
    norm: Option<(&'a wgpu::Buffer, &'a wgpu::Buffer)>,
    /// The SwiGLU output when W's rows are gate/up pairs: the row-sharing vec kernel writes
    /// silu(gate) * up there itself; the other kernels write the pairs to `y` and the swiglu
    /// dispatch follows them.
    glu: Option<&'a wgpu::Buffer>,
}

impl Graph {
    /// Binds every kernel of the graph to `model`'s weights and the session's buffers.
    pub fn bind(gpu: &Gpu, model: &GpuModel, bufs: &SessionBuffers, opts: &super::SessionOptions) -> Result<Graph> {
        let c: &Config = &model.cfg;
        let (d, f, v, h) = (c.hidden_size, c.intermediate_size, c.vocab_size, c.num_attention_heads);
        let (qd, kvd) = (c.q_dim(), c.kv_dim());
        let plt = c.is_plt();
        let b = opts.batch;
        let shape = AttnShape {
            heads: h,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            hidden: d,
            positions: opts.context,
            slots: if c.num_loops > 1 && !plt { c.num_loops * b } else { b },
            window: c.window_slots(),
            rings: if plt { b * (c.num_loops - 1) } else { 0 },
            gate_mode: match (plt, c.gate_mode) {
                (false, _) => 0,
                (true, GateMode::Query) => 1,
                (true, GateMode::Hidden) => 2,
            },
            eps: c.rms_norm_eps,
            kv_f16: opts.kv_f16,
        };
        let dummy = &model.dummy;
        let mm = |s: MmSpec| -> Result<Mm> {
            // The folded norm and the SwiGLU epilogue are options of the float vec kernel; the
            // epilogue needs the gate/up pairs side by side.
            let float_vec = s.k % 8 == 0 && s.w.parts.iter().all(|p| !p.1.format.is_quantised());
            let glu = s.glu.filter(|_| float_vec && s.w.interleaved);
            let fold = float_vec && gpu.fuse_norms && s.norm.is_some();
            let (mut tiled, mut rows, mut rows_normed) = (Vec::new(), Vec::new(), Vec::new());
            for (w, part) in &s.w.parts {
                let kernel = |path, lanes, norm_eps, glu: bool| Matmul {
                    k: s.k,
                    n: part.rows,
                    storage: part.format,
                    path,
                    lanes,
                    subgroups: gpu.subgroup_reduce(lanes),
                    logit_rows: s.logit_rows,
                    norm_eps,
                    glu,
                    out: if glu { OutMap { stride: s.n / 2, step: 1 } } else { OutMap { stride: s.n, step: part.step } },
                };
                // With the SwiGLU epilogue a part's pair j is output column out0 / 2 + j.
                let out_offset = if glu.is_some() { part.out0 / 2 } else { part.out0 } as u32;
                let params = gpu.uniform("mm_params", &MatmulParams { accumulate: s.accumulate, bias: s.bias.is_some(), out_offset }.bytes());
                let lanes = gpu.decode_lanes(if glu.is_some() { part.rows / 2 } else { part.rows });
                let io = |x, y, norm_weight| MatmulIo { params: &params, pass: &bufs.pass, x, w, bias: s.bias.unwrap_or(dummy), y, norm_weight };
                // The row-sharing kernels write the SwiGLU output where they apply it.
                let ry = glu.unwrap_or(s.y);
                if let (true, Some((raw, nw))) = (fold, s.norm) {
                    rows_normed.push(kernel(MatmulPath::RowSharing, lanes, Some(c.rms_norm_eps), glu.is_some()).dispatch(gpu, &io(raw, ry, nw))?);
                }
                tiled.push(kernel(MatmulPath::Tiled, 8, None, false).dispatch(gpu, &io(s.x, s.y, dummy))?);
                rows.push(kernel(MatmulPath::RowSharing, lanes, None, glu.is_some()).dispatch(gpu, &io(s.x, ry, dummy))?);
            }
            Ok(Mm { tiled, rows, rows_normed: fold.then_some(rows_normed), glu: glu.is_some() })
        };
        let norm_params = gpu.uniform("norm_params", &NormParams { normalize_carry: c.normalize_per_loop }.bytes());
        let norm = |rows: NormRows, x: &wgpu::Buffer, weight: &wgpu::Buffer, out: &wgpu::Buffer| {
            let io = NormIo { params: &norm_params, pass: &bufs.pass, rows: &bufs.rows, x, weight, out };
            Norm { d, eps: c.rms_norm_eps, rows, wg: NORM_WG }.dispatch(gpu, &io)
        };
        let split = attention_split(opts.context);
        let mut layers = Vec::new();
        for (i, lw) in model.layers.iter().enumerate() {
            let ring = bufs.rings.get(i).unwrap_or(dummy);
            let rope_io = RopeIo { rows: &bufs.rows, qkv: &bufs.qkv, kv: &bufs.kv[i], ring, table: &bufs.rope_table };
            let attn_io = AttentionIo {
                rows: &bufs.rows,
                qkv: &bufs.qkv,
                kv: &bufs.kv[i],
                ring,
                gate: lw.plt_gate.as_ref().unwrap_or(dummy),
                hidden: &bufs.hidden,
                out: &bufs.att,
                partials: &bufs.partials,
            };
            let attention = |split| Attention { shape, split }.dispatch(gpu, &attn_io);
            layers.push(LayerOps {
                input_norm: norm(NormRows::Pass, &bufs.hidden, &lw.input_layernorm, &bufs.normed)?,
                qkv: mm(MmSpec {
                    k: d,
                    n: qd + 2 * kvd,
                    x: &bufs.normed,
                    w: &lw.qkv_proj,
                    bias: lw.qkv_bias.as_ref(),
                    y: &bufs.qkv,
                    accumulate: false,
                    logit_rows: false,
                    norm: Some((&bufs.hidden, &lw.input_layernorm)),
                    glu: None,
                })?,
                rope_store: Rope { shape, ring: false }.dispatch(gpu, &rope_io)?,
                attention: attention(AttnSplit::Whole)?,
                attention_split: match split {
                    Some((len, splits)) => Some((attention(AttnSplit::Partials { len, splits })?, attention(AttnSplit::Combine { len, splits })?)),
                    None => None,
                },
                ring_store: if plt { Some(Rope { shape, ring: true }.dispatch(gpu, &rope_io)?) } else { None },
                o_proj: mm(MmSpec { k: qd, n: d, x: &bufs.att, w: &lw.o_proj, bias: None, y: &bufs.hidden, accumulate: true, logit_rows: false, norm: None, glu: None })?,
                post_norm: norm(NormRows::Pass, &bufs.hidden, &lw.post_attention_layernorm, &bufs.normed)?,
                gate_up: mm(MmSpec {
                    k: d,
                    n: 2 * f,
                    x: &bufs.normed,
                    w: &lw.gate_up_proj,
                    bias: None,
                    y: &bufs.gate_up,
                    accumulate: false,
                    logit_rows: false,
                    norm: Some((&bufs.hidden, &lw.post_attention_layernorm)),
                    glu: Some(&bufs.act),
                })?,
                swiglu: Swiglu { f }.dispatch(gpu, &SwigluIo { gate_up: &bufs.gate_up, out: &bufs.act })?,
                down: mm(MmSpec { k: f, n: d, x: &bufs.act, w: &lw.down_proj, bias: None, y: &bufs.hidden, accumulate: true, logit_rows: false, norm: None, glu: None })?,
            });
        }
        let sample_io = SampleIo {
            pass: &bufs.pass,
            params: &bufs.sample_params,
            history: &bufs.history,
            logits: &bufs.logits,
            work: &bufs.sample_work,
            chosen: &bufs.chosen,
        };
        Ok(Graph {
            embed: model
                .embed
                .parts
                .iter()
                .map(|(e, p)| {
                    let io = EmbedIo { rows: &bufs.rows, embed: e, carried: &bufs.carry_scratch, out: &bufs.hidden };
                    Embed { d, storage: p.format, first: p.first, rows: p.rows }.dispatch(gpu, &io)
                })
                .collect::<Result<_>>()?,
            layers,
            norm_carry: norm(NormRows::Carry, &bufs.hidden, &model.norm, &bufs.carry_scratch)?,
            final_norm: norm(NormRows::Logits, &bufs.hidden, &model.norm, &bufs.normed)?,
            lm_head: mm(MmSpec {
                k: d,
                n: v,
                x: &bufs.normed,
                w: model.lm_head.as_ref().unwrap_or(&model.embed),
                bias: None,
                y: &bufs.logits,
                accumulate: false,
                logit_rows: true,
                norm: Some((&bufs.hidden, &model.norm)),
                glu: None,
            })?,
            sample: Sample { vocab: v, history: MAX_PENALTY_WINDOW }.dispatch(gpu, &sample_io)?,
        })
    }

    /// The dispatches of one pass, in order, with a label each.
    pub fn dispatches<'a>(&'a self, plan: &PassPlan) -> Vec<(&'static str, &'a Dispatch)> {
        let mut v: Vec<(&'static str, &'a Dispatch)> = Vec::new();
        // An RMSNorm and the matmul that reads it, or (row-sharing passes) the matmul
        // normalising its input itself.
        let normed = |v: &mut Vec<_>, path: MatmulPath, norm: (&'static str, &'a Dispatch), mm: (&'static str, &'a Mm)| match &mm.1.rows_normed {
            Some(fused) if path == MatmulPath::RowSharing => v.extend(fused.iter().map(|d| (mm.0, d))),
            _ => {
                v.push(norm);
                v.extend(mm.1.pick(path).iter().map(|d| (mm.0, d)));
            }
        };
        if plan.embed {
            v.extend(self.embed.iter().map(|d| ("embed_input", d)));
        }
        for layer in &self.layers {
            normed(&mut v, plan.body, ("input_norm", &layer.input_norm), ("qkv_proj", &layer.qkv));
            v.push(("rope_store", &layer.rope_store)); // row 0's K/V reaches the global cache first
            match &layer.attention_split {
                Some((split, combine)) if plan.body == MatmulPath::RowSharing => {
                    v.push(("attention", split));
                    v.push(("attention_combine", combine));
                }
                _ => v.push(("attention", &layer.attention)),
            }
            if let Some(rs) = &layer.ring_store {
                v.push(("ring_store", rs)); // after attention has read the ring's older slots
            }
            v.extend(layer.o_proj.pick(plan.body).iter().map(|d| ("o_proj+residual", d)));
            normed(&mut v, plan.body, ("post_norm", &layer.post_norm), ("gate_up_proj", &layer.gate_up));
            if plan.body == MatmulPath::Tiled || !layer.gate_up.glu {
                v.push(("swiglu", &layer.swiglu)); // (else the row-sharing kernel applied it)
            }
            v.extend(layer.down.pick(plan.body).iter().map(|d| ("down_proj+residual", d)));
        }
        if plan.carry_out {
            v.push(("norm_carry", &self.norm_carry));
        }
        if plan.logits {
            normed(&mut v, plan.head, ("final_norm", &self.final_norm), ("lm_head", &self.lm_head));
            if plan.sample {
                v.push(("sample", &self.sample));
            }
        }
        v
    }
}
