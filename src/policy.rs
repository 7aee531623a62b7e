//! May this key do this, here, now? A pure function of its inputs: no I/O, no clock of its own.
//!
//! Owns: scope matching (`resource:action` with `*` wildcards), role ceilings, and the rules of
//! DESIGN.md "Who may do what". Does not own: where the inputs come from (`cache`, `route`).
//!
//! Rules, in the order they are checked:
//! 1. [`check_key`]: the key is active and not expired at `now`; the presented secret is the
//!    key's current one, or a rotated-out one within its grace period; a legacy pair is presented
//!    before the legacy sunset; the owner is active.
//! 2. [`authorize`]: the key's org is the one the route or request names (any, on a route for
//!    every org); the owner is not a guest; a project the
//!    route names exists in that org; the owner is a member of it, or it is public, or the owner is
//!    an org admin (who manages every project of the org anyway); the key is not
//!    restricted to other projects; every scope the route requires is covered both by one of the
//!    key's scopes and by the owner's role ceiling (effective scopes = key scopes ∩ role ceiling).

use crate::model::{
    Credential, KeyStatus, Principal, Project, ProjectStatus, Role, Scope, UserStatus, Visibility,
};

/// Whether a key's scopes, capped by its owner's role, cover `required`.
pub fn grants(scopes: &[Scope], role: Role, required: &Scope) -> bool {
    role.allows(required) && scopes.iter().any(|s| s.covers(required))
}

/// Why a resolved key cannot be used at all (401).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyRejection {
    #[error("the API key has been revoked")]
    Revoked,
    #[error("the API key has expired")]
    Expired,
    #[error("the secret was replaced by a rotation and its grace period is over")]
    Rotated,
    #[error("legacy key id + secret pairs are past their sunset date")]
    LegacySunset,
    #[error("the key's owner is disabled")]
    OwnerDisabled,
}

/// Why a usable key may not do this (403, or 404 for a project it may not know of).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("the key belongs to another organisation")]
    OrgMismatch,
    #[error("guests cannot use API keys")]
    GuestNotAllowed,
    #[error("no such project")]
    ProjectNotFound,
    #[error("the project is archived")]
    ProjectArchived,
    #[error("the key's owner has no access to this project")]
    ProjectAccessDenied,
    #[error("the key is restricted to other projects")]
    KeyProjectMismatch,
    #[error("the key lacks a scope this route requires")]
    InsufficientScope,
}

/// Rule 1: the key, as presented, is usable at `now` (seconds since the Unix epoch).
/// `legacy_sunset`: when legacy pairs stop, if they do.
pub fn check_key(
    p: &Principal,
    presented: &Credential,
    now: u64,
    legacy_sunset: Option<u64>,
) -> Result<(), KeyRejection> {
    if p.key.status == KeyStatus::Revoked {
        return Err(KeyRejection::Revoked);
    }
    if p.key.expires_at.is_some_and(|at| now >= at) {
        return Err(KeyRejection::Expired);
    }
    if p.key.hash != *presented.hash() {
        let in_grace = p.key.previous_hash.as_ref() == Some(presented.hash())
            && p.key.previous_expires_at.is_some_and(|until| now < until);
        if !in_grace {
            return Err(KeyRejection::Rotated);
        }
    }
    if matches!(presented, Credential::Legacy { .. }) && legacy_sunset.is_some_and(|at| now >= at) {
        return Err(KeyRejection::LegacySunset);
    }
    if p.owner.status == UserStatus::Disabled {
        return Err(KeyRejection::OwnerDisabled);
    }
    Ok(())
}

/// What a route asks of a caller.
#[derive(Clone, Copy, Debug)]
pub struct Access<'a> {
    /// The org the route or request names; `None`: any (the key's own).
    pub org: Option<&'a str>,
    pub scopes: &'a [Scope],
    /// The project the request is for: `None` when the route names none, `Some(None)` when it
    /// names one that does not exist.
    pub project: Option<Option<&'a Project>>,
}

