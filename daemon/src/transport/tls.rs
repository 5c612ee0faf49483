//! TLS configuration with pinned certificates (rustls, ring provider).
//!
//! There is no CA: a certificate is accepted only when its SHA-256
//! fingerprint is that of a paired, non-revoked partner. The handshake
//! signature is still verified with the provider's TLS 1.3 verifier, so
//! the peer must hold the certificate's private key. Only TLS 1.3 is
//! enabled (QUIC requires it).
//!
//! Unknown and revoked certificates are listed as pending only once the
//! peer proved it holds the key: the certificate check lets them through
//! *provisionally*, and the handshake-signature check, which rustls calls
//! next with the same certificate, verifies the CertificateVerify signature
//! and then refuses them (listing them if the signature was valid). rustls
//! 0.23 calls `verify_client_cert` when the client's Certificate message
//! arrives and `verify_tls13_signature` on its CertificateVerify, which a
//! client that sent a certificate must send next (server/tls13.rs,
//! `ExpectCertificate` -> `ExpectCertificateVerify`); on the client side
//! both are called one after the other on the server's CertificateVerify
//! (client/tls13.rs). A handshake can therefore not finish with a
//! provisionally passed certificate, and `Transport::identify` checks the
//! finished connection's certificate against the paired set once more.
//!
//! The private key is kept in a [`Zeroizing`] buffer and handed to rustls
//! only as a borrowed DER slice: ring parses it into its own key object
//! (which ring does not wipe on drop; nothing can be done about that from
//! here), and no owned copy of the DER is left behind.

use std::net::SocketAddr;
use std::sync::Arc;

use orgsync_protocol::identity::Fingerprint;
use orgsync_protocol::model::OrgId;
use orgsync_protocol::wire::ALPN;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use zeroize::Zeroizing;

use super::trust::{PendingOutcome, Trust, Verdict};
use super::TransportError;

/// This instance's TLS identity.
#[derive(Clone)]
pub struct LocalIdentity {
    /// Certificate (DER).
    pub cert_der: Vec<u8>,
    /// Private key (PKCS#8 DER). Never logged; wiped when the last clone
    /// is dropped.
    pub key_der: Arc<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIdentity")
            .field(
                "fingerprint",
                &Fingerprint::of_certificate(&self.cert_der).short(),
            )
            .finish_non_exhaustive()
    }
}

impl LocalIdentity {
    /// The certificate with its signing key, for rustls. The key DER is
    /// only borrowed (no copy outlives this call); a key that does not
    /// match the certificate is refused.
    pub(crate) fn certified_key(
        &self,
        what: &'static str,
    ) -> Result<Arc<SingleCertAndKey>, TransportError> {
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.as_slice()));
        let signing =
            rustls::crypto::ring::sign::any_supported_type(&der).map_err(tls_err(what))?;
        let key = CertifiedKey::new(vec![CertificateDer::from(self.cert_der.clone())], signing);
        key.keys_match().map_err(tls_err(what))?;
        Ok(Arc::new(SingleCertAndKey::from(key)))
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verifies a peer certificate against the pinned set; `expected` narrows
/// it to one partner (when we dial), `remote` is logged on refusal.
#[derive(Debug)]
pub(crate) struct PinnedVerifier {
    trust: Trust,
    provider: Arc<CryptoProvider>,
    remote: Option<SocketAddr>,
    expected: Option<OrgId>,
}

impl PinnedVerifier {
    pub(crate) fn new(trust: Trust, remote: Option<SocketAddr>, expected: Option<OrgId>) -> Self {
        PinnedVerifier {
            trust,
            provider: provider(),
            remote,
            expected,
        }
    }

    fn remote(&self) -> String {
        self.remote
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown address".into())
    }

