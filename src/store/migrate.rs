//! Moving a store written by an older keygate to the layout this one reads
//! ([`SCHEMA_VERSION`], described in the store module).
//!
//! Layout 1 (keygate before 2026-12-05, no `schema` record): `org:{org}` (hash),
//! `org:{org}:users|projects|keys` (sets), `org:{org}:audit` (stream), `user:{user}` (hash with
//! `org_id`, `name`, `role`, `status`, `created_at`), `user:{user}:keys`, `project:{org}:{project}`
//! and its `:members`, `key:{key}` and `keyhash:{sha256}` (the key id). Layout 2 puts each org's
//! records under its hash tag, splits a user into an account and a membership, and indexes each
//! credential by `{org}/{key id}`.
//!
//! [`Store::migrate`] takes three steps, each safe to run again, so a migration that stopped
//! anywhere (a crash, a lost connection) is finished by running it again:
//! 1. copy each org's records to their layout-2 names, one transaction per org (a copy
//!    overwrites with the same values; audit entries already copied are skipped by id);
//! 2. mark the store as layout 2: from here on keygate serves it;
//! 3. delete the layout-1 records (`SCAN` by their name patterns, which no layout-2 name matches).
//!
//! Every replica must be stopped during steps 1 and 2 (an old replica would write layout 1).
//! Keys, their secrets' hashes, rotations in their grace period, legacy pairs, usage counts and
//! the audit log carry over unchanged.

use serde::Serialize;

use super::codec::Fields;
use super::{SCHEMA_VERSION, Store, StoreError, Tag};
use crate::model::{KeyRecord, OrgId};

/// What a migration did, or with `dry_run`, would do.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The layout found: 0 for an empty store.
    pub from: u32,
    pub to: u32,
    pub dry_run: bool,
    pub orgs: usize,
    pub users: usize,
    pub projects: usize,
    pub keys: usize,
    /// Indexed secrets: one per key, two for a key in a rotation's grace period.
    pub credentials: usize,
    pub audit_entries: usize,
    /// Layout-1 records deleted (or to delete).
    pub removed: usize,
}

/// The name patterns of layout 1 (after the namespace), which no layout-2 name matches.
const LAYOUT_1: [&str; 5] = ["org:*", "user:*", "project:*", "key:*", "keyhash:*"];

impl Store {
    /// Moves the store to [`SCHEMA_VERSION`]; see the module. Refuses a store of a newer layout.
    pub async fn migrate(&self, dry_run: bool) -> Result<Report, StoreError> {
        if self.link.is_cluster() {
            return Err(StoreError::Rejected(
                "migrate works on one Redis (a layout-1 store was never on a Cluster): migrate it there, then move the data to the Cluster".into(),
            ));
        }
        let mut report = Report {
            dry_run,
            to: SCHEMA_VERSION,
            ..Report::default()
        };
        let version: Option<u32> = self.query(redis::cmd("GET").arg(self.schema_key())).await?;
        let orgs = self.members(self.name(format_args!("orgs"))).await?;
        report.from = match version {
            Some(v) => v,
            None if orgs.is_empty() => 0,
            None => 1,
        };
        if report.from > SCHEMA_VERSION {
            return self.check_schema().await.map(|()| report);
        }
        if report.from < SCHEMA_VERSION {
            for org in &orgs {
                self.copy_org(&OrgId::from(org.as_str()), &mut report)
                    .await?;
            }
            if !dry_run {
                let _: () = self
                    .query(redis::cmd("SET").arg(self.schema_key()).arg(SCHEMA_VERSION))
                    .await?;
            }
        }
        report.removed = self.remove_layout_1(dry_run).await?;
        Ok(report)
    }

    fn schema_key(&self) -> String {
        self.name(format_args!("schema"))
    }

