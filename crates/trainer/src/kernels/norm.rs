//! Spatial batch normalisation (NCHW, affine) as one custom op with its own backward pass,
//! replacing candle-nn's chain of transposes, copies, broadcast ops and reductions. Each
//! channel is handled by one task: statistics and normalisation in two passes over the
//! channel's planes while they are in cache.
//!
//! Training mode normalises with the batch statistics (biased variance) and reports them so
//! the caller can update the running statistics (unbiased variance), as candle-nn and
//! PyTorch do; evaluation mode normalises with given statistics.

use super::eltwise::{gelu, gelu_grad, relu_masked_grad, simd, Act};
use super::util::{
    alloc_uninit, cpu_slice, par_for, prof, sum_and_centered_dot, sum_and_squares, tensor_from,
    with_data, SyncPtr,
};
use candle_core::{bail, CpuStorage, Layout, Result, Shape, Tensor};
use std::sync::{Arc, Mutex};

/// Per-channel statistics: mean and biased variance.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

/// Input gradient (if wanted), scale gradient, shift gradient.
type Grads = (Option<Vec<f32>>, Vec<f32>, Vec<f32>);

pub(crate) struct BatchNormOp {
    pub eps: f64,
    /// Evaluation mode: normalise with these statistics. Training mode: `None`.
    pub fixed: Option<Stats>,
    /// Training mode: the batch statistics of the forward pass land here.
    pub batch: Arc<Mutex<Stats>>,
    /// The activation applied to the normalised output: ReLU's backward pass masks the
    /// gradient with `y > 0` first; GELU's recomputes the normalised input from `x` and the
    /// statistics (nothing more kept alive) and multiplies by its derivative.
    pub act: Act,
}

fn dims(d: &[usize]) -> Result<(usize, usize, usize)> {
    let &[n, c, h, w] = d else {
        bail!("batch_norm: expected a 4-d input, got {d:?}");
    };
    Ok((n, c, h * w))
}

/// Sum and sum of squares (f64) of channel `ch` over all images.
fn channel_sums(x: &[f32], n: usize, c: usize, hw: usize, ch: usize) -> (f64, f64) {
    let (mut s, mut q) = (0f64, 0f64);
    for i in 0..n {
        let plane = &x[(i * c + ch) * hw..(i * c + ch + 1) * hw];
        // f32 partial sums over a plane (at most a few thousand values), f64 across planes.
        let (ps, pq) = sum_and_squares(plane);
        s += ps as f64;
        q += pq as f64;
    }
    (s, q)
}

impl BatchNormOp {
    /// The statistics used for channel `ch` (batch ones are computed here).
    fn channel_stats(&self, x: &[f32], n: usize, c: usize, hw: usize, ch: usize) -> (f32, f32) {
        match &self.fixed {
            Some(st) => (st.mean[ch], st.var[ch]),
            None => {
                let m = (n * hw) as f64;
                let (s, q) = channel_sums(x, n, c, hw, ch);
                let mean = s / m;
                ((mean) as f32, (q / m - mean * mean).max(0.0) as f32)
            }
        }
    }

    pub(crate) fn forward(&self, x: &[f32], g: &[f32], b: &[f32], d: &[usize]) -> Result<Vec<f32>> {
        let _t = prof::span("batch_norm forward");
        let (n, c, hw) = dims(d)?;
        // Every element is written by its channel's task.
        let mut y = alloc_uninit(x.len());
        let yp = SyncPtr(y.as_mut_ptr());
        let mean = Mutex::new(vec![0f32; c]);
        let var = Mutex::new(vec![0f32; c]);
        par_for(c, |ch| {
            let (mu, v) = self.channel_stats(x, n, c, hw, ch);
            let inv = 1.0 / (v as f64 + self.eps).sqrt() as f32;
            let scale = g[ch] * inv;
            let shift = b[ch] - mu * scale;
            for i in 0..n {
                let off = (i * c + ch) * hw;
                // SAFETY: channel ch's planes are written by this task only.
                let yo = unsafe { yp.slice(off, hw) };
                let xs = &x[off..off + hw];
                match self.act {
                    Act::Identity => {
                        for (o, &v) in yo.iter_mut().zip(xs) {
                            *o = v * scale + shift;
                        }
                    }
                    Act::Relu => {
                        for (o, &v) in yo.iter_mut().zip(xs) {
                            *o = (v * scale + shift).max(0.0);
                        }
                    }
                    Act::Gelu => simd(|| {
                        for (o, &v) in yo.iter_mut().zip(xs) {
                            *o = gelu(v * scale + shift);
                        }
                    }),
                }
            }
            mean.lock().unwrap()[ch] = mu;
            var.lock().unwrap()[ch] = v;
        });
        if self.fixed.is_none() {
            *self.batch.lock().unwrap() = Stats {
                mean: mean.into_inner().unwrap(),
                var: var.into_inner().unwrap(),
            };
        }
        Ok(y)
    }

