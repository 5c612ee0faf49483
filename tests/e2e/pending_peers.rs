//! End-to-end: the pending-peer list of a running `orgsyncd` (issue 13,
//! part 3). A peer is listed as pending only once it proved it holds its
//! certificate's key, and the list is bounded per source so a scanner
//! cannot push real entries out.
//!
//! Played against Acme's real daemon on loopback:
//! - a real unknown instance (Intruder, which imported Acme's bundle and
//!   dials it) is listed with its fingerprint;
//! - impostors present Globex's certificate (a paired partner of Acme) and
//!   Dora's (an instance Acme never heard of) with their own keys: refused,
//!   never listed, logged as "did not prove";
//! - a scanner on another loopback address (127.0.0.2) makes 1,000
//!   handshakes with a fresh certificate (and its key) each: all refused, at
//!   most `MAX_PENDING_PER_SOURCE` listed, the rest counted in
//!   `orgsync_pending_unlisted_total`; Intruder's entry stays;
//! - Acme then accepts Intruder the usual way (imports its bundle) and the
//!   two connect.

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::Instance;

const STEP: Duration = Duration::from_secs(60);
const SCANS: usize = 1000;
const IMPOSTOR_TRIES: usize = 25;

/// Any server certificate, real signature check: these dialers test the
/// daemon's side, not their own.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Client config presenting `cert_der` and signing with `key_der` (the
/// certificate's own key for an honest peer, another for an impostor).
fn client_config(cert_der: &[u8], key_der: &[u8]) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der));
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).expect("signing key");
    // Deliberately no keys_match(): the impostor pairs a foreign
    // certificate with its own key.
    let certified =
        rustls::sign::CertifiedKey::new(vec![CertificateDer::from(cert_der.to_vec())], signing);
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    tls.alpn_protocols = vec![orgsync_protocol::wire::ALPN.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC client config");
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// Dials `addr`; true when the daemon refused (the handshake failed, or the
/// daemon closed the connection right after it: in TLS 1.3 the client is
/// done before the server has checked the client's certificate).
async fn refused(endpoint: &quinn::Endpoint, cfg: quinn::ClientConfig, addr: SocketAddr) -> bool {
    let connecting = endpoint
        .connect_with(cfg, addr, "orgsync")
        .expect("connect");
    match tokio::time::timeout(STEP, connecting)
        .await
        .expect("handshake timed out")
    {
        Err(_) => true,
        Ok(c) => {
            let reason = tokio::time::timeout(STEP, c.closed())
                .await
                .expect("a refused connection is closed by the daemon");
            matches!(
                reason,
                quinn::ConnectionError::TransportError(_)
                    | quinn::ConnectionError::ConnectionClosed(_)
            )
        }
    }
}

fn fresh_cert() -> (Vec<u8>, Vec<u8>) {
    let ck = rcgen::generate_simple_self_signed(vec!["orgsync".into()]).expect("rcgen");
    (ck.cert.der().to_vec(), ck.key_pair.serialize_der())
}

fn cert_of(inst: &Instance) -> Vec<u8> {
    CertificateDer::from_pem_file(inst.dir.join("tls.crt"))
        .expect("tls.crt")
        .to_vec()
}

fn pending(a: &Instance) -> Vec<serde_json::Value> {
    a.cli_json(&["partners"])["pending"]
        .as_array()
        .expect("partners --json has a pending list")
        .clone()
}

fn pending_fps(a: &Instance) -> Vec<String> {
    pending(a)
        .iter()
        .filter_map(|p| p["fingerprint"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn only_proven_peers_are_pending_and_a_scanner_cannot_evict_them() {
    let mut a = Instance::new("Acme");
    let b = Instance::new("Globex"); // paired with Acme, never started
    let mut c = Instance::new("Intruder");
    let d = Instance::new("Dora"); // nobody knows Dora
    Instance::pair(&a, &b);
    c.trust(&a); // one-sided: Intruder dials Acme, Acme does not know it
    let (b_fp, c_fp, d_fp) = (b.fingerprint(), c.fingerprint(), d.fingerprint());
    a.start();
    c.start();
    let a_addr = SocketAddr::from(([127, 0, 0, 1], a.port));

    // 1. The real unknown instance is listed, with its fingerprint.
    support::wait_for("Intruder pending on Acme", STEP, || {
        pending_fps(&a).contains(&c_fp).then_some(())
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (impostors_refused, impostor_time, scan_refused, scan_time) = rt.block_on(async {
        // 2. Impostors: Globex's and Dora's certificates, the attacker's key.
        let attacker = fresh_cert();
        let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("endpoint");
        let t0 = Instant::now();
        let mut impostors_refused = 0;
        for cert in [cert_of(&b), cert_of(&d)] {
            for _ in 0..IMPOSTOR_TRIES {
                if refused(&ep, client_config(&cert, &attacker.1), a_addr).await {
                    impostors_refused += 1;
                }
            }
        }
        ep.close(0u32.into(), b"");
        let impostor_time = t0.elapsed();

        // 3. The scanner: 1,000 fresh certificates from 127.0.0.2, 16 at
        // a time.
        let scanner =
            quinn::Endpoint::client("127.0.0.2:0".parse().unwrap()).expect("scanner endpoint");
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let mut scan_refused = 0;
        for i in 0..SCANS {
            if i >= 16 {
                scan_refused += usize::from(tasks.join_next().await.unwrap().unwrap());
            }
            let scanner = scanner.clone();
            tasks.spawn(async move {
                let (cert, key) = fresh_cert();
                refused(&scanner, client_config(&cert, &key), a_addr).await
            });
        }
        while let Some(r) = tasks.join_next().await {
            scan_refused += usize::from(r.unwrap());
        }
        let scan_time = started.elapsed();
        scanner.close(0u32.into(), b"");
        (impostors_refused, impostor_time, scan_refused, scan_time)
    });
    assert_eq!(
        impostors_refused,
        2 * IMPOSTOR_TRIES,
        "every impostor refused"
    );
    assert_eq!(scan_refused, SCANS, "every scan refused");

    let list = pending(&a);
    let fps = pending_fps(&a);
    assert!(
        !fps.contains(&b_fp),
        "a paired partner's certificate without its key was listed"
    );
    assert!(
        !fps.contains(&d_fp),
        "a third party's certificate without its key was listed"
    );
    assert!(
        fps.contains(&c_fp),
        "the scanner evicted the real pending entry: {fps:?}"
    );
    let from_scanner = list
        .iter()
        .filter(|p| {
            p["address"]
                .as_str()
                .is_some_and(|s| s.starts_with("127.0.0.2:"))
        })
        .count();
    assert!(
        (1..=8).contains(&from_scanner),
        "scanner entries listed: {from_scanner}"
    );
    assert_eq!(list.len(), from_scanner + 1, "{list:?}");
    let log = a.log_text();
    let unproven = log
        .lines()
        .filter(|l| l.contains("did not prove it holds the certificate's key"))
        .count();
    assert!(
        unproven >= 2 * IMPOSTOR_TRIES,
        "impostor refusals logged: {unproven}"
    );
    let unlisted = support::wait_for("the unlisted counter", STEP, || {
        let n = a.metric("orgsync_pending_unlisted_total");
        (n >= (SCANS - from_scanner) as u64).then_some(n)
    });
    eprintln!(
        "pending peers: {} impostor handshakes (paired + unknown certificate, no key) in {:.2} s: {impostors_refused} refused, 0 listed; \
         scanner {SCANS} fresh certificates from one address in {:.1} s: {scan_refused} refused, {from_scanner} listed, \
         {unlisted} unlisted; real pending entry kept",
        2 * IMPOSTOR_TRIES,
        impostor_time.as_secs_f64(),
        scan_time.as_secs_f64()
    );

    // 4. Accepted the usual way: Acme imports Intruder's bundle; its
    // partner set is reloaded and the two connect.
    a.trust(&c);
    support::wait_for("Intruder connected to Acme", STEP, || {
        a.status()["partners"]
            .as_array()?
            .iter()
            .any(|p| p["name"] == "Intruder" && p["connected"] == true)
            .then_some(())
    });
    assert!(
        !pending_fps(&a).contains(&c_fp),
        "an accepted peer is no longer pending"
    );
    c.stop();
    a.stop();
}