    /// The certificate check, called first: passes paired partners (the one
    /// dialed, when we dial) and, provisionally, unknown and revoked
    /// certificates, which [`PinnedVerifier::signature`] refuses right
    /// after (listing them only when the signature proves the key).
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let fp = Fingerprint::of_certificate(end_entity.as_ref());
        match self.trust.check(&fp) {
            Verdict::Paired(p) if self.expected.is_none_or(|e| e == p.org) => Ok(()),
            Verdict::Paired(p) => {
                tracing::warn!(remote = %self.remote(), fingerprint = %fp, partner = %p.name,
                    "refused handshake: certificate of another partner than the one dialed");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
            // Decided by the signature check: only a peer holding the key
            // may be listed, and it is refused there in any case.
            Verdict::Revoked(_) | Verdict::Unknown => Ok(()),
        }
    }

    /// The handshake-signature check, called after [`PinnedVerifier::check`]
    /// with the same certificate: verifies the TLS 1.3 signature, then
    /// accepts only a paired partner (the one dialed, when we dial).
    /// Unknown and revoked certificates are always refused, and listed as
    /// pending only when the signature was valid.
    fn signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let fp = Fingerprint::of_certificate(cert.as_ref());
        let signed = rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        );
        // Re-checked here rather than remembered from `check`: the partner
        // set may have changed in between, and this is the last word.
        let verdict = self.trust.check(&fp);
        let valid = match signed {
            Ok(valid) => valid,
            Err(e) => {
                let whose = match &verdict {
                    Verdict::Paired(p) | Verdict::Revoked(p) => p.name.as_str(),
                    Verdict::Unknown => "an unknown certificate",
                };
                tracing::warn!(remote = %self.remote(), fingerprint = %fp, certificate_of = whose, error = %e,
                    "refused handshake: the peer did not prove it holds the certificate's key (not listed as pending)");
                return Err(e);
            }
        };
        match verdict {
            Verdict::Paired(p) if self.expected.is_none_or(|e| e == p.org) => Ok(valid),
            Verdict::Paired(p) => {
                tracing::warn!(remote = %self.remote(), fingerprint = %fp, partner = %p.name,
                    "refused handshake: certificate of another partner than the one dialed");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
            Verdict::Revoked(p) => {
                let outcome = self.trust.record_pending(fp, self.remote, true);
                tracing::warn!(remote = %self.remote(), fingerprint = %fp, partner = %p.name, pending = ?outcome,
                    "refused handshake: certificate of a revoked partner");
                Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
            }
            Verdict::Unknown => {
                let outcome = self.trust.record_pending(fp, self.remote, false);
                match outcome {
                    PendingOutcome::SourceFull | PendingOutcome::ListFull => tracing::warn!(
                        remote = %self.remote(), fingerprint = %fp, pending = ?outcome,
                        "refused handshake: unknown certificate (not listed as pending: too many pending peers from this source or in all)"),
                    _ => {
                        tracing::warn!(remote = %self.remote(), fingerprint = %fp, pending = ?outcome,
                        "refused handshake: unknown certificate (listed as pending)")
                    }
                }
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    /// The signature schemes the crypto provider verifies, offered as
    /// server and as client verifier alike.
    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Only TLS 1.3 is enabled (QUIC requires it): a TLS 1.2 signature means a
/// confused peer, on either side of the handshake.
fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls13RequiredForQuic,
    ))
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for PinnedVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

fn tls_err(what: &'static str) -> impl FnOnce(rustls::Error) -> TransportError {
    move |source| TransportError::Tls { what, source }
}

/// rustls server configuration accepting only pinned partners.
pub(crate) fn server_config(
    identity: &LocalIdentity,
    verifier: Arc<PinnedVerifier>,
) -> Result<rustls::ServerConfig, TransportError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err("server protocol versions"))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity.certified_key("server certificate")?);
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// rustls client configuration accepting only pinned partners.
pub(crate) fn client_config(
    identity: &LocalIdentity,
    verifier: Arc<PinnedVerifier>,
) -> Result<rustls::ClientConfig, TransportError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err("client protocol versions"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(identity.certified_key("client certificate")?);
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}
