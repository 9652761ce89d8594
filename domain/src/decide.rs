//! The decider: `decide` turns a command into events against a book's state, or refuses
//! it; `evolve` applies one event to the state. Both are pure, so the same code runs in
//! the book's writer, in replay and in the property tests.

use crate::account::{Account, AccountKind, AccountStatus};
use crate::billing::{self, Plan, Subscription};
use crate::command::{ChargeCall, Command, CommandMeta, InvoiceSubject, IssueCreditNote, IssueInvoice, OpenAccount};
use crate::error::DomainError;
use crate::event::*;
use crate::ids::{AccountId, BookId, EventId, PlanId, SubscriptionId, TariffId, validate_identifier, validate_text};
use crate::invoice::{self, InvoiceRecord, TaxRule, Totals};
use crate::money::{Amount, INPUT_SCALE_MAX_DEFAULT};
use crate::rating::Tariff;
use crate::time::Timestamp;

/// A book's maps hash with foldhash: the writer looks them up some ten times per command,
/// and std's SipHash on these short keys (account ids, CDR ids) was 5 % of its time.
/// foldhash is seeded at random per process, as SipHash is, so a client cannot choose
/// colliding CDR ids or keys ahead of time; it is not a cryptographic hash.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// What the book remembers of an idempotency key: the request it came with and the
/// events that request produced.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdempotencyRecord {
    pub request_digest: Hash,
    pub first_version: u64,
    pub events: u32,
}

/// One book's state: all a rule needs to decide a command, and exactly what folding
/// the book's events with [`evolve`] gives. Serializable for the book's snapshots (a
/// change of its shape must change the snapshot format, or old snapshots fail to decode
/// and are folded again, which is safe but slow).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BookState {
    pub book: BookId,
    /// The version the next event will get (= number of events so far).
    pub next_version: u64,
    pub last_hash: Hash,
    /// The ledger time of the book's last event. Ledger time never goes back within a
    /// book, so "as the ledger knew it at time T" is a prefix of the book.
    pub last_recorded_at: Timestamp,
    pub accounts: HashMap<AccountId, Account>,
    pub numbers: HashMap<String, AccountId>,
    /// CDR id to the version of the event that charged it.
    pub charged_cdrs: HashMap<String, u64>,
    pub idempotency: HashMap<String, IdempotencyRecord>,
    pub reversed: HashSet<EventId>,
    pub tariffs: HashMap<TariffId, Tariff>,
    /// Which account of the book holds each switch identifier, and each account's.
    pub switch_identifiers: HashMap<crate::switch::SwitchIdentifier, AccountId>,
    pub identifiers_of: HashMap<AccountId, Vec<crate::switch::SwitchIdentifier>>,
    /// Plans published in this book.
    pub plans: HashMap<PlanId, Plan>,
    pub subscriptions: HashMap<SubscriptionId, Subscription>,
    /// Per subscription, the start of the first period not yet settled (charged, or
    /// refused on the record): every earlier period is.
    pub fees_settled_until: HashMap<SubscriptionId, Timestamp>,
    /// The invoices this book issued, its numbering and its tax rules.
    pub invoicing: crate::invoice::Invoicing,
}

impl BookState {
    pub fn new(book: BookId) -> Self {
        BookState {
            book,
            next_version: 0,
            last_hash: GENESIS_HASH,
            last_recorded_at: Timestamp::MIN,
            accounts: HashMap::default(),
            numbers: HashMap::default(),
            charged_cdrs: HashMap::default(),
            idempotency: HashMap::default(),
            reversed: HashSet::default(),
            tariffs: HashMap::default(),
            switch_identifiers: HashMap::default(),
            identifiers_of: HashMap::default(),
            plans: HashMap::default(),
            subscriptions: HashMap::default(),
            fees_settled_until: HashMap::default(),
            invoicing: crate::invoice::Invoicing::default(),
        }
    }

    pub fn account(&self, id: AccountId) -> Result<&Account, DomainError> {
        self.accounts.get(&id).ok_or(DomainError::AccountNotFound(id))
    }

    pub fn account_by_number(&self, number: &str) -> Option<&Account> {
        self.numbers.get(number).and_then(|id| self.accounts.get(id))
    }
}

/// The outcome of deciding a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// New events to append, in order (may be empty: nothing to change).
    Accept(Vec<Payload>),
    /// The same request was already decided: its events are these, already stored.
    Repeat { first_version: u64, events: u32 },
}

/// Decides `command` against `state`. Never mutates; the writer applies the resulting
/// events with [`evolve`].
pub fn decide(state: &BookState, command: &Command, meta: &CommandMeta) -> Result<Decision, DomainError> {
    if let Some(idempotency) = &meta.idempotency {
        validate_identifier("idempotency_key", &idempotency.key)?;
        // Fee keys name a (subscription, period): a request of any other kind may not
        // take one, or it could stand in for a fee and stop it from being charged.
        if idempotency.key.starts_with(billing::FEE_KEY_PREFIX) && !matches!(command, Command::ChargeFee { .. }) {
            return Err(DomainError::InvalidField {
                field: "idempotency_key",
                reason: format!("keys starting with `{}` are reserved for recurring fees", billing::FEE_KEY_PREFIX),
            });
        }
        if let Some(record) = state.idempotency.get(&idempotency.key) {
            if record.request_digest != idempotency.request_digest {
                return Err(DomainError::IdempotencyKeyReused(idempotency.key.clone()));
            }
            return Ok(Decision::Repeat { first_version: record.first_version, events: record.events });
        }
    }
    validate_text("actor", &meta.actor)?;
    let mut decision = decide_command(state, command, meta)?;
    if let Decision::Accept(events) = &mut decision {
        push_alerts(state, events);
    }
    Ok(decision)
}

