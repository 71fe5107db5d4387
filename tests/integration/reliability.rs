//! Reliability: hard kills at many moments, several processes on one database, failing and
//! diverging trials, and a parser that never panics.

use crate::common::{bin, data_args, query_i64, run_sweep, stderr, stdout, sweep_command, write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const SMALL: &str = r#"name = "rel"
[data]
train_subset = 320
test_subset = 200
[base]
arch = "lenet"
epochs = 2
batch_size = 16
momentum = 0.9
[grid]
lr = [0.02, 0.01]
"#;

fn spawn_run(file: &Path, db: &Path, data: &[String], extra: &[&str]) -> Child {
    sweep_command(file, db, data)
        .arg("--quiet")
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// (ordinal, status, best_epoch, test_loss bits, test_acc bits) per trial, and every epoch's
/// (ordinal, epoch, train_loss bits, valid_loss bits, valid_acc bits).
type Snapshot = (
    Vec<(i64, String, i64, i64, i64)>,
    Vec<(i64, i64, i64, i64, i64)>,
);

fn snapshot(db: &Path) -> Snapshot {
    let c = rusqlite::Connection::open(db).unwrap();
    let trials = c
        .prepare(
            "SELECT ordinal, status, best_epoch, test_loss, test_acc FROM trials ORDER BY ordinal",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get::<_, f64>(3)?.to_bits() as i64,
                r.get::<_, f64>(4)?.to_bits() as i64,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let epochs = c
        .prepare(
            "SELECT t.ordinal, e.epoch, e.train_loss, e.valid_loss, e.valid_acc FROM epochs e
             JOIN trials t ON t.id = e.trial_id ORDER BY t.ordinal, e.epoch",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get::<_, f64>(2)?.to_bits() as i64,
                r.get::<_, f64>(3)?.to_bits() as i64,
                r.get::<_, f64>(4)?.to_bits() as i64,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (trials, epochs)
}

/// Checkpoints of finished trials load (no torn file) and no temporary files are left.
fn checkpoints_whole(results: &Path) {
    let c = rusqlite::Connection::open(results.join("results.db")).unwrap();
    let dirs: Vec<String> = c
        .prepare("SELECT checkpoint_dir FROM trials")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!dirs.is_empty());
    for rel in dirs {
        let dir = results.join(rel);
        let meta = trainer::checkpoint::read_meta(&dir)
            .unwrap()
            .expect("state.json");
        for f in std::iter::once(meta.state_file.clone()).chain(meta.best.map(|b| b.file)) {
            trainer::checkpoint::load_tensors(&dir.join(&f), &trainer::Device::Cpu)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.join(&f).display()));
        }
    }
}

/// Kill -9 at `points.len()` moments, each followed by a run to the end; the result must equal
/// an uninterrupted run's, bit for bit.
fn kill_and_resume(points: &[u64]) {
    let Some(data) = data_args() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "rel.toml", SMALL);
    let reference = dir.path().join("ref/results.db");
    let out = run_sweep(&file, &reference, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    let want = snapshot(&reference);
    assert_eq!(want.0.len(), 2);
    assert_eq!(want.1.len(), 4);

    let mut killed_mid_run = 0;
    for (i, ms) in points.iter().enumerate() {
        let results = dir.path().join(format!("k{i}"));
        let db = results.join("results.db");
        // Several kills into the same run: each at `ms`, then a clean run to the end.
        // The first kill of each point lands in a run that must import the data set into an
        // empty folder, so early points interrupt the import itself.
        let fresh_data = results.join("data");
        let mut importing = data.clone();
        let at = importing.iter().position(|a| a == "--data-dir").unwrap();
        importing[at + 1] = fresh_data.display().to_string();
        for round in 0..3 {
            let args = if round == 0 { &importing } else { &data };
            let mut child = spawn_run(&file, &db, args, &["--checkpoint-every", "0.05"]);
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_millis(*ms) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                killed_mid_run += 1;
            }
            child.wait().unwrap();
            if round == 2 {
                break;
            }
        }
        let out = run_sweep(&file, &db, &importing);
        assert!(out.status.success(), "kill point {ms} ms: {}", stderr(&out));
        let got = snapshot(&db);
        assert_eq!(
            got, want,
            "kill point {ms} ms: results differ from an uninterrupted run"
        );
        assert_eq!(
            query_i64(&db, "SELECT COUNT(*) FROM trials WHERE status = 'done'"),
            2
        );
        assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM class_accuracy"), 20);
        assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM confusion"), 200);
        checkpoints_whole(&results);
        // The last run read (or imported) the data in the folder whose import was killed: it is
        // whole, and what the killed import left behind was cleaned up.
        trainer::data::verify(&fresh_data).expect("a whole cache");
        let leftovers: Vec<_> = std::fs::read_dir(&fresh_data)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            leftovers
                .iter()
                .all(|n| !n.to_string_lossy().contains(".tmp")),
            "temporary import files left behind: {leftovers:?}"
        );
    }
    eprintln!(
        "kill -9: {} kill points x 3 kills, {killed_mid_run} landed before the run ended; all resumed to identical results",
        points.len()
    );
    assert!(
        killed_mid_run > points.len(),
        "the kills came too late to test anything"
    );
}

