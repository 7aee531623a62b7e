//! The management API beyond keys: orgs, users, projects and members, legacy pairs (with their
//! sunset), and the OpenAPI document, walked operation by operation against the implementation.

use std::path::Path;

use crate::harness::*;
use serde_json::{Value, json};

fn err(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn orgs_are_created_by_the_bootstrap_token_only() {
    let w = World::start().await;
    let a = w.gw.admin;
    let (s, org) = api(
        a,
        "POST",
        "/v1/orgs",
        Some(BOOTSTRAP),
        Some(json!({"id": "initech", "name": "Initech"})),
    )
    .await;
    assert_eq!((s, org["name"].as_str()), (201, Some("Initech")));
    let (s, v) = api(
        a,
        "POST",
        "/v1/orgs",
        Some(BOOTSTRAP),
        Some(json!({"id": "initech"})),
    )
    .await;
    assert_eq!((s, err(&v)), (409, "already_exists"));
    let (s, v) = api(
        a,
        "POST",
        "/v1/orgs",
        Some(&w.keys.ada),
        Some(json!({"id": "mine"})),
    )
    .await;
    assert_eq!((s, err(&v)), (403, "forbidden"));
    let (_, all) = api(a, "GET", "/v1/orgs", Some(BOOTSTRAP), None).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    let (_, own) = api(a, "GET", "/v1/orgs", Some(&w.keys.ada), None).await;
    assert_eq!(
        own["items"],
        json!([{"id": "acme", "name": "Acme", "created_at": own["items"][0]["created_at"]}])
    );
}

#[tokio::test]
async fn admins_manage_users_and_their_keys_follow_at_once() {
    let w = World::start().await;
    let (a, ada) = (w.gw.admin, Some(w.keys.ada.as_str()));
    // Only the platform chooses ids: an org admin's new user gets one.
    let (s, v) = api(
        a,
        "POST",
        "/v1/users",
        ada,
        Some(json!({"id": "carl", "name": "Carl"})),
    )
    .await;
    assert_eq!((s, err(&v)), (403, "forbidden"));
    assert!(v["message"].as_str().unwrap().contains("invite"), "{v}");
    let (s, carl) = api(a, "POST", "/v1/users", ada, Some(json!({"name": "Carl"}))).await;
    assert_eq!(
        (s, carl["role"].as_str(), carl["org_id"].as_str()),
        (201, Some("member"), Some("acme"))
    );
    let carl_id = carl["id"].as_str().unwrap();
    assert!(carl_id.starts_with("u_"), "{carl}");
    let (s, v) = api(
        a,
        "POST",
        "/v1/users",
        ada,
        Some(json!({"name": "x", "role": "owner"})),
    )
    .await;
    assert_eq!((s, err(&v)), (400, "invalid_json"), "{v}");
    assert!(v["message"].as_str().unwrap().contains("owner"));
    let (s, v) = api(
        a,
        "POST",
        "/v1/users",
        ada,
        Some(json!({"name": "x", "org_id": "globex"})),
    )
    .await;
    assert_eq!(
        (s, err(&v)),
        (404, "not_found"),
        "another org does not exist for ada"
    );
    let (s, v) = api(
        a,
        "POST",
        "/v1/users",
        Some(BOOTSTRAP),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!((s, err(&v)), (422, "invalid_field"));
    assert!(v["message"].as_str().unwrap().contains("org_id"));

    let (s, users) = api(a, "GET", "/v1/users", ada, None).await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&carl_id) && !ids.contains(&"gina"), "{ids:?}");
    assert_eq!(api(a, "GET", "/v1/users/gina", ada, None).await.0, 404);

    // A member manages only their own keys: no user administration, but they may see themselves.
    let (alice_manager, _) = new_key(&w.store, &w.gw.config, "alice", &["keys:manage"], &[]).await;
    let m = Some(alice_manager.as_str());
    let (s, v) = api(a, "GET", "/v1/users", m, None).await;
    assert_eq!((s, err(&v)), (403, "forbidden"));
    assert_eq!(api(a, "GET", "/v1/users/alice", m, None).await.0, 200);
    assert_eq!(api(a, "GET", "/v1/users/bob", m, None).await.0, 404);
    let (s, _) = api(
        a,
        "PATCH",
        "/v1/users/alice",
        m,
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(s, 403, "no self-promotion");

    // Disabling bob, or making him a guest, stops his keys at once; re-enabling restores them.
    let path = "/v1/projects/p2/x";
    answers(w.gw.addr, path, &w.keys.bob, "ok").await;
    let (s, bob) = api(
        a,
        "PATCH",
        "/v1/users/bob",
        ada,
        Some(json!({"status": "disabled"})),
    )
    .await;
    assert_eq!((s, bob["status"].as_str()), (200, Some("disabled")));
    answers(w.gw.addr, path, &w.keys.bob, "user_disabled").await;
    api(
        a,
        "PATCH",
        "/v1/users/bob",
        ada,
        Some(json!({"status": "active", "role": "guest"})),
    )
    .await;
    answers(w.gw.addr, path, &w.keys.bob, "guest_not_allowed").await;
    api(
        a,
        "PATCH",
        "/v1/users/bob",
        ada,
        Some(json!({"role": "member"})),
    )
    .await;
    answers(w.gw.addr, path, &w.keys.bob, "ok").await;
    // Admins cannot lock themselves out.
    let (s, v) = api(
        a,
        "PATCH",
        "/v1/users/ada",
        ada,
        Some(json!({"role": "member"})),
    )
    .await;
    assert_eq!((s, err(&v)), (403, "forbidden"));
}

#[tokio::test]
async fn admins_manage_projects_and_members() {
    let w = World::start().await;
    let (a, ada) = (w.gw.admin, Some(w.keys.ada.as_str()));
    let (s, p) = api(
        a,
        "POST",
        "/v1/projects",
        ada,
        Some(json!({"id": "p9", "name": "Nine"})),
    )
    .await;
    assert_eq!((s, p["visibility"].as_str()), (201, Some("private")));
    let (s, v) = api(
        a,
        "POST",
        "/v1/projects",
        ada,
        Some(json!({"id": "bad id"})),
    )
    .await;
    assert_eq!((s, err(&v)), (422, "invalid_field"));
    let path = "/v1/projects/p9/predict";
    answers(w.gw.addr, path, &w.keys.alice, "project_access_denied").await;
    let (s, p) = api(a, "PUT", "/v1/projects/p9/members/alice", ada, None).await;
    assert_eq!((s, p["members"].clone()), (200, json!(["alice"])));
    answers(w.gw.addr, path, &w.keys.alice, "ok").await;
    assert_eq!(
        api(a, "DELETE", "/v1/projects/p9/members/alice", ada, None)
            .await
            .0,
        200
    );
    answers(w.gw.addr, path, &w.keys.alice, "project_access_denied").await;
    let (s, p) = api(
        a,
        "PATCH",
        "/v1/projects/p9",
        ada,
        Some(json!({"visibility": "public"})),
    )
    .await;
    assert_eq!((s, p["visibility"].as_str()), (200, Some("public")));
    answers(w.gw.addr, path, &w.keys.alice, "ok").await;
    assert_eq!(
        api(a, "PUT", "/v1/projects/p9/members/gina", ada, None)
            .await
            .0,
        404
    );
    assert_eq!(api(a, "GET", "/v1/projects/nope", ada, None).await.0, 404);

    // Members see the projects they can use, and change none.
    let (manager, _) = new_key(&w.store, &w.gw.config, "alice", &["keys:manage"], &[]).await;
    let m = Some(manager.as_str());
    let (_, seen) = api(a, "GET", "/v1/projects", m, None).await;
    let mut ids: Vec<&str> = seen["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["p1", "p9", "pub"]);
    assert_eq!(api(a, "GET", "/v1/projects/p2", m, None).await.0, 404);
    assert_eq!(
        api(
            a,
            "PATCH",
            "/v1/projects/p1",
            m,
            Some(json!({"visibility": "public"}))
        )
        .await
        .0,
        403
    );
    // The bootstrap token names the org.
    let (s, seen) = api(
        a,
        "GET",
        "/v1/projects?org_id=globex",
        Some(BOOTSTRAP),
        None,
    )
    .await;
    assert_eq!((s, seen["total"].as_u64()), (200, Some(1)));
}

#[tokio::test]
async fn legacy_pairs_are_imported_hashed_and_carry_deprecation_until_their_sunset() {
    let w = World::start().await;
    let (a, ada) = (w.gw.admin, Some(w.keys.ada.as_str()));
    let secret = "legacy-secret-value-1";
    let body = json!({"legacy_id": "LEG-1", "secret": secret, "name": "old sdk", "scopes": ["inference"], "user_id": "bob"});
    let (s, v) = api(a, "POST", "/v1/legacy-credentials", ada, Some(body.clone())).await;
    assert_eq!(
        (s, v["display"].as_str(), v["legacy"].as_bool()),
        (201, Some("legacy:LEG-1"), Some(true))
    );
    let legacy_id = v["id"].as_str().unwrap().to_owned();
    assert!(
        !v.to_string().contains(secret),
        "the secret is never returned"
    );
    assert!(!w.redis.cmd(&["KEYS", "*"]).contains(secret));
    let (s, v) = api(a, "POST", "/v1/legacy-credentials", ada, Some(body)).await;
    assert_eq!((s, err(&v)), (409, "already_exists"));
    let (manager, _) = new_key(&w.store, &w.gw.config, "bob", &["keys:manage"], &[]).await;
    let (s, _) = api(
        a,
        "POST",
        "/v1/legacy-credentials",
        Some(&manager),
        Some(
            json!({"legacy_id": "L2", "secret": "long-enough", "name": "n", "scopes": ["predict"]}),
        ),
    )
    .await;
    assert_eq!(s, 403, "imports are for admins");

    let pair = [("apikey", "LEG-1"), ("apisecret", secret)];
    let (status, headers, _) = get_with(w.gw.addr, "/v1/projects/p2/x", &pair).await;
    assert_eq!(status, 200);
    assert!(headers["deprecation"].to_str().unwrap().starts_with('@'));
    assert!(headers.get("sunset").is_none(), "no sunset configured");
    let (status, headers, _) =
        get_with(w.gw.addr, "/v1/projects/p2/x", &[("apikey", &w.keys.bob)]).await;
    assert_eq!(status, 200);
    assert!(
        headers.get("deprecation").is_none(),
        "modern keys are not deprecated"
    );

    // A replica with a sunset: announced before it, refused after it.
    for (sunset, want) in [("2999-01-01T00:00:00Z", 200), ("2020-01-01T00:00:00Z", 401)] {
        let toml = config_toml(&w.redis, &w.upstream, "").replace(
            "[keys]\n",
            &format!("[keys]\nlegacy_sunset = \"{sunset}\"\n"),
        );
        let gw = Gateway::start(&toml, Path::new(".")).await;
        let (status, headers, body) = get_with(gw.addr, "/v1/projects/p2/x", &pair).await;
        assert_eq!(status, want, "{body:?}");
        assert!(headers["deprecation"].to_str().unwrap().starts_with('@'));
        if want == 200 {
            assert_eq!(headers["sunset"], "Tue, 01 Jan 2999 00:00:00 GMT");
        } else {
            assert_eq!(code(&body), "legacy_key_sunset");
        }
    }

    // Rotated, the pair becomes a key like any created one: with keys.allow_no_expiry off (the
    // default), it gets the longest validity, not none.
    let (s, v) = api(
        a,
        "POST",
        &format!("/v1/keys/{legacy_id}/rotate"),
        ada,
        None,
    )
    .await;
    assert_eq!((s, v["legacy"].as_bool()), (200, Some(false)), "{v}");
    let max = w.gw.config.max_validity.as_secs();
    let expires = v["expires_at"].as_u64().expect("a rotated pair expires");
    let now = keygate::model::unix_now();
    assert!((now + max - 5..=now + max).contains(&expires), "{expires}");
}

/// Every operation the OpenAPI document describes is served, and answers only with statuses the
/// document lists for it.
#[tokio::test]
async fn the_openapi_document_matches_the_implementation() {
    let w = World::start().await;
    let (s, doc) = api(w.gw.admin, "GET", "/v1/openapi.json", None, None).await;
    assert_eq!(s, 200, "served without a token");
    assert_eq!(
        doc,
        serde_json::from_str::<Value>(keygate::admin::api::OPENAPI).unwrap()
    );
    let mut walked = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let path = template
                .replace("{id}", "nope")
                .replace("{user_id}", "nobody");
            let sep = if path.contains('?') { '&' } else { '?' };
            let body = matches!(method.as_str(), "post" | "patch" | "put").then(|| json!({}));
            let method = method.to_uppercase();
            let (status, v) = api(
                w.gw.admin,
                &method,
                &format!("{path}{sep}org_id=acme"),
                Some(BOOTSTRAP),
                body,
            )
            .await;
            let listed = op["responses"].as_object().unwrap();
            assert!(
                listed.contains_key(&status.to_string()),
                "{method} {template}: {status} {v} not in {:?}",
                listed.keys()
            );
            assert!(
                !v["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("no such endpoint"),
                "{method} {template} is not routed"
            );
            walked += 1;
        }
    }
    assert!(walked >= 20, "{walked} operations");

    // What the document says of request bodies holds: a field it does not list is refused, and
    // so is a body without a field it marks required.
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(schema) =
                op["requestBody"]["content"]["application/json"]["schema"].as_object()
            else {
                continue;
            };
            let path = template.replace("{id}", "p1").replace("{user_id}", "bob");
            let path = format!("{path}?org_id=acme");
            let method = method.to_uppercase();
            assert_eq!(
                schema["additionalProperties"],
                json!(false),
                "{method} {template}"
            );
            let (s, v) = api(
                w.gw.admin,
                &method,
                &path,
                Some(BOOTSTRAP),
                Some(json!({"no_such_field": 1})),
            )
            .await;
            assert_eq!(
                (s, err(&v)),
                (400, "invalid_json"),
                "{method} {template}: an unlisted field"
            );
            if schema
                .get("required")
                .is_some_and(|r| !r.as_array().unwrap().is_empty())
            {
                let (s, v) =
                    api(w.gw.admin, &method, &path, Some(BOOTSTRAP), Some(json!({}))).await;
                assert_eq!(
                    (s, err(&v)),
                    (400, "invalid_json"),
                    "{method} {template}: required fields missing"
                );
            }
        }
    }
    // What it says of answers holds: every field it marks required is in a real one.
    let schemas = &doc["components"]["schemas"];
    for (path, schema) in [
        (format!("/v1/keys/{}?org_id=acme", w.keys.alice_id), "Key"),
        ("/v1/users/bob?org_id=acme".to_owned(), "User"),
        ("/v1/projects/p1?org_id=acme".to_owned(), "Project"),
    ] {
        let (s, v) = api(w.gw.admin, "GET", &path, Some(BOOTSTRAP), None).await;
        assert_eq!(s, 200, "{path}");
        for field in schemas[schema]["required"].as_array().unwrap() {
            assert!(
                v.get(field.as_str().unwrap()).is_some(),
                "{schema} lacks {field}: {v}"
            );
        }
    }
    let (s, v) = api(w.gw.admin, "GET", "/v1/nothing", Some(BOOTSTRAP), None).await;
    assert_eq!((s, err(&v)), (404, "not_found"));
}
