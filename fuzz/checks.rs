//! The invariants every fuzz target checks, one function per decoder that
//! sees network or file input. Shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`, which only call these) and by the CI test
//! `tests/e2e/fuzz_corpus.rs`, which runs each over its seed corpus in
//! `fuzz/corpus/<target>/` and over arbitrary bytes from proptest.
//!
//! Each function panics when an invariant breaks; decoding errors are
//! expected and fine.

#![allow(dead_code)] // each fuzz target uses one function

use std::path::Path;
use std::sync::OnceLock;

use orgsync_protocol::codec::{self, decode_frame, encode_frame, FrameDecoder};
use orgsync_protocol::envelope::{
    open, seal, EnvelopeHeader, ReplayGuard, SealedEnvelope, StreamKind, HEADER_LEN, NONCE_LEN,
};
use orgsync_protocol::identity::{OrgKeyPair, PairKeys};
use orgsync_protocol::wire::{decode_blob_chunk, decode_change_batch, Message};

/// A decoder's check: panics when an invariant breaks.
pub type Check = fn(&[u8]);

/// Every target: its name (the corpus folder) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("frame_decode", frame_decode),
    ("envelope_open", envelope_open),
    ("bundle_parse", bundle_parse),
    ("pairing_message", pairing_message),
    ("config_parse", config_parse),
    ("import_line", import_line),
    ("backup_archive", backup_archive),
];

// ---------------------------------------------------------------------------
// frame_decode
// ---------------------------------------------------------------------------