#[test]
fn kill_9_then_resume_gives_the_uninterrupted_result() {
    kill_and_resume(&[150, 450, 900, 1500]);
}

#[test]
#[ignore = "slow: many kill points (just test-slow)"]
fn kill_9_at_many_moments() {
    let points: Vec<u64> = (1..=30).map(|i| i * 97).collect();
    kill_and_resume(&points);
}

#[test]
fn three_processes_share_one_sweep_and_two_sweeps_share_one_database() {
    let Some(data) = data_args() else { return };
    let dir = tempfile::tempdir().unwrap();
    let text = SMALL
        .replace("lr = [0.02, 0.01]", "lr = [0.03, 0.02, 0.01, 0.005]")
        .replace("epochs = 2", "epochs = 1");
    let file = write(dir.path(), "rel.toml", &text);
    let other = write(
        dir.path(),
        "other.toml",
        &text.replace("name = \"rel\"", "name = \"other\""),
    );
    let db = dir.path().join("results.db");
    let mut children: Vec<Child> = (0..3).map(|_| spawn_run(&file, &db, &data, &[])).collect();
    children.push(spawn_run(&other, &db, &data, &[]));
    // A report reading while the sweeps write.
    let mut reads = 0;
    while children.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        let out = bin()
            .args(["report", "--db", db.to_str().unwrap(), "--format", "csv"])
            .output()
            .unwrap();
        if db.exists() && out.status.success() {
            reads += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(!err.contains("locked"), "{err}");
    }
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM trials"), 8);
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM trials WHERE status = 'done'"),
        8
    );
    assert_eq!(
        query_i64(&db, "SELECT MAX(attempts) FROM trials"),
        1,
        "a trial ran twice"
    );
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM epochs"), 8);
    assert!(
        query_i64(&db, "SELECT COUNT(DISTINCT worker) FROM trials t JOIN sweeps s ON s.id = t.sweep_id WHERE s.name = 'rel'") >= 2,
        "the three processes did not share the work"
    );
    eprintln!(
        "concurrency: 3 processes on one sweep + 1 on another, {reads} reports read meanwhile"
    );
}

