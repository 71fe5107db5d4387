//! `cifar-sweep`: hyperparameter sweeps over CIFAR-10 CNNs.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use sweep::table::{Format, Table};
use sweep::{estimate, report, runner, store::Store, Error};
use trainer::data::DataSource;

#[derive(Parser)]
#[command(
    name = "cifar-sweep",
    version,
    about = "Train CIFAR-10 CNNs with candle and sweep their hyperparameters"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct DbArgs {
    /// The results database.
    #[arg(long, env = "CIFAR_SWEEP_DB", default_value = "results/results.db")]
    db: PathBuf,
}

#[derive(Args, Clone)]
struct DataArgs {
    /// Where the data set is cached (`<dir>/cifar-10-batches-bin`).
    #[arg(long, env = "CIFAR10_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// A local archive to import when the cache is empty: the official binary .tar.gz or an
    /// image-folder .tar.gz or directory.
    #[arg(long, env = "CIFAR10_ARCHIVE")]
    archive: Option<PathBuf>,
    /// Where to download the official archive from when nothing local exists.
    #[arg(long, env = "CIFAR10_URL")]
    url: Option<String>,
}

impl DataArgs {
    fn source(&self) -> DataSource {
        let mut src = DataSource::from_env(&self.data_dir);
        if let Some(a) = &self.archive {
            src.archive = Some(a.clone());
        }
        if let Some(u) = &self.url {
            src.url = u.clone();
        }
        src
    }
}

#[derive(Args, Clone)]
struct ExecArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    data: DataArgs,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, env = "CIFAR_SWEEP_DEVICE", default_value = "auto")]
    device: String,
    /// No progress bars; log lines only (RUST_LOG sets the level).
    #[arg(long, short)]
    quiet: bool,
    /// Run failed and diverged trials again.
    #[arg(long)]
    retry_failed: bool,
    /// Run at most this many trials in this process, then stop (the rest stay queued).
    #[arg(long)]
    limit: Option<usize>,
    /// Run a sweep larger than its `max_trials` limit.
    #[arg(long)]
    yes: bool,
    /// Seconds between mid-epoch checkpoints (0 to a year; 0 checkpoints after every batch).
    #[arg(long, default_value = "60", value_parser = parse_checkpoint_every)]
    checkpoint_every: Duration,
    /// Where trials' checkpoint folders go (default: beside a SQLite database; required with
    /// a PostgreSQL --db: a folder every worker can reach).
    #[arg(long, env = "CIFAR_SWEEP_CHECKPOINT_DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// Output format of the closing tables.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(Subcommand)]
