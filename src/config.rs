//! Configuration: TOML file → validated, typed runtime config.
//!
//! Owns: the defaults (in [`defaults`], each with its unit and reason), the runtime types, and
//! loading: `file` (the schema, every struct `deny_unknown_fields`) → `validate` (runtime types:
//! `Duration`, `SocketAddr`, TLS configs, the compiled route table; every problem reported at
//! once). Each setting's runtime type belongs to the module that uses it (`store::RedisConfig`,
//! `cache::CacheConfig`, `telemetry::LogConfig`, `route::RouteTable`); this module builds them.
//! Does not own: what routes do with requests (`proxy`).

mod file;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::CacheConfig;
use crate::credential::KeyFormat;
use crate::model::{Scope, Secret};
use crate::route::RouteTable;
use crate::store::{RedisConfig, RedisTarget, RedisTls};
use crate::telemetry::LogConfig;
use crate::throttle::ThrottleConfig;
use file::FileConfig;
use validate::Validator;

/// Every default, with its unit and why it is what it is.
pub mod defaults {
    /// Data-plane workers; 0 means one per CPU core (thread-per-core: no work stealing, no
    /// cross-core handoff on the hot path).
    pub const WORKERS: usize = 0;
    /// Hot-cache entries (keys + projects); ~1 KiB each, so ~100 MiB at most.
    pub const CACHE_MAX_ENTRIES: usize = 100_000;
    /// Safety net only: invalidations normally drop entries within milliseconds.
    pub const CACHE_TTL: &str = "60s";
    /// Unknown keys are remembered briefly, so a flood of one bad key does not reach Redis.
    pub const CACHE_NEGATIVE_TTL: &str = "5s";
    /// How long a cached key keeps working while Redis is unreachable.
    pub const CACHE_MAX_STALE: &str = "5m";
    pub const REDIS_CONNECT_TIMEOUT: &str = "1s";
    /// A lookup slower than this fails (stale entry or 503) rather than stall requests.
    pub const REDIS_COMMAND_TIMEOUT: &str = "500ms";
    pub const REDIS_NAMESPACE: &str = "kg";
    /// Bytes of a request head (request line and headers, as written on the wire); larger
    /// requests get 431.
    pub const MAX_HEADER_BYTES: usize = 16 * 1024;
    /// How long a request body may make no progress before the request is answered 408 and its
    /// upstream request aborted: long enough for any client that is sending, short enough that
    /// a trickling body cannot hold a connection for the upstream response timeout.
    pub const BODY_IDLE_TIMEOUT: &str = "30s";
    /// Failed authentications (unknown or malformed keys) a client may make per minute; past it
    /// the client gets 429 without a store lookup until its minute ends. Generous for a
    /// misconfigured client, a wall for a guesser.
    pub const FAILED_AUTH_PER_CLIENT: u32 = 100;
    /// Store lookups that find no key, per second and replica, past which clients that failed
    /// lately get no lookup (429 for that second): a spray cannot take Redis from real traffic.
    pub const UNKNOWN_KEY_LOOKUPS_PER_SECOND: u32 = 1000;
    /// Bytes of a request target (path and query); longer ones get 414. 8 KiB is what common
    /// servers and clients handle.
    pub const MAX_URI_BYTES: usize = 8 * 1024;
    /// Request bodies (uploads) larger than this get 413. Uploads stream; this is not buffered.
    pub const MAX_BODY_BYTES: u64 = 1024 * 1024 * 1024;
    /// Slowloris guard: a client must finish sending headers within this.
    pub const HEADER_READ_TIMEOUT: &str = "10s";
    pub const TLS_HANDSHAKE_TIMEOUT: &str = "10s";
    pub const UPSTREAM_CONNECT_TIMEOUT: &str = "2s";
    /// Time to the upstream's response headers; inference can be slow, bodies may stream longer.
    pub const UPSTREAM_RESPONSE_TIMEOUT: &str = "120s";
    /// Idle pooled upstream connections are closed after this.
    pub const UPSTREAM_IDLE_TIMEOUT: &str = "90s";
    /// On SIGTERM, in-flight requests get this long to finish.
    pub const DRAIN_TIMEOUT: &str = "30s";
    /// Open downstream connections per listener; more wait in the kernel's accept queue.
    pub const MAX_CONNECTIONS: usize = 10_000;
    pub const KEY_PREFIX: &str = "kg";
    /// Longest key validity over the API (like the platforms keygate fronts).
    pub const MAX_VALIDITY: &str = "25weeks";
    /// Key usage (last_used_at, request counts) is written to Redis this often, off the
    /// request path: one pipelined round trip per interval and replica.
    pub const USAGE_FLUSH_INTERVAL: &str = "10s";
    /// Environment variable holding the management API's bootstrap token.
    pub const ADMIN_TOKEN_ENV: &str = "KEYGATE_ADMIN_TOKEN";
    pub const LOG_LEVEL: &str = "info";
    /// Request headers never forwarded (`*` ends a prefix): headers that make a proxy or
    /// framework behind keygate rewrite the path or the method, and identity headers of other
    /// gateways, which an upstream might trust. keygate's own `x-keygate-*`, `X-Forwarded-*`,
    /// `Forwarded`, credentials and hop-by-hop headers are always removed besides.
    pub const STRIP_HEADERS: [&str; 13] = [
        "x-original-url",
        "x-rewrite-url",
        "x-envoy-*",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-consumer-*",
        "x-authenticated-*",
        "x-remote-user",
        "x-remote-group",
        "x-auth-request-*",
        "x-userinfo",
        "x-credential-identifier",
    ];
    /// Resources keygate itself names: org administration, and managing keys.
    pub const BUILTIN_RESOURCES: [&str; 4] = ["admin", "org", "users", "keys"];
    /// Scope presets every deployment has (a config may add or override).
    pub const PRESETS: [(&str, &[&str]); 3] = [
        ("inference", &["predict"]),
        (
            "project",
            &["projects:*", "datasets:*", "models:*", "predict"],
        ),
        ("all", &["*"]),
    ];
}

