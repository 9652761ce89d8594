//! A book's id index: the CDR ids and idempotency keys that left the book's in-memory
//! state, so that a book's memory does not grow with every call it ever charged.
//!
//! The rules stay whole: a CDR id is charged once per book and a key has one effect,
//! forever and across restarts. The writer keeps the ids of recent events in the state
//! (`BookState::charged_cdrs`, `BookState::idempotency`), as before. When it takes a
//! snapshot and they have grown past [`crate::writer::WriterOptions::ids_in_memory_max`],
//! it moves them into an immutable sorted *run* (one per kind) saved beside the
//! snapshot, which names its runs; before a round is decided, the ids its commands carry
//! that are not in memory are looked up in the runs and put back into the state for that
//! round only, so `decide` stays pure and sees every id it needs.
//!
//! A run is found through an in-memory filter and fence keys: a Bloom filter (10 bits
//! per id, 7 probes: ~1 % of new ids read a block they are not in) and the first hash of
//! each 128-entry block (0.125 bytes per id). An id is found with one read of one block
//! (3 KB for CDR ids), checked by its own CRC. Runs of a kind are merged in the
//! background once a newer one is at least half the size of the one before it, so a
//! book holds a logarithmic number of them and each id is rewritten a logarithmic
//! number of times.
//!
//! An id is stored as the first 128 bits of SHA-256 over its kind and text: fixed-size
//! entries, searchable with no key text kept, and a collision needs some 2^64 ids.
//!
//! Crash safety: a run is written before the snapshot that names it, and both only once
//! the events whose ids they hold are durable; a run that a crash left unnamed is
//! overwritten later (its number is handed out again) and a run merged away is deleted
//! only once a saved snapshot no longer names it. The log stays the truth: a snapshot
//! whose runs cannot be read is ignored and the book folded from its start, with every
//! id back in memory.

use std::collections::HashMap;
use std::sync::Arc;

use domain::{BookId, IdempotencyRecord};
use eventlog::{EventStore, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What an id names: a charged CDR or a request's idempotency key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IdKind {
    Cdr,
    Key,
}

impl IdKind {
    fn tag(self) -> u8 {
        match self {
            IdKind::Cdr => 1,
            IdKind::Key => 2,
        }
    }

    fn from_tag(tag: u8) -> Option<IdKind> {
        match tag {
            1 => Some(IdKind::Cdr),
            2 => Some(IdKind::Key),
            _ => None,
        }
    }

    /// Bytes per entry: the hash and the version of the event; a key adds the number of
    /// events and the digest of its request.
    fn entry_len(self) -> usize {
        match self {
            IdKind::Cdr => 16 + 8,
            IdKind::Key => 16 + 8 + 4 + 32,
        }
    }
}

/// What the index holds for an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdValue {
    /// The version of the event that charged the CDR.
    Cdr(u64),
    Key(IdempotencyRecord),
}

/// The id's place in a run: SHA-256 of its kind and text, first 128 bits.
fn id_hash(kind: IdKind, id: &str) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update([kind.tag()]);
    hasher.update(id.as_bytes());
    let digest = hasher.finalize();
    u128::from_be_bytes(digest[..16].try_into().expect("sixteen bytes"))
}

const RUN_FORMAT: u8 = 1;
/// format, kind, ids, filter words, blocks.
const HEADER_LEN: usize = 1 + 1 + 8 + 8 + 8;
const BLOCK_ENTRIES: usize = 128;
const BLOOM_BITS_PER_ID: usize = 10;
const BLOOM_PROBES: u64 = 7;

fn bloom_probes(words: usize, hash: u128) -> impl Iterator<Item = (usize, u64)> {
    let bits = (words * 64) as u64;
    let (h1, h2) = ((hash >> 64) as u64, (hash as u64) | 1);
    (0..BLOOM_PROBES).map(move |i| {
        let bit = h1.wrapping_add(i.wrapping_mul(h2)) % bits;
        ((bit / 64) as usize, 1u64 << (bit % 64))
    })
}

