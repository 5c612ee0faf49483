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

use std::ffi::OsStr;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

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

/// The hidden first argument with which a binary writes its man pages and
/// shell completions to a directory and exits (see [`generate_assets`]);
/// the package build uses it, so the clap definitions stay the only source.
pub const GENERATE_ASSETS: &str = "--generate-assets";

/// Parses the command line like `P::parse()`, but prints `--help`,
/// `--version` and usage errors without panicking on a closed pipe (clap's
/// own `exit` panics when stdout is gone). Exits with clap's status: 0 for
/// help and version, 2 for usage errors. `BINARY --generate-assets DIR`
/// writes the man pages and completions instead and exits.
pub fn parse_args<P: clap::Parser>() -> P {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(OsStr::new(GENERATE_ASSETS)) {
        let Some(dir) = args.next() else {
            eprintln!("Error: {GENERATE_ASSETS} needs an output directory");
            std::process::exit(2);
        };
        match generate_assets(P::command(), Path::new(&dir)) {
            Ok(files) => {
                eprintln!(
                    "wrote {} files to {}",
                    files.len(),
                    Path::new(&dir).display()
                );
                std::process::exit(0);
            }
            Err(e) => {
                print_error(&e);
                std::process::exit(1);
            }
        }
    }
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

/// Why man pages or completions could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AssetsError {
    /// A directory or file could not be created or written.
    #[error("cannot write {path}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Writes, under `dir`, the man pages of `cmd` and of each of its visible
/// subcommands (`man/NAME.1`, `man/NAME-SUB.1`, ...) and its completions for
/// bash (`completions/bash/NAME`), zsh (`completions/zsh/_NAME`) and fish
/// (`completions/fish/NAME.fish`), NAME being `cmd`'s name. Returns the
/// files written. Existing files are replaced.
pub fn generate_assets(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, AssetsError> {
    use clap_complete::Shell;
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AssetsError::Write { path, source }
    };
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let name = cmd.get_name().to_string();
    let man = dir.join("man");
    std::fs::create_dir_all(&man).map_err(write_err(&man))?;
    let mut files = Vec::new();
    man_pages(&cmd, &man, &mut files).map_err(write_err(&man))?;
    for (shell, file) in [
        (Shell::Bash, name.clone()),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let sub = dir.join("completions").join(shell.to_string());
        std::fs::create_dir_all(&sub).map_err(write_err(&sub))?;
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, &name, &mut script);
        let path = sub.join(file);
        std::fs::write(&path, script).map_err(write_err(&path))?;
        files.push(path);
    }
    Ok(files)
}

/// Writes the man page of `cmd` and of each visible subcommand below it,
/// named by clap's display name (`orgsync-share-add.1`).
fn man_pages(cmd: &clap::Command, dir: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, dir, files)?;
    }
    files.push(clap_mangen::Man::new(cmd.clone()).generate_to(dir)?);
    Ok(())
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

    /// A command with a group, like the binaries'.
    fn sample() -> clap::Command {
        clap::Command::new("tool")
            .version("1.0")
            .arg(clap::Arg::new("dir").long("dir"))
            .subcommand(clap::Command::new("list").about("List things"))
            .subcommand(
                clap::Command::new("share")
                    .subcommand(clap::Command::new("add"))
                    .subcommand(clap::Command::new("secret").hide(true)),
            )
    }

    #[test]
    fn assets_cover_every_visible_command_and_three_shells() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let files = generate_assets(sample(), tmp.path()).expect("generate");
        let mut names: Vec<String> = files
            .iter()
            .map(|p| {
                p.strip_prefix(tmp.path())
                    .expect("under dir")
                    .display()
                    .to_string()
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "completions/bash/tool",
                "completions/fish/tool.fish",
                "completions/zsh/_tool",
                "man/tool-list.1",
                "man/tool-share-add.1",
                "man/tool-share.1",
                "man/tool.1",
            ]
        );
        let page = std::fs::read_to_string(tmp.path().join("man/tool.1")).expect("page");
        assert!(page.contains(".TH tool 1"), "{page}");
        assert!(page.contains("\\-\\-dir"), "{page}");
        let bash = std::fs::read_to_string(tmp.path().join("completions/bash/tool")).expect("bash");
        assert!(bash.contains("complete -F _tool"), "{bash}");
    }

    #[test]
    fn assets_in_an_unwritable_place_name_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("a-file");
        std::fs::write(&file, "").expect("write");
        let e = generate_assets(sample(), &file).expect_err("a file is no directory");
        assert!(error_chain(&e).contains("a-file"), "{}", error_chain(&e));
    }

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
