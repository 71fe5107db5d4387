//! The first test images with the best trial's predictions (`samples`).

use super::style::*;
use super::{DResult, Draw, PlotError, SweepData, TrialData};
use plotters::coord::Shift;
use plotters::element::BitMapElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use std::path::PathBuf;
use trainer::checkpoint::STATE_FILE;
use trainer::data::Cifar10;
use trainer::train::Session;
use trainer::Device;

const SAMPLE_COLS: usize = 8;
const SAMPLE_ROWS: usize = 5;
const SCALE: u32 = 3;

pub(super) struct Samples<'a> {
    title: String,
    subtitle: String,
    classes: &'a [String],
    /// (RGB pixels, 32x32 upscaled by SCALE; true label; predicted label)
    images: Vec<(Vec<u8>, usize, usize)>,
}

/// The checkpoint folder of `t`: the recorded path, else the database's own folder for the
/// trial (never another database's checkpoints that happen to share the folder).
fn checkpoint_dir(t: &TrialData) -> Option<PathBuf> {
    let recorded = t.checkpoint.as_ref().map(PathBuf::from);
    [recorded, t.own_checkpoint.clone()]
        .into_iter()
        .flatten()
        .find(|d| d.join(STATE_FILE).is_file())
}

/// The grid of the first test images of `set` with the best trial's predictions (its best
/// weights, on the CPU); `None` without a finished trial.
pub(super) fn samples<'a>(
    data: &'a SweepData,
    set: &Cifar10,
) -> Result<Option<Samples<'a>>, PlotError> {
    let Some(best) = data.best() else {
        return Ok(None);
    };
    let dir = checkpoint_dir(best).ok_or_else(|| PlotError::NoCheckpoint {
        trial: best.id,
        recorded: best.checkpoint.as_deref().unwrap_or("none").to_string(),
    })?;
    let session = Session::from_checkpoint(&dir, &Device::Cpu)?;
    if let Some(sum) = &data.data_checksum {
        if *sum != set.checksum {
            tracing::warn!(
                "the data set ({}) is not the one sweep `{}` was trained on; the sample images' predictions may differ from its test results",
                set.source,
                data.name
            );
        }
    }
    let n = (SAMPLE_COLS * SAMPLE_ROWS).min(set.test.len());
    let idx: Vec<usize> = (0..n).collect();
    let pred = session.predict(&set.test, &idx)?;
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
    Ok(Some(chart))
}

impl Draw for Samples<'_> {
    fn title(&self) -> String {
        self.title.clone()
    }

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
