//! The daemon's configuration file, `DIR/orgsync.toml`.
//!
//! Every key is optional except `listen`; defaults are below. Unknown keys
//! and bad values are errors that name the file, the line and the key.
//!
//! ```toml
//! listen = "127.0.0.1:7700"      # QUIC endpoint (UDP), required
//!
//! [store]
//! cache_capacity_mb = 64          # sled page cache (a soft limit), 1..=65536
//! flush_every_ms = 0              # group-commit window, 0..=100 (see below)
//!
//! [sync]
//! max_batch_changes = 1000        # changes per sealed batch, 1..=4096
//! max_unacked = 16384             # changes in flight per partner before waiting for acks
//! reconnect_min_ms = 500          # first reconnect delay
//! reconnect_max_ms = 30000        # cap of the exponential backoff
//! min_protocol_version = 1        # oldest wire protocol spoken with partners (staged rollouts, tests)
//! max_protocol_version = 2        # newest wire protocol spoken; 1 = behave as the previous release
//!
//! [api]
//! socket = "api.sock"             # relative paths are relative to DIR
//!
//! [limits]                        # what one partner may make us hold
//! max_blob_bytes = 1073741824     # largest résumé file (1 GiB), received or attached locally
//! max_inbox_items = 10000         # changes held in the inbox per partner, awaiting an admin
//! max_open_requests = 100         # share requests per partner awaiting our admin
//! max_expected_objects = 1000000  # ids one incoming share announced whose data is not here yet
//! max_queued_frames = 64          # governance frames per partner read but not handled yet
//! max_queued_batches = 16         # change batches per partner read but not applied yet
//! webhook_concurrency = 4         # webhook processes running at once
//! webhook_per_minute = 60         # webhook processes started per minute
//!
//! [log]
//! level = "info"                  # a tracing filter: "info", "orgsync_daemon=debug,warn", ...
//! format = "text"                 # "text" (human) or "json" (one object per line)
//!
//! # Custom fields, one table each. Exactly one of kind/role/category says
//! # where the field applies: every object of a kind, contacts with a role,
//! # or organizations with a category.
//! [[custom_field]]
//! name = "linkedin"
//! type = "text"                   # text number integer date bool choice ref hash
//! kind = "contact"
//!
//! [[custom_field]]
//! name = "seniority"
//! type = "choice"
//! choices = ["junior", "senior"]
//! role = "engineer"
//! ```
//!
//! What a change takes effect without a restart: the daemon watches the
//! file; `log.level` and the custom fields apply at once, every other key is
//! read at start only (a change is logged as needing a restart). A file that
//! does not validate is reported and the previous configuration stays.
//!
//! `flush_every_ms` is how long the group-commit flusher waits after the
//! first pending write before it flushes, to gather more writers into the
//! same flush. With 0 (the default) it flushes at once, and writers that
//! arrive during a flush share the next one; that already batches under
//! load without adding latency to a lone write.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use orgsync_protocol::model::{
    CustomField, FieldScope, FieldType, Kind, Schema, MAX_FIELD_NAME_LEN,
};
use orgsync_protocol::wire::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use serde::Deserialize;
use toml::Spanned;

/// The file name of the configuration inside the instance directory.
pub const CONFIG_FILE: &str = "orgsync.toml";

/// Default `[store] cache_capacity_mb`.
pub const DEFAULT_CACHE_CAPACITY_MB: u64 = 64;
/// Default `[store] flush_every_ms`.
pub const DEFAULT_FLUSH_EVERY_MS: u64 = 0;
/// Default `[sync] max_batch_changes`.
pub const DEFAULT_MAX_BATCH_CHANGES: usize = 1000;
/// Default `[sync] max_unacked`.
pub const DEFAULT_MAX_UNACKED: u64 = 16384;
/// Default `[sync] reconnect_min_ms`.
pub const DEFAULT_RECONNECT_MIN_MS: u64 = 500;
/// Default `[sync] reconnect_max_ms`.
pub const DEFAULT_RECONNECT_MAX_MS: u64 = 30_000;
/// Default `[api] socket`, relative to the instance directory.
pub const DEFAULT_API_SOCKET: &str = "api.sock";
/// Default `[web] listen`: the admin console, on loopback only.
pub const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:7780";
/// Default `[log] level`.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default `[limits] max_blob_bytes` (1 GiB).
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 1 << 30;
/// Default `[limits] max_inbox_items`.
pub const DEFAULT_MAX_INBOX_ITEMS: u64 = 10_000;
/// Default `[limits] max_open_requests`.
pub const DEFAULT_MAX_OPEN_REQUESTS: u64 = 100;
/// Default `[limits] max_expected_objects`.
pub const DEFAULT_MAX_EXPECTED_OBJECTS: u64 = 1_000_000;
/// Default `[limits] max_queued_frames`.
pub const DEFAULT_MAX_QUEUED_FRAMES: u64 = 64;
/// Default `[limits] max_queued_batches`.
pub const DEFAULT_MAX_QUEUED_BATCHES: u64 = 16;
/// Default `[limits] webhook_concurrency`.
pub const DEFAULT_WEBHOOK_CONCURRENCY: u64 = 4;
/// Default `[limits] webhook_per_minute`.
pub const DEFAULT_WEBHOOK_PER_MINUTE: u64 = 60;

