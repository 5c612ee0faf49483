//! `orgsync admin ...`: web console accounts. Works on the instance
//! directory's accounts file directly (locked, replaced atomically), so it
//! needs no running daemon; a running daemon reads the file at each login
//! and request.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use clap::Subcommand;
use orgsync_daemon::web::accounts::{AccountError, Accounts, Role};
use orgsync_daemon::web::totp;
use orgsync_keytool::outln;
use serde_json::json;

use super::{show, Format, Table};
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub enum AdminCmd {
    /// Create a console account (the password is asked twice on the terminal).
    #[command(
        after_help = "Examples:\n  orgsync admin add ada\n  orgsync admin add bob --role viewer\n  printf '%s\\n' \"$PW\" | orgsync admin add ci --password-stdin"
    )]
    Add {
        /// Login name (letters, digits, . _ - @), also the actor in the audit log.
        name: String,
        /// admin (changes things) or viewer (sees everything, changes nothing).
        #[arg(long, default_value = "admin")]
        role: String,
        /// Read the password from the first line of stdin (for scripts).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password.
    #[command(
        after_help = "Examples:\n  orgsync admin passwd ada\n  printf '%s\\n' \"$PW\" | orgsync admin passwd ci --password-stdin"
    )]
    Passwd {
        /// The account.
        name: String,
        /// Read the password from the first line of stdin (for scripts).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Turn the TOTP second factor on (prints the otpauth:// URI, and a QR
    /// code on a terminal, for an authenticator app; shown once) or off with --off.
    #[command(after_help = "Examples:\n  orgsync admin totp ada\n  orgsync admin totp ada --off")]
    Totp {
        /// The account.
        name: String,
        /// Turn the second factor off.
        #[arg(long)]
        off: bool,
    },
    /// Delete an account (its console sessions end at their next request).
    #[command(after_help = "Example:\n  orgsync admin remove bob")]
    Remove {
        /// The account.
        name: String,
    },
    /// List accounts (name, role, second factor).
    #[command(after_help = "Examples:\n  orgsync admin list\n  orgsync admin list --json")]
    List,
}

/// Exit code and message of a failure.
pub type AdminFailure = (u8, String);

fn fail(e: AccountError) -> AdminFailure {
    let code = match e {
        AccountError::Invalid(_) | AccountError::Exists(_) => 2,
        AccountError::NotFound(_) => 3,
        _ => 1,
    };
    (code, e.to_string())
}

fn read_password(from_stdin: bool, confirm: bool) -> Result<Zeroizing<String>, AdminFailure> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| (1, format!("cannot read the password from stdin: {e}")))?;
        let pw = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_string());
        return Ok(pw);
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map(Zeroizing::new)
            .map_err(|e| {
                (
                    1,
                    format!("cannot read the password from the terminal: {e}"),
                )
            })
    };
    let pw = ask("Password: ")?;
    if confirm {
        let again = ask("Password again: ")?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            pw.as_bytes(),
            again.as_bytes(),
        )) {
            return Err((2, "the two passwords differ; nothing changed".into()));
        }
    }
    Ok(pw)
}

/// Runs one `orgsync admin` command on the instance in `dir`.
pub fn run(dir: &Path, format: Format, cmd: AdminCmd) -> Result<(), AdminFailure> {
    if !dir.join(orgsync_daemon::config::CONFIG_FILE).exists() {
        return Err((
            2,
            format!(
                "{} is not an instance directory (no {})",
                dir.display(),
                orgsync_daemon::config::CONFIG_FILE
            ),
        ));
    }
    let accounts = Accounts::new(dir);
    match cmd {
        AdminCmd::Add {
            name,
            role,
            password_stdin,
        } => {
            let role: Role = role.parse().map_err(fail)?;
            orgsync_daemon::web::accounts::check_name(&name).map_err(fail)?;
            let pw = read_password(password_stdin, true)?;
            accounts.add(&name, role, &pw).map_err(fail)?;
            let addr = orgsync_daemon::config::Config::load(dir)
                .map(|c| c.web.listen.to_string())
                .unwrap_or_else(|_| orgsync_daemon::config::DEFAULT_WEB_LISTEN.into());
            eprintln!(
                "added {} account {name:?}; the console is at http://{addr}/ (a running orgsyncd starts it on SIGHUP or at its next start)",
                role.as_str()
            );
        }
        AdminCmd::Passwd {
            name,
            password_stdin,
        } => {
            if accounts.get(&name).map_err(fail)?.is_none() {
                return Err(fail(AccountError::NotFound(name)));
            }
            let pw = read_password(password_stdin, true)?;
            accounts.set_password(&name, &pw).map_err(fail)?;
            eprintln!("password of {name:?} changed");
        }
        AdminCmd::Totp { name, off } => match accounts.set_totp(&name, !off).map_err(fail)? {
            Some(secret) => {
                let uri = totp::uri("orgsync", &name, &secret);
                if format.is_json() {
                    outln!("{}", json!({"name": name, "secret": *secret, "uri": uri}));
                } else {
                    outln!("{uri}");
                    // A QR code for the phone's camera, when on a terminal.
                    if std::io::stdout().is_terminal() {
                        if let Ok(code) = qrcode::QrCode::new(uri.as_bytes()) {
                            let art = code
                                .render::<qrcode::render::unicode::Dense1x2>()
                                .quiet_zone(true)
                                .build();
                            outln!("{art}");
                        }
                    }
                    eprintln!(
                        "second factor on for {name:?}: add the URI above to an authenticator app (secret {}); it is not shown again",
                        *secret
                    );
                }
            }
            None => eprintln!("second factor off for {name:?}"),
        },
        AdminCmd::Remove { name } => {
            accounts.remove(&name).map_err(fail)?;
            eprintln!("removed {name:?}");
        }
        AdminCmd::List => {
            let list = accounts.load().map_err(fail)?;
            let rows: Vec<_> = list
                .iter()
                .map(|a| json!({"name": a.name, "role": a.role.as_str(), "totp": a.totp_secret.is_some()}))
                .collect();
            show(format, &json!({ "accounts": rows }), || {
                let mut t = Table::new(&["NAME", "ROLE", "TOTP"]);
                for a in &list {
                    t.row(vec![
                        json!(a.name),
                        json!(a.role.as_str()),
                        json!(if a.totp_secret.is_some() { "on" } else { "off" }),
                    ]);
                }
                t
            });
        }
    }
    Ok(())
}
