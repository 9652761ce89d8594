//! The index of the log's segments: where each batch's record is, by position and by
//! book. The store owns it; sled has no part in it.
//!
//! Why not sled: indexing every append with two sled inserts (`F` + first position,
//! `S` + book + first version) was about 22% of the in-process write path's CPU (a
//! profile of `write_path`), for entries that only ever grow at the end. Here an append
//! costs two pushes onto vectors under the lock the append already holds.
//!
//! - The segment being written is indexed in memory ([`MemoryIndex`]): its records in
//!   position order (found by binary search), and each book's batches in version order.
//! - A closed segment's index is written once, after the segment was synced, to an
//!   immutable side file next to it (`segment-N.idx`) and mapped from there
//!   ([`MappedIndex`]): a large log's index stays in the page cache, which the kernel
//!   can drop, instead of tens of bytes of heap per batch for every batch ever written.
//!   Until its file is written, a closed segment keeps its index in memory.
//! - The segments are the truth. An index file is written only for records already
//!   synced, under a temporary name that is fsynced, renamed and the directory fsynced;
//!   at open a file that is missing, damaged (CRC, structure) or does not match its
//!   segment is ignored and the segment scanned again; a file that covers only the
//!   start of its segment (the segment written at the last clean stop, appended to
//!   since) is used for that start and the rest scanned.
//!
//! An index file, integers little-endian unless said otherwise:
//!
//! ```text
//! header (56 bytes): magic "TBSEGIDX", format u32, CRC-32 u32 of every byte after it,
//!   segment sequence u64, bytes of the segment covered u64, first position u64,
//!   end position (one past the last) u64, records n u64
//! records (n × 24 bytes), by position: first position u64, offset u64, body length u32,
//!   event count u32
//! books (n × 28 bytes), by (book, first version): book (16 bytes), first version
//!   (u64 big-endian, so that the first 24 bytes compare as the pair), record slot u32
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use domain::BookId;

use crate::error::StoreError;
use crate::store::segment;

const MAGIC: &[u8; 8] = b"TBSEGIDX";
const FORMAT: u32 = 1;
const HEADER_BYTES: usize = 56;
const RECORD_ENTRY_BYTES: usize = 24;
const BOOK_ENTRY_BYTES: usize = 28;
const FILE_SUFFIX: &str = ".idx";
const TEMP_SUFFIX: &str = ".idx.tmp";

/// Where one batch's record is in its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordEntry {
    pub first_position: u64,
    pub offset: u64,
    pub body_len: u32,
    pub count: u32,
}

impl RecordEntry {
    fn end_position(&self) -> u64 {
        self.first_position + u64::from(self.count)
    }

    fn end_offset(&self) -> u64 {
        self.offset + segment::RECORD_HEADER_BYTES as u64 + u64::from(self.body_len)
    }
}

/// A batch found through the index: its segment, its record, and its first version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Located {
    pub segment: u64,
    pub record: RecordEntry,
    pub first_version: u64,
}

/// What both kinds of segment index answer.
trait Table {
    fn records(&self) -> usize;
    fn record(&self, slot: usize) -> RecordEntry;
    /// The slot of the record holding `position`, if this segment holds it.
    fn slot_holding(&self, position: u64) -> Option<usize> {
        let after = partition_point(self.records(), |slot| self.record(slot).first_position <= position);
        let slot = after.checked_sub(1)?;
        (position < self.record(slot).end_position()).then_some(slot)
    }
    /// The batches of `book` holding a version from `from_version` on, in version order,
    /// as (first version, slot), until they hold `events_max` such versions.
    fn book_batches(&self, book: BookId, from_version: u64, events_max: u64, out: &mut Vec<(u64, usize)>);
    /// One past the last version of `book` in this segment, if the book has a batch here.
    fn book_end_version(&self, book: BookId) -> Option<u64>;
}

