//! The public bundle: what an organisation hands a partner so the partner can
//! pair with it — name, OrgId, x25519 public key, key epoch, TLS certificate
//! fingerprint and addresses — as one line of text that survives copy/paste,
//! chat and e-mail.
//!
//! # Format (version 1)
//!
//! ```text
//! orgsync-bundle:v1:<payload>:<check>
//! ```
//!
//! - `<payload>` is base64url without padding (RFC 4648 §5) of this binary
//!   layout, integers big-endian:
//!
//!   ```text
//!   u16          name length N (1..=256)
//!   N bytes      organisation name, UTF-8, no control characters
//!   32 bytes     OrgId
//!   32 bytes     x25519 public key
//!   u32          key epoch
//!   32 bytes     SHA-256 fingerprint of the instance's TLS certificate
//!   u8           address count C (0..=16)
//!   C times:     u8 length L (1..=255), then L bytes "host:port" (UTF-8)
//!
//!   optional, only after a key rotation (absent from epoch-0 bundles, so
//!   those are byte for byte what earlier builds wrote and read):
//!   u8           section tag 1 = rotation proof
//!   u8           link count K (1..=16)
//!   32 bytes     base key: the public key of the epoch before the first link
//!   K times:     u32 epoch, 32 bytes public key, 32 bytes certificate
//!                fingerprint, 64 bytes XEdDSA signature by the previous key
//!   ```
//!
//! - `<check>` is 8 lowercase hex digits: the first 4 bytes of the BLAKE3
//!   hash of everything before the last `:` (`orgsync-bundle:v1:<payload>`).
//!   A changed, dropped or swapped character is caught with probability
//!   1 - 2^-32; this is a typo check, not a signature — authenticity comes
//!   from comparing the fingerprint out of band.
//!
//! [`Bundle::parse`] ignores whitespace anywhere in the text (line breaks
//! added by mail clients), so positions in errors count non-blank
//! characters.
//!
//! # OrgId check
//!
//! An OrgId is the hash of the organisation's *genesis* (epoch 0) key. For an
//! epoch-0 bundle the parser checks `org_id == public_key.org_id()`. After a
//! rotation (epoch > 0) the current key no longer hashes to the OrgId; the
//! bundle then carries a rotation proof (see [`crate::rotation`]): the last
//! links (at most 16) from an older key to the current one, each signed by
//! the key it replaces. The parser only checks its form; the importer checks
//! it against the key it has on file (or, for an organisation it does not
//! know, against the genesis key the account number is the hash of) with
//! [`crate::rotation::verify_chain`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::identity::{Fingerprint, OrgPublicKey};
use crate::model::OrgId;
use crate::rotation::{RotationChain, RotationLink, RotationSignature, MAX_CHAIN};

/// Text every bundle starts with.
pub const PREFIX: &str = "orgsync-bundle:";
/// The format version this build writes and reads.
pub const VERSION: &str = "v1";
/// Longest organisation name, in UTF-8 bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Most addresses in one bundle.
pub const MAX_ADDRESSES: usize = 16;
/// Longest address, in bytes.
pub const MAX_ADDRESS_LEN: usize = 255;
/// Hex digits of the checksum.
const CHECK_LEN: usize = 8;
/// Tag of the optional rotation-proof section.
const SECTION_ROTATION: u8 = 1;

/// An organisation's public bundle. Carries nothing secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Bundle {
    /// Organisation name shown to people.
    pub org_name: String,
    /// The organisation's account number.
    pub org_id: OrgId,
    /// Its x25519 public key for `epoch`.
    pub public_key: OrgPublicKey,
    /// Key epoch of `public_key` (0 = genesis key).
    pub epoch: u32,
    /// Fingerprint of the instance's TLS certificate, pinned on import.
    pub cert_fingerprint: Fingerprint,
    /// Where the instance listens, as `host:port`.
    pub addresses: Vec<String>,
    /// The rotation proof for `epoch > 0` (see [`crate::rotation`]); `None`
    /// at epoch 0 and in bundles of builds before rotation proofs.
    pub rotation: Option<RotationChain>,
}

