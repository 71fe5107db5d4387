//! Tutorial model 1: a LeNet-style network (62,006 parameters).

use super::{Arch, Conv2d, Linear, Model};
use crate::config::{Activation, TrainConfig};
use crate::kernels::max_pool2d;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

pub const ARCH: Arch = Arch {
    name: "lenet",
    description: "conv 3-6-16 (k5) + linear 400-120-84-10; tutorial model 1",
    params: 62_006,
    build,
};

struct LeNet {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
    act: Activation,
}

fn build(vb: VarBuilder, cfg: &TrainConfig) -> Result<Box<dyn Model>> {
    Ok(Box::new(LeNet {
        conv1: Conv2d::new(vb.pp("conv1"), 3, 6, 5, 0)?.with_precision(cfg.precision),
        conv2: Conv2d::new(vb.pp("conv2"), 6, 16, 5, 0)?.with_precision(cfg.precision),
        fc1: Linear::new(vb.pp("fc1"), 16 * 5 * 5, 120)?.with_precision(cfg.precision),
        fc2: Linear::new(vb.pp("fc2"), 120, 84)?.with_precision(cfg.precision),
        fc3: Linear::new(vb.pp("fc3"), 84, 10)?.with_precision(cfg.precision),
        act: cfg.activation,
    }))
}

impl Model for LeNet {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let x = max_pool2d(&self.conv1.forward_act(x, self.act)?, 2)?;
        let x = max_pool2d(&self.conv2.forward_act(&x, self.act)?, 2)?;
        let x = x.flatten_from(1)?;
        let x = self.fc1.forward_act(&x, self.act)?;
        let x = self.fc2.forward_act(&x, self.act)?;
        self.fc3.forward(&x)
    }

    fn reseed(&self, _seed: u64) {}
}
