//! `cifar-sweep slurm`: job arrays of workers submitted to a real single-node Slurm cluster
//! (see cluster.rs), sharing one store (SQLite, or a real PostgreSQL as on a cluster), the
//! signals Slurm sends them, and `cifar-sweep status` while they run.

use crate::cluster::{wait_until, Postgres, Slurm};
use crate::common::{bin, query_i64, run_sweep, stderr, stdout, write};
use crate::pg::{pg_trials, sqlite_trials};
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

/// The store the array's workers share.
enum Shared {
    /// A SQLite file in the array's folder.
    Sqlite(PathBuf),
    /// A throwaway PostgreSQL server; checkpoints in a folder beside the script.
    Pg(Postgres),
}

impl Shared {
    /// The first column of the first row of `sql`, as text.
    fn query(&self, sql: &str) -> String {
        match self {
            Shared::Sqlite(db) => {
                let c = rusqlite::Connection::open(db).unwrap();
                c.query_row(sql, [], |r| {
                    Ok(match r.get_ref(0)? {
                        rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                        v => format!("{v:?}"),
                    })
                })
                .unwrap()
            }
            Shared::Pg(pg) => pg.psql(sql),
        }
    }

    fn count(&self, sql: &str) -> i64 {
        let text = self.query(sql);
        text.parse()
            .unwrap_or_else(|_| panic!("{sql}: not a number: {text}"))
    }

    /// Whether the workers have recorded epochs of `trials` distinct trials yet (the schema
    /// may not exist).
    fn epochs_of(&self, trials: i64) -> bool {
        let exists = match self {
            Shared::Sqlite(db) => {
                db.exists()
                    && query_i64(
                        db,
                        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'epochs'",
                    ) == 1
            }
            Shared::Pg(pg) => pg.psql("SELECT to_regclass('epochs') IS NOT NULL") == "t",
        };
        exists && self.count("SELECT COUNT(DISTINCT trial_id) FROM epochs") >= trials
    }

    /// `--db`'s value.
    fn arg(&self) -> String {
        match self {
            Shared::Sqlite(db) => db.display().to_string(),
            Shared::Pg(pg) => pg.url(),
        }
    }

    /// The trials as `ordinal|status|epochs|test_acc bits` lines (see pg.rs).
    fn trials(&self) -> Vec<String> {
        match self {
            Shared::Sqlite(db) => sqlite_trials(db),
            Shared::Pg(pg) => pg_trials(pg),
        }
    }
}

/// An array of workers on one sweep, submitted to its own Slurm cluster.
struct Array {
    slurm: Slurm,
    _root: tempfile::TempDir,
    /// A folder with a space in its name (the script's paths must survive sbatch and the
    /// shell): the sweep file, the database, the script and its logs.
    dir: PathBuf,
    file: PathBuf,
    db: Shared,
    workers: u32,
    job: String,
    /// The sweep's name, which the logs' names start with.
    name: String,
}

impl Array {
    /// `cifar-sweep slurm FILE --db DB --workers 2 --submit` of `sweep` on SQLite.
    fn submit(sweep: &str) -> Option<Array> {
        Array::submit_to(sweep, 2, false)
    }

