//! The links answers carry to related resources. Below the routes, so that the OpenAPI
//! document can show the very map an answer holds as its example.

use std::collections::BTreeMap;

/// Related resources, by relation name.
pub type Links = BTreeMap<&'static str, String>;

/// The links of an account, shared by every answer about one.
pub fn account_links(number: &str) -> Links {
    let base = format!("/api/v1/accounts/{number}");
    [
        ("statement", format!("{base}/statement")),
        ("statement_lines", format!("{base}/statement/lines")),
        ("events", format!("{base}/events")),
        ("cdrs", format!("{base}/cdrs")),
        ("status", format!("{base}/status")),
        ("credit_limit", format!("{base}/credit-limit")),
        ("tariff", format!("{base}/tariff")),
        ("alerts", format!("{base}/alerts")),
        ("invoices", format!("{base}/invoices")),
        ("self", base),
    ]
    .into_iter()
    .collect()
}
