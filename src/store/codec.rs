//! The Redis field codec: records to and from the hash fields they are stored as.
//!
//! Owns: field names, their encoding (ids as slugs, lists space-separated, times as Unix seconds
//! with 0 for "none") and the refusal of any field that does not parse. Does not own: Redis key
//! names or commands (`store`), or the records themselves (`model`).

use std::collections::BTreeMap;
use std::fmt;

use crate::model::{
    Account, Invitation, KeyGrant, KeyHash, KeyRecord, MAX_TIME, Org, OrgId, Owner, Project,
    ProjectId, ProjectStatus, Scope, User, UserId, is_valid_id,
};

/// A Redis hash read back as field → value. A B-tree, not a hash map: records have a dozen
/// fields, and comparing short names costs less than SipHash-ing them. (The request path's key
/// lookup reads its records without building one: [`Values`].)
pub type Fields = BTreeMap<String, String>;

/// A field was missing or malformed in a stored record: the store is corrupt or from a newer version.
#[derive(Debug, thiserror::Error)]
#[error("stored record is missing or has a bad `{0}` field")]
pub struct BadRecord(pub &'static str);

/// Where a stored record's fields are read from: a map (`HGETALL`), or the values `HMGET`
/// returned for a list of names ([`Values`]).
pub trait Record {
    fn get(&self, name: &str) -> Option<&str>;
}

impl Record for Fields {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

/// `HMGET`'s answer for `names`: their values in the same order, `None` for an absent field.
/// Borrowed from the reply where the key lookup reads it.
pub struct Values<'a, S> {
    pub names: &'a [&'static str],
    pub values: &'a [Option<S>],
}

impl<S: AsRef<str>> Record for Values<'_, S> {
    fn get(&self, name: &str) -> Option<&str> {
        let i = self.names.iter().position(|n| *n == name)?;
        self.values.get(i)?.as_ref().map(AsRef::as_ref)
    }
}

fn field<'a>(f: &'a (impl Record + ?Sized), name: &'static str) -> Result<&'a str, BadRecord> {
    f.get(name).ok_or(BadRecord(name))
}

fn parsed<T: std::str::FromStr>(
    f: &(impl Record + ?Sized),
    name: &'static str,
) -> Result<T, BadRecord> {
    field(f, name)?.parse().map_err(|_| BadRecord(name))
}

/// A number that may be absent (written later than the record, or never): 0 then.
fn count(f: &(impl Record + ?Sized), name: &'static str) -> Result<u64, BadRecord> {
    f.get(name)
        .map_or(Ok(0), |v| v.parse().map_err(|_| BadRecord(name)))
}

/// A hash that may be absent or empty.
fn optional_hash(
    f: &(impl Record + ?Sized),
    name: &'static str,
) -> Result<Option<KeyHash>, BadRecord> {
    match f.get(name) {
        None | Some("") => Ok(None),
        Some(hex) => KeyHash::from_hex(hex).map(Some).ok_or(BadRecord(name)),
    }
}

/// An id field: must be a slug, so it is safe in headers and key names whoever wrote Redis.
fn slug<T: for<'a> From<&'a str>>(
    f: &(impl Record + ?Sized),
    name: &'static str,
) -> Result<T, BadRecord> {
    let value = field(f, name)?;
    is_valid_id(value)
        .then(|| T::from(value))
        .ok_or(BadRecord(name))
}

/// A space-separated list whose every item passes `valid`. The field must be there, even when
/// empty: a list that limits what a key may do must never widen it by going missing.
fn list<T>(
    f: &(impl Record + ?Sized),
    name: &'static str,
    valid: fn(&str) -> bool,
    make: fn(&str) -> T,
) -> Result<Vec<T>, BadRecord> {
    let items = field(f, name)?.split_whitespace();
    items
        .map(|x| valid(x).then(|| make(x)).ok_or(BadRecord(name)))
        .collect()
}

/// Joins a list of ids or scopes the way records store them (space-separated).
pub fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Org {
    pub fn from_fields(id: OrgId, f: &Fields) -> Result<Self, BadRecord> {
        Ok(Org {
            id,
            name: field(f, "name")?.to_owned(),
            created_at: parsed(f, "created_at")?,
        })
    }
}

