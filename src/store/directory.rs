//! Orgs, users and projects: the management writes and reads on them.
//!
//! Shared by the bootstrap CLI and the HTTP management API, so the rules live here once:
//! ids are slugs, names are non-empty, a user or project belongs to exactly one org, and every
//! change that can alter what a key may do publishes its invalidation in the same transaction.

use serde_json::json;

use super::codec::Fields;
use super::{Change, Invalidation, Store, StoreError, Tag};
use crate::model::{
    Org, OrgId, Project, ProjectId, ProjectStatus, Role, User, UserId, UserStatus, Visibility,
    is_valid_id, unix_now,
};

fn check_id(kind: &str, id: &str) -> Result<(), StoreError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(StoreError::Rejected(format!(
            "{kind} id `{id}` must be 1-64 letters, digits, '_' or '-', starting with a letter or digit"
        )))
    }
}

/// Names (of orgs, users, projects, keys) are 1-200 characters and not blank.
pub(crate) fn check_name(name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() || name.len() > 200 {
        Err(StoreError::Rejected("name must be 1-200 characters".into()))
    } else {
        Ok(())
    }
}

/// A fresh random id with a readable prefix (`u_…` for users, `key_…` for keys).
pub(crate) fn new_id(prefix: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let tail: String = (0..16)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}_{tail}")
}

impl Store {
    pub async fn create_org(&self, id: &OrgId, name: &str) -> Result<Org, StoreError> {
        check_id("org", id.as_str())?;
        check_name(name)?;
        let key = self.name(format_args!("{}:org", Tag(id)));
        self.ensure_absent("org", id.as_str(), &key).await?;
        let org = Org {
            id: id.clone(),
            name: name.to_owned(),
            created_at: unix_now(),
        };
        let mut pipe = redis::pipe();
        pipe.hset_multiple(
            &key,
            &[
                ("name", org.name.clone()),
                ("created_at", org.created_at.to_string()),
            ],
        )
        .ignore()
        .sadd(self.name(format_args!("orgs")), id.as_str())
        .ignore();
        let change = Change {
            org: id,
            action: "org.create",
            target: format!("org:{id}"),
            details: json!({ "name": org.name }),
            invalidations: Vec::new(),
        };
        self.commit(pipe, change).await?;
        Ok(org)
    }

    pub async fn org(&self, id: &OrgId) -> Result<Org, StoreError> {
        let key = self.name(format_args!("{}:org", Tag(id)));
        self.record("org", id.as_str(), key, |f| Org::from_fields(id.clone(), f))
            .await
    }

    pub async fn orgs(&self) -> Result<Vec<Org>, StoreError> {
        let mut out = Vec::new();
        let set = self.name(format_args!("orgs"));
        for id in self.members(set).await? {
            out.push(self.org(&OrgId::from(id)).await?);
        }
        Ok(out)
    }

    /// Creates a user: a person (an account) and their membership of `org`; `id` is generated
    /// when not given.
    pub async fn create_user(
        &self,
        org: &OrgId,
        id: Option<UserId>,
        name: &str,
        role: Role,
    ) -> Result<User, StoreError> {
        self.org(org).await?;
        check_name(name)?;
        let id = id.unwrap_or_else(|| UserId::from(new_id("u")));
        check_id("user", id.as_str())?;
        let account = self.name(format_args!("account:{id}"));
        self.ensure_absent("user", id.as_str(), &account).await?;
        let user = User {
            id: id.clone(),
            org_id: org.clone(),
            name: name.to_owned(),
            role,
            status: UserStatus::Active,
            created_at: unix_now(),
        };
        let mut pipe = redis::pipe();
        pipe.hset_multiple(
            &account,
            &[
                ("name", user.name.clone()),
                ("status", UserStatus::Active.to_string()),
                ("created_at", user.created_at.to_string()),
            ],
        )
        .ignore()
        .sadd(self.name(format_args!("account:{id}:orgs")), org.as_str())
        .ignore()
        .hset_multiple(
            self.name(format_args!("{}:member:{id}", Tag(org))),
            &user.membership_fields(),
        )
        .ignore()
        .sadd(self.name(format_args!("{}:members", Tag(org))), id.as_str())
        .ignore();
        let change = Change {
            org,
            action: "user.create",
            target: format!("user:{id}"),
            details: json!({ "name": user.name, "role": user.role }),
            invalidations: Vec::new(),
        };
        self.commit(pipe, change).await?;
        Ok(user)
    }

