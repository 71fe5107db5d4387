//! Charts (`plot`), the HTML report (opened in headless Chromium) and `compare`, on databases
//! the tests fill themselves (and one tiny real sweep for the sample-image grid).

use crate::common::{bin, data_args, query_i64, run_sweep, stderr, stdout, write};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use sweep::store::Store;
use trainer::TrainConfig;

/// A trial of a made-up sweep: the config differences and the outcome.
struct Fake {
    arch: &'static str,
    seed: u64,
    lr: f64,
    status: &'static str,
    acc: f64,
    secs: f64,
}

fn done(arch: &'static str, seed: u64, acc: f64, secs: f64) -> Fake {
    Fake {
        arch,
        seed,
        lr: 0.01,
        status: "done",
        acc,
        secs,
    }
}

/// Writes sweep `name` with `trials` into the database at `path` (created if needed): rows in
/// every table, as a real run leaves them.
fn fake_sweep(path: &Path, name: &str, trials: &[Fake]) {
    // The store makes the schema; the rows go in by SQL, as a run leaves them.
    drop(Store::open(path).unwrap());
    let c = &rusqlite::Connection::open(path).unwrap();
    c.execute(
        "INSERT INTO sweeps (name, description, spec, device, data_checksum, started_at, finished_at)
         VALUES (?1, 'made up by the test', ?2, 'cpu', 'abc', datetime('now'), datetime('now'))",
        rusqlite::params![name, format!("name = \"{name}\"\n[grid]\narch = [\"lenet\", \"cnn3\"]\n")],
    )
    .unwrap();
    let sweep_id = c.last_insert_rowid();
    let classes = trainer::data::CIFAR10_CLASSES;
    for (i, f) in trials.iter().enumerate() {
        let config = TrainConfig {
            arch: f.arch.into(),
            seed: f.seed,
            lr: f.lr,
            epochs: 4,
            ..Default::default()
        };
        let config = serde_json::to_string(&config).unwrap();
        let finished = f.status == "done";
        c.execute(
            "INSERT INTO trials (sweep_id, trial_key, ordinal, config, status, error, best_epoch,
             best_valid_loss, test_loss, test_acc, train_seconds, images_per_sec, finished_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1.2, 1.2, ?8, ?9, 1000, datetime('now'))",
            rusqlite::params![
                sweep_id,
                format!("{name}-{i}"),
                i as i64,
                config,
                f.status,
                (!finished).then_some("loss became NaN at epoch 2"),
                finished.then_some(3i64),
                finished.then_some(f.acc),
                finished.then_some(f.secs),
            ],
        )
        .unwrap();
        let trial = c.last_insert_rowid();
        let epochs = if finished { 4 } else { 2 };
        for e in 1..=epochs {
            let t = 2.3 - 0.25 * e as f64 - f.acc;
            let v = if f.status == "diverged" && e == 2 {
                f64::MAX
            } else {
                t + 0.1 + 0.04 * (e as f64 - 3.0).powi(2)
            };
            c.execute(
                "INSERT INTO epochs VALUES (?1, ?2, ?3, 0.4, ?4, 0.4, 0.01, 2.0, 1000)",
                rusqlite::params![trial, e, t, v],
            )
            .unwrap();
        }
        if !finished {
            continue;
        }
        for (k, class) in classes.iter().enumerate() {
            let acc = (f.acc + 0.04 * (k as f64 - 4.5)).clamp(0.0, 1.0);
            let correct = (acc * 100.0).round() as i64;
            c.execute(
                "INSERT INTO class_accuracy VALUES (?1, ?2, ?3, ?4, 100, ?5)",
                rusqlite::params![trial, k as i64, class, correct, correct as f64 / 100.0],
            )
            .unwrap();
            for p in 0..10i64 {
                let n = if p == k as i64 {
                    correct
                } else {
                    (100 - correct) / 9
                        + i64::from(p == (k as i64 + 3) % 10) * ((100 - correct) % 9)
                };
                c.execute(
                    "INSERT INTO confusion VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![trial, k as i64, p, n],
                )
                .unwrap();
            }
        }
    }
}

/// Two architectures with three seeds each, a failed trial and a diverged one.
fn grid_sweep(path: &Path) {
    let mut trials = Vec::new();
    for seed in 0..3 {
        trials.push(done(
            "lenet",
            seed,
            0.52 + 0.01 * seed as f64,
            40.0 + seed as f64,
        ));
        trials.push(done(
            "cnn3",
            seed,
            0.61 - 0.015 * seed as f64,
            95.0 + 2.0 * seed as f64,
        ));
    }
    trials.push(Fake {
        arch: "vgg6",
        seed: 0,
        lr: 0.01,
        status: "failed",
        acc: 0.0,
        secs: 0.0,
    });
    trials.push(Fake {
        arch: "lenet",
        seed: 0,
        lr: 0.5,
        status: "diverged",
        acc: 0.0,
        secs: 0.0,
    });
    fake_sweep(path, "grid", &trials);
}

