//! A 50 MB upload streams through keygate without keygate's memory growing by its size.
//! (Its own test binary: RSS is per process, so nothing else may run beside it.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::harness::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

const CHUNK: usize = 64 * 1024;
const UPLOAD: usize = 50 * 1024 * 1024;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Streams `total` bytes (one shared 64 KiB chunk, so the client holds no copy of the body).
async fn upload(w: &World, total: usize, declare_length: bool) -> (u16, http::HeaderMap, Bytes) {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let frames = futures_util::stream::iter(
        (0..total / CHUNK)
            .map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone()))),
    );
    let mut req = Request::post(w.gw.url("/v1/projects/p1/upload")).header("apikey", &w.keys.alice);
    if declare_length {
        req = req.header("content-length", total);
    }
    let body = BodyExt::boxed(StreamBody::new(frames));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let res = client.request(req.body(body).unwrap()).await.unwrap();
    let (parts, body) = res.into_parts();
    (
        parts.status.as_u16(),
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_upload_streams_without_growing_memory() {
    let w = World::start().await;
    upload(&w, 4 * CHUNK, true).await; // warm up pools and buffers
    let baseline = rss_bytes();
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let (status, headers, _) = upload(&w, UPLOAD, true).await;
    sampler.abort();
    assert_eq!(status, 200);
    assert_eq!(headers["x-upstream-received"], UPLOAD.to_string().as_str());
    assert_eq!(w.upstream.last().body_len, UPLOAD as u64);
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    assert!(
        growth < 16 * 1024 * 1024,
        "RSS grew by {} MiB for a 50 MiB upload",
        growth / (1024 * 1024)
    );
}
