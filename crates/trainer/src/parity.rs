//! Device parity (issue 15's device check, part a): every layer op the models call, run on
//! the device under test through the same functions the models use, against candle's own
//! CPU op (`kernels::reference`, candle-nn) in f64-free fp32: forward, the input gradient
//! and the weight (and bias) gradients, on odd shapes and batch 1.
//!
//! The device: `CIFAR_SWEEP_TEST_DEVICE` if set (`cpu`, `cuda:0`), else the first CUDA GPU
//! if the build has CUDA and one is present, else the CPU (there the fast kernels are what
//! is compared). `CIFAR_SWEEP_REQUIRE_CUDA=1` (the GPU check sets it) makes a run without a
//! GPU fail instead of falling back. The tests are named `parity_*` so that
//! `trainer-tests parity_` runs exactly these.

use crate::config::Precision;
use crate::kernels;
use crate::models;
use candle_core::{DType, Device, Tensor, Var};
use std::sync::Mutex;

/// candle's TF32 switch is one per process: the tests that set it run one at a time.
static DEVICE_LOCK: Mutex<()> = Mutex::new(());

fn device() -> Device {
    let require = std::env::var("CIFAR_SWEEP_REQUIRE_CUDA").is_ok_and(|v| v == "1");
    let dev = match std::env::var("CIFAR_SWEEP_TEST_DEVICE") {
        Ok(s) => crate::device::parse(&s).expect("CIFAR_SWEEP_TEST_DEVICE"),
        Err(_) if candle_core::utils::cuda_is_available() => {
            Device::new_cuda(0).expect("a CUDA build with a GPU present")
        }
        Err(_) => Device::Cpu,
    };
    assert!(
        !require || dev.is_cuda(),
        "CIFAR_SWEEP_REQUIRE_CUDA=1 but the parity tests would run on the CPU"
    );
    dev
}

/// Seeded values in [-1, 1) of `shape`, on the host.
fn values(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = crate::data::SplitMix64::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| (2.0 * rng.next_f64() - 1.0) as f32)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The largest difference between `got` (any device) and `want` (CPU), relative to the
/// largest magnitude in `want`.
fn rel_diff(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims());
    let g: Vec<f32> = got
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let w: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    g.iter()
        .zip(&w)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