fn decide_command(state: &BookState, command: &Command, meta: &CommandMeta) -> Result<Decision, DomainError> {
    match command {
        Command::OpenAccount(open) => open_account(state, open),
        Command::ChangeStatus { account, status, reason } => change_status(state, *account, *status, reason),
        Command::ChangeCreditLimit { account, credit_limit } => {
            let acc = open_account_ref(state, *account)?;
            let credit_limit = checked_credit_limit(*credit_limit)?;
            if acc.credit_limit == credit_limit {
                return Ok(Decision::Accept(vec![]));
            }
            accept(Payload::CreditLimitChanged(CreditLimitChanged {
                account: *account,
                from: acc.credit_limit,
                to: credit_limit,
            }))
        }
        Command::AssignTariff { account, tariff } => {
            let acc = open_account_ref(state, *account)?;
            if let Some(tariff) = tariff {
                // A partner's own calls are priced by the operator (wholesale); a
                // customer's by its book (the partner's retail list) or the operator.
                let allowed =
                    tariff.book == BookId::OPERATOR || (acc.kind == AccountKind::Customer && tariff.book == state.book);
                if !allowed {
                    return Err(DomainError::TariffNotFound(tariff.id));
                }
                if tariff.currency != acc.currency {
                    return Err(DomainError::TariffCurrencyMismatch {
                        account: acc.currency.as_str().to_owned(),
                        tariff: tariff.currency.as_str().to_owned(),
                    });
                }
            }
            let tariff = tariff.map(|t| t.id);
            if acc.tariff == tariff {
                return Ok(Decision::Accept(vec![]));
            }
            accept(Payload::TariffAssigned(TariffAssigned { account: *account, tariff }))
        }
        Command::ConfigureAlerts { account, balance_below, call_cost_above } => {
            let acc = open_account_ref(state, *account)?;
            let balance_below = balance_below.map(|a| a.checked_input(INPUT_SCALE_MAX_DEFAULT)).transpose()?;
            let call_cost_above = call_cost_above.map(|a| a.checked_input(INPUT_SCALE_MAX_DEFAULT)).transpose()?;
            if call_cost_above.is_some_and(|a| a.is_negative()) {
                return Err(DomainError::InvalidField {
                    field: "call_cost_above",
                    reason: "must not be negative".into(),
                });
            }
            if acc.alert_balance_below == balance_below && acc.alert_call_cost_above == call_cost_above {
                return Ok(Decision::Accept(vec![]));
            }
            accept(Payload::AlertsConfigured(AlertsConfigured { account: *account, balance_below, call_cost_above }))
        }
        Command::ReceivePayment { account, amount, method, reference } => {
            open_account_ref(state, *account)?;
            let amount = positive(*amount)?;
            optional_text("method", method)?;
            optional_text("reference", reference)?;
            accept(Payload::PaymentReceived(PaymentReceived {
                account: *account,
                amount,
                method: method.clone(),
                reference: reference.clone(),
            }))
        }
        Command::PostAdjustment { account, amount, reason } => {
            open_account_ref(state, *account)?;
            let amount = amount.checked_input(INPUT_SCALE_MAX_DEFAULT)?;
            if amount.is_zero() {
                return Err(DomainError::InvalidAmount("an adjustment must not be zero".into()));
            }
            optional_text("reason", reason)?;
            accept(Payload::AdjustmentPosted(AdjustmentPosted { account: *account, amount, reason: reason.clone() }))
        }
        Command::PostCharge { account, amount, description } => {
            let acc = open_account_ref(state, *account)?;
            let amount = positive(*amount)?;
            optional_text("description", description)?;
            require_available(acc, amount)?;
            accept(Payload::ChargePosted(ChargePosted { account: *account, amount, description: description.clone() }))
        }
        Command::ChargeCall(charge) => charge_call(state, charge),
        Command::MoveFunds { from, to, amount, note } => move_funds(state, *from, *to, *amount, note),
        Command::ReverseEntry { target, reason } => reverse_entry(state, target, reason),
        Command::PublishTariff(tariff) => publish_tariff(state, tariff, meta),
        Command::SetSwitchIdentifiers { account, identifiers } => set_switch_identifiers(state, *account, identifiers),
        Command::PublishPlan(publish) => publish_plan(state, publish),
        Command::StartSubscription { subscription, account, plan, starts_at, ends_at } => {
            start_subscription(state, *subscription, *account, *plan, *starts_at, *ends_at)
        }
        Command::EndSubscription { subscription, account, ends_at } => {
            end_subscription(state, *subscription, *account, *ends_at)
        }
        Command::ChargeFee { subscription, account, period_start } => {
            charge_fee(state, *subscription, *account, *period_start, meta)
        }
        Command::ConfigureTax { account, tax } => configure_tax(state, account.as_ref(), tax.as_ref()),
        Command::IssueInvoice(issue) => issue_invoice(state, issue),
        Command::IssueCreditNote(issue) => issue_credit_note(state, issue),
    }
}

/// Checks that this book invoices `subject`: a customer of the book, or, for the
/// operator's book, a partner (whose account opens a book of its own, so this book's
/// state cannot see it; the ledger looked it up).
fn invoiced_account(state: &BookState, subject: &InvoiceSubject) -> Result<(), DomainError> {
    match state.accounts.get(&subject.account) {
        Some(account) if account.kind == AccountKind::Customer => Ok(()),
        Some(account) => Err(DomainError::NotACustomer(account.label())),
        None if state.book == BookId::OPERATOR && subject.kind == AccountKind::Partner => Ok(()),
        None => Err(DomainError::AccountNotFound(subject.account)),
    }
}

