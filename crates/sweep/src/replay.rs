//! What a pruning rule would have done to a sweep that ran without one: each trial's
//! learning curve is replayed through the rule in the order a single worker ran the trials,
//! comparing it, at each epoch, with the earlier trials that got that far. Training is
//! deterministic, so a pruned trial's first epochs are exactly those of its unpruned run, and
//! the replay gives the decisions a real pruned run on one worker makes: `bench/search_bench.sh`
//! checks that against a real run, then uses the replay to price ASHA and the median rule on
//! every seed without training each sweep three times. Ties are broken as a run breaks them
//! ([`Curve::tie_breaks`]).

use crate::prune::{self, Direction};
use crate::search::Prune;

/// One trial of an unpruned run, in the order it ran.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// The objective after each epoch it recorded, epoch 1 first.
    pub values: Vec<f64>,
    /// The tie-break score after each epoch ([`crate::pruner::tie_break`]).
    pub tie_breaks: Vec<f64>,
    /// The epochs it was configured for.
    pub epochs: usize,
    /// Whether it finished (a diverged or failed trial does not count as finished for the
    /// median rule's start-up).
    pub finished: bool,
}

/// The epoch at which `rule` stops each trial (None: it runs to the end), by the same pure
/// rules a run applies ([`prune::asha`], [`prune::median`]).
pub fn replay(rule: &Prune, curves: &[Curve], dir: Direction) -> Vec<Option<usize>> {
    let mut stopped: Vec<Option<usize>> = Vec::with_capacity(curves.len());
    for (k, c) in curves.iter().enumerate() {
        let mut stop = None;
        for (i, &value) in c.values.iter().enumerate() {
            let epoch = i + 1;
            if epoch >= c.epochs {
                break;
            }
            // The earlier trials' values at this epoch, as far as each of them got.
            let reached: Vec<usize> = (0..k)
                .filter(|&j| stopped[j].is_none_or(|s| s >= epoch))
                .filter(|&j| curves[j].values.len() > i)
                .collect();
            let others: Vec<f64> = reached.iter().map(|&j| curves[j].values[i]).collect();
            let d = match rule {
                Prune::None => break,
                Prune::Asha(a) => {
                    if a.rung_of(epoch).is_none() {
                        continue;
                    }
                    let tb =
                        |j: usize, i: usize| curves[j].tie_breaks.get(i).copied().unwrap_or(0.0);
                    let ranked: Vec<(f64, f64)> = reached
                        .iter()
                        .map(|&j| (curves[j].values[i], tb(j, i)))
                        .collect();
                    prune::asha_by(a, epoch, (value, tb(k, i)), &ranked, dir)
                }
                Prune::Median(m) => {
                    if epoch <= m.warmup_epochs {
                        continue;
                    }
                    let finished = (0..k)
                        .filter(|&j| curves[j].finished || stopped[j].is_some())
                        .count();
                    prune::median(m, epoch, value, &others, finished, dir)
                }
            };
            if d.stop {
                stop = Some(epoch);
                break;
            }
        }
        stopped.push(stop);
    }
    stopped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prune::{Asha, Median};

    fn curve(values: &[f64]) -> Curve {
        Curve {
            values: values.to_vec(),
            tie_breaks: Vec::new(),
            epochs: values.len(),
            finished: true,
        }
    }

    #[test]
    fn asha_stops_the_worst_at_each_rung_once_eta_trials_got_there() {
        let rule = Prune::Asha(Asha {
            reduction_factor: 3,
            grace_epochs: 1,
        });
        let curves = [
            curve(&[0.5, 0.6, 0.7, 0.8]),
            curve(&[0.4, 0.5, 0.6, 0.7]),
            // Third at rung 0 (epoch 1): only the best ⌊3/3⌋ = 1 goes on.
            curve(&[0.3, 0.9, 0.9, 0.9]),
            curve(&[0.6, 0.7, 0.8, 0.9]),
        ];
        let s = replay(&rule, &curves, Direction::Maximize);
        assert_eq!(s, vec![None, None, Some(1), None]);
    }

    #[test]
    fn the_median_rule_waits_for_its_start_up_trials_and_warm_up() {
        let rule = Prune::Median(Median {
            warmup_epochs: 1,
            startup_trials: 2,
        });
        let curves = [
            curve(&[0.5, 0.6, 0.7]),
            curve(&[0.1, 0.2, 0.3]),
            // Below the median of the two before it at epoch 2: stopped there, not at 1.
            curve(&[0.1, 0.2, 0.3]),
            curve(&[0.9, 0.9, 0.9]),
        ];
        let s = replay(&rule, &curves, Direction::Maximize);
        assert_eq!(s, vec![None, None, Some(2), None]);
    }

    #[test]
    fn no_rule_stops_nothing() {
        let curves = [curve(&[0.1, 0.2]), curve(&[0.0, 0.0])];
        assert_eq!(
            replay(&Prune::None, &curves, Direction::Maximize),
            vec![None, None]
        );
    }
}
