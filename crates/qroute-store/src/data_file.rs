//! The store's data file: every encoded decision, back to back in sequence
//! order, nothing else. Which bytes of it are committed, and where each
//! decision starts, is recorded in sled (see the module docs of
//! [the crate docs](crate)); this file only does positioned reads and synced writes.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use qroute_core::error::{Error, Result};

/// Name of the data file inside the store directory (next to sled's files;
/// sled only touches its own `conf`, `db`, `blobs/` and `snap.*`).
pub(crate) const DATA_FILE: &str = "decisions.dat";

pub(crate) struct DataFile {
    path: PathBuf,
    file: File,
}

impl DataFile {
    /// Opens (creating if needed) the data file in `dir` and cuts it back to
    /// `committed` bytes: anything past that was written by an append that
    /// never committed (the process died between the data write and the sled
    /// commit), was never acknowledged, and is overwritten by the next append
    /// anyway. A file shorter than `committed` means committed data is gone:
    /// an error, not something to paper over.
    pub(crate) fn open(dir: &Path, committed: u64) -> Result<Self> {
        let path = dir.join(DATA_FILE);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        if !existed {
            // Make the new directory entry durable too, or a machine crash
            // could lose the whole file after data in it was acknowledged.
            sync_dir(dir)?;
        }
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
        Ok(DataFile { path, file })
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
fn sync_dir(dir: &Path) -> Result<()> {
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
fn sync_dir(_dir: &Path) -> Result<()> {
    // std cannot open a directory to flush it on Windows; NTFS journals the
    // new directory entry itself.
    Ok(())
}
