//! The store under load (issue 14's figures): fills a sweep of `--trials` trials through
//! `--workers` worker processes, each with its own connection, that claim trials the way
//! `cifar-sweep run` does and record `--epochs` epochs and a test report for each, timing
//! every claim; then times the readers (`report`'s tables, `status`'s tables) over the full
//! store. Used by `bench/store_bench.sh` on SQLite and PostgreSQL.
//!
//! `cargo run --release -p sweep --example store_bench -- --db DB [--trials 10000]
//! [--epochs 30] [--workers 6]`
//!
//! Training is left out on purpose: the workers write as fast as the store takes it, so the
//! claim latency is measured under far more write traffic than real trials make.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use sweep::store::{ConfigSet, Finished, NewSweep, NewTrial, Store, Worker};
use trainer::metrics::{Confusion, EpochRecord, TestReport};

const SWEEP: &str = "store-bench";

/// Flags: `--name value` pairs, and `--worker` alone.
struct Args {
    db: PathBuf,
    trials: usize,
    epochs: usize,
    workers: usize,
    /// Set in a child: the sweep id to work on.
    worker: Option<i64>,
}

fn args() -> Args {
    let mut a = Args {
        db: PathBuf::new(),
        trials: 10_000,
        epochs: 30,
        workers: 6,
        worker: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--db" => a.db = PathBuf::from(value()),
            "--trials" => a.trials = value().parse().expect("--trials N"),
            "--epochs" => a.epochs = value().parse().expect("--epochs N"),
            "--workers" => a.workers = value().parse().expect("--workers N"),
            "--worker" => a.worker = Some(value().parse().expect("--worker SWEEP_ID")),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.db.as_os_str().is_empty(), "--db DB is required");
    a
}

fn open(db: &Path) -> Store {
    // Checkpoint folders are only named, never written, by these workers.
    let ckpt = std::env::temp_dir().join("store-bench-checkpoints");
    Store::open_with_checkpoints(db, Some(&ckpt)).unwrap_or_else(|e| panic!("{e}"))
}

/// A plausible configuration for trial `i`: a grid of lr x batch x seed.
fn config(i: usize, epochs: usize) -> serde_json::Value {
    let arch = ["lenet", "cnn3", "vgg6"][i % 3];
    let lr = [0.1, 0.05, 0.02, 0.01, 0.005][(i / 3) % 5];
    let batch = [20, 64, 128][(i / 15) % 3];
    serde_json::json!({
        "arch": arch,
        "lr": lr,
        "batch_size": batch,
        "epochs": epochs,
        "seed": i / 45,
        "valid_fraction": 0.2,
    })
}

/// One worker process: claims until nothing is left; prints its claim latencies (ms), one a
/// line, on stdout.
fn work(db: &Path, sweep_id: i64, epochs: usize) {
    let store = open(db);
    let worker = Worker::current();
    let classes: Vec<String> = (0..10).map(|c| format!("class{c}")).collect();
    let mut out = String::new();
    loop {
        let t = Instant::now();
        let claimed = store
            .claim_next(sweep_id, &worker, "cpu", Duration::from_secs(3600))
            .unwrap_or_else(|e| panic!("claim: {e}"));
        out.push_str(&format!("{}\n", t.elapsed().as_secs_f64() * 1e3));
        let Some(c) = claimed else { break };
        let x = (c.id % 97) as f64 / 97.0;
        for e in 1..=epochs {
            let acc = 0.3 + 0.5 * x * (1.0 - (-(e as f64) / 8.0).exp());
            let r = EpochRecord {
                epoch: e,
                train_loss: 2.0 - acc,
                train_acc: acc,
                valid_loss: 2.1 - acc,
                valid_acc: acc - 0.01,
                lr: 0.01,
                seconds: 10.0,
                images_per_sec: 4000.0,
            };
            store
                .record_epoch(c.id, &r)
                .unwrap_or_else(|e| panic!("epoch: {e}"));
        }
        let mut confusion = Confusion::new(10);
        let truth: Vec<u32> = (0..1000).map(|i| i % 10).collect();
        let predicted: Vec<u32> = truth
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                if (i as f64) < 1000.0 * (0.3 + 0.5 * x) {
                    t
                } else {
                    (t + 1) % 10
                }
            })
            .collect();
        confusion.update(&truth, &predicted);
        let test = TestReport {
            loss: 1.0,
            accuracy: confusion.accuracy(),
            confusion,
        };
        store
            .finish_trial(
                c.id,
                &Finished {
                    best_epoch: epochs,
                    best_valid_loss: 1.0,
                    test: &test,
                    train_seconds: 10.0 * epochs as f64,
                    classes: &classes,
                    checkpoint: "unused",
                },
            )
            .unwrap_or_else(|e| panic!("finish: {e}"));
    }
    print!("{out}");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The median of three timings of `f`, in seconds.
fn timed(mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..3)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[1]
}

fn main() {
    let a = args();
    if let Some(sweep_id) = a.worker {
        return work(&a.db, sweep_id, a.epochs);
    }
    let store = open(&a.db);
    let trials: Vec<NewTrial> = (0..a.trials)
        .map(|i| NewTrial {
            key: format!("{i:016x}"),
            ordinal: i,
            config: config(i, a.epochs),
        })
        .collect();
    let configs = ConfigSet::new(trials.iter().map(|t| t.config.clone()));
    let new = NewSweep {
        name: SWEEP.into(),
        description: format!("{} trials x {} epochs, store_bench", a.trials, a.epochs),
        spec: format!("name = \"{SWEEP}\""),
        spec_path: "store_bench".into(),
        host: "bench".into(),
        git_rev: None,
        device: "cpu".into(),
        data_checksum: "none".into(),
    };
    let sweep_id = store
        .upsert_sweep(&new, &|| configs.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    let t0 = Instant::now();
    store
        .insert_trials(sweep_id, &trials)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("inserted {} trials in {:.1?}", a.trials, t0.elapsed());

    let t0 = Instant::now();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..a.workers)
        .map(|_| {
            Command::new(&exe)
                .arg("--db")
                .arg(&a.db)
                .args(["--epochs", &a.epochs.to_string()])
                .args(["--worker", &sweep_id.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut latencies: Vec<f64> = Vec::new();
    let mut per_worker = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "a worker failed: {}", out.status);
        let ms: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        // The last claim of each worker found nothing left.
        per_worker.push(ms.len() - 1);
        latencies.extend(ms);
    }
    let fill = t0.elapsed();
    assert_eq!(
        per_worker.iter().sum::<usize>(),
        a.trials,
        "a trial ran twice"
    );
    latencies.sort_by(f64::total_cmp);
    println!(
        "| {} workers fill {} trials x {} epochs | {:.1} s ({:.0} epoch rows/s) | trials per worker {:?} |",
        a.workers,
        a.trials,
        a.epochs,
        fill.as_secs_f64(),
        (a.trials * a.epochs) as f64 / fill.as_secs_f64(),
        per_worker
    );
    println!(
        "| claim latency, {} claims | p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.1} ms |",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );

    let fmt = sweep::table::Format::Table;
    let mut size = 0;
    let report = timed(|| {
        let tables = sweep::report::sweep_tables(&store, SWEEP).unwrap();
        size = sweep::report::render(&tables, fmt).len();
    });
    let status = timed(|| {
        let tables = sweep::status::status_tables(&store, SWEEP).unwrap();
        sweep::report::render(&tables, fmt);
    });
    println!(
        "| report's tables (in-process, median of 3) | {:.3} s ({size} bytes) |",
        report
    );
    println!("| status's tables (in-process, median of 3) | {status:.3} s |");
}
