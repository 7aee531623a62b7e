//! `deploy/local/demo.sh` as a newcomer runs it (with the debug binary instead of a release
//! build, free ports and a temporary store): it serves, prints a key and working exports, refuses
//! to start beside a running demo without touching its data, and stops everything on SIGTERM.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_keygate");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/demo.sh");

/// The demo's four ports, each free now.
struct Ports {
    keygate: u16,
    admin: u16,
    upstream: u16,
    redis: u16,
}

fn demo(ports: &Ports, dir: &tempfile::TempDir) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(SCRIPT)
        .env("KEYGATE_BIN", BIN)
        .env("DEMO_DIR", dir.path())
        .env("KEYGATE_PORT", ports.keygate.to_string())
        .env("ADMIN_PORT", ports.admin.to_string())
        .env("UPSTREAM_PORT", ports.upstream.to_string())
        .env("REDIS_PORT", ports.redis.to_string())
        .env_remove("KEYGATE_URL")
        .env_remove("KEYGATE_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Sends SIGTERM to a demo script by its pid when dropped, so that a failing test still stops
/// what the script started (its trap stops them; SIGKILL would leave them running).
struct Terminate(u32);

impl Drop for Terminate {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.to_string()])
            .status();
    }
}

/// The value after `name=` on the line of the demo's output that has it.
fn exported<'a>(output: &'a str, name: &str) -> &'a str {
    let at = output.find(&format!("{name}=")).expect(name) + name.len() + 1;
    output[at..].split_whitespace().next().unwrap()
}

async fn refused(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

#[tokio::test]
async fn the_demo_serves_refuses_a_second_run_and_stops_on_sigterm() {
    let ports = Ports {
        keygate: free_port(),
        admin: free_port(),
        upstream: free_port(),
        redis: free_port(),
    };
    let dir = temp_dir("keygate-demo-");
    let mut first = demo(&ports, &dir).spawn().unwrap();
    let stop = Terminate(first.id().unwrap());
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if line.starts_with("Ctrl-C stops") {
                return;
            }
        }
        panic!("the demo ended early:\n{printed}");
    });
    read.await.expect("the demo printed its instructions");
    let gw: SocketAddr = format!("127.0.0.1:{}", ports.keygate).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", ports.admin).parse().unwrap();
    eventually(
        "the demo serves",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            match refused(admin).await {
                true => Err("not yet".to_owned()),
                false => Ok(()),
            }
        },
    )
    .await;

    // The key it printed works on the data plane; the exports it printed manage keys.
    let key = printed
        .split("apikey: ")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    answers(gw, "/v1/projects/my-model/predict", key, "ok").await;
    let listed = tokio::process::Command::new(BIN)
        .args(["keys", "list"])
        .env("KEYGATE_URL", exported(&printed, "KEYGATE_URL"))
        .env("KEYGATE_API_KEY", exported(&printed, "KEYGATE_API_KEY"))
        .output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && table.contains("demo key"),
        "{listed:?}"
    );

    // The README's next steps work as printed (against this run's ports).
    let readme = include_str!("../../README.md");
    let steps = readme
        .split("## After the demo")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|block| block.split("```").next())
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("export "))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("127.0.0.1:8080", &gw.to_string());
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let ran = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &steps])
        .env("PATH", path)
        .env("KEYGATE_URL", exported(&printed, "KEYGATE_URL"))
        .env("KEYGATE_API_KEY", exported(&printed, "KEYGATE_API_KEY"))
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let statuses: Vec<&str> = out.lines().filter(|l| l.starts_with("HTTP/1.1")).collect();
    assert_eq!(
        statuses,
        ["HTTP/1.1 200 OK", "HTTP/1.1 401 Unauthorized"],
        "{out}"
    );
    assert!(out.contains("key_revoked"), "{out}");

    // A second run finds the ports taken, says which, and leaves the first one's data alone.
    let before: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    let second = demo(&ports, &dir).output().await.unwrap();
    let said = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{said}");
    assert!(
        said.contains("is in use") && said.contains("KEYGATE_PORT"),
        "{said}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before.len());
    answers(gw, "/v1/projects/my-model/predict", key, "ok").await;

    // SIGTERM to the script (its own pid) stops keygate, the upstream and Redis.
    drop(stop);
    let status = tokio::time::timeout(Duration::from_secs(20), first.wait())
        .await
        .expect("the demo stopped")
        .unwrap();
    assert_eq!(
        status.code(),
        Some(143),
        "exit status of a script stopped by SIGTERM"
    );
    for port in [ports.keygate, ports.admin, ports.upstream, ports.redis] {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(refused(addr).await, "port {port} is still served");
    }
}