    /// A user: their membership of their org, with their name.
    pub async fn user(&self, id: &UserId) -> Result<User, StoreError> {
        let set = self.name(format_args!("account:{id}:orgs"));
        let orgs = self.members(set).await?;
        let org = orgs.first().ok_or_else(|| StoreError::NotFound {
            kind: "user",
            id: id.to_string(),
        })?;
        self.member(&OrgId::from(org.as_str()), id).await
    }

    /// A user's membership of `org`, with their name.
    pub async fn member(&self, org: &OrgId, id: &UserId) -> Result<User, StoreError> {
        let mut c = self.conn.clone();
        let member = self.name(format_args!("{}:member:{id}", Tag(org)));
        let account = self.name(format_args!("account:{id}"));
        let (mut fields, name): (Fields, Option<String>) = self
            .bounded(async {
                Ok(redis::pipe()
                    .hgetall(member)
                    .hget(account, "name")
                    .query_async(&mut c)
                    .await?)
            })
            .await?;
        if fields.is_empty() {
            return Err(StoreError::NotFound {
                kind: "user",
                id: id.to_string(),
            });
        }
        fields.extend(name.map(|n| ("name".to_owned(), n)));
        Ok(User::from_fields(id.clone(), &fields)?)
    }

    pub async fn users(&self, org: &OrgId) -> Result<Vec<User>, StoreError> {
        let mut out = Vec::new();
        let set = self.name(format_args!("{}:members", Tag(org)));
        for id in self.members(set).await? {
            out.push(self.member(org, &UserId::from(id)).await?);
        }
        Ok(out)
    }

    /// Changes a user's role and/or status; every replica re-reads their keys at once.
    pub async fn update_user(
        &self,
        id: &UserId,
        role: Option<Role>,
        status: Option<UserStatus>,
    ) -> Result<User, StoreError> {
        let mut user = self.user(id).await?;
        user.role = role.unwrap_or(user.role);
        user.status = status.unwrap_or(user.status);
        let mut pipe = redis::pipe();
        pipe.hset_multiple(
            self.name(format_args!("{}:member:{id}", Tag(&user.org_id))),
            &[
                ("role", user.role.to_string()),
                ("status", user.status.to_string()),
            ],
        )
        .ignore();
        let change = Change {
            org: &user.org_id,
            action: "user.update",
            target: format!("user:{id}"),
            details: json!({ "role": role, "status": status }),
            invalidations: vec![Invalidation::User(id.clone())],
        };
        self.commit(pipe, change).await?;
        Ok(user)
    }

    pub async fn create_project(
        &self,
        org: &OrgId,
        id: &ProjectId,
        name: &str,
        visibility: Visibility,
    ) -> Result<Project, StoreError> {
        self.org(org).await?;
        check_id("project", id.as_str())?;
        check_name(name)?;
        let key = self.name(format_args!("{}:project:{id}", Tag(org)));
        self.ensure_absent("project", id.as_str(), &key).await?;
        let project = Project {
            id: id.clone(),
            org_id: org.clone(),
            name: name.to_owned(),
            visibility,
            members: Vec::new(),
            status: ProjectStatus::Active,
            created_at: unix_now(),
        };
        let fields = [
            ("org_id", org.to_string()),
            ("name", project.name.clone()),
            ("visibility", visibility.to_string()),
            ("status", project.status.to_string()),
            ("created_at", project.created_at.to_string()),
        ];
        let mut pipe = redis::pipe();
        pipe.hset_multiple(&key, &fields)
            .ignore()
            .sadd(
                self.name(format_args!("{}:projects", Tag(org))),
                id.as_str(),
            )
            .ignore();
        let change = Change {
            org,
            action: "project.create",
            target: format!("project:{id}"),
            details: json!({ "name": project.name, "visibility": visibility }),
            // A negative cache entry for this project may exist on some replica.
            invalidations: vec![Invalidation::Project(org.clone(), id.clone())],
        };
        self.commit(pipe, change).await?;
        Ok(project)
    }

