//! Hostile input on the trainer side (issue 11): damaged and forged checkpoints, stored
//! configs of the wrong types, empty splits, a damaged data cache, a data folder that is a
//! file.

use crate::common::{bin, data_args, query_i64, run_sweep, stderr, stdout, sweep_command, write};
use std::path::{Path, PathBuf};

const ONE: &str = r#"name = "hostile"
[data]
train_subset = 160
test_subset = 100
[base]
arch = "lenet"
epochs = 3
batch_size = 16
lr = 0.02
momentum = 0.9
"#;

/// Every epoch's (epoch, train loss, valid loss, valid acc) and the trial's (status, best
/// epoch, test loss, test acc), floats as bits: what must repeat exactly (timings never do).
type Exact = (Vec<(i64, i64, i64, i64)>, (String, i64, i64, i64));

fn exact(db: &Path) -> Exact {
    let c = rusqlite::Connection::open(db).unwrap();
    let epochs = c
        .prepare("SELECT epoch, train_loss, valid_loss, valid_acc FROM epochs ORDER BY epoch")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, f64>(1)?.to_bits() as i64,
                r.get::<_, f64>(2)?.to_bits() as i64,
                r.get::<_, f64>(3)?.to_bits() as i64,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let trial = c
        .query_row(
            "SELECT status, COALESCE(best_epoch, -1), COALESCE(test_loss, -1), COALESCE(test_acc, -1) FROM trials",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get::<_, f64>(2)?.to_bits() as i64,
                    r.get::<_, f64>(3)?.to_bits() as i64,
                ))
            },
        )
        .unwrap();
    (epochs, trial)
}

/// A finished one-trial sweep: its folder, sweep file, database and checkpoint folder.
struct Finished {
    _dir: tempfile::TempDir,
    file: PathBuf,
    db: PathBuf,
    ckpt: PathBuf,
}

fn finished_trial(data: &[String]) -> Finished {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "hostile.toml", ONE);
    let db = dir.path().join("results.db");
    let out = run_sweep(&file, &db, data);
    assert!(out.status.success(), "{}", stderr(&out));
    // The trial's own folder, as the database records it (checkpoints/<store id>/...).
    let rel: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT checkpoint_dir FROM trials", [], |r| r.get(0))
        .unwrap();
    let ckpt = dir.path().join(rel);
    Finished {
        _dir: dir,
        file,
        db,
        ckpt,
    }
}

/// Puts the trial back as a run killed mid-way would leave it for the next `run`.
fn reopen(db: &Path, status: &str) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute(
        "UPDATE trials SET status = ?1, finished_at = NULL",
        [status],
    )
    .unwrap();
}

fn state(ckpt: &Path, name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(ckpt.join(name)).unwrap()).unwrap()
}

