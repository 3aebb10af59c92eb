//! Small SVG line plots without dependencies.
//!
//! Reports need a handful of figures (ROC curves on a log FAR axis, a metric against the number
//! of groups with ± one standard deviation over seeds, rank-1 against distractors) and a
//! plotting stack is a heavy dependency for that. A [`LinePlot`] is a set of named [`Series`]
//! drawn as polylines, optionally with markers and error bars, on linear or log10 [`Axis`]es,
//! with ticks, grid, axis labels, a title and a legend; [`LinePlot::to_svg`] returns a
//! standalone SVG document that browsers, GitHub and the mdBook render as is.
//!
//! Points that cannot be drawn (NaN or infinite coordinates, values <= 0 on a log axis) are
//! skipped and break the line there; points outside an explicit range are clipped to the plot
//! area. The output never contains `NaN` or `inf`.

use std::fmt::Write as _;
use std::path::Path;

/// How an axis maps values to positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Evenly spaced values.
    Linear,
    /// Evenly spaced powers of ten (values must be > 0).
    Log10,
}

impl Scale {
    fn forward(self, v: f64) -> f64 {
        match self {
            Scale::Linear => v,
            Scale::Log10 => v.log10(),
        }
    }

    fn usable(self, v: f64) -> bool {
        v.is_finite() && (self == Scale::Linear || v > 0.0)
    }
}

/// Where the legend box sits inside the plot area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Legend {
    /// Upper left corner.
    TopLeft,
    /// Upper right corner.
    TopRight,
    /// Lower left corner.
    BottomLeft,
    /// Lower right corner (free space under a ROC curve).
    BottomRight,
    /// No legend.
    Hidden,
}

/// One named line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Name shown in the legend.
    pub name: String,
    /// `(x, y)` points, drawn in the order given.
    pub points: Vec<(f64, f64)>,
    /// Optional half-widths of vertical error bars (y ± e), one per point; NaN skips a bar.
    pub errors: Option<Vec<f64>>,
    /// Draw a circle at each point (for sparse series such as ablations).
    pub markers: bool,
}

impl Series {
    /// A line through `points`.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { name: name.into(), points, errors: None, markers: false }
    }

    /// A line through `(x, y, e)` points with error bars `y ± e` (mean ± std over seeds) and
    /// markers; a NaN `e` draws no bar at that point.
    pub fn with_error_bars(name: impl Into<String>, points: Vec<(f64, f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points: points.iter().map(|&(x, y, _)| (x, y)).collect(),
            errors: Some(points.iter().map(|&(_, _, e)| e).collect()),
            markers: true,
        }
    }

    /// Adds a marker at each point.
    pub fn with_markers(mut self) -> Self {
        self.markers = true;
        self
    }
}

/// One axis: its label, its scale and, optionally, a fixed range.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// The label along the axis.
    pub label: String,
    /// How values map to positions.
    pub scale: Scale,
    /// Fixed `(lo, hi)`; `None` fits the data (rounded out to ticks).
    pub range: Option<(f64, f64)>,
}

impl Axis {
    /// A linear axis fitted to the data.
    pub fn linear(label: impl Into<String>) -> Self {
        Self { label: label.into(), scale: Scale::Linear, range: None }
    }

    /// A log10 axis fitted to the data (whole decades).
    pub fn log10(label: impl Into<String>) -> Self {
        Self { label: label.into(), scale: Scale::Log10, range: None }
    }

    /// Fixes the range to `[lo, hi]`.
    pub fn range(mut self, lo: f64, hi: f64) -> Self {
        self.range = Some((lo, hi));
        self
    }
}

/// A line plot.
#[derive(Debug, Clone, PartialEq)]
pub struct LinePlot {
    /// Title above the plot.
    pub title: String,
    /// Horizontal axis.
    pub x: Axis,
    /// Vertical axis.
    pub y: Axis,
    /// Legend position.
    pub legend: Legend,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The lines.
    pub series: Vec<Series>,
}

/// Colours of successive series (matplotlib's tab10, readable on white and for most colour
/// vision deficiencies in the first few entries).
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

const MARGIN_LEFT: f64 = 72.0;
const MARGIN_RIGHT: f64 = 24.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 56.0;

