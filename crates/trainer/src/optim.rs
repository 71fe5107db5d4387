//! Optimisers with PyTorch's update rules: SGD (momentum, Nesterov, weight decay), Adam
//! (L2 weight decay added to the gradient) and AdamW (decoupled weight decay).
//! candle-nn's SGD has none of SGD's options, and the state of all three must be saved in
//! checkpoints so a resumed run continues bit for bit.

use crate::config::{OptimizerKind, TrainConfig};
use crate::{kernels, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// SGD, Adam or AdamW over a fixed list of variables, with its state (momentum buffers,
/// moments, step) kept for checkpoints.
pub struct Optimizer {
    kind: OptimizerKind,
    vars: Vec<Var>,
    lr: f64,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    /// Adam's step count (bias correction).
    step: u64,
    /// SGD: momentum buffer; Adam: first moment. `None` until the variable's first step (a
    /// zero buffer then gives exactly the first step's rule). Updated in place.
    m: Vec<Option<Var>>,
    /// Adam: second moment.
    v: Vec<Option<Var>>,
    /// Per variable: its learning rate is `lr * scale` and its weight decay
    /// `weight_decay / scale` (the decay per step unchanged), airbench's `bias_scaler`.
    scale: Vec<f64>,
    /// Per variable: frozen for now (no update, no decay, momentum left as it is), like a
    /// PyTorch parameter with `requires_grad = False`; see [`Optimizer::set_frozen`].
    frozen: Vec<bool>,
}

impl Optimizer {
    /// `vars` in a stable order (see [`crate::models::sorted_vars`]): checkpoints store the
    /// state by position.
    pub fn new(cfg: &TrainConfig, vars: Vec<Var>) -> Result<Self> {
        let n = vars.len();
        Ok(Self {
            kind: cfg.optimizer,
            vars,
            lr: cfg.lr,
            momentum: cfg.momentum,
            nesterov: cfg.nesterov,
            weight_decay: cfg.weight_decay,
            step: 0,
            m: vec![None; n],
            v: vec![None; n],
            scale: vec![1.0; n],
            frozen: vec![false; n],
        })
    }

    /// Freezes (or thaws) variable `i`: a frozen variable is skipped by [`Optimizer::step`]
    /// as if it had no gradient (see [`crate::models::Model::frozen_after`]).
    pub fn set_frozen(&mut self, i: usize, frozen: bool) {
        self.frozen[i] = frozen;
    }

    /// Scales variable `i`'s learning rate by `scale` and divides its weight decay by it
    /// (see [`crate::config::TrainConfig::bn_bias_lr_scale`]).
    pub fn set_lr_scale(&mut self, i: usize, scale: f64) {
        self.scale[i] = scale;
    }

    /// The learning rate of the next step.
    pub fn learning_rate(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate (the schedule does, before every batch).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Computes the gradients of `loss` and applies one update.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// Adds the gradients in `more` of this optimiser's variables to those in `into` (the
    /// gradient of a batch from its micro-batches' gradients).
    pub fn accumulate(&self, into: &mut GradStore, more: &GradStore) -> Result<()> {
        for v in &self.vars {
            let t = v.as_tensor();
            if let Some(g) = more.get(t) {
                let sum = match into.get(t) {
                    Some(a) => (a + g)?,
                    None => g.clone(),
                };
                into.insert(t, sum);
            }
        }
        Ok(())
    }

    /// Applies one update. The arithmetic is `crate::kernels::{sgd_update, adam_update}`: fused
    /// in-place passes on the CPU (issue 4), candle ops elsewhere.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        for i in 0..self.vars.len() {
            let Some(g) = grads.get(self.vars[i].as_tensor()) else {
                // Batch-norm running statistics and frozen parameters have no gradient.
                continue;
            };
            if self.frozen[i] {
                continue;
            }
            let var = &self.vars[i];
            // Exactly `lr` and `weight_decay` at scale 1.
            let (lr, weight_decay) = (self.lr * self.scale[i], self.weight_decay / self.scale[i]);
            match self.kind {
                OptimizerKind::Sgd => {
                    let buf = if self.momentum != 0.0 {
                        Some(zeros_once(&mut self.m[i], var)?)
                    } else {
                        None
                    };
                    kernels::sgd_update(
                        var,
                        g,
                        buf,
                        lr,
                        self.momentum,
                        self.nesterov,
                        weight_decay,
                    )?;
                }
                OptimizerKind::Adam | OptimizerKind::Adamw => {
                    let m = zeros_once(&mut self.m[i], var)?;
                    let v = zeros_once(&mut self.v[i], var)?;
                    let c = kernels::AdamStepConfig {
                        lr,
                        beta1: BETA1,
                        beta2: BETA2,
                        eps: EPS,
                        step: self.step,
                        weight_decay,
                        decoupled: self.kind == OptimizerKind::Adamw,
                    };
                    kernels::adam_update(var, g, m, v, c)?;
                }
            }
        }
        Ok(())
    }

    /// The number of steps taken (Adam's bias correction counts from it).
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The optimiser's state as named tensors (for a safetensors checkpoint) and the step.
    /// The tensors are copies: the buffers themselves change in place at every step.
    pub fn state(&self) -> Result<(Vec<(String, Tensor)>, u64)> {
        let mut out = Vec::new();
        for (i, (m, v)) in self.m.iter().zip(&self.v).enumerate() {
            for (slot, buf) in [("m", m), ("v", v)] {
                if let Some(b) = buf {
                    out.push((format!("{slot}.{i}"), b.as_tensor().copy()?));
                }
            }
        }
        Ok((out, self.step))
    }

    /// Restores what [`Optimizer::state`] returned.
    pub fn load_state(&mut self, tensors: &[(String, Tensor)], step: u64) -> Result<()> {
        self.step = step;
        for (name, t) in tensors {
            let (slot, idx) = name
                .split_once('.')
                .and_then(|(s, i)| Some((s, i.parse::<usize>().ok()?)))
                .ok_or_else(|| crate::Error::Config(format!("bad optimiser state `{name}`")))?;
            if idx >= self.vars.len() || t.shape() != self.vars[idx].shape() {
                return Err(crate::Error::Config(format!(
                    "optimiser state `{name}` does not fit the model"
                )));
            }
            // A buffer of its own (`Var::from_tensor` shares a tensor that already is a
            // variable), since the optimiser writes it in place.
            let t = t.to_device(self.vars[idx].device())?;
            let t = Var::from_tensor(&if t.is_variable() { t.copy()? } else { t })?;
            match slot {
                "m" => self.m[idx] = Some(t),
                "v" => self.v[idx] = Some(t),
                _ => {
                    return Err(crate::Error::Config(format!(
                        "bad optimiser state `{name}`"
                    )))
                }
            }
        }
        Ok(())
    }
}

