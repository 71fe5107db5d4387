//! Hostile command lines and process handling (issue 11): huge grids, odd flag values,
//! generated sweeps that could be injected into, errors that must come before any write,
//! a stopped process, `nohup`, and what the logs say.

use crate::common::{bin, data_args, query_i64, stderr, stdout, sweep_command, write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Nothing at all was written under `dir` except the sweep files the test put there.
fn nothing_written(dir: &Path, keep: &[&str]) {
    let extra: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    assert!(extra.is_empty(), "written: {extra:?}");
}

/// Limits the child's address space, so that building a huge grid would fail loudly
/// instead of quietly using gigabytes.
fn limit_memory(c: &mut std::process::Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        c.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
}

/// A sweep file with a grid of ten values on each of `keys`.
fn grid_file(name: &str, keys: &[&str]) -> String {
    let mut text = format!("name = \"{name}\"\n[grid]\n");
    for k in keys {
        let values = match *k {
            "epochs" | "batch_size" | "seed" | "step_size" | "train_subset" | "test_subset" => {
                "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"
            }
            "warmup" => "[0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09]",
            _ => "[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9]",
        };
        text += &format!("{k} = {values}\n");
    }
    text
}

#[test]
fn huge_grids_are_counted_not_built() {
    let dir = tempfile::tempdir().unwrap();
    let eight = [
        "momentum",
        "dropout",
        "label_smoothing",
        "lr",
        "warmup",
        "weight_decay",
        "epochs",
        "batch_size",
    ];
    let mut fourteen = eight.to_vec();
    fourteen.extend([
        "seed",
        "step_size",
        "gamma",
        "valid_fraction",
        "train_subset",
        "test_subset",
    ]);
    for (name, keys, count) in [
        ("big", &eight[..], "100000000"),
        ("huge", &fourteen[..], "100000000000000"),
    ] {
        let file = write(dir.path(), &format!("{name}.toml"), &grid_file(name, keys));
        let db = dir.path().join("results.db");
        for cmd in ["run", "plan"] {
            let mut c = bin();
            c.args([cmd, file.to_str().unwrap(), "--db", db.to_str().unwrap()]);
            // Building 10^8 configurations would need tens of gigabytes.
            limit_memory(&mut c, 2 << 30);
            let out = c.output().unwrap();
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{cmd} {name}: {err}");
            assert!(
                err.contains(&format!("the sweep expands to {count} trials")),
                "{cmd} {name}: {err}"
            );
        }
        nothing_written(dir.path(), &["big.toml", "huge.toml"]);
    }
}

#[test]
fn numeric_flags_are_validated_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "ok.toml",
        "name = \"ok\"\n[base]\nepochs = 1\ntrain_subset = 100\n",
    );
    let db = dir.path().join("results.db");
    for bad in ["inf", "1e20", "nan", "-1", "NaN", "-0.5", "abc", ""] {
        let out = bin()
            .args(["run", file.to_str().unwrap(), "--db", db.to_str().unwrap()])
            .arg(format!("--checkpoint-every={bad}"))
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "--checkpoint-every {bad}: {err}"
        );
        assert!(
            err.contains("--checkpoint-every"),
            "--checkpoint-every {bad}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    nothing_written(dir.path(), &["ok.toml"]);
}

#[test]
fn a_bad_device_or_missing_data_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "ok.toml",
        "name = \"ok\"\n[base]\nepochs = 1\ntrain_subset = 100\n",
    );
    let db = dir.path().join("results/results.db");
    let data = dir.path().join("data");
    let out = bin()
        .args(["run", file.to_str().unwrap(), "--db", db.to_str().unwrap()])
        .args(["--device", "banana", "--data-dir", data.to_str().unwrap()])
        .args(["--url", "http://127.0.0.1:9/never-asked.tar.gz"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("banana"), "{err}");
    assert!(
        !err.contains("127.0.0.1"),
        "the data was fetched first: {err}"
    );
    // Missing data (no archive, no download): refused, and no database left behind.
    let out = bin()
        .args(["run", file.to_str().unwrap(), "--db", db.to_str().unwrap()])
        .args(["--device", "cpu", "--data-dir", data.to_str().unwrap()])
        .args(["--url", ""])
        .env_remove("CIFAR10_ARCHIVE")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!db.exists(), "an empty database was left behind");
    assert!(
        !dir.path().join("results").exists(),
        "the results folder was created"
    );
    // `train` with a bad device too.
    let out = bin()
        .args(["train", "-s", "epochs=1", "--device", "banana"])
        .args(["--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!db.exists());
}

#[test]
fn train_assignments_are_values_not_toml() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("results.db");
    // A value that would add a [grid] if pasted into TOML.
    let out = bin()
        .args(["train", "--db", db.to_str().unwrap(), "--url", ""])
        .args([
            "-s",
            "arch=lenet",
            "-s",
            "optimizer=sgd\n[grid]\nlr = [0.1, 0.2, 0.3]",
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("-s optimizer=sgd"), "{err}");
    assert!(err.contains("unknown value"), "{err}");
    // Errors name the flag, not a line of a file the user never sees.
    let out = bin()
        .args(["train", "--db", db.to_str().unwrap(), "-s", "lr=fast"])
        .output()
        .unwrap();
    assert_eq!(
        stderr(&out).trim(),
        "error: -s lr=fast: lr: expected a number, found a string"
    );
    assert!(!db.exists());
}

/// (status, attempts, worker) of the only trial.
fn trial_row(db: &Path) -> (String, i64, String) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT status, attempts, worker FROM trials", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .unwrap()
}

