//! Raw baselines measured in the same run as the scenarios: what sled,
//! quinn and the AEAD reach on their own on this machine, so that orgsync's
//! figures can be read as ratios rather than absolute times that drift.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use quinn::crypto::rustls::QuicClientConfig;
use rand_core::{OsRng, RngCore};

/// Size of a typical contact record on the wire and on disk.
pub const RECORD_LEN: usize = 262;

/// Raw sled group commit: `records` 262-byte values under random 16-byte
/// keys, written with `apply_batch` in batches of `batch`, one flush per
/// batch. Returns records per second.
pub fn sled_group_commit(records: usize, batch: usize, cache_capacity: u64) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(cache_capacity)
        .flush_every_ms(None)
        .open()
        .context("opening sled")?;
    let tree = db.open_tree("objects")?;
    let mut value = vec![0u8; RECORD_LEN];
    OsRng.fill_bytes(&mut value);
    let start = Instant::now();
    let mut written = 0;
    while written < records {
        let mut b = sled::Batch::default();
        for _ in 0..batch.min(records - written) {
            let mut key = [0u8; 16];
            OsRng.fill_bytes(&mut key);
            b.insert(&key, value.as_slice());
            written += 1;
        }
        tree.apply_batch(b)?;
        db.flush()?;
    }
    Ok(records as f64 / start.elapsed().as_secs_f64())
}

/// Raw AEAD: XChaCha20-Poly1305 seal then open of `len`-byte messages for
/// about `budget`. Returns megabytes (10^6) per second of plaintext.
pub fn aead_throughput(len: usize, budget: Duration) -> f64 {
    let cipher = XChaCha20Poly1305::new(&[7u8; 32].into());
    let nonce = XNonce::from([9u8; 24]);
    let mut buf = vec![0u8; len];
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed() < budget {
        for _ in 0..16 {
            // Sealing and opening a buffer we just sealed with the same key
            // cannot fail: the tag matches by construction.
            let tag = cipher
                .encrypt_in_place_detached(&nonce, b"", &mut buf)
                .expect("seal");
            cipher
                .decrypt_in_place_detached(&nonce, b"", &mut buf, &tag)
                .expect("open");
            bytes += len as u64;
        }
    }
    bytes as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// A connected pair of quinn endpoints on loopback (server side accepted).
pub struct QuicPair {
    /// The client's connection.
    pub client: quinn::Connection,
    /// The server's connection.
    pub server: quinn::Connection,
    endpoints: [quinn::Endpoint; 2],
}

impl QuicPair {
    /// Two endpoints on 127.0.0.1 with a self-signed certificate, the same
    /// flow-control windows for both, connected.
    pub async fn connect() -> Result<QuicPair> {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
        let cert_der = rustls::pki_types::CertificateDer::from(cert.cert);
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![cert_der.clone()], key.into())?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)?,
        ));
        server_config.transport_config(transport());
        let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse()?)?;

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert_der)?;
        let client_tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client_config =
            quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_tls)?));
        client_config.transport_config(transport());
        let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        client.set_default_client_config(client_config);

        let addr = server.local_addr()?;
        let accept = async {
            let incoming = server.accept().await.context("server endpoint closed")?;
            anyhow::Ok(incoming.await?)
        };
        let connecting = client.connect(addr, "localhost")?;
        let (client_conn, server_conn) = tokio::join!(connecting, accept);
        let (client_conn, server_conn) = (client_conn?, server_conn?);
        Ok(QuicPair {
            client: client_conn,
            server: server_conn,
            endpoints: [server, client],
        })
    }

    /// Closes both connections and waits for the endpoints to go idle.
    pub async fn close(self) {
        self.client.close(0u32.into(), b"done");
        for e in &self.endpoints {
            e.wait_idle().await;
        }
    }
}

/// Flow-control windows large enough for loopback bulk transfer.
pub fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window((16u32 << 20).into());
    t.receive_window((64u32 << 20).into());
    t.send_window(64 << 20);
    Arc::new(t)
}

/// Raw quinn: `total` bytes on one stream, written in 1 MiB pieces, until
/// the receiver has read the last byte and said so. Returns MB/s.
pub async fn quinn_stream_throughput(total: usize) -> Result<f64> {
    quinn_transfer(total, None).await
}

/// Raw quinn + AEAD: like [`quinn_stream_throughput`] but each `chunk`-byte
/// piece is sealed by the sender and opened by the receiver (the floor for
/// résumé transfers). Returns MB/s of plaintext.
pub async fn quinn_aead_throughput(total: usize, chunk: usize) -> Result<f64> {
    quinn_transfer(total, Some(chunk)).await
}

