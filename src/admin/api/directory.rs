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

/// A new person and their membership of the org. Only the platform chooses ids: an org admin
/// gets a generated one, and invites a person who exists (`POST /v1/invitations`), so that
/// creating a user never tells an org whether an id is taken elsewhere.
pub async fn create_user(
    ctx: &Ctx<'_>,
    body: CreateUser,
) -> Result<Response<Full<Bytes>>, ApiError> {
    ctx.caller.require_admin()?;
    if body.id.is_some() && ctx.caller.user.is_some() {
        return Err(ApiError::Forbidden(
            "only the platform chooses user ids: leave `id` out (one is made), or invite a person who has one (POST /v1/invitations)",
        ));
    }
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

/// A user the caller may see (admins: their org's members; members: themselves), or not found:
/// one lookup of the membership in the caller's org, whether or not the person exists elsewhere.
async fn visible_user(ctx: &Ctx<'_>, id: &str) -> Result<User, ApiError> {
    let user = ctx
        .store
        .member(&ctx.org(None).await?, &UserId::from(id))
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
        .update_member(&user.org_id, &user.id, body.role, body.status)
        .await?;
    Ok(json(StatusCode::OK, &user))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    user_id: String,
    /// Or in the query.
    org_id: Option<String>,
    #[serde(default = "member")]
    role: Role,
}

/// The platform adds a person who exists to another org (`POST /v1/memberships`).
pub async fn add_member(ctx: &Ctx<'_>, body: AddMember) -> Result<Response<Full<Bytes>>, ApiError> {
    require_platform(ctx)?;
    let org = ctx.org(body.org_id.as_deref()).await?;
    let user = ctx
        .store
        .add_member(&org, &UserId::from(body.user_id.as_str()), body.role)
        .await?;
    Ok(json(StatusCode::CREATED, &user))
}

fn require_platform(ctx: &Ctx<'_>) -> Result<(), ApiError> {
    match ctx.caller.user {
        None => Ok(()),
        Some(_) => Err(ApiError::Forbidden(
            "only the platform (the bootstrap token) manages people across orgs",
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccount {
    status: UserStatus,
}

/// A person and their orgs (the platform only).
pub async fn show_account(ctx: &Ctx<'_>, id: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    require_platform(ctx)?;
    let account = ctx
        .store
        .account(&UserId::from(id))
        .await
        .map_err(ApiError::not_found("user"))?;
    Ok(json(StatusCode::OK, &account))
}

/// Disables or enables a person in every org at once (the platform only).
pub async fn update_account(
    ctx: &Ctx<'_>,
    id: &str,
    body: UpdateAccount,
) -> Result<Response<Full<Bytes>>, ApiError> {
    require_platform(ctx)?;
    let account = ctx
        .store
        .set_account_status(&UserId::from(id), body.status)
        .await
        .map_err(ApiError::not_found("user"))?;
    Ok(json(StatusCode::OK, &account))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invite {
    user_id: String,
    #[serde(default = "member")]
    role: Role,
    org_id: Option<String>,
}

/// Invites a person to the org by their id (admins). Answered alike whether or not they exist.
pub async fn invite(ctx: &Ctx<'_>, body: Invite) -> Result<Response<Full<Bytes>>, ApiError> {
    ctx.caller.require_admin()?;
    let org = ctx.org(body.org_id.as_deref()).await?;
    let invitation = ctx
        .store
        .invite(&org, &UserId::from(body.user_id.as_str()), body.role)
        .await?;
    Ok(json(StatusCode::CREATED, &invitation))
}

pub async fn list_invitations(ctx: &Ctx<'_>) -> Result<Response<Full<Bytes>>, ApiError> {
    ctx.caller.require_admin()?;
    let invitations = ctx.store.invitations(&ctx.org(None).await?).await?;
    super::page(ctx, &invitations)
}

pub async fn delete_invitation(ctx: &Ctx<'_>, id: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    ctx.caller.require_admin()?;
    let org = ctx.org(None).await?;
    ctx.store
        .delete_invitation(&org, id)
        .await
        .map_err(ApiError::not_found("invitation"))?;
    Ok(super::no_content())
}

/// The caller accepts an invitation of `org` made for them (with a key of any org of theirs),
/// and becomes a member.
pub async fn accept_invitation(
    ctx: &Ctx<'_>,
    org: &str,
    id: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let Some(me) = &ctx.caller.user else {
        return Err(ApiError::Forbidden(
            "a person accepts an invitation, with a key of their own",
        ));
    };
    let user = ctx
        .store
        .accept_invitation(&OrgId::from(org), id, &me.id)
        .await
        .map_err(ApiError::not_found("invitation"))?;
    Ok(json(StatusCode::CREATED, &user))
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
