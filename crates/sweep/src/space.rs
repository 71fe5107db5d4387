//! Sampled search spaces: distributions over hyperparameters and reproducible draws.
//!
//! Draw `i` of a sweep is a pure function of the sweep's seed and `i` (a counter-based
//! generator, not a stream), so a resumed sweep, or several processes sharing one, draw
//! exactly the same configurations without coordinating. The generator is SplitMix64 written
//! out here rather than `rand`'s `StdRng`, whose algorithm may change between releases:
//! the same sweep file must give the same trials after a dependency upgrade.
//!
//! A space made only of discrete dimensions (`choice`, `int_uniform`) is finite; its draws
//! walk a seeded permutation of all its points, so no configuration repeats until every one
//! has been drawn.

use serde_json::Value;

/// One dimension of a space. Bounds are values, never exponents (`log_uniform = [1e-4, 0.3]`).
#[derive(Clone, Debug, PartialEq)]
pub enum Distribution {
    /// Evenly spread between the bounds (`uniform = [low, high]`).
    Uniform {
        /// The lower bound (included).
        low: f64,
        /// The upper bound (above `low`).
        high: f64,
    },
    /// Evenly spread in the logarithm between the bounds (`log_uniform = [low, high]`): for
    /// rates and other scales.
    LogUniform {
        /// The lower bound, above 0.
        low: f64,
        /// The upper bound (above `low`).
        high: f64,
    },
    /// Integers from `low` to `high`, both included.
    IntUniform {
        /// The smallest value.
        low: i64,
        /// The largest value (at least `low`).
        high: i64,
    },
    /// One of the listed values, each as likely (`choice = [...]`); they may be of any JSON type.
    Choice(Vec<Value>),
}

