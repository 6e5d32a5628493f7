//! CPU reference ("oracle") of the whole model: building blocks (PLT-SPEC section 2), the forward
//! pass (section 3, or section 6 in vanilla mode), and a step-by-step decoder with the caches and
//! cross-loop-parallel rows of sections 4 and 5.
//!
//! Plain Rust, f32 storage and f64 accumulation: simple, slow, obviously right. Every GPU test
//! compares against it, so it favours the spec's wording over speed. Callers validate inputs
//! (token ids, lengths); here a bad input is a panic with a message, not an `Error`.

use crate::config::{Config, GateMode, Looping};
use crate::weights::{Layer, Tensor, Weights};

// ---------------------------------------------------------------------------------------------
// Building blocks (section 2)
// ---------------------------------------------------------------------------------------------

/// RMSNorm(x; w) with f64 statistics.
///
/// `x` may hold several rows of length `w.len()`; each row is normalised on its own.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    assert!(
        d > 0 && x.len().is_multiple_of(d),
        "rmsnorm: x has {} values, not a multiple of D = {d}",
        x.len()
    );
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / d as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        out.extend(
            row.iter()
                .zip(w)
                .map(|(&v, &g)| (v as f64 * inv * g as f64) as f32),
        );
    }
    out
}

/// y[r][o] = sum_k x[r][k] * W[o][k] (+ bias[o]) for `rows` rows of x (x is rows*K, W is [O, K]).
pub fn matmul(x: &[f32], rows: usize, w: &Tensor, bias: Option<&Tensor>) -> Vec<f32> {
    assert_eq!(
        w.shape.len(),
        2,
        "matmul: W must be 2-D, got shape {:?}",
        w.shape
    );
    let (o_dim, k_dim) = (w.shape[0], w.shape[1]);
    assert_eq!(x.len(), rows * k_dim, "matmul: x is not [{rows}, {k_dim}]");
    if let Some(b) = bias {
        assert_eq!(b.data.len(), o_dim, "matmul: bias is not [{o_dim}]");
    }
    let mut y = Vec::with_capacity(rows * o_dim);
    for r in 0..rows {
        let xr = &x[r * k_dim..(r + 1) * k_dim];
        for o in 0..o_dim {
            let mut acc = dot(xr, w.row(o));
            if let Some(b) = bias {
                acc += b.data[o] as f64;
            }
            y.push(acc as f32);
        }
    }
    y
}

/// RoPE, HF rotate_half convention, in place on one head vector of length Dh at position `pos`.
///
/// Pairs are (j, j + Dh/2), not adjacent elements (the interleaved convention would fail
/// silently). `inv_freq[j] = theta^(-2j/Dh)`; angles and rotation in f64.
pub fn rope(v: &mut [f32], pos: usize, theta: f32) {
    let inv_freq = crate::config::rope_inv_freq(theta, v.len(), &crate::config::RopeScaling::None);
    rope_with(v, pos, &inv_freq);
}

/// `rope` with the inverse frequencies given ([Dh/2], `Config::rope_inv_freq`: scaled RoPE).
pub fn rope_with(v: &mut [f32], pos: usize, inv_freq: &[f64]) {
    let dh = v.len();
    assert!(dh.is_multiple_of(2), "rope: head dim {dh} is odd");
    let half = dh / 2;
    assert_eq!(inv_freq.len(), half, "rope: {} frequencies for a head of {dh}", inv_freq.len());
    for (j, &inv_freq) in inv_freq.iter().enumerate() {
        let (sin, cos) = (pos as f64 * inv_freq).sin_cos();
        let (a, b) = (v[j] as f64, v[j + half] as f64);
        v[j] = (a * cos - b * sin) as f32;
        v[j + half] = (b * cos + a * sin) as f32;
    }
}