fn put_state(ckpt: &Path, name: &str, v: &serde_json::Value) {
    std::fs::write(ckpt.join(name), serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

fn damaged_files(ckpt: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(ckpt)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".damaged-"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_damaged_checkpoint_resumes_from_an_intact_one_and_keeps_recorded_epochs() {
    let Some(data) = data_args() else { return };
    let f = finished_trial(&data);
    let want = exact(&f.db);
    assert_eq!(want.0.len(), 3);
    assert_eq!(want.1 .0, "done");
    // The previous position is kept beside the current one.
    assert_eq!(state(&f.ckpt, "state.prev.json")["epoch"], 2);
    assert!(state(&f.ckpt, "state.json")["files"]["state-e3.safetensors"]["sha256"].is_string());

    // 1. state.json unreadable (a torn write on a disk that lost it): resume from
    //    state.prev.json, train epoch 3 again, the same numbers.
    reopen(&f.db, "interrupted");
    std::fs::write(f.ckpt.join("state.json"), b"{\"config\": {\"arch\": \"le").unwrap();
    let out = run_sweep(&f.file, &f.db, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("damaged checkpoint")
            && err.contains(&f.ckpt.join("state.json").display().to_string()),
        "{err}"
    );
    assert_eq!(exact(&f.db), want);
    assert_eq!(
        damaged_files(&f.ckpt).len(),
        1,
        "{:?}",
        damaged_files(&f.ckpt)
    );

    // 2. The state's tensor file zeroed (same size): the checksum catches it. The trial was
    //    marked failed by an older version: --retry-failed runs it again.
    reopen(&f.db, "failed");
    let st = state(&f.ckpt, "state.json");
    let tensors = f.ckpt.join(st["state_file"].as_str().unwrap());
    let len = std::fs::metadata(&tensors).unwrap().len() as usize;
    std::fs::write(&tensors, vec![0u8; len]).unwrap();
    let out = sweep_command(&f.file, &f.db, &data)
        .arg("--retry-failed")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("damaged checkpoint") && err.contains("SHA-256"),
        "{err}"
    );
    assert_eq!(exact(&f.db), want);

    // 3. Both states damaged: a clean restart from
    //    epoch 1; the recorded epochs stay until re-recorded with the same numbers.
    reopen(&f.db, "interrupted");
    std::fs::write(f.ckpt.join("state.json"), b"").unwrap();
    std::fs::write(f.ckpt.join("state.prev.json"), b"not json").unwrap();
    let out = run_sweep(&f.file, &f.db, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("state.prev.json"), "{}", stderr(&out));
    assert_eq!(exact(&f.db), want);
    assert!(
        damaged_files(&f.ckpt).len() >= 4,
        "{:?}",
        damaged_files(&f.ckpt)
    );
    // What the restart wrote is whole again.
    let meta = trainer::checkpoint::read_meta(&f.ckpt).unwrap().unwrap();
    assert_eq!(meta.epoch, 3);
}

#[test]
fn a_forged_state_json_is_refused_not_trusted() {
    let Some(data) = data_args() else { return };
    let f = finished_trial(&data);
    let want = exact(&f.db);

    // Epoch 99 of 3 (the epoch-2 state with its history, claiming more): it used to end
    // the trial at once with two epochs recorded and the third deleted.
    reopen(&f.db, "interrupted");
    let mut prev = state(&f.ckpt, "state.prev.json");
    prev["epoch"] = 99.into();
    put_state(&f.ckpt, "state.json", &prev);
    let out = run_sweep(&f.file, &f.db, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("damaged checkpoint") && err.contains("epoch 99 is beyond"),
        "{err}"
    );
    assert_eq!(exact(&f.db), want);

    // A tensor file outside the checkpoint folder: never read.
    reopen(&f.db, "interrupted");
    let mut st = state(&f.ckpt, "state.json");
    let name = st["state_file"].as_str().unwrap().to_string();
    let outside = f.ckpt.parent().unwrap().join("outside.safetensors");
    std::fs::copy(f.ckpt.join(&name), &outside).unwrap();
    st["state_file"] = "../outside.safetensors".into();
    let sum = st["files"][&name].clone();
    st["files"]["../outside.safetensors"] = sum;
    put_state(&f.ckpt, "state.json", &st);
    let out = run_sweep(&f.file, &f.db, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("not a plain file name"), "{err}");
    assert!(outside.exists());
    assert_eq!(exact(&f.db), want);
}

#[test]
fn a_stored_config_of_the_wrong_types_fails_its_trial_and_the_run_goes_on() {
    let Some(data) = data_args() else { return };
    let dir = tempfile::tempdir().unwrap();
    let text = ONE
        .replace("epochs = 3", "epochs = 1")
        .replace("lr = 0.02\n", "")
        + "[grid]\nlr = [0.02, 0.01]\n";
    let file = write(dir.path(), "two.toml", &text);
    let db = dir.path().join("results.db");
    let out = run_sweep(&file, &db, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute(
        "UPDATE trials SET status = 'pending', finished_at = NULL,
         config = json_set(config, '$.lr', 'fast') WHERE ordinal = 0",
        [],
    )
    .unwrap();
    c.execute("UPDATE trials SET status = 'pending' WHERE ordinal = 1", [])
        .unwrap();
    let id = query_i64(&db, "SELECT id FROM trials WHERE ordinal = 0");
    let out = run_sweep(&file, &db, &data);
    // Exit 3: the run finished, with a failed trial.
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let error: String = c
        .query_row(
            "SELECT error FROM trials WHERE ordinal = 0 AND status = 'failed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        error.contains(&format!("trial {id}")) && error.contains("`lr`"),
        "{error}"
    );
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM trials WHERE ordinal = 1 AND status = 'done'"
        ),
        1
    );
    // Nor is the next one, with the trial queued again.
    let out = sweep_command(&file, &db, &data)
        .arg("--retry-failed")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM trials WHERE status = 'running'"),
        0
    );
}

#[test]
fn empty_splits_are_refused_at_parse_time() {
    let dir = tempfile::tempdir().unwrap();
    for (line, want) in [
        ("valid_fraction = 1e-9", "holds out no image of the 50000"),
        (
            "valid_fraction = 0.9999999",
            "leaves no image of the 50000 for training",
        ),
        ("train_subset = 10", "fewer than one batch of 16"),
    ] {
        let text =
            format!("name = \"split\"\n[data]\n{line}\n[base]\nbatch_size = 16\nepochs = 1\n");
        let file = write(dir.path(), "split.toml", &text);
        let db = dir.path().join("r/results.db");
        let data_dir = dir.path().join("data");
        // Data arguments that would import into the temporary folder, were the sweep not
        // refused first.
        let out = bin()
            .args([
                "run",
                file.to_str().unwrap(),
                "--db",
                db.to_str().unwrap(),
                "--device",
                "cpu",
                "--data-dir",
                data_dir.to_str().unwrap(),
                "--url",
                "",
            ])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{line}: {err}");
        let key = line.split(' ').next().unwrap();
        assert!(
            err.contains("split.toml:3:")
                && err.contains(&format!(": data.{key}: "))
                && err.contains(want),
            "{line}: {err}"
        );
        assert!(!db.exists(), "{line}: a database was written");
        assert!(!data_dir.exists(), "{line}: data was imported");
    }
}

