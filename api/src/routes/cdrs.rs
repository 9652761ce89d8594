//! Call detail records: post one or a batch (JSON, CSV, forms), rated and charged with
//! the tariffs in force; read one, or an account's list with filters, as JSON or CSV.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, RawQuery, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use commands::{AccountRef, CommandError};
use domain::cdr::CdrInput;
use domain::rating::CallDirection;
use domain::{AccountId, Amount, DomainError, EventId, Timestamp};
use futures::StreamExt;
use projections::{CdrFilter, CdrRow};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::page_size;
use crate::auth::{Caller, Scope};
use crate::body::{FORM, JSON, MULTIPART};
use crate::csv_out::{Column, csv_line};
use crate::error::ApiError;
use crate::openapi::{IdempotencyKey, ReadErrors, WriteErrors};
use crate::query;
use crate::state::AppState;
use crate::write::{Write, visible_account};

/// Largest CDR upload: a CSV of about 200,000 CDRs. Bigger files go through
/// `tollbook import cdrs`, or in several requests.
pub const CDR_UPLOAD_BYTES_MAX: usize = 32 * 1024 * 1024;
/// CDRs in one request at most.
pub const CDRS_PER_REQUEST_MAX: usize = 200_000;
pub const CSV: &str = "text/csv";
pub(super) const TEXT: &str = "text/plain";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload))
        .layer(DefaultBodyLimit::max(CDR_UPLOAD_BYTES_MAX))
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(show_by_id))
        .routes(routes!(hangup_causes))
}

/// What happened to one posted CDR.
#[derive(Serialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CdrResult {
    /// Rated and charged (an unanswered call is charged 0 and kept).
    Charged,
    /// Its id was charged before: nothing new was recorded.
    Duplicate,
    /// Refused; `error` says why. Nothing was recorded.
    Rejected,
}

#[derive(Serialize, ToSchema)]
pub struct RowError {
    /// A machine code, as in error answers.
    error: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CdrOutcomeOut {
    /// The CDR's place in the request: its index in a JSON array, from 0.
    index: usize,
    /// Its line in a CSV upload (the header is line 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
    /// The CDR id, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    result: CdrResult,
    #[schema(schema_with = crate::openapi::amount_out)]
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_cost: Option<Amount>,
    #[schema(schema_with = crate::openapi::amount_out)]
    #[serde(skip_serializing_if = "Option::is_none")]
    partner_cost: Option<Amount>,
    /// The global position of the event that charged it (the first charge, for a duplicate).
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<RowError>,
}

#[derive(Serialize, ToSchema, Default)]
pub struct UploadSummary {
    received: usize,
    charged: usize,
    duplicate: usize,
    rejected: usize,
}

#[derive(Serialize, ToSchema)]
pub struct UploadOut {
    #[schema(example = "ok")]
    status: &'static str,
    summary: UploadSummary,
    /// The highest position written: pass it as `min_position` to read the charges.
    position: Option<u64>,
    results: Vec<CdrOutcomeOut>,
}

/// A CDR as posted: each field as text or a JSON number. See the CSV columns for the meaning.
#[derive(Serialize, Deserialize, ToSchema)]
#[allow(dead_code, reason = "documents the fields; uploads are read field by field into `CdrInput`")]
pub struct CdrIn {
    /// Unique within the account's book: a repeated id is a duplicate, charged once.
    #[schema(example = "sw1-000123")]
    id: String,
    /// The number of the customer account the call is charged to.
    #[schema(example = "C-1001")]
    account: String,
    caller: Option<String>,
    #[schema(example = "4930123456")]
    callee: String,
    #[schema(schema_with = crate::openapi::timestamp)]
    start: String,
    /// Absent (or null) for a call that was not answered.
    #[schema(schema_with = crate::openapi::timestamp_or_null)]
    answer: Option<String>,
    #[schema(schema_with = crate::openapi::timestamp)]
    end: String,
    /// What the switch billed; `end - answer` in whole seconds when absent.
    billable_seconds: Option<u32>,
    /// A Q.850 code (`16`) or name (`normal_clearing`), or a SIP status (`sip:486`); 16 when absent.
    hangup_cause: Option<String>,
    /// `outbound` (default) or `inbound`.
    direction: Option<String>,
    /// A cost already rated by the switch: the customer's tariff is then not used.
    #[schema(schema_with = crate::openapi::amount_in_or_null)]
    cost: Option<String>,
    /// The partner's wholesale cost, already rated.
    #[schema(schema_with = crate::openapi::amount_in_or_null)]
    partner_cost: Option<String>,
}

/// One CDR, or a batch of them.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "documents the JSON body; uploads are read field by field")]
pub enum CdrUpload {
    One(Box<CdrIn>),
    Many(Vec<CdrIn>),
}

/// One parsed upload row, before charging.
pub(super) struct Row {
    index: usize,
    line: Option<u64>,
    /// The row's `id` as written, kept for a row that could not be read, so that its
    /// rejection still names it.
    id: Option<String>,
    parsed: Result<CdrInput, ApiError>,
}

impl Row {
    pub(super) fn new(index: usize, line: Option<u64>, id: Option<String>, parsed: Result<CdrInput, ApiError>) -> Row {
        // A text that is not a valid id is still shown as written (bounded): it is what
        // the client must look for in its file.
        let id = id.map(|id| id.trim().chars().take(domain::ids::IDENTIFIER_LENGTH_MAX).collect());
        Row { index, line, id: id.filter(|id: &String| !id.is_empty()), parsed }
    }
}

/// Post CDRs: one JSON object, a JSON array, a CSV file (`text/csv`, or a multipart file
/// part) with the header `id,account,caller,callee,start,answer,end,billable_seconds,hangup_cause,direction,cost,partner_cost`,
/// or one CDR as form fields. Each CDR is rated with the tariffs in force at its start
/// and charged; a bad CDR rejects only itself. One CDR (object or form) answers 201
/// (charged), 200 (duplicate) or its error; a batch answers 200 with a result per CDR.
#[utoipa::path(
    post,
    path = "/api/v1/cdrs",
    operation_id = "post_cdrs",
    tag = "cdrs",
    params(IdempotencyKey),
    request_body(content(
        (CdrUpload = "application/json"),
        (String = "text/csv"),
        (CdrIn = "application/x-www-form-urlencoded"),
        (CdrIn = "multipart/form-data")
    )),
    responses(
        (status = 200, description = "A batch's results, or a duplicate", body = UploadOut),
        (status = 201, description = "The one CDR was charged", body = UploadOut),
        WriteErrors
    )
)]
pub async fn upload(State(state): State<AppState>, write: Write, request: Request) -> Result<Response, ApiError> {
    let (rows, single) = read_upload(request, &state).await?;
    charge_rows(&state, &write, rows, single).await
}