    /// A project that must exist.
    pub async fn existing_project(
        &self,
        org: &OrgId,
        id: &ProjectId,
    ) -> Result<Project, StoreError> {
        self.project(org, id)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                kind: "project",
                id: id.to_string(),
            })
    }

    pub async fn projects(&self, org: &OrgId) -> Result<Vec<Project>, StoreError> {
        let mut out = Vec::new();
        let set = self.name(format_args!("{}:projects", Tag(org)));
        for id in self.members(set).await? {
            out.push(self.existing_project(org, &ProjectId::from(id)).await?);
        }
        Ok(out)
    }

    pub async fn set_project_visibility(
        &self,
        org: &OrgId,
        id: &ProjectId,
        visibility: Visibility,
    ) -> Result<Project, StoreError> {
        let mut project = self.existing_project(org, id).await?;
        project.visibility = visibility;
        let mut pipe = redis::pipe();
        pipe.hset(
            self.name(format_args!("{}:project:{id}", Tag(org))),
            "visibility",
            visibility.as_str(),
        )
        .ignore();
        let change = Change {
            org,
            action: "project.update",
            target: format!("project:{id}"),
            details: json!({ "visibility": visibility }),
            invalidations: vec![Invalidation::Project(org.clone(), id.clone())],
        };
        self.commit(pipe, change).await?;
        Ok(project)
    }

    /// Archives or restores a project; every replica refuses an archived project's requests
    /// once the invalidation reaches it.
    pub async fn set_project_status(
        &self,
        org: &OrgId,
        id: &ProjectId,
        status: ProjectStatus,
    ) -> Result<Project, StoreError> {
        let mut project = self.existing_project(org, id).await?;
        project.status = status;
        let mut pipe = redis::pipe();
        pipe.hset(
            self.name(format_args!("{}:project:{id}", Tag(org))),
            "status",
            status.as_str(),
        )
        .ignore();
        let change = Change {
            org,
            action: match status {
                ProjectStatus::Archived => "project.archive",
                ProjectStatus::Active => "project.restore",
            },
            target: format!("project:{id}"),
            details: json!({ "status": status }),
            invalidations: vec![Invalidation::Project(org.clone(), id.clone())],
        };
        self.commit(pipe, change).await?;
        Ok(project)
    }

    /// Deletes an archived project and its members. Keys restricted to it stay restricted to
    /// it, and so are refused there: deleting a project never widens a key.
    pub async fn delete_project(&self, org: &OrgId, id: &ProjectId) -> Result<(), StoreError> {
        let project = self.existing_project(org, id).await?;
        if project.status != ProjectStatus::Archived {
            return Err(StoreError::ProjectNotArchived);
        }
        let mut pipe = redis::pipe();
        pipe.del(self.name(format_args!("{}:project:{id}", Tag(org))))
            .ignore()
            .del(self.name(format_args!("{}:project:{id}:members", Tag(org))))
            .ignore()
            .srem(
                self.name(format_args!("{}:projects", Tag(org))),
                id.as_str(),
            )
            .ignore();
        let change = Change {
            org,
            action: "project.delete",
            target: format!("project:{id}"),
            details: json!({ "name": project.name }),
            invalidations: vec![Invalidation::Project(org.clone(), id.clone())],
        };
        self.commit(pipe, change).await
    }

    /// Adds (`member = true`) or removes a user from a project's members.
    pub async fn set_member(
        &self,
        org: &OrgId,
        id: &ProjectId,
        user: &UserId,
        member: bool,
    ) -> Result<Project, StoreError> {
        self.existing_project(org, id).await?;
        self.member(org, user).await?;
        let set = self.name(format_args!("{}:project:{id}:members", Tag(org)));
        let mut pipe = redis::pipe();
        if member {
            pipe.sadd(set, user.as_str()).ignore();
        } else {
            pipe.srem(set, user.as_str()).ignore();
        }
        let change = Change {
            org,
            action: if member {
                "project.member.add"
            } else {
                "project.member.remove"
            },
            target: format!("project:{id}"),
            details: json!({ "user_id": user }),
            invalidations: vec![Invalidation::Project(org.clone(), id.clone())],
        };
        self.commit(pipe, change).await?;
        self.existing_project(org, id).await
    }
}
