//! Replicas sharing one Redis: changes made anywhere are seen everywhere within 100 ms, and a
//! Redis outage degrades to cached keys (until `max_stale`) and 503s, then recovers by itself.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::*;
use http::Request;
use http_body_util::Full;
use keygate::model::*;

/// Polls until a request with `key` gets `want`; returns how long that took.
async fn time_until(addr: SocketAddr, path: &str, key: &str, want: u16) -> Duration {
    let started = Instant::now();
    let what = format!("{path} answers {want}");
    eventually(
        &what,
        Duration::from_secs(5),
        Duration::from_millis(2),
        || async {
            match get_with(addr, path, &[("apikey", key)]).await.0.as_u16() {
                status if status == want => Ok(()),
                status => Err(status.to_string()),
            }
        },
    )
    .await;
    started.elapsed()
}

async fn both_answer(addrs: [SocketAddr; 2], key: &str, want: u16) -> [Duration; 2] {
    let (a, b) = tokio::join!(
        time_until(addrs[0], "/v1/projects/pub/x", key, want),
        time_until(addrs[1], "/v1/projects/pub/x", key, want)
    );
    [a, b]
}

#[tokio::test]
async fn changes_on_one_replica_reach_the_other_within_100ms() {
    let w = World::start().await;
    let second = w.second_gateway().await;
    second.sync_invalidations(&w.redis).await;
    let addrs = [w.gw.addr, second.addr];
    let (key, id) = new_key(&w.store, &w.gw.config, "bob", &["predict"], &[]).await;
    w.gw.sync_invalidations(&w.redis).await;
    second.sync_invalidations(&w.redis).await;
    // Both replicas now hold the key in their hot caches.
    both_answer(addrs, &key, 200).await;
    both_answer(addrs, &key, 200).await;
    assert!(
        w.gw.metric("keygate_key_lookups_total{result=\"hit\"}")
            .await
            >= 1.0
    );

    w.store
        .set_key_status(&id, KeyStatus::Revoked)
        .await
        .unwrap();
    for t in both_answer(addrs, &key, 401).await {
        assert!(t < Duration::from_millis(100), "revocation took {t:?}");
    }
    w.store
        .set_key_status(&id, KeyStatus::Active)
        .await
        .unwrap();
    for t in both_answer(addrs, &key, 200).await {
        assert!(t < Duration::from_millis(100), "re-activation took {t:?}");
    }
    w.store
        .update_member(
            &OrgId::from("acme"),
            &UserId::from("bob"),
            None,
            Some(UserStatus::Disabled),
        )
        .await
        .unwrap();
    for t in both_answer(addrs, &key, 401).await {
        assert!(
            t < Duration::from_millis(100),
            "disabling the owner took {t:?}"
        );
    }
    w.store
        .update_member(
            &OrgId::from("acme"),
            &UserId::from("bob"),
            None,
            Some(UserStatus::Active),
        )
        .await
        .unwrap();
    both_answer(addrs, &key, 200).await;
    // Project changes propagate too: making `pub` private locks out non-members.
    w.store
        .set_project_visibility(
            &OrgId::from("acme"),
            &ProjectId::from("pub"),
            Visibility::Private,
        )
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        time_until(addrs[0], "/v1/projects/pub/x", &w.keys.alice, 403),
        time_until(addrs[1], "/v1/projects/pub/x", &w.keys.alice, 403)
    );
    assert!(
        a < Duration::from_millis(100) && b < Duration::from_millis(100),
        "{a:?} {b:?}"
    );
    // Deleting a revoked key: unknown everywhere.
    w.store
        .set_key_status(&id, KeyStatus::Revoked)
        .await
        .unwrap();
    w.store.delete_key(&id).await.unwrap();
    let (_, _, body) = get_with(addrs[1], "/v1/projects/pub/x", &[("apikey", &key)]).await;
    assert_eq!(code(&body), "invalid_api_key");
}