    /// One command, bounded by the command timeout.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut c = self.conn().await?;
        self.bounded(async { Ok(cmd.query_async(&mut c).await?) })
            .await
    }

    /// Step 1 for one org: reads its layout-1 records and writes them under layout-2 names in one
    /// transaction (unless `report.dry_run`), counting them in `report`.
    async fn copy_org(&self, org: &OrgId, report: &mut Report) -> Result<(), StoreError> {
        let tag = Tag(org);
        let mut pipe = redis::pipe();
        pipe.atomic();
        let old = self
            .hash_or_empty(self.name(format_args!("org:{org}")))
            .await?;
        hset(&mut pipe, self.name(format_args!("{tag}:org")), &old);
        report.orgs += 1;

        for user in self
            .members(self.name(format_args!("org:{org}:users")))
            .await?
        {
            let mut f = self
                .hash_or_empty(self.name(format_args!("user:{user}")))
                .await?;
            let name = f.remove("name").unwrap_or_default();
            let created = f.get("created_at").cloned().unwrap_or_default();
            pipe.hset_multiple(
                self.name(format_args!("account:{user}")),
                &[
                    ("name", name),
                    ("status", "active".to_owned()),
                    ("created_at", created),
                ],
            )
            .ignore()
            .sadd(self.name(format_args!("account:{user}:orgs")), org.as_str())
            .ignore()
            .sadd(self.name(format_args!("{tag}:members")), &user)
            .ignore();
            hset(
                &mut pipe,
                self.name(format_args!("{tag}:member:{user}")),
                &f,
            );
            let keys = self
                .members(self.name(format_args!("user:{user}:keys")))
                .await?;
            if !keys.is_empty() {
                pipe.sadd(self.name(format_args!("{tag}:member:{user}:keys")), keys)
                    .ignore();
            }
            report.users += 1;
        }

        for project in self
            .members(self.name(format_args!("org:{org}:projects")))
            .await?
        {
            let old = self.name(format_args!("project:{org}:{project}"));
            let f = self.hash_or_empty(old.clone()).await?;
            let members = self.members(format!("{old}:members")).await?;
            let new = self.name(format_args!("{tag}:project:{project}"));
            hset(&mut pipe, new.clone(), &f);
            if !members.is_empty() {
                pipe.sadd(format!("{new}:members"), members).ignore();
            }
            pipe.sadd(self.name(format_args!("{tag}:projects")), &project)
                .ignore();
            report.projects += 1;
        }

        for id in self
            .members(self.name(format_args!("org:{org}:keys")))
            .await?
        {
            let f = self
                .hash_or_empty(self.name(format_args!("key:{id}")))
                .await?;
            if f.is_empty() {
                continue;
            }
            let key = KeyRecord::from_fields(&f)?;
            let reference = format!("{org}/{id}");
            pipe.hset_multiple(self.name(format_args!("{tag}:key:{id}")), &pairs(&f))
                .ignore()
                .set(self.name(format_args!("keyorg:{id}")), org.as_str())
                .ignore()
                .sadd(self.name(format_args!("{tag}:keys")), &id)
                .ignore();
            for hash in std::iter::once(key.grant.hash).chain(key.grant.previous_hash) {
                pipe.set(self.name(format_args!("credential:{hash}")), &reference)
                    .ignore();
                report.credentials += 1;
            }
            report.keys += 1;
        }

        // The audit log: entries the new stream does not have yet, with their ids.
        let new_stream = self.name(format_args!("{tag}:audit"));
        let last: Vec<(String, Vec<String>)> = self
            .query(
                redis::cmd("XREVRANGE")
                    .arg(&new_stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1),
            )
            .await?;
        let start = last
            .first()
            .map_or("-".to_owned(), |(id, _)| format!("({id}"));
        let entries: Vec<(String, Vec<String>)> = self
            .query(
                redis::cmd("XRANGE")
                    .arg(self.name(format_args!("org:{org}:audit")))
                    .arg(start)
                    .arg("+"),
            )
            .await?;
        for (id, flat) in &entries {
            let mut add = redis::cmd("XADD");
            add.arg(&new_stream).arg(id).arg(flat);
            pipe.add_command(add).ignore();
        }
        report.audit_entries += entries.len();

        if !report.dry_run {
            let _: () = self.query_pipe(&pipe).await?;
        }
        Ok(())
    }

    async fn query_pipe(&self, pipe: &redis::Pipeline) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        self.bounded(async { Ok(pipe.query_async::<()>(&mut c).await?) })
            .await
    }

    async fn hash_or_empty(&self, key: String) -> Result<Fields, StoreError> {
        Ok(self.hash(key).await?.unwrap_or_default())
    }

    /// Step 3: deletes (or with `dry_run`, counts) the records of layout 1.
    async fn remove_layout_1(&self, dry_run: bool) -> Result<usize, StoreError> {
        let mut removed = 0;
        for pattern in LAYOUT_1 {
            let pattern = self.name(format_args!("{pattern}"));
            let mut cursor = 0u64;
            loop {
                let (next, names): (u64, Vec<String>) = self
                    .query(
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(1000),
                    )
                    .await?;
                removed += names.len();
                if !dry_run && !names.is_empty() {
                    let _: () = self.query(redis::cmd("UNLINK").arg(names)).await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }
}

/// A hash's fields as `HSET` arguments.
fn pairs(f: &Fields) -> Vec<(&str, &str)> {
    f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Writes `fields` to the hash `name`, when there are any (`HSET` needs one).
fn hset(pipe: &mut redis::Pipeline, name: String, fields: &Fields) {
    if !fields.is_empty() {
        pipe.hset_multiple(name, &pairs(fields)).ignore();
    }
}
