//! The store of record: Redis, shared by every replica.
//!
//! Owns: the Redis schema, the reads the request path needs ([`Store::resolve_key`],
//! [`Store::project`]), the management writes (in `directory` and `keys`, shared by the CLI and
//! the HTTP API), and the invalidation channel. Does not own: caching (`cache`) or policy.
//!
//! Layout (schema version [`SCHEMA_VERSION`]; every name starts with the configured namespace,
//! `kg` by default). `{org}`, in braces, is a Redis Cluster hash tag: every record of one org is
//! in one hash slot, so a write to an org's records is one MULTI/EXEC there.
//! ```text
//! kg:schema                          string  the layout's version; keygate refuses any other
//! kg:orgs                            set     org ids
//! kg:account:{user}                  hash    the person: name, status, created_at
//! kg:account:{user}:orgs             set     the orgs they are a member of
//! kg:keyorg:{key}                    string  the org a key id is in
//! kg:credential:{sha256 hex}         string  `{org}/{key id}`: the request path's index (one per
//!                                            secret; a rotated-out secret's stays until the next
//!                                            rotation or the key's deletion)
//! kg:{org}:org                       hash    name, created_at
//! kg:{org}:members                   set     user ids
//! kg:{org}:member:{user}             hash    the membership: org_id, role, status, created_at
//! kg:{org}:member:{user}:keys        set     key ids
//! kg:{org}:projects                  set     project ids
//! kg:{org}:project:{project}         hash    org_id, name, visibility, status, created_at
//! kg:{org}:project:{project}:members set     user ids
//! kg:{org}:keys                      set     key ids
//! kg:{org}:key:{key}                 hash    see KeyRecord::to_fields (SHA-256 only, never the secret)
//! kg:{org}:audit                     stream  the audit log, see `audit`
//! kg:{org}:invalidate                pub/sub channel of the org's changes, see [`Invalidation`]
//! ```
//! The records outside an org's slot are the indexes from a credential or a key id to its org,
//! the accounts and the org list. On one Redis every write is one MULTI/EXEC with all of them.
//! On a Cluster they are written apart from the org's transaction, in an order that leaves only
//! harmless leftovers after a crash: an index before the record it points to on creation, after
//! it on deletion (an index to no key finds no key). The cold key lookup is one script: one round
//! trip on one Redis; on a Cluster, the index `GET`, then the script in the org's slot.
//! `migrate` moves a store of the first layout (no hash tags, one org per user) to this one.
//!
//! Invariants: every write is one MULTI/EXEC transaction in its org's slot ([`Store::commit`])
//! that also appends its audit entry and PUBLISHes its invalidations (on the org's channel,
//! itself in the org's slot), so no crash leaves half a key, no change goes unaudited, and no
//! replica misses a change it could see. The actor is the handle's ([`Store::acting_as`]).
//! Where commands go (one Redis, Sentinel's master, a Cluster) is `link`'s.
//!
//! This is the one narrow interface to storage: a second backend (an embedded single-node store)
//! can become an enum behind `Store` without touching the request path.

pub mod audit;
pub mod codec;
pub mod directory;
pub mod keys;
pub mod link;
pub mod migrate;
pub mod usage;

use std::fmt;
use std::time::Duration;

use redis::AsyncCommands;

use crate::model::{
    KeyGrant, KeyHash, OrgId, Owner, Principal, Project, ProjectId, Secret, UserId,
};
use audit::Actor;
use codec::{BadRecord, Fields, Values};
use link::Link;

/// One write, as the audit log records it.
#[derive(Debug)]
pub struct Change<'a> {
    /// The org whose log it goes to.
    pub org: &'a OrgId,
    /// `key.create`, `user.update`, `project.member.add`, …
    pub action: &'static str,
    /// `key:{id}`, `user:{id}`, `project:{id}`, `org:{id}`.
    pub target: String,
    /// What changed (never a secret).
    pub details: serde_json::Value,
    /// What every replica must drop from its hot cache.
    pub invalidations: Vec<Invalidation>,
}

