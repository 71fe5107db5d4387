//! Validation split, per-epoch order, normalisation and batch assembly.

use candle_core::{Device, Tensor};

use super::{ImageSet, SplitMix64, IMAGE_BYTES, IMAGE_SIDE};

const PLANE: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Zero padding of the random crop, in pixels.
pub const CROP_PAD: usize = 4;

/// Deterministic split of `set` into (train indices, valid indices), both ascending.
///
/// Stratified: each class gives `valid_fraction` of its images (rounded so that the total is
/// `round(len * valid_fraction)`), chosen by a permutation seeded with `seed`. The same seed
/// and set always give the same split. `valid_fraction` is clamped to `[0, 1]` (NaN is 0).
pub fn split(set: &ImageSet, valid_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let n = set.len();
    let f = clamp_fraction(valid_fraction);
    let total_valid = valid_count(n, valid_fraction);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); 256];
    for (i, &l) in set.labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    // Largest-remainder allocation of the valid quota over the classes.
    let mut quota: Vec<usize> = by_class
        .iter()
        .map(|c| ((c.len() as f64 * f).floor() as usize).min(c.len()))
        .collect();
    let mut extra = total_valid.saturating_sub(quota.iter().sum());
    if extra > 0 {
        let mut order: Vec<usize> = (0..by_class.len())
            .filter(|&k| quota[k] < by_class[k].len())
            .collect();
        let frac = |k: usize| by_class[k].len() as f64 * f - quota[k] as f64;
        order.sort_by(|&a, &b| frac(b).total_cmp(&frac(a)).then(a.cmp(&b)));
        for k in order.into_iter().cycle() {
            if extra == 0 {
                break;
            }
            if quota[k] < by_class[k].len() {
                quota[k] += 1;
                extra -= 1;
            }
        }
    }
    let mut rng = SplitMix64::new(seed ^ 0x5851_f42d_4c95_7f2d);
    let mut train = Vec::with_capacity(n - total_valid);
    let mut valid = Vec::with_capacity(total_valid);
    for (k, mut idx) in by_class.into_iter().enumerate() {
        if idx.is_empty() {
            continue;
        }
        rng.shuffle(&mut idx);
        valid.extend_from_slice(&idx[..quota[k]]);
        train.extend_from_slice(&idx[quota[k]..]);
    }
    train.sort_unstable();
    valid.sort_unstable();
    (train, valid)
}

fn clamp_fraction(valid_fraction: f64) -> f64 {
    if valid_fraction.is_nan() {
        0.0
    } else {
        valid_fraction.clamp(0.0, 1.0)
    }
}

/// How many of `n` training images [`split`] holds out for validation.
pub fn valid_count(n: usize, valid_fraction: f64) -> usize {
    ((n as f64 * clamp_fraction(valid_fraction)).round() as usize).min(n)
}

/// The sizes `(train, valid)` a run gets from `n` training images: [`split`]'s two sides,
/// the training side cut to `train_subset`. Refused (as `(field, message)`, the field to
/// blame) when either side is empty or the training side is smaller than one batch: an empty
/// validation side scores every epoch 0.0 (taken as the best), an empty training side trains
/// nothing and reports a loss of 0.0.
pub fn split_sizes(
    n: usize,
    valid_fraction: f64,
    train_subset: Option<usize>,
    batch_size: usize,
) -> Result<(usize, usize), (&'static str, String)> {
    let valid = valid_count(n, valid_fraction);
    let train_all = n - valid;
    let train = train_all.min(train_subset.unwrap_or(usize::MAX));
    if valid == 0 {
        return Err((
            "valid_fraction",
            format!(
                "valid_fraction = {valid_fraction} holds out no image of the {n} for validation"
            ),
        ));
    }
    if train_all == 0 {
        return Err((
            "valid_fraction",
            format!("valid_fraction = {valid_fraction} leaves no image of the {n} for training"),
        ));
    }
    if train < batch_size {
        let field = if train < train_all {
            "train_subset"
        } else {
            "batch_size"
        };
        return Err((
            field,
            format!(
                "{train} training images (of {n}, valid_fraction = {valid_fraction}{}) are fewer \
                 than one batch of {batch_size}",
                train_subset.map_or(String::new(), |t| format!(", train_subset = {t}"))
            ),
        ));
    }
    Ok((train, valid))
}