/// Why a bundle was refused. Messages are written for the sysadmin who
/// pasted it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Nothing but whitespace.
    #[error("the bundle is empty; paste the whole line your partner sent, starting with {PREFIX}")]
    Empty,
    /// The text does not start with [`PREFIX`].
    #[error("this is not an orgsync bundle: a bundle is one line starting with {PREFIX}")]
    NotABundle,
    /// A format version this build does not read.
    #[error("bundle format version {found:?} is not supported (this build reads {supported}); upgrade orgsync or ask your partner for a {supported} bundle")]
    UnsupportedVersion {
        /// The version text found (at most 16 characters of it).
        found: String,
        /// The version this build reads.
        supported: &'static str,
    },
    /// A character or length base64url cannot contain.
    #[error("the bundle is damaged at character {position}: {detail}; copy it again")]
    Encoding {
        /// 1-based position, counting non-blank characters of the bundle.
        position: usize,
        /// What is wrong there.
        detail: String,
    },
    /// The checksum does not match the text.
    #[error(
        "the bundle's checksum does not match: the bundle was altered or mis-copied; copy it again"
    )]
    Checksum,
    /// The text or its payload ends early.
    #[error("the bundle ends before its {part}: it was cut short, probably when copying; copy the whole line again")]
    Truncated {
        /// The first missing part.
        part: &'static str,
    },
    /// Bytes after the last address.
    #[error("the bundle has {extra} unexpected bytes after its last section; it was not made by a compatible orgsync")]
    TrailingData {
        /// Number of extra bytes.
        extra: usize,
    },
    /// The organisation name is unusable.
    #[error("the bundle's organisation name is invalid: {reason}")]
    BadName {
        /// Why.
        reason: String,
    },
    /// An address is not `host:port`.
    #[error("the bundle's address {address:?} is invalid: {reason}")]
    BadAddress {
        /// The address (lossily decoded if it was not UTF-8).
        address: String,
        /// Why.
        reason: String,
    },
    /// More than [`MAX_ADDRESSES`] addresses.
    #[error("the bundle lists {count} addresses; at most {MAX_ADDRESSES} are allowed")]
    TooManyAddresses {
        /// Addresses found.
        count: usize,
    },
    /// A section after the addresses that this build does not know.
    #[error("the bundle has a section of unknown type {tag} after its addresses; it was made by a newer orgsync: upgrade, or ask your partner for a bundle this build reads")]
    UnknownSection {
        /// The section tag.
        tag: u8,
    },
    /// The rotation-proof section is malformed.
    #[error("the bundle's rotation proof is malformed: {reason}")]
    BadRotation {
        /// Why.
        reason: String,
    },
    /// Epoch 0 bundle whose OrgId is not the hash of its key.
    #[error("the bundle's account number {claimed} does not belong to its key (the key gives {derived}); the bundle was forged or corrupted")]
    OrgIdMismatch {
        /// OrgId in the bundle.
        claimed: OrgId,
        /// OrgId of the bundle's key.
        derived: OrgId,
    },
}

fn check_name(name: &str) -> Result<(), BundleError> {
    let bad = |reason: &str| {
        Err(BundleError::BadName {
            reason: reason.to_string(),
        })
    };
    if name.trim().is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err(BundleError::BadName {
            reason: format!(
                "it is {} bytes long, the limit is {MAX_NAME_LEN}",
                name.len()
            ),
        });
    }
    if name.chars().any(char::is_control) {
        return bad("it contains control characters (line breaks, tabs, escapes)");
    }
    Ok(())
}

fn check_address(address: &str) -> Result<(), BundleError> {
    let bad = |reason: String| {
        Err(BundleError::BadAddress {
            address: address.to_string(),
            reason,
        })
    };
    if address.is_empty() {
        return bad("it is empty".into());
    }
    if address.len() > MAX_ADDRESS_LEN {
        return bad(format!(
            "it is {} bytes long, the limit is {MAX_ADDRESS_LEN}",
            address.len()
        ));
    }
    if address.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("it contains spaces or control characters".into());
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return bad("it must be host:port, e.g. sync.example.org:4433".into());
    };
    if host.is_empty() {
        return bad("the host before ':' is empty".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p >= 1 => Ok(()),
        _ => bad(format!("the port {port:?} is not a number from 1 to 65535")),
    }
}

