//! Pairing with a one-time code (`invite` / `join`).
//!
//! ## Protocol `orgsync-pair/1`
//!
//! One QUIC connection (ALPN `orgsync-pair/1`, TLS 1.3, rustls/ring), one
//! bidirectional stream opened by the joiner. The inviter is the QUIC
//! server and presents its instance certificate; the joiner presents its own
//! as a client certificate. Neither can be pinned yet, so both sides accept
//! any certificate whose holder proves possession of its key (the TLS 1.3
//! handshake signature is verified) and **bind the PAKE to both
//! certificates**: the SPAKE2 identities are the certificate fingerprints each
//! side observed, so a man in the middle (who must present its own
//! certificate on each leg) makes the two sides derive different keys and
//! key confirmation fails.
//!
//! Frames are a 4-byte big-endian length followed by at most
//! [`MAX_FRAME`] bytes: a one-byte tag and the fields of the message
//! (byte strings carry a 2-byte length). Decoding is bounded and never
//! panics; an unexpected or malformed message ends the attempt.
//!
//! ```text
//! joiner (SPAKE2 side A)                      inviter (SPAKE2 side B)
//! Hello{version, expected account, pA} ──────▶ refuses if expired/used/burned,
//!                                              or not the expected account
//!          ◀────────────────────────────────── PakeReply{pB, confirm_I}
//! checks confirm_I (constant time);
//! wrong → Reject, "pairing code rejected"
//! Confirm{confirm_J, seal_J(joiner bundle)} ──▶ checks confirm_J; wrong or
//!                                              missing → invitation burned
//!          ◀────────────────────────────────── Accept{seal_I(inviter bundle)}
//! checks account, fingerprint; stores partner
//! Done ──────────────────────────────────────▶ stores partner, closes
//! ```
//!
//! Keys: `K` is the SPAKE2 key (password = the normalised code,
//! identities = "orgsync-pair/1 joiner|inviter" ‖ certificate fingerprint).
//! The transcript hash `T` covers the protocol label, both fingerprints, the
//! expected account and both SPAKE2 messages. `confirm_X =
//! BLAKE3-keyed(derive_key("orgsync-pair/1 confirm X", K), T)`; bundles are
//! sealed with XChaCha20-Poly1305 under `derive_key("orgsync-pair/1 seal
//! X", K)` with `T` as associated data. Each bundle's certificate
//! fingerprint must equal the certificate its sender presented in TLS.
//!
//! One guess per invitation: once the inviter has answered a Hello with its
//! SPAKE2 message, anything but a valid `confirm_J` burns the invitation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use orgsync_protocol::identity::Fingerprint;
use orgsync_protocol::model::OrgId;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use spake2::{Ed25519Group, Identity as SpakeIdentity, Password, Spake2};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::bundle::Bundle;
use crate::error::KeytoolError;
use crate::instance::{Identity, InstanceDir};
use crate::partners::{self, ImportPlan, Partner};
use crate::timefmt;

/// ALPN of the pairing protocol.
pub const ALPN: &[u8] = b"orgsync-pair/1";
/// Version carried in Hello.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest frame body accepted.
pub const MAX_FRAME: usize = 16 * 1024;
/// How long each step may take before the attempt is abandoned.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the joiner waits to reach the inviter.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

const TAG_HELLO: u8 = 1;
const TAG_REFUSED: u8 = 2;
const TAG_PAKE_REPLY: u8 = 3;
const TAG_CONFIRM: u8 = 4;
const TAG_REJECT: u8 = 5;
const TAG_ACCEPT: u8 = 6;
const TAG_DONE: u8 = 7;
const TAG_FAIL: u8 = 8;

/// Why an inviter refused a Hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The invitation expired.
    Expired,
    /// The invitation was already used for a successful pairing.
    Used,
    /// The invitation was burned by a wrong code.
    Burned,
    /// The joiner asked for another account number.
    WrongAccount,
    /// Unsupported protocol version.
    Version,
}

impl RefusalReason {
    fn to_byte(self) -> u8 {
        match self {
            RefusalReason::Expired => 1,
            RefusalReason::Used => 2,
            RefusalReason::Burned => 3,
            RefusalReason::WrongAccount => 4,
            RefusalReason::Version => 5,
        }
    }
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => RefusalReason::Expired,
            2 => RefusalReason::Used,
            3 => RefusalReason::Burned,
            4 => RefusalReason::WrongAccount,
            5 => RefusalReason::Version,
            _ => return None,
        })
    }
}

/// A message of the pairing protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Joiner → inviter: start.
    Hello {
        /// Protocol version.
        version: u8,
        /// The account number the joiner expects to pair with.
        expected: OrgId,
        /// SPAKE2 message (side A).
        pake: Vec<u8>,
    },
    /// Inviter → joiner: not now, not ever.
    Refused {
        /// Why.
        reason: RefusalReason,
    },
    /// Inviter → joiner: SPAKE2 message (side B) and key confirmation.
    PakeReply {
        /// SPAKE2 message.
        pake: Vec<u8>,
        /// Inviter's confirmation MAC.
        confirm: [u8; 32],
    },
    /// Joiner → inviter: key confirmation and the sealed joiner bundle.
    Confirm {
        /// Joiner's confirmation MAC.
        confirm: [u8; 32],
        /// Sealed bundle (nonce ‖ ciphertext).
        sealed: Vec<u8>,
    },
    /// Joiner → inviter: the inviter's confirmation did not match.
    Reject,
    /// Inviter → joiner: the sealed inviter bundle.
    Accept {
        /// Sealed bundle (nonce ‖ ciphertext).
        sealed: Vec<u8>,
    },
    /// Joiner → inviter: the joiner stored the inviter as a partner.
    Done,
    /// Either way: the other side's bundle was refused.
    Fail {
        /// A human-readable reason (shown to the other operator).
        reason: String,
    },
}

