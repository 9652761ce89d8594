//! Durable authentication data: users, API tokens, sessions and the signing key, in their
//! own sled database beside the ledger (`<data>/auth`). None of it is money, so it is kept
//! as plain records rather than events; every change is flushed before it is answered.
//!
//! Secrets never rest here in the clear: passwords as argon2 hashes, API and refresh tokens
//! as SHA-256 digests (they are 256 random bits, so a fast hash is enough to make a stolen
//! copy of this database useless for signing in).

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use domain::AccountId;
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use uuid::Uuid;

/// Where the auth database lives inside the data directory.
pub const AUTH_DIR: &str = "auth";

const USERS: &str = "users";
const TOKENS: &str = "tokens";
const TOKEN_IDS: &str = "token_ids";
const SESSIONS: &str = "sessions";
const REFRESH: &str = "refresh";
const KEYS: &str = "keys";
const LOGIN_LINKS: &str = "login_links";
const PORTAL_SESSIONS: &str = "portal_sessions";

/// What a user may do: see [`crate::auth::Caller`] for the rights of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Partner,
    Customer,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: Uuid,
    pub login: String,
    pub role: Role,
    /// The account a partner or customer user acts for.
    pub account: Option<AccountId>,
    /// That account's number (numbers never change), for tokens and answers.
    pub account_number: Option<String>,
    /// PHC string (argon2id); a user without one signs in with API tokens only.
    pub password_hash: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The password was set by someone else (an admin, or the user's partner): it opens
    /// no session until the user chooses its own. Absent on users made before it existed.
    #[serde(default)]
    pub password_must_change: bool,
    /// When the password was last set, by anyone; none since the user was made.
    #[serde(default)]
    pub password_changed_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: Uuid,
    pub login: String,
    pub description: Option<String>,
    /// The token's first characters, so that a person can tell their tokens apart.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Empty: any address.
    pub allowed_ips: Vec<IpNet>,
    /// The id of the user it was made for: a user removed and made again under the same
    /// login does not inherit it. Absent on tokens made before it was recorded.
    #[serde(default)]
    pub user_id: Option<Uuid>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: Uuid,
    pub login: String,
    pub created_at: DateTime<Utc>,
    /// When the refresh token stops working, and with it the session.
    pub expires_at: DateTime<Utc>,
    /// Bumped by every refresh: access tokens carry it, so the pair a refresh replaces
    /// stops working at once, not only when it expires.
    pub generation: u64,
    /// The digest of the current refresh token, to drop its index entry on logout.
    pub refresh_digest: [u8; 32],
    /// A session opened with a restricted API token keeps the token's restriction.
    pub allowed_ips: Vec<IpNet>,
    /// The API token the session was opened with; none for a password. The session lives
    /// only as long as the token does: its expiry is capped at the token's, and revoking
    /// the token ends it.
    #[serde(default)]
    pub token: Option<Uuid>,
    /// The user (its id, not only its login) and role the session was opened for: a user
    /// removed, or made again with another role, does not keep its sessions. Absent on
    /// sessions opened before they were recorded.
    #[serde(default)]
    pub user_id: Option<Uuid>,
    #[serde(default)]
    pub role: Option<Role>,
}

/// Where a login link stands. A link leaves `Issued` once, so it opens one session at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Issued,
    Used,
    Revoked,
}

/// A login link as issued. The token in the URL is signed and names this record; the
/// record says whether it may still be used, which a signature alone cannot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginLinkRecord {
    pub id: Uuid,
    pub account: AccountId,
    pub account_number: String,
    /// Who asked for it (the actor recorded on events).
    pub issued_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub state: LinkState,
    pub changed_at: Option<DateTime<Utc>>,
}

/// Why a login link did not open a session.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkFailure {
    Unknown,
    Used,
    Revoked,
    Expired,
    Storage(String),
}

