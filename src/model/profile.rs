//! Per-dispatch GPU times (`Session::set_profiling`): every dispatch of a call in its own
//! compute pass with its own pair of timestamps. A measuring aid (`examples/step_profile.rs`);
//! the total is higher than a normal step's.

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu};

const PROFILE_QUERIES: u32 = 4096;

pub(crate) struct Profiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    labels: std::cell::RefCell<Vec<String>>,
    /// (dispatch label, GPU milliseconds) of the last call.
    pub last: Vec<(String, f64)>,
}

impl Profiler {
    pub fn new(gpu: &Gpu) -> Result<Profiler> {
        if !gpu.has_timestamps() {
            return Err(Error::Input("profiling needs an adapter with timestamp queries".into()));
        }
        let queries = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count: PROFILE_QUERIES,
        });
        let bytes = PROFILE_QUERIES as u64 * 8;
        let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = gpu.readback("profile readback", bytes)?;
        Ok(Profiler { queries, resolve, readback, labels: Default::default(), last: Vec::new() })
    }

    /// Records `list` (a pass of `rows` rows), one timed compute pass per dispatch.
    pub fn record(&self, enc: &mut wgpu::CommandEncoder, list: &[(&'static str, &Dispatch)], rows: u32, logit_rows: u32) {
        let mut labels = self.labels.borrow_mut();
        for (label, d) in list {
            let k = labels.len() as u32;
            if 2 * k + 1 >= PROFILE_QUERIES {
                d.record(&mut enc.begin_compute_pass(&Default::default()), rows, logit_rows);
                continue;
            }
            labels.push(label.to_string());
            let tw = wgpu::ComputePassTimestampWrites {
                query_set: &self.queries,
                beginning_of_pass_write_index: Some(2 * k),
                end_of_pass_write_index: Some(2 * k + 1),
            };
            let mut cp = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: Some(tw) });
            d.record(&mut cp, rows, logit_rows);
        }
    }

    /// Resolves the call's queries into the readback buffer; returns how many were written.
    pub fn resolve(&self, enc: &mut wgpu::CommandEncoder) -> u32 {
        let n = self.labels.borrow().len() as u32 * 2;
        if n > 0 {
            enc.resolve_query_set(&self.queries, 0..n, &self.resolve, 0);
            enc.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, n as u64 * 8);
        }
        n
    }

    /// After the submit: reads the `n` resolved queries into `last`.
    pub async fn collect(&mut self, gpu: &Gpu, n: u32) -> Result<()> {
        let labels = std::mem::take(&mut *self.labels.borrow_mut());
        self.last.clear();
        if n > 0 {
            let bytes = gpu.read(&self.readback, n as u64 * 8).await?;
            let t: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
            let period = gpu.queue.get_timestamp_period() as f64;
            for (k, label) in labels.into_iter().enumerate() {
                self.last.push((label, t[2 * k + 1].saturating_sub(t[2 * k]) as f64 * period / 1e6));
            }
        }
        Ok(())
    }
}
