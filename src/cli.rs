//! The bootstrap CLI for operators: `keygate admin …` works on the store directly, through the
//! same store functions the HTTP management API uses (no second copy of the rules).
//!
//! Output: tables for people; `--json` for scripts. `key create` prints the secret exactly once.
//! Exit codes: 0 ok, 65 the request was refused (not found, exists, invalid), 69 Redis unreachable.

use std::io::Read;

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::config::Config;
use crate::model::Scope;
use crate::model::{
    KeyId, KeyStatus, OrgId, ProjectId, Role, UserId, UserStatus, Visibility, unix_now,
};
use crate::store::audit::Actor;
use crate::store::keys::NewKey;
use crate::store::{Store, StoreError};

/// Refused input (EX_DATAERR).
pub const EXIT_REFUSED: u8 = 65;
/// Redis unreachable (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Organisations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Users of an organisation.
    #[command(subcommand)]
    User(UserCommand),
    /// Projects and their members.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// API keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
    },
    List,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    Create {
        #[arg(long)]
        org: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "member")]
        role: Role,
        /// Chosen id (default: generated).
        #[arg(long)]
        id: Option<String>,
    },
    List {
        #[arg(long)]
        org: String,
    },
    /// Change role and/or status; takes effect on every replica at once.
    Set {
        id: String,
        #[arg(long)]
        role: Option<Role>,
        #[arg(long)]
        status: Option<UserStatus>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    Create {
        #[arg(long)]
        org: String,
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "private")]
        visibility: Visibility,
    },
    List {
        #[arg(long)]
        org: String,
    },
    Set {
        #[arg(long)]
        org: String,
        id: String,
        #[arg(long)]
        visibility: Visibility,
    },
    AddMember {
        #[arg(long)]
        org: String,
        id: String,
        user: String,
    },
    RemoveMember {
        #[arg(long)]
        org: String,
        id: String,
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key; its secret is printed once.
    Create {
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: String,
        /// Scopes or presets, comma-separated (e.g. `inference` or `predict,models:read`).
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Restrict the key to these projects (repeatable).
        #[arg(long = "project")]
        projects: Vec<String>,
        /// Validity, e.g. `30d`, `12h` (at least 1m).
        #[arg(long, default_value = "90d", conflicts_with = "no_expiry")]
        expires_in: humantime::Duration,
        /// Create a key that never expires.
        #[arg(long)]
        no_expiry: bool,
    },
    /// Create many keys at once (benchmarks, migrations); secrets go to FILE, one per line.
    CreateMany {
        #[arg(long)]
        user: String,
        #[arg(long)]
        count: usize,
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        #[arg(long, default_value = "90d")]
        expires_in: humantime::Duration,
        /// Where to write the secrets (mode 0600).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Import a legacy key id + secret pair; the secret is read from standard input.
    ImportLegacy {
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: String,
        /// The legacy key id clients send in `apikey`.
        #[arg(long)]
        legacy_id: String,
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
    List {
        #[arg(long)]
        org: String,
        #[arg(long)]
        user: Option<String>,
    },
    Show {
        id: String,
    },
    Revoke {
        id: String,
    },
    Activate {
        id: String,
    },
    /// Delete a key (it must be revoked first).
    Delete {
        id: String,
    },
}

/// Runs one admin command; returns the process exit code.
pub async fn run(config: &Config, args: AdminArgs) -> u8 {
    let store = match Store::open(&config.redis) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    // Audited as the operator's login name, as far as the environment tells it.
    let login = std::env::var("USER").unwrap_or_default();
    let store = store.acting_as(Actor::named(format!("cli:{login}")));
    match execute(config, &store, args.command, args.json).await {
        Ok(()) => 0,
        Err(e) => fail(&e),
    }
}

fn fail(e: &StoreError) -> u8 {
    eprintln!("error: {e}");
    if e.is_unavailable() {
        EXIT_UNAVAILABLE
    } else {
        EXIT_REFUSED
    }
}

fn print<T: Serialize>(json: bool, value: &T, table: impl FnOnce(&T) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("records serialize")
        );
    } else {
        print!("{}", table(value));
    }
}