/// One immutable sorted run of ids of one kind.
pub(crate) struct Run {
    name: String,
    kind: IdKind,
    count: u64,
    bloom: Vec<u64>,
    /// The first hash of each block.
    fences: Vec<u128>,
    bytes: Resident,
}

/// Where a run's bytes are read from.
#[derive(Clone)]
enum Resident {
    /// Built and not saved yet: lookups read them here.
    Unsaved(Arc<Vec<u8>>),
    /// The saved file, mapped: the page cache serves lookups, with no copy and no call.
    Mapped(Arc<memmap2::Mmap>),
    /// A store without files: read through the store, a few blocks at a time.
    InStore,
}

impl Resident {
    /// Maps snapshot `name`'s file, if the store keeps one.
    fn of_saved(store: &dyn EventStore, name: &str) -> Resident {
        let Some(path) = store.snapshot_path(name) else { return Resident::InStore };
        let mapped = std::fs::File::open(&path).and_then(|file| {
            // SAFETY: a run's file is written whole, then renamed into place, and never
            // written again: a new file takes its name only once no snapshot names the
            // run (a rename leaves this mapping on the old file).
            unsafe { memmap2::Mmap::map(&file) }
        });
        match mapped {
            Ok(map) => Resident::Mapped(Arc::new(map)),
            Err(error) => {
                tracing::warn!(%name, %error, "cannot map an id run; reading it through the store");
                Resident::InStore
            }
        }
    }

    /// The run's body (its file without the store's trailing checksum), when resident.
    fn body(&self) -> Option<&[u8]> {
        match self {
            Resident::Unsaved(bytes) => Some(bytes),
            Resident::Mapped(map) => Some(&map[..map.len().saturating_sub(4)]),
            Resident::InStore => None,
        }
    }

    /// Parts of the run `name`, from memory or through the store.
    async fn read(
        &self,
        store: &dyn EventStore,
        name: &str,
        ranges: &[(u64, usize)],
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let short = || StoreError::Corrupt { position: 0, reason: format!("id run {name} is missing or short") };
        match self.body() {
            Some(body) => ranges
                .iter()
                .map(|&(at, len)| body.get(at as usize..at as usize + len).map(<[u8]>::to_vec).ok_or_else(short))
                .collect(),
            None => store.read_snapshot_ranges(name, ranges).await?.ok_or_else(short),
        }
    }
}

