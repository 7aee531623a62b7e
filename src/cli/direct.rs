//! The management commands on the store directly (`--config FILE`): for the first set-up, before
//! any key exists, and for operators who can reach Redis.
//!
//! Owns: calling the same store functions the management API calls (no second copy of the
//! rules), audited as `cli:<login>`, and answering in the API's JSON shapes so that printing is
//! one piece of code. The operator is trusted as the platform is: any org, any user.

use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};

use super::remote::secret_from_stdin;
use super::{
    EXIT_REFUSED, EXIT_UNAVAILABLE, Failure, KeysCommand, Manage, OrgsCommand, ProjectsCommand,
    UsersCommand,
};
use crate::config::Config;
use crate::model::{
    KeyId, KeyState, KeyStatus, OrgId, ProjectId, ProjectStatus, Scope, UserId, unix_now,
};
use crate::store::audit::Actor;
use crate::store::keys::{NewKey, expiry};
use crate::store::{Store, StoreError};

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure {
            code: if e.is_unavailable() {
                EXIT_UNAVAILABLE
            } else {
                EXIT_REFUSED
            },
            message: e.to_string(),
        }
    }
}

/// Runs `command` on the store `config` names; the answer in the API's shape.
pub async fn run(config: &Path, org: Option<&str>, command: Manage) -> Result<Value, Failure> {
    let config = Config::load(config).map_err(|e| Failure::usage(e.to_string()))?;
    // Audited as the operator's login name, as far as the environment tells it.
    let login = std::env::var("USER").unwrap_or_default();
    let store = Store::open(&config.redis)?.acting_as(Actor::named(format!("cli:{login}")));
    store.check_schema().await?;
    let org = || {
        org.map(OrgId::from)
            .ok_or_else(|| Failure::usage("on the store directly, name the org with --org ORG"))
    };
    match command {
        Manage::Orgs(OrgsCommand::Create { id, name }) => {
            let name = name.as_deref().unwrap_or(&id);
            value(&store.create_org(&OrgId::from(id.as_str()), name).await?)
        }
        Manage::Orgs(OrgsCommand::List) => items(&store.orgs().await?),
        Manage::Users(cmd) => users(&store, org, cmd).await,
        Manage::Projects(cmd) => projects(&store, org()?, cmd).await,
        Manage::Keys(cmd) => keys(&config, &store, org, cmd).await,
    }
}

/// `keygate migrate`: moves the store `config` names to the layout this keygate reads (with
/// `dry_run`, says what that would do); the report.
pub async fn migrate(config: &Path, dry_run: bool) -> Result<Value, Failure> {
    let config = Config::load(config).map_err(|e| Failure::usage(e.to_string()))?;
    let store = Store::open(&config.redis)?;
    value(&store.migrate(dry_run).await?)
}

fn value(record: &impl Serialize) -> Result<Value, Failure> {
    Ok(serde_json::to_value(record).expect("records serialize"))
}

/// A list in the API's page shape.
fn items<T: Serialize>(all: &[T]) -> Result<Value, Failure> {
    Ok(json!({ "items": all, "next_offset": null, "total": all.len() }))
}

/// A role, status or visibility named on the command line.
fn parsed<T: std::str::FromStr<Err = String>>(text: &str) -> Result<T, Failure> {
    text.parse().map_err(Failure::refused)
}

async fn users(
    store: &Store,
    org: impl Fn() -> Result<OrgId, Failure>,
    cmd: UsersCommand,
) -> Result<Value, Failure> {
    match cmd {
        UsersCommand::Create { name, id, role } => {
            let user = store
                .create_user(&org()?, id.map(UserId::from), &name, parsed(&role)?)
                .await?;
            value(&user)
        }
        UsersCommand::List => items(&store.users(&org()?).await?),
        UsersCommand::Show { id } => value(&membership(store, &org, &UserId::from(id)).await?),
        UsersCommand::AddMember { id, role } => {
            let (org, id) = (org()?, UserId::from(id));
            value(&store.add_member(&org, &id, parsed(&role)?).await?)
        }
        UsersCommand::Invite { id, role } => {
            let (org, id) = (org()?, UserId::from(id));
            value(&store.invite(&org, &id, parsed(&role)?).await?)
        }
        UsersCommand::Accept { .. } => Err(Failure::usage(
            "a person accepts an invitation over the API, with their own key (KEYGATE_API_KEY)",
        )),
        UsersCommand::SetAccount { id, status } => {
            let id = UserId::from(id);
            value(&store.set_account_status(&id, parsed(&status)?).await?)
        }
        UsersCommand::Set { id, role, status } => {
            let role = role.as_deref().map(parsed).transpose()?;
            let status = status.as_deref().map(parsed).transpose()?;
            let user = membership(store, &org, &UserId::from(id)).await?;
            value(
                &store
                    .update_member(&user.org_id, &user.id, role, status)
                    .await?,
            )
        }
    }
}

