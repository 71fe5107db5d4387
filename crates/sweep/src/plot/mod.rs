//! Charts of a sweep, drawn with plotters from the results database: loss curves (per trial,
//! and every trial on one chart with the pruned ones greyed), test accuracy, training time,
//! accuracy against time with its Pareto front, the best validation accuracy against each
//! hyperparameter, per-class accuracy, the best trial's
//! confusion matrix and its predictions on sample test images. Each chart is rendered twice,
//! to PNG and to SVG, with a bundled font (no system fonts needed).

mod style;

use crate::db::Db;
use crate::report::{duration, mean_std};
use crate::Error;
use anyhow::{anyhow, Context};
use plotters::coord::Shift;
use plotters::element::BitMapElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;
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
        loss_curves(data),
        "no trial has recorded an epoch",
    );
    add(
        "all_curves",
        all_curves(data),
        "fewer than two trials have recorded an epoch",
    );
    add("accuracy", accuracy(data), none_done);
    add("train_time", train_time(data), none_done);
    add("accuracy_vs_time", accuracy_vs_time(data), none_done);
    add(
        "hyperparameters",
        hyperparameters(data),
        "no numeric hyperparameter varies across trials with a validation accuracy",
    );
    add("class_accuracy", class_accuracy(data), none_done);
    add("confusion", confusion(data), none_done);
    match images {
        None => add("samples", Ok(None), "--no-samples"),
        Some(Err(e)) => out.skipped.push(("samples", e)),
        Some(Ok(set)) => add("samples", samples(data, set), none_done),
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

// ---------------------------------------------------------------------------------------
// Loss curves: one panel per trial

/// At most this many panels (the best trials); the title says when some were left out.
const MAX_PANELS: usize = 24;

struct LossCurves<'a> {
    sweep: &'a str,
    trials: Vec<&'a TrialData>,
    total: usize,
    cols: usize,
    rows: usize,
    y: (f64, f64),
    max_epoch: i64,
}

fn loss_curves(data: &SweepData) -> anyhow::Result<Option<Chart>> {
    let with_epochs: Vec<&TrialData> = data
        .trials
        .iter()
        .filter(|t| !t.epochs.is_empty())
        .collect();
    if with_epochs.is_empty() {
        return Ok(None);
    }
    let total = with_epochs.len();
    let trials: Vec<&TrialData> = with_epochs.into_iter().take(MAX_PANELS).collect();
    let n = trials.len();
    let cols = match n {
        1 => 1,
        2..=4 => 2,
        5..=9 => 3,
        _ => 4,
    };
    let rows = n.div_ceil(cols);
    // One y range for every panel, so the panels compare at a glance. Diverged trials do not
    // stretch it: their curves run off the top (clamped to it).
    let finite = |t: &&TrialData| {
        t.epochs
            .iter()
            .flat_map(|e| [e.train_loss, e.valid_loss])
            .filter(|x| x.is_finite())
            .collect::<Vec<f64>>()
    };
    let mut vals: Vec<f64> = trials
        .iter()
        .filter(|t| t.status != "diverged")
        .flat_map(finite)
        .collect();
    if vals.is_empty() {
        vals = trials.iter().flat_map(finite).collect();
    }
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        let pad = ((hi - lo) * 0.08).max(0.02);
        ((lo - pad).max(0.0), hi + pad)
    } else {
        (0.0, 3.0)
    };
    let max_epoch = trials
        .iter()
        .flat_map(|t| t.epochs.iter().map(|e| e.epoch))
        .max()
        .unwrap_or(1)
        .max(1);
    let chart = LossCurves {
        sweep: &data.name,
        trials,
        total,
        cols,
        rows,
        y: (lo, hi),
        max_epoch,
    };
    let title = format!(
        "Training and validation loss per epoch, sweep `{}`",
        data.name
    );
    render("loss_curves", title, &chart).map(Some)
}

impl Draw for LossCurves<'_> {
    fn size(&self) -> (u32, u32) {
        let w = if self.cols == 1 { 800 } else { 1200 };
        (w, 110 + self.rows as u32 * 340)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DResult
    where
        DB::ErrorType: 'static,
    {
        let title = if self.total > self.trials.len() {
            format!(
                "Loss per epoch, sweep `{}` (the best {} of {} trials)",
                self.sweep,
                self.trials.len(),
                self.total
            )
        } else {
            format!("Loss per epoch, sweep `{}`", self.sweep)
        };
        let body = header(root, &title, None)?;
        // The legend, once for every panel.
        let (w, _) = body.dim_in_pixel();
        let items: [(&str, RGBColor, bool); 3] = [
            ("training loss", TRAIN, false),
            ("validation loss", VALID, false),
            ("best epoch (lowest validation loss)", VALID, true),
        ];
        let widths: Vec<u32> = items
            .iter()
            .map(|(s, _, _)| 40 + text_width(s, LABEL) + 30)
            .collect();
        let mut x = (w as i32 - widths.iter().sum::<u32>() as i32) / 2;
        for ((s, c, marker), wd) in items.iter().zip(&widths) {
            if *marker {
                body.draw(&Circle::new((x + 16, 10), 6, c.filled()))?;
                body.draw(&Circle::new((x + 16, 10), 6, BLACK.stroke_width(1)))?;
            } else {
                body.draw(&PathElement::new(
                    vec![(x, 10), (x + 32, 10)],
                    c.stroke_width(3),
                ))?;
            }
            body.draw_text(s, &anchored(LABEL, HPos::Left, VPos::Center), (x + 40, 10))?;
            x += *wd as i32;
        }
        let grid = body.split_vertically(30).1;
        let panels = grid.split_evenly((self.rows, self.cols));
        for (t, panel) in self.trials.iter().zip(panels) {
            self.panel(t, &panel.margin(4, 8, 8, 12))?;
        }
        Ok(())
    }
}

