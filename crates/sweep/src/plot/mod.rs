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

use anyhow::{anyhow, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
pub use data::{ConfusionCell, EpochRow, SweepData, TrialData};
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
}