fn configure_tax(
    state: &BookState,
    subject: Option<&InvoiceSubject>,
    tax: Option<&TaxRule>,
) -> Result<Decision, DomainError> {
    if let Some(subject) = subject {
        invoiced_account(state, subject)?;
    }
    let tax = match (subject, tax) {
        (None, None) => {
            return Err(DomainError::InvalidField {
                field: "tax_rate",
                reason: "the issuer's rule needs a rate".into(),
            });
        }
        (_, Some(tax)) => Some(tax.clone().validated()?),
        (Some(_), None) => None,
    };
    let current = match subject {
        Some(subject) => state.invoicing.tax_of.get(&subject.account),
        None => state.invoicing.tax.as_ref(),
    };
    if current == tax.as_ref() {
        return Ok(Decision::Accept(vec![]));
    }
    accept(Payload::TaxConfigured(TaxConfigured { account: subject.map(|s| s.account), tax }))
}

/// The issuer as its documents name it, and the prefix of their numbers.
fn issuer(state: &BookState) -> (String, Option<String>) {
    match state.accounts.get(&AccountId(state.book.0)) {
        Some(partner) if state.book != BookId::OPERATOR => (partner.name.clone(), Some(partner.number.clone())),
        _ => ("Operator".to_owned(), None),
    }
}

fn issue_invoice(state: &BookState, issue: &IssueInvoice) -> Result<Decision, DomainError> {
    let subject = &issue.subject;
    // The same account and period again is the invoice already issued: a rerun of an
    // invoice run, or one cut short by a crash, issues nothing twice.
    if let Some(id) = state.invoicing.by_period.get(&(subject.account, issue.period_from))
        && let Some(record) = state.invoicing.invoices.get(id)
    {
        return Ok(Decision::Repeat { first_version: record.version, events: 1 });
    }
    invoiced_account(state, subject)?;
    if issue.period_from >= issue.period_to {
        return Err(DomainError::InvalidField { field: "period", reason: "must end after it starts".into() });
    }
    if state.invoicing.invoices.contains_key(&issue.invoice) {
        return Err(DomainError::InvalidField { field: "invoice", reason: "this invoice id is taken".into() });
    }
    issue.figures.check()?;
    let figures = issue.figures.normalized();
    let tax = state.invoicing.tax_for(subject.account);
    let totals = invoice::totals(&figures, &tax, subject.currency);
    let sequence = state.invoicing.invoices_issued + 1;
    let (issuer_name, prefix) = issuer(state);
    accept(Payload::InvoiceIssued(Box::new(InvoiceIssued {
        invoice: issue.invoice,
        sequence,
        number: invoice::document_number(prefix.as_deref(), "INV", sequence),
        account: subject.account,
        account_number: subject.number.clone(),
        account_name: subject.name.clone(),
        currency: subject.currency,
        issuer_name,
        period_from: issue.period_from,
        period_to: issue.period_to,
        figures,
        statement_position: issue.statement_position,
        tax,
        totals,
    })))
}

fn issue_credit_note(state: &BookState, issue: &IssueCreditNote) -> Result<Decision, DomainError> {
    let record = state.invoicing.invoices.get(&issue.invoice).ok_or(DomainError::InvoiceNotFound(issue.invoice))?;
    optional_text("reason", &issue.reason)?;
    if state.invoicing.invoices.contains_key(&issue.credit_note) {
        return Err(DomainError::InvalidField { field: "credit_note", reason: "this id is taken".into() });
    }
    issue.figures.check()?;
    let corrected = issue.figures.normalized();
    let figures = corrected.minus(&record.figures);
    // The corrected totals are computed whole, by the same rule as the invoice's, and
    // the note carries the difference: rounding the difference instead could leave the
    // invoice and its notes a cent away from the corrected invoice.
    let totals = invoice::totals(&corrected, &record.tax, record.currency).minus(&record.totals);
    if figures.is_zero() && totals == Totals::default() {
        return Err(DomainError::InvoiceUnchanged(record.number.clone()));
    }
    let sequence = state.invoicing.credit_notes_issued + 1;
    let (_, prefix) = issuer(state);
    accept(Payload::CreditNoteIssued(Box::new(CreditNoteIssued {
        credit_note: issue.credit_note,
        sequence,
        number: invoice::document_number(prefix.as_deref(), "CN", sequence),
        invoice: issue.invoice,
        invoice_number: record.number.clone(),
        account: record.account,
        currency: record.currency,
        figures,
        totals,
        statement_position: issue.statement_position,
        reason: issue.reason.clone(),
    })))
}

