//! The request path end to end: keygate in process, a real Redis, a real upstream.

use crate::harness::*;
use http::StatusCode;
use keygate::model::*;

#[tokio::test]
async fn forwards_with_identity_and_never_leaks_credentials() {
    let w = World::start().await;
    let (status, headers, body) = get_with(
        w.gw.addr,
        "/v1/projects/p1/predict?x=1",
        &[
            ("apikey", &w.keys.alice),
            ("apisecret", "not-for-upstream"),
            ("x-keygate-user-id", "spoofed"),
            ("x-keygate-scopes", "*"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-port", "1"),
            ("forwarded", "for=6.6.6.6"),
            ("x-keygate-admin", "1"),
            ("keep-alive", "timeout=5"),
            ("connection", "x-drop-me"),
            ("x-drop-me", "hop"),
            ("x-request-id", "req-123"),
            // Headers that change a request's meaning behind keygate, or claim an identity.
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-envoy-original-path", "/admin"),
            ("x-http-method-override", "DELETE"),
            ("x-method-override", "DELETE"),
            ("x-consumer-id", "someone-else"),
            ("x-authenticated-userid", "root"),
            ("x-remote-user", "root"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(&body[..], b"{\"ok\":true}");
    assert_eq!(headers["x-request-id"], "req-123");
    assert!(
        !headers.contains_key("x-hop-secret"),
        "hop-by-hop response headers are removed"
    );

    let seen = w.upstream.last();
    assert_eq!(
        seen.path_and_query, "/v1/projects/p1/predict?x=1",
        "the authorised path, unchanged"
    );
    let h = &seen.headers;
    for secret_header in [
        "apikey",
        "apisecret",
        "authorization",
        "x-api-key",
        "x-drop-me",
        "x-forwarded-port",
        "forwarded",
        "x-keygate-admin",
        "keep-alive",
        "x-original-url",
        "x-rewrite-url",
        "x-envoy-original-path",
        "x-http-method-override",
        "x-method-override",
        "x-consumer-id",
        "x-authenticated-userid",
        "x-remote-user",
    ] {
        assert!(
            !h.contains_key(secret_header),
            "{secret_header} reached the upstream"
        );
    }
    assert!(
        !format!("{h:?}").contains(&w.keys.alice[3..20]),
        "the secret is nowhere upstream"
    );
    assert_eq!(h["x-keygate-key-id"], w.keys.alice_id.as_str());
    assert_eq!(h["x-keygate-user-id"], "alice");
    assert_eq!(h["x-keygate-org-id"], "acme");
    assert_eq!(h["x-keygate-project-id"], "p1");
    assert_eq!(h["x-keygate-role"], "member");
    assert_eq!(h["x-keygate-scopes"], "models:read predict");
    assert_eq!(h["x-request-id"], "req-123");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], w.gw.addr.to_string().as_str());
    assert_eq!(h.get_all("x-keygate-user-id").iter().count(), 1);

    // An absolute-form request line: the upstream gets the origin form of the same path.
    let req = format!(
        "GET http://api.example/v1/projects/p1/predict?y=2 HTTP/1.1\r\nhost: api.example\r\n\
         apikey: {}\r\nconnection: close\r\n\r\n",
        w.keys.alice
    );
    let (status, text) = raw(w.gw.addr, &req).await;
    assert_eq!(status, 200, "{text}");
    let seen = w.upstream.last();
    assert_eq!(seen.path_and_query, "/v1/projects/p1/predict?y=2");
    assert_eq!(seen.headers["x-forwarded-host"], "api.example");
}

#[tokio::test]
async fn every_credential_header_form_is_accepted() {
    let w = World::start().await;
    let k = &w.keys.alice;
    let bearer = format!("Bearer {k}");
    let key_scheme = format!("Key {k}");
    let forms: [(&str, &str); 4] = [
        ("apikey", k),
        ("x-api-key", k),
        ("authorization", &bearer),
        ("Authorization", &key_scheme),
    ];
    for (name, value) in forms {
        let (status, _, body) = get_with(w.gw.addr, "/v1/projects/p1/x", &[(name, value)]).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body:?}");
    }
    // Base path of the upstream URL is prepended; query-parameter projects work.
    let (status, _, _) = get_with(w.gw.addr, "/v1/models/list", &[("apikey", k)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(w.upstream.last().path_and_query, "/base/v1/models/list");
    let (status, _, _) = get_with(w.gw.addr, "/inference?endpoint_id=p1", &[("apikey", k)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(w.upstream.last().headers["x-keygate-project-id"], "p1");
}

#[tokio::test]
async fn legacy_pairs_resolve_like_keys() {
    let w = World::start().await;
    let new = keygate::store::keys::NewKey {
        org_id: None,
        user_id: UserId::from("alice"),
        name: "old system".into(),
        scopes: vec![keygate::model::Scope::new("predict")],
        project_ids: vec![],
        expires_at: None,
    };
    let rec = w
        .store
        .import_legacy("LEGACY-ID-1", "legacy-secret-1", new)
        .await
        .unwrap();
    let ok = get_with(
        w.gw.addr,
        "/v1/projects/p1/x",
        &[("apikey", "LEGACY-ID-1"), ("apisecret", "legacy-secret-1")],
    )
    .await;
    assert_eq!(ok.0, StatusCode::OK);
    assert_eq!(
        w.upstream.last().headers["x-keygate-key-id"],
        rec.grant.id.as_str()
    );
    let bad = get_with(
        w.gw.addr,
        "/v1/projects/p1/x",
        &[("apikey", "LEGACY-ID-1"), ("apisecret", "wrong-secret")],
    )
    .await;
    assert_eq!(
        (bad.0, code(&bad.2).as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_api_key")
    );
}

#[tokio::test]
async fn every_refusal_has_its_status_and_code_and_reaches_no_upstream() {
    let w = World::start().await;
    let (disabled_key, _) = new_key(&w.store, &w.gw.config, "bob", &["predict"], &[]).await;
    let (expired_key, expired_id) = new_key(&w.store, &w.gw.config, "bob", &["predict"], &[]).await;
    let (revoked_key, revoked_id) = new_key(&w.store, &w.gw.config, "bob", &["predict"], &[]).await;
    w.store
        .set_key_status(&revoked_id, KeyStatus::Revoked)
        .await
        .unwrap();
    // Expiry in the past, written straight into Redis (the API refuses to create one).
    w.redis.cmd(&[
        "HSET",
        &format!("kg:{{acme}}:key:{expired_id}"),
        "expires_at",
        &(unix_now() - 1).to_string(),
    ]);
    let (gus_to_be, _) = new_key(&w.store, &w.gw.config, "alice", &["predict"], &[]).await;
    // Alice's key with its last (checksum) character changed.
    let (body, last) = w.keys.alice.split_at(w.keys.alice.len() - 1);
    let malformed = format!("{body}{}", if last == "x" { "y" } else { "x" });
    let unknown = w.gw.config.keys.generate();

    let k = &w.keys;
    // (what, path, headers, status, code)
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "no key",
            "/v1/projects/p1/x",
            vec![],
            401,
            "missing_api_key",
        ),
        (
            "malformed",
            "/v1/projects/p1/x",
            vec![("apikey", &malformed)],
            401,
            "invalid_api_key",
        ),
        (
            "unknown",
            "/v1/projects/p1/x",
            vec![("apikey", &unknown)],
            401,
            "invalid_api_key",
        ),
        (
            "two keys",
            "/v1/projects/p1/x",
            vec![("apikey", &k.alice), ("x-api-key", &k.bob)],
            400,
            "conflicting_credentials",
        ),
        (
            "revoked",
            "/v1/projects/pub/x",
            vec![("apikey", &revoked_key)],
            401,
            "key_revoked",
        ),
        (
            "expired",
            "/v1/projects/pub/x",
            vec![("apikey", &expired_key)],
            401,
            "key_expired",
        ),
        (
            "other org",
            "/v1/projects/p1/x",
            vec![("apikey", &k.gina)],
            403,
            "org_mismatch",
        ),
        (
            "stranger to p2",
            "/v1/projects/p2/x",
            vec![("apikey", &k.alice)],
            403,
            "project_access_denied",
        ),
        (
            "restricted key",
            "/v1/projects/pub/x",
            vec![("apikey", &k.alice_p1_only)],
            403,
            "key_project_mismatch",
        ),
        (
            "no such project",
            "/v1/projects/nope/x",
            vec![("apikey", &k.alice)],
            404,
            "project_not_found",
        ),
        (
            "scope",
            "/v1/models/x",
            vec![("apikey", &k.bob)],
            403,
            "insufficient_scope",
        ),
        (
            "member on admin route",
            "/v1/admin/x",
            vec![("apikey", &k.alice)],
            403,
            "insufficient_scope",
        ),
        (
            "no route",
            "/v2/elsewhere",
            vec![("apikey", &k.alice)],
            404,
            "route_not_found",
        ),
        (
            "no project id",
            "/inference",
            vec![("apikey", &k.alice)],
            400,
            "missing_project",
        ),
        (
            "two project ids",
            "/inference?endpoint_id=p1&endpoint_id=p2",
            vec![("apikey", &k.alice)],
            400,
            "ambiguous_project",
        ),
        (
            "upgrade",
            "/v1/projects/p1/x",
            vec![
                ("apikey", &k.alice),
                ("upgrade", "websocket"),
                ("connection", "upgrade"),
            ],
            400,
            "upgrade_not_supported",
        ),
    ];
    for (name, path, headers, status, want) in &cases {
        let (got, res_headers, body) = get_with(w.gw.addr, path, headers).await;
        assert_eq!(
            (got.as_u16(), code(&body).as_str()),
            (*status, *want),
            "{name}"
        );
        assert_eq!(res_headers["content-type"], "application/json", "{name}");
        assert!(res_headers.contains_key("x-request-id"), "{name}");
        assert_eq!(
            res_headers.contains_key("www-authenticate"),
            *status == 401,
            "{name}: a 401, and only a 401, carries a challenge"
        );
    }
    // Disabling the owner, or demoting them to guest, stops their keys at once.
    w.store
        .update_member(
            &OrgId::from("acme"),
            &UserId::from("bob"),
            None,
            Some(UserStatus::Disabled),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let r = get_with(
        w.gw.addr,
        "/v1/projects/pub/x",
        &[("apikey", &disabled_key)],
    )
    .await;
    assert_eq!((r.0.as_u16(), code(&r.2).as_str()), (401, "user_disabled"));
    w.store
        .update_member(
            &OrgId::from("acme"),
            &UserId::from("alice"),
            Some(Role::Guest),
            None,
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let r = get_with(w.gw.addr, "/v1/projects/p1/x", &[("apikey", &gus_to_be)]).await;
    assert_eq!(
        (r.0.as_u16(), code(&r.2).as_str()),
        (403, "guest_not_allowed")
    );
    assert!(
        w.upstream.requests().is_empty(),
        "no refused request reached the upstream"
    );
}

#[tokio::test]
async fn malformed_keys_never_touch_redis() {
    let w = World::start().await;
    let before = w.redis.calls("evalsha") + w.redis.calls("eval");
    for bad in [
        "kg_short",
        "kg_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "sk-something-else",
        "",
    ] {
        let (status, _, _) = get_with(w.gw.addr, "/v1/projects/p1/x", &[("apikey", bad)]).await;
        assert_eq!(status.as_u16(), 401);
    }
    assert_eq!(w.redis.calls("evalsha") + w.redis.calls("eval"), before);
    // A well-formed unknown key costs one lookup, then sits in the negative cache. (The very
    // first lookup also loads the script, so warm it with another key first.)
    get_with(
        w.gw.addr,
        "/v1/projects/p1/x",
        &[("apikey", &w.gw.config.keys.generate())],
    )
    .await;
    let before = w.redis.calls("evalsha") + w.redis.calls("eval");
    let unknown = w.gw.config.keys.generate();
    for _ in 0..5 {
        let (status, _, body) =
            get_with(w.gw.addr, "/v1/projects/p1/x", &[("apikey", &unknown)]).await;
        assert_eq!(
            (status.as_u16(), code(&body).as_str()),
            (401, "invalid_api_key")
        );
    }
    assert_eq!(w.redis.calls("evalsha") + w.redis.calls("eval"), before + 1);
}

#[tokio::test]
async fn path_tricks_never_reach_another_route() {
    let w = World::start().await;
    let key = &w.keys.alice; // allowed on p1 only
    let tricks = [
        "/v1/projects/p1/../p2/x",
        "/v1/projects/p1/%2e%2e/p2/x",
        "/v1/projects/p1/%2E%2E/p2/x",
        "/v1/projects/p1%2f..%2fp2/x",
        "/v1/projects//p2/x",
        "//v1/projects/p2/x",
        "/v1/projects/p1/..\\p2/x",
        "/v1/projects/p1;/../p2/x",
        "/v1/projects/p1/%252e%252e/p2",
        "/v1/projects/./p1/x",
    ];
    for path in tricks {
        let req =
            format!("GET {path} HTTP/1.1\r\nhost: x\r\napikey: {key}\r\nconnection: close\r\n\r\n");
        let (status, text) = raw(w.gw.addr, &req).await;
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains("invalid_path"), "{path}: {text}");
    }
    assert!(w.upstream.requests().is_empty());
}

#[tokio::test]
async fn connect_and_oversized_bodies_are_refused() {
    let w = World::start().await;
    let (status, text) = raw(
        w.gw.addr,
        "CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405, "{text}");
    let req = format!(
        "POST /v1/projects/p1/x HTTP/1.1\r\nhost: x\r\napikey: {}\r\ncontent-length: 200000000\r\n\r\n",
        w.keys.alice
    );
    let (status, text) = raw(w.gw.addr, &req).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("payload_too_large"));
    assert!(w.upstream.requests().is_empty());
}

#[tokio::test]
async fn upstream_failures_map_to_502_and_504() {
    let w = World::start().await;
    let (status, _, body) = get_with(w.gw.addr, "/dead/x", &[("apikey", &w.keys.alice)]).await;
    assert_eq!(
        (status.as_u16(), code(&body).as_str()),
        (502, "upstream_unavailable")
    );
    // The response timeout is 1 s, checked every 100 ms; the upstream answers after 3 s.
    let started = std::time::Instant::now();
    let (status, _, body) = get_with(
        w.gw.addr,
        "/v1/projects/p1/slow?ms=3000",
        &[("apikey", &w.keys.alice)],
    )
    .await;
    assert_eq!(
        (status.as_u16(), code(&body).as_str()),
        (504, "upstream_timeout")
    );
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(1) && took < std::time::Duration::from_secs(2),
        "timed out after {took:?}"
    );
}

#[tokio::test]
async fn public_routes_need_no_key_and_still_strip_credentials() {
    let w = World::start().await;
    let (status, _, _) = get(w.gw.addr, "/status").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get_with(w.gw.addr, "/status", &[("apikey", &w.keys.alice)]).await;
    assert_eq!(status, StatusCode::OK);
    let seen = w.upstream.last();
    assert!(!seen.headers.contains_key("apikey"));
    assert!(!seen.headers.contains_key("x-keygate-key-id"));
}

#[tokio::test]
async fn ops_endpoints_report_health_and_metrics() {
    let w = World::start().await;
    get_with(w.gw.addr, "/v1/projects/p1/x", &[("apikey", &w.keys.alice)]).await;
    get_with(w.gw.addr, "/v1/projects/p1/x", &[("apikey", &w.keys.alice)]).await;
    get(w.gw.addr, "/v1/projects/p1/x").await;
    get(w.gw.addr, "/v1/projects/p1/x").await;
    get(w.gw.addr, "/nowhere").await;
    let (status, _, _) = get(w.gw.admin, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = get(w.gw.admin, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let (status, headers, body) = get(w.gw.admin, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8_lossy(&body);
    for needle in [
        r#"keygate_requests_total{outcome="forwarded",route="projects",status_class="2xx"} 2"#,
        r#"keygate_requests_total{outcome="missing_api_key",route="projects",status_class="4xx"} 2"#,
        r#"keygate_requests_total{outcome="route_not_found",route="none",status_class="4xx"} 1"#,
        r#"keygate_key_lookups_total{result="miss"} 1"#,
        r#"keygate_key_lookups_total{result="hit"} 1"#,
        r#"keygate_cache_entries{kind="keys"} 1"#,
        "keygate_request_duration_seconds_bucket",
        "keygate_upstream_duration_seconds_bucket",
        "keygate_open_connections",
        "keygate_invalidations_received_total",
        "keygate_redis_errors_total 0",
        "keygate_key_store_reachable 1",
        "keygate_invalidations_live 1",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(!text.contains(&w.keys.alice[3..20]), "no secret in metrics");
    let (status, _, body) = get(w.gw.admin, "/nope").await;
    assert_eq!(
        (status.as_u16(), code(&body).as_str()),
        (404, "route_not_found")
    );
}

#[tokio::test]
async fn a_redis_that_lost_the_lookup_script_is_handed_it_again() {
    let w = World::start().await;
    let ok = |key: String| async move {
        let (status, _, _) = get_with(w.gw.addr, "/v1/projects/p1/x", &[("apikey", &key)]).await;
        status.as_u16()
    };
    assert_eq!(ok(w.keys.alice.clone()).await, 200);
    // What a Redis restart or failover does to scripts.
    assert_eq!(w.redis.cmd(&["SCRIPT", "FLUSH"]), "+OK\r\n");
    let (loads, lookups) = (w.redis.calls("script|load"), w.redis.calls("evalsha"));
    let (key, _) = new_key(&w.store, &w.gw.config, "alice", &["predict"], &[]).await;
    assert_eq!(ok(key).await, 200);
    // Refused once (NOSCRIPT), loaded, asked again.
    assert_eq!(w.redis.calls("script|load"), loads + 1);
    assert_eq!(w.redis.calls("evalsha"), lookups + 2);
}

#[tokio::test]
async fn a_corrupt_key_record_fails_closed() {
    let w = World::start().await;
    // Each key's record is broken one way: each is refused, and the lookup names what is wrong.
    // A missing list never reads as an empty one: a key restricted to p1 that lost its
    // `project_ids` must not be let into every project.
    let cases: [(&[&str], &str); 8] = [
        (&["HDEL", "project_ids"], "project_ids"),
        (&["HDEL", "scopes"], "scopes"),
        (&["HDEL", "expires_at"], "expires_at"),
        (&["HSET", "status", "bogus"], "status"),
        (&["HSET", "user_id", "ghost"], "user_id"), // an owner that does not exist
        (&["HDEL", "hash"], "hash"),
        // A quote and a backslash: read whole, then judged by its field.
        (&["HSET", "scopes", "predict \"é\\"], "scopes"),
        // A NUL, which separates the values in the lookup's answer: refused, not read as two.
        (&["HSET", "scopes", "predict\0admin"], "key"),
    ];
    for (change, field) in cases {
        let (key, id) = new_key(&w.store, &w.gw.config, "alice", &["predict"], &["p1"]).await;
        let record = format!("kg:{{acme}}:key:{id}");
        let mut cmd = vec![change[0], &record];
        cmd.extend(&change[1..]);
        w.redis.cmd(&cmd);
        let (status, _, body) = get_with(w.gw.addr, "/v1/projects/p1/x", &[("apikey", &key)]).await;
        assert_eq!(
            (status.as_u16(), code(&body).as_str()),
            (500, "internal_error"),
            "{field}"
        );
        match w
            .store
            .resolve_key(&keygate::credential::hash_key(&key))
            .await
        {
            Err(keygate::store::StoreError::Corrupt(bad)) => assert_eq!(bad.0, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    // An intact key is served: only the corrupt records are refused. The lookup does not read
    // the owner's name, so free text there changes nothing.
    w.redis
        .cmd(&["HSET", "kg:account:alice", "name", "Zoë \"the\" \\ admin"]);
    let (status, _, _) =
        get_with(w.gw.addr, "/v1/projects/p1/x", &[("apikey", &w.keys.alice)]).await;
    assert_eq!(status.as_u16(), 200);
    assert_eq!(w.upstream.requests().len(), 1);
}

#[tokio::test]
async fn slow_idle_and_silent_clients_are_cut_off_after_the_header_read_timeout() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let redis = Redis::start();
    let upstream = Upstream::start().await;
    let toml = config_toml(&redis, &upstream, "")
        .replace("[limits]\n", "[limits]\nheader_read_timeout = \"300ms\"\n");
    let gw = Gateway::start(&toml, std::path::Path::new(".")).await;

    /// Reads until the server closes the connection; returns what it sent and when it closed.
    async fn until_closed(s: &mut tokio::net::TcpStream) -> (String, Instant) {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("the server closed the connection");
            match read {
                Ok(0) | Err(_) => return (String::from_utf8_lossy(&out).into(), Instant::now()),
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    // A head that never ends (slowloris).
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /status HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let (sent, closed) = until_closed(&mut slow).await;
    assert!(
        closed - started >= Duration::from_millis(300),
        "closed early"
    );
    assert!(!sent.contains(" 200 "), "{sent}");

    // A keep-alive connection served once, then idle.
    let mut idle = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"GET /status HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = Instant::now();
    let (sent, closed) = until_closed(&mut idle).await;
    assert!(sent.starts_with("HTTP/1.1 200 "), "{sent}");
    assert!(
        closed - answered >= Duration::from_millis(300),
        "closed early"
    );
    assert!(upstream.requests().len() == 1);

    // A connection that never sends a byte: it must not hold a connection slot for ever.
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    let (sent, closed) = until_closed(&mut silent).await;
    assert_eq!(sent, "");
    assert!(
        closed - started >= Duration::from_millis(300),
        "closed early"
    );

    // An HTTP/2 connection that starts no request (the preface and SETTINGS, then nothing) and
    // acknowledges nothing, so that it cannot finish closing gracefully either.
    let mut idle_h2 = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    idle_h2
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let (_, closed) = until_closed(&mut idle_h2).await;
    assert!(
        closed - started >= Duration::from_millis(600),
        "closed early"
    );

    // A stream in flight for longer than that (three events 300 ms apart) is not cut.
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let io = TokioIo::new(tokio::net::TcpStream::connect(gw.addr).await.unwrap());
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/status/sse", gw.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let started = Instant::now();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert_eq!(
        String::from_utf8_lossy(&body).matches("data:").count(),
        3,
        "{body:?}"
    );
}

/// What the data plane refuses before anything reaches an upstream: methods a route does not
/// take (with `Allow`), `TRACE` everywhere, a missing or doubled `Host`, and a body the client
/// broke. A caller without a key learns nothing but 401, whatever else is wrong.
#[tokio::test]
async fn methods_hosts_and_broken_bodies_are_refused_in_order() {
    let w = World::start().await;
    let key = &w.keys.alice;
    let head = |method: &str, path: &str, extra: &str| {
        format!("{method} {path} HTTP/1.1\r\nhost: x\r\n{extra}content-length: 0\r\n\r\n")
    };
    let with_key = format!("apikey: {key}\r\n");
    for (name, request, status, code, allow) in [
        (
            "TRACE",
            head("TRACE", "/v1/projects/p1/x", &with_key),
            405,
            "method_not_allowed",
            Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        ),
        (
            "TRACE without a key",
            head("TRACE", "/v1/projects/p1/x", ""),
            401,
            "missing_api_key",
            None,
        ),
        (
            "POST on a GET route",
            head("POST", "/v1/models/x", &with_key),
            405,
            "method_not_allowed",
            Some("GET, HEAD"),
        ),
        (
            "upgrade without a key",
            head(
                "GET",
                "/v1/projects/p1/x",
                "upgrade: websocket\r\nconnection: upgrade\r\n",
            ),
            401,
            "missing_api_key",
            None,
        ),
        (
            "no Host",
            format!("GET /v1/projects/p1/x HTTP/1.1\r\n{with_key}\r\n"),
            400,
            "invalid_host",
            None,
        ),
        (
            "two Hosts",
            format!("GET /v1/projects/p1/x HTTP/1.1\r\nhost: a\r\nhost: b\r\n{with_key}\r\n"),
            400,
            "invalid_host",
            None,
        ),
    ] {
        let (got, text) = raw(w.gw.addr, &request).await;
        assert_eq!(got, status, "{name}: {text}");
        assert!(text.contains(code), "{name}: {text}");
        let allowed = text.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("allow: ")
                .map(str::to_owned)
        });
        assert_eq!(
            allowed.as_deref(),
            allow.map(str::to_ascii_lowercase).as_deref(),
            "{name}"
        );
    }
    assert!(w.upstream.requests().is_empty(), "nothing was forwarded");

    // A chunked body the client breaks (a chunk size that is no number) is the client's error.
    let broken = format!(
        "POST /v1/projects/p1/x HTTP/1.1\r\nhost: x\r\n{with_key}transfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"
    );
    let (got, text) = raw(w.gw.addr, &broken).await;
    assert_eq!(got, 400, "{text}");
    assert!(text.contains("invalid_body"), "{text}");
    assert_eq!(
        w.gw.metric(r#"keygate_requests_total{outcome="upstream_unavailable""#)
            .await,
        0.0,
        "not counted as an upstream failure"
    );
}

/// The head limits are exact and answered in keygate's shape: a head just under
/// `limits.max_header_bytes` (16 KiB in the test config) is served, one just over gets 431, and a
/// request target over `limits.max_uri_bytes` (8 KiB) gets 414.
#[tokio::test]
async fn request_heads_are_measured_exactly() {
    let w = World::start().await;
    let head = |pad: usize, path: &str| {
        let start = format!(
            "GET {path} HTTP/1.1\r\nhost: x\r\napikey: {}\r\nx-pad: ",
            w.keys.alice
        );
        let end = "\r\n\r\n";
        let fill = pad.saturating_sub(start.len() + end.len());
        format!("{start}{}{end}", "a".repeat(fill))
    };
    let limit = 16 * 1024;
    let (status, text) = raw(w.gw.addr, &head(limit - 64, "/v1/projects/p1/x")).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = raw(w.gw.addr, &head(limit + 64, "/v1/projects/p1/x")).await;
    assert_eq!(status, 431, "{text}");
    assert!(text.contains("headers_too_large"), "{text}");
    let long = format!("/v1/projects/p1/x?q={}", "b".repeat(9000));
    let (status, text) = raw(w.gw.addr, &head(0, &long)).await;
    assert_eq!(status, 414, "{text}");
    assert!(text.contains("uri_too_long"), "{text}");
    assert_eq!(
        w.upstream.requests().len(),
        1,
        "only the head within the limits was forwarded"
    );
}

/// A client that keeps presenting keys that do not exist is refused (429, with Retry-After)
/// before its requests cost a store lookup, whatever key it sends next; other clients are not.
/// Behind a trusted proxy, the client is the address the configured header names.
#[tokio::test]
async fn a_client_guessing_keys_is_refused_without_store_lookups() {
    let w = World::start().await;
    let toml = config_toml(&w.redis, &w.upstream, "")
        .replace("[limits]\n", "[limits]\nfailed_auth_per_client = 5\n")
        .replace(
            "[server]\n",
            "[server]\nclient_address_header = \"x-forwarded-for\"\n",
        );
    let gw = Gateway::start(&toml, std::path::Path::new(".")).await;
    let path = "/v1/projects/p1/x";
    let guesser = [("x-forwarded-for", "203.0.113.7")];
    for _ in 0..5 {
        let guess = gw.config.keys.generate();
        let (status, _, body) =
            get_with(gw.addr, path, &[guesser[0], ("apikey", guess.as_str())]).await;
        assert_eq!(
            (status.as_u16(), code(&body).as_str()),
            (401, "invalid_api_key")
        );
    }
    let lookups = w.redis.calls("evalsha");
    for key in [gw.config.keys.generate(), w.keys.alice.clone()] {
        let (status, headers, body) =
            get_with(gw.addr, path, &[guesser[0], ("apikey", key.as_str())]).await;
        assert_eq!(
            (status.as_u16(), code(&body).as_str()),
            (429, "too_many_failed_attempts")
        );
        let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
    }
    assert_eq!(
        w.redis.calls("evalsha"),
        lookups,
        "refused without a store lookup"
    );
    assert_eq!(
        gw.metric(r#"keygate_auth_throttled_total{reason="client"}"#)
            .await,
        2.0
    );
    // Another client, behind the same proxy, is served.
    let other = [
        ("x-forwarded-for", "203.0.113.8"),
        ("apikey", w.keys.alice.as_str()),
    ];
    let (status, _, _) = get_with(gw.addr, path, &other).await;
    assert_eq!(status.as_u16(), 200);
}

/// A declared body that stops arriving is answered 408 after `limits.body_idle_timeout`, and its
/// upstream request is aborted, instead of holding both until the upstream's own timeout.
#[tokio::test]
async fn a_body_that_stops_arriving_gets_408() {
    let w = World::start().await;
    let toml = config_toml(&w.redis, &w.upstream, "")
        .replace("[limits]\n", "[limits]\nbody_idle_timeout = \"300ms\"\n");
    let gw = Gateway::start(&toml, std::path::Path::new(".")).await;
    let trickle = format!(
        "POST /v1/projects/p1/x HTTP/1.1\r\nhost: x\r\napikey: {}\r\ncontent-length: 100\r\n\r\n0123456789",
        w.keys.alice
    );
    let started = std::time::Instant::now();
    let (status, text) = raw(gw.addr, &trickle).await;
    assert_eq!(status, 408, "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    let waited = started.elapsed();
    assert!(
        (std::time::Duration::from_millis(300)..std::time::Duration::from_secs(2))
            .contains(&waited),
        "{waited:?}"
    );
    assert_eq!(
        gw.metric(r#"keygate_requests_total{outcome="request_timeout""#)
            .await,
        1.0
    );
}

/// A route can answer errors in the shape its clients read: the Clarifai JSON clients read only
/// `status.code`, GraphQL clients only `errors`. The status and the challenge do not change.
#[tokio::test]
async fn a_route_answers_errors_in_its_clients_style() {
    let w = World::start().await;
    let toml = config_toml(&w.redis, &w.upstream, "").replace(
        "scopes = [\"models:read\"]\n",
        "scopes = [\"models:read\"]\nerror_style = \"clarifai\"\n",
    );
    let gw = Gateway::start(&toml, std::path::Path::new(".")).await;
    let json = |body: &bytes::Bytes| serde_json::from_slice::<serde_json::Value>(body).unwrap();
    let (status, headers, body) = get(gw.addr, "/v1/models/x").await;
    assert_eq!(status.as_u16(), 401);
    assert!(headers.contains_key("www-authenticate"));
    assert_eq!(json(&body)["status"]["code"], 11009, "API key not found");
    let (status, _, body) = get_with(gw.addr, "/v1/models/x", &[("apikey", &w.keys.bob)]).await;
    assert_eq!(status.as_u16(), 403);
    assert_eq!(json(&body)["status"]["code"], 11007, "insufficient scopes");
    // Other routes keep keygate's shape.
    let (status, _, body) = get(gw.addr, "/v1/projects/p1/x").await;
    assert_eq!(
        (status.as_u16(), code(&body).as_str()),
        (401, "missing_api_key")
    );
}

/// An answer given before the body was read (a 401 to an upload) says `Connection: close`, and
/// the close lingers: the client can finish writing its body and then read the answer, instead
/// of a reset that loses it (what Node's fetch reported as `write EPIPE`).
#[tokio::test]
async fn an_early_answer_to_an_upload_reaches_a_client_still_writing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = World::start().await;
    let size = 4 << 20;
    let stream = tokio::net::TcpStream::connect(w.gw.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /v1/projects/p1/x HTTP/1.1\r\nhost: x\r\napikey: {}\r\ncontent-length: {size}\r\n\r\n",
        w.gw.config.keys.generate()
    );
    let upload = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..size / chunk.len() {
            writer.write_all(&chunk).await?;
        }
        writer.flush().await
    });
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        reader.read_to_end(&mut answer),
    )
    .await
    .expect("the connection closes")
    .expect("read the answer, not a reset");
    upload
        .await
        .unwrap()
        .expect("the whole body was written without a reset");
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 401"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert!(w.upstream.requests().is_empty());
}

/// An admin demoted to member keeps a `*` key; upstreams are told what it may do now, not what
/// it once could: every resource the deployment knows but org administration.
#[tokio::test]
async fn upstreams_receive_the_effective_scopes_of_a_capped_key() {
    let w = World::start().await;
    let path = "/v1/projects/pub/x";
    answers(w.gw.addr, path, &w.keys.ada, "ok").await;
    assert_eq!(w.upstream.last().headers["x-keygate-scopes"], "*");
    w.store
        .update_member(
            &OrgId::from("acme"),
            &UserId::from("ada"),
            Some(Role::Member),
            None,
        )
        .await
        .unwrap();
    w.gw.sync_invalidations(&w.redis).await;
    answers(w.gw.addr, path, &w.keys.ada, "ok").await;
    let seen = w.upstream.last();
    assert_eq!(seen.headers["x-keygate-role"], "member");
    assert_eq!(
        seen.headers["x-keygate-scopes"],
        "datasets:* keys:* models:* predict:* projects:*"
    );
}
