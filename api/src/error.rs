//! The API's one error type. This is the only place that picks an HTTP status and renders
//! an error body, so every endpoint answers the same way for the same failure.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use commands::CommandError;
use domain::{DomainError, ErrorKind};
use projections::ProjectionError;
use serde::Serialize;

/// What a client is told when the failure is ours: the details go to the log only, since
/// they may name files, hosts or internal state.
const INTERNAL_MESSAGE: &str = "internal error; the operator has been told";

/// Seconds a client is asked to wait before retrying after a 503.
pub const RETRY_AFTER_SECONDS: u32 = 1;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Cow<'static, str>,
    pub field: Option<Cow<'static, str>>,
    /// Seconds the client should wait before trying again (`Retry-After`), where the
    /// error says when; a 503 without it says [`RETRY_AFTER_SECONDS`].
    pub retry_after_seconds: Option<u64>,
    /// A 401 of a route that takes HTTP Basic credentials (the switches' posts): the answer
    /// offers Basic besides Bearer, so a client that waits to be asked (libcurl with
    /// `CURLAUTH_ANY`, mod_json_cdr's `auth-scheme` `any`) sends them.
    pub offers_basic: bool,
}

/// Every error answer: a machine code to match on, a human message, and the input field
/// at fault when there is one.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"status": "error", "error": "insufficient_funds", "message": "account C-1001 has 4.00 available, 10.00 requested"}))]
pub struct ErrorBody<'a> {
    /// Always `error`.
    #[schema(example = "error")]
    status: &'static str,
    /// A stable machine code, such as `invalid_body`, `unauthorized`, `account_not_found`,
    /// `idempotency_key_reused`, `insufficient_funds`.
    error: &'static str,
    message: &'a str,
    /// The request field (or query parameter, or header) at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError { status, code, message: message.into(), field: None, retry_after_seconds: None, offers_basic: false }
    }

    pub fn with_field(mut self, field: impl Into<Cow<'static, str>>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn bad_request(
        code: &'static str,
        field: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message).with_field(field)
    }

    /// Input that did not deserialize: names the field from serde's path, or from its
    /// message when the path cannot (a missing or unknown field is reported at the root).
    pub fn undeserializable(code: &'static str, path: Option<String>, message: String) -> Self {
        let named_in_message = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|prefix| message.strip_prefix(prefix))
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned);
        let field = path.filter(|p| p != ".").or(named_in_message);
        let api = ApiError::new(StatusCode::BAD_REQUEST, code, message);
        match field {
            Some(field) => api.with_field(field),
            None => api,
        }
    }

    /// No credential, or one that stands for nobody (unknown, expired, revoked, or used
    /// from an address it is not allowed from): the answer does not say which.
    pub fn unauthorized() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or invalid credentials")
    }

    /// A login or refresh whose secret did not match.
    pub fn invalid_credentials() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "the login and secret do not match")
    }

    /// A credential that is genuine and live but restricted to networks the request did
    /// not come from. Said plainly: only the credential's holder can get this answer, and
    /// it tells them what to fix.
    pub fn address_not_allowed() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "address_not_allowed",
            "this credential may not be used from this address (see the token's allowed_ips)",
        )
    }

    /// Too many wrong secrets for this login or from this address, or too many sign-ins
    /// being checked at once from this address: refused without checking the secret.
    pub fn too_many_attempts(retry_after: std::time::Duration) -> Self {
        // Whole seconds, rounded up: a client that waits as told is let in.
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many sign-in attempts; try again in {} s", seconds.max(1)),
        );
        error.retry_after_seconds = Some(seconds.max(1));
        error
    }

    /// The caller is known but its role does not allow this action. Only for actions whose
    /// refusal reveals nothing about another tenant; a foreign object is a 404.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// A login link this server did not sign (altered, truncated, made up).
    pub fn login_link_invalid() -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "login_link_invalid", "this login link is not valid")
    }

    /// A login link that was genuine but can no longer be used (used, expired, revoked).
    pub fn login_link_gone(code: &'static str, message: &'static str) -> Self {
        ApiError::new(StatusCode::GONE, code, message)
    }

    /// A portal form without its session's CSRF token.
    pub fn csrf_mismatch() -> Self {
        ApiError::forbidden("the form has expired or did not come from this site; reload the page and try again")
    }

    pub fn overloaded() -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "the server is overloaded, retry later")
    }

    pub fn not_found(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn method_not_allowed() -> Self {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this resource does not take that method")
    }

    pub fn unsupported_media_type(message: impl Into<Cow<'static, str>>) -> Self {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body exceeds {limit} bytes"),
        )
    }

    /// A technical failure: logged in full, answered with a generic message.
    pub fn internal(error: &dyn std::error::Error) -> Self {
        Self::internal_message(error.to_string())
    }

    pub fn internal_message(error: String) -> Self {
        tracing::error!(%error, "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", INTERNAL_MESSAGE)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            ErrorBody { status: "error", error: self.code, message: &self.message, field: self.field.as_deref() };
        let mut response = (self.status, Json(body)).into_response();
        match (self.retry_after_seconds, self.status) {
            (Some(seconds), _) => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            (None, StatusCode::SERVICE_UNAVAILABLE) => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            (None, _) => {}
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            if self.offers_basic {
                let basic = HeaderValue::from_static(r#"Basic realm="tollbook switch intake", charset="UTF-8""#);
                response.headers_mut().append(header::WWW_AUTHENTICATE, basic);
            }
        }
        response
    }
}

