//! Request bodies: JSON, URL-encoded forms and multipart forms all become the same request
//! struct, so that every write endpoint accepts what the design promises without each
//! handler caring which one arrived.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::CONTENT_TYPE;
use serde::Deserializer;
use serde::de::DeserializeOwned;
use serde::de::{self, MapAccess, Visitor};

use crate::error::ApiError;

/// Largest request body accepted (413 above it), applied with `DefaultBodyLimit`.
pub const BODY_BYTES_MAX: usize = 1024 * 1024;

pub const JSON: &str = "application/json";
pub const FORM: &str = "application/x-www-form-urlencoded";
pub const MULTIPART: &str = "multipart/form-data";

/// A request body of any accepted content type, deserialized into `T`.
pub struct Body<T>(pub T);

enum Kind {
    Json,
    Form,
    Multipart,
}

fn kind_of(request: &Request) -> Result<Kind, ApiError> {
    let content_type = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        JSON => Ok(Kind::Json),
        FORM => Ok(Kind::Form),
        MULTIPART => Ok(Kind::Multipart),
        "" => Err(ApiError::unsupported_media_type(
            "a Content-Type is required: application/json, application/x-www-form-urlencoded or multipart/form-data",
        )),
        _ => Err(ApiError::unsupported_media_type(format!(
            "`{}` is not accepted: use application/json, application/x-www-form-urlencoded or multipart/form-data",
            essence.chars().take(64).collect::<String>()
        ))),
    }
}

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        refuse_declared_over(&request, BODY_BYTES_MAX)?;
        match kind_of(&request)? {
            Kind::Json => {
                let bytes = read_bytes(request, state).await?;
                let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
                let value = serde_path_to_error::deserialize(&mut deserializer).map_err(invalid_body)?;
                deserializer.end().map_err(|e| invalid_body_message(None, e.to_string()))?;
                Ok(Body(value))
            }
            Kind::Form => {
                let bytes = read_bytes(request, state).await?;
                let pairs = url_encoded_pairs(&bytes).map_err(|e| invalid_body_message(e.field, e.message))?;
                from_fields(pairs)
            }
            Kind::Multipart => {
                let mut multipart = Multipart::from_request(request, state)
                    .await
                    .map_err(|rejection| invalid_body_message(None, rejection.body_text()))?;
                let mut pairs = Vec::new();
                loop {
                    let field = match multipart.next_field().await {
                        Ok(Some(field)) => field,
                        Ok(None) => break,
                        Err(error) => return Err(multipart_error(error)),
                    };
                    let Some(name) = field.name().map(str::to_owned) else {
                        return Err(invalid_body_message(None, "a multipart part has no name".into()));
                    };
                    if field.file_name().is_some() {
                        return Err(invalid_body_message(Some(name), "file parts are not accepted here".into()));
                    }
                    // multer's `text()` would replace bytes that are not UTF-8 with U+FFFD.
                    let bytes = field.bytes().await.map_err(multipart_error)?;
                    let text =
                        utf8_field(&name, bytes.to_vec()).map_err(|e| invalid_body_message(e.field, e.message))?;
                    pairs.push((name, text));
                }
                from_fields(pairs)
            }
        }
    }
}

/// A declared body this many times over its limit is refused before any of it is read.
/// Below that it is read up to the limit and refused then, as `DefaultBodyLimit` does: an
/// ordinary client writes its whole body before it reads the answer, and a connection
/// closed under a body barely over the limit would hand it a broken pipe, not the 413.
pub const BODY_DECLARED_OVER_LIMIT_FACTOR_MAX: u64 = 2;

/// 413 at once for a body whose declared `Content-Length` is far over `limit`, before any
/// of it is read: the client need not send it, and a connection is not held while it
/// does. (`DefaultBodyLimit` alone counts the bytes as they arrive.)
pub fn refuse_declared_over(request: &Request, limit: usize) -> Result<(), ApiError> {
    let declared = request.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    let early_refusal_bytes_min = (limit as u64).saturating_mul(BODY_DECLARED_OVER_LIMIT_FACTOR_MAX);
    match declared.and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(length) if length > early_refusal_bytes_min => Err(ApiError::payload_too_large(limit)),
        _ => Ok(()),
    }
}

/// 408 when a body could not be read because it did not arrive in time (see
/// `crate::server::DeadlineBody`); the connection is closed after the answer.
pub fn body_timed_out(error: &(dyn std::error::Error + 'static)) -> Option<ApiError> {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(timed_out) = error.downcast_ref::<BodyTimedOut>() {
            return Some(ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                timed_out.to_string(),
            ));
        }
        source = error.source();
    }
    None
}

async fn read_bytes<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state).await.map_err(|rejection| {
        if let Some(timed_out) = body_timed_out(&rejection) {
            timed_out
        } else if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(BODY_BYTES_MAX)
        } else {
            invalid_body_message(None, rejection.body_text())
        }
    })
}

fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
    if let Some(timed_out) = body_timed_out(&error) {
        timed_out
    } else if error.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::payload_too_large(BODY_BYTES_MAX)
    } else {
        invalid_body_message(None, error.body_text())
    }
}

