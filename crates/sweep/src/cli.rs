//! The command line of `cifar-sweep`: its commands and flags, and how a flag's value is
//! checked. A module of the binary, not of the library: flags, their environment variables
//! and defaults are the binary's policy, and the library's functions take plain values.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use sweep::table::Format;
use trainer::data::DataSource;

#[derive(Parser)]
#[command(
    name = "cifar-sweep",
    version,
    about = "Train CIFAR-10 CNNs with candle and sweep their hyperparameters"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Args, Clone)]
pub struct DbArgs {
    /// The results database.
    #[arg(long, env = "CIFAR_SWEEP_DB", default_value = sweep::layout::DEFAULT_DB)]
    pub db: PathBuf,
}

#[derive(Args, Clone)]
pub struct DataArgs {
    /// Where the data set is cached (`<dir>/cifar-10-batches-bin`).
    #[arg(long, env = "CIFAR10_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// A local archive to import when the cache is empty: the official binary .tar.gz or an
    /// image-folder .tar.gz or directory.
    #[arg(long, env = "CIFAR10_ARCHIVE")]
    pub archive: Option<PathBuf>,
    /// Where to download the official archive from when nothing local exists.
    #[arg(long, env = "CIFAR10_URL")]
    pub url: Option<String>,
}

impl DataArgs {
    pub fn source(&self) -> DataSource {
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
pub struct ExecArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, env = "CIFAR_SWEEP_DEVICE", default_value = "auto")]
    pub device: String,
    /// No progress bars; log lines only (RUST_LOG sets the level).
    #[arg(long, short)]
    pub quiet: bool,
    /// Run failed and diverged trials again.
    #[arg(long)]
    pub retry_failed: bool,
    /// Run at most this many trials in this process, then stop (the rest stay queued).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Run a sweep larger than its `max_trials` limit.
    #[arg(long)]
    pub yes: bool,
    /// Seconds between mid-epoch checkpoints (0 to a year; 0 checkpoints after every batch).
    #[arg(long, default_value = "60", value_parser = parse_checkpoint_every)]
    pub checkpoint_every: Duration,
    /// Where trials' checkpoint folders go (default: beside a SQLite database; required with
    /// a PostgreSQL --db: a folder every worker can reach).
    #[arg(long, env = "CIFAR_SWEEP_CHECKPOINT_DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Output format of the closing tables.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Expand a sweep file and run its trials one after another.
    Run(RunCmd),
    /// List a sweep's trials with the time each should take, from past epochs.
    Plan(PlanCmd),
    /// Comparison tables of a sweep (the latest when none is named).
    Report(ReportCmd),
    /// Charts of a sweep as PNG and SVG: loss curves, accuracy, time, per-class accuracy,
    /// confusion matrix, sample predictions.
    Plot(PlotCmd),
    /// Compare two runs (sweeps) trial by trial; exit 4 when accuracy dropped by more than
    /// --max-drop points or a trial that finished before fails now.
    Compare(CompareCmd),
    /// One trial: config, epochs, per-class accuracy, confusion matrix.
    Show(ShowCmd),
    /// Where a sweep stands while it runs: trials by status, and which host and process
    /// holds each running trial (the latest sweep when none is named).
    Status(StatusCmd),
    /// Train one configuration given by flags, recorded like any sweep.
    Train(TrainCmd),
    /// Write a Slurm job-array script whose tasks each run the sweep as a worker on the
    /// shared --db; --submit hands it to sbatch and prints the job id.
    Slurm(SlurmCmd),
    /// The data set: download, import or check it.
    Data {
        #[command(subcommand)]
        cmd: DataCmd,
    },
}

#[derive(Args)]
pub struct RunCmd {
    pub file: PathBuf,
    /// Print the expanded trials and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Record the sweep under this name instead of the file's (e.g. nightly-2025-01-31).
    #[arg(long)]
    pub name: Option<String>,
    /// Run N trials at once, each in its own worker process on the same database and
    /// device, the CPU threads shared out evenly (--limit then counts per worker).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    #[command(flatten)]
    pub exec: ExecArgs,
}

#[derive(Args)]
pub struct SlurmCmd {
    pub file: PathBuf,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub args: sweep::slurm::SlurmArgs,
}

#[derive(Args)]
pub struct PlanCmd {
    pub file: PathBuf,
    /// List a sweep larger than its `max_trials` limit.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub db: DbArgs,
    #[arg(long, default_value = "auto")]
    pub device: String,
}

#[derive(Args)]
pub struct ReportCmd {
    pub sweep: Option<String>,
    #[command(flatten)]
    pub db: DbArgs,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Write one self-contained HTML page (tables, charts, sweep file) to FILE instead.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    #[command(flatten)]
    pub charts: ChartArgs,
}

#[derive(Args)]
pub struct StatusCmd {
    pub sweep: Option<String>,
    #[command(flatten)]
    pub db: DbArgs,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Args)]
pub struct PlotCmd {
    /// The sweep (the latest when none is named).
    pub sweep: Option<String>,
    /// Output folder (default: `plots/<sweep>` next to the database).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub charts: ChartArgs,
}

#[derive(Args)]
pub struct CompareCmd {
    /// The earlier run.
    pub a: Option<String>,
    /// The later run.
    pub b: Option<String>,
    /// Compare NAME with the latest run of the same series before it
    /// (nightly-2025-01-31 with nightly-2025-01-30).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["a", "b"])]
    pub previous_of: Option<String>,
    /// With --previous-of: exit 0 (with a note) when NAME is the first run of its series;
    /// without it that is an error, so a gate never passes by comparing nothing.
    #[arg(long, requires = "previous_of")]
    pub first_ok: bool,
    /// Largest allowed drop in test accuracy, in percentage points.
    #[arg(long, default_value_t = 1.0)]
    pub max_drop: f64,
    /// The database of B (default: --db).
    #[arg(long)]
    pub db_b: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbArgs,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Args)]
pub struct ShowCmd {
    /// Trial id (all digits: always an id), or `key:PREFIX` for the trial whose key starts
    /// with PREFIX (`key:` may be left out when PREFIX is not all digits).
    pub trial: String,
    #[command(flatten)]
    pub db: DbArgs,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Args)]
pub struct TrainCmd {
    /// Name of the one-trial sweep (default: train-<unix time>).
    #[arg(long)]
    pub name: Option<String>,
    /// Hyperparameters as key=value (any key a sweep file takes), e.g. -s arch=cnn3 -s lr=0.01.
    #[arg(short = 's', long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[command(flatten)]
    pub exec: ExecArgs,
}

#[derive(Args, Clone)]
pub struct ChartArgs {
    /// Skip the grid of sample test images (which needs the data set and a checkpoint).
    #[arg(long)]
    pub no_samples: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Subcommand)]
pub enum DataCmd {
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

/// `--checkpoint-every`: a finite number of seconds from 0 to a year. `Duration` would panic
/// on `inf` or `1e20`, and `nan` or a negative number must not quietly mean 0.
pub fn parse_checkpoint_every(s: &str) -> Result<Duration, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definitions_are_consistent() {
        // clap checks ids, conflicts and requirements only when a command is built.
        Cli::command().debug_assert();
    }

    #[test]
    fn checkpoint_every_takes_seconds_from_0_to_a_year() {
        assert_eq!(parse_checkpoint_every("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_checkpoint_every(" 1.5 "),
            Ok(Duration::from_millis(1500))
        );
        for bad in ["nan", "-1", "inf", "1e20", "soon"] {
            assert!(parse_checkpoint_every(bad).is_err(), "{bad}");
        }
    }
}
