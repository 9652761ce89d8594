//! The OpenAPI 3.1 document, generated from the handlers' annotations and the request and
//! response types (utoipa), and the interactive docs page. The Swagger UI assets are
//! compiled into the binary (`utoipa-swagger-ui`'s `vendored` feature), so the page works
//! on a machine without internet access, and the build downloads nothing.
//!
//! Besides the schema helpers for domain types (which know nothing of OpenAPI), this module
//! holds the error answers each kind of endpoint can give, so that the document lists them
//! the way [`crate::error::ApiError`] produces them.

use std::collections::BTreeMap;

use serde_json::json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi};

use crate::body::{BODY_BYTES_MAX, FORM, JSON, MULTIPART};

/// Where the document and the docs page are served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";
pub const DOCS_PATH: &str = "/api/v1/docs";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tollbook",
        description = "An event-sourced balance ledger for VoIP operators, ISPs and their resellers.\n\n\
            Credentials go in `Authorization: Bearer <token>`, `X-Auth-Token: <token>` or `token: <token>`: \
            the operator's admin key, an API token (`tbk_…`) or a session's access token (a JWT; verify it \
            with `/.well-known/jwks.json`). The switch intake routes (`/api/v1/cdrs/freeswitch`, `asterisk`, \
            `kamailio`, `mapped`) also take `Authorization: Basic` with an API token's user's login and the \
            token as the password.\n\n\
            Every write accepts `application/json`, `application/x-www-form-urlencoded` and \
            `multipart/form-data` alike, and an optional `Idempotency-Key` header. Amounts are exact \
            decimals: JSON numbers (never read through a float) or strings.\n\n\
            Errors are `{\"status\":\"error\",\"error\":\"<code>\",\"message\":\"…\",\"field\":\"…\"}`.",
    ),
    components(schemas(crate::error::ErrorBody)),
    tags(
        (name = "accounts", description = "Partners and customers: register, details, status, credit limit, tariff"),
        (name = "money", description = "Payments, adjustments, charges, fund moves and reversals"),
        (name = "statements", description = "Balances by period, from the read models"),
        (name = "auth", description = "Users, API tokens, sessions and the public key"),
        (name = "alerts", description = "Alert thresholds per account and the operator's message templates"),
        (name = "events", description = "The live event stream (WebSocket) and webhooks"),
        (name = "portal", description = "Login links to the customer portal (the portal's pages are under `/portal`)"),
        (name = "operations", description = "Health, metrics, this document"),
        (name = "billing", description = "Recurring charges: plans and subscriptions (see docs/billing-cycle.md)"),
        (name = "invoices", description = "Invoice runs, tax rules, invoices and credit notes as JSON, HTML and PDF (see docs/billing-cycle.md)"),
    )
)]
pub struct ApiDoc;

/// Conventions every operation shares, applied to the generated document in one place
/// once every route is in it: the security schemes and the three body encodings.
pub struct Conventions;

const SECURITY_SCHEMES: [&str; 3] = ["bearer", "x_auth_token", "token"];
/// The routes that also take HTTP Basic credentials (`crate::auth::SwitchCaller`).
const SWITCH_INTAKE_PATHS: [&str; 4] =
    ["/api/v1/cdrs/freeswitch", "/api/v1/cdrs/asterisk", "/api/v1/cdrs/kamailio", "/api/v1/cdrs/mapped"];

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The admin key, an API token or a session's access token (JWT)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "x_auth_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Auth-Token"))),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "The switch intake routes only: the login of an API token's user, and the token as the \
                         password (FreeSWITCH mod_json_cdr's `cred`)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme("token", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("token"))));
        // Any one of the three headers will do: one requirement per scheme, as alternatives.
        openapi.security = Some(
            SECURITY_SCHEMES
                .iter()
                .map(|name| utoipa::openapi::security::SecurityRequirement::new(*name, Vec::<String>::new()))
                .collect(),
        );
        let with_basic: Vec<_> = SECURITY_SCHEMES
            .iter()
            .chain(&["basic"])
            .map(|name| utoipa::openapi::security::SecurityRequirement::new(*name, Vec::<String>::new()))
            .collect();
        for (path, item) in openapi.paths.paths.iter_mut() {
            if SWITCH_INTAKE_PATHS.contains(&path.as_str())
                && let Some(post) = item.post.as_mut()
            {
                post.security = Some(with_basic.clone());
            }
            let operations = [&mut item.post, &mut item.put, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                same_body_in_every_encoding(operation);
            }
        }
        readable_in_the_docs_page(openapi);
    }
}

