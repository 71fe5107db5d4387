//! Layer primitives the models call. On the CPU (f32) these are fast custom ops with their
//! own backward pass (issue #4); on every other device and dtype, and as the reference the
//! kernels are tested against, they are candle's own operations.
//!
//! Contract used by `crate::models` (keep the signatures stable):
//! - `conv2d(x, w, b, padding, stride)`: x `[N, C, H, W]`, w `[O, C, KH, KW]`, b `[O]`.
//! - `max_pool2d(x, k)`: k x k window, stride k.
//! - `relu(x)`, `linear(x, w, b)` with w `[O, I]` as in `candle_nn::Linear`.
//!
//! Gradients nobody needs are skipped: a custom op's backward pass only computes the gradient
//! of an argument that is a variable or derives from one (`Tensor::track_op`). The input
//! image batch is a plain tensor, so the first convolution never computes an input gradient;
//! frozen weights (plain tensors) get no weight gradient either.
//!
//! Memory: the first fast kernel call tunes glibc's allocator so that freed buffers are reused
//! rather than returned to the kernel and faulted back in every step (see
//! `util::tune_allocator_once`; `CIFAR_SWEEP_MALLOC_TUNE=0` opts out).
//!
//! Switching: the fast kernels are on by default; `CIFAR_SWEEP_KERNELS=candle` (read once)
//! or [`set_enabled`]`(false)` selects candle's implementation everywhere.

#[macro_use]
mod glue;
mod conv;
#[cfg(feature = "cudnn")]
mod cudnn;
mod direct;
mod eltwise;
mod linear;
mod norm;
mod optim;
mod pool;
mod pool_threads;
mod util;
#[cfg(target_arch = "x86_64")]
mod winograd;

#[cfg(test)]
mod tests;

use candle_core::{DType, Result, Tensor};
use eltwise::Act;
use std::sync::atomic::{AtomicU8, Ordering};

const UNSET: u8 = 0;
const FAST: u8 = 1;
const REFERENCE: u8 = 2;
static MODE: AtomicU8 = AtomicU8::new(UNSET);

/// Turns the fast CPU kernels on or off for the whole process (overrides the environment).
pub fn set_enabled(on: bool) {
    MODE.store(if on { FAST } else { REFERENCE }, Ordering::Relaxed);
}

/// Whether the fast CPU kernels are in use: [`set_enabled`] if called, otherwise on unless
/// `CIFAR_SWEEP_KERNELS` is `candle` (or `reference`, `stock`, `off`).
pub fn enabled() -> bool {
    match MODE.load(Ordering::Relaxed) {
        FAST => true,
        REFERENCE => false,
        _ => {
            let off = std::env::var("CIFAR_SWEEP_KERNELS").is_ok_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "candle" | "reference" | "stock" | "off"
                )
            });
            let _ = MODE.compare_exchange(
                UNSET,
                if off { REFERENCE } else { FAST },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            MODE.load(Ordering::Relaxed) == FAST
        }
    }
}

/// Forces the convolution algorithm of the fast path, for benchmarks: `"gemm"` (im2col +
/// GEMM), `"direct"` (AVX-512 direct kernels where they apply), `"winograd"` (F(4x4, 3x3)
/// where it applies, direct kernels elsewhere) or `"auto"` (per layer shape, the default). Also settable with `CIFAR_SWEEP_CONV`.
pub fn set_conv_algorithm(name: &str) -> Result<()> {
    let a = match name {
        "gemm" => conv::Algo::Gemm,
        "direct" => conv::Algo::Direct,
        "winograd" => conv::Algo::Winograd,
        "auto" => conv::Algo::Auto,
        _ => candle_core::bail!(
            "unknown convolution algorithm {name:?} (gemm, direct, winograd, auto)"
        ),
    };
    conv::set_algo(a);
    Ok(())
}

/// Threads the fast kernels use, the caller included (`CIFAR_SWEEP_THREADS`, else
/// `RAYON_NUM_THREADS`, else the number of physical cores).
pub fn num_threads() -> usize {
    util::num_threads()
}

/// The fast path applies to f32 tensors on the CPU.
fn fast_for(ts: &[&Tensor]) -> bool {
    let fast = enabled()
        && ts
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32);
    if fast {
        util::tune_allocator_once();
    }
    fast
}

