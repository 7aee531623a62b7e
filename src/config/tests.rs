use super::*;

const MINIMAL: &str = r#"
[[listener]]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
[redis]
url = "redis://127.0.0.1:6379"
[[route]]
id = "r"
path_prefix = "/v1"
org = "acme"
scopes = ["inference", "models:read"]
upstreams = ["http://127.0.0.1:9000"]
"#;

fn problems(text: &str) -> Vec<String> {
    match Config::parse(text, Path::new(".")) {
        Err(ConfigError::Invalid(p)) => p,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

#[test]
fn every_file_in_config_dir_is_valid() {
    // demo.toml takes its Redis URL from the environment; a literal URL stands in for it here.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.replace(
                "url_env = \"KEYGATE_REDIS_URL\"",
                "url = \"redis://127.0.0.1:6379\"",
            );
            if let Err(e) = Config::parse(&text, &dir) {
                panic!("{}: {e}", path.display());
            }
            seen += 1;
        }
    }
    assert!(
        seen >= 2,
        "expected the example and demo configs, saw {seen}"
    );
}

#[test]
fn defaults_and_presets_apply() {
    let c = Config::parse(MINIMAL, Path::new(".")).unwrap();
    assert_eq!(c.cache.max_entries, defaults::CACHE_MAX_ENTRIES);
    assert_eq!(c.cache.ttl, Duration::from_secs(60));
    assert_eq!(c.limits.upstream_response_timeout, Duration::from_secs(120));
    assert_eq!(c.redis.namespace, "kg");
    let route = c.routes.find(None, "/v1/x").unwrap();
    let scopes: Vec<&str> = route.scopes.iter().map(Scope::as_str).collect();
    assert_eq!(scopes, ["models:read", "predict"]);
    assert_eq!(
        format!("{:?}", c.redis.target),
        "Standalone(***)",
        "the Redis URL may hold a password"
    );
}

#[test]
fn one_section_chooses_the_redis_mode() {
    let sentinel = MINIMAL.replace(
        "url = \"redis://127.0.0.1:6379\"",
        "mode = \"sentinel\"\nsentinels = [\"127.0.0.1:26379\", \"10.0.0.2:26379\"]\nmaster_name = \"keygate\"",
    );
    let c = Config::parse(&sentinel, Path::new(".")).unwrap();
    match c.redis.target {
        crate::store::RedisTarget::Sentinel {
            sentinels,
            master,
            tls,
        } => {
            assert_eq!(sentinels, ["127.0.0.1:26379", "10.0.0.2:26379"]);
            assert_eq!((master.as_str(), tls), ("keygate", false));
        }
        other => panic!("{other:?}"),
    }
    for (text, needle) in [
        (
            MINIMAL.replace("url = ", "mode = \"sentinel\"\nurl = "),
            "redis.url: with mode = \"sentinel\"",
        ),
        (
            MINIMAL.replace("url = ", "mode = \"sentinel\"\nsentinels = [\"x\"]\nurl = "),
            "redis.sentinels: `x` must be host:port",
        ),
        (
            MINIMAL.replace("url = ", "mode = \"sentinel\"\nurl = "),
            "redis.master_name",
        ),
        (
            MINIMAL.replace("url = ", "master_name = \"m\"\nurl = "),
            "are for mode = \"sentinel\"",
        ),
        (
            MINIMAL.replace("url = ", "mode = \"cluster\"\nurl = "),
            "redis.nodes: list them",
        ),
        (
            MINIMAL.replace("url = ", "mode = \"cluster\"\nurl = "),
            "redis.url: with mode = \"cluster\"",
        ),
    ] {
        let p = problems(&text).join("\n");
        assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
    }
}

#[test]
fn unknown_fields_are_errors() {
    let text = MINIMAL.replace("[admin]", "[admin]\nadress = \"x\"");
    let err = Config::parse(&text, Path::new(".")).unwrap_err();
    assert!(err.to_string().contains("adress"), "{err}");
    let text = MINIMAL.replace("org = \"acme\"", "org = \"acme\"\nscope = [\"x\"]");
    assert!(Config::parse(&text, Path::new(".")).is_err());
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = r#"
[admin]
addr = "nowhere"
[redis]
url = "http://x"
command_timeout = "soon"
[cache]
max_entries = 0
[keys]
prefix = "k-g"
[[route]]
id = "a"
path_prefix = "/v1/../x"
scopes = ["Not A Scope"]
upstreams = ["https://x:1"]
[[route]]
id = "pub"
path_prefix = "/p"
public = true
scopes = ["predict"]
upstreams = []
"#;
    let p = problems(text);
    let joined = p.join("\n");
    for needle in [
        "listener",
        "admin.addr",
        "redis.url",
        "redis.command_timeout",
        "cache.max_entries",
        "keys.prefix",
        "route[a].path_prefix",
        "route[a].org",
        "route[a].scopes",
        "route[a].upstreams",
        "route[pub]: a public route",
        "route[pub].upstreams",
    ] {
        assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
    }
}

