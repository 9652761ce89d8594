//! Who is calling, and what they may touch.
//!
//! A credential arrives as `Authorization: Bearer`, `X-Auth-Token` or `token` and is one of:
//! the operator's admin key (from the configuration); an API token an admin made for a user
//! (`tbk_…`); or a session's access token (a JWT). Each resolves to a [`Caller`] with a
//! [`Scope`]: the operator sees and does everything, a partner its own book (itself and its
//! customers), a customer only its own account, read only. Anything outside the scope
//! answers exactly as if it did not exist.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use commands::AccountRef;
use domain::AccountId;
use ring::rand::SecureRandom;
use uuid::Uuid;

use crate::error::ApiError;
use crate::server::AppState;

pub mod jwt;
pub mod links;
pub mod store;

pub use store::{
    AuthStore, LinkState, LoginLinkRecord, PortalSessionRecord, Role, SessionRecord, TokenRecord, UserRecord,
};

/// The headers a credential may arrive in, besides `Authorization: Bearer`.
const TOKEN_HEADERS: [&str; 2] = ["x-auth-token", "token"];
/// API tokens start with this, so that they are recognisable in logs and secret scanners.
pub const API_TOKEN_PREFIX: &str = "tbk_";
const REFRESH_TOKEN_PREFIX: &str = "tbr_";
/// Portal session cookies start with this.
const PORTAL_SESSION_PREFIX: &str = "tbp_";
/// How long a login link may be used, unless configured otherwise.
pub const LOGIN_LINK_LIFETIME_DEFAULT: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// Random bytes in an API or refresh token: 256 bits, beyond guessing.
const TOKEN_RANDOM_BYTES: usize = 32;
/// How long a session lasts without activity: its refresh token's lifetime.
pub const REFRESH_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
/// Password checks running at once. Argon2 is slow on purpose; past this a login answers
/// 503 rather than letting a flood of guesses take every core.
pub const PASSWORD_CHECKS_IN_FLIGHT_MAX: usize = 4;
/// Shortest password a user may be given.
pub const PASSWORD_LENGTH_MIN: usize = 10;
/// Longest password: argon2 takes any length, the body limit would too; this keeps the
/// hashing time bounded.
pub const PASSWORD_LENGTH_MAX: usize = 1024;

/// What a caller may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Admin,
    /// A partner: its own account and its customers'.
    Partner(AccountId),
    /// A customer: its own account, read only.
    Customer(AccountId),
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Recorded on the events this caller's commands produce: `admin`, `user:<login>`
    /// (a session) or `token:<id>` (an API token).
    pub actor: String,
    pub scope: Scope,
    /// The user behind the credential; none for the admin key.
    pub login: Option<String>,
}

impl Caller {
    /// Whether the caller may see `account` at all.
    pub fn sees(&self, account: &AccountRef) -> bool {
        match self.scope {
            Scope::Admin => true,
            Scope::Partner(partner) => account.id == partner || account.partner == Some(partner),
            Scope::Customer(customer) => account.id == customer,
        }
    }

    /// Whether the caller may post money to `account` or change its settings. A partner
    /// manages its customers; its own account is the operator's to manage, or a partner
    /// could pay itself.
    pub fn manages(&self, account: &AccountRef) -> bool {
        match self.scope {
            Scope::Admin => true,
            Scope::Partner(partner) => account.partner == Some(partner),
            Scope::Customer(_) => false,
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.scope {
            Scope::Admin => Ok(()),
            _ => Err(ApiError::forbidden("only the operator may do this")),
        }
    }

    /// Customers read; they never write.
    pub fn require_writer(&self) -> Result<(), ApiError> {
        match self.scope {
            Scope::Customer(_) => Err(ApiError::forbidden("a customer's access is read only")),
            _ => Ok(()),
        }
    }
}

/// The credential a request presents, from whichever header carries it.
pub fn presented_credential(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    bearer
        .or_else(|| TOKEN_HEADERS.iter().find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok())))
        .map(str::trim)
        .filter(|credential| !credential.is_empty())
}

/// The address the request came from (the TCP peer; proxies are not trusted).
pub fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let credential = presented_credential(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        state.auth.authenticate(credential, peer_ip(parts))?.ok_or_else(ApiError::unauthorized)
    }
}