#[tokio::test]
async fn redis_outage_serves_cached_keys_until_max_stale_then_recovers() {
    let mut w = World::start().await;
    let path = "/v1/projects/p1/x";
    let (cold_key, _) = new_key(&w.store, &w.gw.config, "alice", &["predict"], &[]).await;
    w.gw.sync_invalidations(&w.redis).await;
    let (status, _, _) = get_with(w.gw.addr, path, &[("apikey", &w.keys.alice)]).await;
    assert_eq!(status.as_u16(), 200);

    w.redis.stop();
    let outage = Instant::now();
    // The cached key keeps working (max_stale is 3 s in the test config)...
    let (status, _, body) = get_with(w.gw.addr, path, &[("apikey", &w.keys.alice)]).await;
    assert_eq!(status.as_u16(), 200, "{body:?}");
    // ...an uncached one fails closed, with Retry-After.
    let (status, headers, body) = get_with(w.gw.addr, path, &[("apikey", &cold_key)]).await;
    assert_eq!(
        (status.as_u16(), code(&body).as_str()),
        (503, "key_store_unavailable")
    );
    assert_eq!(headers["retry-after"], "1");
    // Still ready: it serves cached keys (the body says so), so balancers keep sending.
    let (status, _, body) = get(w.gw.admin, "/readyz").await;
    let ready: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status.as_u16(), 200, "{ready}");
    assert_eq!(
        (ready["store"].as_str(), ready["serving"].as_str()),
        (Some("unreachable"), Some("stale"))
    );
    // The management API fails the same way.
    let (status, headers, body) = send(
        Request::get(format!("http://{}/v1/keys?org_id=acme", w.gw.admin))
            .header("authorization", format!("Bearer {BOOTSTRAP}"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status.as_u16(), code(&body).as_str()),
        (503, "key_store_unavailable")
    );
    assert_eq!(headers["retry-after"], "1");
    assert!(
        w.gw.metric("keygate_key_lookups_total{result=\"stale\"}")
            .await
            >= 1.0
    );
    assert!(w.gw.metric("keygate_redis_errors_total").await >= 1.0);
    // Past max_stale, the cached key fails closed as well.
    tokio::time::sleep(
        Duration::from_secs(3).saturating_sub(outage.elapsed()) + Duration::from_millis(200),
    )
    .await;
    let (status, _, body) = get_with(w.gw.addr, path, &[("apikey", &w.keys.alice)]).await;
    assert_eq!(
        (status.as_u16(), code(&body).as_str()),
        (503, "key_store_unavailable")
    );
    // Now it can serve nothing useful: not ready.
    let (status, _, body) = get(w.gw.admin, "/readyz").await;
    let ready: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status.as_u16(), ready["serving"].as_str()),
        (503, Some("nothing")),
        "{ready}"
    );

    // Redis comes back (with its data): keygate recovers without a restart.
    w.redis.restart();
    time_until(w.gw.addr, path, &w.keys.alice, 200).await;
    time_until(w.gw.addr, path, &cold_key, 200).await;
    let (status, _, _) = get(w.gw.admin, "/readyz").await;
    assert_eq!(status.as_u16(), 200);
}

#[tokio::test]
async fn a_redis_that_stops_answering_fails_closed_after_the_command_timeout() {
    let w = World::start().await;
    // One worker, so the warm-up below opens the Redis connection the test then uses.
    let toml = config_toml(&w.redis, &w.upstream, "").replace("workers = 2", "workers = 1");
    let gw = Gateway::start(&toml, std::path::Path::new(".")).await;
    let path = "/v1/projects/p1/x";
    let (warm, _) = new_key(&w.store, &gw.config, "alice", &["predict"], &[]).await;
    let (key, _) = new_key(&w.store, &gw.config, "alice", &["predict"], &[]).await;
    time_until(gw.addr, path, &warm, 200).await;

    w.redis.signal("-STOP");
    let asked = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        get_with(gw.addr, path, &[("apikey", &key)]),
    )
    .await;
    let waited = asked.elapsed();
    w.redis.signal("-CONT");
    let (status, _, body) = answer.expect("keygate answers while Redis hangs");
    assert_eq!(
        (status.as_u16(), code(&body).as_str()),
        (503, "key_store_unavailable")
    );
    // Bounded by the command timeout (300 ms in the test config), not by the OS or the client.
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "{waited:?}"
    );

    // Redis answers again, on the same connection: so does keygate.
    time_until(gw.addr, path, &key, 200).await;
}

