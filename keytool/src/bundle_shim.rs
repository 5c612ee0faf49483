//! TEMPORARY stand-in for `orgsync_protocol::bundle` (being written on
//! wip-crypto) with the agreed API, so keytool builds and its tests run.
//! Replaced by the real module as soon as it lands; nothing outside this
//! file depends on its encoding.

use std::fmt;

use orgsync_protocol::identity::{Fingerprint, OrgPublicKey};
use orgsync_protocol::model::OrgId;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "orgsync-bundle:";
const VERSION: u8 = 1;

/// A public bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// Organisation name.
    pub org_name: String,
    /// Account.
    pub org_id: OrgId,
    /// Current public key.
    pub public_key: OrgPublicKey,
    /// Key epoch.
    pub epoch: u32,
    /// TLS fingerprint.
    pub cert_fingerprint: Fingerprint,
    /// Addresses.
    pub addresses: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    n: String,
    o: [u8; 32],
    k: [u8; 32],
    e: u32,
    f: [u8; 32],
    a: Vec<String>,
}

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not a bundle.
    #[error("this is not an orgsync bundle (it should start with {PREFIX})")]
    NotABundle,
    /// Cut short.
    #[error("the bundle is truncated (was it cut when copying?)")]
    Truncated,
    /// Checksum.
    #[error("the bundle's checksum does not match: it was altered or mistyped")]
    Checksum,
    /// Version.
    #[error("bundle format version {0} is not supported (this build reads version {VERSION})")]
    Version(u8),
    /// Content.
    #[error("the bundle's content is malformed: {0}")]
    Malformed(String),
}

impl Bundle {
    /// One line.
    pub fn to_line(&self) -> String {
        let w = Wire {
            n: self.org_name.clone(),
            o: self.org_id.0,
            k: self.public_key.0,
            e: self.epoch,
            f: self.cert_fingerprint.0,
            a: self.addresses.clone(),
        };
        let mut body = vec![VERSION];
        body.extend(serde_json::to_vec(&w).unwrap_or_default());
        let sum = blake3::hash(&body);
        body.extend_from_slice(&sum.as_bytes()[..4]);
        format!("{PREFIX}{}", data_encoding::BASE64URL_NOPAD.encode(&body))
    }

    /// Parses one line.
    pub fn parse(text: &str) -> Result<Bundle, BundleError> {
        let t = text.trim();
        let rest = t.strip_prefix(PREFIX).ok_or(BundleError::NotABundle)?;
        let body = data_encoding::BASE64URL_NOPAD
            .decode(rest.as_bytes())
            .map_err(|_| BundleError::Truncated)?;
        if body.len() < 6 {
            return Err(BundleError::Truncated);
        }
        let (data, sum) = body.split_at(body.len() - 4);
        if blake3::hash(data).as_bytes()[..4] != *sum {
            if serde_json::from_slice::<Wire>(&data[1..]).is_err() {
                return Err(BundleError::Truncated);
            }
            return Err(BundleError::Checksum);
        }
        if data[0] != VERSION {
            return Err(BundleError::Version(data[0]));
        }
        let w: Wire = serde_json::from_slice(&data[1..])
            .map_err(|e| BundleError::Malformed(e.to_string()))?;
        Ok(Bundle {
            org_name: w.n,
            org_id: OrgId(w.o),
            public_key: OrgPublicKey(w.k),
            epoch: w.e,
            cert_fingerprint: Fingerprint(w.f),
            addresses: w.a,
        })
    }
}

impl fmt::Display for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_line())
    }
}
