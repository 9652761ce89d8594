//! Column mappings: how to read the CSV files of a switch tollbook has no format for
//! (`domain::csv_mapping`), saved per operator or per partner in the settings store
//! (`<data>/notify`; why not events: docs/architecture.md, "Column mappings"), and used by
//! `POST /api/v1/cdrs/mapped` and `tollbook import cdrs --mapping`.
//!
//! Who may do what, as for the switch identifiers: the operator saves and deletes every
//! book's mappings; a partner reads and uses its own book's (another partner's is a 404)
//! and changes none. The ready-made mappings are everyone's to read and use, no one's to
//! change. Customers post no CDRs, so they have none.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use chrono::Utc;
use domain::BookId;
use domain::csv_mapping::{ColumnRef, CsvMapping, MAPPING_TIME_FORMAT_DEFAULT, MappedField};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Scope};
use crate::body::Body;
use crate::error::ApiError;
use crate::notify::store::MappingRecord;
use crate::openapi::{AdminReadErrors, AdminWriteErrors};
use crate::query;
use crate::state::AppState;

/// Mappings one book may keep: one per switch model or export a customer sends, with room
/// to spare.
pub const MAPPINGS_PER_BOOK_MAX: usize = 64;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(show, remove))
}

/// A column given as a JSON number or text (a form has only text).
fn column<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    struct Text;
    impl<'de> Visitor<'de> for Text {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a column position (from 1) or a header name")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        // serde_json's `arbitrary_precision` hands a number over as a one-entry map under
        // this key, holding the number's text; any other object is not a column.
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
            match map.next_key::<String>()? {
                Some(key) if key == "$serde_json::private::Number" => map.next_value::<String>(),
                _ => Err(de::Error::custom("a column position (from 1) or a header name")),
            }
        }
    }
    deserializer.deserialize_any(Text).map(Some)
}

/// A yes/no given as a JSON boolean or as text (`true`, `false`).
fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    struct Flag;
    impl Visitor<'_> for Flag {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("true or false")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            match v.trim() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                other => {
                    Err(E::custom(format!("`{}` is not true or false", other.chars().take(16).collect::<String>())))
                }
            }
        }
    }
    deserializer.deserialize_any(Flag).map(Some)
}

/// A new column mapping: its name, the file's shape, and for each CDR field the column
/// it is read from — a position (the first column is 1) or, in a file with a header row,
/// the column's name. Required: `id`, `callee`, `start`, `end` or `duration`, and one of
/// `account_code`, `caller`, `trunk` (what ties each CDR to an account).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MappingRequest {
    /// Letters, digits, `.`, `_`, `-`; unique within its book.
    #[schema(example = "carrier-x")]
    name: String,
    /// The partner (account number) whose mapping it is: that partner and the operator
    /// may read and use it. The operator's own when absent.
    partner: Option<String>,
    /// Whether the file's first line names its columns; true when absent.
    #[serde(default, deserialize_with = "flag")]
    #[schema(value_type = Option<bool>, example = true)]
    header: Option<bool>,
    /// The character between columns; `,` when absent.
    #[schema(example = ";")]
    delimiter: Option<String>,
    /// `rfc3339`, `epoch` (seconds), `epoch_ms`, or a strftime pattern (`%z` in it reads
    /// the time's own offset); `%Y-%m-%d %H:%M:%S` when absent.
    #[schema(example = "%d/%m/%Y %H:%M:%S")]
    time_format: Option<String>,
    /// Where times written without an offset are: an IANA time zone (`Europe/Berlin`: the
    /// offset in force at each time, summer time included) or a fixed offset (`+01:00`,
    /// `-0500`, `UTC` when absent). An upload's `time_zone` or `utc_offset` replaces it.
    #[schema(example = "Europe/Berlin")]
    time_zone: Option<String>,
    /// The `trunk` column holds a channel name (`SIP/carrier1-0000002a`): its peer is the trunk.
    #[serde(default, deserialize_with = "flag")]
    #[schema(value_type = Option<bool>)]
    trunk_is_channel: Option<bool>,
    /// The call's id (required): a repeated id is a duplicate.
    #[serde(default, deserialize_with = "column")]
    #[schema(value_type = Option<String>, example = "call_id")]
    id: Option<String>,
    /// The switch's account code, an identifier of the account.
    #[serde(default, deserialize_with = "column")]
    #[schema(value_type = Option<String>, example = "account")]
    account_code: Option<String>,
    /// The calling number: the CDR's caller and an identifier of the account.
    #[serde(default, deserialize_with = "column")]
    #[schema(value_type = Option<String>, example = "from")]
    caller: Option<String>,
    /// The trunk or gateway, an identifier of the account.
    #[serde(default, deserialize_with = "column")]
    #[schema(value_type = Option<String>)]
    trunk: Option<String>,
    /// The called number (required).
    #[serde(default, deserialize_with = "column")]
    #[schema(value_type = Option<String>, example = "to")]
    callee: Option<String>,
    /// The call's start (required).
    #[serde(default, deserialize_with = "column")]
    #[schema(value_type = Option<String>, example = "setup_time")]
    start: Option<String>,
    /// When it was answered; an empty value is an unanswered call. Without this column,
    /// `end - billable_seconds`.
    #[serde(default, deserialize_with = "column")]
    #[schema(value_type = Option<String>, example = "connect_time")]
    answer: Option<String>,
    /// When it ended (required unless `duration` is given).
    #[serde(default, deserialize_with = "column")]
    #[schema(value_type = Option<String>, example = "release_time")]
    end: Option<String>,
    /// Seconds from start to end: the end, when the file has none.
    #[serde(default, deserialize_with = "column")]
    #[schema(value_type = Option<String>)]
    duration: Option<String>,
    /// What the switch billed (billsec); a fraction is cut.
    #[serde(default, deserialize_with = "column")]
    #[schema(value_type = Option<String>, example = "billsec")]
    billable_seconds: Option<String>,
    /// A Q.850 code or name, a FreeSWITCH cause, an Asterisk disposition, `sip:486`.
    #[serde(default, deserialize_with = "column")]
    #[schema(value_type = Option<String>, example = "cause")]
    hangup_cause: Option<String>,
    /// `outbound` or `inbound`.
    #[serde(default, deserialize_with = "column")]
    #[schema(value_type = Option<String>)]
    direction: Option<String>,
    /// A cost the switch already rated.
    #[serde(default, deserialize_with = "column")]
    #[schema(value_type = Option<String>)]
    cost: Option<String>,
}