/// The validated configuration of one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// UDP address of the QUIC endpoint.
    pub listen: SocketAddr,
    /// Store settings.
    pub store: StoreConfig,
    /// Sync settings.
    pub sync: SyncConfig,
    /// Local API settings.
    pub api: ApiConfig,
    /// Log settings.
    pub log: LogConfig,
    /// The web admin console (`[web]`).
    pub web: WebConfig,
    /// What one partner may make this instance hold or run.
    pub limits: LimitsConfig,
    /// Custom-field definitions (`[[custom_field]]`), which type the custom
    /// values written through the API and the drop folder.
    pub schema: Schema,
}

/// `[store]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// sled page cache size in bytes (from `cache_capacity_mb`).
    pub cache_capacity_bytes: u64,
    /// Group-commit window in milliseconds.
    pub flush_every_ms: u64,
}

/// `[sync]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    /// Most changes in one batch sent to a partner.
    pub max_batch_changes: usize,
    /// Most changes sent to a partner and not yet acknowledged.
    pub max_unacked: u64,
    /// First reconnect delay in milliseconds.
    pub reconnect_min_ms: u64,
    /// Largest reconnect delay in milliseconds.
    pub reconnect_max_ms: u64,
    /// Oldest wire-protocol version offered to partners. Raising it (after
    /// every partner is upgraded) refuses partners still on older ones.
    pub min_protocol_version: u16,
    /// Newest wire-protocol version offered to partners: lowering it makes
    /// this daemon speak as the previous release did (staged rollouts,
    /// and the version tests).
    pub max_protocol_version: u16,
}

/// `[limits]`: bounds on what a paired partner (authenticated, not
/// trusted) can make this instance store, queue or run. Over a bound the
/// input is refused with a logged and audited reason, or the partner's
/// streams are no longer read (QUIC flow control makes it wait).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Largest blob (résumé file) stored, received from a partner or
    /// attached locally. A transfer announced larger is refused before any
    /// byte is written; one that sends more than announced is aborted and
    /// its partial file removed.
    pub max_blob_bytes: u64,
    /// Most changes held in the inbox for one partner; more are refused
    /// (the partner is told, at most once a minute).
    pub max_inbox_items: usize,
    /// Most share requests from one partner waiting for our admin; more
    /// are refused (the partner is told, at most once a minute).
    pub max_open_requests: usize,
    /// Most object ids one incoming share has announced whose data has not
    /// arrived yet (tracked for the share's received report); ids past it
    /// are not tracked (the partner is told, at most once a minute), the
    /// objects themselves are still accepted.
    pub max_expected_objects: usize,
    /// Governance frames of one partner read and not yet handled: at the
    /// bound its streams are not read until one is handled.
    pub max_queued_frames: usize,
    /// Change batches of one partner read and not yet applied: at the
    /// bound its streams are not read until a batch is applied.
    pub max_queued_batches: usize,
    /// Webhook processes running at once; notifications beyond are skipped
    /// (counted, one warning per minute).
    pub webhook_concurrency: usize,
    /// Webhook processes started per minute; beyond, as above.
    pub webhook_per_minute: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            max_inbox_items: DEFAULT_MAX_INBOX_ITEMS as usize,
            max_open_requests: DEFAULT_MAX_OPEN_REQUESTS as usize,
            max_expected_objects: DEFAULT_MAX_EXPECTED_OBJECTS as usize,
            max_queued_frames: DEFAULT_MAX_QUEUED_FRAMES as usize,
            max_queued_batches: DEFAULT_MAX_QUEUED_BATCHES as usize,
            webhook_concurrency: DEFAULT_WEBHOOK_CONCURRENCY as usize,
            webhook_per_minute: DEFAULT_WEBHOOK_PER_MINUTE,
        }
    }
}

/// `[api]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfig {
    /// Path of the local API's Unix socket (absolute once loaded).
    pub socket: PathBuf,
}

/// `[web]`: the admin console served by `orgsyncd`.
///
/// Guarantee (checked at load): a `listen` address that is not loopback
/// always comes with both `tls_cert` and `tls_key`, so the console never
/// serves passwords in clear text off this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebConfig {
    /// Whether the console is served.
    pub enabled: WebEnabled,
    /// TCP address of the console.
    pub listen: SocketAddr,
    /// PEM certificate chain (absolute once loaded), when served over TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (absolute once loaded), when served over TLS.
    pub tls_key: Option<PathBuf>,
}

/// `[web] enabled`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WebEnabled {
    /// Key absent: served once at least one console account exists
    /// (`orgsync admin add`), so an instance without accounts opens no port.
    #[default]
    Auto,
    /// `enabled = true`: always served.
    On,
    /// `enabled = false`: never served.
    Off,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: WebEnabled::Auto,
            // A constant that parses.
            listen: SocketAddr::from(([127, 0, 0, 1], 7780)),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive string.
    pub level: String,
    /// Human-readable lines or JSON objects.
    pub format: LogFormat,
}

