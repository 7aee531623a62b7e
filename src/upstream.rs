//! Keep-alive HTTP/1.1 connections to upstreams, one pool per worker.
//!
//! Owns: connecting (under `limits.upstream_connect_timeout`, `TCP_NODELAY`, TCP keepalive),
//! reusing idle connections (a request that a reused connection hands back unsent, because the
//! upstream just closed it, goes on the next idle one or a new one), and closing connections
//! idle longer than `limits.upstream_idle_timeout`. Does not own: the per-request response
//! timeout, the header rewrite or the body cap (`proxy::forward`).
//!
//! A connection goes back to the pool when the response body it carried has been read to the
//! end ([`PooledBody`]); a body dropped half-read takes its connection with it, since the rest
//! of that body would still be on the wire. Each worker owns its pool, so nothing here is shared
//! between threads; the lock is never contended.
//!
//! Built on hyper's connection-level client rather than hyper-util's pooled `Client`: per
//! request that saves a pool-key hash, a checkout future and a spawned task that waits to return
//! the connection.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::route::Upstream;
use crate::runtime::progress::Progress;

/// A request body on its way upstream: capped at `limits.max_body_bytes`, and failing when it
/// stops arriving for `limits.body_idle_timeout`.
pub type UpstreamBody = http_body_util::Limited<Progress<Incoming>>;

/// TCP keepalive probes on upstream connections start after this much silence.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Idle connections kept per upstream and worker; more are closed when they come back.
const MAX_IDLE_PER_UPSTREAM: usize = 1024;

/// Why no response came back from an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {0}")]
    Connect(String, #[source] std::io::Error),
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    #[error("HTTP exchange with the upstream failed")]
    Http(#[from] hyper::Error),
}

struct Idle<B> {
    sender: SendRequest<B>,
    since: Instant,
}

/// Idle connections by upstream address (a handful per worker: a linear scan).
struct IdleSet<B>(Vec<(String, VecDeque<Idle<B>>)>);

/// One worker's connections to every upstream, sending request bodies of type `B`.
pub struct Pool<B = UpstreamBody> {
    idle: Mutex<IdleSet<B>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl<B> Pool<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Arc<Pool<B>> {
        Arc::new(Pool {
            idle: Mutex::new(IdleSet(Vec::new())),
            connect_timeout,
            idle_timeout,
        })
    }

    /// Sends `req` (origin-form URI, `Host` set) to `upstream` on a pooled or new connection.
    /// The response body hands the connection back when it has been read to the end.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its by-value arguments twice"
    )]
    pub fn send(
        self: &Arc<Self>,
        upstream: &Upstream,
        mut req: Request<B>,
    ) -> impl Future<Output = Result<Response<PooledBody<B>>, UpstreamError>> {
        async move {
            // A reused connection may have been closed by the upstream just now; hyper hands
            // the request back when it was not sent, and then it goes once more on a new
            // connection.
            while let Some(mut sender) = self.checkout(&upstream.address).await {
                match sender.try_send_request(req).await {
                    Ok(response) => return Ok(self.lease(upstream, sender, response)),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => req = unsent,
                        None => return Err(e.into_error().into()),
                    },
                }
            }
            let mut sender = self.connect(upstream).await?;
            let response = sender.send_request(req).await?;
            Ok(self.lease(upstream, sender, response))
        }
    }

    /// The longest idle connection to `address` that is still open, once it is ready. Oldest
    /// first: the one returned last may still be reading the end of its previous response
    /// and waiting for it costs a scheduler round.
    async fn checkout(&self, address: &str) -> Option<SendRequest<B>> {
        loop {
            let Idle { mut sender, since } = self.idle.lock().expect("poisoned").pop(address)?;
            if since.elapsed() >= self.idle_timeout || sender.is_closed() {
                continue;
            }
            // Returned at the end of a body, the connection is ready at once or as soon as its
            // task has read past that body.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn connect(&self, upstream: &Upstream) -> Result<SendRequest<B>, UpstreamError> {
        let address = &upstream.address;
        let stream =
            tokio::time::timeout(self.connect_timeout, TcpStream::connect(address.as_str()))
                .await
                .map_err(|_| UpstreamError::ConnectTimeout(address.clone()))?
                .map_err(|e| UpstreamError::Connect(address.clone(), e))?;
        stream
            .set_nodelay(true)
            .and_then(|()| {
                let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
                socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)
            })
            .map_err(|e| UpstreamError::Connect(address.clone(), e))?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn lease(
        self: &Arc<Self>,
        upstream: &Upstream,
        sender: SendRequest<B>,
        response: Response<Incoming>,
    ) -> Response<PooledBody<B>> {
        let lease = Lease {
            pool: self.clone(),
            address: upstream.address.clone(),
            sender,
        };
        response.map(|body| PooledBody {
            body,
            lease: Some(lease),
        })
    }

    /// Closes connections idle longer than `limits.upstream_idle_timeout`, checking every half
    /// of it, for as long as the worker runs.
    pub async fn close_idle(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.idle_timeout / 2);
        loop {
            tick.tick().await;
            let timeout = self.idle_timeout;
            let mut idle = self.idle.lock().expect("poisoned");
            for (_, conns) in &mut idle.0 {
                conns.retain(|c| c.since.elapsed() < timeout && !c.sender.is_closed());
            }
        }
    }
}

impl<B> Pool<B> {
    fn put_back(&self, address: String, sender: SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        let idle = Idle {
            sender,
            since: Instant::now(),
        };
        self.idle.lock().expect("poisoned").push(address, idle);
    }
}

impl<B> IdleSet<B> {
    fn pop(&mut self, address: &str) -> Option<Idle<B>> {
        self.0
            .iter_mut()
            .find(|(a, _)| a == address)
            .and_then(|(_, conns)| conns.pop_front())
    }

    fn push(&mut self, address: String, idle: Idle<B>) {
        let conns = match self.0.iter().position(|(a, _)| *a == address) {
            Some(i) => &mut self.0[i].1,
            None => {
                self.0.push((address, VecDeque::new()));
                &mut self.0.last_mut().expect("just pushed").1
            }
        };
        if conns.len() < MAX_IDLE_PER_UPSTREAM {
            conns.push_back(idle);
        }
    }
}

/// A connection on loan to one response.
struct Lease<B> {
    pool: Arc<Pool<B>>,
    address: String,
    sender: SendRequest<B>,
}

/// An upstream response body that returns its connection to the pool once read to the end.
pub struct PooledBody<B = UpstreamBody> {
    body: Incoming,
    lease: Option<Lease<B>>,
}

impl<B> PooledBody<B> {
    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.pool.put_back(lease.address, lease.sender);
        }
    }
}

impl<B> Body for PooledBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(e))) => {
                // The client gets a response cut short, which is worth a line each.
                let upstream = self.lease.as_ref().map_or("", |l| l.address.as_str());
                tracing::warn!(upstream, error = %crate::telemetry::chain(e), "upstream response cut off mid-body");
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests;

impl<B> Drop for PooledBody<B> {
    fn drop(&mut self) {
        // An empty body is never polled; one dropped half-read closes its connection.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}
