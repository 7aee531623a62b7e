//! keygate: an API-key authentication gateway for model-inference backends.
//!
//! Clients call inference through keygate with an API key; keygate checks the key, its scopes,
//! its owner and the owner's access to the project, then streams the request to a backend, or
//! rejects it with a JSON error. Redis is the store of record, shared by every replica; each
//! replica keeps hot entries in process and drops them when Redis announces a change.
//!
//! # Layout
//! In layers, bottom first; a module names only modules of lower layers (`tests/integration/
//! layers.rs` checks it).
//! 1. [`model`]: ids, records, roles, scopes, the principal, the identity headers. No I/O.
//! 2. [`credential`]: the key format and header extraction. [`runtime`]: the hand-written runtime
//!    parts (coarse timer, drain, HTTP/2 idle close). [`telemetry`]: logging and request ids.
//! 3. [`policy`]: pure: may this key do this on this route and project, now? [`route`]: the
//!    route table and path normalisation.
//! 4. [`store`]: Redis (schema, field codec, audit, usage counts). [`upstream`]: pooled
//!    keep-alive connections to backends.
//! 5. [`cache`]: hot entries over the store (bounded, TTL, negative entries, one fetch in flight
//!    per key, stale-if-error) and the invalidation subscriber.
//! 6. [`config`]: TOML file → validated config. [`error`]: the data plane's errors and their
//!    responses. [`metrics`]: the Prometheus registry.
//! 7. [`replica`]: the shared state of a replica.
//! 8. [`proxy`]: `handle()`, the request path. [`admin`]: the ops endpoints and the `/v1` API.
//! 9. [`server`]: accept loops, TLS, HTTP/1.1 + HTTP/2, limits, drain. [`cli`]: the management
//!    commands (over the API or on the store). [`demo`]: a tiny upstream for demos and
//!    benchmarks. This file: [`run`], one replica on bound listeners.
//!
//! # The request path
//! 1. Refuse `CONNECT` and ambiguous hosts. 2. Normalise the path (reject anything ambiguous).
//! 3. Match host + path to a route; read its project. 4. Extract the credential; check its format
//!    and checksum (no store access). 5. Resolve it: hot cache, Redis on a miss. 6. Check the key's
//!    state against the clock. 7. Authorize (pure policy). 8. Check the method, upgrades and the
//!    body size. 9. Rewrite headers and stream to an upstream. Then one metrics update and one
//!    access-log line.

#![forbid(unsafe_code)]

// In layer order, bottom first (see the layout above).
pub mod model;

pub mod credential;
pub mod runtime;
pub mod telemetry;
pub mod throttle;

pub mod policy;
pub mod route;

pub mod store;
pub mod upstream;

pub mod cache;

pub mod config;
pub mod error;
pub mod metrics;

pub mod replica;

pub mod admin;
pub mod proxy;

pub mod cli;
pub mod demo;
pub mod server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, watch};