/// Charges the read rows of an upload, in any format, and answers: one CDR (`single`) as
/// one write (201 charged, 200 duplicate, or its error), a batch with a result per row.
pub(super) async fn charge_rows(
    state: &AppState,
    write: &Write,
    rows: Vec<Row>,
    single: bool,
) -> Result<Response, ApiError> {
    let state = state.clone();
    if rows.len() > CDRS_PER_REQUEST_MAX {
        return Err(ApiError::bad_request(
            "too_many_cdrs",
            "body",
            format!("{} CDRs in one request; at most {CDRS_PER_REQUEST_MAX}", rows.len()),
        ));
    }
    // Scope before anything is charged: an account the caller may not post to is
    // rejected like one that does not exist.
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|row| Row {
            parsed: row.parsed.and_then(|cdr| {
                crate::write::managed_account(&state.ledger, &write.caller, "account", &cdr.account).map(|_| cdr)
            }),
            ..row
        })
        .collect();
    if single && let Some(Err(_)) = rows.first().map(|r| &r.parsed) {
        let Some(Row { parsed: Err(error), .. }) = rows.into_iter().next() else { unreachable!() };
        return Err(error);
    }
    let cdrs: Vec<CdrInput> = rows.iter().filter_map(|r| r.parsed.as_ref().ok().cloned()).collect();
    // One CDR is one write: its Idempotency-Key covers the whole CDR, so the same key with
    // another CDR is a conflict. A batch's CDRs are made idempotent by their ids instead.
    let meta = if single { write.meta(&cdrs[0], None)? } else { write.meta(&(), None)? };
    let outcomes = if single {
        vec![state.ledger.charge_cdr(&cdrs[0], meta).await]
    } else {
        state.ledger.charge_cdrs(cdrs, &meta).await
    };
    let mut outcomes = outcomes.into_iter();
    let mut summary = UploadSummary { received: rows.len(), ..UploadSummary::default() };
    let mut results = Vec::with_capacity(rows.len());
    let mut position = None;
    for row in rows {
        let id = row.parsed.as_ref().ok().map(|c| c.id.clone()).or(row.id);
        let mut out = CdrOutcomeOut {
            index: row.index,
            line: row.line,
            id,
            result: CdrResult::Rejected,
            customer_cost: None,
            partner_cost: None,
            position: None,
            error: None,
        };
        let outcome = match row.parsed {
            Err(error) => Err(error),
            Ok(_) => outcomes.next().expect("one outcome per charged CDR").map_err(cdr_error),
        };
        match outcome {
            Ok(outcome) => {
                let charged = outcome.events.iter().find_map(|e| match &e.event.payload {
                    domain::Payload::CallCharged(call) => Some((e.position, call)),
                    _ => None,
                });
                if let Some((at, call)) = charged {
                    let shown = |account: AccountId, amount: Amount| {
                        state
                            .ledger
                            .account_by_id(account)
                            .map_or(amount.normalized(), |a| amount.canonical(a.currency))
                    };
                    out.customer_cost = Some(shown(call.account, call.customer_cost));
                    out.partner_cost =
                        call.partner_cost.map(|cost| call.partner.map_or(cost.normalized(), |p| shown(p, cost)));
                    out.position = Some(at);
                }
                out.result = if outcome.repeated { CdrResult::Duplicate } else { CdrResult::Charged };
                position = position.max(outcome.position());
            }
            Err(error) if single => return Err(error),
            Err(error) => {
                out.error = Some(RowError {
                    error: error.code,
                    message: error.message.into_owned(),
                    field: error.field.map(|f| f.into_owned()),
                });
            }
        }
        match out.result {
            CdrResult::Charged => summary.charged += 1,
            CdrResult::Duplicate => summary.duplicate += 1,
            CdrResult::Rejected => summary.rejected += 1,
        }
        results.push(out);
    }
    let status = if single && summary.charged == 1 { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(UploadOut { status: "ok", summary, position, results })).into_response())
}

