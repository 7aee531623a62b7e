//! `/v1/keys`: create (the secret is returned once), list (paginated), show, rename and change
//! scopes, revoke, activate, delete (only once revoked).
//!
//! On top of the store's rules: a user manages their own keys, an org admin every key of the org;
//! a `keys:manage` key cannot mint keys covering `admin`; validity is 1 minute to
//! `keys.max_validity`, and a key without expiry only where `keys.allow_no_expiry` says so.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Deserialize;

use super::{ApiError, Caller, json};
use crate::policy::Scope;
use crate::proxy::Gateway;
use crate::store::keys::NewKey;
use crate::store::model::{KeyId, KeyRecord, KeyStatus, OrgId, ProjectId, UserId, unix_now};

const PAGE_DEFAULT: usize = 50;
const PAGE_MAX: usize = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    scopes: Vec<String>,
    /// A duration like "30d" or "12h".
    expires_in: Option<String>,
    /// Unix seconds.
    expires_at: Option<u64>,
    #[serde(default)]
    project_ids: Vec<String>,
    /// Another user of the caller's org (admins only); default: the caller.
    user_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    name: Option<String>,
    scopes: Option<Vec<String>>,
}

fn scopes(gw: &Gateway, names: &[String]) -> Result<Vec<Scope>, ApiError> {
    gw.config
        .scopes(names)
        .map_err(|message| ApiError::Invalid {
            field: "scopes",
            message,
        })
}

/// The expiry a request asks for, within the configured bounds.
fn expiry(gw: &Gateway, body: &CreateKey) -> Result<Option<u64>, ApiError> {
    let now = unix_now();
    let at = match (&body.expires_in, body.expires_at) {
        (Some(_), Some(_)) => {
            return Err(ApiError::Invalid {
                field: "expires_in",
                message: "give expires_in or expires_at, not both".into(),
            });
        }
        (Some(text), None) => {
            let d = humantime::parse_duration(text).map_err(|_| ApiError::Invalid {
                field: "expires_in",
                message: format!("`{text}` is not a duration like \"30d\""),
            })?;
            Some(now + d.as_secs())
        }
        (None, Some(at)) => Some(at),
        (None, None) if gw.config.allow_no_expiry => None,
        (None, None) => Some(now + gw.config.max_validity.as_secs()),
    };
    if let Some(at) = at {
        if at < now + crate::store::keys::MIN_VALIDITY_SECS {
            return Err(ApiError::Invalid {
                field: "expires_in",
                message: "a key must be valid for at least 1 minute".into(),
            });
        }
        if at > now + gw.config.max_validity.as_secs() {
            let max = humantime::format_duration(gw.config.max_validity);
            return Err(ApiError::Invalid {
                field: "expires_in",
                message: format!("a key may be valid for at most {max}"),
            });
        }
    }
    Ok(at)
}

pub async fn create(
    gw: &Gateway,
    caller: &Caller,
    body: CreateKey,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let user_id = match (&body.user_id, &caller.user) {
        (Some(id), _) => UserId(id.clone()),
        (None, Some(me)) => me.id.clone(),
        (None, None) => {
            return Err(ApiError::Invalid {
                field: "user_id",
                message: "the bootstrap token must name the key's owner".into(),
            });
        }
    };
    let owner = gw
        .store
        .user(&user_id)
        .await
        .map_err(|_| ApiError::NotFound("user"))?;
    if !caller.may_touch(&owner.org_id, &owner.id) {
        return Err(ApiError::NotFound("user"));
    }
    let scopes = scopes(gw, &body.scopes)?;
    let admin = Scope::new("admin".into());
    if !caller.admin && scopes.iter().any(|s| s.covers(&admin)) {
        return Err(ApiError::Forbidden(
            "a keys:manage key cannot create keys with the admin scope",
        ));
    }
    let new = NewKey {
        user_id,
        name: body.name.clone(),
        scopes,
        project_ids: body.project_ids.iter().cloned().map(ProjectId).collect(),
        expires_at: expiry(gw, &body)?,
    };
    let created = gw.store.create_key(&gw.config.keys, new).await?;
    let mut v = serde_json::to_value(&created.record).expect("records serialize");
    v["secret"] = serde_json::Value::String(created.secret);
    Ok(json(StatusCode::CREATED, &v))
}

