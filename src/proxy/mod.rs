//! The request path: [`handle`] runs the steps of DESIGN.md in order, each returning
//! `Result<_, GatewayError>` and leaving early with `?`; the wrapper owns timing, metrics, the
//! access log and error-to-response.
//!
//! 1. Refuse tunnels and ambiguous hosts.
//! 2. Normalise the path.
//! 3. Match a route and read its project.
//! 4. Extract the credential (format and checksum; no store access).
//! 5. Resolve the key (hot cache, Redis on a miss).
//! 6. Check the key's state against the clock.
//! 7. Authorize (pure policy); count the key's use (written to Redis in batches, off the path).
//! 8. Check the method (the route takes it; no upgrade) and the body size: after the key, so a
//!    caller without one learns nothing but 401.
//! 9. Rewrite and forward (`forward`).
//!
//! A response to a request made with a legacy key id + secret pair carries `Deprecation` (since
//! the pair's import) and, when a sunset is configured, `Sunset` (RFC 9745, RFC 8594).

pub mod forward;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Version, header};
use http_body::Body as _;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::cache::Outcome;
use crate::config::{Config, Limits};
use crate::credential;
use crate::error::GatewayError;
use crate::metrics::{self, RouteMetrics};
use crate::model::{Credential, Principal, ProjectId, unix_now};
use crate::policy::{self, Access};
use crate::replica::Replica;
use crate::route::{self, ErrorStyle, Route};
use crate::telemetry::{Condition, X_REQUEST_ID, chain, request_id};
use crate::throttle::Refusal;
use crate::upstream::PooledBody;
use forward::Upstreams;

const DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
const SUNSET: HeaderName = HeaderName::from_static("sunset");

/// A response body: the upstream's, streamed, or one of ours.
pub type ResponseBody = Either<PooledBody, Full<Bytes>>;

/// What the request path needs: the replica's shared state, and this worker's upstream pool and
/// metric handles. Made anew, for every worker, when the config is reloaded; a request keeps
/// the one it started with, so in-flight requests finish on the old routes.
pub struct Gateway {
    pub replica: Replica,
    /// Keep-alive connections to every upstream (one pool per worker, kept across reloads).
    pub upstreams: Arc<Upstreams>,
    /// Metric handles per route (by [`Route::index`]), then one for requests matching none.
    route_metrics: Vec<RouteMetrics>,
    /// Whether each route's upstreams are failing (by [`Route::index`]), shared by every worker.
    upstream_health: Arc<[Condition]>,
}

impl Gateway {
    /// One worker's gateway: `upstreams` is its pool; `upstream_health` has one entry per route
    /// of `replica.config` (see [`Gateway::upstream_health`]).
    pub fn new(
        replica: Replica,
        upstreams: Arc<Upstreams>,
        upstream_health: Arc<[Condition]>,
    ) -> Gateway {
        let (config, metrics) = (&replica.config, &replica.metrics);
        let route_metrics = config
            .routes
            .iter()
            .map(|r| metrics.route(&r.id))
            .chain([metrics.route("none")])
            .collect();
        Gateway {
            upstreams,
            replica,
            route_metrics,
            upstream_health,
        }
    }

    /// The conditions the workers of a config share, one per route.
    pub fn upstream_health(config: &Config) -> Arc<[Condition]> {
        config.routes.iter().map(|_| Condition::default()).collect()
    }

    fn route_metrics(&self, route: Option<&Route>) -> &RouteMetrics {
        let i = route.map_or(self.route_metrics.len() - 1, |r| r.index);
        &self.route_metrics[i]
    }
}