/// A secret that opens a session.
pub enum Secret {
    Password(String),
    ApiToken(String),
}

/// A new session's tokens, or a refreshed pair.
pub struct Issued {
    pub session: SessionRecord,
    pub user: UserRecord,
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
}

/// A new API token: the record and the secret, which is shown this once.
pub struct NewToken {
    pub record: TokenRecord,
    pub token: String,
}

pub struct Auth {
    /// SHA-256 of the admin key: comparing digests takes the same time whatever the
    /// guess, and the key itself does not stay in memory after start-up.
    admin_key_digest: Option<[u8; 32]>,
    pub store: AuthStore,
    keys: jwt::SigningKeys,
    access_lifetime: Duration,
    password_checks: Arc<tokio::sync::Semaphore>,
    /// A hash to check against when a login names no user with a password, so that an
    /// unknown login takes as long to refuse as a wrong password.
    decoy_hash: String,
    random: ring::rand::SystemRandom,
    links: links::LinkSigner,
    pub portal: PortalSettings,
}

/// How the customer portal hands out links and cookies.
#[derive(Clone, Debug)]
pub struct PortalSettings {
    pub login_link_lifetime: std::time::Duration,
    /// The address customers reach the server at (`https://billing.example.com`), for the
    /// URL of a login link; without it, the address the request was sent to.
    pub public_url: Option<String>,
    /// Always mark the session cookie `Secure`: for a server behind a TLS proxy that does
    /// not say `X-Forwarded-Proto`. It is marked so anyway when the request came over TLS.
    pub secure_cookies: bool,
    /// How long a portal session lasts.
    pub session_lifetime: std::time::Duration,
}

/// A portal session just opened: the cookie's value, given to the browser this once.
pub struct PortalLogin {
    pub cookie: String,
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::internal_message(format!("auth store: {error}"))
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

/// How often expired sessions and old login links are removed from the auth store.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);
/// How long a login link stays readable (`GET /api/v1/login-links/{id}`) after it expired.
pub const LOGIN_LINK_HISTORY_DAYS: i64 = 30;

/// Removes expired sessions and old login links now and every [`PURGE_EVERY`], so the
/// auth store does not grow with every sign-in for as long as the server runs.
pub fn spawn_purger(auth: Arc<Auth>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PURGE_EVERY);
        loop {
            every.tick().await;
            match auth.store.purge_expired(Utc::now(), Duration::days(LOGIN_LINK_HISTORY_DAYS)).await {
                Ok(purged) if purged != store::Purged::default() => {
                    tracing::info!(?purged, "expired auth records removed")
                }
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "expired auth records could not be removed"),
            }
        }
    })
}

impl Auth {
    pub fn open(
        store: AuthStore,
        admin_key: Option<&str>,
        access_lifetime: std::time::Duration,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let keys = jwt::SigningKeys::load_or_create(&store)?;
        let random = ring::rand::SystemRandom::new();
        let links = links::LinkSigner::load_or_create(&store, &random)?;
        // An empty key would let an empty `token:` header in.
        let admin_key_digest = admin_key.filter(|k| !k.is_empty()).map(store::digest);
        Ok(Auth {
            admin_key_digest,
            store,
            keys,
            access_lifetime: Duration::from_std(access_lifetime)?,
            password_checks: Arc::new(tokio::sync::Semaphore::new(PASSWORD_CHECKS_IN_FLIGHT_MAX)),
            decoy_hash: hash_password("decoy password, never valid")?,
            random,
            links,
            portal: PortalSettings {
                login_link_lifetime: LOGIN_LINK_LIFETIME_DEFAULT,
                public_url: None,
                secure_cookies: false,
                session_lifetime: access_lifetime,
            },
        })
    }

    pub fn with_portal(mut self, portal: PortalSettings) -> Self {
        self.portal = portal;
        self
    }

    pub fn jwks(&self) -> jwt::Jwks {
        self.keys.jwks()
    }

