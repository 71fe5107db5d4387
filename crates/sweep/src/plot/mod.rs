//! Charts of a sweep, drawn with plotters from the results database: loss curves (per trial,
//! and every trial on one chart with the pruned ones greyed), test accuracy, training time,
//! accuracy against time with its Pareto front, the best validation accuracy against each
//! hyperparameter, per-class accuracy, the best trial's
//! confusion matrix and its predictions on sample test images. Each chart is rendered twice,
//! to PNG and to SVG, with a bundled font (no system fonts needed).

mod bars;
mod curves;
mod data;
mod heatmaps;
mod samples;
mod scatter;
mod style;

pub use data::{ConfusionCell, EpochRow, SweepData, TrialData};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
pub use style::register_font;
use trainer::data::Cifar10;

/// One rendered chart.
pub struct Chart {
    /// File stem: `loss_curves`, `accuracy`, ...
    pub name: &'static str,
    /// What it shows, for captions.
    pub title: String,
    /// Width in pixels (of the PNG; the SVG's user units are the same).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The chart as a PNG file's bytes.
    pub png: Vec<u8>,
    /// The same chart as SVG text.
    pub svg: String,
}

/// The charts of a sweep, and the kinds that could not be drawn (with the reason).
pub struct Charts {
    /// The sweep's name.
    pub sweep: String,
    /// The charts drawn, in the order of [`Kind::ALL`].
    pub charts: Vec<Chart>,
    /// The charts not drawn: each kind's file stem and why (nothing to draw, `--no-samples`, or
    /// the error).
    pub skipped: Vec<(&'static str, String)>,
}

/// Every chart kind, in the order they are drawn: the list that [`charts`] walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Loss per epoch, one panel per trial (`loss_curves`).
    LossCurves,
    /// Every trial's curves on one chart, pruned ones greyed (`all_curves`).
    AllCurves,
    /// Test accuracy per trial, or mean over seeds, as bars (`accuracy`).
    Accuracy,
    /// Training time per trial, or mean over seeds, as bars (`train_time`).
    TrainTime,
    /// Test accuracy against training time, with its Pareto front (`accuracy_vs_time`).
    AccuracyVsTime,
    /// Best validation accuracy against each hyperparameter that varies (`hyperparameters`).
    Hyperparameters,
    /// Per-class test accuracy of the trials, as a heatmap (`class_accuracy`).
    ClassAccuracy,
    /// The best trial's confusion matrix (`confusion`).
    Confusion,
    /// The first test images with the best trial's predictions (`samples`); needs the data set
    /// and the best trial's checkpoint.
    Samples,
}

impl Kind {
    /// Every kind, in the order they are drawn.
    pub const ALL: [Kind; 9] = [
        Kind::LossCurves,
        Kind::AllCurves,
        Kind::Accuracy,
        Kind::TrainTime,
        Kind::AccuracyVsTime,
        Kind::Hyperparameters,
        Kind::ClassAccuracy,
        Kind::Confusion,
        Kind::Samples,
    ];

    /// The chart's file stem (and its name in `plot`'s output).
    pub fn name(self) -> &'static str {
        match self {
            Kind::LossCurves => "loss_curves",
            Kind::AllCurves => "all_curves",
            Kind::Accuracy => "accuracy",
            Kind::TrainTime => "train_time",
            Kind::AccuracyVsTime => "accuracy_vs_time",
            Kind::Hyperparameters => "hyperparameters",
            Kind::ClassAccuracy => "class_accuracy",
            Kind::Confusion => "confusion",
            Kind::Samples => "samples",
        }
    }

    /// Why a sweep gives the chart nothing to draw.
    fn nothing_to_draw(self) -> &'static str {
        match self {
            Kind::LossCurves => "no trial has recorded an epoch",
            Kind::AllCurves => "fewer than two trials have recorded an epoch",
            Kind::Hyperparameters => {
                "no numeric hyperparameter varies across trials with a validation accuracy"
            }
            _ => "no finished trial",
        }
    }
}

/// What stopped a chart from being drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// plotters failed on one of the backends (its errors differ per backend, so they are
    /// kept as text).
    #[error("{chart}: {message}")]
    Draw {
        /// The chart's file stem.
        chart: &'static str,
        /// plotters' error text.
        message: String,
    },
    /// The PNG encoder failed on a rendered chart.
    #[error("{chart}: encoding the PNG")]
    Png {
        /// The chart's file stem.
        chart: &'static str,
        /// The encoder's error.
        #[source]
        source: image::ImageError,
    },
    /// The output folder could not be created.
    #[error("{}: cannot create", path.display())]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A chart file could not be written.
    #[error("{}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The best trial's checkpoint folder is neither where it was recorded nor beside the
    /// database.
    #[error("trial {trial}: no checkpoint found (recorded: {recorded})")]
    NoCheckpoint {
        /// The best trial's row id.
        trial: i64,
        /// The checkpoint folder its row records.
        recorded: String,
    },
    /// Loading the best trial's weights or predicting with them.
    #[error(transparent)]
    Trainer(#[from] trainer::Error),
}

