//! Access tokens: JWTs signed with Ed25519 (`EdDSA`), so that other services can check
//! them with the public key from the JWKS endpoint, without asking the ledger. The key pair
//! is made once and kept in the auth database, so tokens survive a restart.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::store::{AuthStore, Role};

/// The `iss` of every access token.
pub const ISSUER: &str = "tollbook";
/// The name of the signing key in the auth database.
const SIGNING_KEY: &str = "ed25519-signing-key";

/// What an access token says. The server trusts only `sid` and `gen` (checked against the
/// session); the rest is for other services that verify tokens on their own.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user's login.
    pub sub: String,
    pub sid: Uuid,
    /// The session's generation when this token was issued.
    pub r#gen: u64,
    pub role: Role,
    /// The account number a partner or customer acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub iat: i64,
    pub exp: i64,
}

pub struct SigningKeys {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The raw 32-byte public key, as JWKS publishes it.
    public: Vec<u8>,
    validation: Validation,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("auth store: {0}")]
    Store(#[from] sled::Error),
    #[error("the stored signing key is not a valid Ed25519 PKCS#8 key")]
    Invalid,
    #[error("no randomness for a new signing key")]
    Random,
}

impl SigningKeys {
    /// The stored key pair, made and stored first if there is none.
    pub fn load_or_create(store: &AuthStore) -> Result<Self, KeyError> {
        let pkcs8 = match store.key(SIGNING_KEY)? {
            Some(pkcs8) => pkcs8,
            None => {
                let fresh =
                    Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).map_err(|_| KeyError::Random)?;
                // Another process starting on the same directory cannot race us (sled
                // locks it), but keep whichever key got there first all the same.
                store.key_or_insert(SIGNING_KEY, fresh.as_ref())?
            }
        };
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| KeyError::Invalid)?;
        let public = pair.public_key().as_ref().to_vec();
        let kid = hex::encode(&Sha256::digest(&public)[..8]);
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        // The ledger both issues and checks these on one clock: no grace period.
        validation.leeway = 0;
        Ok(SigningKeys {
            kid,
            encoding: EncodingKey::from_ed_der(&pkcs8),
            decoding: DecodingKey::from_ed_der(&public),
            public,
            validation,
        })
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing with a valid Ed25519 key cannot fail")
    }

    /// The claims of a token this server signed and that has not expired.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok().map(|data| data.claims)
    }

    /// The public key as a JSON Web Key Set (RFC 7517, OKP keys per RFC 8037).
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: vec![Jwk {
                kty: "OKP",
                crv: "Ed25519",
                alg: "EdDSA",
                r#use: "sig",
                kid: self.kid.clone(),
                x: URL_SAFE_NO_PAD.encode(&self.public),
            }],
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Jwk {
    #[schema(example = "OKP")]
    pub kty: &'static str,
    #[schema(example = "Ed25519")]
    pub crv: &'static str,
    #[schema(example = "EdDSA")]
    pub alg: &'static str,
    #[schema(example = "sig")]
    pub r#use: &'static str,
    pub kid: String,
    /// The public key, base64url without padding.
    pub x: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: "ann".into(),
            sid: Uuid::now_v7(),
            r#gen: 3,
            role: Role::Partner,
            account: Some("P1".into()),
            iat: 0,
            exp,
        }
    }

    #[test]
    fn keys_persist_and_tokens_verify_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let future = chrono::Utc::now().timestamp() + 60;
        let token = {
            let store = AuthStore::open(dir.path()).unwrap();
            SigningKeys::load_or_create(&store).unwrap().sign(&claims(future))
        };
        let store = AuthStore::open(dir.path()).unwrap();
        let keys = SigningKeys::load_or_create(&store).unwrap();
        let verified = keys.verify(&token).expect("a token from before the restart verifies");
        assert_eq!((verified.sub.as_str(), verified.r#gen), ("ann", 3));
        // One byte changed in the signature and it is refused.
        let mut forged = token.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert!(keys.verify(std::str::from_utf8(&forged).unwrap()).is_none());
        assert!(keys.verify(&keys.sign(&claims(chrono::Utc::now().timestamp() - 1))).is_none(), "expired");
        let jwks = keys.jwks();
        assert_eq!(URL_SAFE_NO_PAD.decode(&jwks.keys[0].x).unwrap().len(), 32);
    }
}