/// `[log] format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("{path}:{line}:{column}: {key}{message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem (0 when toml gave no position).
        line: usize,
        /// 1-based column of the problem (0 when unknown).
        column: usize,
        /// `key `store.cache_capacity_mb`: ` style prefix, empty when no key applies.
        key: String,
        /// What toml said.
        message: String,
    },
    /// A value parsed but is out of range or inconsistent.
    #[error("{path}:{line}: key `{key}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the value (0 when the key is missing from the file).
        line: usize,
        /// Dotted key, e.g. `sync.reconnect_max_ms`.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Spanned<String>,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    web: RawWeb,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    custom_field: Vec<RawCustomField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustomField {
    name: Spanned<String>,
    #[serde(rename = "type")]
    ty: Spanned<String>,
    kind: Option<Spanned<String>>,
    role: Option<Spanned<String>>,
    category: Option<Spanned<String>>,
    #[serde(default)]
    choices: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    cache_capacity_mb: Option<Spanned<u64>>,
    flush_every_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSync {
    max_batch_changes: Option<Spanned<u64>>,
    max_unacked: Option<Spanned<u64>>,
    reconnect_min_ms: Option<Spanned<u64>>,
    reconnect_max_ms: Option<Spanned<u64>>,
    min_protocol_version: Option<Spanned<u64>>,
    max_protocol_version: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_blob_bytes: Option<Spanned<u64>>,
    max_inbox_items: Option<Spanned<u64>>,
    max_open_requests: Option<Spanned<u64>>,
    max_expected_objects: Option<Spanned<u64>>,
    max_queued_frames: Option<Spanned<u64>>,
    max_queued_batches: Option<Spanned<u64>>,
    webhook_concurrency: Option<Spanned<u64>>,
    webhook_per_minute: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    socket: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    enabled: Option<bool>,
    listen: Option<Spanned<String>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
}

