//! Every WGSL kernel in shaders/ against a CPU computation.
//!
//! Inputs are fresh random values; shapes include sizes that do not divide the workgroup sizes
//! (1, 3, 17, 65, 70, 130 rows/columns, odd K). Every output buffer is poisoned before the run
//! with a NaN of a fixed bit pattern: an element the kernel should write and did not fails the
//! comparison (normalised MSE), and an element it must NOT write (rows past the pass, cache slots
//! of rows without a slot, rows with no carry destination, ...) must still hold that exact bit
//! pattern afterwards. Inputs that a kernel must not read (cache positions after the newest one
//! it attends to, ring slots it should take from the scratch rows) hold NaN, so reading one
//! poisons the result.

mod common;
#[path = "support/kernel_io.rs"]
mod kernel_io;

use common::gpu;
use kernel_io::*;
use half::f16;
use plt::gpu::Gpu;
use plt::kernels::*;
use plt::model::{Row, NONE};
use plt::reference;
use plt::rng::Rng;

/// f32 kernels (and f16-stored weights, compared against the same rounded values; RoPE with the
/// f64-computed angle table).
const TOL: f64 = 1e-10;
/// f16 cache writes: f16 has an 11-bit significand, so one ulp of disagreement in rounding is
/// 2^-11 relative (nmse at most about 2.4e-7); a misplaced element is nmse ~1.
const TOL_KV_F16: f64 = 1e-6;
const EPS: f32 = 1e-5;
const THETA: f32 = 10000.0;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn dot(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}


/// A poisoned f16 (a NaN of a fixed pattern), for KV caches stored as f16.
const POISON_F16: u16 = 0x7e5d;

/// `v` rounded to f16 and back (poison and NaN kept), as a KV_F16 cache holds it.
fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| if is_poison(x) { x } else { f16::from_f32(x).to_f32() }).collect()
}

/// A KV cache or ring as the kernels bind it: f32, or f16 pairs (poison as `POISON_F16`).
fn upload_kv(g: &Gpu, label: &str, v: &[f32], kv_f16: bool) -> wgpu::Buffer {
    if !kv_f16 {
        return upload(g, label, v);
    }
    assert!(v.len() % 2 == 0);
    let h: Vec<u16> = v.iter().map(|&x| if is_poison(x) { POISON_F16 } else { f16::from_f32(x).to_bits() }).collect();
    g.storage_init(label, bytemuck::cast_slice(&h)).unwrap()
}

/// Reads a cache or ring of `n` elements back as f32 (a `POISON_F16` reads as `poison()`).
fn read_kv(g: &Gpu, b: &wgpu::Buffer, n: usize, kv_f16: bool) -> Vec<f32> {
    if !kv_f16 {
        return read(g, b, n);
    }
    let words = read(g, b, n / 2);
    words
        .iter()
        .flat_map(|w| {
            let bits = w.to_bits();
            [bits as u16, (bits >> 16) as u16]
        })
        .map(|h| if h == POISON_F16 { poison() } else { f16::from_bits(h).to_f32() })
        .collect()
}





/// A weight matrix as the kernels bind it (array<u32>: f32 bits, or f16 packed two per word,
/// element 2i in the low half, odd counts padded), and the values the GPU sees.
fn weight_words(v: &[f32], wf16: bool) -> (Vec<u8>, Vec<f32>) {
    if !wf16 {
        return (bytemuck::cast_slice(v).to_vec(), v.to_vec());
    }
    let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
    let seen = h.iter().map(|x| x.to_f32()).collect();
    let mut words = Vec::with_capacity(h.len().div_ceil(2));
    for pair in h.chunks(2) {
        let lo = pair[0].to_bits() as u32;
        let hi = pair.get(1).map_or(0, |x| x.to_bits() as u32);
        words.push(lo | (hi << 16));
    }
    (bytemuck::cast_slice(&words).to_vec(), seen)
}

/// A row with no cache write, no ring, no carried input or output.
fn row(pos: usize) -> Row {
    Row::plain(pos, 0)
}

fn shuffled(rng: &mut Rng, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
    v
}

// ---------------------------------------------------------------------------------------------
// matmul.wgsl
// ---------------------------------------------------------------------------------------------

/// y[r] (+)= W x[r] (+ b) for r < the pass's row count (pass.rows, or pass.logit_rows with
/// ROWS_FROM_LOGITS), every accumulate/bias combination. The other row count is set larger, so
/// a kernel that used it would write rows that must keep their poison.
#[allow(clippy::too_many_arguments)]
/// `norm` (matmul_rows_vec only): the kernel normalises its input rows itself (`NORM`): x holds
/// raw rows (with ROWS_FROM_LOGITS, from logit_row0 = 1 on) and y = W (RMSNorm(x; nw)).
#[allow(clippy::too_many_arguments)]
fn matmul_case(rng: &mut Rng, path: MatmulPath, r: usize, k: usize, o: usize, wf16: bool, logits: bool, norm: bool) {
    matmul_case_glu(rng, path, r, k, o, wf16, logits, norm, false);
}