/// The handlers declare their body as JSON; the `Body` extractor takes the same fields as
/// a URL-encoded or multipart form, so the document says so for every write.
fn same_body_in_every_encoding(operation: &mut Operation) {
    let Some(body) = operation.request_body.as_mut() else { return };
    let Some(json_content) = body.content.get(JSON).cloned() else { return };
    for encoding in [FORM, MULTIPART] {
        body.content.entry(encoding.to_owned()).or_insert_with(|| json_content.clone());
    }
}

/// An amount as the API takes it: an exact decimal, as a JSON number or a string.
pub fn amount_in() -> utoipa::openapi::schema::Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::Number, Type::String]))
        .description(Some(
            "An exact decimal amount, as a JSON number or a string (forms send strings); at most 5 decimal \
             places. Never read through a floating-point number.",
        ))
        .examples([json!("25.50")])
        .build()
}

/// An amount as the API writes it: a JSON number written from the decimal, exact.
pub fn amount_out() -> utoipa::openapi::schema::Object {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .description(Some("An exact decimal amount, written from the decimal (no floating-point rounding)."))
        .examples([json!(25.5)])
        .build()
}

/// An amount that may be unset, as the API writes it: a number, or null (explicitly, not
/// left out). A `schema_with` replaces the schema utoipa would derive from `Option<T>`, so
/// the null has to be said here.
pub fn amount_out_or_null() -> utoipa::openapi::schema::Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::Number, Type::Null]))
        .description(Some(
            "An exact decimal amount, written from the decimal (no floating-point rounding); null when not set.",
        ))
        .examples([json!(25.5)])
        .build()
}

/// An optional amount as the API takes it: absent or null means none.
pub fn amount_in_or_null() -> utoipa::openapi::schema::Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::Number, Type::String, Type::Null]))
        .description(Some(
            "An exact decimal amount, as a JSON number or a string (forms send strings); at most 5 decimal \
             places; absent or null for none. Never read through a floating-point number.",
        ))
        .examples([json!("25.50")])
        .build()
}

pub fn currency() -> utoipa::openapi::schema::Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[A-Z]{3}$"))
        .description(Some("ISO 4217 currency code"))
        .examples([json!("EUR")])
        .build()
}

fn string_enum(values: &[&str], description: &str) -> utoipa::openapi::schema::Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
        .build()
}

pub fn account_kind() -> utoipa::openapi::schema::Object {
    string_enum(&["partner", "customer"], "A partner (reseller) or a customer")
}

pub fn account_status() -> utoipa::openapi::schema::Object {
    string_enum(&["active", "suspended", "closed"], "Closed accounts accept only reversals")
}

/// The example instant of the document: one that a client can paste and that the
/// server accepts.
const TIMESTAMP_EXAMPLE: &str = "2025-01-15T10:00:00Z";

fn date_time() -> utoipa::openapi::SchemaFormat {
    utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::DateTime)
}

pub fn timestamp() -> utoipa::openapi::schema::Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(date_time()))
        .description(Some("RFC 3339, UTC"))
        .examples([json!(TIMESTAMP_EXAMPLE)])
        .build()
}

/// An instant that may be unset (a call that was not answered), written as null.
pub fn timestamp_or_null() -> utoipa::openapi::schema::Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
        .format(Some(date_time()))
        .description(Some("RFC 3339, UTC; null when there is none"))
        .examples([json!(TIMESTAMP_EXAMPLE)])
        .build()
}

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(JSON, ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
        .build()
        .into()
}