/// Rule 2: may this (usable) key make this request?
pub fn authorize(p: &Principal, access: &Access<'_>) -> Result<(), Denial> {
    let org = &p.key.org_id;
    if access.org.is_some_and(|want| want != org.as_str()) || &p.owner.org_id != org {
        return Err(Denial::OrgMismatch);
    }
    if p.owner.role == Role::Guest {
        return Err(Denial::GuestNotAllowed);
    }
    match access.project {
        None if !p.key.project_ids.is_empty() => return Err(Denial::KeyProjectMismatch),
        None => {}
        Some(None) => return Err(Denial::ProjectNotFound),
        Some(Some(project)) => {
            if &project.org_id != org {
                return Err(Denial::ProjectNotFound);
            }
            if project.status == ProjectStatus::Archived {
                return Err(Denial::ProjectArchived);
            }
            let member = project.members.binary_search(&p.owner.id).is_ok();
            let open = project.visibility == Visibility::Public || p.owner.role == Role::Admin;
            if !member && !open {
                return Err(Denial::ProjectAccessDenied);
            }
            if !p.key.project_ids.is_empty() && !p.key.project_ids.contains(&project.id) {
                return Err(Denial::KeyProjectMismatch);
            }
        }
    }
    if !access
        .scopes
        .iter()
        .all(|r| grants(&p.key.scopes, p.owner.role, r))
    {
        return Err(Denial::InsufficientScope);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeyHash;
    use crate::model::{KeyGrant, KeyId, OrgId, Owner, ProjectId, UserId};

    fn s(x: &str) -> Scope {
        Scope::new(x)
    }

    #[test]
    fn scope_coverage_table() {
        let rows = [
            ("*", "predict", true),
            ("*", "models:read", true),
            ("predict", "predict", true),
            ("predict", "predictions", false),
            ("models:*", "models", true),
            ("models:*", "models:read", true),
            ("models:*", "models:read:all", true),
            ("models:*", "modelsx:read", false),
            ("models:*", "datasets:read", false),
            ("models:read", "models:*", false),
            ("models:read", "models:write", false),
            ("models", "models:read", false),
        ];
        for (granted, required, want) in rows {
            assert_eq!(
                s(granted).covers(&s(required)),
                want,
                "{granted} ⊇ {required}"
            );
        }
    }

    #[test]
    fn scope_syntax_table() {
        for ok in [
            "*",
            "predict",
            "models:*",
            "models:read",
            "a:b:c",
            "keys:manage",
            "v1.2-x_y",
        ] {
            assert!(Scope::is_well_formed(ok), "{ok}");
        }
        for bad in [
            "", ":", "*:read", "models:", "Models", "a:b:c:d", "a b", "a:*:b", "**",
        ] {
            assert!(!Scope::is_well_formed(bad), "{bad}");
        }
    }

    #[test]
    fn role_ceiling_table() {
        let rows = [
            (Role::Admin, "*", true),
            (Role::Admin, "admin", true),
            (Role::Member, "predict", true),
            (Role::Member, "models:write", true),
            (Role::Member, "admin", false),
            (Role::Member, "users:write", false),
            (Role::Member, "org:*", false),
            (Role::Member, "*", false),
            (Role::Guest, "predict", false),
        ];
        for (role, required, want) in rows {
            assert_eq!(Role::allows(role, &s(required)), want, "{role} {required}");
        }
        // A member's `*` key is capped by the role; an admin's is not.
        assert!(grants(&[s("*")], Role::Member, &s("predict")));
        assert!(!grants(&[s("*")], Role::Member, &s("admin")));
        assert!(grants(&[s("*")], Role::Admin, &s("admin")));
    }

    fn principal() -> Principal {
        Principal::new(
            KeyGrant {
                id: KeyId::from("k"),
                org_id: OrgId::from("acme"),
                user_id: UserId::from("u1"),
                scopes: vec![s("predict")],
                project_ids: vec![],
                status: KeyStatus::Active,
                created_at: 0,
                expires_at: Some(100),
                hash: KeyHash([1; 32]),
                previous_hash: Some(KeyHash([2; 32])),
                previous_expires_at: Some(50),
            },
            Owner {
                id: UserId::from("u1"),
                org_id: OrgId::from("acme"),
                role: Role::Member,
                status: UserStatus::Active,
            },
        )
    }

    fn project(id: &str, org: &str, visibility: Visibility, members: &[&str]) -> Project {
        Project {
            id: ProjectId::from(id),
            org_id: OrgId::from(org),
            name: id.into(),
            visibility,
            members: members.iter().map(|m| UserId::from(*m)).collect(),
            status: ProjectStatus::Active,
            created_at: 0,
        }
    }

    #[test]
    fn key_state_table() {
        type Edit = fn(&mut Principal);
        let current = Credential::Key {
            hash: KeyHash([1; 32]),
        };
        let previous = Credential::Key {
            hash: KeyHash([2; 32]),
        };
        let legacy = Credential::Legacy {
            hash: KeyHash([1; 32]),
            id: "old".into(),
        };
        let stranger = Credential::Key {
            hash: KeyHash([3; 32]),
        };
        let none: Option<u64> = None;
        // (case, change to the principal, presented credential, now, legacy sunset, verdict)
        type Row<'a> = (
            &'a str,
            Edit,
            &'a Credential,
            u64,
            Option<u64>,
            Result<(), KeyRejection>,
        );
        let rows: [Row; 13] = [
            ("active", |_| {}, &current, 99, none, Ok(())),
            (
                "expires exactly now",
                |_| {},
                &current,
                100,
                none,
                Err(KeyRejection::Expired),
            ),
            (
                "expired",
                |_| {},
                &current,
                1000,
                none,
                Err(KeyRejection::Expired),
            ),
            (
                "no expiry",
                |p| p.key.expires_at = None,
                &current,
                u64::MAX,
                none,
                Ok(()),
            ),
            (
                "revoked",
                |p| p.key.status = KeyStatus::Revoked,
                &current,
                1,
                none,
                Err(KeyRejection::Revoked),
            ),
            (
                "owner disabled",
                |p| p.owner.status = UserStatus::Disabled,
                &current,
                1,
                none,
                Err(KeyRejection::OwnerDisabled),
            ),
            (
                "rotated-out secret in its grace",
                |_| {},
                &previous,
                49,
                none,
                Ok(()),
            ),
            (
                "rotated-out secret at the end of its grace",
                |_| {},
                &previous,
                50,
                none,
                Err(KeyRejection::Rotated),
            ),
            (
                "a secret the key no longer knows",
                |_| {},
                &stranger,
                1,
                none,
                Err(KeyRejection::Rotated),
            ),
            (
                "revoked beats grace",
                |p| p.key.status = KeyStatus::Revoked,
                &previous,
                1,
                none,
                Err(KeyRejection::Revoked),
            ),
            (
                "legacy pair before its sunset",
                |_| {},
                &legacy,
                10,
                Some(11),
                Ok(()),
            ),
            (
                "legacy pair at its sunset",
                |_| {},
                &legacy,
                11,
                Some(11),
                Err(KeyRejection::LegacySunset),
            ),
            (
                "the sunset is for legacy pairs only",
                |_| {},
                &current,
                11,
                Some(11),
                Ok(()),
            ),
        ];
        for (name, edit, presented, now, sunset, want) in rows {
            let mut p = principal();
            edit(&mut p);
            assert_eq!(check_key(&p, presented, now, sunset), want, "{name}");
        }
    }

    #[test]
    fn authorization_table() {
        let predict = [s("predict")];
        let admin = [s("admin")];
        let private_member = project("p1", "acme", Visibility::Private, &["u1"]);
        let private_stranger = project("p2", "acme", Visibility::Private, &["u9"]);
        let public = project("p3", "acme", Visibility::Public, &[]);
        let foreign = project("p4", "other", Visibility::Public, &["u1"]);
        let archived = Project {
            status: ProjectStatus::Archived,
            ..project("p5", "acme", Visibility::Public, &[])
        };
        type Edit = fn(&mut Principal);
        let none: Edit = |_| {};
        let rows: Vec<(&str, Edit, Access, Result<(), Denial>)> = vec![
            (
                "org route, no project",
                none,
                Access {
                    org: Some("acme"),
                    scopes: &predict,
                    project: None,
                },
                Ok(()),
            ),
            (
                "a route for every org, the key's own project",
                none,
                Access {
                    org: None,
                    scopes: &predict,
                    project: Some(Some(&private_member)),
                },
                Ok(()),
            ),
            (
                "a route for every org, another org's project: as if there were none",
                none,
                Access {
                    org: None,
                    scopes: &predict,
                    project: Some(Some(&foreign)),
                },
                Err(Denial::ProjectNotFound),
            ),
            (
                "other org's route",
                none,
                Access {
                    org: Some("other"),
                    scopes: &predict,
                    project: None,
                },
                Err(Denial::OrgMismatch),
            ),
            (
                "guest",
                |p| p.owner.role = Role::Guest,
                Access {
                    org: Some("acme"),
                    scopes: &predict,
                    project: None,
                },
                Err(Denial::GuestNotAllowed),
            ),
            (
                "member of private project",
                none,
                Access {
                    org: Some("acme"),
                    scopes: &predict,
                    project: Some(Some(&private_member)),
                },
                Ok(()),
            ),
            (
                "stranger to private project",
                none,
                Access {
                    org: Some("acme"),
                    scopes: &predict,
                    project: Some(Some(&private_stranger)),
                },
                Err(Denial::ProjectAccessDenied),
            ),
            (
                "org admin reaches every project of the org",
                |p| p.owner.role = Role::Admin,
                Access {
                    org: Some("acme"),
                    scopes: &predict,
                    project: Some(Some(&private_stranger)),
                },
                Ok(()),
            ),
            (
                "public project",
                none,
                Access {
                    org: Some("acme"),
                    scopes: &predict,
                    project: Some(Some(&public)),
                },
                Ok(()),
            ),
            (
                "archived project",
                none,
                Access {
                    org: Some("acme"),
                    scopes: &predict,
                    project: Some(Some(&archived)),
                },
                Err(Denial::ProjectArchived),
            ),
            (
                "unknown project",
                none,
                Access {
                    org: Some("acme"),
                    scopes: &predict,
                    project: Some(None),
                },
                Err(Denial::ProjectNotFound),
            ),
            (
                "project of another org",
                none,
                Access {
                    org: Some("acme"),
                    scopes: &predict,
                    project: Some(Some(&foreign)),
                },
                Err(Denial::ProjectNotFound),
            ),
            (
                "key restricted to this project",
                |p| p.key.project_ids = vec![ProjectId::from("p3")],
                Access {
                    org: Some("acme"),
                    scopes: &predict,
                    project: Some(Some(&public)),
                },
                Ok(()),
            ),
            (
                "key restricted to another project",
                |p| p.key.project_ids = vec![ProjectId::from("p1")],
                Access {
                    org: Some("acme"),
                    scopes: &predict,
                    project: Some(Some(&public)),
                },
                Err(Denial::KeyProjectMismatch),
            ),
            (
                "restricted key on an org-wide route",
                |p| p.key.project_ids = vec![ProjectId::from("p1")],
                Access {
                    org: Some("acme"),
                    scopes: &predict,
                    project: None,
                },
                Err(Denial::KeyProjectMismatch),
            ),
            (
                "scope missing",
                |p| p.key.scopes = vec![s("models:read")],
                Access {
                    org: Some("acme"),
                    scopes: &predict,
                    project: None,
                },
                Err(Denial::InsufficientScope),
            ),
            (
                "member's * key on admin route",
                |p| p.key.scopes = vec![s("*")],
                Access {
                    org: Some("acme"),
                    scopes: &admin,
                    project: None,
                },
                Err(Denial::InsufficientScope),
            ),
            (
                "admin's * key on admin route",
                |p| {
                    p.key.scopes = vec![s("*")];
                    p.owner.role = Role::Admin
                },
                Access {
                    org: Some("acme"),
                    scopes: &admin,
                    project: None,
                },
                Ok(()),
            ),
            (
                "no scopes required",
                |p| p.key.scopes = vec![],
                Access {
                    org: Some("acme"),
                    scopes: &[],
                    project: None,
                },
                Ok(()),
            ),
        ];
        for (name, edit, access, want) in rows {
            let mut p = principal();
            edit(&mut p);
            assert_eq!(authorize(&p, &access), want, "{name}");
        }
    }
}
