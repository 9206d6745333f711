//! Hand-made SVG line plots (no plotting dependency): a title, a frame, x and y axes with
//! ticks, labels and grid lines, an optional second y axis on the right, line series with a
//! legend, and labelled vertical markers. Axes are linear, logarithmic, or on the "nines" scale
//! of latency percentiles (50%, 90%, 99%, 99.9%, ... equally spaced: position = -log10(1 - p)),
//! as HdrHistogram's plots are. One [`Plot`] renders to one `<svg>` element.

use std::fmt::Write;

/// Colours that stay distinguishable for colour-blind readers (Okabe-Ito), in series order.
pub const PALETTE: [&str; 7] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
];

/// How values map to positions on an axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    Linear,
    Log10,
    /// Values are percentiles (in percent, < 100); position is -log10(1 - p/100).
    Nines,
}

#[derive(Debug, Clone)]
pub struct Axis {
    pub label: String,
    pub scale: Scale,
    pub min: f64,
    pub max: f64,
    /// (value, label) for each tick.
    pub ticks: Vec<(f64, String)>,
}

impl Axis {
    /// A linear axis from `min` to a round number at or above `max`, with 4-8 round ticks.
    pub fn linear(label: &str, min: f64, max: f64) -> Self {
        let max = if max > min { max } else { min + 1.0 };
        let step = nice_step((max - min) / 5.0);
        let top = (max / step).ceil() * step;
        let bottom = (min / step).floor() * step;
        let mut ticks = Vec::new();
        let mut v = bottom;
        while v <= top + step * 1e-6 {
            ticks.push((v, format_number(v)));
            v += step;
        }
        Axis {
            label: label.into(),
            scale: Scale::Linear,
            min: bottom,
            max: top,
            ticks,
        }
    }

    /// A log axis from the power of ten at or below `min` to the one at or above `max`
    /// (both > 0), ticked at 1, 2 and 5 times powers of ten when it spans few decades.
    pub fn log(label: &str, min: f64, max: f64) -> Self {
        let min = if min > 0.0 { min } else { 1e-3 };
        let max = if max > min { max } else { min * 10.0 };
        let lo = min.log10().floor() as i32;
        let hi = (max.log10().ceil() as i32).max(lo + 1);
        let mut ticks = Vec::new();
        for e in lo..=hi {
            let base = 10f64.powi(e);
            let multiples: &[f64] = if hi - lo <= 3 {
                &[1.0, 2.0, 5.0]
            } else {
                &[1.0]
            };
            for m in multiples {
                let v = base * m;
                if v <= 10f64.powi(hi) * 1.0001 {
                    ticks.push((v, format_number(v)));
                }
            }
        }
        Axis {
            label: label.into(),
            scale: Scale::Log10,
            min: 10f64.powi(lo),
            max: 10f64.powi(hi),
            ticks,
        }
    }

    /// A latency axis: logarithmic when the values span more than a factor of 20, else
    /// linear from 0.
    pub fn latency(label: &str, values: impl Iterator<Item = f64> + Clone) -> Self {
        let positive = values.clone().filter(|v| *v > 0.0);
        let min = positive.clone().fold(f64::INFINITY, f64::min);
        let max = values.fold(0.0, f64::max);
        if min.is_finite() && max / min > 20.0 {
            Axis::log(label, min, max)
        } else {
            // Headroom, so the highest point is not drawn on the frame.
            Axis::linear(label, 0.0, max * 1.05)
        }
    }

    /// Percentiles from 50% to `max_percentile` on the nines scale.
    pub fn nines(label: &str, max_percentile: f64) -> Self {
        let ticks = [50.0, 90.0, 99.0, 99.9, 99.99, 99.999, 99.9999]
            .into_iter()
            .filter(|p| *p <= max_percentile + 1e-9)
            .map(|p| (p, format!("{}%", format_number(p))))
            .collect();
        Axis {
            label: label.into(),
            scale: Scale::Nines,
            min: 50.0,
            max: max_percentile,
            ticks,
        }
    }

