//! 2-D convolution (NCHW, square padding/stride, no dilation or groups) as a candle custom op
//! with its own backward pass: im2col + GEMM for the forward pass and the weight gradient,
//! GEMM + col2im for the input gradient. Work is split over images; the weight gradient
//! groups several small images into one GEMM so the reduction dimension stays long.

use super::direct;
use super::eltwise::relu_masked_grad;
use super::util::{
    alloc_uninit, alloc_zeroed, cpu_slice, num_threads, par_for, par_map, par_sgemm, prof, sgemm,
    split_range, sum, tensor_from, with_data, with_scratch, Mat, SyncPtr,
};
#[cfg(target_arch = "x86_64")]
use super::winograd;
use candle_core::{bail, CpuStorage, Layout, Result, Shape, Tensor};

/// Geometry of one convolution.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvParams {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub pad: usize,
    pub stride: usize,
    pub oh: usize,
    pub ow: usize,
    pub algo: Algo,
}

impl ConvParams {
    pub(crate) fn new(x: &[usize], wt: &[usize], pad: usize, stride: usize) -> Result<Self> {
        let (&[n, c, h, w], &[o, c2, kh, kw]) = (x, wt) else {
            bail!("conv2d: expected 4-d input and kernel, got {x:?} and {wt:?}");
        };
        if c != c2 {
            bail!("conv2d: input has {c} channels, kernel expects {c2}");
        }
        if stride == 0 || h + 2 * pad < kh || w + 2 * pad < kw {
            bail!("conv2d: kernel {kh}x{kw} (pad {pad}, stride {stride}) does not fit {h}x{w}");
        }
        let oh = (h + 2 * pad - kh) / stride + 1;
        let ow = (w + 2 * pad - kw) / stride + 1;
        Ok(Self {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            pad,
            stride,
            oh,
            ow,
            algo: Algo::Auto,
        })
    }
    /// Output pixels per image.
    fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// GEMM reduction length of the forward pass (patch size).
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
    fn in_img(&self) -> usize {
        self.c * self.h * self.w
    }
    fn out_img(&self) -> usize {
        self.o * self.p()
    }
    /// A 1x1, stride 1, unpadded convolution: the image itself is the im2col matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
    /// Range of output columns `ox` whose input column `ox * stride + kj - pad` is inside the
    /// image.
    fn valid_cols(&self, kj: usize) -> (usize, usize) {
        let s = self.stride;
        let lo = if self.pad > kj {
            (self.pad - kj).div_ceil(s)
        } else {
            0
        };
        let hi = if self.w + self.pad > kj {
            ((self.w - 1 + self.pad - kj) / s + 1).min(self.ow)
        } else {
            0
        };
        (lo.min(hi), hi)
    }
}

