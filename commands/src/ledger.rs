//! The write side's front door: routes each command to its book's writer, starting the
//! writer (and loading the book) on first use, and keeps the ledger-wide catalogs that
//! routing, rating and billing need: the account index (number -> account -> book), the
//! tariffs, the plans and subscriptions.
//!
//! The catalogs start from their snapshot (saved with the global position it reflects)
//! and read only the log after it. The writers' commit hooks keep the live catalogs
//! current in the order books become durable, which is not the log's order; an
//! [`OrderedFold`] folds the same batches in position order, holding a batch that
//! arrives ahead of a gap until the gap fills, and is what the snapshot saves.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

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
use crate::invoices::InvoiceCatalog;
use crate::snapshot::{LEDGER_SNAPSHOT_NAME, SavedLedger, decode_ledger, encode_ledger};
use crate::tariffs::{TariffCatalog, TariffHistory};
use crate::writer::{self, BookHandle, CommandOutcome, CommitHook, Shard, WriterOptions};

/// The ordered fold saves the ledger's snapshot once this many events are folded since
/// the last save (checked every [`LEDGER_SNAPSHOT_CHECK_INTERVAL`]): a start after a
/// crash reads about this many events of the log, plus what one interval adds.
pub const LEDGER_SNAPSHOT_EVERY_EVENTS: u64 = 65_536;
/// How often the ledger looks whether its snapshot is due.
pub const LEDGER_SNAPSHOT_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Where an account lives: enough to route a command and to check a tenant.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct AccountIndex {
    by_id: HashMap<AccountId, AccountRef>,
    id_of: HashMap<String, AccountId>,
    /// Switch identifiers, ledger-wide: a switch's CDR names no book.
    by_identifier: HashMap<SwitchIdentifier, AccountId>,
    identifiers_of: HashMap<AccountId, Vec<SwitchIdentifier>>,
}

impl AccountIndex {
    fn apply<'a>(&mut self, events: impl IntoIterator<Item = &'a RecordedEvent>) {
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

    /// Whether `event` changes the index.
    fn concerns(event: &domain::Event) -> bool {
        matches!(
            event.payload,
            Payload::AccountOpened(_)
                | Payload::TariffAssigned(_)
                | Payload::SwitchIdentifiersSet(_)
                | Payload::AlertsConfigured(_)
        )
    }
}

/// Whether `event` changes one of the ledger-wide catalogs. Only such events reach them
/// (the live ones and the ordered fold alike), so an event a catalog learns to use must
/// be named here, or the catalog never sees it.
fn concerns_catalogs(event: &domain::Event) -> bool {
    AccountIndex::concerns(event)
        || matches!(event.payload, Payload::TariffPublished(_))
        || BillingCatalog::concerns(event)
        || InvoiceCatalog::concerns(event)
}

/// The ledger-wide catalogs, folded together.
#[derive(Clone, Default)]
struct Catalogs {
    index: AccountIndex,
    tariffs: TariffCatalog,
    billing: BillingCatalog,
    invoices: InvoiceCatalog,
}

impl Catalogs {
    fn apply<'a>(&mut self, events: impl IntoIterator<Item = &'a RecordedEvent>) {
        let events: Vec<&RecordedEvent> = events.into_iter().filter(|e| concerns_catalogs(&e.event)).collect();
        self.index.apply(events.iter().copied());
        self.tariffs.apply(events.iter().copied());
        self.billing.apply(events.iter().copied());
        self.invoices.apply(events.iter().copied());
    }
}

/// A batch that arrived ahead of a gap: the position and hash of its last event, and its
/// events that concern the catalogs.
struct WaitingBatch {
    last: (u64, domain::Hash),
    events: Vec<RecordedEvent>,
}

/// The catalogs folded in the log's order, for the ledger's snapshot. Every durable batch
/// comes here (from the writers' commit hooks, in the order books become durable); a
/// batch that starts past `next_position` waits, with only the events that concern the
/// catalogs, until the batches before it have come. Relies on the store's consecutive
/// positions ([`EventStore::keeps_snapshots`]).
struct OrderedFold {
    catalogs: Catalogs,
    /// Every event before it is folded in.
    next_position: u64,
    /// The last event folded in, to tell the snapshot's log from another.
    last: Option<(u64, domain::Hash)>,
    /// Batches that arrived ahead of a gap, by first position.
    ahead: BTreeMap<u64, WaitingBatch>,
    /// Events folded in since the last save.
    unsaved_events: u64,
}