/// `slice::partition_point` over `0..len`.
fn partition_point(len: usize, mut is_before: impl FnMut(usize) -> bool) -> usize {
    let (mut low, mut high) = (0, len);
    while low < high {
        let middle = low + (high - low) / 2;
        if is_before(middle) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low
}

/// The index of a segment, in memory: the one being written, or a closed one whose
/// file is not written yet.
#[derive(Clone, Debug)]
pub(crate) struct MemoryIndex {
    sequence: u64,
    /// The position the segment starts at: its first record's, or the next one while
    /// it has none.
    start_position: u64,
    records: Vec<RecordEntry>,
    /// Each book's batches in version order: (first version, slot in `records`).
    books: HashMap<BookId, Vec<(u64, u32)>>,
}

impl MemoryIndex {
    pub fn new(sequence: u64, start_position: u64) -> Self {
        MemoryIndex { sequence, start_position, records: Vec::new(), books: HashMap::new() }
    }

    /// Indexes the record just written after the others.
    pub fn push(&mut self, book: BookId, first_version: u64, record: RecordEntry) {
        // Paired with the checks of a file read back: the records tile the segment and
        // the positions run on without a gap.
        debug_assert_eq!(record.first_position, self.end_position(), "records are indexed in log order");
        debug_assert_eq!(record.offset, self.covered_bytes(), "records are indexed in segment order");
        let slot = u32::try_from(self.records.len()).expect("fewer than 2^32 records in a segment");
        self.records.push(record);
        self.books.entry(book).or_default().push((first_version, slot));
    }

    pub fn end_position(&self) -> u64 {
        self.records.last().map_or(self.start_position, RecordEntry::end_position)
    }

    /// The bytes of the segment that its indexed records fill.
    pub fn covered_bytes(&self) -> u64 {
        self.records.last().map_or(0, RecordEntry::end_offset)
    }

    /// The index of the records before `end_position` only.
    fn prefix(&self, end_position: u64) -> MemoryIndex {
        let kept = self.records.partition_point(|r| r.first_position < end_position);
        let mut books = HashMap::new();
        for (book, batches) in &self.books {
            let batches: Vec<(u64, u32)> =
                batches.iter().copied().filter(|(_, slot)| (*slot as usize) < kept).collect();
            if !batches.is_empty() {
                books.insert(*book, batches);
            }
        }
        MemoryIndex {
            sequence: self.sequence,
            start_position: self.start_position,
            records: self.records[..kept].to_vec(),
            books,
        }
    }

    /// The file's bytes for this index.
    fn encode(&self) -> Vec<u8> {
        let n = self.records.len();
        let mut bytes = Vec::with_capacity(HEADER_BYTES + n * (RECORD_ENTRY_BYTES + BOOK_ENTRY_BYTES));
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        for value in [self.sequence, self.covered_bytes(), self.start_position, self.end_position(), n as u64] {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        for record in &self.records {
            bytes.extend_from_slice(&record.first_position.to_le_bytes());
            bytes.extend_from_slice(&record.offset.to_le_bytes());
            bytes.extend_from_slice(&record.body_len.to_le_bytes());
            bytes.extend_from_slice(&record.count.to_le_bytes());
        }
        let mut books: Vec<(&BookId, &(u64, u32))> =
            self.books.iter().flat_map(|(book, batches)| batches.iter().map(move |batch| (book, batch))).collect();
        books.sort_unstable_by_key(|(book, (first_version, _))| (*book.0.as_bytes(), *first_version));
        for (book, (first_version, slot)) in books {
            bytes.extend_from_slice(book.0.as_bytes());
            bytes.extend_from_slice(&first_version.to_be_bytes());
            bytes.extend_from_slice(&slot.to_le_bytes());
        }
        let crc = crc32fast::hash(&bytes[16..]);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        bytes
    }
}

impl Table for MemoryIndex {
    fn records(&self) -> usize {
        self.records.len()
    }

    fn record(&self, slot: usize) -> RecordEntry {
        self.records[slot]
    }

    fn book_batches(&self, book: BookId, from_version: u64, events_max: u64, out: &mut Vec<(u64, usize)>) {
        let Some(batches) = self.books.get(&book) else { return };
        let end_version =
            |(first_version, slot): (u64, u32)| first_version + u64::from(self.records[slot as usize].count);
        let start = batches.partition_point(|batch| end_version(*batch) <= from_version);
        let mut events = 0;
        for &(first_version, slot) in &batches[start..] {
            if events >= events_max {
                break;
            }
            events += end_version((first_version, slot)) - first_version.max(from_version);
            out.push((first_version, slot as usize));
        }
    }

    fn book_end_version(&self, book: BookId) -> Option<u64> {
        let &(first_version, slot) = self.books.get(&book)?.last()?;
        Some(first_version + u64::from(self.records[slot as usize].count))
    }
}

/// A closed segment's index file, mapped.
pub(crate) struct MappedIndex {
    map: memmap2::Mmap,
    sequence: u64,
    covered_bytes: u64,
    start_position: u64,
    end_position: u64,
    records: usize,
}

impl MappedIndex {
    /// Maps and checks the index file of segment `sequence` in `dir`. `Ok(None)` if
    /// there is none; `Err` with the reason when it cannot be used.
    pub fn open(dir: &Path, sequence: u64) -> Result<Option<Self>, String> {
        let path = index_path(dir, sequence);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error.to_string()),
        };
        // Mapped, not read: the index of a large log is hundreds of MB, and its pages
        // are better in the page cache (which the kernel can reclaim) than on the heap.
        // SAFETY: tollbook writes an index file only under a temporary name and renames
        // it into place, so a mapped file is never changed; a newer index of the same
        // segment replaces the name, not the mapped inode. Another process writing to
        // it would be tampering with the data directory.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string())?;
        Self::check(map, sequence).map(Some)
    }

    fn check(map: memmap2::Mmap, sequence: u64) -> Result<Self, String> {
        let bytes = &map[..];
        if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
            return Err("not a segment index".into());
        }
        let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if format != FORMAT {
            return Err(format!("written in format {format}, not {FORMAT}"));
        }
        if crc32fast::hash(&bytes[16..]) != u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) {
            return Err("damaged (checksum)".into());
        }
        let field = |n: usize| u64::from_le_bytes(bytes[16 + 8 * n..24 + 8 * n].try_into().expect("8 bytes"));
        let (file_sequence, covered_bytes, start_position, end_position, records) =
            (field(0), field(1), field(2), field(3), field(4));
        if file_sequence != sequence {
            return Err(format!("it indexes segment {file_sequence}"));
        }
        let records = usize::try_from(records).map_err(|_| "too many records")?;
        let expected_len = records
            .checked_mul(RECORD_ENTRY_BYTES + BOOK_ENTRY_BYTES)
            .and_then(|tables| tables.checked_add(HEADER_BYTES))
            .ok_or("too many records")?;
        if bytes.len() != expected_len {
            return Err("its length does not match its record count".into());
        }
        let index = MappedIndex { map, sequence, covered_bytes, start_position, end_position, records };
        index.check_tables()?;
        Ok(index)
    }

    /// Paired with `MemoryIndex::push`: the records tile the segment from its start with
    /// positions that run on without a gap, and each book's batches are sorted, point at
    /// records and run on version after version.
    fn check_tables(&self) -> Result<(), String> {
        let (mut position, mut offset) = (self.start_position, 0);
        for slot in 0..self.records {
            let record = self.record(slot);
            if record.first_position != position || record.offset != offset || record.count == 0 {
                return Err(format!("record {slot} does not follow the one before it"));
            }
            (position, offset) = (record.end_position(), record.end_offset());
        }
        if position != self.end_position || offset != self.covered_bytes {
            return Err("its records do not end where its header says".into());
        }
        let mut previous: Option<(BookId, u64)> = None;
        for n in 0..self.records {
            let (book, first_version, slot) = self.book_entry(n);
            if slot >= self.records {
                return Err(format!("book entry {n} points past the records"));
            }
            let end_version = first_version + u64::from(self.record(slot).count);
            match previous {
                Some((previous_book, previous_end)) if previous_book == book && previous_end != first_version => {
                    return Err(format!("book entry {n} does not follow the one before it"));
                }
                Some((previous_book, _)) if previous_book.0.as_bytes() > book.0.as_bytes() => {
                    return Err(format!("book entry {n} is out of order"));
                }
                _ => {}
            }
            previous = Some((book, end_version));
        }
        Ok(())
    }

    fn book_entry(&self, n: usize) -> (BookId, u64, usize) {
        let at = HEADER_BYTES + self.records * RECORD_ENTRY_BYTES + n * BOOK_ENTRY_BYTES;
        let entry = &self.map[at..at + BOOK_ENTRY_BYTES];
        let book = BookId(uuid::Uuid::from_bytes(entry[..16].try_into().expect("16 bytes")));
        let first_version = u64::from_be_bytes(entry[16..24].try_into().expect("8 bytes"));
        (book, first_version, u32::from_le_bytes(entry[24..].try_into().expect("4 bytes")) as usize)
    }

    /// The first 24 bytes of book entry `n`: book and first version, comparable as bytes.
    fn book_key(&self, n: usize) -> &[u8] {
        let at = HEADER_BYTES + self.records * RECORD_ENTRY_BYTES + n * BOOK_ENTRY_BYTES;
        &self.map[at..at + 24]
    }

    /// The index in memory, to go on appending to its segment.
    fn to_memory(&self) -> MemoryIndex {
        let mut index = MemoryIndex::new(self.sequence, self.start_position);
        index.records = (0..self.records).map(|slot| self.record(slot)).collect();
        for n in 0..self.records {
            let (book, first_version, slot) = self.book_entry(n);
            index.books.entry(book).or_default().push((first_version, slot as u32));
        }
        index
    }
}

