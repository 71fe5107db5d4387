//! TPE during a run: when no recorded trial is left to claim, a worker proposes the next
//! draw from the sweep's results ([`crate::tpe`]) inside the store's write lock
//! ([`Db::propose`]) and records it as a pending trial, which it (or another worker) then
//! claims like any other. Proposals are therefore made one at a time across all processes,
//! each from everything recorded before it, and never twice: the layer (grid point and
//! draw) a proposal fills is taken once it is recorded, and a point already in the sweep is
//! never proposed again.

use crate::db::{Db, Recorded};
use crate::grid;
use crate::search::Sampler;
use crate::spec::SweepSpec;
use crate::tpe::{self, Ended, Observed};
use crate::Error;
use serde_json::Value;
use std::collections::HashSet;

/// Records the next TPE proposal of `spec` (recorded as `sweep_id`) when one is due.
/// Returns false when there is none: not a TPE sweep, or every draw is recorded.
pub fn propose_next(
    db: &Db,
    spec: &SweepSpec,
    sweep_id: i64,
    data_checksum: &str,
) -> Result<bool, Error> {
    let Some(s) = spec
        .search
        .sampling
        .as_ref()
        .filter(|s| s.sampler == Sampler::Tpe)
    else {
        return Ok(false);
    };
    let layers = grid::plans(spec)?.grid_layers();
    let seeds = spec.seeds.len().max(1);
    let objective = spec.search.objectives[0];
    let added = db.propose(sweep_id, |trials: &[Recorded]| -> Result<_, Error> {
        let have: HashSet<usize> = trials.iter().map(|t| t.ordinal / seeds).collect();
        let Some(layer) =
            (0..layers).find(|&l| s.sampler.proposes(l % s.samples) && !have.contains(&l))
        else {
            return Ok(Vec::new());
        };
        let (point, draw) = (layer / s.samples, layer % s.samples);
        let mut observed = Vec::new();
        let mut pending = Vec::new();
        let mut taken = Vec::new();
        for t in trials
            .iter()
            .filter(|t| t.ordinal / seeds / s.samples == point && t.ordinal / seeds < layers)
        {
            let config: Value = serde_json::from_str(&t.config)
                .map_err(|e| Error::Corrupt(format!("trial {}: stored config: {e}", t.id)))?;
            let values: Vec<Value> = s
                .space
                .dims
                .iter()
                .map(|(k, _)| config.get(k).cloned().unwrap_or(Value::Null))
                .collect();
            let dir = objective.direction();
            let best = t
                .epochs
                .iter()
                .map(|[acc, loss]| {
                    dir.score(if objective == crate::search::Objective::ValidAcc {
                        *acc
                    } else {
                        *loss
                    })
                })
                .fold(f64::NEG_INFINITY, f64::max);
            match t.status.as_str() {
                "done" => observed.push(Observed {
                    point: values.clone(),
                    ordinal: t.ordinal,
                    state: Ended::Finished { score: best },
                }),
                "pruned" => observed.push(Observed {
                    point: values.clone(),
                    ordinal: t.ordinal,
                    state: Ended::Pruned {
                        epoch: t.epochs.len(),
                        score: best,
                    },
                }),
                // A NaN loss is the worst result there is, and a result all the same.
                "diverged" => observed.push(Observed {
                    point: values.clone(),
                    ordinal: t.ordinal,
                    state: Ended::Finished {
                        score: f64::NEG_INFINITY,
                    },
                }),
                "failed" => {}
                _ => pending.push(values.clone()),
            }
            taken.push(values);
        }
        let values = tpe::propose(&s.space, s.seed, draw as u64, &observed, &pending, &|p| {
            taken.iter().any(|t| t.as_slice() == p)
        });
        let plans = grid::proposal(spec, layer, &values)?;
        Ok(plans
            .into_iter()
            .map(|p| {
                (
                    crate::runner::trial_key(&p.config, data_checksum),
                    p.ordinal,
                    serde_json::to_value(&p.config).expect("config serialises"),
                )
            })
            .collect())
    })?;
    Ok(added > 0)
}
