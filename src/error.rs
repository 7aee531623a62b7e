//! Every way a data-plane request can fail, and the one place that turns it into a response.
//!
//! Each variant names the condition, has one status and one stable machine-readable code, and
//! keeps its cause (`#[source]`) for the log. The body is
//! `{"error": {"code", "message"}, "message"}`: a code for programs, a sentence that says what to
//! do, and a top-level `message` because many SDKs read only that.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::credential::CredentialError;
use crate::policy::{Denial, KeyRejection};
use crate::route::{ErrorStyle, InvalidPath, ProjectError};
use crate::store::StoreError;
use crate::throttle::Refusal;

/// `Retry-After` on a 503 of the key store: seconds a client should wait before retrying.
const RETRY_AFTER: HeaderValue = HeaderValue::from_static("1");

/// The challenge a 401 must carry (RFC 9110 §15.5.2), in the `Bearer` scheme (RFC 6750 §3), one of
/// the ways a key may be sent. The management API's 401 carries it too.
pub const CHALLENGE: HeaderValue = HeaderValue::from_static(r#"Bearer realm="keygate""#);
/// The challenge when a key was presented but cannot be used (malformed, unknown, revoked, expired,
/// rotated out, past its sunset, or its owner disabled).
const CHALLENGE_INVALID_KEY: HeaderValue =
    HeaderValue::from_static(r#"Bearer realm="keygate", error="invalid_token""#);

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("method not allowed")]
    MethodNotAllowed(HeaderValue),
    #[error("protocol upgrades are not supported")]
    UpgradeNotSupported,
    #[error("no Host, two Hosts, or a Host that contradicts :authority")]
    InvalidHost,
    #[error(transparent)]
    InvalidPath(#[from] InvalidPath),
    #[error("no route")]
    RouteNotFound,
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("unknown API key")]
    UnknownKey,
    #[error(transparent)]
    KeyRejected(#[from] KeyRejection),
    #[error(transparent)]
    Denied(#[from] Denial),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("request target too long")]
    UriTooLong,
    #[error("the request body made no progress for {0:?}")]
    BodyTimeout(Duration),
    #[error("too many failed authentications")]
    Throttled(Refusal),
    #[error("request head too large")]
    HeadersTooLarge,
    #[error("the request body could not be read")]
    InvalidRequestBody,
    #[error("key store unavailable")]
    KeyStoreUnavailable(#[source] Arc<StoreError>),
    #[error("key store returned a corrupt record")]
    KeyStoreCorrupt(#[source] Arc<StoreError>),
    #[error("upstream unavailable")]
    UpstreamUnavailable(#[source] crate::upstream::UpstreamError),
    #[error("upstream timed out")]
    UpstreamTimeout(Duration),
}

impl From<Arc<StoreError>> for GatewayError {
    fn from(e: Arc<StoreError>) -> Self {
        if e.is_unavailable() {
            GatewayError::KeyStoreUnavailable(e)
        } else {
            GatewayError::KeyStoreCorrupt(e)
        }
    }
}

impl GatewayError {
    /// Status, stable code, and what the caller should do.
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use GatewayError as E;
        match self {
            E::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This endpoint does not take this method; the Allow header lists those it takes.",
            ),
            E::UpgradeNotSupported => (
                StatusCode::BAD_REQUEST,
                "upgrade_not_supported",
                "Protocol upgrades (WebSocket, h2c upgrade) are not supported; use HTTP/1.1 or HTTP/2.",
            ),
            E::Throttled(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failed_attempts",
                "Too many requests from this client presented keys that do not exist; retry after the time in Retry-After with a valid key.",
            ),
            E::BodyTimeout(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "The request body stopped arriving; send it whole, without long pauses.",
            ),
            E::UriTooLong => (
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                "The URL is longer than this gateway takes; send long parameters in the body.",
            ),
            E::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "The request headers are larger than this gateway takes; send fewer or shorter ones.",
            ),
            E::InvalidRequestBody => (
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "The request body could not be read (a malformed chunked encoding, or it stopped short); send it again.",
            ),
            E::InvalidHost => (
                StatusCode::BAD_REQUEST,
                "invalid_host",
                "Send exactly one Host header (HTTP/1.1), equal to :authority on HTTP/2.",
            ),
            E::InvalidPath(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_path",
                "The path is ambiguous (dot segments, encoded '/', '\\' or '.', ';' or empty segments); send a plain path.",
            ),
            E::RouteNotFound => (
                StatusCode::NOT_FOUND,
                "route_not_found",
                "No route serves this path; check the endpoint URL.",
            ),
            E::Project(ProjectError::Missing) => (
                StatusCode::BAD_REQUEST,
                "missing_project",
                "This endpoint needs a project id in the path or query; check the endpoint URL.",
            ),
            E::Project(ProjectError::Ambiguous) => (
                StatusCode::BAD_REQUEST,
                "ambiguous_project",
                "The request names its project more than once; send it once.",
            ),
            E::Credential(CredentialError::Missing) => (
                StatusCode::UNAUTHORIZED,
                "missing_api_key",
                "Send your API key in the 'apikey' header or as 'Authorization: Bearer <key>'.",
            ),
            E::Credential(CredentialError::Conflicting) => (
                StatusCode::BAD_REQUEST,
                "conflicting_credentials",
                "The request carries two different API keys; send exactly one.",
            ),
            E::Credential(CredentialError::Malformed) | E::UnknownKey => (
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "The API key is not valid; check it was copied whole, or create a new one.",
            ),
            E::KeyRejected(KeyRejection::Revoked) => (
                StatusCode::UNAUTHORIZED,
                "key_revoked",
                "This API key has been revoked; use another key or ask its owner to re-activate it.",
            ),
            E::KeyRejected(KeyRejection::Expired) => (
                StatusCode::UNAUTHORIZED,
                "key_expired",
                "This API key has expired; create a new one.",
            ),
            E::KeyRejected(KeyRejection::Rotated) => (
                StatusCode::UNAUTHORIZED,
                "key_rotated",
                "This secret was replaced when its key was rotated; use the new secret.",
            ),
            E::KeyRejected(KeyRejection::LegacySunset) => (
                StatusCode::UNAUTHORIZED,
                "legacy_key_sunset",
                "Legacy key and secret pairs are no longer accepted (see the Sunset header sent before); create an API key.",
            ),
            E::KeyRejected(KeyRejection::OwnerDisabled) => (
                StatusCode::UNAUTHORIZED,
                "user_disabled",
                "The owner of this API key is disabled; ask an org admin.",
            ),
            E::Denied(Denial::OrgMismatch) => (
                StatusCode::FORBIDDEN,
                "org_mismatch",
                "This API key belongs to another organisation; use a key of the organisation that owns this endpoint.",
            ),
            E::Denied(Denial::GuestNotAllowed) => (
                StatusCode::FORBIDDEN,
                "guest_not_allowed",
                "Guests cannot use API keys; ask an org admin for a member role.",
            ),
            E::Denied(Denial::ProjectNotFound) => (
                StatusCode::NOT_FOUND,
                "project_not_found",
                "No such project in this organisation; check the project or endpoint id.",
            ),
            E::Denied(Denial::ProjectArchived) => (
                StatusCode::FORBIDDEN,
                "project_archived",
                "This project is archived; ask an admin of its org to restore it, or use another.",
            ),
            E::Denied(Denial::ProjectAccessDenied) => (
                StatusCode::FORBIDDEN,
                "project_access_denied",
                "The key's owner has no access to this project; ask a project admin to add them.",
            ),
            E::Denied(Denial::KeyProjectMismatch) => (
                StatusCode::FORBIDDEN,
                "key_project_mismatch",
                "This API key is restricted to other projects; use a key for this project.",
            ),
            E::Denied(Denial::InsufficientScope) => (
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                "This API key lacks a scope this endpoint requires; create a key with the needed scopes.",
            ),
            E::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is larger than this gateway accepts; send a smaller file.",
            ),
            E::KeyStoreUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "key_store_unavailable",
                "The key could not be verified right now; retry after the time in Retry-After.",
            ),
            E::KeyStoreCorrupt(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "The gateway failed to read its key store; retry later or contact the operator.",
            ),
            E::UpstreamUnavailable(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "The backend could not be reached; retry later.",
            ),
            E::UpstreamTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "The backend did not answer in time; retry later.",
            ),
        }
    }

    /// The stable code (also the `outcome` metric label).
    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    /// The JSON error response in `style`, with the headers its status requires.
    pub fn to_response(&self, style: ErrorStyle) -> Response<Full<Bytes>> {
        let (status, code, message) = self.parts();
        let mut res = json_response(status, static_body(style, status, code, message));
        let challenge = match self {
            GatewayError::Credential(CredentialError::Missing) => CHALLENGE,
            _ => CHALLENGE_INVALID_KEY,
        };
        add_status_headers(&mut res, challenge);
        match self {
            GatewayError::MethodNotAllowed(allow) => {
                res.headers_mut().insert(header::ALLOW, allow.clone());
            }
            GatewayError::Throttled(
                Refusal::Client { retry_after } | Refusal::UnknownKeys { retry_after },
            ) => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        res
    }
}

