//! One function per command of `cifar-sweep`: each calls the library, prints what it
//! returns and says which [`Exit`] the process ends with. A module of the binary: what goes
//! to stdout or stderr, and with which status, is the binary's policy.

use crate::cli::{
    ChartArgs, CompareCmd, DataCmd, ExecArgs, PlanCmd, PlotCmd, ReportCmd, RunCmd, ShowCmd,
    SlurmCmd, StatusCmd, TrainCmd,
};
use crate::{jobs, signals};
use anyhow::Context;
use std::path::Path;
use sweep::exit::Exit;
use sweep::store::Store as Db;
use sweep::table::Format;
use sweep::{plan, report, runner, Error};

pub fn run(args: RunCmd) -> anyhow::Result<Exit> {
    let mut spec = runner::load(&args.file, args.exec.yes)?;
    if let Some(name) = args.name {
        if !sweep::spec::valid_name(&name) {
            return Err(Error::BadArgument(format!(
                "--name {name:?}: not a valid sweep name: {}",
                sweep::spec::NAME_RULE
            ))
            .into());
        }
        spec.name = name;
    }
    if args.dry_run {
        let plans = sweep::grid::expand(&spec)?;
        println!(
            "{}",
            plan::table(&spec.name, &plans, None).render(args.exec.format)
        );
        return Ok(Exit::Success);
    }
    if args.jobs > 1 {
        return execute_jobs(spec, &args.exec, args.jobs.into());
    }
    execute(spec, &args.exec)
}

pub fn plan(args: PlanCmd) -> anyhow::Result<Exit> {
    let (spec, plans) = runner::plan(&args.file, args.yes)?;
    // A PostgreSQL database without the schema yet is like a missing file.
    let known = if sweep::store::is_postgres(&args.db.db) {
        matches!(
            sweep::store::probe(&args.db.db)?,
            sweep::store::Probe::Ours { .. }
        )
    } else {
        args.db.db.exists()
    };
    let db = if known {
        Some(Db::open_read_only(&args.db.db)?)
    } else {
        None
    };
    let device = trainer::device::parse(&args.device)?;
    let (table, total) = plan::with_estimates(&spec, &plans, db.as_ref(), &device)?;
    print!("{}", table.render(Format::Table));
    for line in total {
        println!("{line}");
    }
    Ok(Exit::Success)
}

pub fn report(args: ReportCmd) -> anyhow::Result<Exit> {
    let db = open_for_reading(&args.db.db)?;
    let name = sweep_or_latest(&db, args.sweep)?;
    if let Some(file) = args.html {
        let charts = draw_charts(&db, &name, &args.charts)?;
        let page = sweep::html::report(&db, &name, &charts)?;
        std::fs::write(&file, page).with_context(|| format!("{}", file.display()))?;
        println!("wrote {}", file.display());
        return Ok(Exit::Success);
    }
    let tables = report::sweep_tables(&db, &name)?;
    print!("{}", report::render(&tables, args.format));
    Ok(Exit::Success)
}

pub fn plot(args: PlotCmd) -> anyhow::Result<Exit> {
    let db = open_for_reading(&args.db.db)?;
    let name = sweep_or_latest(&db, args.sweep)?;
    let drawn = draw_charts(&db, &name, &args.charts)?;
    let dir = args
        .out
        .unwrap_or_else(|| sweep::layout::plots_dir(&args.db.db, &name));
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
        return Err(Error::BadArgument(format!("sweep `{name}` has nothing to plot yet")).into());
    }
    Ok(Exit::Success)
}

pub fn compare(args: CompareCmd) -> anyhow::Result<Exit> {
    let db_a = open_for_reading(&args.db.db)?;
    let db_b = open_for_reading(args.db_b.as_deref().unwrap_or(&args.db.db))?;
    let (a, b) = match (args.previous_of, args.a, args.b) {
        (Some(name), _, _) => {
            // NAME itself must exist: a typo must not read as "first run, all good".
            db_b.sweep_id(&name)?;
            match sweep::compare::previous_run(&db_a, &name)? {
                Some(prev) => (prev, name),
                None if args.first_ok => {
                    eprintln!(
                        "note: no run before `{name}` to compare with (--first-ok): nothing checked"
                    );
                    return Ok(Exit::Success);
                }
                None => {
                    return Err(Error::BadArgument(format!(
                        "compare --previous-of {name}: no earlier run of its series in {}; \
                         pass --first-ok where a first run is expected",
                        args.db.db.display()
                    ))
                    .into())
                }
            }
        }
        (None, Some(a), Some(b)) => (a, b),
        _ => {
            return Err(Error::BadArgument(
                "compare: name two runs (A B), or give --previous-of NAME".into(),
            )
            .into())
        }
    };
    let cmp = sweep::compare::compare(&db_a, &a, &db_b, &b, args.max_drop)?;
    print!("{}", report::render(&cmp.tables, args.format));
    // Machine-readable output stays parseable: the summary line goes to stderr.
    if matches!(args.format, Format::Json | Format::Csv) {
        eprintln!("{}", cmp.summary);
    } else {
        println!("{}", cmp.summary);
    }
    for n in &cmp.notes {
        eprintln!("note: {n}");
    }
    if !cmp.problems.is_empty() {
        eprintln!(
            "error: `{b}` is worse than `{a}` in {} trial(s):",
            cmp.problems.len()
        );
        for p in &cmp.problems {
            eprintln!("  {p}");
        }
    }
    Ok(cmp.exit())
}

