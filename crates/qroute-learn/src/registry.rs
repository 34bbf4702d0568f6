//! The policy registry: every policy version worth keeping, as a directory
//! of checkpoints that any process on the machine can read and write.
//!
//! ```text
//! DATA_DIR/policies/
//!   v1/        model.safetensors + policy.json (the shipped policy)
//!   v2/ …      one directory per checkpointed version
//!   next-version    the next unused version number (see Registry::allocate)
//!   allocate.lock   serialises allocation across processes
//!   trainer.lock    held by the one process that trains into this registry
//! ```
//!
//! With a PostgreSQL store (`[store] url`), the registry is a table beside
//! it instead ([`PgRegistry`]), shared by every replica; the methods below
//! behave the same on both.
//!
//! Why a directory and not a part of the sled store: sled belongs to
//! one process, and the external trainer (`qroute train --follow`) and the
//! operator's `qroute policy rollback` must be able to publish while the
//! gateway serves. A checkpoint is written under a temporary name and
//! renamed into place, so a reader never sees half of one.
//!
//! Version numbers are never reused, even across SIGKILL: every number is
//! taken from `next-version` under a file lock and the file is synced before
//! the number is used. A number in a decision record therefore names exactly
//! one set of weights: the one in `vN/`, or, when there is no `vN/`, weights
//! that served but were never checkpointed.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use qroute_core::policy::{checkpoint, DqnPolicy};
use qroute_core::{Error, Result};

use crate::registry_pg::{PgRegistry, PgTrainerLock};

const NEXT_VERSION: &str = "next-version";
const ALLOCATE_LOCK: &str = "allocate.lock";
const TRAINER_LOCK: &str = "trainer.lock";
/// Where a pruned version's directory goes before it is removed.
const PRUNED_PREFIX: &str = ".pruned-";

/// Where a registered version came from, stored in its `policy.json`
/// (`training.lineage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// The version this one was trained from (or copied from, for a
    /// rollback); `None` for a base policy.
    pub parent: Option<u64>,
    /// Fingerprint of the base policy this line of versions started from:
    /// a gateway started with another base policy starts a new line instead
    /// of resuming this one.
    pub base: String,
    /// How it was made: `base`, `online`, `follow` (external trainer) or
    /// `rollback`.
    pub source: String,
    /// Gradient steps taken since the base policy.
    pub steps: u64,
    /// Experiences in the store when it was checkpointed: what it could
    /// have learned from.
    pub experiences: u64,
    pub created_ms: u64,
    /// The process that wrote it (`host:pid:random`), so a gateway can tell
    /// its own checkpoints from another writer's.
    pub writer: String,
}

/// One registered version.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub version: u64,
    pub lineage: Option<Lineage>,
}

/// What [`Registry::start_from`] found.
#[derive(Debug)]
pub enum Start {
    /// Continue the registered version (restart).
    Resume { policy: DqnPolicy, lineage: Lineage },
    /// A new line from the base policy, not registered yet.
    Fresh { policy: DqnPolicy, lineage: Lineage },
}

impl Start {
    pub fn policy_mut(&mut self) -> &mut DqnPolicy {
        match self {
            Start::Resume { policy, .. } | Start::Fresh { policy, .. } => policy,
        }
    }
}

/// A policy registry: a directory, or the tables of a PostgreSQL store.
#[derive(Debug, Clone)]
pub struct Registry {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Dir(PathBuf),
    Postgres(Arc<PgRegistry>),
}

/// Held while a process trains into a registry; released on drop (or when
/// the process dies).
#[derive(Debug)]
pub struct TrainerLock {
    _held: Held,
}

impl TrainerLock {
    /// Whether the lock is still held: a file lock always is while this
    /// lives; a PostgreSQL session lock is lost when its session ends, and
    /// a trainer that lost it must stop publishing.
    pub fn is_held(&self) -> bool {
        match &self._held {
            Held::File(_) => true,
            Held::Session(s) => s.is_held(),
        }
    }
}

