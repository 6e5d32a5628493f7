//! Tests of the reference: building blocks against the spec's formulas, the forward pass's
//! invariants, and the section-5 decoder against the section-3 forward.

use super::*;
use crate::rng::Rng;
use crate::weights::{DType, Linear, Mlp, PltGate, SelfAttn};

/// A small config: V=19, D=16, F=24, N=2, H=4, Hkv=2, Dh=6 (!= D/H).
fn small_cfg(loops: usize, mode: Looping) -> Config {
    Config {
        vocab_size: 19,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 6,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: crate::config::RopeScaling::None,
        max_position_embeddings: 64,
        tie_word_embeddings: false,
        bos_token_id: None,
        eos_token_ids: vec![],
        num_loops: loops,
        window_left: 64,
        normalize_per_loop: true,
        emb_scale: 1.0,
        hidden_scale: 1.0,
        gate_mode: GateMode::Query,
        looping: mode,
    }
}

fn tensor(rng: &mut Rng, shape: &[usize], scale: f32) -> Tensor {
    Tensor::new(shape.to_vec(), rng.normals(shape.iter().product(), scale))
}

fn norm_weight(rng: &mut Rng, d: usize) -> Tensor {
    Tensor::new(
        vec![d],
        rng.normals(d, 0.1).into_iter().map(|x| 1.0 + x).collect(),
    )
}

/// Random weights for `cfg`: matrices ~ 1/sqrt(fan_in), norms ~ 1 + 0.1*noise, nonzero gate
/// biases, optional q/k/v biases.
fn random_weights(cfg: &Config, seed: u64, qkv_bias: bool) -> Weights {
    let mut rng = Rng::new(seed);
    let (d, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (h, qd, kvd, dh) = (
        cfg.num_attention_heads,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.head_dim,
    );
    let lin = |rng: &mut Rng, out: usize, inp: usize, bias: bool| Linear {
        weight: tensor(rng, &[out, inp], 1.0 / (inp as f32).sqrt()),
        bias: bias.then(|| tensor(rng, &[out], 0.2)),
    };
    let layers = (0..cfg.num_hidden_layers)
        .map(|_| {
            let input_layernorm = norm_weight(&mut rng, d);
            let q_proj = lin(&mut rng, qd, d, qkv_bias);
            let k_proj = lin(&mut rng, kvd, d, qkv_bias);
            let v_proj = lin(&mut rng, kvd, d, qkv_bias);
            let o_proj = lin(&mut rng, d, qd, false);
            let plt_gate = cfg.is_plt().then(|| {
                let bias = Tensor::new(
                    vec![h],
                    (0..h)
                        .map(|j| 0.5 * rng.normal() + 0.3 * (j as f32 - 1.0))
                        .collect(),
                );
                match cfg.gate_mode {
                    GateMode::Query => PltGate {
                        weight: tensor(&mut rng, &[h, dh], 1.0 / (dh as f32).sqrt()),
                        bias,
                        gate_norm: None,
                    },
                    GateMode::Hidden => PltGate {
                        weight: tensor(&mut rng, &[h, d], 1.0 / (d as f32).sqrt()),
                        bias,
                        gate_norm: Some(norm_weight(&mut rng, d)),
                    },
                }
            });
            let post_attention_layernorm = norm_weight(&mut rng, d);
            let mlp = Mlp {
                gate_proj: lin(&mut rng, f, d, false),
                up_proj: lin(&mut rng, f, d, false),
                down_proj: lin(&mut rng, d, f, false),
            };
            Layer {
                input_layernorm,
                self_attn: SelfAttn {
                    q_proj,
                    k_proj,
                    v_proj,
                    o_proj,
                    plt_gate,
                },
                post_attention_layernorm,
                mlp,
            }
        })
        .collect();
    let embed_tokens = tensor(&mut rng, &[v, d], 1.0);
    let norm = norm_weight(&mut rng, d);
    let lm_head =
        (!cfg.tie_word_embeddings).then(|| tensor(&mut rng, &[v, d], 1.0 / (d as f32).sqrt()));
    Weights {
        embed_tokens,
        layers,
        norm,
        lm_head,
        dtype: DType::F32,
    }
}

fn tokens(cfg: &Config, n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| rng.below(cfg.vocab_size as u64) as u32)
        .collect()
}

/// max |a - b| / max |b|: a scale-free error.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .fold(0.0, f64::max);
    let scale = b.iter().map(|&y| (y as f64).abs()).fold(1e-30, f64::max);
    diff / scale
}

fn decode_all(cfg: &Config, w: &Weights, toks: &[u32]) -> Vec<Vec<f32>> {
    let mut dec = Decoder::new(cfg, w);
    toks.iter()
        .enumerate()
        .map(|(t, &x)| {
            assert_eq!(dec.position(), t);
            dec.step(x)
        })
        .collect()
}