/// A message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pairing message: {0}")]
pub struct DecodeError(pub &'static str);

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn arr32(&mut self) -> Result<[u8; 32], DecodeError> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(a)
    }
    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = u16::from_be_bytes([self.u8()?, self.u8()?]) as usize;
        Ok(self.take(len)?.to_vec())
    }
    fn end(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError("trailing bytes"))
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Every field we send is far below 64 KiB (MAX_FRAME is 16 KiB); clamp
    // rather than wrap if that ever changes.
    let len = b.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&b[..len]);
}

impl Message {
    /// Encodes the frame body (without the length prefix).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        match self {
            Message::Hello {
                version,
                expected,
                pake,
            } => {
                out.push(TAG_HELLO);
                out.push(*version);
                out.extend_from_slice(&expected.0);
                put_bytes(&mut out, pake);
            }
            Message::Refused { reason } => {
                out.push(TAG_REFUSED);
                out.push(reason.to_byte());
            }
            Message::PakeReply { pake, confirm } => {
                out.push(TAG_PAKE_REPLY);
                put_bytes(&mut out, pake);
                out.extend_from_slice(confirm);
            }
            Message::Confirm { confirm, sealed } => {
                out.push(TAG_CONFIRM);
                out.extend_from_slice(confirm);
                put_bytes(&mut out, sealed);
            }
            Message::Reject => out.push(TAG_REJECT),
            Message::Accept { sealed } => {
                out.push(TAG_ACCEPT);
                put_bytes(&mut out, sealed);
            }
            Message::Done => out.push(TAG_DONE),
            Message::Fail { reason } => {
                out.push(TAG_FAIL);
                let r = reason.as_bytes();
                // Cut on a char boundary to stay valid UTF-8.
                let mut n = r.len().min(1024);
                while !reason.is_char_boundary(n) {
                    n -= 1;
                }
                put_bytes(&mut out, &r[..n]);
            }
        }
        out
    }

    /// Decodes a frame body. Never panics.
    pub fn decode(body: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader { buf: body };
        let msg = match r.u8()? {
            TAG_HELLO => Message::Hello {
                version: r.u8()?,
                expected: OrgId(r.arr32()?),
                pake: r.bytes()?,
            },
            TAG_REFUSED => Message::Refused {
                reason: RefusalReason::from_byte(r.u8()?)
                    .ok_or(DecodeError("unknown refusal reason"))?,
            },
            TAG_PAKE_REPLY => Message::PakeReply {
                pake: r.bytes()?,
                confirm: r.arr32()?,
            },
            TAG_CONFIRM => Message::Confirm {
                confirm: r.arr32()?,
                sealed: r.bytes()?,
            },
            TAG_REJECT => Message::Reject,
            TAG_ACCEPT => Message::Accept { sealed: r.bytes()? },
            TAG_DONE => Message::Done,
            TAG_FAIL => Message::Fail {
                reason: String::from_utf8(r.bytes()?)
                    .map_err(|_| DecodeError("reason is not UTF-8"))?,
            },
            _ => return Err(DecodeError("unknown message type")),
        };
        r.end()?;
        Ok(msg)
    }

    fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "Hello",
            Message::Refused { .. } => "Refused",
            Message::PakeReply { .. } => "PakeReply",
            Message::Confirm { .. } => "Confirm",
            Message::Reject => "Reject",
            Message::Accept { .. } => "Accept",
            Message::Done => "Done",
            Message::Fail { .. } => "Fail",
        }
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why pairing failed. Each variant is a distinct, operator-facing outcome.
#[derive(Debug, thiserror::Error)]
pub enum PairingError {
    /// Joiner: the inviter could not be reached.
    #[error(
        "could not reach {addr}: {detail}. Is `orgsync-keytool invite` running there, \
         and is its UDP port reachable from here?"
    )]
    Connect {
        /// The address.
        addr: String,
        /// What went wrong.
        detail: String,
    },
    /// A step took too long.
    #[error("pairing with {peer} timed out waiting for {step}")]
    Timeout {
        /// The other side.
        peer: String,
        /// What we were waiting for.
        step: &'static str,
    },
    /// The connection broke or the peer spoke nonsense.
    #[error("pairing with {peer} failed: {detail}")]
    Protocol {
        /// The other side.
        peer: String,
        /// What went wrong.
        detail: String,
    },
    /// Joiner: the code was wrong (or the connection is intercepted).
    #[error(
        "pairing code rejected: the code does not match the invitation (or someone is \
         intercepting the connection). The invitation is now burned; ask your partner to run \
         `orgsync-keytool invite` again and read you the new code"
    )]
    CodeRejected,
    /// Inviter: a joiner used a wrong code; the invitation is burned.
    #[error("wrong pairing code from {peer}; the invitation is burned — run invite again")]
    WrongCode {
        /// The joiner's address.
        peer: String,
    },
    /// Joiner: the invitation expired.
    #[error(
        "the invitation at {addr} has expired; ask your partner to run \
         `orgsync-keytool invite` again for a new code"
    )]
    Expired {
        /// The inviter's address.
        addr: String,
    },
    /// Inviter: nobody joined in time.
    #[error("the invitation expired without a successful join; run invite again")]
    InviteExpired,
    /// Joiner: the code was already used.
    #[error(
        "this pairing code was already used for a successful pairing at {addr}; \
         codes are single-use, ask your partner for a new one"
    )]
    AlreadyUsed {
        /// The inviter's address.
        addr: String,
    },
    /// Joiner: the invitation was burned by an earlier wrong code.
    #[error(
        "the invitation at {addr} was burned by an earlier wrong code; ask your partner \
         to run `orgsync-keytool invite` again"
    )]
    Burned {
        /// The inviter's address.
        addr: String,
    },
    /// Joiner: the instance reached is not the expected account.
    #[error(
        "account number mismatch: the instance at {addr} is not account {expected}{found}. \
         Check the account number and the address with your partner; nothing was stored"
    )]
    AccountMismatch {
        /// The inviter's address.
        addr: String,
        /// What `--account` said.
        expected: String,
        /// ` (it is account ...)` when known.
        found: String,
    },
    /// A bundle's certificate is not the one presented in TLS.
    #[error(
        "{peer} sent a bundle for certificate {bundle} but presented certificate {tls}; \
         refusing (possible interception)"
    )]
    CertificateMismatch {
        /// The other side.
        peer: String,
        /// Fingerprint in the bundle.
        bundle: String,
        /// Fingerprint seen in TLS.
        tls: String,
    },
    /// The other side refused our bundle.
    #[error("{peer} refused to pair: {reason}")]
    PeerRefused {
        /// The other side.
        peer: String,
        /// Its reason.
        reason: String,
    },
    /// Unsupported protocol version.
    #[error("{peer} speaks another version of the pairing protocol; update orgsync-keytool on both sides")]
    Version {
        /// The other side.
        peer: String,
    },
    /// Local state (partners.toml, identity) could not be used.
    #[error(transparent)]
    Local(#[from] KeytoolError),
    /// TLS/QUIC setup failed locally.
    #[error("setting up the pairing connection: {0}")]
    Setup(String),
    /// Joiner: `--account` is our own account number.
    #[error("--account {account} is this instance's own account number; pass the partner's (from `orgsync-keytool show` on its side)")]
    SelfPairing {
        /// Our account number.
        account: String,
    },
    /// The invitation was cancelled (Ctrl-C).
    #[error("cancelled; the pairing code is no longer valid")]
    Cancelled,
}