/// How to reach Redis, from the `[redis]` section of the config.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub target: RedisTarget,
    /// An ACL user and its password, when the URL carries none (they come from the environment
    /// or a file, never from the config file).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The CA and client certificate of a `rediss://` URL, PEM.
    pub tls: RedisTls,
    /// Prefix of every Redis key and of the invalidation channel, so deployments can share a Redis.
    pub namespace: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

/// Which Redis: one server, or the master Sentinel names.
#[derive(Clone, Debug)]
pub enum RedisTarget {
    /// `redis://` or `rediss://` (TLS, the certificate verified against the system's roots or
    /// `tls`'s CA).
    Standalone(Secret),
    /// The master the sentinels (`host:port` each) know as `master`, followed across failovers;
    /// `tls`: TLS to the sentinels and the master alike.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        tls: bool,
    },
    /// A Redis Cluster, found from these nodes (`host:port` each); `tls`: TLS to every node.
    Cluster { nodes: Vec<String>, tls: bool },
}

impl RedisConfig {
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, RedisTarget::Cluster { .. })
    }
}

/// The certificates of a TLS connection to Redis, PEM.
#[derive(Clone, Debug, Default)]
pub struct RedisTls {
    /// The CA that signed Redis's certificate; `None`: the system's roots.
    pub ca: Option<Vec<u8>>,
    /// A client certificate and its key, for Redis that asks for one (mutual TLS).
    pub client: Option<(Vec<u8>, Secret)>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the key store is unreachable")]
    Unavailable(#[source] redis::RedisError),
    #[error("the key store did not answer in time")]
    Timeout,
    #[error("a stored record is corrupt")]
    Corrupt(#[from] BadRecord),
    #[error("no {kind} `{id}`")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} `{id}` already exists")]
    AlreadyExists { kind: &'static str, id: String },
    #[error("the key must be revoked before it can be deleted")]
    KeyNotRevoked,
    #[error("the project must be archived before it can be deleted")]
    ProjectNotArchived,
    #[error("the key is revoked; activate it before rotating it")]
    KeyRevoked,
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Schema(String),
}

impl From<redis::ParsingError> for StoreError {
    fn from(_: redis::ParsingError) -> Self {
        StoreError::Corrupt(BadRecord("reply"))
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Unavailable(e)
    }
}

impl StoreError {
    /// Whether the failure is Redis being unreachable or slow (as opposed to the data).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout)
    }
}

/// A change every replica must apply to its hot cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// A key (by the SHA-256 of one of its credentials) was created, changed or deleted.
    Key(KeyHash),
    /// A user changed: every key they own must be re-read.
    User(UserId),
    /// A project's visibility or members changed.
    Project(OrgId, ProjectId),
}

impl Invalidation {
    pub fn encode(&self) -> String {
        match self {
            Invalidation::Key(hash) => format!("key:{hash}"),
            Invalidation::User(id) => format!("user:{id}"),
            Invalidation::Project(org, id) => format!("project:{org}:{id}"),
        }
    }

