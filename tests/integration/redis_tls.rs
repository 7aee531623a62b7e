//! keygate on a Redis that speaks only TLS and admits only an ACL user with a password, as
//! managed Redis services do: a `redis-server` started here with a test CA, on a free port.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::*;
use keygate::model::*;
use keygate::store::Store;

/// A TLS-only `redis-server` whose one user is `keygate` (the default user is off), stopped by
/// its own handle.
struct TlsRedis {
    port: u16,
    child: Child,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA, and a certificate for 127.0.0.1 signed by it: (ca.pem path, cert.pem, key.pem).
fn certificates(dir: &Path, name: &str) -> std::path::PathBuf {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let ca_path = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-cert.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    ca_path
}

fn start(dir: &Path) -> TlsRedis {
    certificates(dir, "redis");
    let port = free_port();
    let conf = dir.join("redis.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "port 0\ntls-port {port}\nbind 127.0.0.1\ntls-cert-file {d}/redis-cert.pem\n\
             tls-key-file {d}/redis-key.pem\ntls-ca-cert-file {d}/redis-ca.pem\n\
             tls-auth-clients no\nsave \"\"\nappendonly no\ndir {d}\n\
             user default off\nuser keygate on >s3cret-password ~* &* +@all\n"
        ),
    )
    .unwrap();
    let redis = TlsRedis {
        port,
        child: Command::new("redis-server")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server"),
    };
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return redis;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the TLS redis-server did not listen on {port}");
}

#[tokio::test]
async fn keygate_serves_from_a_tls_redis_as_an_acl_user_and_refuses_a_wrong_ca() {
    let dir = temp_dir("keygate-redis-tls-");
    let redis = start(dir.path());
    std::fs::write(dir.path().join("password"), "s3cret-password\n").unwrap();
    let upstream = Upstream::start().await;
    let redis_section = format!(
        "url = \"rediss://127.0.0.1:{}\"\nusername = \"keygate\"\npassword_file = \"password\"\nca_file = \"redis-ca.pem\"\n",
        redis.port
    );
    let toml = format!(
        "[[listener]]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n[redis]\n{redis_section}\
         [[route]]\nid = \"p\"\npath_prefix = \"/v1/projects\"\norg = \"acme\"\nproject = {{ segment = 3 }}\n\
         scopes = [\"inference\"]\nupstreams = [\"{}\"]\n",
        upstream.url()
    );
    let gw = Gateway::start(&toml, dir.path()).await;
    let store = Store::open(&gw.config.redis).unwrap();
    let acme = OrgId::from("acme");
    store.create_org(&acme, "Acme").await.unwrap();
    store
        .create_user(&acme, Some(UserId::from("alice")), "Alice", Role::Member)
        .await
        .unwrap();
    store
        .create_project(&acme, &ProjectId::from("p1"), "p1", Visibility::Public)
        .await
        .unwrap();
    let (key, _) = new_key(&store, &gw.config, "alice", &["predict"], &[]).await;
    answers(gw.addr, "/v1/projects/p1/x", &key, "ok").await;

    // Another CA: the certificate is refused, and the error says so.
    let other_ca = certificates(dir.path(), "other");
    let mut wrong = gw.config.redis.clone();
    wrong.tls.ca = Some(std::fs::read(other_ca).unwrap());
    let refused = Store::open(&wrong).unwrap().ping().await.unwrap_err();
    let said = keygate::telemetry::chain(&refused).to_ascii_lowercase();
    assert!(said.contains("certificate"), "{said}");
    // The right CA without the password: Redis refuses the connection.
    let mut anonymous = gw.config.redis.clone();
    anonymous.password = None;
    anonymous.username = None;
    assert!(Store::open(&anonymous).unwrap().ping().await.is_err());
}
