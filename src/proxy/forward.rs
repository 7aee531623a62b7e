//! Rewrite and forward: the last step of the request path.
//!
//! Owns: the per-request upstream timeouts (connections are [`super::pool`]'s), the request
//! rewrite (credentials, hop-by-hop and `Connection`-named headers out; client-sent
//! `x-keygate-*` out; identity, request id, `Host` and `X-Forwarded-*` in), the response rewrite
//! (hop-by-hop out), streaming in both directions, the body cap for bodies of undeclared length,
//! and mapping upstream failures to 502/504/413.
//!
//! Invariant: no credential header ever reaches an upstream, and no header an upstream reads as
//! identity can come from the client.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response, Uri, Version};
use http_body_util::{Either, Limited};
use hyper::body::Incoming;

use super::route::{Route, Upstream};
use super::{ConnInfo, Gateway, Identity, ResponseBody};
use crate::config::{Config, Limits};
use crate::credential::CREDENTIAL_HEADERS;
use crate::error::GatewayError;
use crate::runtime::progress::{BodyStalled, Progress};
use crate::runtime::timer::CoarseTimer;
use crate::upstream::Pool;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

const X_KEYGATE_KEY_ID: HeaderName = HeaderName::from_static("x-keygate-key-id");
const X_KEYGATE_USER_ID: HeaderName = HeaderName::from_static("x-keygate-user-id");
const X_KEYGATE_ORG_ID: HeaderName = HeaderName::from_static("x-keygate-org-id");
const X_KEYGATE_ROLE: HeaderName = HeaderName::from_static("x-keygate-role");
const X_KEYGATE_SCOPES: HeaderName = HeaderName::from_static("x-keygate-scopes");
const X_KEYGATE_PROJECT_ID: HeaderName = HeaderName::from_static("x-keygate-project-id");
pub(super) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The most headers the rewrite adds (`Host` included): room for them is made at once.
const ADDED_HEADERS: usize = 11;

/// One worker's connections to every upstream, and the clocks of the timeouts that apply per
/// request (the timeouts themselves are the config's, which a reload may change; a clock's tick
/// is the one made for the timeout at start).
pub struct Upstreams {
    pool: Arc<Pool>,
    /// The response timeout's clock. Its ticker runs on the runtime that made the gateway, and
    /// only wakes requests whose upstream has not answered in time.
    timer: CoarseTimer,
    /// The clock of how long a request body may make no progress.
    body_timer: CoarseTimer,
}

impl Upstreams {
    pub fn new(limits: &Limits) -> Upstreams {
        Upstreams {
            pool: Pool::new(
                limits.upstream_connect_timeout,
                limits.upstream_idle_timeout,
            ),
            timer: CoarseTimer::new(limits.upstream_response_timeout),
            body_timer: CoarseTimer::new(limits.body_idle_timeout),
        }
    }

    /// Closes idle upstream connections past their timeout, for as long as the worker runs.
    pub fn close_idle(&self) -> impl Future<Output = ()> + use<> {
        self.pool.clone().close_idle()
    }
}

