//! The command-line side: `orgsync backup` and `orgsyncd restore`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use zeroize::Zeroizing;

use super::archive::Payload;
use super::atomic::NamelessFile;
use super::{restore, seal, BackupError};
use crate::client::Client;

/// Environment variable holding the archive passphrase.
pub const PASSPHRASE_ENV: &str = "ORGSYNC_BACKUP_PASSPHRASE";

/// Arguments of `orgsync backup`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  orgsync backup -o /var/backups/orgsync-$(date +%F).osb\n  ORGSYNC_BACKUP_PASSPHRASE=... orgsync backup -o full.osb --with-secrets\n  orgsync backup -o full.osb --with-secrets --passphrase-file /root/backup.pass"
)]
pub struct BackupArgs {
    /// The archive to write (must not exist; it appears only once complete).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Include secrets/ (org keys, TLS key); the archive is then encrypted
    /// with a passphrase.
    #[arg(long)]
    pub with_secrets: bool,
    /// Read the passphrase from this file (first line) instead of
    /// ORGSYNC_BACKUP_PASSPHRASE or a prompt.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// Arguments of `orgsyncd restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The archive written by `orgsync backup`.
    pub file: PathBuf,
    /// The new instance directory (absent or empty).
    #[arg(long)]
    pub dir: PathBuf,
    /// Read the passphrase from this file (first line) instead of
    /// ORGSYNC_BACKUP_PASSPHRASE or a prompt.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// The passphrase from `file`, the environment or a prompt on a terminal.
pub fn passphrase(file: Option<&Path>, confirm: bool) -> Result<Zeroizing<String>, BackupError> {
    let mut pass = if let Some(f) = file {
        let text = Zeroizing::new(
            std::fs::read_to_string(f)
                .map_err(BackupError::io("cannot read passphrase file", f))?,
        );
        Zeroizing::new(text.lines().next().unwrap_or("").to_string())
    } else if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        Zeroizing::new(p)
    } else if std::io::stdin().is_terminal() {
        let p = Zeroizing::new(rpassword::prompt_password("backup passphrase: ").map_err(
            BackupError::io("cannot read the passphrase from", "/dev/tty"),
        )?);
        if confirm {
            let again = Zeroizing::new(rpassword::prompt_password("again: ").map_err(
                BackupError::io("cannot read the passphrase from", "/dev/tty"),
            )?);
            if again != p {
                return Err(BackupError::Kdf("the passphrases differ".into()));
            }
        }
        p
    } else {
        return Err(BackupError::PassphraseNeeded);
    };
    if pass.trim().is_empty() {
        pass.clear();
        return Err(BackupError::EmptyPassphrase);
    }
    Ok(pass)
}

/// `orgsync backup`: asks the daemon for a snapshot and writes the archive.
/// Returns a one-line summary.
pub async fn backup(client: &Client, args: &BackupArgs) -> Result<String, BackupError> {
    let started = Instant::now();
    let pass = if args.with_secrets {
        Some(passphrase(args.passphrase_file.as_deref(), true)?)
    } else {
        None
    };
    // Created first so that nothing, not even a temporary name, exists at
    // any point before the archive is complete.
    let mut out = NamelessFile::create(&args.output, 0o600)?;
    let path = if args.with_secrets {
        "/v1/backup?secrets=true"
    } else {
        "/v1/backup"
    };
    let body = Zeroizing::new(
        client
            .post_bytes(path)
            .await
            .map_err(|e| BackupError::Daemon(e.to_string()))?
            .to_vec(),
    );
    let fetched = started.elapsed();
    let manifest = Payload::decode(&body)?.manifest;
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(body.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_message("writing archive");
        b
    });
    let mut writer = std::io::BufWriter::new(out.file());
    seal::seal_to(
        &mut writer,
        &body,
        pass.as_ref().map(|p| p.as_bytes()),
        |n| {
            if let Some(b) = &bar {
                b.set_position(n);
            }
        },
    )?;
    writer
        .into_inner()
        .map_err(|e| BackupError::io("cannot write", &args.output)(e.into_error()))?;
    out.commit()?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let size = std::fs::metadata(&args.output)
        .map(|m| m.len())
        .unwrap_or(0);
    Ok(format!(
        "backup {}: {} objects, log head {}, digest {}, {} bytes{}, snapshot {:.0} ms (writes paused {:.1} ms), total {:.0} ms",
        args.output.display(),
        manifest.objects,
        manifest.log_head,
        manifest.digest,
        size,
        if args.with_secrets { ", with secrets, encrypted" } else { "" },
        fetched.as_secs_f64() * 1000.0,
        manifest.write_pause_us as f64 / 1000.0,
        started.elapsed().as_secs_f64() * 1000.0,
    ))
}

/// `orgsyncd restore`: verifies the archive and recreates the instance.
/// Returns a one-line summary.
pub fn restore_cmd(args: &RestoreArgs) -> Result<String, BackupError> {
    restore::check_target(&args.dir)?;
    let bytes = std::fs::read(&args.file).map_err(BackupError::io("cannot read", &args.file))?;
    let pass = if seal::is_encrypted(&bytes) {
        Some(passphrase(args.passphrase_file.as_deref(), false)?)
    } else {
        None
    };
    let r = restore::restore(&bytes, pass.as_ref().map(|p| p.as_bytes()), &args.dir)?;
    Ok(format!(
        "restored {} into {}: {} objects (digest {}), log head {}, {} files{}, new instance {} (was {}), {:.0} ms",
        args.file.display(),
        args.dir.display(),
        r.manifest.objects,
        r.manifest.digest,
        r.manifest.log_head,
        r.files,
        if r.with_secrets { " with secrets" } else { " without secrets (copy secrets/ before starting)" },
        r.instance,
        r.manifest.instance,
        r.elapsed.as_secs_f64() * 1000.0,
    ))
}