fn publish_plan(state: &BookState, publish: &crate::command::PublishPlan) -> Result<Decision, DomainError> {
    let plan = &publish.plan;
    if plan.name.trim().is_empty() {
        return Err(DomainError::InvalidField { field: "name", reason: "must not be empty".into() });
    }
    validate_text("name", &plan.name)?;
    let price = positive(plan.price).map_err(|error| DomainError::InvalidField {
        field: "price",
        reason: match error {
            DomainError::AmountNotPositive => "must be greater than zero".into(),
            other => other.to_string(),
        },
    })?;
    if state.plans.contains_key(&plan.id) {
        return Err(DomainError::DuplicatePlan(plan.id));
    }
    // As with calls: a partner's customer pays the partner's price, and the partner pays
    // the operator the price of the operator plan its own plan names.
    let wholesale = match (state.book == BookId::OPERATOR, &publish.wholesale) {
        (true, None) => None,
        (true, Some(_)) => {
            return Err(DomainError::InvalidField {
                field: "wholesale_plan",
                reason: "the operator's plans pay no one".into(),
            });
        }
        (false, None) => {
            return Err(DomainError::InvalidField {
                field: "wholesale_plan",
                reason: "a partner's plan names the operator plan whose price the partner pays".into(),
            });
        }
        (false, Some(wholesale)) => {
            if wholesale.book != BookId::OPERATOR {
                return Err(DomainError::PlanNotFound(wholesale.id));
            }
            if wholesale.currency != plan.currency {
                return Err(DomainError::CurrencyMismatch(plan.currency.to_string(), wholesale.currency.to_string()));
            }
            if wholesale.period != plan.period {
                return Err(DomainError::InvalidField {
                    field: "wholesale_plan",
                    reason: format!("charges {}, this plan {}", wholesale.period.as_str(), plan.period.as_str()),
                });
            }
            Some(billing::WholesalePrice { plan: wholesale.id, price: wholesale.price })
        }
    };
    let plan = Plan { name: plan.name.trim().to_owned(), price, wholesale, ..plan.clone() };
    accept(Payload::PlanPublished(PlanPublished { plan }))
}

fn start_subscription(
    state: &BookState,
    subscription: SubscriptionId,
    account_id: AccountId,
    plan_id: PlanId,
    starts_at: Timestamp,
    ends_at: Option<Timestamp>,
) -> Result<Decision, DomainError> {
    if state.subscriptions.contains_key(&subscription) {
        return Err(DomainError::DuplicateSubscription(subscription));
    }
    let account = open_account_ref(state, account_id)?;
    if account.kind != AccountKind::Customer {
        return Err(DomainError::NotACustomer(account.label()));
    }
    let plan = state.plans.get(&plan_id).ok_or(DomainError::PlanNotFound(plan_id))?;
    if plan.currency != account.currency {
        return Err(DomainError::CurrencyMismatch(account.currency.to_string(), plan.currency.to_string()));
    }
    if ends_at.is_some_and(|end| end <= starts_at) {
        return Err(DomainError::InvalidField { field: "ends_at", reason: "must be after starts_at".into() });
    }
    accept(Payload::SubscriptionStarted(SubscriptionStarted {
        subscription,
        account: account_id,
        plan: plan_id,
        starts_at,
        ends_at,
    }))
}

/// A subscription ends, or ends sooner; never inside a period already settled, whose fee
/// was charged for the whole of it (that would take a refund: an adjustment, by hand).
fn end_subscription(
    state: &BookState,
    id: SubscriptionId,
    account: AccountId,
    ends_at: Timestamp,
) -> Result<Decision, DomainError> {
    let subscription =
        state.subscriptions.get(&id).filter(|s| s.account == account).ok_or(DomainError::SubscriptionNotFound(id))?;
    if ends_at <= subscription.starts_at {
        return Err(DomainError::InvalidField { field: "ends_at", reason: "must be after starts_at".into() });
    }
    if let Some(current) = subscription.ends_at {
        if ends_at == current {
            return Ok(Decision::Accept(vec![]));
        }
        if ends_at > current {
            return Err(DomainError::InvalidField {
                field: "ends_at",
                reason: format!("the subscription already ends at {current}; an end is only brought forward"),
            });
        }
    }
    if let Some(settled) = state.fees_settled_until.get(&id)
        && ends_at < *settled
    {
        return Err(DomainError::PeriodAlreadyCharged { charged_until: settled.to_rfc3339() });
    }
    accept(Payload::SubscriptionEnded(SubscriptionEnded { subscription: id, account, ends_at }))
}

/// One period's fee. A fee the account (or its partner, for the operator's share) cannot
/// pay under the credit-limit rules of charges, or that falls on a closed account, is
/// not charged: the refusal is recorded instead, as an alert under the same (subscription,
/// period) key, so the gap is on the record and the period is settled once either way.
fn charge_fee(
    state: &BookState,
    id: SubscriptionId,
    account_id: AccountId,
    period_start: Timestamp,
    meta: &CommandMeta,
) -> Result<Decision, DomainError> {
    let subscription = state
        .subscriptions
        .get(&id)
        .filter(|s| s.account == account_id)
        .ok_or(DomainError::SubscriptionNotFound(id))?;
    let key = billing::fee_key(id, period_start);
    if meta.idempotency.as_ref().is_none_or(|i| i.key != key) {
        return Err(DomainError::InvalidField {
            field: "idempotency_key",
            reason: format!("a fee is charged under its own key, `{key}`"),
        });
    }
    let plan = state.plans.get(&subscription.plan).ok_or(DomainError::PlanNotFound(subscription.plan))?;
    let fee = billing::fee(plan, subscription, period_start).ok_or_else(|| DomainError::InvalidField {
        field: "period_start",
        reason: "the subscription owes nothing for this period".into(),
    })?;
    if fee.covers_from > meta.recorded_at {
        return Err(DomainError::InvalidField { field: "period_start", reason: "this fee is not due yet".into() });
    }
    if meta.occurred_at != fee.covers_from {
        return Err(DomainError::InvalidField {
            field: "occurred_at",
            reason: format!("a fee is dated at the start of what it covers, {}", fee.covers_from),
        });
    }
    let account = state.account(account_id)?;
    let partner = match (account.partner, fee.wholesale) {
        (Some(partner), Some(wholesale)) => Some((state.account(partner)?, wholesale)),
        _ => None,
    };
    let refusal = |refused: &Account, reason: &str| {
        accept(Payload::AlertRaised(AlertRaised {
            account: refused.id,
            alert: Alert::FeeRefused {
                subscription: id,
                plan: plan.id,
                period_start,
                amount: fee.amount,
                reason: reason.to_owned(),
            },
            balance: refused.balance,
            credit_limit: refused.credit_limit,
        }))
    };
    for (payer, amount) in std::iter::once((account, fee.amount)).chain(partner) {
        if payer.status == AccountStatus::Closed {
            return refusal(payer, "account_closed");
        }
        if require_available(payer, amount).is_err() {
            return refusal(payer, "insufficient_funds");
        }
    }
    let description = format!(
        "{} ({} fee, {} to {})",
        plan.name,
        plan.period.as_str(),
        fee.covers_from.to_rfc3339(),
        fee.covers_to.to_rfc3339()
    );
    let mut events = vec![Payload::ChargePosted(ChargePosted {
        account: account_id,
        amount: fee.amount,
        description: Some(description.clone()),
    })];
    if let Some((partner, wholesale)) = partner {
        events.push(Payload::ChargePosted(ChargePosted {
            account: partner.id,
            amount: wholesale,
            description: Some(format!("{description}, for customer {}", account.number)),
        }));
    }
    Ok(Decision::Accept(events))
}

