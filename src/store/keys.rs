//! Keys: create (secret returned once), import legacy pairs, list, revoke/activate, rename,
//! change scopes, rotate (new secret once; the old one works for a grace period), delete.
//!
//! Shared by the bootstrap CLI and the HTTP management API. Rules enforced here, once: the owner
//! exists, is active and is not a guest; scopes are well formed and within the owner's role
//! ceiling; restricted projects exist in the owner's org; an expiry is at least a minute away;
//! revoked keys cannot be rotated; only revoked keys can be deleted. Every write invalidates
//! `key:{hash}` for each credential of the key (current and rotated-out) in its transaction.

use std::time::Duration;

use serde_json::json;

use super::Change;
use super::audit::Actor;
use super::codec::{Fields, join};
use super::directory::{check_name, new_id};
use super::{Invalidation, Store, StoreError, Tag};
use crate::credential::{KeyFormat, hash_key, hash_legacy};
use crate::model::{
    KeyGrant, KeyHash, KeyId, KeyRecord, KeyStatus, MAX_TIME, OrgId, ProjectId, Role, Scope, User,
    UserId, UserStatus, unix_now,
};

/// Shortest validity a key may be created with, in seconds.
pub const MIN_VALIDITY_SECS: u64 = 60;
/// Longest grace period of a rotation: enough to roll a secret through any deployment, short
/// enough that a leaked secret does not live on for long.
pub const MAX_ROTATION_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Key records read per round trip when listing.
const LIST_BATCH: usize = 500;

/// When a new key expires (Unix seconds; `None`: never), for the API and the CLI alike: the
/// instant `asked` for, else never where `allow_no_expiry`, else `max_validity` from `now`.
/// Refused unless it is between a minute and `max_validity` away.
pub fn expiry(
    now: u64,
    asked: Option<u64>,
    max_validity: Duration,
    allow_no_expiry: bool,
) -> Result<Option<u64>, String> {
    let latest = now.saturating_add(max_validity.as_secs());
    let at = match asked {
        Some(at) => at,
        None if allow_no_expiry => return Ok(None),
        None => latest,
    };
    if at < now.saturating_add(MIN_VALIDITY_SECS) {
        return Err("a key must be valid for at least 1 minute".into());
    }
    if at > latest.min(MAX_TIME) {
        let max = humantime::format_duration(max_validity);
        return Err(format!(
            "a key may be valid for at most {max}, and not past the year 9999"
        ));
    }
    Ok(Some(at))
}

/// What a caller asks for when creating a key.
#[derive(Clone, Debug)]
pub struct NewKey {
    /// The org of the owner's membership the key acts in; `None`: the owner's only org.
    pub org_id: Option<OrgId>,
    pub user_id: UserId,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub project_ids: Vec<ProjectId>,
    /// Unix seconds; `None` for a key that never expires.
    pub expires_at: Option<u64>,
}

/// A key just created: the record, and the secret that is never available again.
#[derive(Debug)]
pub struct CreatedKey {
    pub record: KeyRecord,
    pub secret: String,
}

/// A key's scopes: at least one, each well formed and within the owner's role ceiling.
fn check_scopes(owner: &User, scopes: &[Scope]) -> Result<(), StoreError> {
    if scopes.is_empty() {
        return Err(StoreError::Rejected(
            "a key needs at least one scope".into(),
        ));
    }
    for scope in scopes {
        if !Scope::is_well_formed(scope.as_str()) {
            return Err(StoreError::Rejected(format!(
                "`{scope}` is not a scope like \"predict\" or \"models:read\""
            )));
        }
        if !owner.role.allows(scope) {
            return Err(StoreError::Rejected(format!(
                "scope `{scope}` is beyond what a {} may do",
                owner.role
            )));
        }
    }
    Ok(())
}

/// The record of a new, active key of `owner`.
fn key_record(
    owner: &User,
    mut new: NewKey,
    hash: KeyHash,
    display: String,
    legacy: bool,
) -> KeyRecord {
    new.scopes.sort();
    new.scopes.dedup();
    KeyRecord {
        grant: KeyGrant {
            id: KeyId::from(new_id("key")),
            org_id: owner.org_id.clone(),
            user_id: owner.id.clone(),
            scopes: new.scopes,
            project_ids: new.project_ids,
            status: KeyStatus::Active,
            created_at: unix_now(),
            expires_at: new.expires_at,
            hash,
            previous_hash: None,
            previous_expires_at: None,
        },
        name: new.name,
        display,
        legacy,
        last_used_at: None,
        request_count: 0,
    }
}

