//! The management API: JSON under `/v1` on the admin listener.
//!
//! Owns: who is calling ([`Caller`]: the bootstrap token from the environment, compared in
//! constant time, or a key with `keys:manage`, or an org admin's key with `admin`), routing (one
//! `match`, mirrored by `openapi.json`, which a test walks), the API's errors (one enum, one
//! exhaustive `match` to status and code), and JSON in and out. Does not own: the rules on keys,
//! users and projects — those are the store functions the CLI uses too; this module only adds
//! who may call them. Every write goes through a store handle acting as the caller, so the audit
//! log names them and the request id.
//!
//! Visibility: nobody sees another org's resources (404, not 403), and a non-admin sees only their
//! own keys (others' are 404 as well). Users, projects, legacy imports and the audit log are for
//! org admins (403 for members).

mod directory;
mod keys;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::{CHALLENGE, add_status_headers, json_error};
use crate::model::{KeyId, OrgId, Owner, ProjectStatus, Role, Scope, UserId, unix_now};
use crate::policy::{self, grants};
use crate::replica::Replica;
use crate::store::audit::Actor;
use crate::store::{Store, StoreError};

/// Request bodies of the management API are small JSON documents.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// The OpenAPI 3 description of this module's endpoints.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The methods the API's operations use; any other gets 405.
const API_METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];
const API_ALLOW: &str = "GET, POST, PUT, PATCH, DELETE";

/// Why a management request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("send a management key or the bootstrap token as 'Authorization: Bearer …'")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("the request body is not valid JSON for this endpoint: {0}")]
    BadJson(String),
    #[error("`{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("no such endpoint; see GET /v1/openapi.json")]
    NoRoute,
    #[error("the management API takes GET, POST, PUT, PATCH and DELETE only")]
    MethodNotAllowed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) | ApiError::NoRoute => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::BadJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            ApiError::Store(e) => match e {
                StoreError::Unavailable(_) | StoreError::Timeout => {
                    (StatusCode::SERVICE_UNAVAILABLE, "key_store_unavailable")
                }
                StoreError::Corrupt(_) | StoreError::Schema(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
                }
                StoreError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
                StoreError::AlreadyExists { .. } => (StatusCode::CONFLICT, "already_exists"),
                StoreError::KeyNotRevoked => (StatusCode::CONFLICT, "key_not_revoked"),
                StoreError::ProjectNotArchived => (StatusCode::CONFLICT, "project_not_archived"),
                StoreError::KeyRevoked => (StatusCode::CONFLICT, "key_revoked"),
                StoreError::Rejected(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            },
        }
    }

    fn to_response(&self) -> Response<Full<Bytes>> {
        let (status, code) = self.parts();
        let mut res = json_error(status, code, &self.to_string());
        add_status_headers(&mut res, CHALLENGE);
        if let ApiError::MethodNotAllowed = self {
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(API_ALLOW));
        }
        res
    }

    /// A store "not found" as this API's 404 for `kind`; other store errors unchanged.
    fn not_found(kind: &'static str) -> impl Fn(StoreError) -> ApiError {
        move |e| match e {
            StoreError::NotFound { .. } => ApiError::NotFound(kind),
            other => other.into(),
        }
    }
}

/// Who is calling, after authentication.
#[derive(Debug)]
pub struct Caller {
    /// `None` for the bootstrap token (every org).
    pub user: Option<Owner>,
    /// May manage every key, user and project of its org.
    pub admin: bool,
    /// The key the caller authenticated with.
    pub key_id: Option<KeyId>,
}

impl Caller {
    /// Whether the caller may see and act on something of `org` owned by `owner`. Everything
    /// else is reported as not found.
    fn may_touch(&self, org: &OrgId, owner: &UserId) -> bool {
        match &self.user {
            None => true,
            Some(u) => &u.org_id == org && (self.admin || &u.id == owner),
        }
    }

    /// Whether `org`'s resources are visible to the caller at all.
    fn sees_org(&self, org: &OrgId) -> bool {
        self.user.as_ref().is_none_or(|u| &u.org_id == org)
    }

    fn require_admin(&self) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "only org admins manage users, projects, legacy credentials and the audit log",
            ))
        }
    }
}

