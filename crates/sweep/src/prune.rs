//! Early stopping rules over learning curves: asynchronous successive halving (ASHA), the
//! median rule, and ASHA over several objectives (accuracy against time, by Pareto
//! dominance). Pure functions: the caller reads the other trials' results from the store,
//! so decisions hold across processes, and records each [`Decision`], so a resumed sweep
//! can replay them.
//!
//! A NaN objective is the worst value there is: it never stops another trial early by
//! making a cutoff NaN (Ray's median rule stopped every trial after one NaN), and the
//! trial that produced it is the first to go.

use serde::{Deserialize, Serialize};

/// Whether larger or smaller is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Larger is better (accuracy).
    Maximize,
    /// Smaller is better (loss, time).
    Minimize,
}

impl Direction {
    /// `v` as a score where larger is better and NaN is the worst.
    pub fn score(self, v: f64) -> f64 {
        if v.is_nan() {
            return f64::NEG_INFINITY;
        }
        match self {
            Direction::Maximize => v,
            Direction::Minimize => -v,
        }
    }
}

/// Asynchronous successive halving: rungs at `grace · η^k` epochs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Asha {
    /// η (`reduction_factor` in the sweep file): each rung keeps the best 1/η of the trials that
    /// reached it, and rungs are η times further apart (values below 2 count as 2).
    pub reduction_factor: usize,
    /// The first rung's epoch (`grace_epochs`; 0 counts as 1).
    pub grace_epochs: usize,
}

impl Asha {
    /// Whether `epoch` (1-based) is a rung, and which (0-based).
    pub fn rung_of(&self, epoch: usize) -> Option<usize> {
        let (eta, grace) = (self.reduction_factor.max(2), self.grace_epochs.max(1));
        let mut at = grace;
        let mut k = 0;
        while at <= epoch {
            if at == epoch {
                return Some(k);
            }
            at = at.checked_mul(eta)?;
            k += 1;
        }
        None
    }
}

/// The median rule: after `warmup_epochs`, once `startup_trials` trials have finished, stop a
/// trial whose objective is worse than the median of the other trials at the same epoch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Median {
    /// No trial is stopped at or before this epoch (`warmup_epochs`).
    pub warmup_epochs: usize,
    /// No trial is stopped before this many trials have finished (`startup_trials`).
    pub startup_trials: usize,
}

/// What a rule decided for one trial at one epoch, with what it compared against: stored
/// with the trial so a report can show why it stopped and a resumed run can replay it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The epoch (1-based) after which the rule decided.
    pub epoch: usize,
    /// The ASHA rung (0-based), if the rule is ASHA.
    pub rung: Option<usize>,
    /// How many trials' results at this epoch (this one included) the decision used.
    pub compared_with: usize,
    /// The value to beat (ASHA: the worst value still kept; median: the median).
    pub cutoff: Option<f64>,
    /// Whether the trial stops here.
    pub stop: bool,
}

/// ASHA's decision for a trial whose objective at rung `rung` is `value`, given `others`: the
/// values every other trial recorded at that rung. With fewer than η results at the rung, it
/// continues; otherwise it continues if it is among the best ⌊n/η⌋ (at least one); a tie with
/// the last kept value continues. [`asha_by`] breaks such ties with a second metric.
pub fn asha(rule: &Asha, epoch: usize, value: f64, others: &[f64], dir: Direction) -> Decision {
    let flat: Vec<(f64, f64)> = others.iter().map(|&v| (v, 0.0)).collect();
    asha_by(rule, epoch, (value, 0.0), &flat, dir)
}

/// [`asha`] where each result is (objective, tie-break score): results with the same
/// objective are ranked by the tie-break (larger is better; NaN worst). At chance level many
/// trials share one validation accuracy exactly (every image put in one class), and a rule
/// that lets every tie through (as Optuna's and Ray's do) keeps all of them at the first
/// rung; the sweep breaks accuracy ties with the validation loss (see [`crate::pruner`]).
pub fn asha_by(
    rule: &Asha,
    epoch: usize,
    value: (f64, f64),
    others: &[(f64, f64)],
    dir: Direction,
) -> Decision {
    let n = others.len() + 1;
    let Some(rung) = asha_applies(rule, epoch, n) else {
        return go_on(epoch, rule.rung_of(epoch), n);
    };
    let eta = rule.reduction_factor.max(2);
    let key = |(v, t): (f64, f64)| (dir.score(v), Direction::Maximize.score(t));
    let cmp = |a: &(f64, f64), b: &(f64, f64)| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1));
    let mut scores: Vec<(f64, f64)> = others.iter().map(|&o| key(o)).collect();
    scores.push(key(value));
    scores.sort_by(|a, b| cmp(b, a));
    let keep = (n / eta).max(1);
    let cutoff = scores[keep - 1];
    Decision {
        epoch,
        rung: Some(rung),
        compared_with: n,
        cutoff: Some(unscore(cutoff.0, dir)),
        stop: cmp(&key(value), &cutoff).is_lt(),
    }
}