#[test]
fn diverged_and_failed_trials_are_recorded_and_the_sweep_goes_on() {
    let Some(data) = data_args() else { return };
    let dir = tempfile::tempdir().unwrap();
    // lr = 10 does not overflow lenet (its ReLUs die and the loss sits at ln 10); 1e30 does.
    let text = SMALL.replace("lr = [0.02, 0.01]", "lr = [1e30, 0.02]");
    let file = write(dir.path(), "rel.toml", &text);
    let results = dir.path().join("results");
    let db = results.join("results.db");
    let out = run_sweep(&file, &db, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    let c = rusqlite::Connection::open(&db).unwrap();
    let (status, error, last_good): (String, String, i64) = c
        .query_row(
            "SELECT status, error, best_epoch FROM trials WHERE lr = 1e30",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(status, "diverged");
    assert!(
        error.contains("loss became NaN or infinite in epoch"),
        "{error}"
    );
    assert_eq!(
        last_good,
        query_i64(
            &db,
            "SELECT COUNT(*) FROM epochs e JOIN trials t ON t.id = e.trial_id WHERE t.lr = 1e30"
        )
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM trials WHERE status = 'done'"),
        1
    );
    assert!(
        stdout(&out).contains("trials that did not finish"),
        "{}",
        stdout(&out)
    );

    // A trial whose checkpoint cannot be written fails; the others still run; exit 3.
    let text = SMALL.replace("name = \"rel\"", "name = \"fail\"");
    let file = write(dir.path(), "fail.toml", &text);
    let spec = sweep::spec::parse("fail.toml", &text).unwrap();
    let plans = sweep::grid::expand(&spec).unwrap();
    let src = trainer::data::test_data_source().unwrap();
    let checksum = trainer::data::load(&src).unwrap().checksum;
    let key = sweep::runner::trial_key(&plans[0].config, &checksum);
    let store_id: String = c
        .query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let blocked = results
        .join("checkpoints")
        .join(store_id)
        .join("fail")
        .join(&key);
    std::fs::create_dir_all(blocked.parent().unwrap()).unwrap();
    std::fs::write(&blocked, b"a file where the checkpoint folder should be").unwrap();
    let out = run_sweep(&file, &db, &data);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let (id, error): (i64, String) = c
        .query_row(
            "SELECT id, error FROM trials t WHERE status = 'failed' AND trial_key = ?1",
            [&key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(error.contains(&key), "{error}");
    assert!(
        stderr(&out).contains(&format!("1 trial(s) failed: {id}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM trial_summary WHERE sweep = 'fail' AND status = 'done'"
        ),
        1
    );
    // Not retried without --retry-failed.
    let out = run_sweep(&file, &db, &data);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        query_i64(&db, &format!("SELECT attempts FROM trials WHERE id = {id}")),
        1
    );
}

#[test]
fn bad_data_and_results_paths_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "ok.toml", "name = \"ok\"\n[base]\nepochs = 1\n");
    let run = |extra: &[&str]| {
        bin()
            .args(["run", file.to_str().unwrap(), "--device", "cpu"])
            .args(extra)
            .output()
            .unwrap()
    };
    // The results folder cannot be created (a file is in the way).
    let blocker = write(dir.path(), "blocker", "x");
    let out = run(&["--db", &format!("{}/results.db", blocker.display())]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot create the database folder"),
        "{}",
        stderr(&out)
    );
    // A missing archive.
    let db = dir.path().join("r/results.db");
    let data_dir = dir.path().join("data");
    let out = run(&[
        "--db",
        db.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--archive",
        "/nonexistent/cifar.tar.gz",
        "--url",
        "",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/cifar.tar.gz"),
        "{}",
        stderr(&out)
    );
    assert!(!data_dir.join("cifar-10-batches-bin").exists());
    // A truncated archive.
    let truncated = dir.path().join("trunc.tar.gz");
    if let Some(real) = trainer::data::find_shared_archive() {
        let bytes = std::fs::read(real).unwrap();
        std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
        let out = run(&[
            "--db",
            db.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--archive",
            truncated.to_str().unwrap(),
            "--url",
            "",
        ]);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("trunc.tar.gz"), "{}", stderr(&out));
        assert!(!data_dir.join("cifar-10-batches-bin").exists());
    }
    // A cached data file of the wrong size.
    let cache = data_dir.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&cache).unwrap();
    for f in trainer::data::DATA_FILES {
        std::fs::write(cache.join(f), vec![0u8; 3073 * 2]).unwrap();
    }
    std::fs::write(cache.join("test_batch.bin"), vec![0u8; 3000]).unwrap();
    let out = run(&[
        "--db",
        db.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--url",
        "",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("test_batch.bin"), "{}", stderr(&out));
    // Nothing was recorded for any of these.
    if db.exists() {
        assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM sweeps"), 0);
    }
}

#[test]
fn the_sweep_parser_never_panics_on_generated_input() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let keys = [
        "name",
        "description",
        "seeds",
        "max_trials",
        "arch",
        "lr",
        "batch_size",
        "dropout",
        "epochs",
        "optimizer",
        "momentum",
        "nesterov",
        "warmup",
        "schedule",
        "seed",
        "valid_fraction",
        "x",
    ];
    let values = [
        "\"a\"",
        "\"lenet\"",
        "\"vgg6\"",
        "0",
        "-1",
        "1",
        "30",
        "0.5",
        "1e309",
        "-0.0",
        "nan",
        "inf",
        "true",
        "[]",
        "[1, 2]",
        "[0.1, -0.1]",
        "[\"cnn3\", \"lenet\"]",
        "{a = 1}",
        "\"\"",
        "[[1]]",
        "18446744073709551615",
        "9223372036854775807",
    ];
    let headers = [
        "",
        "[base]\n",
        "[grid]\n",
        "[data]\n",
        "[[trials]]\n",
        "[base.x]\n",
        "[grid\n",
    ];
    let line = (0..keys.len(), 0..values.len(), 0..headers.len())
        .prop_map(move |(k, v, h)| format!("{}{} = {}\n", headers[h], keys[k], values[v]));
    let doc = (
        proptest::collection::vec(line, 0..12),
        any::<bool>(),
        ".{0,40}",
    )
        .prop_map(|(lines, named, junk)| {
            let mut s = if named {
                "name = \"p\"\n".to_string()
            } else {
                String::new()
            };
            s.extend(lines);
            s + &junk
        });
    let mut runner = TestRunner::new(Config {
        cases: 5000,
        failure_persistence: None,
        ..Config::default()
    });
    let started = Instant::now();
    runner
        .run(&doc, |text| {
            if let Ok(mut spec) = sweep::spec::parse("p.toml", &text) {
                spec.max_trials = 64;
                let _ = sweep::grid::expand(&spec);
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "parser property test: 5000 generated sweep files in {:.2?}, no panic",
        started.elapsed()
    );
}

#[test]
fn ctrl_c_saves_marks_interrupted_and_the_next_run_resumes() {
    interrupt_and_resume("kill -INT $0");
}

/// `timeout`, and `kill` of a shell job, signal the process and then its process group: the
/// same SIGINT twice, microseconds apart. That is one request, not "Ctrl-C again, quit now".
#[test]
fn a_signal_delivered_twice_is_one_interrupt() {
    interrupt_and_resume("kill -INT $0; kill -INT $0");
}

/// SIGTERM (`timeout`'s default, `systemctl stop`, `docker stop`) saves state like Ctrl-C.
#[test]
fn sigterm_saves_marks_interrupted_and_the_next_run_resumes() {
    interrupt_and_resume("kill -TERM $0");
}

/// SIGUSR1 (what Slurm sends a job's batch shell before its time limit, see `cifar-sweep
/// slurm`) saves state like Ctrl-C.
#[test]
fn sigusr1_saves_marks_interrupted_and_the_next_run_resumes() {
    interrupt_and_resume("kill -USR1 $0");
}

/// Runs a 4-epoch sweep, sends it signals with `sh -c SEND` (`$0` is its pid) once the first
/// epoch is recorded, and checks it stopped cleanly (exit 130, trial `interrupted`) and that
/// the next run resumes it to the end.
fn interrupt_and_resume(send: &str) {
    let Some(data) = data_args() else { return };
    let dir = tempfile::tempdir().unwrap();
    let text = SMALL
        .replace("lr = [0.02, 0.01]", "lr = [0.02]")
        .replace("epochs = 2", "epochs = 4")
        .replace("train_subset = 320", "train_subset = 1600");
    let file = write(dir.path(), "rel.toml", &text);
    let db = dir.path().join("results.db");
    let child = spawn_run(&file, &db, &data, &[]);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60)
        && !(db.exists()
            && query_i64(
                &db,
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'epochs'",
            ) == 1
            && query_i64(&db, "SELECT COUNT(*) FROM epochs") >= 1)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = std::process::Command::new("sh")
        .args(["-c", send, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "{send}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{send}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let epochs_before = query_i64(&db, "SELECT COUNT(*) FROM epochs");
    assert!(epochs_before < 4, "the run finished before the interrupt");
    let c = rusqlite::Connection::open(&db).unwrap();
    let st: String = c
        .query_row("SELECT status FROM trials", [], |r| r.get(0))
        .unwrap();
    assert_eq!(st, "interrupted", "{send}");
    let out = run_sweep(&file, &db, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM epochs"), 4);
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM trials WHERE status = 'done' AND attempts = 2"
        ),
        1
    );
}

/// Several processes opening a new database at the same instant all switch it to WAL; SQLite
/// refuses all but one of them at once ("database is locked", no busy wait), so `Store::open`
/// retries. Without the retry about 3% of such opens failed (one flaked CI run).
#[test]
fn a_new_database_opened_by_many_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut opened = 0;
    for round in 0..40 {
        let path = dir.path().join(format!("r{round}.db"));
        let barrier = std::sync::Barrier::new(6);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        sweep::store::Store::open(&path).map(drop)
                    })
                })
                .collect();
            for h in handles {
                if let Err(e) = h.join().unwrap() {
                    panic!("round {round}: {e}");
                }
                opened += 1;
            }
        });
    }
    assert_eq!(opened, 240);
}