/// `indices` in a seeded random order for `epoch`: the same (seed, epoch) always gives the
/// same order, and each epoch a different one. This is the training loop's one shuffle, on
/// [`SplitMix64`], so the order survives `rand` upgrades.
pub fn epoch_order(indices: &[usize], seed: u64, epoch: u64) -> Vec<usize> {
    let mut v = indices.to_vec();
    let mut mix = SplitMix64::new(seed ^ 0xd1b5_4a32_d192_ed03);
    let s = mix.next_u64() ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    SplitMix64::new(s).shuffle(&mut v);
    v
}

/// Per-channel normalisation `(x / 255 - mean) / std`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    /// Per-channel mean on the `[0, 1]` scale (R, G, B).
    pub mean: [f32; 3],
    /// Per-channel standard deviation on the same scale.
    pub std: [f32; 3],
}

impl Default for Normalization {
    /// The standard CIFAR-10 training-set statistics.
    fn default() -> Self {
        Normalization::CIFAR10
    }
}

impl Normalization {
    /// Mean (0.4914, 0.4822, 0.4465) and std (0.2470, 0.2435, 0.2616) of the CIFAR-10
    /// training set, per channel.
    pub const CIFAR10: Normalization = Normalization {
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.2470, 0.2435, 0.2616],
    };

    /// No normalisation beyond scaling to `[0, 1]`.
    pub const UNIT: Normalization = Normalization {
        mean: [0.0; 3],
        std: [1.0; 3],
    };

    /// Per-channel mean and (population) standard deviation of the images of `set` at
    /// `indices` (all of them when `None`), on the `[0, 1]` scale.
    pub fn from_images(set: &ImageSet, indices: Option<&[usize]>) -> Normalization {
        let mut hist = [[0u64; 256]; 3];
        let mut count = |i: usize| {
            let img = set.image(i);
            for (c, h) in hist.iter_mut().enumerate() {
                for &v in &img[c * PLANE..(c + 1) * PLANE] {
                    h[v as usize] += 1;
                }
            }
        };
        match indices {
            Some(idx) => idx.iter().for_each(|&i| count(i)),
            None => (0..set.len()).for_each(count),
        }
        let mut out = Normalization::UNIT;
        for (c, h) in hist.iter().enumerate() {
            let n: u64 = h.iter().sum();
            if n == 0 {
                continue;
            }
            let (mut s, mut s2) = (0f64, 0f64);
            for (v, &k) in h.iter().enumerate() {
                let x = v as f64 / 255.0;
                s += x * k as f64;
                s2 += x * x * k as f64;
            }
            let mean = s / n as f64;
            let var = (s2 / n as f64 - mean * mean).max(0.0);
            out.mean[c] = mean as f32;
            out.std[c] = (var.sqrt() as f32).max(1e-6);
        }
        out
    }

    /// Per channel `(scale, shift)`: byte `v` normalises to `v * scale + shift`, that is
    /// `(v / 255 - mean) / std`. A multiply and an add (never fused, so every path computes
    /// the same bits) vectorise where a table lookup per byte cannot.
    pub(crate) fn affine(&self) -> [(f32, f32); 3] {
        std::array::from_fn(|c| (1.0 / (255.0 * self.std[c]), -self.mean[c] / self.std[c]))
    }
}

