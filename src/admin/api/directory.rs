//! `/v1/orgs`, `/v1/users`, `/v1/projects` (and their members) and `/v1/audit`.
//!
//! On top of the store's rules: orgs are created by the bootstrap token only; users, projects,
//! members and the audit log are managed by org admins (members may read themselves and the
//! projects they can use); an admin cannot demote or disable themselves (another admin, or the
//! bootstrap token, can), so an org is never locked out by accident.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Deserialize;

use super::{ApiError, Ctx, json};
use crate::model::{
    OrgId, Project, ProjectId, ProjectStatus, Role, User, UserId, UserStatus, Visibility,
};

/// Audit entries per page: default and most.
const AUDIT_PAGE_DEFAULT: usize = 50;
const AUDIT_PAGE_MAX: usize = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    id: String,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Default: generated.
    id: Option<String>,
    name: String,
    #[serde(default = "member")]
    role: Role,
    /// The bootstrap token names the org here (or in the query).
    org_id: Option<String>,
}

fn member() -> Role {
    Role::Member
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    role: Option<Role>,
    status: Option<UserStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    id: String,
    name: Option<String>,
    #[serde(default = "private")]
    visibility: Visibility,
    org_id: Option<String>,
}

fn private() -> Visibility {
    Visibility::Private
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    visibility: Option<Visibility>,
}

pub async fn create_org(ctx: &Ctx<'_>, body: CreateOrg) -> Result<Response<Full<Bytes>>, ApiError> {
    if ctx.caller.user.is_some() {
        return Err(ApiError::Forbidden("only the bootstrap token creates orgs"));
    }
    let name = body.name.as_deref().unwrap_or(&body.id);
    let org = ctx
        .store
        .create_org(&OrgId::from(body.id.as_str()), name)
        .await?;
    Ok(json(StatusCode::CREATED, &org))
}

pub async fn list_orgs(ctx: &Ctx<'_>) -> Result<Response<Full<Bytes>>, ApiError> {
    let orgs = match &ctx.caller.user {
        None => ctx.store.orgs().await?,
        Some(me) => vec![ctx.store.org(&me.org_id).await?],
    };
    Ok(json(StatusCode::OK, &serde_json::json!({ "items": orgs })))
}

pub async fn create_user(
    ctx: &Ctx<'_>,
    body: CreateUser,
) -> Result<Response<Full<Bytes>>, ApiError> {
    ctx.caller.require_admin()?;
    let org = ctx.org(body.org_id.as_deref()).await?;
    let user = ctx
        .store
        .create_user(&org, body.id.map(UserId::from), &body.name, body.role)
        .await?;
    Ok(json(StatusCode::CREATED, &user))
}

pub async fn list_users(ctx: &Ctx<'_>) -> Result<Response<Full<Bytes>>, ApiError> {
    ctx.caller.require_admin()?;
    let users = ctx.store.users(&ctx.org(None).await?).await?;
    super::page(ctx, &users)
}

/// A user the caller may see (admins: their org's; members: themselves), or not found.
async fn visible_user(ctx: &Ctx<'_>, id: &str) -> Result<User, ApiError> {
    let user = ctx
        .store
        .user(&UserId::from(id))
        .await
        .map_err(ApiError::not_found("user"))?;
    if ctx.caller.may_touch(&user.org_id, &user.id) {
        Ok(user)
    } else {
        Err(ApiError::NotFound("user"))
    }
}

pub async fn show_user(ctx: &Ctx<'_>, id: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    Ok(json(StatusCode::OK, &visible_user(ctx, id).await?))
}

pub async fn update_user(
    ctx: &Ctx<'_>,
    id: &str,
    body: UpdateUser,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let user = visible_user(ctx, id).await?;
    ctx.caller.require_admin()?;
    let demotes =
        body.role.is_some_and(|r| r != Role::Admin) || body.status == Some(UserStatus::Disabled);
    if ctx.caller.user.as_ref().is_some_and(|me| me.id == user.id) && demotes {
        return Err(ApiError::Forbidden(
            "admins cannot demote or disable themselves; ask another admin",
        ));
    }
    let user = ctx
        .store
        .update_user(&user.id, body.role, body.status)
        .await?;
    Ok(json(StatusCode::OK, &user))
}

