//! `--repeat N`: the same scenarios N times, each round with its own
//! baselines, reported as the median round per row.
//!
//! One run on a shared 2-core machine swings by up to 1.4x (issue 16's two
//! quiet runs: résumé 232 vs 315 MB/s), so a target met in one run is not
//! yet met. The median of an odd number of rounds is a figure that one
//! lucky or unlucky round cannot move. Each row of the median table is the
//! *whole* row of its median round (figure, same-round baseline, verdict),
//! never a mix of figures from different rounds, so its verdict still
//! follows from its own numbers; the spread column shows every round.
//! Rows are ranked by what their target judges: the ratio for a ratio
//! target, the figure for an absolute one (`<= 1 ms`).

use crate::report::Row;

/// One row of the median table: the median round's row and what every round
/// measured (ratio, or figure where the row has no baseline), in round order.
#[derive(Clone, Debug)]
pub struct Median {
    /// The row of the median round.
    pub row: Row,
    /// Every round's ratio or figure, e.g. `0.30x 0.34x 0.31x`; `-` for a
    /// round without this row.
    pub spread: String,
}

/// Whether the row's target is a figure of its own (e.g. `<= 1 ms`) rather
/// than a ratio (`>= 0.6x`): such a row is judged by its figure, so its
/// median is the median figure even when it prints a baseline.
fn absolute_target(r: &Row) -> bool {
    r.target != "-" && !r.target.contains('x')
}

/// What a row is ranked by: its ratio when it has a baseline and its target
/// is a ratio, else its figure. NaN (a failed measurement) ranks last.
fn rank(r: &Row) -> f64 {
    match r.ratio() {
        Some(x) if !absolute_target(r) => x,
        _ => r.value,
    }
}

fn shown(r: &Row) -> String {
    match r.ratio() {
        Some(x) if !absolute_target(r) => format!("{x:.2}x"),
        _ if r.value.is_nan() => "-".into(),
        _ => crate::report::num(r.value),
    }
}

/// Rows are matched across rounds by scenario, metric and how many rows with
/// that scenario and metric came before them in the same round.
fn keyed(round: &[Row]) -> Vec<((String, String, usize), &Row)> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    round
        .iter()
        .map(|r| {
            let n = seen
                .iter()
                .filter(|(s, m)| *s == r.scenario && *m == r.metric)
                .count();
            seen.push((&r.scenario, &r.metric));
            ((r.scenario.clone(), r.metric.clone(), n), r)
        })
        .collect()
}

/// The median table of `rounds`, rows in order of first appearance. With an
/// odd number of rounds the median is the middle one; a row missing from
/// some rounds (a scenario's ERROR row names its error, so it is its own
/// row) takes the median of the rounds that have it, the lower middle when
/// that number is even.
pub fn medians(rounds: &[Vec<Row>]) -> Vec<Median> {
    let keyed: Vec<_> = rounds.iter().map(|r| keyed(r)).collect();
    let mut order: Vec<(String, String, usize)> = Vec::new();
    for round in &keyed {
        for (k, _) in round {
            if !order.contains(k) {
                order.push(k.clone());
            }
        }
    }
    order
        .into_iter()
        .map(|k| {
            let per_round: Vec<Option<&Row>> = keyed
                .iter()
                .map(|round| round.iter().find(|(rk, _)| *rk == k).map(|(_, r)| *r))
                .collect();
            let mut present: Vec<&Row> = per_round.iter().flatten().copied().collect();
            present.sort_by(|a, b| rank(a).total_cmp(&rank(b)));
            // `order` holds only keys some round has, so `present` is not empty.
            let row = present[(present.len() - 1) / 2].clone();
            let spread = per_round
                .iter()
                .map(|r| r.map_or_else(|| "-".into(), shown))
                .collect::<Vec<_>>()
                .join(" ");
            Median { row, spread }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scenario: &str, value: f64, baseline: Option<f64>) -> Row {
        Row {
            scenario: scenario.into(),
            metric: "objects/s".into(),
            value,
            baseline,
            target: ">= 0.6x".into(),
            pass: baseline.map(|b| value / b >= 0.6),
        }
    }

    #[test]
    fn the_median_is_a_whole_round_ranked_by_ratio() {
        // Round 2 has the highest figure but the lowest ratio: the median by
        // ratio is round 3, with its own baseline and verdict.
        let rounds = vec![
            vec![row("rep", 60.0, Some(100.0))],
            vec![row("rep", 90.0, Some(300.0))],
            vec![row("rep", 50.0, Some(80.0))],
        ];
        let m = medians(&rounds);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].row.value, 60.0);
        assert_eq!(m[0].row.baseline, Some(100.0));
        assert_eq!(m[0].row.pass, Some(true));
        assert_eq!(m[0].spread, "0.60x 0.30x 0.62x");
    }

    #[test]
    fn a_row_with_an_absolute_target_ranks_by_its_figure() {
        // Latency p50 against "<= 1 ms", printed next to the round trip:
        // the median is the median latency, not the median ratio.
        let lat = |ms: f64, rtt: f64| Row {
            scenario: "p50".into(),
            metric: "ms".into(),
            value: ms,
            baseline: Some(rtt),
            target: "<= 1 ms".into(),
            pass: Some(ms <= 1.0),
        };
        let rounds = vec![
            vec![lat(0.930, 0.131)],
            vec![lat(0.978, 0.127)],
            vec![lat(0.974, 0.120)],
        ];
        let m = medians(&rounds);
        assert_eq!(m[0].row.value, 0.974);
        assert_eq!(m[0].spread, "0.930 0.978 0.974");
    }

    #[test]
    fn rows_without_a_baseline_rank_by_figure_and_keep_their_order() {
        let rounds = vec![
            vec![row("a", 3.0, None), row("b", 1.0, None)],
            vec![row("a", 1.0, None), row("b", 2.0, None)],
            vec![row("a", 2.0, None), row("b", 3.0, None)],
        ];
        let m = medians(&rounds);
        let names: Vec<_> = m.iter().map(|m| m.row.scenario.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(m[0].row.value, 2.0);
        assert_eq!(m[1].row.value, 2.0);
    }

    #[test]
    fn a_row_missing_from_a_round_is_shown_as_missing_there() {
        let rounds = vec![
            vec![row("a", 1.0, None), row("a: ERROR boom", f64::NAN, None)],
            vec![row("a", 5.0, None)],
            vec![row("a", 3.0, None)],
        ];
        let m = medians(&rounds);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].row.value, 3.0);
        assert_eq!(m[1].row.scenario, "a: ERROR boom");
        assert_eq!(m[1].spread, "- - -");
    }

    #[test]
    fn rows_with_the_same_name_in_one_round_are_matched_by_position() {
        let rounds = vec![
            vec![row("x", 1.0, None), row("x", 10.0, None)],
            vec![row("x", 2.0, None), row("x", 20.0, None)],
            vec![row("x", 3.0, None), row("x", 30.0, None)],
        ];
        let m = medians(&rounds);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].row.value, 2.0);
        assert_eq!(m[1].row.value, 20.0);
    }
}