fn wait_for_epochs(db: &Path, child: &mut Child, n: i64) {
    let t0 = Instant::now();
    loop {
        let have = db.exists()
            && query_i64(
                db,
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'epochs'",
            ) == 1
            && query_i64(db, "SELECT COUNT(*) FROM epochs") >= n;
        if have {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(t0.elapsed() < Duration::from_secs(120), "no epoch recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const THREE_EPOCHS: &str = r#"name = "stop"
[data]
train_subset = 1600
test_subset = 200
[base]
arch = "lenet"
epochs = 3
batch_size = 16
momentum = 0.9
lr = 0.02
"#;

/// A process stopped (Ctrl-Z, SIGSTOP) for longer than the heartbeat limit is alive: another
/// `run` must not take its trial, and the stopped time is not training time.
#[test]
fn a_stopped_process_keeps_its_trial_and_its_pause_is_not_training_time() {
    let Some(data) = data_args() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "stop.toml", THREE_EPOCHS);
    let db = dir.path().join("results.db");
    let t0 = Instant::now();
    let mut a = sweep_command(&file, &db, &data)
        .arg("--quiet")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_epochs(&db, &mut a, 1);
    let pid = a.id() as i32;
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // As if it had been stopped for an hour: its heartbeat is far past the limit.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE trials SET heartbeat = datetime('now', '-1 hour')",
            [],
        )
        .unwrap();
    let (_, _, worker_a) = trial_row(&db);
    let out = sweep_command(&file, &db, &data)
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, attempts, worker) = trial_row(&db);
    assert_eq!(
        (status.as_str(), attempts, &worker),
        ("running", 1, &worker_a),
        "a second run took over the stopped process's trial"
    );
    std::thread::sleep(Duration::from_secs(3));
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let out = a.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let wall = t0.elapsed().as_secs_f64();
    assert_eq!(trial_row(&db).0, "done");
    assert_eq!(trial_row(&db).1, 1);
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM epochs"), 3);
    // The 3 s stop fell inside epoch 2 or at its very start; none of it is training time.
    let c = rusqlite::Connection::open(&db).unwrap();
    let secs: f64 = c
        .query_row("SELECT SUM(seconds) FROM epochs", [], |r| r.get(0))
        .unwrap();
    assert!(
        secs < wall - 2.5,
        "epochs add up to {secs:.2} s of a {wall:.2} s run that was stopped for 3 s"
    );
}

/// `nohup cifar-sweep run ...` asks for hang-ups to be ignored; a SIGHUP must not stop it.
#[test]
fn an_inherited_sighup_ignore_is_respected() {
    let Some(data) = data_args() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "stop.toml",
        &THREE_EPOCHS.replace("epochs = 3", "epochs = 2"),
    );
    let db = dir.path().join("results.db");
    let mut c = sweep_command(&file, &db, &data);
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: signal(2) only, between fork and exec (after the default reset).
        unsafe {
            c.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                Ok(())
            });
        }
    }
    let mut child = c
        .arg("--quiet")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_epochs(&db, &mut child, 1);
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(trial_row(&db).0, "done");
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM epochs"), 2);
}

/// What the logs and `plan` say: no "-0.0s", the right interrupt position, no colour codes
/// when stderr is not a terminal.
#[test]
fn plan_and_logs_say_what_happened() {
    let Some(data) = data_args() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "stop.toml", THREE_EPOCHS);
    let db = dir.path().join("results.db");
    let out = bin()
        .args(["plan", file.to_str().unwrap(), "--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!text.contains("-0.0s"), "{text}");
    // A fresh database: the estimate comes from a few timed steps.
    assert!(
        text.contains("estimated from a few timed training steps"),
        "{text}"
    );

    // Interrupted right at the end of epoch 1: the log says so, in plain text.
    let mut child = sweep_command(&file, &db, &data)
        .arg("--quiet")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_epochs(&db, &mut child, 1);
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        !err.contains('\x1b'),
        "colour codes in a non-terminal log: {err:?}"
    );
    assert!(
        err.contains("interrupted after epoch 1") || err.contains("interrupted in epoch 2"),
        "{err}"
    );
    assert!(!err.contains("after batch 0"), "{err}");
}

/// A sweep allowed to be large is streamed into the database, and the report lists its best
/// trials instead of building a table of every one.
#[test]
fn a_large_allowed_sweep_is_recorded_and_reported_in_bounded_form() {
    let Some(data) = data_args() else { return };
    let dir = tempfile::tempdir().unwrap();
    // 4 x 10 x 10 x 3 = 1200 trials, over the report's list of 1000.
    let text = "name = \"wide\"\nmax_trials = 1200\n[grid]\n\
                momentum = [0.1, 0.2, 0.3, 0.4]\n\
                dropout = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]\n\
                lr = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]\n\
                batch_size = [16, 32, 64]\n";
    let file = write(dir.path(), "wide.toml", text);
    let db = dir.path().join("results.db");
    let mut c = sweep_command(&file, &db, &data);
    c.args(["--limit", "0"]);
    limit_memory(&mut c, 3 << 30);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM trials"), 1200);
    assert_eq!(
        query_i64(&db, "SELECT COUNT(DISTINCT trial_key) FROM trials"),
        1200
    );
    let text = stdout(&out);
    assert!(
        text.contains("the best 1000 of 1200 trials"),
        "{}",
        &text[..text.len().min(400)]
    );
    // Exactly 1000 trial rows (numbers at the start of a line under the first title).
    let listed = text
        .lines()
        .skip(3)
        .take_while(|l| !l.trim().is_empty())
        .count();
    assert_eq!(listed, 1000);
}
