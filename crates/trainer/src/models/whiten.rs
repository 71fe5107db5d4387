//! Patch whitening (airbench's first layer, Keller Jordan, arXiv 2404.00498): filters that
//! map every `k x k` patch of the images onto the eigenvectors of the patches' covariance,
//! each scaled by `1 / sqrt(eigenvalue + eps)`, so the filtered patches have (nearly) the
//! identity covariance; the same filters negated follow, so a ReLU-like activation after
//! them keeps both signs.

use candle_core::{DType, Result, Tensor};

/// The `eps` airbench adds to the eigenvalues.
pub const EPS: f64 = 5e-4;

/// The second moment `E[p p^T]` (not centred, as airbench computes it) of every `k x k`
/// patch (stride 1, no padding) of `images` `[N, C, H, W]`, the patch flattened in the
/// order `(c, dy, dx)`, the order of a conv weight `[_, C, k, k]`. Accumulated in f64.
pub fn patch_covariance(images: &Tensor, k: usize) -> Result<Vec<Vec<f64>>> {
    let (n, c, h, w) = images.dims4()?;
    if h < k || w < k {
        candle_core::bail!("patch_covariance: {h}x{w} images are smaller than {k}x{k} patches");
    }
    let x: Vec<f32> = images.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let d = c * k * k;
    let mut acc = vec![0f64; d * d];
    let mut p = vec![0f64; d];
    let (oh, ow) = (h - k + 1, w - k + 1);
    for img in x.chunks(c * h * w).take(n) {
        for y in 0..oh {
            for xx in 0..ow {
                for ci in 0..c {
                    for dy in 0..k {
                        for dx in 0..k {
                            p[(ci * k + dy) * k + dx] = img[(ci * h + y + dy) * w + xx + dx] as f64;
                        }
                    }
                }
                for i in 0..d {
                    let pi = p[i];
                    for j in i..d {
                        acc[i * d + j] += pi * p[j];
                    }
                }
            }
        }
    }
    let count = (n * oh * ow).max(1) as f64;
    let mut cov = vec![vec![0f64; d]; d];
    for i in 0..d {
        for j in i..d {
            cov[i][j] = acc[i * d + j] / count;
            cov[j][i] = cov[i][j];
        }
    }
    Ok(cov)
}

/// Eigenvalues and eigenvectors of the symmetric matrix `a` by cyclic Jacobi rotations,
/// sorted by decreasing eigenvalue: `(values, vectors)` with `vectors[i]` the unit
/// eigenvector of `values[i]`.
pub fn symmetric_eigen(a: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut a: Vec<Vec<f64>> = a.to_vec();
    // v's columns are the eigenvectors.
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        let scale: f64 = (0..n).map(|i| a[i][i] * a[i][i]).sum::<f64>().max(1e-300);
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q] == 0.0 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let (lo, hi) = a.split_at_mut(q);
                for (x, y) in lo[p].iter_mut().zip(hi[0].iter_mut()) {
                    let (apk, aqk) = (*x, *y);
                    *x = c * apk - s * aqk;
                    *y = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j][j].total_cmp(&a[i][i]));
    let values = order.iter().map(|&i| a[i][i]).collect();
    let vectors = order
        .iter()
        .map(|&i| (0..n).map(|k| v[k][i]).collect())
        .collect();
    (values, vectors)
}

/// The whitening filters of `images` `[N, C, H, W]` for `k x k` patches: a
/// `[2 C k k, C, k, k]` f32 tensor on the images' device, filter `i < C k k` the `i`-th
/// eigenvector (by decreasing eigenvalue) of [`patch_covariance`] divided by
/// `sqrt(eigenvalue + eps)`, filter `C k k + i` its negative.
pub fn whitening_filters(images: &Tensor, k: usize, eps: f64) -> Result<Tensor> {
    let c = images.dims4()?.1;
    let d = c * k * k;
    let (values, vectors) = symmetric_eigen(&patch_covariance(images, k)?);
    let mut w = Vec::with_capacity(2 * d * d);
    for sign in [1.0, -1.0] {
        for (l, vec) in values.iter().zip(&vectors) {
            let s = sign / (l.max(0.0) + eps).sqrt();
            w.extend(vec.iter().map(|&x| (x * s) as f32));
        }
    }
    Tensor::from_vec(w, (2 * d, c, k, k), images.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn jacobi_finds_the_eigenpairs_of_a_known_matrix() {
        // [[2, 1], [1, 2]]: eigenvalues 3 and 1, vectors (1, 1)/sqrt 2 and (1, -1)/sqrt 2.
        let (l, v) = symmetric_eigen(&[vec![2.0, 1.0], vec![1.0, 2.0]]);
        assert!(
            (l[0] - 3.0).abs() < 1e-12 && (l[1] - 1.0).abs() < 1e-12,
            "{l:?}"
        );
        let r = std::f64::consts::FRAC_1_SQRT_2;
        assert!((v[0][0].abs() - r).abs() < 1e-12 && (v[0][0] - v[0][1]).abs() < 1e-12);
        assert!((v[1][0] + v[1][1]).abs() < 1e-12);
    }

    /// Smooth random images plus independent noise: strongly correlated neighbouring
    /// pixels, and no eigenvalue near `eps`.
    fn images(n: usize) -> Tensor {
        let mut rng = crate::data::SplitMix64::new(5);
        let mut x = vec![0f32; n * 3 * 8 * 8];
        for img in x.chunks_mut(3 * 64) {
            let base: Vec<f64> = (0..3).map(|_| rng.next_f64() * 2.0 - 1.0).collect();
            for c in 0..3 {
                for y in 0..8 {
                    for xx in 0..8 {
                        let smooth = base[c] + 0.3 * base[(c + 1) % 3] * (y as f64 / 8.0);
                        let noise = 0.3 * (rng.next_f64() * 2.0 - 1.0);
                        img[c * 64 + y * 8 + xx] = (smooth + noise) as f32;
                    }
                }
            }
        }
        Tensor::from_vec(x, (n, 3, 8, 8), &Device::Cpu).unwrap()
    }

    #[test]
    fn whitened_patches_have_identity_covariance() {
        let x = images(64);
        let w = whitening_filters(&x, 2, EPS).unwrap();
        assert_eq!(w.dims(), &[24, 3, 2, 2]);
        // The filtered patches' second moment: the first 12 outputs should be white.
        let y = crate::kernels::conv2d(&x, &w, None, 0, 1).unwrap();
        let (n, c, h, ww) = y.dims4().unwrap();
        let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        let at = |b: usize, ch: usize, i: usize| y[(b * c + ch) * h * ww + i] as f64;
        let count = (n * h * ww) as f64;
        let mut worst = 0f64;
        for i in 0..12 {
            for j in 0..12 {
                let m: f64 = (0..n)
                    .flat_map(|b| (0..h * ww).map(move |p| (b, p)))
                    .map(|(b, p)| at(b, i, p) * at(b, j, p))
                    .sum::<f64>()
                    / count;
                let want = if i == j { 1.0 } else { 0.0 };
                worst = worst.max((m - want).abs());
            }
        }
        assert!(worst < 0.02, "largest deviation from the identity: {worst}");
        // The second half is the first negated.
        let w: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        assert!(w[..144].iter().zip(&w[144..]).all(|(a, b)| *a == -*b));
    }
}
