//! Console accounts: `DIR/web-admins.json` (mode 0600), written by
//! `orgsync admin ...` and read by the daemon at each login and request,
//! so changes apply without a restart (a removed account's sessions end at
//! its next request).
//!
//! Passwords are argon2id hashes (default parameters, random salt); the
//! TOTP secret is stored base32 as authenticator apps need it.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// The accounts file inside the instance directory.
pub const ACCOUNTS_FILE: &str = "web-admins.json";
/// Shortest accepted password.
pub const MIN_PASSWORD_LEN: usize = 10;
/// Longest accepted password (argon2 hashes any length; this bounds work).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// What an account may do in the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees and changes everything the CLI can.
    Admin,
    /// Sees everything, changes nothing.
    Viewer,
}

impl Role {
    /// `admin` or `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = AccountError;
    fn from_str(s: &str) -> Result<Role, AccountError> {
        match s {
            "admin" => Ok(Role::Admin),
            "viewer" => Ok(Role::Viewer),
            other => Err(AccountError::Invalid(format!(
                "role {other:?} is not admin or viewer"
            ))),
        }
    }
}

/// One console account.
#[derive(Clone, Serialize, Deserialize)]
pub struct Account {
    /// Login name, also the actor name in the audit log.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// argon2 PHC string.
    pub password_hash: String,
    /// Base32 TOTP secret when the second factor is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_secret: Option<String>,
}

impl Account {
    /// A digest of the credentials (password hash and TOTP secret): it
    /// changes with `orgsync admin passwd` or `admin totp`, which ends the
    /// console sessions signed in before.
    pub fn stamp(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(self.password_hash.as_bytes());
        h.update(b"\0");
        h.update(self.totp_secret.as_deref().unwrap_or("").as_bytes());
        *h.finalize().as_bytes()
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        // The TOTP secret is a shared secret: do not leave it in freed memory.
        self.totp_secret.zeroize();
    }
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("totp", &self.totp_secret.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Default, Serialize, Deserialize)]
struct AccountsFile {
    accounts: Vec<Account>,
}

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Reading, locking or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path} is not a valid accounts file: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A name, role or password is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// No such account.
    #[error("no console account named {0:?}")]
    NotFound(String),
    /// The account exists already.
    #[error("a console account named {0:?} exists already (use `orgsync admin passwd`)")]
    Exists(String),
    /// Hashing failed (should not happen with default parameters).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Checks a login name: 1-64 characters of letters, digits, `.`, `_`, `-`,
/// `@`; not `daemon` (the audit log's name for automatic steps).
pub fn check_name(name: &str) -> Result<(), AccountError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if name.is_empty() || name.len() > 64 || !ok_chars {
        return Err(AccountError::Invalid(format!(
            "{name:?} is not a valid account name (1-64 letters, digits, . _ - @)"
        )));
    }
    if name == "daemon" {
        return Err(AccountError::Invalid(
            "\"daemon\" is reserved for automatic steps in the audit log".into(),
        ));
    }
    Ok(())
}