/// The auth database failing is the operator's problem, never the caller's.
impl From<sled::Error> for ApiError {
    fn from(error: sled::Error) -> Self {
        ApiError::internal(&error)
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        let status = match error.kind() {
            ErrorKind::BadInput => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Refused => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let api = ApiError::new(status, error.code(), error.to_string());
        match error.field() {
            Some(field) => api.with_field(field),
            None => api,
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Domain(domain) => domain.into(),
            CommandError::Overloaded => ApiError::overloaded(),
            CommandError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the ledger is shutting down")
            }
            CommandError::Conflict => {
                ApiError::new(StatusCode::CONFLICT, "conflict", "the book changed concurrently, retry")
            }
            CommandError::UnknownAccount(number) => {
                ApiError::not_found("account_not_found", format!("account `{number}` not found"))
            }
            CommandError::UnknownPosition(position) => {
                ApiError::not_found("event_not_found", format!("no event at position {position}"))
                    .with_field("position")
            }
            CommandError::Store(store) => ApiError::internal(&store),
        }
    }
}

impl From<ProjectionError> for ApiError {
    fn from(error: ProjectionError) -> Self {
        match error {
            ProjectionError::AccountNotFound(account) => {
                ApiError::not_found("account_not_found", format!("account `{account}` not found"))
            }
            ProjectionError::CdrNotFound(id) => ApiError::not_found("cdr_not_found", format!("CDR `{id}` not found")),
            ProjectionError::InvalidQuery { field, reason } => {
                ApiError::bad_request("invalid_query", field, format!("{field}: {reason}"))
            }
            // The write is durable; only the read side lags. The client may retry the read.
            not_caught_up @ ProjectionError::NotCaughtUp { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_caught_up", not_caught_up.to_string())
            }
            other @ (ProjectionError::Storage(_) | ProjectionError::Corrupt { .. } | ProjectionError::Store(_)) => {
                ApiError::internal(&other)
            }
        }
    }
}

/// Passwords (issue 18).
impl ApiError {
    /// The right password, but one someone else set: the user must choose its own, by
    /// signing in again with `new_password`, before it opens a session.
    pub fn password_change_required() -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "password_change_required",
            "this password was set by someone else and must be changed: sign in again with `new_password`",
        )
        .with_field("new_password")
    }

    /// A password change whose new password is the current one.
    pub fn password_unchanged() -> Self {
        ApiError::bad_request("password_unchanged", "new_password", "the new password must differ from the current one")
    }

    /// A user changing its own password gave a wrong current one. Not a 401: the
    /// credential the request came with is fine, and stays so.
    pub fn current_password_wrong() -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "current_password_wrong", "the current password does not match")
            .with_field("current_password")
    }
}