/// The headers an error's status requires: `challenge` on a 401, `Retry-After` on a 503 (every
/// 503 of the data plane and the management API is the key store's).
pub fn add_status_headers<B>(res: &mut Response<B>, challenge: HeaderValue) {
    match res.status() {
        StatusCode::UNAUTHORIZED => {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            res.headers_mut().insert(header::RETRY_AFTER, RETRY_AFTER);
        }
        _ => {}
    }
}

/// A response in the error shape every keygate endpoint uses.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(status, json_body(code, message))
}

/// The body of one of the data plane's own errors. Its code and message are fixed, so each
/// worker thread writes it once: a rejected request should cost little more than parsing it.
fn static_body(
    style: ErrorStyle,
    status: StatusCode,
    code: &'static str,
    message: &'static str,
) -> Bytes {
    type Made = (ErrorStyle, &'static str, &'static str, Bytes);
    thread_local! {
        static BODIES: RefCell<Vec<Made>> = const { RefCell::new(Vec::new()) };
    }
    BODIES.with_borrow_mut(|bodies| {
        let found = bodies
            .iter()
            .find(|(s, c, m, _)| *s == style && *c == code && *m == message);
        if let Some((_, _, _, body)) = found {
            return body.clone();
        }
        let body = match style {
            ErrorStyle::Keygate => json_body(code, message),
            ErrorStyle::Clarifai => clarifai_body(status, code, message),
            ErrorStyle::Graphql => graphql_body(code, message),
        };
        bodies.push((style, code, message, body.clone()));
        body
    })
}

