//! `cifar-sweep slurm`: a Slurm job array whose tasks are workers of one sweep.
//!
//! Nothing stays alive on the login node: each array task runs `cifar-sweep run FILE --db DB`
//! and claims trials from the shared store until none is left, exactly as several processes
//! on one machine do. The script text comes from [`script`], a pure function of a [`Job`].

use crate::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The folder, beside the script, that the tasks' logs go to.
pub const LOGS_DIR: &str = "slurm-logs";

/// Seconds before the time limit at which Slurm sends the batch shell SIGUSR1: enough to
/// finish a batch, write a checkpoint and mark the trial interrupted.
pub const WARN_SECONDS: u32 = 120;

/// The options of `cifar-sweep slurm` (besides FILE and --db).
#[derive(clap::Args, Clone, Debug)]
pub struct SlurmArgs {
    /// Array tasks, each a worker claiming trials from the shared store.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub workers: u32,
    /// GPUs per worker (`--gres=gpu:G`); 0 asks for none.
    #[arg(long, default_value_t = 0)]
    pub gpus_per_worker: u32,
    /// CPU cores per worker (`--cpus-per-task`); the cluster's default when left out.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub cpus_per_worker: Option<u32>,
    /// The partition (queue); the cluster's default when left out.
    #[arg(long)]
    pub partition: Option<String>,
    /// Time limit per task, in Slurm's format (`MM`, `HH:MM:SS`, `D-HH:MM`, ...).
    #[arg(long, value_parser = parse_time)]
    pub time: Option<String>,
    /// Where to write the batch script (default: `<sweep>.sbatch` in the current folder).
    #[arg(long, value_name = "SCRIPT")]
    pub output: Option<PathBuf>,
    /// Submit the script with `sbatch` and print the job id.
    #[arg(long)]
    pub submit: bool,
    /// Accept a sweep larger than its `max_trials` limit (the workers get `--yes` too).
    #[arg(long)]
    pub yes: bool,
    /// Where the workers keep trials' checkpoints: a folder on the cluster's shared
    /// filesystem (required with a PostgreSQL --db; default beside a SQLite one).
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
}

/// Everything the batch script says, with every path already absolute.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// The sweep's name: the job's name, and so `%x` in the log file names.
    pub name: String,
    /// Array tasks (`--array=0-(N-1)`), each a worker claiming trials from the store.
    pub workers: u32,
    /// GPUs per worker (`--gres=gpu:G`); 0 asks for none.
    pub gpus_per_worker: u32,
    /// CPU cores per worker (`--cpus-per-task`); `None`: the cluster's default.
    pub cpus_per_worker: Option<u32>,
    /// The partition (queue); `None`: the cluster's default.
    pub partition: Option<String>,
    /// Time limit per task, in Slurm's format; `None`: the partition's default.
    pub time: Option<String>,
    /// The tasks' working folder (`--chdir`): where the command was typed, so that relative
    /// settings in the environment (`CIFAR10_DATA_DIR=data`) mean what they meant there.
    pub workdir: PathBuf,
    /// The folder the tasks' log files go to ([`LOGS_DIR`] beside the script).
    pub logs: PathBuf,
    /// This `cifar-sweep` binary.
    pub program: PathBuf,
    /// The sweep file the workers run.
    pub sweep_file: PathBuf,
    /// An absolute SQLite path or a database URL, as `--db` takes it.
    pub db: String,
    /// Whether the workers get `--yes` (a sweep larger than its `max_trials`).
    pub yes: bool,
    /// The workers' `--checkpoint-dir`, absolute.
    pub checkpoint_dir: Option<String>,
}

/// What can go wrong writing or submitting the batch script (the sweep file's own errors are
/// [`crate::spec::SpecError`]s).
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// `sbatch` is not on PATH: this is not a Slurm login node.
    #[error(
        "`sbatch` was not found on PATH: run this on a Slurm login node, or submit {} there \
         with `sbatch`", script.display()
    )]
    NoSbatch {
        /// The batch script, written and left for the user to submit.
        script: PathBuf,
    },
    /// `sbatch` ran and failed.
    #[error("sbatch {}: {status}: {stderr}", script.display())]
    Sbatch {
        /// The batch script submitted.
        script: PathBuf,
        /// How it exited.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// `sbatch` succeeded but its output has no job id in it.
    #[error("sbatch {}: printed no job id: {stdout:?}", script.display())]
    NoJobId {
        /// The batch script submitted.
        script: PathBuf,
        /// What `sbatch` printed.
        stdout: String,
    },
    /// Writing the script or creating the logs folder failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl SlurmError {
    /// Bad input where the user must change something (no Slurm here), a failure otherwise.
    pub fn exit(&self) -> crate::exit::Exit {
        match self {
            SlurmError::NoSbatch { .. } => crate::exit::Exit::BadInput,
            _ => crate::exit::Exit::Failure,
        }
    }
}