impl LossCurves<'_> {
    fn panel<DB: DrawingBackend>(&self, t: &TrialData, area: &DrawingArea<DB, Shift>) -> DResult
    where
        DB::ErrorType: 'static,
    {
        // Two caption lines: the trial, then its outcome (never cut off by a long label).
        let (w, _) = area.dim_in_pixel();
        let (status, color) = match (t.status.as_str(), t.test_acc) {
            ("done", Some(a)) => (format!("test accuracy {}", pct(a)), GREY),
            (s, _) => (s.to_string(), BAD),
        };
        let centre = w as i32 / 2 + 26;
        area.draw_text(
            &fit(&t.label, 16.0, w - 60),
            &anchored(16.0, HPos::Center, VPos::Top),
            (centre, 2),
        )?;
        area.draw_text(
            &status,
            &anchored(LABEL, HPos::Center, VPos::Top).color(&color),
            (centre, 24),
        )?;
        let area = area.split_vertically(42).1;
        let (lo, hi) = self.y;
        let e = self.max_epoch;
        let mut chart = ChartBuilder::on(&area)
            .margin(4)
            .x_label_area_size(40)
            .y_label_area_size(52)
            .build_cartesian_2d(0..e + 1, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("loss")
            .x_labels((e as usize + 2).min(11))
            .x_label_formatter(&|x| {
                if *x >= 1 && *x <= e {
                    x.to_string()
                } else {
                    String::new()
                }
            })
            .y_labels(6)
            .y_label_formatter(&|y| format!("{y:.2}"))
            .label_style(font(LABEL))
            .axis_desc_style(font(LABEL))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()?;
        let clamp = |v: f64| {
            if v.is_finite() {
                v.clamp(lo, hi)
            } else {
                hi
            }
        };
        let train: Vec<(i64, f64)> = t
            .epochs
            .iter()
            .map(|r| (r.epoch, clamp(r.train_loss)))
            .collect();
        let valid: Vec<(i64, f64)> = t
            .epochs
            .iter()
            .map(|r| (r.epoch, clamp(r.valid_loss)))
            .collect();
        for (pts, c) in [(&train, TRAIN), (&valid, VALID)] {
            chart.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?;
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))?;
        }
        if let Some(best) = t.best_epoch {
            if let Some(p) = valid.iter().find(|p| p.0 == best) {
                chart.draw_series(DashedLineSeries::new(
                    vec![(best, lo), (best, hi)],
                    5,
                    4,
                    GREY.stroke_width(1),
                ))?;
                chart.draw_series(std::iter::once(
                    EmptyElement::at(*p)
                        + Circle::new((0, 0), 7, VALID.filled())
                        + Circle::new((0, 0), 7, BLACK.stroke_width(1)),
                ))?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Horizontal bar charts: test accuracy and training time

/// One bar: a trial, or the seeds of one configuration (mean, std and each value).
struct Bar {
    label: String,
    values: Vec<f64>,
    note: Option<String>,
}

impl Bar {
    fn mean_std(&self) -> (f64, f64) {
        mean_std(&self.values)
    }
}

/// The bars of a sweep, best test accuracy first: per trial, or per configuration with the
/// mean over seeds when seeds repeat. Trials that failed or diverged get an empty bar.
fn bars(data: &SweepData, value: impl Fn(&TrialData) -> Option<f64>) -> (Vec<Bar>, bool) {
    let by_group = data.seeds_repeat();
    let mut out: Vec<Bar> = Vec::new();
    for t in data.done() {
        let Some(v) = value(t) else { continue };
        if by_group {
            if let Some(b) = out.iter_mut().find(|b| b.label == t.group) {
                b.values.push(v);
                continue;
            }
            out.push(Bar {
                label: t.group.clone(),
                values: vec![v],
                note: None,
            });
        } else {
            out.push(Bar {
                label: t.label.clone(),
                values: vec![v],
                note: None,
            });
        }
    }
    if by_group {
        // `done()` is best trial first; order the groups by their mean instead.
        out.sort_by(|a, b| b.mean_std().0.total_cmp(&a.mean_std().0));
    }
    for t in &data.trials {
        if matches!(t.status.as_str(), "failed" | "diverged") {
            out.push(Bar {
                label: t.label.clone(),
                values: Vec::new(),
                note: Some(t.status.clone()),
            });
        }
    }
    (out, by_group)
}

struct BarChart {
    title: String,
    subtitle: String,
    x_desc: String,
    bars: Vec<Bar>,
    /// Bar-end labels.
    fmt: fn(f64) -> String,
    /// Axis tick labels.
    tick: fn(f64) -> String,
    color: RGBColor,
    /// A dashed reference line, e.g. chance accuracy (named in the subtitle).
    reference: Option<f64>,
    /// The axis ends here at most (accuracy: 100%); bar labels may then run into the margin.
    cap: Option<f64>,
}

impl Draw for BarChart {
    fn size(&self) -> (u32, u32) {
        (1100, (150 + 38 * self.bars.len() as u32 + 60).max(340))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DResult
    where
        DB::ErrorType: 'static,
    {
        let body = header(root, &self.title, Some(&self.subtitle))?;
        let n = self.bars.len() as i32;
        let label_w = self
            .bars
            .iter()
            .map(|b| text_width(&b.label, LABEL))
            .max()
            .unwrap_or(0)
            .clamp(60, 440)
            + 16;
        let max = self
            .bars
            .iter()
            .flat_map(|b| {
                let (m, s) = b.mean_std();
                b.values.iter().copied().chain([m + s])
            })
            .fold(0.0, f64::max);
        // Room after the longest bar for its value label.
        let x_max = nice_ceiling(max * 1.28).min(self.cap.unwrap_or(f64::INFINITY));
        let labels: Vec<String> = self
            .bars
            .iter()
            .map(|b| fit(&b.label, LABEL, label_w - 16))
            .collect();
        let mut chart = ChartBuilder::on(&body)
            .margin_left(10)
            .margin_right(if self.cap.is_some() { 170 } else { 30 })
            .margin_bottom(10)
            .x_label_area_size(50)
            .y_label_area_size(label_w)
            .build_cartesian_2d(0.0..x_max, (0..n - 1).into_segmented())?;
        let (fmt, tick) = (self.fmt, self.tick);
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(self.x_desc.as_str())
            .x_labels(8)
            .x_label_formatter(&|x| tick(*x))
            .y_labels(self.bars.len().max(1))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) if *i >= 0 && *i < n => {
                    labels[(n - 1 - *i) as usize].clone()
                }
                _ => String::new(),
            })
            .label_style(font(LABEL))
            .axis_desc_style(font(AXIS))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()?;
        for (rank, b) in self.bars.iter().enumerate() {
            let i = n - 1 - rank as i32;
            let c = || SegmentValue::CenterOf(i);
            if b.values.is_empty() {
                chart.draw_series(std::iter::once(Text::new(
                    b.note.clone().unwrap_or_default(),
                    (0.0, c()),
                    anchored(LABEL, HPos::Left, VPos::Center).color(&BAD),
                )))?;
                continue;
            }
            let (m, s) = b.mean_std();
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (m, SegmentValue::Exact(i + 1)),
                ],
                self.color.filled(),
            );
            bar.set_margin(5, 5, 0, 0);
            chart.draw_series(std::iter::once(bar))?;
            let mut end = m;
            let text = if b.values.len() > 1 {
                // Mean ± std, with a whisker and a dot per seed.
                let whisker = BLACK.stroke_width(2);
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(m - s, c()), (m + s, c())],
                    whisker,
                )))?;
                for x in [m - s, m + s] {
                    chart.draw_series(std::iter::once(
                        EmptyElement::at((x, c()))
                            + PathElement::new(vec![(0, -7), (0, 7)], whisker),
                    ))?;
                }
                chart.draw_series(b.values.iter().map(|v| {
                    EmptyElement::at((*v, c()))
                        + Circle::new((0, 0), 4, WHITE.filled())
                        + Circle::new((0, 0), 4, BLACK.stroke_width(1))
                }))?;
                end = b.values.iter().copied().fold(m + s, f64::max);
                format!("{} ± {} (n={})", fmt(m), fmt(s), b.values.len())
            } else {
                fmt(m)
            };
            chart.draw_series(std::iter::once(
                EmptyElement::at((end, c()))
                    + Text::new(text, (8, 0), anchored(LABEL, HPos::Left, VPos::Center)),
            ))?;
        }
        if let Some(v) = self.reference.filter(|v| *v < x_max) {
            chart.draw_series(DashedLineSeries::new(
                vec![(v, SegmentValue::Exact(0)), (v, SegmentValue::Exact(n))],
                6,
                4,
                BAD.stroke_width(2),
            ))?;
        }
        Ok(())
    }
}

