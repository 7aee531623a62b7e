//! Routes: which backend a request goes to, what it needs, and for which project.
//!
//! Owns: path normalisation (rejecting, never rewriting, anything ambiguous), the compiled route
//! table and its matching (host, then the longest path prefix on a segment boundary), resolving
//! a route's project from the request, and the upstream URL for a request. Does not own:
//! building the table from the config file (`config`), or forwarding (`proxy`).
//!
//! Invariant: the path that is matched and authorised is byte for byte the path the upstream
//! receives (less the route prefix when `strip_prefix` is set). We never decode and re-encode.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::uri::Scheme;
use http::{HeaderValue, Method};

use crate::model::{OrgId, ProjectId, Scope, is_valid_id};

/// The shape of a route's error bodies, for clients that read only their own API's errors. The
/// HTTP status and `WWW-Authenticate` are the same in every style.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorStyle {
    /// `{"error": {"code", "message"}, "message"}`.
    #[default]
    Keygate,
    /// Clarifai's `{"status": {"code", "description", "details"}}`, with its status codes.
    Clarifai,
    /// A GraphQL response: `{"errors": [{"message", "extensions": {"code"}}]}`.
    Graphql,
}

/// The methods a route forwards unless its config names others: the usual API methods.
pub const DEFAULT_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// Methods no route forwards: `TRACE` and `TRACK` echo the request (credentials included) back,
/// and `CONNECT` asks for a tunnel.
pub const NEVER_FORWARDED: [&str; 3] = ["TRACE", "TRACK", "CONNECT"];

/// `GET, HEAD, …`.
pub fn allow_header(methods: &[Method]) -> HeaderValue {
    let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
    HeaderValue::from_str(&names.join(", ")).expect("method names are header-safe")
}

/// Why a path was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the request path is ambiguous or malformed")]
pub struct InvalidPath;

/// Accepts only paths that every server would read the same way.
///
/// Rejects: paths not starting with `/`; empty segments (`//`); `.` and `..` segments; `\`, `;`,
/// NUL and other control bytes; malformed `%` escapes; and escapes of `.`, `/`, `\`, `;`, `%` or
/// control bytes (so `%2e%2e`, `%2f` and double encoding like `%252e` cannot smuggle a traversal).
pub fn normalise(path: &str) -> Result<&str, InvalidPath> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(InvalidPath);
    }
    // One pass: bytes and escapes, and each segment as its closing `/` (or the end) is reached.
    let (mut i, mut segment) = (1, 1);
    while i <= b.len() {
        match b.get(i) {
            None | Some(b'/') => {
                // Every segment but the last (a trailing slash) must be non-empty.
                let s = &b[segment..i];
                if (s.is_empty() && i < b.len()) || s == b"." || s == b".." {
                    return Err(InvalidPath);
                }
                segment = i + 1;
            }
            Some(b'\\' | b';' | 0..=0x20 | 0x7f) => return Err(InvalidPath),
            Some(b'%') => {
                let hex = b.get(i + 1..i + 3).ok_or(InvalidPath)?;
                let decoded = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(InvalidPath)?;
                if matches!(decoded, b'.' | b'/' | b'\\' | b';' | b'%' | 0..=0x1f | 0x7f) {
                    return Err(InvalidPath);
                }
                i += 3;
                continue;
            }
            Some(_) => {}
        }
        i += 1;
    }
    Ok(path)
}

/// Where a route's project comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProjectSource {
    /// The route is org-wide.
    None,
    Fixed(ProjectId),
    /// The n-th path segment (1-based): `/v1/projects/{id}/predict` is segment 3.
    Segment(usize),
    /// A query parameter, e.g. `endpoint_id`.
    Query(String),
}

/// Why a route's project could not be read from a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProjectError {
    #[error("the request does not say which project it is for")]
    Missing,
    #[error("the request names its project more than once")]
    Ambiguous,
}

/// Whose keys a route accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrgSource {
    /// One org's: `org = "acme"`.
    Fixed(OrgId),
    /// Every org's (`org = "*"`): the tenant is the key's org, and the project the request names
    /// is looked up in it. Public routes are this too.
    Any,
    /// The org the n-th path segment (1-based) names: `/v1/orgs/{org}/…` is segment 3.
    Segment(usize),
    /// The org the first host label names (`host = "{org}.api.example.com"`).
    HostLabel,
}

