//! ferray's per-node, content-addressed object store.
//!
//! Objects are immutable byte strings named by their blake3 hash
//! ([`ObjectId`]). Putting equal bytes twice stores them once and adds a
//! reference; [`ObjectStore::decref`] frees an object (its memory and its
//! spill file) when its last reference goes.
//!
//! Objects live in memory up to [`StoreConfig::memory_capacity`] bytes. When a
//! put (or a restore) takes the store over that cap, the least recently used
//! objects are written to `spill_dir/<hex id>` (through a temporary name and a
//! rename) until the store is back under the cap, with a little headroom (it
//! spills down to 15/16 of the cap, so that a full store does not scan its
//! entries on every put). An object larger than the whole cap goes straight to
//! disk. [`ObjectStore::get`] of a spilled object reads the file back,
//! verifies its hash against the id (a mismatch is [`Error::Corrupt`]: the
//! store never returns wrong bytes) and keeps it in memory again if it fits
//! under the cap, spilling others if needed.
//!
//! # Concurrency and I/O
//!
//! The store is `Send + Sync` and meant to be shared behind an `Arc`. Entries
//! live in a sharded [`DashMap`]; a put or get of an in-memory object takes a
//! shard lock and the object's own lock for a few instructions, bumps a global
//! atomic LRU clock, and never takes a global mutex. A single eviction mutex
//! serialises spilling, which only runs while the store is over its cap.
//!
//! Disk I/O (spilling, restoring, deleting spill files) is synchronous
//! `std::fs`, done on the calling thread: callers on an async runtime that
//! expect to spill heavily should call the store from `spawn_blocking`. In the
//! common case (everything fits in memory) no call touches the disk.
//!
//! Lock order: a map shard, then an object's lock (never the reverse), and the
//! eviction mutex is only taken with no shard or object lock held; eviction
//! only *tries* object locks, so it never waits on a busy object.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use ferray_core::{Error, ObjectId, Result};
use parking_lot::{Mutex, RwLock, RwLockUpgradableReadGuard};

/// The default memory capacity: 2 GiB.
pub const DEFAULT_MEMORY_CAPACITY: u64 = 2 << 30;

/// How an [`ObjectStore`] is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Bytes of object data kept in memory before the least recently used
    /// objects are spilled to disk.
    pub memory_capacity: u64,
    /// Where spilled objects go. `None`: a fresh directory
    /// `ferray-spill-<pid>-<n>` under [`std::env::temp_dir`], removed when the
    /// store is dropped. A given directory is created if missing and kept on
    /// drop (the store's own spill files in it are removed).
    pub spill_dir: Option<PathBuf>,
    /// Where the fresh directory goes when `spill_dir` is `None` (default:
    /// [`std::env::temp_dir`]); its stale `ferray-spill-*` directories of
    /// dead processes are removed too. Created 0700 if missing.
    pub spill_base: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            memory_capacity: DEFAULT_MEMORY_CAPACITY,
            spill_dir: None,
            spill_base: None,
        }
    }
}

/// A snapshot of an [`ObjectStore`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Live objects (in memory or spilled).
    pub objects: u64,
    /// Bytes of the objects held in memory.
    pub bytes_in_memory: u64,
    /// Bytes of the objects currently on disk.
    pub bytes_spilled: u64,
    /// Objects currently on disk.
    pub spilled_objects: u64,
    /// Objects written to disk since the store was made (spills by eviction,
    /// by [`ObjectStore::spill_now`], and objects too large for memory).
    pub spills_total: u64,
    /// Spilled objects read back and kept in memory again since the store
    /// was made.
    pub restores_total: u64,
}

/// Where an object's bytes are.
enum State {
    Memory(Bytes),
    /// In `spill_dir/<hex id>`.
    Spilled,
    /// Its last reference went; the slot is out of the map (or about to be).
    Freed,
}

struct Slot {
    size: u64,
    /// Only changed under a lock on the slot's map shard: increments under a
    /// read lock, decrements under the write lock, so a count reaching zero
    /// and the removal that follows cannot race an increment.
    refs: AtomicU64,
    /// The LRU clock's value at the last put or get.
    last_used: AtomicU64,
    /// Mirrors `state` being `Memory`, for the eviction scan.
    resident: AtomicBool,
    state: RwLock<State>,
}