impl Bundle {
    /// A validated bundle: same checks as [`Bundle::parse`] applies to the
    /// decoded fields.
    pub fn new(
        org_name: String,
        org_id: OrgId,
        public_key: OrgPublicKey,
        epoch: u32,
        cert_fingerprint: Fingerprint,
        addresses: Vec<String>,
    ) -> Result<Bundle, BundleError> {
        let b = Bundle {
            org_name,
            org_id,
            public_key,
            epoch,
            cert_fingerprint,
            addresses,
            rotation: None,
        };
        b.validate()?;
        Ok(b)
    }

    /// This bundle with a rotation proof, validated.
    pub fn with_rotation(mut self, rotation: Option<RotationChain>) -> Result<Bundle, BundleError> {
        self.rotation = rotation;
        self.validate()?;
        Ok(self)
    }

    /// Checks name, addresses, (at epoch 0) the OrgId, and the form of the
    /// rotation proof (at most 16 links, none at epoch 0; its signatures are
    /// the importer's check); see the module doc.
    pub fn validate(&self) -> Result<(), BundleError> {
        check_name(&self.org_name)?;
        if self.addresses.len() > MAX_ADDRESSES {
            return Err(BundleError::TooManyAddresses {
                count: self.addresses.len(),
            });
        }
        for a in &self.addresses {
            check_address(a)?;
        }
        if self.epoch == 0 {
            let derived = self.public_key.org_id();
            if derived != self.org_id {
                return Err(BundleError::OrgIdMismatch {
                    claimed: self.org_id,
                    derived,
                });
            }
        }
        if let Some(chain) = &self.rotation {
            let bad = |reason: String| Err(BundleError::BadRotation { reason });
            if self.epoch == 0 {
                return bad("an epoch-0 bundle has nothing to prove".into());
            }
            if chain.links.is_empty() || chain.links.len() > MAX_CHAIN {
                return bad(format!(
                    "it has {} links; a proof has 1 to {MAX_CHAIN}",
                    chain.links.len()
                ));
            }
        }
        Ok(())
    }

    /// The one-line text form (see the module doc). Never fails: a bundle
    /// that does not pass [`Bundle::validate`] still gets a line, which
    /// [`Bundle::parse`] refuses.
    pub fn to_line(&self) -> String {
        let name = self.org_name.as_bytes();
        let name = &name[..name.len().min(usize::from(u16::MAX))];
        let mut payload = Vec::with_capacity(2 + name.len() + 32 * 3 + 4 + 1 + 64);
        // Truncated to u16::MAX bytes just above, so the cast is lossless.
        payload.extend_from_slice(&(name.len() as u16).to_be_bytes());
        payload.extend_from_slice(name);
        payload.extend_from_slice(&self.org_id.0);
        payload.extend_from_slice(&self.public_key.0);
        payload.extend_from_slice(&self.epoch.to_be_bytes());
        payload.extend_from_slice(&self.cert_fingerprint.0);
        let count = self.addresses.len().min(usize::from(u8::MAX));
        // Clamped to u8::MAX just above; a count over 16 is refused on parse.
        payload.push(count as u8);
        for a in &self.addresses[..count] {
            // An over-long address is written as an empty one, which parse
            // refuses, rather than cut into something that might look valid.
            let bytes = if a.len() <= MAX_ADDRESS_LEN {
                a.as_bytes()
            } else {
                &[]
            };
            // At most MAX_ADDRESS_LEN (255) bytes, so the cast is lossless.
            payload.push(bytes.len() as u8);
            payload.extend_from_slice(bytes);
        }
        if let Some(chain) = &self.rotation {
            payload.push(SECTION_ROTATION);
            let count = chain.links.len().min(usize::from(u8::MAX));
            // Clamped to u8::MAX just above; over 16 is refused on parse.
            payload.push(count as u8);
            payload.extend_from_slice(&chain.base_key.0);
            for link in &chain.links[..count] {
                payload.extend_from_slice(&link.epoch.to_be_bytes());
                payload.extend_from_slice(&link.public_key.0);
                payload.extend_from_slice(&link.cert_fingerprint.0);
                payload.extend_from_slice(&link.signature.0);
            }
        }
        let mut line = format!(
            "{PREFIX}{VERSION}:{}",
            data_encoding::BASE64URL_NOPAD.encode(&payload)
        );
        let check = checksum(&line);
        line.push(':');
        line.push_str(&data_encoding::HEXLOWER.encode(&check));
        line
    }

