//! The management side: the admin listener's endpoints.
//!
//! | endpoint | answers |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves at all (liveness) |
//! | `GET /readyz`  | 200 while the replica can serve: not draining, and Redis answers a PING or cached keys can still be served within `cache.max_stale` (and `cache.max_unsubscribed`); 503 otherwise. The body says `store` (`reachable` / `unreachable`), `serving` (`fresh` / `stale` / `nothing`) and `invalidations` (`live` / `reconnecting`) |
//! | `GET /metrics` | Prometheus text format (see `metrics`) |
//! | `/v1/…` | the management API ([`api`]) |
//!
//! Owns: what each endpoint answers ([`ops`] for health, readiness and metrics; [`api`] for
//! `/v1`). Does not own: the listener, its connections or its drain (`server::serve_admin`).
//! The listener is meant for the operators' network only: bind it to loopback or a private
//! address.

pub mod api;
pub mod ops;

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::replica::Replica;

/// One admin request.
pub async fn handle(replica: Arc<Replica>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path().starts_with("/v1/") {
        return api::handle(&replica, req).await;
    }
    ops::handle(&replica, &req).await
}