/// Convolution with an optional per-output-channel bias.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    padding: usize,
    stride: usize,
) -> Result<Tensor> {
    #[cfg(feature = "cudnn")]
    if cudnn::applies(x, w, stride) {
        return cudnn::conv2d(x, w, b, padding);
    }
    if fast_for(&[x, w]) && b.is_none_or(|b| fast_for(&[b])) {
        fast::conv2d(x, w, b, padding, stride)
    } else {
        reference::conv2d(x, w, b, padding, stride)
    }
}

/// Non-overlapping k x k max pooling.
pub fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    if fast_for(&[x]) {
        fast::max_pool2d(x, k)
    } else {
        reference::max_pool2d(x, k)
    }
}

/// `max(x, 0)`, with gradient 0 at 0 on the fast path (PyTorch's convention).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if fast_for(&[x]) {
        fast::relu(x)
    } else {
        reference::relu(x)
    }
}

/// `relu(conv2d(x, w, b, padding, stride))` as one op on the CPU (the ReLU is applied as the
/// convolution's output is written, and its backward pass folded into the convolution's):
/// one graph node and one pass over the activations fewer than the two calls.
pub fn conv2d_relu(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    padding: usize,
    stride: usize,
) -> Result<Tensor> {
    if fast_for(&[x, w]) && b.is_none_or(|b| fast_for(&[b])) {
        fast::conv2d_with(x, w, b, padding, stride, conv::algo(), true)
    } else {
        relu(&conv2d(x, w, b, padding, stride)?)
    }
}

/// `relu(linear(x, w, b))` as one op on the CPU (see [`conv2d_relu`]).
pub fn linear_relu(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    if fast_for(&[x, w]) && b.is_none_or(|b| fast_for(&[b])) && x.rank() == 2 {
        fast::linear_with(x, w, b, true)
    } else {
        relu(&reference::linear(x, w, b)?)
    }
}

/// `x @ w^T + b`, x `[N, I]`.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    if fast_for(&[x, w]) && b.is_none_or(|b| fast_for(&[b])) && x.rank() == 2 {
        fast::linear(x, w, b)
    } else {
        reference::linear(x, w, b)
    }
}

/// Spatial batch normalisation with the parameters and running statistics of a candle-nn
/// [`BatchNorm`](candle_nn::BatchNorm) (x `[N, C, H, W]`): the same result as
/// `bn.forward_t(x, train)`, including the running-statistics update in training mode
/// (momentum `bn.momentum()`, unbiased variance), as one fused op on the CPU. Falls back to
/// `forward_t` off the CPU, for other dtypes, other ranks and non-affine batch norms. Assumes
/// the default `remove_mean` configuration (candle-nn does not expose it).
pub fn batch_norm(bn: &candle_nn::BatchNorm, x: &Tensor, train: bool) -> Result<Tensor> {
    match bn.weight_and_bias() {
        Some((g, b)) if x.rank() == 4 && fast_for(&[x, g, b]) => {
            fast::batch_norm(bn, g, b, x, train, Act::Identity)
        }
        _ => candle_nn::ModuleT::forward_t(bn, x, train),
    }
}

/// `relu(batch_norm(bn, x, train))` as one op on the CPU (see [`batch_norm`] and
/// [`conv2d_relu`]).
pub fn batch_norm_relu(bn: &candle_nn::BatchNorm, x: &Tensor, train: bool) -> Result<Tensor> {
    match bn.weight_and_bias() {
        Some((g, b)) if x.rank() == 4 && fast_for(&[x, g, b]) => {
            fast::batch_norm(bn, g, b, x, train, Act::Relu)
        }
        _ => relu(&candle_nn::ModuleT::forward_t(bn, x, train)?),
    }
}

/// GELU with the exact normal CDF (`x * (1 + erf(x / sqrt 2)) / 2`, PyTorch's default
/// `nn.GELU()`): on the CPU one op whose forward and backward passes are each one vectorised
/// pass (to within 2e-7 * |x| of the exact function); elsewhere candle's `gelu_erf`, whose
/// backward pass is a chain of a dozen element-wise tensor ops.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if fast_for(&[x]) {
        fast::gelu(x)
    } else {
        reference::gelu(x)
    }
}

/// `gelu(batch_norm(bn, x, train))` as one op on the CPU (see [`batch_norm`] and [`gelu`]):
/// the backward pass recomputes the normalised input from `x`, so no activation is kept for
/// it beyond the op's input.
pub fn batch_norm_gelu(bn: &candle_nn::BatchNorm, x: &Tensor, train: bool) -> Result<Tensor> {
    match bn.weight_and_bias() {
        Some((g, b)) if x.rank() == 4 && fast_for(&[x, g, b]) => {
            fast::batch_norm(bn, g, b, x, train, Act::Gelu)
        }
        _ => gelu(&candle_nn::ModuleT::forward_t(bn, x, train)?),
    }
}

