//! `qroute experiment report`: an experiment's results as Markdown and PNG.
//!
//! [`markdown`] writes the design (arms, unit key, window), a table of every
//! arm's numbers, each arm's difference from control and the warnings;
//! [`plot`] draws each arm's mean per metric with its fixed-horizon interval
//! (an error bar) and its always-valid interval (a lighter, wider bar);
//! [`write`] puts both in a directory as `{id}.md` and `{id}.png`.

use qroute_core::calendar::iso_utc;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::plots::{color, ensure_font, fmt_num, plot_err, FAMILY};
use qroute_core::{Error, Result};
use qroute_experiment::results::{ArmResult, Comparison, Estimate, Results};
use qroute_experiment::Experiment;

/// What a missing value is shown as.
const NONE: &str = "—";

/// Size of the PNG: four panels, two by two.
const SIZE: (u32, u32) = (1400, 1000);

/// Formats a number for a table cell.
type Fmt = fn(f64) -> String;

/// One metric of an arm.
type Metric = fn(&ArmResult) -> Option<Estimate>;

/// The report as Markdown. It embeds nothing; [`write`] adds the plot.
pub fn markdown(results: &Results, experiment: &Experiment) -> String {
    let spec = &experiment.spec;
    let pct = |level: f64| format!("{}%", fmt_num(level * 100.0));
    let level = pct(results.level);
    let mut md = String::new();
    let _ = writeln!(md, "# Experiment `{}`\n", spec.id);
    if !spec.description.is_empty() {
        let _ = writeln!(md, "{}\n", spec.description.trim());
    }
    md.push_str("| | |\n|---|---|\n");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(md, "| {k} | {} |", cell(&v));
    };
    row("status", results.status.as_str().into());
    row("unit", format!("`{}`", spec.unit));
    row("created", iso_utc(experiment.created_ms));
    row(
        "window",
        format!(
            "{} → {}",
            iso_utc(experiment.start_ms()),
            experiment
                .end_ms()
                .map_or_else(|| "open (until stopped)".into(), iso_utc)
        ),
    );
    if let Some(s) = experiment.stopped_ms {
        row("stopped", iso_utc(s));
    }
    row("control", results.control.clone());
    row("holdout", pct(spec.holdout));
    row("requests enrolled", results.requests.to_string());
    row("confidence level", level.clone());
    row(
        "always-valid intervals tuned for",
        format!("{} requests per arm", spec.horizon),
    );
    md.push('\n');

    md.push_str("## Design\n\n");
    for a in &spec.arms {
        let strategy = serde_json::to_string(&a.strategy).unwrap_or_else(|_| "?".into());
        let _ = write!(
            md,
            "- **{}**: weight {}, strategy `{strategy}`",
            a.name,
            fmt_num(a.weight)
        );
        if let Some(c) = &a.checkpoint {
            let _ = write!(md, ", frozen checkpoint `{}`", c);
        }
        if a.name == results.control {
            md.push_str(" (control)");
        }
        md.push('\n');
    }
    if spec.holdout > 0.0 {
        let _ = writeln!(
            md,
            "- **{}**: {} of units, served by the gateway's default strategy",
            qroute_experiment::spec::HOLDOUT,
            pct(spec.holdout)
        );
    }
    md.push('\n');

    md.push_str("## Arms\n\n");
    let _ = writeln!(
        md,
        "Means per request, with {level} confidence intervals (fixed-horizon, clustered on the unit). \
         Share: by design (observed share of units in parentheses).\n"
    );
    let _ = writeln!(
        md,
        "| arm | strategy | share | requests | units | error rate | reward mean [{level} CI] | reward always-valid CI \
         | quality [{level} CI] | cost per request | latency p50 | latency p99 |"
    );
    md.push_str("|---|---|---|---:|---:|---|---|---|---|---|---:|---:|\n");
    let total_units: usize = results.arms.iter().map(|a| a.units).sum();
    for a in &results.arms {
        let observed = if total_units > 0 {
            format!(" ({})", fmt_pct(a.units as f64 / total_units as f64))
        } else {
            String::new()
        };
        let requests = if a.pending > 0 {
            format!("{} ({} pending)", a.requests, a.pending)
        } else {
            a.requests.to_string()
        };
        let cells = [
            arm_label(a),
            cell(&a.strategy),
            format!("{}{observed}", fmt_pct(a.expected_share)),
            requests,
            a.units.to_string(),
            a.error_rate.map_or(NONE.into(), |e| {
                format!("{} [{}, {}]", fmt_pct(e.mean), fmt_pct(e.ci[0]), fmt_pct(e.ci[1]))
            }),
            estimate(a.reward, fmt_value),
            a.reward.map_or(NONE.into(), |e| interval(e.always_valid_ci, fmt_value)),
            estimate(a.quality, fmt_value),
            a.cost_usd.map_or(NONE.into(), |e| fmt_usd(e.mean)),
            a.latency_p50_ms.map_or(NONE.into(), fmt_ms),
            a.latency_p99_ms.map_or(NONE.into(), fmt_ms),
        ];
        let _ = writeln!(md, "| {} |", cells.join(" | "));
    }
    md.push('\n');

    md.push_str("## Compared with control\n\n");
    let _ = writeln!(
        md,
        "Each arm minus control `{}`: the difference with its {level} confidence interval and two-sided p-value \
         (valid for one look at a sample size fixed in advance), and the always-valid interval (valid however \
         often the results are looked at).\n",
        results.control
    );
    let others: Vec<&ArmResult> = results.arms.iter().filter(|a| !a.control).collect();
    if others.is_empty() {
        md.push_str("No arm besides control.\n\n");
    } else {
        let _ = writeln!(
            md,
            "| arm | metric | difference [{level} CI] | p-value | always-valid CI | always-valid p |"
        );
        md.push_str("|---|---|---|---:|---|---:|\n");
        for a in others {
            let vs = a.vs_control.as_ref();
            let metrics: [(&str, Option<Comparison>, Fmt); 5] = [
                ("reward", vs.and_then(|v| v.reward), fmt_signed),
                ("quality", vs.and_then(|v| v.quality), fmt_signed),
                ("cost (USD)", vs.and_then(|v| v.cost_usd), fmt_signed_usd),
                ("latency (ms)", vs.and_then(|v| v.latency_ms), fmt_signed_ms),
                ("error rate", vs.and_then(|v| v.error_rate), fmt_signed_pct),
            ];
            for (name, c, f) in metrics {
                let (diff, p, av, avp) = match c {
                    Some(c) => (
                        format!("{} {}", f(c.difference), interval(c.ci, f)),
                        fmt_p(c.p_value),
                        interval(c.always_valid_ci, f),
                        fmt_p(c.always_valid_p_value),
                    ),
                    None => (NONE.into(), NONE.into(), NONE.into(), NONE.into()),
                };
                let _ = writeln!(md, "| {} | {name} | {diff} | {p} | {av} | {avp} |", cell(&a.arm));
            }
        }
        md.push('\n');
    }

    md.push_str("## Warnings\n\n");
    if results.warnings.is_empty() {
        md.push_str("None.\n");
    }
    for w in &results.warnings {
        let _ = writeln!(md, "- {}", w.replace('\n', " "));
    }
    md
}

