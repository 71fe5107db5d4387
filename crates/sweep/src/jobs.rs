//! `run --jobs N`: N worker processes of this binary on one sweep, from one command.
//!
//! Several processes on one database is how sweeps already scale (issue 14: each claims its
//! next trial in a transaction), so `--jobs` only starts them: each worker is this command
//! again without `--jobs`, quiet, with the CPU threads shared out (`CIFAR_SWEEP_THREADS`,
//! `RAYON_NUM_THREADS`), its log lines prefixed `[job k]` on our stderr. Processes rather
//! than threads: a worker that crashes or runs out of memory takes only its trial down (the
//! store hands the trial back), and each keeps the one-trial-at-a-time code it has.
//!
//! Stopping: the workers run in their own process group, so a Ctrl-C at the terminal
//! reaches this process only, and it forwards one SIGTERM to each worker, which saves its
//! trial and marks it interrupted (a terminal's SIGINT and a forwarded SIGTERM racing
//! could otherwise count as two requests, the second quitting without a save). If this
//! process dies, the kernel sends each worker SIGTERM (`PR_SET_PDEATHSIG`).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The arguments a worker is started with: `args` (this process's, without the program)
/// less `--jobs N` / `--jobs=N`, plus `--quiet` (the parent shows the progress).
pub fn worker_args(args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len() + 1);
    let mut it = args.iter();
    let mut quiet = false;
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            // Everything after `--` is positional: kept as it is.
            out.push(a.clone());
            out.extend(it.by_ref().cloned());
            break;
        }
        if s == "--jobs" {
            it.next();
            continue;
        }
        if s.starts_with("--jobs=") {
            continue;
        }
        quiet |= s == "--quiet" || (s.starts_with('-') && !s.starts_with("--") && s.contains('q'));
        out.push(a.clone());
    }
    if !quiet {
        // Before a `--`, so that it stays a flag.
        let at = out.iter().position(|a| a == "--").unwrap_or(out.len());
        out.insert(at, "--quiet".into());
    }
    out
}

/// The environment variable that marks a `--jobs` worker (its value: the job number).
pub const WORKER_ENV: &str = "CIFAR_SWEEP_JOB";

/// Whether this process trains alone on this machine's CPU (see [`claim_cpu`]).
#[derive(Debug)]
pub enum CpuUse {
    /// No other process of this program holds the CPU; the lock file is held until this
    /// value is dropped.
    Alone {
        /// Held, never read: closing it releases the lock.
        _lock: std::fs::File,
    },
    /// Another one does (a second `run` or `train` on the CPU of this machine).
    Shared,
}

/// Claims the CPU for this process with a lock file in `dir` (one per user): a
/// non-blocking exclusive `flock`, released by the kernel when the process ends however it
/// ends. Two jobs that each keep both cores' threads busy run 4-8x slower each, not 2x (each
/// op of each waits on threads the scheduler has parked; BENCHMARKS.md, the lenet search),
/// so the caller warns on `Shared`; `run --jobs N` shares the cores out instead.
pub fn claim_cpu(dir: &std::path::Path) -> std::io::Result<CpuUse> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("cifar-sweep-cpu-{uid}.lock")))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(CpuUse::Alone { _lock: file });
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(CpuUse::Shared)
    } else {
        Err(e)
    }
}

/// The CPU threads each of `jobs` workers gets out of `total`: an even share, at least one.
pub fn threads_per_job(total: usize, jobs: usize) -> usize {
    (total / jobs.max(1)).max(1)
}

/// How the workers ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Each worker's exit status, in job order.
    pub statuses: Vec<ExitStatus>,
    /// Whether a stop request was forwarded to the workers.
    pub stopped: bool,
}

