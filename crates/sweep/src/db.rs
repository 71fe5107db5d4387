//! The results database (SQLite, WAL). Every write is one short transaction, so several
//! processes can share a file: claiming a trial is a single `BEGIN IMMEDIATE` transaction and
//! a busy timeout absorbs the waits.

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use trainer::train::{EpochRecord, TestReport};

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 3;

/// Migrations, applied in order: entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("schema_v1.sql"),
    include_str!("schema_v2.sql"),
    include_str!("schema_v3.sql"),
];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "{path}: not a SQLite database (or it is corrupt); move it aside or pass another --db"
    )]
    NotADatabase { path: PathBuf },
    #[error(
        "{path}: schema version {found} is newer than this build understands ({SCHEMA_VERSION}); \
         use a newer cifar-sweep or another --db"
    )]
    TooNew { path: PathBuf, found: i64 },
    #[error("{path}: cannot create the database folder: {source}")]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: a SQLite database of another program (tables: {tables}), not a cifar-sweep \
         results database; pass another --db"
    )]
    Foreign { path: PathBuf, tables: String },
    #[error(
        "{path}: empty, not a cifar-sweep results database yet (only `run` and `train` create \
         one); pass another --db"
    )]
    Empty { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    // The SQLite error is part of the message and deliberately not a `source`: rusqlite's error
    // repeats its own source's text, so a chain printer (`{:#}`) said it three times.
    #[error("{path}: {error}")]
    Sqlite {
        path: PathBuf,
        error: rusqlite::Error,
    },
    #[error("{path}: no results database yet; run a sweep first")]
    Missing { path: PathBuf },
    #[error("{path}: {what} is {value:?}, which is not a plain relative path; was the database edited by hand?")]
    BadPath {
        path: PathBuf,
        what: String,
        value: String,
    },
    #[error(
        "{path}: sweep `{name}` was recorded from {stored_path} and {new_path} describes other \
         trials under the same name; run it under another name (--name NAME) or use another --db"
    )]
    SweepConflict {
        path: PathBuf,
        name: String,
        stored_path: String,
        new_path: String,
    },
    #[error("no sweep named `{0}` in the database")]
    NoSuchSweep(String),
    #[error("no trial `{0}` in the database (give its id, or key:PREFIX of its key)")]
    NoSuchTrial(String),
    #[error("`{given}` is the start of several trials' keys: {matches}; give more of the key")]
    AmbiguousTrial { given: String, matches: String },
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// What a database path holds, as [`probe`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Nothing at the path.
    Missing,
    /// A 0-byte file, or a SQLite database without tables: `run` may create the schema in it.
    Empty,
    /// A cifar-sweep database at schema `version` (at most [`SCHEMA_VERSION`]).
    Ours { version: i64 },
}

/// The tables every cifar-sweep schema has; their presence tells our database from another
/// program's.
const OUR_TABLES: [&str; 2] = ["sweeps", "trials"];

/// Finds out what `path` holds without writing or creating anything (no schema, no journal
/// mode change, no `-wal`/`-shm` files), so every command can check a database before it
/// changes anything. Errors: [`DbError::NotADatabase`] (not SQLite, or corrupt),
/// [`DbError::TooNew`], [`DbError::Foreign`] (another program's tables).
pub fn probe(path: &Path) -> Result<Probe> {
    if let Some(p) = missing_or_empty(path)? {
        return Ok(p);
    }
    // Never `File::open` the database ourselves: closing any descriptor of a file drops every
    // POSIX lock this process holds on it, including those of open SQLite connections.
    read_only_classified(path).map(|(_, p)| p)
}

/// A read-only connection ([`read_only_connection`]) and what it found. An immutable read
/// takes no locks, so it is only trusted when the file did not change while it ran (same
/// size and modification time before and after, and still no `-wal`): otherwise a writer was
/// at work (e.g. another `run` creating this very file, whose half-written pages can read as
/// damage or as another program's tables), and the read is done again with an ordinary,
/// locking read-only connection, which may leave `-wal`/`-shm` files beside a WAL database
/// that a writer is using anyway.
fn read_only_classified(path: &Path) -> Result<(Connection, Probe)> {
    let before = stamp(path);
    let immutable = immutable_uri(path).is_some();
    let conn = read_only_connection(path)?;
    let found = classify(&conn, path);
    if !immutable || (stamp(path) == before && immutable_uri(path).is_some()) {
        return found.map(|p| (conn, p));
    }
    drop(conn);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_err(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_err(path, e))?;
    let p = classify(&conn, path)?;
    Ok((conn, p))
}

/// The file's size and modification time (`None` when it cannot be read).
fn stamp(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// `Missing` or `Empty` from the file's metadata alone, `None` for a non-empty file.
fn missing_or_empty(path: &Path) -> Result<Option<Probe>> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(Probe::Missing)),
        Err(source) => Err(DbError::Io {
            path: path.to_path_buf(),
            source,
        }),
        Ok(m) if !m.is_file() => Err(DbError::NotADatabase {
            path: path.to_path_buf(),
        }),
        Ok(m) if m.len() == 0 => Ok(Some(Probe::Empty)),
        Ok(_) => Ok(None),
    }
}