/// One management request's context.
pub struct Ctx<'a> {
    replica: &'a Replica,
    caller: Caller,
    /// The store, acting as the caller (every write is audited as theirs).
    store: Store,
    query: String,
}

impl Ctx<'_> {
    /// A query parameter (ids, words and numbers: nothing here needs percent-decoding).
    fn param(&self, name: &str) -> Option<String> {
        self.query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    }

    /// A whole-number query parameter.
    fn number(&self, name: &'static str, default: usize) -> Result<usize, ApiError> {
        self.param(name).map_or(Ok(default), |v| {
            v.parse().map_err(|_| ApiError::Invalid {
                field: name,
                message: "must be a whole number".into(),
            })
        })
    }

    /// The org a request acts on: the caller's own; the bootstrap token names it (`org_id` in
    /// the query, or `given` from the body). Another org than the caller's is not found.
    async fn org(&self, given: Option<&str>) -> Result<OrgId, ApiError> {
        let named = given.map(str::to_owned).or_else(|| self.param("org_id"));
        let org = match (&self.caller.user, named) {
            (Some(me), None) => return Ok(me.org_id.clone()),
            (Some(me), Some(o)) if o == me.org_id.as_str() => return Ok(me.org_id.clone()),
            (Some(_), Some(_)) => return Err(ApiError::NotFound("org")),
            (None, Some(o)) => OrgId::from(o),
            (None, None) => {
                return Err(ApiError::Invalid {
                    field: "org_id",
                    message: "the bootstrap token must name an org".into(),
                });
            }
        };
        self.store
            .org(&org)
            .await
            .map_err(ApiError::not_found("org"))?;
        Ok(org)
    }
}

