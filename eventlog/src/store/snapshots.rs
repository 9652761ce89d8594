//! Snapshot files of the embedded backend: one file per name in `<store>/snapshots/`,
//! each written whole to a temporary file, synced and renamed over the last, with a
//! CRC-32 of its bytes at its end. A snapshot is a cache of state folded from the log, so
//! a file that a crash tore or a disk damaged is reported as such and its reader folds
//! the log instead; the rename only keeps a good older file from being replaced by a
//! half-written one.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::StoreError;
use crate::store::segment;

pub(crate) const SNAPSHOT_DIR: &str = "snapshots";
const SUFFIX: &str = ".snapshot";

/// The file of snapshot `name`. Names are chosen by the write side (`ledger`,
/// `book-<uuid>`); anything that could leave the directory is refused.
fn path_of(dir: &Path, name: &str) -> Result<PathBuf, StoreError> {
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(StoreError::Config(format!("`{name}` is not a snapshot name")));
    }
    Ok(dir.join(format!("{name}{SUFFIX}")))
}

pub(crate) fn put(dir: &Path, name: &str, mut bytes: Vec<u8>) -> Result<(), StoreError> {
    let path = path_of(dir, name)?;
    let temporary = path.with_extension("tmp");
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let mut file = std::fs::File::create(&temporary).map_err(segment::io)?;
    file.write_all(&bytes).map_err(segment::io)?;
    file.sync_data().map_err(segment::io)?;
    std::fs::rename(&temporary, &path).map_err(segment::io)
}

pub(crate) fn get(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let path = path_of(dir, name)?;
    let mut bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(segment::io(error)),
    };
    let damaged = || StoreError::Corrupt { position: 0, reason: format!("snapshot {} is damaged", path.display()) };
    let body_len = bytes.len().checked_sub(4).ok_or_else(damaged)?;
    let crc = u32::from_le_bytes(bytes[body_len..].try_into().expect("four bytes"));
    bytes.truncate(body_len);
    if crc32fast::hash(&bytes) != crc {
        return Err(damaged());
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_back_as_written_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(get(dir.path(), "ledger").unwrap(), None);
        put(dir.path(), "ledger", b"first".to_vec()).unwrap();
        put(dir.path(), "ledger", b"second".to_vec()).unwrap();
        assert_eq!(get(dir.path(), "ledger").unwrap().as_deref(), Some(&b"second"[..]));
        let path = path_of(dir.path(), "ledger").unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(get(dir.path(), "ledger"), Err(StoreError::Corrupt { .. })));
        std::fs::write(&path, b"ab").unwrap();
        assert!(matches!(get(dir.path(), "ledger"), Err(StoreError::Corrupt { .. })));
        assert!(matches!(put(dir.path(), "../x", Vec::new()), Err(StoreError::Config(_))));
    }
}
