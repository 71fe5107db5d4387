//! Runs a sweep: expands it, records it, and trains its trials one after another, claiming
//! each from the database so several processes can share the work.

use crate::grid::{self, TrialPlan};
use crate::prune::Decision;
use crate::pruner::Pruner;
use crate::spec::{self, SweepSpec};
use crate::store::{
    ConfigSet, Finished, Heartbeat, NewSweep, NewTrial, Store, TrialStatus, Worker,
};
use crate::{report, Error};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use trainer::data::Cifar10;
use trainer::metrics::EpochRecord;
use trainer::train::{self, BatchProgress, Observer, Outcome, RunOptions};
use trainer::TrainConfig;

/// How long a trial may go without a heartbeat before another process takes it over.
pub const STALE_AFTER: Duration = Duration::from_secs(120);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// How `run` runs a sweep: the command line's options.
pub struct RunArgs {
    /// The results store: a SQLite file or a PostgreSQL URL (`--db`).
    pub db: PathBuf,
    /// The device trials train on.
    pub device: trainer::Device,
    /// No progress bars (`--quiet`).
    pub quiet: bool,
    /// Put failed and diverged trials back in the queue before running (`--retry-failed`).
    pub retry_failed: bool,
    /// Run sweeps larger than their `max_trials`.
    pub yes: bool,
    /// Run at most this many trials, then return.
    pub limit: Option<usize>,
    /// Seconds between mid-epoch checkpoints.
    pub checkpoint_every: Duration,
    /// Where trials' checkpoint folders go; `None`: beside a SQLite database.
    pub checkpoint_dir: Option<PathBuf>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunSummary {
    /// The sweep's name.
    pub sweep: String,
    /// Trials this run claimed and started on, whatever came of them (an interrupted one
    /// included; not the already-stopped ones it only marked pruned); `--limit` counts these.
    pub ran: usize,
    /// Trials that failed, with their error.
    pub failed: Vec<(i64, String)>,
    /// Trials whose loss became NaN or infinite.
    pub diverged: Vec<i64>,
    /// Trials a pruning rule stopped early.
    pub pruned: Vec<i64>,
    /// Whether a signal stopped the run; the current trial was saved and a later run resumes it.
    pub interrupted: bool,
}

/// Parses, type-checks and expands a sweep file; nothing is written.
pub fn plan(path: &Path, yes: bool) -> Result<(SweepSpec, Vec<TrialPlan>), Error> {
    let spec = load(path, yes)?;
    let plans = grid::expand(&spec)?;
    Ok((spec, plans))
}

/// Parses and type-checks a sweep file and every trial it expands to, one at a time (a
/// sweep allowed to be large is never held in memory whole); nothing is written.
pub fn load(path: &Path, yes: bool) -> Result<SweepSpec, Error> {
    let mut spec = spec::load(path)?;
    if yes {
        spec.max_trials = usize::MAX;
    }
    validate(&spec)?;
    Ok(spec)
}

/// Every trial of `spec` resolves to a valid, distinct configuration.
pub fn validate(spec: &SweepSpec) -> Result<(), Error> {
    for plan in grid::plans(spec)? {
        plan?;
    }
    Ok(())
}

/// The set of `spec`'s trial configurations as digests, for telling a re-run of a sweep from
/// another sweep under the same name (see [`crate::store::Backend::upsert_sweep`]).
pub fn config_set(spec: &SweepSpec) -> ConfigSet {
    // TPE's proposals are not known in advance: the set holds what the file fixes.
    ConfigSet::new(grid::plans(spec).into_iter().flatten().filter_map(|p| {
        p.ok()
            .filter(|p| !p.proposed)
            .map(|p| serde_json::to_value(&p.config).expect("config serialises"))
    }))
}

/// The database at `db` can take `spec`: it can be created there, or it is ours and holds no
/// other sweep under this name. Nothing is written: `run` checks this before minutes on the data.
pub fn check_store(spec: &SweepSpec, db: &Path) -> Result<(), Error> {
    crate::store::check_creatable(db)?;
    if let crate::store::Probe::Ours { .. } = crate::store::probe(db)? {
        Store::open_read_only(db)?
            .check_sweep(&spec.name, &spec.text, &spec.file, &|| config_set(spec))?;
    }
    Ok(())
}

/// Trials are written to the database in transactions of this many.
const INSERT_CHUNK: usize = 10_000;

/// A trial's identity: its resolved config and the data it trains on.
pub fn trial_key(config: &TrainConfig, data_checksum: &str) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(config).expect("config serialises"));
    h.update(b"\0");
    h.update(data_checksum.as_bytes());
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn git_rev() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Runs the sweep `spec` (checked by [`load`]) on `data`.
pub fn run(
    spec: &SweepSpec,
    data: &Cifar10,
    args: &RunArgs,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, Error> {
    let device = args.device.clone();
    let device_name = trainer::device::name(&device);
    let db = Store::open_with_checkpoints(&args.db, args.checkpoint_dir.as_deref())?;
    let sweep_id = db.upsert_sweep(
        &NewSweep {
            name: spec.name.clone(),
            description: spec.description.clone(),
            spec: spec.text.clone(),
            spec_path: spec.file.clone(),
            host: crate::store::hostname(),
            git_rev: git_rev(),
            device: device_name.clone(),
            data_checksum: data.checksum.clone(),
        },
        &|| config_set(spec),
    )?;
    // Streamed in chunks: a million-trial sweep is a few hundred megabytes as plans.
    let total = grid::count(spec) as usize;
    let mut added = 0;
    let mut rows = Vec::with_capacity(INSERT_CHUNK.min(total));
    for plan in grid::plans(spec)? {
        let p = plan?;
        if p.proposed {
            continue;
        }
        rows.push(NewTrial {
            key: trial_key(&p.config, &data.checksum),
            ordinal: p.ordinal,
            config: serde_json::to_value(&p.config).expect("config serialises"),
        });
        if rows.len() == INSERT_CHUNK {
            added += db.insert_trials(sweep_id, &rows)?;
            rows.clear();
        }
    }
    added += db.insert_trials(sweep_id, &rows)?;
    drop(rows);
    if args.retry_failed {
        let n = db.requeue_failed(sweep_id)?;
        if n > 0 {
            tracing::info!("{n} failed or diverged trial(s) queued again (--retry-failed)");
        }
    }
    tracing::info!(
        sweep = %spec.name,
        trials = total,
        new = added,
        device = %device_name,
        "sweep recorded in {}",
        args.db.display()
    );

    let already = db.count_trials(sweep_id, &TrialStatus::SETTLED)? as u64;

    let mp = MultiProgress::with_draw_target(if args.quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let sweep_bar = mp.add(ProgressBar::new(total as u64));
    sweep_bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {pos}/{len} trials  {elapsed_precise} elapsed, ~{eta} left  {msg}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    sweep_bar.set_prefix(spec.name.clone());
    sweep_bar.set_position(already);
    // The time left is from this run's pace: trials finished earlier took no time here.
    sweep_bar.reset_eta();

    // A heartbeat from its own connection, so a long epoch does not look like a dead worker.
    let hb = Heartbeat::start(&args.db, HEARTBEAT_EVERY);

    let pruner = Pruner {
        db: &db,
        sweep_id,
        search: &spec.search,
    };
    let worker = Worker::current();
    let mut summary = RunSummary {
        sweep: spec.name.clone(),
        ..Default::default()
    };
    let result = (|| -> Result<(), Error> {
        while !stop.load(Ordering::SeqCst) && args.limit.is_none_or(|l| summary.ran < l) {
            let claimed = match db.claim_next(sweep_id, &worker, &device_name, STALE_AFTER)? {
                Some(c) => Some(c),
                // A TPE sweep records its next draw only now, from the results so far.
                None => crate::proposer::propose_next(
                    &db,
                    spec,
                    sweep_id,
                    &data.checksum,
                    &worker,
                    &device_name,
                )?,
            };
            let Some(claimed) = claimed else {
                break;
            };
            hb.track(Some(claimed.id));
            // A stored config that no longer decodes fails its trial, not the whole run: left
            // `running`, it would abort every later run the same way.
            let config = match decode_config(&claimed.config) {
                Ok(c) => c,
                Err(e) => {
                    let msg = format!("trial {}: stored config: {e}", claimed.id);
                    db.set_status(claimed.id, TrialStatus::Failed, Some(&msg), None)?;
                    mp.suspend(|| tracing::error!("{msg}"));
                    summary.ran += 1;
                    summary.failed.push((claimed.id, msg));
                    sweep_bar.inc(1);
                    hb.track(None);
                    continue;
                }
            };
            // A rule stopped it, but the process died before saying so: say so now.
            if let Some(epoch) = db.stopped_at(claimed.id)? {
                db.prune_trial(claimed.id, epoch)?;
                summary.pruned.push(claimed.id);
                sweep_bar.inc(1);
                hb.track(None);
                continue;
            }
            // This database's own folder for the trial (recorded at its first claim), never
            // another database's: see schema_v2.sql.
            let dir = claimed.checkpoint_dir.clone();
            let label = format!(
                "trial {} ({} lr={} batch={})",
                claimed.id, config.arch, config.lr, config.batch_size
            );
            sweep_bar.set_message(label.clone());
            if claimed.previous_status != TrialStatus::Pending {
                tracing::info!("{label}: resuming ({})", claimed.previous_status);
            }
            let outcome = run_trial(
                &db, claimed.id, &config, data, &device, &dir, &mp, &stop, args, &pruner,
            );
            summary.ran += 1;
            match outcome {
                Ok((Outcome::Interrupted { .. }, Some(d))) => {
                    db.prune_trial(claimed.id, d.epoch)?;
                    let why = match (d.rung, d.cutoff) {
                        (Some(r), Some(c)) => {
                            format!(" (rung {r}: below {c:.4} of {} trials)", d.compared_with)
                        }
                        (None, Some(c)) => format!(
                            " (worse than the median {c:.4} of {} trials)",
                            d.compared_with
                        ),
                        _ => format!(" (dominated at a rung of {} trials)", d.compared_with),
                    };
                    mp.suspend(|| tracing::info!("{label}: pruned after epoch {}{why}", d.epoch));
                    summary.pruned.push(claimed.id);
                    sweep_bar.inc(1);
                }
                Ok((
                    Outcome::Finished {
                        best_epoch,
                        best_valid_loss,
                        test,
                        train_seconds,
                    },
                    _,
                )) => {
                    db.finish_trial(
                        claimed.id,
                        &Finished {
                            best_epoch,
                            best_valid_loss,
                            test: &test,
                            train_seconds,
                            classes: &data.classes,
                            checkpoint: &dir.display().to_string(),
                        },
                    )?;
                    mp.suspend(|| {
                        tracing::info!(
                            "{label}: done, test accuracy {:.2}% (best epoch {best_epoch}, {})",
                            test.accuracy * 100.0,
                            report::duration(train_seconds)
                        )
                    });
                    sweep_bar.inc(1);
                }
                Ok((
                    Outcome::Diverged {
                        epoch,
                        last_good_epoch,
                    },
                    _,
                )) => {
                    let msg = format!(
                        "loss became NaN or infinite in epoch {epoch}; last good epoch {last_good_epoch}"
                    );
                    db.set_status(
                        claimed.id,
                        TrialStatus::Diverged,
                        Some(&msg),
                        Some(last_good_epoch),
                    )?;
                    mp.suspend(|| tracing::warn!("{label}: diverged: {msg}"));
                    summary.diverged.push(claimed.id);
                    sweep_bar.inc(1);
                }
                Ok((Outcome::Interrupted { epoch, batch }, None)) => {
                    db.set_status(claimed.id, TrialStatus::Interrupted, None, None)?;
                    // batch 0: stopped at the end of `epoch`, not inside it.
                    let at = if batch == 0 {
                        format!("after epoch {epoch}")
                    } else {
                        format!("in epoch {epoch} after batch {batch}")
                    };
                    mp.suspend(|| {
                        tracing::warn!("{label}: interrupted {at}; `run` again resumes it")
                    });
                    summary.interrupted = true;
                }
                Err(e) => {
                    let msg = crate::error_chain(&e);
                    db.set_status(claimed.id, TrialStatus::Failed, Some(&msg), None)?;
                    mp.suspend(|| tracing::error!("{label}: failed: {msg}"));
                    summary.failed.push((claimed.id, msg));
                    sweep_bar.inc(1);
                }
            }
            hb.track(None);
        }
        Ok(())
    })();
    drop(hb);
    sweep_bar.finish_and_clear();
    result?;
    if stop.load(Ordering::SeqCst) {
        summary.interrupted = true;
    } else {
        let open: Vec<TrialStatus> = TrialStatus::open().collect();
        if db.count_trials(sweep_id, &open)? == 0 {
            db.finish_sweep(sweep_id)?;
        }
    }
    Ok(summary)
}

/// Decodes a trial's stored config, naming the first field that does not decode.
fn decode_config(json: &str) -> Result<TrainConfig, String> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    serde_json::from_value(value.clone()).map_err(|e| {
        // serde's message for a struct does not say which field; try them one at a time
        // over the defaults.
        let serde_json::Value::Object(fields) = &value else {
            return format!("not a JSON object: {e}");
        };
        let defaults = serde_json::to_value(TrainConfig::default()).expect("config serialises");
        for (key, v) in fields {
            let mut one = defaults.clone();
            one[key.as_str()] = v.clone();
            if let Err(e) = serde_json::from_value::<TrainConfig>(one) {
                return format!("field `{key}`: {e}");
            }
        }
        e.to_string()
    })
}

/// Persists epochs and drives the progress bar for one trial.
struct TrialObserver<'a> {
    db: &'a Store,
    trial_id: i64,
    pruner: &'a Pruner<'a>,
    /// The trial's last epoch: nothing is pruned there.
    last_epoch: usize,
    /// The decision that stopped the trial, once one has.
    pruned: Option<Decision>,
    /// Every epoch of the trial so far: the resume point's, then those trained.
    history: Vec<EpochRecord>,
    bar: ProgressBar,
    stop: &'a AtomicBool,
    mp: &'a MultiProgress,
}

