//! Everything the charts read from the results database, in one place: a sweep's trials with
//! their epochs, per-class accuracy, pruning decisions and checkpoint folders, and the best
//! trial's confusion matrix, as plain structs. No other part of `plot` touches the database.

use crate::store::Store as Db;
use crate::Error;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One recorded epoch of a trial, as the charts draw it.
pub struct EpochRow {
    /// 1-based.
    pub epoch: i64,
    /// Mean training loss over the epoch; NaN when none was recorded (the loss was not finite).
    pub train_loss: f64,
    /// Validation loss after the epoch; NaN when none was recorded.
    pub valid_loss: f64,
    /// Validation accuracy (a fraction) after the epoch; NaN when none was recorded.
    pub valid_acc: f64,
}

/// A trial of the sweep with everything its charts need.
pub struct TrialData {
    /// The trial's row id (`#id` in labels).
    pub id: i64,
    /// The trial's key.
    pub key: String,
    /// Its status word (`done`, `pruned`, ...; see [`crate::store::TrialStatus`]).
    pub status: String,
    /// Its resolved configuration, key by key.
    pub config: BTreeMap<String, Value>,
    /// `#id` and the hyperparameters that vary across the sweep.
    pub label: String,
    /// The same without the seed: identical for the seeds of one configuration.
    pub group: String,
    /// The epoch (1-based) whose weights were tested.
    pub best_epoch: Option<i64>,
    /// Test accuracy (a fraction); `None` unless the trial is done.
    pub test_acc: Option<f64>,
    /// Training time over all epochs, in seconds; `None` until it finished.
    pub train_seconds: Option<f64>,
    /// The checkpoint folder recorded when it finished, as shown to the user then.
    pub checkpoint: Option<String>,
    /// The database's own checkpoint folder for the trial (schema 2), in its folder.
    pub own_checkpoint: Option<PathBuf>,
    /// Its recorded epochs in order.
    pub epochs: Vec<EpochRow>,
    /// Per-class test accuracy (empty when the trial did not finish).
    pub class_acc: Vec<f64>,
    /// The pruning rule's decisions for the trial: (epoch, stopped there).
    pub decisions: Vec<(i64, bool)>,
}

impl TrialData {
    /// The best validation accuracy of any of its epochs (NaN epochs ignored).
    pub fn best_valid_acc(&self) -> Option<f64> {
        self.epochs
            .iter()
            .map(|e| e.valid_acc)
            .filter(|a| a.is_finite())
            .fold(None, |m, a| Some(m.map_or(a, |m: f64| m.max(a))))
    }
}

/// A sweep as the charts see it (read once by [`SweepData::load`]).
pub struct SweepData {
    /// The sweep's name.
    pub name: String,
    /// The database it was read from (a PostgreSQL server's URL without its password).
    pub db_path: PathBuf,
    /// The SHA-256 of the data the sweep ran on: the sample grid warns when its data differs.
    pub data_checksum: Option<String>,
    /// Class names by index (the sweep's recorded ones, else CIFAR-10's).
    pub classes: Vec<String>,
    /// Best test accuracy first, then the unfinished trials in sweep order.
    pub trials: Vec<TrialData>,
    /// Whether each dimension of the sweep file's `[space]` is drawn on a log axis
    /// (`log_uniform`) or a linear one (`uniform`, `int_uniform`); `choice` dimensions and
    /// grid axes are not here.
    pub log_scale: BTreeMap<String, bool>,
    /// The recorded cells of the best trial's confusion matrix (empty without a finished
    /// trial).
    pub confusion: Vec<ConfusionCell>,
}

/// One cell of a confusion matrix: how many test images of class `truth` were predicted as
/// `predicted`.
pub struct ConfusionCell {
    /// Row: the images' label.
    pub truth: i64,
    /// Column: the predicted class.
    pub predicted: i64,
    /// How many test images.
    pub count: i64,
}

/// The axis scale of each continuous `[space]` dimension of a stored sweep file (empty when
/// it has none, or no longer parses).
fn space_scales(spec: Option<&str>) -> BTreeMap<String, bool> {
    use crate::space::Distribution;
    let Some(Ok(spec)) = spec.map(|text| crate::spec::parse("stored", text)) else {
        return BTreeMap::new();
    };
    let Some(sampling) = spec.search.sampling else {
        return BTreeMap::new();
    };
    sampling
        .space
        .dims
        .into_iter()
        .filter_map(|(k, d)| match d {
            Distribution::LogUniform { .. } => Some((k, true)),
            Distribution::Uniform { .. } | Distribution::IntUniform { .. } => Some((k, false)),
            _ => None,
        })
        .collect()
}

