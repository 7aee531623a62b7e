//! Redis Cluster: three masters made by `redis-cli --cluster create`, keys of many orgs over all
//! of them, writes in one hash slot per org, invalidations to every replica, and a resharding
//! under load.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;
use keygate::model::*;
use keygate::store::Store;

/// Three cluster-enabled `redis-server`s, joined into one cluster with every slot assigned.
struct Cluster {
    nodes: Vec<Redis>,
}

impl Cluster {
    async fn start() -> Cluster {
        let nodes: Vec<Redis> = (0..3).map(|_| Redis::cluster_node()).collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let made = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let cluster = Cluster { nodes };
        cluster.wait_ok().await;
        cluster
    }

    async fn wait_ok(&self) {
        eventually(
            "every node says the cluster is ok",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async {
                for n in &self.nodes {
                    let info = n.cmd(&["CLUSTER", "INFO"]);
                    if !info.contains("cluster_state:ok") {
                        return Err(info);
                    }
                }
                Ok(())
            },
        )
        .await;
    }

    fn config(&self, upstream: &Upstream) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"127.0.0.1:{}\"", n.port))
            .collect();
        config_toml(&self.nodes[0], upstream, "").replace(
            &format!("url = \"{}\"", self.nodes[0].url()),
            &format!("mode = \"cluster\"\nnodes = [{}]", nodes.join(", ")),
        )
    }

    fn id(&self, i: usize) -> String {
        let reply = self.nodes[i].cmd(&["CLUSTER", "MYID"]);
        reply.lines().nth(1).unwrap().trim().to_owned()
    }
}

/// A key of a fresh org `org` (its one user `u`, a public project `p`), usable on the route for
/// every org at `/shared/projects/p/…`.
async fn org_with_key(
    store: &Store,
    config: &keygate::config::Config,
    org: &str,
) -> (String, KeyId) {
    let id = OrgId::from(org);
    store.create_org(&id, org).await.unwrap();
    let user = format!("{org}-u");
    store
        .create_user(&id, Some(UserId::from(user.as_str())), "u", Role::Member)
        .await
        .unwrap();
    store
        .create_project(&id, &ProjectId::from("p"), "p", Visibility::Public)
        .await
        .unwrap();
    new_key(store, config, &user, &["predict"], &[]).await
}