impl Observer for TrialObserver<'_> {
    fn on_batch(&mut self, p: &BatchProgress) {
        if self.bar.length() != Some(p.batches as u64) {
            self.bar.set_length(p.batches as u64);
        }
        let prefix = format!("epoch {}/{}", p.epoch, p.epochs);
        if self.bar.prefix() != prefix {
            // A new epoch starts the bar again: its time left is this epoch's pace.
            self.bar.set_prefix(prefix);
            self.bar.set_position(p.batch as u64);
            self.bar.reset_eta();
        } else {
            self.bar.set_position(p.batch as u64);
        }
        self.bar.set_message(format!(
            "loss {:.4}  acc {:.1}%  {:.0} img/s",
            p.loss,
            p.accuracy * 100.0,
            p.images_per_sec
        ));
    }

    fn on_resume(&mut self, history: &[EpochRecord]) -> Result<(), String> {
        // The checkpoint may be one epoch ahead of the database (a crash between the two
        // writes): record its epochs. Rows past the resume point are left alone, not
        // deleted: if a damaged checkpoint made training fall back to an older one, those
        // epochs are trained again and re-recorded over (the same numbers on the CPU).
        for r in history {
            self.db
                .record_epoch(self.trial_id, r)
                .map_err(|e| crate::error_chain(&e))?;
        }
        self.history = history.to_vec();
        // A process killed between recording an epoch and deciding on it left that decision
        // untaken: take it now (recorded ones are replayed), before training goes on.
        for r in history {
            match self.pruner.after_epoch(self.trial_id, r, self.last_epoch) {
                Ok(Some(d)) if d.stop => {
                    self.pruned = Some(d);
                    break;
                }
                Ok(_) => {}
                Err(e) => return Err(crate::error_chain(&e)),
            }
        }
        Ok(())
    }

    fn on_epoch(&mut self, r: &EpochRecord) -> Result<(), String> {
        let t0 = std::time::Instant::now();
        self.db
            .record_epoch(self.trial_id, r)
            .map_err(|e| crate::error_chain(&e))?;
        self.history.push(r.clone());
        match self.pruner.after_epoch(self.trial_id, r, self.last_epoch) {
            Ok(Some(d)) if d.stop => self.pruned = Some(d),
            Ok(_) => {}
            Err(e) => return Err(crate::error_chain(&e)),
        }
        // The per-epoch write must stay a negligible part of an epoch (issue #4).
        tracing::debug!(
            trial = self.trial_id,
            epoch = r.epoch,
            "epoch recorded in {:.2?}",
            t0.elapsed()
        );
        self.mp.suspend(|| {
            tracing::info!(
                "trial {} epoch {}: train loss {:.4} acc {:.2}%, valid loss {:.4} acc {:.2}%, {:.1}s, {:.0} img/s",
                self.trial_id,
                r.epoch,
                r.train_loss,
                r.train_acc * 100.0,
                r.valid_loss,
                r.valid_acc * 100.0,
                r.seconds,
                r.images_per_sec
            )
        });
        Ok(())
    }

    fn should_stop(&self) -> bool {
        self.pruned.is_some() || self.stop.load(Ordering::SeqCst)
    }
}

#[allow(clippy::too_many_arguments)]
fn run_trial(
    db: &Store,
    trial_id: i64,
    config: &TrainConfig,
    data: &Cifar10,
    device: &trainer::Device,
    dir: &Path,
    mp: &MultiProgress,
    stop: &AtomicBool,
    args: &RunArgs,
    pruner: &Pruner,
) -> Result<(Outcome, Option<Decision>), Error> {
    let bar = mp.add(ProgressBar::new(1));
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>14} [{bar:30}] {pos}/{len} batches  ~{eta} left  {msg}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    let mut obs = TrialObserver {
        db,
        trial_id,
        pruner,
        last_epoch: config.epochs,
        pruned: None,
        history: Vec::new(),
        bar: bar.clone(),
        stop,
        mp,
    };
    let mut opts = RunOptions::new(dir);
    opts.checkpoint_every = args.checkpoint_every;
    let out = train::run(config, data, device, &opts, &mut obs);
    bar.finish_and_clear();
    mp.remove(&bar);
    if let Ok(Outcome::Diverged { .. }) = &out {
        // The trial's epochs are final now: drop rows an earlier attempt recorded past them.
        db.sync_epochs(trial_id, &obs.history)?;
    }
    Ok((out?, obs.pruned))
}