    /// Where `v` falls between the axis ends: 0 at `min`, 1 at `max` (not clamped).
    fn fraction(&self, v: f64) -> f64 {
        let f = |x: f64| match self.scale {
            Scale::Linear => x,
            Scale::Log10 => x.max(f64::MIN_POSITIVE).log10(),
            Scale::Nines => -(1.0 - x / 100.0).max(1e-12).log10(),
        };
        let (a, b) = (f(self.min), f(self.max));
        if (b - a).abs() < f64::EPSILON {
            0.0
        } else {
            (f(v) - a) / (b - a)
        }
    }
}

/// One line.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: String,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
    /// Draw a dot at each point (for sparse series such as ramp steps).
    pub dots: bool,
}

impl Series {
    pub fn new(name: &str, color: &str, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            color: color.into(),
            points,
            dashed: false,
            dots: false,
        }
    }
}

/// A vertical line at `x` with a label.
#[derive(Debug, Clone)]
pub struct Marker {
    pub x: f64,
    pub label: String,
    pub color: String,
}

/// A plot: one `<svg>`.
#[derive(Debug, Clone)]
pub struct Plot {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    /// A second y axis on the right, for `series2`.
    pub y2: Option<Axis>,
    pub series2: Vec<Series>,
    pub markers: Vec<Marker>,
}

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT_PLAIN: f64 = 30.0;
const RIGHT_WITH_Y2: f64 = 80.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 62.0;

impl Plot {
    pub fn new(title: &str, x: Axis, y: Axis) -> Self {
        Plot {
            title: title.into(),
            x,
            y,
            series: Vec::new(),
            y2: None,
            series2: Vec::new(),
            markers: Vec::new(),
        }
    }

