//! API keys: their format, and finding the one a request presents.
//!
//! Owns: generating keys, checking their format and checksum, hashing and masking them, and
//! extracting the presented credential from request headers. Does not own: looking keys up
//! (`cache`, `store`) or deciding what they may do (`policy`).
//!
//! Format (like GitHub's tokens): `<prefix>_<32 base62 random><6 base62 CRC32>`. 32 base62
//! characters carry 190 bits of randomness, so a fast hash (SHA-256) is the right one to store:
//! a slow hash would protect nothing and hand attackers a CPU lever. The checksum lets us reject a
//! mistyped or made-up key without touching the store.
//!
//! Invariant: the secret never leaves this module in a form that is logged or displayed; the
//! [`Credential`] type's `Debug` prints only the masked form.

use http::{HeaderMap, HeaderName};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::model::{Credential, KeyHash};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Random characters in a key: 32 × log2(62) ≈ 190 bits.
const RANDOM_LEN: usize = 32;
/// Base62 characters of the CRC32 checksum (62^6 > 2^32).
const CHECKSUM_LEN: usize = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("no API key was presented")]
    Missing,
    #[error("the request presents two different credentials")]
    Conflicting,
    #[error("the API key is malformed")]
    Malformed,
}

/// Generates, parses and masks keys with one configured prefix.
#[derive(Clone, Debug)]
pub struct KeyFormat {
    prefix: String,
}

impl KeyFormat {
    /// `prefix` must be 1–16 ASCII letters or digits (checked by config validation).
    pub fn new(prefix: &str) -> Self {
        KeyFormat {
            prefix: format!("{prefix}_"),
        }
    }

    /// A new random key: the secret, to be shown once and then only hashed.
    pub fn generate(&self) -> String {
        let mut rng = rand::rng();
        let mut key = self.prefix.clone();
        key.extend((0..RANDOM_LEN).map(|_| BASE62[rng.random_range(0..62)] as char));
        let sum = checksum(key.as_bytes());
        key.extend(sum.map(char::from));
        key
    }

    /// Checks prefix, length, alphabet and checksum. No store access.
    pub fn parse(&self, key: &str) -> Result<Credential, CredentialError> {
        let body = key
            .strip_prefix(&self.prefix)
            .ok_or(CredentialError::Malformed)?;
        if body.len() != RANDOM_LEN + CHECKSUM_LEN
            || !body.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(CredentialError::Malformed);
        }
        let (signed, sum) = key.split_at(key.len() - CHECKSUM_LEN);
        if checksum(signed.as_bytes()) != sum.as_bytes() {
            return Err(CredentialError::Malformed);
        }
        Ok(Credential::Key {
            hash: hash_key(key),
        })
    }

    /// `kg_AbCd…wxyz`: enough for a person to tell keys apart, useless to an attacker.
    pub fn mask(&self, key: &str) -> String {
        let body = &key[self.prefix.len()..];
        format!("{}{}…{}", self.prefix, &body[..4], &body[body.len() - 4..])
    }
}

/// CRC32 of `bytes` in base62, as the key's last characters (no allocation: checked per request).
fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(bytes) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// SHA-256 of a keygate key.
pub fn hash_key(key: &str) -> KeyHash {
    KeyHash(Sha256::digest(key.as_bytes()).into())
}

/// SHA-256 of a legacy id + secret pair; the NUL separators make the encoding unambiguous.
pub fn hash_legacy(id: &str, secret: &str) -> KeyHash {
    let mut h = Sha256::new();
    h.update(b"legacy\0");
    h.update(id.as_bytes());
    h.update(b"\0");
    h.update(secret.as_bytes());
    KeyHash(h.finalize().into())
}

/// The credential a request presents.
///
/// Looks at `apikey`, `x-api-key` and `Authorization: Bearer|Key …` (any case, trimmed). The same
/// key in several places is fine; two different values are [`CredentialError::Conflicting`]. An
/// `apikey` that is not a keygate key, together with an `apisecret`, is a legacy pair; `apisecret`
/// beside a keygate key is ignored.
pub fn extract(headers: &HeaderMap, format: &KeyFormat) -> Result<Credential, CredentialError> {
    let mut presented: Option<&str> = None;
    // One pass over the headers present, not a map lookup per header that might be.
    for (name, value) in headers {
        let candidate = if name == APIKEY || name == X_API_KEY {
            value.to_str().map(|v| Some(v.trim()))
        } else if name == http::header::AUTHORIZATION {
            authorization_key(value)
        } else {
            continue;
        };
        let Some(value) = candidate
            .map_err(|_| CredentialError::Malformed)?
            .filter(|v| !v.is_empty())
        else {
            continue;
        };
        match presented {
            Some(seen) if seen != value => return Err(CredentialError::Conflicting),
            _ => presented = Some(value),
        }
    }
    let key = presented.ok_or(CredentialError::Missing)?;
    match format.parse(key) {
        Ok(credential) => Ok(credential),
        Err(err) => match headers.get(APISECRET).map(|v| v.to_str().map(str::trim)) {
            Some(Ok(secret)) if !secret.is_empty() => Ok(Credential::Legacy {
                hash: hash_legacy(key, secret),
                id: key.to_owned(),
            }),
            Some(_) | None => Err(err),
        },
    }
}

