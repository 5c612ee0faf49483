use super::*;
use orgsync_protocol::wire::Message;

struct Peer {
    org: OrgId,
    identity: LocalIdentity,
}

impl Peer {
    fn new(n: u8) -> Peer {
        let ck = rcgen::generate_simple_self_signed(vec!["orgsync".into()]).unwrap();
        Peer {
            org: OrgId([n; 32]),
            identity: LocalIdentity {
                cert_der: ck.cert.der().to_vec(),
                key_der: Arc::new(zeroize::Zeroizing::new(ck.key_pair.serialize_der())),
            },
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_certificate(&self.identity.cert_der)
    }

    fn trusted(&self, revoked: bool) -> TrustedPeer {
        TrustedPeer {
            org: self.org,
            name: format!("org{}", self.org.0[0]),
            fingerprint: self.fingerprint(),
            addresses: vec![],
            revoked,
        }
    }

    fn bind(&self, trusted: Vec<TrustedPeer>) -> Transport {
        let opts = TransportOptions::new(
            "127.0.0.1:0".parse().unwrap(),
            self.identity.clone(),
            self.org,
        );
        Transport::bind(opts, Trust::new(trusted)).unwrap()
    }
}

/// Accepts inbound connections until the endpoint closes, forwarding successes.
fn spawn_acceptor(t: &Transport) -> tokio::sync::mpsc::UnboundedReceiver<PeerConnection> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let t = t.clone();
    tokio::spawn(async move {
        while let Some(hs) = t.next_incoming().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok(c) = hs.complete().await {
                    let _ = tx.send(c);
                }
            });
        }
    });
    rx
}

const DEADLINE: Duration = Duration::from_secs(10);

/// Whether a dial ended refused. In TLS 1.3 the client finishes its
/// handshake before the server checks the client's certificate, so a
/// refusal by the server shows as the connection being closed right after.
async fn refused(r: Result<PeerConnection, TransportError>) -> bool {
    match r {
        Err(_) => true,
        Ok(c) => {
            let reason = tokio::time::timeout(DEADLINE, c.connection.closed())
                .await
                .expect("a refused connection is closed by the server");
            matches!(
                reason,
                quinn::ConnectionError::TransportError(_)
                    | quinn::ConnectionError::ConnectionClosed(_)
            )
        }
    }
}