/// `plot`'s report: chart name → (width, height, folder).
fn listed_charts(out: &str) -> Vec<(String, u32, u32, PathBuf)> {
    out.lines()
        .filter(|l| !l.contains("skipped"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (w, h) = f[1].split_once('x').unwrap();
            let path = f[2].strip_suffix(".{png,svg}").unwrap();
            (
                f[0].to_string(),
                w.parse().unwrap(),
                h.parse().unwrap(),
                Path::new(path).parent().unwrap().to_path_buf(),
            )
        })
        .collect()
}

/// Decodes a PNG, checks its size, and that it is a picture (many colours), not a blank.
fn check_png(path: &Path, size: (u32, u32)) -> usize {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(img.dimensions(), size, "{}", path.display());
    let colours: HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(
        colours.len() > 16,
        "{}: {} colours: blank?",
        path.display(),
        colours.len()
    );
    let white = img.pixels().filter(|p| p.0 == [255, 255, 255]).count();
    assert!(
        white < img.pixels().len() * 98 / 100,
        "{}: almost all white",
        path.display()
    );
    colours.len()
}

fn check_svg(path: &Path, size: (u32, u32)) {
    let svg = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(svg.contains("<svg"), "{}", path.display());
    assert!(
        svg.contains(&format!("width=\"{}\"", size.0))
            && svg.contains(&format!("height=\"{}\"", size.1)),
        "{}: not {size:?}",
        path.display()
    );
    assert!(
        svg.matches("<text").count() > 5,
        "{}: no labels",
        path.display()
    );
}

#[test]
fn plot_draws_every_chart_kind_from_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("results/results.db");
    grid_sweep(&db);
    let out = bin()
        .args(["plot", "grid", "--db", db.to_str().unwrap(), "--no-samples"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let charts = listed_charts(&text);
    let names: Vec<&str> = charts.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "loss_curves",
            "all_curves",
            "accuracy",
            "train_time",
            "accuracy_vs_time",
            "hyperparameters",
            "class_accuracy",
            "confusion"
        ],
        "{text}"
    );
    assert!(
        text.contains("samples") && text.contains("skipped: --no-samples"),
        "{text}"
    );
    for (name, w, h, folder) in &charts {
        // The default folder: plots/<sweep> next to the database.
        assert_eq!(folder, &dir.path().join("results/plots/grid"), "{text}");
        check_png(&folder.join(format!("{name}.png")), (*w, *h));
        check_svg(&folder.join(format!("{name}.svg")), (*w, *h));
    }
    // Seeds repeat: the accuracy chart shows mean ± std per configuration.
    let svg = std::fs::read_to_string(dir.path().join("results/plots/grid/accuracy.svg")).unwrap();
    assert!(svg.contains("± ") && svg.contains("(n=3)"), "no mean ± std");
    assert!(svg.contains("failed") && svg.contains("diverged"));
    let svg = std::fs::read_to_string(dir.path().join("results/plots/grid/confusion.svg")).unwrap();
    for class in trainer::data::CIFAR10_CLASSES {
        assert!(svg.contains(class), "confusion matrix without {class}");
    }

    // Without a data set the sample grid is skipped with the reason (and nothing downloads).
    let out = bin()
        .args(["plot", "grid", "--db", db.to_str().unwrap()])
        .arg("--data-dir")
        .arg(dir.path().join("no-data"))
        .env_remove("CIFAR10_ARCHIVE")
        .env("CIFAR10_URL", "http://127.0.0.1:9/never")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("samples           skipped: the data set: "),
        "{}",
        stdout(&out)
    );

    // An unknown sweep is a usage error.
    let out = bin()
        .args(["plot", "nope", "--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no sweep named `nope`"));
}

const TINY: &str = r#"name = "tiny"
[data]
train_subset = 200
test_subset = 100
[base]
arch = "lenet"
epochs = 2
batch_size = 20
momentum = 0.9
"#;