/// After Redis restarts, the first lookup on each worker's old connection fails: it is asked
/// again on a new connection rather than answered 503 while Redis is up.
#[tokio::test]
async fn a_redis_restart_costs_no_request() {
    let mut w = World::start().await;
    // One worker, so the warm-up below opens the Redis connection the test then uses.
    let toml = config_toml(&w.redis, &w.upstream, "").replace("workers = 2", "workers = 1");
    let gw = Gateway::start(&toml, std::path::Path::new(".")).await;
    let path = "/v1/projects/p1/x";
    let (warm, _) = new_key(&w.store, &gw.config, "alice", &["predict"], &[]).await;
    let (cold, _) = new_key(&w.store, &gw.config, "alice", &["predict"], &[]).await;
    time_until(gw.addr, path, &warm, 200).await;

    w.redis.stop();
    w.redis.restart();
    let what = "the admin listener sees Redis again";
    eventually(
        what,
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async {
            match get(gw.admin, "/readyz").await.0.as_u16() {
                200 => Ok(()),
                status => Err(status.to_string()),
            }
        },
    )
    .await;
    let (status, _, body) = get_with(gw.addr, path, &[("apikey", &cold)]).await;
    assert_eq!(status.as_u16(), 200, "{body:?}");
}

/// Archiving a project refuses its requests on every replica within 100 ms, under load; it can
/// be restored; a project is deleted only once archived, and then it is gone.
#[tokio::test]
async fn an_archived_project_is_refused_everywhere_and_only_then_deleted() {
    let w = World::start().await;
    let second = w.second_gateway().await;
    let path = "/v1/projects/p1/x";
    let key = w.keys.alice.clone();
    let addrs = [w.gw.addr, second.addr];
    for addr in addrs {
        assert_eq!(answer(addr, path, &key).await, "ok");
    }
    let (a, t) = (w.gw.admin, Some(BOOTSTRAP));
    let (s, v) = api(a, "DELETE", "/v1/projects/p1?org_id=acme", t, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("project_not_archived"))
    );

    // Steady load on both replicas while the project is archived.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = addrs
        .iter()
        .map(|&addr| {
            let (stop, key) = (stop.clone(), key.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    get_with(addr, path, &[("apikey", &key)]).await;
                }
            })
        })
        .collect();
    let (s, v) = api(a, "POST", "/v1/projects/p1/archive?org_id=acme", t, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("archived")));
    let archived = Instant::now();
    for addr in addrs {
        answers(addr, path, &key, "project_archived").await;
    }
    let took = archived.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(took < Duration::from_millis(100), "{took:?}");

    let (s, _) = api(a, "POST", "/v1/projects/p1/restore?org_id=acme", t, None).await;
    assert_eq!(s, 200);
    answers(second.addr, path, &key, "ok").await;
    api(a, "POST", "/v1/projects/p1/archive?org_id=acme", t, None).await;
    let (s, _) = api(a, "DELETE", "/v1/projects/p1?org_id=acme", t, None).await;
    assert_eq!(s, 204);
    for addr in addrs {
        answers(addr, path, &key, "project_not_found").await;
    }
    // A key restricted to the deleted project stays restricted: refused on the others too.
    answers(
        w.gw.addr,
        "/v1/projects/pub/x",
        &w.keys.alice_p1_only,
        "key_project_mismatch",
    )
    .await;
}

/// With `cache.max_unsubscribed`, a replica cut off from Redis stops serving cached keys once its
/// invalidation subscription has been down that long, though `max_stale` is longer: it may have
/// missed revocations, and the deployment prefers failing closed.
#[tokio::test]
async fn a_replica_cut_off_fails_closed_after_max_unsubscribed() {
    let mut w = World::start().await;
    let toml = config_toml(&w.redis, &w.upstream, "")
        .replace("[cache]\n", "[cache]\nmax_unsubscribed = \"500ms\"\n");
    let gw = Gateway::start(&toml, std::path::Path::new(".")).await;
    let path = "/v1/projects/p1/x";
    time_until(gw.addr, path, &w.keys.alice, 200).await;
    w.redis.stop();
    let (status, _, _) = get_with(gw.addr, path, &[("apikey", &w.keys.alice)]).await;
    assert_eq!(status.as_u16(), 200, "served stale at first");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (status, _, body) = get_with(gw.addr, path, &[("apikey", &w.keys.alice)]).await;
    assert_eq!(
        (status.as_u16(), code(&body).as_str()),
        (503, "key_store_unavailable"),
        "max_stale (3 s) has not passed, max_unsubscribed has"
    );
    w.redis.restart();
}