/// One head of attention: softmax over keys of q·k/sqrt(Dh), weighted sum of values.
pub fn attend(q: &[f32], keys: &[&[f32]], values: &[&[f32]]) -> Vec<f32> {
    assert!(!keys.is_empty(), "attend: empty key set");
    assert_eq!(
        keys.len(),
        values.len(),
        "attend: {} keys but {} values",
        keys.len(),
        values.len()
    );
    let scale = 1.0 / (q.len() as f64).sqrt();
    let scores: Vec<f64> = keys.iter().map(|k| dot(q, k) * scale).collect();
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let p: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let z: f64 = p.iter().sum();
    let mut out = vec![0f64; values[0].len()];
    for (pi, v) in p.iter().zip(values) {
        for (o, &x) in out.iter_mut().zip(v.iter()) {
            *o += pi * x as f64;
        }
    }
    out.iter().map(|&o| (o / z) as f32).collect()
}

pub fn silu(x: f32) -> f32 {
    let x = x as f64;
    (x / (1.0 + (-x).exp())) as f32
}

pub fn sigmoid(x: f32) -> f32 {
    (1.0 / (1.0 + (-(x as f64)).exp())) as f32
}

/// log_softmax(logits)[token] in f64.
pub fn logprob(logits: &[f32], token: u32) -> f64 {
    let t = token as usize;
    assert!(
        t < logits.len(),
        "logprob: token {t} outside a vocabulary of {}",
        logits.len()
    );
    let max = logits
        .iter()
        .map(|&x| x as f64)
        .fold(f64::NEG_INFINITY, f64::max);
    let lse = max
        + logits
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    logits[t] as f64 - lse
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "dot: lengths {} and {}", a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

// ---------------------------------------------------------------------------------------------
// Pieces of one layer, shared by `forward` and `Decoder` (section 3)
// ---------------------------------------------------------------------------------------------

/// E_t = embed_tokens[x_t], [D].
fn embed<'w>(cfg: &Config, w: &'w Weights, token: u32) -> &'w [f32] {
    assert!(
        (token as usize) < cfg.vocab_size,
        "token {token} outside the vocabulary (V = {})",
        cfg.vocab_size
    );
    w.embed_tokens.row(token as usize)
}

/// q, k, v of `pos.len()` rows of `u` (row r at position pos[r]), RoPE applied per head:
/// ([rows, H*Dh], [rows, Hkv*Dh], [rows, Hkv*Dh]).
fn qkv(cfg: &Config, layer: &Layer, u: &[f32], pos: &[usize]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let a = &layer.self_attn;
    let rows = pos.len();
    let mut q = matmul(u, rows, &a.q_proj.weight, a.q_proj.bias.as_ref());
    let mut k = matmul(u, rows, &a.k_proj.weight, a.k_proj.bias.as_ref());
    let v = matmul(u, rows, &a.v_proj.weight, a.v_proj.bias.as_ref());
    let dh = cfg.head_dim;
    let inv_freq = cfg.rope_inv_freq();
    for (r, &p) in pos.iter().enumerate() {
        for head in q[r * cfg.q_dim()..(r + 1) * cfg.q_dim()].chunks_mut(dh) {
            rope_with(head, p, &inv_freq);
        }
        for head in k[r * cfg.kv_dim()..(r + 1) * cfg.kv_dim()].chunks_mut(dh) {
            rope_with(head, p, &inv_freq);
        }
    }
    (q, k, v)
}

/// Attn(q; K, V, S) for all H query heads of one row: `q` is [H*Dh], each key/value row is
/// [Hkv*Dh] (one per position of S); query head h reads kv head h / (H/Hkv). Returns [H*Dh].
fn attend_heads(cfg: &Config, q: &[f32], keys: &[&[f32]], values: &[&[f32]]) -> Vec<f32> {
    let dh = cfg.head_dim;
    let group = cfg.num_attention_heads / cfg.num_key_value_heads;
    let mut out = Vec::with_capacity(cfg.q_dim());
    for h in 0..cfg.num_attention_heads {
        let kvh = h / group;
        let kh: Vec<&[f32]> = keys.iter().map(|k| &k[kvh * dh..(kvh + 1) * dh]).collect();
        let vh: Vec<&[f32]> = values
            .iter()
            .map(|v| &v[kvh * dh..(kvh + 1) * dh])
            .collect();
        out.extend(attend(&q[h * dh..(h + 1) * dh], &kh, &vh));
    }
    out
}

