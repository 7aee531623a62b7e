//! Accept loops: connections in, HTTP/1.1 and HTTP/2 out to a service, and graceful drain.
//!
//! Owns: binding is the caller's (tests bind port 0); here we accept on a bound listener, bound
//! open connections with a semaphore (excess waits in the kernel's accept queue), run the TLS
//! handshake under a timeout (ALPN picks h2 or http/1.1; on plaintext, HTTP/2 with prior
//! knowledge is detected from the preface), apply header limits and the header-read timeout
//! (for HTTP/2: an idle timeout on connections with no request in flight), and on stop: close
//! the listener, ask every connection to finish its in-flight requests ([`Drain`]) and wait for
//! them. The caller bounds that wait with its drain deadline.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::Limits;
use crate::metrics::Metrics;
use crate::proxy::{self, ConnInfo, Gateway, ResponseBody};
use crate::timer::CoarseTimer;

mod drain;
pub use drain::{Drain, Watcher};

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// How a listener speaks HTTP/1.1 and HTTP/2.
#[derive(Clone)]
pub struct Http {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    header_read_timeout: Duration,
}

impl Http {
    pub fn new(limits: &Limits) -> Http {
        let mut h1 = http1::Builder::new();
        h1.timer(CoarseTimer::new(limits.header_read_timeout))
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(limits.max_header_bytes as u32);
        Http {
            h1,
            h2,
            header_read_timeout: limits.header_read_timeout,
        }
    }
}

/// The HTTP version a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How often a connection that has sent part of the HTTP/2 preface is looked at again.
const PREFACE_RECHECK: Duration = Duration::from_millis(5);

/// What a plaintext connection speaks: HTTP/2 with prior knowledge opens with the preface,
/// anything else is HTTP/1. Peeks, so nothing has to be replayed. `None` when the client sent
/// nothing within `timeout`, or closed or failed first.
async fn sniff(stream: &TcpStream, timeout: Duration) -> Option<Protocol> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await;
        let n = peeked.ok()?.ok().filter(|&n| n > 0)?;
        if buf[..n] != H2_PREFACE[..n] {
            return Some(Protocol::Http1);
        }
        if n == H2_PREFACE.len() {
            return Some(Protocol::Http2);
        }
        // Part of the preface so far (clients send it whole; this is rare): look again soon.
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(PREFACE_RECHECK).await;
    }
}

/// Counts an open connection for as long as it lives.
struct OpenConnection(Arc<Metrics>);

impl OpenConnection {
    fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.open_connections.inc();
        OpenConnection(metrics.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.dec();
    }
}

