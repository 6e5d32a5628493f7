//! The kernels on quantised weights (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 block records; Q4_K, Q5_K,
//! Q6_K super-block records) against the CPU: fresh random GGUF blocks (random f16 scales and
//! offsets, random 6-bit or int8 sub-block scales and mins, random quants) are repacked as the
//! loader repacks them (`WeightFormat::repack`), and the GPU's products and embedding rows are
//! compared with `gguf::dequantize` (the reference) followed by an f64 product. Outputs are
//! poisoned first: an element that must not be written keeps its bit pattern, one that must be
//! written and was not fails the comparison. Every path: the tiled matmul, the row-sharing one
//! at 8, 16 and 32 lanes (and subgroup reductions where the adapter has them), logit rows, bias
//! and accumulate; K = 32, 64, 96 (256, 512, 768 for the K-quants); odd row and output counts.

mod common;
#[path = "support/kernel_io.rs"]
mod kernel_io;

use common::gpu;
use kernel_io::*;
use plt::gguf::dequantize;
use plt::kernels::*;
use plt::model::{Row, NONE};
use plt::rng::Rng;

const TOL: f64 = 1e-10;


/// `rows` x `cols` random weights of `format` as GGUF blocks: (file bytes, device layout, the
/// values).
fn random_blocks(rng: &mut Rng, format: WeightFormat, rows: usize, cols: usize) -> (Vec<u8>, Vec<u8>, Vec<f32>) {
    let n = rows * cols;
    assert!(cols.is_multiple_of(format.block()));
    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
    let mut raw = Vec::new();
    // K-quant super-blocks: random d (and dmin), random 6-bit scale/min bytes or int8 scales,
    // random quants.
    let kq = match format {
        WeightFormat::Q4_K => Some(140),
        WeightFormat::Q5_K => Some(172),
        WeightFormat::Q6_K => Some(208),
        _ => None,
    };
    if let Some(rest) = kq {
        for _ in 0..n / 256 {
            let d = 0.002 + 0.01 * rng.uniform() as f32;
            if format == WeightFormat::Q6_K {
                raw.extend((0..rest).map(|_| rng.below(256) as u8));
                raw.extend_from_slice(&f16(d * if rng.below(2) == 0 { 1.0 } else { -1.0 }));
            } else {
                raw.extend_from_slice(&f16(d));
                raw.extend_from_slice(&f16(0.01 * rng.uniform() as f32));
                raw.extend((0..rest).map(|_| rng.below(256) as u8));
            }
        }
    }
    for _ in 0..if kq.is_some() { 0 } else { n / 32 } {
        let d = (0.02 + 0.1 * rng.uniform() as f32) * if rng.below(2) == 0 { 1.0 } else { -1.0 };
        raw.extend_from_slice(&f16(d));
        if matches!(format, WeightFormat::Q4_1 | WeightFormat::Q5_1) {
            raw.extend_from_slice(&f16(0.3 * rng.normal()));
        }
        let rest = match format {
            WeightFormat::Q8_0 => 32,
            WeightFormat::Q4_0 | WeightFormat::Q4_1 => 16,
            _ => 20, // qh then the nibbles
        };
        raw.extend((0..rest).map(|_| rng.below(256) as u8));
    }
    let values = dequantize(format.ggml(), &raw, n).unwrap();
    let mut records = Vec::new();
    format.repack(&raw, cols, &mut records).unwrap();
    assert_eq!(records.len(), rows * format.row_bytes(cols));
    (raw, records, values)
}