/// Expands presets and checks scope syntax.
fn scopes(config: &Config, names: &[String]) -> Result<Vec<Scope>, StoreError> {
    config.scopes(names).map_err(StoreError::Rejected)
}

/// One table row: cells padded to 24 characters.
pub(crate) fn row(cells: &[&str]) -> String {
    cells
        .iter()
        .map(|c| format!("{c:<24}"))
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end()
        .to_owned()
        + "\n"
}

async fn execute(
    config: &Config,
    store: &Store,
    command: AdminCommand,
    json: bool,
) -> Result<(), StoreError> {
    match command {
        AdminCommand::Org(OrgCommand::Create { id, name }) => {
            let org = store
                .create_org(&OrgId::from(id.as_str()), name.as_deref().unwrap_or(&id))
                .await?;
            print(json, &org, |o| format!("created org {}\n", o.id));
        }
        AdminCommand::Org(OrgCommand::List) => {
            let orgs = store.orgs().await?;
            print(json, &orgs, |v| {
                v.iter().map(|o| row(&[o.id.as_str(), &o.name])).collect()
            });
        }
        AdminCommand::User(UserCommand::Create {
            org,
            name,
            role,
            id,
        }) => {
            let user = store
                .create_user(&OrgId::from(org), id.map(UserId::from), &name, role)
                .await?;
            print(json, &user, |u| {
                format!("created user {} ({})\n", u.id, u.role)
            });
        }
        AdminCommand::User(UserCommand::List { org }) => {
            let users = store.users(&OrgId::from(org)).await?;
            print(json, &users, |v| {
                v.iter()
                    .map(|u| row(&[u.id.as_str(), &u.name, u.role.as_str(), u.status.as_str()]))
                    .collect()
            });
        }
        AdminCommand::User(UserCommand::Set { id, role, status }) => {
            let user = store.update_user(&UserId::from(id), role, status).await?;
            print(json, &user, |u| {
                format!("user {}: role {}, {}\n", u.id, u.role, u.status)
            });
        }
        AdminCommand::Project(cmd) => project(store, cmd, json).await?,
        AdminCommand::Key(cmd) => key(config, store, cmd, json).await?,
    }
    Ok(())
}

async fn project(store: &Store, command: ProjectCommand, json: bool) -> Result<(), StoreError> {
    let show = |p: &crate::model::Project| {
        format!(
            "project {} ({}), members: {}\n",
            p.id,
            p.visibility,
            crate::store::codec::join(&p.members)
        )
    };
    let p = match command {
        ProjectCommand::Create {
            org,
            id,
            name,
            visibility,
        } => {
            store
                .create_project(
                    &OrgId::from(org),
                    &ProjectId::from(id.as_str()),
                    name.as_deref().unwrap_or(&id),
                    visibility,
                )
                .await?
        }
        ProjectCommand::List { org } => {
            let projects = store.projects(&OrgId::from(org)).await?;
            print(json, &projects, |v| v.iter().map(show).collect());
            return Ok(());
        }
        ProjectCommand::Set {
            org,
            id,
            visibility,
        } => {
            store
                .set_project_visibility(&OrgId::from(org), &ProjectId::from(id), visibility)
                .await?
        }
        ProjectCommand::AddMember { org, id, user } => {
            store
                .set_member(
                    &OrgId::from(org),
                    &ProjectId::from(id),
                    &UserId::from(user),
                    true,
                )
                .await?
        }
        ProjectCommand::RemoveMember { org, id, user } => {
            store
                .set_member(
                    &OrgId::from(org),
                    &ProjectId::from(id),
                    &UserId::from(user),
                    false,
                )
                .await?
        }
    };
    print(json, &p, show);
    Ok(())
}

