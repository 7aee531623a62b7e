//! One endpoint for every org: routes that take the org from the key, the path or the host.

use std::time::Duration;

use crate::harness::*;
use http::StatusCode;
use keygate::model::*;
use serde_json::{Value, json};

fn code_of(v: &Value) -> String {
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn one_route_serves_every_org_and_tells_none_of_another() {
    let w = World::start().await;
    let globex = OrgId::from("globex");
    w.store
        .create_project(&globex, &ProjectId::from("gp"), "gp", Visibility::Public)
        .await
        .unwrap();
    let gw = w.gw.addr;
    let forwarded_org = || w.upstream.last().headers["x-keygate-org-id"].clone();

    // Each org's key reaches its own project; `p1` is a project of both orgs.
    assert_eq!(
        answer(gw, "/shared/projects/p1/predict", &w.keys.alice).await,
        "ok"
    );
    assert_eq!(forwarded_org(), "acme");
    assert_eq!(
        answer(gw, "/shared/projects/p1/predict", &w.keys.gina).await,
        "ok"
    );
    assert_eq!(forwarded_org(), "globex");
    assert_eq!(w.upstream.last().headers["x-keygate-project-id"], "p1");
    assert_eq!(
        answer(gw, "/shared/projects/gp/x", &w.keys.gina).await,
        "ok"
    );

    // Another org's project is answered exactly as one that exists nowhere.
    let (_, _, none) = get_with(
        gw,
        "/shared/projects/nowhere/x",
        &[("apikey", &w.keys.alice)],
    )
    .await;
    let (status, _, foreign) =
        get_with(gw, "/shared/projects/gp/x", &[("apikey", &w.keys.alice)]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&foreign), "project_not_found");
    assert_eq!(
        foreign, none,
        "same body for a foreign and a missing project"
    );
    let (_, _, foreign) = get_with(gw, "/shared/projects/p2/x", &[("apikey", &w.keys.gina)]).await;
    assert_eq!(foreign, none);

    // The org from the path: the key's org must be the one named.
    assert_eq!(
        answer(gw, "/v1/orgs/globex/projects/gp/x", &w.keys.gina).await,
        "ok"
    );
    assert_eq!(
        answer(gw, "/v1/orgs/acme/projects/p1/x", &w.keys.alice).await,
        "ok"
    );
    assert_eq!(
        answer(gw, "/v1/orgs/acme/projects/p1/x", &w.keys.gina).await,
        "org_mismatch"
    );

    // The org from the host label.
    let on_host = |host: &'static str, key: &str| {
        let key = key.to_owned();
        async move {
            let (status, _, body) = get_with(
                gw,
                "/v1/projects/p1/predict",
                &[("host", host), ("apikey", &key)],
            )
            .await;
            if status == 200 {
                "ok".to_owned()
            } else {
                code(&body)
            }
        }
    };
    assert_eq!(on_host("globex.api.test", &w.keys.gina).await, "ok");
    assert_eq!(forwarded_org(), "globex");
    assert_eq!(on_host("acme.api.test:8080", &w.keys.alice).await, "ok");
    assert_eq!(on_host("acme.api.test", &w.keys.gina).await, "org_mismatch");
    assert_eq!(
        on_host("globex.api.test", &w.keys.alice).await,
        "org_mismatch"
    );
}

/// The actions in an org's audit log, newest first.
async fn actions(w: &World, org: &OrgId) -> Vec<String> {
    let entries = w.store.audit(org, None, 50).await.unwrap();
    entries.into_iter().map(|e| e.action).collect()
}

/// A key of `user`'s membership of `org`.
async fn member_key(w: &World, org: &str, user: &str, scopes: &[&str]) -> String {
    let new = keygate::store::keys::NewKey {
        org_id: Some(OrgId::from(org)),
        user_id: UserId::from(user),
        name: format!("{user} in {org}"),
        scopes: scopes.iter().map(|s| Scope::new(s)).collect(),
        project_ids: vec![],
        expires_at: Some(unix_now() + 3600),
    };
    w.store
        .create_key(&w.gw.config.keys, new)
        .await
        .unwrap()
        .secret
}

