//! A small fork-join thread pool tuned for many short parallel regions.
//!
//! Decoding one token runs a few hundred parallel regions (every matmul, attention), each lasting
//! 10–500 µs, so the cost that matters is the hand-off, not throughput of long jobs. Workers spin
//! for a short while after each region (so the next one starts within a fraction of a
//! microsecond) and then park, so an idle server uses no CPU.
//!
//! Protocol: one atomic word holds `(job tag, next chunk)`. The caller publishes a job by writing
//! the job description and then a new tag; workers claim chunks with a compare-and-swap that only
//! succeeds while the tag is current, so a worker that wakes late can never touch a finished job.
//! The caller works on chunks too and returns once every chunk has finished, after closing the
//! job (its chunk index set to all ones): a worker that reaches a finished job late, while the
//! caller is already publishing the next one, may read the next job's (larger) chunk count, and
//! must find nothing left to claim under the old tag.
//!
//! What it does NOT do: work stealing, nested parallelism (a `parallel_for` inside a chunk runs
//! serially on the calling thread), thread pinning, or scheduling of unrelated tasks.

use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long an idle worker keeps spinning before it parks.
const SPIN: Duration = Duration::from_micros(300);
/// How long the caller spins waiting for the last chunks before it starts yielding its core.
const CALLER_SPIN: Duration = Duration::from_micros(50);

thread_local! {
    static IN_REGION: Cell<bool> = const { Cell::new(false) };
}

/// The job word: tag in the high 32 bits, next chunk index in the low 32.
const IDX_BITS: u32 = 32;
const IDX_MASK: u64 = (1 << IDX_BITS) - 1;

struct Shared {
    /// (tag << 32) | next chunk index.
    state: AtomicU64,
    /// Number of chunks of the current job.
    n_chunks: AtomicUsize,
    /// Chunks finished (by anyone) in the current job.
    done: AtomicUsize,
    /// Type-erased closure of the current job.
    data: AtomicUsize,
    call: AtomicUsize,
    shutdown: AtomicBool,
    sleeping: Vec<AtomicBool>,
    threads: Mutex<Vec<Thread>>,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

/// A fixed set of worker threads plus the calling thread.
///
/// `ThreadPool::new(n)` runs regions on `n` threads: the caller and `n − 1` workers.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
    /// Serialises callers from different threads; a region is one job at a time.
    caller: Mutex<()>,
}