impl Config {
    /// Reads and validates `DIR/orgsync.toml`.
    pub fn load(dir: &Path) -> Result<Config, ConfigError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Config::parse(&text, &path, dir)
    }

    /// Parses and validates configuration text. `path` is only used in
    /// error messages; relative paths in the file are resolved against `dir`.
    ///
    /// Guarantees: never panics, whatever `text` holds.
    pub fn parse(text: &str, path: &Path, dir: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span();
            let (line, column) = span
                .as_ref()
                .map(|s| line_col(text, s.start))
                .unwrap_or((0, 0));
            let key = span
                .and_then(|s| key_at(text, s))
                .map(|k| format!("key `{k}`: "))
                .unwrap_or_default();
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                key,
                message: e.message().trim_end().to_string(),
            }
        })?;
        let v = Validator { text, path };

        let listen = raw.listen.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
            v.invalid(
                "listen",
                Some(raw.listen.span()),
                format!(
                    "{:?} is not a socket address (expected e.g. \"127.0.0.1:7700\" or \"[::]:7700\")",
                    raw.listen.get_ref()
                ),
            )
        })?;

        let cache_mb = v.ranged(
            "store.cache_capacity_mb",
            raw.store.cache_capacity_mb,
            DEFAULT_CACHE_CAPACITY_MB,
            1..=65536,
        )?;
        let flush_every_ms = v.ranged(
            "store.flush_every_ms",
            raw.store.flush_every_ms,
            DEFAULT_FLUSH_EVERY_MS,
            0..=100,
        )?;
        let max_batch_changes = v.ranged(
            "sync.max_batch_changes",
            raw.sync.max_batch_changes.clone(),
            DEFAULT_MAX_BATCH_CHANGES as u64,
            1..=orgsync_protocol::wire::MAX_CHANGES_PER_BATCH as u64,
        )?;
        let max_unacked = v.ranged(
            "sync.max_unacked",
            raw.sync.max_unacked.clone(),
            DEFAULT_MAX_UNACKED,
            1..=1 << 24,
        )?;
        let reconnect_min_ms = v.ranged(
            "sync.reconnect_min_ms",
            raw.sync.reconnect_min_ms.clone(),
            DEFAULT_RECONNECT_MIN_MS,
            10..=3_600_000,
        )?;
        let reconnect_max_ms = v.ranged(
            "sync.reconnect_max_ms",
            raw.sync.reconnect_max_ms.clone(),
            DEFAULT_RECONNECT_MAX_MS,
            10..=3_600_000,
        )?;
        if reconnect_max_ms < reconnect_min_ms {
            let span = raw
                .sync
                .reconnect_max_ms
                .as_ref()
                .or(raw.sync.reconnect_min_ms.as_ref())
                .map(|s| s.span());
            return Err(v.invalid(
                "sync.reconnect_max_ms",
                span,
                format!(
                    "{reconnect_max_ms} is smaller than sync.reconnect_min_ms ({reconnect_min_ms})"
                ),
            ));
        }
        let (min_protocol_version, max_protocol_version) = v.protocol_versions(&raw.sync)?;
        if max_unacked < max_batch_changes {
            let span = raw.sync.max_unacked.as_ref().map(|s| s.span());
            return Err(v.invalid(
                "sync.max_unacked",
                span,
                format!(
                    "{max_unacked} is smaller than sync.max_batch_changes ({max_batch_changes}): not even one batch could be sent"
                ),
            ));
        }

        let socket = match &raw.api.socket {
            None => dir.join(DEFAULT_API_SOCKET),
            Some(s) if s.get_ref().trim().is_empty() => {
                return Err(v.invalid("api.socket", Some(s.span()), "must not be empty".into()))
            }
            Some(s) => dir.join(s.get_ref()),
        };

        let level = match &raw.log.level {
            None => DEFAULT_LOG_LEVEL.to_string(),
            Some(s) => {
                tracing_subscriber::EnvFilter::builder()
                    .parse(s.get_ref())
                    .map_err(|e| {
                        v.invalid(
                            "log.level",
                            Some(s.span()),
                            format!("{:?} is not a log filter ({e}); use e.g. \"info\" or \"orgsync_daemon=debug,warn\"", s.get_ref()),
                        )
                    })?;
                s.get_ref().clone()
            }
        };
        let format = match &raw.log.format {
            None => LogFormat::Text,
            Some(s) => match s.get_ref().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(v.invalid(
                        "log.format",
                        Some(s.span()),
                        format!("{other:?} is not a log format (use \"text\" or \"json\")"),
                    ))
                }
            },
        };
        let schema = v.schema(&raw.custom_field)?;
        let limits = v.limits(raw.limits)?;
        let web = v.web(&raw.web, dir)?;

        Ok(Config {
            listen,
            store: StoreConfig {
                cache_capacity_bytes: cache_mb * 1024 * 1024,
                flush_every_ms,
            },
            sync: SyncConfig {
                // Bounded by MAX_CHANGES_PER_BATCH above, so it fits a usize.
                max_batch_changes: max_batch_changes as usize,
                max_unacked,
                reconnect_min_ms,
                reconnect_max_ms,
                min_protocol_version,
                max_protocol_version,
            },
            api: ApiConfig { socket },
            log: LogConfig { level, format },
            web,
            limits,
            schema,
        })
    }

    /// The configuration written by `orgsync-keytool init` and used in tests:
    /// every default, listening on `listen`.
    pub fn with_listen(listen: SocketAddr, dir: &Path) -> Config {
        Config {
            listen,
            store: StoreConfig {
                cache_capacity_bytes: DEFAULT_CACHE_CAPACITY_MB * 1024 * 1024,
                flush_every_ms: DEFAULT_FLUSH_EVERY_MS,
            },
            sync: SyncConfig {
                max_batch_changes: DEFAULT_MAX_BATCH_CHANGES,
                max_unacked: DEFAULT_MAX_UNACKED,
                reconnect_min_ms: DEFAULT_RECONNECT_MIN_MS,
                reconnect_max_ms: DEFAULT_RECONNECT_MAX_MS,
                min_protocol_version: MIN_PROTOCOL_VERSION,
                max_protocol_version: PROTOCOL_VERSION,
            },
            api: ApiConfig {
                socket: dir.join(DEFAULT_API_SOCKET),
            },
            log: LogConfig {
                level: DEFAULT_LOG_LEVEL.into(),
                format: LogFormat::Text,
            },
            web: WebConfig::default(),
            limits: LimitsConfig::default(),
            schema: Schema::default(),
        }
    }

    /// The keys whose value differs between `self` and `new` and that only
    /// take effect at the next start (everything but `log.level` and the
    /// custom fields).
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.listen != new.listen {
            keys.push("listen");
        }
        if self.store != new.store {
            keys.push("store");
        }
        if self.sync != new.sync {
            keys.push("sync");
        }
        if self.api != new.api {
            keys.push("api.socket");
        }
        if self.log.format != new.log.format {
            keys.push("log.format");
        }
        if self.limits != new.limits {
            keys.push("limits");
        }
        if self.web != new.web {
            keys.push("web");
        }
        keys
    }
}

struct Validator<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Validator<'_> {
    fn web(&self, raw: &RawWeb, dir: &Path) -> Result<WebConfig, ConfigError> {
        let enabled = match raw.enabled {
            None => WebEnabled::Auto,
            Some(true) => WebEnabled::On,
            Some(false) => WebEnabled::Off,
        };
        let listen = match &raw.listen {
            None => WebConfig::default().listen,
            Some(s) => s.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
                self.invalid(
                    "web.listen",
                    Some(s.span()),
                    format!(
                        "{:?} is not a socket address (expected e.g. \"{DEFAULT_WEB_LISTEN}\")",
                        s.get_ref()
                    ),
                )
            })?,
        };
        let path = |key: &str, v: &Option<Spanned<String>>| match v {
            None => Ok(None),
            Some(s) if s.get_ref().trim().is_empty() => {
                Err(self.invalid(key, Some(s.span()), "must not be empty".into()))
            }
            Some(s) => Ok(Some(dir.join(s.get_ref()))),
        };
        let tls_cert = path("web.tls_cert", &raw.tls_cert)?;
        let tls_key = path("web.tls_key", &raw.tls_key)?;
        if tls_cert.is_some() != tls_key.is_some() {
            let (key, span) = match &raw.tls_cert {
                Some(s) => ("web.tls_key", Some(s.span())),
                None => ("web.tls_cert", raw.tls_key.as_ref().map(|s| s.span())),
            };
            return Err(self.invalid(
                key,
                span,
                "web.tls_cert and web.tls_key must be set together".into(),
            ));
        }
        // Passwords and session cookies must not cross the network in clear.
        if enabled != WebEnabled::Off && !listen.ip().is_loopback() && tls_cert.is_none() {
            return Err(self.invalid(
                "web.listen",
                raw.listen.as_ref().map(|s| s.span()),
                format!(
                    "{listen} is not a loopback address: set web.tls_cert and web.tls_key (PEM files) to serve the console over TLS, or listen on 127.0.0.1"
                ),
            ));
        }
        Ok(WebConfig {
            enabled,
            listen,
            tls_cert,
            tls_key,
        })
    }

    fn invalid(&self, key: &str, span: Option<Range<usize>>, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: span.map(|s| line_col(self.text, s.start).0).unwrap_or(0),
            key: key.into(),
            message,
        }
    }

    fn ranged(
        &self,
        key: &str,
        value: Option<Spanned<u64>>,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let n = *value.get_ref();
        if range.contains(&n) {
            Ok(n)
        } else {
            Err(self.invalid(
                key,
                Some(value.span()),
                format!(
                    "{n} is out of range (allowed {}..={}, default {default})",
                    range.start(),
                    range.end()
                ),
            ))
        }
    }
}

