//! PNG plots: line charts, routing heatmaps and matrix heatmaps, as the run report and the
//! experiments draw them (plotters, bitmap backend: no system library but a font).
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

/// Registers the font used for all text; call before plotting (later calls do nothing).
pub fn init_font() -> Result<(), String> {
    static FONT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    FONT.get_or_init(register_font).clone()
}

fn register_font() -> Result<(), String> {
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
    /// Palette index ([`color`]): a program gives an arm the same index in every figure.
    pub color: usize,
    /// (x, low, high) of a shaded band around the line (e.g. the seeds' range); may be empty.
    pub band: Vec<(f64, f64, f64)>,
}

impl Series {
    /// A line without a band.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>, color: usize) -> Self {
        Self {
            label: label.into(),
            points,
            color,
            band: Vec::new(),
        }
    }

    /// The same line with a shaded band.
    pub fn with_band(mut self, band: Vec<(f64, f64, f64)>) -> Self {
        self.band = band;
        self
    }
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

/// An arm's palette index: its place in the program's list of arms, so it keeps its colour in
/// every figure (an arm not in the list gets the next colour).
pub fn color_of(arm: &str, arms: &[&str]) -> usize {
    arms.iter().position(|a| *a == arm).unwrap_or(arms.len())
}

/// A line chart of several series, each in its own palette colour with its band shaded; the
/// legend sits in a column right of the plot, never over the data. The y axis covers every
/// point and band (`y_range`, when given, is widened to them: nothing is clipped).
pub fn lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    y_range: Option<(f64, f64)>,
) -> Result<(), String> {
    lines_with_markers(path, title, x_desc, y_desc, series, y_range, &[])
}

/// A vertical line across a chart at `x`, e.g. where an alarm fired, labelled at its top.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// Position on the x axis.
    pub x: f64,
    /// A short label (drawn at the top of the line).
    pub label: String,
}

/// [`lines`] with vertical [`Marker`]s (red, dashed, labelled).
pub fn lines_with_markers(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    y_range: Option<(f64, f64)>,
    markers: &[Marker],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("plotting {}: {e}", path.display());
    let finite = series
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .copied()
                .chain(s.band.iter().flat_map(|b| [(b.0, b.1), (b.0, b.2)]))
        })
        .filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in finite {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Err(format!("plotting {}: no finite points", path.display()));
    }
    if let Some((lo, hi)) = y_range {
        y0 = y0.min(lo);
        y1 = y1.max(hi);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let longest = series
        .iter()
        .map(|s| s.label.chars().count())
        .max()
        .unwrap_or(0);
    let legend_w = (48 + 8 * longest as u32).clamp(120, 380);
    let root = BitMapBackend::new(path, (900 + legend_w, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (plot_area, legend_area) = root.split_horizontally(900);
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&tick)
        .label_style(("sans-serif", 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| err(&e))?;
    for s in series {
        let c = color(s.color);
        let band: Vec<_> = s
            .band
            .iter()
            .filter(|b| b.1.is_finite() && b.2.is_finite())
            .collect();
        if band.len() > 1 {
            let outline: Vec<(f64, f64)> = band
                .iter()
                .map(|b| (b.0, b.1))
                .chain(band.iter().rev().map(|b| (b.0, b.2)))
                .collect();
            chart
                .draw_series(std::iter::once(Polygon::new(outline, c.mix(0.15).filled())))
                .map_err(|e| err(&e))?;
        }
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|p| p.1.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(|e| err(&e))?;
    }
    let alarm = RGBColor(200, 30, 30);
    for marker in markers.iter().filter(|m| m.x.is_finite()) {
        let (lo, hi) = (y0 - pad, y1 + pad);
        let dashes = (0..40).map(|i| {
            let a = lo + (hi - lo) * i as f64 / 40.0;
            let b = lo + (hi - lo) * (i as f64 + 0.5) / 40.0;
            PathElement::new(vec![(marker.x, a), (marker.x, b)], alarm.stroke_width(2))
        });
        chart.draw_series(dashes).map_err(|e| err(&e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                marker.label.clone(),
                (marker.x, hi),
                ("sans-serif", 13).into_font().color(&alarm),
            )))
            .map_err(|e| err(&e))?;
    }
    legend(
        &legend_area,
        series.iter().map(|s| (s.label.as_str(), color(s.color))),
    )
    .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// An axis tick: whole numbers without decimals (steps, epochs), others with up to three.
fn tick(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{:.0}", x)
    } else {
        let text = format!("{x:.3}");
        text.trim_end_matches('0').to_string()
    }
}

/// A legend column: a swatch and a label per entry, from the top.
fn legend<'a, DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: impl Iterator<Item = (&'a str, RGBColor)>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (i, (label, c)) in entries.enumerate() {
        let y = 60 + 24 * i as i32;
        area.draw(&PathElement::new(vec![(8, y), (34, y)], c.stroke_width(3)))?;
        area.draw(&Text::new(
            label.to_string(),
            (42, y - 9),
            ("sans-serif", 15).into_font(),
        ))?;
    }
    Ok(())
}