/// Append image `img` (CHW bytes), cropped at offset (`ox`, `oy`) of its 4-pixel zero-padded
/// version (0..=8 each; 4 is the identity) and then mirrored horizontally if `flip`.
/// Padding is black (byte 0), normalised like any pixel, as torchvision's
/// `RandomCrop(32, padding=4)` before `Normalize` does.
fn push_augmented(
    out: &mut Vec<f32>,
    img: &[u8],
    affine: &[(f32, f32); 3],
    ox: usize,
    oy: usize,
    flip: bool,
) {
    let side = IMAGE_SIDE as isize;
    let dx = ox as isize - CROP_PAD as isize;
    let dy = oy as isize - CROP_PAD as isize;
    let mut row = [0f32; IMAGE_SIDE];
    for (c, &(scale, shift)) in affine.iter().enumerate() {
        let plane = &img[c * PLANE..(c + 1) * PLANE];
        // Byte 0, normalised.
        let pad = shift;
        for y in 0..side {
            let sy = y + dy;
            if !(0..side).contains(&sy) {
                out.extend(std::iter::repeat_n(pad, IMAGE_SIDE));
                continue;
            }
            let src = &plane[sy as usize * IMAGE_SIDE..(sy as usize + 1) * IMAGE_SIDE];
            // Output column x reads source column x + dx.
            let d = dx.unsigned_abs();
            if dx >= 0 {
                for (o, &v) in row[..IMAGE_SIDE - d].iter_mut().zip(&src[d..]) {
                    *o = v as f32 * scale + shift;
                }
                row[IMAGE_SIDE - d..].fill(pad);
            } else {
                row[..d].fill(pad);
                for (o, &v) in row[d..].iter_mut().zip(&src[..IMAGE_SIDE - d]) {
                    *o = v as f32 * scale + shift;
                }
            }
            if flip {
                out.extend(row.iter().rev());
            } else {
                out.extend_from_slice(&row);
            }
        }
    }
}

/// Assemble one batch: images `[B, 3, 32, 32]` f32 normalised, labels `[B]` u32, on `device`.
/// `augment`: `Some(rng)` applies, per image, a random crop of the 4-pixel zero-padded image
/// (offsets uniform in 0..=8) then a horizontal flip with probability 1/2; the draws are
/// crop x, crop y ([`SplitMix64::below`]), flip ([`SplitMix64::coin`]), image after image,
/// so a seeded generator gives the same batch.
/// An index out of range is an error.
pub fn make_batch(
    set: &ImageSet,
    idx: &[usize],
    norm: &Normalization,
    augment: Option<&mut SplitMix64>,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let n = set.len();
    if set.images.len() != n * IMAGE_BYTES {
        candle_core::bail!(
            "make_batch: image set holds {} bytes for {n} labels",
            set.images.len()
        );
    }
    if let Some(&bad) = idx.iter().find(|&&i| i >= n) {
        candle_core::bail!("make_batch: index {bad} out of range for a set of {n} images");
    }
    let b = idx.len();
    let mut data: Vec<f32> = Vec::with_capacity(b * IMAGE_BYTES);
    let labels: Vec<u32> = idx.iter().map(|&i| set.labels[i] as u32).collect();
    match augment {
        None => {
            let affine = norm.affine();
            for &i in idx {
                let img = set.image(i);
                for (c, &(scale, shift)) in affine.iter().enumerate() {
                    data.extend(
                        img[c * PLANE..(c + 1) * PLANE]
                            .iter()
                            .map(|&v| v as f32 * scale + shift),
                    );
                }
            }
        }
        Some(rng) => {
            let affine = norm.affine();
            for &i in idx {
                let (ox, oy, flip) = crop_draw(rng);
                push_augmented(&mut data, set.image(i), &affine, ox, oy, flip);
            }
        }
    }
    debug_assert_eq!(data.len(), b * IMAGE_BYTES);
    let images = Tensor::from_vec(data, (b, 3, IMAGE_SIDE, IMAGE_SIDE), device)?;
    let labels = Tensor::from_vec(labels, b, device)?;
    Ok((images, labels))
}

/// How the options `translate` and `flip` augment a training batch (see
/// [`make_batch_translated`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flip {
    /// No flip.
    None,
    /// A coin per image, from the batch generator.
    Random,
    /// airbench's alternating flip: image `i` (its index in the set) is mirrored when
    /// [`alternate_bit`]`(seed, i)` differs from `epoch % 2 == 0` (`epoch` 1-based).
    Alternate {
        /// The run's seed.
        seed: u64,
        /// The epoch, 1-based.
        epoch: usize,
    },
}

