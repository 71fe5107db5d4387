//! Shared plumbing for the CPU kernels: access to f32 storage, per-thread scratch memory,
//! a row-major wrapper around the `gemm` crate and a small parallel-for helper.

use candle_core::{bail, CpuStorage, Layout, Result, Storage, Tensor};
use std::cell::RefCell;

/// The contiguous f32 slice behind a CPU storage/layout pair.
pub(crate) fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let v = match s {
        CpuStorage::F32(v) => v,
        _ => bail!(
            "{what}: fast CPU kernels only take f32, got {:?}",
            candle_core::backend::BackendStorage::dtype(s)
        ),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{what}: fast CPU kernels need contiguous inputs"),
    }
}

/// Runs `f` on the contiguous f32 data of a CPU tensor (making it contiguous first if needed).
pub(crate) fn with_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(cs) => f(cpu_slice(cs, l, "kernel input")?),
        _ => bail!("fast CPU kernels called with a non-CPU tensor"),
    }
}

/// Once per process, before the first fast kernel: keeps glibc from returning freed memory
/// to the kernel after every step. Training allocates and frees the same large activation and
/// gradient buffers every step; by default glibc serves those above 128 KiB (its threshold
/// adapts up to 32 MiB) with fresh `mmap`s, or trims the heap after freeing, so each step
/// page-faults its whole working set back in (about 8% of a vgg6 step). With the mmap
/// threshold at its 32 MiB maximum and a 1 GiB trim threshold, freed blocks are reused. The
/// peak RSS is unchanged: the process keeps what it peaked at. Opt out with
/// `CIFAR_SWEEP_MALLOC_TUNE=0`.
pub(crate) fn tune_allocator_once() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        if std::env::var("CIFAR_SWEEP_MALLOC_TUNE").is_ok_and(|v| v.trim() == "0") {
            return;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only adjusts allocator parameters.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
    });
}

/// Lanes of the vectorisable reductions below: independent partial sums (float addition is
/// not associative, so the compiler only vectorises a reduction written this way).
const LANES: usize = 16;

/// `sum(x)`, vectorised (16 partial sums).
pub(crate) fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// `(sum(x), sum(x * x))`, vectorised.
pub(crate) fn sum_and_squares(x: &[f32]) -> (f32, f32) {
    let (mut s, mut q) = ([0f32; LANES], [0f32; LANES]);
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for ((a, b), v) in s.iter_mut().zip(q.iter_mut()).zip(c) {
            *a += v;
            *b += v * v;
        }
    }
    let (ts, tq) = tail
        .iter()
        .fold((0f32, 0f32), |(a, b), v| (a + v, b + v * v));
    (s.iter().sum::<f32>() + ts, q.iter().sum::<f32>() + tq)
}

/// `(sum(g), sum(g * (x - mu)))`, vectorised.
pub(crate) fn sum_and_centered_dot(g: &[f32], x: &[f32], mu: f32) -> (f32, f32) {
    let (mut s, mut d) = ([0f32; LANES], [0f32; LANES]);
    let (gc, xc) = (g.chunks_exact(LANES), x.chunks_exact(LANES));
    let (gt, xt) = (gc.remainder(), xc.remainder());
    for (gv, xv) in gc.zip(xc) {
        for i in 0..LANES {
            s[i] += gv[i];
            d[i] += gv[i] * (xv[i] - mu);
        }
    }
    let (ts, td) = gt
        .iter()
        .zip(xt)
        .fold((0f32, 0f32), |(a, b), (g, x)| (a + g, b + g * (x - mu)));
    (s.iter().sum::<f32>() + ts, d.iter().sum::<f32>() + td)
}

/// A new CPU tensor owning `v`.
pub(crate) fn tensor_from(v: Vec<f32>, dims: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(v, dims, &candle_core::Device::Cpu)
}

/// An uninitialised-looking but zeroed buffer. `vec![0.0; n]` uses `calloc`, which hands out
/// fresh zero pages lazily; callers that overwrite everything anyway use [`alloc_uninit`].
pub(crate) fn alloc_zeroed(n: usize) -> Vec<f32> {
    vec![0.0; n]
}