/// The per-head gate g of loops l >= 1, [H]. `q` is this row's [H*Dh] after RoPE; `h_in` is the
/// layer input [D] before input_layernorm.
fn gate(cfg: &Config, layer: &Layer, q: &[f32], h_in: &[f32]) -> Vec<f32> {
    let g = layer
        .self_attn
        .plt_gate
        .as_ref()
        .expect("a PLT layer (L > 1, parallel) needs self_attn.plt_gate");
    let dh = cfg.head_dim;
    match cfg.gate_mode {
        GateMode::Query => (0..cfg.num_attention_heads)
            .map(|h| {
                sigmoid(
                    (dot(&q[h * dh..(h + 1) * dh], g.weight.row(h)) + g.bias.data[h] as f64) as f32,
                )
            })
            .collect(),
        GateMode::Hidden => {
            let norm = g
                .gate_norm
                .as_ref()
                .expect("the hidden-state gate needs plt_gate.gate_norm");
            let n = rmsnorm(h_in, &norm.data, cfg.rms_norm_eps);
            matmul(&n, 1, &g.weight, Some(&g.bias))
                .into_iter()
                .map(sigmoid)
                .collect()
        }
    }
}

/// o_h = g_h * G_h + (1 - g_h) * S_h, [H*Dh].
fn mix(cfg: &Config, g: &[f32], global: &[f32], local: &[f32]) -> Vec<f32> {
    let dh = cfg.head_dim;
    (0..cfg.q_dim())
        .map(|j| {
            let gh = g[j / dh] as f64;
            (gh * global[j] as f64 + (1.0 - gh) * local[j] as f64) as f32
        })
        .collect()
}

/// The rest of a layer on `rows` rows, in place on h [rows, D] given the attention output o
/// [rows, H*Dh]: h = h + o_proj(o); h = h + MLP(RMSNorm(h; post_attention_layernorm)).
fn layer_tail(cfg: &Config, layer: &Layer, h: &mut [f32], o: &[f32], rows: usize) {
    let attn = matmul(o, rows, &layer.self_attn.o_proj.weight, None);
    for (x, y) in h.iter_mut().zip(&attn) {
        *x += y;
    }
    let u = rmsnorm(h, &layer.post_attention_layernorm.data, cfg.rms_norm_eps);
    let m = &layer.mlp;
    let g = matmul(&u, rows, &m.gate_proj.weight, None);
    let up = matmul(&u, rows, &m.up_proj.weight, None);
    let act: Vec<f32> = g
        .iter()
        .zip(&up)
        .map(|(&a, &b)| (silu(a) as f64 * b as f64) as f32)
        .collect();
    let down = matmul(&act, rows, &m.down_proj.weight, None);
    for (x, y) in h.iter_mut().zip(&down) {
        *x += y;
    }
}

/// `Norm` of the cross-loop shift: RMSNorm(.; model.norm) when normalize_per_loop, else identity.
fn carry_norm(cfg: &Config, w: &Weights, h: &[f32]) -> Vec<f32> {
    if cfg.normalize_per_loop {
        rmsnorm(h, &w.norm.data, cfg.rms_norm_eps)
    } else {
        h.to_vec()
    }
}

/// X^l_t = a * E_t + b * C_t, [D].
fn loop_input(cfg: &Config, e: &[f32], c: &[f32]) -> Vec<f32> {
    let (a, b) = (cfg.emb_scale as f64, cfg.hidden_scale as f64);
    e.iter()
        .zip(c)
        .map(|(&e, &c)| (a * e as f64 + b * c as f64) as f32)
        .collect()
}

