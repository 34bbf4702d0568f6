//! PNG plots for reports: the cost–quality plane and learning curves.
//!
//! Text is drawn with DejaVu Sans, embedded in the binary (`assets/`) and
//! registered with plotters as `sans-serif` on first use, so plots render the
//! same on a machine without any system font.

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use qroute_core::frontier::CostQuality;
use qroute_core::{Error, Result};

/// A router swept over operating points: drawn as a line through its points
/// sorted by cost, with a marker on each.
#[derive(Clone, Debug)]
pub struct Curve {
    pub name: String,
    pub points: Vec<CostQuality>,
}

/// One labelled dot: a single model, the oracle.
#[derive(Clone, Debug)]
pub struct Marker {
    pub name: String,
    pub point: CostQuality,
}

const FONT: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/DejaVuSans.ttf"));
const SIZE: (u32, u32) = (1000, 700);
pub(crate) const FAMILY: &str = "sans-serif";

/// Tableau 10: distinct, readable on white.
const COLORS: [RGBColor; 10] = [
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

pub(crate) fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// Registers the embedded font once per process.
pub(crate) fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok()) {
        Ok(())
    } else {
        Err(Error::InvalidInput("the embedded plot font could not be loaded".into()))
    }
}

pub(crate) fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::io(
        format!("drawing plot {}", path.display()),
        std::io::Error::other(e.to_string()),
    )
}

/// Creates the parent directory of `path` and a white canvas on it.
fn canvas(path: &Path) -> Result<DrawingArea<BitMapBackend<'_>, Shift>> {
    ensure_font()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    Ok(root)
}

/// Cost–quality plot: x = mean cost per prompt (USD, log scale if max/min >
/// 20, else linear), y = mean quality. Curves are lines with markers,
/// markers are labelled dots; all appear in the legend.
pub fn cost_quality_png(path: &Path, title: &str, curves: &[Curve], markers: &[Marker]) -> Result<()> {
    let all: Vec<CostQuality> = curves
        .iter()
        .flat_map(|c| c.points.iter().copied())
        .chain(markers.iter().map(|m| m.point))
        .filter(|p| p.cost.is_finite() && p.quality.is_finite())
        .collect();
    let costs: Vec<f64> = all.iter().map(|p| p.cost).collect();
    let (cmin, cmax) = min_max(&costs).unwrap_or((0.0, 1.0));
    let y = padded(&all.iter().map(|p| p.quality).collect::<Vec<_>>(), 0.05);
    let log = cmin > 0.0 && cmax / cmin > 20.0;

    let root = canvas(path)?;
    let drawn = if log {
        let x = (cmin / 1.3)..(cmax * 1.3);
        let corner = emptiest_corner(&all, |c| (c.ln() - x.start.ln()) / (x.end.ln() - x.start.ln()), &y);
        draw_cost_quality(&root, title, x.log_scale(), y, curves, markers, corner)
    } else {
        let x = padded(&costs, 0.04);
        let span = x.end - x.start;
        let corner = emptiest_corner(&all, |c| (c - x.start) / span, &y);
        draw_cost_quality(&root, title, x, y, curves, markers, corner)
    };
    drawn.map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))
}