#[tokio::test]
async fn paired_peers_connect_and_exchange_frames() {
    let (a, b) = (Peer::new(1), Peer::new(2));
    let ta = a.bind(vec![b.trusted(false)]);
    let tb = b.bind(vec![a.trusted(false)]);
    let mut inbound = spawn_acceptor(&tb);
    let addr_b = tb.local_addr().unwrap();

    let ca = tokio::time::timeout(DEADLINE, ta.connect(b.org, addr_b))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ca.partner.org, b.org);
    assert!(ca.dialed_by_us);
    let (send, recv) = ca.connection.open_bi().await.unwrap();
    let (mut w, mut r) = (FrameWriter::new(send), FrameReader::new(recv));
    w.write(&Message::Ping(7)).await.unwrap();

    let cb = tokio::time::timeout(DEADLINE, inbound.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cb.partner.org, a.org);
    assert!(!cb.dialed_by_us);
    let (send, recv) = cb.connection.accept_bi().await.unwrap();
    let (mut wb, mut rb) = (FrameWriter::new(send), FrameReader::new(recv));
    assert_eq!(rb.next().await.unwrap(), Some(Message::Ping(7)));
    wb.write(&Message::Pong(7)).await.unwrap();
    wb.finish();
    assert_eq!(r.next().await.unwrap(), Some(Message::Pong(7)));
    assert_eq!(r.next().await.unwrap(), None, "clean end of stream");
    assert!(tb.trust().pending().is_empty());

    // Both ends agree on which of two connections to keep.
    let dialed_by_b = PeerConnection {
        dialed_by_us: false,
        ..ca.clone()
    };
    assert!(
        !preferred(&a.org, &ca, &dialed_by_b),
        "a (smaller) dialed ca: keep it"
    );
    assert!(preferred(&a.org, &dialed_by_b, &ca));
    let cb_dialed_by_a = cb.clone();
    let cb_dialed_by_b = PeerConnection {
        dialed_by_us: true,
        ..cb.clone()
    };
    assert!(preferred(&b.org, &cb_dialed_by_b, &cb_dialed_by_a));

    ta.shutdown(Duration::from_secs(1)).await;
    tb.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn unpaired_certificate_is_refused_and_listed_pending() {
    let (b, stranger) = (Peer::new(2), Peer::new(9));
    let tb = b.bind(vec![]);
    let mut inbound = spawn_acceptor(&tb);
    let mut refusals = tb.trust().subscribe_refusals();
    // The stranger trusts b, so only b's check can refuse the handshake.
    let ts = stranger.bind(vec![b.trusted(false)]);
    let result = tokio::time::timeout(DEADLINE, ts.connect(b.org, tb.local_addr().unwrap()))
        .await
        .unwrap();
    assert!(refused(result).await, "handshake must fail");
    tokio::time::timeout(DEADLINE, refusals.wait_for(|n| *n >= 1))
        .await
        .unwrap()
        .unwrap();
    let pending = tb.trust().pending();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].fingerprint, stranger.fingerprint());
    assert_eq!(pending[0].address, Some(ts.local_addr().unwrap()));
    assert!(!pending[0].revoked);
    assert!(
        inbound.try_recv().is_err(),
        "no connection reached the server's owner"
    );
    ts.shutdown(Duration::from_secs(1)).await;
    tb.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn revoked_partner_is_refused_both_ways() {
    let (a, b) = (Peer::new(1), Peer::new(2));
    let ta = a.bind(vec![b.trusted(false)]);
    let tb = b.bind(vec![a.trusted(false)]);
    let _inbound_b = spawn_acceptor(&tb);
    let _inbound_a = spawn_acceptor(&ta);
    // Revocation after start: the shared set is replaced, new handshakes use it.
    tb.trust().replace(vec![a.trusted(true)]);
    let mut refusals = tb.trust().subscribe_refusals();
    let r = tokio::time::timeout(DEADLINE, ta.connect(b.org, tb.local_addr().unwrap()))
        .await
        .unwrap();
    assert!(refused(r).await);
    tokio::time::timeout(DEADLINE, refusals.wait_for(|n| *n >= 1))
        .await
        .unwrap()
        .unwrap();
    assert!(tb.trust().pending()[0].revoked);
    // b dialing the partner it revoked refuses a's certificate too.
    let r = tokio::time::timeout(DEADLINE, tb.connect(a.org, ta.local_addr().unwrap()))
        .await
        .unwrap();
    assert!(r.is_err());
    // Dialing a partner but meeting another partner's certificate fails.
    let c = Peer::new(3);
    let tc = c.bind(vec![a.trusted(false)]);
    let _inbound_c = spawn_acceptor(&tc);
    ta.trust().replace(vec![b.trusted(false), c.trusted(false)]);
    let r = tokio::time::timeout(DEADLINE, ta.connect(b.org, tc.local_addr().unwrap()))
        .await
        .unwrap();
    assert!(r.is_err(), "c's certificate is not b's");
    for t in [ta, tb, tc] {
        t.shutdown(Duration::from_secs(1)).await;
    }
}

/// A server verifier for the test dialers below: any certificate, but a
/// real TLS 1.3 signature check (the server under test is not what these
/// tests are about).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
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

/// A client endpoint on `bind` that presents `cert_der` but signs the
/// handshake with `key_der`: the certificate's own key for an honest peer,
/// another key for an impostor (certificates are public, keys are not).
fn raw_dialer(
    bind: SocketAddr,
    cert_der: &[u8],
    key_der: &[u8],
) -> (quinn::Endpoint, quinn::ClientConfig) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = tls::provider();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der));
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
    // No keys_match(): the impostor deliberately pairs a foreign certificate
    // with its own key.
    let certified =
        rustls::sign::CertifiedKey::new(vec![CertificateDer::from(cert_der.to_vec())], signing);
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    tls.alpn_protocols = vec![orgsync_protocol::wire::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let endpoint = quinn::Endpoint::client(bind).unwrap();
    (endpoint, quinn::ClientConfig::new(Arc::new(crypto)))
}

