//! Malformed sweep files: each is refused with the exact message, exit status 2, before any
//! training, and the database is left byte for byte as it was (or not created).

use crate::common::{bin, stderr, write};

/// (sweep file text, the message after `error: <file>:`)
const CASES: &[(&str, &str)] = &[
    ("name = \"a\"\n[grid\nlr = [0.1]\n", "2:6: invalid TOML: invalid table header\nexpected `.`, `]`"),
    ("[base]\nlr = 0.1\n", "1:1: name: missing required key `name`"),
    ("name = 3\n", "1:8: name: expected a string"),
    ("name = \"has space\"\n", "1:8: name: `has space` is not a valid sweep name: use letters, digits, `-`, `_` and `.`, not starting with `.` or `-`"),
    ("name = \"-rf\"\n", "1:8: name: `-rf` is not a valid sweep name: use letters, digits, `-`, `_` and `.`, not starting with `.` or `-`"),
    ("name = \"a\"\n[base]\nlr = nan\n", "3:6: base.lr: must be a finite number, got NaN"),
    ("name = \"a\"\n[grid]\nlr = [0.1, inf]\n", "3:12: grid.lr[1]: must be a finite number, got inf"),
    ("name = \"a\"\n[base]\nmomentum = -inf\n", "3:12: base.momentum: must be a finite number, got -inf"),
    ("name = \"a\"\n[data]\ntrain_subset = 100\n[base]\ntrain_subset = 200\n", "5:1: base.train_subset: `train_subset` is set in both [data] (line 3) and [base]; keep one"),
    ("name = \"a\"\nseeds = [0, 1]\n[[trials]]\narch = \"cnn3\"\nseed = 5\n", "5:8: trials[0].seed: `seed` in [[trials]] cannot be combined with `seeds` (which repeats every trial once per seed); remove one"),
    ("name = \"a\"\n[grid]\nlr = [0.1, 0.2]\n[[trials]]\nlr = 0.2\n", "5:6: trials[0] is the same configuration as the grid point lr=0.2 (trial #2); the database would record it once: remove one"),
    ("name = \"a\"\nnmae = \"b\"\n", "2:1: nmae: unknown key `nmae`; did you mean `name`?"),
    ("name = \"a\"\nlr = 0.1\n", "2:1: lr: `lr` is a hyperparameter: put it under [base] or [grid]"),
    ("name = \"a\"\n[base]\nlearning_rate = 0.1\n", "3:1: base.learning_rate: unknown hyperparameter `learning_rate` (expected one of: arch, epochs, batch_size, lr, optimizer, momentum, nesterov, weight_decay, schedule, warmup, step_size, gamma, label_smoothing, dropout, augment, seed, valid_fraction, train_subset, test_subset, activation, translate, flip, tta, lookahead, bn_bias_lr_scale, warmup_from, anneal_to, micro_batch, precision)"),
    ("name = \"a\"\n[grid]\nbatchsize = [20]\n", "3:1: grid.batchsize: unknown hyperparameter `batchsize`; did you mean `batch_size`?"),
    ("name = \"a\"\n[base]\nlr = \"fast\"\n", "3:6: base.lr: expected a number, found a string"),
    ("name = \"a\"\n[base]\nepochs = 2.5\n", "3:10: base.epochs: expected a non-negative integer, found a float"),
    ("name = \"a\"\n[base]\nbatch_size = -4\n", "3:14: base.batch_size: must be >= 0, got -4"),
    ("name = \"a\"\n[grid]\nlr = []\n", "3:6: grid.lr: empty list: a grid axis needs at least one value"),
    ("name = \"a\"\n[grid]\nlr = 0.1\n", "3:6: grid.lr: expected a list of values, e.g. lr = [...]"),
    ("name = \"a\"\n[grid]\nlr = [0.1, 0.0]\n", "3:12: grid.lr[1]: lr must be > 0, got 0"),
    ("name = \"a\"\n[grid]\nbatch_size = [20, 0]\n", "3:19: grid.batch_size[1]: batch_size must be at least 1"),
    ("name = \"a\"\n[base]\ndropout = 1.5\n", "3:11: base.dropout: dropout must be in [0, 1), got 1.5"),
    ("name = \"a\"\n[base]\narch = \"resnet50\"\n", "3:8: base.arch: unknown architecture `resnet50` (known: lenet, cnn3, vgg6, airnet)"),
    ("name = \"a\"\n[base]\noptimizer = \"adma\"\n", "3:13: base.optimizer: unknown value `adma`; did you mean `adam`?"),
    ("name = \"a\"\n[base]\nlr = 0.1\n[grid]\nlr = [0.2]\n", "5:1: grid.lr: `lr` is set in both base (line 3) and [grid]; keep one"),
    ("name = \"a\"\n[data]\nlr = 0.1\n", "3:1: data.lr: `lr` is a hyperparameter, not a data setting: put it under [base] or [grid]"),
    ("name = \"a\"\n[grid]\ndropout = [0.1, 0.1]\n", "3:17: grid.dropout[1]: duplicate value 0.1"),
    ("name = \"a\"\nseeds = [1, 1]\n", "2:13: seeds[1]: duplicate seed 1"),
    ("name = \"a\"\nseeds = [0]\n[base]\nseed = 3\n", "2:1: seeds: `seeds` and `seed` cannot both be set"),
    ("name = \"a\"\n[[trials]]\narch = \"lenet\"\nmomentum = 1.0\n", "4:12: trials[0].momentum: momentum must be in [0, 1), got 1"),
    ("name = \"a\"\n[base]\nnesterov = true\n", "3:12: base.nesterov: nesterov needs momentum > 0"),
    ("name = \"a\"\nmax_trials = 2\n[grid]\nlr = [0.1, 0.2, 0.3]\n", "1:1: the sweep expands to 3 trials, more than the limit of 2; pass --yes or raise `max_trials` to run it"),
    ("name = \"a\"\n[base]\nschedule = \"cosine\"\nepochs = 2\nwarmup = 2\n", "5:10: base.warmup: warmup must be in [0, epochs) = [0, 2), got 2"),
];

