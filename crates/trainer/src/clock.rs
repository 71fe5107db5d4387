//! Training time that does not count suspensions.
//!
//! A process stopped with Ctrl-Z or SIGSTOP and continued minutes later would otherwise
//! record those minutes as one epoch's training time, and every later comparison of
//! timings would be off. The monotonic clock keeps running while a process is stopped,
//! so the suspension is measured instead: a ticker thread notes the time every
//! `TICK`, and a SIGCONT handler flags that the process has just been continued;
//! the gap since the last tick (less one tick) is then counted as suspended. Without a
//! SIGCONT, a late tick (a busy machine) counts as running time, as it should.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(20);

/// Nanoseconds this process has spent stopped since [`watch_suspensions`] was called.
static SUSPENDED_NS: AtomicU64 = AtomicU64::new(0);
static CONTINUED: AtomicBool = AtomicBool::new(false);
static WATCHING: OnceLock<()> = OnceLock::new();

/// Total time this process has spent stopped (SIGSTOP/SIGTSTP then SIGCONT) so far; always
/// zero until [`watch_suspensions`] has been called, and on non-Unix systems.
pub fn suspended() -> Duration {
    Duration::from_nanos(SUSPENDED_NS.load(Ordering::Relaxed))
}

#[cfg(unix)]
extern "C" fn on_sigcont(_: libc::c_int) {
    // Async-signal-safe: one atomic store.
    CONTINUED.store(true, Ordering::SeqCst);
}

/// Starts measuring suspensions for the rest of the process (idempotent). Binaries that
/// train call it once at start-up.
pub fn watch_suspensions() {
    WATCHING.get_or_init(|| {
        #[cfg(unix)]
        // SAFETY: installs a handler that only stores to an atomic; SA_RESTART keeps
        // interrupted system calls (reads, sleeps) transparent to the rest of the program.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigcont as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGCONT, &sa, std::ptr::null_mut());
        }
        std::thread::Builder::new()
            .name("suspension-clock".into())
            .spawn(|| {
                let mut last = Instant::now();
                loop {
                    std::thread::sleep(TICK);
                    let now = Instant::now();
                    if CONTINUED.swap(false, Ordering::SeqCst) {
                        let gap = now.duration_since(last).saturating_sub(TICK);
                        SUSPENDED_NS.fetch_add(gap.as_nanos() as u64, Ordering::Relaxed);
                    }
                    last = now;
                }
            })
            .expect("spawn the suspension clock thread");
    });
}

/// Like [`Instant`], but [`Stopwatch::elapsed`] leaves out the time the process was stopped.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch {
    start: Instant,
    suspended_at_start: Duration,
}

impl Stopwatch {
    /// Starts timing now.
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
            suspended_at_start: suspended(),
        }
    }

    /// Running (not stopped) time since [`Stopwatch::start`].
    pub fn elapsed(&self) -> Duration {
        let stopped = suspended().saturating_sub(self.suspended_at_start);
        self.start.elapsed().saturating_sub(stopped)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Stops this very process for ~1.5 s from a child shell and checks the stopwatch left it
    /// out. (The child sends SIGSTOP, sleeps, sends SIGCONT; this process can do nothing
    /// meanwhile, which is the point.)
    #[test]
    fn a_suspension_is_not_counted() {
        watch_suspensions();
        std::thread::sleep(TICK * 3);
        let sw = Stopwatch::start();
        let wall = Instant::now();
        let pid = std::process::id().to_string();
        let status = std::process::Command::new("sh")
            .args(["-c", "kill -STOP $0; sleep 1.5; kill -CONT $0", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        // Let the ticker see the SIGCONT.
        std::thread::sleep(TICK * 5);
        let wall = wall.elapsed();
        let counted = sw.elapsed();
        assert!(wall >= Duration::from_millis(1500), "{wall:?}");
        assert!(
            counted < wall - Duration::from_millis(1000),
            "counted {counted:?} of {wall:?} although ~1.5 s of it was a suspension"
        );
    }
}
