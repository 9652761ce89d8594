//! Switches: the identifiers that tie a switch's CDRs to accounts (account codes, caller
//! ids, trunks), and CDRs posted in the switches' own formats — FreeSWITCH's
//! `mod_json_cdr` document, Asterisk's `Master.csv`, Kamailio's dialog CDRs — read by
//! `domain::switch_cdr` and charged through the same path as `POST /api/v1/cdrs`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use domain::cdr::CdrInput;
use domain::local_time::LocalZone;
use domain::switch::{IdentifierKind, SwitchIdentifier};
use domain::switch_cdr::{NativeCdr, SwitchFormat, SwitchTable, UtcOffset};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::cdrs::{CDR_UPLOAD_BYTES_MAX, Row, UploadOut, charge_rows, essence, multipart_error, read_bytes};
use crate::auth::Caller;
use crate::body::{Body, FORM, JSON, MULTIPART};
use crate::error::ApiError;
use crate::openapi::{AdminWriteErrors, IdempotencyKey, ReadErrors, UploadErrors, WriteErrors};
use crate::query;
use crate::state::AppState;
use crate::write::{SwitchWrite, Write, respond, visible_account};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_freeswitch))
        .routes(routes!(post_asterisk))
        .routes(routes!(post_kamailio))
        .routes(routes!(post_mapped))
        .layer(DefaultBodyLimit::max(CDR_UPLOAD_BYTES_MAX))
        .routes(routes!(show_identifiers, set_identifiers))
}

/// A list as JSON gives it, or as a form gives it: one text, separated by commas or lines.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<String>),
    One(String),
}

fn list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::Many(values) => values,
        OneOrMany::One(text) => {
            text.split([',', '\n']).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned).collect()
        }
    })
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentifiersRequest {
    /// The switch's account codes for this account (FreeSWITCH and Asterisk `accountcode`).
    /// A list, or in a form one text separated by commas.
    #[serde(default, deserialize_with = "list")]
    #[schema(example = json!(["1001"]))]
    account_codes: Vec<String>,
    /// Calling numbers (FreeSWITCH `caller_id_number`, Asterisk `src`, Kamailio `src_user`).
    #[serde(default, deserialize_with = "list")]
    #[schema(example = json!(["4940111"]))]
    caller_ids: Vec<String>,
    /// Trunks: a FreeSWITCH gateway, an Asterisk channel's peer, a Kamailio source address.
    #[serde(default, deserialize_with = "list")]
    #[schema(example = json!(["carrier1"]))]
    trunks: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct IdentifiersOut {
    #[schema(example = "ok")]
    status: &'static str,
    #[schema(example = "C-1001")]
    account: String,
    #[schema(example = json!(["1001"]))]
    account_codes: Vec<String>,
    #[schema(example = json!(["4940111"]))]
    caller_ids: Vec<String>,
    #[schema(example = json!(["carrier1"]))]
    trunks: Vec<String>,
    #[schema(example = json!({"account": "/api/v1/accounts/C-1001"}))]
    links: BTreeMap<&'static str, String>,
}

fn identifiers_path(number: &str) -> String {
    format!("/api/v1/accounts/{number}/switch-identifiers")
}

/// Set the identifiers the switches know a customer account by, replacing those it had.
/// A switch's CDR is charged to the account holding its account code, else its caller id,
/// else its trunk; an identifier belongs to one account (409 `switch_identifier_taken`).
/// The operator's to set. Recorded as a `SwitchIdentifiersSet` event.
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{number}/switch-identifiers",
    operation_id = "set_switch_identifiers",
    tag = "cdrs",
    params(("number" = String, Path, description = "The account number", example = "C-1001"), IdempotencyKey),
    request_body = IdentifiersRequest,
    responses((status = 200, description = "Set (or already so: no events)", body = crate::write::WriteBody), AdminWriteErrors, (status = 422, description = "Not a customer, or closed", body = crate::error::ErrorBody))
)]
pub async fn set_identifiers(
    State(state): State<AppState>,
    write: Write,
    Path(number): Path<String>,
    Body(request): Body<IdentifiersRequest>,
) -> Result<Response, ApiError> {
    write.caller.require_admin()?;
    let account = visible_account(&state.ledger, &write.caller, "number", &number)?;
    let meta = write.meta(&request, None)?;
    let identifiers = [
        (IdentifierKind::AccountCode, &request.account_codes),
        (IdentifierKind::CallerId, &request.caller_ids),
        (IdentifierKind::Trunk, &request.trunks),
    ]
    .into_iter()
    .flat_map(|(kind, values)| values.iter().map(move |value| SwitchIdentifier::new(kind, value.clone())))
    .collect();
    let outcome = state.ledger.set_switch_identifiers(account.id, identifiers, meta).await?;
    let links = [("account", format!("/api/v1/accounts/{number}")), ("self", identifiers_path(&number))];
    Ok(respond(&state.ledger, StatusCode::OK, outcome, links.into_iter().collect()))
}

