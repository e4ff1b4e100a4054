//! The head's database: what survives a restart of the head process
//! (`state/saved.rs` says what), in one redb file (`~/.ferray/head.redb`
//! unless `ferray start --state-db` says otherwise).
//!
//! redb rather than SQLite: it is pure Rust (no C to build, nothing to
//! link), one file with crash-safe copy-on-write commits, and what the head
//! keeps is a few keyed tables of records, which needs no SQL. The file is
//! locked while a head has it open, so a second head on it is refused.
//!
//! The state never waits for the disk: its changes go to a writer thread,
//! which commits whatever has queued in one transaction (fsync'd). What
//! the state changed in the last moments before a crash (about one commit)
//! may be lost.

use std::path::Path;
use std::sync::mpsc;

use bytes::Bytes;
use ferray_core::{ComponentId, Error, JobId, ObjectId};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::state::{Counters, JobRecord, Save, Saved, ServeRecord, SessionRecord};

/// Jobs by id, as JSON records.
const JOBS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("jobs");
/// Components by content id.
const COMPONENTS: TableDefinition<'static, &[u8; 32], &[u8]> = TableDefinition::new("components");
/// Objects of `ferray put`, by content id.
const PINNED: TableDefinition<'static, &[u8; 32], &[u8]> = TableDefinition::new("pinned");
/// Open sessions by id (a restarted head takes them back), as JSON records.
const SESSIONS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("sessions");
/// Counters and other single values.
const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");

/// The version of the records' layout; a file of another is refused.
const LAYOUT: u64 = 1;

fn db_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::System(format!("the head's database {}: {e}", path.display()))
}

/// A change for the writer.
enum Write {
    Saves(Vec<Save>),
    Pinned(ObjectId, Bytes),
    /// The serve application (none: deleted).
    ServeApp(Option<ServeRecord>),
    /// Answered once everything before it is committed.
    Sync(mpsc::Sender<()>),
}

/// The head's open database and its writer thread.
pub struct Db {
    tx: Option<mpsc::Sender<Write>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Db {
    /// What was queued is committed and the file closed (another head may
    /// open it) before this returns.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Db {
    /// Open (or create) the database at `path` and read what it holds.
    /// Refused when another head has it open, or when it is not a head's
    /// database of this layout.
    pub fn open(path: &Path) -> Result<(Db, Saved), Error> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| db_err(path, e))?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => db_err(
                path,
                "another head has it open (one head per database; pass --state-db)",
            ),
            e => db_err(path, e),
        })?;
        // Owner-only: it holds jobs' results and components.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        let saved = read(&db, path)?;
        let (tx, rx) = mpsc::channel();
        let p = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("ferray-head-db".into())
            .spawn(move || writer(db, &p, rx))
            .map_err(|e| db_err(path, e))?;
        Ok((
            Db {
                tx: Some(tx),
                writer: Some(writer),
            },
            saved,
        ))
    }

    /// Queue the state's changes (written soon, in order).
    pub fn save(&self, saves: Vec<Save>) {
        if !saves.is_empty() {
            self.send(Write::Saves(saves));
        }
    }

    /// Queue an object of `ferray put`.
    pub fn save_pinned(&self, id: ObjectId, bytes: Bytes) {
        self.send(Write::Pinned(id, bytes));
    }

    /// Queue the serve application the head runs (none: it was deleted).
    pub fn save_serve_app(&self, app: Option<ServeRecord>) {
        self.send(Write::ServeApp(app));
    }

    /// Wait until everything queued so far is committed.
    pub fn sync(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(Write::Sync(tx));
        let _ = rx.recv();
    }

    fn send(&self, w: Write) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(w);
        }
    }
}

