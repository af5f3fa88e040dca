//! PNG plots drawn by the programs themselves: line charts and routing heatmaps.
//!
//! Text is rendered with ab_glyph from a TrueType font found on the system (DejaVu Sans or
//! Liberation Sans), or the file named by `$SWITCH_MOE_FONT`.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers the font used for all text; call once before plotting.
pub fn init_font() -> Result<(), String> {
    let candidates: Vec<String> = std::env::var("SWITCH_MOE_FONT")
        .into_iter()
        .chain(FONT_PATHS.iter().map(|p| p.to_string()))
        .collect();
    for path in &candidates {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            return plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{path} is not a usable TrueType font"));
        }
    }
    Err(format!(
        "no TrueType font found for the plots (tried {}); set SWITCH_MOE_FONT to a .ttf file",
        candidates.join(", ")
    ))
}

/// One line of a line chart.
pub struct Series {
    /// Legend label.
    pub label: String,
    /// (x, y) points in x order.
    pub points: Vec<(f64, f64)>,
}

/// The i-th colour of a palette that stays readable for ~12 series.
pub fn color(i: usize) -> RGBColor {
    const P: &[(u8, u8, u8)] = &[
        (0, 0, 0),
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = P[i % P.len()];
    RGBColor(r, g, b)
}

/// A line chart of several series. `y_range` clips the y axis (None: fit all points).
pub fn lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    y_range: Option<(f64, f64)>,
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("plotting {}: {e}", path.display());
    let finite = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in finite {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Err(format!("plotting {}: no finite points", path.display()));
    }
    if let Some((lo, hi)) = y_range {
        y0 = lo;
        y1 = hi;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|p| p.1.is_finite())
            .map(|(x, y)| (x, y.clamp(y0 - pad, y1 + pad)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// One heatmap panel: per-expert token fractions over time.
pub struct Panel {
    /// Panel title.
    pub title: String,
    /// Step of each column.
    pub steps: Vec<usize>,
    /// `[time][expert]` token fractions (each row sums to 1).
    pub fractions: Vec<Vec<f64>>,
}

/// Colour of a load `f · E` (1 = balanced): blue under-used, white balanced, red overloaded, on a
/// log2 scale clipped at 1/4 and 4.
fn load_color(load: f64) -> RGBColor {
    let v = (load.max(1e-9).log2() / 2.0).clamp(-1.0, 1.0);
    let mix = |a: u8, t: f64| (255.0 + (a as f64 - 255.0) * t) as u8;
    if v >= 0.0 {
        RGBColor(mix(180, v), mix(20, v), mix(30, v))
    } else {
        RGBColor(mix(30, -v), mix(60, -v), mix(170, -v))
    }
}

/// A grid of heatmaps (x: step, y: expert; colour: load f·E on a log scale from 1/4 to 4).
pub fn heatmaps(path: &Path, title: &str, panels: &[Panel], cols: usize) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("plotting {}: {e}", path.display());
    let rows = panels.len().div_ceil(cols);
    let root =
        BitMapBackend::new(path, (420 * cols as u32, 60 + 260 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(
            &format!("{title}   (colour: E·fraction, blue ¼ … white 1 … red 4)"),
            ("sans-serif", 20),
        )
        .map_err(|e| err(&e))?;
    for (panel, area) in panels.iter().zip(root.split_evenly((rows, cols))) {
        let experts = panel.fractions.first().map_or(1, |r| r.len());
        let last = *panel.steps.last().unwrap_or(&1) as f64;
        let mut chart = ChartBuilder::on(&area)
            .caption(&panel.title, ("sans-serif", 15))
            .margin(6)
            .x_label_area_size(28)
            .y_label_area_size(36)
            .build_cartesian_2d(0.0..last, 0.0..experts as f64)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(5)
            .y_labels(experts.min(8))
            .label_style(("sans-serif", 12))
            .y_desc("expert")
            .draw()
            .map_err(|e| err(&e))?;
        let mut prev = 0.0;
        let mut cells = Vec::new();
        for (col, row) in panel.steps.iter().zip(&panel.fractions) {
            let x1 = *col as f64;
            for (e, f) in row.iter().enumerate() {
                cells.push(Rectangle::new(
                    [(prev, e as f64), (x1, e as f64 + 1.0)],
                    load_color(f * experts as f64).filled(),
                ));
            }
            prev = x1;
        }
        chart.draw_series(cells).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

/// Routing panels of a run: one per sparse layer.
pub fn routing_panels(log: &super::run::RunLog, label: &str) -> Vec<Panel> {
    let layers = log.routing.iter().map(|r| r.layer + 1).max().unwrap_or(0);
    (0..layers)
        .map(|l| {
            let rows: Vec<_> = log.routing.iter().filter(|r| r.layer == l).collect();
            Panel {
                title: format!("{label} · sparse layer {}", l + 1),
                steps: rows.iter().map(|r| r.step).collect(),
                fractions: rows.iter().map(|r| r.fractions.clone()).collect(),
            }
        })
        .collect()
}

/// A y range for loss curves: from the lowest point of any series up to the highest value at
/// `1/skip` of the way along, so that the first steps' high losses do not flatten the rest.
pub fn loss_range(series: &[Series], skip: usize) -> (f64, f64) {
    let lo = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(f64::MAX, f64::min);
    let hi = series
        .iter()
        .filter_map(|s| s.points.get(s.points.len() / skip).map(|p| p.1))
        .fold(f64::MIN, f64::max);
    (lo, hi)
}