// ---------------------------------------------------------------------------
// TLS: accept any certificate whose holder proves possession
// ---------------------------------------------------------------------------

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Debug)]
struct AnyCertProvesKey {
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl AnyCertProvesKey {
    fn new() -> Self {
        AnyCertProvesKey {
            algs: provider().signature_verification_algorithms,
        }
    }
}

impl rustls::client::danger::ServerCertVerifier for AnyCertProvesKey {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        // Not pinned yet: the PAKE binds the certificate (see module docs).
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl rustls::server::danger::ClientCertVerifier for AnyCertProvesKey {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // Invariant: 60 s is within the QUIC idle-timeout range.
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(60)) {
        t.max_idle_timeout(Some(idle));
    }
    t.max_concurrent_bidi_streams(1u8.into());
    t.max_concurrent_uni_streams(0u8.into());
    Arc::new(t)
}

/// Our certificate and signing key for rustls, parsed from the borrowed
/// key buffer: `with_single_cert` would take an owned copy of the key and
/// drop it unwiped. (ring's parsed key is not wiped either; nothing to do
/// about that from here.)
fn certified_key(identity: &Identity) -> Result<Arc<rustls::sign::SingleCertAndKey>, PairingError> {
    let setup = |e: &dyn std::fmt::Display| PairingError::Setup(e.to_string());
    let signing = rustls::crypto::ring::sign::any_supported_type(&identity.tls_private_key_ref())
        .map_err(|e| setup(&e))?;
    let key = rustls::sign::CertifiedKey::new(vec![identity.tls_certificate()], signing);
    key.keys_match().map_err(|e| setup(&e))?;
    Ok(Arc::new(rustls::sign::SingleCertAndKey::from(key)))
}

fn server_config(identity: &Identity) -> Result<quinn::ServerConfig, PairingError> {
    let setup = |e: &dyn std::fmt::Display| PairingError::Setup(e.to_string());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| setup(&e))?
        .with_client_cert_verifier(Arc::new(AnyCertProvesKey::new()))
        .with_cert_resolver(certified_key(identity)?);
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| setup(&e))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport());
    Ok(cfg)
}

fn client_config(identity: &Identity) -> Result<quinn::ClientConfig, PairingError> {
    let setup = |e: &dyn std::fmt::Display| PairingError::Setup(e.to_string());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| setup(&e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertProvesKey::new()))
        .with_client_cert_resolver(certified_key(identity)?);
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| setup(&e))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport());
    Ok(cfg)
}

fn peer_fingerprint(conn: &quinn::Connection) -> Option<Fingerprint> {
    let any = conn.peer_identity()?;
    let certs = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().map(|c| Fingerprint::of_certificate(c))
}

// ---------------------------------------------------------------------------
// Framing over a QUIC stream
// ---------------------------------------------------------------------------

/// Closing rule: the side that *receives* a terminal message (Refused,
/// Reject, Done, Fail) closes the connection; the sender of one waits
/// (bounded) for that close, so the message is never lost to an early close.
struct Channel {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    peer: String,
    sent_terminal: bool,
}

impl Channel {
    async fn send(&mut self, msg: &Message) -> Result<(), PairingError> {
        if matches!(
            msg,
            Message::Refused { .. } | Message::Reject | Message::Done | Message::Fail { .. }
        ) {
            self.sent_terminal = true;
        }
        let body = msg.encode();
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        self.send
            .write_all(&frame)
            .await
            .map_err(|e| PairingError::Protocol {
                peer: self.peer.clone(),
                detail: format!("sending {}: {e}", msg.name()),
            })
    }