fn book_key(book: BookId, version: u64) -> [u8; 24] {
    let mut key = [0; 24];
    key[..16].copy_from_slice(book.0.as_bytes());
    key[16..].copy_from_slice(&version.to_be_bytes());
    key
}

impl Table for MappedIndex {
    fn records(&self) -> usize {
        self.records
    }

    fn record(&self, slot: usize) -> RecordEntry {
        let at = HEADER_BYTES + slot * RECORD_ENTRY_BYTES;
        let entry = &self.map[at..at + RECORD_ENTRY_BYTES];
        RecordEntry {
            first_position: u64::from_le_bytes(entry[..8].try_into().expect("8 bytes")),
            offset: u64::from_le_bytes(entry[8..16].try_into().expect("8 bytes")),
            body_len: u32::from_le_bytes(entry[16..20].try_into().expect("4 bytes")),
            count: u32::from_le_bytes(entry[20..].try_into().expect("4 bytes")),
        }
    }

    fn book_batches(&self, book: BookId, from_version: u64, events_max: u64, out: &mut Vec<(u64, usize)>) {
        let key = book_key(book, from_version);
        let mut n = partition_point(self.records, |n| self.book_key(n) < &key[..]);
        // The batch holding `from_version` may start before it.
        if let Some(before) = n.checked_sub(1) {
            let (found, first_version, slot) = self.book_entry(before);
            if found == book && first_version + u64::from(self.record(slot).count) > from_version {
                n = before;
            }
        }
        let mut events = 0;
        while n < self.records && events < events_max {
            let (found, first_version, slot) = self.book_entry(n);
            if found != book {
                break;
            }
            events += first_version + u64::from(self.record(slot).count) - first_version.max(from_version);
            out.push((first_version, slot));
            n += 1;
        }
    }