#[test]
fn plot_shows_the_best_trials_predictions_on_test_images() {
    let Some(data) = data_args() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "tiny.toml", TINY);
    let db = dir.path().join("r/results.db");
    let out = bin()
        .args(["run", file.to_str().unwrap(), "--quiet", "--device", "cpu"])
        .args(["--db", db.to_str().unwrap()])
        .args(&data)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let plots = dir.path().join("charts");
    let out = bin()
        .args(["plot", "tiny", "--db", db.to_str().unwrap()])
        .args(["--out", plots.to_str().unwrap()])
        .args(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let charts = listed_charts(&text);
    assert_eq!(charts.len(), 7, "{text}");
    let (_, w, h, folder) = charts.iter().find(|c| c.0 == "samples").unwrap();
    assert_eq!(folder, &plots);
    // Real photographs: thousands of colours.
    assert!(check_png(&plots.join("samples.png"), (*w, *h)) > 2000);
    check_svg(&plots.join("samples.svg"), (*w, *h));
    let svg = std::fs::read_to_string(plots.join("samples.svg")).unwrap();
    assert!(svg.contains("<image"), "the SVG holds no image");
    assert_eq!(svg.matches("true: ").count(), 40, "40 labelled images");
    assert_eq!(svg.matches("pred: ").count(), 40);
}

/// Headless Chromium, or None (with a note) where it is not installed; CI requires it.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|d| Path::new(d).join(name))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        if std::env::var_os("CIFAR_SWEEP_REQUIRE_DATA").is_some() {
            panic!("CIFAR_SWEEP_REQUIRE_DATA is set but chromium is not installed");
        }
        eprintln!("note: chromium not found; skipping the HTML report test");
    }
    found
}

