//! A key's whole life through the management API, checked on the data plane of two keygate
//! instances sharing one Redis: create → 200 → rename → new scopes forwarded upstream → revoke →
//! 401 on both within 100 ms → activate → 200 → rotate (both secrets during the grace period,
//! only the new one after) → revoke → delete → 404 in the API. Then the audit log tells the
//! story and usage was counted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::*;
use serde_json::json;

const PATH: &str = "/v1/projects/p1/predict";

/// The data plane's answer for `key`: "ok" for 200, else the error code.
async fn answer(addr: SocketAddr, key: &str) -> String {
    let (status, _, body) = get_with(addr, PATH, &[("apikey", key)]).await;
    if status == 200 {
        "ok".to_owned()
    } else {
        code(&body)
    }
}

/// Polls both instances until each answers `want` for `key`; returns the slower one's time.
async fn both(addrs: [SocketAddr; 2], key: &str, want: &str) -> Duration {
    let started = Instant::now();
    for addr in addrs {
        loop {
            if answer(addr, key).await == want {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{addr} never answered {want} (last: {})",
                answer(addr, key).await
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    started.elapsed()
}

#[tokio::test]
async fn a_key_lives_and_dies_through_the_api_on_two_instances() {
    let w = World::start().await;
    let second = w.second_gateway().await;
    let addrs = [w.gw.addr, second.addr];
    let (a, t) = (w.gw.admin, Some(BOOTSTRAP));

    let (s, created) = api(
        a,
        "POST",
        "/v1/keys",
        t,
        Some(
            json!({"name": "ci", "scopes": ["inference"], "expires_in": "1d", "user_id": "alice"}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let (first, id) = (
        created["secret"].as_str().unwrap().to_owned(),
        created["id"].as_str().unwrap().to_owned(),
    );
    both(addrs, &first, "ok").await;

    let (s, renamed) = api(
        a,
        "PATCH",
        &format!("/v1/keys/{id}"),
        t,
        Some(json!({"name": "ci runner"})),
    )
    .await;
    assert_eq!((s, renamed["name"].as_str()), (200, Some("ci runner")));

    // New scopes reach both instances' upstream requests (the identity headers are made when a
    // key is resolved, so an edit must drop them with the cached key).
    let (s, edited) = api(
        a,
        "PATCH",
        &format!("/v1/keys/{id}"),
        t,
        Some(json!({"scopes": ["inference", "models:read"]})),
    )
    .await;
    assert_eq!(s, 200, "{edited}");
    let scopes: Vec<&str> = edited["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(scopes.contains(&"models:read"), "{edited}");
    for addr in addrs {
        let started = Instant::now();
        loop {
            assert_eq!(answer(addr, &first).await, "ok");
            let seen = w.upstream.last().headers;
            if seen["x-keygate-scopes"] == scopes.join(" ").as_str() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_millis(100),
                "{addr} still forwards {:?}",
                seen["x-keygate-scopes"]
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    assert_eq!(
        api(a, "POST", &format!("/v1/keys/{id}/revoke"), t, None)
            .await
            .0,
        200
    );
    let took = both(addrs, &first, "key_revoked").await;
    assert!(
        took < Duration::from_millis(100),
        "revocation took {took:?}"
    );
    assert_eq!(
        api(a, "POST", &format!("/v1/keys/{id}/activate"), t, None)
            .await
            .0,
        200
    );
    both(addrs, &first, "ok").await;

    // Rotation: the new secret works at once, the old one until the grace period ends.
    let (s, rotated) = api(
        a,
        "POST",
        &format!("/v1/keys/{id}/rotate"),
        t,
        Some(json!({"grace_period": "2s"})),
    )
    .await;
    assert_eq!(s, 200, "{rotated}");
    let second_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(second_secret, first);
    assert_eq!(rotated["id"], id.as_str(), "same key, new secret");
    both(addrs, &second_secret, "ok").await;
    for addr in addrs {
        assert_eq!(answer(addr, &first).await, "ok", "old secret during grace");
    }
    let grace_ends = rotated["previous_expires_at"].as_u64().unwrap();
    let now = keygate::model::unix_now();
    tokio::time::sleep(Duration::from_secs(grace_ends.saturating_sub(now) + 1)).await;
    both(addrs, &first, "key_rotated").await;
    both(addrs, &second_secret, "ok").await;
    // Shown masked with the new secret's ends, never the secret.
    let (_, shown) = api(a, "GET", &format!("/v1/keys/{id}"), t, None).await;
    assert!(shown.get("secret").is_none());
    assert!(
        shown["display"]
            .as_str()
            .unwrap()
            .ends_with(&second_secret[second_secret.len() - 4..])
    );

    // Usage is written in batches (every 100 ms in the test config).
    let what = "8 uses and a last use are written";
    eventually(
        what,
        Duration::from_secs(2),
        Duration::from_millis(20),
        || async {
            let (_, shown) = api(a, "GET", &format!("/v1/keys/{id}"), t, None).await;
            let counted = shown["request_count"].as_u64().unwrap();
            match counted >= 8 && shown["last_used_at"].as_u64().is_some() {
                true => Ok(()),
                false => Err(format!("request_count {counted}")),
            }
        },
    )
    .await;

    assert_eq!(
        api(a, "POST", &format!("/v1/keys/{id}/revoke"), t, None)
            .await
            .0,
        200
    );
    let took = both(addrs, &second_secret, "key_revoked").await;
    assert!(
        took < Duration::from_millis(100),
        "revocation took {took:?}"
    );
    assert_eq!(
        api(a, "DELETE", &format!("/v1/keys/{id}"), t, None).await.0,
        204
    );
    let (s, v) = api(a, "GET", &format!("/v1/keys/{id}"), t, None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
    for secret in [&first, &second_secret] {
        both(addrs, secret, "invalid_api_key").await;
    }

    // The audit log tells the story, newest first, with who did it.
    let (s, log) = api(a, "GET", "/v1/audit?org_id=acme&limit=8", t, None).await;
    assert_eq!(s, 200, "{log}");
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "key.delete",
            "key.revoke",
            "key.rotate",
            "key.activate",
            "key.revoke",
            "key.set_scopes",
            "key.rename",
            "key.create",
        ]
    );
    let newest = &log["items"][0];
    assert_eq!(newest["actor"], "bootstrap");
    assert_eq!(newest["target"], format!("key:{id}"));
    assert_eq!(newest["request_id"].as_str().unwrap().len(), 32);
    assert!(
        !log.to_string().contains(&first[3..]) && !log.to_string().contains(&second_secret[3..])
    );
    // The next page continues where this one ended.
    let before = log["next_before"].as_str().unwrap();
    let (_, older) = api(
        a,
        "GET",
        &format!("/v1/audit?org_id=acme&before={before}&limit=500"),
        t,
        None,
    )
    .await;
    let older = older["items"].as_array().unwrap();
    assert!(!older.is_empty() && older.iter().all(|e| e["id"].as_str().unwrap() < before));
}

#[tokio::test]
async fn rotating_again_stops_the_older_secret_at_once_and_revoked_keys_cannot_rotate() {
    let w = World::start().await;
    let (a, t) = (w.gw.admin, Some(BOOTSTRAP));
    let rotate = |grace: &'static str| {
        let path = format!("/v1/keys/{}/rotate", w.keys.alice_id);
        async move { api(a, "POST", &path, t, Some(json!({ "grace_period": grace }))).await }
    };
    let (s, one) = rotate("1h").await;
    assert_eq!(s, 200, "{one}");
    let one = one["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        answer(w.gw.addr, &w.keys.alice).await,
        "ok",
        "within the hour"
    );
    let (_, two) = rotate("1h").await;
    let two = two["secret"].as_str().unwrap().to_owned();
    let addrs = [w.gw.addr, w.gw.addr];
    both(addrs, &w.keys.alice, "invalid_api_key").await;
    both(addrs, &one, "ok").await;
    both(addrs, &two, "ok").await;
    // No body at all: the old secret stops at once.
    let (s, three) = api(
        a,
        "POST",
        &format!("/v1/keys/{}/rotate", w.keys.alice_id),
        t,
        None,
    )
    .await;
    assert_eq!(s, 200);
    both(addrs, &two, "key_rotated").await;
    both(addrs, three["secret"].as_str().unwrap(), "ok").await;

    let (s, v) = rotate("31d").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("invalid_field"))
    );
    assert!(v["message"].as_str().unwrap().contains("grace_period"));
    let path = format!("/v1/keys/{}/revoke", w.keys.alice_id);
    assert_eq!(api(a, "POST", &path, t, None).await.0, 200);
    let (s, v) = rotate("0s").await;
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("key_revoked")));
}

#[tokio::test]
async fn usage_batches_span_script_calls_and_never_recreate_deleted_keys() {
    use keygate::model::KeyId;
    use keygate::store::usage::Used;
    let w = World::start().await;
    let (_, first) = new_key(&w.store, &w.gw.config, "bob", &["predict"], &[]).await;
    let (_, last) = new_key(&w.store, &w.gw.config, "bob", &["predict"], &[]).await;
    // 600 entries: three script calls of up to 256 keys; only the first and the last exist.
    let used = |key: KeyId, requests| Used {
        org: keygate::model::OrgId::from("acme"),
        key,
        requests,
        last_used: 1_900_000_000,
    };
    let mut batch = vec![used(first.clone(), 3)];
    batch.extend((1..599).map(|i| used(KeyId::from(format!("key_gone{i}")), 1)));
    batch.push(used(last.clone(), 7));
    w.store.add_usage(&batch).await.unwrap();

    let first = w.store.key(&first).await.unwrap();
    let last = w.store.key(&last).await.unwrap();
    assert_eq!((first.request_count, last.request_count), (3, 7));
    assert_eq!(last.last_used_at, Some(1_900_000_000));
    for i in [1, 300, 598] {
        let gone = w.store.key(&KeyId::from(format!("key_gone{i}"))).await;
        assert!(gone.is_err(), "usage re-created key_gone{i}");
    }

    // A later batch adds to the count, and an older use never moves `last_used_at` back.
    // Counts stay exact integers beyond Lua's 14 printed digits.
    let big = 1 << 50;
    let mut older = used(last.grant.id.clone(), big);
    older.last_used = 1_800_000_000;
    w.store.add_usage(&[older]).await.unwrap();
    let last = w.store.key(&last.grant.id).await.unwrap();
    assert_eq!(last.request_count, 7 + big);
    assert_eq!(last.last_used_at, Some(1_900_000_000));
}