/// Inside a Slurm task (`SLURM_JOB_ID` set), `scontrol requeue` of this task: it goes back to
/// the queue and, started again, resumes the trial this worker saved. Returns the job id
/// requeued; `None` outside Slurm or when scontrol refused (said in the log: the trial is
/// saved as interrupted either way, and any later worker resumes it).
pub fn requeue_self() -> Option<String> {
    let job = std::env::var("SLURM_JOB_ID").ok()?;
    if job.is_empty() || !job.bytes().all(|b| b.is_ascii_digit()) {
        tracing::warn!("SLURM_JOB_ID {job:?} is not a job id: not requeued");
        return None;
    }
    match std::process::Command::new("scontrol")
        .args(["requeue", &job])
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Some(job),
        Ok(out) => {
            tracing::warn!(
                "scontrol requeue {job}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
        Err(e) => {
            tracing::warn!("scontrol requeue {job}: {e}");
            None
        }
    }
}

/// What [`command`] did.
#[derive(Debug)]
pub struct Outcome {
    /// The batch script written.
    pub script: PathBuf,
    /// The folder the tasks' logs go to.
    pub logs: PathBuf,
    /// Array tasks in the job.
    pub workers: u32,
    /// The job id, when submitted.
    pub job_id: Option<String>,
}

/// `cifar-sweep slurm FILE --db DB ...`: checks the sweep file (a mistake is found here, not
/// in N task logs), writes the script and the logs folder, and submits it when asked.
pub fn command(file: &Path, db: &Path, args: &SlurmArgs) -> Result<Outcome, Error> {
    let spec = crate::runner::load(file, args.yes)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SlurmError::Io { path, source }
    };
    let cwd = std::env::current_dir().map_err(io(Path::new(".")))?;
    let program = std::env::current_exe().map_err(io(Path::new("cifar-sweep")))?;
    let script_path = cwd.join(
        args.output
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.sbatch", spec.name))),
    );
    let logs = script_path
        .parent()
        .unwrap_or(Path::new("/"))
        .join(LOGS_DIR);
    let job = Job {
        name: spec.name.clone(),
        workers: args.workers,
        gpus_per_worker: args.gpus_per_worker,
        cpus_per_worker: args.cpus_per_worker,
        partition: args.partition.clone(),
        time: args.time.clone(),
        workdir: cwd.clone(),
        logs: logs.clone(),
        program,
        sweep_file: cwd.join(file),
        db: db_argument(db, &cwd)?,
        yes: args.yes,
        checkpoint_dir: match &args.checkpoint_dir {
            Some(d) => Some(utf8(&cwd.join(d), "--checkpoint-dir")?.to_string()),
            None if crate::store::is_postgres(db) => {
                return Err(crate::store::DbError::NoCheckpointDir {
                    server: crate::store::display_url(&db.to_string_lossy()),
                }
                .into())
            }
            None => None,
        },
    };
    let text = script(&job)?;
    // sbatch does not create the folder of --output: a missing one loses every log.
    std::fs::create_dir_all(&logs).map_err(io(&logs))?;
    std::fs::write(&script_path, text).map_err(io(&script_path))?;
    let job_id = if args.submit {
        Some(submit(&script_path)?)
    } else {
        None
    };
    Ok(Outcome {
        script: script_path,
        logs,
        workers: args.workers,
        job_id,
    })
}

/// `--db` as the tasks get it: a URL unchanged, a path made absolute (the tasks may start in
/// another folder).
pub fn db_argument(db: &Path, cwd: &Path) -> Result<String, Error> {
    let text = utf8(db, "--db")?;
    if text.contains("://") {
        return Ok(text.to_string());
    }
    Ok(utf8(&cwd.join(db), "--db")?.to_string())
}

fn utf8<'a>(p: &'a Path, what: &str) -> Result<&'a str, Error> {
    p.to_str().ok_or_else(|| {
        Error::BadArgument(format!(
            "{what} {}: not valid UTF-8, which a batch script cannot carry",
            p.display()
        ))
    })
}