/// The error answers, by status, as `ApiError` gives them.
fn errors(statuses: &[u16]) -> BTreeMap<String, RefOr<Response>> {
    statuses
        .iter()
        .map(|status| {
            let description = match status {
                400 => "Bad input: a malformed body, query or header; `field` names it".to_owned(),
                401 => "No credential, or one that is unknown, expired or revoked (`unauthorized`, \
                        `invalid_credentials`), or a genuine one used from an address its allowlist refuses \
                        (`address_not_allowed`)"
                    .to_owned(),
                403 => "The caller's role does not allow this: a customer writing, a partner changing its own \
                        account, or an operator-only resource"
                    .to_owned(),
                404 => "No such object, or one the caller may not see (the same answer)".to_owned(),
                409 => "A conflict: a duplicate (account number, login), an `Idempotency-Key` reused with another \
                        body, or a reversal of an already reversed entry"
                    .to_owned(),
                413 => format!("The body is larger than {BODY_BYTES_MAX} bytes"),
                415 => "The Content-Type is none of JSON, URL-encoded form, multipart form".to_owned(),
                422 => "A rule of the ledger refused it: insufficient funds, a closed account, another partner's \
                        customer, …"
                    .to_owned(),
                429 => "Too many wrong secrets for this login or from this address, or too many sign-ins being \
                        checked at once from it (`too_many_attempts`): refused without checking the secret, the \
                        right one included; retry after the `Retry-After` header's seconds"
                    .to_owned(),
                500 => "A failure of the server; the details are in its log only".to_owned(),
                503 => "Overloaded, shutting down, or the read models have not caught up; retry after the \
                        `Retry-After` header's seconds"
                    .to_owned(),
                other => unreachable!("no description for status {other}"),
            };
            (status.to_string(), error_response(&description))
        })
        .collect()
}

macro_rules! error_set {
    ($(#[$doc:meta])* $name:ident: $($status:literal),+) => {
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                errors(&[$($status),+])
            }
        }
    };
}

error_set!(
    /// A read of the ledger or the read models.
    ReadErrors: 400, 401, 404, 500, 503
);
error_set!(
    /// A write to the ledger.
    WriteErrors: 400, 401, 403, 404, 409, 413, 415, 422, 500, 503
);
error_set!(
    /// A read that takes a file (a reconciliation's CDR file).
    UploadErrors: 400, 401, 404, 413, 415, 500, 503
);
error_set!(
    /// Reads of operator-only resources (users, tokens).
    AdminReadErrors: 400, 401, 403, 404, 500
);
error_set!(
    /// Writes to operator-only resources (users, tokens).
    AdminWriteErrors: 400, 401, 403, 404, 409, 413, 415, 500
);
error_set!(
    /// Signing in and refreshing: no credential header, the secret is in the body.
    SessionErrors: 400, 401, 413, 415, 429, 500, 503
);
error_set!(
    /// Reads that need only a credential.
    AuthenticatedErrors: 401, 500
);
error_set!(
    /// A user changing its own password: the current one is checked and throttled like a
    /// sign-in.
    OwnPasswordErrors: 400, 401, 403, 413, 415, 429, 500
);

/// The `Idempotency-Key` header every ledger write takes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "only documents the header; `crate::write::Write` reads it")]
pub struct IdempotencyKey {
    /// Makes the write safe to retry: the same key with the same request answers the first
    /// result (`repeated: true`); the same key with another request is a 409.
    #[param(rename = "Idempotency-Key", max_length = 128)]
    idempotency_key: Option<String>,
}

/// The `min_position` query parameter of reads that follow the read models.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "only documents the parameter; `crate::query` reads it")]
pub struct MinPosition {
    /// Wait (up to 5 s) until the read models reflect this global log position, such as the
    /// `position` a write answered: read your own writes.
    min_position: Option<u64>,
}

/// The example of an account's `links`: the map the server writes for the example
/// account, so the example cannot drift from the answers.
pub fn account_links_example() -> serde_json::Value {
    json!(crate::links::account_links("C-1001"))
}

/// The example of the alert templates' `variables`: the real list.
pub fn template_variables_example() -> serde_json::Value {
    json!(crate::notify::template::VARIABLES.into_iter().collect::<BTreeMap<_, _>>())
}

