//! Layer primitives the models call. On the CPU these are meant to be fast custom ops with
//! their own backward pass (issue #4); on every other device, and as the reference the
//! kernels are tested against, they are candle's own operations.
//!
//! Contract used by `crate::models` (keep the signatures stable):
//! - `conv2d(x, w, b, padding, stride)`: x `[N, C, H, W]`, w `[O, C, KH, KW]`, b `[O]`.
//! - `max_pool2d(x, k)`: k x k window, stride k.
//! - `relu(x)`, `linear(x, w, b)` with w `[O, I]` as in `candle_nn::Linear`.

use candle_core::{Result, Tensor};

/// Convolution with an optional per-output-channel bias.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    padding: usize,
    stride: usize,
) -> Result<Tensor> {
    let y = x.conv2d(w, padding, stride, 1, 1)?;
    match b {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
        None => Ok(y),
    }
}

/// Non-overlapping k x k max pooling.
pub fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    x.max_pool2d(k)
}

pub fn relu(x: &Tensor) -> Result<Tensor> {
    x.relu()
}

/// `x @ w^T + b`, x `[N, I]`.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}
