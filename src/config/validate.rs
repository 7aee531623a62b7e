//! Validation: file schema → runtime config, collecting every problem (each with a hint)
//! instead of stopping at the first.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::file::*;
use super::*;
use crate::model::{OrgId, ProjectId, is_valid_id};
use crate::route::{
    HostRule, NEVER_FORWARDED, OrgSource, ProjectSource, Route, RouteTable, Upstream,
};
use crate::telemetry::LogFormat;

/// Collects problems instead of stopping at the first.
pub(super) struct Validator<'a> {
    pub(super) problems: Vec<String>,
    pub(super) base: &'a Path,
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

    fn sunset(&mut self, text: &str) -> Option<Sunset> {
        let Ok(at) = humantime::parse_rfc3339_weak(text) else {
            self.problem(
                "keys.legacy_sunset",
                format!("`{text}` is not a date; write e.g. \"2027-06-30T00:00:00Z\""),
            );
            return None;
        };
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let header = http::HeaderValue::from_str(&httpdate::fmt_http_date(at))
            .expect("an HTTP-date is a valid header value");
        Some(Sunset { at: secs, header })
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

    pub(super) fn config(&mut self, f: FileConfig) -> Option<Config> {
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
        let management = f.management.as_ref().map(|m| ListenerConfig {
            addr: self.addr("management.addr", &m.addr),
            tls: m.tls.as_ref().and_then(|t| self.tls("management.tls", t)),
        });
        if management
            .as_ref()
            .is_some_and(|m| m.addr == admin_addr && m.addr.port() != 0)
        {
            self.problem(
                "management.addr",
                "must differ from admin.addr (leave [management] out to serve both there)",
            );
        }
        let token_env = f
            .admin
            .token_env
            .as_deref()
            .unwrap_or(defaults::ADMIN_TOKEN_ENV);
        let admin_token = std::env::var(token_env)
            .ok()
            .filter(|t| !t.is_empty())
            .map(Secret);
        if admin_token.as_ref().is_some_and(|t| t.0.len() < 16) {
            self.problem(
                "admin.token_env",
                format!("{token_env} must hold at least 16 characters (use a random token)"),
            );
        }
        let max_validity = self.duration(
            "keys.max_validity",
            f.keys.max_validity.as_deref(),
            defaults::MAX_VALIDITY,
        );
        let usage_flush_interval = self.duration(
            "keys.usage_flush_interval",
            f.keys.usage_flush_interval.as_deref(),
            defaults::USAGE_FLUSH_INTERVAL,
        );
        let legacy_sunset = f.keys.legacy_sunset.as_deref().and_then(|t| self.sunset(t));
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
            max_unsubscribed: f
                .cache
                .max_unsubscribed
                .as_deref()
                .map(|t| self.duration("cache.max_unsubscribed", Some(t), "1s")),
        };
        if cache.max_entries == 0 {
            self.problem("cache.max_entries", "must be at least 1");
        }
        if cache.max_stale < cache.ttl {
            self.problem(
                "cache.max_stale",
                format!(
                    "{} is shorter than cache.ttl ({}): max_stale counts from an entry's fetch, so most cached keys would fail from the first second of a Redis outage; make it at least the ttl",
                    humantime::format_duration(cache.max_stale),
                    humantime::format_duration(cache.ttl)
                ),
            );
        }
        let limits = self.limits(&f.limits);
        let prefix = f
            .keys
            .prefix
            .unwrap_or_else(|| defaults::KEY_PREFIX.to_owned());
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        if prefix.is_empty()
            || prefix.len() > 16
            || !prefix.bytes().all(word)
            || prefix.starts_with('_')
            || prefix.ends_with('_')
        {
            self.problem(
                "keys.prefix",
                format!("`{prefix}` must be 1-16 ASCII letters, digits or inner underscores, e.g. \"kg\" or \"land_sk\""),
            );
        }
        let presets = self.presets(f.scopes.presets);
        let mut resources: BTreeSet<String> = defaults::BUILTIN_RESOURCES
            .iter()
            .map(|r| r.to_string())
            .chain(
                presets
                    .values()
                    .flatten()
                    .filter(|s| s.as_str() != "*")
                    .map(|s| s.resource().to_owned()),
            )
            .collect();
        for r in &f.scopes.resources {
            if Scope::is_well_formed(r) && !r.contains(':') && r != "*" {
                resources.insert(r.clone());
            } else {
                self.problem(
                    "scopes.resources",
                    format!("`{r}` is not a resource name like \"embeddings\""),
                );
            }
        }
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
        let routes = self.routes(f.routes, &presets, &resources);
        let strip = match f.headers.strip {
            Some(list) => list,
            None => defaults::STRIP_HEADERS.map(str::to_owned).to_vec(),
        };
        let strip_headers = StripHeaders::parse(&strip).unwrap_or_else(|e| {
            self.problem("headers.strip", e);
            StripHeaders::default()
        });
        let throttle = ThrottleConfig {
            failures_per_client: f
                .limits
                .failed_auth_per_client
                .unwrap_or(defaults::FAILED_AUTH_PER_CLIENT),
            unknown_lookups_per_second: f
                .limits
                .unknown_key_lookups_per_second
                .unwrap_or(defaults::UNKNOWN_KEY_LOOKUPS_PER_SECOND),
        };
        let client_address_header = f.server.client_address_header.as_deref().and_then(|h| {
            http::HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| {
                    self.problem(
                        "server.client_address_header",
                        format!("`{h}` is not a header name; write e.g. \"x-forwarded-for\""),
                    )
                })
                .ok()
        });
        let workers = match f.server.workers.unwrap_or(defaults::WORKERS) {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        Some(Config {
            workers,
            listeners,
            admin_addr,
            management,
            admin_token,
            redis: redis?,
            cache,
            limits,
            keys: KeyFormat::new(&prefix),
            max_validity,
            allow_no_expiry: f.keys.allow_no_expiry.unwrap_or(false),
            usage_flush_interval,
            legacy_sunset,
            presets,
            resources,
            log,
            routes,
            strip_headers,
            throttle,
            client_address_header,
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

    /// A route's methods: upper-case names, at least one, never TRACE, TRACK or CONNECT.
    fn methods(&mut self, field: &str, names: &[String]) -> Vec<http::Method> {
        let field = format!("{field}.methods");
        if names.is_empty() {
            self.problem(&field, "name at least one method, e.g. [\"POST\"]");
        }
        names
            .iter()
            .filter_map(|name| {
                let parsed = http::Method::from_bytes(name.as_bytes()).ok();
                match parsed {
                    _ if NEVER_FORWARDED.contains(&name.to_ascii_uppercase().as_str()) => {
                        self.problem(&field, format!("`{name}` is never forwarded: TRACE and TRACK echo credentials back, CONNECT opens a tunnel"));
                        None
                    }
                    Some(m) if name.bytes().all(|b| b.is_ascii_uppercase()) => Some(m),
                    _ => {
                        self.problem(&field, format!("`{name}` is not a method name like \"POST\" (upper case)"));
                        None
                    }
                }
            })
            .collect()
    }

    /// A file's bytes, relative to the config file.
    fn file(&mut self, field: &str, path: &std::path::Path) -> Option<Vec<u8>> {
        let full = self.base.join(path);
        std::fs::read(&full)
            .map_err(|e| self.problem(field, format!("cannot read {}: {e}", full.display())))
            .ok()
    }

    fn redis(&mut self, r: &RedisFile) -> Option<RedisConfig> {
        let mode = r.mode.unwrap_or_default();
        let (target, tls) = match mode {
            RedisMode::Standalone => {
                if r.sentinels.is_some()
                    || r.master_name.is_some()
                    || r.tls.is_some()
                    || r.nodes.is_some()
                {
                    self.problem(
                        "redis",
                        "sentinels, master_name, nodes and tls are for mode = \"sentinel\" or \"cluster\" (a standalone Redis takes TLS from a rediss:// url)",
                    );
                }
                let url = self.redis_url(r);
                let tls = url.as_deref().is_some_and(|u| u.starts_with("rediss://"));
                (url.map(|u| RedisTarget::Standalone(Secret(u))), tls)
            }
            RedisMode::Sentinel => (self.sentinel(r), r.tls.unwrap_or(false)),
            RedisMode::Cluster => (self.cluster(r), r.tls.unwrap_or(false)),
        };
        // A password in the config file would be read by whoever reads the config.
        if let Some(url) = &r.url
            && url
                .split_once("://")
                .and_then(|(_, rest)| rest.split('/').next())
                .is_some_and(|authority| authority.contains('@'))
        {
            self.problem("redis.url", "must not carry a user or password: use url_env, or username with password_env or password_file");
        }
        let password = match (&r.password_env, &r.password_file) {
            (None, None) => None,
            (Some(var), None) => std::env::var(var).ok().map(Secret).or_else(|| {
                self.problem(
                    "redis.password_env",
                    format!("environment variable {var} is not set"),
                );
                None
            }),
            (None, Some(path)) => self
                .file("redis.password_file", path)
                .map(|bytes| Secret(String::from_utf8_lossy(&bytes).trim_end().to_owned())),
            (Some(_), Some(_)) => {
                self.problem("redis", "set password_env or password_file, not both");
                None
            }
        };
        let mut redis_tls = RedisTls::default();
        if !tls
            && (r.ca_file.is_some() || r.client_cert_file.is_some() || r.client_key_file.is_some())
        {
            self.problem(
                "redis.ca_file",
                "TLS files need a rediss:// URL (or tls = true with Sentinel)",
            );
        }
        redis_tls.ca = r
            .ca_file
            .as_ref()
            .and_then(|p| self.file("redis.ca_file", p));
        redis_tls.client = match (&r.client_cert_file, &r.client_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let cert = self.file("redis.client_cert_file", cert);
                let key = self.file("redis.client_key_file", key);
                cert.zip(key)
                    .map(|(c, k)| (c, Secret(String::from_utf8_lossy(&k).into_owned())))
            }
            _ => {
                self.problem("redis", "set client_cert_file and client_key_file together");
                None
            }
        };
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
            target: target?,
            username: r.username.clone(),
            password,
            tls: redis_tls,
            namespace,
            connect_timeout,
            command_timeout,
        })
    }

    /// A standalone Redis's URL, from `url` or `url_env`.
    fn redis_url(&mut self, r: &RedisFile) -> Option<String> {
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
            && !url.starts_with("rediss://")
        {
            self.problem("redis.url", "must start with redis:// or rediss:// (TLS)");
        }
        url
    }

    /// `mode = "cluster"`: some of its nodes; no URL.
    fn cluster(&mut self, r: &RedisFile) -> Option<RedisTarget> {
        if r.url.is_some() || r.url_env.is_some() || r.sentinels.is_some() {
            self.problem(
                "redis.url",
                "with mode = \"cluster\" list some of its nodes in `nodes`: remove url, url_env and sentinels",
            );
        }
        let nodes = self.addresses(
            "redis.nodes",
            r.nodes.as_deref(),
            "[\"10.0.0.21:6379\", \"10.0.0.22:6379\", \"10.0.0.23:6379\"]",
        );
        Some(RedisTarget::Cluster {
            nodes,
            tls: r.tls.unwrap_or(false),
        })
    }

    /// A list of `host:port`, not empty.
    fn addresses(&mut self, field: &str, given: Option<&[String]>, example: &str) -> Vec<String> {
        let list = given.unwrap_or_default().to_vec();
        if list.is_empty() {
            self.problem(field, format!("list them, e.g. {example}"));
        }
        for s in &list {
            let port = s.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
            if port.is_none() || s.contains('/') || s.contains('@') {
                self.problem(field, format!("`{s}` must be host:port"));
            }
        }
        list
    }

    /// `mode = "sentinel"`: the sentinels and the master's name; no URL (the sentinels say
    /// where the master is).
    fn sentinel(&mut self, r: &RedisFile) -> Option<RedisTarget> {
        if r.url.is_some() || r.url_env.is_some() {
            self.problem(
                "redis.url",
                "with mode = \"sentinel\" the sentinels say where the master is: remove url and url_env",
            );
        }
        if r.nodes.is_some() {
            self.problem("redis.nodes", "nodes are for mode = \"cluster\"");
        }
        let sentinels = self.addresses(
            "redis.sentinels",
            r.sentinels.as_deref(),
            "[\"10.0.0.1:26379\", \"10.0.0.2:26379\", \"10.0.0.3:26379\"]",
        );
        let master = r.master_name.clone().unwrap_or_default();
        if master.is_empty() {
            self.problem(
                "redis.master_name",
                "name the master the sentinels monitor (their `sentinel monitor <name> …`)",
            );
        }
        Some(RedisTarget::Sentinel {
            sentinels,
            master,
            tls: r.tls.unwrap_or(false),
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
            max_uri_bytes: l.max_uri_bytes.unwrap_or(defaults::MAX_URI_BYTES),
            body_idle_timeout: self.duration(
                "limits.body_idle_timeout",
                l.body_idle_timeout.as_deref(),
                defaults::BODY_IDLE_TIMEOUT,
            ),
        };
        if limits.max_uri_bytes < 256 || limits.max_uri_bytes > limits.max_header_bytes {
            self.problem(
                "limits.max_uri_bytes",
                "must be at least 256 and at most limits.max_header_bytes",
            );
        }
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
        known: Option<&BTreeSet<String>>,
    ) -> Vec<Scope> {
        expand_scopes(presets, known, names).unwrap_or_else(|e| {
            self.problem(field, e);
            Vec::new()
        })
    }

    fn presets(&mut self, file: BTreeMap<String, Vec<String>>) -> BTreeMap<String, Vec<Scope>> {
        let mut presets: BTreeMap<String, Vec<Scope>> = defaults::PRESETS
            .iter()
            .map(|(name, scopes)| {
                (
                    name.to_string(),
                    scopes.iter().map(|s| Scope::new(s)).collect(),
                )
            })
            .collect();
        for (name, scopes) in file {
            let expanded = self.scopes(
                &format!("scopes.presets.{name}"),
                &scopes,
                &BTreeMap::new(),
                None,
            );
            presets.insert(name, expanded);
        }
        presets
    }

    fn routes(
        &mut self,
        files: Vec<RouteFile>,
        presets: &BTreeMap<String, Vec<Scope>>,
        known: &BTreeSet<String>,
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
            if crate::route::normalise(&f.path_prefix).is_err()
                || f.path_prefix.ends_with('/') && f.path_prefix != "/"
            {
                self.problem(&format!("{field}.path_prefix"), format!("`{}` must be a plain absolute path like \"/v1/predict\" (no trailing '/', '..', '%', ';')", f.path_prefix));
            }
            let host = f.host.as_deref().map_or(HostRule::Any, HostRule::parse);
            let org = self.route_org(&field, &f, &host);
            if f.public && (!f.scopes.is_empty() || f.project.is_some()) {
                self.problem(
                    &field,
                    "a public route needs no key, so it cannot require scopes or a project",
                );
            }
            let project = match f.project {
                None => ProjectSource::None,
                Some(ProjectFile::Fixed(id)) if is_valid_id(&id) => {
                    ProjectSource::Fixed(ProjectId::from(id))
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
            let scopes = self.scopes(&format!("{field}.scopes"), &f.scopes, presets, Some(known));
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
            let methods = f.methods.as_deref().map(|m| self.methods(&field, m));
            let mut route = Route::new(
                f.id,
                host,
                f.path_prefix,
                org,
                project,
                scopes,
                upstreams,
                f.public,
                f.strip_prefix,
            );
            route.error_style = f.error_style;
            routes.push(match methods {
                Some(methods) => route.with_methods(methods),
                None => route,
            });
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

    /// Whose keys a route accepts: `org` = an org id, `"*"` or `{ segment = N }`, or a host
    /// `{org}.api.example.com`.
    fn route_org(&mut self, field: &str, f: &RouteFile, host: &HostRule) -> OrgSource {
        let problem = |v: &mut Self, message: &str| {
            v.problem(&format!("{field}.org"), message);
            OrgSource::Any
        };
        if let Some(h) = &f.host
            && h.contains('{')
            && !matches!(host, HostRule::OrgLabel(suffix) if suffix.starts_with('.') && !suffix.contains(['{', '}']))
        {
            self.problem(&format!("{field}.host"), format!("`{h}`: `{{org}}` can only be the first label, as in \"{{org}}.api.example.com\""));
        }
        match (&f.org, host) {
            (Some(_), HostRule::OrgLabel(_)) => problem(
                self,
                "the host names the org ({org}.…); remove `org` or name the host in full",
            ),
            (None, HostRule::OrgLabel(_)) => OrgSource::HostLabel,
            (None, _) if f.public => OrgSource::Any,
            (None, _) => problem(
                self,
                "a route that needs keys must say whose it accepts: org = \"acme\" (one org), \"*\" (every org's), { segment = N } (the org in the path), or host = \"{org}.api.example.com\"",
            ),
            (Some(OrgFile::Named(o)), _) if o == "*" => OrgSource::Any,
            (Some(OrgFile::Named(o)), _) if is_valid_id(o) => {
                OrgSource::Fixed(OrgId::from(o.as_str()))
            }
            (Some(OrgFile::Named(_)), _) => problem(self, "must be an org id or \"*\""),
            (Some(OrgFile::Segment { segment: 0 }), _) => {
                problem(self, "segments count from 1: /v1/orgs/{org} is segment 3")
            }
            (Some(OrgFile::Segment { segment }), _) if matches!(f.project, Some(ProjectFile::Segment(n)) if n == *segment) => {
                problem(
                    self,
                    "the org and the project cannot be the same path segment",
                )
            }
            (Some(OrgFile::Segment { segment }), _) => OrgSource::Segment(*segment),
        }
    }
}
