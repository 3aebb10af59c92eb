//! Small SVG line plots and bar charts without dependencies.
//!
//! Reports need a handful of figures (ROC curves on a log FAR axis, a metric against the number
//! of groups with ± one standard deviation over seeds, rank-1 against distractors, training
//! curves, the share of images per group) and a plotting stack is a heavy dependency for that.
//! A [`LinePlot`] is a set of named [`Series`] drawn as polylines, optionally with markers and
//! error bars, on linear or log10 [`Axis`]es, with ticks, grid, axis labels, a title and a
//! legend; [`LinePlot::to_svg`] returns a standalone SVG document that browsers, GitHub and the
//! mdBook render as is. A [`BarChart`] draws one bar per category in the same frame, with an
//! optional dashed reference line; [`Panels`] puts several line plots side by side in one
//! document (small multiples), each with its own axes.
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
    /// Ticks only at whole numbers (epochs, counts) on a linear axis.
    pub whole_ticks: bool,
}

impl Axis {
    /// A linear axis fitted to the data.
    pub fn linear(label: impl Into<String>) -> Self {
        Self { label: label.into(), scale: Scale::Linear, range: None, whole_ticks: false }
    }

    /// A log10 axis fitted to the data (whole decades).
    pub fn log10(label: impl Into<String>) -> Self {
        Self { label: label.into(), scale: Scale::Log10, range: None, whole_ticks: false }
    }

    /// Fixes the range to `[lo, hi]`.
    pub fn range(mut self, lo: f64, hi: f64) -> Self {
        self.range = Some((lo, hi));
        self
    }

