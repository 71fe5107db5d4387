//! Scatter plots: test accuracy against training time with its Pareto front
//! (`accuracy_vs_time`), and the best validation accuracy against each hyperparameter that
//! varies (`hyperparameters`).

use super::style::*;
use super::{DResult, Draw, SweepData, TrialData};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use serde_json::Value;

pub(super) struct Scatter<'a> {
    sweep: &'a str,
    points: Vec<(&'a TrialData, f64, f64)>,
    archs: Vec<String>,
    /// Indices into `points` of the Pareto front, fastest first.
    front: Vec<usize>,
}

pub(super) fn accuracy_vs_time(data: &SweepData) -> Option<Scatter<'_>> {
    let points: Vec<(&TrialData, f64, f64)> = data
        .done()
        .into_iter()
        .filter_map(|t| Some((t, t.train_seconds?, t.test_acc?)))
        .collect();
    if points.is_empty() {
        return None;
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
    Some(chart)
}

fn arch(t: &TrialData) -> String {
    t.config
        .get("arch")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string()
}

impl Draw for Scatter<'_> {
    fn title(&self) -> String {
        format!(
            "Test accuracy against training time, with the Pareto front, sweep `{}`",
            self.sweep
        )
    }

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

struct HyperPanel {
    key: String,
    log: bool,
    /// (value, best validation accuracy, status).
    points: Vec<(f64, f64, &'static str)>,
}

pub(super) struct Hyper<'a> {
    sweep: &'a str,
    panels: Vec<HyperPanel>,
    y: (f64, f64),
}

const HYPER_COLS: usize = 3;

pub(super) fn hyperparameters(data: &SweepData) -> Option<Hyper<'_>> {
    let first = data.trials.first()?;
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
        return None;
    }
    let y = padded(scored.iter().map(|s| s.1), 0.02)
        .map(|(lo, hi)| (lo.max(0.0), hi.min(1.0)))
        .unwrap_or((0.0, 1.0));
    let chart = Hyper {
        sweep: &data.name,
        panels,
        y,
    };
    Some(chart)
}

impl Draw for Hyper<'_> {
    fn title(&self) -> String {
        format!(
            "Best validation accuracy against each hyperparameter, sweep `{}`",
            self.sweep
        )
    }

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
            &self.title(),
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