/// The seeded per-image bit of the alternating flip: image `i` is mirrored in the odd
/// epochs (1, 3, ...) when it is set, in the even ones when it is not.
pub fn alternate_bit(seed: u64, i: usize) -> bool {
    let mut r = SplitMix64::new(
        seed ^ 0x2545_f491_4f6c_dd1d ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    r.next_u64() & 1 == 1
}

/// Reflection of index `i` into `0..n` without repeating the edge (PyTorch's `reflect`
/// padding): -1 -> 1, n -> n - 2. Needs `-n < i < 2n - 1`.
pub fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let r = if i < 0 {
        -i
    } else if i >= n {
        2 * (n - 1) - i
    } else {
        i
    };
    r as usize
}

/// Append image `img` mirrored (if `flip`) and then shifted by (`sx`, `sy`) pixels with
/// reflection padding: output pixel (x, y) is the mirrored image's pixel
/// (`reflect(x + sx)`, `reflect(y + sy)`).
fn push_translated(
    out: &mut Vec<f32>,
    img: &[u8],
    affine: &[(f32, f32); 3],
    sx: isize,
    sy: isize,
    flip: bool,
) {
    let cols: Vec<usize> = (0..IMAGE_SIDE as isize)
        .map(|x| {
            let c = reflect(x + sx, IMAGE_SIDE);
            if flip {
                IMAGE_SIDE - 1 - c
            } else {
                c
            }
        })
        .collect();
    for (c, &(scale, shift)) in affine.iter().enumerate() {
        let plane = &img[c * PLANE..(c + 1) * PLANE];
        for y in 0..IMAGE_SIDE as isize {
            let row = &plane[reflect(y + sy, IMAGE_SIDE) * IMAGE_SIDE..][..IMAGE_SIDE];
            out.extend(cols.iter().map(|&x| row[x] as f32 * scale + shift));
        }
    }
}

/// One image's draws for [`make_batch_translated`] (and its device twin): the shifts
/// `(sx, sy)`, uniform in `-translate..=translate` (two [`SplitMix64::below`] draws, only when
/// `translate > 0`), then whether image `i` (its index in the set) is mirrored.
pub(crate) fn translate_draw(
    rng: &mut SplitMix64,
    translate: usize,
    flip: Flip,
    i: usize,
) -> (isize, isize, bool) {
    let t = translate as isize;
    let (sx, sy) = if translate > 0 {
        let span = 2 * translate as u64 + 1;
        (rng.below(span) as isize - t, rng.below(span) as isize - t)
    } else {
        (0, 0)
    };
    let mirrored = match flip {
        Flip::None => false,
        Flip::Random => rng.coin(),
        Flip::Alternate { seed, epoch } => alternate_bit(seed, i) != (epoch % 2 == 0),
    };
    (sx, sy, mirrored)
}

/// One image's draws for [`make_batch`]'s augmentation (and its device twin): the crop
/// offsets `(ox, oy)` in the padded image, uniform in `0..=2 * CROP_PAD`, then the flip.
pub(crate) fn crop_draw(rng: &mut SplitMix64) -> (usize, usize, bool) {
    let ox = rng.below(2 * CROP_PAD as u64 + 1) as usize;
    let oy = rng.below(2 * CROP_PAD as u64 + 1) as usize;
    (ox, oy, rng.coin())
}