impl Slot {
    fn new(size: u64, tick: u64, state: State) -> Self {
        let resident = matches!(state, State::Memory(_));
        Self {
            size,
            refs: AtomicU64::new(1),
            last_used: AtomicU64::new(tick),
            resident: AtomicBool::new(resident),
            state: RwLock::new(state),
        }
    }

    fn touch(&self, tick: u64) {
        self.last_used.store(tick, Ordering::Relaxed);
    }
}

/// A node's content-addressed object store. See the [crate docs](crate).
pub struct ObjectStore {
    entries: DashMap<ObjectId, Arc<Slot>>,
    capacity: u64,
    /// What eviction spills down to once over `capacity`.
    low_water: u64,
    dir: PathBuf,
    /// Whether the store made `dir` (and removes it on drop).
    owns_dir: bool,
    clock: AtomicU64,
    tmp_counter: AtomicU64,
    evict_lock: Mutex<()>,
    bytes_in_memory: AtomicU64,
    bytes_spilled: AtomicU64,
    spilled_objects: AtomicU64,
    spills_total: AtomicU64,
    restores_total: AtomicU64,
}

impl fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStore")
            .field("memory_capacity", &self.capacity)
            .field("spill_dir", &self.dir)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl ObjectStore {
    /// A store with `config`; creates the spill directory.
    pub fn new(config: StoreConfig) -> Result<Self> {
        let (dir, owns_dir) = match config.spill_dir {
            Some(dir) => {
                private_dir_builder()
                    .recursive(true)
                    .create(&dir)
                    .map_err(|e| io_error("create spill dir", &dir, &e))?;
                (dir, false)
            }
            None => (create_temp_spill_dir(config.spill_base)?, true),
        };
        let capacity = config.memory_capacity;
        Ok(Self {
            entries: DashMap::new(),
            capacity,
            low_water: capacity - capacity / 16,
            dir,
            owns_dir,
            clock: AtomicU64::new(0),
            tmp_counter: AtomicU64::new(0),
            evict_lock: Mutex::new(()),
            bytes_in_memory: AtomicU64::new(0),
            bytes_spilled: AtomicU64::new(0),
            spilled_objects: AtomicU64::new(0),
            spills_total: AtomicU64::new(0),
            restores_total: AtomicU64::new(0),
        })
    }

    /// The configured memory capacity in bytes.
    pub fn memory_capacity(&self) -> u64 {
        self.capacity
    }

    /// The directory spilled objects go to.
    pub fn spill_dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `bytes` and returns their id, adding one reference. Equal bytes
    /// already in the store are not stored again: their count goes up.
    ///
    /// Never fails: if the disk refuses a spill, the object stays in memory
    /// (over the cap) and a warning is logged.
    pub fn put(&self, bytes: Bytes) -> ObjectId {
        let id = ObjectId::of(&bytes);
        self.insert(id, bytes);
        id
    }

    /// Stores `bytes` under `id` (bytes that come from elsewhere, named by
    /// their sender), adding one reference. [`Error::Corrupt`] if the bytes do
    /// not hash to `id`; then nothing is stored.
    pub fn put_with_id(&self, id: ObjectId, bytes: Bytes) -> Result<()> {
        if !id.matches(&bytes) {
            tracing::warn!(object = %id.short(), len = bytes.len(), "bytes do not match their id");
            return Err(corrupt(&id));
        }
        self.insert(id, bytes);
        Ok(())
    }

    /// Store bytes that the caller has just checked against `id` (a chunked
    /// transfer hashes as it receives, see `ferray_proto::assemble`), without
    /// hashing them a second time.
    pub fn put_checked(&self, id: ObjectId, bytes: Bytes) {
        debug_assert!(id.matches(&bytes));
        self.insert(id, bytes);
    }

    /// Adds a reference to a stored object; [`Error::ObjectLost`] if the
    /// store does not hold it.
    pub fn incref(&self, id: &ObjectId) -> Result<()> {
        match self.entries.get(id) {
            Some(slot) => {
                slot.refs.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            None => Err(lost(id)),
        }
    }

    /// Drops a reference. The last one frees the object, its memory and its
    /// spill file; returns whether this call did. Unknown ids are ignored.
    pub fn decref(&self, id: &ObjectId) -> bool {
        let Entry::Occupied(entry) = self.entries.entry(*id) else {
            tracing::debug!(object = %id.short(), "decref of an object not in the store");
            return false;
        };
        if entry.get().refs.fetch_sub(1, Ordering::Relaxed) > 1 {
            return false;
        }
        // Free while the shard is still locked: until the entry is removed no
        // new object with this id can appear and write `<hex id>` again.
        let slot = Arc::clone(entry.get());
        self.free(id, &slot);
        entry.remove();
        true
    }

    /// The object's current reference count, `None` if it is not stored.
    pub fn ref_count(&self, id: &ObjectId) -> Option<u64> {
        self.entries
            .get(id)
            .map(|slot| slot.refs.load(Ordering::Relaxed))
    }

    /// The object's size in bytes, `None` if it is not stored (nothing is
    /// read, even for a spilled object).
    pub fn size(&self, id: &ObjectId) -> Option<u64> {
        self.entries.get(id).map(|slot| slot.size)
    }

    /// Whether the store holds the object (in memory or on disk).
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.entries.contains_key(id)
    }

    /// The object's bytes: a zero-copy clone when in memory. A spilled object
    /// is read back (synchronously), checked against its id, and kept in
    /// memory again if it fits under the cap.
    ///
    /// Errors: [`Error::ObjectLost`] if the store does not hold the object
    /// (never stored, or freed) or its spill file is gone;
    /// [`Error::Corrupt`] if the spill file's bytes do not match the id;
    /// [`Error::System`] if the file cannot be read.
    pub fn get(&self, id: &ObjectId) -> Result<Bytes> {
        let tick = self.tick();
        let slot = {
            let Some(slot) = self.entries.get(id) else {
                return Err(lost(id));
            };
            slot.touch(tick);
            if let State::Memory(bytes) = &*slot.state.read() {
                return Ok(bytes.clone());
            }
            Arc::clone(slot.value())
        };
        self.restore(id, &slot)
    }

    /// The path of the object's spill file if it is currently on disk.
    pub fn spill_path(&self, id: &ObjectId) -> Option<PathBuf> {
        let slot = self.entries.get(id)?;
        let spilled = matches!(&*slot.state.read(), State::Spilled);
        spilled.then(|| self.path_of(id))
    }

    /// The objects on disk now.
    pub fn spilled_ids(&self) -> Vec<ObjectId> {
        self.entries
            .iter()
            .filter(|e| matches!(&*e.value().state.read(), State::Spilled))
            .map(|e| *e.key())
            .collect()
    }

    /// Writes an in-memory object to disk now. `Ok(true)` if it was moved to
    /// disk, `Ok(false)` if it already was there; [`Error::ObjectLost`] if
    /// the store does not hold it, [`Error::System`] if the write failed (the
    /// object then stays in memory).
    pub fn spill_now(&self, id: &ObjectId) -> Result<bool> {
        let slot = self
            .entries
            .get(id)
            .map(|slot| Arc::clone(slot.value()))
            .ok_or_else(|| lost(id))?;
        self.spill_slot(id, &slot, true)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            objects: self.entries.len() as u64,
            bytes_in_memory: self.bytes_in_memory.load(Ordering::Relaxed),
            bytes_spilled: self.bytes_spilled.load(Ordering::Relaxed),
            spilled_objects: self.spilled_objects.load(Ordering::Relaxed),
            spills_total: self.spills_total.load(Ordering::Relaxed),
            restores_total: self.restores_total.load(Ordering::Relaxed),
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    fn path_of(&self, id: &ObjectId) -> PathBuf {
        self.dir.join(id.to_hex())
    }

    fn insert(&self, id: ObjectId, bytes: Bytes) {
        let tick = self.tick();
        if let Some(slot) = self.entries.get(&id) {
            slot.refs.fetch_add(1, Ordering::Relaxed);
            slot.touch(tick);
            return;
        }
        let size = bytes.len() as u64;
        // Too big for memory at all: write it out before taking the shard lock.
        let staged = if size > self.capacity {
            match self.stage_file(&id, &bytes) {
                Ok(tmp) => Some(tmp),
                Err(e) => {
                    tracing::warn!(object = %id.short(), size, error = %e,
                        "cannot spill an object larger than the memory cap; keeping it in memory");
                    None
                }
            }
        } else {
            None
        };
        let in_memory = match self.entries.entry(id) {
            Entry::Occupied(entry) => {
                let slot = entry.get();
                slot.refs.fetch_add(1, Ordering::Relaxed);
                slot.touch(tick);
                drop(entry);
                if let Some(tmp) = staged {
                    remove_quietly(&tmp);
                }
                false
            }
            Entry::Vacant(entry) => {
                let on_disk = staged.is_some_and(|tmp| match fs::rename(&tmp, self.path_of(&id)) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(object = %id.short(), size, error = %e,
                            "cannot spill an object larger than the memory cap; keeping it in memory");
                        remove_quietly(&tmp);
                        false
                    }
                });
                if on_disk {
                    self.bytes_spilled.fetch_add(size, Ordering::Relaxed);
                    self.spilled_objects.fetch_add(1, Ordering::Relaxed);
                    self.spills_total.fetch_add(1, Ordering::Relaxed);
                    entry.insert(Arc::new(Slot::new(size, tick, State::Spilled)));
                    tracing::debug!(object = %id.short(), size, "object larger than the memory cap stored on disk");
                } else {
                    self.bytes_in_memory.fetch_add(size, Ordering::Relaxed);
                    entry.insert(Arc::new(Slot::new(size, tick, State::Memory(bytes))));
                }
                !on_disk
            }
        };
        if in_memory {
            self.evict_if_needed(&id);
        }
    }

    /// Reads a spilled object back (under its write lock, so one reader does
    /// the I/O and the others find it in memory).
    fn restore(&self, id: &ObjectId, slot: &Slot) -> Result<Bytes> {
        let mut state = slot.state.write();
        match &*state {
            State::Memory(bytes) => return Ok(bytes.clone()),
            State::Freed => return Err(lost(id)),
            State::Spilled => {}
        }
        let path = self.path_of(id);
        let data = fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                tracing::warn!(object = %id.short(), path = %path.display(), "spill file is gone");
                Error::ObjectLost(format!(
                    "object {id}: its spill file {} is gone",
                    path.display()
                ))
            } else {
                io_error("read spill file", &path, &e)
            }
        })?;
        if data.len() as u64 != slot.size || !id.matches(&data) {
            tracing::warn!(object = %id.short(), path = %path.display(), "spill file does not match its id");
            return Err(corrupt(id));
        }
        let bytes = Bytes::from(data);
        if slot.size > self.capacity {
            return Ok(bytes);
        }
        *state = State::Memory(bytes.clone());
        slot.resident.store(true, Ordering::Relaxed);
        self.bytes_in_memory.fetch_add(slot.size, Ordering::Relaxed);
        self.bytes_spilled.fetch_sub(slot.size, Ordering::Relaxed);
        self.spilled_objects.fetch_sub(1, Ordering::Relaxed);
        self.restores_total.fetch_add(1, Ordering::Relaxed);
        remove_quietly(&path);
        drop(state);
        tracing::debug!(object = %id.short(), size = slot.size, "restored spilled object into memory");
        self.evict_if_needed(id);
        Ok(bytes)
    }

    /// Marks the slot freed and releases its memory or spill file.
    fn free(&self, id: &ObjectId, slot: &Slot) {
        let mut state = slot.state.write();
        match std::mem::replace(&mut *state, State::Freed) {
            State::Memory(_) => {
                slot.resident.store(false, Ordering::Relaxed);
                self.bytes_in_memory.fetch_sub(slot.size, Ordering::Relaxed);
            }
            State::Spilled => {
                let path = self.path_of(id);
                if let Err(e) = fs::remove_file(&path)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(object = %id.short(), path = %path.display(), error = %e,
                        "cannot remove spill file");
                }
                self.bytes_spilled.fetch_sub(slot.size, Ordering::Relaxed);
                self.spilled_objects.fetch_sub(1, Ordering::Relaxed);
            }
            State::Freed => {}
        }
        tracing::trace!(object = %id.short(), size = slot.size, "object freed");
    }

    /// Spills least recently used objects (other than `keep`) while memory
    /// is over the cap, down to the low-water mark.
    fn evict_if_needed(&self, keep: &ObjectId) {
        if self.bytes_in_memory.load(Ordering::Relaxed) <= self.capacity {
            return;
        }
        let _evicting = self.evict_lock.lock();
        if self.bytes_in_memory.load(Ordering::Relaxed) <= self.capacity {
            return;
        }
        let mut candidates: Vec<(u64, ObjectId, Arc<Slot>)> = self
            .entries
            .iter()
            .filter(|e| e.key() != keep && e.size > 0 && e.resident.load(Ordering::Relaxed))
            .map(|e| {
                (
                    e.last_used.load(Ordering::Relaxed),
                    *e.key(),
                    Arc::clone(e.value()),
                )
            })
            .collect();
        candidates.sort_unstable_by_key(|c| c.0);
        for (_, id, slot) in candidates {
            if self.bytes_in_memory.load(Ordering::Relaxed) <= self.low_water {
                break;
            }
            if let Err(e) = self.spill_slot(&id, &slot, false) {
                tracing::warn!(object = %id.short(), error = %e, "cannot spill; object stays in memory");
            }
        }
        let now = self.bytes_in_memory.load(Ordering::Relaxed);
        if now > self.capacity {
            tracing::debug!(
                bytes_in_memory = now,
                capacity = self.capacity,
                "still over the memory cap after spilling"
            );
        }
    }

    /// Writes an in-memory slot to `<hex id>`. Readers keep being served from
    /// memory during the write; `wait: false` skips a slot someone else holds.
    fn spill_slot(&self, id: &ObjectId, slot: &Slot, wait: bool) -> Result<bool> {
        let state = if wait {
            slot.state.upgradable_read()
        } else {
            match slot.state.try_upgradable_read() {
                Some(state) => state,
                None => return Ok(false),
            }
        };
        let bytes = match &*state {
            State::Memory(bytes) => bytes.clone(),
            State::Spilled => return Ok(false),
            State::Freed => return Err(lost(id)),
        };
        let path = self.path_of(id);
        let tmp = self
            .stage_file(id, &bytes)
            .map_err(|e| io_error("write spill file", &path, &e))?;
        if let Err(e) = fs::rename(&tmp, &path) {
            remove_quietly(&tmp);
            return Err(io_error("rename spill file", &path, &e));
        }
        let mut state = RwLockUpgradableReadGuard::upgrade(state);
        *state = State::Spilled;
        slot.resident.store(false, Ordering::Relaxed);
        self.bytes_in_memory.fetch_sub(slot.size, Ordering::Relaxed);
        self.bytes_spilled.fetch_add(slot.size, Ordering::Relaxed);
        self.spilled_objects.fetch_add(1, Ordering::Relaxed);
        self.spills_total.fetch_add(1, Ordering::Relaxed);
        drop(state);
        tracing::debug!(object = %id.short(), size = slot.size, "spilled object to disk");
        Ok(true)
    }

    /// Writes `bytes` to a fresh temporary file in the spill dir, to be
    /// renamed to `<hex id>`.
    fn stage_file(&self, id: &ObjectId, bytes: &[u8]) -> io::Result<PathBuf> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(".{}.tmp-{n}", id.to_hex()));
        let written = private_file_options()
            .open(&tmp)
            .and_then(|mut file| file.write_all(bytes));
        match written {
            Ok(()) => Ok(tmp),
            Err(e) => {
                remove_quietly(&tmp);
                Err(e)
            }
        }
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        if self.owns_dir {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                tracing::warn!(path = %self.dir.display(), error = %e, "cannot remove spill dir");
            }
            return;
        }
        for entry in self.entries.iter() {
            if matches!(&*entry.state.read(), State::Spilled) {
                remove_quietly(&self.path_of(entry.key()));
            }
        }
    }
}

