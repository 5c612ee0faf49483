//! The result table: scenario, figure, same-run baseline, ratio, target, verdict.

use std::fmt::Write;

/// One line of the table.
#[derive(Clone, Debug)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// What was measured, e.g. "objects/s".
    pub metric: String,
    /// The measured figure.
    pub value: f64,
    /// The baseline measured in the same run, if the target is a ratio.
    pub baseline: Option<f64>,
    /// The target, in words (e.g. ">= 0.6x baseline and >= 30000").
    pub target: String,
    /// Whether the target is met; `None` for figures without a target.
    pub pass: Option<bool>,
}

impl Row {
    /// A row for a figure with no target (a baseline or an informative number).
    pub fn info(scenario: &str, metric: &str, value: f64) -> Row {
        Row {
            scenario: scenario.into(),
            metric: metric.into(),
            value,
            baseline: None,
            target: "-".into(),
            pass: None,
        }
    }

    /// The figure divided by the baseline.
    pub fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b > 0.0).map(|b| self.value / b)
    }
}

fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Renders rows as an aligned text table.
pub fn render(rows: &[Row]) -> String {
    let header = [
        "scenario", "metric", "figure", "baseline", "ratio", "target", "result",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.metric.clone(),
                // A figure-less row without a verdict (a version, a peer
                // not installed) says so by its name.
                if r.value.is_nan() && r.pass.is_none() {
                    "-".into()
                } else {
                    num(r.value)
                },
                r.baseline.map(num).unwrap_or_else(|| "-".into()),
                r.ratio()
                    .map(|x| format!("{x:.2}x"))
                    .unwrap_or_else(|| "-".into()),
                r.target.clone(),
                match r.pass {
                    Some(true) => "PASS".into(),
                    Some(false) => "FAIL".into(),
                    None => "".into(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String]| {
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            let sep = if i + 1 == row.len() { "\n" } else { "  " };
            // Writing to a String cannot fail.
            let _ = write!(out, "{c:<w$}{sep}");
        }
    };
    line(&mut out, &header.map(String::from));
    line(&mut out, &widths.map(|w| "-".repeat(w)));
    for row in &cells {
        line(&mut out, row);
    }
    out
}