/// Messages of a whole buffer decoded frame by frame, and the error that
/// ended it (None if the buffer ended cleanly or on a partial frame).
fn one_shot(mut rest: &[u8]) -> (Vec<Message>, Option<codec::CodecError>) {
    let mut out = Vec::new();
    loop {
        match decode_frame(rest) {
            Ok(Some((msg, used))) => {
                assert!(used > 0 && used <= rest.len(), "bad consumed length {used}");
                // A decoded message is valid, so it can be sent again and
                // reads back identically.
                let again = encode_frame(&msg).expect("valid message re-encodes");
                let (back, n) = decode_frame(&again)
                    .expect("re-decodes")
                    .expect("whole frame");
                assert_eq!(back, msg);
                assert_eq!(n, again.len());
                out.push(msg);
                rest = &rest[used..];
            }
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

fn streamed(seed: u8, mut rest: &[u8]) -> (Vec<Message>, Option<codec::CodecError>) {
    let mut dec = FrameDecoder::new();
    let mut out = Vec::new();
    let mut state = u32::from(seed) | 1;
    while !rest.is_empty() {
        // xorshift: cheap, deterministic chunk sizes from 1 to 64 bytes.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize % 64 + 1).min(rest.len());
        if let Err(e) = dec.push(&rest[..n]) {
            return (out, Some(e));
        }
        rest = &rest[n..];
        loop {
            match dec.next_message() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

/// Fuzz the frame decoder and the envelope-plaintext decoders with arbitrary
/// bytes: nothing may panic, and decoding a stream in arbitrary pieces must
/// give exactly what decoding it in one piece gives.
///
/// Input layout: the first byte seeds the chunk sizes used to feed the
/// streaming decoder; the rest is the byte stream.
pub fn frame_decode(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };

    let (whole, whole_err) = one_shot(stream);
    let (pieces, pieces_err) = streamed(seed, stream);
    assert_eq!(
        whole, pieces,
        "streamed decoding differs from one-shot decoding"
    );
    // The streaming decoder sees a bad header as soon as it arrives, the
    // one-shot decoder too; both must agree on whether the stream failed
    // and why.
    assert_eq!(whole_err, pieces_err);

    // The same bytes as an opened envelope's plaintext.
    if let Ok(batch) = decode_change_batch(stream) {
        assert_eq!(batch.validate(), Ok(()));
        // A sender that puts encoded changes (stored objects) into a batch
        // without re-encoding it produces the same bytes as encoding the
        // batch (protocol 1 and 2 alike).
        let entries: Vec<(u64, Vec<u8>)> = batch
            .changes
            .iter()
            .map(|c| (c.seq, codec::encode(&c.change).expect("change encodes")))
            .collect();
        let mut from_encoded = Vec::new();
        codec::encode_change_batch_into(&entries, batch.log_head, &mut from_encoded)
            .expect("batch from encoded changes");
        assert_eq!(
            from_encoded,
            codec::encode(&batch).expect("batch encodes"),
            "batch from encoded changes differs from the encoded batch"
        );
    }
    if let Ok(chunk) = decode_blob_chunk(stream) {
        assert_eq!(chunk.validate(), Ok(()));
    }
}

// ---------------------------------------------------------------------------
// envelope_open
// ---------------------------------------------------------------------------

/// (sender's keys, receiver's keys), derived once: X25519 per input would
/// slow the fuzzer down a hundredfold.
fn keys() -> &'static (PairKeys, PairKeys) {
    static KEYS: OnceLock<(PairKeys, PairKeys)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let a = OrgKeyPair::from_secret_bytes(&[1; 32]);
        let b = OrgKeyPair::from_secret_bytes(&[2; 32]);
        let (ida, idb) = (a.public().org_id(), b.public().org_id());
        (
            a.pair_keys(ida, idb, &b.public(), 1)
                .expect("distinct fixed keys"),
            b.pair_keys(idb, ida, &a.public(), 1)
                .expect("distinct fixed keys"),
        )
    })
}

/// Splits `mode || header || nonce || ciphertext`, zero-padding short input.
fn split(data: &[u8]) -> (u8, [u8; HEADER_LEN], [u8; NONCE_LEN], &[u8]) {
    let mode = data.first().copied().unwrap_or(0);
    let (header, nonce, body) = split_envelope(data.get(1..).unwrap_or(&[]));
    (mode, header, nonce, body)
}

/// Splits `header || nonce || ciphertext`, zero-padding short input.
fn split_envelope(data: &[u8]) -> ([u8; HEADER_LEN], [u8; NONCE_LEN], &[u8]) {
    let mut header = [0u8; HEADER_LEN];
    let h = data.len().min(HEADER_LEN);
    header[..h].copy_from_slice(&data[..h]);
    let rest = &data[h..];
    let mut nonce = [0u8; NONCE_LEN];
    let n = rest.len().min(NONCE_LEN);
    nonce[..n].copy_from_slice(&rest[..n]);
    (header, nonce, &rest[n..])
}

/// Fuzzes envelope opening with fixed test keys.
///
/// Input layout (the target's own split, independent of the wire codec):
/// byte 0 = mode, then an 86-byte header in `EnvelopeHeader::to_bytes`
/// layout, a 24-byte nonce, and the rest as ciphertext. Short inputs are
/// zero-padded so every input is exercised.
///
/// Modes (bits of byte 0):
/// - bit 0: overwrite sender, receiver, epoch and key id with the right
///   values, so the fuzzer reaches the length and AEAD checks without
///   having to guess 76 magic bytes;
/// - bit 1: instead, seal the ciphertext part as plaintext, check it opens
///   to the same bytes, then flip the byte chosen by the header's first two
///   bytes and check the result is refused.
///
/// Invariants checked: nothing panics; arbitrary bytes never open; a genuine
/// envelope opens; any single-byte change is refused.
pub fn envelope_open(data: &[u8]) {
    let (sender, receiver) = keys();
    let (mode, header_bytes, nonce, body) = split(data);

    if mode & 2 != 0 {
        let stream = if mode & 4 != 0 {
            StreamKind::Blob
        } else {
            StreamKind::Changes
        };
        let seq = u64::from_be_bytes(header_bytes[78..86].try_into().unwrap_or([0; 8]));
        let env = seal(sender, stream, seq, body);
        assert_eq!(
            open(receiver, &env).as_deref(),
            Ok(body),
            "genuine envelope refused"
        );
        // Flip one byte of header || nonce || ciphertext.
        let mut flat = env.header.to_bytes().to_vec();
        flat.extend_from_slice(&env.nonce);
        flat.extend_from_slice(&env.ciphertext);
        let at = usize::from(u16::from_be_bytes([header_bytes[0], header_bytes[1]])) % flat.len();
        flat[at] ^= header_bytes[2].max(1);
        let (h, n, c) = split_envelope(&flat);
        if let Ok(header) = EnvelopeHeader::from_bytes(&h) {
            let altered = SealedEnvelope {
                header,
                nonce: n,
                ciphertext: c.to_vec(),
            };
            assert!(
                open(receiver, &altered).is_err(),
                "altered envelope opened (byte {at})"
            );
        }
        return;
    }

    let Ok(mut header) = EnvelopeHeader::from_bytes(&header_bytes) else {
        return;
    };
    if mode & 1 != 0 {
        header.sender = sender.local;
        header.receiver = receiver.local;
        header.epoch = receiver.epoch;
        header.key_id = receiver.recv.key_id();
    }
    let env = SealedEnvelope {
        header,
        nonce,
        ciphertext: body.to_vec(),
    };
    let _ = ReplayGuard::new(u64::from(mode)).check(&env.header);
    // Forging a Poly1305 tag by chance has probability 2^-106.
    assert!(open(receiver, &env).is_err(), "arbitrary bytes opened");
}

// ---------------------------------------------------------------------------
// bundle_parse, pairing_message
// ---------------------------------------------------------------------------

/// Bundle parsing: arbitrary text (lossily decoded) must never panic, and
/// anything accepted must be valid and re-encode to a line that parses back
/// to the same bundle. A parsed rotation proof goes through the importer's
/// chain check from both anchors (a partner on file at epoch 0 with the
/// proof's base key, and an unknown account), which must not panic either;
/// a proof from the fuzzer that verifies from genesis must really start at
/// the genesis key of the bundle's account number.
pub fn bundle_parse(data: &[u8]) {
    use orgsync_protocol::bundle::Bundle;
    use orgsync_protocol::rotation::{verify_chain, Anchor};
    let text = String::from_utf8_lossy(data);
    if let Ok(bundle) = Bundle::parse(&text) {
        assert_eq!(
            bundle.validate(),
            Ok(()),
            "parse accepted an invalid bundle"
        );
        let line = bundle.to_line();
        assert_eq!(
            Bundle::parse(&line).as_ref(),
            Ok(&bundle),
            "round trip changed the bundle"
        );
        if let Some(chain) = &bundle.rotation {
            let check = |anchor: &Anchor| {
                verify_chain(
                    &bundle.org_id,
                    chain,
                    bundle.epoch,
                    &bundle.public_key,
                    &bundle.cert_fingerprint,
                    anchor,
                )
            };
            let base_epoch = chain.links.first().map_or(0, |l| l.epoch.saturating_sub(1));
            let _ = check(&Anchor::Known {
                epoch: base_epoch,
                key: chain.base_key,
            });
            if check(&Anchor::Genesis).is_ok() {
                assert_eq!(
                    chain.base_key.org_id(),
                    bundle.org_id,
                    "a proof verified from genesis without the account's genesis key"
                );
            }
        }
    }
}

/// Pairing messages (`orgsync-keytool invite`/`join`) arrive from an
/// unauthenticated peer: decoding arbitrary bytes must never panic, and
/// whatever decodes must re-encode to something that decodes the same.
pub fn pairing_message(data: &[u8]) {
    use orgsync_keytool::pairing::Message;
    if let Ok(msg) = Message::decode(data) {
        let again = Message::decode(&msg.encode()).expect("a decoded message re-encodes");
        assert_eq!(format!("{msg:?}"), format!("{again:?}"));
    }
}

// ---------------------------------------------------------------------------
// config_parse, import_line (local files)
// ---------------------------------------------------------------------------

/// `orgsync.toml`: arbitrary text never panics the parser; a refusal names
/// the file, and an accepted file parses the same the second time.
pub fn config_parse(data: &[u8]) {
    use orgsync_daemon::config::Config;
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/fuzz/orgsync.toml");
    match Config::parse(&text, path, Path::new("/fuzz")) {
        Ok(first) => {
            let again = Config::parse(&text, path, Path::new("/fuzz")).expect("parses twice");
            assert_eq!(format!("{first:?}"), format!("{again:?}"));
        }
        Err(e) => assert!(
            e.to_string().contains("orgsync.toml"),
            "the error does not name the file: {e}"
        ),
    }
}

/// One drop-folder NDJSON line: decoding never panics, a refusal carries
/// the line number, and a decoded record is built (validated against an
/// empty schema) without panicking.
pub fn import_line(data: &[u8]) {
    use orgsync_daemon::import::decode_ndjson_line;
    use orgsync_protocol::model::{ObjectId, Schema};
    match decode_ndjson_line(7, data) {
        Ok(Some(req)) => {
            let _ = orgsync_daemon::json::build_create(&Schema::default(), &req, None, || {
                ObjectId([7; 16])
            });
        }
        Ok(None) => {}
        Err(e) => assert_eq!(e.line, Some(7), "refusal without its line: {e}"),
    }
}

// ---------------------------------------------------------------------------
// backup_archive
// ---------------------------------------------------------------------------

/// An archive is opened (plain: checksums; encrypted: refused for want of a
/// passphrase, before any key derivation) and its payload decoded; a
/// payload that decodes encodes back to the same bytes. The raw bytes are
/// also fed to the payload decoder directly.
pub fn backup_archive(data: &[u8]) {
    use orgsync_daemon::backup::archive::Payload;
    use orgsync_daemon::backup::seal;
    for bytes in [
        data.to_vec(),
        seal::open(data, None)
            .map(|p| p.to_vec())
            .unwrap_or_default(),
    ] {
        if let Ok(p) = Payload::decode(&bytes) {
            assert_eq!(p.encode(), bytes, "payload does not round-trip");
        }
    }
}
