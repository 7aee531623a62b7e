//! `/v1/keys` and `/v1/legacy-credentials`: create (the secret is returned once), list
//! (paginated), show, rename and change scopes, revoke, activate, rotate (a new secret once; the
//! old one works for a grace period), delete (only once revoked), import a legacy pair.
//!
//! On top of the store's rules: a user manages their own keys, an org admin every key of the org;
//! a `keys:manage` key cannot mint or grant scopes covering `admin`; validity is 1 minute to
//! `keys.max_validity`, and a key without expiry only where `keys.allow_no_expiry` says so;
//! legacy pairs are imported by admins and end at `keys.legacy_sunset`, not by expiry.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Deserialize;

use super::{ApiError, Ctx, json, no_content, page};
use crate::model::{
    KeyId, KeyRecord, KeyState, KeyStatus, OrgId, ProjectId, Scope, UserId, unix_now,
};
use crate::store::keys::{CreatedKey, NewKey, expiry};

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
    /// The projects the key is restricted to; `[]`: any its owner may use.
    project_ids: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the old secret keeps working, like "24h"; default: it stops at once.
    grace_period: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportLegacy {
    /// The id clients send in `apikey`.
    legacy_id: String,
    /// The secret clients send in `apisecret` (stored hashed, never returned).
    secret: String,
    name: String,
    scopes: Vec<String>,
    #[serde(default)]
    project_ids: Vec<String>,
    user_id: Option<String>,
}

/// Scope names or presets → scopes; a caller who is not an admin may not hand out `admin`.
fn scopes(ctx: &Ctx<'_>, names: &[String]) -> Result<Vec<Scope>, ApiError> {
    let scopes = ctx
        .replica
        .config
        .scopes(names)
        .map_err(|message| ApiError::Invalid {
            field: "scopes",
            message,
        })?;
    let admin = Scope::new("admin");
    if !ctx.caller.admin && scopes.iter().any(|s| s.covers(&admin)) {
        return Err(ApiError::Forbidden(
            "a keys:manage key cannot give keys the admin scope",
        ));
    }
    Ok(scopes)
}

fn duration(field: &'static str, text: &str) -> Result<std::time::Duration, ApiError> {
    humantime::parse_duration(text).map_err(|_| ApiError::Invalid {
        field,
        message: format!("`{text}` is not a duration like \"30d\" or \"12h\""),
    })
}

/// The expiry a request asks for, within the configured bounds.
fn key_expiry(ctx: &Ctx<'_>, body: &CreateKey) -> Result<Option<u64>, ApiError> {
    let cfg = &ctx.replica.config;
    let now = unix_now();
    let invalid = |message: String| ApiError::Invalid {
        field: "expires_in",
        message,
    };
    let asked = match (&body.expires_in, body.expires_at) {
        (Some(_), Some(_)) => {
            return Err(invalid("give expires_in or expires_at, not both".into()));
        }
        (Some(text), None) => Some(now.saturating_add(duration("expires_in", text)?.as_secs())),
        (None, at) => at,
    };
    expiry(now, asked, cfg.max_validity, cfg.allow_no_expiry).map_err(invalid)
}

/// The owner a new key is for, and the org it acts in: `user_id` (admins: anyone in their org)
/// or the caller, in the caller's org (the bootstrap token: the org it names, else the owner's
/// only one). Someone outside the caller's org is not found, whether or not they exist.
async fn owner(ctx: &Ctx<'_>, user_id: Option<&String>) -> Result<(OrgId, UserId), ApiError> {
    let id = match (user_id, &ctx.caller.user) {
        (Some(id), _) => UserId::from(id.as_str()),
        (None, Some(me)) => me.id.clone(),
        (None, None) => {
            return Err(ApiError::Invalid {
                field: "user_id",
                message: "the bootstrap token must name the key's owner".into(),
            });
        }
    };
    let owner = match (&ctx.caller.user, ctx.param("org_id")) {
        (None, None) => ctx.store.user(&id).await,
        _ => ctx.store.member(&ctx.org(None).await?, &id).await,
    }
    .map_err(ApiError::not_found("user"))?;
    if !ctx.caller.may_touch(&owner.org_id, &owner.id) {
        return Err(ApiError::NotFound("user"));
    }
    Ok((owner.org_id, owner.id))
}

/// A new key's record with its secret: the only response that ever carries it.
fn with_secret(created: CreatedKey, status: StatusCode) -> Response<Full<Bytes>> {
    let mut v = created.record.shown(unix_now());
    v["secret"] = serde_json::Value::String(created.secret);
    json(status, &v)
}

pub async fn create(ctx: &Ctx<'_>, body: CreateKey) -> Result<Response<Full<Bytes>>, ApiError> {
    let (org, user) = owner(ctx, body.user_id.as_ref()).await?;
    let new = NewKey {
        org_id: Some(org),
        user_id: user,
        name: body.name.clone(),
        scopes: scopes(ctx, &body.scopes)?,
        project_ids: body
            .project_ids
            .iter()
            .map(|p| ProjectId::from(p.as_str()))
            .collect(),
        expires_at: key_expiry(ctx, &body)?,
    };
    let created = ctx.store.create_key(&ctx.replica.config.keys, new).await?;
    Ok(with_secret(created, StatusCode::CREATED))
}

