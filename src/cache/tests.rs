use std::sync::atomic::AtomicUsize;

use super::*;

fn cfg(max_entries: usize) -> CacheConfig {
    CacheConfig {
        max_entries,
        ttl: Duration::from_secs(60),
        negative_ttl: Duration::from_secs(5),
        max_stale: Duration::from_secs(300),
        max_unsubscribed: None,
    }
}

fn down() -> StoreError {
    StoreError::Timeout
}

/// Looks `k` up with a fetch that counts its calls and answers `answer`.
async fn get(
    c: &ReadThrough<u32, String>,
    k: u32,
    calls: &AtomicUsize,
    answer: Result<Option<&str>, ()>,
) -> Result<Lookup<String>, Arc<StoreError>> {
    c.get(&k, true, false, true, || async {
        calls.fetch_add(1, Ordering::SeqCst);
        answer.map(|v| v.map(str::to_owned)).map_err(|_| down())
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_share_one_fetch() {
    let c = ReadThrough::<u32, String>::new(cfg(100));
    let calls = AtomicUsize::new(0);
    let lookups = (0..50).map(|_| {
        c.get(&7, true, false, true, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(Some("v".to_owned()))
        })
    });
    let results = futures_util::future::join_all(lookups).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().unwrap().value.as_deref().map(String::as_str) == Some("v"))
    );
}