// ---------------------------------------------------------------- runtime config

/// The validated configuration keygate runs with.
#[derive(Debug)]
pub struct Config {
    /// Data-plane worker threads, each with its own runtime, accept loop and upstream pool.
    pub workers: usize,
    pub listeners: Vec<ListenerConfig>,
    /// The operators' listener: health, readiness, metrics, reload, and the management API
    /// unless `management` is set.
    pub admin_addr: SocketAddr,
    /// A listener of its own for the management API (`/v1`), for users, apart from the
    /// operators' one; TLS as on data-plane listeners.
    pub management: Option<ListenerConfig>,
    /// Bootstrap token for the management API (from the environment); `None` disables it.
    pub admin_token: Option<Secret>,
    pub redis: RedisConfig,
    pub cache: CacheConfig,
    pub limits: Limits,
    pub keys: KeyFormat,
    /// Longest validity a key may be created with over the API.
    pub max_validity: Duration,
    /// Whether the API may create keys that never expire.
    pub allow_no_expiry: bool,
    /// How often each replica writes key usage to Redis.
    pub usage_flush_interval: Duration,
    /// When legacy key id + secret pairs stop working; until then their responses carry
    /// `Deprecation` and `Sunset`.
    pub legacy_sunset: Option<Sunset>,
    /// Preset name → scopes; used when creating keys.
    pub presets: BTreeMap<String, Vec<Scope>>,
    /// The resources scopes may name: keygate's own, those of the presets, and those the
    /// config declares.
    pub resources: BTreeSet<String>,
    pub log: LogConfig,
    pub routes: RouteTable,
    /// Request headers removed before forwarding, besides those keygate always removes.
    pub strip_headers: StripHeaders,
    /// Failed-authentication budgets.
    pub throttle: ThrottleConfig,
    /// A header a trusted proxy in front sets to the client's address (its last address is
    /// taken); `None`: the connection's peer address.
    pub client_address_header: Option<http::HeaderName>,
}

/// Request header names, and name prefixes, that are never forwarded.
#[derive(Clone, Debug, Default)]
pub struct StripHeaders {
    names: Vec<http::HeaderName>,
    prefixes: Vec<String>,
}