/// The rung ASHA decides at, when `epoch` is one and `n` results are there (at least η).
fn asha_applies(rule: &Asha, epoch: usize, n: usize) -> Option<usize> {
    rule.rung_of(epoch)
        .filter(|_| n >= rule.reduction_factor.max(2))
}

/// A decision to go on without a comparison (no rung, too few results, warm-up).
fn go_on(epoch: usize, rung: Option<usize>, n: usize) -> Decision {
    Decision {
        epoch,
        rung,
        compared_with: n,
        cutoff: None,
        stop: false,
    }
}

fn unscore(score: f64, dir: Direction) -> f64 {
    if score == f64::NEG_INFINITY {
        return f64::NAN;
    }
    match dir {
        Direction::Maximize => score,
        Direction::Minimize => -score,
    }
}

/// The median rule's decision. `others`: the other trials' values at `epoch`; `finished`: how
/// many trials of the sweep have finished (done or pruned).
pub fn median(
    rule: &Median,
    epoch: usize,
    value: f64,
    others: &[f64],
    finished: usize,
    dir: Direction,
) -> Decision {
    let n = others.len() + 1;
    if epoch <= rule.warmup_epochs || finished < rule.startup_trials || others.is_empty() {
        return go_on(epoch, None, n);
    }
    // NaN results count as the worst: they lower the median's rank, never make it NaN.
    let mut scores: Vec<f64> = others.iter().map(|&v| dir.score(v)).collect();
    scores.sort_by(|a, b| a.total_cmp(b));
    let m = scores.len();
    let mid = if m % 2 == 1 {
        scores[m / 2]
    } else {
        let (a, b) = (scores[m / 2 - 1], scores[m / 2]);
        if a == f64::NEG_INFINITY {
            b
        } else {
            (a + b) / 2.0
        }
    };
    Decision {
        epoch,
        rung: None,
        compared_with: n,
        cutoff: Some(unscore(mid, dir)),
        stop: dir.score(value) < mid,
    }
}

/// Whether `a` dominates `b`: at least as good in every objective and better in one (scores,
/// larger is better).
fn dominates(a: &[f64], b: &[f64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x >= y) && a.iter().zip(b).any(|(x, y)| x > y)
}

/// Non-dominated sorting: the front index (0 = the Pareto front) of each point.
pub fn fronts(points: &[Vec<f64>]) -> Vec<usize> {
    let n = points.len();
    let mut front = vec![usize::MAX; n];
    let mut left: Vec<usize> = (0..n).collect();
    let mut k = 0;
    while !left.is_empty() {
        let current: Vec<usize> = left
            .iter()
            .copied()
            .filter(|&i| {
                !left
                    .iter()
                    .any(|&j| j != i && dominates(&points[j], &points[i]))
            })
            .collect();
        for &i in &current {
            front[i] = k;
        }
        left.retain(|i| front[*i] == usize::MAX);
        k += 1;
    }
    front
}