#[allow(clippy::too_many_arguments)]
fn draw_cost_quality<X>(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    x: X,
    y: Range<f64>,
    curves: &[Curve],
    markers: &[Marker],
    legend_at: SeriesLabelPosition,
) -> std::result::Result<(), String>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("mean cost per prompt (USD)")
        .y_desc("mean quality")
        .x_label_formatter(&|v| fmt_num(*v))
        .y_label_formatter(&|v| fmt_num(*v))
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(e)?;

    for (i, curve) in curves.iter().enumerate() {
        let c = color(i);
        let mut pts: Vec<(f64, f64)> = curve
            .points
            .iter()
            .filter(|p| p.cost.is_finite() && p.quality.is_finite())
            .map(|p| (p.cost, p.quality))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(e)?
            .label(curve.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(e)?;
    }

    // Dots first (colour cycles, shape changes every ten; a triangle is
    // always filled, so it gets no outline), labels after, so
    // that no dot hides a label.
    let mut labelled: Vec<(&str, (i32, i32))> = Vec::new();
    for (i, marker) in markers.iter().enumerate() {
        let p = marker.point;
        if !(p.cost.is_finite() && p.quality.is_finite()) {
            continue;
        }
        let c = color(curves.len() + i);
        let at = (p.cost, p.quality);
        let name = marker.name.as_str();
        match ((curves.len() + i) / COLORS.len()) % 3 {
            0 => chart
                .draw_series(std::iter::once(
                    EmptyElement::at(at)
                        + Circle::new((0, 0), 6, c.filled())
                        + Circle::new((0, 0), 6, BLACK.stroke_width(1)),
                ))
                .map_err(e)?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, c.filled())),
            1 => chart
                .draw_series(std::iter::once(
                    EmptyElement::at(at) + TriangleMarker::new((0, 0), 8, c.filled()),
                ))
                .map_err(e)?
                .label(name)
                .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 7, c.filled())),
            _ => chart
                .draw_series(std::iter::once(
                    EmptyElement::at(at)
                        + Rectangle::new([(-5, -5), (5, 5)], c.filled())
                        + Rectangle::new([(-5, -5), (5, 5)], BLACK.stroke_width(1)),
                ))
                .map_err(e)?
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x + 5, y - 5), (x + 15, y + 5)], c.filled())),
        };
        labelled.push((name, chart.backend_coord(&at)));
    }

    // Greedy label placement: the first candidate spot next to its dot that
    // stays inside the plot and overlaps no dot and no label placed so far.
    let font = TextStyle::from((FAMILY, 14).into_font());
    let area = chart.plotting_area();
    let (xr, yr) = area.get_pixel_range();
    let mut taken: Vec<[i32; 4]> = labelled
        .iter()
        .map(|&(_, (x, y))| [x - 7, y - 7, x + 7, y + 7])
        .collect();
    for &(name, (x, y)) in &labelled {
        let (w, h) = area.estimate_text_size(name, &font).map_err(e)?;
        let (w, h) = (w as i32, h as i32);
        let candidates = [
            (9, -h - 4),
            (9, 4),
            (-9 - w, -h - 4),
            (-9 - w, 4),
            (-w / 2, -h - 10),
            (-w / 2, 10),
            (9, -2 * h - 8),
            (-9 - w, -2 * h - 8),
        ];
        let boxes = candidates.map(|(dx, dy)| [x + dx, y + dy, x + dx + w, y + dy + h]);
        let inside = |b: &[i32; 4]| b[0] >= xr.start && b[2] <= xr.end && b[1] >= yr.start && b[3] <= yr.end;
        let free = |b: &[i32; 4]| {
            !taken
                .iter()
                .any(|t| b[0] < t[2] && t[0] < b[2] && b[1] < t[3] && t[1] < b[3])
        };
        let chosen = boxes
            .iter()
            .find(|b| inside(b) && free(b))
            .or_else(|| boxes.iter().find(|b| inside(b)))
            .unwrap_or(&boxes[0]);
        taken.push(*chosen);
        root.draw(&Text::new(name, (chosen[0], chosen[1]), font.clone()))
            .map_err(e)?;
    }

    if !curves.is_empty() || !markers.is_empty() {
        chart
            .configure_series_labels()
            .position(legend_at)
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
    }
    Ok(())
}

/// Line plot for learning curves: x = round, y = value, one series each.
pub fn series_png(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let finite: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let x = padded(&finite.iter().map(|p| p.0).collect::<Vec<_>>(), 0.0);
    let y = padded(&finite.iter().map(|p| p.1).collect::<Vec<_>>(), 0.05);
    let as_points: Vec<CostQuality> = finite.iter().map(|&(a, b)| CostQuality::new(a, b)).collect();
    let span = x.end - x.start;
    let corner = emptiest_corner(&as_points, |v| (v - x.start) / span, &y);

    let root = canvas(path)?;
    let drawn = (|| -> std::result::Result<(), String> {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 24))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(x, y)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|v| fmt_num(*v))
            .y_label_formatter(&|v| fmt_num(*v))
            .label_style((FAMILY, 15))
            .axis_desc_style((FAMILY, 17))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(e)?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let c = color(i);
            let pts: Vec<(f64, f64)> = pts
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(e)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .position(corner)
                .label_font((FAMILY, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(e)?;
        }
        Ok(())
    })();
    drawn.map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))
}

fn min_max(v: &[f64]) -> Option<(f64, f64)> {
    let mut it = v.iter().copied().filter(|x| x.is_finite());
    let first = it.next()?;
    Some(it.fold((first, first), |(lo, hi), x| (lo.min(x), hi.max(x))))
}

/// The data range widened by `frac` of its span on each side; never empty.
fn padded(v: &[f64], frac: f64) -> Range<f64> {
    let (lo, hi) = min_max(v).unwrap_or((0.0, 1.0));
    let span = hi - lo;
    if span > 0.0 {
        (lo - frac * span)..(hi + frac * span)
    } else {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - d)..(hi + d)
    }
}

