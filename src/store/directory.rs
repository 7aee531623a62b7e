//! Orgs, users and projects: the management writes and reads on them.
//!
//! Shared by the bootstrap CLI and the HTTP management API, so the rules live here once:
//! ids are slugs, names are non-empty, a user or project belongs to exactly one org, and every
//! change that can alter what a key may do publishes its invalidation in the same transaction.

use serde_json::json;

use super::codec::Fields;
use super::{Change, Invalidation, Store, StoreError, Tag};
use crate::model::{
    Account, Invitation, Org, OrgId, Project, ProjectId, ProjectStatus, Role, User, UserId,
    UserStatus, Visibility, is_valid_id, unix_now,
};

/// How long an invitation can be accepted: a week.
pub const INVITATION_VALIDITY_SECS: u64 = 7 * 24 * 3600;

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
        .ignore();
        let mut listed = redis::cmd("SADD");
        listed.arg(self.name(format_args!("orgs"))).arg(id.as_str());
        let change = Change {
            org: id,
            action: "org.create",
            target: format!("org:{id}"),
            details: json!({ "name": org.name }),
            invalidations: Vec::new(),
        };
        self.commit_ordered(Vec::new(), pipe, vec![listed], change)
            .await?;
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
        let mut person = redis::cmd("HSET");
        person.arg(&account).arg(&[
            ("name", user.name.clone()),
            ("status", UserStatus::Active.to_string()),
            ("created_at", user.created_at.to_string()),
        ]);
        let mut pipe = redis::pipe();
        let joined = self.add_membership_writes(&mut pipe, &user, UserStatus::Active);
        let change = Change {
            org,
            action: "user.create",
            target: format!("user:{id}"),
            details: json!({ "name": user.name, "role": user.role }),
            invalidations: Vec::new(),
        };
        self.commit_ordered(vec![person, joined], pipe, Vec::new(), change)
            .await?;
        Ok(user)
    }

    /// A person's membership when they belong to one org; one of several orgs must be named
    /// (`member`).
    pub async fn user(&self, id: &UserId) -> Result<User, StoreError> {
        let set = self.name(format_args!("account:{id}:orgs"));
        match self.members(set).await?.as_slice() {
            [] => Err(StoreError::NotFound {
                kind: "user",
                id: id.to_string(),
            }),
            [org] => self.member(&OrgId::from(org.as_str()), id).await,
            _ => Err(StoreError::Rejected(format!(
                "user `{id}` is a member of several orgs; name the org"
            ))),
        }
    }

    /// A user's membership of `org`, with their name.
    pub async fn member(&self, org: &OrgId, id: &UserId) -> Result<User, StoreError> {
        let mut member = redis::cmd("HGETALL");
        member.arg(self.name(format_args!("{}:member:{id}", Tag(org))));
        let mut name = redis::cmd("HGET");
        name.arg(self.name(format_args!("account:{id}")))
            .arg("name");
        let answers = self.query_apart(vec![member, name]).await?;
        let mut fields: Fields = redis::from_redis_value(answers[0].clone())?;
        let name: Option<String> = redis::from_redis_value(answers[1].clone())?;
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

    /// Changes a membership's role and/or status; every replica re-reads the person's keys at
    /// once.
    pub async fn update_member(
        &self,
        org: &OrgId,
        id: &UserId,
        role: Option<Role>,
        status: Option<UserStatus>,
    ) -> Result<User, StoreError> {
        let mut user = self.member(org, id).await?;
        user.role = role.unwrap_or(user.role);
        user.status = status.unwrap_or(user.status);
        let mut pipe = redis::pipe();
        pipe.hset_multiple(
            self.name(format_args!("{}:member:{id}", Tag(org))),
            &[
                ("role", user.role.to_string()),
                ("status", user.status.to_string()),
            ],
        )
        .ignore();
        let change = Change {
            org,
            action: "user.update",
            target: format!("user:{id}"),
            details: json!({ "role": role, "status": status }),
            invalidations: vec![Invalidation::User(id.clone())],
        };
        self.commit(pipe, change).await?;
        Ok(user)
    }

    /// A person and the orgs they belong to (the platform's view).
    pub async fn account(&self, id: &UserId) -> Result<Account, StoreError> {
        let (record, orgs) = (
            self.name(format_args!("account:{id}")),
            self.name(format_args!("account:{id}:orgs")),
        );
        let fields = self
            .hash(record)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                kind: "user",
                id: id.to_string(),
            })?;
        let orgs = self.members(orgs).await?;
        let orgs = orgs.iter().map(|o| OrgId::from(o.as_str())).collect();
        Ok(Account::from_fields(id.clone(), &fields, orgs)?)
    }

    /// Disables or re-enables a person everywhere: every key of theirs, in every org, follows
    /// at once on every replica. Audited in each of their orgs.
    pub async fn set_account_status(
        &self,
        id: &UserId,
        status: UserStatus,
    ) -> Result<Account, StoreError> {
        let mut account = self.account(id).await?;
        account.status = status;
        let mut person = redis::cmd("HSET");
        person
            .arg(self.name(format_args!("account:{id}")))
            .arg("status")
            .arg(status.as_str());
        // The account first; then each membership, which the request path reads (a key's
        // lookup stays in its org's hash slot), audited in its org.
        let mut before = vec![person];
        if account.org_ids.is_empty() {
            self.query_apart(std::mem::take(&mut before)).await?;
        }
        for org in &account.org_ids {
            let mut pipe = redis::pipe();
            pipe.hset(
                self.name(format_args!("{}:member:{id}", Tag(org))),
                "account_status",
                status.as_str(),
            )
            .ignore();
            let change = Change {
                org,
                action: "account.update",
                target: format!("user:{id}"),
                details: json!({ "status": status }),
                invalidations: vec![Invalidation::User(id.clone())],
            };
            self.commit_ordered(std::mem::take(&mut before), pipe, Vec::new(), change)
                .await?;
        }
        Ok(account)
    }

    /// Adds a person who exists (in another org) to `org`: the platform's act (the bootstrap
    /// token or the CLI on the store). An org admin invites instead ([`Store::invite`]).
    pub async fn add_member(
        &self,
        org: &OrgId,
        id: &UserId,
        role: Role,
    ) -> Result<User, StoreError> {
        self.org(org).await?;
        let account = self.account(id).await?;
        let membership = self.name(format_args!("{}:member:{id}", Tag(org)));
        self.ensure_absent("member", id.as_str(), &membership)
            .await?;
        let user = User {
            id: id.clone(),
            org_id: org.clone(),
            name: account.name.clone(),
            role,
            status: UserStatus::Active,
            created_at: unix_now(),
        };
        let mut pipe = redis::pipe();
        let joined = self.add_membership_writes(&mut pipe, &user, account.status);
        let change = Change {
            org,
            action: "member.add",
            target: format!("user:{id}"),
            details: json!({ "role": role }),
            invalidations: Vec::new(),
        };
        self.commit_ordered(vec![joined], pipe, Vec::new(), change)
            .await?;
        Ok(user)
    }

    /// Adds the writes that make `user` a member of their org to its transaction (the person's
    /// `account` status is copied into the membership, which the request path reads); returns
    /// the one outside the org's slot, the person's list of orgs.
    fn add_membership_writes(
        &self,
        pipe: &mut redis::Pipeline,
        user: &User,
        account: UserStatus,
    ) -> redis::Cmd {
        let (id, org) = (&user.id, Tag(&user.org_id));
        let mut fields = user.membership_fields();
        fields.push(("account_status", account.to_string()));
        pipe.hset_multiple(self.name(format_args!("{org}:member:{id}")), &fields)
            .ignore()
            .sadd(self.name(format_args!("{org}:members")), id.as_str())
            .ignore();
        let mut joined = redis::cmd("SADD");
        joined
            .arg(self.name(format_args!("account:{id}:orgs")))
            .arg(user.org_id.as_str());
        joined
    }

    /// Invites the person `user` to `org` with `role`; they accept with a key of their own.
    /// Made and answered alike whether or not the person exists: the inviting org learns
    /// nothing of other orgs' people. A member of `org` already is refused (that is `org`'s own).
    pub async fn invite(
        &self,
        org: &OrgId,
        user: &UserId,
        role: Role,
    ) -> Result<Invitation, StoreError> {
        check_id("user", user.as_str())?;
        let membership = self.name(format_args!("{}:member:{user}", Tag(org)));
        self.ensure_absent("member", user.as_str(), &membership)
            .await?;
        let now = unix_now();
        let invitation = Invitation {
            id: new_id("inv"),
            org_id: org.clone(),
            user_id: user.clone(),
            role,
            created_at: now,
            expires_at: now + INVITATION_VALIDITY_SECS,
        };
        let record = self.name(format_args!("{}:invitation:{}", Tag(org), invitation.id));
        let mut pipe = redis::pipe();
        pipe.hset_multiple(
            &record,
            &[
                ("user_id", user.to_string()),
                ("role", role.to_string()),
                ("created_at", now.to_string()),
                ("expires_at", invitation.expires_at.to_string()),
            ],
        )
        .ignore()
        .expire(&record, INVITATION_VALIDITY_SECS as i64)
        .ignore()
        .sadd(
            self.name(format_args!("{}:invitations", Tag(org))),
            &invitation.id,
        )
        .ignore();
        let change = Change {
            org,
            action: "invitation.create",
            target: format!("invitation:{}", invitation.id),
            details: json!({ "user_id": user, "role": role }),
            invalidations: Vec::new(),
        };
        self.commit(pipe, change).await?;
        Ok(invitation)
    }

    /// An org's invitations that have not lapsed, newest first.
    pub async fn invitations(&self, org: &OrgId) -> Result<Vec<Invitation>, StoreError> {
        let set = self.name(format_args!("{}:invitations", Tag(org)));
        let mut out = Vec::new();
        for id in self.members(set).await? {
            let record = self.name(format_args!("{}:invitation:{id}", Tag(org)));
            if let Some(fields) = self.hash(record).await? {
                out.push(Invitation::from_fields(id, org.clone(), &fields)?);
            }
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn invitation(&self, org: &OrgId, id: &str) -> Result<Invitation, StoreError> {
        let record = self.name(format_args!("{}:invitation:{id}", Tag(org)));
        self.record("invitation", id, record, |f| {
            Invitation::from_fields(id.to_owned(), org.clone(), f)
        })
        .await
    }

    /// Withdraws an invitation.
    pub async fn delete_invitation(&self, org: &OrgId, id: &str) -> Result<(), StoreError> {
        let invitation = self.invitation(org, id).await?;
        let mut pipe = redis::pipe();
        self.remove_invitation_writes(&mut pipe, org, id);
        let change = Change {
            org,
            action: "invitation.delete",
            target: format!("invitation:{id}"),
            details: json!({ "user_id": invitation.user_id }),
            invalidations: Vec::new(),
        };
        self.commit(pipe, change).await
    }

    fn remove_invitation_writes(&self, pipe: &mut redis::Pipeline, org: &OrgId, id: &str) {
        pipe.del(self.name(format_args!("{}:invitation:{id}", Tag(org))))
            .ignore()
            .srem(self.name(format_args!("{}:invitations", Tag(org))), id)
            .ignore();
    }

    /// `user` accepts an invitation to `org` made for them, and becomes a member with its role.
    /// An invitation for someone else is not found.
    pub async fn accept_invitation(
        &self,
        org: &OrgId,
        id: &str,
        user: &UserId,
    ) -> Result<User, StoreError> {
        let invitation = self
            .invitation(org, id)
            .await
            .ok()
            .filter(|i| &i.user_id == user && i.expires_at > unix_now())
            .ok_or_else(|| StoreError::NotFound {
                kind: "invitation",
                id: id.to_owned(),
            })?;
        let account = self.account(user).await?;
        let membership = self.name(format_args!("{}:member:{user}", Tag(org)));
        self.ensure_absent("member", user.as_str(), &membership)
            .await?;
        let member = User {
            id: user.clone(),
            org_id: org.clone(),
            name: account.name.clone(),
            role: invitation.role,
            status: UserStatus::Active,
            created_at: unix_now(),
        };
        let mut pipe = redis::pipe();
        let joined = self.add_membership_writes(&mut pipe, &member, account.status);
        self.remove_invitation_writes(&mut pipe, org, id);
        let change = Change {
            org,
            action: "invitation.accept",
            target: format!("invitation:{id}"),
            details: json!({ "user_id": user, "role": invitation.role }),
            invalidations: Vec::new(),
        };
        self.commit_ordered(vec![joined], pipe, Vec::new(), change)
            .await?;
        Ok(member)
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