/// logits = lm_head(RMSNorm(h; model.norm)), [V].
fn head(cfg: &Config, w: &Weights, h: &[f32]) -> Vec<f32> {
    let n = rmsnorm(h, &w.norm.data, cfg.rms_norm_eps);
    matmul(&n, 1, w.lm_head(), None)
}

// ---------------------------------------------------------------------------------------------
// Forward pass over a sequence (sections 3 and 6)
// ---------------------------------------------------------------------------------------------

/// Full forward pass over `tokens` (PLT-SPEC section 3, or section 6 when cfg.looping is
/// Vanilla; L = 1 is a plain Llama/Qwen2 forward). Returns logits [T][V].
pub fn forward(cfg: &Config, w: &Weights, tokens: &[u32]) -> Vec<Vec<f32>> {
    let (d, t_len) = (cfg.hidden_size, tokens.len());
    if t_len == 0 {
        return vec![];
    }
    let e: Vec<f32> = tokens
        .iter()
        .flat_map(|&x| embed(cfg, w, x).iter().copied())
        .collect(); // [T, D]
    let mut k0v0 = Vec::new(); // [N] loop 0's K/V, filled by loop 0
    let mut h = stack(cfg, w, &e, 0, &mut k0v0); // H^0, [T, D]
    for l in 1..cfg.num_loops {
        let x = match cfg.looping {
            Looping::Vanilla => h,
            Looping::Plt => {
                let mut x = Vec::with_capacity(t_len * d);
                for t in 0..t_len {
                    // The cross-loop shift: C_t = Norm(H^{l-1}_{t-1}), C_0 = 0.
                    let c = if t == 0 {
                        vec![0.0; d]
                    } else {
                        carry_norm(cfg, w, &h[(t - 1) * d..t * d])
                    };
                    x.extend(loop_input(cfg, &e[t * d..(t + 1) * d], &c));
                }
                x
            }
        };
        h = stack(cfg, w, &x, l, &mut k0v0);
    }
    h.chunks(d).map(|ht| head(cfg, w, ht)).collect()
}

/// Stack(X, loop l) over all T positions: x is [T, D], returns H^l [T, D]. When l == 0 it
/// records loop 0's K/V per layer into `k0v0`; PLT loops l >= 1 read them in the global branch.
fn stack(cfg: &Config, w: &Weights, x: &[f32], l: usize, k0v0: &mut Vec<KvCache>) -> Vec<f32> {
    let (d, qd, kvd) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim());
    let t_len = x.len() / d;
    let plt_loop = cfg.is_plt() && l > 0;
    let pos: Vec<usize> = (0..t_len).collect();
    let mut h = x.to_vec();
    for (i, layer) in w.layers.iter().enumerate() {
        let h_in = h.clone();
        let u = rmsnorm(&h, &layer.input_layernorm.data, cfg.rms_norm_eps);
        let (q, k, v) = qkv(cfg, layer, &u, &pos);
        let ks: Vec<&[f32]> = k.chunks(kvd).collect(); // this loop's keys, [T][Hkv*Dh]
        let vs: Vec<&[f32]> = v.chunks(kvd).collect();
        if l == 0 {
            k0v0.push(KvCache {
                k: ks.iter().map(|r| r.to_vec()).collect(),
                v: vs.iter().map(|r| r.to_vec()).collect(),
            });
        }
        let mut o = Vec::with_capacity(t_len * qd); // [T, H*Dh]
        for t in 0..t_len {
            let qt = &q[t * qd..(t + 1) * qd];
            if !plt_loop {
                // Loop 0, L = 1 and vanilla loops: full causal attention on this loop's own K/V.
                o.extend(attend_heads(cfg, qt, &ks[..=t], &vs[..=t]));
            } else {
                let (gk, gv) = k0v0[i].upto(t);
                let global = attend_heads(cfg, qt, &gk, &gv);
                let lo = t.saturating_sub(cfg.window_left);
                let local = attend_heads(cfg, qt, &ks[lo..=t], &vs[lo..=t]);
                let g = gate(cfg, layer, qt, &h_in[t * d..(t + 1) * d]);
                o.extend(mix(cfg, &g, &global, &local));
            }
        }
        layer_tail(cfg, layer, &mut h, &o, t_len);
    }
    h
}

