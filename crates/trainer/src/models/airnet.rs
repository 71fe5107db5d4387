//! airnet: the network of airbench94 (Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a
//! single GPU", arXiv 2404.00498), written from its description (1,971,352 trainable
//! parameters):
//!
//! - a fixed 2x2 patch-whitening convolution, 3 -> 24 channels, no padding (32 -> 31 px):
//!   the 12 eigenvectors of the training images' 2x2 patch covariance scaled by
//!   `1 / sqrt(eigenvalue + 5e-4)`, and their negatives ([`super::whiten`]); set by
//!   [`Model::init_from_data`], never trained, saved in checkpoints like any
//!   variable; then the activation;
//! - three blocks of widths 64, 256, 256: conv3x3 -> maxpool 2 -> batch norm -> act ->
//!   conv3x3 -> batch norm -> act (31 -> 15 -> 7 -> 3 px). The convolutions have no bias
//!   and start as PyTorch's default plus airbench's partial identity (`dirac_` on the first
//!   `c_in` filters); batch norm has no learnable scale (fixed at 1), a learnable bias,
//!   eps 1e-12 and momentum 0.4 in PyTorch's convention (running = 0.6 running + 0.4 batch,
//!   airbench's `batchnorm_momentum = 0.6` spelt the other way round);
//! - a global max pool over space (airbench's `MaxPool2d(3)` on the 3x3 maps), a linear
//!   layer 256 -> 10 without bias, and the logits scaled by 1/9.
//!
//! The activation is `cfg.activation` like every model's; airbench's is GELU
//! (`activation = "gelu"`, as `sweeps/airnet.toml` sets; its batch-norm biases' 64x learning
//! rate is `bn_bias_lr_scale = 64`).

use super::layers::{conv2d, linear};
use super::{activate, batch_norm_act, whiten, Arch, Model};
use crate::config::{Activation, Precision, TrainConfig};
use crate::kernels;
use candle_core::{DType, Result, Tensor, Var, D};
use candle_nn::{BatchNorm, Init, VarBuilder};

pub const ARCH: Arch = Arch {
    name: "airnet",
    description: "airbench94: fixed 2x2 whitening conv 3-24, 3 blocks (64, 256, 256) of conv-pool-bn-act-conv-bn-act, max pool, linear 256-10 / 9",
    params: 1_971_352,
    build,
};

/// The batch-norm momentum (PyTorch's convention: the weight of the batch statistics).
pub const BN_MOMENTUM: f64 = 0.4;
/// The batch-norm epsilon.
pub const BN_EPS: f64 = 1e-12;
/// The scale of the logits.
pub const LOGIT_SCALE: f64 = 1.0 / 9.0;
/// How many training images the whitening filters are computed from (airbench's 5,000).
pub const WHITEN_IMAGES: usize = 5000;
/// How many epochs the whitening bias is trained before it is frozen (airbench's 3).
pub const WHITEN_BIAS_EPOCHS: usize = 3;
const WIDTHS: [usize; 3] = [64, 256, 256];
const WHITEN_WIDTH: usize = 24;

/// A 3x3 convolution, padding 1, without bias.
struct Conv {
    weight: Tensor,
    precision: Precision,
}

