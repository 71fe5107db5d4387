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
/// rayon worker stealing another kernel task while inside `f`) just allocates a fresh one.
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

/// Number of worker threads the kernels split work over.
pub(crate) fn num_threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// Calls `f(i)` for `i in 0..n`, spread over the rayon pool in `n` tasks (serially when there
/// is one thread or one task).
pub(crate) fn par_for(n: usize, f: impl Fn(usize) + Sync + Send) {
    if n <= 1 || num_threads() == 1 {
        (0..n).for_each(f);
    } else {
        use rayon::prelude::*;
        (0..n).into_par_iter().for_each(f);
    }
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

/// `dst[m, n] (row-major, leading dimension ldd) (+)= a[m, k] @ b[k, n]`.
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
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
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
        par,
    );
}
