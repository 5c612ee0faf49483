//! QUIC transport: one quinn endpoint per instance, mutual TLS with pinned
//! partner certificates, framed streams.
//!
//! - [`Transport::bind`] opens the endpoint on the configured address (UDP
//!   socket buffers enlarged: loopback drops packets with the 208 KiB
//!   default under a slow receiver).
//! - [`Transport::connect`] dials a partner and accepts only that partner's
//!   pinned certificate; [`Transport::next_incoming`] yields inbound
//!   handshakes, each to be completed with [`Handshake::complete`] (spawn
//!   one task per handshake so a slow peer cannot hold up others).
//! - Every refused certificate (unknown or revoked) fails the handshake,
//!   is logged with its fingerprint and address and is listed in
//!   [`Trust::pending`].
//! - Duplicate connections (both sides dialed) are resolved with
//!   [`preferred`]: the connection dialed by the smaller OrgId wins, on
//!   both sides; the other is closed with [`CLOSE_DUPLICATE`].

mod backoff;
mod frames;
mod tls;
mod trust;

pub use backoff::Backoff;
pub use frames::{FrameReader, FrameWriter};
pub use tls::LocalIdentity;
pub use trust::{
    PendingOutcome, PendingPeer, Trust, TrustedPeer, Verdict, MAX_PENDING, MAX_PENDING_PER_SOURCE,
};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use orgsync_protocol::codec::CodecError;
use orgsync_protocol::identity::Fingerprint;
use orgsync_protocol::model::OrgId;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::VarInt;

use tls::PinnedVerifier;

/// Close code: orderly close (shutdown, session over).
pub const CLOSE_NORMAL: VarInt = VarInt::from_u32(0);
/// Close code: another connection to the same partner is kept.
pub const CLOSE_DUPLICATE: VarInt = VarInt::from_u32(1);
/// Close code: the daemon is shutting down.
pub const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(2);
/// Close code: the peer broke the protocol (malformed frame, session error).
pub const CLOSE_PROTOCOL: VarInt = VarInt::from_u32(3);
/// Close code: the partner was revoked.
pub const CLOSE_REVOKED: VarInt = VarInt::from_u32(4);

/// Name put in the TLS SNI; certificates are pinned, so it is not checked.
const SERVER_NAME: &str = "orgsync";
/// UDP socket buffer size asked of the kernel (it may grant less).
const SOCKET_BUFFER: usize = 4 << 20;

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The UDP socket could not be set up.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS configuration was refused (bad certificate or key).
    #[error("TLS setup ({what}): {source}")]
    Tls {
        /// What was being configured.
        what: &'static str,
        /// rustls's error.
        source: rustls::Error,
    },
    /// The TLS configuration is not usable for QUIC.
    #[error("QUIC crypto setup: {0}")]
    QuicCrypto(String),
    /// Dialing could not start (e.g. bad address).
    #[error("cannot dial {addr}: {source}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// quinn's error.
        source: quinn::ConnectError,
    },
    /// The connection failed or was closed (handshake refusals included).
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The peer's certificate is not (or no longer) a paired partner's.
    #[error("peer with certificate {fingerprint} is not a paired partner")]
    NotPaired {
        /// Its fingerprint.
        fingerprint: Fingerprint,
    },
    /// The connection carries no certificate (cannot happen with our configs).
    #[error("the peer presented no certificate")]
    NoCertificate,
    /// A stream read failed.
    #[error("stream read: {0}")]
    Read(#[from] quinn::ReadError),
    /// A stream write failed.
    #[error("stream write: {0}")]
    Write(#[from] quinn::WriteError),
    /// A frame was malformed, oversized, or could not be encoded.
    #[error("frame: {0}")]
    Frame(CodecError),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the incomplete frame.
        buffered: usize,
    },
    /// The endpoint is closed.
    #[error("the endpoint is closed")]
    Closed,
}

/// Settings of [`Transport::bind`].
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// This instance's certificate and key.
    pub identity: LocalIdentity,
    /// This instance's organisation.
    pub local_org: OrgId,
    /// QUIC idle timeout (the session has its own, longer-grained one).
    pub idle_timeout: Duration,
    /// QUIC keep-alive interval (keeps NAT bindings open).
    pub keep_alive: Duration,
}

impl TransportOptions {
    /// Options with the default timeouts.
    pub fn new(listen: SocketAddr, identity: LocalIdentity, local_org: OrgId) -> Self {
        TransportOptions {
            listen,
            identity,
            local_org,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
        }
    }
}

