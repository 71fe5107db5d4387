//! Fully connected layer `y = x @ w^T + b` (x `[N, I]`, w `[O, I]`) as one custom op: the bias
//! is folded into the GEMM and the backward pass is three GEMM-shaped loops instead of
//! candle's chain of transposes, matmuls and broadcast reductions.

use super::eltwise::relu_masked_grad;
use super::util::{
    alloc_uninit, cpu_slice, num_threads, par_for, par_sgemm, prof, split_range, tensor_from,
    with_data, with_scratch, Mat, SyncPtr,
};
use candle_core::{bail, CpuStorage, Layout, Result, Shape, Tensor};

fn dims(x: &[usize], w: &[usize]) -> Result<(usize, usize, usize)> {
    let (&[n, i], &[o, i2]) = (x, w) else {
        bail!("linear: expected x [N, I] and w [O, I], got {x:?} and {w:?}");
    };
    if i != i2 {
        bail!("linear: x has {i} features, w expects {i2}");
    }
    Ok((n, i, o))
}

pub(crate) fn forward(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    n: usize,
    i: usize,
    o: usize,
) -> Vec<f32> {
    let _t = prof::span("linear forward");
    // Every element is written: by the bias fill or the non-accumulating GEMM.
    let mut y = alloc_uninit(n * o);
    if let Some(b) = b {
        for row in y.chunks_exact_mut(o) {
            row.copy_from_slice(b);
        }
    }
    if n <= SMALL_N && super::direct::available() {
        // Few rows: stream w once through register-blocked dot products (the GEMM would
        // first transpose or pack all of w for a handful of rows).
        small_forward(x, w, b, n, i, o, &mut y);
    } else if n >= 8 && i * o >= WT_MIN {
        // x @ w^T with w^T read column by column packs slowly (about a third of the GEMM's
        // speed for 4096 x 1024); transposing w first costs one pass over it.
        with_scratch(i * o, |wt| {
            transpose_par(w, o, i, wt);
            unsafe {
                par_sgemm(
                    n,
                    o,
                    i,
                    y.as_mut_ptr(),
                    o,
                    b.is_some(),
                    Mat::rm(x, i),
                    Mat::rm(wt, o),
                )
            };
        });
    } else {
        unsafe {
            par_sgemm(
                n,
                o,
                i,
                y.as_mut_ptr(),
                o,
                b.is_some(),
                Mat::rm(x, i),
                Mat::rm_t(w, i),
            )
        };
    }
    y
}

/// Batches of at most this many rows use [`small_forward`] (faster than transpose + GEMM
/// for vgg6's fc1 at batch 20, 64 and 128: 6.3 -> 2.1, 8.4 -> 4.9, 11.2 -> 8.9 ms per step for
/// the three linear layers, Zen 4, 2 threads).
const SMALL_N: usize = 128;

/// Output features per register block of [`small_forward`], and rows of x.
const SO: usize = 4;
const SR: usize = 6;

/// `y[r, oc] = b[oc] + sum_k x[r, k] w[oc, k]` with AVX-512, split over the thread pool by
/// blocks of output features. Each output is one block's dot product: lane-wise partial sums
/// over the reduction in order, then a fixed reduction tree, so the result does not depend on
/// the split. `y` already holds the bias when `b` is given.
fn small_forward(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    n: usize,
    i: usize,
    o: usize,
    y: &mut [f32],
) {
    let blocks = o.div_ceil(SO);
    let parts = num_threads().min(blocks).max(1);
    let yp = SyncPtr(y.as_mut_ptr());
    let acc = b.is_some();
    let run = |t: usize| {
        let r = split_range(blocks, parts, t);
        for ob in r {
            let o0 = ob * SO;
            let no = SO.min(o - o0);
            let mut r0 = 0;
            while r0 < n {
                let nr = SR.min(n - r0);
                // SAFETY: AVX-512F is available (checked by the caller); the block writes
                // y[r0..r0 + nr, o0..o0 + no], which no other block touches.
                unsafe { small_block_dispatch(x, w, i, o, r0, nr, o0, no, yp.get(), acc) };
                r0 += nr;
            }
        }
    };
    if parts == 1 || n * i * o < PAR_SMALL_MIN {
        (0..parts).for_each(run);
    } else {
        par_for(parts, run);
    }
}

/// Below this many multiply-adds [`small_forward`] stays on the calling thread.
const PAR_SMALL_MIN: usize = 1 << 16;

