//! The models' snapshot file: the state at one position, so that a restart loads it and
//! projects only the log after it.
//!
//! Layout (format 6): `TBMODELS`, the format (u32 LE), the position (u64 LE), the
//! account count (u64 LE), the count of CDR id entries (u64 LE), the byte length of the
//! CDR id entries (u64 LE); each account ([`crate::compact`]); the CDR id entries
//! (sorted, as differences); where each account ends (u64 LE each, from the first
//! account's start); then a CRC-32 of everything before it. The table of ends lets a
//! start decode the accounts on every core at once. The file is written beside its
//! final name, synced, and renamed over it: a crash leaves either the old snapshot or
//! the new one, and a damaged or foreign file is not read (the models are then rebuilt
//! from the log, which is always possible).
//!
//! The formats before are still read: 5 (no byte length in the header, accounts in
//! postcard, entries as two u64 LE each) and 4 (as 5 without the table of ends, the
//! entry count after the accounts, read on one core).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imbl::Vector;
use serde::{Deserialize, Serialize};

use crate::compact;
use crate::error::ProjectionError;
use crate::recent::Recent;
use crate::state::{
    AccountModel, AccountView, Buckets, CdrIdIndex, CdrRef, Chunk, Chunked, Entry, Model, PostingEntry, Sums,
};

/// The layout of the snapshot file. A file of another format is not read: the models
/// are rebuilt from the log. (Formats 1 to 3 were sled trees of earlier versions; 4 and
/// 5 are read, see [`decode`] and [`decode_format_4`].)
pub(crate) const MODELS_FORMAT: u32 = 6;
const FORMAT_5: u32 = 5;
const FORMAT_4: u32 = 4;
/// Magic, format, position, account count, CDR id entry count, and in format 6 the CDR
/// id entries' byte length.
const HEADER_BYTES_5: usize = 8 + 4 + 8 + 8 + 8;
const HEADER_BYTES: usize = HEADER_BYTES_5 + 8;
const MAGIC: &[u8; 8] = b"TBMODELS";
pub(crate) const SNAPSHOT_FILE: &str = "models.snapshot";

#[derive(Deserialize)]
struct AccountIn {
    view: AccountView,
    postings: Vec<Chunk<PostingEntry>>,
    buckets: Vec<(i64, Sums)>,
    cdrs: Vec<Vec<CdrRef>>,
    trail: Vec<u64>,
}

pub(crate) fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

/// A writer that keeps the CRC of what passed through it.
struct Checked<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Checked<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.crc.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn io(error: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Storage(format!("models snapshot: {error}"))
}

/// The bytes of `model` with the CDR ids at or before its position.
pub(crate) fn encode(model: &Model, cdr_ids: &CdrIdIndex) -> Result<Vec<u8>, ProjectionError> {
    let mut out = Checked { inner: Vec::new(), crc: crc32fast::Hasher::new() };
    write_body(&mut out, model, cdr_ids, Cores::One)?;
    let crc = out.crc.finalize();
    let mut bytes = out.inner;
    bytes.extend_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

/// What the models hold of one account, whatever chunks it is cut into (chunk
/// boundaries depend on the version that built them): equal bytes, equal content.
pub(crate) fn account_bytes(account: &AccountModel, up_to: u64) -> Vec<u8> {
    let account = &*account.at(up_to);
    #[derive(Serialize)]
    struct Content<'a> {
        view: &'a AccountView,
        postings: Vec<&'a PostingEntry>,
        buckets: Vec<(i64, &'a Sums)>,
        cdrs: Vec<&'a CdrRef>,
        trail: Vec<u64>,
    }
    let content = Content {
        view: &account.view,
        postings: account.postings.chunks.values().flat_map(|c| c.entries.iter()).collect(),
        buckets: account.buckets.iter().map(|(bucket, sums)| (*bucket, sums)).collect(),
        cdrs: account.cdrs.chunks.values().flat_map(|c| c.entries.iter()).collect(),
        trail: account.trail.iter().copied().collect(),
    };
    postcard::to_allocvec(&content).expect("encoding to a Vec cannot fail")
}

/// On how many cores a snapshot's accounts are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cores {
    /// The caller's thread only: a live server's periodic save, beside its requests.
    One,
    /// Every core: a replay, which has the machine to itself.
    All,
}

/// Accounts encoded at once on every core before their bytes are written in order:
/// enough to keep the cores busy, few enough that the wave's bytes stay small.
const ACCOUNTS_PER_WAVE: usize = 256;

