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
use prometheus::IntCounter;
use tokio::sync::watch;

use super::{Store, StoreError, Tag};
use crate::model::{KeyId, OrgId};
use crate::telemetry::Condition;

/// Adds each key's count and moves its `last_used_at` forward, for keys that still exist.
/// KEYS: key records; ARGV: request count and last use (Unix seconds) per key, in KEYS order.
const USAGE_SCRIPT: &str = r"
local written = 0
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBY', key, 'request_count', ARGV[2 * i - 1])
    local last = tonumber(redis.call('HGET', key, 'last_used_at') or '0')
    if tonumber(ARGV[2 * i]) > last then redis.call('HSET', key, 'last_used_at', ARGV[2 * i]) end
    written = written + 1
  end
end
return written
";

/// Keys per script call: a call runs atomically, so it is kept short (well under a
/// millisecond) to not hold up key lookups.
const KEYS_PER_CALL: usize = 256;

/// Script calls per round trip, each round trip bounded by the store timeout.
const CALLS_PER_TRIP: usize = 16;

struct Counter {
    /// The key's org, where its record is.
    org: OrgId,
    requests: AtomicU64,
    /// Unix seconds of the latest use.
    last_used: AtomicU64,
}

/// Uses counted since the last flush, by key.
#[derive(Default)]
pub struct Usage {
    counts: DashMap<KeyId, Counter, foldhash::fast::RandomState>,
}

/// One key's uses in a batch.
#[derive(Debug, PartialEq, Eq)]
pub struct Used {
    pub org: OrgId,
    pub key: KeyId,
    pub requests: u64,
    pub last_used: u64,
}

impl Usage {
    /// Counts one allowed request of `key` (of `org`) at `now` (Unix seconds).
    pub fn record(&self, org: &OrgId, key: &KeyId, now: u64) {
        let add = |c: &Counter| {
            c.requests.fetch_add(1, Ordering::Relaxed);
            c.last_used.fetch_max(now, Ordering::Relaxed);
        };
        match self.counts.get(key) {
            Some(c) => add(&c),
            None => add(&self.counts.entry(key.clone()).or_insert_with(|| Counter {
                org: org.clone(),
                requests: AtomicU64::new(0),
                last_used: AtomicU64::new(0),
            })),
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
                    org: c.org.clone(),
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
    /// Adds a batch of uses to the key records: one script call per [`KEYS_PER_CALL`] keys of
    /// one org (was one `EVAL` per key, which cost Redis more than the lookups it competes with
    /// in the cold benchmark; one org per call, so that a call stays in its org's hash slot on a
    /// Cluster), [`CALLS_PER_TRIP`] calls per round trip.
    pub async fn add_usage(&self, batch: &[Used]) -> Result<(), StoreError> {
        let script = redis::Script::new(USAGE_SCRIPT);
        let mut sorted: Vec<&Used> = batch.iter().collect();
        sorted.sort_by(|a, b| a.org.cmp(&b.org));
        let calls: Vec<&[&Used]> = sorted
            .chunk_by(|a, b| a.org == b.org)
            .flat_map(|org| org.chunks(KEYS_PER_CALL))
            .collect();
        let call = |keys: &[&Used]| {
            // The `EVALSHA` (of the script loaded first) written out, not a `ScriptInvocation`:
            // that holds each key and argument in a `Vec` of its own, then copies them in.
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(script.get_hash()).arg(keys.len());
            for used in keys {
                let (org, key) = (Tag(&used.org), &used.key);
                cmd.arg(self.name_arg(format_args!("{org}:key:{key}")));
            }
            for used in keys {
                cmd.arg(used.requests).arg(used.last_used);
            }
            cmd
        };
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(USAGE_SCRIPT);
        for trip in calls.chunks(CALLS_PER_TRIP) {
            let mut cmds: Vec<redis::Cmd> = trip.iter().map(|keys| call(keys)).collect();
            if self.link.is_cluster() {
                // Each call goes to its org's node, all at once: the script is on every node
                // first.
                self.query_apart(vec![load.clone()]).await?;
            } else {
                cmds.insert(0, load.clone());
            }
            self.query_apart(cmds).await?;
        }
        Ok(())
    }
}

/// Writes the counted uses every `interval` until `shutdown`, then once more.
pub async fn flush_every(
    usage: Arc<Usage>,
    store: Store,
    redis_errors: IntCounter,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let failing = Condition::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.wait_for(|s| *s) => true,
        };
        match store.add_usage(&usage.drain()).await {
            Err(e) => {
                redis_errors.inc();
                if failing.failed() {
                    tracing::warn!(error = %e, "key usage not written: counts are lost until Redis answers again");
                }
            }
            Ok(()) if failing.recovered() => tracing::info!("key usage written again"),
            Ok(()) => {}
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
        let (a, b, org) = (KeyId::from("a"), KeyId::from("b"), OrgId::from("acme"));
        usage.record(&org, &a, 10);
        usage.record(&org, &a, 12);
        usage.record(&org, &a, 11);
        usage.record(&org, &b, 5);
        let mut batch = usage.drain();
        batch.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(
            batch,
            [
                Used {
                    org: org.clone(),
                    key: a.clone(),
                    requests: 3,
                    last_used: 12
                },
                Used {
                    org: org.clone(),
                    key: b,
                    requests: 1,
                    last_used: 5
                },
            ]
        );
        assert!(usage.drain().is_empty(), "nothing twice");
        assert!(usage.counts.is_empty(), "idle keys are forgotten");
        usage.record(&org, &a, 20);
        assert_eq!(usage.drain()[0].requests, 1);
    }
}
