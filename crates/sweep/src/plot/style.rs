//! The look of every chart: the bundled font and text sizes, the colours and colour maps,
//! the title block, and the axis helpers (round ceilings, time and log ticks, tick labels).

use super::DResult;
use crate::report::duration;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The font every chart uses (DejaVu Sans, registered under this family name).
const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Registers the bundled font with plotters (once per process).
pub fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_err() {
            panic!("the bundled font assets/DejaVuSans.ttf does not parse");
        }
    });
}

// Even sizes only: plotters' ab_glyph text places glyphs at `size / 2 + top` truncated to
// whole pixels, so at odd sizes a full stop sits a pixel higher than the digits around it.
pub(super) const TITLE: f64 = 24.0;
pub(super) const SUBTITLE: f64 = 16.0;
pub(super) const LABEL: f64 = 14.0;
pub(super) const AXIS: f64 = 16.0;

pub(super) const TRAIN: RGBColor = RGBColor(31, 119, 180);
pub(super) const VALID: RGBColor = RGBColor(255, 127, 14);
pub(super) const GOOD: RGBColor = RGBColor(20, 130, 50);
pub(super) const BAD: RGBColor = RGBColor(214, 39, 40);
pub(super) const GREY: RGBColor = RGBColor(110, 110, 110);
pub(super) const BAR: RGBColor = RGBColor(76, 114, 176);
pub(super) const BAR_TIME: RGBColor = RGBColor(85, 168, 104);

/// Tableau 10: one colour per architecture in the scatter plot.
pub(super) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub(super) fn font(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

pub(super) fn anchored(size: f64, h: HPos, v: VPos) -> TextStyle<'static> {
    font(size).pos(Pos::new(h, v))
}

/// The width of `s` in pixels at `size` in the bundled font.
pub(super) fn text_width(s: &str, size: f64) -> u32 {
    register_font();
    (FONT, size)
        .into_font()
        .box_size(s)
        .map(|(w, _)| w)
        .unwrap_or((s.chars().count() as f64 * size * 0.6) as u32)
}

/// `s`, shortened with an ellipsis to fit in `max` pixels.
pub(super) fn fit(s: &str, size: f64, max: u32) -> String {
    if text_width(s, size) <= max {
        return s.to_string();
    }
    let chars: Vec<char> = s.chars().collect();
    for n in (1..chars.len()).rev() {
        let t: String = chars[..n].iter().collect::<String>() + "…";
        if text_width(&t, size) <= max {
            return t;
        }
    }
    "…".into()
}

/// Draws the title (and an optional subtitle) at the top; returns the area below.
pub(super) fn header<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    subtitle: Option<&str>,
) -> DResult<DrawingArea<DB, Shift>>
where
    DB::ErrorType: 'static,
{
    let (w, _) = root.dim_in_pixel();
    let title = fit(title, TITLE, w.saturating_sub(40));
    root.draw_text(
        &title,
        &anchored(TITLE, HPos::Center, VPos::Top),
        (w as i32 / 2, 14),
    )?;
    let mut used = 14 + TITLE as i32 + 10;
    if let Some(sub) = subtitle {
        let sub = fit(sub, SUBTITLE, w.saturating_sub(40));
        root.draw_text(
            &sub,
            &anchored(SUBTITLE, HPos::Center, VPos::Top).color(&GREY),
            (w as i32 / 2, used),
        )?;
        used += SUBTITLE as i32 + 10;
    }
    Ok(root.split_vertically(used + 6).1)
}

/// A colour map: `stops` evenly spaced over [0, 1], linearly interpolated.
pub(super) fn colormap(stops: &[(u8, u8, u8)], t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (stops.len() - 1) as f64;
    let i = (x.floor() as usize).min(stops.len() - 2);
    let f = x - i as f64;
    let lerp = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (stops[i], stops[i + 1]);
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

pub(super) const VIRIDIS: &[(u8, u8, u8)] = &[
    (68, 1, 84),
    (71, 45, 123),
    (59, 82, 139),
    (44, 114, 142),
    (33, 145, 140),
    (40, 174, 128),
    (94, 201, 98),
    (173, 220, 48),
    (253, 231, 37),
];

pub(super) const BLUES: &[(u8, u8, u8)] = &[
    (247, 251, 255),
    (222, 235, 247),
    (198, 219, 239),
    (158, 202, 225),
    (107, 174, 214),
    (66, 146, 198),
    (33, 113, 181),
    (8, 81, 156),
    (8, 48, 107),
];

/// Black or white, whichever reads better on `c`.
pub(super) fn ink_on(c: &RGBColor) -> RGBColor {
    let l = 0.299 * c.0 as f64 + 0.587 * c.1 as f64 + 0.114 * c.2 as f64;
    if l > 140.0 {
        BLACK
    } else {
        WHITE
    }
}

pub(super) fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Round numbers for an axis that starts at 0 and reaches past `max`.
pub(super) fn nice_ceiling(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(max.log10().floor());
    for m in [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if m * mag >= max {
            return m * mag;
        }
    }
    10.0 * mag
}

/// A linear axis over `lo..hi` with its ticks at given values. (plotters' `with_key_points`
/// drops the default formatting that `configure_mesh` insists on, even with a formatter.)
pub(super) struct Ticked {
    pub lo: f64,
    pub hi: f64,
    pub ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        if self.hi == self.lo {
            return (limit.0 + limit.1) / 2;
        }
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + ((limit.1 - limit.0) as f64 * f + 1e-3).floor() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

pub(super) fn short_duration(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.0}s")
    } else {
        duration(s)
    }
}