fn write_body(
    out: &mut (impl Write + Send),
    model: &Model,
    cdr_ids: &CdrIdIndex,
    cores: Cores,
) -> Result<(), ProjectionError> {
    use rayon::prelude::*;
    // The CDR id entries' bytes, in pieces that follow one another.
    let (entry_count, entry_pieces) = match cores {
        Cores::One => {
            let entries = cdr_ids.entries(model.position);
            let mut bytes = Vec::with_capacity(entries.len() * 10);
            compact::put_cdr_entries(&mut bytes, &entries);
            (entries.len(), vec![bytes])
        }
        Cores::All => {
            // A run per shard of the index, each encoded on its own after the last hash
            // of the runs before it: no copy of every entry into one list.
            let runs = cdr_ids.entry_runs_on_every_core(model.position);
            let mut last_before = Vec::with_capacity(runs.len());
            let mut last = 0;
            for run in &runs {
                last_before.push(last);
                last = run.last().map_or(last, |(hash, _)| *hash);
            }
            let pieces = runs
                .par_iter()
                .zip(last_before)
                .map(|(run, last)| {
                    let mut bytes = Vec::with_capacity(run.len() * 10);
                    compact::put_cdr_entries_after(&mut bytes, run, last);
                    bytes
                })
                .collect();
            (runs.iter().map(Vec::len).sum(), pieces)
        }
    };
    let entry_bytes_len: usize = entry_pieces.iter().map(Vec::len).sum();
    out.write_all(MAGIC).map_err(io)?;
    out.write_all(&MODELS_FORMAT.to_le_bytes()).map_err(io)?;
    out.write_all(&model.position.to_le_bytes()).map_err(io)?;
    out.write_all(&(model.accounts.len() as u64).to_le_bytes()).map_err(io)?;
    out.write_all(&(entry_count as u64).to_le_bytes()).map_err(io)?;
    out.write_all(&(entry_bytes_len as u64).to_le_bytes()).map_err(io)?;
    let mut ends = Vec::with_capacity(model.accounts.len() * 8);
    let mut end = 0u64;
    let mut put = |out: &mut dyn Write, bytes: &[u8]| -> Result<(), ProjectionError> {
        out.write_all(bytes).map_err(io)?;
        end += bytes.len() as u64;
        ends.extend_from_slice(&end.to_le_bytes());
        Ok(())
    };
    match cores {
        Cores::One => {
            // Each account encoded into memory, then written at once: postcard writing
            // field by field into the file's writer cost more than the encoding itself.
            let mut buffer = Vec::new();
            for account in model.accounts.values() {
                buffer.clear();
                compact::put_account(&mut buffer, &account.at(model.position));
                put(out, &buffer)?;
            }
        }
        Cores::All => {
            // Waves encoded on every core while a thread of its own writes the last one
            // out in order: writing into the file then overlaps encoding.
            let accounts: Vec<&Arc<AccountModel>> = model.accounts.values().collect();
            let out = &mut *out;
            std::thread::scope(|scope| {
                let (wave_tx, wave_rx) = std::sync::mpsc::sync_channel::<Vec<Vec<u8>>>(2);
                let writer = scope.spawn(move || -> Result<(), ProjectionError> {
                    for wave in wave_rx {
                        for bytes in &wave {
                            put(out, bytes)?;
                        }
                    }
                    Ok(())
                });
                for wave in accounts.chunks(ACCOUNTS_PER_WAVE) {
                    let bytes: Vec<Vec<u8>> = wave
                        .par_iter()
                        .map(|account| {
                            let mut bytes = Vec::new();
                            compact::put_account(&mut bytes, &account.at(model.position));
                            bytes
                        })
                        .collect();
                    // A failed writer stops taking waves: its error is the one told.
                    if wave_tx.send(bytes).is_err() {
                        break;
                    }
                }
                drop(wave_tx);
                writer.join().unwrap_or_else(|_| Err(io("the snapshot writer panicked")))
            })?;
        }
    }
    for piece in &entry_pieces {
        out.write_all(piece).map_err(io)?;
    }
    out.write_all(&ends).map_err(io)?;
    Ok(())
}