/// `run --jobs 2`: two worker processes from one command share the sweep (each trial once),
/// a SIGTERM to the command stops both after saving their trials (exit 130), the same
/// command resumes them, and every number equals a one-at-a-time run's bit for bit (one
/// thread per job there, one thread here: the kernels' and candle's).
#[test]
fn jobs_share_a_sweep_stop_together_and_resume_to_the_one_at_a_time_result() {
    let Some(data) = data_args() else { return };
    let dir = tempfile::tempdir().unwrap();
    let text = SMALL
        .replace("lr = [0.02, 0.01]", "lr = [0.03, 0.02, 0.01, 0.005]")
        .replace("epochs = 2", "epochs = 3")
        .replace("train_subset = 320", "train_subset = 1600");
    let file = write(dir.path(), "rel.toml", &text);
    let (jobs_db, one_db) = (dir.path().join("jobs.db"), dir.path().join("one.db"));
    let jobs_cmd = || {
        let mut c = sweep_command(&file, &jobs_db, &data);
        c.args(["--jobs", "2"]).env("CIFAR_SWEEP_THREADS", "2");
        c
    };
    let child = jobs_cmd()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stop once both jobs hold a trial with an epoch recorded.
    let t0 = Instant::now();
    let both_running = || {
        jobs_db.exists()
            && query_i64(
                &jobs_db,
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'epochs'",
            ) == 1
            && query_i64(
                &jobs_db,
                "SELECT COUNT(DISTINCT t.worker) FROM trials t JOIN epochs e ON e.trial_id = t.id \
                 WHERE t.status = 'running'",
            ) == 2
    };
    while t0.elapsed() < Duration::from_secs(120) && !both_running() {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(both_running(), "two jobs never ran at once");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("2 jobs started, 1 thread(s) each"), "{err}");
    assert!(err.contains("run the same command again"), "{err}");
    assert_eq!(
        query_i64(
            &jobs_db,
            "SELECT COUNT(*) FROM trials WHERE status = 'interrupted'"
        ),
        2,
        "{err}"
    );
    assert_eq!(
        query_i64(
            &jobs_db,
            "SELECT COUNT(*) FROM trials WHERE status = 'running'"
        ),
        0
    );
    // The same command again finishes the sweep.
    let out = jobs_cmd().output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).matches(" done ").count(),
        4,
        "{}",
        stdout(&out)
    );
    assert_eq!(
        query_i64(
            &jobs_db,
            "SELECT COUNT(*) FROM trials WHERE status = 'done'"
        ),
        4
    );
    assert_eq!(
        query_i64(&jobs_db, "SELECT COUNT(*) FROM trials WHERE attempts = 2"),
        2
    );
    assert_eq!(query_i64(&jobs_db, "SELECT COUNT(*) FROM epochs"), 12);
    // One at a time, one thread: the same numbers.
    let out = sweep_command(&file, &one_db, &data)
        .env("CIFAR_SWEEP_THREADS", "1")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot(&jobs_db), snapshot(&one_db));
}
