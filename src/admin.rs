//! The admin/ops listener. Endpoints:
//!
//! | endpoint | answers |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves at all (liveness) |
//! | `GET /readyz`  | 200 when the config is loaded, Redis answers a PING and we are not draining; else 503 with the reason. The body also says whether the invalidation subscription is `live` |
//! | `GET /metrics` | Prometheus text format (see `metrics`) |
//! | `/v1/…` | the management API (`api`) |
//!
//! It is meant for the operators' network only: bind it to loopback or a private address.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::json;
use crate::error::json_error;
use crate::proxy::{Gateway, ResponseBody};
use crate::server::{Drain, Http, serve_plaintext, stopped};

/// Serves the admin endpoints until `stop`.
pub async fn serve(gw: Arc<Gateway>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let http = Http::new(&gw.config.limits);
    let drain = Arc::new(Drain::default());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let gw = gw.clone();
        let service = service_fn(move |req| handle(gw.clone(), req));
        let (http, watcher) = (http.clone(), drain.watcher());
        tokio::spawn(async move { serve_plaintext(&http, stream, service, watcher).await });
    }
    drop(listener);
    drain.stop().await;
}

/// One admin request.
pub async fn handle(
    gw: Arc<Gateway>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    if req.uri().path().starts_with("/v1/") {
        return Ok(crate::api::handle(&gw, req).await.map(Either::Right));
    }
    let res = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        (&Method::GET, "/readyz") => readiness(&gw).await,
        (&Method::GET, "/metrics") => {
            let m = &gw.metrics;
            m.cache_entries
                .with_label_values(&["keys"])
                .set(gw.cache.keys.len() as i64);
            m.cache_entries
                .with_label_values(&["projects"])
                .set(gw.cache.projects.len() as i64);
            let mut res = Response::new(Full::new(Bytes::from(m.render())));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            res
        }
        _ => json_error(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "No such admin endpoint; see /healthz, /readyz, /metrics.",
        ),
    };
    Ok(res.map(Either::Right))
}

async fn readiness(gw: &Gateway) -> Response<Full<Bytes>> {
    if gw.is_draining() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "draining" }),
        );
    }
    let invalidations = if gw.cache.is_subscribed() {
        "live"
    } else {
        "reconnecting"
    };
    match gw.store.ping().await {
        Ok(()) => json(
            StatusCode::OK,
            &serde_json::json!({ "status": "ready", "invalidations": invalidations }),
        ),
        Err(e) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "key_store_unavailable", "error": e.to_string() }),
        ),
    }
}
