//! The real `keygate` binary: check-config, the management CLI on both transports, and `serve`
//! as a process
//! that drains and exits 0 on SIGTERM (sent to its own pid).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_keygate");

fn keygate(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Writes `text` to `name` in `dir`; returns the file's path.
fn write_config(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_config_reports_every_problem_and_exits_64() {
    let dir = temp_dir("keygate-cli-");
    let bad = write_config(
        &dir,
        "bad.toml",
        "[admin]\naddr = \"nowhere\"\n[redis]\nurl = \"http://x\"\n[[route]]\nid = \"r\"\npath_prefix = \"v1\"\nupstreams = []\n",
    );
    let out = keygate(&["check-config", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "listener",
        "admin.addr",
        "redis.url",
        "route[r].path_prefix",
        "route[r].org",
        "route[r].upstreams",
    ] {
        assert!(err.contains(needle), "{needle} missing from:\n{err}");
    }
    let typo = write_config(&dir, "typo.toml", "[admin]\nadr = \"127.0.0.1:1\"\n");
    let out = keygate(&["check-config", "--config", typo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("adr"));

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/keygate.example.toml");
    let out = keygate(&["check-config", "--config", example]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a management command on the store directly (`--config`); returns (exit code, stdout,
/// stderr).
fn admin(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut full = args.to_vec();
    full.extend_from_slice(&["--config", config.to_str().unwrap()]);
    let out = keygate(&full);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn bootstrap_cli_and_serve_work_end_to_end() {
    let mut redis = Redis::start();
    let upstream = Upstream::start().await;
    let (port, admin_port) = (free_port(), free_port());
    // The config, and the bulk secrets file beside it, go when the test ends.
    let dir = temp_dir("keygate-cli-");
    let config = write_config(
        &dir,
        "keygate.toml",
        &format!(
            "[[listener]]\naddr = \"127.0.0.1:{port}\"\n[admin]\naddr = \"127.0.0.1:{admin_port}\"\n[redis]\nurl = \"{}\"\n\
             [[route]]\nid = \"p\"\npath_prefix = \"/v1/projects\"\norg = \"acme\"\nproject = {{ segment = 3 }}\n\
             scopes = [\"inference\"]\nupstreams = [\"{}\"]\n",
            redis.url(),
            upstream.url()
        ),
    );
    for args in [
        &["orgs", "create", "acme", "--name", "Acme"][..],
        &[
            "users", "create", "--org", "acme", "--name", "Alice", "--id", "alice",
        ],
        &[
            "users", "create", "--org", "acme", "--name", "Gus", "--id", "gus", "--role", "guest",
        ],
        &["projects", "create", "--org", "acme", "p1"],
        &["projects", "add-member", "--org", "acme", "p1", "alice"],
    ] {
        let (code, _, err) = admin(&config, args);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    let (code, _, err) = admin(&config, &["orgs", "create", "acme"]);
    assert_eq!(code, 65, "duplicate org: {err}");
    assert!(err.contains("already exists"));
    let (code, _, err) = admin(
        &config,
        &[
            "keys",
            "create",
            "--user",
            "gus",
            "--name",
            "k",
            "--scopes",
            "inference",
        ],
    );
    assert_eq!(code, 65);
    assert!(err.contains("guests"), "{err}");
    let (code, _, err) = admin(
        &config,
        &[
            "keys", "create", "--user", "alice", "--name", "k", "--scopes", "all",
        ],
    );
    assert_eq!(code, 65, "a member cannot hold `*`: {err}");
    // A validity past any date is refused like any other beyond keys.max_validity, not a panic.
    let (code, out, err) = admin(
        &config,
        &[
            "keys",
            "create",
            "--user",
            "alice",
            "--name",
            "far",
            "--scopes",
            "inference",
            "--expires-in",
            "70000000h",
        ],
    );
    assert_eq!(
        (code, out.as_str()),
        (65, ""),
        "no secret for a refused key: {err}"
    );
    assert!(err.contains("at most"), "{err}");

    let (code, out, err) = admin(
        &config,
        &[
            "keys",
            "create",
            "--user",
            "alice",
            "--name",
            "laptop",
            "--scopes",
            "inference",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("shown only once"), "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let key_id = created["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("kg_"));
    assert_eq!(created["scopes"], serde_json::json!(["predict"]));

    let (code, listing, _) = admin(&config, &["keys", "list", "--org", "acme"]);
    assert_eq!(code, 0);
    assert!(listing.contains(&key_id) && listing.contains("laptop") && listing.contains('…'));
    assert!(
        !listing.contains(&secret[3..]),
        "lists never show the secret"
    );

    // Bulk creation for seeding: 1,500 keys in pipelined batches, secrets in a 0600 file.
    let secrets_file = config.with_file_name("secrets.txt");
    let (code, _, err) = admin(
        &config,
        &[
            "keys",
            "create-many",
            "--user",
            "alice",
            "--count",
            "1500",
            "--scopes",
            "inference",
            "--out",
            secrets_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let bulk: Vec<String> = std::fs::read_to_string(&secrets_file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(bulk.len(), 1500);
    // A reader that stops early (`keygate keys list | head -1`) ends the list quietly.
    let mut list = Command::new(BIN)
        .args(["keys", "list", "--org", "acme", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(list.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("ID "), "{first}");
    let listed = list.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&listed.stderr);
    assert!(
        listed.status.success() && !err.contains("panicked"),
        "{err}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&secrets_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // `serve` as a real process.
    let bootstrap = "bootstrap-token-0123456789abcdef";
    let mut child = Command::new(BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("KEYGATE_ADMIN_TOKEN", bootstrap)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let gw: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let what = "keygate serve is ready";
    eventually(
        what,
        Duration::from_secs(5),
        Duration::from_millis(25),
        || async {
            match tokio::net::TcpStream::connect(admin_addr).await {
                Ok(_) => match get(admin_addr, "/readyz").await.0.as_u16() {
                    200 => Ok(()),
                    status => Err(status.to_string()),
                },
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    let (status, _, _) = get_with(gw, "/v1/projects/p1/predict", &[("apikey", &secret)]).await;
    assert_eq!(status.as_u16(), 200);
    assert_eq!(upstream.last().headers["x-keygate-key-id"], key_id.as_str());
    // The bootstrap token (from the environment) may create a key for any user over the API.
    let req = http::Request::post(format!("http://{admin_addr}/v1/keys"))
        .header("authorization", format!("Bearer {bootstrap}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            r#"{"name": "from bootstrap", "scopes": ["inference"], "user_id": "alice", "expires_in": "1h"}"#,
        )))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status.as_u16(), 201, "{body:?}");
    let created: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let via_api = created["secret"].as_str().unwrap();
    let (status, _, _) = get_with(gw, "/v1/projects/p1/predict", &[("apikey", via_api)]).await;
    assert_eq!(status.as_u16(), 200);
    let wrong = http::Request::get(format!("http://{admin_addr}/v1/keys?org_id=acme"))
        .header("authorization", "Bearer bootstrap-token-0123456789abcdeX")
        .body(http_body_util::Full::default())
        .unwrap();
    assert_eq!(send(wrong).await.0.as_u16(), 401);
    for bulk_key in [&bulk[0], &bulk[1499]] {
        let (status, _, _) = get_with(gw, "/v1/projects/p1/predict", &[("apikey", bulk_key)]).await;
        assert_eq!(status.as_u16(), 200);
    }

    let (code, _, err) = admin(&config, &["keys", "delete", &key_id]);
    assert_eq!(code, 65, "delete needs a revoked key: {err}");
    assert!(err.contains("revoked"));
    assert_eq!(admin(&config, &["keys", "revoke", &key_id]).0, 0);
    // The revocation through the CLI reaches the running gateway.
    answers(gw, "/v1/projects/p1/predict", &secret, "key_revoked").await;
    assert_eq!(admin(&config, &["keys", "delete", &key_id]).0, 0);
    let (code, _, _) = admin(&config, &["keys", "show", &key_id]);
    assert_eq!(code, 65);

    // SIGHUP (to this child's own pid) reads the file again: a new route serves at once.
    let original = std::fs::read_to_string(&config).unwrap();
    let with_v2 = format!(
        "{original}[[route]]\nid = \"v2\"\npath_prefix = \"/v2\"\norg = \"acme\"\nupstreams = [\"{}\"]\n",
        upstream.url()
    );
    std::fs::write(&config, &with_v2).unwrap();
    assert_eq!(answer(gw, "/v2/x", &bulk[2]).await, "route_not_found");
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    answers(gw, "/v2/x", &bulk[2], "ok").await;
    // `keygate reload` asks the admin listener, and says what happened.
    let admin_url = format!("http://{admin_addr}");
    let reload = || keygate(&["reload", "--url", &admin_url]);
    let out = reload();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "reloaded: 2 route(s)\n"
    );
    std::fs::write(&config, with_v2.replace("/v2", "v2")).unwrap();
    let out = reload();
    assert_eq!(out.status.code(), Some(65), "a broken file is refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("route[v2].path_prefix") && err.contains("invalid_config"),
        "{err}"
    );
    assert_eq!(answer(gw, "/v2/x", &bulk[2]).await, "ok", "nothing changed");

    // An outage: every request for an uncached key fails alike, and the log says so once when
    // it starts and once when it ends.
    redis.stop();
    let fresh = &bulk[1]; // never used yet: not cached
    for _ in 0..5 {
        let (status, _, _) = get_with(gw, "/v1/projects/p1/predict", &[("apikey", fresh)]).await;
        assert_eq!(status.as_u16(), 503);
    }
    let (_, _, metrics) = get(admin_addr, "/metrics").await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("keygate_key_store_reachable 0"),
        "{metrics}"
    );
    redis.restart();
    answers(gw, "/v1/projects/p1/predict", fresh, "ok").await;
    let (_, _, metrics) = get(admin_addr, "/metrics").await;
    assert!(String::from_utf8_lossy(&metrics).contains("keygate_key_store_reachable 1"));

    // SIGTERM (to this child's own pid): drain and exit 0; the access log never held the secret.
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut err = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status, err)
    })
    .await
    .unwrap();
    assert!(out.0.success(), "exit status {:?}", out.0);
    assert!(
        out.1.contains("keygate::access"),
        "access log lines are written"
    );
    assert!(out.1.contains(&key_id), "access log names the key id");
    assert!(
        !out.1.contains(&secret[3..]),
        "the secret never reaches a log"
    );
    let log = &out.1;
    assert!(
        !log.contains('\x1b'),
        "no colour codes when stderr is not a terminal"
    );
    for (line, times) in [
        ("key store unreachable", 1),
        ("key store reachable again", 1),
        ("invalidation subscription down", 1),
    ] {
        assert_eq!(log.matches(line).count(), times, "`{line}` in:\n{log}");
    }
    let management = log
        .lines()
        .find(|l| l.contains(r#"path="/v1/keys""#) && l.contains("status=401"))
        .unwrap_or_else(|| panic!("no access line for the refused management call:\n{log}"));
    assert!(management.contains(r#"actor="anonymous""#) && management.contains("method=GET"));
}

/// Runs `keygate <args>` against a gateway's management API; returns (exit code, stdout, stderr).
async fn client(admin: std::net::SocketAddr, key: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env("KEYGATE_URL", format!("http://{admin}"))
        .env("KEYGATE_API_KEY", key)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_http_client_manages_keys_users_and_projects() {
    let w = World::start().await;
    let (a, ada) = (w.gw.admin, w.keys.ada.as_str());
    let (code, out, err) = client(
        a,
        ada,
        &[
            "keys",
            "create",
            "--name",
            "laptop",
            "--scopes",
            "inference",
            "--expires-in",
            "30d",
            "--user",
            "bob",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let secret = out.trim().to_owned();
    assert!(
        secret.starts_with("kg_") && !out.contains(' '),
        "only the secret on stdout: {out}"
    );
    assert!(
        err.contains("shown only once") && !err.contains(&secret),
        "{err}"
    );
    let (status, _, _) = get_with(w.gw.addr, "/v1/projects/p2/x", &[("apikey", &secret)]).await;
    assert_eq!(status, 200);

    let (code, out, _) = client(a, ada, &["keys", "list", "--user", "bob", "--json"]).await;
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "laptop")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!out.contains(&secret[3..]));
    let (code, out, _) = client(a, ada, &["keys", "rename", &id, "old laptop"]).await;
    assert_eq!((code, out.contains("old laptop")), (0, true), "{out}");
    let (code, out, _) = client(a, ada, &["keys", "set-scopes", &id, "predict,models:read"]).await;
    assert_eq!(
        (code, out.contains("models:read,predict")),
        (0, true),
        "{out}"
    );
    let (code, rotated, _) = client(a, ada, &["keys", "rotate", &id, "--grace", "1h"]).await;
    assert_eq!(code, 0);
    assert_ne!(rotated.trim(), secret);
    let (code, _, err) = client(a, ada, &["keys", "delete", &id]).await;
    assert_eq!(code, 65, "only revoked keys: {err}");
    assert!(err.contains("key_not_revoked"));
    assert_eq!(client(a, ada, &["keys", "revoke", &id]).await.0, 0);
    assert_eq!(client(a, ada, &["keys", "delete", &id]).await.0, 0);
    assert_eq!(client(a, ada, &["keys", "show", &id]).await.0, 65);

    let (code, out, _) = client(a, ada, &["users", "create", "--name", "Dora", "--json"]).await;
    assert_eq!(code, 0, "{out}");
    let dora: serde_json::Value = serde_json::from_str(&out).unwrap();
    let dora = dora["id"].as_str().unwrap().to_owned();
    let (code, out, _) = client(a, ada, &["users", "list"]).await;
    assert!(
        code == 0 && out.lines().any(|l| l.starts_with(&format!("{dora} "))),
        "{out}"
    );
    assert_eq!(
        client(a, ada, &["users", "set", &dora, "--status", "disabled"])
            .await
            .0,
        0
    );
    let (code, out, _) = client(a, ada, &["projects", "add-member", "p1", "bob"]).await;
    assert_eq!((code, out.contains("alice,bob")), (0, true), "{out}");
    let (code, out, _) = client(a, BOOTSTRAP, &["projects", "list", "--org", "globex"]).await;
    // A header row, then globex's one project.
    assert_eq!((code, out.lines().count()), (0, 2), "{out}");
    assert!(out.starts_with("ID "), "{out}");

    // A leaked secret revokes its own key, with no management key at all.
    let (code, leaked, err) = client(
        a,
        ada,
        &[
            "keys",
            "create",
            "--name",
            "leaked",
            "--scopes",
            "inference",
            "--user",
            "bob",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let leaked = leaked.trim();
    let out = tokio::process::Command::new(BIN)
        .args(["keys", "revoke", leaked])
        .env("KEYGATE_URL", format!("http://{a}"))
        .env_remove("KEYGATE_API_KEY")
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(printed.contains("status: revoked"), "{printed}");
    answers(w.gw.addr, "/v1/projects/p2/x", leaked, "key_revoked").await;

    // Refusals, a missing URL and an unreachable API each have their exit code.
    let (code, _, err) = client(a, &w.keys.alice, &["keys", "list"]).await;
    assert_eq!(code, 65, "a data-plane key cannot manage: {err}");
    let out = tokio::process::Command::new(BIN)
        .args(["keys", "list"])
        .env_remove("KEYGATE_URL")
        .env_remove("KEYGATE_API_KEY")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", dead_port()).parse().unwrap();
    assert_eq!(client(dead, ada, &["keys", "list"]).await.0, 69);
}
