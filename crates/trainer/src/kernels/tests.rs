//! Every fast kernel against candle's implementation (`reference`), forward and gradients via
//! `Var` + `backward()`, on fixed edge-case shapes and seeded random ones.
//!
//! Tolerance: `max |fast - ref| <= TOL * max(1, max |ref|)` with `TOL = 1e-4` (f32; sums of up
//! to a few thousand products in a different order).

use super::conv::Algo;
use super::eltwise::Act;
use super::{fast, reference};
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{rngs::StdRng, Rng, SeedableRng};

const TOL: f32 = 1e-4;

fn rand_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn rand_t(rng: &mut StdRng, dims: &[usize]) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(rand_vec(rng, n), dims, &Device::Cpu).unwrap()
}

fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let g: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    let w: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
    let scale = w.iter().fold(1f32, |m, v| m.max(v.abs()));
    let err = g
        .iter()
        .zip(&w)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err <= TOL * scale,
        "{what}: max abs error {err} > {TOL} * {scale} (dims {:?})",
        want.dims()
    );
}

/// Runs `f` on variables holding `inputs` (or plain tensors where `var[i]` is false), takes
/// `sum(f(..) * r)` for a fixed random `r`, and returns the output and each input's gradient.
fn run(
    inputs: &[Tensor],
    var: &[bool],
    r_seed: u64,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> (Tensor, Vec<Option<Tensor>>) {
    let ts: Vec<Tensor> = inputs
        .iter()
        .zip(var)
        .map(|(t, &v)| {
            if v {
                Var::from_tensor(t).unwrap().as_tensor().clone()
            } else {
                t.copy().unwrap()
            }
        })
        .collect();
    let y = f(&ts).unwrap();
    let r = rand_t(&mut StdRng::seed_from_u64(r_seed), y.dims());
    let loss = (&y * &r).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let gs = ts.iter().map(|t| grads.get(t).cloned()).collect();
    (y, gs)
}

/// Compares fast and reference on the same inputs: output and every requested gradient.
fn compare(
    what: &str,
    inputs: &[Tensor],
    var: &[bool],
    fast_f: impl Fn(&[Tensor]) -> Result<Tensor>,
    ref_f: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    let (yf, gf) = run(inputs, var, 7, fast_f);
    let (yr, gr) = run(inputs, var, 7, ref_f);
    assert_close(&yf, &yr, &format!("{what} forward"));
    for (i, (a, b)) in gf.iter().zip(&gr).enumerate() {
        match (a, b) {
            (Some(a), Some(b)) => assert_close(a, b, &format!("{what} grad {i}")),
            (None, _) if !var[i] => {}
            _ => panic!("{what}: gradient {i} present in one implementation only"),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_conv(
    rng: &mut StdRng,
    (n, c, h, w): (usize, usize, usize, usize),
    (o, kh, kw): (usize, usize, usize),
    pad: usize,
    stride: usize,
    bias: bool,
    x_var: bool,
) {
    let what = format!(
        "conv2d x[{n},{c},{h},{w}] w[{o},{c},{kh},{kw}] pad {pad} stride {stride} bias {bias}"
    );
    let mut inputs = vec![rand_t(rng, &[n, c, h, w]), rand_t(rng, &[o, c, kh, kw])];
    if bias {
        inputs.push(rand_t(rng, &[o]));
    }
    let var = [x_var, true, true];
    for algo in [Algo::Gemm, Algo::Direct, Algo::Winograd, Algo::Auto] {
        compare(
            &format!("{what} {algo:?}"),
            &inputs,
            &var[..inputs.len()],
            |t| fast::conv2d_with(&t[0], &t[1], t.get(2), pad, stride, algo, false),
            |t| reference::conv2d(&t[0], &t[1], t.get(2), pad, stride),
        );
    }
    // Fused with ReLU (against candle's relu, whose gradient at exactly 0 differs; random
    // data never hits 0).
    compare(
        &format!("{what} relu"),
        &inputs,
        &var[..inputs.len()],
        |t| fast::conv2d_with(&t[0], &t[1], t.get(2), pad, stride, Algo::Auto, true),
        |t| reference::conv2d(&t[0], &t[1], t.get(2), pad, stride)?.relu(),
    );
}

#[test]
fn conv2d_edge_cases() {
    let mut rng = StdRng::seed_from_u64(1);
    // The networks' own layers (batch 3), then odd sizes, batch 1, 1x1, stride, big padding.
    check_conv(&mut rng, (3, 3, 32, 32), (6, 5, 5), 0, 1, true, true);
    check_conv(&mut rng, (3, 6, 14, 14), (16, 5, 5), 0, 1, true, true);
    check_conv(&mut rng, (3, 3, 32, 32), (16, 3, 3), 1, 1, true, true);
    check_conv(&mut rng, (2, 64, 8, 8), (32, 3, 3), 1, 1, true, true);
    // Winograd F(4x4, 3x3) (channels in multiples of 16): sizes that are not multiples of the
    // 4x4 tile, a 1x1 and a one-row map, batch 1, and vgg6's 32- and 16-wide layers.
    check_conv(&mut rng, (1, 16, 7, 9), (32, 3, 3), 1, 1, true, true);
    check_conv(&mut rng, (3, 32, 13, 5), (16, 3, 3), 1, 1, false, true);
    check_conv(&mut rng, (2, 16, 1, 1), (16, 3, 3), 1, 1, true, true);
    check_conv(&mut rng, (1, 16, 1, 6), (16, 3, 3), 1, 1, true, true);
    check_conv(&mut rng, (2, 32, 32, 32), (64, 3, 3), 1, 1, true, true);
    check_conv(&mut rng, (3, 64, 16, 16), (128, 3, 3), 1, 1, true, true);
    // 8-wide maps, 3x3 pad 1: the row-pair kernel (odd heights, channel tails, one row).
    check_conv(&mut rng, (1, 5, 7, 8), (13, 3, 3), 1, 1, true, true);
    check_conv(&mut rng, (3, 17, 10, 8), (7, 3, 3), 1, 1, false, true);
    check_conv(&mut rng, (2, 4, 1, 8), (4, 3, 3), 1, 1, true, true);
    check_conv(&mut rng, (1, 1, 1, 1), (1, 1, 1), 0, 1, false, true);
    check_conv(&mut rng, (1, 2, 7, 5), (3, 3, 2), 0, 1, true, true);
    check_conv(&mut rng, (1, 3, 9, 11), (4, 3, 3), 2, 2, true, true);
    check_conv(&mut rng, (2, 4, 6, 6), (5, 1, 1), 0, 1, true, true);
    check_conv(&mut rng, (2, 4, 6, 6), (5, 1, 1), 1, 2, false, true);
    check_conv(&mut rng, (2, 3, 4, 4), (2, 5, 5), 2, 1, true, true);
    check_conv(&mut rng, (2, 3, 5, 5), (2, 3, 3), 0, 3, true, true);
    check_conv(&mut rng, (9, 5, 6, 6), (7, 3, 3), 1, 1, true, true);
    check_conv(&mut rng, (5, 2, 13, 7), (3, 4, 2), 1, 2, true, false);
    // Batch 1, big enough for the GEMMs to be split over threads instead of images.
    check_conv(&mut rng, (1, 16, 32, 32), (32, 3, 3), 1, 1, true, true);
    // Direct kernels: register-block remainders (channels not multiples of 6, rows not of
    // 4, columns not of 16), wide rows, and a weight-gradient group boundary.
    check_conv(&mut rng, (3, 7, 19, 37), (13, 3, 3), 1, 1, true, true);
    check_conv(&mut rng, (2, 5, 9, 17), (11, 3, 5), 2, 1, true, true);
    check_conv(&mut rng, (40, 16, 34, 34), (8, 3, 3), 0, 1, true, true);
    check_conv(&mut rng, (3, 3, 11, 13), (70, 3, 3), 1, 1, true, true);
    check_conv(&mut rng, (2, 9, 7, 20), (17, 2, 3), 1, 1, true, true);
    // Kernel rows wider than one weight-gradient register block (6 taps).
    check_conv(&mut rng, (2, 2, 9, 12), (3, 2, 7), 1, 1, true, true);
}

#[test]
fn conv2d_random_shapes() {
    let mut rng = StdRng::seed_from_u64(2);
    for _ in 0..40 {
        let k: (usize, usize) = (rng.random_range(1..=5), rng.random_range(1..=5));
        let pad: usize = rng.random_range(0..=2);
        let stride = rng.random_range(1..=3);
        let h = rng.random_range(k.0.saturating_sub(2 * pad).max(1)..=13);
        let w = rng.random_range(k.1.saturating_sub(2 * pad).max(1)..=13);
        let n = rng.random_range(1..=6);
        let c = rng.random_range(1..=7);
        let o = rng.random_range(1..=9);
        let bias = rng.random_bool(0.7);
        let x_var = rng.random_bool(0.8);
        check_conv(
            &mut rng,
            (n, c, h, w),
            (o, k.0, k.1),
            pad,
            stride,
            bias,
            x_var,
        );
    }
}

#[test]
fn conv2d_skips_input_gradient_of_plain_tensor() {
    let mut rng = StdRng::seed_from_u64(3);
    let x = rand_t(&mut rng, &[2, 3, 8, 8]);
    let w = Var::from_tensor(&rand_t(&mut rng, &[4, 3, 3, 3])).unwrap();
    let b = Var::from_tensor(&rand_t(&mut rng, &[4])).unwrap();
    let y = fast::conv2d(&x, w.as_tensor(), Some(b.as_tensor()), 1, 1).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    assert!(grads.get(w.as_tensor()).is_some() && grads.get(b.as_tensor()).is_some());
}

#[test]
fn max_pool2d_matches_candle() {
    let mut rng = StdRng::seed_from_u64(4);
    let mut cases = vec![
        ([1, 1, 2, 2], 2),
        ([2, 3, 32, 32], 2),
        ([3, 6, 28, 28], 2),
        ([1, 2, 7, 9], 2),
        ([2, 2, 9, 10], 3),
        ([1, 1, 5, 5], 1),
        ([4, 16, 5, 5], 5),
    ];
    for _ in 0..20 {
        let k = rng.random_range(1..=4);
        let dims = [
            rng.random_range(1..=4),
            rng.random_range(1..=5),
            rng.random_range(k..=17),
            rng.random_range(k..=17),
        ];
        cases.push((dims, k));
    }
    for (dims, k) in cases {
        let x = rand_t(&mut rng, &dims);
        // Forward against candle's own max_pool2d as well.
        assert_close(
            &fast::max_pool2d(&x, k).unwrap(),
            &x.max_pool2d(k).unwrap(),
            &format!("max_pool2d {dims:?} k {k} vs Tensor::max_pool2d"),
        );
        compare(
            &format!("max_pool2d {dims:?} k {k}"),
            &[x],
            &[true],
            |t| fast::max_pool2d(&t[0], k),
            |t| reference::max_pool2d(&t[0], k),
        );
    }
}

/// Documents the candle bug `reference::max_pool2d` works around: `Tensor::max_pool2d`'s
/// gradient is the true one divided by k^2.
#[test]
fn candle_max_pool2d_gradient_is_scaled() {
    let x = Var::new(&[[[[1f32, 4.], [3., 2.]]]], &Device::Cpu).unwrap();
    let g = x
        .as_tensor()
        .max_pool2d(2)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g: Vec<f32> = g
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(g, [0., 0.25, 0., 0.]);
    let y = fast::max_pool2d(x.as_tensor(), 2).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let g: Vec<f32> = g
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(g, [0., 1., 0., 0.]);
}

/// Tied maxima: the whole gradient goes to the first one (row-major), for the 2x2 fast path
/// and the general one.
#[test]
fn max_pool2d_ties_go_to_first_maximum() {
    // (k, rows, columns): 2x2 rows of 36 go through the 16-window vector path too.
    for (k, h, w) in [(2usize, 5usize, 5usize), (3, 7, 7), (2, 4, 37)] {
        let x = Var::zeros((1, 1, h, w), DType::F32, &Device::Cpu).unwrap();
        let y = fast::max_pool2d(x.as_tensor(), k).unwrap();
        let g = (y.sum_all().unwrap() * 3.0).unwrap().backward().unwrap();
        let g: Vec<f32> = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (i, v) in g.iter().enumerate() {
            let (r, c) = (i / w, i % w);
            let first = r % k == 0 && c % k == 0 && r < h / k * k && c < w / k * k;
            assert_eq!(*v, if first { 3.0 } else { 0.0 }, "k {k} at ({r}, {c})");
        }
    }
}

#[test]
fn relu_matches_candle() {
    let mut rng = StdRng::seed_from_u64(5);
    for dims in [vec![1], vec![7, 3], vec![2, 3, 5, 5], vec![3, 70000]] {
        let x = rand_t(&mut rng, &dims);
        compare(
            &format!("relu {dims:?}"),
            &[x],
            &[true],
            |t| fast::relu(&t[0]),
            |t| reference::relu(&t[0]),
        );
    }
}

#[test]
fn gelu_matches_candle() {
    let mut rng = StdRng::seed_from_u64(6);
    // Spread over [-12, 12] to reach both tails (where Phi saturates and exp underflows).
    for dims in [vec![1], vec![7, 3], vec![2, 3, 5, 5], vec![3, 70000]] {
        let x = (rand_t(&mut rng, &dims) * 12.0).unwrap();
        compare(
            &format!("gelu {dims:?}"),
            &[x],
            &[true],
            |t| fast::gelu(&t[0]),
            |t| reference::gelu(&t[0]),
        );
    }
    // Pointwise, tighter than TOL: against the exact erf in f64.
    for i in -4000..=4000 {
        let z = i as f32 / 250.0;
        let zd = z as f64;
        let cdf = 0.5 * (1.0 + erf_f64(zd / std::f64::consts::SQRT_2));
        let pdf = (-0.5 * zd * zd).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let (y, dy) = (
            super::eltwise::gelu(z) as f64,
            super::eltwise::gelu_grad(z) as f64,
        );
        assert!(
            (y - zd * cdf).abs() <= 4e-7 * zd.abs().max(1.0),
            "gelu({z}) = {y}"
        );
        assert!((dy - (cdf + zd * pdf)).abs() <= 1e-6, "gelu'({z}) = {dy}");
    }
    // Far in the negative tail the outputs are exact zeros, never subnormal numbers (which
    // slow every later multiplication by ~100x).
    for i in 0..=4000 {
        let z = -10.0 - i as f32 / 200.0;
        for v in [super::eltwise::gelu(z), super::eltwise::gelu_grad(z)] {
            assert!(!v.is_subnormal(), "gelu at {z} gives the subnormal {v:e}");
        }
    }
}

/// erf by its Taylor series (|x| < 3) or continued fraction for erfc, in f64: a reference
/// independent of the kernel's approximation.
fn erf_f64(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 3.0 {
        let (mut term, mut sum, mut n) = (a, a, 0.0);
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -a * a / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(a) = exp(-a^2) / sqrt(pi) * 1 / (a + 1/2 / (a + 1 / (a + 3/2 / (a + ...))))
        let mut f = a;
        for k in (1..60).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
    };
    r.copysign(x)
}

#[test]
fn linear_matches_candle() {
    let mut rng = StdRng::seed_from_u64(6);
    // Up to 128 rows the forward pass takes the small-batch kernel, above it the GEMM.
    let mut cases = vec![
        (1, 1, 1),
        (20, 400, 120),
        (64, 4096, 1024),
        (3, 84, 10),
        (129, 300, 37),
        (200, 17, 9),
    ];
    for _ in 0..15 {
        cases.push((
            rng.random_range(1..=40),
            rng.random_range(1..=300),
            rng.random_range(1..=70),
        ));
    }
    for (i, &(n, fi, o)) in cases.iter().enumerate() {
        let bias = i % 3 != 1;
        let x_var = i % 4 != 2;
        let mut inputs = vec![rand_t(&mut rng, &[n, fi]), rand_t(&mut rng, &[o, fi])];
        if bias {
            inputs.push(rand_t(&mut rng, &[o]));
        }
        let var = [x_var, true, true];
        compare(
            &format!("linear x[{n},{fi}] w[{o},{fi}] bias {bias}"),
            &inputs,
            &var[..inputs.len()],
            |t| fast::linear(&t[0], &t[1], t.get(2)),
            |t| reference::linear(&t[0], &t[1], t.get(2)),
        );
        compare(
            &format!("linear_relu x[{n},{fi}] w[{o},{fi}] bias {bias}"),
            &inputs,
            &var[..inputs.len()],
            |t| fast::linear_with(&t[0], &t[1], t.get(2), true),
            |t| reference::linear(&t[0], &t[1], t.get(2))?.relu(),
        );
    }
}

#[test]
fn batch_norm_matches_candle() {
    let mut rng = StdRng::seed_from_u64(9);
    for (i, dims) in [
        [2, 3, 4, 4],
        [1, 5, 3, 7],
        [8, 32, 8, 8],
        [3, 1, 1, 2],
        [4, 16, 16, 16],
    ]
    .into_iter()
    .enumerate()
    {
        let c = dims[1];
        let stats = |rng: &mut StdRng| {
            let m = rand_t(rng, &[c]);
            let v = (rand_t(rng, &[c]).abs().unwrap() + 0.5).unwrap();
            (m, v)
        };
        let (rm, rv) = stats(&mut rng);
        // Off-centre, scaled input so the statistics matter.
        let x = ((rand_t(&mut rng, &dims) * 3.0).unwrap() + 1.0).unwrap();
        let inputs = vec![x, rand_t(&mut rng, &[c]), rand_t(&mut rng, &[c])];
        for train in [true, false] {
            let make = |t: &[Tensor]| {
                candle_nn::BatchNorm::new(
                    c,
                    rm.copy()?,
                    rv.copy()?,
                    t[1].clone(),
                    t[2].clone(),
                    1e-5,
                )
            };
            let what = format!("batch_norm {dims:?} train {train}");
            // Outputs and gradients, plain and fused with ReLU.
            compare(
                &what,
                &inputs,
                &[i % 2 == 0, true, true],
                |t| super::fast::batch_norm(&make(t)?, &t[1], &t[2], &t[0], train, Act::Identity),
                |t| candle_nn::ModuleT::forward_t(&make(t)?, &t[0], train),
            );
            compare(
                &format!("{what} relu"),
                &inputs,
                &[i % 2 == 0, true, true],
                |t| super::fast::batch_norm(&make(t)?, &t[1], &t[2], &t[0], train, Act::Relu),
                |t| candle_nn::ModuleT::forward_t(&make(t)?, &t[0], train)?.relu(),
            );
            compare(
                &format!("{what} gelu"),
                &inputs,
                &[i % 2 == 0, true, true],
                |t| super::fast::batch_norm(&make(t)?, &t[1], &t[2], &t[0], train, Act::Gelu),
                |t| candle_nn::ModuleT::forward_t(&make(t)?, &t[0], train)?.gelu_erf(),
            );
            // Running statistics.
            let (bf, br) = (make(&inputs).unwrap(), make(&inputs).unwrap());
            super::fast::batch_norm(
                &bf,
                &inputs[1],
                &inputs[2],
                &inputs[0],
                train,
                Act::Identity,
            )
            .unwrap();
            candle_nn::ModuleT::forward_t(&br, &inputs[0], train).unwrap();
            assert_close(
                bf.running_mean(),
                br.running_mean(),
                &format!("{what} running mean"),
            );
            assert_close(
                bf.running_var(),
                br.running_var(),
                &format!("{what} running var"),
            );
        }
    }
}

/// A small LeNet-shaped chain, so gradients flow through every kernel in sequence.
#[test]
fn chain_matches_candle() {
    let mut rng = StdRng::seed_from_u64(7);
    let inputs = vec![
        rand_t(&mut rng, &[3, 3, 16, 16]),
        rand_t(&mut rng, &[4, 3, 5, 5]),
        rand_t(&mut rng, &[4]),
        rand_t(&mut rng, &[5, 4 * 7 * 7]),
        rand_t(&mut rng, &[5]),
    ];
    type Kern<'a> = (
        &'a dyn Fn(&Tensor, &Tensor, Option<&Tensor>, usize, usize) -> Result<Tensor>,
        &'a dyn Fn(&Tensor) -> Result<Tensor>,
        &'a dyn Fn(&Tensor, usize) -> Result<Tensor>,
        &'a dyn Fn(&Tensor, &Tensor, Option<&Tensor>) -> Result<Tensor>,
    );
    let net = |k: Kern, t: &[Tensor]| -> Result<Tensor> {
        let y = (k.0)(&t[0], &t[1], Some(&t[2]), 1, 1)?;
        let y = (k.2)(&(k.1)(&y)?, 2)?;
        let y = y.flatten_from(1)?;
        (k.3)(&y, &t[3], Some(&t[4]))
    };
    compare(
        "chain",
        &inputs,
        &[false, true, true, true, true],
        |t| {
            net(
                (&fast::conv2d, &fast::relu, &fast::max_pool2d, &fast::linear),
                t,
            )
        },
        |t| {
            net(
                (
                    &reference::conv2d,
                    &reference::relu,
                    &reference::max_pool2d,
                    &reference::linear,
                ),
                t,
            )
        },
    );
}

/// The fused SGD update against the same formula in candle ops (the fallback path, run on
/// f64 copies), over a few steps with every option.
#[test]
fn sgd_update_matches_formula() {
    let mut rng = StdRng::seed_from_u64(10);
    for (momentum, nesterov, wd) in [
        (0.0, false, 0.0),
        (0.0, false, 1e-2),
        (0.9, false, 0.0),
        (0.9, true, 5e-4),
        (0.5, false, 1e-3),
    ] {
        for n in [1usize, 7, 300_001] {
            let p = rand_t(&mut rng, &[n]);
            let fast_p = Var::from_tensor(&p).unwrap();
            let ref_p = Var::from_tensor(&p.to_dtype(DType::F64).unwrap()).unwrap();
            let fast_b = Var::zeros(n, DType::F32, &Device::Cpu).unwrap();
            let ref_b = Var::zeros(n, DType::F64, &Device::Cpu).unwrap();
            for _ in 0..3 {
                let g = rand_t(&mut rng, &[n]);
                super::sgd_update(&fast_p, &g, Some(&fast_b), 0.1, momentum, nesterov, wd).unwrap();
                let g64 = g.to_dtype(DType::F64).unwrap();
                super::sgd_update(&ref_p, &g64, Some(&ref_b), 0.1, momentum, nesterov, wd).unwrap();
            }
            let what = format!("sgd momentum {momentum} nesterov {nesterov} wd {wd} n {n}");
            let r = ref_p.as_tensor().to_dtype(DType::F32).unwrap();
            assert_close(fast_p.as_tensor(), &r, &what);
        }
    }
}

/// The fused Adam/AdamW update against the same formula in candle ops (the fallback path, on
/// f64 copies), over a few steps, with and without weight decay.
#[test]
fn adam_update_matches_formula() {
    let mut rng = StdRng::seed_from_u64(11);
    for (decoupled, wd) in [(false, 0.0), (false, 1e-2), (true, 5e-2)] {
        for n in [1usize, 7, 300_001] {
            let p = rand_t(&mut rng, &[n]);
            let fast = Var::from_tensor(&p).unwrap();
            let refp = Var::from_tensor(&p.to_dtype(DType::F64).unwrap()).unwrap();
            let zeros = |dt| Var::zeros(n, dt, &Device::Cpu).unwrap();
            let (fm, fv) = (zeros(DType::F32), zeros(DType::F32));
            let (rm, rv) = (zeros(DType::F64), zeros(DType::F64));
            for step in 1..=3 {
                let c = super::AdamStepConfig {
                    lr: 0.01,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    step,
                    weight_decay: wd,
                    decoupled,
                };
                let g = rand_t(&mut rng, &[n]);
                super::adam_update(&fast, &g, &fm, &fv, c).unwrap();
                let g64 = g.to_dtype(DType::F64).unwrap();
                super::adam_update(&refp, &g64, &rm, &rv, c).unwrap();
            }
            let what = format!("adam decoupled {decoupled} wd {wd} n {n}");
            for (f, r) in [(&fast, &refp), (&fm, &rm), (&fv, &rv)] {
                let r = r.as_tensor().to_dtype(DType::F32).unwrap();
                assert_close(f.as_tensor(), &r, &what);
            }
        }
    }
}

/// Non-f32 tensors take candle's path through the public functions.
#[test]
fn public_api_falls_back_for_f64() {
    let mut rng = StdRng::seed_from_u64(8);
    let x = rand_t(&mut rng, &[1, 2, 6, 6])
        .to_dtype(DType::F64)
        .unwrap();
    let w = rand_t(&mut rng, &[3, 2, 3, 3])
        .to_dtype(DType::F64)
        .unwrap();
    let y = super::conv2d(&x, &w, None, 1, 1).unwrap();
    let y = super::max_pool2d(&super::relu(&y).unwrap(), 2).unwrap();
    assert_eq!(y.dims(), [1, 3, 3, 3]);
    assert_eq!(y.dtype(), DType::F64);
}

/// Both thread pools (candle's, the default, and the own one) run every task once, run
/// nested loops inline, and survive a panicking task, which reaches the caller.
#[test]
fn thread_pools_run_every_task_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    type Pool = fn(usize, &(dyn Fn(usize) + Sync));
    let pools: [(&str, Pool); 2] = [
        ("candle", super::util::par_for_candle),
        ("own", super::pool_threads::run),
    ];
    for (name, par) in pools {
        for n in [0usize, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            par(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
                // Nested: inline on whichever thread runs task i.
                let inner = AtomicUsize::new(0);
                par(3, &|_| {
                    inner.fetch_add(1, Ordering::Relaxed);
                });
                assert_eq!(inner.load(Ordering::Relaxed), 3);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "{name} n {n}"
            );
        }
        let r = std::panic::catch_unwind(|| {
            par(64, &|i| {
                if i == 40 {
                    panic!("task 40 ({name} pool; expected by the test)");
                }
            })
        });
        assert!(r.is_err(), "{name}");
        let count = AtomicUsize::new(0);
        par(100, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 100, "{name}");
    }
    let v = super::util::par_map(10, |i| i * i);
    assert_eq!(v, (0..10).map(|i| i * i).collect::<Vec<_>>());
}