/// The identifiers the switches know an account by.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{number}/switch-identifiers",
    operation_id = "show_switch_identifiers",
    tag = "cdrs",
    params(("number" = String, Path, description = "The account number", example = "C-1001")),
    responses((status = 200, description = "The identifiers", body = IdentifiersOut), ReadErrors)
)]
pub async fn show_identifiers(
    State(state): State<AppState>,
    caller: Caller,
    Path(number): Path<String>,
) -> Result<Json<IdentifiersOut>, ApiError> {
    // The ledger's index, updated before a write answers: what was set reads back at once.
    let account = visible_account(&state.ledger, &caller, "number", &number)?;
    let held = state.ledger.switch_identifiers(account.id);
    let of = |kind: IdentifierKind| held.iter().filter(|i| i.kind == kind).map(|i| i.value.clone()).collect();
    Ok(Json(IdentifiersOut {
        status: "ok",
        account: number.clone(),
        account_codes: of(IdentifierKind::AccountCode),
        caller_ids: of(IdentifierKind::CallerId),
        trunks: of(IdentifierKind::Trunk),
        links: [("account", format!("/api/v1/accounts/{number}")), ("self", identifiers_path(&number))]
            .into_iter()
            .collect(),
    }))
}

/// A switch's CDR as a CDR of the account its identifiers name, among those the caller
/// may see: another tenant's account is as unknown as none.
fn native_input(state: &AppState, caller: &Caller, cdr: NativeCdr) -> Result<CdrInput, ApiError> {
    let unmatched = cdr.identifiers.unmatched();
    let account = state.ledger.identify(&cdr.identifiers).map_err(ApiError::from)?;
    if !caller.sees(&account) {
        return Err(ApiError::from(unmatched));
    }
    cdr.into_input(&account.number).map_err(ApiError::from)
}

/// mod_json_cdr's document as FreeSWITCH posts it; tollbook reads its `variables` (uuid,
/// the epochs, billsec, hangup_cause, caller_id_number, destination_number, accountcode)
/// and ignores the rest.
#[derive(ToSchema)]
#[allow(dead_code, reason = "documents the body; the handler reads the JSON document itself")]
pub struct FreeswitchJson {
    #[schema(example = json!({"uuid": "a1b2c3", "accountcode": "1001", "billsec": "60"}))]
    variables: std::collections::BTreeMap<String, String>,
}

/// A FreeSWITCH `mod_json_cdr` document: the JSON body, or a form's (or multipart's)
/// `cdr` field holding it.
#[derive(Serialize, Deserialize, ToSchema)]
#[allow(dead_code, reason = "documents the form; the document is read as JSON")]
pub struct FreeswitchForm {
    /// The mod_json_cdr document, as JSON text.
    #[schema(example = r#"{"variables":{"uuid":"a1b2c3d4-0000-4000-8000-000000000001","accountcode":"1001"}}"#)]
    cdr: String,
}