/// y (+)= W x (+ b) with W random blocks of `format`, over every path, lane count, reduction,
/// and bias/accumulate combination; `logits`: the rows are the pass's logit rows.
fn matmul_case(rng: &mut Rng, format: WeightFormat, path: MatmulPath, r: usize, k: usize, o: usize, logits: bool) {
    let g = gpu();
    let extra = 3;
    let (_, records, wv) = random_blocks(rng, format, o, k);
    let wbuf = g.storage_init("w", &records).unwrap();
    let x = rng.normals((r + extra) * k, 1.0);
    let xbuf = upload(&g, "x", &x);
    let bias = rng.normals(o, 0.5);
    let bbuf = upload(&g, "bias", &bias);
    let (rows, logit_rows) = if logits { (r + extra, r) } else { (r, r + extra) };
    let pbuf = pass(&g, rows, 1, logit_rows);
    let kernel = |lanes, subgroups| Matmul { k, n: o, storage: format, path, lanes, subgroups, logit_rows: logits, norm_eps: None, glu: false, out: OutMap::dense(o) };
    let prod: Vec<f64> = (0..r * o).map(|i| (0..k).map(|j| x[i / o * k + j] as f64 * wv[i % o * k + j] as f64).sum()).collect();
    let mag: Vec<f64> = (0..r * o).map(|i| (0..k).map(|j| (x[i / o * k + j] as f64 * wv[i % o * k + j] as f64).abs()).sum()).collect();
    let mut variants = vec![(8, false)];
    if path == MatmulPath::RowSharing {
        variants.clear();
        for lanes in [8, 16, 32] {
            variants.push((lanes, false));
            if g.subgroup_reduce(lanes) {
                variants.push((lanes, true));
            }
        }
    }
    for (lanes, sg) in variants {
        for (acc, has_bias) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut y0 = vec![poison(); (r + extra) * o];
            if acc {
                y0[..r * o].iter_mut().for_each(|v| *v = rng.normal());
            }
            let (mut want, mut scale) = (y0.clone(), vec![0f32; y0.len()]);
            for i in 0..r * o {
                let b = if has_bias { bias[i % o] as f64 } else { 0.0 };
                let a = if acc { y0[i] as f64 } else { 0.0 };
                want[i] = (prod[i] + b + a) as f32;
                scale[i] = (mag[i] + b.abs() + a.abs()) as f32;
            }
            let ybuf = upload(&g, "y", &y0);
            let prm = g.uniform("params", &MatmulParams { accumulate: acc, bias: has_bias, out_offset: 0 }.bytes());
            let io = MatmulIo { params: &prm, pass: &pbuf, x: &xbuf, w: &wbuf, bias: &bbuf, y: &ybuf, norm_weight: &bbuf };
            let kern = kernel(lanes, sg);
            launch(&g, kern.dispatch(&g, &io), rows, logit_rows);
            let what = format!(
                "{} {:?} R={r} K={k} O={o} logits={logits} lanes={lanes} subgroups={sg} accumulate={acc} bias={has_bias}",
                kern.variant().entry,
                format
            );
            compare_scaled(&what, &read(&g, &ybuf, y0.len()), &want, &scale, o * 64usize.div_ceil(o), TOL);
        }
    }
}

#[test]
fn quantised_matmul_rows_matches_cpu() {
    let mut rng = Rng::new(701);
    for format in WeightFormat::QUANTISED {
        for &(r, k, o) in &[(1, 32, 1), (3, 32, 65), (4, 96, 33), (6, 64, 70), (16, 96, 67)] {
            let k = k * format.block() / 32;
            for logits in [false, true] {
                matmul_case(&mut rng, format, MatmulPath::RowSharing, r, k, o, logits);
            }
        }
    }
}

#[test]
fn quantised_matmul_tiled_matches_cpu() {
    let mut rng = Rng::new(702);
    for format in WeightFormat::QUANTISED {
        for &(r, k, o) in &[(1, 32, 3), (17, 96, 65), (70, 64, 67)] {
            let k = k * format.block() / 32;
            for logits in [false, true] {
                matmul_case(&mut rng, format, MatmulPath::Tiled, r, k, o, logits);
            }
        }
    }
}

/// The embedding (and so a tied lm_head's table) read from quantised rows: loop-0 rows take
/// E[token], the others e_scale E[token] + c_scale C.
#[test]
fn quantised_embed_matches_cpu() {
    let g = gpu();
    let mut rng = Rng::new(703);
    for format in WeightFormat::QUANTISED {
        for &(r, d, v) in &[(1, 32, 5), (5, 96, 13), (17, 64, 7)] {
            let d = d * format.block() / 32;
            let extra = 2;
            let (_, records, emb) = random_blocks(&mut rng, format, v, d);
            let cbuf = rng.normals(4 * d, 1.0);
            let rows: Vec<Row> = (0..r)
                .map(|i| {
                    let token = rng.below(v as u64) as u32;
                    if i % 3 == 0 {
                        Row { token, ..Row::plain(i, 0) }
                    } else {
                        Row { token, csrc: rng.below(4) as u32, e_scale: 0.5 + rng.uniform() as f32, c_scale: rng.normal(), lp: 1, ..Row::plain(i, 0) }
                    }
                })
                .collect();
            let mut want = vec![poison(); (r + extra) * d];
            let mut scale = vec![0f32; want.len()];
            for (i, rw) in rows.iter().enumerate() {
                for j in 0..d {
                    let e = rw.e_scale as f64 * emb[rw.token as usize * d + j] as f64;
                    let c = if rw.csrc != NONE { rw.c_scale as f64 * cbuf[rw.csrc as usize * d + j] as f64 } else { 0.0 };
                    want[i * d + j] = (e + c) as f32;
                    scale[i * d + j] = (e.abs() + c.abs()) as f32;
                }
            }
            let out = upload(&g, "x", &vec![poison(); (r + extra) * d]);
            let eb = g.storage_init("emb", &records).unwrap();
            let rb = g.storage_init("rows", bytemuck::cast_slice(&rows)).unwrap();
            let cb = upload(&g, "cbuf", &cbuf);
            launch(&g, Embed { d, storage: format, first: 0, rows: v }.dispatch(&g, &EmbedIo { rows: &rb, embed: &eb, carried: &cb, out: &out }), r, 0);
            compare_scaled(&format!("embed_input {format:?} R={r} D={d} V={v}"), &read(&g, &out, (r + extra) * d), &want, &scale, d, TOL);
        }
    }
}