#[tokio::test(start_paused = true)]
async fn positive_and_negative_ttls() {
    let c = ReadThrough::<u32, String>::new(cfg(100));
    let calls = AtomicUsize::new(0);
    assert_eq!(
        get(&c, 1, &calls, Ok(Some("a"))).await.unwrap().outcome,
        Outcome::Miss
    );
    assert_eq!(
        get(&c, 1, &calls, Ok(Some("a"))).await.unwrap().outcome,
        Outcome::Hit
    );
    assert_eq!(
        get(&c, 2, &calls, Ok(None)).await.unwrap().outcome,
        Outcome::Miss
    );
    assert_eq!(
        get(&c, 2, &calls, Ok(None)).await.unwrap().outcome,
        Outcome::Negative
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(
        get(&c, 1, &calls, Ok(Some("a"))).await.unwrap().outcome,
        Outcome::Hit
    );
    assert_eq!(
        get(&c, 2, &calls, Ok(None)).await.unwrap().outcome,
        Outcome::Miss,
        "negative TTL passed"
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(
        get(&c, 1, &calls, Ok(Some("a"))).await.unwrap().outcome,
        Outcome::Miss,
        "positive TTL passed"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_until_max_stale() {
    let c = ReadThrough::<u32, String>::new(cfg(100));
    let calls = AtomicUsize::new(0);
    get(&c, 1, &calls, Ok(Some("a"))).await.unwrap();
    tokio::time::advance(Duration::from_secs(120)).await;
    let l = get(&c, 1, &calls, Err(())).await.unwrap();
    assert_eq!(
        (l.outcome, l.value.as_deref().map(String::as_str)),
        (Outcome::Stale, Some("a"))
    );
    // Within the retry pause after a failure, stale entries are served without a fetch.
    let before = calls.load(Ordering::SeqCst);
    let l = c
        .get(&1, true, true, true, || async {
            Err::<Option<String>, _>(down())
        })
        .await
        .unwrap();
    assert_eq!(l.outcome, Outcome::Stale);
    assert_eq!(calls.load(Ordering::SeqCst), before);
    tokio::time::advance(Duration::from_secs(181)).await;
    assert!(
        get(&c, 1, &calls, Err(())).await.is_err(),
        "past max_stale the store's failure shows"
    );
    // A key known to be unknown stays unknown while the store fails, until its negative
    // entry would have expired anyway; past that, and for keys never seen, the failure shows.
    get(&c, 2, &calls, Ok(None)).await.unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    let untrusted_and_failing = c
        .get(&2, false, false, true, || async {
            Err::<Option<String>, _>(down())
        })
        .await
        .unwrap();
    assert_eq!(
        (untrusted_and_failing.outcome, untrusted_and_failing.value),
        (Outcome::Stale, None)
    );
    tokio::time::advance(Duration::from_secs(4)).await;
    assert!(get(&c, 2, &calls, Err(())).await.is_err());
    assert!(get(&c, 3, &calls, Err(())).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn untrusted_entries_are_refetched() {
    let c = ReadThrough::<u32, String>::new(cfg(100));
    let calls = AtomicUsize::new(0);
    get(&c, 1, &calls, Ok(Some("a"))).await.unwrap();
    let l = c
        .get(&1, false, false, true, || async {
            Ok(Some("b".to_owned()))
        })
        .await
        .unwrap();
    assert_eq!(
        (l.outcome, l.value.as_deref().map(String::as_str)),
        (Outcome::Miss, Some("b"))
    );
}

#[tokio::test(start_paused = true)]
async fn the_map_stays_bounded() {
    let c = ReadThrough::<u32, String>::new(cfg(100));
    let calls = AtomicUsize::new(0);
    for k in 0..1000 {
        get(&c, k, &calls, Ok(None)).await.unwrap();
        assert!(c.len() <= 100, "{} entries after {k}", c.len());
    }
    assert!(
        c.len() >= 80,
        "eviction keeps most of the bound: {}",
        c.len()
    );
}

#[test]
fn the_count_follows_every_change() {
    let c = ReadThrough::<u32, String>::new(cfg(100));
    let same = |c: &ReadThrough<u32, String>| assert_eq!(c.len(), c.entries.len());
    for k in 0..150 {
        c.insert(k % 120, None); // 30 of them replace an entry
        same(&c);
    }
    c.remove(&5);
    c.remove(&5);
    same(&c);
    c.invalidate(|k, _| k % 2 == 0);
    same(&c);
    c.invalidate(|_, _| true);
    same(&c);
    assert!(c.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_fetch_that_raced_an_invalidation_is_not_cached() {
    let c = ReadThrough::<u32, String>::new(cfg(100));
    let l = c
        .get(&1, true, false, true, || async {
            c.remove(&1); // an invalidation arrives while Redis answers
            Ok(Some("old".to_owned()))
        })
        .await
        .unwrap();
    assert_eq!(l.value.as_deref().map(String::as_str), Some("old"));
    assert!(c.is_empty());
}

fn principal(owner: &str, hash: u8) -> (KeyHash, Principal) {
    use crate::model::*;
    let user = Owner {
        id: UserId::from(owner),
        org_id: OrgId::from("o"),
        role: Role::Member,
        status: UserStatus::Active,
    };
    let key = KeyGrant {
        id: KeyId::from(format!("k{hash}")),
        org_id: OrgId::from("o"),
        user_id: user.id.clone(),
        scopes: vec![],
        project_ids: vec![],
        status: KeyStatus::Active,
        created_at: 0,
        expires_at: None,
        hash: KeyHash([hash; 32]),
        previous_hash: None,
        previous_expires_at: None,
    };
    (KeyHash([hash; 32]), Principal::new(key, user))
}

#[tokio::test(start_paused = true)]
async fn invalidations_drop_the_right_entries() {
    let cache = Cache::new(cfg(100));
    for (owner, h) in [("alice", 1), ("alice", 2), ("bob", 3)] {
        let (hash, p) = principal(owner, h);
        cache
            .keys
            .get(&hash, true, false, true, || async { Ok(Some(p)) })
            .await
            .unwrap();
    }
    assert_eq!(cache.keys.len(), 3);
    cache.apply(&Invalidation::User(crate::model::UserId("alice".into())));
    assert_eq!(cache.keys.len(), 1);
    cache.apply(&Invalidation::Key(KeyHash([3; 32])));
    assert!(cache.keys.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failure_is_recent_for_the_retry_pause_only() {
    let cache = Cache::new(cfg(10));
    assert!(!cache.recently_failed());
    // Checked within the same millisecond as the failure (this once underflowed).
    cache.note(&Err::<Lookup<()>, _>(Arc::new(down())));
    assert!(cache.recently_failed());
    tokio::time::advance(STALE_RETRY_AFTER + Duration::from_millis(5)).await;
    assert!(!cache.recently_failed());
    // Failures that are not Redis being unavailable do not pause lookups.
    let corrupt = StoreError::Corrupt(crate::store::codec::BadRecord("x"));
    let fresh = Cache::new(cfg(10));
    fresh.note(&Err::<Lookup<()>, _>(Arc::new(corrupt)));
    assert!(!fresh.recently_failed());
}

/// With `max_unsubscribed`, stale entries stop answering once the subscription has been down
/// that long, even within `max_stale`: the replica may have missed a revocation.
#[tokio::test(start_paused = true)]
async fn stale_serving_stops_when_the_subscription_is_down_too_long() {
    let cache = Cache::new(CacheConfig {
        max_unsubscribed: Some(Duration::from_secs(10)),
        ..cfg(100)
    });
    cache.set_subscribed(true);
    cache.note(&Ok::<_, Arc<StoreError>>(Lookup::<()> {
        value: None,
        outcome: Outcome::Miss,
    }));
    assert!(cache.can_serve_stale());
    cache.set_subscribed(false);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(cache.stale_allowed() && cache.can_serve_stale());
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(!cache.stale_allowed() && !cache.can_serve_stale());
    cache.set_subscribed(true);
    assert!(cache.stale_allowed(), "live again");
}