/// Rewrites what the docs page (Swagger UI) shows wrongly, without changing what the
/// document accepts or promises: a schema typed `[T, "null"]` (every `Option`) becomes
/// `anyOf: [T, null]`, which the page's example generator reads as T (it folded the type
/// list into "stringnull"), with the schema's `example` as an example of T; and the
/// business time of a write (`occurred_at`) is a `date-time`, which the page shows as
/// one, rather than a bare "string".
fn readable_in_the_docs_page(openapi: &mut utoipa::openapi::OpenApi) {
    let Ok(mut document) = serde_json::to_value(&*openapi) else { return };
    visit_schemas(&mut document, false);
    match serde_json::from_value(document) {
        Ok(rewritten) => *openapi = rewritten,
        Err(error) => tracing::error!(%error, "the OpenAPI document could not be rewritten for the docs page"),
    }
}

/// Keys whose values are data (examples, enumerations), not schemas or document parts.
const DATA_KEYS: [&str; 5] = ["example", "examples", "enum", "const", "default"];
/// The keys of a schema that stay on the outer schema when its type is split.
const OUTER_KEYS: [&str; 5] = ["description", "title", "deprecated", "readOnly", "writeOnly"];

fn visit_schemas(value: &mut serde_json::Value, in_schema: bool) {
    match value {
        serde_json::Value::Object(map) => {
            // Before the children are visited: `occurred_at` is still typed `[string, null]`.
            if in_schema
                && let Some(serde_json::Value::Object(properties)) = map.get_mut("properties")
                && let Some(serde_json::Value::Object(occurred_at)) = properties.get_mut("occurred_at")
            {
                date_time_format(occurred_at);
            }
            for (key, child) in map.iter_mut() {
                if in_schema && DATA_KEYS.contains(&key.as_str()) {
                    continue;
                }
                let child_in_schema = in_schema || key == "schema" || key == "schemas";
                visit_schemas(child, child_in_schema);
            }
            if in_schema {
                split_null_type(map);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                visit_schemas(item, in_schema);
            }
        }
        _ => {}
    }
}

/// `{"type": ["string", "null"], …}` → `{"anyOf": [{"type": "string", …}, {"type": "null"}]}`.
fn split_null_type(schema: &mut serde_json::Map<String, serde_json::Value>) {
    let Some(serde_json::Value::Array(types)) = schema.get("type") else { return };
    let null = json!("null");
    if types.len() < 2 || !types.contains(&null) {
        return;
    }
    let mut others: Vec<serde_json::Value> = types.iter().filter(|t| **t != null).cloned().collect();
    let other = if others.len() == 1 { others.remove(0) } else { serde_json::Value::Array(others) };
    let mut inner = serde_json::Map::new();
    inner.insert("type".into(), other);
    let keys: Vec<String> =
        schema.keys().filter(|k| *k != "type" && !OUTER_KEYS.contains(&k.as_str())).cloned().collect();
    for key in keys {
        if let Some(value) = schema.remove(&key) {
            inner.insert(key, value);
        }
    }
    schema.remove("type");
    if let Some(serde_json::Value::Array(values)) = inner.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    if let Some(example) = inner.remove("example") {
        inner.entry("examples").or_insert_with(|| json!([example]));
    }
    schema.insert("anyOf".into(), json!([inner, {"type": "null"}]));
}

/// An `occurred_at` given as a string is a date-time (a bare date is taken too: the
/// description says so).
fn date_time_format(schema: &mut serde_json::Map<String, serde_json::Value>) {
    let string = json!("string");
    let is_string = match schema.get("type") {
        Some(serde_json::Value::Array(types)) => types.contains(&string),
        Some(other) => *other == string,
        None => false,
    };
    if is_string {
        schema.entry("format").or_insert_with(|| json!("date-time"));
    }
}

/// An adjustment's amount: signed, and the sign is the part people get wrong.
pub fn adjustment_amount_in() -> utoipa::openapi::schema::Object {
    let mut schema = amount_in();
    schema.description = Some(
        "Signed: a positive amount is a debit (it adds to the account's charges and lowers its balance), a \
         negative one a credit (it raises the balance). An exact decimal, as a JSON number or a string; at \
         most 5 decimal places."
            .into(),
    );
    schema
}