async fn projects(store: &Store, org: OrgId, cmd: ProjectsCommand) -> Result<Value, Failure> {
    use ProjectsCommand as P;
    let project = match cmd {
        P::Create {
            id,
            name,
            visibility,
        } => {
            let name = name.as_deref().unwrap_or(&id);
            let id = ProjectId::from(id.as_str());
            store
                .create_project(&org, &id, name, parsed(&visibility)?)
                .await?
        }
        P::List => return items(&store.projects(&org).await?),
        P::Show { id } => store.existing_project(&org, &ProjectId::from(id)).await?,
        P::Set { id, visibility } => {
            let id = ProjectId::from(id);
            store
                .set_project_visibility(&org, &id, parsed(&visibility)?)
                .await?
        }
        P::AddMember { id, user } => {
            let (id, user) = (ProjectId::from(id), UserId::from(user));
            store.set_member(&org, &id, &user, true).await?
        }
        P::RemoveMember { id, user } => {
            let (id, user) = (ProjectId::from(id), UserId::from(user));
            store.set_member(&org, &id, &user, false).await?
        }
        P::Archive { id } => {
            let id = ProjectId::from(id);
            store
                .set_project_status(&org, &id, ProjectStatus::Archived)
                .await?
        }
        P::Restore { id } => {
            let id = ProjectId::from(id);
            store
                .set_project_status(&org, &id, ProjectStatus::Active)
                .await?
        }
        P::Delete { id } => {
            store.delete_project(&org, &ProjectId::from(id)).await?;
            return Ok(Value::Null);
        }
    };
    value(&project)
}

/// Scope names or presets → scopes.
fn scopes(config: &Config, names: &[String]) -> Result<Vec<Scope>, Failure> {
    config.scopes(names).map_err(Failure::refused)
}

fn write_secrets(path: &Path, secrets: &[String]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    let mut w = std::io::BufWriter::new(file);
    for s in secrets {
        writeln!(w, "{s}")?;
    }
    w.flush()
}

/// A new key's record with its secret, as the API answers it.
fn with_secret(record: &impl Serialize, secret: String) -> Result<Value, Failure> {
    let mut v = value(record)?;
    v["secret"] = Value::String(secret);
    Ok(v)
}

/// The owner a key is created for: on the store, it must be named.
/// A person's membership of the org `--org` names, or without it, of their only org.
async fn membership(
    store: &Store,
    org: &impl Fn() -> Result<OrgId, Failure>,
    id: &UserId,
) -> Result<crate::model::User, Failure> {
    Ok(match given(org) {
        Some(org) => store.member(&org, id).await?,
        None => store.user(id).await?,
    })
}

/// The org `--org` names, if it does (a key's owner in one org needs none).
fn given(org: &impl Fn() -> Result<OrgId, Failure>) -> Option<OrgId> {
    org().ok()
}

fn owner(user: Option<String>) -> Result<UserId, Failure> {
    user.map(UserId::from)
        .ok_or_else(|| Failure::usage("on the store directly, name the key's owner with --user"))
}