    /// Parses the text form, ignoring whitespace anywhere (including the
    /// trailing newline), and validates the result like [`Bundle::new`].
    pub fn parse(text: &str) -> Result<Bundle, BundleError> {
        let cleaned: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if cleaned.is_empty() {
            return Err(BundleError::Empty);
        }
        let Some(rest) = cleaned.strip_prefix(PREFIX) else {
            // A prefix cut short ("orgsync-bun") is a truncated bundle, not
            // some other text.
            if PREFIX.starts_with(&cleaned) {
                return Err(BundleError::Truncated { part: "version" });
            }
            return Err(BundleError::NotABundle);
        };
        let (version, rest) = match rest.split_once(':') {
            Some(split) => split,
            None if VERSION.starts_with(rest) => {
                return Err(BundleError::Truncated { part: "payload" })
            }
            None => (rest, ""),
        };
        if version != VERSION {
            return Err(BundleError::UnsupportedVersion {
                found: version.chars().take(16).collect(),
                supported: VERSION,
            });
        }
        let payload_start = PREFIX.len() + VERSION.len() + 1;
        let Some((payload_text, check_text)) = rest.rsplit_once(':') else {
            return Err(BundleError::Truncated { part: "checksum" });
        };
        // Character positions, for messages: everything so far is ASCII up
        // to the payload; count chars from there.
        let position_of = |byte_index_in_payload: usize| {
            payload_start
                + payload_text
                    .get(..byte_index_in_payload)
                    .map_or(byte_index_in_payload, |s| s.chars().count())
                + 1
        };
        if let Some((i, ch)) = payload_text
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(BundleError::Encoding {
                position: position_of(i),
                detail: format!("{ch:?} cannot appear in a bundle"),
            });
        }
        let check_start = payload_start + payload_text.chars().count() + 1;
        if let Some((i, ch)) = check_text
            .char_indices()
            .find(|(_, c)| !c.is_ascii_hexdigit())
        {
            return Err(BundleError::Encoding {
                position: check_start + check_text[..i].chars().count() + 1,
                detail: format!("{ch:?} cannot appear in the checksum (hex digits only)"),
            });
        }
        if check_text.len() < CHECK_LEN {
            return Err(BundleError::Truncated { part: "checksum" });
        }
        if check_text.len() > CHECK_LEN {
            return Err(BundleError::Encoding {
                position: check_start + CHECK_LEN + 1,
                detail: format!(
                    "the checksum has {} digits instead of {CHECK_LEN}",
                    check_text.len()
                ),
            });
        }
        let mut found = [0u8; CHECK_LEN / 2];
        data_encoding::HEXLOWER_PERMISSIVE
            .decode_mut(check_text.as_bytes(), &mut found)
            .map_err(|_| BundleError::Checksum)?;
        let expected = checksum(&cleaned[..cleaned.len() - CHECK_LEN - 1]);
        if !bool::from(found.ct_eq(&expected)) {
            return Err(BundleError::Checksum);
        }
        // The checksum matched, so a decoding failure here means the bundle
        // was crafted, not mis-copied.
        let payload = data_encoding::BASE64URL_NOPAD
            .decode(payload_text.as_bytes())
            .map_err(|e| BundleError::Encoding {
                position: position_of(e.position),
                detail: format!("invalid base64url ({})", e.kind),
            })?;
        let bundle = decode_payload(&payload)?;
        bundle.validate()?;
        Ok(bundle)
    }
}

/// First 4 bytes of BLAKE3 of the text before the checksum.
fn checksum(text: &str) -> [u8; CHECK_LEN / 2] {
    let mut out = [0u8; CHECK_LEN / 2];
    out.copy_from_slice(&blake3::hash(text.as_bytes()).as_bytes()[..CHECK_LEN / 2]);
    out
}

/// Reads the binary layout front to back, naming the part that is missing.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, part: &'static str) -> Result<&'a [u8], BundleError> {
        if self.rest.len() < n {
            return Err(BundleError::Truncated { part });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, part: &'static str) -> Result<[u8; N], BundleError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, part)?);
        Ok(out)
    }
}