enum Cmd {
    /// Expand a sweep file and run its trials one after another.
    Run {
        file: PathBuf,
        /// Print the expanded trials and stop.
        #[arg(long)]
        dry_run: bool,
        /// Record the sweep under this name instead of the file's (e.g. nightly-2025-01-31).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// List a sweep's trials with the time each should take, from past epochs.
    Plan {
        file: PathBuf,
        /// List a sweep larger than its `max_trials` limit.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        db: DbArgs,
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Comparison tables of a sweep (the latest when none is named).
    Report {
        sweep: Option<String>,
        #[command(flatten)]
        db: DbArgs,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Write one self-contained HTML page (tables, charts, sweep file) to FILE instead.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        #[command(flatten)]
        charts: ChartArgs,
    },
    /// Charts of a sweep as PNG and SVG: loss curves, accuracy, time, per-class accuracy,
    /// confusion matrix, sample predictions.
    Plot {
        /// The sweep (the latest when none is named).
        sweep: Option<String>,
        /// Output folder (default: `plots/<sweep>` next to the database).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        charts: ChartArgs,
    },
    /// Compare two runs (sweeps) trial by trial; exit 4 when accuracy dropped by more than
    /// --max-drop points or a trial that finished before fails now.
    Compare {
        /// The earlier run.
        a: Option<String>,
        /// The later run.
        b: Option<String>,
        /// Compare NAME with the latest run of the same series before it
        /// (nightly-2025-01-31 with nightly-2025-01-30).
        #[arg(long, value_name = "NAME", conflicts_with_all = ["a", "b"])]
        previous_of: Option<String>,
        /// With --previous-of: exit 0 (with a note) when NAME is the first run of its series;
        /// without it that is an error, so a gate never passes by comparing nothing.
        #[arg(long, requires = "previous_of")]
        first_ok: bool,
        /// Largest allowed drop in test accuracy, in percentage points.
        #[arg(long, default_value_t = 1.0)]
        max_drop: f64,
        /// The database of B (default: --db).
        #[arg(long)]
        db_b: Option<PathBuf>,
        #[command(flatten)]
        db: DbArgs,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// One trial: config, epochs, per-class accuracy, confusion matrix.
    Show {
        /// Trial id (all digits: always an id), or `key:PREFIX` for the trial whose key starts
        /// with PREFIX (`key:` may be left out when PREFIX is not all digits).
        trial: String,
        #[command(flatten)]
        db: DbArgs,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Train one configuration given by flags, recorded like any sweep.
    Train {
        /// Name of the one-trial sweep (default: train-<unix time>).
        #[arg(long)]
        name: Option<String>,
        /// Hyperparameters as key=value (any key a sweep file takes), e.g. -s arch=cnn3 -s lr=0.01.
        #[arg(short = 's', long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Write a Slurm job-array script whose tasks each run the sweep as a worker on the
    /// shared --db; --submit hands it to sbatch and prints the job id.
    Slurm {
        file: PathBuf,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        args: sweep::slurm::SlurmArgs,
    },
    /// The data set: download, import or check it.
    Data {
        #[command(subcommand)]
        cmd: DataCmd,
    },
}

#[derive(Args, Clone)]
struct ChartArgs {
    /// Skip the grid of sample test images (which needs the data set and a checkpoint).
    #[arg(long)]
    no_samples: bool,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Subcommand)]
enum DataCmd {
    /// Make sure the data set is in the cache (import the archive or download it).
    Fetch {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Import an archive or directory (binary or image-folder layout) into the cache.
    Import {
        path: PathBuf,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Check the cached data set: file sizes, counts per class, checksum.
    Verify {
        #[command(flatten)]
        data: DataArgs,
    },
}

/// A failure with the exit status it maps to.
struct Failure(anyhow::Error, i32);

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let e: anyhow::Error = e.into();
        let code = e.downcast_ref::<Error>().map(sweep::exit_code).unwrap_or(1);
        Failure(e, code)
    }
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal: not in log files, CI or pipes.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_target(false)
        .init();
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => std::process::exit(code),
        Err(Failure(e, code)) => {
            eprintln!("error: {e:#}");
            std::process::exit(code);
        }
    }
}

fn real_main(cli: Cli) -> Result<i32, Failure> {
    match cli.cmd {
        Cmd::Run {
            file,
            dry_run,
            name,
            exec,
        } => {
            let mut spec = runner::load(&file, exec.yes)?;
            if let Some(name) = name {
                if !sweep::spec::valid_name(&name) {
                    return Err(Failure(
                        anyhow::anyhow!(
                            "--name {name:?}: not a valid sweep name: {}",
                            sweep::spec::NAME_RULE
                        ),
                        2,
                    ));
                }
                spec.name = name;
            }
            if dry_run {
                let plans = sweep::grid::expand(&spec).map_err(Error::from)?;
                println!(
                    "{}",
                    plan_table(&spec.name, &plans, None).render(exec.format)
                );
                return Ok(0);
            }
            execute(spec, &exec)
        }
        Cmd::Plan {
            file,
            yes,
            db,
            device,
        } => {
            let (spec, plans) = runner::plan(&file, yes)?;
            // A PostgreSQL database without the schema yet is like a missing file.
            let known = if sweep::store::is_postgres(&db.db) {
                let found = sweep::store::probe(&db.db).map_err(Error::from)?;
                matches!(found, sweep::store::Probe::Ours { .. })
            } else {
                db.db.exists()
            };
            let db = if known {
                Some(Store::open_read_only(&db.db).map_err(Error::from)?)
            } else {
                None
            };
            let device = trainer::device::parse(&device).map_err(Error::from)?;
            let rates = estimate::rates_for(plans.iter().map(|p| &p.config), db.as_ref(), &device)?;
            let estimates: Vec<Option<f64>> = plans
                .iter()
                .map(|p| {
                    estimate::rate_of(&rates, &p.config)
                        .map(|r| estimate::trial_seconds(&p.config, r, p.config.epochs as f64))
                })
                .collect();
            print!(
                "{}",
                plan_table(&spec.name, &plans, Some(&estimates)).render(Format::Table)
            );
            let total = sweep_total(&spec, plans.iter().map(|p| &p.config), &rates);
            for line in total_lines(&spec, &total, &trainer::device::name(&device)) {
                println!("{line}");
            }
            Ok(0)
        }
        Cmd::Report {
            sweep,
            db,
            format,
            html,
            charts,
        } => {
            let db = open_for_reading(&db.db)?;
            let name = sweep_or_latest(&db, sweep)?;
            if let Some(file) = html {
                let charts = draw_charts(&db, &name, &charts)?;
                let page = sweep::html::report(&db, &name, &charts)?;
                std::fs::write(&file, page).with_context(|| format!("{}", file.display()))?;
                println!("wrote {}", file.display());
                return Ok(0);
            }
            let tables = report::sweep_tables(&db, &name).map_err(Error::from)?;
            print!("{}", report::render(&tables, format));
            Ok(0)
        }
        Cmd::Plot {
            sweep,
            out,
            db,
            charts,
        } => {
            let db_path = db.db;
            let db = open_for_reading(&db_path)?;
            let name = sweep_or_latest(&db, sweep)?;
            let drawn = draw_charts(&db, &name, &charts)?;
            let dir = out.unwrap_or_else(|| sweep::plot::default_dir(&db_path, &name));
            sweep::plot::write(&drawn, &dir)?;
            for c in &drawn.charts {
                println!(
                    "{:<17} {}x{}  {}/{}.{{png,svg}}",
                    c.name,
                    c.width,
                    c.height,
                    dir.display(),
                    c.name
                );
            }
            for (kind, why) in &drawn.skipped {
                println!("{kind:<17} skipped: {why}");
            }
            if drawn.charts.is_empty() {
                return Err(Failure(
                    anyhow::anyhow!("sweep `{name}` has nothing to plot yet"),
                    2,
                ));
            }
            Ok(0)
        }
        Cmd::Compare {
            a,
            b,
            previous_of,
            first_ok,
            max_drop,
            db_b,
            db,
            format,
        } => {
            let db_a = open_for_reading(&db.db)?;
            let db_b = match &db_b {
                Some(p) => open_for_reading(p)?,
                None => open_for_reading(&db.db)?,
            };
            let (a, b) = match (previous_of, a, b) {
                (Some(name), _, _) => {
                    // NAME itself must exist: a typo must not read as "first run, all good".
                    db_b.sweep_id(&name).map_err(Error::from)?;
                    match sweep::compare::previous_run(&db_a, &name).map_err(Error::from)? {
                        Some(prev) => (prev, name),
                        None if first_ok => {
                            eprintln!(
                                "note: no run before `{name}` to compare with (--first-ok): nothing checked"
                            );
                            return Ok(0);
                        }
                        None => {
                            return Err(Failure(
                                anyhow::anyhow!(
                                    "compare --previous-of {name}: no earlier run of its series in {}; \
                                     pass --first-ok where a first run is expected",
                                    db.db.display()
                                ),
                                2,
                            ))
                        }
                    }
                }
                (None, Some(a), Some(b)) => (a, b),
                _ => {
                    return Err(Failure(
                        anyhow::anyhow!("compare: name two runs (A B), or give --previous-of NAME"),
                        2,
                    ))
                }
            };
            let cmp = sweep::compare::compare(&db_a, &a, &db_b, &b, max_drop)?;
            print!("{}", report::render(&cmp.tables, format));
            // Machine-readable output stays parseable: the summary line goes to stderr.
            if matches!(format, Format::Json | Format::Csv) {
                eprintln!("{}", cmp.summary);
            } else {
                println!("{}", cmp.summary);
            }
            for n in &cmp.notes {
                eprintln!("note: {n}");
            }
            if cmp.problems.is_empty() {
                return Ok(0);
            }
            eprintln!(
                "error: `{b}` is worse than `{a}` in {} trial(s):",
                cmp.problems.len()
            );
            for p in &cmp.problems {
                eprintln!("  {p}");
            }
            Ok(sweep::compare::REGRESSION_EXIT)
        }
        Cmd::Show { trial, db, format } => {
            let db = open_for_reading(&db.db)?;
            let tables = report::trial_tables(&db, &trial).map_err(Error::from)?;
            print!("{}", report::render(&tables, format));
            Ok(0)
        }
        Cmd::Train { name, set, exec } => {
            let name = name.unwrap_or_else(|| {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
                format!("train-{secs}")
            });
            let spec = sweep::spec::from_assignments(&name, &set).map_err(Error::from)?;
            runner::validate(&spec)?;
            execute(spec, &exec)
        }
        Cmd::Slurm { file, db, args } => {
            let done = sweep::slurm::command(&file, &db.db, &args)?;
            let what = format!(
                "wrote {} ({} workers; logs in {})",
                done.script.display(),
                done.workers,
                done.logs.display()
            );
            match done.job_id {
                // The id alone on stdout: `job=$(cifar-sweep slurm ... --submit)`.
                Some(id) => {
                    eprintln!("{what}");
                    println!("{id}");
                }
                None => {
                    println!("{what}");
                    println!("submit it with: sbatch {}", done.script.display());
                }
            }
            Ok(0)
        }
        Cmd::Data { cmd } => {
            match cmd {
                DataCmd::Fetch { data } => {
                    let src = data.source();
                    trainer::data::fetch(&src).map_err(Error::from)?;
                    println!(
                        "{}",
                        trainer::data::verify(&src.data_dir).map_err(Error::from)?
                    );
                }
                DataCmd::Import { path, data } => {
                    trainer::data::import(&path, &data.data_dir).map_err(Error::from)?;
                    println!(
                        "{}",
                        trainer::data::verify(&data.data_dir).map_err(Error::from)?
                    );
                }
                DataCmd::Verify { data } => {
                    let report = trainer::data::verify(&data.data_dir).map_err(Error::from)?;
                    println!("{report}");
                    // A gate: a cache that is not the standard data set fails it.
                    if !report.standard {
                        return Ok(2);
                    }
                }
            }
            Ok(0)
        }
    }
}

/// The named sweep, else the one recorded last. Either way the name becomes part of paths
/// (`plots/<sweep>`), and one read from a foreign or hand-edited database can hold anything
/// (`../..`): it is checked like a name in a sweep file.
fn sweep_or_latest(db: &Store, sweep: Option<String>) -> Result<String, Failure> {
    let name = match sweep {
        Some(s) => s,
        None => db
            .latest_sweep()
            .map_err(Error::from)?
            .context("the database holds no sweep yet")?,
    };
    if !sweep::spec::valid_name(&name) {
        return Err(Failure(
            anyhow::anyhow!(
                "{}: sweep name {name:?} is not a valid sweep name (letters, digits, `-`, `_`, \
                 `.`); refusing to use it in a path",
                db.path.display()
            ),
            2,
        ));
    }
    Ok(name)
}

fn open_for_reading(path: &std::path::Path) -> Result<Store, Failure> {
    // Read-only: a report never creates, migrates or re-modes a database (issue 11, item 3).
    Ok(Store::open_read_only(path).map_err(Error::from)?)
}

/// Draws a sweep's charts; the sample-image grid loads the data set unless --no-samples.
fn draw_charts(db: &Store, name: &str, args: &ChartArgs) -> Result<sweep::plot::Charts, Failure> {
    let data = sweep::plot::SweepData::load(db, name)?;
    let loaded;
    let images = if args.no_samples {
        None
    } else if data.best().is_none() {
        Some(Err("no finished trial".to_string()))
    } else {
        // Never a 170 MB download for a chart: the cache or a local archive only.
        let mut src = args.data.source();
        src.url = String::new();
        loaded = trainer::data::load(&src);
        Some(loaded.as_ref().map_err(|e| format!("the data set: {e}")))
    };
    Ok(sweep::plot::charts(&data, images))
}

/// `--checkpoint-every`: a finite number of seconds from 0 to a year. `Duration` would panic
/// on `inf` or `1e20`, and `nan` or a negative number must not quietly mean 0.
fn parse_checkpoint_every(s: &str) -> Result<Duration, String> {
    const YEAR: f64 = 365.0 * 86400.0;
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.0..=YEAR).contains(&secs) {
        return Err(format!(
            "`{s}` is out of range: give seconds from 0 to {YEAR} (a year)"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

mod signals {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    /// Why a signal asks the run to stop.
    #[derive(Clone, Copy)]
    pub enum Request {
        /// Ctrl-C, SIGTERM (also `scancel` and preemption under Slurm), SIGHUP.
        Interrupt,
        /// SIGUSR1: Slurm's warning before the time limit (`--signal=B:USR1@120`).
        TimeLimit,
    }

    /// The stop requests of every signal, counted together: the first saves the current
    /// trial's state, a repeat within [`super::SAME_SIGNAL`] is the same request, a later
    /// one quits at once.
    pub struct Stopper {
        stop: Arc<AtomicBool>,
        first: Mutex<Option<Instant>>,
    }

    impl Stopper {
        pub fn new(stop: Arc<AtomicBool>) -> Arc<Self> {
            Arc::new(Stopper {
                stop,
                first: Mutex::new(None),
            })
        }

        pub fn request(&self, why: Request) {
            let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
            match *first {
                None => {
                    *first = Some(Instant::now());
                    self.stop.store(true, Ordering::SeqCst);
                    eprintln!(
                        "\n{}",
                        match why {
                            Request::Interrupt =>
                                "interrupt: saving the current trial's state \
                                                   (Ctrl-C again to quit at once)",
                            Request::TimeLimit =>
                                "time limit near (SIGUSR1): saving the \
                                                   current trial's state",
                        }
                    );
                }
                Some(t) if t.elapsed() < super::SAME_SIGNAL => {}
                Some(_) => std::process::exit(130),
            }
        }
    }

    /// SIGUSR1 becomes a [`Request::TimeLimit`]. The Ctrl-C handler cannot take it, so a
    /// thread of signal-hook's waits for it.
    #[cfg(unix)]
    pub fn on_time_limit(stopper: Arc<Stopper>) {
        match signal_hook::iterator::Signals::new([libc::SIGUSR1]) {
            Ok(mut sigs) => {
                std::thread::spawn(move || {
                    for _ in sigs.forever() {
                        stopper.request(Request::TimeLimit);
                    }
                });
            }
            Err(e) => tracing::warn!("SIGUSR1 cannot be watched ({e}): it will end the run"),
        }
    }

    #[cfg(not(unix))]
    pub fn on_time_limit(_: Arc<Stopper>) {}

    /// The stop signals (SIGINT, SIGTERM, SIGHUP, SIGUSR1) this process was started with set
    /// to "ignore".
    #[cfg(unix)]
    pub fn inherited_ignores() -> Vec<libc::c_int> {
        [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1]
            .into_iter()
            .filter(|&sig| {
                // SAFETY: a query only (no new action); `old` is a plain C struct.
                unsafe {
                    let mut old: libc::sigaction = std::mem::zeroed();
                    libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                        && old.sa_sigaction == libc::SIG_IGN
                }
            })
            .collect()
    }

    /// Sets `sigs` back to "ignore" after the handlers took them all.
    #[cfg(unix)]
    pub fn ignore_again(sigs: &[libc::c_int]) {
        for &sig in sigs {
            // SAFETY: SIG_IGN is always a valid disposition for these signals.
            unsafe {
                libc::signal(sig, libc::SIG_IGN);
            }
        }
    }

    #[cfg(not(unix))]
    pub fn inherited_ignores() -> Vec<i32> {
        Vec::new()
    }

    #[cfg(not(unix))]
    pub fn ignore_again(_: &[i32]) {}
}

/// Signals this close together are one request delivered twice (see [`execute`]).
const SAME_SIGNAL: Duration = Duration::from_millis(250);

fn execute(spec: sweep::spec::SweepSpec, exec: &ExecArgs) -> Result<i32, Failure> {
    let stop = Arc::new(AtomicBool::new(false));
    trainer::clock::watch_suspensions();
    // `nohup` (SIGHUP) and a shell's background jobs (SIGINT) hand us signals set to be
    // ignored; that choice is the user's, and must survive installing our handler.
    let ignored = signals::inherited_ignores();
    {
        // First Ctrl-C (or SIGTERM, SIGHUP, SIGUSR1): finish the current batch, checkpoint,
        // mark the trial interrupted. Second: leave at once (the last checkpoint is still
        // there to resume from). `timeout`, `kill` of a job and most supervisors signal the
        // process *and* its process group, so one request can arrive twice within
        // microseconds: a repeat that close is the same request, not a person pressing Ctrl-C
        // again. (Seen on a GPU machine: `timeout -s INT` made a sweep quit at once, its trial
        // left `running`.)
        let stopper = signals::Stopper::new(stop.clone());
        signals::on_time_limit(stopper.clone());
        let _ = ctrlc::set_handler(move || stopper.request(signals::Request::Interrupt));
    }
    signals::ignore_again(&ignored);
    // Everything that can be checked is checked before anything is written, and the cheap
    // checks before minutes spent on the data: the device, then the database (probed, not
    // created), then the data (which may import or download); the database is created last.
    let device = trainer::device::parse(&exec.device).map_err(Error::from)?;
    if exec.checkpoint_dir.is_none() && sweep::store::is_postgres(&exec.db.db) {
        return Err(Error::from(sweep::store::DbError::NoCheckpointDir {
            server: sweep::store::display_url(&exec.db.db.to_string_lossy()),
        })
        .into());
    }
    sweep::store::check_creatable(&exec.db.db).map_err(Error::from)?;
    if let sweep::store::Probe::Ours { .. } =
        sweep::store::probe(&exec.db.db).map_err(Error::from)?
    {
        // Another sweep under this name: refused now, not after minutes on the data.
        Store::open_read_only(&exec.db.db)
            .and_then(|db| {
                db.check_sweep(&spec.name, &spec.text, &spec.file, &|| {
                    runner::config_set(&spec)
                })
            })
            .map_err(Error::from)?;
    }
    announce(&spec, &device, &exec.db.db)?;
    let data = trainer::data::load(&exec.data.source()).map_err(Error::from)?;
    let args = runner::RunArgs {
        db: exec.db.db.clone(),
        device,
        data: exec.data.source(),
        quiet: exec.quiet,
        retry_failed: exec.retry_failed,
        yes: exec.yes,
        limit: exec.limit,
        checkpoint_every: exec.checkpoint_every,
        checkpoint_dir: exec.checkpoint_dir.clone(),
    };
    let summary = runner::run(&spec, &data, &args, stop)?;
    let db = Store::open_existing(&exec.db.db).map_err(Error::from)?;
    let tables = report::sweep_tables(&db, &summary.sweep).map_err(Error::from)?;
    print!("{}", report::render(&tables, exec.format));
    if summary.interrupted {
        eprintln!("interrupted: run the same command again to resume");
        return Ok(130);
    }
    if !summary.failed.is_empty() {
        let ids: Vec<String> = summary
            .failed
            .iter()
            .map(|(id, _)| id.to_string())
            .collect();
        eprintln!("error: {} trial(s) failed: {}", ids.len(), ids.join(", "));
        for (id, msg) in &summary.failed {
            eprintln!("  trial {id}: {msg}");
        }
        return Ok(3);
    }
    Ok(0)
}

fn plan_table(
    name: &str,
    plans: &[sweep::grid::TrialPlan],
    estimates: Option<&[Option<f64>]>,
) -> Table {
    use sweep::table::{int, num, text};
    let mut headers = vec![
        "#",
        "arch",
        "lr",
        "batch",
        "dropout",
        "epochs",
        "optimizer",
        "seed",
        "swept",
    ];
    if estimates.is_some() {
        headers.push("estimate");
    }
    let mut t = Table::new(format!("Sweep `{name}`: {} trials", plans.len()), &headers);
    for (i, p) in plans.iter().enumerate() {
        let c = &p.config;
        let swept = if p.proposed {
            // The values shown are a random stand-in, used only for the estimate.
            "proposed by TPE from the results (values: a random stand-in)".to_string()
        } else {
            p.swept
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut cells = vec![
            // 1-based, as report and show number trials (see the README).
            int(Some(p.ordinal as i64 + 1)),
            text(c.arch.clone()),
            num(Some(c.lr), |x| x.to_string()),
            int(Some(c.batch_size as i64)),
            num(Some(c.dropout), |x| x.to_string()),
            int(Some(c.epochs as i64)),
            text(format!("{:?}", c.optimizer).to_lowercase()),
            int(Some(c.seed as i64)),
            text(swept),
        ];
        if let Some(e) = estimates {
            cells.push(num(e[i], report::duration));
        }
        t.push(cells);
    }
    t
}

/// The sweep's estimate over `configs` (ASHA's expectation too, when it prunes that way).
fn sweep_total<'a>(
    spec: &sweep::spec::SweepSpec,
    configs: impl IntoIterator<Item = &'a trainer::TrainConfig>,
    rates: &std::collections::HashMap<(String, usize), estimate::Rates>,
) -> estimate::Total {
    let asha = match &spec.search.prune {
        sweep::search::Prune::Asha(a) => Some(a),
        _ => None,
    };
    let mut total = estimate::Total::default();
    for c in configs {
        if let Some(r) = estimate::rate_of(rates, c) {
            total.add(c, r, asha);
        }
    }
    total
}

/// What `plan` prints under its table, and `run` before it starts.
fn total_lines(
    spec: &sweep::spec::SweepSpec,
    total: &estimate::Total,
    device: &str,
) -> Vec<String> {
    let mut lines = vec![format!(
        "{} trials, about {} on {device} ({})",
        total.trials,
        report::duration(total.seconds),
        total.basis()
    )];
    match (&spec.search.prune, total.pruned_seconds) {
        (sweep::search::Prune::Asha(a), Some(p)) => lines.push(format!(
            "with ASHA pruning (reduction_factor {}, grace_epochs {}): expected about {} \
             ({:.0}% of the epochs; an expectation, a small sweep prunes less)",
            a.reduction_factor,
            a.grace_epochs,
            report::duration(p),
            100.0 * total.pruned_epochs / total.epochs.max(1.0)
        )),
        (sweep::search::Prune::Median(_), _) => lines.push(
            "with median pruning: less than this, by how much depends on the learning curves"
                .into(),
        ),
        _ => {}
    }
    lines
}

/// Past this a CPU sweep gets a warning pointing at pruning.
const LONG_ON_CPU: f64 = 3600.0;

/// Prints the sweep's estimate before `run` starts (timing a few steps when the database
/// holds no epochs of these architectures), and a warning when it is long on the CPU.
fn announce(
    spec: &sweep::spec::SweepSpec,
    device: &trainer::Device,
    db_path: &std::path::Path,
) -> Result<(), Failure> {
    let db = match sweep::store::probe(db_path).map_err(Error::from)? {
        sweep::store::Probe::Ours { .. } => {
            Some(Store::open_read_only(db_path).map_err(Error::from)?)
        }
        _ => None,
    };
    // Streamed: a sweep allowed to be huge is never held whole (see runner::load).
    let configs = || {
        sweep::grid::plans(spec)
            .into_iter()
            .flatten()
            .filter_map(|p| p.ok().map(|p| p.config))
    };
    let mut firsts: Vec<trainer::TrainConfig> = Vec::new();
    for c in configs() {
        if !firsts
            .iter()
            .any(|f| f.arch == c.arch && f.batch_size == c.batch_size)
        {
            firsts.push(c);
        }
    }
    let rates = estimate::rates_for(&firsts, db.as_ref(), device)?;
    let mut total = estimate::Total::default();
    let asha = match &spec.search.prune {
        sweep::search::Prune::Asha(a) => Some(*a),
        _ => None,
    };
    for c in configs() {
        if let Some(r) = estimate::rate_of(&rates, &c) {
            total.add(&c, r, asha.as_ref());
        }
    }
    let name = trainer::device::name(device);
    for line in total_lines(spec, &total, &name) {
        eprintln!("{line}");
    }
    if matches!(device, trainer::Device::Cpu)
        && total.pruned_seconds.unwrap_or(total.seconds) > LONG_ON_CPU
    {
        eprintln!(
            "warning: this sweep runs over an hour on the CPU; a [prune] section in the sweep \
             file stops hopeless trials early (README: \"Estimates, pruning and trial numbers\"), or use a GPU (--device)"
        );
    }
    Ok(())
}