    pub fn decode(msg: &str) -> Option<Invalidation> {
        let (kind, rest) = msg.split_once(':')?;
        match kind {
            "key" => KeyHash::from_hex(rest).map(Invalidation::Key),
            "user" => Some(Invalidation::User(UserId::from(rest))),
            "project" => {
                let (org, id) = rest.split_once(':')?;
                Some(Invalidation::Project(OrgId::from(org), ProjectId::from(id)))
            }
            _ => None,
        }
    }
}

/// GET the index, then the key's grant and its owner (the membership in the key's org, disabled
/// with the account), in one round trip; everything after the index is in the org's hash slot. HMGET of only the fields
/// the request path reads ([`KeyGrant::FIELDS`], [`Owner::FIELDS`]), filled in by
/// [`resolve_script`]: every field named or returned is a Lua string for Redis to make, so
/// HGETALL of the whole key costs Redis more per call.
///
/// The answer is one string: the key's values, then the owner's, separated by NULs
/// ([`SEPARATOR`]), an absent field as an empty value; only the key's when the owner is missing.
/// One string rather than nested RESP arrays: decoding RESP bulk strings into `redis::Value`s
/// was the largest cost of a cache miss in keygate. Joined rather than JSON-encoded:
/// `cjson.encode` costs Redis more, and parsing quotes and escapes costs keygate more. No valid
/// value contains a NUL; a corrupt one that did would change the count of values, which is
/// checked.
const RESOLVE_SCRIPT: &str = r"
local ref = redis.call('GET', KEYS[1])
if not ref then return false end
local slash = string.find(ref, '/', 1, true)
if not slash then return redis.error_reply('corrupt credential index') end
local org = string.sub(ref, 1, slash - 1)
local base = ARGV[1] .. ':{' .. org .. '}:'
local key = redis.call('HMGET', base .. 'key:' .. string.sub(ref, slash + 1), KEY_FIELDS)
if not key[1] then return false end
local user = key[2] or ''
local member = redis.call('HMGET', base .. 'member:' .. user, OWNER_FIELDS, 'account_status')
for i = 1, #key do key[i] = key[i] or '\1' end
-- A missing owner: the key's values alone. A disabled account disables every membership (its
-- status is copied into each, so the lookup stays in the org's hash slot).
if member[1] then
  if member[#member] == 'disabled' then member[3] = 'disabled' end
  for i = 1, #member - 1 do key[#key + 1] = member[i] or '\1' end
end
return table.concat(key, '\0')
";

/// Separates the values in [`RESOLVE_SCRIPT`]'s answer.
const SEPARATOR: u8 = b'\0';
/// Stands for an absent field in [`RESOLVE_SCRIPT`]'s answer, where an empty value is a value
/// (a key restricted to no project has an empty `project_ids`; one without the field is corrupt).
const ABSENT: &str = "\u{1}";

/// The first lines of [`RESOLVE_SCRIPT`], which read the index; on a Cluster the index is read
/// by a `GET` of its own (it is in another hash slot), and the script is handed its value.
const READ_INDEX: &str =
    "local ref = redis.call('GET', KEYS[1])\nif not ref then return false end\n";

/// [`RESOLVE_SCRIPT`] with the field names in place; `in_org`: the Cluster's variant, which
/// takes the index's value as `ARGV[2]` and the key's record as `KEYS[1]`.
fn resolve_script(in_org: bool) -> String {
    let script = match in_org {
        false => RESOLVE_SCRIPT.to_owned(),
        true => RESOLVE_SCRIPT.replacen(READ_INDEX, "local ref = ARGV[2]\n", 1),
    };
    let quoted = |names: &[&str]| {
        let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
        quoted.join(", ")
    };
    script
        .replace("KEY_FIELDS", &quoted(&KeyGrant::FIELDS))
        .replace("OWNER_FIELDS", &quoted(&Owner::FIELDS))
}

/// The layout [`Store::check_schema`] accepts, in `{namespace}:schema`.
pub const SCHEMA_VERSION: u32 = 2;

/// An org's hash tag, `{acme}`: the part of a name Redis Cluster places by.
pub(crate) struct Tag<'a>(pub &'a OrgId);

impl fmt::Display for Tag<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.0)
    }
}

/// A Redis key name ([`Store::name_arg`]).
struct Name<'a> {
    ns: &'a str,
    parts: fmt::Arguments<'a>,
}

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ns, self.parts)
    }
}

impl redis::ToRedisArgs for Name<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        out.write_arg_fmt(self);
    }
}

/// A handle on the store; cheap to clone (one multiplexed, self-reconnecting connection).
#[derive(Clone)]
pub struct Store {
    link: Link,
    ns: String,
    timeout: Duration,
    resolve: std::sync::Arc<redis::Script>,
    /// Who the writes made through this handle are audited as.
    actor: Actor,
}

