//! What the kernel tests share: poisoned values, the scale-free comparison, buffers in and out,
//! and one pass of a kernel descriptor's dispatch.
#![allow(dead_code)]

use plt::gpu::{Dispatch, Gpu};
use plt::model::{PassInfo, Row};

pub const POISON_BITS: u32 = 0x7fc0_dead;

pub fn poison() -> f32 {
    f32::from_bits(POISON_BITS)
}

pub fn is_poison(v: f32) -> bool {
    v.to_bits() == POISON_BITS
}

/// Compares a whole output buffer, `width` elements at a time (a row, a head): elements where
/// `want` is poison must still be poison bit for bit; the others are compared per chunk by
/// normalised MSE.
pub fn compare(what: &str, got: &[f32], want: &[f32], width: usize, tol: f64) {
    compare_scaled(what, got, want, want, width, tol);
}

/// `compare`, with the error of a chunk normalised by `scale` (per element) instead of `want`:
/// for sums, scale = the sum of the terms' magnitudes, so that a result near zero by
/// cancellation is judged by the size of what was summed (f32 rounding is relative to that).
pub fn compare_scaled(what: &str, got: &[f32], want: &[f32], scale: &[f32], width: usize, tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert_eq!(scale.len(), want.len(), "{what}: scale length");
    for (c, ((gc, wc), sc)) in got.chunks(width).zip(want.chunks(width)).zip(scale.chunks(width)).enumerate() {
        let (mut g, mut w, mut num, mut den) = (Vec::new(), Vec::new(), 0.0f64, 0.0f64);
        for (i, ((&a, &b), &s)) in gc.iter().zip(wc).zip(sc).enumerate() {
            if is_poison(b) {
                assert!(is_poison(a), "{what}: element {} (chunk {c}) must not be written, holds {a}", c * width + i);
            } else {
                g.push(a);
                w.push(b);
                num += (a as f64 - b as f64).powi(2);
                den += (s as f64).powi(2);
            }
        }
        let e = if g.iter().all(|v| v.is_finite()) {
            if den > 0.0 {
                num / den
            } else if num == 0.0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            f64::INFINITY
        };
        if e.is_nan() || e > tol {
            let errors: Vec<f32> = g.iter().zip(&w).map(|(&a, &b)| if (a - b).is_finite() { (a - b).abs() } else { f32::INFINITY }).collect();
            let worst = plt::sampling::argmax(&errors) as usize;
            panic!(
                "{what}: chunk {c} (width {width}): nmse {e:e} > {tol:e}; worst element {worst} of the chunk's written ones: got {} want {}",
                g[worst], w[worst]
            );
        }
    }
}

/// A comparison chunk of whole rows of `width`, at least 64 elements: a single element's
/// relative error is meaningless where a sum cancels (a dot product near zero).
pub fn rows_of(width: usize) -> usize {
    width * 64usize.div_ceil(width)
}

pub fn upload(g: &Gpu, label: &str, v: &[f32]) -> wgpu::Buffer {
    g.storage_init(label, bytemuck::cast_slice(v)).unwrap()
}

pub fn upload_rows(g: &Gpu, rows: &[Row]) -> wgpu::Buffer {
    g.storage_init("rows", bytemuck::cast_slice(rows)).unwrap()
}

pub fn pass(g: &Gpu, rows: usize, logit_row0: usize, logit_rows: usize) -> wgpu::Buffer {
    let p = PassInfo { rows: rows as u32, logit_row0: logit_row0 as u32, logit_rows: logit_rows as u32, seq0: 0 };
    g.uniform("pass", bytemuck::bytes_of(&p))
}

pub fn read(g: &Gpu, b: &wgpu::Buffer, n: usize) -> Vec<f32> {
    pollster::block_on(g.read_storage_f32(b, n)).unwrap()
}

/// Runs `dispatch` (a kernel descriptor's, bound to the test's buffers) as one pass of `rows` rows.
pub fn launch(g: &Gpu, dispatch: plt::Result<Dispatch>, rows: usize, logit_rows: usize) {
    let d = dispatch.unwrap_or_else(|e| panic!("{e}"));
    let label = d.pipeline.label.clone();
    g.run(&[&d], rows as u32, logit_rows as u32).unwrap_or_else(|e| panic!("{label}: {e}"));
}

