//! A training set resident on the device as bytes (issue 15, item 2): uploaded once, its
//! batches gathered, augmented and normalised there, so a GPU step never waits for the host
//! to assemble and copy 12 KiB of floats per image.
//!
//! The random draws are the host path's ([`super::make_batch`],
//! [`super::make_batch_translated`]), in the same order from the same generator, and the
//! arithmetic is the same two f32 operations per pixel (`v * scale + shift`, not fused), so a
//! resident batch equals the host batch bit for bit: the tests compare them on the CPU. What
//! travels per batch is the image indices and, when augmenting, each image's source row and
//! column (32 + 32 small integers an image).

use candle_core::{DType, Device, Tensor};

use super::batch::{crop_draw, reflect, translate_draw, Flip, CROP_PAD};
use super::{ImageSet, Normalization, SplitMix64, IMAGE_SIDE};

const SIDE: usize = IMAGE_SIDE;

/// An [`ImageSet`] on a device: `[N, 3, 32, 32]` bytes and `[N]` labels.
pub struct ResidentSet {
    images: Tensor,
    labels: Tensor,
    /// Per channel, `[1, 3, 1, 1]`: byte `v` normalises to `v * scale + shift`.
    scale: Tensor,
    shift: Tensor,
    len: usize,
}

/// Where each output pixel of an image comes from: `rows[y]` and `cols[x]` index the source
/// (the image padded by `pad` pixels of byte 0 on every side).
struct Geometry {
    rows: Vec<u32>,
    cols: Vec<u32>,
    pad: usize,
}