/// Runs `op` on `dev` and `reference` on the CPU over the same inputs (each a variable, so
/// every input gets a gradient), takes `sum(out * r)` for a fixed `r` as the loss, and
/// checks the outputs and every input's gradient agree within `tol` (relative).
fn check(
    what: &str,
    dev: &Device,
    inputs: &[Tensor],
    tol: f32,
    op: impl Fn(&[Tensor]) -> Tensor,
    reference: impl Fn(&[Tensor]) -> Tensor,
) {
    let run = |d: &Device, f: &dyn Fn(&[Tensor]) -> Tensor| {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(&t.to_device(d).unwrap()).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = f(&ts);
        let r = values(out.dims(), 99).to_device(d).unwrap();
        let grads = (&out * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gs: Vec<Tensor> = vars
            .iter()
            .map(|v| {
                grads
                    .get(v.as_tensor())
                    .unwrap_or_else(|| panic!("{what}: an input got no gradient"))
                    .clone()
            })
            .collect();
        (out, gs)
    };
    let (out, grads) = run(dev, &op);
    let (want, want_grads) = run(&Device::Cpu, &reference);
    let d = rel_diff(&out, &want);
    assert!(d <= tol, "{what}: forward differs by {d} (tolerance {tol})");
    for (i, (g, w)) in grads.iter().zip(&want_grads).enumerate() {
        assert_eq!(g.dtype(), DType::F32, "{what}: gradient {i} dtype");
        let d = rel_diff(g, w);
        assert!(
            d <= tol,
            "{what}: gradient {i} differs by {d} (tolerance {tol})"
        );
    }
}

fn set_tf32(dev: &Device, on: bool) {
    if dev.is_cuda() {
        candle_core::cuda::set_gemm_reduced_precision_f32(on);
    }
}

/// The tolerance of a precision: fp32 rounding differences only; TF32 keeps 10 mantissa
/// bits, bf16 7.
fn tolerance(p: Precision) -> f32 {
    match p {
        Precision::Fp32 => 1e-4,
        Precision::Tf32 => 1e-2,
        Precision::Bf16 => 3e-2,
    }
}

const PRECISIONS: [Precision; 3] = [Precision::Fp32, Precision::Tf32, Precision::Bf16];

#[test]
fn parity_convolutions_in_every_precision() {
    let _g = DEVICE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dev = device();
    // (batch, c_in, c_out, k, padding, side): batch 1, odd sides, every kernel size the
    // models use (lenet's 5x5, airnet's 2x2 whitening, the 3x3s).
    let shapes = [
        (1, 3, 6, 5, 0, 32),
        (2, 6, 16, 5, 0, 13),
        (1, 3, 24, 2, 0, 31),
        (3, 24, 64, 3, 1, 15),
        (2, 64, 128, 3, 1, 7),
        (1, 5, 7, 3, 1, 9),
    ];
    for p in PRECISIONS {
        set_tf32(&dev, p == Precision::Tf32);
        for (i, &(n, c, o, k, pad, side)) in shapes.iter().enumerate() {
            let s = i as u64 * 3;
            let inputs = [
                values(&[n, c, side, side], s),
                (values(&[o, c, k, k], s + 1) * 0.3).unwrap(),
                values(&[o], s + 2),
            ];
            check(
                &format!("conv2d {p:?} n{n} {c}->{o} k{k} p{pad} {side}px"),
                &dev,
                &inputs,
                tolerance(p),
                |t| models::conv2d(&t[0], &t[1], Some(&t[2]), pad, p).unwrap(),
                |t| kernels::reference::conv2d(&t[0], &t[1], Some(&t[2]), pad, 1).unwrap(),
            );
        }
    }
    set_tf32(&dev, false);
}

#[test]
fn parity_linear_layers_in_every_precision() {
    let _g = DEVICE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dev = device();
    for p in PRECISIONS {
        set_tf32(&dev, p == Precision::Tf32);
        for (i, &(n, d_in, d_out)) in [(1, 400, 120), (3, 4096, 1024), (5, 84, 10)]
            .iter()
            .enumerate()
        {
            let s = 50 + i as u64 * 3;
            let inputs = [
                values(&[n, d_in], s),
                (values(&[d_out, d_in], s + 1) * 0.05).unwrap(),
                values(&[d_out], s + 2),
            ];
            check(
                &format!("linear {p:?} n{n} {d_in}->{d_out}"),
                &dev,
                &inputs,
                tolerance(p),
                |t| models::linear(&t[0], &t[1], Some(&t[2]), p).unwrap(),
                |t| kernels::reference::linear(&t[0], &t[1], Some(&t[2])).unwrap(),
            );
        }
    }
    set_tf32(&dev, false);
}

#[test]
fn parity_pooling_activations_and_batch_norm() {
    let _g = DEVICE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dev = device();
    let tol = tolerance(Precision::Fp32);
    for (n, c, side) in [(1, 6, 28), (2, 64, 15), (3, 5, 7)] {
        let x = [values(&[n, c, side, side], 70 + side as u64)];
        check(
            &format!("max_pool2d n{n} c{c} {side}px"),
            &dev,
            &x,
            tol,
            |t| kernels::max_pool2d(&t[0], 2).unwrap(),
            |t| kernels::reference::max_pool2d(&t[0], 2).unwrap(),
        );
        check(
            "relu",
            &dev,
            &x,
            tol,
            |t| kernels::relu(&t[0]).unwrap(),
            |t| t[0].relu().unwrap(),
        );
        check(
            "gelu",
            &dev,
            &x,
            tol,
            |t| kernels::gelu(&t[0]).unwrap(),
            |t| t[0].gelu_erf().unwrap(),
        );
        // Batch norm with its parameters as inputs (so their gradients are compared too),
        // in training (batch statistics) and evaluation mode, with each activation.
        for train in [true, false] {
            for act in [
                crate::config::Activation::Relu,
                crate::config::Activation::Gelu,
            ] {
                let inputs = [
                    x[0].clone(),
                    (values(&[c], 80).affine(0.5, 1.0)).unwrap(),
                    values(&[c], 81),
                ];
                let bn = |t: &[Tensor], d: &Device| {
                    candle_nn::BatchNorm::new(
                        c,
                        values(&[c], 82).to_device(d).unwrap(),
                        values(&[c], 83)
                            .affine(0.2, 1.0)
                            .unwrap()
                            .to_device(d)
                            .unwrap(),
                        t[1].clone(),
                        t[2].clone(),
                        1e-5,
                    )
                    .unwrap()
                };
                let what = format!("batch norm + {act:?}, train {train}, n{n} c{c} {side}px");
                check(
                    &what,
                    &dev,
                    &inputs,
                    1e-3,
                    |t| models::batch_norm_act(&bn(t, &dev), &t[0], train, act).unwrap(),
                    |t| {
                        let y = candle_nn::ModuleT::forward_t(&bn(t, &Device::Cpu), &t[0], train)
                            .unwrap();
                        match act {
                            crate::config::Activation::Relu => y.relu().unwrap(),
                            crate::config::Activation::Gelu => y.gelu_erf().unwrap(),
                        }
                    },
                );
            }
        }
    }
}

/// One whole training step of every model, on the device and on the CPU from the same
/// weights and batch: the losses agree and so do the weights after the update.
#[test]
fn parity_one_training_step_of_every_model() {
    let _g = DEVICE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dev = device();
    let set = crate::data::ImageSet::synthetic(6, 10, 9);
    let idx: Vec<usize> = (0..6).collect();
    let norm = crate::data::Normalization::default();
    for arch in models::arch_names() {
        let cfg = crate::TrainConfig {
            arch: arch.into(),
            lr: 0.05,
            momentum: 0.9,
            seed: 7,
            ..Default::default()
        };
        let step = |d: &Device| {
            let mut s = crate::train::Session::new(&cfg, d).unwrap();
            let (x, y) = crate::data::make_batch(&set, &idx, &norm, None, d).unwrap();
            if s.model.wants_data() {
                s.model.init_from_data(&x).unwrap();
            }
            let st = crate::train::train_step(s.model.as_ref(), &mut s.opt, &x, &y, 0.0).unwrap();
            let w: Vec<Tensor> = s
                .vars
                .iter()
                .map(|(_, v)| v.as_tensor().to_device(&Device::Cpu).unwrap())
                .collect();
            (st.loss, w)
        };
        let ((loss, w), (want_loss, want_w)) = (step(&dev), step(&Device::Cpu));
        assert!(
            (loss - want_loss).abs() <= 1e-4 * want_loss.abs().max(1.0),
            "{arch}: loss {loss} against {want_loss}"
        );
        for (a, b) in w.iter().zip(&want_w) {
            let d = rel_diff(a, b);
            assert!(d <= 1e-3, "{arch}: weights after the step differ by {d}");
        }
    }
}
