//! Layers shared by the models. They call [`crate::kernels`] so the CPU gets the fast ops.

use crate::config::{Activation, Precision};
use crate::data::SplitMix64;
use crate::kernels;
use candle_core::{DType, Result, Tensor};
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

/// `act(x)`: ReLU on the fast kernels, or GELU with the exact normal CDF
/// (`x * (1 + erf(x / sqrt 2)) / 2`, candle's `gelu_erf`, PyTorch's default `nn.GELU()`).
pub fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    match act {
        Activation::Relu => kernels::relu(x),
        Activation::Gelu => kernels::gelu(x),
    }
}

/// `act(batch_norm(bn, x, train))`, fused on the CPU (see [`kernels::batch_norm_relu`] and
/// [`kernels::batch_norm_gelu`]).
pub fn batch_norm_act(
    bn: &candle_nn::BatchNorm,
    x: &Tensor,
    train: bool,
    act: Activation,
) -> Result<Tensor> {
    match act {
        Activation::Relu => kernels::batch_norm_relu(bn, x, train),
        Activation::Gelu => kernels::batch_norm_gelu(bn, x, train),
    }
}

/// `t` (fp32) rounded to the nearest bf16 values, kept in fp32; in the graph, so the
/// gradient passes through to `t` unchanged.
fn to_bf16_values(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(DType::BF16)?.to_dtype(DType::F32)
}

/// A convolution (stride 1) in `precision`: on the fast kernels in fp32 and tf32 (tf32 is
/// a switch of CUDA's matrix multiplications, set once per run by the trainer), and in
/// bf16 as autocast does it: bf16 copies of `x` and `w` into candle's convolution, the
/// result back in fp32, the bias added in fp32 (on the CPU the operands rounded to bf16,
/// then the fp32 kernels). The casts are ops of the graph, so the
/// gradients reach the fp32 weights as fp32.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    padding: usize,
    precision: Precision,
) -> Result<Tensor> {
    match precision {
        Precision::Fp32 | Precision::Tf32 => kernels::conv2d(x, w, b, padding, 1),
        // candle's CPU backend has no bf16 matrix product; rounding the operands to bf16
        // and computing in fp32 is what a GPU's bf16 tensor cores do (bf16 products, fp32
        // sums), on the fast kernels.
        Precision::Bf16 if x.device().is_cpu() => {
            kernels::conv2d(&to_bf16_values(x)?, &to_bf16_values(w)?, b, padding, 1)
        }
        Precision::Bf16 => {
            let y = x
                .to_dtype(DType::BF16)?
                .conv2d(&w.to_dtype(DType::BF16)?, padding, 1, 1, 1)?
                .to_dtype(DType::F32)?;
            match b {
                Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
                None => Ok(y),
            }
        }
    }
}

/// `x @ w^T + b` in `precision` (see [`conv2d`]).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, precision: Precision) -> Result<Tensor> {
    match precision {
        Precision::Fp32 | Precision::Tf32 => kernels::linear(x, w, b),
        Precision::Bf16 if x.device().is_cpu() => {
            kernels::linear(&to_bf16_values(x)?, &to_bf16_values(w)?, b)
        }
        Precision::Bf16 => {
            let y = x
                .to_dtype(DType::BF16)?
                .matmul(&w.to_dtype(DType::BF16)?.t()?)?
                .to_dtype(DType::F32)?;
            match b {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            }
        }
    }
}

/// A 2-D convolution with bias (stride 1, square kernel), on the fast kernels in fp32.
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
    precision: Precision,
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
            precision: Precision::Fp32,
        })
    }

    /// The same layer computing in `precision` (see [`conv2d`]).
    pub fn with_precision(self, precision: Precision) -> Self {
        Self { precision, ..self }
    }

    /// The convolution of `x` (`[B, c_in, H, W]`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(
            x,
            &self.weight,
            Some(&self.bias),
            self.padding,
            self.precision,
        )
    }

    /// `relu(self.forward(x))`, as one fused op on the CPU in fp32.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        match self.precision {
            Precision::Bf16 => kernels::relu(&self.forward(x)?),
            _ => kernels::conv2d_relu(x, &self.weight, Some(&self.bias), self.padding, 1),
        }
    }

    /// `act(self.forward(x))` ([`activate`]; ReLU fused).
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        match act {
            Activation::Relu => self.forward_relu(x),
            _ => activate(&self.forward(x)?, act),
        }
    }
}

