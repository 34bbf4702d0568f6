//! A run against a saved one: each metric's change, classified by how much
//! worse it got, so a regression gate can fail on the big ones only.

use serde::{Deserialize, Serialize};

/// One number the suite reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// `category.name`, stable across runs: the key a baseline matches on.
    pub name: String,
    pub value: f64,
    pub unit: String,
    /// Whether a larger value is better (throughput) or worse (latency).
    pub higher_is_better: bool,
    /// Whether a critical regression of this metric fails the run. Tail
    /// latencies and maxima on a shared machine swing by more than 2× from
    /// run to run, so they are reported but never gate.
    pub gate: bool,
}

/// How bad a regression is, by how much worse the metric got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Within the threshold (or better).
    Ok,
    /// Worse by the threshold up to 25%.
    Low,
    /// 25% up to 50% worse.
    Medium,
    /// 50% up to 100% worse.
    High,
    /// 100% worse or more: twice the time, or half the throughput.
    Critical,
}

impl Severity {
    /// `worse_pct`: how much worse, in percent (negative: better).
    pub fn of(worse_pct: f64, threshold_pct: f64) -> Severity {
        match worse_pct {
            p if p.is_nan() || p < threshold_pct => Severity::Ok,
            p if p >= 100.0 => Severity::Critical,
            p if p >= 50.0 => Severity::High,
            p if p >= 25.0 => Severity::Medium,
            _ => Severity::Low,
        }
    }
}

/// One metric in both runs.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub name: String,
    pub unit: String,
    pub baseline: f64,
    pub current: f64,
    /// Signed change of the value, percent of the baseline.
    pub change_pct: f64,
    /// How much worse, percent: the change for a lower-is-better metric;
    /// for a higher-is-better one, how much longer the same work takes
    /// (`baseline / current − 1`), so halving throughput is +100% like
    /// doubling latency.
    pub worse_pct: f64,
    pub severity: Severity,
    pub gate: bool,
}

/// Every metric present in both runs, worst first.
pub fn compare(baseline: &[Metric], current: &[Metric], threshold_pct: f64) -> Vec<Change> {
    let mut out: Vec<Change> = current
        .iter()
        .filter_map(|c| {
            let b = baseline.iter().find(|b| b.name == c.name)?;
            let change_pct = (c.value / b.value - 1.0) * 100.0;
            let worse_pct = if c.higher_is_better {
                (b.value / c.value - 1.0) * 100.0
            } else {
                change_pct
            };
            // 0 → 0 is no change; anything → from 0 has no percentage.
            let worse_pct = if b.value == c.value { 0.0 } else { worse_pct };
            Some(Change {
                name: c.name.clone(),
                unit: c.unit.clone(),
                baseline: b.value,
                current: c.value,
                change_pct,
                worse_pct,
                severity: Severity::of(worse_pct, threshold_pct),
                gate: c.gate,
            })
        })
        .collect();
    out.sort_by(|a, b| b.severity.cmp(&a.severity).then(b.worse_pct.total_cmp(&a.worse_pct)));
    out
}

/// The gated metrics that regressed critically: a non-empty list fails the run.
pub fn critical(changes: &[Change]) -> Vec<&Change> {
    changes
        .iter()
        .filter(|c| c.gate && c.severity == Severity::Critical)
        .collect()
}

/// The gated metrics critical in both of two runs against the same
/// baseline: what fails the gate once a critical run has been measured
/// again. A real 2× regression shows in both runs; one run on these shared
/// cores can be slowed by half by a neighbour's burst (the health check's
/// median went 0.20 → 0.61 ms in one run and 0.22 ms in the next).
pub fn confirmed<'a>(first: &[Change], second: &'a [Change]) -> Vec<&'a Change> {
    let first = critical(first);
    critical(second)
        .into_iter()
        .filter(|c| first.iter().any(|f| f.name == c.name))
        .collect()
}

/// What a gated run reports and fails on.
#[derive(Debug)]
pub struct Verdict<R> {
    /// The run to report: the second one when the first was measured again.
    pub run: R,
    /// That run against the baseline.
    pub changes: Vec<Change>,
    /// The gated metrics critical in both runs: non-empty fails the gate.
    pub failed: Vec<String>,
}

/// Compares `first` with the baseline; if a gated metric regressed
/// critically, runs again (`rerun`, told which) and fails only on what
/// [`confirmed`] keeps.
pub fn gate<R, E>(
    baseline: &[Metric],
    threshold_pct: f64,
    first: R,
    metrics: impl Fn(&R) -> Vec<Metric>,
    rerun: impl FnOnce(&[&Change]) -> Result<R, E>,
) -> Result<Verdict<R>, E> {
    let changes = compare(baseline, &metrics(&first), threshold_pct);
    let suspects = critical(&changes);
    if suspects.is_empty() {
        return Ok(Verdict {
            run: first,
            changes,
            failed: Vec::new(),
        });
    }
    let run = rerun(&suspects)?;
    let second = compare(baseline, &metrics(&run), threshold_pct);
    let failed = confirmed(&changes, &second).iter().map(|c| c.name.clone()).collect();
    Ok(Verdict {
        run,
        changes: second,
        failed,
    })
}

