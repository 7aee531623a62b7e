//! The integration tests, in one binary (one link instead of nine, and one copy of the
//! harness): keygate in process or as its real binary, against a real `redis-server` and real
//! HTTP upstreams, all on 127.0.0.1.

mod harness;

mod api;
mod cli;
mod cluster;
mod consistency;
mod console;
mod demo;
mod directory;
mod layers;
mod lifecycle;
mod migrate;
mod proxy;
mod redis_tls;
mod reload;
mod sentinel;
mod streaming;
mod tenancy;
mod upload;
