//! A world: Redis, an upstream and a gateway, with seeded orgs, users, projects and keys.

use std::path::Path;

use keygate::config::Config;
use keygate::model::*;
use keygate::store::Store;
use keygate::store::keys::NewKey;

use super::{Gateway, Redis, Upstream, config_toml};

/// Seeded data: ids and secrets tests use.
pub struct Keys {
    /// alice (member of p1): `inference` + `models:read`.
    pub alice: String,
    pub alice_id: KeyId,
    /// alice's key restricted to project p1.
    pub alice_p1_only: String,
    /// bob (member of p2): `inference`.
    pub bob: String,
    /// ada (admin): `*`.
    pub ada: String,
    /// gina of org globex: `inference`.
    pub gina: String,
}

pub struct World {
    pub redis: Redis,
    pub upstream: Upstream,
    pub gw: Gateway,
    pub store: Store,
    pub keys: Keys,
}

impl World {
    pub async fn start() -> World {
        World::start_with("").await
    }

    pub async fn start_with(extra_listener_toml: &str) -> World {
        let redis = Redis::start();
        let upstream = Upstream::start().await;
        let toml = config_toml(&redis, &upstream, extra_listener_toml);
        let gw = Gateway::start(&toml, Path::new(".")).await;
        let store = Store::open(&gw.config.redis).unwrap();
        let keys = seed(&store, &gw.config).await;
        gw.sync_invalidations(&redis).await;
        World {
            redis,
            upstream,
            gw,
            store,
            keys,
        }
    }

    /// A second replica sharing this world's Redis.
    pub async fn second_gateway(&self) -> Gateway {
        let toml = config_toml(&self.redis, &self.upstream, "");
        let mut gw = Gateway::start(&toml, Path::new(".")).await;
        gw.publish_baseline = self.redis.calls("publish");
        gw
    }
}

pub async fn new_key(
    store: &Store,
    config: &Config,
    user: &str,
    scopes: &[&str],
    projects: &[&str],
) -> (String, KeyId) {
    let created = store
        .create_key(
            &config.keys,
            NewKey {
                org_id: None,
                user_id: UserId::from(user),
                name: format!("{user}'s key"),
                scopes: scopes
                    .iter()
                    .map(|s| keygate::model::Scope::new(s))
                    .collect(),
                project_ids: projects.iter().map(|p| ProjectId::from(*p)).collect(),
                expires_at: Some(unix_now() + 3600),
            },
        )
        .await
        .unwrap();
    (created.secret, created.record.grant.id)
}

/// The orgs, users, projects and keys every world has.
pub async fn seed(store: &Store, config: &Config) -> Keys {
    let acme = OrgId::from("acme");
    let globex = OrgId::from("globex");
    store.create_org(&acme, "Acme").await.unwrap();
    store.create_org(&globex, "Globex").await.unwrap();
    for (org, id, role) in [
        (&acme, "alice", Role::Member),
        (&acme, "bob", Role::Member),
        (&acme, "ada", Role::Admin),
        (&acme, "gus", Role::Guest),
        (&globex, "gina", Role::Member),
    ] {
        store
            .create_user(org, Some(UserId::from(id)), id, role)
            .await
            .unwrap();
    }
    for (id, vis, member) in [
        ("p1", Visibility::Private, "alice"),
        ("p2", Visibility::Private, "bob"),
        ("pub", Visibility::Public, "bob"),
    ] {
        store
            .create_project(&acme, &ProjectId::from(id), id, vis)
            .await
            .unwrap();
        store
            .set_member(&acme, &ProjectId::from(id), &UserId::from(member), true)
            .await
            .unwrap();
    }
    store
        .create_project(
            &globex,
            &ProjectId::from("p1"),
            "globex p1",
            Visibility::Public,
        )
        .await
        .unwrap();
    let (alice, alice_id) = new_key(store, config, "alice", &["predict", "models:read"], &[]).await;
    Keys {
        alice,
        alice_id,
        alice_p1_only: new_key(store, config, "alice", &["predict"], &["p1"])
            .await
            .0,
        bob: new_key(store, config, "bob", &["predict"], &[]).await.0,
        ada: new_key(store, config, "ada", &["*"], &[]).await.0,
        gina: new_key(store, config, "gina", &["predict"], &[]).await.0,
    }
}