/// One SGD step for one parameter, in place, as `trainer::optim` defines it:
/// `d = g + weight_decay * p`; with momentum `buf = momentum * buf + d` and
/// `d = nesterov ? d + momentum * buf : buf`; then `p -= lr * d`.
///
/// `momentum_buf` (required when `momentum != 0`, same shape as `param`) is updated in place; a
/// zero buffer reproduces the usual first step (`buf = d`). On the CPU with f32 tensors this is
/// one fused pass (two with momentum) and no allocation; elsewhere it is candle ops and
/// `Var::set`.
pub fn sgd_update(
    param: &candle_core::Var,
    grad: &Tensor,
    momentum_buf: Option<&candle_core::Var>,
    lr: f64,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
) -> Result<()> {
    let p = param.as_tensor();
    if momentum != 0.0 && momentum_buf.is_none() {
        candle_core::bail!("sgd_update: momentum {momentum} needs a momentum buffer");
    }
    let buf = momentum_buf.filter(|_| momentum != 0.0);
    let fast = fast_for(&[p, grad]) && buf.is_none_or(|b| fast_for(&[b.as_tensor()]));
    if fast && p.is_contiguous() {
        let g = grad.contiguous()?;
        let (lr32, m32, wd32) = (lr as f32, momentum as f32, weight_decay as f32);
        return match buf {
            None => p.inplace_op2(&g, &optim::SgdPlain { lr: lr32, wd: wd32 }),
            Some(b) => {
                let bt = b.as_tensor();
                bt.inplace_op3(
                    &g,
                    p,
                    &optim::SgdMomentumBuf {
                        momentum: m32,
                        wd: wd32,
                    },
                )?;
                p.inplace_op3(
                    bt,
                    &g,
                    &optim::SgdMomentumStep {
                        lr: lr32,
                        momentum: m32,
                        wd: wd32,
                        nesterov,
                    },
                )
            }
        };
    }
    let d = if weight_decay != 0.0 {
        (grad + (p * weight_decay)?)?
    } else {
        grad.clone()
    };
    let d = match buf {
        None => d,
        Some(b) => {
            let nb = ((b.as_tensor() * momentum)? + &d)?;
            b.set(&nb)?;
            if nesterov {
                (d + (nb * momentum)?)?
            } else {
                nb
            }
        }
    };
    param.set(&(p - (d * lr)?)?)
}

/// The constants of one Adam step (see [`adam_update`]).
#[derive(Clone, Copy, Debug)]
pub struct AdamStepConfig {
    /// The learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the denominator's square root.
    pub eps: f64,
    /// The step number, from 1 (bias correction).
    pub step: u64,
    /// L2 (Adam) or decoupled (AdamW) weight decay.
    pub weight_decay: f64,
    /// AdamW: decay the weight (`p *= 1 - lr * weight_decay`) instead of adding
    /// `weight_decay * p` to the gradient.
    pub decoupled: bool,
}