#[derive(Debug)]
enum Held {
    File(#[allow(dead_code)] File),
    Session(#[allow(dead_code)] PgTrainerLock),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |e| Error::io(what, e)
}

fn version_of(name: &str) -> Option<u64> {
    name.strip_prefix('v')?.parse().ok()
}

impl Registry {
    /// Opens the registry at `dir`, creating it if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Registry> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        Ok(Registry {
            backend: Backend::Dir(dir),
        })
    }

    /// The registry of the PostgreSQL store `url` (migrated when missing).
    pub fn open_postgres(url: &str) -> Result<Registry> {
        Ok(Registry {
            backend: Backend::Postgres(Arc::new(PgRegistry::open(url)?)),
        })
    }

    /// Opens an existing registry for reading: a `postgres://` URL or a
    /// directory. Creates nothing.
    pub fn open_location(location: &str) -> Result<Registry> {
        if qroute_store::pg::is_postgres_url(location) {
            return Ok(Registry {
                backend: Backend::Postgres(Arc::new(PgRegistry::open_existing(location)?)),
            });
        }
        Registry::open_existing(location)
    }

    /// Opens an existing registry for reading; a missing directory is an
    /// error and nothing is created.
    pub fn open_existing(dir: impl Into<PathBuf>) -> Result<Registry> {
        let dir = dir.into();
        if !dir.is_dir() {
            return Err(Error::InvalidInput(format!("no policy registry at {}", dir.display())));
        }
        Ok(Registry {
            backend: Backend::Dir(dir),
        })
    }

    /// Where the registry is, for messages: its directory or its store's
    /// URL (without credentials).
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::Dir(dir) => dir.display().to_string(),
            Backend::Postgres(pg) => pg.location(),
        }
    }

    /// The directory version `v` is (or would be) registered in.
    fn version_dir(dir: &Path, v: u64) -> PathBuf {
        dir.join(format!("v{v}"))
    }

    /// Unparks `thread` as soon as any process publishes a version, where
    /// the backend can tell (PostgreSQL's NOTIFY); a directory cannot, and
    /// its watcher relies on polling alone.
    pub fn wake_on_publish(&self, thread: std::thread::Thread) {
        if let Backend::Postgres(pg) = &self.backend {
            pg.wake_on_publish(thread);
        }
    }

    /// Every registered version number, ascending. Cheap: one directory
    /// listing (no file is opened), or one query.
    pub fn versions(&self) -> Result<Vec<u64>> {
        let dir = match &self.backend {
            Backend::Dir(dir) => dir,
            Backend::Postgres(pg) => return pg.versions(),
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(format!("listing {}", dir.display())))? {
            let entry = entry.map_err(io(format!("listing {}", dir.display())))?;
            if let Some(v) = entry.file_name().to_str().and_then(version_of) {
                out.push(v);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The newest registered version number.
    pub fn latest(&self) -> Result<Option<u64>> {
        Ok(self.versions()?.last().copied())
    }

    /// Version `v`'s metadata (no weights). A version that is not there,
    /// never registered or pruned while the caller looked, is `NotFound`.
    pub fn entry(&self, v: u64) -> Result<Entry> {
        let not_registered = || Error::NotFound(format!("policy version {v} is not registered"));
        let training = match &self.backend {
            Backend::Dir(dir) => {
                let dir = Registry::version_dir(dir, v);
                checkpoint::load_metadata(&dir)
                    .map_err(|e| if dir.is_dir() { e } else { not_registered() })?
                    .training
            }
            Backend::Postgres(pg) => pg.training(v)?.ok_or_else(not_registered)?,
        };
        let lineage = serde_json::from_value(training["lineage"].clone()).ok();
        Ok(Entry { version: v, lineage })
    }

    /// Every registered version's metadata, ascending. A version pruned
    /// between the listing and its read (a trainer keeps only the newest
    /// few) is left out, not an error.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for v in self.versions()? {
            match self.entry(v) {
                Ok(entry) => out.push(entry),
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The newest registered version if it is newer than `v`, loaded: how
    /// a serving process notices a version another process published.
    pub fn newer_than(&self, v: u64) -> Result<Option<DqnPolicy>> {
        match self.latest()? {
            Some(latest) if latest > v => self.load(latest).map(Some),
            _ => Ok(None),
        }
    }

    /// Loads version `v`.
    pub fn load(&self, v: u64) -> Result<DqnPolicy> {
        let not_registered = || Error::NotFound(format!("policy version {v} is not registered"));
        match &self.backend {
            Backend::Dir(dir) => {
                // A prune renames the directory away before it removes its
                // files, so a read that fails on a directory no longer there
                // raced a prune: not registered, not a failure.
                let dir = Registry::version_dir(dir, v);
                checkpoint::load(&dir).map_err(|e| if dir.is_dir() { e } else { not_registered() })
            }
            Backend::Postgres(pg) => pg.load(v)?.ok_or_else(not_registered),
        }
    }

    /// One of version `v`'s two files ([`checkpoint::META_FILE`] or
    /// [`checkpoint::WEIGHTS_FILE`]), byte for byte; `NotFound` for a
    /// version not registered or another name.
    pub fn file(&self, v: u64, name: &str) -> Result<Vec<u8>> {
        let not_found = || Error::NotFound(format!("policy version {v} is not registered"));
        if name != checkpoint::META_FILE && name != checkpoint::WEIGHTS_FILE {
            return Err(not_found());
        }
        match &self.backend {
            Backend::Dir(dir) => fs::read(Registry::version_dir(dir, v).join(name)).map_err(|_| not_found()),
            Backend::Postgres(pg) => {
                let (meta, weights) = pg.files(v)?.ok_or_else(not_found)?;
                Ok(if name == checkpoint::META_FILE { meta } else { weights })
            }
        }
    }

    /// Takes the next unused version number, at least `at_least`. The
    /// counter file is synced before the number is returned, so no later
    /// call, in this process or another, after a crash or not, returns it
    /// again.
    pub fn allocate(&self, at_least: u64) -> Result<u64> {
        let dir = match &self.backend {
            Backend::Dir(dir) => dir,
            Backend::Postgres(pg) => return pg.allocate(at_least),
        };
        let lock_path = dir.join(ALLOCATE_LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(format!("opening {}", lock_path.display())))?;
        lock.lock().map_err(io(format!("locking {}", lock_path.display())))?;
        let path = dir.join(NEXT_VERSION);
        let stored = match fs::read_to_string(&path) {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| Error::Store(format!("{} does not hold a number", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let registered = self.latest()?.map_or(0, |v| v + 1);
        let v = stored.max(registered).max(at_least).max(1);
        let tmp = dir.join(format!("{NEXT_VERSION}.tmp"));
        let mut f = File::create(&tmp).map_err(io(format!("writing {}", tmp.display())))?;
        writeln!(f, "{}", v + 1).map_err(io(format!("writing {}", tmp.display())))?;
        f.sync_all().map_err(io(format!("syncing {}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(io(format!("renaming to {}", path.display())))?;
        sync_dir(dir);
        Ok(v)
    }

    /// Registers `policy` under its own version number, which must come from
    /// [`Registry::allocate`] (or be the first version of an empty
    /// registry). Written under a temporary name and renamed into place.
    pub fn save(&self, policy: &DqnPolicy, lineage: &Lineage) -> Result<Entry> {
        let v = policy.version;
        let taken = || Error::InvalidInput(format!("policy version {v} is already registered"));
        let training = serde_json::json!({ "lineage": lineage });
        match &self.backend {
            Backend::Dir(root) => {
                let dir = Registry::version_dir(root, v);
                if dir.exists() {
                    return Err(taken());
                }
                let tmp = root.join(format!(".tmp-v{v}-{}-{}", std::process::id(), rand::random::<u32>()));
                checkpoint::save(policy, &tmp, training)?;
                fs::rename(&tmp, &dir).map_err(io(format!("renaming to {}", dir.display())))?;
                sync_dir(root);
            }
            Backend::Postgres(pg) => {
                if !pg.insert(policy, training)? {
                    return Err(taken());
                }
            }
        }
        Ok(Entry {
            version: v,
            lineage: Some(lineage.clone()),
        })
    }

    /// Registers a copy of version `v` as a new, newest version: serving
    /// moves to it (a running gateway picks it up) while the history stays.
    pub fn rollback(&self, v: u64, writer: &str) -> Result<Entry> {
        let mut policy = self.load(v)?;
        let old = self.entry(v)?.lineage;
        policy.version = self.allocate(0)?;
        let lineage = Lineage {
            parent: Some(v),
            base: old.as_ref().map_or_else(|| fingerprint(&policy), |l| l.base.clone()),
            source: "rollback".into(),
            steps: old.as_ref().map_or(0, |l| l.steps),
            experiences: old.as_ref().map_or(0, |l| l.experiences),
            created_ms: qroute_core::unix_ms(),
            writer: writer.into(),
        };
        self.save(&policy, &lineage)
    }

    /// Where a process that serves `base` starts: the newest registered
    /// version when it descends from `base` (a restart), else `base` itself
    /// as a new line, under the next version number (version `base.version`
    /// in an empty registry, so the shipped policy is version 1). The caller
    /// registers a new line with [`Registry::save`] once it has finished it
    /// (the gateway adds cards for configured models first).
    pub fn start_from(&self, mut base: DqnPolicy) -> Result<Start> {
        let base_fp = fingerprint(&base);
        if let Some(latest) = self.latest()? {
            let entry = self.entry(latest)?;
            if let Some(lineage) = entry.lineage.filter(|l| l.base == base_fp) {
                let policy = self.load(latest)?;
                if policy.spec == base.spec {
                    return Ok(Start::Resume { policy, lineage });
                }
            }
        }
        base.version = self.allocate(base.version)?;
        let lineage = Lineage {
            parent: None,
            base: base_fp,
            source: "base".into(),
            steps: 0,
            experiences: 0,
            created_ms: qroute_core::unix_ms(),
            writer: writer_id(),
        };
        Ok(Start::Fresh { policy: base, lineage })
    }

    /// Removes all but the newest `keep` versions (at least one is kept).
    /// Returns how many were removed.
    pub fn prune(&self, keep: usize) -> Result<usize> {
        let root = match &self.backend {
            Backend::Dir(dir) => dir,
            Backend::Postgres(pg) => return pg.prune(keep),
        };
        // Each version is first renamed out of the listing (one atomic step,
        // as `save` renames it in), then removed: a reader sees a version
        // whole or not at all, never a directory half emptied. A `.pruned-`
        // directory left by a crash is removed by the next prune.
        let versions = self.versions()?;
        let drop = versions.len().saturating_sub(keep.max(1));
        for v in &versions[..drop] {
            let dir = Registry::version_dir(root, *v);
            let gone = root.join(format!(
                "{PRUNED_PREFIX}v{v}-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            // Another process pruning the same registry may have taken it.
            match fs::rename(&dir, &gone) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(format!("renaming {}", dir.display()), e))
                }
                _ => {}
            }
        }
        sync_dir(root);
        for entry in fs::read_dir(root).map_err(io(format!("listing {}", root.display())))? {
            let entry = entry.map_err(io(format!("listing {}", root.display())))?;
            if entry.file_name().to_string_lossy().starts_with(PRUNED_PREFIX) {
                let path = entry.path();
                match fs::remove_dir_all(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(Error::io(format!("removing {}", path.display()), e))
                    }
                    _ => {}
                }
            }
        }
        Ok(drop)
    }

    /// Takes the registry's trainer lock, so that two trainers never
    /// publish interleaved versions into one registry. Fails at once when
    /// another process holds it.
    pub fn lock_trainer(&self) -> Result<TrainerLock> {
        self.take_trainer_lock(false)
    }

    /// [`Registry::lock_trainer`], but waits until the holder is gone
    /// (on PostgreSQL: its session ended, as when its process died); a
    /// directory's lock cannot be waited for and fails at once.
    pub fn wait_for_trainer_lock(&self) -> Result<TrainerLock> {
        self.take_trainer_lock(true)
    }

    fn take_trainer_lock(&self, wait: bool) -> Result<TrainerLock> {
        let dir = match &self.backend {
            Backend::Dir(dir) => dir,
            Backend::Postgres(pg) => {
                return Ok(TrainerLock {
                    _held: Held::Session(pg.lock_trainer(wait)?),
                })
            }
        };
        let path = dir.join(TRAINER_LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(TrainerLock {
                _held: Held::File(file),
            }),
            Err(fs::TryLockError::WouldBlock) => Err(Error::InvalidInput(format!(
                "another trainer is publishing to {} (learning.mode = \"online\" in a gateway, or qroute train --follow)",
                dir.display()
            ))),
            Err(fs::TryLockError::Error(e)) => Err(Error::io(format!("locking {}", path.display()), e)),
        }
    }
}

/// Makes a rename in `dir` durable; best effort (not every filesystem
/// supports syncing a directory).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A stable fingerprint of a policy's weights (FNV-1a over the tensors'
/// bytes): equal weights, equal fingerprint, in every build.
pub fn fingerprint(policy: &DqnPolicy) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, shape, data) in policy.net.params() {
        let bytes = name
            .bytes()
            .chain(shape.iter().flat_map(|d| (*d as u64).to_le_bytes()))
            .chain(data.iter().flat_map(|x| x.to_le_bytes()));
        for b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// This process's name in [`Lineage::writer`].
pub fn writer_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let host = fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}:{}:{:08x}", host.trim(), std::process::id(), rand::random::<u32>())
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use qroute_core::testing::toy_policy;

    fn lineage(parent: Option<u64>) -> Lineage {
        Lineage {
            parent,
            base: "b".into(),
            source: "online".into(),
            steps: 3,
            experiences: 10,
            created_ms: 1,
            writer: writer_id(),
        }
    }

    #[test]
    fn versions_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        assert_eq!(reg.allocate(2).unwrap(), 2);
        assert_eq!(reg.allocate(0).unwrap(), 3);
        // A process that dies before it saves: its numbers stay taken.
        let again = Registry::open(dir.path()).unwrap();
        assert_eq!(again.allocate(0).unwrap(), 4);
        // A registered version above the counter (copied in by hand) moves it.
        let mut p = toy_policy(1);
        p.version = 10;
        again.save(&p, &lineage(None)).unwrap();
        assert_eq!(again.allocate(0).unwrap(), 11);
    }

    #[test]
    fn saved_versions_load_with_their_lineage() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let mut p = toy_policy(4);
        p.version = reg.allocate(2).unwrap();
        reg.save(&p, &lineage(Some(1))).unwrap();
        assert_eq!(reg.versions().unwrap(), vec![2]);
        let q = reg.load(2).unwrap();
        assert_eq!(q.net, p.net);
        assert_eq!(q.version, 2);
        assert_eq!(reg.entry(2).unwrap().lineage, Some(lineage(Some(1))));
        assert!(reg.save(&p, &lineage(None)).is_err(), "a version is registered once");
        assert!(reg.load(3).is_err());
    }

    #[test]
    fn rollback_registers_a_copy_as_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        for seed in 0..3 {
            let mut p = toy_policy(seed);
            p.version = reg.allocate(1).unwrap();
            reg.save(&p, &lineage(None)).unwrap();
        }
        assert_eq!(reg.versions().unwrap(), vec![1, 2, 3]);
        let e = reg.rollback(1, "me").unwrap();
        assert_eq!(e.version, 4);
        assert_eq!(reg.load(4).unwrap().net, reg.load(1).unwrap().net);
        assert_eq!(e.lineage.unwrap().parent, Some(1));
        assert_eq!(reg.prune(2).unwrap(), 2);
        assert_eq!(reg.versions().unwrap(), vec![3, 4]);
        // A pruned version reads as not registered (a 404 to the admin API,
        // and left out of a listing that raced the prune), never a failure.
        assert!(matches!(reg.entry(1), Err(Error::NotFound(_))));
        assert_eq!(
            reg.entries().unwrap().iter().map(|e| e.version).collect::<Vec<_>>(),
            vec![3, 4]
        );
    }

    #[test]
    fn readers_racing_a_prune_see_whole_versions_or_none() {
        // The gateway lists and loads versions while its trainer saves and
        // prunes. Removing a version's files in place once made a listing
        // fail on a directory half emptied (a 500 from the admin API).
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for seed in 0..100 {
                    let mut p = toy_policy(seed % 4);
                    p.version = reg.allocate(1).unwrap();
                    reg.save(&p, &lineage(None)).unwrap();
                    reg.prune(2).unwrap();
                }
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                reg.entries().expect("a listing never fails on a pruned version");
                for v in reg.versions().unwrap() {
                    match reg.load(v) {
                        Ok(p) => assert_eq!(p.version, v),
                        Err(Error::NotFound(_)) => {}
                        Err(e) => panic!("loading v{v} while it was pruned: {e}"),
                    }
                }
                reads += 1;
            }
        });
        assert_eq!(reg.versions().unwrap(), vec![99, 100]);
        // A prune that died between its rename and its removal leaves a
        // directory out of the listing; the next prune removes it.
        fs::create_dir(dir.path().join(format!("{PRUNED_PREFIX}v7-1-2"))).unwrap();
        assert_eq!(reg.prune(2).unwrap(), 0);
        let left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(PRUNED_PREFIX))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_restart_resumes_the_line_of_its_base_policy() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let base = toy_policy(1);
        let Start::Fresh { policy, lineage } = reg.start_from(base.clone()).unwrap() else {
            panic!("an empty registry starts fresh");
        };
        assert_eq!(policy.version, base.version.max(1));
        reg.save(&policy, &lineage).unwrap();
        // The trainer moved on: v7 descends from the same base.
        let mut trained = toy_policy(5);
        trained.version = reg.allocate(2).unwrap().max(7);
        reg.save(
            &trained,
            &Lineage {
                parent: Some(1),
                ..lineage.clone()
            },
        )
        .unwrap();
        match reg.start_from(base.clone()).unwrap() {
            Start::Resume { policy, .. } => assert_eq!((policy.version, &policy.net), (trained.version, &trained.net)),
            other => panic!("expected a resume, got {other:?}"),
        }
        // Another base policy starts a new line above every number used.
        match reg.start_from(toy_policy(9)).unwrap() {
            Start::Fresh { policy, .. } => assert!(policy.version > trained.version),
            other => panic!("expected a new line, got {other:?}"),
        }
    }

    #[test]
    fn one_trainer_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let held = reg.lock_trainer().unwrap();
        assert!(reg.lock_trainer().is_err());
        drop(held);
        assert!(reg.lock_trainer().is_ok());
    }

    #[test]
    fn fingerprints_follow_the_weights() {
        let (a, b) = (toy_policy(1), toy_policy(2));
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }

    #[test]
    fn reading_a_missing_registry_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(Registry::open_existing(&missing).is_err());
        assert!(!missing.exists());
    }
}
