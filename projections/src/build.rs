//! Replay's builders: the models built from the whole log at once, on every core.
//!
//! Applying an event to the live models costs a path copy in several persistent maps
//! (the account, its posting chunks, its buckets, its trail), which is what lets readers
//! hold a state while the next is made, and what a replay does not need: nobody reads
//! the models until they are whole. So a replay keeps each account as plain lists,
//! appended to in log order, and builds the persistent maps once at the end, from
//! sorted lists.
//!
//! The accounts are split into shards by id, one applier thread per shard, each seeing
//! every event and applying it to the accounts of its shard only: an account's events
//! still arrive in log order, and no two threads touch one account. What an event does
//! to an account is [`EventEffect::apply_to`], the same as for the live models.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use domain::{AccountId, RecordedEvent};
use imbl::Vector;

use crate::recent::Recent;
use crate::state::{
    AccountModel, AccountTarget, AccountView, Buckets, CDR_ID_SHARDS, CHUNK_ENTRIES_MAX, CdrIdIndex, CdrRef, Chunk,
    Chunked, Entry, EventEffect, FxHasher, Model, PostingEntry, cdr_id_shard_of,
};

/// Entries as a [`Chunked`] list will hold them, built by appending: full chunks of
/// [`CHUNK_ENTRIES_MAX`], as in-order inserts leave them. Each chunk is allocated at its
/// final size and becomes the model's chunk as it is, so nothing is copied or grown.
struct ChunkedBuild<T: Entry> {
    chunks: Vec<Vec<T>>,
    /// False once an entry arrived before one already here (a call started earlier, a
    /// payment back-dated): then the entries are sorted at the end.
    in_order: bool,
}

impl<T: Entry> ChunkedBuild<T> {
    fn new() -> Self {
        ChunkedBuild { chunks: Vec::new(), in_order: true }
    }

    fn push(&mut self, entry: T) {
        if let Some(last) = self.chunks.last_mut() {
            self.in_order &= last.last().expect("chunks are never empty").key() <= entry.key();
            if last.len() < CHUNK_ENTRIES_MAX {
                last.push(entry);
                return;
            }
        }
        let mut chunk = Vec::with_capacity(CHUNK_ENTRIES_MAX);
        chunk.push(entry);
        self.chunks.push(chunk);
    }

    /// The entries in order, chunk by chunk.
    fn sorted_chunks(self) -> Vec<Vec<T>> {
        if self.in_order {
            return self.chunks;
        }
        let mut entries: Vec<T> = Vec::with_capacity(self.chunks.iter().map(Vec::len).sum());
        for chunk in self.chunks {
            entries.extend(chunk);
        }
        // Stable: entries with one key (an event that posts twice to one account) keep
        // their log order, as inserts keep it.
        entries.sort_by_key(Entry::key);
        entries.chunks(CHUNK_ENTRIES_MAX).map(<[T]>::to_vec).collect()
    }

    fn finish(chunks: Vec<Vec<T>>) -> Chunked<T> {
        let chunks = chunks
            .into_iter()
            .map(|entries| {
                let chunk = Chunk::of(entries);
                (chunk.entries.last().expect("chunks are never empty").key(), Arc::new(chunk))
            })
            .collect();
        Chunked { chunks }
    }
}

/// One account as a replay builds it: what the models keep of it, appended in log order.
pub(crate) struct AccountBuild {
    view: AccountView,
    postings: ChunkedBuild<PostingEntry>,
    cdrs: ChunkedBuild<CdrRef>,
    trail: Vector<u64>,
}

impl AccountTarget for AccountBuild {
    fn add_call(&mut self, call: CdrRef) {
        self.cdrs.push(call);
    }

    fn add_posting(&mut self, entry: PostingEntry) {
        self.view.note_posting(&entry);
        self.postings.push(entry);
    }

    fn add_to_trail(&mut self, position: u64) {
        self.view.last_position = position;
        self.trail.push_back(position);
    }
}

