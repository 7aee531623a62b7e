//! The management API's key endpoints and their rules, end to end through the data plane.

use crate::harness::*;
use serde_json::{Value, json};

/// Waits until the data plane answers a key on p1 with `want` ("ok" or an error code).
async fn eventually(w: &World, key: &str, want: &str) {
    answers(w.gw.addr, "/v1/projects/p1/x", key, want).await
}

/// A member's key that may manage their own keys.
async fn manager(w: &World, user: &str) -> String {
    new_key(
        &w.store,
        &w.gw.config,
        user,
        &["keys:manage", "predict"],
        &[],
    )
    .await
    .0
}

#[tokio::test]
async fn callers_must_present_a_management_key() {
    let w = World::start().await;
    let a = w.gw.admin;
    let (s, v) = api(a, "GET", "/v1/keys", None, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (s, _) = api(a, "GET", "/v1/keys", Some("kg_not-a-key"), None).await;
    assert_eq!(s, 401);
    let (s, headers, _) = get(a, "/v1/keys").await;
    assert_eq!(
        (s.as_u16(), headers.get("www-authenticate")),
        (401, Some(&r#"Bearer realm="keygate""#.parse().unwrap())),
        "a 401 names the scheme to authenticate with"
    );
    let (s, v) = api(a, "GET", "/v1/keys", Some(&w.keys.alice), None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "a data-plane key cannot manage"
    );
    let (s, _) = api(
        a,
        "GET",
        "/v1/nothing",
        Some(&manager(&w, "alice").await),
        None,
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn a_member_manages_their_own_keys_through_the_whole_lifecycle() {
    let w = World::start().await;
    let (a, me) = (w.gw.admin, manager(&w, "alice").await);
    let t = Some(me.as_str());

    let (s, created) = api(
        a,
        "POST",
        "/v1/keys",
        t,
        Some(json!({"name": "laptop", "scopes": ["inference"], "expires_in": "30d"})),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["scopes"], json!(["predict"]));
    assert_eq!(created["user_id"], "alice");
    eventually(&w, &secret, "ok").await;

    // Shown masked afterwards, never the secret.
    let (s, shown) = api(a, "GET", &format!("/v1/keys/{id}"), t, None).await;
    assert_eq!(s, 200);
    assert!(shown.get("secret").is_none() && !shown.to_string().contains(&secret[3..]));
    assert!(shown["display"].as_str().unwrap().contains('…'));
    let (s, listed) = api(a, "GET", "/v1/keys", t, None).await;
    assert_eq!(s, 200);
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == id.as_str())
    );
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["user_id"] == "alice"),
        "only own keys"
    );

    let (s, renamed) = api(
        a,
        "PATCH",
        &format!("/v1/keys/{id}"),
        t,
        Some(json!({"name": "old laptop", "scopes": ["predict", "models:read"]})),
    )
    .await;
    assert_eq!((s, renamed["name"].as_str()), (200, Some("old laptop")));
    assert_eq!(renamed["scopes"], json!(["models:read", "predict"]));

    let (s, v) = api(a, "DELETE", &format!("/v1/keys/{id}"), t, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("key_not_revoked"))
    );
    assert_eq!(
        api(a, "POST", &format!("/v1/keys/{id}/revoke"), t, None)
            .await
            .0,
        200
    );
    eventually(&w, &secret, "key_revoked").await;
    assert_eq!(
        api(a, "POST", &format!("/v1/keys/{id}/activate"), t, None)
            .await
            .0,
        200
    );
    eventually(&w, &secret, "ok").await;
    assert_eq!(
        api(a, "POST", &format!("/v1/keys/{id}/revoke"), t, None)
            .await
            .0,
        200
    );
    assert_eq!(
        api(a, "DELETE", &format!("/v1/keys/{id}"), t, None).await.0,
        204
    );
    assert_eq!(
        api(a, "GET", &format!("/v1/keys/{id}"), t, None).await.0,
        404
    );
    eventually(&w, &secret, "invalid_api_key").await;
}

