//! Charts of a sweep, drawn with plotters from the results database: loss curves (per trial,
//! and every trial on one chart with the pruned ones greyed), test accuracy, training time,
//! accuracy against time with its Pareto front, the best validation accuracy against each
//! hyperparameter, per-class accuracy, the best trial's
//! confusion matrix and its predictions on sample test images. Each chart is rendered twice,
//! to PNG and to SVG, with a bundled font (no system fonts needed).

mod bars;
mod curves;
mod heatmaps;
mod samples;
mod scatter;
mod style;

use crate::db::Db;
use crate::Error;
use anyhow::{anyhow, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
pub use style::register_font;
use style::*;
use trainer::data::Cifar10;

/// One rendered chart.
pub struct Chart {
    /// File stem: `loss_curves`, `accuracy`, ...
    pub name: &'static str,
    /// What it shows, for captions.
    pub title: String,
    pub width: u32,
    pub height: u32,
    pub png: Vec<u8>,
    pub svg: String,
}

/// The charts of a sweep, and the kinds that could not be drawn (with the reason).
pub struct Charts {
    pub sweep: String,
    pub charts: Vec<Chart>,
    pub skipped: Vec<(&'static str, String)>,
}

/// Every chart kind, in the order they are drawn.
pub const KINDS: &[&str] = &[
    "loss_curves",
    "all_curves",
    "accuracy",
    "train_time",
    "accuracy_vs_time",
    "hyperparameters",
    "class_accuracy",
    "confusion",
    "samples",
];

// ---------------------------------------------------------------------------------------
// The data

pub struct EpochRow {
    pub epoch: i64,
    pub train_loss: f64,
    pub valid_loss: f64,
    pub valid_acc: f64,
}

pub struct TrialData {
    pub id: i64,
    pub key: String,
    pub status: String,
    pub config: BTreeMap<String, Value>,
    /// `#id` and the hyperparameters that vary across the sweep.
    pub label: String,
    /// The same without the seed: identical for the seeds of one configuration.
    pub group: String,
    pub best_epoch: Option<i64>,
    pub test_acc: Option<f64>,
    pub train_seconds: Option<f64>,
    pub checkpoint: Option<String>,
    /// The database's own checkpoint folder for the trial (schema 2), in its folder.
    pub own_checkpoint: Option<PathBuf>,
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

pub struct SweepData {
    pub name: String,
    pub db_path: PathBuf,
    pub data_checksum: Option<String>,
    pub classes: Vec<String>,
    /// Best test accuracy first, then the unfinished trials in sweep order.
    pub trials: Vec<TrialData>,
    /// Whether each dimension of the sweep file's `[space]` is drawn on a log axis
    /// (`log_uniform`) or a linear one (`uniform`, `int_uniform`); `choice` dimensions and
    /// grid axes are not here.
    pub log_scale: BTreeMap<String, bool>,
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
    pub fn load(db: &Db, sweep: &str) -> Result<SweepData, Error> {
        let sweep_id = db.sweep_id(sweep)?;
        let (_, meta) = db.query_strings(
            "SELECT data_checksum, spec FROM sweeps WHERE id = ?1",
            &[&sweep_id],
        )?;
        let data_checksum = meta.first().and_then(|r| r[0].as_str()).map(str::to_string);
        let log_scale = space_scales(meta.first().and_then(|r| r[1].as_str()));
        // A version-1 database (read as it is) has no checkpoint_dir; its trials used
        // `checkpoints/<sweep>/<key>`.
        let sql = if db.version >= 2 {
            "SELECT id, trial_key, status, config, best_epoch, test_acc, train_seconds, checkpoint,
                    checkpoint_dir
             FROM trials WHERE sweep_id = ?1 ORDER BY ordinal"
        } else {
            "SELECT id, trial_key, status, config, best_epoch, test_acc, train_seconds, checkpoint,
                    'checkpoints/' || ?2 || '/' || trial_key
             FROM trials WHERE sweep_id = ?1 ORDER BY ordinal"
        };
        let (_, rows) = if db.version >= 2 {
            db.query_strings(sql, &[&sweep_id])?
        } else {
            db.query_strings(sql, &[&sweep_id, &sweep])?
        };
        let mut trials = Vec::new();
        for r in rows {
            let id = r[0].as_i64().unwrap_or_default();
            let config: BTreeMap<String, Value> =
                serde_json::from_str(r[3].as_str().unwrap_or("{}"))
                    .map_err(|e| Error::Corrupt(format!("trial {id}: config: {e}")))?;
            let (_, ep) = db.query_strings(
                "SELECT epoch, train_loss, valid_loss, valid_acc FROM epochs WHERE trial_id = ?1
                 ORDER BY epoch",
                &[&id],
            )?;
            let (_, ca) = db.query_strings(
                "SELECT accuracy FROM class_accuracy WHERE trial_id = ?1 ORDER BY class_index",
                &[&id],
            )?;
            trials.push(TrialData {
                id,
                key: r[1].as_str().unwrap_or_default().to_string(),
                status: r[2].as_str().unwrap_or_default().to_string(),
                config,
                label: String::new(),
                group: String::new(),
                best_epoch: r[4].as_i64(),
                test_acc: r[5].as_f64(),
                train_seconds: r[6].as_f64(),
                checkpoint: r[7].as_str().map(str::to_string),
                own_checkpoint: r[8].as_str().and_then(|d| db.beside(d)),
                epochs: ep
                    .iter()
                    .map(|e| EpochRow {
                        epoch: e[0].as_i64().unwrap_or_default(),
                        train_loss: e[1].as_f64().unwrap_or(f64::NAN),
                        valid_loss: e[2].as_f64().unwrap_or(f64::NAN),
                        valid_acc: e[3].as_f64().unwrap_or(f64::NAN),
                    })
                    .collect(),
                class_acc: ca.iter().map(|c| c[0].as_f64().unwrap_or(0.0)).collect(),
                decisions: Vec::new(),
            });
        }
        // Pruning decisions (schema 3; an older database read as it is has none).
        let (_, has) = db.query_strings(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'decisions'",
            &[],
        )?;
        if has.first().and_then(|r| r[0].as_i64()) == Some(1) {
            let (_, ds) = db.query_strings(
                "SELECT d.trial_id, d.epoch, d.stop FROM decisions d
                 JOIN trials t ON t.id = d.trial_id WHERE t.sweep_id = ?1
                 ORDER BY d.trial_id, d.epoch",
                &[&sweep_id],
            )?;
            let index: std::collections::HashMap<i64, usize> =
                trials.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
            for d in ds {
                let id = d[0].as_i64().unwrap_or_default();
                if let Some(t) = index.get(&id).map(|&i| &mut trials[i]) {
                    t.decisions.push((
                        d[1].as_i64().unwrap_or_default(),
                        d[2].as_i64().unwrap_or(0) != 0,
                    ));
                }
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
        let (_, names) = db.query_strings(
            "SELECT DISTINCT c.class_index, c.class_name FROM class_accuracy c
             JOIN trials t ON t.id = c.trial_id WHERE t.sweep_id = ?1 ORDER BY c.class_index",
            &[&sweep_id],
        )?;
        let mut classes: Vec<String> = names
            .iter()
            .map(|r| r[1].as_str().unwrap_or_default().to_string())
            .collect();
        if classes.is_empty() {
            classes = trainer::data::CIFAR10_CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect();
        }
        Ok(SweepData {
            name: sweep.to_string(),
            db_path: db.path.clone(),
            data_checksum,
            classes,
            trials,
            log_scale,
        })
    }

    /// Finished trials with a test accuracy, best first.
    pub fn done(&self) -> Vec<&TrialData> {
        self.trials
            .iter()
            .filter(|t| t.status == "done" && t.test_acc.is_some())
            .collect()
    }

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

/// What drawing on a plotters backend returns (its error types differ per backend).
type DResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

// ---------------------------------------------------------------------------------------
// Rendering to PNG and SVG

/// A chart that can draw itself on any plotters backend.
trait Draw {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DResult
    where
        DB::ErrorType: 'static;
}

fn render(name: &'static str, title: String, chart: &impl Draw) -> anyhow::Result<Chart> {
    register_font();
    let (w, h) = chart.size();
    let mut buf = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{name}: {e}"))?;
        chart.draw(&root).map_err(|e| anyhow!("{name}: {e}"))?;
        root.present().map_err(|e| anyhow!("{name}: {e}"))?;
    }
    let mut png = Vec::new();
    {
        use image::ImageEncoder;
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&buf, w, h, image::ColorType::Rgb8)
            .with_context(|| format!("{name}: encoding the PNG"))?;
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{name}: {e}"))?;
        chart.draw(&root).map_err(|e| anyhow!("{name}: {e}"))?;
        root.present().map_err(|e| anyhow!("{name}: {e}"))?;
    }
    Ok(Chart {
        name,
        title,
        width: w,
        height: h,
        png,
        svg,
    })
}

/// Draws every chart of `data`. `images`: the data set for the sample-image grid (`None`
/// skips it, or the error that prevented loading it).
pub fn charts(data: &SweepData, images: Option<Result<&Cifar10, String>>) -> Charts {
    let mut out = Charts {
        sweep: data.name.clone(),
        charts: Vec::new(),
        skipped: Vec::new(),
    };
    let mut add = |name: &'static str, r: anyhow::Result<Option<Chart>>, why: &str| match r {
        Ok(Some(c)) => out.charts.push(c),
        Ok(None) => out.skipped.push((name, why.to_string())),
        Err(e) => out.skipped.push((name, format!("{e:#}"))),
    };
    let none_done = "no finished trial";
    add(
        "loss_curves",
        curves::loss_curves(data),
        "no trial has recorded an epoch",
    );
    add(
        "all_curves",
        curves::all_curves(data),
        "fewer than two trials have recorded an epoch",
    );
    add("accuracy", bars::accuracy(data), none_done);
    add("train_time", bars::train_time(data), none_done);
    add("accuracy_vs_time", scatter::accuracy_vs_time(data), none_done);
    add(
        "hyperparameters",
        scatter::hyperparameters(data),
        "no numeric hyperparameter varies across trials with a validation accuracy",
    );
    add("class_accuracy", heatmaps::class_accuracy(data), none_done);
    add("confusion", heatmaps::confusion(data), none_done);
    match images {
        None => add("samples", Ok(None), "--no-samples"),
        Some(Err(e)) => out.skipped.push(("samples", e)),
        Some(Ok(set)) => add("samples", samples::samples(data, set), none_done),
    }
    out
}

/// Writes each chart as `<name>.png` and `<name>.svg` under `dir`; returns the paths.
pub fn write(charts: &Charts, dir: &Path) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut paths = Vec::new();
    for c in &charts.charts {
        let png = dir.join(format!("{}.png", c.name));
        let svg = dir.join(format!("{}.svg", c.name));
        std::fs::write(&png, &c.png).with_context(|| format!("{}", png.display()))?;
        std::fs::write(&svg, &c.svg).with_context(|| format!("{}", svg.display()))?;
        paths.push((png, svg));
    }
    Ok(paths)
}

/// The default output folder: `<db dir>/plots/<sweep>`.
pub fn default_dir(db: &Path, sweep: &str) -> PathBuf {
    db.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("plots")
        .join(sweep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_folder_is_beside_the_database() {
        assert_eq!(
            default_dir(Path::new("results/results.db"), "s"),
            Path::new("results/plots/s")
        );
        assert_eq!(default_dir(Path::new("r.db"), "s"), Path::new("./plots/s"));
    }

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
