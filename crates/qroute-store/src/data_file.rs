//! The store's data files (segments): the encoded decisions, back to back in
//! sequence order, and past the newest ones the zeros written ahead of them
//! ([`WRITE_AHEAD`]). Which bytes of them are committed, and where
//! each decision starts, is recorded in sled (see the module docs of
//! [the crate docs](crate)); this file names segments, frames records, and
//! does positioned reads, synced writes and the scan that recovers a
//! segment's synced tail.
//!
//! Segments written since store format 4 hold each record in a frame: its
//! length and CRC-32, then the record. An append is acknowledged once its
//! frames are synced, before sled's index entries for them are: a crash can
//! lose those entries (sled keeps a prefix of its log), and opening the store
//! finds the synced records past the committed end by their frames and
//! commits them again. Without frames, the ack would wait for two syncs in a
//! row (the data, then sled's log), which was most of the latency the store
//! added to an answer.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Bytes before a framed record: its length (u32 LE), then the CRC-32 of
/// the record (u32 LE).
pub(crate) const FRAME_HEADER: usize = 8;

/// Appends to `out` the frame of the record that `encode` appends; returns
/// where the record itself starts in `out`. A record of 4 GiB or more has no
/// frame: `Error::InvalidInput`, and `out` is left as it was.
pub(crate) fn frame(out: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>)) -> Result<usize> {
    let at = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    encode(out);
    let record = &out[at + FRAME_HEADER..];
    // The whole frame's length fits a u32 too: the in-memory index keeps it so.
    let (Ok(len), Ok(_)) = (u32::try_from(record.len()), u32::try_from(record.len() + FRAME_HEADER)) else {
        out.truncate(at);
        return Err(Error::InvalidInput("a decision record of 4 GiB or more".into()));
    };
    let crc = crc32fast::hash(record);
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    out[at + 4..at + FRAME_HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(at + FRAME_HEADER)
}

/// The record in `framed` (one whole frame), checked against its header.
pub(crate) fn unframe(mut framed: Vec<u8>) -> Result<Vec<u8>> {
    match parse_frame(&framed) {
        Some(len) if len + FRAME_HEADER == framed.len() => {
            framed.drain(..FRAME_HEADER);
            Ok(framed)
        }
        _ => Err(Error::Store(format!(
            "a stored decision of {} bytes fails its frame's length or checksum: the data file is damaged",
            framed.len()
        ))),
    }
}

/// The length of the record framed at the start of `bytes`, if a whole
/// frame with a matching checksum is there.
fn parse_frame(bytes: &[u8]) -> Option<usize> {
    let header = bytes.get(..FRAME_HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    // No record is empty, and zeros (a file extended but never written)
    // would otherwise pass: the CRC-32 of nothing is 0.
    if len == 0 {
        return None;
    }
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let record = bytes.get(FRAME_HEADER..FRAME_HEADER.checked_add(len)?)?;
    (crc32fast::hash(record) == crc).then_some(len)
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

/// How far past its records a segment is written with zeros ahead of them.
/// An fdatasync of a write that extends a file must also commit the new size
/// (an ext4 journal commit); one that overwrites blocks already written need
/// not: ~110 instead of ~190 µs per sync here, and half the CPU. So appends
/// write a MiB of zeros at a time past their records, in the same sync.
const WRITE_AHEAD: u64 = 1 << 20;

pub(crate) struct DataFile {
    path: PathBuf,
    file: File,
    /// The file's length: past the newest records, the zeros written ahead.
    written: AtomicU64,
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
        let data = DataFile {
            path: path.to_path_buf(),
            file,
            written: AtomicU64::new(len),
        };
        if len > committed {
            data.cut(committed)?;
        }
        Ok(data)
    }

    /// Opens data file `path` for reading only, as it is (retention reads the
    /// request ids of decisions it removes from there).
    pub(crate) fn open_read(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Ok(DataFile {
            path: path.to_path_buf(),
            file,
            // Never written through.
            written: AtomicU64::new(0),
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
        Ok(DataFile {
            path,
            file,
            written: AtomicU64::new(0),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The whole frames from `offset` on, back to back, each as its length
    /// with header and its record: stops at the end of the file or at the
    /// first torn or damaged frame (an append that never finished syncing).
    pub(crate) fn frames_from(&self, offset: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut tail = Vec::new();
        let mut file = &self.file;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset))
            .and_then(|_| std::io::Read::read_to_end(&mut file, &mut tail))
            .map_err(|e| Error::io(format!("reading {} from {offset}", self.path.display()), e))?;
        let mut frames = Vec::new();
        let mut at = 0;
        while let Some(len) = parse_frame(&tail[at..]) {
            let whole = FRAME_HEADER + len;
            frames.push((whole as u64, tail[at + FRAME_HEADER..at + whole].to_vec()));
            at += whole;
        }
        Ok(frames)
    }

    /// `len` bytes from `offset` (which the caller knows are committed).
    pub(crate) fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        read_exact_at(&self.file, &mut buf, offset)
            .map_err(|e| Error::io(format!("reading {len} bytes at {offset} of {}", self.path.display()), e))?;
        Ok(buf)
    }

    /// Writes `buf` at `offset` and waits until it is on disk (fdatasync),
    /// file size included; past the file's end, [`WRITE_AHEAD`] bytes of
    /// zeros follow it. Only one caller at a time (the append lock).
    pub(crate) fn write_synced(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let end = offset + buf.len() as u64;
        let written = self.written.load(Ordering::Relaxed);
        write_all_at(&self.file, buf, offset)
            .and_then(|()| {
                if end <= written {
                    return Ok(());
                }
                let zeros = vec![0; WRITE_AHEAD as usize];
                write_all_at(&self.file, &zeros, end)?;
                self.written.store(end + WRITE_AHEAD, Ordering::Relaxed);
                Ok(())
            })
            .and_then(|()| self.file.sync_data())
            .map_err(|e| {
                Error::io(
                    format!("writing {} bytes at {offset} of {}", buf.len(), self.path.display()),
                    e,
                )
            })
    }

    /// Cuts the file back to `len` bytes, durably: what an append that
    /// failed wrote past the committed end.
    pub(crate) fn cut(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| Error::io(format!("cutting {} back to {len} bytes", self.path.display()), e))?;
        self.written.store(len, Ordering::Relaxed);
        Ok(())
    }

    /// Cuts the zeros written ahead off a segment that takes no more
    /// records, whose records end at `len`.
    pub(crate) fn seal(&self, len: u64) -> Result<()> {
        if self.written.load(Ordering::Relaxed) > len {
            self.cut(len)?;
        }
        Ok(())
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
