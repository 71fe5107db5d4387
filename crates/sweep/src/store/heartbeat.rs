//! Who runs a trial, and the heartbeat that keeps its claim: a worker that is gone (its
//! process ended, or on another host its heartbeat went stale) loses its trial to the next
//! `claim_next`.

use super::Store;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Who runs a trial: `host:pid:start`, where `start` is the process's start time in clock
/// ticks since boot (Linux; 0 elsewhere), so that a later process that happens to get the
/// same pid is not mistaken for the worker.
pub struct Worker {
    /// The `host:pid:start` text, as stored in the trial's `worker` column.
    pub id: String,
}

impl Worker {
    /// This process as a worker.
    pub fn current() -> Self {
        let pid = std::process::id();
        Worker {
            id: format!("{}:{pid}:{}", hostname(), process_start(pid).unwrap_or(0)),
        }
    }

    /// A worker id split into (host, pid, start): `host:pid:start`, or `host:pid` as written
    /// by older versions (no start). Split from the right, so a host spelled with ':' keeps
    /// it. The pid is not checked to be a number. None for an id with no ':'.
    pub fn parts(id: &str) -> Option<(&str, &str, Option<u64>)> {
        let mut parts = id.rsplitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(start), Some(pid), Some(host)) if start.parse::<u64>().is_ok() => {
                Some((host, pid, start.parse::<u64>().ok()))
            }
            (Some(pid), Some(host), _) => Some((host, pid, None)),
            _ => None,
        }
    }

    /// Whether the worker that wrote `id` may still be running its trial. On this host the
    /// process table decides: a live process is never taken over, however old its
    /// heartbeat (it may be stopped with Ctrl-Z and continue later; two processes must never
    /// train one trial). Elsewhere only the heartbeat can tell.
    pub(crate) fn alive(id: Option<&str>, heartbeat_age_secs: f64, stale: Duration) -> bool {
        let fresh = heartbeat_age_secs < stale.as_secs_f64();
        let Some((host, pid, start)) = id.and_then(Worker::parts) else {
            return false;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            return fresh;
        };
        if host != hostname() {
            return fresh;
        }
        if pid == std::process::id() {
            // Our own earlier claim (e.g. the same process re-entering): not alive.
            return false;
        }
        if !cfg!(target_os = "linux") {
            return fresh;
        }
        match (process_start(pid), start) {
            // No such process (or a zombie): gone.
            (None, _) => false,
            // A process with that pid but a different start: the pid was reused.
            (Some(now), Some(then)) if then != 0 && now != then => false,
            (Some(_), Some(_)) => true,
            // An old-format id: a live pid is taken at its word while the heartbeat is fresh.
            (Some(_), None) => fresh,
        }
    }
}

/// The start time of process `pid` (clock ticks since boot, field 22 of /proc/PID/stat), or
/// None when there is no such live process (gone, or a zombie).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is the state (field 3); field 22 is fields[19].
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// This machine's name (from `/proc/sys/kernel/hostname`, else `$HOSTNAME`, else
/// `localhost`): the host part of a [`Worker`] id, and the host a sweep records.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// A thread that sends the current trial's heartbeat every so often from a connection of its
/// own, so a long epoch (the main connection busy training) does not look like a dead
/// worker. Stopped and joined on drop.
pub struct Heartbeat {
    current: Arc<AtomicI64>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    /// Starts beating for no trial, against the existing store at `path`. A store that
    /// cannot be opened again gets no heartbeat (the claim then lasts while the process
    /// lives, see [`Worker::alive`]).
    pub fn start(path: &Path, every: Duration) -> Heartbeat {
        let current = Arc::new(AtomicI64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let (path, current, done) = (path.to_path_buf(), current.clone(), done.clone());
            std::thread::spawn(move || {
                let Ok(store) = Store::open_existing(&path) else {
                    return;
                };
                // Short sleeps, so that stopping never waits a whole period.
                let tick = Duration::from_millis(200).min(every);
                let mut waited = Duration::ZERO;
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    waited += tick;
                    if waited >= every {
                        waited = Duration::ZERO;
                        let id = current.load(Ordering::Relaxed);
                        if id > 0 {
                            if let Err(e) = store.heartbeat(id) {
                                tracing::warn!("heartbeat: {e}");
                            }
                        }
                    }
                }
            })
        };
        Heartbeat {
            current,
            done,
            thread: Some(thread),
        }
    }

    /// The trial to beat for from now on; `None` for none.
    pub fn track(&self, trial_id: Option<i64>) {
        self.current.store(trial_id.unwrap_or(0), Ordering::Relaxed);
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
