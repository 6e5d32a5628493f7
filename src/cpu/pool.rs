//! A small thread pool for the CPU backend's kernels: `threads - 1` workers plus the calling
//! thread run one job at a time, `Pool::run(|thread| ..)`, and the call returns when every
//! thread has finished it. A decode step runs a few hundred such jobs of tens of microseconds
//! each, so the workers spin for a short while after a job (the next one usually follows within
//! microseconds) before they sleep on a condition variable; waking a sleeping thread costs a
//! system call, spinning a few hundred nanoseconds.
//!
//! Jobs split their work into fixed pieces (`Pool::chunks`): which thread computes a piece never
//! changes what it computes, so results do not depend on the number of threads.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins for the next job before it sleeps.
const SPIN: Duration = Duration::from_micros(300);

/// The job being run: a borrowed closure whose lifetime `Pool::run` guarantees (it returns only
/// after every worker has finished with it).
type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// Incremented for every job; a worker runs a job when it sees a generation it has not run.
    generation: AtomicUsize,
    /// The job of the current generation.
    job: Mutex<Option<JobPtr>>,
    /// Workers that have not finished the current job yet.
    pending: AtomicUsize,
    /// A worker's job panicked.
    panicked: AtomicBool,
    stop: AtomicBool,
    /// Sleeping workers wait here for a new generation.
    sleep: Mutex<()>,
    wake: Condvar,
}

#[derive(Clone, Copy)]
struct JobPtr(Job);
// The pointer is only dereferenced while `Pool::run` keeps the closure (which is `Sync`) alive.
unsafe impl Send for JobPtr {}

/// A pool of `threads` threads (the caller's included).
pub struct Pool {
    threads: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises `run` calls from different threads.
    busy: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} threads)", self.threads)
    }
}

