//! A real HTTP upstream on loopback that records exactly what it received.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// What the upstream received.
#[derive(Clone, Debug)]
pub struct Seen {
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
