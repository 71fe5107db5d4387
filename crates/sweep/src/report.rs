//! Comparison tables, read from the database only.

use crate::store::{DbError, Store, TrialRef, TrialStatus};
use crate::table::{int, num, text, Format, Table};
use serde_json::Value;
use std::collections::BTreeMap;

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// `secs` as a person reads it: `1h02m`, `3m05s`, or `12.3s` under a minute.
pub fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{secs:.1}s")
    }
}

/// An optional stored value as the JSON a table cell keeps (`null` when absent).
fn value<T: Into<Value>>(v: Option<T>) -> Value {
    v.map_or(Value::Null, Into::into)
}

/// Hyperparameters shown in their own columns; other keys that vary across the sweep get a
/// column of their own after these.
const FIXED: &[&str] = &["arch", "lr", "batch_size", "dropout", "epochs"];

#[derive(Clone)]
struct TrialRow {
    id: i64,
    status: TrialStatus,
    config: BTreeMap<String, Value>,
    best_epoch: Option<i64>,
    test_acc: Option<f64>,
    train_seconds: Option<f64>,
    ips: Option<f64>,
    error: Option<String>,
}

/// The trial table lists every trial up to this many; a larger sweep lists its best this
/// many (and at most this many failures), so a million-trial sweep reports in bounded
/// memory and a readable length. SQL over the database has every row.
pub const LIST_LIMIT: usize = 1000;

/// The trials a report shows, read one row at a time.
struct TrialSet {
    /// Every trial, or the best [`LIST_LIMIT`] by test accuracy.
    rows: Vec<TrialRow>,
    /// Unfinished trials with an error, up to [`LIST_LIMIT`].
    failures: Vec<TrialRow>,
    total: usize,
    total_failures: usize,
    /// Hyperparameters that differ between trials (over all of them, not just those kept).
    varying: Vec<String>,
    seeds_vary: bool,
}

fn by_accuracy(a: &TrialRow, b: &TrialRow) -> std::cmp::Ordering {
    b.test_acc
        .unwrap_or(f64::NEG_INFINITY)
        .total_cmp(&a.test_acc.unwrap_or(f64::NEG_INFINITY))
        .then(a.id.cmp(&b.id))
}

