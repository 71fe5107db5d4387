//! Winograd F(4x4, 3x3) convolution for 3x3, stride-1, pad-1 layers whose channel counts are
//! multiples of 16: the forward pass, the input gradient (the same convolution of the output
//! gradient with the kernel flipped and its channel axes swapped) and the weight gradient.
//!
//! Why: vgg6's 3x3 layers already ran at 83-93% of this CPU's FMA peak with direct
//! convolution, so its epoch could only get shorter by doing less arithmetic. Winograd's
//! minimal filtering computes a 4x4 output tile from a 6x6 input tile with 36 multiplications
//! per channel pair instead of 144, a quarter, at the price of transforms that are linear in
//! the data and a slightly larger rounding error (tested against candle's direct convolution
//! to 1e-4 of the largest value, like every kernel here).
//!
//! Per group of images on one thread:
//! 1. input transform: every 6x6 input tile `d` (stride 4, zero outside the image) becomes
//!    `V = B^T d B`, stored as 36 matrices `V[pos][tile][c]`, vectorised over 16 channels;
//! 2. 36 GEMMs `M[pos] = V[pos] @ U[pos]^T` with the transformed kernel `U[pos][o][c] =
//!    (G g G^T)[pos]`, transformed once per call;
//! 3. output transform: `y = A^T M A` for every tile and block of 16 output channels, plus
//!    bias and ReLU, written to the 4x4 output pixels inside the image.
//!
//! The weight gradient is the same algorithm transposed (`y . dy = g . dg` for every kernel
//! `g`): `dU[pos][o][c] = sum over tiles of (A dY A^T)[pos][tile][o] V[pos][tile][c]`, one GEMM
//! per position reducing over the tiles, then `dW = G^T dU G`.
//!
//! x86_64 only (AVX-512F, checked by the callers through [`super::direct::available`]).

// The transforms index small fixed-size tile arrays by position; iterator chains over
// several of them at once read worse than the index loops of the formulas.
#![allow(clippy::needless_range_loop)]

use super::util::{
    alloc_uninit, alloc_zeroed, num_threads, par_for, par_map, prof, sgemm, split_range, sum,
    with_scratch, Mat, SyncPtr,
};

/// Channels per vector (one AVX-512 register).
const L: usize = 16;
/// Input tile side (alpha = m + r - 1 for m = 4 outputs, r = 3 taps).
const A: usize = 6;
/// Transform positions per tile.
const P: usize = A * A;
/// Output tile side.
const M: usize = 4;

/// Whether a convolution of this geometry runs here. The per-layer choice (where it pays)
/// is the caller's.
pub(crate) fn applies(c: usize, o: usize, kh: usize, kw: usize, pad: usize, stride: usize) -> bool {
    (kh, kw, pad, stride) == (3, 3, 1, 1)
        && c.is_multiple_of(L)
        && o.is_multiple_of(L)
        && c > 0
        && o > 0
}

use std::arch::x86_64::*;

/// `B^T d` for one column of six tiles' values (points 0, 1, -1, 2, -2 and infinity), 16
/// channels per register.
#[target_feature(enable = "avx512f")]
#[inline]
fn bt(d: &[__m512; A]) -> [__m512; A] {
    let [d0, d1, d2, d3, d4, d5] = *d;
    let k = _mm512_set1_ps;
    let (s, f) = (_mm512_sub_ps, _mm512_fmadd_ps);
    let (a, b) = (_mm512_add_ps, _mm512_sub_ps);
    [
        f(k(4.0), d0, f(k(-5.0), d2, d4)),
        f(k(-4.0), a(d1, d2), a(d4, d3)),
        f(k(4.0), b(d1, d2), s(d4, d3)),
        f(k(2.0), b(d3, d1), s(d4, d2)),
        f(k(-2.0), b(d3, d1), s(d4, d2)),
        f(k(4.0), d1, f(k(-5.0), d3, d5)),
    ]
}