#[allow(clippy::too_many_arguments)]
unsafe fn small_block_dispatch(
    x: &[f32],
    w: &[f32],
    i: usize,
    o: usize,
    r0: usize,
    nr: usize,
    o0: usize,
    no: usize,
    y: *mut f32,
    acc: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! go {
            ($no:literal, $oc:expr, $($nr:literal),*) => {
                match nr {
                    $($nr => small_block::<$no, $nr>(x, w, i, o, r0, $oc, y, acc),)*
                    _ => unreachable!(),
                }
            };
        }
        if no == SO {
            go!(4, o0, 1, 2, 3, 4, 5, 6)
        } else {
            for oc in o0..o0 + no {
                go!(1, oc, 1, 2, 3, 4, 5, 6)
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("small_forward needs AVX-512");
}

/// One block: `NO` output features (from `o0`) x `NR` rows of x (from `r0`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn small_block<const NO: usize, const NR: usize>(
    x: &[f32],
    w: &[f32],
    i: usize,
    o: usize,
    r0: usize,
    o0: usize,
    y: *mut f32,
    acc: bool,
) {
    use std::arch::x86_64::*;
    debug_assert!(x.len() >= (r0 + NR) * i && w.len() >= (o0 + NO) * i);
    let xp = x.as_ptr().add(r0 * i);
    let wp = w.as_ptr().add(o0 * i);
    let mut s = [[_mm512_setzero_ps(); NR]; NO];
    let full = i / 16 * 16;
    let mut k = 0;
    while k < full {
        let mut xv = [_mm512_setzero_ps(); NR];
        for (r, v) in xv.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(xp.add(r * i + k));
        }
        for (a, sa) in s.iter_mut().enumerate() {
            let wv = _mm512_loadu_ps(wp.add(a * i + k));
            for (r, sr) in sa.iter_mut().enumerate() {
                *sr = _mm512_fmadd_ps(wv, xv[r], *sr);
            }
        }
        k += 16;
    }
    if full < i {
        let m: __mmask16 = (1u32 << (i - full)) as u16 - 1;
        let mut xv = [_mm512_setzero_ps(); NR];
        for (r, v) in xv.iter_mut().enumerate() {
            *v = _mm512_maskz_loadu_ps(m, xp.add(r * i + full));
        }
        for (a, sa) in s.iter_mut().enumerate() {
            let wv = _mm512_maskz_loadu_ps(m, wp.add(a * i + full));
            for (r, sr) in sa.iter_mut().enumerate() {
                *sr = _mm512_fmadd_ps(wv, xv[r], *sr);
            }
        }
    }
    for (a, sa) in s.iter().enumerate() {
        for (r, sr) in sa.iter().enumerate() {
            let d = y.add((r0 + r) * o + o0 + a);
            let v = _mm512_reduce_add_ps(*sr);
            *d = if acc { *d + v } else { v };
        }
    }
}

/// Weights at least this large are transposed before the forward GEMM.
const WT_MIN: usize = 1 << 16;

/// `dst = src^T` for a row-major `rows x cols` `src`, split over the thread pool by rows of
/// `dst`.
fn transpose_par(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const T: usize = 16;
    let d = SyncPtr(dst.as_mut_ptr());
    let blocks = cols.div_ceil(T);
    par_for(blocks.min(num_threads() * 4), |t| {
        let cb = split_range(blocks, blocks.min(num_threads() * 4), t);
        let (c0, c1) = (cb.start * T, (cb.end * T).min(cols));
        // SAFETY: this task writes dst rows c0..c1 only.
        let out = unsafe { d.slice(c0 * rows, (c1 - c0) * rows) };
        for r0 in (0..rows).step_by(T) {
            let r1 = (r0 + T).min(rows);
            for cc in (c0..c1).step_by(T) {
                for c in cc..(cc + T).min(c1) {
                    let o = &mut out[(c - c0) * rows..];
                    for r in r0..r1 {
                        o[r] = src[r * cols + c];
                    }
                }
            }
        }
    });
}

/// With `relu`, the op is `max(x @ w^T + b, 0)` (backward as for the fused convolution).
pub(crate) struct LinearOp {
    pub relu: bool,
}

impl LinearOp {
    fn fwd(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, i, o) = dims(x.1.dims(), w.1.dims())?;
        let bs = match b {
            Some((s, l)) => {
                if l.dims() != [o] {
                    bail!("linear: bias shape {:?}, expected [{o}]", l.dims());
                }
                Some(cpu_slice(s, l, "linear bias")?)
            }
            None => None,
        };
        let mut y = forward(
            cpu_slice(x.0, x.1, "linear input")?,
            cpu_slice(w.0, w.1, "linear weight")?,
            bs,
            n,
            i,
            o,
        );
        if self.relu {
            for v in y.iter_mut() {
                *v = v.max(0.0);
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((n, o))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let _t = prof::span("linear backward");
        let (n, i, o) = dims(x.dims(), w.dims())?;
        let masked = relu_masked_grad(self.relu, res, grad)?;
        let grad = masked.as_ref().unwrap_or(grad);
        with_data(grad, |dy| {
            let dx = if x.track_op() {
                // Overwritten by the GEMM.
                let mut dx = alloc_uninit(n * i);
                with_data(w, |ws| {
                    unsafe {
                        par_sgemm(
                            n,
                            i,
                            o,
                            dx.as_mut_ptr(),
                            i,
                            false,
                            Mat::rm(dy, o),
                            Mat::rm(ws, i),
                        )
                    };
                    Ok(())
                })?;
                Some(tensor_from(dx, &[n, i])?)
            } else {
                None
            };
            let dw = if w.track_op() {
                // Overwritten by the GEMM.
                let mut dw = alloc_uninit(o * i);
                with_data(x, |xs| {
                    unsafe {
                        par_sgemm(
                            o,
                            i,
                            n,
                            dw.as_mut_ptr(),
                            i,
                            false,
                            Mat::rm_t(dy, o),
                            Mat::rm(xs, i),
                        )
                    };
                    Ok(())
                })?;
                Some(tensor_from(dw, &[o, i])?)
            } else {
                None
            };
            let db = match b {
                Some(b) if b.track_op() => {
                    let mut db = vec![0f32; o];
                    for row in dy.chunks_exact(o) {
                        db.iter_mut().zip(row).for_each(|(a, g)| *a += g);
                    }
                    Some(tensor_from(db, &[o])?)
                }
                _ => None,
            };
            Ok((dx, dw, db))
        })
    }
}

custom_ops!(LinearOp, "fast-linear", "fast-linear-bias");
