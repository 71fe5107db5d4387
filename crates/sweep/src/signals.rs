//! Stop signals (SIGINT, SIGTERM, SIGHUP): the first asks the run to stop after saving its
//! current trial, a second one quits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The stop signals (SIGINT, SIGTERM, SIGHUP) this process was started with set to
/// "ignore".
#[cfg(unix)]
fn inherited_ignores() -> Vec<libc::c_int> {
    [libc::SIGINT, libc::SIGTERM, libc::SIGHUP]
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

/// Sets `sigs` back to "ignore" after the Ctrl-C handler took all three.
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

/// Signals this close together are one request delivered twice (see [`stop_on_interrupt`]).
const SAME_SIGNAL: Duration = Duration::from_millis(250);

/// Installs the handler for the stop signals; the flag it returns turns true on the first.
pub fn stop_on_interrupt() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    // `nohup` (SIGHUP) and a shell's background jobs (SIGINT) hand us signals set to be
    // ignored; that choice is the user's, and must survive installing our handler.
    let ignored = inherited_ignores();
    {
        let stop = stop.clone();
        // First Ctrl-C (or SIGTERM, SIGHUP): finish the current batch, checkpoint, mark the
        // trial interrupted. Second: leave at once (the last checkpoint is still there to
        // resume from). `timeout`, `kill` of a job and most supervisors signal the process
        // *and* its process group, so one request can arrive twice within microseconds: a
        // repeat that close is the same request, not a person pressing Ctrl-C again. (Seen on
        // a GPU machine: `timeout -s INT` made a sweep quit at once, its trial left `running`.)
        let mut first: Option<Instant> = None;
        let _ = ctrlc::set_handler(move || match first {
            None => {
                first = Some(Instant::now());
                stop.store(true, Ordering::SeqCst);
                eprintln!(
                    "\ninterrupt: saving the current trial's state (Ctrl-C again to quit at once)"
                );
            }
            Some(t) if t.elapsed() < SAME_SIGNAL => {}
            Some(_) => std::process::exit(sweep::exit::Exit::Interrupted.code()),
        });
    }
    ignore_again(&ignored);
    stop
}