/// `A^T m` for one column of six transformed values.
#[target_feature(enable = "avx512f")]
#[inline]
fn at(m: &[__m512; A]) -> [__m512; M] {
    let [m0, m1, m2, m3, m4, m5] = *m;
    let k = _mm512_set1_ps;
    let (a, s, f) = (_mm512_add_ps, _mm512_sub_ps, _mm512_fmadd_ps);
    let (s12, d12, s34, d34) = (a(m1, m2), s(m1, m2), a(m3, m4), s(m3, m4));
    [
        a(a(m0, s12), s34),
        f(k(2.0), d34, d12),
        f(k(4.0), s34, s12),
        a(f(k(8.0), d34, d12), m5),
    ]
}

/// `A v` for one column of four output-gradient values (the transpose of [`at`]).
#[target_feature(enable = "avx512f")]
#[inline]
fn a_col(v: &[__m512; M]) -> [__m512; A] {
    let [v0, v1, v2, v3] = *v;
    let k = _mm512_set1_ps;
    let (a, s, f) = (_mm512_add_ps, _mm512_sub_ps, _mm512_fmadd_ps);
    let (s02, s13) = (a(v0, v2), a(v1, v3));
    let (q02, q13) = (f(k(4.0), v2, v0), f(k(4.0), v3, v1));
    [
        v0,
        a(s02, s13),
        s(s02, s13),
        f(k(2.0), q13, q02),
        f(k(-2.0), q13, q02),
        v3,
    ]
}

/// G's rows: points 0, 1, -1, 2, -2 and infinity, as multiplications by the reciprocals
/// (divisions made the kernel transform of vgg6's 256x256 layer cost as much as its GEMMs).
const GM: [[f32; 3]; A] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// `G g G^T` for 16 kernels at once (`g[tap][lane]`, taps row-major), into `u[pos][lane]`.
#[target_feature(enable = "avx512f")]
fn kernel_block(g: &[[f32; L]; 9], u: &mut [[f32; L]; P]) {
    // t = G g (6 x 3), then u = t G^T (6 x 6); lanes innermost so each step is a vector op.
    let mut t = [[[0f32; L]; 3]; A];
    for a in 0..A {
        for x in 0..3 {
            for l in 0..L {
                t[a][x][l] = GM[a][0] * g[x][l] + GM[a][1] * g[3 + x][l] + GM[a][2] * g[6 + x][l];
            }
        }
    }
    for a in 0..A {
        for b in 0..A {
            for l in 0..L {
                u[a * A + b][l] =
                    GM[b][0] * t[a][0][l] + GM[b][1] * t[a][1][l] + GM[b][2] * t[a][2][l];
            }
        }
    }
}

/// The transformed kernel `U[pos][co][ci]` of a convolution with `ci` input and `co` output
/// channels. `w` is the forward kernel `[co][ci][3][3]`; with `flip`, `w` is `[ci][co][3][3]`
/// (the forward kernel of the layer whose input gradient this convolution computes) and is
/// used rotated by 180 degrees with its channel axes swapped.
pub(crate) fn transform_kernel(w: &[f32], ci: usize, co: usize, flip: bool) -> Vec<f32> {
    let _t = prof::span("  winograd kernel transform");
    assert_eq!(w.len(), ci * co * 9, "winograd: kernel size");
    assert!(
        ci.is_multiple_of(L),
        "winograd: input channels must be a multiple of {L}"
    );
    // Every element is written below, each output channel's by one task. Lanes run along the
    // input channels, so a block's 36 results are 36 runs of 16 consecutive floats.
    let mut u = alloc_uninit(P * ci * co);
    let up = SyncPtr(u.as_mut_ptr());
    par_for(co, |o| {
        let mut blk = [[0f32; L]; P];
        for ib in (0..ci).step_by(L) {
            // The nine taps of 16 kernels, lane l = input channel ib + l.
            let mut g = [[0f32; L]; 9];
            for l in 0..L {
                let i = ib + l;
                for (t, gt) in g.iter_mut().enumerate() {
                    let (y, x) = (t / 3, t % 3);
                    gt[l] = if flip {
                        w[((i * co + o) * 3 + 2 - y) * 3 + 2 - x]
                    } else {
                        w[((o * ci + i) * 3 + y) * 3 + x]
                    };
                }
            }
            // SAFETY: AVX-512F is available (the caller checked).
            unsafe { kernel_block(&g, &mut blk) };
            for (pos, vals) in blk.iter().enumerate() {
                let at = (pos * co + o) * ci + ib;
                // SAFETY: in bounds, and (o, ib..ib + 16) is written by this task only.
                unsafe { std::ptr::copy_nonoverlapping(vals.as_ptr(), up.get().add(at), L) };
            }
        }
    });
    u
}

