//! Fully connected layer `y = x @ w^T + b` (x `[N, I]`, w `[O, I]`) as one custom op: the bias
//! is folded into the GEMM and the backward pass is three GEMM-shaped loops instead of
//! candle's chain of transposes, matmuls and broadcast reductions.

use super::eltwise::relu_backward;
use super::util::{
    alloc_uninit, cpu_slice, num_threads, par_for, par_sgemm, prof, split_range, tensor_from,
    with_data, with_scratch, Mat, SyncPtr,
};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

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
    if n >= 8 && i * o >= WT_MIN {
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
        let masked;
        let grad = if self.relu {
            let v = with_data(res, |y| with_data(grad, |dy| Ok(relu_backward(y, dy))))?;
            masked = tensor_from(v, res.dims())?;
            &masked
        } else {
            grad
        };
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

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "fast-linear"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd((s1, l1), (s2, l2), None)
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = LinearOp::bwd(self, x, w, None, res, grad)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "fast-linear-bias"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd((s1, l1), (s2, l2), Some((s3, l3)))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        LinearOp::bwd(self, x, w, Some(b), res, grad)
    }
}