/// Assemble one training batch like [`make_batch`], augmented by the options `translate`
/// and `flip`: per image (in batch order) the shifts `dx`, `dy` uniform in
/// `-translate..=translate` (two [`SplitMix64::below`] draws, only when `translate > 0`),
/// then for [`Flip::Random`] a [`SplitMix64::coin`]; the image is mirrored, then shifted
/// with reflection padding (see `push_translated`).
pub fn make_batch_translated(
    set: &ImageSet,
    idx: &[usize],
    norm: &Normalization,
    translate: usize,
    flip: Flip,
    rng: &mut SplitMix64,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let n = set.len();
    if let Some(&bad) = idx.iter().find(|&&i| i >= n) {
        candle_core::bail!("make_batch: index {bad} out of range for a set of {n} images");
    }
    if translate >= IMAGE_SIDE {
        candle_core::bail!("make_batch: translate {translate} is not below {IMAGE_SIDE}");
    }
    let affine = norm.affine();
    let mut data: Vec<f32> = Vec::with_capacity(idx.len() * IMAGE_BYTES);
    for &i in idx {
        let (sx, sy, mirrored) = translate_draw(rng, translate, flip, i);
        push_translated(&mut data, set.image(i), &affine, sx, sy, mirrored);
    }
    let labels: Vec<u32> = idx.iter().map(|&i| set.labels[i] as u32).collect();
    let images = Tensor::from_vec(data, (idx.len(), 3, IMAGE_SIDE, IMAGE_SIDE), device)?;
    let labels = Tensor::from_vec(labels, idx.len(), device)?;
    Ok((images, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sizes_refuse_empty_sides_and_sub_batch_training() {
        assert_eq!(split_sizes(50_000, 0.2, None, 20), Ok((40_000, 10_000)));
        assert_eq!(split_sizes(50_000, 0.2, Some(600), 16), Ok((600, 10_000)));
        // 1e-9 of 50,000 rounds to no validation image; 0.9999999 to no training image.
        assert_eq!(
            split_sizes(50_000, 1e-9, None, 20).unwrap_err().0,
            "valid_fraction"
        );
        let (field, msg) = split_sizes(50_000, 0.9999999, None, 20).unwrap_err();
        assert_eq!(field, "valid_fraction");
        assert!(msg.contains("no image of the 50000 for training"), "{msg}");
        assert_eq!(
            split_sizes(50_000, 0.2, Some(10), 16).unwrap_err().0,
            "train_subset"
        );
        assert_eq!(
            split_sizes(50_000, 0.2, None, 40_001).unwrap_err().0,
            "batch_size"
        );
        assert_eq!(split_sizes(50_000, 0.2, None, 40_000), Ok((40_000, 10_000)));
        // The sizes are the ones split() produces.
        let set = ImageSet::synthetic(97, 10, 1);
        for f in [0.01, 0.2, 0.5, 0.99] {
            let (t, v) = split(&set, f, 3);
            assert_eq!(split_sizes(97, f, None, 1), Ok((t.len(), v.len())), "{f}");
        }
    }
    use crate::data::testutil::synthetic_records;

    const NO_RNG: Option<&mut SplitMix64> = None;

    fn balanced(n: usize, classes: usize) -> ImageSet {
        let mut s = synthetic_records(n, classes, 9);
        for (i, l) in s.labels.iter_mut().enumerate() {
            *l = (i % classes) as u8;
        }
        s
    }

    #[test]
    fn split_sizes_disjoint_cover_and_deterministic() {
        let set = balanced(1000, 10);
        let (tr, va) = split(&set, 0.2, 42);
        assert_eq!((tr.len(), va.len()), (800, 200));
        let mut all: Vec<usize> = tr.iter().chain(&va).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        // Stratified: 20 of each class.
        let mut per = [0; 10];
        va.iter().for_each(|&i| per[set.labels[i] as usize] += 1);
        assert_eq!(per, [20; 10]);
        assert_eq!(split(&set, 0.2, 42), (tr.clone(), va.clone()));
        let (tr2, va2) = split(&set, 0.2, 43);
        assert_ne!(va2, va);
        assert_eq!((tr2.len(), va2.len()), (800, 200));
    }

    #[test]
    fn split_rounding_and_edges() {
        let set = synthetic_records(37, 3, 1);
        let (tr, va) = split(&set, 0.3, 1);
        assert_eq!(va.len(), 11); // round(11.1)
        assert_eq!(tr.len() + va.len(), 37);
        assert_eq!(split(&set, 0.0, 1).1.len(), 0);
        assert_eq!(split(&set, 1.0, 1).0.len(), 0);
        assert_eq!(split(&set, f64::NAN, 1).0.len(), 37);
        assert_eq!(split(&ImageSet::default(), 0.2, 1), (vec![], vec![]));
    }

    #[test]
    fn epoch_orders_are_permutations_seeded_per_epoch() {
        let idx: Vec<usize> = (100..200).collect();
        let a = epoch_order(&idx, 7, 0);
        assert_eq!(a, epoch_order(&idx, 7, 0));
        assert_ne!(a, epoch_order(&idx, 7, 1));
        assert_ne!(a, epoch_order(&idx, 8, 0));
        assert_ne!(a, idx);
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, idx);
        // Pinned: training orders must not change with a dependency upgrade.
        let ten: Vec<usize> = (0..10).collect();
        assert_eq!(epoch_order(&ten, 0, 1), [0, 6, 2, 8, 7, 4, 3, 5, 9, 1]);
        assert_eq!(epoch_order(&ten, 7, 2), [0, 1, 5, 2, 3, 4, 8, 6, 7, 9]);
    }

    #[test]
    fn batch_shape_labels_and_normalisation() {
        let mut set = synthetic_records(5, 10, 3);
        // Image 2: R=255 at (0,0), G=0 at (0,1), B=128 at (31,31).
        let base = 2 * IMAGE_BYTES;
        set.images[base] = 255;
        set.images[base + PLANE + 1] = 0;
        set.images[base + 2 * PLANE + PLANE - 1] = 128;
        let norm = Normalization::default();
        let (x, y) = make_batch(&set, &[2, 0, 4], &norm, NO_RNG, &Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[3, 3, 32, 32]);
        assert_eq!(x.dtype(), candle_core::DType::F32);
        assert_eq!(y.dims(), &[3]);
        assert_eq!(y.dtype(), candle_core::DType::U32);
        let y: Vec<u32> = y.to_vec1().unwrap();
        assert_eq!(
            y,
            vec![
                set.labels[2] as u32,
                set.labels[0] as u32,
                set.labels[4] as u32
            ]
        );
        let x: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let at =
            |b: usize, c: usize, y: usize, xx: usize| x[b * IMAGE_BYTES + c * PLANE + y * 32 + xx];
        let close = |a: f32, b: f32| (a - b).abs() < 1e-5;
        assert!(close(at(0, 0, 0, 0), (1.0 - 0.4914) / 0.2470));
        assert!(close(at(0, 1, 0, 1), -0.4822 / 0.2435));
        assert!(close(at(0, 2, 31, 31), (128.0 / 255.0 - 0.4465) / 0.2616));
        let unit = make_batch(&set, &[4], &Normalization::UNIT, NO_RNG, &Device::Cpu)
            .unwrap()
            .0
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // v * (1 / 255) is within one rounding of v / 255.
        let want = set.image(4).iter().map(|&v| v as f32 / 255.0);
        assert_eq!(unit.len(), IMAGE_BYTES);
        for (got, want) in unit.iter().zip(want) {
            assert!((got - want).abs() <= f32::EPSILON * want, "{got} vs {want}");
        }
        assert!(make_batch(&set, &[5], &norm, NO_RNG, &Device::Cpu).is_err());
        let (e, _) = make_batch(&set, &[], &norm, NO_RNG, &Device::Cpu).unwrap();
        assert_eq!(e.dims(), &[0, 3, 32, 32]);
    }

    /// Image whose pixel (c, y, x) is 1 + x + 32 * (y % 4) + 128 * (c % 2): distinct per
    /// column and non-zero everywhere, so padding (0) is recognisable.
    fn marked() -> Vec<u8> {
        let mut img = vec![0u8; IMAGE_BYTES];
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    img[c * PLANE + y * 32 + x] = (1 + x + 32 * (y % 4) + 128 * (c % 2)) as u8;
                }
            }
        }
        img
    }

    fn augmented(img: &[u8], ox: usize, oy: usize, flip: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let affine = Normalization::UNIT.affine();
        push_augmented(&mut out, img, &affine, ox, oy, flip);
        out.iter().map(|v| (v * 255.0).round() as u8).collect()
    }

    #[test]
    fn crop_and_flip_on_a_hand_made_image() {
        let img = marked();
        let at = |v: &[u8], c: usize, y: usize, x: usize| v[c * PLANE + y * 32 + x];
        assert_eq!(augmented(&img, 4, 4, false), img);
        // Flip only: column x comes from 31 - x.
        let f = augmented(&img, 4, 4, true);
        assert_eq!(at(&f, 1, 5, 0), at(&img, 1, 5, 31));
        assert_eq!(at(&f, 2, 7, 31), at(&img, 2, 7, 0));
        // Crop at (0, 0) of the padded image: shifted right/down by 4, zeros top and left.
        let c = augmented(&img, 0, 0, false);
        assert!((0..4).all(|y| (0..32).all(|x| at(&c, 0, y, x) == 0)));
        assert!((0..32).all(|y| (0..4).all(|x| at(&c, 2, y, x) == 0)));
        assert_eq!(at(&c, 1, 4, 4), at(&img, 1, 0, 0));
        assert_eq!(at(&c, 0, 31, 31), at(&img, 0, 27, 27));
        // Crop at (8, 8): shifted left/up by 4, zeros bottom and right.
        let c = augmented(&img, 8, 8, false);
        assert_eq!(at(&c, 0, 0, 0), at(&img, 0, 4, 4));
        assert!((28..32).all(|y| (0..32).all(|x| at(&c, 1, y, x) == 0)));
        assert!((0..32).all(|y| (28..32).all(|x| at(&c, 1, y, x) == 0)));
        // Crop x=8 (shift left) then flip: zeros on the left, image's column 4 at the right.
        let c = augmented(&img, 8, 4, true);
        assert!((0..32).all(|y| (0..4).all(|x| at(&c, 0, y, x) == 0)));
        assert_eq!(at(&c, 0, 3, 31), at(&img, 0, 3, 4));
        assert_eq!(at(&c, 0, 3, 4), at(&img, 0, 3, 31));
    }

    #[test]
    fn augmented_batches_are_seeded_and_valid() {
        let mut set = synthetic_records(16, 10, 4);
        let img = marked();
        for i in 0..16 {
            set.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES].copy_from_slice(&img);
        }
        let idx: Vec<usize> = (0..16).collect();
        let norm = Normalization::UNIT;
        let run = |seed| {
            let mut rng = SplitMix64::new(seed);
            make_batch(&set, &idx, &norm, Some(&mut rng), &Device::Cpu)
                .unwrap()
                .0
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let a = run(1);
        assert_eq!(a, run(1));
        assert_ne!(a, run(2));
        // Every image is one of the 162 crops/flips, and not all the same.
        let bytes: Vec<u8> = a.iter().map(|v| (v * 255.0).round() as u8).collect();
        let all: Vec<Vec<u8>> = (0..=8)
            .flat_map(|ox| (0..=8).flat_map(move |oy| [(ox, oy, false), (ox, oy, true)]))
            .map(|(ox, oy, f)| augmented(&img, ox, oy, f))
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        for b in bytes.chunks(IMAGE_BYTES) {
            let k = all.iter().position(|v| v == b).expect("not a crop/flip");
            seen.insert(k);
        }
        assert!(seen.len() > 4, "{seen:?}");
    }

    fn translated(img: &[u8], sx: isize, sy: isize, flip: bool) -> Vec<u8> {
        let mut out = Vec::new();
        push_translated(&mut out, img, &Normalization::UNIT.affine(), sx, sy, flip);
        out.iter().map(|v| (v * 255.0).round() as u8).collect()
    }

    #[test]
    fn translate_with_reflection_and_flip_on_a_hand_made_image() {
        let img = marked();
        let at = |v: &[u8], c: usize, y: usize, x: usize| v[c * PLANE + y * 32 + x];
        assert_eq!(translated(&img, 0, 0, false), img);
        assert_eq!(reflect(-1, 32), 1);
        assert_eq!(reflect(-2, 32), 2);
        assert_eq!(reflect(32, 32), 30);
        assert_eq!(reflect(33, 32), 29);
        // Shift by -2 in x: columns 2, 1 (reflected), then 0, 1, 2, ...
        let t = translated(&img, -2, 0, false);
        for (x, src) in [(0, 2), (1, 1), (2, 0), (3, 1), (31, 29)] {
            assert_eq!(at(&t, 1, 5, x), at(&img, 1, 5, src), "x {x}");
        }
        // Shift by +2 in y: rows 2, 3, ..., 31, 30, 29.
        let t = translated(&img, 0, 2, false);
        for (y, src) in [(0, 2), (29, 31), (30, 30), (31, 29)] {
            assert_eq!(at(&t, 0, y, 7), at(&img, 0, src, 7), "y {y}");
        }
        // Mirrored, then shifted by +1 in x: output column x is image column 31 - reflect(x + 1).
        let t = translated(&img, 1, 0, true);
        assert_eq!(at(&t, 2, 3, 0), at(&img, 2, 3, 30));
        assert_eq!(at(&t, 2, 3, 30), at(&img, 2, 3, 0));
        assert_eq!(at(&t, 2, 3, 31), at(&img, 2, 3, 1), "reflected edge");
        // Mirrored only.
        let f = translated(&img, 0, 0, true);
        assert_eq!(f, augmented(&img, 4, 4, true));
    }

    #[test]
    fn translated_batches_draw_bounded_shifts_and_alternate_flips() {
        let mut set = synthetic_records(32, 10, 4);
        let img = marked();
        for i in 0..32 {
            set.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES].copy_from_slice(&img);
        }
        let idx: Vec<usize> = (0..32).collect();
        let norm = Normalization::UNIT;
        let batch = |flip: Flip, translate: usize, seed: u64| -> Vec<Vec<u8>> {
            let mut rng = SplitMix64::new(seed);
            let (x, y) =
                make_batch_translated(&set, &idx, &norm, translate, flip, &mut rng, &Device::Cpu)
                    .unwrap();
            assert_eq!(y.to_vec1::<u32>().unwrap().len(), 32);
            x.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .chunks(IMAGE_BYTES)
                .map(|c| c.iter().map(|v| (v * 255.0).round() as u8).collect())
                .collect()
        };
        // translate 2: every image one of the 25 shifts (5 x 5), several of them seen.
        let all: Vec<Vec<u8>> = (-2..=2)
            .flat_map(|sx| (-2..=2).map(move |sy| (sx, sy)))
            .map(|(sx, sy)| translated(&img, sx, sy, false))
            .collect();
        let b = batch(Flip::None, 2, 1);
        assert_eq!(b, batch(Flip::None, 2, 1));
        let seen: std::collections::BTreeSet<usize> = b
            .iter()
            .map(|v| {
                all.iter()
                    .position(|a| a == v)
                    .expect("a shift of at most 2")
            })
            .collect();
        assert!(seen.len() > 5, "{seen:?}");
        // Alternate: image i mirrored in epoch 1 iff its bit, the other way in epoch 2,
        // whatever the generator says.
        let mirrored = translated(&img, 0, 0, true);
        let flips = |epoch, seed| -> Vec<bool> {
            batch(Flip::Alternate { seed: 9, epoch }, 0, seed)
                .iter()
                .map(|v| {
                    assert!(*v == img || *v == mirrored);
                    *v == mirrored
                })
                .collect()
        };
        let e1 = flips(1, 1);
        let bits: Vec<bool> = (0..32).map(|i| alternate_bit(9, i)).collect();
        assert_eq!(e1, bits);
        assert_eq!(flips(3, 2), bits);
        assert_eq!(flips(2, 1), bits.iter().map(|b| !b).collect::<Vec<_>>());
        let set_bits = bits.iter().filter(|&&b| b).count();
        assert!((8..=24).contains(&set_bits), "{set_bits} of 32");
        // Random: a coin per image.
        let r = batch(Flip::Random, 0, 5);
        let n = r.iter().filter(|v| **v == mirrored).count();
        assert!(n > 0 && n < 32 && r.iter().all(|v| *v == img || *v == mirrored));
    }

    #[test]
    fn normalization_from_images() {
        let mut set = synthetic_records(2, 10, 5);
        set.images[..IMAGE_BYTES].fill(0);
        set.images[IMAGE_BYTES..].fill(255);
        let n = Normalization::from_images(&set, None);
        for c in 0..3 {
            assert!((n.mean[c] - 0.5).abs() < 1e-6);
            assert!((n.std[c] - 0.5).abs() < 1e-6);
        }
        let n = Normalization::from_images(&set, Some(&[1]));
        assert_eq!(n.mean, [1.0; 3]);
        assert_eq!(Normalization::default(), Normalization::CIFAR10);
    }
}