/// A fully connected layer `x @ w^T + b`, on the fast kernels in fp32.
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
    precision: Precision,
}

impl Linear {
    /// `d_in -> d_out` features, its variables `weight` and `bias` created through `vb`.
    pub fn new(vb: VarBuilder, d_in: usize, d_out: usize) -> Result<Self> {
        let init = uniform(d_in);
        Ok(Self {
            weight: vb.get_with_hints((d_out, d_in), "weight", init)?,
            bias: vb.get_with_hints(d_out, "bias", init)?,
            precision: Precision::Fp32,
        })
    }

    /// The same layer computing in `precision` (see [`conv2d`]).
    pub fn with_precision(self, precision: Precision) -> Self {
        Self { precision, ..self }
    }

    /// The layer applied to `x` (`[B, d_in]`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear(x, &self.weight, Some(&self.bias), self.precision)
    }

    /// `relu(self.forward(x))`, as one fused op on the CPU in fp32.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        match self.precision {
            Precision::Bf16 => kernels::relu(&self.forward(x)?),
            _ => kernels::linear_relu(x, &self.weight, Some(&self.bias)),
        }
    }

    /// `act(self.forward(x))` ([`activate`]; ReLU fused).
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        match act {
            Activation::Relu => self.forward_relu(x),
            _ => activate(&self.forward(x)?, act),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn gelu_matches_a_hand_computation_forward_and_backward() {
        // x * Phi(x), Phi the standard normal CDF (tabulated values); the derivative is
        // Phi(x) + x * phi(x), phi the normal density.
        let xs = [-2.0f64, -1.0, 0.0, 0.5, 1.0, 2.0];
        let phi_cdf = [
            0.022_750_131_948_179_2,
            0.158_655_253_931_457_05,
            0.5,
            0.691_462_461_274_013_1,
            0.841_344_746_068_542_9,
            0.977_249_868_051_820_8,
        ];
        let density = |x: f64| (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let v = Var::new(xs.map(|x| x as f32).as_slice(), &Device::Cpu).unwrap();
        let y = activate(v.as_tensor(), Activation::Gelu).unwrap();
        let got: Vec<f32> = y.to_vec1().unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let dgot: Vec<f32> = grads.get(v.as_tensor()).unwrap().to_vec1().unwrap();
        for i in 0..xs.len() {
            let (x, p) = (xs[i], phi_cdf[i]);
            assert!(
                (got[i] as f64 - x * p).abs() < 1e-6,
                "gelu({x}) = {}",
                got[i]
            );
            let d = p + x * density(x);
            assert!(
                (dgot[i] as f64 - d).abs() < 1e-5,
                "gelu'({x}) = {}",
                dgot[i]
            );
        }
        // ReLU stays ReLU.
        let r: Vec<f32> = activate(v.as_tensor(), Activation::Relu)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(r, xs.map(|x| x.max(0.0) as f32));
    }

    #[test]
    fn layers_apply_the_configured_activation() {
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu);
        let conv = Conv2d::new(vb.pp("c"), 3, 4, 3, 1).unwrap();
        let lin = Linear::new(vb.pp("l"), 5, 2).unwrap();
        let x = Tensor::randn(0f32, 1., (2, 3, 6, 6), &Device::Cpu).unwrap();
        let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = flat(kernels::gelu(&conv.forward(&x).unwrap()).unwrap());
        assert_eq!(flat(conv.forward_act(&x, Activation::Gelu).unwrap()), want);
        let want = flat(conv.forward_relu(&x).unwrap());
        assert_eq!(flat(conv.forward_act(&x, Activation::Relu).unwrap()), want);
        let x = Tensor::randn(0f32, 1., (3, 5), &Device::Cpu).unwrap();
        let want = flat(kernels::gelu(&lin.forward(&x).unwrap()).unwrap());
        assert_eq!(flat(lin.forward_act(&x, Activation::Gelu).unwrap()), want);
    }
}
