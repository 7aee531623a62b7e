//! The management side: the admin listener's endpoints.
//!
//! | endpoint | answers |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves at all (liveness) |
//! | `GET /readyz`  | 200 while the replica can serve: not draining, and Redis answers a PING or cached keys can still be served within `cache.max_stale` (and `cache.max_unsubscribed`); 503 otherwise. The body says `store` (`reachable` / `unreachable`), `serving` (`fresh` / `stale` / `nothing`) and `invalidations` (`live` / `reconnecting`) |
//! | `GET /metrics` | Prometheus text format (see `metrics`) |
//! | `POST /reload` | reads the config file again |
//! | `/v1/…` | the management API ([`api`]): on the admin listener, or on a listener of its own (`[management]`, for users, with TLS), which then serves nothing else |
//! | `/console` | the API Keys page ([`console`]), beside the management API |
//!
//! Owns: what each endpoint answers ([`ops`] for health, readiness and metrics; [`api`] for
//! `/v1`). Does not own: the listener, its connections or its drain (`server::serve_admin`).
//! The listener is meant for the operators' network only: bind it to loopback or a private
//! address.

pub mod api;
pub mod console;
pub mod ops;

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::error::json_error;
use crate::replica::Replica;

/// Which endpoints a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoints {
    /// The operators' and the management API: one listener for both (`[admin]` alone).
    All,
    /// The operators' only (`/healthz`, `/readyz`, `/metrics`, `POST /reload`): the management
    /// API has a listener of its own.
    Ops,
    /// The management API only (`[management]`), for users.
    Management,
}

/// One admin request.
pub async fn handle(
    replica: Arc<Replica>,
    endpoints: Endpoints,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let console = path == "/console" || path.starts_with("/console/");
    let management = console || path.starts_with("/v1/");
    match (endpoints, management) {
        (Endpoints::All | Endpoints::Management, true) if console => console::asset(path),
        (Endpoints::All | Endpoints::Management, true) => api::handle(&replica, req).await,
        (Endpoints::All | Endpoints::Ops, false) => ops::handle(&replica, &req).await,
        (Endpoints::Ops, true) => json_error(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "The management API is on its own listener ([management] addr).",
        ),
        (Endpoints::Management, false) => json_error(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "No such endpoint here; the management API is under /v1.",
        ),
    }
}