/// Writes the snapshot of `model` into `dir`, replacing the one there once it is durable.
pub(crate) fn write(dir: &Path, model: &Model, cdr_ids: &CdrIdIndex, cores: Cores) -> Result<(), ProjectionError> {
    std::fs::create_dir_all(dir).map_err(io)?;
    let path = snapshot_path(dir);
    let partial = path.with_extension("partial");
    let file = std::fs::File::create(&partial).map_err(io)?;
    let mut out = Checked { inner: BufWriter::with_capacity(1 << 20, file), crc: crc32fast::Hasher::new() };
    write_body(&mut out, model, cdr_ids, cores)?;
    let crc = out.crc.finalize();
    let mut file = out.inner;
    file.write_all(&crc.to_le_bytes()).map_err(io)?;
    let file = file.into_inner().map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&partial, &path).map_err(io)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

/// Why a snapshot file was not used.
fn unusable(path: &Path, reason: &str) -> Result<Option<(Model, CdrIdIndex)>, ProjectionError> {
    tracing::warn!(path = %path.display(), reason, "the read models' snapshot is not used; they are rebuilt from the log");
    Ok(None)
}

/// The snapshot in `dir`, or `None` if there is none or it cannot be used.
pub(crate) fn read(dir: &Path) -> Result<Option<(Model, CdrIdIndex)>, ProjectionError> {
    let path = snapshot_path(dir);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io(error)),
    };
    // Mapped, not read: a snapshot of a large ledger is a GB, and reading it would fault
    // in and zero as much fresh memory before decoding it into the models.
    // SAFETY: tollbook writes this file only under another name and renames it into
    // place, so the mapped file is never changed while it is read; another process
    // truncating it would be tampering with the data directory.
    let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    if bytes.len() < HEADER_BYTES + 4 || &bytes[..8] != MAGIC {
        return unusable(&path, "not a snapshot file");
    }
    let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if ![MODELS_FORMAT, FORMAT_5, FORMAT_4].contains(&format) {
        return unusable(&path, "written in another format");
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return unusable(&path, "damaged (checksum)");
    }
    let decoded = if format == FORMAT_4 { decode_format_4(body) } else { decode(body, format) };
    match decoded {
        Some(decoded) => Ok(Some(decoded)),
        None => unusable(&path, "damaged (layout)"),
    }
}