/// Geometry of one call: `n` images of `c` planes `h x w` in, `o` planes out, same size.
#[derive(Clone, Copy)]
struct Geom {
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    /// Tiles per row and per column.
    tw: usize,
    th: usize,
}

impl Geom {
    fn new(c: usize, h: usize, w: usize, o: usize) -> Self {
        assert!(super::direct::available(), "winograd: needs AVX-512F");
        assert!(
            c.is_multiple_of(L) && o.is_multiple_of(L),
            "winograd: channels must be multiples of {L}"
        );
        Geom {
            c,
            h,
            w,
            o,
            tw: w.div_ceil(M),
            th: h.div_ceil(M),
        }
    }
    fn tiles(&self) -> usize {
        self.th * self.tw
    }
    /// Plane size padded to the tile grid: one zero row/column before, the rest after.
    fn padded(&self) -> (usize, usize) {
        (self.th * M + 2, self.tw * M + 2)
    }
}

/// Tiles per GEMM: long enough for the GEMM to run near its peak, short enough for the
/// transformed tiles of a group (`36 x tiles x channels`) to stay in the L2/L3 caches.
const TILES_PER_GROUP: usize = 128;

/// Images per group: about [`TILES_PER_GROUP`] tiles, and at least one group per thread.
fn images_per_group(n: usize, tiles: usize) -> usize {
    let by_size = (TILES_PER_GROUP / tiles).max(1);
    by_size.min(n.div_ceil(num_threads()).max(1))
}

/// `y = conv3x3(x, U) + b`, then `max(y, 0)` with `relu`: `x` is `[n, c, h, w]`, `u` from
/// [`transform_kernel`] for `c` inputs and `o` outputs, the result `[n, o, h, w]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv(
    x: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    u: &[f32],
    o: usize,
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let g = Geom::new(c, h, w, o);
    assert_eq!(x.len(), n * c * h * w, "winograd: input size");
    assert_eq!(u.len(), P * c * o, "winograd: kernel size");
    let ipg = images_per_group(n, g.tiles());
    let groups = n.div_ceil(ipg);
    let (in_img, out_img) = (c * h * w, o * h * w);
    // Every output pixel is written by the output transform.
    let mut out = alloc_uninit(n * out_img);
    let outp = SyncPtr(out.as_mut_ptr());
    par_for(groups, |gi| {
        let imgs = gi * ipg..((gi + 1) * ipg).min(n);
        let t = imgs.len() * g.tiles();
        let xs = &x[imgs.start * in_img..imgs.end * in_img];
        // SAFETY: this group's output images are written by this task only.
        let ys = unsafe { outp.slice(imgs.start * out_img, imgs.len() * out_img) };
        let (hp, wp) = g.padded();
        with_scratch(P * t * (c + o) + L * hp * wp, |buf| {
            let (vb, rest) = buf.split_at_mut(P * t * c);
            let (mb, pad) = rest.split_at_mut(P * t * o);
            // SAFETY: AVX-512F checked above; the buffers have the sizes the kernels expect.
            unsafe { input_transform(xs, imgs.len(), &g, vb, pad) };
            {
                let _t = prof::span("  winograd gemm");
                for pos in 0..P {
                    // SAFETY: V[pos] is t x c, U[pos] is o x c (read transposed), M[pos] is
                    // t x o, all in bounds.
                    unsafe {
                        sgemm(
                            t,
                            o,
                            c,
                            mb.as_mut_ptr().add(pos * t * o),
                            o,
                            false,
                            Mat::rm(&vb[pos * t * c..(pos + 1) * t * c], c),
                            Mat::rm_t(&u[pos * c * o..(pos + 1) * c * o], c),
                        )
                    };
                }
            }
            unsafe { output_transform(mb, imgs.len(), &g, bias, relu, ys) };
        });
    });
    out
}

