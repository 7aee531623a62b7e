//! Accept loops: connections in, HTTP/1.1 and HTTP/2 out to a service, and graceful drain.
//!
//! Owns: binding is the caller's (tests bind port 0); here we accept on a bound listener, bound
//! open connections with a semaphore (excess waits in the kernel's accept queue), run the TLS
//! handshake under a timeout (ALPN picks h2 or http/1.1; on plaintext, HTTP/2 with prior
//! knowledge is detected from the preface), apply header limits and the header-read timeout,
//! and on stop: close the listener, ask every connection to finish its in-flight requests
//! ([`Drain`]) and wait for them. The caller bounds that wait with its drain deadline.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::Limits;
use crate::metrics::Metrics;
use crate::proxy::{self, ConnInfo, Gateway, ResponseBody};

mod drain;
mod timer;
pub use drain::{Drain, Watcher};
use timer::CoarseTimer;

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(CoarseTimer::new(limits.header_read_timeout))
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32);
    b
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
    let builder = builder(&limits);
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
        let (gw, builder, tls) = (gw.clone(), builder.clone(), tls.clone());
        tokio::spawn(async move {
            let _held = (permit, open);
            let info = ConnInfo::new(peer, tls.is_some());
            let service = service_fn(move |req| proxy::handle(gw.clone(), info.clone(), req));
            match tls {
                None => serve_connection(&builder, stream, service, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(
                        limits.tls_handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => {
                            serve_connection(&builder, stream, service, watcher).await
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

/// Serves one connection until it closes or is drained.
pub async fn serve_connection<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
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
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(conn, |c| c.graceful_shutdown()).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