fn read(db: &Database, path: &Path) -> Result<Saved, Error> {
    // Make the tables, and check or write the layout.
    let w = db.begin_write().map_err(|e| db_err(path, e))?;
    {
        let mut meta = w.open_table(META).map_err(|e| db_err(path, e))?;
        let layout = meta
            .get("layout")
            .map_err(|e| db_err(path, e))?
            .map(|v| v.value().to_vec());
        match layout {
            None => {
                meta.insert("layout", LAYOUT.to_le_bytes().as_slice())
                    .map_err(|e| db_err(path, e))?;
            }
            Some(v) if v == LAYOUT.to_le_bytes() => {}
            Some(_) => {
                return Err(db_err(
                    path,
                    "written by another version of ferray (move it away to start a new cluster)",
                ));
            }
        }
        w.open_table(JOBS).map_err(|e| db_err(path, e))?;
        w.open_table(COMPONENTS).map_err(|e| db_err(path, e))?;
        w.open_table(PINNED).map_err(|e| db_err(path, e))?;
        w.open_table(SESSIONS).map_err(|e| db_err(path, e))?;
    }
    w.commit().map_err(|e| db_err(path, e))?;

    let r = db.begin_read().map_err(|e| db_err(path, e))?;
    let mut saved = Saved::default();
    let meta = r.open_table(META).map_err(|e| db_err(path, e))?;
    if let Some(v) = meta.get("counters").map_err(|e| db_err(path, e))? {
        saved.counters = serde_json::from_slice::<Counters>(v.value())
            .map_err(|e| db_err(path, format!("unreadable counters: {e}")))?;
    }
    if let Some(v) = meta.get("serve-app").map_err(|e| db_err(path, e))? {
        match serde_json::from_slice::<ServeRecord>(v.value()) {
            Ok(app) => saved.serve_app = Some(app),
            // It costs the application (deploy it again), not the cluster.
            Err(e) => tracing::warn!(
                "the serve application in {} is unreadable: {e}",
                path.display()
            ),
        }
    }
    let jobs = r.open_table(JOBS).map_err(|e| db_err(path, e))?;
    for row in jobs.iter().map_err(|e| db_err(path, e))? {
        let (k, v) = row.map_err(|e| db_err(path, e))?;
        match serde_json::from_slice::<JobRecord>(v.value()) {
            Ok(rec) => saved.jobs.push((JobId(k.value()), rec)),
            // One bad record costs that job, not the cluster.
            Err(e) => tracing::warn!("job-{} in {} is unreadable: {e}", k.value(), path.display()),
        }
    }
    let sessions = r.open_table(SESSIONS).map_err(|e| db_err(path, e))?;
    for row in sessions.iter().map_err(|e| db_err(path, e))? {
        let (k, v) = row.map_err(|e| db_err(path, e))?;
        match serde_json::from_slice::<SessionRecord>(v.value()) {
            Ok(rec) => saved.sessions.push((k.value(), rec)),
            Err(e) => tracing::warn!(
                "session {} in {} is unreadable: {e}",
                k.value(),
                path.display()
            ),
        }
    }
    saved.components = blobs(&r, COMPONENTS, path, "component")?
        .into_iter()
        .map(|(k, b)| (ComponentId::from_bytes(k), b))
        .collect();
    saved.pinned = blobs(&r, PINNED, path, "object")?
        .into_iter()
        .map(|(k, b)| (ObjectId::from_bytes(k), b))
        .collect();
    Ok(saved)
}

/// The rows of a table of bytes by content id, each checked as every
/// component and object is (the id is the bytes' blake3); a corrupt one is
/// dropped with a warning.
fn blobs(
    r: &redb::ReadTransaction,
    table: TableDefinition<'static, &[u8; 32], &[u8]>,
    path: &Path,
    what: &str,
) -> Result<Vec<([u8; 32], Bytes)>, Error> {
    let t = r.open_table(table).map_err(|e| db_err(path, e))?;
    let mut out = Vec::new();
    for row in t.iter().map_err(|e| db_err(path, e))? {
        let (k, v) = row.map_err(|e| db_err(path, e))?;
        let key = *k.value();
        let id = ObjectId::from_bytes(key);
        if id.matches(v.value()) {
            out.push((key, Bytes::copy_from_slice(v.value())));
        } else {
            tracing::warn!(
                "{what} {} in {} is corrupt: dropped",
                id.short(),
                path.display()
            );
        }
    }
    Ok(out)
}

/// The writer thread: commits what queued, one transaction per wake-up,
/// until the head drops its `Db`.
fn writer(db: Database, path: &Path, rx: mpsc::Receiver<Write>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut syncs = Vec::new();
        if let Err(e) = commit(&db, batch, &mut syncs) {
            tracing::error!("{}", db_err(path, e));
        }
        for s in syncs {
            let _ = s.send(());
        }
    }
}