/// A form field or query parameter whose text could not be decoded.
#[derive(Debug)]
pub struct UndecodableText {
    /// The field's name, when the name itself could be decoded.
    pub field: Option<String>,
    pub message: String,
}

/// The name-value pairs of a URL-encoded form body or query string, decoded strictly:
/// `+` is a space, `%XX` is a byte, and every name and value must then be UTF-8. A
/// lossy decoding (serde_urlencoded's) would turn `%FF` and `%FE` alike into U+FFFD,
/// record a replacement character the client never sent, and make two different
/// requests look the same to the idempotency check.
pub fn url_encoded_pairs(bytes: &[u8]) -> Result<Vec<(String, String)>, UndecodableText> {
    let mut pairs = Vec::new();
    for segment in bytes.split(|b| *b == b'&').filter(|s| !s.is_empty()) {
        let (name, value) = match segment.iter().position(|b| *b == b'=') {
            Some(at) => (&segment[..at], &segment[at + 1..]),
            None => (segment, &segment[segment.len()..]),
        };
        let name = String::from_utf8(percent_decode(name)).map_err(|_| UndecodableText {
            field: None,
            message: "a field name is not UTF-8 once percent-decoded".into(),
        })?;
        let value = utf8_field(&name, percent_decode(value))?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

fn percent_decode(text: &[u8]) -> Vec<u8> {
    let spaced: Vec<u8> = text.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
    percent_encoding::percent_decode(&spaced).collect()
}

/// A field's bytes as text, refused (naming the field) when they are not UTF-8.
pub fn utf8_field(name: &str, bytes: Vec<u8>) -> Result<String, UndecodableText> {
    String::from_utf8(bytes).map_err(|error| UndecodableText {
        field: Some(name.to_owned()),
        message: format!(
            "{name}: not UTF-8 (invalid byte at offset {}); send text as UTF-8",
            error.utf8_error().valid_up_to()
        ),
    })
}

/// Form fields are all text: they become a JSON object of strings, and the request
/// structs accept numbers as strings (amounts do; see [`u64_from_text`] for the rest).
fn from_fields<T: DeserializeOwned>(pairs: Vec<(String, String)>) -> Result<Body<T>, ApiError> {
    let mut fields = BTreeMap::new();
    for (name, value) in pairs {
        // HTML forms send every input, filled or not: an empty optional field means "absent".
        if value.is_empty() {
            continue;
        }
        if fields.insert(name.clone(), serde_json::Value::String(value)).is_some() {
            return Err(invalid_body_message(Some(name), "the field is given more than once".into()));
        }
    }
    let object = serde_json::Value::Object(fields.into_iter().collect());
    serde_path_to_error::deserialize(object).map(Body).map_err(invalid_body)
}

fn invalid_body<E: std::fmt::Display>(error: serde_path_to_error::Error<E>) -> ApiError {
    ApiError::undeserializable("invalid_body", Some(error.path().to_string()), error.inner().to_string())
}

fn invalid_body_message(field: Option<String>, message: String) -> ApiError {
    ApiError::undeserializable("invalid_body", field, message)
}

/// A whole number given as a JSON number or as text (forms have only text).
pub fn u64_from_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserializer.deserialize_any(WholeNumber)
}

/// An optional whole number that fits a `u32`, as a JSON number or as text; use with
/// `#[serde(default)]`.
pub fn optional_u32_from_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let value = u64_from_text(deserializer)?;
    u32::try_from(value).map(Some).map_err(|_| de::Error::custom(format!("{value} is too large")))
}

struct WholeNumber;

/// serde_json with `arbitrary_precision` hands numbers over as a one-entry map under this
/// key, holding the number's text; `#[serde(untagged)]` cannot see through it.
const JSON_NUMBER_TOKEN: &str = "$serde_json::private::Number";

impl<'de> Visitor<'de> for WholeNumber {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("{v} is not a whole number")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        v.trim()
            .parse()
            .map_err(|_| E::custom(format!("`{}` is not a whole number", v.chars().take(32).collect::<String>())))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        match map.next_key::<String>()? {
            Some(key) if key == JSON_NUMBER_TOKEN => {
                let text: String = map.next_value()?;
                self.visit_str(&text)
            }
            _ => Err(de::Error::custom("expected a whole number")),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use domain::Amount;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        account: String,
        amount: Amount,
        #[serde(default, deserialize_with = "optional_whole")]
        position: Option<u64>,
    }