impl Store {
    /// Connects lazily: keygate starts (and answers from cache, or 503) while Redis is down.
    pub fn open(cfg: &RedisConfig) -> Result<Store, StoreError> {
        Ok(Store {
            link: Link::open(cfg)?,
            ns: cfg.namespace.clone(),
            timeout: cfg.command_timeout,
            resolve: std::sync::Arc::new(redis::Script::new(&resolve_script(cfg.is_cluster()))),
            actor: Actor::named("system"),
        })
    }

    /// The same store, with writes audited as made by `actor`.
    pub fn acting_as(&self, actor: Actor) -> Store {
        Store {
            actor,
            ..self.clone()
        }
    }

    /// A client for the invalidation subscriber's own pub/sub connection, to the server the
    /// store's commands go to (with Sentinel, the current master).
    pub async fn client(&self) -> Result<redis::Client, StoreError> {
        self.link.client().await
    }

    /// After the subscriber's connection failed: with Sentinel, ask where the master is again.
    pub fn rediscover(&self) {
        self.link.rediscover();
    }

    /// The connection to send on.
    async fn conn(&self) -> Result<link::Conn, StoreError> {
        self.link.conn().await
    }

    /// The channel an org's invalidations are published on: named in the org's hash slot, so
    /// that the PUBLISH is part of the write's MULTI/EXEC on a Cluster too (where a PUBLISH
    /// reaches every node's subscribers, whatever its channel).
    pub fn channel(&self, org: &OrgId) -> String {
        format!("{}:{}:invalidate", self.ns, Tag(org))
    }

    /// The pattern every org's channel matches, which the invalidation subscriber listens on.
    pub fn channels(&self) -> String {
        format!("{}:{{*}}:invalidate", self.ns)
    }

    /// A Redis key name: the namespace, `:`, then `parts`. Allocated once at a size that fits
    /// the longest (`credential:` and 64 hex digits), where `format!` would start small and grow it.
    fn name(&self, parts: fmt::Arguments<'_>) -> String {
        use std::fmt::Write;
        let mut name = String::with_capacity(self.ns.len() + 96);
        write!(name, "{}", self.name_arg(parts)).expect("a String takes any write");
        name
    }

    /// The same name as a command argument, written straight into the command: no `String`.
    fn name_arg<'a>(&'a self, parts: fmt::Arguments<'a>) -> Name<'a> {
        Name {
            ns: &self.ns,
            parts,
        }
    }

    /// Runs a write's MULTI/EXEC with its audit entry and its invalidations: the one way a
    /// change reaches Redis.
    async fn commit(&self, pipe: redis::Pipeline, change: Change<'_>) -> Result<(), StoreError> {
        self.commit_ordered(Vec::new(), pipe, Vec::new(), change)
            .await
    }

    /// [`Store::commit`] of a write that also touches records outside the org's hash slot:
    /// `before`, what the org's records will be found by (an index, an account), and `after`,
    /// what they are no longer found by. On one Redis all of it is one MULTI/EXEC; on a Cluster
    /// `before` is written first and `after` last, so a crash between leaves only an index to
    /// nothing, or an account without its membership: nothing that grants anything.
    async fn commit_ordered(
        &self,
        before: Vec<redis::Cmd>,
        mut pipe: redis::Pipeline,
        after: Vec<redis::Cmd>,
        change: Change<'_>,
    ) -> Result<(), StoreError> {
        let stream = self.name(format_args!("{}:audit", Tag(change.org)));
        self.actor.append_entry(pipe.atomic(), stream, &change);
        for inv in &change.invalidations {
            pipe.publish(self.channel(change.org), inv.encode())
                .ignore();
        }
        let mut c = self.conn().await?;
        if !self.link.is_cluster() {
            for cmd in before.into_iter().chain(after) {
                pipe.add_command(cmd).ignore();
            }
            return self
                .bounded(async { Ok(pipe.query_async::<()>(&mut c).await?) })
                .await;
        }
        self.query_apart(before).await?;
        self.bounded(async { Ok(pipe.query_async::<()>(&mut c).await?) })
            .await?;
        self.query_apart(after).await.map(drop)
    }

