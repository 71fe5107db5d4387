//! Tree-structured Parzen Estimator (TPE) proposals, with Optuna's defaults: the first
//! [`N_STARTUP`] configurations are the random sampler's draws, then each new one is chosen
//! among [`N_CANDIDATES`] candidates drawn from l(x), the density of the best γ(n) trials, as
//! the one with the largest l(x)/g(x), g being the density of the rest.
//!
//! A pure function of its inputs: the trials recorded so far, the sweep's seed and the
//! draw's index. The caller reads the history inside the store's write lock and records the
//! proposal before the lock is released, so two workers never get the same proposal, and a
//! resumed sweep reuses what was recorded. Trials still running count as bad ones (what
//! Optuna calls the constant liar, off by default there): a second worker is pushed away from
//! what the first is already trying instead of proposing it again.
//!
//! Each dimension is modelled on its own (Optuna's default, `multivariate=False`): numbers in
//! a truncated-normal mixture (log-uniform ones on a log scale, integers over
//! `[low - 0.5, high + 0.5]`), choices as a weighted categorical.

use crate::space::{Distribution, Space};
use serde_json::Value;

/// Random draws before TPE takes over (Optuna's `n_startup_trials`).
pub const N_STARTUP: usize = 10;
/// Candidates drawn from l(x) per dimension (Optuna's `n_ei_candidates`).
pub const N_CANDIDATES: usize = 24;
/// The weight of the flat prior kernel in each density.
const PRIOR_WEIGHT: f64 = 1.0;

/// How many of `n` trials form the "good" group: Optuna's default γ(n) = min(⌈0.1·n⌉, 25).
pub fn gamma(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

/// A recorded trial as TPE ranks it.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// Its value of each dimension of the space, in the space's order.
    pub point: Vec<Value>,
    /// Its position in the sweep; older trials weigh less once there are more than 25.
    pub ordinal: usize,
    /// How it ended.
    pub state: Ended,
}

/// How a recorded trial ended, with its objective as a score (larger is better; NaN as
/// `-inf`, see [`crate::prune::Direction::score`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ended {
    /// Ran all its epochs; `score` is its best epoch's.
    Finished {
        /// Its best epoch's objective, as a score.
        score: f64,
    },
    /// Stopped early by a pruning rule after `epoch` epochs; `score` is its best so far.
    /// Ranked below every finished trial, the longer-running first (as Optuna does).
    Pruned {
        /// The last epoch it ran (1-based).
        epoch: usize,
        /// Its best objective up to then, as a score.
        score: f64,
    },
}

/// Sorts `observed` best first: finished trials by score, then pruned ones by how far they
/// got and then by score; ties by ordinal, so the order is total and reproducible.
fn rank(observed: &mut [&Observed]) {
    observed.sort_by(|a, b| {
        let key = |o: &Observed| match o.state {
            Ended::Finished { score } => (1, usize::MAX, score),
            Ended::Pruned { epoch, score } => (0, epoch, score),
        };
        let (ka, kb) = (key(a), key(b));
        kb.0.cmp(&ka.0)
            .then(kb.1.cmp(&ka.1))
            .then(kb.2.total_cmp(&ka.2))
            .then(a.ordinal.cmp(&b.ordinal))
    });
}

/// Draw `draw` of a TPE search over `space` seeded `seed`, given the trials that ended
/// (`observed`) and those still queued or running (`pending`, points in the space's order).
/// `taken` says whether a point is already in the sweep; a taken point is never returned
/// while the space has room (a finite space is walked in the random sampler's order as the
/// last resort). Before [`N_STARTUP`] trials have ended, this is the random sampler's draw.
pub fn propose(
    space: &Space,
    seed: u64,
    draw: u64,
    observed: &[Observed],
    pending: &[Vec<Value>],
    taken: &dyn Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let random =
        |i: u64| -> Vec<Value> { space.draw(seed, i).into_iter().map(|(_, v)| v).collect() };
    if observed.len() < N_STARTUP {
        let p = random(draw);
        if !taken(&p) {
            return p;
        }
    } else {
        let mut sorted: Vec<&Observed> = observed.iter().collect();
        rank(&mut sorted);
        let n_below = gamma(sorted.len());
        let (below, above) = sorted.split_at(n_below);
        // Each group's points in the order they were run, for the age weights.
        let by_age = |g: &[&Observed]| {
            let mut v: Vec<&Observed> = g.to_vec();
            v.sort_by_key(|o| o.ordinal);
            v.into_iter().map(|o| o.point.clone()).collect::<Vec<_>>()
        };
        let below = by_age(below);
        let mut above = by_age(above);
        above.extend(pending.iter().cloned());
        // A few attempts with fresh candidates: a discrete space can offer only taken points.
        for attempt in 0..16u64 {
            let mut rng = Rng::new(seed, draw, attempt);
            let p: Vec<Value> = space
                .dims
                .iter()
                .enumerate()
                .map(|(j, (_, d))| {
                    let col = |g: &[Vec<Value>]| g.iter().map(|p| p[j].clone()).collect::<Vec<_>>();
                    best_candidate(d, &col(&below), &col(&above), &mut rng)
                })
                .collect();
            if !taken(&p) {
                return p;
            }
        }
    }
    // Walk the random sampler's draws from this one on: a finite space of at least
    // `samples` points (checked when the sweep is read) has a free one.
    (0..u64::MAX)
        .map(|k| random(draw.wrapping_add(k)))
        .find(|p| !taken(p))
        .expect("the space has a point not yet taken")
}

