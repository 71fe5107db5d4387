//! Element-wise kernels: ReLU with a backward pass that reads the output (`dy * (y > 0)`),
//! so the input need not stay alive. The gradient at exactly 0 is 0 (PyTorch's convention;
//! candle's own relu uses 1 there).

use super::util::{alloc_uninit, cpu_slice, par_for, prof, tensor_from, with_data, SyncPtr};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// Elements per parallel task; smaller tensors run on the calling thread, where a pass costs
/// less than waking another thread.
const CHUNK: usize = 1 << 17;

/// `f(range, out[range])` over `0..len`, in chunks spread over the thread pool.
fn map_chunks(
    len: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    // Every element is written by `f`.
    let mut out = alloc_uninit(len);
    let op = SyncPtr(out.as_mut_ptr());
    par_for(len.div_ceil(CHUNK), |t| {
        let r = t * CHUNK..((t + 1) * CHUNK).min(len);
        // SAFETY: task t owns r.
        f(r.clone(), unsafe { op.slice(r.start, r.len()) });
    });
    out
}

pub(crate) fn relu_forward(x: &[f32]) -> Vec<f32> {
    let _t = prof::span("relu forward");
    map_chunks(x.len(), |r, o| {
        for (o, &v) in o.iter_mut().zip(&x[r]) {
            *o = if v > 0.0 { v } else { 0.0 };
        }
    })
}

/// The output gradient of a fused op that ends in ReLU, masked with `res > 0` before the
/// op's own backward pass; `None` (use `grad` as it is) when the op has no ReLU.
pub(crate) fn relu_masked_grad(relu: bool, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
    if !relu {
        return Ok(None);
    }
    let v = with_data(res, |y| with_data(grad, |dy| Ok(relu_backward(y, dy))))?;
    Ok(Some(tensor_from(v, res.dims())?))
}

pub(crate) fn relu_backward(y: &[f32], dy: &[f32]) -> Vec<f32> {
    let _t = prof::span("relu backward");
    map_chunks(y.len(), |r, o| {
        for ((o, &v), &g) in o.iter_mut().zip(&y[r.clone()]).zip(&dy[r]) {
            *o = if v > 0.0 { g } else { 0.0 };
        }
    })
}

pub(crate) struct ReluOp;

impl CustomOp1 for ReluOp {
    fn name(&self) -> &'static str {
        "fast-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, "relu input")?;
        Ok((CpuStorage::F32(relu_forward(x)), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if !arg.track_op() {
            return Ok(None);
        }
        let dx = with_data(res, |y| with_data(grad, |dy| Ok(relu_backward(y, dy))))?;
        Ok(Some(tensor_from(dx, arg.dims())?))
    }
}

/// The activation a fused op applies to its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    /// None: the op's plain output.
    Identity,
    /// `max(y, 0)`.
    Relu,
    /// `y * Phi(y)` with `Phi` the standard normal CDF ([`gelu`]).
    Gelu,
}

/// `e^x` for `x <= 0` (clamped at -87, where it is below f32's smallest normal), from
/// arithmetic only so that loops over it vectorise (libm's `expf` is a call per element):
/// `x = n ln 2 + r` with `n` rounded by the 1.5 * 2^23 trick, a degree-6 Taylor polynomial
/// for `e^r` (|r| <= ln2 / 2, relative error < 2e-7), and `2^n` built in the exponent bits.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.max(-87.0);
    let k = x * std::f32::consts::LOG2_E + MAGIC;
    let n = k - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let e = (k.to_bits() as i32 - MAGIC.to_bits() as i32 + 127) << 23;
    p * f32::from_bits(e as u32)
}

/// `(Phi(z), phi(z))`: the standard normal CDF and density at `z`. `Phi` from `erf` by
/// Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7, so < 7.5e-8 in `Phi`), which shares
/// its `e^(-z^2/2)` with the density.
#[inline(always)]
fn normal_cdf_pdf(z: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let x = z.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * x);
    // Past |z| = 12.65 both Phi's tail and the density are below 1e-34 and their products
    // would come out subnormal: exact zeros instead. Subnormal activations made every later
    // multiplication ~100x slower on x86 (a lenet epoch with GELU went from 2 s to 49 s when
    // its pre-activations drifted that far).
    let e = if z * z > 160.0 {
        0.0
    } else {
        exp_neg(-0.5 * z * z)
    };
    let q = 0.5 * t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4])))) * e;
    let cdf = if z >= 0.0 { 1.0 - q } else { q };
    (cdf, e * INV_SQRT_2PI)
}

/// GELU with the exact normal CDF, `z * Phi(z)` (PyTorch's default `nn.GELU()`, candle's
/// `gelu_erf`), to within 2e-7 of them times `|z|`.
#[inline(always)]
pub(crate) fn gelu(z: f32) -> f32 {
    z * normal_cdf_pdf(z).0
}

/// The derivative of [`gelu`]: `Phi(z) + z phi(z)`.
#[inline(always)]
pub(crate) fn gelu_grad(z: f32) -> f32 {
    let (cdf, pdf) = normal_cdf_pdf(z);
    cdf + z * pdf
}

/// Runs `f` compiled for AVX2 + FMA when the CPU has them (so the element loops it inlines
/// vectorise 8 wide), otherwise as built. `f` must be `#[inline(always)]` all the way down.
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if *AVX2.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
        {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { avx2(f) };
        }
    }
    f()
}

pub(crate) fn gelu_forward(x: &[f32]) -> Vec<f32> {
    let _t = prof::span("gelu forward");
    map_chunks(x.len(), |r, o| {
        simd(|| {
            for (o, &v) in o.iter_mut().zip(&x[r]) {
                *o = gelu(v);
            }
        })
    })
}

pub(crate) fn gelu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    let _t = prof::span("gelu backward");
    map_chunks(x.len(), |r, o| {
        simd(|| {
            for ((o, &v), &g) in o.iter_mut().zip(&x[r.clone()]).zip(&dy[r]) {
                *o = g * gelu_grad(v);
            }
        })
    })
}

/// GELU as one op; its backward pass reads the input (GELU is not invertible from its output).
pub(crate) struct GeluOp;

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "fast-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, "gelu input")?;
        Ok((CpuStorage::F32(gelu_forward(x)), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if !arg.track_op() {
            return Ok(None);
        }
        let dx = with_data(arg, |x| with_data(grad, |dy| Ok(gelu_backward(x, dy))))?;
        Ok(Some(tensor_from(dx, arg.dims())?))
    }
}
