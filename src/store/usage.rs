//! Key usage (`last_used_at`, `request_count`): counted in process on the request path, written
//! to Redis in batches off it.
//!
//! Owns: [`Usage`] (per replica: one entry per key used since the last flush, two relaxed
//! atomics per request) and [`flush_every`] (drains it every `usage.flush_interval` in one
//! pipelined round trip, and once more at shutdown). Does not own: authorization (a count is
//! recorded only after a request was allowed).
//!
//! Invariants: a flush never re-creates a deleted key (the script checks the record exists);
//! `last_used_at` only moves forward whichever replica flushes last; usage writes publish no
//! invalidation (they change nothing a request is judged on) and are not audited. Counts of a
//! failed flush are lost rather than retried: they are statistics, not a ledger.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::watch;

use super::model::KeyId;
use super::{Store, StoreError};
use crate::metrics::Metrics;

/// Adds a batch's count and moves `last_used_at` forward, if the key still exists.
const USAGE_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'request_count', ARGV[1])
local last = tonumber(redis.call('HGET', KEYS[1], 'last_used_at') or '0')
if tonumber(ARGV[2]) > last then redis.call('HSET', KEYS[1], 'last_used_at', ARGV[2]) end
return 1
";

#[derive(Default)]
struct Counter {
    requests: AtomicU64,
    /// Unix seconds of the latest use.
    last_used: AtomicU64,
}

/// Uses counted since the last flush, by key.
#[derive(Default)]
pub struct Usage {
    counts: DashMap<KeyId, Counter>,
}

/// One key's uses in a batch.
#[derive(Debug, PartialEq, Eq)]
pub struct Used {
    pub key: KeyId,
    pub requests: u64,
    pub last_used: u64,
}

impl Usage {
    /// Counts one allowed request of `key` at `now` (Unix seconds).
    pub fn record(&self, key: &KeyId, now: u64) {
        let add = |c: &Counter| {
            c.requests.fetch_add(1, Ordering::Relaxed);
            c.last_used.fetch_max(now, Ordering::Relaxed);
        };
        match self.counts.get(key) {
            Some(c) => add(&c),
            None => add(&self.counts.entry(key.clone()).or_default()),
        }
    }

    /// Takes everything counted so far; keys unused since the previous drain are forgotten, so
    /// the map holds only keys in use.
    pub fn drain(&self) -> Vec<Used> {
        let mut out = Vec::new();
        self.counts.retain(|key, c| {
            let requests = c.requests.swap(0, Ordering::Relaxed);
            if requests > 0 {
                out.push(Used {
                    key: key.clone(),
                    requests,
                    last_used: c.last_used.load(Ordering::Relaxed),
                });
            }
            requests > 0
        });
        out
    }
}

impl Store {
    /// Adds a batch of uses to the key records, in one round trip.
    pub async fn add_usage(&self, batch: &[Used]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for used in batch {
            pipe.cmd("EVAL")
                .arg(USAGE_SCRIPT)
                .arg(1)
                .arg(self.name(format_args!("key:{}", used.key)))
                .arg(used.requests)
                .arg(used.last_used)
                .ignore();
        }
        let mut c = self.conn.clone();
        self.bounded(async { Ok(pipe.query_async::<()>(&mut c).await?) })
            .await
    }
}

/// Writes the counted uses every `interval` until `shutdown`, then once more.
pub async fn flush_every(
    usage: Arc<Usage>,
    store: Store,
    metrics: Arc<Metrics>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = crate::server::stopped(&mut shutdown) => true,
        };
        if let Err(e) = store.add_usage(&usage.drain()).await {
            metrics.redis_errors.inc();
            tracing::warn!(error = %e, "key usage not written; these counts are lost");
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_drained_once_and_idle_keys_forgotten() {
        let usage = Usage::default();
        let (a, b) = (KeyId("a".into()), KeyId("b".into()));
        usage.record(&a, 10);
        usage.record(&a, 12);
        usage.record(&a, 11);
        usage.record(&b, 5);
        let mut batch = usage.drain();
        batch.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(
            batch,
            [
                Used {
                    key: a.clone(),
                    requests: 3,
                    last_used: 12
                },
                Used {
                    key: b,
                    requests: 1,
                    last_used: 5
                },
            ]
        );
        assert!(usage.drain().is_empty(), "nothing twice");
        assert!(usage.counts.is_empty(), "idle keys are forgotten");
        usage.record(&a, 20);
        assert_eq!(usage.drain()[0].requests, 1);
    }
}