/// Ticks of a linear axis: multiples of 1, 2 or 5 × 10^k, about `target` of them, inside
/// `[lo, hi]`.
pub fn linear_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![];
    }
    let step = nice_step((hi - lo) / target.max(1) as f64);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|k| if k == 0 { 0.0 } else { k as f64 * step }).collect()
}

/// The smallest 1, 2 or 5 × 10^k at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * p)
}

/// Ticks of a log axis: the powers of ten inside `[lo, hi]` (both > 0).
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi.is_finite()) || hi < lo {
        return vec![];
    }
    let first = (lo.log10() - 1e-9).ceil() as i32;
    let last = (hi.log10() + 1e-9).floor() as i32;
    (first..=last).map(|k| 10f64.powi(k)).collect()
}

/// Label of a log tick: `1`, `10`, `100`, else `1e-6`.
fn log_label(v: f64) -> String {
    let k = v.log10().round() as i32;
    match k {
        0 => "1".into(),
        1 => "10".into(),
        2 => "100".into(),
        k => format!("1e{k}"),
    }
}

/// Label of a linear tick with as many decimals as the step needs.
fn linear_label(v: f64, step: f64) -> String {
    let decimals = if step > 0.0 { (-step.log10().floor()).max(0.0) as usize } else { 0 };
    let s = format!("{v:.decimals$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// An axis laid out: its scale, its range in transformed units, its ticks.
struct Frame {
    scale: Scale,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    labels: Vec<String>,
}

impl Frame {
    /// Fits an axis to `values` unless `fixed` is given.
    fn new(scale: Scale, fixed: Option<(f64, f64)>, values: &[f64]) -> Frame {
        let (mut lo, mut hi) = match fixed {
            Some((a, b)) if scale.usable(a) && scale.usable(b) && b > a => (a, b),
            _ => {
                let usable = values.iter().copied().filter(|&v| scale.usable(v));
                usable.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)))
            }
        };
        if !lo.is_finite() {
            // Nothing to draw: a unit range.
            (lo, hi) = match scale {
                Scale::Linear => (0.0, 1.0),
                Scale::Log10 => (0.1, 10.0),
            };
        }
        if hi <= lo {
            (lo, hi) = match scale {
                Scale::Linear => {
                    let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
                    (lo - pad, hi + pad)
                }
                Scale::Log10 => (lo / 10.0, hi * 10.0),
            };
        }
        if fixed.is_none() {
            // A fitted range gets a 4 % margin on each side, so that markers and error bars at
            // the extreme points are not cut in half by the frame.
            (lo, hi) = match scale {
                Scale::Linear => {
                    let pad = 0.04 * (hi - lo);
                    (lo - pad, hi + pad)
                }
                Scale::Log10 => {
                    let pad = 0.04 * (hi.log10() - lo.log10());
                    (lo / 10f64.powf(pad), hi * 10f64.powf(pad))
                }
            };
        }
        let (ticks, labels) = match scale {
            Scale::Linear => {
                let ticks = linear_ticks(lo, hi, 6);
                let step = if ticks.len() > 1 { ticks[1] - ticks[0] } else { hi - lo };
                let labels = ticks.iter().map(|&t| linear_label(t, step)).collect();
                (ticks, labels)
            }
            Scale::Log10 => {
                let ticks = log_ticks(lo, hi);
                let labels = ticks.iter().map(|&t| log_label(t)).collect();
                (ticks, labels)
            }
        };
        Frame { scale, lo: scale.forward(lo), hi: scale.forward(hi), ticks, labels }
    }

    /// Position in [0, 1] along the axis, `None` when the value cannot be drawn.
    fn fraction(&self, v: f64) -> Option<f64> {
        if !self.scale.usable(v) {
            return None;
        }
        let f = (self.scale.forward(v) - self.lo) / (self.hi - self.lo);
        f.is_finite().then_some(f)
    }
}

/// The plot area and both laid-out axes, shared by every drawing step so that grid, series and
/// legend all map data to the same pixels.
struct Canvas {
    w: f64,
    h: f64,
    pw: f64,
    ph: f64,
    xa: Frame,
    ya: Frame,
}

