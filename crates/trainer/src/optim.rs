//! Optimisers with PyTorch's update rules: SGD (momentum, Nesterov, weight decay), Adam
//! (L2 weight decay added to the gradient) and AdamW (decoupled weight decay).
//! candle-nn's SGD has none of SGD's options, and the state of all three must be saved in
//! checkpoints so a resumed run continues bit for bit.

use crate::config::{OptimizerKind, TrainConfig};
use crate::Result;
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

pub struct Optimizer {
    kind: OptimizerKind,
    vars: Vec<Var>,
    lr: f64,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    /// Adam's step count (bias correction).
    step: u64,
    /// SGD: momentum buffer; Adam: first moment. `None` until the variable's first step.
    m: Vec<Option<Tensor>>,
    /// Adam: second moment.
    v: Vec<Option<Tensor>>,
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
        })
    }

    pub fn learning_rate(&self) -> f64 {
        self.lr
    }

    pub fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Computes the gradients of `loss` and applies one update.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        for i in 0..self.vars.len() {
            let Some(g) = grads.get(self.vars[i].as_tensor()) else {
                // Batch-norm running statistics and frozen parameters have no gradient.
                continue;
            };
            match self.kind {
                OptimizerKind::Sgd => self.sgd(i, g)?,
                OptimizerKind::Adam | OptimizerKind::Adamw => self.adam(i, g)?,
            }
        }
        Ok(())
    }

    fn sgd(&mut self, i: usize, g: &Tensor) -> Result<()> {
        let var = &self.vars[i];
        if self.momentum == 0.0 {
            // The same arithmetic as below, fused into one in-place pass on the CPU (issue 4).
            crate::kernels::sgd_update(var, g, None, self.lr, 0.0, false, self.weight_decay)?;
            return Ok(());
        }
        let p = var.as_tensor();
        let mut d = if self.weight_decay != 0.0 {
            (g + (p * self.weight_decay)?)?
        } else {
            g.clone()
        };
        if self.momentum != 0.0 {
            let buf = match &self.m[i] {
                None => d.clone(),
                Some(b) => ((b * self.momentum)? + &d)?,
            };
            d = if self.nesterov {
                (d + (&buf * self.momentum)?)?
            } else {
                buf.clone()
            };
            self.m[i] = Some(buf);
        }
        var.set(&(p - (d * self.lr)?)?)?;
        Ok(())
    }

    fn adam(&mut self, i: usize, g: &Tensor) -> Result<()> {
        let var = &self.vars[i];
        let mut p = var.as_tensor().clone();
        let g = match self.kind {
            OptimizerKind::Adam if self.weight_decay != 0.0 => (g + (&p * self.weight_decay)?)?,
            _ => g.clone(),
        };
        if self.kind == OptimizerKind::Adamw && self.weight_decay != 0.0 {
            p = (p * (1.0 - self.lr * self.weight_decay))?;
        }
        let m = match &self.m[i] {
            None => (&g * (1.0 - BETA1))?,
            Some(m) => ((m * BETA1)? + (&g * (1.0 - BETA1))?)?,
        };
        let v = match &self.v[i] {
            None => (g.sqr()? * (1.0 - BETA2))?,
            Some(v) => ((v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?,
        };
        let t = self.step as i32;
        let m_hat = (&m / (1.0 - BETA1.powi(t)))?;
        let v_hat = (&v / (1.0 - BETA2.powi(t)))?;
        let update = (m_hat / (v_hat.sqrt()? + EPS)?)?;
        var.set(&(p - (update * self.lr)?)?)?;
        self.m[i] = Some(m);
        self.v[i] = Some(v);
        Ok(())
    }

    /// The optimiser's state as named tensors (for a safetensors checkpoint) and the step.
    pub fn state(&self) -> (Vec<(String, Tensor)>, u64) {
        let mut out = Vec::new();
        for (i, (m, v)) in self.m.iter().zip(&self.v).enumerate() {
            if let Some(m) = m {
                out.push((format!("m.{i}"), m.clone()));
            }
            if let Some(v) = v {
                out.push((format!("v.{i}"), v.clone()));
            }
        }
        (out, self.step)
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
            let t = t.to_device(self.vars[idx].device())?;
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
        let (state, step) = opt.state();
        let mut opt2 = Optimizer::new(&cfg, vec![var.clone()]).unwrap();
        opt2.load_state(&state, step).unwrap();
        assert_eq!(opt2.state().1, 1);
        assert_eq!(
            opt2.state().0[0].1.to_vec1::<f32>().unwrap(),
            vec![1.0, 1.0]
        );
        assert!(opt2
            .load_state(&[("m.5".into(), state[0].1.clone())], 1)
            .is_err());
    }
}
