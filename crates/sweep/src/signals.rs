//! Stop signals (SIGINT, SIGTERM, SIGHUP, and SIGUSR1, Slurm's warning before a time limit):
//! the first asks the run to stop after saving its current trial, a second one quits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The stop signals this process was started with set to "ignore".
#[cfg(unix)]
fn inherited_ignores() -> Vec<libc::c_int> {
    [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1]
        .into_iter()
        .filter(|&sig| {
            // SAFETY: a query only (no new action); `old` is a plain C struct.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                    && old.sa_sigaction == libc::SIG_IGN
            }
        })
        .collect()
}

/// Sets `sigs` back to "ignore" after the handlers took them all.
#[cfg(unix)]
fn ignore_again(sigs: &[libc::c_int]) {
    for &sig in sigs {
        // SAFETY: SIG_IGN is always a valid disposition for these signals.
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
}

#[cfg(not(unix))]
fn inherited_ignores() -> Vec<i32> {
    Vec::new()
}

#[cfg(not(unix))]
fn ignore_again(_: &[i32]) {}

/// Set when the first stop request was SIGUSR1 (Slurm's time-limit warning): the run then
/// asks Slurm to requeue its task once the trial is saved (see [`time_limit_hit`]).
static TIME_LIMIT: AtomicBool = AtomicBool::new(false);

/// Whether the run was stopped by SIGUSR1, the time limit's warning, rather than by an
/// interrupt (which is the user's or the scheduler's wish to stop, and is not requeued).
pub fn time_limit_hit() -> bool {
    TIME_LIMIT.load(Ordering::SeqCst)
}

/// Signals this close together are one request delivered twice (see [`stop_on_interrupt`]).
const SAME_SIGNAL: Duration = Duration::from_millis(250);

/// Why a signal asks the run to stop.
#[derive(Clone, Copy)]
enum Request {
    /// Ctrl-C, SIGTERM (also `scancel` and preemption under Slurm), SIGHUP.
    Interrupt,
    /// SIGUSR1: Slurm's warning before the time limit (`--signal=B:USR1@120`).
    TimeLimit,
}

/// The stop requests of every signal, counted together: the first saves the current trial's
/// state, a repeat within [`SAME_SIGNAL`] is the same request, a later one quits at once.
struct Stopper {
    stop: Arc<AtomicBool>,
    first: Mutex<Option<Instant>>,
}

impl Stopper {
    fn request(&self, why: Request) {
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        match *first {
            None => {
                *first = Some(Instant::now());
                TIME_LIMIT.store(matches!(why, Request::TimeLimit), Ordering::SeqCst);
                self.stop.store(true, Ordering::SeqCst);
                eprintln!(
                    "\n{}",
                    match why {
                        Request::Interrupt =>
                            "interrupt: saving the current trial's state (Ctrl-C again to quit at once)",
                        Request::TimeLimit =>
                            "time limit near (SIGUSR1): saving the current trial's state",
                    }
                );
            }
            Some(t) if t.elapsed() < SAME_SIGNAL => {}
            Some(_) => std::process::exit(sweep::exit::Exit::Interrupted.code()),
        }
    }
}

/// SIGUSR1 becomes a [`Request::TimeLimit`]. The Ctrl-C handler cannot take it, so a thread
/// of signal-hook's waits for it.
#[cfg(unix)]
fn on_time_limit(stopper: Arc<Stopper>) {
    match signal_hook::iterator::Signals::new([libc::SIGUSR1]) {
        Ok(mut sigs) => {
            std::thread::spawn(move || {
                for _ in sigs.forever() {
                    stopper.request(Request::TimeLimit);
                }
            });
        }
        Err(e) => tracing::warn!("SIGUSR1 cannot be watched ({e}): it will end the run"),
    }
}

#[cfg(not(unix))]
fn on_time_limit(_: Arc<Stopper>) {}

/// Installs the handlers for the stop signals; the flag it returns turns true on the first.
pub fn stop_on_interrupt() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    // `nohup` (SIGHUP) and a shell's background jobs (SIGINT) hand us signals set to be
    // ignored; that choice is the user's, and must survive installing our handler.
    let ignored = inherited_ignores();
    // First Ctrl-C (or SIGTERM, SIGHUP, SIGUSR1): finish the current batch, checkpoint, mark
    // the trial interrupted. Second: leave at once (the last checkpoint is still there to
    // resume from). `timeout`, `kill` of a job and most supervisors signal the process *and*
    // its process group, so one request can arrive twice within microseconds: a repeat that
    // close is the same request, not a person pressing Ctrl-C again. (Seen on a GPU machine:
    // `timeout -s INT` made a sweep quit at once, its trial left `running`.)
    let stopper = Arc::new(Stopper {
        stop: stop.clone(),
        first: Mutex::new(None),
    });
    on_time_limit(stopper.clone());
    let _ = ctrlc::set_handler(move || stopper.request(Request::Interrupt));
    ignore_again(&ignored);
    stop
}