/// A FreeSWITCH `mod_json_cdr` document, as the switch posts it at the end of each call
/// (one call a request): read from its `variables` (uuid, start/answer/end epochs, billsec,
/// hangup_cause, caller_id_number, destination_number, accountcode, sip_gateway_name),
/// tied to an account by its identifiers, rated and charged. Answers like one CDR posted
/// to `POST /api/v1/cdrs`: 201 charged, 200 duplicate (FreeSWITCH retries a failed post:
/// a retry is never a second charge), or the refusal.
#[utoipa::path(
    post,
    path = "/api/v1/cdrs/freeswitch",
    operation_id = "post_freeswitch_cdr",
    tag = "cdrs",
    params(IdempotencyKey),
    request_body(content(
        (FreeswitchJson = "application/json"),
        (FreeswitchForm = "application/x-www-form-urlencoded"),
        (FreeswitchForm = "multipart/form-data")
    )),
    responses(
        (status = 200, description = "A duplicate", body = UploadOut),
        (status = 201, description = "Charged", body = UploadOut),
        WriteErrors
    )
)]
pub async fn post_freeswitch(
    State(state): State<AppState>,
    SwitchWrite(write): SwitchWrite,
    request: Request,
) -> Result<Response, ApiError> {
    crate::body::refuse_declared_over(&request, CDR_UPLOAD_BYTES_MAX)?;
    let essence = essence(&request);
    let text = match essence.as_str() {
        JSON => read_bytes(request, &state).await?,
        FORM => {
            let bytes = read_bytes(request, &state).await?;
            let pairs = crate::body::url_encoded_pairs(&bytes)
                .map_err(|e| ApiError::undeserializable("invalid_body", e.field, e.message))?;
            let cdr = pairs.into_iter().find(|(name, _)| name == "cdr").map(|(_, value)| value);
            cdr.ok_or_else(|| ApiError::bad_request("invalid_body", "cdr", "cdr: the mod_json_cdr document"))?.into()
        }
        MULTIPART => {
            let mut multipart = Multipart::from_request(request, &state)
                .await
                .map_err(|rejection| ApiError::undeserializable("invalid_body", None, rejection.body_text()))?;
            let mut found = None;
            while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
                if field.name() == Some("cdr") {
                    found = Some(field.bytes().await.map_err(multipart_error)?);
                    break;
                }
            }
            found.ok_or_else(|| ApiError::bad_request("invalid_body", "cdr", "cdr: the mod_json_cdr document"))?
        }
        "" => return Err(ApiError::unsupported_media_type("a Content-Type is required")),
        _ => return Err(ApiError::unsupported_media_type("send the mod_json_cdr document as application/json")),
    };
    let document: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| ApiError::undeserializable("invalid_body", None, format!("not a JSON document: {e}")))?;
    let id = document["variables"]["uuid"].as_str().map(str::to_owned);
    let parsed = domain::switch_cdr::freeswitch_json(&document)
        .map_err(ApiError::from)
        .and_then(|cdr| native_input(&state, &write.caller, cdr));
    charge_rows(&state, &write, vec![Row::new(0, None, id, parsed)], true).await
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FileQuery {
    /// The switch's offset from UTC, for times written without a zone (Asterisk's unless
    /// `usegmtime=yes`, Kamailio's formatted times): `+01:00`, `-05:00`. Not with
    /// `time_zone`; UTC when neither is given.
    #[param(example = "+01:00")]
    utc_offset: Option<String>,
    /// Where times written without a zone are: an IANA time zone (`Europe/Berlin`, read
    /// with the offset in force at each time; a time its clocks skipped rejects its row,
    /// naming the column; a time they showed twice is the earlier instant unless that is
    /// before the call's start or answer) or an offset. Not with `utc_offset`.
    #[param(example = "Europe/Berlin")]
    time_zone: Option<String>,
}

/// Reads every record of a switch's file, opened by `open` from the body's bytes, and
/// charges them as one batch.
async fn charge_file(
    state: &AppState,
    write: &Write,
    request: Request,
    open: impl FnOnce(&[u8]) -> Result<SwitchTable<&[u8]>, domain::DomainError>,
) -> Result<Response, ApiError> {
    let bytes = super::cdrs::read_file_body(request, state, true).await?;
    let mut table = open(&bytes[..]).map_err(|e| ApiError { code: "invalid_body", ..ApiError::from(e) })?;
    let mut rows = Vec::new();
    while let Some((line, id, parsed)) = table.next_cdr() {
        let parsed = parsed.map_err(ApiError::from).and_then(|cdr| native_input(state, &write.caller, cdr));
        rows.push(Row::new(rows.len(), Some(line), id, parsed));
    }
    charge_rows(state, write, rows, false).await
}