/// A browser session of the portal, found by the digest of its cookie.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalSessionRecord {
    pub id: Uuid,
    /// The account the session acts for.
    pub account: AccountId,
    /// The user who signed in with a password; none for a login link. A user's session
    /// ends when the user is removed.
    pub login: Option<String>,
    /// That user's id and role when it signed in: the session ends if the login is made
    /// again for another user or role.
    #[serde(default)]
    pub user_id: Option<Uuid>,
    #[serde(default)]
    pub role: Option<Role>,
    /// Recorded on the events the session's forms produce.
    pub actor: String,
    /// The token every form of this session must carry (CSRF).
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The sessions a password change leaves open: the one it was made from, if any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeptSessions {
    pub session: Option<Uuid>,
    pub portal_session: Option<Uuid>,
}

/// What [`AuthStore::purge_expired`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub sessions: usize,
    pub portal_sessions: usize,
    pub login_links: usize,
}

/// A refresh that did not go through.
#[derive(Debug)]
pub enum RefreshFailure {
    /// Unknown, already used, or the session has ended.
    Invalid,
    /// The session has ended (reported as `Invalid` once it is dropped).
    Ended(Box<SessionRecord>),
    Storage(String),
}

pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// True when `ip` may use a credential restricted to `allowed` (empty: no restriction).
/// An unknown peer address is refused by any restriction.
pub fn ip_allowed(allowed: &[IpNet], ip: Option<IpAddr>) -> bool {
    if allowed.is_empty() {
        return true;
    }
    // An IPv4 client reaching an IPv6 socket shows up as ::ffff:a.b.c.d.
    let ip = ip.map(|ip| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    });
    ip.is_some_and(|ip| allowed.iter().any(|net| net.contains(&ip)))
}

#[derive(Clone)]
pub struct AuthStore {
    db: sled::Db,
    flusher: crate::flush::GroupFlush,
    users: sled::Tree,
    tokens: sled::Tree,
    token_ids: sled::Tree,
    sessions: sled::Tree,
    refresh: sled::Tree,
    keys: sled::Tree,
    login_links: sled::Tree,
    portal_sessions: sled::Tree,
}

type StoreResult<T> = Result<T, sled::Error>;

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("auth records always serialize")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| sled::Error::Unsupported(format!("corrupt auth record: {e}")))
}

impl AuthStore {
    pub fn open(path: &std::path::Path) -> StoreResult<Self> {
        let db = sled::open(path)?;
        Ok(AuthStore {
            users: db.open_tree(USERS)?,
            tokens: db.open_tree(TOKENS)?,
            token_ids: db.open_tree(TOKEN_IDS)?,
            sessions: db.open_tree(SESSIONS)?,
            refresh: db.open_tree(REFRESH)?,
            keys: db.open_tree(KEYS)?,
            login_links: db.open_tree(LOGIN_LINKS)?,
            portal_sessions: db.open_tree(PORTAL_SESSIONS)?,
            flusher: crate::flush::GroupFlush::new(db.clone()),
            db,
        })
    }

    /// Makes every change so far durable; called before any change is acknowledged.
    async fn flush(&self) -> StoreResult<()> {
        self.flusher.flush().await
    }