impl Distribution {
    /// Checks the bounds; the message says what to write instead.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Distribution::Uniform { low, high } => {
                if !(low.is_finite() && high.is_finite()) {
                    return Err("bounds must be finite numbers".into());
                }
                if low >= high {
                    return Err(format!(
                        "the lower bound {low} must be below the upper bound {high}"
                    ));
                }
            }
            Distribution::LogUniform { low, high } => {
                if !(low.is_finite() && high.is_finite()) {
                    return Err("bounds must be finite numbers".into());
                }
                if *low <= 0.0 {
                    return Err(format!(
                        "log_uniform needs bounds > 0 (got {low}); bounds are values, not \
                         exponents: write [1e-4, 0.3], not [-4, -0.5]"
                    ));
                }
                if low >= high {
                    return Err(format!(
                        "the lower bound {low} must be below the upper bound {high}"
                    ));
                }
            }
            Distribution::IntUniform { low, high } => {
                if low > high {
                    return Err(format!(
                        "the lower bound {low} must not be above the upper bound {high}"
                    ));
                }
            }
            Distribution::Choice(v) => {
                if v.is_empty() {
                    return Err("an empty choice: give at least one value".into());
                }
                for (i, a) in v.iter().enumerate() {
                    if v[..i].contains(a) {
                        return Err(format!("{a} is listed twice"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The number of values, for discrete dimensions.
    pub fn points(&self) -> Option<u128> {
        match self {
            Distribution::IntUniform { low, high } => {
                Some((*high as i128 - *low as i128 + 1) as u128)
            }
            Distribution::Choice(v) => Some(v.len() as u128),
            _ => None,
        }
    }

    /// The value at `u` in [0, 1).
    fn at(&self, u: f64) -> Value {
        match self {
            Distribution::Uniform { low, high } => Value::from(low + u * (high - low)),
            Distribution::LogUniform { low, high } => {
                let (a, b) = (low.ln(), high.ln());
                Value::from((a + u * (b - a)).exp().clamp(*low, *high))
            }
            Distribution::IntUniform { .. } | Distribution::Choice(_) => {
                let n = self.points().expect("discrete") as f64;
                self.index((u * n).floor().min(n - 1.0) as u128)
            }
        }
    }

    /// The `k`-th value of a discrete dimension.
    fn index(&self, k: u128) -> Value {
        match self {
            Distribution::IntUniform { low, .. } => Value::from((*low as i128 + k as i128) as i64),
            Distribution::Choice(v) => v[k as usize].clone(),
            _ => unreachable!("continuous dimensions have no index"),
        }
    }
}

/// A search space: named dimensions, drawn in this order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Space {
    /// Each dimension's key (a training setting, such as `lr`) and its distribution.
    pub dims: Vec<(String, Distribution)>,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) for (seed, draw, dimension): 53 random bits.
fn unit(seed: u64, draw: u64, dim: u64) -> f64 {
    let z = splitmix(seed ^ splitmix(draw ^ splitmix(dim.wrapping_add(0x5eed))));
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// A seeded bijection of [0, n): a balanced Feistel network over the smallest even power of
/// two ≥ n, cycle-walked back into range. Pure, O(1) memory, any n up to 2^126.
fn permute(i: u128, n: u128, seed: u64) -> u128 {
    debug_assert!(i < n);
    let bits = (128 - (n.max(2) - 1).leading_zeros()).div_ceil(2).max(1);
    let mask = (1u128 << bits) - 1;
    let mut x = i;
    loop {
        let (mut l, mut r) = (x >> bits, x & mask);
        for round in 0..4u64 {
            let f = splitmix(seed ^ splitmix(r as u64 ^ ((r >> 64) as u64).rotate_left(17) ^ round))
                as u128
                & mask;
            (l, r) = (r, l ^ f);
        }
        x = (l << bits) | r;
        if x < n {
            return x;
        }
    }
}

impl Space {
    /// How many distinct points the space has, when every dimension is discrete.
    pub fn size(&self) -> Option<u128> {
        self.dims
            .iter()
            .try_fold(1u128, |n, (_, d)| d.points().map(|p| n.saturating_mul(p)))
    }

    /// Draw `i` of the sweep seeded `seed`: one value per dimension, in order.
    pub fn draw(&self, seed: u64, i: u64) -> Vec<(String, Value)> {
        if let Some(n) = self.size() {
            // Finite: point `permute(i)` of the mixed-radix enumeration, so the first n draws
            // are n different configurations.
            let mut k = permute(i as u128 % n, n, seed);
            let mut out: Vec<(String, Value)> = Vec::with_capacity(self.dims.len());
            for (name, d) in self.dims.iter().rev() {
                let p = d.points().expect("discrete");
                out.push((name.clone(), d.index(k % p)));
                k /= p;
            }
            out.reverse();
            return out;
        }
        self.dims
            .iter()
            .enumerate()
            .map(|(j, (name, d))| (name.clone(), d.at(unit(seed, i, j as u64))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn space(dims: &[(&str, Distribution)]) -> Space {
        Space {
            dims: dims
                .iter()
                .map(|(n, d)| (n.to_string(), d.clone()))
                .collect(),
        }
    }

    #[test]
    fn bounds_are_checked_with_a_hint() {
        let e = Distribution::LogUniform {
            low: -4.0,
            high: -0.5,
        }
        .check()
        .unwrap_err();
        assert!(e.contains("not exponents"), "{e}");
        assert!(Distribution::Uniform {
            low: 1.0,
            high: 1.0
        }
        .check()
        .is_err());
        assert!(Distribution::Uniform {
            low: 0.0,
            high: f64::INFINITY
        }
        .check()
        .is_err());
        assert!(Distribution::IntUniform { low: 3, high: 2 }
            .check()
            .is_err());
        assert!(Distribution::IntUniform { low: 2, high: 2 }.check().is_ok());
        assert!(Distribution::Choice(vec![]).check().is_err());
        assert!(Distribution::Choice(vec![1.into(), 1.into()])
            .check()
            .is_err());
    }

    #[test]
    fn draws_stay_in_bounds_and_cover_them() {
        let s = space(&[
            (
                "lr",
                Distribution::LogUniform {
                    low: 1e-4,
                    high: 0.3,
                },
            ),
            (
                "momentum",
                Distribution::Uniform {
                    low: 0.0,
                    high: 0.95,
                },
            ),
            ("epochs", Distribution::IntUniform { low: 1, high: 4 }),
            (
                "batch_size",
                Distribution::Choice(vec![32.into(), 64.into(), 128.into()]),
            ),
        ]);
        let mut lr_decades = [0usize; 4];
        let mut epochs = HashSet::new();
        for i in 0..2000 {
            let d = s.draw(7, i);
            let lr = d[0].1.as_f64().unwrap();
            assert!((1e-4..=0.3).contains(&lr), "{lr}");
            // Log-uniform: every decade from 1e-4 to 1e-1 gets a fair share.
            lr_decades[((lr.log10() + 4.0).floor() as usize).min(3)] += 1;
            let m = d[1].1.as_f64().unwrap();
            assert!((0.0..0.95).contains(&m));
            epochs.insert(d[2].1.as_i64().unwrap());
            assert!([32, 64, 128].contains(&d[3].1.as_i64().unwrap()));
        }
        assert_eq!(epochs, HashSet::from([1, 2, 3, 4]));
        // 2000 draws over 3.48 decades: about 575 per whole decade.
        for (k, n) in lr_decades.iter().take(3).enumerate() {
            assert!((450..700).contains(n), "decade {k}: {n} of 2000");
        }
    }

    #[test]
    fn a_draw_is_a_pure_function_of_seed_and_index() {
        let s = space(&[
            (
                "lr",
                Distribution::LogUniform {
                    low: 1e-4,
                    high: 0.3,
                },
            ),
            (
                "dropout",
                Distribution::Uniform {
                    low: 0.0,
                    high: 0.6,
                },
            ),
        ]);
        let forward: Vec<_> = (0..50).map(|i| s.draw(3, i)).collect();
        let backward: Vec<_> = (0..50).rev().map(|i| s.draw(3, i)).collect();
        assert_eq!(forward, backward.into_iter().rev().collect::<Vec<_>>());
        assert_ne!(s.draw(3, 0), s.draw(4, 0));
        assert_ne!(s.draw(3, 0), s.draw(3, 1));
        // Pinned: the same sweep file gives the same trials after any dependency upgrade.
        assert_eq!(splitmix(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(unit(0, 0, 0).to_bits(), 4595922244161593460);
        assert_eq!(unit(5, 17, 2).to_bits(), 4606967379389214949);
    }

    #[test]
    fn a_discrete_space_never_repeats_before_it_is_exhausted() {
        let s = space(&[
            (
                "batch_size",
                Distribution::Choice(vec![32.into(), 64.into(), 128.into()]),
            ),
            ("epochs", Distribution::IntUniform { low: 1, high: 7 }),
            (
                "augment",
                Distribution::Choice(vec![true.into(), false.into()]),
            ),
        ]);
        assert_eq!(s.size(), Some(42));
        for seed in [0, 1, 99] {
            let seen: HashSet<String> = (0..42)
                .map(|i| serde_json::to_string(&s.draw(seed, i)).unwrap())
                .collect();
            assert_eq!(seen.len(), 42, "seed {seed}");
        }
        // Different seeds visit the points in different orders.
        let order = |seed| (0..42).map(|i| s.draw(seed, i)).collect::<Vec<_>>();
        assert_ne!(order(0), order(1));
    }

    #[test]
    fn permutations_are_bijections_for_awkward_sizes() {
        for n in [1u128, 2, 3, 5, 17, 64, 100, 1000, 4097] {
            let mut seen = vec![false; n as usize];
            for i in 0..n {
                let p = permute(i, n, 12345);
                assert!(p < n);
                assert!(!seen[p as usize], "n={n}: {p} twice");
                seen[p as usize] = true;
            }
        }
    }
}
