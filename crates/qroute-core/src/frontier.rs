//! RouterBench-style cost–quality metrics (docs/design.md, "Metrics").
//!
//! A router swept over operating points gives a set of (mean cost, mean
//! quality) points. All three metrics read the same curve: the upper convex
//! hull of the router's points together with the cheapest single model's own
//! point, made non-decreasing (vertices after the highest-quality one are
//! dropped) and extended flat to the right of its last vertex.
//!
//! - **AIQ:** the area under that curve over the cost range of the single
//!   models, divided by the range.
//! - **C95:** the least cost on the curve reaching 95% of the best single
//!   model's quality, as a share of the best single model's cost.
//! - **Q@best:** the curve's quality at the best single model's cost.
//!
//! "Best single model" is the single with the highest quality (ties: the
//! cheaper); "cheapest single model" the one with the least cost (ties: the
//! better). Points with a non-finite coordinate are ignored.

use serde::{Deserialize, Serialize};

use crate::dataset::Row;

/// A (mean cost per prompt in USD, mean quality) point.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostQuality {
    pub cost: f64,
    pub quality: f64,
}

impl CostQuality {
    pub fn new(cost: f64, quality: f64) -> Self {
        CostQuality { cost, quality }
    }

    fn is_finite(&self) -> bool {
        self.cost.is_finite() && self.quality.is_finite()
    }
}

/// Tolerance for "reaches the target quality", so that a point that hits the
/// target exactly is not missed by rounding.
const EPS: f64 = 1e-12;

/// z-component of (a − o) × (b − o): > 0 when o → a → b turns left
/// (counter-clockwise), < 0 when it turns right, 0 when collinear.
fn cross(o: CostQuality, a: CostQuality, b: CostQuality) -> f64 {
    (a.cost - o.cost) * (b.quality - o.quality) - (a.quality - o.quality) * (b.cost - o.cost)
}

/// Upper convex hull, made non-decreasing (points after the max-quality
/// vertex are dropped), sorted by cost.
///
/// Monotone chain over the points sorted by cost: walking left to right, the
/// upper hull only turns right, so the last vertex is popped while it and the
/// new point make a left turn or a straight line (collinear middle points are
/// not vertices). Of points with the same cost only the best one can be on
/// the upper hull. Non-finite points are ignored; no points give no hull.
pub fn upper_hull(points: &[CostQuality]) -> Vec<CostQuality> {
    let mut pts: Vec<CostQuality> = points.iter().copied().filter(|p| p.is_finite()).collect();
    // By cost ascending, then quality descending, so that dedup keeps the best.
    pts.sort_by(|a, b| a.cost.total_cmp(&b.cost).then_with(|| b.quality.total_cmp(&a.quality)));
    pts.dedup_by(|later, first| later.cost == first.cost);

    let mut hull: Vec<CostQuality> = Vec::with_capacity(pts.len());
    for p in pts {
        while hull.len() >= 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) >= 0.0 {
            hull.pop();
        }
        hull.push(p);
    }

    // The upper hull rises then falls; keep it up to the first highest vertex.
    if let Some(best) = hull
        .iter()
        .enumerate()
        .fold(None::<(usize, f64)>, |acc, (i, p)| match acc {
            Some((_, q)) if q >= p.quality => acc,
            _ => Some((i, p.quality)),
        })
        .map(|(i, _)| i)
    {
        hull.truncate(best + 1);
    }
    hull
}

/// Quality of a non-decreasing hull (from [`upper_hull`]) at `cost`: linear
/// between vertices, flat after the last one. None left of the first vertex
/// (no point that cheap) or for an empty hull.
pub fn quality_at(hull: &[CostQuality], cost: f64) -> Option<f64> {
    let first = hull.first()?;
    if cost < first.cost {
        return None;
    }
    for w in hull.windows(2) {
        let (a, b) = (w[0], w[1]);
        if cost <= b.cost {
            let t = (cost - a.cost) / (b.cost - a.cost);
            return Some(a.quality + t * (b.quality - a.quality));
        }
    }
    hull.last().map(|p| p.quality)
}

