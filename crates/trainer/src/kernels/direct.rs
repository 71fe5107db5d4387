//! Direct (im2col-free) stride-1 convolution kernels with AVX-512, for the small layers where
//! im2col + GEMM spends more time copying and packing than multiplying (few channels, short
//! reductions). Vectorised along output columns (16 per register, the tail masked):
//!
//! - forward: a block of 6 output channels x 4 output rows accumulates in 24 registers; each
//!   kernel tap loads 4 input rows and broadcasts 6 weights.
//! - input gradient: the same kernel run on the zero-padded output gradient with the kernel
//!   flipped and its channel axes swapped (a "full" correlation).
//! - 8-wide maps, 3x3 pad 1 (forward and input gradient): [`forward_pairs`], two output rows
//!   per register, the input padded vertically only and the horizontal border done by the
//!   load masks.
//! - weight gradient, wide layers (16 or more output channels): an implicit GEMM vectorised
//!   along output channels, on the output gradient transposed to pixel-major `[pixels, o]`:
//!   a block of 6 taps x 64 channels accumulates in 24 registers, each pixel loading 4 vectors
//!   and broadcasting 6 input values.
//! - weight gradient, narrow layers: a block of 4 output channels x up to 6 taps of one kernel
//!   row accumulates inner products over the pixels of a group of images in 24 registers,
//!   reduced once per group; the output gradient is packed so each step loads it with one
//!   pointer.
//!
//! Every function here requires AVX-512F; [`available`] says whether the CPU has it.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// `$go!(A, B)` for the literal pair equal to `($a, $b)`: the register-block shapes, A in
/// 1..=6 and B in 1..=4 (anything else runs as (1, 1)). Const generics need literals, so
/// every kernel dispatches its runtime block size through this one table.
#[cfg(target_arch = "x86_64")]
macro_rules! dispatch_6x4 {
    ($go:ident, $a:expr, $b:expr) => {
        match ($a, $b) {
            (6, 4) => $go!(6, 4),
            (6, 3) => $go!(6, 3),
            (6, 2) => $go!(6, 2),
            (6, 1) => $go!(6, 1),
            (5, 4) => $go!(5, 4),
            (5, 3) => $go!(5, 3),
            (5, 2) => $go!(5, 2),
            (5, 1) => $go!(5, 1),
            (4, 4) => $go!(4, 4),
            (4, 3) => $go!(4, 3),
            (4, 2) => $go!(4, 2),
            (4, 1) => $go!(4, 1),
            (3, 4) => $go!(3, 4),
            (3, 3) => $go!(3, 3),
            (3, 2) => $go!(3, 2),
            (3, 1) => $go!(3, 1),
            (2, 4) => $go!(2, 4),
            (2, 3) => $go!(2, 3),
            (2, 2) => $go!(2, 2),
            (2, 1) => $go!(2, 1),
            (1, 4) => $go!(1, 4),
            (1, 3) => $go!(1, 3),
            (1, 2) => $go!(1, 2),
            _ => $go!(1, 1),
        }
    };
}

/// Whether these kernels can run on this CPU.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX512.get_or_init(|| is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Output channels per register block.
const BO: usize = 6;
/// Output rows per register block of the forward kernel.
const BR: usize = 4;

/// Copies `x` (`c` planes of `h x w`) into `out` (`c` planes of `(h + top + bottom) x
/// (w + left + right)`) with zero borders.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pad_planes(
    x: &[f32],
    c: usize,
    h: usize,
    w: usize,
    top: usize,
    bottom: usize,
    left: usize,
    right: usize,
    out: &mut [f32],
) {
    let (hp, wp) = (h + top + bottom, w + left + right);
    for ci in 0..c {
        let o = &mut out[ci * hp * wp..(ci + 1) * hp * wp];
        o[..top * wp].fill(0.0);
        o[(top + h) * wp..].fill(0.0);
        for y in 0..h {
            let row = &mut o[(top + y) * wp..(top + y + 1) * wp];
            row[..left].fill(0.0);
            row[left..left + w].copy_from_slice(&x[(ci * h + y) * w..(ci * h + y + 1) * w]);
            row[left + w..].fill(0.0);
        }
    }
}

/// Geometry of one direct correlation: input planes `[c, hp, wp]` (already padded), kernel
/// `[o, c, kh, kw]` (row stride `c * kh * kw` between output channels), output `[o, oh, ow]`
/// with `oh = hp - kh + 1`, `ow = wp - kw + 1`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geom {
    pub c: usize,
    pub hp: usize,
    pub wp: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
}