    pub fn key(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.keys.get(name)?.map(|v| v.to_vec()))
    }

    /// Stores a key unless one is there already; returns the one that is kept.
    pub fn key_or_insert(&self, name: &str, fresh: &[u8]) -> StoreResult<Vec<u8>> {
        match self.keys.compare_and_swap(name, None as Option<&[u8]>, Some(fresh))? {
            Ok(()) => {
                self.db.flush()?;
                Ok(fresh.to_vec())
            }
            Err(existing) => Ok(existing.current.map(|v| v.to_vec()).unwrap_or_default()),
        }
    }

    // Users.

    pub fn user(&self, login: &str) -> StoreResult<Option<UserRecord>> {
        self.users.get(login)?.map(|v| decode(&v)).transpose()
    }

    /// Inserts a user unless the login is taken; false when it is.
    pub async fn insert_user(&self, user: &UserRecord) -> StoreResult<bool> {
        let inserted =
            self.users.compare_and_swap(user.login.as_bytes(), None as Option<&[u8]>, Some(encode(user)))?.is_ok();
        self.flush().await?;
        Ok(inserted)
    }

    /// Users in login order after `after`, at most `limit`.
    pub fn users(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<UserRecord>> {
        let range = match after {
            Some(after) => {
                self.users.range::<&[u8], _>((std::ops::Bound::Excluded(after.as_bytes()), std::ops::Bound::Unbounded))
            }
            None => self.users.iter(),
        };
        range.take(limit).map(|entry| entry.and_then(|(_, v)| decode(&v))).collect()
    }

    /// Whether any user is an admin: without an admin key, only such a user can sign in
    /// and make the ledger's first accounts and users.
    pub fn has_admin(&self) -> StoreResult<bool> {
        for entry in self.users.iter() {
            let (_, value) = entry?;
            if decode::<UserRecord>(&value)?.role == Role::Admin {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Removes a user with every token and session of theirs; false if there was none.
    pub async fn remove_user(&self, login: &str) -> StoreResult<bool> {
        if self.users.remove(login)?.is_none() {
            return Ok(false);
        }
        for token in self.tokens_of(Some(login))? {
            self.remove_token_record(token.id)?;
        }
        for session in self.sessions_matching(|s| s.login == login)? {
            self.remove_session_record(&session)?;
        }
        self.flush().await?;
        Ok(true)
    }

    /// Gives user `login` (the very user `user_id`, not one made again under its login) a
    /// new password hash, and ends its sessions, API and portal, but for the ones named
    /// in `keep` (the session the user changed its own password from). The user record
    /// is swapped with a compare-and-swap, so a concurrent change of the same user is
    /// not lost; the whole is flushed before it is answered. False when there is no
    /// such user.
    pub async fn set_password(
        &self,
        login: &str,
        user_id: Uuid,
        password_hash: String,
        must_change: bool,
        now: DateTime<Utc>,
        keep: KeptSessions,
    ) -> StoreResult<bool> {
        loop {
            let Some(current) = self.users.get(login)? else { return Ok(false) };
            let user: UserRecord = decode(&current)?;
            if user.id != user_id {
                return Ok(false);
            }
            let changed = UserRecord {
                password_hash: Some(password_hash.clone()),
                password_must_change: must_change,
                password_changed_at: Some(now),
                ..user
            };
            if self.users.compare_and_swap(login, Some(current), Some(encode(&changed)))?.is_ok() {
                break;
            }
        }
        for session in self.sessions_matching(|s| s.login == login && Some(s.id) != keep.session)? {
            self.remove_session_record(&session)?;
        }
        for entry in self.portal_sessions.iter() {
            let (key, bytes) = entry?;
            let session: PortalSessionRecord = decode(&bytes)?;
            if session.login.as_deref() == Some(login) && Some(session.id) != keep.portal_session {
                self.portal_sessions.remove(key)?;
            }
        }
        self.flush().await?;
        Ok(true)
    }

    // API tokens.

    pub async fn insert_token(&self, record: &TokenRecord, token_digest: [u8; 32]) -> StoreResult<()> {
        self.tokens.insert(token_digest, encode(record))?;
        self.token_ids.insert(record.id.as_bytes(), &token_digest)?;
        self.flush().await
    }

    pub fn token_by_digest(&self, token_digest: &[u8; 32]) -> StoreResult<Option<TokenRecord>> {
        self.tokens.get(token_digest)?.map(|v| decode(&v)).transpose()
    }

    pub fn token(&self, id: Uuid) -> StoreResult<Option<TokenRecord>> {
        match self.token_ids.get(id.as_bytes())? {
            Some(token_digest) => self.tokens.get(token_digest)?.map(|v| decode(&v)).transpose(),
            None => Ok(None),
        }
    }

    /// The tokens of one user, or of everyone, oldest first.
    pub fn tokens_of(&self, login: Option<&str>) -> StoreResult<Vec<TokenRecord>> {
        let mut tokens: Vec<TokenRecord> = self
            .tokens
            .iter()
            .map(|entry| entry.and_then(|(_, v)| decode::<TokenRecord>(&v)))
            .filter(|t| !matches!((t, login), (Ok(t), Some(login)) if t.login != login))
            .collect::<StoreResult<_>>()?;
        // Ids are UUIDv7: in creation order.
        tokens.sort_by_key(|t| t.id);
        Ok(tokens)
    }

    fn remove_token_record(&self, id: Uuid) -> StoreResult<bool> {
        match self.token_ids.remove(id.as_bytes())? {
            Some(token_digest) => Ok(self.tokens.remove(token_digest)?.is_some()),
            None => Ok(false),
        }
    }

    /// Removes a token with every session opened with it; false if there was none.
    pub async fn remove_token(&self, id: Uuid) -> StoreResult<bool> {
        let removed = self.remove_token_record(id)?;
        for session in self.sessions_matching(|s| s.token == Some(id))? {
            self.remove_session_record(&session)?;
        }
        self.flush().await?;
        Ok(removed)
    }

    /// Whether token `id` still exists (an existing token may still have expired).
    pub fn token_exists(&self, id: Uuid) -> StoreResult<bool> {
        self.token_ids.contains_key(id.as_bytes())
    }

    // Sessions.

    pub async fn insert_session(&self, session: &SessionRecord) -> StoreResult<()> {
        self.sessions.insert(session.id.as_bytes(), encode(session))?;
        self.refresh.insert(session.refresh_digest, session.id.as_bytes())?;
        self.flush().await
    }

    pub fn session(&self, id: Uuid) -> StoreResult<Option<SessionRecord>> {
        self.sessions.get(id.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    /// The session whose current refresh token has this digest.
    pub fn session_by_refresh(&self, refresh_digest: &[u8; 32]) -> StoreResult<Option<SessionRecord>> {
        match self.refresh.get(refresh_digest)? {
            Some(id) => self.sessions.get(id)?.map(|v| decode(&v)).transpose(),
            None => Ok(None),
        }
    }

    fn sessions_matching(&self, wanted: impl Fn(&SessionRecord) -> bool) -> StoreResult<Vec<SessionRecord>> {
        self.sessions
            .iter()
            .map(|entry| entry.and_then(|(_, v)| decode::<SessionRecord>(&v)))
            .filter(|s| !matches!(s, Ok(s) if !wanted(s)))
            .collect()
    }

    fn remove_session_record(&self, session: &SessionRecord) -> StoreResult<()> {
        self.sessions.remove(session.id.as_bytes())?;
        self.refresh.remove(session.refresh_digest)?;
        Ok(())
    }

    pub async fn remove_session(&self, session: &SessionRecord) -> StoreResult<()> {
        self.remove_session_record(session)?;
        self.flush().await
    }

    // Login links and portal sessions.

    pub async fn insert_login_link(&self, link: &LoginLinkRecord) -> StoreResult<()> {
        self.login_links.insert(link.id.as_bytes(), encode(link))?;
        self.flush().await
    }

    pub fn login_link(&self, id: Uuid) -> StoreResult<Option<LoginLinkRecord>> {
        self.login_links.get(id.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    /// Moves a link out of `Issued` into `to`, durably, with a compare-and-swap: of two
    /// requests racing with the same link, exactly one wins. Gives the link as it was.
    pub async fn end_login_link(
        &self,
        id: Uuid,
        to: LinkState,
        now: DateTime<Utc>,
    ) -> Result<LoginLinkRecord, LinkFailure> {
        let storage = |e: sled::Error| LinkFailure::Storage(e.to_string());
        loop {
            let Some(current) = self.login_links.get(id.as_bytes()).map_err(storage)? else {
                return Err(LinkFailure::Unknown);
            };
            let link: LoginLinkRecord = decode(&current).map_err(storage)?;
            match link.state {
                LinkState::Used => return Err(LinkFailure::Used),
                LinkState::Revoked => return Err(LinkFailure::Revoked),
                LinkState::Issued if to == LinkState::Used && link.expires_at <= now => {
                    return Err(LinkFailure::Expired);
                }
                LinkState::Issued => {}
            }
            let ended = LoginLinkRecord { state: to, changed_at: Some(now), ..link.clone() };
            let swapped = self
                .login_links
                .compare_and_swap(id.as_bytes(), Some(current), Some(encode(&ended)))
                .map_err(storage)?;
            if swapped.is_ok() {
                self.flush().await.map_err(storage)?;
                return Ok(link);
            }
        }
    }

    pub async fn insert_portal_session(
        &self,
        cookie_digest: [u8; 32],
        session: &PortalSessionRecord,
    ) -> StoreResult<()> {
        self.portal_sessions.insert(cookie_digest, encode(session))?;
        self.flush().await
    }

    pub fn portal_session(&self, cookie_digest: &[u8; 32]) -> StoreResult<Option<PortalSessionRecord>> {
        self.portal_sessions.get(cookie_digest)?.map(|v| decode(&v)).transpose()
    }

    pub async fn remove_portal_session(&self, cookie_digest: &[u8; 32]) -> StoreResult<()> {
        self.portal_sessions.remove(cookie_digest)?;
        self.flush().await
    }

    /// Removes what can never be used again: API sessions and portal sessions past their
    /// expiry, and login links that expired more than `link_history` ago (until then a
    /// link can still be looked up, used or not, by whoever issued it).
    pub async fn purge_expired(&self, now: DateTime<Utc>, link_history: chrono::Duration) -> StoreResult<Purged> {
        let mut purged = Purged::default();
        for entry in self.sessions.iter() {
            let (_, bytes) = entry?;
            let session: SessionRecord = decode(&bytes)?;
            if session.expires_at <= now {
                self.remove_session_record(&session)?;
                purged.sessions += 1;
            }
        }
        for entry in self.portal_sessions.iter() {
            let (key, bytes) = entry?;
            if decode::<PortalSessionRecord>(&bytes)?.expires_at <= now {
                self.portal_sessions.remove(key)?;
                purged.portal_sessions += 1;
            }
        }
        for entry in self.login_links.iter() {
            let (key, bytes) = entry?;
            if decode::<LoginLinkRecord>(&bytes)?.expires_at + link_history <= now {
                self.login_links.remove(key)?;
                purged.login_links += 1;
            }
        }
        if purged != Purged::default() {
            self.flush().await?;
        }
        Ok(purged)
    }

    /// Swaps a session's refresh token for a new one and bumps its generation, in one
    /// transaction: of two refreshes racing with the same token, exactly one wins.
    pub async fn rotate_refresh(
        &self,
        old_digest: [u8; 32],
        new_digest: [u8; 32],
        now: DateTime<Utc>,
    ) -> Result<SessionRecord, RefreshFailure> {
        let outcome = (&self.sessions, &self.refresh).transaction(|(sessions, refresh)| {
            let abort = |failure| Err(ConflictableTransactionError::Abort(failure));
            let Some(id) = refresh.remove(&old_digest)? else { return abort(RefreshFailure::Invalid) };
            let Some(bytes) = sessions.get(&id)? else { return abort(RefreshFailure::Invalid) };
            let mut session: SessionRecord = match decode(&bytes) {
                Ok(session) => session,
                Err(e) => return abort(RefreshFailure::Storage(e.to_string())),
            };
            if session.expires_at <= now {
                return abort(RefreshFailure::Ended(Box::new(session)));
            }
            session.generation += 1;
            session.refresh_digest = new_digest;
            sessions.insert(&id, encode(&session))?;
            refresh.insert(&new_digest, &id)?;
            Ok(session)
        });
        let session = match outcome {
            Ok(session) => session,
            // Dropped outside the transaction, which an abort rolls back.
            Err(TransactionError::Abort(RefreshFailure::Ended(ended))) => {
                self.remove_session(&ended).await.map_err(|e| RefreshFailure::Storage(e.to_string()))?;
                return Err(RefreshFailure::Invalid);
            }
            Err(TransactionError::Abort(failure)) => return Err(failure),
            Err(TransactionError::Storage(e)) => return Err(RefreshFailure::Storage(e.to_string())),
        };
        self.flush().await.map_err(|e| RefreshFailure::Storage(e.to_string()))?;
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(login: &str, refresh_digest: [u8; 32], expires_at: DateTime<Utc>) -> SessionRecord {
        SessionRecord {
            id: Uuid::now_v7(),
            login: login.into(),
            created_at: Utc::now(),
            expires_at,
            generation: 0,
            refresh_digest,
            allowed_ips: vec![],
            token: None,
            user_id: None,
            role: None,
        }
    }

    #[tokio::test]
    async fn a_refresh_token_works_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        let first = session("ann", digest("r1"), Utc::now() + chrono::Duration::hours(1));
        store.insert_session(&first).await.unwrap();
        let rotated = store.rotate_refresh(digest("r1"), digest("r2"), Utc::now()).await.unwrap();
        assert_eq!((rotated.id, rotated.generation), (first.id, 1));
        assert!(matches!(
            store.rotate_refresh(digest("r1"), digest("r3"), Utc::now()).await.err(),
            Some(RefreshFailure::Invalid)
        ));
        assert_eq!(store.rotate_refresh(digest("r2"), digest("r3"), Utc::now()).await.unwrap().generation, 2);
    }

    #[tokio::test]
    async fn an_ended_session_does_not_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        let ended = session("ann", digest("r1"), Utc::now() - chrono::Duration::seconds(1));
        store.insert_session(&ended).await.unwrap();
        assert!(matches!(
            store.rotate_refresh(digest("r1"), digest("r2"), Utc::now()).await.err(),
            Some(RefreshFailure::Invalid)
        ));
        assert!(store.session(ended.id).unwrap().is_none(), "an ended session is dropped when found");
    }

    #[tokio::test]
    async fn removing_a_user_revokes_its_tokens_and_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        let user = UserRecord {
            id: Uuid::now_v7(),
            login: "ann".into(),
            role: Role::Admin,
            account: None,
            account_number: None,
            password_hash: None,
            created_at: Utc::now(),
            password_must_change: false,
            password_changed_at: None,
        };
        assert!(store.insert_user(&user).await.unwrap());
        assert!(!store.insert_user(&user).await.unwrap(), "a login is taken once");
        let token = TokenRecord {
            id: Uuid::now_v7(),
            login: "ann".into(),
            description: None,
            prefix: "tbk_x".into(),
            created_at: Utc::now(),
            expires_at: None,
            allowed_ips: vec![],
            user_id: Some(user.id),
        };
        store.insert_token(&token, digest("t1")).await.unwrap();
        let live = session("ann", digest("r1"), Utc::now() + chrono::Duration::hours(1));
        store.insert_session(&live).await.unwrap();
        assert!(store.remove_user("ann").await.unwrap());
        assert!(store.token_by_digest(&digest("t1")).unwrap().is_none());
        assert!(store.token(token.id).unwrap().is_none());
        assert!(store.session(live.id).unwrap().is_none());
        assert!(matches!(
            store.rotate_refresh(digest("r1"), digest("r2"), Utc::now()).await.err(),
            Some(RefreshFailure::Invalid)
        ));
    }

    #[tokio::test]
    async fn a_password_change_ends_every_session_of_the_user_but_the_kept_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        let user = UserRecord {
            id: Uuid::now_v7(),
            login: "ann".into(),
            role: Role::Customer,
            account: Some(AccountId(Uuid::now_v7())),
            account_number: Some("C1".into()),
            password_hash: Some("old".into()),
            created_at: Utc::now(),
            password_must_change: false,
            password_changed_at: None,
        };
        assert!(store.insert_user(&user).await.unwrap());
        let hour = chrono::Duration::hours(1);
        let (kept, ended, other_user) = (
            session("ann", digest("r1"), Utc::now() + hour),
            session("ann", digest("r2"), Utc::now() + hour),
            session("bob", digest("r3"), Utc::now() + hour),
        );
        for session in [&kept, &ended, &other_user] {
            store.insert_session(session).await.unwrap();
        }
        let portal = |login: &str| PortalSessionRecord {
            id: Uuid::now_v7(),
            account: user.account.unwrap(),
            login: Some(login.into()),
            user_id: None,
            role: None,
            actor: format!("user:{login}"),
            csrf_token: "t".into(),
            created_at: Utc::now(),
            expires_at: Utc::now() + hour,
        };
        let (ann_portal, bob_portal) = (portal("ann"), portal("bob"));
        store.insert_portal_session(digest("c1"), &ann_portal).await.unwrap();
        store.insert_portal_session(digest("c2"), &bob_portal).await.unwrap();

        let keep = KeptSessions { session: Some(kept.id), portal_session: None };
        assert!(store.set_password("ann", user.id, "new".into(), true, Utc::now(), keep).await.unwrap());
        let changed = store.user("ann").unwrap().unwrap();
        assert_eq!((changed.password_hash.as_deref(), changed.password_must_change), (Some("new"), true));
        assert!(changed.password_changed_at.is_some());
        assert!(store.session(kept.id).unwrap().is_some());
        assert!(store.session(ended.id).unwrap().is_none());
        assert!(store.session_by_refresh(&digest("r2")).unwrap().is_none(), "its refresh token is gone too");
        assert!(store.session(other_user.id).unwrap().is_some(), "another user's session is not touched");
        assert!(store.portal_session(&digest("c1")).unwrap().is_none());
        assert!(store.portal_session(&digest("c2")).unwrap().is_some());
        // A user made again under the same login is another user: not changed.
        assert!(!store.set_password("ann", Uuid::now_v7(), "x".into(), false, Utc::now(), keep).await.unwrap());
        assert!(!store.set_password("nobody", user.id, "x".into(), false, Utc::now(), keep).await.unwrap());
    }

    #[tokio::test]
    async fn revoking_a_token_ends_the_sessions_opened_with_it_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        let token = |id| TokenRecord {
            id,
            login: "ann".into(),
            description: None,
            prefix: "tbk_x".into(),
            created_at: Utc::now(),
            expires_at: None,
            allowed_ips: vec![],
            user_id: None,
        };
        let (revoked, kept) = (Uuid::now_v7(), Uuid::now_v7());
        store.insert_token(&token(revoked), digest("t1")).await.unwrap();
        store.insert_token(&token(kept), digest("t2")).await.unwrap();
        let hour = chrono::Duration::hours(1);
        let opened_with =
            |token, refresh: &str| SessionRecord { token, ..session("ann", digest(refresh), Utc::now() + hour) };
        let (through_revoked, through_kept, by_password) =
            (opened_with(Some(revoked), "r1"), opened_with(Some(kept), "r2"), opened_with(None, "r3"));
        for session in [&through_revoked, &through_kept, &by_password] {
            store.insert_session(session).await.unwrap();
        }
        assert!(store.remove_token(revoked).await.unwrap());
        assert!(!store.token_exists(revoked).unwrap() && store.token_exists(kept).unwrap());
        assert!(store.session(through_revoked.id).unwrap().is_none());
        assert!(store.session_by_refresh(&digest("r1")).unwrap().is_none(), "its refresh token is gone too");
        assert!(store.session(through_kept.id).unwrap().is_some() && store.session(by_password.id).unwrap().is_some());
        assert_eq!(store.session_by_refresh(&digest("r2")).unwrap().map(|s| s.id), Some(through_kept.id));
    }

    #[tokio::test]
    async fn a_login_link_ends_once_and_an_expired_one_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        let now = Utc::now();
        let link = |expires_at| LoginLinkRecord {
            id: Uuid::now_v7(),
            account: AccountId(Uuid::now_v7()),
            account_number: "C1".into(),
            issued_by: "admin".into(),
            created_at: now,
            expires_at,
            state: LinkState::Issued,
            changed_at: None,
        };
        let live = link(now + chrono::Duration::minutes(15));
        store.insert_login_link(&live).await.unwrap();
        assert_eq!(store.end_login_link(live.id, LinkState::Used, now).await, Ok(live.clone()));
        assert_eq!(store.end_login_link(live.id, LinkState::Used, now).await, Err(LinkFailure::Used));
        assert_eq!(store.end_login_link(live.id, LinkState::Revoked, now).await, Err(LinkFailure::Used));
        assert_eq!(store.login_link(live.id).unwrap().unwrap().state, LinkState::Used);

        let expired = link(now - chrono::Duration::seconds(1));
        store.insert_login_link(&expired).await.unwrap();
        assert_eq!(store.end_login_link(expired.id, LinkState::Used, now).await, Err(LinkFailure::Expired));
        // An expired link may still be revoked (nothing changes for its holder).
        assert!(store.end_login_link(expired.id, LinkState::Revoked, now).await.is_ok());
        assert_eq!(store.end_login_link(expired.id, LinkState::Used, now).await, Err(LinkFailure::Revoked));
        assert_eq!(store.end_login_link(Uuid::now_v7(), LinkState::Used, now).await, Err(LinkFailure::Unknown));

        // Racing uses of one link: exactly one wins.
        let raced = link(now + chrono::Duration::minutes(15));
        store.insert_login_link(&raced).await.unwrap();
        let attempts = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.end_login_link(raced.id, LinkState::Used, Utc::now()).await })
        });
        let outcomes = futures::future::join_all(attempts).await;
        assert_eq!(outcomes.iter().filter(|o| matches!(o, Ok(Ok(_)))).count(), 1);
    }

    /// Expired sessions of both kinds go, with their refresh index; a login link stays for
    /// its history period after expiry, then goes; nothing live is touched.
    #[tokio::test]
    async fn purging_removes_only_what_can_never_be_used_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        let now = Utc::now();
        let (hour, day) = (chrono::Duration::hours(1), chrono::Duration::days(1));
        let (live, ended) = (session("ann", digest("r1"), now + hour), session("ann", digest("r2"), now - hour));
        store.insert_session(&live).await.unwrap();
        store.insert_session(&ended).await.unwrap();
        let portal = |expires_at| PortalSessionRecord {
            id: Uuid::now_v7(),
            account: AccountId(Uuid::now_v7()),
            login: None,
            user_id: None,
            role: None,
            actor: "link".into(),
            csrf_token: "t".into(),
            created_at: now - day,
            expires_at,
        };
        store.insert_portal_session(digest("c1"), &portal(now + hour)).await.unwrap();
        store.insert_portal_session(digest("c2"), &portal(now - hour)).await.unwrap();
        let link = |expires_at| LoginLinkRecord {
            id: Uuid::now_v7(),
            account: AccountId(Uuid::now_v7()),
            account_number: "C1".into(),
            issued_by: "admin".into(),
            created_at: now - day * 40,
            expires_at,
            state: LinkState::Used,
            changed_at: None,
        };
        let (recent, old) = (link(now - day), link(now - day * 31));
        store.insert_login_link(&recent).await.unwrap();
        store.insert_login_link(&old).await.unwrap();

        let purged = store.purge_expired(now, day * 30).await.unwrap();
        assert_eq!(purged, Purged { sessions: 1, portal_sessions: 1, login_links: 1 });
        assert!(store.session(live.id).unwrap().is_some() && store.session(ended.id).unwrap().is_none());
        assert!(matches!(
            store.rotate_refresh(digest("r2"), digest("r3"), now).await.err(),
            Some(RefreshFailure::Invalid)
        ));
        assert!(store.portal_session(&digest("c1")).unwrap().is_some());
        assert!(store.portal_session(&digest("c2")).unwrap().is_none());
        assert!(store.login_link(recent.id).unwrap().is_some() && store.login_link(old.id).unwrap().is_none());
        assert_eq!(store.purge_expired(now, day * 30).await.unwrap(), Purged::default());
    }

    #[test]
    fn ip_allowlists() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
        assert!(ip_allowed(&[], None));
        assert!(ip_allowed(&nets, Some("10.1.2.3".parse().unwrap())));
        assert!(ip_allowed(&nets, Some("::ffff:10.1.2.3".parse().unwrap())));
        assert!(ip_allowed(&nets, Some("2001:db8::1".parse().unwrap())));
        assert!(!ip_allowed(&nets, Some("127.0.0.1".parse().unwrap())));
        assert!(!ip_allowed(&nets, None));
    }
}