/// The comparison as a Markdown table (regressions only, and a count of the rest).
pub fn markdown(changes: &[Change], threshold_pct: f64) -> String {
    let regressed: Vec<&Change> = changes.iter().filter(|c| c.severity != Severity::Ok).collect();
    let mut s = format!(
        "## Against the baseline (threshold {threshold_pct}%)\n\n{} of {} metrics regressed; {} critical among the gated ones.\n\n",
        regressed.len(),
        changes.len(),
        critical(changes).len()
    );
    if !regressed.is_empty() {
        s.push_str("| metric | baseline | current | change | severity | gates |\n|---|---|---|---|---|---|\n");
        for c in regressed {
            s.push_str(&format!(
                "| {} | {:.4} {u} | {:.4} {u} | {:+.1}% | {:?} | {} |\n",
                c.name,
                c.baseline,
                c.current,
                c.change_pct,
                c.severity,
                if c.gate { "yes" } else { "no" },
                u = c.unit
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, value: f64, higher_is_better: bool, gate: bool) -> Metric {
        Metric {
            name: name.into(),
            value,
            unit: "ms".into(),
            higher_is_better,
            gate,
        }
    }

    #[test]
    fn the_issue_example_is_critical() {
        let c = compare(
            &[m("model_selection.mean", 2.5, false, true)],
            &[m("model_selection.mean", 5.1, false, true)],
            10.0,
        );
        assert_eq!(c[0].severity, Severity::Critical);
        assert!((c[0].change_pct - 104.0).abs() < 1e-9);
        assert_eq!(critical(&c).len(), 1);
    }

    #[test]
    fn only_a_regression_critical_in_both_runs_is_confirmed() {
        let base = [
            m("a", 1.0, false, true),
            m("b", 1.0, false, true),
            m("c", 1.0, false, true),
        ];
        let first = compare(
            &base,
            &[
                m("a", 3.0, false, true),
                m("b", 3.0, false, true),
                m("c", 1.0, false, true),
            ],
            10.0,
        );
        // `a` stays slow, `b` was a burst, `c` turns critical only now.
        let second = compare(
            &base,
            &[
                m("a", 2.5, false, true),
                m("b", 1.1, false, true),
                m("c", 3.0, false, true),
            ],
            10.0,
        );
        let names: Vec<&str> = confirmed(&first, &second).iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a"]);
    }

    #[test]
    fn the_gate_reruns_only_on_a_critical_regression_and_reports_the_run_it_judged() {
        let base = vec![m("a", 1.0, false, true), m("b", 1.0, false, true)];
        let metrics = |r: &Vec<Metric>| r.clone();
        // Nothing critical: no rerun, and the comparison is still reported.
        let fine = vec![m("a", 1.2, false, true), m("b", 1.0, false, true)];
        let v = gate(&base, 10.0, fine, metrics, |_| -> Result<_, ()> { panic!("rerun") }).unwrap();
        assert_eq!(v.changes.len(), 2);
        assert_eq!(v.changes[0].severity, Severity::Low);
        assert!(v.failed.is_empty());
        // `a` and `b` critical once; only `a` again.
        let slow = vec![m("a", 3.0, false, true), m("b", 3.0, false, true)];
        let mut told = Vec::new();
        let v = gate(&base, 10.0, slow, metrics, |suspects| {
            told = suspects.iter().map(|c| c.name.clone()).collect();
            Ok::<_, ()>(vec![m("a", 2.5, false, true), m("b", 1.0, false, true)])
        })
        .unwrap();
        assert_eq!(told, ["a", "b"]);
        assert_eq!(v.failed, ["a"]);
        assert_eq!(v.run[0].value, 2.5, "the second run is the one reported");
        assert_eq!(v.changes.iter().find(|c| c.name == "b").unwrap().severity, Severity::Ok);
    }

    #[test]
    fn severities_by_size_and_direction() {
        let base = [
            m("a", 100.0, false, true),
            m("b", 100.0, false, true),
            m("c", 100.0, false, true),
            m("d", 100.0, false, true),
            m("tput", 1000.0, true, true),
            m("faster", 100.0, false, true),
            m("tail", 1.0, false, false),
        ];
        let cur = [
            m("a", 105.0, false, true),
            m("b", 115.0, false, true),
            m("c", 130.0, false, true),
            m("d", 160.0, false, true),
            // Half the throughput: the same work takes twice as long.
            m("tput", 500.0, true, true),
            m("faster", 50.0, false, true),
            m("tail", 10.0, false, false),
        ];
        let c = compare(&base, &cur, 10.0);
        let sev = |n: &str| c.iter().find(|x| x.name == n).map(|x| x.severity);
        assert_eq!(sev("a"), Some(Severity::Ok));
        assert_eq!(sev("b"), Some(Severity::Low));
        assert_eq!(sev("c"), Some(Severity::Medium));
        assert_eq!(sev("d"), Some(Severity::High));
        assert_eq!(sev("tput"), Some(Severity::Critical));
        assert_eq!(sev("faster"), Some(Severity::Ok));
        assert_eq!(sev("tail"), Some(Severity::Critical));
        // The tail metric does not gate; throughput does.
        let names: Vec<&str> = critical(&c).iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["tput"]);
        // Worst first, and the report names the regressions.
        assert_eq!(c[0].severity, Severity::Critical);
        let md = markdown(&c, 10.0);
        assert!(
            md.contains("| tput |") && md.contains("Critical") && !md.contains("| faster |"),
            "{md}"
        );
    }

    #[test]
    fn metrics_missing_from_either_run_are_skipped() {
        let c = compare(&[m("old", 1.0, false, true)], &[m("new", 1.0, false, true)], 10.0);
        assert!(c.is_empty());
    }
}
