//! The HTTP CLI client: `keygate keys|users|projects …` talks to the management API of a running
//! keygate (`KEYGATE_URL`, `KEYGATE_API_KEY`; flags override), where `keygate admin …` works on
//! the store directly.
//!
//! Owns: the commands, the request each one makes, and printing (tables for people, `--json` for
//! scripts). Does not own any rule: the API decides, and its error message is printed as is.
//! `keys create` and `keys rotate` print the secret once, to stdout, with a warning on stderr.
//! Exit codes: 0 ok, 64 no URL or key, 65 refused (4xx), 69 unreachable or failing (5xx).

use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const EXIT_USAGE: u8 = 64;
const EXIT_REFUSED: u8 = 65;
const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The admin listener, e.g. http://127.0.0.1:9090.
    #[arg(long, env = "KEYGATE_URL", global = true)]
    url: Option<String>,
    /// A key with keys:manage (or admin), or the bootstrap token.
    #[arg(long, env = "KEYGATE_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<String>,
    /// The org to act on (the bootstrap token only; keys act on their own org).
    #[arg(long, global = true)]
    org: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create {
        #[arg(long)]
        name: String,
        /// Scopes or presets, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// e.g. 30d (default: the configured maximum).
        #[arg(long)]
        expires_in: Option<String>,
        /// Restrict the key to these projects (repeatable).
        #[arg(long = "project")]
        projects: Vec<String>,
        /// Another user of the org (admins).
        #[arg(long)]
        user: Option<String>,
    },
    List {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        offset: Option<usize>,
    },
    Show {
        id: String,
    },
    Rename {
        id: String,
        name: String,
    },
    /// Replace a key's scopes (comma-separated).
    SetScopes {
        id: String,
        #[arg(value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
    Revoke {
        id: String,
    },
    Activate {
        id: String,
    },
    /// A new secret, printed once; the old one works for --grace (default: stops at once).
    Rotate {
        id: String,
        #[arg(long)]
        grace: Option<String>,
    },
    /// Delete a revoked key.
    Delete {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "member")]
        role: String,
    },
    List,
    Show {
        id: String,
    },
    /// Change role and/or status; their keys follow at once.
    Set {
        id: String,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        status: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "private")]
        visibility: String,
    },
    List,
    Show {
        id: String,
    },
    Set {
        id: String,
        #[arg(long)]
        visibility: String,
    },
    AddMember {
        id: String,
        user: String,
    },
    RemoveMember {
        id: String,
        user: String,
    },
}

/// One API call: method, path (with query), optional body.
type Call = (Method, String, Option<Value>);