/// Switch CDRs are charged to customers, so only a customer holds identifiers; within a
/// book an identifier names one account (the ledger checks the other books).
fn set_switch_identifiers(
    state: &BookState,
    account: AccountId,
    identifiers: &[crate::switch::SwitchIdentifier],
) -> Result<Decision, DomainError> {
    let acc = open_account_ref(state, account)?;
    if acc.kind != AccountKind::Customer {
        return Err(DomainError::NotACustomer(acc.label()));
    }
    let identifiers = crate::switch::validated_identifiers(identifiers)?;
    if let Some(taken) =
        identifiers.iter().find(|i| state.switch_identifiers.get(*i).is_some_and(|holder| *holder != account))
    {
        return Err(DomainError::SwitchIdentifierTaken { kind: taken.kind.as_str(), value: taken.value.clone() });
    }
    let current = state.identifiers_of.get(&account).map_or(&[][..], Vec::as_slice);
    if current == identifiers.as_slice() {
        return Ok(Decision::Accept(vec![]));
    }
    accept(Payload::SwitchIdentifiersSet(crate::event::SwitchIdentifiersSet { account, identifiers }))
}

/// A tariff's first version may start at any time (importing old CDRs needs old
/// prices); a replacement starts after the version it replaces and not before now, so
/// that every call already rated keeps the price it was rated with.
fn publish_tariff(state: &BookState, tariff: &Tariff, meta: &CommandMeta) -> Result<Decision, DomainError> {
    validate_text("name", &tariff.name)?;
    // Prices have the tariff's own limit of places (as many as its rounding may keep),
    // checked here so that it holds for every format a tariff arrives in. Not in
    // `compile`: tariffs already recorded must keep rating calls whatever they hold.
    let scale_max = crate::rating_engine::ROUNDING_DECIMALS_MAX;
    for (index, rate) in tariff.rates.iter().enumerate() {
        for (field, price) in
            [("rates.price_per_minute", rate.price_per_minute), ("rates.connect_fee", rate.connect_fee)]
        {
            price.checked_input(scale_max).map_err(|error| DomainError::InvalidField {
                field,
                reason: format!("rate {index} ({}): {error}", rate.prefix),
            })?;
        }
    }
    crate::rating_engine::CompiledTariff::compile(tariff)?;
    if let Some(current) = state.tariffs.get(&tariff.id) {
        if tariff.currency != current.currency {
            return Err(DomainError::TariffCurrencyMismatch {
                account: current.currency.as_str().to_owned(),
                tariff: tariff.currency.as_str().to_owned(),
            });
        }
        let after = current.effective_from.max(meta.recorded_at);
        if tariff.effective_from <= current.effective_from || tariff.effective_from < meta.recorded_at {
            return Err(DomainError::TariffVersionNotLater { tariff: tariff.id, after: after.to_rfc3339() });
        }
    }
    accept(Payload::TariffPublished(TariffPublished { tariff: tariff.clone() }))
}

fn accept(payload: Payload) -> Result<Decision, DomainError> {
    Ok(Decision::Accept(vec![payload]))
}

fn positive(amount: Amount) -> Result<Amount, DomainError> {
    let amount = amount.checked_input(INPUT_SCALE_MAX_DEFAULT)?;
    if !amount.is_positive() {
        return Err(DomainError::AmountNotPositive);
    }
    Ok(amount)
}

fn checked_credit_limit(limit: Amount) -> Result<Amount, DomainError> {
    let limit = limit.checked_input(INPUT_SCALE_MAX_DEFAULT).map_err(|_| DomainError::InvalidField {
        field: "credit_limit",
        reason: format!("{limit} is not a valid amount"),
    })?;
    if limit.is_negative() {
        return Err(DomainError::NegativeCreditLimit);
    }
    Ok(limit)
}

fn optional_text(field: &'static str, text: &Option<String>) -> Result<(), DomainError> {
    text.as_deref().map_or(Ok(()), |t| validate_text(field, t))
}

/// The account, if it may still take new entries (anything but closed).
fn open_account_ref(state: &BookState, id: AccountId) -> Result<&Account, DomainError> {
    let account = state.account(id)?;
    if account.status == AccountStatus::Closed {
        return Err(DomainError::AccountClosed(account.label()));
    }
    Ok(account)
}

fn require_available(account: &Account, amount: Amount) -> Result<(), DomainError> {
    let available = account.available();
    if available < amount {
        return Err(DomainError::InsufficientFunds {
            account: account.label(),
            // In the account's currency's form (17.00, not 17.0), as the API shows amounts.
            available: available.canonical(account.currency).to_string(),
            requested: amount.canonical(account.currency).to_string(),
        });
    }
    Ok(())
}

