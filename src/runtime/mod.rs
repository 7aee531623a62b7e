//! The hand-written runtime parts: code that exists for speed or for a bound hyper and tokio do
//! not give, each in place of a library part measured to cost more (the reasons are in each
//! file and in the commit log).
//!
//! - [`timer`]: a coarse clock for the per-request timeouts that almost never fire.
//! - [`drain`]: graceful stop of a listener's connections, one flag read per wake.
//! - [`h2_idle`]: closing HTTP/2 connections with no request in flight.
//! - [`progress`]: failing a request body that stops arriving.
//! - [`lingering`]: closing a connection without resetting a client that is still writing.
//!
//! Does not own: accepting or serving connections (`server`). Imports no other keygate module.

pub mod drain;
pub mod h2_idle;
pub mod lingering;
pub mod progress;
pub mod timer;

use tokio::sync::watch;

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