impl StripHeaders {
    /// From names, each exact or ending in `*` for a prefix; the error names the first entry
    /// that is neither.
    pub fn parse(entries: &[String]) -> Result<StripHeaders, String> {
        let mut out = StripHeaders::default();
        for entry in entries {
            let lower = entry.to_ascii_lowercase();
            let (text, prefix) = match lower.strip_suffix('*') {
                Some(p) => (p, true),
                None => (lower.as_str(), false),
            };
            match http::HeaderName::from_bytes(text.as_bytes()) {
                Ok(_) if prefix => out.prefixes.push(text.to_owned()),
                Ok(name) => out.names.push(name),
                Err(_) => {
                    return Err(format!(
                        "`{entry}` is not a header name, or a prefix ending in `*`"
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Whether `name` is removed.
    pub fn matches(&self, name: &http::HeaderName) -> bool {
        self.names.contains(name)
            || self
                .prefixes
                .iter()
                .any(|p| name.as_str().starts_with(p.as_str()))
    }
}

#[derive(Clone)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl fmt::Debug for ListenerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})",
            self.addr,
            if self.tls.is_some() { "tls" } else { "plain" }
        )
    }
}

/// The end of legacy credentials.
#[derive(Clone, Debug)]
pub struct Sunset {
    /// Unix seconds.
    pub at: u64,
    /// The `Sunset` header value (an HTTP-date, RFC 8594).
    pub header: http::HeaderValue,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub header_read_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_response_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_connections: usize,
    pub max_uri_bytes: usize,
    pub body_idle_timeout: Duration,
}

/// Scope names → scopes: presets expanded, syntax checked, sorted, duplicates removed. With
/// `known`, a scope must also name a resource the deployment knows (or be `*`), so that a typo
/// like `modles:read` is refused rather than granting nothing. The error names the first name
/// that fails.
pub fn expand_scopes(
    presets: &BTreeMap<String, Vec<Scope>>,
    known: Option<&BTreeSet<String>>,
    names: &[String],
) -> Result<Vec<Scope>, String> {
    let mut out: Vec<Scope> = Vec::new();
    for name in names.iter().map(|n| n.trim()) {
        match presets.get(name) {
            Some(expanded) => out.extend(expanded.iter().cloned()),
            None if Scope::is_well_formed(name) => {
                let scope = Scope::new(name);
                if let Some(known) = known
                    && name != "*"
                    && !known.contains(scope.resource())
                {
                    let list: Vec<&str> = known.iter().map(String::as_str).collect();
                    return Err(format!(
                        "`{name}` names no resource this deployment knows ({}); a new resource goes in [scopes] resources",
                        list.join(", ")
                    ));
                }
                out.push(scope);
            }
            None => {
                return Err(format!(
                    "`{name}` is neither a preset nor a scope like \"predict\" or \"models:read\""
                ));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

impl Config {
    /// The validity a rotated key that never expired gets: the longest a new key may have,
    /// unless keys may live for ever.
    pub fn validity_of_rotated(&self) -> Option<Duration> {
        (!self.allow_no_expiry).then_some(self.max_validity)
    }

    /// Takes from `running` the settings only a restart applies, so that `self` (the file
    /// re-read on a reload) can replace it; returns the names of those that differ in the file,
    /// which keep their running values. A reload applies the routes (their upstreams, scopes,
    /// methods), `[scopes]`, `[keys]` (but `usage_flush_interval`), `[headers]`, the limits of
    /// each request (`max_body_bytes`, `max_uri_bytes`, `upstream_response_timeout`,
    /// `body_idle_timeout`), `server.client_address_header` and the listeners' TLS
    /// certificates; what the listeners, the connections and the pools were made with needs a
    /// restart.
    pub fn keep_restart_only(&mut self, running: &Config) -> Vec<&'static str> {
        fn differ(a: &impl fmt::Debug, b: &impl fmt::Debug) -> bool {
            format!("{a:?}") != format!("{b:?}")
        }
        let listeners = |c: &Config| -> Vec<_> {
            c.listeners
                .iter()
                .map(|l| (l.addr, l.tls.is_some()))
                .collect()
        };
        // The limits a reload applies, from the file; the others kept.
        let mut limits = running.limits;
        limits.max_body_bytes = self.limits.max_body_bytes;
        limits.max_uri_bytes = self.limits.max_uri_bytes;
        limits.upstream_response_timeout = self.limits.upstream_response_timeout;
        limits.body_idle_timeout = self.limits.body_idle_timeout;
        let management = |c: &Config| c.management.as_ref().map(|m| (m.addr, m.tls.is_some()));
        let management_moved = management(self) != management(running);
        let differs = [
            ("listener", listeners(self) != listeners(running)),
            ("server.workers", self.workers != running.workers),
            ("admin", self.admin_addr != running.admin_addr),
            ("management", management_moved),
            ("redis", differ(&self.redis, &running.redis)),
            ("cache", differ(&self.cache, &running.cache)),
            (
                "limits",
                differ(&self.limits, &limits) || differ(&self.throttle, &running.throttle),
            ),
            ("log", differ(&self.log, &running.log)),
            (
                "keys.usage_flush_interval",
                self.usage_flush_interval != running.usage_flush_interval,
            ),
        ];
        if differs[0].1 {
            self.listeners = running.listeners.clone();
        }
        self.workers = running.workers;
        self.admin_addr = running.admin_addr;
        if management_moved {
            self.management = running.management.clone();
        }
        self.admin_token = running.admin_token.clone();
        self.redis = running.redis.clone();
        self.cache = running.cache;
        self.limits = limits;
        self.throttle = running.throttle;
        self.log = running.log.clone();
        self.usage_flush_interval = running.usage_flush_interval;
        differs
            .into_iter()
            .filter_map(|(name, differs)| differs.then_some(name))
            .collect()
    }

    /// Scope names or presets (from the CLI or the API) → scopes.
    pub fn scopes(&self, names: &[String]) -> Result<Vec<Scope>, String> {
        expand_scopes(&self.presets, Some(&self.resources), names)
    }
}

/// Why a config cannot be used: all problems at once, each with a hint.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Reads, parses and validates a config file. Relative TLS paths are relative to the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path.parent().unwrap_or(Path::new("."))).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates config text; `base` resolves relative file paths.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            source: Box::new(e),
        })?;
        let mut v = Validator {
            problems: Vec::new(),
            base,
        };
        let config = v.config(file);
        match (config, v.problems.is_empty()) {
            (Some(config), true) => Ok(config),
            _ => Err(ConfigError::Invalid(v.problems)),
        }
    }
}

#[cfg(test)]
mod tests;