#[tokio::test]
async fn keygate_serves_from_a_cluster_and_a_resharding_changes_no_answer() {
    let cluster = Cluster::start().await;
    let upstream = Upstream::start().await;
    let toml = cluster.config(&upstream);
    let (gw1, gw2) = (
        Gateway::start(&toml, std::path::Path::new(".")).await,
        Gateway::start(&toml, std::path::Path::new(".")).await,
    );
    let store = Store::open(&gw1.config.redis).unwrap();
    let keys = seed(&store, &gw1.config).await;
    let path = "/shared/projects/p/x";
    let mut orgs = Vec::new();
    for i in 0..30 {
        orgs.push(org_with_key(&store, &gw1.config, &format!("org{i}")).await);
    }
    // The orgs' records are spread over all three masters.
    for (i, node) in cluster.nodes.iter().enumerate() {
        let size = node.cmd(&["DBSIZE"]);
        let size: u64 = size.trim_start_matches(':').trim().parse().unwrap();
        assert!(size > 10, "node {i} holds {size} records");
    }
    for gw in [&gw1, &gw2] {
        assert_eq!(
            answer(gw.addr, "/v1/projects/p1/x", &keys.alice).await,
            "ok"
        );
        for (key, _) in &orgs {
            assert_eq!(answer(gw.addr, path, key).await, "ok");
        }
    }

    // Revoke, rotate, delete: each is one org's transaction plus its indexes, and reaches both
    // replicas within 100 ms.
    let (revoked, revoked_id) = &orgs[5];
    let started = Instant::now();
    store
        .set_key_status(revoked_id, KeyStatus::Revoked)
        .await
        .unwrap();
    for gw in [&gw1, &gw2] {
        answers(gw.addr, path, revoked, "key_revoked").await;
    }
    let revocation = started.elapsed();
    assert!(revocation < Duration::from_millis(100), "{revocation:?}");
    let (old, rotated_id) = &orgs[6];
    let rotated = store
        .rotate_key(
            &gw1.config.keys,
            rotated_id,
            Duration::from_secs(3600),
            None,
        )
        .await
        .unwrap();
    for gw in [&gw1, &gw2] {
        assert_eq!(
            answer(gw.addr, path, old).await,
            "ok",
            "in its grace period"
        );
        assert_eq!(answer(gw.addr, path, &rotated.secret).await, "ok");
    }
    let (deleted, deleted_id) = &orgs[7];
    store
        .set_key_status(deleted_id, KeyStatus::Revoked)
        .await
        .unwrap();
    store.delete_key(deleted_id).await.unwrap();
    for gw in [&gw1, &gw2] {
        answers(gw.addr, path, deleted, "invalid_api_key").await;
    }

    // Keys nobody has looked up yet, asked for during a resharding of a third of the slots:
    // every answer is the right one (a moment of 503 is allowed, a wrong answer is not).
    let mut fresh = Vec::new();
    for (i, _) in orgs.iter().enumerate().skip(10) {
        let user = format!("org{i}-u");
        for _ in 0..10 {
            fresh.push(
                new_key(&store, &gw1.config, &user, &["predict"], &[])
                    .await
                    .0,
            );
        }
    }
    let running = Arc::new(AtomicBool::new(true));
    let load = [gw1.addr, gw2.addr].map(|addr| {
        let (running, fresh, revoked) = (running.clone(), fresh.clone(), revoked.clone());
        tokio::spawn(async move {
            let (mut wrong, mut unavailable, mut asked) = (Vec::new(), 0, 0);
            let mut keys = fresh.iter().cycle();
            while running.load(Ordering::Relaxed) {
                let key = keys.next().unwrap();
                match answer(addr, path, key).await.as_str() {
                    "ok" => {}
                    "key_store_unavailable" => unavailable += 1,
                    other => wrong.push(other.to_owned()),
                }
                if answer(addr, path, &revoked).await == "ok" {
                    wrong.push("a revoked key served".to_owned());
                }
                asked += 2;
            }
            (wrong, unavailable, asked)
        })
    });
    let (from, to) = (cluster.id(0), cluster.id(1));
    let resharded = tokio::task::spawn_blocking(move || {
        Command::new("redis-cli")
            .args(["--cluster", "reshard"])
            .arg(format!("127.0.0.1:{}", cluster.nodes[0].port))
            .args(["--cluster-from", &from, "--cluster-to", &to])
            .args(["--cluster-slots", "2000", "--cluster-yes"])
            .output()
            .map(|out| (out, cluster))
    })
    .await
    .unwrap()
    .unwrap();
    let (out, cluster) = resharded;
    assert!(out.status.success(), "{out:?}");
    cluster.wait_ok().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    running.store(false, Ordering::Relaxed);
    let (mut asked, mut unavailable) = (0, 0);
    for task in load {
        let (wrong, down, n) = task.await.unwrap();
        assert!(
            wrong.is_empty(),
            "wrong answers during the resharding: {wrong:?}"
        );
        asked += n;
        unavailable += down;
    }
    eprintln!(
        "cluster: a revocation reached both replicas in {revocation:?}; during the resharding of \
         2,000 slots: {asked} requests, {unavailable} answered 503, none wrong"
    );
    assert!(asked > 20, "{asked}");
    // Writes go on after the resharding, in the slots' new places.
    let (after, _) = org_with_key(&store, &gw1.config, "org-after").await;
    assert_eq!(answer(gw2.addr, path, &after).await, "ok");
}
