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
