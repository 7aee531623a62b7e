//! A private `redis-server` on a free loopback port, stopped by its own handle (never by name).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

/// A private `redis-server` on a free loopback port, with its own data directory.
pub struct Redis {
    pub port: u16,
    pub dir: PathBuf,
    /// Arguments before the common ones (a config file), and after them.
    args: (Vec<String>, Vec<String>),
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// A `redis-server` with extra arguments, e.g. a replica: `--replicaof 127.0.0.1 PORT`.
    pub fn start_with(extra: &[&str]) -> Redis {
        Redis::on(free_port(), extra)
    }

    /// A Redis Cluster node (not yet in a cluster), on a port whose cluster bus port is free.
    pub fn cluster_node() -> Redis {
        let cluster = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        ];
        Redis::on(super::free_cluster_port(), &cluster)
    }

    fn on(port: u16, extra: &[&str]) -> Redis {
        let mut r = Redis::unstarted(port);
        r.args.1 = extra.iter().map(|a| (*a).to_owned()).collect();
        r.spawn();
        r
    }

    /// A sentinel watching the master on `master_port` as `name`: a quorum of 2, and a master
    /// counted down after 500 ms without an answer.
    pub fn sentinel(master_port: u16, name: &str) -> Redis {
        let mut r = Redis::unstarted(free_port());
        let conf = r.dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "sentinel monitor {name} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {name} 500\n\
                 sentinel failover-timeout {name} 3000\n\
                 sentinel parallel-syncs {name} 1\n"
            ),
        )
        .unwrap();
        r.args.0 = vec![conf.display().to_string()];
        r.args.1 = vec!["--sentinel".to_owned()];
        r.spawn();
        r
    }

    fn unstarted(port: u16) -> Redis {
        let dir =
            std::env::temp_dir().join(format!("keygate-test-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Redis {
            port,
            dir,
            args: (Vec::new(), Vec::new()),
            child: None,
        }
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args.0)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args.1)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install Debian's package: apt-get install redis-server")
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Saves the data set, then stops the server (its data comes back on `restart`).
    pub fn stop(&mut self) {
        self.cmd(&["SAVE"]);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to this Redis, by its process id. Stopped, it keeps
    /// its connections open and answers nothing: a hung server, not a gone one.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let sent = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {signal} {pid}");
    }

    /// Runs a command with redis-cli-free RESP over a plain socket; returns the raw reply.
    pub fn cmd(&self, args: &[&str]) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.ends_with(b"\r\n") && n < buf.len() {
                break;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Calls of every command so far but `INFO` and `PING` (what tests and health checks send),
    /// from `INFO commandstats`: the work a request cost Redis.
    pub fn data_calls(&self) -> u64 {
        let info = self.cmd(&["INFO", "commandstats"]);
        info.lines()
            .filter(|l| !l.starts_with("cmdstat_info:") && !l.starts_with("cmdstat_ping:"))
            .filter_map(|l| {
                l.split_once(":calls=")?
                    .1
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// Calls of one command so far, from `INFO commandstats`.
    pub fn calls(&self, command: &str) -> u64 {
        let info = self.cmd(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
