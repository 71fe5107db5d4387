//! Tutorial model 2: three 3x3 convolutions and a dropout MLP (581,866 parameters).

use super::{Arch, Conv2d, Dropout, DropoutRng, Linear, Model};
use crate::config::{Activation, TrainConfig};
use crate::kernels::max_pool2d;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

pub const ARCH: Arch = Arch {
    name: "cnn3",
    description: "conv 3-16-32-64 (k3) + linear 1024-512-64-10 with dropout; tutorial model 2",
    params: 581_866,
    build,
};

struct Cnn3 {
    convs: [Conv2d; 3],
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
    dropout: Dropout,
    rng: DropoutRng,
    act: Activation,
}

fn build(vb: VarBuilder, cfg: &TrainConfig) -> Result<Box<dyn Model>> {
    let rng = DropoutRng::new(cfg.seed);
    Ok(Box::new(Cnn3 {
        convs: [
            Conv2d::new(vb.pp("conv1"), 3, 16, 3, 1)?.with_precision(cfg.precision),
            Conv2d::new(vb.pp("conv2"), 16, 32, 3, 1)?.with_precision(cfg.precision),
            Conv2d::new(vb.pp("conv3"), 32, 64, 3, 1)?.with_precision(cfg.precision),
        ],
        fc1: Linear::new(vb.pp("fc1"), 64 * 4 * 4, 512)?.with_precision(cfg.precision),
        fc2: Linear::new(vb.pp("fc2"), 512, 64)?.with_precision(cfg.precision),
        fc3: Linear::new(vb.pp("fc3"), 64, 10)?.with_precision(cfg.precision),
        dropout: Dropout::new(cfg.dropout, false, rng.clone()),
        rng,
        act: cfg.activation,
    }))
}

impl Model for Cnn3 {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for conv in &self.convs {
            x = max_pool2d(&conv.forward_act(&x, self.act)?, 2)?;
        }
        let x = x.flatten_from(1)?;
        let x = self
            .dropout
            .forward_t(&self.fc1.forward_act(&x, self.act)?, train)?;
        let x = self
            .dropout
            .forward_t(&self.fc2.forward_act(&x, self.act)?, train)?;
        self.fc3.forward(&x)
    }

    fn reseed(&self, seed: u64) {
        self.rng.reseed(seed)
    }
}