impl Run {
    /// Writes `entries` (sorted by hash, no hash twice) as run `name`, kept in memory
    /// until saved.
    fn build(name: String, kind: IdKind, entries: &[(u128, IdValue)]) -> Run {
        let count = entries.len();
        let words = (count * BLOOM_BITS_PER_ID).div_ceil(64).max(1);
        let mut bloom = vec![0u64; words];
        for (hash, _) in entries {
            for (word, bit) in bloom_probes(words, *hash) {
                bloom[word] |= bit;
            }
        }
        let fences: Vec<u128> = entries.chunks(BLOCK_ENTRIES).map(|block| block[0].0).collect();
        let mut bytes = Vec::with_capacity(HEADER_LEN + words * 8 + fences.len() * 20 + count * kind.entry_len() + 4);
        bytes.push(RUN_FORMAT);
        bytes.push(kind.tag());
        bytes.extend_from_slice(&(count as u64).to_le_bytes());
        bytes.extend_from_slice(&(words as u64).to_le_bytes());
        bytes.extend_from_slice(&(fences.len() as u64).to_le_bytes());
        for word in &bloom {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        for fence in &fences {
            bytes.extend_from_slice(&fence.to_be_bytes());
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        for block in entries.chunks(BLOCK_ENTRIES) {
            let start = bytes.len();
            for (hash, value) in block {
                bytes.extend_from_slice(&hash.to_be_bytes());
                match value {
                    IdValue::Cdr(version) => bytes.extend_from_slice(&version.to_le_bytes()),
                    IdValue::Key(record) => {
                        bytes.extend_from_slice(&record.first_version.to_le_bytes());
                        bytes.extend_from_slice(&record.events.to_le_bytes());
                        bytes.extend_from_slice(&record.request_digest);
                    }
                }
            }
            let crc = crc32fast::hash(&bytes[start..]);
            bytes.extend_from_slice(&crc.to_le_bytes());
        }
        Run { name, kind, count: count as u64, bloom, fences, bytes: Resident::Unsaved(Arc::new(bytes)) }
    }

    /// The filter and fences of a saved run, read from its header.
    async fn open(store: &dyn EventStore, saved: &RunRef) -> Result<Run, StoreError> {
        let damaged = |why: &str| StoreError::Corrupt { position: 0, reason: format!("id run {}: {why}", saved.name) };
        let bytes = Resident::of_saved(store, &saved.name);
        let header = bytes.read(store, &saved.name, &[(0, HEADER_LEN)]).await?.remove(0);
        let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("eight bytes"));
        let (count, words, blocks) = (word(2), word(10) as usize, word(18) as usize);
        if header[0] != RUN_FORMAT
            || IdKind::from_tag(header[1]) != Some(saved.kind)
            || count != saved.count
            || words == 0
            || blocks != (count as usize).div_ceil(BLOCK_ENTRIES)
        {
            return Err(damaged("header does not match its snapshot"));
        }
        let meta = bytes.read(store, &saved.name, &[(HEADER_LEN as u64, words * 8 + blocks * 16 + 4)]).await?.remove(0);
        let (body, crc) = meta.split_at(meta.len() - 4);
        let mut checked = crc32fast::Hasher::new();
        checked.update(&header);
        checked.update(body);
        if checked.finalize().to_le_bytes() != crc {
            return Err(damaged("filter or fences damaged"));
        }
        let (bloom, fences) = body.split_at(words * 8);
        let run = Run {
            name: saved.name.clone(),
            kind: saved.kind,
            count,
            bloom: bloom.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().expect("eight bytes"))).collect(),
            fences: fences
                .chunks_exact(16)
                .map(|f| u128::from_be_bytes(f.try_into().expect("sixteen bytes")))
                .collect(),
            bytes,
        };
        run.check_blocks(store).await?;
        Ok(run)
    }

    /// Reads every block once and checks its CRC, so that a damaged run is found when
    /// the book loads (and the book is folded instead), not by a command that needs it.
    async fn check_blocks(&self, store: &dyn EventStore) -> Result<(), StoreError> {
        const BLOCKS_PER_READ: usize = 1024;
        let blocks = self.fences.len();
        for first in (0..blocks).step_by(BLOCKS_PER_READ) {
            let last = (first + BLOCKS_PER_READ).min(blocks) - 1;
            let (offset, _) = self.block_range(first);
            let (last_offset, last_len) = self.block_range(last);
            let len = (last_offset - offset) as usize + last_len;
            let bytes = match self.bytes.body() {
                Some(body) => body.get(offset as usize..offset as usize + len).map(std::borrow::Cow::Borrowed),
                None => self.bytes.read(store, &self.name, &[(offset, len)]).await?.pop().map(std::borrow::Cow::Owned),
            };
            let bytes = bytes.ok_or_else(|| StoreError::Corrupt {
                position: 0,
                reason: format!("id run {} is missing or short", self.name),
            })?;
            for (at, block) in bytes.chunks(self.block_stride() as usize).enumerate() {
                let entries = self.entries(block)?;
                if entries.first().map(|(hash, _)| *hash) != Some(self.fences[first + at]) {
                    let reason = format!("id run {}: a block does not start at its fence", self.name);
                    return Err(StoreError::Corrupt { position: 0, reason });
                }
            }
        }
        Ok(())
    }

    fn reference(&self) -> RunRef {
        RunRef { name: self.name.clone(), kind: self.kind, count: self.count }
    }

    fn may_hold(&self, hash: u128) -> bool {
        bloom_probes(self.bloom.len(), hash).all(|(word, bit)| self.bloom[word] & bit != 0)
    }

    /// The block that would hold `hash`.
    fn block_of(&self, hash: u128) -> Option<usize> {
        self.fences.partition_point(|fence| *fence <= hash).checked_sub(1)
    }

    fn data_start(&self) -> u64 {
        (HEADER_LEN + self.bloom.len() * 8 + self.fences.len() * 16 + 4) as u64
    }

    fn block_stride(&self) -> u64 {
        (BLOCK_ENTRIES * self.kind.entry_len() + 4) as u64
    }

    /// Where block `block` is in the run, CRC included.
    fn block_range(&self, block: usize) -> (u64, usize) {
        let entries = (self.count as usize - block * BLOCK_ENTRIES).min(BLOCK_ENTRIES);
        (self.data_start() + block as u64 * self.block_stride(), entries * self.kind.entry_len() + 4)
    }

    /// The whole run after its filter and fences: every block.
    fn data_range(&self) -> (u64, usize) {
        let blocks = self.fences.len();
        let last = if blocks == 0 { 0 } else { self.block_range(blocks - 1).1 };
        (self.data_start(), blocks.saturating_sub(1) * self.block_stride() as usize + last)
    }

    /// Consecutive runs of the wanted blocks (ascending), each read at once: blocks less
    /// than a few apart are read together, so a lookup of many ids (a file sent again)
    /// reads a run in a few large reads rather than one per block.
    fn spans(&self, blocks: impl Iterator<Item = usize>) -> Vec<Span> {
        const GAP_BLOCKS_MAX: usize = 4;
        let mut spans: Vec<Span> = Vec::new();
        for block in blocks {
            match spans.last_mut() {
                Some(span) if block <= span.last_block + GAP_BLOCKS_MAX => span.last_block = block,
                _ => spans.push(Span { first_block: block, last_block: block, range: (0, 0) }),
            }
        }
        for span in &mut spans {
            let (first, _) = self.block_range(span.first_block);
            let (last, last_len) = self.block_range(span.last_block);
            span.range = (first, (last - first) as usize + last_len);
        }
        spans
    }

    fn check_block(&self, block: &[u8]) -> Result<(), StoreError> {
        let (body, crc) = block.split_at(block.len().saturating_sub(4));
        match crc32fast::hash(body).to_le_bytes() == crc {
            true => Ok(()),
            false => {
                let reason = format!("id run {}: a block is damaged", self.name);
                Err(StoreError::Corrupt { position: 0, reason })
            }
        }
    }

    /// The value of `hash` in a checked block, by binary search over its raw entries.
    fn find_in_block(&self, block: &[u8], hash: u128) -> Option<IdValue> {
        let len = self.kind.entry_len();
        let body = &block[..block.len() - 4];
        let entry = |at: usize| &body[at * len..(at + 1) * len];
        let (mut low, mut high) = (0, body.len() / len);
        while low < high {
            let middle = (low + high) / 2;
            match u128::from_be_bytes(entry(middle)[..16].try_into().expect("sixteen bytes")).cmp(&hash) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Some(decode_entry(self.kind, entry(middle)).1),
            }
        }
        None
    }

    /// The entries of a block read back, checked against its CRC.
    fn entries(&self, block: &[u8]) -> Result<Vec<(u128, IdValue)>, StoreError> {
        self.check_block(block)?;
        let body = &block[..block.len() - 4];
        Ok(body.chunks_exact(self.kind.entry_len()).map(|entry| decode_entry(self.kind, entry)).collect())
    }
}

