//! The API Keys page: plain HTML, CSS and JavaScript built into the binary (no build step, no
//! asset from another host), served beside the management API it speaks.
//!
//! Owns: the files and the headers they are served with: a Content-Security-Policy that allows
//! only these files and requests to this origin (no inline script or style, no frames),
//! `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`, `X-Content-Type-Options: nosniff`,
//! `Cache-Control: no-store`. The page keeps the key it signs in with in `sessionStorage` and
//! sends it as a header, so no cookie carries a credential and CSRF has nothing to ride on.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::error::json_error;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// Only this origin's files and API; nothing inline, no frames, no forms posted elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `/console` (and `/console/`), `/console/console.js`, `/console/console.css`; else 404.
pub fn asset(path: &str) -> Response<Full<Bytes>> {
    let (body, content_type) = match path {
        "/console" | "/console/" => (INDEX, "text/html; charset=utf-8"),
        "/console/console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/console/console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => {
            return json_error(
                StatusCode::NOT_FOUND,
                "route_not_found",
                "No such page; the console is at /console.",
            );
        }
    };
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = res.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    res
}
