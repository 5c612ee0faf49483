//! Fuzzes envelope opening with fixed test keys.
//!
//! Input layout (the target's own split, independent of the wire codec):
//! byte 0 = mode, then an 86-byte header in `EnvelopeHeader::to_bytes`
//! layout, a 24-byte nonce, and the rest as ciphertext. Short inputs are
//! zero-padded so every input is exercised.
//!
//! Modes (bits of byte 0):
//! - bit 0: overwrite sender, receiver, epoch and key id with the right
//!   values, so the fuzzer reaches the length and AEAD checks without
//!   having to guess 76 magic bytes;
//! - bit 1: instead, seal the ciphertext part as plaintext, check it opens
//!   to the same bytes, then flip the byte chosen by the header's first two
//!   bytes and check the result is refused.
//!
//! Invariants checked: nothing panics; arbitrary bytes never open; a genuine
//! envelope opens; any single-byte change is refused.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use orgsync_protocol::envelope::{
    open, seal, EnvelopeHeader, ReplayGuard, SealedEnvelope, StreamKind, HEADER_LEN, NONCE_LEN,
};
use orgsync_protocol::identity::{OrgKeyPair, PairKeys};

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

fuzz_target!(|data: &[u8]| {
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
});