pub fn show(args: ShowCmd) -> anyhow::Result<Exit> {
    let db = open_for_reading(&args.db.db)?;
    let tables = report::trial_tables(&db, &args.trial)?;
    print!("{}", report::render(&tables, args.format));
    Ok(Exit::Success)
}

pub fn status(args: StatusCmd) -> anyhow::Result<Exit> {
    let db = open_for_reading(&args.db.db)?;
    let name = sweep_or_latest(&db, args.sweep)?;
    let tables = sweep::status::status_tables(&db, &name)?;
    print!("{}", report::render(&tables, args.format));
    Ok(Exit::Success)
}

pub fn train(args: TrainCmd) -> anyhow::Result<Exit> {
    let name = args.name.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        format!("train-{secs}")
    });
    let spec = sweep::spec::from_assignments(&name, &args.set)?;
    runner::validate(&spec)?;
    execute(spec, &args.exec)
}

pub fn slurm(args: SlurmCmd) -> anyhow::Result<Exit> {
    let done = sweep::slurm::command(&args.file, &args.db.db, &args.args)?;
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
    Ok(Exit::Success)
}

pub fn data(cmd: DataCmd) -> anyhow::Result<Exit> {
    let report = match cmd {
        DataCmd::Fetch { data } => {
            let src = data.source();
            trainer::data::fetch(&src)?;
            trainer::data::verify(&src.data_dir)?
        }
        DataCmd::Import { path, data } => {
            trainer::data::import(&path, &data.data_dir)?;
            trainer::data::verify(&data.data_dir)?
        }
        DataCmd::Verify { data } => {
            let report = trainer::data::verify(&data.data_dir)?;
            println!("{report}");
            // A gate: a cache that is not the standard data set fails it.
            return Ok(if report.standard {
                Exit::Success
            } else {
                Exit::BadInput
            });
        }
    };
    println!("{report}");
    Ok(Exit::Success)
}

/// The named sweep, else the one recorded last. Either way the name becomes part of paths
/// (`plots/<sweep>`), and one read from a foreign or hand-edited database can hold anything
/// (`../..`): it is checked like a name in a sweep file.
fn sweep_or_latest(db: &Db, sweep: Option<String>) -> anyhow::Result<String> {
    let name = match sweep {
        Some(s) => s,
        None => db
            .latest_sweep()?
            .context("the database holds no sweep yet")?,
    };
    if !sweep::spec::valid_name(&name) {
        return Err(Error::BadArgument(format!(
            "{}: sweep name {name:?} is not a valid sweep name (letters, digits, `-`, `_`, \
             `.`); refusing to use it in a path",
            db.path.display()
        ))
        .into());
    }
    Ok(name)
}

fn open_for_reading(path: &Path) -> Result<Db, sweep::store::DbError> {
    // Read-only: a report never creates, migrates or re-modes a database (issue 11, item 3).
    Db::open_read_only(path)
}