// ---------------------------------------------------------------------------------------------
// Step-by-step decoding with caches (sections 4 and 5)
// ---------------------------------------------------------------------------------------------

/// One layer's full causal K/V cache: row p holds position p, [t][Hkv*Dh] each.
#[derive(Clone, Debug, Default)]
struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl KvCache {
    /// Keys and values of positions 0..=t.
    fn upto(&self, t: usize) -> (Vec<&[f32]>, Vec<&[f32]>) {
        (
            self.k[..=t].iter().map(|r| r.as_slice()).collect(),
            self.v[..=t].iter().map(|r| r.as_slice()).collect(),
        )
    }
}

/// One layer's local ring buffer for one loop l >= 1: slot p % (left+1) holds position p's K/V,
/// [left+1][Hkv*Dh] each, grown as positions arrive (a window longer than the sequence never
/// allocates its unused slots).
#[derive(Clone, Debug)]
struct Ring {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

/// A decoder that feeds one token at a time, with the caches of section 4: a `DecodeState` and
/// the model it reads.
pub struct Decoder<'a> {
    cfg: &'a Config,
    w: &'a Weights,
    state: DecodeState,
}

impl<'a> Decoder<'a> {
    pub fn new(cfg: &'a Config, w: &'a Weights) -> Self {
        Decoder { cfg, w, state: DecodeState::new(cfg) }
    }

    /// Feeds one token at the next position and returns the logits [V] (from loop L-1).
    pub fn step(&mut self, token: u32) -> Vec<f32> {
        self.state.step(self.cfg, self.w, token)
    }

    pub fn position(&self) -> usize {
        self.state.position()
    }
}

/// The caches and carried states of one sequence (section 4), apart from the model, so that an
/// owner of the model can keep them next to it.
///
/// Parallel mode (section 5): each step runs L rows through one pass over the layers; row 0 is
/// loop 0 (input E_t), row l >= 1 is loop l (input a*E_t + b*C^l). Vanilla mode (section 6):
/// L sequential passes, each loop with its own full cache.
#[derive(Clone, Debug)]
pub struct DecodeState {
    /// Full causal caches, [loops][N]: in parallel mode one loop (loop 0, the global cache);
    /// in vanilla mode one per loop.
    full: Vec<Vec<KvCache>>,
    /// Local rings of PLT loops l >= 1, [L-1][N]: loop l's rings are rings[l-1].
    rings: Vec<Vec<Ring>>,
    /// Carried states C^l, [L][D]; C^0 is unused; zero before the first step (C_0 = 0).
    carried: Vec<Vec<f32>>,
    /// Position of the next token.
    pos: usize,
}

impl DecodeState {
    /// Empty caches for a model of `cfg` (position 0).
    pub fn new(cfg: &Config) -> Self {
        let n = cfg.num_hidden_layers;
        let loops = cfg.num_loops;
        let full_loops = if cfg.looping == Looping::Vanilla {
            loops
        } else {
            1
        };
        let full = vec![vec![KvCache::default(); n]; full_loops];
        let rings = if cfg.is_plt() {
            vec![vec![Ring { k: Vec::new(), v: Vec::new() }; n]; loops - 1]
        } else {
            vec![]
        };
        let carried = vec![vec![0.0; cfg.hidden_size]; loops];
        DecodeState {
            full,
            rings,
            carried,
            pos: 0,
        }
    }

