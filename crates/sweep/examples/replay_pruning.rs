//! Prices ASHA (η = 3, grace 1) and the median rule (warm-up 1, 5 start-up trials) on sweeps
//! that ran without pruning, by replaying their recorded curves ([`sweep::replay`]); used by
//! `bench/search_bench.sh` (issue 13's benchmark). With `--check RULE=PRUNED.db`, first
//! checks that the replay of the first unpruned sweep stops the same trials at the same epochs
//! as a real run of the same sweep with that rule.
//!
//! `cargo run --release -p sweep --example replay_pruning -- [--check asha=X.db] A.db [B.db ...]`
//!
//! Reads the databases with plain SQL (the README's tables), read-only.

use rusqlite::{Connection, OpenFlags};
use sweep::prune::{Asha, Direction, Median};
use sweep::pruner::tie_break;
use sweep::replay::{replay, Curve};
use sweep::search::{Objective, Prune};

struct Trial {
    curve: Curve,
    test_acc: Option<f64>,
    status: String,
}

fn load(path: &str) -> rusqlite::Result<Vec<Trial>> {
    let db = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut st =
        db.prepare("SELECT t.id, t.epochs, t.status, t.test_acc FROM trials t ORDER BY t.ordinal")?;
    let rows: Vec<(i64, i64, String, Option<f64>)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut ep =
        db.prepare("SELECT valid_acc, valid_loss FROM epochs WHERE trial_id = ?1 ORDER BY epoch")?;
    rows.into_iter()
        .map(|(id, epochs, status, test_acc)| {
            let rows = ep
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<(f64, f64)>>>()?;
            Ok(Trial {
                curve: Curve {
                    values: rows.iter().map(|r| r.0).collect(),
                    tie_breaks: rows
                        .iter()
                        .map(|&(acc, loss)| tie_break(Objective::ValidAcc, acc, loss))
                        .collect(),
                    epochs: epochs as usize,
                    finished: status == "done",
                },
                test_acc,
                status,
            })
        })
        .collect()
}

/// The test accuracy of the trial with the best validation accuracy among `ran` (those run to
/// the end): chosen without looking at the test set.
fn pick(trials: &[Trial], ran: impl Fn(usize) -> bool) -> Option<f64> {
    trials
        .iter()
        .enumerate()
        .filter(|(i, t)| ran(*i) && t.status == "done")
        .max_by(|a, b| {
            let best = |t: &Trial| {
                t.curve
                    .values
                    .iter()
                    .copied()
                    .fold(f64::NEG_INFINITY, f64::max)
            };
            best(a.1).total_cmp(&best(b.1))
        })
        .and_then(|(_, t)| t.test_acc)
}

fn rules() -> Vec<(&'static str, Prune)> {
    vec![
        (
            "asha",
            Prune::Asha(Asha {
                reduction_factor: 3,
                grace_epochs: 1,
            }),
        ),
        (
            "median",
            Prune::Median(Median {
                warmup_epochs: 1,
                startup_trials: 5,
            }),
        ),
    ]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut checks = Vec::new();
    while args.first().is_some_and(|a| a == "--check") {
        let spec = args.get(1).ok_or("--check RULE=PRUNED.db")?.clone();
        let (rule, path) = spec.split_once('=').ok_or("--check RULE=PRUNED.db")?;
        checks.push((rule.to_string(), path.to_string()));
        args.drain(..2);
    }
    if args.is_empty() {
        return Err("usage: replay_pruning [--check RULE=PRUNED.db] UNPRUNED.db ...".into());
    }
    for (rule_name, path) in &checks {
        let full = load(&args[0])?;
        let real = load(path)?;
        let (_, rule) = rules()
            .into_iter()
            .find(|(n, _)| n == rule_name)
            .ok_or("--check: asha or median")?;
        let curves: Vec<Curve> = full.iter().map(|t| t.curve.clone()).collect();
        let sim = replay(&rule, &curves, Direction::Maximize);
        let mut same = 0;
        for (i, (s, r)) in sim.iter().zip(&real).enumerate() {
            let real_stop = (r.status == "pruned").then_some(r.curve.values.len());
            if *s == real_stop {
                same += 1;
            } else {
                println!("trial #{}: replay {s:?}, real run {real_stop:?}", i + 1);
            }
        }
        println!(
            "check {rule_name}: the replay of {} matches the real run {path} on {same} of {} trials",
            args[0],
            sim.len()
        );
    }
    println!("| sweep | rule | epochs run / full | ratio | best (by valid) test acc | unpruned best | change |");
    println!("|---|---|---|---|---|---|---|");
    for path in &args {
        let trials = load(path)?;
        let curves: Vec<Curve> = trials.iter().map(|t| t.curve.clone()).collect();
        let full: usize = curves.iter().map(|c| c.epochs).sum();
        let base = pick(&trials, |_| true);
        for (name, rule) in rules() {
            let stops = replay(&rule, &curves, Direction::Maximize);
            let run: usize = curves
                .iter()
                .zip(&stops)
                .map(|(c, s)| s.unwrap_or(c.values.len()))
                .sum();
            let best = pick(&trials, |i| stops[i].is_none());
            let pct = |x: Option<f64>| x.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v));
            let change = match (best, base) {
                (Some(a), Some(b)) => format!("{:+.2} pt", 100.0 * (a - b)),
                _ => "-".into(),
            };
            println!(
                "| {path} | {name} | {run} / {full} | {:.0}% | {} | {} | {change} |",
                100.0 * run as f64 / full as f64,
                pct(best),
                pct(base)
            );
        }
    }
    Ok(())
}
