//! The OpenAPI document and the docs page, as the real binary serves them: 3.1, every
//! reference resolves, every route the index links to is documented with its errors, every
//! write in three encodings, and the docs page loads nothing from outside.

mod common;

use std::collections::BTreeSet;

use common::{ADMIN_KEY, Server, send};
use serde_json::Value;

fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => found.push(target),
                    _ => refs(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_complete_and_the_docs_page_works_offline() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let client = reqwest::Client::new();
    let (status, doc) = send(client.get(server.url("/api/v1/openapi.json"))).await;
    assert!(status.is_success());
    assert_eq!(doc["openapi"], "3.1.0");

    // Every reference points at a schema the document has.
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 50, "{}", found.len());
    for target in found {
        let name = target.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{target}"));
        assert!(doc["components"]["schemas"][name].is_object(), "unresolved {target}");
    }

    let paths = doc["paths"].as_object().unwrap();
    let mut operation_ids = BTreeSet::new();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}"));
            assert!(operation_ids.insert(id.to_owned()), "operationId {id} twice");
            assert!(operation["summary"].is_string(), "{method} {path} has no summary");
            let responses = operation["responses"].as_object().unwrap();
            // A WebSocket's success is the switch of protocols, 101.
            assert!(responses.keys().any(|s| s.starts_with('2') || s == "101"), "{method} {path}: no success answer");
            // Public operations say so with an empty requirement; the rest need a credential.
            let public =
                operation["security"].as_array().is_some_and(|s| s.iter().any(|r| r == &serde_json::json!({})));
            if !public {
                assert!(responses.contains_key("401"), "{method} {path} needs a credential but documents no 401");
            }
            if let Some(body) = operation.get("requestBody") {
                let content = body["content"].as_object().unwrap();
                // A file upload that is only a file (a reconciliation's CDR file) takes it
                // as CSV or as a multipart part; every other body comes in three encodings.
                let file_only = content.contains_key("text/csv") && !content.contains_key("application/json");
                let encodings: &[&str] = if file_only {
                    &["text/csv", "multipart/form-data"]
                } else {
                    &["application/json", "application/x-www-form-urlencoded", "multipart/form-data"]
                };
                for encoding in encodings {
                    assert!(content.contains_key(*encoding), "{method} {path}: no {encoding}");
                }
                for status in ["400", "413", "415"] {
                    assert!(responses.contains_key(status), "{method} {path}: no {status}");
                }
            }
            for (status, response) in responses {
                // Health answers 503 with its own body, for probes that read it.
                if (status.starts_with('4') || status.starts_with('5')) && !path.starts_with("/health") {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {status}");
                }
            }
        }
    }
    assert!(operations >= 29, "{operations}");
    for scheme in ["bearer", "x_auth_token", "token"] {
        assert!(doc["components"]["securitySchemes"][scheme].is_object(), "{scheme}");
    }

    // Every resource the index names is in the document.
    let (_, index) = send(client.get(server.url("/api/v1")).bearer_auth(ADMIN_KEY)).await;
    for (name, link) in index["links"].as_object().unwrap() {
        let path = link.as_str().unwrap().split("{?").next().unwrap();
        // The document does not describe itself, nor the page that shows it.
        if name == "docs" || name == "openapi" {
            continue;
        }
        assert!(paths.contains_key(path), "the index links {name} = {path}, which the document lacks");
    }

    // The docs page and its scripts come from this server only.
    let page = client.get(server.url("/api/v1/docs/")).send().await.unwrap().text().await.unwrap();
    let initializer =
        client.get(server.url("/api/v1/docs/swagger-initializer.js")).send().await.unwrap().text().await.unwrap();
    assert!(initializer.contains("/api/v1/openapi.json"), "{initializer}");
    for text in [&page, &initializer] {
        assert!(!text.contains("http://") && !text.contains("https://"), "the page reaches outside: {text}");
    }
    for asset in ["swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js"] {
        let response = client.get(server.url(&format!("/api/v1/docs/{asset}"))).send().await.unwrap();
        assert!(response.status().is_success(), "{asset}");
        assert!(response.bytes().await.unwrap().len() > 10_000, "{asset}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_template() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY, "--metrics-listen", "127.0.0.1:0"]).await;
    let client = reqwest::Client::new();
    let body = serde_json::json!({"number": "SECRET-NUMBER", "name": "n", "kind": "partner", "currency": "EUR"});
    let (status, _) = send(client.post(server.url("/api/v1/accounts")).bearer_auth(ADMIN_KEY).json(&body)).await;
    assert!(status.is_success());
    let (status, _) = send(client.get(server.url("/api/v1/accounts/SECRET-NUMBER")).bearer_auth(ADMIN_KEY)).await;
    assert!(status.is_success());
    let metrics = server.metrics().await;
    assert!(
        metrics
            .contains(r#"tollbook_http_requests_total{method="GET",route="/api/v1/accounts/{number}",status="200"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"tollbook_http_request_duration_seconds_bucket{method="POST",route="/api/v1/accounts",le="0.01"}"#
    ));
    assert!(metrics.contains("tollbook_store_appends_total 1"), "{metrics}");
    assert!(metrics.contains("tollbook_read_models_lag_events"), "{metrics}");
    assert!(!metrics.contains("SECRET-NUMBER"), "metrics carry route templates, never account numbers");
    let (status, live) = send(client.get(server.url("/health/live"))).await;
    assert_eq!((status.as_u16(), live["status"].as_str()), (200, Some("ok")));
}

/// The `type` of a schema as a list: `"number"`, `["number", "null"]` and
/// `{"anyOf": [{"type": "number"}, {"type": "null"}]}` alike.
fn types(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => schema["anyOf"].as_array().map_or_else(Vec::new, |any| any.iter().flat_map(types).collect()),
    }
}