fn assert_decoder_matches_forward(cfg: &Config, w: &Weights, seq: usize, what: &str) {
    cfg.validate().unwrap();
    let toks = tokens(cfg, seq, 7);
    let full = forward(cfg, w, &toks);
    let steps = decode_all(cfg, w, &toks);
    assert_eq!(full.len(), seq);
    for t in 0..seq {
        assert_eq!(full[t].len(), cfg.vocab_size);
        assert!(
            full[t].iter().all(|x| x.is_finite()),
            "{what}: non-finite logits at {t}"
        );
        let e = rel_err(&steps[t], &full[t]);
        assert!(
            e < 1e-5,
            "{what}: decoder differs from forward at position {t}: rel err {e:e}"
        );
    }
}

#[test]
fn decoder_matches_forward() {
    let seq = 9;
    let mut cases: Vec<(String, Config, bool)> = vec![];
    let mut c = small_cfg(1, Looping::Plt);
    cases.push(("L=1".into(), c.clone(), false));
    c.tie_word_embeddings = true;
    cases.push(("L=1 tied, qkv bias".into(), c, true));
    for loops in [2, 3] {
        for gate_mode in [GateMode::Query, GateMode::Hidden] {
            for normalize_per_loop in [true, false] {
                for left in [0, 1, 2, 64] {
                    let mut c = small_cfg(loops, Looping::Plt);
                    c.gate_mode = gate_mode;
                    c.normalize_per_loop = normalize_per_loop;
                    c.window_left = left;
                    c.emb_scale = 0.7;
                    c.hidden_scale = 1.3;
                    let what = format!(
                        "L={loops} {gate_mode:?} norm={normalize_per_loop} left={left}"
                    );
                    cases.push((what, c, left % 2 == 1));
                }
            }
        }
    }
    let mut c = small_cfg(2, Looping::Vanilla);
    cases.push(("vanilla L=2".into(), c.clone(), false));
    c.num_loops = 3;
    cases.push(("vanilla L=3 qkv bias".into(), c, true));
    for (n, (what, cfg, bias)) in cases.iter().enumerate() {
        let w = random_weights(cfg, 100 + n as u64, *bias);
        assert_decoder_matches_forward(cfg, &w, seq, what);
    }
}

#[test]
fn window_and_loops_change_the_result() {
    // Guards against a test that passes because the options are ignored.
    let toks = tokens(&small_cfg(1, Looping::Plt), 9, 3);
    let mut a = small_cfg(2, Looping::Plt);
    a.window_left = 1;
    let w = random_weights(&a, 5, false);
    let mut b = a.clone();
    b.window_left = 64;
    let (fa, fb) = (forward(&a, &w, &toks), forward(&b, &w, &toks));
    // Positions inside the window agree; later ones differ.
    assert!(rel_err(&fa[1], &fb[1]) < 1e-6);
    assert!(rel_err(&fa[8], &fb[8]) > 1e-4);
    let v = Config {
        looping: Looping::Vanilla,
        ..a.clone()
    };
    assert!(rel_err(&forward(&v, &w, &toks)[8], &fa[8]) > 1e-4);
}

#[test]
fn rope_matches_spec_formula_and_keeps_norm() {
    let mut rng = Rng::new(11);
    for &(dh, pos, theta) in &[
        (2usize, 0usize, 10000.0f32),
        (6, 1, 10000.0),
        (8, 17, 500000.0),
        (64, 1000, 10000.0),
    ] {
        let v0 = rng.normals(dh, 1.0);
        let mut v = v0.clone();
        rope(&mut v, pos, theta);
        let half = dh / 2;
        for j in 0..half {
            let ang = pos as f64 * (theta as f64).powf(-2.0 * j as f64 / dh as f64);
            let want_lo = v0[j] as f64 * ang.cos() - v0[j + half] as f64 * ang.sin();
            let want_hi = v0[j + half] as f64 * ang.cos() + v0[j] as f64 * ang.sin();
            assert!(
                (v[j] as f64 - want_lo).abs() < 1e-6,
                "dh={dh} pos={pos} j={j}"
            );
            assert!(
                (v[j + half] as f64 - want_hi).abs() < 1e-6,
                "dh={dh} pos={pos} j={j}+half"
            );
        }
        let n0: f64 = v0.iter().map(|&x| x as f64 * x as f64).sum();
        let n1: f64 = v.iter().map(|&x| x as f64 * x as f64).sum();
        assert!(
            (n0 - n1).abs() < 1e-5 * n0.max(1.0),
            "rope changed the norm: {n0} -> {n1}"
        );
        if pos == 0 {
            assert_eq!(v, v0);
        }
    }
    // rotate_half pairs (j, j + Dh/2), not adjacent elements: with Dh = 4 and only v[0] set,
    // the rotation moves mass into v[2].
    let mut v = vec![1.0, 0.0, 0.0, 0.0];
    rope(&mut v, 1, 10000.0);
    assert!(
        (v[0] - 1f32.cos()).abs() < 1e-6 && (v[2] - 1f32.sin()).abs() < 1e-6 && v[1] == 0.0
    );
}