/// An authenticated connection to a paired partner.
#[derive(Clone, Debug)]
pub struct PeerConnection {
    /// The partner, as pinned when the handshake completed.
    pub partner: TrustedPeer,
    /// The QUIC connection.
    pub connection: quinn::Connection,
    /// True when this instance dialed it.
    pub dialed_by_us: bool,
}

impl PeerConnection {
    /// Which organisation dialed this connection.
    pub fn dialer(&self, local_org: &OrgId) -> OrgId {
        if self.dialed_by_us {
            *local_org
        } else {
            self.partner.org
        }
    }
}

/// Of two live connections to the same partner, whether `candidate` should
/// replace `current`. Both sides compute the same answer: keep the
/// connection dialed by the smaller OrgId; if both were dialed by the same
/// side (a redial), keep the newer one.
pub fn preferred(local_org: &OrgId, current: &PeerConnection, candidate: &PeerConnection) -> bool {
    let (a, b) = (current.dialer(local_org), candidate.dialer(local_org));
    if a == b {
        true
    } else {
        b < a
    }
}

/// The QUIC endpoint of one instance. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Transport {
    endpoint: quinn::Endpoint,
    trust: Trust,
    identity: LocalIdentity,
    local_org: OrgId,
    transport_config: Arc<quinn::TransportConfig>,
}

fn quic_transport_config(opts: &TransportOptions) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // Idle timeouts above 2^62 ms are impossible; ours come from config.
    t.max_idle_timeout(quinn::IdleTimeout::try_from(opts.idle_timeout).ok());
    t.keep_alive_interval(Some(opts.keep_alive));
    t.max_concurrent_bidi_streams(VarInt::from_u32(4));
    // The changes stream plus blob transfers (the session caps those at 16).
    t.max_concurrent_uni_streams(VarInt::from_u32(64));
    t.stream_receive_window(VarInt::from_u32(8 << 20));
    t.receive_window(VarInt::from_u32(32 << 20));
    t.send_window(32 << 20);
    t
}

fn bind_socket(addr: SocketAddr) -> Result<std::net::UdpSocket, TransportError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| TransportError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    if addr.is_ipv6() {
        // Accept IPv4-mapped peers on [::] like most daemons do; best effort.
        let _ = socket.set_only_v6(false);
    }
    for (what, r) in [
        ("receive", socket.set_recv_buffer_size(SOCKET_BUFFER)),
        ("send", socket.set_send_buffer_size(SOCKET_BUFFER)),
    ] {
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not enlarge the UDP {what} buffer");
        }
    }
    socket.bind(&addr.into()).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    Ok(socket.into())
}