/// A CDR's refusal as its row reports it; an account not found is the `account` field's.
fn cdr_error(error: CommandError) -> ApiError {
    let error = ApiError::from(error);
    if error.code == "account_not_found" && error.field.is_none() { error.with_field("account") } else { error }
}

fn row_error(error: DomainError) -> ApiError {
    ApiError::from(error)
}

/// The upload's rows, and whether it was one CDR (answered as one write).
async fn read_upload(request: Request, state: &AppState) -> Result<(Vec<Row>, bool), ApiError> {
    crate::body::refuse_declared_over(&request, CDR_UPLOAD_BYTES_MAX)?;
    let content_type = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        JSON => {
            let bytes = read_bytes(request, state).await?;
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::undeserializable("invalid_body", None, e.to_string()))?;
            match value {
                serde_json::Value::Array(items) => {
                    let rows = items
                        .into_iter()
                        .enumerate()
                        .map(|(index, item)| Row::new(index, None, json_id(&item), from_json(&item)))
                        .collect();
                    Ok((rows, false))
                }
                object @ serde_json::Value::Object(_) => {
                    Ok((vec![Row::new(0, None, json_id(&object), from_json(&object))], true))
                }
                _ => Err(ApiError::bad_request("invalid_body", "body", "a CDR object or an array of CDR objects")),
            }
        }
        CSV => {
            let bytes = read_bytes(request, state).await?;
            refuse_empty_csv(&bytes)?;
            Ok((from_csv("body", &bytes)?, false))
        }
        FORM => {
            let bytes = read_bytes(request, state).await?;
            let pairs = crate::body::url_encoded_pairs(&bytes)
                .map_err(|e| ApiError::undeserializable("invalid_body", e.field, e.message))?;
            Ok((vec![Row::new(0, None, pairs_id(&pairs), from_pairs(&pairs))], true))
        }
        MULTIPART => {
            let mut multipart = Multipart::from_request(request, state)
                .await
                .map_err(|rejection| ApiError::undeserializable("invalid_body", None, rejection.body_text()))?;
            let mut pairs = Vec::new();
            let mut file = None;
            while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
                let name = field.name().unwrap_or_default().to_owned();
                if field.file_name().is_some() || name == "file" {
                    if file.is_some() {
                        return Err(ApiError::bad_request("invalid_body", name, "one CSV file per request"));
                    }
                    file = Some(field.bytes().await.map_err(multipart_error)?);
                } else {
                    // Not `text()`: it would read bytes that are not UTF-8 as U+FFFD.
                    let bytes = field.bytes().await.map_err(multipart_error)?;
                    let text = crate::body::utf8_field(&name, bytes.to_vec())
                        .map_err(|e| ApiError::undeserializable("invalid_body", e.field, e.message))?;
                    pairs.push((name, text));
                }
            }
            match file {
                Some(_) if !pairs.is_empty() => {
                    Err(ApiError::bad_request("invalid_body", pairs[0].0.clone(), "either a CSV file or CDR fields"))
                }
                Some(bytes) => Ok((from_csv("file", &bytes)?, false)),
                None => Ok((vec![Row::new(0, None, pairs_id(&pairs), from_pairs(&pairs))], true)),
            }
        }
        "" => Err(ApiError::unsupported_media_type("a Content-Type is required")),
        other => Err(ApiError::unsupported_media_type(format!(
            "`{}` is not accepted: use application/json, text/csv, application/x-www-form-urlencoded or \
             multipart/form-data",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

pub(super) async fn read_bytes(request: Request, state: &AppState) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state).await.map_err(|rejection| {
        if let Some(timed_out) = crate::body::body_timed_out(&rejection) {
            timed_out
        } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(CDR_UPLOAD_BYTES_MAX)
        } else {
            ApiError::undeserializable("invalid_body", None, rejection.body_text())
        }
    })
}

