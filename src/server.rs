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
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::admin;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::proxy::{self, ConnInfo, Gateway, ResponseBody};
use crate::replica::Replica;
use crate::runtime::drain::{Drain, Watcher};
use crate::runtime::h2_idle::{Activity, CloseWhenIdle, Counted};
use crate::runtime::lingering::Lingering;
use crate::runtime::stopped;
use crate::runtime::timer::CoarseTimer;
use crate::telemetry::Condition;

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
        // The parser's buffer holds heads up to twice the limit, so the request path can measure
        // a head against the limit exactly and answer 431 in keygate's shape; the parser itself
        // refuses the rest.
        h1.timer(CoarseTimer::new(limits.header_read_timeout))
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(2 * limits.max_header_bytes);
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

/// The current value of what a reload replaces: each request (each TLS handshake) takes the one
/// current when it starts.
pub type Current<T> = Arc<ArcSwap<T>>;

/// Serves the data plane on one listener until `stop`, then drains its connections. `gw` is this
/// worker's gateway and `tls` the listener's certificates, as reloads replace them.
pub async fn serve_data(
    gw: Current<Gateway>,
    listener: TcpListener,
    tls: Option<Current<rustls::ServerConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    // What a reload does not change (the limits need a restart).
    let (limits, metrics) = {
        let gw = gw.load();
        (gw.replica.config.limits, gw.replica.metrics.clone())
    };
    let http = Http::new(&limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let drain = Arc::new(Drain::default());
    let failing = Condition::default();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = stopped(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener, &failing, "data plane") => accepted,
            _ = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let open = OpenConnection::new(&metrics);
        let watcher = drain.watcher();
        let (gw, http) = (gw.clone(), http.clone());
        let tls = tls.as_ref().map(|t| TlsAcceptor::from(t.load_full()));
        tokio::spawn(async move {
            let _held = (permit, open);
            let info = ConnInfo::new(peer, tls.is_some());
            let service = service_fn(move |req| proxy::handle(gw.load_full(), info.clone(), req));
            let tls = tls.map(|acceptor| (acceptor, limits.tls_handshake_timeout));
            serve_accepted(&http, tls, stream, service, watcher).await;
        });
    }
    drop(listener);
    drain.stop().await;
}

/// Serves one accepted connection until it closes or is drained: with `tls` (an acceptor and the
/// handshake's timeout), after the handshake, in the HTTP version ALPN chose; else as
/// [`serve_plaintext`].
async fn serve_accepted<S>(
    http: &Http,
    tls: Option<(TlsAcceptor, Duration)>,
    stream: TcpStream,
    service: S,
    watcher: Watcher,
) where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<ResponseBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let Some((acceptor, timeout)) = tls else {
        return serve_plaintext(http, stream, service, watcher).await;
    };
    let peer = stream.peer_addr().ok();
    match tokio::time::timeout(timeout, acceptor.accept(Lingering::new(stream))).await {
        Ok(Ok(stream)) => {
            let protocol = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => Protocol::Http2,
                _ => Protocol::Http1,
            };
            serve_connection(http, stream, protocol, service, watcher).await
        }
        Ok(Err(e)) => tracing::debug!(?peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(?peer, "TLS handshake timed out"),
    }
}

/// The pause after a failed accept (out of file descriptors and the like), instead of spinning.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// The next connection. While accepting fails it backs off, logging once when the failures start
/// and once when they end.
async fn accept(
    listener: &TcpListener,
    failing: &Condition,
    name: &'static str,
) -> (TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => {
                if failing.recovered() {
                    tracing::info!(listener = name, "accepting connections again");
                }
                return accepted;
            }
            Err(e) => {
                if failing.failed() {
                    tracing::warn!(listener = name, error = %e, "accept failing; retrying every 50 ms");
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// Serves the admin endpoints (the operators', the management API's, or both: `endpoints`) on
/// one listener until `stop`, then drains its connections; over TLS with `tls`.
pub async fn serve_admin(
    replica: Current<Replica>,
    listener: TcpListener,
    endpoints: admin::Endpoints,
    tls: Option<Current<rustls::ServerConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    let limits = replica.load().config.limits;
    let http = Http::new(&limits);
    let drain = Arc::new(Drain::default());
    let failing = Condition::default();
    loop {
        let (stream, _) = tokio::select! {
            accepted = accept(&listener, &failing, "admin") => accepted,
            _ = stopped(&mut stop) => break,
        };
        let replica = replica.clone();
        let service = service_fn(move |req| {
            let response = admin::handle(replica.load_full(), endpoints, req);
            async move { Ok::<_, Infallible>(response.await.map(Either::Right)) }
        });
        let (http, watcher) = (http.clone(), drain.watcher());
        let tls = tls.as_ref().map(|t| {
            let acceptor = TlsAcceptor::from(t.load_full());
            (acceptor, limits.tls_handshake_timeout)
        });
        tokio::spawn(async move { serve_accepted(&http, tls, stream, service, watcher).await });
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
        let stream = Lingering::new(stream);
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
                    Ok::<_, Infallible>(response.map(|body| Counted { body, in_flight }))
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