impl AccountBuild {
    fn new(view: AccountView) -> Self {
        AccountBuild { view, postings: ChunkedBuild::new(), cdrs: ChunkedBuild::new(), trail: Vector::new() }
    }

    fn finish(self) -> AccountModel {
        let postings = self.postings.sorted_chunks();
        let mut buckets = Buckets::default();
        buckets.add_postings(postings.iter().flatten());
        AccountModel {
            view: self.view,
            postings: ChunkedBuild::finish(postings),
            buckets,
            cdrs: ChunkedBuild::finish(self.cdrs.sorted_chunks()),
            trail: self.trail,
            recent: Recent::with_capacity(0),
        }
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The accounts of one shard, built from every event of the log.
pub(crate) struct ShardBuilder {
    shard: u64,
    shards: u64,
    accounts: FastMap<AccountId, AccountBuild>,
    /// The charged CDRs' (id hash, position), by shard of the CDR id index: inserted
    /// one by one into the index, they were a tenth of a replay's CPU, each a cache miss
    /// in a table of every id; collected in order, each shard is built in the caches.
    cdr_ids: Vec<Vec<(u64, u64)>>,
    position: u64,
}

impl ShardBuilder {
    pub(crate) fn new(shard: usize, shards: usize) -> Self {
        ShardBuilder {
            shard: shard as u64,
            shards: shards as u64,
            accounts: FastMap::default(),
            cdr_ids: vec![Vec::new(); CDR_ID_SHARDS],
            position: 0,
        }
    }

    fn owns(&self, id: AccountId) -> bool {
        let (high, low) = id.0.as_u64_pair();
        let mut hasher = FxHasher::default();
        hasher.write_u64(high);
        hasher.write_u64(low);
        (hasher.finish() >> 32) % self.shards == self.shard
    }

    /// Applies the next event of the log to this shard's accounts. A CDR's id is kept
    /// by the shard of the customer it charged, so once.
    pub(crate) fn apply(&mut self, recorded: &RecordedEvent) {
        self.position = recorded.position;
        // Every applier sees every event, and most concern the other shards' accounts:
        // what an event does is worked out only where it concerns one of this shard's.
        let mut concerns_this_shard = false;
        recorded.event.payload.for_each_account(|id| concerns_this_shard |= self.owns(id));
        if !concerns_this_shard {
            return;
        }
        let effect = EventEffect::of(recorded);
        if let Some(view) = effect.opened().filter(|view| self.owns(view.id)) {
            self.accounts.insert(view.id, AccountBuild::new(view));
        }
        if let Some((hash, _)) = effect.charged_cdr().filter(|(_, customer)| self.owns(*customer)) {
            self.cdr_ids[cdr_id_shard_of(hash)].push((hash, recorded.position));
        }
        for &id in &effect.concerned {
            if !self.owns(id) {
                continue;
            }
            if let Some(account) = self.accounts.get_mut(&id) {
                effect.change_view(&mut account.view);
                effect.apply_to(id, account);
            }
        }
    }
}

/// The models the shards built, at the position of the last event they saw, and the
/// index of the CDR ids they charged.
pub(crate) fn finish(shards: Vec<ShardBuilder>) -> (Model, CdrIdIndex) {
    use rayon::prelude::*;
    let position = shards.iter().map(|shard| shard.position).max().unwrap_or(0);
    let mut runs: Vec<Vec<(u64, u64)>> = vec![Vec::new(); CDR_ID_SHARDS];
    let mut accounts: Vec<AccountBuild> = Vec::new();
    for shard in shards {
        accounts.extend(shard.accounts.into_values());
        for (run, ids) in runs.iter_mut().zip(shard.cdr_ids) {
            if run.is_empty() {
                *run = ids;
            } else {
                run.extend(ids);
            }
        }
    }
    let (built, cdr_ids) = rayon::join(
        || accounts.into_par_iter().map(AccountBuild::finish).collect::<Vec<AccountModel>>(),
        || CdrIdIndex::from_shard_runs(runs),
    );
    let mut model = Model { position, ..Model::default() };
    for account in built {
        model.insert_account(account);
    }
    (model, cdr_ids)
}
