//! A two-trial sweep on a slice of the real data into a temporary database: every table's
//! rows, the tables printed, and a resumed run that redoes nothing.

use crate::common::{bin, data_args, query_i64, run_sweep, stderr, stdout, write};

const SWEEP: &str = r#"name = "e2e"
description = "two small lenet trials"
[data]
train_subset = 600
test_subset = 500
[base]
arch = "lenet"
epochs = 2
batch_size = 32
momentum = 0.9
[grid]
lr = [0.02, 0.005]
"#;

#[test]
fn two_trial_sweep_fills_every_table_and_resumes_without_redoing() {
    let Some(data) = data_args() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "e2e.toml", SWEEP);
    let db = dir.path().join("results/results.db");
    let dbs = db.to_str().unwrap();

    // First run: stop after one trial (as a crash or a Ctrl-C between trials would).
    let out = bin()
        .args([
            "run",
            file.to_str().unwrap(),
            "--db",
            dbs,
            "--device",
            "cpu",
            "--limit",
            "1",
        ])
        .args(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM trials WHERE status = 'done'"),
        1
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM trials WHERE status = 'pending'"),
        1
    );
    let first_finished: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT finished_at FROM trials WHERE status = 'done'",
            [],
            |r| r.get(0),
        )
        .unwrap();

    // Second run: only the other trial runs.
    let out = run_sweep(&file, &db, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("Sweep `e2e`: trials by test accuracy"),
        "{text}"
    );
    assert!(
        text.contains("Sweep `e2e`: per-class test accuracy"),
        "{text}"
    );
    assert!(
        text.contains("airplane") && text.contains("truck"),
        "{text}"
    );

    let c = rusqlite::Connection::open(&db).unwrap();
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM sweeps"), 1);
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM trials WHERE status = 'done'"),
        2
    );
    assert_eq!(
        query_i64(&db, "SELECT MAX(attempts) FROM trials"),
        1,
        "a trial ran twice"
    );
    let again: String = c
        .query_row("SELECT finished_at FROM trials WHERE lr = 0.02", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(again, first_finished, "the finished trial was redone");
    for trial in 1..=2 {
        let q = |sql: &str| query_i64(&db, &sql.replace("?", &trial.to_string()));
        assert_eq!(q("SELECT COUNT(*) FROM epochs WHERE trial_id = ?"), 2);
        assert_eq!(
            q("SELECT COUNT(*) FROM epochs WHERE trial_id = ? AND epoch IN (1, 2)"),
            2
        );
        assert_eq!(
            q("SELECT COUNT(*) FROM class_accuracy WHERE trial_id = ?"),
            10
        );
        assert_eq!(q("SELECT COUNT(*) FROM confusion WHERE trial_id = ?"), 100);
        assert_eq!(
            q("SELECT SUM(count) FROM confusion WHERE trial_id = ?"),
            500
        );
        assert_eq!(
            q("SELECT SUM(total) FROM class_accuracy WHERE trial_id = ?"),
            500
        );
        // The test accuracy agrees with the confusion matrix's diagonal.
        assert_eq!(
            q("SELECT SUM(count) FROM confusion WHERE trial_id = ? AND true_class = predicted_class"),
            q("SELECT CAST(ROUND(test_acc * 500) AS INTEGER) FROM trials WHERE id = ?")
        );
        assert_eq!(
            q("SELECT best_epoch BETWEEN 1 AND 2 FROM trials WHERE id = ?"),
            1
        );
        assert_eq!(
            q("SELECT train_seconds > 0 AND images_per_sec > 0 FROM trials WHERE id = ?"),
            1
        );
    }
    let names: Vec<String> = c
        .prepare("SELECT class_name FROM class_accuracy WHERE trial_id = 1 ORDER BY class_index")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(names, trainer::data::CIFAR10_CLASSES.to_vec());
    // The swept columns are usable in SQL.
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(DISTINCT lr) FROM trial_summary WHERE sweep = 'e2e'"
        ),
        2
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM class_accuracy_wide"),
        2
    );

    // A third run has nothing to do and changes no trial.
    let out = run_sweep(&file, &db, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(query_i64(&db, "SELECT MAX(attempts) FROM trials"), 1);

    readme_queries_run(&db, false);

    // Reports in every format, and one trial in detail.
    for format in ["table", "markdown", "csv", "json"] {
        let out = bin()
            .args(["report", "e2e", "--db", dbs, "--format", format])
            .output()
            .unwrap();
        assert!(out.status.success(), "{format}: {}", stderr(&out));
        assert!(stdout(&out).contains("lenet"), "{format}");
    }
    let out = bin().args(["show", "1", "--db", dbs]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(
        shown.contains("Confusion matrix") && shown.contains("config.lr"),
        "{shown}"
    );
    // The plan estimates from the recorded epochs.
    let out = bin()
        .args([
            "plan",
            file.to_str().unwrap(),
            "--db",
            dbs,
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("estimated"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("no timings"), "{}", stdout(&out));
}

/// Every ```sql block of the README runs as printed against a database with finished trials.
/// `search`: the database holds a search (a sweep with a `[space]`), so the queries about
/// searches must return rows too; without one they need only run.
pub fn readme_queries_run(db: &std::path::Path, search: bool) {
    let c = rusqlite::Connection::open(db).unwrap();
    for q in &readme_queries() {
        let mut st = c.prepare(q).unwrap_or_else(|e| panic!("{q}\n{e}"));
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap()
            .count();
        if !q.contains("diverged") && (search || !q.contains("[space]")) {
            assert!(rows > 0, "no rows from:\n{q}");
        }
    }
}

/// The README's ```sql blocks.
pub fn readme_queries() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let blocks: Vec<String> = readme
        .split("```sql\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().to_string())
        .collect();
    assert!(blocks.len() >= 6, "README has {} SQL queries", blocks.len());
    blocks
}

/// `plan` on a fresh database estimates every trial from a few timed steps (no `-`), gives a
/// total, the expected cost under ASHA, and numbers trials from 1 as `report` and `show` do.
#[test]
fn plan_estimates_every_trial_on_a_fresh_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "fresh.toml",
        "name = \"fresh\"\n[data]\ntrain_subset = 100\n[base]\narch = \"lenet\"\nepochs = 9\n\
         batch_size = 10\n[grid]\nlr = [0.01, 0.1]\ndropout = [0.0, 0.5]\n\
         [prune]\nkind = \"asha\"\nreduction_factor = 3\ngrace_epochs = 1\n",
    );
    let db = dir.path().join("none.db");
    let out = bin()
        .args(["plan", file.to_str().unwrap(), "--db", db.to_str().unwrap()])
        .args(["--device", "cpu"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<&str> = text.lines().filter(|l| l.contains("lenet")).collect();
    assert_eq!(rows.len(), 4, "{text}");
    for (i, row) in rows.iter().enumerate() {
        assert!(row.starts_with(&format!("{} ", i + 1)), "{text}");
        assert!(!row.trim_end().ends_with('-'), "no estimate: {text}");
    }
    assert!(
        text.contains("4 trials, about") && text.contains("timed training steps"),
        "{text}"
    );
    assert!(
        text.contains("with ASHA pruning") && text.contains("expected"),
        "{text}"
    );
    assert!(!db.exists(), "plan created the database");
}
