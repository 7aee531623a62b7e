//! The identity an upstream is told about: the values of the `x-keygate-*` headers of a
//! resolved key.
//!
//! Owns: making those values once per resolved key. Does not own: which headers carry them or
//! the rest of the rewrite (`proxy::forward`).

use bytes::{BufMut, BytesMut};
use http::HeaderValue;

use super::{KeyGrant, Owner, Scope};

/// The values of a key's identity headers (`x-keygate-key-id`, `-user-id`, `-org-id`, `-role`,
/// `-scopes`), made once per resolved key ([`Principal::new`](crate::model::Principal::new))
/// from one buffer: a forwarded request clones five handles instead of building five values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityHeaders {
    pub key_id: HeaderValue,
    pub user_id: HeaderValue,
    pub org_id: HeaderValue,
    pub role: HeaderValue,
    pub scopes: HeaderValue,
    /// Some of the key's scopes go beyond its owner's role (a member holding a key made while
    /// an admin): `scopes` is then not what the key may do, and the request path sends the
    /// effective scopes instead (rare, so made per request).
    pub capped: bool,
}

impl IdentityHeaders {
    pub fn new(key: &KeyGrant, owner: &Owner) -> IdentityHeaders {
        let (key_id, user_id, org_id) =
            (key.id.as_str(), key.user_id.as_str(), key.org_id.as_str());
        let role = owner.role.as_str();
        let scopes = || key.scopes.iter().map(Scope::as_str);
        let len = key_id.len()
            + user_id.len()
            + org_id.len()
            + role.len()
            + scopes().map(|s| s.len() + 1).sum::<usize>();
        let mut buf = BytesMut::with_capacity(len);
        IdentityHeaders {
            key_id: cut(&mut buf, [key_id]),
            user_id: cut(&mut buf, [user_id]),
            org_id: cut(&mut buf, [org_id]),
            role: cut(&mut buf, [role]),
            scopes: cut(&mut buf, scopes()),
            capped: key.scopes.iter().any(|s| !owner.role.allows(s)),
        }
    }
}

/// The words, space-separated, as a header value cut from `buf`.
fn cut<'a>(buf: &mut BytesMut, words: impl IntoIterator<Item = &'a str>) -> HeaderValue {
    for (i, word) in words.into_iter().enumerate() {
        if i > 0 {
            buf.put_u8(b' ');
        }
        buf.put_slice(word.as_bytes());
    }
    HeaderValue::from_maybe_shared(buf.split().freeze()).expect("ids and scopes are header-safe")
}
