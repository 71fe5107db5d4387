//! What `plan` and `run --dry-run` list, and the estimate `plan` prints under its table and
//! `run` before it starts.

use crate::estimate::{self, Rates, Total};
use crate::grid::{self, TrialPlan};
use crate::report;
use crate::search::Prune;
use crate::spec::SweepSpec;
use crate::store::{self as db, Store as Db};
use crate::table::{int, num, text, Table};
use crate::Error;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::path::Path;
use trainer::TrainConfig;

/// Past this a CPU sweep gets a warning pointing at pruning.
const LONG_ON_CPU: f64 = 3600.0;

/// The trials of a sweep, one row each, with their estimated durations when given.
pub fn table(name: &str, plans: &[TrialPlan], estimates: Option<&[Option<f64>]>) -> Table {
    let mut headers = vec![
        "#",
        "arch",
        "lr",
        "batch",
        "dropout",
        "epochs",
        "optimizer",
        "seed",
        "swept",
    ];
    if estimates.is_some() {
        headers.push("estimate");
    }
    let mut t = Table::new(format!("Sweep `{name}`: {} trials", plans.len()), &headers);
    for (i, p) in plans.iter().enumerate() {
        let c = &p.config;
        let swept = p
            .swept
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cells = vec![
            // 1-based, as report and show number trials (see the README).
            int(Some(p.ordinal as i64 + 1)),
            text(c.arch.clone()),
            num(Some(c.lr), |x| x.to_string()),
            int(Some(c.batch_size as i64)),
            num(Some(c.dropout), |x| x.to_string()),
            int(Some(c.epochs as i64)),
            text(format!("{:?}", c.optimizer).to_lowercase()),
            int(Some(c.seed as i64)),
            text(swept),
        ];
        if let Some(e) = estimates {
            cells.push(num(e[i], report::duration));
        }
        t.push(cells);
    }
    t
}

/// `plan`: the sweep's trials with the time each should take (from the epochs in `db` when it
/// has some for their architecture, else from a few timed steps on `device`), and the lines
/// of the estimate for the whole sweep.
pub fn with_estimates(
    spec: &SweepSpec,
    plans: &[TrialPlan],
    db: Option<&Db>,
    device: &trainer::Device,
) -> Result<(Table, Vec<String>), Error> {
    let rates = estimate::rates_for(plans.iter().map(|p| &p.config), db, device)?;
    let estimates: Vec<Option<f64>> = plans
        .iter()
        .map(|p| {
            estimate::rate_of(&rates, &p.config)
                .map(|r| estimate::trial_seconds(&p.config, r, p.config.epochs as f64))
        })
        .collect();
    let total = sweep_total(spec, plans.iter().map(|p| &p.config), &rates);
    let lines = total_lines(spec, &total, &trainer::device::name(device));
    Ok((table(&spec.name, plans, Some(&estimates)), lines))
}

/// What `run` prints before it starts: the sweep's estimate (timing a few steps when the
/// database at `db_path`, if there is one, holds no epochs of these architectures), and a
/// warning when it is long on the CPU. Nothing is written.
pub fn forecast(
    spec: &SweepSpec,
    device: &trainer::Device,
    db_path: &Path,
) -> Result<Vec<String>, Error> {
    let db = match db::probe(db_path)? {
        db::Probe::Ours { .. } => Some(Db::open_read_only(db_path)?),
        _ => None,
    };
    // Streamed: a sweep allowed to be huge is never held whole (see runner::load).
    let configs = || {
        grid::plans(spec)
            .into_iter()
            .flatten()
            .filter_map(|p| p.ok().map(|p| p.config))
    };
    // One configuration per (architecture, batch size) is all the rates need.
    let mut firsts: Vec<TrainConfig> = Vec::new();
    for c in configs() {
        if !firsts
            .iter()
            .any(|f| f.arch == c.arch && f.batch_size == c.batch_size)
        {
            firsts.push(c);
        }
    }
    let rates = estimate::rates_for(&firsts, db.as_ref(), device)?;
    let total = sweep_total(spec, configs(), &rates);
    let mut lines = total_lines(spec, &total, &trainer::device::name(device));
    if matches!(device, trainer::Device::Cpu)
        && total.pruned_seconds.unwrap_or(total.seconds) > LONG_ON_CPU
    {
        lines.push(long_on_cpu_warning(spec));
    }
    Ok(lines)
}

/// The sweep's estimate over `configs` (ASHA's expectation too, when it prunes that way).
fn sweep_total(
    spec: &SweepSpec,
    configs: impl IntoIterator<Item = impl Borrow<TrainConfig>>,
    rates: &HashMap<(String, usize), Rates>,
) -> Total {
    let asha = match &spec.search.prune {
        Prune::Asha(a) => Some(a),
        _ => None,
    };
    let mut total = Total::default();
    for c in configs {
        let c = c.borrow();
        if let Some(r) = estimate::rate_of(rates, c) {
            total.add(c, r, asha);
        }
    }
    total
}

/// The warning for a sweep past [`LONG_ON_CPU`], with advice it can act on: a file that
/// already prunes needs fewer trials or epochs, not the section it has.
fn long_on_cpu_warning(spec: &SweepSpec) -> String {
    let advice = if matches!(spec.search.prune, Prune::None) {
        "a [prune] section in the sweep file stops hopeless trials early (README: \
         \"Estimates, pruning and trial numbers\")"
    } else {
        "even with its pruning; fewer trials or epochs shorten it"
    };
    format!("warning: this sweep runs over an hour on the CPU; {advice}, or use a GPU (--device)")
}

/// The estimate for the whole sweep, for a person.
fn total_lines(spec: &SweepSpec, total: &Total, device: &str) -> Vec<String> {
    let mut lines = vec![format!(
        "{} trials, about {} on {device} ({})",
        total.trials,
        report::duration(total.seconds),
        total.basis()
    )];
    match (&spec.search.prune, total.pruned_seconds) {
        (Prune::Asha(a), Some(p)) => lines.push(format!(
            "with ASHA pruning (reduction_factor {}, grace_epochs {}): expected about {} \
             ({:.0}% of the epochs; an expectation, a small sweep prunes less)",
            a.reduction_factor,
            a.grace_epochs,
            report::duration(p),
            100.0 * total.pruned_epochs / total.epochs.max(1.0)
        )),
        (Prune::Median(_), _) => lines.push(
            "with median pruning: less than this, by how much depends on the learning curves"
                .into(),
        ),
        _ => {}
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_long_sweep_warning_suggests_pruning_only_to_a_sweep_without_it() {
        let base = "name = \"w\"\n[base]\narch = \"vgg6\"\n";
        let plain = crate::spec::parse("w.toml", base).unwrap();
        assert!(long_on_cpu_warning(&plain).contains("a [prune] section"));
        let pruned = format!("{base}[prune]\nkind = \"asha\"\n");
        let pruned = crate::spec::parse("w.toml", &pruned).unwrap();
        let w = long_on_cpu_warning(&pruned);
        assert!(
            !w.contains("[prune]") && w.contains("even with its pruning"),
            "{w}"
        );
    }
}