/// Serves the data plane on one listener until `stop`, then drains its connections.
pub async fn serve_data(
    gw: Arc<Gateway>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let limits = gw.config.limits;
    let http = Http::new(&limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let drain = Arc::new(Drain::default());
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = stopped(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let open = OpenConnection::new(&gw.metrics);
        let watcher = drain.watcher();
        let (gw, http, tls) = (gw.clone(), http.clone(), tls.clone());
        tokio::spawn(async move {
            let _held = (permit, open);
            let info = ConnInfo::new(peer, tls.is_some());
            let service = service_fn(move |req| proxy::handle(gw.clone(), info.clone(), req));
            match tls {
                None => serve_plaintext(&http, stream, service, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(
                        limits.tls_handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => {
                            let protocol = match stream.get_ref().1.alpn_protocol() {
                                Some(b"h2") => Protocol::Http2,
                                _ => Protocol::Http1,
                            };
                            serve_connection(&http, stream, protocol, service, watcher).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    drain.stop().await;
}

/// Serves one plaintext connection in the HTTP version its first bytes show, until it closes
/// or is drained.
pub async fn serve_plaintext<S>(http: &Http, stream: TcpStream, service: S, watcher: Watcher)
where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<ResponseBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    if let Some(protocol) = sniff(&stream, http.header_read_timeout).await {
        serve_connection(http, stream, protocol, service, watcher).await;
    }
}

/// Serves one connection until it closes or is drained.
async fn serve_connection<I, S>(
    http: &Http,
    io: I,
    protocol: Protocol,
    service: S,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<ResponseBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(io);
    let served = match protocol {
        Protocol::Http1 => {
            let conn = http.h1.serve_connection(io, service);
            watcher.watch(conn, |c| c.graceful_shutdown()).await
        }
        Protocol::Http2 => {
            let activity = Arc::new(Activity::default());
            let counted = activity.clone();
            let service = service_fn(move |req| {
                let in_flight = counted.start();
                let response = service.call(req);
                async move {
                    let response = response.await?;
                    Ok::<_, Infallible>(response.map(|body| Counted {
                        body,
                        _in_flight: in_flight,
                    }))
                }
            });
            let conn = http.h2.serve_connection(io, service);
            let conn = CloseWhenIdle::new(conn, activity, http.header_read_timeout);
            watcher.watch(conn, CloseWhenIdle::close).await
        }
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The requests in flight on an HTTP/2 connection, and when the last one ended.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// When the last request ended, in milliseconds since the connection opened.
    ended_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            ended_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// How long the connection has had no request in flight (zero while it has one).
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let ended = Duration::from_millis(self.ended_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(ended)
    }
}

/// One request in flight, until its response body is done or dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = self.0.opened.elapsed().as_millis() as u64;
        self.0.ended_ms.store(ms, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that counts as a request in flight until it is done or dropped.
struct Counted {
    body: ResponseBody,
    _in_flight: InFlight,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = <ResponseBody as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// An HTTP/2 connection that is closed once it has had no request in flight for `idle`, as
/// HTTP/1's keep-alive idle timeout closes an idle HTTP/1 connection. First it is asked to close
/// (a GOAWAY); if the client has not finished closing by another `idle` later, it is dropped.
/// Without this, a client could hold a connection slot for ever with an idle HTTP/2 connection.
struct CloseWhenIdle<C> {
    conn: Pin<Box<C>>,
    activity: Arc<Activity>,
    idle: Duration,
    check: tokio::time::Interval,
    asked: bool,
}

type H2Connection<I, S> = http2::Connection<I, S, TokioExecutor>;

impl<I, S> CloseWhenIdle<H2Connection<I, S>>
where
    S: hyper::service::HttpService<Incoming, ResBody = Counted>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, Counted>,
{
    fn new(conn: H2Connection<I, S>, activity: Arc<Activity>, idle: Duration) -> Self {
        let mut check = tokio::time::interval(CoarseTimer::tick(idle));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        CloseWhenIdle {
            conn: Box::pin(conn),
            activity,
            idle,
            check,
            asked: false,
        }
    }

    /// Asks the connection to finish its streams and close (a GOAWAY).
    fn close(mut self: Pin<&mut Self>) {
        self.asked = true;
        self.conn.as_mut().graceful_shutdown();
    }
}

impl<I, S> Future for CloseWhenIdle<H2Connection<I, S>>
where
    S: hyper::service::HttpService<Incoming, ResBody = Counted>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, Counted>,
{
    type Output = hyper::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        while self.check.poll_tick(cx).is_ready() {
            let idle = self.activity.idle_for();
            if idle >= self.idle * 2 && self.asked {
                return Poll::Ready(Ok(()));
            }
            if idle >= self.idle && !self.asked {
                self.as_mut().close();
            }
        }
        self.conn.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A connected pair on loopback: (client, server side).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn sniff_tells_http2_prior_knowledge_from_http1_and_gives_up_on_silence() {
        let second = Duration::from_secs(1);
        let (mut client, server) = pair().await;
        client.write_all(b"POST /v1 HTTP/1.1\r\n").await.unwrap();
        assert_eq!(sniff(&server, second).await, Some(Protocol::Http1));

        // The preface in two parts.
        let (mut client, server) = pair().await;
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        let sniffing = tokio::spawn(async move { sniff(&server, second).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        client.write_all(&H2_PREFACE[10..]).await.unwrap();
        assert_eq!(sniffing.await.unwrap(), Some(Protocol::Http2));

        let (_client, server) = pair().await;
        let started = std::time::Instant::now();
        assert_eq!(sniff(&server, Duration::from_millis(100)).await, None);
        assert!(started.elapsed() >= Duration::from_millis(100));

        let (mut client, server) = pair().await;
        client.write_all(&H2_PREFACE[..3]).await.unwrap();
        assert_eq!(
            sniff(&server, Duration::from_millis(100)).await,
            None,
            "a preface cut short"
        );

        let (client, server) = pair().await;
        drop(client);
        assert_eq!(sniff(&server, second).await, None, "closed");
    }
}
