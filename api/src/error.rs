//! The API's one error type. This is the only place that picks an HTTP status and renders
//! an error body, so every endpoint answers the same way for the same failure.

use std::borrow::Cow;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use commands::CommandError;
use domain::{DomainError, ErrorKind};
use projections::ProjectionError;
use serde::Serialize;

/// What a client is told when the failure is ours: the details go to the log only, since
/// they may name files, hosts or internal state.
const INTERNAL_MESSAGE: &str = "internal error; the operator has been told";

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Cow<'static, str>,
    pub field: Option<Cow<'static, str>>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    status: &'static str,
    error: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError { status, code, message: message.into(), field: None }
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

    pub fn unauthorized() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or invalid credentials")
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
        tracing::error!(%error, "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", INTERNAL_MESSAGE)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            ErrorBody { status: "error", error: self.code, message: &self.message, field: self.field.as_deref() };
        (self.status, Json(body)).into_response()
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
            CommandError::Overloaded => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "the ledger is overloaded, retry later")
            }
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