/// The batch script of `job`.
pub fn script(job: &Job) -> Result<String, Error> {
    let last = job
        .workers
        .checked_sub(1)
        .ok_or_else(|| Error::BadArgument("--workers: give at least one worker".to_string()))?;
    let log_file = format!(
        "{}/%x-%A_%a.log",
        // `%` starts a Slurm file-name pattern; `%%` is a literal one.
        utf8(&job.logs, "the logs folder")?.replace('%', "%%")
    );
    let mut directives = vec![
        format!(
            "--job-name={}",
            directive_value(&job.name, "the sweep name")?
        ),
        format!("--array=0-{last}"),
        // A preempted task goes back into the queue instead of ending.
        "--requeue".to_string(),
        // `B:`: to the batch shell only, which `exec` below makes the worker itself.
        format!("--signal=B:USR1@{WARN_SECONDS}"),
        // A requeued task appends to its log instead of erasing the first attempt's.
        "--open-mode=append".to_string(),
        format!(
            "--output={}",
            directive_value(&log_file, "the logs folder")?
        ),
        format!(
            "--chdir={}",
            directive_value(
                utf8(&job.workdir, "the working folder")?,
                "the working folder"
            )?
        ),
    ];
    if job.gpus_per_worker > 0 {
        directives.push(format!("--gres=gpu:{}", job.gpus_per_worker));
    }
    if let Some(c) = job.cpus_per_worker {
        directives.push(format!("--cpus-per-task={c}"));
    }
    if let Some(p) = &job.partition {
        directives.push(format!(
            "--partition={}",
            directive_value(p, "--partition")?
        ));
    }
    if let Some(t) = &job.time {
        directives.push(format!(
            "--time={}",
            parse_time(t).map_err(Error::BadArgument)?
        ));
    }
    let mut command = vec![
        shell_quote(utf8(&job.program, "the cifar-sweep binary")?),
        "run".to_string(),
        shell_quote(utf8(&job.sweep_file, "the sweep file")?),
        "--db".to_string(),
        shell_quote(&job.db),
    ];
    if let Some(d) = &job.checkpoint_dir {
        command.push("--checkpoint-dir".to_string());
        command.push(shell_quote(d));
    }
    if job.yes {
        command.push("--yes".to_string());
    }
    command.push("--quiet".to_string());

    let mut s = String::from("#!/bin/bash\n");
    s.push_str(&format!(
        "# Sweep `{}`: {} workers, written by `cifar-sweep slurm`. Submit with `sbatch`.\n",
        job.name, job.workers
    ));
    for d in directives {
        s.push_str("#SBATCH ");
        s.push_str(&d);
        s.push('\n');
    }
    s.push_str(
        "\n# Each task is one worker: it claims trials from the shared store until none is \
         left.\n# `exec`, so that the worker is the process Slurm signals (USR1 before the time \
         limit,\n# TERM on scancel or preemption): it checkpoints and marks its trial \
         interrupted,\n# and the next worker to claim it resumes it.\n",
    );
    s.push_str("exec ");
    s.push_str(&command.join(" "));
    s.push('\n');
    Ok(s)
}

/// `s` quoted for a POSIX shell: bare when it holds only characters no shell treats
/// specially, else in single quotes (a `'` inside becomes `'\''`).
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@,%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `s` as the value of an `#SBATCH` option. sbatch splits a directive line at white space
/// and drops what follows a `#`, except inside double quotes, where a backslash escapes the
/// next character; a line break cannot be carried at all.
pub fn directive_value(s: &str, what: &str) -> Result<String, Error> {
    if s.contains(['\n', '\r']) {
        return Err(Error::BadArgument(format!(
            "{what} {s:?}: a line break cannot go into a batch script's #SBATCH line"
        )));
    }
    let plain = !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || "\"'\\#".contains(c));
    if plain {
        return Ok(s.to_string());
    }
    let mut q = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    Ok(q)
}

/// A time limit in one of Slurm's forms: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`.
pub fn parse_time(s: &str) -> Result<String, String> {
    let number = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let (days, clock) = match s.split_once('-') {
        Some((d, rest)) => (Some(d), rest),
        None => (None, s),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    let ok = days.is_none_or(number) && parts.iter().all(|p| number(p)) && parts.len() <= 3;
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a Slurm time limit: give MINUTES, HH:MM:SS or D-HH:MM:SS"
        ))
    }
}

