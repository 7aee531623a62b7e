//! Where the store's commands go: one Redis, the master a set of Sentinels names (followed
//! across failovers without a restart), or a Redis Cluster.
//!
//! Owns: building a Redis client from the config (ACL user, password, TLS), the connection a
//! [`Store`](super::Store) handle sends on, and, with Sentinel, finding the master: asked of the
//! sentinels in turn (`SENTINEL get-master-addr-by-name`) on first use, and again after a command
//! fails in a way a failover explains (the connection refused or dropped, a timeout, `READONLY`
//! from a master demoted to a replica), at most every [`REDISCOVER_AFTER`]. Commands in flight
//! finish or fail on the old connection; the next ones go to the master the sentinels name.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::RedisFuture;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;

use super::{RedisConfig, RedisTarget, StoreError};

/// The shortest time between two questions to the sentinels while commands keep failing.
pub const REDISCOVER_AFTER: Duration = Duration::from_millis(100);

/// Where commands go: a self-reconnecting multiplexed connection to one server, or a Cluster
/// connection (which follows the cluster's slots and redirections); and a client for the
/// invalidation subscriber's own connection (on a Cluster, one node's: PUBLISH reaches every
/// node's subscribers).
struct Target {
    conn: Conn,
    client: redis::Client,
}

/// A connection to one Redis or to a Cluster.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The connection of a store handle; clones share it.
#[derive(Clone)]
pub struct Link {
    current: Arc<ArcSwapOption<Target>>,
    sentinel: Option<Arc<Sentinel>>,
    /// On a Cluster: the nodes (for the subscriber, which moves to the next one when its
    /// connection fails).
    cluster: Option<Arc<ClusterNodes>>,
}

struct ClusterNodes {
    client: redis::cluster::ClusterClient,
    cfg: RedisConfig,
    nodes: Vec<String>,
    tls: bool,
    /// The node the subscriber uses.
    next: std::sync::atomic::AtomicUsize,
    /// Held while the connection is made, so one task makes it for all.
    made: tokio::sync::Mutex<()>,
}

impl ClusterNodes {
    fn url(&self, node: usize) -> String {
        url(self.tls, &self.nodes[node % self.nodes.len()])
    }

    /// The cluster connection (redirections and slot moves are its own), made now, on the
    /// calling thread's runtime.
    fn connect(&self) -> Result<Target, StoreError> {
        // Bounded by `Store::bounded`, as for one Redis.
        let config =
            redis::cluster::ClusterConfig::new().set_connection_timeout(self.cfg.connect_timeout);
        Ok(Target {
            conn: Conn::Cluster(self.client.get_pending_async_connection_with_config(config)),
            client: client(&self.cfg, &self.url(0), true)?,
        })
    }
}

/// How to find the master, and when it was last looked for.
struct Sentinel {
    cfg: RedisConfig,
    sentinels: Vec<String>,
    master: String,
    tls: bool,
    /// When the sentinels were last asked; held while asking, so one task asks for all.
    asked: tokio::sync::Mutex<Option<Instant>>,
}

impl Link {
    /// Connects lazily: nothing is dialled until the first command.
    pub fn open(cfg: &RedisConfig) -> Result<Link, StoreError> {
        Ok(match &cfg.target {
            RedisTarget::Standalone(url) => {
                let target = target(cfg, &url.0)?;
                Link {
                    current: Arc::new(ArcSwapOption::from_pointee(target)),
                    sentinel: None,
                    cluster: None,
                }
            }
            RedisTarget::Cluster { nodes, tls } => {
                let urls: Vec<String> = nodes.iter().map(|n| url(*tls, n)).collect();
                let mut builder = redis::cluster::ClusterClient::builder(urls)
                    .connection_timeout(cfg.connect_timeout);
                if let Some(user) = &cfg.username {
                    builder = builder.username(user);
                }
                if let Some(password) = &cfg.password {
                    builder = builder.password(&password.0);
                }
                if *tls {
                    builder = builder.tls(redis::TlsMode::Secure).certs(certificates(cfg));
                }
                // Made on first use (`Link::target`), so that its driver task runs on the thread
                // of the worker that uses it, as a single Redis connection's does.
                Link {
                    current: Arc::new(ArcSwapOption::empty()),
                    sentinel: None,
                    cluster: Some(Arc::new(ClusterNodes {
                        client: builder.build()?,
                        cfg: cfg.clone(),
                        nodes: nodes.clone(),
                        tls: *tls,
                        next: std::sync::atomic::AtomicUsize::new(0),
                        made: tokio::sync::Mutex::new(()),
                    })),
                }
            }
            RedisTarget::Sentinel {
                sentinels,
                master,
                tls,
            } => Link {
                current: Arc::new(ArcSwapOption::empty()),
                sentinel: Some(Arc::new(Sentinel {
                    cfg: cfg.clone(),
                    sentinels: sentinels.clone(),
                    master: master.clone(),
                    tls: *tls,
                    asked: tokio::sync::Mutex::new(None),
                })),
                cluster: None,
            },
        })
    }

    /// Whether commands go to a Redis Cluster (whose transactions stay within one hash slot).
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// The connection to send on (with Sentinel, found first when there is none).
    pub async fn conn(&self) -> Result<Conn, StoreError> {
        Ok(self.target().await?.conn.clone())
    }