/// Draws each arm's mean of reward, quality, cost and latency (one panel
/// each) with its fixed-horizon interval as an error bar and its
/// always-valid interval as a lighter, wider bar; control is labelled and
/// its mean drawn across the panel.
pub fn plot(results: &Results, path: &Path) -> Result<()> {
    ensure_font()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    let drawn = (|| -> std::result::Result<(), String> {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let level = fmt_num(results.level * 100.0);
        let body = root
            .titled(
                &format!(
                    "Experiment {}: mean per request; bar: {level}% CI; shaded: always-valid {level}% CI; dashed: control",
                    results.experiment
                ),
                (FAMILY, 24),
            )
            .map_err(e)?;
        let panels = body.split_evenly((2, 2));
        let metrics: [(&str, &str, Metric); 4] = [
            ("reward", "reward", |a| a.reward),
            ("quality", "quality", |a| a.quality),
            ("cost", "USD per request", |a| a.cost_usd),
            ("latency", "ms per request", |a| a.latency_ms),
        ];
        for (area, (title, unit, get)) in panels.iter().zip(metrics) {
            let arms: Vec<(&ArmResult, Option<Estimate>)> = results.arms.iter().map(|a| (a, get(a))).collect();
            panel(&root, area, title, unit, &arms)?;
        }
        Ok(())
    })();
    drawn.map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))
}