pub(super) fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
    if let Some(timed_out) = crate::body::body_timed_out(&error) {
        timed_out
    } else if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::payload_too_large(CDR_UPLOAD_BYTES_MAX)
    } else {
        ApiError::undeserializable("invalid_body", None, error.body_text())
    }
}

/// The rows of a CSV upload. A file that is not UTF-8 (a spreadsheet's Latin-1 export)
/// is refused whole: charging its readable rows and rejecting the rest would be half an
/// upload, and a row's text would never be what the switch wrote.
fn from_csv(field: &'static str, bytes: &[u8]) -> Result<Vec<Row>, ApiError> {
    if let Err(error) = std::str::from_utf8(bytes) {
        let at = error.valid_up_to();
        let line = 1 + bytes[..at].iter().filter(|b| **b == b'\n').count();
        return Err(ApiError::bad_request(
            "invalid_body",
            field,
            format!("the CSV is not UTF-8: line {line} has an invalid byte (at offset {at}); export it as UTF-8"),
        ));
    }
    let mut table = commands::ingest::cdr_table(bytes).map_err(row_error)?;
    let mut rows = Vec::new();
    while let Some((line, parsed)) = commands::ingest::next_cdr(&mut table) {
        let id = parsed.is_err().then(|| table.last_field("id").map(str::to_owned)).flatten();
        rows.push(Row::new(rows.len(), Some(line), id, parsed.map_err(row_error)));
    }
    Ok(rows)
}

/// The `id` of a JSON CDR as sent, text or number.
fn json_id(value: &serde_json::Value) -> Option<String> {
    match value.get("id")? {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn pairs_id(pairs: &[(String, String)]) -> Option<String> {
    pairs.iter().find(|(name, _)| name == "id").map(|(_, value)| value.clone())
}

fn from_pairs(pairs: &[(String, String)]) -> Result<CdrInput, ApiError> {
    if let Some((name, _)) = pairs.iter().find(|(name, _)| !domain::cdr::CDR_FIELDS.contains(&name.as_str())) {
        return Err(ApiError::bad_request("invalid_body", name.clone(), format!("unknown field `{name}`")));
    }
    CdrInput::from_fields(|name| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())).map_err(row_error)
}

fn from_json(value: &serde_json::Value) -> Result<CdrInput, ApiError> {
    let serde_json::Value::Object(object) = value else {
        return Err(ApiError::bad_request("invalid_body", "body", "each CDR is a JSON object"));
    };
    let mut pairs = Vec::with_capacity(object.len());
    for (name, value) in object {
        let text = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::String(text) => text.clone(),
            // With `arbitrary_precision` a number's text is exactly what was sent.
            serde_json::Value::Number(number) => number.to_string(),
            _ => return Err(ApiError::bad_request("invalid_body", name.clone(), "expected text or a number")),
        };
        pairs.push((name.clone(), text));
    }
    from_pairs(&pairs)
}

/// A CDR as the ledger keeps it.
#[derive(Serialize, ToSchema)]
pub struct CdrOut {
    id: String,
    /// The number of the account the call was charged to.
    account: String,
    caller: String,
    callee: String,
    #[schema(schema_with = crate::openapi::timestamp)]
    start: Timestamp,
    /// Null for a call that was not answered.
    #[schema(schema_with = crate::openapi::timestamp_or_null, required = true)]
    answer: Option<Timestamp>,
    #[schema(schema_with = crate::openapi::timestamp)]
    end: Timestamp,
    billable_seconds: u32,
    /// Seconds after the tariff's minimum and increments.
    billed_seconds: u32,
    answered: bool,
    /// Q.850 release cause.
    hangup_cause: u16,
    /// Its Q.850 name (see `GET /api/v1/hangup-causes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    hangup_cause_name: Option<&'static str>,
    /// The cause as the switch wrote it, when it was not a bare Q.850 number
    /// (`ORIGINATOR_CANCEL`, `sip:486`, `NO ANSWER`, or a cause no table knows).
    #[serde(skip_serializing_if = "Option::is_none")]
    hangup_cause_raw: Option<String>,
    /// `missing` (no cause given: read as 16) or `unrecognised` (no table knows it: read
    /// as 0); absent when the cause was known. The call was billed all the same.
    #[schema(value_type = Option<String>, example = "unrecognised")]
    #[serde(skip_serializing_if = "Option::is_none")]
    hangup_cause_flag: Option<&'static str>,
    #[schema(value_type = String, example = "outbound")]
    direction: CallDirection,
    /// The destination prefix that priced the call.
    matched_prefix: Option<String>,
    #[schema(schema_with = crate::openapi::amount_out)]
    customer_cost: Amount,
    /// The partner's wholesale cost; never shown to a customer.
    #[schema(schema_with = crate::openapi::amount_out)]
    #[serde(skip_serializing_if = "Option::is_none")]
    partner_cost: Option<Amount>,
    /// The global position of the `CallCharged` event.
    position: u64,
    #[schema(value_type = uuid::Uuid)]
    event_id: EventId,
}