/// Step 9: rewrite the request, send it to one of the route's upstreams, stream the answer back.
///
/// A plain `fn` returning an `async` block, not an `async fn`: an `async fn` keeps a second copy
/// of its by-value arguments (the request) in its future, and this future is moved on every
/// request.
pub fn forward(
    gw: &Gateway,
    route: &Route,
    req: Request<Incoming>,
    identity: Option<&Identity>,
    conn: ConnInfo,
    request_id: &HeaderValue,
    upstream_seconds: &mut Option<f64>,
) -> impl Future<Output = Result<Response<ResponseBody>, GatewayError>> {
    let ups = &gw.upstreams;
    let upstream = route.pick_upstream();
    let config = &gw.replica.config;
    let limits = &config.limits;
    let upstream_req = upstream_request(route, upstream, req, identity, conn, request_id, config);
    let upstream_req = upstream_req.map(|body| {
        let body = Progress::new(body, &ups.body_timer, limits.body_idle_timeout);
        Limited::new(body, limits.max_body_bytes as usize)
    });
    async move {
        // The response timeout is polled beside the send, in place: a wrapper like
        // `tokio::time::timeout` would move the send future once more.
        let started = Instant::now();
        let mut send = pin!(ups.pool.send(upstream, upstream_req));
        let mut deadline = ups
            .timer
            .deadline(started + limits.upstream_response_timeout);
        let sent = poll_fn(|cx| match send.as_mut().poll(cx) {
            Poll::Ready(sent) => Poll::Ready(Some(sent)),
            Poll::Pending => Pin::new(&mut deadline).poll(cx).map(|()| None),
        })
        .await;
        *upstream_seconds = Some(started.elapsed().as_secs_f64());
        let mut response = match sent {
            None => {
                return Err(GatewayError::UpstreamTimeout(
                    limits.upstream_response_timeout,
                ));
            }
            Some(Err(e)) if caused_by_body_limit(&e) => return Err(GatewayError::PayloadTooLarge),
            Some(Err(e)) if caused_by::<BodyStalled>(&e) => {
                return Err(GatewayError::BodyTimeout(limits.body_idle_timeout));
            }
            Some(Err(e)) if caused_by_request_body(&e) => {
                return Err(GatewayError::InvalidRequestBody);
            }
            Some(Err(e)) => return Err(GatewayError::UpstreamUnavailable(e)),
            Some(Ok(response)) => response,
        };
        remove_hop_by_hop_and(response.headers_mut(), |_| false);
        Ok(response.map(Either::Left))
    }
}

/// The request as `upstream` gets it: its URI, headers and `Host` rewritten.
fn upstream_request(
    route: &Route,
    upstream: &Upstream,
    req: Request<Incoming>,
    identity: Option<&Identity>,
    conn: ConnInfo,
    request_id: &HeaderValue,
    config: &Config,
) -> Request<Incoming> {
    let (mut parts, body) = req.into_parts();
    let original_host = parts
        .uri
        .authority()
        .map(|a| HeaderValue::from_str(a.as_str()).expect("an authority is a valid header value"))
        .or_else(|| parts.headers.get(header::HOST).cloned());
    let path = route.upstream_path_and_query(upstream, parts.uri.path(), parts.uri.query());
    if let Some(path) = path {
        parts.uri = Uri::try_from(path).expect("a normalised path and its query form a URI");
    } else if parts.uri.authority().is_some() {
        // Absolute form (HTTP/2, or a proxy-style request line): upstreams get origin form.
        let path = parts.uri.path_and_query().cloned();
        parts.uri = path.map_or(Uri::from_static("/"), Uri::from);
    }
    parts.version = Version::HTTP_11;
    rewrite_request_headers(
        &mut parts.headers,
        identity,
        conn,
        request_id,
        original_host,
        config,
    );
    parts.headers.insert(header::HOST, upstream.host.clone());
    Request::from_parts(parts, body)
}