/// `V[pos][tile][c] = (B^T d B)[pos]` for every 6x6 input tile `d` of `imgs` images (stride
/// 4, zero outside the image); `pad` is scratch for [`tile_transform`].
///
/// # Safety
/// Needs AVX-512F; `x` holds `imgs` images of `g`, `v` is `36 x tiles x c`, `pad` holds
/// `16 x hp x wp` ([`Geom::padded`]).
#[target_feature(enable = "avx512f")]
unsafe fn input_transform(x: &[f32], imgs: usize, g: &Geom, v: &mut [f32], pad: &mut [f32]) {
    let _t = prof::span("  winograd input transform");
    tile_transform::<A>(x, imgs, g.c, g, 1, |d| bt(d), v, pad);
}

/// `Y[pos][tile][o] = (A dY A^T)[pos]` for every 4x4 output-gradient tile of `imgs` images
/// (zero beyond the image); `pad` as for [`input_transform`].
///
/// # Safety
/// As for [`input_transform`], with `dy` holding `imgs` output gradients and `y` `36 x tiles
/// x o`.
#[target_feature(enable = "avx512f")]
unsafe fn grad_transform(dy: &[f32], imgs: usize, g: &Geom, y: &mut [f32], pad: &mut [f32]) {
    let _t = prof::span("  winograd gradient transform");
    tile_transform::<M>(dy, imgs, g.o, g, 0, |d| a_col(d), y, pad);
}

/// `out[pos][tile][ch] = (T d T^T)[pos]` for every K x K tile `d` of `imgs` images of `ch`
/// planes (`g.h x g.w`), tiles every 4 pixels starting `lead` pixels before the image (zeros
/// outside it), where `T` is the linear map `t` from K values to 6. The planes are first
/// interleaved 16 at a time and zero-padded to the tile grid, so every tap of 16 channels is
/// one load.
///
/// # Safety
/// Needs AVX-512F; `src` holds `imgs * ch * h * w` values, `out` `36 x tiles x ch`, `pad` at
/// least `16 x (th * 4 + K - 4) x (tw * 4 + K - 4)`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn tile_transform<const K: usize>(
    src: &[f32],
    imgs: usize,
    ch: usize,
    g: &Geom,
    lead: usize,
    t: impl Fn(&[__m512; K]) -> [__m512; A],
    out: &mut [f32],
    pad: &mut [f32],
) {
    let (h, w) = (g.h, g.w);
    let (hp, wp) = (g.th * M + K - M, g.tw * M + K - M);
    let t_all = imgs * g.tiles();
    let inter = &mut pad[..hp * wp * L];
    let op = out.as_mut_ptr();
    let mut tap = [_mm512_setzero_ps(); K];
    let mut cols = [[_mm512_setzero_ps(); A]; K];
    let mut col = [_mm512_setzero_ps(); K];
    for img in 0..imgs {
        let si = &src[img * ch * h * w..(img + 1) * ch * h * w];
        for cb in (0..ch).step_by(L) {
            let sb = &si[cb * h * w..(cb + L) * h * w];
            interleave_padded(sb, h, w, lead, lead, hp, wp, inter);
            let ip = inter.as_ptr();
            for ty in 0..g.th {
                for tx in 0..g.tw {
                    let base = ip.add((ty * M * wp + tx * M) * L);
                    // T d down the columns, then (.) T^T along the rows.
                    for (k, ck) in cols.iter_mut().enumerate() {
                        for (r, tr) in tap.iter_mut().enumerate() {
                            *tr = _mm512_loadu_ps(base.add((r * wp + k) * L));
                        }
                        *ck = t(&tap);
                    }
                    let tile = img * g.tiles() + ty * g.tw + tx;
                    for a in 0..A {
                        for (k, ck) in col.iter_mut().enumerate() {
                            *ck = cols[k][a];
                        }
                        for (b, val) in t(&col).iter().enumerate() {
                            let idx = ((a * A + b) * t_all + tile) * ch + cb;
                            debug_assert!(idx + L <= out.len());
                            _mm512_storeu_ps(op.add(idx), *val);
                        }
                    }
                }
            }
        }
    }
}