/// The buffer in `slot`, created as zeros shaped like `like` on first use.
fn zeros_once<'a>(slot: &'a mut Option<Var>, like: &Var) -> Result<&'a Var> {
    if slot.is_none() {
        *slot = Some(Var::zeros(like.shape(), like.dtype(), like.device())?);
    }
    Ok(slot.as_ref().expect("just set"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// One parameter p = [1, -2], loss = sum(p * c) with c = [0.5, 3] so grad = c.
    fn run(cfg: TrainConfig, steps: usize) -> Vec<f32> {
        let dev = Device::Cpu;
        let var = Var::new(&[1f32, -2.0], &dev).unwrap();
        let c = Tensor::new(&[0.5f32, 3.0], &dev).unwrap();
        let mut opt = Optimizer::new(&cfg, vec![var.clone()]).unwrap();
        for _ in 0..steps {
            let loss = (var.as_tensor() * &c).unwrap().sum_all().unwrap();
            opt.backward_step(&loss).unwrap();
        }
        var.as_tensor().to_vec1::<f32>().unwrap()
    }

    fn close(a: &[f32], b: &[f64]) {
        for (x, y) in a.iter().zip(b) {
            assert!((*x as f64 - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn a_scaled_variable_gets_lr_times_and_decay_over_the_scale() {
        // p = [1, -2], grad c = [0.5, 3], lr 0.1, weight decay 0.2, scale 4, no momentum:
        // p -= 0.4 * (c + 0.05 p).
        let dev = Device::Cpu;
        let cfg = TrainConfig {
            lr: 0.1,
            weight_decay: 0.2,
            ..Default::default()
        };
        let var = Var::new(&[1f32, -2.0], &dev).unwrap();
        let other = Var::new(&[1f32, -2.0], &dev).unwrap();
        let c = Tensor::new(&[0.5f32, 3.0], &dev).unwrap();
        let mut opt = Optimizer::new(&cfg, vec![var.clone(), other.clone()]).unwrap();
        opt.set_lr_scale(0, 4.0);
        let loss = ((var.as_tensor() * &c).unwrap().sum_all().unwrap()
            + (other.as_tensor() * &c).unwrap().sum_all().unwrap())
        .unwrap();
        opt.backward_step(&loss).unwrap();
        let p = [1.0f64, -2.0];
        let g = [0.5f64, 3.0];
        let want: Vec<f64> = (0..2).map(|i| p[i] - 0.4 * (g[i] + 0.05 * p[i])).collect();
        close(&var.as_tensor().to_vec1::<f32>().unwrap(), &want);
        let want: Vec<f64> = (0..2).map(|i| p[i] - 0.1 * (g[i] + 0.2 * p[i])).collect();
        close(&other.as_tensor().to_vec1::<f32>().unwrap(), &want);
    }

    #[test]
    fn plain_sgd() {
        let cfg = TrainConfig {
            lr: 0.1,
            ..Default::default()
        };
        // p - 2 * 0.1 * g
        close(&run(cfg, 2), &[1.0 - 0.1, -2.0 - 0.6]);
    }

    #[test]
    fn sgd_momentum_and_weight_decay() {
        let cfg = TrainConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
            ..Default::default()
        };
        // Hand-computed for p0 = 1, g = 0.5:
        // d1 = 0.5 + 0.01*1 = 0.51; buf1 = 0.51; p1 = 1 - 0.051 = 0.949
        // d2 = 0.5 + 0.00949 = 0.50949; buf2 = 0.9*0.51 + 0.50949 = 0.96849; p2 = 0.852151
        let p = run(cfg, 2);
        close(&p[..1], &[0.852151]);
    }

    #[test]
    fn sgd_nesterov() {
        let cfg = TrainConfig {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            ..Default::default()
        };
        // g = 0.5: buf1 = 0.5, d1 = 0.5 + 0.45 = 0.95, p1 = 0.905;
        // buf2 = 0.45 + 0.5 = 0.95, d2 = 0.5 + 0.855 = 1.355, p2 = 0.7695
        close(&run(cfg, 2)[..1], &[0.7695]);
    }

    #[test]
    fn adam_and_adamw() {
        let base = TrainConfig {
            lr: 0.01,
            optimizer: OptimizerKind::Adam,
            ..Default::default()
        };
        // Without weight decay Adam's first steps move by lr * sign(g) (bias correction).
        close(&run(base.clone(), 1), &[1.0 - 0.01, -2.0 - 0.01]);
        close(&run(base.clone(), 2), &[1.0 - 0.02, -2.0 - 0.02]);
        // AdamW decays the weight first: p1 = 1*(1 - 0.01*0.1) - 0.01 = 0.989
        let adamw = TrainConfig {
            optimizer: OptimizerKind::Adamw,
            weight_decay: 0.1,
            ..base.clone()
        };
        close(&run(adamw, 1)[..1], &[0.989]);
        // Adam's L2 term changes the gradient, not the step size, on step 1.
        let adam_wd = TrainConfig {
            weight_decay: 0.1,
            ..base
        };
        close(&run(adam_wd, 1)[..1], &[0.99]);
    }

    #[test]
    fn state_round_trips() {
        let cfg = TrainConfig {
            lr: 0.1,
            momentum: 0.9,
            ..Default::default()
        };
        let dev = Device::Cpu;
        let var = Var::new(&[1f32, -2.0], &dev).unwrap();
        let mut opt = Optimizer::new(&cfg, vec![var.clone()]).unwrap();
        let loss = var.as_tensor().sum_all().unwrap();
        opt.backward_step(&loss).unwrap();
        let (state, step) = opt.state().unwrap();
        let mut opt2 = Optimizer::new(&cfg, vec![var.clone()]).unwrap();
        opt2.load_state(&state, step).unwrap();
        assert_eq!(opt2.steps(), 1);
        assert_eq!(
            opt2.state().unwrap().0[0].1.to_vec1::<f32>().unwrap(),
            vec![1.0, 1.0]
        );
        assert!(opt2
            .load_state(&[("m.5".into(), state[0].1.clone())], 1)
            .is_err());
    }
}