    async fn recv(&mut self, step: &'static str) -> Result<Message, PairingError> {
        let peer = self.peer.clone();
        let read = async {
            let mut len = [0u8; 4];
            self.recv
                .read_exact(&mut len)
                .await
                .map_err(|e| e.to_string())?;
            let len = u32::from_be_bytes(len) as usize;
            if len == 0 || len > MAX_FRAME {
                return Err(format!("frame of {len} bytes (limit {MAX_FRAME})"));
            }
            let mut body = vec![0u8; len];
            self.recv
                .read_exact(&mut body)
                .await
                .map_err(|e| e.to_string())?;
            Message::decode(&body).map_err(|e| e.to_string())
        };
        match tokio::time::timeout(STEP_TIMEOUT, read).await {
            Err(_) => Err(PairingError::Timeout { peer, step }),
            Ok(Err(detail)) => Err(PairingError::Protocol {
                peer,
                detail: format!("waiting for {step}: {detail}"),
            }),
            Ok(Ok(m)) => Ok(m),
        }
    }

    fn unexpected(&self, got: &Message, step: &'static str) -> PairingError {
        PairingError::Protocol {
            peer: self.peer.clone(),
            detail: format!("expected {step}, got {}", got.name()),
        }
    }
}

// ---------------------------------------------------------------------------
// Key schedule
// ---------------------------------------------------------------------------

fn spake_ids(joiner: &Fingerprint, inviter: &Fingerprint) -> (SpakeIdentity, SpakeIdentity) {
    let mut a = b"orgsync-pair/1 joiner ".to_vec();
    a.extend_from_slice(&joiner.0);
    let mut b = b"orgsync-pair/1 inviter ".to_vec();
    b.extend_from_slice(&inviter.0);
    (SpakeIdentity::new(&a), SpakeIdentity::new(&b))
}

fn transcript(
    joiner: &Fingerprint,
    inviter: &Fingerprint,
    expected: &OrgId,
    pake_a: &[u8],
    pake_b: &[u8],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("orgsync-pair/1 transcript");
    for part in [
        &joiner.0[..],
        &inviter.0[..],
        &expected.0[..],
        pake_a,
        pake_b,
    ] {
        h.update(&(part.len() as u64).to_be_bytes());
        h.update(part);
    }
    *h.finalize().as_bytes()
}

struct SessionKeys {
    confirm_joiner: Zeroizing<[u8; 32]>,
    confirm_inviter: Zeroizing<[u8; 32]>,
    seal_joiner: Zeroizing<[u8; 32]>,
    seal_inviter: Zeroizing<[u8; 32]>,
    transcript: [u8; 32],
}