/// 16 planes of `h x w` (`xb`, one after another) into `out` as `[hp][wp][16]`, channel
/// innermost, with the image at row `top` and column `left` and zeros around it: the tiles'
/// loads are then one vector per tap. 16 columns at a time through a 16x16 transpose.
///
/// # Safety
/// Needs AVX-512F; `xb` holds `16 * h * w` values, `out` at least `hp * wp * 16`, and the
/// image fits (`top + h <= hp`, `left + w <= wp`).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn interleave_padded(
    xb: &[f32],
    h: usize,
    w: usize,
    top: usize,
    left: usize,
    hp: usize,
    wp: usize,
    out: &mut [f32],
) {
    debug_assert!(xb.len() >= L * h * w && out.len() >= hp * wp * L);
    debug_assert!(top + h <= hp && left + w <= wp);
    let row = wp * L;
    out[..top * row].fill(0.0);
    out[(top + h) * row..hp * row].fill(0.0);
    let mut r = [_mm512_setzero_ps(); L];
    for y in 0..h {
        let o = &mut out[(top + y) * row..(top + y + 1) * row];
        o[..left * L].fill(0.0);
        o[(left + w) * L..].fill(0.0);
        for x0 in (0..w).step_by(L) {
            let n = (w - x0).min(L);
            let mask: __mmask16 = if n == L { 0xffff } else { (1u16 << n) - 1 };
            for (l, rl) in r.iter_mut().enumerate() {
                // Masked: reads nothing past the row's end.
                *rl = _mm512_maskz_loadu_ps(mask, xb.as_ptr().add(l * h * w + y * w + x0));
            }
            transpose16(&mut r);
            for (j, rj) in r.iter().enumerate().take(n) {
                _mm512_storeu_ps(o.as_mut_ptr().add((left + x0 + j) * L), *rj);
            }
        }
    }
}