fn write_secrets(path: &std::path::Path, secrets: &[String]) -> std::io::Result<()> {
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

fn key_row(k: &crate::model::KeyRecord) -> String {
    let expires = k.grant.expires_at.map_or("never".to_owned(), |at| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(at),
        )
        .to_string()
    });
    row(&[
        k.grant.id.as_str(),
        &k.display,
        &k.name,
        k.grant.status.as_str(),
        &crate::store::codec::join(&k.grant.scopes),
        &expires,
    ])
}

async fn key(
    config: &Config,
    store: &Store,
    command: KeyCommand,
    json: bool,
) -> Result<(), StoreError> {
    let record = match command {
        KeyCommand::Create {
            user,
            name,
            scopes: names,
            projects,
            expires_in,
            no_expiry,
        } => {
            let new = NewKey {
                user_id: UserId::from(user),
                name,
                scopes: scopes(config, &names)?,
                project_ids: projects.into_iter().map(ProjectId::from).collect(),
                expires_at: (!no_expiry).then(|| unix_now() + expires_in.as_secs()),
            };
            let created = store.create_key(&config.keys, new).await?;
            eprintln!("Store this key now: it is shown only once and cannot be recovered.");
            if json {
                let mut v = serde_json::to_value(&created.record).expect("records serialize");
                v["secret"] = serde_json::Value::String(created.secret);
                println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            } else {
                println!("{}", created.secret);
                eprint!("{}", key_row(&created.record));
            }
            return Ok(());
        }
        KeyCommand::CreateMany {
            user,
            count,
            scopes: names,
            expires_in,
            out,
        } => {
            let new = NewKey {
                user_id: UserId::from(user),
                name: "bulk".into(),
                scopes: scopes(config, &names)?,
                project_ids: Vec::new(),
                expires_at: Some(unix_now() + expires_in.as_secs()),
            };
            let secrets = store.create_keys(&config.keys, new, count).await?;
            write_secrets(&out, &secrets).map_err(|e| {
                StoreError::Rejected(format!("cannot write {}: {e}", out.display()))
            })?;
            print(
                json,
                &serde_json::json!({ "created": count, "out": out }),
                |_| format!("created {count} keys; secrets in {}\n", out.display()),
            );
            return Ok(());
        }
        KeyCommand::ImportLegacy {
            user,
            name,
            legacy_id,
            scopes: names,
        } => {
            let mut secret = String::new();
            std::io::stdin().read_to_string(&mut secret).map_err(|e| {
                StoreError::Rejected(format!("cannot read the secret from standard input: {e}"))
            })?;
            let new = NewKey {
                user_id: UserId::from(user),
                name,
                scopes: scopes(config, &names)?,
                project_ids: Vec::new(),
                expires_at: None,
            };
            store.import_legacy(&legacy_id, secret.trim(), new).await?
        }
        KeyCommand::List { org, user } => {
            let keys = store
                .keys(&OrgId::from(org), user.map(UserId::from).as_ref())
                .await?;
            print(json, &keys, |v| v.iter().map(key_row).collect());
            return Ok(());
        }
        KeyCommand::Show { id } => store.key(&KeyId::from(id)).await?,
        KeyCommand::Revoke { id } => {
            store
                .set_key_status(&KeyId::from(id), KeyStatus::Revoked)
                .await?
        }
        KeyCommand::Activate { id } => {
            store
                .set_key_status(&KeyId::from(id), KeyStatus::Active)
                .await?
        }
        KeyCommand::Delete { id } => {
            store.delete_key(&KeyId::from(id.as_str())).await?;
            print(json, &serde_json::json!({ "deleted": id }), |_| {
                format!("deleted key {id}\n")
            });
            return Ok(());
        }
    };
    print(json, &record, key_row);
    Ok(())
}
