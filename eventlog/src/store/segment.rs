//! The sled backend's log segments: where the events are, and what makes them durable.
//!
//! Every appended batch is written as one record at the end of the current segment
//! file, and one `fdatasync` per group commit makes every record written since the last
//! one durable. The store indexes the records itself (see `super::segment_index`). Two
//! measurements chose this over keeping the events in sled:
//! - sled 0.34's `flush` ends in `sync_file_range`, which flushes neither the device's
//!   write cache nor the file's metadata: it survives a killed process, not a power cut;
//! - sled rewrites leaves into its own log: with the events in sled, each event cost
//!   about 5 KB of disk writes (75 MB/s at 15,000 payments/s), and sled's I/O pool
//!   wakes all of its threads for every buffer it writes.
//!
//! A segment is a run of records: `[body length u32 LE][CRC-32 of the body u32 LE]
//! [body]`, and a body is `first position u64 BE, book (16 bytes), first version u64 BE,
//! then the batch framed as `[count u32][len u32][bytes]...``. A crash can leave the last
//! record of the last segment torn; it was never acknowledged (its `fdatasync` had not
//! returned), and the segment is cut there when the store opens.
//!
//! Records are written over zeros: a thread of the store ([`ZeroAhead`]) writes and syncs
//! zeros a few MB ahead of the last record, so that an append does not grow the file. An
//! `fdatasync` after an append that grows the file must also journal its new size: 219–276
//! µs on the VM's disk for 30 KB, against 158 µs over zeros already there (what the
//! PostgreSQL WAL's preallocated segments do). A zero where a record's header is due ends
//! the records, like a torn one; a closed segment is cut back to its records, and a store
//! that opens finds zeros, or a torn record then zeros, after the last whole record.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use domain::BookId;

use crate::error::StoreError;

const FILE_PREFIX: &str = "segment-";
const FILE_SUFFIX: &str = ".log";
pub(crate) const RECORD_HEADER_BYTES: usize = 8;
const BODY_HEADER_BYTES: usize = 8 + 16 + 8;

/// Appends the record of one batch to `buffer`.
pub(crate) fn encode_record(
    buffer: &mut Vec<u8>,
    first_position: u64,
    book: BookId,
    first_version: u64,
    framed: &[u8],
) {
    let body_len = BODY_HEADER_BYTES + framed.len();
    buffer.reserve(RECORD_HEADER_BYTES + body_len);
    let header_at = buffer.len();
    buffer.extend_from_slice(&(body_len as u32).to_le_bytes());
    buffer.extend_from_slice(&[0; 4]);
    let body_at = buffer.len();
    buffer.extend_from_slice(&first_position.to_be_bytes());
    buffer.extend_from_slice(book.0.as_bytes());
    buffer.extend_from_slice(&first_version.to_be_bytes());
    buffer.extend_from_slice(framed);
    let crc = crc32fast::hash(&buffer[body_at..]);
    buffer[header_at + 4..header_at + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The body of the record that `bytes` (header and body) hold, or `None` when it is torn
/// or damaged.
fn checked_body(bytes: &[u8]) -> Option<&[u8]> {
    let header = bytes.get(..RECORD_HEADER_BYTES)?;
    let body_len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    let body = bytes.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + body_len)?;
    (body_len >= BODY_HEADER_BYTES && crc32fast::hash(body) == crc).then_some(body)
}

/// A record as read, borrowing its framed events.
pub(crate) struct RecordView<'a> {
    /// Where the record starts in the bytes it was read from.
    pub at: usize,
    pub len: usize,
    pub first_position: u64,
    pub book: BookId,
    pub first_version: u64,
    pub framed: &'a [u8],
}