async fn quinn_transfer(total: usize, aead_chunk: Option<usize>) -> Result<f64> {
    let pair = QuicPair::connect().await?;
    let piece = aead_chunk.unwrap_or(1 << 20);
    let receiver = {
        let conn = pair.server.clone();
        tokio::spawn(async move {
            let (mut send, mut recv) = conn.accept_bi().await?;
            let cipher = XChaCha20Poly1305::new(&[7u8; 32].into());
            let nonce = XNonce::from([9u8; 24]);
            let mut buf = vec![0u8; piece + 16];
            let mut got = 0usize;
            while got < total {
                let want = (total - got).min(piece);
                match aead_chunk {
                    Some(_) => {
                        recv.read_exact(&mut buf[..want + 16]).await?;
                        let (data, tag) = buf[..want + 16].split_at_mut(want);
                        let tag = chacha20poly1305::Tag::from_slice(tag);
                        cipher
                            .decrypt_in_place_detached(&nonce, b"", data, tag)
                            .map_err(|_| anyhow::anyhow!("tag mismatch"))?;
                    }
                    None => recv.read_exact(&mut buf[..want]).await?,
                }
                got += want;
            }
            send.write_all(b"k").await?;
            send.finish()?;
            anyhow::Ok(())
        })
    };
    let cipher = XChaCha20Poly1305::new(&[7u8; 32].into());
    let nonce = XNonce::from([9u8; 24]);
    let mut data = vec![0u8; piece + 16];
    OsRng.fill_bytes(&mut data);
    let start = Instant::now();
    let (mut send, mut recv) = pair.client.open_bi().await?;
    let mut sent = 0usize;
    while sent < total {
        let n = (total - sent).min(piece);
        match aead_chunk {
            Some(_) => {
                let tag = cipher
                    .encrypt_in_place_detached(&nonce, b"", &mut data[..n])
                    .map_err(|_| anyhow::anyhow!("seal failed"))?;
                data[n..n + 16].copy_from_slice(&tag);
                send.write_all(&data[..n + 16]).await?;
            }
            None => send.write_all(&data[..n]).await?,
        }
        sent += n;
    }
    send.finish()?;
    let mut ack = [0u8; 1];
    recv.read_exact(&mut ack).await?;
    let secs = start.elapsed().as_secs_f64();
    receiver.await??;
    pair.close().await;
    Ok(total as f64 / secs / 1e6)
}

/// Raw quinn small-message round trip on a long-lived bidirectional stream:
/// `n` 8-byte ping-pongs. Returns (p50, p99) in microseconds.
pub async fn quinn_round_trip(n: usize) -> Result<(f64, f64)> {
    let pair = QuicPair::connect().await?;
    let echo = {
        let conn = pair.server.clone();
        tokio::spawn(async move {
            let (mut send, mut recv) = conn.accept_bi().await?;
            let mut buf = [0u8; 8];
            while recv.read_exact(&mut buf).await.is_ok() {
                send.write_all(&buf).await?;
            }
            anyhow::Ok(())
        })
    };
    let (mut send, mut recv) = pair.client.open_bi().await?;
    let mut samples = Vec::with_capacity(n);
    let mut buf = [0u8; 8];
    for i in 0..n as u64 + 20 {
        let t = Instant::now();
        send.write_all(&i.to_le_bytes()).await?;
        recv.read_exact(&mut buf).await?;
        // The first round trips warm up congestion control and caches.
        if i >= 20 {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    send.finish()?;
    // The echo task ends when our stream finishes.
    let _ = echo.await;
    pair.close().await;
    Ok((
        percentile(&mut samples, 0.50),
        percentile(&mut samples, 0.99),
    ))
}

/// The `q` quantile (0..=1) of `samples` (sorted in place); 0 when empty.
pub fn percentile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let idx = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[idx.min(samples.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_sample() {
        let mut s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut s, 0.5), 51.0);
        assert_eq!(percentile(&mut s, 0.99), 99.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
    }

    #[test]
    fn sled_baseline_writes_and_reports_a_rate() {
        let rate = sled_group_commit(2_000, 1_000, 8 << 20).unwrap();
        assert!(rate.is_finite() && rate > 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quinn_baselines_run_at_a_tiny_size() {
        let mbps = quinn_stream_throughput(1 << 20).await.unwrap();
        assert!(mbps > 0.0);
        let mbps = quinn_aead_throughput(1 << 20, 64 << 10).await.unwrap();
        assert!(mbps > 0.0);
        let (p50, p99) = quinn_round_trip(50).await.unwrap();
        assert!(p50 > 0.0 && p99 >= p50);
    }
}