    fn book_end_version(&self, book: BookId) -> Option<u64> {
        let key = book_key(book, u64::MAX);
        let last = partition_point(self.records, |n| self.book_key(n) <= &key[..]).checked_sub(1)?;
        let (found, first_version, slot) = self.book_entry(last);
        (found == book).then(|| first_version + u64::from(self.record(slot).count))
    }
}

/// A closed segment's index, wherever it is.
enum ClosedTable {
    Memory(MemoryIndex),
    Mapped(MappedIndex),
}

pub(crate) struct ClosedSegment {
    sequence: u64,
    end_position: u64,
    table: ClosedTable,
}

impl ClosedSegment {
    fn table(&self) -> &dyn Table {
        match &self.table {
            ClosedTable::Memory(index) => index,
            ClosedTable::Mapped(index) => index,
        }
    }

    pub fn mapped(index: MappedIndex) -> Self {
        ClosedSegment { sequence: index.sequence, end_position: index.end_position, table: ClosedTable::Mapped(index) }
    }
}

/// The index of every segment: the closed ones, oldest first, and the one being written.
struct Segments {
    closed: Vec<Arc<ClosedSegment>>,
    live: MemoryIndex,
}

/// The store's index of its segments. Appends push to it under the store's append lock
/// (taking this lock for a moment); readers copy out what they need under it and never
/// touch a mapped file or the disk while holding it.
pub(crate) struct SegmentIndex {
    dir: PathBuf,
    segments: RwLock<Segments>,
}

impl SegmentIndex {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Segments> {
        self.segments.read().expect("segment index lock")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Segments> {
        self.segments.write().expect("segment index lock")
    }