/// The key in an `Authorization` header, if its scheme is one we take (`Bearer`, `Key`).
fn authorization_key(value: &http::HeaderValue) -> Result<Option<&str>, http::header::ToStrError> {
    let value = value.to_str()?.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("key") {
        Ok(Some(rest.trim()))
    } else {
        Ok(None)
    }
}

const APIKEY: HeaderName = HeaderName::from_static("apikey");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const APISECRET: HeaderName = HeaderName::from_static("apisecret");

/// Every header that may carry a credential: removed before anything goes upstream.
pub const CREDENTIAL_HEADERS: [HeaderName; 4] =
    [APIKEY, X_API_KEY, APISECRET, http::header::AUTHORIZATION];

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn fmt() -> KeyFormat {
        KeyFormat::new("kg")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn generated_keys_parse_and_are_distinct() {
        let f = fmt();
        let a = f.generate();
        let b = f.generate();
        assert_ne!(a, b);
        assert!(a.starts_with("kg_"));
        assert_eq!(a.len(), 3 + RANDOM_LEN + CHECKSUM_LEN);
        assert_eq!(f.parse(&a), Ok(Credential::Key { hash: hash_key(&a) }));
        assert_eq!(f.mask(&a), format!("kg_{}…{}", &a[3..7], &a[a.len() - 4..]));
    }

    #[test]
    fn a_prefix_may_hold_underscores() {
        // The shape the LandingLens SDK checks for before it sends a key.
        let f = KeyFormat::new("land_sk");
        let key = f.generate();
        assert!(key.starts_with("land_sk_"), "{key}");
        assert_eq!(
            f.parse(&key),
            Ok(Credential::Key {
                hash: hash_key(&key)
            })
        );
        assert_eq!(fmt().parse(&key), Err(CredentialError::Malformed));
    }

    #[test]
    fn hashes_round_trip_through_hex() {
        let h = hash_key("kg_x");
        assert_eq!(h.to_hex().len(), 64);
        assert_eq!(KeyHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(KeyHash::from_hex(&h.to_hex().to_uppercase()), Some(h));
        let mut bytes = [0u8; 32];
        bytes[0] = 0x0f;
        bytes[31] = 0xa0;
        let known = format!("0f{}a0", "00".repeat(30));
        assert_eq!(KeyHash(bytes).to_hex(), known);
        assert_eq!(KeyHash::from_hex(&known), Some(KeyHash(bytes)));
        let plus = format!("+f{}", "00".repeat(31));
        for bad in [
            "",
            "zz",
            &"a".repeat(63),
            &"g".repeat(64),
            &"é".repeat(32),
            &plus,
        ] {
            assert_eq!(KeyHash::from_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn malformed_keys_are_rejected() {
        let f = fmt();
        let good = f.generate();
        let mut flipped = good.clone().into_bytes();
        flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
        let cases = [
            String::new(),
            "kg_".into(),
            good.replacen("kg_", "xx_", 1),
            good[..good.len() - 1].into(),
            format!("{good}a"),
            String::from_utf8(flipped).unwrap(),
            good.replacen(&good[10..11], "-", 1),
        ];
        for case in cases {
            assert_eq!(f.parse(&case), Err(CredentialError::Malformed), "{case}");
        }
    }

    #[test]
    fn extraction_table() {
        let f = fmt();
        let k1 = f.generate();
        let k2 = f.generate();
        let ok = |h: &[(&str, &str)]| extract(&headers(h), &f).map(|c| *c.hash());
        let h1 = hash_key(&k1);
        let bearer = format!("Bearer {k1}");
        let key_scheme = format!("key  {k1} ");
        let padded = format!("  {k1}\t");
        assert_eq!(ok(&[("apikey", &k1)]), Ok(h1));
        assert_eq!(ok(&[("APIKEY", &padded)]), Ok(h1));
        assert_eq!(ok(&[("x-api-key", &k1)]), Ok(h1));
        assert_eq!(ok(&[("authorization", &bearer)]), Ok(h1));
        assert_eq!(ok(&[("Authorization", &key_scheme)]), Ok(h1));
        assert_eq!(ok(&[("apikey", &k1), ("authorization", &bearer)]), Ok(h1));
        assert_eq!(ok(&[("apikey", &k1), ("apisecret", "ignored")]), Ok(h1));
        assert_eq!(
            ok(&[("authorization", "Basic Zm9vOmJhcg==")]),
            Err(CredentialError::Missing)
        );
        assert_eq!(ok(&[]), Err(CredentialError::Missing));
        assert_eq!(ok(&[("apikey", "")]), Err(CredentialError::Missing));
        assert_eq!(
            ok(&[("apikey", &k1), ("x-api-key", &k2)]),
            Err(CredentialError::Conflicting)
        );
        assert_eq!(
            ok(&[("apikey", &k1), ("apikey", &k2)]),
            Err(CredentialError::Conflicting)
        );
        assert_eq!(
            ok(&[("apikey", "not-a-key")]),
            Err(CredentialError::Malformed)
        );
        assert_eq!(
            ok(&[("apikey", "LEGACY1"), ("apisecret", "s3cret")]),
            Ok(hash_legacy("LEGACY1", "s3cret"))
        );
    }

    #[test]
    fn legacy_hash_is_unambiguous() {
        assert_ne!(hash_legacy("ab", "c"), hash_legacy("a", "bc"));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let f = fmt();
        let key = f.generate();
        let shown = format!("{:?}", f.parse(&key).unwrap());
        assert!(!shown.contains(&key[3..35]), "{shown}");
    }
}