impl Transport {
    /// Binds the endpoint. Must be called inside a tokio runtime.
    pub fn bind(opts: TransportOptions, trust: Trust) -> Result<Transport, TransportError> {
        let transport_config = Arc::new(quic_transport_config(&opts));
        let socket = bind_socket(opts.listen)?;
        let transport = Transport {
            endpoint: quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                None,
                socket,
                Arc::new(quinn::TokioRuntime),
            )
            .map_err(|source| TransportError::Bind {
                addr: opts.listen,
                source,
            })?,
            trust,
            identity: opts.identity,
            local_org: opts.local_org,
            transport_config,
        };
        // Incoming connections need a server config on the endpoint; each
        // one is then accepted with its own (see `next_incoming`).
        let base = transport.server_config(None)?;
        transport.endpoint.set_server_config(Some(base));
        Ok(transport)
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.endpoint
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })
    }

    /// The trust state shared with the verifiers.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// This instance's organisation.
    pub fn local_org(&self) -> OrgId {
        self.local_org
    }

    fn server_config(
        &self,
        remote: Option<SocketAddr>,
    ) -> Result<quinn::ServerConfig, TransportError> {
        let verifier = Arc::new(PinnedVerifier::new(self.trust.clone(), remote, None));
        let tls = tls::server_config(&self.identity, verifier)?;
        let crypto = QuicServerConfig::try_from(tls)
            .map_err(|e| TransportError::QuicCrypto(e.to_string()))?;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        cfg.transport_config(self.transport_config.clone());
        Ok(cfg)
    }

    /// Dials `partner` at `addr`; succeeds only if the peer presents that
    /// partner's pinned certificate and accepts ours.
    pub async fn connect(
        &self,
        partner: OrgId,
        addr: SocketAddr,
    ) -> Result<PeerConnection, TransportError> {
        let verifier = Arc::new(PinnedVerifier::new(
            self.trust.clone(),
            Some(addr),
            Some(partner),
        ));
        let tls = tls::client_config(&self.identity, verifier)?;
        let crypto = QuicClientConfig::try_from(tls)
            .map_err(|e| TransportError::QuicCrypto(e.to_string()))?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
        cfg.transport_config(self.transport_config.clone());
        let connecting = self
            .endpoint
            .connect_with(cfg, addr, SERVER_NAME)
            .map_err(|source| TransportError::Connect { addr, source })?;
        let connection = connecting.await?;
        self.identify(connection, true)
    }

    /// The next inbound connection attempt, or `None` once the endpoint is
    /// closed. Complete it with [`Handshake::complete`].
    pub async fn next_incoming(&self) -> Option<Handshake> {
        let incoming = self.endpoint.accept().await?;
        Some(Handshake {
            incoming,
            transport: self.clone(),
        })
    }

    fn identify(
        &self,
        connection: quinn::Connection,
        dialed_by_us: bool,
    ) -> Result<PeerConnection, TransportError> {
        let cert = connection
            .peer_identity()
            .and_then(|id| {
                id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()))
            .ok_or(TransportError::NoCertificate)?;
        let fingerprint = Fingerprint::of_certificate(&cert);
        match self.trust.check(&fingerprint) {
            Verdict::Paired(partner) => Ok(PeerConnection {
                partner,
                connection,
                dialed_by_us,
            }),
            // Revoked between the verifier and here.
            _ => {
                connection.close(CLOSE_REVOKED, b"not paired");
                Err(TransportError::NotPaired { fingerprint })
            }
        }
    }

    /// Closes every connection with [`CLOSE_SHUTDOWN`] and stops
    /// accepting new ones (handshakes that arrive later are refused).
    pub fn close(&self) {
        self.endpoint.close(CLOSE_SHUTDOWN, b"shutting down");
    }

    /// [`Transport::close`], then waits (at most `grace`) for the peers to
    /// be told.
    pub async fn shutdown(&self, grace: Duration) {
        self.close();
        // Past the grace period the peers learn it from their idle timeout.
        let _ = tokio::time::timeout(grace, self.wait_idle()).await;
    }

    /// Connections not yet drained (closed ones drain for three probe
    /// timeouts after [`Transport::close`]).
    pub fn open_connections(&self) -> usize {
        self.endpoint.open_connections()
    }

    /// Frees the listen port at once after [`Transport::close`], while
    /// closed connections still drain: the endpoint moves to a throwaway
    /// socket on an ephemeral port of the same address. (A closed QUIC
    /// connection is kept for three probe timeouts, and the endpoint's
    /// socket with it: seconds, tens of seconds when round trips were slow,
    /// during which an instance restarted in the same process could not
    /// bind its port.)
    pub fn release_port(&self) -> std::io::Result<()> {
        let ip = self.endpoint.local_addr()?.ip();
        // Twice: quinn keeps listening on the socket it moved from until
        // traffic arrives on the new one, which never happens once closed;
        // the second move lets go of the listen port.
        for _ in 0..2 {
            let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
            self.endpoint.rebind(socket)?;
        }
        Ok(())
    }

    /// Resolves once every connection is closed and its peer told (or gave
    /// up). Not bounded by itself: a connection closed in the middle of its
    /// handshake drains for three probe timeouts, seconds on a fresh path;
    /// callers put a deadline on it.
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

/// An inbound connection attempt.
pub struct Handshake {
    incoming: quinn::Incoming,
    transport: Transport,
}

impl Handshake {
    /// Where the attempt comes from.
    pub fn remote_address(&self) -> SocketAddr {
        self.incoming.remote_address()
    }

    /// Runs the TLS handshake; fails for a peer that is not a paired partner
    /// (which is then listed as pending).
    pub async fn complete(self) -> Result<PeerConnection, TransportError> {
        let remote = self.incoming.remote_address();
        let cfg = self.transport.server_config(Some(remote))?;
        let connecting = self.incoming.accept_with(Arc::new(cfg))?;
        let connection = connecting.await?;
        self.transport.identify(connection, false)
    }
}

#[cfg(test)]
mod tests;