impl SessionKeys {
    fn derive(k: &[u8], transcript: [u8; 32]) -> SessionKeys {
        let d = |ctx: &str| Zeroizing::new(blake3::derive_key(ctx, k));
        SessionKeys {
            confirm_joiner: d("orgsync-pair/1 confirm joiner"),
            confirm_inviter: d("orgsync-pair/1 confirm inviter"),
            seal_joiner: d("orgsync-pair/1 seal joiner"),
            seal_inviter: d("orgsync-pair/1 seal inviter"),
            transcript,
        }
    }
    fn mac(&self, key: &[u8; 32]) -> [u8; 32] {
        *blake3::keyed_hash(key, &self.transcript).as_bytes()
    }
    fn joiner_mac(&self) -> [u8; 32] {
        self.mac(&self.confirm_joiner)
    }
    fn inviter_mac(&self) -> [u8; 32] {
        self.mac(&self.confirm_inviter)
    }
    fn seal(&self, key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let cipher = XChaCha20Poly1305::new(key.into());
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &self.transcript,
                },
            )
            // Encryption only fails for inputs beyond 256 GiB.
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }
    fn open(&self, key: &[u8; 32], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < 24 + 16 {
            return None;
        }
        let (nonce, ct) = sealed.split_at(24);
        let cipher = XChaCha20Poly1305::new(key.into());
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: &self.transcript,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

fn ct_eq32(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

fn open_bundle(
    keys: &SessionKeys,
    key: &[u8; 32],
    sealed: &[u8],
    peer: &str,
) -> Result<Bundle, PairingError> {
    let plain = keys
        .open(key, sealed)
        .ok_or_else(|| PairingError::Protocol {
            peer: peer.to_string(),
            detail: "the sealed bundle does not open under the pairing key".into(),
        })?;
    let text = std::str::from_utf8(&plain).map_err(|_| PairingError::Protocol {
        peer: peer.to_string(),
        detail: "the bundle is not text".into(),
    })?;
    Bundle::parse(text).map_err(|e| PairingError::Protocol {
        peer: peer.to_string(),
        detail: format!("its bundle: {e}"),
    })
}

/// Checks that `bundle` may be stored as a partner (without storing it):
/// the rules of [`partners::plan_pairing`].
fn check_partner(dir: &InstanceDir, me: &Identity, bundle: &Bundle) -> Result<(), KeytoolError> {
    let partners = dir.load_partners()?;
    partners::plan_pairing(&partners, &me.org_id, bundle).map(|_| ())
}

/// Stores `bundle` as a partner after pairing (code pairing, or the
/// daemon's "accept pending peer"). Returns the entry and whether it was
/// already known.
///
/// Follows [`partners::plan_pairing`]: the account number must belong to
/// the bundle's key (directly, or through its rotation proof), and a known
/// partner's key or certificate is never replaced (that takes `import` of a
/// bundle with a rotation proof); on refusal partners.toml is not written.
pub fn store_partner(
    dir: &InstanceDir,
    me: &Identity,
    bundle: &Bundle,
) -> Result<(Partner, bool), KeytoolError> {
    let mut partners = dir.load_partners()?;
    let plan = partners::plan_pairing(&partners, &me.org_id, bundle)?;
    let known = plan != ImportPlan::New;
    let i = partners::apply_import(&mut partners, &plan, bundle, &timefmt::now_rfc3339());
    if !matches!(plan, ImportPlan::Unchanged { .. }) {
        dir.save_partners(&partners)?;
    }
    Ok((partners[i].clone(), known))
}

/// The outcome of a successful pairing.
#[derive(Debug, Clone)]
pub struct Paired {
    /// The partner as stored.
    pub partner: Partner,
    /// Whether the partner was already known (its entry was updated).
    pub was_known: bool,
    /// The other side's address.
    pub peer_addr: SocketAddr,
}

// ---------------------------------------------------------------------------
// Inviter
// ---------------------------------------------------------------------------

/// What `invite` needs.
pub struct InviteParams<'a> {
    /// The instance directory (partners.toml is updated on success).
    pub dir: &'a InstanceDir,
    /// Our identity.
    pub identity: &'a Identity,
    /// The normalised pairing code (see [`crate::words`]).
    pub code: String,
    /// Addresses put into our bundle.
    pub addresses: Vec<String>,
    /// When the invitation expires.
    pub expires_at: Instant,
    /// After the invitation ended, keep answering late joins with the reason
    /// for this long.
    pub linger: Duration,
}

/// A bound invitation endpoint.
pub struct InviteListener {
    endpoint: quinn::Endpoint,
}

enum InviteState {
    Open,
    Ended(RefusalReason),
}

enum Attempt {
    /// Paired.
    Paired(Paired),
    /// Nothing was guessed (bad hello, wrong account): keep waiting.
    NoGuess(PairingError),
    /// The invitation is spent (burned or failed after confirmation).
    Spent(PairingError),
}

impl InviteListener {
    /// Binds the pairing endpoint (UDP) with our instance certificate.
    pub fn bind(identity: &Identity, listen: SocketAddr) -> Result<InviteListener, PairingError> {
        let cfg = server_config(identity)?;
        let endpoint = quinn::Endpoint::server(cfg, listen).map_err(|e| {
            PairingError::Local(KeytoolError::Io {
                path: format!("udp socket {listen}").into(),
                source: e,
            })
        })?;
        Ok(InviteListener { endpoint })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, PairingError> {
        self.endpoint
            .local_addr()
            .map_err(|e| PairingError::Setup(e.to_string()))
    }

    /// Waits for one successful join, handling attempts one at a time.
    /// `log` receives progress lines for the operator (never secrets).
    pub async fn run(
        self,
        params: InviteParams<'_>,
        log: &mut (dyn FnMut(String) + Send),
    ) -> Result<Paired, PairingError> {
        let mut state = InviteState::Open;
        let mut outcome: Option<Result<Paired, PairingError>> = None;
        let mut linger_until: Option<tokio::time::Instant> = None;
        let expires_at = tokio::time::Instant::from_std(params.expires_at);
        loop {
            let deadline = match (&state, linger_until) {
                (InviteState::Open, _) => expires_at,
                (InviteState::Ended(_), Some(t)) => t,
                (InviteState::Ended(_), None) => break,
            };
            let incoming = tokio::select! {
                inc = self.endpoint.accept() => inc,
                _ = tokio::time::sleep_until(deadline) => {
                    if let InviteState::Open = state {
                        log("the invitation expired".to_string());
                        state = InviteState::Ended(RefusalReason::Expired);
                        outcome = Some(Err(PairingError::InviteExpired));
                        linger_until = self.linger_deadline(&params, log);
                        continue;
                    }
                    break;
                }
                _ = tokio::signal::ctrl_c() => {
                    outcome = Some(Err(PairingError::Cancelled));
                    break;
                }
            };
            let Some(incoming) = incoming else { break };
            let conn = match tokio::time::timeout(STEP_TIMEOUT, incoming).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    log(format!(
                        "a connection attempt failed during the handshake: {e}"
                    ));
                    continue;
                }
                Err(_) => {
                    log("a connection attempt timed out during the handshake".to_string());
                    continue;
                }
            };
            let peer = conn.remote_address();
            match state {
                InviteState::Ended(reason) => {
                    refuse_late(&conn, reason).await;
                    log(format!("refused a late join from {peer} ({reason:?})"));
                }
                InviteState::Open => {
                    if tokio::time::Instant::now() >= expires_at {
                        // Expired while the handshake was running.
                        refuse_late(&conn, RefusalReason::Expired).await;
                        continue;
                    }
                    match invite_attempt(&conn, &params, log).await {
                        Attempt::Paired(p) => {
                            conn.close(0u8.into(), b"paired");
                            log(format!(
                                "paired with {} (account {}) from {}",
                                p.partner.name, p.partner.org_id, p.peer_addr
                            ));
                            state = InviteState::Ended(RefusalReason::Used);
                            outcome = Some(Ok(p));
                            linger_until = self.linger_deadline(&params, log);
                        }
                        Attempt::NoGuess(e) => {
                            conn.close(1u8.into(), b"refused");
                            log(format!("{e}; still waiting"));
                        }
                        Attempt::Spent(e) => {
                            conn.close(1u8.into(), b"failed");
                            let reason = if matches!(e, PairingError::WrongCode { .. }) {
                                RefusalReason::Burned
                            } else {
                                RefusalReason::Used
                            };
                            state = InviteState::Ended(reason);
                            log(e.to_string());
                            outcome = Some(Err(e));
                            linger_until = self.linger_deadline(&params, log);
                        }
                    }
                }
            }
        }
        // Let close frames go out before the process exits.
        self.endpoint.close(0u8.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        outcome.unwrap_or(Err(PairingError::Cancelled))
    }

    fn linger_deadline(
        &self,
        params: &InviteParams<'_>,
        log: &mut (dyn FnMut(String) + Send),
    ) -> Option<tokio::time::Instant> {
        if params.linger.is_zero() {
            None
        } else {
            log(format!(
                "answering late joins with the reason for {}s",
                params.linger.as_secs()
            ));
            Some(tokio::time::Instant::now() + params.linger)
        }
    }
}

async fn refuse_late(conn: &quinn::Connection, reason: RefusalReason) {
    let peer = conn.remote_address().to_string();
    let step = async {
        let (send, recv) = conn.accept_bi().await.ok()?;
        let mut ch = Channel {
            send,
            recv,
            peer,
            sent_terminal: false,
        };
        ch.recv("Hello").await.ok()?;
        ch.send(&Message::Refused { reason }).await.ok()?;
        let _ = ch.send.finish();
        // Wait for the joiner to read it and close.
        conn.closed().await;
        Some(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), step).await;
}

async fn invite_attempt(
    conn: &quinn::Connection,
    params: &InviteParams<'_>,
    log: &mut (dyn FnMut(String) + Send),
) -> Attempt {
    let peer_addr = conn.remote_address();
    let peer = peer_addr.to_string();
    let me = params.identity;
    let Some(joiner_fp) = peer_fingerprint(conn) else {
        return Attempt::NoGuess(PairingError::Protocol {
            peer,
            detail: "no client certificate".into(),
        });
    };
    let (send, recv) = match tokio::time::timeout(STEP_TIMEOUT, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Attempt::NoGuess(PairingError::Protocol {
                peer,
                detail: e.to_string(),
            })
        }
        Err(_) => {
            return Attempt::NoGuess(PairingError::Timeout {
                peer,
                step: "a stream",
            })
        }
    };
    let mut ch = Channel {
        send,
        recv,
        peer: peer.clone(),
        sent_terminal: false,
    };
    let hello = match ch.recv("Hello").await {
        Ok(m) => m,
        Err(e) => return Attempt::NoGuess(e),
    };
    let Message::Hello {
        version,
        expected,
        pake: pake_a,
    } = hello
    else {
        return Attempt::NoGuess(ch.unexpected(&hello, "Hello"));
    };
    if version != PROTOCOL_VERSION {
        let _ = ch
            .send(&Message::Refused {
                reason: RefusalReason::Version,
            })
            .await;
        finish_and_wait(conn, &mut ch).await;
        return Attempt::NoGuess(PairingError::Version { peer });
    }
    if expected != me.org_id {
        let _ = ch
            .send(&Message::Refused {
                reason: RefusalReason::WrongAccount,
            })
            .await;
        finish_and_wait(conn, &mut ch).await;
        return Attempt::NoGuess(PairingError::Protocol {
            peer,
            detail: format!(
                "the joiner asked for account {expected}, which is not ours (refused; the code is still valid)"
            ),
        });
    }
    log(format!("join attempt from {peer}"));

    // From here on the joiner gets one guess: anything but success spends
    // the invitation.
    let (id_a, id_b) = spake_ids(&joiner_fp, &me.fingerprint);
    let password = Password::new(params.code.as_bytes());
    let (spake, pake_b) = Spake2::<Ed25519Group>::start_b(&password, &id_a, &id_b);
    let Ok(k) = spake.finish(&pake_a) else {
        // A malformed SPAKE2 message: no key, but treat it as a guess.
        return Attempt::Spent(PairingError::WrongCode { peer });
    };
    let k = Zeroizing::new(k);
    let keys = SessionKeys::derive(
        &k,
        transcript(&joiner_fp, &me.fingerprint, &expected, &pake_a, &pake_b),
    );
    if let Err(e) = ch
        .send(&Message::PakeReply {
            pake: pake_b,
            confirm: keys.inviter_mac(),
        })
        .await
    {
        return Attempt::Spent(e);
    }
    let (confirm, sealed) = match ch.recv("key confirmation").await {
        Ok(Message::Confirm { confirm, sealed }) => (confirm, sealed),
        // Reject, an early close or garbage: the joiner holds a wrong key.
        Ok(Message::Reject) | Ok(_) | Err(_) => {
            return Attempt::Spent(PairingError::WrongCode { peer });
        }
    };
    if !ct_eq32(&confirm, &keys.joiner_mac()) {
        return Attempt::Spent(PairingError::WrongCode { peer });
    }
    let theirs = match open_bundle(&keys, &keys.seal_joiner, &sealed, &peer) {
        Ok(b) => b,
        Err(e) => return Attempt::Spent(e),
    };
    if theirs.cert_fingerprint != joiner_fp {
        let e = PairingError::CertificateMismatch {
            peer: peer.clone(),
            bundle: theirs.cert_fingerprint.to_string(),
            tls: joiner_fp.to_string(),
        };
        let _ = ch
            .send(&Message::Fail {
                reason: e.to_string(),
            })
            .await;
        finish_and_wait(conn, &mut ch).await;
        return Attempt::Spent(e);
    }
    if let Err(e) = check_partner(params.dir, me, &theirs) {
        let _ = ch
            .send(&Message::Fail {
                reason: e.to_string(),
            })
            .await;
        finish_and_wait(conn, &mut ch).await;
        return Attempt::Spent(e.into());
    }
    let ours = me.bundle(params.addresses.clone()).to_line();
    if let Err(e) = ch
        .send(&Message::Accept {
            sealed: keys.seal(&keys.seal_inviter, ours.as_bytes()),
        })
        .await
    {
        return Attempt::Spent(e);
    }
    match ch.recv("the joiner's result").await {
        Ok(Message::Done) => {}
        Ok(Message::Fail { reason }) => {
            return Attempt::Spent(PairingError::PeerRefused { peer, reason })
        }
        Ok(other) => return Attempt::Spent(ch.unexpected(&other, "Done")),
        Err(e) => return Attempt::Spent(e),
    }
    match store_partner(params.dir, me, &theirs) {
        Ok((partner, was_known)) => Attempt::Paired(Paired {
            partner,
            was_known,
            peer_addr,
        }),
        Err(e) => Attempt::Spent(e.into()),
    }
}

