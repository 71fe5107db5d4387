//! `cifar-sweep slurm`: job arrays of workers submitted to a real single-node Slurm cluster
//! (see cluster.rs), sharing one SQLite store, and the signals Slurm sends them.

use crate::cluster::{wait_until, Slurm};
use crate::common::{bin, query_i64, run_sweep, stderr, stdout, write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SWEEP: &str = r#"name = "slurm"
[data]
train_subset = 320
test_subset = 200
[base]
arch = "lenet"
epochs = 1
batch_size = 16
momentum = 0.9
[grid]
lr = [0.03, 0.02, 0.01, 0.005]
"#;

/// A two-task array of workers on one sweep, submitted to its own Slurm cluster.
struct Array {
    slurm: Slurm,
    _root: tempfile::TempDir,
    /// A folder with a space in its name (the script's paths must survive sbatch and the
    /// shell): the sweep file, the database, the script and its logs.
    dir: PathBuf,
    file: PathBuf,
    db: PathBuf,
    job: String,
}

impl Array {
    /// `cifar-sweep slurm FILE --db DB --workers 2 --submit` of `sweep`, its workers on the
    /// CPU and the test data (through the environment sbatch hands the tasks); None when
    /// the data or Slurm is missing (see cluster.rs).
    fn submit(sweep: &str) -> Option<Array> {
        crate::common::data_args()?;
        let slurm = Slurm::start()?;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("my sweeps");
        std::fs::create_dir(&dir).unwrap();
        let file = write(&dir, "slurm.toml", sweep);
        let db = dir.join("results.db");
        let src = trainer::data::test_data_source().unwrap();
        let out = bin()
            .args([
                "slurm",
                file.to_str().unwrap(),
                "--db",
                db.to_str().unwrap(),
            ])
            .args(["--workers", "2", "--submit", "--output"])
            .arg(dir.join("slurm.sbatch"))
            .envs(slurm.env())
            .env("CIFAR10_DATA_DIR", &src.data_dir)
            .env("CIFAR10_ARCHIVE", src.archive.unwrap())
            .env("CIFAR_SWEEP_DEVICE", "cpu")
            // The tasks' logs: a line per epoch and per finished trial.
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let job = stdout(&out).trim().to_string();
        assert!(
            !job.is_empty() && job.bytes().all(|b| b.is_ascii_digit()),
            "stdout is not a job id: {job:?}"
        );
        assert!(stderr(&out).contains("wrote "), "{}", stderr(&out));
        Some(Array {
            slurm,
            _root: root,
            dir,
            file,
            db,
            job,
        })
    }

    /// The log of array task `task`, in the folder beside the script.
    fn log(&self, task: u32) -> String {
        let p = self
            .dir
            .join(format!("slurm-logs/slurm-{}_{task}.log", self.job));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// Both tasks' logs, for failure messages.
    fn logs(&self) -> String {
        (0..2)
            .map(|t| format!("--- task {t}:\n{}", self.log(t)))
            .collect()
    }

    /// Waits up to `limit` for both tasks to leave the queue.
    fn wait_gone(&self, limit: Duration) {
        assert!(
            self.slurm.wait_gone(&self.job, limit),
            "job {} still queued after {limit:?}:\n{}",
            self.job,
            self.logs()
        );
    }

    fn show_task(&self, task: u32) -> String {
        self.slurm.show_job(&format!("{}_{task}", self.job))
    }
}

#[test]
fn a_job_array_of_two_workers_runs_every_trial_once() {
    let t0 = Instant::now();
    let Some(a) = Array::submit(SWEEP) else {
        return;
    };
    a.wait_gone(Duration::from_secs(600));
    let (db, all) = (&a.db, a.logs());
    assert_eq!(query_i64(db, "SELECT COUNT(*) FROM trials"), 4, "{all}");
    assert_eq!(
        query_i64(db, "SELECT COUNT(*) FROM trials WHERE status = 'done'"),
        4,
        "{all}"
    );
    assert_eq!(
        query_i64(db, "SELECT MAX(attempts) FROM trials"),
        1,
        "a trial ran twice:\n{all}"
    );
    assert_eq!(
        query_i64(db, "SELECT COUNT(*) FROM epochs"),
        4,
        "one epoch per trial:\n{all}"
    );
    assert_eq!(
        query_i64(db, "SELECT COUNT(DISTINCT worker) FROM trials"),
        2,
        "the two tasks did not share the work:\n{all}"
    );
    for task in 0..2 {
        let log = a.log(task);
        assert!(log.contains(": done, test accuracy"), "task {task}:\n{log}");
        let info = a.show_task(task);
        assert!(info.contains("ExitCode=0:0"), "task {task}: {info}");
    }
    eprintln!(
        "slurm: 4 trials on a 2-task array in {:.1?} (cluster start included)",
        t0.elapsed()
    );
}

const LONG: &str = r#"name = "slurm"
[data]
train_subset = 1600
test_subset = 200
[base]
arch = "lenet"
epochs = 6
batch_size = 16
momentum = 0.9
[grid]
lr = [0.02, 0.01]
"#;

/// Slurm's two stop signals, one per task: USR1 to task 0's batch shell (what
/// `--signal=B:USR1@120` sends before the time limit) and a plain `scancel` (SIGTERM) of task
/// 1. Each worker saves, marks its trial interrupted and exits; a later run finishes both.
#[test]
fn usr1_and_scancel_interrupt_the_workers_and_a_later_run_resumes() {
    let t0 = Instant::now();
    let Some(a) = Array::submit(LONG) else { return };
    let db = &a.db;
    let both_started = wait_until(Duration::from_secs(300), || {
        db.exists()
            && query_i64(
                db,
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'epochs'",
            ) == 1
            && query_i64(db, "SELECT COUNT(DISTINCT trial_id) FROM epochs") == 2
    });
    assert!(both_started, "no epoch of both trials:\n{}", a.logs());
    let scancel = |args: &[&str]| {
        let out = a.slurm.command("scancel").args(args).output().unwrap();
        assert!(out.status.success(), "scancel {args:?}: {}", stderr(&out));
    };
    scancel(&["--signal=USR1", "--batch", &format!("{}_0", a.job)]);
    scancel(&[&format!("{}_1", a.job)]);
    a.wait_gone(Duration::from_secs(120));
    let all = a.logs();
    let epochs_before = query_i64(db, "SELECT COUNT(*) FROM epochs");
    assert!(epochs_before < 12, "the trials finished first:\n{all}");
    assert_eq!(
        query_i64(
            db,
            "SELECT COUNT(*) FROM trials WHERE status = 'interrupted'"
        ),
        2,
        "{all}"
    );
    assert!(a.log(0).contains("time limit near (SIGUSR1)"), "{all}");
    let info = a.show_task(0);
    assert!(info.contains("ExitCode=130:0"), "{info}");
    assert!(a.log(1).contains("interrupt: saving"), "{all}");

    let data = crate::common::data_args().unwrap();
    let out = run_sweep(&a.file, db, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(query_i64(db, "SELECT COUNT(*) FROM epochs"), 12);
    assert_eq!(
        query_i64(
            db,
            "SELECT COUNT(*) FROM trials WHERE status = 'done' AND attempts = 2"
        ),
        2
    );
    eprintln!(
        "slurm: USR1 and scancel after {epochs_before} of 12 epochs, resumed; {:.1?} \
         (cluster start included)",
        t0.elapsed()
    );
}

/// Without Slurm on PATH, `--submit` still writes the script and then fails clearly (exit 2).
#[test]
fn submit_without_sbatch_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "slurm.toml", SWEEP);
    let script = dir.path().join("job.sbatch");
    let empty = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "slurm",
            file.to_str().unwrap(),
            "--workers",
            "3",
            "--submit",
        ])
        .arg("--output")
        .arg(&script)
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`sbatch` was not found"),
        "{}",
        stderr(&out)
    );
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("#SBATCH --array=0-2\n"), "{text}");
    assert!(dir.path().join("slurm-logs").is_dir());
}