impl Geom {
    pub(crate) fn oh(&self) -> usize {
        self.hp - self.kh + 1
    }
    pub(crate) fn ow(&self) -> usize {
        self.wp - self.kw + 1
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tail_mask(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// `y = correlate(x, w) (+ bias)`, then `max(y, 0)` with `relu`, for one image. `x` is `[c, hp, wp]`, `w` `[o, c, kh, kw]`,
/// `y` `[o, oh, ow]` (fully overwritten).
///
/// # Safety
/// Requires AVX-512F ([`available`]); slices must have the sizes above.
pub(crate) unsafe fn forward(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
) {
    debug_assert!(x.len() >= g.c * g.hp * g.wp);
    debug_assert!(w.len() >= g.o * g.c * g.kh * g.kw);
    debug_assert!(y.len() >= g.o * g.oh() * g.ow());
    #[cfg(target_arch = "x86_64")]
    forward_avx512(
        g,
        x.as_ptr(),
        w.as_ptr(),
        bias.map(|b| b.as_ptr()),
        relu,
        y.as_mut_ptr(),
    );
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("direct convolution kernels need x86_64");
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_avx512(
    g: &Geom,
    x: *const f32,
    w: *const f32,
    b: Option<*const f32>,
    relu: bool,
    y: *mut f32,
) {
    let (oh, ow) = (g.oh(), g.ow());
    let mut o0 = 0;
    while o0 < g.o {
        let no = BO.min(g.o - o0);
        let mut oy = 0;
        while oy < oh {
            let nr = BR.min(oh - oy);
            let mut ox = 0;
            while ox < ow {
                let m = tail_mask(ow - ox);
                let xb = x.add(oy * g.wp + ox);
                let yb = y.add(o0 * oh * ow + oy * ow + ox);
                let wb = w.add(o0 * g.c * g.kh * g.kw);
                let bb = b.map(|b| b.add(o0));
                macro_rules! go {
                    ($no:literal, $nr:literal) => {
                        fwd_block::<$no, $nr>(g, xb, wb, bb, relu, yb, m)
                    };
                }
                dispatch_6x4!(go, no, nr);
                ox += 16;
            }
            oy += nr;
        }
        o0 += no;
    }
}

/// One register block of the forward pass: `NO` output channels x `NR` output rows x 16
/// columns (masked by `m`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline(never)]
unsafe fn fwd_block<const NO: usize, const NR: usize>(
    g: &Geom,
    x: *const f32,
    w: *const f32,
    b: Option<*const f32>,
    relu: bool,
    y: *mut f32,
    m: __mmask16,
) {
    let ks = g.c * g.kh * g.kw;
    let mut acc = [[_mm512_setzero_ps(); NR]; NO];
    if let Some(b) = b {
        for (o, a) in acc.iter_mut().enumerate() {
            let v = _mm512_set1_ps(*b.add(o));
            for r in a.iter_mut() {
                *r = v;
            }
        }
    }
    for ci in 0..g.c {
        for ki in 0..g.kh {
            let xr = x.add((ci * g.hp + ki) * g.wp);
            let wr = w.add((ci * g.kh + ki) * g.kw);
            for kj in 0..g.kw {
                let mut xv = [_mm512_setzero_ps(); NR];
                for (r, v) in xv.iter_mut().enumerate() {
                    *v = _mm512_maskz_loadu_ps(m, xr.add(r * g.wp + kj));
                }
                for (o, a) in acc.iter_mut().enumerate() {
                    let wv = _mm512_set1_ps(*wr.add(o * ks + kj));
                    for (r, v) in a.iter_mut().enumerate() {
                        *v = _mm512_fmadd_ps(wv, xv[r], *v);
                    }
                }
            }
        }
    }
    let (oh, ow) = (g.oh(), g.ow());
    let zero = _mm512_setzero_ps();
    for (o, a) in acc.iter().enumerate() {
        for (r, v) in a.iter().enumerate() {
            let v = if relu { _mm512_max_ps(*v, zero) } else { *v };
            _mm512_mask_storeu_ps(y.add(o * oh * ow + r * ow), m, v);
        }
    }
}

/// Weight gradient contribution of a group of images: `dw[o, t] += sum over the images and
/// pixels of dy[o, pixel] * x[tap t, pixel]`, with taps `t = (ci, ki, kj)` in `w`'s order.
/// `xs[i]` is image i's padded input `[c, hp, wp]`, `dys[i]` its output gradient `[o, oh, ow]`;
/// `dw` is `[o, c * kh * kw]`.
///
/// # Safety
/// Requires AVX-512F ([`available`]); slices must have the sizes above.
pub(crate) unsafe fn weight_grad(g: &Geom, xs: &[&[f32]], dys: &[&[f32]], dw: &mut [f32]) {
    debug_assert_eq!(xs.len(), dys.len());
    debug_assert!(dw.len() >= g.o * g.c * g.kh * g.kw);
    #[cfg(target_arch = "x86_64")]
    weight_grad_avx512(g, xs, dys, dw);
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("direct convolution kernels need x86_64");
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_avx512(g: &Geom, xs: &[&[f32]], dys: &[&[f32]], dw: &mut [f32]) {
    let (oh, ow) = (g.oh(), g.ow());
    let ks = g.c * g.kh * g.kw;
    let nch = ow.div_ceil(16);
    let tail = tail_mask(ow - (nch - 1) * 16);
    let mut o0 = 0;
    while o0 < g.o {
        let no = NO_NARROW.min(g.o - o0);
        // The group's output gradient for channels o0..o0 + no, packed as
        // [image][oy][chunk][o][16] with zeros past the row end: aligned loads, one pointer.
        let per_img = oh * nch * no * 16;
        let mut packed = vec![0f32; xs.len() * per_img];
        for (img, dy) in dys.iter().enumerate() {
            for o in 0..no {
                for oy in 0..oh {
                    let row = &dy[((o0 + o) * oh + oy) * ow..((o0 + o) * oh + oy + 1) * ow];
                    for (ch, part) in row.chunks(16).enumerate() {
                        let at = img * per_img + ((oy * nch + ch) * no + o) * 16;
                        packed[at..at + part.len()].copy_from_slice(part);
                    }
                }
            }
        }
        for ci in 0..g.c {
            for ki in 0..g.kh {
                let mut kj0 = 0;
                while kj0 < g.kw {
                    let nt = NT_NARROW.min(g.kw - kj0);
                    let mut sums = [[0f32; NT_NARROW]; NO_NARROW];
                    let row0 = (ci * g.hp + ki) * g.wp + kj0;
                    macro_rules! go {
                        ($no:literal, $nt:literal) => {
                            dw_narrow::<$no, $nt>(
                                g, xs, &packed, per_img, row0, nch, tail, &mut sums,
                            )
                        };
                    }
                    match (no, nt) {
                        (4, 6) => go!(4, 6),
                        (4, 5) => go!(4, 5),
                        (4, 4) => go!(4, 4),
                        (4, 3) => go!(4, 3),
                        (4, 2) => go!(4, 2),
                        (4, 1) => go!(4, 1),
                        (3, 6) => go!(3, 6),
                        (3, 5) => go!(3, 5),
                        (3, 4) => go!(3, 4),
                        (3, 3) => go!(3, 3),
                        (3, 2) => go!(3, 2),
                        (3, 1) => go!(3, 1),
                        (2, 6) => go!(2, 6),
                        (2, 5) => go!(2, 5),
                        (2, 4) => go!(2, 4),
                        (2, 3) => go!(2, 3),
                        (2, 2) => go!(2, 2),
                        (2, 1) => go!(2, 1),
                        (1, 6) => go!(1, 6),
                        (1, 5) => go!(1, 5),
                        (1, 4) => go!(1, 4),
                        (1, 3) => go!(1, 3),
                        (1, 2) => go!(1, 2),
                        _ => go!(1, 1),
                    }
                    let t0 = (ci * g.kh + ki) * g.kw + kj0;
                    for (o, row) in sums.iter().enumerate().take(no) {
                        for (t, v) in row.iter().enumerate().take(nt) {
                            dw[(o0 + o) * ks + t0 + t] += *v;
                        }
                    }
                    kj0 += nt;
                }
            }
        }
        o0 += no;
    }
}

/// Output channels per register block of the pixel-vectorised weight gradient.
const NO_NARROW: usize = 4;
/// Consecutive taps of one kernel row per register block of the pixel-vectorised weight
/// gradient.
const NT_NARROW: usize = 6;

/// One register block of the pixel-vectorised weight gradient: `NO` output channels x `NT`
/// consecutive taps of one kernel row (input offset `row0` in each image), summed over every
/// pixel of every image of the group.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline(never)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn dw_narrow<const NO: usize, const NT: usize>(
    g: &Geom,
    xs: &[&[f32]],
    packed: &[f32],
    per_img: usize,
    row0: usize,
    nch: usize,
    tail: __mmask16,
    sums: &mut [[f32; NT_NARROW]; NO_NARROW],
) {
    let oh = g.oh();
    let mut acc = [[_mm512_setzero_ps(); NT]; NO];
    for (img, x) in xs.iter().enumerate() {
        let mut d = packed.as_ptr().add(img * per_img);
        for oy in 0..oh {
            let xr = x.as_ptr().add(row0 + oy * g.wp);
            for ch in 0..nch {
                let m = if ch + 1 < nch { 0xffff } else { tail };
                let mut dv = [_mm512_setzero_ps(); NO];
                for (o, v) in dv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(d.add(o * 16));
                }
                let xc = xr.add(ch * 16);
                for t in 0..NT {
                    let xv = _mm512_maskz_loadu_ps(m, xc.add(t));
                    for o in 0..NO {
                        acc[o][t] = _mm512_fmadd_ps(dv[o], xv, acc[o][t]);
                    }
                }
                d = d.add(NO * 16);
            }
        }
    }
    for (o, a) in acc.iter().enumerate() {
        for (t, v) in a.iter().enumerate() {
            sums[o][t] = _mm512_reduce_add_ps(*v);
        }
    }
}

/// Taps per register block of the channel-vectorised weight gradient.
const WT: usize = 6;
/// 16-channel vectors per register block of the channel-vectorised weight gradient.
const WV: usize = 4;

/// Weight gradient contribution of a group of images, vectorised along output channels:
/// `dwt[t, o] += sum over images and pixels of x[tap t, pixel] * dyt[pixel, o]`. `xs[i]` is
/// image i's padded input `[c, hp, wp]`, `dyts[i]` its output gradient transposed to
/// `[oh * ow, o]`; `dwt` is `[c * kh * kw, o]` (the transposed weight gradient).
///
/// # Safety
/// Requires AVX-512F ([`available`]); slices must have the sizes above.
pub(crate) unsafe fn weight_grad_t(g: &Geom, xs: &[&[f32]], dyts: &[&[f32]], dwt: &mut [f32]) {
    debug_assert_eq!(xs.len(), dyts.len());
    debug_assert!(dwt.len() >= g.o * g.c * g.kh * g.kw);
    #[cfg(target_arch = "x86_64")]
    weight_grad_t_avx512(g, xs, dyts, dwt);
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("direct convolution kernels need x86_64");
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_t_avx512(g: &Geom, xs: &[&[f32]], dyts: &[&[f32]], dwt: &mut [f32]) {
    let ks = g.c * g.kh * g.kw;
    let taps: Vec<usize> = (0..ks)
        .map(|t| {
            let (ci, r) = (t / (g.kh * g.kw), t % (g.kh * g.kw));
            (ci * g.hp + r / g.kw) * g.wp + r % g.kw
        })
        .collect();
    let nvec = g.o.div_ceil(16);
    let mut v0 = 0;
    while v0 < nvec {
        let nv = WV.min(nvec - v0);
        let mut t0 = 0;
        while t0 < ks {
            let nt = WT.min(ks - t0);
            macro_rules! go {
                ($nt:literal, $nv:literal) => {
                    dwt_block::<$nt, $nv>(
                        g,
                        xs,
                        dyts,
                        &taps[t0..t0 + $nt],
                        v0 * 16,
                        dwt.as_mut_ptr().add(t0 * g.o),
                    )
                };
            }
            dispatch_6x4!(go, nt, nv);
            t0 += nt;
        }
        v0 += nv;
    }
}

/// One register block: `NT` taps x `NV` vectors of 16 output channels starting at `o0`,
/// added into `dwt` (pointing at row `t0`, row stride `g.o`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline(never)]
unsafe fn dwt_block<const NT: usize, const NV: usize>(
    g: &Geom,
    xs: &[&[f32]],
    dyts: &[&[f32]],
    taps: &[usize],
    o0: usize,
    dwt: *mut f32,
) {
    let (oh, ow, o) = (g.oh(), g.ow(), g.o);
    let mut tap = [0usize; NT];
    tap.copy_from_slice(&taps[..NT]);
    let mut mask = [0 as __mmask16; NV];
    for (v, m) in mask.iter_mut().enumerate() {
        *m = tail_mask(o.saturating_sub(o0 + 16 * v));
    }
    let mut acc = [[_mm512_setzero_ps(); NV]; NT];
    for (x, dyt) in xs.iter().zip(dyts) {
        let (x, dyt) = (x.as_ptr(), dyt.as_ptr().add(o0));
        for oy in 0..oh {
            let xr = x.add(oy * g.wp);
            let dr = dyt.add(oy * ow * o);
            for ox in 0..ow {
                let mut dv = [_mm512_setzero_ps(); NV];
                for (v, d) in dv.iter_mut().enumerate() {
                    *d = _mm512_maskz_loadu_ps(mask[v], dr.add(ox * o + 16 * v));
                }
                for (t, a) in acc.iter_mut().enumerate() {
                    let xv = _mm512_set1_ps(*xr.add(tap[t] + ox));
                    for (v, r) in a.iter_mut().enumerate() {
                        *r = _mm512_fmadd_ps(xv, dv[v], *r);
                    }
                }
            }
        }
    }
    for (t, a) in acc.iter().enumerate() {
        for (v, r) in a.iter().enumerate() {
            let p = dwt.add(t * o + o0 + 16 * v);
            let cur = _mm512_maskz_loadu_ps(mask[v], p);
            _mm512_mask_storeu_ps(p, mask[v], _mm512_add_ps(cur, *r));
        }
    }
}

/// Lanes `ox0 + i` (i < 16) with `lo <= ox0 + i < hi`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn range_mask(ox0: usize, lo: usize, hi: usize) -> __mmask16 {
    let below_hi = if hi > ox0 { tail_mask(hi - ox0) } else { 0 };
    let from_lo = if lo > ox0 {
        !tail_mask(lo - ox0)
    } else {
        0xffff
    };
    below_hi & from_lo
}

/// im2col row for stride 1: `d[ox] = src[ox]` for `lo <= ox < hi`, else 0, for `ox < d.len()`.
/// `src` points at input column `-off` (it may lie before the row; only lanes in `lo..hi`
/// are read).
///
/// # Safety
/// Requires AVX-512F; `src.wrapping_add(ox)` must be readable for every `ox` in `lo..hi`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn shifted_row_copy(d: &mut [f32], src: *const f32, lo: usize, hi: usize) {
    let n = d.len();
    let mut ox0 = 0;
    while ox0 < n {
        let store = tail_mask(n - ox0);
        let load = range_mask(ox0, lo, hi) & store;
        let v = _mm512_maskz_loadu_ps(load, src.wrapping_add(ox0));
        _mm512_mask_storeu_ps(d.as_mut_ptr().add(ox0), store, v);
        ox0 += 16;
    }
}

/// col2im row for stride 1: `dst[ox] += s[ox]` for `lo <= ox < hi` (`dst` as in
/// [`shifted_row_copy`]).
///
/// # Safety
/// Requires AVX-512F; `dst.wrapping_add(ox)` must be writable for every `ox` in `lo..hi`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn shifted_row_add(s: &[f32], dst: *mut f32, lo: usize, hi: usize) {
    let n = s.len();
    let mut ox0 = 0;
    while ox0 < n {
        let m = range_mask(ox0, lo, hi) & tail_mask(n - ox0);
        if m != 0 {
            let a = _mm512_maskz_loadu_ps(m, s.as_ptr().add(ox0));
            let p = dst.wrapping_add(ox0);
            let b = _mm512_maskz_loadu_ps(m, p);
            _mm512_mask_storeu_ps(p, m, _mm512_add_ps(a, b));
        }
        ox0 += 16;
    }
}

/// Width of the feature maps the row-pair kernel handles: two rows fill one register.
pub(crate) const PAIR_W: usize = 8;

/// Floats of zero guard before and after the planes given to [`forward_pairs`]: its masked
/// loads address up to one element outside the planes (in lanes the mask switches off).
pub(crate) const PAIR_GUARD: usize = 16;

/// A 3x3, stride 1, "same" (pad 1) correlation of 8-wide planes, vectorised over pairs of
/// output rows: lane `l` of a register is pixel `(2 r + l / 8, l % 8)`. The input is padded
/// vertically only (`[c, h + 2, 8]`); a tap's 16 inputs are then contiguous, and the columns
/// that would fall outside the row are switched off by the load mask. Blocks of 6 output
/// channels x 4 row pairs accumulate in 24 registers. `y = correlate(x, w) (+ bias)`, then
/// `max(y, 0)` with `relu`; `y` `[o, h, 8]` is fully overwritten.
///
/// # Safety
/// Requires AVX-512F ([`available`]); `x` must point `PAIR_GUARD` floats into a buffer of
/// `c * (h + 2) * 8 + 2 * PAIR_GUARD` floats; `w` holds `[o, c, 3, 3]`, `y` `[o, h, 8]`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn forward_pairs(
    c: usize,
    h: usize,
    o: usize,
    x: *const f32,
    w: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
) {
    debug_assert!(w.len() >= o * c * 9);
    debug_assert!(y.len() >= o * h * PAIR_W);
    #[cfg(target_arch = "x86_64")]
    forward_pairs_avx512(
        c,
        h,
        o,
        x,
        w.as_ptr(),
        bias.map(|b| b.as_ptr()),
        relu,
        y.as_mut_ptr(),
    );
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("direct convolution kernels need x86_64");
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_pairs_avx512(
    c: usize,
    h: usize,
    o: usize,
    x: *const f32,
    w: *const f32,
    b: Option<*const f32>,
    relu: bool,
    y: *mut f32,
) {
    let pairs = h.div_ceil(2);
    // Lanes of the last pair that exist (an odd height leaves its second row out).
    let last = if h % 2 == 1 { 0x00ff } else { 0xffff };
    let mut o0 = 0;
    while o0 < o {
        let no = BO.min(o - o0);
        let mut p0 = 0;
        while p0 < pairs {
            let np = BR.min(pairs - p0);
            let m_last: __mmask16 = if p0 + np == pairs { last } else { 0xffff };
            let xb = x.add(2 * p0 * PAIR_W);
            let yb = y.add((o0 * h + 2 * p0) * PAIR_W);
            let wb = w.add(o0 * c * 9);
            let bb = b.map(|b| b.add(o0));
            macro_rules! go {
                ($no:literal, $nr:literal) => {
                    pair_block::<$no, $nr>(c, h, xb, wb, bb, relu, yb, m_last)
                };
            }
            dispatch_6x4!(go, no, np);
            p0 += np;
        }
        o0 += no;
    }
}

/// One register block of [`forward_pairs`]: `NO` output channels x `NP` row pairs; the last
/// pair's stores are masked by `m_last`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
unsafe fn pair_block<const NO: usize, const NP: usize>(
    c: usize,
    h: usize,
    x: *const f32,
    w: *const f32,
    b: Option<*const f32>,
    relu: bool,
    y: *mut f32,
    m_last: __mmask16,
) {
    // Column x + kj - 1 of output column x must lie in 0..8: tap 0 drops column 0 of each
    // row, tap 2 column 7.
    const MASKS: [__mmask16; 3] = [0xfefe, 0xffff, 0x7f7f];
    let plane = (h + 2) * PAIR_W;
    let mut acc = [[_mm512_setzero_ps(); NP]; NO];
    if let Some(b) = b {
        for (o, a) in acc.iter_mut().enumerate() {
            let v = _mm512_set1_ps(*b.add(o));
            for r in a.iter_mut() {
                *r = v;
            }
        }
    }
    let ks = c * 9;
    for ci in 0..c {
        for ki in 0..3 {
            let xr = x.add(ci * plane + ki * PAIR_W);
            let wr = w.add(ci * 9 + ki * 3);
            for (kj, &m) in MASKS.iter().enumerate() {
                let mut xv = [_mm512_setzero_ps(); NP];
                for (r, v) in xv.iter_mut().enumerate() {
                    // Lane l reads xr[2 r * 8 + l + kj - 1]; the masked-off lanes are the
                    // only ones that may leave the plane.
                    *v = _mm512_maskz_loadu_ps(m, xr.add(r * 2 * PAIR_W + kj).wrapping_sub(1));
                }
                for (o, a) in acc.iter_mut().enumerate() {
                    let wv = _mm512_set1_ps(*wr.add(o * ks + kj));
                    for (r, v) in a.iter_mut().enumerate() {
                        *v = _mm512_fmadd_ps(wv, xv[r], *v);
                    }
                }
            }
        }
    }
    let zero = _mm512_setzero_ps();
    for (o, a) in acc.iter().enumerate() {
        for (r, v) in a.iter().enumerate() {
            let v = if relu { _mm512_max_ps(*v, zero) } else { *v };
            let m = if r + 1 == NP { m_last } else { 0xffff };
            _mm512_mask_storeu_ps(y.add(o * h * PAIR_W + r * 2 * PAIR_W), m, v);
        }
    }
}