    /// A client for a connection of its own to the same server (pub/sub); on a Cluster, to one
    /// node, the next one each time the subscriber's connection failed.
    pub async fn client(&self) -> Result<redis::Client, StoreError> {
        if let Some(cluster) = &self.cluster {
            let n = cluster.next.load(std::sync::atomic::Ordering::Relaxed);
            return client(&cluster.cfg, &cluster.url(n), true);
        }
        Ok(self.target().await?.client.clone())
    }

    async fn target(&self) -> Result<Arc<Target>, StoreError> {
        if let Some(target) = self.current.load_full() {
            return Ok(target);
        }
        if let Some(cluster) = &self.cluster {
            let _making = cluster.made.lock().await;
            if let Some(target) = self.current.load_full() {
                return Ok(target);
            }
            let target = Arc::new(cluster.connect()?);
            self.current.store(Some(target.clone()));
            return Ok(target);
        }
        let sentinel = self
            .sentinel
            .as_ref()
            .expect("a standalone link always has its target, a cluster one is made above");
        let mut asked = sentinel.asked.lock().await;
        // Another task may have found the master while this one waited.
        if let Some(target) = self.current.load_full() {
            return Ok(target);
        }
        *asked = Some(Instant::now());
        let target = Arc::new(sentinel.find_master().await?);
        self.current.store(Some(target.clone()));
        Ok(target)
    }

    /// After a failed command: with Sentinel, when a failover could explain the failure, the
    /// next command asks the sentinels where the master is (at most every
    /// [`REDISCOVER_AFTER`]).
    pub fn failed(&self, e: &StoreError) {
        let Some(sentinel) = &self.sentinel else {
            return;
        };
        let failover = match e {
            StoreError::Timeout => true,
            StoreError::Unavailable(e) => {
                e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_io_error()
                    || e.is_timeout()
                    || e.code() == Some("READONLY")
                    || e.code() == Some("MASTERDOWN")
            }
            _ => false,
        };
        let recent = sentinel.asked.try_lock().map_or(true, |at| {
            at.is_some_and(|at| at.elapsed() < REDISCOVER_AFTER)
        });
        if failover && !recent {
            self.current.store(None);
        }
    }

    /// Forgets the master, so that the next command asks the sentinels (the subscriber calls
    /// this when its connection fails). Nothing for one Redis.
    pub fn rediscover(&self) {
        if self.sentinel.is_some() {
            self.current.store(None);
        }
        if let Some(cluster) = &self.cluster {
            cluster
                .next
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Sentinel {
    /// Asks each sentinel in turn where the master is; the first answer wins.
    async fn find_master(&self) -> Result<Target, StoreError> {
        let mut last = None;
        for address in &self.sentinels {
            let asked = tokio::time::timeout(self.cfg.connect_timeout, self.ask(address)).await;
            match asked {
                Ok(Ok((host, port))) => {
                    return target(&self.cfg, &url(self.tls, &format!("{host}:{port}")));
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => last = Some(StoreError::Timeout),
            }
        }
        Err(last.unwrap_or_else(|| StoreError::Rejected("no sentinel is configured".into())))
    }

    async fn ask(&self, address: &str) -> Result<(String, u16), StoreError> {
        let client = client(&self.cfg, &url(self.tls, address), false)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let master: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master)
            .query_async(&mut conn)
            .await?;
        master.ok_or_else(|| {
            StoreError::Rejected(format!(
                "sentinel {address} knows no master named `{}`",
                self.master
            ))
        })
    }
}

/// `redis://host:port`, or `rediss://` with `tls`.
fn url(tls: bool, address: &str) -> String {
    let scheme = if tls { "rediss" } else { "redis" };
    format!("{scheme}://{address}")
}

/// A lazily connected target at `url`.
fn target(cfg: &RedisConfig, url: &str) -> Result<Target, StoreError> {
    let client = client(cfg, url, true)?;
    let manager_cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(cfg.connect_timeout))
        // `Store::bounded` bounds every command with `command_timeout`, reconnects included;
        // redis-rs's own timer on each one (500 ms unless set) would be a second timer per
        // cache miss and, when a command timed out, would not reconnect either.
        .set_response_timeout(None)
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_cfg)?;
    Ok(Target {
        conn: Conn::Single(conn),
        client,
    })
}

/// A client for `url` with the config's TLS files and, when `authenticated`, its ACL user and
/// password (the sentinels take none).
fn client(cfg: &RedisConfig, url: &str, authenticated: bool) -> Result<redis::Client, StoreError> {
    use redis::IntoConnectionInfo;
    let mut info = url.into_connection_info()?;
    if authenticated {
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &cfg.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &cfg.password {
            settings = settings.set_password(&password.0);
        }
        info = info.set_redis_settings(settings);
    }
    if url.starts_with("rediss://") {
        // redis-rs builds its TLS config on rustls's process-wide crypto provider (the
        // listeners name theirs); a second call finds it installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    Ok(match (&cfg.tls.ca, &cfg.tls.client) {
        (None, None) => redis::Client::open(info)?,
        _ => redis::Client::build_with_tls(info, certificates(cfg))?,
    })
}

/// The config's CA and client certificate, as redis-rs takes them.
fn certificates(cfg: &RedisConfig) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: cfg
            .tls
            .client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.0.clone().into_bytes(),
            }),
        root_cert: cfg.tls.ca.clone(),
    }
}