fn open_account(state: &BookState, open: &OpenAccount) -> Result<Decision, DomainError> {
    validate_identifier("number", &open.number)?;
    if open.name.trim().is_empty() {
        return Err(DomainError::InvalidField { field: "name", reason: "must not be empty".into() });
    }
    validate_text("name", &open.name)?;
    let credit_limit = checked_credit_limit(open.credit_limit)?;
    if state.accounts.contains_key(&open.account) {
        return Err(DomainError::DuplicateAccount(open.account));
    }
    if state.numbers.contains_key(&open.number) {
        return Err(DomainError::DuplicateAccountNumber(open.number.clone()));
    }
    match (open.kind, open.partner) {
        (AccountKind::Partner, Some(_)) => return Err(DomainError::PartnerOfPartner),
        (AccountKind::Partner, None) => {
            // A partner is the first event of its own book.
            if state.book != BookId::of_partner(open.account) || state.next_version != 0 {
                return Err(DomainError::InvalidField {
                    field: "account",
                    reason: "a partner opens its own book".into(),
                });
            }
        }
        (AccountKind::Customer, Some(partner_id)) => {
            if state.book != BookId::of_partner(partner_id) {
                return Err(DomainError::AccountNotFound(partner_id));
            }
            let partner = open_account_ref(state, partner_id)?;
            if partner.kind != AccountKind::Partner {
                return Err(DomainError::NotAPartner(partner.label()));
            }
        }
        (AccountKind::Customer, None) => {
            if state.book != BookId::OPERATOR {
                return Err(DomainError::InvalidField {
                    field: "partner",
                    reason: "the operator's own customers live in the operator's book".into(),
                });
            }
        }
    }
    accept(Payload::AccountOpened(AccountOpened {
        account: open.account,
        number: open.number.clone(),
        name: open.name.trim().to_string(),
        kind: open.kind,
        partner: open.partner,
        currency: open.currency,
        credit_limit,
    }))
}

fn change_status(
    state: &BookState,
    id: AccountId,
    status: AccountStatus,
    reason: &Option<String>,
) -> Result<Decision, DomainError> {
    let account = state.account(id)?;
    optional_text("reason", reason)?;
    if account.status == status {
        return Ok(Decision::Accept(vec![]));
    }
    if account.status == AccountStatus::Closed {
        return Err(DomainError::InvalidStatusChange { from: account.status.as_str(), to: status.as_str() });
    }
    if status == AccountStatus::Closed && account.kind == AccountKind::Partner {
        let open_customer = state.accounts.values().any(|a| a.partner == Some(id) && a.status != AccountStatus::Closed);
        if open_customer {
            return Err(DomainError::PartnerHasOpenCustomers(account.label()));
        }
    }
    accept(Payload::AccountStatusChanged(AccountStatusChanged {
        account: id,
        from: account.status,
        to: status,
        reason: reason.clone(),
    }))
}

fn charge_call(state: &BookState, charge: &ChargeCall) -> Result<Decision, DomainError> {
    validate_identifier("cdr.id", &charge.cdr.id)?;
    if let Some(version) = state.charged_cdrs.get(&charge.cdr.id) {
        return Ok(Decision::Repeat { first_version: *version, events: 1 });
    }
    let account = open_account_ref(state, charge.account)?;
    let customer_cost = charge.customer_cost.checked_input(u32::MAX)?;
    if customer_cost.is_negative() {
        return Err(DomainError::InvalidField { field: "cost", reason: "must not be negative".into() });
    }
    let partner_cost = match (account.partner, charge.partner_cost) {
        (Some(_), Some(cost)) if cost.is_negative() => {
            return Err(DomainError::InvalidField { field: "partner_cost", reason: "must not be negative".into() });
        }
        (Some(_), Some(cost)) => Some(cost.checked_input(u32::MAX)?),
        (Some(_), None) => {
            return Err(DomainError::InvalidField {
                field: "partner_cost",
                reason: "a partner's customer needs the partner's wholesale cost".into(),
            });
        }
        (None, Some(_)) => {
            return Err(DomainError::InvalidField {
                field: "partner_cost",
                reason: "the account has no partner".into(),
            });
        }
        (None, None) => None,
    };
    // A call that happened is always recorded, even past the credit limit.
    accept(Payload::CallCharged(CallCharged {
        account: charge.account,
        cdr: charge.cdr.clone(),
        customer_cost,
        partner: account.partner,
        partner_cost,
    }))
}

