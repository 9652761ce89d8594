//! Where a portal login link points. The JSON API issues links
//! (`POST /api/v1/accounts/{number}/login-link`) and the portal opens them: both agree on
//! the path here, and on how to tell that a request came over TLS.

use axum::http::{HeaderMap, header};

/// Where login links point: the token follows, as one more path segment.
pub const LOGIN_LINK_PATH: &str = "/portal/login";

/// True when the request reached us over TLS, as far as a proxy in front says.
pub fn came_over_tls(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok());
    let forwarded = headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()).unwrap_or("");
    forwarded_proto.is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
        || forwarded.to_ascii_lowercase().split([';', ',']).any(|part| part.trim() == "proto=https")
}

/// The URL of a login link: under the public URL when one is set, else under the scheme
/// and host the client used. `X-Forwarded-Proto` only chooses between http and https;
/// the host is the request's.
pub fn link_url(public_url: Option<&str>, headers: &HeaderMap, token: &str) -> String {
    let origin = match public_url {
        Some(url) => url.to_owned(),
        None => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            let scheme = if came_over_tls(headers) { "https" } else { "http" };
            format!("{scheme}://{host}")
        }
    };
    format!("{origin}{LOGIN_LINK_PATH}/{token}")
}
