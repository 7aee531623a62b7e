//! The shared state of one keygate replica: what the data plane (`proxy`) and the management
//! side (`admin`) both read.
//!
//! Owns: [`Replica`], one per worker thread (each has its own Redis connection; the rest is
//! shared). Does not own: anything only the data plane needs (upstream pools, per-route metric
//! handles and upstream health: `proxy::Gateway`), or starting, reloading and stopping the
//! replica (`lib.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::cache::Cache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::usage::Usage;
use crate::telemetry::Condition;
use crate::throttle::Throttle;

/// One worker's view of the replica.
#[derive(Clone)]
pub struct Replica {
    /// The validated configuration. A reload makes new `Replica`s with the new one; a request
    /// keeps the one it started with.
    pub config: Arc<Config>,
    /// This worker's Redis connection: its driver runs on the worker's own thread.
    pub store: Store,
    /// Hot entries in front of `store`, shared by every worker.
    pub cache: Arc<Cache>,
    /// The one registry every part counts into.
    pub metrics: Arc<Metrics>,
    /// Key uses counted since the last flush to Redis.
    pub usage: Arc<Usage>,
    /// Set on SIGTERM: `/readyz` turns 503 so balancers stop sending new connections.
    pub draining: Arc<AtomicBool>,
    /// What is failing now, so that each failure is logged when it starts and ends.
    pub health: Arc<Health>,
    /// Failed-authentication budgets, shared by every worker.
    pub throttle: Arc<Throttle>,
    /// Asks for the config file to be read again (`None`: the replica was not started from a
    /// file).
    pub reloads: Option<mpsc::Sender<ReloadRequest>>,
}

/// A request to read the config file again, and where its outcome goes: what changed, or why
/// the file was refused (nothing changed then).
pub type ReloadRequest = oneshot::Sender<Result<Reloaded, String>>;

/// What a good reload applied.
#[derive(Debug)]
pub struct Reloaded {
    pub routes: usize,
    /// Settings the file changes that only a restart applies (they keep their running values).
    pub restart_needed: Vec<&'static str>,
}

/// The failures a replica logs once per change (see [`Condition`]).
#[derive(Debug, Default)]
pub struct Health {
    /// Redis, as the request path sees it.
    pub store: Condition,
    /// A record in Redis that does not parse.
    pub corrupt_records: Condition,
}

impl Replica {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}