    /// Runs commands whose keys may be in different hash slots, and returns their answers in
    /// order: one pipeline on one Redis; on a Cluster, which takes a pipeline only within one
    /// slot, each on its own, all at once.
    async fn query_apart(&self, cmds: Vec<redis::Cmd>) -> Result<Vec<redis::Value>, StoreError> {
        let c = self.conn().await?;
        if !self.link.is_cluster() {
            let mut pipe = redis::pipe();
            for cmd in cmds {
                pipe.add_command(cmd);
            }
            let mut c = c;
            return self
                .bounded(async { Ok(pipe.query_async(&mut c).await?) })
                .await;
        }
        self.bounded(async {
            let each = cmds.iter().map(|cmd| {
                let mut c = c.clone();
                async move { cmd.query_async::<redis::Value>(&mut c).await }
            });
            Ok(futures_util::future::try_join_all(each).await?)
        })
        .await
    }

    /// Runs a store future with the command timeout as an absolute bound (reconnects included).
    async fn bounded<T>(
        &self,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| StoreError::Timeout)
            .and_then(|r| r);
        if let Err(e) = &result {
            self.link.failed(e);
        }
        result
    }

    /// Whether Redis answers now. A connection Redis dropped (a restart) fails its next command
    /// and reconnects, so a failed ping asks once more, on the new connection.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let once = || async {
            let mut c = self.conn().await?;
            Ok(redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(drop)?)
        };
        self.bounded(async {
            match once().await {
                Err(StoreError::Unavailable(_)) => once().await,
                answered => answered,
            }
        })
        .await
    }

    /// Checks the store's layout is [`SCHEMA_VERSION`]; marks an empty store as such. A store of
    /// another layout is refused, saying what to run.
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        let schema = self.name(format_args!("schema"));
        let mut get = redis::cmd("GET");
        get.arg(&schema);
        let mut exists = redis::cmd("EXISTS");
        exists.arg(self.name(format_args!("orgs")));
        let answers = self.query_apart(vec![get, exists]).await?;
        let version: Option<u32> = redis::from_redis_value(answers[0].clone())?;
        let orgs: bool = redis::from_redis_value(answers[1].clone())?;
        let mut c = self.conn().await?;
        let found = match (version, orgs) {
            (Some(SCHEMA_VERSION), _) => return Ok(()),
            (None, false) => {
                let _: () = self
                    .bounded(async {
                        Ok(redis::cmd("SET")
                            .arg(&schema)
                            .arg(SCHEMA_VERSION)
                            .arg("NX")
                            .query_async(&mut c)
                            .await?)
                    })
                    .await?;
                return Ok(());
            }
            (None, true) => 1,
            (Some(v), _) => v,
        };
        Err(StoreError::Schema(if found < SCHEMA_VERSION {
            format!(
                "the store (namespace `{}`) has layout {found}, this keygate reads layout {SCHEMA_VERSION}: stop every replica, then run `keygate migrate --config FILE` (`--dry-run` first shows what it will do)",
                self.ns
            )
        } else {
            format!(
                "the store (namespace `{}`) has layout {found}, written by a newer keygate; this one reads layout {SCHEMA_VERSION}: run the newer version",
                self.ns
            )
        }))
    }

    /// The key with this credential hash and its owner, or `None` if no key has it.
    pub async fn resolve_key(&self, hash: &KeyHash) -> Result<Option<Principal>, StoreError> {
        let c = self.conn().await?;
        if self.link.is_cluster() {
            return self.resolve_on_cluster(hash, c).await;
        }
        // The script's `EVALSHA` written out, where `Script::invoke_async` holds each key and
        // argument in a `Vec` of its own first and copies them into the command: five
        // allocations per cache miss. Allocated once, at a size that fits the arguments: the
        // script's SHA-1, the index name and the namespace. Like `Script`, a Redis that lost
        // the script (a restart, `SCRIPT FLUSH`) is handed it and asked again.
        let mut lookup = redis::Cmd::with_capacity(5, 2 * self.ns.len() + 128);
        lookup
            .arg("EVALSHA")
            .arg(self.resolve.get_hash())
            .arg(1)
            .arg(self.name_arg(format_args!("credential:{hash}")))
            .arg(&self.ns);
        let found = self.run_lookup(&lookup, c).await?;
        self.parse_lookup(found)
    }

    /// [`Store::resolve_key`] on a Cluster: the index first, then the script in the org's hash
    /// slot. Two round trips.
    async fn resolve_on_cluster(
        &self,
        hash: &KeyHash,
        mut c: link::Conn,
    ) -> Result<Option<Principal>, StoreError> {
        let index = self.name(format_args!("credential:{hash}"));
        let reference: Option<String> = self
            .bounded(async { Ok(redis::cmd("GET").arg(&index).query_async(&mut c).await?) })
            .await?;
        let Some(reference) = reference else {
            return Ok(None);
        };
        let (org, id) = reference.split_once('/').ok_or(BadRecord("credential"))?;
        let mut lookup = redis::cmd("EVALSHA");
        lookup
            .arg(self.resolve.get_hash())
            .arg(1)
            .arg(self.name(format_args!("{}:key:{id}", Tag(&OrgId::from(org)))))
            .arg(&self.ns)
            .arg(&reference);
        let found = self.run_lookup(&lookup, c).await?;
        self.parse_lookup(found)
    }

    /// Runs a lookup's `EVALSHA`, once more on a connection Redis just dropped, and with the
    /// script handed over when Redis lost it.
    async fn run_lookup(
        &self,
        lookup: &redis::Cmd,
        mut c: link::Conn,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.bounded(async {
            // A connection Redis dropped (a restart) fails the first command sent on it, and
            // the connection manager reconnects: asked once more, the lookup goes on the new
            // connection instead of failing a request while Redis is up.
            let answer = match lookup.query_async(&mut c).await {
                Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                    lookup.query_async(&mut c).await
                }
                answer => answer,
            };
            Ok(match answer {
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    self.resolve.load_async(&mut c).await?;
                    lookup.query_async(&mut c).await?
                }
                answer => answer?,
            })
        })
        .await
    }

    /// The key and owner in a lookup's answer (see [`RESOLVE_SCRIPT`]).
    fn parse_lookup(&self, found: Option<Vec<u8>>) -> Result<Option<Principal>, StoreError> {
        let Some(answer) = found else {
            return Ok(None);
        };
        let answer = std::str::from_utf8(&answer).map_err(|_| BadRecord("key"))?;
        // The values in `KeyGrant::FIELDS` then `Owner::FIELDS` order, read where they lie.
        const KEY: usize = KeyGrant::FIELDS.len();
        let mut values = [None; KEY + Owner::FIELDS.len()];
        let mut count = 0;
        let mut start = 0;
        // `memchr` (SIMD) rather than `str::split`, whose char search goes byte by byte.
        let ends = memchr::memchr_iter(SEPARATOR, answer.as_bytes()).chain([answer.len()]);
        for end in ends {
            let value = &answer[start..end];
            *values.get_mut(count).ok_or(BadRecord("key"))? = (value != ABSENT).then_some(value);
            (start, count) = (end + 1, count + 1);
        }
        match count {
            KEY => return Err(BadRecord("user_id").into()),
            all if all == values.len() => {}
            _ => return Err(BadRecord("key").into()),
        }
        let (key, owner) = values.split_at(KEY);
        let key = KeyGrant::from_fields(&Values {
            names: &KeyGrant::FIELDS,
            values: key,
        })?;
        let owner = Values {
            names: &Owner::FIELDS,
            values: owner,
        };
        let owner = Owner::from_fields(key.user_id.clone(), &owner)?;
        Ok(Some(Principal::new(key, owner)))
    }

    /// A project of an org with its members, or `None`.
    pub async fn project(
        &self,
        org: &OrgId,
        id: &ProjectId,
    ) -> Result<Option<Project>, StoreError> {
        let mut c = self.conn().await?;
        let key = self.name(format_args!("{}:project:{id}", Tag(org)));
        let (fields, mut members): (Fields, Vec<String>) = self
            .bounded(async {
                Ok(redis::pipe()
                    .hgetall(&key)
                    .smembers(format!("{key}:members"))
                    .query_async(&mut c)
                    .await?)
            })
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        members.sort();
        let members = members.into_iter().map(UserId::from).collect();
        Ok(Some(Project::from_fields(id.clone(), &fields, members)?))
    }

    /// Fields of one hash, `None` when it does not exist.
    async fn hash(&self, key: String) -> Result<Option<Fields>, StoreError> {
        let mut c = self.conn().await?;
        let f: Fields = self.bounded(async { Ok(c.hgetall(key).await?) }).await?;
        Ok((!f.is_empty()).then_some(f))
    }

    /// A record that must exist, parsed by `parse`.
    async fn record<T>(
        &self,
        kind: &'static str,
        id: &str,
        key: String,
        parse: impl FnOnce(&Fields) -> Result<T, BadRecord>,
    ) -> Result<T, StoreError> {
        let fields = self.hash(key).await?.ok_or_else(|| StoreError::NotFound {
            kind,
            id: id.to_owned(),
        })?;
        Ok(parse(&fields)?)
    }

    /// Refuses to create a record whose Redis key is taken.
    async fn ensure_absent(
        &self,
        kind: &'static str,
        id: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let taken: bool = self
            .bounded(async { Ok(redis::cmd("EXISTS").arg(key).query_async(&mut c).await?) })
            .await?;
        if taken {
            return Err(StoreError::AlreadyExists {
                kind,
                id: id.to_owned(),
            });
        }
        Ok(())
    }

    async fn members(&self, key: String) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn().await?;
        let mut m: Vec<String> = self.bounded(async { Ok(c.smembers(key).await?) }).await?;
        m.sort();
        Ok(m)
    }
}