/// A builder of directories only their owner can enter (0700 on Unix).
fn private_dir_builder() -> fs::DirBuilder {
    #[allow(unused_mut)]
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
}

/// Options that create a new file only its owner can read (0600 on Unix),
/// failing if the name exists (a symlink included: it is not followed).
fn private_file_options() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

const SPILL_PREFIX: &str = "ferray-spill-";

fn create_temp_spill_dir(base: Option<PathBuf>) -> Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static SWEPT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let base = match base {
        Some(base) => {
            private_dir_builder()
                .recursive(true)
                .create(&base)
                .map_err(|e| io_error("create spill base dir", &base, &e))?;
            base
        }
        None => std::env::temp_dir(),
    };
    let pid = std::process::id();
    let dir = loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("{SPILL_PREFIX}{pid}-{n}"));
        match private_dir_builder().create(&dir) {
            Ok(()) => break dir,
            // Left over by an earlier process with the same pid: take the next.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1 << 20 => {}
            Err(e) => return Err(io_error("create spill dir", &dir, &e)),
        }
    };
    // Once per process and base, the first time a store makes its own
    // directory there.
    let mut swept = SWEPT.lock();
    if !swept.contains(&base) {
        remove_stale_spill_dirs(&base, &dir);
        swept.push(base);
    }
    Ok(dir)
}