/// What the downstream connection tells us about the client, as the `X-Forwarded-For` and
/// `X-Forwarded-Proto` values every request on it carries upstream (made once per connection).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: IpAddr,
    pub forwarded_for: HeaderValue,
    pub forwarded_proto: HeaderValue,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> ConnInfo {
        ConnInfo {
            peer: peer.ip(),
            forwarded_for: HeaderValue::from_str(&peer.ip().to_string())
                .expect("an IP is a valid header value"),
            forwarded_proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
        }
    }

    /// The client's address: the last one in the header a trusted proxy in front sets, when the
    /// config names one and it parses, else the connection's peer.
    fn client(&self, headers: &HeaderMap, header: Option<&HeaderName>) -> IpAddr {
        header
            .and_then(|name| headers.get_all(name).iter().next_back())
            .and_then(|v| v.to_str().ok()?.rsplit(',').next()?.trim().parse().ok())
            .unwrap_or(self.peer)
    }
}

/// The authenticated caller of a request.
pub struct Identity {
    pub principal: Arc<Principal>,
    pub project: Option<ProjectId>,
}

/// What the access log, metrics and response headers record of a request.
#[derive(Default)]
struct Record<'g> {
    route: Option<&'g Route>,
    /// The caller, once authenticated.
    principal: Option<Arc<Principal>>,
    upstream_seconds: Option<f64>,
    /// The request used a legacy pair imported at this time (Unix seconds).
    legacy_since: Option<u64>,
}

/// Serves one data-plane request. Never fails: errors become JSON responses here.
///
/// This and [`proxy`] are plain `fn`s returning `async` blocks, as is [`forward::forward`]: an
/// `async fn` keeps a second copy of its by-value arguments (the request) in its future, and
/// this future is moved on every request.
pub fn handle(
    gw: Arc<Gateway>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> {
    let started = tokio::time::Instant::now();
    let request_id = request_id(req.headers());
    let method = req.method().clone();
    // An HTTP/1 request whose body an error leaves unread: its connection cannot be reused.
    let unread_body = req.version() <= Version::HTTP_11 && !req.body().is_end_stream();
    async move {
        let mut record = Record::default();
        let result = proxy(&gw, conn, req, &request_id, &mut record).await;
        let (mut response, error) = match result {
            Ok(response) => (response, None),
            Err(e) => {
                let style = record.route.map_or(ErrorStyle::Keygate, |r| r.error_style);
                (e.to_response(style).map(Either::Right), Some(e))
            }
        };
        let headers = response.headers_mut();
        headers.insert(X_REQUEST_ID, request_id.clone());
        if error.is_some() && unread_body {
            // Said, so a pooled client does not send its next request on it; the close then
            // lingers (`runtime::lingering`) so the client still writing reads this answer.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(since) = record.legacy_since {
            headers.insert(DEPRECATION, deprecation(since));
            if let Some(sunset) = &gw.replica.config.legacy_sunset {
                headers.insert(SUNSET, sunset.header.clone());
            }
        }

        let route = record.route.map_or("none", |r| r.id.as_str());
        let status = response.status();
        let class = metrics::status_class(status.as_u16());
        let outcome = error.as_ref().map_or("forwarded", GatewayError::code);
        let elapsed = started.elapsed().as_secs_f64();
        let m = gw.route_metrics(record.route);
        match &error {
            None => m.forwarded[class].inc(),
            Some(e) => m.count_error(e.code(), class),
        }
        m.request_duration.observe(elapsed);
        if let Some(secs) = record.upstream_seconds {
            m.upstream_duration.observe(secs);
        }
        log_health(&gw, record.route, error.as_ref());
        if gw.replica.config.log.access_log {
            tracing::info!(
                target: "keygate::access",
                request_id = request_id.to_str().unwrap_or(""),
                method = %method,
                route,
                key_id = record.principal.as_ref().map_or("", |p| p.key.id.as_str()),
                status = status.as_u16(),
                outcome,
                duration_ms = (elapsed * 1e6).round() / 1e3,
            );
        }
        Ok(response)
    }
}

/// keygate's own failures and its upstreams', logged when they start and when they end, not per
/// request: each request is in the access log and the metrics.
fn log_health(gw: &Gateway, route: Option<&Route>, error: Option<&GatewayError>) {
    let health = &gw.replica.health;
    let upstream = route.map(|r| (r.id.as_str(), &gw.upstream_health[r.index]));
    match (error, upstream) {
        (Some(e @ GatewayError::KeyStoreUnavailable(_)), _) if health.store.failed() => {
            tracing::warn!(error = %chain(e), "key store unreachable: cached keys are served until cache.max_stale, other requests get 503");
        }
        (Some(e @ GatewayError::KeyStoreCorrupt(_)), _) if health.corrupt_records.failed() => {
            tracing::error!(error = %chain(e), "a record in the key store is corrupt: requests that need it get 500");
        }
        (
            Some(e @ (GatewayError::UpstreamUnavailable(_) | GatewayError::UpstreamTimeout(_))),
            Some((route, failing)),
        ) if failing.failed() => {
            tracing::warn!(route, error = %chain(e), "upstream failing: requests get 502 or 504");
        }
        (None, Some((route, failing))) if failing.recovered() => {
            tracing::info!(route, "upstream answers again");
        }
        _ => {}
    }
}

/// Steps 1–9.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its by-value arguments twice"
)]
fn proxy<'g>(
    gw: &'g Gateway,
    conn: ConnInfo,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    record: &mut Record<'g>,
) -> impl Future<Output = Result<Response<ResponseBody>, GatewayError>> {
    async move {
        refuse_tunnels(&req)?;
        check_head_size(&req, &gw.replica.config.limits)?;
        let host = host(&req)?.map(route::strip_port);
        let path = route::normalise(req.uri().path())?;
        let route = gw
            .replica
            .config
            .routes
            .find(host, path)
            .ok_or(GatewayError::RouteNotFound)?;
        record.route = Some(route);
        let identity = if route.public {
            None
        } else {
            let project = route.project_of(path, req.uri().query())?;
            let header = gw.replica.config.client_address_header.as_ref();
            let client = conn.client(req.headers(), header);
            let presented = (req.headers(), client);
            let wanted = (route.org_of(host, path), project);
            Some(authenticate(&gw.replica, route, presented, wanted, record).await?)
        };
        check_method(route, &req)?;
        check_body_size(req.headers(), gw.replica.config.limits.max_body_bytes)?;
        forward::forward(
            gw,
            route,
            req,
            identity.as_ref(),
            conn,
            request_id,
            &mut record.upstream_seconds,
        )
        .await
    }
}

