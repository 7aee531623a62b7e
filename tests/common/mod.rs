//! Test harness: real parts on 127.0.0.1 only.
//!
//! - [`Redis`]: a `redis-server` child on a free port, stopped by its own handle (never by name).
//! - [`Upstream`]: a real HTTP server that records exactly what it received.
//! - [`Gateway`]: keygate's `run()` in process on port-0 listeners.
//! - [`World`]: all three plus seeded orgs, users, projects and keys.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keygate::config::Config;
use keygate::model::*;
use keygate::store::Store;
use keygate::store::keys::NewKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The management API's bootstrap token in in-process gateways.
pub const BOOTSTRAP: &str = "test-bootstrap-token-0123456789";

/// Calls the management API; returns the status and the JSON body (`null` when empty).
pub async fn api(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map_or_else(Full::default, |b| Full::new(Bytes::from(b.to_string())));
    let (status, _, bytes) = send(req.body(body).unwrap()).await;
    let value = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}"))
    };
    (status.as_u16(), value)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port that refuses connections for the whole test process. It is bound but never
/// listened on: a port found free and let go (`free_port`) can be taken meanwhile by another
/// test's server running in parallel, which would then answer for the "dead" address.
pub fn dead_port() -> u16 {
    static DEAD: std::sync::OnceLock<socket2::Socket> = std::sync::OnceLock::new();
    let socket = DEAD.get_or_init(|| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        s.bind(&any.into()).unwrap();
        s
    });
    socket.local_addr().unwrap().as_socket().unwrap().port()
}