/// Repacking checks its input: a partial row, or rows that are not whole blocks, is an error,
/// not a panic; whole rows come out at `row_bytes` each, the file's bytes where the row has an
/// even number of blocks.
#[test]
fn repack_checks_rows_and_keeps_the_files_bytes() {
    let mut out = Vec::new();
    let mut rng = Rng::new(706);
    for format in WeightFormat::QUANTISED {
        let b = format.block();
        let err = format.repack(&[0u8; 35], b, &mut out).unwrap_err().to_string();
        assert!(err.contains(format.name()), "{err}");
        let err = format.repack(&vec![0u8; 2 * b + 1], 2 * b, &mut out).unwrap_err().to_string();
        assert!(err.contains(format.name()), "{err}");
        let err = format.repack(&[], b + 1, &mut out).unwrap_err().to_string();
        assert!(err.contains("whole"), "{err}");
        for nb in [1, 2, 3, 4] {
            let (raw, dev, _) = random_blocks(&mut rng, format, 3, nb * b);
            assert_eq!(dev.len(), 3 * format.row_bytes(nb * b));
            assert_eq!(dev.len() % 4, 0, "{format:?}: rows are whole words");
            if nb % 2 == 0 {
                assert_eq!(dev.len(), raw.len(), "{format:?}: {nb} blocks per row take the file's bytes");
            }
        }
    }
}

/// `n` random weights of any format: (device bytes, the values).
fn random_weights_of(rng: &mut Rng, format: WeightFormat, rows: usize, cols: usize) -> (Vec<u8>, Vec<f32>) {
    let n = rows * cols;
    match format {
        WeightFormat::F32 => {
            let v = rng.normals(n, 0.2);
            (bytemuck::cast_slice(&v).to_vec(), v)
        }
        WeightFormat::F16 => {
            let h: Vec<half::f16> = rng.normals(n, 0.2).into_iter().map(half::f16::from_f32).collect();
            let mut bytes: Vec<u8> = h.iter().flat_map(|x| x.to_le_bytes()).collect();
            bytes.resize(bytes.len().next_multiple_of(4), 0);
            (bytes, h.iter().map(|x| x.to_f32()).collect())
        }
        q => {
            let (_, records, values) = random_blocks(rng, q, rows, cols);
            (records, values)
        }
    }
}