impl SweepData {
    /// Reads sweep `sweep` from `db`: its trials best first, labelled by the settings that
    /// vary, and the best trial's confusion matrix.
    pub fn load(db: &Db, sweep: &str) -> Result<SweepData, Error> {
        let row = sweep_row(db, sweep)?;
        let mut trials = trial_rows(db, row.id)?;
        for t in &mut trials {
            t.epochs = epochs(db, t.id)?;
            t.class_acc = class_accuracy(db, t.id)?;
        }
        let index: std::collections::HashMap<i64, usize> =
            trials.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
        for d in decisions(db, row.id)? {
            if let Some(&i) = index.get(&d.trial) {
                trials[i].decisions.push((d.epoch, d.stop));
            }
        }
        let keys = varying_keys(&trials);
        for t in &mut trials {
            t.label = label(t, &keys, true);
            t.group = label(t, &keys, false);
        }
        trials.sort_by(|a, b| {
            let acc = |t: &TrialData| {
                if t.status == "done" {
                    t.test_acc.unwrap_or(f64::NEG_INFINITY)
                } else {
                    f64::NEG_INFINITY
                }
            };
            acc(b).total_cmp(&acc(a))
        });
        let mut classes = class_names(db, row.id)?;
        if classes.is_empty() {
            classes = trainer::data::CIFAR10_CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect();
        }
        let mut data = SweepData {
            name: sweep.to_string(),
            db_path: db.path.clone(),
            data_checksum: row.data_checksum,
            classes,
            trials,
            log_scale: space_scales(row.spec.as_deref()),
            confusion: Vec::new(),
        };
        if let Some(best) = data.best().map(|t| t.id) {
            data.confusion = confusion(db, best)?;
        }
        Ok(data)
    }

    /// Finished trials with a test accuracy, best first.
    pub fn done(&self) -> Vec<&TrialData> {
        self.trials
            .iter()
            .filter(|t| t.status == "done" && t.test_acc.is_some())
            .collect()
    }

    /// The done trial with the best test accuracy; `None` when no trial is done.
    pub fn best(&self) -> Option<&TrialData> {
        self.done().into_iter().next()
    }

    /// Whether some configuration was run with several seeds.
    pub fn seeds_repeat(&self) -> bool {
        let done = self.done();
        done.iter()
            .any(|t| done.iter().filter(|u| u.group == t.group).count() > 1)
    }
}

/// Keys whose value differs between the trials: the architecture first, then the usual
/// hyperparameters, the others by name, the seed last.
fn varying_keys(trials: &[TrialData]) -> Vec<String> {
    let Some(first) = trials.first() else {
        return Vec::new();
    };
    let mut keys: Vec<String> = first
        .config
        .keys()
        .filter(|k| {
            trials
                .iter()
                .any(|t| t.config.get(*k) != first.config.get(*k))
        })
        .cloned()
        .collect();
    let rank = |k: &str| match k {
        "arch" => 0,
        "lr" => 1,
        "batch_size" => 2,
        "dropout" => 3,
        "epochs" => 4,
        "seed" => 6,
        _ => 5,
    };
    keys.sort_by_key(|k| rank(k));
    keys
}

fn label(t: &TrialData, keys: &[String], with_id: bool) -> String {
    let mut parts = Vec::new();
    if with_id {
        parts.push(format!("#{}", t.id));
    }
    let show = |k: &str| match t.config.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "-".into(),
    };
    let keys: Vec<&String> = keys
        .iter()
        .filter(|k| with_id || k.as_str() != "seed")
        .collect();
    if keys.iter().all(|k| k.as_str() != "arch") {
        parts.push(show("arch"));
    }
    for k in keys {
        if k == "arch" {
            parts.push(show(k));
        } else {
            parts.push(format!("{k}={}", show(k)));
        }
    }
    parts.join(" ")
}

// ---------------------------------------------------------------------------------------
// The reads, through the store's typed readers (no SQL in `plot`)

/// What the charts need of a sweep's own row.
struct SweepRow {
    id: i64,
    data_checksum: Option<String>,
    /// The sweep file as it was run.
    spec: Option<String>,
}