    /// Indexes the records just written to segment `sequence`, the one being written,
    /// in their order: (book, first version, record).
    pub fn push(&self, sequence: u64, records: impl Iterator<Item = (BookId, u64, RecordEntry)>) {
        let mut segments = self.write();
        assert_eq!(segments.live.sequence, sequence, "records are indexed in the segment being written");
        for (book, first_version, record) in records {
            segments.live.push(book, first_version, record);
        }
    }

    /// The segment being written was closed, and segment `sequence` started at
    /// `start_position`.
    pub fn rotate(&self, sequence: u64, start_position: u64) {
        let mut segments = self.write();
        let closed = std::mem::replace(&mut segments.live, MemoryIndex::new(sequence, start_position));
        segments.closed.push(Arc::new(ClosedSegment {
            sequence: closed.sequence,
            end_position: closed.end_position(),
            table: ClosedTable::Memory(closed),
        }));
    }

    /// The record of the batch holding `position`, and its segment.
    pub fn locate(&self, position: u64) -> Option<(u64, RecordEntry)> {
        let closed = {
            let segments = self.read();
            if position >= segments.live.start_position {
                let slot = segments.live.slot_holding(position)?;
                return Some((segments.live.sequence, segments.live.records[slot]));
            }
            let n = segments.closed.partition_point(|s| s.end_position <= position);
            segments.closed.get(n)?.clone()
        };
        let slot = closed.table().slot_holding(position)?;
        Some((closed.sequence, closed.table().record(slot)))
    }

    /// The batches of `book` holding versions from `from_version` on, in version order,
    /// until they hold `events_max` such versions (or there are no more).
    pub fn book_batches(&self, book: BookId, from_version: u64, events_max: u64) -> Vec<Located> {
        let mut found = Vec::new();
        let mut slots = Vec::new();
        let mut events = 0;
        // The closed segments not searched yet: a rotation while this runs closes more.
        let mut searched_below = 0;
        loop {
            let pending: Vec<Arc<ClosedSegment>> = {
                let segments = self.read();
                let pending: Vec<_> =
                    segments.closed.iter().filter(|s| s.sequence >= searched_below).cloned().collect();
                if pending.is_empty() {
                    segments.live.book_batches(book, from_version, events_max - events, &mut slots);
                    found.extend(slots.drain(..).map(|(first_version, slot)| Located {
                        segment: segments.live.sequence,
                        record: segments.live.records[slot],
                        first_version,
                    }));
                    return found;
                }
                pending
            };
            for closed in pending {
                searched_below = closed.sequence + 1;
                let table = closed.table();
                table.book_batches(book, from_version, events_max - events, &mut slots);
                for (first_version, slot) in slots.drain(..) {
                    let record = table.record(slot);
                    events += first_version + u64::from(record.count) - first_version.max(from_version);
                    found.push(Located { segment: closed.sequence, record, first_version });
                }
                if events >= events_max {
                    return found;
                }
            }
        }
    }

    /// One past the last version of `book` in the segments, or `None` if it has no batch
    /// there. Searches from the newest segment back: a book that wrote lately is found
    /// at once, one that never wrote costs a binary search per segment.
    pub fn book_end_version(&self, book: BookId) -> Option<u64> {
        let closed: Vec<Arc<ClosedSegment>> = {
            let segments = self.read();
            if let Some(end) = segments.live.book_end_version(book) {
                return Some(end);
            }
            segments.closed.clone()
        };
        closed.iter().rev().find_map(|segment| segment.table().book_end_version(book))
    }

    /// Writes the index file of every closed segment before `synced_segment` that has
    /// none yet (their records were all synced before the segment `synced_segment`'s
    /// were), then maps it in place of the memory. With `live_end`, also writes the
    /// index of the segment being written, up to that position (synced up to there): a
    /// clean stop leaves nothing to scan at the next open. Returns how many it wrote.
    pub fn write_files(&self, synced_segment: u64, live_end: Option<u64>) -> Result<usize, StoreError> {
        let unwritten: Vec<Arc<ClosedSegment>> = self
            .read()
            .closed
            .iter()
            .filter(|s| s.sequence < synced_segment && matches!(s.table, ClosedTable::Memory(_)))
            .cloned()
            .collect();
        let mut written = 0;
        for closed in unwritten {
            let ClosedTable::Memory(index) = &closed.table else { continue };
            let mapped = self.write_file(index)?;
            let mut segments = self.write();
            if let Some(slot) = segments.closed.iter_mut().find(|s| s.sequence == closed.sequence) {
                *slot = Arc::new(ClosedSegment::mapped(mapped));
            }
            written += 1;
        }
        if let Some(end_position) = live_end {
            let live = {
                let segments = self.read();
                (segments.live.sequence == synced_segment).then(|| segments.live.prefix(end_position))
            };
            if let Some(live) = live {
                self.write_file(&live)?;
                written += 1;
            }
        }
        Ok(written)
    }