#[test]
fn single_loop_parallel_equals_vanilla() {
    for bias in [false, true] {
        let p = small_cfg(1, Looping::Plt);
        let v = small_cfg(1, Looping::Vanilla);
        let w = random_weights(&p, 21, bias);
        let toks = tokens(&p, 8, 4);
        let (fp, fv) = (forward(&p, &w, &toks), forward(&v, &w, &toks));
        let (dp, dv) = (decode_all(&p, &w, &toks), decode_all(&v, &w, &toks));
        for t in 0..toks.len() {
            assert!(rel_err(&fp[t], &fv[t]) < 1e-6);
            assert!(rel_err(&dp[t], &dv[t]) < 1e-6);
        }
    }
}

#[test]
fn forward_is_causal() {
    let mut cases = vec![
        small_cfg(1, Looping::Plt),
        small_cfg(2, Looping::Vanilla),
    ];
    for gate_mode in [GateMode::Query, GateMode::Hidden] {
        let mut c = small_cfg(3, Looping::Plt);
        c.gate_mode = gate_mode;
        c.window_left = 2;
        c.emb_scale = 0.5;
        c.hidden_scale = 2.0;
        cases.push(c);
    }
    for (n, cfg) in cases.iter().enumerate() {
        let w = random_weights(cfg, 40 + n as u64, true);
        let toks = tokens(cfg, 8, 9);
        let base = forward(cfg, &w, &toks);
        for change in 1..toks.len() {
            let mut other = toks.clone();
            other[change] = (other[change] + 1) % cfg.vocab_size as u32;
            let f = forward(cfg, &w, &other);
            for t in 0..change {
                assert_eq!(
                    f[t], base[t],
                    "{cfg:?}: changing token {change} changed logits at {t}"
                );
            }
            assert_ne!(f[change], base[change]);
        }
    }
}

#[test]
fn gqa_reads_kv_head_h_over_group() {
    // H=4, Hkv=2 must equal H=4, Hkv=4 with kv head j of the wide model = head j/2 of the narrow.
    let narrow = small_cfg(2, Looping::Plt);
    let wide = Config {
        num_key_value_heads: 4,
        ..narrow.clone()
    };
    let wn = random_weights(&narrow, 33, true);
    let mut ww = wn.clone();
    let dh = narrow.head_dim;
    let widen = |t: &Tensor| -> Tensor {
        let cols = t.data.len() / narrow.kv_dim();
        let mut data = Vec::new();
        for j in 0..4 {
            data.extend_from_slice(&t.data[(j / 2) * dh * cols..(j / 2 + 1) * dh * cols]);
        }
        let mut shape = t.shape.clone();
        shape[0] = 4 * dh;
        Tensor::new(shape, data)
    };
    for layer in &mut ww.layers {
        let a = &mut layer.self_attn;
        for p in [&mut a.k_proj, &mut a.v_proj] {
            p.weight = widen(&p.weight);
            p.bias = p.bias.as_ref().map(widen);
        }
    }
    let toks = tokens(&narrow, 7, 2);
    let (fnar, fwid) = (forward(&narrow, &wn, &toks), forward(&wide, &ww, &toks));
    for t in 0..toks.len() {
        assert!(rel_err(&fnar[t], &fwid[t]) < 1e-6, "position {t}");
    }
}

#[test]
fn blocks_basic_identities() {
    // attend over one key returns its value; equal scores average the values.
    let q = [0.3, -1.0];
    assert_eq!(attend(&q, &[&[1.0, 2.0]], &[&[5.0, -6.0]]), vec![5.0, -6.0]);
    let out = attend(
        &[0.0, 0.0],
        &[&[1.0, 2.0], &[3.0, 4.0]],
        &[&[1.0, 0.0], &[3.0, 2.0]],
    );
    assert_eq!(out, vec![2.0, 1.0]);
    // rmsnorm of a constant row is w (up to eps); rows are independent.
    let y = rmsnorm(&[2.0, 2.0, -3.0, 3.0], &[1.0, 0.5], 0.0);
    assert_eq!(y, vec![1.0, 0.5, -1.0, 0.5]);
    // matmul with bias.
    let w = Tensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 0.0, -1.0, 1.0]);
    let b = Tensor::new(vec![2], vec![0.5, -0.5]);
    assert_eq!(
        matmul(&[1.0, 1.0, 1.0, 2.0, 0.0, 1.0], 2, &w, Some(&b)),
        vec![6.5, -0.5, 5.5, 0.5]
    );
    // logprob is a normalised log-distribution.
    let logits = [0.1f32, 2.0, -1.0, 0.5];
    let total: f64 = (0..4).map(|t| logprob(&logits, t).exp()).sum();
    assert!((total - 1.0).abs() < 1e-12);
    assert!((sigmoid(0.0) - 0.5).abs() < 1e-7 && (silu(1.0) - 0.7310586).abs() < 1e-6);
}