impl OrderedFold {
    fn add(&mut self, events: &[RecordedEvent]) {
        let (Some(first), Some(last)) = (events.first(), events.last()) else { return };
        if first.position < self.next_position {
            // Folded at open already (a store never hands out a position twice): folding
            // it again would count its events twice.
            tracing::warn!(position = first.position, "a batch at a position already folded; not folded again");
            return;
        }
        let last = (last.position, last.event.envelope.hash);
        if first.position == self.next_position && self.ahead.is_empty() {
            self.catalogs.apply(events);
            self.advance(last);
        } else {
            let events = events.iter().filter(|e| concerns_catalogs(&e.event)).cloned().collect();
            self.ahead.insert(first.position, WaitingBatch { last, events });
        }
        while let Some(entry) = self.ahead.first_entry()
            && *entry.key() == self.next_position
        {
            let waiting = entry.remove();
            self.catalogs.apply(&waiting.events);
            self.advance(waiting.last);
        }
    }

    fn advance(&mut self, last: (u64, domain::Hash)) {
        self.unsaved_events += last.0 + 1 - self.next_position;
        self.next_position = last.0 + 1;
        self.last = Some(last);
    }

    /// The snapshot of what is folded, if `min_unsaved` events or more are not saved yet
    /// (and anything at all is).
    fn snapshot_if(&mut self, min_unsaved: u64) -> Option<Vec<u8>> {
        if self.unsaved_events == 0 || self.unsaved_events < min_unsaved {
            return None;
        }
        let saved = SavedLedger {
            next_position: self.next_position,
            last: self.last,
            index: &self.catalogs.index,
            tariffs: self.catalogs.tariffs.published(),
            billing: &self.catalogs.billing,
            invoices: &self.catalogs.invoices,
        };
        let bytes = encode_ledger(&saved);
        self.unsaved_events = 0;
        Some(bytes)
    }
}

/// The catalogs of the ledger's snapshot, if there is one that fits this log: the next
/// position to read from, and the last event it folded in.
async fn saved_catalogs(store: &dyn EventStore) -> Option<(Catalogs, u64, Option<(u64, domain::Hash)>)> {
    if !store.keeps_snapshots() {
        return None;
    }
    let bytes = match store.get_snapshot(LEDGER_SNAPSHOT_NAME).await {
        Ok(bytes) => bytes?,
        Err(error) => {
            tracing::warn!(%error, "cannot read the ledger's snapshot; reading the whole log");
            return None;
        }
    };
    let Some(saved) = decode_ledger::<AccountIndex, BillingCatalog, InvoiceCatalog>(&bytes) else {
        tracing::warn!("the ledger's snapshot is of another format or damaged; reading the whole log");
        return None;
    };
    if let Some((position, hash)) = saved.last {
        let found = store.read_all(position, 1).await.ok()?;
        if !found.first().is_some_and(|e| e.position == position && e.event.envelope.hash == hash) {
            tracing::warn!("the ledger's snapshot does not fit the log; reading the whole log");
            return None;
        }
    }
    let catalogs = Catalogs {
        index: saved.index,
        tariffs: TariffCatalog::from_published(saved.tariffs),
        billing: saved.billing,
        invoices: saved.invoices,
    };
    Some((catalogs, saved.next_position, saved.last))
}

type WriterSlot = Arc<OnceCell<BookHandle>>;

enum Shards {
    NotStarted,
    Running(Vec<Shard>),
    /// Shut down: no more commands.
    Stopped,
}

pub struct Ledger {
    store: Arc<dyn EventStore>,
    index: Arc<RwLock<AccountIndex>>,
    tariffs: Arc<RwLock<TariffCatalog>>,
    billing: Arc<RwLock<BillingCatalog>>,
    pub(crate) invoices: Arc<RwLock<InvoiceCatalog>>,
    writers: RwLock<HashMap<BookId, WriterSlot>>,
    /// The writer tasks the books are spread over, started with the first book a
    /// command needs: a ledger that only reads (a check, a replay) holds no task that
    /// keeps the store open after it is dropped.
    shards: Mutex<Shards>,
    commit_hook: CommitHook,
    writer_options: WriterOptions,
    /// Account numbers are unique ledger-wide, across books: registrations take turns.
    registration: tokio::sync::Mutex<()>,
    /// For a store that keeps snapshots: the catalogs in the log's order, and the task
    /// that saves them.
    ordered: Option<Arc<Mutex<OrderedFold>>>,
    saver: Option<JoinHandle<()>>,
    /// Saves take turns, so that an older snapshot never lands over a newer one.
    saving: Arc<tokio::sync::Mutex<()>>,
    /// Events read from the log at open (those after the ledger's snapshot).
    opened_with_events: u64,
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if let Some(saver) = &self.saver {
            saver.abort();
        }
    }
}

impl Ledger {
    /// Opens the ledger over `store`: the catalogs from their snapshot, then the log
    /// after it.
    pub async fn open(store: Arc<dyn EventStore>) -> Result<Self, CommandError> {
        Self::open_with(store, WriterOptions::default()).await
    }