/// Clarifai's status object, with the Clarifai code for the condition and keygate's message and
/// code as its details: what the Clarifai clients read.
fn clarifai_body(status: StatusCode, code: &str, message: &str) -> Bytes {
    let (number, description) = match code {
        "missing_api_key" => (11009, "API key not found"),
        "invalid_api_key" | "key_revoked" | "key_expired" | "key_rotated" | "legacy_key_sunset"
        | "user_disabled" => (11008, "Invalid API key or Invalid API key/application pair"),
        "insufficient_scope"
        | "org_mismatch"
        | "guest_not_allowed"
        | "project_access_denied"
        | "key_project_mismatch" => (11007, "API key has insufficient permissions"),
        "too_many_failed_attempts" => (11005, "Making too many requests"),
        "route_not_found" | "project_not_found" => (11101, "Resource does not exist"),
        "method_not_allowed" => (11103, "Method not allowed"),
        _ if status.is_server_error() => (98004, "Internal server issue"),
        _ => (11102, "Invalid request"),
    };
    let status = serde_json::json!({
        "status": {
            "code": number,
            "description": description,
            "details": format!("{message} ({code})"),
        }
    });
    Bytes::from(status.to_string())
}

/// A GraphQL response with one error, its code in `extensions`.
fn graphql_body(code: &str, message: &str) -> Bytes {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code } }]
    });
    Bytes::from(body.to_string())
}

/// `{"error":{"code","message"},"message"}`, written into one buffer rather than through a
/// `serde_json::Value` tree or `format!` of quoted strings.
fn json_body(code: &str, message: &str) -> Bytes {
    let mut body = Vec::with_capacity(48 + code.len() + 2 * message.len());
    let mut quoted = |prefix: &[u8], s: &str| {
        body.extend_from_slice(prefix);
        serde_json::to_writer(&mut body, s).expect("a string always serializes");
    };
    quoted(br#"{"error":{"code":"#, code);
    quoted(br#","message":"#, message);
    quoted(br#"},"message":"#, message);
    body.push(b'}');
    Bytes::from(body)
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

#[cfg(test)]
mod tests;