/// The schema itself, or the one branch of `anyOf: [schema, {"type": "null"}]` that is not null.
fn not_null(schema: &Value) -> &Value {
    schema["anyOf"].as_array().and_then(|any| any.iter().find(|s| s["type"] != "null")).unwrap_or(schema)
}

/// The JSON type name of a value, as a schema's `type` names it.
fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every example in the document, with where it is.
fn examples<'a>(value: &'a Value, at: String, found: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match key.as_str() {
                    "example" => found.push((at.clone(), inner)),
                    "examples" if inner.is_array() => {
                        inner.as_array().unwrap().iter().for_each(|e| found.push((at.clone(), e)));
                    }
                    _ => examples(inner, format!("{at}/{key}"), found),
                }
            }
        }
        Value::Array(items) => {
            items.iter().enumerate().for_each(|(i, item)| examples(item, format!("{at}/{i}"), found))
        }
        _ => {}
    }
}

/// Issue 14, defect 7: answers that broke the served document. An account without alert
/// thresholds answers them as null and a CDR without `answer` answers it as null, so the
/// document must allow null there (utoipa's `schema_with` had replaced the nullable schema
/// of the `Option`); and every example is a real value, not Swagger's placeholders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nulls_in_answers_are_in_the_document_and_examples_are_real() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let client = reqwest::Client::new();
    let (_, doc) = send(client.get(server.url("/api/v1/openapi.json"))).await;
    let schemas = &doc["components"]["schemas"];

    let account = serde_json::json!({"number": "C-1001", "name": "n", "kind": "customer", "currency": "EUR"});
    let (status, _) = send(client.post(server.url("/api/v1/accounts")).bearer_auth(ADMIN_KEY).json(&account)).await;
    assert_eq!(status.as_u16(), 201);
    let (status, thresholds) =
        send(client.get(server.url("/api/v1/accounts/C-1001/alerts")).bearer_auth(ADMIN_KEY)).await;
    assert_eq!(status.as_u16(), 200, "{thresholds}");
    for field in ["balance_below", "call_cost_above"] {
        let schema = &schemas["ThresholdsOut"]["properties"][field];
        assert_eq!(thresholds[field], Value::Null, "{thresholds}");
        assert!(types(schema).contains(&type_of(&thresholds[field])), "{field}: null is not allowed by {schema}");
        assert!(types(schema).contains(&"number"), "{field}: {schema}");
        let required = schemas["ThresholdsOut"]["required"].as_array().unwrap();
        assert!(required.contains(&Value::from(field)), "{field} is always in the answer");
    }

    let cdr = serde_json::json!({"id": "unanswered-1", "account": "C-1001", "callee": "4930123456",
        "start": "2025-01-15T10:00:00Z", "end": "2025-01-15T10:00:30Z", "cost": "0"});
    let (status, posted) = send(client.post(server.url("/api/v1/cdrs")).bearer_auth(ADMIN_KEY).json(&cdr)).await;
    assert_eq!(status.as_u16(), 201, "{posted}");
    let min_position = posted["position"].as_u64().unwrap();
    let (status, shown) = send(
        client
            .get(server.url(&format!("/api/v1/accounts/C-1001/cdrs/unanswered-1?min_position={min_position}")))
            .bearer_auth(ADMIN_KEY),
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{shown}");
    let answer_schema = &schemas["CdrOut"]["properties"]["answer"];
    assert_eq!(shown["cdr"]["answer"], Value::Null, "{shown}");
    assert!(types(answer_schema).contains(&"null"), "answer: null is not allowed by {answer_schema}");
    assert!(types(answer_schema).contains(&"string"), "{answer_schema}");
    assert_eq!(not_null(answer_schema)["format"], "date-time");

    // Examples are real: no placeholder text, business times as RFC 3339, and links as a
    // map of named hrefs (Swagger UI would otherwise show `additionalProp1`).
    let mut found = Vec::new();
    examples(&doc, String::new(), &mut found);
    assert!(found.len() > 50, "{}", found.len());
    for (at, example) in &found {
        assert_ne!(*example, &Value::from("string"), "a placeholder example at {at}");
    }
    let mut occurred_at = 0;
    let mut links = 0;
    for (name, schema) in schemas.as_object().unwrap() {
        let Some(properties) = schema["properties"].as_object() else { continue };
        if let Some(property) = properties.get("occurred_at") {
            let property = not_null(property);
            occurred_at += 1;
            let example = property["example"].as_str().or(property["examples"][0].as_str());
            let example = example.unwrap_or_else(|| panic!("{name}.occurred_at has no example: {property}"));
            assert!(chrono::DateTime::parse_from_rfc3339(example).is_ok(), "{name}.occurred_at: {example}");
        }
        if let Some(property) = properties.get("links") {
            links += 1;
            let example = property.get("example").or(property["examples"].get(0));
            let example = example.and_then(Value::as_object).unwrap_or_else(|| panic!("{name}.links: {property}"));
            assert!(!example.is_empty(), "{name}.links");
            for (relation, href) in example {
                assert!(!relation.starts_with("additionalProp"), "{name}.links: {relation}");
                assert!(href.as_str().is_some_and(|h| h.starts_with('/')), "{name}.links.{relation}: {href}");
            }
        }
    }
    assert!(occurred_at >= 4 && links >= 14, "{occurred_at} occurred_at, {links} links");
}