/// Dials `addr` as [`raw_dialer`]; true when the server refused (the
/// connection failed or the server closed it right after the handshake).
async fn raw_dial_refused(
    endpoint: &quinn::Endpoint,
    cfg: &quinn::ClientConfig,
    addr: SocketAddr,
) -> bool {
    let connecting = endpoint
        .connect_with(cfg.clone(), addr, SERVER_NAME)
        .unwrap();
    match tokio::time::timeout(DEADLINE, connecting).await.unwrap() {
        Err(_) => true,
        Ok(c) => {
            let reason = tokio::time::timeout(DEADLINE, c.closed())
                .await
                .expect("a refused connection is closed by the server");
            matches!(
                reason,
                quinn::ConnectionError::TransportError(_)
                    | quinn::ConnectionError::ConnectionClosed(_)
            )
        }
    }
}

#[tokio::test]
async fn certificate_without_its_key_is_refused_and_never_listed() {
    let (a, b, third) = (Peer::new(1), Peer::new(2), Peer::new(3));
    let tb = b.bind(vec![a.trusted(false)]);
    let mut inbound = spawn_acceptor(&tb);
    let addr_b = tb.local_addr().unwrap();
    let refusals = tb.trust().subscribe_refusals();
    let attacker = Peer::new(66);
    let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
    // a's certificate (paired with b) and a stranger's, each signed with
    // the attacker's own key.
    for (whose, cert) in [
        ("the paired partner's", &a.identity.cert_der),
        ("a third party's", &third.identity.cert_der),
    ] {
        let (ep, cfg) = raw_dialer(bind, cert, &attacker.identity.key_der);
        for _ in 0..3 {
            assert!(
                raw_dial_refused(&ep, &cfg, addr_b).await,
                "{whose} certificate without its key must be refused"
            );
        }
        ep.close(0u32.into(), b"");
    }
    // The server closed each connection after checking the signature, so
    // anything it would list is listed by now.
    assert!(
        tb.trust().pending().is_empty(),
        "{:?}",
        tb.trust().pending()
    );
    assert_eq!(*refusals.borrow(), 0, "no proven refusal counted");
    assert!(inbound.try_recv().is_err(), "no connection was accepted");

    // Control: the same dialer with the third party's own key is listed.
    let (ep, cfg) = raw_dialer(bind, &third.identity.cert_der, &third.identity.key_der);
    assert!(raw_dial_refused(&ep, &cfg, addr_b).await);
    let pending = tb.trust().pending();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].fingerprint, third.fingerprint());
    // And a's certificate with a's key is accepted, as before.
    let (ep_a, cfg_a) = raw_dialer(bind, &a.identity.cert_der, &a.identity.key_der);
    let c = tokio::time::timeout(
        DEADLINE,
        ep_a.connect_with(cfg_a, addr_b, SERVER_NAME).unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    let accepted = tokio::time::timeout(DEADLINE, inbound.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(accepted.partner.org, a.org);
    eprintln!(
        "pending impostors: 6 handshakes with a paired/third-party certificate without its key: 6 refused, 0 listed; honest unknown peer listed"
    );
    c.close(0u32.into(), b"");
    ep.close(0u32.into(), b"");
    ep_a.close(0u32.into(), b"");
    tb.shutdown(Duration::from_secs(1)).await;
}

/// A QUIC server presenting `cert_der` but signing with `key_der`.
fn impostor_server(cert_der: &[u8], key_der: &[u8]) -> quinn::Endpoint {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        key_der,
    ));
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
    let certified = rustls::sign::CertifiedKey::new(
        vec![rustls::pki_types::CertificateDer::from(cert_der.to_vec())],
        signing,
    );
    let mut server_tls = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    server_tls.alpn_protocols = vec![orgsync_protocol::wire::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_tls).unwrap();
    let server = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(crypto)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let ep = server.clone();
    tokio::spawn(async move {
        while let Some(inc) = ep.accept().await {
            let _ = inc.await;
        }
    });
    server
}

