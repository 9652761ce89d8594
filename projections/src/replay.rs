//! Replay and verify: rebuild every read model from the log, and check that the live
//! models and every book's hash chain are what the log says they should be.

use std::collections::{BTreeMap, BTreeSet};

use commands::chain::ChainBreak;
use commands::{EventStore, verify_book};
use domain::{AccountId, BookId};
use sha2::{Digest, Sha256};

use crate::error::ProjectionError;
use crate::models::ReadModels;
use crate::runner::{CHUNK_EVENTS_MAX, generation, set_generation, tree_name};
use crate::views::*;

const VERIFY_TREE: &str = "views-verify";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayReport {
    pub events: u64,
    pub position: u64,
}

/// Rebuilds `tree` from the log up to `up_to` (inclusive; `None` for all that is
/// durable now). `progress` is told (events done, position reached, head).
async fn rebuild_into(
    store: &dyn EventStore,
    tree: sled::Tree,
    up_to: Option<u64>,
    progress: &mut dyn FnMut(u64, u64, u64),
) -> Result<(ReplayReport, BTreeSet<BookId>), ProjectionError> {
    tree.clear()?;
    let (applied, _) = tokio::sync::watch::channel(0);
    let models = ReadModels::over(tree, applied);
    let head = store.head().await?;
    let end = up_to.map_or(head, |p| p + 1);
    let mut books = BTreeSet::new();
    let mut next = 1;
    let mut events = 0u64;
    while next < end {
        let mut chunk = store.read_all(next, CHUNK_EVENTS_MAX).await?;
        chunk.retain(|e| e.position < end);
        let Some(last) = chunk.last() else { break };
        next = last.position + 1;
        events += chunk.len() as u64;
        books.extend(chunk.iter().map(|e| e.event.envelope.book));
        let position = last.position;
        let worker = models.clone();
        tokio::task::spawn_blocking(move || worker.apply_chunk(&chunk))
            .await
            .map_err(|e| ProjectionError::Storage(e.to_string()))??;
        progress(events, position, end.saturating_sub(1));
    }
    Ok((ReplayReport { events, position: models.position() }, books))
}

/// Rebuilds every read model from the log into fresh trees, then swaps them in. A crash
/// mid-replay leaves the old models in place. Run it while no server uses `db`.
pub async fn replay(
    store: &dyn EventStore,
    db: &sled::Db,
    mut progress: impl FnMut(u64, u64, u64),
) -> Result<ReplayReport, ProjectionError> {
    let old = generation(db)?;
    let fresh = old + 1;
    let tree = db.open_tree(tree_name(fresh))?;
    let (report, _) = rebuild_into(store, tree, None, &mut progress).await?;
    set_generation(db, fresh)?;
    db.drop_tree(tree_name(old))?;
    Ok(report)
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Each book with its event count, or where its chain breaks.
    pub books: Vec<(BookId, Result<u64, ChainBreak>)>,
    pub accounts_checked: usize,
    /// Accounts whose live read models differ from a fresh replay.
    pub differing_accounts: Vec<AccountId>,
    /// The position both sides were compared at.
    pub position: u64,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.differing_accounts.is_empty() && self.books.iter().all(|(_, verdict)| verdict.is_ok())
    }
}

/// Checks every book's chain and compares the live read models with a fresh replay up
/// to the same position, one checksum per account.
pub async fn verify(
    store: &dyn EventStore,
    db: &sled::Db,
    mut progress: impl FnMut(u64, u64, u64),
) -> Result<VerifyReport, ProjectionError> {
    let live = ReadModels::open(db)?;
    let position = live.position();
    let fresh_tree = db.open_tree(VERIFY_TREE)?;
    let (_, books) = rebuild_into(store, fresh_tree.clone(), Some(position), &mut progress).await?;
    let live_sums = checksums(&live.tree)?;
    let fresh_sums = checksums(&fresh_tree)?;
    db.drop_tree(VERIFY_TREE)?;
    let accounts: BTreeSet<&AccountId> = live_sums.keys().chain(fresh_sums.keys()).collect();
    let differing_accounts = accounts.iter().filter(|a| live_sums.get(a) != fresh_sums.get(a)).map(|a| **a).collect();
    let mut verdicts = Vec::new();
    for book in books {
        verdicts.push((book, verify_book(store, book).await?));
    }
    Ok(VerifyReport { books: verdicts, accounts_checked: accounts.len(), differing_accounts, position })
}

/// One checksum per account over every model entry that belongs to it. Lists written
/// in pieces (postings, CDRs, audit trail) are hashed entry by entry, and the entry
/// hashes are added up (a multiset hash), so the checksum depends on what the models
/// hold, not on how the log happened to be cut into chunks.
fn checksums(tree: &sled::Tree) -> Result<BTreeMap<AccountId, [u64; 4]>, ProjectionError> {
    let mut sums: BTreeMap<AccountId, [u64; 4]> = BTreeMap::new();
    let mut add = |account: AccountId, tag: u8, bytes: &[u8]| {
        let digest: [u8; 32] = Sha256::new().chain_update([tag]).chain_update(bytes).finalize().into();
        let lanes = sums.entry(account).or_default();
        for (lane, chunk) in lanes.iter_mut().zip(digest.chunks_exact(8)) {
            *lane = lane.wrapping_add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
    };
    for entry in tree.iter() {
        let (key, value) = entry?;
        let Some(&prefix) = key.first() else { continue };
        match prefix {
            PREFIX_POSTING => {
                let account = account_at(&key, 1).ok_or_else(|| corrupt(&key))?;
                for e in decode::<Vec<PostingEntry>>(&key, &value)? {
                    add(account, prefix, &encode(&e));
                }
            }
            PREFIX_ACCOUNT_CDR => {
                let account = account_at(&key, 1).ok_or_else(|| corrupt(&key))?;
                for e in decode::<Vec<CdrEntry>>(&key, &value)? {
                    add(account, prefix, &encode(&e));
                }
            }
            PREFIX_EVENT => {
                let account = account_at(&key, 1).ok_or_else(|| corrupt(&key))?;
                for e in decode::<Vec<(u64, EventRow)>>(&key, &value)? {
                    add(account, prefix, &encode(&e));
                }
            }
            PREFIX_ACCOUNT | PREFIX_BUCKET | PREFIX_NUMBER | PREFIX_CDR | PREFIX_BOOK_ACCOUNT => {
                let account = match prefix {
                    PREFIX_ACCOUNT => account_at(&key, 1),
                    PREFIX_BUCKET => account_at(&key, 2),
                    PREFIX_BOOK_ACCOUNT => account_at(&key, 17),
                    PREFIX_NUMBER => uuid::Uuid::from_slice(&value).ok().map(AccountId),
                    _ => decode::<CdrRow>(&key, &value).ok().map(|row| row.account),
                }
                .ok_or_else(|| corrupt(&key))?;
                let mut item = key.to_vec();
                item.extend_from_slice(&value);
                add(account, prefix, &item);
            }
            _ => {} // the checkpoint
        }
    }
    Ok(sums)
}

fn corrupt(key: &[u8]) -> ProjectionError {
    ProjectionError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason: "no account in the key".into() }
}

fn account_at(key: &[u8], offset: usize) -> Option<AccountId> {
    key.get(offset..offset + 16).and_then(|b| uuid::Uuid::from_slice(b).ok()).map(AccountId)
}