    /// Feeds one token at the next position of a model of (`cfg`, `w`), the one these caches
    /// were made for, and returns the logits [V] (from loop L-1).
    pub fn step(&mut self, cfg: &Config, w: &Weights, token: u32) -> Vec<f32> {
        let logits = match cfg.looping {
            Looping::Plt => self.step_parallel(cfg, w, token),
            Looping::Vanilla => self.step_vanilla(cfg, w, token),
        };
        self.pos += 1;
        logits
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    /// Section 5: L rows in one pass over the layers (rows share each weight read).
    fn step_parallel(&mut self, cfg: &Config, w: &Weights, token: u32) -> Vec<f32> {
        let (d, qd, kvd) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim());
        let (rows, t) = (cfg.num_loops, self.pos);
        let e = embed(cfg, w, token);
        let mut h = e.to_vec(); // [L, D]; row l is loop l
        for l in 1..rows {
            h.extend(loop_input(cfg, e, &self.carried[l]));
        }
        for (i, layer) in w.layers.iter().enumerate() {
            let h_in = h.clone();
            let u = rmsnorm(&h, &layer.input_layernorm.data, cfg.rms_norm_eps);
            let (q, k, v) = qkv(cfg, layer, &u, &vec![t; rows]); // [L, H*Dh], [L, Hkv*Dh] x2
                                                                 // Row 0's K/V goes into the global cache before rows >= 1 attend to it.
            let global = &mut self.full[0][i];
            global.k.push(k[..kvd].to_vec());
            global.v.push(v[..kvd].to_vec());
            // Row l's K/V goes into loop l's ring.
            let slot = t % cfg.window_slots();
            for l in 1..rows {
                let ring = &mut self.rings[l - 1][i];
                let (kl, vl) = (k[l * kvd..(l + 1) * kvd].to_vec(), v[l * kvd..(l + 1) * kvd].to_vec());
                if slot == ring.k.len() {
                    ring.k.push(kl);
                    ring.v.push(vl);
                } else {
                    ring.k[slot] = kl;
                    ring.v[slot] = vl;
                }
            }
            let (gk, gv) = self.full[0][i].upto(t);
            let mut o = attend_heads(cfg, &q[..qd], &gk, &gv); // [L, H*Dh]
            for l in 1..rows {
                let ql = &q[l * qd..(l + 1) * qd];
                let global = attend_heads(cfg, ql, &gk, &gv);
                let ring = &self.rings[l - 1][i];
                let window = t.saturating_sub(cfg.window_left)..=t;
                let lk: Vec<&[f32]> = window
                    .clone()
                    .map(|p| ring.k[p % cfg.window_slots()].as_slice())
                    .collect();
                let lv: Vec<&[f32]> = window
                    .map(|p| ring.v[p % cfg.window_slots()].as_slice())
                    .collect();
                let local = attend_heads(cfg, ql, &lk, &lv);
                let g = gate(cfg, layer, ql, &h_in[l * d..(l + 1) * d]);
                o.extend(mix(cfg, &g, &global, &local));
            }
            layer_tail(cfg, layer, &mut h, &o, rows);
        }
        // C^{l+1} <- Norm(H^l_t) for l < L-1, read by the next step.
        for l in 0..rows - 1 {
            self.carried[l + 1] = carry_norm(cfg, w, &h[l * d..(l + 1) * d]);
        }
        head(cfg, w, &h[(rows - 1) * d..])
    }

    /// Section 6: L sequential passes, loop l attending causally to its own full cache.
    fn step_vanilla(&mut self, cfg: &Config, w: &Weights, token: u32) -> Vec<f32> {
        let t = self.pos;
        let mut h = embed(cfg, w, token).to_vec(); // [D]
        for l in 0..cfg.num_loops {
            for (i, layer) in w.layers.iter().enumerate() {
                let u = rmsnorm(&h, &layer.input_layernorm.data, cfg.rms_norm_eps);
                let (q, k, v) = qkv(cfg, layer, &u, &[t]);
                let cache = &mut self.full[l][i];
                cache.k.push(k);
                cache.v.push(v);
                let (ks, vs) = cache.upto(t);
                let o = attend_heads(cfg, &q, &ks, &vs);
                layer_tail(cfg, layer, &mut h, &o, 1);
            }
        }
        head(cfg, w, &h)
    }
}

#[cfg(test)]
mod tests;