impl Canvas {
    /// Pixel x of an axis fraction: 0 is the left edge of the plot area.
    fn px(&self, f: f64) -> f64 {
        MARGIN_LEFT + f * self.pw
    }

    /// Pixel y of an axis fraction: SVG's y grows downwards, so 0 is the bottom edge.
    fn py(&self, f: f64) -> f64 {
        MARGIN_TOP + (1.0 - f) * self.ph
    }

    /// The root element, a white background (viewers may default to transparent) and the clip
    /// path that keeps series inside the frame.
    fn write_open(&self, svg: &mut String) {
        let (w, h, pw, ph) = (self.w, self.h, self.pw, self.ph);
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect x="0" y="0" width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<defs><clipPath id="plot-area"><rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{pw}" height="{ph}"/></clipPath></defs>"#
        );
    }

    /// Grid lines and tick labels of both axes, then the frame, drawn before the series so
    /// that lines lie on top of the grid.
    fn write_grid(&self, svg: &mut String) {
        let (pw, ph) = (self.pw, self.ph);
        for (t, label) in self.xa.ticks.iter().zip(&self.xa.labels) {
            if let Some(f) = self.xa.fraction(*t) {
                let x = self.px(f);
                let _ = writeln!(
                    svg,
                    r##"<line x1="{x:.2}" y1="{MARGIN_TOP}" x2="{x:.2}" y2="{:.2}" stroke="#dddddd"/>"##,
                    MARGIN_TOP + ph
                );
                let _ = writeln!(
                    svg,
                    r#"<text x="{x:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
                    MARGIN_TOP + ph + 16.0,
                    escape(label)
                );
            }
        }
        for (t, label) in self.ya.ticks.iter().zip(&self.ya.labels) {
            if let Some(f) = self.ya.fraction(*t) {
                let y = self.py(f);
                let _ = writeln!(
                    svg,
                    r##"<line x1="{MARGIN_LEFT}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}" stroke="#dddddd"/>"##,
                    MARGIN_LEFT + pw
                );
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.2}" y="{:.2}" text-anchor="end">{}</text>"#,
                    MARGIN_LEFT - 6.0,
                    y + 4.0,
                    escape(label)
                );
            }
        }
        let _ = writeln!(
            svg,
            r#"<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
    }

    /// One series: its line, its error bars and its markers, all in the series' colour.
    fn write_series(&self, svg: &mut String, s: &Series, colour: &str) {
        let (d, dots) = self.line_path(s);
        let _ = writeln!(
            svg,
            r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="1.5" clip-path="url(#plot-area)"/>"#,
            d.trim_end()
        );
        if let Some(errors) = &s.errors {
            let bars = self.error_bar_path(s, errors);
            let _ = writeln!(
                svg,
                r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="1" clip-path="url(#plot-area)"/>"#,
                bars.trim_end()
            );
        }
        if s.markers {
            for (x, y) in dots {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{x:.2}" cy="{y:.2}" r="3" fill="{colour}" clip-path="url(#plot-area)"/>"#
                );
            }
        }
    }

    /// Path data of a series and the pixels of its drawable points (for markers); an
    /// undrawable point lifts the pen, so the line breaks there instead of inventing a value.
    fn line_path(&self, s: &Series) -> (String, Vec<(f64, f64)>) {
        let mut d = String::new();
        let mut pen_down = false;
        let mut dots = Vec::new();
        for &(x, y) in &s.points {
            match (self.xa.fraction(x), self.ya.fraction(y)) {
                (Some(fx), Some(fy)) => {
                    let (x, y) = (self.px(fx), self.py(fy));
                    let _ = write!(d, "{}{x:.2} {y:.2} ", if pen_down { "L" } else { "M" });
                    pen_down = true;
                    dots.push((x, y));
                }
                _ => pen_down = false,
            }
        }
        (d, dots)
    }

    /// Path data of all error bars of a series as one path, so that a series adds one element
    /// however many points it has.
    fn error_bar_path(&self, s: &Series, errors: &[f64]) -> String {
        let mut bars = String::new();
        for (&(x, y), &e) in s.points.iter().zip(errors) {
            let (Some(fx), true) = (self.xa.fraction(x), e.is_finite()) else { continue };
            // On a log y axis a lower end <= 0 is drawn at the bottom of the plot.
            let lo = self.ya.fraction(y - e.abs()).unwrap_or(0.0);
            let Some(hi) = self.ya.fraction(y + e.abs()) else { continue };
            let (x, y0, y1) = (self.px(fx), self.py(lo), self.py(hi));
            let _ = write!(
                bars,
                "M{x:.2} {y0:.2} L{x:.2} {y1:.2} M{:.2} {y0:.2} L{:.2} {y0:.2} M{:.2} {y1:.2} L{:.2} {y1:.2} ",
                x - 4.0,
                x + 4.0,
                x - 4.0,
                x + 4.0
            );
        }
        bars
    }
}