#[test]
fn duplicate_routes_and_bad_project_sources_are_rejected() {
    let dup = format!(
        "{MINIMAL}\n[[route]]\nid = \"r2\"\npath_prefix = \"/v1\"\norg = \"acme\"\nupstreams = [\"http://127.0.0.1:1\"]\n"
    );
    assert!(problems(&dup).join("").contains("r2"));
    let seg0 = MINIMAL.replace(
        "org = \"acme\"",
        "org = \"acme\"\nproject = { segment = 0 }",
    );
    assert!(problems(&seg0).join("").contains("project"));
}

#[test]
fn tls_files_must_exist() {
    let text = MINIMAL.replace(
        "addr = \"127.0.0.1:0\"\n[admin]",
        "addr = \"127.0.0.1:0\"\ntls = { cert = \"missing.crt\", key = \"missing.key\" }\n[admin]",
    );
    let p = problems(&text).join("\n");
    assert!(
        p.contains("listener[0].tls.cert") && p.contains("listener[0].tls.key"),
        "{p}"
    );
}

#[test]
fn key_prefixes_may_hold_inner_underscores() {
    for (prefix, ok) in [
        ("land_sk", true),
        ("kg", true),
        ("_kg", false),
        ("kg_", false),
        ("k-g", false),
        ("", false),
    ] {
        let text = format!("[keys]\nprefix = \"{prefix}\"\n{MINIMAL}");
        let found = problems_or_none(&text)
            .iter()
            .any(|p| p.starts_with("keys.prefix"));
        assert_eq!(!found, ok, "{prefix}");
    }
}

#[test]
fn methods_and_stale_windows_that_contradict_themselves_are_refused() {
    let text = MINIMAL.replace(
        "org = \"acme\"",
        "org = \"acme\"\nmethods = [\"GET\", \"TRACE\", \"post\"]",
    );
    let p = problems(&text).join("\n");
    assert!(
        p.contains("`TRACE` is never forwarded") && p.contains("`post` is not a method"),
        "{p}"
    );
    let text = format!("[cache]\nttl = \"60s\"\nmax_stale = \"30s\"\n{MINIMAL}");
    let p = problems(&text).join("\n");
    assert!(
        p.contains("cache.max_stale") && p.contains("shorter than cache.ttl"),
        "{p}"
    );
    let text = format!("[headers]\nstrip = [\"x-ok\", \"x-prefix-*\", \"bad header\"]\n{MINIMAL}");
    let p = problems(&text).join("\n");
    assert!(
        p.contains("headers.strip") && p.contains("`bad header`"),
        "{p}"
    );
    let config = Config::parse(MINIMAL, Path::new(".")).unwrap();
    let route = config.routes.iter().next().unwrap();
    assert!(route.allows(&http::Method::POST) && !route.allows(&http::Method::TRACE));
    let name = |n: &str| http::HeaderName::from_bytes(n.as_bytes()).unwrap();
    assert!(config.strip_headers.matches(&name("x-consumer-id")));
    assert!(config.strip_headers.matches(&name("x-original-url")));
    assert!(!config.strip_headers.matches(&name("x-request-id")));
}

