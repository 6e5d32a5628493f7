//! The adapter's copy bandwidth: the yardstick for the weight bytes a decode step streams.
//!
//! Two measurements of `bytes` read and written per copy, (read + write bytes) / time, each the
//! best of 5 rounds (after one untimed round) of a submit of several copies:
//! - `copy_buffer_to_buffer`, timed by the wall clock around submit and wait;
//! - the copy kernel (`shaders/copy.wgsl`, one vec4 per invocation), timed by GPU timestamps at
//!   the start and end of its pass where the adapter has them, else by the wall clock.
//!
//! The report's figure is the better of the two.

use super::report::{CopyBw, Dist, Timer};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use std::time::Instant;

/// Timed rounds of each measurement (after one untimed round).
const ROUNDS: usize = 5;

/// Copy bandwidth of the adapter: `bytes` (capped by the binding limit) read and written per copy.
pub fn copy_bandwidth(gpu: &Gpu, bytes: u64) -> Result<CopyBw> {
    let max = gpu.limits.max_storage_buffer_binding_size.min(gpu.limits.max_buffer_size);
    let size = bytes.min(max) / 256 * 256;
    let dev = &gpu.device;
    let buf = |label: &str| {
        dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    };
    let (src, dst) = (buf("bench copy src"), buf("bench copy dst"));
    let wait = || dev.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(e.to_string()));
    let copies: u64 = if gpu.is_software() { 2 } else { 8 };
    let moved = (2 * size * copies) as f64;

    // copy_buffer_to_buffer, timed by the wall clock around submit + wait.
    let mut buffer_gbps = Vec::new();
    for round in 0..=ROUNDS {
        let mut enc = dev.create_command_encoder(&Default::default());
        for _ in 0..copies {
            enc.copy_buffer_to_buffer(&src, 0, &dst, 0, size);
        }
        let t = Instant::now();
        gpu.queue.submit([enc.finish()]);
        wait()?;
        if round > 0 {
            buffer_gbps.push(moved / t.elapsed().as_secs_f64() / 1e9);
        }
    }

    // The copy kernel, timed by pass timestamps where the adapter has them.
    let copy = crate::kernels::Copy { vec4s: size / 16 }.dispatch(gpu, &src, &dst)?;
    let [x, y, z] = copy.workgroups(0, 0);
    let ts = gpu.has_timestamps().then(|| {
        let qs = dev.create_query_set(&wgpu::QuerySetDescriptor { label: Some("bench copy"), ty: wgpu::QueryType::Timestamp, count: 2 });
        let resolve = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench copy timestamps"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench copy timestamps read"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        (qs, resolve, read)
    });
    let mut shader_gbps = Vec::new();
    for round in 0..=ROUNDS {
        let mut enc = dev.create_command_encoder(&Default::default());
        {
            let timestamp_writes = ts.as_ref().map(|(qs, _, _)| wgpu::ComputePassTimestampWrites {
                query_set: qs,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            });
            let mut cp = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("bench copy"), timestamp_writes });
            cp.set_pipeline(&copy.pipeline.pipeline);
            cp.set_bind_group(0, &copy.bind_group, &[]);
            for _ in 0..copies {
                cp.dispatch_workgroups(x, y, z);
            }
        }
        if let Some((qs, resolve, read)) = &ts {
            enc.resolve_query_set(qs, 0..2, resolve, 0);
            enc.copy_buffer_to_buffer(resolve, 0, read, 0, 16);
        }
        let t = Instant::now();
        gpu.queue.submit([enc.finish()]);
        wait()?;
        let wall = t.elapsed().as_secs_f64();
        let secs = match &ts {
            Some((_, _, read)) => {
                let b = pollster::block_on(gpu.read(read, 16))?;
                let v: [u64; 2] = bytemuck::pod_read_unaligned(&b[..16]);
                let ns = v[1].saturating_sub(v[0]) as f64 * gpu.queue.get_timestamp_period() as f64;
                // A zero or absurd interval (some drivers) falls back to the wall clock.
                if ns > 0.0 && ns * 1e-9 <= wall * 1.5 {
                    ns * 1e-9
                } else {
                    wall
                }
            }
            None => wall,
        };
        if round > 0 {
            shader_gbps.push(moved / secs / 1e9);
        }
    }
    gpu.check()?;
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let med = |v: &[f64]| Dist::of(v).map(|d| d.median).unwrap_or(0.0);
    let (b, s) = (best(&buffer_gbps), best(&shader_gbps));
    Ok(CopyBw {
        bytes: size,
        copies,
        buffer_copy_gbps: b,
        buffer_copy_gbps_median: med(&buffer_gbps),
        shader_copy_gbps: s,
        shader_copy_gbps_median: med(&shader_gbps),
        shader_copy_timer: if ts.is_some() { Timer::Timestamps } else { Timer::Wall },
        gbps: b.max(s),
    })
}