#[tokio::test]
async fn refusals_name_the_rule_or_field() {
    let w = World::start().await;
    let (a, me) = (w.gw.admin, manager(&w, "alice").await);
    let t = Some(me.as_str());
    let create = |body: Value| api(a, "POST", "/v1/keys", t, Some(body));
    let (s, v) = create(json!({"name": "x", "scopes": ["admin"]})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "keys:manage cannot mint admin: {v}"
    );
    let (s, v) = create(json!({"name": "x", "scopes": ["predict"], "expires_in": "30s"})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("invalid_field"))
    );
    assert!(v["message"].as_str().unwrap().contains("expires_in"));
    let (s, v) = create(json!({"name": "x", "scopes": ["predict"], "expires_in": "30weeks"})).await;
    assert_eq!(s, 422, "beyond the 25-week maximum: {v}");
    let (s, v) = create(json!({"name": "x", "scopes": ["Not A Scope"]})).await;
    assert_eq!(s, 422);
    assert!(v["message"].as_str().unwrap().contains("scopes"));
    let (s, v) = create(json!({"name": "x", "scopes": ["predict"], "colour": "red"})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    assert!(v["message"].as_str().unwrap().contains("colour"));
    // A refused PATCH changes nothing (the name is not written when the scopes are refused).
    let path = format!("/v1/keys/{}", w.keys.alice_id);
    let (s, _) = api(
        a,
        "PATCH",
        &path,
        Some(w.keys.ada.as_str()),
        Some(json!({"name": "renamed", "scopes": ["admin"]})),
    )
    .await;
    assert_eq!(s, 422, "admin is beyond a member's ceiling");
    let (_, shown) = api(a, "GET", &path, Some(w.keys.ada.as_str()), None).await;
    assert_eq!(shown["name"], "alice's key");
    let (s, _) = create(json!({"name": "x", "scopes": ["predict"], "user_id": "bob"})).await;
    assert_eq!(s, 404, "a member cannot create keys for others");
    let (s, _) = create(json!({"name": "x", "scopes": ["predict"], "user_id": "gina"})).await;
    assert_eq!(s, 404, "nor see other orgs' users");
    // Other people's keys are not found, in the org and across orgs.
    let (_, bob_id) = new_key(&w.store, &w.gw.config, "bob", &["predict"], &[]).await;
    assert_eq!(
        api(a, "GET", &format!("/v1/keys/{bob_id}"), t, None)
            .await
            .0,
        404
    );
    assert_eq!(
        api(a, "POST", &format!("/v1/keys/{bob_id}/revoke"), t, None)
            .await
            .0,
        404
    );
    let gina = manager(&w, "gina").await;
    assert_eq!(
        api(
            a,
            "GET",
            &format!("/v1/keys/{}", w.keys.alice_id),
            Some(&gina),
            None
        )
        .await
        .0,
        404
    );
    // Guests can do nothing, even with an old management key.
    w.store
        .update_member(
            &keygate::model::OrgId::from("acme"),
            &keygate::model::UserId("alice".into()),
            Some(keygate::model::Role::Guest),
            None,
        )
        .await
        .unwrap();
    let (s, _) = api(a, "GET", "/v1/keys", t, None).await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn an_admin_manages_every_key_of_the_org() {
    let w = World::start().await;
    let (a, ada) = (w.gw.admin, w.keys.ada.clone());
    let t = Some(ada.as_str());
    let (s, v) = api(
        a,
        "POST",
        "/v1/keys",
        t,
        Some(json!({"name": "for bob", "scopes": ["inference"], "user_id": "bob"})),
    )
    .await;
    assert_eq!((s, v["user_id"].as_str()), (201, Some("bob")), "{v}");
    let (s, v) = api(
        a,
        "POST",
        "/v1/keys",
        t,
        Some(json!({"name": "too much", "scopes": ["all"], "user_id": "bob"})),
    )
    .await;
    assert_eq!(
        s, 422,
        "a member's key cannot exceed the member ceiling: {v}"
    );
    let (s, all) = api(a, "GET", "/v1/keys?limit=2", t, None).await;
    assert_eq!(s, 200);
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    assert_eq!(all["next_offset"], 2);
    assert!(all["total"].as_u64().unwrap() >= 5, "every acme key: {all}");
    let (_, bobs) = api(a, "GET", "/v1/keys?user_id=bob&status=active", t, None).await;
    assert!(
        bobs["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["user_id"] == "bob" && k["status"] == "active")
    );
    let (s, _) = api(
        a,
        "POST",
        &format!("/v1/keys/{}/revoke", w.keys.alice_id),
        t,
        None,
    )
    .await;
    assert_eq!(s, 200);
    eventually(&w, &w.keys.alice, "key_revoked").await;
    let (s, _) = api(a, "GET", "/v1/keys?status=lost", t, None).await;
    assert_eq!(s, 422);
}

/// Whoever holds a leaked secret can stop it, with no management key: the secret is the
/// credential. The revocation reaches the data plane and the audit log names the holder.
#[tokio::test]
async fn a_secret_revokes_its_own_key_without_a_token() {
    let w = World::start().await;
    let a = w.gw.admin;
    let (leaked, id) = new_key(&w.store, &w.gw.config, "bob", &["predict"], &[]).await;
    eventually(&w, &leaked, "project_access_denied").await; // bob is no member of p1: usable, refused there
    let revoke = |body: Value| api(a, "POST", "/v1/keys/revoke", None, Some(body));
    let (s, v) = revoke(json!({ "secret": leaked })).await;
    assert_eq!((s, v), (200, json!({ "id": id, "status": "revoked" })));
    eventually(&w, &leaked, "key_revoked").await;

    let (s, log) = api(
        a,
        "GET",
        "/v1/audit?org_id=acme&limit=1",
        Some(BOOTSTRAP),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let entry = &log["items"][0];
    assert_eq!(
        (
            entry["action"].as_str(),
            entry["actor"].as_str(),
            entry["key_id"].as_str()
        ),
        (Some("key.revoke"), Some("secret-holder"), Some(id.as_str()))
    );

    let (other, _) = new_key(&w.store, &w.gw.config, "bob", &["predict"], &[]).await;
    w.store.delete_key(&id).await.unwrap();
    for (body, status, code) in [
        (json!({}), 400, "invalid_json"),
        (json!({ "secret": "kg_nonsense" }), 422, "invalid_field"),
        (json!({ "secret": leaked }), 404, "not_found"),
    ] {
        let (s, v) = revoke(body.clone()).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(
            !v.to_string().contains(&leaked[3..]),
            "the secret is never echoed"
        );
    }
    eventually(&w, &other, "project_access_denied").await; // another key stays untouched
}

/// The API takes what its schema says and nothing else: an object (not an array read
/// positionally), no `null` standing for a field left out, and only the methods it documents.
#[tokio::test]
async fn bodies_must_be_objects_without_nulls_and_methods_must_be_the_apis() {
    let w = World::start().await;
    let (a, t) = (w.gw.admin, Some(BOOTSTRAP));
    let id = w.keys.alice_id.as_str();
    let key = format!("/v1/keys/{id}?org_id=acme");
    for (method, path, body) in [
        ("PATCH", key.as_str(), json!(["new-name", ["predict"]])),
        ("PATCH", key.as_str(), json!({ "name": null })),
        (
            "PATCH",
            "/v1/users/bob?org_id=acme",
            json!({ "status": null }),
        ),
        ("POST", "/v1/keys?org_id=acme", json!("a string")),
    ] {
        let (s, v) = api(a, method, path, t, Some(body.clone())).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("invalid_json")),
            "{body}"
        );
    }
    let (s, shown) = api(a, "GET", &key, t, None).await;
    assert_eq!(
        (s, shown["name"].as_str()),
        (200, Some("alice's key")),
        "nothing changed"
    );
    let (s, headers, _) = send(
        http::Request::builder()
            .method("TRACE")
            .uri(format!("http://{a}/v1/keys"))
            .header("authorization", format!("Bearer {BOOTSTRAP}"))
            .body(http_body_util::Full::default())
            .unwrap(),
    )
    .await;
    let allow = headers.get("allow").map(|v| v.to_str().unwrap());
    assert_eq!(
        (s.as_u16(), allow),
        (405, Some("GET, POST, PUT, PATCH, DELETE"))
    );
}

/// A key's project restriction can be edited after creation; the data plane follows at once.
#[tokio::test]
async fn a_keys_project_restriction_can_be_changed() {
    let w = World::start().await;
    let (a, t) = (w.gw.admin, Some(w.keys.ada.as_str()));
    let (key, id) = new_key(&w.store, &w.gw.config, "bob", &["predict"], &[]).await;
    let public = "/v1/projects/pub/x";
    answers(w.gw.addr, public, &key, "ok").await;
    let patch = |projects: Value| {
        let path = format!("/v1/keys/{id}");
        async move {
            api(
                a,
                "PATCH",
                &path,
                t,
                Some(json!({ "project_ids": projects })),
            )
            .await
        }
    };
    let (s, v) = patch(json!(["p2"])).await;
    assert_eq!((s, v["project_ids"].clone()), (200, json!(["p2"])));
    answers(w.gw.addr, public, &key, "key_project_mismatch").await;
    answers(w.gw.addr, "/v1/projects/p2/x", &key, "ok").await;
    let (s, v) = patch(json!(["no-such-project"])).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, _) = patch(json!([])).await;
    assert_eq!(s, 200);
    answers(w.gw.addr, public, &key, "ok").await;
}