/// One Adam/AdamW step for one parameter, in place, with PyTorch's update rule:
/// `d = g (+ weight_decay * p for Adam)`, `m = b1 m + (1 - b1) d`, `v = b2 v + (1 - b2) d^2`,
/// `p = p (* (1 - lr wd) for AdamW) - lr m^ / (sqrt(v^) + eps)` with the bias-corrected
/// `m^ = m / (1 - b1^t)`, `v^ = v / (1 - b2^t)`.
///
/// `m` and `v` (same shape as `param`) are updated in place; zero buffers give the first step.
/// On the CPU with f32 tensors this is three fused passes and no allocation (candle's ops take
/// about a dozen passes and temporaries); elsewhere it is candle ops and `Var::set`.
pub fn adam_update(
    param: &candle_core::Var,
    grad: &Tensor,
    m: &candle_core::Var,
    v: &candle_core::Var,
    c: AdamStepConfig,
) -> Result<()> {
    let p = param.as_tensor();
    let t = i32::try_from(c.step.max(1)).unwrap_or(i32::MAX);
    let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
    let l2 = if c.decoupled { 0.0 } else { c.weight_decay };
    let decay = if c.decoupled {
        1.0 - c.lr * c.weight_decay
    } else {
        1.0
    };
    let fast = fast_for(&[p, grad, m.as_tensor(), v.as_tensor()]);
    if fast && p.is_contiguous() && m.is_contiguous() && v.is_contiguous() {
        let g = grad.contiguous()?;
        for (buf, beta, square) in [(m, c.beta1, false), (v, c.beta2, true)] {
            buf.as_tensor().inplace_op3(
                &g,
                p,
                &optim::AdamMoment {
                    beta: beta as f32,
                    one_minus_beta: (1.0 - beta) as f32,
                    l2: l2 as f32,
                    square,
                },
            )?;
        }
        return p.inplace_op3(
            m.as_tensor(),
            v.as_tensor(),
            &optim::AdamStep {
                lr: c.lr as f32,
                c1: (1.0 / bc1) as f32,
                c2: (1.0 / bc2) as f32,
                eps: c.eps as f32,
                decay: decay as f32,
            },
        );
    }
    let d = if l2 != 0.0 {
        (grad + (p * l2)?)?
    } else {
        grad.clone()
    };
    let nm = ((m.as_tensor() * c.beta1)? + (&d * (1.0 - c.beta1))?)?;
    let nv = ((v.as_tensor() * c.beta2)? + (d.sqr()? * (1.0 - c.beta2))?)?;
    let update = ((&nm / bc1)? / ((&nv / bc2)?.sqrt()? + c.eps)?)?;
    let decayed = if decay != 1.0 {
        (p * decay)?
    } else {
        p.clone()
    };
    m.set(&nm)?;
    v.set(&nv)?;
    param.set(&(decayed - (update * c.lr)?)?)
}

/// The CPU custom ops (f32, CPU tensors only).
pub(crate) mod fast {
    use super::eltwise::{Act, GeluOp};
    use super::norm::{BatchNormOp, Stats};
    use super::{conv::Conv2dOp, eltwise::ReluOp, linear::LinearOp, pool::MaxPool2dOp};
    use candle_core::{Result, Tensor, Var};
    use std::sync::{Arc, Mutex};

    pub(crate) fn batch_norm(
        bn: &candle_nn::BatchNorm,
        g: &Tensor,
        b: &Tensor,
        x: &Tensor,
        train: bool,
        act: Act,
    ) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let (x, g, b) = (x.contiguous()?, g.contiguous()?, b.contiguous()?);
        let batch = Arc::new(Mutex::new(Stats::default()));
        let fixed = if train {
            None
        } else {
            Some(Stats {
                mean: bn
                    .running_mean()
                    .to_dtype(candle_core::DType::F32)?
                    .to_vec1()?,
                var: bn
                    .running_var()
                    .to_dtype(candle_core::DType::F32)?
                    .to_vec1()?,
            })
        };
        let op = BatchNormOp {
            eps: bn.eps(),
            fixed,
            batch: batch.clone(),
            act,
        };
        let y = x.apply_op3(&g, &b, op)?;
        if train {
            let st = batch.lock().unwrap().clone();
            let m = bn.momentum();
            let cnt = (n * h * w) as f64;
            let unbias = if cnt > 1.0 { cnt / (cnt - 1.0) } else { 1.0 };
            let rm: Vec<f64> = bn
                .running_mean()
                .to_dtype(candle_core::DType::F64)?
                .to_vec1()?;
            let rv: Vec<f64> = bn
                .running_var()
                .to_dtype(candle_core::DType::F64)?
                .to_vec1()?;
            let new_m: Vec<f64> = (0..c)
                .map(|i| rm[i] * (1.0 - m) + st.mean[i] as f64 * m)
                .collect();
            let new_v: Vec<f64> = (0..c)
                .map(|i| rv[i] * (1.0 - m) + st.var[i] as f64 * unbias * m)
                .collect();
            for (t, v) in [(bn.running_mean(), new_m), (bn.running_var(), new_v)] {
                let v = Tensor::from_vec(v, c, t.device())?.to_dtype(t.dtype())?;
                Var::from_tensor(t)?.set(&v)?;
            }
        }
        Ok(y)
    }

    pub(crate) fn conv2d(
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        padding: usize,
        stride: usize,
    ) -> Result<Tensor> {
        conv2d_with(x, w, b, padding, stride, super::conv::algo(), false)
    }

    pub(crate) fn conv2d_with(
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        padding: usize,
        stride: usize,
        algo: super::conv::Algo,
        relu: bool,
    ) -> Result<Tensor> {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        let op = Conv2dOp {
            padding,
            stride,
            algo,
            relu,
        };
        match b {
            Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
            None => x.apply_op2(&w, op),
        }
    }

    pub(crate) fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
        x.contiguous()?.apply_op1(MaxPool2dOp { k })
    }

    pub(crate) fn relu(x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1(ReluOp)
    }

    pub(crate) fn gelu(x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1(GeluOp)
    }

    pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        linear_with(x, w, b, false)
    }

    pub(crate) fn linear_with(
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        relu: bool,
    ) -> Result<Tensor> {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        let op = LinearOp { relu };
        match b {
            Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
            None => x.apply_op2(&w, op),
        }
    }
}

