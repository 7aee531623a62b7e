//! Lingering close, as nginx does it: when keygate closes a connection, it first stops writing
//! (a FIN), then reads and discards what the client still sends, for a bounded time and size,
//! and only then closes. A client still writing a request body that keygate answered early (a
//! 401 to an upload) would otherwise get a reset, and a reset discards the answer waiting in
//! the client's buffer: Node's `fetch` then reports `write EPIPE` instead of the 401.
//!
//! Owns: the close of one connection's socket ([`Lingering`]). Does not own: deciding to close
//! (hyper, after a response with `Connection: close`, or on idle and drain).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest a close lingers in all.
const LINGER_TIME: Duration = Duration::from_secs(5);
/// The longest it waits for the next bytes once lingering.
const LINGER_IDLE: Duration = Duration::from_secs(1);
/// The most it reads and discards.
const LINGER_BYTES: usize = 64 << 20;
/// Each read's scratch buffer while lingering.
const SCRATCH: usize = 16 << 10;

enum State {
    Open,
    Lingering {
        scratch: Box<[u8]>,
        discarded: usize,
        ends: Pin<Box<tokio::time::Sleep>>,
        idle: Pin<Box<tokio::time::Sleep>>,
    },
    Closed,
}

/// A socket whose shutdown lingers. Reads and writes pass straight through.
pub struct Lingering<S> {
    io: S,
    state: State,
}

impl<S> Lingering<S> {
    pub fn new(io: S) -> Lingering<S> {
        Lingering {
            io,
            state: State::Open,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Lingering<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Sends the FIN, then reads and discards until the client closes its side, or until the
    /// bounds are reached. Never fails once the FIN is out: the connection is done either way.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Open => {
                    std::task::ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
                    this.state = State::Lingering {
                        scratch: vec![0; SCRATCH].into_boxed_slice(),
                        discarded: 0,
                        ends: Box::pin(tokio::time::sleep(LINGER_TIME)),
                        idle: Box::pin(tokio::time::sleep(LINGER_IDLE)),
                    };
                }
                State::Lingering {
                    scratch,
                    discarded,
                    ends,
                    idle,
                } => {
                    let mut buf = ReadBuf::new(scratch);
                    match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                            *discarded += buf.filled().len();
                            if *discarded >= LINGER_BYTES {
                                this.state = State::Closed;
                            } else {
                                let next = tokio::time::Instant::now() + LINGER_IDLE;
                                idle.as_mut().reset(next);
                            }
                        }
                        // The client closed its side, or the connection broke: done.
                        Poll::Ready(_) => this.state = State::Closed,
                        Poll::Pending => {
                            let timed_out = ends.as_mut().poll(cx).is_ready()
                                || idle.as_mut().poll(cx).is_ready();
                            if !timed_out {
                                return Poll::Pending;
                            }
                            this.state = State::Closed;
                        }
                    }
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    #[tokio::test]
    async fn a_close_reads_what_the_client_still_sends_then_ends_when_it_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut server = Lingering::new(server);
        server
            .write_all(b"HTTP/1.1 401 Unauthorized\r\n\r\n")
            .await
            .unwrap();
        let closing = tokio::spawn(async move { server.shutdown().await });
        // The client goes on writing after the answer (an upload), then reads it whole.
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..32 {
            client
                .write_all(&chunk)
                .await
                .expect("no reset while the server lingers");
        }
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 401"));
        drop(client);
        closing.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_waited_for_at_most_the_idle_time() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut server = Lingering::new(server);
        let started = tokio::time::Instant::now();
        server.shutdown().await.unwrap();
        assert!(started.elapsed() >= LINGER_IDLE && started.elapsed() < LINGER_TIME);
    }
}
