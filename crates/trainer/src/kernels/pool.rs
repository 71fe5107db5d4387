//! Non-overlapping k x k max pooling (stride k, floor), NCHW, with its own backward pass.
//!
//! Backward routes each window's gradient to the first position (row-major) holding the
//! window's maximum, as PyTorch does; candle instead splits it between tied maxima. The two
//! agree whenever a window's maximum is unique.

use super::util::{
    alloc_uninit, alloc_zeroed, cpu_slice, par_for, prof, tensor_from, with_data, SyncPtr,
};
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// Planes (images x channels) per parallel task, aiming at ~128K input elements per task;
/// smaller inputs run on the calling thread.
fn planes_per_task(plane: usize) -> usize {
    ((1 << 17) / plane.max(1)).max(1)
}

fn dims(d: &[usize], k: usize) -> Result<(usize, usize, usize, usize, usize)> {
    let &[n, c, h, w] = d else {
        bail!("max_pool2d: expected a 4-d input, got {d:?}");
    };
    if k == 0 || h < k || w < k {
        bail!("max_pool2d: window {k} does not fit {h}x{w}");
    }
    Ok((n * c, h, w, h / k, w / k))
}

pub(crate) fn forward(x: &[f32], planes: usize, h: usize, w: usize, k: usize) -> Vec<f32> {
    let _t = prof::span("max_pool2d forward");
    let (oh, ow) = (h / k, w / k);
    // Every output element is written below.
    let mut y = alloc_uninit(planes * oh * ow);
    let yp = SyncPtr(y.as_mut_ptr());
    let per = planes_per_task(h * w);
    par_for(planes.div_ceil(per), |t| {
        let r = t * per..((t + 1) * per).min(planes);
        // SAFETY: task t owns output planes r.
        let ys = unsafe { yp.slice(r.start * oh * ow, r.len() * oh * ow) };
        for (pl, yo) in r.zip(ys.chunks_exact_mut(oh * ow)) {
            let xp = &x[pl * h * w..(pl + 1) * h * w];
            for oy in 0..oh {
                let yr = &mut yo[oy * ow..(oy + 1) * ow];
                if k == 2 {
                    let r0 = &xp[2 * oy * w..2 * oy * w + 2 * ow];
                    let r1 = &xp[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * ow];
                    for (ox, v) in yr.iter_mut().enumerate() {
                        let a = r0[2 * ox].max(r0[2 * ox + 1]);
                        let b = r1[2 * ox].max(r1[2 * ox + 1]);
                        *v = a.max(b);
                    }
                } else {
                    for (ox, v) in yr.iter_mut().enumerate() {
                        let mut m = f32::NEG_INFINITY;
                        for i in 0..k {
                            let row = &xp[(oy * k + i) * w + ox * k..(oy * k + i) * w + ox * k + k];
                            for &e in row {
                                m = m.max(e);
                            }
                        }
                        *v = m;
                    }
                }
            }
        }
    });
    y
}

pub(crate) fn backward(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    k: usize,
) -> Vec<f32> {
    let _t = prof::span("max_pool2d backward");
    let (oh, ow) = (h / k, w / k);
    let mut dx = alloc_zeroed(planes * h * w);
    let dxp = SyncPtr(dx.as_mut_ptr());
    let per = planes_per_task(h * w);
    par_for(planes.div_ceil(per), |t| {
        let r = t * per..((t + 1) * per).min(planes);
        // SAFETY: task t owns gradient planes r.
        let dxs = unsafe { dxp.slice(r.start * h * w, r.len() * h * w) };
        for (pl, dxo) in r.zip(dxs.chunks_exact_mut(h * w)) {
            let xp = &x[pl * h * w..(pl + 1) * h * w];
            let yo = &y[pl * oh * ow..(pl + 1) * oh * ow];
            let go = &dy[pl * oh * ow..(pl + 1) * oh * ow];
            for oy in 0..oh {
                for ox in 0..ow {
                    let m = yo[oy * ow + ox];
                    'win: for i in 0..k {
                        let base = (oy * k + i) * w + ox * k;
                        for j in 0..k {
                            if xp[base + j] == m {
                                dxo[base + j] = go[oy * ow + ox];
                                break 'win;
                            }
                        }
                    }
                }
            }
        }
    });
    dx
}

pub(crate) struct MaxPool2dOp {
    pub k: usize,
}

impl CustomOp1 for MaxPool2dOp {
    fn name(&self) -> &'static str {
        "fast-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (planes, h, w, oh, ow) = dims(l.dims(), self.k)?;
        let x = cpu_slice(s, l, "max_pool2d input")?;
        let y = forward(x, planes, h, w, self.k);
        let d = l.dims();
        Ok((CpuStorage::F32(y), Shape::from((d[0], d[1], oh, ow))))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if !arg.track_op() {
            return Ok(None);
        }
        let (planes, h, w, _, _) = dims(arg.dims(), self.k)?;
        let dx = with_data(arg, |x| {
            with_data(res, |y| {
                with_data(grad, |dy| Ok(backward(x, y, dy, planes, h, w, self.k)))
            })
        })?;
        Ok(Some(tensor_from(dx, arg.dims())?))
    }
}
