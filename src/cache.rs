//! The hot cache: resolved keys and projects, in process, bounded, dropped on invalidation.
//!
//! Owns: [`ReadThrough`] (bounded map, positive and negative TTLs, one fetch in flight per
//! entry, stale-if-error up to `max_stale`), the two instances of it ([`Cache`]), and the
//! invalidation subscriber ([`subscribe`]). Does not own: what an entry means (`policy`), or the
//! Redis reads (`store`).
//!
//! Invariants:
//! - An entry counts as fresh only while the invalidation subscription is live: if it is down we
//!   may have missed a revocation, so every lookup goes to Redis (entries remain usable as stale
//!   if Redis fails too). On every (re)subscription the whole cache is dropped.
//! - A fetch that raced an invalidation is returned to its callers but never cached.
//! - Expiry of keys is not judged here: the policy checks it against the clock on every request.
//! - No lock is held across an `.await`; values are `Arc`s cloned out of the map at once.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use futures_util::StreamExt;
use prometheus::IntCounter;
use tokio::sync::{OnceCell, watch};
use tokio::time::Instant;

use crate::model::{KeyHash, OrgId, Principal, Project, ProjectId};
use crate::store::{Invalidation, Store, StoreError};

/// After a store failure, entries usable as stale are served without retrying Redis for this
/// long, so an outage does not add a timeout to every request.
const STALE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The bounds of the hot cache, from the `[cache]` section of the config.
#[derive(Clone, Copy, Debug)]
pub struct CacheConfig {
    pub max_entries: usize,
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub max_stale: Duration,
    /// How long stale entries may still answer once the invalidation subscription is down:
    /// past it this replica fails closed even within `max_stale`, since it may have missed
    /// revocations. `None`: `max_stale` alone bounds it.
    pub max_unsubscribed: Option<Duration>,
}

/// How a lookup was answered (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A fresh entry.
    Hit,
    /// Fetched from the store (found or not).
    Miss,
    /// A fresh "no such thing" entry.
    Negative,
    /// The store failed; an entry younger than `max_stale` was used.
    Stale,
}

/// A lookup's answer: the value (`None`: does not exist) and how it was found.
#[derive(Debug)]
pub struct Lookup<V> {
    pub value: Option<Arc<V>>,
    pub outcome: Outcome,
}

type Shared<V> = Result<Option<Arc<V>>, Arc<StoreError>>;

struct Slot<V> {
    value: Option<Arc<V>>,
    fetched_at: Instant,
}

/// Keys are hashed with foldhash, seeded per process (as is `store::usage`'s map): SipHash, the
/// default, costs several times more per lookup of a 32-byte credential hash. Clients choose the
/// credentials, but without the seed they cannot choose colliding ones.
type Hasher = foldhash::fast::RandomState;

/// A bounded read-through map in front of the store.
pub struct ReadThrough<K, V> {
    entries: DashMap<K, Slot<V>, Hasher>,
    /// One cell per key being fetched: every concurrent miss awaits the same fetch. A fetch
    /// caches its result only if its cell is still here: invalidations remove cells first.
    inflight: DashMap<K, Arc<OnceCell<Shared<V>>>, Hasher>,
    /// How many `entries` holds, kept in step by every change made to it: `DashMap::len`
    /// read-locks every shard, and each insert asked it.
    count: AtomicUsize,
    /// Only one thread evicts at a time.
    evicting: AtomicBool,
    cfg: CacheConfig,
}

impl<K: Eq + Hash + Clone, V> ReadThrough<K, V> {
    fn new(cfg: CacheConfig) -> Self {
        ReadThrough {
            entries: DashMap::with_hasher(Hasher::default()),
            inflight: DashMap::with_hasher(Hasher::default()),
            count: AtomicUsize::new(0),
            evicting: AtomicBool::new(false),
            cfg,
        }
    }