    /// The plot as one `<svg>` element.
    pub fn render(&self) -> String {
        let right = if self.y2.is_some() {
            RIGHT_WITH_Y2
        } else {
            RIGHT_PLAIN
        };
        let (x0, x1, y0, y1) = (LEFT, WIDTH - right, HEIGHT - BOTTOM, TOP);
        let px = |v: f64| x0 + self.x.fraction(v) * (x1 - x0);
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="system-ui, sans-serif" font-size="12" role="img" aria-label="{}">"#,
            esc(&self.title)
        );
        let _ = write!(
            s,
            r##"<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/><text x="{}" y="26" font-size="16" font-weight="600" text-anchor="middle">{}</text>"##,
            WIDTH / 2.0,
            esc(&self.title)
        );
        // Grid and ticks: x.
        for (v, label) in &self.x.ticks {
            let x = px(*v);
            if !(x0 - 0.5..=x1 + 0.5).contains(&x) {
                continue;
            }
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" y1="{y1}" x2="{x:.1}" y2="{y0}" stroke="#e4e4e4"/><line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{}" stroke="#333"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                y0 + 5.0,
                y0 + 19.0,
                esc(label)
            );
        }
        // Grid and ticks: y (left), y2 (right, ticks only).
        let py_of = |axis: &Axis, v: f64| y0 - axis.fraction(v) * (y0 - y1);
        for (v, label) in &self.y.ticks {
            let y = py_of(&self.y, *v);
            if !(y1 - 0.5..=y0 + 0.5).contains(&y) {
                continue;
            }
            let _ = write!(
                s,
                r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#e4e4e4"/><line x1="{}" y1="{y:.1}" x2="{x0}" y2="{y:.1}" stroke="#333"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                x0 - 5.0,
                x0 - 8.0,
                y + 4.0,
                esc(label)
            );
        }
        if let Some(y2) = &self.y2 {
            for (v, label) in &y2.ticks {
                let y = py_of(y2, *v);
                if !(y1 - 0.5..=y0 + 0.5).contains(&y) {
                    continue;
                }
                let _ = write!(
                    s,
                    r##"<line x1="{x1}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#333"/><text x="{}" y="{:.1}">{}</text>"##,
                    x1 + 5.0,
                    x1 + 8.0,
                    y + 4.0,
                    esc(label)
                );
            }
            let _ = write!(
                s,
                r#"<text transform="translate({:.1},{:.1}) rotate(90)" text-anchor="middle">{}</text>"#,
                WIDTH - 18.0,
                (y0 + y1) / 2.0,
                esc(&y2.label)
            );
        }
        // Frame and axis labels.
        let _ = write!(
            s,
            r##"<rect x="{x0}" y="{y1}" width="{}" height="{}" fill="none" stroke="#333"/><text x="{:.1}" y="{}" text-anchor="middle">{}</text><text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"##,
            x1 - x0,
            y0 - y1,
            (x0 + x1) / 2.0,
            HEIGHT - 14.0,
            esc(&self.x.label),
            (y0 + y1) / 2.0,
            esc(&self.y.label)
        );
        // Series, clipped to the frame.
        let clip = format!("clip{}", fnv(&self.title));
        let _ = write!(
            s,
            r#"<clipPath id="{clip}"><rect x="{x0}" y="{}" width="{}" height="{}"/></clipPath><g clip-path="url(#{clip})">"#,
            y1 - 4.0,
            x1 - x0,
            y0 - y1 + 8.0
        );
        let mut draw = |series: &[Series], axis: &Axis| {
            for ser in series {
                let pts: Vec<String> = ser
                    .points
                    .iter()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py_of(axis, y)))
                    .collect();
                if pts.is_empty() {
                    continue;
                }
                let dash = if ser.dashed {
                    r#" stroke-dasharray="6 4""#
                } else {
                    ""
                };
                let _ = write!(
                    s,
                    r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#,
                    esc(&ser.color),
                    pts.join(" ")
                );
                if ser.dots {
                    for p in &pts {
                        let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                        let _ = write!(
                            s,
                            r#"<circle cx="{x}" cy="{y}" r="3.5" fill="{}"/>"#,
                            esc(&ser.color)
                        );
                    }
                }
            }
        };
        draw(&self.series, &self.y);
        if let Some(y2) = &self.y2 {
            draw(&self.series2, y2);
        }
        s.push_str("</g>");
        // Markers.
        for (i, m) in self.markers.iter().enumerate() {
            let x = px(m.x);
            // The label on the side with more room.
            let (tx, anchor) = if x > (x0 + x1) / 2.0 {
                (x - 5.0, "end")
            } else {
                (x + 5.0, "start")
            };
            let _ = write!(
                s,
                r#"<line x1="{x:.1}" y1="{y1}" x2="{x:.1}" y2="{y0}" stroke="{c}" stroke-width="2" stroke-dasharray="2 3"/><text x="{tx:.1}" y="{:.1}" fill="{c}" font-weight="600" text-anchor="{anchor}">{}</text>"#,
                y1 + 16.0 + 16.0 * i as f64,
                esc(&m.label),
                c = esc(&m.color)
            );
        }
        // Legend: top left inside the frame, on a white box.
        let entries: Vec<&Series> = self.series.iter().chain(&self.series2).collect();
        if !entries.is_empty() {
            let longest = entries
                .iter()
                .map(|e| e.name.chars().count())
                .max()
                .unwrap_or(0);
            let w = 40.0 + 7.0 * longest as f64;
            let h = 8.0 + 18.0 * entries.len() as f64;
            let (lx, ly) = (
                x0 + 10.0,
                y1 + 10.0 + 16.0 * self.markers.len() as f64 + 6.0,
            );
            let _ = write!(
                s,
                r##"<rect x="{lx}" y="{ly}" width="{w:.0}" height="{h:.0}" fill="#ffffff" fill-opacity="0.85" stroke="#bbb"/>"##
            );
            for (i, e) in entries.iter().enumerate() {
                let y = ly + 16.0 + 18.0 * i as f64;
                let dash = if e.dashed {
                    r#" stroke-dasharray="6 4""#
                } else {
                    ""
                };
                let _ = write!(
                    s,
                    r#"<line x1="{}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{:.1}">{}</text>"#,
                    lx + 8.0,
                    y - 4.0,
                    lx + 30.0,
                    y - 4.0,
                    esc(&e.color),
                    lx + 36.0,
                    y,
                    esc(&e.name)
                );
            }
        }
        s.push_str("</svg>");
        s
    }
}