/// A buffer whose every element the caller overwrites before reading.
pub(crate) fn alloc_uninit(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: f32 has no invalid bit patterns; every caller writes each element before any
    // read (documented at each call site).
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(n)
    };
    v
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a per-thread scratch buffer of at least `len` f32s (contents unspecified).
/// The buffer is taken out of the thread-local slot for the duration, so re-entrant use (a
/// thread picking up another kernel task while inside `f`) just allocates a fresh one.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if buf.len() < len {
        buf = alloc_uninit(len);
    }
    let r = f(&mut buf[..len]);
    SCRATCH.with(|s| {
        let mut slot = s.borrow_mut();
        if slot.len() < buf.len() {
            *slot = buf;
        }
    });
    r
}

/// Whether the kernels run on candle's CPU pool (the default) rather than their own
/// claim-based one (`CIFAR_SWEEP_POOL=own`, see [`super::pool_threads`]).
///
/// Measured on the 2-core machine: sharing candle's pool is faster when the machine is quiet,
/// because a second pool's spinning helper competes with candle's spinning worker for the two
/// cores (cnn3 b64: about 5,000 vs 3,400 images/s). On a machine busy with other processes
/// candle's barrier stalls whenever its worker is descheduled (lenet b20 at load 4: 4,400 vs
/// 7,700 images/s with the own pool and `CANDLE_NUM_THREADS=1`).
fn candle_pool() -> bool {
    static C: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *C.get_or_init(|| std::env::var("CIFAR_SWEEP_POOL").map_or(true, |v| v.trim() != "own"))
}

/// Number of threads the kernels split work over: candle's pool (`CANDLE_NUM_THREADS`, else
/// `RAYON_NUM_THREADS`, else the physical cores), or the own pool's (see
/// [`super::pool_threads::threads`]).
pub(crate) fn num_threads() -> usize {
    if candle_pool() {
        return candle_core::utils::barrier_pool().n_workers() + 1;
    }
    super::pool_threads::threads()
}

/// Calls `f(i)` for `i in 0..n` on the kernels' thread pool, the calling thread included
/// (serially when there is one thread or one task, and when nested in another call).
pub(crate) fn par_for(n: usize, f: impl Fn(usize) + Sync) {
    if candle_pool() {
        par_for_candle(n, &f);
    } else {
        super::pool_threads::run(n, &f);
    }
}

thread_local! {
    /// This thread is inside a [`par_for_candle`] call.
    static IN_CANDLE_LOOP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// [`par_for`] on candle's barrier pool. Nested calls run inline (the pool's own workers do
/// that, but a nested call on the caller would deadlock on the pool's lock), and a panicking
/// task is caught and re-raised after the loop (a panic inside the pool would poison its
/// lock for the rest of the process).
pub(crate) fn par_for_candle(n: usize, f: &(dyn Fn(usize) + Sync)) {
    let pool = candle_core::utils::barrier_pool();
    if n <= 1 || pool.n_workers() == 0 || IN_CANDLE_LOOP.with(|c| c.get()) {
        (0..n).for_each(f);
        return;
    }
    let panic: std::sync::Mutex<Option<Box<dyn std::any::Any + Send>>> = Default::default();
    IN_CANDLE_LOOP.with(|c| c.set(true));
    pool.execute_chunked(n, |r| {
        for i in r {
            if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(i))) {
                panic
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(e);
            }
        }
    });
    IN_CANDLE_LOOP.with(|c| c.set(false));
    if let Some(e) = panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        std::panic::resume_unwind(e);
    }
}

/// Runs `f(i)` for `i in 0..n` in parallel (see [`par_for`]) and collects the results in
/// order.
pub(crate) fn par_map<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let slots: Vec<std::sync::Mutex<Option<T>>> = (0..n).map(|_| Default::default()).collect();
    par_for(n, |i| {
        let v = f(i);
        *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
    });
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("par_map: task did not run")
        })
        .collect()
}

/// Splits `0..n` into `parts` contiguous ranges of near-equal length.
pub(crate) fn split_range(n: usize, parts: usize, i: usize) -> std::ops::Range<usize> {
    let base = n / parts;
    let rem = n % parts;
    let start = i * base + i.min(rem);
    let len = base + usize::from(i < rem);
    start..start + len
}

/// A raw pointer that may be shared between threads; every user writes disjoint ranges.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub *mut f32);
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    pub(crate) fn get(&self) -> *mut f32 {
        self.0
    }

    /// # Safety
    /// `off..off + len` must be in bounds and not accessed by anyone else meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, off: usize, len: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(off), len)
    }
}