/// A tiny data set in the binary layout (30 training, 10 test records), as a folder.
fn tiny_binary_layout(dir: &Path) -> PathBuf {
    let src = dir.join("tiny-src");
    std::fs::create_dir_all(&src).unwrap();
    let record = |i: usize| {
        let mut r = vec![(i % 10) as u8];
        r.extend((0..3072).map(|p| ((p * 7 + i * 13) % 251) as u8));
        r
    };
    for (k, name) in trainer::data::DATA_FILES.iter().enumerate() {
        let n = if k < 5 { 6 } else { 10 };
        let bytes: Vec<u8> = (0..n).flat_map(|i| record(k * 100 + i)).collect();
        std::fs::write(src.join(name), bytes).unwrap();
    }
    src
}

#[test]
fn a_damaged_data_cache_is_an_error_and_import_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = tiny_binary_layout(dir.path());
    let data_dir = dir.path().join("data");
    let data = |cmd: &str, extra: &[&str]| {
        bin()
            .args(["data", cmd, "--data-dir", data_dir.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = data("import", &[src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Whole but not the standard data set: verify is a gate, it fails.
    let out = data("verify", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stdout(&out).contains("standard: no"), "{}", stdout(&out));

    let cache = data_dir.join("cifar-10-batches-bin");
    let zeroed = cache.join("data_batch_2.bin");
    let shortened = cache.join("data_batch_4.bin");
    let original = std::fs::read(&shortened).unwrap();
    // Zero-filled at the same size: caught by the manifest's checksum, and (for caches
    // without a manifest) by the all-zero check.
    std::fs::write(&zeroed, vec![0u8; 6 * 3073]).unwrap();
    let sweep = write(
        dir.path(),
        "s.toml",
        "name = \"s\"\n[data]\nvalid_fraction = 0.2\n[base]\nbatch_size = 4\nepochs = 1\n",
    );
    let run = || {
        bin()
            .args([
                "run",
                sweep.to_str().unwrap(),
                "--db",
                dir.path().join("r/results.db").to_str().unwrap(),
                "--device",
                "cpu",
                "--data-dir",
                data_dir.to_str().unwrap(),
                "--url",
                "",
            ])
            .env_remove("CIFAR10_ARCHIVE")
            .output()
            .unwrap()
    };
    for remove_manifest in [false, true] {
        if remove_manifest {
            std::fs::remove_file(cache.join("manifest.txt")).unwrap();
        }
        for out in [data("verify", &[]), run()] {
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(
                err.contains("data_batch_2.bin")
                    && err.contains("damaged data cache")
                    && err.contains("data import"),
                "{err}"
            );
        }
    }
    // Re-import over the damaged cache.
    let out = data("import", &[src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = data("verify", &[]);
    assert!(!stderr(&out).contains("damaged"), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("data_batch_2.bin"),
        "{}",
        stdout(&out)
    );

    // Shortened by whole records: the manifest's sizes catch it.
    std::fs::write(&shortened, &original[..3 * 3073]).unwrap();
    let out = data("verify", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("data_batch_4.bin") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn the_standard_cache_verifies_with_exit_0() {
    let Some(src) = trainer::data::test_data_source() else {
        return;
    };
    trainer::data::load(&src).unwrap();
    let out = bin()
        .args([
            "data",
            "verify",
            "--data-dir",
            src.data_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("standard: yes"), "{}", stdout(&out));
}

#[test]
fn a_data_dir_that_is_a_file_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = write(dir.path(), "data", "a file");
    let file = write(dir.path(), "s.toml", "name = \"s\"\n[base]\nepochs = 1\n");
    let db = dir.path().join("r/results.db");
    for out in [
        bin()
            .args(["data", "verify", "--data-dir", not_a_dir.to_str().unwrap()])
            .output()
            .unwrap(),
        bin()
            .args([
                "run",
                file.to_str().unwrap(),
                "--db",
                db.to_str().unwrap(),
                "--device",
                "cpu",
            ])
            .args(["--data-dir", not_a_dir.to_str().unwrap(), "--url", ""])
            .output()
            .unwrap(),
    ] {
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!(
                "{}: the data folder (--data-dir) is a file, not a folder",
                not_a_dir.display()
            )),
            "{err}"
        );
        assert!(!err.contains("File exists"), "{err}");
    }
}