/// One metric's panel. `root` is the whole canvas (arm names are drawn on it
/// in absolute pixels, under the plotting area).
fn panel(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    unit: &str,
    arms: &[(&ArmResult, Option<Estimate>)],
) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    let values: Vec<f64> = arms
        .iter()
        .filter_map(|(_, est)| est.as_ref())
        .flat_map(|est| {
            [
                est.mean,
                est.ci[0],
                est.ci[1],
                est.always_valid_ci[0],
                est.always_valid_ci[1],
            ]
        })
        .filter(|v| v.is_finite())
        .collect();
    let n = arms.len().max(1);
    let x = -0.5..(n as f64 - 0.5);
    let empty = values.is_empty();
    let y = if empty { 0.0..1.0 } else { padded(&values) };
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 20))
        .margin(15)
        .margin_bottom(45)
        .x_label_area_size(10)
        .y_label_area_size(80)
        .build_cartesian_2d(x, y.clone())
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(unit)
        // Tick positions are computed in floating point: one meant to be 0
        // can come out as -2.7e-20; snap such noise to 0.
        .y_label_formatter(&|v| fmt_num(if v.abs() < 1e-9 * (y.end - y.start) { 0.0 } else { *v }))
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(e)?;
    let clip = |v: f64| {
        if v.is_nan() {
            (y.start + y.end) / 2.0
        } else {
            v.clamp(y.start, y.end)
        }
    };
    let grey = RGBColor(120, 120, 120);
    if empty {
        let mid = ((n as f64 - 1.0) / 2.0, 0.5);
        chart
            .draw_series(std::iter::once(Text::new(
                "no estimates yet",
                mid,
                (FAMILY, 18).into_font().color(&grey).pos(centered()),
            )))
            .map_err(e)?;
    }
    // Control's mean across the panel (dashed), for reference.
    if let Some(m) = arms
        .iter()
        .find(|(a, _)| a.control)
        .and_then(|(_, est)| est.map(|est| est.mean))
        .filter(|m| m.is_finite())
    {
        chart
            .draw_series(std::iter::once(DashedPathElement::new(
                vec![(-0.5, m), (n as f64 - 0.5, m)],
                6,
                4,
                grey.stroke_width(1),
            )))
            .map_err(e)?;
    }
    for (i, (arm, est)) in arms.iter().enumerate() {
        let xi = i as f64;
        let c = color(i);
        match est {
            Some(est) if est.mean.is_finite() => {
                let [alo, ahi] = est.always_valid_ci.map(clip);
                let [lo, hi] = est.ci.map(clip);
                let mean = clip(est.mean);
                chart
                    .draw_series([
                        Rectangle::new([(xi - 0.2, alo), (xi + 0.2, ahi)], c.mix(0.18).filled()),
                        Rectangle::new([(xi - 0.2, alo), (xi + 0.2, ahi)], c.mix(0.45).stroke_width(1)),
                    ])
                    .map_err(e)?;
                chart
                    .draw_series([
                        PathElement::new(vec![(xi, lo), (xi, hi)], c.stroke_width(2)),
                        PathElement::new(vec![(xi - 0.07, lo), (xi + 0.07, lo)], c.stroke_width(2)),
                        PathElement::new(vec![(xi - 0.07, hi), (xi + 0.07, hi)], c.stroke_width(2)),
                    ])
                    .map_err(e)?;
                chart
                    .draw_series(std::iter::once(
                        EmptyElement::at((xi, mean))
                            + Circle::new((0, 0), 6, c.filled())
                            + Circle::new((0, 0), 6, BLACK.stroke_width(1))
                            + Text::new(
                                format!("{} (n={})", fmt_num(est.mean), est.n),
                                (12, -8),
                                (FAMILY, 13).into_font(),
                            ),
                    ))
                    .map_err(e)?;
            }
            _ if !empty => {
                chart
                    .draw_series(std::iter::once(Text::new(
                        "no data",
                        (xi, (y.start + y.end) / 2.0),
                        (FAMILY, 14).into_font().color(&grey).pos(centered()),
                    )))
                    .map_err(e)?;
            }
            _ => {}
        }
        // The arm's name under the axis, in absolute pixels on the canvas.
        let (px, py) = chart.backend_coord(&(xi, y.start));
        let name = truncate(&arm.arm, 28);
        root.draw(&Text::new(
            name,
            (px, py + 8),
            (FAMILY, 15).into_font().color(&c).pos(top_center()),
        ))
        .map_err(e)?;
        if arm.control {
            root.draw(&Text::new(
                "(control)",
                (px, py + 26),
                (FAMILY, 13).into_font().color(&grey).pos(top_center()),
            ))
            .map_err(e)?;
        }
    }
    Ok(())
}

/// Writes `{id}.md` (which shows `{id}.png`) and `{id}.png` into `dir`,
/// creating it; returns both paths.
pub fn write(results: &Results, experiment: &Experiment, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let id = &experiment.spec.id;
    let png = dir.join(format!("{id}.png"));
    plot(results, &png)?;
    let mut md = markdown(results, experiment);
    let _ = write!(md, "\n## Plot\n\n![results]({id}.png)\n");
    let md_path = dir.join(format!("{id}.md"));
    std::fs::write(&md_path, md).map_err(|e| Error::io(format!("writing {}", md_path.display()), e))?;
    Ok((md_path, png))
}

