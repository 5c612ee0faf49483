//! The instance directory: identity, secrets, TLS certificate, config
//! template and partners file. See the crate documentation for the layout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use orgsync_protocol::identity::{Fingerprint, OrgKeyPair, OrgPublicKey, PairKeys};
use orgsync_protocol::model::{InstanceId, OrgId};
use orgsync_protocol::rotation::{RotationChain, RotationLink, RotationSignature, MAX_CHAIN};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::bundle::Bundle;
use crate::error::KeytoolError;
use crate::fsutil::{self, PRIVATE_DIR_MODE, PUBLIC_FILE_MODE, SECRET_FILE_MODE};
use crate::partners::{Partner, PartnerState, PartnersFile};
use crate::timefmt;

/// `orgsync.toml`: the daemon's configuration (written once by `init`).
pub const CONFIG_FILE: &str = "orgsync.toml";
/// `identity.toml`: the public identity of the instance.
pub const IDENTITY_FILE: &str = "identity.toml";
/// `partners.toml`: the paired (and revoked) partners.
pub const PARTNERS_FILE: &str = "partners.toml";
/// `tls.crt`: the instance's self-signed certificate (PEM).
pub const TLS_CERT_FILE: &str = "tls.crt";
/// `secrets/`: the private directory.
pub const SECRETS_DIR: &str = "secrets";
/// `secrets/tls.key`: the instance TLS key (PKCS#8 PEM).
pub const TLS_KEY_FILE: &str = "tls.key";
/// Default listen address of `init`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";
/// Subject alternative name of instance certificates (peers pin the
/// certificate itself, never the name).
pub const CERT_SAN: &str = "orgsync";

/// The `orgsync.toml` written by `init`; `<HOST:PORT>` is the listen address.
pub fn config_template(listen: &str) -> String {
    format!(
        "# orgsync instance configuration. See `orgsyncd --help`.\n\
         listen = \"{listen}\"\n\
         \n\
         [store]\n\
         # sled page cache, in MiB.\n\
         cache_capacity_mb = 64\n"
    )
}

/// Checks that `address` looks like HOST:PORT (a port number after the last
/// colon, a non-empty host; `[v6]:port` accepted).
pub fn validate_address(address: &str) -> Result<(), KeytoolError> {
    let bad = || KeytoolError::BadAddress {
        address: address.to_string(),
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == '"')
        || port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(bad());
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad());
    }
    Ok(())
}

/// Whether `address` listens on all interfaces (not a connectable address).
pub fn is_wildcard(address: &str) -> bool {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    matches!(host, "0.0.0.0" | "[::]" | "::" | "*")
}

