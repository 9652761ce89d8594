//! Query strings, parsed into a struct with the API's error format (axum's `Query`
//! rejection would answer in plain text).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::error::ApiError;

pub fn parse<T: DeserializeOwned>(raw: Option<&str>) -> Result<T, ApiError> {
    // Strictly, as form bodies: a parameter that is not UTF-8 is refused, not read as U+FFFD.
    let pairs = crate::body::url_encoded_pairs(raw.unwrap_or("").as_bytes())
        .map_err(|e| ApiError::undeserializable("invalid_query", e.field, e.message))?;
    // Through a map of strings, as form bodies go: a repeated parameter is refused, not
    // silently resolved one way or the other.
    let mut object = serde_json::Map::new();
    for (name, value) in pairs {
        if object.insert(name.clone(), serde_json::Value::String(value)).is_some() {
            return Err(ApiError::bad_request("invalid_query", name, "the parameter is given more than once"));
        }
    }
    serde_path_to_error::deserialize(serde_json::Value::Object(object)).map_err(|error| {
        ApiError::undeserializable("invalid_query", Some(error.path().to_string()), error.inner().to_string())
    })
}

/// An optional whole number in a query string.
pub fn optional_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    text.map(|t| t.trim().parse().map_err(|_| serde::de::Error::custom(format!("`{t}` is not a whole number"))))
        .transpose()
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Filter {
        destination: Option<String>,
    }

    #[test]
    fn parameters_that_are_not_utf8_are_refused() {
        for raw in ["destination=49%FF", "destination=%C0%AF"] {
            let error = parse::<Filter>(Some(raw)).unwrap_err();
            assert_eq!(
                (error.status, error.code, error.field.as_deref()),
                (StatusCode::BAD_REQUEST, "invalid_query", Some("destination")),
                "{raw}"
            );
        }
        let filter: Filter = parse(Some("destination=%2B49+30")).unwrap();
        assert_eq!(filter.destination.as_deref(), Some("+49 30"));
        let error = parse::<Filter>(Some("destination=1&destination=2")).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("destination"));
    }
}
