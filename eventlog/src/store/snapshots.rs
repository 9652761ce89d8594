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
pub(crate) fn path_of(dir: &Path, name: &str) -> Result<PathBuf, StoreError> {
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

/// Parts of snapshot `name`'s body; a range past the body's end is refused as damage.
pub(crate) fn read_ranges(dir: &Path, name: &str, ranges: &[(u64, usize)]) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
    use std::os::unix::fs::FileExt;
    let path = path_of(dir, name)?;
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(segment::io(error)),
    };
    let body_len = file.metadata().map_err(segment::io)?.len().saturating_sub(4);
    let mut parts = Vec::with_capacity(ranges.len());
    for &(offset, len) in ranges {
        if offset.saturating_add(len as u64) > body_len {
            let reason = format!("snapshot {} is shorter than the range asked", path.display());
            return Err(StoreError::Corrupt { position: 0, reason });
        }
        let mut part = vec![0; len];
        file.read_exact_at(&mut part, offset).map_err(segment::io)?;
        parts.push(part);
    }
    Ok(Some(parts))
}

pub(crate) fn delete(dir: &Path, name: &str) -> Result<(), StoreError> {
    match std::fs::remove_file(path_of(dir, name)?) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(segment::io(error)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_a_snapshot_read_back_and_a_deleted_one_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_ranges(dir.path(), "ids-1", &[(0, 1)]).unwrap(), None);
        put(dir.path(), "ids-1", b"0123456789".to_vec()).unwrap();
        let parts = read_ranges(dir.path(), "ids-1", &[(2, 3), (0, 1), (9, 1)]).unwrap().unwrap();
        assert_eq!(parts, vec![b"234".to_vec(), b"0".to_vec(), b"9".to_vec()]);
        // The CRC after the body is not part of it.
        assert!(matches!(read_ranges(dir.path(), "ids-1", &[(9, 2)]), Err(StoreError::Corrupt { .. })));
        delete(dir.path(), "ids-1").unwrap();
        delete(dir.path(), "ids-1").unwrap();
        assert_eq!(get(dir.path(), "ids-1").unwrap(), None);
    }

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