fn headless(chromium: &Path, profile: &Path) -> Command {
    let mut c = Command::new(chromium);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1200,2000",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

#[test]
fn html_report_renders_in_chromium_with_tables_and_charts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("results.db");
    grid_sweep(&db);
    let html = dir.path().join("report.html");
    let out = bin()
        .args(["report", "grid", "--db", db.to_str().unwrap()])
        .args(["--html", html.to_str().unwrap(), "--no-samples"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let page = std::fs::read_to_string(&html).unwrap();
    // Self-contained: nothing to fetch.
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
    assert!(
        page.contains("name = &quot;grid&quot;"),
        "the sweep file is missing"
    );
    assert_eq!(page.matches("<img src=\"data:image/png;base64,").count(), 8);

    let Some(chromium) = chromium() else { return };
    // A copy that writes each image's decoded size into the DOM once the page has loaded.
    let probe = dir.path().join("probe.html");
    std::fs::write(
        &probe,
        page.replace(
            "</body>",
            "<script>window.addEventListener('load', () => {
               const p = document.createElement('pre'); p.id = 'probe';
               p.textContent = [...document.images]
                 .map(i => i.complete ? i.naturalWidth + 'x' + i.naturalHeight : 'pending')
                 .join(' ');
               document.body.appendChild(p);
             });</script></body>",
        ),
    )
    .unwrap();
    let out = headless(&chromium, &dir.path().join("profile"))
        .arg("--dump-dom")
        .arg(format!("file://{}", probe.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dom = stdout(&out);
    let sizes = dom
        .split("<pre id=\"probe\">")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .unwrap_or_else(|| panic!("the probe did not run:\n{dom}"));
    let sizes: Vec<&str> = sizes.split_whitespace().collect();
    assert_eq!(sizes.len(), 8, "{sizes:?}");
    for s in &sizes {
        let (w, h) = s.split_once('x').unwrap_or(("0", "0"));
        assert!(
            w.parse::<u32>().unwrap_or(0) > 300 && h.parse::<u32>().unwrap_or(0) > 200,
            "an image did not decode: {sizes:?}"
        );
    }
    // The tables: one row per trial in the main table, the per-class and the seeds tables.
    assert!(dom.matches("<caption>").count() >= 4, "{dom}");
    assert!(dom.contains("Sweep `grid`: trials by test accuracy"));
    assert!(dom.contains("mean ± std over seeds"));
    assert!(
        dom.matches("<tr>").count() >= 8 + 6 + 2 + 2,
        "too few table rows"
    );

    let shot = dir.path().join("shot.png");
    let out = headless(&chromium, &dir.path().join("profile"))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    check_png(&shot, (1200, 2000));
}

fn compare(
    db_a: &Path,
    a: &str,
    db_b: &Path,
    b: &str,
    extra: &[&str],
) -> (Option<i32>, String, String) {
    let out = bin()
        .args(["compare", a, b, "--db", db_a.to_str().unwrap()])
        .args(["--db-b", db_b.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    (out.status.code(), stdout(&out), stderr(&out))
}

#[test]
fn compare_fails_with_4_on_an_accuracy_drop_or_a_newly_failing_trial() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.db"),
        dir.path().join("b.db"),
        dir.path().join("c.db"),
    );
    let before = [
        done("lenet", 0, 0.50, 40.0),
        done("cnn3", 0, 0.60, 90.0),
        done("vgg6", 0, 0.70, 300.0),
    ];
    fake_sweep(&a, "nightly-2025-01-01", &before);
    // B: lenet a little better, cnn3 2.5 points worse, vgg6 now fails.
    let mut failed = done("vgg6", 0, 0.0, 0.0);
    failed.status = "failed";
    fake_sweep(
        &b,
        "nightly-2025-01-02",
        &[
            done("lenet", 0, 0.505, 41.0),
            done("cnn3", 0, 0.575, 99.0),
            failed,
        ],
    );
    let (code, out, err) = compare(&a, "nightly-2025-01-01", &b, "nightly-2025-01-02", &[]);
    assert_eq!(code, Some(4), "{out}\n{err}");
    assert!(out.contains("REGRESSION") && out.contains("-2.50"), "{out}");
    assert!(out.contains("+0.50") && out.contains("+10%"), "{out}");
    assert!(
        err.contains("is worse than") && err.contains("cnn3") && err.contains("-2.50 pp"),
        "{err}"
    );
    assert!(
        err.contains("vgg6") && err.contains("failed in `nightly-2025-01-02`"),
        "{err}"
    );
    assert!(err.contains("loss became NaN"), "{err}");
    // A looser threshold forgives the drop, not the failure.
    let (code, _, err) = compare(
        &a,
        "nightly-2025-01-01",
        &b,
        "nightly-2025-01-02",
        &["--max-drop", "3"],
    );
    assert_eq!(code, Some(4));
    assert!(!err.contains("cnn3") && err.contains("vgg6"), "{err}");

    // C: within the threshold everywhere.
    fake_sweep(
        &c,
        "nightly-2025-01-02",
        &[
            done("lenet", 0, 0.495, 40.0),
            done("cnn3", 0, 0.60, 90.0),
            done("vgg6", 0, 0.71, 280.0),
        ],
    );
    let (code, out, err) = compare(&a, "nightly-2025-01-01", &c, "nightly-2025-01-02", &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("3 trial(s) compared"), "{out}");
    assert!(!out.contains("REGRESSION"), "{out}");
}

#[test]
fn compare_previous_of_finds_the_previous_night_and_run_takes_a_name() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("results.db");
    for (name, acc) in [
        ("nightly-2025-01-01", 0.40),
        ("nightly-2025-01-02", 0.50),
        ("other-2025-01-02", 0.10),
        ("nightly-2025-01-03", 0.45),
    ] {
        fake_sweep(&db, name, &[done("lenet", 0, acc, 40.0)]);
    }
    let dbs = db.to_str().unwrap();
    let out = bin()
        .args([
            "compare",
            "--previous-of",
            "nightly-2025-01-03",
            "--db",
            dbs,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("`nightly-2025-01-02` → `nightly-2025-01-03`"),
        "{}",
        stdout(&out)
    );
    // The first night has nothing to compare with: an error unless --first-ok says that is
    // expected (the gate must not pass by comparing nothing).
    let first = [
        "compare",
        "--previous-of",
        "nightly-2025-01-01",
        "--db",
        dbs,
    ];
    let out = bin().args(first).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = bin().args(first).arg("--first-ok").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("no run before `nightly-2025-01-01`"));

    // `run --name` replaces the file's sweep name, and checks it.
    let sweeps = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sweeps/nightly.toml");
    let out = bin()
        .args(["run", sweeps, "--dry-run", "--name", "nightly-2025-01-04"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Sweep `nightly-2025-01-04`"),
        "{}",
        stdout(&out)
    );
    let out = bin()
        .args(["run", sweeps, "--dry-run", "--name", "no spaces"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a valid sweep name"),
        "{}",
        stderr(&out)
    );
}

/// A tiny real search: 6 lenet configurations on 480 images, ASHA at epoch 1 (η = 3).
fn search_text() -> String {
    crate::common::TINY_SEARCH.replace("samples = 7", "samples = 6")
}

/// The text of every `<text>` element of an SVG.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("</text>")
        .filter_map(|s| s.rsplit_once('>').map(|(_, t)| t.trim().to_string()))
        .collect()
}

/// The trial ids in the rows of the table titled `title` in a text report.
fn table_ids(report: &str, title: &str) -> Vec<i64> {
    report
        .split("\n\n")
        .find(|t| t.contains(title))
        .unwrap_or_else(|| panic!("no table `{title}` in:\n{report}"))
        .lines()
        .skip(3)
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn a_search_plots_its_pruned_trials_hyperparameters_and_pareto_front() {
    let Some(data) = data_args() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("results.db");
    let dbs = db.to_str().unwrap();
    // The same space twice: pruned on accuracy, then with two objectives (a Pareto front).
    let single = write(dir.path(), "search.toml", &search_text());
    let multi = write(
        dir.path(),
        "pareto.toml",
        &search_text()
            .replace("name = \"search\"", "name = \"pareto\"")
            .replace(
                "objective = \"valid_acc\"",
                "objectives = [\"valid_acc\", \"train_seconds\"]",
            ),
    );
    for file in [&single, &multi] {
        let out = run_sweep(file, &db, &data);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let in_search = "FROM trials t JOIN sweeps s ON s.id = t.sweep_id WHERE s.name = 'search'";
    let pruned = query_i64(
        &db,
        &format!("SELECT COUNT(*) {in_search} AND t.status = 'pruned'"),
    );
    assert!(pruned >= 1, "nothing pruned: the chart would show no grey");

    let plots = dir.path().join("p");
    let out = bin()
        .args(["plot", "search", "--db", dbs, "--no-samples"])
        .args(["--out", plots.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let charts = listed_charts(&text);
    for kind in ["all_curves", "accuracy_vs_time", "hyperparameters"] {
        let (_, w, h, _) = charts
            .iter()
            .find(|c| c.0 == kind)
            .unwrap_or_else(|| panic!("no {kind}: {text}"));
        check_png(&plots.join(format!("{kind}.png")), (*w, *h));
        check_svg(&plots.join(format!("{kind}.svg")), (*w, *h));
    }
    let read = |name: &str| std::fs::read_to_string(plots.join(name)).unwrap();

    // Every trial on one chart: the pruned ones counted and greyed, the rung marked.
    let svg = read("all_curves.svg");
    assert!(
        svg.contains(&format!("grey: the {pruned} pruned")) && svg.contains("rungs)"),
        "{}",
        svg_texts(&svg).join(" | ")
    );

    // One panel per sampled hyperparameter, on a log axis for the log-uniform one.
    let texts = svg_texts(&read("hyperparameters.svg"));
    for want in ["lr (log axis)", "momentum"] {
        assert!(texts.iter().any(|t| t == want), "no `{want}`: {texts:?}");
    }
    assert!(!texts.iter().any(|t| t == "momentum (log axis)"));

    // Accuracy against time: the front, and time ticks that all differ (a 2-second sweep
    // used to read `0s 0s 1s 1s`).
    let svg = read("accuracy_vs_time.svg");
    assert!(svg.contains("Pareto front"));
    let ticks: Vec<String> = svg_texts(&svg)
        .into_iter()
        .filter(|t| t.ends_with('s') && t.chars().all(|c| c.is_ascii_digit() || ".hms".contains(c)))
        .collect();
    let distinct: HashSet<&String> = ticks.iter().collect();
    assert!(
        ticks.len() >= 3 && distinct.len() == ticks.len(),
        "{ticks:?}"
    );

    // The report of the two-objective search lists its Pareto front, checked here against
    // the definition; the single-objective one has none.
    let out = bin()
        .args(["report", "pareto", "--db", dbs])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout(&out);
    let mut listed = table_ids(&report, "Pareto front of validation accuracy");
    let c = rusqlite::Connection::open(&db).unwrap();
    let points: Vec<(i64, f64, f64)> = c
        .prepare(
            "SELECT t.id, t.train_seconds, e.valid_acc FROM trials t
             JOIN sweeps s ON s.id = t.sweep_id
             JOIN epochs e ON e.trial_id = t.id AND e.epoch = t.best_epoch
             WHERE s.name = 'pareto' AND t.status = 'done'",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut want: Vec<i64> = points
        .iter()
        .filter(|p| {
            !points
                .iter()
                .any(|q| q.1 <= p.1 && q.2 >= p.2 && (q.1 < p.1 || q.2 > p.2))
        })
        .map(|p| p.0)
        .collect();
    listed.sort();
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(listed, want, "{report}");
    let out = bin()
        .args(["report", "search", "--db", dbs])
        .output()
        .unwrap();
    assert!(!stdout(&out).contains("Pareto"), "{}", stdout(&out));

    // The README's queries, the search ones included, return rows here.
    crate::sweep_e2e::readme_queries_run(&db, true);
}