#[test]
fn malformed_sweep_files_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A database that already holds a sweep: it must stay byte for byte the same.
    let db = dir.path().join("results.db");
    {
        let _d = sweep::store::Store::open(&db).unwrap();
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let fresh = dir.path().join("fresh/results.db");
    assert!(CASES.len() >= 15);
    for (i, (text, expected)) in CASES.iter().enumerate() {
        let file = write(dir.path(), &format!("bad{i}.toml"), text);
        for db_path in [&db, &fresh] {
            let out = bin()
                .args([
                    "run",
                    file.to_str().unwrap(),
                    "--db",
                    db_path.to_str().unwrap(),
                ])
                .args(["--data-dir", "/nonexistent-data-dir", "--url", ""])
                .output()
                .unwrap();
            let err = stderr(&out);
            let want = format!("error: {}:{expected}", file.display());
            assert_eq!(out.status.code(), Some(2), "case {i}: {err}");
            assert!(
                err.starts_with(&want),
                "case {i}:\n got: {err}\nwant: {want}"
            );
        }
        assert_eq!(
            std::fs::read(&db).unwrap(),
            before,
            "case {i} changed the database"
        );
        assert!(!fresh.exists(), "case {i} created a database");
        assert!(
            !dir.path().join("fresh").exists(),
            "case {i} created the results folder"
        );
    }
}

#[test]
fn bad_databases_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "ok.toml", "name = \"ok\"\n[base]\nepochs = 1\n");
    // Not SQLite at all.
    let junk = write(
        dir.path(),
        "junk.db",
        &"this is not a database\n".repeat(100),
    );
    let out = bin()
        .args([
            "run",
            file.to_str().unwrap(),
            "--db",
            junk.to_str().unwrap(),
            "--url",
            "",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("junk.db: not a SQLite database (or it is corrupt)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&junk).unwrap(),
        "this is not a database\n".repeat(100)
    );
    // A schema from the future.
    let newer = dir.path().join("newer.db");
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99;")
        .unwrap();
    let out = bin()
        .args(["report", "--db", newer.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!(
            "schema version 99 is newer than this build understands ({})",
            sweep::store::SCHEMA_VERSION
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_sweep_file_is_named() {
    let out = bin()
        .args(["run", "/nonexistent/sweep.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        "error: /nonexistent/sweep.toml: cannot read the sweep file: No such file or directory (os error 2)"
    );
}