/// candle's own operations: used off the CPU, when disabled, and as the test reference.
pub(crate) mod reference {
    use candle_core::{Result, Tensor};

    /// candle's `conv2d`. When the stride does not divide the padded extent evenly, candle's
    /// backward pass (a transposed convolution) returns an input gradient of the wrong shape,
    /// so then the input is padded and cropped to the rows and columns the windows cover first.
    pub(crate) fn conv2d(
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        padding: usize,
        stride: usize,
    ) -> Result<Tensor> {
        let (_, _, h, wd) = x.dims4()?;
        let (_, _, kh, kw) = w.dims4()?;
        let (hp, wp) = (h + 2 * padding, wd + 2 * padding);
        let uneven = stride > 1
            && hp >= kh
            && wp >= kw
            && ((hp - kh) % stride != 0 || (wp - kw) % stride != 0);
        let y = if uneven {
            let hc = (hp - kh) / stride * stride + kh;
            let wc = (wp - kw) / stride * stride + kw;
            x.pad_with_zeros(2, padding, padding)?
                .pad_with_zeros(3, padding, padding)?
                .narrow(2, 0, hc)?
                .narrow(3, 0, wc)?
                .conv2d(w, 0, stride, 1, 1)?
        } else {
            x.conv2d(w, padding, stride, 1, 1)?
        };
        match b {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }

    /// Max pooling from candle reductions: the rows and columns the windows cover, viewed as
    /// `[N, C, OH, k, OW, k]`, reduced with `max` twice. candle's own `max_pool2d` has a
    /// correct forward pass but its backward pass scales the gradient by `1 / k^2` (it
    /// multiplies by the window's share of maxima instead of dividing), so it is not used.
    /// Tied maxima each receive the full gradient.
    pub(crate) fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let (oh, ow) = (h / k, w / k);
        let x = if oh * k != h || ow * k != w {
            x.narrow(2, 0, oh * k)?.narrow(3, 0, ow * k)?
        } else {
            x.clone()
        };
        x.reshape((n, c, oh, k, ow, k))?
            .max_keepdim(5)?
            .max_keepdim(3)?
            .reshape((n, c, oh, ow))
    }

    pub(crate) fn relu(x: &Tensor) -> Result<Tensor> {
        x.relu()
    }

    pub(crate) fn gelu(x: &Tensor) -> Result<Tensor> {
        x.gelu_erf()
    }

    pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let y = x.matmul(&w.t()?)?;
        match b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Per-kernel timing, for benchmarks: off by default.
pub mod profile {
    use super::util::prof;
    use std::sync::atomic::Ordering;

    /// One kernel phase's totals since the last [`take`].
    #[derive(Clone, Debug)]
    pub struct Entry {
        /// The kernel and phase.
        pub name: String,
        /// Wall-clock seconds.
        pub wall: f64,
        /// CPU seconds of the calling thread (the kernel's helpers not included).
        pub cpu: f64,
        /// How many times it ran.
        pub calls: u64,
    }

    /// Starts (or stops) accumulating time per kernel and phase.
    pub fn enable(on: bool) {
        prof::ON.store(on, Ordering::Relaxed);
    }

    /// CPU time of the calling thread, in seconds.
    pub fn thread_cpu() -> f64 {
        prof::thread_cpu()
    }

    /// The accumulated entries since the last call, largest wall time first.
    pub fn take() -> Vec<Entry> {
        let mut s = prof::STATS.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<Entry> = s
            .drain(..)
            .map(|(n, wall, cpu, calls)| Entry {
                name: n.to_string(),
                wall,
                cpu,
                calls,
            })
            .collect();
        v.sort_by(|a, b| b.wall.total_cmp(&a.wall));
        v
    }
}
