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
    // k = 2 writes every element (zeros included); other sizes only the maxima.
    let mut dx = if k == 2 {
        alloc_uninit(planes * h * w)
    } else {
        alloc_zeroed(planes * h * w)
    };
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
            if k == 2 {
                backward_plane_2x2(xp, yo, go, dxo, h, w);
                continue;
            }
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

/// One plane of the 2x2 backward pass, writing every element of `dx` (zeros in a trailing
/// odd row or column).
fn backward_plane_2x2(x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32], h: usize, w: usize) {
    let (oh, ow) = (h / 2, w / 2);
    for oy in 0..oh {
        let (top, bottom) = dx[2 * oy * w..(2 * oy + 2) * w].split_at_mut(w);
        let x0 = &x[2 * oy * w..(2 * oy + 1) * w];
        let x1 = &x[(2 * oy + 1) * w..(2 * oy + 2) * w];
        let ym = &y[oy * ow..(oy + 1) * ow];
        let g = &dy[oy * ow..(oy + 1) * ow];
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if super::direct::available() {
            // SAFETY: AVX-512F is available; the rows have the lengths used.
            done = unsafe { backward_rows_2x2_avx512(x0, x1, ym, g, top, bottom, ow) };
        }
        for ox in done..ow {
            let (m, gv) = (ym[ox], g[ox]);
            let (a, b) = (x0[2 * ox], x0[2 * ox + 1]);
            let (c, d) = (x1[2 * ox], x1[2 * ox + 1]);
            // The first maximum in row-major order takes the gradient.
            let ta = a == m;
            let tb = !ta && b == m;
            let tc = !ta && !tb && c == m;
            let td = !ta && !tb && !tc && d == m;
            top[2 * ox] = if ta { gv } else { 0.0 };
            top[2 * ox + 1] = if tb { gv } else { 0.0 };
            bottom[2 * ox] = if tc { gv } else { 0.0 };
            bottom[2 * ox + 1] = if td { gv } else { 0.0 };
        }
        if w % 2 == 1 {
            top[w - 1] = 0.0;
            bottom[w - 1] = 0.0;
        }
    }
    if h % 2 == 1 {
        dx[(h - 1) * w..].fill(0.0);
    }
}

/// 16 windows at a time (the last group masked): de-interleaves even and odd columns of both
/// rows, compares with the maxima and re-interleaves the masked gradients. Returns how many
/// windows it did (all of them).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn backward_rows_2x2_avx512(
    x0: &[f32],
    x1: &[f32],
    ym: &[f32],
    g: &[f32],
    top: &mut [f32],
    bottom: &mut [f32],
    ow: usize,
) -> usize {
    use std::arch::x86_64::*;
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let mut ox = 0;
    while ox < ow {
        // Windows ox..ox + n: input columns 2 * ox .. 2 * (ox + n), in two halves of 16.
        let n = (ow - ox).min(16);
        let mw = if n == 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as u16
        };
        let m_lo = if n >= 8 {
            0xffff
        } else {
            ((1u32 << (2 * n)) - 1) as u16
        };
        let m_hi = if n > 8 {
            ((1u64 << (2 * n - 16)) - 1) as u16
        } else {
            0
        };
        let (p0, p1) = (x0.as_ptr().add(2 * ox), x1.as_ptr().add(2 * ox));
        let (r0a, r0b) = (
            _mm512_maskz_loadu_ps(m_lo, p0),
            _mm512_maskz_loadu_ps(m_hi, p0.add(16)),
        );
        let (r1a, r1b) = (
            _mm512_maskz_loadu_ps(m_lo, p1),
            _mm512_maskz_loadu_ps(m_hi, p1.add(16)),
        );
        let a = _mm512_permutex2var_ps(r0a, even, r0b);
        let b = _mm512_permutex2var_ps(r0a, odd, r0b);
        let c = _mm512_permutex2var_ps(r1a, even, r1b);
        let d = _mm512_permutex2var_ps(r1a, odd, r1b);
        let m = _mm512_maskz_loadu_ps(mw, ym.as_ptr().add(ox));
        let gv = _mm512_maskz_loadu_ps(mw, g.as_ptr().add(ox));
        let ta = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, m);
        let tb = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(b, m) & !ta;
        let tc = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(c, m) & !(ta | tb);
        let td = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(d, m) & !(ta | tb | tc);
        let (ga, gb) = (_mm512_maskz_mov_ps(ta, gv), _mm512_maskz_mov_ps(tb, gv));
        let (gc, gd) = (_mm512_maskz_mov_ps(tc, gv), _mm512_maskz_mov_ps(td, gv));
        let (t, bt) = (
            top.as_mut_ptr().add(2 * ox),
            bottom.as_mut_ptr().add(2 * ox),
        );
        _mm512_mask_storeu_ps(t, m_lo, _mm512_permutex2var_ps(ga, lo, gb));
        _mm512_mask_storeu_ps(t.add(16), m_hi, _mm512_permutex2var_ps(ga, hi, gb));
        _mm512_mask_storeu_ps(bt, m_lo, _mm512_permutex2var_ps(gc, lo, gd));
        _mm512_mask_storeu_ps(bt.add(16), m_hi, _mm512_permutex2var_ps(gc, hi, gd));
        ox += n;
    }
    ox
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