/// Which hosts a route serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostRule {
    Any,
    /// One host, lower case, without port.
    Exact(String),
    /// `{org}.api.example.com`: any one label before this suffix (`.api.example.com`, lower case).
    OrgLabel(String),
}

impl HostRule {
    /// `api.example.com`, or `{org}.api.example.com` for a route that takes the org from the host.
    pub fn parse(host: &str) -> HostRule {
        let host = host.to_ascii_lowercase();
        match host.strip_prefix("{org}") {
            Some(suffix) => HostRule::OrgLabel(suffix.to_owned()),
            None => HostRule::Exact(host),
        }
    }

    /// The label the request's host has where the rule has `{org}`, when it matches. `host` is
    /// without port.
    fn matches<'h>(&self, host: Option<&'h str>) -> Option<&'h str> {
        match (self, host) {
            (HostRule::Any, _) => Some(""),
            (HostRule::Exact(want), Some(h)) => h.eq_ignore_ascii_case(want).then_some(""),
            (HostRule::OrgLabel(suffix), Some(h)) => {
                let split = h.len().checked_sub(suffix.len())?;
                let (label, rest) = (h.get(..split)?, h.get(split..)?);
                (rest.eq_ignore_ascii_case(suffix) && !label.is_empty() && !label.contains('.'))
                    .then_some(label)
            }
            (_, None) => None,
        }
    }

    /// Exact hosts first, then patterns, then any host.
    fn rank(&self) -> u8 {
        match self {
            HostRule::Exact(_) => 2,
            HostRule::OrgLabel(_) => 1,
            HostRule::Any => 0,
        }
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostRule::Any => f.write_str("*"),
            HostRule::Exact(h) => f.write_str(h),
            HostRule::OrgLabel(suffix) => write!(f, "{{org}}{suffix}"),
        }
    }
}

/// An upstream base URL: `http://host[:port][/base/path]`.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// `host:port` to connect to (port 80 when the URL has none).
    pub address: String,
    /// The `Host` header it receives: the URL's authority.
    pub host: HeaderValue,
    /// Prepended to the request path; empty or starting with `/` without a trailing one.
    pub base_path: String,
}

