#!/usr/bin/env python3
"""keygate benchmarks, side by side with the baselines, on loopback.

Started by loadtests/run.sh (which installs wrk, nginx, gnuplot and redis-server and builds
keygate in release mode). Everything it starts it stops by its own process handle.

Configurations measured in the same run, interleaved (run 1 of each, then run 2 of each, ...):
  direct  - wrk straight to the upstream (a fast hyper server answering 64 bytes of JSON)
  nginx   - nginx reverse proxy with a `map` of the same API keys (401 for unknown ones)
  nginx-identity - the same nginx also sending the upstream the headers keygate adds (identity,
            request id, X-Forwarded-*) and returning the request id: the same job as keygate's
  floor   - examples/floor.rs: keygate's architecture, hyper and keygate's upstream pool, with
            only nginx's key check (a set lookup) on top: what the stack costs before keygate's
            own work
  keygate - keygate with the keys in Redis, all cached after the first request (scenario hot)
  keygate-full - a second keygate instance whose cache is full (filled from the cold keys at
            setup, then by the cold runs): the same hot keys among `cache.max_entries` others,
            as in production
tls and h2 compare keygate with nginx-identity on TLS listeners (the same self-signed P-256
certificate, TLS 1.3): tls-new makes a new connection, so a full handshake, for every request
(wrk, `Connection: close`); tls keeps connections alive; h2 sends many concurrent streams on a
few HTTP/2 connections (h2load, ALPN h2).
plus keygate-only scenarios: reject (malformed / unknown keys), cold (every request a different
key from 1,000,000 in Redis, on keygate-full, so the first instance's cache holds only the hot
keys in every run), cold-tls (the same on keygate-tls-redis, a third instance whose cache is
filled alike and which reaches the same Redis over TLS: `rediss://`, a private CA, TLS 1.3),
cold-cluster (the same on keygate-cluster, whose store is a Redis Cluster of three masters on
this machine, seeded with keys of its own), flood (1,000,000 distinct unknown keys), revocation under load, and a 100 MB
upload. Each figure is the median of the runs, with min-max spread.
"""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import random
import re
import socket
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# keygate writes counted key uses this often; the reject scenario waits this out before counting.
USAGE_FLUSH_SECONDS = 1
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_cluster_port():
    """A free port for a Redis Cluster node, whose cluster bus listens 10,000 ports higher."""
    while True:
        port = free_port()
        if port < 55000:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                    return port
                except OSError:
                    pass