fn decode_payload(payload: &[u8]) -> Result<Bundle, BundleError> {
    let mut r = Reader { rest: payload };
    let name_len = usize::from(u16::from_be_bytes(r.array("name length")?));
    if name_len > MAX_NAME_LEN {
        return Err(BundleError::BadName {
            reason: format!("it is {name_len} bytes long, the limit is {MAX_NAME_LEN}"),
        });
    }
    let org_name = std::str::from_utf8(r.take(name_len, "organisation name")?)
        .map_err(|_| BundleError::BadName {
            reason: "it is not valid UTF-8 text".into(),
        })?
        .to_string();
    check_name(&org_name)?;
    let org_id = OrgId(r.array("account number")?);
    let public_key = OrgPublicKey(r.array("public key")?);
    let epoch = u32::from_be_bytes(r.array("key epoch")?);
    let cert_fingerprint = Fingerprint(r.array("certificate fingerprint")?);
    let count = usize::from(r.array::<1>("address count")?[0]);
    if count > MAX_ADDRESSES {
        return Err(BundleError::TooManyAddresses { count });
    }
    let mut addresses = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(r.array::<1>("address length")?[0]);
        let bytes = r.take(len, "address")?;
        let address = std::str::from_utf8(bytes).map_err(|_| BundleError::BadAddress {
            address: String::from_utf8_lossy(bytes).into_owned(),
            reason: "it is not valid UTF-8 text".into(),
        })?;
        check_address(address)?;
        addresses.push(address.to_string());
    }
    let rotation = if r.rest.is_empty() {
        None
    } else {
        let tag = r.array::<1>("section tag")?[0];
        if tag != SECTION_ROTATION {
            return Err(BundleError::UnknownSection { tag });
        }
        Some(decode_rotation(&mut r)?)
    };
    if !r.rest.is_empty() {
        return Err(BundleError::TrailingData {
            extra: r.rest.len(),
        });
    }
    Ok(Bundle {
        org_name,
        org_id,
        public_key,
        epoch,
        cert_fingerprint,
        addresses,
        rotation,
    })
}

fn decode_rotation(r: &mut Reader<'_>) -> Result<RotationChain, BundleError> {
    let count = usize::from(r.array::<1>("rotation link count")?[0]);
    if count == 0 || count > MAX_CHAIN {
        return Err(BundleError::BadRotation {
            reason: format!("it has {count} links; a proof has 1 to {MAX_CHAIN}"),
        });
    }
    let base_key = OrgPublicKey(r.array("rotation base key")?);
    let mut links = Vec::with_capacity(count);
    for _ in 0..count {
        links.push(RotationLink {
            epoch: u32::from_be_bytes(r.array("rotation link epoch")?),
            public_key: OrgPublicKey(r.array("rotation link key")?),
            cert_fingerprint: Fingerprint(r.array("rotation link fingerprint")?),
            signature: RotationSignature(r.array("rotation link signature")?),
        });
    }
    Ok(RotationChain { base_key, links })
}

impl fmt::Display for Bundle {
    /// The one-line form, [`Bundle::to_line`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_line())
    }
}

impl FromStr for Bundle {
    type Err = BundleError;

