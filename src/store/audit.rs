//! The audit log: who changed what, when, and through which request.
//!
//! Owns: [`Actor`] (carried by a [`Store`] handle, so the CLI, the API and tests share one set of
//! write functions), the entry each write appends in its own MULTI/EXEC ([`Store::commit`] calls
//! [`Actor::append_entry`]), and reading the log back newest first.
//!
//! Schema: one stream per org, `kg:{org}:audit`, capped near [`AUDIT_MAX_ENTRIES`] (XADD
//! MAXLEN ~). Fields: `actor`, `key_id`, `request_id`, `action`, `target`, `details` (JSON).
//! Invariant: no write commits without its audit entry, and no audit entry without its write.

use serde::Serialize;

use super::codec::Fields;
use super::{Change, Store, StoreError, pairs};
use crate::model::{KeyId, OrgId};

/// Entries kept per org: about 300 bytes each, so ~300 MB of Redis at most; the stream is
/// trimmed (approximately, which is O(1)) as it grows past this.
pub const AUDIT_MAX_ENTRIES: usize = 1_000_000;

/// Who makes the changes a [`Store`] handle writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// `user:{id}`, `bootstrap` (the management API's token), `cli` (the bootstrap CLI), or
    /// `system` (a handle nobody named: tests, benchmarks).
    pub who: String,
    /// The key the change was authenticated with, if any.
    pub key_id: Option<KeyId>,
    /// The management request that made it, if any.
    pub request_id: Option<String>,
}

impl Actor {
    pub fn named(who: impl Into<String>) -> Actor {
        Actor {
            who: who.into(),
            key_id: None,
            request_id: None,
        }
    }
}

impl Actor {
    /// Appends `change`'s audit entry, as this actor's, to the write's transaction `pipe`.
    pub(super) fn append_entry(
        &self,
        pipe: &mut redis::Pipeline,
        stream: String,
        change: &Change<'_>,
    ) {
        let fields = [
            ("actor", self.who.clone()),
            (
                "key_id",
                self.key_id
                    .as_ref()
                    .map(|k| k.to_string())
                    .unwrap_or_default(),
            ),
            ("request_id", self.request_id.clone().unwrap_or_default()),
            ("action", change.action.to_owned()),
            ("target", change.target.clone()),
            ("details", change.details.to_string()),
        ];
        pipe.xadd_maxlen(
            stream,
            redis::streams::StreamMaxlen::Approx(AUDIT_MAX_ENTRIES),
            "*",
            &fields,
        )
        .ignore();
    }
}

/// An audit entry as the API returns it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditEntry {
    /// The stream id: `{unix ms}-{seq}`; also the pagination cursor.
    pub id: String,
    /// Unix seconds.
    pub at: u64,
    pub org_id: OrgId,
    pub actor: String,
    pub key_id: Option<String>,
    pub request_id: Option<String>,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
}

impl AuditEntry {
    fn from_fields(id: String, org: &OrgId, f: &Fields) -> AuditEntry {
        let text = |name: &str| f.get(name).cloned().unwrap_or_default();
        let optional = |name: &str| f.get(name).filter(|v| !v.is_empty()).cloned();
        let ms: u64 = id
            .split('-')
            .next()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0);
        AuditEntry {
            at: ms / 1000,
            id,
            org_id: org.clone(),
            actor: text("actor"),
            key_id: optional("key_id"),
            request_id: optional("request_id"),
            action: text("action"),
            target: text("target"),
            details: serde_json::from_str(&text("details")).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Whether `s` is a stream id (`ms-seq`), so it can be passed to XREVRANGE as a cursor.
fn is_stream_id(s: &str) -> bool {
    let mut parts = s.split('-');
    let digits =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
}

impl Store {
    /// An org's audit entries, newest first: up to `limit`, older than the cursor `before` (an
    /// entry id) when given.
    pub async fn audit(
        &self,
        org: &OrgId,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let end = match before {
            Some(id) if is_stream_id(id) => format!("({id}"),
            Some(id) => {
                return Err(StoreError::Rejected(format!(
                    "`{id}` is not an audit entry id like \"1764000000000-0\""
                )));
            }
            None => "+".to_owned(),
        };
        let mut c = self.conn().await?;
        let key = self.name(format_args!("{}:audit", super::Tag(org)));
        let rows: Vec<(String, Vec<String>)> = self
            .bounded(async {
                Ok(redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg(end)
                    .arg("-")
                    .arg("COUNT")
                    .arg(limit)
                    .query_async(&mut c)
                    .await?)
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, flat)| AuditEntry::from_fields(id, org, &pairs(flat)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_must_be_stream_ids() {
        for ok in ["1764000000000-0", "0-1"] {
            assert!(is_stream_id(ok), "{ok}");
        }
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1-2-3",
            "+",
            "1764000000000",
            "a-1",
            "1 -1",
        ] {
            assert!(!is_stream_id(bad), "{bad}");
        }
    }
}