/// A key the caller may see, or not found.
async fn visible_key(gw: &Gateway, caller: &Caller, id: &str) -> Result<KeyRecord, ApiError> {
    let key = gw
        .store
        .key(&KeyId(id.to_owned()))
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound { .. } => ApiError::NotFound("key"),
            other => other.into(),
        })?;
    if caller.may_touch(&key.org_id, &key.user_id) {
        Ok(key)
    } else {
        Err(ApiError::NotFound("key"))
    }
}

pub async fn show(
    gw: &Gateway,
    caller: &Caller,
    id: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    Ok(json(StatusCode::OK, &visible_key(gw, caller, id).await?))
}

pub async fn list(
    gw: &Gateway,
    caller: &Caller,
    query: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let param = |name: &str| {
        query
            .unwrap_or("")
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    };
    let org = match (caller.org(), param("org_id")) {
        (Some(org), _) => org.clone(),
        (None, Some(org)) => OrgId(org),
        (None, None) => {
            return Err(ApiError::Invalid {
                field: "org_id",
                message: "the bootstrap token must name an org".into(),
            });
        }
    };
    let user = match (param("user_id"), &caller.user) {
        (Some(u), Some(me)) if !caller.admin && u != me.id.as_str() => {
            return Err(ApiError::NotFound("user"));
        }
        (Some(u), _) => Some(UserId(u)),
        (None, Some(me)) if !caller.admin => Some(me.id.clone()),
        (None, _) => None,
    };
    let status = match param("status") {
        Some(s) => Some(s.parse::<KeyStatus>().map_err(|m| ApiError::Invalid {
            field: "status",
            message: m,
        })?),
        None => None,
    };
    let number = |name: &'static str, default: usize| -> Result<usize, ApiError> {
        param(name).map_or(Ok(default), |v| {
            v.parse().map_err(|_| ApiError::Invalid {
                field: name,
                message: "must be a whole number".into(),
            })
        })
    };
    let (limit, offset) = (
        number("limit", PAGE_DEFAULT)?.clamp(1, PAGE_MAX),
        number("offset", 0)?,
    );
    let keys: Vec<KeyRecord> = gw
        .store
        .keys(&org, user.as_ref())
        .await?
        .into_iter()
        .filter(|k| status.is_none_or(|s| k.status == s))
        .collect();
    let next = (offset + limit < keys.len()).then_some(offset + limit);
    let page: Vec<&KeyRecord> = keys.iter().skip(offset).take(limit).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "items": page, "next_offset": next, "total": keys.len() }),
    ))
}

pub async fn update(
    gw: &Gateway,
    caller: &Caller,
    id: &str,
    body: UpdateKey,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let mut key = visible_key(gw, caller, id).await?;
    if let Some(name) = &body.name {
        key = gw.store.rename_key(&key.id, name).await?;
    }
    if let Some(names) = &body.scopes {
        let scopes = scopes(gw, names)?;
        if !caller.admin && scopes.iter().any(|s| s.covers(&Scope::new("admin".into()))) {
            return Err(ApiError::Forbidden(
                "a keys:manage key cannot grant the admin scope",
            ));
        }
        key = gw.store.set_key_scopes(&key.id, scopes).await?;
    }
    Ok(json(StatusCode::OK, &key))
}

pub async fn set_status(
    gw: &Gateway,
    caller: &Caller,
    id: &str,
    active: bool,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let key = visible_key(gw, caller, id).await?;
    let status = if active {
        KeyStatus::Active
    } else {
        KeyStatus::Revoked
    };
    Ok(json(
        StatusCode::OK,
        &gw.store.set_key_status(&key.id, status).await?,
    ))
}

pub async fn delete(
    gw: &Gateway,
    caller: &Caller,
    id: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let key = visible_key(gw, caller, id).await?;
    gw.store.delete_key(&key.id).await?;
    let mut res = Response::new(Full::default());
    *res.status_mut() = StatusCode::NO_CONTENT;
    Ok(res)
}
