//! Login links: a URL an operator or a partner hands to a customer, which opens a portal
//! session once, before it expires. The token in the URL is the link's id and expiry with
//! an HMAC over both, so an altered or made-up token is refused without a database read;
//! whether the link is still unused is the auth store's to say (a signature cannot).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::SecureRandom;
use uuid::Uuid;

use super::store::AuthStore;

/// The name of the HMAC key in the auth database: made once, so links survive a restart.
const LINK_KEY: &str = "login-link-hmac-key";
const KEY_BYTES: usize = 32;
const ID_BYTES: usize = 16;
const EXPIRY_BYTES: usize = 8;
const TAG_BYTES: usize = 32;
const TOKEN_BYTES: usize = ID_BYTES + EXPIRY_BYTES + TAG_BYTES;

pub struct LinkSigner {
    key: hmac::Key,
}

impl LinkSigner {
    pub fn load_or_create(store: &AuthStore, random: &dyn SecureRandom) -> Result<Self, Box<dyn std::error::Error>> {
        let mut fresh = [0u8; KEY_BYTES];
        random.fill(&mut fresh).map_err(|_| "no randomness for the login link key")?;
        let key = store.key_or_insert(LINK_KEY, &fresh)?;
        if key.len() != KEY_BYTES {
            return Err("the stored login link key is not 32 bytes".into());
        }
        Ok(LinkSigner { key: hmac::Key::new(hmac::HMAC_SHA256, &key) })
    }

    /// The token of link `id` expiring at `expires_at` (Unix seconds).
    pub fn sign(&self, id: Uuid, expires_at: i64) -> String {
        let mut bytes = Vec::with_capacity(TOKEN_BYTES);
        bytes.extend_from_slice(id.as_bytes());
        bytes.extend_from_slice(&expires_at.to_be_bytes());
        let tag = hmac::sign(&self.key, &bytes);
        bytes.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The link id and expiry a token carries, if the token is one this server signed.
    pub fn verify(&self, token: &str) -> Option<(Uuid, i64)> {
        // Bounded before decoding: a huge path segment costs nothing.
        if token.len() > TOKEN_BYTES * 2 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).ok().filter(|b| b.len() == TOKEN_BYTES)?;
        let (signed, tag) = bytes.split_at(ID_BYTES + EXPIRY_BYTES);
        hmac::verify(&self.key, signed, tag).ok()?;
        let id = Uuid::from_slice(&signed[..ID_BYTES]).ok()?;
        let expires_at = i64::from_be_bytes(signed[ID_BYTES..].try_into().ok()?);
        Some((id, expires_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_and_an_altered_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        let signer = LinkSigner::load_or_create(&store, &ring::rand::SystemRandom::new()).unwrap();
        let id = Uuid::now_v7();
        let token = signer.sign(id, 1_900_000_000);
        assert_eq!(signer.verify(&token), Some((id, 1_900_000_000)));
        // Every single-character change is refused.
        for i in 0..token.len() {
            let mut altered = token.clone().into_bytes();
            altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(altered).unwrap();
            if altered != token {
                assert_eq!(signer.verify(&altered), None, "altered at {i}");
            }
        }
        assert_eq!(signer.verify(""), None);
        assert_eq!(signer.verify(&format!("{token}A")), None);
        // The same key after a restart: old links still verify.
        let again = LinkSigner::load_or_create(&store, &ring::rand::SystemRandom::new()).unwrap();
        assert_eq!(again.verify(&token), Some((id, 1_900_000_000)));
    }

    proptest::proptest! {
        /// Whatever the id and expiry, a token gives them back, and no change of one byte
        /// of it (decoded) passes: the HMAC covers every byte.
        #[test]
        fn tokens_round_trip_and_resist_any_byte_change(
            id in proptest::prelude::any::<u128>(),
            expires_at in proptest::prelude::any::<i64>(),
            byte in 0..TOKEN_BYTES,
            flip in 1u8..=255,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = AuthStore::open(dir.path()).unwrap();
            let signer = LinkSigner::load_or_create(&store, &ring::rand::SystemRandom::new()).unwrap();
            let id = Uuid::from_u128(id);
            let token = signer.sign(id, expires_at);
            proptest::prop_assert_eq!(signer.verify(&token), Some((id, expires_at)));
            let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
            bytes[byte] ^= flip;
            proptest::prop_assert_eq!(signer.verify(&URL_SAFE_NO_PAD.encode(bytes)), None);
        }
    }
}