fn render(state: &AppState, caller: &Caller, row: CdrRow) -> CdrOut {
    let account = state.ledger.account_by_id(row.account).map_or_else(|| row.account.to_string(), |a| a.number);
    let partner_cost = match caller.scope {
        Scope::Customer(_) => None,
        _ => row.partner_cost,
    };
    CdrOut {
        answered: row.cdr.answered(),
        hangup_cause_name: domain::rating_engine::q850_name(row.cdr.hangup_cause),
        hangup_cause_raw: row.cdr.hangup_cause_raw,
        hangup_cause_flag: row.cdr.hangup_cause_flag.map(|flag| flag.as_str()),
        id: row.cdr.id,
        account,
        caller: row.cdr.caller,
        callee: row.cdr.callee,
        start: row.cdr.start,
        answer: row.cdr.answer,
        end: row.cdr.end,
        billable_seconds: row.cdr.billable_seconds,
        billed_seconds: row.cdr.billed_seconds,
        hangup_cause: row.cdr.hangup_cause,
        direction: row.cdr.direction,
        matched_prefix: row.cdr.matched_prefix,
        customer_cost: row.customer_cost,
        partner_cost,
        position: row.position,
        event_id: row.event_id,
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Calls that started at or after this time (RFC 3339 or YYYY-MM-DD); all when absent.
    from: Option<String>,
    /// Calls that started before this time.
    to: Option<String>,
    /// `true` for answered calls only, `false` for unanswered ones.
    answered: Option<String>,
    /// A Q.850 code or name, or a SIP status (`sip:486`).
    hangup_cause: Option<String>,
    /// Callee numbers starting with these digits.
    destination: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 1000 (100 by default); ignored for CSV, which streams every CDR.
    #[serde(default, deserialize_with = "query::optional_u64")]
    limit: Option<u64>,
    /// `csv` for a CSV file (or send `Accept: text/csv`).
    format: Option<String>,
    /// Wait until the read models reflect this position (read your writes).
    #[serde(default, deserialize_with = "query::optional_u64")]
    min_position: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct CdrListOut {
    #[schema(example = "ok")]
    status: &'static str,
    cdrs: Vec<CdrOut>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
    #[schema(example = json!({"account": "/api/v1/accounts/C-1001"}))]
    links: BTreeMap<&'static str, String>,
}

struct ListRequest {
    account: AccountRef,
    from: Timestamp,
    to: Timestamp,
    filter: CdrFilter,
    csv: bool,
}

fn list_request(
    state: &AppState,
    caller: &Caller,
    number: &str,
    query: &ListQuery,
    headers: &HeaderMap,
) -> Result<ListRequest, ApiError> {
    let time = |field: &'static str, text: Option<&str>, default: Timestamp| {
        crate::write::parse_time(field, text)
            .map(|t| t.unwrap_or(default))
            .map_err(|e| ApiError { code: "invalid_query", ..e })
    };
    let from = time("from", query.from.as_deref(), Timestamp::MIN)?;
    let to = time("to", query.to.as_deref(), Timestamp::MAX)?;
    let answered = match query.answered.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::bad_request("invalid_query", "answered", "answered: `true` or `false`")),
    };
    let hangup_cause = query
        .hangup_cause
        .as_deref()
        .map(domain::rating_engine::parse_hangup_cause)
        .transpose()
        .map_err(|e| ApiError { code: "invalid_query", ..ApiError::from(e) })?;
    if let Some(prefix) = &query.destination
        && !prefix.bytes().all(|b| b.is_ascii_digit() || b == b'+')
    {
        return Err(ApiError::bad_request("invalid_query", "destination", "destination: digits"));
    }
    let csv = super::csv_requested(query.format.as_deref(), headers)?;
    let account = visible_account(&state.ledger, caller, "number", number)?;
    let filter = CdrFilter { answered, hangup_cause, destination_prefix: query.destination.clone() };
    Ok(ListRequest { account, from, to, filter, csv })
}