/// A key's scopes must name resources the deployment knows: a typo is refused, not stored as a
/// scope that grants nothing.
#[tokio::test]
async fn a_key_with_an_unknown_scope_is_refused() {
    let w = World::start().await;
    let body = json!({"name": "typo", "scopes": ["modles:read"], "user_id": "bob"});
    let (s, v) = api(
        w.gw.admin,
        "POST",
        "/v1/keys?org_id=acme",
        Some(BOOTSTRAP),
        Some(body),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("invalid_field")),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().contains("modles:read"),
        "{v}"
    );
}

#[tokio::test]
async fn the_management_api_can_have_a_tls_listener_of_its_own() {
    let redis = Redis::start();
    let upstream = Upstream::start().await;
    // The private key is removed when the test ends, pass or fail.
    let dir = temp_dir("keygate-management-");
    let (tls, cert) = tls_files(&dir);
    let toml = format!(
        "{}\n[management]\naddr = \"127.0.0.1:0\"\n{tls}\n",
        config_toml(&redis, &upstream, "")
    );
    let gw = Gateway::start(&toml, std::path::Path::new(".")).await;
    let management = gw.management.expect("a management listener");
    let over_tls = |path: &'static str| {
        let cert = cert.clone();
        async move {
            let io = hyper_util::rt::TokioIo::new(
                tls_handshake(management, &cert, b"http/1.1").await.unwrap(),
            );
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            let req = http::Request::get(path)
                .header("host", "localhost")
                .header("authorization", format!("Bearer {BOOTSTRAP}"))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            sender.send_request(req).await.unwrap()
        }
    };
    // The management API on its own listener, over TLS, never cached.
    let res = over_tls("/v1/orgs").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    // The operators' endpoints are not there, and the API is no longer on the admin listener.
    assert_eq!(over_tls("/metrics").await.status(), 404);
    assert_eq!(over_tls("/healthz").await.status(), 404);
    let (status, v) = api(gw.admin, "GET", "/v1/orgs", Some(BOOTSTRAP), None).await;
    assert_eq!(status, 404);
    assert!(
        v["message"].as_str().unwrap().contains("[management]"),
        "{v}"
    );
    assert_eq!(get(gw.admin, "/healthz").await.0, 200);
    assert_eq!(get(gw.admin, "/metrics").await.0, 200);
}