    /// The caller a credential stands for, or `None` if it stands for nobody.
    pub fn authenticate(&self, credential: &str, peer: Option<IpAddr>) -> Result<Option<Caller>, ApiError> {
        let presented = store::digest(credential);
        if let Some(expected) = self.admin_key_digest {
            let difference = expected.iter().zip(presented.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if difference == 0 {
                return Ok(Some(Caller { actor: "admin".into(), scope: Scope::Admin, login: None }));
            }
        }
        if credential.starts_with(API_TOKEN_PREFIX) {
            let Some(token) = self.usable_token(&presented, peer)? else { return Ok(None) };
            return self.caller_for(&token.login, format!("token:{}", token.id));
        }
        let Some(claims) = self.keys.verify(credential) else { return Ok(None) };
        let Some(session) = self.store.session(claims.sid).map_err(internal)? else { return Ok(None) };
        let current = session.generation == claims.r#gen && session.login == claims.sub && session.expires_at > now();
        if !current || !store::ip_allowed(&session.allowed_ips, peer) {
            return Ok(None);
        }
        self.caller_for(&session.login, format!("user:{}", session.login))
    }

    /// An API token that exists, has not expired and may be used from `peer`.
    fn usable_token(&self, token_digest: &[u8; 32], peer: Option<IpAddr>) -> Result<Option<TokenRecord>, ApiError> {
        let Some(token) = self.store.token_by_digest(token_digest).map_err(internal)? else { return Ok(None) };
        let live = token.expires_at.is_none_or(|expires_at| expires_at > now());
        Ok((live && store::ip_allowed(&token.allowed_ips, peer)).then_some(token))
    }

    fn caller_for(&self, login: &str, actor: String) -> Result<Option<Caller>, ApiError> {
        // The user is read on every request, so that removing a user (or changing its
        // role) takes effect at once, whatever its tokens say.
        let Some(user) = self.store.user(login).map_err(internal)? else { return Ok(None) };
        let scope = match (user.role, user.account) {
            (Role::Admin, _) => Scope::Admin,
            (Role::Partner, Some(account)) => Scope::Partner(account),
            (Role::Customer, Some(account)) => Scope::Customer(account),
            (_, None) => return Ok(None),
        };
        Ok(Some(Caller { actor, scope, login: Some(user.login) }))
    }

    fn random_token(&self, prefix: &str) -> Result<String, ApiError> {
        let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
        self.random.fill(&mut bytes).map_err(|_| internal("no randomness"))?;
        Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Checks a login's secret and opens a session.
    pub async fn login(&self, login: &str, secret: Secret, peer: Option<IpAddr>) -> Result<Issued, ApiError> {
        let user = self.store.user(login).map_err(internal)?;
        let allowed_ips = match secret {
            Secret::Password(password) => {
                let hash = user.as_ref().and_then(|u| u.password_hash.clone());
                let checked = hash.is_some();
                let matches = self.check_password(password, hash.unwrap_or_else(|| self.decoy_hash.clone())).await?;
                if !(checked && matches) {
                    return Err(ApiError::invalid_credentials());
                }
                Vec::new()
            }
            Secret::ApiToken(token) => match self.usable_token(&store::digest(&token), peer)? {
                Some(record) if record.login == login => record.allowed_ips,
                _ => return Err(ApiError::invalid_credentials()),
            },
        };
        let user = user.ok_or_else(ApiError::invalid_credentials)?;
        let refresh_token = self.random_token(REFRESH_TOKEN_PREFIX)?;
        let created_at = now();
        let session = SessionRecord {
            id: Uuid::now_v7(),
            login: user.login.clone(),
            created_at,
            expires_at: created_at + Duration::from_std(REFRESH_LIFETIME).expect("a small duration"),
            generation: 0,
            refresh_digest: store::digest(&refresh_token),
            allowed_ips,
        };
        self.store.insert_session(&session).await.map_err(internal)?;
        Ok(self.issue(session, user, refresh_token))
    }

    async fn check_password(&self, password: String, hash: String) -> Result<bool, ApiError> {
        let permit = self.password_checks.clone().try_acquire_owned().map_err(|_| ApiError::overloaded())?;
        let matches = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            use argon2::password_hash::{PasswordHash, PasswordVerifier};
            PasswordHash::new(&hash)
                .map(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        })
        .await
        .map_err(internal)?;
        Ok(matches)
    }

    /// Swaps a refresh token for a new pair; the old refresh and access tokens stop working.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Issued, ApiError> {
        let new_refresh = self.random_token(REFRESH_TOKEN_PREFIX)?;
        let session =
            self.store.rotate_refresh(store::digest(refresh_token), store::digest(&new_refresh), now()).await.map_err(
                |failure| match failure {
                    store::RefreshFailure::Invalid | store::RefreshFailure::Ended(_) => ApiError::invalid_credentials(),
                    store::RefreshFailure::Storage(e) => internal(e),
                },
            )?;
        let user = self.store.user(&session.login).map_err(internal)?.ok_or_else(ApiError::invalid_credentials)?;
        Ok(self.issue(session, user, new_refresh))
    }

