//! keygate's `run()` in process on port-0 listeners, and the standard test config.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use keygate::config::Config;

use super::{BOOTSTRAP, Redis, Upstream, dead_port, eventually, get};

/// keygate's `run()` in process.
pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The management API's own listener, when the config gives it one.
    pub management: Option<SocketAddr>,
    pub config: Arc<Config>,
    /// Redis PUBLISH calls made before this replica subscribed (it never sees those).
    pub publish_baseline: u64,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    pub async fn start(toml: &str, base: &Path) -> Gateway {
        let config = Config::parse(toml, base).unwrap_or_else(|e| panic!("{e}"));
        Gateway::launch(config, None).await
    }

    /// A gateway started from a config file, which `POST /reload` reads again.
    pub async fn start_from_file(path: &Path) -> Gateway {
        let config = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
        let reload = keygate::Reload {
            path: path.to_owned(),
            on_sighup: false,
        };
        Gateway::launch(config, Some(reload)).await
    }

    async fn launch(mut config: Config, reload: Option<keygate::Reload>) -> Gateway {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("warn")
            .try_init();
        // Set directly rather than through the environment, which tests share.
        config.admin_token = Some(keygate::model::Secret(BOOTSTRAP.into()));
        let config = Arc::new(config);
        let listeners = keygate::Listeners::bind(&config).unwrap();
        let (addr, admin_addr) = (
            listeners.data_addrs()[0],
            listeners.admin.local_addr().unwrap(),
        );
        let management = listeners
            .management
            .as_ref()
            .map(|l| l.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let cfg = config.clone();
        let task = tokio::spawn(async move {
            keygate::run(cfg, listeners, reload, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let gw = Gateway {
            addr,
            admin: admin_addr,
            management,
            config,
            publish_baseline: 0,
            stop: Some(stop),
            task: Some(task),
        };
        gw.wait_subscribed().await;
        gw
    }

    /// Waits until the invalidation subscription is live (the cache trusts entries from then on).
    async fn wait_subscribed(&self) {
        let ten_seconds = Duration::from_secs(10);
        eventually(
            "the gateway is ready",
            ten_seconds,
            Duration::from_millis(25),
            || async {
                let (status, _, body) = get(self.admin, "/readyz").await;
                let body = String::from_utf8_lossy(&body);
                match status == StatusCode::OK && body.contains("\"live\"") {
                    true => Ok(()),
                    false => Err(format!("{status} {body}")),
                }
            },
        )
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A metric's value (the first sample whose line starts with `name`), 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, _, body) = get(self.admin, "/metrics").await;
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.rsplit(' ').next()?.parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// Waits until this replica has received every invalidation Redis has published so far.
    pub async fn sync_invalidations(&self, redis: &Redis) {
        let published = (redis.calls("publish") - self.publish_baseline) as f64;
        let what = "every invalidation published so far arrived";
        eventually(
            what,
            Duration::from_secs(2),
            Duration::from_millis(10),
            || async {
                let received = self.metric("keygate_invalidations_received_total").await;
                match received >= published {
                    true => Ok(()),
                    false => Err(format!("{received} of {published}")),
                }
            },
        )
        .await
    }

    /// Signals shutdown (the task then drains).
    pub fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The standard test config: routes for every case, against one upstream.
pub fn config_toml(redis: &Redis, upstream: &Upstream, extra: &str) -> String {
    let up = upstream.url();
    let dead = format!("http://127.0.0.1:{}", dead_port());
    format!(
        r#"
[server]
workers = 2
[[listener]]
addr = "127.0.0.1:0"
{extra}
[admin]
addr = "127.0.0.1:0"
[redis]
url = "{redis}"
command_timeout = "300ms"
[cache]
ttl = "3s"
max_stale = "3s"
[limits]
max_body_bytes = 100000000
upstream_response_timeout = "1s"
drain_timeout = "5s"
[keys]
usage_flush_interval = "100ms"
[log]
access_log = false
[[route]]
id = "projects"
path_prefix = "/v1/projects"
org = "acme"
project = {{ segment = 3 }}
scopes = ["inference"]
upstreams = ["{up}"]
[[route]]
id = "endpoint"
path_prefix = "/inference"
org = "acme"
project = {{ query = "endpoint_id" }}
scopes = ["predict"]
upstreams = ["{up}"]
[[route]]
id = "models"
path_prefix = "/v1/models"
org = "acme"
scopes = ["models:read"]
methods = ["GET", "HEAD"]
upstreams = ["{up}/base"]
[[route]]
id = "admin-area"
path_prefix = "/v1/admin"
org = "acme"
scopes = ["admin"]
upstreams = ["{up}"]
[[route]]
id = "shared"
path_prefix = "/shared/projects"
org = "*"
project = {{ segment = 3 }}
scopes = ["inference"]
upstreams = ["{up}"]
[[route]]
id = "by-org"
path_prefix = "/v1/orgs"
org = {{ segment = 3 }}
project = {{ segment = 5 }}
scopes = ["inference"]
upstreams = ["{up}"]
[[route]]
id = "by-host"
host = "{{org}}.api.test"
path_prefix = "/v1/projects"
project = {{ segment = 3 }}
scopes = ["inference"]
upstreams = ["{up}"]
[[route]]
id = "public"
path_prefix = "/status"
public = true
upstreams = ["{up}"]
[[route]]
id = "dead"
path_prefix = "/dead"
org = "acme"
upstreams = ["{dead}"]
"#,
        redis = redis.url()
    )
}