fn sweep_row(db: &Db, sweep: &str) -> Result<SweepRow, Error> {
    let id = db.sweep_id(sweep)?;
    let row = db.sweep(id)?;
    Ok(SweepRow {
        id,
        data_checksum: row.as_ref().and_then(|r| r.data_checksum.clone()),
        spec: row.map(|r| r.spec),
    })
}

/// The trials of sweep `sweep_id` in sweep order, without their epochs, per-class accuracy,
/// decisions or labels.
fn trial_rows(db: &Db, sweep_id: i64) -> Result<Vec<TrialData>, Error> {
    let mut rows = Vec::new();
    db.for_each_trial(sweep_id, &mut |t| {
        rows.push(t);
        Ok(())
    })?;
    rows.into_iter()
        .map(|t| {
            let config: BTreeMap<String, Value> = serde_json::from_str(&t.config)
                .map_err(|e| Error::Corrupt(format!("trial {}: config: {e}", t.id)))?;
            Ok(TrialData {
                id: t.id,
                key: t.key,
                status: t.status.as_str().to_string(),
                config,
                label: String::new(),
                group: String::new(),
                best_epoch: t.best_epoch,
                test_acc: t.test_acc,
                train_seconds: t.train_seconds,
                checkpoint: t.checkpoint,
                own_checkpoint: t.checkpoint_dir.as_deref().and_then(|d| db.beside(d)),
                epochs: Vec::new(),
                class_acc: Vec::new(),
                decisions: Vec::new(),
            })
        })
        .collect()
}

/// A trial's recorded epochs in order (a missing value reads as NaN).
fn epochs(db: &Db, trial: i64) -> Result<Vec<EpochRow>, Error> {
    Ok(db
        .epochs(trial)?
        .into_iter()
        .map(|e| EpochRow {
            epoch: e.epoch,
            train_loss: e.train_loss.unwrap_or(f64::NAN),
            valid_loss: e.valid_loss.unwrap_or(f64::NAN),
            valid_acc: e.valid_acc.unwrap_or(f64::NAN),
        })
        .collect())
}

/// A trial's test accuracy per class, in class order (empty when it did not finish).
fn class_accuracy(db: &Db, trial: i64) -> Result<Vec<f64>, Error> {
    Ok(db
        .class_accuracy(trial)?
        .into_iter()
        .map(|c| c.accuracy)
        .collect())
}

/// One decision of the pruning rule.
struct Decision {
    trial: i64,
    epoch: i64,
    /// The trial stopped there.
    stop: bool,
}

/// The pruning rule's decisions for a sweep's trials (an older database read as it is has
/// none).
fn decisions(db: &Db, sweep_id: i64) -> Result<Vec<Decision>, Error> {
    Ok(db
        .sweep_decisions(sweep_id)?
        .into_iter()
        .map(|d| Decision {
            trial: d.trial_id,
            epoch: d.epoch,
            stop: d.stop,
        })
        .collect())
}

/// The class names recorded with a sweep's per-class accuracy, in class order.
fn class_names(db: &Db, sweep_id: i64) -> Result<Vec<String>, Error> {
    Ok(db.class_names(sweep_id)?)
}

/// A trial's recorded confusion-matrix cells.
fn confusion(db: &Db, trial: i64) -> Result<Vec<ConfusionCell>, Error> {
    Ok(db
        .confusion(trial)?
        .into_iter()
        .map(|c| ConfusionCell {
            truth: c.true_class,
            predicted: c.predicted_class,
            count: c.count,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_space_says_which_axes_are_logarithmic() {
        let spec = "name = \"s\"\nsamples = 4\n[base]\narch = \"lenet\"\n[space]\n\
                    lr = { log_uniform = [1e-4, 0.3] }\nmomentum = { uniform = [0.0, 0.9] }\n\
                    epochs = { int_uniform = [1, 3] }\nbatch_size = { choice = [16, 32] }\n";
        let scales = space_scales(Some(spec));
        assert_eq!(
            scales.into_iter().collect::<Vec<_>>(),
            [
                ("epochs".to_string(), false),
                ("lr".to_string(), true),
                ("momentum".to_string(), false)
            ]
        );
        assert!(space_scales(Some("name = \"g\"\n[grid]\nlr = [0.1, 0.01]\n")).is_empty());
        assert!(space_scales(Some("not toml [")).is_empty());
        assert!(space_scales(None).is_empty());
    }
}