    /// [`Ledger::open`], with its book writers' options.
    pub async fn open_with(store: Arc<dyn EventStore>, writer_options: WriterOptions) -> Result<Self, CommandError> {
        let (mut catalogs, mut from, mut last) =
            saved_catalogs(&*store).await.unwrap_or((Catalogs::default(), 1, None));
        let mut read = 0u64;
        loop {
            let events = store.read_all(from, READ_EVENTS_MAX).await?;
            let Some(tail) = events.last() else { break };
            from = tail.position + 1;
            last = Some((tail.position, tail.event.envelope.hash));
            read += events.len() as u64;
            catalogs.apply(&events);
        }
        let ordered = store.keeps_snapshots().then(|| {
            Arc::new(Mutex::new(OrderedFold {
                catalogs: catalogs.clone(),
                next_position: from,
                last,
                ahead: BTreeMap::new(),
                unsaved_events: read,
            }))
        });
        let saving = Arc::new(tokio::sync::Mutex::new(()));
        let saver = ordered.as_ref().map(|ordered| {
            tokio::spawn(save_when_due(Arc::downgrade(ordered), Arc::downgrade(&store), saving.clone()))
        });
        let index = Arc::new(RwLock::new(catalogs.index));
        let tariffs = Arc::new(RwLock::new(catalogs.tariffs));
        let billing = Arc::new(RwLock::new(catalogs.billing));
        let invoices = Arc::new(RwLock::new(catalogs.invoices));
        let catalogs = LiveCatalogs {
            index: index.clone(),
            tariffs: tariffs.clone(),
            billing: billing.clone(),
            invoices: invoices.clone(),
        };
        let commit_hook = commit_hook(catalogs, ordered.clone());
        Ok(Ledger {
            store,
            index,
            tariffs,
            billing,
            invoices,
            writers: RwLock::new(HashMap::new()),
            shards: Mutex::new(Shards::NotStarted),
            commit_hook,
            writer_options,
            registration: tokio::sync::Mutex::new(()),
            ordered,
            saver,
            saving,
            opened_with_events: read,
        })
    }

    /// How many events the open read from the log (those after the ledger's snapshot).
    pub fn opened_with_events(&self) -> u64 {
        self.opened_with_events
    }