fn rewrite_request_headers(
    headers: &mut HeaderMap,
    identity: Option<&Identity>,
    conn: ConnInfo,
    request_id: &HeaderValue,
    original_host: Option<HeaderValue>,
    config: &Config,
) {
    let strip = &config.strip_headers;
    // `Expect: 100-continue` was answered by keygate's own server already.
    remove_hop_by_hop_and(headers, |name| {
        CREDENTIAL_HEADERS.contains(name)
            || name == header::FORWARDED
            || name == header::EXPECT
            || name.as_str().starts_with("x-keygate-")
            || name.as_str().starts_with("x-forwarded-")
            || strip.matches(name)
    });
    headers.reserve(ADDED_HEADERS);
    if let Some(id) = identity {
        let made = &id.principal.headers;
        headers.insert(X_KEYGATE_KEY_ID, made.key_id.clone());
        headers.insert(X_KEYGATE_USER_ID, made.user_id.clone());
        headers.insert(X_KEYGATE_ORG_ID, made.org_id.clone());
        headers.insert(X_KEYGATE_ROLE, made.role.clone());
        let scopes = match made.capped {
            false => made.scopes.clone(),
            true => {
                let p = &id.principal;
                let text = crate::model::effective(&p.key.scopes, p.owner.role, &config.resources);
                HeaderValue::from_str(&text).expect("scopes are header-safe")
            }
        };
        headers.insert(X_KEYGATE_SCOPES, scopes);
        if let Some(project) = &id.project {
            let project = HeaderValue::from_str(project.as_str()).expect("ids are header-safe");
            headers.insert(X_KEYGATE_PROJECT_ID, project);
        }
    }
    headers.insert(X_REQUEST_ID, request_id.clone());
    headers.insert(X_FORWARDED_FOR, conn.forwarded_for);
    headers.insert(X_FORWARDED_PROTO, conn.forwarded_proto);
    if let Some(host) = original_host {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// Removes hop-by-hop headers, every header the `Connection` header names, and the headers
/// `also` picks. One pass over the names present (a request has a handful) instead of a map
/// lookup per name that might be.
fn remove_hop_by_hop_and(headers: &mut HeaderMap, also: impl Fn(&HeaderName) -> bool) {
    let mut has_connection = false;
    let mut gone: Vec<HeaderName> = headers
        .keys()
        .filter(|&name| {
            has_connection |= name == header::CONNECTION;
            HOP_BY_HOP.contains(name) || name == header::UPGRADE || also(name)
        })
        .cloned()
        .collect();
    if has_connection {
        let named = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok());
        gone.extend(named);
    }
    for name in gone {
        headers.remove(name);
    }
}

/// Whether the request body the client sent broke off or was malformed (a bad chunk size): the
/// client's error, not the upstream's. hyper's client reports a body that failed as a user
/// error whose cause is the server side's own `hyper::Error`.
fn caused_by_request_body(e: &crate::upstream::UpstreamError) -> bool {
    let crate::upstream::UpstreamError::Http(http) = e else {
        return false;
    };
    let mut source = std::error::Error::source(http);
    while let Some(err) = source {
        if err.is::<hyper::Error>() {
            return http.is_user();
        }
        source = err.source();
    }
    false
}

fn caused_by_body_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<http_body_util::LengthLimitError>(e)
}

/// Whether `E` is `e` or one of its causes.
fn caused_by<E: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.is::<E>() {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop_and(&mut h, |_| false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn the_request_keeps_end_to_end_headers_with_every_value_in_order() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("x-multi", "a"),
            ("apikey", "kg_secret"),
            ("x-multi", "b"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("x-keygate-role", "admin"),
            ("x-forwarded-for", "6.6.6.6"),
            ("accept", "*/*"),
            ("x-multi", "c"),
        ] {
            h.append(name, HeaderValue::from_static(value));
        }
        let conn = ConnInfo::new("127.0.0.1:1".parse().unwrap(), false);
        let id = HeaderValue::from_static("rid");
        let config = Config::parse(
            "[[listener]]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n[redis]\nurl = \"redis://127.0.0.1:1\"\n[[route]]\nid = \"r\"\npath_prefix = \"/\"\norg = \"o\"\nupstreams = [\"http://127.0.0.1:1\"]\n",
            std::path::Path::new("."),
        )
        .unwrap();
        rewrite_request_headers(&mut h, None, conn, &id, None, &config);
        let multi: Vec<_> = h.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "b", "c"]);
        assert_eq!(h["accept"], "*/*");
        for gone in ["apikey", "connection", "x-hop", "x-keygate-role"] {
            assert!(!h.contains_key(gone), "{gone} went upstream");
        }
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-request-id"], "rid");
        assert_eq!(h.len(), 7, "nothing else: {h:?}");
    }
}