impl Owner {
    /// The fields [`Owner::from_fields`] reads: what the request path's key lookup asks Redis for.
    pub const FIELDS: [&'static str; 3] = ["org_id", "role", "status"];

    pub fn from_fields(id: UserId, f: &(impl Record + ?Sized)) -> Result<Self, BadRecord> {
        Ok(Owner {
            id,
            org_id: slug(f, "org_id")?,
            role: parsed(f, "role")?,
            status: parsed(f, "status")?,
        })
    }
}

impl User {
    /// From a membership's fields and the account's `name`.
    pub fn from_fields(id: UserId, f: &(impl Record + ?Sized)) -> Result<Self, BadRecord> {
        let Owner {
            id,
            org_id,
            role,
            status,
        } = Owner::from_fields(id, f)?;
        Ok(User {
            id,
            org_id,
            name: field(f, "name")?.to_owned(),
            role,
            status,
            created_at: parsed(f, "created_at")?,
        })
    }

    /// The membership's fields (the name is the account's).
    pub fn membership_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("org_id", self.org_id.to_string()),
            ("role", self.role.to_string()),
            ("status", self.status.to_string()),
            ("created_at", self.created_at.to_string()),
        ]
    }
}

impl Account {
    pub fn from_fields(id: UserId, f: &Fields, org_ids: Vec<OrgId>) -> Result<Self, BadRecord> {
        Ok(Account {
            id,
            name: field(f, "name")?.to_owned(),
            status: parsed(f, "status")?,
            created_at: parsed(f, "created_at")?,
            org_ids,
        })
    }
}

impl Invitation {
    pub fn from_fields(id: String, org_id: OrgId, f: &Fields) -> Result<Self, BadRecord> {
        Ok(Invitation {
            id,
            org_id,
            user_id: slug(f, "user_id")?,
            role: parsed(f, "role")?,
            created_at: parsed(f, "created_at")?,
            expires_at: parsed(f, "expires_at")?,
        })
    }
}

impl Project {
    pub fn from_fields(id: ProjectId, f: &Fields, members: Vec<UserId>) -> Result<Self, BadRecord> {
        Ok(Project {
            id,
            org_id: slug(f, "org_id")?,
            name: field(f, "name")?.to_owned(),
            visibility: parsed(f, "visibility")?,
            members,
            // Projects written before projects could be archived have no status: active.
            status: match f.get("status") {
                None => ProjectStatus::Active,
                Some(_) => parsed(f, "status")?,
            },
            created_at: parsed(f, "created_at")?,
        })
    }
}

impl KeyGrant {
    /// The fields [`KeyGrant::from_fields`] reads: what the request path's key lookup asks Redis
    /// for (`Store::resolve_key`, whose script reads `id` and `user_id` by position).
    pub const FIELDS: [&'static str; 11] = [
        "id",
        "user_id",
        "org_id",
        "scopes",
        "project_ids",
        "status",
        "created_at",
        "expires_at",
        "hash",
        "previous_hash",
        "previous_expires_at",
    ];

    pub fn from_fields(f: &(impl Record + ?Sized)) -> Result<Self, BadRecord> {
        let expires_at = time(f, "expires_at")?;
        Ok(KeyGrant {
            id: slug(f, "id")?,
            org_id: slug(f, "org_id")?,
            user_id: slug(f, "user_id")?,
            scopes: list(f, "scopes", Scope::is_well_formed, Scope::new)?,
            project_ids: list(f, "project_ids", is_valid_id, |p| ProjectId::from(p))?,
            status: parsed(f, "status")?,
            created_at: parsed(f, "created_at")?,
            expires_at: nonzero(expires_at),
            hash: KeyHash::from_hex(field(f, "hash")?).ok_or(BadRecord("hash"))?,
            previous_hash: optional_hash(f, "previous_hash")?,
            previous_expires_at: optional_time(f, "previous_expires_at")?,
        })
    }
}

/// Times stored as 0 for "none".
fn nonzero(n: u64) -> Option<u64> {
    (n != 0).then_some(n)
}

/// A time (Unix seconds) no later than [`MAX_TIME`]: past it, no date can show it.
fn time(f: &(impl Record + ?Sized), name: &'static str) -> Result<u64, BadRecord> {
    let t: u64 = parsed(f, name)?;
    (t <= MAX_TIME).then_some(t).ok_or(BadRecord(name))
}