impl LinePlot {
    /// An empty 640 x 480 plot with the legend at the lower right.
    pub fn new(title: impl Into<String>, x: Axis, y: Axis) -> Self {
        Self {
            title: title.into(),
            x,
            y,
            legend: Legend::BottomRight,
            width: 640,
            height: 480,
            series: Vec::new(),
        }
    }

    /// Places the legend.
    pub fn with_legend(mut self, legend: Legend) -> Self {
        self.legend = legend;
        self
    }

    /// Adds a series (drawn in the next palette colour).
    pub fn add(&mut self, series: Series) {
        self.series.push(series);
    }

    /// The plot as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let canvas = self.canvas();
        let mut svg = String::new();
        canvas.write_open(&mut svg);
        canvas.write_grid(&mut svg);
        for (i, s) in self.series.iter().enumerate() {
            canvas.write_series(&mut svg, s, PALETTE[i % PALETTE.len()]);
        }
        self.write_labels(&mut svg, &canvas);
        if self.legend != Legend::Hidden && !self.series.is_empty() {
            self.write_legend(&mut svg, &canvas);
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// Sizes the plot area and fits both axes once, so that every drawing step agrees.
    fn canvas(&self) -> Canvas {
        let (w, h) = (self.width.max(200) as f64, self.height.max(150) as f64);
        let (pw, ph) = (w - MARGIN_LEFT - MARGIN_RIGHT, h - MARGIN_TOP - MARGIN_BOTTOM);
        let (xs, ys) = self.data_values();
        let xa = Frame::new(self.x.scale, self.x.range, &xs);
        let ya = Frame::new(self.y.scale, self.y.range, &ys);
        Canvas { w, h, pw, ph, xa, ya }
    }

    /// All x and y values to fit the axes to; error-bar ends count as y values so that a
    /// fitted range shows whole bars.
    fn data_values(&self) -> (Vec<f64>, Vec<f64>) {
        let xs: Vec<f64> = self.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
        let mut ys: Vec<f64> =
            self.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).collect();
        for s in &self.series {
            if let Some(e) = &s.errors {
                for (&(_, y), &e) in s.points.iter().zip(e) {
                    if e.is_finite() {
                        ys.extend([y - e.abs(), y + e.abs()]);
                    }
                }
            }
        }
        (xs, ys)
    }

    /// Title and axis labels, drawn after the series so that no line covers them.
    fn write_labels(&self, svg: &mut String, canvas: &Canvas) {
        let (h, pw, ph) = (canvas.h, canvas.pw, canvas.ph);
        let _ = writeln!(
            svg,
            r#"<text x="{:.2}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
            MARGIN_LEFT + pw / 2.0,
            escape(&self.title)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
            MARGIN_LEFT + pw / 2.0,
            h - 14.0,
            escape(&self.x.label)
        );
        let _ = writeln!(
            svg,
            r#"<text x="18" y="{:.2}" text-anchor="middle" transform="rotate(-90 18 {:.2})">{}</text>"#,
            MARGIN_TOP + ph / 2.0,
            MARGIN_TOP + ph / 2.0,
            escape(&self.y.label)
        );
    }