/// An account's CDRs by start time, oldest first, with filters; a customer's calls, or
/// for a partner its customers' calls with its wholesale cost. As JSON pages, or with
/// `format=csv` (or `Accept: text/csv`) as one streamed CSV file in the upload format
/// (plus `billed_seconds`, `matched_prefix`, `position`), which `POST /api/v1/cdrs`,
/// `tollbook import cdrs` and reconciliation read back.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{number}/cdrs",
    operation_id = "list_cdrs",
    tag = "cdrs",
    params(("number" = String, Path, description = "The account number", example = "C-1001"), ListQuery),
    responses(
        (status = 200, description = "A page of CDRs, or the CSV file",
         content((CdrListOut = "application/json"), (String = "text/csv"))),
        ReadErrors
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(number): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query: ListQuery = query::parse(raw.as_deref())?;
    let request = list_request(&state, &caller, &number, &query, &headers)?;
    if let Some(position) = query.min_position {
        crate::service::accounts::wait_for_position(&state.ledger, &state.models, position).await?;
    }
    if request.csv {
        return Ok(csv_response(state, caller, request));
    }
    let limit = page_size(query.limit.unwrap_or(super::PAGE_SIZE_DEFAULT as u64))?;
    let page = state
        .models
        .cdrs(request.account.id, request.from, request.to, &request.filter, query.cursor.as_deref(), limit)
        .await?;
    let cdrs = page.items.into_iter().map(|row| render(&state, &caller, row)).collect();
    let links = [("account", format!("/api/v1/accounts/{number}"))].into_iter().collect();
    Ok(Json(CdrListOut { status: "ok", cdrs, next_cursor: page.next_cursor, links }).into_response())
}

/// The kinds of the export's columns, in [`csv_record`]'s order: ids, numbers and the
/// prefix are text (a client chose them), seconds, codes, costs and the position numbers.
const CSV_COLUMNS: [Column; 15] = {
    use Column::{Number, Text};
    [Text, Text, Text, Text, Text, Text, Text, Number, Number, Text, Number, Number, Number, Text, Number]
};

fn csv_record(cdr: &CdrOut) -> Vec<String> {
    let time = |t: Option<Timestamp>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    let direction = match cdr.direction {
        CallDirection::Outbound => "outbound",
        CallDirection::Inbound => "inbound",
    };
    vec![
        cdr.id.clone(),
        cdr.account.clone(),
        cdr.caller.clone(),
        cdr.callee.clone(),
        cdr.start.to_rfc3339(),
        time(cdr.answer),
        cdr.end.to_rfc3339(),
        cdr.billable_seconds.to_string(),
        cdr.hangup_cause.to_string(),
        direction.to_owned(),
        cdr.customer_cost.to_string(),
        cdr.partner_cost.map(|c| c.to_string()).unwrap_or_default(),
        cdr.billed_seconds.to_string(),
        cdr.matched_prefix.clone().unwrap_or_default(),
        cdr.position.to_string(),
    ]
}