impl ThreadPool {
    /// A pool running regions on `threads` threads (the caller included).
    /// `0` means [`ThreadPool::physical_cores`].
    pub fn new(threads: usize) -> ThreadPool {
        let threads = if threads == 0 {
            Self::physical_cores()
        } else {
            threads
        };
        let workers = threads - 1;
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            n_chunks: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            data: AtomicUsize::new(0),
            call: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            sleeping: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            threads: Mutex::new(Vec::new()),
            panic: Mutex::new(None),
        });
        let handles: Vec<JoinHandle<()>> = (0..workers)
            .map(|i| {
                let s = Arc::clone(&shared);
                thread::Builder::new()
                    .name(format!("bitnet-pool-{i}"))
                    .spawn(move || worker(&s, i))
                    .expect("failed to spawn a thread-pool worker")
            })
            .collect();
        *shared.threads.lock().unwrap_or_else(|e| e.into_inner()) =
            handles.iter().map(|h| h.thread().clone()).collect();
        ThreadPool {
            shared,
            workers: handles,
            threads,
            caller: Mutex::new(()),
        }
    }

    /// Number of physical cores available to this process: logical CPUs in the affinity mask
    /// (and cgroup quota, via `available_parallelism`), divided by SMT siblings per core as read
    /// from `/sys/devices/system/cpu/cpu0/topology/thread_siblings_list`. Falls back to the
    /// logical count when the topology is unreadable.
    pub fn physical_cores() -> usize {
        let logical = thread::available_parallelism().map_or(1, |n| n.get());
        let smt =
            std::fs::read_to_string("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list")
                .ok()
                .map_or(1, |s| count_cpu_list(s.trim()).max(1));
        (logical / smt).max(1)
    }

    /// Threads that run a region (workers + the caller).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Calls `f(chunk)` once for every `chunk` in `0..n_chunks`, spread over the pool's threads,
    /// and returns when all calls have returned. Chunks are handed out dynamically in index
    /// order, so make them similar in cost and numerous enough (≥ 4 per thread) to balance.
    ///
    /// Called from inside a chunk (nested), the chunks run serially on the calling thread.
    /// A panic in `f` is re-raised here after all other chunks have finished.
    pub fn parallel_for<F: Fn(usize) + Sync>(&self, n_chunks: usize, f: F) {
        if n_chunks == 0 {
            return;
        }
        if self.threads == 1 || n_chunks == 1 || IN_REGION.with(Cell::get) {
            (0..n_chunks).for_each(f);
            return;
        }
        assert!(
            n_chunks < (1 << IDX_BITS) - 1,
            "parallel_for: too many chunks ({n_chunks})"
        );
        let _guard = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;

        unsafe fn call<F: Fn(usize)>(data: usize, chunk: usize) {
            // SAFETY: `data` is `&F` published by `parallel_for`, alive until every claimed
            // chunk has finished (see the wait below).
            unsafe { (*(data as *const F))(chunk) }
        }
        let call_ptr: unsafe fn(usize, usize) = call::<F>;
        s.data.store(&f as *const F as usize, Ordering::Relaxed);
        s.call.store(call_ptr as usize, Ordering::Relaxed);
        // Release: a worker that reads this count also sees the previous job closed (below).
        s.n_chunks.store(n_chunks, Ordering::Release);
        s.done.store(0, Ordering::Relaxed);
        let tag = (s.state.load(Ordering::Relaxed) >> IDX_BITS).wrapping_add(1) & IDX_MASK;
        // SeqCst pairs with the workers' SeqCst `sleeping` store + state re-check before parking.
        s.state.store(tag << IDX_BITS, Ordering::SeqCst);
        for (i, flag) in s.sleeping.iter().enumerate() {
            if flag.swap(false, Ordering::SeqCst)
                && let Some(t) = s.threads.lock().unwrap_or_else(|e| e.into_inner()).get(i)
            {
                t.unpark();
            }
        }

        run_chunks(s, tag);

        // Spin briefly, then yield: if a worker was preempted mid-chunk (a loaded machine), a
        // spinning caller would keep it off this core.
        let start = Instant::now();
        let mut k = 0u32;
        while s.done.load(Ordering::Acquire) < n_chunks {
            k = k.wrapping_add(1);
            if !k.is_multiple_of(64) || start.elapsed() < CALLER_SPIN {
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
        // Close the job: no chunk index of this tag is below any chunk count from now on.
        s.state
            .store((tag << IDX_BITS) | IDX_MASK, Ordering::SeqCst);
        if let Some(p) = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take() {
            resume_unwind(p);
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.shutdown.store(true, Ordering::SeqCst);
        // Bump the tag so spinning workers notice, and wake the parked ones.
        let tag = (s.state.load(Ordering::Relaxed) >> IDX_BITS).wrapping_add(1) & IDX_MASK;
        s.n_chunks.store(0, Ordering::Relaxed);
        s.state.store(tag << IDX_BITS, Ordering::SeqCst);
        for h in &self.workers {
            h.thread().unpark();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Claims and runs chunks of job `tag` until none are left.
fn run_chunks(s: &Shared, tag: u64) {
    // This may already be the next job's count; see the module doc for why that is harmless.
    let n = s.n_chunks.load(Ordering::Acquire);
    loop {
        let cur = s.state.load(Ordering::Acquire);
        if cur >> IDX_BITS != tag {
            return;
        }
        let idx = (cur & IDX_MASK) as usize;
        if idx >= n {
            return;
        }
        if s.state
            .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        let data = s.data.load(Ordering::Relaxed);
        let call = s.call.load(Ordering::Relaxed);
        // SAFETY: stored from a `unsafe fn(usize, usize)` by parallel_for for this tag; the
        // successful claim (AcqRel on `state`) orders these loads after the caller's stores.
        let call: unsafe fn(usize, usize) = unsafe { std::mem::transmute(call) };
        IN_REGION.with(|c| c.set(true));
        // SAFETY: see `call` in parallel_for.
        let r = catch_unwind(AssertUnwindSafe(|| unsafe { call(data, idx) }));
        IN_REGION.with(|c| c.set(false));
        if let Err(p) = r {
            let mut slot = s.panic.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(p);
        }
        s.done.fetch_add(1, Ordering::Release);
    }
}

fn worker(s: &Shared, i: usize) {
    let mut seen = 0u64;
    loop {
        let mut tag = s.state.load(Ordering::Acquire) >> IDX_BITS;
        if tag == seen {
            let start = Instant::now();
            let mut k = 0u32;
            while tag == seen {
                std::hint::spin_loop();
                k += 1;
                if k.is_multiple_of(256) && start.elapsed() > SPIN {
                    s.sleeping[i].store(true, Ordering::SeqCst);
                    while s.state.load(Ordering::SeqCst) >> IDX_BITS == seen {
                        thread::park();
                    }
                    s.sleeping[i].store(false, Ordering::Relaxed);
                }
                tag = s.state.load(Ordering::Acquire) >> IDX_BITS;
            }
        }
        seen = tag;
        if s.shutdown.load(Ordering::SeqCst) {
            return;
        }
        run_chunks(s, tag);
    }
}

/// Counts CPUs in a Linux cpu list such as `0-3,8,10-11`.
fn count_cpu_list(s: &str) -> usize {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 1,
            },
            None => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::count_cpu_list;

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpu_list("0"), 1);
        assert_eq!(count_cpu_list("0,32"), 2);
        assert_eq!(count_cpu_list("0-3,8,10-11"), 7);
    }
}
