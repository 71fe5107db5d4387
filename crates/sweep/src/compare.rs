//! `compare`: two runs of a sweep (or two sweeps), trial by trial. Trials match by their
//! resolved config (so runs on different data, whose trial keys differ, still match); the
//! comparison names every trial whose test accuracy dropped by more than a threshold and
//! every trial that finished before and fails now.

use crate::exit::Exit;
use crate::report::{duration, mean_std};
use crate::store::{DbError, Store, TrialStatus};
use crate::table::{int, num, text, Table};
use crate::Error;
use serde_json::Value;
use std::collections::BTreeMap;

struct Trial {
    id: i64,
    status: TrialStatus,
    config: BTreeMap<String, Value>,
    test_acc: Option<f64>,
    train_seconds: Option<f64>,
    error: Option<String>,
}

impl Trial {
    /// The config as canonical JSON (sorted keys): what trials match on.
    fn key(&self) -> String {
        serde_json::to_string(&self.config).unwrap_or_default()
    }

    fn done(&self) -> bool {
        self.status == TrialStatus::Done && self.test_acc.is_some()
    }
}

fn trials(db: &Store, sweep: &str) -> Result<Vec<Trial>, DbError> {
    let id = db.sweep_id(sweep)?;
    let mut out = Vec::new();
    db.for_each_trial(id, &mut |r| {
        out.push(Trial {
            id: r.id,
            status: r.status,
            config: serde_json::from_str(&r.config).unwrap_or_default(),
            test_acc: r.test_acc,
            train_seconds: r.train_seconds,
            error: r.error,
        });
        Ok(())
    })?;
    Ok(out)
}

/// What a comparison found.
pub struct Comparison {
    /// The per-trial comparison, then (when trials repeat over seeds) the means over seeds per
    /// configuration.
    pub tables: Vec<Table>,
    /// Regressions and newly failing trials: any makes the comparison fail.
    pub problems: Vec<String>,
    /// Things worth knowing that are not failures (unmatched or unfinished trials).
    pub notes: Vec<String>,
    /// One line: how many trials matched and the mean accuracy change.
    pub summary: String,
}

impl Comparison {
    /// How a gate ends on this comparison: [`Exit::Regression`] when anything got worse.
    pub fn exit(&self) -> Exit {
        if self.problems.is_empty() {
            Exit::Success
        } else {
            Exit::Regression
        }
    }
}

/// The latest sweep before `name` in the same series: same name with its trailing date (or
/// last `-part`) replaced, e.g. `nightly-2025-01-02` → `nightly-2025-01-01`.
pub fn previous_run(db: &Store, name: &str) -> Result<Option<String>, DbError> {
    db.sweep_before(name, &series_prefix(name))
}

/// `nightly-2025-01-02` → `nightly-`; `lr-run3` → `lr-`; `x` → `x`.
fn series_prefix(name: &str) -> String {
    let b = name.as_bytes();
    let is_date = |s: &[u8]| {
        s.len() == 10
            && s.iter().enumerate().all(|(i, c)| {
                if i == 4 || i == 7 {
                    *c == b'-'
                } else {
                    c.is_ascii_digit()
                }
            })
    };
    if b.len() > 11 && b[b.len() - 11] == b'-' && is_date(&b[b.len() - 10..]) {
        return name[..name.len() - 10].to_string();
    }
    match name.rfind('-') {
        Some(i) => name[..=i].to_string(),
        None => name.to_string(),
    }
}

