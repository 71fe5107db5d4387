//! Early stopping during a run: after each epoch, the trial's objective is compared with the
//! other trials' results at the same epoch, read from the store (so the decision holds across
//! processes), by the sweep's rule ([`crate::prune`]). Each decision is recorded; a trial
//! that comes back to an epoch it was decided at (a resume) replays that decision.

use crate::prune::{self, Decision};
use crate::search::{Objective, Prune, Search};
use crate::store::{DbError, Store};
use trainer::metrics::EpochRecord;

/// A sweep's pruning rule, bound to its store.
pub struct Pruner<'a> {
    /// The store the other trials' results are read from and decisions are written to.
    pub db: &'a Store,
    /// The sweep whose trials are compared.
    pub sweep_id: i64,
    /// The sweep's `[search]` settings: the objective and the rule.
    pub search: &'a Search,
}

impl Pruner<'_> {
    /// Whether the sweep prunes at all.
    pub fn active(&self) -> bool {
        !matches!(self.search.prune, Prune::None)
    }

    /// The trial's value of each objective at the end of `r.epoch`.
    fn values(&self, trial_id: i64, r: &EpochRecord) -> Result<Vec<f64>, DbError> {
        self.search
            .objectives
            .iter()
            .map(|o| {
                Ok(match o {
                    Objective::ValidAcc => r.valid_acc,
                    Objective::ValidLoss => r.valid_loss,
                    Objective::TrainSeconds => self.db.seconds_to(trial_id, r.epoch)?,
                })
            })
            .collect()
    }

    /// The decision for `trial_id` after epoch `r` (recorded before it is returned), or None
    /// where the rule has nothing to decide: no pruning, the trial's last epoch, an epoch that
    /// is not an ASHA rung, or the median rule's warm-up.
    pub fn after_epoch(
        &self,
        trial_id: i64,
        r: &EpochRecord,
        last_epoch: usize,
    ) -> Result<Option<Decision>, DbError> {
        if !self.active() || r.epoch >= last_epoch {
            return Ok(None);
        }
        if let Some(d) = self.db.decision(trial_id, r.epoch)? {
            return Ok(Some(d));
        }
        let mine = self.values(trial_id, r)?;
        let raw = self.db.results_at(self.sweep_id, trial_id, r.epoch)?;
        let others: Vec<Vec<f64>> = raw
            .iter()
            .map(|&[acc, loss, secs]| {
                self.search
                    .objectives
                    .iter()
                    .map(|o| match o {
                        Objective::ValidAcc => acc,
                        Objective::ValidLoss => loss,
                        Objective::TrainSeconds => secs,
                    })
                    .collect()
            })
            .collect();
        let dirs: Vec<prune::Direction> = self
            .search
            .objectives
            .iter()
            .map(|o| o.direction())
            .collect();
        let (rule, d) = match &self.search.prune {
            Prune::None => return Ok(None),
            Prune::Asha(a) => {
                if a.rung_of(r.epoch).is_none() {
                    return Ok(None);
                }
                if dirs.len() == 1 {
                    let o = self.search.objectives[0];
                    let ranked: Vec<(f64, f64)> = others
                        .iter()
                        .zip(&raw)
                        .map(|(v, &[acc, loss, _])| (v[0], tie_break(o, acc, loss)))
                        .collect();
                    let me = (mine[0], tie_break(o, r.valid_acc, r.valid_loss));
                    ("asha", prune::asha_by(a, r.epoch, me, &ranked, dirs[0]))
                } else {
                    (
                        "asha-pareto",
                        prune::asha_pareto(a, r.epoch, &mine, &others, &dirs),
                    )
                }
            }
            Prune::Median(m) => {
                if r.epoch <= m.warmup_epochs {
                    return Ok(None);
                }
                let finished = self.db.finished_count(self.sweep_id)?;
                let firsts: Vec<f64> = others.iter().map(|o| o[0]).collect();
                (
                    "median",
                    prune::median(m, r.epoch, mine[0], &firsts, finished, dirs[0]),
                )
            }
        };
        self.db.record_decision(trial_id, rule, mine[0], &d)?;
        Ok(Some(d))
    }
}

/// How results with the same objective are ranked (larger is better): by the other validation
/// metric, so trials stuck at chance accuracy do not all tie at a rung (see
/// [`prune::asha_by`]); time has none.
pub fn tie_break(objective: Objective, valid_acc: f64, valid_loss: f64) -> f64 {
    match objective {
        Objective::ValidAcc => prune::Direction::Minimize.score(valid_loss),
        Objective::ValidLoss => prune::Direction::Maximize.score(valid_acc),
        Objective::TrainSeconds => 0.0,
    }
}