#[tokio::test]
async fn dialed_server_without_its_key_is_refused_and_never_listed() {
    // We dial b, but an impostor answers with b's certificate (or a third
    // party's) signed with its own key: refused, nothing listed here.
    let (a, b, third, attacker) = (Peer::new(1), Peer::new(2), Peer::new(3), Peer::new(66));
    // Our own transport refuses to run with a key that is not its
    // certificate's (keys_match), so the impostor serves with raw rustls.
    let mismatched = LocalIdentity {
        cert_der: b.identity.cert_der.clone(),
        key_der: attacker.identity.key_der.clone(),
    };
    assert!(mismatched.certified_key("test").is_err());
    let ta = a.bind(vec![b.trusted(false)]);
    for cert in [&b.identity.cert_der, &third.identity.cert_der] {
        let server = impostor_server(cert, &attacker.identity.key_der);
        let r = tokio::time::timeout(DEADLINE, ta.connect(b.org, server.local_addr().unwrap()))
            .await
            .unwrap();
        assert!(r.is_err(), "a certificate without its key was accepted");
        server.close(0u32.into(), b"");
    }
    assert!(
        ta.trust().pending().is_empty(),
        "{:?}",
        ta.trust().pending()
    );
    // Control: the third party with its own key is listed (we dialed it).
    let server = impostor_server(&third.identity.cert_der, &third.identity.key_der);
    let r = tokio::time::timeout(DEADLINE, ta.connect(b.org, server.local_addr().unwrap()))
        .await
        .unwrap();
    assert!(r.is_err());
    assert_eq!(ta.trust().pending().len(), 1);
    assert_eq!(ta.trust().pending()[0].fingerprint, third.fingerprint());
    server.close(0u32.into(), b"");
    ta.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn scanner_with_fresh_certificates_cannot_evict_a_real_pending_entry() {
    let b = Peer::new(2);
    let tb = b.bind(vec![]);
    let _inbound = spawn_acceptor(&tb);
    let addr_b = tb.local_addr().unwrap();
    // A real unknown instance from 127.0.0.1 is listed first.
    let real = Peer::new(9);
    let (ep, cfg) = raw_dialer(
        "127.0.0.1:0".parse().unwrap(),
        &real.identity.cert_der,
        &real.identity.key_der,
    );
    assert!(raw_dial_refused(&ep, &cfg, addr_b).await);
    assert_eq!(tb.trust().pending()[0].fingerprint, real.fingerprint());
    // A scanner from 127.0.0.2 presents a fresh certificate (with its key)
    // on every handshake.
    const SCANS: usize = 40;
    let started = std::time::Instant::now();
    for _ in 0..SCANS {
        let fresh = Peer::new(77);
        let (ep, cfg) = raw_dialer(
            "127.0.0.2:0".parse().unwrap(),
            &fresh.identity.cert_der,
            &fresh.identity.key_der,
        );
        assert!(raw_dial_refused(&ep, &cfg, addr_b).await);
        ep.close(0u32.into(), b"");
    }
    let pending = tb.trust().pending();
    let from_scanner = pending
        .iter()
        .filter(|p| {
            p.address
                .is_some_and(|a| a.ip() == "127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        })
        .count();
    assert_eq!(from_scanner, MAX_PENDING_PER_SOURCE);
    assert!(pending.iter().any(|p| p.fingerprint == real.fingerprint()));
    assert_eq!(pending.len(), MAX_PENDING_PER_SOURCE + 1);
    assert_eq!(
        tb.trust().unlisted(),
        (SCANS - MAX_PENDING_PER_SOURCE) as u64
    );
    eprintln!(
        "pending scanner (unit): {SCANS} fresh certificates from one address in {:?}: {} listed, {} unlisted, real entry kept",
        started.elapsed(),
        from_scanner,
        tb.trust().unlisted()
    );
    ep.close(0u32.into(), b"");
    tb.shutdown(Duration::from_secs(1)).await;
}

fn fp(n: u16) -> Fingerprint {
    let mut b = [0u8; 32];
    b[..2].copy_from_slice(&n.to_le_bytes());
    b[31] = 0xAB;
    Fingerprint(b)
}

fn addr(ip: [u8; 4], port: u16) -> Option<SocketAddr> {
    Some(SocketAddr::from((ip, port)))
}

#[test]
fn pending_list_bounds_per_source_and_in_all() {
    let trust = Trust::new(vec![]);
    let real = fp(0);
    assert_eq!(
        trust.record_pending(real, addr([10, 0, 0, 1], 4433), false),
        PendingOutcome::Listed
    );
    // 1,000 fresh fingerprints from one address, ports varying.
    for i in 1..=1000u16 {
        let o = trust.record_pending(fp(i), addr([10, 9, 9, 9], 1000 + i), false);
        if usize::from(i) <= MAX_PENDING_PER_SOURCE {
            assert_eq!(o, PendingOutcome::Listed);
        } else {
            assert_eq!(o, PendingOutcome::SourceFull);
        }
    }
    let list = trust.pending();
    assert_eq!(list.len(), 1 + MAX_PENDING_PER_SOURCE);
    assert_eq!(list[0].fingerprint, real);
    assert_eq!(trust.unlisted(), 1000 - MAX_PENDING_PER_SOURCE as u64);
    // A listed fingerprint seen again is updated, whatever the caps.
    assert_eq!(
        trust.record_pending(fp(1), addr([10, 9, 9, 9], 1), false),
        PendingOutcome::Updated
    );
    // An IPv6 scanner in one /64 counts as one source.
    for i in 0..50u16 {
        let ip = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, i, i, i, i);
        trust.record_pending(fp(2000 + i), Some(SocketAddr::from((ip, 1))), false);
    }
    assert_eq!(trust.pending().len(), 1 + 2 * MAX_PENDING_PER_SOURCE);

    // Filling the list from many sources: a full list never evicts the
    // only entry of a source.
    let trust = Trust::new(vec![]);
    trust.record_pending(real, addr([10, 0, 0, 1], 1), false);
    let mut n = 1u16;
    for a in 0..=255u8 {
        for _ in 0..2 {
            n += 1;
            trust.record_pending(fp(n), addr([10, 1, a, 1], 1), false);
        }
    }
    let list = trust.pending();
    assert_eq!(list.len(), MAX_PENDING);
    assert!(
        list.iter().any(|p| p.fingerprint == real),
        "lone real entry evicted"
    );
    // A scanner with one entry per source (many hosts) only fills up to
    // where the largest source has 2, then is refused; real is kept.
    for a in 0..=255u8 {
        n += 1;
        trust.record_pending(fp(n), addr([10, 2, a, 1], 1), false);
    }
    let list = trust.pending();
    assert_eq!(list.len(), MAX_PENDING);
    assert!(
        list.iter().any(|p| p.fingerprint == real),
        "lone real entry evicted"
    );
    assert!(trust.unlisted() > 0);
}

#[test]
fn accepted_or_forgotten_pending_entries_free_their_place() {
    let trust = Trust::new(vec![]);
    for i in 0..MAX_PENDING_PER_SOURCE as u16 {
        trust.record_pending(fp(i), addr([10, 0, 0, 7], 1), false);
    }
    let late = fp(999);
    assert_eq!(
        trust.record_pending(late, addr([10, 0, 0, 7], 1), false),
        PendingOutcome::SourceFull
    );
    // Accepting fp(0) (it becomes a paired partner) frees one place.
    trust.replace(vec![TrustedPeer {
        org: OrgId([1; 32]),
        name: "accepted".into(),
        fingerprint: fp(0),
        addresses: vec![],
        revoked: false,
    }]);
    assert!(trust.pending().iter().all(|p| p.fingerprint != fp(0)));
    assert_eq!(
        trust.record_pending(late, addr([10, 0, 0, 7], 1), false),
        PendingOutcome::Listed
    );
    // Forgetting (dismissing) one frees another.
    assert!(trust.forget_pending(&fp(1)));
    assert!(!trust.forget_pending(&fp(1)));
    assert_eq!(
        trust.record_pending(fp(1000), addr([10, 0, 0, 7], 1), false),
        PendingOutcome::Listed
    );
    // A revoked partner's entry stays listed (flagged revoked).
    trust.record_pending(fp(2), addr([10, 0, 0, 7], 1), true);
    trust.replace(vec![TrustedPeer {
        org: OrgId([2; 32]),
        name: "revoked".into(),
        fingerprint: fp(2),
        addresses: vec![],
        revoked: true,
    }]);
    assert!(trust.pending().iter().any(|p| p.fingerprint == fp(2)));
}
