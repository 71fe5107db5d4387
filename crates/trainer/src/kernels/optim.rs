//! Fused, in-place SGD update (weight decay, momentum, Nesterov) for f32 CPU parameters: one
//! pass over parameter, gradient and momentum buffer instead of candle's chain of temporaries
//! and a final copy.

use super::util::{cpu_slice, par_for, SyncPtr};
use candle_core::{bail, CpuStorage, InplaceOp2, InplaceOp3, Layout, Result};

/// Elements per parallel task (smaller updates run on the calling thread).
const CHUNK: usize = 1 << 17;

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [f32]> {
    let v = match s {
        CpuStorage::F32(v) => v,
        _ => bail!("{what}: fast CPU kernels only take f32"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&mut v[a..b]),
        None => bail!("{what}: fast CPU kernels need contiguous tensors"),
    }
}

/// `f(range, dst[range])` in parallel chunks.
fn chunked(dst: &mut [f32], f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync) {
    let len = dst.len();
    let p = SyncPtr(dst.as_mut_ptr());
    par_for(len.div_ceil(CHUNK), |t| {
        let r = t * CHUNK..((t + 1) * CHUNK).min(len);
        // SAFETY: task t owns r.
        f(r.clone(), unsafe { p.slice(r.start, r.len()) });
    });
}

/// Without momentum: `p -= lr * (g + wd * p)`.
pub(crate) struct SgdPlain {
    pub lr: f32,
    pub wd: f32,
}

impl InplaceOp2 for SgdPlain {
    fn name(&self) -> &'static str {
        "fast-sgd"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let p = slice_mut(s1, l1, "sgd parameter")?;
        let g = cpu_slice(s2, l2, "sgd gradient")?;
        if p.len() != g.len() {
            bail!(
                "sgd: parameter has {} elements, gradient {}",
                p.len(),
                g.len()
            );
        }
        let (lr, wd) = (self.lr, self.wd);
        chunked(p, |r, p| {
            for (p, &g) in p.iter_mut().zip(&g[r]) {
                *p -= lr * (g + wd * *p);
            }
        });
        Ok(())
    }
}

/// Momentum buffer update: `buf = momentum * buf + g + wd * p` (dst is the buffer; sources are
/// gradient and parameter).
pub(crate) struct SgdMomentumBuf {
    pub momentum: f32,
    pub wd: f32,
}

impl InplaceOp3 for SgdMomentumBuf {
    fn name(&self) -> &'static str {
        "fast-sgd-momentum-buffer"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let b = slice_mut(s1, l1, "sgd momentum buffer")?;
        let g = cpu_slice(s2, l2, "sgd gradient")?;
        let p = cpu_slice(s3, l3, "sgd parameter")?;
        if b.len() != g.len() || b.len() != p.len() {
            bail!("sgd: buffer, gradient and parameter sizes differ");
        }
        let (m, wd) = (self.momentum, self.wd);
        chunked(b, |r, b| {
            for ((b, &g), &p) in b.iter_mut().zip(&g[r.clone()]).zip(&p[r]) {
                *b = m * *b + g + wd * p;
            }
        });
        Ok(())
    }
}

/// Parameter update with momentum (dst is the parameter; sources are the updated buffer and
/// the gradient): `p -= lr * buf`, or with Nesterov `p -= lr * (g + wd * p + momentum * buf)`.
pub(crate) struct SgdMomentumStep {
    pub lr: f32,
    pub momentum: f32,
    pub wd: f32,
    pub nesterov: bool,
}

impl InplaceOp3 for SgdMomentumStep {
    fn name(&self) -> &'static str {
        "fast-sgd-momentum-step"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let p = slice_mut(s1, l1, "sgd parameter")?;
        let b = cpu_slice(s2, l2, "sgd momentum buffer")?;
        let g = cpu_slice(s3, l3, "sgd gradient")?;
        if b.len() != g.len() || b.len() != p.len() {
            bail!("sgd: buffer, gradient and parameter sizes differ");
        }
        let (lr, m, wd) = (self.lr, self.momentum, self.wd);
        if self.nesterov {
            chunked(p, |r, p| {
                for ((p, &b), &g) in p.iter_mut().zip(&b[r.clone()]).zip(&g[r]) {
                    *p -= lr * (g + wd * *p + m * b);
                }
            });
        } else {
            chunked(p, |r, p| {
                for (p, &b) in p.iter_mut().zip(&b[r]) {
                    *p -= lr * b;
                }
            });
        }
        Ok(())
    }
}

/// Adam moment update (dst is the moment; sources are gradient and parameter):
/// `m = beta * m + (1 - beta) * d` for the first moment, `d * d` in place of `d` for the
/// second, where `d = g + l2 * p` (Adam's L2 term; 0 for AdamW).
pub(crate) struct AdamMoment {
    pub beta: f32,
    pub one_minus_beta: f32,
    pub l2: f32,
    pub square: bool,
}

impl InplaceOp3 for AdamMoment {
    fn name(&self) -> &'static str {
        "fast-adam-moment"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let m = slice_mut(s1, l1, "adam moment")?;
        let g = cpu_slice(s2, l2, "adam gradient")?;
        let p = cpu_slice(s3, l3, "adam parameter")?;
        if m.len() != g.len() || m.len() != p.len() {
            bail!("adam: moment, gradient and parameter sizes differ");
        }
        let (beta, omb, wd) = (self.beta, self.one_minus_beta, self.l2);
        // Two loops rather than a branch per element, so each vectorises.
        if self.square {
            chunked(m, |r, m| {
                for ((m, &g), &p) in m.iter_mut().zip(&g[r.clone()]).zip(&p[r]) {
                    let d = g + wd * p;
                    *m = beta * *m + omb * (d * d);
                }
            });
        } else {
            chunked(m, |r, m| {
                for ((m, &g), &p) in m.iter_mut().zip(&g[r.clone()]).zip(&p[r]) {
                    *m = beta * *m + omb * (g + wd * p);
                }
            });
        }
        Ok(())
    }
}

/// Adam parameter update (dst is the parameter; sources are the updated moments):
/// `p = p * decay - lr * (m * c1) / (sqrt(v * c2) + eps)` with the bias corrections
/// `c1 = 1 / (1 - beta1^t)`, `c2 = 1 / (1 - beta2^t)` and `decay = 1 - lr * wd` for AdamW.
#[derive(Clone, Copy)]
pub(crate) struct AdamStep {
    pub lr: f32,
    pub c1: f32,
    pub c2: f32,
    pub eps: f32,
    pub decay: f32,
}

impl InplaceOp3 for AdamStep {
    fn name(&self) -> &'static str {
        "fast-adam-step"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let p = slice_mut(s1, l1, "adam parameter")?;
        let m = cpu_slice(s2, l2, "adam first moment")?;
        let v = cpu_slice(s3, l3, "adam second moment")?;
        if m.len() != p.len() || v.len() != p.len() {
            bail!("adam: parameter and moment sizes differ");
        }
        let AdamStep {
            lr,
            c1,
            c2,
            eps,
            decay,
        } = *self;
        chunked(p, |r, p| {
            for ((p, &m), &v) in p.iter_mut().zip(&m[r.clone()]).zip(&v[r]) {
                *p = *p * decay - lr * (m * c1) / ((v * c2).sqrt() + eps);
            }
        });
        Ok(())
    }
}
