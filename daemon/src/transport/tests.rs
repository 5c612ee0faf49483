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
                key_der: Arc::new(ck.key_pair.serialize_der()),
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