/// Serves one `/v1/…` request, and writes its access line (method, path, status, actor,
/// request id; never a secret).
pub async fn handle(replica: &Replica, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let request_id = crate::telemetry::request_id(req.headers());
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let mut actor = Actor::named("anonymous");
    actor.request_id = request_id.to_str().ok().map(str::to_owned);
    let result = match (&method, path.as_str()) {
        (&Method::GET, "/v1/openapi.json") => Ok(openapi()),
        (&Method::POST, "/v1/keys/revoke") => {
            // Whoever holds a secret may revoke its key: the secret is the credential.
            actor.who = "secret-holder".into();
            let store = replica.store.acting_as(actor.clone());
            match json_body::<keys::RevokeBySecret>(req).await {
                Ok(body) => keys::revoke_by_secret(&replica.config.keys, &store, &body).await,
                Err(e) => Err(e),
            }
        }
        _ => match authenticate(replica, req.headers()).await {
            Ok(caller) => {
                actor.who = caller
                    .user
                    .as_ref()
                    .map_or("bootstrap".to_owned(), |u| format!("user:{}", u.id));
                actor.key_id = caller.key_id.clone();
                let ctx = Ctx {
                    replica,
                    store: replica.store.acting_as(actor.clone()),
                    query: req.uri().query().unwrap_or("").to_owned(),
                    caller,
                };
                route(&ctx, req).await
            }
            Err(e) => Err(e),
        },
    };
    let mut res = result.unwrap_or_else(|e| {
        log_failure(replica, &e);
        e.to_response()
    });
    tracing::info!(
        target: "keygate::access",
        request_id = actor.request_id.as_deref().unwrap_or(""),
        method = %method,
        path,
        status = res.status().as_u16(),
        actor = actor.who,
        key_id = actor.key_id.as_ref().map_or("", |k| k.as_str()),
    );
    res.headers_mut().insert("x-request-id", request_id);
    // Answers carry keys, secrets once, and people: never kept by a browser or a proxy.
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// keygate's own failures, logged once when they start (the data plane logs them ending).
fn log_failure(replica: &Replica, e: &ApiError) {
    let health = &replica.health;
    match e {
        ApiError::Store(store) if store.is_unavailable() && health.store.failed() => {
            tracing::warn!(error = %crate::telemetry::chain(e), "key store unreachable: the management API answers 503");
        }
        ApiError::Store(StoreError::Corrupt(_)) if health.corrupt_records.failed() => {
            tracing::error!(error = %crate::telemetry::chain(e), "a record in the key store is corrupt");
        }
        _ => {}
    }
}

/// This API's OpenAPI document.
fn openapi() -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

async fn route(ctx: &Ctx<'_>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let segments: Vec<&str> = path.split('/').skip(2).collect(); // "", "v1", …
    let method = req.method().clone();
    match (method, segments.as_slice()) {
        (Method::POST, ["keys"]) => keys::create(ctx, json_body(req).await?).await,
        (Method::GET, ["keys"]) => keys::list(ctx).await,
        (Method::GET, ["keys", id]) => keys::show(ctx, id).await,
        (Method::PATCH, ["keys", id]) => keys::update(ctx, id, json_body(req).await?).await,
        (Method::POST, ["keys", id, "revoke"]) => keys::set_status(ctx, id, false).await,
        (Method::POST, ["keys", id, "activate"]) => keys::set_status(ctx, id, true).await,
        (Method::POST, ["keys", id, "rotate"]) => {
            keys::rotate(ctx, id, optional_json_body(req).await?).await
        }
        (Method::DELETE, ["keys", id]) => keys::delete(ctx, id).await,
        (Method::POST, ["legacy-credentials"]) => {
            keys::import_legacy(ctx, json_body(req).await?).await
        }
        (Method::POST, ["orgs"]) => directory::create_org(ctx, json_body(req).await?).await,
        (Method::GET, ["orgs"]) => directory::list_orgs(ctx).await,
        (Method::POST, ["users"]) => directory::create_user(ctx, json_body(req).await?).await,
        (Method::GET, ["users"]) => directory::list_users(ctx).await,
        (Method::GET, ["users", id]) => directory::show_user(ctx, id).await,
        (Method::PATCH, ["users", id]) => {
            directory::update_user(ctx, id, json_body(req).await?).await
        }
        (Method::POST, ["memberships"]) => directory::add_member(ctx, json_body(req).await?).await,
        (Method::GET, ["accounts", id]) => directory::show_account(ctx, id).await,
        (Method::PATCH, ["accounts", id]) => {
            directory::update_account(ctx, id, json_body(req).await?).await
        }
        (Method::POST, ["invitations"]) => directory::invite(ctx, json_body(req).await?).await,
        (Method::GET, ["invitations"]) => directory::list_invitations(ctx).await,
        (Method::DELETE, ["invitations", id]) => directory::delete_invitation(ctx, id).await,
        (Method::POST, ["orgs", org, "invitations", id, "accept"]) => {
            directory::accept_invitation(ctx, org, id).await
        }
        (Method::POST, ["projects"]) => directory::create_project(ctx, json_body(req).await?).await,
        (Method::GET, ["projects"]) => directory::list_projects(ctx).await,
        (Method::GET, ["projects", id]) => directory::show_project(ctx, id).await,
        (Method::PATCH, ["projects", id]) => {
            directory::update_project(ctx, id, json_body(req).await?).await
        }
        (Method::POST, ["projects", id, "archive"]) => {
            directory::set_project_status(ctx, id, ProjectStatus::Archived).await
        }
        (Method::POST, ["projects", id, "restore"]) => {
            directory::set_project_status(ctx, id, ProjectStatus::Active).await
        }
        (Method::DELETE, ["projects", id]) => directory::delete_project(ctx, id).await,
        (Method::PUT, ["projects", id, "members", user]) => {
            directory::set_member(ctx, id, user, true).await
        }
        (Method::DELETE, ["projects", id, "members", user]) => {
            directory::set_member(ctx, id, user, false).await
        }
        (Method::GET, ["audit"]) => directory::audit(ctx).await,
        (Method::GET, ["settings"]) => Ok(settings(ctx)),
        (method, _) if !API_METHODS.contains(&method) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NoRoute),
    }
}

/// What a client (the console) needs to offer only what will be accepted: the presets and
/// resources scopes may name, the longest validity, and the legacy sunset.
fn settings(ctx: &Ctx<'_>) -> Response<Full<Bytes>> {
    let config = &ctx.replica.config;
    let presets: serde_json::Map<String, serde_json::Value> = config
        .presets
        .iter()
        .map(|(name, scopes)| {
            let scopes: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
            (name.clone(), serde_json::json!(scopes))
        })
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({
            "presets": presets,
            "resources": config.resources,
            "max_validity_secs": config.max_validity.as_secs(),
            "allow_no_expiry": config.allow_no_expiry,
            "legacy_sunset": config.legacy_sunset.as_ref().map(|s| s.at),
        }),
    )
}