fn validate_org_name(name: &str) -> Result<(), KeytoolError> {
    let why = if name.trim().is_empty() {
        Some("it is empty")
    } else if name.chars().count() > 100 {
        Some("it is longer than 100 characters")
    } else if name.chars().any(char::is_control) {
        Some("it contains control characters")
    } else if name != name.trim() {
        Some("it starts or ends with spaces")
    } else {
        None
    };
    match why {
        Some(why) => Err(KeytoolError::BadOrgName {
            name: name.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// identity.toml
// ---------------------------------------------------------------------------

/// The on-disk form of `identity.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdentityFile {
    org_name: String,
    org_id: String,
    instance_id: String,
    epoch: u32,
    genesis_public_key: String,
    public_keys: BTreeMap<String, String>,
    cert_fingerprint: String,
    created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotated_at: Option<String>,
    /// `[[rotation]]`: the signed links, oldest first (public data).
    #[serde(default, rename = "rotation", skip_serializing_if = "Vec::is_empty")]
    rotations: Vec<LinkEntry>,
}

/// One `[[rotation]]` entry of `identity.toml`: a [`RotationLink`] in text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkEntry {
    epoch: u32,
    public_key: String,
    cert_fingerprint: String,
    signature: String,
}

impl LinkEntry {
    fn of(link: &RotationLink) -> LinkEntry {
        LinkEntry {
            epoch: link.epoch,
            public_key: key_hex(&link.public_key),
            cert_fingerprint: link.cert_fingerprint.to_string(),
            signature: data_encoding::HEXLOWER.encode(&link.signature.0),
        }
    }

    fn parse(&self, path: &Path) -> Result<RotationLink, KeytoolError> {
        let what = format!("rotation (epoch {})", self.epoch);
        let sig = data_encoding::HEXLOWER_PERMISSIVE
            .decode(self.signature.trim().as_bytes())
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .ok_or_else(|| {
                KeytoolError::parse(path, format!("{what}: signature is not 128 hex digits"))
            })?;
        Ok(RotationLink {
            epoch: self.epoch,
            public_key: OrgPublicKey(hex32(
                path,
                &format!("{what}: public_key"),
                &self.public_key,
            )?),
            cert_fingerprint: self
                .cert_fingerprint
                .parse()
                .map_err(|e| KeytoolError::parse(path, format!("{what}: cert_fingerprint: {e}")))?,
            signature: RotationSignature(sig),
        })
    }
}

fn hex32(path: &Path, what: &str, text: &str) -> Result<[u8; 32], KeytoolError> {
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.trim().as_bytes())
        .map_err(|_| KeytoolError::parse(path, format!("{what} is not hexadecimal")))?;
    bytes
        .try_into()
        .map_err(|_| KeytoolError::parse(path, format!("{what} is not 32 bytes (64 hex digits)")))
}

/// Hex of a public key, as stored in the TOML files.
pub fn key_hex(key: &OrgPublicKey) -> String {
    data_encoding::HEXLOWER.encode(&key.0)
}

// ---------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------

/// Everything an instance knows about itself, secrets included. Loaded by
/// [`InstanceDir::load_identity`]; the secrets are zeroized on drop.
pub struct Identity {
    /// The organisation's name (shown to partners).
    pub org_name: String,
    /// The organisation id (shown as an account number).
    pub org_id: OrgId,
    /// This instance's id (tags its writes).
    pub instance_id: InstanceId,
    /// The current key epoch.
    pub epoch: u32,
    /// The genesis (epoch 0) public key: `org_id == genesis_public_key.org_id()`.
    pub genesis_public_key: OrgPublicKey,
    /// Every kept key pair by epoch; always holds `epoch`.
    pub keys: BTreeMap<u32, OrgKeyPair>,
    /// The instance certificate (DER).
    pub cert_der: Vec<u8>,
    /// The instance TLS private key (PKCS#8 DER).
    pub key_der: Zeroizing<Vec<u8>>,
    /// SHA-256 fingerprint of `cert_der`.
    pub fingerprint: Fingerprint,
    /// When `init` ran (RFC 3339).
    pub created_at: String,
    /// The rotation links by epoch (from `identity.toml`): link `e` is the
    /// key of epoch `e` signed by the key of epoch `e - 1`.
    pub rotations: BTreeMap<u32, RotationLink>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("org_name", &self.org_name)
            .field("org_id", &self.org_id)
            .field("instance_id", &self.instance_id)
            .field("epoch", &self.epoch)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The current key pair.
    pub fn current_key(&self) -> &OrgKeyPair {
        // Invariant checked by load_identity/create: `keys` holds `epoch`.
        &self.keys[&self.epoch]
    }

    /// The current public key.
    pub fn public_key(&self) -> OrgPublicKey {
        self.current_key().public()
    }

    /// The public bundle of this instance with the given addresses, with
    /// its rotation proof after a rotation ([`Identity::rotation_chain`]).
    pub fn bundle(&self, addresses: Vec<String>) -> Bundle {
        Bundle {
            org_name: self.org_name.clone(),
            org_id: self.org_id,
            public_key: self.public_key(),
            epoch: self.epoch,
            cert_fingerprint: self.fingerprint,
            addresses,
            rotation: self.rotation_chain(),
        }
    }

    /// The public key of `epoch`, from the kept keys or the rotation links.
    fn public_key_of(&self, epoch: u32) -> Option<OrgPublicKey> {
        if epoch == 0 {
            return Some(self.genesis_public_key);
        }
        self.keys
            .get(&epoch)
            .map(OrgKeyPair::public)
            .or_else(|| self.rotations.get(&epoch).map(|l| l.public_key))
    }

    /// The link to `epoch`: the recorded one, or (for an epoch rotated by a
    /// build that did not record links) one signed now with the kept key of
    /// `epoch - 1`, binding the current certificate.
    fn link(&self, epoch: u32) -> Option<RotationLink> {
        if let Some(l) = self.rotations.get(&epoch) {
            return Some(l.clone());
        }
        let previous = self.keys.get(&epoch.checked_sub(1)?)?;
        let key = self.keys.get(&epoch)?;
        Some(RotationLink::sign(
            previous,
            &self.org_id,
            epoch,
            key.public(),
            self.fingerprint,
        ))
    }

    /// The rotation proof our bundle carries: the last (at most
    /// [`MAX_CHAIN`]) consecutive links ending at the current epoch, from
    /// genesis when there are no more. `None` at epoch 0, or when not even
    /// the newest link can be recorded or signed.
    pub fn rotation_chain(&self) -> Option<RotationChain> {
        let mut links = Vec::new();
        let mut epoch = self.epoch;
        while epoch >= 1 && links.len() < MAX_CHAIN {
            let Some(link) = self.link(epoch) else { break };
            links.push(link);
            epoch -= 1;
        }
        links.reverse();
        // The base key is the one of the epoch before the first link; drop
        // links from the front until it is known.
        while let Some(first) = links.first() {
            if let Some(base_key) = self.public_key_of(first.epoch - 1) {
                return Some(RotationChain { base_key, links });
            }
            links.remove(0);
        }
        None
    }

    /// The pair epoch to use with `partner` now: `max(our epoch, its epoch)`.
    ///
    /// Pair epochs: the pair key of pair epoch `e` is derived from our newest
    /// kept key with epoch ≤ `e` and the partner's key on file (whose epoch
    /// must be ≤ `e`). When both sides hold each other's current key, both
    /// compute the same pair epoch and the same keys.
    pub fn pair_epoch(&self, partner: &Partner) -> u32 {
        self.epoch.max(partner.epoch)
    }

    /// Pair keys with `partner` for pair epoch `epoch` (see
    /// [`Identity::pair_epoch`]). `send` seals what we send, `recv` opens
    /// what the partner sends; the partner computes the mirror image.
    ///
    /// # Errors
    /// [`KeytoolError::Revoked`] for a revoked partner,
    /// [`KeytoolError::UnknownEpoch`] if we keep no key ≤ `epoch` or the
    /// partner's key on file is newer than `epoch`, [`KeytoolError::PairKey`]
    /// for self-pairing or a weak partner key.
    pub fn pair_keys(&self, partner: &Partner, epoch: u32) -> Result<PairKeys, KeytoolError> {
        if partner.state == PartnerState::Revoked {
            return Err(KeytoolError::Revoked {
                org_id: partner.org_id.account_number(),
                name: partner.name.clone(),
                revoked_at: partner.revoked_at.clone().unwrap_or_default(),
            });
        }
        let unknown = || KeytoolError::UnknownEpoch {
            epoch,
            kept: self
                .keys
                .keys()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        };
        if partner.epoch > epoch {
            return Err(unknown());
        }
        let (_, key) = self.keys.range(..=epoch).next_back().ok_or_else(unknown)?;
        key.pair_keys(self.org_id, partner.org_id, &partner.public_key, epoch)
            .map_err(|source| KeytoolError::PairKey {
                partner: partner.name.clone(),
                source,
            })
    }

    /// The instance certificate for rustls/quinn.
    pub fn tls_certificate(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.cert_der.clone())
    }

    /// The instance TLS private key for rustls, borrowed from the wiped-on-
    /// drop buffer. Parse it with
    /// `rustls::crypto::ring::sign::any_supported_type` and serve it through
    /// a certificate resolver: an owned `PrivateKeyDer` handed to
    /// `with_single_cert` would be dropped unwiped. (There is deliberately
    /// no owned-copy accessor.)
    pub fn tls_private_key_ref(&self) -> PrivateKeyDer<'_> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.as_slice()))
    }
}