fn commit(
    db: &Database,
    batch: Vec<Write>,
    syncs: &mut Vec<mpsc::Sender<()>>,
) -> Result<(), redb::Error> {
    let w = db.begin_write()?;
    {
        let mut jobs = w.open_table(JOBS)?;
        let mut components = w.open_table(COMPONENTS)?;
        let mut pinned = w.open_table(PINNED)?;
        let mut meta = w.open_table(META)?;
        let mut sessions = w.open_table(SESSIONS)?;
        for item in batch {
            match item {
                Write::Saves(saves) => {
                    for s in saves {
                        match s {
                            Save::Job(id, rec) => {
                                // A record always serializes: plain fields.
                                if let Ok(v) = serde_json::to_vec(&rec) {
                                    jobs.insert(id.0, v.as_slice())?;
                                }
                            }
                            Save::ForgetJob(id) => {
                                jobs.remove(id.0)?;
                            }
                            Save::Component(id, bytes) => {
                                components.insert(id.as_bytes(), bytes.as_ref())?;
                            }
                            Save::ForgetComponent(id) => {
                                components.remove(id.as_bytes())?;
                            }
                            Save::Session(id, rec) => {
                                if let Ok(v) = serde_json::to_vec(&rec) {
                                    sessions.insert(id, v.as_slice())?;
                                }
                            }
                            Save::ForgetSession(id) => {
                                sessions.remove(id)?;
                            }
                            Save::Counters(c) => {
                                if let Ok(v) = serde_json::to_vec(&c) {
                                    meta.insert("counters", v.as_slice())?;
                                }
                            }
                        }
                    }
                }
                Write::Pinned(id, bytes) => {
                    pinned.insert(id.as_bytes(), bytes.as_ref())?;
                }
                Write::ServeApp(Some(app)) => {
                    if let Ok(v) = serde_json::to_vec(&app) {
                        meta.insert("serve-app", v.as_slice())?;
                    }
                }
                Write::ServeApp(None) => {
                    meta.remove("serve-app")?;
                }
                Write::Sync(s) => syncs.push(s),
            }
        }
    }
    w.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Saved;
    use ferray_core::view::JobState;

    fn session(node: Option<u64>) -> crate::state::SessionRecord {
        crate::state::SessionRecord {
            node,
            job: None,
            name: "w".into(),
        }
    }

    fn record(state: JobState, result: &str) -> JobRecord {
        JobRecord {
            key: "key-1".into(),
            entrypoint: "main 1".into(),
            component: "c".into(),
            state,
            result: result.into(),
            error: String::new(),
            err_value: false,
            done: 3,
            total: 4,
            start: 1,
            end: 2,
            logs: vec!["(driver) hi".into()],
            logs_dropped: 0,
            driver: None,
        }
    }

    /// What was saved is read back by the next head on the file, in the
    /// order saved (a later record of a job replaces the earlier, a
    /// forgotten one is gone); a second head on an open file is refused;
    /// bytes whose hash does not match their id are dropped.
    #[test]
    fn saves_are_read_back_by_the_next_head_and_one_head_has_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub").join("head.redb");
        let (db, saved) = Db::open(&path).expect("a new database");
        assert!(saved.jobs.is_empty() && saved.components.is_empty() && saved.pinned.is_empty());
        let e = Db::open(&path).err().expect("a second head is refused");
        assert!(e.to_string().contains("another head"), "{e}");
        let comp = Bytes::from_static(b"component bytes");
        let cid = ComponentId::of(&comp);
        let gone = ComponentId::of(b"gone");
        let obj = Bytes::from_static(b"a put object");
        let oid = ObjectId::of(&obj);
        db.save(vec![
            Save::Job(JobId(1), Box::new(record(JobState::Running, ""))),
            Save::Job(JobId(2), Box::new(record(JobState::Failed, ""))),
            Save::Component(cid, comp.clone()),
            Save::Component(gone, Bytes::from_static(b"gone")),
            Save::Counters(Counters {
                session: 9,
                node: 4,
                job: 3,
                head_task: 7,
            }),
            Save::Session(5, session(Some(2))),
            Save::Session(6, session(None)),
        ]);
        db.save(vec![
            Save::Job(JobId(1), Box::new(record(JobState::Succeeded, "ok(1)"))),
            Save::ForgetJob(JobId(2)),
            Save::ForgetComponent(gone),
            Save::ForgetSession(6),
        ]);
        db.save_pinned(oid, obj.clone());
        let app = |v: &str| ServeRecord {
            text: format!("# version {v}"),
            origin: "app.toml".into(),
            components: [("hello".to_string(), cid)].into_iter().collect(),
            proxy_location: String::new(),
        };
        db.save_serve_app(Some(app("1")));
        db.save_serve_app(Some(app("2")));
        // Bytes that are not what their id says.
        db.save_pinned(ObjectId::of(b"other"), Bytes::from_static(b"not other"));
        db.sync();
        drop(db);
        let (db, saved): (Db, Saved) = Db::open(&path).expect("reopened");
        assert_eq!(
            saved.jobs,
            vec![(JobId(1), record(JobState::Succeeded, "ok(1)"))]
        );
        assert_eq!(saved.components, vec![(cid, comp)]);
        assert_eq!(
            saved.counters,
            Counters {
                session: 9,
                node: 4,
                job: 3,
                head_task: 7,
            }
        );
        assert_eq!(saved.sessions, vec![(5, session(Some(2)))]);
        assert_eq!(saved.pinned, vec![(oid, obj)]);
        // The latest application; none once deleted.
        assert_eq!(saved.serve_app, Some(app("2")));
        db.save_serve_app(None);
        drop(db);
        let (_db, saved) = Db::open(&path).expect("reopened");
        assert_eq!(saved.serve_app, None);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_with_its_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("head.redb");
        std::fs::write(&path, b"not a database at all").expect("write");
        let e = Db::open(&path).err().expect("refused");
        assert!(e.to_string().contains("head.redb"), "{e}");
    }
}