/// The candidate with the largest log l(x) − log g(x) among [`N_CANDIDATES`] drawn from l.
fn best_candidate(d: &Distribution, below: &[Value], above: &[Value], rng: &mut Rng) -> Value {
    match d {
        Distribution::Choice(options) => {
            let index = |v: &Value| options.iter().position(|o| o == v);
            let l = Categorical::fit(options.len(), below.iter().filter_map(index));
            let g = Categorical::fit(options.len(), above.iter().filter_map(index));
            let best = (0..N_CANDIDATES)
                .map(|_| l.sample(rng))
                .max_by(|&a, &b| {
                    (l.log_pdf(a) - g.log_pdf(a))
                        .total_cmp(&(l.log_pdf(b) - g.log_pdf(b)))
                        // Equal ratios: the smaller index, so the choice is reproducible.
                        .then(b.cmp(&a))
                })
                .expect("at least one candidate");
            options[best].clone()
        }
        _ => {
            let num = Numeric::of(d);
            let xs = |g: &[Value]| {
                g.iter()
                    .filter_map(|v| v.as_f64())
                    .map(|v| num.to_x(v))
                    .collect::<Vec<_>>()
            };
            let l = Parzen::fit(&xs(below), num.low, num.high);
            let g = Parzen::fit(&xs(above), num.low, num.high);
            let best = (0..N_CANDIDATES)
                .map(|_| l.sample(rng))
                .max_by(|&a, &b| {
                    (l.log_pdf(a) - g.log_pdf(a)).total_cmp(&(l.log_pdf(b) - g.log_pdf(b)))
                })
                .expect("at least one candidate");
            num.from_x(best)
        }
    }
}

/// A numeric dimension in the space TPE models it in.
struct Numeric<'a> {
    d: &'a Distribution,
    low: f64,
    high: f64,
}

impl<'a> Numeric<'a> {
    fn of(d: &'a Distribution) -> Self {
        let (low, high) = match *d {
            Distribution::Uniform { low, high } => (low, high),
            Distribution::LogUniform { low, high } => (low.ln(), high.ln()),
            // Each integer owns the unit interval around it, so the ends are as likely as
            // the middle under the flat prior.
            Distribution::IntUniform { low, high } => (low as f64 - 0.5, high as f64 + 0.5),
            Distribution::Choice(_) => unreachable!("choices are categorical"),
        };
        Numeric { d, low, high }
    }

    fn to_x(&self, v: f64) -> f64 {
        match self.d {
            Distribution::LogUniform { .. } => v.max(f64::MIN_POSITIVE).ln(),
            _ => v,
        }
    }

    // The inverse of `to_x` on this dimension's distribution, so it needs `self`.
    #[allow(clippy::wrong_self_convention)]
    fn from_x(&self, x: f64) -> Value {
        match *self.d {
            Distribution::Uniform { low, high } => Value::from(x.clamp(low, high)),
            Distribution::LogUniform { low, high } => Value::from(x.exp().clamp(low, high)),
            Distribution::IntUniform { low, high } => {
                Value::from((x.round() as i64).clamp(low, high))
            }
            Distribution::Choice(_) => unreachable!("choices are categorical"),
        }
    }
}