use crate::cache::Cache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::proxy::forward::Upstreams;
use crate::replica::{Health, ReloadRequest, Reloaded, Replica};
use crate::runtime::stopped;
use crate::server::Current;
use crate::store::usage::Usage;
use crate::store::{Store, StoreError};
use crate::throttle::Throttle;

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot open the key store")]
    Store(#[from] StoreError),
    /// The store has another layout than this keygate reads (the message says what to run).
    #[error("{0}")]
    Layout(String),
    #[error("cannot use a listener")]
    Listener(#[from] std::io::Error),
}

/// Kernel accept queue per socket.
const LISTEN_BACKLOG: u32 = 4096;

/// Sockets bound by the caller before `run()` (tests bind `127.0.0.1:0`).
pub struct Listeners {
    /// Per configured data-plane listener (same order): one socket per worker, all bound to the
    /// same address with `SO_REUSEPORT`, so the kernel spreads connections over the workers.
    pub data: Vec<Vec<std::net::TcpListener>>,
    pub admin: std::net::TcpListener,
    /// The management API's own listener, when the config gives it one.
    pub management: Option<std::net::TcpListener>,
}

impl Listeners {
    /// Binds every address in the config (port 0 picks one port shared by all workers).
    /// Must be called inside a tokio runtime.
    pub fn bind(config: &Config) -> std::io::Result<Listeners> {
        let data = config
            .listeners
            .iter()
            .map(|l| bind_shared(l.addr, config.workers))
            .collect::<Result<_, _>>()?;
        let admin = std::net::TcpListener::bind(config.admin_addr)?;
        admin.set_nonblocking(true)?;
        let management = match &config.management {
            Some(m) => {
                let listener = std::net::TcpListener::bind(m.addr)?;
                listener.set_nonblocking(true)?;
                Some(listener)
            }
            None => None,
        };
        Ok(Listeners {
            data,
            admin,
            management,
        })
    }

    /// The bound address of each data-plane listener.
    pub fn data_addrs(&self) -> Vec<SocketAddr> {
        self.data
            .iter()
            .map(|socks| {
                socks[0]
                    .local_addr()
                    .expect("a bound socket has an address")
            })
            .collect()
    }
}

fn bind_shared(
    mut addr: SocketAddr,
    workers: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut sockets = Vec::with_capacity(workers);
    for _ in 0..workers.max(1) {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(LISTEN_BACKLOG)?;
        addr = listener.local_addr()?;
        sockets.push(listener.into_std()?);
    }
    Ok(sockets)
}

/// Where a replica reads its config again on a reload.
#[derive(Clone, Debug)]
pub struct Reload {
    /// The file the running config came from.
    pub path: PathBuf,
    /// Reload on SIGHUP too. The binary does; tests ask the admin listener (`POST /reload`),
    /// since a signal reaches every replica in a process.
    pub on_sighup: bool,
}

/// Runs a keygate replica on bound listeners until `shutdown` resolves, then drains: `/readyz`
/// turns 503, listeners close, in-flight requests get `limits.drain_timeout` to finish. With
/// `reload`, the config file is read again on request (`POST /reload`, SIGHUP): when it is
/// valid, new requests use it; in-flight ones finish on the old one.
///
/// The data plane runs on `config.workers` threads, each a current-thread runtime with its own
/// accept loops, upstream pool and Redis connection (thread-per-core); they share the config,
/// the hot cache and the metrics. The admin listener, the invalidation subscriber and the
/// reloader run on the caller's runtime.
pub async fn run(
    config: Arc<Config>,
    listeners: Listeners,
    reload: Option<Reload>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let store = Store::open(&config.redis)?;
    // A store of another layout is never served. One that cannot be reached now is checked by
    // the next start: the outage semantics (cached keys, else 503) hold meanwhile.
    match store.check_schema().await {
        Err(StoreError::Schema(message)) => return Err(RunError::Layout(message)),
        Err(e) => {
            tracing::warn!(error = %telemetry::chain(&e), "cannot check the store's layout: Redis is unreachable; serving")
        }
        Ok(()) => {}
    }
    let cache = Arc::new(Cache::new(config.cache));
    let usage = Arc::new(Usage::default());
    let draining = Arc::new(AtomicBool::new(false));
    let health = Arc::new(Health::default());
    let throttle = Arc::new(Throttle::new(config.throttle));
    let (reload_requests, reload_queue) = mpsc::channel(4);
    let replica = |store: Store| Replica {
        config: config.clone(),
        store,
        cache: cache.clone(),
        metrics: metrics.clone(),
        usage: usage.clone(),
        draining: draining.clone(),
        health: health.clone(),
        throttle: throttle.clone(),
        reloads: reload.is_some().then(|| reload_requests.clone()),
    };
    let (stop_data, data_stopped) = watch::channel(false);
    let (stop_admin, admin_stopped) = watch::channel(false);
    // The subscriber stops last: requests still draining must see revocations.
    let subscriber = tokio::spawn(cache::subscribe(
        cache.clone(),
        store.clone(),
        metrics.invalidations.clone(),
        metrics.redis_errors.clone(),
        admin_stopped.clone(),
    ));
    // Usage is written one last time once the data plane has drained.
    let usage_writer = tokio::spawn(store::usage::flush_every(
        usage.clone(),
        store.clone(),
        metrics.redis_errors.clone(),
        config.usage_flush_interval,
        admin_stopped.clone(),
    ));
    let sweeper = tokio::spawn(throttle::sweep_every_window(
        throttle.clone(),
        admin_stopped.clone(),
    ));
    let admin_listener = tokio::net::TcpListener::from_std(listeners.admin)?;
    let admin_replica = Arc::new(ArcSwap::from_pointee(replica(store.clone())));
    let (endpoints, management) = match (listeners.management, &config.management) {
        (Some(socket), Some(cfg)) => {
            let listener = tokio::net::TcpListener::from_std(socket)?;
            tracing::info!(addr = %cfg.addr, tls = cfg.tls.is_some(), "management API listening");
            let tls = cfg.tls.clone().map(|t| Arc::new(ArcSwap::new(t)));
            let serving = tokio::spawn(server::serve_admin(
                admin_replica.clone(),
                listener,
                admin::Endpoints::Management,
                tls.clone(),
                admin_stopped.clone(),
            ));
            (admin::Endpoints::Ops, Some((serving, tls)))
        }
        _ => (admin::Endpoints::All, None),
    };
    tracing::info!(addr = %config.admin_addr, "admin listening");
    let admin = tokio::spawn(server::serve_admin(
        admin_replica.clone(),
        admin_listener,
        endpoints,
        None,
        admin_stopped.clone(),
    ));
    let (management, management_certificate) = management.unzip();
    let management_certificate = management_certificate.flatten();

    let mut per_worker: Vec<Vec<_>> = (0..config.workers).map(|_| Vec::new()).collect();
    let mut certificates = Vec::new();
    for (sockets, cfg) in listeners.data.into_iter().zip(&config.listeners) {
        tracing::info!(addr = %cfg.addr, tls = cfg.tls.is_some(), workers = config.workers, "data plane listening");
        let tls = cfg.tls.clone().map(|t| Arc::new(ArcSwap::new(t)));
        for (worker, socket) in per_worker.iter_mut().zip(sockets) {
            worker.push((socket, tls.clone()));
        }
        certificates.push(tls);
    }
    let (abort, aborted) = watch::channel(false);
    // Each worker gets its own Redis connection. It connects on the worker's first lookup, so
    // its driver task runs on that worker's thread and a cache miss never waits for another
    // thread to send or receive.
    let stores = (0..config.workers)
        .map(|_| Store::open(&config.redis))
        .collect::<Result<Vec<_>, _>>()?;
    let upstream_health = Gateway::upstream_health(&config);
    let gateways: Vec<Current<Gateway>> = stores
        .into_iter()
        .map(|store| {
            let upstreams = Arc::new(Upstreams::new(&config.limits));
            let gw = Gateway::new(replica(store), upstreams, upstream_health.clone());
            Arc::new(ArcSwap::from_pointee(gw))
        })
        .collect();
    let workers: Vec<oneshot::Receiver<()>> = per_worker
        .into_iter()
        .zip(&gateways)
        .enumerate()
        .map(|(i, (sockets, gw))| {
            spawn_worker(
                i,
                gw.clone(),
                sockets,
                data_stopped.clone(),
                aborted.clone(),
            )
        })
        .collect();
    let reloader = reload.map(|reload| {
        let running = Running {
            config: config.clone(),
            admin: admin_replica,
            gateways,
            certificates,
            management_certificate,
        };
        tokio::spawn(running.reload_on_request(reload, reload_queue, admin_stopped))
    });

    shutdown.await;
    tracing::info!(deadline = ?config.limits.drain_timeout, "draining");
    draining.store(true, Ordering::Release);
    let _ = stop_data.send(true);
    let drained = tokio::time::timeout(
        config.limits.drain_timeout,
        futures_util::future::join_all(workers),
    )
    .await;
    if drained.is_err() {
        tracing::warn!("drain deadline passed; closing remaining connections");
        let _ = abort.send(true);
    }
    let _ = stop_admin.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), admin).await;
    if let Some(management) = management {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), management).await;
    }
    let _ = subscriber.await;
    let _ = usage_writer.await;
    let _ = sweeper.await;
    if let Some(reloader) = reloader {
        let _ = reloader.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// What a reload replaces: the config, and everything made from it.
struct Running {
    config: Arc<Config>,
    admin: Current<Replica>,
    /// One per worker.
    gateways: Vec<Current<Gateway>>,
    /// One per data-plane listener: its TLS certificates, `None` for plaintext.
    certificates: Vec<Option<Current<rustls::ServerConfig>>>,
    /// The management listener's, when it has one with TLS.
    management_certificate: Option<Current<rustls::ServerConfig>>,
}

impl Running {
    /// Reloads when asked over `requests` or, with `reload.on_sighup`, on SIGHUP, until `stop`.
    async fn reload_on_request(
        mut self,
        reload: Reload,
        mut requests: mpsc::Receiver<ReloadRequest>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut hangups = reload.on_sighup.then(|| {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .expect("a SIGHUP handler")
        });
        let hangup = async |h: &mut Option<tokio::signal::unix::Signal>| match h {
            Some(h) => h.recv().await,
            None => std::future::pending().await,
        };
        loop {
            let reply = tokio::select! {
                Some(reply) = requests.recv() => Some(reply),
                Some(()) = hangup(&mut hangups) => None,
                _ = stopped(&mut stop) => break,
            };
            let outcome = self.reload(&reload.path);
            if let Some(reply) = reply {
                let _ = reply.send(outcome);
            }
        }
    }

    /// Reads the config file again and, when it is valid, switches every worker, the admin side
    /// and the listeners' certificates to it. When it is not, nothing changes.
    fn reload(&mut self, path: &Path) -> Result<Reloaded, String> {
        let metrics = self.admin.load().metrics.clone();
        let mut config = match Config::load(path) {
            Ok(config) => config,
            Err(e) => {
                metrics.config_reloads.with_label_values(&["error"]).inc();
                metrics.config_last_reload_successful.set(0);
                tracing::error!(path = %path.display(), error = %e, "config reload refused; the running config stays");
                return Err(e.to_string());
            }
        };
        let restart_needed = config.keep_restart_only(&self.config);
        if !restart_needed.is_empty() {
            tracing::warn!(settings = ?restart_needed, "config reload: these settings change only on a restart; they keep their running values");
        }
        let config = Arc::new(config);
        let upstream_health = Gateway::upstream_health(&config);
        for current in &self.gateways {
            let old = current.load();
            let replica = Replica {
                config: config.clone(),
                ..old.replica.clone()
            };
            let gw = Gateway::new(replica, old.upstreams.clone(), upstream_health.clone());
            current.store(Arc::new(gw));
        }
        let admin = Replica {
            config: config.clone(),
            ..Replica::clone(&self.admin.load())
        };
        self.admin.store(Arc::new(admin));
        for (current, listener) in self.certificates.iter().zip(&config.listeners) {
            if let (Some(current), Some(tls)) = (current, &listener.tls) {
                current.store(tls.clone());
            }
        }
        let management = config.management.as_ref().and_then(|m| m.tls.as_ref());
        if let (Some(current), Some(tls)) = (&self.management_certificate, management) {
            current.store(tls.clone());
        }
        self.config = config;
        let routes = self.config.routes.iter().count();
        metrics.config_reloads.with_label_values(&["ok"]).inc();
        metrics.config_last_reload_successful.set(1);
        metrics
            .config_last_reload_success
            .set(model::unix_now() as i64);
        tracing::info!(path = %path.display(), routes, "config reloaded");
        Ok(Reloaded {
            routes,
            restart_needed,
        })
    }
}

type WorkerSocket = (std::net::TcpListener, Option<Current<rustls::ServerConfig>>);

/// Starts one data-plane worker thread; the receiver resolves when it has drained.
fn spawn_worker(
    index: usize,
    gw: Current<Gateway>,
    sockets: Vec<WorkerSocket>,
    stop: watch::Receiver<bool>,
    mut abort: watch::Receiver<bool>,
) -> oneshot::Receiver<()> {
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("keygate-worker-{index}"))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a worker runtime");
            runtime.block_on(async move {
                tokio::spawn(gw.load().upstreams.close_idle());
                let mut servers = tokio::task::JoinSet::new();
                for (socket, tls) in sockets {
                    let listener = tokio::net::TcpListener::from_std(socket)
                        .expect("a bound, non-blocking socket");
                    servers.spawn(server::serve_data(gw.clone(), listener, tls, stop.clone()));
                }
                tokio::select! {
                    _ = async { while servers.join_next().await.is_some() {} } => {}
                    _ = stopped(&mut abort) => {}
                }
            });
            let _ = done.send(());
        })
        .expect("spawn a worker thread");
    finished
}
