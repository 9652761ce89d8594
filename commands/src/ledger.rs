//! The write side's front door: routes each command to its book's writer, starting the
//! writer (and loading the book) on first use, and keeps the ledger-wide account index
//! (number -> account -> book) that routing needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use domain::cdr::{CdrInput, RatingParty, rate_call};
use domain::rating::Tariff;
use domain::switch::{CdrIdentifiers, SwitchIdentifier};
use domain::switch_cdr::NativeCdr;
use domain::{
    AccountId, AccountKind, AccountLabel, Amount, AssignedTariff, BookId, BookState, ChargeCall, Command, CommandMeta,
    Currency, DomainError, OpenAccount, Payload, RecordedEvent, TariffId,
};
use eventlog::{EventStore, READ_EVENTS_MAX, StoreError};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use crate::billing::BillingCatalog;
use crate::error::CommandError;
use crate::tariffs::{TariffCatalog, TariffHistory};
use crate::writer::{self, BookHandle, CommandOutcome, CommitHook};

/// Where an account lives: enough to route a command and to check a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRef {
    pub id: AccountId,
    pub number: String,
    pub kind: AccountKind,
    pub partner: Option<AccountId>,
    pub book: BookId,
    pub currency: Currency,
    /// The tariff that rates the account's calls.
    pub tariff: Option<TariffId>,
    /// Alert when the balance goes below this.
    pub alert_balance_below: Option<Amount>,
    /// Alert for each call costing more than this.
    pub alert_call_cost_above: Option<Amount>,
}

impl AccountRef {
    /// How messages name the account.
    pub fn label(&self) -> AccountLabel {
        AccountLabel { id: self.id, number: self.number.clone() }
    }
}

#[derive(Default)]
struct AccountIndex {
    by_id: HashMap<AccountId, AccountRef>,
    id_of: HashMap<String, AccountId>,
    /// Switch identifiers, ledger-wide: a switch's CDR names no book.
    by_identifier: HashMap<SwitchIdentifier, AccountId>,
    identifiers_of: HashMap<AccountId, Vec<SwitchIdentifier>>,
}

impl AccountIndex {
    fn apply(&mut self, events: &[RecordedEvent]) {
        for recorded in events {
            match &recorded.event.payload {
                Payload::AccountOpened(opened) => {
                    self.id_of.insert(opened.number.clone(), opened.account);
                    self.by_id.insert(
                        opened.account,
                        AccountRef {
                            id: opened.account,
                            number: opened.number.clone(),
                            kind: opened.kind,
                            partner: opened.partner,
                            book: recorded.event.envelope.book,
                            currency: opened.currency,
                            tariff: None,
                            alert_balance_below: None,
                            alert_call_cost_above: None,
                        },
                    );
                }
                Payload::TariffAssigned(assigned) => {
                    if let Some(account) = self.by_id.get_mut(&assigned.account) {
                        account.tariff = assigned.tariff;
                    }
                }
                Payload::SwitchIdentifiersSet(set) => {
                    if let Some(old) = self.identifiers_of.insert(set.account, set.identifiers.clone()) {
                        for identifier in old {
                            self.by_identifier.remove(&identifier);
                        }
                    }
                    for identifier in &set.identifiers {
                        self.by_identifier.insert(identifier.clone(), set.account);
                    }
                }
                Payload::AlertsConfigured(configured) => {
                    if let Some(account) = self.by_id.get_mut(&configured.account) {
                        account.alert_balance_below = configured.balance_below;
                        account.alert_call_cost_above = configured.call_cost_above;
                    }
                }
                _ => {}
            }
        }
    }
}

type WriterSlot = Arc<OnceCell<(BookHandle, Arc<Mutex<Option<JoinHandle<()>>>>)>>;

pub struct Ledger {
    store: Arc<dyn EventStore>,
    index: Arc<RwLock<AccountIndex>>,
    tariffs: Arc<RwLock<TariffCatalog>>,
    billing: Arc<RwLock<BillingCatalog>>,
    writers: Mutex<HashMap<BookId, WriterSlot>>,
    /// Account numbers are unique ledger-wide, across books: registrations take turns.
    registration: tokio::sync::Mutex<()>,
}

