//! Pairing and revocation from the console, through keytool's own library
//! functions (`orgsync_keytool::pairing::{InviteListener, join}`,
//! `partners::{find_partner, revoke}`), the same code `orgsync-keytool
//! invite / join / revoke` runs. Each writes `partners.toml`; the partner
//! set is then reloaded at once (as the daemon's directory watcher would).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orgsync_keytool::pairing::{self, InviteListener, InviteParams, JoinParams, PairingError};
use orgsync_keytool::{partners, timefmt, words, InstanceDir, KeytoolError};
use orgsync_protocol::model::OrgId;
use tokio::sync::watch;
use zeroize::Zeroizing;

/// Re-reads partners.toml into the running daemon.
pub type Reload = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Longest invitation the console creates.
pub const MAX_INVITE: Duration = Duration::from_secs(24 * 3600);

/// Why a console pairing action failed.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// A form field is wrong (the field's name, then what is wrong).
    #[error("{1}")]
    Field(&'static str, String),
    /// keytool refused (identity, partners.toml, no such partner).
    #[error("{0}")]
    Keytool(#[from] KeytoolError),
    /// The pairing exchange failed.
    #[error("{0}")]
    Pairing(#[from] PairingError),
    /// partners.toml was written but could not be reloaded.
    #[error("partners.toml was updated but the daemon could not reload it: {0}")]
    Reload(String),
}

/// What the About page shows of the current invitation (never the code).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InviteState {
    /// Waiting for the partner to join, on `listen`, until `expires_ms`.
    Waiting {
        /// The bound pairing address.
        listen: SocketAddr,
        /// Unix ms.
        expires_ms: u64,
    },
    /// Paired with the named partner.
    Paired(String),
    /// Ended without pairing (expired, wrong code, refused).
    Failed(String),
}

/// A freshly created invitation: the only time the code is available.
pub struct NewInvite {
    /// The one-time code (shown once, never stored).
    pub code: Zeroizing<String>,
    /// Where the partner connects (`THIS_HOST:PORT` for a wildcard bind).
    pub connect: String,
    /// Unix ms.
    pub expires_ms: u64,
}

struct Current {
    state: InviteState,
    task: Option<tokio::task::AbortHandle>,
}

/// The instance directory and the daemon's partner reload, for pairing by
/// code and revoking from the console. At most one invitation runs: a new
/// one cancels the previous.
pub struct PartnerControl {
    dir: InstanceDir,
    reload: Reload,
    current: Mutex<Option<Current>>,
    stop: Mutex<Option<watch::Receiver<bool>>>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl PartnerControl {
    /// Control over the instance in `dir`; `reload` is called after every
    /// write of partners.toml.
    pub fn new(dir: InstanceDir, reload: Reload) -> PartnerControl {
        PartnerControl {
            dir,
            reload,
            current: Mutex::default(),
            stop: Mutex::default(),
        }
    }

    /// Invitations end when `stop` turns true (the console stopping).
    pub(super) fn set_stop(&self, stop: watch::Receiver<bool>) {
        *self.stop.lock().unwrap_or_else(PoisonError::into_inner) = Some(stop);
    }

    fn reload(&self) -> Result<(), PairError> {
        (self.reload)().map_err(PairError::Reload)
    }

    /// Where invitations listen unless the admin says otherwise: the sync
    /// listen address's host with the next port (keytool's convention of
    /// 7700 for sync and 7701 for pairing), or `0.0.0.0:7701`.
    pub fn default_invite_listen(&self) -> String {
        self.dir
            .listen_address()
            .ok()
            .flatten()
            .and_then(|l| l.parse::<SocketAddr>().ok())
            .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1).max(1)).to_string())
            .unwrap_or_else(|| "0.0.0.0:7701".into())
    }

    /// The state of the last invitation, if any.
    pub fn invite_state(&self) -> Option<InviteState> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|c| c.state.clone())
    }

    fn set_state(&self, state: InviteState) {
        if let Some(c) = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            c.state = state;
        }
    }

    /// Opens a one-time invitation on `listen` (UDP) valid for `valid`:
    /// the code is returned once; the outcome is reported to `done` (the
    /// partner's name, or why it ended) and kept for [`Self::invite_state`].
    pub fn invite(
        self: &Arc<Self>,
        listen: &str,
        valid: Duration,
        done: impl FnOnce(Result<String, String>) + Send + 'static,
    ) -> Result<NewInvite, PairError> {
        let listen: SocketAddr = listen.trim().parse().map_err(|_| {
            PairError::Field(
                "listen",
                format!(
                    "{:?} is not an address to listen on; write IP:PORT, e.g. 0.0.0.0:7701",
                    listen.trim()
                ),
            )
        })?;
        if valid.is_zero() || valid > MAX_INVITE {
            return Err(PairError::Field(
                "minutes",
                "the code must stay valid between 1 minute and 24 hours".into(),
            ));
        }
        let identity = self.dir.load_identity()?;
        let addresses = self.dir.advertised_addresses(&[])?;
        // One invitation at a time: a new one replaces the old.
        if let Some(old) = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            if let Some(t) = old.task {
                t.abort();
            }
        }
        let listener = InviteListener::bind(&identity, listen)?;
        let bound = listener.local_addr()?;
        let code = Zeroizing::new(words::generate());
        let expires_ms = unix_ms() + valid.as_millis() as u64;
        let connect = if bound.ip().is_unspecified() {
            format!("THIS_HOST:{}", bound.port())
        } else {
            bound.to_string()
        };
        let me = self.clone();
        let task_code = code.to_string();
        let mut stop = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let task = tokio::spawn(async move {
            let mut log = |line: String| tracing::info!("console invitation: {line}");
            let run = listener.run(
                InviteParams {
                    dir: &me.dir,
                    identity: &identity,
                    code: task_code,
                    addresses,
                    expires_at: Instant::now() + valid,
                    linger: Duration::ZERO,
                },
                &mut log,
            );
            let stopped = async {
                match stop.as_mut() {
                    Some(s) => {
                        let _ = s.wait_for(|v| *v).await;
                    }
                    None => std::future::pending().await,
                }
            };
            let outcome = tokio::select! {
                r = run => r.map_err(PairError::from),
                () = stopped => return,
            };
            let outcome = match outcome {
                Ok(p) => me.reload().map(|()| p.partner.name),
                Err(e) => Err(e),
            };
            me.set_state(match &outcome {
                Ok(name) => InviteState::Paired(name.clone()),
                Err(e) => InviteState::Failed(e.to_string()),
            });
            done(outcome.map_err(|e| e.to_string()));
        });
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(Current {
            state: InviteState::Waiting {
                listen: bound,
                expires_ms,
            },
            task: Some(task.abort_handle()),
        });
        Ok(NewInvite {
            code,
            connect,
            expires_ms,
        })
    }

    /// Joins a partner's invitation at `connect` (HOST:PORT) for account
    /// `account` with `code`; returns the partner's name. Nothing is stored
    /// unless pairing succeeds.
    pub async fn join(
        &self,
        connect: &str,
        account: &str,
        code: &str,
    ) -> Result<String, PairError> {
        let connect = connect.trim();
        orgsync_keytool::instance::validate_address(connect)
            .map_err(|e| PairError::Field("connect", e.to_string()))?;
        let expected: OrgId = account
            .trim()
            .parse()
            .map_err(|e| PairError::Field("account", format!("account number: {e}")))?;
        let code = Zeroizing::new(
            words::normalize(code).map_err(|e| PairError::Field("code", e.to_string()))?,
        );
        let identity = self.dir.load_identity()?;
        let addresses = self.dir.advertised_addresses(&[])?;
        let paired = pairing::join(JoinParams {
            dir: &self.dir,
            identity: &identity,
            connect: connect.to_string(),
            expected,
            code: code.to_string(),
            addresses,
        })
        .await?;
        self.reload()?;
        Ok(paired.partner.name)
    }

    /// Revokes the partner `query` names (account number or name): its
    /// certificate and keys are refused from now on. Returns its name and
    /// whether it was already revoked.
    pub fn revoke(&self, query: &str) -> Result<(String, bool), PairError> {
        let mut list = self.dir.load_partners()?;
        let i = partners::find_partner(&list, query)?;
        let changed = partners::revoke(&mut list, i, &timefmt::now_rfc3339());
        if changed {
            self.dir.save_partners(&list)?;
            self.reload()?;
        }
        Ok((list[i].name.clone(), !changed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(name: &str) -> (tempfile::TempDir, Arc<PartnerControl>) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(name);
        InstanceDir::create(&dir, name, "127.0.0.1:7700").unwrap();
        let c = PartnerControl::new(InstanceDir::new(&dir), Arc::new(|| Ok(())));
        (tmp, Arc::new(c))
    }

    /// Bad join input is refused naming its field, before any network step.
    #[tokio::test]
    async fn join_refuses_bad_fields_by_name() {
        let (_t, c) = control("Acme");
        let (_t2, other) = control("Globex");
        let acct = other.dir.load_identity().unwrap().org_id.account_number();
        for (connect, account, code, want) in [
            ("no-port", acct.as_str(), "7-lantern-wagon", "connect"),
            ("127.0.0.1:9", "ABC", "7-lantern-wagon", "account"),
            ("127.0.0.1:9", acct.as_str(), "lantern", "code"),
        ] {
            match c.join(connect, account, code).await {
                Err(PairError::Field(f, msg)) => assert_eq!(f, want, "{msg}"),
                other => panic!("{want}: {other:?}"),
            }
        }
        assert!(c.dir.load_partners().unwrap().is_empty());
    }

    /// Bad invitation input is refused naming its field; a good one binds,
    /// reports waiting, and a second replaces the first.
    #[tokio::test]
    async fn invite_checks_fields_and_replaces_the_previous_one() {
        let (_t, c) = control("Acme");
        let bad = c.invite("nowhere", Duration::from_secs(60), |_| {});
        assert!(matches!(bad, Err(PairError::Field("listen", _))));
        let bad = c.invite("127.0.0.1:0", Duration::ZERO, |_| {});
        assert!(matches!(bad, Err(PairError::Field("minutes", _))));
        assert_eq!(c.invite_state(), None);
        let first = c
            .invite("127.0.0.1:0", Duration::from_secs(60), |_| {})
            .unwrap();
        let second = c
            .invite("127.0.0.1:0", Duration::from_secs(60), |_| {})
            .unwrap();
        assert_ne!(first.connect, second.connect);
        match c.invite_state() {
            Some(InviteState::Waiting { listen, .. }) => {
                assert_eq!(listen.to_string(), second.connect)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.default_invite_listen(), "127.0.0.1:7701");
    }

    /// Revoking an unknown partner changes nothing and says so.
    #[test]
    fn revoke_of_an_unknown_partner_is_refused() {
        let (_t, c) = control("Acme");
        let e = c.revoke("Nobody").unwrap_err();
        assert!(e.to_string().contains("Nobody"), "{e}");
    }
}
