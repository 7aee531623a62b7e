//! The operators' endpoints: liveness, readiness, metrics and reload.
//!
//! Owns: what `/healthz`, `/readyz`, `/metrics` and `POST /reload` answer. Does not own: the metrics themselves
//! (`metrics`).

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::sync::oneshot;

use super::api::json;
use crate::error::json_error;
use crate::replica::Replica;

/// `/healthz`, `/readyz`, `/metrics`, or 404.
pub async fn handle<B>(replica: &Replica, req: &Request<B>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        (&Method::GET, "/readyz") => readiness(replica).await,
        (&Method::GET, "/metrics") => metrics(replica),
        (&Method::POST, "/reload") => reload(replica).await,
        _ => json_error(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "No such admin endpoint; see /healthz, /readyz, /metrics, POST /reload.",
        ),
    }
}

/// Reads the config file again: 200 with what was applied, or 422 with every problem of the
/// file (the running config stays).
async fn reload(replica: &Replica) -> Response<Full<Bytes>> {
    let unavailable = || {
        json_error(
            StatusCode::CONFLICT,
            "reload_unavailable",
            "This keygate was not started from a config file it can read again.",
        )
    };
    let Some(requests) = &replica.reloads else {
        return unavailable();
    };
    let (reply, outcome) = oneshot::channel();
    if requests.send(reply).await.is_err() {
        return unavailable();
    }
    match outcome.await {
        Ok(Ok(done)) => json(
            StatusCode::OK,
            &serde_json::json!({
                "status": "reloaded",
                "routes": done.routes,
                "restart_needed": done.restart_needed,
            }),
        ),
        Ok(Err(problems)) => json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_config",
            &format!("The config file was refused; the running config stays. {problems}"),
        ),
        Err(_) => unavailable(),
    }
}

fn metrics(replica: &Replica) -> Response<Full<Bytes>> {
    let m = &replica.metrics;
    m.cache_entries
        .with_label_values(&["keys"])
        .set(replica.cache.keys.len() as i64);
    m.cache_entries
        .with_label_values(&["projects"])
        .set(replica.cache.projects.len() as i64);
    m.store_reachable
        .set(i64::from(!replica.health.store.is_failing()));
    m.invalidations_live
        .set(i64::from(replica.cache.is_subscribed()));
    let mut res = Response::new(Full::new(Bytes::from(m.render())));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

/// Ready while the replica can serve anything useful: not draining, and either Redis answers or
/// cached keys can still be served within `cache.max_stale` (the outage semantics: pulling every
/// replica out of the balancer at the first failed ping would serve no one). The body says
/// which, and whether Redis and the invalidations are reachable.
async fn readiness(replica: &Replica) -> Response<Full<Bytes>> {
    if replica.is_draining() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "draining" }),
        );
    }
    let invalidations = if replica.cache.is_subscribed() {
        "live"
    } else {
        "reconnecting"
    };
    let (status, store, serving, error) = match replica.store.ping().await {
        Ok(()) => (StatusCode::OK, "reachable", "fresh", None),
        Err(e) if replica.cache.can_serve_stale() => {
            (StatusCode::OK, "unreachable", "stale", Some(e.to_string()))
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unreachable",
            "nothing",
            Some(e.to_string()),
        ),
    };
    let body = serde_json::json!({
        "status": if status == StatusCode::OK { "ready" } else { "key_store_unavailable" },
        "store": store,
        "serving": serving,
        "invalidations": invalidations,
        "error": error,
    });
    json(status, &body)
}