/// Steps 4–7: who is calling, and may they? `org`: the org the route or request names (`None`:
/// any); `project`: the project it names, looked up in the key's org, so that another org's
/// project is answered as one that does not exist. A client that keeps presenting keys that do
/// not exist is refused before its keys are looked up (`throttle`).
async fn authenticate(
    r: &Replica,
    route: &Route,
    (headers, client): (&HeaderMap, IpAddr),
    (org, project): (Option<&str>, Option<ProjectId>),
    record: &mut Record<'_>,
) -> Result<Identity, GatewayError> {
    let now = unix_now();
    let credential = credential::extract(headers, &r.config.keys).inspect_err(|e| {
        if *e == credential::CredentialError::Malformed {
            r.throttle.failed(client, now);
        }
    })?;
    r.throttle.check(client, now).map_err(|refusal| {
        let reason = match refusal {
            Refusal::Client { .. } => "client",
            Refusal::UnknownKeys { .. } => "unknown_keys",
        };
        r.metrics.auth_throttled.with_label_values(&[reason]).inc();
        GatewayError::Throttled(refusal)
    })?;
    let lookup = r.cache.principal(&r.store, credential.hash()).await;
    r.metrics
        .key_lookup(lookup.as_ref().ok().map(|l| l.outcome));
    let lookup = lookup.inspect_err(|_| r.metrics.redis_errors.inc())?;
    match lookup.outcome {
        Outcome::Miss if r.health.store.recovered() => tracing::info!("key store reachable again"),
        Outcome::Stale if r.health.store.failed() => {
            tracing::warn!(
                "key store unreachable: cached keys are served until cache.max_stale, other requests get 503"
            );
        }
        _ => {}
    }
    let Some(principal) = lookup.value else {
        if lookup.outcome == Outcome::Miss {
            r.throttle.unknown_lookup(now);
        }
        r.throttle.failed(client, now);
        return Err(GatewayError::UnknownKey);
    };
    record.principal = Some(principal.clone());
    if matches!(credential, Credential::Legacy { .. }) {
        record.legacy_since = Some(principal.key.created_at);
    }
    let sunset = r.config.legacy_sunset.as_ref().map(|s| s.at);
    policy::check_key(&principal, &credential, now, sunset)?;

    let found = match &project {
        Some(id) if !id.as_str().is_empty() => Some(
            r.cache
                .project(&r.store, &principal.key.org_id, id)
                .await?
                .value,
        ),
        Some(_) => Some(None),
        None => None,
    };
    let access = Access {
        org,
        scopes: &route.scopes,
        project: found.as_ref().map(|p| p.as_deref()),
    };
    policy::authorize(&principal, &access)?;
    r.usage
        .record(&principal.key.org_id, &principal.key.id, now);
    Ok(Identity { principal, project })
}

