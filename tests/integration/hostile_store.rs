//! The store against hostile input (issue 11): foreign and damaged database files, databases
//! sharing a folder, sweeps sharing a name, names and paths read back from a database, and a
//! nightly gate that must fail closed.

use crate::common::{bin, data_args, query_i64, run_sweep, stderr, stdout, write};
use std::path::{Path, PathBuf};
use std::process::Output;

const TINY: &str = r#"name = "same"
[data]
train_subset = 64
test_subset = 64
[base]
arch = "lenet"
epochs = 1
batch_size = 32
[grid]
lr = [0.01]
"#;

/// Every file in `dir` with its bytes: "changes nothing" means this is unchanged.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn cmd(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

/// A cifar-sweep database with sweeps `names` (one finished trial each, test accuracy
/// `accs[i]`), closed cleanly (no -wal or -shm left).
fn fake_db(path: &Path, sweeps: &[(&str, f64)]) {
    drop(sweep::store::Store::open(path).unwrap());
    let db = rusqlite::Connection::open(path).unwrap();
    for (name, acc) in sweeps {
        db.execute(
            "INSERT INTO sweeps (name, spec, started_at) VALUES (?1, 'x', datetime('now'))",
            [name],
        )
        .unwrap();
        let id = db.last_insert_rowid();
        db.execute(
                "INSERT INTO trials (sweep_id, trial_key, ordinal, config, status, test_acc,
                 train_seconds) VALUES (?1, ?2, 0, '{\"arch\":\"lenet\",\"lr\":0.01}', 'done', ?3, 1.0)",
                rusqlite::params![id, format!("{id:016x}"), acc],
            )
            .unwrap();
    }
}

#[test]
fn read_only_commands_refuse_foreign_and_empty_files_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sweep_file = write(dir.path(), "s.toml", TINY);
    let files = dir.path().join("dbs");
    std::fs::create_dir(&files).unwrap();
    let foreign = files.join("app.db");
    let c = rusqlite::Connection::open(&foreign).unwrap();
    c.execute_batch("CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('keep me');")
        .unwrap();
    drop(c);
    let empty = files.join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let before = snapshot(&files);
    for db in [&foreign, &empty] {
        let d = db.to_str().unwrap();
        for args in [
            vec!["report", "--db", d],
            vec!["show", "1", "--db", d],
            vec!["compare", "a", "b", "--db", d],
            vec!["plot", "--db", d, "--no-samples"],
            vec!["plan", sweep_file.to_str().unwrap(), "--db", d],
        ] {
            let out = cmd(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
            assert!(stderr(&out).contains(d), "{args:?}: {}", stderr(&out));
            assert_eq!(snapshot(&files), before, "{args:?} changed the folder");
        }
    }
    // `run` creates its schema in an empty file, never in another program's database.
    let out = cmd(&[
        "run",
        sweep_file.to_str().unwrap(),
        "--db",
        foreign.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("another program"), "{}", stderr(&out));
    assert_eq!(snapshot(&files), before);
}

#[test]
fn report_reads_a_database_without_changing_it_even_in_a_read_only_folder() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("ro");
    std::fs::create_dir(&folder).unwrap();
    let db = folder.join("results.db");
    fake_db(&db, &[("one", 0.5)]);
    let before = snapshot(&folder);
    let d = db.to_str().unwrap();
    let out = cmd(&["report", "--db", d]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot(&folder), before, "report changed the folder");

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o555)).unwrap();
    let out = cmd(&["report", "--db", d]);
    let show = cmd(&["show", "1", "--db", d]);
    let sweep_file = write(dir.path(), "s.toml", TINY);
    let plan = cmd(&["plan", sweep_file.to_str().unwrap(), "--db", d]);
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("one"), "{}", stdout(&out));
    assert!(show.status.success(), "{}", stderr(&show));
    assert!(plan.status.success(), "{}", stderr(&plan));
    assert_eq!(snapshot(&folder), before);
}