/// Writes the patches of one image as rows of `col`: row `(ci, ki, kj)` holds
/// `x[ci, oy * s + ki - pad, ox * s + kj - pad]` for every output pixel (zero outside), at
/// `col[row * ld .. row * ld + oh * ow]`.
fn im2col(x: &[f32], p: &ConvParams, col: &mut [f32], ld: usize) {
    let _t = prof::span("  im2col (in conv)");
    let (h, w, ow, s) = (p.h, p.w, p.ow, p.stride);
    let np = p.p();
    for ci in 0..p.c {
        let xc = &x[ci * h * w..(ci + 1) * h * w];
        for ki in 0..p.kh {
            for kj in 0..p.kw {
                let row = (ci * p.kh + ki) * p.kw + kj;
                let dst = &mut col[row * ld..row * ld + np];
                let (lo, hi) = p.valid_cols(kj);
                for oy in 0..p.oh {
                    let d = &mut dst[oy * ow..(oy + 1) * ow];
                    let iy = (oy * s + ki) as isize - p.pad as isize;
                    if iy < 0 || iy >= h as isize || lo == hi {
                        d.fill(0.0);
                        continue;
                    }
                    let xr = &xc[iy as usize * w..(iy as usize + 1) * w];
                    #[cfg(target_arch = "x86_64")]
                    if s == 1 && direct::available() {
                        // SAFETY: AVX-512F is available; input columns lo + kj - pad ..
                        // hi + kj - pad lie inside the row.
                        unsafe {
                            let src = xr.as_ptr().wrapping_offset(kj as isize - p.pad as isize);
                            direct::shifted_row_copy(d, src, lo, hi)
                        };
                        continue;
                    }
                    d[..lo].fill(0.0);
                    d[hi..].fill(0.0);
                    if s == 1 {
                        let ix0 = lo + kj - p.pad;
                        d[lo..hi].copy_from_slice(&xr[ix0..ix0 + hi - lo]);
                    } else {
                        for (ox, v) in d[lo..hi].iter_mut().enumerate() {
                            *v = xr[(lo + ox) * s + kj - p.pad];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: accumulates the rows of `col` (leading dimension `oh * ow`)
/// into the image gradient `dx`.
fn col2im(col: &[f32], p: &ConvParams, dx: &mut [f32]) {
    let _t = prof::span("  col2im (in conv)");
    let (h, w, ow, s) = (p.h, p.w, p.ow, p.stride);
    let np = p.p();
    for ci in 0..p.c {
        let xc = &mut dx[ci * h * w..(ci + 1) * h * w];
        for ki in 0..p.kh {
            for kj in 0..p.kw {
                let row = (ci * p.kh + ki) * p.kw + kj;
                let src = &col[row * np..(row + 1) * np];
                let (lo, hi) = p.valid_cols(kj);
                if lo == hi {
                    continue;
                }
                for oy in 0..p.oh {
                    let iy = (oy * s + ki) as isize - p.pad as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let d = &src[oy * ow..(oy + 1) * ow];
                    let xr = &mut xc[iy as usize * w..(iy as usize + 1) * w];
                    #[cfg(target_arch = "x86_64")]
                    if s == 1 && direct::available() {
                        // SAFETY: AVX-512F is available; input columns lo + kj - pad ..
                        // hi + kj - pad lie inside the row.
                        unsafe {
                            let dst = xr
                                .as_mut_ptr()
                                .wrapping_offset(kj as isize - p.pad as isize);
                            direct::shifted_row_add(d, dst, lo, hi)
                        };
                        continue;
                    }
                    if s == 1 {
                        let ix0 = lo + kj - p.pad;
                        for (a, b) in xr[ix0..ix0 + hi - lo].iter_mut().zip(&d[lo..hi]) {
                            *a += *b;
                        }
                    } else {
                        for (ox, v) in d[lo..hi].iter().enumerate() {
                            xr[(lo + ox) * s + kj - p.pad] += *v;
                        }
                    }
                }
            }
        }
    }
}

/// Whether to split the images over the threads (else each GEMM is split instead).
fn images_in_parallel(n: usize) -> bool {
    let nt = num_threads();
    n >= nt && nt > 1
}

/// A GEMM inside a per-image task: on this thread when the images run in parallel, else
/// split over the pool.
///
/// # Safety
/// As for [`sgemm`].
#[allow(clippy::too_many_arguments)]
unsafe fn img_gemm(
    img_par: bool,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    ldd: usize,
    acc: bool,
    a: Mat,
    b: Mat,
) {
    if img_par {
        sgemm(m, n, k, dst, ldd, acc, a, b)
    } else {
        par_sgemm(m, n, k, dst, ldd, acc, a, b)
    }
}

/// `y = conv(x, w) + b`, then `max(y, 0)` with `relu`; all contiguous NCHW / OIHW.
pub(crate) fn forward(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    relu: bool,
    p: &ConvParams,
) -> Vec<f32> {
    let _t = prof::span("conv2d forward");
    if use_winograd(p, Phase::Forward) {
        let u = winograd::transform_kernel(w, p.c, p.o, false);
        return winograd::conv(x, p.n, p.c, p.h, p.w, &u, p.o, b, relu);
    }
    if pairs_apply(p) {
        return pairs_all(x, p.n, p.c, p.h, p.o, w, b, relu);
    }
    if use_direct(p, Phase::Forward) {
        return forward_direct(x, w, b, relu, p);
    }
    let (np, k, o) = (p.p(), p.k(), p.o);
    // Every element is written: either by the bias fill or by the non-accumulating GEMM.
    let mut out = alloc_uninit(p.n * p.out_img());
    let outp = SyncPtr(out.as_mut_ptr());
    let img_par = images_in_parallel(p.n);
    let one = |i: usize| {
        // SAFETY: image i's output block is touched by this call only.
        let y = unsafe { outp.slice(i * p.out_img(), p.out_img()) };
        if let Some(b) = b {
            for (oc, row) in y.chunks_exact_mut(np).enumerate() {
                row.fill(b[oc]);
            }
        }
        let xi = &x[i * p.in_img()..(i + 1) * p.in_img()];
        let acc = b.is_some();
        if p.pointwise() {
            unsafe {
                img_gemm(
                    img_par,
                    o,
                    np,
                    k,
                    y.as_mut_ptr(),
                    np,
                    acc,
                    Mat::rm(w, k),
                    Mat::rm(xi, np),
                )
            };
        } else {
            with_scratch(k * np, |col| {
                im2col(xi, p, col, np);
                unsafe {
                    img_gemm(
                        img_par,
                        o,
                        np,
                        k,
                        y.as_mut_ptr(),
                        np,
                        acc,
                        Mat::rm(w, k),
                        Mat::rm(col, np),
                    )
                };
            });
        }
        if relu {
            // While the image's output is in cache.
            for v in y.iter_mut() {
                *v = v.max(0.0);
            }
        }
    };
    if img_par {
        par_for(p.n, one);
    } else {
        (0..p.n).for_each(one);
    }
    out
}

/// Input gradient: `dx[n] = col2im(w^T @ dy[n])`.
pub(crate) fn backward_input(dy: &[f32], w: &[f32], p: &ConvParams) -> Vec<f32> {
    let _t = prof::span("conv2d input grad");
    if use_winograd(p, Phase::InputGrad) {
        // The input gradient of a 3x3 pad-1 convolution is a 3x3 pad-1 convolution of the
        // output gradient with the kernel rotated and its channel axes swapped.
        let u = winograd::transform_kernel(w, p.o, p.c, true);
        return winograd::conv(dy, p.n, p.o, p.h, p.w, &u, p.c, None, false);
    }
    if pairs_apply(p) || use_direct(p, Phase::InputGrad) {
        return backward_input_direct(dy, w, p);
    }
    let (np, k, o) = (p.p(), p.k(), p.o);
    let pointwise = p.pointwise();
    // col2im accumulates, so start from zeros; the pointwise GEMM overwrites.
    let mut dx = if pointwise {
        alloc_uninit(p.n * p.in_img())
    } else {
        alloc_zeroed(p.n * p.in_img())
    };
    let dxp = SyncPtr(dx.as_mut_ptr());
    let img_par = images_in_parallel(p.n);
    let one = |i: usize| {
        // SAFETY: image i's gradient block is touched by this call only.
        let dxi = unsafe { dxp.slice(i * p.in_img(), p.in_img()) };
        let dyi = &dy[i * p.out_img()..(i + 1) * p.out_img()];
        if pointwise {
            unsafe {
                img_gemm(
                    img_par,
                    k,
                    np,
                    o,
                    dxi.as_mut_ptr(),
                    np,
                    false,
                    Mat::rm_t(w, k),
                    Mat::rm(dyi, np),
                )
            };
        } else {
            with_scratch(k * np, |dcol| {
                unsafe {
                    img_gemm(
                        img_par,
                        k,
                        np,
                        o,
                        dcol.as_mut_ptr(),
                        np,
                        false,
                        Mat::rm_t(w, k),
                        Mat::rm(dyi, np),
                    )
                };
                col2im(dcol, p, dxi);
            });
        }
    };
    if img_par {
        par_for(p.n, one);
    } else {
        (0..p.n).for_each(one);
    }
    dx
}

/// `dst[c * rows + r] = src[r * cols + c]` for a row-major `rows x cols` `src`, in tiles.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const T: usize = 16;
    for r0 in (0..rows).step_by(T) {
        let r1 = (r0 + T).min(rows);
        for c0 in (0..cols).step_by(T) {
            let c1 = (c0 + T).min(cols);
            for r in r0..r1 {
                for c in c0..c1 {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// Columns (images x pixels) per weight-gradient GEMM: small feature maps are grouped so the
/// reduction runs over at least this many columns.
const WGRAD_COLS: usize = 512;

/// Weight (and optionally bias) gradient: `dw = sum_n dy[n] @ im2col(x[n])^T`, `db = sum dy`.
/// Computed as `dw^T = sum_n im2col(x[n]) @ dy[n]^T` (see below) and transposed at the end.
pub(crate) fn backward_weight(
    x: &[f32],
    dy: &[f32],
    p: &ConvParams,
    need_db: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let _t = prof::span("conv2d weight grad");
    if use_winograd(p, Phase::WeightGrad) {
        return winograd::weight_grad(x, dy, p.n, p.c, p.h, p.w, p.o, need_db);
    }
    if use_direct(p, Phase::WeightGrad) {
        return backward_weight_direct(x, dy, p, need_db);
    }
    let (np, k, o) = (p.p(), p.k(), p.o);
    let nt = num_threads().min(p.n).max(1);
    let group = WGRAD_COLS.div_ceil(np).clamp(1, p.n.div_ceil(nt).max(1));
    let part = |t: usize| -> (Vec<f32>, Vec<f32>) {
        let mut dwt = alloc_zeroed(k * o);
        let mut db = if need_db { alloc_zeroed(o) } else { Vec::new() };
        let r = split_range(p.n, nt, t);
        let mut start = r.start;
        while start < r.end {
            let g = group.min(r.end - start);
            let cols = g * np;
            let dy_len = o * cols;
            let col_len = if g == 1 && p.pointwise() { 0 } else { k * cols };
            with_scratch(dy_len + col_len, |buf| {
                let (dyt, col_buf) = buf.split_at_mut(dy_len);
                // dy of the group, transposed: one [g * np, o] matrix.
                for j in 0..g {
                    let src = &dy[(start + j) * p.out_img()..(start + j + 1) * p.out_img()];
                    transpose(src, o, np, &mut dyt[j * np * o..(j + 1) * np * o]);
                    if need_db {
                        for (oc, d) in db.iter_mut().enumerate() {
                            *d += sum(&src[oc * np..(oc + 1) * np]);
                        }
                    }
                }
                let col: &[f32] = if g == 1 && p.pointwise() {
                    &x[start * p.in_img()..(start + 1) * p.in_img()]
                } else {
                    for j in 0..g {
                        let xi = &x[(start + j) * p.in_img()..(start + j + 1) * p.in_img()];
                        im2col(xi, p, &mut col_buf[j * np..], cols);
                    }
                    col_buf
                };
                // dw^T[k, o] += col[k, cols] @ dyt[cols, o]: both operands row-major, the
                // layout the GEMM runs fastest (dw = dy @ col^T directly is 2-3x slower).
                // With one part the pool is free for the GEMM itself.
                unsafe {
                    img_gemm(
                        nt > 1,
                        k,
                        o,
                        cols,
                        dwt.as_mut_ptr(),
                        o,
                        true,
                        Mat::rm(col, cols),
                        Mat::rm(dyt, o),
                    )
                };
            });
            start += g;
        }
        (dwt, db)
    };
    let mut parts: Vec<(Vec<f32>, Vec<f32>)> = par_map(nt, part);
    let (mut dwt, mut db) = parts.swap_remove(0);
    for (pw, pb) in parts {
        dwt.iter_mut().zip(&pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(&pb).for_each(|(a, b)| *a += b);
    }
    // Every element is written by the transpose.
    let mut dw = alloc_uninit(o * k);
    transpose(&dwt, k, o, &mut dw);
    (dw, need_db.then_some(db))
}

/// Which algorithm: `CIFAR_SWEEP_CONV=gemm`, `direct` or `winograd` forces one (for
/// benchmarks and tests); otherwise [`winograd_pays`] and [`direct_pays`] decide. `Direct`
/// and `Winograd` fall back where they cannot run (strides, other kernel sizes, no AVX-512;
/// Winograd also for channel counts that are not multiples of 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Algo {
    Auto,
    Gemm,
    Direct,
    Winograd,
}

static ALGO: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(u8::MAX);

pub(crate) fn algo() -> Algo {
    use std::sync::atomic::Ordering;
    match ALGO.load(Ordering::Relaxed) {
        0 => Algo::Auto,
        1 => Algo::Gemm,
        2 => Algo::Direct,
        3 => Algo::Winograd,
        _ => {
            let a = match std::env::var("CIFAR_SWEEP_CONV").as_deref() {
                Ok("gemm") => Algo::Gemm,
                Ok("direct") => Algo::Direct,
                Ok("winograd") => Algo::Winograd,
                _ => Algo::Auto,
            };
            set_algo(a);
            a
        }
    }
}

pub(crate) fn set_algo(a: Algo) {
    ALGO.store(a as u8, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the direct kernels can run this convolution at all.
fn direct_possible(p: &ConvParams) -> bool {
    direct::available() && p.stride == 1 && p.pad < p.kh && p.pad < p.kw
}

/// The three passes of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Forward,
    InputGrad,
    WeightGrad,
}

/// Where the direct kernels beat im2col + GEMM (measured per layer on Zen 4 with
/// `cifar-bench layers`): the forward and input-gradient kernels vectorise along the row they
/// write, so they need rows of at least 10 (8-wide rows waste half of every register, and the
/// GEMM wins); the weight gradient wins everywhere.
fn direct_pays(p: &ConvParams, phase: Phase) -> bool {
    match phase {
        Phase::Forward => p.ow >= 10,
        Phase::InputGrad => p.w >= 10,
        Phase::WeightGrad => true,
    }
}

fn use_direct(p: &ConvParams, phase: Phase) -> bool {
    direct_possible(p)
        && match p.algo {
            Algo::Auto => direct_pays(p, phase),
            Algo::Gemm => false,
            Algo::Direct | Algo::Winograd => true,
        }
}

/// Where Winograd F(4x4, 3x3) beats the direct kernels (measured per layer on Zen 4 at batch
/// 20 and 64 with `cifar-bench layers --algos direct,winograd`; see BENCHMARKS.md). Its
/// transforms cost the same per tile and channel whatever the other channel count, so the
/// forward pass and the input gradient need 64 or more channels to reduce over (with 32,
/// vgg6's second layer forward, the transforms eat the saving); from 64 up they take
/// 0.50-0.70 of the direct kernels' time. The weight gradient reduces over the tiles of each
/// thread's images: it pays from 32 channels on both sides once a thread has 128 or more
/// tiles (vgg6's 8x8 layers at batch 20 have 40, and break even).
fn winograd_pays(p: &ConvParams, phase: Phase) -> bool {
    match phase {
        Phase::Forward => p.c >= 64,
        Phase::InputGrad => p.o >= 64,
        Phase::WeightGrad => {
            let tiles = p.oh.div_ceil(4) * p.ow.div_ceil(4);
            p.c.min(p.o) >= 32 && p.n / num_threads().max(1) * tiles >= 128
        }
    }
}

fn use_winograd(p: &ConvParams, phase: Phase) -> bool {
    direct::available()
        && winograd::applies(p.c, p.o, p.kh, p.kw, p.pad, p.stride)
        && match p.algo {
            Algo::Auto => winograd_pays(p, phase),
            Algo::Winograd => true,
            Algo::Gemm | Algo::Direct => false,
        }
}

fn direct_geom(p: &ConvParams) -> direct::Geom {
    direct::Geom {
        c: p.c,
        hp: p.h + 2 * p.pad,
        wp: p.w + 2 * p.pad,
        o: p.o,
        kh: p.kh,
        kw: p.kw,
    }
}

/// Runs `f` on image `i`'s input, zero-padded by `p.pad` when needed.
fn with_padded<R>(x: &[f32], p: &ConvParams, f: impl FnOnce(&[f32]) -> R) -> R {
    if p.pad == 0 {
        return f(x);
    }
    let g = direct_geom(p);
    with_scratch(p.c * g.hp * g.wp, |buf| {
        direct::pad_planes(x, p.c, p.h, p.w, p.pad, p.pad, p.pad, p.pad, buf);
        f(buf)
    })
}

fn forward_direct(x: &[f32], w: &[f32], b: Option<&[f32]>, relu: bool, p: &ConvParams) -> Vec<f32> {
    // Every element is written by the kernel.
    let mut out = alloc_uninit(p.n * p.out_img());
    let outp = SyncPtr(out.as_mut_ptr());
    let g = direct_geom(p);
    par_for(p.n, |i| {
        // SAFETY: image i's output block is touched by this task only.
        let y = unsafe { outp.slice(i * p.out_img(), p.out_img()) };
        with_padded(&x[i * p.in_img()..(i + 1) * p.in_img()], p, |xp| unsafe {
            direct::forward(&g, xp, w, b, relu, y)
        });
    });
    out
}

/// The kernel flipped and its channel axes swapped: `wf[ci, o, a, b] =
/// w[o, ci, kh - 1 - a, kw - 1 - b]`.
/// Split over the pool by input channel (a copy: the split does not change the result).
fn flipped_kernel(w: &[f32], p: &ConvParams) -> Vec<f32> {
    let (kh, kw) = (p.kh, p.kw);
    let blk = p.o * kh * kw;
    // Every element is written below.
    let mut wf = alloc_uninit(w.len());
    let wfp = SyncPtr(wf.as_mut_ptr());
    let one = |ci: usize| {
        // SAFETY: input channel ci's block of wf is written by this task only.
        let d = unsafe { wfp.slice(ci * blk, blk) };
        for o in 0..p.o {
            for a in 0..kh {
                for b in 0..kw {
                    d[(o * kh + a) * kw + b] =
                        w[((o * p.c + ci) * kh + kh - 1 - a) * kw + kw - 1 - b];
                }
            }
        }
    };
    if w.len() >= 1 << 15 {
        par_for(p.c, one);
    } else {
        (0..p.c).for_each(one);
    }
    wf
}

/// Whether the row-pair kernel ([`direct::forward_pairs`]) runs this convolution's forward
/// pass and input gradient: 3x3, stride 1, pad 1 on 8-wide maps (where the row-vectorised
/// direct kernel wastes half of every register). Measured on Zen 4 at batch 64 for vgg6's
/// 8x8 layers against im2col + GEMM: see `cifar-bench layers`.
fn pairs_apply(p: &ConvParams) -> bool {
    direct_possible(p)
        && p.algo != Algo::Gemm
        && (p.kh, p.kw, p.pad, p.w) == (3, 3, 1, direct::PAIR_W)
}

/// `x` (`c` planes of `h x 8`) into `buf` with a zero row above and below each plane and
/// zero guards before and after (the layout [`direct::forward_pairs`] reads).
fn pad_rows(x: &[f32], c: usize, h: usize, buf: &mut [f32]) {
    let (g, w) = (direct::PAIR_GUARD, direct::PAIR_W);
    let pl = (h + 2) * w;
    buf[..g].fill(0.0);
    buf[g + c * pl..].fill(0.0);
    for ci in 0..c {
        let o = &mut buf[g + ci * pl..g + (ci + 1) * pl];
        o[..w].fill(0.0);
        o[w..(h + 1) * w].copy_from_slice(&x[ci * h * w..(ci + 1) * h * w]);
        o[(h + 1) * w..].fill(0.0);
    }
}

/// [`direct::forward_pairs`] over the images of `x` (`[n, c, h, 8]`), in parallel.
#[allow(clippy::too_many_arguments)]
fn pairs_all(
    x: &[f32],
    n: usize,
    c: usize,
    h: usize,
    o: usize,
    w: &[f32],
    b: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let (in_img, out_img) = (c * h * direct::PAIR_W, o * h * direct::PAIR_W);
    // Every element is written by the kernel.
    let mut out = alloc_uninit(n * out_img);
    let outp = SyncPtr(out.as_mut_ptr());
    let len = c * (h + 2) * direct::PAIR_W + 2 * direct::PAIR_GUARD;
    par_for(n, |i| {
        // SAFETY: image i's output block is touched by this task only.
        let y = unsafe { outp.slice(i * out_img, out_img) };
        with_scratch(len, |buf| {
            pad_rows(&x[i * in_img..(i + 1) * in_img], c, h, buf);
            // SAFETY: AVX-512F is available (direct_possible); buf has the guarded layout.
            unsafe {
                let xp = buf.as_ptr().add(direct::PAIR_GUARD);
                direct::forward_pairs(c, h, o, xp, w, b, relu, y)
            }
        });
    });
    out
}

fn backward_input_direct(dy: &[f32], w: &[f32], p: &ConvParams) -> Vec<f32> {
    // The input gradient is the correlation of the output gradient, padded by k - 1 - pad,
    // with the kernel flipped and its channel axes swapped.
    let (kh, kw) = (p.kh, p.kw);
    let wf = flipped_kernel(w, p);
    if pairs_apply(p) {
        // 3x3 pad 1: the same geometry again.
        return pairs_all(dy, p.n, p.o, p.h, p.c, &wf, None, false);
    }
    let (ph, pw) = (kh - 1 - p.pad, kw - 1 - p.pad);
    let g = direct::Geom {
        c: p.o,
        hp: p.oh + 2 * ph,
        wp: p.ow + 2 * pw,
        o: p.c,
        kh,
        kw,
    };
    debug_assert_eq!((g.oh(), g.ow()), (p.h, p.w));
    // Every element is written by the kernel.
    let mut dx = alloc_uninit(p.n * p.in_img());
    let dxp = SyncPtr(dx.as_mut_ptr());
    par_for(p.n, |i| {
        // SAFETY: image i's gradient block is touched by this task only.
        let dxi = unsafe { dxp.slice(i * p.in_img(), p.in_img()) };
        let dyi = &dy[i * p.out_img()..(i + 1) * p.out_img()];
        with_scratch(p.o * g.hp * g.wp, |buf| {
            direct::pad_planes(dyi, p.o, p.oh, p.ow, ph, ph, pw, pw, buf);
            unsafe { direct::forward(&g, buf, &wf, None, false, dxi) };
        });
    });
    dx
}

/// Bytes of padded input and output gradient the weight-gradient kernel streams per group of
/// images: about half the L2 cache.
const DIRECT_WGRAD_BYTES: usize = 1 << 20;

fn backward_weight_direct(
    x: &[f32],
    dy: &[f32],
    p: &ConvParams,
    need_db: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let (np, k, o) = (p.p(), p.k(), p.o);
    let g = direct_geom(p);
    // Wide layers vectorise along output channels (on dy transposed, into dw transposed);
    // narrow ones, and those with few taps (first layers: 3 input channels), along pixels.
    let by_channel = o >= 16 && k >= 64;
    let nt = num_threads().min(p.n).max(1);
    let pl = p.c * g.hp * g.wp;
    let img_bytes = 4 * (pl + p.out_img());
    let group = (DIRECT_WGRAD_BYTES / img_bytes).clamp(1, 64);
    let part = |t: usize| -> (Vec<f32>, Vec<f32>) {
        let mut dw = alloc_zeroed(o * k);
        let mut db = if need_db { alloc_zeroed(o) } else { Vec::new() };
        let r = split_range(p.n, nt, t);
        let mut start = r.start;
        while start < r.end {
            let gn = group.min(r.end - start);
            let dy_img = |i: usize| &dy[i * p.out_img()..(i + 1) * p.out_img()];
            if need_db {
                for i in start..start + gn {
                    let d = dy_img(i);
                    for (oc, s) in db.iter_mut().enumerate() {
                        *s += sum(&d[oc * np..(oc + 1) * np]);
                    }
                }
            }
            let x_len = if p.pad == 0 { 0 } else { gn * pl };
            let dyt_len = if by_channel { gn * p.out_img() } else { 0 };
            with_scratch(x_len + dyt_len, |buf| {
                let (xbuf, dytbuf) = buf.split_at_mut(x_len);
                let xs: Vec<&[f32]> = if p.pad == 0 {
                    (start..start + gn)
                        .map(|i| &x[i * p.in_img()..(i + 1) * p.in_img()])
                        .collect()
                } else {
                    for (j, i) in (start..start + gn).enumerate() {
                        let xi = &x[i * p.in_img()..(i + 1) * p.in_img()];
                        let pd = p.pad;
                        let out = &mut xbuf[j * pl..(j + 1) * pl];
                        direct::pad_planes(xi, p.c, p.h, p.w, pd, pd, pd, pd, out);
                    }
                    xbuf.chunks_exact(pl).collect()
                };
                if by_channel {
                    for (j, i) in (start..start + gn).enumerate() {
                        let out = &mut dytbuf[j * p.out_img()..(j + 1) * p.out_img()];
                        transpose(dy_img(i), o, np, out);
                    }
                    let dyts: Vec<&[f32]> = dytbuf.chunks_exact(p.out_img()).collect();
                    unsafe { direct::weight_grad_t(&g, &xs, &dyts, &mut dw) };
                } else {
                    let dys: Vec<&[f32]> = (start..start + gn).map(dy_img).collect();
                    unsafe { direct::weight_grad(&g, &xs, &dys, &mut dw) };
                }
            });
            start += gn;
        }
        (dw, db)
    };
    let mut parts: Vec<(Vec<f32>, Vec<f32>)> = par_map(nt, part);
    let (mut acc, mut db) = parts.swap_remove(0);
    for (pw, pb) in parts {
        acc.iter_mut().zip(&pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(&pb).for_each(|(a, b)| *a += b);
    }
    let dw = if by_channel {
        // Every element is written by the transpose.
        let mut dw = alloc_uninit(o * k);
        transpose(&acc, k, o, &mut dw);
        dw
    } else {
        acc
    };
    (dw, need_db.then_some(db))
}

/// The custom op: `conv2d(x, w)` (binary) or `conv2d(x, w) + b` (ternary).
/// With `relu`, the op is `max(conv + b, 0)`: the backward pass masks the output gradient
/// with `y > 0` (PyTorch's convention at 0) before the convolution's own.
pub(crate) struct Conv2dOp {
    pub padding: usize,
    pub stride: usize,
    pub algo: Algo,
    pub relu: bool,
}

impl Conv2dOp {
    fn fwd(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let mut p = ConvParams::new(x.1.dims(), w.1.dims(), self.padding, self.stride)?;
        p.algo = self.algo;
        let xs = cpu_slice(x.0, x.1, "conv2d input")?;
        let ws = cpu_slice(w.0, w.1, "conv2d kernel")?;
        let bs = match b {
            Some((s, l)) => {
                if l.dims() != [p.o] {
                    bail!("conv2d: bias shape {:?}, expected [{}]", l.dims(), p.o);
                }
                Some(cpu_slice(s, l, "conv2d bias")?)
            }
            None => None,
        };
        let y = forward(xs, ws, bs, self.relu, &p);
        Ok((CpuStorage::F32(y), Shape::from((p.n, p.o, p.oh, p.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut p = ConvParams::new(x.dims(), w.dims(), self.padding, self.stride)?;
        p.algo = self.algo;
        // Nothing upstream of a plain tensor (such as the input images) wants a gradient.
        let need_dx = x.track_op();
        let need_dw = w.track_op();
        let need_db = b.is_some_and(|b| b.track_op());
        let masked = relu_masked_grad(self.relu, res, grad)?;
        let grad = masked.as_ref().unwrap_or(grad);
        with_data(grad, |dy| {
            let dx = if need_dx {
                let v = with_data(w, |ws| Ok(backward_input(dy, ws, &p)))?;
                Some(tensor_from(v, x.dims())?)
            } else {
                None
            };
            let (dw, db) = if need_dw || need_db {
                let (dw, db) = with_data(x, |xs| Ok(backward_weight(xs, dy, &p, need_db)))?;
                let dw = if need_dw {
                    Some(tensor_from(dw, w.dims())?)
                } else {
                    None
                };
                let db = match db {
                    Some(db) => Some(tensor_from(db, &[p.o])?),
                    None => None,
                };
                (dw, db)
            } else {
                (None, None)
            };
            Ok((dx, dw, db))
        })
    }
}

custom_ops!(Conv2dOp, "fast-conv2d", "fast-conv2d-bias");

/// The Winograd kernels are AVX-512 code: elsewhere [`winograd::applies`] is false, so the
/// callers never reach the rest.
#[cfg(not(target_arch = "x86_64"))]
mod winograd {
    pub(crate) fn applies(_: usize, _: usize, _: usize, _: usize, _: usize, _: usize) -> bool {
        false
    }
    pub(crate) fn transform_kernel(_: &[f32], _: usize, _: usize, _: bool) -> Vec<f32> {
        unreachable!("winograd kernels need x86_64")
    }
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv(
        _: &[f32],
        _: usize,
        _: usize,
        _: usize,
        _: usize,
        _: &[f32],
        _: usize,
        _: Option<&[f32]>,
        _: bool,
    ) -> Vec<f32> {
        unreachable!("winograd kernels need x86_64")
    }
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn weight_grad(
        _: &[f32],
        _: &[f32],
        _: usize,
        _: usize,
        _: usize,
        _: usize,
        _: usize,
        _: bool,
    ) -> (Vec<f32>, Option<Vec<f32>>) {
        unreachable!("winograd kernels need x86_64")
    }
}