def wait_port(port, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def fake_key(prefix="kg", valid_checksum=True):
    """A key in keygate's format that no store holds (or, with a bad checksum, a malformed one)."""
    body = "".join(random.choice(BASE62) for _ in range(32))
    n = zlib.crc32(f"{prefix}_{body}".encode())
    sum_ = ""
    for _ in range(6):
        sum_ = BASE62[n % 62] + sum_
        n //= 62
    if not valid_checksum:
        sum_ = sum_[:-1] + ("A" if sum_[-1] != "A" else "B")
    return f"{prefix}_{body}{sum_}"


class HttpClient:
    """One keep-alive connection for polling a key's status."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def status(self, key):
        self.conn.request("GET", "/v1/predict", headers={"apikey": key})
        res = self.conn.getresponse()
        res.read()
        return res.status


class Bench:
    def __init__(self, args):
        self.args = args
        self.procs = []
        self.dir = tempfile.mkdtemp(prefix="keygate-bench-")
        self.bin = os.path.abspath(args.bin)
        self.results = {}  # (scenario, config) -> list of wrk result dicts
        self.server_pids = {}  # port -> the processes serving it, for their CPU time per request
        self.keygates = {}  # port -> the keygate process serving it, for its CPU and RSS

    # ------------------------------------------------------------------ processes
    def start(self, cmd, name, **kw):
        log = open(os.path.join(self.dir, f"{name}.log"), "w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **kw)
        self.procs.append(p)
        return p

    def stop_all(self):
        """Stops every process this run started (by its own handle), then removes the run's
        directory: configs, logs, key files and the upload body leave nothing behind."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def redis(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.redis_port), *args], capture_output=True, text=True, check=True)
        return out.stdout

    def redis_commands(self):
        """Commands Redis has run, by name, but the `INFO` that asks and the `PING` with which
        keygate's invalidation subscriber checks its connection every second (requests never
        cause one)."""
        stats = self.redis("INFO", "commandstats")
        calls = {}
        for line in stats.splitlines():
            if line.startswith("cmdstat_") and not line.startswith(("cmdstat_info:", "cmdstat_ping:")):
                name, rest = line[len("cmdstat_"):].split(":", 1)
                calls[name] = int(rest.split("calls=")[1].split(",")[0])
        return calls

    def admin(self, *args, config=None):
        cmd = [self.bin, *args, "--config", config or self.config_path]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    def redis_cluster(self):
        """Three cluster-enabled Redis masters on this machine, every slot assigned."""
        self.cluster_ports = [free_cluster_port() for _ in range(3)]
        for port in self.cluster_ports:
            d = os.path.join(self.dir, f"cluster-{port}")
            os.makedirs(d)
            self.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                        "--dir", d, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "5000"], f"redis-cluster-{port}")
            wait_port(port)
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.cluster_ports],
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True)
        deadline = time.time() + 30
        while any("cluster_state:ok" not in subprocess.run(["redis-cli", "-p", str(p), "cluster", "info"],
                                                           capture_output=True, text=True).stdout
                  for p in self.cluster_ports):
            assert time.time() < deadline, "the cluster never came up"
            time.sleep(0.1)

    def keygate(self, name, port, admin_port, tls_port=None, redis_tls=False, redis_cluster=False):
        path = os.path.join(self.dir, f"{name}.toml")
        redis = (f'url = "rediss://127.0.0.1:{self.redis_tls_port}"\nca_file = "{self.dir}/redis-ca.pem"'
                 if redis_tls else f'url = "redis://127.0.0.1:{self.redis_port}"')
        if redis_cluster:
            nodes = ", ".join(f'"127.0.0.1:{p}"' for p in self.cluster_ports)
            redis = f'mode = "cluster"\nnodes = [{nodes}]'

        tls = "" if tls_port is None else f"""
[[listener]]
addr = "127.0.0.1:{tls_port}"
tls = {{ cert = "{self.dir}/cert.pem", key = "{self.dir}/key.pem" }}
"""
        with open(path, "w") as f:
            f.write(f"""
[server]
workers = {self.args.workers}
[[listener]]
addr = "127.0.0.1:{port}"
{tls}
[admin]
addr = "127.0.0.1:{admin_port}"
[redis]
{redis}
[cache]
max_entries = {self.args.cache_entries}
[keys]
usage_flush_interval = "{USAGE_FLUSH_SECONDS}s"
[limits]
# The reject and flood scenarios are one client sending unknown keys on purpose, to measure
# what each costs: the failed-authentication budgets would answer them 429 instead.
failed_auth_per_client = 0
unknown_key_lookups_per_second = 0
[log]
level = "warn"
access_log = false
[[route]]
id = "predict"
path_prefix = "/v1/predict"
org = "bench"
scopes = ["predict"]
upstreams = ["http://127.0.0.1:{self.upstream_port}"]
""")
        proc = self.start([self.bin, "serve", "--config", path], name)
        wait_port(port)
        wait_port(admin_port)
        self.server_pids[port] = [proc.pid]
        self.keygates[port] = proc
        if tls_port is not None:
            wait_port(tls_port)
            self.server_pids[tls_port] = [proc.pid]
            self.keygates[tls_port] = proc
        return path, proc

    def redis_certificates(self):
        """A private CA and a certificate for 127.0.0.1 signed by it, for Redis's TLS port."""
        d = self.dir
        run = lambda *cmd: subprocess.run(cmd, check=True, capture_output=True)
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
            "-subj", "/CN=keygate bench CA", "-keyout", f"{d}/redis-ca.key", "-out", f"{d}/redis-ca.pem")
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", f"{d}/redis.key", "-out", f"{d}/redis.csr")
        with open(f"{d}/redis.ext", "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
        run("openssl", "x509", "-req", "-in", f"{d}/redis.csr", "-CA", f"{d}/redis-ca.pem", "-CAkey", f"{d}/redis-ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", f"{d}/redis.ext", "-out", f"{d}/redis.pem")

    def setup(self):
        a = self.args
        self.redis_port = free_port()
        tls_args = []
        if "cold-tls" in a.scenarios:
            # The same Redis on a TLS port too, for keygate-tls-redis.
            self.redis_certificates()
            self.redis_tls_port = free_port()
            tls_args = ["--tls-port", str(self.redis_tls_port), "--tls-cert-file", f"{self.dir}/redis.pem",
                        "--tls-key-file", f"{self.dir}/redis.key", "--tls-ca-cert-file", f"{self.dir}/redis-ca.pem",
                        "--tls-auth-clients", "no"]
        self.start(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", self.dir, *tls_args], "redis")
        wait_port(self.redis_port)
        if "cold-cluster" in a.scenarios:
            self.redis_cluster()
        self.upstream_port = free_port()
        upstream = self.start([self.bin, "demo-upstream", "--listen", f"127.0.0.1:{self.upstream_port}"], "upstream")
        wait_port(self.upstream_port)
        self.server_pids[self.upstream_port] = [upstream.pid]
        self.kg_port, self.kg_admin = free_port(), free_port()
        self.with_tls = "tls" in a.scenarios or "h2" in a.scenarios
        if self.with_tls:
            # One self-signed P-256 certificate for keygate and nginx alike.
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                            "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", os.path.join(self.dir, "key.pem"),
                            "-out", os.path.join(self.dir, "cert.pem")], check=True, capture_output=True)
            self.kg_tls_port = free_port()
        self.config_path, self.kg = self.keygate("keygate", self.kg_port, self.kg_admin,
                                                 self.kg_tls_port if self.with_tls else None)
        self.admin("orgs", "create", "bench")
        self.admin("users", "create", "--org", "bench", "--id", "loadtest", "--name", "load test")
        self.hot_keys = os.path.join(self.dir, "hot.txt")
        self.admin("keys", "create-many", "--user", "loadtest", "--count", str(a.hot_keys), "--scopes", "predict",
                   "--out", self.hot_keys)
        with open(self.hot_keys) as f:
            self.hot_list = [l.strip() for l in f]
        if any(s in a.scenarios for s in ["hot", "cold", "cold-tls", "cold-cluster"]):
            self.full_setup()
        for name, gen in [("malformed", lambda: fake_key(valid_checksum=False)), ("unknown", fake_key)]:
            with open(os.path.join(self.dir, f"{name}.txt"), "w") as f:
                f.write("\n".join(gen() for _ in range(a.hot_keys)) + "\n")
        if a.with_nginx:
            self.nginx_port, self.nginx_identity_port, self.nginx_tls_port = free_port(), free_port(), free_port()
            self.nginx()
        if a.with_floor:
            self.floor_port = free_port()
            floor = self.start([a.floor_bin, f"127.0.0.1:{self.floor_port}", f"http://127.0.0.1:{self.upstream_port}",
                                self.hot_keys, str(a.workers)], "floor")
            wait_port(self.floor_port)
            self.server_pids[self.floor_port] = [floor.pid]

    def full_setup(self):
        """Seeds the cold keys and starts keygate-full, its cache filled from the last of them (the
        cold runs use the others, so each of their requests still misses)."""
        a = self.args
        self.cold_file = os.path.join(self.dir, "cold.txt")
        started = time.time()
        self.admin("keys", "create-many", "--user", "loadtest", "--count", str(a.cold_keys), "--scopes", "predict",
                   "--out", self.cold_file)
        self.seed_seconds = time.time() - started
        print(f"  seeded {a.cold_keys} keys in {self.seed_seconds:.1f} s", flush=True)
        self.fill_keys = min(2 * a.cache_entries, a.cold_keys // 5)
        fill = os.path.join(self.dir, "fill.txt")
        with open(self.cold_file) as src, open(fill, "w") as dst:
            dst.writelines(list(src)[-self.fill_keys:])
        self.full_port, self.full_admin = free_port(), free_port()
        self.keygate("keygate-full", self.full_port, self.full_admin)
        self.wrk(self.full_port, fill)
        entries = self.metric(self.full_admin, 'keygate_cache_entries{kind="keys"}')
        print(f"  keygate-full: {entries:.0f} cache entries of a bound of {a.cache_entries}", flush=True)
        if "cold-tls" in a.scenarios:
            self.tls_redis_port, tls_redis_admin = free_port(), free_port()
            self.keygate("keygate-tls-redis", self.tls_redis_port, tls_redis_admin, redis_tls=True)
            self.wrk(self.tls_redis_port, fill)
            entries = self.metric(tls_redis_admin, 'keygate_cache_entries{kind="keys"}')
            print(f"  keygate-tls-redis: {entries:.0f} cache entries of a bound of {a.cache_entries}", flush=True)
        if "cold-cluster" in a.scenarios:
            # Its own keys, seeded alike, and its cache filled alike.
            self.cluster_port, cluster_admin = free_port(), free_port()
            config, _ = self.keygate("keygate-cluster", self.cluster_port, cluster_admin, redis_cluster=True)
            self.admin("orgs", "create", "bench", config=config)
            self.admin("users", "create", "--org", "bench", "--id", "loadtest", "--name", "load test", config=config)
            self.cluster_cold_file = os.path.join(self.dir, "cluster-cold.txt")
            started = time.time()
            self.admin("keys", "create-many", "--user", "loadtest", "--count", str(a.cold_keys), "--scopes", "predict",
                       "--out", self.cluster_cold_file, config=config)
            print(f"  seeded {a.cold_keys} keys on the cluster in {time.time() - started:.1f} s", flush=True)
            cluster_fill = os.path.join(self.dir, "cluster-fill.txt")
            with open(self.cluster_cold_file) as src, open(cluster_fill, "w") as dst:
                dst.writelines(list(src)[-self.fill_keys:])
            self.wrk(self.cluster_port, cluster_fill)
            entries = self.metric(cluster_admin, 'keygate_cache_entries{kind="keys"}')
            print(f"  keygate-cluster: {entries:.0f} cache entries of a bound of {a.cache_entries}", flush=True)

    def nginx(self):
        conf = os.path.join(self.dir, "nginx.conf")
        keys = "\n".join(f'        "{k}" 1;' for k in self.hot_list)
        key_ids = "\n".join(f'        "{k}" "key_{i:016d}";' for i, k in enumerate(self.hot_list))
        # Both servers: 401 for unknown keys, keep-alive upstream, the key not forwarded.
        checked = """            if ($kg_valid = 0) { return 401 '{"error":{"code":"invalid_api_key"}}'; }
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header apikey "";
"""
        identity = checked + """            proxy_set_header X-Keygate-Key-Id $kg_key_id;
            proxy_set_header X-Keygate-User-Id "loadtest";
            proxy_set_header X-Keygate-Org-Id "bench";
            proxy_set_header X-Keygate-Role "member";
            proxy_set_header X-Keygate-Scopes "predict";
            proxy_set_header X-Request-Id $request_id;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            add_header X-Request-Id $request_id;
            proxy_pass http://backend;
"""
        # nginx-identity's job on TLS (HTTP/1.1 and HTTP/2 by ALPN). No cap on requests per
        # connection (nginx closes one after 1,000 by default; keygate never does), so h2load's
        # few connections stay open for the whole run.
        tls = "" if not self.with_tls else f"""    server {{
        listen 127.0.0.1:{self.nginx_tls_port} ssl http2 reuseport;
        ssl_certificate {self.dir}/cert.pem;
        ssl_certificate_key {self.dir}/key.pem;
        ssl_protocols TLSv1.3;
        keepalive_requests 100000000;
        location / {{
{identity}        }}
    }}"""
        with open(conf, "w") as f:
            f.write(f"""
worker_processes {self.args.workers};
daemon off;
master_process on;
pid {self.dir}/nginx.pid;
error_log {self.dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    map_hash_max_size {max(4096, 2 * len(self.hot_list))};
    map_hash_bucket_size 128;
    map $http_apikey $kg_valid {{
        default 0;
{keys}
    }}
    map $http_apikey $kg_key_id {{
        default "";
{key_ids}
    }}
    upstream backend {{ server 127.0.0.1:{self.upstream_port}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{self.nginx_port} reuseport;
        location / {{
{checked}            proxy_pass http://backend;
        }}
    }}
    server {{
        listen 127.0.0.1:{self.nginx_identity_port} reuseport;
        location / {{
{identity}        }}
    }}
{tls}
}}
""")
        master = self.start(["nginx", "-c", conf, "-p", self.dir], "nginx")
        wait_port(self.nginx_port)
        wait_port(self.nginx_identity_port)
        if self.with_tls:
            wait_port(self.nginx_tls_port)
        workers = [int(d) for d in os.listdir("/proc") if d.isdigit() and self.parent_pid(int(d)) == master.pid]
        for port in [self.nginx_port, self.nginx_identity_port, self.nginx_tls_port]:
            self.server_pids[port] = [master.pid] + workers

    # ------------------------------------------------------------------ measuring
    @staticmethod
    def stat_fields(pid):
        """/proc/PID/stat after the command name: [state, ppid, ...]; utime and stime at 11 and 12."""
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            return None

    def parent_pid(self, pid):
        fields = self.stat_fields(pid)
        return int(fields[1]) if fields else None

    def cpu_times(self, pids):
        """User and system CPU seconds used so far by these processes."""
        tick = os.sysconf("SC_CLK_TCK")
        fields = [f for f in map(self.stat_fields, pids) if f]
        return sum(int(f[11]) for f in fields) / tick, sum(int(f[12]) for f in fields) / tick

    def rss_mb(self, pid, field="VmRSS"):
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def wrk(self, port, keys_file, offset=0, duration=None, connections=None, scheme="http", close=False):
        """wrk with keys.lua; `close` asks for a new connection per request (`Connection: close`)."""
        a = self.args
        cmd = ["taskset", "-c", a.wrk_core, "wrk", "-t1", f"-c{connections or a.connections}", f"-d{duration or a.duration}s",
               "-s", os.path.join(HERE, "keys.lua"), f"{scheme}://127.0.0.1:{port}/v1/predict", "--", keys_file, str(offset),
               "close" if close else "keep-alive"]
        server = self.server_pids[port]
        kg = self.keygates.get(port, self.kg)
        kg0, server0 = self.cpu_times([kg.pid]), self.cpu_times(server)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        kg1, server1 = self.cpu_times([kg.pid]), self.cpu_times(server)
        line = [l for l in out.splitlines() if l.startswith("RESULT ")][-1]
        r = json.loads(line[len("RESULT "):])
        r["keygate_cpu"] = (sum(kg1) - sum(kg0)) / r["seconds"]
        # The server's own CPU per request, user and system: where its cost goes.
        requests = max(r["requests"], 1)
        r["user_us"] = 1e6 * (server1[0] - server0[0]) / requests
        r["sys_us"] = 1e6 * (server1[1] - server0[1]) / requests
        r["keygate_rss_mb"] = self.rss_mb(kg.pid)
        return r

    def h2load(self, port):
        """h2load over TLS (ALPN h2): few connections, many concurrent streams, one cached key.
        h2load reports mean and spread, not percentiles: the mean stands in the p50 column."""
        a = self.args
        cmd = ["taskset", "-c", a.wrk_core, "h2load", "-t1", "-c8", "-m32", f"-D{a.duration}", "-H",
               f"apikey: {self.hot_list[0]}", f"https://127.0.0.1:{port}/v1/predict"]
        server = self.server_pids[port]
        kg = self.keygates.get(port, self.kg)
        kg0, server0 = self.cpu_times([kg.pid]), self.cpu_times(server)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        kg1, server1 = self.cpu_times([kg.pid]), self.cpu_times(server)
        finished = re.search(r"finished in ([0-9.]+)s, ([0-9.]+) req/s", out)
        counts = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out)
        mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
        if not (finished and counts and mean):
            sys.exit(f"h2load: cannot read its output:\n{out}")
        seconds, done, ok = float(finished.group(1)), int(counts.group(2)), int(counts.group(3))
        unit = mean.group(1)
        mean_ms = float(re.sub(r"[a-z]+$", "", unit)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[re.sub(r"[0-9.]+", "", unit)]
        requests = max(done, 1)
        return {"requests": done, "seconds": seconds, "rps": float(finished.group(2)), "p50_ms": mean_ms,
                "p99_ms": None, "p999_ms": None, "non2xx": done - ok, "socket_errors": 0,
                "keygate_cpu": (sum(kg1) - sum(kg0)) / seconds,
                "user_us": 1e6 * (server1[0] - server0[0]) / requests, "sys_us": 1e6 * (server1[1] - server0[1]) / requests,
                "keygate_rss_mb": self.rss_mb(kg.pid)}

    def record(self, scenario, config, r):
        self.results.setdefault((scenario, config), []).append(r)
        ms = lambda v: "—" if v is None else f"{v:.3f} ms"
        print(f"  {scenario:<10} {config:<14} {r['rps']:>10.0f} req/s  p50 {ms(r['p50_ms'])}  p99 {ms(r['p99_ms'])}"
              f"  p99.9 {ms(r['p999_ms'])}  non-2xx {r['non2xx']}  CPU/req {r['user_us']:.1f} + {r['sys_us']:.1f} µs",
              flush=True)

    def median(self, scenario, config, field):
        vals = [r[field] for r in self.results.get((scenario, config), []) if r.get(field) is not None]
        return (statistics.median(vals), min(vals), max(vals)) if vals else None

    # ------------------------------------------------------------------ scenarios
    def hot(self, run):
        targets = [("direct", self.upstream_port), ("keygate", self.kg_port), ("keygate-full", self.full_port)]
        if self.args.with_nginx:
            targets[1:1] = [("nginx", self.nginx_port), ("nginx-identity", self.nginx_identity_port)]
        if self.args.with_floor:
            targets.insert(-2, ("floor", self.floor_port))
        for config, port in targets:
            self.record("hot", config, self.wrk(port, self.hot_keys))

    def reject(self, run):
        # The uses counted in earlier runs are written within one flush interval; after that,
        # a request that reaches no key causes no Redis command at all.
        time.sleep(USAGE_FLUSH_SECONDS + 0.5)
        before = self.redis_commands()
        self.record("reject", "malformed", self.wrk(self.kg_port, os.path.join(self.dir, "malformed.txt")))
        after = self.redis_commands()
        ran = {name: n - before.get(name, 0) for name, n in after.items() if n != before.get(name, 0)}
        if ran:
            print(f"  Redis commands during the malformed run: {ran}", flush=True)
        self.malformed_redis_calls = sum(ran.values())
        self.record("reject", "unknown", self.wrk(self.kg_port, os.path.join(self.dir, "unknown.txt")))
        if self.args.with_nginx:
            # The baseline for turning keys away: nginx answering 401 from its `map`, same keys.
            self.record("reject", "nginx", self.wrk(self.nginx_port, os.path.join(self.dir, "unknown.txt")))
        if self.args.with_floor:
            self.record("reject", "floor", self.wrk(self.floor_port, os.path.join(self.dir, "unknown.txt")))

    def tls(self, run):
        targets = [("keygate", self.kg_tls_port)]
        if self.args.with_nginx:
            targets.append(("nginx-identity", self.nginx_tls_port))
        for config, port in targets:
            self.record("tls-new", config, self.wrk(port, self.hot_keys, scheme="https", close=True))
            self.record("tls", config, self.wrk(port, self.hot_keys, scheme="https"))

    def h2(self, run):
        targets = [("keygate", self.kg_tls_port)]
        if self.args.with_nginx:
            targets.append(("nginx-identity", self.nginx_tls_port))
        for config, port in targets:
            self.record("h2", config, self.h2load(port))

    def cold(self, run):
        a = self.args
        # Each run starts at its own offset, so no key is requested twice across runs (the last
        # keys filled keygate-full's cache).
        offset = run * ((a.cold_keys - self.fill_keys) // a.runs)
        self.record("cold", "keygate", self.wrk(self.full_port, self.cold_file, offset))

    def cold_cluster(self, run):
        a = self.args
        offset = run * ((a.cold_keys - self.fill_keys) // a.runs)
        self.record("cold", "keygate-cluster", self.wrk(self.cluster_port, self.cluster_cold_file, offset))

    def cold_tls(self, run):
        a = self.args
        # The same slices as `cold`, on another instance (its own cache): every key uncached.
        offset = run * ((a.cold_keys - self.fill_keys) // a.runs)
        self.record("cold", "keygate-tls-redis", self.wrk(self.tls_redis_port, self.cold_file, offset))

    def flood(self):
        """Distinct unknown keys until every one was sent once: RSS must stay within the cache bound."""
        a = self.args
        path = os.path.join(self.dir, "flood.txt")
        with open(path, "w") as f:
            for _ in range(a.flood_keys):
                f.write(fake_key() + "\n")
        rss0 = self.rss_mb(self.kg.pid)
        r = self.wrk(self.kg_port, path, duration=a.flood_duration)
        self.record("flood", "keygate", r)
        entries = self.metric(self.kg_admin, 'keygate_cache_entries{kind="keys"}')
        self.flood_result = {"keys_sent": min(r["requests"], a.flood_keys), "rss_before_mb": rss0,
                             "rss_after_mb": self.rss_mb(self.kg.pid), "peak_rss_mb": self.rss_mb(self.kg.pid, "VmHWM"),
                             "cache_entries": entries, "cache_bound": a.cache_entries}
        print(f"  flood: {self.flood_result}", flush=True)

    def revocation(self):
        """Two instances under hot load; revoke keys one by one; time until each instance answers 401."""
        a = self.args
        port2, admin2 = free_port(), free_port()
        self.keygate("keygate2", port2, admin2)
        path = os.path.join(self.dir, "revoke.txt")
        self.admin("keys", "create-many", "--user", "loadtest", "--count", str(a.revocations), "--scopes", "predict", "--out", path)
        with open(path) as f:
            keys = [l.strip() for l in f]
        load = subprocess.Popen(["taskset", "-c", a.wrk_core, "wrk", "-t1", f"-c{a.connections}", f"-d{a.duration * 6}s",
                                 "-s", os.path.join(HERE, "keys.lua"), f"http://127.0.0.1:{self.kg_port}/v1/predict", "--",
                                 self.hot_keys, "0"], stdout=subprocess.DEVNULL)
        conns = [HttpClient(self.kg_port), HttpClient(port2)]
        times = {0: [], 1: []}
        try:
            time.sleep(1)
            for key in keys:
                assert all(c.status(key) == 200 for c in conns), "key not usable before revocation"
                hexhash = hashlib.sha256(key.encode()).hexdigest()
                key_id = self.redis("GET", f"kg:credential:{hexhash}").strip().split("/")[1]
                self.admin("keys", "revoke", key_id)
                committed = time.perf_counter()
                for i, c in enumerate(conns):
                    while c.status(key) != 401:
                        if time.perf_counter() - committed > 5:
                            raise SystemExit("a revocation never arrived")
                    times[i].append((time.perf_counter() - committed) * 1000)
        finally:
            load.terminate()
            load.wait()
        q = lambda v, p: sorted(v)[min(len(v) - 1, int(len(v) * p))]
        self.revocation_result = {f"instance {i + 1}": {"p50_ms": q(v, 0.5), "p99_ms": q(v, 0.99), "max_ms": max(v)}
                                  for i, v in times.items()}
        print(f"  revocation: {self.revocation_result}", flush=True)

    def upload(self):
        """A 100 MB multipart upload through keygate: RSS growth must stay well below the body size."""
        a = self.args
        path = os.path.join(self.dir, "upload.bin")
        with open(path, "wb") as f:
            f.truncate(a.upload_mb * 1024 * 1024)
        peak, stop = [self.rss_mb(self.kg.pid)], []
        def sample():
            while not stop:
                peak.append(self.rss_mb(self.kg.pid))
                time.sleep(0.005)
        import threading
        rss0 = self.rss_mb(self.kg.pid)
        t = threading.Thread(target=sample)
        t.start()
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", "-X", "POST",
                              f"http://127.0.0.1:{self.kg_port}/v1/predict", "-H", f"apikey: {self.hot_list[0]}",
                              "-F", f"file=@{path}"], capture_output=True, text=True, check=True).stdout.split()
        stop.append(True)
        t.join()
        self.upload_result = {"status": int(out[0]), "seconds": float(out[1]), "size_mb": a.upload_mb,
                              "rss_before_mb": rss0, "rss_peak_growth_mb": max(peak) - rss0}
        print(f"  upload: {self.upload_result}", flush=True)

    def metric(self, port, name):
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            text = b""
            while chunk := c.recv(65536):
                text += chunk
        for line in text.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    def run(self):
        self.setup()
        scenarios = [s for s in ["hot", "reject", "cold", "cold-tls", "cold-cluster", "tls", "h2"]
                     if s in self.args.scenarios]
        for run in range(self.args.runs):
            print(f"run {run + 1}/{self.args.runs}", flush=True)
            for s in scenarios:
                getattr(self, s.replace("-", "_"))(run)
        for once in ["flood", "revocation", "upload"]:
            if once in self.args.scenarios:
                getattr(self, once)()
        self.report()

    # ------------------------------------------------------------------ reporting
    def report(self):
        a = self.args
        rows = []
        for (scenario, config) in self.results:
            rps = self.median(scenario, config, "rps")
            row = {"scenario": scenario, "config": config, "rps": rps}
            for f in ["p50_ms", "p99_ms", "p999_ms", "user_us", "sys_us", "keygate_cpu", "keygate_rss_mb", "non2xx"]:
                row[f] = self.median(scenario, config, f)
            rows.append(row)
        hot_kg = self.median("hot", "keygate", "rps")
        ratios = {}
        # (label, numerator, denominator, field): every ratio whose two figures this run has.
        for label, num, den, field in [
            ("hot keygate / nginx (req/s)", ("hot", "keygate"), ("hot", "nginx"), "rps"),
            ("hot keygate p99 / nginx p99", ("hot", "keygate"), ("hot", "nginx"), "p99_ms"),
            ("hot keygate / nginx-identity (req/s): the same job", ("hot", "keygate"), ("hot", "nginx-identity"), "rps"),
            ("hot keygate p99 / nginx-identity p99", ("hot", "keygate"), ("hot", "nginx-identity"), "p99_ms"),
            ("hot floor / nginx (req/s): the stack", ("hot", "floor"), ("hot", "nginx"), "rps"),
            ("hot floor p99 / nginx p99", ("hot", "floor"), ("hot", "nginx"), "p99_ms"),
            ("hot keygate / floor (req/s): keygate's own work", ("hot", "keygate"), ("hot", "floor"), "rps"),
            ("hot keygate / direct (req/s)", ("hot", "keygate"), ("hot", "direct"), "rps"),
            ("hot keygate-full / keygate (req/s): a full cache's cost", ("hot", "keygate-full"), ("hot", "keygate"), "rps"),
            ("hot keygate-full / nginx (req/s)", ("hot", "keygate-full"), ("hot", "nginx"), "rps"),
            ("hot keygate-full p99 / nginx p99", ("hot", "keygate-full"), ("hot", "nginx"), "p99_ms"),
            ("hot keygate-full / nginx-identity (req/s)", ("hot", "keygate-full"), ("hot", "nginx-identity"), "rps"),
            ("cold keygate / hot keygate (req/s)", ("cold", "keygate"), ("hot", "keygate"), "rps"),
            ("cold keygate-tls-redis / cold keygate (req/s): TLS to Redis", ("cold", "keygate-tls-redis"), ("cold", "keygate"), "rps"),
            ("cold keygate-cluster / cold keygate (req/s): a three-master Cluster", ("cold", "keygate-cluster"), ("cold", "keygate"), "rps"),
            ("reject malformed / hot keygate (req/s)", ("reject", "malformed"), ("hot", "keygate"), "rps"),
            ("reject unknown / hot keygate (req/s)", ("reject", "unknown"), ("hot", "keygate"), "rps"),
            ("reject unknown keygate / nginx (req/s)", ("reject", "unknown"), ("reject", "nginx"), "rps"),
            ("reject nginx / hot nginx (req/s), for scale", ("reject", "nginx"), ("hot", "nginx"), "rps"),
            ("reject floor / hot floor (req/s), for scale", ("reject", "floor"), ("hot", "floor"), "rps"),
            ("tls-new keygate / nginx-identity (req/s): a handshake per request", ("tls-new", "keygate"), ("tls-new", "nginx-identity"), "rps"),
            ("tls keygate / nginx-identity (req/s): kept-alive TLS", ("tls", "keygate"), ("tls", "nginx-identity"), "rps"),
            ("h2 keygate / nginx-identity (req/s): streams over TLS", ("h2", "keygate"), ("h2", "nginx-identity"), "rps"),
        ]:
            n, d = self.median(*num, field), self.median(*den, field)
            if n and d:
                ratios[label] = n[0] / d[0]
        summary = {"rows": rows, "ratios": ratios, "malformed_redis_calls": getattr(self, "malformed_redis_calls", None),
                   "seed_seconds": getattr(self, "seed_seconds", None), "flood": getattr(self, "flood_result", None),
                   "revocation": getattr(self, "revocation_result", None), "upload": getattr(self, "upload_result", None)}
        with open(os.path.join(self.dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        print(json.dumps(ratios, indent=2))
        if a.smoke:
            assert hot_kg and hot_kg[0] > 0, "keygate served no requests"
            assert self.median("hot", "keygate", "non2xx")[0] == 0, "keygate refused valid keys"
            assert self.median("hot", "keygate-full", "non2xx")[0] == 0, "keygate-full refused valid keys"
            if a.with_floor:
                assert self.median("hot", "floor", "non2xx")[0] == 0, "the floor proxy refused valid keys"
            assert summary["malformed_redis_calls"] == 0, "malformed keys reached Redis"
            assert self.median("cold", "keygate", "non2xx")[0] == 0, "cold keys were refused"
            if "cold-tls" in a.scenarios:
                assert self.median("cold", "keygate-tls-redis", "non2xx")[0] == 0, "cold keys over TLS were refused"
            if "cold-cluster" in a.scenarios:
                assert self.median("cold", "keygate-cluster", "non2xx")[0] == 0, "cold keys on the cluster were refused"
            assert summary["flood"]["cache_entries"] <= a.cache_entries, "the cache outgrew its bound"
            assert summary["upload"]["status"] == 200, "the upload failed"
            assert all(v["max_ms"] < 5000 for v in summary["revocation"].values())
            # The report too, on copies in the run's directory: a bug there must not wait for
            # the end of a full run to show.
            shutil.copy(os.path.join(HERE, "RESULTS.md"), self.dir)
            self.chart(rows, os.path.join(self.dir, "latency.png"))
            self.write_results(rows, ratios, summary, os.path.join(self.dir, "RESULTS.md"))
            print(f"smoke ok: harness works ({self.dir})")
            return
        self.chart(rows, os.path.join(HERE, "latency.png"))
        self.write_results(rows, ratios, summary, os.path.join(HERE, "RESULTS.md"))

    def chart(self, rows, png):
        """Latency percentiles of every row that has them (h2load reports none)."""
        data = os.path.join(self.dir, "latency.dat")
        with open(data, "w") as f:
            for r in rows:
                if r["p99_ms"] is not None:
                    f.write(f'"{r["scenario"]} {r["config"]}" {r["p50_ms"][0]} {r["p99_ms"][0]} {r["p999_ms"][0]}\n')
        script = f"""
set terminal pngcairo size 1000,520
set output '{png}'
set title 'Latency percentiles per configuration (median of {self.args.runs} runs, {self.args.connections} connections)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set ylabel 'milliseconds'
set logscale y
set key top left
set grid ytics
plot '{data}' using 2:xtic(1) title 'p50', '' using 3 title 'p99', '' using 4 title 'p99.9'
"""
        subprocess.run(["gnuplot"], input=script, text=True, check=True)

    def write_results(self, rows, ratios, summary, path):
        a = self.args
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        fmt = lambda t, unit="", prec=0: "—" if t is None else f"{t[0]:.{prec}f}{unit} ({t[1]:.{prec}f}–{t[2]:.{prec}f})"
        when = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip() or "?"
        lines = [
            f"{LATEST}\n\n{when}, on {commit}\n",
            f"- command: `bash loadtests/run.sh {' '.join(sys.argv[1:])}`".rstrip(),
            f"- machine: {os.cpu_count()} cores ({cpu}), {platform.platform()}; shared and noisy",
            f"- wrk pinned to core {a.wrk_core}, 1 thread, {a.connections} connections, {a.duration} s per run, "
            f"{a.runs} interleaved runs; keygate, nginx and floor {a.workers} workers each; figures: median (min–max)",
            f"- keys: {a.hot_keys} in Redis (keygate) and in the nginx `map`; malformed-key runs caused "
            f"{summary['malformed_redis_calls']} Redis commands\n",
            "| scenario | config | req/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/req: user + sys | keygate CPU (cores) | keygate RSS MB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            cpu_col = fmt(r["keygate_cpu"], prec=2) if r["config"] not in ("direct", "nginx", "nginx-identity", "floor") else "—"
            rss_col = fmt(r["keygate_rss_mb"]) if r["config"] not in ("direct", "nginx", "nginx-identity", "floor") else "—"
            server_col = f"{r['user_us'][0]:.1f} + {r['sys_us'][0]:.1f}"
            lines.append(f"| {r['scenario']} | {r['config']} | {fmt(r['rps'])} | {fmt(r['p50_ms'], prec=3)} | "
                         f"{fmt(r['p99_ms'], prec=3)} | {fmt(r['p999_ms'], prec=3)} | {server_col} | {cpu_col} | {rss_col} |")
        if summary["seed_seconds"] is not None:
            lines.append(f"\n- cold: {a.cold_keys} keys seeded in {summary['seed_seconds']:.1f} s (pipelined `keys create-many`)")
        if summary["flood"]:
            fl = summary["flood"]
            lines.append(f"- flood: {fl['keys_sent']} distinct unknown keys sent; keygate RSS {fl['rss_before_mb']:.0f} MB before, "
                         f"{fl['rss_after_mb']:.0f} MB after (peak {fl['peak_rss_mb']:.0f} MB); cache entries "
                         f"{fl['cache_entries']:.0f} of a bound of {fl['cache_bound']}")
        if summary["revocation"]:
            rv = summary["revocation"]
            lines.append(f"- revocation under hot load, {a.revocations} keys revoked one by one (time from the revoke "
                         "command's commit until the instance answers 401): "
                         + "; ".join(f"{k}: p50 {v['p50_ms']:.1f} ms, p99 {v['p99_ms']:.1f} ms, max {v['max_ms']:.1f} ms"
                                     for k, v in rv.items()))
        if summary["upload"]:
            up = summary["upload"]
            lines.append(f"- upload: {up['size_mb']} MB multipart through keygate in {up['seconds']:.2f} s (status "
                         f"{up['status']}); keygate RSS grew by at most {up['rss_peak_growth_mb']:.1f} MB")
        lines.append("\n| ratio (same run) | value |\n|---|---|")
        lines += [f"| {k} | {v:.2f} |" for k, v in ratios.items()]
        lines.append("\n![latency percentiles](latency.png)\n")
        self.record_in_results(path, "\n".join(lines) + "\n", history_row(when, commit, a, ratios, summary))
        print(f"results written to {path}: the latest run, and a row of its history table")

    def record_in_results(self, path, latest, row):
        """RESULTS.md is a report: the latest run replaces the previous one (everything after
        LATEST), and the run's headline ratios become the last row of the history table (the
        table ends at HISTORY_END)."""
        text = open(path).read()
        head = text[:text.index(LATEST)]
        head = head.replace(HISTORY_END, row + "\n" + HISTORY_END)
        with open(path, "w") as f:
            f.write(head + latest)


LATEST = "## Latest run"
HISTORY_END = "<!-- the history table ends here -->"


def history_row(when, commit, a, ratios, summary):
    """One row of RESULTS.md's history table: the figures the targets in README.md name."""
    r = lambda label: f"{ratios[label]:.2f}" if label in ratios else "—"
    rv = summary["revocation"]
    revocation = " / ".join(f"{v['p99_ms']:.1f}" for v in rv.values()) if rv else "—"
    return (f"| {when[:10]} | {commit} | {','.join(a.scenarios)} | {r('hot keygate / nginx-identity (req/s): the same job')} | "
            f"{r('hot keygate-full / nginx-identity (req/s)')} | {r('hot keygate / nginx (req/s)')} | "
            f"{r('reject unknown keygate / nginx (req/s)')} | {r('cold keygate / hot keygate (req/s)')} | {revocation} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(ROOT, "target/release/keygate"))
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--wrk-core", default=str(os.cpu_count() - 1))
    p.add_argument("--hot-keys", type=int, default=1000)
    p.add_argument("--cache-entries", type=int, default=100000)
    p.add_argument("--cold-keys", type=int, default=1_000_000)
    p.add_argument("--flood-keys", type=int, default=1_000_000)
    p.add_argument("--flood-duration", type=int, default=60, help="seconds; long enough to send every flood key once")
    p.add_argument("--revocations", type=int, default=100)
    p.add_argument("--upload-mb", type=int, default=100)
    p.add_argument("--scenarios", default="hot,reject,cold,cold-tls,cold-cluster,tls,h2,flood,revocation,upload")
    p.add_argument("--no-nginx", dest="with_nginx", action="store_false")
    p.add_argument("--floor-bin", help="default: examples/floor beside --bin")
    p.add_argument("--no-floor", dest="with_floor", action="store_false")
    p.add_argument("--smoke", action="store_true", help="a few seconds: checks the harness works; writes no results")
    a = p.parse_args()
    a.scenarios = a.scenarios.split(",")
    a.floor_bin = a.floor_bin or os.path.join(os.path.dirname(os.path.abspath(a.bin)), "examples", "floor")
    if a.smoke:
        a.duration, a.runs, a.connections, a.hot_keys = 1, 1, 8, 50
        a.cold_keys, a.flood_keys, a.flood_duration, a.cache_entries = 2000, 3000, 1, 1000
        a.revocations, a.upload_mb = 5, 5
    b = Bench(a)
    try:
        b.run()
    finally:
        b.stop_all()


if __name__ == "__main__":
    main()