/// `glu` (matmul_rows_vec, O even): the weight rows are (gate, up) pairs and the kernel
/// writes y[r][j] = silu(prod[r][2j]) * prod[r][2j + 1] into a [R, O/2] buffer (`GLU`).
#[allow(clippy::too_many_arguments)]
fn matmul_case_glu(rng: &mut Rng, path: MatmulPath, r: usize, k: usize, o: usize, wf16: bool, logits: bool, norm: bool, glu: bool) {
    let g = gpu();
    let extra = 3;
    let (wbytes, wv) = weight_words(&rng.normals(o * k, 1.0 / (k as f32).sqrt()), wf16);
    let wbuf = g.storage_init("w", &wbytes).unwrap();
    let mut x = rng.normals((r + extra) * k, 1.0);
    if norm && r > 1 {
        // A tiny row, so that EPS matters in its statistics.
        x[k..2 * k].iter_mut().for_each(|v| *v *= 1e-3);
    }
    let xbuf = upload(&g, "x", &x);
    let nw = norm_weight(rng, k);
    let nbuf = upload(&g, "nw", &nw);
    let bias = rng.normals(o, 0.5);
    let bbuf = upload(&g, "bias", &bias);
    let (rows, logit_rows) = if logits { (r + extra, r) } else { (r, r + extra) };
    let pbuf = pass(&g, rows, 1, logit_rows);
    let storage = if wf16 { WeightFormat::F16 } else { WeightFormat::F32 };
    let kernel = |(lanes, subgroups): (u32, bool)| Matmul {
        k,
        n: o,
        storage,
        path,
        lanes,
        subgroups,
        logit_rows: logits,
        norm_eps: norm.then_some(EPS),
        glu,
        out: OutMap::dense(if glu { o / 2 } else { o }),
    };
    let entry = kernel((8, false)).variant().entry;
    assert!(!(norm || glu) || kernel((8, false)).vec_loads(), "NORM and GLU are options of the vec kernel (K % 8 == 0)");
    // The rows the product reads: x's first r rows, or RMSNorm of rows (logit_row0 + i) with NORM.
    let xin: Vec<f32> = if norm {
        let first = if logits { 1 } else { 0 };
        reference::rmsnorm(&x[first * k..(first + r) * k], &nw, EPS)
    } else {
        x[..r * k].to_vec()
    };
    let prod: Vec<f64> = (0..r * o).map(|i| dot(&xin[i / o * k..(i / o + 1) * k], &wv[i % o * k..(i % o + 1) * k])).collect();
    // Sum of the terms' magnitudes: the scale of each product's rounding error.
    let mag: Vec<f64> = (0..r * o)
        .map(|i| xin[i / o * k..(i / o + 1) * k].iter().zip(&wv[i % o * k..(i % o + 1) * k]).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum())
        .collect();
    // The row-sharing kernels at 8, 16 and 32 lanes per output, each with the workgroup-memory
    // reduction and, where the adapter's subgroups are wide enough, the subgroup one.
    let mut variants = vec![(8, false)];
    if path == MatmulPath::RowSharing {
        variants = Vec::new();
        for lanes in [8, 16, 32] {
            variants.push((lanes, false));
            if g.subgroup_reduce(lanes) {
                variants.push((lanes, true));
            }
        }
    }
    if glu {
        assert!(o % 2 == 0);
        let f = o / 2;
        let want: Vec<f32> = (0..(r + extra) * f)
            .map(|i| if i >= r * f { poison() } else { (reference::silu(prod[i / f * o + 2 * (i % f)] as f32) as f64 * prod[i / f * o + 2 * (i % f) + 1]) as f32 })
            .collect();
        // First-order error scale of silu(g) * u (|silu'| <= 1.1): mag_g |u| + |silu(g)| mag_u.
        let scale: Vec<f32> = (0..(r + extra) * f)
            .map(|i| {
                if i >= r * f {
                    return 0.0;
                }
                let (gi, ui) = (i / f * o + 2 * (i % f), i / f * o + 2 * (i % f) + 1);
                (want[i].abs() as f64 + 1.1 * mag[gi] * prod[ui].abs() + reference::silu(prod[gi] as f32).abs() as f64 * mag[ui]) as f32
            })
            .collect();
        for (lanes, sg) in variants {
            let ybuf = upload(&g, "y", &vec![poison(); (r + extra) * f]);
            let prm = g.uniform("params", &MatmulParams::default().bytes());
            let io = MatmulIo { params: &prm, pass: &pbuf, x: &xbuf, w: &wbuf, bias: &bbuf, y: &ybuf, norm_weight: &nbuf };
            launch(&g, kernel((lanes, sg)).dispatch(&g, &io), rows, logit_rows);
            let what = format!("{entry} GLU R={r} K={k} O={o} f16={wf16} rows_from_logits={logits} norm={norm} lanes={lanes} subgroups={sg}");
            compare_scaled(&what, &read(&g, &ybuf, (r + extra) * f), &want, &scale, rows_of(f), TOL);
        }
        return;
    }
    for ((lanes, sg), acc, has_bias) in variants.iter().flat_map(|&v| [(v, false, false), (v, true, false), (v, false, true), (v, true, true)]) {
        let mut y0 = vec![poison(); (r + extra) * o];
        if acc {
            for v in &mut y0[..r * o] {
                *v = rng.normal();
            }
        }
        let want: Vec<f32> = (0..(r + extra) * o)
            .map(|i| {
                if i >= r * o {
                    return poison();
                }
                let mut v = prod[i];
                if has_bias {
                    v += bias[i % o] as f64;
                }
                if acc {
                    v += y0[i] as f64;
                }
                v as f32
            })
            .collect();
        let scale: Vec<f32> = (0..(r + extra) * o)
            .map(|i| {
                if i >= r * o {
                    return 0.0;
                }
                (mag[i] + if has_bias { bias[i % o].abs() as f64 } else { 0.0 } + if acc { y0[i].abs() as f64 } else { 0.0 }) as f32
            })
            .collect();
        let ybuf = upload(&g, "y", &y0);
        let prm = g.uniform("params", &MatmulParams { accumulate: acc, bias: has_bias, out_offset: 0 }.bytes());
        let io = MatmulIo { params: &prm, pass: &pbuf, x: &xbuf, w: &wbuf, bias: &bbuf, y: &ybuf, norm_weight: &nbuf };
        launch(&g, kernel((lanes, sg)).dispatch(&g, &io), rows, logit_rows);
        let what = format!("{entry} R={r} K={k} O={o} f16={wf16} rows_from_logits={logits} norm={norm} lanes={lanes} subgroups={sg} accumulate={acc} bias={has_bias}");
        compare_scaled(&what, &read(&g, &ybuf, (r + extra) * o), &want, &scale, rows_of(o), TOL);
    }
}

const MATMUL_SHAPES: &[(usize, usize, usize)] = &[(1, 1, 1), (1, 3, 5), (3, 17, 65), (17, 33, 70), (70, 65, 3), (65, 130, 67)];

/// K a multiple of 8 (what `matmul_rows_vec` requires), rows across the 4-row register blocks.
const MATMUL_VEC_SHAPES: &[(usize, usize, usize)] = &[(1, 8, 1), (1, 8, 5), (3, 16, 65), (6, 64, 70), (9, 40, 33), (16, 136, 67)];