fn decode_entry(kind: IdKind, entry: &[u8]) -> (u128, IdValue) {
    let hash = u128::from_be_bytes(entry[..16].try_into().expect("sixteen bytes"));
    let version = u64::from_le_bytes(entry[16..24].try_into().expect("eight bytes"));
    let value = match kind {
        IdKind::Cdr => IdValue::Cdr(version),
        IdKind::Key => IdValue::Key(IdempotencyRecord {
            first_version: version,
            events: u32::from_le_bytes(entry[24..28].try_into().expect("four bytes")),
            request_digest: entry[28..60].try_into().expect("thirty-two bytes"),
        }),
    };
    (hash, value)
}

/// Blocks `first_block..=last_block` of a run, at `range`.
struct Span {
    first_block: usize,
    last_block: usize,
    range: (u64, usize),
}

/// A run as a book snapshot names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRef {
    pub name: String,
    pub kind: IdKind,
    pub count: u64,
}

/// The index as a book snapshot saves it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedIndex {
    pub runs: Vec<RunRef>,
    /// The number the next run's name takes.
    pub next_run: u64,
    /// Runs merged away whose files may still be there.
    pub retired: Vec<String>,
}

/// A book's runs, with what the writer still has to save or delete.
#[derive(Default)]
pub struct IdIndex {
    runs: Vec<Run>,
    next_run: u64,
    retired: Vec<String>,
}

