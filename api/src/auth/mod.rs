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

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
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

pub mod jwt;
pub mod links;
pub mod store;
pub mod throttle;

pub use store::{
    AuthStore, KeptSessions, LinkState, LoginLinkRecord, PortalSessionRecord, Role, SessionRecord, TokenRecord,
    UserRecord,
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
/// Password checks running at once. Argon2 is slow on purpose; past this a login waits
/// (up to [`PASSWORD_CHECK_WAIT_MAX`]) rather than letting a flood of guesses take every
/// core. One address holds at most [`throttle::PASSWORD_CHECKS_PER_ADDRESS_MAX`] of them.
pub const PASSWORD_CHECKS_IN_FLIGHT_MAX: usize = 4;
/// How long a login waits for a password check to be free before it answers 503.
pub const PASSWORD_CHECK_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);
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
    /// The API session the credential belongs to, when it is a session's access token:
    /// a password change made from it leaves it open.
    pub session: Option<Uuid>,
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

/// HTTP Basic credentials (RFC 7617): `Authorization: Basic base64(user ":" password)`.
pub struct BasicCredentials {
    pub user: String,
    pub password: String,
}

/// The Basic credentials a request presents; none without them, or when the header says
/// Basic but does not decode to `user:password` in UTF-8 (refused alike).
pub fn presented_basic(headers: &HeaderMap) -> Option<BasicCredentials> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    // The user id cannot hold a colon (RFC 7617, 2): the first one ends it.
    let (user, password) = text.split_once(':')?;
    Some(BasicCredentials { user: user.to_owned(), password: password.to_owned() })
}

/// The caller of a switch's intake route (`/api/v1/cdrs/freeswitch`, `asterisk`,
/// `kamailio`, `mapped`): the usual credentials, or HTTP Basic, which is all FreeSWITCH's
/// mod_json_cdr can send (`cred`). Basic is taken on these routes only, and only with an
/// API token as its password and the token's user's login as its user (see
/// [`Auth::authenticate_basic`]); the caller then has the token's role and scope, exactly as
/// with the token as a bearer. Any other route answers Basic with 401.
pub struct SwitchCaller(pub Caller);

impl<S> FromRequestParts<S> for SwitchCaller
where
    S: Send + Sync,
    Arc<Auth>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let offering_basic = |error: ApiError| ApiError { offers_basic: true, ..error };
        if presented_credential(&parts.headers).is_some() {
            return Caller::from_request_parts(parts, state).await.map(SwitchCaller).map_err(offering_basic);
        }
        let credentials = presented_basic(&parts.headers).ok_or_else(|| offering_basic(ApiError::unauthorized()))?;
        let auth = Arc::<Auth>::from_ref(state);
        let caller = auth.authenticate_basic(&credentials, peer_ip(parts)).map_err(offering_basic)?;
        caller.map(SwitchCaller).ok_or_else(|| offering_basic(ApiError::unauthorized()))
    }
}

/// The address the request came from (the TCP peer; proxies are not trusted).
pub fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip())
}

/// Needs the auth store only: any state that gives one (`FromRef`) authenticates.
impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<Auth>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let credential = presented_credential(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        Arc::<Auth>::from_ref(state).authenticate(credential, peer_ip(parts))?.ok_or_else(ApiError::unauthorized)
    }
}

/// A secret that opens a session.
pub enum Secret {
    /// A password, and the new one to set while signing in: required when the password
    /// was set by someone else ([`UserRecord::password_must_change`]).
    Password {
        password: String,
        new_password: Option<String>,
    },
    ApiToken(String),
}

/// Checks a password a user is to be given; `field` is the request field it came in.
pub fn validate_password(field: &'static str, password: &str) -> Result<(), ApiError> {
    let length = password.chars().count();
    if (PASSWORD_LENGTH_MIN..=PASSWORD_LENGTH_MAX).contains(&length) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_field",
            field,
            format!("a password has {PASSWORD_LENGTH_MIN} to {PASSWORD_LENGTH_MAX} characters"),
        ))
    }
}