impl MappingRequest {
    fn columns(&self) -> Result<BTreeMap<MappedField, ColumnRef>, ApiError> {
        use MappedField::*;
        let given = [
            (Id, &self.id),
            (AccountCode, &self.account_code),
            (Caller, &self.caller),
            (Trunk, &self.trunk),
            (Callee, &self.callee),
            (Start, &self.start),
            (Answer, &self.answer),
            (End, &self.end),
            (Duration, &self.duration),
            (BillableSeconds, &self.billable_seconds),
            (HangupCause, &self.hangup_cause),
            (Direction, &self.direction),
            (Cost, &self.cost),
        ];
        let mut columns = BTreeMap::new();
        for (field, text) in given {
            if let Some(text) = text {
                columns.insert(field, ColumnRef::parse(field, text)?);
            }
        }
        Ok(columns)
    }
}

/// A column as the API shows it: a position or a header name.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ColumnOut {
    Position(u16),
    Name(String),
}

#[derive(Serialize, ToSchema)]
pub struct MappingOut {
    #[schema(example = "carrier-x")]
    name: String,
    /// `operator`, a partner's account number, or `built-in` for a ready-made mapping.
    #[schema(example = "operator")]
    owner: String,
    header: bool,
    #[schema(example = ",")]
    delimiter: String,
    /// Each CDR field and its column.
    #[schema(example = json!({"id": "call_id", "caller": "from", "callee": "to", "start": "setup_time", "end": "release_time"}))]
    columns: BTreeMap<&'static str, ColumnOut>,
    #[schema(example = "%Y-%m-%d %H:%M:%S")]
    time_format: String,
    #[schema(example = "UTC")]
    time_zone: String,
    trunk_is_channel: bool,
    created_at: Option<chrono::DateTime<Utc>>,
    created_by: Option<String>,
    #[schema(example = json!({"self": "/api/v1/cdr-mappings/carrier-x", "upload": "/api/v1/cdrs/mapped?mapping=carrier-x"}))]
    links: BTreeMap<&'static str, String>,
}

fn owner_name(state: &AppState, book: Option<BookId>) -> String {
    match book {
        None => "built-in".to_owned(),
        Some(BookId::OPERATOR) => "operator".to_owned(),
        Some(book) => state
            .ledger
            .account_by_id(domain::AccountId(book.0))
            .map_or_else(|| book.to_string(), |partner| partner.number),
    }
}