    fn issue(&self, session: SessionRecord, user: UserRecord, refresh_token: String) -> Issued {
        let issued_at = now();
        let access_expires_at = (issued_at + self.access_lifetime).min(session.expires_at);
        let claims = jwt::Claims {
            iss: jwt::ISSUER.into(),
            sub: user.login.clone(),
            sid: session.id,
            r#gen: session.generation,
            role: user.role,
            account: user.account_number.clone(),
            iat: issued_at.timestamp(),
            exp: access_expires_at.timestamp(),
        };
        let access_token = self.keys.sign(&claims);
        Issued { session, user, access_token, access_expires_at, refresh_token }
    }

    /// Ends a session the caller may end (its own; the operator's: any). Another user's
    /// session answers as if it did not exist.
    pub async fn logout(&self, caller: &Caller, session_id: Uuid) -> Result<(), ApiError> {
        let session = self.store.session(session_id).map_err(internal)?;
        let session = session
            .filter(|s| caller.scope == Scope::Admin || caller.login.as_deref() == Some(s.login.as_str()))
            .ok_or_else(|| ApiError::not_found("session_not_found", "no such session"))?;
        self.store.remove_session(&session).await.map_err(internal)
    }

    /// Makes an API token for `login`; the secret is returned this once and stored hashed.
    pub async fn create_token(
        &self,
        login: &str,
        description: Option<String>,
        expires_at: Option<DateTime<Utc>>,
        allowed_ips: Vec<ipnet::IpNet>,
    ) -> Result<NewToken, ApiError> {
        let token = self.random_token(API_TOKEN_PREFIX)?;
        let record = TokenRecord {
            id: Uuid::now_v7(),
            login: login.to_owned(),
            description,
            prefix: token.chars().take(API_TOKEN_PREFIX.len() + 4).collect(),
            created_at: now(),
            expires_at,
            allowed_ips,
        };
        self.store.insert_token(&record, store::digest(&token)).await.map_err(internal)?;
        Ok(NewToken { record, token })
    }
}

impl Auth {
    /// Issues a login link for `account`; the caller's right to is checked by the route.
    pub async fn issue_login_link(
        &self,
        issued_by: &str,
        account: &AccountRef,
    ) -> Result<(LoginLinkRecord, String), ApiError> {
        let created_at = now();
        // Whole seconds: the token carries seconds, and the record must agree with it.
        let expires_at = DateTime::from_timestamp(
            (created_at + Duration::from_std(self.portal.login_link_lifetime).map_err(internal)?).timestamp(),
            0,
        )
        .ok_or_else(|| internal("login link expiry out of range"))?;
        let link = LoginLinkRecord {
            id: Uuid::now_v7(),
            account: account.id,
            account_number: account.number.clone(),
            issued_by: issued_by.to_owned(),
            created_at,
            expires_at,
            state: LinkState::Issued,
            changed_at: None,
        };
        self.store.insert_login_link(&link).await.map_err(internal)?;
        let token = self.links.sign(link.id, expires_at.timestamp());
        Ok((link, token))
    }

    pub fn login_link(&self, id: Uuid) -> Result<Option<LoginLinkRecord>, ApiError> {
        self.store.login_link(id).map_err(internal)
    }

    /// Revokes an unused link: it can no longer open a session.
    pub async fn revoke_login_link(&self, id: Uuid) -> Result<LoginLinkRecord, ApiError> {
        self.store.end_login_link(id, LinkState::Revoked, now()).await.map_err(link_refusal)
    }