/// In-register transpose of a 16x16 block: afterwards `r[j][i]` is what `r[i][j]` was.
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [__m512; L]) {
    let (ps, pd) = (_mm512_castpd_ps, _mm512_castps_pd);
    let mut t = [_mm512_setzero_ps(); L];
    for k in 0..8 {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    let mut u = [_mm512_setzero_ps(); L];
    for b in (0..L).step_by(4) {
        u[b] = ps(_mm512_unpacklo_pd(pd(t[b]), pd(t[b + 2])));
        u[b + 1] = ps(_mm512_unpackhi_pd(pd(t[b]), pd(t[b + 2])));
        u[b + 2] = ps(_mm512_unpacklo_pd(pd(t[b + 1]), pd(t[b + 3])));
        u[b + 3] = ps(_mm512_unpackhi_pd(pd(t[b + 1]), pd(t[b + 3])));
    }
    for b in [0, 8] {
        for j in 0..4 {
            t[b + j] = _mm512_shuffle_f32x4::<0x88>(u[b + j], u[b + 4 + j]);
            t[b + 4 + j] = _mm512_shuffle_f32x4::<0xdd>(u[b + j], u[b + 4 + j]);
        }
    }
    for j in 0..8 {
        r[j] = _mm512_shuffle_f32x4::<0x88>(t[j], t[8 + j]);
        r[8 + j] = _mm512_shuffle_f32x4::<0xdd>(t[j], t[8 + j]);
    }
}

/// `y = A^T M A` (+ bias, ReLU) for every tile and block of 16 output channels, written to the
/// output pixels inside the image.
///
/// # Safety
/// Needs AVX-512F; `m` is `36 x tiles x o`, `y` holds `imgs` output images of `g`.
#[target_feature(enable = "avx512f")]
unsafe fn output_transform(
    m: &[f32],
    imgs: usize,
    g: &Geom,
    bias: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
) {
    let _t = prof::span("  winograd output transform");
    let (o, h, w) = (g.o, g.h, g.w);
    let t_all = imgs * g.tiles();
    let plane = h * w;
    // Lane l writes output channel l of the block: one plane further.
    let lanes = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(plane as i32),
    );
    let mp = m.as_ptr();
    let mut col = [_mm512_setzero_ps(); A];
    let mut colt = [[_mm512_setzero_ps(); M]; A];
    for img in 0..imgs {
        for ob in (0..o).step_by(L) {
            let b = match bias {
                Some(bs) => _mm512_loadu_ps(bs[ob..ob + L].as_ptr()),
                None => _mm512_setzero_ps(),
            };
            for ty in 0..g.th {
                for tx in 0..g.tw {
                    let tile = img * g.tiles() + ty * g.tw + tx;
                    let (y0, x0) = (ty * M, tx * M);
                    let (rows, cols) = (M.min(h - y0), M.min(w - x0));
                    // A^T M down the columns, then along the rows.
                    for (bb, ct) in colt.iter_mut().enumerate() {
                        for (a, ca) in col.iter_mut().enumerate() {
                            let idx = ((a * A + bb) * t_all + tile) * o + ob;
                            debug_assert!(idx + L <= m.len());
                            *ca = _mm512_loadu_ps(mp.add(idx));
                        }
                        *ct = at(&col);
                    }
                    for i in 0..rows {
                        for (k, ck) in col.iter_mut().enumerate() {
                            *ck = colt[k][i];
                        }
                        let row = at(&col);
                        for (j, val) in row.iter().enumerate().take(cols) {
                            let mut val = _mm512_add_ps(*val, b);
                            if relu {
                                val = _mm512_max_ps(val, _mm512_setzero_ps());
                            }
                            let idx = (img * o + ob) * plane + (y0 + i) * w + x0 + j;
                            debug_assert!(idx + (L - 1) * plane < y.len());
                            _mm512_i32scatter_ps::<4>(y.as_mut_ptr().add(idx), lanes, val);
                        }
                    }
                }
            }
        }
    }
}