impl ResidentSet {
    /// Uploads `set` to `device`, to be normalised with `norm`.
    pub fn new(set: &ImageSet, norm: &Normalization, device: &Device) -> candle_core::Result<Self> {
        let len = set.len();
        let images = Tensor::from_slice(&set.images, (len, 3, SIDE, SIDE), device)?;
        let labels = Tensor::from_slice(&set.labels, len, device)?.to_dtype(DType::U32)?;
        let affine = norm.affine();
        let scale: Vec<f32> = affine.iter().map(|a| a.0).collect();
        let shift: Vec<f32> = affine.iter().map(|a| a.1).collect();
        Ok(Self {
            images,
            labels,
            scale: Tensor::from_vec(scale, (1, 3, 1, 1), device)?,
            shift: Tensor::from_vec(shift, (1, 3, 1, 1), device)?,
            len,
        })
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// [`super::make_batch`] on the device: the same images, crops and flips (and draws
    /// from `augment`).
    pub fn batch(
        &self,
        idx: &[usize],
        augment: Option<&mut SplitMix64>,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let geometry = augment.map(|rng| {
            let mut g = Geometry {
                rows: Vec::with_capacity(idx.len() * SIDE),
                cols: Vec::with_capacity(idx.len() * SIDE),
                pad: CROP_PAD,
            };
            for _ in idx {
                let (ox, oy, flip) = crop_draw(rng);
                let (ox, oy) = (ox as u32, oy as u32);
                // Output (x, y) reads the padded image at (x + ox, y + oy), x mirrored first.
                g.rows.extend((0..SIDE as u32).map(|y| y + oy));
                g.cols.extend((0..SIDE as u32).map(|x| {
                    let x = if flip { SIDE as u32 - 1 - x } else { x };
                    x + ox
                }));
            }
            g
        });
        self.assemble(idx, geometry)
    }

    /// [`super::make_batch_translated`] on the device.
    pub fn batch_translated(
        &self,
        idx: &[usize],
        translate: usize,
        flip: Flip,
        rng: &mut SplitMix64,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        if translate >= SIDE {
            candle_core::bail!("make_batch: translate {translate} is not below {SIDE}");
        }
        let mut g = Geometry {
            rows: Vec::with_capacity(idx.len() * SIDE),
            cols: Vec::with_capacity(idx.len() * SIDE),
            pad: 0,
        };
        for &i in idx {
            let (sx, sy, mirrored) = translate_draw(rng, translate, flip, i);
            g.rows
                .extend((0..SIDE as isize).map(|y| reflect(y + sy, SIDE) as u32));
            g.cols.extend((0..SIDE as isize).map(|x| {
                let c = reflect(x + sx, SIDE);
                (if mirrored { SIDE - 1 - c } else { c }) as u32
            }));
        }
        self.assemble(idx, Some(g))
    }

    fn assemble(
        &self,
        idx: &[usize],
        geometry: Option<Geometry>,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        if let Some(&bad) = idx.iter().find(|&&i| i >= self.len) {
            candle_core::bail!(
                "make_batch: index {bad} out of range for a set of {} images",
                self.len
            );
        }
        let device = self.images.device();
        let b = idx.len();
        let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
        let ids = Tensor::from_vec(ids, b, device)?;
        let mut x = self.images.index_select(&ids, 0)?;
        if let Some(g) = geometry {
            if g.pad > 0 {
                x = x
                    .pad_with_zeros(2, g.pad, g.pad)?
                    .pad_with_zeros(3, g.pad, g.pad)?;
            }
            let wide = SIDE + 2 * g.pad;
            let rows = Tensor::from_vec(g.rows, (b, 1, SIDE, 1), device)?
                .broadcast_as((b, 3, SIDE, wide))?
                .contiguous()?;
            x = x.gather(&rows, 2)?;
            let cols = Tensor::from_vec(g.cols, (b, 1, 1, SIDE), device)?
                .broadcast_as((b, 3, SIDE, SIDE))?
                .contiguous()?;
            x = x.gather(&cols, 3)?;
        }
        let x = x
            .to_dtype(DType::F32)?
            .broadcast_mul(&self.scale)?
            .broadcast_add(&self.shift)?;
        Ok((x, self.labels.index_select(&ids, 0)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{make_batch, make_batch_translated};

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    #[test]
    fn resident_batches_equal_the_host_batches_bit_for_bit() {
        let set = ImageSet::synthetic(40, 10, 3);
        let norm = Normalization::CIFAR10;
        let res = ResidentSet::new(&set, &norm, &Device::Cpu).unwrap();
        assert_eq!(res.len(), 40);
        let idx = [5usize, 0, 39, 17, 17, 2, 8];
        // Plain.
        let (hx, hy) = make_batch(&set, &idx, &norm, None, &Device::Cpu).unwrap();
        let (rx, ry) = res.batch(&idx, None).unwrap();
        assert_eq!(bits(&hx), bits(&rx));
        assert_eq!(hy.to_vec1::<u32>().unwrap(), ry.to_vec1::<u32>().unwrap());
        // Crop + flip, several seeds (every offset and both flips occur).
        for seed in 0..20 {
            let (mut a, mut b) = (SplitMix64::new(seed), SplitMix64::new(seed));
            let (hx, _) = make_batch(&set, &idx, &norm, Some(&mut a), &Device::Cpu).unwrap();
            let (rx, _) = res.batch(&idx, Some(&mut b)).unwrap();
            assert_eq!(bits(&hx), bits(&rx), "seed {seed}");
            assert_eq!(a.next_u64(), b.next_u64(), "the same draws");
        }
        // Translation with reflection, each flip kind.
        for (translate, flip) in [
            (2, Flip::None),
            (2, Flip::Random),
            (0, Flip::Random),
            (3, Flip::Alternate { seed: 4, epoch: 1 }),
            (1, Flip::Alternate { seed: 4, epoch: 2 }),
        ] {
            for seed in 0..5 {
                let (mut a, mut b) = (SplitMix64::new(seed), SplitMix64::new(seed));
                let (hx, _) =
                    make_batch_translated(&set, &idx, &norm, translate, flip, &mut a, &Device::Cpu)
                        .unwrap();
                let (rx, _) = res.batch_translated(&idx, translate, flip, &mut b).unwrap();
                assert_eq!(bits(&hx), bits(&rx), "{translate} {flip:?} seed {seed}");
            }
        }
        let e = res.batch(&[40], None).unwrap_err().to_string();
        assert!(e.contains("index 40 out of range"), "{e}");
    }
}