/// Every replica must drop what it cached under any credential of `key`.
fn invalidations(key: &KeyRecord) -> Vec<Invalidation> {
    std::iter::once(key.grant.hash)
        .chain(key.grant.previous_hash)
        .map(Invalidation::Key)
        .collect()
}

/// What the audit log says a key change was about.
fn key_change<'a>(
    key: &'a KeyRecord,
    action: &'static str,
    details: serde_json::Value,
) -> Change<'a> {
    Change {
        org: &key.grant.org_id,
        action,
        target: format!("key:{}", key.grant.id),
        details,
        invalidations: invalidations(key),
    }
}

impl Store {
    /// Checks a new key's owner, scopes, projects and expiry; returns the owner.
    async fn check_new_key(&self, new: &NewKey) -> Result<User, StoreError> {
        let owner = match &new.org_id {
            Some(org) => self.member(org, &new.user_id).await?,
            None => self.user(&new.user_id).await?,
        };
        if owner.status == UserStatus::Disabled {
            return Err(StoreError::Rejected(format!(
                "user `{}` is disabled",
                owner.id
            )));
        }
        if owner.role == Role::Guest {
            return Err(StoreError::Rejected("guests cannot have API keys".into()));
        }
        check_name(&new.name)?;
        check_scopes(&owner, &new.scopes)?;
        for project in &new.project_ids {
            self.existing_project(&owner.org_id, project).await?;
        }
        if new
            .expires_at
            .is_some_and(|at| at < unix_now() + MIN_VALIDITY_SECS)
        {
            return Err(StoreError::Rejected(
                "a key must be valid for at least 1 minute".into(),
            ));
        }
        Ok(owner)
    }

    /// Creates a key and returns its secret, which is stored only as its SHA-256.
    pub async fn create_key(
        &self,
        format: &KeyFormat,
        new: NewKey,
    ) -> Result<CreatedKey, StoreError> {
        let secret = format.generate();
        let (hash, masked) = (hash_key(&secret), format.mask(&secret));
        let record = self.insert_key(new, hash, masked, false).await?;
        Ok(CreatedKey { record, secret })
    }

    /// Imports a legacy key id + secret pair (stored hashed, like every credential).
    pub async fn import_legacy(
        &self,
        legacy_id: &str,
        secret: &str,
        new: NewKey,
    ) -> Result<KeyRecord, StoreError> {
        let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if legacy_id.is_empty() || legacy_id.len() > 128 || !printable(legacy_id) {
            return Err(StoreError::Rejected(
                "a legacy key id is 1-128 visible ASCII characters".into(),
            ));
        }
        if secret.len() < 8 || secret.len() > 256 || !printable(secret) {
            return Err(StoreError::Rejected(
                "a legacy secret is 8-256 visible ASCII characters".into(),
            ));
        }
        self.insert_key(
            new,
            hash_legacy(legacy_id, secret),
            format!("legacy:{legacy_id}"),
            true,
        )
        .await
    }

    async fn insert_key(
        &self,
        new: NewKey,
        hash: KeyHash,
        display: String,
        legacy: bool,
    ) -> Result<KeyRecord, StoreError> {
        let owner = self.check_new_key(&new).await?;
        let record = key_record(&owner, new, hash, display, legacy);
        let index = self.name(format_args!("credential:{hash}"));
        self.ensure_absent("credential", &record.display, &index)
            .await?;
        let mut pipe = redis::pipe();
        let indexes = self.add_key_writes(&mut pipe, &record);
        let details = json!({
            "user_id": record.grant.user_id, "name": record.name, "scopes": record.grant.scopes,
            "project_ids": record.grant.project_ids, "expires_at": record.grant.expires_at, "legacy": legacy,
        });
        // A replica may hold a negative entry for this credential.
        let action = if legacy {
            "key.import_legacy"
        } else {
            "key.create"
        };
        self.commit_ordered(
            indexes.into(),
            pipe,
            Vec::new(),
            key_change(&record, action, details),
        )
        .await?;
        Ok(record)
    }

