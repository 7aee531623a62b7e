//! A tiny upstream for the demo and the benchmarks: answers every request with the same 64-byte
//! JSON body after reading (and counting) the request body.
//!
//! With `echo` (the demo), response headers show what keygate forwarded: `x-demo-key-id` (the
//! `x-keygate-key-id` it received) and `x-demo-received-bytes` (the size of the streamed request
//! body). Without (the benchmarks), every caller gets the same answer, so that a proxy which
//! forwards identity headers is not also handed more response headers to relay.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Exactly 64 bytes, like a small inference answer.
pub const BODY: &[u8; 64] = br#"{"model":"demo","label":"cat","score":0.97,"latency_ms":1.00000}"#;

/// Serves forever on a bound listener.
pub async fn serve(listener: TcpListener, echo: bool) -> std::io::Result<()> {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = builder
                .serve_connection(TokioIo::new(stream), service_fn(|req| answer(req, echo)))
                .await;
        });
    }
}

async fn answer(req: Request<Incoming>, echo: bool) -> Result<Response<Full<Bytes>>, Infallible> {
    let key_id = echo
        .then(|| req.headers().get("x-keygate-key-id").cloned())
        .flatten();
    let mut body = req.into_body();
    let mut received: u64 = 0;
    while let Some(Ok(frame)) = body.frame().await {
        received += frame.data_ref().map_or(0, |d| d.len() as u64);
    }
    let mut res = Response::new(Full::new(Bytes::from_static(BODY)));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if echo {
        h.insert("x-demo-received-bytes", HeaderValue::from(received));
        if let Some(id) = key_id {
            h.insert("x-demo-key-id", id);
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    #[test]
    fn body_is_64_bytes_of_json() {
        assert_eq!(super::BODY.len(), 64);
        let v: serde_json::Value = serde_json::from_slice(super::BODY).unwrap();
        assert_eq!(v["model"], "demo");
    }

    /// The answer's head to a request that carries an identity and a 5-byte body.
    async fn head(echo: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(super::serve(listener, echo));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST / HTTP/1.1\r\nhost: x\r\nx-keygate-key-id: key_1\r\ncontent-length: 5\r\n\
              connection: close\r\n\r\nhello",
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        server.abort();
        out.split("\r\n\r\n").next().unwrap().to_ascii_lowercase()
    }

    #[tokio::test]
    async fn only_echo_shows_what_was_forwarded() {
        let echoed = head(true).await;
        assert!(echoed.contains("x-demo-key-id: key_1"), "{echoed}");
        assert!(echoed.contains("x-demo-received-bytes: 5"), "{echoed}");
        let plain = head(false).await;
        assert!(plain.starts_with("http/1.1 200"), "{plain}");
        assert!(
            !plain.contains("x-demo-"),
            "the same answer for every caller: {plain}"
        );
    }
}
