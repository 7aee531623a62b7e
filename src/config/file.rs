//! The config file's schema: what TOML may say. Every struct is `deny_unknown_fields`, so a
//! typo in a security setting stops start-up. Optional fields are filled from
//! [`super::defaults`] by the validator, so defaults live in one place.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::telemetry::LogFormat;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default, rename = "listener")]
    pub(super) listeners: Vec<ListenerFile>,
    #[serde(default)]
    pub(super) server: ServerFile,
    pub(super) admin: AdminFile,
    /// A listener of its own for the management API (and the console), apart from the ops one.
    pub(super) management: Option<ListenerFile>,
    pub(super) redis: RedisFile,
    #[serde(default)]
    pub(super) cache: CacheFile,
    #[serde(default)]
    pub(super) limits: LimitsFile,
    #[serde(default)]
    pub(super) keys: KeysFile,
    #[serde(default)]
    pub(super) scopes: ScopesFile,
    #[serde(default)]
    pub(super) log: LogFile,
    #[serde(default, rename = "route")]
    pub(super) routes: Vec<RouteFile>,
    #[serde(default)]
    pub(super) headers: HeadersFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HeadersFile {
    /// Replaces the default list of request headers never forwarded.
    pub(super) strip: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerFile {
    pub(super) addr: String,
    pub(super) tls: Option<TlsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsFile {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerFile {
    pub(super) workers: Option<usize>,
    pub(super) client_address_header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminFile {
    pub(super) addr: String,
    pub(super) token_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RedisFile {
    /// `standalone` (default) or `sentinel`.
    pub(super) mode: Option<RedisMode>,
    /// Sentinel: `host:port` of each sentinel, and the name they know the master by.
    pub(super) sentinels: Option<Vec<String>>,
    pub(super) master_name: Option<String>,
    /// Sentinel and Cluster: TLS to the sentinels and the master, or to every node.
    pub(super) tls: Option<bool>,
    /// Cluster: `host:port` of some of its nodes (the rest are found from them).
    pub(super) nodes: Option<Vec<String>>,
    pub(super) url: Option<String>,
    pub(super) url_env: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) client_cert_file: Option<PathBuf>,
    pub(super) client_key_file: Option<PathBuf>,
    pub(super) namespace: Option<String>,
    pub(super) connect_timeout: Option<String>,
    pub(super) command_timeout: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RedisMode {
    #[default]
    Standalone,
    Sentinel,
    Cluster,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CacheFile {
    pub(super) max_entries: Option<usize>,
    pub(super) ttl: Option<String>,
    pub(super) negative_ttl: Option<String>,
    pub(super) max_stale: Option<String>,
    pub(super) max_unsubscribed: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsFile {
    pub(super) max_header_bytes: Option<usize>,
    pub(super) max_body_bytes: Option<u64>,
    pub(super) header_read_timeout: Option<String>,
    pub(super) tls_handshake_timeout: Option<String>,
    pub(super) upstream_connect_timeout: Option<String>,
    pub(super) upstream_response_timeout: Option<String>,
    pub(super) upstream_idle_timeout: Option<String>,
    pub(super) drain_timeout: Option<String>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_uri_bytes: Option<usize>,
    pub(super) body_idle_timeout: Option<String>,
    pub(super) failed_auth_per_client: Option<u32>,
    pub(super) unknown_key_lookups_per_second: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeysFile {
    pub(super) prefix: Option<String>,
    pub(super) max_validity: Option<String>,
    pub(super) allow_no_expiry: Option<bool>,
    pub(super) usage_flush_interval: Option<String>,
    pub(super) legacy_sunset: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScopesFile {
    #[serde(default)]
    pub(super) presets: BTreeMap<String, Vec<String>>,
    /// Resources routes and keys may name besides keygate's own and the presets'.
    #[serde(default)]
    pub(super) resources: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogFile {
    pub(super) format: Option<LogFormat>,
    pub(super) level: Option<String>,
    pub(super) access_log: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteFile {
    pub(super) id: String,
    pub(super) host: Option<String>,
    pub(super) path_prefix: String,
    pub(super) org: Option<OrgFile>,
    pub(super) project: Option<ProjectFile>,
    #[serde(default)]
    pub(super) scopes: Vec<String>,
    pub(super) upstreams: Vec<String>,
    #[serde(default)]
    pub(super) public: bool,
    #[serde(default)]
    pub(super) strip_prefix: bool,
    /// The methods the route forwards (default: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS).
    pub(super) methods: Option<Vec<String>>,
    #[serde(default)]
    pub(super) error_style: crate::route::ErrorStyle,
}

/// `"acme"`, `"*"` (every org's keys) or `{ segment = 3 }`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "an org id, \"*\" (every org's keys) or { segment = N } (the org is the N-th path segment)"
)]
pub(super) enum OrgFile {
    Named(String),
    Segment { segment: usize },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(super) enum ProjectFile {
    Fixed(String),
    Segment(usize),
    Query(String),
}
