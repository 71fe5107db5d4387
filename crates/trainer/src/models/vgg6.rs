//! Tutorial model 3: a VGG-style network of three double-conv blocks (5,852,170 parameters).
//! The tutorial's listing lost its activation lines; this is its usual form: ReLU after
//! every conv, batch norm after the first conv of each block, spatial dropout 0.05 after
//! block 2, and dropout `cfg.dropout` around the first and last linear layers.

use super::{batch_norm_act, Arch, Conv2d, Dropout, DropoutRng, Linear, Model};
use crate::config::{Activation, TrainConfig};
use crate::kernels::max_pool2d;
use candle_core::{Result, Tensor};
use candle_nn::{BatchNorm, VarBuilder};

pub const ARCH: Arch = Arch {
    name: "vgg6",
    description: "3 blocks of two 3x3 convs (32-64, 128-128, 256-256) with batch norm + linear 4096-1024-512-10; tutorial model 3",
    params: 5_852_170,
    build,
};

struct Block {
    conv1: Conv2d,
    bn: BatchNorm,
    conv2: Conv2d,
    act: Activation,
}

impl Block {
    fn new(
        vb: VarBuilder,
        c_in: usize,
        c_mid: usize,
        c_out: usize,
        cfg: &TrainConfig,
    ) -> Result<Self> {
        Ok(Self {
            conv1: Conv2d::new(vb.pp("conv1"), c_in, c_mid, 3, 1)?.with_precision(cfg.precision),
            bn: candle_nn::batch_norm(c_mid, 1e-5, vb.pp("bn"))?,
            conv2: Conv2d::new(vb.pp("conv2"), c_mid, c_out, 3, 1)?.with_precision(cfg.precision),
            act: cfg.activation,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = batch_norm_act(&self.bn, &self.conv1.forward(x)?, train, self.act)?;
        let x = self.conv2.forward_act(&x, self.act)?;
        max_pool2d(&x, 2)
    }
}

struct Vgg6 {
    blocks: [Block; 3],
    spatial_dropout: Dropout,
    dropout: Dropout,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
    rng: DropoutRng,
    act: Activation,
}

fn build(vb: VarBuilder, cfg: &TrainConfig) -> Result<Box<dyn Model>> {
    let rng = DropoutRng::new(cfg.seed);
    Ok(Box::new(Vgg6 {
        blocks: [
            Block::new(vb.pp("block1"), 3, 32, 64, cfg)?,
            Block::new(vb.pp("block2"), 64, 128, 128, cfg)?,
            Block::new(vb.pp("block3"), 128, 256, 256, cfg)?,
        ],
        spatial_dropout: Dropout::new(0.05, true, rng.clone()),
        dropout: Dropout::new(cfg.dropout, false, rng.clone()),
        fc1: Linear::new(vb.pp("fc1"), 256 * 4 * 4, 1024)?.with_precision(cfg.precision),
        fc2: Linear::new(vb.pp("fc2"), 1024, 512)?.with_precision(cfg.precision),
        fc3: Linear::new(vb.pp("fc3"), 512, 10)?.with_precision(cfg.precision),
        rng,
        act: cfg.activation,
    }))
}

impl Model for Vgg6 {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.blocks[0].forward_t(x, train)?;
        let x = self.blocks[1].forward_t(&x, train)?;
        let x = self.spatial_dropout.forward_t(&x, train)?;
        let x = self.blocks[2].forward_t(&x, train)?;
        let x = self.dropout.forward_t(&x.flatten_from(1)?, train)?;
        let x = self.fc1.forward_act(&x, self.act)?;
        let x = self.fc2.forward_act(&x, self.act)?;
        let x = self.dropout.forward_t(&x, train)?;
        self.fc3.forward(&x)
    }

    fn reseed(&self, seed: u64) {
        self.rng.reseed(seed)
    }
}
