//! The store's data files (segments): the encoded decisions, back to back in
//! sequence order, nothing else. Which bytes of them are committed, and where
//! each decision starts, is recorded in sled (see the module docs of
//! [the crate docs](crate)); this file only names segments and does
//! positioned reads and synced writes.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use qroute_core::error::{Error, Result};

/// The single data file of stores written before segments (store format 2):
/// read as the segment that starts at sequence number 0. Lives next to
/// sled's files; sled only touches its own `conf`, `db`, `blobs/` and
/// `snap.*`.
pub(crate) const LEGACY_DATA_FILE: &str = "decisions.dat";

const SEGMENT_PREFIX: &str = "decisions-";
const SEGMENT_SUFFIX: &str = ".dat";

/// File name of the segment whose first decision has sequence number
/// `first_seq`: zero-padded, so names sort like their numbers.
pub(crate) fn segment_name(first_seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{first_seq:020}{SEGMENT_SUFFIX}")
}

/// The first sequence number of a data file named `name`, if it is one.
fn parse_segment_name(name: &str) -> Option<u64> {
    if name == LEGACY_DATA_FILE {
        return Some(0);
    }
    let digits = name.strip_prefix(SEGMENT_PREFIX)?.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every data file in `dir` as (first sequence number, path), sorted. Two
/// files for the same first sequence number (a legacy `decisions.dat` and a
/// segment 0) are an error: which one holds the committed data is unknown.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(first) = parse_segment_name(&name) {
            found.push((first, entry.path()));
        }
    }
    found.sort();
    if let Some(w) = found.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::Store(format!(
            "both {} and {} claim to start at decision {}",
            w[0].1.display(),
            w[1].1.display(),
            w[0].0
        )));
    }
    Ok(found)
}

/// Deletes data file `path` (a segment retention removed, or one that was
/// never committed). A file already gone is fine.
pub(crate) fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

pub(crate) struct DataFile {
    path: PathBuf,
    file: File,
}

impl DataFile {
    /// Opens the existing data file `path` and cuts it back to `committed`
    /// bytes: anything past that was written by an append that never
    /// committed (the process died between the data write and the sled
    /// commit), was never acknowledged, and is overwritten by the next append
    /// anyway. A file shorter than `committed` means committed data is gone:
    /// an error, not something to paper over.
    pub(crate) fn open(path: &Path, committed: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("reading the size of {}", path.display()), e))?
            .len();
        if len < committed {
            return Err(Error::Store(format!(
                "data file {} has {len} bytes but the index commits {committed}: decisions were lost",
                path.display()
            )));
        }
        if len > committed {
            file.set_len(committed)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(format!("cutting {} back to {committed} bytes", path.display()), e))?;
        }
        Ok(DataFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Opens data file `path` for reading only, as it is (retention reads the
    /// request ids of decisions it removes from there).
    pub(crate) fn open_read(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Ok(DataFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Creates the empty data file `name` in `dir` (an existing one, left by
    /// an append that never committed, is emptied) and makes its directory
    /// entry durable: otherwise a machine crash could lose the whole file
    /// after data in it was acknowledged.
    pub(crate) fn create(dir: &Path, name: &str) -> Result<Self> {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        sync_dir(dir)?;
        Ok(DataFile { path, file })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `len` bytes from `offset` (which the caller knows are committed).
    pub(crate) fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        read_exact_at(&self.file, &mut buf, offset)
            .map_err(|e| Error::io(format!("reading {len} bytes at {offset} of {}", self.path.display()), e))?;
        Ok(buf)
    }

    /// Writes `buf` at `offset` and waits until it is on disk (fdatasync),
    /// file size included.
    pub(crate) fn write_synced(&self, offset: u64, buf: &[u8]) -> Result<()> {
        write_all_at(&self.file, buf, offset)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| {
                Error::io(
                    format!("writing {} bytes at {offset} of {}", buf.len(), self.path.display()),
                    e,
                )
            })
    }

    pub(crate) fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(format!("syncing {}", self.path.display()), e))
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(unix)]
fn write_all_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(windows)]
fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_write(buf, offset)? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => {
                buf = &buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(windows)]
pub(crate) fn sync_dir(_dir: &Path) -> Result<()> {
    // std cannot open a directory to flush it on Windows; NTFS journals the
    // new directory entry itself.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort() {
        for seq in [0, 1, 999, u64::MAX] {
            assert_eq!(parse_segment_name(&segment_name(seq)), Some(seq));
        }
        assert!(segment_name(99) < segment_name(100));
        assert_eq!(parse_segment_name(LEGACY_DATA_FILE), Some(0));
        for bad in [
            "decisions-1.dat",
            "decisions-0000000000000000000x.dat",
            "conf",
            "db",
            "decisions.dat.tmp",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_legacy_file_and_segment_zero_together_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(segment_name(5)), b"").unwrap();
        std::fs::write(dir.path().join("conf"), b"").unwrap();
        std::fs::write(dir.path().join(LEGACY_DATA_FILE), b"").unwrap();
        let found = list_segments(dir.path()).unwrap();
        assert_eq!(found.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![0, 5]);
        std::fs::write(dir.path().join(segment_name(0)), b"").unwrap();
        assert!(matches!(list_segments(dir.path()), Err(Error::Store(_))));
    }
}