/// A `min_position` the log has not reached was never a write's answer: it is refused at
/// once (400, naming the parameter), not waited for until a 503. Schemathesis found it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_position_past_the_log_is_bad_input() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let client = reqwest::Client::new();
    let account = serde_json::json!({"number": "C-1", "name": "n", "kind": "customer", "currency": "EUR"});
    let (status, written) =
        send(client.post(server.url("/api/v1/accounts")).bearer_auth(ADMIN_KEY).json(&account)).await;
    assert_eq!(status.as_u16(), 201);
    let position = written["position"].as_u64().unwrap();
    let (status, _) =
        send(client.get(server.url(&format!("/api/v1/accounts/C-1?min_position={position}"))).bearer_auth(ADMIN_KEY))
            .await;
    assert_eq!(status.as_u16(), 200, "a written position is waited for");
    for path in ["/api/v1/accounts", "/api/v1/accounts/C-1", "/api/v1/accounts/C-1/events", "/api/v1/accounts/C-1/cdrs"]
    {
        let started = std::time::Instant::now();
        let (status, error) =
            send(client.get(server.url(&format!("{path}?min_position=9223372036854775808"))).bearer_auth(ADMIN_KEY))
                .await;
        assert_eq!((status.as_u16(), error["field"].as_str()), (400, Some("min_position")), "{path}: {error}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{path} waited");
    }
}

/// Issue 19: the docs page showed optional fields as "stringnull" (it folds a type list
/// `["string", "null"]` into one word), `occurred_at` as a bare "string", no word on an
/// adjustment's sign, and a statement description that pointed at identities it did not
/// show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_reads_types_signs_and_identities_right() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let (_, doc) = send(reqwest::Client::new().get(server.url("/api/v1/openapi.json"))).await;

    fn type_lists_with_null(value: &Value, at: String, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if map.get("type").and_then(Value::as_array).is_some_and(|t| t.contains(&Value::from("null"))) {
                    found.push(at.clone());
                }
                for (key, inner) in map {
                    if !["example", "examples", "enum", "default"].contains(&key.as_str()) {
                        type_lists_with_null(inner, format!("{at}/{key}"), found);
                    }
                }
            }
            Value::Array(items) => {
                items.iter().enumerate().for_each(|(i, item)| type_lists_with_null(item, format!("{at}/{i}"), found))
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    type_lists_with_null(&doc, String::new(), &mut found);
    assert!(found.is_empty(), "type lists with null, shown as \"stringnull\": {found:?}");

    let schemas = &doc["components"]["schemas"];
    for request in ["PaymentRequest", "AdjustmentRequest", "ChargeRequest", "TransferRequest"] {
        let occurred_at = &schemas[request]["properties"]["occurred_at"];
        assert!(types(occurred_at).contains(&"null"), "{request}: still optional: {occurred_at}");
        assert_eq!(not_null(occurred_at)["format"], "date-time", "{request}: {occurred_at}");
        let example = not_null(occurred_at)["examples"][0].as_str().unwrap_or_default();
        assert!(chrono::DateTime::parse_from_rfc3339(example).is_ok(), "{request}: {occurred_at}");
    }
    let amount = schemas["AdjustmentRequest"]["properties"]["amount"]["description"].as_str().unwrap();
    assert!(amount.contains("positive amount is a debit"), "{amount}");
    let adjustment = doc["paths"]["/api/v1/adjustments"]["post"]["description"].as_str().unwrap_or_default();
    let summary = doc["paths"]["/api/v1/adjustments"]["post"]["summary"].as_str().unwrap_or_default();
    assert!(format!("{summary} {adjustment}").contains("positive amount is a debit"), "{summary} {adjustment}");
    let statement = &doc["paths"]["/api/v1/accounts/{number}/statement"]["get"];
    let text = format!("{} {}", statement["summary"].as_str().unwrap_or_default(), statement["description"]);
    for identity in [
        "total_charges = call_charges + other_charges + adjustments",
        "opening_balance + payments + transfers_in - transfers_out - total_charges",
    ] {
        assert!(text.contains(identity), "{identity} not in {text}");
    }
    assert!(!text.contains("identities above"), "{text}");
}