    fn optional_whole<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        u64_from_text(d).map(Some)
    }

    async fn extract(content_type: &str, body: &str) -> Result<Sample, ApiError> {
        extract_bytes(content_type, body.as_bytes()).await
    }

    async fn extract_bytes(content_type: &str, body: &[u8]) -> Result<Sample, ApiError> {
        let request = Request::builder()
            .method("POST")
            .header(CONTENT_TYPE, content_type)
            .body(axum::body::Body::from(body.to_vec()))
            .unwrap();
        Body::<Sample>::from_request(request, &()).await.map(|Body(sample)| sample)
    }

    fn refused_field(result: Result<Sample, ApiError>) -> (StatusCode, &'static str, Option<String>) {
        let error = result.expect_err("text that is not UTF-8 must be refused");
        (error.status, error.code, error.field.map(|f| f.into_owned()))
    }

    /// Bytes that are not UTF-8 are refused in every body format, naming the field,
    /// never decoded lossily to U+FFFD.
    #[tokio::test]
    async fn text_that_is_not_utf8_is_refused_in_every_format() {
        let bad = (StatusCode::BAD_REQUEST, "invalid_body", Some("account".to_owned()));
        let form = extract("application/x-www-form-urlencoded", "account=C%FF&amount=1").await;
        assert_eq!(refused_field(form), bad);
        // A raw byte, not percent-encoded, is no better.
        let form = extract_bytes("application/x-www-form-urlencoded", b"account=C\xfe&amount=1").await;
        assert_eq!(refused_field(form), bad);
        // An overlong encoding of `/` and a lone surrogate's encoding are not UTF-8 either.
        for escaped in ["%C0%AF", "%ED%A0%80"] {
            let form = extract("application/x-www-form-urlencoded", &format!("account={escaped}&amount=1")).await;
            assert_eq!(refused_field(form), bad, "{escaped}");
        }
        let form = extract("application/x-www-form-urlencoded", "acc%FFount=C1&amount=1").await;
        assert_eq!(refused_field(form), (StatusCode::BAD_REQUEST, "invalid_body", None));

        let mut multipart = b"--XX\r\nContent-Disposition: form-data; name=\"account\"\r\n\r\nC\xff1\r\n".to_vec();
        multipart.extend_from_slice(b"--XX\r\nContent-Disposition: form-data; name=\"amount\"\r\n\r\n1\r\n--XX--\r\n");
        let parts = extract_bytes("multipart/form-data; boundary=XX", &multipart).await;
        assert_eq!(refused_field(parts), bad);

        let json = extract_bytes("application/json", b"{\"account\":\"C\xff1\",\"amount\":1}").await;
        assert_eq!(refused_field(json).1, "invalid_body");
        let json = extract("application/json", r#"{"account":"C\ud800","amount":1}"#).await;
        assert_eq!(refused_field(json).1, "invalid_body", "a lone surrogate escape is not text");

        // Valid multi-byte text still goes through, percent-encoded or not.
        let sample = extract("application/x-www-form-urlencoded", "account=K%C3%B6ln+1&amount=1").await.unwrap();
        assert_eq!(sample.account, "Köln 1");
    }

    fn expected() -> Sample {
        Sample { account: "C1".into(), amount: "10.10".parse().unwrap(), position: Some(7) }
    }

    #[tokio::test]
    async fn json_form_and_multipart_give_the_same_struct() {
        let json = extract("application/json; charset=utf-8", r#"{"account":"C1","amount":10.10,"position":7}"#);
        assert_eq!(json.await.unwrap(), expected());
        let form = extract("application/x-www-form-urlencoded", "account=C1&amount=10.10&position=7&");
        assert_eq!(form.await.unwrap(), expected());
        let multipart = "--XX\r\nContent-Disposition: form-data; name=\"account\"\r\n\r\nC1\r\n\
             --XX\r\nContent-Disposition: form-data; name=\"amount\"\r\n\r\n10.10\r\n\
             --XX\r\nContent-Disposition: form-data; name=\"position\"\r\n\r\n7\r\n--XX--\r\n";
        let sample = extract("multipart/form-data; boundary=XX", multipart).await.unwrap();
        assert_eq!(sample, expected());
        assert_eq!(sample.amount.to_string(), "10.10", "no float on the way");
    }

    #[tokio::test]
    async fn errors_name_the_field() {
        let error = extract("application/json", r#"{"account":"C1","amount":"ten"}"#).await.unwrap_err();
        assert_eq!(
            (error.status, error.code, error.field.as_deref()),
            (StatusCode::BAD_REQUEST, "invalid_body", Some("amount"))
        );
        let error = extract("application/x-www-form-urlencoded", "amount=1").await.unwrap_err();
        assert_eq!(error.field.as_deref(), Some("account"));
        let error = extract("application/x-www-form-urlencoded", "account=C1&amount=1&account=C2").await.unwrap_err();
        assert_eq!(error.field.as_deref(), Some("account"));
        let error = extract("application/x-www-form-urlencoded", "account=C1&amount=1&position=x").await.unwrap_err();
        assert_eq!(error.field.as_deref(), Some("position"));
        let error = extract("application/json", r#"{"account":"C1","amount":1} trailing"#).await.unwrap_err();
        assert_eq!(error.code, "invalid_body");
    }

    #[tokio::test]
    async fn other_content_types_are_unsupported() {
        for content_type in ["text/plain", "application/xml", ""] {
            let error = extract(content_type, "account=C1").await.unwrap_err();
            assert_eq!(error.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type}");
            assert_eq!(error.code, "unsupported_media_type");
        }
    }
}

/// The error a request body gives when it did not arrive in time (the server's
/// `DeadlineBody`).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", .0.as_secs())]
pub struct BodyTimedOut(pub std::time::Duration);