/// Optuna's observation weights: equal up to 25, then the oldest fade linearly from 1/n.
fn age_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    (0..ramp)
        .map(|i| {
            if ramp == 1 {
                1.0 / n as f64
            } else {
                1.0 / n as f64 + (1.0 - 1.0 / n as f64) * i as f64 / (ramp - 1) as f64
            }
        })
        .chain(std::iter::repeat_n(1.0, 25))
        .collect()
}

/// A mixture of normals truncated to [low, high]: one per observation and a flat-ish prior.
struct Parzen {
    low: f64,
    high: f64,
    /// (weight, mean, standard deviation, log of the mass inside the bounds).
    kernels: Vec<(f64, f64, f64, f64)>,
}

impl Parzen {
    /// Optuna's univariate estimator: each kernel as wide as the larger gap to its sorted
    /// neighbours (the outermost ones, their one gap), clipped to
    /// [(high − low) / min(100, 1 + n), high − low]; the prior centred, as wide as the range.
    fn fit(xs: &[f64], low: f64, high: f64) -> Self {
        let range = high - low;
        let mut mus: Vec<f64> = xs.iter().map(|x| x.clamp(low, high)).collect();
        let mut weights = age_weights(mus.len());
        mus.push(0.5 * (low + high));
        weights.push(PRIOR_WEIGHT);
        let n = mus.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| mus[a].total_cmp(&mus[b]));
        let mut sigmas = vec![0.0; n];
        for (k, &i) in order.iter().enumerate() {
            let left = (k > 0).then(|| mus[i] - mus[order[k - 1]]);
            let right = (k + 1 < n).then(|| mus[order[k + 1]] - mus[i]);
            sigmas[i] = match (left, right) {
                (Some(a), Some(b)) => a.max(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => range,
            };
        }
        sigmas[n - 1] = range;
        let min_sigma = range / (100f64).min(1.0 + n as f64);
        let total: f64 = weights.iter().sum();
        let kernels = (0..n)
            .map(|i| {
                let s = sigmas[i].clamp(min_sigma, range);
                let mass = normal_cdf((high - mus[i]) / s) - normal_cdf((low - mus[i]) / s);
                (weights[i] / total, mus[i], s, mass.max(1e-300).ln())
            })
            .collect();
        Parzen { low, high, kernels }
    }

    fn sample(&self, rng: &mut Rng) -> f64 {
        let k = rng.pick(self.kernels.iter().map(|k| k.0));
        let (_, mu, s, _) = self.kernels[k];
        // Rejection from the untruncated normal: every mean lies inside the bounds and no
        // kernel is wider than the range, so at least a third of the draws land inside.
        for _ in 0..1000 {
            let x = mu + s * rng.normal();
            if (self.low..=self.high).contains(&x) {
                return x;
            }
        }
        mu
    }

    fn log_pdf(&self, x: f64) -> f64 {
        let terms: Vec<f64> = self
            .kernels
            .iter()
            .map(|&(w, mu, s, log_mass)| {
                let z = (x - mu) / s;
                w.ln() - 0.5 * z * z - s.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln() - log_mass
            })
            .collect();
        log_sum_exp(&terms)
    }
}

/// A categorical density: each observation puts its weight on its own option, plus a
/// uniform prior, so no option ever has probability 0.
struct Categorical {
    p: Vec<f64>,
}

impl Categorical {
    fn fit(k: usize, seen: impl Iterator<Item = usize>) -> Self {
        let seen: Vec<usize> = seen.collect();
        let weights = age_weights(seen.len());
        let mut p = vec![PRIOR_WEIGHT / k as f64; k];
        for (i, w) in seen.iter().zip(weights) {
            p[*i] += w;
        }
        let total: f64 = p.iter().sum();
        p.iter_mut().for_each(|x| *x /= total);
        Categorical { p }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        rng.pick(self.p.iter().copied())
    }

    fn log_pdf(&self, i: usize) -> f64 {
        self.p[i].ln()
    }
}

