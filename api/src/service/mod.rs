//! What the JSON API (`routes/`) and the portal (`portal/`) both do, in one place: each
//! front end parses its own input (JSON, a form, a query), checks the caller through its
//! own extractor (`Caller`, `Visitor`) and renders its own answer, and calls these for
//! the part in between. Neither front end imports the other.
//!
//! No rule of the ledger lives here (those are `domain`'s, applied by `commands`): this
//! is the glue that names accounts in the caller's scope, waits for the read models,
//! sends a command, or turns a read model's answer into a file to download. Every
//! function takes the pieces of the state it uses (the ledger, the read models), not the
//! server's whole state.

use axum::http::header;
use axum::response::{IntoResponse, Response};

pub mod accounts;
pub mod invoices;
pub mod login_links;
pub mod statements;
pub mod transfers;

/// A file for the client to save (a statement's CSV, an invoice's PDF) or to show (an
/// invoice's HTML page), the same bytes whichever front end asked.
pub struct Download {
    content_type: &'static str,
    /// Offered as the saved file's name; none for a page shown in place.
    file_name: Option<String>,
    body: axum::body::Body,
}

impl Download {
    pub fn attachment(content_type: &'static str, file_name: String, body: impl Into<axum::body::Body>) -> Self {
        Download { content_type, file_name: Some(file_name), body: body.into() }
    }

    pub fn inline(content_type: &'static str, body: impl Into<axum::body::Body>) -> Self {
        Download { content_type, file_name: None, body: body.into() }
    }
}

impl IntoResponse for Download {
    fn into_response(self) -> Response {
        let mut response =
            ([(header::CONTENT_TYPE, header::HeaderValue::from_static(self.content_type))], self.body).into_response();
        if let Some(name) = self.file_name {
            let disposition = format!("attachment; filename=\"{}\"", safe_file_name(&name));
            let value = header::HeaderValue::from_str(&disposition).expect("a file name of safe characters");
            response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
        }
        response
    }
}

/// A file name that needs no quoting in `Content-Disposition`: what account and invoice
/// numbers hold beyond letters, digits, `-`, `_` and `.` becomes `_`.
pub fn safe_file_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}