/// The CPU's memory bandwidth with the backend's threads, STREAM-like: a buffer of `bytes`
/// copied to another (read + write bytes per second) and read alone (the access of a decode
/// step's weights: a sum of every value), each split into one contiguous range per
/// thread, best of 5 rounds after one untimed round. The report's figure is the better of the
/// two; `shader_copy_*` hold the read.
pub fn cpu_bandwidth(pool: &crate::cpu::Pool, bytes: u64) -> CopyBw {
    use crate::cpu::model::SyncPtr;
    let n = (bytes as usize / 8).max(1 << 16); // u64 words
    let src: Vec<u64> = (0..n as u64).collect();
    let mut dst = vec![0u64; n];
    let threads = pool.threads();
    let range = |t: usize| (n * t / threads)..(n * (t + 1) / threads);
    let dp = SyncPtr(dst.as_mut_ptr());
    let time = |f: &(dyn Fn(usize) + Sync)| -> Vec<f64> {
        (0..=ROUNDS)
            .map(|_| {
                let t = Instant::now();
                pool.run(f);
                t.elapsed().as_secs_f64()
            })
            .skip(1)
            .collect()
    };
    let copy = time(&|t| {
        let r = range(t);
        // Safe: each thread writes its own range.
        let d = unsafe { std::slice::from_raw_parts_mut(dp.ptr().add(r.start), r.len()) };
        d.copy_from_slice(&src[r]);
    });
    let sums: Vec<std::sync::atomic::AtomicU32> = (0..threads).map(|_| std::sync::atomic::AtomicU32::new(0)).collect();
    let simd = crate::cpu::Simd::detect();
    let read = time(&|t| {
        // Every value summed with the backend's widest loads (the loads are the work).
        let r = range(t);
        let words: &[f32] = bytemuck::cast_slice(&src[r]);
        let s = crate::cpu::kernels::sum_f32(simd, words);
        sums[t].store(s.to_bits(), std::sync::atomic::Ordering::Relaxed);
    });
    std::hint::black_box((&dst, &sums));
    let gbps = |secs: &[f64], moved: f64| {
        let mut g: Vec<f64> = secs.iter().map(|s| moved / s.max(1e-12) / 1e9).collect();
        g.sort_by(|a, b| a.total_cmp(b));
        (g[g.len() - 1], g[g.len() / 2])
    };
    let b = 8.0 * n as f64;
    let (copy_best, copy_median) = gbps(&copy, 2.0 * b);
    let (read_best, read_median) = gbps(&read, b);
    CopyBw {
        bytes: 8 * n as u64,
        copies: 1,
        buffer_copy_gbps: copy_best,
        buffer_copy_gbps_median: copy_median,
        shader_copy_gbps: read_best,
        shader_copy_gbps_median: read_median,
        shader_copy_timer: Timer::Wall,
        gbps: copy_best.max(read_best),
    }
}
