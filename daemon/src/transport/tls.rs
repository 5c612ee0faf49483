//! TLS configuration with pinned certificates (rustls, ring provider).
//!
//! There is no CA: a certificate is accepted only when its SHA-256
//! fingerprint is that of a paired, non-revoked partner. The handshake
//! signature is still verified with the provider's TLS 1.3 verifier, so
//! the peer must hold the certificate's private key. Only TLS 1.3 is
//! enabled (QUIC requires it).

use std::net::SocketAddr;
use std::sync::Arc;

use orgsync_protocol::identity::Fingerprint;
use orgsync_protocol::model::OrgId;
use orgsync_protocol::wire::ALPN;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::trust::{Trust, Verdict};
use super::TransportError;

/// This instance's TLS identity.
#[derive(Clone)]
pub struct LocalIdentity {
    /// Certificate (DER).
    pub cert_der: Vec<u8>,
    /// Private key (PKCS#8 DER). Never logged.
    pub key_der: Arc<Vec<u8>>,
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
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.as_ref().clone()))
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

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let fp = Fingerprint::of_certificate(end_entity.as_ref());
        let remote = self
            .remote
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown address".into());
        match self.trust.check(&fp) {
            Verdict::Paired(p) if self.expected.is_none_or(|e| e == p.org) => Ok(()),
            Verdict::Paired(p) => {
                tracing::warn!(%remote, fingerprint = %fp, partner = %p.name,
                    "refused handshake: certificate of another partner than the one dialed");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
            Verdict::Revoked(p) => {
                tracing::warn!(%remote, fingerprint = %fp, partner = %p.name,
                    "refused handshake: certificate of a revoked partner");
                self.trust.record_pending(fp, self.remote, true);
                Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
            }
            Verdict::Unknown => {
                tracing::warn!(%remote, fingerprint = %fp,
                    "refused handshake: unknown certificate (listed as pending)");
                self.trust.record_pending(fp, self.remote, false);
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
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
        // Only TLS 1.3 is enabled; a 1.2 signature means a confused peer.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
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
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
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
        .with_single_cert(
            vec![CertificateDer::from(identity.cert_der.clone())],
            identity.key(),
        )
        .map_err(tls_err("server certificate"))?;
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
        .with_client_auth_cert(
            vec![CertificateDer::from(identity.cert_der.clone())],
            identity.key(),
        )
        .map_err(tls_err("client certificate"))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}