impl Conv {
    fn new(vb: VarBuilder, c_in: usize, c_out: usize, precision: Precision) -> Result<Self> {
        // candle's initial values; `init_seeded` redraws them from the seed.
        let bound = 1.0 / ((c_in * 9) as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Self {
            weight: vb.get_with_hints((c_out, c_in, 3, 3), "weight", init)?,
            precision,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(x, &self.weight, None, 1, self.precision)
    }

    /// airbench's `dirac_(w[:c_in])`: filter `i < c_in` passes channel `i` through.
    fn dirac(&self) -> Result<()> {
        let (c_out, c_in, k, _) = self.weight.dims4()?;
        let mut w: Vec<f32> = self.weight.flatten_all()?.to_vec1()?;
        for i in 0..c_in.min(c_out) {
            let f = &mut w[i * c_in * k * k..(i + 1) * c_in * k * k];
            f.fill(0.0);
            f[(i * k + k / 2) * k + k / 2] = 1.0;
        }
        let t = Tensor::from_vec(w, self.weight.shape(), self.weight.device())?;
        Var::from_tensor(&self.weight)?.set(&t)
    }
}

/// Batch norm with the scale fixed at 1 (a constant, not a variable) and a learnable bias.
fn batch_norm(vb: VarBuilder, c: usize) -> Result<BatchNorm> {
    let running_mean = vb.get_with_hints(c, "running_mean", Init::Const(0.0))?;
    let running_var = vb.get_with_hints(c, "running_var", Init::Const(1.0))?;
    let bias = vb.get_with_hints(c, "bias", Init::Const(0.0))?;
    let weight = Tensor::ones(c, DType::F32, bias.device())?;
    BatchNorm::new_with_momentum(
        c,
        running_mean,
        running_var,
        weight,
        bias,
        BN_EPS,
        BN_MOMENTUM,
    )
}

struct Block {
    conv1: Conv,
    norm1: BatchNorm,
    conv2: Conv,
    norm2: BatchNorm,
}

impl Block {
    // The batch norms are `norm1`/`norm2`, not `bn`: `init_seeded` leaves their biases at 0
    // either way (no `.weight` variable beside them to take a fan-in from).
    fn new(vb: VarBuilder, c_in: usize, c_out: usize, precision: Precision) -> Result<Self> {
        Ok(Self {
            conv1: Conv::new(vb.pp("conv1"), c_in, c_out, precision)?,
            norm1: batch_norm(vb.pp("norm1"), c_out)?,
            conv2: Conv::new(vb.pp("conv2"), c_out, c_out, precision)?,
            norm2: batch_norm(vb.pp("norm2"), c_out)?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool, act: Activation) -> Result<Tensor> {
        let x = kernels::max_pool2d(&self.conv1.forward(x)?, 2)?;
        let x = batch_norm_act(&self.norm1, &x, train, act)?;
        let x = self.conv2.forward(&x)?;
        batch_norm_act(&self.norm2, &x, train, act)
    }
}

struct AirNet {
    whiten_weight: Tensor,
    whiten_bias: Tensor,
    blocks: [Block; 3],
    head: Tensor,
    act: Activation,
    precision: Precision,
}

fn build(vb: VarBuilder, cfg: &TrainConfig) -> Result<Box<dyn Model>> {
    let wv = vb.pp("whiten");
    let bound = 1.0 / 12f64.sqrt();
    let init = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let head_bound = 1.0 / (WIDTHS[2] as f64).sqrt();
    Ok(Box::new(AirNet {
        whiten_weight: wv.get_with_hints((WHITEN_WIDTH, 3, 2, 2), "weight", init)?,
        whiten_bias: wv.get_with_hints(WHITEN_WIDTH, "bias", init)?,
        blocks: [
            Block::new(vb.pp("block1"), WHITEN_WIDTH, WIDTHS[0], cfg.precision)?,
            Block::new(vb.pp("block2"), WIDTHS[0], WIDTHS[1], cfg.precision)?,
            Block::new(vb.pp("block3"), WIDTHS[1], WIDTHS[2], cfg.precision)?,
        ],
        head: vb.pp("head").get_with_hints(
            (10, WIDTHS[2]),
            "weight",
            Init::Uniform {
                lo: -head_bound,
                up: head_bound,
            },
        )?,
        act: cfg.activation,
        precision: cfg.precision,
    }))
}

impl Model for AirNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // Detached: the whitening weights get no gradient, so the optimiser never moves
        // them (nor decays them); the variable still holds them for checkpoints.
        let w = self.whiten_weight.detach();
        let x = conv2d(x, &w, Some(&self.whiten_bias), 0, self.precision)?;
        let mut x = activate(&x, self.act)?;
        for b in &self.blocks {
            x = b.forward_t(&x, train, self.act)?;
        }
        let x = x.flatten_from(2)?.max(D::Minus1)?;
        linear(&x, &self.head, None, self.precision)? * LOGIT_SCALE
    }

    fn reseed(&self, _seed: u64) {}

    fn init_from_data(&self, images: &Tensor) -> Result<()> {
        let n = images.dim(0)?.min(WHITEN_IMAGES);
        let w = whiten::whitening_filters(&images.narrow(0, 0, n)?, 2, whiten::EPS)?;
        Var::from_tensor(&self.whiten_weight)?.set(&w.to_dtype(self.whiten_weight.dtype())?)?;
        for b in &self.blocks {
            b.conv1.dirac()?;
            b.conv2.dirac()?;
        }
        Ok(())
    }

    fn wants_data(&self) -> bool {
        true
    }

    fn frozen(&self) -> &'static [&'static str] {
        &["whiten.weight"]
    }

    fn frozen_after(&self) -> &'static [(&'static str, usize)] {
        &[("whiten.bias", WHITEN_BIAS_EPOCHS)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::{instantiate, sorted_vars};
    use super::*;
    use crate::optim::Optimizer;
    use candle_core::Device;

    fn var(vars: &[(String, Var)], name: &str) -> Vec<f32> {
        let v = &vars.iter().find(|(k, _)| k == name).expect(name).1;
        v.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn whitening_is_set_from_data_and_never_trained() {
        let cfg = TrainConfig {
            arch: "airnet".into(),
            activation: Activation::Gelu,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
            ..Default::default()
        };
        let (varmap, model) = instantiate(&cfg, &Device::Cpu).unwrap();
        let vars = sorted_vars(&varmap);
        let x = Tensor::randn(0f32, 1., (6, 3, 32, 32), &Device::Cpu).unwrap();
        model.init_from_data(&x).unwrap();
        let want = whiten::whitening_filters(&x, 2, whiten::EPS).unwrap();
        let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(var(&vars, "whiten.weight"), want);
        // dirac: block2's conv2 (256 -> 256) is the identity.
        let w = var(&vars, "block2.conv2.weight");
        assert_eq!(w[4], 1.0);
        assert_eq!(w.iter().filter(|&&v| v != 0.0).count(), 256);
        assert_eq!(w[256 * 9 + 9 + 4], 1.0, "filter 1 passes channel 1");
        // One training step moves everything else but not the whitening weights.
        let before: Vec<Vec<f32>> = vars.iter().map(|(k, _)| var(&vars, k)).collect();
        let mut opt = Optimizer::new(&cfg, vars.iter().map(|(_, v)| v.clone()).collect()).unwrap();
        let y = Tensor::new(&[0u32, 1, 2, 3, 4, 5], &Device::Cpu).unwrap();
        let logits = model.forward_t(&x, true).unwrap();
        assert_eq!(logits.dims(), &[6, 10]);
        let loss = crate::train::cross_entropy(&logits, &y, 0.0).unwrap();
        opt.backward_step(&loss).unwrap();
        for ((k, _), old) in vars.iter().zip(&before) {
            let changed = var(&vars, k) != *old;
            let frozen = k == "whiten.weight";
            assert_eq!(changed, !frozen, "{k}");
        }
        assert_eq!(model.frozen(), &["whiten.weight"]);
    }
}