fn matmul_all(path: MatmulPath, shapes: &[(usize, usize, usize)], seed: u64, norm: bool) {
    let mut rng = Rng::new(seed);
    for &(r, k, o) in shapes {
        for wf16 in [false, true] {
            for logits in [false, true] {
                matmul_case(&mut rng, path, r, k, o, wf16, logits, norm);
            }
        }
    }
}

#[test]
fn matmul_tiled_matches_cpu() {
    matmul_all(MatmulPath::Tiled, MATMUL_SHAPES, 101, false);
}

#[test]
fn matmul_rows_matches_cpu() {
    // K % 8 != 0 throughout: the scalar row-sharing kernel.
    assert!(MATMUL_SHAPES.iter().all(|&(_, k, _)| k % 8 != 0));
    matmul_all(MatmulPath::RowSharing, MATMUL_SHAPES, 102, false);
}

#[test]
fn matmul_rows_vec_matches_cpu() {
    matmul_all(MatmulPath::RowSharing, MATMUL_VEC_SHAPES, 103, false);
}

/// The decode matmul with the RMSNorm of its input folded in (`NORM`), including K = 1032 (more
/// than one element per thread in the statistics) and rows read from logit_row0.
#[test]
fn matmul_rows_vec_norm_matches_cpu() {
    matmul_all(MatmulPath::RowSharing, MATMUL_VEC_SHAPES, 104, true);
    let mut rng = Rng::new(105);
    for logits in [false, true] {
        matmul_case(&mut rng, MatmulPath::RowSharing, 5, 1032, 40, true, logits, true);
    }
}