fn centered() -> plotters::style::text_anchor::Pos {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    Pos::new(HPos::Center, VPos::Center)
}

fn top_center() -> plotters::style::text_anchor::Pos {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    Pos::new(HPos::Center, VPos::Top)
}

/// The finite values' range widened by 8% of its span each side; never empty.
fn padded(v: &[f64]) -> std::ops::Range<f64> {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = hi - lo;
    if span > 0.0 {
        (lo - 0.08 * span)..(hi + 0.08 * span)
    } else {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - d)..(hi + d)
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// A table cell: pipes escaped, on one line.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn arm_label(a: &ArmResult) -> String {
    if a.control {
        format!("{} **(control)**", cell(&a.arm))
    } else {
        cell(&a.arm)
    }
}

fn estimate(e: Option<Estimate>, f: Fmt) -> String {
    e.map_or(NONE.into(), |e| format!("{} {}", f(e.mean), interval(e.ci, f)))
}

fn interval([lo, hi]: [f64; 2], f: Fmt) -> String {
    format!("[{}, {}]", f(lo), f(hi))
}

fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        return finite_or(v);
    }
    if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

fn fmt_signed(v: f64) -> String {
    let s = fmt_value(v);
    if v > 0.0 && v.is_finite() {
        format!("+{s}")
    } else {
        s
    }
}

fn fmt_pct(v: f64) -> String {
    if !v.is_finite() {
        return finite_or(v);
    }
    format!("{:.1}%", v * 100.0)
}

fn fmt_signed_pct(v: f64) -> String {
    let s = fmt_pct(v);
    if v > 0.0 && v.is_finite() {
        format!("+{s}")
    } else {
        s
    }
}

