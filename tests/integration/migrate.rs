//! A store written in the first layout (keygate before 2026-12-05) is refused until
//! `keygate migrate` moves it; after that every key answers as it did.

use std::process::Command;

use crate::harness::*;
use keygate::credential::{KeyFormat, hash_key, hash_legacy};
use keygate::model::*;

const BIN: &str = env!("CARGO_BIN_EXE_keygate");

/// A key as layout 1 stored it.
struct OldKey {
    id: &'static str,
    owner: &'static str,
    hash: KeyHash,
    previous: Option<KeyHash>,
    status: KeyStatus,
    projects: &'static [&'static str],
    legacy: bool,
}

/// Writes, with plain Redis commands, what keygate's first layout held for org `acme`.
fn write_layout_1(redis: &Redis, keys: &[OldKey]) {
    let now = unix_now();
    let created = now.to_string();
    redis.cmd(&["SADD", "kg:orgs", "acme"]);
    redis.cmd(&[
        "HSET",
        "kg:org:acme",
        "name",
        "Acme",
        "created_at",
        &created,
    ]);
    for (user, role, status) in [
        ("alice", "member", "active"),
        ("ada", "admin", "active"),
        ("dora", "member", "disabled"),
    ] {
        redis.cmd(&[
            "HSET",
            &format!("kg:user:{user}"),
            "org_id",
            "acme",
            "name",
            user,
            "role",
            role,
            "status",
            status,
            "created_at",
            &created,
        ]);
        redis.cmd(&["SADD", "kg:org:acme:users", user]);
    }
    for (project, status) in [("p1", "active"), ("p2", "archived")] {
        redis.cmd(&[
            "HSET",
            &format!("kg:project:acme:{project}"),
            "org_id",
            "acme",
            "name",
            project,
            "visibility",
            "private",
            "status",
            status,
            "created_at",
            &created,
        ]);
        redis.cmd(&[
            "SADD",
            &format!("kg:project:acme:{project}:members"),
            "alice",
        ]);
        redis.cmd(&["SADD", "kg:org:acme:projects", project]);
    }
    for k in keys {
        let record = KeyRecord {
            grant: KeyGrant {
                id: KeyId::from(k.id),
                org_id: OrgId::from("acme"),
                user_id: UserId::from(k.owner),
                scopes: vec![Scope::new("predict")],
                project_ids: k.projects.iter().map(|p| ProjectId::from(*p)).collect(),
                status: k.status,
                created_at: now,
                expires_at: Some(now + 3600),
                hash: k.hash,
                previous_hash: k.previous,
                previous_expires_at: k.previous.map(|_| now + 3600),
            },
            name: k.id.to_owned(),
            display: "kg_…".to_owned(),
            legacy: k.legacy,
            last_used_at: Some(now - 10),
            request_count: 42,
        };
        let name = format!("kg:key:{}", k.id);
        let mut hset = vec!["HSET".to_owned(), name];
        // A new key's fields, then what rotations and usage add.
        let mut fields = record.to_fields();
        if let Some(previous) = k.previous {
            fields.push(("previous_hash", previous.to_hex()));
            fields.push(("previous_expires_at", (now + 3600).to_string()));
        }
        fields.push(("last_used_at", (now - 10).to_string()));
        fields.push(("request_count", "42".to_owned()));
        for (field, value) in fields {
            hset.extend([field.to_owned(), value]);
        }
        redis.cmd(&hset.iter().map(String::as_str).collect::<Vec<_>>());
        for hash in std::iter::once(k.hash).chain(k.previous) {
            redis.cmd(&["SET", &format!("kg:keyhash:{hash}"), k.id]);
        }
        redis.cmd(&["SADD", &format!("kg:user:{}:keys", k.owner), k.id]);
        redis.cmd(&["SADD", "kg:org:acme:keys", k.id]);
    }
    for (i, action) in ["org.create", "user.create", "key.create"]
        .iter()
        .enumerate()
    {
        redis.cmd(&[
            "XADD",
            "kg:org:acme:audit",
            &format!("1764000000000-{i}"),
            "actor",
            "cli:ops",
            "action",
            action,
            "target",
            "org:acme",
            "details",
            "{}",
        ]);
    }
}

fn keygate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The names of layout 1 still in Redis.
fn layout_1_names(redis: &Redis) -> usize {
    [
        "kg:org:*",
        "kg:user:*",
        "kg:project:*",
        "kg:key:*",
        "kg:keyhash:*",
    ]
    .iter()
    .map(|p| redis.cmd(&["KEYS", p]).matches("kg:").count())
    .sum()
}