/// Compares sweep `a` in `db_a` (before) with sweep `b` in `db_b` (after). `max_drop`: the
/// largest allowed drop in test accuracy, in percentage points.
pub fn compare(
    db_a: &Store,
    a: &str,
    db_b: &Store,
    b: &str,
    max_drop: f64,
) -> Result<Comparison, Error> {
    // A gate fails closed: with NaN every `drop > max_drop` test is false and any regression
    // would pass; a negative or infinite threshold is a typo, not a policy.
    if !max_drop.is_finite() || max_drop < 0.0 {
        return Err(Error::BadArgument(format!(
            "--max-drop {max_drop}: expected a finite number of percentage points, 0 or more"
        )));
    }
    let ta = trials(db_a, a)?;
    let tb = trials(db_b, b)?;
    let mut b_by_key: BTreeMap<String, Vec<&Trial>> = BTreeMap::new();
    for t in &tb {
        b_by_key.entry(t.key()).or_default().push(t);
    }
    let all: Vec<&Trial> = ta.iter().chain(tb.iter()).collect();
    let keys = varying(&all);
    let describe = |t: &Trial| {
        let mut parts = Vec::new();
        for k in &keys {
            let v = match t.config.get(k) {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => "-".into(),
            };
            parts.push(if k == "arch" { v } else { format!("{k}={v}") });
        }
        if parts.is_empty() {
            parts.push(
                t.config
                    .get("arch")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
            );
        }
        parts.join(" ")
    };

    let mut t = Table::new(
        format!("`{a}` → `{b}`: test accuracy and training time per trial"),
        &[
            "config", "trial_a", "trial_b", "acc_a", "acc_b", "Δacc_pp", "time_a", "time_b",
            "Δtime", "result",
        ],
    );
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut matched_keys = std::collections::BTreeSet::new();
    let mut pairs: Vec<(&Trial, &Trial)> = Vec::new();
    let pct = |x: f64| format!("{:.2}%", x * 100.0);
    for x in &ta {
        let key = x.key();
        let y = b_by_key.get(&key).and_then(|v| v.first().copied());
        let Some(y) = y else {
            notes.push(format!(
                "trial {} ({}) of `{a}` has no match in `{b}`",
                x.id,
                describe(x)
            ));
            t.push(vec![
                text(describe(x)),
                int(Some(x.id)),
                int(None),
                num(x.test_acc, pct),
                num(None, pct),
                num(None, |d| format!("{d:+.2}")),
                num(x.train_seconds, duration),
                num(None, duration),
                num(None, |d| format!("{d:+.0}%")),
                text("not in B"),
            ]);
            continue;
        };
        matched_keys.insert(key);
        let drop = match (x.done(), y.done()) {
            (true, true) => Some((y.test_acc.unwrap() - x.test_acc.unwrap()) * 100.0),
            _ => None,
        };
        let dt = match (x.train_seconds, y.train_seconds) {
            (Some(p), Some(q)) if p > 0.0 && y.done() => Some((q / p - 1.0) * 100.0),
            _ => None,
        };
        let result = if let Some(d) = drop {
            pairs.push((x, y));
            if d < -max_drop {
                problems.push(format!(
                    "trial {} ({}): test accuracy {} → {} ({d:+.2} pp, more than the allowed {max_drop} pp drop)",
                    y.id,
                    describe(y),
                    pct(x.test_acc.unwrap()),
                    pct(y.test_acc.unwrap()),
                ));
                "REGRESSION".to_string()
            } else {
                "ok".to_string()
            }
        } else if x.done() && matches!(y.status, TrialStatus::Failed | TrialStatus::Diverged) {
            problems.push(format!(
                "trial {} ({}): finished in `{a}` (test accuracy {}), {} in `{b}`{}",
                y.id,
                describe(y),
                pct(x.test_acc.unwrap_or_default()),
                y.status,
                y.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
            format!("NOW {}", y.status.as_str().to_uppercase())
        } else if x.done() {
            notes.push(format!(
                "trial {} ({}) is {} in `{b}`: not compared",
                y.id,
                describe(y),
                y.status
            ));
            format!("{} in B", y.status)
        } else if y.done() {
            format!("{} in A", x.status)
        } else {
            format!("{} / {}", x.status, y.status)
        };
        t.push(vec![
            text(describe(y)),
            int(Some(x.id)),
            int(Some(y.id)),
            num(x.test_acc.filter(|_| x.done()), pct),
            num(y.test_acc.filter(|_| y.done()), pct),
            num(drop, |d| format!("{d:+.2}")),
            num(x.train_seconds.filter(|_| x.done()), duration),
            num(y.train_seconds.filter(|_| y.done()), duration),
            num(dt, |d| format!("{d:+.0}%")),
            text(result),
        ]);
    }
    for y in &tb {
        if !matched_keys.contains(&y.key()) {
            notes.push(format!(
                "trial {} ({}) of `{b}` has no match in `{a}`",
                y.id,
                describe(y)
            ));
            t.push(vec![
                text(describe(y)),
                int(None),
                int(Some(y.id)),
                num(None, pct),
                num(y.test_acc.filter(|_| y.done()), pct),
                num(None, |d| format!("{d:+.2}")),
                num(None, duration),
                num(y.train_seconds.filter(|_| y.done()), duration),
                num(None, |d| format!("{d:+.0}%")),
                text("not in A"),
            ]);
        }
    }
    let mut tables = vec![t];

    // Mean over seeds, where a configuration ran with several seeds on both sides.
    let mut groups: BTreeMap<String, (String, Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for (x, y) in &pairs {
        let mut c = x.config.clone();
        c.remove("seed");
        let g = groups
            .entry(serde_json::to_string(&c).unwrap_or_default())
            .or_insert_with(|| {
                let d = describe(x);
                let d = d
                    .split(' ')
                    .filter(|p| !p.starts_with("seed="))
                    .collect::<Vec<_>>()
                    .join(" ");
                (d, Vec::new(), Vec::new())
            });
        g.1.push(x.test_acc.unwrap_or_default());
        g.2.push(y.test_acc.unwrap_or_default());
    }
    if groups.values().any(|g| g.1.len() > 1) {
        let mut s = Table::new(
            format!("`{a}` → `{b}`: mean test accuracy over seeds"),
            &["config", "seeds", "acc_a", "acc_b", "Δacc_pp"],
        );
        let ms = |v: &[f64]| {
            let (m, s) = mean_std(v);
            format!("{:.2}% ± {:.2}", m * 100.0, s * 100.0)
        };
        for (label, xa, xb) in groups.values() {
            let d = (mean_std(xb).0 - mean_std(xa).0) * 100.0;
            s.push(vec![
                text(label.clone()),
                int(Some(xa.len() as i64)),
                (ms(xa), Value::from(mean_std(xa).0)),
                (ms(xb), Value::from(mean_std(xb).0)),
                num(Some(d), |d| format!("{d:+.2}")),
            ]);
        }
        tables.push(s);
    }

    let summary = if pairs.is_empty() {
        format!("no trial finished in both `{a}` and `{b}`")
    } else {
        let ma = mean_std(
            &pairs
                .iter()
                .map(|p| p.0.test_acc.unwrap())
                .collect::<Vec<_>>(),
        )
        .0;
        let mb = mean_std(
            &pairs
                .iter()
                .map(|p| p.1.test_acc.unwrap())
                .collect::<Vec<_>>(),
        )
        .0;
        let sa: f64 = pairs.iter().filter_map(|p| p.0.train_seconds).sum();
        let sb: f64 = pairs.iter().filter_map(|p| p.1.train_seconds).sum();
        format!(
            "{} trial(s) compared: mean test accuracy {} → {} ({:+.2} pp), training time {} → {}",
            pairs.len(),
            pct(ma),
            pct(mb),
            (mb - ma) * 100.0,
            duration(sa),
            duration(sb)
        )
    };
    Ok(Comparison {
        tables,
        problems,
        notes,
        summary,
    })
}

/// Config keys whose values differ between the trials (architecture first, seed last).
fn varying(all: &[&Trial]) -> Vec<String> {
    let Some(first) = all.first() else {
        return Vec::new();
    };
    let mut keys: Vec<String> = all
        .iter()
        .flat_map(|t| t.config.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| all.iter().any(|t| t.config.get(k) != first.config.get(k)))
        .collect();
    keys.sort_by_key(|k| match k.as_str() {
        "arch" => 0,
        "seed" => 2,
        _ => 1,
    });
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_prefixes() {
        assert_eq!(series_prefix("nightly-2025-01-02"), "nightly-");
        assert_eq!(series_prefix("my-nightly-2025-01-02"), "my-nightly-");
        assert_eq!(series_prefix("lr-run3"), "lr-");
        assert_eq!(series_prefix("smoke"), "smoke");
    }
}