async fn keys(
    config: &Config,
    store: &Store,
    org: impl Fn() -> Result<OrgId, Failure>,
    cmd: KeysCommand,
) -> Result<Value, Failure> {
    use KeysCommand as K;
    let now = unix_now();
    let record = match cmd {
        K::Create {
            name,
            scopes: names,
            expires_in,
            projects,
            user,
        } => {
            let asked = match expires_in {
                Some(text) => Some(now.saturating_add(duration(&text)?.as_secs())),
                None => None,
            };
            let new = NewKey {
                org_id: given(&org),
                user_id: owner(user)?,
                name,
                scopes: scopes(config, &names)?,
                project_ids: projects.into_iter().map(ProjectId::from).collect(),
                expires_at: expiry(now, asked, config.max_validity, config.allow_no_expiry)
                    .map_err(Failure::refused)?,
            };
            let created = store.create_key(&config.keys, new).await?;
            return with_secret(&created.record.shown(now), created.secret);
        }
        K::CreateMany {
            user,
            count,
            scopes: names,
            expires_in,
            out,
        } => {
            let asked = now.saturating_add(expires_in.as_secs());
            let new = NewKey {
                org_id: given(&org),
                user_id: UserId::from(user),
                name: "bulk".into(),
                scopes: scopes(config, &names)?,
                project_ids: Vec::new(),
                expires_at: expiry(
                    now,
                    Some(asked),
                    config.max_validity,
                    config.allow_no_expiry,
                )
                .map_err(Failure::refused)?,
            };
            let secrets = store.create_keys(&config.keys, new, count).await?;
            write_secrets(&out, &secrets)
                .map_err(|e| Failure::refused(format!("cannot write {}: {e}", out.display())))?;
            return Ok(json!({ "created": count, "secrets_file": out }));
        }
        K::ImportLegacy {
            user,
            name,
            legacy_id,
            scopes: names,
        } => {
            let secret = secret_from_stdin()?;
            let new = NewKey {
                org_id: given(&org),
                user_id: UserId::from(user),
                name,
                scopes: scopes(config, &names)?,
                project_ids: Vec::new(),
                expires_at: None,
            };
            store.import_legacy(&legacy_id, &secret, new).await?
        }
        K::List {
            user,
            status,
            limit,
            offset,
        } => {
            let status: Option<KeyState> = status.as_deref().map(parsed).transpose()?;
            let keys = store.keys(&org()?, user.map(UserId::from).as_ref()).await?;
            let matching: Vec<_> = keys
                .iter()
                .filter(|k| status.is_none_or(|s| k.grant.state(now) == s))
                .skip(offset.unwrap_or(0))
                .take(limit.unwrap_or(usize::MAX))
                .map(|k| k.shown(now))
                .collect();
            return items(&matching);
        }
        K::Show { id } => store.key(&KeyId::from(id)).await?,
        K::Rename { id, name } => store.rename_key(&KeyId::from(id), &name).await?,
        K::SetScopes { id, scopes: names } => {
            let scopes = scopes(config, &names)?;
            store.set_key_scopes(&KeyId::from(id), scopes).await?
        }
        K::SetProjects { id, projects, .. } => {
            let projects = projects.into_iter().map(ProjectId::from).collect();
            store.set_key_projects(&KeyId::from(id), projects).await?
        }
        K::Revoke { id } if super::is_secret(&id) => {
            store.revoke_by_secret(&config.keys, &id).await?
        }
        K::Revoke { id } => {
            store
                .set_key_status(&KeyId::from(id), KeyStatus::Revoked)
                .await?
        }
        K::Activate { id } => {
            store
                .set_key_status(&KeyId::from(id), KeyStatus::Active)
                .await?
        }
        K::Rotate { id, grace } => {
            let grace = match grace {
                Some(text) => duration(&text)?,
                None => std::time::Duration::ZERO,
            };
            let created = store
                .rotate_key(
                    &config.keys,
                    &KeyId::from(id),
                    grace,
                    config.validity_of_rotated(),
                )
                .await?;
            return with_secret(&created.record.shown(now), created.secret);
        }
        K::Delete { id } => {
            store.delete_key(&KeyId::from(id)).await?;
            return Ok(Value::Null);
        }
    };
    Ok(record.shown(now))
}

fn duration(text: &str) -> Result<std::time::Duration, Failure> {
    humantime::parse_duration(text).map_err(|_| {
        Failure::refused(format!(
            "`{text}` is not a duration like \"30d\" or \"12h\""
        ))
    })
}