    /// Adds the writes that store a new key to its org's transaction; returns the ones outside
    /// the org's slot, written before it: the indexes by credential and by key id.
    fn add_key_writes(&self, pipe: &mut redis::Pipeline, record: &KeyRecord) -> [redis::Cmd; 2] {
        let (id, org) = (record.grant.id.as_str(), Tag(&record.grant.org_id));
        pipe.hset_multiple(
            self.name(format_args!("{org}:key:{id}")),
            &record.to_fields(),
        )
        .ignore()
        .sadd(
            self.name(format_args!("{org}:member:{}:keys", record.grant.user_id)),
            id,
        )
        .ignore()
        .sadd(self.name(format_args!("{org}:keys")), id)
        .ignore();
        let mut by_credential = redis::cmd("SET");
        by_credential
            .arg(self.name(format_args!("credential:{}", record.grant.hash)))
            .arg(self.credential_ref(record));
        let mut by_id = redis::cmd("SET");
        by_id
            .arg(self.name(format_args!("keyorg:{id}")))
            .arg(record.grant.org_id.as_str());
        [by_credential, by_id]
    }

    /// What a credential's index holds: `{org}/{key id}`.
    fn credential_ref(&self, key: &KeyRecord) -> String {
        format!("{}/{}", key.grant.org_id, key.grant.id)
    }

    /// Creates `count` keys like `new` (for seeding benchmarks and migrations): the rules are
    /// checked once, and keys are written in pipelined transactions of 1,000, each audited as
    /// one `key.create_many`. No invalidation is published: no replica can hold an entry for a
    /// credential that was just generated.
    pub async fn create_keys(
        &self,
        format: &KeyFormat,
        new: NewKey,
        count: usize,
    ) -> Result<Vec<String>, StoreError> {
        const BATCH: usize = 1_000;
        let owner = self.check_new_key(&new).await?;
        let mut secrets = Vec::with_capacity(count);
        while secrets.len() < count {
            let (mut pipe, mut indexes) = (redis::pipe(), Vec::new());
            let batch = BATCH.min(count - secrets.len());
            for _ in 0..batch {
                let secret = format.generate();
                let record = key_record(
                    &owner,
                    new.clone(),
                    hash_key(&secret),
                    format.mask(&secret),
                    false,
                );
                indexes.extend(self.add_key_writes(&mut pipe, &record));
                secrets.push(secret);
            }
            let change = Change {
                org: &owner.org_id,
                action: "key.create_many",
                target: format!("user:{}", owner.id),
                details: json!({ "count": batch, "name": new.name, "scopes": new.scopes }),
                invalidations: Vec::new(),
            };
            self.commit_ordered(indexes, pipe, Vec::new(), change)
                .await?;
        }
        Ok(secrets)
    }

    pub async fn key(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        let mut c = self.conn().await?;
        let index = self.name(format_args!("keyorg:{id}"));
        let org: Option<String> = self
            .bounded(async { Ok(redis::cmd("GET").arg(index).query_async(&mut c).await?) })
            .await?;
        let org = OrgId::from(org.unwrap_or_default());
        let key = self.name(format_args!("{}:key:{id}", Tag(&org)));
        self.record("key", id.as_str(), key, KeyRecord::from_fields)
            .await
    }

    /// Keys of an org, or of one user, newest first.
    pub async fn keys(
        &self,
        org: &OrgId,
        user: Option<&UserId>,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let set = match user {
            Some(u) => self.name(format_args!("{}:member:{u}:keys", Tag(org))),
            None => self.name(format_args!("{}:keys", Tag(org))),
        };
        let mut out = Vec::new();
        for ids in self.members(set).await?.chunks(LIST_BATCH) {
            let mut pipe = redis::pipe();
            for id in ids {
                pipe.hgetall(self.name(format_args!("{}:key:{id}", Tag(org))));
            }
            let mut c = self.conn().await?;
            let records: Vec<Fields> = self
                .bounded(async { Ok(pipe.query_async(&mut c).await?) })
                .await?;
            for fields in records.iter().filter(|f| !f.is_empty()) {
                let key = KeyRecord::from_fields(fields)?;
                if &key.grant.org_id == org {
                    out.push(key);
                }
            }
        }
        out.sort_by(|a, b| {
            b.grant
                .created_at
                .cmp(&a.grant.created_at)
                .then(a.grant.id.cmp(&b.grant.id))
        });
        Ok(out)
    }

