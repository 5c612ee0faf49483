//! The peers' processes (node, syncthing): each with its output in a log
//! file, killed with the bench (the kernel's parent-death signal, so even a
//! bench killed at its deadline leaves none behind) and on drop, and every
//! wait a poll with a deadline that also stops on Ctrl-C.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::progress;

/// Set by the Ctrl-C watcher: every wait gives up, so the processes are
/// stopped and the temp dirs removed on the way out.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Makes every wait of this module fail at its next poll.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether Ctrl-C was pressed (a peer not started yet is then skipped).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// How often the waits look.
const POLL: Duration = Duration::from_millis(5);

/// Polls `check` every few milliseconds until it returns a value; fails
/// when `deadline` passes (naming `step`) or on Ctrl-C. `step` is also
/// reported as what the scenario is waiting for.
pub fn wait_for<T>(
    step: &str,
    deadline: Instant,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    progress::waiting_for(step);
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if interrupted() {
            bail!("interrupted while waiting for {step}");
        }
        if Instant::now() > deadline {
            bail!("deadline passed while waiting for {step}");
        }
        std::thread::sleep(POLL);
    }
}

/// One running peer process; killed (and reaped) when dropped.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdin closed and stdout and stderr in `log`
    /// (stderr to ours instead if `stderr_here`, for progress lines).
    pub fn spawn(name: &str, mut cmd: Command, log: &Path, stderr_here: bool) -> Result<Proc> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = if stderr_here {
            Stdio::inherit()
        } else {
            Stdio::from(out.try_clone()?)
        };
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent; the child dies with the thread that started it (this
        // module's callers run on one thread for the whole measurement).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(Proc {
            name: name.into(),
            child,
            log: log.to_path_buf(),
        })
    }

    /// Fails, with the end of its log, if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}): {}", self.name, self.log_tail());
        }
        Ok(())
    }

    /// How it exited, if it has.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// The last lines of its log, to say why it failed.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join(" | ");
        if tail.is_empty() {
            format!("nothing in {}", self.log.display())
        } else {
            tail
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Killing a process that just exited fails harmlessly.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A free TCP port on 127.0.0.1 (it could be taken before the peer binds
/// it; the peer then fails to start and says so).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