/// One part of a larger matrix (a window past the binding limit, or one format of a fused
/// matrix): its rows write columns `offset + j * step` of y's rows of `stride` (bias indexed
/// the same way), and every other column keeps its poison; with GLU (float vec kernel) pair j
/// writes column `offset + j`. Every format, both paths.
#[test]
fn matmul_parts_write_only_their_columns() {
    let g = gpu();
    let mut rng = Rng::new(704);
    for format in WeightFormat::ALL {
        let k = if format.is_quantised() { 2 * format.block() } else { 40 };
        for path in [MatmulPath::RowSharing, MatmulPath::Tiled] {
            let glus: &[bool] = if !format.is_quantised() && path == MatmulPath::RowSharing { &[false, true] } else { &[false] };
            for &glu in glus {
                let (r, o) = (if path == MatmulPath::Tiled { 19 } else { 5 }, 38);
                let (out, offset) = if glu { (OutMap { stride: o / 2 + 7, step: 1 }, 4) } else { (OutMap { stride: 2 * o + 5, step: 2 }, 3) };
                let (wbytes, wv) = random_weights_of(&mut rng, format, o, k);
                let wbuf = g.storage_init("w", &wbytes).unwrap();
                let x = rng.normals(r * k, 1.0);
                let bias = rng.normals(out.stride, 0.5);
                let (xbuf, bbuf) = (upload(&g, "x", &x), upload(&g, "bias", &bias));
                let pbuf = pass(&g, r, 0, r);
                let prod = |row: usize, j: usize| -> (f64, f64) {
                    let terms = (0..k).map(|i| x[row * k + i] as f64 * wv[j * k + i] as f64);
                    (terms.clone().sum(), terms.map(f64::abs).sum())
                };
                let mut y0 = vec![poison(); r * out.stride];
                let (mut want, mut scale) = (y0.clone(), vec![0f32; y0.len()]);
                if glu {
                    for row in 0..r {
                        for j in 0..o / 2 {
                            let ((gv, gm), (uv, um)) = (prod(row, 2 * j), prod(row, 2 * j + 1));
                            let s = plt::reference::silu(gv as f32) as f64;
                            let i = row * out.stride + offset + j;
                            want[i] = (s * uv) as f32;
                            scale[i] = (s.abs() * um + 1.1 * gm * uv.abs()) as f32;
                        }
                    }
                } else {
                    for row in 0..r {
                        for j in 0..o {
                            let c = offset + j * out.step;
                            let i = row * out.stride + c;
                            y0[i] = rng.normal(); // accumulate onto it
                            let (p, m) = prod(row, j);
                            want[i] = (p + bias[c] as f64 + y0[i] as f64) as f32;
                            scale[i] = (m + bias[c].abs() as f64 + y0[i].abs() as f64) as f32;
                        }
                    }
                }
                let ybuf = upload(&g, "y", &y0);
                let prm = g.uniform("params", &MatmulParams { accumulate: !glu, bias: !glu, out_offset: offset as u32 }.bytes());
                let io = MatmulIo { params: &prm, pass: &pbuf, x: &xbuf, w: &wbuf, bias: &bbuf, y: &ybuf, norm_weight: &bbuf };
                let kern = Matmul { k, n: o, storage: format, path, lanes: 8, subgroups: false, logit_rows: false, norm_eps: None, glu, out };
                launch(&g, kern.dispatch(&g, &io), r, r);
                let what = format!("{} {format:?} part {out:?} at {offset} glu={glu}", kern.variant().entry);
                compare_scaled(&what, &read(&g, &ybuf, y0.len()), &want, &scale, out.stride * 4, TOL);
            }
        }
    }
}

/// One part of a split embedding table (rows `first .. first + rows`): it writes the rows whose
/// token it holds and leaves the others' poison.
#[test]
fn embed_part_writes_only_its_tokens() {
    let g = gpu();
    let mut rng = Rng::new(705);
    for format in [WeightFormat::F32, WeightFormat::F16, WeightFormat::Q8_0, WeightFormat::Q4_K] {
        let d = if format.is_quantised() { format.block() } else { 40 };
        let (v, first, rows_held, r) = (30, 11, 9, 24);
        let (bytes, emb) = random_weights_of(&mut rng, format, rows_held, d);
        let cbuf = rng.normals(2 * d, 1.0);
        let rows: Vec<Row> = (0..r)
            .map(|i| {
                let token = if i < 4 { (first + i * 3) as u32 } else { rng.below(v as u64) as u32 };
                Row { token, csrc: (i % 2) as u32, e_scale: 0.5, c_scale: rng.normal(), lp: 1, ..Row::plain(i, 0) }
            })
            .collect();
        let mut want = vec![poison(); r * d];
        let mut scale = vec![0f32; want.len()];
        for (i, rw) in rows.iter().enumerate() {
            let t = rw.token as usize;
            if t < first || t >= first + rows_held {
                continue;
            }
            for j in 0..d {
                let e = 0.5 * emb[(t - first) * d + j] as f64;
                let c = rw.c_scale as f64 * cbuf[rw.csrc as usize * d + j] as f64;
                want[i * d + j] = (e + c) as f32;
                scale[i * d + j] = (e.abs() + c.abs()) as f32;
            }
        }
        let out = upload(&g, "x", &vec![poison(); r * d]);
        let eb = g.storage_init("emb", &bytes).unwrap();
        let (rb, cb) = (upload_rows(&g, &rows), upload(&g, "cbuf", &cbuf));
        launch(&g, Embed { d, storage: format, first, rows: rows_held }.dispatch(&g, &EmbedIo { rows: &rb, embed: &eb, carried: &cb, out: &out }), r, 0);
        compare_scaled(&format!("embed part {format:?}"), &read(&g, &out, r * d), &want, &scale, d, TOL);
    }
}