fn check_password(pw: &str) -> Result<(), AccountError> {
    let n = pw.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(AccountError::Invalid(format!(
            "the password must have at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if pw.len() > MAX_PASSWORD_LEN {
        return Err(AccountError::Invalid(format!(
            "the password must have at most {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}

/// An argon2id hash (default parameters, random salt) of `password`.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Whether `password` matches `hash` (argon2 compares in constant time). A
/// malformed hash never matches.
pub fn verify_password(hash: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_LEN {
        return false;
    }
    match PasswordHash::new(hash) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// The accounts file of one instance directory.
#[derive(Clone, Debug)]
pub struct Accounts {
    path: PathBuf,
}

impl Accounts {
    /// The accounts of the instance in `dir`.
    pub fn new(dir: &Path) -> Accounts {
        Accounts {
            path: dir.join(ACCOUNTS_FILE),
        }
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> AccountError {
        AccountError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Every account; none when the file does not exist.
    pub fn load(&self) -> Result<Vec<Account>, AccountError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(e)),
        };
        let file: AccountsFile =
            serde_json::from_slice(&text).map_err(|e| AccountError::Corrupt {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        Ok(file.accounts)
    }

    /// The account named `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<Account>, AccountError> {
        Ok(self.load()?.into_iter().find(|a| a.name == name))
    }

    /// Read-modify-write under an exclusive lock, replacing the file
    /// atomically (temp file 0600, fsync, rename), so a crash or a second
    /// `orgsync admin` leaves either the old or the new file.
    fn update<T>(
        &self,
        f: impl FnOnce(&mut Vec<Account>) -> Result<T, AccountError>,
    ) -> Result<T, AccountError> {
        let lock_path = self.path.with_extension("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| self.io(e))?;
        // SAFETY: flock on a file descriptor we own; released when `lock` closes.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(self.io(std::io::Error::last_os_error()));
        }
        let mut accounts = self.load()?;
        let out = f(&mut accounts)?;
        let bytes = Zeroizing::new(
            serde_json::to_vec_pretty(&AccountsFile { accounts })
                .map_err(|e| AccountError::Hash(e.to_string()))?,
        );
        let tmp = self.path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| self.io(e))?;
        file.write_all(&bytes).map_err(|e| self.io(e))?;
        file.sync_all().map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        Ok(out)
    }

    /// Adds an account. Refuses a taken name, a bad name or a short password.
    pub fn add(&self, name: &str, role: Role, password: &str) -> Result<(), AccountError> {
        check_name(name)?;
        check_password(password)?;
        let hash = hash_password(password)?;
        self.update(|list| {
            if list.iter().any(|a| a.name == name) {
                return Err(AccountError::Exists(name.into()));
            }
            list.push(Account {
                name: name.into(),
                role,
                password_hash: hash,
                totp_secret: None,
            });
            Ok(())
        })
    }

    /// Sets a new password.
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), AccountError> {
        check_password(password)?;
        let hash = hash_password(password)?;
        self.update(|list| {
            let a = list
                .iter_mut()
                .find(|a| a.name == name)
                .ok_or_else(|| AccountError::NotFound(name.into()))?;
            a.password_hash = hash;
            Ok(())
        })
    }

    /// Turns the second factor on with a new secret (returned, base32), or
    /// off with `enable = false` (returns `None`).
    pub fn set_totp(
        &self,
        name: &str,
        enable: bool,
    ) -> Result<Option<Zeroizing<String>>, AccountError> {
        self.update(|list| {
            let a = list
                .iter_mut()
                .find(|a| a.name == name)
                .ok_or_else(|| AccountError::NotFound(name.into()))?;
            a.totp_secret.zeroize();
            if enable {
                let s = super::totp::generate_secret();
                a.totp_secret = Some(s.to_string());
                Ok(Some(s))
            } else {
                a.totp_secret = None;
                Ok(None)
            }
        })
    }

    /// Removes an account.
    pub fn remove(&self, name: &str) -> Result<(), AccountError> {
        self.update(|list| {
            let before = list.len();
            list.retain(|a| a.name != name);
            if list.len() == before {
                return Err(AccountError::NotFound(name.into()));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn add_verify_passwd_totp_remove() {
        let dir = tempfile::tempdir().unwrap();
        let acc = Accounts::new(dir.path());
        assert!(acc.load().unwrap().is_empty());
        acc.add("ada", Role::Admin, "correct horse battery")
            .unwrap();
        let mode = std::fs::metadata(acc.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            acc.add("ada", Role::Viewer, "another password"),
            Err(AccountError::Exists(_))
        ));
        assert!(matches!(
            acc.add("bob", Role::Viewer, "short"),
            Err(AccountError::Invalid(_))
        ));
        assert!(matches!(
            acc.add("daemon", Role::Admin, "long enough pw"),
            Err(AccountError::Invalid(_))
        ));
        assert!(matches!(
            acc.add("a b", Role::Admin, "long enough pw"),
            Err(AccountError::Invalid(_))
        ));
        let a = acc.get("ada").unwrap().unwrap();
        assert!(verify_password(&a.password_hash, "correct horse battery"));
        assert!(!verify_password(&a.password_hash, "correct horse batterx"));
        assert!(!verify_password("garbage", "correct horse battery"));
        acc.set_password("ada", "a new long password").unwrap();
        let a = acc.get("ada").unwrap().unwrap();
        assert!(verify_password(&a.password_hash, "a new long password"));
        let s = acc.set_totp("ada", true).unwrap().unwrap();
        assert_eq!(
            acc.get("ada").unwrap().unwrap().totp_secret.as_deref(),
            Some(s.as_str())
        );
        acc.remove("ada").unwrap();
        assert!(matches!(acc.remove("ada"), Err(AccountError::NotFound(_))));
    }
}