/// Step 1: keygate forwards requests, not tunnels.
fn refuse_tunnels(req: &Request<Incoming>) -> Result<(), GatewayError> {
    if req.method() == Method::CONNECT {
        return Err(GatewayError::MethodNotAllowed(route::allow_header(
            &route::DEFAULT_METHODS,
        )));
    }
    Ok(())
}

/// Step 1: the head is within the limits: its request target within `max_uri_bytes` (else
/// 414), the whole head, counted as it is written on the wire, within `max_header_bytes` (431).
fn check_head_size(req: &Request<Incoming>, limits: &Limits) -> Result<(), GatewayError> {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    if target > limits.max_uri_bytes {
        return Err(GatewayError::UriTooLong);
    }
    // "METHOD target HTTP/1.1\r\n", then "name: value\r\n" each, then "\r\n".
    let line = req.method().as_str().len() + target + 12;
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if line + headers + 2 > limits.max_header_bytes {
        return Err(GatewayError::HeadersTooLarge);
    }
    Ok(())
}

/// Step 8: the route forwards this method, and no upgrade is asked for. After authentication,
/// so that a caller without a key learns nothing but 401.
fn check_method(route: &Route, req: &Request<Incoming>) -> Result<(), GatewayError> {
    if !route.allows(req.method()) {
        return Err(GatewayError::MethodNotAllowed(route.allow().clone()));
    }
    if req.headers().contains_key(header::UPGRADE) {
        return Err(GatewayError::UpgradeNotSupported);
    }
    Ok(())
}

/// Step 8, too: refuse a declared body over the limit before forwarding anything. Undeclared
/// (chunked) bodies are capped while they stream (`forward`).
fn check_body_size(headers: &HeaderMap, max: u64) -> Result<(), GatewayError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(len) if len > max => Err(GatewayError::PayloadTooLarge),
        _ => Ok(()),
    }
}

/// Step 1: the host the client addressed, `:authority` (HTTP/2, absolute form) or `Host`, once
/// it is unambiguous (RFC 9112 §3.2): an HTTP/1.1 request has exactly one `Host`; an HTTP/2
/// request's `Host`, if it sends one too, is its `:authority`. One header lookup for both.
fn host(req: &Request<Incoming>) -> Result<Option<&str>, GatewayError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    let authority = req.uri().authority();
    let fine = match (req.version(), authority, first, second) {
        (_, _, Some(_), Some(_)) => false,
        (Version::HTTP_11, None, None, _) => false,
        (Version::HTTP_2, Some(authority), Some(host), _) => host
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes()),
        _ => true,
    };
    if !fine {
        return Err(GatewayError::InvalidHost);
    }
    Ok(authority
        .map(|a| a.as_str())
        .or_else(|| first.and_then(|h| h.to_str().ok())))
}

/// `Deprecation: @<unix seconds>` (RFC 9745).
fn deprecation(since: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("@{since}")).expect("digits are a valid header value")
}
