//! Horizontal bar charts, best trial first: test accuracy (`accuracy`) and training time
//! (`train_time`), per trial or as the mean over seeds when seeds repeat.

use super::style::*;
use super::{DResult, Draw, SweepData, TrialData};
use crate::report::{duration, mean_std};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

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

pub(super) struct BarChart {
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
    fn title(&self) -> String {
        self.title.clone()
    }

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

pub(super) fn accuracy(data: &SweepData) -> Option<BarChart> {
    let (bars, by_group) = bars(data, |t| t.test_acc);
    if bars.iter().all(|b| b.values.is_empty()) {
        return None;
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
    Some(chart)
}

pub(super) fn train_time(data: &SweepData) -> Option<BarChart> {
    let (bars, by_group) = bars(data, |t| t.train_seconds);
    if bars.iter().all(|b| b.values.is_empty()) {
        return None;
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
    Some(chart)
}
