//! The models' snapshot file: the state at one position, so that a restart loads it and
//! projects only the log after it.
//!
//! Layout: `TBMODELS`, the format (u32 LE), the position (u64 LE), the account count
//! (u64 LE), each account (postcard), the count of CDR id entries (u64 LE) and the
//! entries (hash, position as u64 LE each), then a CRC-32 of everything before it. The
//! file is written beside its final name, synced, and renamed over it: a crash leaves
//! either the old snapshot or the new one, and a damaged or foreign file is not read
//! (the models are then rebuilt from the log, which is always possible).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imbl::Vector;
use serde::{Deserialize, Serialize};

use crate::error::ProjectionError;
use crate::state::{AccountModel, AccountView, CdrIdIndex, CdrRef, Chunk, Chunked, Entry, Model, PostingEntry, Sums};

/// The layout of the snapshot file. A file of another format is not read: the models
/// are rebuilt from the log. (Formats 1 to 3 were sled trees of earlier versions.)
pub(crate) const MODELS_FORMAT: u32 = 4;
const MAGIC: &[u8; 8] = b"TBMODELS";
pub(crate) const SNAPSHOT_FILE: &str = "models.snapshot";

#[derive(Serialize)]
struct AccountOut<'a> {
    view: &'a AccountView,
    postings: Vec<&'a Chunk<PostingEntry>>,
    buckets: Vec<(i64, &'a Sums)>,
    cdrs: Vec<&'a [CdrRef]>,
    trail: Vec<u64>,
}

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
    write_body(&mut out, model, cdr_ids)?;
    let crc = out.crc.finalize();
    let mut bytes = out.inner;
    bytes.extend_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

/// What the models hold of one account, whatever chunks it is cut into (chunk
/// boundaries depend on the version that built them): equal bytes, equal content.
pub(crate) fn account_bytes(account: &AccountModel) -> Vec<u8> {
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

fn account_out(account: &AccountModel) -> AccountOut<'_> {
    AccountOut {
        view: &account.view,
        postings: account.postings.chunks.values().map(|chunk| &**chunk).collect(),
        buckets: account.buckets.iter().map(|(bucket, sums)| (*bucket, sums)).collect(),
        cdrs: account.cdrs.chunks.values().map(|chunk| chunk.entries.as_slice()).collect(),
        trail: account.trail.iter().copied().collect(),
    }
}

fn write_body(out: &mut impl Write, model: &Model, cdr_ids: &CdrIdIndex) -> Result<(), ProjectionError> {
    out.write_all(MAGIC).map_err(io)?;
    out.write_all(&MODELS_FORMAT.to_le_bytes()).map_err(io)?;
    out.write_all(&model.position.to_le_bytes()).map_err(io)?;
    out.write_all(&(model.accounts.len() as u64).to_le_bytes()).map_err(io)?;
    // Each account encoded into memory, then written at once: postcard writing field by
    // field into the file's writer cost more than the encoding itself.
    let mut buffer = Vec::new();
    for account in model.accounts.values() {
        buffer.clear();
        buffer = postcard::to_extend(&account_out(account), buffer).map_err(io)?;
        out.write_all(&buffer).map_err(io)?;
    }
    let entries = cdr_ids.entries(model.position);
    out.write_all(&(entries.len() as u64).to_le_bytes()).map_err(io)?;
    buffer.clear();
    for (hash, position) in entries {
        buffer.extend_from_slice(&hash.to_le_bytes());
        buffer.extend_from_slice(&position.to_le_bytes());
    }
    out.write_all(&buffer).map_err(io)?;
    Ok(())
}

/// Writes the snapshot of `model` into `dir`, replacing the one there once it is durable.
pub(crate) fn write(dir: &Path, model: &Model, cdr_ids: &CdrIdIndex) -> Result<(), ProjectionError> {
    std::fs::create_dir_all(dir).map_err(io)?;
    let path = snapshot_path(dir);
    let partial = path.with_extension("partial");
    let file = std::fs::File::create(&partial).map_err(io)?;
    let mut out = Checked { inner: BufWriter::with_capacity(1 << 20, file), crc: crc32fast::Hasher::new() };
    write_body(&mut out, model, cdr_ids)?;
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
    if bytes.len() < 8 + 4 + 8 + 8 + 8 + 4 || &bytes[..8] != MAGIC {
        return unusable(&path, "not a snapshot file");
    }
    let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if format != MODELS_FORMAT {
        return unusable(&path, "written in another format");
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return unusable(&path, "damaged (checksum)");
    }
    match decode(body) {
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

fn decode(body: &[u8]) -> Option<(Model, CdrIdIndex)> {
    let position = u64_at(body, 12)?;
    let accounts = u64_at(body, 20)?;
    let mut rest = &body[28..];
    let mut model = Model { position, ..Model::default() };
    for _ in 0..accounts {
        let (account, tail): (AccountIn, _) = postcard::take_from_bytes(rest).ok()?;
        rest = tail;
        // Chunks are never empty: an empty one is damage.
        if account.postings.iter().any(|c| c.entries.is_empty()) || account.cdrs.iter().any(Vec::is_empty) {
            return None;
        }
        model.insert_account(AccountModel {
            view: account.view,
            postings: Chunked {
                chunks: account.postings.into_iter().map(|c| (last_key(&c.entries), Arc::new(c))).collect(),
            },
            buckets: account.buckets.into_iter().collect(),
            cdrs: Chunked {
                chunks: account.cdrs.into_iter().map(|c| (last_key(&c), Arc::new(Chunk::of(c)))).collect(),
            },
            trail: Vector::from(account.trail),
        });
    }
    let count = u64_at(rest, 0)? as usize;
    let pairs = rest.get(8..)?;
    if pairs.len() != count.checked_mul(16)? {
        return None;
    }
    let entries: Vec<(u64, u64)> =
        pairs.chunks_exact(16).map(|pair| (u64_at(pair, 0).unwrap_or(0), u64_at(pair, 8).unwrap_or(0))).collect();
    Some((model, CdrIdIndex::from_entries(&entries)))
}

#[cfg(test)]
mod tests {
    use domain::Amount;
    use domain::event::Category;

    use super::*;

    /// One account's postings inserted in two orders are cut into chunks differently;
    /// what verify compares (its content) is the same, what a snapshot stores is not.
    #[test]
    fn account_content_does_not_depend_on_chunk_boundaries() {
        let view = crate::state::tests::view();
        let postings: Vec<PostingEntry> = (0..300u64)
            .map(|n| PostingEntry {
                occurred_at: n as i64 * 1_000_000,
                position: n + 1,
                category: Category::Payments,
                amount: Amount::ZERO,
            })
            .collect();
        let (mut in_order, mut reversed) = (AccountModel::new(view.clone()), AccountModel::new(view));
        postings.iter().for_each(|p| in_order.add_posting(*p));
        postings.iter().rev().for_each(|p| reversed.add_posting(*p));
        assert_ne!(in_order.postings.chunks.len(), reversed.postings.chunks.len(), "the cut should differ");
        assert_eq!(account_bytes(&in_order), account_bytes(&reversed));
    }
}