    /// Uses a login link: marks it used (once, durably) and opens a portal session for its
    /// account. A token this server did not sign is refused before the store is read.
    pub async fn open_login_link(&self, token: &str) -> Result<PortalLogin, ApiError> {
        let (id, expires_at) = self.links.verify(token).ok_or_else(ApiError::login_link_invalid)?;
        if expires_at <= now().timestamp() {
            return Err(link_refusal(store::LinkFailure::Expired));
        }
        let link = self.store.end_login_link(id, LinkState::Used, now()).await.map_err(link_refusal)?;
        self.open_portal_session(link.account, None, format!("link:{}", link.id)).await
    }

    /// Signs a user in to the portal with a login and password. Only partners and
    /// customers have a portal: the operator's users are refused like a wrong password,
    /// so the page tells no one which logins are the operator's.
    pub async fn portal_password_login(&self, login: &str, password: String) -> Result<PortalLogin, ApiError> {
        let user = self.store.user(login).map_err(internal)?;
        let hash = user.as_ref().and_then(|u| u.password_hash.clone());
        let checked = hash.is_some();
        let matches = self.check_password(password, hash.unwrap_or_else(|| self.decoy_hash.clone())).await?;
        let account = user.as_ref().filter(|u| u.role != Role::Admin).and_then(|u| u.account);
        match (checked && matches, account, user) {
            (true, Some(account), Some(user)) => {
                self.open_portal_session(account, Some(user.login.clone()), format!("user:{}", user.login)).await
            }
            _ => Err(ApiError::invalid_credentials()),
        }
    }

    async fn open_portal_session(
        &self,
        account: AccountId,
        login: Option<String>,
        actor: String,
    ) -> Result<PortalLogin, ApiError> {
        let cookie = self.random_token(PORTAL_SESSION_PREFIX)?;
        let created_at = now();
        let session = PortalSessionRecord {
            id: Uuid::now_v7(),
            account,
            login,
            actor,
            csrf_token: self.random_token("")?,
            created_at,
            expires_at: created_at + Duration::from_std(self.portal.session_lifetime).map_err(internal)?,
        };
        self.store.insert_portal_session(store::digest(&cookie), &session).await.map_err(internal)?;
        Ok(PortalLogin { cookie })
    }

    /// The live portal session a cookie stands for. A password session ends with its user.
    pub fn portal_session(&self, cookie: &str) -> Result<Option<PortalSessionRecord>, ApiError> {
        if !cookie.starts_with(PORTAL_SESSION_PREFIX) {
            return Ok(None);
        }
        let Some(session) = self.store.portal_session(&store::digest(cookie)).map_err(internal)? else {
            return Ok(None);
        };
        if session.expires_at <= now() {
            return Ok(None);
        }
        if let Some(login) = &session.login {
            let user = self.store.user(login).map_err(internal)?;
            if user.is_none_or(|u| u.account != Some(session.account)) {
                return Ok(None);
            }
        }
        Ok(Some(session))
    }

    pub async fn portal_logout(&self, cookie: &str) -> Result<(), ApiError> {
        self.store.remove_portal_session(&store::digest(cookie)).await.map_err(internal)
    }
}

fn link_refusal(failure: store::LinkFailure) -> ApiError {
    match failure {
        store::LinkFailure::Unknown => ApiError::login_link_invalid(),
        store::LinkFailure::Used => {
            ApiError::login_link_gone("login_link_used", "this login link has already been used")
        }
        store::LinkFailure::Revoked => {
            ApiError::login_link_gone("login_link_revoked", "this login link has been revoked")
        }
        store::LinkFailure::Expired => ApiError::login_link_gone("login_link_expired", "this login link has expired"),
        store::LinkFailure::Storage(e) => internal(e),
    }
}

/// An argon2id hash (PHC string) of `password` with a fresh salt. Slow on purpose: run it
/// off the async threads.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut salt).map_err(|_| "no randomness for a salt".to_owned())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// The address a request came from, for handlers that check credentials themselves.
pub struct PeerIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerIp(peer_ip(parts)))
    }
}