pub async fn import_legacy(
    ctx: &Ctx<'_>,
    body: ImportLegacy,
) -> Result<Response<Full<Bytes>>, ApiError> {
    ctx.caller.require_admin()?;
    let (org, user) = owner(ctx, body.user_id.as_ref()).await?;
    let new = NewKey {
        org_id: Some(org),
        user_id: user,
        name: body.name,
        scopes: scopes(ctx, &body.scopes)?,
        project_ids: body.project_ids.into_iter().map(ProjectId::from).collect(),
        expires_at: None,
    };
    let record = ctx
        .store
        .import_legacy(&body.legacy_id, &body.secret, new)
        .await?;
    Ok(json(StatusCode::CREATED, &record.shown(unix_now())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBySecret {
    /// The key's secret (current or rotated out).
    secret: String,
}

/// `POST /v1/keys/revoke`, without a token: the secret revokes its own key. The answer names
/// the key and its status, and nothing more of it.
pub async fn revoke_by_secret(
    format: &crate::credential::KeyFormat,
    store: &crate::store::Store,
    body: &RevokeBySecret,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let key = store.revoke_by_secret(format, &body.secret).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "id": key.grant.id, "status": key.grant.status }),
    ))
}

/// A key the caller may see, or not found.
async fn visible_key(ctx: &Ctx<'_>, id: &str) -> Result<KeyRecord, ApiError> {
    let key = ctx
        .store
        .key(&KeyId::from(id))
        .await
        .map_err(ApiError::not_found("key"))?;
    if ctx.caller.may_touch(&key.grant.org_id, &key.grant.user_id) {
        Ok(key)
    } else {
        Err(ApiError::NotFound("key"))
    }
}

pub async fn show(ctx: &Ctx<'_>, id: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    Ok(json(
        StatusCode::OK,
        &visible_key(ctx, id).await?.shown(unix_now()),
    ))
}

pub async fn list(ctx: &Ctx<'_>) -> Result<Response<Full<Bytes>>, ApiError> {
    let org = ctx.org(None).await?;
    let caller = &ctx.caller;
    let user = match (ctx.param("user_id"), &caller.user) {
        (Some(u), Some(me)) if !caller.admin && u != me.id.as_str() => {
            return Err(ApiError::NotFound("user"));
        }
        (Some(u), _) => Some(UserId::from(u)),
        (None, Some(me)) if !caller.admin => Some(me.id.clone()),
        (None, _) => None,
    };
    let status = match ctx.param("status") {
        Some(s) => Some(s.parse::<KeyState>().map_err(|m| ApiError::Invalid {
            field: "status",
            message: m,
        })?),
        None => None,
    };
    let now = unix_now();
    let keys: Vec<serde_json::Value> = ctx
        .store
        .keys(&org, user.as_ref())
        .await?
        .iter()
        .filter(|k| status.is_none_or(|s| k.grant.state(now) == s))
        .map(|k| k.shown(now))
        .collect();
    page(ctx, &keys)
}

pub async fn update(
    ctx: &Ctx<'_>,
    id: &str,
    body: UpdateKey,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let mut key = visible_key(ctx, id).await?;
    // Everything that can be refused is checked before anything is written: the name here, the
    // scopes' syntax here and their ceiling by the first write.
    let scopes = body.scopes.as_deref().map(|n| scopes(ctx, n)).transpose()?;
    if let Some(name) = &body.name {
        crate::store::directory::check_name(name)?;
    }
    if let Some(scopes) = scopes {
        key = ctx.store.set_key_scopes(&key.grant.id, scopes).await?;
    }
    if let Some(projects) = body.project_ids {
        let projects = projects.into_iter().map(ProjectId::from).collect();
        key = ctx.store.set_key_projects(&key.grant.id, projects).await?;
    }
    if let Some(name) = &body.name {
        key = ctx.store.rename_key(&key.grant.id, name).await?;
    }
    Ok(json(StatusCode::OK, &key.shown(unix_now())))
}

pub async fn set_status(
    ctx: &Ctx<'_>,
    id: &str,
    active: bool,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let key = visible_key(ctx, id).await?;
    let status = if active {
        KeyStatus::Active
    } else {
        KeyStatus::Revoked
    };
    let key = ctx.store.set_key_status(&key.grant.id, status).await?;
    Ok(json(StatusCode::OK, &key.shown(unix_now())))
}

pub async fn rotate(
    ctx: &Ctx<'_>,
    id: &str,
    body: RotateKey,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let key = visible_key(ctx, id).await?;
    let grace = match &body.grace_period {
        Some(text) => duration("grace_period", text)?,
        None => std::time::Duration::ZERO,
    };
    let created = ctx
        .store
        .rotate_key(
            &ctx.replica.config.keys,
            &key.grant.id,
            grace,
            ctx.replica.config.validity_of_rotated(),
        )
        .await?;
    Ok(with_secret(created, StatusCode::OK))
}

pub async fn delete(ctx: &Ctx<'_>, id: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    let key = visible_key(ctx, id).await?;
    ctx.store.delete_key(&key.grant.id).await?;
    Ok(no_content())
}