/// Asterisk's `Master.csv` rows (cdr_csv: accountcode, src, dst, dcontext, clid, channel,
/// dstchannel, lastapp, lastdata, start, answer, end, duration, billsec, disposition,
/// amaflags, then uniqueid and userfield when logged), no header. Each row is tied to an
/// account by its `accountcode`, `src` or the peer of its `channel`, and answers like a
/// row of a CSV posted to `POST /api/v1/cdrs`.
#[utoipa::path(
    post,
    path = "/api/v1/cdrs/asterisk",
    operation_id = "post_asterisk_cdrs",
    tag = "cdrs",
    params(FileQuery),
    request_body(content((String = "text/csv"), (String = "multipart/form-data"))),
    responses((status = 200, description = "A result per row", body = UploadOut), UploadErrors, (status = 403, description = "A customer", body = crate::error::ErrorBody))
)]
pub async fn post_asterisk(
    State(state): State<AppState>,
    SwitchWrite(write): SwitchWrite,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Result<Response, ApiError> {
    let query: FileQuery = query::parse(raw.as_deref())?;
    let zone = upload_zone(query.utc_offset.as_deref(), query.time_zone.as_deref())?.unwrap_or_default();
    charge_file(&state, &write, request, |bytes| SwitchTable::open(bytes, SwitchFormat::AsteriskCsv, zone)).await
}

/// Kamailio's dialog CDRs (`acc` with `cdr_enable`): the db_text table (`acc_cdrs`, its
/// header of typed columns first) or a CSV with a header of the same columns. Reads
/// `start_time`, `end_time`, `duration` and the `cdr_extra` columns `callid`, `src_user`,
/// `dst_user`, `src_ip`, `accountcode`, `sip_code` (see docs/kamailio.md).
#[utoipa::path(
    post,
    path = "/api/v1/cdrs/kamailio",
    operation_id = "post_kamailio_cdrs",
    tag = "cdrs",
    params(FileQuery),
    request_body(content((String = "text/csv"), (String = "multipart/form-data"))),
    responses((status = 200, description = "A result per row", body = UploadOut), UploadErrors, (status = 403, description = "A customer", body = crate::error::ErrorBody))
)]
pub async fn post_kamailio(
    State(state): State<AppState>,
    SwitchWrite(write): SwitchWrite,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Result<Response, ApiError> {
    let query: FileQuery = query::parse(raw.as_deref())?;
    let zone = upload_zone(query.utc_offset.as_deref(), query.time_zone.as_deref())?.unwrap_or_default();
    charge_file(&state, &write, request, |bytes| SwitchTable::open(bytes, kamailio_format(bytes), zone)).await
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct MappedQuery {
    /// The column mapping's name (`GET /api/v1/cdr-mappings`): the book's own, else a
    /// ready-made one such as `asterisk-cdr-custom`.
    #[param(example = "carrier-x")]
    mapping: String,
    /// The operator only: the partner (account number) whose mapping it is.
    #[param(example = "P-1")]
    partner: Option<String>,
    /// Replaces the mapping's time zone for this file: the switch's offset from UTC for
    /// times written without one (`+01:00`).
    #[param(example = "+01:00")]
    utc_offset: Option<String>,
    /// Replaces the mapping's time zone for this file: an IANA time zone (`Europe/Berlin`,
    /// the offset in force at each time) or an offset. Not with `utc_offset`.
    #[param(example = "Europe/Berlin")]
    time_zone: Option<String>,
}

/// The zone an upload's times are in, from `utc_offset` or `time_zone`: for a mapped file
/// in place of its mapping's, for a switch's own format in place of UTC.
fn upload_zone(utc_offset: Option<&str>, time_zone: Option<&str>) -> Result<Option<LocalZone>, ApiError> {
    let invalid_query = |e: domain::DomainError| ApiError { code: "invalid_query", ..ApiError::from(e) };
    match (utc_offset, time_zone) {
        (Some(_), Some(_)) => {
            Err(ApiError::bad_request("invalid_query", "time_zone", "give `time_zone` or `utc_offset`, not both"))
        }
        (Some(offset), None) => Ok(Some(UtcOffset::parse(offset).map_err(invalid_query)?.into())),
        (None, Some(zone)) => LocalZone::parse("time_zone", zone).map(Some).map_err(invalid_query),
        (None, None) => Ok(None),
    }
}

/// A CSV file of any switch, read through a saved column mapping (`mapping`): each row
/// tied to an account by its account code, caller or trunk, and answered like a row of a
/// CSV posted to `POST /api/v1/cdrs`. A row that does not read (a time not in the
/// mapping's format, a missing id) is rejected alone, with its line, its id and the value;
/// a file whose header lacks a column the mapping names is refused whole (400).
#[utoipa::path(
    post,
    path = "/api/v1/cdrs/mapped",
    operation_id = "post_mapped_cdrs",
    tag = "cdrs",
    params(MappedQuery),
    request_body(content((String = "text/csv"), (String = "multipart/form-data"))),
    responses((status = 200, description = "A result per row", body = UploadOut), UploadErrors, (status = 403, description = "A customer", body = crate::error::ErrorBody))
)]
pub async fn post_mapped(
    State(state): State<AppState>,
    SwitchWrite(write): SwitchWrite,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Result<Response, ApiError> {
    let query: MappedQuery = query::parse(raw.as_deref())?;
    let zone = upload_zone(query.utc_offset.as_deref(), query.time_zone.as_deref())?;
    let mapping =
        super::cdr_mappings::resolve_mapping(&state, &write.caller, &query.mapping, query.partner.as_deref())?;
    charge_file(&state, &write, request, |bytes| SwitchTable::open_mapped(bytes, mapping, zone)).await
}

/// db_text's header types its columns (`id(int,auto) start_time(int) ...`); a CSV's
/// does not.
pub fn kamailio_format(bytes: &[u8]) -> SwitchFormat {
    let first_line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let first_column = String::from_utf8_lossy(first_line).split_whitespace().next().unwrap_or_default().to_owned();
    if first_column.contains('(') && first_column.ends_with(')') {
        SwitchFormat::KamailioDbText
    } else {
        SwitchFormat::KamailioCsv
    }
}