/// ASHA over several objectives: at a rung a trial continues while fewer than ⌊n/η⌋ (at
/// least one) trials lie in fronts strictly before its own, i.e. whole Pareto fronts are
/// kept in order of dominance, so the accuracy-vs-time front is never cut by an arbitrary
/// weighting. `values[i]` holds one value per objective; `others` the other trials'.
pub fn asha_pareto(
    rule: &Asha,
    epoch: usize,
    value: &[f64],
    others: &[Vec<f64>],
    dirs: &[Direction],
) -> Decision {
    let n = others.len() + 1;
    let Some(rung) = asha_applies(rule, epoch, n) else {
        return go_on(epoch, rule.rung_of(epoch), n);
    };
    let eta = rule.reduction_factor.max(2);
    let score = |v: &[f64]| -> Vec<f64> { v.iter().zip(dirs).map(|(x, d)| d.score(*x)).collect() };
    let mut points: Vec<Vec<f64>> = others.iter().map(|o| score(o)).collect();
    points.push(score(value));
    let f = fronts(&points);
    let mine = f[n - 1];
    let ahead = f.iter().filter(|&&k| k < mine).count();
    let keep = (n / eta).max(1);
    Decision {
        epoch,
        rung: Some(rung),
        compared_with: n,
        cutoff: None,
        stop: ahead >= keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::*;

    const ASHA: Asha = Asha {
        reduction_factor: 3,
        grace_epochs: 1,
    };

    #[test]
    fn rungs_are_grace_times_powers_of_eta() {
        let r: Vec<Option<usize>> = (1..=30).map(|e| ASHA.rung_of(e)).collect();
        assert_eq!(r[0], Some(0));
        assert_eq!(r[2], Some(1));
        assert_eq!(r[8], Some(2));
        assert_eq!(r[26], Some(3));
        assert_eq!(r.iter().flatten().count(), 4);
        let g2 = Asha {
            reduction_factor: 2,
            grace_epochs: 2,
        };
        let rungs: Vec<usize> = (1..=20).filter(|&e| g2.rung_of(e).is_some()).collect();
        assert_eq!(rungs, vec![2, 4, 8, 16]);
    }

    /// Six trials at chance accuracy and three above it: with ties let through, all nine go
    /// on at the first rung; broken by the loss, only the best three do.
    #[test]
    fn accuracy_ties_are_broken_by_the_loss() {
        let chance: Vec<(f64, f64)> = (0..6).map(|i| (0.1, 2.3 + 0.001 * i as f64)).collect();
        let mut others = chance.clone();
        others.extend([(0.3, 1.9), (0.25, 2.0)]);
        let loss_score = |(a, l): (f64, f64)| (a, -l);
        let ranked: Vec<(f64, f64)> = others.iter().map(|&o| loss_score(o)).collect();
        let flat: Vec<f64> = others.iter().map(|o| o.0).collect();
        // Nine results, keep three: the cutoff is a chance-level accuracy.
        assert!(!asha(&ASHA, 1, 0.1, &flat, Maximize).stop, "ties continue");
        // With the loss: the best chance-level trial (loss 2.3) is third and goes on, the
        // others stop.
        assert!(!asha_by(&ASHA, 1, (0.1, -2.2995), &ranked, Maximize).stop);
        assert!(asha_by(&ASHA, 1, (0.1, -2.3015), &ranked, Maximize).stop);
        assert!(
            !asha_by(&ASHA, 1, (0.4, -2.5), &ranked, Maximize).stop,
            "accuracy first"
        );
        // A NaN tie-break is the worst.
        assert!(asha_by(&ASHA, 1, (0.1, f64::NAN), &ranked, Maximize).stop);
    }

    #[test]
    fn asha_keeps_the_top_third_and_lets_the_first_few_through() {
        // Fewer than η results at the rung: continue, whatever the value.
        assert!(!asha(&ASHA, 1, 0.1, &[0.9], Maximize).stop);
        // Six results: the best two continue.
        let others = [0.5, 0.6, 0.7, 0.8, 0.9];
        assert!(asha(&ASHA, 1, 0.1, &others, Maximize).stop);
        assert!(!asha(&ASHA, 1, 0.85, &others, Maximize).stop);
        let d = asha(&ASHA, 1, 0.75, &others, Maximize);
        assert!(d.stop);
        assert_eq!((d.cutoff, d.compared_with, d.rung), (Some(0.8), 6, Some(0)));
        // Losses: smaller is better.
        assert!(!asha(&ASHA, 3, 0.2, &[1.0, 2.0, 3.0], Minimize).stop);
        assert!(asha(&ASHA, 3, 2.5, &[1.0, 2.0, 3.0], Minimize).stop);
        // Not a rung: never stops.
        assert!(!asha(&ASHA, 2, 0.0, &others, Maximize).stop);
    }

    #[test]
    fn ties_with_the_cutoff_continue() {
        let d = asha(&ASHA, 1, 0.8, &[0.8, 0.8, 0.1, 0.1, 0.1], Maximize);
        assert!(!d.stop, "{d:?}");
    }

    #[test]
    fn nan_is_the_worst_and_never_stops_the_others() {
        // A NaN among the others does not make the cutoff NaN.
        let others = [f64::NAN, 0.2, 0.3];
        assert!(!asha(&ASHA, 1, 0.5, &others, Maximize).stop);
        // As losses the NaN is still the worst: 0.1 is the best of four and continues.
        assert!(!asha(&ASHA, 1, 0.1, &others, Minimize).stop);
        assert!(asha(&ASHA, 1, 0.5, &others, Minimize).stop);
        // The NaN trial itself goes first.
        assert!(asha(&ASHA, 1, f64::NAN, &[0.2, 0.3], Maximize).stop);
        assert!(asha(&ASHA, 1, f64::NAN, &[0.2, 0.3], Minimize).stop);
        // All NaN: nothing better than the trial, it continues (the cutoff is NaN too).
        let all = asha(&ASHA, 1, f64::NAN, &[f64::NAN, f64::NAN], Maximize);
        assert!(!all.stop);
        // Median: a NaN among the others is below every real value.
        let rule = Median {
            warmup_epochs: 0,
            startup_trials: 0,
        };
        assert!(!median(&rule, 1, 0.5, &[f64::NAN, 0.4, 0.6], 3, Maximize).stop);
        assert!(median(&rule, 1, f64::NAN, &[0.4, 0.6], 3, Maximize).stop);
    }

    /// The same results at a rung give the same decision whatever order they arrived in.
    #[test]
    fn decisions_do_not_depend_on_arrival_order() {
        let values = [0.31, 0.72, 0.55, f64::NAN, 0.55, 0.9, 0.12];
        for (i, &v) in values.iter().enumerate() {
            let mut others: Vec<f64> = values
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, x)| *x)
                .collect();
            let first = asha(&ASHA, 1, v, &others, Maximize).stop;
            for rot in 0..others.len() {
                others.rotate_left(1);
                assert_eq!(
                    asha(&ASHA, 1, v, &others, Maximize).stop,
                    first,
                    "{i} {rot}"
                );
                let mut rev = others.clone();
                rev.reverse();
                assert_eq!(asha(&ASHA, 1, v, &rev, Maximize).stop, first);
            }
        }
        // Of 7 results, ⌊7/3⌋ = 2 continue: 0.9 and 0.72.
        let kept: Vec<f64> = values
            .iter()
            .enumerate()
            .filter(|(i, v)| {
                let others: Vec<f64> = values
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| j != i)
                    .map(|(_, x)| *x)
                    .collect();
                !asha(&ASHA, 1, **v, &others, Maximize).stop
            })
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(kept, vec![0.72, 0.9]);
    }

    #[test]
    fn median_waits_for_warmup_and_startup_trials() {
        let rule = Median {
            warmup_epochs: 2,
            startup_trials: 3,
        };
        let others = [0.5, 0.6, 0.7];
        assert!(!median(&rule, 2, 0.1, &others, 5, Maximize).stop, "warm-up");
        assert!(!median(&rule, 3, 0.1, &others, 2, Maximize).stop, "startup");
        let d = median(&rule, 3, 0.55, &others, 3, Maximize);
        assert!(d.stop);
        assert_eq!(d.cutoff, Some(0.6));
        assert!(!median(&rule, 3, 0.6, &others, 3, Maximize).stop);
        // Even count: the mean of the middle two; losses stop above it.
        let d = median(&rule, 3, 1.6, &[1.0, 2.0, 1.2, 1.8], 3, Minimize);
        assert_eq!(d.cutoff, Some(1.5));
        assert!(d.stop);
    }

    #[test]
    fn pareto_fronts_and_multi_objective_asha() {
        // (accuracy, seconds): maximise accuracy, minimise time.
        let dirs = [Maximize, Minimize];
        let pts: Vec<Vec<f64>> = [[0.9, 100.0], [0.8, 10.0], [0.7, 50.0], [0.95, 400.0]]
            .iter()
            .map(|p| p.iter().zip(&dirs).map(|(x, d)| d.score(*x)).collect())
            .collect();
        assert_eq!(fronts(&pts), vec![0, 0, 1, 0]);
        let others = vec![vec![0.9, 100.0], vec![0.8, 10.0], vec![0.95, 400.0]];
        // Dominated by (0.8, 10 s): three trials are ahead of it, ⌊4/3⌋ = 1 kept: stop.
        assert!(asha_pareto(&ASHA, 1, &[0.7, 50.0], &others, &dirs).stop);
        // On the front: nobody is ahead, it continues, however slow.
        assert!(!asha_pareto(&ASHA, 1, &[0.99, 1000.0], &others, &dirs).stop);
        // Fewer than η: continue.
        assert!(!asha_pareto(&ASHA, 1, &[0.1, 1e9], &others[..1], &dirs).stop);
    }
}