/// The single with the least cost; ties → the better one.
fn cheapest_single(singles: &[CostQuality]) -> Option<CostQuality> {
    singles
        .iter()
        .copied()
        .filter(|p| p.is_finite())
        .min_by(|a, b| a.cost.total_cmp(&b.cost).then_with(|| b.quality.total_cmp(&a.quality)))
}

/// The single with the highest quality; ties → the cheaper one.
pub fn best_single(singles: &[CostQuality]) -> Option<CostQuality> {
    singles
        .iter()
        .copied()
        .filter(|p| p.is_finite())
        .max_by(|a, b| a.quality.total_cmp(&b.quality).then_with(|| b.cost.total_cmp(&a.cost)))
}

/// The hull all three metrics read: router points ∪ {cheapest single}.
fn metric_hull(router: &[CostQuality], singles: &[CostQuality]) -> Option<Vec<CostQuality>> {
    let cheapest = cheapest_single(singles)?;
    let mut pts = Vec::with_capacity(router.len() + 1);
    pts.extend_from_slice(router);
    pts.push(cheapest);
    Some(upper_hull(&pts))
}

/// AIQ: area under the non-decreasing upper convex hull of router points ∪
/// {cheapest single model's point}, over [min single cost, max single cost],
/// divided by that range. The hull is extended flat to the right of its last
/// vertex; points cheaper than the cheapest single model are allowed (the
/// hull is integrated only over the range).
///
/// When all single models cost the same, the range is a point and AIQ is the
/// hull's quality there. NaN when `singles` has no finite point.
pub fn aiq(router: &[CostQuality], singles: &[CostQuality]) -> f64 {
    let Some(hull) = metric_hull(router, singles) else {
        return f64::NAN;
    };
    let finite = || singles.iter().filter(|p| p.is_finite());
    let lo = finite().map(|p| p.cost).fold(f64::INFINITY, f64::min);
    let hi = finite().map(|p| p.cost).fold(f64::NEG_INFINITY, f64::max);
    if hi <= lo {
        return quality_at(&hull, lo).unwrap_or(f64::NAN);
    }

    // The cheapest single is on or under the hull, so the hull starts at or
    // left of `lo`; integrate each segment clipped to [lo, hi].
    let mut area = 0.0;
    for w in hull.windows(2) {
        let (a, b) = (w[0], w[1]);
        let x0 = a.cost.max(lo);
        let x1 = b.cost.min(hi);
        if x1 > x0 {
            let y = |x: f64| a.quality + (x - a.cost) / (b.cost - a.cost) * (b.quality - a.quality);
            area += (x1 - x0) * (y(x0) + y(x1)) / 2.0;
        }
    }
    // Flat extension right of the last vertex.
    let last = hull[hull.len() - 1];
    let x0 = last.cost.max(lo);
    if hi > x0 {
        area += (hi - x0) * last.quality;
    }
    area / (hi - lo)
}

/// C95: least cost on the same hull as [`aiq`] (linear interpolation between
/// vertices) whose quality reaches 0.95 × best single quality, divided by the
/// best single model's cost. None if never reached, or if the best single
/// model costs nothing (the share is undefined).
pub fn c95(router: &[CostQuality], singles: &[CostQuality]) -> Option<f64> {
    let best = best_single(singles)?;
    let hull = metric_hull(router, singles)?;
    if best.cost <= 0.0 {
        return None;
    }
    let target = 0.95 * best.quality;
    let first = hull.first()?;
    if first.quality >= target - EPS {
        return Some(first.cost / best.cost);
    }
    for w in hull.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b.quality >= target - EPS {
            let t = ((target - a.quality) / (b.quality - a.quality)).clamp(0.0, 1.0);
            return Some((a.cost + t * (b.cost - a.cost)) / best.cost);
        }
    }
    None
}

/// Q@best: highest quality on the hull at cost <= best single model's cost.
/// NaN when `singles` has no finite point.
pub fn q_at_best(router: &[CostQuality], singles: &[CostQuality]) -> f64 {
    let (Some(best), Some(hull)) = (best_single(singles), metric_hull(router, singles)) else {
        return f64::NAN;
    };
    // The hull is non-decreasing, so its highest quality up to a cost is its
    // quality at that cost.
    quality_at(&hull, best.cost).unwrap_or(f64::NAN)
}

