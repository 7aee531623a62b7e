//! Keys: create (secret returned once), import legacy pairs, list, revoke/activate, rename,
//! change scopes, delete.
//!
//! Shared by the bootstrap CLI and the HTTP management API. Rules enforced here, once: the owner
//! exists, is active and is not a guest; scopes are well formed and within the owner's role
//! ceiling; restricted projects exist in the owner's org; an expiry is at least a minute away;
//! only revoked keys can be deleted. Every write publishes `key:{hash}` in its transaction.

use super::directory::{check_name, new_id};
use super::model::{
    KeyId, KeyRecord, KeyStatus, OrgId, ProjectId, Role, User, UserId, UserStatus, unix_now,
};
use super::{Invalidation, Store, StoreError};
use crate::credential::{KeyFormat, KeyHash, hash_legacy};
use crate::policy::{Scope, role_allows};

/// Shortest validity a key may be created with, in seconds.
pub const MIN_VALIDITY_SECS: u64 = 60;

/// What a caller asks for when creating a key.
#[derive(Clone, Debug)]
pub struct NewKey {
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
        if !role_allows(owner.role, scope) {
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
        id: KeyId(new_id("key")),
        org_id: owner.org_id.clone(),
        user_id: owner.id.clone(),
        name: new.name,
        scopes: new.scopes,
        project_ids: new.project_ids,
        status: KeyStatus::Active,
        created_at: unix_now(),
        expires_at: new.expires_at,
        display,
        legacy,
        hash: hash.to_hex(),
    }
}

impl Store {
    /// Checks a new key's owner, scopes, projects and expiry; returns the owner.
    async fn check_new_key(&self, new: &NewKey) -> Result<User, StoreError> {
        let owner = self.user(&new.user_id).await?;
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
        let (hash, masked) = (crate::credential::hash_key(&secret), format.mask(&secret));
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
        if legacy_id.is_empty() || secret.len() < 8 {
            return Err(StoreError::Rejected(
                "a legacy pair needs an id and a secret of at least 8 characters".into(),
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
        let index = self.name(format_args!("keyhash:{}", record.hash));
        self.ensure_absent("credential", &record.display, &index)
            .await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        self.add_key_writes(&mut pipe, &record);
        // A replica may hold a negative entry for this credential.
        self.publish(&mut pipe, &Invalidation::Key(record.hash.clone()));
        self.transaction(&pipe).await?;
        Ok(record)
    }

    /// Adds the writes that store a new key to a transaction.
    fn add_key_writes(&self, pipe: &mut redis::Pipeline, record: &KeyRecord) {
        let id = record.id.as_str();
        pipe.hset_multiple(self.name(format_args!("key:{id}")), &record.to_fields())
            .ignore()
            .set(self.name(format_args!("keyhash:{}", record.hash)), id)
            .ignore()
            .sadd(self.name(format_args!("user:{}:keys", record.user_id)), id)
            .ignore()
            .sadd(self.name(format_args!("org:{}:keys", record.org_id)), id)
            .ignore();
    }

    /// Creates `count` keys like `new` (for seeding benchmarks and migrations): the rules are
    /// checked once, and keys are written in pipelined transactions of 1,000. No invalidation is
    /// published: no replica can hold an entry for a credential that was just generated.
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
            let mut pipe = redis::pipe();
            pipe.atomic();
            for _ in 0..BATCH.min(count - secrets.len()) {
                let secret = format.generate();
                let hash = crate::credential::hash_key(&secret);
                let record = key_record(&owner, new.clone(), hash, format.mask(&secret), false);
                self.add_key_writes(&mut pipe, &record);
                secrets.push(secret);
            }
            self.transaction(&pipe).await?;
        }
        Ok(secrets)
    }

    pub async fn key(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        let key = self.name(format_args!("key:{id}"));
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
            Some(u) => self.name(format_args!("user:{u}:keys")),
            None => self.name(format_args!("org:{org}:keys")),
        };
        let mut out = Vec::new();
        for id in self.members(set).await? {
            let key = self.key(&KeyId(id)).await?;
            if &key.org_id == org {
                out.push(key);
            }
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Writes some fields of a key and tells every replica.
    async fn update_key_fields(
        &self,
        key: &KeyRecord,
        fields: &[(&str, String)],
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(self.name(format_args!("key:{}", key.id)), fields)
            .ignore();
        self.publish(&mut pipe, &Invalidation::Key(key.hash.clone()));
        self.transaction(&pipe).await
    }

    /// Revokes or re-activates a key.
    pub async fn set_key_status(
        &self,
        id: &KeyId,
        status: KeyStatus,
    ) -> Result<KeyRecord, StoreError> {
        let mut key = self.key(id).await?;
        key.status = status;
        self.update_key_fields(&key, &[("status", status.to_string())])
            .await?;
        Ok(key)
    }

    pub async fn rename_key(&self, id: &KeyId, name: &str) -> Result<KeyRecord, StoreError> {
        check_name(name)?;
        let mut key = self.key(id).await?;
        key.name = name.to_owned();
        self.update_key_fields(&key, &[("name", key.name.clone())])
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
        let owner = self.user(&key.user_id).await?;
        check_scopes(&owner, &scopes)?;
        scopes.sort();
        scopes.dedup();
        key.scopes = scopes;
        self.update_key_fields(&key, &[("scopes", super::model::join(&key.scopes))])
            .await?;
        Ok(key)
    }

    /// Deletes a revoked key entirely.
    pub async fn delete_key(&self, id: &KeyId) -> Result<(), StoreError> {
        let key = self.key(id).await?;
        if key.status != KeyStatus::Revoked {
            return Err(StoreError::KeyNotRevoked);
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(self.name(format_args!("key:{id}")))
            .ignore()
            .del(self.name(format_args!("keyhash:{}", key.hash)))
            .ignore()
            .srem(
                self.name(format_args!("user:{}:keys", key.user_id)),
                id.as_str(),
            )
            .ignore()
            .srem(
                self.name(format_args!("org:{}:keys", key.org_id)),
                id.as_str(),
            )
            .ignore();
        self.publish(&mut pipe, &Invalidation::Key(key.hash.clone()));
        self.transaction(&pipe).await
    }
}