/// A vertical colour bar in `area`: `colour(v)` for v from `lo` to `hi` (bottom to top), with
/// the axis labelled by `label(v)` and described by `desc`.
fn colour_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    (lo, hi): (f64, f64),
    colour: impl Fn(f64) -> RGBColor,
    label: impl Fn(&f64) -> String,
    desc: &str,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let mut bar = ChartBuilder::on(area)
        .margin_top(50)
        .margin_bottom(40)
        .margin_right(8)
        .y_label_area_size(0)
        .right_y_label_area_size(52)
        .build_cartesian_2d(0.0..1.0, lo..hi)?
        .set_secondary_coord(0.0..1.0, lo..hi);
    const STEPS: usize = 64;
    let cells = (0..STEPS).map(|i| {
        let a = lo + (hi - lo) * i as f64 / STEPS as f64;
        let b = lo + (hi - lo) * (i + 1) as f64 / STEPS as f64;
        Rectangle::new([(0.0, a), (1.0, b)], colour((a + b) / 2.0).filled())
    });
    bar.draw_series(cells)?;
    bar.configure_secondary_axes()
        .y_labels(5)
        .y_label_formatter(&label)
        .y_desc(desc)
        .label_style(("sans-serif", 12))
        .draw()?;
    Ok(())
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
    let width = 420 * cols as u32;
    let root = BitMapBackend::new(path, (width + 110, 60 + 260 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| err(&e))?;
    let (grid, bar) = root.split_horizontally(width);
    // The bar's axis is log2(load) / 2 in [−1, 1]: loads ¼ … 4.
    colour_bar(
        &bar,
        (-1.0, 1.0),
        |v| load_color((2.0 * v).exp2()),
        |v| format!("{:.2}", (2.0 * v).exp2()),
        "load E·f (1 = balanced)",
    )
    .map_err(|e| err(&e))?;
    for (panel, area) in panels.iter().zip(grid.split_evenly((rows, cols))) {
        let experts = panel.fractions.first().map_or(1, |r| r.len());
        let last = *panel.steps.last().unwrap_or(&1) as f64;
        // Expert e's row spans e − ½ … e + ½, so the integer ticks name the rows.
        let mut chart = ChartBuilder::on(&area)
            .caption(&panel.title, ("sans-serif", 15))
            .margin(6)
            .x_label_area_size(34)
            .y_label_area_size(40)
            .build_cartesian_2d(0.0..last, -0.5..experts as f64 - 0.5)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(5)
            .y_labels(experts.min(8))
            .x_label_formatter(&tick)
            .y_label_formatter(&|y| {
                if (y - y.round()).abs() < 1e-6 && *y >= 0.0 {
                    format!("{}", y.round() as usize)
                } else {
                    String::new()
                }
            })
            .label_style(("sans-serif", 12))
            .x_desc("step")
            .y_desc("expert")
            .draw()
            .map_err(|e| err(&e))?;
        let mut prev = 0.0;
        let mut cells = Vec::new();
        for (col, row) in panel.steps.iter().zip(&panel.fractions) {
            let x1 = *col as f64;
            for (e, f) in row.iter().enumerate() {
                cells.push(Rectangle::new(
                    [(prev, e as f64 - 0.5), (x1, e as f64 + 0.5)],
                    load_color(f * experts as f64).filled(),
                ));
            }
            prev = x1;
        }
        chart.draw_series(cells).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

/// A y range for loss curves: every point of every series (nothing clipped).
pub fn loss_range(series: &[Series]) -> (f64, f64) {
    let values = || {
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|v| v.is_finite())
    };
    (
        values().fold(f64::MAX, f64::min),
        values().fold(f64::MIN, f64::max),
    )
}

/// One matrix heatmap: rows (e.g. domains) × columns (e.g. experts), values in [0, 1].
pub struct Matrix {
    /// Panel title.
    pub title: String,
    /// Row labels, top to bottom.
    pub rows: Vec<String>,
    /// Description of the column axis (columns are numbered from 0).
    pub col_desc: String,
    /// Description of the row axis.
    pub row_desc: String,
    /// `[row][col]` values in [0, 1].
    pub values: Vec<Vec<f64>>,
}

/// White (0) to dark blue (1).
fn share_color(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let mix = |a: u8| (255.0 + (a as f64 - 255.0) * v) as u8;
    RGBColor(mix(8), mix(48), mix(107))
}

/// A grid of matrix heatmaps with the value printed in each cell and one colour bar (0 … 1,
/// described by `scale`).
pub fn matrices(
    path: &Path,
    title: &str,
    panels: &[Matrix],
    cols: usize,
    scale: &str,
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("plotting {}: {e}", path.display());
    let rows = panels.len().div_ceil(cols);
    let n_cols = panels
        .first()
        .map_or(1, |p| p.values.first().map_or(1, Vec::len));
    let cell_w = (560 / n_cols.max(1)).clamp(40, 80) as u32;
    let panel_w = 150 + cell_w * n_cols as u32;
    let n_rows = panels.first().map_or(1, |p| p.rows.len());
    let panel_h = 110 + 44 * n_rows as u32;
    let width = panel_w * cols as u32;
    let root =
        BitMapBackend::new(path, (width + 110, 50 + panel_h * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| err(&e))?;
    let (grid, bar) = root.split_horizontally(width);
    colour_bar(&bar, (0.0, 1.0), share_color, |v| format!("{v:.1}"), scale).map_err(|e| err(&e))?;
    for (panel, area) in panels.iter().zip(grid.split_evenly((rows, cols))) {
        let (nr, nc) = (panel.rows.len(), panel.values.first().map_or(0, Vec::len));
        let labels = panel.rows.clone();
        // Cell (r, c) is centred on (c, nr − 1 − r), so the integer ticks name the cells.
        let mut chart = ChartBuilder::on(&area)
            .caption(&panel.title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(100)
            .build_cartesian_2d(-0.5..nc as f64 - 0.5, -0.5..nr as f64 - 0.5)
            .map_err(|e| err(&e))?;
        let whole = |v: f64| (v - v.round()).abs() < 1e-6;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(nc)
            .y_labels(nr)
            .x_label_formatter(&|x| {
                if whole(*x) && *x >= 0.0 {
                    format!("{}", x.round() as usize)
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| {
                if whole(*y) && *y >= 0.0 {
                    // Row 0 at the top.
                    labels
                        .get(nr - 1 - y.round() as usize)
                        .cloned()
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .x_desc(panel.col_desc.as_str())
            .y_desc(panel.row_desc.as_str())
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| err(&e))?;
        let mut cells = Vec::new();
        let mut texts = Vec::new();
        for (r, row) in panel.values.iter().enumerate() {
            let y = (nr - 1 - r) as f64;
            for (c, v) in row.iter().enumerate() {
                let x = c as f64;
                cells.push(Rectangle::new(
                    [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                    share_color(*v).filled(),
                ));
                let ink = if *v > 0.55 { WHITE } else { BLACK };
                texts.push(Text::new(
                    format!("{:.0}", v * 100.0),
                    (x - 0.15, y + 0.12),
                    ("sans-serif", 12).into_font().color(&ink),
                ));
            }
        }
        chart.draw_series(cells).map_err(|e| err(&e))?;
        chart.draw_series(texts).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}