    /// Puts ticks at whole numbers only: two epochs would otherwise be ticked 1.0, 1.2, ...
    pub fn whole_ticks(mut self) -> Self {
        self.whole_ticks = true;
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

    /// Lays out `axis` for `values`, with whole-number ticks where it asks for them.
    fn for_axis(axis: &Axis, values: &[f64]) -> Frame {
        let mut frame = Frame::new(axis.scale, axis.range, values);
        if axis.whole_ticks && axis.scale == Scale::Linear {
            let step = match frame.ticks.as_slice() {
                [a, b, ..] => b - a,
                _ => 0.0,
            };
            // A step below 1 means a range narrower than about six units, so this lists at
            // most a handful of integers.
            if step < 1.0 {
                let (first, last) = (frame.lo.ceil() as i64, frame.hi.floor() as i64);
                frame.ticks = (first..=last).map(|k| k as f64).collect();
                frame.labels = (first..=last).map(|k| k.to_string()).collect();
            }
        }
        frame
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
    /// Id of the clip path of the plot area, unique within the document (several panels
    /// share one document).
    clip: String,
}

/// How a legend entry shows what it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// A solid line (a series).
    Line,
    /// A dashed line (a reference value).
    Dashed,
    /// A filled block (bars).
    Block,
}

/// The root element and a white background (viewers may default to transparent).
fn write_root(svg: &mut String, w: f64, h: f64) {
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect x="0" y="0" width="{w}" height="{h}" fill="white"/>"#);
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

    /// The clip path that keeps series and bars inside the frame.
    fn write_clip(&self, svg: &mut String) {
        let (pw, ph, clip) = (self.pw, self.ph, &self.clip);
        let _ = writeln!(
            svg,
            r#"<defs><clipPath id="{clip}"><rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{pw}" height="{ph}"/></clipPath></defs>"#
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
            r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="1.5" clip-path="url(#{})"/>"#,
            d.trim_end(),
            self.clip
        );
        if let Some(errors) = &s.errors {
            let bars = self.error_bar_path(s, errors);
            let _ = writeln!(
                svg,
                r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="1" clip-path="url(#{})"/>"#,
                bars.trim_end(),
                self.clip
            );
        }
        if s.markers {
            for (x, y) in dots {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{x:.2}" cy="{y:.2}" r="3" fill="{colour}" clip-path="url(#{})"/>"#,
                    self.clip
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

    /// Title and axis labels, drawn after the data so that nothing covers them.
    fn write_labels(&self, svg: &mut String, title: &str, x_label: &str, y_label: &str) {
        let (h, pw, ph) = (self.h, self.pw, self.ph);
        let _ = writeln!(
            svg,
            r#"<text x="{:.2}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
            MARGIN_LEFT + pw / 2.0,
            escape(title)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
            MARGIN_LEFT + pw / 2.0,
            h - 14.0,
            escape(x_label)
        );
        let _ = writeln!(
            svg,
            r#"<text x="18" y="{:.2}" text-anchor="middle" transform="rotate(-90 18 {:.2})">{}</text>"#,
            MARGIN_TOP + ph / 2.0,
            MARGIN_TOP + ph / 2.0,
            escape(y_label)
        );
    }

    /// The legend box in its corner, sized from the longest name since SVG cannot measure
    /// text; drawn last so that it covers what lies beneath it. `entries` are name, colour and
    /// key.
    fn write_legend(&self, svg: &mut String, legend: Legend, entries: &[(&str, &str, Key)]) {
        if legend == Legend::Hidden || entries.is_empty() {
            return;
        }
        let (pw, ph) = (self.pw, self.ph);
        let longest = entries.iter().map(|e| e.0.chars().count()).max().unwrap_or(0) as f64;
        let (bw, bh) = (longest * 7.0 + 40.0, entries.len() as f64 * 18.0 + 8.0);
        let bx = match legend {
            Legend::TopLeft | Legend::BottomLeft => MARGIN_LEFT + 8.0,
            _ => MARGIN_LEFT + pw - bw - 8.0,
        };
        let by = match legend {
            Legend::TopLeft | Legend::TopRight => MARGIN_TOP + 8.0,
            _ => MARGIN_TOP + ph - bh - 8.0,
        };
        let _ = writeln!(
            svg,
            r##"<rect x="{bx:.2}" y="{by:.2}" width="{bw:.2}" height="{bh:.2}" fill="white" fill-opacity="0.85" stroke="#999999"/>"##
        );
        for (i, &(name, colour, key)) in entries.iter().enumerate() {
            let y = by + 16.0 + 18.0 * i as f64;
            match key {
                Key::Line | Key::Dashed => {
                    let dash = if key == Key::Dashed { r#" stroke-dasharray="6 4""# } else { "" };
                    let _ = writeln!(
                        svg,
                        r#"<line x1="{:.2}" y1="{:.2}" x2="{:.2}" y2="{:.2}" stroke="{colour}" stroke-width="2"{dash}/>"#,
                        bx + 6.0,
                        y - 4.0,
                        bx + 26.0,
                        y - 4.0
                    );
                }
                Key::Block => {
                    let _ = writeln!(
                        svg,
                        r#"<rect x="{:.2}" y="{:.2}" width="20" height="10" fill="{colour}"/>"#,
                        bx + 6.0,
                        y - 9.0
                    );
                }
            }
            let _ =
                writeln!(svg, r#"<text x="{:.2}" y="{y:.2}">{}</text>"#, bx + 32.0, escape(name));
        }
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

    /// Sets the size in pixels (at least 200 x 150).
    pub fn with_size(mut self, width: u32, height: u32) -> Self {
        (self.width, self.height) = (width, height);
        self
    }

    /// Adds a series (drawn in the next palette colour).
    pub fn add(&mut self, series: Series) {
        self.series.push(series);
    }

    /// The plot as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let canvas = self.canvas("plot-area");
        let mut svg = String::new();
        write_root(&mut svg, canvas.w, canvas.h);
        self.write_body(&mut svg, &canvas);
        svg.push_str("</svg>\n");
        svg
    }

    /// Everything inside the root element, so that [`Panels`] can place the plot in a larger
    /// document.
    fn write_body(&self, svg: &mut String, canvas: &Canvas) {
        canvas.write_clip(svg);
        canvas.write_grid(svg);
        for (i, s) in self.series.iter().enumerate() {
            canvas.write_series(svg, s, PALETTE[i % PALETTE.len()]);
        }
        canvas.write_labels(svg, &self.title, &self.x.label, &self.y.label);
        let entries: Vec<(&str, &str, Key)> = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), PALETTE[i % PALETTE.len()], Key::Line))
            .collect();
        canvas.write_legend(svg, self.legend, &entries);
    }

    /// Sizes the plot area and fits both axes once, so that every drawing step agrees.
    fn canvas(&self, clip: &str) -> Canvas {
        let (w, h) = (self.width.max(200) as f64, self.height.max(150) as f64);
        let (pw, ph) = (w - MARGIN_LEFT - MARGIN_RIGHT, h - MARGIN_TOP - MARGIN_BOTTOM);
        let (xs, ys) = self.data_values();
        let xa = Frame::for_axis(&self.x, &xs);
        let ya = Frame::for_axis(&self.y, &ys);
        Canvas { w, h, pw, ph, xa, ya, clip: clip.to_string() }
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

    /// Writes the SVG to `path` whole ([`crate::util::fs::write_atomic`]); the error names
    /// the file.
    pub fn save(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        crate::util::fs::write_atomic(path.as_ref(), self.to_svg().as_bytes())
            .map_err(|e| std::io::Error::new(e.source.kind(), e.to_string()))
    }
}

/// Colour of a [`BarChart`]'s reference line: dark, so that it reads against the bars.
const REFERENCE_COLOUR: &str = "#333333";

/// A bar chart: one bar per category, rising from zero, in the frame of a [`LinePlot`] (grid,
/// ticks, axis labels, title, legend), with an optional dashed horizontal reference line.
///
/// Category `i` of `n` occupies the slot `[i, i + 1]` of an axis running from 0 to `n`; its bar
/// fills the middle 80 % of the slot and its label sits under the slot's centre (every
/// second, fifth, ... label when the slots are too narrow for all of them).
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    /// Title above the chart.
    pub title: String,
    /// Label along the category axis.
    pub x_label: String,
    /// The value axis. Bars are lengths from zero, so its scale is always drawn linear; a
    /// fitted range starts at zero (or below, for negative values).
    pub y: Axis,
    /// Legend name of the bars.
    pub name: String,
    /// `(category label, value)` per bar, left to right; a non-finite value draws no bar.
    pub bars: Vec<(String, f64)>,
    /// `(legend name, value)` of the dashed reference line.
    pub reference: Option<(String, f64)>,
    /// Legend position.
    pub legend: Legend,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl BarChart {
    /// An empty 640 x 480 chart whose bars the legend calls `name`, legend at the upper right.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y: Axis,
        name: impl Into<String>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y,
            name: name.into(),
            bars: Vec::new(),
            reference: None,
            legend: Legend::TopRight,
            width: 640,
            height: 480,
        }
    }

    /// Adds a bar to the right of the others.
    pub fn push(&mut self, label: impl Into<String>, value: f64) {
        self.bars.push((label.into(), value));
    }

    /// Draws a dashed horizontal line at `value`, named `name` in the legend.
    pub fn with_reference(mut self, name: impl Into<String>, value: f64) -> Self {
        self.reference = Some((name.into(), value));
        self
    }

    /// Places the legend.
    pub fn with_legend(mut self, legend: Legend) -> Self {
        self.legend = legend;
        self
    }

    /// The chart as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let canvas = self.canvas();
        let mut svg = String::new();
        write_root(&mut svg, canvas.w, canvas.h);
        canvas.write_clip(&mut svg);
        canvas.write_grid(&mut svg);
        self.write_bars(&mut svg, &canvas);
        let mut entries = vec![(self.name.as_str(), PALETTE[0], Key::Block)];
        if let Some((name, value)) = &self.reference {
            if let Some(f) = canvas.ya.fraction(*value) {
                let y = canvas.py(f);
                let _ = writeln!(
                    svg,
                    r#"<line x1="{MARGIN_LEFT}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}" stroke="{REFERENCE_COLOUR}" stroke-width="1.5" stroke-dasharray="6 4" clip-path="url(#{})"/>"#,
                    MARGIN_LEFT + canvas.pw,
                    canvas.clip
                );
                entries.push((name.as_str(), REFERENCE_COLOUR, Key::Dashed));
            }
        }
        canvas.write_labels(&mut svg, &self.title, &self.x_label, &self.y.label);
        if !self.bars.is_empty() {
            canvas.write_legend(&mut svg, self.legend, &entries);
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// The plot area, the category axis in slot units (no ticks: the bars are labelled one by
    /// one) and the value axis over the bars, zero and the reference value.
    fn canvas(&self) -> Canvas {
        let (w, h) = (self.width.max(200) as f64, self.height.max(150) as f64);
        let (pw, ph) = (w - MARGIN_LEFT - MARGIN_RIGHT, h - MARGIN_TOP - MARGIN_BOTTOM);
        let n = self.bars.len().max(1) as f64;
        let mut xa = Frame::new(Scale::Linear, Some((0.0, n)), &[]);
        (xa.ticks, xa.labels) = (Vec::new(), Vec::new());
        let values = self.bars.iter().map(|b| b.1).chain(self.reference.iter().map(|r| r.1));
        let y = Axis {
            scale: Scale::Linear,
            range: self.y.range.or(bar_range(values)),
            ..self.y.clone()
        };
        let ya = Frame::for_axis(&y, &[]);
        Canvas { w, h, pw, ph, xa, ya, clip: "plot-area".to_string() }
    }

    /// The bars as rectangles from zero to their value, and their category labels.
    fn write_bars(&self, svg: &mut String, canvas: &Canvas) {
        let slot = canvas.pw / self.bars.len().max(1) as f64;
        let widest = self.bars.iter().map(|b| b.0.chars().count()).max().unwrap_or(0) as f64;
        // About 7 px per character at font size 12, and a few pixels between labels.
        let stride = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
            .into_iter()
            .find(|&s| s as f64 * slot >= widest * 7.0 + 4.0)
            .unwrap_or(self.bars.len().max(1));
        let Some(zero) = canvas.ya.fraction(0.0) else { return };
        let base = canvas.py(zero.clamp(0.0, 1.0));
        for (i, (label, value)) in self.bars.iter().enumerate() {
            let (Some(left), Some(right)) =
                (canvas.xa.fraction(i as f64 + 0.1), canvas.xa.fraction(i as f64 + 0.9))
            else {
                continue;
            };
            let (x, width) = (canvas.px(left), canvas.px(right) - canvas.px(left));
            if let Some(f) = canvas.ya.fraction(*value) {
                // Out-of-range ends are pinned to the frame, so no coordinate runs away.
                let top = canvas.py(f.clamp(0.0, 1.0));
                let (y, height) = (top.min(base), (top - base).abs());
                let _ = writeln!(
                    svg,
                    r#"<rect x="{x:.2}" y="{y:.2}" width="{width:.2}" height="{height:.2}" fill="{}" clip-path="url(#{})"/>"#,
                    PALETTE[0], canvas.clip
                );
            }
            if i % stride == 0 {
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
                    x + width / 2.0,
                    MARGIN_TOP + canvas.ph + 16.0,
                    escape(label)
                );
            }
        }
    }
}

/// The value range of a bar chart: from zero (bars are lengths) to the largest value with a
/// 4 % margin, as a fitted [`LinePlot`] axis has; `None` when nothing is finite.
fn bar_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= lo {
        return None;
    }
    let pad = 0.04 * (hi - lo);
    Some((if lo < 0.0 { lo - pad } else { lo }, if hi > 0.0 { hi + pad } else { hi }))
}

/// Space above the panels for the figure's title.
const PANELS_TITLE_BAND: f64 = 36.0;

/// Line plots side by side in one SVG document (small multiples): `columns` to a row, each in
/// a cell as large as the largest plot, under a common title.
#[derive(Debug, Clone, PartialEq)]
pub struct Panels {
    /// Title above all panels.
    pub title: String,
    /// Panels per row.
    pub columns: usize,
    /// The panels, row by row.
    pub plots: Vec<LinePlot>,
}

impl Panels {
    /// No panels yet, `columns` to a row.
    pub fn new(title: impl Into<String>, columns: usize) -> Self {
        Self { title: title.into(), columns: columns.max(1), plots: Vec::new() }
    }

    /// Adds a panel after the others.
    pub fn add(&mut self, plot: LinePlot) {
        self.plots.push(plot);
    }

    /// Where panel `i` sits: `(x, y)` of its upper left corner in the document.
    fn origin(&self, i: usize, cell: (f64, f64)) -> (f64, f64) {
        let columns = self.columns.max(1);
        ((i % columns) as f64 * cell.0, PANELS_TITLE_BAND + (i / columns) as f64 * cell.1)
    }

    /// The panels as one standalone SVG document; each panel is the plot's own drawing,
    /// translated to its cell, with a clip path of its own.
    pub fn to_svg(&self) -> String {
        let canvases: Vec<Canvas> = self
            .plots
            .iter()
            .enumerate()
            .map(|(i, p)| p.canvas(&format!("plot-area-{i}")))
            .collect();
        let cell = canvases.iter().fold((200.0f64, 150.0f64), |(w, h), c| (w.max(c.w), h.max(c.h)));
        let columns = self.columns.max(1).min(self.plots.len().max(1));
        let rows = self.plots.len().div_ceil(columns);
        let (w, h) = (columns as f64 * cell.0, PANELS_TITLE_BAND + rows as f64 * cell.1);
        let mut svg = String::new();
        write_root(&mut svg, w, h);
        let _ = writeln!(
            svg,
            r#"<text x="{:.2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
            w / 2.0,
            escape(&self.title)
        );
        for (i, (plot, canvas)) in self.plots.iter().zip(&canvases).enumerate() {
            let (x, y) = self.origin(i, cell);
            let _ = writeln!(svg, r#"<g transform="translate({x} {y})">"#);
            plot.write_body(&mut svg, canvas);
            svg.push_str("</g>\n");
        }
        svg.push_str("</svg>\n");
        svg
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

    /// The `<rect .../>` lines of bars (those with a fill colour of the palette).
    fn bar_rects(svg: &str) -> Vec<&str> {
        svg.lines().filter(|l| l.starts_with("<rect") && l.contains(PALETTE[0])).collect()
    }

    #[test]
    fn bars_sit_in_their_slots_from_zero() {
        let mut chart =
            BarChart::new("shares", "group", Axis::linear("share").range(0.0, 1.0), "share")
                .with_reference("uniform 1/K", 0.25);
        for (i, v) in [0.5, 0.25, 0.25, 0.0].into_iter().enumerate() {
            chart.push(i.to_string(), v);
        }
        let svg = chart.to_svg();
        // Plot area: 640 - 72 - 24 = 544 px wide, 480 - 40 - 56 = 384 px high. Four slots of
        // 544 / 4 = 136 px; bar i spans x = 72 + (i + 0.1) * 136 .. 72 + (i + 0.9) * 136, so
        // bar 0 starts at 85.6 and is 0.8 * 136 = 108.8 wide. Value v on the 0..1 axis
        // tops out at y = 40 + (1 - v) * 384 and the bar reaches down to zero, y = 424:
        // bar 0 (0.5) is at y = 232, 192 high; bar 1 (0.25) starts at 72 + 1.1 * 136 = 221.6,
        // y = 328, 96 high.
        let bars = bar_rects(&svg);
        assert_eq!(bars.len(), 4 + 1, "four bars and the legend's block");
        assert!(bars[0].starts_with(
            r##"<rect x="85.60" y="232.00" width="108.80" height="192.00" fill="#1f77b4""##
        ));
        assert!(bars[1].starts_with(r#"<rect x="221.60" y="328.00" width="108.80" height="96.00""#));
        assert!(bars[3].starts_with(r#"<rect x="493.60" y="424.00" width="108.80" height="0.00""#));
        // The dashed reference at 0.25 crosses the plot at the top of bar 1: y = 328.
        assert!(svg.contains(
            r##"<line x1="72" y1="328.00" x2="616.00" y2="328.00" stroke="#333333" stroke-width="1.5" stroke-dasharray="6 4""##
        ));
        // Category labels under slot centres 72 + (i + 0.5) * 136; no numeric x ticks.
        assert!((text_x(&svg, "0") - 140.0).abs() < 0.01);
        assert!((text_x(&svg, "3") - 548.0).abs() < 0.01);
        // Texts: 4 categories, 6 y ticks (0, 0.2 .. 1), title, 2 axis labels, 2 legend entries.
        assert_eq!(count(&svg, "<text"), 4 + 6 + 3 + 2);
        assert!(svg.contains(">uniform 1/K</text>") && svg.contains("stroke-dasharray"));
    }

    #[test]
    fn bar_axis_fits_from_zero_and_thins_crowded_labels() {
        // Fitted: 0 .. 0.5 + 4 % of 0.5 = 0.52, so 0.5 tops out at 40 + (1 - 0.5 / 0.52) * 384.
        let mut chart = BarChart::new("t", "group", Axis::linear("share"), "share");
        chart.push("a", 0.5);
        chart.push("b", f64::NAN);
        let svg = chart.to_svg();
        let top = 40.0 + (1.0 - 0.5 / 0.52) * 384.0;
        assert!(bar_rects(&svg)[0].contains(&format!(r#" y="{top:.2}" "#)), "{svg}");
        assert_eq!(bar_rects(&svg).len(), 1 + 1, "no bar for NaN, one legend block");
        assert_eq!(bar_range([0.5, f64::NAN].into_iter()), Some((0.0, 0.52)));
        assert_eq!(bar_range([-1.0, 1.0].into_iter()), Some((-1.08, 1.08)));
        assert_eq!(bar_range([0.0].into_iter()), None);
        // 32 groups: 17 px slots, too narrow for "31" (2 * 7 + 4 = 18 px): every second label.
        let mut chart = BarChart::new("t", "group", Axis::linear("share"), "share");
        for i in 0..32 {
            chart.push(i.to_string(), 1.0 / 32.0);
        }
        let svg = chart.to_svg();
        assert!(svg.contains(">30</text>") && !svg.contains(">31</text>"));
        assert_eq!(bar_rects(&svg).len(), 32 + 1);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // Empty: still a valid document.
        let svg = BarChart::new("t", "x", Axis::linear("y"), "n").to_svg();
        assert!(svg.ends_with("</svg>\n") && !svg.contains("NaN"));
    }

    #[test]
    fn panels_place_each_plot_in_its_cell_with_its_own_clip() {
        let plot = |title: &str| {
            let mut p =
                LinePlot::new(title, Axis::linear("epoch").whole_ticks(), Axis::linear("y"))
                    .with_size(300, 200);
            p.add(Series::new("a", vec![(1.0, 1.0), (2.0, 3.0)]).with_markers());
            p
        };
        let mut panels = Panels::new("all", 2);
        for title in ["one", "two", "three"] {
            panels.add(plot(title));
        }
        let svg = panels.to_svg();
        // Two columns of 300 px, two rows of 200 px under the 36 px title band.
        assert!(
            svg.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg" width="600" height="436""#)
        );
        for (i, origin) in ["0 36", "300 36", "0 236"].iter().enumerate() {
            assert!(svg.contains(&format!(r#"<g transform="translate({origin})">"#)));
            assert!(svg.contains(&format!(r#"<clipPath id="plot-area-{i}">"#)));
            assert!(svg.contains(&format!(r#"clip-path="url(#plot-area-{i})""#)));
        }
        assert!(!svg.contains(r#"id="plot-area""#));
        assert_eq!(count(&svg, "<g "), 3);
        assert_eq!(count(&svg, "</g>"), 3);
        // Epochs 1 and 2 fitted with a margin would be ticked 1.0, 1.2, ...: whole numbers only.
        let f = Frame::for_axis(&Axis::linear("epoch").whole_ticks(), &[1.0, 2.0]);
        assert_eq!(f.labels, ["1", "2"]);
        let f = Frame::for_axis(&Axis::linear("epoch").whole_ticks(), &[1.0, 40.0]);
        assert_eq!(f.labels, ["0", "10", "20", "30", "40"]);
        // A single plot keeps its one clip id.
        assert!(plot("solo").to_svg().contains(r#"<clipPath id="plot-area">"#));
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