fn mapping_out(
    state: &AppState,
    book: Option<BookId>,
    mapping: &CsvMapping,
    record: Option<&MappingRecord>,
) -> MappingOut {
    let owner = owner_name(state, book);
    let partner = match book {
        Some(book) if book != BookId::OPERATOR => format!("&partner={owner}"),
        _ => String::new(),
    };
    let mut links = BTreeMap::new();
    links.insert("self", format!("/api/v1/cdr-mappings/{}{}", mapping.name, partner.replacen('&', "?", 1)));
    links.insert("upload", format!("/api/v1/cdrs/mapped?mapping={}{partner}", mapping.name));
    MappingOut {
        name: mapping.name.clone(),
        owner,
        header: mapping.header,
        delimiter: mapping.delimiter.to_string(),
        columns: mapping
            .columns
            .iter()
            .map(|(field, column)| {
                let shown = match column {
                    ColumnRef::Position(position) => ColumnOut::Position(*position),
                    ColumnRef::Name(name) => ColumnOut::Name(name.clone()),
                };
                (field.as_str(), shown)
            })
            .collect(),
        time_format: mapping.time_format.clone(),
        time_zone: mapping.time_zone.clone(),
        trunk_is_channel: mapping.trunk_is_channel,
        created_at: record.map(|r| r.created_at),
        created_by: record.map(|r| r.created_by.clone()),
        links,
    }
}

fn require_operator_or_partner(caller: &Caller) -> Result<(), ApiError> {
    match caller.scope {
        Scope::Admin | Scope::Partner(_) => Ok(()),
        Scope::Customer(_) => Err(ApiError::forbidden("column mappings are for the operator and partners")),
    }
}

/// The book whose mappings a request names: the `partner` given (the operator any
/// partner's, a partner only its own: another's is 404), else the caller's own.
pub(super) fn mapping_book(state: &AppState, caller: &Caller, partner: Option<&str>) -> Result<BookId, ApiError> {
    require_operator_or_partner(caller)?;
    let own = match caller.scope {
        Scope::Partner(partner) => BookId::of_partner(partner),
        _ => BookId::OPERATOR,
    };
    let Some(number) = partner.map(str::trim).filter(|n| !n.is_empty()) else { return Ok(own) };
    let account = crate::write::visible_account(&state.ledger, caller, "partner", number)?;
    if account.kind != domain::AccountKind::Partner {
        return Err(ApiError::bad_request("invalid_field", "partner", format!("partner: `{number}` is not a partner")));
    }
    Ok(BookId::of_partner(account.id))
}

fn mapping_not_found(name: &str) -> ApiError {
    ApiError::not_found(
        "cdr_mapping_not_found",
        format!("no column mapping `{}`", name.chars().take(64).collect::<String>()),
    )
    .with_field("mapping")
}

/// The mapping a request names: the book's own, else a ready-made one.
pub(super) fn resolve_mapping(
    state: &AppState,
    caller: &Caller,
    name: &str,
    partner: Option<&str>,
) -> Result<CsvMapping, ApiError> {
    let book = mapping_book(state, caller, partner)?;
    if let Some(record) = state.notify.store.cdr_mapping(book, name)? {
        return Ok(record.mapping);
    }
    domain::csv_mapping::builtin_mapping(name).ok_or_else(|| mapping_not_found(name))
}

#[derive(Serialize, ToSchema)]
pub struct MappingResponse {
    #[schema(example = "ok")]
    status: &'static str,
    mapping: MappingOut,
}

/// Save a column mapping (the operator's own, or a partner's) for `POST
/// /api/v1/cdrs/mapped` and `tollbook import cdrs --mapping`. Checked whole first: a
/// required field missing, a column read as two fields, a time format that does not give a
/// whole date and time, or a time zone that is neither an IANA zone nor an offset is refused
/// (400 `invalid_field`, naming the field) and
/// nothing is kept. A name its book already has is 409 (delete it first). The operator's
/// to do, as the switch identifiers are.
#[utoipa::path(
    post,
    path = "/api/v1/cdr-mappings",
    operation_id = "create_cdr_mapping",
    tag = "cdrs",
    request_body = MappingRequest,
    responses((status = 201, description = "Saved", body = MappingResponse), AdminWriteErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<MappingRequest>,
) -> Result<(StatusCode, Json<MappingResponse>), ApiError> {
    caller.require_admin()?;
    let book = mapping_book(&state, &caller, request.partner.as_deref())?;
    let delimiter = match request.delimiter.as_deref() {
        None => ',',
        Some("\\t" | "tab") => '\t',
        Some(text) => {
            let mut chars = text.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => c,
                _ => return Err(ApiError::bad_request("invalid_field", "delimiter", "delimiter: one character")),
            }
        }
    };
    let mapping = CsvMapping {
        name: request.name.clone(),
        header: request.header.unwrap_or(true),
        delimiter,
        columns: request.columns()?,
        time_format: request.time_format.clone().unwrap_or_else(|| MAPPING_TIME_FORMAT_DEFAULT.to_owned()),
        time_zone: request.time_zone.clone().unwrap_or_else(|| "UTC".to_owned()),
        trunk_is_channel: request.trunk_is_channel.unwrap_or(false),
    }
    .validated()?;
    let taken = |name: &str| {
        ApiError::new(
            StatusCode::CONFLICT,
            "cdr_mapping_exists",
            format!("a column mapping `{name}` exists; delete it first"),
        )
        .with_field("name")
    };
    // A ready-made name would hide the ready-made mapping from its book.
    if domain::csv_mapping::builtin_mapping(&mapping.name).is_some() {
        return Err(taken(&mapping.name));
    }
    if state.notify.store.cdr_mappings(Some(book))?.len() >= MAPPINGS_PER_BOOK_MAX {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_cdr_mappings",
            format!("at most {MAPPINGS_PER_BOOK_MAX} column mappings per book; delete one first"),
        ));
    }
    let record = MappingRecord { book, mapping, created_at: Utc::now(), created_by: caller.actor.clone() };
    if !state.notify.store.insert_cdr_mapping(&record).await? {
        return Err(taken(&record.mapping.name));
    }
    let mapping = mapping_out(&state, Some(book), &record.mapping, Some(&record));
    Ok((StatusCode::CREATED, Json(MappingResponse { status: "ok", mapping })))
}