async fn finish_and_wait(conn: &quinn::Connection, ch: &mut Channel) {
    let _ = ch.send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
}

// ---------------------------------------------------------------------------
// Joiner
// ---------------------------------------------------------------------------

/// What `join` needs.
pub struct JoinParams<'a> {
    /// The instance directory (partners.toml is updated on success).
    pub dir: &'a InstanceDir,
    /// Our identity.
    pub identity: &'a Identity,
    /// The inviter's pairing address (HOST:PORT).
    pub connect: String,
    /// The account number we expect the inviter to have.
    pub expected: OrgId,
    /// The normalised pairing code.
    pub code: String,
    /// Addresses put into our bundle.
    pub addresses: Vec<String>,
}

/// Joins an invitation: pairs with the inviter or fails with a distinct
/// [`PairingError`]. Nothing is stored unless pairing succeeds.
pub async fn join(params: JoinParams<'_>) -> Result<Paired, PairingError> {
    let me = params.identity;
    if params.expected == me.org_id {
        return Err(PairingError::SelfPairing {
            account: me.org_id.account_number(),
        });
    }
    let addr_text = params.connect.clone();
    let connect_err = |detail: String| PairingError::Connect {
        addr: addr_text.clone(),
        detail,
    };
    let target = tokio::net::lookup_host(&params.connect)
        .await
        .map_err(|e| connect_err(e.to_string()))?
        .next()
        .ok_or_else(|| connect_err("the name has no address".into()))?;
    let bind: SocketAddr = if target.is_ipv6() {
        "[::]:0".parse().map_err(|_| connect_err("bind".into()))?
    } else {
        "0.0.0.0:0"
            .parse()
            .map_err(|_| connect_err("bind".into()))?
    };
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| connect_err(e.to_string()))?;
    endpoint.set_default_client_config(client_config(me)?);
    let result = join_on(&endpoint, target, &params).await;
    endpoint.close(0u8.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    result
}