// ---------------------------------------------------------------------------
// InstanceDir
// ---------------------------------------------------------------------------

/// An instance directory (see the crate documentation for its layout).
#[derive(Debug, Clone)]
pub struct InstanceDir {
    root: PathBuf,
}

impl InstanceDir {
    /// The instance directory at `path` (nothing is read yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        InstanceDir { root: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }
    /// `DIR/orgsync.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }
    /// `DIR/identity.toml`.
    pub fn identity_path(&self) -> PathBuf {
        self.root.join(IDENTITY_FILE)
    }
    /// `DIR/partners.toml`.
    pub fn partners_path(&self) -> PathBuf {
        self.root.join(PARTNERS_FILE)
    }
    /// `DIR/tls.crt`.
    pub fn tls_cert_path(&self) -> PathBuf {
        self.root.join(TLS_CERT_FILE)
    }
    /// `DIR/secrets`.
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join(SECRETS_DIR)
    }
    /// `DIR/secrets/tls.key`.
    pub fn tls_key_path(&self) -> PathBuf {
        self.secrets_dir().join(TLS_KEY_FILE)
    }
    /// `DIR/secrets/org-<epoch>.key`.
    pub fn org_key_path(&self, epoch: u32) -> PathBuf {
        self.secrets_dir().join(format!("org-{epoch}.key"))
    }

    /// Whether `identity.toml` exists.
    pub fn is_initialised(&self) -> bool {
        self.identity_path().exists()
    }

    /// Creates a new instance at `path` (used by `init`): the directory
    /// (0700), the organisation key pair (epoch 0), the TLS identity, the
    /// config template with `listen`, `identity.toml` and an empty
    /// `partners.toml`.
    ///
    /// # Errors
    /// [`KeytoolError::AlreadyInitialised`] if `identity.toml` or any secret
    /// already exists (nothing is overwritten); I/O errors with their path.
    pub fn create(
        path: impl Into<PathBuf>,
        org_name: &str,
        listen: &str,
    ) -> Result<Identity, KeytoolError> {
        let dir = InstanceDir::new(path);
        validate_org_name(org_name)?;
        validate_address(listen)?;
        if dir.is_initialised()
            || dir.org_key_path(0).exists()
            || dir.tls_key_path().exists()
            || dir.partners_path().exists()
        {
            return Err(KeytoolError::AlreadyInitialised {
                path: dir.root.clone(),
            });
        }
        fsutil::create_private_dir(&dir.root)?;
        fsutil::create_private_dir(&dir.secrets_dir())?;

        let key = OrgKeyPair::generate();
        let genesis = key.public();
        let org_id = genesis.org_id();
        let instance_id = InstanceId::random();

        let (cert_der, cert_pem, key_der, key_pem) = make_certificate(org_name, &instance_id)?;
        let fingerprint = Fingerprint::of_certificate(&cert_der);
        let created_at = timefmt::now_rfc3339();

        // Secrets first, identity.toml last: a crash half-way leaves no
        // identity.toml, and init refuses to overwrite the secrets, so the
        // operator sees a clear state.
        dir.write_org_key(0, &key)?;
        fsutil::write_atomic(&dir.tls_key_path(), key_pem.as_bytes(), SECRET_FILE_MODE)?;
        fsutil::write_atomic(&dir.tls_cert_path(), cert_pem.as_bytes(), PUBLIC_FILE_MODE)?;
        if !dir.config_path().exists() {
            fsutil::write_atomic(
                &dir.config_path(),
                config_template(listen).as_bytes(),
                PUBLIC_FILE_MODE,
            )?;
        }
        dir.save_partners(&[])?;

        let mut keys = BTreeMap::new();
        keys.insert(0, key);
        let identity = Identity {
            rotations: BTreeMap::new(),
            org_name: org_name.to_string(),
            org_id,
            instance_id,
            epoch: 0,
            genesis_public_key: genesis,
            keys,
            cert_der,
            key_der,
            fingerprint,
            created_at,
        };
        dir.write_identity_file(&identity, None)?;
        Ok(identity)
    }

    fn write_org_key(&self, epoch: u32, key: &OrgKeyPair) -> Result<(), KeytoolError> {
        let secret = key.secret_bytes();
        let mut text = Zeroizing::new(data_encoding::HEXLOWER.encode(&secret[..]));
        text.push('\n');
        fsutil::write_atomic(&self.org_key_path(epoch), text.as_bytes(), SECRET_FILE_MODE)
    }

    fn write_identity_file(
        &self,
        id: &Identity,
        rotated_at: Option<String>,
    ) -> Result<(), KeytoolError> {
        let file = IdentityFile {
            org_name: id.org_name.clone(),
            org_id: id.org_id.account_number(),
            instance_id: id.instance_id.to_string(),
            epoch: id.epoch,
            genesis_public_key: key_hex(&id.genesis_public_key),
            public_keys: id
                .keys
                .iter()
                .map(|(e, k)| (e.to_string(), key_hex(&k.public())))
                .collect(),
            cert_fingerprint: id.fingerprint.to_string(),
            created_at: id.created_at.clone(),
            rotated_at,
            rotations: id.rotations.values().map(LinkEntry::of).collect(),
        };
        let text = toml::to_string(&file)
            .map_err(|e| KeytoolError::parse(self.identity_path(), e.to_string()))?;
        let text = format!(
            "# orgsync instance identity (public). Written by orgsync-keytool; do not edit.\n{text}"
        );
        fsutil::write_atomic(&self.identity_path(), text.as_bytes(), PUBLIC_FILE_MODE)
    }

    fn read_identity_file(&self) -> Result<IdentityFile, KeytoolError> {
        let path = self.identity_path();
        if !path.exists() {
            return Err(KeytoolError::NotInitialised {
                path: self.root.clone(),
            });
        }
        let text = fsutil::read_text(&path)?;
        toml::from_str(&text).map_err(|e| KeytoolError::parse(&path, e.to_string()))
    }

    /// Loads the identity, secrets included, after checking permissions:
    /// the directory must not be writable by group/others, `secrets/` must
    /// be 0700 and every secret file 0600 (or stricter). Every kept key must
    /// match the public key recorded for its epoch, the certificate must
    /// match its recorded fingerprint, and the account number must belong to
    /// the genesis key.
    pub fn load_identity(&self) -> Result<Identity, KeytoolError> {
        let file = self.read_identity_file()?;
        let path = self.identity_path();
        fsutil::check_not_writable_by_others(&self.root, PRIVATE_DIR_MODE)?;
        fsutil::check_private_dir(&self.secrets_dir())?;

        let org_id: OrgId = file
            .org_id
            .parse()
            .map_err(|e| KeytoolError::parse(&path, format!("org_id: {e}")))?;
        let instance_id: InstanceId = file
            .instance_id
            .parse()
            .map_err(|e| KeytoolError::parse(&path, format!("instance_id: {e}")))?;
        let genesis = OrgPublicKey(hex32(
            &path,
            "genesis_public_key",
            &file.genesis_public_key,
        )?);
        if genesis.org_id() != org_id {
            return Err(KeytoolError::parse(
                &path,
                "org_id does not belong to genesis_public_key (file edited or corrupted)",
            ));
        }
        let mut keys = BTreeMap::new();
        for (epoch_text, public_hex) in &file.public_keys {
            let epoch: u32 = epoch_text.parse().map_err(|_| {
                KeytoolError::parse(
                    &path,
                    format!("public_keys: {epoch_text:?} is not an epoch number"),
                )
            })?;
            let public = OrgPublicKey(hex32(&path, &format!("public_keys.{epoch}"), public_hex)?);
            let key = self.read_org_key(epoch)?;
            if key.public() != public {
                return Err(KeytoolError::parse(
                    self.org_key_path(epoch),
                    format!("does not hold the key of epoch {epoch} recorded in identity.toml"),
                ));
            }
            if epoch == 0 && public != genesis {
                return Err(KeytoolError::parse(
                    &path,
                    "public_keys.0 differs from genesis_public_key",
                ));
            }
            keys.insert(epoch, key);
        }
        if !keys.contains_key(&file.epoch) {
            return Err(KeytoolError::parse(
                &path,
                format!("epoch = {} but public_keys has no entry for it", file.epoch),
            ));
        }

        let key_pem = fsutil::read_secret(&self.tls_key_path(), 64 * 1024)?;
        let mut parsed = PrivatePkcs8KeyDer::from_pem_slice(&key_pem).map_err(|e| {
            KeytoolError::parse(self.tls_key_path(), format!("not a PKCS#8 PEM key: {e}"))
        })?;
        let key_der = Zeroizing::new(parsed.secret_pkcs8_der().to_vec());
        // pki-types does not wipe its key buffers on drop: wipe the
        // decoded copy here (the PEM text is in a Zeroizing buffer).
        zeroize::Zeroize::zeroize(&mut parsed);
        let cert_path = self.tls_cert_path();
        let cert_pem = fsutil::read_text(&cert_path)?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| KeytoolError::parse(&cert_path, format!("not a PEM certificate: {e}")))?
            .to_vec();
        let fingerprint = Fingerprint::of_certificate(&cert_der);
        let recorded: Fingerprint = file
            .cert_fingerprint
            .parse()
            .map_err(|e| KeytoolError::parse(&path, format!("cert_fingerprint: {e}")))?;
        if recorded != fingerprint {
            return Err(KeytoolError::parse(
                &cert_path,
                format!(
                    "fingerprint {fingerprint} differs from {recorded} recorded in identity.toml"
                ),
            ));
        }

        let mut rotations = BTreeMap::new();
        for entry in &file.rotations {
            let link = entry.parse(&path)?;
            if link.epoch == 0 || link.epoch > file.epoch {
                return Err(KeytoolError::parse(
                    &path,
                    format!(
                        "rotation for epoch {} is outside 1..={}",
                        link.epoch, file.epoch
                    ),
                ));
            }
            if keys
                .get(&link.epoch)
                .is_some_and(|k| k.public() != link.public_key)
            {
                return Err(KeytoolError::parse(
                    &path,
                    format!(
                        "rotation for epoch {} names another key than public_keys.{}",
                        link.epoch, link.epoch
                    ),
                ));
            }
            rotations.insert(link.epoch, link);
        }
        // Each recorded link must be signed by the key of the epoch before
        // it (kept, or named by the previous link): a damaged link would
        // otherwise only show up as partners refusing our bundle.
        for link in rotations.values() {
            let previous = match link.epoch - 1 {
                0 => Some(genesis),
                e => keys
                    .get(&e)
                    .map(OrgKeyPair::public)
                    .or_else(|| rotations.get(&e).map(|l| l.public_key)),
            };
            if previous.is_some_and(|k| !link.is_signed_by(&k, &org_id)) {
                return Err(KeytoolError::parse(
                    &path,
                    format!(
                        "rotation for epoch {} is not signed by the key of epoch {} \
                         (file edited or corrupted)",
                        link.epoch,
                        link.epoch - 1
                    ),
                ));
            }
        }

        Ok(Identity {
            rotations,
            org_name: file.org_name,
            org_id,
            instance_id,
            epoch: file.epoch,
            genesis_public_key: genesis,
            keys,
            cert_der,
            key_der,
            fingerprint,
            created_at: file.created_at,
        })
    }

    fn read_org_key(&self, epoch: u32) -> Result<OrgKeyPair, KeytoolError> {
        let path = self.org_key_path(epoch);
        let raw = fsutil::read_secret(&path, 256)?;
        let text = std::str::from_utf8(&raw)
            .map_err(|_| KeytoolError::parse(&path, "is not text (expected 64 hex digits)"))?
            .trim();
        if text.len() != 64 {
            return Err(KeytoolError::parse(&path, "expected 64 hex digits"));
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        data_encoding::HEXLOWER_PERMISSIVE
            .decode_mut(text.as_bytes(), &mut secret[..])
            .map_err(|_| KeytoolError::parse(&path, "expected 64 hex digits"))?;
        Ok(OrgKeyPair::from_secret_bytes(&secret))
    }

    /// The `listen` address from `orgsync.toml` (other keys are the
    /// daemon's business and ignored here). `None` if the file or key is
    /// missing.
    pub fn listen_address(&self) -> Result<Option<String>, KeytoolError> {
        let path = self.config_path();
        if !path.exists() {
            return Ok(None);
        }
        let text = fsutil::read_text(&path)?;
        let value: toml::Table =
            toml::from_str(&text).map_err(|e| KeytoolError::parse(&path, e.to_string()))?;
        match value.get("listen") {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(KeytoolError::parse(
                &path,
                "listen must be a string \"HOST:PORT\"",
            )),
        }
    }

    /// The addresses to advertise in our bundle: `explicit` if given,
    /// otherwise the `listen` address of `orgsync.toml` unless it is a
    /// wildcard (0.0.0.0 / [::]), which a partner cannot connect to.
    pub fn advertised_addresses(&self, explicit: &[String]) -> Result<Vec<String>, KeytoolError> {
        for a in explicit {
            validate_address(a)?;
        }
        if !explicit.is_empty() {
            return Ok(explicit.to_vec());
        }
        Ok(self
            .listen_address()?
            .filter(|l| validate_address(l).is_ok() && !is_wildcard(l))
            .into_iter()
            .collect())
    }

    /// The partners in `partners.toml` (empty if the file does not exist).
    /// Refuses a file (or directory) that group/others can write.
    pub fn load_partners(&self) -> Result<Vec<Partner>, KeytoolError> {
        let path = self.partners_path();
        if !path.exists() {
            return Ok(Vec::new());
        }
        fsutil::check_not_writable_by_others(&self.root, PRIVATE_DIR_MODE)?;
        fsutil::check_not_writable_by_others(&path, SECRET_FILE_MODE)?;
        let text = fsutil::read_text(&path)?;
        let file: PartnersFile =
            toml::from_str(&text).map_err(|e| KeytoolError::parse(&path, e.to_string()))?;
        Ok(file.partner)
    }

    /// Writes `partners.toml` atomically (0600).
    pub fn save_partners(&self, partners: &[Partner]) -> Result<(), KeytoolError> {
        let path = self.partners_path();
        let file = PartnersFile {
            partner: partners.to_vec(),
        };
        let text = toml::to_string(&file).map_err(|e| KeytoolError::parse(&path, e.to_string()))?;
        let text = format!(
            "# orgsync partners. Managed by orgsync-keytool (import, join, invite, revoke).\n{text}"
        );
        fsutil::write_atomic(&path, text.as_bytes(), SECRET_FILE_MODE)
    }

    /// Starts a new key epoch: writes `secrets/org-<epoch+1>.key`, signs the
    /// rotation link (new key and certificate, signed with the current key)
    /// and records the new epoch, public key and link in `identity.toml`.
    /// Links missing for earlier epochs (rotated before links were recorded)
    /// are signed too where both keys are kept. Old keys are kept. Returns
    /// the updated identity.
    pub fn rotate(&self) -> Result<Identity, KeytoolError> {
        let mut id = self.load_identity()?;
        let next = id.epoch.checked_add(1).ok_or_else(|| {
            KeytoolError::parse(self.identity_path(), "epoch cannot go beyond u32::MAX")
        })?;
        let key = OrgKeyPair::generate();
        self.write_org_key(next, &key)?;
        id.keys.insert(next, key);
        id.epoch = next;
        for epoch in 1..=next {
            if !id.rotations.contains_key(&epoch) {
                if let Some(link) = id.link(epoch) {
                    id.rotations.insert(epoch, link);
                }
            }
        }
        self.write_identity_file(&id, Some(timefmt::now_rfc3339()))?;
        Ok(id)
    }
}

type CertParts = (Vec<u8>, String, Zeroizing<Vec<u8>>, Zeroizing<String>);

fn make_certificate(org_name: &str, instance: &InstanceId) -> Result<CertParts, KeytoolError> {
    let err = |e: rcgen::Error| KeytoolError::Certificate(e.to_string());
    let key_pair = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(vec![CERT_SAN.to_string()]).map_err(err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("orgsync instance {instance}"),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, org_name.to_string());
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    // RFC 5280: 99991231235959Z means "no well-defined expiration"; peers
    // pin the certificate, and rotation replaces it deliberately.
    params.not_after = rcgen::date_time_ymd(9999, 12, 31);
    let cert = params.self_signed(&key_pair).map_err(err)?;
    Ok((
        cert.der().to_vec(),
        cert.pem(),
        Zeroizing::new(key_pair.serialize_der()),
        Zeroizing::new(key_pair.serialize_pem()),
    ))
}
