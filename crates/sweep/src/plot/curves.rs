//! Loss and accuracy per epoch: one panel per trial (`loss_curves`), and every trial on one
//! chart with the pruned ones greyed and the pruning rule's epochs marked (`all_curves`).

use super::style::*;
use super::{DResult, Draw, EpochRow, SweepData, TrialData};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

/// At most this many panels (the best trials); the title says when some were left out.
const MAX_PANELS: usize = 24;

pub(super) struct LossCurves<'a> {
    sweep: &'a str,
    trials: Vec<&'a TrialData>,
    total: usize,
    cols: usize,
    rows: usize,
    y: (f64, f64),
    max_epoch: i64,
}

pub(super) fn loss_curves(data: &SweepData) -> Option<LossCurves<'_>> {
    let with_epochs: Vec<&TrialData> = data
        .trials
        .iter()
        .filter(|t| !t.epochs.is_empty())
        .collect();
    if with_epochs.is_empty() {
        return None;
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
    Some(chart)
}

impl Draw for LossCurves<'_> {
    fn title(&self) -> String {
        format!(
            "Training and validation loss per epoch, sweep `{}`",
            self.sweep
        )
    }

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

pub(super) struct AllCurves<'a> {
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

pub(super) fn all_curves(data: &SweepData) -> Option<AllCurves<'_>> {
    let with: Vec<&TrialData> = data
        .trials
        .iter()
        .filter(|t| !t.epochs.is_empty())
        .collect();
    // One trial: the loss_curves chart already shows it alone.
    if with.len() < 2 {
        return None;
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
    Some(chart)
}

impl Draw for AllCurves<'_> {
    fn title(&self) -> String {
        format!("Every trial's validation curves, sweep `{}`", self.sweep)
    }

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
        let body = header(root, &self.title(), Some(&sub))?;
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