/// A strided, read-only matrix operand: element (i, j) is at `ptr[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

impl Mat {
    /// Row-major matrix with leading dimension `ld`.
    pub(crate) fn rm(s: &[f32], ld: usize) -> Self {
        Self {
            ptr: s.as_ptr(),
            rs: ld as isize,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with leading dimension `ld`.
    pub(crate) fn rm_t(s: &[f32], ld: usize) -> Self {
        Self {
            ptr: s.as_ptr(),
            rs: 1,
            cs: ld as isize,
        }
    }
}

/// `dst[m, n] (row-major, leading dimension ldd) (+)= a[m, k] @ b[k, n]` on this thread.
///
/// # Safety
/// `a` and `b` must address `m x k` and `k x n` valid elements with their strides, and `dst`
/// must hold `m` rows of `ldd >= n` elements.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    ldd: usize,
    accumulate: bool,
    a: Mat,
    b: Mat,
) {
    if m == 0 || n == 0 {
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        ldd as isize,
        accumulate,
        a.ptr,
        a.cs,
        a.rs,
        b.ptr,
        b.cs,
        b.rs,
        1.0f32,
        1.0f32,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// Below this many multiply-adds a GEMM runs on one thread.
const PAR_GEMM_MIN: usize = 1 << 18;

/// [`sgemm`] split over the thread pool along the longer side of `dst` (in blocks of at least
/// 16 rows or columns). Must not be called from inside [`par_for`].
///
/// # Safety
/// As for [`sgemm`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn par_sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    ldd: usize,
    accumulate: bool,
    a: Mat,
    b: Mat,
) {
    let nt = num_threads();
    let long = m.max(n);
    let parts = nt.min(long / 16).max(1);
    if parts == 1 || m * n * k < PAR_GEMM_MIN {
        return sgemm(m, n, k, dst, ldd, accumulate, a, b);
    }
    let d = SyncPtr(dst);
    let (a, b) = (SendMat(a), SendMat(b));
    par_for(parts, |t| {
        let r = split_range(long, parts, t);
        // Through methods, so the closure captures the Sync wrappers, not their fields.
        let (a, b, d) = (a.get(), b.get(), d.get());
        if m >= n {
            let a = Mat {
                ptr: a.ptr.offset(r.start as isize * a.rs),
                ..a
            };
            sgemm(r.len(), n, k, d.add(r.start * ldd), ldd, accumulate, a, b);
        } else {
            let b = Mat {
                ptr: b.ptr.offset(r.start as isize * b.cs),
                ..b
            };
            sgemm(m, r.len(), k, d.add(r.start), ldd, accumulate, a, b);
        }
    });
}

#[derive(Clone, Copy)]
struct SendMat(Mat);
unsafe impl Send for SendMat {}
unsafe impl Sync for SendMat {}

impl SendMat {
    fn get(&self) -> Mat {
        self.0
    }
}

/// Optional per-kernel accounting of wall-clock and calling-thread CPU time (off by default;
/// see [`super::profile`]).
pub(crate) mod prof {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    pub(crate) static ON: AtomicBool = AtomicBool::new(false);
    /// (name, wall seconds, CPU seconds of the calling thread, calls).
    pub(crate) static STATS: Mutex<Vec<(&'static str, f64, f64, u64)>> = Mutex::new(Vec::new());

    /// CPU time of the calling thread, in seconds.
    pub(crate) fn thread_cpu() -> f64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the struct we own.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    }

    /// Records the time until it is dropped under `name`, when profiling is on.
    pub(crate) struct Span(Option<(&'static str, Instant, f64)>);

    pub(crate) fn span(name: &'static str) -> Span {
        Span(
            ON.load(Ordering::Relaxed)
                .then(|| (name, Instant::now(), thread_cpu())),
        )
    }

    impl Drop for Span {
        fn drop(&mut self) {
            if let Some((name, t, c)) = self.0 {
                let dt = t.elapsed().as_secs_f64();
                let dc = thread_cpu() - c;
                let mut s = STATS.lock().unwrap_or_else(|e| e.into_inner());
                match s.iter_mut().find(|e| e.0 == name) {
                    Some(e) => {
                        e.1 += dt;
                        e.2 += dc;
                        e.3 += 1;
                    }
                    None => s.push((name, dt, dc, 1)),
                }
            }
        }
    }
}
