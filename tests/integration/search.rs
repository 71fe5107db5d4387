//! Sampled searches with pruning on a slice of the real data: what is recorded, that a
//! killed and resumed search makes the same decisions, and that several processes share one.

use crate::common::{data_args, query_i64, run_sweep, stderr, stdout, sweep_command, write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::TINY_SEARCH as SEARCH;

/// Per trial (ordinal, status, pruned_epoch, test_acc bits), and per decision (ordinal,
/// epoch, stop, cutoff bits, compared_with).
type Snapshot = (
    Vec<(i64, String, Option<i64>, Option<i64>)>,
    Vec<(i64, i64, bool, i64, i64)>,
);

fn snapshot(db: &Path) -> Snapshot {
    let c = rusqlite::Connection::open(db).unwrap();
    let trials = c
        .prepare("SELECT ordinal, status, pruned_epoch, test_acc FROM trials ORDER BY ordinal")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get::<_, Option<f64>>(3)?.map(|x| x.to_bits() as i64),
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let decisions = c
        .prepare(
            "SELECT t.ordinal, d.epoch, d.stop, d.cutoff, d.compared_with FROM decisions d
             JOIN trials t ON t.id = d.trial_id ORDER BY t.ordinal, d.epoch",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get::<_, Option<f64>>(3)?
                    .map_or(-1, |x| x.to_bits() as i64),
                r.get(4)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (trials, decisions)
}

#[test]
fn asha_prunes_records_why_and_a_killed_search_resumes_to_the_same_decisions() {
    let Some(data) = data_args() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "search.toml", SEARCH);
    let reference = dir.path().join("ref/results.db");
    let out = run_sweep(&file, &reference, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    let want = snapshot(&reference);
    let pruned = want.0.iter().filter(|t| t.1 == "pruned").count();
    let done = want.0.iter().filter(|t| t.1 == "done").count();
    assert_eq!(pruned + done, 7, "{want:?}");
    assert!(pruned >= 2, "ASHA stopped only {pruned} of 7: {want:?}");
    // A pruned trial keeps its epochs up to where it stopped and has no test result.
    for (ordinal, status, at, acc) in &want.0 {
        if status == "pruned" {
            let at = at.expect("pruned_epoch");
            assert!(acc.is_none());
            assert_eq!(
                query_i64(
                    &reference,
                    &format!(
                        "SELECT COUNT(*) FROM epochs e JOIN trials t ON t.id = e.trial_id
                         WHERE t.ordinal = {ordinal}"
                    )
                ),
                at
            );
        }
    }
    // Every stop is a recorded decision against at least η results.
    assert!(
        want.1.iter().filter(|d| d.2).all(|d| d.4 >= 3),
        "{:?}",
        want.1
    );
    let report = stdout(&out);
    assert!(
        report.contains(&format!("{pruned} trials pruned")) && report.contains("epochs run of 21"),
        "{report}"
    );

    // Killed with SIGKILL at several moments, then resumed: the same trials, statuses and
    // decisions as the uninterrupted search.
    let db = dir.path().join("killed/results.db");
    let mut killed = 0;
    for ms in [400u64, 900, 1500, 2200] {
        let mut child: Child = sweep_command(&file, &db, &data)
            .args(["--quiet", "--checkpoint-every", "0.05"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(ms) && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
    }
    let out = run_sweep(&file, &db, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(killed >= 2, "the kills came too late to test anything");
    assert_eq!(snapshot(&db), want, "a killed search decided differently");
}

/// Three `run` processes on one database at once; each must succeed.
fn run_three(file: &Path, db: &Path, data: &[String]) {
    let children: Vec<Child> = (0..3)
        .map(|_| {
            sweep_command(file, db, data)
                .arg("--quiet")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn three_processes_share_one_search_and_each_configuration_runs_once() {
    let Some(data) = data_args() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "search.toml", SEARCH);
    let db = dir.path().join("results.db");
    run_three(&file, &db, &data);
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM trials"), 7);
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM trials WHERE status IN ('done', 'pruned') AND attempts = 1"
        ),
        7
    );
    // No epoch was trained twice (one row per trial and epoch, at most the trial's epochs).
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM trials t WHERE (SELECT COUNT(*) FROM epochs e
             WHERE e.trial_id = t.id) > t.epochs"
        ),
        0
    );
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM trials WHERE status = 'pruned' AND pruned_epoch IS NULL"
        ),
        0
    );
}

/// The tiny search with TPE: draws 1-10 random, 11-13 proposed from the results.
fn tpe_search() -> String {
    SEARCH.replace("samples = 7", "samples = 13\nsampler = \"tpe\"")
}

/// Each trial's ordinal and config, in order.
fn configs(db: &Path) -> Vec<(i64, String)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT ordinal, config FROM trials ORDER BY ordinal")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn tpe_proposes_from_the_results_reproducibly_and_never_twice_across_processes() {
    let Some(data) = data_args() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tpe = write(dir.path(), "tpe.toml", &tpe_search());
    let random = write(
        dir.path(),
        "random.toml",
        &tpe_search().replace("sampler = \"tpe\"", "sampler = \"random\""),
    );
    let run = |file: &Path, name: &str| {
        let db = dir.path().join(name).join("results.db");
        let out = run_sweep(file, &db, &data);
        assert!(out.status.success(), "{}", stderr(&out));
        configs(&db)
    };
    let a = run(&tpe, "a");
    let b = run(&tpe, "b");
    let r = run(&random, "r");
    assert_eq!(a.len(), 13);
    // The same results give the same proposals.
    assert_eq!(a, b, "TPE proposed differently from the same history");
    // The first ten are the random sampler's draws; the rest are TPE's own.
    assert_eq!(a[..10], r[..10]);
    for i in 10..13 {
        assert_ne!(a[i].1, r[i].1, "draw {} is the random one", i + 1);
    }

    // Three processes on one TPE search: every draw recorded once, no configuration twice,
    // each trial run once.
    let db = dir.path().join("shared/results.db");
    run_three(&tpe, &db, &data);
    let shared = configs(&db);
    let ordinals: Vec<i64> = shared.iter().map(|t| t.0).collect();
    assert_eq!(ordinals, (0..13).collect::<Vec<_>>());
    let distinct: std::collections::HashSet<&String> = shared.iter().map(|t| &t.1).collect();
    assert_eq!(distinct.len(), 13, "a configuration was proposed twice");
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM trials WHERE status IN ('done', 'pruned') AND attempts = 1"
        ),
        13
    );
}