#[test]
fn a_damaged_database_is_bad_input_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("results.db");
    fake_db(&db, &[("one", 0.5), ("two", 0.6)]);
    let bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8192, "a database of several pages");
    std::fs::write(&db, &bytes[..bytes.len() / 2]).unwrap();
    let out = cmd(&["report", "one", "--db", db.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(db.to_str().unwrap()), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "said once: {err}");
}

#[test]
fn a_version_1_database_is_read_as_it_is_then_upgraded_keeping_its_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("results.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(include_str!("../../crates/sweep/src/store/schema_v1.sql"))
        .unwrap();
    c.execute_batch(
        "PRAGMA user_version = 1;
         INSERT INTO sweeps (name, spec, started_at) VALUES ('old', 'x', datetime('now'));
         INSERT INTO trials (sweep_id, trial_key, ordinal, config, status, attempts)
           VALUES (1, 'aaaa', 0, '{\"arch\":\"lenet\"}', 'interrupted', 1),
                  (1, 'bbbb', 1, '{\"arch\":\"cnn3\"}', 'pending', 0);",
    )
    .unwrap();
    drop(c);
    let before = std::fs::read(&db).unwrap();
    let out = cmd(&["report", "old", "--db", db.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "report migrated the file"
    );

    let d = sweep::store::Store::open(&db).unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    assert_eq!(
        query_i64(&db, "PRAGMA user_version"),
        sweep::store::SCHEMA_VERSION
    );
    // The migrations kept every row that refers to a trial (v3 rebuilds `trials`).
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM trials"), 2);
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM pragma_foreign_key_check"),
        0
    );
    let store: String = c
        .query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let worker = sweep::store::Worker::current();
    let long = std::time::Duration::from_secs(3600);
    let first = d.claim_next(1, &worker, "cpu", long).unwrap().unwrap();
    d.set_status(first.id, sweep::store::TrialStatus::Interrupted, None, None)
        .unwrap();
    c.execute("UPDATE trials SET ordinal = 5 WHERE id = ?1", [first.id])
        .unwrap();
    let second = d.claim_next(1, &worker, "cpu", long).unwrap().unwrap();
    // The trial version 1 started keeps its folder; the other gets this database's own.
    assert_eq!(
        first.checkpoint_dir,
        dir.path().join("checkpoints/old/aaaa")
    );
    assert_eq!(
        second.checkpoint_dir,
        dir.path().join("checkpoints").join(&store).join("old/bbbb")
    );
    // The README's starting point still answers.
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM trial_summary"), 2);
}