/// Tick positions for a time axis over `lo..hi`: the multiples of the smallest step that
/// reads well as a duration (1-2-5 below a second; 1, 2, 5, 10, 15, 30 s; 1, 2, 5, 10, 15,
/// 30 min; 1, 2, 3, 6, 12 h; days) giving at most `max` ticks. Returns the ticks and the step
/// for [`time_label`]: a short sweep gets ticks a fraction of a second apart, not `0s 0s 1s`.
pub(super) fn time_ticks(lo: f64, hi: f64, max: usize) -> (Vec<f64>, f64) {
    let span = if hi > lo { hi - lo } else { 1e-3 };
    let max = max.max(2) as f64;
    let mut steps = Vec::new();
    let mut mag = 1e-3;
    while mag < 1.0 {
        steps.extend([mag, 2.0 * mag, 5.0 * mag]);
        mag *= 10.0;
    }
    steps.extend([
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        10800.0, 21600.0, 43200.0, 86400.0,
    ]);
    let fits = |s: f64| (span / s).floor() + 1.0 <= max;
    let step = steps
        .iter()
        .copied()
        .find(|&s| fits(s))
        .unwrap_or_else(|| 86400.0 * (span / 86400.0 / (max - 1.0)).ceil());
    let (first, last) = ((lo / step).ceil() as i64, (hi / step).floor() as i64);
    ((first..=last).map(|k| k as f64 * step).collect(), step)
}

/// A time-axis tick at `x` seconds, to the precision of `step` (from [`time_ticks`]), so
/// ticks one step apart never read the same.
pub(super) fn time_label(x: f64, step: f64) -> String {
    if step >= 3600.0 {
        return format!("{}h", (x / 3600.0).round() as i64);
    }
    if step >= 60.0 {
        let m = (x / 60.0).round() as i64;
        return if m < 60 {
            format!("{m}m")
        } else {
            format!("{}h{:02}m", m / 60, m % 60)
        };
    }
    let d = if step < 1.0 {
        (-step.log10() - 1e-9).ceil().max(1.0) as usize
    } else {
        0
    };
    let scale = 10f64.powi(d as i32);
    let r = (x * scale).round() / scale;
    if r < 60.0 {
        return format!("{r:.d$}s");
    }
    let whole = r.floor() as i64;
    let (h, m) = (whole / 3600, (whole % 3600) / 60);
    let sec = r - (h * 3600 + m * 60) as f64;
    let w = if d > 0 { d + 3 } else { 2 };
    if h > 0 {
        format!("{h}h{m:02}m{sec:0w$.d$}s")
    } else {
        format!("{m}m{sec:0w$.d$}s")
    }
}

/// Pruned trials: drawn first, light, so the trials that went on stand out.
pub(super) const PRUNED: RGBColor = RGBColor(200, 200, 200);

/// `lo..hi` of the finite values, padded by 8% (at least `min_pad`), or None.
pub(super) fn padded(vals: impl Iterator<Item = f64>, min_pad: f64) -> Option<(f64, f64)> {
    let (lo, hi) = vals
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    if !lo.is_finite() {
        return None;
    }
    let pad = ((hi - lo) * 0.08).max(min_pad);
    Some((lo - pad, hi + pad))
}

/// Whether a hyperparameter's values are best shown on a log axis, where the sweep file does
/// not say (a grid, a `choice`): all positive and spanning more than a factor of 20 (a grid
/// of learning rates such as 0.001, 0.01, 0.1).
pub(super) fn log_axis(values: &[f64]) -> bool {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    lo > 0.0 && hi.is_finite() && hi / lo > 20.0
}