fn keys_call(cmd: KeysCommand) -> Call {
    use KeysCommand as K;
    let at = |id: &str, action: &str| format!("/v1/keys/{id}{action}");
    match cmd {
        K::Create {
            name,
            scopes,
            expires_in,
            projects,
            user,
        } => (
            Method::POST,
            "/v1/keys".into(),
            Some(
                json!({ "name": name, "scopes": scopes, "expires_in": expires_in,
                         "project_ids": projects, "user_id": user }),
            ),
        ),
        K::List {
            user,
            status,
            limit,
            offset,
        } => {
            let query: Vec<String> = [
                ("user_id", user),
                ("status", status),
                ("limit", limit.map(|n| n.to_string())),
                ("offset", offset.map(|n| n.to_string())),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
            .collect();
            (Method::GET, format!("/v1/keys?{}", query.join("&")), None)
        }
        K::Show { id } => (Method::GET, at(&id, ""), None),
        K::Rename { id, name } => (Method::PATCH, at(&id, ""), Some(json!({ "name": name }))),
        K::SetScopes { id, scopes } => (
            Method::PATCH,
            at(&id, ""),
            Some(json!({ "scopes": scopes })),
        ),
        K::Revoke { id } => (Method::POST, at(&id, "/revoke"), None),
        K::Activate { id } => (Method::POST, at(&id, "/activate"), None),
        K::Rotate { id, grace } => (
            Method::POST,
            at(&id, "/rotate"),
            Some(json!({ "grace_period": grace })),
        ),
        K::Delete { id } => (Method::DELETE, at(&id, ""), None),
    }
}

fn users_call(cmd: UsersCommand) -> Call {
    match cmd {
        UsersCommand::Create { name, id, role } => (
            Method::POST,
            "/v1/users".into(),
            Some(json!({ "name": name, "id": id, "role": role })),
        ),
        UsersCommand::List => (Method::GET, "/v1/users?limit=200".into(), None),
        UsersCommand::Show { id } => (Method::GET, format!("/v1/users/{id}"), None),
        UsersCommand::Set { id, role, status } => (
            Method::PATCH,
            format!("/v1/users/{id}"),
            Some(json!({ "role": role, "status": status })),
        ),
    }
}

fn projects_call(cmd: ProjectsCommand) -> Call {
    use ProjectsCommand as P;
    let members = |id: &str, user: &str| format!("/v1/projects/{id}/members/{user}");
    match cmd {
        P::Create {
            id,
            name,
            visibility,
        } => (
            Method::POST,
            "/v1/projects".into(),
            Some(json!({ "id": id, "name": name, "visibility": visibility })),
        ),
        P::List => (Method::GET, "/v1/projects?limit=200".into(), None),
        P::Show { id } => (Method::GET, format!("/v1/projects/{id}"), None),
        P::Set { id, visibility } => (
            Method::PATCH,
            format!("/v1/projects/{id}"),
            Some(json!({ "visibility": visibility })),
        ),
        P::AddMember { id, user } => (Method::PUT, members(&id, &user), None),
        P::RemoveMember { id, user } => (Method::DELETE, members(&id, &user), None),
    }
}

pub async fn keys(args: ClientArgs, cmd: KeysCommand) -> u8 {
    run(args, keys_call(cmd)).await
}

pub async fn users(args: ClientArgs, cmd: UsersCommand) -> u8 {
    run(args, users_call(cmd)).await
}

pub async fn projects(args: ClientArgs, cmd: ProjectsCommand) -> u8 {
    run(args, projects_call(cmd)).await
}

/// Drops `null` fields, so options left out are not sent (the API's defaults apply).
fn without_nulls(mut body: Value) -> Value {
    if let Some(map) = body.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    body
}

async fn run(args: ClientArgs, (method, mut path, body): Call) -> u8 {
    let (Some(url), Some(api_key)) = (&args.url, &args.api_key) else {
        eprintln!("error: set KEYGATE_URL and KEYGATE_API_KEY (or --url and --api-key)");
        return EXIT_USAGE;
    };
    if let Some(org) = &args.org {
        let sep = if path.contains('?') { '&' } else { '?' };
        path = format!("{path}{sep}org_id={org}");
    }
    let uri = format!("{}{path}", url.trim_end_matches('/'));
    let body = body
        .map(without_nulls)
        .map_or(Bytes::new(), |b| Bytes::from(b.to_string()));
    let request = Request::builder()
        .method(method)
        .uri(&uri)
        .header(header::AUTHORIZATION, format!("Bearer {api_key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body));
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: `{uri}` is not a URL: {e}");
            return EXIT_USAGE;
        }
    };
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = match client.request(request).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot reach {url}: {e}");
            return EXIT_UNAVAILABLE;
        }
    };
    let status = response.status();
    let bytes = match response.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            eprintln!("error: the answer from {url} broke off: {e}");
            return EXIT_UNAVAILABLE;
        }
    };
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let message = value["message"].as_str().unwrap_or("no message");
        let code = value["error"]["code"].as_str().unwrap_or("?");
        eprintln!("error: {message} ({status}, {code})");
        return if status.is_client_error() {
            EXIT_REFUSED
        } else {
            EXIT_UNAVAILABLE
        };
    }
    print(&value, args.json);
    0
}

fn print(value: &Value, as_json: bool) {
    if let Some(secret) = value["secret"].as_str() {
        eprintln!("Store this key now: it is shown only once and cannot be recovered.");
        if as_json {
            println!("{}", serde_json::to_string_pretty(value).expect("JSON"));
        } else {
            println!("{secret}");
            eprint!("{}", row(value));
        }
        return;
    }
    if as_json {
        if !value.is_null() {
            println!("{}", serde_json::to_string_pretty(value).expect("JSON"));
        }
        return;
    }
    match value["items"].as_array() {
        Some(items) => items.iter().for_each(|v| print!("{}", row(v))),
        None if value.is_null() => println!("done"),
        None => print!("{}", row(value)),
    }
}

/// One line for a key, user or project.
fn row(v: &Value) -> String {
    let text = |name: &str| match &v[name] {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let cells: Vec<String> = if v.get("scopes").is_some() {
        [
            "id",
            "display",
            "name",
            "status",
            "scopes",
            "expires_at",
            "last_used_at",
        ]
        .map(text)
        .into()
    } else if v.get("role").is_some() {
        ["id", "name", "role", "status"].map(text).into()
    } else {
        ["id", "name", "visibility", "members"].map(text).into()
    };
    crate::cli::row(&cells.iter().map(String::as_str).collect::<Vec<_>>())
}
