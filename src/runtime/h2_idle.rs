//! Closing idle HTTP/2 connections: hyper closes an idle HTTP/1 connection after its keep-alive
//! timeout, but has no such timeout for an HTTP/2 connection with no stream open, so a client
//! could hold a connection slot for ever. Here the server counts the requests in flight on a
//! connection ([`Activity`], [`Counted`]) and [`CloseWhenIdle`] sends a GOAWAY once none has been
//! for the idle time.
//!
//! Does not own: serving the connection (`server`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::TokioExecutor;

use super::timer::CoarseTimer;

/// The requests in flight on an HTTP/2 connection, and when the last one ended.
pub struct Activity {
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
    pub fn start(self: &Arc<Self>) -> InFlight {
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
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = self.0.opened.elapsed().as_millis() as u64;
        self.0.ended_ms.store(ms, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that counts as a request in flight until it is done or dropped.
pub struct Counted<B> {
    pub body: B,
    pub in_flight: InFlight,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An HTTP/2 connection that is closed once it has had no request in flight for `idle`, as
/// HTTP/1's keep-alive idle timeout closes an idle HTTP/1 connection. First it is asked to close
/// (a GOAWAY); if the client has not finished closing by another `idle` later, it is dropped.
/// Without this, a client could hold a connection slot for ever with an idle HTTP/2 connection.
pub struct CloseWhenIdle<C> {
    conn: Pin<Box<C>>,
    activity: Arc<Activity>,
    idle: Duration,
    check: tokio::time::Interval,
    asked: bool,
}

pub type H2Connection<I, S> = http2::Connection<I, S, TokioExecutor>;

impl<I, S, B> CloseWhenIdle<H2Connection<I, S>>
where
    S: hyper::service::HttpService<Incoming, ResBody = Counted<B>>,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, Counted<B>>,
{
    pub fn new(conn: H2Connection<I, S>, activity: Arc<Activity>, idle: Duration) -> Self {
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
    pub fn close(mut self: Pin<&mut Self>) {
        self.asked = true;
        self.conn.as_mut().graceful_shutdown();
    }
}

impl<I, S, B> Future for CloseWhenIdle<H2Connection<I, S>>
where
    S: hyper::service::HttpService<Incoming, ResBody = Counted<B>>,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, Counted<B>>,
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