/// An argon2id hash of a password, made off the async threads.
pub async fn hash_password_off_thread(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(ApiError::internal_message)
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
    /// Wrong secrets per login and per address, and each address's share of the
    /// password checks.
    pub throttle: throttle::LoginThrottle,
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

/// What an API token is good for.
enum TokenCheck {
    Usable(TokenRecord, UserRecord),
    /// Live, but not from this address.
    AddressNotAllowed(TokenRecord),
    /// Unknown, expired, or its user gone.
    Unusable,
}

/// The caller a user stands for; none for a partner or customer user without an account.
fn caller_for(user: &UserRecord, actor: String, session: Option<Uuid>) -> Option<Caller> {
    let scope = match (user.role, user.account) {
        (Role::Admin, _) => Scope::Admin,
        (Role::Partner, Some(account)) => Scope::Partner(account),
        (Role::Customer, Some(account)) => Scope::Customer(account),
        (_, None) => return None,
    };
    Some(Caller { actor, scope, login: Some(user.login.clone()), session })
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
            auth.throttle.forget_stale();
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
            throttle: throttle::LoginThrottle::default(),
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

    /// The caller a credential stands for, or `None` if it stands for nobody. A genuine,
    /// live credential used from an address it is not allowed from is an error that says so.
    pub fn authenticate(&self, credential: &str, peer: Option<IpAddr>) -> Result<Option<Caller>, ApiError> {
        let presented = store::digest(credential);
        if let Some(expected) = self.admin_key_digest {
            let difference = expected.iter().zip(presented.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if difference == 0 {
                return Ok(Some(Caller { actor: "admin".into(), scope: Scope::Admin, login: None, session: None }));
            }
        }
        if credential.starts_with(API_TOKEN_PREFIX) {
            let (token, user) = match self.check_token(&presented, peer)? {
                TokenCheck::Usable(token, user) => (token, user),
                TokenCheck::AddressNotAllowed(_) => return Err(ApiError::address_not_allowed()),
                TokenCheck::Unusable => return Ok(None),
            };
            return Ok(caller_for(&user, format!("token:{}", token.id), None));
        }
        let Some(claims) = self.keys.verify(credential) else { return Ok(None) };
        let Some(session) = self.store.session(claims.sid).map_err(internal)? else { return Ok(None) };
        if session.generation != claims.r#gen || session.login != claims.sub {
            return Ok(None);
        }
        let Some(user) = self.session_user(&session)? else { return Ok(None) };
        if !store::ip_allowed(&session.allowed_ips, peer) {
            return Err(ApiError::address_not_allowed());
        }
        Ok(caller_for(&user, format!("user:{}", session.login), Some(session.id)))
    }

    /// The caller HTTP Basic credentials stand for, on the routes that take them: the
    /// password must be a usable API token and the user its user's login. Matching the login
    /// rather than ignoring it keeps a switch's configuration honest: the `cred` an operator
    /// reads there names the user its calls are recorded as (`token:<id>` of that user), and
    /// a token pasted under another user's name is refused instead of acting as someone
    /// else. The admin key and session tokens are not taken: the one has no user, the others
    /// expire within the hour, and neither belongs in a switch's configuration file.
    pub fn authenticate_basic(
        &self,
        credentials: &BasicCredentials,
        peer: Option<IpAddr>,
    ) -> Result<Option<Caller>, ApiError> {
        if !credentials.password.starts_with(API_TOKEN_PREFIX) {
            return Ok(None);
        }
        let (token, user) = match self.check_token(&store::digest(&credentials.password), peer)? {
            TokenCheck::Usable(token, user) => (token, user),
            TokenCheck::AddressNotAllowed(_) => return Err(ApiError::address_not_allowed()),
            TokenCheck::Unusable => return Ok(None),
        };
        if user.login != credentials.user {
            return Ok(None);
        }
        Ok(caller_for(&user, format!("token:{}", token.id), None))
    }

    /// The user a session acts for, while the session is live: not expired, opened for
    /// this very user (not one removed and made again under its login) in its current
    /// role, and, when opened with an API token, while that token exists. Two reads of
    /// the auth store's cache, so every request can afford it: that is what ends a
    /// session at once when any of this changes.
    fn session_user(&self, session: &SessionRecord) -> Result<Option<UserRecord>, ApiError> {
        if session.expires_at <= now() {
            return Ok(None);
        }
        if let Some(token) = session.token
            && !self.store.token_exists(token).map_err(internal)?
        {
            return Ok(None);
        }
        let user = self.store.user(&session.login).map_err(internal)?;
        Ok(user.filter(|user| {
            session.user_id.is_none_or(|id| id == user.id) && session.role.is_none_or(|role| role == user.role)
        }))
    }

    /// An API token that exists, has not expired and belongs to a user that exists (the
    /// very user it was made for), with that user; and whether `peer` may use it.
    fn check_token(&self, token_digest: &[u8; 32], peer: Option<IpAddr>) -> Result<TokenCheck, ApiError> {
        let Some(token) = self.store.token_by_digest(token_digest).map_err(internal)? else {
            return Ok(TokenCheck::Unusable);
        };
        if token.expires_at.is_some_and(|expires_at| expires_at <= now()) {
            return Ok(TokenCheck::Unusable);
        }
        // The user is read on every request, so that removing a user takes effect at
        // once, whatever its tokens say.
        let user = self.store.user(&token.login).map_err(internal)?;
        let Some(user) = user.filter(|user| token.user_id.is_none_or(|id| id == user.id)) else {
            return Ok(TokenCheck::Unusable);
        };
        Ok(if store::ip_allowed(&token.allowed_ips, peer) {
            TokenCheck::Usable(token, user)
        } else {
            TokenCheck::AddressNotAllowed(token)
        })
    }

    /// Refuses an attempt at once while its login or its address is throttled.
    fn admit(&self, login: &str, address: throttle::AddressKey) -> Result<(), ApiError> {
        self.throttle.admit(login, address).map_err(|throttled| ApiError::too_many_attempts(throttled.retry_after))
    }

    fn random_token(&self, prefix: &str) -> Result<String, ApiError> {
        let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
        self.random.fill(&mut bytes).map_err(|_| internal("no randomness"))?;
        Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Checks a login's secret and opens a session. Attempts are throttled per login and
    /// per address (see [`throttle`]): a throttled one is refused before its secret is
    /// looked at.
    pub async fn login(&self, login: &str, secret: Secret, peer: Option<IpAddr>) -> Result<Issued, ApiError> {
        let address = throttle::AddressKey::of(peer);
        self.admit(login, address)?;
        let (user, token) = match secret {
            Secret::Password { password, new_password } => {
                let user = self.store.user(login).map_err(internal)?;
                let hash = user.as_ref().and_then(|u| u.password_hash.clone());
                let checked = hash.is_some();
                let decoy = || self.decoy_hash.clone();
                let matches = self.check_password(login, address, password.clone(), hash.unwrap_or_else(decoy)).await?;
                let user = match user {
                    Some(user) if checked && matches => user,
                    _ => {
                        self.throttle.failed(login, address);
                        return Err(ApiError::invalid_credentials());
                    }
                };
                // The right password: whatever follows is no guess, and is not counted.
                (self.settle_password(user, &password, new_password).await?, None)
            }
            Secret::ApiToken(token) => match self.check_token(&store::digest(&token), peer)? {
                TokenCheck::Usable(record, user) if record.login == login => (user, Some(record)),
                // The secret was right: this is no guess, and the holder learns what to fix.
                TokenCheck::AddressNotAllowed(record) if record.login == login => {
                    return Err(ApiError::address_not_allowed());
                }
                _ => {
                    self.throttle.failed(login, address);
                    return Err(ApiError::invalid_credentials());
                }
            },
        };
        let refresh_token = self.random_token(REFRESH_TOKEN_PREFIX)?;
        let created_at = now();
        let mut expires_at = created_at + Duration::from_std(REFRESH_LIFETIME).expect("a small duration");
        // A session lives no longer than the token that opened it.
        if let Some(token_expires_at) = token.as_ref().and_then(|t| t.expires_at) {
            expires_at = expires_at.min(token_expires_at);
        }
        let session = SessionRecord {
            id: Uuid::now_v7(),
            login: user.login.clone(),
            created_at,
            expires_at,
            generation: 0,
            refresh_digest: store::digest(&refresh_token),
            allowed_ips: token.as_ref().map(|t| t.allowed_ips.clone()).unwrap_or_default(),
            token: token.map(|t| t.id),
            user_id: Some(user.id),
            role: Some(user.role),
        };
        self.store.insert_session(&session).await.map_err(internal)?;
        // Revoked, or the user removed, while the session was being stored: the checks
        // of every request would refuse it; do not hand it out at all.
        if self.session_user(&session)?.is_none() {
            self.store.remove_session(&session).await.map_err(internal)?;
            return Err(ApiError::invalid_credentials());
        }
        Ok(self.issue(session, user, refresh_token))
    }

    /// Checks a password against a hash, holding one of the address's shares of the
    /// password checks and one of the server's, and rechecking the throttle once it has
    /// them (other attempts may have failed while it waited).
    async fn check_password(
        &self,
        login: &str,
        address: throttle::AddressKey,
        password: String,
        hash: String,
    ) -> Result<bool, ApiError> {
        let share = self
            .throttle
            .hashing_share(address)
            .ok_or_else(|| ApiError::too_many_attempts(std::time::Duration::from_secs(1)))?;
        let permit = tokio::time::timeout(PASSWORD_CHECK_WAIT_MAX, self.password_checks.clone().acquire_owned())
            .await
            .map_err(|_| ApiError::overloaded())?
            .map_err(|_| ApiError::overloaded())?;
        self.admit(login, address)?;
        let matches = tokio::task::spawn_blocking(move || {
            // Held until the hash is done, even if the client has gone: a client cannot
            // start more hashing than its share by hanging up.
            let _held = (permit, share);
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
    /// A session that is no longer live (its token revoked or expired, its user removed or
    /// given another role) is ended instead. A session restricted to some networks is
    /// refreshed only from them.
    pub async fn refresh(&self, refresh_token: &str, peer: Option<IpAddr>) -> Result<Issued, ApiError> {
        let old_digest = store::digest(refresh_token);
        // Checked before the rotation, which would use the refresh token up.
        if let Some(session) = self.store.session_by_refresh(&old_digest).map_err(internal)?
            && !store::ip_allowed(&session.allowed_ips, peer)
        {
            return Err(ApiError::address_not_allowed());
        }
        let new_refresh = self.random_token(REFRESH_TOKEN_PREFIX)?;
        let session =
            self.store.rotate_refresh(old_digest, store::digest(&new_refresh), now()).await.map_err(|failure| {
                match failure {
                    store::RefreshFailure::Invalid | store::RefreshFailure::Ended(_) => ApiError::invalid_credentials(),
                    store::RefreshFailure::Storage(e) => internal(e),
                }
            })?;
        let Some(user) = self.session_user(&session)? else {
            self.store.remove_session(&session).await.map_err(internal)?;
            return Err(ApiError::invalid_credentials());
        };
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

    /// Makes an API token for `user`; the secret is returned this once and stored hashed.
    pub async fn create_token(
        &self,
        user: &UserRecord,
        description: Option<String>,
        expires_at: Option<DateTime<Utc>>,
        allowed_ips: Vec<ipnet::IpNet>,
    ) -> Result<NewToken, ApiError> {
        let token = self.random_token(API_TOKEN_PREFIX)?;
        let record = TokenRecord {
            id: Uuid::now_v7(),
            login: user.login.clone(),
            description,
            prefix: token.chars().take(API_TOKEN_PREFIX.len() + 4).collect(),
            created_at: now(),
            expires_at,
            allowed_ips,
            user_id: Some(user.id),
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
    /// so the page tells no one which logins are the operator's. Throttled like
    /// [`Auth::login`], under the same counts: a guesser gains nothing by switching forms.
    pub async fn portal_password_login(
        &self,
        login: &str,
        password: String,
        new_password: Option<String>,
        peer: Option<IpAddr>,
    ) -> Result<PortalLogin, ApiError> {
        let address = throttle::AddressKey::of(peer);
        self.admit(login, address)?;
        let user = self.store.user(login).map_err(internal)?;
        let hash = user.as_ref().and_then(|u| u.password_hash.clone());
        let checked = hash.is_some();
        let decoy = || self.decoy_hash.clone();
        let password_given = password.clone();
        let matches = self.check_password(login, address, password, hash.unwrap_or_else(decoy)).await?;
        if !(checked && matches) {
            self.throttle.failed(login, address);
            return Err(ApiError::invalid_credentials());
        }
        // The right password of a user without a portal is not a guess: not counted.
        let account = user.as_ref().filter(|u| u.role != Role::Admin).and_then(|u| u.account);
        match (account, user) {
            (Some(account), Some(user)) => {
                let user = self.settle_password(user, &password_given, new_password).await?;
                self.open_portal_session(account, Some(&user), format!("user:{}", user.login)).await
            }
            _ => Err(ApiError::invalid_credentials()),
        }
    }

    /// After a user's password was checked at sign-in: refuses a password someone else
    /// set until the user gives its own, and sets the new one when given (ending the
    /// user's other sessions). The user as it now stands.
    async fn settle_password(
        &self,
        user: UserRecord,
        password: &str,
        new_password: Option<String>,
    ) -> Result<UserRecord, ApiError> {
        let Some(new_password) = new_password else {
            if user.password_must_change {
                return Err(ApiError::password_change_required());
            }
            return Ok(user);
        };
        validate_password("new_password", &new_password)?;
        if new_password == password {
            return Err(ApiError::password_unchanged());
        }
        let hash = hash_password_off_thread(new_password).await?;
        if !self.store.set_password(&user.login, user.id, hash, false, now(), KeptSessions::default()).await? {
            return Err(ApiError::invalid_credentials());
        }
        self.store.user(&user.login).map_err(internal)?.ok_or_else(ApiError::invalid_credentials)
    }

    /// A user changes its own password, proving it knows the current one (checked and
    /// throttled like a sign-in). Every other session of the user ends, API and portal;
    /// `keep` names the one the change was made from. API tokens are credentials of their
    /// own and stay.
    pub async fn change_own_password(
        &self,
        caller: &Caller,
        current_password: String,
        new_password: String,
        peer: Option<IpAddr>,
        keep: KeptSessions,
    ) -> Result<(), ApiError> {
        let Some(login) = caller.login.as_deref() else {
            return Err(ApiError::forbidden(
                "this credential belongs to no user with a password (the admin key, or a login link)",
            ));
        };
        validate_password("new_password", &new_password)?;
        let address = throttle::AddressKey::of(peer);
        self.admit(login, address)?;
        let user = self.store.user(login).map_err(internal)?.ok_or_else(ApiError::unauthorized)?;
        let hash = user.password_hash.clone();
        let checked = hash.is_some();
        let decoy = || self.decoy_hash.clone();
        let matches = self.check_password(login, address, current_password.clone(), hash.unwrap_or_else(decoy)).await?;
        if !(checked && matches) {
            self.throttle.failed(login, address);
            return Err(ApiError::current_password_wrong());
        }
        if new_password == current_password {
            return Err(ApiError::password_unchanged());
        }
        let hash = hash_password_off_thread(new_password).await?;
        if !self.store.set_password(login, user.id, hash, false, now(), keep).await? {
            return Err(ApiError::unauthorized());
        }
        Ok(())
    }

    /// Someone else (an admin, or the user's partner: the route checks which) gives a user
    /// a temporary password: it must be changed at the next sign-in, and every session of
    /// the user ends now.
    pub async fn set_temporary_password(&self, user: &UserRecord, password: String) -> Result<bool, ApiError> {
        validate_password("password", &password)?;
        let hash = hash_password_off_thread(password).await?;
        Ok(self.store.set_password(&user.login, user.id, hash, true, now(), KeptSessions::default()).await?)
    }

    async fn open_portal_session(
        &self,
        account: AccountId,
        user: Option<&UserRecord>,
        actor: String,
    ) -> Result<PortalLogin, ApiError> {
        let cookie = self.random_token(PORTAL_SESSION_PREFIX)?;
        let created_at = now();
        let session = PortalSessionRecord {
            id: Uuid::now_v7(),
            account,
            login: user.map(|u| u.login.clone()),
            user_id: user.map(|u| u.id),
            role: user.map(|u| u.role),
            actor,
            csrf_token: self.random_token("")?,
            created_at,
            expires_at: created_at + Duration::from_std(self.portal.session_lifetime).map_err(internal)?,
        };
        self.store.insert_portal_session(store::digest(&cookie), &session).await.map_err(internal)?;
        Ok(PortalLogin { cookie })
    }

    /// The live portal session a cookie stands for. A password session ends with its user
    /// (removed, or made again for another user or role).
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
            let same = |u: &UserRecord| {
                u.account == Some(session.account)
                    && session.user_id.is_none_or(|id| id == u.id)
                    && session.role.is_none_or(|role| role == u.role)
            };
            if !user.as_ref().is_some_and(same) {
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
