//! The pool against a real HTTP/1.1 server on loopback that counts the connections it accepts.

use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use tokio::net::TcpListener;

use super::*;

/// A loopback upstream: `GET /big` answers 1 MiB, anything else 5 bytes. With `keep_alive`
/// false it closes every connection after one response.
struct Server {
    upstream: Upstream,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(keep_alive: bool) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let answer = service_fn(|req: Request<Incoming>| async move {
                    let size = if req.uri().path() == "/big" {
                        1 << 20
                    } else {
                        5
                    };
                    let body = Full::new(Bytes::from(vec![b'x'; size]));
                    Ok::<_, std::convert::Infallible>(Response::new(body))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(stream), answer),
                );
            }
        });
        Server {
            upstream: Upstream::parse(&format!("http://{addr}")).unwrap(),
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    async fn get(&self, pool: &Arc<Pool<Empty<Bytes>>>, path: &str) -> PooledBody<Empty<Bytes>> {
        let req = Request::get(path)
            .header(http::header::HOST, self.upstream.host.clone())
            .body(Empty::new())
            .unwrap();
        let res = pool.send(&self.upstream, req).await.expect("a response");
        assert_eq!(res.status(), 200);
        res.into_body()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pool(idle_timeout: Duration) -> Arc<Pool<Empty<Bytes>>> {
    Pool::new(Duration::from_secs(2), idle_timeout)
}

#[tokio::test]
async fn a_connection_is_reused_once_its_body_was_read() {
    let server = Server::start(true).await;
    let pool = pool(Duration::from_secs(60));
    for _ in 0..5 {
        let body = server.get(&pool, "/").await.collect().await.unwrap();
        assert_eq!(body.to_bytes(), "xxxxx");
    }
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn a_body_dropped_half_read_takes_its_connection_along() {
    let server = Server::start(true).await;
    let pool = pool(Duration::from_secs(60));
    let mut body = server.get(&pool, "/big").await;
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some_and(|d| d.len() < 1 << 20));
    drop(body);
    server.get(&pool, "/").await.collect().await.unwrap();
    assert_eq!(
        server.accepted(),
        2,
        "the half-read connection was not reused"
    );
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_replaced() {
    let server = Server::start(false).await;
    let pool = pool(Duration::from_secs(60));
    for _ in 0..3 {
        let body = server.get(&pool, "/").await.collect().await.unwrap();
        assert_eq!(body.to_bytes(), "xxxxx");
    }
    assert_eq!(server.accepted(), 3);
}

#[tokio::test]
async fn idle_connections_expire() {
    let server = Server::start(true).await;
    let pool = pool(Duration::from_millis(50));
    let sweeper = tokio::spawn(pool.clone().close_idle());
    server.get(&pool, "/").await.collect().await.unwrap();
    assert_eq!(pool.idle.lock().unwrap().0[0].1.len(), 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        pool.idle.lock().unwrap().0[0].1.is_empty(),
        "the sweep closed it"
    );
    server.get(&pool, "/").await.collect().await.unwrap();
    assert_eq!(server.accepted(), 2);
    sweeper.abort();
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_connect_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let upstream = Upstream::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let req = Request::get("/").body(Empty::new()).unwrap();
    let err = pool(Duration::from_secs(60))
        .send(&upstream, req)
        .await
        .err()
        .expect("nothing listens there");
    assert!(matches!(err, UpstreamError::Connect(..)), "{err:?}");
}