    /// `cifar-sweep slurm FILE --db DB --workers N --submit` of `sweep`, its workers on the
    /// CPU and the test data (through the environment sbatch hands the tasks), sharing a
    /// SQLite file or (`postgres`) a PostgreSQL server with `--checkpoint-dir`; None when the
    /// data, Slurm or PostgreSQL is missing (see cluster.rs).
    fn submit_to(sweep: &str, workers: u32, postgres: bool) -> Option<Array> {
        crate::common::data_args()?;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("my sweeps");
        std::fs::create_dir(&dir).unwrap();
        let db = if postgres {
            Shared::Pg(Postgres::start()?)
        } else {
            Shared::Sqlite(dir.join("results.db"))
        };
        let slurm = Slurm::start()?;
        let file = write(&dir, "slurm.toml", sweep);
        let src = trainer::data::test_data_source().unwrap();
        let mut cmd = bin();
        cmd.args(["slurm", file.to_str().unwrap(), "--db", &db.arg()])
            .args(["--workers", &workers.to_string(), "--submit", "--output"])
            .arg(dir.join("slurm.sbatch"));
        if postgres {
            cmd.arg("--checkpoint-dir")
                .arg(dir.join("shared checkpoints"));
        }
        let out = cmd
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
            workers,
            job,
            name: sweep
                .lines()
                .find_map(|l| l.strip_prefix("name = \""))
                .and_then(|l| l.strip_suffix('"'))
                .expect("the sweep file's first line names it")
                .to_string(),
        })
    }

    /// The log of array task `task`, in the folder beside the script.
    fn log(&self, task: u32) -> String {
        let p = self
            .dir
            .join(format!("slurm-logs/{}-{}_{task}.log", self.name, self.job));
        std::fs::read_to_string(&p).unwrap_or_else(|e| {
            // The task never started: what Slurm says of it is the useful part.
            format!("{}: {e}\n{}", p.display(), self.show_task(task))
        })
    }

    /// Every task's log, for failure messages.
    fn logs(&self) -> String {
        (0..self.workers)
            .map(|t| format!("--- task {t}:\n{}", self.log(t)))
            .collect()
    }

    /// Waits up to `limit` for every task to leave the queue.
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

    /// `cifar-sweep status --format json` of the sweep; None while it fails (the workers
    /// have not created the schema yet).
    fn status(&self) -> Option<serde_json::Value> {
        let out = bin()
            .args(["status", "--db", &self.db.arg(), "--format", "json"])
            .output()
            .unwrap();
        if !out.status.success() {
            return None;
        }
        Some(serde_json::from_str(&stdout(&out)).unwrap())
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
    assert_eq!(db.count("SELECT COUNT(*) FROM trials"), 4, "{all}");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM trials WHERE status = 'done'"),
        4,
        "{all}"
    );
    assert_eq!(
        db.count("SELECT MAX(attempts) FROM trials"),
        1,
        "a trial ran twice:\n{all}"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM epochs"),
        4,
        "one epoch per trial:\n{all}"
    );
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT worker) FROM trials"),
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

/// pg.rs's six trials (lr x seed), long enough (1,600 images, 2 epochs) that three tasks
/// starting a moment apart all get work.
fn six() -> String {
    crate::pg::GRID
        .replace("name = \"pg\"", "name = \"six\"")
        .replace("train_subset = 320", "train_subset = 1600")
}