impl Ledger {
    /// Opens the ledger over `store`, rebuilding the account index from the log.
    pub async fn open(store: Arc<dyn EventStore>) -> Result<Self, CommandError> {
        let mut index = AccountIndex::default();
        let mut tariffs = TariffCatalog::default();
        let mut billing = BillingCatalog::default();
        let mut from = 1;
        loop {
            let events = store.read_all(from, READ_EVENTS_MAX).await?;
            let Some(last) = events.last() else { break };
            from = last.position + 1;
            index.apply(&events);
            tariffs.apply(&events);
            billing.apply(&events);
        }
        Ok(Ledger {
            store,
            index: Arc::new(RwLock::new(index)),
            tariffs: Arc::new(RwLock::new(tariffs)),
            billing: Arc::new(RwLock::new(billing)),
            writers: Mutex::new(HashMap::new()),
            registration: tokio::sync::Mutex::new(()),
        })
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    pub fn account(&self, number: &str) -> Option<AccountRef> {
        let index = self.index.read().expect("index lock");
        index.id_of.get(number).and_then(|id| index.by_id.get(id)).cloned()
    }

    pub fn account_by_id(&self, id: AccountId) -> Option<AccountRef> {
        self.index.read().expect("index lock").by_id.get(&id).cloned()
    }

    /// How many accounts the ledger holds.
    pub fn account_count(&self) -> usize {
        self.index.read().expect("index lock").by_id.len()
    }

    /// The identifiers the switches know `account` by, sorted.
    pub fn switch_identifiers(&self, account: AccountId) -> Vec<SwitchIdentifier> {
        self.index.read().expect("index lock").identifiers_of.get(&account).cloned().unwrap_or_default()
    }

    /// Replaces the identifiers the switches know `account` by. An identifier names one
    /// account ledger-wide: its book checks its own accounts, and assignments take turns
    /// with each other (and with registrations) so that two books cannot take one
    /// identifier at once.
    pub async fn set_switch_identifiers(
        &self,
        account: AccountId,
        identifiers: Vec<SwitchIdentifier>,
        meta: CommandMeta,
    ) -> Result<CommandOutcome, CommandError> {
        let _turn = self.registration.lock().await;
        {
            let index = self.index.read().expect("index lock");
            let checked = domain::switch::validated_identifiers(&identifiers)?;
            if let Some(taken) =
                checked.iter().find(|i| index.by_identifier.get(*i).is_some_and(|holder| *holder != account))
            {
                return Err(DomainError::SwitchIdentifierTaken {
                    kind: taken.kind.as_str(),
                    value: taken.value.clone(),
                }
                .into());
            }
        }
        self.execute(Command::SetSwitchIdentifiers { account, identifiers }, meta).await
    }

    /// The account a switch's CDR is tied to: the first of its identifiers (account code,
    /// then caller id, then trunk) that an account holds.
    pub fn identify(&self, identifiers: &CdrIdentifiers) -> Result<AccountRef, CommandError> {
        let index = self.index.read().expect("index lock");
        identifiers
            .candidates()
            .iter()
            .find_map(|candidate| index.by_identifier.get(candidate).and_then(|id| index.by_id.get(id)))
            .cloned()
            .ok_or_else(|| identifiers.unmatched().into())
    }

    /// A switch's CDR as a CDR of the account it is tied to.
    pub fn native_input(&self, cdr: NativeCdr) -> Result<CdrInput, CommandError> {
        let account = self.identify(&cdr.identifiers)?;
        Ok(cdr.into_input(&account.number)?)
    }

    /// Opens an account in the right book: a partner opens its own, a partner's
    /// customer goes to the partner's, the operator's customers to the operator's.
    pub async fn open_account(&self, open: OpenAccount, meta: CommandMeta) -> Result<CommandOutcome, CommandError> {
        let _turn = self.registration.lock().await;
        if let Some(existing) = self.account(&open.number) {
            if meta.idempotency.is_none() {
                return Err(DomainError::DuplicateAccountNumber(open.number).into());
            }
            // A retried registration carries a fresh account id but the same key: the
            // book that holds the number answers with the first result, or refuses.
            return self.execute_in(existing.book, Command::OpenAccount(open), meta).await;
        }
        let book = match (open.kind, open.partner) {
            (AccountKind::Partner, _) => BookId::of_partner(open.account),
            (AccountKind::Customer, Some(partner)) => {
                let partner_ref = self.account_by_id(partner).ok_or(DomainError::AccountNotFound(partner))?;
                partner_ref.book
            }
            (AccountKind::Customer, None) => BookId::OPERATOR,
        };
        self.execute_in(book, Command::OpenAccount(open), meta).await
    }

    /// Runs a command on the book of the accounts it names. Accounts of different books
    /// can never meet in one command.
    pub async fn execute(&self, command: Command, meta: CommandMeta) -> Result<CommandOutcome, CommandError> {
        if let Command::OpenAccount(open) = command {
            return self.open_account(open, meta).await;
        }
        let book = self.book_of_command(&command)?;
        self.execute_in(book, command, meta).await
    }

    fn book_of_command(&self, command: &Command) -> Result<BookId, CommandError> {
        if let Command::ReverseEntry { target, .. } = command {
            return Ok(target.envelope.book);
        }
        let accounts = command.affected_accounts();
        let refs: Vec<AccountRef> = accounts
            .iter()
            .map(|id| self.account_by_id(*id).ok_or(DomainError::AccountNotFound(*id)))
            .collect::<Result<_, _>>()?;
        let first =
            refs.first().ok_or(DomainError::InvalidField { field: "account", reason: "no account named".into() })?;
        if let Some(other) = refs.iter().find(|r| r.book != first.book) {
            let (partner, customer) = match first.kind {
                AccountKind::Partner => (first.label(), other.label()),
                AccountKind::Customer => (other.label(), first.label()),
            };
            return Err(DomainError::NotOwnCustomer { partner, customer }.into());
        }
        Ok(first.book)
    }

    /// The plans and subscriptions of every book, as far as the writers have committed.
    pub fn billing_catalog(&self) -> std::sync::RwLockReadGuard<'_, BillingCatalog> {
        self.billing.read().expect("billing lock")
    }

