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
//! Switching: the fast kernels are on by default; `CIFAR_SWEEP_KERNELS=candle` (read once)
//! or [`set_enabled`]`(false)` selects candle's implementation everywhere.

mod conv;
mod eltwise;
mod linear;
mod pool;
mod util;

#[cfg(test)]
mod tests;

use candle_core::{DType, Result, Tensor};
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

/// The fast path applies to f32 tensors on the CPU.
fn fast_for(ts: &[&Tensor]) -> bool {
    enabled()
        && ts
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// Convolution with an optional per-output-channel bias.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    padding: usize,
    stride: usize,
) -> Result<Tensor> {
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

pub fn relu(x: &Tensor) -> Result<Tensor> {
    if fast_for(&[x]) {
        fast::relu(x)
    } else {
        reference::relu(x)
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

/// The CPU custom ops (f32, CPU tensors only).
pub(crate) mod fast {
    use super::{conv::Conv2dOp, eltwise::ReluOp, linear::LinearOp, pool::MaxPool2dOp};
    use candle_core::{Result, Tensor};

    pub(crate) fn conv2d(
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        padding: usize,
        stride: usize,
    ) -> Result<Tensor> {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        let op = Conv2dOp { padding, stride };
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

    pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        match b {
            Some(b) => x.apply_op3(&w, &b.contiguous()?, LinearOp),
            None => x.apply_op2(&w, LinearOp),
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

    pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let y = x.matmul(&w.t()?)?;
        match b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}