/// The SwiGLU epilogue of the decode matmul (`GLU`: gate/up weight rows interleaved, the kernel
/// writes silu(gate) * up), with and without the folded norm, more pairs than one workgroup has.
#[test]
fn matmul_rows_glu_matches_cpu() {
    let mut rng = Rng::new(106);
    for &(r, k, o) in &[(1, 8, 2), (3, 16, 64), (6, 64, 70), (9, 40, 34), (16, 136, 66)] {
        for wf16 in [false, true] {
            for norm in [false, true] {
                matmul_case_glu(&mut rng, MatmulPath::RowSharing, r, k, o, wf16, false, norm, true);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// norm.wgsl
// ---------------------------------------------------------------------------------------------

/// Runs an RMSNorm kernel over a pass of `r` rows (`lr0`, `lrn`: its logit rows).
#[allow(clippy::too_many_arguments)]
fn run_norm(g: &Gpu, norm: Norm, normalize_carry: bool, rows: &wgpu::Buffer, x: &wgpu::Buffer, w: &wgpu::Buffer, out: &wgpu::Buffer, (r, lr0, lrn): (usize, usize, usize)) {
    let params = g.uniform("params", &NormParams { normalize_carry }.bytes());
    let pb = pass(g, r, lr0, lrn);
    launch(g, norm.dispatch(g, &NormIo { params: &params, pass: &pb, rows, x, weight: w, out }), r, lrn);
}

/// Random rows; row 1 (when there is one) is tiny, so that EPS matters in its statistics.
fn norm_input(rng: &mut Rng, rows: usize, d: usize) -> Vec<f32> {
    let mut x = rng.normals(rows * d, 1.5);
    if rows > 1 {
        for v in &mut x[d..2 * d] {
            *v *= 1e-3;
        }
    }
    x
}

fn norm_weight(rng: &mut Rng, d: usize) -> Vec<f32> {
    (0..d).map(|_| 1.0 + 0.3 * rng.normal()).collect()
}

#[test]
fn rmsnorm_matches_cpu() {
    let g = gpu();
    let mut rng = Rng::new(201);
    for (r, d, wg) in [(1, 1, 64), (3, 17, 64), (17, 65, 64), (5, 130, 32), (70, 3, 64), (4, 200, 128), (2, 70, 64)] {
        let extra = 2;
        let x = norm_input(&mut rng, r + extra, d);
        let w = norm_weight(&mut rng, d);
        let mut want = reference::rmsnorm(&x[..r * d], &w, EPS);
        want.resize((r + extra) * d, poison());
        let out = upload(&g, "out", &vec![poison(); (r + extra) * d]);
        let (xb, wb, rb) = (upload(&g, "x", &x), upload(&g, "w", &w), upload_rows(&g, &[row(0)]));
        run_norm(&g, Norm { d, eps: EPS, rows: NormRows::Pass, wg }, true, &rb, &xb, &wb, &out, (r, 0, r + extra));
        compare(&format!("rmsnorm R={r} D={d} WG={wg}"), &read(&g, &out, (r + extra) * d), &want, d, TOL);
    }
}

#[test]
fn rmsnorm_logits_matches_cpu() {
    let g = gpu();
    let mut rng = Rng::new(202);
    // (rows, logit_row0, logit_rows, D)
    for (r, lr0, lrn, d) in [(9, 4, 5, 17), (9, 0, 1, 65), (70, 0, 70, 70), (3, 2, 1, 130), (17, 3, 3, 1)] {
        let x = norm_input(&mut rng, r, d);
        let w = norm_weight(&mut rng, d);
        let mut want = reference::rmsnorm(&x[lr0 * d..(lr0 + lrn) * d], &w, EPS);
        want.resize(r * d, poison());
        let out = upload(&g, "out", &vec![poison(); r * d]);
        let (xb, wb, rb) = (upload(&g, "x", &x), upload(&g, "w", &w), upload_rows(&g, &[row(0)]));
        run_norm(&g, Norm { d, eps: EPS, rows: NormRows::Logits, wg: NORM_WG }, true, &rb, &xb, &wb, &out, (r, lr0, lrn));
        compare(&format!("rmsnorm_logits R={r} logit_row0={lr0} logit_rows={lrn} D={d}"), &read(&g, &out, r * d), &want, d, TOL);
    }
}

#[test]
fn norm_carry_matches_cpu() {
    let g = gpu();
    let mut rng = Rng::new(203);
    for (r, d) in [(1, 3), (2, 1), (5, 17), (17, 65), (70, 130)] {
        for apply in [true, false] {
            // cbuf has more rows than the pass; rows get distinct destinations, some none.
            let m = r + 3;
            let dst = shuffled(&mut rng, m);
            let rows: Vec<Row> = (0..r)
                .map(|i| Row { cdst: if (i % 4 == 1) || (r == 1 && !apply) { NONE } else { dst[i] as u32 }, ..row(i) })
                .collect();
            let x = norm_input(&mut rng, r, d);
            let w = norm_weight(&mut rng, d);
            let normed = reference::rmsnorm(&x, &w, EPS);
            let mut want = vec![poison(); m * d];
            for (i, rw) in rows.iter().enumerate() {
                if rw.cdst != NONE {
                    let src = if apply { &normed } else { &x };
                    let c = rw.cdst as usize;
                    want[c * d..(c + 1) * d].copy_from_slice(&src[i * d..(i + 1) * d]);
                }
            }
            let out = upload(&g, "cbuf", &vec![poison(); m * d]);
            let (rb, xb, wb) = (upload_rows(&g, &rows), upload(&g, "x", &x), upload(&g, "w", &w));
            run_norm(&g, Norm { d, eps: EPS, rows: NormRows::Carry, wg: NORM_WG }, apply, &rb, &xb, &wb, &out, (r, 0, 0));
            // Without the norm it is a copy: exact.
            let tol = if apply { TOL } else { 0.0 };
            compare(&format!("norm_carry R={r} D={d} apply={apply}"), &read(&g, &out, m * d), &want, d, tol);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// embed.wgsl, elementwise.wgsl
// ---------------------------------------------------------------------------------------------

#[test]
fn embed_input_matches_cpu() {
    let g = gpu();
    let mut rng = Rng::new(301);
    // (rows, D, V, f16 storage); V*D odd in some f16 cases (a padded last word).
    for (r, d, v, wf16) in [(1, 1, 5, false), (3, 3, 11, true), (17, 17, 13, false), (5, 65, 7, true), (70, 70, 13, false), (9, 130, 11, true), (4, 1, 9, true)] {
        let extra = 2;
        let cb_rows = 4;
        let (ebytes, emb) = weight_words(&rng.normals(v * d, 1.0), wf16);
        // A last row of NaN that no csrc names: where a backend clamps out-of-range reads to
        // the buffer's end, a kernel reading cbuf for a loop-0 row (csrc NONE) picks it up.
        // (Lavapipe's robust access reads zero there, which no test can tell from not reading.)
        let mut cbuf = rng.normals(cb_rows * d, 1.0);
        cbuf.extend(std::iter::repeat_n(f32::NAN, d));
        // Every third row is a loop-0 row (no carried input, a = 1, b = 0); the others mix.
        let rows: Vec<Row> = (0..r)
            .map(|i| {
                let token = rng.below(v as u64) as u32;
                if i % 3 == 0 {
                    Row { token, ..row(i) }
                } else {
                    let csrc = rng.below(cb_rows as u64) as u32;
                    let e_scale = 0.5 + rng.uniform() as f32;
                    let c_scale = rng.normal();
                    Row { token, csrc, e_scale, c_scale, lp: 1, ..row(i) }
                }
            })
            .collect();
        let mut want = vec![poison(); (r + extra) * d];
        for (i, rw) in rows.iter().enumerate() {
            for j in 0..d {
                let mut val = rw.e_scale as f64 * emb[rw.token as usize * d + j] as f64;
                if rw.csrc != NONE {
                    val += rw.c_scale as f64 * cbuf[rw.csrc as usize * d + j] as f64;
                }
                want[i * d + j] = val as f32;
            }
        }
        let out = upload(&g, "x", &vec![poison(); (r + extra) * d]);
        let eb = g.storage_init("emb", &ebytes).unwrap();
        let (rb, cb) = (upload_rows(&g, &rows), upload(&g, "cbuf", &cbuf));
        let storage = if wf16 { WeightFormat::F16 } else { WeightFormat::F32 };
        launch(&g, Embed { d, storage, first: 0, rows: v }.dispatch(&g, &EmbedIo { rows: &rb, embed: &eb, carried: &cb, out: &out }), r, 0);
        compare(&format!("embed_input R={r} D={d} V={v} f16={wf16}"), &read(&g, &out, (r + extra) * d), &want, rows_of(d), TOL);
    }
}

#[test]
fn swiglu_matches_cpu() {
    let g = gpu();
    let mut rng = Rng::new(302);
    for (r, f) in [(1, 1), (3, 3), (17, 17), (2, 65), (70, 70), (5, 130)] {
        let extra = 2;
        let gu = rng.normals((r + extra) * 2 * f, 2.0);
        let mut want = vec![poison(); (r + extra) * f];
        for i in 0..r {
            for j in 0..f {
                let (gate, up) = (gu[i * 2 * f + 2 * j], gu[i * 2 * f + 2 * j + 1]);
                want[i * f + j] = (reference::silu(gate) as f64 * up as f64) as f32;
            }
        }
        let out = upload(&g, "act", &vec![poison(); (r + extra) * f]);
        let gb = upload(&g, "gu", &gu);
        launch(&g, Swiglu { f }.dispatch(&g, &SwigluIo { gate_up: &gb, out: &out }), r, 0);
        compare(&format!("swiglu R={r} F={f}"), &read(&g, &out, (r + extra) * f), &want, f, TOL);
    }
}

// ---------------------------------------------------------------------------------------------
// rope.wgsl, attention.wgsl: shapes
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Shape {
    h: usize,
    hkv: usize,
    dh: usize,
    d: usize,
    tmax: usize,
    slots: usize,
    w: usize,
    rings: usize,
    gate_mode: u32,
    /// Cache and rings stored as f16 (`SessionOptions::kv_f16`).
    kv_f16: bool,
    /// Global branch split every `split` positions (`attention` + `attention_combine`; 0: one
    /// kernel, no split).
    split: usize,
}

impl Shape {
    fn qd(&self) -> usize {
        self.h * self.dh
    }
    fn kvd(&self) -> usize {
        self.hkv * self.dh
    }
    fn qkvd(&self) -> usize {
        self.qd() + 2 * self.kvd()
    }
    /// The shape the runtime specialises rope.wgsl and attention.wgsl with.
    fn attn(&self) -> AttnShape {
        AttnShape {
            heads: self.h,
            kv_heads: self.hkv,
            head_dim: self.dh,
            hidden: self.d,
            positions: self.tmax,
            slots: self.slots,
            window: self.w,
            rings: self.rings,
            gate_mode: self.gate_mode,
            eps: EPS,
            kv_f16: self.kv_f16,
        }
    }
    fn nsplit(&self) -> usize {
        if self.split == 0 {
            1
        } else {
            self.tmax.div_ceil(self.split)
        }
    }
}

fn shape(h: usize, hkv: usize, dh: usize) -> Shape {
    Shape { h, hkv, dh, d: 40, tmax: 160, slots: 3, w: 3, rings: 3, gate_mode: 0, kv_f16: false, split: 0 }
}

// ---------------------------------------------------------------------------------------------
// rope.wgsl
// ---------------------------------------------------------------------------------------------

#[test]
fn rope_store_matches_cpu() {
    let g = gpu();
    let mut rng = Rng::new(401);
    let cases = [(shape(4, 2, 10), 17), (shape(4, 2, 10), 1), (shape(1, 1, 2), 3), (shape(2, 1, 72), 5), (shape(3, 3, 130), 4), (shape(4, 2, 10), 70)];
    for (s, r) in cases.into_iter().flat_map(|(s, r)| [(s, r), (Shape { kv_f16: true, ..s }, r)]) {
        let (qd, kvd, qkvd) = (s.qd(), s.kvd(), s.qkvd());
        let extra = 2;
        // Positions (0 and TMAX-1 included); about a third of the rows write no K/V, the others
        // distinct (slot, position) pairs. The last `extra` rows lie past the pass (rows = r):
        // their qkv rows must stay as they are, their cache positions poisoned.
        let mut taken = std::collections::HashSet::new();
        let rows: Vec<Row> = (0..r + extra)
            .map(|i| {
                let pos = match i {
                    0 => 0,
                    1 => s.tmax - 1,
                    _ if i >= r => 1 + rng.below(s.tmax as u64 - 1) as usize,
                    _ => rng.below(s.tmax as u64) as usize,
                };
                let slot = rng.below(s.slots as u64) as u32;
                let kv_slot = if (i < r && i % 3 == 2) || !taken.insert((slot, pos)) { NONE } else { slot };
                Row { kv_slot, attn_slot: slot, ..row(pos) }
            })
            .collect();
        let qkv = rng.normals((r + extra) * qkvd, 1.0);
        let mut want = qkv.clone();
        let mut want_kv = vec![poison(); 2 * s.slots * s.tmax * kvd];
        for (i, rw) in rows[..r].iter().enumerate() {
            let pos = rw.pos as usize;
            let qk = &mut want[i * qkvd..i * qkvd + qd + kvd];
            for head in qk.chunks_mut(s.dh) {
                reference::rope(head, pos, THETA);
            }
            if rw.kv_slot != NONE {
                let (slot, row_base) = (rw.kv_slot as usize, i * qkvd + qd);
                let ck = (slot * s.tmax + pos) * kvd;
                let cv = ((s.slots + slot) * s.tmax + pos) * kvd;
                want_kv[ck..ck + kvd].copy_from_slice(&want[row_base..row_base + kvd]);
                want_kv[cv..cv + kvd].copy_from_slice(&want[row_base + kvd..row_base + 2 * kvd]);
            }
        }
        let qb = upload(&g, "qkv", &qkv);
        let kb = upload_kv(&g, "kv", &vec![poison(); want_kv.len()], s.kv_f16);
        let rb = upload_rows(&g, &rows);
        let table = upload(&g, "rope_table", &rope_table(&plt::config::rope_inv_freq(THETA, s.dh, &plt::config::RopeScaling::None), s.tmax));
        let io = RopeIo { rows: &rb, qkv: &qb, kv: &kb, ring: &kb, table: &table };
        launch(&g, Rope { shape: s.attn(), ring: false }.dispatch(&g, &io), r, 0);
        let what = format!("rope_store H={} HKV={} DH={} R={r} KV_F16={}", s.h, s.hkv, s.dh, s.kv_f16);
        compare(&format!("{what}: qkv"), &read(&g, &qb, qkv.len()), &want, s.dh, TOL);
        // f16: the rounding of the GPU's f32 value may differ from the reference's by an ulp.
        let (want_kv, tol) = if s.kv_f16 { (round_f16(&want_kv), TOL_KV_F16) } else { (want_kv, TOL) };
        compare(&format!("{what}: kv cache"), &read_kv(&g, &kb, want_kv.len(), s.kv_f16), &want_kv, s.dh, tol);
    }
}

#[test]
fn ring_store_matches_cpu() {
    let g = gpu();
    let mut rng = Rng::new(402);
    let cases = [(Shape { w: 1, ..shape(4, 2, 10) }, 5), (shape(4, 2, 10), 17), (Shape { w: 70, ..shape(2, 1, 72) }, 9), (Shape { w: 5, ..shape(1, 1, 130) }, 1), (Shape { w: 5, ..shape(1, 1, 130) }, 3)];
    for (s, r) in cases.into_iter().flat_map(|(s, r)| [(s, r), (Shape { kv_f16: true, ..s }, r)]) {
        let (qd, kvd, qkvd) = (s.qd(), s.kvd(), s.qkvd());
        // Writers get distinct (ring, slot) pairs; the other rows have no ring (loop 0) or a
        // ring but ring_write = 0 (prefill rows whose K/V a later row of the chunk overwrites).
        // One more row lies past the pass (rows = r): its ring slot must keep its poison.
        let mut taken = std::collections::HashSet::new();
        let rows: Vec<Row> = (0..r + 1)
            .map(|i| {
                let pos = rng.below(s.tmax as u64) as usize;
                let ring = rng.below(s.rings as u64) as u32;
                if i < r && i % 4 == 3 {
                    Row { attn_slot: 0, ..row(pos) }
                } else if (i < r && i % 4 == 2) || !taken.insert((ring, pos % s.w)) {
                    Row { ring, ring_write: 0, lp: 1, ..row(pos) }
                } else {
                    Row { ring, ring_write: 1, lp: 1, ..row(pos) }
                }
            })
            .collect();
        let qkv = rng.normals((r + 1) * qkvd, 1.0);
        let mut want = vec![poison(); 2 * s.rings * s.w * kvd];
        for (i, rw) in rows[..r].iter().enumerate().filter(|(_, rw)| rw.ring_write == 1) {
            let slot = rw.pos as usize % s.w;
            let dk = (rw.ring as usize * s.w + slot) * kvd;
            let dv = ((s.rings + rw.ring as usize) * s.w + slot) * kvd;
            want[dk..dk + kvd].copy_from_slice(&qkv[i * qkvd + qd..i * qkvd + qd + kvd]);
            want[dv..dv + kvd].copy_from_slice(&qkv[i * qkvd + qd + kvd..(i + 1) * qkvd]);
        }
        let (rb, qb) = (upload_rows(&g, &rows), upload(&g, "qkv", &qkv));
        let ring = upload_kv(&g, "ring", &vec![poison(); want.len()], s.kv_f16);
        let io = RopeIo { rows: &rb, qkv: &qb, kv: &ring, ring: &ring, table: &ring };
        launch(&g, Rope { shape: s.attn(), ring: true }.dispatch(&g, &io), r, 0);
        // A copy: exact in f32; in f16, the inputs rounded (to nearest even, as pack2x16float
        // does for values in range).
        let (want, tol) = if s.kv_f16 { (round_f16(&want), TOL_KV_F16) } else { (want, 0.0) };
        let what = format!("ring_store H={} HKV={} DH={} W={} R={r} KV_F16={}", s.h, s.hkv, s.dh, s.w, s.kv_f16);
        compare(&what, &read_kv(&g, &ring, want.len(), s.kv_f16), &want, kvd, tol);
        // ring_store binds qkv read_write but must not change it.
        compare("ring_store: qkv", &read(&g, &qb, qkv.len()), &qkv, qkvd, 0.0);
    }
}

// ---------------------------------------------------------------------------------------------
// attention.wgsl
// ---------------------------------------------------------------------------------------------

/// A causal row (loop 0 / vanilla): attends to its cache slot's positions 0..=pos.
fn causal(pos: usize, slot: usize) -> Row {
    Row { attn_slot: slot as u32, ..row(pos) }
}

/// A PLT row (loop >= 1) on cache slot `slot` and ring `ring`, whose positions pos-fresh+1..=pos
/// are this row and the `fresh - 1` rows before it in the pass.
fn plt_row(pos: usize, slot: usize, ring: usize, fresh: usize) -> Row {
    Row { attn_slot: slot as u32, ring: ring as u32, fresh: fresh as u32, lp: 1, ..row(pos) }
}

/// A prefill chunk of one loop: positions p0..p0+n, row t has fresh = t+1.
fn chunk(p0: usize, n: usize, slot: usize, ring: Option<usize>) -> Vec<Row> {
    (0..n)
        .map(|t| match ring {
            Some(rg) => plt_row(p0 + t, slot, rg, t + 1),
            None => Row { fresh: t as u32 + 1, ..causal(p0 + t, slot) },
        })
        .collect()
}

/// A fused decode pass: B sequences at positions `pos`, L loops, loop-major rows l*B + b.
fn decode_rows(pos: &[usize], loops: usize) -> Vec<Row> {
    let b_n = pos.len();
    (0..loops)
        .flat_map(|l| {
            (0..b_n).map(move |b| if l == 0 { causal(pos[b], b) } else { plt_row(pos[b], b, b * (loops - 1) + l - 1, 1) })
        })
        .collect()
}

/// Runs `attention` over `rows` with random q/k/v, cache, ring, gate and hidden states, and
/// compares every (row, head) with the CPU: causal rows Attn(q; cache slot, 0..=pos); PLT rows
/// g * Attn(global) + (1 - g) * Attn(local window, from the scratch rows or the ring).
fn attention_case(what: &str, s: Shape, rows: &[Row], seed: u64) {
    attention_case_one(what, s, rows, seed);
    attention_case_one(what, Shape { kv_f16: true, ..s }, rows, seed);
    // Split global branches: 64-key tiles inside a split (50), splits shorter than a tile (16),
    // the runtime's smallest split (128).
    for split in [16, 50, 128] {
        attention_case_one(what, Shape { split, ..s }, rows, seed);
    }
    attention_case_one(what, Shape { split: 16, kv_f16: true, ..s }, rows, seed);
}

/// `attention_case` with the cache and rings stored as `s.kv_f16` says (f16: the random keys and
/// values are rounded to f16 first, so the GPU and the CPU see the same numbers).
fn attention_case_one(what: &str, s: Shape, rows: &[Row], seed: u64) {
    let g = gpu();
    let mut rng = Rng::new(seed);
    let (qd, kvd, qkvd, dh) = (s.qd(), s.kvd(), s.qkvd(), s.dh);
    let r_n = rows.len();
    let extra = 2;
    let left = s.w - 1;
    let is_local = |rw: &Row| rw.ring != NONE && s.gate_mode != 0;
    let window = |rw: &Row| (rw.pos as usize).saturating_sub(left)..=rw.pos as usize;
    for (i, rw) in rows.iter().enumerate() {
        assert!((rw.pos as usize) < s.tmax && (rw.attn_slot as usize) < s.slots, "{what}: bad row {i}");
        assert!(rw.fresh >= 1 && rw.fresh as usize <= i + 1, "{what}: row {i} has fresh rows before the pass");
        assert!(!is_local(rw) || (rw.ring as usize) < s.rings, "{what}: bad ring in row {i}");
    }

    let qkv = rng.normals(r_n * qkvd, 1.0);
    // Global cache: random up to the newest position a row of that slot attends to, NaN after.
    let mut kv = vec![f32::NAN; 2 * s.slots * s.tmax * kvd];
    for slot in 0..s.slots {
        let newest = rows.iter().filter(|rw| rw.attn_slot as usize == slot).map(|rw| rw.pos as usize).max();
        if let Some(m) = newest {
            for part in 0..2 {
                let base = (part * s.slots + slot) * s.tmax * kvd;
                kv[base..base + (m + 1) * kvd].copy_from_slice(&rng.normals((m + 1) * kvd, 1.0));
            }
        }
    }
    // Ring: random in the slots some row takes from the ring, NaN in the others (among them
    // the slots of positions that must come from the scratch rows).
    let mut ring = vec![f32::NAN; 2 * s.rings * s.w * kvd];
    for rw in rows.iter().filter(|rw| is_local(rw)) {
        for t in window(rw) {
            if rw.pos as usize - t >= rw.fresh as usize {
                for part in 0..2 {
                    let base = ((part * s.rings + rw.ring as usize) * s.w + t % s.w) * kvd;
                    if ring[base].is_nan() {
                        ring[base..base + kvd].copy_from_slice(&rng.normals(kvd, 1.0));
                    }
                }
            }
        }
    }
    if s.kv_f16 {
        kv = round_f16(&kv);
        ring = round_f16(&ring);
    }
    let gw = if s.gate_mode == 2 { s.d } else { dh };
    let gate_w = rng.normals(s.h * gw, 0.7 / (gw as f32).sqrt());
    let gate_b = rng.normals(s.h, 0.5);
    let gate_norm = norm_weight(&mut rng, s.d);
    let gate = [gate_w.clone(), gate_b.clone(), gate_norm.clone()].concat();
    // Row 1's hidden state is tiny, so that EPS matters in the hidden-state gate's RMSNorm.
    let mut hidden = rng.normals(r_n * s.d, 1.0);
    if r_n > 1 {
        hidden[s.d..2 * s.d].iter_mut().for_each(|v| *v *= 1e-3);
    }

    let mut want = vec![poison(); (r_n + extra) * qd];
    let group = s.h / s.hkv;
    let mut gates = Vec::new();
    for (r, rw) in rows.iter().enumerate() {
        let pos = rw.pos as usize;
        let hn = reference::rmsnorm(&hidden[r * s.d..(r + 1) * s.d], &gate_norm, EPS);
        for h in 0..s.h {
            let kvh = h / group;
            let q = &qkv[r * qkvd + h * dh..r * qkvd + (h + 1) * dh];
            let cache = |part: usize, t: usize| {
                let b = ((part * s.slots + rw.attn_slot as usize) * s.tmax + t) * kvd + kvh * dh;
                &kv[b..b + dh]
            };
            let keys: Vec<&[f32]> = (0..=pos).map(|t| cache(0, t)).collect();
            let values: Vec<&[f32]> = (0..=pos).map(|t| cache(1, t)).collect();
            let glob = reference::attend(q, &keys, &values);
            let o = &mut want[r * qd + h * dh..r * qd + (h + 1) * dh];
            if !is_local(rw) {
                o.copy_from_slice(&glob);
                continue;
            }
            let local = |part: usize, t: usize| {
                let back = pos - t;
                if back < rw.fresh as usize {
                    let b = (r - back) * qkvd + qd + part * kvd + kvh * dh;
                    &qkv[b..b + dh]
                } else {
                    let b = ((part * s.rings + rw.ring as usize) * s.w + t % s.w) * kvd + kvh * dh;
                    &ring[b..b + dh]
                }
            };
            let keys: Vec<&[f32]> = window(rw).map(|t| local(0, t)).collect();
            let values: Vec<&[f32]> = window(rw).map(|t| local(1, t)).collect();
            let loc = reference::attend(q, &keys, &values);
            let logit = match s.gate_mode {
                1 => dot(q, &gate_w[h * dh..(h + 1) * dh]),
                _ => dot(&hn, &gate_w[h * s.d..(h + 1) * s.d]),
            } + gate_b[h] as f64;
            let gv = reference::sigmoid(logit as f32) as f64;
            gates.push(gv);
            for j in 0..dh {
                o[j] = (gv * glob[j] as f64 + (1.0 - gv) * loc[j] as f64) as f32;
            }
        }
    }
    // The gates should be informative (neither branch negligible) for the test to mean much.
    let mid = gates.iter().filter(|&&x| x > 0.05 && x < 0.95).count();
    assert!(mid * 10 >= gates.len() * 9, "{what}: gates {gates:?} saturate; adjust the test's scales");

    // Each row alone (the rows as given), then grouped as the runtime groups them (rows on the
    // same cache slot share one workgroup; the test's passes mix slots, loops and chunks).
    let mut grouped = rows.to_vec();
    plt::model::group_attention_rows(&mut grouped);
    assert!(rows.iter().all(|rw| rw.gnext == 0 && rw.gfollow == 0), "{what}: rows come ungrouped");
    for (how, rows) in [("rows alone", rows), ("rows grouped", &grouped[..])] {
        let bufs = [
            upload_rows(&g, rows),
            upload(&g, "qkv", &qkv),
            upload_kv(&g, "kv", &kv, s.kv_f16),
            upload_kv(&g, "ring", &ring, s.kv_f16),
            upload(&g, "gate", &gate),
            upload(&g, "hidden", &hidden),
            upload(&g, "out", &vec![poison(); want.len()]),
        ];
        let part = upload(&g, "part", &vec![poison(); (r_n + extra) * s.h * s.nsplit() * (dh + 2)]);
        let io = AttentionIo {
            rows: &bufs[0],
            qkv: &bufs[1],
            kv: &bufs[2],
            ring: &bufs[3],
            gate: &bufs[4],
            hidden: &bufs[5],
            out: &bufs[6],
            partials: &part,
        };
        let attention = |split| Attention { shape: s.attn(), split }.dispatch(&g, &io);
        if s.split == 0 {
            launch(&g, attention(AttnSplit::Whole), r_n, 0);
        } else {
            let (len, splits) = (s.split, s.nsplit());
            launch(&g, attention(AttnSplit::Partials { len, splits }), r_n, 0);
            launch(&g, attention(AttnSplit::Combine { len, splits }), r_n, 0);
        }
        let what = format!(
            "{what}, {how} (H={} HKV={} DH={} D={} W={} GATE_MODE={} KV_F16={} SPLIT={})",
            s.h, s.hkv, s.dh, s.d, s.w, s.gate_mode, s.kv_f16, s.split
        );
        compare(&what, &read(&g, &bufs[6], want.len()), &want, dh, TOL);
    }
}

/// The grouping the attention kernel relies on: rows on one cache slot, in row order, at most
/// `ATTN_GROUP_ROWS` per group, each row in exactly one group.
#[test]
fn attention_groups_follow_cache_slots() {
    use plt::model::{group_attention_rows, ATTN_GROUP_ROWS};
    let mut rng = Rng::new(801);
    for n in [1, 2, 5, 9, 33] {
        let mut rows: Vec<Row> = (0..n).map(|i| causal(i, rng.below(3) as usize)).collect();
        group_attention_rows(&mut rows);
        let mut seen = vec![0; n];
        for (i, lead) in rows.iter().enumerate().filter(|(_, rw)| rw.gfollow == 0) {
            let (mut j, mut len) = (i, 1);
            seen[i] += 1;
            while rows[j].gnext != 0 {
                let k = rows[j].gnext as usize;
                assert!(k > j && rows[k].gfollow == 1 && rows[k].attn_slot == lead.attn_slot, "{rows:?}");
                seen[k] += 1;
                j = k;
                len += 1;
            }
            assert!(len <= ATTN_GROUP_ROWS);
        }
        assert!(seen.iter().all(|&c| c == 1), "every row in one group: {seen:?}");
    }
    // A fused decode pass (B = 2, L = 3, loop-major rows): one group per sequence.
    let mut rows = decode_rows(&[40, 7], 3);
    group_attention_rows(&mut rows);
    let links: Vec<(u32, u32)> = rows.iter().map(|rw| (rw.gnext, rw.gfollow)).collect();
    assert_eq!(links, [(2, 0), (3, 0), (4, 1), (5, 1), (0, 1), (0, 1)]);
}

#[test]
fn attention_causal_matches_cpu() {
    // GQA, Dh = 10: positions around and past one 64-key tile, two cache slots.
    let s = Shape { slots: 2, rings: 1, ..shape(4, 2, 10) };
    let rows: Vec<Row> = [0, 1, 5, 63, 64, 65, 70, 127, 128, 150, 159].iter().enumerate().map(|(i, &p)| causal(p, i % 2)).collect();
    attention_case("causal GQA", s, &rows, 501);
    // A prefill chunk of loop 0 (fresh set, no ring: must not matter).
    attention_case("causal chunk", s, &chunk(60, 9, 1, None), 502);
    // Dh = 72 (two output dims per thread for some threads), MHA.
    let rows: Vec<Row> = [0, 64, 100, 149].iter().map(|&p| causal(p, 0)).collect();
    attention_case("causal Dh=72", Shape { slots: 1, rings: 1, ..shape(2, 2, 72) }, &rows, 503);
    // Dh = 130 (three), H/HKV = 2.
    let rows: Vec<Row> = [3, 70, 131].iter().enumerate().map(|(i, &p)| causal(p, i % 3)).collect();
    attention_case("causal Dh=130", shape(2, 1, 130), &rows, 504);
    // Causal rows under a gated pipeline (loop 0 in a PLT model), one row.
    attention_case("causal row, gate mode 1", Shape { gate_mode: 1, ..shape(4, 2, 10) }, &[causal(77, 2)], 505);
}

#[test]
fn attention_query_gate_matches_cpu() {
    let base = Shape { gate_mode: 1, rings: 4, ..shape(4, 2, 10) };
    // W = 3 (left 2): a loop-1 prefill chunk at 70 (its first rows take positions 68, 69 from
    // the ring), then a decode pass (B = 2, L = 3), then rows at positions 0 and 1 (lo = 0).
    let mut rows = chunk(70, 6, 0, Some(0));
    rows.extend(decode_rows(&[150, 75], 3));
    rows.push(plt_row(0, 2, 1, 1));
    rows.push(plt_row(1, 2, 1, 1));
    attention_case("query gate W=3", base, &rows, 601);
    // A chunk longer than the window: later rows read only scratch rows, never the ring.
    attention_case("query gate chunk > window", base, &chunk(10, 7, 1, Some(2)), 602);
    // W = 70 (left 69): local windows over more than one 64-key tile, from ring and scratch.
    let mut rows = chunk(140, 5, 0, Some(0));
    rows.extend([plt_row(150, 1, 1, 1), plt_row(30, 1, 2, 1), plt_row(64, 2, 3, 1), plt_row(69, 2, 3, 1)]);
    attention_case("query gate W=70", Shape { w: 70, ..base }, &rows, 603);
    // Dh = 130, W = 5, H/HKV = 2.
    let mut rows = chunk(100, 3, 0, Some(0));
    rows.extend(decode_rows(&[149, 2], 2));
    attention_case("query gate Dh=130", Shape { w: 5, ..Shape { gate_mode: 1, rings: 4, ..shape(2, 1, 130) } }, &rows, 604);
}

#[test]
fn attention_hidden_gate_matches_cpu() {
    // Dh = 72, D = 70, W = 5: a loop-2 prefill chunk, then a decode pass.
    let s = Shape { gate_mode: 2, d: 70, w: 5, rings: 4, ..shape(4, 2, 72) };
    let mut rows = chunk(80, 7, 1, Some(3));
    rows.extend(decode_rows(&[75, 149], 3));
    attention_case("hidden gate Dh=72", s, &rows, 701);
    // Dh = 10, D = 130 (several hidden elements per thread), W = 70.
    let s = Shape { gate_mode: 2, d: 130, w: 70, rings: 4, ..shape(4, 2, 10) };
    let mut rows = decode_rows(&[150, 3], 3);
    rows.extend(chunk(66, 4, 2, Some(1)));
    attention_case("hidden gate W=70", s, &rows, 702);
}