    /// Saves the ledger's snapshot now, if anything is new since the last one, so that the
    /// next start reads only what comes after.
    pub async fn save_snapshot(&self) -> Result<(), CommandError> {
        let Some(ordered) = &self.ordered else { return Ok(()) };
        let _turn = self.saving.lock().await;
        let bytes = ordered.lock().expect("ordered fold lock").snapshot_if(1);
        if let Some(bytes) = bytes {
            self.store.put_snapshot(LEDGER_SNAPSHOT_NAME, bytes).await?;
        }
        Ok(())
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
        // Looked up in place, not cloned: this runs for every command.
        let index = self.index.read().expect("index lock");
        let found = |id: &AccountId| index.by_id.get(id).ok_or(DomainError::AccountNotFound(*id));
        let first = found(
            accounts
                .first()
                .ok_or(DomainError::InvalidField { field: "account", reason: "no account named".into() })?,
        )?;
        // Every account must exist before a book mismatch is reported.
        let mut in_another_book = None;
        for id in &accounts[1..] {
            let account = found(id)?;
            if account.book != first.book {
                in_another_book.get_or_insert(account);
            }
        }
        if let Some(other) = in_another_book {
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
        // A loaded book's command is queued under a read lock, without cloning its handle:
        // on every command, a mutex and the handle's reference counts were shared by all
        // the callers' cores.
        let queued = {
            let writers = self.writers.read().expect("writers lock");
            match writers.get(&book).and_then(|slot| slot.get()) {
                Some(handle) => Ok(handle.queue(command, meta)),
                None => Err((command, meta)),
            }
        };
        let answer = match queued {
            Ok(answer) => answer?,
            Err((command, meta)) => self.writer(book).await?.queue(command, meta)?,
        };
        answer.await.map_err(|_| CommandError::ShuttingDown)?
    }

    /// The book's state as its writer holds it now (after everything queued before). Its
    /// `charged_cdrs` and `idempotency` hold the recent ids only; older ones are in the
    /// book's id runs ([`crate::ids`]).
    pub async fn book_state(&self, book: BookId) -> Result<BookState, CommandError> {
        self.writer(book).await?.snapshot().await
    }

    /// The event that charged CDR `id` in `book`, if any. The book's writer finds every
    /// charged CDR id (it needs them to refuse duplicates: recent ones in memory, older
    /// ones in its id runs), so this costs a message to the writer and one read of the log.
    pub async fn charged_cdr(&self, book: BookId, id: &str) -> Result<Option<RecordedEvent>, CommandError> {
        let Some(version) = self.writer(book).await?.find_cdr(id).await? else { return Ok(None) };
        Ok(self.store.read_stream(book, version, 1).await?.into_iter().next())
    }

    pub(crate) async fn writer(&self, book: BookId) -> Result<BookHandle, CommandError> {
        let slot = {
            let mut writers = self.writers.write().expect("writers lock");
            writers.entry(book).or_default().clone()
        };
        let handle = slot
            .get_or_try_init(|| async {
                let queue = {
                    let mut shards = self.shards.lock().expect("shards lock");
                    if let Shards::NotStarted = *shards {
                        let started = (0..self.writer_options.shards.max(1))
                            .map(|_| {
                                Shard::spawn(self.store.clone(), Some(self.commit_hook.clone()), self.writer_options)
                            })
                            .collect();
                        *shards = Shards::Running(started);
                    }
                    let Shards::Running(running) = &*shards else { return Err(CommandError::ShuttingDown) };
                    running[writer::shard_of(book, running.len())].queue.clone()
                };
                let state = writer::load_book(&*self.store, book).await?;
                queue.adopt(state).await
            })
            .await?;
        Ok(handle.clone())
    }

    /// Stops taking commands, lets every writer answer what it has queued, and waits.
    pub async fn shutdown(&self) {
        self.writers.write().expect("writers lock").clear();
        let shards = std::mem::replace(&mut *self.shards.lock().expect("shards lock"), Shards::Stopped);
        // With their queues (and the books' handles) dropped, writers drain and stop.
        let running = match shards {
            Shards::Running(running) => running,
            Shards::NotStarted | Shards::Stopped => Vec::new(),
        };
        let tasks: Vec<JoinHandle<()>> = running.into_iter().map(|shard| shard.task).collect();
        for task in tasks {
            let _ = task.await;
        }
        // Every batch is durable and folded now: the next start reads nothing of the log.
        if let Err(error) = self.save_snapshot().await {
            tracing::warn!(%error, "cannot save the ledger's snapshot");
        }
    }
}

/// The catalogs the writers keep current, shared with the ledger that reads them.
struct LiveCatalogs {
    index: Arc<RwLock<AccountIndex>>,
    tariffs: Arc<RwLock<TariffCatalog>>,
    billing: Arc<RwLock<BillingCatalog>>,
    invoices: Arc<RwLock<InvoiceCatalog>>,
}

/// Called by the writers with every durable batch: keeps the live catalogs current, and
/// hands the batch to the ordered fold that the ledger's snapshot is taken from.
fn commit_hook(catalogs: LiveCatalogs, ordered: Option<Arc<Mutex<OrderedFold>>>) -> CommitHook {
    Arc::new(move |events| {
        let concerned: Vec<&RecordedEvent> = events.iter().filter(|e| concerns_catalogs(&e.event)).collect();
        if !concerned.is_empty() {
            catalogs.index.write().expect("index lock").apply(concerned.iter().copied());
            catalogs.tariffs.write().expect("tariffs lock").apply(concerned.iter().copied());
            catalogs.billing.write().expect("billing lock").apply(concerned.iter().copied());
            catalogs.invoices.write().expect("invoices lock").apply(concerned.iter().copied());
        }
        if let Some(ordered) = &ordered {
            ordered.lock().expect("ordered fold lock").add(events);
        }
    })
}

/// Saves the ledger's snapshot when enough is new, every [`LEDGER_SNAPSHOT_CHECK_INTERVAL`].
/// Holds the fold and the store only while it saves, so that it never keeps a dropped
/// ledger's store open (a reopen of the directory would find it in use).
async fn save_when_due(
    ordered: Weak<Mutex<OrderedFold>>,
    store: Weak<dyn EventStore>,
    saving: Arc<tokio::sync::Mutex<()>>,
) {
    loop {
        tokio::time::sleep(LEDGER_SNAPSHOT_CHECK_INTERVAL).await;
        let _turn = saving.lock().await;
        let Some(ordered) = ordered.upgrade() else { return };
        let bytes = ordered.lock().expect("ordered fold lock").snapshot_if(LEDGER_SNAPSHOT_EVERY_EVENTS);
        drop(ordered);
        // The store only when there is something to save: a check never holds it while a
        // stopped ledger's directory is opened again.
        let Some(bytes) = bytes else { continue };
        let Some(store) = store.upgrade() else { return };
        if let Err(error) = store.put_snapshot(LEDGER_SNAPSHOT_NAME, bytes).await {
            tracing::warn!(%error, "cannot save the ledger's snapshot");
        }
    }
}