/// A background merge of the newest runs of a kind into one.
pub(crate) struct MergePlan {
    inputs: Vec<(RunRef, (u64, usize))>,
    kind: IdKind,
    output: String,
}

/// What one save of a book's snapshot does, in this order: write the runs not saved
/// yet, then the snapshot that names them, then delete the runs it no longer names,
/// then merge.
pub(crate) struct SaveJob {
    runs: Vec<(String, Arc<Vec<u8>>)>,
    pub(crate) snapshot_name: String,
    pub(crate) snapshot: Vec<u8>,
    delete: Vec<String>,
    merge: Option<MergePlan>,
}

/// What a save did, for the writer to apply to its index.
#[derive(Default)]
pub(crate) struct SaveOutcome {
    /// The runs saved, and where to read them from now on.
    saved: Vec<(String, Resident)>,
    deleted: Vec<String>,
    merged: Option<(Vec<String>, Run)>,
}

impl IdIndex {
    /// Opens the runs a snapshot names and deletes those it retired. `Err` when a run
    /// cannot be read: the snapshot is then not used.
    pub async fn open(store: &dyn EventStore, saved: SavedIndex) -> Result<IdIndex, StoreError> {
        let mut runs = Vec::with_capacity(saved.runs.len());
        for run in &saved.runs {
            runs.push(Run::open(store, run).await?);
        }
        let mut retired = Vec::new();
        for name in saved.retired {
            if let Err(error) = store.delete_snapshot(&name).await {
                tracing::warn!(%name, %error, "cannot delete a merged id run; trying again later");
                retired.push(name);
            }
        }
        Ok(IdIndex { runs, next_run: saved.next_run, retired })
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Ids held in runs.
    pub fn len(&self) -> u64 {
        self.runs.iter().map(|run| run.count).sum()
    }

    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    pub(crate) fn saved(&self) -> SavedIndex {
        SavedIndex {
            runs: self.runs.iter().map(Run::reference).collect(),
            next_run: self.next_run,
            retired: self.retired.clone(),
        }
    }

    /// Looks each id up in the runs: one read per run that holds wanted blocks.
    pub async fn lookup_many(
        &self,
        store: &dyn EventStore,
        wanted: &[(IdKind, &str)],
    ) -> Result<Vec<Option<IdValue>>, StoreError> {
        let mut found = vec![None; wanted.len()];
        if self.runs.is_empty() {
            return Ok(found);
        }
        // Per run, the blocks to read and which ids each may hold.
        let mut candidates: HashMap<usize, Vec<(usize, usize, u128)>> = HashMap::new();
        for (at, &(kind, id)) in wanted.iter().enumerate() {
            let hash = id_hash(kind, id);
            for (run_at, run) in self.runs.iter().enumerate().filter(|(_, run)| run.kind == kind) {
                if run.may_hold(hash)
                    && let Some(block) = run.block_of(hash)
                {
                    candidates.entry(run_at).or_default().push((block, at, hash));
                }
            }
        }
        for (run_at, mut ids) in candidates {
            let run = &self.runs[run_at];
            ids.sort_unstable_by_key(|(block, _, _)| *block);
            // A resident run is read in place; one in the store in spans of blocks.
            let (spans, read) = match run.bytes.body() {
                Some(_) => (Vec::new(), Vec::new()),
                None => {
                    let spans = run.spans(ids.iter().map(|(block, _, _)| *block));
                    let ranges: Vec<(u64, usize)> = spans.iter().map(|span| span.range).collect();
                    let read = run.bytes.read(store, &run.name, &ranges).await?;
                    (spans, read)
                }
            };
            let mut checked = None;
            for (block, at, hash) in ids {
                let (offset, len) = run.block_range(block);
                let bytes = match run.bytes.body() {
                    Some(body) => body.get(offset as usize..offset as usize + len).ok_or_else(|| {
                        StoreError::Corrupt { position: 0, reason: format!("id run {} is short", run.name) }
                    })?,
                    None => {
                        let span = spans.partition_point(|span| span.last_block < block);
                        let at = (offset - spans[span].range.0) as usize;
                        &read[span][at..at + len]
                    }
                };
                if checked != Some(block) {
                    run.check_block(bytes)?;
                    checked = Some(block);
                }
                // Another run's filter may have let the id through by chance: only a
                // hit counts.
                if let Some(value) = run.find_in_block(bytes, hash) {
                    found[at] = Some(value);
                }
            }
        }
        Ok(found)
    }

    /// Moves the state's ids into new runs (one per kind), kept in memory until saved.
    pub(crate) fn spill(
        &mut self,
        book: BookId,
        cdrs: domain::decide::HashMap<String, u64>,
        keys: domain::decide::HashMap<String, IdempotencyRecord>,
    ) {
        let mut cdrs: Vec<(u128, IdValue)> =
            cdrs.into_iter().map(|(id, version)| (id_hash(IdKind::Cdr, &id), IdValue::Cdr(version))).collect();
        let mut keys: Vec<(u128, IdValue)> =
            keys.into_iter().map(|(key, record)| (id_hash(IdKind::Key, &key), IdValue::Key(record))).collect();
        for (kind, entries) in [(IdKind::Cdr, &mut cdrs), (IdKind::Key, &mut keys)] {
            if entries.is_empty() {
                continue;
            }
            entries.sort_unstable_by_key(|(hash, _)| *hash);
            entries.dedup_by_key(|(hash, _)| *hash);
            let name = self.next_name(book);
            self.runs.push(Run::build(name, kind, entries));
        }
    }

    fn next_name(&mut self, book: BookId) -> String {
        self.next_run += 1;
        format!("ids-{}-{}", book.0, self.next_run - 1)
    }

    /// The save of `snapshot`: the runs not saved yet first, then the snapshot, then the
    /// deletion of the runs it no longer names, then a merge if one is due. Call after
    /// encoding `snapshot` from [`IdIndex::saved`]: the merge's output takes a number the
    /// snapshot does not count, so that a crash before the next snapshot leaves it to be
    /// overwritten.
    pub(crate) fn save_job(&mut self, book: BookId, snapshot_name: String, snapshot: Vec<u8>) -> SaveJob {
        let runs = self
            .runs
            .iter()
            .filter_map(|run| match &run.bytes {
                Resident::Unsaved(bytes) => Some((run.name.clone(), bytes.clone())),
                _ => None,
            })
            .collect();
        let merge = [IdKind::Cdr, IdKind::Key].into_iter().find_map(|kind| self.plan_merge(book, kind));
        SaveJob { runs, snapshot_name, snapshot, delete: self.retired.clone(), merge }
    }

    /// The newest runs of `kind` to merge: while the run before the newest ones is less
    /// than twice their size, it joins them.
    fn plan_merge(&mut self, book: BookId, kind: IdKind) -> Option<MergePlan> {
        let of_kind: Vec<&Run> = self.runs.iter().filter(|run| run.kind == kind).collect();
        let mut from = of_kind.len();
        let mut size = 0;
        while from > 0 {
            let run = of_kind[from - 1];
            if from < of_kind.len() && run.count >= 2 * size {
                break;
            }
            size += run.count;
            from -= 1;
        }
        if of_kind.len() - from < 2 {
            return None;
        }
        let inputs = of_kind[from..].iter().map(|run| (run.reference(), run.data_range())).collect();
        Some(MergePlan { inputs, kind, output: self.next_name(book) })
    }

    /// Applies what a save did: saved runs are read from their files from now on,
    /// deleted ones are forgotten, merged ones are replaced by their merge (their files
    /// are deleted once a saved snapshot no longer names them).
    pub(crate) fn apply(&mut self, outcome: SaveOutcome) {
        for run in &mut self.runs {
            if let Some((_, bytes)) = outcome.saved.iter().find(|(name, _)| *name == run.name) {
                run.bytes = bytes.clone();
            }
        }
        self.retired.retain(|name| !outcome.deleted.contains(name));
        if let Some((inputs, merged)) = outcome.merged {
            self.runs.retain(|run| !inputs.contains(&run.name));
            self.runs.push(merged);
            self.retired.extend(inputs);
        }
    }
}

impl SaveJob {
    /// Does the save; a step that fails ends it (the writer retries at its next save).
    pub(crate) async fn run(self, store: Arc<dyn EventStore>, book: BookId) -> SaveOutcome {
        let mut outcome = SaveOutcome::default();
        for (name, bytes) in self.runs {
            if let Err(error) = store.put_snapshot(&name, Vec::clone(&bytes)).await {
                tracing::warn!(%book, %name, %error, "cannot save an id run; the book's snapshot waits");
                return outcome;
            }
            let bytes = Resident::of_saved(&*store, &name);
            outcome.saved.push((name, bytes));
        }
        if let Err(error) = store.put_snapshot(&self.snapshot_name, self.snapshot).await {
            tracing::warn!(%book, %error, "cannot save the book's snapshot");
            return outcome;
        }
        for name in self.delete {
            match store.delete_snapshot(&name).await {
                Ok(()) => outcome.deleted.push(name),
                Err(error) => tracing::warn!(%book, %name, %error, "cannot delete a merged id run"),
            }
        }
        if let Some(plan) = self.merge {
            match merge(&*store, plan).await {
                Ok(merged) => outcome.merged = Some(merged),
                Err(error) => tracing::warn!(%book, %error, "cannot merge id runs; they stay as they are"),
            }
        }
        outcome
    }
}

/// Runs `work` on the process's one merge thread. Not tokio's blocking pool: its threads
/// come and go, and each took its own allocator heap, which with purging off
/// (`api/src/main.rs`) stayed committed after the thread left. Generating the 10M data
/// set peaked at 1.5-2.5 GB against 1.0-1.4 GB with merges kept on one thread.
async fn on_merge_thread<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> Result<R, StoreError> {
    type Job = Box<dyn FnOnce() + Send>;
    static MERGER: std::sync::OnceLock<std::sync::mpsc::Sender<Job>> = std::sync::OnceLock::new();
    let merger = MERGER.get_or_init(|| {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("id-run-merger".into())
            .spawn(move || queue.into_iter().for_each(|job| job()))
            .expect("the merge thread starts");
        jobs
    });
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = reply.send(work());
    });
    let stopped = || StoreError::Io("the id-run merge thread stopped".into());
    merger.send(job).map_err(|_| stopped())?;
    answer.await.map_err(|_| stopped())
}