/// What the database behind `conn` is, from its `user_version` and tables.
fn classify(conn: &Connection, path: &Path) -> Result<Probe> {
    // One read transaction for both reads: between two, another process could create the
    // schema, and we would see its tables with the old user_version.
    let tx = conn.unchecked_transaction().map_err(|e| sql_err(path, e))?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| sql_err(path, e))?;
    let tables: Vec<String> = tx
        .prepare(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')
             AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .and_then(|mut st| {
            st.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(|e| sql_err(path, e))?;
    let ours = OUR_TABLES.iter().all(|t| tables.iter().any(|n| n == t));
    match (tables.is_empty(), ours, version) {
        (true, _, 0) => Ok(Probe::Empty),
        // No tables but a newer version: a future schema we cannot recognise by its tables.
        (true, _, v) | (false, true, v) if v > SCHEMA_VERSION => Err(DbError::TooNew {
            path: path.to_path_buf(),
            found: v,
        }),
        (false, true, v) if v > 0 => Ok(Probe::Ours { version: v }),
        _ => Err(DbError::Foreign {
            path: path.to_path_buf(),
            tables: if tables.is_empty() {
                format!("none, user_version {version}")
            } else {
                tables.join(", ")
            },
        }),
    }
}

/// Whether `run` could use or create a database at `path`, found out without writing
/// anything: an existing file must be ours or empty ([`probe`]), and a new one needs a
/// folder that exists or can be made (no regular file in the way) and is writable.
pub fn check_creatable(path: &Path) -> Result<()> {
    let folder = |p: &Path, why: &str| DbError::Folder {
        path: p.to_path_buf(),
        source: std::io::Error::other(why.to_string()),
    };
    let mut dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    while let Some(d) = dir {
        match std::fs::metadata(d) {
            Ok(m) if m.is_dir() => {
                let writable = {
                    use std::os::unix::ffi::OsStrExt;
                    let c = std::ffi::CString::new(d.as_os_str().as_bytes())
                        .map_err(|_| folder(d, "the path holds a NUL byte"))?;
                    // SAFETY: a valid NUL-terminated path.
                    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
                };
                return match probe(path)? {
                    Probe::Missing if !writable => Err(folder(d, "the folder is not writable")),
                    _ => Ok(()),
                };
            }
            Ok(_) => return Err(folder(d, "a file is in the way (not a folder)")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                dir = d.parent().filter(|p| !p.as_os_str().is_empty())
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(folder(d, "a file is in the way (not a folder)"))
            }
            Err(source) => {
                return Err(DbError::Folder {
                    path: d.to_path_buf(),
                    source,
                })
            }
        }
    }
    probe(path).map(drop)
}

/// A connection that can neither create the file nor write to it, and leaves no files behind.
///
/// A read-only connection to a WAL database creates `-wal` and `-shm` files (and leaves them
/// when it closes), and fails outright in a folder it cannot write to. So when the database
/// has no `-wal` (and no hot `-journal`) file, it is opened `immutable=1`: nothing is created
/// and no locks are taken. For our databases (always WAL) that is safe because SQLite keeps
/// the `-wal` file for as long as any connection has the database open (it is deleted when the
/// last one closes): with none, every commit is in the main file and no process is writing. A
/// writer that starts during our read writes to its own new `-wal`, and copies into the main
/// file only at a checkpoint (1000 pages, or its close), so a millisecond read practically
/// never overlaps one; if it did, SQLite would see a malformed page and the command fail,
/// never write. (Another program's rollback-journal file written at that very moment could
/// be misread the same way; we only look at its table names.) With a `-wal` file present,
/// immutable would ignore its commits, so the normal read-only open is used (the files exist
/// already, nothing new is left behind).
fn read_only_connection(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match immutable_uri(path) {
        Some(uri) => Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI),
        None => Connection::open_with_flags(path, flags),
    }
    .map_err(|e| sql_err(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_err(path, e))?;
    Ok(conn)
}

/// `file:PATH?immutable=1` when `path` has no `-wal` and no `-journal` file (see
/// [`read_only_connection`]), else `None`.
fn immutable_uri(path: &Path) -> Option<String> {
    for suffix in ["-wal", "-journal"] {
        let mut side = path.as_os_str().to_os_string();
        side.push(suffix);
        if Path::new(&side).exists() {
            return None;
        }
    }
    // Percent-encode all but plain characters: `?`, `#` and `%` mean something in a URI.
    let mut uri = String::from("file:");
    for b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(b) {
            uri.push(*b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    Some(uri)
}

pub struct Db {
    pub conn: Connection,
    pub path: PathBuf,
    /// The schema version as opened: a read-only open leaves an older database as it is.
    pub version: i64,
}

/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

impl Db {
    /// Opens (creating if needed) and migrates the database at `path`: for `run` and `train`
    /// only. Another program's database is refused, never given our tables.
    pub fn open(path: &Path) -> Result<Db> {
        probe(path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| DbError::Folder {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|e| sql_err(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sql_err(path, e))?;
        // Checked on this connection, under SQLite's locks rather than with `probe`: another
        // `run` may be creating the same new file at this instant.
        classify(&conn, path)?;
        let db = Db {
            conn,
            path: path.to_path_buf(),
            version: SCHEMA_VERSION,
        };
        db.setup()?;
        Ok(db)
    }

    /// Opens an existing cifar-sweep database for writing, without creating, migrating or
    /// changing its journal mode (a second connection of a running sweep: the heartbeat).
    pub fn open_existing(path: &Path) -> Result<Db> {
        // The run's main connection is open: check this connection's database rather than
        // probe (which must not run beside other connections' locks, see `probe`).
        if !path.exists() {
            return Err(DbError::Missing {
                path: path.to_path_buf(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql_err(path, e))?;
        let version = Self::require_ours(&conn, path)?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .and_then(|_| conn.execute_batch("PRAGMA foreign_keys=ON;"))
            .map_err(|e| sql_err(path, e))?;
        Ok(Db {
            conn,
            path: path.to_path_buf(),
            version,
        })
    }

    /// Opens an existing cifar-sweep database read-only (report, show, plot, compare): the
    /// file is never created, migrated or written, and an older schema is read as it is.
    pub fn open_read_only(path: &Path) -> Result<Db> {
        match missing_or_empty(path)? {
            Some(Probe::Missing) => Err(DbError::Missing {
                path: path.to_path_buf(),
            }),
            Some(_) => Err(DbError::Empty {
                path: path.to_path_buf(),
            }),
            None => match read_only_classified(path)? {
                (conn, Probe::Ours { version }) => Ok(Db {
                    conn,
                    path: path.to_path_buf(),
                    version,
                }),
                _ => Err(DbError::Empty {
                    path: path.to_path_buf(),
                }),
            },
        }
    }

    fn require_ours(conn: &Connection, path: &Path) -> Result<i64> {
        match classify(conn, path)? {
            Probe::Ours { version } => Ok(version),
            Probe::Missing | Probe::Empty => Err(DbError::Empty {
                path: path.to_path_buf(),
            }),
        }
    }

    fn setup(&self) -> Result<()> {
        let path = &self.path;
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sql_err(path, e))?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sql_err(path, e))?;
        if version > SCHEMA_VERSION {
            return Err(DbError::TooNew {
                path: path.clone(),
                found: version,
            });
        }
        // WAL lets readers (reports) run while a sweep writes.
        let mode = self.journal_mode_wal()?;
        if mode != "wal" {
            tracing::warn!("{}: journal mode is {mode}, not WAL", path.display());
        }
        // FULL: a committed epoch survives a power cut too; commits are one per epoch, so
        // the extra fsync costs nothing measurable.
        self.conn
            .execute_batch("PRAGMA foreign_keys=ON; PRAGMA synchronous=FULL;")
            .map_err(|e| sql_err(path, e))?;
        if version < SCHEMA_VERSION {
            self.migrate()?;
        }
        Ok(())
    }

    /// `PRAGMA journal_mode=WAL`, retried while another process holds the lock. Switching a new
    /// database to WAL takes an exclusive lock, and when two processes ask at the same instant
    /// SQLite answers one of them "database is locked" at once, without the busy handler
    /// (waiting could deadlock). Seen with four `run`s started together on a new file: about
    /// 3% of such opens failed (900 opens of fresh files by 6 processes at once: 28 failures,
    /// none with this retry).
    fn journal_mode_wal(&self) -> Result<String> {
        let start = std::time::Instant::now();
        loop {
            match self
                .conn
                .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && start.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => return r.map_err(|e| sql_err(&self.path, e)),
            }
        }
    }

    fn migrate(&self) -> Result<()> {
        let path = &self.path;
        // Version 3 rebuilds `trials` (a CHECK constraint cannot be altered): with foreign
        // keys on, dropping the old table would cascade into every epoch row. The pragma has
        // no effect inside a transaction, so it is switched around it, and the keys are
        // checked before the migration commits.
        self.conn
            .execute_batch("PRAGMA foreign_keys=OFF")
            .map_err(|e| sql_err(path, e))?;
        let result = self.migrate_steps();
        self.conn
            .execute_batch("PRAGMA foreign_keys=ON")
            .map_err(|e| sql_err(path, e))?;
        result
    }

    fn migrate_steps(&self) -> Result<()> {
        let path = &self.path;
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| sql_err(path, e))?;
        // Re-read inside the write lock: another process may have migrated meanwhile.
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sql_err(path, e))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql).map_err(|e| sql_err(path, e))?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .map_err(|e| sql_err(path, e))?;
        }
        let dangling: i64 = tx
            .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .map_err(|e| sql_err(path, e))?;
        if dangling > 0 {
            // Rolled back when `tx` drops: the database stays as it was.
            return Err(sql_err(
                path,
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
                    Some(format!(
                        "the migration would leave {dangling} rows referring to missing rows"
                    )),
                ),
            ));
        }
        tx.commit().map_err(|e| sql_err(path, e))
    }

    /// `rel` (read from the database) as a path in the database's folder; `None` when it is
    /// absolute or leaves the folder (`..`): a hand-edited or foreign database must not make
    /// us write, or read, anywhere else.
    pub fn beside(&self, rel: &str) -> Option<PathBuf> {
        let rel = Path::new(rel);
        let plain = !rel.as_os_str().is_empty()
            && rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        plain.then(|| {
            self.path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join(rel)
        })
    }

    /// A SQLite error, named with this database's path.
    pub(crate) fn err(&self, e: rusqlite::Error) -> DbError {
        sql_err(&self.path, e)
    }

    fn immediate(&self) -> Result<rusqlite::Transaction<'_>> {
        rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))
    }

    /// Creates the sweep if it is new, else updates its spec. Returns its id.
    ///
    /// A name already recorded from a *different* sweep is refused ([`DbError::SweepConflict`]):
    /// the two would share one trial queue. "Different" means: the spec text differs *and* the
    /// set of resolved trial configs (`configs`) differs from the stored trials'. The same text
    /// is a re-run or resume (even after an upgrade changed how configs are resolved), and
    /// the same trials under edited text (a comment, the description, the file moved) is still
    /// the same experiment; anything else (a grid point added, removed or changed) is another
    /// sweep and needs its own `--name`.
    pub fn upsert_sweep(&self, s: &NewSweep, configs: &dyn Fn() -> ConfigSet) -> Result<i64> {
        let tx = self.immediate()?;
        let existing = self.check_sweep_on(&tx, &s.name, &s.spec, &s.spec_path, configs)?;
        let id = match existing {
            Some(id) => {
                tx.execute(
                    "UPDATE sweeps SET description = ?2, spec = ?3, spec_path = ?4, host = ?5,
                     git_rev = ?6, device = ?7, started_at = datetime('now'), finished_at = NULL
                     WHERE id = ?1",
                    params![
                        id,
                        s.description,
                        s.spec,
                        s.spec_path,
                        s.host,
                        s.git_rev,
                        s.device
                    ],
                )
                .map_err(|e| self.err(e))?;
                id
            }
            None => {
                tx.execute(
                    "INSERT INTO sweeps (name, description, spec, spec_path, host, git_rev, device,
                     data_checksum, started_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, datetime('now'))",
                    params![
                        s.name,
                        s.description,
                        s.spec,
                        s.spec_path,
                        s.host,
                        s.git_rev,
                        s.device,
                        s.data_checksum
                    ],
                )
                .map_err(|e| self.err(e))?;
                tx.last_insert_rowid()
            }
        };
        tx.commit().map_err(|e| self.err(e))?;
        Ok(id)
    }

    /// The check [`Db::upsert_sweep`] makes, without writing: `Err(SweepConflict)` when
    /// sweep `name` is recorded from other trials, so a `run` can refuse before it loads data
    /// (works on a read-only [`Db::open_read_only`] database).
    pub fn check_sweep(
        &self,
        name: &str,
        spec: &str,
        spec_path: &str,
        configs: &dyn Fn() -> ConfigSet,
    ) -> Result<()> {
        self.check_sweep_on(&self.conn, name, spec, spec_path, configs)
            .map(drop)
    }

    /// The id of sweep `name` if it exists and may take this spec (see `upsert_sweep`).
    fn check_sweep_on(
        &self,
        conn: &Connection,
        name: &str,
        spec: &str,
        spec_path: &str,
        configs: &dyn Fn() -> ConfigSet,
    ) -> Result<Option<i64>> {
        let existing: Option<(i64, String, Option<String>)> = conn
            .query_row(
                "SELECT id, spec, spec_path FROM sweeps WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        match existing {
            Some((id, stored_spec, stored_path)) => {
                if stored_spec != spec && !self.same_trials(conn, id, &configs())? {
                    return Err(DbError::SweepConflict {
                        path: self.path.clone(),
                        name: name.to_string(),
                        stored_path: stored_path.unwrap_or_else(|| "an unknown file".into()),
                        new_path: spec_path.to_string(),
                    });
                }
                Ok(Some(id))
            }
            None => Ok(None),
        }
    }

    /// Whether sweep `id`'s stored trial configs are, as a set, `configs`.
    fn same_trials(&self, tx: &Connection, id: i64, configs: &ConfigSet) -> Result<bool> {
        let mut st = tx
            .prepare("SELECT config FROM trials WHERE sweep_id = ?1")
            .map_err(|e| self.err(e))?;
        let stored = st
            .query_map([id], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<String>>>()
            .map_err(|e| self.err(e))?;
        // Through `Value`, so both sides print the same way (sorted keys, same floats).
        let stored = ConfigSet::new(
            stored
                .into_iter()
                .map(|c| serde_json::from_str::<Value>(&c).unwrap_or(Value::String(c))),
        );
        Ok(&stored == configs)
    }

    /// Adds the trials that are not in the sweep yet (identified by key).
    pub fn insert_trials(&self, sweep_id: i64, trials: &[(String, usize, Value)]) -> Result<usize> {
        let tx = self.immediate()?;
        let mut added = 0;
        {
            let mut st = tx
                .prepare(
                    "INSERT OR IGNORE INTO trials (sweep_id, trial_key, ordinal, config, status)
                     VALUES (?1, ?2, ?3, ?4, 'pending')",
                )
                .map_err(|e| self.err(e))?;
            for (key, ordinal, config) in trials {
                added += st
                    .execute(params![sweep_id, key, *ordinal as i64, config.to_string()])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(added)
    }

    /// Puts failed and diverged trials of the sweep back in the queue.
    pub fn requeue_failed(&self, sweep_id: i64) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE trials SET status = 'pending', error = NULL
                 WHERE sweep_id = ?1 AND status IN ('failed', 'diverged')",
                [sweep_id],
            )
            .map_err(|e| self.err(e))
    }

    /// Atomically takes the next trial to run: pending, interrupted, or running under a
    /// worker that is gone (its process no longer exists on this host, or its heartbeat
    /// is older than `stale`).
    pub fn claim_next(
        &self,
        sweep_id: i64,
        worker: &Worker,
        device: &str,
        stale: Duration,
    ) -> Result<Option<Claimed>> {
        let tx = self.immediate()?;
        let candidates: Vec<(i64, String, Option<String>, Option<f64>)> = {
            let mut st = tx
                .prepare(
                    "SELECT id, status, worker,
                            (julianday('now') - julianday(heartbeat)) * 86400.0
                     FROM trials WHERE sweep_id = ?1
                       AND status IN ('pending', 'interrupted', 'running')
                     ORDER BY ordinal",
                )
                .map_err(|e| self.err(e))?;
            let rows = st
                .query_map([sweep_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .map_err(|e| self.err(e))?;
            rows.collect::<rusqlite::Result<_>>()
                .map_err(|e| self.err(e))?
        };
        let pick = candidates.into_iter().find(|(_, status, w, age)| {
            status != "running" || !Worker::alive(w.as_deref(), age.unwrap_or(f64::MAX), stale)
        });
        let Some((id, status, prev, _)) = pick else {
            tx.commit().map_err(|e| self.err(e))?;
            return Ok(None);
        };
        if status == "running" {
            tracing::warn!(
                trial = id,
                "trial was left running by {} which is gone; taking it over",
                prev.as_deref().unwrap_or("an unknown worker")
            );
        }
        let (key, config, recorded, store_id, sweep): (
            String,
            String,
            Option<String>,
            String,
            String,
        ) = tx
            .query_row(
                "SELECT trial_key, config, checkpoint_dir,
                        (SELECT value FROM meta WHERE key = 'store_id'),
                        (SELECT name FROM sweeps WHERE sweeps.id = trials.sweep_id)
                 FROM trials WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .map_err(|e| self.err(e))?;
        // The checkpoint folder is fixed at the first claim (see schema_v2.sql).
        let checkpoint_dir =
            recorded.unwrap_or_else(|| crate::layout::checkpoint_dir(&store_id, &sweep, &key));
        tx.execute(
            "UPDATE trials SET status = 'running', worker = ?2, device = ?3,
             heartbeat = datetime('now'), attempts = attempts + 1,
             started_at = COALESCE(started_at, datetime('now')),
             checkpoint_dir = ?4
             WHERE id = ?1",
            params![id, worker.id, device, checkpoint_dir],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        let checkpoint_dir = self
            .beside(&checkpoint_dir)
            .ok_or_else(|| DbError::BadPath {
                path: self.path.clone(),
                what: format!("trial {id}: checkpoint_dir"),
                value: checkpoint_dir.clone(),
            })?;
        Ok(Some(Claimed {
            id,
            key,
            config,
            previous_status: status,
            checkpoint_dir,
        }))
    }

    pub fn heartbeat(&self, trial_id: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE trials SET heartbeat = datetime('now') WHERE id = ?1",
                [trial_id],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Makes the trial's epoch rows equal `history` (one transaction): used on resume, when
    /// the checkpoint may be one epoch ahead of the database after a crash.
    pub fn sync_epochs(&self, trial_id: i64, history: &[EpochRecord]) -> Result<()> {
        let tx = self.immediate()?;
        tx.execute(
            "DELETE FROM epochs WHERE trial_id = ?1 AND epoch > ?2",
            params![trial_id, history.len() as i64],
        )
        .map_err(|e| self.err(e))?;
        for r in history {
            insert_epoch(&tx, trial_id, r).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Records one finished epoch (one transaction).
    pub fn record_epoch(&self, trial_id: i64, r: &EpochRecord) -> Result<()> {
        let tx = self.immediate()?;
        insert_epoch(&tx, trial_id, r).map_err(|e| self.err(e))?;
        tx.execute(
            "UPDATE trials SET heartbeat = datetime('now') WHERE id = ?1",
            [trial_id],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Records a finished trial with its test evaluation, per-class accuracy and confusion
    /// matrix (one transaction).
    #[allow(clippy::too_many_arguments)]
    pub fn finish_trial(
        &self,
        trial_id: i64,
        best_epoch: usize,
        best_valid_loss: f64,
        test: &TestReport,
        train_seconds: f64,
        classes: &[String],
        checkpoint: &str,
    ) -> Result<()> {
        let tx = self.immediate()?;
        let ips: Option<f64> = tx
            .query_row(
                "SELECT AVG(images_per_sec) FROM epochs WHERE trial_id = ?1",
                [trial_id],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        tx.execute(
            "UPDATE trials SET status = 'done', error = NULL, best_epoch = ?2, best_valid_loss = ?3,
             test_loss = ?4, test_acc = ?5, train_seconds = ?6, images_per_sec = ?7,
             checkpoint = ?8, finished_at = datetime('now'), heartbeat = datetime('now')
             WHERE id = ?1",
            params![
                trial_id,
                best_epoch as i64,
                best_valid_loss,
                test.loss,
                test.accuracy,
                train_seconds,
                ips,
                checkpoint
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM class_accuracy WHERE trial_id = ?1", [trial_id])
            .map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM confusion WHERE trial_id = ?1", [trial_id])
            .map_err(|e| self.err(e))?;
        for (i, (correct, total)) in test.confusion.per_class().into_iter().enumerate() {
            let name = classes.get(i).cloned().unwrap_or_else(|| i.to_string());
            let acc = if total == 0 {
                0.0
            } else {
                correct as f64 / total as f64
            };
            tx.execute(
                "INSERT INTO class_accuracy (trial_id, class_index, class_name, correct, total, accuracy)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![trial_id, i as i64, name, correct as i64, total as i64, acc],
            )
            .map_err(|e| self.err(e))?;
        }
        for (t, row) in test.confusion.cells.iter().enumerate() {
            for (p, n) in row.iter().enumerate() {
                tx.execute(
                    "INSERT INTO confusion (trial_id, true_class, predicted_class, count)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![trial_id, t as i64, p as i64, *n as i64],
                )
                .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Sets a trial's status (failed, diverged, interrupted, ...) with an optional error text.
    pub fn set_status(
        &self,
        trial_id: i64,
        status: &str,
        error: Option<&str>,
        best_epoch: Option<usize>,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE trials SET status = ?2, error = ?3,
                 best_epoch = COALESCE(?4, best_epoch), heartbeat = datetime('now'),
                 finished_at = CASE WHEN ?2 IN ('failed', 'diverged') THEN datetime('now') END
                 WHERE id = ?1",
                params![trial_id, status, error, best_epoch.map(|e| e as i64)],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The other trials' results at `epoch` of sweep `sweep_id` (not `trial_id`'s): per
    /// trial `[valid_acc, valid_loss, training seconds up to that epoch]`.
    pub fn results_at(&self, sweep_id: i64, trial_id: i64, epoch: usize) -> Result<Vec<[f64; 3]>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT e.valid_acc, e.valid_loss,
                        (SELECT SUM(p.seconds) FROM epochs p
                         WHERE p.trial_id = e.trial_id AND p.epoch <= e.epoch)
                 FROM epochs e JOIN trials t ON t.id = e.trial_id
                 WHERE t.sweep_id = ?1 AND e.epoch = ?2 AND e.trial_id != ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![sweep_id, epoch as i64, trial_id], |r| {
                Ok([r.get(0)?, r.get(1)?, r.get(2)?])
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// A trial's own training seconds up to `epoch`.
    pub fn seconds_to(&self, trial_id: i64, epoch: usize) -> Result<f64> {
        self.conn
            .query_row(
                "SELECT COALESCE(SUM(seconds), 0) FROM epochs WHERE trial_id = ?1 AND epoch <= ?2",
                params![trial_id, epoch as i64],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Trials of the sweep that have finished (done or pruned), for the median rule's start-up.
    pub fn finished_count(&self, sweep_id: i64) -> Result<usize> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM trials WHERE sweep_id = ?1 AND status IN ('done', 'pruned')",
                [sweep_id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(|e| self.err(e))
    }

    /// The decision already taken for `trial_id` at `epoch`, if any (a resumed trial replays
    /// it rather than deciding again against results that have changed since).
    pub fn decision(&self, trial_id: i64, epoch: usize) -> Result<Option<crate::prune::Decision>> {
        self.conn
            .query_row(
                "SELECT epoch, rung, compared_with, cutoff, stop FROM decisions
                 WHERE trial_id = ?1 AND epoch = ?2",
                params![trial_id, epoch as i64],
                |r| {
                    Ok(crate::prune::Decision {
                        epoch: r.get::<_, i64>(0)? as usize,
                        rung: r.get::<_, Option<i64>>(1)?.map(|x| x as usize),
                        compared_with: r.get::<_, i64>(2)? as usize,
                        cutoff: r.get(3)?,
                        stop: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The epoch at which a rule stopped `trial_id`, if one did.
    pub fn stopped_at(&self, trial_id: i64) -> Result<Option<usize>> {
        self.conn
            .query_row(
                "SELECT MIN(epoch) FROM decisions WHERE trial_id = ?1 AND stop",
                [trial_id],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|e| e.map(|e| e as usize))
            .map_err(|e| self.err(e))
    }

    /// Records a decision (once: a replayed one is already there).
    pub fn record_decision(
        &self,
        trial_id: i64,
        rule: &str,
        value: f64,
        d: &crate::prune::Decision,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO decisions
                 (trial_id, epoch, rule, rung, value, compared_with, cutoff, stop)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    trial_id,
                    d.epoch as i64,
                    rule,
                    d.rung.map(|r| r as i64),
                    value,
                    d.compared_with as i64,
                    d.cutoff,
                    d.stop
                ],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Marks a trial stopped by a pruning rule after `epoch`; its epochs stay, it is not
    /// evaluated on the test set.
    pub fn prune_trial(&self, trial_id: i64, epoch: usize) -> Result<()> {
        self.conn
            .execute(
                "UPDATE trials SET status = 'pruned', pruned_epoch = ?2, error = NULL,
                 heartbeat = datetime('now'), finished_at = datetime('now'),
                 train_seconds = (SELECT SUM(seconds) FROM epochs WHERE trial_id = ?1),
                 images_per_sec = (SELECT AVG(images_per_sec) FROM epochs WHERE trial_id = ?1)
                 WHERE id = ?1",
                params![trial_id, epoch as i64],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub fn finish_sweep(&self, sweep_id: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE sweeps SET finished_at = datetime('now') WHERE id = ?1",
                [sweep_id],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn sweep_id(&self, name: &str) -> Result<i64> {
        self.conn
            .query_row("SELECT id FROM sweeps WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| DbError::NoSuchSweep(name.to_string()))
    }

    /// The most recently started sweep, for `report` without a name.
    pub fn latest_sweep(&self) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT name FROM sweeps ORDER BY started_at DESC, id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Runs `sql` and returns column names and rows as display strings.
    pub fn query_strings(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<(Vec<String>, Vec<Vec<Value>>)> {
        let mut st = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let names: Vec<String> = st.column_names().iter().map(|s| s.to_string()).collect();
        let n = names.len();
        let rows = st
            .query_map(params, |r| {
                (0..n)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => Value::Null,
                            rusqlite::types::ValueRef::Integer(v) => Value::from(v),
                            rusqlite::types::ValueRef::Real(v) => Value::from(v),
                            rusqlite::types::ValueRef::Text(t) => {
                                Value::from(String::from_utf8_lossy(t).to_string())
                            }
                            rusqlite::types::ValueRef::Blob(b) => {
                                Value::from(format!("<{} bytes>", b.len()))
                            }
                        })
                    })
                    .collect::<rusqlite::Result<Vec<Value>>>()
            })
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        Ok((names, rows))
    }
}

fn insert_epoch(
    tx: &rusqlite::Transaction,
    trial_id: i64,
    r: &EpochRecord,
) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT OR REPLACE INTO epochs (trial_id, epoch, train_loss, train_acc, valid_loss,
         valid_acc, lr, seconds, images_per_sec)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            trial_id,
            r.epoch as i64,
            r.train_loss,
            r.train_acc,
            r.valid_loss,
            r.valid_acc,
            r.lr,
            r.seconds,
            r.images_per_sec
        ],
    )
}

fn sql_err(path: &Path, e: rusqlite::Error) -> DbError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        // A truncated or overwritten file is the user's to fix (exit 2), like a bad text file.
        if matches!(
            f.code,
            rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
        ) {
            return DbError::NotADatabase {
                path: path.to_path_buf(),
            };
        }
    }
    DbError::Sqlite {
        path: path.to_path_buf(),
        error: e,
    }
}

/// A set of trial configurations as 128-bit digests of their JSON, sorted and without
/// repeats: what a sweep's trials are compared by, in 16 bytes a trial however large the
/// sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigSet(Vec<[u8; 16]>);

impl ConfigSet {
    pub fn new(configs: impl IntoIterator<Item = Value>) -> Self {
        use sha2::{Digest, Sha256};
        let mut v: Vec<[u8; 16]> = configs
            .into_iter()
            .map(|c| {
                let d = Sha256::digest(c.to_string().as_bytes());
                let mut out = [0u8; 16];
                out.copy_from_slice(&d[..16]);
                out
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        ConfigSet(v)
    }
}

/// What a sweep row is created from.
pub struct NewSweep {
    pub name: String,
    pub description: String,
    pub spec: String,
    pub spec_path: String,
    pub host: String,
    pub git_rev: Option<String>,
    pub device: String,
    pub data_checksum: String,
}

pub struct Claimed {
    pub id: i64,
    pub key: String,
    pub config: String,
    pub previous_status: String,
    /// Where this trial's checkpoints live: this database's own folder for it.
    pub checkpoint_dir: PathBuf,
}

/// Who runs a trial: `host:pid:start`, where `start` is the process's start time in clock
/// ticks since boot (Linux; 0 elsewhere), so that a later process that happens to get the
/// same pid is not mistaken for the worker.
pub struct Worker {
    pub id: String,
}

impl Worker {
    pub fn current() -> Self {
        let pid = std::process::id();
        Worker {
            id: format!("{}:{pid}:{}", hostname(), process_start(pid).unwrap_or(0)),
        }
    }

    /// Whether the worker that wrote `id` may still be running its trial. On this host the
    /// process table decides: a live process is never taken over, however old its
    /// heartbeat (it may be stopped with Ctrl-Z and continue later; two processes must never
    /// train one trial). Elsewhere only the heartbeat can tell.
    pub(crate) fn alive(id: Option<&str>, heartbeat_age_secs: f64, stale: Duration) -> bool {
        let fresh = heartbeat_age_secs < stale.as_secs_f64();
        let Some(id) = id else { return false };
        let mut parts = id.rsplitn(3, ':');
        let (a, b, c) = (parts.next(), parts.next(), parts.next());
        // `host:pid:start`, or `host:pid` as written by older versions.
        let (host, pid, start) = match (a, b, c) {
            (Some(start), Some(pid), Some(host)) if start.parse::<u64>().is_ok() => {
                (host, pid, start.parse::<u64>().ok())
            }
            (Some(pid), Some(host), _) => (host, pid, None),
            _ => return false,
        };
        let Ok(pid) = pid.parse::<u32>() else {
            return fresh;
        };
        if host != hostname() {
            return fresh;
        }
        if pid == std::process::id() {
            // Our own earlier claim (e.g. the same process re-entering): not alive.
            return false;
        }
        if !cfg!(target_os = "linux") {
            return fresh;
        }
        match (process_start(pid), start) {
            // No such process (or a zombie): gone.
            (None, _) => false,
            // A process with that pid but a different start: the pid was reused.
            (Some(now), Some(then)) if then != 0 && now != then => false,
            (Some(_), Some(_)) => true,
            // An old-format id: a live pid is taken at its word while the heartbeat is fresh.
            (Some(_), None) => fresh,
        }
    }
}

/// The start time of process `pid` (clock ticks since boot, field 22 of /proc/PID/stat), or
/// None when there is no such live process (gone, or a zombie).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is the state (field 3); field 22 is fields[19].
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn probe_tells_each_kind_of_file_apart_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        assert_eq!(probe(&p("missing.db")).unwrap(), Probe::Missing);

        std::fs::write(p("empty.db"), b"").unwrap();
        assert_eq!(probe(&p("empty.db")).unwrap(), Probe::Empty);

        std::fs::write(p("text.db"), "name = \"x\"\n".repeat(20)).unwrap();
        assert!(matches!(
            probe(&p("text.db")),
            Err(DbError::NotADatabase { .. })
        ));

        let c = Connection::open(p("foreign.db")).unwrap();
        c.execute_batch("CREATE TABLE notes (t TEXT); PRAGMA user_version = 1;")
            .unwrap();
        drop(c);
        assert!(matches!(
            probe(&p("foreign.db")),
            Err(DbError::Foreign { .. })
        ));

        // A SQLite file without tables (e.g. `sqlite3 x.db 'PRAGMA user_version'`).
        let c = Connection::open(p("blank.db")).unwrap();
        c.execute_batch("CREATE TABLE t (x); DROP TABLE t;")
            .unwrap();
        drop(c);
        assert_eq!(probe(&p("blank.db")).unwrap(), Probe::Empty);

        drop(Db::open(&p("ours.db")).unwrap());
        assert_eq!(
            probe(&p("ours.db")).unwrap(),
            Probe::Ours {
                version: SCHEMA_VERSION
            }
        );

        let c = Connection::open(p("newer.db")).unwrap();
        c.execute_batch(
            "CREATE TABLE sweeps (id); CREATE TABLE trials (id); PRAGMA user_version = 999;",
        )
        .unwrap();
        drop(c);
        assert!(matches!(
            probe(&p("newer.db")),
            Err(DbError::TooNew { found: 999, .. })
        ));

        let before: Vec<(String, Vec<u8>)> = files(dir.path())
            .into_iter()
            .map(|n| (n.clone(), std::fs::read(p(&n)).unwrap()))
            .collect();
        for (n, _) in &before {
            let _ = probe(&p(n));
        }
        let after: Vec<(String, Vec<u8>)> = files(dir.path())
            .into_iter()
            .map(|n| (n.clone(), std::fs::read(p(&n)).unwrap()))
            .collect();
        assert_eq!(before, after, "probe changed or created files");
    }

    #[test]
    fn open_refuses_another_programs_database_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('x');")
            .unwrap();
        drop(c);
        let before = std::fs::read(&path).unwrap();
        assert!(matches!(Db::open(&path), Err(DbError::Foreign { .. })));
        assert!(matches!(
            Db::open_read_only(&path),
            Err(DbError::Foreign { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(files(dir.path()), ["app.db"]);
    }

    /// `run` probes the database before it loads data (issue 11, item 15) while another
    /// `run` may be creating the same new file: a half-written file must not read as damaged.
    #[test]
    fn probe_beside_a_database_being_created_never_reports_damage() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..30 {
            let path = dir.path().join(format!("r{round}.db"));
            std::thread::scope(|s| {
                s.spawn(|| drop(Db::open(&path).unwrap()));
                for _ in 0..3 {
                    s.spawn(|| loop {
                        match probe(&path) {
                            Ok(Probe::Ours { .. }) => break,
                            Ok(_) => std::thread::yield_now(),
                            Err(e) => panic!("round {round}: {e}"),
                        }
                    });
                }
            });
        }
    }

    #[test]
    fn check_sweep_refuses_other_trials_under_a_recorded_name_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let db = Db::open(&path).unwrap();
        let new = |spec: &str, file: &str| NewSweep {
            name: "s".into(),
            description: String::new(),
            spec: spec.into(),
            spec_path: file.into(),
            host: "h".into(),
            git_rev: None,
            device: "cpu".into(),
            data_checksum: "c".into(),
        };
        let lr = |x: f64| ConfigSet::new([serde_json::json!({ "lr": x })]);
        let (a, b) = (|| lr(0.01), || lr(0.02));
        let id = db.upsert_sweep(&new("lr = [0.01]", "a.toml"), &a).unwrap();
        db.insert_trials(id, &[("k".into(), 0, serde_json::json!({"lr": 0.01}))])
            .unwrap();
        drop(db);
        let before = std::fs::read(&path).unwrap();
        let ro = Db::open_read_only(&path).unwrap();
        // The same text, and the same trials under other text, are the same sweep.
        ro.check_sweep("s", "lr = [0.01]", "a.toml", &b).unwrap();
        ro.check_sweep("s", "# x\nlr = [0.01]", "c.toml", &a)
            .unwrap();
        ro.check_sweep("t", "anything", "d.toml", &b).unwrap();
        let err = ro
            .check_sweep("s", "lr = [0.02]", "b.toml", &b)
            .unwrap_err();
        assert!(matches!(err, DbError::SweepConflict { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("a.toml") && msg.contains("b.toml"), "{msg}");
        drop(ro);
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    /// Version 3 rebuilds `trials`; with foreign keys on, dropping the old table would have
    /// cascaded into every epoch, class and confusion row.
    #[test]
    fn the_rebuild_of_trials_keeps_every_row_that_refers_to_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch("PRAGMA foreign_keys=ON").unwrap();
            for sql in &MIGRATIONS[..2] {
                c.execute_batch(sql).unwrap();
            }
            c.execute_batch(
                "PRAGMA user_version = 2;
                 INSERT INTO sweeps (id, name, spec) VALUES (1, 's', '');
                 INSERT INTO trials (id, sweep_id, trial_key, ordinal, config, status, test_acc)
                 VALUES (7, 1, 'k', 0, '{\"arch\":\"lenet\",\"lr\":0.1}', 'done', 0.5);
                 INSERT INTO epochs VALUES (7, 1, 1.0, 0.1, 1.1, 0.2, 0.1, 1.0, 10.0),
                                           (7, 2, 0.9, 0.2, 1.0, 0.3, 0.1, 1.0, 10.0);
                 INSERT INTO class_accuracy VALUES (7, 0, 'airplane', 5, 10, 0.5);
                 INSERT INTO confusion VALUES (7, 0, 0, 5);",
            )
            .unwrap();
        }
        let db = Db::open(&path).unwrap();
        let count = |sql: &str| -> i64 { db.conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("PRAGMA user_version"), 3);
        assert_eq!(count("SELECT COUNT(*) FROM epochs WHERE trial_id = 7"), 2);
        assert_eq!(count("SELECT COUNT(*) FROM class_accuracy"), 1);
        assert_eq!(count("SELECT COUNT(*) FROM confusion"), 1);
        assert_eq!(
            count("SELECT COUNT(*) FROM trial_summary WHERE lr = 0.1"),
            1
        );
        assert_eq!(count("PRAGMA foreign_keys"), 1);
        // The new status is accepted, and cascades still work after the rebuild.
        db.prune_trial(7, 2).unwrap();
        assert_eq!(count("SELECT pruned_epoch FROM trials WHERE id = 7"), 2);
        db.conn
            .execute("DELETE FROM trials WHERE id = 7", [])
            .unwrap();
        assert_eq!(count("SELECT COUNT(*) FROM epochs"), 0);
    }
}
