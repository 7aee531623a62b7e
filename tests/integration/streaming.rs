//! Streaming, protocols and shutdown: server-sent events chunk by chunk, TLS with ALPN (HTTP/1.1
//! and HTTP/2), HTTP/2 prior knowledge on plaintext, and graceful drain.

use std::time::{Duration, Instant};

use crate::harness::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::test]
async fn server_sent_events_arrive_chunk_by_chunk() {
    let w = World::start().await;
    let req = Request::get(w.gw.url("/v1/projects/p1/sse"))
        .header("apikey", &w.keys.alice)
        .body(http_body_util::Full::default())
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let mut arrivals = Vec::new();
    let started = Instant::now();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            arrivals.push((
                started.elapsed(),
                String::from_utf8_lossy(&data).into_owned(),
            ));
        }
    }
    let text: String = arrivals.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(text, "data: event 0\n\ndata: event 1\n\ndata: event 2\n\n");
    // The upstream sends events 300 ms apart; buffering would deliver them together at the end.
    assert!(arrivals.len() >= 3, "{arrivals:?}");
    let first = arrivals[0].0;
    let last = arrivals.last().unwrap().0;
    assert!(
        last - first >= Duration::from_millis(500),
        "events were buffered: {arrivals:?}"
    );
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    cert: &rustls::pki_types::CertificateDer<'static>,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tls = tls_handshake(addr, cert, alpn).await.unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(alpn),
        "ALPN negotiated"
    );
    tls
}

fn request(w: &World, version: http::Version) -> Request<Empty<Bytes>> {
    Request::get(format!("https://localhost{}", "/v1/projects/p1/tls"))
        .version(version)
        .header("apikey", &w.keys.alice)
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn tls_serves_http1_and_http2_by_alpn() {
    // The private key is removed when the test ends, pass or fail.
    let dir = temp_dir("keygate-tls-");
    let (line, cert) = tls_files(&dir);
    let w = World::start_with(&line).await;

    let io = TokioIo::new(tls_connect(w.gw.addr, &cert, b"http/1.1").await);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let res = sender
        .send_request(request(&w, http::Version::HTTP_11))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(w.upstream.last().headers["x-forwarded-proto"], "https");

    let io = TokioIo::new(tls_connect(w.gw.addr, &cert, b"h2").await);
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = request(&w, http::Version::HTTP_2);
    *req.uri_mut() = "https://localhost/v1/projects/p1/tls2".parse().unwrap();
    req.headers_mut().remove("host");
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), http::Version::HTTP_2);
    let seen = w.upstream.last();
    assert_eq!(seen.path_and_query, "/v1/projects/p1/tls2");
    assert_eq!(seen.headers["x-keygate-user-id"], "alice");
    assert_eq!(seen.headers["x-forwarded-host"], "localhost");
}

#[tokio::test]
async fn plaintext_http2_with_prior_knowledge() {
    let w = World::start().await;
    let io = TokioIo::new(tokio::net::TcpStream::connect(w.gw.addr).await.unwrap());
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("http://{}/v1/projects/p1/h2c", w.gw.addr))
        .header("apikey", &w.keys.alice)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(
        (res.status().as_u16(), res.version()),
        (200, http::Version::HTTP_2)
    );
    assert_eq!(w.upstream.last().path_and_query, "/v1/projects/p1/h2c");
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_turns_readyz_503() {
    let mut w = World::start().await;
    let in_flight = tokio::spawn({
        let (addr, key) = (w.gw.addr, w.keys.alice.clone());
        async move { get_with(addr, "/v1/projects/p1/slow?ms=600", &[("apikey", &key)]).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    w.gw.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _, body) = get(w.gw.admin, "/readyz").await;
    assert_eq!(status.as_u16(), 503);
    assert!(String::from_utf8_lossy(&body).contains("draining"));
    // New connections are no longer accepted on the data plane.
    assert!(tokio::net::TcpStream::connect(w.gw.addr).await.is_err());
    let (status, _, _) = in_flight.await.unwrap();
    assert_eq!(status.as_u16(), 200, "the in-flight request finished");
    let task = w.gw.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("run() returned after draining")
        .unwrap();
}

#[tokio::test]
async fn an_undeclared_body_over_the_limit_is_cut_with_413() {
    let w = World::start().await; // max_body_bytes = 100,000,000
    let chunk = Bytes::from(vec![b'x'; 1 << 20]);
    let frames =
        futures_util::stream::iter((0..96).map(move |_| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk.clone()))
        }));
    let req = Request::post(w.gw.url("/v1/projects/p1/upload"))
        .header("apikey", &w.keys.alice)
        .body(BodyExt::boxed(http_body_util::StreamBody::new(frames)))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let res = client.request(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!((status, code(&body).as_str()), (413, "payload_too_large"));
}