/// What drawing on a plotters backend returns (its error types differ per backend).
type DResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A chart that can draw itself on any plotters backend: each chart family implements it.
trait Draw {
    /// What it shows, for captions.
    fn title(&self) -> String;
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DResult
    where
        DB::ErrorType: 'static;
}

/// Draws `chart` on a bitmap (encoded as PNG) and as SVG.
fn render(kind: Kind, chart: &impl Draw) -> Result<Chart, PlotError> {
    register_font();
    let name = kind.name();
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| PlotError::Draw {
        chart: name,
        message: e.to_string(),
    };
    // Both backends: fill, draw, present, each failing with the backend's own error type.
    fn paint<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &impl Draw) -> DResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        chart.draw(&root)?;
        root.present()?;
        Ok(())
    }
    let (w, h) = chart.size();
    let mut buf = vec![0u8; w as usize * h as usize * 3];
    paint(
        BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area(),
        chart,
    )
    .map_err(failed)?;
    let mut png = Vec::new();
    {
        use image::ImageEncoder;
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&buf, w, h, image::ColorType::Rgb8)
            .map_err(|source| PlotError::Png {
                chart: name,
                source,
            })?;
    }
    let mut svg = String::new();
    paint(
        SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area(),
        chart,
    )
    .map_err(failed)?;
    Ok(Chart {
        name,
        title: chart.title(),
        width: w,
        height: h,
        png,
        svg,
    })
}

/// Renders `chart` when there is one.
fn rendered(kind: Kind, chart: Option<impl Draw>) -> Result<Option<Chart>, PlotError> {
    chart.map(|c| render(kind, &c)).transpose()
}

/// Draws the chart `kind` of `data`, or `None` when there is nothing to draw. `images`: the
/// data set for the sample-image grid (only it looks at them).
fn draw(
    kind: Kind,
    data: &SweepData,
    images: Option<&Cifar10>,
) -> Result<Option<Chart>, PlotError> {
    match kind {
        Kind::LossCurves => rendered(kind, curves::loss_curves(data)),
        Kind::AllCurves => rendered(kind, curves::all_curves(data)),
        Kind::Accuracy => rendered(kind, bars::accuracy(data)),
        Kind::TrainTime => rendered(kind, bars::train_time(data)),
        Kind::AccuracyVsTime => rendered(kind, scatter::accuracy_vs_time(data)),
        Kind::Hyperparameters => rendered(kind, scatter::hyperparameters(data)),
        Kind::ClassAccuracy => rendered(kind, heatmaps::class_accuracy(data)),
        Kind::Confusion => rendered(kind, heatmaps::confusion(data)),
        Kind::Samples => match images {
            Some(set) => rendered(kind, samples::samples(data, set)?),
            None => Ok(None),
        },
    }
}

/// Draws every chart of `data`, in the order of [`Kind::ALL`]. `images`: the data set for
/// the sample-image grid (`None` skips it, or the error that prevented loading it).
pub fn charts(data: &SweepData, images: Option<Result<&Cifar10, String>>) -> Charts {
    let mut out = Charts {
        sweep: data.name.clone(),
        charts: Vec::new(),
        skipped: Vec::new(),
    };
    for kind in Kind::ALL {
        let name = kind.name();
        let set = match &images {
            Some(Ok(set)) => Some(*set),
            _ if kind != Kind::Samples => None,
            None => {
                out.skipped.push((name, "--no-samples".into()));
                continue;
            }
            Some(Err(e)) => {
                out.skipped.push((name, e.clone()));
                continue;
            }
        };
        match draw(kind, data, set) {
            Ok(Some(c)) => out.charts.push(c),
            Ok(None) => out.skipped.push((name, kind.nothing_to_draw().into())),
            Err(e) => out.skipped.push((name, crate::error_chain(&e))),
        }
    }
    out
}

/// Writes each chart as `<name>.png` and `<name>.svg` under `dir`; returns the paths.
pub fn write(charts: &Charts, dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>, PlotError> {
    std::fs::create_dir_all(dir).map_err(|source| PlotError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let put = |path: PathBuf, bytes: &[u8]| {
        std::fs::write(&path, bytes)
            .map(|()| path.clone())
            .map_err(|source| PlotError::Write { path, source })
    };
    charts
        .charts
        .iter()
        .map(|c| {
            let png = put(dir.join(format!("{}.png", c.name)), &c.png)?;
            let svg = put(dir.join(format!("{}.svg", c.name)), c.svg.as_bytes())?;
            Ok((png, svg))
        })
        .collect()
}
