//! Redis Sentinel: keygate finds the master through the sentinels and follows a failover, for
//! its commands and its invalidation subscription, without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;
use keygate::model::*;
use keygate::store::Store;

const MASTER: &str = "kgmaster";

/// One master, one replica, three sentinels that know both and each other.
struct Sentinels {
    master: Redis,
    replica: Redis,
    sentinels: Vec<Redis>,
}

impl Sentinels {
    async fn start() -> Sentinels {
        let master = Redis::start();
        let port = master.port.to_string();
        let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &port]);
        let sentinels: Vec<Redis> = (0..3)
            .map(|_| Redis::sentinel(master.port, MASTER))
            .collect();
        let replica_port = format!("{}", replica.port);
        eventually(
            "the sentinels know the replica and each other",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || async {
                for s in &sentinels {
                    let replicas = s.cmd(&["SENTINEL", "replicas", MASTER]);
                    let peers = s.cmd(&["SENTINEL", "sentinels", MASTER]);
                    if !replicas.contains(&replica_port) || peers.matches("name").count() < 2 {
                        return Err(format!("{replicas} {peers}"));
                    }
                }
                Ok(())
            },
        )
        .await;
        Sentinels {
            master,
            replica,
            sentinels,
        }
    }

    /// The standard test config, on this set through the sentinels.
    fn config(&self, upstream: &Upstream) -> String {
        let list: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("\"127.0.0.1:{}\"", s.port))
            .collect();
        config_toml(&self.master, upstream, "").replace(
            &format!("url = \"{}\"", self.master.url()),
            &format!(
                "mode = \"sentinel\"\nsentinels = [{}]\nmaster_name = \"{MASTER}\"",
                list.join(", ")
            ),
        )
    }
}

#[tokio::test]
async fn keygate_follows_a_sentinel_failover() {
    let set = Sentinels::start().await;
    let upstream = Upstream::start().await;
    let toml = set.config(&upstream);
    assert!(toml.contains("mode = \"sentinel\""));
    let (gw1, gw2) = (
        Gateway::start(&toml, std::path::Path::new(".")).await,
        Gateway::start(&toml, std::path::Path::new(".")).await,
    );
    let store = Store::open(&gw1.config.redis).unwrap();
    let keys = seed(&store, &gw1.config).await;
    let path = "/v1/projects/p1/x";
    for gw in [&gw1, &gw2] {
        assert_eq!(answer(gw.addr, path, &keys.alice).await, "ok");
    }
    // Keys no replica has looked up yet, and one revoked before the failover: revoked on the
    // replica too before the master goes (a revocation the master never passed on is the one
    // documented exception).
    let mut fresh = Vec::new();
    for _ in 0..10 {
        fresh.push(
            new_key(&store, &gw1.config, "alice", &["predict"], &[])
                .await
                .0,
        );
    }
    let (revoked, revoked_id) = new_key(&store, &gw1.config, "alice", &["predict"], &[]).await;
    let (later, later_id) = new_key(&store, &gw1.config, "alice", &["predict"], &[]).await;
    for gw in [&gw1, &gw2] {
        assert_eq!(answer(gw.addr, path, &revoked).await, "ok");
        assert_eq!(answer(gw.addr, path, &later).await, "ok");
    }
    store
        .set_key_status(&revoked_id, KeyStatus::Revoked)
        .await
        .unwrap();
    let record = format!("kg:{{acme}}:key:{revoked_id}");
    eventually(
        "the replica has the revocation",
        Duration::from_secs(5),
        Duration::from_millis(10),
        || async {
            let status = set.replica.cmd(&["HGET", &record, "status"]);
            match status.contains("revoked") {
                true => Ok(()),
                false => Err(status),
            }
        },
    )
    .await;
    for gw in [&gw1, &gw2] {
        answers(gw.addr, path, &revoked, "key_revoked").await;
    }

    // Steady load on both replicas with the revoked key and a good one, through the failover.
    let running = Arc::new(AtomicBool::new(true));
    let served_revoked = Arc::new(AtomicUsize::new(0));
    // Four clients on each replica, so that the load goes on while some wait on the store.
    let clients = [gw1.addr, gw2.addr].into_iter().flat_map(|addr| [addr; 4]);
    let load: Vec<_> = clients
        .map(|addr| {
            let (running, served) = (running.clone(), served_revoked.clone());
            let (good, bad) = (keys.alice.clone(), revoked.clone());
            tokio::spawn(async move {
                let mut requests = 0;
                while running.load(Ordering::Relaxed) {
                    if answer(addr, path, &bad).await == "ok" {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = answer(addr, path, &good).await;
                    requests += 2;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                requests
            })
        })
        .collect();

    let killed = Instant::now();
    set.master.signal("-KILL");
    // Uncached keys are served again once keygate reaches the new master.
    let mut next = fresh.iter();
    let mut key = next.next().unwrap();
    let uncached_back = loop {
        match answer(gw1.addr, path, key).await.as_str() {
            "ok" => break killed.elapsed(),
            "key_store_unavailable" => {}
            other => panic!("an uncached key got {other}"),
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "no failover");
        tokio::time::sleep(Duration::from_millis(20)).await;
        key = next.next().unwrap_or(key);
    };
    // A revocation made after the failover is enforced on both replicas.
    let revoking = Instant::now();
    loop {
        match store.set_key_status(&later_id, KeyStatus::Revoked).await {
            Ok(_) => break,
            Err(e) if e.is_unavailable() => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("{e}"),
        }
        assert!(
            revoking.elapsed() < Duration::from_secs(30),
            "the store never recovered"
        );
    }
    let committed = Instant::now();
    for gw in [&gw1, &gw2] {
        eventually(
            "the revocation after the failover reaches the replica",
            Duration::from_secs(10),
            Duration::from_millis(5),
            || async {
                match answer(gw.addr, path, &later).await.as_str() {
                    "key_revoked" => Ok(()),
                    other => Err(other.to_owned()),
                }
            },
        )
        .await;
    }
    let revocation_enforced = committed.elapsed();
    running.store(false, Ordering::Relaxed);
    let mut requests = 0;
    for task in load {
        requests += task.await.unwrap();
    }
    eprintln!(
        "sentinel failover: uncached keys served again {uncached_back:?} after SIGKILL of the \
         master; a revocation after it enforced on both replicas in {revocation_enforced:?}; \
         {requests} requests under load"
    );
    assert_eq!(
        served_revoked.load(Ordering::Relaxed),
        0,
        "a key revoked before the failover was served"
    );
    assert!(requests > 20, "{requests}");
    assert!(uncached_back < Duration::from_secs(15), "{uncached_back:?}");
    assert!(
        revocation_enforced < Duration::from_secs(2),
        "{revocation_enforced:?}"
    );
    assert_eq!(answer(gw2.addr, path, &keys.alice).await, "ok");
    let _ = &set.replica;
}
