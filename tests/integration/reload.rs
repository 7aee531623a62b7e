//! Reloading the config of a running replica: routes switch for new requests without a failed
//! one, in-flight requests finish on the old routes, and a broken file changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::*;

async fn reload(gw: &Gateway) -> (u16, serde_json::Value) {
    let req = http::Request::post(format!("http://{}/reload", gw.admin))
        .body(http_body_util::Full::default())
        .unwrap();
    let (status, _, body) = send(req).await;
    (status.as_u16(), serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn a_reload_switches_routes_under_load_and_a_broken_file_changes_nothing() {
    let w = World::start().await;
    let b = Upstream::start().await;
    let dir = temp_dir("keygate-reload-");
    let path = dir.path().join("keygate.toml");
    let original = config_toml(&w.redis, &w.upstream, "");
    std::fs::write(&path, &original).unwrap();
    let gw = Gateway::start_from_file(&path).await;
    let addr = gw.addr;
    assert_eq!(answer(addr, "/v1/projects/p2/x", &w.keys.bob).await, "ok");

    // Steady load with alice's key for the whole reload; every answer must be 200.
    let running = Arc::new(AtomicBool::new(true));
    let load = tokio::spawn({
        let (running, key) = (running.clone(), w.keys.alice.clone());
        async move {
            let mut answers = Vec::new();
            while running.load(Ordering::Relaxed) {
                answers.push(answer(addr, "/v1/projects/p1/load", &key).await);
            }
            answers
        }
    });
    // A request in flight when the reload happens finishes on the old route (upstream A).
    let in_flight = tokio::spawn({
        let key = w.keys.alice.clone();
        async move { get_with(addr, "/v1/projects/p1/slow?ms=400", &[("apikey", &key)]).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The `projects` route moves to upstream B and requires `models:read` too.
    let moved = original.replacen(
        &format!(
            "scopes = [\"inference\"]\nupstreams = [\"{}\"]",
            w.upstream.url()
        ),
        &format!(
            "scopes = [\"inference\", \"models:read\"]\nupstreams = [\"{}\"]",
            b.url()
        ),
        1,
    );
    // And a request body may be at most 1,000 bytes from now on.
    let moved = moved.replace("max_body_bytes = 100000000", "max_body_bytes = 1000");
    assert_ne!(moved, original);
    std::fs::write(&path, &moved).unwrap();
    let (status, body) = reload(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["routes"], 9);
    assert_eq!(body["restart_needed"], serde_json::json!([]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    running.store(false, Ordering::Relaxed);
    let answers = load.await.unwrap();
    assert!(answers.len() > 10, "{} requests", answers.len());
    assert!(answers.iter().all(|a| a == "ok"), "{answers:?}");
    let (status, _, _) = in_flight.await.unwrap();
    assert_eq!(status.as_u16(), 200);
    assert!(
        w.upstream
            .requests()
            .iter()
            .any(|s| s.path_and_query.starts_with("/v1/projects/p1/slow"))
    );
    // The new rule applies: B gets alice's requests; bob lacks `models:read` now.
    assert!(
        b.requests()
            .iter()
            .any(|s| s.path_and_query == "/v1/projects/p1/load")
    );
    assert_eq!(answer(addr, "/v1/projects/p1/x", &w.keys.alice).await, "ok");
    assert_eq!(b.last().path_and_query, "/v1/projects/p1/x");
    assert_eq!(
        answer(addr, "/v1/projects/p2/x", &w.keys.bob).await,
        "insufficient_scope"
    );
    let upload = |key: &str| {
        format!(
            "POST /v1/projects/p1/x HTTP/1.1\r\nHost: x\r\napikey: {key}\r\nContent-Length: 2000\r\n\r\n"
        )
    };
    assert_eq!(raw(addr, &upload(&w.keys.alice)).await.0, 413);
    assert_eq!(
        gw.metric("keygate_config_reload_total{result=\"ok\"}")
            .await,
        1.0
    );

    // A broken file: refused with every problem, reported, and nothing changes.
    let broken = moved
        .replace("path_prefix = \"/v1/projects\"", "path_prefix = \"v1\"")
        .replace(
            "usage_flush_interval = \"100ms\"",
            "usage_flush_interval = \"soon\"",
        );
    std::fs::write(&path, &broken).unwrap();
    let (status, body) = reload(&gw).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_config");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("route[projects].path_prefix"), "{message}");
    assert!(message.contains("keys.usage_flush_interval"), "{message}");
    assert_eq!(
        gw.metric("keygate_config_reload_total{result=\"error\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("keygate_config_last_reload_successful").await,
        0.0
    );
    assert_eq!(answer(addr, "/v1/projects/p1/y", &w.keys.alice).await, "ok");
    assert_eq!(b.last().path_and_query, "/v1/projects/p1/y");

    // Settings only a restart applies are named, and keep their running values.
    std::fs::write(&path, moved.replace("ttl = \"3s\"", "ttl = \"2s\"")).unwrap();
    let (status, body) = reload(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["restart_needed"], serde_json::json!(["cache"]));
    assert_eq!(
        gw.metric("keygate_config_last_reload_successful").await,
        1.0
    );
}

#[tokio::test]
async fn a_replica_started_without_a_file_says_it_cannot_reload() {
    let w = World::start().await;
    let (status, body) = reload(&w.gw).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "reload_unavailable");
}

#[tokio::test]
async fn a_reload_serves_new_connections_with_the_new_certificate() {
    let w = World::start().await;
    // The private keys are removed when the test ends, pass or fail.
    let dir = temp_dir("keygate-reload-tls-");
    let (line, first) = tls_files(&dir);
    let path = dir.path().join("keygate.toml");
    std::fs::write(&path, config_toml(&w.redis, &w.upstream, &line)).unwrap();
    let gw = Gateway::start_from_file(&path).await;
    assert!(tls_handshake(gw.addr, &first, b"http/1.1").await.is_ok());
    let kept = tls_handshake(gw.addr, &first, b"http/1.1").await.unwrap();

    // New files at the same paths: the running listener keeps the old certificate until a
    // reload, then new connections get the new one.
    let (_, second) = tls_files(&dir);
    assert!(tls_handshake(gw.addr, &second, b"http/1.1").await.is_err());
    let (status, body) = reload(&gw).await;
    assert_eq!(
        (status, body["restart_needed"].clone()),
        (200, serde_json::json!([]))
    );
    assert!(tls_handshake(gw.addr, &second, b"http/1.1").await.is_ok());
    assert!(tls_handshake(gw.addr, &first, b"http/1.1").await.is_err());
    // A connection made before the reload goes on.
    let io = hyper_util::rt::TokioIo::new(kept);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://localhost/v1/projects/p1/kept")
        .header("host", "localhost")
        .header("apikey", &w.keys.alice)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
}
