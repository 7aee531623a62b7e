//! The management commands over the management API of a running keygate.
//!
//! Owns: the request each command makes. Does not own any rule: the API decides, and its error
//! message is printed as is.

use std::io::Read;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use super::{
    EXIT_REFUSED, EXIT_UNAVAILABLE, Failure, KeysCommand, Manage, OrgsCommand, ProjectsCommand,
    UsersCommand,
};

/// One API call: method, path (with query), optional body.
type Call = (Method, String, Option<Value>);

/// Sends `command` to the API at `url` as the holder of `api_key`; the API's answer.
pub async fn run(
    url: &str,
    api_key: Option<&str>,
    org: Option<&str>,
    command: Manage,
) -> Result<Value, Failure> {
    if let Manage::Keys(KeysCommand::Revoke { id }) = &command
        && super::is_secret(id)
    {
        let body = json!({ "secret": id });
        return send(url, api_key, Method::POST, "/v1/keys/revoke", Some(body)).await;
    }
    let Some(api_key) = api_key else {
        return Err(Failure::usage(
            "set KEYGATE_API_KEY (or --api-key): a key with keys:manage, or the bootstrap token",
        ));
    };
    let (method, mut path, body) = match command {
        Manage::Orgs(c) => orgs_call(c),
        Manage::Users(c) => users_call(c),
        Manage::Projects(c) => projects_call(c),
        Manage::Keys(c) => keys_call(c)?,
    };
    if let Some(org) = org {
        let sep = if path.contains('?') { '&' } else { '?' };
        path = format!("{path}{sep}org_id={org}");
    }
    send(url, Some(api_key), method, &path, body).await
}

fn orgs_call(cmd: OrgsCommand) -> Call {
    match cmd {
        OrgsCommand::Create { id, name } => (
            Method::POST,
            "/v1/orgs".into(),
            Some(json!({ "id": id, "name": name })),
        ),
        OrgsCommand::List => (Method::GET, "/v1/orgs".into(), None),
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
        UsersCommand::AddMember { id, role } => (
            Method::POST,
            "/v1/memberships".into(),
            Some(json!({ "user_id": id, "role": role })),
        ),
        UsersCommand::Invite { id, role } => (
            Method::POST,
            "/v1/invitations".into(),
            Some(json!({ "user_id": id, "role": role })),
        ),
        UsersCommand::Accept { org, invitation } => (
            Method::POST,
            format!("/v1/orgs/{org}/invitations/{invitation}/accept"),
            None,
        ),
        UsersCommand::SetAccount { id, status } => (
            Method::PATCH,
            format!("/v1/accounts/{id}"),
            Some(json!({ "status": status })),
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
        P::Archive { id } => (Method::POST, format!("/v1/projects/{id}/archive"), None),
        P::Restore { id } => (Method::POST, format!("/v1/projects/{id}/restore"), None),
        P::Delete { id } => (Method::DELETE, format!("/v1/projects/{id}"), None),
    }
}

fn keys_call(cmd: KeysCommand) -> Result<Call, Failure> {
    use KeysCommand as K;
    let at = |id: &str, action: &str| format!("/v1/keys/{id}{action}");
    Ok(match cmd {
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
        K::CreateMany { .. } => {
            return Err(Failure::usage(
                "`keys create-many` works on the store directly only: give --config FILE",
            ));
        }
        K::ImportLegacy {
            user,
            name,
            legacy_id,
            scopes,
        } => (
            Method::POST,
            "/v1/legacy-credentials".into(),
            Some(
                json!({ "user_id": user, "name": name, "legacy_id": legacy_id,
                         "secret": secret_from_stdin()?, "scopes": scopes }),
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
        K::SetProjects { id, projects, .. } => (
            Method::PATCH,
            at(&id, ""),
            Some(json!({ "project_ids": projects })),
        ),
        K::Revoke { id } => (Method::POST, at(&id, "/revoke"), None),
        K::Activate { id } => (Method::POST, at(&id, "/activate"), None),
        K::Rotate { id, grace } => (
            Method::POST,
            at(&id, "/rotate"),
            Some(json!({ "grace_period": grace })),
        ),
        K::Delete { id } => (Method::DELETE, at(&id, ""), None),
    })
}

/// A legacy pair's secret, read from standard input (never from the command line, where other
/// users of the machine could see it).
pub fn secret_from_stdin() -> Result<String, Failure> {
    let mut secret = String::new();
    std::io::stdin().read_to_string(&mut secret).map_err(|e| {
        Failure::refused(format!("cannot read the secret from standard input: {e}"))
    })?;
    Ok(secret.trim().to_owned())
}

/// Drops `null` fields, so options left out are not sent (the API's defaults apply).
fn without_nulls(mut body: Value) -> Value {
    if let Some(map) = body.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    body
}

pub(super) async fn send(
    url: &str,
    api_key: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, Failure> {
    let uri = format!("{}{path}", url.trim_end_matches('/'));
    let body = body
        .map(without_nulls)
        .map_or(Bytes::new(), |b| Bytes::from(b.to_string()));
    let mut request = Request::builder().method(method).uri(&uri);
    if let Some(key) = api_key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let request = request
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| Failure::usage(format!("`{uri}` is not a URL: {e}")))?;
    let unavailable = |message: String| Failure {
        code: EXIT_UNAVAILABLE,
        message,
    };
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .request(request)
        .await
        .map_err(|e| unavailable(format!("cannot reach {url}: {e}")))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| unavailable(format!("the answer from {url} broke off: {e}")))?
        .to_bytes();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(value);
    }
    let message = value["message"].as_str().unwrap_or("no message");
    let code = value["error"]["code"].as_str().unwrap_or("?");
    Err(Failure {
        code: if status.is_client_error() {
            EXIT_REFUSED
        } else {
            EXIT_UNAVAILABLE
        },
        message: format!("{message} ({status}, {code})"),
    })
}