async fn join_on(
    endpoint: &quinn::Endpoint,
    target: SocketAddr,
    params: &JoinParams<'_>,
) -> Result<Paired, PairingError> {
    let addr = params.connect.clone();
    let connecting = endpoint
        .connect(target, crate::instance::CERT_SAN)
        .map_err(|e| PairingError::Connect {
            addr: addr.clone(),
            detail: e.to_string(),
        })?;
    let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Err(PairingError::Connect {
                addr,
                detail: e.to_string(),
            })
        }
        Err(_) => {
            return Err(PairingError::Connect {
                addr,
                detail: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
            })
        }
    };
    let inviter_fp = peer_fingerprint(&conn).ok_or_else(|| PairingError::Protocol {
        peer: addr.clone(),
        detail: "no server certificate".into(),
    })?;
    let (send, recv) = conn.open_bi().await.map_err(|e| PairingError::Protocol {
        peer: addr.clone(),
        detail: e.to_string(),
    })?;
    let mut ch = Channel {
        send,
        recv,
        peer: addr.clone(),
        sent_terminal: false,
    };
    let result = join_steps(&conn, &mut ch, inviter_fp, params).await;
    let _ = ch.send.finish();
    if ch.sent_terminal {
        // The inviter closes once it has read our last message (bounded).
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    } else {
        conn.close(0u8.into(), b"bye");
    }
    result
}