    /// A tariff's history, if it was published.
    pub fn tariff(&self, id: TariffId) -> Option<TariffHistory> {
        self.tariffs.read().expect("tariffs lock").get(id).cloned()
    }

    /// Every published tariff that `keep` keeps.
    pub fn tariffs(&self, keep: impl Fn(&TariffHistory) -> bool) -> Vec<TariffHistory> {
        self.tariffs.read().expect("tariffs lock").iter().filter(|t| keep(t)).cloned().collect()
    }

    /// Publishes a tariff in `book`, or a new version of it in the book that published
    /// the first.
    pub async fn publish_tariff(
        &self,
        book: BookId,
        tariff: Tariff,
        meta: CommandMeta,
    ) -> Result<CommandOutcome, CommandError> {
        let book = self.tariff(tariff.id).map_or(book, |history| history.book);
        self.execute_in(book, Command::PublishTariff(Box::new(tariff)), meta).await
    }

    /// Assigns a published tariff to an account (or removes its tariff).
    pub async fn assign_tariff(
        &self,
        account: AccountId,
        tariff: Option<TariffId>,
        meta: CommandMeta,
    ) -> Result<CommandOutcome, CommandError> {
        let tariff = tariff
            .map(|id| {
                let history = self.tariff(id).ok_or(DomainError::TariffNotFound(id))?;
                Ok::<_, DomainError>(AssignedTariff { id, book: history.book, currency: history.current().currency })
            })
            .transpose()?;
        self.execute(Command::AssignTariff { account, tariff }, meta).await
    }

    /// Rates a CDR with the tariffs in force when the call started: the customer's for
    /// its cost, its partner's for the partner's wholesale cost.
    pub fn rate(&self, cdr: &CdrInput) -> Result<ChargeCall, CommandError> {
        self.rate_in_book(cdr).map(|(_, charge)| charge)
    }

    /// [`Ledger::rate`], with the book that charges the call: the customer's (its partner
    /// is always in the same book), so a bulk caller routes without a second lookup.
    pub(crate) fn rate_in_book(&self, cdr: &CdrInput) -> Result<(BookId, ChargeCall), CommandError> {
        let customer = self.account(&cdr.account).ok_or_else(|| CommandError::UnknownAccount(cdr.account.clone()))?;
        if customer.kind != AccountKind::Customer {
            return Err(DomainError::NotACustomer(customer.label()).into());
        }
        let partner = customer.partner.map(|id| self.account_by_id(id).ok_or(DomainError::AccountNotFound(id)));
        let partner = partner.transpose()?;
        let catalog = self.tariffs.read().expect("tariffs lock");
        let in_force = |account: &AccountRef| {
            account.tariff.and_then(|id| catalog.get(id)).and_then(|history| history.in_force(cdr.start))
        };
        let party = |account: &AccountRef| RatingParty {
            account: account.label(),
            currency: account.currency,
            tariff: in_force(account).map(|v| &**v),
        };
        let partner_party = partner.as_ref().map(party);
        Ok((customer.book, rate_call(cdr, &party(&customer), partner_party.as_ref())?))
    }

