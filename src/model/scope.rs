//! Scopes: what a key may do, as `resource:action` strings with `*` wildcards.
//!
//! Owns: the syntax of a scope and what one scope covers. Does not own: role ceilings or whether
//! a request is allowed (`policy`), or presets (`config`).

use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::Role;

/// Resources only an org admin may act on, whatever a member's key says.
pub const ADMIN_ONLY_RESOURCES: [&str; 3] = ["admin", "org", "users"];

/// What `scopes` allow a holder of `role` to do, as scopes: those within the role's ceiling
/// as they are, a `*` beyond it as `resource:*` for every resource in `known` the role allows,
/// and the rest (admin resources for a member) dropped. Space-separated, sorted.
pub fn effective(
    scopes: &[Scope],
    role: Role,
    known: &std::collections::BTreeSet<String>,
) -> String {
    let mut out: Vec<String> = Vec::new();
    for scope in scopes {
        if role.allows(scope) {
            out.push(scope.as_str().to_owned());
        } else if scope.as_str() == "*" {
            let allowed = known.iter().filter(|r| role.allows(&Scope::new(r)));
            out.extend(allowed.map(|r| format!("{r}:*")));
        }
    }
    out.sort();
    out.dedup();
    out.join(" ")
}

impl Role {
    /// Whether this role's ceiling includes `required`: admins everything, members everything
    /// but org administration, guests nothing.
    pub fn allows(self, required: &Scope) -> bool {
        match self {
            Role::Admin => true,
            Role::Member => {
                required.as_str() != "*" && !ADMIN_ONLY_RESOURCES.contains(&required.resource())
            }
            Role::Guest => false,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_scopes_are_capped_by_the_role() {
        let known = ["admin", "keys", "models", "org", "predict", "users"]
            .map(str::to_owned)
            .into();
        let scopes = |list: &[&str]| list.iter().map(|s| Scope::new(s)).collect::<Vec<_>>();
        let all = scopes(&["*"]);
        assert_eq!(effective(&all, Role::Admin, &known), "*");
        assert_eq!(
            effective(&all, Role::Member, &known),
            "keys:* models:* predict:*",
            "a member's * is every resource but org administration"
        );
        let mixed = scopes(&["predict", "users:read", "models:read"]);
        assert_eq!(
            effective(&mixed, Role::Member, &known),
            "models:read predict"
        );
        assert_eq!(effective(&mixed, Role::Guest, &known), "");
    }
}