/// Ticks on a log axis over `lo..hi` (as values, not exponents): 1, 2 and 5 times the powers
/// of ten across up to three decades, the powers alone beyond.
pub(super) fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let mults: &[f64] = if b - a <= 3 { &[1.0, 2.0, 5.0] } else { &[1.0] };
    (a..=b)
        .flat_map(|k| mults.iter().map(move |m| m * 10f64.powi(k)))
        .filter(|v| *v >= lo * (1.0 - 1e-9) && *v <= hi * (1.0 + 1e-9))
        .collect()
}

/// A hyperparameter's value on an axis: short, e.g. `0.003`, `1e-05`, `64`.
pub(super) fn axis_number(x: f64) -> String {
    if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e5) {
        let s = format!("{x:.1e}");
        s.replace(".0e", "e")
    } else {
        crate::report::significant(x, 3)
    }
}

/// The height [`header`] takes with a subtitle.
pub(super) const HEADER_H: u32 = 80;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_maps_and_axes() {
        assert_eq!(colormap(VIRIDIS, 0.0), RGBColor(68, 1, 84));
        assert_eq!(colormap(VIRIDIS, 1.0), RGBColor(253, 231, 37));
        assert_eq!(colormap(VIRIDIS, f64::NAN), RGBColor(68, 1, 84));
        assert_eq!(ink_on(&colormap(BLUES, 0.0)), BLACK);
        assert_eq!(ink_on(&colormap(BLUES, 1.0)), WHITE);
        assert_eq!(nice_ceiling(0.73), 0.8);
        assert_eq!(nice_ceiling(41.0), 50.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }

    fn labels(lo: f64, hi: f64) -> Vec<String> {
        let (ticks, step) = time_ticks(lo, hi, 9);
        ticks.iter().map(|x| time_label(*x, step)).collect()
    }

    #[test]
    fn time_ticks_never_repeat_a_label() {
        // Issue 12 item 6: a sweep of a few seconds read `0s 0s 1s 1s 2s 2s`.
        assert_eq!(labels(0.0, 2.4), ["0.0s", "0.5s", "1.0s", "1.5s", "2.0s"]);
        assert_eq!(
            labels(0.31, 0.47),
            ["0.32s", "0.34s", "0.36s", "0.38s", "0.40s", "0.42s", "0.44s", "0.46s"]
        );
        assert_eq!(
            labels(32.0, 108.0),
            ["40s", "50s", "1m00s", "1m10s", "1m20s", "1m30s", "1m40s"]
        );
        assert_eq!(
            labels(0.0, 3000.0),
            ["0m", "10m", "20m", "30m", "40m", "50m"]
        );
        for (lo, hi) in [
            (0.0, 0.004),
            (0.2, 2.4),
            (1.0, 9.0),
            (50.0, 75.0),
            (59.0, 61.0),
            (3590.0, 3620.0),
            (100.0, 5000.0),
            (0.0, 40_000.0),
            (0.0, 400_000.0),
            (12.0, 12.0),
        ] {
            let l = labels(lo, hi);
            assert!(!l.is_empty() || hi - lo < 1.0, "{lo}..{hi}: no tick");
            assert!(l.len() <= 9, "{lo}..{hi}: {l:?}");
            let distinct: std::collections::HashSet<&String> = l.iter().collect();
            assert_eq!(distinct.len(), l.len(), "{lo}..{hi}: {l:?}");
        }
        assert_eq!(time_label(65.0, 5.0), "1m05s");
        assert_eq!(time_label(61.5, 0.5), "1m01.5s");
        assert_eq!(time_label(3725.0, 5.0), "1h02m05s");
        assert_eq!(time_label(5400.0, 900.0), "1h30m");
        assert_eq!(time_label(7200.0, 3600.0), "2h");
    }

    #[test]
    fn log_axes_for_wide_positive_ranges() {
        assert!(log_axis(&[1e-3, 0.05, 0.3]));
        assert!(!log_axis(&[0.01, 0.1]));
        assert!(!log_axis(&[0.0, 0.5, 0.9]));
        assert!(!log_axis(&[32.0, 64.0, 128.0]));
        assert_eq!(
            log_ticks(0.0015, 0.25),
            [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
        );
        assert_eq!(log_ticks(1e-6, 1e-2), [1e-6, 1e-5, 1e-4, 1e-3, 1e-2]);
        assert_eq!(axis_number(0.002), "0.002");
        assert_eq!(axis_number(1e-5), "1e-5");
        assert_eq!(axis_number(2.5e-4), "2.5e-4");
        assert_eq!(axis_number(64.0), "64");
        assert_eq!(axis_number(0.35), "0.35");
    }
}
