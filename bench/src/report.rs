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

/// A figure with as many digits as it needs.
pub fn num(v: f64) -> String {
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
    table(&HEADER.map(String::from), rows.iter().map(cells).collect())
}

/// Renders the median table of `--repeat`: each row of its median round,
/// then what every round measured.
pub fn render_medians(medians: &[crate::rounds::Median], rounds: usize) -> String {
    let header: Vec<String> = HEADER
        .iter()
        .map(|h| h.to_string())
        .chain([format!("each of {rounds} rounds")])
        .collect();
    let rows = medians
        .iter()
        .map(|m| {
            cells(&m.row)
                .into_iter()
                .chain([m.spread.clone()])
                .collect()
        })
        .collect();
    table(&header, rows)
}

const HEADER: [&str; 7] = [
    "scenario", "metric", "figure", "baseline", "ratio", "target", "result",
];

/// The cells of one row, in the order of [`HEADER`].
fn cells(r: &Row) -> Vec<String> {
    vec![
        r.scenario.clone(),
        r.metric.clone(),
        // A figure-less row without a verdict (a version, a peer not
        // installed) says so by its name.
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
}

/// Aligns `cells` under `header`, two spaces between columns.
fn table(header: &[String], cells: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String]| {
        for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
            let sep = if i + 1 == row.len() { "\n" } else { "  " };
            // Writing to a String cannot fail.
            let _ = write!(out, "{c:<w$}{sep}");
        }
    };
    line(&mut out, header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, &rule);
    for row in &cells {
        line(&mut out, row);
    }
    out
}