    /// Gradients of input, scale and shift.
    pub(crate) fn backward(
        &self,
        x: &[f32],
        g: &[f32],
        beta: &[f32],
        dy: &[f32],
        d: &[usize],
        need_dx: bool,
    ) -> Result<Grads> {
        let _t = prof::span("batch_norm backward");
        let (n, c, hw) = dims(d)?;
        let stats = match &self.fixed {
            Some(s) => s.clone(),
            None => self.batch.lock().unwrap().clone(),
        };
        if stats.mean.len() != c {
            bail!("batch_norm backward: no statistics from the forward pass");
        }
        let m = (n * hw) as f32;
        // Every element is written by its channel's task.
        // GELU's first pass writes its gradient into dx's planes, wanted or not.
        let mut dx = if need_dx || self.act == Act::Gelu {
            alloc_uninit(x.len())
        } else {
            Vec::new()
        };
        let dxp = SyncPtr(dx.as_mut_ptr());
        let dg = Mutex::new(vec![0f32; c]);
        let db = Mutex::new(vec![0f32; c]);
        let train = self.fixed.is_none();
        par_for(c, |ch| {
            let (mu, inv) = (
                stats.mean[ch],
                1.0 / (stats.var[ch] as f64 + self.eps).sqrt() as f32,
            );
            // GELU's input, as the forward pass computed it: x * scale + shift.
            let scale = g[ch] * inv;
            let shift = beta[ch] - mu * scale;
            let (mut sdy, mut sdyx) = (0f64, 0f64);
            for i in 0..n {
                let off = (i * c + ch) * hw;
                let (a, b) = if self.act == Act::Gelu {
                    // dy through GELU, into dx's planes (the second pass reads it there).
                    // SAFETY: channel ch's planes are written by this task only.
                    let dz = unsafe { dxp.slice(off, hw) };
                    // Two loops: the first has no reduction, so it vectorises.
                    simd(|| {
                        for ((o, &xv), &gv) in
                            dz.iter_mut().zip(&x[off..off + hw]).zip(&dy[off..off + hw])
                        {
                            *o = gv * gelu_grad(xv * scale + shift);
                        }
                    });
                    sum_and_centered_dot(dz, &x[off..off + hw], mu)
                } else {
                    sum_and_centered_dot(&dy[off..off + hw], &x[off..off + hw], mu)
                };
                sdy += a as f64;
                sdyx += b as f64;
            }
            // dbeta = sum dy, dgamma = sum dy * xhat.
            let dbeta = sdy as f32;
            let dgamma = (sdyx * inv as f64) as f32;
            if need_dx {
                let k = g[ch] * inv;
                // train: dx = k * (dy - dbeta / m - xhat * dgamma / m); eval: dx = k * dy.
                let (c0, c1) = if train {
                    (dbeta / m, dgamma / m * inv)
                } else {
                    (0.0, 0.0)
                };
                for i in 0..n {
                    let off = (i * c + ch) * hw;
                    // SAFETY: channel ch's planes are written by this task only.
                    let o = unsafe { dxp.slice(off, hw) };
                    if self.act == Act::Gelu {
                        // `o` holds dy through GELU (first pass).
                        for (o, &xv) in o.iter_mut().zip(&x[off..off + hw]) {
                            *o = k * (*o - c0 - (xv - mu) * c1);
                        }
                    } else {
                        for ((o, &xv), &gv) in
                            o.iter_mut().zip(&x[off..off + hw]).zip(&dy[off..off + hw])
                        {
                            *o = k * (gv - c0 - (xv - mu) * c1);
                        }
                    }
                }
            }
            dg.lock().unwrap()[ch] = dgamma;
            db.lock().unwrap()[ch] = dbeta;
        });
        Ok((
            need_dx.then_some(dx),
            dg.into_inner().unwrap(),
            db.into_inner().unwrap(),
        ))
    }
}

impl BatchNormOp {
    /// The op's forward pass on candle's storage: shapes checked, then [`Self::forward`].
    fn fwd(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        (s3, l3): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, _) = dims(l1.dims())?;
        if l2.dims() != [c] || l3.dims() != [c] {
            bail!(
                "batch_norm: scale/shift shapes {:?}/{:?}, expected [{c}]",
                l2.dims(),
                l3.dims()
            );
        }
        let y = self.forward(
            cpu_slice(s1, l1, "batch_norm input")?,
            cpu_slice(s2, l2, "batch_norm scale")?,
            cpu_slice(s3, l3, "batch_norm shift")?,
            l1.dims(),
        )?;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    /// The op's backward pass on tensors: [`Self::backward`], and only the gradients wanted.
    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let need_dx = x.track_op();
        let masked = relu_masked_grad(self.act == Act::Relu, res, grad)?;
        let grad = masked.as_ref().unwrap_or(grad);
        let (dx, dg, db) = with_data(x, |xs| {
            with_data(g, |gs| {
                with_data(b, |bs| {
                    with_data(grad, |dy| self.backward(xs, gs, bs, dy, x.dims(), need_dx))
                })
            })
        })?;
        let dx = match dx {
            Some(v) => Some(tensor_from(v, x.dims())?),
            None => None,
        };
        let dg = if g.track_op() {
            Some(tensor_from(dg, g.dims())?)
        } else {
            None
        };
        let db = if b.track_op() {
            Some(tensor_from(db, b.dims())?)
        } else {
            None
        };
        Ok((dx, dg, db))
    }
}

custom_ops!(BatchNormOp, "fast-batch-norm");