    /// The legend box in its corner, sized from the longest name since SVG cannot measure
    /// text; drawn last so that it covers the lines beneath it.
    fn write_legend(&self, svg: &mut String, canvas: &Canvas) {
        let (pw, ph) = (canvas.pw, canvas.ph);
        let longest = self.series.iter().map(|s| s.name.chars().count()).max().unwrap_or(0) as f64;
        let (bw, bh) = (longest * 7.0 + 40.0, self.series.len() as f64 * 18.0 + 8.0);
        let bx = match self.legend {
            Legend::TopLeft | Legend::BottomLeft => MARGIN_LEFT + 8.0,
            _ => MARGIN_LEFT + pw - bw - 8.0,
        };
        let by = match self.legend {
            Legend::TopLeft | Legend::TopRight => MARGIN_TOP + 8.0,
            _ => MARGIN_TOP + ph - bh - 8.0,
        };
        let _ = writeln!(
            svg,
            r##"<rect x="{bx:.2}" y="{by:.2}" width="{bw:.2}" height="{bh:.2}" fill="white" fill-opacity="0.85" stroke="#999999"/>"##
        );
        for (i, s) in self.series.iter().enumerate() {
            let y = by + 16.0 + 18.0 * i as f64;
            let colour = PALETTE[i % PALETTE.len()];
            let _ = writeln!(
                svg,
                r#"<line x1="{:.2}" y1="{:.2}" x2="{:.2}" y2="{:.2}" stroke="{colour}" stroke-width="2"/>"#,
                bx + 6.0,
                y - 4.0,
                bx + 26.0,
                y - 4.0
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.2}" y="{y:.2}">{}</text>"#,
                bx + 32.0,
                escape(&s.name)
            );
        }
    }

    /// Writes the SVG to `path` whole ([`crate::util::fs::write_atomic`]); the error names
    /// the file.
    pub fn save(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        crate::util::fs::write_atomic(path.as_ref(), self.to_svg().as_bytes())
            .map_err(|e| std::io::Error::new(e.source.kind(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(svg: &str, tag: &str) -> usize {
        svg.matches(tag).count()
    }

    /// The x position of the `<text>` whose content is `label`.
    fn text_x(svg: &str, label: &str) -> f64 {
        let line = svg
            .lines()
            .find(|l| l.starts_with("<text") && l.ends_with(&format!(">{label}</text>")))
            .unwrap();
        let start = line.find("x=\"").unwrap() + 3;
        line[start..].split('"').next().unwrap().parse().unwrap()
    }

    #[test]
    fn log_axis_places_powers_of_ten_evenly() {
        let mut plot = LinePlot::new(
            "ROC",
            Axis::log10("FAR").range(1e-6, 1.0),
            Axis::linear("TAR").range(0.0, 1.0),
        );
        plot.add(Series::new("model", vec![(1e-6, 0.5), (1e-3, 0.9), (1.0, 1.0)]));
        let svg = plot.to_svg();
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"")
                && svg.ends_with("</svg>\n")
        );
        // Seven decades 1e-6 .. 1 on a 640 - 72 - 24 = 544 px axis: 1e-3 sits in the middle.
        let left = MARGIN_LEFT;
        let width = 640.0 - MARGIN_LEFT - MARGIN_RIGHT;
        assert!((text_x(&svg, "1e-6") - left).abs() < 0.01);
        assert!((text_x(&svg, "1e-3") - (left + width / 2.0)).abs() < 0.01);
        assert!((text_x(&svg, "1e-4") - (left + width / 3.0)).abs() < 0.01);
        assert!((text_x(&svg, "1") - (left + width)).abs() < 0.01);
        // Texts: 7 x ticks, 6 y ticks (0, 0.2 .. 1), title, 2 axis labels, 1 legend entry.
        assert_eq!(count(&svg, "<text"), 7 + 6 + 3 + 1);
        assert_eq!(count(&svg, "<path"), 1);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn error_bars_markers_and_skipped_points() {
        let mut plot = LinePlot::new(
            "accuracy vs groups",
            Axis::linear("groups"),
            Axis::linear("accuracy <%> & \"more\""),
        )
        .with_legend(Legend::TopLeft);
        plot.add(Series::with_error_bars(
            "S-GroupFace",
            vec![(4.0, 0.44, 0.01), (16.0, 0.4435, f64::NAN), (32.0, 0.4678, 0.02)],
        ));
        plot.add(Series::new(
            "broken",
            vec![(1.0, 0.4), (f64::NAN, 0.5), (8.0, f64::INFINITY), (30.0, 0.45)],
        ));
        let svg = plot.to_svg();
        // Two series paths and one error-bar path; 3 markers.
        assert_eq!(count(&svg, "<path"), 3);
        assert_eq!(count(&svg, "<circle"), 3);
        // Two bars (the NaN one is skipped), each a stem and two caps: 6 moves.
        let bars = svg.lines().filter(|l| l.starts_with("<path")).nth(1).unwrap();
        assert_eq!(bars.matches('M').count(), 6);
        // The broken series restarts its line after the bad points: two moves.
        let broken = svg.lines().filter(|l| l.starts_with("<path")).nth(2).unwrap();
        assert_eq!(broken.matches('M').count(), 2);
        assert!(svg.contains("accuracy &lt;%&gt; &amp; &quot;more&quot;"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // The legend sits in the upper left corner and lists both series.
        assert!(svg.contains(&format!(
            r#"<rect x="{:.2}" y="{:.2}""#,
            MARGIN_LEFT + 8.0,
            MARGIN_TOP + 8.0
        )));
        assert!(svg.contains(">S-GroupFace</text>") && svg.contains(">broken</text>"));
    }

    #[test]
    fn fitted_ranges_have_a_margin_and_ticks_inside() {
        // Data 0..32: 4 % of 32 on each side, ticks every 10 inside.
        let f = Frame::new(Scale::Linear, None, &[0.0, 4.0, 32.0]);
        assert!((f.lo - -1.28).abs() < 1e-12 && (f.hi - 33.28).abs() < 1e-12, "{} {}", f.lo, f.hi);
        assert_eq!(f.labels, ["0", "10", "20", "30"]);
        // Data 2e-5..0.3 (4.18 decades): 0.167 decades of margin, the decades inside as ticks;
        // unusable values are ignored.
        let f = Frame::new(Scale::Log10, None, &[2e-5, 0.3, -1.0, f64::NAN]);
        assert!(f.lo < 2e-5f64.log10() && f.hi > 0.3f64.log10() && f.hi < 0.0);
        assert_eq!(f.labels, ["1e-4", "1e-3", "1e-2", "1e-1"]);
        // A fixed range is used as given.
        let f = Frame::new(Scale::Linear, Some((0.0, 1.0)), &[5.0]);
        assert_eq!((f.lo, f.hi), (0.0, 1.0));
    }

    #[test]
    fn ticks_are_nice_numbers() {
        assert_eq!(linear_ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(linear_ticks(-3.0, 12.0, 3), vec![0.0, 5.0, 10.0]);
        assert_eq!(log_ticks(2e-6, 0.5), vec![1e-5, 1e-4, 1e-3, 1e-2, 1e-1]);
        assert!(log_ticks(0.0, 1.0).is_empty() && linear_ticks(1.0, 1.0, 5).is_empty());
        assert_eq!(linear_label(-0.0000001, 0.2), "0.0");
        assert_eq!(linear_label(0.6000000000000001, 0.2), "0.6");
        assert_eq!(log_label(1e-6), "1e-6");
        assert_eq!(log_label(100.0), "100");
    }

    #[test]
    fn empty_and_degenerate_plots_are_still_valid() {
        let mut one = LinePlot::new("one point", Axis::linear("x"), Axis::linear("y"));
        one.add(Series::new("a", vec![(2.0, 3.0)]));
        let mut log = LinePlot::new("log, non-positive", Axis::log10("x"), Axis::linear("y"));
        log.add(Series::new("a", vec![(0.0, 1.0), (-1.0, 2.0)]).with_markers());
        for plot in [LinePlot::new("empty", Axis::linear("x"), Axis::log10("y")), one, log] {
            let svg = plot.to_svg();
            assert!(svg.ends_with("</svg>\n"));
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
        let dir = std::env::temp_dir().join(format!("groupface-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.svg");
        LinePlot::new("t", Axis::linear("x"), Axis::linear("y")).save(&path).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("<svg"));
        assert!(LinePlot::new("t", Axis::linear("x"), Axis::linear("y"))
            .save(dir.join("missing").join("p.svg"))
            .is_err());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }
}
