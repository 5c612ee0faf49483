//! Server-side sessions, CSRF tokens and the login rate limit.
//!
//! A session id is 256 random bits, sent only in an HttpOnly,
//! SameSite=Strict cookie; the server keeps only its BLAKE3 hash, so the
//! table lookup does not leak an id through timing and a memory dump does
//! not yield usable cookies. Each session has its own 256-bit CSRF token
//! that every form carries; tokens are compared in constant time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::RngCore;
use subtle::ConstantTimeEq;

/// Idle time after which a signed-in session ends.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Longest life of a signed-in session, however active.
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 60 * 60);
/// Life of a session that has not signed in (the login form's).
pub const ANONYMOUS_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Most sessions kept; beyond it the oldest anonymous ones are dropped, so
/// a flood of login-page loads cannot exhaust memory or evict signed-in admins.
pub const MAX_SESSIONS: usize = 4096;
/// Wrong passwords (or codes) in a row that lock an account.
pub const ACCOUNT_MAX_FAILURES: u32 = 10;
/// Failed logins from one address, within [`LOCK_FOR`], that lock the address.
pub const ADDRESS_MAX_FAILURES: u32 = 30;
/// How long a lock lasts.
pub const LOCK_FOR: Duration = Duration::from_secs(15 * 60);

/// A random 256-bit value, hex (session ids and CSRF tokens).
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    data_encoding::HEXLOWER.encode(&b)
}

/// Constant-time equality of two tokens.
pub fn tokens_equal(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Where a session is in the login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Not signed in (carries the login form's CSRF token).
    Anonymous,
    /// Password accepted, TOTP code still needed for `name`.
    NeedTotp {
        /// The account.
        name: String,
    },
    /// Signed in as `name`.
    SignedIn {
        /// The account.
        name: String,
    },
}

/// One session as the handlers see it.
#[derive(Clone, Debug)]
pub struct Session {
    /// Login stage.
    pub stage: Stage,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    /// Digest of the account's credentials at sign-in (see
    /// [`super::accounts::Account::stamp`]): a password or TOTP change
    /// ends the sessions opened before it.
    pub stamp: [u8; 32],
    created: Instant,
    last_seen: Instant,
}

impl Session {
    fn expired(&self, now: Instant) -> bool {
        match self.stage {
            Stage::SignedIn { .. } => {
                now.duration_since(self.last_seen) > IDLE_TIMEOUT
                    || now.duration_since(self.created) > ABSOLUTE_TIMEOUT
            }
            _ => now.duration_since(self.created) > ANONYMOUS_TIMEOUT,
        }
    }
}

fn key(id: &str) -> [u8; 32] {
    *blake3::hash(id.as_bytes()).as_bytes()
}

/// The session table.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    /// Creates a session at `stage`; returns its id (for the cookie) and
    /// the session.
    pub fn create(&self, stage: Stage) -> (String, Session) {
        self.create_stamped(stage, [0; 32])
    }

    /// [`Sessions::create`] remembering the account's credential stamp.
    pub fn create_stamped(&self, stage: Stage, stamp: [u8; 32]) -> (String, Session) {
        let now = Instant::now();
        let id = random_token();
        let s = Session {
            stage,
            csrf: random_token(),
            stamp,
            created: now,
            last_seen: now,
        };
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, s| !s.expired(now));
        if map.len() >= MAX_SESSIONS {
            // Drop the oldest anonymous sessions, never signed-in ones.
            let mut anon: Vec<([u8; 32], Instant)> = map
                .iter()
                .filter(|(_, s)| !matches!(s.stage, Stage::SignedIn { .. }))
                .map(|(k, s)| (*k, s.created))
                .collect();
            anon.sort_by_key(|(_, t)| *t);
            let excess = map.len() + 1 - MAX_SESSIONS;
            for (k, _) in anon.into_iter().take(excess) {
                map.remove(&k);
            }
        }
        map.insert(key(&id), s.clone());
        (id, s)
    }

    /// The live session with this id (touching it), or `None` when unknown
    /// or expired (an expired one is removed).
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let k = key(id);
        let s = map.get_mut(&k)?;
        if s.expired(now) {
            map.remove(&k);
            return None;
        }
        s.last_seen = now;
        Some(s.clone())
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key(id));
    }

    /// Ends every session of account `name` (removed or password changed).
    pub fn remove_account(&self, name: &str) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, s| match &s.stage {
                Stage::SignedIn { name: n } | Stage::NeedTotp { name: n } => n != name,
                Stage::Anonymous => true,
            });
    }

    /// Number of live entries (for tests and metrics).
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Failures {
    count: u32,
    first: Option<Instant>,
    locked_until: Option<Instant>,
}

/// Login rate limit per account and per client address.
///
/// [`ACCOUNT_MAX_FAILURES`] wrong passwords or codes in a row lock that
/// account name for [`LOCK_FOR`] (whether or not it exists, so the lock does
/// not reveal which names exist); [`ADDRESS_MAX_FAILURES`] failures from one
/// address within [`LOCK_FOR`] lock the address. While locked, logins are
/// refused without checking the password. A success resets the account.
#[derive(Default)]
pub struct Limiter {
    accounts: Mutex<HashMap<String, Failures>>,
    addresses: Mutex<HashMap<IpAddr, Failures>>,
    /// The last TOTP step accepted per account: a code is accepted once.
    totp_steps: Mutex<HashMap<String, u64>>,
}

/// Why a login is refused before checking anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locked {
    /// The account is locked for this long still.
    Account(Duration),
    /// The client address is locked for this long still.
    Address(Duration),
}

/// Most entries kept per table (oldest unlocked ones are dropped first).
const MAX_TRACKED: usize = 10_000;

