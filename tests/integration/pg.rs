//! The PostgreSQL store (issue 14) against a real, throwaway server ([`Postgres::start`]):
//! the same sweep as on SQLite, workers sharing one sweep, a worker's connection killed,
//! and the bad inputs. Skipped where PostgreSQL is not installed, failed instead under
//! `CIFAR_SWEEP_REQUIRE_PG=1`.

use crate::cluster::{wait_until, Postgres};
use crate::common::*;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

/// Six trials of two epochs: enough for six workers to share.
pub(crate) const GRID: &str = r#"name = "pg"
[data]
train_subset = 320
test_subset = 200
[base]
arch = "lenet"
epochs = 2
batch_size = 16
momentum = 0.9
[grid]
lr = [0.03, 0.02, 0.01]
seed = [1, 2]
"#;

/// `run FILE --db URL --checkpoint-dir DIR --device cpu <data>`, not started.
fn pg_run(file: &Path, url: &str, checkpoints: &Path, data: &[String]) -> Command {
    let mut c = sweep_command(file, Path::new(url), data);
    c.arg("--checkpoint-dir").arg(checkpoints);
    c
}

fn spawn(mut c: Command) -> Child {
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {}\n{}{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// The trials as `ordinal|status|epochs|test_acc` lines, test_acc as its bits.
pub(crate) fn pg_trials(pg: &Postgres) -> Vec<String> {
    pg.psql(
        "SELECT t.ordinal || '|' || t.status || '|'
                || (SELECT COUNT(*) FROM epochs e WHERE e.trial_id = t.id) || '|'
                || COALESCE(t.test_acc::text, 'null')
         FROM trials t ORDER BY t.ordinal",
    )
    .lines()
    .map(bits)
    .collect()
}

pub(crate) fn sqlite_trials(db: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare(
            "SELECT t.ordinal, t.status, (SELECT COUNT(*) FROM epochs e WHERE e.trial_id = t.id),
                    t.test_acc FROM trials t ORDER BY t.ordinal",
        )
        .unwrap();
    st.query_map([], |r| {
        let acc: Option<f64> = r.get(3)?;
        Ok(bits(&format!(
            "{}|{}|{}|{}",
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            acc.map_or("null".into(), |a| format!("{a:?}"))
        )))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// A trial line with its accuracy as the f64's bits: PostgreSQL and Rust print the shortest
/// text that reads back exactly, but the bits are what must agree.
fn bits(line: &str) -> String {
    let (head, acc) = line.rsplit_once('|').unwrap();
    match acc.parse::<f64>() {
        Ok(a) => format!("{head}|{:#018x}", a.to_bits()),
        Err(_) => line.to_string(),
    }
}

/// Whether the workers have recorded an epoch (the schema may not exist yet).
fn epochs_recorded(pg: &Postgres) -> bool {
    pg.psql("SELECT to_regclass('epochs') IS NOT NULL") == "t"
        && pg.psql("SELECT COUNT(*) FROM epochs") != "0"
}

#[test]
fn a_sweep_on_postgres_gives_what_it_gives_on_sqlite() {
    let Some(data) = data_args() else { return };
    let Some(pg) = Postgres::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "search.toml", TINY_SEARCH);
    let lite = dir.path().join("results.db");
    assert_ok(&run_sweep(&file, &lite, &data), "the SQLite run");
    let ckpt = dir.path().join("ckpt");
    let out = pg_run(&file, &pg.url(), &ckpt, &data).output().unwrap();
    assert_ok(&out, "the PostgreSQL run");
    let on_pg = pg_trials(&pg);
    assert_eq!(on_pg, sqlite_trials(&lite));
    assert!(on_pg.iter().any(|l| l.contains("|done|")), "{on_pg:?}");
    // Checkpoints went under --checkpoint-dir.
    assert!(ckpt.join("checkpoints").is_dir());

    // The readers work on it, and say what they say on SQLite.
    let report = |db: &str| {
        let o = bin()
            .args(["report", "search", "--db", db, "--format", "json"])
            .output()
            .unwrap();
        assert_ok(&o, "report");
        stdout(&o)
    };
    let (a, b) = (report(&pg.url()), report(lite.to_str().unwrap()));
    let statuses = |s: &str| -> Vec<String> {
        s.split("\"status\"")
            .skip(1)
            .map(|x| x.chars().take(16).collect())
            .collect()
    };
    assert_eq!(statuses(&a), statuses(&b));
    assert!(!statuses(&a).is_empty(), "{a}");
    // The other readers too.
    for args in [
        vec!["show", "1"],
        vec!["plan", file.to_str().unwrap()],
        vec!["compare", "search", "search"],
        vec!["status", "search"],
    ] {
        let o = bin()
            .args(&args)
            .args(["--db", &pg.url()])
            .output()
            .unwrap();
        assert_ok(&o, &format!("{args:?}"));
    }
    // `status` counts the same trials by status on both.
    let status = |db: &str| {
        let o = bin()
            .args(["status", "--db", db, "--format", "json"])
            .output()
            .unwrap();
        assert_ok(&o, "status");
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        v[0]["rows"].clone()
    };
    assert_eq!(status(&pg.url()), status(lite.to_str().unwrap()));
    // The README's queries run unchanged, and those that answer on SQLite answer here.
    for q in crate::sweep_e2e::readme_queries() {
        let rows = pg.psql(&q);
        if !q.contains("diverged") {
            assert!(!rows.is_empty(), "no rows from:\n{q}");
        }
    }
    // The views exist and answer.
    assert_eq!(
        pg.psql("SELECT COUNT(*) FROM trial_summary"),
        on_pg.len().to_string()
    );
    pg.psql("SELECT * FROM best_per_arch");
    pg.psql("SELECT * FROM class_accuracy_wide");
    assert_eq!(
        pg.psql("SELECT value FROM meta WHERE key = 'schema_version'"),
        "3"
    );
}

#[test]
fn six_workers_share_one_postgres_sweep_and_run_each_trial_once() {
    let Some(data) = data_args() else { return };
    let Some(pg) = Postgres::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "grid.toml", GRID);
    let ckpt = dir.path().join("ckpt");
    let workers: Vec<Child> = (0..6)
        .map(|_| spawn(pg_run(&file, &pg.url(), &ckpt, &data)))
        .collect();
    for (i, w) in workers.into_iter().enumerate() {
        let o = w.wait_with_output().unwrap();
        assert_ok(&o, &format!("worker {i}"));
    }
    assert_eq!(
        pg.psql("SELECT status, COUNT(*), SUM(attempts) FROM trials GROUP BY status"),
        "done|6|6"
    );
    assert_eq!(pg.psql("SELECT COUNT(*) FROM epochs"), "12");
    assert_eq!(pg.psql("SELECT COUNT(*) FROM sweeps"), "1");
}

#[test]
fn a_worker_whose_connection_is_killed_reconnects_and_finishes() {
    let Some(data) = data_args() else { return };
    let Some(pg) = Postgres::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "grid.toml", GRID);
    let ckpt = dir.path().join("ckpt");
    let worker = spawn(pg_run(&file, &pg.url(), &ckpt, &data));
    assert!(
        wait_until(Duration::from_secs(120), || epochs_recorded(&pg)),
        "no epoch recorded"
    );
    let killed = pg.psql(
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
    assert_ne!(killed, "0", "no worker connection to kill");
    let o = worker.wait_with_output().unwrap();
    assert_ok(&o, "the worker");
    assert!(stderr(&o).contains("connection lost"), "{}", stderr(&o));
    assert_eq!(
        pg.psql("SELECT status, COUNT(*) FROM trials GROUP BY status"),
        "done|6"
    );
    assert_eq!(pg.psql("SELECT COUNT(*) FROM epochs"), "12");
}

#[test]
fn bad_postgres_input_is_refused_naming_the_server_and_writes_nothing() {
    let Some(pg) = Postgres::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "grid.toml", GRID);
    let ckpt = dir.path().join("ckpt");
    let port = pg
        .url()
        .rsplit_once(':')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fails = |url: &str, extra: &[&str], says: &str| {
        let o = bin()
            .args([
                "run",
                file.to_str().unwrap(),
                "--db",
                url,
                "--device",
                "cpu",
            ])
            .args(extra)
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{url}: {err}");
        assert!(err.contains(says), "{url}: {err}");
    };
    let ck = ["--checkpoint-dir", ckpt.to_str().unwrap()];
    // Unreachable: a port nobody listens on.
    let url = format!("postgres://cifar@127.0.0.1:{closed}/sweep");
    fails(&url, &ck, &url);
    // A user the server does not know (a wrong password: see the next test).
    let url = format!("postgres://nobody:wrong@127.0.0.1:{port}/sweep");
    fails(
        &url,
        &ck,
        &format!("postgres://nobody@127.0.0.1:{port}/sweep"),
    );
    // The password never appears in a message.
    let o = bin().args(["report", "--db", &url]).output().unwrap();
    assert!(!stderr(&o).contains("wrong"), "{}", stderr(&o));
    // A database that does not exist.
    let url = format!("postgres://cifar@127.0.0.1:{port}/sweeep");
    fails(&url, &ck, &url);
    // A typo in the port.
    let url = format!("postgres://cifar@127.0.0.1:{port}x/sweep");
    fails(&url, &ck, "not a valid PostgreSQL URL");
    // No --checkpoint-dir.
    fails(&pg.url(), &[], "--checkpoint-dir");
    // Nothing was written anywhere.
    assert_eq!(
        pg.psql("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'"),
        "0"
    );
    assert!(!ckpt.exists());
    // A reader on a database without the schema: refused, nothing created.
    let o = bin().args(["report", "--db", &pg.url()]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains(&pg.url()), "{}", stderr(&o));
    assert_eq!(
        pg.psql("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'"),
        "0"
    );
}

#[test]
fn a_postgres_database_of_a_newer_schema_is_refused() {
    let Some(pg) = Postgres::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "grid.toml", GRID);
    pg.psql(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         INSERT INTO meta VALUES ('schema_version', '99');
         CREATE TABLE sweeps (id BIGINT); CREATE TABLE trials (id BIGINT);",
    );
    for args in [
        vec![
            "run",
            file.to_str().unwrap(),
            "--checkpoint-dir",
            dir.path().to_str().unwrap(),
        ],
        vec!["report"],
    ] {
        let o = bin()
            .args(&args)
            .args(["--db", &pg.url()])
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&pg.url()) && err.contains("schema version 99 is newer"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(pg.psql("SELECT COUNT(*) FROM sweeps"), "0");
}

#[test]
fn three_workers_ride_out_a_postgres_restart() {
    let Some(data) = data_args() else { return };
    let Some(pg) = Postgres::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "grid.toml", GRID);
    let ckpt = dir.path().join("ckpt");
    let workers: Vec<Child> = (0..3)
        .map(|_| spawn(pg_run(&file, &pg.url(), &ckpt, &data)))
        .collect();
    assert!(
        wait_until(Duration::from_secs(120), || epochs_recorded(&pg)),
        "no epoch recorded"
    );
    let out = pg.pg_ctl(&["restart"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, w) in workers.into_iter().enumerate() {
        let o = w.wait_with_output().unwrap();
        assert_ok(&o, &format!("worker {i}"));
    }
    assert_eq!(
        pg.psql("SELECT status, COUNT(*) FROM trials GROUP BY status"),
        "done|6"
    );
    assert_eq!(pg.psql("SELECT COUNT(*) FROM epochs"), "12");
    assert_eq!(
        pg.psql("SELECT COUNT(*) FROM (SELECT trial_id, epoch FROM epochs GROUP BY 1, 2) e"),
        "12"
    );
}

#[test]
fn a_server_gone_past_the_retry_bound_stops_the_worker_with_a_clear_error() {
    let Some(data) = data_args() else { return };
    let Some(pg) = Postgres::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "grid.toml", GRID);
    let ckpt = dir.path().join("ckpt");
    let mut c = pg_run(&file, &pg.url(), &ckpt, &data);
    c.env("CIFAR_SWEEP_PG_RETRY_SECS", "2");
    let worker = spawn(c);
    assert!(
        wait_until(Duration::from_secs(120), || epochs_recorded(&pg)),
        "no epoch recorded"
    );
    let out = pg.pg_ctl(&["stop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o = worker.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&pg.url()) && err.contains("could not be made again within 2 s"),
        "{err}"
    );
    // The trial's checkpoint is there for whoever takes it over.
    assert!(ckpt.join("checkpoints").is_dir());
    let out = pg.pg_ctl(&["start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each recorded epoch once.
    assert_eq!(
        pg.psql("SELECT COUNT(*) = COUNT(DISTINCT (trial_id, epoch)) FROM epochs"),
        "t"
    );
}

#[test]
fn a_wrong_password_is_refused_naming_the_server_and_never_shown() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    pg.require_password("right horse");
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "grid.toml", GRID);
    let with = |password: &str| {
        pg.url()
            .replacen("cifar@", &format!("cifar:{password}@"), 1)
    };
    let o = bin()
        .args([
            "run",
            file.to_str().unwrap(),
            "--device",
            "cpu",
            "--db",
            &with("battery"),
        ])
        .args(["--checkpoint-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&pg.url()) && err.contains("password"), "{err}");
    assert!(!err.contains("battery"), "{err}");
    assert_eq!(
        pg.psql("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'"),
        "0"
    );
    // The right one (percent-encoded in the URL) is let in: the store is empty, so a reader
    // is refused for that reason instead.
    let o = bin()
        .args(["report", "--db", &with("right%20horse")])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("empty") && !err.contains("horse"), "{err}");
}