impl Validator<'_> {
    /// Validates `[sync] min_protocol_version` / `max_protocol_version`:
    /// each within the versions this build speaks, and not an empty range.
    fn protocol_versions(&self, raw: &RawSync) -> Result<(u16, u16), ConfigError> {
        let supported = u64::from(MIN_PROTOCOL_VERSION)..=u64::from(PROTOCOL_VERSION);
        let min = self.ranged(
            "sync.min_protocol_version",
            raw.min_protocol_version.clone(),
            u64::from(MIN_PROTOCOL_VERSION),
            supported.clone(),
        )?;
        let max = self.ranged(
            "sync.max_protocol_version",
            raw.max_protocol_version.clone(),
            u64::from(PROTOCOL_VERSION),
            supported,
        )?;
        if min > max {
            let span = raw
                .min_protocol_version
                .as_ref()
                .or(raw.max_protocol_version.as_ref())
                .map(|s| s.span());
            return Err(self.invalid(
                "sync.min_protocol_version",
                span,
                format!("{min} is above sync.max_protocol_version ({max}): no protocol version would be left to speak"),
            ));
        }
        // Both are within MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION (u16).
        Ok((min as u16, max as u16))
    }

    /// Validates `[limits]`: every bound at least 1 (0 would refuse
    /// everything) and at most a value that still bounds memory.
    fn limits(&self, raw: RawLimits) -> Result<LimitsConfig, ConfigError> {
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(LimitsConfig {
            max_blob_bytes: self.ranged(
                "limits.max_blob_bytes",
                raw.max_blob_bytes,
                DEFAULT_MAX_BLOB_BYTES,
                1..=1 << 40,
            )?,
            max_inbox_items: size(self.ranged(
                "limits.max_inbox_items",
                raw.max_inbox_items,
                DEFAULT_MAX_INBOX_ITEMS,
                1..=10_000_000,
            )?),
            max_open_requests: size(self.ranged(
                "limits.max_open_requests",
                raw.max_open_requests,
                DEFAULT_MAX_OPEN_REQUESTS,
                1..=100_000,
            )?),
            max_expected_objects: size(self.ranged(
                "limits.max_expected_objects",
                raw.max_expected_objects,
                DEFAULT_MAX_EXPECTED_OBJECTS,
                1..=100_000_000,
            )?),
            max_queued_frames: size(self.ranged(
                "limits.max_queued_frames",
                raw.max_queued_frames,
                DEFAULT_MAX_QUEUED_FRAMES,
                1..=4096,
            )?),
            max_queued_batches: size(self.ranged(
                "limits.max_queued_batches",
                raw.max_queued_batches,
                DEFAULT_MAX_QUEUED_BATCHES,
                1..=1024,
            )?),
            webhook_concurrency: size(self.ranged(
                "limits.webhook_concurrency",
                raw.webhook_concurrency,
                DEFAULT_WEBHOOK_CONCURRENCY,
                1..=64,
            )?),
            webhook_per_minute: self.ranged(
                "limits.webhook_per_minute",
                raw.webhook_per_minute,
                DEFAULT_WEBHOOK_PER_MINUTE,
                1..=100_000,
            )?,
        })
    }

    /// Builds the custom-field schema from the `[[custom_field]]` tables.
    fn schema(&self, raw: &[RawCustomField]) -> Result<Schema, ConfigError> {
        let mut fields: Vec<CustomField> = Vec::with_capacity(raw.len());
        for (i, f) in raw.iter().enumerate() {
            let key = |k: &str| format!("custom_field[{i}].{k}");
            let name = f.name.get_ref().trim();
            if name.is_empty()
                || name.len() > MAX_FIELD_NAME_LEN
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(self.invalid(
                    &key("name"),
                    Some(f.name.span()),
                    format!(
                        "{:?} is not a field name (1-{MAX_FIELD_NAME_LEN} letters, digits, '_' or '-')",
                        f.name.get_ref()
                    ),
                ));
            }
            let ty = FIELD_TYPES
                .iter()
                .copied()
                .find(|t| t.as_str() == f.ty.get_ref())
                .ok_or_else(|| {
                    self.invalid(
                        &key("type"),
                        Some(f.ty.span()),
                        format!(
                            "{:?} is not a field type (one of: {})",
                            f.ty.get_ref(),
                            FIELD_TYPES.map(|t| t.as_str()).join(", ")
                        ),
                    )
                })?;
            let scope = match (&f.kind, &f.role, &f.category) {
                (Some(k), None, None) => FieldScope::Kind(
                    k.get_ref()
                        .parse::<Kind>()
                        .map_err(|e| self.invalid(&key("kind"), Some(k.span()), e.to_string()))?,
                ),
                (None, Some(r), None) => FieldScope::Role(r.get_ref().clone()),
                (None, None, Some(c)) => FieldScope::Category(c.get_ref().clone()),
                _ => {
                    return Err(self.invalid(
                        &key("name"),
                        Some(f.name.span()),
                        "needs exactly one of `kind`, `role` or `category`".into(),
                    ))
                }
            };
            if (ty == FieldType::Choice) == f.choices.is_empty() {
                return Err(self.invalid(
                    &key("choices"),
                    Some(f.ty.span()),
                    if ty == FieldType::Choice {
                        "a choice field needs a non-empty `choices` list".into()
                    } else {
                        format!("`choices` only applies to type \"choice\", not {ty:?}")
                    },
                ));
            }
            if fields.iter().any(|d| d.name == name && d.scope == scope) {
                return Err(self.invalid(
                    &key("name"),
                    Some(f.name.span()),
                    format!("custom field {name:?} is defined twice for the same scope"),
                ));
            }
            fields.push(CustomField {
                name: name.to_string(),
                ty,
                choices: f.choices.clone(),
                scope,
            });
        }
        Ok(Schema { fields })
    }
}