/// The whole, undamaged records at the start of `bytes`, in order: the iteration stops at
/// the first torn or damaged one, or at a record that `bytes` holds only in part.
pub(crate) fn records(bytes: &[u8]) -> impl Iterator<Item = RecordView<'_>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let body = checked_body(&bytes[at..])?;
        let uuid: [u8; 16] = body[8..24].try_into().expect("16 bytes");
        let view = RecordView {
            at,
            len: RECORD_HEADER_BYTES + body.len(),
            first_position: u64::from_be_bytes(body[..8].try_into().expect("8 bytes")),
            book: BookId(uuid::Uuid::from_bytes(uuid)),
            first_version: u64::from_be_bytes(body[24..32].try_into().expect("8 bytes")),
            framed: &body[BODY_HEADER_BYTES..],
        };
        at += view.len;
        Some(view)
    })
}

/// The length of the record starting `bytes`, from its header, if the header is there.
pub(crate) fn record_len(bytes: &[u8]) -> Option<usize> {
    let header = bytes.get(..RECORD_HEADER_BYTES)?;
    Some(RECORD_HEADER_BYTES + u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize)
}

/// Reads the framed events of the record at `offset` of `file`, checking its CRC.
pub(crate) fn read_framed(file: &File, offset: u64, body_len: u32) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![0; RECORD_HEADER_BYTES + body_len as usize];
    file.read_exact_at(&mut bytes, offset).map_err(io)?;
    if checked_body(&bytes).is_none_or(|body| body.len() != body_len as usize) {
        return Err(StoreError::Corrupt { position: 0, reason: format!("the record at byte {offset} is damaged") });
    }
    bytes.drain(..RECORD_HEADER_BYTES + BODY_HEADER_BYTES);
    Ok(bytes)
}

pub(crate) fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{FILE_PREFIX}{sequence:020}{FILE_SUFFIX}"))
}

/// The segments of `dir`, oldest first.
pub(crate) fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(sequence) = name
            .to_str()
            .and_then(|n| n.strip_prefix(FILE_PREFIX))
            .and_then(|n| n.strip_suffix(FILE_SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        files.push((sequence, entry.path()));
    }
    files.sort();
    Ok(files)
}

/// True when `bytes` hold only zeros.
pub(crate) fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|byte| *byte == 0)
}

/// The segment appends go to.
pub(crate) struct Segment {
    dir: PathBuf,
    sequence: u64,
    file: Arc<File>,
    bytes: u64,
    zeros: Arc<ZeroAhead>,
}

impl Segment {
    /// Opens segment `sequence` of `dir` for appending after its first `valid` bytes, or
    /// creates it, making its name durable. After `valid` there may be zeros written
    /// ahead, which are kept; anything else there (a torn record) is cut off. Zeros are
    /// written ahead up to `bytes_max` into a segment, where appends move to the next.
    pub fn open(dir: &Path, sequence: u64, valid: u64, bytes_max: u64) -> Result<Self, StoreError> {
        let (file, zeroed) = Self::open_file(dir, sequence, valid)?;
        let zeros = ZeroAhead::new(file.clone(), valid, zeroed, bytes_max);
        Ok(Segment { dir: dir.to_owned(), sequence, file, bytes: valid, zeros })
    }

    /// The file of segment `sequence`, and how far it is written (records, then zeros).
    fn open_file(dir: &Path, sequence: u64, valid: u64) -> Result<(Arc<File>, u64), StoreError> {
        let path = segment_path(dir, sequence);
        let created = !path.exists();
        let file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(io)?;
        let mut zeroed = valid;
        if created {
            sync_dir(dir)?;
        } else {
            let length = file.metadata().map_err(io)?.len();
            if length > valid {
                let mut tail = vec![0; (length - valid) as usize];
                file.read_exact_at(&mut tail, valid).map_err(io)?;
                if all_zero(&tail) {
                    zeroed = length;
                } else {
                    tracing::warn!(segment = %path.display(), valid, "cutting a torn record off the log's last segment");
                    file.set_len(valid).map_err(io)?;
                }
            }
            // Records a killed process wrote may not have been synced yet; the open is
            // about to count them as durable.
            file.sync_all().map_err(io)?;
        }
        Ok((Arc::new(file), zeroed))
    }