    /// Looks `key` up, fetching it (once, however many callers wait) when not fresh.
    /// `trusted` is whether invalidations are being received; `recently_failed` whether the store
    /// failed within [`STALE_RETRY_AFTER`].
    pub async fn get<Fut>(
        &self,
        key: &K,
        trusted: bool,
        recently_failed: bool,
        stale_allowed: bool,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<Lookup<V>, Arc<StoreError>>
    where
        Fut: Future<Output = Result<Option<V>, StoreError>>,
    {
        let now = Instant::now();
        let cached = self
            .entries
            .get(key)
            .map(|s| (s.value.clone(), now.saturating_duration_since(s.fetched_at)));
        if let Some((value, age)) = &cached {
            let ttl = if value.is_some() {
                self.cfg.ttl
            } else {
                self.cfg.negative_ttl
            };
            if trusted && *age < ttl {
                let outcome = if value.is_some() {
                    Outcome::Hit
                } else {
                    Outcome::Negative
                };
                return Ok(Lookup {
                    value: value.clone(),
                    outcome,
                });
            }
            if recently_failed && stale_allowed && self.usable_as_stale(value.is_some(), *age) {
                return Ok(Lookup {
                    value: value.clone(),
                    outcome: Outcome::Stale,
                });
            }
        }
        // Boxed: the fetch (a Redis round trip) is a large future, and unboxed it would be part
        // of every request's future, hits included, which is moved on every request.
        let cached = cached.filter(|_| stale_allowed);
        Box::pin(self.miss(key, cached, fetch)).await
    }

    /// Fetches `key`; on a store failure falls back to `cached` while it is younger than
    /// `max_stale`.
    async fn miss<Fut>(
        &self,
        key: &K,
        cached: Option<(Option<Arc<V>>, Duration)>,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<Lookup<V>, Arc<StoreError>>
    where
        Fut: Future<Output = Result<Option<V>, StoreError>>,
    {
        match self.fetch_once(key, fetch).await {
            Ok(value) => Ok(Lookup {
                value,
                outcome: Outcome::Miss,
            }),
            Err(e) => match cached {
                Some((value, age))
                    if e.is_unavailable() && self.usable_as_stale(value.is_some(), age) =>
                {
                    Ok(Lookup {
                        value,
                        outcome: Outcome::Stale,
                    })
                }
                _ => Err(e),
            },
        }
    }

    /// Whether an entry of this age may answer while the store fails: a found one within
    /// `max_stale`, a "no such thing" within `negative_ttl` (an unknown key keeps its 401, as it
    /// would have with the store up).
    fn usable_as_stale(&self, found: bool, age: Duration) -> bool {
        age < if found {
            self.cfg.max_stale
        } else {
            self.cfg.negative_ttl
        }
    }

    async fn fetch_once<Fut>(&self, key: &K, fetch: impl FnOnce() -> Fut) -> Shared<V>
    where
        Fut: Future<Output = Result<Option<V>, StoreError>>,
    {
        let cell = self.inflight.entry(key.clone()).or_default().clone();
        let result = cell
            .get_or_init(|| async {
                let fetched = fetch().await.map(|v| v.map(Arc::new)).map_err(Arc::new);
                if let Ok(value) = &fetched {
                    // Cache only if no invalidation removed our cell meanwhile. The shard guard
                    // is held across the insert, so an invalidation runs wholly before or after.
                    let current = self.inflight.get(key);
                    if current.is_some_and(|c| Arc::ptr_eq(&c, &cell)) {
                        self.insert(key.clone(), value.clone());
                    }
                }
                fetched
            })
            .await
            .clone();
        self.inflight.remove_if(key, |_, c| Arc::ptr_eq(c, &cell));
        result
    }

    fn insert(&self, key: K, value: Option<Arc<V>>) {
        let slot = Slot {
            value,
            fetched_at: Instant::now(),
        };
        if self.entries.insert(key, slot).is_none()
            && self.count.fetch_add(1, Ordering::Relaxed) >= self.cfg.max_entries
        {
            self.evict();
        }
    }

    /// `keep`, counting the entry out of [`ReadThrough::count`] when it is not kept: the
    /// closures of `retain` end in it.
    fn kept(&self, keep: bool) -> bool {
        if !keep {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        keep
    }

    /// Brings the map back to 90% of its bound: first what is too old to serve even as stale
    /// (and expired negative entries), then arbitrary entries.
    fn evict(&self) {
        if self.evicting.swap(true, Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        let keep_positive = self.cfg.ttl.max(self.cfg.max_stale);
        self.entries.retain(|_, s| {
            let age = now.saturating_duration_since(s.fetched_at);
            self.kept(
                age < if s.value.is_some() {
                    keep_positive
                } else {
                    self.cfg.negative_ttl
                },
            )
        });
        let target = self.cfg.max_entries - self.cfg.max_entries / 10;
        let mut excess = self.len().saturating_sub(target);
        if excess > 0 {
            self.entries.retain(|_, _| {
                if excess == 0 {
                    return true;
                }
                excess -= 1;
                self.kept(false)
            });
        }
        self.evicting.store(false, Ordering::Release);
    }

    /// Drops the entries `drop` selects. Fetches in flight are not cached (they may predate the
    /// change, and we cannot tell which keys they belong to).
    fn invalidate(&self, mut drop: impl FnMut(&K, &mut Slot<V>) -> bool) {
        self.inflight.clear();
        self.entries.retain(|k, s| self.kept(!drop(k, s)));
    }

    /// Drops one entry, and keeps a fetch of it in flight from being cached.
    fn remove(&self, key: &K) {
        self.inflight.remove(key);
        if self.entries.remove(key).is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The replica's hot entries.
pub struct Cache {
    /// Credential hash → key and owner (or "no such key").
    pub keys: ReadThrough<KeyHash, Principal>,
    /// (org, project) → project with members (or "no such project").
    pub projects: ReadThrough<(OrgId, ProjectId), Project>,
    /// Whether the invalidation subscription is live (entries are trusted only then).
    subscribed: AtomicBool,
    /// When the store last failed, as milliseconds since `started`; 0 for never.
    last_failure_ms: AtomicU64,
    /// When a lookup last reached the store, as milliseconds since `started`: no entry is
    /// younger (written on cache misses only).
    last_fetch_ms: AtomicU64,
    /// When the invalidation subscription went down, as milliseconds since `started`; 0 while
    /// it is live.
    unsubscribed_ms: AtomicU64,
    started: Instant,
    cfg: CacheConfig,
}

impl Cache {
    pub fn new(cfg: CacheConfig) -> Cache {
        Cache {
            keys: ReadThrough::new(cfg),
            projects: ReadThrough::new(cfg),
            subscribed: AtomicBool::new(false),
            last_failure_ms: AtomicU64::new(0),
            last_fetch_ms: AtomicU64::new(0),
            unsubscribed_ms: AtomicU64::new(0),
            started: Instant::now(),
            cfg,
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// Whether stale entries may answer: always, unless the subscription has been down longer
    /// than `max_unsubscribed`. Read on every request: the clock only while it is down.
    fn stale_allowed(&self) -> bool {
        let down = self.unsubscribed_ms.load(Ordering::Relaxed);
        match self.cfg.max_unsubscribed {
            Some(max) if down != 0 => self.now_ms().saturating_sub(down) < max.as_millis() as u64,
            _ => true,
        }
    }

    /// Whether this replica can still answer anything useful while the store fails: some entry
    /// is young enough to be served stale.
    pub fn can_serve_stale(&self) -> bool {
        let fetched = self.last_fetch_ms.load(Ordering::Relaxed);
        fetched != 0
            && self.stale_allowed()
            && self.now_ms().saturating_sub(fetched) < self.cfg.max_stale.as_millis() as u64
    }

    fn recently_failed(&self) -> bool {
        // Checked on every request: the clock is read only after a failure.
        let at = self.last_failure_ms.load(Ordering::Relaxed);
        at != 0
            && (self.started.elapsed().as_millis() as u64).saturating_sub(at)
                < STALE_RETRY_AFTER.as_millis() as u64
    }

    fn note<V>(&self, result: &Result<Lookup<V>, Arc<StoreError>>) {
        match result {
            Err(e) if e.is_unavailable() => {
                self.last_failure_ms.store(self.now_ms(), Ordering::Relaxed);
            }
            Ok(l) if l.outcome == Outcome::Miss => {
                self.last_fetch_ms.store(self.now_ms(), Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// The key with this credential hash, and its owner.
    pub async fn principal(
        &self,
        store: &Store,
        hash: &KeyHash,
    ) -> Result<Lookup<Principal>, Arc<StoreError>> {
        let trusted = self.subscribed.load(Ordering::Acquire);
        let r = self
            .keys
            .get(
                hash,
                trusted,
                self.recently_failed(),
                self.stale_allowed(),
                || store.resolve_key(hash),
            )
            .await;
        self.note(&r);
        r
    }

    /// A project of an org, with its members.
    pub async fn project(
        &self,
        store: &Store,
        org: &OrgId,
        id: &ProjectId,
    ) -> Result<Lookup<Project>, Arc<StoreError>> {
        let trusted = self.subscribed.load(Ordering::Acquire);
        let key = (org.clone(), id.clone());
        let r = self
            .projects
            .get(
                &key,
                trusted,
                self.recently_failed(),
                self.stale_allowed(),
                || store.project(org, id),
            )
            .await;
        self.note(&r);
        r
    }

    /// Applies one invalidation message.
    pub fn apply(&self, inv: &Invalidation) {
        match inv {
            Invalidation::Key(hash) => self.keys.remove(hash),
            Invalidation::User(user) => self
                .keys
                .invalidate(|_, s| s.value.as_ref().is_some_and(|p| &p.owner.id == user)),
            Invalidation::Project(org, id) => self.projects.remove(&(org.clone(), id.clone())),
        }
    }

    /// Drops everything (the subscription reconnected: messages may have been missed).
    pub fn clear(&self) {
        self.keys.invalidate(|_, _| true);
        self.projects.invalidate(|_, _| true);
    }

    pub fn set_subscribed(&self, live: bool) {
        self.subscribed.store(live, Ordering::Release);
        if live {
            self.unsubscribed_ms.store(0, Ordering::Relaxed);
        } else if self.unsubscribed_ms.load(Ordering::Relaxed) == 0 {
            self.unsubscribed_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }
}

/// How often the subscriber pings Redis to notice a dead subscription.
const SUBSCRIBER_PING_EVERY: Duration = Duration::from_secs(1);
/// The first pause between subscription attempts while Redis is down; it doubles up to
/// [`SUBSCRIBER_RETRY_MAX`], with up to a fifth added at random so replicas do not retry in step.
const SUBSCRIBER_RETRY_FIRST: Duration = Duration::from_millis(200);
/// The longest pause: while the subscription is down no entry counts as fresh, so the wait for
/// its return stays short.
const SUBSCRIBER_RETRY_MAX: Duration = Duration::from_secs(2);

/// Receives invalidations until `shutdown` turns true, reconnecting as needed. Each
/// (re)subscription clears the cache first; while unsubscribed, no entry counts as fresh. Logs
/// once when the subscription goes down and once when it is back, not once per attempt.
pub async fn subscribe(
    cache: Arc<Cache>,
    store: Store,
    invalidations: IntCounter,
    redis_errors: IntCounter,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut pause = SUBSCRIBER_RETRY_FIRST;
    let mut down = false;
    while !*shutdown.borrow() {
        let result = subscription(&cache, &store, &invalidations, &mut shutdown).await;
        if cache.is_subscribed() {
            pause = SUBSCRIBER_RETRY_FIRST; // it was live: start the backoff afresh
            down = false;
        }
        cache.set_subscribed(false);
        if let Err(e) = result {
            redis_errors.inc();
            // With Sentinel, the master may have moved: the next attempt asks again.
            store.rediscover();
            if !down {
                tracing::warn!(error = %e, "invalidation subscription down; cache entries count as stale until it is back");
                down = true;
            }
        }
        let jitter = pause.mul_f64(rand::random::<f64>() / 5.0);
        tokio::select! {
            _ = tokio::time::sleep(pause + jitter) => {}
            _ = shutdown.changed() => {}
        }
        pause = (pause * 2).min(SUBSCRIBER_RETRY_MAX);
    }
}

/// One subscription's life: returns when the connection fails or on shutdown.
async fn subscription(
    cache: &Cache,
    store: &Store,
    invalidations: &IntCounter,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), redis::RedisError> {
    let connect = async {
        let client = store.client().await.map_err(|e| match e {
            crate::store::StoreError::Unavailable(e) => e,
            other => std::io::Error::other(other.to_string()).into(),
        })?;
        client.get_async_pubsub().await
    };
    let pubsub = tokio::time::timeout(SUBSCRIBER_PING_EVERY, connect)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let (mut sink, mut stream) = pubsub.split();
    sink.psubscribe(store.channels()).await?;
    cache.clear();
    cache.set_subscribed(true);
    tracing::info!("invalidation subscription live");
    let mut ping = tokio::time::interval(SUBSCRIBER_PING_EVERY);
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into());
                };
                invalidations.inc();
                let text = String::from_utf8_lossy(msg.get_payload_bytes());
                match Invalidation::decode(&text) {
                    Some(inv) => cache.apply(&inv),
                    None => cache.clear(),
                }
            }
            _ = ping.tick() => {
                let pong = tokio::time::timeout(SUBSCRIBER_PING_EVERY, sink.ping::<redis::Value>()).await;
                pong.map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