async fn join_steps(
    conn: &quinn::Connection,
    ch: &mut Channel,
    inviter_fp: Fingerprint,
    params: &JoinParams<'_>,
) -> Result<Paired, PairingError> {
    let me = params.identity;
    let addr = params.connect.clone();
    let (id_a, id_b) = spake_ids(&me.fingerprint, &inviter_fp);
    let password = Password::new(params.code.as_bytes());
    let (spake, pake_a) = Spake2::<Ed25519Group>::start_a(&password, &id_a, &id_b);
    ch.send(&Message::Hello {
        version: PROTOCOL_VERSION,
        expected: params.expected,
        pake: pake_a.clone(),
    })
    .await?;
    let (pake_b, confirm_i) = match ch.recv("the inviter's answer").await? {
        Message::PakeReply { pake, confirm } => (pake, confirm),
        Message::Refused { reason } => {
            return Err(match reason {
                RefusalReason::Expired => PairingError::Expired { addr },
                RefusalReason::Used => PairingError::AlreadyUsed { addr },
                RefusalReason::Burned => PairingError::Burned { addr },
                RefusalReason::WrongAccount => PairingError::AccountMismatch {
                    addr,
                    expected: params.expected.account_number(),
                    found: String::new(),
                },
                RefusalReason::Version => PairingError::Version { peer: addr },
            })
        }
        other => return Err(ch.unexpected(&other, "PakeReply")),
    };
    let k = spake.finish(&pake_b).map_err(|_| PairingError::Protocol {
        peer: addr.clone(),
        detail: "malformed SPAKE2 message".into(),
    })?;
    let k = Zeroizing::new(k);
    let keys = SessionKeys::derive(
        &k,
        transcript(
            &me.fingerprint,
            &inviter_fp,
            &params.expected,
            &pake_a,
            &pake_b,
        ),
    );
    if !ct_eq32(&confirm_i, &keys.inviter_mac()) {
        let _ = ch.send(&Message::Reject).await;
        return Err(PairingError::CodeRejected);
    }
    let ours = me.bundle(params.addresses.clone()).to_line();
    ch.send(&Message::Confirm {
        confirm: keys.joiner_mac(),
        sealed: keys.seal(&keys.seal_joiner, ours.as_bytes()),
    })
    .await?;
    let sealed = match ch.recv("the inviter's bundle").await? {
        Message::Accept { sealed } => sealed,
        Message::Fail { reason } => return Err(PairingError::PeerRefused { peer: addr, reason }),
        other => return Err(ch.unexpected(&other, "Accept")),
    };
    let theirs = open_bundle(&keys, &keys.seal_inviter, &sealed, &addr)?;
    if theirs.org_id != params.expected {
        let e = PairingError::AccountMismatch {
            addr: addr.clone(),
            expected: params.expected.account_number(),
            found: format!(" (it is account {})", theirs.org_id),
        };
        let _ = ch
            .send(&Message::Fail {
                reason: "account number mismatch".into(),
            })
            .await;
        return Err(e);
    }
    if theirs.cert_fingerprint != inviter_fp {
        let e = PairingError::CertificateMismatch {
            peer: addr.clone(),
            bundle: theirs.cert_fingerprint.to_string(),
            tls: inviter_fp.to_string(),
        };
        let _ = ch
            .send(&Message::Fail {
                reason: e.to_string(),
            })
            .await;
        return Err(e);
    }
    let (partner, was_known) = match store_partner(params.dir, me, &theirs) {
        Ok(x) => x,
        Err(e) => {
            let _ = ch
                .send(&Message::Fail {
                    reason: e.to_string(),
                })
                .await;
            return Err(e.into());
        }
    };
    ch.send(&Message::Done).await?;
    Ok(Paired {
        partner,
        was_known,
        peer_addr: conn.remote_address(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let msgs = vec![
            Message::Hello {
                version: 1,
                expected: OrgId([3; 32]),
                pake: vec![1; 33],
            },
            Message::Refused {
                reason: RefusalReason::Burned,
            },
            Message::PakeReply {
                pake: vec![2; 33],
                confirm: [9; 32],
            },
            Message::Confirm {
                confirm: [8; 32],
                sealed: vec![7; 300],
            },
            Message::Reject,
            Message::Accept {
                sealed: vec![6; 200],
            },
            Message::Done,
            Message::Fail {
                reason: "nope é".into(),
            },
        ];
        for m in msgs {
            let enc = m.encode();
            assert_eq!(Message::decode(&enc).unwrap(), m);
            // Every strict prefix is refused, never a panic.
            for cut in 0..enc.len() {
                assert!(Message::decode(&enc[..cut]).is_err(), "{m:?} cut at {cut}");
            }
            let mut longer = enc.clone();
            longer.push(0);
            assert_eq!(Message::decode(&longer), Err(DecodeError("trailing bytes")));
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..400usize {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = Message::decode(&buf);
        }
        assert_eq!(
            Message::decode(&[200]),
            Err(DecodeError("unknown message type"))
        );
    }

    #[test]
    fn spake_binding_detects_a_different_certificate() {
        // Same code, but the joiner saw another inviter certificate (a MITM):
        // keys differ, so the inviter's confirmation does not verify.
        let code = Password::new(b"7-lantern-wagon");
        let fp_j = Fingerprint([1; 32]);
        let fp_i = Fingerprint([2; 32]);
        let fp_m = Fingerprint([3; 32]);
        let (ja, jb) = spake_ids(&fp_j, &fp_m);
        let (ia, ib) = spake_ids(&fp_j, &fp_i);
        let (sj, ma) = Spake2::<Ed25519Group>::start_a(&code, &ja, &jb);
        let (si, mb) = Spake2::<Ed25519Group>::start_b(&code, &ia, &ib);
        let kj = sj.finish(&mb).unwrap();
        let ki = si.finish(&ma).unwrap();
        assert_ne!(kj, ki);

        // Without the MITM, both sides agree and the MACs verify.
        let (sj, ma) = Spake2::<Ed25519Group>::start_a(&code, &ia, &ib);
        let (si, mb) = Spake2::<Ed25519Group>::start_b(&code, &ia, &ib);
        let t = transcript(&fp_j, &fp_i, &OrgId([0; 32]), &ma, &mb);
        let kj = SessionKeys::derive(&sj.finish(&mb).unwrap(), t);
        let ki = SessionKeys::derive(&si.finish(&ma).unwrap(), t);
        assert!(ct_eq32(&kj.inviter_mac(), &ki.inviter_mac()));
        assert!(!ct_eq32(&kj.inviter_mac(), &ki.joiner_mac()));
        let sealed = kj.seal(&kj.seal_joiner, b"bundle");
        assert_eq!(
            ki.open(&ki.seal_joiner, &sealed).unwrap().as_slice(),
            b"bundle"
        );
        assert!(ki.open(&ki.seal_inviter, &sealed).is_none());
    }
}
