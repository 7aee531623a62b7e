//! Logging and request ids: tracing-subscriber, human or JSON, filtered by `log.level` (or
//! `RUST_LOG`); the `x-request-id` each request is logged and answered with.
//!
//! The access log is the `keygate::access` target: one line per request with request id, route,
//! key id, status, duration and outcome; never a key or secret.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    pub access_log: bool,
}

/// Installs the global subscriber. Call once, from the binary.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    // Colour only on a terminal: a log file or a collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// The request id header: taken from the client when sane, sent upstream and answered.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client's `x-request-id` when it is sane (1–128 visible ASCII), else a new random one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(X_REQUEST_ID)
        && (1..=128).contains(&v.len())
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return v.clone();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let id: u128 = rand::random();
    let mut hex = [0u8; 32];
    for (i, digit) in hex.iter_mut().enumerate() {
        *digit = HEX[(id >> (124 - 4 * i)) as usize & 0xf];
    }
    HeaderValue::from_bytes(&hex).expect("hex is a valid header value")
}

/// Something that is either fine or failing, logged once when it starts failing and once when
/// it is fine again, never once per event: in an outage every request fails alike, and a line
/// each would drown the log. The events themselves are counted in metrics.
#[derive(Debug, Default)]
pub struct Condition {
    failing: AtomicBool,
}

impl Condition {
    /// Records a failure; true when this one starts the failing state (the caller logs it).
    pub fn failed(&self) -> bool {
        !self.failing.swap(true, Ordering::Relaxed)
    }

    /// Whether it is failing now.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Records a success; true when this one ends a failing state. A plain load while fine.
    pub fn recovered(&self) -> bool {
        self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed)
    }
}

/// An error and its causes, outermost first, as one line: "a: b: c".
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_sane_else_new_hex() {
        let mut h = HeaderMap::new();
        let a = request_id(&h);
        let b = request_id(&h);
        assert_eq!(a.len(), 32);
        assert!(
            a.as_bytes()
                .iter()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
    }

    #[test]
    fn a_condition_reports_each_change_once() {
        let c = Condition::default();
        assert!(!c.recovered(), "fine to begin with");
        assert!(c.failed(), "the first failure starts it");
        assert!(!c.failed(), "later ones do not");
        assert!(c.recovered(), "the first success ends it");
        assert!(!c.recovered());
        assert!(c.failed(), "and it can fail again");
    }

    #[test]
    fn a_chain_names_every_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("the key store is unreachable")]
        struct Outer(#[source] std::io::Error);
        let outer = Outer(std::io::Error::other("broken pipe"));
        assert_eq!(chain(&outer), "the key store is unreachable: broken pipe");
    }
}