/// Weight (and bias) gradient of `y = conv3x3(x, w)` (pad 1): `x` is `[n, c, h, w]`, `dy`
/// `[n, o, h, w]`; returns `dw` as `[o, c, 3, 3]` and, with `need_db`, `db` as `[o]`. The
/// images are split into one contiguous range per thread and the partial sums added in range
/// order, so the result depends on the thread count only, never on timing.
#[allow(clippy::too_many_arguments)]
pub(crate) fn weight_grad(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    need_db: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let g = Geom::new(c, h, w, o);
    assert_eq!(x.len(), n * c * h * w, "winograd: input size");
    assert_eq!(dy.len(), n * o * h * w, "winograd: output gradient size");
    let (in_img, out_img) = (c * h * w, o * h * w);
    let ipg = (TILES_PER_GROUP / g.tiles()).max(1);
    let nt = num_threads().min(n).max(1);
    let (hp, wp) = g.padded();
    let part = |t: usize| -> (Vec<f32>, Vec<f32>) {
        let mut du = alloc_zeroed(P * o * c);
        let mut db = if need_db { alloc_zeroed(o) } else { Vec::new() };
        let r = split_range(n, nt, t);
        let mut start = r.start;
        while start < r.end {
            let imgs = start..(start + ipg).min(r.end);
            let tn = imgs.len() * g.tiles();
            let xs = &x[imgs.start * in_img..imgs.end * in_img];
            let dys = &dy[imgs.start * out_img..imgs.end * out_img];
            if need_db {
                for img in dys.chunks_exact(out_img) {
                    for (d, plane) in db.iter_mut().zip(img.chunks_exact(h * w)) {
                        *d += sum(plane);
                    }
                }
            }
            with_scratch(P * tn * (c + o) + L * hp * wp, |buf| {
                let (vb, rest) = buf.split_at_mut(P * tn * c);
                let (yb, pad) = rest.split_at_mut(P * tn * o);
                // SAFETY: AVX-512F checked above; the buffers have the sizes the kernels expect.
                unsafe {
                    input_transform(xs, imgs.len(), &g, vb, pad);
                    grad_transform(dys, imgs.len(), &g, yb, pad);
                }
                let _t = prof::span("  winograd gemm (weight)");
                for pos in 0..P {
                    // SAFETY: Y[pos] is tn x o (read transposed), V[pos] tn x c, dU[pos] o x c.
                    unsafe {
                        sgemm(
                            o,
                            c,
                            tn,
                            du.as_mut_ptr().add(pos * o * c),
                            c,
                            true,
                            Mat::rm_t(&yb[pos * tn * o..(pos + 1) * tn * o], o),
                            Mat::rm(&vb[pos * tn * c..(pos + 1) * tn * c], c),
                        )
                    };
                }
            });
            start = imgs.end;
        }
        (du, db)
    };
    let mut parts = par_map(nt, part);
    let (mut du, mut db) = parts.swap_remove(0);
    for (pu, pb) in parts {
        du.iter_mut().zip(&pu).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(&pb).for_each(|(a, b)| *a += b);
    }
    // SAFETY: AVX-512F checked above.
    let dw = unsafe { inverse_kernel_transform(&du, c, o) };
    (dw, need_db.then_some(db))
}

/// `dW[o][c] = G^T dU[.][o][c] G` (6x6 to 3x3), 16 input channels at a time.
///
/// # Safety
/// Needs AVX-512F; `du` is `36 x o x c`.
#[target_feature(enable = "avx512f")]
unsafe fn inverse_kernel_transform(du: &[f32], c: usize, o: usize) -> Vec<f32> {
    let _t = prof::span("  winograd kernel gradient transform");
    // Every element is written below, each output channel's by one task.
    let mut dw = alloc_uninit(o * c * 9);
    let dwp = SyncPtr(dw.as_mut_ptr());
    par_for(o, |oi| {
        // SAFETY: output channel oi's block is written by this task only.
        let dwo = unsafe { dwp.slice(oi * c * 9, c * 9) };
        // The closure inherits this function's AVX-512F (the caller checked it).
        inverse_kernel_row(du, c, o, oi, dwo);
    });
    dw
}

/// [`inverse_kernel_transform`] for one output channel: `dwo` is its `[c][3][3]` block.
#[target_feature(enable = "avx512f")]
fn inverse_kernel_row(du: &[f32], c: usize, o: usize, oi: usize, dwo: &mut [f32]) {
    for cb in (0..c).step_by(L) {
        // t = G^T dU (3 x 6), then dW = t G (3 x 3); lanes innermost.
        let mut t = [[[0f32; L]; A]; 3];
        for (k, tk) in t.iter_mut().enumerate() {
            for (b, tkb) in tk.iter_mut().enumerate() {
                for (a, ga) in GM.iter().enumerate() {
                    let idx = ((a * A + b) * o + oi) * c + cb;
                    let src = &du[idx..idx + L];
                    for l in 0..L {
                        tkb[l] += ga[k] * src[l];
                    }
                }
            }
        }
        for l in 0..L {
            let base = (cb + l) * 9;
            for k in 0..3 {
                for kk in 0..3 {
                    let mut v = 0f32;
                    for (b, gb) in GM.iter().enumerate() {
                        v += t[k][b][l] * gb[kk];
                    }
                    dwo[base + k * 3 + kk] = v;
                }
            }
        }
    }
}
