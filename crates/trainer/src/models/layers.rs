//! Layers shared by the models. They call [`crate::kernels`] so the CPU gets the fast ops.

use crate::data::SplitMix64;
use crate::kernels;
use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};
use std::sync::{Arc, Mutex};

/// PyTorch's default initialisation (kaiming-uniform with a = sqrt(5)) reduces to
/// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases; the tutorial's numbers were
/// obtained with it.
fn uniform(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A 2-D convolution with bias (stride 1, square kernel), on the fast kernels.
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
}

impl Conv2d {
    /// `c_in -> c_out` channels, a `k x k` kernel and `padding` pixels of zeros, its
    /// variables `weight` and `bias` created through `vb`.
    pub fn new(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        k: usize,
        padding: usize,
    ) -> Result<Self> {
        let init = uniform(c_in * k * k);
        Ok(Self {
            weight: vb.get_with_hints((c_out, c_in, k, k), "weight", init)?,
            bias: vb.get_with_hints(c_out, "bias", init)?,
            padding,
        })
    }

    /// The convolution of `x` (`[B, c_in, H, W]`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        kernels::conv2d(x, &self.weight, Some(&self.bias), self.padding, 1)
    }

    /// `relu(self.forward(x))`, as one fused op on the CPU.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        kernels::conv2d_relu(x, &self.weight, Some(&self.bias), self.padding, 1)
    }
}

/// A fully connected layer `x @ w^T + b`, on the fast kernels.
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// `d_in -> d_out` features, its variables `weight` and `bias` created through `vb`.
    pub fn new(vb: VarBuilder, d_in: usize, d_out: usize) -> Result<Self> {
        let init = uniform(d_in);
        Ok(Self {
            weight: vb.get_with_hints((d_out, d_in), "weight", init)?,
            bias: vb.get_with_hints(d_out, "bias", init)?,
        })
    }

    /// The layer applied to `x` (`[B, d_in]`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        kernels::linear(x, &self.weight, Some(&self.bias))
    }

    /// `relu(self.forward(x))`, as one fused op on the CPU.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        kernels::linear_relu(x, &self.weight, Some(&self.bias))
    }
}

/// The RNG behind a model's dropout masks. candle's own `dropout` draws from an unseeded
/// generator, which would break bit-for-bit reproducibility, so masks come from here (the
/// training generator, [`SplitMix64`], fixed across `rand` releases).
#[derive(Clone)]
pub struct DropoutRng(Arc<Mutex<SplitMix64>>);

impl DropoutRng {
    /// A generator seeded with `seed`, shared by the layers that get clones of it.
    pub fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(SplitMix64::new(seed))))
    }

    /// Restarts the shared stream from `seed` (the training loop does, every batch).
    pub fn reseed(&self, seed: u64) {
        *self.0.lock().expect("dropout rng poisoned") = SplitMix64::new(seed);
    }
}

/// Inverted dropout. With `spatial`, whole channels of a `[B, C, H, W]` tensor are dropped
/// together (PyTorch's `Dropout2d`).
pub struct Dropout {
    p: f64,
    spatial: bool,
    rng: DropoutRng,
}

impl Dropout {
    /// Drops with probability `p` (whole channels if `spatial`), masks drawn from `rng`.
    pub fn new(p: f64, spatial: bool, rng: DropoutRng) -> Self {
        Self { p, spatial, rng }
    }

    /// `x` with the mask applied and the kept values scaled by `1 / (1 - p)` in training;
    /// `x` itself in evaluation.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(x.clone());
        }
        let dims = x.dims();
        let mask_shape: Vec<usize> = if self.spatial {
            let mut s = dims[..2].to_vec();
            s.extend(std::iter::repeat_n(1, dims.len() - 2));
            s
        } else {
            dims.to_vec()
        };
        let n: usize = mask_shape.iter().product();
        let keep = (1.0 / (1.0 - self.p)) as f32;
        let mask: Vec<f32> = {
            let mut rng = self.rng.0.lock().expect("dropout rng poisoned");
            (0..n)
                .map(|_| if rng.next_f64() < self.p { 0.0 } else { keep })
                .collect()
        };
        let mask = Tensor::from_vec(mask, mask_shape, x.device())?.to_dtype(x.dtype())?;
        x.broadcast_mul(&mask)
    }
}

fn name_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a over the name, mixed with the run seed: independent of creation order.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Redraws every conv/linear weight and bias from `seed` (PyTorch's default bounds),
/// because candle's CPU initialisers use an unseeded generator. Batch-norm parameters and
/// running statistics keep their constant initial values.
pub(crate) fn init_seeded(varmap: &candle_nn::VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().expect("varmap poisoned");
    for (name, var) in data.iter() {
        let is_bn = name.split('.').any(|p| p == "bn");
        if is_bn || name.contains("running_") {
            continue;
        }
        let fan_in = if let Some(prefix) = name.strip_suffix(".bias") {
            match data.get(&format!("{prefix}.weight")) {
                Some(w) => w.dims()[1..].iter().product::<usize>(),
                None => continue,
            }
        } else {
            var.dims()[1..].iter().product::<usize>()
        };
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        let mut rng = SplitMix64::new(name_seed(seed, name));
        // U(-bound, bound) from the training generator.
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| ((2.0 * rng.next_f64() - 1.0) * bound) as f32)
            .collect();
        let t = Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}