/// Reads the plan's runs whole, merges their entries and saves the result.
async fn merge(store: &dyn EventStore, plan: MergePlan) -> Result<(Vec<String>, Run), StoreError> {
    let mut parts = Vec::with_capacity(plan.inputs.len());
    for (run, range) in &plan.inputs {
        parts.push(Resident::InStore.read(store, &run.name, &[*range]).await?.remove(0));
    }
    let (kind, output) = (plan.kind, plan.output);
    let stride = BLOCK_ENTRIES * kind.entry_len() + 4;
    // Sorting and encoding millions of entries is CPU work: off the async workers.
    let run = on_merge_thread(move || -> Result<Run, StoreError> {
        let entries_max: usize = parts.iter().map(|bytes| bytes.len() / kind.entry_len()).sum();
        let mut entries = Vec::with_capacity(entries_max);
        for bytes in &parts {
            for block in bytes.chunks(stride) {
                let (body, crc) = block.split_at(block.len().saturating_sub(4));
                if crc32fast::hash(body).to_le_bytes() != crc {
                    return Err(StoreError::Corrupt { position: 0, reason: "an id run's block is damaged".into() });
                }
                entries.extend(body.chunks_exact(kind.entry_len()).map(|entry| decode_entry(kind, entry)));
            }
        }
        // Each run is sorted already: the stable sort finds those runs and merges them
        // in linear passes, where an unstable sort sorted the whole again (on the two
        // cores the writers use, a merge was 5 % of the write path's CPU).
        entries.sort_by_key(|(hash, _)| *hash);
        entries.dedup_by_key(|(hash, _)| *hash);
        Ok(Run::build(output, kind, &entries))
    })
    .await??;
    let Resident::Unsaved(bytes) = &run.bytes else { unreachable!("a run just built is unsaved") };
    store.put_snapshot(&run.name, Vec::clone(bytes)).await?;
    let run = Run { bytes: Resident::of_saved(store, &run.name), ..run };
    Ok((plan.inputs.into_iter().map(|(run, _)| run.name).collect(), run))
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventlog::SledStore;
    use proptest::prelude::*;

    fn record(n: u64) -> IdempotencyRecord {
        IdempotencyRecord { request_digest: [n as u8; 32], first_version: n, events: (n % 3) as u32 + 1 }
    }

    /// Spills `batches` of ids one after another, saving (and merging) after each as the
    /// writer does, and returns the index with every id it was given.
    async fn index_of(store: &Arc<dyn EventStore>, batches: &[Vec<u64>]) -> (IdIndex, Vec<u64>) {
        let book = BookId::of_partner(domain::AccountId::new());
        let mut index = IdIndex::default();
        let mut all = Vec::new();
        for batch in batches {
            let cdrs = batch.iter().map(|n| (format!("cdr-{n}"), *n)).collect();
            let keys = batch.iter().filter(|n| *n % 2 == 0).map(|n| (format!("key-{n}"), record(*n))).collect();
            index.spill(book, cdrs, keys);
            let job = index.save_job(book, "book".into(), vec![1]);
            let outcome = job.run(store.clone(), book).await;
            index.apply(outcome);
            all.extend(batch);
        }
        (index, all)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Every id spilled is found with its value, through merges, mapped and after a
        /// reopen from what a snapshot saves; an id never spilled is not found.
        #[test]
        fn every_spilled_id_is_found_and_no_other(
            sizes in proptest::collection::vec(1usize..600, 1..9),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).unwrap());
                let mut next = 0u64;
                let batches: Vec<Vec<u64>> = sizes
                    .iter()
                    .map(|size| {
                        next += *size as u64;
                        (next - *size as u64..next).collect()
                    })
                    .collect();
                let (index, all) = index_of(&store, &batches).await;
                prop_assert_eq!(index.len(), all.len() as u64 + all.iter().filter(|n| *n % 2 == 0).count() as u64);
                let reopened = IdIndex::open(&*store, index.saved()).await.unwrap();
                for index in [&index, &reopened] {
                    let names: Vec<String> = all.iter().map(|n| format!("cdr-{n}")).collect();
                    let keys: Vec<String> = all.iter().map(|n| format!("key-{n}")).collect();
                    let absent: Vec<String> = (0..200).map(|n| format!("cdr-{}", next + n)).collect();
                    let mut wanted: Vec<(IdKind, &str)> = names.iter().map(|id| (IdKind::Cdr, id.as_str())).collect();
                    wanted.extend(keys.iter().map(|key| (IdKind::Key, key.as_str())));
                    wanted.extend(absent.iter().map(|id| (IdKind::Cdr, id.as_str())));
                    // A CDR id is not a key of the same text.
                    wanted.push((IdKind::Key, "cdr-0"));
                    let found = index.lookup_many(&*store, &wanted).await.unwrap();
                    for (at, n) in all.iter().enumerate() {
                        prop_assert_eq!(&found[at], &Some(IdValue::Cdr(*n)));
                        let key = &found[all.len() + at];
                        prop_assert_eq!(key, &(*n % 2 == 0).then(|| IdValue::Key(record(*n))));
                    }
                    prop_assert!(found[2 * all.len()..].iter().all(Option::is_none));
                }
                // Merges keep the runs few: about two per doubling of the ids, per kind.
                let doublings = (all.len() as f64).log2().ceil() as usize + 1;
                prop_assert!(index.runs() <= 2 * doublings, "{} runs for {} ids", index.runs(), all.len());
                Ok(())
            })?;
        }
    }
}
