//! Scopes: what a key may do, as `resource:action` strings with `*` wildcards.
//!
//! Owns: the syntax of a scope and what one scope covers. Does not own: role ceilings or whether
//! a request is allowed (`policy`), or presets (`config`).

use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// A permission: `resource:action`, `resource`, `resource:*` or `*`. Stored inline up to 24
/// bytes, like ids.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scope(CompactString);

impl Scope {
    pub fn new(s: &str) -> Self {
        Scope(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `*`, or 1–3 `:`-separated parts of `[a-z0-9_.-]`, the last of which may be `*`.
    pub fn is_well_formed(s: &str) -> bool {
        if s == "*" {
            return true;
        }
        let last = s.split(':').count() - 1;
        last < 3
            && s.split(':').enumerate().all(|(i, p)| {
                (i == last && i > 0 && p == "*")
                    || (!p.is_empty()
                        && p.bytes().all(|b| {
                            b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b)
                        }))
            })
    }

    /// Whether holding `self` grants `required`. `models:*` grants `models` and `models:read`.
    pub fn covers(&self, required: &Scope) -> bool {
        let (g, r) = (self.0.as_str(), required.0.as_str());
        if g == "*" || g == r {
            return true;
        }
        match g.strip_suffix(":*") {
            Some(resource) => {
                r == resource || (r.starts_with(resource) && r.as_bytes()[resource.len()] == b':')
            }
            None => false,
        }
    }

    /// The part before the first `:`.
    pub fn resource(&self) -> &str {
        self.0.split(':').next().unwrap_or("")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
