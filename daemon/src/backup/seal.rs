//! The archive file format around the payload.
//!
//! ```text
//! header:  magic "ORGSYNC-BACKUP\n\0" (16) | u32 version | u8 flags (1: encrypted)
//!          | u32 chunk size
//!          | if encrypted: salt (16) | argon2id m_cost, t_cost, p_cost (u32 each)
//!            | nonce prefix (7) | key check (32)
//!          | BLAKE3 of everything above (32)
//! chunks:  u8 last (0/1) | u32 length | body
//!          encrypted: body = chacha20poly1305(key, nonce = prefix ++ u32 index ++ last,
//!                     aad = header) of at most `chunk size` bytes (length includes the tag)
//!          plain:     body = bytes (length) ++ BLAKE3(header hash ++ u64 index ++ last ++ bytes)
//! ```
//! Integers are big-endian.
//!
//! What each failure looks like, so they are told apart: a damaged header
//! fails its own checksum; a wrong passphrase fails the key check (a keyed
//! BLAKE3 of a constant under the derived key, compared in constant time)
//! before any chunk is tried; a chunk that fails authentication (or its
//! checksum) is corrupt; running out of bytes before the chunk marked last
//! is truncation, and bytes after it are refused too. The `last` flag is
//! inside the nonce (or the checksum), so a cut at a chunk boundary cannot
//! pass for a complete archive.

use std::io::Write;

use chacha20poly1305::aead::{Aead, KeyInit, Payload as AeadPayload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{BackupError, ARCHIVE_VERSION};

const MAGIC: &[u8; 16] = b"ORGSYNC-BACKUP\n\0";
const FLAG_ENCRYPTED: u8 = 1;
/// Payload bytes per chunk.
pub const CHUNK_SIZE: u32 = 1 << 20;
const TAG_LEN: usize = 16;
const HASH_LEN: usize = 32;
const KEY_CHECK_CONTEXT: &[u8] = b"orgsync backup key check v1";

/// argon2id costs written into new archives (OWASP's 19 MiB, 2 passes).
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;
/// Costs above these are refused on read: a crafted header must not make
/// a restore allocate gigabytes or spin for minutes.
const MAX_M_COST_KIB: u32 = 1 << 20;
const MAX_T_COST: u32 = 16;
const MAX_P_COST: u32 = 16;

struct Kdf {
    salt: [u8; 16],
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
    nonce_prefix: [u8; 7],
    key_check: [u8; 32],
}

fn derive(
    passphrase: &[u8],
    salt: &[u8; 16],
    m: u32,
    t: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, BackupError> {
    let params = argon2::Params::new(m, t, p, Some(32))
        .map_err(|e| BackupError::Kdf(format!("argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, salt, &mut key[..])
        .map_err(|e| BackupError::Kdf(e.to_string()))?;
    Ok(key)
}

fn key_check(key: &[u8; 32]) -> [u8; 32] {
    *blake3::keyed_hash(key, KEY_CHECK_CONTEXT).as_bytes()
}

fn nonce(prefix: &[u8; 7], index: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&index.to_be_bytes());
    n[11] = last as u8;
    n
}

fn plain_check(header_hash: &[u8], index: u64, last: bool, data: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(header_hash);
    h.update(&index.to_be_bytes());
    h.update(&[last as u8]);
    h.update(data);
    *h.finalize().as_bytes()
}

/// Writes `payload` as an archive to `out`: encrypted with a key derived
/// from `passphrase` when one is given, checksummed otherwise. `progress`
/// is called with the payload bytes written so far.
pub fn seal_to(
    out: &mut impl Write,
    payload: &[u8],
    passphrase: Option<&[u8]>,
    mut progress: impl FnMut(u64),
) -> Result<(), BackupError> {
    let io = |e| BackupError::Io {
        what: "write archive",
        path: "(archive)".into(),
        source: e,
    };
    let mut header = Vec::with_capacity(128);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&ARCHIVE_VERSION.to_be_bytes());
    let mut cipher = None;
    match passphrase {
        Some(pass) => {
            if pass.is_empty() {
                return Err(BackupError::EmptyPassphrase);
            }
            let mut salt = [0u8; 16];
            let mut prefix = [0u8; 7];
            rand::thread_rng().fill_bytes(&mut salt);
            rand::thread_rng().fill_bytes(&mut prefix);
            let key = derive(pass, &salt, M_COST_KIB, T_COST, P_COST)?;
            header.push(FLAG_ENCRYPTED);
            header.extend_from_slice(&CHUNK_SIZE.to_be_bytes());
            header.extend_from_slice(&salt);
            for v in [M_COST_KIB, T_COST, P_COST] {
                header.extend_from_slice(&v.to_be_bytes());
            }
            header.extend_from_slice(&prefix);
            header.extend_from_slice(&key_check(&key));
            cipher = Some((ChaCha20Poly1305::new(Key::from_slice(&key[..])), prefix));
        }
        None => {
            header.push(0);
            header.extend_from_slice(&CHUNK_SIZE.to_be_bytes());
        }
    }
    let header_hash = *blake3::hash(&header).as_bytes();
    header.extend_from_slice(&header_hash);
    out.write_all(&header).map_err(io)?;

    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&[][..]]
    } else {
        payload.chunks(CHUNK_SIZE as usize).collect()
    };
    let mut done = 0u64;
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let index = u32::try_from(i)
            .map_err(|_| BackupError::Payload("archive too large (chunk count)".into()))?;
        match &cipher {
            Some((c, prefix)) => {
                let n = nonce(prefix, index, last);
                let ct = c
                    .encrypt(
                        Nonce::from_slice(&n),
                        AeadPayload {
                            msg: chunk,
                            aad: &header,
                        },
                    )
                    .map_err(|_| BackupError::Payload("encryption failed".into()))?;
                out.write_all(&[last as u8]).map_err(io)?;
                out.write_all(&(ct.len() as u32).to_be_bytes())
                    .map_err(io)?;
                out.write_all(&ct).map_err(io)?;
            }
            None => {
                out.write_all(&[last as u8]).map_err(io)?;
                out.write_all(&(chunk.len() as u32).to_be_bytes())
                    .map_err(io)?;
                out.write_all(chunk).map_err(io)?;
                out.write_all(&plain_check(&header_hash, i as u64, last, chunk))
                    .map_err(io)?;
            }
        }
        done += chunk.len() as u64;
        progress(done);
    }
    Ok(())
}

