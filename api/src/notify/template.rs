//! Alert messages: the operator's templates, one per alert kind, with `{variable}`
//! placeholders. `{{` and `}}` stand for literal braces.

use serde::{Deserialize, Serialize};

/// Longest template accepted, in bytes.
pub const TEMPLATE_BYTES_MAX: usize = 2000;

/// The variables a template may use, with what each becomes.
pub const VARIABLES: [(&str, &str); 9] = [
    ("alert", "the alert's kind: credit_limit_reached, balance_below, call_cost_above or fee_refused"),
    ("account_name", "the account's name"),
    ("account_number", "the account's number"),
    ("balance", "the balance right after the event that raised the alert, with the currency"),
    ("credit_limit", "the account's credit limit, with the currency"),
    ("threshold", "the threshold crossed, with the currency (empty for credit_limit_reached)"),
    ("destination", "the number called (call_cost_above only)"),
    ("duration", "the call's billed duration as mm:ss (call_cost_above only)"),
    ("cost", "the call's cost, or the refused recurring fee, with the currency (call_cost_above, fee_refused)"),
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertTemplates {
    pub credit_limit_reached: String,
    pub balance_below: String,
    pub call_cost_above: String,
}

pub const DEFAULT_CREDIT_LIMIT_REACHED: &str =
    "{account_name} ({account_number}) is past its credit limit of {credit_limit}: balance {balance}";
pub const DEFAULT_BALANCE_BELOW: &str = "{account_name} ({account_number}): balance {balance} is below {threshold}";
pub const DEFAULT_CALL_COST_ABOVE: &str =
    "{account_name} ({account_number}): a call to {destination} lasting {duration} cost {cost}, over {threshold}";

/// The message of a refused recurring fee. Not yet one of the operator's templates: every
/// variable it needs is already known, so a template of its own is a field to add.
pub const DEFAULT_FEE_REFUSED: &str = "{account_name} ({account_number}): a recurring fee of {cost} was refused: \
     balance {balance}, credit limit {credit_limit}";

impl Default for AlertTemplates {
    fn default() -> Self {
        AlertTemplates {
            credit_limit_reached: DEFAULT_CREDIT_LIMIT_REACHED.into(),
            balance_below: DEFAULT_BALANCE_BELOW.into(),
            call_cost_above: DEFAULT_CALL_COST_ABOVE.into(),
        }
    }
}

impl AlertTemplates {
    pub fn for_kind(&self, kind: &str) -> &str {
        match kind {
            "credit_limit_reached" => &self.credit_limit_reached,
            "balance_below" => &self.balance_below,
            "fee_refused" => DEFAULT_FEE_REFUSED,
            _ => &self.call_cost_above,
        }
    }
}

/// The values of one alert's variables.
#[derive(Clone, Debug, Default)]
pub struct AlertValues {
    pub alert: String,
    pub account_name: String,
    pub account_number: String,
    pub balance: String,
    pub credit_limit: String,
    pub threshold: String,
    pub destination: String,
    pub duration: String,
    pub cost: String,
}

impl AlertValues {
    fn get(&self, name: &str) -> Option<&str> {
        Some(match name {
            "alert" => &self.alert,
            "account_name" => &self.account_name,
            "account_number" => &self.account_number,
            "balance" => &self.balance,
            "credit_limit" => &self.credit_limit,
            "threshold" => &self.threshold,
            "destination" => &self.destination,
            "duration" => &self.duration,
            "cost" => &self.cost,
            _ => return None,
        })
    }
}

/// Why a template was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct TemplateError(pub String);

enum Piece<'a> {
    Text(&'a str),
    Variable(&'a str),
}

fn pieces(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        let Some(brace) = rest.find(['{', '}']) else {
            pieces.push(Piece::Text(rest));
            break;
        };
        pieces.push(Piece::Text(&rest[..brace]));
        rest = &rest[brace..];
        if rest.starts_with("{{") || rest.starts_with("}}") {
            pieces.push(Piece::Text(&rest[..1]));
            rest = &rest[2..];
        } else if rest.starts_with('}') {
            return Err(TemplateError("a lone `}`: write `}}` for a literal brace".into()));
        } else {
            let end = rest.find('}').ok_or_else(|| TemplateError("a `{` is not closed".into()))?;
            pieces.push(Piece::Variable(&rest[1..end]));
            rest = &rest[end + 1..];
        }
    }
    Ok(pieces)
}

/// Checks a template: bounded, braces balanced, every variable known.
pub fn validate(template: &str) -> Result<(), TemplateError> {
    if template.len() > TEMPLATE_BYTES_MAX {
        return Err(TemplateError(format!("longer than {TEMPLATE_BYTES_MAX} bytes")));
    }
    if template.trim().is_empty() {
        return Err(TemplateError("empty".into()));
    }
    for piece in pieces(template)? {
        if let Piece::Variable(name) = piece
            && !VARIABLES.iter().any(|(known, _)| *known == name)
        {
            let known: Vec<&str> = VARIABLES.iter().map(|(n, _)| *n).collect();
            return Err(TemplateError(format!(
                "unknown variable `{{{}}}`; known: {}",
                name.chars().take(64).collect::<String>(),
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// Fills a template in. A template that no longer parses (it was validated when set)
/// renders as itself rather than losing the alert.
pub fn render(template: &str, values: &AlertValues) -> String {
    let Ok(pieces) = pieces(template) else { return template.to_owned() };
    let mut out = String::with_capacity(template.len() + 64);
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Variable(name) => out.push_str(values.get(name).unwrap_or_default()),
        }
    }
    out
}

/// A duration as minutes and seconds, `mm:ss`; minutes go past 59 rather than wrap.
pub fn mm_ss(seconds: u32) -> String {
    format!("{:02}:{:02}", seconds / 60, seconds % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_variables_and_literal_braces() {
        let values = AlertValues {
            account_name: "Ann's Café".into(),
            account_number: "C-1".into(),
            cost: "12.50 EUR".into(),
            duration: mm_ss(754),
            destination: "4930123".into(),
            ..AlertValues::default()
        };
        let template = "{{{account_number}}} {account_name}: {destination} {duration} = {cost}";
        assert_eq!(validate(template), Ok(()));
        assert_eq!(render(template, &values), "{C-1} Ann's Café: 4930123 12:34 = 12.50 EUR");
    }

    #[test]
    fn durations_are_minutes_and_seconds() {
        assert_eq!(mm_ss(0), "00:00");
        assert_eq!(mm_ss(59), "00:59");
        assert_eq!(mm_ss(61), "01:01");
        assert_eq!(mm_ss(3725), "62:05");
    }

    #[test]
    fn refuses_unknown_variables_and_broken_braces() {
        assert!(validate("{balanse}").unwrap_err().0.contains("`{balanse}`"));
        assert!(validate("{balance").is_err());
        assert!(validate("balance}").is_err());
        assert!(validate(" ").is_err());
        assert!(validate(&"x".repeat(TEMPLATE_BYTES_MAX + 1)).is_err());
        for template in
            [DEFAULT_BALANCE_BELOW, DEFAULT_CALL_COST_ABOVE, DEFAULT_CREDIT_LIMIT_REACHED, DEFAULT_FEE_REFUSED]
        {
            assert_eq!(validate(template), Ok(()), "{template}");
        }
    }
}
