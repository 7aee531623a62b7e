//! keygate: an API-key authentication gateway for model-inference backends.
//!
//! Clients call inference through keygate with an API key; keygate checks the key, its scopes,
//! its owner and the owner's access to the project, then streams the request to a backend, or
//! rejects it with a JSON error. Redis is the store of record, shared by every replica; each
//! replica keeps hot entries in process and drops them when Redis announces a change.
//!
//! # Layout
//! - `main.rs` + [`cli`]: the CLI (`serve`, `check-config`, `admin …`, `demo-upstream`).
//! - [`config`]: TOML file → validated runtime config and compiled route table.
//! - [`server`]: accept loops, TLS, HTTP/1.1 + HTTP/2, connection limits, graceful drain.
//! - [`proxy`]: `handle()`, the request path; [`proxy::route`] matching on the normalised path;
//!   [`proxy::forward`] the pooled client, header rewrite and streaming.
//! - [`credential`]: key format (generate, parse, checksum, hash, mask) and header extraction.
//! - [`store`]: records and the Redis schema; every write publishes an invalidation.
//! - [`cache`]: hot entries (bounded, TTL, negative entries, one fetch in flight per key,
//!   stale-if-error) and the invalidation subscriber.
//! - [`policy`]: pure: may this key do this on this route and project, now?
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`metrics`], [`telemetry`], [`error`]: as named.
//! - [`demo`]: a tiny upstream for the demo and benchmarks.
//!
//! # The request path
//! 1. Refuse `CONNECT` and upgrades. 2. Normalise the path (reject anything ambiguous).
//! 3. Match host + path to a route; read its project. 4. Extract the credential; check its format
//!    and checksum (no store access). 5. Resolve it: hot cache, Redis on a miss. 6. Check the key's
//!    state against the clock. 7. Authorize (pure policy). 8. Check the body size.
//! 9. Rewrite headers and stream to an upstream. Then one metrics update and one access-log line.

#![forbid(unsafe_code)]

pub mod admin;
pub mod cache;
pub mod cli;
pub mod config;
pub mod credential;
pub mod demo;
pub mod error;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod server;
pub mod store;
pub mod telemetry;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cache::Cache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::proxy::forward::Upstreams;
use crate::store::{Store, StoreError};

/// Listeners bound by the caller: one per configured data-plane listener (same order), and the
/// admin listener. Tests bind `127.0.0.1:0`.
pub struct Listeners {
    pub data: Vec<TcpListener>,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds every address in the config.
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        let mut data = Vec::new();
        for l in &config.listeners {
            data.push(TcpListener::bind(l.addr).await?);
        }
        Ok(Listeners {
            data,
            admin: TcpListener::bind(config.admin_addr).await?,
        })
    }
}

/// Runs a keygate replica on bound listeners until `shutdown` resolves, then drains: `/readyz`
/// turns 503, listeners close, in-flight requests get `limits.drain_timeout` to finish.
pub async fn run(
    config: Arc<Config>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StoreError> {
    let metrics = Arc::new(Metrics::new());
    let store = Store::open(&config.redis)?;
    let cache = Arc::new(Cache::new(config.cache));
    let gw = Arc::new(Gateway {
        upstreams: Upstreams::new(&config.limits),
        config: config.clone(),
        store: store.clone(),
        cache: cache.clone(),
        metrics: metrics.clone(),
        draining: AtomicBool::new(false),
    });
    let (stop_data, data_stopped) = watch::channel(false);
    let (stop_admin, admin_stopped) = watch::channel(false);
    // The subscriber stops last: requests still draining must see revocations.
    let subscriber = tokio::spawn(cache::subscribe(
        cache,
        store,
        metrics,
        admin_stopped.clone(),
    ));
    let mut servers = tokio::task::JoinSet::new();
    for (listener, cfg) in listeners.data.into_iter().zip(&config.listeners) {
        tracing::info!(addr = %cfg.addr, tls = cfg.tls.is_some(), "data plane listening");
        let tls = cfg.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        servers.spawn(server::serve_data(
            gw.clone(),
            listener,
            tls,
            data_stopped.clone(),
        ));
    }
    tracing::info!(addr = %config.admin_addr, "admin listening");
    let admin = tokio::spawn(admin::serve(gw.clone(), listeners.admin, admin_stopped));

    shutdown.await;
    tracing::info!(deadline = ?config.limits.drain_timeout, "draining");
    gw.draining.store(true, Ordering::Release);
    let _ = stop_data.send(true);
    let drained = tokio::time::timeout(config.limits.drain_timeout, async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("drain deadline passed; closing remaining connections");
        servers.abort_all();
    }
    let _ = stop_admin.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), admin).await;
    let _ = subscriber.await;
    tracing::info!("stopped");
    Ok(())
}