/// The epoch timings of `db`'s trials, as bits: equal only if copied.
fn timings(db: &Path) -> Vec<i64> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT seconds FROM epochs ORDER BY trial_id, epoch")
        .unwrap();
    st.query_map([], |r| Ok(r.get::<_, f64>(0)?.to_bits() as i64))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn databases_in_one_folder_never_take_each_others_checkpoints() {
    let Some(data) = data_args() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "same.toml", TINY);
    let results = dir.path().join("results");
    let a = results.join("a.db");
    let b = results.join("b.db");
    let out = run_sweep(&file, &a, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    let a_files = files_under(&results.join("checkpoints"));
    assert!(!a_files.is_empty());

    // A second database beside the first trains its own trial.
    let out = run_sweep(&file, &b, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(timings(&a), timings(&b), "b copied a's epochs");
    // Deleting a database to start over trains again too.
    std::fs::remove_file(&a).unwrap();
    let out = run_sweep(&file, &a, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(timings(&a), timings(&b));
    // The old database's checkpoints may be another database's live state: never deleted
    // or changed.
    let now = files_under(&results.join("checkpoints"));
    for (path, bytes) in &a_files {
        assert_eq!(now.get(path), Some(bytes), "{}", path.display());
    }
}

/// Every file under `dir` (recursively) with its bytes.
fn files_under(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn a_different_sweep_under_a_recorded_name_is_refused() {
    let Some(data) = data_args() else { return };
    let dir = tempfile::tempdir().unwrap();
    let first = write(dir.path(), "first.toml", TINY);
    let other = write(
        dir.path(),
        "other.toml",
        &TINY.replace("lr = [0.01]", "lr = [0.02]"),
    );
    let db = dir.path().join("results.db");
    let out = run_sweep(&first, &db, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    let trials = "SELECT COUNT(*) FROM trials";

    let out = run_sweep(&other, &db, &data);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for p in [&first, &other] {
        assert!(err.contains(p.to_str().unwrap()), "{err}");
    }
    assert_eq!(query_i64(&db, trials), 1);
    let spec: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT spec FROM sweeps", [], |r| r.get(0))
        .unwrap();
    assert_eq!(spec, TINY, "the stored spec was overwritten");

    // The same trials under edited text (a comment) are the same sweep: nothing to train.
    let commented = write(dir.path(), "commented.toml", &format!("# nightly\n{TINY}"));
    let out = run_sweep(&commented, &db, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(query_i64(&db, trials), 1);
    // `--name` is the way to run the other file, and the same file twice under one `--name`
    // resumes (the second run has nothing left to do).
    for _ in 0..2 {
        let out = crate::common::sweep_command(&first, &db, &data)
            .args(["--name", "same-2"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM epochs"), 2);
}

fn series_db(dir: &Path) -> PathBuf {
    let db = dir.join("results.db");
    fake_db(
        &db,
        &[("nightly-2025-01-01", 0.60), ("nightly-2025-01-02", 0.40)],
    );
    db
}

#[test]
fn the_nightly_gate_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let db = series_db(dir.path());
    let d = db.to_str().unwrap();
    let (a, b) = ("nightly-2025-01-01", "nightly-2025-01-02");
    // A 20-point drop: exit 4 with a sane threshold...
    let out = cmd(&["compare", a, b, "--db", d]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    // ...and refused, never passed, with a threshold that is not one.
    for bad in ["nan", "-1", "inf"] {
        let out = cmd(&["compare", a, b, "--db", d, &format!("--max-drop={bad}")]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("--max-drop"), "{}", stderr(&out));
    }
    // A name that is not there, and a run with nothing before it, are not "all good".
    let out = cmd(&["compare", "--previous-of", "nightly-2025-01-09", "--db", d]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nightly-2025-01-09"),
        "{}",
        stderr(&out)
    );
    let out = cmd(&["compare", "--previous-of", a, "--db", d]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = cmd(&["compare", "--previous-of", a, "--first-ok", "--db", d]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = cmd(&["compare", "--previous-of", b, "--db", d]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    // JSON output is only JSON.
    let out = cmd(&["compare", a, b, "--db", d, "--format", "json"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    assert!(v.is_array());
}

#[test]
fn show_takes_numbers_as_ids_and_key_prefixes_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("results.db");
    fake_db(&db, &[("s", 0.5)]);
    let c = rusqlite::Connection::open(&db).unwrap();
    // Trial 6, and trials 7 and 8 whose keys start with "6".
    for (id, key) in [
        (6, "ffff000000000000"),
        (7, "6abc000000000000"),
        (8, "6abd000000000000"),
    ] {
        c.execute(
            "INSERT INTO trials (id, sweep_id, trial_key, ordinal, config) VALUES (?1, 1, ?2, ?1, '{}')",
            rusqlite::params![id, key],
        )
        .unwrap();
    }
    let d = db.to_str().unwrap();
    let out = cmd(&["show", "6", "--db", d]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("ffff000000000000"),
        "{}",
        stdout(&out)
    );
    let out = cmd(&["show", "key:6abd", "--db", d]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Trial 8"), "{}", stdout(&out));
    let out = cmd(&["show", "key:6ab", "--db", d]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    for key in ["6abc000000000000", "6abd000000000000"] {
        assert!(stderr(&out).contains(key), "{}", stderr(&out));
    }
    let out = cmd(&["show", "9", "--db", d]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_sweep_name_from_the_database_never_becomes_a_path_outside() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("a/b");
    std::fs::create_dir_all(&inner).unwrap();
    let db = inner.join("results.db");
    fake_db(&db, &[("../../../escape", 0.5)]);
    let out = cmd(&["plot", "--db", db.to_str().unwrap(), "--no-samples"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("escape"), "{}", stderr(&out));
    assert!(!dir.path().join("escape").exists());
    assert!(!inner.join("plots").exists());
}
