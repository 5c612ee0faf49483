//! Engines on real stores (sled in temp dirs) and real QUIC on loopback.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use orgsync_protocol::codec;
use orgsync_protocol::identity::{Fingerprint, OrgKeyPair, OrgPublicKey};
use orgsync_protocol::model::{FieldKey, Kind, Object, ObjectId, Value};

use super::*;
use crate::policy::AllowAll;
use crate::store::{BlobEntry, BlobState, Edit, Origin};
use crate::transport::{LocalIdentity, TransportOptions, Trust};

const DEADLINE: Duration = Duration::from_secs(20);

struct TestKeys {
    me: OrgId,
    pair: OrgKeyPair,
    peers: HashMap<OrgId, OrgPublicKey>,
}

impl KeySource for TestKeys {
    fn pair_keys(&self, partner: &TrustedPeer) -> Result<PairKeys, String> {
        let public = self.peers.get(&partner.org).ok_or("unknown partner")?;
        self.pair
            .pair_keys(self.me, partner.org, public, 1)
            .map_err(|e| e.to_string())
    }
}

/// The long-lived identity of a test instance.
struct Instance {
    dir: tempfile::TempDir,
    pair_secret: [u8; 32],
    public: OrgPublicKey,
    org: OrgId,
    tls: LocalIdentity,
}

impl Instance {
    fn new() -> Instance {
        let pair = OrgKeyPair::generate();
        let public = pair.public();
        let ck = rcgen::generate_simple_self_signed(vec!["orgsync".into()]).unwrap();
        Instance {
            dir: tempfile::tempdir().unwrap(),
            pair_secret: *pair.secret_bytes(),
            org: public.org_id(),
            public,
            tls: LocalIdentity {
                cert_der: ck.cert.der().to_vec(),
                key_der: Arc::new(zeroize::Zeroizing::new(ck.key_pair.serialize_der())),
            },
        }
    }

    fn as_partner(&self, addr: Option<SocketAddr>) -> TrustedPeer {
        TrustedPeer {
            org: self.org,
            name: format!("org-{}", self.org.short()),
            fingerprint: Fingerprint::of_certificate(&self.tls.cert_der),
            addresses: addr.map(|a| a.to_string()).into_iter().collect(),
            revoked: false,
        }
    }

    fn options() -> EngineOptions {
        EngineOptions {
            // Keeps batches below the sizes the codec bug refuses (see
            // `offline_partner_catches_up_with_default_batches`).
            max_batch_changes: 30,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_millis(500),
            ..EngineOptions::default()
        }
    }

    /// Binds the transport (port 0) without starting the engine.
    fn bind(&self) -> Transport {
        let opts =
            TransportOptions::new("127.0.0.1:0".parse().unwrap(), self.tls.clone(), self.org);
        Transport::bind(opts, Trust::new(vec![])).unwrap()
    }

    fn start(
        &self,
        store: &Store,
        transport: Transport,
        partners: &[(&Instance, Option<SocketAddr>)],
    ) -> Engine {
        self.start_with(store, transport, partners, Instance::options())
    }

    fn start_with(
        &self,
        store: &Store,
        transport: Transport,
        partners: &[(&Instance, Option<SocketAddr>)],
        options: EngineOptions,
    ) -> Engine {
        self.start_with_policy(store, transport, partners, options, Arc::new(AllowAll))
    }

    fn start_with_policy(
        &self,
        store: &Store,
        transport: Transport,
        partners: &[(&Instance, Option<SocketAddr>)],
        options: EngineOptions,
        policy: Arc<dyn SharePolicy>,
    ) -> Engine {
        transport
            .trust()
            .replace(partners.iter().map(|(p, a)| p.as_partner(*a)).collect());
        let keys = TestKeys {
            me: self.org,
            pair: OrgKeyPair::from_secret_bytes(&self.pair_secret),
            peers: partners.iter().map(|(p, _)| (p.org, p.public)).collect(),
        };
        Engine::start(store.clone(), transport, policy, Arc::new(keys), options)
    }