/// 1, 2 or 5 times a power of ten, at or above `rough`.
fn nice_step(rough: f64) -> f64 {
    if !(rough.is_finite() && rough > 0.0) {
        return 1.0;
    }
    let base = 10f64.powf(rough.log10().floor());
    let m = rough / base;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * base
}

/// A tick label: `0.05`, `2`, `15k`, `1.5M`, `99.99`.
pub fn format_number(v: f64) -> String {
    let a = v.abs();
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if a >= 1e6 {
        format!("{}M", trim(format!("{:.2}", v / 1e6)))
    } else if a >= 1e4 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if a >= 100.0 || a == 0.0 {
        trim(format!("{v:.0}"))
    } else if a >= 1.0 {
        trim(format!("{v:.3}"))
    } else {
        trim(format!("{v:.4}"))
    }
}

/// XML text/attribute escaping.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A short stable id from a string (for clip-path ids unique within a page).
fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x01000193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nines_scale_spaces_each_nine_equally() {
        let axis = Axis::nines("percentile", 99.999);
        let f90 = axis.fraction(90.0);
        let f99 = axis.fraction(99.0);
        let f999 = axis.fraction(99.9);
        assert!(axis.fraction(50.0).abs() < 1e-12);
        assert!((axis.fraction(99.999) - 1.0).abs() < 1e-9);
        assert!(((f99 - f90) - (f999 - f99)).abs() < 1e-9);
        let labels: Vec<_> = axis.ticks.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["50%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
    }

    #[test]
    fn linear_axes_get_round_ticks_covering_the_data() {
        let axis = Axis::linear("req/s", 0.0, 9_300.0);
        assert_eq!(axis.min, 0.0);
        assert!(axis.max >= 9_300.0);
        let values: Vec<f64> = axis.ticks.iter().map(|t| t.0).collect();
        assert_eq!(values, [0.0, 2000.0, 4000.0, 6000.0, 8000.0, 10000.0]);
    }

    #[test]
    fn log_axes_span_whole_decades() {
        let axis = Axis::log("ms", 0.2, 1300.0);
        assert_eq!((axis.min, axis.max), (0.1, 10_000.0));
        assert!((axis.fraction(1.0) - 0.2).abs() < 1e-9);
        assert!(Axis::latency("ms", [0.1, 1000.0].into_iter()).scale == Scale::Log10);
        assert!(Axis::latency("ms", [1.0, 2.0].into_iter()).scale == Scale::Linear);
    }

    #[test]
    fn a_plot_is_one_svg_with_its_title_series_and_markers_escaped() {
        let mut plot = Plot::new(
            "a <b> & c",
            Axis::linear("x", 0.0, 10.0),
            Axis::linear("y", 0.0, 10.0),
        );
        plot.series.push(Series::new(
            "s<1>",
            PALETTE[0],
            vec![(0.0, 1.0), (10.0, 5.0)],
        ));
        plot.markers.push(Marker {
            x: 5.0,
            label: "knee".into(),
            color: "#c00".into(),
        });
        let svg = plot.render();
        assert_eq!(svg.matches("<svg").count(), 1);
        assert!(svg.ends_with("</svg>"));
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        assert!(svg.contains("s&lt;1&gt;"));
        assert!(svg.contains("<polyline"));
        assert!(svg.contains(">knee</text>"));
    }

    #[test]
    fn numbers_are_labelled_compactly() {
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(2.5), "2.5");
        assert_eq!(format_number(15_000.0), "15k");
        assert_eq!(format_number(99.99), "99.99");
        assert_eq!(format_number(0.05), "0.05");
        assert_eq!(format_number(1_500_000.0), "1.5M");
    }
}
