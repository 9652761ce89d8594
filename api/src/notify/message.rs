//! The JSON form of an event as the stream and webhooks send it, the same for both.

use std::sync::Arc;
use std::time::Duration;

use commands::Ledger;
use domain::event::{Alert, AlertRaised};
use domain::{AccountId, Amount, Payload, RecordedEvent, Timestamp};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::filter::Audience;
use super::store::NotifyStore;
use super::template::{self, AlertValues};

/// How long an alert's rendering waits for the read models to see it.
const ALERT_SETTLE_MAX: Duration = Duration::from_secs(2);

/// One event with its place in the global log.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EventMessage {
    /// The event's global log position: resume after it with `from = position + 1`.
    pub position: u64,
    pub event: EventBody,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EventBody {
    /// The event's kind, such as `PaymentReceived` or `AlertRaised`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub event_id: uuid::Uuid,
    /// `operator`, or the id of the partner whose book it is.
    pub book: String,
    /// Its place in its book's stream, from 0.
    pub version: u64,
    #[schema(schema_with = crate::openapi::timestamp)]
    pub occurred_at: Timestamp,
    #[schema(schema_with = crate::openapi::timestamp)]
    pub recorded_at: Timestamp,
    /// Who asked: `admin`, `user:<login>`, `token:<id>`.
    pub actor: String,
    /// The numbers of the accounts the event concerns.
    pub accounts: Vec<String>,
    /// The payload's fields (account ids as UUIDs, amounts as exact decimals).
    #[schema(value_type = Object)]
    pub data: Value,
    /// For `AlertRaised`: the alert's message from the operator's template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Renders events for one audience. Cheap to clone.
#[derive(Clone)]
pub struct Renderer {
    ledger: Arc<Ledger>,
    models: projections::ReadModels,
    store: NotifyStore,
}

impl Renderer {
    pub fn new(ledger: Arc<Ledger>, models: projections::ReadModels, store: NotifyStore) -> Self {
        Renderer { ledger, models, store }
    }

    pub fn render(&self, recorded: &RecordedEvent, audience: Audience) -> EventMessage {
        let event = &recorded.event;
        let accounts = event
            .payload
            .accounts()
            .into_iter()
            .map(|id| self.ledger.account_by_id(id).map_or_else(|| id.to_string(), |a| a.number))
            .collect();
        let mut data = match serde_json::to_value(&event.payload) {
            // Externally tagged: `{"PaymentReceived": {...}}`; the kind is in `type` already.
            Ok(Value::Object(tagged)) => tagged.into_iter().next().map_or(Value::Null, |(_, fields)| fields),
            Ok(other) => other,
            Err(error) => {
                tracing::error!(%error, position = recorded.position, "an event did not render");
                Value::Null
            }
        };
        if let Audience::Account(own) = audience {
            redact_for_customer(&mut data, &event.payload, own);
        }
        let message = match &event.payload {
            Payload::AlertRaised(alert) => Some(self.alert_message(alert)),
            _ => None,
        };
        EventMessage {
            position: recorded.position,
            event: EventBody {
                kind: event.payload.type_name(),
                event_id: event.envelope.event_id.0,
                book: event.envelope.book.to_string(),
                version: event.envelope.version,
                occurred_at: event.envelope.occurred_at,
                recorded_at: event.envelope.recorded_at,
                actor: event.envelope.actor.clone(),
                accounts,
                data,
                message,
            },
        }
    }

    /// Waits, briefly, until the read models have seen an alert: its message names the
    /// account as they know it, and they follow the log a little behind the followers
    /// that render it. Other events render from the event alone and do not wait.
    pub async fn settle(&self, recorded: &RecordedEvent) {
        if matches!(recorded.event.payload, Payload::AlertRaised(_)) {
            // Past the wait the message still goes out, with the number for the name.
            let _ = self.models.wait_for(recorded.position, ALERT_SETTLE_MAX).await;
        }
    }

    /// The alert's message from the operator's template. The account's name comes from
    /// the read models (see `settle`); should they lag, the number stands in for it.
    pub fn alert_message(&self, raised: &AlertRaised) -> String {
        self.alert_text(raised).0
    }

    /// The alert's message and the values it was filled in from (an e-mail shows both).
    pub fn alert_text(&self, raised: &AlertRaised) -> (String, AlertValues) {
        let view = self.models.account(raised.account).ok().flatten();
        let known = self.ledger.account_by_id(raised.account);
        let number = known.as_ref().map_or_else(|| raised.account.to_string(), |a| a.number.clone());
        let name = view.map_or_else(|| number.clone(), |v| v.name);
        let currency = known.map(|a| a.currency.to_string());
        let values = alert_values(raised, name, number, currency.as_deref());
        let templates = self.store.alert_templates().unwrap_or_else(|error| {
            tracing::error!(%error, "alert templates unreadable; using the defaults");
            Default::default()
        });
        (template::render(templates.for_kind(raised.alert.kind()), &values), values)
    }
}

/// The template variables of an alert; amounts are shown with the currency when known.
pub fn alert_values(raised: &AlertRaised, name: String, number: String, currency: Option<&str>) -> AlertValues {
    // In the canonical form the API shows amounts in (see docs/api.md, "Amounts").
    let money = |amount: Amount| match currency.and_then(|code| domain::Currency::parse(code).ok()) {
        Some(code) => format!("{} {code}", amount.canonical(code)),
        None => amount.normalized().to_string(),
    };
    let mut values = AlertValues {
        alert: raised.alert.kind().to_owned(),
        account_name: name,
        account_number: number,
        balance: money(raised.balance),
        credit_limit: money(raised.credit_limit),
        ..AlertValues::default()
    };
    match &raised.alert {
        Alert::CreditLimitReached => {}
        Alert::BalanceBelow { threshold } => values.threshold = money(*threshold),
        Alert::CallCostAbove { threshold, callee, billed_seconds, cost, .. } => {
            values.threshold = money(*threshold);
            values.destination = callee.clone();
            values.duration = template::mm_ss(*billed_seconds);
            values.cost = money(*cost);
        }
        Alert::FeeRefused { amount, .. } => values.cost = money(*amount),
    }
    values
}

/// A customer sees its own side of an event: not its partner's wholesale cost of its
/// calls, nor the partner's share of a reversal.
fn redact_for_customer(data: &mut Value, payload: &Payload, own: AccountId) {
    let Value::Object(fields) = data else { return };
    match payload {
        Payload::CallCharged(call) if call.account == own => {
            fields.remove("partner_cost");
        }
        Payload::EntryReversed(_) => {
            let own = own.to_string();
            if let Some(Value::Array(postings)) = fields.get_mut("postings") {
                postings.retain(|p| p.get("account").and_then(Value::as_str) == Some(own.as_str()));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::template::{AlertTemplates, render};

    #[test]
    fn a_costly_call_reads_with_destination_duration_and_currency() {
        let raised = AlertRaised {
            account: AccountId::new(),
            alert: Alert::CallCostAbove {
                threshold: "5".parse().unwrap(),
                cdr_id: "cdr-1".into(),
                callee: "4930123456".into(),
                billed_seconds: 754,
                cost: "12.50".parse().unwrap(),
            },
            balance: "-2.5".parse().unwrap(),
            credit_limit: "10".parse().unwrap(),
        };
        let values = alert_values(&raised, "Ann".into(), "C-1".into(), Some("EUR"));
        assert_eq!(
            render(&AlertTemplates::default().call_cost_above, &values),
            "Ann (C-1): a call to 4930123456 lasting 12:34 cost 12.50 EUR, over 5.00 EUR"
        );
        let values = alert_values(&raised, "Ann".into(), "C-1".into(), None);
        assert_eq!(render("{balance}/{credit_limit}", &values), "-2.5/10");
    }

    #[test]
    fn a_customer_does_not_see_its_partners_cost() {
        let customer = AccountId::new();
        let partner = AccountId::new();
        let payload = Payload::EntryReversed(domain::event::EntryReversed {
            reversed_event: domain::EventId::new(),
            reversed_version: 3,
            postings: vec![
                domain::Posting {
                    account: customer,
                    category: domain::Category::CallCharges,
                    amount: "-2".parse().unwrap(),
                },
                domain::Posting {
                    account: partner,
                    category: domain::Category::CallCharges,
                    amount: "-1".parse().unwrap(),
                },
            ],
            reason: None,
        });
        let mut data = serde_json::to_value(&payload).unwrap()["EntryReversed"].take();
        redact_for_customer(&mut data, &payload, customer);
        let postings = data["postings"].as_array().unwrap();
        assert_eq!(postings.len(), 1);
        assert_eq!(postings[0]["account"], customer.to_string());
    }
}
