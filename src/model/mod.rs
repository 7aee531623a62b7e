//! The domain model: ids, orgs, users, projects, keys, roles, scopes, the principal a resolved
//! key becomes, and the identity an upstream is told about. The bottom layer: no I/O, and no
//! import of any other keygate module.
//!
//! Owns: the types and their invariants. Does not own: how records are stored (`store::codec`),
//! what a record permits (`policy`), or the key format (`credential`).
//!
//! Invariants: ids are slugs (`[a-z0-9][a-z0-9_-]{0,63}`, or generated ones in that alphabet
//! plus upper case), so they are safe in Redis key names, headers and URLs without escaping.
//! Times are whole seconds since the Unix epoch.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

mod identity;
mod scope;

pub use identity::IdentityHeaders;
pub use scope::{Scope, effective};

/// Ids are `CompactString`s: up to 24 bytes are stored in place of the pointer, so the ids a cached
/// key holds (its own, its org's and owner's, twice over) are no allocations of their own.
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

/// SHA-256 of a credential: the only form in which it is stored or cached.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// Parses the 64 lower- or upper-case hex digits `to_hex` writes.
    pub fn from_hex(hex: &str) -> Option<KeyHash> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        // A match per digit: `char::to_digit` cost twice as much, and a cache miss parses one.
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *slot = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(KeyHash(out))
    }
}

/// Hex: the form Redis key names and invalidation messages use (a hash is not a secret).
/// Written in one piece: a cache miss names the hash in its lookup, and a `{:02x}` per byte
/// cost more than the rest of building the command.
impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 64];
        for (pair, b) in hex.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0xf)];
        }
        f.write_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", &self.to_hex()[..8])
    }
}

/// A credential presented by a request, already checked for format.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A keygate key (format and checksum valid). Only its hash is kept: nothing on the request
    /// path needs more, and the secret must not linger.
    Key { hash: KeyHash },
    /// An imported key id + `apisecret` pair.
    Legacy { hash: KeyHash, id: String },
}

impl Credential {
    pub fn hash(&self) -> &KeyHash {
        match self {
            Credential::Key { hash, .. } | Credential::Legacy { hash, .. } => hash,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Key { hash } => write!(f, "Key({hash:?})"),
            Credential::Legacy { id, .. } => write!(f, "Legacy({id})"),
        }
    }
}

/// Why no usable credential could be taken from a request.
/// A string that may hold a password: never printed.
#[derive(Clone)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
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
str_enum!(
    /// An archived project is refused on the data plane (its keys stay restricted to it); only
    /// an archived project may be deleted.
    ProjectStatus { Active = "active", Archived = "archived" }
);
str_enum!(
    /// What people are shown of a key's status: an active key past its expiry is `expired`.
    KeyState { Active = "active", Revoked = "revoked", Expired = "expired" }
);

/// The latest time keygate stores or shows: 9999-12-31T23:59:59Z, in Unix seconds. A time past
/// it cannot be written as a date, so a record holding one is corrupt.
pub const MAX_TIME: u64 = 253_402_300_799;

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

/// A person's membership of one org, with their name: what an org sees of a user. One person
/// ([`Account`]) may be a member of several orgs, with a role and a status in each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: UserId,
    pub org_id: OrgId,
    pub name: String,
    pub role: Role,
    /// The membership's; a disabled account disables every membership on the data plane.
    pub status: UserStatus,
    pub created_at: u64,
}

/// A person, across the orgs they belong to: what only the platform sees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: UserId,
    pub name: String,
    /// Disabled: every key of theirs, in every org, stops at once.
    pub status: UserStatus,
    pub created_at: u64,
    pub org_ids: Vec<OrgId>,
}

/// An org's invitation to a person to become a member with `role`; the person accepts it with a
/// key of their own. Invitations lapse after a week.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Invitation {
    pub id: String,
    pub org_id: OrgId,
    pub user_id: UserId,
    pub role: Role,
    pub created_at: u64,
    pub expires_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Project {
    pub id: ProjectId,
    pub org_id: OrgId,
    pub name: String,
    pub visibility: Visibility,
    /// Users with access to a private project (sorted).
    pub members: Vec<UserId>,
    pub status: ProjectStatus,
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

impl KeyGrant {
    /// Its status as people are shown it at `now`.
    pub fn state(&self, now: u64) -> KeyState {
        match self.status {
            KeyStatus::Revoked => KeyState::Revoked,
            KeyStatus::Active if self.expires_at.is_some_and(|at| now >= at) => KeyState::Expired,
            KeyStatus::Active => KeyState::Active,
        }
    }
}

impl KeyRecord {
    /// The record as the API and the CLI show it at `now`: `status` is its [`KeyState`].
    pub fn shown(&self, now: u64) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("records serialize");
        v["status"] = serde_json::Value::from(self.grant.state(now).as_str());
        v
    }
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
}