/// The corner of the plot with the fewest points near it, for the legend.
/// `fx` maps a cost (x value) into [0, 1] across the axis.
fn emptiest_corner(points: &[CostQuality], fx: impl Fn(f64) -> f64, y: &Range<f64>) -> SeriesLabelPosition {
    // Upper-left, upper-right, lower-left, lower-right; ties keep this order
    // after lower-right, the usual empty spot of a cost–quality plot.
    let mut counts = [0usize; 4];
    for p in points {
        let u = fx(p.cost);
        let v = (p.quality - y.start) / (y.end - y.start);
        let right = u > 0.5;
        let upper = v > 0.5;
        // Only points well inside a corner region count fully.
        let near = (u - if right { 1.0 } else { 0.0 }).abs() < 0.45 && (v - if upper { 1.0 } else { 0.0 }).abs() < 0.4;
        if near {
            counts[(!upper as usize) * 2 + right as usize] += 1;
        }
    }
    let order = [3usize, 0, 1, 2];
    let best = order.iter().copied().min_by_key(|&i| counts[i]).unwrap_or(3);
    match best {
        0 => SeriesLabelPosition::UpperLeft,
        1 => SeriesLabelPosition::UpperRight,
        2 => SeriesLabelPosition::LowerLeft,
        _ => SeriesLabelPosition::LowerRight,
    }
}

/// A tick label with about three significant digits.
pub(crate) fn fmt_num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { "0".into() } else { v.to_string() };
    }
    let e = v.abs().log10().floor();
    if (-3.0..5.0).contains(&e) {
        let decimals = (2.0 - e).max(0.0) as usize;
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        let s = format!("{v:.2e}");
        // "1.50e-5" → "1.5e-5"
        match s.split_once('e') {
            Some((m, x)) if m.contains('.') => {
                format!("{}e{x}", m.trim_end_matches('0').trim_end_matches('.'))
            }
            _ => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_png(path: &Path) {
        let bytes = std::fs::read(path).unwrap();
        assert!(bytes.len() > 1000, "{} bytes", bytes.len());
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }

    fn p(cost: f64, quality: f64) -> CostQuality {
        CostQuality::new(cost, quality)
    }

    #[test]
    fn cost_quality_log_and_linear_write_pngs() {
        let dir = tempfile::tempdir().unwrap();
        let curve = Curve {
            name: "dqn router".into(),
            points: vec![p(2e-5, 0.62), p(1e-4, 0.75), p(4e-5, 0.7), p(3e-4, 0.8)],
        };
        let markers = vec![
            Marker {
                name: "mixtral".into(),
                point: p(1.8e-5, 0.6),
            },
            Marker {
                name: "gpt-4".into(),
                point: p(3.2e-4, 0.81),
            },
            Marker {
                name: "oracle".into(),
                point: p(3e-5, 0.9),
            },
        ];
        let log = dir.path().join("nested/log.png");
        cost_quality_png(&log, "Cost vs quality (log)", std::slice::from_ref(&curve), &markers).unwrap();
        assert_png(&log);

        let lin = dir.path().join("linear.png");
        let curve = Curve {
            name: "r".into(),
            points: vec![p(1.0, 0.5), p(2.0, 0.8)],
        };
        let markers = vec![Marker {
            name: "m".into(),
            point: p(3.0, 0.7),
        }];
        cost_quality_png(&lin, "linear", &[curve], &markers).unwrap();
        assert_png(&lin);

        // Nothing to draw still gives a (blank-axes) plot.
        let empty = dir.path().join("empty.png");
        cost_quality_png(&empty, "empty", &[], &[]).unwrap();
        assert_png(&empty);
    }

    #[test]
    fn series_writes_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curve.png");
        let reward: Vec<(f64, f64)> = (0..100).map(|i| (i as f64, 1.0 - (-(i as f64) / 20.0).exp())).collect();
        let regret: Vec<(f64, f64)> = (0..100).map(|i| (i as f64, (i as f64).sqrt() / 10.0)).collect();
        series_png(
            &path,
            "Learning curve",
            "round",
            "value",
            &[("reward".into(), reward), ("regret".into(), regret)],
        )
        .unwrap();
        assert_png(&path);
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(0.75), "0.75");
        assert_eq!(fmt_num(0.00123), "0.00123");
        assert_eq!(fmt_num(0.0001), "1e-4");
        assert_eq!(fmt_num(0.000_123_4), "1.23e-4");
        assert_eq!(fmt_num(1.5e-5), "1.5e-5");
        assert_eq!(fmt_num(250.0), "250");
        assert_eq!(fmt_num(1e6), "1e6");
    }
}