fn log_sum_exp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Φ(z), from erfc (W. J. Cody's rational approximations are overkill here: the
/// Numerical Recipes erfc below is accurate to 1.2e-7, far finer than any choice TPE makes).
fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// SplitMix64 over (seed, draw, attempt): a proposal is a pure function of its inputs, the
/// same after a `rand` upgrade (see [`crate::space`]).
struct Rng(u64);

impl Rng {
    fn new(seed: u64, draw: u64, attempt: u64) -> Self {
        Rng(seed ^ 0x7e9e_0000_0000_0000 ^ draw.rotate_left(20) ^ attempt.rotate_left(44))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit();
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// An index drawn with probability proportional to `weights`.
    fn pick(&mut self, weights: impl Iterator<Item = f64> + Clone) -> usize {
        let total: f64 = weights.clone().sum();
        let mut u = self.unit() * total;
        let mut last = 0;
        for (i, w) in weights.enumerate() {
            if u < w {
                return i;
            }
            u -= w;
            last = i;
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lr_space() -> Space {
        Space {
            dims: vec![
                (
                    "lr".into(),
                    Distribution::LogUniform {
                        low: 1e-4,
                        high: 1.0,
                    },
                ),
                (
                    "batch_size".into(),
                    Distribution::Choice(vec![32.into(), 64.into(), 128.into()]),
                ),
            ],
        }
    }

    /// A toy objective: best at lr = 0.01 and batch 64.
    fn score(p: &[Value]) -> f64 {
        let lr = p[0].as_f64().unwrap();
        let b = p[1].as_i64().unwrap();
        -(lr.log10() + 2.0).powi(2) - if b == 64 { 0.0 } else { 0.5 }
    }

    fn observed(space: &Space, seed: u64, n: usize) -> Vec<Observed> {
        (0..n)
            .map(|i| {
                let point: Vec<Value> = space
                    .draw(seed, i as u64)
                    .into_iter()
                    .map(|(_, v)| v)
                    .collect();
                let s = score(&point);
                Observed {
                    point,
                    ordinal: i,
                    state: Ended::Finished { score: s },
                }
            })
            .collect()
    }

    #[test]
    fn gamma_is_optunas_default() {
        assert_eq!(gamma(10), 1);
        assert_eq!(gamma(11), 2);
        assert_eq!(gamma(100), 10);
        assert_eq!(gamma(1000), 25);
    }

    #[test]
    fn the_first_draws_are_the_random_samplers() {
        let s = lr_space();
        let obs = observed(&s, 3, N_STARTUP - 1);
        let p = propose(&s, 3, 9, &obs, &[], &|_| false);
        let r: Vec<Value> = s.draw(3, 9).into_iter().map(|(_, v)| v).collect();
        assert_eq!(p, r);
    }

    #[test]
    fn a_proposal_is_a_pure_function_of_its_inputs() {
        let s = lr_space();
        let obs = observed(&s, 1, 20);
        let a = propose(&s, 1, 20, &obs, &[], &|_| false);
        let b = propose(&s, 1, 20, &obs, &[], &|_| false);
        assert_eq!(a, b);
        let c = propose(&s, 1, 21, &obs, &[], &|_| false);
        assert_ne!(a, c, "another draw index, other candidates");
    }

    #[test]
    fn proposals_stay_inside_the_bounds() {
        let s = Space {
            dims: vec![
                (
                    "momentum".into(),
                    Distribution::Uniform {
                        low: 0.0,
                        high: 0.95,
                    },
                ),
                (
                    "epochs".into(),
                    Distribution::IntUniform { low: 2, high: 4 },
                ),
                (
                    "lr".into(),
                    Distribution::LogUniform {
                        low: 1e-4,
                        high: 0.3,
                    },
                ),
            ],
        };
        let obs: Vec<Observed> = (0..30)
            .map(|i| Observed {
                point: s.draw(5, i).into_iter().map(|(_, v)| v).collect(),
                ordinal: i as usize,
                state: Ended::Finished {
                    score: (i % 7) as f64,
                },
            })
            .collect();
        for d in 30..80 {
            let p = propose(&s, 5, d, &obs, &[], &|_| false);
            let m = p[0].as_f64().unwrap();
            assert!((0.0..=0.95).contains(&m), "{m}");
            let e = p[1].as_i64().expect("an integer stays an integer");
            assert!((2..=4).contains(&e), "{e}");
            let lr = p[2].as_f64().unwrap();
            assert!((1e-4..=0.3).contains(&lr), "{lr}");
        }
    }

    /// TPE's point: after the random start it proposes near the best trials far more often
    /// than random draws land there.
    #[test]
    fn it_concentrates_on_the_good_region() {
        let s = lr_space();
        let mut obs = observed(&s, 7, N_STARTUP);
        for d in N_STARTUP..40 {
            let point = propose(&s, 7, d as u64, &obs, &[], &|_| false);
            let sc = score(&point);
            obs.push(Observed {
                point,
                ordinal: d,
                state: Ended::Finished { score: sc },
            });
        }
        let near = |o: &[Observed]| {
            o.iter()
                .filter(|o| (o.point[0].as_f64().unwrap().log10() + 2.0).abs() < 0.5)
                .count()
        };
        let tpe = near(&obs[N_STARTUP..]);
        let random = near(&observed(&s, 7, 40)[N_STARTUP..]);
        assert!(
            tpe >= 2 * random.max(3),
            "tpe {tpe} of 30 near the optimum, random {random}"
        );
        let best_tpe = obs.iter().map(|o| score(&o.point)).fold(f64::MIN, f64::max);
        let best_random = observed(&s, 7, 40)
            .iter()
            .map(|o| score(&o.point))
            .fold(f64::MIN, f64::max);
        assert!(best_tpe >= best_random, "{best_tpe} < {best_random}");
    }

    /// A point already in the sweep (another worker's, or a finished one) is never proposed
    /// again while the space has room: a two-point space yields the other point.
    #[test]
    fn a_taken_point_is_never_proposed_again() {
        let s = Space {
            dims: vec![(
                "batch_size".into(),
                Distribution::Choice(vec![32.into(), 64.into()]),
            )],
        };
        let obs: Vec<Observed> = (0..N_STARTUP)
            .map(|i| Observed {
                point: vec![Value::from(if i == 0 { 64 } else { 32 })],
                ordinal: i,
                state: Ended::Finished {
                    score: if i == 0 { 1.0 } else { 0.0 },
                },
            })
            .collect();
        let best = propose(&s, 0, 10, &obs, &[], &|_| false);
        assert_eq!(best, vec![Value::from(64)]);
        let other = propose(&s, 0, 10, &obs, &[], &|p| p[0] == 64);
        assert_eq!(other, vec![Value::from(32)]);
    }

    /// Running trials count against their region (constant liar): with one good trial and
    /// another worker already trying its neighbourhood, the proposal moves away.
    #[test]
    fn pending_trials_push_proposals_away() {
        let s = Space {
            dims: vec![(
                "momentum".into(),
                Distribution::Uniform {
                    low: 0.0,
                    high: 1.0,
                },
            )],
        };
        let obs: Vec<Observed> = (0..N_STARTUP)
            .map(|i| Observed {
                point: vec![Value::from(0.05 + 0.1 * i as f64)],
                ordinal: i,
                state: Ended::Finished {
                    score: if i == 2 { 1.0 } else { 0.0 },
                },
            })
            .collect();
        let alone = propose(&s, 4, 10, &obs, &[], &|_| false)[0]
            .as_f64()
            .unwrap();
        assert!((alone - 0.25).abs() < 0.1, "{alone}");
        let pending: Vec<Vec<Value>> = (0..8)
            .map(|k| vec![Value::from(0.21 + 0.01 * k as f64)])
            .collect();
        let next = propose(&s, 4, 10, &obs, &pending, &|_| false)[0]
            .as_f64()
            .unwrap();
        assert!(
            (next - 0.25).abs() > (alone - 0.25).abs(),
            "{next} vs {alone}"
        );
    }

    #[test]
    fn pruned_trials_rank_below_finished_ones_longest_first() {
        let o = |ordinal, state| Observed {
            point: vec![],
            ordinal,
            state,
        };
        let a = o(
            0,
            Ended::Pruned {
                epoch: 1,
                score: 0.9,
            },
        );
        let b = o(1, Ended::Finished { score: 0.5 });
        let c = o(
            2,
            Ended::Pruned {
                epoch: 3,
                score: 0.4,
            },
        );
        let d = o(
            3,
            Ended::Finished {
                score: f64::NEG_INFINITY,
            },
        );
        let mut v = vec![&a, &b, &c, &d];
        rank(&mut v);
        let order: Vec<usize> = v.iter().map(|o| o.ordinal).collect();
        assert_eq!(order, vec![1, 3, 2, 0]);
    }

    #[test]
    fn the_parzen_density_integrates_to_one() {
        let p = Parzen::fit(&[0.1, 0.15, 0.8], 0.0, 1.0);
        let n = 20_000;
        let integral: f64 = (0..n)
            .map(|i| p.log_pdf((i as f64 + 0.5) / n as f64).exp() / n as f64)
            .sum();
        assert!((integral - 1.0).abs() < 1e-3, "{integral}");
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
    }
}