fn accuracy(data: &SweepData) -> anyhow::Result<Option<Chart>> {
    let (bars, by_group) = bars(data, |t| t.test_acc);
    if bars.iter().all(|b| b.values.is_empty()) {
        return Ok(None);
    }
    let subtitle = if by_group {
        "bars: mean over seeds, whiskers: ± 1 std, dots: each seed; best first; dashed: chance (10%)"
    } else {
        "best first; dashed: chance (10%)"
    };
    let chart = BarChart {
        title: format!("Test accuracy, sweep `{}`", data.name),
        subtitle: subtitle.into(),
        x_desc: "test accuracy".into(),
        bars,
        fmt: |x| format!("{:.1}%", x * 100.0),
        tick: |x| format!("{:.0}%", x * 100.0),
        color: BAR,
        reference: Some(0.1),
        cap: Some(1.0),
    };
    let title = chart.title.clone();
    render("accuracy", title, &chart).map(Some)
}


fn train_time(data: &SweepData) -> anyhow::Result<Option<Chart>> {
    let (bars, by_group) = bars(data, |t| t.train_seconds);
    if bars.iter().all(|b| b.values.is_empty()) {
        return Ok(None);
    }
    let subtitle = if by_group {
        "mean over seeds ± 1 std, in the order of the accuracy chart (best first)"
    } else {
        "in the order of the accuracy chart (best first)"
    };
    let chart = BarChart {
        title: format!("Training time, sweep `{}`", data.name),
        subtitle: subtitle.into(),
        x_desc: "training time (all epochs, without the test evaluation)".into(),
        bars,
        fmt: duration,
        tick: short_duration,
        color: BAR_TIME,
        reference: None,
        cap: None,
    };
    let title = chart.title.clone();
    render("train_time", title, &chart).map(Some)
}

// ---------------------------------------------------------------------------------------
// Accuracy against training time

struct Scatter<'a> {
    sweep: &'a str,
    points: Vec<(&'a TrialData, f64, f64)>,
    archs: Vec<String>,
    /// Indices into `points` of the Pareto front, fastest first.
    front: Vec<usize>,
}

fn accuracy_vs_time(data: &SweepData) -> anyhow::Result<Option<Chart>> {
    let points: Vec<(&TrialData, f64, f64)> = data
        .done()
        .into_iter()
        .filter_map(|t| Some((t, t.train_seconds?, t.test_acc?)))
        .collect();
    if points.is_empty() {
        return Ok(None);
    }
    let mut archs: Vec<String> = Vec::new();
    for (t, _, _) in &points {
        let a = arch(t);
        if !archs.contains(&a) {
            archs.push(a);
        }
    }
    let front = crate::report::pareto_front(&points.iter().map(|p| (p.1, p.2)).collect::<Vec<_>>());
    let chart = Scatter {
        sweep: &data.name,
        points,
        archs,
        front,
    };
    let title = format!(
        "Test accuracy against training time, with the Pareto front, sweep `{}`",
        data.name
    );
    render("accuracy_vs_time", title, &chart).map(Some)
}

fn arch(t: &TrialData) -> String {
    t.config
        .get("arch")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string()
}