    /// The writer of zeros ahead of this segment's records, for the store's zeroing thread.
    pub fn zero_ahead(&self) -> Arc<ZeroAhead> {
        self.zeros.clone()
    }

    /// Writes a record; it is durable once the next [`Segment::sync_handle`] sync returns.
    /// Returns the record's offset.
    pub fn append(&mut self, record: &[u8]) -> Result<u64, StoreError> {
        let offset = self.bytes;
        let end = offset + record.len() as u64;
        self.zeros.before_write(end);
        self.file.write_all_at(record, offset).map_err(io)?;
        self.bytes = end;
        Ok(offset)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    pub fn sync_handle(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Starts the next segment. This one is cut back to its records (the next sync of
    /// its handle makes that durable; a store that opens cuts zeros off a closed segment
    /// too).
    pub fn rotate(&mut self) -> Result<(), StoreError> {
        let (file, zeroed) = Self::open_file(&self.dir, self.sequence + 1, 0)?;
        self.zeros.switch_to(file.clone(), zeroed);
        self.file.set_len(self.bytes).map_err(io)?;
        (self.sequence, self.file, self.bytes) = (self.sequence + 1, file, 0);
        Ok(())
    }
}

/// Zeros written this far ahead of the last record, at most.
const ZEROS_AHEAD_BYTES: u64 = 4 << 20;
/// Zeros written and synced at once: small, since the flusher's syncs wait behind them.
/// With 4 MiB steps the in-process bench at 100 books fell from ~300k commands/s to
/// ~250k, its p99 from 7–9 ms to 22–24; with 1 MiB, to ~290k and 10–12 ms.
const ZERO_STEP_BYTES: u64 = 256 << 10;

/// Writes and syncs zeros ahead of the records of the segment being appended to, on a
/// thread of its own ([`ZeroAhead::run`]), never where a record is or is being written.
pub(crate) struct ZeroAhead {
    state: Mutex<ZeroState>,
    changed: Condvar,
}

struct ZeroState {
    file: Arc<File>,
    /// Bumped when appends move to the next segment.
    generation: u64,
    /// Where the records end, once the write under way is done.
    records_end: u64,
    /// The file is written up to here: records, then zeros.
    zeroed: u64,
    /// A step being zeroed from here on, outside the lock.
    zeroing_from: Option<u64>,
    bytes_max: u64,
    stop: bool,
}

impl ZeroAhead {
    fn new(file: Arc<File>, records_end: u64, zeroed: u64, bytes_max: u64) -> Arc<Self> {
        let state = ZeroState { file, generation: 0, records_end, zeroed, zeroing_from: None, bytes_max, stop: false };
        Arc::new(ZeroAhead { state: Mutex::new(state), changed: Condvar::new() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ZeroState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Called before records are written up to `end`: waits while zeros are being
    /// written where they go, and wakes the thread when the zeros ahead run short.
    fn before_write(&self, end: u64) {
        let mut state = self.lock();
        while state.zeroing_from.is_some_and(|from| from < end) {
            state = self.changed.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.records_end = end;
        state.zeroed = state.zeroed.max(end);
        if state.zeroed < end + ZEROS_AHEAD_BYTES / 2 && state.zeroed < state.bytes_max {
            self.changed.notify_all();
        }
    }

    /// Appends go to `file` now, written up to `zeroed` (zeros, as it was opened).
    fn switch_to(&self, file: Arc<File>, zeroed: u64) {
        let mut state = self.lock();
        // A step under way writes to the old file, which is about to be cut.
        while state.zeroing_from.is_some() {
            state = self.changed.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.file = file;
        state.generation += 1;
        state.records_end = 0;
        state.zeroed = zeroed;
        self.changed.notify_all();
    }

    pub fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }

    /// Zeros ahead until stopped. A failure to write zeros only costs speed (appends
    /// then grow the file, as without them), so it is logged and the thread stops.
    pub fn run(&self) {
        let zeros = vec![0u8; ZERO_STEP_BYTES as usize];
        loop {
            let (file, generation, from, len) = {
                let mut state = self.lock();
                loop {
                    if state.stop {
                        return;
                    }
                    let wanted = (state.records_end + ZEROS_AHEAD_BYTES).min(state.bytes_max);
                    if state.zeroed < wanted {
                        break;
                    }
                    state = self.changed.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                let from = state.zeroed;
                let len = ZERO_STEP_BYTES.min(state.bytes_max - from);
                state.zeroing_from = Some(from);
                (state.file.clone(), state.generation, from, len)
            };
            let written = file.write_all_at(&zeros[..len as usize], from).and_then(|()| file.sync_data());
            let mut state = self.lock();
            state.zeroing_from = None;
            if state.generation == generation && written.is_ok() {
                state.zeroed = state.zeroed.max(from + len);
            }
            self.changed.notify_all();
            if let Err(error) = written {
                tracing::warn!(%error, "cannot write zeros ahead of the event log; appends grow its file instead");
                return;
            }
        }
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

pub(crate) fn io(error: std::io::Error) -> StoreError {
    StoreError::Io(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> (u64, BookId, u64, Vec<u8>) {
        (n * 10, BookId(uuid::Uuid::from_u128(u128::from(n))), n, vec![n as u8; (n as usize * 7) % 50])
    }

    /// Whatever byte a crash cuts a segment at, what is read back is the records written
    /// whole before that byte, in order.
    #[test]
    fn a_segment_cut_anywhere_reads_back_as_its_whole_records() {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for n in 1..=6 {
            let (position, book, version, framed) = record(n);
            encode_record(&mut bytes, position, book, version, &framed);
            ends.push(bytes.len());
        }
        for cut in 0..=bytes.len() {
            let read: Vec<RecordView> = records(&bytes[..cut]).collect();
            let whole = ends.iter().filter(|end| **end <= cut).count();
            assert_eq!(read.len(), whole, "cut at {cut}");
            for (n, found) in (1..).zip(&read) {
                let (first_position, book, first_version, framed) = record(n);
                assert_eq!(
                    (found.first_position, found.book, found.first_version),
                    (first_position, book, first_version)
                );
                assert_eq!(found.framed, framed);
                assert_eq!(found.at, if n == 1 { 0 } else { ends[n as usize - 2] });
                assert_eq!(found.at + found.len, ends[n as usize - 1]);
            }
        }
    }

    #[test]
    fn a_flipped_byte_ends_the_valid_prefix_and_fails_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::open(dir.path(), 1, 0, 1 << 20).unwrap();
        let mut bytes = Vec::new();
        for n in 1..=3 {
            let (position, book, version, framed) = record(n);
            encode_record(&mut bytes, position, book, version, &framed);
        }
        segment.append(&bytes).unwrap();
        let (second_at, second_body) = {
            let second = records(&bytes).nth(1).unwrap();
            (second.at, (second.len - RECORD_HEADER_BYTES) as u32)
        };
        assert_eq!(read_framed(&segment.file, second_at as u64, second_body).unwrap(), record(2).3);

        let mut damaged = bytes.clone();
        damaged[second_at + RECORD_HEADER_BYTES + 3] ^= 0x40;
        assert_eq!(records(&damaged).count(), 1);
        std::fs::write(segment_path(dir.path(), 1), &damaged).unwrap();
        assert!(matches!(read_framed(&segment.file, second_at as u64, second_body), Err(StoreError::Corrupt { .. })));
    }

    /// Waits until the zeroing thread has written at least `bytes` of segment `sequence`.
    fn wait_for_length(dir: &Path, sequence: u64, bytes: u64) -> u64 {
        for _ in 0..2000 {
            let length = std::fs::metadata(segment_path(dir, sequence)).unwrap().len();
            if length >= bytes {
                return length;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("no zeros written ahead of segment {sequence}");
    }

    /// Records go over zeros written ahead; the records read back whole and are followed
    /// by zeros only; a reopen keeps the zeros and appends after the records; a rotation
    /// cuts the closed segment back to its records.
    #[test]
    fn records_are_written_over_zeros_written_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let limit = 3 * ZERO_STEP_BYTES;
        let mut segment = Segment::open(dir.path(), 1, 0, limit).unwrap();
        let zeros = segment.zero_ahead();
        let thread = std::thread::spawn({
            let zeros = zeros.clone();
            move || zeros.run()
        });
        assert_eq!(wait_for_length(dir.path(), 1, limit), limit, "zeros up to the segment's limit, no further");
        let mut bytes = Vec::new();
        for n in 1..=3 {
            let (position, book, version, framed) = record(n);
            encode_record(&mut bytes, position, book, version, &framed);
        }
        segment.append(&bytes).unwrap();
        let file = std::fs::read(segment_path(dir.path(), 1)).unwrap();
        assert_eq!(file.len() as u64, limit, "the records went over the zeros");
        assert_eq!(records(&file).count(), 3);
        assert!(all_zero(&file[bytes.len()..]));

        zeros.stop();
        thread.join().unwrap();
        drop(segment);
        let mut reopened = Segment::open(dir.path(), 1, bytes.len() as u64, limit).unwrap();
        assert_eq!(std::fs::metadata(segment_path(dir.path(), 1)).unwrap().len(), limit, "the zeros are kept");
        let (position, book, version, framed) = record(4);
        let mut fourth = Vec::new();
        encode_record(&mut fourth, position, book, version, &framed);
        assert_eq!(reopened.append(&fourth).unwrap(), bytes.len() as u64);
        bytes.extend_from_slice(&fourth);
        assert_eq!(records(&std::fs::read(segment_path(dir.path(), 1)).unwrap()).count(), 4);

        reopened.rotate().unwrap();
        assert_eq!(std::fs::read(segment_path(dir.path(), 1)).unwrap(), bytes, "the closed segment is its records");
        assert_eq!(reopened.sequence(), 2);
        assert_eq!(reopened.append(&fourth).unwrap(), 0);
    }

    /// A torn record followed by zeros is cut off with the zeros; zeros alone are kept.
    #[test]
    fn opening_a_segment_cuts_a_torn_record_among_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        let (position, book, version, framed) = record(5);
        encode_record(&mut bytes, position, book, version, &framed);
        let whole = bytes.len();
        encode_record(&mut bytes, position + 5, book, version + 1, &framed);
        bytes.truncate(whole + 6);
        bytes.resize(whole + 4096, 0);
        std::fs::write(segment_path(dir.path(), 3), &bytes).unwrap();
        let segment = Segment::open(dir.path(), 3, whole as u64, 1 << 20).unwrap();
        assert_eq!(segment.bytes(), whole as u64);
        assert_eq!(std::fs::read(segment_path(dir.path(), 3)).unwrap(), bytes[..whole]);
    }

    #[test]
    fn opening_a_segment_cuts_what_follows_its_valid_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::open(dir.path(), 7, 0, 1 << 20).unwrap();
        let mut bytes = Vec::new();
        let (position, book, version, framed) = record(1);
        encode_record(&mut bytes, position, book, version, &framed);
        segment.append(&bytes).unwrap();
        segment.append(&bytes[..5]).unwrap();
        drop(segment);
        let reopened = Segment::open(dir.path(), 7, bytes.len() as u64, 1 << 20).unwrap();
        assert_eq!(reopened.bytes(), bytes.len() as u64);
        assert_eq!(std::fs::read(segment_path(dir.path(), 7)).unwrap(), bytes);
        assert_eq!(segments(dir.path()).unwrap().iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![7]);
    }
}
