//! TLS for data-plane listeners: a certificate written to PEM files, and a client handshake.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;

/// A fresh self-signed certificate for `localhost`, written to `cert.pem` and `key.pem` in
/// `dir` (over any already there); returns the listener's TOML line and the certificate.
pub fn tls_files(dir: &tempfile::TempDir) -> (String, CertificateDer<'static>) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, signing_key.serialize_pem()).unwrap();
    let line = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        c.display(),
        k.display()
    );
    (line, cert.der().clone())
}

/// A TLS handshake with `addr` as `localhost`, trusting only `cert`, offering `alpn`.
pub async fn tls_handshake(
    addr: std::net::SocketAddr,
    cert: &CertificateDer<'static>,
    alpn: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
}