/// Dollars with four significant digits (costs per request are often well
/// under a cent).
fn fmt_usd(v: f64) -> String {
    if !v.is_finite() {
        return finite_or(v);
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let a = v.abs();
    if a == 0.0 {
        "$0".into()
    } else if a < 0.01 {
        format!("{sign}${a:.3e}")
    } else {
        format!("{sign}${a:.4}")
    }
}

fn fmt_signed_usd(v: f64) -> String {
    let s = fmt_usd(v);
    if v > 0.0 && v.is_finite() {
        format!("+{s}")
    } else {
        s
    }
}

/// Milliseconds, signed, without the unit (the row names it).
fn fmt_signed_ms(v: f64) -> String {
    if !v.is_finite() {
        return finite_or(v);
    }
    format!("{v:+.1}")
}

fn fmt_ms(v: f64) -> String {
    if !v.is_finite() {
        return finite_or(v);
    }
    if v.abs() >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn fmt_p(p: f64) -> String {
    if !p.is_finite() {
        finite_or(p)
    } else if p < 1e-4 {
        "< 0.0001".into()
    } else {
        format!("{p:.4}")
    }
}

fn finite_or(v: f64) -> String {
    if v.is_nan() {
        NONE.into()
    } else if v > 0.0 {
        "∞".into()
    } else {
        "-∞".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qroute_experiment::results::VsControl;
    use qroute_experiment::{ExperimentSpec, Status};

    fn experiment() -> Experiment {
        let spec: ExperimentSpec = serde_json::from_str(
            r#"{"id":"exp-1","description":"learned vs cheap","unit":"user","holdout":0.1,"arms":[
                {"name":"learned","strategy":{"kind":"learned"}},
                {"name":"cheap","strategy":{"kind":"cost_optimized"}}]}"#,
        )
        .unwrap();
        Experiment {
            spec,
            created_ms: 1_700_000_000_000,
            stopped_ms: None,
            first_seq: 0,
        }
    }

    fn est(mean: f64, h: f64) -> Option<Estimate> {
        Some(Estimate {
            n: 100,
            mean,
            ci: [mean - h, mean + h],
            always_valid_ci: [mean - 2.5 * h, mean + 2.5 * h],
        })
    }

    fn cmp(d: f64) -> Option<Comparison> {
        Some(Comparison {
            difference: d,
            ci: [d - 0.05, d + 0.05],
            p_value: 0.03,
            always_valid_ci: [d - 0.12, d + 0.12],
            always_valid_p_value: 0.4,
        })
    }

    fn arm(name: &str, control: bool, shift: f64) -> ArmResult {
        ArmResult {
            arm: name.into(),
            strategy: if control { "learned" } else { "cost_optimized" }.into(),
            control,
            expected_share: 0.45,
            requests: 100,
            pending: 2,
            units: 40,
            errors: 3,
            error_rate: est(0.03, 0.02),
            reward: est(0.6 + shift, 0.04),
            quality: est(0.7 + shift, 0.03),
            cost_usd: est(2.5e-4 * (1.0 + shift), 3e-5),
            latency_ms: est(800.0 * (1.0 + shift), 60.0),
            latency_p50_ms: Some(700.0),
            latency_p99_ms: Some(2100.0),
            vs_control: (!control).then(|| VsControl {
                reward: cmp(shift),
                quality: cmp(shift),
                cost_usd: None,
                latency_ms: cmp(-40.0),
                error_rate: cmp(0.01),
            }),
        }
    }

    fn results() -> Results {
        Results {
            experiment: "exp-1".into(),
            status: Status::Running,
            control: "learned".into(),
            level: 0.95,
            requests: 210,
            arms: vec![arm("learned", true, 0.0), arm("cheap", false, -0.1), {
                let mut h = arm("holdout", false, 0.05);
                h.strategy = "learned".into();
                h.expected_share = 0.1;
                h.requests = 10;
                h
            }],
            warnings: vec!["sample ratio mismatch: arm \"cheap\" has 40 units".into()],
        }
    }

    fn empty_results() -> Results {
        let mut r = results();
        for a in &mut r.arms {
            a.requests = 0;
            a.pending = 0;
            a.units = 0;
            a.error_rate = None;
            a.reward = None;
            a.quality = None;
            a.cost_usd = None;
            a.latency_ms = None;
            a.latency_p50_ms = None;
            a.latency_p99_ms = None;
            a.vs_control = (!a.control).then_some(VsControl {
                reward: None,
                quality: None,
                cost_usd: None,
                latency_ms: None,
                error_rate: None,
            });
        }
        r
    }

    fn assert_png(path: &Path) {
        let bytes = std::fs::read(path).unwrap();
        assert!(bytes.len() > 1000, "{} bytes", bytes.len());
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn markdown_has_arms_control_warnings_and_dashes() {
        let md = markdown(&results(), &experiment());
        assert!(md.contains("# Experiment `exp-1`"), "{md}");
        assert!(md.contains("learned vs cheap"));
        for name in ["learned", "cheap", "holdout"] {
            assert!(md.contains(&format!("| {name}")), "{name} missing:\n{md}");
        }
        assert!(md.contains("learned **(control)**"));
        assert!(md.contains("- sample ratio mismatch"));
        assert!(md.contains("2023-11-14T22:13:20Z"));
        assert!(md.contains("open (until stopped)"));
        assert!(md.contains("$2.500e-4"), "{md}");
        assert!(md.contains("100 (2 pending)"));
        assert!(md.contains("| cheap | cost (USD) | — | — | — |"), "{md}");
        assert!(
            md.contains("| cheap | reward | -0.1000 [-0.1500, -0.0500] | 0.0300 |"),
            "{md}"
        );

        let md = markdown(&empty_results(), &experiment());
        assert!(md.contains(NONE));
        assert!(!md.contains("NaN"), "{md}");
    }

    #[test]
    fn iso_times() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(1_700_000_000_999), "2023-11-14T22:13:20Z");
        assert_eq!(iso_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(iso_utc(4_107_542_400_000), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn plot_writes_png_with_and_without_estimates() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("nested/exp.png");
        plot(&results(), &path).unwrap();
        assert_png(&path);

        let empty = dir.join("empty.png");
        plot(&empty_results(), &empty).unwrap();
        assert_png(&empty);

        // Some arms without estimates, infinite intervals, a single arm.
        let mut r = results();
        r.arms[1].reward = None;
        r.arms[0].quality.as_mut().unwrap().always_valid_ci = [f64::NEG_INFINITY, f64::INFINITY];
        let partial = dir.join("partial.png");
        plot(&r, &partial).unwrap();
        assert_png(&partial);
        r.arms.truncate(1);
        let one = dir.join("one.png");
        plot(&r, &one).unwrap();
        assert_png(&one);
    }

    #[test]
    fn write_puts_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let (md, png) = write(&results(), &experiment(), &out).unwrap();
        assert_eq!(md, out.join("exp-1.md"));
        assert_eq!(png, out.join("exp-1.png"));
        assert!(std::fs::read_to_string(&md).unwrap().contains("![results](exp-1.png)"));
        assert_png(&png);
    }
}