fn trials(db: &Store, sweep_id: i64) -> Result<TrialSet, DbError> {
    let mut set = TrialSet {
        rows: Vec::new(),
        failures: Vec::new(),
        total: 0,
        total_failures: 0,
        varying: Vec::new(),
        seeds_vary: false,
    };
    let mut first: Option<BTreeMap<String, Value>> = None;
    let mut differ: std::collections::BTreeSet<String> = Default::default();
    // Every field: those serialised only away from their default are absent at it.
    let defaults: BTreeMap<String, Value> =
        serde_json::from_value(trainer::TrainConfig::default().to_json_full()).unwrap_or_default();
    db.for_each_trial(sweep_id, &mut |r| {
        let config = match serde_json::from_str::<BTreeMap<String, Value>>(&r.config) {
            Ok(stored) => {
                let mut c = defaults.clone();
                c.extend(stored);
                c
            }
            Err(_) => BTreeMap::new(),
        };
        match &first {
            None => first = Some(config.clone()),
            Some(f) => {
                for (k, v) in &config {
                    if f.get(k) != Some(v) {
                        differ.insert(k.clone());
                    }
                }
            }
        }
        let row = TrialRow {
            id: r.id,
            status: r.status,
            config,
            best_epoch: r.best_epoch,
            test_acc: r.test_acc,
            train_seconds: r.train_seconds,
            ips: r.images_per_sec,
            error: r.error,
        };
        set.total += 1;
        if row.error.is_some() {
            set.total_failures += 1;
            if set.failures.len() < LIST_LIMIT {
                set.failures.push(TrialRow {
                    config: BTreeMap::new(),
                    ..row.clone()
                });
            }
        }
        set.rows.push(row);
        // Keep the best LIST_LIMIT; trimming at twice that keeps the sorting amortised.
        if set.rows.len() >= 2 * LIST_LIMIT {
            set.rows.sort_by(by_accuracy);
            set.rows.truncate(LIST_LIMIT);
        }
        Ok(())
    })?;
    set.rows.sort_by(by_accuracy);
    set.rows.truncate(LIST_LIMIT);
    set.seeds_vary = differ.contains("seed");
    set.varying = first
        .map(|f| {
            f.keys()
                .filter(|k| !FIXED.contains(&k.as_str()) && k.as_str() != "seed")
                .filter(|k| differ.contains(*k))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    Ok(set)
}

fn show_value(v: Option<&Value>) -> (String, Value) {
    match v {
        None | Some(Value::Null) => ("-".into(), Value::Null),
        Some(Value::String(s)) => text(s.clone()),
        // Sampled values carry 17 digits; four significant ones tell trials apart on screen
        // (the JSON format and the database keep every bit).
        Some(Value::Number(n)) if n.as_f64().is_some_and(|x| x.fract() != 0.0) => (
            significant(n.as_f64().unwrap_or(0.0), 4),
            Value::Number(n.clone()),
        ),
        Some(v) => (v.to_string(), v.clone()),
    }
}

/// `x` with `digits` significant digits, trailing zeros dropped (0.0059658 → 0.005966).
pub fn significant(x: f64, digits: i32) -> String {
    if x == 0.0 || !x.is_finite() || x.fract() == 0.0 {
        return x.to_string();
    }
    let decimals = (digits - 1 - x.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The trials of `sweep`, best test accuracy first; then the per-class table; then mean ± std
/// over seeds where a config was repeated with several seeds.
pub fn sweep_tables(db: &Store, sweep: &str) -> Result<Vec<Table>, DbError> {
    let sweep_id = db.sweep_id(sweep)?;
    let set = trials(db, sweep_id)?;
    let rows = &set.rows;
    let extra = &set.varying;
    let seeds_vary = set.seeds_vary;
    let cut = set.total > rows.len();

    let mut headers: Vec<&str> = vec![
        "trial", "status", "arch", "lr", "batch", "dropout", "epochs",
    ];
    headers.extend(extra.iter().map(String::as_str));
    if seeds_vary {
        headers.push("seed");
    }
    headers.extend(["best_epoch", "test_acc", "train_time", "img/s"]);
    let title = if cut {
        format!(
            "Sweep `{sweep}`: the best {} of {} trials by test accuracy (the `trial_summary` \
             view has them all)",
            rows.len(),
            set.total
        )
    } else {
        format!("Sweep `{sweep}`: trials by test accuracy")
    };
    let mut t = Table::new(title, &headers);
    for r in rows {
        let mut cells = vec![
            int(Some(r.id)),
            text(r.status.as_str()),
            show_value(r.config.get("arch")),
            show_value(r.config.get("lr")),
            show_value(r.config.get("batch_size")),
            show_value(r.config.get("dropout")),
            show_value(r.config.get("epochs")),
        ];
        for k in extra {
            cells.push(show_value(r.config.get(k)));
        }
        if seeds_vary {
            cells.push(show_value(r.config.get("seed")));
        }
        cells.push(int(r.best_epoch));
        cells.push(num(r.test_acc, pct));
        cells.push(num(r.train_seconds, duration));
        cells.push(num(r.ips, |x| format!("{x:.0}")));
        t.push(cells);
    }
    let mut tables = vec![t];

    if let Some(t) = pruned_table(db, sweep_id, sweep)? {
        tables.push(t);
    }
    if let Some(t) = pareto_table(db, sweep_id, sweep)? {
        tables.push(t);
    }
    let classes = per_class_table(db, sweep_id, sweep)?;
    if !classes.rows.is_empty() {
        tables.push(classes);
    }
    // Over a partial list the means would be wrong: only when every trial is here.
    if seeds_vary && !cut {
        tables.push(seed_table(sweep, rows));
    }
    if !set.failures.is_empty() {
        let title = if set.total_failures > set.failures.len() {
            format!(
                "Sweep `{sweep}`: {} of {} trials that did not finish",
                set.failures.len(),
                set.total_failures
            )
        } else {
            format!("Sweep `{sweep}`: trials that did not finish")
        };
        let mut t = Table::new(title, &["trial", "status", "error"]);
        for r in &set.failures {
            t.push(vec![
                int(Some(r.id)),
                text(r.status.as_str()),
                text(r.error.clone().unwrap_or_default()),
            ]);
        }
        tables.push(t);
    }
    Ok(tables)
}

/// The trials a pruning rule stopped, with where and against what, under a title that says
/// how much training pruning saved; None when the sweep stopped nothing.
fn pruned_table(db: &Store, sweep_id: i64, sweep: &str) -> Result<Option<Table>, DbError> {
    let rows = db.pruned_trials(sweep_id)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let work = db.epoch_work(sweep_id)?;
    let ran = work.ran;
    let full = work.planned.unwrap_or(0).max(1);
    let mut t = Table::new(
        format!(
            "Sweep `{sweep}`: {} trials pruned (stopped early, not tested); {ran} epochs run \
             of {full} without pruning ({:.0}%)",
            rows.len(),
            100.0 * ran as f64 / full as f64
        ),
        &[
            "trial",
            "stopped_after",
            "of_epochs",
            "rule",
            "rung",
            "objective",
            "cutoff",
            "compared_with",
        ],
    );
    for r in &rows {
        t.push(
            [
                Value::from(r.trial_id),
                value(r.pruned_epoch),
                value(r.epochs),
                value(r.rule.clone()),
                value(r.rung),
                value(r.value),
                value(r.cutoff),
                value(r.compared_with),
            ]
            .iter()
            .map(|v| show_value(Some(v)))
            .collect(),
        );
    }
    Ok(Some(t))
}

/// For a sweep with several objectives (`objectives = ["valid_acc", "train_seconds"]`), the
/// Pareto front of its finished trials: the validation accuracy of each trial's best epoch
/// against its training time, fastest first. None for other sweeps, or with no finished
/// trial.
///
/// Only multi-objective sweeps get it: there the front is the answer the user asked for
/// (there is no single best trial), while a single-objective sweep has its best trial at the
/// top of the main table and the front on the accuracy-against-time chart of `plot`; printing
/// it for every grid would lengthen every report. The objectives are read from the sweep
/// file stored with the sweep; one that no longer parses (written for another version) gets
/// no front rather than a failed report.
fn pareto_table(db: &Store, sweep_id: i64, sweep: &str) -> Result<Option<Table>, DbError> {
    let Some(stored) = db.sweep(sweep_id)? else {
        return Ok(None);
    };
    match crate::spec::parse("stored", &stored.spec) {
        Ok(s) if s.search.objectives.len() >= 2 => {}
        _ => return Ok(None),
    }
    let rows = db.pareto_inputs(sweep_id)?;
    // Each trial's (seconds, accuracy) point.
    let points: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.train_seconds, r.valid_acc.unwrap_or(f64::NAN)))
        .collect();
    if points.is_empty() {
        return Ok(None);
    }
    let front = pareto_front(&points);
    let mut t = Table::new(
        format!(
            "Sweep `{sweep}`: Pareto front of validation accuracy against training time, \
             {} of {} finished trials (none is both faster and more accurate than these)",
            front.len(),
            points.len()
        ),
        &["trial", "best_epoch", "valid_acc", "train_time", "test_acc"],
    );
    for &i in front.iter().take(LIST_LIMIT) {
        let r = &rows[i];
        t.push(vec![
            int(Some(r.trial_id)),
            int(r.best_epoch),
            num(Some(points[i].1), pct),
            num(Some(points[i].0), duration),
            num(r.test_acc, pct),
        ]);
    }
    Ok(Some(t))
}

fn per_class_table(db: &Store, sweep_id: i64, sweep: &str) -> Result<Table, DbError> {
    let class_names = db.class_names(sweep_id)?;
    let mut headers = vec!["trial", "arch", "test_acc"];
    headers.extend(class_names.iter().map(String::as_str));
    let mut t = Table::new(
        format!("Sweep `{sweep}`: per-class test accuracy"),
        &headers,
    );
    let rows = db.sweep_class_accuracy(sweep_id, LIST_LIMIT * class_names.len().max(1))?;
    let mut current: Option<i64> = None;
    let mut cells = Vec::new();
    for r in rows {
        let id = r.trial_id;
        if current != Some(id) {
            if current.is_some() {
                t.push(std::mem::take(&mut cells));
            }
            current = Some(id);
            cells = vec![
                int(Some(id)),
                show_value(Some(&value(r.arch))),
                num(r.test_acc, pct),
            ];
        }
        cells.push(num(Some(r.accuracy), |x| format!("{:.1}", x * 100.0)));
    }
    if current.is_some() {
        t.push(cells);
    }
    Ok(t)
}

fn seed_table(sweep: &str, rows: &[TrialRow]) -> Table {
    let mut groups: BTreeMap<String, (BTreeMap<String, Value>, Vec<&TrialRow>)> = BTreeMap::new();
    for r in rows {
        let mut c = r.config.clone();
        c.remove("seed");
        let key = serde_json::to_string(&c).unwrap_or_default();
        groups
            .entry(key)
            .or_insert_with(|| (c, Vec::new()))
            .1
            .push(r);
    }
    let mut t = Table::new(
        format!("Sweep `{sweep}`: mean ± std over seeds"),
        &[
            "arch",
            "lr",
            "batch",
            "dropout",
            "epochs",
            "seeds",
            "test_acc",
            "train_time",
        ],
    );
    let mut out: Vec<(f64, Vec<(String, Value)>)> = Vec::new();
    for (_, (c, members)) in groups {
        let accs: Vec<f64> = members.iter().filter_map(|r| r.test_acc).collect();
        let times: Vec<f64> = members.iter().filter_map(|r| r.train_seconds).collect();
        let (m, s) = mean_std(&accs);
        let (tm, _) = mean_std(&times);
        let acc_cell = if accs.is_empty() {
            ("-".into(), Value::Null)
        } else {
            (
                format!("{:.2}% ± {:.2}", m * 100.0, s * 100.0),
                serde_json::json!({"mean": m, "std": s, "n": accs.len()}),
            )
        };
        out.push((
            if accs.is_empty() {
                f64::NEG_INFINITY
            } else {
                m
            },
            vec![
                show_value(c.get("arch")),
                show_value(c.get("lr")),
                show_value(c.get("batch_size")),
                show_value(c.get("dropout")),
                show_value(c.get("epochs")),
                int(Some(members.len() as i64)),
                acc_cell,
                num((!times.is_empty()).then_some(tm), duration),
            ],
        ));
    }
    out.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, cells) in out {
        t.push(cells);
    }
    t
}

/// The accuracy-against-time Pareto front: the indices of `points` (seconds, accuracy) that
/// no other point beats (as fast and as accurate, and better in one), fastest first.
/// Identical points are all on it; a point with a NaN coordinate never is.
///
/// The same set as [`crate::prune::fronts`]' front 0 (a test checks), by one sweep in time
/// order: fronts computes every front, O(n³) at worst, and a report may cover thousands of
/// trials.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len())
        .filter(|&i| !points[i].0.is_nan() && !points[i].1.is_nan())
        .collect();
    // Fastest first; among equally fast ones, the most accurate first.
    order.sort_by(|&a, &b| {
        let (pa, pb) = (points[a], points[b]);
        pa.0.total_cmp(&pb.0).then(pb.1.total_cmp(&pa.1))
    });
    let mut front = Vec::new();
    // The best accuracy seen so far, and the time that first reached it.
    let mut best: Option<(f64, f64)> = None;
    for i in order {
        let (t, a) = points[i];
        match best {
            Some((b, bt)) if a < b || (a == b && t > bt) => {}
            _ => {
                front.push(i);
                best = Some((a, t));
            }
        }
    }
    front
}

