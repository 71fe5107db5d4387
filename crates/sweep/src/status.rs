//! `cifar-sweep status`: where a sweep stands while its workers run, from the store alone
//! (the workers may be on other machines): trials by status, the running trials with the
//! host and process that holds each, and what every worker has done.

use crate::report::duration;
use crate::runner::STALE_AFTER;
use crate::store::{DbError, Store, TrialStatus, Worker, WorkerTrial};
use crate::table::{int, text, Table};
use std::collections::BTreeMap;

/// A worker id (`host:pid:start`) split for display: the host, and the process id. An id
/// written by something else is shown whole as the host.
pub fn host_and_pid(worker: &str) -> (&str, Option<&str>) {
    match Worker::parts(worker) {
        Some((host, pid, _)) if pid.bytes().all(|b| b.is_ascii_digit()) => (host, Some(pid)),
        _ => (worker, None),
    }
}

/// Seconds since a heartbeat as "12s ago"; for a worker that holds a running trial, marked
/// stale past [`STALE_AFTER`] (another worker may take the trial over: on another host, or
/// here once the process is gone).
fn heartbeat(age: Option<f64>, holds_running: bool) -> String {
    match age {
        None => "never".into(),
        Some(a) if holds_running && a > STALE_AFTER.as_secs_f64() => {
            format!("{} ago (stale)", duration(a))
        }
        Some(a) => format!("{} ago", duration(a.max(0.0))),
    }
}

/// The three tables of `cifar-sweep status SWEEP`: counts by status, the running trials
/// (who holds each, its epoch, its heartbeat) and one row per worker.
pub fn status_tables(db: &Store, sweep: &str) -> Result<Vec<Table>, DbError> {
    let sweep_id = db.sweep_id(sweep)?;
    let counts = db.status_counts(sweep_id)?;
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    let mut by_status = Table::new(
        format!("Sweep `{sweep}`: {total} trials by status"),
        &["status", "trials"],
    );
    for (s, n) in &counts {
        by_status.push(vec![text(s.as_str()), int(Some(*n as i64))]);
    }

    let claimed = db.worker_trials(sweep_id)?;
    let mut running = Table::new(
        "Running trials",
        &[
            "trial",
            "host",
            "pid",
            "device",
            "epoch",
            "attempt",
            "heartbeat",
        ],
    );
    for t in claimed.iter().filter(|t| t.status == TrialStatus::Running) {
        let (host, pid) = host_and_pid(t.worker.as_deref().unwrap_or("?"));
        let epoch = match t.epochs {
            Some(e) => format!("{}/{e}", t.epochs_done),
            None => t.epochs_done.to_string(),
        };
        running.push(vec![
            int(Some(t.id)),
            text(host),
            text(pid.unwrap_or("?")),
            text(t.device.as_deref().unwrap_or("?")),
            text(epoch),
            int(Some(t.attempts)),
            text(heartbeat(t.heartbeat_age, true)),
        ]);
    }

    Ok(vec![by_status, running, workers(&claimed)])
}

/// One row per worker process that ran a trial last: its host, how many of those trials
/// are done, running or stopped otherwise, and its latest heartbeat.
fn workers(claimed: &[WorkerTrial]) -> Table {
    #[derive(Default)]
    struct Seen {
        done: i64,
        running: i64,
        other: i64,
        latest: Option<f64>,
    }
    let mut seen: BTreeMap<&str, Seen> = BTreeMap::new();
    for t in claimed {
        let s = seen.entry(t.worker.as_deref().unwrap_or("?")).or_default();
        match t.status {
            TrialStatus::Done => s.done += 1,
            TrialStatus::Running => s.running += 1,
            _ => s.other += 1,
        }
        if let Some(a) = t.heartbeat_age {
            s.latest = Some(s.latest.map_or(a, |l: f64| l.min(a)));
        }
    }
    let mut table = Table::new(
        "Workers (by the trials each ran last)",
        &["host", "pid", "done", "running", "other", "heartbeat"],
    );
    for (w, s) in seen {
        let (host, pid) = host_and_pid(w);
        table.push(vec![
            text(host),
            text(pid.unwrap_or("?")),
            int(Some(s.done)),
            int(Some(s.running)),
            int(Some(s.other)),
            text(heartbeat(s.latest, s.running > 0)),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids_split_into_host_and_pid() {
        assert_eq!(host_and_pid("node7:4242:98765"), ("node7", Some("4242")));
        assert_eq!(host_and_pid("a:b:c:12:34"), ("a:b:c", Some("12")));
        assert_eq!(host_and_pid("odd"), ("odd", None));
        assert_eq!(host_and_pid("h:x:1"), ("h:x:1", None));
    }

    #[test]
    fn heartbeats_read_as_ages_and_stale_past_the_limit() {
        assert_eq!(heartbeat(None, true), "never");
        let fresh = heartbeat(Some(5.0), true);
        assert!(fresh.ends_with(" ago"), "{fresh}");
        let old = STALE_AFTER.as_secs_f64() + 1.0;
        assert!(heartbeat(Some(old), true).ends_with("(stale)"));
        // A worker that holds nothing is not stale, only quiet.
        assert!(heartbeat(Some(old), false).ends_with(" ago"));
        // A server clock a little ahead of the writer's never reads as negative.
        assert!(!heartbeat(Some(-0.4), true).contains('-'));
    }
}
