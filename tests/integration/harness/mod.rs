//! Test harness: real parts on 127.0.0.1 only, one file per thing it starts.
//!
//! - [`Redis`] (`redis.rs`): a `redis-server` child on a free port, stopped by its own handle.
//! - [`Upstream`] (`upstream.rs`): a real HTTP server that records exactly what it received.
//! - [`Gateway`] (`gateway.rs`): keygate's `run()` in process on port-0 listeners.
//! - [`World`] (`world.rs`): all three plus seeded orgs, users, projects and keys.
//! - `http.rs`: the clients tests talk through; `tls.rs`: certificates and TLS handshakes;
//!   `browser.rs`: a headless Chromium over WebDriver.
//!
//! And the two helpers every file uses: [`eventually`] for changes that reach a replica
//! asynchronously, and [`temp_dir`] for files that must not outlive the test.

mod browser;
mod gateway;
mod http;
mod redis;
mod tls;
mod upstream;
mod world;

use std::future::Future;
use std::time::{Duration, Instant};

pub use browser::*;
pub use gateway::*;
pub use http::*;
pub use redis::*;
pub use tls::*;
pub use upstream::*;
pub use world::*;

/// The management API's bootstrap token in in-process gateways.
pub const BOOTSTRAP: &str = "test-bootstrap-token-0123456789";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free port for a Redis Cluster node, whose cluster bus listens 10,000 ports higher: both
/// free, and the bus below 65,536.
pub fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
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

/// Asks `check` every `every` until it answers `Ok`, for at most `within`; then panics with
/// `what` and the last answer. For changes that reach a replica through pub/sub or a batch:
/// within milliseconds, but not synchronously.
pub async fn eventually<T, F: Future<Output = Result<T, String>>>(
    what: &str,
    within: Duration,
    every: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let started = Instant::now();
    loop {
        match check().await {
            Ok(done) => return done,
            Err(last) if started.elapsed() >= within => {
                panic!("{what}: not within {within:?} (last: {last})")
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// A directory removed with everything in it when the value is dropped, pass or fail (test
/// configs, TLS keys and secrets must not outlive the test).
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("a temporary directory")
}
