//! A request body that must keep coming: it fails once no part of it has arrived for the idle
//! time, so a client sending a declared body at a byte a minute cannot hold a connection and an
//! upstream request open until the upstream's own timeout.
//!
//! Owns: the idle clock of one body, on a [`CoarseTimer`] (no system call per frame). Does not
//! own: what the failure is answered with (`proxy::forward`: 408).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::timer::{CoarseSleep, CoarseTimer};

/// No part of the body arrived for this long.
#[derive(Debug, thiserror::Error)]
#[error("the request body made no progress for {0:?}")]
pub struct BodyStalled(pub Duration);

/// `body`, failing with [`BodyStalled`] when it makes no progress for `idle`.
pub struct Progress<B> {
    body: B,
    /// The idle time and its timeout; `None` for a body that is empty from the start (most
    /// requests): nothing to wait for, so no clock is read and no timeout made. Boxed, so that
    /// the request it travels in, moved several times on its way upstream, grows by a pointer.
    deadline: Option<Box<(Duration, CoarseSleep)>>,
}

impl<B: Body> Progress<B> {
    pub fn new(body: B, timer: &CoarseTimer, idle: Duration) -> Progress<B> {
        let deadline = (!body.is_end_stream())
            .then(|| Box::new((idle, timer.deadline(Instant::now() + idle))));
        Progress { body, deadline }
    }
}

impl<B> Body for Progress<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match (Pin::new(&mut this.body).poll_frame(cx), &mut this.deadline) {
            (Poll::Ready(frame), deadline) => {
                if let Some(deadline) = deadline {
                    let (idle, sleep) = &mut **deadline;
                    sleep.reset(Instant::now() + *idle);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            (Poll::Pending, Some(deadline)) => {
                let (idle, sleep) = &mut **deadline;
                match Pin::new(sleep).poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyStalled(*idle).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
            (Poll::Pending, None) => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