/// Appends an [`AlertRaised`] for every threshold that `events` cross: reaching the
/// credit limit and going below an account's balance threshold fire once per crossing
/// (from at or above to below), a costly call fires for each such call.
fn push_alerts(state: &BookState, events: &mut Vec<Payload>) {
    // Inline: a command moves one or two accounts' balances and rarely raises an alert,
    // and this runs for every command on the writer.
    let mut balance_changes: smallvec::SmallVec<[(AccountId, Amount); 2]> = smallvec::SmallVec::new();
    let mut alerts: smallvec::SmallVec<[(AccountId, Alert); 1]> = smallvec::SmallVec::new();
    for event in events.iter() {
        event.for_each_posting(|p| match balance_changes.iter_mut().find(|(a, _)| *a == p.account) {
            Some((_, delta)) => *delta += p.category.balance_effect(p.amount),
            None => balance_changes.push((p.account, p.category.balance_effect(p.amount))),
        });
        if let Payload::CallCharged(call) = event
            && let Some(account) = state.accounts.get(&call.account)
            && let Some(threshold) = account.alert_call_cost_above
            && call.customer_cost > threshold
        {
            alerts.push((
                call.account,
                Alert::CallCostAbove {
                    threshold,
                    cdr_id: call.cdr.id.clone(),
                    callee: call.cdr.callee.clone(),
                    billed_seconds: call.cdr.billed_seconds,
                    cost: call.customer_cost,
                },
            ));
        }
    }
    for (account_id, delta) in &balance_changes {
        let Some(account) = state.accounts.get(account_id) else { continue };
        let before = account.balance;
        let after = before + *delta;
        if !account.is_overdrawn() && (after + account.credit_limit).is_negative() {
            alerts.push((*account_id, Alert::CreditLimitReached));
        }
        if let Some(threshold) = account.alert_balance_below
            && before >= threshold
            && after < threshold
        {
            alerts.push((*account_id, Alert::BalanceBelow { threshold }));
        }
    }
    for (account_id, alert) in alerts {
        let account = &state.accounts[&account_id];
        let delta = balance_changes.iter().find(|(a, _)| *a == account_id).map_or(Amount::ZERO, |(_, d)| *d);
        events.push(Payload::AlertRaised(AlertRaised {
            account: account_id,
            alert,
            balance: account.balance + delta,
            credit_limit: account.credit_limit,
        }));
    }
}

fn move_funds(
    state: &BookState,
    from_id: AccountId,
    to_id: AccountId,
    amount: Amount,
    note: &Option<String>,
) -> Result<Decision, DomainError> {
    let amount = positive(amount)?;
    optional_text("note", note)?;
    let from = open_account_ref(state, from_id)?;
    let to = open_account_ref(state, to_id)?;
    let direction = match (from.kind, to.kind) {
        (AccountKind::Partner, AccountKind::Customer) if to.partner == Some(from.id) => MoveDirection::ToCustomer,
        (AccountKind::Customer, AccountKind::Partner) if from.partner == Some(to.id) => MoveDirection::ToPartner,
        (AccountKind::Partner, _) => {
            return Err(DomainError::NotOwnCustomer { partner: from.label(), customer: to.label() });
        }
        (_, AccountKind::Partner) => {
            return Err(DomainError::NotOwnCustomer { partner: to.label(), customer: from.label() });
        }
        (AccountKind::Customer, AccountKind::Customer) => return Err(DomainError::NotAPartner(to.label())),
    };
    if from.currency != to.currency {
        return Err(DomainError::CurrencyMismatch(from.currency.to_string(), to.currency.to_string()));
    }
    // A suspended account may be topped up, but its funds stay where they are.
    if from.status == AccountStatus::Suspended {
        return Err(DomainError::AccountSuspended(from.label()));
    }
    require_available(from, amount)?;
    accept(Payload::FundsMoved(FundsMoved { from: from_id, to: to_id, amount, direction, note: note.clone() }))
}

fn reverse_entry(state: &BookState, target: &Event, reason: &Option<String>) -> Result<Decision, DomainError> {
    optional_text("reason", reason)?;
    let envelope = &target.envelope;
    if envelope.book != state.book || envelope.version >= state.next_version {
        return Err(DomainError::EventNotFound(envelope.event_id));
    }
    if state.reversed.contains(&envelope.event_id) {
        return Err(DomainError::AlreadyReversed(envelope.event_id));
    }
    if matches!(target.payload, Payload::EntryReversed(_)) {
        return Err(DomainError::NotReversible(envelope.event_id));
    }
    let postings: Vec<Posting> =
        target.payload.postings().into_iter().map(|p| Posting { amount: -p.amount, ..p }).collect();
    if postings.is_empty() {
        return Err(DomainError::NotReversible(envelope.event_id));
    }
    accept(Payload::EntryReversed(EntryReversed {
        reversed_event: envelope.event_id,
        reversed_version: envelope.version,
        postings,
        reason: reason.clone(),
    }))
}