#[derive(Serialize, ToSchema)]
pub struct MappingList {
    #[schema(example = "ok")]
    status: &'static str,
    /// The caller's book's mappings (the operator: every book's) by owner and name, then
    /// the ready-made ones.
    mappings: Vec<MappingOut>,
}

/// The column mappings the caller may use: a partner its own, the operator every book's,
/// and the ready-made ones (`asterisk-cdr-custom`).
#[utoipa::path(
    get,
    path = "/api/v1/cdr-mappings",
    operation_id = "list_cdr_mappings",
    tag = "cdrs",
    responses((status = 200, description = "The mappings", body = MappingList), AdminReadErrors)
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<MappingList>, ApiError> {
    let book = match mapping_book(&state, &caller, None)? {
        BookId::OPERATOR if caller.scope == Scope::Admin => None,
        own => Some(own),
    };
    let mut mappings: Vec<MappingOut> = state
        .notify
        .store
        .cdr_mappings(book)?
        .iter()
        .map(|record| mapping_out(&state, Some(record.book), &record.mapping, Some(record)))
        .collect();
    mappings.extend(domain::csv_mapping::builtin_mappings().iter().map(|m| mapping_out(&state, None, m, None)));
    Ok(Json(MappingList { status: "ok", mappings }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct OwnerQuery {
    /// The operator only: the partner (account number) whose mapping it is.
    #[param(example = "P-1")]
    partner: Option<String>,
}

/// One column mapping: the book's own by that name, else the ready-made one.
#[utoipa::path(
    get,
    path = "/api/v1/cdr-mappings/{name}",
    operation_id = "show_cdr_mapping",
    tag = "cdrs",
    params(("name" = String, Path, description = "The mapping's name", example = "carrier-x"), OwnerQuery),
    responses((status = 200, description = "The mapping", body = MappingResponse), AdminReadErrors)
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<MappingResponse>, ApiError> {
    let query: OwnerQuery = query::parse(raw.as_deref())?;
    let book = mapping_book(&state, &caller, query.partner.as_deref())?;
    let mapping = match state.notify.store.cdr_mapping(book, &name)? {
        Some(record) => mapping_out(&state, Some(book), &record.mapping, Some(&record)),
        None => {
            let builtin = domain::csv_mapping::builtin_mapping(&name).ok_or_else(|| mapping_not_found(&name))?;
            mapping_out(&state, None, &builtin, None)
        }
    };
    Ok(Json(MappingResponse { status: "ok", mapping }))
}

/// Delete a column mapping (the operator's to do). CDRs it read stay as they were
/// charged: each holds every field it was read into. A ready-made mapping cannot be
/// deleted (404, as no mapping of the book).
#[utoipa::path(
    delete,
    path = "/api/v1/cdr-mappings/{name}",
    operation_id = "delete_cdr_mapping",
    tag = "cdrs",
    params(("name" = String, Path, description = "The mapping's name", example = "carrier-x"), OwnerQuery),
    responses((status = 204, description = "Deleted"), AdminReadErrors)
)]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let query: OwnerQuery = query::parse(raw.as_deref())?;
    let book = mapping_book(&state, &caller, query.partner.as_deref())?;
    if state.notify.store.remove_cdr_mapping(book, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(mapping_not_found(&name))
    }
}