/// Removes the `ferray-spill-<pid>-<n>` directories in `base` left behind by
/// processes that are gone (no `/proc/<pid>`): a killed node never drops its
/// store. Never touches one of a live process, a symlink, or a directory
/// whose owner is not the owner of `mine` (this process's own spill dir), and
/// does nothing where `/proc` cannot tell (not Linux). Returns how many it
/// removed.
#[cfg(unix)]
fn remove_stale_spill_dirs(base: &Path, mine: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return 0;
    }
    let (Ok(me), Ok(entries)) = (fs::symlink_metadata(mine), fs::read_dir(base)) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SPILL_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .filter(|(_, n)| n.parse::<u64>().is_ok())
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || proc.join(pid.to_string()).exists() {
            continue;
        }
        let path = entry.path();
        // Not followed: only a real directory, of the same owner as ours.
        let ours = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == me.uid());
        if !ours {
            continue;
        }
        match fs::remove_dir_all(&path) {
            Ok(()) => {
                removed += 1;
                tracing::info!(path = %path.display(), "removed the spill dir of a process that is gone");
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale spill dir");
            }
        }
    }
    removed
}

#[cfg(not(unix))]
fn remove_stale_spill_dirs(_: &Path, _: &Path) -> usize {
    0
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove spill file");
    }
}