/// Applies one stored event to the book's state.
pub fn evolve(state: &mut BookState, event: &Event) {
    let envelope = &event.envelope;
    debug_assert_eq!(envelope.version, state.next_version, "events are applied in stream order");
    state.next_version = envelope.version + 1;
    state.last_hash = envelope.hash;
    state.last_recorded_at = state.last_recorded_at.max(envelope.recorded_at);
    if let Some(idempotency) = &envelope.idempotency {
        if let Some((subscription, period_start)) = billing::parse_fee_key(&idempotency.key)
            && let Some(plan) = state.subscriptions.get(&subscription).and_then(|s| state.plans.get(&s.plan))
        {
            let next = plan.period.next(period_start);
            let settled = state.fees_settled_until.entry(subscription).or_insert(next);
            *settled = (*settled).max(next);
        }
        state.idempotency.insert(
            idempotency.key.clone(),
            IdempotencyRecord {
                request_digest: idempotency.request_digest,
                first_version: envelope.version,
                events: envelope.command_events,
            },
        );
    }
    let payload = &event.payload;
    payload.for_each_posting(|posting| {
        if let Some(account) = state.accounts.get_mut(&posting.account) {
            account.balance += posting.category.balance_effect(posting.amount);
        }
    });
    match payload {
        Payload::AccountOpened(e) => {
            state.numbers.insert(e.number.clone(), e.account);
            state.accounts.insert(
                e.account,
                Account {
                    id: e.account,
                    number: e.number.clone(),
                    name: e.name.clone(),
                    kind: e.kind,
                    partner: e.partner,
                    currency: e.currency,
                    credit_limit: e.credit_limit,
                    status: AccountStatus::Active,
                    tariff: None,
                    balance: Amount::ZERO,
                    alert_balance_below: None,
                    alert_call_cost_above: None,
                },
            );
        }
        Payload::AccountStatusChanged(e) => {
            if let Some(account) = state.accounts.get_mut(&e.account) {
                account.status = e.to;
            }
        }
        Payload::CreditLimitChanged(e) => {
            if let Some(account) = state.accounts.get_mut(&e.account) {
                account.credit_limit = e.to;
            }
        }
        Payload::TariffAssigned(e) => {
            if let Some(account) = state.accounts.get_mut(&e.account) {
                account.tariff = e.tariff;
            }
        }
        Payload::AlertsConfigured(e) => {
            if let Some(account) = state.accounts.get_mut(&e.account) {
                account.alert_balance_below = e.balance_below;
                account.alert_call_cost_above = e.call_cost_above;
            }
        }
        Payload::CallCharged(e) => {
            state.charged_cdrs.insert(e.cdr.id.clone(), envelope.version);
        }
        Payload::EntryReversed(e) => {
            state.reversed.insert(e.reversed_event);
        }
        Payload::TariffPublished(e) => {
            state.tariffs.insert(e.tariff.id, e.tariff.clone());
        }
        Payload::SwitchIdentifiersSet(e) => {
            if let Some(old) = state.identifiers_of.insert(e.account, e.identifiers.clone()) {
                for identifier in old {
                    state.switch_identifiers.remove(&identifier);
                }
            }
            for identifier in &e.identifiers {
                state.switch_identifiers.insert(identifier.clone(), e.account);
            }
        }
        Payload::PlanPublished(e) => {
            state.plans.insert(e.plan.id, e.plan.clone());
        }
        Payload::SubscriptionStarted(e) => {
            state.subscriptions.insert(
                e.subscription,
                Subscription {
                    id: e.subscription,
                    account: e.account,
                    plan: e.plan,
                    starts_at: e.starts_at,
                    ends_at: e.ends_at,
                },
            );
        }
        Payload::SubscriptionEnded(e) => {
            if let Some(subscription) = state.subscriptions.get_mut(&e.subscription) {
                subscription.ends_at = Some(e.ends_at);
            }
        }
        Payload::TaxConfigured(e) => match (e.account, &e.tax) {
            (None, tax) => state.invoicing.tax = tax.clone(),
            (Some(account), Some(tax)) => {
                state.invoicing.tax_of.insert(account, tax.clone());
            }
            (Some(account), None) => {
                state.invoicing.tax_of.remove(&account);
            }
        },
        Payload::InvoiceIssued(e) => {
            let invoicing = &mut state.invoicing;
            invoicing.invoices_issued = invoicing.invoices_issued.max(e.sequence);
            invoicing.by_period.insert((e.account, e.period_from), e.invoice);
            invoicing.invoices.insert(
                e.invoice,
                InvoiceRecord {
                    number: e.number.clone(),
                    version: envelope.version,
                    account: e.account,
                    account_number: e.account_number.clone(),
                    account_name: e.account_name.clone(),
                    currency: e.currency,
                    period_from: e.period_from,
                    period_to: e.period_to,
                    tax: e.tax.clone(),
                    figures: e.figures,
                    totals: e.totals,
                },
            );
        }
        Payload::CreditNoteIssued(e) => {
            let invoicing = &mut state.invoicing;
            invoicing.credit_notes_issued = invoicing.credit_notes_issued.max(e.sequence);
            if let Some(record) = invoicing.invoices.get_mut(&e.invoice) {
                record.figures = record.figures.plus(&e.figures);
                record.totals = record.totals.plus(&e.totals);
            }
        }
        Payload::PaymentReceived(_)
        | Payload::AdjustmentPosted(_)
        | Payload::ChargePosted(_)
        | Payload::FundsMoved(_)
        | Payload::AlertRaised(_) => {}
    }
}

/// Turns accepted payloads into events: gives each its envelope, links it into the
/// book's hash chain with `hash_event`, and applies it to `state`. The first event of
/// the command carries its idempotency key.
pub fn seal(
    state: &mut BookState,
    payloads: Vec<Payload>,
    meta: &CommandMeta,
    mut hash_event: impl FnMut(&Envelope, &Payload) -> Hash,
) -> Vec<Event> {
    let mut events = Vec::with_capacity(payloads.len());
    seal_into(state, payloads, meta, &mut events, |mut envelope, payload| {
        envelope.hash = hash_event(&envelope, &payload);
        Event { envelope, payload }
    });
    events
}

/// [`seal`], each event built by `make` (from its envelope, whose `hash` it must set,
/// and its payload) straight into `out`: a writer that keeps each event beside its
/// encoding builds both in one place rather than moving every event again.
pub fn seal_into<T: AsRef<Event>>(
    state: &mut BookState,
    payloads: Vec<Payload>,
    meta: &CommandMeta,
    out: &mut Vec<T>,
    mut make: impl FnMut(Envelope, Payload) -> T,
) {
    let command_events = payloads.len() as u32;
    out.reserve(payloads.len());
    // A clock that stepped back does not take ledger time back with it.
    let recorded_at = meta.recorded_at.max(state.last_recorded_at);
    for (index, payload) in payloads.into_iter().enumerate() {
        let envelope = Envelope {
            event_id: EventId::recorded_at(recorded_at),
            book: state.book,
            version: state.next_version,
            occurred_at: meta.occurred_at,
            recorded_at,
            actor: meta.actor.clone(),
            idempotency: if index == 0 { meta.idempotency.clone() } else { None },
            command_events,
            prev_hash: state.last_hash,
            hash: GENESIS_HASH,
        };
        out.push(make(envelope, payload));
        let sealed = out.last().expect("just pushed").as_ref();
        evolve(state, sealed);
    }
}