    fn store(&self) -> Store {
        Store::open(self.dir.path(), 8 << 20).unwrap()
    }
}

fn contact(name: &str) -> Edit {
    Edit::new(ObjectId::new_v7(1_700_000_000_000), Kind::Contact)
        .set_std("first_name", Value::Text(name.into()))
}

/// Waits until `partner` has acknowledged our log up to `seq`.
async fn wait_acked(engine: &Engine, partner: &OrgId, seq: u64) {
    let mut status = engine.subscribe_status(partner).unwrap();
    tokio::time::timeout(
        DEADLINE,
        status.wait_for(|s| s.session.as_ref().is_some_and(|st| st.acked_by_peer >= seq)),
    )
    .await
    .expect("partner acknowledged in time")
    .unwrap();
}

/// Every object, encoded: equal digests mean byte-identical stores.
fn digest(store: &Store) -> Vec<(ObjectId, Vec<u8>)> {
    let mut all: Vec<Object> = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(None, after, 500).unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|o| o.id);
        all.extend(page);
    }
    all.iter()
        .map(|o| (o.id, codec::encode(o).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_converge_both_ways() {
    let (a, b) = (Instance::new(), Instance::new());
    let (sa, sb) = (a.store(), b.store());
    let (ta, tb) = (a.bind(), b.bind());
    let (addr_a, addr_b) = (ta.local_addr().unwrap(), tb.local_addr().unwrap());
    // Both dial: duplicates must resolve to one working connection.
    let ea = a.start(&sa, ta, &[(&b, Some(addr_b))]);
    let eb = b.start(&sb, tb, &[(&a, Some(addr_a))]);

    let shared_edit = contact("shared");
    let shared_id = shared_edit.id;
    sa.write(vec![shared_edit]).await.unwrap();
    for chunk in 0..4 {
        let edits = (0..50).map(|i| contact(&format!("a{chunk}-{i}"))).collect();
        sa.write(edits).await.unwrap();
    }
    let edits = (0..30).map(|i| contact(&format!("b{i}"))).collect();
    sb.write(edits).await.unwrap();
    // Concurrent edits of one object on both sides.
    wait_acked(&ea, &b.org, sa.log_head()).await;
    let edit = |name: &str| {
        Edit::new(shared_id, Kind::Contact)
            .set(FieldKey::Std("email".into()), Value::Text(name.into()))
    };
    sa.write(vec![edit("a@example.org")]).await.unwrap();
    sb.write(vec![edit("b@example.org")]).await.unwrap();

    wait_acked(&ea, &b.org, sa.log_head()).await;
    wait_acked(&eb, &a.org, sb.log_head()).await;
    let (da, db) = (digest(&sa), digest(&sb));
    assert_eq!(da.len(), 1 + 200 + 30);
    assert!(da == db, "stores differ after sync");
    assert_eq!(sb.cursor(&a.org).unwrap().applied_from_peer, sa.log_head());
    assert_eq!(sa.cursor(&b.org).unwrap().applied_from_peer, sb.log_head());
    assert_eq!(sa.cursor(&b.org).unwrap().acked_by_peer, sa.log_head());

    let status = ea.status();
    assert_eq!(status.len(), 1);
    assert!(status[0].1.connected);
    assert!(ea.stop().await.is_clean());
    assert!(eb.stop().await.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_partner_catches_up_without_duplicates() {
    // Small batches: many batches, each advancing the cursor on its own.
    offline_catch_up(30).await;
}

/// The same with production-sized batches. Ignored until the protocol's
/// codec is fixed: `codec::decode_prefix` picks the smallest decode-limit
/// tier >= the input length, but bincode counts decoded in-memory sizes
/// against the limit (~1.4x the input for change batches), so batches
/// whose encoding lies just below a tier (e.g. 800 or 1000 small contacts,
/// 46-58 KB; or 50-60 contacts, 2.8-3.4 KB) fail to decode at the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_partner_catches_up_with_default_batches() {
    offline_catch_up(crate::config::DEFAULT_MAX_BATCH_CHANGES).await;
}

async fn offline_catch_up(max_batch_changes: usize) {
    let (a, b) = (Instance::new(), Instance::new());
    let sa = a.store();
    let ta = a.bind();
    let addr_a = ta.local_addr().unwrap();
    // Only b dials (a has no address for b).
    let options = EngineOptions {
        max_batch_changes,
        ..Instance::options()
    };
    let ea = a.start_with(&sa, ta, &[(&b, None)], options.clone());
    for chunk in 0..10 {
        let edits = (0..200)
            .map(|i| contact(&format!("c{chunk}-{i}")))
            .collect();
        sa.write(edits).await.unwrap();
    }
    assert_eq!(sa.log_head(), 2000);

    let count_applied = |store: &Store| {
        let mut rx = store.subscribe_events();
        let org = a.org;
        tokio::spawn(async move {
            let mut n = 0u64;
            while let Ok(ev) = rx.recv().await {
                if ev.origin == Origin::Partner(org) {
                    n += 1;
                }
            }
            n
        })
    };

    // First run of b: the whole backlog arrives once.
    {
        let sb = b.store();
        let counter = count_applied(&sb);
        let eb = b.start_with(&sb, b.bind(), &[(&a, Some(addr_a))], options.clone());
        wait_acked(&ea, &b.org, 2000).await;
        assert!(eb.stop().await.is_clean());
        drop(eb);
        drop(sb);
        assert_eq!(counter.await.unwrap(), 2000);
    }
    // a writes while b is down; b restarts from its durable cursor.
    let edits = (0..10).map(|i| contact(&format!("late{i}"))).collect();
    sa.write(edits).await.unwrap();
    let sb = b.store();
    assert_eq!(sb.cursor(&a.org).unwrap().applied_from_peer, 2000);
    let counter = count_applied(&sb);
    let eb = b.start_with(&sb, b.bind(), &[(&a, Some(addr_a))], options.clone());
    wait_acked(&ea, &b.org, 2010).await;
    assert!(digest(&sa) == digest(&sb));
    assert!(eb.stop().await.is_clean());
    drop(eb);
    drop(sb);
    assert_eq!(counter.await.unwrap(), 10, "nothing applied twice");
    assert!(ea.stop().await.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_blob_follows_its_object() {
    let (a, b) = (Instance::new(), Instance::new());
    let (sa, sb) = (a.store(), b.store());
    let (ta, tb) = (a.bind(), b.bind());
    let addr_a = ta.local_addr().unwrap();
    let ea = a.start(&sa, ta, &[(&b, None)]);
    let eb = b.start(&sb, tb, &[(&a, Some(addr_a))]);

    let content: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let src = a.dir.path().join("cv.pdf");
    std::fs::write(&src, &content).unwrap();
    let (hash, size) = sa.blob_files().put_file(&src).unwrap();
    let resume = Edit::new(ObjectId::new_v7(1_700_000_000_000), Kind::Resume)
        .set_std("file_name", Value::Text("cv.pdf".into()))
        .set_std("size", Value::Integer(size as i64))
        .set_std("hash", Value::Hash(hash));
    let id = resume.id;
    sa.set_blob(
        &hash,
        BlobEntry {
            size,
            state: BlobState::Complete,
            object: Some(id),
        },
    )
    .await
    .unwrap();
    sa.write(vec![resume]).await.unwrap();

    wait_acked(&ea, &b.org, sa.log_head()).await;
    assert!(sb.get(id).unwrap().is_some());
    // The blob travels on its own stream after the record: poll with a deadline.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while sb.blob(&hash).unwrap().map(|e| e.state) != Some(BlobState::Complete) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "blob not received in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        std::fs::read(sb.blob_files().path_of(&hash)).unwrap(),
        content
    );
    assert!(sb.missing_blobs().unwrap().is_empty());
    assert!(ea.stop().await.is_clean());
    assert!(eb.stop().await.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_partner_cuts_it_off() {
    let (a, b) = (Instance::new(), Instance::new());
    let (sa, sb) = (a.store(), b.store());
    let (ta, tb) = (a.bind(), b.bind());
    let addr_b = tb.local_addr().unwrap();
    let ea = a.start(&sa, ta, &[(&b, Some(addr_b))]);
    let eb = b.start(&sb, tb.clone(), &[(&a, None)]);
    sa.write(vec![contact("before")]).await.unwrap();
    wait_acked(&ea, &b.org, 1).await;

    // b revokes a: the live connection closes and redials are refused.
    let mut refusals = tb.trust().subscribe_refusals();
    let mut revoked = a.as_partner(None);
    revoked.revoked = true;
    tb.trust().replace(vec![revoked]);
    eb.reload_partners();
    assert!(eb.status().is_empty(), "no task for a revoked partner");
    let mut status_a = ea.subscribe_status(&b.org).unwrap();
    tokio::time::timeout(DEADLINE, status_a.wait_for(|s| !s.connected))
        .await
        .expect("a sees the connection close")
        .unwrap();
    tokio::time::timeout(DEADLINE, refusals.wait_for(|n| *n >= 1))
        .await
        .expect("a's redial is refused")
        .unwrap();
    assert!(tb.trust().pending().iter().any(|p| p.revoked));

    sa.write(vec![contact("after")]).await.unwrap();
    // Let a try again after the write: still refused, still nothing new.
    let seen = *refusals.borrow_and_update();
    tokio::time::timeout(DEADLINE, refusals.wait_for(|n| *n > seen))
        .await
        .expect("a redials and is refused again")
        .unwrap();
    assert_eq!(sb.cursor(&a.org).unwrap().applied_from_peer, 1);
    assert_eq!(
        sb.list(None, None, 10).unwrap().len(),
        1,
        "nothing new reached b"
    );
    assert!(ea.stop().await.is_clean());
    assert!(eb.stop().await.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_blob_download_resumes_from_its_offset() {
    let (a, b) = (Instance::new(), Instance::new());
    let (sa, sb) = (a.store(), b.store());
    let content: Vec<u8> = (0..1_500_000u32).map(|i| (i % 253) as u8).collect();
    let (hash, size) = sa.blob_files().put_bytes(&content).unwrap();
    // b already holds the first part from an earlier, interrupted transfer.
    let half = 600_000usize;
    let mut partial = sb.blob_files().partial(&hash, size).unwrap();
    partial.append(0, &content[..half]).unwrap();
    partial.sync().unwrap();
    drop(partial);

    let resume = Edit::new(ObjectId::new_v7(1_700_000_000_000), Kind::Resume)
        .set_std("size", Value::Integer(size as i64))
        .set_std("hash", Value::Hash(hash));
    let id = resume.id;
    sa.set_blob(
        &hash,
        BlobEntry {
            size,
            state: BlobState::Complete,
            object: Some(id),
        },
    )
    .await
    .unwrap();
    sa.write(vec![resume]).await.unwrap();

    let (ta, tb) = (a.bind(), b.bind());
    let addr_a = ta.local_addr().unwrap();
    let ea = a.start(&sa, ta, &[(&b, None)]);
    let eb = b.start(&sb, tb, &[(&a, Some(addr_a))]);
    // A sender starting at 0 would be refused by b's session (chunks must
    // start at the requested offset), so completion proves the resume.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while sb.blob(&hash).unwrap().map(|e| e.state) != Some(BlobState::Complete) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "blob not completed in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        std::fs::read(sb.blob_files().path_of(&hash)).unwrap(),
        content
    );
    assert!(ea.stop().await.is_clean());
    assert!(eb.stop().await.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_through_loss_reordering_and_a_partition() {
    use orgsync_testkit::{FaultConfig, FaultProxy};
    let (a, b) = (Instance::new(), Instance::new());
    let (sa, sb) = (a.store(), b.store());
    let short = |inst: &Instance| {
        let mut opts =
            TransportOptions::new("127.0.0.1:0".parse().unwrap(), inst.tls.clone(), inst.org);
        opts.idle_timeout = Duration::from_secs(3);
        opts.keep_alive = Duration::from_millis(500);
        Transport::bind(opts, Trust::new(vec![])).unwrap()
    };
    let (ta, tb) = (short(&a), short(&b));
    let proxy = FaultProxy::start(ta.local_addr().unwrap(), FaultConfig::lossy(0.05, 0.1), 7)
        .await
        .unwrap();
    let options = EngineOptions {
        idle_timeout: Duration::from_millis(1500),
        ..Instance::options()
    };
    // b reaches a only through the proxy.
    let ea = a.start_with(&sa, ta, &[(&b, None)], options.clone());
    let eb = b.start_with(&sb, tb, &[(&a, Some(proxy.local_addr()))], options);

    for round in 0..5 {
        let edits = (0..100)
            .map(|i| contact(&format!("r{round}-{i}")))
            .collect();
        sa.write(edits).await.unwrap();
    }
    wait_acked(&ea, &b.org, 500).await;

    // Cut the link long enough for the sessions to time out, write, heal.
    proxy.partition();
    let mut status_b = eb.subscribe_status(&a.org).unwrap();
    tokio::time::timeout(DEADLINE, status_b.wait_for(|s| !s.connected))
        .await
        .expect("b notices the partition")
        .unwrap();
    let edits = (0..100).map(|i| contact(&format!("during{i}"))).collect();
    sa.write(edits).await.unwrap();
    proxy.heal();
    wait_acked(&ea, &b.org, 600).await;
    assert!(digest(&sa) == digest(&sb));
    assert!(proxy.stats().dropped > 0, "the proxy did drop datagrams");
    assert!(
        eb.status()[0].1.connections >= 2,
        "b reconnected after the partition"
    );
    assert!(ea.stop().await.is_clean());
    assert!(eb.stop().await.is_clean());
    proxy.stop().await;
}

/// Shares and applies everything; the first incoming change costs `first`
/// (an apply that takes a while, as a large merged one does on a loaded
/// machine), and `applying` is notified when it begins.
struct SlowApply {
    first: Duration,
    applying: Arc<tokio::sync::Notify>,
    begun: std::sync::atomic::AtomicBool,
}

impl SharePolicy for SlowApply {
    fn shares(&self, _partner: &OrgId, _object: &Object) -> bool {
        true
    }
    fn incoming(
        &self,
        _partner: &OrgId,
        _change: &orgsync_protocol::model::Change,
    ) -> crate::policy::Incoming {
        if !self.begun.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.applying.notify_one();
            std::thread::sleep(self.first);
        }
        crate::policy::Incoming::Apply
    }
    fn shares_everything(&self, _partner: &OrgId) -> bool {
        true
    }
}

/// Issue 17: a stop while an apply runs and thousands of frames are still
/// arriving. The readers fill the bounded events channel the driver no
/// longer reads; the applier then reports into it. The stop awaited the
/// applier without draining the channel and so waited forever (now, past
/// the deadline, it would abort the partner task, and the report says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_during_an_apply_with_a_backlog_arriving_is_clean() {
    let (a, b) = (Instance::new(), Instance::new());
    let (sa, sb) = (a.store(), b.store());
    let n = 5_000u64;
    for chunk in 0..n / 500 {
        sa.write(
            (0..500)
                .map(|i| {
                    Edit::new(
                        ObjectId::new_v7(1_700_000_000_000 + chunk * 500 + i),
                        Kind::Contact,
                    )
                    .set_std("first_name", Value::Text(format!("C{chunk}-{i}")))
                })
                .collect(),
        )
        .await
        .unwrap();
    }
    let (ta, tb) = (a.bind(), b.bind());
    let (addr_a, addr_b) = (ta.local_addr().unwrap(), tb.local_addr().unwrap());
    // One change per batch: the backlog is thousands of frames, sent
    // without waiting for B (its unacked window holds all of them).
    let one_per_batch = EngineOptions {
        max_batch_changes: 1,
        ..Instance::options()
    };
    let ea = a.start_with(&sa, ta, &[(&b, Some(addr_b))], one_per_batch);
    let applying = Arc::new(tokio::sync::Notify::new());
    let eb = b.start_with_policy(
        &sb,
        tb,
        &[(&a, Some(addr_a))],
        Instance::options(),
        Arc::new(SlowApply {
            first: Duration::from_millis(500),
            applying: applying.clone(),
            begun: Default::default(),
        }),
    );
    // The first apply has begun (and takes half a second) while A's
    // frames pour in: stop B now.
    tokio::time::timeout(DEADLINE, applying.notified())
        .await
        .expect("an apply begins");
    let report = eb.stop().await;
    let applied = sb.cursor(&a.org).unwrap().applied_from_peer;
    assert!(applied < n, "everything was applied: nothing was in flight");
    assert!(report.is_clean(), "{report:?}");
    assert!(report.elapsed < Duration::from_secs(5), "{report:?}");
    assert!(ea.stop().await.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_bytes_count_the_connection_and_survive_its_close() {
    let (a, b) = (Instance::new(), Instance::new());
    let (sa, sb) = (a.store(), b.store());
    let (ta, tb) = (a.bind(), b.bind());
    let addr_b = tb.local_addr().unwrap();
    let options = Instance::options();
    let m = options.metrics.clone();
    let ea = a.start_with(&sa, ta, &[(&b, Some(addr_b))], options);
    let eb = b.start(&sb, tb, &[(&a, None)]);
    let edits = (0..200).map(|i| contact(&format!("q{i}"))).collect();
    sa.write(edits).await.unwrap();
    wait_acked(&ea, &b.org, sa.log_head()).await;
    let payload = m.bytes_sent.load(std::sync::atomic::Ordering::Relaxed);
    let (sent, received) = m.quic.totals();
    // UDP carries the sealed payload plus QUIC's own headers and acks.
    assert!(payload > 200 * 20, "payload {payload}");
    assert!(sent > payload, "UDP {sent} B for {payload} B of payload");
    assert!(received > 0);
    let text = m.render(&[]);
    assert!(text.contains(&format!(
        "orgsync_quic_bytes_sent_total {}",
        m.quic.totals().0
    )));
    assert!(ea.stop().await.is_clean());
    assert!(eb.stop().await.is_clean());
    // Closed connections keep their count.
    let (after, _) = m.quic.totals();
    assert!(after >= sent, "{after} < {sent} after the close");
    eprintln!("quic: {sent} UDP bytes sent for {payload} payload bytes (200 contacts)");
}

/// A policy whose partner announces every object on a governance frame
/// that is received but not handled until the test says so: incoming
/// changes are held while unannounced and applied once announced.
struct PendingAnnouncement {
    announced: std::sync::atomic::AtomicBool,
    handled: tokio::sync::watch::Sender<u64>,
    asked: Arc<tokio::sync::Notify>,
}

impl PendingAnnouncement {
    fn new() -> Arc<PendingAnnouncement> {
        Arc::new(PendingAnnouncement {
            announced: Default::default(),
            handled: tokio::sync::watch::channel(0).0,
            asked: Arc::default(),
        })
    }

    /// The frame is handled: what it announced is now known.
    fn handle(&self) {
        self.announced
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.handled.send_replace(1);
    }
}

impl SharePolicy for PendingAnnouncement {
    fn shares(&self, _partner: &OrgId, _object: &Object) -> bool {
        true
    }
    fn incoming(
        &self,
        _partner: &OrgId,
        _change: &orgsync_protocol::model::Change,
    ) -> crate::policy::Incoming {
        if self.announced.load(std::sync::atomic::Ordering::SeqCst) {
            crate::policy::Incoming::Apply
        } else {
            crate::policy::Incoming::Hold
        }
    }
    fn shares_everything(&self, _partner: &OrgId) -> bool {
        true
    }
    fn pending_announcements(
        &self,
        _partner: &OrgId,
        changes: &[orgsync_protocol::model::SequencedChange],
    ) -> Option<crate::policy::AnnouncementWait> {
        self.asked.notify_one();
        (*self.handled.borrow() < 1).then(|| crate::policy::AnnouncementWait {
            handled: self.handled.subscribe(),
            until: 1,
            changes: changes.len(),
        })
    }
}

/// Three contacts of A on their way to B, whose policy answers that a
/// received frame announcing them is not handled yet.
struct AnnouncedPair {
    a: Instance,
    ea: Engine,
    _b: Instance,
    sb: Store,
    eb: Engine,
    policy: Arc<PendingAnnouncement>,
    ids: Vec<ObjectId>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl AnnouncedPair {
    /// Starts both; returns once B's applier has asked about the batch.
    async fn start() -> AnnouncedPair {
        let (a, b) = (Instance::new(), Instance::new());
        let (sa, sb) = (a.store(), b.store());
        let edits: Vec<Edit> = (0..3).map(|i| contact(&format!("c{i}"))).collect();
        let ids = edits.iter().map(|e| e.id).collect();
        sa.write(edits).await.unwrap();
        let (ta, tb) = (a.bind(), b.bind());
        let (addr_a, addr_b) = (ta.local_addr().unwrap(), tb.local_addr().unwrap());
        let ea = a.start(&sa, ta, &[(&b, Some(addr_b))]);
        let policy = PendingAnnouncement::new();
        let options = Instance::options();
        let metrics = options.metrics.clone();
        let eb = b.start_with_policy(&sb, tb, &[(&a, Some(addr_a))], options, policy.clone());
        tokio::time::timeout(DEADLINE, policy.asked.notified())
            .await
            .expect("B's applier asks about the batch");
        AnnouncedPair {
            a,
            ea,
            _b: b,
            sb,
            eb,
            policy,
            ids,
            metrics,
        }
    }

    fn count(c: &std::sync::atomic::AtomicU64) -> u64 {
        c.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn stop(self) {
        assert!(self.eb.stop().await.is_clean());
        assert!(self.ea.stop().await.is_clean());
    }
}

/// Issue 16 item 5: a batch whose objects' announcement was received but
/// not yet handled waits for it and is then applied, once, instead of
/// being held in the inbox (and approved from it by a second write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waits_for_its_received_announcement_and_applies_once() {
    let p = AnnouncedPair::start().await;
    let (sb, a) = (&p.sb, &p.a);
    // Not synchronisation: a window in which nothing may happen.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sb.cursor(&a.org).unwrap().applied_from_peer, 0, "waits");
    assert!(sb.inbox(&a.org).unwrap().is_empty(), "nothing held");
    let waited = std::time::Instant::now();
    p.policy.handle();
    tokio::time::timeout(DEADLINE, async {
        while sb.cursor(&a.org).unwrap().applied_from_peer < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the batch is applied once the announcement is handled");
    for id in &p.ids {
        assert!(sb.get(*id).unwrap().is_some(), "{id} applied");
    }
    assert!(sb.inbox(&a.org).unwrap().is_empty(), "nothing held");
    let m = &p.metrics;
    assert_eq!(AnnouncedPair::count(&m.changes_waited_for_announcement), 3);
    assert_eq!(AnnouncedPair::count(&m.announcement_waits_expired), 0);
    eprintln!(
        "announcement wait: 3 changes waited, applied {} ms after the announcement was handled, none held",
        waited.elapsed().as_millis()
    );
    p.stop().await;
}

/// A partner whose announcement is never handled (or never comes) holds
/// back its own batch for `ANNOUNCEMENT_WAIT` at most: the batch is then
/// decided as things stand (held here), and the wait counted as expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_an_announcement_ends_at_its_deadline() {
    let started = std::time::Instant::now();
    let p = AnnouncedPair::start().await;
    let (sb, a) = (&p.sb, &p.a);
    tokio::time::timeout(connection::ANNOUNCEMENT_WAIT + DEADLINE, async {
        while sb.inbox(&a.org).unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the batch is decided (held) after the wait");
    assert_eq!(
        AnnouncedPair::count(&p.metrics.announcement_waits_expired),
        1
    );
    assert!(started.elapsed() >= connection::ANNOUNCEMENT_WAIT);
    assert!(
        p.ids.iter().all(|id| sb.get(*id).unwrap().is_none()),
        "held, not applied"
    );
    eprintln!(
        "announcement wait expired: 3 changes held after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    p.stop().await;
}
