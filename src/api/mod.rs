//! The management API: JSON under `/v1` on the admin listener.
//!
//! Owns: who is calling ([`Caller`]: the bootstrap token from the environment, compared in
//! constant time, or a key with `keys:manage`, or an org admin's key with `admin`), routing, the
//! API's errors (one enum, one exhaustive `match` to status and code), and JSON in and out.
//! Does not own: the rules on keys, users and projects — those are the store functions the CLI
//! uses too; this module only adds who may call them.
//!
//! Visibility: nobody sees another org's resources (404, not 403), and a non-admin sees only their
//! own keys (others' are 404 as well).

mod keys;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::json_error;
use crate::policy::{self, Scope, grants};
use crate::proxy::Gateway;
use crate::store::StoreError;
use crate::store::model::{OrgId, Role, User, unix_now};

/// Request bodies of the management API are small JSON documents.
const MAX_BODY_BYTES: usize = 64 * 1024;

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
    #[error("no such endpoint")]
    NoRoute,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) | ApiError::NoRoute => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            ApiError::Store(e) => match e {
                StoreError::Unavailable(_) | StoreError::Timeout => {
                    (StatusCode::SERVICE_UNAVAILABLE, "key_store_unavailable")
                }
                StoreError::Corrupt(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
                StoreError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
                StoreError::AlreadyExists { .. } => (StatusCode::CONFLICT, "already_exists"),
                StoreError::KeyNotRevoked => (StatusCode::CONFLICT, "key_not_revoked"),
                StoreError::Rejected(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            },
        }
    }

    fn to_response(&self) -> Response<Full<Bytes>> {
        let (status, code) = self.parts();
        json_error(status, code, &self.to_string())
    }
}

/// Who is calling, after authentication.
#[derive(Debug)]
pub struct Caller {
    /// `None` for the bootstrap token (every org).
    pub user: Option<User>,
    /// May manage every key, user and project of its org.
    pub admin: bool,
}

impl Caller {
    /// Whether the caller may see and act on something of `org` owned by `owner`. Everything
    /// else is reported as not found.
    fn may_touch(&self, org: &OrgId, owner: &crate::store::model::UserId) -> bool {
        match &self.user {
            None => true,
            Some(u) => &u.org_id == org && (self.admin || &u.id == owner),
        }
    }

    fn org(&self) -> Option<&OrgId> {
        self.user.as_ref().map(|u| &u.org_id)
    }
}

/// Serves one `/v1/…` request.
pub async fn handle(gw: &Gateway, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let result = async {
        let caller = authenticate(gw, req.headers()).await?;
        route(gw, &caller, req).await
    }
    .await;
    result.unwrap_or_else(|e| {
        if e.parts().0.is_server_error() {
            tracing::warn!(error = %e, "management request failed");
        }
        e.to_response()
    })
}

async fn route(
    gw: &Gateway,
    caller: &Caller,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let segments: Vec<&str> = path.split('/').skip(2).collect(); // "", "v1", …
    match (req.method().clone(), segments.as_slice()) {
        (Method::POST, ["keys"]) => keys::create(gw, caller, json_body(req).await?).await,
        (Method::GET, ["keys"]) => keys::list(gw, caller, req.uri().query()).await,
        (Method::GET, ["keys", id]) => keys::show(gw, caller, id).await,
        (Method::PATCH, ["keys", id]) => keys::update(gw, caller, id, json_body(req).await?).await,
        (Method::POST, ["keys", id, "revoke"]) => keys::set_status(gw, caller, id, false).await,
        (Method::POST, ["keys", id, "activate"]) => keys::set_status(gw, caller, id, true).await,
        (Method::DELETE, ["keys", id]) => keys::delete(gw, caller, id).await,
        _ => Err(ApiError::NoRoute),
    }
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

async fn authenticate(gw: &Gateway, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = bearer(headers).ok_or(ApiError::Unauthenticated)?;
    if let Some(admin) = &gw.config.admin_token
        && constant_time_eq(token, &admin.0)
    {
        return Ok(Caller {
            user: None,
            admin: true,
        });
    }
    let credential = gw
        .config
        .keys
        .parse(token)
        .map_err(|_| ApiError::Unauthenticated)?;
    // Straight from the store: management is rare and must act on the latest state.
    let principal = gw
        .store
        .resolve_key(credential.hash())
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    policy::check_key(&principal, unix_now()).map_err(|_| ApiError::Unauthenticated)?;
    let (key, owner) = (&principal.key, &principal.owner);
    if owner.role == Role::Guest {
        return Err(ApiError::Forbidden("guests cannot manage keys"));
    }
    let admin = grants(&key.scopes, owner.role, &Scope::new("admin".into()));
    if !admin && !grants(&key.scopes, owner.role, &Scope::new("keys:manage".into())) {
        return Err(ApiError::Forbidden("this key lacks the keys:manage scope"));
    }
    Ok(Caller {
        user: Some(principal.owner),
        admin,
    })
}

/// Reads and parses a JSON body (unknown fields are errors).
async fn json_body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| ApiError::BadJson(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| ApiError::BadJson(e.to_string()))
}

/// A JSON response (also used by the admin endpoints).
pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).expect("API values serialize");
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
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
}
