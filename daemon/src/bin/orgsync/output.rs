//! The three shapes of `orgsync` output (`--output json|table|csv`): every
//! command that lists records builds one [`Table`] and hands it, with the
//! API's JSON, to [`show`]; so a column is defined once and reads the same
//! in the aligned table and in the CSV.

use clap::ValueEnum;
use orgsync_keytool::{out, outln};
use serde_json::Value as Json;

use super::text_of;

/// What `--output` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns under a header row (the human output).
    #[default]
    Table,
    /// The local API's JSON, as it answered.
    Json,
    /// A header row, then one row per record; every cell quoted, text that a
    /// spreadsheet would run as a formula prefixed with '.
    Csv,
}

impl Format {
    pub fn is_json(self) -> bool {
        self == Format::Json
    }
}

/// Rows of one listing. Cells are JSON values so that the CSV keeps numbers
/// as numbers and empty cells empty, while the table shows `-` for a
/// missing value.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<Json>>,
}

impl Table {
    /// An empty table with these column names.
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; a row shorter than the header leaves its last cells
    /// empty, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<Json>) {
        self.rows.push(cells);
    }

    /// Prints the table as aligned text, or as CSV with `Format::Csv`.
    pub fn print(&self, format: Format) {
        if format == Format::Csv {
            self.print_csv();
        } else {
            self.print_aligned();
        }
    }

    fn cells(&self, row: &[Json], show: impl Fn(&Json) -> String) -> Vec<String> {
        (0..self.headers.len())
            .map(|i| row.get(i).map(&show).unwrap_or_default())
            .collect()
    }

    fn print_aligned(&self) {
        let rows: Vec<Vec<String>> = self.rows.iter().map(|r| self.cells(r, text_of)).collect();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[&str]| {
            let mut text = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i + 1 == cells.len() {
                    text.push_str(cell);
                } else {
                    let pad = w.saturating_sub(cell.chars().count());
                    text.push_str(cell);
                    text.push_str(&" ".repeat(pad + 2));
                }
            }
            outln!("{}", text.trim_end());
        };
        line(&self.headers);
        for row in &rows {
            line(&row.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }

    fn print_csv(&self) {
        let mut text = csv_record(&self.headers);
        for row in &self.rows {
            text.push_str(&csv_record(&self.cells(row, csv_cell)));
        }
        out!("{text}");
    }
}

/// One CSV line (with its newline) of already-rendered cells, every cell
/// quoted.
fn csv_record<S: AsRef<[u8]>>(cells: &[S]) -> String {
    let mut w = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .from_writer(Vec::new());
    // Writing to a Vec cannot fail, and the bytes are the cells' UTF-8.
    let _ = w.write_record(cells);
    String::from_utf8_lossy(&w.into_inner().unwrap_or_default()).into_owned()
}

/// One CSV line of JSON cells, rendered like [`Table`]'s CSV; for output
/// that streams rows (`orgsync watch`) after a header printed with it too.
pub fn csv_line(cells: &[Json]) -> String {
    csv_record(&cells.iter().map(csv_cell).collect::<Vec<_>>())
}

/// A CSV cell the way `orgsync export` writes one: text neutralised against
/// formula injection, numbers and booleans as they are, null empty.
fn csv_cell(v: &Json) -> String {
    match v {
        Json::Null => String::new(),
        Json::String(s) => orgsync_daemon::export::neutralise_cell(s),
        // A spreadsheet reads "-2" as a number, not a formula.
        other => other.to_string(),
    }
}

/// Prints the API's answer `value` as JSON, or the rows `table` makes of it.
pub fn show(format: Format, value: &Json, table: impl FnOnce() -> Table) {
    if format.is_json() {
        print_json(value);
    } else {
        table().print(format);
    }
}

/// Pretty JSON on standard output.
pub fn print_json(v: &Json) {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}
