//! TPE during a run: when no recorded trial is left to claim, a worker proposes the next
//! draw from the sweep's results ([`crate::tpe`]) inside the store's write lock
//! ([`Backend::propose_and_claim`](crate::store::Backend::propose_and_claim)) and claims it.
//! Proposals are therefore made one at a
//! time across all processes, each from everything recorded before it, and never twice: the
//! layer (grid point and draw) a proposal fills is taken once it is recorded, and a point
//! already in the sweep is never proposed again.

use crate::grid;
use crate::search::{Objective, Sampler};
use crate::spec::SweepSpec;
use crate::store::{Claimed, NewTrial, SearchHistory, Store, TrialStatus, Worker};
use crate::tpe::{self, Ended, Observed};
use crate::Error;
use serde_json::Value;
use std::collections::HashSet;

/// Records and claims the next TPE proposal of `spec` (recorded as `sweep_id`) when one is
/// due; None when there is none: not a TPE sweep, or every draw is recorded.
pub fn propose_next(
    db: &Store,
    spec: &SweepSpec,
    sweep_id: i64,
    data_checksum: &str,
    worker: &Worker,
    device: &str,
) -> Result<Option<Claimed>, Error> {
    let Some(s) = spec
        .search
        .sampling
        .as_ref()
        .filter(|s| s.sampler == Sampler::Tpe)
    else {
        return Ok(None);
    };
    let layers = grid::plans(spec)?.grid_layers();
    let seeds = spec.seeds.len().max(1);
    let objective = spec.search.objectives[0];
    // `propose` runs inside the store's transaction and cannot return an error: it leaves it
    // here and proposes nothing.
    let mut failure: Option<Error> = None;
    let claimed =
        db.propose_and_claim(
            sweep_id,
            worker,
            device,
            &mut |h: &SearchHistory| match proposal(
                spec,
                s,
                h,
                layers,
                seeds,
                objective,
                data_checksum,
            ) {
                Ok(trials) => trials,
                Err(e) => {
                    failure = Some(e);
                    Vec::new()
                }
            },
        )?;
    match failure {
        Some(e) => Err(e),
        None => Ok(claimed),
    }
}

/// The trials (one per seed) of the lowest draw not yet recorded, chosen by TPE from the
/// trials of the same grid point.
fn proposal(
    spec: &SweepSpec,
    s: &crate::search::Sampling,
    h: &SearchHistory,
    layers: usize,
    seeds: usize,
    objective: Objective,
    data_checksum: &str,
) -> Result<Vec<NewTrial>, Error> {
    let layer_of = |ordinal: i64| ordinal as usize / seeds;
    let have: HashSet<usize> = h.trials.iter().map(|t| layer_of(t.ordinal)).collect();
    let Some(layer) =
        (0..layers).find(|&l| s.sampler.proposes(l % s.samples) && !have.contains(&l))
    else {
        return Ok(Vec::new());
    };
    let (point, draw) = (layer / s.samples, layer % s.samples);
    let dir = objective.direction();
    let mut observed = Vec::new();
    let mut pending = Vec::new();
    let mut taken = Vec::new();
    let defaults = trainer::TrainConfig::default().to_json_full();
    for t in h
        .trials
        .iter()
        .filter(|t| layer_of(t.ordinal) < layers && layer_of(t.ordinal) / s.samples == point)
    {
        let config: Value = serde_json::from_str(&t.config)
            .map_err(|e| Error::Corrupt(format!("trial {}: stored config: {e}", t.id)))?;
        let values: Vec<Value> = s
            .space
            .dims
            .iter()
            // A field serialised only away from its default is absent at its default.
            .map(|(k, _)| {
                config
                    .get(k)
                    .or_else(|| defaults.get(k))
                    .cloned()
                    .unwrap_or(Value::Null)
            })
            .collect();
        // The best epoch's objective; a NaN (stored as NULL) is the worst value there is.
        let best = t
            .epochs
            .iter()
            .map(|e| {
                let v = match objective {
                    Objective::ValidAcc => e.valid_acc,
                    _ => e.valid_loss,
                };
                dir.score(v.unwrap_or(f64::NAN))
            })
            .fold(f64::NEG_INFINITY, f64::max);
        let ordinal = t.ordinal as usize;
        match t.status {
            TrialStatus::Done => observed.push(Observed {
                point: values.clone(),
                ordinal,
                state: Ended::Finished { score: best },
            }),
            TrialStatus::Pruned => observed.push(Observed {
                point: values.clone(),
                ordinal,
                state: Ended::Pruned {
                    epoch: t.epochs.len(),
                    score: best,
                },
            }),
            // A NaN loss is the worst result there is, and a result all the same.
            TrialStatus::Diverged => observed.push(Observed {
                point: values.clone(),
                ordinal,
                state: Ended::Finished {
                    score: f64::NEG_INFINITY,
                },
            }),
            TrialStatus::Failed => {}
            TrialStatus::Pending | TrialStatus::Running | TrialStatus::Interrupted => {
                pending.push(values.clone())
            }
        }
        taken.push(values);
    }
    let values = tpe::propose(&s.space, s.seed, draw as u64, &observed, &pending, &|p| {
        taken.iter().any(|t| t.as_slice() == p)
    });
    Ok(grid::proposal(spec, layer, &values)?
        .into_iter()
        .map(|p| NewTrial {
            key: crate::runner::trial_key(&p.config, data_checksum),
            ordinal: p.ordinal,
            config: serde_json::to_value(&p.config).expect("config serialises"),
        })
        .collect())
}
