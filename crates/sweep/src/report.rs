//! Comparison tables, read from the database only.

use crate::db::{Db, DbError};
use crate::table::{int, num, text, Format, Table};
use serde_json::Value;
use std::collections::BTreeMap;

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

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

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// Hyperparameters shown in their own columns; other keys that vary across the sweep get a
/// column of their own after these.
const FIXED: &[&str] = &["arch", "lr", "batch_size", "dropout", "epochs"];

#[derive(Clone)]
struct TrialRow {
    id: i64,
    status: String,
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

fn trials(db: &Db, sweep_id: i64) -> Result<TrialSet, DbError> {
    let err = |e| db.err(e);
    let mut st = db
        .conn
        .prepare(
            "SELECT id, status, config, best_epoch, test_acc, train_seconds, images_per_sec, error
             FROM trials WHERE sweep_id = ?1 ORDER BY ordinal",
        )
        .map_err(err)?;
    let mut cursor = st.query([sweep_id]).map_err(err)?;
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
    while let Some(r) = cursor.next().map_err(err)? {
        let config: BTreeMap<String, Value> =
            serde_json::from_str(&r.get::<_, String>(2).map_err(err)?).unwrap_or_default();
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
            id: r.get(0).map_err(err)?,
            status: r.get(1).map_err(err)?,
            config,
            best_epoch: r.get(3).map_err(err)?,
            test_acc: r.get(4).map_err(err)?,
            train_seconds: r.get(5).map_err(err)?,
            ips: r.get(6).map_err(err)?,
            error: r.get(7).map_err(err)?,
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
    }
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
pub fn sweep_tables(db: &Db, sweep: &str) -> Result<Vec<Table>, DbError> {
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
            text(r.status.clone()),
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
                text(r.status.clone()),
                text(r.error.clone().unwrap_or_default()),
            ]);
        }
        tables.push(t);
    }
    Ok(tables)
}

/// The trials a pruning rule stopped, with where and against what, under a title that says
/// how much training pruning saved; None when the sweep stopped nothing.
fn pruned_table(db: &Db, sweep_id: i64, sweep: &str) -> Result<Option<Table>, DbError> {
    // Read-only commands read older databases as they are: before schema 3 nothing is pruned.
    let (_, has) = db.query_strings(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'decisions'",
        &[],
    )?;
    if has[0][0].as_i64() != Some(1) {
        return Ok(None);
    }
    let (_, rows) = db.query_strings(
        "SELECT t.id, t.pruned_epoch, t.epochs, d.rule, d.rung, d.value, d.cutoff, d.compared_with
         FROM trials t LEFT JOIN decisions d ON d.trial_id = t.id AND d.epoch = t.pruned_epoch
         WHERE t.sweep_id = ?1 AND t.status = 'pruned' ORDER BY t.pruned_epoch DESC, d.value DESC, t.id",
        &[&sweep_id],
    )?;
    if rows.is_empty() {
        return Ok(None);
    }
    let (_, work) = db.query_strings(
        "SELECT (SELECT COUNT(*) FROM epochs e JOIN trials t ON t.id = e.trial_id
                 WHERE t.sweep_id = ?1),
                (SELECT SUM(epochs) FROM trials WHERE sweep_id = ?1)",
        &[&sweep_id],
    )?;
    let ran = work[0][0].as_i64().unwrap_or(0);
    let full = work[0][1].as_i64().unwrap_or(0).max(1);
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
    for r in rows {
        t.push(vec![
            show_value(Some(&r[0])),
            show_value(Some(&r[1])),
            show_value(Some(&r[2])),
            show_value(Some(&r[3])),
            show_value(Some(&r[4])),
            show_value(Some(&r[5])),
            show_value(Some(&r[6])),
            show_value(Some(&r[7])),
        ]);
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
fn pareto_table(db: &Db, sweep_id: i64, sweep: &str) -> Result<Option<Table>, DbError> {
    let (_, spec) = db.query_strings("SELECT spec FROM sweeps WHERE id = ?1", &[&sweep_id])?;
    let Some(text) = spec.first().and_then(|r| r[0].as_str()) else {
        return Ok(None);
    };
    match crate::spec::parse("stored", text) {
        Ok(s) if s.search.objectives.len() >= 2 => {}
        _ => return Ok(None),
    }
    let err = |e| db.err(e);
    // Streamed into a few numbers a trial: a sweep may have finished a great many.
    let mut st = db
        .conn
        .prepare(
            "SELECT t.id, e.valid_acc, t.train_seconds, t.test_acc, t.best_epoch
             FROM trials t LEFT JOIN epochs e ON e.trial_id = t.id AND e.epoch = t.best_epoch
             WHERE t.sweep_id = ?1 AND t.status = 'done' AND t.train_seconds IS NOT NULL
             ORDER BY t.id",
        )
        .map_err(err)?;
    let mut cursor = st.query([sweep_id]).map_err(err)?;
    // (id, best epoch, test accuracy) beside each (seconds, accuracy) point.
    let mut rows: Vec<(i64, Option<i64>, Option<f64>)> = Vec::new();
    let mut points = Vec::new();
    while let Some(r) = cursor.next().map_err(err)? {
        let acc: Option<f64> = r.get(1).map_err(err)?;
        rows.push((
            r.get(0).map_err(err)?,
            r.get(4).map_err(err)?,
            r.get(3).map_err(err)?,
        ));
        points.push((r.get::<_, f64>(2).map_err(err)?, acc.unwrap_or(f64::NAN)));
    }
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
        let (id, best, test) = rows[i];
        t.push(vec![
            int(Some(id)),
            int(best),
            num(Some(points[i].1), pct),
            num(Some(points[i].0), duration),
            num(test, pct),
        ]);
    }
    Ok(Some(t))
}