#[tokio::test]
async fn one_person_in_two_orgs_acts_with_each_memberships_role() {
    let w = World::start().await;
    let (a, gw) = (w.gw.admin, w.gw.addr);
    let (acme, globex) = (OrgId::from("acme"), OrgId::from("globex"));
    // Pat is a member of acme; the platform makes pat an admin of globex too.
    let (s, v) = api(
        a,
        "POST",
        "/v1/users",
        Some(BOOTSTRAP),
        Some(json!({"id": "pat", "name": "Pat", "org_id": "acme"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api(
        a,
        "POST",
        "/v1/memberships",
        Some(&w.keys.ada),
        Some(json!({"user_id": "pat", "org_id": "globex"})),
    )
    .await;
    assert_eq!(
        (s, code_of(&v)),
        (403, "forbidden".into()),
        "org admins invite"
    );
    let (s, v) = api(
        a,
        "POST",
        "/v1/memberships?org_id=globex",
        Some(BOOTSTRAP),
        Some(json!({"user_id": "pat", "role": "admin"})),
    )
    .await;
    assert_eq!(
        (s, v["org_id"].as_str(), v["name"].as_str()),
        (201, Some("globex"), Some("Pat"))
    );
    let (s, v) = api(a, "GET", "/v1/accounts/pat", Some(BOOTSTRAP), None).await;
    assert_eq!((s, v["org_ids"].clone()), (200, json!(["acme", "globex"])));

    let in_acme = member_key(&w, "acme", "pat", &["predict"]).await;
    let in_globex = member_key(&w, "globex", "pat", &["*"]).await;
    let role = || w.upstream.last().headers["x-keygate-role"].clone();
    assert_eq!(answer(gw, "/shared/projects/pub/x", &in_acme).await, "ok");
    assert_eq!(role(), "member");
    assert_eq!(answer(gw, "/shared/projects/p1/x", &in_globex).await, "ok");
    assert_eq!(role(), "admin");
    assert_eq!(w.upstream.last().headers["x-keygate-org-id"], "globex");
    assert_eq!(
        answer(gw, "/v1/projects/pub/x", &in_globex).await,
        "org_mismatch"
    );
    // A member key cannot be given what only the membership's role allows.
    let (s, _) = api(
        a,
        "POST",
        "/v1/keys?org_id=acme",
        Some(BOOTSTRAP),
        Some(json!({"name": "x", "scopes": ["admin"], "user_id": "pat", "expires_in": "1h"})),
    )
    .await;
    assert_eq!(s, 422);
    // The bootstrap token names the org of a person in several.
    let (s, v) = api(
        a,
        "POST",
        "/v1/keys",
        Some(BOOTSTRAP),
        Some(json!({"name": "x", "scopes": ["predict"], "user_id": "pat", "expires_in": "1h"})),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("several orgs"),
        "{v}"
    );

    // Disabling the acme membership stops only acme's key, on the other replica within 100 ms.
    let other = w.second_gateway().await;
    assert_eq!(
        answer(other.addr, "/shared/projects/pub/x", &in_acme).await,
        "ok"
    );
    assert_eq!(
        answer(other.addr, "/shared/projects/p1/x", &in_globex).await,
        "ok"
    );
    let started = std::time::Instant::now();
    w.store
        .update_member(
            &acme,
            &UserId::from("pat"),
            None,
            Some(UserStatus::Disabled),
        )
        .await
        .unwrap();
    answers(
        other.addr,
        "/shared/projects/pub/x",
        &in_acme,
        "user_disabled",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        answer(other.addr, "/shared/projects/p1/x", &in_globex).await,
        "ok"
    );
    w.store
        .update_member(&acme, &UserId::from("pat"), None, Some(UserStatus::Active))
        .await
        .unwrap();
    answers(other.addr, "/shared/projects/pub/x", &in_acme, "ok").await;

    // Disabling the person stops every membership's keys; enabling brings them back.
    let (s, v) = api(
        a,
        "PATCH",
        "/v1/accounts/pat",
        Some(BOOTSTRAP),
        Some(json!({"status": "disabled"})),
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("disabled")));
    answers(
        other.addr,
        "/shared/projects/pub/x",
        &in_acme,
        "user_disabled",
    )
    .await;
    answers(
        other.addr,
        "/shared/projects/p1/x",
        &in_globex,
        "user_disabled",
    )
    .await;
    api(
        a,
        "PATCH",
        "/v1/accounts/pat",
        Some(BOOTSTRAP),
        Some(json!({"status": "active"})),
    )
    .await;
    answers(other.addr, "/shared/projects/p1/x", &in_globex, "ok").await;

    // Each org's audit log has its part.
    let (in_acme_log, in_globex_log) = (actions(&w, &acme).await, actions(&w, &globex).await);
    assert!(
        in_globex_log.contains(&"member.add".to_owned()),
        "{in_globex_log:?}"
    );
    assert!(
        !in_acme_log.contains(&"member.add".to_owned()),
        "{in_acme_log:?}"
    );
    for log in [&in_acme_log, &in_globex_log] {
        let updates = log.iter().filter(|a| *a == "account.update").count();
        assert_eq!(updates, 2, "{log:?}");
    }
}

#[tokio::test]
async fn an_org_admin_learns_nothing_of_other_orgs_people() {
    let w = World::start().await;
    let (a, ada) = (w.gw.admin, Some(w.keys.ada.as_str()));
    // `gina` is a member of globex; `nobody` exists nowhere. Every probe of acme's admin answers
    // alike for both, and costs Redis the same commands.
    type Probe = (&'static str, fn(&str) -> String, Option<fn(&str) -> Value>);
    let probes: [Probe; 6] = [
        ("GET", |id| format!("/v1/users/{id}"), None),
        (
            "PATCH",
            |id| format!("/v1/users/{id}"),
            Some(|_| json!({"role": "admin"})),
        ),
        ("PUT", |id| format!("/v1/projects/p1/members/{id}"), None),
        (
            "POST",
            |_| "/v1/keys".into(),
            Some(|id| json!({"name": "k", "scopes": ["predict"], "user_id": id})),
        ),
        (
            "POST",
            |_| "/v1/users".into(),
            Some(|id| json!({"id": id, "name": "x"})),
        ),
        (
            "POST",
            |_| "/v1/invitations".into(),
            Some(|id| json!({"user_id": id})),
        ),
    ];
    // The first lookup of the management key loads the lookup script: done before counting.
    assert_eq!(api(a, "GET", "/v1/users/ada", ada, None).await.0, 200);
    for (method, path, body) in probes {
        let mut seen = Vec::new();
        for id in ["gina", "nobody"] {
            let before = w.redis.data_calls();
            let (status, v) = api(a, method, &path(id), ada, body.map(|b| b(id))).await;
            let cost = w.redis.data_calls() - before;
            // An invitation differs by its own id and times, and names whom it is for.
            let shape = match v.as_object() {
                Some(o) if status == 201 => {
                    assert_eq!(v["user_id"], id);
                    json!(o.keys().collect::<Vec<_>>())
                }
                _ => v,
            };
            seen.push((status, shape, cost));
        }
        assert_eq!(seen[0], seen[1], "{method} {}", path("…"));
    }
}

#[tokio::test]
async fn an_invited_person_accepts_with_their_own_key_and_then_holds_keys_there() {
    let w = World::start().await;
    let (a, ada) = (w.gw.admin, Some(w.keys.ada.as_str()));
    let (s, inv) = api(
        a,
        "POST",
        "/v1/invitations",
        ada,
        Some(json!({"user_id": "gina", "role": "member"})),
    )
    .await;
    assert_eq!((s, inv["org_id"].as_str()), (201, Some("acme")), "{inv}");
    let id = inv["id"].as_str().unwrap();
    let (s, list) = api(a, "GET", "/v1/invitations", ada, None).await;
    assert_eq!((s, list["total"].as_u64()), (200, Some(1)));
    let accept = format!("/v1/orgs/acme/invitations/{id}/accept");
    // Only the person invited can accept, with a management key of theirs (here, globex's).
    let (alice_manager, _) = new_key(&w.store, &w.gw.config, "alice", &["keys:manage"], &[]).await;
    let (s, _) = api(a, "POST", &accept, Some(&alice_manager), None).await;
    assert_eq!(s, 404);
    let (gina_manager, _) = new_key(&w.store, &w.gw.config, "gina", &["keys:manage"], &[]).await;
    let (s, v) = api(a, "POST", &accept, Some(&gina_manager), None).await;
    assert_eq!(
        (s, v["org_id"].as_str(), v["role"].as_str()),
        (201, Some("acme"), Some("member")),
        "{v}"
    );
    let (s, _) = api(a, "POST", &accept, Some(&gina_manager), None).await;
    assert_eq!(s, 404, "an invitation is used once");
    // Gina is now acme's member too: ada gives her an acme key, which works on acme's routes.
    let (s, key) = api(
        a,
        "POST",
        "/v1/keys",
        ada,
        Some(json!({"name": "gina@acme", "scopes": ["predict"], "user_id": "gina", "expires_in": "1h"})),
    )
    .await;
    assert_eq!((s, key["org_id"].as_str()), (201, Some("acme")), "{key}");
    let secret = key["secret"].as_str().unwrap();
    assert_eq!(answer(w.gw.addr, "/v1/projects/pub/x", secret).await, "ok");
    assert_eq!(
        answer(w.gw.addr, "/v1/projects/pub/x", &w.keys.gina).await,
        "org_mismatch"
    );
    let (_, users) = api(a, "GET", "/v1/users", ada, None).await;
    assert!(
        users["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["id"] == "gina")
    );
    // A withdrawn invitation cannot be accepted.
    let (_, inv) = api(
        a,
        "POST",
        "/v1/invitations",
        ada,
        Some(json!({"user_id": "zed"})),
    )
    .await;
    let path = format!("/v1/invitations/{}", inv["id"].as_str().unwrap());
    assert_eq!(api(a, "DELETE", &path, ada, None).await.0, 204);
    assert_eq!(api(a, "DELETE", &path, ada, None).await.0, 404);
}