/// The bearer token of a request, trimmed.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Equality that takes the same time wherever the inputs differ (compares SHA-256 digests).
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

async fn authenticate(replica: &Replica, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = bearer(headers).ok_or(ApiError::Unauthenticated)?;
    if let Some(admin) = &replica.config.admin_token
        && constant_time_eq(token, &admin.0)
    {
        return Ok(Caller {
            user: None,
            admin: true,
            key_id: None,
        });
    }
    let credential = replica
        .config
        .keys
        .parse(token)
        .map_err(|_| ApiError::Unauthenticated)?;
    // Straight from the store: management is rare and must act on the latest state.
    let principal = replica
        .store
        .resolve_key(credential.hash())
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    let sunset = replica.config.legacy_sunset.as_ref().map(|s| s.at);
    policy::check_key(&principal, &credential, unix_now(), sunset)
        .map_err(|_| ApiError::Unauthenticated)?;
    let (key, owner) = (&principal.key, &principal.owner);
    if owner.role == Role::Guest {
        return Err(ApiError::Forbidden("guests cannot manage keys"));
    }
    let admin = grants(&key.scopes, owner.role, &Scope::new("admin"));
    if !admin && !grants(&key.scopes, owner.role, &Scope::new("keys:manage")) {
        return Err(ApiError::Forbidden("this key lacks the keys:manage scope"));
    }
    Ok(Caller {
        key_id: Some(principal.key.id),
        user: Some(principal.owner),
        admin,
    })
}

/// Reads and parses a JSON body (unknown fields are errors).
async fn json_body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    parse_object(&read_body(req).await?)
}

/// A body that is a JSON object with no `null` field, as the schema says: serde alone would
/// also read an array positionally into the struct, and `null` as a field left out.
fn parse_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let bad = |e: serde_json::Error| ApiError::BadJson(e.to_string());
    let value: serde_json::Value = serde_json::from_slice(body).map_err(bad)?;
    let Some(fields) = value.as_object() else {
        return Err(ApiError::BadJson("the body must be a JSON object".into()));
    };
    if let Some((name, _)) = fields.iter().find(|(_, v)| v.is_null()) {
        return Err(ApiError::BadJson(format!(
            "`{name}` is null; leave a field out instead"
        )));
    }
    serde_json::from_value(value).map_err(bad)
}

/// A JSON body that may be left out entirely (every field has a default).
async fn optional_json_body<T: DeserializeOwned + Default>(
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let body = read_body(req).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_object(&body)
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    Ok(Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| ApiError::BadJson(e.to_string()))?
        .to_bytes())
}

/// A JSON response (also used by the admin endpoints).
pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).expect("API values serialize");
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// `{items, next_offset, total}`: one page of `all` at the caller's `offset` and `limit`.
fn page<T: serde::Serialize>(ctx: &Ctx<'_>, all: &[T]) -> Result<Response<Full<Bytes>>, ApiError> {
    const PAGE_DEFAULT: usize = 50;
    const PAGE_MAX: usize = 200;
    let limit = ctx.number("limit", PAGE_DEFAULT)?.clamp(1, PAGE_MAX);
    let offset = ctx.number("offset", 0)?;
    let next = (offset + limit < all.len()).then_some(offset + limit);
    let items: Vec<&T> = all.iter().skip(offset).take(limit).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "items": items, "next_offset": next, "total": all.len() }),
    ))
}

/// `204 No Content`.
fn no_content() -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::default());
    *res.status_mut() = StatusCode::NO_CONTENT;
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(
            "a-long-bootstrap-token",
            "a-long-bootstrap-token"
        ));
        assert!(!constant_time_eq(
            "a-long-bootstrap-token",
            "a-long-bootstrap-tokem"
        ));
        assert!(!constant_time_eq("short", "a-long-bootstrap-token"));
    }

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer  tok ".parse().unwrap());
        assert_eq!(bearer(&h), Some("tok"));
        h.insert(header::AUTHORIZATION, "Basic tok".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn the_openapi_document_is_json_with_every_path_under_v1() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() >= 12, "{}", paths.len());
        assert!(paths.keys().all(|p| p.starts_with("/v1/")));
    }
}