/// Starts `jobs` workers (`program worker_args(args)`) and waits for all of them, forwarding
/// a stop request (`stop` set by the signal handlers) to each as one SIGTERM.
pub fn run(
    program: &std::path::Path,
    args: &[OsString],
    jobs: usize,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Outcome> {
    let total = std::env::var("CIFAR_SWEEP_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&v| v > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
    let threads = threads_per_job(total, jobs).to_string();
    let wargs = worker_args(args);
    let mut children: Vec<Child> = Vec::with_capacity(jobs);
    let mut forwarders = Vec::with_capacity(jobs);
    for k in 1..=jobs {
        let mut cmd = Command::new(program);
        cmd.args(&wargs)
            .env(WORKER_ENV, k.to_string())
            .env("CIFAR_SWEEP_THREADS", &threads)
            .env("RAYON_NUM_THREADS", &threads)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        own_group_and_death_signal(&mut cmd);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                // The ones already started stop as after Ctrl-C.
                terminate(&children);
                for mut c in children {
                    let _ = c.wait();
                }
                return Err(e);
            }
        };
        let err = child.stderr.take().expect("piped");
        forwarders.push(std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut e = std::io::stderr().lock();
                let _ = writeln!(e, "[job {k}] {line}");
            }
        }));
        children.push(child);
    }
    eprintln!("{jobs} jobs started, {threads} thread(s) each");
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; jobs];
    let mut stopped = false;
    while statuses.iter().any(Option::is_none) {
        if !stopped && stop.load(Ordering::SeqCst) {
            stopped = true;
            eprintln!("stopping: asking each job to save its trial");
            let running: Vec<&Child> = children
                .iter()
                .zip(&statuses)
                .filter(|(_, s)| s.is_none())
                .map(|(c, _)| c)
                .collect();
            terminate(&running);
        }
        for (c, s) in children.iter_mut().zip(statuses.iter_mut()) {
            if s.is_none() {
                *s = c.try_wait()?;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for f in forwarders {
        let _ = f.join();
    }
    Ok(Outcome {
        statuses: statuses.into_iter().map(|s| s.expect("waited")).collect(),
        stopped,
    })
}

/// SIGTERM to each of `children` (see the module docs).
fn terminate<C: std::borrow::Borrow<Child>>(children: &[C]) {
    for c in children {
        #[cfg(unix)]
        // SAFETY: kill(2) on a child's pid; at worst the child is gone already (ESRCH).
        unsafe {
            libc::kill(c.borrow().id() as libc::pid_t, libc::SIGTERM);
        }
        #[cfg(not(unix))]
        let _ = c;
    }
}

#[cfg(unix)]
fn own_group_and_death_signal(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    // SAFETY: only async-signal-safe calls between fork and exec.
    #[cfg(target_os = "linux")]
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

#[cfg(not(unix))]
fn own_group_and_death_signal(_: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_cpu_claim_is_held_by_one_and_freed_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = claim_cpu(dir.path()).unwrap();
        assert!(matches!(first, CpuUse::Alone { .. }), "{first:?}");
        // A second open file description conflicts, as another process's would.
        let second = claim_cpu(dir.path()).unwrap();
        assert!(matches!(second, CpuUse::Shared), "{second:?}");
        drop(first);
        let third = claim_cpu(dir.path()).unwrap();
        assert!(matches!(third, CpuUse::Alone { .. }), "{third:?}");
    }

    #[test]
    fn workers_get_the_arguments_without_jobs_and_quiet() {
        assert_eq!(
            worker_args(&os(&["run", "s.toml", "--jobs", "3", "--db", "r.db"])),
            os(&["run", "s.toml", "--db", "r.db", "--quiet"])
        );
        assert_eq!(
            worker_args(&os(&["run", "--jobs=2", "-q", "s.toml"])),
            os(&["run", "-q", "s.toml"])
        );
        assert_eq!(
            worker_args(&os(&["run", "--quiet", "--jobs", "2", "--", "--jobs"])),
            os(&["run", "--quiet", "--", "--jobs"])
        );
        assert_eq!(
            worker_args(&os(&["run", "--jobs", "2", "--", "s.toml"])),
            os(&["run", "--quiet", "--", "s.toml"])
        );
    }

    #[test]
    fn threads_are_shared_out_evenly_and_never_zero() {
        assert_eq!(threads_per_job(16, 4), 4);
        assert_eq!(threads_per_job(2, 2), 1);
        assert_eq!(threads_per_job(2, 3), 1);
        assert_eq!(threads_per_job(7, 2), 3);
        assert_eq!(threads_per_job(8, 0), 8);
    }
}