/// The cluster setup of the issue: a 3-task array on one real PostgreSQL, checkpoints in a
/// shared folder. Every trial runs once, no epoch twice, each task runs at least one trial;
/// meanwhile `status` shows which host and process holds each running trial.
#[test]
fn three_array_tasks_share_a_postgres_sweep_and_status_names_their_hosts() {
    let t0 = Instant::now();
    let Some(a) = Array::submit_to(&six(), 3, true) else {
        return;
    };
    let mut seen_running = Vec::new();
    let gone = wait_until(Duration::from_secs(600), || {
        if let Some(v) = a.status() {
            for row in v[1]["rows"].as_array().unwrap() {
                let (host, pid) = (row["host"].as_str().unwrap(), row["pid"].as_str().unwrap());
                assert!(
                    !host.is_empty() && host != "?" && pid.parse::<u32>().is_ok(),
                    "{row}"
                );
                let trial = row["trial"].as_i64().unwrap();
                if !seen_running.contains(&trial) {
                    seen_running.push(trial);
                }
            }
        }
        a.slurm.states(&a.job).is_empty()
    });
    let (db, all) = (&a.db, a.logs());
    assert!(gone, "job {} still queued:\n{all}", a.job);
    assert!(
        !seen_running.is_empty(),
        "status never showed a running trial"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM trials WHERE status = 'done'"),
        6,
        "{all}"
    );
    assert_eq!(db.count("SELECT MAX(attempts) FROM trials"), 1, "{all}");
    assert_eq!(db.count("SELECT COUNT(*) FROM epochs"), 12, "{all}");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM (SELECT DISTINCT trial_id, epoch FROM epochs) x"),
        12
    );
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT worker) FROM trials"),
        3,
        "a task ran no trial:\n{all}"
    );
    for task in 0..3 {
        assert!(a.log(task).contains(": done, test accuracy"), "{all}");
    }
    // Afterwards: six done, three workers with at least one each.
    let v = a.status().unwrap();
    assert_eq!(
        v[0]["rows"],
        serde_json::json!([{"status": "done", "trials": 6}])
    );
    let workers = v[2]["rows"].as_array().unwrap();
    assert_eq!(workers.len(), 3, "{v}");
    assert!(
        workers.iter().all(|w| w["done"].as_i64().unwrap() >= 1),
        "{v}"
    );
    eprintln!(
        "slurm+postgres: 6 trials on a 3-task array in {:.1?} (clusters' start included); \
         status saw trials {seen_running:?} running",
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

/// Slurm's two stop signals, one per task, mid-trial: USR1 to task 0's batch shell (what
/// `--signal=B:USR1@120` sends before the time limit) and a plain `scancel` (SIGTERM) of
/// task 1. Each worker saves and marks its trial interrupted; task 0, stopped by its time limit,
/// has Slurm requeue it, and the requeued task resumes both trials (the cancelled task's is
/// taken over). The numbers are those of an uninterrupted run.
fn usr1_requeues_and_scancel_hands_over(postgres: bool) {
    let t0 = Instant::now();
    let Some(a) = Array::submit_to(LONG, 2, postgres) else {
        return;
    };
    let db = &a.db;
    let both_started = wait_until(Duration::from_secs(300), || db.epochs_of(2));
    assert!(both_started, "no epoch of both trials:\n{}", a.logs());
    let scancel = |args: &[&str]| {
        let out = a.slurm.command("scancel").args(args).output().unwrap();
        assert!(out.status.success(), "scancel {args:?}: {}", stderr(&out));
    };
    scancel(&["--signal=USR1", "--batch", &format!("{}_0", a.job)]);
    scancel(&[&format!("{}_1", a.job)]);
    let epochs_before = db.count("SELECT COUNT(*) FROM epochs");
    a.wait_gone(Duration::from_secs(600));
    let all = a.logs();
    assert!(epochs_before < 12, "the trials finished first:\n{all}");
    assert!(a.log(0).contains("time limit near (SIGUSR1)"), "{all}");
    assert!(a.log(0).contains("asked Slurm to requeue job"), "{all}");
    assert!(a.log(1).contains("interrupt: saving"), "{all}");
    assert!(a.show_task(0).contains("Restarts=1"), "{}", a.show_task(0));
    assert_eq!(
        db.count("SELECT COUNT(*) FROM trials WHERE status = 'done' AND attempts = 2"),
        2,
        "{all}"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM epochs"), 12, "{all}");

    // The same sweep run without interruption, on SQLite: the same numbers to the bit.
    let data = crate::common::data_args().unwrap();
    let quiet = a.dir.join("uninterrupted.db");
    let out = run_sweep(&a.file, &quiet, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(db.trials(), sqlite_trials(&quiet), "{all}");
    eprintln!(
        "slurm ({}): USR1 and scancel after {epochs_before} of 12 epochs, requeued and \
         resumed; {:.1?} (clusters' start included)",
        if postgres { "postgres" } else { "sqlite" },
        t0.elapsed()
    );
}

#[test]
fn usr1_requeues_and_scancel_hands_over_on_sqlite() {
    usr1_requeues_and_scancel_hands_over(false);
}

#[test]
fn usr1_requeues_and_scancel_hands_over_on_postgres() {
    usr1_requeues_and_scancel_hands_over(true);
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