/// Sample mean and standard deviation (n - 1); std is 0 for a single value.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (m, 0.0);
    }
    let var = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, var.sqrt())
}

/// Prints tables in `format` (JSON: one array of tables).
pub fn render(tables: &[Table], format: Format) -> String {
    match format {
        Format::Json => {
            Value::Array(tables.iter().map(Table::to_json).collect()).to_string() + "\n"
        }
        _ => tables
            .iter()
            .map(|t| t.render(format))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// One trial in detail: config, epochs, per-class accuracy, confusion matrix.
///
/// `trial` is an id when it is all digits (`6`), else a prefix of a trial key, written
/// `key:PREFIX` (or just `PREFIX` when it is not all digits): a number never means a key, so
/// trial 6 cannot be shadowed by a key starting with "6". A prefix shared by several
/// trials is an error that lists them.
pub fn trial_tables(db: &Store, trial: &str) -> Result<Vec<Table>, DbError> {
    let prefix = trial.strip_prefix("key:");
    let by = match (prefix, trial.parse::<i64>()) {
        (None, Ok(id)) if trial.bytes().all(|b| b.is_ascii_digit()) => TrialRef::Id(id),
        _ => {
            let prefix = prefix.unwrap_or(trial);
            if prefix.is_empty() {
                return Err(DbError::NoSuchTrial(trial.to_string()));
            }
            TrialRef::KeyPrefix(prefix.to_string())
        }
    };
    let found = db.find_trials(&by, 11)?;
    let d = match found.as_slice() {
        [one] => one,
        [] => return Err(DbError::NoSuchTrial(trial.to_string())),
        many => {
            let mut list: Vec<String> = many
                .iter()
                .take(10)
                .map(|d| {
                    format!(
                        "trial {} (key {}, sweep {})",
                        d.trial.id, d.trial.key, d.sweep
                    )
                })
                .collect();
            if many.len() > 10 {
                list.push("...".into());
            }
            return Err(DbError::AmbiguousTrial {
                given: trial.to_string(),
                matches: list.join(", "),
            });
        }
    };
    let r = &d.trial;
    let id = r.id;
    let mut info = Table::new(format!("Trial {id}"), &["field", "value"]);
    for (name, v) in [
        ("sweep", Value::from(d.sweep.clone())),
        ("key", Value::from(r.key.clone())),
        ("status", Value::from(r.status.as_str())),
        ("device", value(r.device.clone())),
        ("best_epoch", value(r.best_epoch)),
        ("test_acc", value(r.test_acc)),
        ("test_loss", value(r.test_loss)),
        ("train_seconds", value(r.train_seconds)),
        ("error", value(r.error.clone())),
    ] {
        if !v.is_null() {
            info.push(vec![text(name), show_value(Some(&v))]);
        }
    }
    let config: BTreeMap<String, Value> = serde_json::from_str(&r.config).unwrap_or_default();
    for (k, v) in &config {
        info.push(vec![text(format!("config.{k}")), show_value(Some(v))]);
    }
    let mut tables = vec![info];

    let mut e = Table::new(
        "Epochs",
        &[
            "epoch",
            "train_loss",
            "train_acc",
            "valid_loss",
            "valid_acc",
            "lr",
            "seconds",
            "img/s",
        ],
    );
    for r in db.epochs(id)? {
        e.push(vec![
            int(Some(r.epoch)),
            num(r.train_loss, |x| format!("{x:.4}")),
            num(r.train_acc, pct),
            num(r.valid_loss, |x| format!("{x:.4}")),
            num(r.valid_acc, pct),
            num(r.lr, |x| format!("{x:.3e}")),
            num(r.seconds, |x| format!("{x:.1}")),
            num(r.images_per_sec, |x| format!("{x:.0}")),
        ]);
    }
    tables.push(e);

    let classes = db.class_accuracy(id)?;
    if !classes.is_empty() {
        let names: Vec<String> = classes.iter().map(|c| c.class_name.clone()).collect();
        let mut c = Table::new(
            "Per-class test accuracy",
            &["class", "correct", "total", "accuracy"],
        );
        for r in &classes {
            c.push(vec![
                text(r.class_name.clone()),
                int(Some(r.correct)),
                int(Some(r.total)),
                num(Some(r.accuracy), pct),
            ]);
        }
        tables.push(c);
        let cells = db.confusion(id)?;
        let mut headers: Vec<&str> = vec!["true \\ predicted"];
        headers.extend(names.iter().map(String::as_str));
        let mut m = Table::new("Confusion matrix (rows: true class)", &headers);
        for (i, row) in cells.chunks(names.len().max(1)).enumerate() {
            let mut cells = vec![text(names.get(i).cloned().unwrap_or_default())];
            cells.extend(row.iter().map(|c| int(Some(c.count))));
            m.push(cells);
        }
        tables.push(m);
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        assert_eq!(mean_std(&[]), (0.0, 0.0));
        assert_eq!(mean_std(&[0.5]), (0.5, 0.0));
        let (m, s) = mean_std(&[0.6, 0.7, 0.8]);
        assert!((m - 0.7).abs() < 1e-12 && (s - 0.1).abs() < 1e-12);
        assert_eq!(duration(5.04), "5.0s");
        assert_eq!(duration(125.0), "2m05s");
        assert_eq!(duration(3725.0), "1h02m");
    }

    #[test]
    fn pareto_front_is_front_zero_of_fronts() {
        use crate::prune::{fronts, Direction};
        assert!(pareto_front(&[]).is_empty());
        // Faster and better, a tie in time, a duplicate, a NaN.
        let pts = [
            (10.0, 0.5),
            (20.0, 0.6),
            (20.0, 0.55),
            (5.0, 0.4),
            (30.0, 0.6),
            (20.0, 0.6),
            (f64::NAN, 0.9),
            (40.0, 0.7),
        ];
        assert_eq!(pareto_front(&pts), vec![3, 0, 1, 5, 7]);
        // Against the general non-dominated sort, on pseudo-random points with many ties.
        let mut x: u64 = 7;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % 8) as f64
        };
        for n in [1, 2, 3, 10, 40] {
            let pts: Vec<(f64, f64)> = (0..n).map(|_| (next(), next() / 8.0)).collect();
            let scored: Vec<Vec<f64>> = pts
                .iter()
                .map(|&(t, a)| vec![Direction::Maximize.score(a), Direction::Minimize.score(t)])
                .collect();
            let f = fronts(&scored);
            let mut want: Vec<usize> = (0..n).filter(|&i| f[i] == 0).collect();
            let mut got = pareto_front(&pts);
            want.sort();
            got.sort();
            assert_eq!(got, want, "{pts:?}");
        }
    }
}