fn per_class_table(db: &Db, sweep_id: i64, sweep: &str) -> Result<Table, DbError> {
    let (_, names) = db.query_strings(
        "SELECT DISTINCT class_index, class_name FROM class_accuracy c
         JOIN trials t ON t.id = c.trial_id WHERE t.sweep_id = ?1 ORDER BY class_index",
        &[&sweep_id],
    )?;
    let class_names: Vec<String> = names
        .iter()
        .map(|r| r[1].as_str().unwrap_or_default().to_string())
        .collect();
    let mut headers = vec!["trial", "arch", "test_acc"];
    headers.extend(class_names.iter().map(String::as_str));
    let mut t = Table::new(
        format!("Sweep `{sweep}`: per-class test accuracy"),
        &headers,
    );
    let (_, rows) = db.query_strings(
        "SELECT t.id, t.arch, t.test_acc, c.class_index, c.accuracy FROM trials t
         JOIN class_accuracy c ON c.trial_id = t.id
         WHERE t.sweep_id = ?1 ORDER BY t.test_acc DESC, t.id, c.class_index
         LIMIT ?2",
        &[&sweep_id, &((LIST_LIMIT * class_names.len().max(1)) as i64)],
    )?;
    let mut current: Option<i64> = None;
    let mut cells = Vec::new();
    for r in rows {
        let id = r[0].as_i64().unwrap_or_default();
        if current != Some(id) {
            if current.is_some() {
                t.push(std::mem::take(&mut cells));
            }
            current = Some(id);
            cells = vec![int(Some(id)), show_value(Some(&r[1])), num(f(&r[2]), pct)];
        }
        cells.push(num(f(&r[4]), |x| format!("{:.1}", x * 100.0)));
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
pub fn trial_tables(db: &Db, trial: &str) -> Result<Vec<Table>, DbError> {
    const COLUMNS: &str = "SELECT t.id, s.name, t.trial_key, t.status, t.config, t.error,
                t.test_acc, t.test_loss, t.best_epoch, t.train_seconds, t.device
         FROM trials t JOIN sweeps s ON s.id = t.sweep_id";
    let prefix = trial.strip_prefix("key:");
    let found = match (prefix, trial.parse::<i64>()) {
        (None, Ok(id)) if trial.bytes().all(|b| b.is_ascii_digit()) => {
            db.query_strings(&format!("{COLUMNS} WHERE t.id = ?1"), &[&id])?
                .1
        }
        _ => {
            let prefix = prefix.unwrap_or(trial);
            if prefix.is_empty() {
                return Err(DbError::NoSuchTrial(trial.to_string()));
            }
            // substr, not LIKE: `%` and `_` in the argument are not wildcards.
            db.query_strings(
                &format!(
                    "{COLUMNS} WHERE substr(t.trial_key, 1, length(?1)) = ?1 ORDER BY t.id LIMIT 11"
                ),
                &[&prefix],
            )?
            .1
        }
    };
    let r = match found.as_slice() {
        [one] => one,
        [] => return Err(DbError::NoSuchTrial(trial.to_string())),
        many => {
            let mut list: Vec<String> = many
                .iter()
                .take(10)
                .map(|r| {
                    format!(
                        "trial {} (key {}, sweep {})",
                        r[0],
                        r[2].as_str().unwrap_or("?"),
                        r[1].as_str().unwrap_or("?")
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
    let id = r[0].as_i64().unwrap_or_default();
    let mut info = Table::new(format!("Trial {id}"), &["field", "value"]);
    for (name, v) in [
        ("sweep", &r[1]),
        ("key", &r[2]),
        ("status", &r[3]),
        ("device", &r[10]),
        ("best_epoch", &r[8]),
        ("test_acc", &r[6]),
        ("test_loss", &r[7]),
        ("train_seconds", &r[9]),
        ("error", &r[5]),
    ] {
        if !v.is_null() {
            info.push(vec![text(name), show_value(Some(v))]);
        }
    }
    let config: BTreeMap<String, Value> =
        serde_json::from_str(r[4].as_str().unwrap_or("{}")).unwrap_or_default();
    for (k, v) in &config {
        info.push(vec![text(format!("config.{k}")), show_value(Some(v))]);
    }
    let mut tables = vec![info];

    let (_, epochs) = db.query_strings(
        "SELECT epoch, train_loss, train_acc, valid_loss, valid_acc, lr, seconds, images_per_sec
         FROM epochs WHERE trial_id = ?1 ORDER BY epoch",
        &[&id],
    )?;
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
    for r in epochs {
        e.push(vec![
            int(r[0].as_i64()),
            num(f(&r[1]), |x| format!("{x:.4}")),
            num(f(&r[2]), pct),
            num(f(&r[3]), |x| format!("{x:.4}")),
            num(f(&r[4]), pct),
            num(f(&r[5]), |x| format!("{x:.3e}")),
            num(f(&r[6]), |x| format!("{x:.1}")),
            num(f(&r[7]), |x| format!("{x:.0}")),
        ]);
    }
    tables.push(e);

    let (_, classes) = db.query_strings(
        "SELECT class_name, correct, total, accuracy FROM class_accuracy WHERE trial_id = ?1
         ORDER BY class_index",
        &[&id],
    )?;
    if !classes.is_empty() {
        let names: Vec<String> = classes
            .iter()
            .map(|r| r[0].as_str().unwrap_or_default().to_string())
            .collect();
        let mut c = Table::new(
            "Per-class test accuracy",
            &["class", "correct", "total", "accuracy"],
        );
        for r in &classes {
            c.push(vec![
                show_value(Some(&r[0])),
                int(r[1].as_i64()),
                int(r[2].as_i64()),
                num(f(&r[3]), pct),
            ]);
        }
        tables.push(c);
        let (_, cells) = db.query_strings(
            "SELECT true_class, predicted_class, count FROM confusion WHERE trial_id = ?1
             ORDER BY true_class, predicted_class",
            &[&id],
        )?;
        let mut headers: Vec<&str> = vec!["true \\ predicted"];
        headers.extend(names.iter().map(String::as_str));
        let mut m = Table::new("Confusion matrix (rows: true class)", &headers);
        for (i, row) in cells.chunks(names.len().max(1)).enumerate() {
            let mut cells = vec![text(names.get(i).cloned().unwrap_or_default())];
            cells.extend(row.iter().map(|c| int(c[2].as_i64())));
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