impl Upstream {
    pub fn parse(url: &str) -> Result<Upstream, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(
                "only http:// upstreams are supported (terminate TLS in front of the backend)"
                    .into(),
            );
        }
        if uri.query().is_some() {
            return Err("must not have a query string".into());
        }
        let authority = uri.authority().ok_or("needs a host")?;
        Ok(Upstream {
            address: format!(
                "{}:{}",
                authority.host(),
                authority.port_u16().unwrap_or(80)
            ),
            host: HeaderValue::from_str(authority.as_str())
                .expect("an authority is a valid header"),
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    pub id: String,
    pub host: HostRule,
    pub prefix: String,
    /// Whose keys this route accepts.
    pub org: OrgSource,
    pub project: ProjectSource,
    /// Required scopes, presets already expanded.
    pub scopes: Vec<Scope>,
    pub upstreams: Vec<Upstream>,
    /// Needs no key; credentials are still stripped before forwarding.
    pub public: bool,
    pub strip_prefix: bool,
    /// The shape of the route's error bodies.
    pub error_style: ErrorStyle,
    /// The methods the route forwards; others get 405 with this list in `Allow`.
    methods: Vec<Method>,
    /// `methods` as the `Allow` header value.
    allow: HeaderValue,
    /// Position in the [`RouteTable`], for per-route state kept elsewhere (metric handles).
    pub index: usize,
    /// Round-robin cursor over `upstreams`.
    next: AtomicUsize,
}

impl Route {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        host: HostRule,
        prefix: String,
        org: OrgSource,
        project: ProjectSource,
        scopes: Vec<Scope>,
        upstreams: Vec<Upstream>,
        public: bool,
        strip_prefix: bool,
    ) -> Route {
        Route {
            id,
            host,
            prefix,
            org,
            project,
            scopes,
            upstreams,
            public,
            strip_prefix,
            error_style: ErrorStyle::Keygate,
            methods: DEFAULT_METHODS.to_vec(),
            allow: allow_header(&DEFAULT_METHODS),
            index: 0,
            next: AtomicUsize::new(0),
        }
    }

    /// Forwards only `methods` (never [`NEVER_FORWARDED`]: the config refuses them).
    pub fn with_methods(mut self, methods: Vec<Method>) -> Route {
        self.allow = allow_header(&methods);
        self.methods = methods;
        self
    }

    /// Whether the route forwards `method`.
    pub fn allows(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }

    /// The `Allow` header of a 405 on this route.
    pub fn allow(&self) -> &HeaderValue {
        &self.allow
    }

    fn matches_path(&self, path: &str) -> bool {
        self.prefix == "/"
            || path
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The org a request on this route must be made with a key of, by the route's rule; `None`
    /// when any org's key will do. `host` is without port. A request that names no valid org
    /// names one no key belongs to.
    pub fn org_of<'a>(&'a self, host: Option<&'a str>, path: &'a str) -> Option<&'a str> {
        match &self.org {
            OrgSource::Fixed(org) => Some(org.as_str()),
            OrgSource::Any => None,
            OrgSource::Segment(n) => Some(path[1..].split('/').nth(n - 1).unwrap_or("")),
            OrgSource::HostLabel => Some(self.host.matches(host).unwrap_or("")),
        }
    }

    /// The project this request is for, by the route's rule.
    pub fn project_of(
        &self,
        path: &str,
        query: Option<&str>,
    ) -> Result<Option<ProjectId>, ProjectError> {
        let id = match &self.project {
            ProjectSource::None => return Ok(None),
            ProjectSource::Fixed(id) => return Ok(Some(id.clone())),
            ProjectSource::Segment(n) => path[1..].split('/').nth(n - 1).filter(|s| !s.is_empty()),
            ProjectSource::Query(name) => {
                let mut found = query
                    .unwrap_or("")
                    .split('&')
                    .filter_map(|pair| pair.split_once('=').filter(|(k, _)| k == name))
                    .map(|(_, v)| v);
                let first = found.next();
                if found.next().is_some() {
                    return Err(ProjectError::Ambiguous);
                }
                first
            }
        };
        let id = id.ok_or(ProjectError::Missing)?;
        // A value that cannot be a project id names no project: policy answers 404 for it.
        Ok(Some(ProjectId::from(if is_valid_id(id) {
            id.to_owned()
        } else {
            String::new()
        })))
    }

    /// The next upstream, round robin (no shared cursor to touch when there is one).
    pub fn pick_upstream(&self) -> &Upstream {
        if let [only] = self.upstreams.as_slice() {
            return only;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.upstreams.len();
        &self.upstreams[i]
    }

    /// The path and query the upstream receives for an authorised request path, or `None` when
    /// that is the request's own (no base path on the upstream, no prefix stripped).
    pub fn upstream_path_and_query(
        &self,
        upstream: &Upstream,
        path: &str,
        query: Option<&str>,
    ) -> Option<String> {
        let strip = self.strip_prefix && self.prefix != "/";
        if !strip && upstream.base_path.is_empty() {
            return None;
        }
        let rest = if strip {
            &path[self.prefix.len()..]
        } else {
            path
        };
        let mut out = String::with_capacity(
            upstream.base_path.len() + rest.len() + 1 + query.map_or(0, str::len),
        );
        out.push_str(&upstream.base_path);
        out.push_str(rest);
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        Some(out)
    }
}

/// All routes, most specific first: host-bound before any-host, then longer prefixes first.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(mut routes: Vec<Route>) -> RouteTable {
        routes.sort_by(|a, b| {
            b.host
                .rank()
                .cmp(&a.host.rank())
                .then(b.prefix.len().cmp(&a.prefix.len()))
        });
        for (i, r) in routes.iter_mut().enumerate() {
            r.index = i;
        }
        RouteTable { routes }
    }

    /// The route for a request. `host` must be without port (see [`strip_port`]); `path` must be
    /// normalised.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.host.matches(host).is_some() && r.matches_path(path))
    }

    /// Pairs of routes no request could tell apart.
    pub fn duplicates(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, a) in self.routes.iter().enumerate() {
            for b in &self.routes[i + 1..] {
                if a.host == b.host && a.prefix == b.prefix {
                    out.push(format!("{} and {}", a.id, b.id));
                }
            }
        }
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