    /// [`Bundle::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Bundle::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Bundle {
        let pk = OrgPublicKey([3; 32]);
        Bundle::new(
            "Acme Recruiting GmbH".into(),
            pk.org_id(),
            pk,
            0,
            Fingerprint::of_certificate(b"cert"),
            vec!["sync.acme.example:4433".into(), "[2001:db8::1]:4433".into()],
        )
        .unwrap()
    }

    /// A line with a valid checksum around an arbitrary payload.
    fn line_with_payload(payload: &[u8]) -> String {
        let mut line = format!(
            "{PREFIX}{VERSION}:{}",
            data_encoding::BASE64URL_NOPAD.encode(payload)
        );
        let check = checksum(&line);
        line.push(':');
        line.push_str(&data_encoding::HEXLOWER.encode(&check));
        line
    }

    fn payload_of(b: &Bundle) -> Vec<u8> {
        let line = b.to_line();
        let parts: Vec<&str> = line.split(':').collect();
        data_encoding::BASE64URL_NOPAD
            .decode(parts[2].as_bytes())
            .unwrap()
    }

    #[test]
    fn round_trip() {
        let b = sample();
        let line = b.to_line();
        assert!(line.starts_with("orgsync-bundle:v1:"));
        assert!(!line.contains(char::is_whitespace));
        assert_eq!(Bundle::parse(&line).unwrap(), b);
        assert_eq!(format!("  {line}\r\n").parse::<Bundle>().unwrap(), b);
        assert_eq!(b.to_string(), line);
        // Wrapped by a mail client.
        let (x, y) = line.split_at(40);
        assert_eq!(Bundle::parse(&format!("{x}\n  {y}")).unwrap(), b);
    }

    /// A bundle at epoch `links` with a (structurally valid, unsigned)
    /// rotation proof of that many links.
    fn rotated_sample(links: u32) -> Bundle {
        let mut b = sample();
        b.epoch = links;
        b.public_key = OrgPublicKey([9; 32]);
        b.rotation = Some(RotationChain {
            base_key: OrgPublicKey([3; 32]),
            links: (1..=links)
                .map(|e| RotationLink {
                    epoch: e,
                    public_key: OrgPublicKey([e as u8; 32]),
                    cert_fingerprint: b.cert_fingerprint,
                    signature: RotationSignature([e as u8; 64]),
                })
                .collect(),
        });
        b
    }

    #[test]
    fn rotation_proofs_round_trip_and_old_bundles_still_parse() {
        for n in [1, 2, MAX_CHAIN as u32] {
            let b = rotated_sample(n);
            assert_eq!(Bundle::parse(&b.to_line()).unwrap(), b);
        }
        // An epoch-0 bundle has no section: the line is what v1 builds wrote
        // (nothing is appended when there is no proof).
        let old = sample();
        assert!(old.rotation.is_none());
        assert_eq!(Bundle::parse(&old.to_line()).unwrap(), old);
        // Cut inside the section: truncated, naming the part.
        let good = payload_of(&rotated_sample(2));
        assert_eq!(
            Bundle::parse(&line_with_payload(&good[..good.len() - 1])),
            Err(BundleError::Truncated {
                part: "rotation link signature"
            })
        );
        let addresses_end = payload_of(&sample()).len();
        assert_eq!(
            Bundle::parse(&line_with_payload(&good[..addresses_end + 1])),
            Err(BundleError::Truncated {
                part: "rotation link count"
            })
        );
        for count in [0u8, 17, 255] {
            let mut bad = good.clone();
            bad[addresses_end + 1] = count;
            assert!(
                matches!(
                    Bundle::parse(&line_with_payload(&bad)),
                    Err(BundleError::BadRotation { .. })
                ),
                "count {count}"
            );
        }
        let mut unknown = good.clone();
        unknown[addresses_end] = 2;
        assert_eq!(
            Bundle::parse(&line_with_payload(&unknown)),
            Err(BundleError::UnknownSection { tag: 2 })
        );
        // A proof on an epoch-0 bundle, or with too many links.
        let mut b = rotated_sample(1);
        b.epoch = 0;
        b.public_key = OrgPublicKey([3; 32]);
        assert!(matches!(
            Bundle::parse(&b.to_line()),
            Err(BundleError::BadRotation { .. })
        ));
        let mut b = rotated_sample(MAX_CHAIN as u32);
        if let Some(chain) = b.rotation.as_mut() {
            let first = chain.links[0].clone();
            chain.links.push(first);
        }
        assert!(matches!(
            Bundle::parse(&b.to_line()),
            Err(BundleError::BadRotation { .. })
        ));
    }

    #[test]
    fn later_epochs_skip_the_org_id_check() {
        let mut b = sample();
        b.epoch = 2;
        b.public_key = OrgPublicKey([4; 32]);
        assert_eq!(Bundle::parse(&b.to_line()).unwrap(), b);
        b.epoch = 0;
        assert!(matches!(
            Bundle::parse(&b.to_line()),
            Err(BundleError::OrgIdMismatch { .. })
        ));
    }

    #[test]
    fn each_failure_has_its_variant() {
        let line = sample().to_line();
        assert_eq!(Bundle::parse(" \n"), Err(BundleError::Empty));
        assert_eq!(
            Bundle::parse("ssh-ed25519 AAAAC3Nza"),
            Err(BundleError::NotABundle)
        );
        assert!(matches!(
            Bundle::parse(&line.replace(":v1:", ":v2:")),
            Err(BundleError::UnsupportedVersion { ref found, .. }) if found == "v2"
        ));
        // Cut at any point: always Truncated or Checksum, never another error.
        for cut in 1..line.len() {
            let e = Bundle::parse(&line[..cut]).unwrap_err();
            assert!(
                matches!(e, BundleError::Truncated { .. } | BundleError::Checksum),
                "cut at {cut}: {e:?}"
            );
        }
        assert_eq!(
            Bundle::parse(&line[..line.len() - 9]),
            Err(BundleError::Truncated { part: "checksum" })
        );
        // One character changed in the payload.
        let mut chars: Vec<char> = line.chars().collect();
        chars[30] = if chars[30] == 'A' { 'B' } else { 'A' };
        let altered: String = chars.into_iter().collect();
        assert_eq!(Bundle::parse(&altered), Err(BundleError::Checksum));
        // Wrong checksum digits.
        let wrong = format!("{}00000000", &line[..line.len() - 8]);
        assert_eq!(Bundle::parse(&wrong), Err(BundleError::Checksum));
        // A stray character.
        let stray = line.replacen("v1:", "v1:é", 1);
        assert!(matches!(
            Bundle::parse(&stray),
            Err(BundleError::Encoding { position: 19, .. })
        ));
        // Random bytes.
        let noise = String::from_utf8_lossy(&[0x8f, 0x10, 0xff, 0x41, 0x00]).into_owned();
        assert_eq!(Bundle::parse(&noise), Err(BundleError::NotABundle));
    }

    #[test]
    fn payload_errors_have_their_variant() {
        let good = payload_of(&sample());
        // Truncated payload under a valid checksum.
        assert!(matches!(
            Bundle::parse(&line_with_payload(&good[..good.len() - 3])),
            Err(BundleError::Truncated { part: "address" })
        ));
        assert_eq!(
            Bundle::parse(&line_with_payload(&good[..1])),
            Err(BundleError::Truncated {
                part: "name length"
            })
        );
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            Bundle::parse(&line_with_payload(&long)),
            Err(BundleError::UnknownSection { tag: 0 })
        );
        let rotated = payload_of(&rotated_sample(2));
        let mut long = rotated.clone();
        long.push(0);
        assert_eq!(
            Bundle::parse(&line_with_payload(&long)),
            Err(BundleError::TrailingData { extra: 1 })
        );
        let mut bad_name = good.clone();
        bad_name[2] = 0xff;
        assert!(matches!(
            Bundle::parse(&line_with_payload(&bad_name)),
            Err(BundleError::BadName { .. })
        ));
        let mut ctrl_name = good.clone();
        ctrl_name[2] = b'\n';
        assert!(matches!(
            Bundle::parse(&line_with_payload(&ctrl_name)),
            Err(BundleError::BadName { .. })
        ));
    }

    #[test]
    fn new_validates() {
        let b = sample();
        let with = |name: &str, addrs: Vec<String>| {
            Bundle::new(
                name.into(),
                b.org_id,
                b.public_key,
                0,
                b.cert_fingerprint,
                addrs,
            )
        };
        assert!(matches!(with("", vec![]), Err(BundleError::BadName { .. })));
        assert!(matches!(
            with(&"x".repeat(257), vec![]),
            Err(BundleError::BadName { .. })
        ));
        assert!(with(&"é".repeat(128), vec![]).is_ok());
        for addr in [
            "",
            "host",
            ":443",
            "host:0",
            "host:65536",
            "host:x",
            "a b:1",
        ] {
            assert!(
                matches!(
                    with("Acme", vec![addr.into()]),
                    Err(BundleError::BadAddress { .. })
                ),
                "{addr:?} accepted"
            );
        }
        assert!(with("Acme", vec!["10.0.0.1:1".into(), "h:65535".into()]).is_ok());
        assert_eq!(
            with("Acme", vec!["h:1".into(); 17]),
            Err(BundleError::TooManyAddresses { count: 17 })
        );
        assert!(with("Acme", vec!["h:1".into(); 16]).is_ok());
    }

    #[test]
    fn invalid_bundles_still_encode_but_do_not_parse() {
        let mut b = sample();
        b.addresses = vec![format!("{}:1", "h".repeat(300))];
        assert!(matches!(
            Bundle::parse(&b.to_line()),
            Err(BundleError::BadAddress { .. })
        ));
        b.addresses = vec!["h:1".into(); 300];
        assert!(matches!(
            Bundle::parse(&b.to_line()),
            Err(BundleError::TooManyAddresses { .. })
        ));
        b.addresses.clear();
        b.org_name = "n".repeat(70_000);
        assert!(matches!(
            Bundle::parse(&b.to_line()),
            Err(BundleError::BadName { .. })
        ));
    }

    #[test]
    fn messages_guide_the_sysadmin() {
        assert!(BundleError::Checksum
            .to_string()
            .contains("altered or mis-copied; copy it again"));
        assert!(BundleError::Truncated { part: "checksum" }
            .to_string()
            .contains("cut short"));
    }

    fn arb_bundle() -> impl Strategy<Value = Bundle> {
        (
            "[A-Za-z0-9 .&éüß-]{0,40}[A-Za-z]",
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            prop_oneof![Just(0u32), any::<u32>()],
            any::<[u8; 32]>(),
            proptest::collection::vec("[a-z0-9.-]{1,40}:[1-9][0-9]{0,3}", 0..=MAX_ADDRESSES),
        )
            .prop_map(|(name, id, pk, epoch, fp, addresses)| {
                let public_key = OrgPublicKey(pk);
                let org_id = if epoch == 0 {
                    public_key.org_id()
                } else {
                    OrgId(id)
                };
                Bundle {
                    org_name: name,
                    org_id,
                    public_key,
                    epoch,
                    cert_fingerprint: Fingerprint(fp),
                    addresses,
                    rotation: None,
                }
            })
    }

    /// Bundles with and without a rotation proof of random content (the
    /// parser checks its form only).
    fn arb_bundle_any() -> impl Strategy<Value = Bundle> {
        (
            arb_bundle(),
            any::<[u8; 32]>(),
            proptest::collection::vec(
                (
                    any::<u32>(),
                    any::<[u8; 32]>(),
                    any::<[u8; 32]>(),
                    any::<[u8; 32]>(),
                    any::<[u8; 32]>(),
                ),
                0..=MAX_CHAIN,
            ),
        )
            .prop_map(|(mut b, base, links)| {
                if b.epoch > 0 && !links.is_empty() {
                    b.rotation = Some(RotationChain {
                        base_key: OrgPublicKey(base),
                        links: links
                            .into_iter()
                            .map(|(epoch, key, fp, s1, s2)| {
                                let mut sig = [0u8; 64];
                                sig[..32].copy_from_slice(&s1);
                                sig[32..].copy_from_slice(&s2);
                                RotationLink {
                                    epoch,
                                    public_key: OrgPublicKey(key),
                                    cert_fingerprint: Fingerprint(fp),
                                    signature: RotationSignature(sig),
                                }
                            })
                            .collect(),
                    });
                }
                b
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn valid_bundles_round_trip(b in arb_bundle_any()) {
            prop_assert_eq!(b.validate(), Ok(()));
            prop_assert_eq!(Bundle::parse(&b.to_line()), Ok(b));
        }

        #[test]
        fn arbitrary_text_never_panics(s in any::<String>()) {
            let _ = Bundle::parse(&s);
            let _ = Bundle::parse(&format!("{PREFIX}{VERSION}:{s}"));
        }

        #[test]
        fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Bundle::parse(&String::from_utf8_lossy(&bytes));
            let _ = Bundle::parse(&line_with_payload(&bytes));
        }

        #[test]
        fn single_character_changes_are_caught(b in arb_bundle_any(), pos in any::<prop::sample::Index>(), c in "[A-Za-z0-9_:-]") {
            let line = b.to_line();
            let i = pos.index(line.len());
            let c = c.chars().next().unwrap_or('A');
            prop_assume!(line.as_bytes()[i] != c as u8);
            // The checksum's hex digits are read in either case (people
            // retype them): a case-only change there is the same checksum.
            let in_checksum = line.rfind(':').is_some_and(|colon| i > colon);
            prop_assume!(!(in_checksum && line.as_bytes()[i].eq_ignore_ascii_case(&(c as u8))));
            let mut altered = line.into_bytes();
            altered[i] = c as u8;
            let altered = String::from_utf8(altered).unwrap();
            prop_assert!(Bundle::parse(&altered).is_err());
        }
    }
}