/// A time that may be absent (0 then), no later than [`MAX_TIME`].
fn optional_time(f: &(impl Record + ?Sized), name: &'static str) -> Result<Option<u64>, BadRecord> {
    let t = count(f, name)?;
    (t <= MAX_TIME).then_some(nonzero(t)).ok_or(BadRecord(name))
}

impl KeyRecord {
    pub fn from_fields(f: &(impl Record + ?Sized)) -> Result<Self, BadRecord> {
        Ok(KeyRecord {
            grant: KeyGrant::from_fields(f)?,
            name: field(f, "name")?.to_owned(),
            display: field(f, "display")?.to_owned(),
            legacy: field(f, "legacy")? == "1",
            last_used_at: optional_time(f, "last_used_at")?,
            request_count: count(f, "request_count")?,
        })
    }

    /// The fields a key is created with. Usage (`last_used_at`, `request_count`) is written
    /// only by the usage flusher, and rotation fields only by a rotation.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let key = &self.grant;
        vec![
            ("id", key.id.to_string()),
            ("org_id", key.org_id.to_string()),
            ("user_id", key.user_id.to_string()),
            ("name", self.name.clone()),
            ("scopes", join(&key.scopes)),
            ("project_ids", join(&key.project_ids)),
            ("status", key.status.to_string()),
            ("created_at", key.created_at.to_string()),
            ("expires_at", key.expires_at.unwrap_or(0).to_string()),
            ("display", self.display.clone()),
            ("legacy", if self.legacy { "1" } else { "0" }.to_owned()),
            ("hash", key.hash.to_hex()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{KeyId, KeyStatus};

    #[test]
    fn key_record_round_trips_through_fields() {
        let key = KeyRecord {
            grant: KeyGrant {
                id: KeyId::from("key_1"),
                org_id: OrgId::from("acme"),
                // Ids up to 24 bytes are stored inline, longer ones on the heap: both kinds.
                user_id: UserId::from("u".repeat(64)),
                scopes: vec![Scope::new("predict"), Scope::new("models:*")],
                project_ids: vec![ProjectId::from("p1")],
                status: KeyStatus::Active,
                created_at: 10,
                expires_at: None,
                hash: KeyHash([0xab; 32]),
                previous_hash: None,
                previous_expires_at: None,
            },
            name: "laptop key".into(),
            display: "kg_AbCd…wxyz".into(),
            legacy: false,
            last_used_at: None,
            request_count: 0,
        };
        let fields: Fields = key
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(KeyRecord::from_fields(&fields).unwrap(), key);
    }

    #[test]
    fn records_from_redis_must_be_header_safe() {
        let good: Fields = [
            ("id", "key_1"),
            ("org_id", "acme"),
            ("user_id", "u1"),
            ("name", "n"),
            ("scopes", "predict"),
            ("project_ids", ""),
            ("status", "active"),
            ("created_at", "1"),
            ("expires_at", "0"),
            ("display", "kg_…"),
            ("legacy", "0"),
            ("hash", &"ab".repeat(32)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert!(KeyRecord::from_fields(&good).is_ok());
        for (field, bad) in [
            ("user_id", "u1\r\nx-evil: 1"),
            ("org_id", "a b"),
            ("scopes", "predict Bad\u{7f}"),
            ("project_ids", "p/1"),
            ("hash", "ab"),
            ("previous_hash", "zz"),
            ("request_count", "-1"),
            // Past the year 9999: no date can show it.
            ("expires_at", "253402300800"),
            ("last_used_at", "99999999999999"),
        ] {
            let mut f = good.clone();
            f.insert(field.to_owned(), bad.to_owned());
            assert_eq!(KeyRecord::from_fields(&f).unwrap_err().0, field);
        }
    }

    #[test]
    fn bad_records_name_the_field() {
        let mut f = Fields::new();
        f.insert("org_id".into(), "acme".into());
        f.insert("name".into(), "n".into());
        f.insert("role".into(), "superuser".into());
        let err = User::from_fields(UserId::from("u"), &f).unwrap_err();
        assert_eq!(err.0, "role");
    }
}
