//! Graceful stop for one listener's connections: ask each to finish its in-flight requests and
//! close, then wait until all are gone.
//!
//! In place of hyper-util's `GracefulShutdown`, whose watcher polls a `watch` channel, taking a
//! lock, every time its connection wakes, several times a request. Here a connection takes a
//! place before it is served, registers its waker once, and on every other wake reads one flag.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use slab::Slab;
use tokio::sync::Notify;

/// One listener's open connections.
#[derive(Default)]
pub struct Drain {
    stopping: AtomicBool,
    /// Each connection's waker, once it has been polled.
    conns: Mutex<Slab<Option<Waker>>>,
    /// Told when a connection goes after the stop began.
    gone: Notify,
}

impl Drain {
    /// A place for one connection, taken before it is served (a TLS handshake, say), so that
    /// [`Drain::stop`] waits for it too.
    pub fn watcher(self: &Arc<Self>) -> Watcher {
        let slot = self.conns.lock().expect("poisoned").insert(None);
        Watcher {
            drain: self.clone(),
            slot,
        }
    }

    /// Asks every connection to finish its in-flight requests and close, and waits until all
    /// are gone. New connections must no longer be accepted.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let wakers: Vec<Waker> = {
            let mut conns = self.conns.lock().expect("poisoned");
            conns.iter_mut().filter_map(|(_, w)| w.take()).collect()
        };
        wakers.into_iter().for_each(Waker::wake);
        loop {
            let mut gone = pin!(self.gone.notified());
            gone.as_mut().enable();
            if self.conns.lock().expect("poisoned").is_empty() {
                return;
            }
            gone.await;
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// One connection's place in its [`Drain`]; given back when dropped.
pub struct Watcher {
    drain: Arc<Drain>,
    slot: usize,
}

impl Watcher {
    /// Polls `conn` to its end; once the drain stops, first asks it to close (`graceful`: finish
    /// in-flight requests, take no new ones).
    pub async fn watch<C: Future>(self, conn: C, graceful: impl Fn(Pin<&mut C>)) -> C::Output {
        let mut conn = pin!(conn);
        let mut asked = false;
        let mut registered: Option<Waker> = None;
        poll_fn(|cx| {
            if !asked {
                let mut stopping = self.drain.stopping();
                if !stopping && !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    let waker = cx.waker().clone();
                    self.drain.conns.lock().expect("poisoned")[self.slot] = Some(waker.clone());
                    registered = Some(waker);
                    // A stop that took the wakers just before this one was put in is seen here.
                    stopping = self.drain.stopping();
                }
                if stopping {
                    graceful(conn.as_mut());
                    asked = true;
                }
            }
            conn.as_mut().poll(cx)
        })
        .await
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.drain.conns.lock().expect("poisoned").remove(self.slot);
        if self.drain.stopping() {
            self.drain.gone.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::{Instant, sleep};

    /// A connection that serves until asked to close, then takes 50 ms to finish.
    fn connection(watcher: Watcher) -> tokio::task::JoinHandle<&'static str> {
        let asked = Arc::new(Notify::new());
        let told = asked.clone();
        tokio::spawn(watcher.watch(
            async move {
                asked.notified().await;
                sleep(Duration::from_millis(50)).await;
                "closed"
            },
            move |_| told.notify_one(),
        ))
    }

    async fn within_a_second<T>(task: tokio::task::JoinHandle<T>) -> T {
        let done = tokio::time::timeout(Duration::from_secs(1), task).await;
        done.expect("finished within a second").unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn stop_asks_every_connection_to_close_and_waits_for_all() {
        let drain = Arc::new(Drain::default());
        let conns: Vec<_> = (0..3).map(|_| connection(drain.watcher())).collect();
        // One still in its TLS handshake: holds a place, not yet served.
        let handshaking = drain.watcher();
        sleep(Duration::from_millis(10)).await;
        assert!(conns.iter().all(|c| !c.is_finished()), "serving until stop");

        let started = Instant::now();
        let stop = tokio::spawn({
            let drain = drain.clone();
            async move { drain.stop().await }
        });
        sleep(Duration::from_millis(100)).await;
        for c in conns {
            assert_eq!(within_a_second(c).await, "closed");
        }
        assert!(!stop.is_finished(), "waits for the handshaking one");
        let late = connection(handshaking);
        assert_eq!(within_a_second(late).await, "closed", "asked at once");
        within_a_second(stop).await;
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert!(drain.conns.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn stop_with_no_connections_returns_at_once() {
        Drain::default().stop().await;
    }
}