/// Mean (cost, quality) over `rows` when `choose(row)` picks the model index
/// (into `Dataset::models`) that answers each row. NaN for no rows.
pub fn mean_point<'a>(rows: impl IntoIterator<Item = &'a Row>, mut choose: impl FnMut(&Row) -> usize) -> CostQuality {
    mean_of_choices(rows.into_iter().map(|r| (r, choose(r))))
}

/// Mean cost and quality of the given (row, chosen model index) pairs.
pub fn mean_of_choices<'a>(choices: impl IntoIterator<Item = (&'a Row, usize)>) -> CostQuality {
    let (mut n, mut cost, mut quality) = (0usize, 0.0f64, 0.0f64);
    for (row, choice) in choices {
        let o = &row.outcomes[choice];
        n += 1;
        cost += o.cost_usd;
        quality += f64::from(o.quality);
    }
    CostQuality::new(cost / n as f64, quality / n as f64)
}

/// One point per model: its mean cost and quality over `rows`, indexed like
/// `Dataset::models` (`n_models` of them).
pub fn single_model_points(rows: &[&Row], n_models: usize) -> Vec<CostQuality> {
    (0..n_models).map(|m| mean_point(rows.iter().copied(), |_| m)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(cost: f64, quality: f64) -> CostQuality {
        CostQuality::new(cost, quality)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn hull_drops_points_below_and_after_the_peak() {
        let pts = [
            p(5.0, 0.3), // below
            p(1.0, 0.5),
            p(2.0, 0.8),
            p(6.0, 0.85),
            p(4.0, 0.82), // under segment (2,.8)-(6,.85)? .8+.05*2/4=.825 > .82
            p(8.0, 0.7),  // after the peak
            p(2.0, 0.1),  // same cost, worse
        ];
        assert_eq!(upper_hull(&pts), vec![p(1.0, 0.5), p(2.0, 0.8), p(6.0, 0.85)]);
    }

    #[test]
    fn hull_removes_collinear_and_flat_tail() {
        let pts = [p(0.0, 0.0), p(1.0, 1.0), p(2.0, 2.0), p(3.0, 2.0)];
        assert_eq!(upper_hull(&pts), vec![p(0.0, 0.0), p(2.0, 2.0)]);
        assert!(upper_hull(&[]).is_empty());
        assert_eq!(upper_hull(&[p(f64::NAN, 1.0), p(1.0, 1.0)]), vec![p(1.0, 1.0)]);
    }

    #[test]
    fn hull_is_concave_and_sorted_on_random_points() {
        // Deterministic LCG, no dependency needed.
        let mut s = 0x1234_5678u64;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        for _ in 0..200 {
            let pts: Vec<CostQuality> = (0..30).map(|_| p(next(), next())).collect();
            let h = upper_hull(&pts);
            assert!(!h.is_empty());
            for w in h.windows(2) {
                assert!(w[0].cost < w[1].cost && w[0].quality < w[1].quality);
            }
            for w in h.windows(3) {
                assert!(cross(w[0], w[1], w[2]) < 0.0);
            }
            // Every point is on or below the curve (where the curve exists).
            for q in &pts {
                if let Some(y) = quality_at(&h, q.cost) {
                    assert!(q.quality <= y + 1e-12);
                }
            }
        }
    }

    #[test]
    fn hand_computed_router_point() {
        let singles = [p(1.0, 0.5), p(10.0, 0.8)];
        let router = [p(2.0, 0.8)];
        let expected = ((2.0 - 1.0) * (0.5 + 0.8) / 2.0 + 8.0 * 0.8) / 9.0;
        assert!(close(aiq(&router, &singles), expected));
        assert!(close(expected, 7.05 / 9.0));
        // 0.95 * 0.8 = 0.76 reached on (1,.5)-(2,.8) at 1 + 0.26/0.3.
        let c = c95(&router, &singles).unwrap();
        assert!(close(c, (1.0 + 0.26 / 0.3) / 10.0), "{c}");
        assert!(close(q_at_best(&router, &singles), 0.8));
    }

    #[test]
    fn singles_alone_give_the_area_of_their_segment() {
        let singles = [p(1.0, 0.5), p(10.0, 0.8)];
        assert!(close(aiq(&singles, &singles), 0.65));
        // 0.76 on (1,.5)-(10,.8) at 1 + 9 * 0.26/0.3 = 8.8.
        assert!(close(c95(&singles, &singles).unwrap(), 0.88));
        assert!(close(q_at_best(&singles, &singles), 0.8));
        // The router alone does not need the singles' points: the cheapest is added.
        assert!(close(aiq(&[p(10.0, 0.8)], &singles), 0.65));
    }

    #[test]
    fn points_below_the_line_do_not_change_anything() {
        let singles = [p(1.0, 0.5), p(10.0, 0.8)];
        let router = [p(2.0, 0.8), p(5.0, 0.7), p(1.5, 0.55), p(12.0, 0.6)];
        assert!(close(aiq(&router, &singles), 7.05 / 9.0));
        assert!(close(c95(&router, &singles).unwrap(), (1.0 + 0.26 / 0.3) / 10.0));
    }

    #[test]
    fn cheaper_than_cheapest_and_beyond_range() {
        let singles = [p(1.0, 0.5), p(10.0, 0.8)];
        // A point cheaper and better than the cheapest single: hull starts at
        // (0.5, 0.6) and goes to (20, 0.9); only [1, 10] is integrated.
        let router = [p(0.5, 0.6), p(20.0, 0.9)];
        let y = |x: f64| 0.6 + (x - 0.5) * 0.3 / 19.5;
        let expected = (y(1.0) + y(10.0)) / 2.0;
        assert!(close(aiq(&router, &singles), expected));
        assert!(close(c95(&router, &singles).unwrap(), (0.5 + 19.5 * 0.16 / 0.3) / 10.0));
        assert!(close(q_at_best(&router, &singles), y(10.0)));
        // Never reaching the target.
        assert_eq!(c95(&[p(10.0, 0.7)], &singles), None);
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        assert!(aiq(&[p(1.0, 1.0)], &[]).is_nan());
        assert!(q_at_best(&[], &[]).is_nan());
        assert_eq!(c95(&[], &[]), None);
        // One single model: the range is a point.
        assert!(close(aiq(&[], &[p(2.0, 0.4)]), 0.4));
        assert!(close(c95(&[], &[p(2.0, 0.4)]).unwrap(), 1.0));
        // Free best model: share undefined.
        assert_eq!(c95(&[], &[p(0.0, 0.4)]), None);
    }

    #[test]
    fn best_single_ties_go_to_the_cheaper() {
        assert_eq!(best_single(&[p(3.0, 0.9), p(2.0, 0.9), p(1.0, 0.5)]), Some(p(2.0, 0.9)));
    }

    /// Reference values (data/README.md, from a Python implementation) on the
    /// bundled routellm test split.
    #[test]
    fn routellm_reference_values() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/routellm_mmlu_gsm8k.jsonl");
        let d = crate::dataset::Dataset::load(path).unwrap();
        let test = d.split("test");
        let singles = single_model_points(&test, d.models.len());
        let a = aiq(&singles, &singles);
        assert!((a - 0.745).abs() < 0.0015, "singles AIQ {a}");

        // Oracle: per prompt the model maximising quality − λ·cost (ties →
        // cheaper), swept over λ.
        let mut router = Vec::new();
        for k in 0..=40 {
            let lambda = if k == 0 { 0.0 } else { 10f64.powf(k as f64 / 5.0) };
            router.push(mean_point(test.iter().copied(), |r| {
                (0..r.outcomes.len())
                    .max_by(|&i, &j| {
                        let (oi, oj) = (&r.outcomes[i], &r.outcomes[j]);
                        let si = f64::from(oi.quality) - lambda * oi.cost_usd;
                        let sj = f64::from(oj.quality) - lambda * oj.cost_usd;
                        si.total_cmp(&sj).then(oj.cost_usd.total_cmp(&oi.cost_usd))
                    })
                    .unwrap()
            }));
        }
        let a = aiq(&router, &singles);
        let c = c95(&router, &singles).unwrap();
        assert!((a - 0.857).abs() < 0.005, "oracle AIQ {a}");
        assert!((c - 0.09).abs() < 0.02, "oracle C95 {c}");
        assert!(q_at_best(&router, &singles) >= best_single(&singles).unwrap().quality);
    }
}