/// Draws a sweep's charts; the sample-image grid loads the data set unless --no-samples.
fn draw_charts(db: &Db, name: &str, args: &ChartArgs) -> Result<sweep::plot::Charts, Error> {
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

/// `run` and `train`: checks everything before anything is written, then runs the sweep and
/// prints its tables.
fn execute(spec: sweep::spec::SweepSpec, exec: &ExecArgs) -> anyhow::Result<Exit> {
    trainer::clock::watch_suspensions();
    let stop = signals::stop_on_interrupt();
    let (device, data) = preflight(&spec, exec)?;
    // Workers of `run --jobs` share the cores by design (their parent holds the claim).
    let _cpu = (std::env::var_os(jobs::WORKER_ENV).is_none())
        .then(|| claim_cpu_or_warn(&device))
        .flatten();
    let args = runner::RunArgs {
        db: exec.db.db.clone(),
        device,
        quiet: exec.quiet,
        retry_failed: exec.retry_failed,
        yes: exec.yes,
        limit: exec.limit,
        checkpoint_every: exec.checkpoint_every,
        checkpoint_dir: exec.checkpoint_dir.clone(),
    };
    let summary = runner::run(&spec, &data, &args, stop)?;
    let db = Db::open_existing(&exec.db.db)?;
    let tables = report::sweep_tables(&db, &summary.sweep)?;
    print!("{}", report::render(&tables, exec.format));
    if summary.interrupted {
        return Ok(interrupted());
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
        return Ok(Exit::TrialsFailed);
    }
    Ok(Exit::Success)
}

/// The checks `run` makes before anything is written, the cheap ones before minutes spent
/// on the data: the device, then the database (probed, not created), then the data (which
/// may import or download). The database is created after them, by the run.
fn preflight(
    spec: &sweep::spec::SweepSpec,
    exec: &ExecArgs,
) -> anyhow::Result<(trainer::Device, trainer::data::Cifar10)> {
    let device = trainer::device::parse(&exec.device)?;
    if exec.checkpoint_dir.is_none() && sweep::store::is_postgres(&exec.db.db) {
        return Err(Error::from(sweep::store::DbError::NoCheckpointDir {
            server: sweep::store::display_url(&exec.db.db.to_string_lossy()),
        })
        .into());
    }
    runner::check_store(spec, &exec.db.db)?;
    for line in plan::forecast(spec, &device, &exec.db.db)? {
        eprintln!("{line}");
    }
    let data = trainer::data::load(&exec.data.source())?;
    Ok((device, data))
}

/// On the CPU: claims it for this process, or warns that another process of this program
/// is training on it already. Returns the claim, held for as long as the caller keeps it.
fn claim_cpu_or_warn(device: &trainer::Device) -> Option<jobs::CpuUse> {
    if !device.is_cpu() {
        return None;
    }
    match jobs::claim_cpu(&std::env::temp_dir()) {
        Ok(jobs::CpuUse::Shared) => {
            eprintln!(
                "warning: another cifar-sweep process is training on this machine's CPU; \
                 side by side both run several times slower than one after the other (use \
                 `run --jobs N` to share the cores out, or wait for it)"
            );
            Some(jobs::CpuUse::Shared)
        }
        Ok(alone) => Some(alone),
        // The lock is advice only: no temporary directory is no reason to refuse to train.
        Err(_) => None,
    }
}

/// The exit of a run a signal stopped, after its trial was saved.
fn interrupted() -> Exit {
    // Slurm requeues a preempted task by itself (`--requeue`), but not one that reached its
    // time limit: that one asks for it, so the trial resumes without anyone watching.
    match signals::time_limit_hit()
        .then(sweep::slurm::requeue_self)
        .flatten()
    {
        Some(job) => {
            eprintln!("time limit: asked Slurm to requeue job {job}; it resumes the trial")
        }
        None => eprintln!("interrupted: run the same command again to resume"),
    }
    Exit::Interrupted
}

/// `run --jobs N` (see the `jobs` module): the same checks as a single run, once, then N
/// workers, then the sweep's tables. The exit status is the most serious of the workers'.
fn execute_jobs(
    spec: sweep::spec::SweepSpec,
    exec: &ExecArgs,
    jobs: usize,
) -> anyhow::Result<Exit> {
    let stop = signals::stop_on_interrupt();
    // The data is loaded here once so that the workers find it imported instead of racing
    // to import it; they load their own copies.
    let (device, data) = preflight(&spec, exec)?;
    drop(data);
    let _cpu = claim_cpu_or_warn(&device);
    let program = std::env::current_exe().context("the path of this program")?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let out = jobs::run(&program, &args, jobs, stop).context("starting the jobs")?;
    let codes: Vec<i32> = out
        .statuses
        .iter()
        .map(|s| s.code().unwrap_or(Exit::Failure.code()))
        .collect();
    for (k, (code, st)) in codes.iter().zip(&out.statuses).enumerate() {
        if *code != 0 {
            eprintln!("job {} ended with {st}", k + 1);
        }
    }
    if let Ok(db) = Db::open_existing(&exec.db.db) {
        let tables = report::sweep_tables(&db, &spec.name)?;
        print!("{}", report::render(&tables, exec.format));
    }
    // Most serious first: a worker that could not run at all, then a stop, then trials that
    // failed.
    let worst = [
        Exit::Failure,
        Exit::BadInput,
        Exit::Interrupted,
        Exit::TrialsFailed,
    ]
    .into_iter()
    .find(|e| codes.contains(&e.code()))
    .or_else(|| codes.iter().any(|&c| c != 0).then_some(Exit::Failure));
    Ok(match worst {
        _ if out.stopped => interrupted(),
        Some(e) => e,
        None => Exit::Success,
    })
}