impl Pool {
    /// A pool that runs jobs on `threads` threads (at least 1; 1 runs them on the caller).
    pub fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            job: Mutex::new(None),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads)
            .filter_map(|i| {
                let s = shared.clone();
                std::thread::Builder::new().name(format!("plt-cpu-{i}")).spawn(move || worker(&s, i)).ok()
            })
            .collect::<Vec<_>>();
        // A thread that could not be started leaves its share to the others.
        Pool { threads: workers.len() + 1, shared, workers, busy: Mutex::new(()) }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(thread)` on every thread of the pool (thread 0 is the caller) and returns when
    /// all are done. A panic in any of them is raised here.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.threads == 1 {
            f(0);
            return;
        }
        let _one = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // Erase the closure's lifetime: the workers use it only until `pending` reaches 0,
        // which this function waits for before returning.
        let ptr: Job = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(f as *const _) };
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(JobPtr(ptr));
        s.pending.store(self.threads - 1, Ordering::SeqCst);
        {
            let _g = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.generation.fetch_add(1, Ordering::SeqCst);
        }
        s.wake.notify_all();
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0)));
        // Wait for the workers: spin briefly (they usually finish within microseconds), then
        // yield, so that a worker the OS descheduled (a busy machine) gets the core back.
        let mut spins = 0u32;
        while s.pending.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < 4096 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("a CPU worker thread panicked");
        }
    }

    /// Runs `f(piece)` for every piece in `0..pieces`, each exactly once, spread over the
    /// threads: thread t owns a contiguous run of pieces and takes them in order (one stream of
    /// memory per thread, which the prefetchers follow); a thread done with its run takes
    /// pieces from the far end of the others' runs, so a slow or descheduled thread holds up
    /// nobody for long.
    pub fn chunks(&self, pieces: usize, f: &(dyn Fn(usize) + Sync)) {
        if pieces == 0 {
            return;
        }
        let n = self.threads.min(pieces);
        if n == 1 {
            (0..pieces).for_each(f);
            return;
        }
        // Run t: pieces front..back, packed as (front << 32) | back.
        let runs: Vec<AtomicU64> = (0..n).map(|t| AtomicU64::new(((pieces * t / n) as u64) << 32 | (pieces * (t + 1) / n) as u64)).collect();
        let take = |t: usize, from_front: bool| -> Option<usize> {
            let run = &runs[t];
            let mut cur = run.load(Ordering::Relaxed);
            loop {
                let (front, back) = (cur >> 32, cur & 0xFFFF_FFFF);
                if front >= back {
                    return None;
                }
                let (next, piece) = if from_front { ((front + 1) << 32 | back, front) } else { (front << 32 | (back - 1), back - 1) };
                match run.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                    Ok(_) => return Some(piece as usize),
                    Err(now) => cur = now,
                }
            }
        };
        self.run(&|me| {
            if me < n {
                while let Some(i) = take(me, true) {
                    f(i);
                }
            }
            for k in 1..=n {
                let other = (me + k) % n;
                while let Some(i) = take(other, false) {
                    f(i);
                }
            }
        });
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let s = &*self.shared;
        {
            let _g = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.stop.store(true, Ordering::SeqCst);
            s.generation.fetch_add(1, Ordering::SeqCst);
        }
        s.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(s: &Shared, index: usize) {
    let mut seen = 0usize;
    loop {
        // Wait for a generation this worker has not run: spin first, then sleep.
        let start = Instant::now();
        let mut spins = 0u32;
        while s.generation.load(Ordering::Acquire) == seen {
            spins += 1;
            if spins < 4096 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            if spins.is_multiple_of(64) && start.elapsed() > SPIN {
                let mut g = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
                while s.generation.load(Ordering::Acquire) == seen {
                    g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                break;
            }
        }
        seen = s.generation.load(Ordering::Acquire);
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(JobPtr(f)) = job {
            // Safe: `run` keeps the closure alive until `pending` is 0.
            let f = unsafe { &*f };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(index))).is_err() {
                s.panicked.store(true, Ordering::SeqCst);
            }
        }
        s.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Threads to use by default: one per physical core where the system says (Linux:
/// /proc/cpuinfo's distinct (physical id, core id) pairs), else the available parallelism.
pub fn default_threads() -> usize {
    let logical = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    physical_cores().map(|p| p.clamp(1, logical)).unwrap_or(logical)
}

fn physical_cores() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mut cores = std::collections::HashSet::new();
    let (mut phys, mut core) = (None, None);
    for line in info.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let (Some(p), Some(c)) = (phys.take(), core.take()) {
                cores.insert((p, c));
            }
            continue;
        }
        let mut kv = line.splitn(2, ':');
        let (k, v) = (kv.next()?.trim(), kv.next().unwrap_or("").trim().to_string());
        match k {
            "physical id" => phys = Some(v),
            "core id" => core = Some(v),
            _ => {}
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_piece_runs_once_on_any_thread_count() {
        for threads in [1, 2, 3, 5] {
            let pool = Pool::new(threads);
            for pieces in [0, 1, 7, 100] {
                let hits: Vec<AtomicUsize> = (0..pieces).map(|_| AtomicUsize::new(0)).collect();
                pool.chunks(pieces, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "threads {threads}, pieces {pieces}");
            }
            // Many short jobs in a row (the workers spin between them) and one after a sleep.
            let total = AtomicUsize::new(0);
            for _ in 0..1000 {
                pool.run(&|_| {
                    total.fetch_add(1, Ordering::Relaxed);
                });
            }
            assert_eq!(total.load(Ordering::Relaxed), 1000 * pool.threads());
            std::thread::sleep(Duration::from_millis(2));
            pool.run(&|_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(total.load(Ordering::Relaxed), 1001 * pool.threads());
        }
    }

    #[test]
    fn a_panicking_job_is_raised_and_the_pool_goes_on() {
        let pool = Pool::new(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.run(&|t| assert!(t != 1, "worker fails"))));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.run(&|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 2);
    }
}