/// `host` without its `:port`.
pub fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host.ends_with(']') && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            &host[..i]
        }
        _ => host,
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.host, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        let ok = [
            "/",
            "/v1/predict",
            "/v1/predict/",
            "/a/b%20c",
            "/caf%C3%A9",
            "/a-b_c.d/e~f",
            "/v1/x:predict",
            "/.../..a/b..",
        ];
        for p in ok {
            assert_eq!(normalise(p), Ok(p), "{p}");
        }
        let bad = [
            "",
            "v1",
            "//",
            "/a//b",
            "/a/../b",
            "/a/..",
            "/..",
            "/a/./b",
            "/a/./",
            "/../",
            "/.",
            "/%2e%2e/x",
            "/%2E%2e/x",
            "/a/%2fb",
            "/a%2Fb",
            "/a\\b",
            "/a%5cb",
            "/a;b",
            "/a;jsessionid=1",
            "/a%3bb",
            "/a%00b",
            "/a\0b",
            "/a%252e%252e",
            "/a%",
            "/a%2",
            "/a%zz",
            "/a b",
            "/a\tb",
            "/a%7f",
        ];
        for p in bad {
            assert_eq!(normalise(p), Err(InvalidPath), "{p:?}");
        }
    }

    fn route(id: &str, host: Option<&str>, prefix: &str, project: ProjectSource) -> Route {
        Route::new(
            id.into(),
            host.map_or(HostRule::Any, HostRule::parse),
            prefix.into(),
            OrgSource::Fixed(OrgId::from("acme")),
            project,
            vec![],
            vec![Upstream::parse("http://127.0.0.1:9/base").unwrap()],
            false,
            false,
        )
    }

    #[test]
    fn matching_table() {
        let t = RouteTable::new(vec![
            route("root", None, "/", ProjectSource::None),
            route("predict", None, "/v1/predict", ProjectSource::None),
            route(
                "predict-batch",
                None,
                "/v1/predict/batch",
                ProjectSource::None,
            ),
            route(
                "host",
                Some("api.example.com"),
                "/v1/predict",
                ProjectSource::None,
            ),
        ]);
        let rows = [
            (None, "/v1/predict", "predict"),
            (None, "/v1/predict/", "predict"),
            (None, "/v1/predict/abc", "predict"),
            (None, "/v1/predictx", "root"),
            (None, "/v1/predict/batch/1", "predict-batch"),
            (Some("API.example.com:8443"), "/v1/predict/x", "host"),
            (Some("other.example.com"), "/v1/predict/x", "predict"),
            (None, "/elsewhere", "root"),
        ];
        for (host, path, want) in rows {
            assert_eq!(
                t.find(host.map(strip_port), path).map(|r| r.id.as_str()),
                Some(want),
                "{host:?} {path}"
            );
        }
        let no_root = RouteTable::new(vec![route(
            "predict",
            None,
            "/v1/predict",
            ProjectSource::None,
        )]);
        assert!(no_root.find(None, "/v1/other").is_none());
        assert!(no_root.find(None, "/v1").is_none());
    }

    #[test]
    fn org_sources() {
        let mut by_host = route("h", Some("{org}.api.example.com"), "/", ProjectSource::None);
        by_host.org = OrgSource::HostLabel;
        let mut by_path = route("p", None, "/v1/orgs", ProjectSource::Segment(4));
        by_path.org = OrgSource::Segment(3);
        let t = RouteTable::new(vec![
            by_host,
            by_path,
            route(
                "exact",
                Some("admin.api.example.com"),
                "/",
                ProjectSource::None,
            ),
        ]);
        let rows = [
            (
                Some("beta.api.example.com"),
                "/x",
                Some(("h", Some("beta"))),
            ),
            (
                Some("Beta.API.example.com"),
                "/x",
                Some(("h", Some("Beta"))),
            ),
            (
                Some("admin.api.example.com"),
                "/x",
                Some(("exact", Some("acme"))),
            ),
            (Some("a.b.api.example.com"), "/x", None),
            (Some(".api.example.com"), "/x", None),
            (Some("api.example.com"), "/x", None),
            (None, "/v1/orgs/beta/p1", Some(("p", Some("beta")))),
            (None, "/v1/orgs", Some(("p", Some("")))),
        ];
        for (host, path, want) in rows {
            let got = t
                .find(host, path)
                .map(|r| (r.id.as_str(), r.org_of(host, path)));
            assert_eq!(got, want, "{host:?} {path}");
        }
        let mut any = route("any", None, "/", ProjectSource::None);
        any.org = OrgSource::Any;
        assert_eq!(any.org_of(Some("x"), "/a"), None);
    }

    #[test]
    fn project_sources() {
        let p = |id: &str| Ok(Some(ProjectId::from(id)));
        let seg = route("s", None, "/v1/projects", ProjectSource::Segment(3));
        assert_eq!(seg.project_of("/v1/projects/p1/predict", None), p("p1"));
        assert_eq!(
            seg.project_of("/v1/projects/", None),
            Err(ProjectError::Missing)
        );
        assert_eq!(seg.project_of("/v1/projects/a%20b/x", None), p(""));
        let q = route(
            "q",
            None,
            "/predict",
            ProjectSource::Query("endpoint_id".into()),
        );
        assert_eq!(
            q.project_of("/predict", Some("a=1&endpoint_id=e-7")),
            p("e-7")
        );
        assert_eq!(
            q.project_of("/predict", Some("endpoint_idx=1")),
            Err(ProjectError::Missing)
        );
        assert_eq!(q.project_of("/predict", None), Err(ProjectError::Missing));
        assert_eq!(
            q.project_of("/predict", Some("endpoint_id=a&endpoint_id=b")),
            Err(ProjectError::Ambiguous)
        );
        let fixed = route("f", None, "/x", ProjectSource::Fixed(ProjectId::from("p9")));
        assert_eq!(fixed.project_of("/x", None), p("p9"));
        assert_eq!(
            route("n", None, "/x", ProjectSource::None).project_of("/x", None),
            Ok(None)
        );
    }

    #[test]
    fn upstream_paths() {
        let mut r = route("r", None, "/v1/predict", ProjectSource::None);
        let up = r.upstreams[0].clone();
        let path = |r: &Route, up, p, q| r.upstream_path_and_query(up, p, q);
        assert_eq!(
            path(&r, &up, "/v1/predict/m", Some("a=1")).as_deref(),
            Some("/base/v1/predict/m?a=1")
        );
        let bare = Upstream::parse("http://127.0.0.1:9/").unwrap();
        assert_eq!(
            path(&r, &bare, "/v1/predict/m", Some("a=1")),
            None,
            "as sent"
        );
        r.strip_prefix = true;
        assert_eq!(
            path(&r, &up, "/v1/predict/m", None).as_deref(),
            Some("/base/m")
        );
        assert_eq!(path(&r, &bare, "/v1/predict", None).as_deref(), Some("/"));
        assert!(Upstream::parse("https://x:1").is_err());
        assert!(Upstream::parse("http://x:1/a?b=c").is_err());
        assert!(Upstream::parse("/relative").is_err());
    }

    #[test]
    fn upstream_addresses_and_host_headers() {
        for (url, address, host) in [
            ("http://127.0.0.1:9/base", "127.0.0.1:9", "127.0.0.1:9"),
            ("http://backend", "backend:80", "backend"),
            ("http://[::1]:8080", "[::1]:8080", "[::1]:8080"),
        ] {
            let up = Upstream::parse(url).unwrap();
            assert_eq!(up.address, address, "{url}");
            assert_eq!(up.host, host, "{url}");
            assert!(up.address.parse::<std::net::SocketAddr>().is_ok() || url == "http://backend");
        }
    }
}