/// The problems a config has; none when it is valid.
fn problems_or_none(text: &str) -> Vec<String> {
    match Config::parse(text, Path::new(".")) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid(p)) => p,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn redis_credentials_never_come_from_the_config_file() {
    let with = |redis: &str| MINIMAL.replace("url = \"redis://127.0.0.1:6379\"", redis);
    let p = problems(&with("url = \"redis://keygate:pw@127.0.0.1:6379\"")).join("\n");
    assert!(
        p.contains("redis.url") && p.contains("must not carry a user or password"),
        "{p}"
    );
    let p = problems(&with(
        "url = \"redis://127.0.0.1:6379\"\nca_file = \"ca.pem\"",
    ))
    .join("\n");
    assert!(p.contains("TLS files need a rediss:// URL"), "{p}");
    let p = problems(&with(
        "url = \"rediss://127.0.0.1:6380\"\nca_file = \"missing.pem\"",
    ))
    .join("\n");
    assert!(
        p.contains("redis.ca_file") && p.contains("cannot read"),
        "{p}"
    );
    let p = problems(&with("url = \"memcached://x\"")).join("\n");
    assert!(p.contains("redis:// or rediss://"), "{p}");
    let ok = Config::parse(
        &with("url = \"rediss://127.0.0.1:6380\"\nusername = \"keygate\""),
        Path::new("."),
    );
    assert!(ok.is_ok(), "{:?}", ok.err());
}

#[test]
fn scopes_must_name_a_resource_the_deployment_knows() {
    let typo = MINIMAL.replace("\"models:read\"]", "\"modles:read\"]");
    let p = problems(&typo).join("\n");
    assert!(
        p.contains("route[r].scopes") && p.contains("`modles:read` names no resource"),
        "{p}"
    );
    let declared = format!(
        "[scopes]\nresources = [\"embeddings\"]\n{}",
        MINIMAL.replace("\"models:read\"]", "\"embeddings:create\"]")
    );
    let config = Config::parse(&declared, Path::new(".")).unwrap();
    assert!(config.scopes(&["embeddings:create".into()]).is_ok());
    assert!(
        config
            .scopes(&["predict".into(), "keys:manage".into(), "*".into()])
            .is_ok()
    );
    let err = config.scopes(&["predictt".into()]).unwrap_err();
    assert!(err.contains("`predictt` names no resource"), "{err}");
    let p = problems(&format!("[scopes]\nresources = [\"a:b\"]\n{MINIMAL}")).join("\n");
    assert!(p.contains("scopes.resources"), "{p}");
}

#[test]
fn routes_say_whose_keys_they_accept() {
    let org = |line: &str| MINIMAL.replace("org = \"acme\"", line);
    let parsed = |line: &str| {
        let c = Config::parse(&org(line), Path::new(".")).unwrap();
        let r = c.routes.iter().next().unwrap();
        (r.org.clone(), r.host.clone())
    };
    use crate::route::{HostRule, OrgSource};
    assert_eq!(parsed("org = \"*\"").0, OrgSource::Any);
    assert_eq!(parsed("org = { segment = 2 }").0, OrgSource::Segment(2));
    assert_eq!(
        parsed("host = \"{org}.API.example.com\""),
        (
            OrgSource::HostLabel,
            HostRule::OrgLabel(".api.example.com".into())
        )
    );
    for (line, needle) in [
        ("", "route[r].org: a route that needs keys must say whose"),
        ("org = \"a b\"", "route[r].org: must be an org id or \"*\""),
        (
            "org = { segment = 0 }",
            "route[r].org: segments count from 1",
        ),
        (
            "org = { segment = 3 }\nproject = { segment = 3 }",
            "cannot be the same path segment",
        ),
        (
            "org = \"acme\"\nhost = \"{org}.example.com\"",
            "the host names the org",
        ),
        ("host = \"api.{org}.example.com\"", "route[r].host"),
        ("host = \"{org}x.example.com\"", "route[r].host"),
    ] {
        let p = problems(&org(line)).join("\n");
        assert!(p.contains(needle), "{line}: missing {needle:?} in:\n{p}");
    }
    let err = Config::parse(&org("org = { segmnt = 2 }"), Path::new(".")).unwrap_err();
    assert!(err.to_string().contains("{ segment = N }"), "{err}");
}

#[test]
fn the_management_listener_is_apart_from_the_admin_one() {
    let own = format!("{MINIMAL}\n[management]\naddr = \"127.0.0.1:9443\"\n");
    let c = Config::parse(&own, Path::new(".")).unwrap();
    assert_eq!(c.management.unwrap().addr.port(), 9443);
    let same = MINIMAL.replace(
        "[admin]\naddr = \"127.0.0.1:0\"",
        "[admin]\naddr = \"127.0.0.1:9090\"",
    ) + "\n[management]\naddr = \"127.0.0.1:9090\"\n";
    assert!(
        problems(&same)
            .join("\n")
            .contains("management.addr: must differ")
    );
    assert!(
        Config::parse(MINIMAL, Path::new("."))
            .unwrap()
            .management
            .is_none()
    );
}