impl Limiter {
    /// `Some` when a login for `name` from `addr` must be refused now.
    pub fn check(&self, name: &str, addr: IpAddr) -> Option<Locked> {
        let now = Instant::now();
        let left = |f: &Failures| f.locked_until.and_then(|t| t.checked_duration_since(now));
        if let Some(d) = self
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&addr)
            .and_then(left)
        {
            return Some(Locked::Address(d));
        }
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .and_then(left)
            .map(Locked::Account)
    }

    /// Records a failed attempt; returns the lock it caused, if any.
    pub fn failure(&self, name: &str, addr: IpAddr) -> Option<Locked> {
        let now = Instant::now();
        let mut locked = None;
        {
            let mut map = self
                .addresses
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            prune(&mut map, now);
            let f = map.entry(addr).or_default();
            if f.first.is_none_or(|t| now.duration_since(t) > LOCK_FOR) {
                *f = Failures {
                    count: 0,
                    first: Some(now),
                    locked_until: None,
                };
            }
            f.count += 1;
            if f.count >= ADDRESS_MAX_FAILURES {
                f.locked_until = Some(now + LOCK_FOR);
                locked = Some(Locked::Address(LOCK_FOR));
            }
        }
        let mut map = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        prune(&mut map, now);
        let f = map.entry(name.to_string()).or_default();
        if f.locked_until.is_some_and(|t| t <= now) {
            *f = Failures::default();
        }
        f.count += 1;
        if f.count >= ACCOUNT_MAX_FAILURES {
            f.locked_until = Some(now + LOCK_FOR);
            locked = Some(Locked::Account(LOCK_FOR));
        }
        locked
    }

    /// Records a success: the account's count starts again.
    pub fn success(&self, name: &str) {
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }

    /// Accepts TOTP step `step` for `name` only if no later-or-equal step
    /// was accepted before (a code cannot be replayed).
    pub fn use_totp_step(&self, name: &str, step: u64) -> bool {
        let mut map = self
            .totp_steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match map.get(name) {
            Some(&last) if step <= last => false,
            _ => {
                map.insert(name.to_string(), step);
                true
            }
        }
    }
}

fn prune<K: std::hash::Hash + Eq + Clone>(map: &mut HashMap<K, Failures>, now: Instant) {
    if map.len() < MAX_TRACKED {
        return;
    }
    map.retain(|_, f| f.locked_until.is_some_and(|t| t > now));
    if map.len() >= MAX_TRACKED {
        // Still full of live locks: forget the oldest half.
        let mut keys: Vec<(K, Option<Instant>)> =
            map.iter().map(|(k, f)| (k.clone(), f.first)).collect();
        keys.sort_by_key(|(_, t)| *t);
        for (k, _) in keys.into_iter().take(MAX_TRACKED / 2) {
            map.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_and_csrf_are_random_and_compared_exactly() {
        let s = Sessions::default();
        let (id1, s1) = s.create(Stage::Anonymous);
        let (id2, s2) = s.create(Stage::Anonymous);
        assert_eq!(id1.len(), 64);
        assert_ne!(id1, id2);
        assert_ne!(s1.csrf, s2.csrf);
        assert_eq!(s.get(&id1).unwrap().csrf, s1.csrf);
        assert!(s.get("not-a-session").is_none());
        assert!(tokens_equal(&s1.csrf, &s1.csrf.clone()));
        assert!(!tokens_equal(&s1.csrf, &s2.csrf));
        assert!(!tokens_equal(&s1.csrf, ""));
        assert!(!tokens_equal(&s1.csrf, &s1.csrf[..63]));
        s.remove(&id1);
        assert!(s.get(&id1).is_none());
    }

    #[test]
    fn anonymous_flood_never_evicts_signed_in_sessions() {
        let s = Sessions::default();
        let (admin, _) = s.create(Stage::SignedIn { name: "ada".into() });
        for _ in 0..MAX_SESSIONS + 100 {
            s.create(Stage::Anonymous);
        }
        assert!(s.len() <= MAX_SESSIONS);
        assert!(s.get(&admin).is_some());
        s.remove_account("ada");
        assert!(s.get(&admin).is_none());
    }

    #[test]
    fn ten_failures_lock_the_account_not_others() {
        let l = Limiter::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for i in 1..ACCOUNT_MAX_FAILURES {
            assert_eq!(l.failure("ada", ip), None, "failure {i}");
            assert_eq!(l.check("ada", ip), None);
        }
        assert_eq!(l.failure("ada", ip), Some(Locked::Account(LOCK_FOR)));
        assert!(matches!(l.check("ada", ip), Some(Locked::Account(_))));
        assert_eq!(l.check("bob", ip), None);
        // A success elsewhere does not unlock; success resets a count.
        l.failure("bob", ip);
        l.success("bob");
        assert_eq!(l.check("bob", ip), None);
    }

    #[test]
    fn many_names_from_one_address_lock_the_address() {
        let l = Limiter::default();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let other: IpAddr = "10.0.0.10".parse().unwrap();
        let mut locked = None;
        for i in 0..ADDRESS_MAX_FAILURES {
            locked = l.failure(&format!("user{i}"), ip);
        }
        assert_eq!(locked, Some(Locked::Address(LOCK_FOR)));
        assert!(matches!(l.check("fresh", ip), Some(Locked::Address(_))));
        assert_eq!(l.check("fresh", other), None);
    }

    #[test]
    fn a_totp_step_is_accepted_once() {
        let l = Limiter::default();
        assert!(l.use_totp_step("ada", 100));
        assert!(!l.use_totp_step("ada", 100));
        assert!(!l.use_totp_step("ada", 99));
        assert!(l.use_totp_step("ada", 101));
        assert!(l.use_totp_step("bob", 100));
    }
}
