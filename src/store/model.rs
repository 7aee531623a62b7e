//! The records keygate stores, and their ids.
//!
//! Owns: the domain types (orgs, users, projects, keys) and their conversion to and from the
//! Redis hash fields they are stored as. Does not own: Redis key names or commands (`store`),
//! or what a record permits (`policy`).
//!
//! Invariants: ids are slugs (`[a-z0-9][a-z0-9_-]{0,63}`, or generated ones in that alphabet
//! plus upper case), so they are safe in Redis key names, headers and URLs without escaping.
//! Times are whole seconds since the Unix epoch.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::credential::KeyHash;
use crate::policy::Scope;
use crate::proxy::forward::IdentityHeaders;

/// Ids are `CompactString`s: up to 24 bytes are stored in place of the pointer, so the ids a cached
/// key holds (its own, its org's and owner's, twice over) are no allocations of their own. That cut
/// a cached key's memory by 12% (loadtests/RESULTS.md, 2026-11-25 02:57).
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub CompactString);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s.into())
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.into())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// An organisation: the boundary no key crosses.
    OrgId
);
id_type!(
    /// A user of an organisation; every key has one owner.
    UserId
);
id_type!(
    /// A project (an inference endpoint, a model, a dataset) inside an organisation.
    ProjectId
);
id_type!(
    /// The public id of a key: safe to log, show and send upstream.
    KeyId
);

/// Whether `s` can be used as a caller-chosen id (org, project, user).
pub fn is_valid_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

/// Now, in whole seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Fixed sets stored as lower-case strings.
macro_rules! str_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $s),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok(Self::$variant),)+
                    _ => Err(format!(
                        "`{s}` is not one of: {}",
                        [$($s),+].join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

str_enum!(
    /// A user's role in their org; it caps what their keys may do.
    Role { Admin = "admin", Member = "member", Guest = "guest" }
);
str_enum!(
    /// A disabled user can do nothing, and their keys stop at once.
    UserStatus { Active = "active", Disabled = "disabled" }
);
str_enum!(
    /// Public projects are open to every non-guest member of the org.
    Visibility { Private = "private", Public = "public" }
);
str_enum!(
    /// Revoked keys are refused; only revoked keys may be deleted.
    KeyStatus { Active = "active", Revoked = "revoked" }
);

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Org {
    pub id: OrgId,
    pub name: String,
    pub created_at: u64,
}

/// What the request path needs of a key's owner ([`Principal`]): part of a [`User`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub id: UserId,
    pub org_id: OrgId,
    pub role: Role,
    pub status: UserStatus,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: UserId,
    pub org_id: OrgId,
    pub name: String,
    pub role: Role,
    pub status: UserStatus,
    pub created_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Project {
    pub id: ProjectId,
    pub org_id: OrgId,
    pub name: String,
    pub visibility: Visibility,
    /// Users with access to a private project (sorted).
    pub members: Vec<UserId>,
    pub created_at: u64,
}

/// What a key grants, to whom, and until when: all the request path reads of a key
/// ([`Principal`]), and part of its stored record ([`KeyRecord`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyGrant {
    pub id: KeyId,
    pub org_id: OrgId,
    pub user_id: UserId,
    pub scopes: Vec<Scope>,
    /// Empty: any project the owner may access. Otherwise only these.
    pub project_ids: Vec<ProjectId>,
    pub status: KeyStatus,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    /// SHA-256 of the credential: the lookup index. Not secret, but not shown either.
    #[serde(skip)]
    pub hash: KeyHash,
    /// After a rotation: the replaced credential's hash, which works until
    /// `previous_expires_at` and is then answered `key_rotated`.
    #[serde(skip)]
    pub previous_hash: Option<KeyHash>,
    /// When the replaced secret stops (Unix seconds); `None` when the key was never rotated.
    pub previous_expires_at: Option<u64>,
}

/// A key as stored: never the secret, only its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyRecord {
    #[serde(flatten)]
    pub grant: KeyGrant,
    pub name: String,
    /// Masked form for lists (`kg_AbCd…wxyz`), or `legacy:<id>` for imported pairs.
    pub display: String,
    /// An imported key id + secret pair rather than a keygate key.
    pub legacy: bool,
    /// When the key last authenticated a request (Unix seconds; written in batches, so up to
    /// `usage.flush_interval` behind).
    pub last_used_at: Option<u64>,
    /// Requests the key has authenticated (same batching).
    pub request_count: u64,
}

/// A resolved key with its owner: everything the policy needs about the caller, and the
/// identity upstreams receive, made once when the key is resolved rather than per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub key: KeyGrant,
    pub owner: Owner,
    pub headers: IdentityHeaders,
}

impl Principal {
    pub fn new(key: KeyGrant, owner: Owner) -> Principal {
        let headers = IdentityHeaders::new(&key, &owner);
        Principal {
            key,
            owner,
            headers,
        }
    }
}

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

/// A space-separated list whose every item passes `valid`.
fn list<T>(
    f: &(impl Record + ?Sized),
    name: &'static str,
    valid: fn(&str) -> bool,
    make: fn(&str) -> T,
) -> Result<Vec<T>, BadRecord> {
    let items = f.get(name).unwrap_or("").split_whitespace();
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

    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("org_id", self.org_id.to_string()),
            ("name", self.name.clone()),
            ("role", self.role.to_string()),
            ("status", self.status.to_string()),
            ("created_at", self.created_at.to_string()),
        ]
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
        let expires_at: u64 = parsed(f, "expires_at")?;
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
            previous_expires_at: nonzero(count(f, "previous_expires_at")?),
        })
    }
}

/// Times stored as 0 for "none".
fn nonzero(n: u64) -> Option<u64> {
    (n != 0).then_some(n)
}

impl KeyRecord {
    pub fn from_fields(f: &(impl Record + ?Sized)) -> Result<Self, BadRecord> {
        Ok(KeyRecord {
            grant: KeyGrant::from_fields(f)?,
            name: field(f, "name")?.to_owned(),
            display: field(f, "display")?.to_owned(),
            legacy: field(f, "legacy")? == "1",
            last_used_at: nonzero(count(f, "last_used_at")?),
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

    #[test]
    fn ids_are_slugs() {
        for ok in ["acme", "a", "proj_1", "Key-9", &"x".repeat(64)] {
            assert!(is_valid_id(ok), "{ok}");
        }
        for bad in ["", "_a", "a b", "a/b", "a.b", "a%2e", &"x".repeat(65), "é"] {
            assert!(!is_valid_id(bad), "{bad}");
        }
    }

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
