//! Command-line manners of the three binaries, run for real: a reader that
//! closes the pipe after one line (`| head -1`) ends them quietly with
//! status 0, errors print once with their causes, and every command's
//! `--help` shows an example.

use crate::support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use orgsync_keytool::InstanceDir;
use support::{bin, stderr, Instance};

/// Output twice as large as a pipe buffer (64 KiB by default on
/// Linux), so the writer is still writing when the reader goes away and
/// must meet EPIPE, not finish first by luck.
const MIN_OUTPUT: usize = 128 * 1024;

/// What `CMD | head -1` saw: the first line, the writer's exit status and
/// its stderr, and how long it took from spawn to exit.
struct HeadOne {
    first: String,
    status: ExitStatus,
    stderr: String,
    took: Duration,
}

/// Runs `cmd` with stdout into a pipe whose reader keeps one line and then
/// closes its end, the way `head -1` does.
fn head_one(cmd: &mut Command) -> HeadOne {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    {
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        out.read_line(&mut first).expect("read the first line");
        // Dropping the reader closes the pipe's only read end.
    }
    let mut err = child.stderr.take().expect("stderr");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running 60 s after its reader closed the pipe");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut text = String::new();
    err.read_to_string(&mut text).expect("read stderr");
    HeadOne {
        first,
        status,
        stderr: text,
        took: started.elapsed(),
    }
}

fn assert_quiet(what: &str, run: &HeadOne, full_len: usize) {
    assert!(
        full_len >= MIN_OUTPUT,
        "{what}: only {full_len} bytes of output; too little to be sure of EPIPE"
    );
    assert!(!run.first.is_empty(), "{what}: no first line");
    assert_eq!(
        run.status.code(),
        Some(0),
        "{what} | head -1 ended with {} (stderr: {})",
        run.status,
        run.stderr
    );
    assert!(
        !run.stderr.contains("panicked"),
        "{what} panicked: {}",
        run.stderr
    );
    assert_eq!(run.stderr, "", "{what} said something on a closed pipe");
    eprintln!(
        "cli manners: `{what} | head -1`: exit 0, stderr empty, {:.0} ms ({} KiB of output when read in full)",
        run.took.as_secs_f64() * 1000.0,
        full_len / 1024
    );
}

#[test]
fn keytool_list_into_a_closed_pipe_exits_zero_quietly() {
    let a = Instance::new("Acme");
    let b = Instance::new("Globex");
    a.trust(&b);
    // Many partners (copies of the real one under other names) so that
    // `list --json` outgrows any pipe buffer.
    let inst = InstanceDir::new(&a.dir);
    let one = inst.load_partners().expect("partners")[0].clone();
    let many: Vec<_> = (0..1500)
        .map(|i| {
            let mut p = one.clone();
            p.name = format!("Partner {i:04}");
            p
        })
        .collect();
    inst.save_partners(&many).expect("save partners");
    let full = a.keytool(&["list", "--json"]).len();
    let run = head_one(
        Command::new(bin("orgsync-keytool"))
            .arg("--dir")
            .arg(&a.dir)
            .args(["list", "--json"]),
    );
    assert_eq!(run.first.trim(), "[", "first line of list --json");
    assert_quiet("orgsync-keytool list --json", &run, full);
    let table = a.keytool(&["list"]).len();
    let run = head_one(
        Command::new(bin("orgsync-keytool"))
            .arg("--dir")
            .arg(&a.dir)
            .arg("list"),
    );
    assert!(run.first.starts_with("NAME"), "header: {}", run.first);
    assert_quiet("orgsync-keytool list", &run, table);
}

#[test]
fn orgsync_list_into_a_closed_pipe_exits_zero_quietly() {
    let mut a = Instance::new("Acme");
    a.start();
    let n = 3000;
    a.drop_file("many.ndjson", &support::contacts_ndjson("pipe", 0, n));
    assert_eq!(
        a.import_outcome("many.ndjson", Duration::from_secs(120)),
        "done"
    );
    let full = a.cli_ok(&["list"]);
    assert_eq!(full.lines().count(), n + 1, "header and one row each");
    for args in [
        &["list"][..],
        &["list", "--json"][..],
        &["--output", "csv", "list"][..],
    ] {
        let run = head_one(
            Command::new(bin("orgsync"))
                .arg("--dir")
                .arg(&a.dir)
                .args(args)
                .env_remove("ORGSYNC_DIR"),
        );
        let len = if args.len() == 1 {
            full.len()
        } else {
            a.cli_ok(args).len()
        };
        if args[0] == "--output" {
            assert_eq!(run.first.trim(), r#""ID","KIND","SUMMARY""#, "csv header");
        }
        assert_quiet(&format!("orgsync {}", args.join(" ")), &run, len);
    }
    a.stop();
}

/// `Error:` once, then one `  caused by:` line per cause.
#[test]
fn errors_print_once_with_their_causes() {
    use std::os::unix::fs::PermissionsExt;
    let a = Instance::new("Acme");
    let key = InstanceDir::new(&a.dir).tls_key_path();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = support::run(Command::new(bin("orgsyncd")).arg("--dir").arg(&a.dir));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "orgsyncd: {err}");
    assert!(
        err.starts_with("Error: cannot start orgsyncd in"),
        "orgsyncd: {err}"
    );
    assert!(err.contains("\n  caused by: "), "no cause line: {err}");
    assert_eq!(err.matches("Error:").count(), 1, "said once: {err}");
    assert!(err.contains("tls.key"), "names the file: {err}");
    eprintln!("cli manners: orgsyncd with a 0644 key:\n{}", err.trim_end());

    // No daemon: the CLI says so once, with the command that fixes it.
    let out = a.cli(&["list"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "orgsync list: {err}");
    assert!(err.starts_with("Error: orgsyncd is not running"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    let missing = a.dir.join("nowhere");
    let out = support::run(
        Command::new(bin("orgsync-keytool"))
            .arg("--dir")
            .arg(&missing)
            .arg("show"),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "keytool show: {err}");
    assert!(err.starts_with("Error: "), "{err}");
    assert_eq!(err.matches("Error:").count(), 1, "said once: {err}");
}

/// The subcommands listed under `Commands:` in a help text.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Checks `binary path... --help` and every command below it; returns how
/// many help texts were read.
fn walk_help(binary: &Path, path: &mut Vec<String>, missing: &mut Vec<String>) -> usize {
    let out = support::run(Command::new(binary).args(path.iter()).arg("--help"));
    let name = binary.file_name().and_then(|n| n.to_str()).unwrap_or("?");
    let what = format!("{name} {}", path.join(" "));
    assert!(out.status.success(), "{what} --help: {}", stderr(&out));
    let help = support::stdout(&out);
    if !help.contains("Example") {
        missing.push(what);
    }
    let mut n = 1;
    for sub in subcommands(&help) {
        path.push(sub);
        n += walk_help(binary, path, missing);
        path.pop();
    }
    n
}

#[test]
fn every_help_shows_an_example() {
    let mut missing = Vec::new();
    let mut total = 0;
    for name in ["orgsyncd", "orgsync", "orgsync-keytool"] {
        total += walk_help(&bin(name), &mut Vec::new(), &mut missing);
    }
    assert!(total > 40, "only {total} help texts found");
    assert!(missing.is_empty(), "no example in: {missing:?}");
    eprintln!("cli manners: {total} help texts, each with an example");
}