/// `sbatch --parsable SCRIPT`; the job id it prints.
pub fn submit(script: &Path) -> Result<String, SlurmError> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(script)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SlurmError::NoSbatch {
                script: script.to_path_buf(),
            },
            _ => SlurmError::Io {
                path: PathBuf::from("sbatch"),
                source: e,
            },
        })?;
    if !out.status.success() {
        return Err(SlurmError::Sbatch {
            script: script.to_path_buf(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    // `--parsable` prints `JOBID` or `JOBID;CLUSTER`.
    let id = stdout
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SlurmError::NoJobId {
            script: script.to_path_buf(),
            stdout,
        });
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            name: "lr-search".into(),
            workers: 4,
            gpus_per_worker: 0,
            cpus_per_worker: None,
            partition: None,
            time: None,
            workdir: "/home/me/work".into(),
            logs: "/home/me/work/slurm-logs".into(),
            program: "/opt/bin/cifar-sweep".into(),
            sweep_file: "/home/me/work/sweeps/lr.toml".into(),
            db: "/home/me/work/results/results.db".into(),
            yes: false,
            checkpoint_dir: None,
        }
    }

    fn directives(text: &str) -> Vec<&str> {
        text.lines()
            .filter_map(|l| l.strip_prefix("#SBATCH "))
            .collect()
    }

    #[test]
    fn the_script_is_a_job_array_of_workers_that_exec() {
        let text = script(&job()).unwrap();
        assert!(text.starts_with("#!/bin/bash\n"), "{text}");
        assert_eq!(
            directives(&text),
            [
                "--job-name=lr-search",
                "--array=0-3",
                "--requeue",
                "--signal=B:USR1@120",
                "--open-mode=append",
                "--output=/home/me/work/slurm-logs/%x-%A_%a.log",
                "--chdir=/home/me/work",
            ]
        );
        let last = text.lines().last().unwrap();
        assert_eq!(
            last,
            "exec /opt/bin/cifar-sweep run /home/me/work/sweeps/lr.toml \
             --db /home/me/work/results/results.db --quiet"
        );
        // sbatch reads directives only up to the first command.
        let first_command = text
            .lines()
            .position(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let last_directive = lines
            .iter()
            .rposition(|l| l.starts_with("#SBATCH"))
            .unwrap();
        assert!(last_directive < first_command, "{text}");
    }

    #[test]
    fn resources_appear_only_when_asked_for() {
        let mut j = job();
        j.workers = 1;
        j.gpus_per_worker = 2;
        j.cpus_per_worker = Some(8);
        j.partition = Some("gpu".into());
        j.time = Some("04:00:00".into());
        j.yes = true;
        j.db = "postgres://me@db.cluster:5432/sweeps".into();
        j.checkpoint_dir = Some("/shared/ckpt".into());
        let text = script(&j).unwrap();
        let d = directives(&text);
        for want in [
            "--array=0-0",
            "--gres=gpu:2",
            "--cpus-per-task=8",
            "--partition=gpu",
            "--time=04:00:00",
        ] {
            assert!(d.contains(&want), "{want} missing: {d:?}");
        }
        assert!(
            text.ends_with(
                "--db postgres://me@db.cluster:5432/sweeps --checkpoint-dir /shared/ckpt --yes \
                 --quiet\n"
            ),
            "{text}"
        );
        assert!(!directives(&script(&job()).unwrap())
            .iter()
            .any(|d| d.starts_with("--gres") || d.starts_with("--time")));
    }

    #[test]
    fn paths_with_spaces_and_quotes_are_quoted_for_sbatch_and_the_shell() {
        let mut j = job();
        j.workdir = "/home/me/my work".into();
        j.logs = "/home/me/my work/50% \"logs\"".into();
        j.program = "/opt/it's here/cifar-sweep".into();
        j.sweep_file = "/home/me/my work/lr #1.toml".into();
        j.db = "/home/me/my work/$HOME.db".into();
        let text = script(&j).unwrap();
        let d = directives(&text);
        assert!(
            d.contains(&r#"--output="/home/me/my work/50%% \"logs\"/%x-%A_%a.log""#),
            "{d:?}"
        );
        assert!(d.contains(&r#"--chdir="/home/me/my work""#), "{d:?}");
        assert_eq!(
            text.lines().last().unwrap(),
            r#"exec '/opt/it'\''s here/cifar-sweep' run '/home/me/my work/lr #1.toml' --db '/home/me/my work/$HOME.db' --quiet"#
        );
    }

    #[test]
    fn shell_quoting_round_trips_through_a_real_shell() {
        for s in [
            "plain/path.db",
            "a b",
            "it's",
            "$HOME `x` \\ \"q\"",
            "#1",
            "",
        ] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), s, "{s:?}");
        }
    }

    #[test]
    fn a_line_break_in_a_directive_is_refused() {
        let mut j = job();
        j.logs = "/tmp/a\nb".into();
        let err = script(&j).unwrap_err().to_string();
        assert!(err.contains("line break"), "{err}");
    }

    #[test]
    fn time_limits_in_slurm_forms_only() {
        for ok in ["30", "30:00", "04:00:00", "1-0", "1-12:00", "2-04:00:00"] {
            assert_eq!(parse_time(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "",
            "4h",
            "1:2:3:4",
            "-5",
            "1-",
            "04:00:00 ",
            "1-2-3",
            "a:00",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_path_db_becomes_absolute_and_a_url_stays() {
        let cwd = Path::new("/work/here");
        assert_eq!(
            db_argument(Path::new("results/r.db"), cwd).unwrap(),
            "/work/here/results/r.db"
        );
        assert_eq!(
            db_argument(Path::new("/abs/r.db"), cwd).unwrap(),
            "/abs/r.db"
        );
        assert_eq!(
            db_argument(Path::new("postgres://u@h:5432/d"), cwd).unwrap(),
            "postgres://u@h:5432/d"
        );
    }
}