fn lost(id: &ObjectId) -> Error {
    Error::ObjectLost(format!(
        "object {id} is not in the store (never stored, or freed)"
    ))
}

fn corrupt(id: &ObjectId) -> Error {
    Error::Corrupt { id: id.to_hex() }
}

fn io_error(what: &str, path: &Path, e: &io::Error) -> Error {
    Error::System(format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(cap: u64) -> ObjectStore {
        ObjectStore::new(StoreConfig {
            memory_capacity: cap,
            spill_dir: None,
            ..StoreConfig::default()
        })
        .expect("store")
    }

    #[test]
    fn store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<ObjectStore>();
    }

    #[test]
    fn default_config_is_two_gib_in_a_temp_dir() {
        let config = StoreConfig::default();
        assert_eq!(config.memory_capacity, 2 * 1024 * 1024 * 1024);
        assert_eq!(config.spill_dir, None);
    }

    #[test]
    fn temp_spill_dir_is_made_under_temp_dir_and_removed_on_drop() {
        let s = store(1024);
        let dir = s.spill_dir().to_path_buf();
        assert!(dir.is_dir());
        assert!(dir.starts_with(std::env::temp_dir()));
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        assert!(
            name.starts_with(&format!("ferray-spill-{}-", std::process::id())),
            "{name}"
        );
        let id = s.put(Bytes::from(vec![7u8; 4096]));
        assert!(s.spill_path(&id).is_some_and(|p| p.is_file()));
        let other = store(1024);
        assert_ne!(other.spill_dir(), dir);
        drop(s);
        assert!(!dir.exists());
    }

    #[test]
    fn empty_object_is_an_object() {
        let s = store(0);
        let id = s.put(Bytes::new());
        assert_eq!(id, ObjectId::of(b""));
        assert_eq!(s.get(&id).expect("get"), Bytes::new());
        assert!(s.decref(&id));
        assert_eq!(s.stats(), StoreStats::default());
    }

    #[test]
    fn restore_does_not_evict_the_object_being_read() {
        // Low water is 15/16 of the cap: an object of 95% of it is kept.
        let s = store(1000);
        let big = Bytes::from(vec![1u8; 950]);
        let id = s.put(big.clone());
        assert!(s.spill_now(&id).expect("spill"));
        let small = s.put(Bytes::from(vec![2u8; 100]));
        assert_eq!(s.get(&id).expect("get"), big);
        assert!(s.spill_path(&id).is_none());
        assert!(s.spill_path(&small).is_some());
        assert_eq!(s.stats().bytes_in_memory, 950);
        // What a worker's heartbeat reports: the objects on disk now.
        assert_eq!(s.spilled_ids(), vec![small]);
    }
}

