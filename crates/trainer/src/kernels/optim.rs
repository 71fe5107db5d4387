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

/// The destination and the two sources of a three-tensor update, checked to be the same
/// length; `what` names them in errors (`[op, dst, src1, src2]`).
fn three<'a>(
    (s1, l1): (&'a mut CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
    (s3, l3): (&'a CpuStorage, &Layout),
    what: [&str; 4],
) -> Result<(&'a mut [f32], &'a [f32], &'a [f32])> {
    let d = slice_mut(s1, l1, what[1])?;
    let a = cpu_slice(s2, l2, what[2])?;
    let b = cpu_slice(s3, l3, what[3])?;
    if a.len() != d.len() || b.len() != d.len() {
        bail!(
            "{}: {}, {} and {} sizes differ",
            what[0],
            what[1],
            what[2],
            what[3]
        );
    }
    Ok((d, a, b))
}

/// `f(&mut dst[i], a[i], b[i])` for every i, in parallel chunks. Generic over `f` so each
/// caller's loop is compiled (and vectorised) on its own.
fn zip3(dst: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(&mut f32, f32, f32) + Sync) {
    chunked(dst, |r, d| {
        for ((d, &x), &y) in d.iter_mut().zip(&a[r.clone()]).zip(&b[r]) {
            f(d, x, y);
        }
    });
}

/// A fused in-place update of a destination from two sources of its length: what each
/// optimiser op says of itself, the rest (candle's `InplaceOp3`, the slices and their checks)
/// is [`inplace_op3!`]'s.
trait Update3: Sync {
    /// The op's name for candle.
    const NAME: &'static str;
    /// The names in errors: `[optimiser, dst, src1, src2]`.
    const WHAT: [&'static str; 4];
    /// The update over the checked slices.
    fn apply(&self, dst: &mut [f32], src1: &[f32], src2: &[f32]);
}

/// Implements candle's `InplaceOp3` for [`Update3`] types. A macro, as a blanket impl of a
/// foreign trait over a local trait is not allowed.
macro_rules! inplace_op3 {
    ($($op:ty),+) => {$(
        impl InplaceOp3 for $op {
            fn name(&self) -> &'static str {
                <$op as Update3>::NAME
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
                let (d, a, b) = three((s1, l1), (s2, l2), (s3, l3), <$op as Update3>::WHAT)?;
                self.apply(d, a, b);
                Ok(())
            }
        }
    )+};
}

inplace_op3!(SgdMomentumBuf, SgdMomentumStep, AdamMoment, AdamStep);

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

impl Update3 for SgdMomentumBuf {
    const NAME: &'static str = "fast-sgd-momentum-buffer";
    const WHAT: [&'static str; 4] = ["sgd", "momentum buffer", "gradient", "parameter"];
    fn apply(&self, b: &mut [f32], g: &[f32], p: &[f32]) {
        let (m, wd) = (self.momentum, self.wd);
        zip3(b, g, p, |b, g, p| *b = m * *b + g + wd * p);
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

impl Update3 for SgdMomentumStep {
    const NAME: &'static str = "fast-sgd-momentum-step";
    const WHAT: [&'static str; 4] = ["sgd", "parameter", "momentum buffer", "gradient"];
    fn apply(&self, p: &mut [f32], b: &[f32], g: &[f32]) {
        let (lr, m, wd) = (self.lr, self.momentum, self.wd);
        if self.nesterov {
            zip3(p, b, g, |p, b, g| *p -= lr * (g + wd * *p + m * b));
        } else {
            zip3(p, b, g, |p, b, _| *p -= lr * b);
        }
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

impl Update3 for AdamMoment {
    const NAME: &'static str = "fast-adam-moment";
    const WHAT: [&'static str; 4] = ["adam", "moment", "gradient", "parameter"];
    fn apply(&self, m: &mut [f32], g: &[f32], p: &[f32]) {
        let (beta, omb, wd) = (self.beta, self.one_minus_beta, self.l2);
        // Two loops rather than a branch per element, so each vectorises.
        if self.square {
            zip3(m, g, p, |m, g, p| {
                let d = g + wd * p;
                *m = beta * *m + omb * (d * d);
            });
        } else {
            zip3(m, g, p, |m, g, p| *m = beta * *m + omb * (g + wd * p));
        }
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

impl Update3 for AdamStep {
    const NAME: &'static str = "fast-adam-step";
    const WHAT: [&'static str; 4] = ["adam", "parameter", "first moment", "second moment"];
    fn apply(&self, p: &mut [f32], m: &[f32], v: &[f32]) {
        let AdamStep {
            lr,
            c1,
            c2,
            eps,
            decay,
        } = *self;
        zip3(p, m, v, |p, m, v| {
            *p = *p * decay - lr * (m * c1) / ((v * c2).sqrt() + eps);
        });
    }
}
