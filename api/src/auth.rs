//! Who is calling. Today only the operator's admin key exists; API tokens, sessions and
//! the partner and customer roles will become further `Caller` variants and credential
//! checks in [`authenticate`], without the handlers changing.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::server::AppState;

/// The headers a credential may arrive in, besides `Authorization: Bearer`.
const TOKEN_HEADERS: [&str; 2] = ["x-auth-token", "token"];

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The operator, with every right.
    Admin,
}

impl Caller {
    /// The actor recorded on the events this caller's commands produce.
    pub fn actor(&self) -> String {
        match self {
            Caller::Admin => "admin".to_owned(),
        }
    }
}

/// The credentials the server accepts, fixed at start-up.
#[derive(Clone, Default)]
pub struct Credentials {
    /// SHA-256 of the admin key: comparing digests takes the same time whatever the
    /// guess, and the key itself does not stay in memory longer than start-up.
    admin_key_digest: Option<[u8; 32]>,
}

impl Credentials {
    pub fn new(admin_key: Option<&str>) -> Self {
        // An empty key would let an empty `token:` header in.
        let admin_key_digest = admin_key.filter(|k| !k.is_empty()).map(|k| Sha256::digest(k.as_bytes()).into());
        Credentials { admin_key_digest }
    }

    fn authenticate(&self, presented: &str) -> Option<Caller> {
        let expected = self.admin_key_digest?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let difference = expected.iter().zip(digest.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (difference == 0).then_some(Caller::Admin)
    }
}

/// The credential a request presents, from whichever header carries it.
fn presented_credential(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    bearer
        .or_else(|| TOKEN_HEADERS.iter().find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok())))
        .map(str::trim)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        presented_credential(&parts.headers)
            .and_then(|credential| state.credentials.authenticate(credential))
            .ok_or_else(ApiError::unauthorized)
    }
}