/// A private `redis-server` on a free loopback port, with its own data directory.
pub struct Redis {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("keygate-test-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis {
            port,
            dir,
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install Debian's package: apt-get install redis-server")
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Saves the data set, then stops the server (its data comes back on `restart`).
    pub fn stop(&mut self) {
        self.cmd(&["SAVE"]);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to this Redis, by its process id. Stopped, it keeps
    /// its connections open and answers nothing: a hung server, not a gone one.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let sent = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {signal} {pid}");
    }

    /// Runs a command with redis-cli-free RESP over a plain socket; returns the raw reply.
    pub fn cmd(&self, args: &[&str]) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.ends_with(b"\r\n") && n < buf.len() {
                break;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Calls of one command so far, from `INFO commandstats`.
    pub fn calls(&self, command: &str) -> u64 {
        let info = self.cmd(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the upstream received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: http::Method,
    /// The request target as sent: origin form (`/path?query`) unless keygate sent another.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body_len: u64,
}

/// A real upstream that records requests. Paths containing `sse` stream three events 300 ms
/// apart; `slow` answers after the `ms` query parameter (default 2000) milliseconds.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(log.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.requests()
            .pop()
            .expect("the upstream received a request")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn answer(
    log: Arc<Mutex<Vec<Seen>>>,
    req: Request<Incoming>,
) -> Result<Response<UpBody>, std::convert::Infallible> {
    let (parts, mut body) = req.into_parts();
    let mut body_len = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        body_len += frame.data_ref().map_or(0, |d| d.len() as u64);
    }
    let path_and_query = parts.uri.to_string();
    log.lock().unwrap().push(Seen {
        method: parts.method,
        path_and_query: path_and_query.clone(),
        headers: parts.headers,
        body_len,
    });
    if path_and_query.contains("slow") {
        let ms = path_and_query
            .split("ms=")
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path_and_query.contains("sse") {
        let events = futures_util::stream::unfold(0u32, |i| async move {
            if i == 3 {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Some((
                Ok(Frame::data(Bytes::from(format!("data: event {i}\n\n")))),
                i + 1,
            ))
        });
        let mut res = Response::new(BodyExt::boxed(StreamBody::new(events)));
        res.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        return Ok(res);
    }
    let mut res = Response::new(BodyExt::boxed(Full::new(Bytes::from_static(
        b"{\"ok\":true}",
    ))));
    res.headers_mut()
        .insert("x-upstream-received", body_len.into());
    res.headers_mut()
        .insert("connection", "x-hop-secret".parse().unwrap());
    res.headers_mut()
        .insert("x-hop-secret", "must not reach the client".parse().unwrap());
    Ok(res)
}

/// keygate's `run()` in process.
pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config: Arc<Config>,
    /// Redis PUBLISH calls made before this replica subscribed (it never sees those).
    pub publish_baseline: u64,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    pub async fn start(toml: &str, base: &Path) -> Gateway {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("warn")
            .try_init();
        let mut config = Config::parse(toml, base).unwrap_or_else(|e| panic!("{e}"));
        // Set directly rather than through the environment, which tests share.
        config.admin_token = Some(keygate::model::Secret(BOOTSTRAP.into()));
        let config = Arc::new(config);
        let listeners = keygate::Listeners::bind(&config).unwrap();
        let (addr, admin_addr) = (
            listeners.data_addrs()[0],
            listeners.admin.local_addr().unwrap(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let cfg = config.clone();
        let task = tokio::spawn(async move {
            keygate::run(cfg, listeners, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let gw = Gateway {
            addr,
            admin: admin_addr,
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
        let mut last = String::new();
        for _ in 0..400 {
            let (status, _, body) = get(self.admin, "/readyz").await;
            last = format!("{status} {}", String::from_utf8_lossy(&body));
            if status == StatusCode::OK && String::from_utf8_lossy(&body).contains("\"live\"") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("gateway never became ready: {last}");
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
        for _ in 0..200 {
            if self.metric("keygate_invalidations_received_total").await >= published {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "invalidations never arrived: {} of {published}",
            self.metric("keygate_invalidations_received_total").await
        );
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

/// A plain HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request; returns status, headers and the whole body.
pub async fn send(req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
    let res = client().request(req).await.expect("request sent");
    let (parts, body) = res.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

pub async fn get(addr: SocketAddr, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    send(
        Request::get(format!("http://{addr}{path}"))
            .body(Full::default())
            .unwrap(),
    )
    .await
}

/// GET with headers.
pub async fn get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req.body(Full::default()).unwrap()).await
}

/// The error code of a JSON error body.
pub fn code(body: &Bytes) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

/// Writes raw bytes on a new connection and returns the status code of the first response.
pub async fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let mut out = Vec::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            });
            if len.is_none_or(|len| body.len() >= len) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
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
upstreams = ["{up}/base"]
[[route]]
id = "admin-area"
path_prefix = "/v1/admin"
org = "acme"
scopes = ["admin"]
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

/// Seeded data: ids and secrets tests use.
pub struct Keys {
    /// alice (member of p1): `inference` + `models:read`.
    pub alice: String,
    pub alice_id: KeyId,
    /// alice's key restricted to project p1.
    pub alice_p1_only: String,
    /// bob (member of p2): `inference`.
    pub bob: String,
    /// ada (admin): `*`.
    pub ada: String,
    /// gina of org globex: `inference`.
    pub gina: String,
}

pub struct World {
    pub redis: Redis,
    pub upstream: Upstream,
    pub gw: Gateway,
    pub store: Store,
    pub keys: Keys,
}

impl World {
    pub async fn start() -> World {
        World::start_with("").await
    }

    pub async fn start_with(extra_listener_toml: &str) -> World {
        let redis = Redis::start();
        let upstream = Upstream::start().await;
        let toml = config_toml(&redis, &upstream, extra_listener_toml);
        let gw = Gateway::start(&toml, Path::new(".")).await;
        let store = Store::open(&gw.config.redis).unwrap();
        let keys = seed(&store, &gw.config).await;
        gw.sync_invalidations(&redis).await;
        World {
            redis,
            upstream,
            gw,
            store,
            keys,
        }
    }

    /// A second replica sharing this world's Redis.
    pub async fn second_gateway(&self) -> Gateway {
        let toml = config_toml(&self.redis, &self.upstream, "");
        let mut gw = Gateway::start(&toml, Path::new(".")).await;
        gw.publish_baseline = self.redis.calls("publish");
        gw
    }
}

pub async fn new_key(
    store: &Store,
    config: &Config,
    user: &str,
    scopes: &[&str],
    projects: &[&str],
) -> (String, KeyId) {
    let created = store
        .create_key(
            &config.keys,
            NewKey {
                user_id: UserId::from(user),
                name: format!("{user}'s key"),
                scopes: scopes
                    .iter()
                    .map(|s| keygate::model::Scope::new(s))
                    .collect(),
                project_ids: projects.iter().map(|p| ProjectId::from(*p)).collect(),
                expires_at: Some(unix_now() + 3600),
            },
        )
        .await
        .unwrap();
    (created.secret, created.record.grant.id)
}

async fn seed(store: &Store, config: &Config) -> Keys {
    let acme = OrgId::from("acme");
    let globex = OrgId::from("globex");
    store.create_org(&acme, "Acme").await.unwrap();
    store.create_org(&globex, "Globex").await.unwrap();
    for (org, id, role) in [
        (&acme, "alice", Role::Member),
        (&acme, "bob", Role::Member),
        (&acme, "ada", Role::Admin),
        (&acme, "gus", Role::Guest),
        (&globex, "gina", Role::Member),
    ] {
        store
            .create_user(org, Some(UserId::from(id)), id, role)
            .await
            .unwrap();
    }
    for (id, vis, member) in [
        ("p1", Visibility::Private, "alice"),
        ("p2", Visibility::Private, "bob"),
        ("pub", Visibility::Public, "bob"),
    ] {
        store
            .create_project(&acme, &ProjectId::from(id), id, vis)
            .await
            .unwrap();
        store
            .set_member(&acme, &ProjectId::from(id), &UserId::from(member), true)
            .await
            .unwrap();
    }
    store
        .create_project(
            &globex,
            &ProjectId::from("p1"),
            "globex p1",
            Visibility::Public,
        )
        .await
        .unwrap();
    let (alice, alice_id) = new_key(store, config, "alice", &["predict", "models:read"], &[]).await;
    Keys {
        alice,
        alice_id,
        alice_p1_only: new_key(store, config, "alice", &["predict"], &["p1"])
            .await
            .0,
        bob: new_key(store, config, "bob", &["predict"], &[]).await.0,
        ada: new_key(store, config, "ada", &["*"], &[]).await.0,
        gina: new_key(store, config, "gina", &["predict"], &[]).await.0,
    }
}
