//! The write side's front door: routes each command to its book's writer, starting the
//! writer (and loading the book) on first use, and keeps the ledger-wide account index
//! (number -> account -> book) that routing needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use domain::{
    AccountId, AccountKind, BookId, BookState, Command, CommandMeta, DomainError, OpenAccount, Payload, RecordedEvent,
};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use crate::error::{CommandError, StoreError};
use crate::store::{EventStore, READ_EVENTS_MAX};
use crate::writer::{self, BookHandle, CommandOutcome, CommitHook};

/// Where an account lives: enough to route a command and to check a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRef {
    pub id: AccountId,
    pub number: String,
    pub kind: AccountKind,
    pub partner: Option<AccountId>,
    pub book: BookId,
}

#[derive(Default)]
struct AccountIndex {
    by_id: HashMap<AccountId, AccountRef>,
    id_of: HashMap<String, AccountId>,
}

impl AccountIndex {
    fn apply(&mut self, events: &[RecordedEvent]) {
        for recorded in events {
            if let Payload::AccountOpened(opened) = &recorded.event.payload {
                self.id_of.insert(opened.number.clone(), opened.account);
                self.by_id.insert(
                    opened.account,
                    AccountRef {
                        id: opened.account,
                        number: opened.number.clone(),
                        kind: opened.kind,
                        partner: opened.partner,
                        book: recorded.event.envelope.book,
                    },
                );
            }
        }
    }
}

type WriterSlot = Arc<OnceCell<(BookHandle, Arc<Mutex<Option<JoinHandle<()>>>>)>>;

pub struct Ledger {
    store: Arc<dyn EventStore>,
    index: Arc<RwLock<AccountIndex>>,
    writers: Mutex<HashMap<BookId, WriterSlot>>,
    /// Account numbers are unique ledger-wide, across books: registrations take turns.
    registration: tokio::sync::Mutex<()>,
}

impl Ledger {
    /// Opens the ledger over `store`, rebuilding the account index from the log.
    pub async fn open(store: Arc<dyn EventStore>) -> Result<Self, CommandError> {
        let mut index = AccountIndex::default();
        let mut from = 1;
        loop {
            let events = store.read_all(from, READ_EVENTS_MAX).await?;
            let Some(last) = events.last() else { break };
            from = last.position + 1;
            index.apply(&events);
        }
        Ok(Ledger {
            store,
            index: Arc::new(RwLock::new(index)),
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
                AccountKind::Partner => (first.id, other.id),
                AccountKind::Customer => (other.id, first.id),
            };
            return Err(DomainError::NotOwnCustomer { partner, customer }.into());
        }
        Ok(first.book)
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

    async fn writer(&self, book: BookId) -> Result<BookHandle, CommandError> {
        let slot = {
            let mut writers = self.writers.lock().expect("writers lock");
            writers.entry(book).or_default().clone()
        };
        let (handle, _) = slot
            .get_or_try_init(|| async {
                let state = writer::load_book(&*self.store, book).await?;
                let index = self.index.clone();
                let hook: CommitHook = Arc::new(move |events| index.write().expect("index lock").apply(events));
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
