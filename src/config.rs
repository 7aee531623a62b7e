//! Configuration: TOML file → validated, typed runtime config.
//!
//! Owns: the file schema (every struct `deny_unknown_fields`, so a typo in a security setting
//! stops start-up), the defaults (in [`defaults`], each with its unit and reason), and
//! `validate()`, which turns the file into runtime types (`Duration`, `SocketAddr`, TLS configs,
//! the compiled route table) and reports every problem at once. Does not own: what routes do
//! with requests (`proxy`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::credential::KeyFormat;
use crate::policy::Scope;
use crate::proxy::route::{ProjectSource, Route, RouteTable, Upstream};
use crate::store::model::{OrgId, ProjectId, is_valid_id};

/// Every default, with its unit and why it is what it is.
pub mod defaults {
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
    /// Total bytes of request headers; larger requests get 431.
    pub const MAX_HEADER_BYTES: usize = 16 * 1024;
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
    pub const LOG_LEVEL: &str = "info";
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

// ---------------------------------------------------------------- file schema

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default, rename = "listener")]
    listeners: Vec<ListenerFile>,
    admin: AdminFile,
    redis: RedisFile,
    #[serde(default)]
    cache: CacheFile,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    keys: KeysFile,
    #[serde(default)]
    scopes: ScopesFile,
    #[serde(default)]
    log: LogFile,
    #[serde(default, rename = "route")]
    routes: Vec<RouteFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerFile {
    addr: String,
    tls: Option<TlsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminFile {
    addr: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisFile {
    url: Option<String>,
    url_env: Option<String>,
    namespace: Option<String>,
    connect_timeout: Option<String>,
    command_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    max_entries: Option<usize>,
    ttl: Option<String>,
    negative_ttl: Option<String>,
    max_stale: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    max_header_bytes: Option<usize>,
    max_body_bytes: Option<u64>,
    header_read_timeout: Option<String>,
    tls_handshake_timeout: Option<String>,
    upstream_connect_timeout: Option<String>,
    upstream_response_timeout: Option<String>,
    upstream_idle_timeout: Option<String>,
    drain_timeout: Option<String>,
    max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopesFile {
    #[serde(default)]
    presets: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogFile {
    format: Option<LogFormat>,
    level: Option<String>,
    access_log: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    id: String,
    host: Option<String>,
    path_prefix: String,
    org: Option<String>,
    project: Option<ProjectFile>,
    #[serde(default)]
    scopes: Vec<String>,
    upstreams: Vec<String>,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    strip_prefix: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum ProjectFile {
    Fixed(String),
    Segment(usize),
    Query(String),
}

// ---------------------------------------------------------------- runtime config

/// The validated configuration keygate runs with.
#[derive(Debug)]
pub struct Config {
    pub listeners: Vec<ListenerConfig>,
    pub admin_addr: SocketAddr,
    pub redis: RedisConfig,
    pub cache: CacheConfig,
    pub limits: Limits,
    pub keys: KeyFormat,
    /// Preset name → scopes; used when creating keys.
    pub presets: BTreeMap<String, Vec<Scope>>,
    pub log: LogConfig,
    pub routes: RouteTable,
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

/// A string that may hold a password: never printed.
#[derive(Clone)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub url: Secret,
    /// Prefix of every Redis key and of the invalidation channel, so deployments can share a Redis.
    pub namespace: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

#[derive(Clone, Copy, Debug)]
pub struct CacheConfig {
    pub max_entries: usize,
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub max_stale: Duration,
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    pub access_log: bool,
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

/// Collects problems instead of stopping at the first.
struct Validator<'a> {
    problems: Vec<String>,
    base: &'a Path,
}

impl Validator<'_> {
    fn problem(&mut self, field: &str, msg: impl fmt::Display) {
        self.problems.push(format!("{field}: {msg}"));
    }

    fn duration(&mut self, field: &str, value: Option<&str>, default: &str) -> Duration {
        let text = value.unwrap_or(default);
        match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                self.problem(
                    field,
                    format!("`{text}` is not a duration; write e.g. \"500ms\", \"30s\", \"5m\""),
                );
                humantime::parse_duration(default).unwrap_or_default()
            }
        }
    }

    fn addr(&mut self, field: &str, text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|_| {
            self.problem(
                field,
                format!("`{text}` is not an address; write e.g. \"127.0.0.1:8080\""),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    fn config(&mut self, f: FileConfig) -> Option<Config> {
        if f.listeners.is_empty() {
            self.problem(
                "listener",
                "no data-plane listener; add a [[listener]] with addr = \"0.0.0.0:8080\"",
            );
        }
        let listeners = f
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| ListenerConfig {
                addr: self.addr(&format!("listener[{i}].addr"), &l.addr),
                tls: l
                    .tls
                    .as_ref()
                    .and_then(|t| self.tls(&format!("listener[{i}].tls"), t)),
            })
            .collect();
        let admin_addr = self.addr("admin.addr", &f.admin.addr);
        let redis = self.redis(&f.redis);
        let cache = CacheConfig {
            max_entries: f.cache.max_entries.unwrap_or(defaults::CACHE_MAX_ENTRIES),
            ttl: self.duration("cache.ttl", f.cache.ttl.as_deref(), defaults::CACHE_TTL),
            negative_ttl: self.duration(
                "cache.negative_ttl",
                f.cache.negative_ttl.as_deref(),
                defaults::CACHE_NEGATIVE_TTL,
            ),
            max_stale: self.duration(
                "cache.max_stale",
                f.cache.max_stale.as_deref(),
                defaults::CACHE_MAX_STALE,
            ),
        };
        if cache.max_entries == 0 {
            self.problem("cache.max_entries", "must be at least 1");
        }
        let limits = self.limits(&f.limits);
        let prefix = f
            .keys
            .prefix
            .unwrap_or_else(|| defaults::KEY_PREFIX.to_owned());
        if prefix.is_empty()
            || prefix.len() > 16
            || !prefix.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            self.problem(
                "keys.prefix",
                format!("`{prefix}` must be 1-16 ASCII letters or digits, e.g. \"kg\""),
            );
        }
        let presets = self.presets(f.scopes.presets);
        let log = LogConfig {
            format: f.log.format.unwrap_or(LogFormat::Human),
            level: f
                .log
                .level
                .unwrap_or_else(|| defaults::LOG_LEVEL.to_owned()),
            access_log: f.log.access_log.unwrap_or(true),
        };
        if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
            self.problem(
                "log.level",
                format!(
                    "`{}` is not a level or filter; write e.g. \"info\" or \"keygate=debug\"",
                    log.level
                ),
            );
        }
        let routes = self.routes(f.routes, &presets);
        Some(Config {
            listeners,
            admin_addr,
            redis: redis?,
            cache,
            limits,
            keys: KeyFormat::new(&prefix),
            presets,
            log,
            routes,
        })
    }

    fn tls(&mut self, field: &str, t: &TlsFile) -> Option<Arc<rustls::ServerConfig>> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let cert_path = self.base.join(&t.cert);
        let key_path = self.base.join(&t.key);
        let certs: Result<Vec<_>, _> =
            CertificateDer::pem_file_iter(&cert_path).and_then(Iterator::collect);
        let key = PrivateKeyDer::from_pem_file(&key_path);
        let (certs, key) = match (certs, key) {
            (Ok(c), Ok(k)) if !c.is_empty() => (c, k),
            (c, k) => {
                if !matches!(c, Ok(ref c) if !c.is_empty()) {
                    self.problem(
                        &format!("{field}.cert"),
                        format!("cannot read PEM certificates from {}", cert_path.display()),
                    );
                }
                if let Err(e) = k {
                    self.problem(
                        &format!("{field}.key"),
                        format!(
                            "cannot read a PEM private key from {}: {e}",
                            key_path.display()
                        ),
                    );
                }
                return None;
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let built = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key));
        match built {
            Ok(mut c) => {
                c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                Some(Arc::new(c))
            }
            Err(e) => {
                self.problem(
                    field,
                    format!("certificate and key do not form a usable TLS identity: {e}"),
                );
                None
            }
        }
    }

    fn redis(&mut self, r: &RedisFile) -> Option<RedisConfig> {
        let url = match (&r.url, &r.url_env) {
            (Some(url), None) => Some(url.clone()),
            (None, Some(var)) => std::env::var(var).ok().or_else(|| {
                self.problem(
                    "redis.url_env",
                    format!("environment variable {var} is not set"),
                );
                None
            }),
            _ => {
                self.problem("redis", "set exactly one of url = \"redis://127.0.0.1:6379\" or url_env = \"KEYGATE_REDIS_URL\"");
                None
            }
        };
        if let Some(url) = &url
            && !url.starts_with("redis://")
        {
            self.problem("redis.url", "must start with redis:// (TLS to Redis is not supported yet; use a local TLS tunnel)");
        }
        let namespace = r
            .namespace
            .clone()
            .unwrap_or_else(|| defaults::REDIS_NAMESPACE.to_owned());
        if !is_valid_id(&namespace) {
            self.problem(
                "redis.namespace",
                format!("`{namespace}` must be letters, digits, '_' or '-'"),
            );
        }
        let connect_timeout = self.duration(
            "redis.connect_timeout",
            r.connect_timeout.as_deref(),
            defaults::REDIS_CONNECT_TIMEOUT,
        );
        let command_timeout = self.duration(
            "redis.command_timeout",
            r.command_timeout.as_deref(),
            defaults::REDIS_COMMAND_TIMEOUT,
        );
        Some(RedisConfig {
            url: Secret(url?),
            namespace,
            connect_timeout,
            command_timeout,
        })
    }

    fn limits(&mut self, l: &LimitsFile) -> Limits {
        let limits = Limits {
            max_header_bytes: l.max_header_bytes.unwrap_or(defaults::MAX_HEADER_BYTES),
            max_body_bytes: l.max_body_bytes.unwrap_or(defaults::MAX_BODY_BYTES),
            header_read_timeout: self.duration(
                "limits.header_read_timeout",
                l.header_read_timeout.as_deref(),
                defaults::HEADER_READ_TIMEOUT,
            ),
            tls_handshake_timeout: self.duration(
                "limits.tls_handshake_timeout",
                l.tls_handshake_timeout.as_deref(),
                defaults::TLS_HANDSHAKE_TIMEOUT,
            ),
            upstream_connect_timeout: self.duration(
                "limits.upstream_connect_timeout",
                l.upstream_connect_timeout.as_deref(),
                defaults::UPSTREAM_CONNECT_TIMEOUT,
            ),
            upstream_response_timeout: self.duration(
                "limits.upstream_response_timeout",
                l.upstream_response_timeout.as_deref(),
                defaults::UPSTREAM_RESPONSE_TIMEOUT,
            ),
            upstream_idle_timeout: self.duration(
                "limits.upstream_idle_timeout",
                l.upstream_idle_timeout.as_deref(),
                defaults::UPSTREAM_IDLE_TIMEOUT,
            ),
            drain_timeout: self.duration(
                "limits.drain_timeout",
                l.drain_timeout.as_deref(),
                defaults::DRAIN_TIMEOUT,
            ),
            max_connections: l.max_connections.unwrap_or(defaults::MAX_CONNECTIONS),
        };
        if limits.max_header_bytes < 8192 {
            self.problem(
                "limits.max_header_bytes",
                "must be at least 8192 (HTTP/1 parsers need one 8 KiB buffer)",
            );
        }
        if limits.max_connections == 0 {
            self.problem("limits.max_connections", "must be at least 1");
        }
        limits
    }

    fn scopes(
        &mut self,
        field: &str,
        names: &[String],
        presets: &BTreeMap<String, Vec<Scope>>,
    ) -> Vec<Scope> {
        let mut out: Vec<Scope> = Vec::new();
        for name in names {
            if let Some(expanded) = presets.get(name) {
                out.extend(expanded.iter().cloned());
            } else if Scope::is_well_formed(name) {
                out.push(Scope::new(name.clone()));
            } else {
                self.problem(field, format!("`{name}` is neither a preset nor a scope like \"predict\" or \"models:read\""));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn presets(&mut self, file: BTreeMap<String, Vec<String>>) -> BTreeMap<String, Vec<Scope>> {
        let mut presets: BTreeMap<String, Vec<Scope>> = defaults::PRESETS
            .iter()
            .map(|(name, scopes)| {
                (
                    name.to_string(),
                    scopes.iter().map(|s| Scope::new(s.to_string())).collect(),
                )
            })
            .collect();
        for (name, scopes) in file {
            let expanded =
                self.scopes(&format!("scopes.presets.{name}"), &scopes, &BTreeMap::new());
            presets.insert(name, expanded);
        }
        presets
    }

    fn routes(
        &mut self,
        files: Vec<RouteFile>,
        presets: &BTreeMap<String, Vec<Scope>>,
    ) -> RouteTable {
        if files.is_empty() {
            self.problem(
                "route",
                "no routes; add a [[route]] with id, path_prefix, org, scopes and upstreams",
            );
        }
        let mut routes = Vec::new();
        for f in files {
            let field = format!("route[{}]", f.id);
            if !is_valid_id(&f.id) {
                self.problem(&field, "id must be letters, digits, '_' or '-'");
            }
            if crate::proxy::route::normalise(&f.path_prefix).is_err()
                || f.path_prefix.ends_with('/') && f.path_prefix != "/"
            {
                self.problem(&format!("{field}.path_prefix"), format!("`{}` must be a plain absolute path like \"/v1/predict\" (no trailing '/', '..', '%', ';')", f.path_prefix));
            }
            let org = f.org.as_ref().map(|o| OrgId(o.clone()));
            match (&org, f.public) {
                (None, false) => self.problem(
                    &format!("{field}.org"),
                    "a route that needs keys must name the org whose keys it accepts",
                ),
                (Some(o), _) if !is_valid_id(o.as_str()) => {
                    self.problem(&format!("{field}.org"), "must be an org id")
                }
                _ => {}
            }
            if f.public && (!f.scopes.is_empty() || f.project.is_some()) {
                self.problem(
                    &field,
                    "a public route needs no key, so it cannot require scopes or a project",
                );
            }
            let project = match f.project {
                None => ProjectSource::None,
                Some(ProjectFile::Fixed(id)) if is_valid_id(&id) => {
                    ProjectSource::Fixed(ProjectId(id))
                }
                Some(ProjectFile::Segment(n)) if n >= 1 => ProjectSource::Segment(n),
                Some(ProjectFile::Query(name))
                    if !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
                {
                    ProjectSource::Query(name)
                }
                Some(other) => {
                    self.problem(&format!("{field}.project"), format!("{other:?} is not valid; use {{ fixed = \"proj-id\" }}, {{ segment = 3 }} (1-based) or {{ query = \"endpoint_id\" }}"));
                    ProjectSource::None
                }
            };
            let scopes = self.scopes(&format!("{field}.scopes"), &f.scopes, presets);
            if f.upstreams.is_empty() {
                self.problem(
                    &format!("{field}.upstreams"),
                    "needs at least one upstream URL like \"http://10.0.0.5:8000\"",
                );
            }
            let upstreams = f
                .upstreams
                .iter()
                .filter_map(|u| {
                    Upstream::parse(u)
                        .map_err(|e| {
                            self.problem(&format!("{field}.upstreams"), format!("`{u}`: {e}"))
                        })
                        .ok()
                })
                .collect();
            let host = f.host.map(|h| h.to_ascii_lowercase());
            routes.push(Route::new(
                f.id,
                host,
                f.path_prefix,
                org,
                project,
                scopes,
                upstreams,
                f.public,
                f.strip_prefix,
            ));
        }
        let table = RouteTable::new(routes);
        for dup in table.duplicates() {
            self.problem(
                "route",
                format!("two routes share host and path_prefix: {dup}"),
            );
        }
        table
    }
}

#[cfg(test)]
mod tests;