    /// Writes some fields of a key, audited as `action`, and tells every replica.
    async fn update_key_fields(
        &self,
        key: &KeyRecord,
        fields: &[(&str, String)],
        action: &'static str,
    ) -> Result<(), StoreError> {
        let details: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let mut pipe = redis::pipe();
        let name = self.name(format_args!(
            "{}:key:{}",
            Tag(&key.grant.org_id),
            key.grant.id
        ));
        pipe.hset_multiple(name, fields).ignore();
        self.commit(pipe, key_change(key, action, details.into()))
            .await
    }

    /// Revokes or re-activates a key.
    pub async fn set_key_status(
        &self,
        id: &KeyId,
        status: KeyStatus,
    ) -> Result<KeyRecord, StoreError> {
        let mut key = self.key(id).await?;
        key.grant.status = status;
        let action = match status {
            KeyStatus::Active => "key.activate",
            KeyStatus::Revoked => "key.revoke",
        };
        self.update_key_fields(&key, &[("status", status.to_string())], action)
            .await?;
        Ok(key)
    }

    /// Revokes the key a leaked `secret` belongs to (its current secret, or one rotated out),
    /// audited as the secret's holder: whoever holds a secret may stop it, as the large token
    /// issuers let anyone who finds a leaked token do.
    pub async fn revoke_by_secret(
        &self,
        format: &KeyFormat,
        secret: &str,
    ) -> Result<KeyRecord, StoreError> {
        let credential = format.parse(secret.trim()).map_err(|_| {
            StoreError::Rejected("that is not an API key of this deployment".into())
        })?;
        let principal =
            self.resolve_key(credential.hash())
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    kind: "key",
                    id: format.mask(secret.trim()),
                })?;
        let holder = Actor {
            who: "secret-holder".into(),
            key_id: Some(principal.key.id.clone()),
            request_id: self.actor.request_id.clone(),
        };
        self.acting_as(holder)
            .set_key_status(&principal.key.id, KeyStatus::Revoked)
            .await
    }

    pub async fn rename_key(&self, id: &KeyId, name: &str) -> Result<KeyRecord, StoreError> {
        check_name(name)?;
        let mut key = self.key(id).await?;
        key.name = name.to_owned();
        self.update_key_fields(&key, &[("name", key.name.clone())], "key.rename")
            .await?;
        Ok(key)
    }

    /// Replaces a key's scopes; they must stay within its owner's role ceiling.
    pub async fn set_key_scopes(
        &self,
        id: &KeyId,
        mut scopes: Vec<Scope>,
    ) -> Result<KeyRecord, StoreError> {
        let mut key = self.key(id).await?;
        let owner = self.member(&key.grant.org_id, &key.grant.user_id).await?;
        check_scopes(&owner, &scopes)?;
        scopes.sort();
        scopes.dedup();
        key.grant.scopes = scopes;
        let fields = [("scopes", join(&key.grant.scopes))];
        self.update_key_fields(&key, &fields, "key.set_scopes")
            .await?;
        Ok(key)
    }

    /// Replaces the projects a key is restricted to (empty: any project its owner may use);
    /// each must exist in the key's org.
    pub async fn set_key_projects(
        &self,
        id: &KeyId,
        mut projects: Vec<ProjectId>,
    ) -> Result<KeyRecord, StoreError> {
        let mut key = self.key(id).await?;
        for project in &projects {
            self.existing_project(&key.grant.org_id, project).await?;
        }
        projects.sort();
        projects.dedup();
        key.grant.project_ids = projects;
        let fields = [("project_ids", join(&key.grant.project_ids))];
        self.update_key_fields(&key, &fields, "key.set_projects")
            .await?;
        Ok(key)
    }

    /// Gives a key a new secret (returned once). The old secret keeps working for `grace`, then
    /// is answered `key_rotated`; a secret rotated out earlier stops at once. A legacy pair
    /// rotated this way becomes an ordinary key. The new secret is a created key like any other:
    /// one that never expired (a legacy pair, or a key made when keys could live for ever) gets
    /// `validity` from now, unless keys may live for ever (`None`).
    pub async fn rotate_key(
        &self,
        format: &KeyFormat,
        id: &KeyId,
        grace: Duration,
        validity: Option<Duration>,
    ) -> Result<CreatedKey, StoreError> {
        if grace > MAX_ROTATION_GRACE {
            let max = humantime::format_duration(MAX_ROTATION_GRACE);
            return Err(StoreError::Rejected(format!(
                "`grace_period`: at most {max}"
            )));
        }
        let mut key = self.key(id).await?;
        if key.grant.status == KeyStatus::Revoked {
            return Err(StoreError::KeyRevoked);
        }
        let before = key.clone();
        let secret = format.generate();
        key.grant.previous_hash = Some(key.grant.hash);
        key.grant.previous_expires_at = Some(unix_now() + grace.as_secs());
        key.grant.hash = hash_key(&secret);
        key.display = format.mask(&secret);
        key.legacy = false;
        if key.grant.expires_at.is_none() {
            key.grant.expires_at = validity.map(|v| unix_now().saturating_add(v.as_secs()));
        }
        let fields = [
            ("hash", key.grant.hash.to_hex()),
            ("display", key.display.clone()),
            ("legacy", "0".to_owned()),
            ("previous_hash", before.grant.hash.to_hex()),
            (
                "previous_expires_at",
                key.grant.previous_expires_at.unwrap_or(0).to_string(),
            ),
            ("expires_at", key.grant.expires_at.unwrap_or(0).to_string()),
        ];
        let mut pipe = redis::pipe();
        pipe.hset_multiple(
            self.name(format_args!("{}:key:{id}", Tag(&key.grant.org_id))),
            &fields,
        )
        .ignore();
        // The new secret's index before the record names it; the oldest secret's after.
        let mut new_index = redis::cmd("SET");
        new_index
            .arg(self.name(format_args!("credential:{}", key.grant.hash)))
            .arg(self.credential_ref(&key));
        let stale = before.grant.previous_hash.map(|stale| {
            let mut gone = redis::cmd("DEL");
            gone.arg(self.name(format_args!("credential:{stale}")));
            gone
        });
        let details = json!({ "grace_period_secs": grace.as_secs(), "display": key.display });
        // Cached entries under the old secrets must be re-read (the current one gets its grace
        // deadline; an older one stops).
        let change = key_change(&before, "key.rotate", details);
        self.commit_ordered(vec![new_index], pipe, stale.into_iter().collect(), change)
            .await?;
        Ok(CreatedKey {
            record: key,
            secret,
        })
    }

    /// Deletes a revoked key entirely.
    pub async fn delete_key(&self, id: &KeyId) -> Result<(), StoreError> {
        let key = self.key(id).await?;
        if key.grant.status != KeyStatus::Revoked {
            return Err(StoreError::KeyNotRevoked);
        }
        let org = Tag(&key.grant.org_id);
        let mut pipe = redis::pipe();
        pipe.del(self.name(format_args!("{org}:key:{id}")))
            .ignore()
            .srem(
                self.name(format_args!("{org}:member:{}:keys", key.grant.user_id)),
                id.as_str(),
            )
            .ignore()
            .srem(self.name(format_args!("{org}:keys")), id.as_str())
            .ignore();
        // The indexes go after the record: until then they lead to it.
        let mut indexes = redis::cmd("DEL");
        indexes.arg(self.name(format_args!("keyorg:{id}")));
        let mut gone = vec![indexes];
        for hash in std::iter::once(key.grant.hash).chain(key.grant.previous_hash) {
            let mut del = redis::cmd("DEL");
            del.arg(self.name(format_args!("credential:{hash}")));
            gone.push(del);
        }
        self.commit_ordered(
            Vec::new(),
            pipe,
            gone,
            key_change(&key, "key.delete", json!({})),
        )
        .await
    }
}
