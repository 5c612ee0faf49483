//! Manners shared by the orgsync command-line binaries (`orgsyncd`,
//! `orgsync`, `orgsync-keytool`): standard output that ends quietly when its
//! reader goes away, usage errors that cannot panic, and error reports that
//! print the whole cause chain once.
//!
//! Why EPIPE handling rather than restoring `SIGPIPE` to its default: a
//! process killed by `SIGPIPE` exits with status 141, which fails scripts
//! run with `set -o pipefail` (`orgsync list | head -1`). Writing through
//! [`out!`](crate::out)/[`outln!`](crate::outln) turns a closed pipe into a
//! clean exit with status 0, and the binaries deny `clippy::print_stdout`
//! so a bare `println!` (which panics on EPIPE) cannot creep back in.

use std::fmt;
use std::io::{self, Write};

/// Writes formatted text to standard output. A closed pipe (the reader
/// exited, e.g. `| head -1`) ends the process at once with status 0 and
/// nothing on standard error; any other write error ends it with status 1
/// and one line naming the error. Never panics.
pub fn write_stdout(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        exit_on_write_error(&e);
    }
}

/// Ends the process after a failed write to standard output: quietly with
/// status 0 for a closed pipe, else with status 1 and the error on stderr.
pub fn exit_on_write_error(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    // stderr may be gone too; there is nobody left to tell then.
    let _ = writeln!(
        io::stderr(),
        "Error: cannot write to standard output\n  caused by: {e}"
    );
    std::process::exit(1);
}

/// `print!` that ends the process quietly (status 0) on a closed pipe
/// instead of panicking. See [`write_stdout`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(::std::format_args!($($arg)*))
    };
}

/// `println!` that ends the process quietly (status 0) on a closed pipe
/// instead of panicking. See [`write_stdout`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::cli::write_stdout(::std::format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(::std::format_args!("{}\n", ::std::format_args!($($arg)*)))
    };
}

/// Restores the default action of `SIGPIPE` (end the process) that the
/// Rust runtime turns off, for tools whose output is a report where being
/// ended by the signal on `| head` is fine (the benchmark). The admin
/// binaries use [`out!`](crate::out) instead, which exits with status 0.
pub fn default_sigpipe() {
    // SAFETY: called first thing in `main`, before any thread exists;
    // SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Prints an error and its causes (see [`error_chain`]) to standard error
/// as `Error: ...`, once.
pub fn print_error(e: &(dyn std::error::Error + 'static)) {
    eprintln!("Error: {}", error_chain(e));
}

/// Parses the command line like `P::parse()`, but prints `--help`,
/// `--version` and usage errors without panicking on a closed pipe (clap's
/// own `exit` panics when stdout is gone). Exits with clap's status: 0 for
/// help and version, 2 for usage errors.
pub fn parse_args<P: clap::Parser>() -> P {
    match P::try_parse() {
        Ok(p) => p,
        Err(e) => {
            let _ = e.print();
            std::process::exit(e.exit_code());
        }
    }
}

/// The error as the binaries print it after `Error: `: the message, then
/// each cause on a line of its own, with a cause left out when the message
/// before it already contains it (so an error that repeats its source is
/// said once).
///
/// ```text
/// Error: cannot start orgsyncd in /srv/orgsync
///   caused by: secrets/tls.key is readable by others (mode 644)
/// ```
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut report = e.to_string();
    let mut said = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !said.contains(&text) {
            report.push_str("\n  caused by: ");
            report.push_str(&text);
            said = text;
        }
        cause = c.source();
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}")]
    struct Outer {
        path: &'static str,
        #[source]
        source: Inner,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("permission denied")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("bad key: {0}")]
    struct Repeats(#[source] Inner);

    #[test]
    fn report_lists_each_cause_once() {
        let e = Outer {
            path: "a.key",
            source: Inner,
        };
        assert_eq!(
            error_chain(&e),
            "cannot read a.key\n  caused by: permission denied"
        );
        // A message that already carries its source does not repeat it.
        assert_eq!(error_chain(&Repeats(Inner)), "bad key: permission denied");
    }
}
