//! An alternative thread pool for the kernels (`CIFAR_SWEEP_POOL=own`; the default is
//! candle's, see `util::candle_pool`): the calling thread plus `threads - 1` helpers, sharing
//! the tasks of one parallel loop through an atomic counter.
//!
//! Unlike a barrier (candle's own pool, OpenMP), the caller never waits for a helper that has
//! not started: it claims tasks itself, and once every task is claimed it waits only for tasks
//! helpers are running. A helper the OS has not scheduled yet (the machine is shared, or
//! several training processes run at once) costs nothing; with a barrier it stalls every
//! parallel op for a time slice. Helpers spin briefly after a loop (kernels come in quick
//! succession), then sleep.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle helper spins before it sleeps.
const SPIN: Duration = Duration::from_micros(300);

/// One parallel loop. `f` is only called for a claimed index below `n`, and the caller returns
/// only after every claimed index has finished, so `f` (borrowed from the caller's stack) is
/// never called after it is gone even though helpers may still hold the `Arc`.
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    finished: AtomicUsize,
    /// A panic from a helper's task, re-raised by the caller.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

// SAFETY: `f` is Sync and only dereferenced under the protocol above.
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

impl Job {
    /// Claims and runs tasks until none are left. On a helper, a panicking task is recorded
    /// (and counted as finished) instead of killing the helper.
    fn work(&self, helper: bool) {
        loop {
            let i = self.next.fetch_add(1, Ordering::AcqRel);
            if i >= self.n {
                return;
            }
            // Counts the task as finished when it ends, unwinding included (the caller's
            // `close` waits for every claimed task).
            let _done = Done(&self.finished);
            // SAFETY: i < n was claimed, so the caller is still waiting for it.
            let call = || unsafe { (*self.f)(i) };
            if helper {
                if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
                    *self.panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                }
            } else {
                call();
            }
        }
    }

    /// Stops further claims and waits for the claimed tasks still running elsewhere.
    fn close(&self) {
        let claimed = self.next.swap(usize::MAX / 2, Ordering::AcqRel).min(self.n);
        let mut spins = 0u32;
        while self.finished.load(Ordering::Acquire) < claimed {
            spins += 1;
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

struct Done<'a>(&'a AtomicUsize);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

struct Pool {
    helpers: usize,
    /// The current loop, if any.
    job: Mutex<Option<Arc<Job>>>,
    /// Bumped for every new loop.
    epoch: AtomicU64,
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    /// One loop at a time.
    call: Mutex<()>,
}

thread_local! {
    /// Inside a loop (as caller or helper): nested loops run inline.
    static IN_LOOP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

static POOL: OnceLock<&'static Pool> = OnceLock::new();
static SPAWNED: AtomicBool = AtomicBool::new(false);

/// Threads the kernels use, the caller included: `CIFAR_SWEEP_THREADS`, else
/// `RAYON_NUM_THREADS`, else the number of physical cores (candle's rule).
pub(crate) fn threads() -> usize {
    pool().helpers + 1
}

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let env = std::env::var("CIFAR_SWEEP_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&v| v > 0);
        let n = env.unwrap_or_else(|| candle_core::utils::get_num_threads().max(1));
        Box::leak(Box::new(Pool {
            helpers: n - 1,
            job: Mutex::new(None),
            epoch: AtomicU64::new(0),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            call: Mutex::new(()),
        }))
    })
}

fn spawn_helpers(p: &'static Pool) {
    if SPAWNED.swap(true, Ordering::AcqRel) {
        return;
    }
    for i in 0..p.helpers {
        std::thread::Builder::new()
            .name(format!("cifar-kernels-{i}"))
            .spawn(move || helper(p))
            .expect("failed to spawn a kernel thread");
    }
}

fn helper(p: &'static Pool) {
    IN_LOOP.with(|f| f.set(true));
    let mut seen = 0u64;
    loop {
        // Wait for a new loop: spin, then sleep.
        let t = Instant::now();
        let mut spins = 0u32;
        loop {
            let e = p.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            spins += 1;
            if spins.is_multiple_of(64) && t.elapsed() > SPIN {
                let mut g = p.sleep.lock().unwrap_or_else(|e| e.into_inner());
                p.sleepers.fetch_add(1, Ordering::SeqCst);
                while p.epoch.load(Ordering::SeqCst) == seen {
                    g = p.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                p.sleepers.fetch_sub(1, Ordering::SeqCst);
                drop(g);
                seen = p.epoch.load(Ordering::Acquire);
                break;
            }
            std::hint::spin_loop();
        }
        let job = p.job.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(job) = job {
            job.work(true);
        }
    }
}

/// Calls `f(i)` for every `i in 0..n`, on the calling thread and the helpers.
pub(crate) fn run(n: usize, f: &(dyn Fn(usize) + Sync)) {
    let p = pool();
    if n <= 1 || p.helpers == 0 || IN_LOOP.with(|c| c.get()) {
        (0..n).for_each(f);
        return;
    }
    spawn_helpers(p);
    let _one = p.call.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY (lifetime): see `Job`; the pointer is not used after this function returns.
    let f_static: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
    let job = Arc::new(Job {
        f: f_static,
        n,
        next: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        panic: Mutex::new(None),
    });
    *p.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job.clone());
    p.epoch.fetch_add(1, Ordering::SeqCst);
    if p.sleepers.load(Ordering::SeqCst) > 0 {
        let _g = p.sleep.lock().unwrap_or_else(|e| e.into_inner());
        p.wake.notify_all();
    }
    {
        // Also on unwinding: no new claims, wait for running tasks, unpublish, reset the flag.
        let _done = Finish { job: &job, pool: p };
        IN_LOOP.with(|c| c.set(true));
        job.work(false);
    }
    let panic = job.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(e) = panic {
        std::panic::resume_unwind(e);
    }
}

struct Finish<'a> {
    job: &'a Job,
    pool: &'static Pool,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        IN_LOOP.with(|c| c.set(false));
        *self.pool.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.job.close();
    }
}