#[cfg(all(test, unix))]
mod file_tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn temp_spill_dir_is_0700_and_spill_files_0600() {
        let s = ObjectStore::new(StoreConfig {
            memory_capacity: 1000,
            spill_dir: None,
            ..StoreConfig::default()
        })
        .expect("store");
        assert_eq!(mode(s.spill_dir()), 0o700);
        // Larger than the cap: straight to disk.
        let big = s.put(Bytes::from(vec![1u8; 4096]));
        let path = s.spill_path(&big).expect("spilled");
        assert_eq!(mode(&path), 0o600);
        // Evicted under pressure.
        let a = s.put(Bytes::from(vec![2u8; 600]));
        let _b = s.put(Bytes::from(vec![3u8; 600]));
        let path = s.spill_path(&a).expect("evicted");
        assert_eq!(mode(&path), 0o600);
        // Spilled on request.
        let c = s.put(Bytes::from(vec![4u8; 10]));
        assert!(s.spill_now(&c).expect("spill"));
        assert_eq!(mode(&s.spill_path(&c).expect("spilled")), 0o600);
    }

    #[test]
    fn a_given_spill_dir_is_created_0700() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("a").join("spill");
        let s = ObjectStore::new(StoreConfig {
            memory_capacity: 0,
            spill_dir: Some(dir.clone()),
            ..StoreConfig::default()
        })
        .expect("store");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&base.path().join("a")), 0o700);
        let id = s.put(Bytes::from_static(b"spilled"));
        assert_eq!(mode(&s.spill_path(&id).expect("spilled")), 0o600);
    }

    #[test]
    fn a_spill_file_is_not_written_through_a_symlink() {
        let base = tempfile::tempdir().expect("tempdir");
        let target = base.path().join("target");
        fs::write(&target, b"keep").expect("write");
        let tmp = base.path().join(".tmp");
        std::os::unix::fs::symlink(&target, &tmp).expect("symlink");
        assert!(private_file_options().open(&tmp).is_err());
        assert_eq!(fs::read(&target).expect("read"), b"keep");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stale_spill_dirs_of_dead_processes_are_removed_and_live_ones_kept() {
        let base = tempfile::tempdir().expect("tempdir");
        let base = base.path();
        // Above the kernel's largest pid: no live process has it.
        let pid_max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
            .expect("pid_max")
            .trim()
            .parse()
            .expect("pid_max");
        let dead = pid_max + 1;
        let me = std::process::id();
        let parent = std::os::unix::process::parent_id();
        assert!(Path::new(&format!("/proc/{parent}")).exists());
        let mkdir = |name: &str| {
            let dir = base.join(name);
            fs::create_dir(&dir).expect("mkdir");
            fs::write(dir.join("0123"), b"object").expect("write");
            dir
        };
        let stale = mkdir(&format!("ferray-spill-{dead}-0"));
        let stale_too = mkdir(&format!("ferray-spill-{dead}-17"));
        let mine = mkdir(&format!("ferray-spill-{me}-0"));
        let live = mkdir(&format!("ferray-spill-{parent}-2"));
        let not_a_pid = mkdir("ferray-spill-x-0");
        let no_n = mkdir(&format!("ferray-spill-{dead}"));
        let other = mkdir(&format!("other-{dead}-0"));
        // A symlink named like a stale dir: removed or not, never followed.
        let elsewhere = mkdir("elsewhere");
        let link = base.join(format!("ferray-spill-{}-0", dead + 1));
        std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");

        assert_eq!(remove_stale_spill_dirs(base, base), 2);
        assert!(!stale.exists());
        assert!(!stale_too.exists());
        for kept in [&mine, &live, &not_a_pid, &no_n, &other, &elsewhere] {
            assert!(kept.join("0123").is_file(), "{}", kept.display());
        }
        assert!(link.symlink_metadata().is_ok());
    }
}
