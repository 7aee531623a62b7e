//! The floor under keygate's hot path, for the benchmarks (`loadtests/bench.py`, config `floor`).
//!
//! The least a gateway on keygate's stack can do per request: keygate's architecture (one
//! current-thread runtime per worker, each with its own `SO_REUSEPORT` listener), hyper's HTTP/1
//! server, keygate's upstream pool (hyper's HTTP/1 client), and the key check nginx's baseline
//! makes — the `apikey` header looked up in a set of keys, 401 when it is not there — and
//! nothing else: no key format, hashing, cache, policy, header rewrite beyond `Host`, metrics,
//! logs, timeouts, HTTP/2 or TLS. keygate's rate over this one is what its own work costs; this
//! one's rate over nginx's is what the stack costs.
//!
//!     cargo run --release --example floor -- LISTEN UPSTREAM_URL KEYS_FILE WORKERS

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use keygate::route::Upstream;
use keygate::upstream::{Pool, PooledBody};

const UNAUTHORIZED: &str = r#"{"error":{"code":"invalid_api_key"}}"#;

type Body = Either<PooledBody<Incoming>, Full<Bytes>>;

struct Floor {
    keys: HashSet<Box<[u8]>>,
    upstream: Upstream,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, keys, workers] =
        <[String; 4]>::try_from(args).expect("usage: floor LISTEN UPSTREAM_URL KEYS_FILE WORKERS");
    let listen: SocketAddr = listen.parse().expect("LISTEN is host:port");
    let keys = std::fs::read_to_string(keys).expect("KEYS_FILE is readable");
    let floor = Arc::new(Floor {
        keys: keys.lines().map(|k| k.as_bytes().into()).collect(),
        upstream: Upstream::parse(&upstream).expect("UPSTREAM_URL is http://host:port"),
    });
    let workers: usize = workers.parse().expect("WORKERS is a number");
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let floor = floor.clone();
            std::thread::spawn(move || worker(listen, floor))
        })
        .collect();
    for t in threads {
        t.join().expect("a worker panicked");
    }
}

fn worker(listen: SocketAddr, floor: Arc<Floor>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.set_reuseport(true).expect("SO_REUSEPORT");
        socket.bind(listen).expect("LISTEN is free");
        let listener = socket.listen(1024).expect("listen");
        let pool: Arc<Pool<Incoming>> = Pool::new(Duration::from_secs(5), Duration::from_secs(90));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (floor, pool) = (floor.clone(), pool.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| proxy(floor.clone(), pool.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

async fn proxy(
    floor: Arc<Floor>,
    pool: Arc<Pool<Incoming>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let known = parts
        .headers
        .remove("apikey")
        .is_some_and(|key| floor.keys.contains(key.as_bytes()));
    if !known {
        return Ok(reply(StatusCode::UNAUTHORIZED, UNAUTHORIZED));
    }
    parts
        .headers
        .insert(header::HOST, floor.upstream.host.clone());
    let req = Request::from_parts(parts, body);
    Ok(match pool.send(&floor.upstream, req).await {
        Ok(response) => response.map(Either::Left),
        Err(_) => reply(
            StatusCode::BAD_GATEWAY,
            r#"{"error":{"code":"bad_gateway"}}"#,
        ),
    })
}

fn reply(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Either::Right(Full::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