fn last_key<T: Entry>(entries: &[T]) -> (i64, u64) {
    entries.last().map_or((0, 0), Entry::key)
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// An account as the snapshot holds it, in the models' shape; `None` for damage.
fn account_model(account: AccountIn) -> Option<AccountModel> {
    // Chunks are never empty: an empty one is damage.
    if account.postings.iter().any(|c| c.entries.is_empty()) || account.cdrs.iter().any(Vec::is_empty) {
        return None;
    }
    Some(AccountModel {
        view: account.view,
        postings: Chunked {
            chunks: account.postings.into_iter().map(|c| (last_key(&c.entries), Arc::new(c))).collect(),
        },
        buckets: Buckets::from_sorted(account.buckets)?,
        cdrs: Chunked { chunks: account.cdrs.into_iter().map(|c| (last_key(&c), Arc::new(Chunk::of(c)))).collect() },
        trail: Vector::from(account.trail),
        recent: Recent::with_capacity(0),
    })
}

/// CDR id entries as stored: (hash, position) pairs of 16 bytes.
fn cdr_entries(pairs: &[u8]) -> Vec<(u64, u64)> {
    pairs.chunks_exact(16).map(|pair| (u64_at(pair, 0).unwrap_or(0), u64_at(pair, 8).unwrap_or(0))).collect()
}

/// Formats 5 and 6, which differ in the header, in how an account is encoded and in
/// how the CDR id entries are.
fn decode(body: &[u8], format: u32) -> Option<(Model, CdrIdIndex)> {
    use rayon::prelude::*;
    let position = u64_at(body, 12)?;
    let accounts = usize::try_from(u64_at(body, 20)?).ok()?;
    let entry_count = usize::try_from(u64_at(body, 28)?).ok()?;
    let (header, entry_bytes) = match format {
        FORMAT_5 => (HEADER_BYTES_5, entry_count.checked_mul(16)?),
        _ => (HEADER_BYTES, usize::try_from(u64_at(body, 36)?).ok()?),
    };
    let table_start = body.len().checked_sub(accounts.checked_mul(8)?)?;
    let entries_start = table_start.checked_sub(entry_bytes)?;
    let section = body.get(header..entries_start)?;
    let ends: Vec<usize> = body[table_start..]
        .chunks_exact(8)
        .map(|end| u64_at(end, 0).and_then(|e| usize::try_from(e).ok()))
        .collect::<Option<_>>()?;
    if ends.last().copied().unwrap_or(0) != section.len() || !ends.is_sorted() {
        return None;
    }
    let entries = &body[entries_start..table_start];
    let (decoded, cdr_ids) = rayon::join(
        || {
            (0..accounts)
                .into_par_iter()
                .map(|at| {
                    let start = if at == 0 { 0 } else { ends[at - 1] };
                    let bytes = &section[start..ends[at]];
                    if format == FORMAT_5 {
                        let (account, rest): (AccountIn, _) = postcard::take_from_bytes(bytes).ok()?;
                        if !rest.is_empty() {
                            return None;
                        }
                        account_model(account)
                    } else {
                        compact::account(bytes)
                    }
                })
                .collect::<Option<Vec<AccountModel>>>()
        },
        || {
            let entries = if format == FORMAT_5 {
                Some(cdr_entries(entries))
            } else {
                compact::cdr_entries(entries, entry_count)
            };
            entries.map(|entries| CdrIdIndex::from_entries(&entries))
        },
    );
    let mut model = Model { position, ..Model::default() };
    for account in decoded? {
        model.insert_account(account);
    }
    Some((model, cdr_ids?))
}

/// Format 4: the accounts one after another without a table of where each ends, then the
/// CDR id entry count and the entries.
fn decode_format_4(body: &[u8]) -> Option<(Model, CdrIdIndex)> {
    let position = u64_at(body, 12)?;
    let accounts = u64_at(body, 20)?;
    let mut rest = &body[28..];
    let mut model = Model { position, ..Model::default() };
    for _ in 0..accounts {
        let (account, tail): (AccountIn, _) = postcard::take_from_bytes(rest).ok()?;
        rest = tail;
        model.insert_account(account_model(account)?);
    }
    let count = u64_at(rest, 0)? as usize;
    let pairs = rest.get(8..)?;
    if pairs.len() != count.checked_mul(16)? {
        return None;
    }
    Some((model, CdrIdIndex::from_entries(&cdr_entries(pairs))))
}

#[cfg(test)]
mod tests {
    use domain::Amount;
    use domain::event::Category;

    use super::*;
    use crate::state::AccountTarget;

    /// One account's postings inserted in two orders are cut into chunks differently;
    /// what verify compares (its content) is the same, what a snapshot stores is not.
    #[test]
    fn account_content_does_not_depend_on_chunk_boundaries() {
        let view = crate::state::tests::view();
        let postings: Vec<PostingEntry> = (0..300u64)
            .map(|n| PostingEntry::new(n as i64 * 1_000_000, n + 1, Category::Payments, Amount::ZERO))
            .collect();
        let (mut in_order, mut reversed) = (AccountModel::new(view.clone()), AccountModel::new(view));
        postings.iter().for_each(|p| in_order.add_posting(*p));
        postings.iter().rev().for_each(|p| reversed.add_posting(*p));
        assert_ne!(in_order.postings.chunks.len(), reversed.postings.chunks.len(), "the cut should differ");
        assert_eq!(account_bytes(&in_order, u64::MAX), account_bytes(&reversed, u64::MAX));
    }

    /// A replay writes the CDR ids one run per shard, each run's hashes as differences
    /// from the last hash of the runs before: the file must be the bytes one list gives,
    /// with empty shards between, and without the entries past the models' position.
    #[test]
    fn snapshot_written_on_every_core_is_the_one_written_on_one() {
        let mut model = Model { position: 90, ..Model::default() };
        let mut account = AccountModel::new(crate::state::tests::view());
        account.add_posting(PostingEntry::new(5, 1, Category::Payments, Amount::ZERO));
        model.insert_account(account);
        // Hashes in every fourth shard (the shard is the top six bits), some in one shard
        // twice, and positions past the models' that the file leaves out.
        let entries: Vec<(u64, u64)> = (0..100u64)
            .map(|n| ((((n % 16) * 4) << 58) | (n * 7919 % 1000), n))
            .chain([(3 << 58, 95), (3 << 58, 40)])
            .collect();
        let cdr_ids = CdrIdIndex::from_entries(&entries);
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &model, &cdr_ids, Cores::All).unwrap();
        let written = std::fs::read(snapshot_path(dir.path())).unwrap();
        assert_eq!(written, encode(&model, &cdr_ids).unwrap());
        let (_, read_back) = read(dir.path()).unwrap().expect("a usable snapshot");
        let mut expected: Vec<(u64, u64)> = entries.into_iter().filter(|(_, p)| *p <= 90).collect();
        expected.sort_unstable();
        assert_eq!(read_back.entries(u64::MAX), expected);
    }

    #[derive(Serialize)]
    struct AccountOut<'a> {
        view: &'a AccountView,
        postings: Vec<&'a Chunk<PostingEntry>>,
        buckets: Vec<(i64, &'a Sums)>,
        cdrs: Vec<&'a [CdrRef]>,
        trail: Vec<u64>,
    }

    fn account_out(account: &AccountModel) -> AccountOut<'_> {
        AccountOut {
            view: &account.view,
            postings: account.postings.chunks.values().map(|chunk| &**chunk).collect(),
            buckets: account.buckets.iter().map(|(bucket, sums)| (*bucket, sums)).collect(),
            cdrs: account.cdrs.chunks.values().map(|chunk| chunk.entries.as_slice()).collect(),
            trail: account.trail.iter().copied().collect(),
        }
    }

    /// The body of a format 5 snapshot, as the version before format 6 wrote it.
    fn encode_format_5(model: &Model, cdr_ids: &CdrIdIndex) -> Vec<u8> {
        let entries = cdr_ids.entries(model.position);
        let mut body = Vec::new();
        body.extend_from_slice(MAGIC);
        body.extend_from_slice(&FORMAT_5.to_le_bytes());
        body.extend_from_slice(&model.position.to_le_bytes());
        body.extend_from_slice(&(model.accounts.len() as u64).to_le_bytes());
        body.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        let mut ends = Vec::new();
        let start = body.len();
        for account in model.accounts.values() {
            body = postcard::to_extend(&account_out(account), body).unwrap();
            ends.extend_from_slice(&((body.len() - start) as u64).to_le_bytes());
        }
        for (hash, position) in entries {
            body.extend_from_slice(&hash.to_le_bytes());
            body.extend_from_slice(&position.to_le_bytes());
        }
        body.extend_from_slice(&ends);
        body
    }

    /// Snapshots of formats 4 and 5 (no byte length of the CDR ids in the header,
    /// accounts in postcard; format 4 with no table of account ends and the entry count
    /// after the accounts) are still read, to the same models as the format written now.
    #[test]
    fn snapshots_of_formats_4_and_5_read_as_the_current_one() {
        let mut model = Model { position: 7, ..Model::default() };
        for n in 0..3u64 {
            let mut account = AccountModel::new(crate::state::tests::view());
            account.add_posting(PostingEntry::new(n as i64, n + 1, Category::Payments, Amount::ZERO));
            model.insert_account(account);
        }
        let cdr_ids = CdrIdIndex::from_entries(&[(1, 2), (u64::MAX, 3), (u64::MAX, 5)]);
        let current = encode(&model, &cdr_ids).unwrap();
        let current = &current[..current.len() - 4];
        let format_5 = encode_format_5(&model, &cdr_ids);
        let body = &format_5[..];
        let accounts = model.accounts.len();
        let entry_count = u64_at(body, 28).unwrap() as usize;
        let table_start = body.len() - accounts * 8;
        let entries_start = table_start - entry_count * 16;
        let mut old = Vec::new();
        old.extend_from_slice(&body[..8]);
        old.extend_from_slice(&FORMAT_4.to_le_bytes());
        old.extend_from_slice(&body[12..28]);
        old.extend_from_slice(&body[HEADER_BYTES_5..entries_start]);
        old.extend_from_slice(&(entry_count as u64).to_le_bytes());
        old.extend_from_slice(&body[entries_start..table_start]);
        let (from_current, ids_current) = decode(current, MODELS_FORMAT).unwrap();
        let (from_5, ids_5) = decode(body, FORMAT_5).unwrap();
        let (from_old, ids_old) = decode_format_4(&old).unwrap();
        assert!(current.len() < body.len(), "format 6 is the smaller");
        for decoded in [&from_current, &from_5, &from_old] {
            assert_eq!(decoded.position, 7);
            assert_eq!(decoded.accounts, model.accounts);
        }
        assert_eq!(ids_current.entries(u64::MAX), vec![(1, 2), (u64::MAX, 3), (u64::MAX, 5)]);
        assert_eq!(ids_5.entries(u64::MAX), ids_current.entries(u64::MAX));
        assert_eq!(ids_old.entries(u64::MAX), ids_current.entries(u64::MAX));
        // A table of ends that does not match the accounts is damage, not a panic.
        for (bytes, format) in [(current, MODELS_FORMAT), (body, FORMAT_5)] {
            let mut damaged = bytes.to_vec();
            let last = damaged.len() - 8;
            damaged[last] ^= 1;
            assert!(decode(&damaged, format).is_none());
        }
    }
}