/// The written script runs in a plain shell too: its one command is this binary's `run`.
#[test]
fn the_script_names_this_binary_and_absolute_paths() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "slurm.toml", SWEEP);
    let out = bin()
        .current_dir(dir.path())
        .args(["slurm", "slurm.toml", "--db", "r.db", "--workers", "2"])
        .args(["--gpus-per-worker", "1", "--time", "1-00:00:00"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("submit it with: sbatch"),
        "{}",
        stdout(&out)
    );
    let text = std::fs::read_to_string(dir.path().join("slurm.sbatch")).unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_cifar-sweep"));
    // The command line, split by a real shell.
    let last = text.lines().last().unwrap();
    let words = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "set -- {}; printf '%s\\n' \"$@\"",
            last.strip_prefix("exec ").unwrap()
        ))
        .output()
        .unwrap();
    let words: Vec<String> = stdout(&words).lines().map(str::to_string).collect();
    let dir = dir.path().canonicalize().unwrap();
    assert_eq!(
        words,
        [
            exe.canonicalize().unwrap().display().to_string(),
            "run".into(),
            dir.join("slurm.toml").display().to_string(),
            "--db".into(),
            dir.join("r.db").display().to_string(),
            "--quiet".into(),
        ]
    );
    assert!(text.contains("#SBATCH --gres=gpu:1\n"), "{text}");
    assert!(text.contains("#SBATCH --time=1-00:00:00\n"), "{text}");
    let out = bin()
        .args(["slurm", file.to_str().unwrap(), "--workers", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
