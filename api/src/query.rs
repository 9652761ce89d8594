//! Query strings, parsed into a struct with the API's error format (axum's `Query`
//! rejection would answer in plain text).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::error::ApiError;

pub fn parse<T: DeserializeOwned>(raw: Option<&str>) -> Result<T, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::undeserializable("invalid_query", None, e.to_string()))?;
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
