//! Prometheus metrics: one [`Metrics`] built at start-up and passed down (no globals, so tests
//! don't share counters).
//!
//! Label values come only from bounded sets: route ids from the config (or `none`), outcomes
//! from error codes or `forwarded`, lookup results from [`crate::cache::Outcome`]. Never a raw
//! path, key or client address.

use std::sync::Mutex;

use crate::cache::Outcome;
use prometheus::process_collector::ProcessCollector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// HTTP status classes, the `status_class` label: index = first digit - 1.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index of a status code's class in [`STATUS_CLASSES`].
pub fn status_class(status: u16) -> usize {
    (status / 100).clamp(1, 5) as usize - 1
}

/// Latency buckets in seconds: 100 µs to 60 s (inference responses can be slow).
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
    15.0, 60.0,
];

pub struct Metrics {
    registry: Registry,
    /// `keygate_requests_total{route, outcome, status_class}`.
    pub requests: IntCounterVec,
    /// `keygate_request_duration_seconds{route}`: from request head to response head.
    pub request_duration: HistogramVec,
    /// `keygate_upstream_duration_seconds{route}`: upstream time to response head.
    pub upstream_duration: HistogramVec,
    /// `keygate_key_lookups_total{result}`: hit, miss, negative, stale, error.
    pub key_lookups: IntCounterVec,
    /// The children of `key_lookups`, in [`LOOKUP_RESULTS`] order, resolved once.
    key_lookup_results: [IntCounter; 5],
    /// `keygate_redis_errors_total`: Redis failures seen by key lookups (each waiting request
    /// counts), the invalidation subscriber and the usage writer.
    pub redis_errors: IntCounter,
    /// `keygate_cache_entries{kind}`: set at scrape time.
    pub cache_entries: IntGaugeVec,
    /// `keygate_invalidations_received_total`.
    pub invalidations: IntCounter,
    /// `keygate_open_connections`: downstream connections on data-plane listeners.
    pub open_connections: IntGauge,
    /// `keygate_auth_throttled_total{reason}`: requests refused by a failed-authentication
    /// budget (`client`, `unknown_keys`), without a store lookup.
    pub auth_throttled: IntCounterVec,
    /// `keygate_key_store_reachable`: 0 while the request path finds Redis failing (set when
    /// scraped).
    pub store_reachable: IntGauge,
    /// `keygate_invalidations_live`: 0 while the invalidation subscription is down, when no cache
    /// entry counts as fresh (set when scraped).
    pub invalidations_live: IntGauge,
    /// `keygate_config_reload_total{result}`: `ok`, or `error` (the file was refused and
    /// nothing changed).
    pub config_reloads: IntCounterVec,
    /// `keygate_config_last_reload_successful`: 0 after a refused reload, 1 after a good one.
    pub config_last_reload_successful: IntGauge,
    /// `keygate_config_last_reload_success_timestamp_seconds`: when the running config was
    /// loaded (start-up or the last good reload), Unix seconds.
    pub config_last_reload_success: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "keygate_requests_total",
                "Requests by route, outcome and status class.",
            ),
            &["route", "outcome", "status_class"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "keygate_request_duration_seconds",
                "Time from request head to response head.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "keygate_upstream_duration_seconds",
                "Upstream time to response head.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let key_lookups = IntCounterVec::new(
            Opts::new(
                "keygate_key_lookups_total",
                "Key lookups by result (hit, miss, negative, stale, error).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let redis_errors = IntCounter::new(
            "keygate_redis_errors_total",
            "Redis failures seen by key lookups, the invalidation subscriber and the usage writer.",
        )
        .expect("valid metric");
        let cache_entries = IntGaugeVec::new(
            Opts::new("keygate_cache_entries", "Entries in the hot cache by kind."),
            &["kind"],
        )
        .expect("valid metric");
        let invalidations = IntCounter::new(
            "keygate_invalidations_received_total",
            "Invalidation messages received from Redis pub/sub.",
        )
        .expect("valid metric");
        let store_reachable = IntGauge::new(
            "keygate_key_store_reachable",
            "1 while the request path reaches Redis, 0 while it finds it failing.",
        )
        .expect("valid metric");
        let invalidations_live = IntGauge::new(
            "keygate_invalidations_live",
            "1 while the invalidation subscription is live, 0 while cache entries count as stale.",
        )
        .expect("valid metric");
        let auth_throttled = IntCounterVec::new(
            Opts::new(
                "keygate_auth_throttled_total",
                "Requests refused by a failed-authentication budget, without a store lookup.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in ["client", "unknown_keys"] {
            auth_throttled.with_label_values(&[reason]);
        }
        let open_connections =
            IntGauge::new("keygate_open_connections", "Open data-plane connections.")
                .expect("valid metric");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "keygate_config_reload_total",
                "Config reloads by result: ok, or error (the file was refused; nothing changed).",
            ),
            &["result"],
        )
        .expect("valid metric");
        for result in ["ok", "error"] {
            config_reloads.with_label_values(&[result]);
        }
        let config_last_reload_successful = IntGauge::new(
            "keygate_config_last_reload_successful",
            "1 when the last config reload (or the start) succeeded, 0 after a refused reload.",
        )
        .expect("valid metric");
        config_last_reload_successful.set(1);
        let config_last_reload_success = IntGauge::new(
            "keygate_config_last_reload_success_timestamp_seconds",
            "When the running config was loaded (start-up or the last good reload).",
        )
        .expect("valid metric");
        config_last_reload_success.set(crate::model::unix_now() as i64);
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(key_lookups.clone()),
            Box::new(redis_errors.clone()),
            Box::new(cache_entries.clone()),
            Box::new(invalidations.clone()),
            Box::new(open_connections.clone()),
            Box::new(auth_throttled.clone()),
            Box::new(store_reachable.clone()),
            Box::new(invalidations_live.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_last_reload_successful.clone()),
            Box::new(config_last_reload_success.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, … from
        // /proc: what an operator checks first when a replica misbehaves.
        registry
            .register(Box::new(ProcessCollector::for_self()))
            .expect("metric names are unique");
        let key_lookup_results = LOOKUP_RESULTS.map(|r| key_lookups.with_label_values(&[r]));
        Metrics {
            registry,
            key_lookup_results,
            requests,
            request_duration,
            upstream_duration,
            key_lookups,
            redis_errors,
            cache_entries,
            invalidations,
            open_connections,
            auth_throttled,
            store_reachable,
            invalidations_live,
            config_reloads,
            config_last_reload_successful,
            config_last_reload_success,
        }
    }

    /// Counts one key lookup by its result.
    pub fn key_lookup(&self, outcome: Option<Outcome>) {
        let i = match outcome {
            Some(Outcome::Hit) => 0,
            Some(Outcome::Miss) => 1,
            Some(Outcome::Negative) => 2,
            Some(Outcome::Stale) => 3,
            None => 4,
        };
        self.key_lookup_results[i].inc();
    }

    /// The handles of one route's series (`route` is a route id, or `none`), resolved once so
    /// that a request updates them without hashing label values.
    pub fn route(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            forwarded: STATUS_CLASSES.map(|class| {
                self.requests
                    .with_label_values(&[route, "forwarded", class])
            }),
            by_error: Mutex::default(),
            route: route.to_owned(),
            requests: self.requests.clone(),
            request_duration: self.request_duration.with_label_values(&[route]),
            upstream_duration: self.upstream_duration.with_label_values(&[route]),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

/// The `result` label of `keygate_key_lookups_total`, indexed as in [`Metrics::key_lookup`].
const LOOKUP_RESULTS: [&str; 5] = ["hit", "miss", "negative", "stale", "error"];

/// One route's request series.
pub struct RouteMetrics {
    /// `keygate_requests_total{route, outcome="forwarded", status_class}`, by status class.
    pub forwarded: [IntCounter; 5],
    /// `keygate_requests_total{route, outcome=<error code>, status_class}`, resolved on first
    /// use (a route sees few kinds of error): a short list, scanned.
    by_error: Mutex<Vec<(&'static str, usize, IntCounter)>>,
    route: String,
    requests: IntCounterVec,
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
}

impl RouteMetrics {
    /// Counts a request that ended in the error `code`, answered with a status of `class`
    /// (an index into [`STATUS_CLASSES`]).
    pub fn count_error(&self, code: &'static str, class: usize) {
        let mut seen = self.by_error.lock().expect("poisoned");
        match seen.iter().find(|(c, k, _)| *c == code && *k == class) {
            Some((_, _, counter)) => counter.inc(),
            None => {
                let counter =
                    self.requests
                        .with_label_values(&[&self.route, code, STATUS_CLASSES[class]]);
                counter.inc();
                seen.push((code, class, counter));
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