#[tokio::test]
async fn a_store_of_the_first_layout_is_refused_until_migrated_and_then_answers_alike() {
    let redis = Redis::start();
    let upstream = Upstream::start().await;
    let format = KeyFormat::new("kg");
    let secrets: Vec<String> = (0..6).map(|_| format.generate()).collect();
    let [alice, rotated_new, rotated_old, revoked, dora, restricted] =
        <[String; 6]>::try_from(secrets).unwrap();
    let keys = [
        (
            "key_alice",
            "alice",
            &alice,
            None,
            KeyStatus::Active,
            &[][..],
        ),
        (
            "key_rotated",
            "alice",
            &rotated_new,
            Some(&rotated_old),
            KeyStatus::Active,
            &[],
        ),
        (
            "key_revoked",
            "alice",
            &revoked,
            None,
            KeyStatus::Revoked,
            &[],
        ),
        ("key_dora", "dora", &dora, None, KeyStatus::Active, &[]),
        (
            "key_p2",
            "alice",
            &restricted,
            None,
            KeyStatus::Active,
            &["p2"],
        ),
    ]
    .map(|(id, owner, secret, previous, status, projects)| OldKey {
        id,
        owner,
        hash: hash_key(secret),
        previous: previous.map(|s| hash_key(s)),
        status,
        projects,
        legacy: false,
    });
    let legacy = OldKey {
        id: "key_legacy",
        owner: "ada",
        hash: hash_legacy("OLD-ID", "old-secret-1"),
        previous: None,
        status: KeyStatus::Active,
        projects: &[],
        legacy: true,
    };
    let all: Vec<OldKey> = keys.into_iter().chain([legacy]).collect();
    write_layout_1(&redis, &all);
    let before = redis.cmd(&["DBSIZE"]);

    let dir = temp_dir("keygate-migrate-");
    let config = dir.path().join("keygate.toml");
    std::fs::write(&config, config_toml(&redis, &upstream, "")).unwrap();
    let config = config.to_str().unwrap();

    // Refused, saying what to run: by `serve` and by the CLI on the store.
    let (code, _, err) = keygate(&["serve", "--config", config]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("keygate migrate"), "{err}");
    let (code, _, err) = keygate(&["keys", "list", "--org", "acme", "--config", config]);
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("layout 1"), "{err}");

    // A dry run says what it would do and writes nothing.
    let (code, out, err) = keygate(&["migrate", "--dry-run", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("layout 1 -> 2: would copy 1 org(s), 3 user(s), 2 project(s), 6 key(s) (7 credential(s)), 3 audit entr(ies)"),
        "{out}"
    );
    assert!(out.contains("dry run"), "{out}");
    assert_eq!(redis.cmd(&["DBSIZE"]), before);

    let (code, out, err) = keygate(&["migrate", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("layout 1 -> 2: copied"), "{out}");
    assert_eq!(layout_1_names(&redis), 0);
    assert_eq!(redis.cmd(&["GET", "kg:schema"]), "$1\r\n2\r\n");
    let (code, out, _) = keygate(&["migrate", "--config", config]);
    assert_eq!(code, 0);
    assert!(
        out.contains("layout 2 already") && out.contains("deleted 0"),
        "{out}"
    );

    // As if the first run had stopped after copying: the old records are back and the store
    // is not marked. Running again finishes it, and copies nothing twice.
    write_layout_1(&redis, &all);
    redis.cmd(&["DEL", "kg:schema"]);
    let (code, _, err) = keygate(&["migrate", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(layout_1_names(&redis), 0);

    // Every key answers as it did in layout 1.
    let gw = Gateway::start(
        &config_toml(&redis, &upstream, ""),
        std::path::Path::new("."),
    )
    .await;
    assert_eq!(answer(gw.addr, "/v1/projects/p1/x", &alice).await, "ok");
    assert_eq!(
        answer(gw.addr, "/v1/projects/p1/x", &rotated_new).await,
        "ok"
    );
    assert_eq!(
        answer(gw.addr, "/v1/projects/p1/x", &rotated_old).await,
        "ok",
        "in its grace period"
    );
    assert_eq!(
        answer(gw.addr, "/v1/projects/p1/x", &revoked).await,
        "key_revoked"
    );
    assert_eq!(
        answer(gw.addr, "/v1/projects/p1/x", &dora).await,
        "user_disabled"
    );
    assert_eq!(
        answer(gw.addr, "/v1/projects/p1/x", &restricted).await,
        "key_project_mismatch"
    );
    assert_eq!(
        answer(gw.addr, "/v1/projects/p2/x", &restricted).await,
        "project_archived"
    );
    let (status, _, _) = get_with(
        gw.addr,
        "/v1/projects/p1/x",
        &[("apikey", "OLD-ID"), ("apisecret", "old-secret-1")],
    )
    .await;
    assert_eq!(status.as_u16(), 200, "the legacy pair");
    // Records, lists, usage and the audit log came along.
    let store = keygate::store::Store::open(&gw.config.redis).unwrap();
    let acme = OrgId::from("acme");
    assert_eq!(store.keys(&acme, None).await.unwrap().len(), 6);
    let key = store.key(&KeyId::from("key_alice")).await.unwrap();
    assert_eq!(key.request_count, 42);
    assert_eq!(
        store.user(&UserId::from("dora")).await.unwrap().status,
        UserStatus::Disabled
    );
    let audit = store.audit(&acme, None, 100).await.unwrap();
    let ids: Vec<&str> = audit.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        ["1764000000000-2", "1764000000000-1", "1764000000000-0"]
    );
    // Management goes on in the new layout: a revocation reaches the gateway.
    store
        .set_key_status(&KeyId::from("key_alice"), KeyStatus::Revoked)
        .await
        .unwrap();
    answers(gw.addr, "/v1/projects/p1/x", &alice, "key_revoked").await;
}