/// Streams every CDR of the list, a page at a time: a million CDRs never sit in memory.
fn csv_response(state: AppState, caller: Caller, request: ListRequest) -> Response {
    let columns = domain::cdr::CDR_FIELDS.iter().chain(&commands::ingest::CDR_EXPORT_EXTRA_FIELDS);
    let header = csv_line(&[Column::Text; CSV_COLUMNS.len()], &columns.collect::<Vec<_>>());
    // One snapshot for the whole file: the export is the list at one position, however
    // long it takes to stream.
    let snapshot = state.models.snapshot();
    let pages = futures::stream::unfold(Some(None::<String>), move |cursor| {
        let (state, caller, snapshot) = (state.clone(), caller.clone(), snapshot.clone());
        let (account, from, to, filter) = (request.account.id, request.from, request.to, request.filter.clone());
        async move {
            let cursor = cursor?;
            let page = snapshot.cdrs(account, from, to, &filter, cursor.as_deref(), projections::PAGE_SIZE_MAX).await;
            match page {
                Ok(page) => {
                    let mut text = String::new();
                    for row in page.items {
                        text.push_str(&csv_line(&CSV_COLUMNS, &csv_record(&render(&state, &caller, row))));
                    }
                    Some((Ok::<_, std::io::Error>(Bytes::from(text)), page.next_cursor.map(Some)))
                }
                Err(error) => {
                    tracing::error!(%error, "a CDR export stopped");
                    Some((Err(std::io::Error::other(error.to_string())), None))
                }
            }
        }
    });
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(header)) }).chain(pages);
    (
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8"),
            (axum::http::header::CONTENT_DISPOSITION, "attachment; filename=\"cdrs.csv\""),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

#[derive(Serialize, ToSchema)]
pub struct CdrShowOut {
    #[schema(example = "ok")]
    status: &'static str,
    cdr: CdrOut,
    #[schema(example = json!({"account": "/api/v1/accounts/C-1001", "self": "/api/v1/accounts/C-1001/cdrs/sw1-000123"}))]
    links: BTreeMap<&'static str, String>,
}

/// One CDR of an account, with its costs and the event that charged it.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{number}/cdrs/{id}",
    operation_id = "show_cdr",
    tag = "cdrs",
    params(
        ("number" = String, Path, description = "The account number", example = "C-1001"),
        ("id" = String, Path, description = "The CDR id", example = "sw1-000123"),
        crate::openapi::MinPosition
    ),
    responses((status = 200, description = "The CDR", body = CdrShowOut), ReadErrors)
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path((number, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<CdrShowOut>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ShowQuery {
        #[serde(default, deserialize_with = "query::optional_u64")]
        min_position: Option<u64>,
    }
    let query: ShowQuery = query::parse(raw.as_deref())?;
    let account = visible_account(&state.ledger, &caller, "number", &number)?;
    if let Some(position) = query.min_position {
        crate::service::accounts::wait_for_position(&state.ledger, &state.models, position).await?;
    }
    let not_found = || ApiError::not_found("cdr_not_found", format!("CDR `{id}` not found")).with_field("id");
    // From the read models' index of CDR ids. Ids are unique per book, and the book holds
    // the CDRs of all its customers: only this account's (or, for a partner, those it paid
    // wholesale) answer here.
    let row = state
        .models
        .cdrs_by_id(&id)
        .await?
        .into_iter()
        .find(|row| row.account == account.id || row.partner == Some(account.id))
        .ok_or_else(not_found)?;
    let links =
        [("account", format!("/api/v1/accounts/{number}")), ("self", format!("/api/v1/accounts/{number}/cdrs/{id}"))]
            .into_iter()
            .collect();
    Ok(Json(CdrShowOut { status: "ok", cdr: render(&state, &caller, row), links }))
}

#[derive(Serialize, ToSchema)]
pub struct CdrByIdOut {
    #[schema(example = "ok")]
    status: &'static str,
    cdr: CdrOut,
    #[schema(example = json!({"account": "/api/v1/accounts/C-1001", "self": "/api/v1/cdrs/sw1-000123"}))]
    links: BTreeMap<&'static str, String>,
}

/// A CDR by the switch's id alone, among those the caller may see: the operator all, a
/// partner its book's, a customer its own. Ids are unique within a book; when the
/// operator holds the same id in two books the answer is 409 `cdr_id_ambiguous`, naming
/// the accounts (read it under `/api/v1/accounts/{number}/cdrs/{id}`).
#[utoipa::path(
    get,
    path = "/api/v1/cdrs/{id}",
    operation_id = "show_cdr_by_id",
    tag = "cdrs",
    params(("id" = String, Path, description = "The CDR id the switch gave", example = "sw1-000123"), crate::openapi::MinPosition),
    responses(
        (status = 200, description = "The CDR", body = CdrByIdOut),
        (status = 409, description = "The id names CDRs in more than one book", body = crate::error::ErrorBody),
        ReadErrors
    )
)]
pub async fn show_by_id(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<CdrByIdOut>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ShowQuery {
        #[serde(default, deserialize_with = "query::optional_u64")]
        min_position: Option<u64>,
    }
    let query: ShowQuery = query::parse(raw.as_deref())?;
    if let Some(position) = query.min_position {
        crate::service::accounts::wait_for_position(&state.ledger, &state.models, position).await?;
    }
    // Another tenant's CDR is as absent as one never posted.
    let mut rows: Vec<(CdrRow, AccountRef)> = state
        .models
        .cdrs_by_id(&id)
        .await?
        .into_iter()
        .filter_map(|row| state.ledger.account_by_id(row.account).filter(|a| caller.sees(a)).map(|a| (row, a)))
        .collect();
    if rows.len() > 1 {
        let numbers: Vec<String> = rows.iter().map(|(_, account)| format!("`{}`", account.number)).collect();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "cdr_id_ambiguous",
            format!(
                "CDR `{id}` was charged to accounts {} (ids are unique per book): read it under \
                 /api/v1/accounts/{{number}}/cdrs/{{id}}",
                numbers.join(", ")
            ),
        )
        .with_field("id"));
    }
    let (row, account) = rows
        .pop()
        .ok_or_else(|| ApiError::not_found("cdr_not_found", format!("CDR `{id}` not found")).with_field("id"))?;
    let links = [("account", format!("/api/v1/accounts/{}", account.number)), ("self", format!("/api/v1/cdrs/{id}"))]
        .into_iter()
        .collect();
    Ok(Json(CdrByIdOut { status: "ok", cdr: render(&state, &caller, row), links }))
}

#[derive(Serialize, ToSchema)]
pub struct Q850Out {
    code: u16,
    /// tollbook's name, as CDRs show it in `hangup_cause_name`.
    #[schema(example = "normal_clearing")]
    name: &'static str,
    description: &'static str,
    /// FreeSWITCH's name for the cause, where it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    freeswitch: Option<&'static str>,
}