pub async fn create_project(
    ctx: &Ctx<'_>,
    body: CreateProject,
) -> Result<Response<Full<Bytes>>, ApiError> {
    ctx.caller.require_admin()?;
    let org = ctx.org(body.org_id.as_deref()).await?;
    let name = body.name.as_deref().unwrap_or(&body.id);
    let project = ctx
        .store
        .create_project(
            &org,
            &ProjectId::from(body.id.as_str()),
            name,
            body.visibility,
        )
        .await?;
    Ok(json(StatusCode::CREATED, &project))
}

/// Whether the caller may see `project`: admins all of their org's; members the ones they can
/// use (member of, or public).
fn sees_project(ctx: &Ctx<'_>, project: &Project) -> bool {
    match &ctx.caller.user {
        _ if !ctx.caller.sees_org(&project.org_id) => false,
        Some(me) if !ctx.caller.admin => {
            project.visibility == Visibility::Public || project.members.contains(&me.id)
        }
        _ => true,
    }
}

pub async fn list_projects(ctx: &Ctx<'_>) -> Result<Response<Full<Bytes>>, ApiError> {
    let projects: Vec<Project> = ctx
        .store
        .projects(&ctx.org(None).await?)
        .await?
        .into_iter()
        .filter(|p| sees_project(ctx, p))
        .collect();
    super::page(ctx, &projects)
}

async fn visible_project(ctx: &Ctx<'_>, id: &str) -> Result<Project, ApiError> {
    let org = ctx.org(None).await?;
    let project = ctx
        .store
        .existing_project(&org, &ProjectId::from(id))
        .await
        .map_err(ApiError::not_found("project"))?;
    if sees_project(ctx, &project) {
        Ok(project)
    } else {
        Err(ApiError::NotFound("project"))
    }
}

pub async fn show_project(ctx: &Ctx<'_>, id: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    Ok(json(StatusCode::OK, &visible_project(ctx, id).await?))
}

pub async fn update_project(
    ctx: &Ctx<'_>,
    id: &str,
    body: UpdateProject,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let mut project = visible_project(ctx, id).await?;
    ctx.caller.require_admin()?;
    if let Some(visibility) = body.visibility {
        project = ctx
            .store
            .set_project_visibility(&project.org_id, &project.id, visibility)
            .await?;
    }
    Ok(json(StatusCode::OK, &project))
}

/// `POST /v1/projects/{id}/archive` and `/restore` (admins).
pub async fn set_project_status(
    ctx: &Ctx<'_>,
    id: &str,
    status: ProjectStatus,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let project = visible_project(ctx, id).await?;
    ctx.caller.require_admin()?;
    let project = ctx
        .store
        .set_project_status(&project.org_id, &project.id, status)
        .await?;
    Ok(json(StatusCode::OK, &project))
}

/// `DELETE /v1/projects/{id}` (admins; archived projects only).
pub async fn delete_project(ctx: &Ctx<'_>, id: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    let project = visible_project(ctx, id).await?;
    ctx.caller.require_admin()?;
    ctx.store
        .delete_project(&project.org_id, &project.id)
        .await?;
    Ok(super::no_content())
}

pub async fn set_member(
    ctx: &Ctx<'_>,
    id: &str,
    user: &str,
    member: bool,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let project = visible_project(ctx, id).await?;
    ctx.caller.require_admin()?;
    let user = visible_user(ctx, user).await?;
    let project = ctx
        .store
        .set_member(&project.org_id, &project.id, &user.id, member)
        .await?;
    Ok(json(StatusCode::OK, &project))
}

pub async fn audit(ctx: &Ctx<'_>) -> Result<Response<Full<Bytes>>, ApiError> {
    ctx.caller.require_admin()?;
    let org = ctx.org(None).await?;
    let limit = ctx
        .number("limit", AUDIT_PAGE_DEFAULT)?
        .clamp(1, AUDIT_PAGE_MAX);
    let before = ctx.param("before");
    let entries = ctx
        .store
        .audit(&org, before.as_deref(), limit)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Rejected(message) => ApiError::Invalid {
                field: "before",
                message,
            },
            other => other.into(),
        })?;
    let next = (entries.len() == limit).then(|| entries.last().map(|e| e.id.clone()));
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "items": entries, "next_before": next.flatten() }),
    ))
}
