//! Heatmaps: per-class test accuracy of the trials (`class_accuracy`) and the best trial's
//! confusion matrix (`confusion`).

use super::style::*;
use super::{DResult, Draw, SweepData, TrialData};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;

pub(super) struct Heatmap {
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
    fn title(&self) -> String {
        self.title.clone()
    }

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

pub(super) fn class_accuracy(data: &SweepData) -> Option<Heatmap> {
    let trials: Vec<&TrialData> = data
        .done()
        .into_iter()
        .filter(|t| t.class_acc.len() == data.classes.len())
        .take(40)
        .collect();
    if trials.is_empty() {
        return None;
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
    Some(chart)
}

pub(super) fn confusion(data: &SweepData) -> Option<Heatmap> {
    let best = data.best()?;
    let n = data.classes.len();
    if data.confusion.is_empty() {
        return None;
    }
    let mut m = vec![vec![0i64; n]; n];
    for c in &data.confusion {
        let (t, p) = (c.truth, c.predicted);
        if (0..n as i64).contains(&t) && (0..n as i64).contains(&p) {
            m[t as usize][p as usize] = c.count;
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
    Some(chart)
}