impl Draw for Scatter<'_> {
    fn size(&self) -> (u32, u32) {
        (1000, 680)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DResult
    where
        DB::ErrorType: 'static,
    {
        let body = header(
            root,
            &format!(
                "Test accuracy against training time, sweep `{}`",
                self.sweep
            ),
            Some(
                "one point per finished trial (its id); up and left is better; \
                 ringed and joined: the Pareto front",
            ),
        )?;
        let xs: Vec<f64> = self.points.iter().map(|p| p.1).collect();
        let ys: Vec<f64> = self.points.iter().map(|p| p.2).collect();
        let span = |v: &[f64], min_pad: f64| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let pad = ((hi - lo) * 0.12).max(min_pad);
            ((lo - pad).max(0.0), hi + pad)
        };
        // A single trial, or trials all as fast: a few seconds around them, not a zero span.
        let (x0, x1) = span(&xs, xs[0].abs() * 0.2 + 1.0);
        let (y0, y1) = span(&ys, 0.02);
        let (ticks, step) = time_ticks(x0, x1, 9);
        let mut chart = ChartBuilder::on(&body)
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(
                Ticked {
                    lo: x0,
                    hi: x1,
                    ticks,
                },
                y0..y1.min(1.0),
            )?;
        chart
            .configure_mesh()
            .x_desc("training time")
            .y_desc("test accuracy")
            .x_label_formatter(&|x| time_label(*x, step))
            .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
            .label_style(font(LABEL))
            .axis_desc_style(font(AXIS))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()?;
        // The front as a staircase: the best accuracy reached within each training time.
        let front: Vec<(f64, f64)> = self
            .front
            .iter()
            .map(|&i| (self.points[i].1, self.points[i].2))
            .collect();
        let mut stairs = Vec::new();
        for (k, p) in front.iter().enumerate() {
            if k > 0 {
                stairs.push((p.0, front[k - 1].1));
            }
            stairs.push(*p);
        }
        chart
            .draw_series(LineSeries::new(stairs, GOOD.stroke_width(2)))?
            .label("Pareto front")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], GOOD.stroke_width(2)));
        chart.draw_series(
            front
                .iter()
                .map(|p| Circle::new(*p, 11, GOOD.stroke_width(3))),
        )?;
        for (k, a) in self.archs.iter().enumerate() {
            let c = PALETTE[k % PALETTE.len()];
            chart
                .draw_series(self.points.iter().filter(|p| arch(p.0) == *a).map(|p| {
                    EmptyElement::at((p.1, p.2))
                        + Circle::new((0, 0), 7, c.filled())
                        + Circle::new((0, 0), 7, BLACK.stroke_width(1))
                        + Text::new(
                            format!("#{}", p.0.id),
                            (10, -4),
                            anchored(LABEL, HPos::Left, VPos::Bottom),
                        )
                }))?
                .label(a.as_str())
                .legend(move |(x, y)| Circle::new((x + 8, y), 6, c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(font(LABEL))
            .background_style(WHITE.mix(0.9))
            .border_style(GREY)
            .margin(12)
            .draw()?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Every trial's curves on one chart, pruned ones greyed, the pruning rule's epochs marked


struct AllCurves<'a> {
    sweep: &'a str,
    /// In drawing order: pruned trials first, the best trial last (on top).
    trials: Vec<&'a TrialData>,
    /// Epochs at which the pruning rule decided for some trial (ASHA: its rungs).
    rungs: Vec<i64>,
    max_epoch: i64,
    loss: (f64, f64),
    acc: (f64, f64),
    pruned: usize,
}


fn all_curves(data: &SweepData) -> anyhow::Result<Option<Chart>> {
    let with: Vec<&TrialData> = data
        .trials
        .iter()
        .filter(|t| !t.epochs.is_empty())
        .collect();
    // One trial: the loss_curves chart already shows it alone.
    if with.len() < 2 {
        return Ok(None);
    }
    let mut rungs: Vec<i64> = with
        .iter()
        .flat_map(|t| t.decisions.iter().map(|d| d.0))
        .collect();
    rungs.sort_unstable();
    rungs.dedup();
    // Diverged trials do not stretch the loss axis: their curves run off the top.
    let loss = padded(
        with.iter()
            .filter(|t| t.status != "diverged")
            .flat_map(|t| t.epochs.iter().map(|e| e.valid_loss)),
        0.02,
    )
    .or_else(|| {
        padded(
            with.iter()
                .flat_map(|t| t.epochs.iter().map(|e| e.valid_loss)),
            0.02,
        )
    })
    .map(|(lo, hi)| (lo.max(0.0), hi))
    .unwrap_or((0.0, 3.0));
    let acc = padded(
        with.iter()
            .flat_map(|t| t.epochs.iter().map(|e| e.valid_acc)),
        0.02,
    )
    .map(|(lo, hi)| (lo.max(0.0), hi.min(1.0)))
    .unwrap_or((0.0, 1.0));
    let max_epoch = with
        .iter()
        .flat_map(|t| t.epochs.iter().map(|e| e.epoch))
        .max()
        .unwrap_or(1)
        .max(1);
    // `data.trials` is best first: pruned ones under the rest, the best drawn last.
    let (mut trials, mut rest): (Vec<&TrialData>, Vec<&TrialData>) =
        with.into_iter().partition(|t| t.status == "pruned");
    let pruned = trials.len();
    rest.reverse();
    trials.extend(rest);
    let chart = AllCurves {
        sweep: &data.name,
        trials,
        rungs,
        max_epoch,
        loss,
        acc,
        pruned,
    };
    let title = format!("Every trial's validation curves, sweep `{}`", data.name);
    render("all_curves", title, &chart).map(Some)
}

impl Draw for AllCurves<'_> {
    fn size(&self) -> (u32, u32) {
        (1400, 640)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DResult
    where
        DB::ErrorType: 'static,
    {
        let mut sub = format!(
            "one line per trial ({}), coloured best first",
            self.trials.len()
        );
        if self.pruned > 0 {
            sub += &format!("; grey: the {} pruned, × where they stopped", self.pruned);
        }
        if !self.rungs.is_empty() {
            sub += "; dashed: epochs where the pruning rule decided (ASHA's rungs)";
        }
        let body = header(
            root,
            &format!("Every trial's validation curves, sweep `{}`", self.sweep),
            Some(&sub),
        )?;
        let (left, right) = body.split_horizontally(700);
        self.panel(
            &left,
            "validation loss",
            self.loss,
            |e| e.valid_loss,
            |y| format!("{y:.2}"),
        )?;
        self.panel(
            &right,
            "validation accuracy",
            self.acc,
            |e| e.valid_acc,
            |y| format!("{:.0}%", y * 100.0),
        )?;
        Ok(())
    }
}

impl AllCurves<'_> {
    fn panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        what: &str,
        (lo, hi): (f64, f64),
        value: fn(&EpochRow) -> f64,
        tick: fn(f64) -> String,
    ) -> DResult
    where
        DB::ErrorType: 'static,
    {
        let e = self.max_epoch;
        let mut chart = ChartBuilder::on(area)
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0..e + 1, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(what)
            .x_labels((e as usize + 2).min(11))
            .x_label_formatter(&|x| {
                if *x >= 1 && *x <= e {
                    x.to_string()
                } else {
                    String::new()
                }
            })
            .y_labels(6)
            .y_label_formatter(&|y| tick(*y))
            .label_style(font(LABEL))
            .axis_desc_style(font(AXIS))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()?;
        for r in &self.rungs {
            chart.draw_series(DashedLineSeries::new(
                vec![(*r, lo), (*r, hi)],
                6,
                4,
                GREY.stroke_width(1),
            ))?;
        }
        let clamp = |v: f64| if v.is_finite() { v.clamp(lo, hi) } else { hi };
        let n = self.trials.len() - self.pruned;
        for (k, t) in self.trials.iter().enumerate() {
            let pts: Vec<(i64, f64)> = t
                .epochs
                .iter()
                .map(|r| (r.epoch, clamp(value(r))))
                .collect();
            if t.status == "pruned" {
                chart.draw_series(LineSeries::new(pts.iter().copied(), PRUNED.stroke_width(1)))?;
                chart.draw_series(pts.iter().map(|p| Circle::new(*p, 2, PRUNED.filled())))?;
                for (epoch, stop) in &t.decisions {
                    if let Some(p) = pts.iter().find(|p| p.0 == *epoch).filter(|_| *stop) {
                        chart.draw_series(std::iter::once(Cross::new(
                            *p,
                            5,
                            GREY.stroke_width(2),
                        )))?;
                    }
                }
                continue;
            }
            // Rank among the trials that went on: 0 is the best (drawn last).
            let rank = n - 1 - (k - self.pruned);
            let c = PALETTE[rank % PALETTE.len()];
            chart.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?;
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))?;
            if rank < 3 {
                if let Some(last) = pts.last() {
                    chart.draw_series(std::iter::once(
                        EmptyElement::at(*last)
                            + Text::new(
                                format!("#{}", t.id),
                                (8, 0),
                                anchored(LABEL, HPos::Left, VPos::Center).color(&c),
                            ),
                    ))?;
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The objective against each hyperparameter that varies


struct HyperPanel {
    key: String,
    log: bool,
    /// (value, best validation accuracy, status).
    points: Vec<(f64, f64, &'static str)>,
}

struct Hyper<'a> {
    sweep: &'a str,
    panels: Vec<HyperPanel>,
    y: (f64, f64),
}

const HYPER_COLS: usize = 3;

fn hyperparameters(data: &SweepData) -> anyhow::Result<Option<Chart>> {
    let Some(first) = data.trials.first() else {
        return Ok(None);
    };
    let scored: Vec<(&TrialData, f64)> = data
        .trials
        .iter()
        .filter_map(|t| Some((t, t.best_valid_acc()?)))
        .collect();
    let mut panels = Vec::new();
    // Numeric settings only (a string such as `arch` has no axis order); the seed is not a
    // hyperparameter.
    for key in first.config.keys().filter(|k| k.as_str() != "seed") {
        let values: Option<Vec<f64>> = data
            .trials
            .iter()
            .map(|t| t.config.get(key).and_then(Value::as_f64))
            .collect();
        let Some(values) = values else { continue };
        if values.iter().all(|v| *v == values[0]) {
            continue;
        }
        let points: Vec<(f64, f64, &'static str)> = scored
            .iter()
            .filter_map(|(t, acc)| {
                let kind = match t.status.as_str() {
                    "done" => "done",
                    "pruned" => "pruned",
                    _ => "other",
                };
                Some((t.config.get(key)?.as_f64()?, *acc, kind))
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        // The space's own scale where it has one; else the values' spread decides.
        let log = match data.log_scale.get(key) {
            Some(&log) => log && values.iter().all(|v| *v > 0.0),
            None => log_axis(&values),
        };
        panels.push(HyperPanel {
            key: key.clone(),
            log,
            points,
        });
    }
    if panels.is_empty() {
        return Ok(None);
    }
    let y = padded(scored.iter().map(|s| s.1), 0.02)
        .map(|(lo, hi)| (lo.max(0.0), hi.min(1.0)))
        .unwrap_or((0.0, 1.0));
    let chart = Hyper {
        sweep: &data.name,
        panels,
        y,
    };
    let title = format!(
        "Best validation accuracy against each hyperparameter, sweep `{}`",
        data.name
    );
    render("hyperparameters", title, &chart).map(Some)
}

impl Draw for Hyper<'_> {
    fn size(&self) -> (u32, u32) {
        let n = self.panels.len();
        let cols = n.min(HYPER_COLS) as u32;
        let rows = n.div_ceil(HYPER_COLS) as u32;
        ((cols * 440).max(900), 140 + rows * 380)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DResult
    where
        DB::ErrorType: 'static,
    {
        let body = header(
            root,
            &format!(
                "Best validation accuracy against each hyperparameter, sweep `{}`",
                self.sweep
            ),
            Some("one point per trial (its best epoch); grey: pruned, red: did not finish; log axes for log_uniform dimensions"),
        )?;
        let (w, _) = body.dim_in_pixel();
        let items = [
            ("finished", BAR),
            ("pruned", PRUNED),
            ("did not finish", BAD),
        ];
        let widths: Vec<u32> = items
            .iter()
            .map(|(s, _)| 24 + text_width(s, LABEL) + 30)
            .collect();
        let mut x = (w as i32 - widths.iter().sum::<u32>() as i32) / 2;
        for ((s, c), wd) in items.iter().zip(&widths) {
            body.draw(&Circle::new((x + 8, 10), 6, c.filled()))?;
            body.draw_text(s, &anchored(LABEL, HPos::Left, VPos::Center), (x + 24, 10))?;
            x += *wd as i32;
        }
        let grid = body.split_vertically(30).1;
        let n = self.panels.len();
        let cols = n.min(HYPER_COLS);
        let areas = grid.split_evenly((n.div_ceil(HYPER_COLS), cols));
        for (p, area) in self.panels.iter().zip(areas) {
            self.panel(p, &area.margin(4, 8, 8, 12))?;
        }
        Ok(())
    }
}

impl Hyper<'_> {
    fn panel<DB: DrawingBackend>(&self, p: &HyperPanel, area: &DrawingArea<DB, Shift>) -> DResult
    where
        DB::ErrorType: 'static,
    {
        let xs: Vec<f64> = p.points.iter().map(|q| q.0).collect();
        // A log axis is drawn as log10 of the value on a linear one, ticked at round values.
        let to_axis = |v: f64| if p.log { v.log10() } else { v };
        let (lo, hi) = padded(xs.iter().map(|v| to_axis(*v)), 1e-9).unwrap_or((0.0, 1.0));
        let (lo, hi) = if hi - lo < 1e-6 {
            (lo - 0.5, hi + 0.5)
        } else {
            (lo, hi)
        };
        let ticks: Vec<f64> = if p.log {
            log_ticks(10f64.powf(lo), 10f64.powf(hi))
                .into_iter()
                .map(f64::log10)
                .collect()
        } else {
            plotters::coord::types::RangedCoordf64::from(lo..hi).key_points(6usize)
        };
        let (y0, y1) = self.y;
        let mut chart = ChartBuilder::on(area)
            .margin(6)
            .caption(
                format!("{}{}", p.key, if p.log { " (log axis)" } else { "" }),
                font(16.0),
            )
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(Ticked { lo, hi, ticks }, y0..y1)?;
        let log = p.log;
        chart
            .configure_mesh()
            .x_desc(p.key.as_str())
            .y_desc("best validation accuracy")
            // Linear ticks are multiples of a step: the one at zero comes out as 1e-18 or so.
            .x_label_formatter(&|x| {
                if log {
                    axis_number(10f64.powf(*x))
                } else if x.abs() < (hi - lo) * 1e-9 {
                    "0".into()
                } else {
                    axis_number(*x)
                }
            })
            .y_labels(6)
            .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
            .label_style(font(LABEL))
            .axis_desc_style(font(LABEL))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()?;
        // Pruned first, so the finished trials sit on top.
        for kind in ["pruned", "other", "done"] {
            let c = match kind {
                "done" => BAR,
                "pruned" => PRUNED,
                _ => BAD,
            };
            chart.draw_series(p.points.iter().filter(|q| q.2 == kind).map(|q| {
                EmptyElement::at((to_axis(q.0), q.1.clamp(y0, y1)))
                    + Circle::new((0, 0), 6, c.filled())
                    + Circle::new((0, 0), 6, GREY.stroke_width(1))
            }))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Heatmaps: per-class accuracy and the confusion matrix

struct Heatmap {
    title: String,
    subtitle: String,
    rows: Vec<String>,
    cols: Vec<String>,
    /// Colour position in [0, 1] per cell.
    shade: Vec<Vec<f64>>,
    text: Vec<Vec<String>>,
    stops: &'static [(u8, u8, u8)],
    row_desc: String,
    col_desc: String,
    /// Labels of the colour scale's ends.
    scale: (&'static str, &'static str, String),
    /// Outline the diagonal (the correct predictions of a confusion matrix).
    diagonal: bool,
    cell: (u32, u32),
}


impl Heatmap {
    fn label_w(&self) -> u32 {
        let longest = self
            .rows
            .iter()
            .map(|r| text_width(r, LABEL))
            .max()
            .unwrap_or(0);
        longest.clamp(40, 420) + 20
    }

    /// Height of the colour scale.
    fn scale_h(&self) -> u32 {
        (self.rows.len() as u32 * self.cell.1).clamp(150, 400)
    }

    /// Width of the row labels, grid and colour scale.
    fn content_w(&self) -> u32 {
        34 + self.label_w() + self.cols.len() as u32 * self.cell.0 + 140
    }
}

impl Draw for Heatmap {
    fn size(&self) -> (u32, u32) {
        let titles = text_width(&self.title, TITLE).max(text_width(&self.subtitle, SUBTITLE)) + 60;
        let grid_h = (self.rows.len() as u32 * self.cell.1).max(self.scale_h());
        (self.content_w().max(titles), HEADER_H + 50 + grid_h + 30)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DResult
    where
        DB::ErrorType: 'static,
    {
        let body = header(root, &self.title, Some(&self.subtitle))?;
        let (cw, ch) = self.cell;
        let nr = self.rows.len() as i32;
        let nc = self.cols.len() as i32;
        let (cw, ch) = (cw as i32, ch as i32);
        let label_w = self.label_w() as i32;
        // Axis title at the far left (rotated), row labels, then the grid; all centred.
        let x0 = (self.size().0 as i32 - self.content_w() as i32) / 2;
        let left = x0 + 34 + label_w;
        let grid_w = nc * cw;
        let top = 50;
        let x_centre = left + grid_w / 2;
        body.draw_text(
            &self.col_desc,
            &anchored(AXIS, HPos::Center, VPos::Top),
            (x_centre, 0),
        )?;
        body.draw_text(
            &self.row_desc,
            &font(AXIS)
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Center, VPos::Top)),
            (x0 + 6, top + nr * ch / 2),
        )?;
        for (j, c) in self.cols.iter().enumerate() {
            let c = fit(c, LABEL, cw as u32 - 4);
            body.draw_text(
                &c,
                &anchored(LABEL, HPos::Center, VPos::Bottom),
                (left + j as i32 * cw + cw / 2, top - 6),
            )?;
        }
        for (i, r) in self.rows.iter().enumerate() {
            let y = top + i as i32 * ch;
            let r = fit(r, LABEL, label_w as u32 - 12);
            body.draw_text(
                &r,
                &anchored(LABEL, HPos::Right, VPos::Center),
                (left - 10, y + ch / 2),
            )?;
            for j in 0..nc as usize {
                let x = left + j as i32 * cw;
                let color = colormap(self.stops, self.shade[i][j]);
                body.draw(&Rectangle::new([(x, y), (x + cw, y + ch)], color.filled()))?;
                body.draw(&Rectangle::new(
                    [(x, y), (x + cw, y + ch)],
                    WHITE.stroke_width(1),
                ))?;
                body.draw_text(
                    &self.text[i][j],
                    &anchored(LABEL, HPos::Center, VPos::Center).color(&ink_on(&color)),
                    (x + cw / 2, y + ch / 2),
                )?;
            }
            if self.diagonal && i < nc as usize {
                let x = left + i as i32 * cw;
                body.draw(&Rectangle::new(
                    [(x + 1, y + 1), (x + cw - 1, y + ch - 1)],
                    BLACK.stroke_width(2),
                ))?;
            }
        }
        // The colour scale, right of the grid.
        let sx = left + grid_w + 30;
        let sh = self.scale_h() as i32;
        let steps = 60;
        for k in 0..steps {
            let y0 = top + sh - (k + 1) * sh / steps;
            let y1 = top + sh - k * sh / steps;
            let c = colormap(self.stops, (k as f64 + 0.5) / steps as f64);
            body.draw(&Rectangle::new([(sx, y0), (sx + 18, y1)], c.filled()))?;
        }
        body.draw(&Rectangle::new(
            [(sx, top), (sx + 18, top + sh)],
            GREY.stroke_width(1),
        ))?;
        let small = anchored(12.0, HPos::Left, VPos::Center);
        body.draw_text(self.scale.1, &small, (sx + 24, top))?;
        body.draw_text(self.scale.0, &small, (sx + 24, top + sh))?;
        body.draw_text(
            &self.scale.2,
            &font(LABEL)
                .transform(FontTransform::Rotate90)
                .pos(Pos::new(HPos::Center, VPos::Top)),
            (sx + 72, top + sh / 2),
        )?;
        Ok(())
    }
}

fn class_accuracy(data: &SweepData) -> anyhow::Result<Option<Chart>> {
    let trials: Vec<&TrialData> = data
        .done()
        .into_iter()
        .filter(|t| t.class_acc.len() == data.classes.len())
        .take(40)
        .collect();
    if trials.is_empty() {
        return Ok(None);
    }
    let chart = Heatmap {
        title: format!("Per-class test accuracy, sweep `{}`", data.name),
        subtitle: "trials best first (overall test accuracy in brackets); cells: % of the class's test images classified correctly".into(),
        rows: trials
            .iter()
            .map(|t| format!("{} ({})", t.label, pct(t.test_acc.unwrap_or(0.0))))
            .collect(),
        cols: data.classes.clone(),
        shade: trials.iter().map(|t| t.class_acc.clone()).collect(),
        text: trials
            .iter()
            .map(|t| {
                t.class_acc
                    .iter()
                    .map(|a| format!("{:.0}", a * 100.0))
                    .collect()
            })
            .collect(),
        stops: VIRIDIS,
        row_desc: "trial".into(),
        col_desc: "class".into(),
        scale: ("0%", "100%", "class accuracy".into()),
        diagonal: false,
        cell: (84, 34),
    };
    let title = chart.title.clone();
    render("class_accuracy", title, &chart).map(Some)
}

fn confusion(data: &SweepData) -> anyhow::Result<Option<Chart>> {
    let Some(best) = data.best() else {
        return Ok(None);
    };
    let db = Db::open_read_only(&data.db_path).map_err(Error::from)?;
    let (_, cells) = db
        .query_strings(
            "SELECT true_class, predicted_class, count FROM confusion WHERE trial_id = ?1",
            &[&best.id],
        )
        .map_err(Error::from)?;
    let n = data.classes.len();
    if cells.is_empty() {
        return Ok(None);
    }
    let mut m = vec![vec![0i64; n]; n];
    for c in cells {
        let (t, p) = (c[0].as_i64().unwrap_or(-1), c[1].as_i64().unwrap_or(-1));
        if (0..n as i64).contains(&t) && (0..n as i64).contains(&p) {
            m[t as usize][p as usize] = c[2].as_i64().unwrap_or(0);
        }
    }
    let shade = m
        .iter()
        .map(|row| {
            let total: i64 = row.iter().sum();
            row.iter()
                .map(|&v| {
                    if total > 0 {
                        v as f64 / total as f64
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    let chart = Heatmap {
        title: format!(
            "Confusion matrix of the best trial, {} (test {})",
            best.label,
            pct(best.test_acc.unwrap_or(0.0))
        ),
        subtitle: format!(
            "sweep `{}`; cells: test images of the row's class predicted as the column's; outlined: correct",
            data.name
        ),
        rows: data.classes.clone(),
        cols: data.classes.clone(),
        shade,
        text: m
            .iter()
            .map(|r| r.iter().map(|v| v.to_string()).collect())
            .collect(),
        stops: BLUES,
        row_desc: "true class".into(),
        col_desc: "predicted class".into(),
        scale: ("0%", "100%", "share of the true class".into()),
        diagonal: true,
        cell: (84, 52),
    };
    let title = chart.title.clone();
    render("confusion", title, &chart).map(Some)
}

// ---------------------------------------------------------------------------------------
// Sample test images with the best trial's predictions

const SAMPLE_COLS: usize = 8;
const SAMPLE_ROWS: usize = 5;
const SCALE: u32 = 3;

struct Samples<'a> {
    title: String,
    subtitle: String,
    classes: &'a [String],
    /// (RGB pixels, 32x32 upscaled by SCALE; true label; predicted label)
    images: Vec<(Vec<u8>, usize, usize)>,
}

/// The checkpoint folder of `t`: the recorded path, else the database's own folder for the
/// trial (never another database's checkpoints that happen to share the folder).
fn checkpoint_dir(_data: &SweepData, t: &TrialData) -> Option<PathBuf> {
    let recorded = t.checkpoint.as_ref().map(PathBuf::from);
    [recorded, t.own_checkpoint.clone()]
        .into_iter()
        .flatten()
        .find(|d| d.join("state.json").is_file())
}

fn samples(data: &SweepData, set: &Cifar10) -> anyhow::Result<Option<Chart>> {
    use trainer::data::{make_batch, Normalization};
    let Some(best) = data.best() else {
        return Ok(None);
    };
    let dir = checkpoint_dir(data, best).with_context(|| {
        format!(
            "trial {}: no checkpoint found (recorded: {})",
            best.id,
            best.checkpoint.as_deref().unwrap_or("none")
        )
    })?;
    let meta = trainer::checkpoint::read_meta(&dir)?
        .with_context(|| format!("{}: no checkpoint state", dir.display()))?;
    let file = meta
        .best
        .as_ref()
        .map(|b| b.file.clone())
        .with_context(|| format!("{}: the checkpoint has no best weights", dir.display()))?;
    if let Some(sum) = &data.data_checksum {
        if *sum != set.checksum {
            tracing::warn!(
                "the data set ({}) is not the one sweep `{}` was trained on; the sample images' predictions may differ from its test results",
                set.source,
                data.name
            );
        }
    }
    let device = trainer::Device::Cpu;
    let session = trainer::train::Session::new(&meta.config, &device)?;
    session.load_weights_file(&dir.join(&file))?;
    let n = (SAMPLE_COLS * SAMPLE_ROWS).min(set.test.len());
    let idx: Vec<usize> = (0..n).collect();
    let (x, _) = make_batch(
        &set.test,
        &idx,
        &Normalization::default(),
        None::<&mut rand::rngs::StdRng>,
        &device,
    )?;
    let pred: Vec<u32> = session.model.forward_t(&x, false)?.argmax(1)?.to_vec1()?;
    let side = 32 * SCALE as usize;
    let images: Vec<(Vec<u8>, usize, usize)> = idx
        .iter()
        .map(|&i| {
            let chw = set.test.image(i);
            let mut rgb = vec![0u8; side * side * 3];
            for y in 0..side {
                for x in 0..side {
                    let (sy, sx) = (y / SCALE as usize, x / SCALE as usize);
                    for c in 0..3 {
                        rgb[(y * side + x) * 3 + c] = chw[c * 1024 + sy * 32 + sx];
                    }
                }
            }
            (rgb, set.test.labels[i] as usize, pred[i] as usize)
        })
        .collect();
    let wrong = images.iter().filter(|(_, t, p)| t != p).count();
    let chart = Samples {
        title: format!(
            "Test images with the predictions of the best trial, {}",
            best.label
        ),
        subtitle: format!(
            "the first {n} test images: {wrong} wrong (red frame, prediction in red), {} right",
            n - wrong
        ),
        classes: &data.classes,
        images,
    };
    let title = chart.title.clone();
    render("samples", title, &chart).map(Some)
}

impl Draw for Samples<'_> {
    fn size(&self) -> (u32, u32) {
        let rows = self.images.len().div_ceil(SAMPLE_COLS).max(1) as u32;
        (1200, 110 + rows * 172)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DResult
    where
        DB::ErrorType: 'static,
    {
        let body = header(root, &self.title, Some(&self.subtitle))?;
        let side = 32 * SCALE as i32;
        let cell_w = 1200 / SAMPLE_COLS as i32;
        let name = |i: usize| {
            self.classes
                .get(i)
                .cloned()
                .unwrap_or_else(|| i.to_string())
        };
        for (k, (rgb, truth, pred)) in self.images.iter().enumerate() {
            let (r, c) = ((k / SAMPLE_COLS) as i32, (k % SAMPLE_COLS) as i32);
            let x = c * cell_w + (cell_w - side) / 2;
            let y = 10 + r * 172;
            let ok = truth == pred;
            let frame = if ok { RGBColor(200, 200, 200) } else { BAD };
            let t = if ok { 1 } else { 4 };
            body.draw(&Rectangle::new(
                [(x - t, y - t), (x + side + t - 1, y + side + t - 1)],
                frame.filled(),
            ))?;
            let img =
                BitMapElement::with_owned_buffer((x, y), (side as u32, side as u32), rgb.clone())
                    .ok_or("bad image buffer")?;
            body.draw(&img)?;
            let cx = x + side / 2;
            body.draw_text(
                &format!("true: {}", name(*truth)),
                &anchored(LABEL, HPos::Center, VPos::Top),
                (cx, y + side + 10),
            )?;
            let (mark, color) = if ok { ("✓", GOOD) } else { ("✗", BAD) };
            body.draw_text(
                &format!("{mark} pred: {}", name(*pred)),
                &anchored(LABEL, HPos::Center, VPos::Top).color(&color),
                (cx, y + side + 30),
            )?;
        }
        Ok(())
    }
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
