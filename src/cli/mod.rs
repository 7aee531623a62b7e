//! The management CLI: `keygate orgs|users|projects|keys <verb>`, one vocabulary over two
//! transports.
//!
//! - Over the management API of a running keygate (the default): `--url` / `KEYGATE_URL` and
//!   `--api-key` / `KEYGATE_API_KEY` (a key with `keys:manage` or `admin`, or the bootstrap
//!   token). The API decides what the caller may do ([`remote`]).
//! - On the store directly, with `--config FILE` (bootstrap and offline work by operators who can
//!   reach Redis): the same store functions the API uses, acting as the operator ([`direct`]).
//!
//! Owns: the commands and their arguments, choosing the transport, printing ([`print`]) and
//! the exit codes. Does not own any rule about keys (the store and the API decide).
//! `keys create` and `keys rotate` print the secret once, to stdout, with a warning on stderr.
//!
//! Exit codes: 0 ok; 64 no transport (neither `--config` nor `--url` and `--api-key`), or a
//! command only one transport offers; 65 refused (not found, exists, invalid; 4xx); 69
//! unreachable (Redis or the API) or failing (5xx).

pub mod direct;
mod print;
pub mod remote;

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Usage error (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Refused input (EX_DATAERR).
pub const EXIT_REFUSED: u8 = 65;
/// Redis or the API unreachable, or failing (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;

/// Where a management command goes, and how its answer is printed.
#[derive(Debug, Args)]
pub struct Target {
    /// Work on the store named in this config file directly, not over the API.
    #[arg(long, short, global = true, conflicts_with = "url")]
    pub config: Option<PathBuf>,
    /// The admin listener of a running keygate, e.g. http://127.0.0.1:9090.
    #[arg(long, env = "KEYGATE_URL", global = true)]
    pub url: Option<String>,
    /// A key with keys:manage (or admin), or the bootstrap token.
    #[arg(long, env = "KEYGATE_API_KEY", global = true, hide_env_values = true)]
    pub api_key: Option<String>,
    /// The org to act on: needed on the store directly, and with the bootstrap token (a key
    /// acts on its own org).
    #[arg(long, global = true)]
    pub org: Option<String>,
    /// Print JSON (the API's shapes) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The nouns, each with its verbs.
#[derive(Debug)]
pub enum Manage {
    Orgs(OrgsCommand),
    Users(UsersCommand),
    Projects(ProjectsCommand),
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum OrgsCommand {
    /// Create an organisation (the platform: the bootstrap token, or on the store).
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// List every organisation.
    List,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user to the org.
    Create {
        #[arg(long)]
        name: String,
        /// Chosen id (default: generated).
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// List the org's users.
    List,
    /// One user.
    Show { id: String },
    /// Change a member's role and/or status in the org; their keys there follow at once on every
    /// replica.
    Set {
        id: String,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        status: Option<String>,
    },
    /// Add a person who exists (a member of another org) to the org: the platform's act (the
    /// bootstrap token, or --config).
    AddMember {
        id: String,
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// Invite a person to the org by their id; they accept with a key of their own.
    Invite {
        id: String,
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// Accept an invitation to ORG, as the holder of the API key (over the API only).
    Accept { org: String, invitation: String },
    /// Disable or enable a person in every org at once (the platform's act).
    SetAccount {
        id: String,
        #[arg(long)]
        status: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Create a project in the org.
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "private")]
        visibility: String,
    },
    /// List the org's projects.
    List,
    /// One project with its members.
    Show { id: String },
    /// Change who may use a project: private (members) or public (every member of the org).
    Set {
        id: String,
        #[arg(long)]
        visibility: String,
    },
    /// Give a user access to a private project.
    AddMember { id: String, user: String },
    /// Take a user's access to a private project away.
    RemoveMember { id: String, user: String },
    /// Archive a project: every request for it is refused at once; its keys stay restricted.
    Archive { id: String },
    /// Bring an archived project back.
    Restore { id: String },
    /// Delete an archived project.
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create {
        #[arg(long)]
        name: String,
        /// Scopes or presets, comma-separated (e.g. `inference` or `predict,models:read`).
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Validity, e.g. 30d or 12h: at least 1m, at most `keys.max_validity`. Default: never
        /// where `keys.allow_no_expiry` is on, else `keys.max_validity`.
        #[arg(long)]
        expires_in: Option<String>,
        /// Restrict the key to these projects (repeatable).
        #[arg(long = "project")]
        projects: Vec<String>,
        /// The key's owner (admins: anyone in the org; on the store: required).
        #[arg(long)]
        user: Option<String>,
    },
    /// Create many keys at once (benchmarks, migrations); secrets go to FILE, one per line.
    /// On the store only.
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
        out: PathBuf,
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
    /// List keys (masked): yours, or with --user another's (admins: every key of the org).
    List {
        #[arg(long)]
        user: Option<String>,
        /// active, revoked or expired.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        offset: Option<usize>,
    },
    /// One key (masked).
    Show { id: String },
    /// Give a key a new name.
    Rename { id: String, name: String },
    /// Replace a key's scopes (comma-separated).
    SetScopes {
        id: String,
        #[arg(value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
    /// Restrict a key to these projects (comma-separated), or with --any to none.
    SetProjects {
        id: String,
        #[arg(value_delimiter = ',', required_unless_present = "any")]
        projects: Vec<String>,
        /// Any project the key's owner may use.
        #[arg(long, conflicts_with = "projects")]
        any: bool,
    },
    /// Stop a key at once, on every replica. Give its id, or, for a leaked key, its secret
    /// (anything but a `key_…` id is taken as a secret; no management key is needed for it).
    Revoke { id: String },
    /// Let a revoked key work again.
    Activate { id: String },
    /// A new secret, printed once; the old one works for --grace (default: stops at once).
    Rotate {
        id: String,
        #[arg(long)]
        grace: Option<String>,
    },
    /// Delete a revoked key.
    Delete { id: String },
}

/// Runs one management command on the chosen transport; returns the process exit code.
pub async fn run(target: Target, command: Manage) -> u8 {
    let created_user = matches!(command, Manage::Users(UsersCommand::Create { .. }));
    let answer = match (&target.config, &target.url, &target.api_key) {
        (Some(config), _, _) => direct::run(config, target.org.as_deref(), command).await,
        (None, Some(url), key) => {
            remote::run(url, key.as_deref(), target.org.as_deref(), command).await
        }
        (None, None, _) => Err(Failure::usage(
            "set KEYGATE_URL and KEYGATE_API_KEY (or --url and --api-key) to use the management \
             API, or give --config FILE to work on the store directly",
        )),
    };
    match answer {
        Ok(value) if created_user && !target.json => {
            print::created_user(&value);
            0
        }
        Ok(value) => {
            print::answer(&value, target.json);
            0
        }
        Err(Failure { code, message }) => {
            eprintln!("error: {message}");
            code
        }
    }
}

/// Asks the keygate whose admin listener is at `url` to read its config file again; prints
/// what it applied, or why it refused the file. Returns the process exit code.
pub async fn reload(url: &str) -> u8 {
    match remote::send(url, None, http::Method::POST, "/reload", None).await {
        Ok(answer) => {
            print::outln!("reloaded: {} route(s)", answer["routes"]);
            if let Some(kept) = answer["restart_needed"]
                .as_array()
                .filter(|k| !k.is_empty())
            {
                let names: Vec<&str> = kept.iter().filter_map(|k| k.as_str()).collect();
                print::outln!(
                    "changed in the file but applied only on a restart: {}",
                    names.join(", ")
                );
            }
            0
        }
        Err(Failure { code, message }) => {
            eprintln!("error: {message}");
            code
        }
    }
}

/// `keygate migrate`: moves the store to this keygate's layout and says what it did (with
/// `dry_run`, what it would do). Returns the process exit code.
pub async fn migrate(config: &std::path::Path, dry_run: bool) -> u8 {
    match direct::migrate(config, dry_run).await {
        Ok(r) => {
            let done = if dry_run { "would copy" } else { "copied" };
            let gone = if dry_run { "would delete" } else { "deleted" };
            if r["from"] == r["to"] {
                print::outln!("the store has layout {} already", r["to"]);
            } else {
                print::outln!(
                    "layout {} -> {}: {done} {} org(s), {} user(s), {} project(s), {} key(s) ({} credential(s)), {} audit entr(ies)",
                    r["from"],
                    r["to"],
                    r["orgs"],
                    r["users"],
                    r["projects"],
                    r["keys"],
                    r["credentials"],
                    r["audit_entries"]
                );
            }
            print::outln!("{gone} {} record(s) of the old layout", r["removed"]);
            if dry_run {
                print::outln!("dry run: nothing was written");
            }
            0
        }
        Err(Failure { code, message }) => {
            eprintln!("error: {message}");
            code
        }
    }
}

/// Whether `keys revoke` was given a secret rather than a key id: keygate makes every key id
/// `key_` and 16 characters, and a secret is longer than any id.
pub fn is_secret(id_or_secret: &str) -> bool {
    !id_or_secret.starts_with("key_")
}

/// Why a command did not succeed: the exit code and what to tell the person.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    pub fn refused(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_REFUSED,
            message: message.into(),
        }
    }
}