/// HGETALL's flat `[field, value, …]` as a map.
fn pairs(flat: Vec<String>) -> Fields {
    let mut it = flat.into_iter();
    let mut out = Fields::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.insert(k, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lookup_script_reads_id_and_owner_by_position() {
        assert_eq!(KeyGrant::FIELDS[..2], ["id", "user_id"]);
        assert_eq!(
            Owner::FIELDS[2],
            "status",
            "the script disables the third owner field"
        );
        let script = resolve_script(false);
        assert!(script.contains("'id', 'user_id', 'org_id'"), "{script}");
        let in_org = resolve_script(true);
        assert!(
            !in_org.contains("'GET'") && in_org.starts_with("\nlocal ref = ARGV[2]"),
            "{in_org}"
        );
        assert!(!script.contains("KEY_FIELDS") && !script.contains("OWNER_FIELDS"));
    }

    #[test]
    fn invalidations_round_trip() {
        let all = [
            Invalidation::Key(KeyHash([0xab; 32])),
            Invalidation::User(UserId::from("u_1")),
            Invalidation::Project(OrgId::from("acme"), ProjectId::from("p-1")),
        ];
        for inv in all {
            assert_eq!(Invalidation::decode(&inv.encode()), Some(inv));
        }
        assert_eq!(Invalidation::decode("nonsense"), None);
        assert_eq!(Invalidation::decode("project:only-org"), None);
        assert_eq!(Invalidation::decode("key:not-hex"), None);
    }
}