    /// Writes `index` to its file (under a temporary name, fsynced, renamed, the
    /// directory fsynced) and maps it.
    fn write_file(&self, index: &MemoryIndex) -> Result<MappedIndex, StoreError> {
        write_index_file(&self.dir, index)?;
        MappedIndex::open(&self.dir, index.sequence)
            .map_err(|reason| StoreError::Corrupt { position: index.start_position, reason })?
            .ok_or_else(|| StoreError::Io(format!("the index of segment {} vanished", index.sequence)))
    }
}

pub(crate) fn index_path(dir: &Path, sequence: u64) -> PathBuf {
    segment::segment_path(dir, sequence).with_extension(&FILE_SUFFIX[1..])
}

fn write_index_file(dir: &Path, index: &MemoryIndex) -> Result<(), StoreError> {
    let path = index_path(dir, index.sequence);
    let temp = segment::segment_path(dir, index.sequence).with_extension(&TEMP_SUFFIX[1..]);
    let mut file = File::create(&temp).map_err(segment::io)?;
    file.write_all(&index.encode()).and_then(|()| file.sync_all()).map_err(segment::io)?;
    std::fs::rename(&temp, &path).map_err(segment::io)?;
    segment::sync_dir(dir)
}

/// What the open found: the index, and where the log goes on.
pub(crate) struct Opened {
    pub index: SegmentIndex,
    /// The segment to append to and its valid length (a torn record after it is cut).
    pub sequence: u64,
    pub valid_bytes: u64,
    pub next_position: u64,
}

/// Indexes the segments of `dir`, whose first record is at `start_position`: maps each
/// closed segment's index file, scans what no usable file covers (writing the missing
/// files of closed segments), and reads the last segment's index into memory. Fails if
/// a segment other than the last has bytes after its whole records, or if the records
/// do not run on from position to position.
pub(crate) fn open(dir: &Path, start_position: u64) -> Result<Opened, StoreError> {
    remove_temporary_files(dir)?;
    let files = segment::segments(dir)?;
    let mut closed = Vec::new();
    let mut next_position = start_position;
    let (mut scanned, mut rebuilt) = (0usize, 0usize);
    let mut live = None;
    for (n, (sequence, path)) in files.iter().enumerate() {
        let sequence = *sequence;
        let last = n + 1 == files.len();
        let file_bytes = std::fs::metadata(path).map_err(segment::io)?.len();
        let mapped = match MappedIndex::open(dir, sequence) {
            Ok(Some(mapped)) if mapped.start_position == next_position && mapped.covered_bytes <= file_bytes => {
                Some(mapped)
            }
            Ok(Some(_)) => {
                tracing::warn!(sequence, "a segment's index does not match the segment; scanning the segment");
                None
            }
            Ok(None) => None,
            Err(reason) => {
                tracing::warn!(sequence, %reason, "a segment's index cannot be used; scanning the segment");
                None
            }
        };
        let mapped = match mapped {
            Some(mapped) if !last && mapped.covered_bytes == file_bytes => {
                next_position = mapped.end_position;
                closed.push(Arc::new(ClosedSegment::mapped(mapped)));
                continue;
            }
            other => other,
        };
        let bytes = std::fs::read(path).map_err(segment::io)?;
        let from_file = mapped.as_ref().map(MappedIndex::to_memory);
        let (index, valid) = match from_file.map(|index| scan(index, &bytes)) {
            Some(Ok(scanned)) => scanned,
            Some(Err(error)) => {
                tracing::warn!(sequence, %error, "a segment does not go on from its index; scanning it whole");
                scan(MemoryIndex::new(sequence, next_position), &bytes)?
            }
            None => scan(MemoryIndex::new(sequence, next_position), &bytes)?,
        };
        if index.covered_bytes() > mapped.as_ref().map_or(0, |m| m.covered_bytes) {
            scanned += 1;
        }
        next_position = index.end_position();
        if last {
            live = Some((index, valid));
            continue;
        }
        if valid < bytes.len() as u64 {
            if !segment::all_zero(&bytes[valid as usize..]) {
                let reason = format!("segment {} is damaged at byte {valid}", path.display());
                return Err(StoreError::Corrupt { position: next_position, reason });
            }
            // Zeros written ahead of the records, left by a crash before the segment's
            // cut was durable.
            let file = std::fs::OpenOptions::new().write(true).open(path).map_err(segment::io)?;
            file.set_len(valid).and_then(|()| file.sync_all()).map_err(segment::io)?;
        }
        // Records a killed process wrote may not have been synced yet; the index file
        // is about to count them as durable.
        File::open(path).and_then(|f| f.sync_data()).map_err(segment::io)?;
        write_index_file(dir, &index)?;
        rebuilt += 1;
        closed.push(Arc::new(ClosedSegment::mapped(mapped_again(dir, sequence)?)));
    }
    if scanned > 0 || rebuilt > 0 {
        tracing::info!(scanned, rebuilt, "indexed segments that had no usable index file");
    }
    let (live, valid_bytes) = live.unwrap_or_else(|| (MemoryIndex::new(1, start_position), 0));
    Ok(Opened {
        sequence: live.sequence,
        valid_bytes,
        next_position,
        index: SegmentIndex { dir: dir.to_owned(), segments: RwLock::new(Segments { closed, live }) },
    })
}

fn mapped_again(dir: &Path, sequence: u64) -> Result<MappedIndex, StoreError> {
    MappedIndex::open(dir, sequence)
        .map_err(|reason| StoreError::Corrupt { position: 0, reason })?
        .ok_or_else(|| StoreError::Io(format!("the index of segment {sequence} vanished")))
}

/// Indexes the whole records of `bytes` (a segment's) after those `index` covers.
/// Returns the index and the end of the last whole record.
fn scan(mut index: MemoryIndex, bytes: &[u8]) -> Result<(MemoryIndex, u64), StoreError> {
    let start = index.covered_bytes();
    let tail = bytes.get(start as usize..).unwrap_or_default();
    let mut valid = start;
    for record in segment::records(tail) {
        let due = index.end_position();
        if record.first_position != due {
            let reason =
                format!("segment {} holds position {} where {due} was due", index.sequence, record.first_position);
            return Err(StoreError::Corrupt { position: record.first_position, reason });
        }
        let count = framed_count(record.first_position, record.framed)?;
        let entry = RecordEntry {
            first_position: record.first_position,
            offset: start + record.at as u64,
            body_len: (record.len - segment::RECORD_HEADER_BYTES) as u32,
            count,
        };
        index.push(record.book, record.first_version, entry);
        valid = entry.end_offset();
    }
    Ok((index, valid))
}

/// The number of events in a framed batch, checking the framing ends where the record does.
fn framed_count(first_position: u64, framed: &[u8]) -> Result<u32, StoreError> {
    let corrupt = || StoreError::Corrupt { position: first_position, reason: "batch framing is damaged".into() };
    let count = u32::from_le_bytes(framed.get(..4).ok_or_else(corrupt)?.try_into().expect("4 bytes"));
    let mut at = 4usize;
    for _ in 0..count {
        let len = u32::from_le_bytes(framed.get(at..at + 4).ok_or_else(corrupt)?.try_into().expect("4 bytes"));
        at += 4 + len as usize;
    }
    if at != framed.len() || count == 0 {
        return Err(corrupt());
    }
    Ok(count)
}

/// Index files a crash left half written under their temporary name.
fn remove_temporary_files(dir: &Path) -> Result<(), StoreError> {
    for entry in std::fs::read_dir(dir).map_err(segment::io)? {
        let entry = entry.map_err(segment::io)?;
        if entry.file_name().to_str().is_some_and(|name| name.ends_with(TEMP_SUFFIX)) {
            std::fs::remove_file(entry.path()).map_err(segment::io)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(n: u128) -> BookId {
        BookId(uuid::Uuid::from_u128(n))
    }

    /// Records of books 1..=3 in turn, batch k of `k % 4 + 1` events, contiguous.
    fn sample(sequence: u64, start_position: u64, batches: usize) -> (MemoryIndex, Vec<(BookId, u64, RecordEntry)>) {
        let mut index = MemoryIndex::new(sequence, start_position);
        let mut versions: HashMap<BookId, u64> = HashMap::new();
        let mut pushed = Vec::new();
        for k in 0..batches {
            let owner = book(k as u128 % 3 + 1);
            let count = (k % 4 + 1) as u32;
            let version = versions.entry(owner).or_default();
            let record = RecordEntry {
                first_position: index.end_position(),
                offset: index.covered_bytes(),
                body_len: 40 + k as u32,
                count,
            };
            index.push(owner, *version, record);
            pushed.push((owner, *version, record));
            *version += u64::from(count);
        }
        (index, pushed)
    }

    /// The memory and the mapped file answer every question alike.
    #[test]
    fn a_written_index_answers_as_the_memory_did() {
        let dir = tempfile::tempdir().unwrap();
        let (memory, pushed) = sample(4, 100, 57);
        write_index_file(dir.path(), &memory).unwrap();
        let mapped = MappedIndex::open(dir.path(), 4).unwrap().unwrap();
        let tables: [&dyn Table; 2] = [&memory, &mapped];
        let end = memory.end_position();
        for table in tables {
            for position in 90..end + 3 {
                let expected =
                    pushed.iter().position(|(_, _, r)| r.first_position <= position && position < r.end_position());
                assert_eq!(table.slot_holding(position), expected, "position {position}");
            }
            for owner in [book(1), book(2), book(3), book(9)] {
                let of_book: Vec<_> = pushed.iter().filter(|(b, _, _)| *b == owner).collect();
                let end_version = of_book.last().map(|(_, v, r)| v + u64::from(r.count));
                assert_eq!(table.book_end_version(owner), end_version);
                for from_version in 0..end_version.unwrap_or(0) + 2 {
                    for events_max in [1, 3, 1000] {
                        let mut out = Vec::new();
                        table.book_batches(owner, from_version, events_max, &mut out);
                        let mut expected = Vec::new();
                        let mut events = 0;
                        for (_, version, record) in &of_book {
                            if version + u64::from(record.count) <= from_version || events >= events_max {
                                continue;
                            }
                            events += version + u64::from(record.count) - version.max(&from_version);
                            expected.push((*version, table.slot_holding(record.first_position).unwrap()));
                        }
                        assert_eq!(out, expected, "book {owner:?} from {from_version} max {events_max}");
                    }
                }
            }
        }
        let back = mapped.to_memory();
        assert_eq!(back.records, memory.records);
        assert_eq!(back.books, memory.books);
    }

    #[test]
    fn a_damaged_or_foreign_index_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (memory, _) = sample(2, 1, 10);
        write_index_file(dir.path(), &memory).unwrap();
        let path = index_path(dir.path(), 2);
        let good = std::fs::read(&path).unwrap();
        assert!(MappedIndex::open(dir.path(), 2).unwrap().is_some());
        assert!(MappedIndex::open(dir.path(), 3).unwrap().is_none(), "no file, no index");
        std::fs::copy(&path, index_path(dir.path(), 3)).unwrap();
        assert!(MappedIndex::open(dir.path(), 3).is_err(), "another segment's index");
        for at in [0, 9, 13, 20, HEADER_BYTES + 3, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            assert!(MappedIndex::open(dir.path(), 2).is_err(), "a flipped byte at {at}");
        }
        std::fs::write(&path, &good[..good.len() - 5]).unwrap();
        assert!(MappedIndex::open(dir.path(), 2).is_err(), "a cut file");
    }

    #[test]
    fn a_prefix_keeps_the_records_before_a_position() {
        let (memory, pushed) = sample(1, 1, 20);
        let cut = pushed[12].2.first_position;
        let prefix = memory.prefix(cut);
        assert_eq!(prefix.end_position(), cut);
        assert_eq!(prefix.records, memory.records[..12]);
        assert_eq!(prefix.books.values().map(Vec::len).sum::<usize>(), 12);
        assert_eq!(memory.prefix(0).records.len(), 0);
    }
}