    /// Rates and charges one CDR. A CDR id the book has already charged is a repeat:
    /// the outcome of its first charge, marked `repeated`.
    /// The charge's business time is the call's start, whenever the CDR arrives: the
    /// statement of a period and the CDR list of that period (by start) must agree.
    pub async fn charge_cdr(&self, cdr: &CdrInput, meta: CommandMeta) -> Result<CommandOutcome, CommandError> {
        let charge = match self.rate(cdr) {
            Ok(charge) => charge,
            Err(refusal) => self.first_charge(cdr).await?.ok_or(refusal)?,
        };
        let meta = CommandMeta { occurred_at: cdr.start, ..meta };
        self.execute(Command::ChargeCall(charge), meta).await
    }

    /// The first charge of a CDR id its book has already charged, as a command the book
    /// will answer as a repeat. A CDR that cannot be rated now (its tariff was unassigned
    /// since, say) may still be a duplicate, and a duplicate is what its sender must hear:
    /// a rerun of an old file is not a list of rating failures.
    pub async fn first_charge(&self, cdr: &CdrInput) -> Result<Option<ChargeCall>, CommandError> {
        let Some(customer) = self.account(&cdr.account) else { return Ok(None) };
        let Some(first) = self.charged_cdr(customer.book, &cdr.id).await? else { return Ok(None) };
        let Payload::CallCharged(first) = first.event.payload else { return Ok(None) };
        Ok(Some(ChargeCall {
            account: first.account,
            cdr: first.cdr,
            customer_cost: first.customer_cost,
            partner_cost: first.partner_cost,
        }))
    }

    /// Reverses the event at `position` of the global log.
    pub async fn reverse(
        &self,
        position: u64,
        reason: Option<String>,
        meta: CommandMeta,
    ) -> Result<CommandOutcome, CommandError> {
        let found = match self.store.read_all(position, 1).await {
            // KurrentDB cannot start a read at a position it never handed out: the same
            // answer as sled's empty read.
            Err(StoreError::InvalidPosition(_)) => Vec::new(),
            other => other?,
        };
        let target =
            found.into_iter().find(|e| e.position == position).ok_or(CommandError::UnknownPosition(position))?;
        let command = Command::ReverseEntry { target: Box::new(target.event), reason };
        self.execute(command, meta).await
    }

    pub async fn execute_in(
        &self,
        book: BookId,
        command: Command,
        meta: CommandMeta,
    ) -> Result<CommandOutcome, CommandError> {
        let handle = self.writer(book).await?;
        handle.submit(command, meta).await
    }

    /// The book's state as its writer holds it now (after everything queued before).
    pub async fn book_state(&self, book: BookId) -> Result<BookState, CommandError> {
        self.writer(book).await?.snapshot().await
    }

    /// The event that charged CDR `id` in `book`, if any. The book's state maps every
    /// charged CDR id to its event (it needs them to refuse duplicates), so this costs a
    /// message to the writer and one read of the log, and the read models keep no index
    /// of their own (one key per CDR was most of their writes).
    pub async fn charged_cdr(&self, book: BookId, id: &str) -> Result<Option<RecordedEvent>, CommandError> {
        let Some(version) = self.writer(book).await?.find_cdr(id).await? else { return Ok(None) };
        Ok(self.store.read_stream(book, version, 1).await?.into_iter().next())
    }

    pub(crate) async fn writer(&self, book: BookId) -> Result<BookHandle, CommandError> {
        let slot = {
            let mut writers = self.writers.lock().expect("writers lock");
            writers.entry(book).or_default().clone()
        };
        let (handle, _) = slot
            .get_or_try_init(|| async {
                let state = writer::load_book(&*self.store, book).await?;
                let (index, tariffs, billing) = (self.index.clone(), self.tariffs.clone(), self.billing.clone());
                let hook: CommitHook = Arc::new(move |events| {
                    index.write().expect("index lock").apply(events);
                    tariffs.write().expect("tariffs lock").apply(events);
                    billing.write().expect("billing lock").apply(events);
                });
                let (handle, task) = writer::spawn_writer(self.store.clone(), state, Some(hook));
                Ok::<_, CommandError>((handle, Arc::new(Mutex::new(Some(task)))))
            })
            .await?;
        Ok(handle.clone())
    }

    /// Stops taking commands, lets every writer answer what it has queued, and waits.
    pub async fn shutdown(&self) {
        let slots: Vec<WriterSlot> = self.writers.lock().expect("writers lock").drain().map(|(_, s)| s).collect();
        let mut tasks = Vec::new();
        for slot in slots {
            if let Some((_, task)) = slot.get()
                && let Some(task) = task.lock().expect("task lock").take()
            {
                tasks.push(task);
            }
        }
        // The handles in the slots are dropped with them; writers drain and stop.
        for task in tasks {
            let _ = task.await;
        }
    }
}