/// Whether the archive is encrypted (a passphrase is needed to open it).
/// Only looks at the flag: [`open`] verifies everything.
pub fn is_encrypted(bytes: &[u8]) -> bool {
    bytes.len() > 20 && bytes.starts_with(MAGIC) && bytes[20] & FLAG_ENCRYPTED != 0
}

/// Verifies a whole archive and returns its payload. Nothing is returned
/// unless every chunk passed its check and the archive ended exactly after
/// its last chunk.
pub fn open(bytes: &[u8], passphrase: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, BackupError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(BackupError::NotAnArchive);
    }
    let mut at = MAGIC.len();
    let need = |at: usize, n: usize| -> Result<(), BackupError> {
        if bytes.len() < at + n {
            Err(BackupError::Truncated {
                at: bytes.len() as u64,
                chunk: 0,
            })
        } else {
            Ok(())
        }
    };
    need(at, 9)?;
    let version = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
    let flags = bytes[at + 4];
    let chunk_size = u32::from_be_bytes(bytes[at + 5..at + 9].try_into().unwrap_or_default());
    at += 9;
    let kdf = if flags & FLAG_ENCRYPTED != 0 {
        need(at, 16 + 12 + 7 + 32)?;
        let mut k = Kdf {
            salt: [0; 16],
            m_cost: 0,
            t_cost: 0,
            p_cost: 0,
            nonce_prefix: [0; 7],
            key_check: [0; 32],
        };
        k.salt.copy_from_slice(&bytes[at..at + 16]);
        at += 16;
        let u = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap_or_default());
        k.m_cost = u(at);
        k.t_cost = u(at + 4);
        k.p_cost = u(at + 8);
        at += 12;
        k.nonce_prefix.copy_from_slice(&bytes[at..at + 7]);
        at += 7;
        k.key_check.copy_from_slice(&bytes[at..at + 32]);
        at += 32;
        Some(k)
    } else {
        None
    };
    need(at, HASH_LEN)?;
    let header_hash: [u8; 32] = blake3::hash(&bytes[..at]).into();
    if !bool::from(header_hash.ct_eq(&bytes[at..at + HASH_LEN])) {
        return Err(BackupError::HeaderCorrupt(
            "its checksum does not match".into(),
        ));
    }
    at += HASH_LEN;
    let header = &bytes[..at];
    if version > ARCHIVE_VERSION || version == 0 {
        return Err(BackupError::UnsupportedVersion {
            found: version,
            supported: ARCHIVE_VERSION,
        });
    }
    if flags & !FLAG_ENCRYPTED != 0 {
        return Err(BackupError::HeaderCorrupt(format!(
            "unknown flags {flags:#x}"
        )));
    }
    if !(1024..=16 << 20).contains(&chunk_size) {
        return Err(BackupError::HeaderCorrupt(format!(
            "chunk size {chunk_size} out of range"
        )));
    }
    let cipher = match (&kdf, passphrase) {
        (None, _) => None,
        (Some(_), None) => return Err(BackupError::PassphraseNeeded),
        (Some(_), Some([])) => return Err(BackupError::EmptyPassphrase),
        (Some(k), Some(pass)) => {
            if k.m_cost > MAX_M_COST_KIB || k.t_cost > MAX_T_COST || k.p_cost > MAX_P_COST {
                return Err(BackupError::HeaderCorrupt(format!(
                    "argon2 costs m={} t={} p={} above the accepted bounds",
                    k.m_cost, k.t_cost, k.p_cost
                )));
            }
            let key = derive(pass, &k.salt, k.m_cost, k.t_cost, k.p_cost)?;
            if !bool::from(key_check(&key).ct_eq(&k.key_check)) {
                return Err(BackupError::WrongPassphrase);
            }
            Some((
                ChaCha20Poly1305::new(Key::from_slice(&key[..])),
                k.nonce_prefix,
            ))
        }
    };

    let max_body = chunk_size as usize + TAG_LEN;
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len().saturating_sub(at)));
    let mut index = 0u64;
    loop {
        let start = at;
        if bytes.len() < at + 5 {
            return Err(BackupError::Truncated {
                at: bytes.len() as u64,
                chunk: index,
            });
        }
        let last = match bytes[at] {
            0 => false,
            1 => true,
            _ => {
                return Err(BackupError::Corrupt {
                    chunk: index,
                    at: start as u64,
                    check: "framing",
                })
            }
        };
        let len = u32::from_be_bytes(bytes[at + 1..at + 5].try_into().unwrap_or_default()) as usize;
        at += 5;
        if len > max_body {
            return Err(BackupError::Corrupt {
                chunk: index,
                at: start as u64,
                check: "length",
            });
        }
        match &cipher {
            Some((c, prefix)) => {
                if bytes.len() < at + len {
                    return Err(BackupError::Truncated {
                        at: bytes.len() as u64,
                        chunk: index,
                    });
                }
                let i = u32::try_from(index).map_err(|_| BackupError::Corrupt {
                    chunk: index,
                    at: start as u64,
                    check: "length",
                })?;
                let n = nonce(prefix, i, last);
                let plain = c
                    .decrypt(
                        Nonce::from_slice(&n),
                        AeadPayload {
                            msg: &bytes[at..at + len],
                            aad: header,
                        },
                    )
                    .map_err(|_| BackupError::Corrupt {
                        chunk: index,
                        at: start as u64,
                        check: "authentication",
                    })?;
                let plain = Zeroizing::new(plain);
                out.extend_from_slice(&plain);
                at += len;
            }
            None => {
                if bytes.len() < at + len + HASH_LEN {
                    return Err(BackupError::Truncated {
                        at: bytes.len() as u64,
                        chunk: index,
                    });
                }
                let data = &bytes[at..at + len];
                let check = plain_check(&header_hash, index, last, data);
                if !bool::from(check.ct_eq(&bytes[at + len..at + len + HASH_LEN])) {
                    return Err(BackupError::Corrupt {
                        chunk: index,
                        at: start as u64,
                        check: "checksum",
                    });
                }
                out.extend_from_slice(data);
                at += len + HASH_LEN;
            }
        }
        index += 1;
        if last {
            break;
        }
    }
    if at != bytes.len() {
        return Err(BackupError::TrailingBytes((bytes.len() - at) as u64));
    }
    Ok(out)
}