#[derive(Serialize, ToSchema)]
pub struct SwitchCauseOut {
    #[schema(example = "ORIGINATOR_CANCEL")]
    name: &'static str,
    /// Its number in FreeSWITCH's `switch_call_cause_t`.
    number: u16,
    /// The Q.850 code it is read as.
    q850: u16,
}

#[derive(Serialize, ToSchema)]
pub struct DispositionOut {
    #[schema(example = "NO ANSWER")]
    name: &'static str,
    q850: u16,
}

#[derive(Serialize, ToSchema)]
pub struct SipMappingOut {
    status: u16,
    q850: u16,
}

#[derive(Serialize, ToSchema)]
pub struct HangupCausesOut {
    #[schema(example = "ok")]
    status: &'static str,
    /// Every code from 0 to 127.
    q850: Vec<Q850Out>,
    /// FreeSWITCH's names that are not Q.850 numbers (its names for Q.850 causes are
    /// under `q850`).
    freeswitch: Vec<SwitchCauseOut>,
    /// Asterisk's CDR dispositions.
    asterisk: Vec<DispositionOut>,
    /// SIP final responses with a mapping of their own (RFC 3398); any other 2xx reads as
    /// 16, any other status from 300 to 699 as 31.
    sip: Vec<SipMappingOut>,
    /// The flags a CDR's cause may carry.
    #[schema(example = json!(["missing", "unrecognised"]))]
    flags: Vec<&'static str>,
}

/// Every hang-up cause tollbook reads, and the Q.850 code each reads as. A CDR's
/// `hangup_cause` may be any of them (a Q.850 number, any name in any case, `sip:486`); a
/// cause in none of them is kept as written, read as 0 and flagged `unrecognised`, and
/// the call is billed all the same.
#[utoipa::path(
    get,
    path = "/api/v1/hangup-causes",
    operation_id = "list_hangup_causes",
    tag = "cdrs",
    responses((status = 200, description = "The tables", body = HangupCausesOut), crate::openapi::AuthenticatedErrors)
)]
pub async fn hangup_causes(_caller: Caller) -> Json<HangupCausesOut> {
    use domain::hangup::{ASTERISK_DISPOSITIONS, CauseFlag, FREESWITCH_EXTRA, Q850, SIP_MAPPINGS};
    Json(HangupCausesOut {
        status: "ok",
        q850: Q850
            .iter()
            .map(|c| Q850Out { code: c.code, name: c.name, description: c.description, freeswitch: c.freeswitch })
            .collect(),
        freeswitch: FREESWITCH_EXTRA
            .iter()
            .map(|c| SwitchCauseOut { name: c.name, number: c.number, q850: c.q850 })
            .collect(),
        asterisk: ASTERISK_DISPOSITIONS.iter().map(|d| DispositionOut { name: d.name, q850: d.q850 }).collect(),
        sip: SIP_MAPPINGS.iter().map(|m| SipMappingOut { status: m.status, q850: m.q850 }).collect(),
        flags: [CauseFlag::Missing, CauseFlag::Unrecognised].iter().map(CauseFlag::as_str).collect(),
    })
}

/// An empty CSV body is most often a file that was not there: `curl --data-binary
/// @missing.csv` warns on stderr and sends nothing. Said as such, rather than "column `id`
/// is required".
pub fn refuse_empty_csv(bytes: &[u8]) -> Result<(), ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "invalid_body",
            "body",
            "the CSV body is empty (with curl, check that the file after `@` exists: curl sends an empty body when it \
             does not)",
        ));
    }
    Ok(())
}

/// The media type of a request, lower-cased, without its parameters.
pub(super) fn essence(request: &Request) -> String {
    let content_type = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// A CDR file sent as the body (`text/csv`, and `text/plain` when `plain_text` is
/// accepted) or as a multipart file part; an empty body is refused as empty.
pub(super) async fn read_file_body(request: Request, state: &AppState, plain_text: bool) -> Result<Bytes, ApiError> {
    crate::body::refuse_declared_over(&request, CDR_UPLOAD_BYTES_MAX)?;
    match essence(&request).as_str() {
        kind if kind == CSV || (plain_text && kind == TEXT) => {
            let bytes = read_bytes(request, state).await?;
            refuse_empty_csv(&bytes)?;
            Ok(bytes)
        }
        MULTIPART => {
            let mut multipart = Multipart::from_request(request, state)
                .await
                .map_err(|rejection| ApiError::undeserializable("invalid_body", None, rejection.body_text()))?;
            while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
                if field.file_name().is_some() || field.name() == Some("file") {
                    return field.bytes().await.map_err(multipart_error);
                }
            }
            Err(ApiError::bad_request("invalid_body", "file", "file: a file part is required"))
        }
        _ => Err(ApiError::unsupported_media_type("send the CDR file as text/csv or as a multipart file part")),
    }
}
