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

/// A folder with a space in its name: the script's paths must survive sbatch and the shell.
fn spaced_dir(root: &Path) -> PathBuf {
    let d = root.join("my sweeps");
    std::fs::create_dir(&d).unwrap();
    d
}

/// `cifar-sweep slurm FILE --db DB --workers N --submit` aimed at `slurm`, its workers on
/// the CPU and the test data (through the environment sbatch hands the tasks); the job id.
fn submit(slurm: &Slurm, file: &Path, db: &Path, workers: u32) -> String {
    let src = trainer::data::test_data_source().unwrap();
    let out = bin()
        .args([
            "slurm",
            file.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
        ])
        .args(["--workers", &workers.to_string(), "--submit"])
        // Beside the sweep file, so the logs are in its folder too.
        .arg("--output")
        .arg(file.with_file_name("slurm.sbatch"))
        .envs(slurm.env())
        .env("CIFAR10_DATA_DIR", &src.data_dir)
        .env("CIFAR10_ARCHIVE", src.archive.unwrap())
        .env("CIFAR_SWEEP_DEVICE", "cpu")
        // The tasks' logs: a line per epoch and per finished trial.
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    assert!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
        "stdout is not a job id: {id:?}"
    );
    assert!(stderr(&out).contains("wrote "), "{}", stderr(&out));
    id
}

/// The log of array task `task` of `job`, in the folder beside the script.
fn task_log(dir: &Path, job: &str, task: u32) -> String {
    let p = dir.join(format!("slurm-logs/slurm-{job}_{task}.log"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Both tasks' logs, for failure messages.
fn logs(dir: &Path, job: &str) -> String {
    (0..2)
        .map(|t| format!("--- task {t}:\n{}", task_log(dir, job, t)))
        .collect()
}

#[test]
fn a_job_array_of_two_workers_runs_every_trial_once() {
    if crate::common::data_args().is_none() {
        return;
    }
    let Some(slurm) = Slurm::start() else { return };
    let t0 = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let dir = spaced_dir(root.path());
    let file = write(&dir, "slurm.toml", SWEEP);
    let db = dir.join("results.db");
    let job = submit(&slurm, &file, &db, 2);
    assert!(
        slurm.wait_gone(&job, Duration::from_secs(600)),
        "job {job} still queued after 10 minutes:\n{}",
        logs(&dir, &job)
    );
    let all = logs(&dir, &job);
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM trials"), 4, "{all}");
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM trials WHERE status = 'done'"),
        4,
        "{all}"
    );
    assert_eq!(
        query_i64(&db, "SELECT MAX(attempts) FROM trials"),
        1,
        "a trial ran twice:\n{all}"
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM epochs"),
        4,
        "one epoch per trial:\n{all}"
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(DISTINCT worker) FROM trials"),
        2,
        "the two tasks did not share the work:\n{all}"
    );
    for task in 0..2 {
        let log = task_log(&dir, &job, task);
        assert!(log.contains(": done, test accuracy"), "task {task}:\n{log}");
        let info = slurm.show_job(&format!("{job}_{task}"));
        assert!(info.contains("ExitCode=0:0"), "task {task}: {info}");
    }
    eprintln!("slurm: 4 trials on a 2-task array in {:.1?}", t0.elapsed());
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
    if crate::common::data_args().is_none() {
        return;
    }
    let Some(slurm) = Slurm::start() else { return };
    let t0 = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let dir = spaced_dir(root.path());
    let file = write(&dir, "slurm.toml", LONG);
    let db = dir.join("results.db");
    let job = submit(&slurm, &file, &db, 2);
    let both_started = wait_until(Duration::from_secs(300), || {
        db.exists()
            && query_i64(
                &db,
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'epochs'",
            ) == 1
            && query_i64(&db, "SELECT COUNT(DISTINCT trial_id) FROM epochs") == 2
    });
    assert!(
        both_started,
        "no epoch of both trials:\n{}",
        logs(&dir, &job)
    );
    let scancel = |args: &[&str]| {
        let out = slurm.command("scancel").args(args).output().unwrap();
        assert!(out.status.success(), "scancel {args:?}: {}", stderr(&out));
    };
    scancel(&["--signal=USR1", "--batch", &format!("{job}_0")]);
    scancel(&[&format!("{job}_1")]);
    assert!(
        slurm.wait_gone(&job, Duration::from_secs(120)),
        "the tasks did not stop:\n{}",
        logs(&dir, &job)
    );
    let all = logs(&dir, &job);
    let epochs_before = query_i64(&db, "SELECT COUNT(*) FROM epochs");
    assert!(epochs_before < 12, "the trials finished first:\n{all}");
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM trials WHERE status = 'interrupted'"
        ),
        2,
        "{all}"
    );
    let log0 = task_log(&dir, &job, 0);
    assert!(log0.contains("time limit near (SIGUSR1)"), "{log0}");
    assert!(
        slurm
            .show_job(&format!("{job}_0"))
            .contains("ExitCode=130:0"),
        "{}",
        slurm.show_job(&format!("{job}_0"))
    );
    let log1 = task_log(&dir, &job, 1);
    assert!(log1.contains("interrupt: saving"), "{log1}");

    let data = crate::common::data_args().unwrap();
    let out = run_sweep(&file, &db, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM epochs"), 12);
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM trials WHERE status = 'done' AND attempts = 2"
        ),
        2
    );
    eprintln!(
        "slurm: USR1 and scancel after {epochs_before} of 12 epochs, resumed; {:.1?}",
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
