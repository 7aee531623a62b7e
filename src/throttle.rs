//! Budgets for failed authentication: a client that keeps presenting keys that do not exist is
//! refused (429) before its requests cost a store lookup, and while a spray of unknown keys goes
//! on, clients that have failed lately get no lookups past a global rate.
//!
//! Owns: the per-client failure counts (a fixed one-minute window per client address, in a map
//! bounded by [`MAX_CLIENTS`], swept off the request path) and the per-second count of store
//! lookups that found no key. Does not own: which address a request comes from (`proxy`), or
//! what a refusal looks like (`error`).
//!
//! Invariant: a client that has not failed within its window is never refused here, so a spray
//! from other addresses cannot lock real traffic out.

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

/// Clients tracked at most; past it a new client is not tracked until the sweep frees room.
pub const MAX_CLIENTS: usize = 100_000;
/// The window a client's failures are counted in, in seconds.
pub const WINDOW_SECS: u64 = 60;

/// The budgets, from the `[limits]` section of the config. 0 turns a budget off.
#[derive(Clone, Copy, Debug)]
pub struct ThrottleConfig {
    /// Failed authentications a client may make per minute before it is refused.
    pub failures_per_client: u32,
    /// Store lookups that find no key, per second and replica, past which clients that have
    /// failed lately get no lookup.
    pub unknown_lookups_per_second: u32,
}

/// Why a request is refused here, and for how many seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This client failed too often in its window.
    Client { retry_after: u64 },
    /// A spray of unknown keys is going on, and this client failed lately.
    UnknownKeys { retry_after: u64 },
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start: u64,
    failures: u32,
}

pub struct Throttle {
    cfg: ThrottleConfig,
    clients: DashMap<IpAddr, Window, foldhash::fast::RandomState>,
    tracked: AtomicUsize,
    /// (second, store lookups that found no key in it).
    unknown: Mutex<(u64, u32)>,
}

impl Throttle {
    pub fn new(cfg: ThrottleConfig) -> Throttle {
        Throttle {
            cfg,
            clients: DashMap::default(),
            tracked: AtomicUsize::new(0),
            unknown: Mutex::new((0, 0)),
        }
    }

    /// Before a request's key is looked up: may `client` have a lookup at `now` (Unix seconds)?
    /// One map read; clients that never failed are not in the map.
    pub fn check(&self, client: IpAddr, now: u64) -> Result<(), Refusal> {
        let Some(window) = self.clients.get(&client).map(|w| *w) else {
            return Ok(());
        };
        let ends = window.start + WINDOW_SECS;
        if now >= ends {
            return Ok(());
        }
        let budget = self.cfg.failures_per_client;
        if budget > 0 && window.failures >= budget {
            return Err(Refusal::Client {
                retry_after: ends - now,
            });
        }
        let cap = self.cfg.unknown_lookups_per_second;
        let (second, count) = *self.unknown.lock().expect("not poisoned");
        if cap > 0 && second == now && count >= cap {
            return Err(Refusal::UnknownKeys { retry_after: 1 });
        }
        Ok(())
    }

    /// After `client` presented a key that does not exist (or is malformed) at `now`.
    pub fn failed(&self, client: IpAddr, now: u64) {
        if let Some(mut w) = self.clients.get_mut(&client) {
            if now >= w.start + WINDOW_SECS {
                *w = Window {
                    start: now,
                    failures: 0,
                };
            }
            w.failures = w.failures.saturating_add(1);
            return;
        }
        if self.tracked.load(Ordering::Relaxed) >= MAX_CLIENTS {
            return;
        }
        let fresh = Window {
            start: now,
            failures: 1,
        };
        if self.clients.insert(client, fresh).is_none() {
            self.tracked.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a store lookup that found no key at `now`.
    pub fn unknown_lookup(&self, now: u64) {
        let mut unknown = self.unknown.lock().expect("not poisoned");
        if unknown.0 == now {
            unknown.1 = unknown.1.saturating_add(1);
        } else {
            *unknown = (now, 1);
        }
    }

    /// Forgets clients whose window ended before `now`: run off the request path.
    pub fn sweep(&self, now: u64) {
        self.clients.retain(|_, w| now < w.start + WINDOW_SECS);
        self.tracked.store(self.clients.len(), Ordering::Relaxed);
    }
}

/// Sweeps `throttle` once a window until `shutdown` turns true.
pub async fn sweep_every_window(
    throttle: std::sync::Arc<Throttle>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(WINDOW_SECS));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        throttle.sweep(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_client: u32, per_second: u32) -> Throttle {
        Throttle::new(ThrottleConfig {
            failures_per_client: per_client,
            unknown_lookups_per_second: per_second,
        })
    }

    #[test]
    fn a_client_past_its_budget_waits_out_its_window() {
        let t = throttle(3, 0);
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(t.check(a, 100), Ok(()));
            t.failed(a, 100);
        }
        assert_eq!(t.check(a, 110), Err(Refusal::Client { retry_after: 50 }));
        assert_eq!(t.check(b, 110), Ok(()), "another client is not affected");
        assert_eq!(t.check(a, 160), Ok(()), "a new window");
        t.failed(a, 160);
        assert_eq!(t.check(a, 161), Ok(()), "the count starts again");
        t.sweep(500);
        assert_eq!(t.clients.len(), 0);
    }

    #[test]
    fn during_a_spray_only_clients_that_failed_lose_their_lookups() {
        let t = throttle(0, 2);
        let (sprayer, bystander) = ("10.0.0.1".parse().unwrap(), "10.0.0.9".parse().unwrap());
        t.failed(sprayer, 100);
        t.unknown_lookup(100);
        assert_eq!(t.check(sprayer, 100), Ok(()));
        t.unknown_lookup(100);
        assert_eq!(
            t.check(sprayer, 100),
            Err(Refusal::UnknownKeys { retry_after: 1 })
        );
        assert_eq!(t.check(bystander, 100), Ok(()));
        assert_eq!(t.check(sprayer, 101), Ok(()), "a new second");
    }

    #[test]
    fn the_map_stays_bounded() {
        let t = throttle(1, 0);
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            t.failed(IpAddr::from(i.to_be_bytes()), 1);
        }
        assert_eq!(t.clients.len(), MAX_CLIENTS);
    }
}
