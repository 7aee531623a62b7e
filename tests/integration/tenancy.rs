//! One endpoint for every org: routes that take the org from the key, the path or the host.

use crate::harness::*;
use http::StatusCode;
use keygate::model::*;

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