/// Every field type, in the order the error message lists them.
const FIELD_TYPES: [FieldType; 8] = [
    FieldType::Text,
    FieldType::Number,
    FieldType::Integer,
    FieldType::Date,
    FieldType::Bool,
    FieldType::Choice,
    FieldType::Ref,
    FieldType::Hash,
];

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    // Step back to a char boundary so slicing cannot panic on odd spans.
    let mut at = offset;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The dotted key defined on the line that holds `span`, with the table it
/// is in: a best effort for error messages, `None` when the line holds no key.
fn key_at(text: &str, span: Range<usize>) -> Option<String> {
    let (line_no, _) = line_col(text, span.start);
    let mut table = String::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if i + 1 == line_no {
            if trimmed.starts_with('[') {
                return Some(trimmed.trim_matches(|c| c == '[' || c == ']').trim().into());
            }
            let (key, _) = trimmed.split_once('=')?;
            let key = key.trim().trim_matches('"');
            if key.is_empty() {
                return None;
            }
            return Some(if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            });
        }
        if trimmed.starts_with('[') && !trimmed.starts_with("[[") {
            if let Some(end) = trimmed.find(']') {
                table = trimmed[1..end].trim().to_string();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/i/orgsync.toml"), Path::new("/i"))
    }

    #[test]
    fn template_gives_defaults() {
        let c = parse("listen = \"127.0.0.1:7700\"\n[store]\ncache_capacity_mb = 64\n").unwrap();
        assert_eq!(
            c,
            Config::with_listen("127.0.0.1:7700".parse().unwrap(), Path::new("/i"))
        );
        assert_eq!(c.api.socket, PathBuf::from("/i/api.sock"));
    }

    #[test]
    fn web_defaults_tls_pairing_and_non_loopback_refusal() {
        let c = parse("listen = \"127.0.0.1:7700\"\n").unwrap();
        assert_eq!(c.web, WebConfig::default());
        assert_eq!(c.web.listen.to_string(), DEFAULT_WEB_LISTEN);
        assert_eq!(c.web.enabled, WebEnabled::Auto);
        let c = parse(
            "listen = \"127.0.0.1:7700\"\n[web]\nenabled = false\nlisten = \"0.0.0.0:8443\"\n",
        )
        .unwrap();
        assert_eq!(c.web.enabled, WebEnabled::Off);
        let err =
            parse("listen = \"127.0.0.1:7700\"\n[web]\nlisten = \"0.0.0.0:8443\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, ConfigError::Invalid { key, line: 3, .. } if key == "web.listen")
                && msg.contains("web.tls_cert")
                && msg.contains("web.tls_key"),
            "{msg}"
        );
        let err = parse("listen = \"127.0.0.1:7700\"\n[web]\ntls_cert = \"c.pem\"\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "web.tls_key"),
            "{err}"
        );
        let c = parse(
            "listen = \"127.0.0.1:7700\"\n[web]\nlisten = \"[::]:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"/k.pem\"\n",
        )
        .unwrap();
        assert_eq!(c.web.tls_cert, Some(PathBuf::from("/i/c.pem")));
        assert_eq!(c.web.tls_key, Some(PathBuf::from("/k.pem")));
        assert!(parse("listen = \"127.0.0.1:7700\"\n[web]\nlisten = \"nope\"\n").is_err());
        assert!(parse("listen = \"127.0.0.1:7700\"\n[web]\nport = 1\n").is_err());
    }

    #[test]
    fn limits_are_read_defaulted_and_bounded() {
        let c = parse("listen = \"127.0.0.1:7700\"\n").unwrap();
        assert_eq!(c.limits, LimitsConfig::default());
        assert_eq!(c.limits.max_blob_bytes, 1 << 30);
        let c = parse(
            "listen = \"127.0.0.1:7700\"\n[limits]\nmax_blob_bytes = 1048576\nmax_inbox_items = 200\n\
             max_open_requests = 20\nmax_queued_frames = 8\nmax_queued_batches = 2\n\
             webhook_concurrency = 1\nwebhook_per_minute = 5\n",
        )
        .unwrap();
        assert_eq!(
            c.limits,
            LimitsConfig {
                max_blob_bytes: 1 << 20,
                max_inbox_items: 200,
                max_open_requests: 20,
                max_expected_objects: DEFAULT_MAX_EXPECTED_OBJECTS as usize,
                max_queued_frames: 8,
                max_queued_batches: 2,
                webhook_concurrency: 1,
                webhook_per_minute: 5,
            }
        );
        // 0 would refuse everything: out of range, with the key and line.
        let e = parse("listen = \"127.0.0.1:7700\"\n[limits]\nmax_inbox_items = 0\n").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("limits.max_inbox_items") && msg.contains(":3:"),
            "{msg}"
        );
        let e = parse("listen = \"127.0.0.1:7700\"\n[limits]\nmax_blobs = 1\n").unwrap_err();
        assert!(e.to_string().contains("max_blobs"), "{e}");
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(
            r#"listen = "[::1]:9000"
[store]
cache_capacity_mb = 8
flush_every_ms = 2
[sync]
max_batch_changes = 500
max_unacked = 2000
reconnect_min_ms = 100
reconnect_max_ms = 1000
[api]
socket = "/run/o.sock"
[log]
level = "orgsync_daemon=debug,warn"
"#,
        )
        .unwrap();
        assert_eq!(c.listen, "[::1]:9000".parse().unwrap());
        assert_eq!(c.store.cache_capacity_bytes, 8 << 20);
        assert_eq!(c.store.flush_every_ms, 2);
        assert_eq!(c.sync.max_batch_changes, 500);
        assert_eq!(c.sync.max_unacked, 2000);
        assert_eq!(c.sync.reconnect_min_ms, 100);
        assert_eq!(c.sync.reconnect_max_ms, 1000);
        assert_eq!(c.api.socket, PathBuf::from("/run/o.sock"));
        assert_eq!(c.log.level, "orgsync_daemon=debug,warn");
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err =
            parse("listen = \"127.0.0.1:1\"\n[store]\ncache_capacity_mb = 1\ncache_size = 3\n")
                .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConfigError::Syntax { line: 4, .. }), "{text}");
        assert!(text.contains("store.cache_size"), "{text}");
        assert!(text.contains("/i/orgsync.toml:4:"), "{text}");
    }

    #[test]
    fn wrong_type_names_key() {
        let err = parse("listen = \"127.0.0.1:1\"\n[sync]\nmax_unacked = \"lots\"\n").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConfigError::Syntax { line: 3, .. }), "{text}");
        assert!(text.contains("sync.max_unacked"), "{text}");
    }

    #[test]
    fn bad_values_name_key_and_line() {
        let err = parse("listen = \"nowhere\"\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { line: 1, key, .. } if key == "listen"),
            "{err}"
        );
        let err =
            parse("listen = \"127.0.0.1:1\"\n\n[store]\ncache_capacity_mb = 0\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { line: 4, key, .. } if key == "store.cache_capacity_mb"),
            "{err}"
        );
        let err = parse(
            "listen = \"127.0.0.1:1\"\n[sync]\nreconnect_min_ms = 5000\nreconnect_max_ms = 1000\n",
        )
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { line: 4, key, .. } if key == "sync.reconnect_max_ms"),
            "{err}"
        );
        let err = parse("listen = \"127.0.0.1:1\"\n[log]\nlevel = \"=[[\"\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { line: 3, key, .. } if key == "log.level"),
            "{err}"
        );
    }

    #[test]
    fn custom_fields_make_the_schema() {
        let c = parse(
            r#"listen = "127.0.0.1:1"
[log]
format = "json"
[[custom_field]]
name = "linkedin"
type = "text"
kind = "contact"
[[custom_field]]
name = "seniority"
type = "choice"
choices = ["junior", "senior"]
role = "engineer"
[[custom_field]]
name = "employees"
type = "integer"
category = "client"
"#,
        )
        .unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        let s = &c.schema;
        assert_eq!(s.fields.len(), 3);
        let f = s.custom_field(Kind::Contact, None, "linkedin").unwrap();
        assert_eq!(f.ty, FieldType::Text);
        let f = s
            .custom_field(Kind::Contact, Some("engineer"), "seniority")
            .unwrap();
        assert_eq!(f.choices, ["junior", "senior"]);
        assert!(s
            .custom_field(Kind::Contact, Some("sales"), "seniority")
            .is_none());
        let f = s
            .custom_field(Kind::Organization, Some("client"), "employees")
            .unwrap();
        assert_eq!(f.ty, FieldType::Integer);
    }

    #[test]
    fn protocol_versions_default_to_every_supported_one_and_are_checked() {
        let c = parse("listen = \"127.0.0.1:1\"\n").unwrap();
        assert_eq!(
            (c.sync.min_protocol_version, c.sync.max_protocol_version),
            (MIN_PROTOCOL_VERSION, PROTOCOL_VERSION)
        );
        let c = parse("listen = \"127.0.0.1:1\"\n[sync]\nmax_protocol_version = 1\n").unwrap();
        assert_eq!(
            (c.sync.min_protocol_version, c.sync.max_protocol_version),
            (1, 1)
        );
        for (text, key, line, says) in [
            (
                "[sync]\nmax_protocol_version = 3\n",
                "sync.max_protocol_version",
                3,
                "out of range (allowed 1..=2",
            ),
            (
                "[sync]\nmin_protocol_version = 0\n",
                "sync.min_protocol_version",
                3,
                "out of range (allowed 1..=2",
            ),
            (
                "[sync]\nmax_protocol_version = 1\nmin_protocol_version = 2\n",
                "sync.min_protocol_version",
                4,
                "2 is above sync.max_protocol_version (1)",
            ),
        ] {
            let err = parse(&format!("listen = \"127.0.0.1:1\"\n{text}")).unwrap_err();
            let shown = err.to_string();
            assert!(
                matches!(&err, ConfigError::Invalid { key: k, line: l, .. } if k == key && *l == line),
                "{shown}"
            );
            assert!(shown.contains(says), "{shown}");
        }
    }

    #[test]
    fn bad_custom_fields_name_the_table_and_key() {
        let cases: [(&str, &str, usize); 6] = [
            (
                "name = \"x\"\ntype = \"colour\"\nkind = \"contact\"",
                "custom_field[0].type",
                4,
            ),
            (
                "name = \"x\"\ntype = \"text\"\nkind = \"planet\"",
                "custom_field[0].kind",
                5,
            ),
            ("name = \"x\"\ntype = \"text\"", "custom_field[0].name", 3),
            (
                "name = \"x y\"\ntype = \"text\"\nkind = \"contact\"",
                "custom_field[0].name",
                3,
            ),
            (
                "name = \"x\"\ntype = \"choice\"\nkind = \"contact\"",
                "custom_field[0].choices",
                4,
            ),
            (
                "name = \"x\"\ntype = \"text\"\nrole = \"a\"\ncategory = \"b\"",
                "custom_field[0].name",
                3,
            ),
        ];
        for (body, want_key, want_line) in cases {
            let text = format!("listen = \"127.0.0.1:1\"\n[[custom_field]]\n{body}\n");
            let err = parse(&text).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { key, line, .. } if key == want_key && *line == want_line),
                "{body}: {err}"
            );
        }
        let twice = "listen = \"127.0.0.1:1\"\n[[custom_field]]\nname = \"x\"\ntype = \"text\"\nkind = \"contact\"\n[[custom_field]]\nname = \"x\"\ntype = \"date\"\nkind = \"contact\"\n";
        let err = parse(twice).unwrap_err();
        assert!(err.to_string().contains("custom_field[1].name"), "{err}");
        assert!(err.to_string().contains("defined twice"), "{err}");
        let err = parse("listen = \"127.0.0.1:1\"\n[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, line: 3, .. } if key == "log.format"),
            "{err}"
        );
    }

    #[test]
    fn restart_needed_names_the_changed_keys() {
        let a = parse("listen = \"127.0.0.1:1\"\n").unwrap();
        let b = parse("listen = \"127.0.0.1:2\"\n[log]\nlevel = \"debug\"\n[[custom_field]]\nname = \"x\"\ntype = \"text\"\nkind = \"contact\"\n").unwrap();
        assert_eq!(a.restart_needed(&b), ["listen"]);
        let c = parse("listen = \"127.0.0.1:1\"\n[sync]\nmax_unacked = 5000\n").unwrap();
        assert_eq!(a.restart_needed(&c), ["sync"]);
        assert!(a.restart_needed(&a).is_empty());
    }

    #[test]
    fn missing_listen_is_an_error() {
        let err = parse("[store]\ncache_capacity_mb = 3\n").unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
    }

    #[test]
    fn load_reads_the_file_and_reports_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Config::load(dir.path()),
            Err(ConfigError::Read { .. })
        ));
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "listen = \"127.0.0.1:7700\"\n",
        )
        .unwrap();
        let c = Config::load(dir.path()).unwrap();
        assert_eq!(c.api.socket, dir.path().join("api.sock"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}") {
            let _ = parse(&text);
        }

        #[test]
        fn arbitrary_values_never_panic(
            key in "[a-z_]{1,20}",
            value in "[ -~]{0,40}",
            table in proptest::option::of("(store|sync|api|log|x)"),
        ) {
            let mut text = String::from("listen = \"127.0.0.1:7700\"\n");
            if let Some(t) = table {
                text.push_str(&format!("[{t}]\n"));
            }
            text.push_str(&format!("{key} = {value}\n"));
            let _ = parse(&text);
        }
    }
}
