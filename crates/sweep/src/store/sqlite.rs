//! The SQLite backend of the store (WAL): the only SQL of the crate. Every write is one short
//! transaction, so several processes can share a file: claiming a trial is a single
//! `BEGIN IMMEDIATE` transaction and a busy timeout absorbs the waits.

use super::*;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use trainer::metrics::EpochRecord;

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 3;

/// Migrations, applied in order: entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("schema_v1.sql"),
    include_str!("schema_v2.sql"),
    include_str!("schema_v3.sql"),
];

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

/// A SQLite results database: [`Backend`] over one connection.
pub struct SqliteBackend {
    conn: Connection,
    pub(super) path: PathBuf,
    /// The schema version as opened: a read-only open leaves an older database as it is.
    pub(super) version: i64,
    /// The folder trials' checkpoint folders are relative to: the database's own unless
    /// `--checkpoint-dir` named another.
    pub(super) checkpoints: PathBuf,
}

/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

impl SqliteBackend {
    /// Opens (creating if needed) and migrates the database at `path`: for `run` and `train`
    /// only. Another program's database is refused, never given our tables.
    pub fn open(path: &Path, checkpoints: Option<&Path>) -> Result<SqliteBackend> {
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
        let db = SqliteBackend {
            conn,
            path: path.to_path_buf(),
            version: SCHEMA_VERSION,
            checkpoints: checkpoints
                .map(Path::to_path_buf)
                .unwrap_or_else(|| super::db_folder(path)),
        };
        db.setup()?;
        Ok(db)
    }

    /// Opens an existing cifar-sweep database for writing, without creating, migrating or
    /// changing its journal mode (a second connection of a running sweep: the heartbeat).
    pub fn open_existing(path: &Path) -> Result<SqliteBackend> {
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
        Ok(SqliteBackend {
            conn,
            path: path.to_path_buf(),
            version,
            checkpoints: super::db_folder(path),
        })
    }

    /// Opens an existing cifar-sweep database read-only (report, show, plot, compare): the
    /// file is never created, migrated or written, and an older schema is read as it is.
    pub fn open_read_only(path: &Path) -> Result<SqliteBackend> {
        match missing_or_empty(path)? {
            Some(Probe::Missing) => Err(DbError::Missing {
                path: path.to_path_buf(),
            }),
            Some(_) => Err(DbError::Empty {
                path: path.to_path_buf(),
            }),
            None => match read_only_classified(path)? {
                (conn, Probe::Ours { version }) => Ok(SqliteBackend {
                    conn,
                    path: path.to_path_buf(),
                    version,
                    checkpoints: super::db_folder(path),
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

    /// A SQLite error, named with this database's path.
    fn err(&self, e: rusqlite::Error) -> DbError {
        sql_err(&self.path, e)
    }

    fn immediate(&self) -> Result<rusqlite::Transaction<'_>> {
        rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))
    }

    /// The rows of `sql` on `conn` (this connection, or a transaction on it), each mapped by
    /// `f`.
    fn rows_on<T, P: rusqlite::Params>(
        &self,
        conn: &Connection,
        sql: &str,
        p: P,
        f: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut st = conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = st
            .query_map(p, f)
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<T>>>()
            .map_err(|e| self.err(e));
        rows
    }

    fn rows<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        p: P,
        f: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        self.rows_on(&self.conn, sql, p, f)
    }

    /// Whether the schema has table `name` (read-only commands read older schemas as they
    /// are).
    fn has_table(&self, name: &str) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [name],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    /// The columns [`trial_record`] reads, for this schema version: a version-1 database
    /// has no `checkpoint_dir` (its trials used `checkpoints/<sweep>/<key>`), and pruning
    /// came with version 3.
    fn trial_columns(&self) -> String {
        let dir = if self.version >= 2 {
            "t.checkpoint_dir".to_string()
        } else {
            crate::layout::legacy_checkpoint_dir_sql(
                "(SELECT name FROM sweeps WHERE sweeps.id = t.sweep_id)",
                "t.trial_key",
            )
        };
        let pruned = if self.version >= 3 {
            "t.pruned_epoch"
        } else {
            "NULL"
        };
        format!(
            "t.id, t.trial_key, t.ordinal, t.status, t.config, t.error, t.device, t.best_epoch,
             t.test_acc, t.test_loss, t.train_seconds, t.images_per_sec, t.checkpoint, {dir},
             {pruned}"
        )
    }

    /// Marks trial `id` running under `worker` inside `tx`, and reads back its key, config
    /// and checkpoint folder. The folder is fixed at the first claim (see schema_v2.sql).
    fn take(
        &self,
        tx: &Connection,
        id: i64,
        worker: &Worker,
        device: &str,
    ) -> Result<(String, String, String)> {
        let dir = crate::layout::checkpoint_dir_sql(
            "(SELECT value FROM meta WHERE key = 'store_id')",
            "(SELECT name FROM sweeps WHERE sweeps.id = trials.sweep_id)",
            "trial_key",
        );
        tx.execute(
            &format!(
                "UPDATE trials SET status = 'running', worker = ?2, device = ?3,
                 heartbeat = datetime('now'), attempts = attempts + 1,
                 started_at = COALESCE(started_at, datetime('now')),
                 checkpoint_dir = COALESCE(checkpoint_dir, {dir})
                 WHERE id = ?1"
            ),
            params![id, worker.id, device],
        )
        .map_err(|e| self.err(e))?;
        tx.query_row(
            "SELECT trial_key, config, checkpoint_dir FROM trials WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(|e| self.err(e))
    }

    /// The [`Claimed`] of a trial [`take`](Self::take)n, its folder checked to be a plain
    /// path inside the database's folder.
    fn claimed(
        &self,
        id: i64,
        previous_status: TrialStatus,
        (key, config, dir): (String, String, String),
    ) -> Result<Claimed> {
        let checkpoint_dir =
            super::under(&self.checkpoints, &dir).ok_or_else(|| DbError::BadPath {
                path: self.path.clone(),
                what: format!("trial {id}: checkpoint_dir"),
                value: dir.clone(),
            })?;
        Ok(Claimed {
            id,
            key,
            config,
            previous_status,
            checkpoint_dir,
        })
    }

    /// The sweep's trials with their epochs, read on `tx`.
    fn history_on(&self, tx: &Connection, sweep_id: i64) -> Result<SearchHistory> {
        let mut trials = self.rows_on(
            tx,
            "SELECT id, trial_key, ordinal, status, config FROM trials WHERE sweep_id = ?1
             ORDER BY ordinal",
            [sweep_id],
            |r| {
                Ok(HistoryTrial {
                    id: r.get(0)?,
                    key: r.get(1)?,
                    ordinal: r.get(2)?,
                    status: r.get(3)?,
                    config: r.get(4)?,
                    epochs: Vec::new(),
                })
            },
        )?;
        let epochs = self.rows_on(
            tx,
            "SELECT e.epoch, e.train_loss, e.train_acc, e.valid_loss, e.valid_acc, e.lr,
                    e.seconds, e.images_per_sec, e.trial_id
             FROM epochs e JOIN trials t ON t.id = e.trial_id WHERE t.sweep_id = ?1
             ORDER BY e.trial_id, e.epoch",
            [sweep_id],
            |r| Ok((r.get::<_, i64>(8)?, epoch_row(r, 0)?)),
        )?;
        let index: std::collections::HashMap<i64, usize> =
            trials.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
        for (trial_id, e) in epochs {
            if let Some(&i) = index.get(&trial_id) {
                trials[i].epochs.push(e);
            }
        }
        let next_ordinal = trials
            .iter()
            .map(|t| t.ordinal + 1)
            .max()
            .unwrap_or(0)
            .max(0) as usize;
        Ok(SearchHistory {
            sweep_id,
            trials,
            next_ordinal,
        })
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
}

impl Backend for SqliteBackend {
    fn upsert_sweep(&self, s: &NewSweep, configs: &dyn Fn() -> ConfigSet) -> Result<i64> {
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

    fn check_sweep(
        &self,
        name: &str,
        spec: &str,
        spec_path: &str,
        configs: &dyn Fn() -> ConfigSet,
    ) -> Result<()> {
        self.check_sweep_on(&self.conn, name, spec, spec_path, configs)
            .map(drop)
    }

    fn insert_trials(&self, sweep_id: i64, trials: &[NewTrial]) -> Result<usize> {
        let tx = self.immediate()?;
        let mut added = 0;
        for t in trials {
            added += insert_trial(&tx, sweep_id, t, "INSERT OR IGNORE").map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(added)
    }

    fn requeue_failed(&self, sweep_id: i64) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE trials SET status = 'pending', error = NULL
                 WHERE sweep_id = ?1 AND status IN ('failed', 'diverged')",
                [sweep_id],
            )
            .map_err(|e| self.err(e))
    }

    fn claim_next(
        &self,
        sweep_id: i64,
        worker: &Worker,
        device: &str,
        stale: Duration,
    ) -> Result<Option<Claimed>> {
        let tx = self.immediate()?;
        let candidates: Vec<(i64, TrialStatus, Option<String>, Option<f64>)> = self.rows_on(
            &tx,
            "SELECT id, status, worker, (julianday('now') - julianday(heartbeat)) * 86400.0
             FROM trials WHERE sweep_id = ?1
               AND status IN ('pending', 'interrupted', 'running')
             ORDER BY ordinal",
            [sweep_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let pick = candidates.into_iter().find(|(_, status, w, age)| {
            *status != TrialStatus::Running
                || !Worker::alive(w.as_deref(), age.unwrap_or(f64::MAX), stale)
        });
        let Some((id, status, prev, _)) = pick else {
            tx.commit().map_err(|e| self.err(e))?;
            return Ok(None);
        };
        if status == TrialStatus::Running {
            tracing::warn!(
                trial = id,
                "trial was left running by {} which is gone; taking it over",
                prev.as_deref().unwrap_or("an unknown worker")
            );
        }
        let taken = self.take(&tx, id, worker, device)?;
        tx.commit().map_err(|e| self.err(e))?;
        self.claimed(id, status, taken).map(Some)
    }

    fn propose_and_claim(
        &self,
        sweep_id: i64,
        worker: &Worker,
        device: &str,
        propose: &mut dyn FnMut(&SearchHistory) -> Vec<NewTrial>,
    ) -> Result<Option<Claimed>> {
        let tx = self.immediate()?;
        let history = self.history_on(&tx, sweep_id)?;
        let new = propose(&history);
        let Some((first, rest)) = new.split_first() else {
            tx.commit().map_err(|e| self.err(e))?;
            return Ok(None);
        };
        // A plain INSERT: a key already in the sweep fails (and rolls back) rather than
        // claiming a trial the sampler did not mean.
        insert_trial(&tx, sweep_id, first, "INSERT").map_err(|e| self.err(e))?;
        let id = tx.last_insert_rowid();
        for t in rest {
            insert_trial(&tx, sweep_id, t, "INSERT").map_err(|e| self.err(e))?;
        }
        let taken = self.take(&tx, id, worker, device)?;
        tx.commit().map_err(|e| self.err(e))?;
        self.claimed(id, TrialStatus::Pending, taken).map(Some)
    }

    fn heartbeat(&self, trial_id: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE trials SET heartbeat = datetime('now') WHERE id = ?1",
                [trial_id],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn sync_epochs(&self, trial_id: i64, history: &[EpochRecord]) -> Result<()> {
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

    fn record_epoch(&self, trial_id: i64, r: &EpochRecord) -> Result<()> {
        let tx = self.immediate()?;
        insert_epoch(&tx, trial_id, r).map_err(|e| self.err(e))?;
        tx.execute(
            "UPDATE trials SET heartbeat = datetime('now') WHERE id = ?1",
            [trial_id],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_trial(&self, trial_id: i64, f: &Finished) -> Result<()> {
        let (test, classes) = (f.test, f.classes);
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
                f.best_epoch as i64,
                f.best_valid_loss,
                test.loss,
                test.accuracy,
                f.train_seconds,
                ips,
                f.checkpoint
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

    fn set_status(
        &self,
        trial_id: i64,
        status: TrialStatus,
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

    fn results_at(&self, sweep_id: i64, trial_id: i64, epoch: usize) -> Result<Vec<[f64; 3]>> {
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

    fn seconds_to(&self, trial_id: i64, epoch: usize) -> Result<f64> {
        self.conn
            .query_row(
                "SELECT COALESCE(SUM(seconds), 0) FROM epochs WHERE trial_id = ?1 AND epoch <= ?2",
                params![trial_id, epoch as i64],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    fn finished_count(&self, sweep_id: i64) -> Result<usize> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM trials WHERE sweep_id = ?1 AND status IN ('done', 'pruned')",
                [sweep_id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(|e| self.err(e))
    }

    fn decision(&self, trial_id: i64, epoch: usize) -> Result<Option<crate::prune::Decision>> {
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

    fn stopped_at(&self, trial_id: i64) -> Result<Option<usize>> {
        self.conn
            .query_row(
                "SELECT MIN(epoch) FROM decisions WHERE trial_id = ?1 AND stop",
                [trial_id],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|e| e.map(|e| e as usize))
            .map_err(|e| self.err(e))
    }

    fn record_decision(
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

    fn prune_trial(&self, trial_id: i64, epoch: usize) -> Result<()> {
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

    fn finish_sweep(&self, sweep_id: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE sweeps SET finished_at = datetime('now') WHERE id = ?1",
                [sweep_id],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn sweep_id(&self, name: &str) -> Result<i64> {
        self.conn
            .query_row("SELECT id FROM sweeps WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| DbError::NoSuchSweep(name.to_string()))
    }

    fn latest_sweep(&self) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT name FROM sweeps ORDER BY started_at DESC, id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn sweep_before(&self, name: &str, prefix: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT name FROM sweeps WHERE substr(name, 1, length(?2)) = ?2 AND name < ?1
                 ORDER BY name DESC LIMIT 1",
                [name, prefix],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn sweep(&self, sweep_id: i64) -> Result<Option<SweepRecord>> {
        self.conn
            .query_row(
                "SELECT id, name, description, spec, spec_path, host, git_rev, device,
                        data_checksum, created_at, started_at, finished_at
                 FROM sweeps WHERE id = ?1",
                [sweep_id],
                |r| {
                    Ok(SweepRecord {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        description: r.get(2)?,
                        spec: r.get(3)?,
                        spec_path: r.get(4)?,
                        host: r.get(5)?,
                        git_rev: r.get(6)?,
                        device: r.get(7)?,
                        data_checksum: r.get(8)?,
                        created_at: r.get(9)?,
                        started_at: r.get(10)?,
                        finished_at: r.get(11)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn for_each_trial(
        &self,
        sweep_id: i64,
        f: &mut dyn FnMut(TrialRecord) -> Result<()>,
    ) -> Result<()> {
        let sql = format!(
            "SELECT {} FROM trials t WHERE t.sweep_id = ?1 ORDER BY t.ordinal",
            self.trial_columns()
        );
        let mut st = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let mut cursor = st.query([sweep_id]).map_err(|e| self.err(e))?;
        while let Some(r) = cursor.next().map_err(|e| self.err(e))? {
            f(trial_record(r, 0).map_err(|e| self.err(e))?)?;
        }
        Ok(())
    }

    fn status_counts(&self, sweep_id: i64) -> Result<Vec<(TrialStatus, usize)>> {
        self.rows(
            "SELECT status, COUNT(*) FROM trials WHERE sweep_id = ?1 GROUP BY status
             ORDER BY status",
            [sweep_id],
            |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as usize)),
        )
    }

    fn find_trials(&self, by: &TrialRef, limit: usize) -> Result<Vec<TrialDetail>> {
        let (condition, value): (&str, &dyn rusqlite::ToSql) = match by {
            TrialRef::Id(id) => ("t.id = ?1", id),
            // substr, not LIKE: `%` and `_` in the prefix are not wildcards.
            TrialRef::KeyPrefix(p) => ("substr(t.trial_key, 1, length(?1)) = ?1", p),
        };
        let sql = format!(
            "SELECT s.name, {} FROM trials t JOIN sweeps s ON s.id = t.sweep_id
             WHERE {condition} ORDER BY t.id LIMIT ?2",
            self.trial_columns()
        );
        self.rows(&sql, params![value, limit as i64], |r| {
            Ok(TrialDetail {
                sweep: r.get(0)?,
                trial: trial_record(r, 1)?,
            })
        })
    }

    fn epochs(&self, trial_id: i64) -> Result<Vec<EpochRow>> {
        self.rows(
            "SELECT epoch, train_loss, train_acc, valid_loss, valid_acc, lr, seconds,
                    images_per_sec
             FROM epochs WHERE trial_id = ?1 ORDER BY epoch",
            [trial_id],
            |r| epoch_row(r, 0),
        )
    }

    fn class_accuracy(&self, trial_id: i64) -> Result<Vec<ClassRow>> {
        self.rows(
            "SELECT class_index, class_name, correct, total, accuracy FROM class_accuracy
             WHERE trial_id = ?1 ORDER BY class_index",
            [trial_id],
            |r| {
                Ok(ClassRow {
                    class_index: r.get(0)?,
                    class_name: r.get(1)?,
                    correct: r.get(2)?,
                    total: r.get(3)?,
                    accuracy: r.get(4)?,
                })
            },
        )
    }

    fn confusion(&self, trial_id: i64) -> Result<Vec<ConfusionCell>> {
        self.rows(
            "SELECT true_class, predicted_class, count FROM confusion WHERE trial_id = ?1
             ORDER BY true_class, predicted_class",
            [trial_id],
            |r| {
                Ok(ConfusionCell {
                    true_class: r.get(0)?,
                    predicted_class: r.get(1)?,
                    count: r.get(2)?,
                })
            },
        )
    }

    fn class_names(&self, sweep_id: i64) -> Result<Vec<String>> {
        self.rows(
            "SELECT DISTINCT c.class_index, c.class_name FROM class_accuracy c
             JOIN trials t ON t.id = c.trial_id WHERE t.sweep_id = ?1 ORDER BY c.class_index",
            [sweep_id],
            |r| r.get(1),
        )
    }

    fn sweep_class_accuracy(&self, sweep_id: i64, limit: usize) -> Result<Vec<SweepClassRow>> {
        self.rows(
            "SELECT t.id, t.arch, t.test_acc, c.class_index, c.accuracy FROM trials t
             JOIN class_accuracy c ON c.trial_id = t.id
             WHERE t.sweep_id = ?1 ORDER BY t.test_acc DESC, t.id, c.class_index
             LIMIT ?2",
            params![sweep_id, limit as i64],
            |r| {
                Ok(SweepClassRow {
                    trial_id: r.get(0)?,
                    arch: r.get(1)?,
                    test_acc: r.get(2)?,
                    class_index: r.get(3)?,
                    accuracy: r.get(4)?,
                })
            },
        )
    }

    fn sweep_decisions(&self, sweep_id: i64) -> Result<Vec<DecisionRow>> {
        // Schema 3 added pruning; an older database read as it is has no decisions.
        if !self.has_table("decisions")? {
            return Ok(Vec::new());
        }
        self.rows(
            "SELECT d.trial_id, d.epoch, d.rule, d.rung, d.value, d.compared_with, d.cutoff,
                    d.stop
             FROM decisions d JOIN trials t ON t.id = d.trial_id WHERE t.sweep_id = ?1
             ORDER BY d.trial_id, d.epoch",
            [sweep_id],
            |r| {
                Ok(DecisionRow {
                    trial_id: r.get(0)?,
                    epoch: r.get(1)?,
                    rule: r.get(2)?,
                    rung: r.get(3)?,
                    value: r.get(4)?,
                    compared_with: r.get(5)?,
                    cutoff: r.get(6)?,
                    stop: r.get(7)?,
                })
            },
        )
    }

    fn pruned_trials(&self, sweep_id: i64) -> Result<Vec<PrunedRow>> {
        if !self.has_table("decisions")? {
            return Ok(Vec::new());
        }
        self.rows(
            "SELECT t.id, t.pruned_epoch, t.epochs, d.rule, d.rung, d.value, d.cutoff,
                    d.compared_with
             FROM trials t LEFT JOIN decisions d ON d.trial_id = t.id AND d.epoch = t.pruned_epoch
             WHERE t.sweep_id = ?1 AND t.status = 'pruned'
             ORDER BY t.pruned_epoch DESC, d.value DESC, t.id",
            [sweep_id],
            |r| {
                Ok(PrunedRow {
                    trial_id: r.get(0)?,
                    pruned_epoch: r.get(1)?,
                    epochs: r.get(2)?,
                    rule: r.get(3)?,
                    rung: r.get(4)?,
                    value: r.get(5)?,
                    cutoff: r.get(6)?,
                    compared_with: r.get(7)?,
                })
            },
        )
    }

    fn epoch_work(&self, sweep_id: i64) -> Result<EpochWork> {
        self.conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM epochs e JOIN trials t ON t.id = e.trial_id
                         WHERE t.sweep_id = ?1),
                        (SELECT SUM(epochs) FROM trials WHERE sweep_id = ?1)",
                [sweep_id],
                |r| {
                    Ok(EpochWork {
                        ran: r.get(0)?,
                        planned: r.get(1)?,
                    })
                },
            )
            .map_err(|e| self.err(e))
    }

    fn pareto_inputs(&self, sweep_id: i64) -> Result<Vec<ParetoRow>> {
        self.rows(
            "SELECT t.id, e.valid_acc, t.train_seconds, t.test_acc, t.best_epoch
             FROM trials t LEFT JOIN epochs e ON e.trial_id = t.id AND e.epoch = t.best_epoch
             WHERE t.sweep_id = ?1 AND t.status = 'done' AND t.train_seconds IS NOT NULL
             ORDER BY t.id",
            [sweep_id],
            |r| {
                Ok(ParetoRow {
                    trial_id: r.get(0)?,
                    valid_acc: r.get(1)?,
                    train_seconds: r.get(2)?,
                    test_acc: r.get(3)?,
                    best_epoch: r.get(4)?,
                })
            },
        )
    }

    fn worker_trials(&self, sweep_id: i64) -> Result<Vec<WorkerTrial>> {
        self.rows(
            "SELECT t.id, t.ordinal, t.trial_key, t.status, t.worker, t.device,
                    (julianday('now') - julianday(t.heartbeat)) * 86400.0, t.attempts,
                    (SELECT COALESCE(MAX(e.epoch), 0) FROM epochs e WHERE e.trial_id = t.id),
                    t.epochs
             FROM trials t WHERE t.sweep_id = ?1 AND t.worker IS NOT NULL
             ORDER BY t.ordinal",
            [sweep_id],
            |r| {
                Ok(WorkerTrial {
                    id: r.get(0)?,
                    ordinal: r.get(1)?,
                    key: r.get(2)?,
                    status: r.get(3)?,
                    worker: r.get(4)?,
                    device: r.get(5)?,
                    heartbeat_age: r.get(6)?,
                    attempts: r.get(7)?,
                    epochs_done: r.get(8)?,
                    epochs: r.get(9)?,
                })
            },
        )
    }

    fn seconds_per_image(
        &self,
        arch: &str,
        device: &str,
        batch: Option<usize>,
        eval_share: f64,
        train_images: usize,
    ) -> Result<Option<f64>> {
        self.conn
            .query_row(
                "SELECT AVG(e.seconds / (t.train_images + ?4 * t.valid_images))
                 FROM epochs e JOIN (
                     SELECT id,
                            ROUND(?5 * json_extract(config, '$.valid_fraction')) AS valid_images,
                            MIN(COALESCE(json_extract(config, '$.train_subset'), 1e18),
                                ?5 - ROUND(?5 * json_extract(config, '$.valid_fraction')))
                                AS train_images
                     FROM trials
                     WHERE arch = ?1 AND device = ?2 AND (?3 IS NULL OR batch_size = ?3)
                 ) t ON t.id = e.trial_id",
                params![
                    arch,
                    device,
                    batch.map(|b| b as i64),
                    eval_share,
                    train_images as i64
                ],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    fn as_sqlite(&self) -> Option<&SqliteBackend> {
        Some(self)
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

/// Inserts one trial as pending, by `verb` (`INSERT`, or `INSERT OR IGNORE` to skip a key
/// already in the sweep); returns the rows added.
fn insert_trial(
    tx: &Connection,
    sweep_id: i64,
    t: &NewTrial,
    verb: &str,
) -> rusqlite::Result<usize> {
    tx.prepare_cached(&format!(
        "{verb} INTO trials (sweep_id, trial_key, ordinal, config, status)
         VALUES (?1, ?2, ?3, ?4, 'pending')"
    ))?
    .execute(params![
        sweep_id,
        t.key,
        t.ordinal as i64,
        t.config.to_string()
    ])
}

/// A [`TrialRecord`] from the columns of [`SqliteBackend::trial_columns`], starting at `at`.
fn trial_record(r: &rusqlite::Row, at: usize) -> rusqlite::Result<TrialRecord> {
    Ok(TrialRecord {
        id: r.get(at)?,
        key: r.get(at + 1)?,
        ordinal: r.get(at + 2)?,
        status: r.get(at + 3)?,
        config: r.get(at + 4)?,
        error: r.get(at + 5)?,
        device: r.get(at + 6)?,
        best_epoch: r.get(at + 7)?,
        test_acc: r.get(at + 8)?,
        test_loss: r.get(at + 9)?,
        train_seconds: r.get(at + 10)?,
        images_per_sec: r.get(at + 11)?,
        checkpoint: r.get(at + 12)?,
        checkpoint_dir: r.get(at + 13)?,
        pruned_epoch: r.get(at + 14)?,
    })
}

/// An [`EpochRow`] from `epoch, train_loss, train_acc, valid_loss, valid_acc, lr, seconds,
/// images_per_sec` starting at `at`.
fn epoch_row(r: &rusqlite::Row, at: usize) -> rusqlite::Result<EpochRow> {
    Ok(EpochRow {
        epoch: r.get(at)?,
        train_loss: r.get(at + 1)?,
        train_acc: r.get(at + 2)?,
        valid_loss: r.get(at + 3)?,
        valid_acc: r.get(at + 4)?,
        lr: r.get(at + 5)?,
        seconds: r.get(at + 6)?,
        images_per_sec: r.get(at + 7)?,
    })
}

impl rusqlite::types::FromSql for TrialStatus {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        v.as_str()?
            .parse()
            .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

impl rusqlite::ToSql for TrialStatus {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
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

        drop(SqliteBackend::open(&p("ours.db"), None).unwrap());
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
        assert!(matches!(
            SqliteBackend::open(&path, None),
            Err(DbError::Foreign { .. })
        ));
        assert!(matches!(
            SqliteBackend::open_read_only(&path),
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
                s.spawn(|| drop(SqliteBackend::open(&path, None).unwrap()));
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
        let db = SqliteBackend::open(&path, None).unwrap();
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
        db.insert_trials(
            id,
            &[NewTrial {
                key: "k".into(),
                ordinal: 0,
                config: serde_json::json!({"lr": 0.01}),
            }],
        )
        .unwrap();
        drop(db);
        let before = std::fs::read(&path).unwrap();
        let ro = SqliteBackend::open_read_only(&path).unwrap();
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
        let db = SqliteBackend::open(&path, None).unwrap();
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

    /// A store with sweep `s` of three trials run to three ends: trial 1 done (2 epochs,
    /// tested on 2 classes), trial 2 pruned after epoch 1 by an ASHA decision, trial 3
    /// failed. Returns the store (in `dir`), the sweep id and the trial ids.
    fn three_trials(dir: &Path) -> (Store, i64, [i64; 3]) {
        let store = Store::open(&dir.join("r.db")).unwrap();
        let new = NewSweep {
            name: "nightly-2026-01-02".into(),
            description: "d".into(),
            spec: "name = \"s\"".into(),
            spec_path: "s.toml".into(),
            host: "h".into(),
            git_rev: None,
            device: "cpu".into(),
            data_checksum: "c".into(),
        };
        let config = |lr: f64| {
            serde_json::json!({"arch": "lenet", "lr": lr, "batch_size": 10, "epochs": 4,
                               "valid_fraction": 0.1, "train_subset": 100})
        };
        let trials: Vec<NewTrial> = [0.1, 0.2, 0.3]
            .iter()
            .enumerate()
            .map(|(i, &lr)| NewTrial {
                key: format!("k{i}abc"),
                ordinal: i,
                config: config(lr),
            })
            .collect();
        let configs = ConfigSet::new(trials.iter().map(|t| t.config.clone()));
        let id = store.upsert_sweep(&new, &|| configs.clone()).unwrap();
        assert_eq!(store.insert_trials(id, &trials).unwrap(), 3);
        // Inserting again adds nothing: trials are identified by key.
        assert_eq!(store.insert_trials(id, &trials).unwrap(), 0);
        let worker = Worker::current();
        let long = Duration::from_secs(3600);
        let epoch = |e: usize, acc: f64| EpochRecord {
            epoch: e,
            train_loss: 1.0,
            train_acc: acc,
            valid_loss: 2.0 - acc,
            valid_acc: acc,
            lr: 0.1,
            seconds: 3.0,
            images_per_sec: 100.0,
        };
        let a = store.claim_next(id, &worker, "cpu", long).unwrap().unwrap();
        assert_eq!(a.previous_status, TrialStatus::Pending);
        store.record_epoch(a.id, &epoch(1, 0.3)).unwrap();
        store.record_epoch(a.id, &epoch(2, 0.5)).unwrap();
        let test = TestReport {
            loss: 1.5,
            accuracy: 0.6,
            confusion: trainer::metrics::Confusion {
                cells: vec![vec![3, 1], vec![2, 4]],
            },
        };
        let classes = ["cat".to_string(), "dog".to_string()];
        store
            .finish_trial(
                a.id,
                &Finished {
                    best_epoch: 2,
                    best_valid_loss: 1.5,
                    test: &test,
                    train_seconds: 6.0,
                    classes: &classes,
                    checkpoint: "ck",
                },
            )
            .unwrap();
        let b = store.claim_next(id, &worker, "cpu", long).unwrap().unwrap();
        store.record_epoch(b.id, &epoch(1, 0.1)).unwrap();
        let stop = crate::prune::Decision {
            epoch: 1,
            rung: Some(0),
            compared_with: 2,
            cutoff: Some(0.3),
            stop: true,
        };
        store.record_decision(b.id, "asha", 0.1, &stop).unwrap();
        store.prune_trial(b.id, 1).unwrap();
        let c = store.claim_next(id, &worker, "cpu", long).unwrap().unwrap();
        store
            .set_status(c.id, TrialStatus::Failed, Some("boom"), None)
            .unwrap();
        assert!(store
            .claim_next(id, &worker, "cpu", long)
            .unwrap()
            .is_none());
        (store, id, [a.id, b.id, c.id])
    }

    #[test]
    fn typed_readers_return_what_the_writers_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (store, sweep, [a, b, c]) = three_trials(dir.path());
        assert_eq!(store.sweep_id("nightly-2026-01-02").unwrap(), sweep);
        assert!(matches!(
            store.sweep_id("nope"),
            Err(DbError::NoSuchSweep(_))
        ));
        let rec = store.sweep(sweep).unwrap().unwrap();
        assert_eq!(
            (rec.name.as_str(), rec.spec_path.as_deref(), rec.finished_at),
            ("nightly-2026-01-02", Some("s.toml"), None)
        );
        assert_eq!(
            store.latest_sweep().unwrap().as_deref(),
            Some("nightly-2026-01-02")
        );
        assert_eq!(
            store
                .sweep_before("nightly-2026-01-03", "nightly-")
                .unwrap()
                .as_deref(),
            Some("nightly-2026-01-02")
        );
        assert_eq!(
            store
                .sweep_before("nightly-2026-01-02", "nightly-")
                .unwrap(),
            None
        );

        let mut seen = Vec::new();
        store
            .for_each_trial(sweep, &mut |t| {
                seen.push(t);
                Ok(())
            })
            .unwrap();
        let statuses: Vec<TrialStatus> = seen.iter().map(|t| t.status).collect();
        assert_eq!(
            statuses,
            [TrialStatus::Done, TrialStatus::Pruned, TrialStatus::Failed]
        );
        assert_eq!(seen[0].test_acc, Some(0.6));
        assert_eq!(seen[0].best_epoch, Some(2));
        assert_eq!(seen[1].pruned_epoch, Some(1));
        assert_eq!(seen[2].error.as_deref(), Some("boom"));
        assert!(seen[0]
            .checkpoint_dir
            .as_deref()
            .is_some_and(|d| d.ends_with("/nightly-2026-01-02/k0abc")));
        // An error from the callback stops the walk and comes back.
        let mut calls = 0;
        let err = store.for_each_trial(sweep, &mut |_| {
            calls += 1;
            Err(DbError::NoSuchTrial("x".into()))
        });
        assert!(matches!(err, Err(DbError::NoSuchTrial(_))) && calls == 1);

        assert_eq!(
            store.status_counts(sweep).unwrap(),
            [
                (TrialStatus::Done, 1),
                (TrialStatus::Failed, 1),
                (TrialStatus::Pruned, 1)
            ]
        );
        assert_eq!(store.count_trials(sweep, &TrialStatus::SETTLED).unwrap(), 3);
        let open: Vec<TrialStatus> = TrialStatus::open().collect();
        assert_eq!(store.count_trials(sweep, &open).unwrap(), 0);

        let epochs = store.epochs(a).unwrap();
        assert_eq!(epochs.len(), 2);
        assert_eq!((epochs[1].epoch, epochs[1].valid_acc), (2, Some(0.5)));
        let classes = store.class_accuracy(a).unwrap();
        assert_eq!(
            classes
                .iter()
                .map(|c| (c.class_name.as_str(), c.correct, c.total))
                .collect::<Vec<_>>(),
            [("cat", 3, 4), ("dog", 4, 6)]
        );
        let cells: Vec<i64> = store
            .confusion(a)
            .unwrap()
            .iter()
            .map(|c| c.count)
            .collect();
        assert_eq!(cells, [3, 1, 2, 4]);
        assert_eq!(store.class_names(sweep).unwrap(), ["cat", "dog"]);
        let wide = store.sweep_class_accuracy(sweep, 10).unwrap();
        assert_eq!(wide.len(), 2);
        assert_eq!(
            (wide[0].trial_id, wide[0].arch.as_deref(), wide[0].test_acc),
            (a, Some("lenet"), Some(0.6))
        );
        assert_eq!(store.sweep_class_accuracy(sweep, 1).unwrap().len(), 1);

        let decisions = store.sweep_decisions(sweep).unwrap();
        assert_eq!(decisions.len(), 1);
        assert_eq!(
            (
                decisions[0].trial_id,
                decisions[0].rule.as_str(),
                decisions[0].stop
            ),
            (b, "asha", true)
        );
        let pruned = store.pruned_trials(sweep).unwrap();
        assert_eq!(pruned.len(), 1);
        assert_eq!(
            (
                pruned[0].trial_id,
                pruned[0].pruned_epoch,
                pruned[0].epochs,
                pruned[0].rule.as_deref(),
                pruned[0].cutoff
            ),
            (b, Some(1), Some(4), Some("asha"), Some(0.3))
        );
        assert_eq!(
            store.epoch_work(sweep).unwrap(),
            EpochWork {
                ran: 3,
                planned: Some(12)
            }
        );
        let front = store.pareto_inputs(sweep).unwrap();
        assert_eq!(
            front,
            [ParetoRow {
                trial_id: a,
                valid_acc: Some(0.5),
                train_seconds: 6.0,
                test_acc: Some(0.6),
                best_epoch: Some(2)
            }]
        );

        let by_id = store.find_trials(&TrialRef::Id(c), 11).unwrap();
        assert_eq!(by_id.len(), 1);
        assert_eq!(by_id[0].sweep, "nightly-2026-01-02");
        assert_eq!(by_id[0].trial.status, TrialStatus::Failed);
        let one = store
            .find_trials(&TrialRef::KeyPrefix("k1".into()), 11)
            .unwrap();
        assert_eq!(one.iter().map(|d| d.trial.id).collect::<Vec<_>>(), [b]);
        let all = store
            .find_trials(&TrialRef::KeyPrefix("k".into()), 11)
            .unwrap();
        assert_eq!(all.len(), 3);
        // Literal prefixes: `_` is no wildcard.
        assert!(store
            .find_trials(&TrialRef::KeyPrefix("k_".into()), 11)
            .unwrap()
            .is_empty());

        // 3 s an epoch over 100 training images and 5,000 validation ones at a third.
        let per_image = 3.0 / (100.0 + 5000.0 / 3.0);
        for batch in [Some(10), None] {
            let got = store
                .seconds_per_image("lenet", "cpu", batch, 1.0 / 3.0, 50_000)
                .unwrap()
                .unwrap();
            assert!((got - per_image).abs() < 1e-12, "{got}");
        }
        assert_eq!(
            store
                .seconds_per_image("lenet", "cpu", Some(64), 1.0 / 3.0, 50_000)
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .seconds_per_image("resnet", "cpu", None, 1.0 / 3.0, 50_000)
                .unwrap(),
            None
        );
    }

    #[test]
    fn propose_and_claim_sees_the_history_and_inserts_a_running_trial() {
        let dir = tempfile::tempdir().unwrap();
        let (store, sweep, [a, b, _]) = three_trials(dir.path());
        let worker = Worker::current();
        let mut seen = None;
        let claimed = store
            .propose_and_claim(sweep, &worker, "cpu", &mut |h| {
                seen = Some(h.clone());
                // One configuration under two seeds: the first is claimed, the second queued.
                vec![
                    NewTrial {
                        key: "tpe-3".into(),
                        ordinal: h.next_ordinal,
                        config: serde_json::json!({"arch": "lenet", "lr": 0.05}),
                    },
                    NewTrial {
                        key: "tpe-3-seed-1".into(),
                        ordinal: h.next_ordinal + 1,
                        config: serde_json::json!({"arch": "lenet", "lr": 0.05, "seed": 1}),
                    },
                ]
            })
            .unwrap()
            .unwrap();
        let h = seen.unwrap();
        assert_eq!((h.sweep_id, h.next_ordinal, h.trials.len()), (sweep, 3, 3));
        assert_eq!(h.trials[0].id, a);
        assert_eq!(h.trials[0].epochs.len(), 2);
        assert_eq!(h.trials[1].id, b);
        assert_eq!(h.trials[1].status, TrialStatus::Pruned);
        assert_eq!(h.trials[1].epochs[0].valid_acc, Some(0.1));
        assert!(h.trials[2].epochs.is_empty());

        assert_eq!(claimed.key, "tpe-3");
        assert_eq!(claimed.previous_status, TrialStatus::Pending);
        assert!(claimed.checkpoint_dir.ends_with("nightly-2026-01-02/tpe-3"));
        let found = store.find_trials(&TrialRef::Id(claimed.id), 1).unwrap();
        assert_eq!(found[0].trial.status, TrialStatus::Running);
        assert_eq!(found[0].trial.ordinal, 3);
        assert_eq!(found[0].trial.device.as_deref(), Some("cpu"));

        // No proposal: nothing written. A key already in the sweep: an error, and nothing
        // written either.
        let none = store
            .propose_and_claim(sweep, &worker, "cpu", &mut |_| Vec::new())
            .unwrap();
        assert!(none.is_none());
        assert_eq!(
            store.count_trials(sweep, &[TrialStatus::Pending]).unwrap(),
            1,
            "the second seed's trial is queued"
        );
        let again = store.propose_and_claim(sweep, &worker, "cpu", &mut |h| {
            vec![NewTrial {
                key: "tpe-3".into(),
                ordinal: h.next_ordinal,
                config: serde_json::json!({}),
            }]
        });
        assert!(matches!(again, Err(DbError::Sqlite { .. })), "{again:?}");
        assert_eq!(store.count_trials(sweep, &TrialStatus::ALL).unwrap(), 5);
    }

    #[test]
    fn an_unknown_status_word_is_an_error_not_a_guess() {
        let dir = tempfile::tempdir().unwrap();
        let (store, sweep, _) = three_trials(dir.path());
        let backend = store.as_sqlite().unwrap();
        // Only a schema without the CHECK constraint can hold one: rebuild it without.
        backend
            .conn
            .execute_batch(
                "PRAGMA writable_schema = ON;
                 UPDATE sqlite_master SET sql = replace(sql, 'CHECK (status IN', 'CHECK (1 OR status IN')
                 WHERE name = 'trials';
                 PRAGMA writable_schema = OFF;",
            )
            .unwrap();
        drop(store);
        let store = Store::open(&dir.path().join("r.db")).unwrap();
        store
            .as_sqlite()
            .unwrap()
            .conn
            .execute("UPDATE trials SET status = 'paused' WHERE ordinal = 0", [])
            .unwrap();
        let err = store.status_counts(sweep).unwrap_err().to_string();
        assert!(err.contains("unknown trial status \"paused\""), "{err}");
    }

    /// Read-only commands read an older schema as it is: the readers answer for it as if the
    /// newer columns and tables were empty.
    #[test]
    fn readers_answer_on_a_version_1_database_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.execute_batch(
                "PRAGMA user_version = 1;
                 INSERT INTO sweeps (id, name, spec) VALUES (1, 'old', '');
                 INSERT INTO trials (id, sweep_id, trial_key, ordinal, config, status)
                 VALUES (4, 1, 'abcd', 0, '{\"arch\":\"lenet\"}', 'interrupted');",
            )
            .unwrap();
        }
        let store = Store::open_read_only(&path).unwrap();
        assert_eq!(store.version, 1);
        let mut trials = Vec::new();
        store
            .for_each_trial(1, &mut |t| {
                trials.push(t);
                Ok(())
            })
            .unwrap();
        assert_eq!(trials.len(), 1);
        assert_eq!(trials[0].status, TrialStatus::Interrupted);
        assert_eq!(
            trials[0].checkpoint_dir.as_deref(),
            Some("checkpoints/old/abcd")
        );
        assert_eq!(trials[0].pruned_epoch, None);
        assert!(store.sweep_decisions(1).unwrap().is_empty());
        assert!(store.pruned_trials(1).unwrap().is_empty());
        let found = store.find_trials(&TrialRef::Id(4), 1).unwrap();
        assert_eq!(found[0].sweep, "old");
    }

    #[test]
    fn the_heartbeat_thread_beats_for_the_tracked_trial_only() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, [a, b, _]) = three_trials(dir.path());
        let conn = &store.as_sqlite().unwrap().conn;
        let old = "2000-01-01 00:00:00";
        conn.execute("UPDATE trials SET heartbeat = ?1", [old])
            .unwrap();
        let beat = |id: i64| -> String {
            conn.query_row("SELECT heartbeat FROM trials WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap()
        };
        let hb = Heartbeat::start(&store.path, Duration::from_millis(20));
        hb.track(Some(a));
        let start = std::time::Instant::now();
        while beat(a) == old && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(20));
        }
        hb.track(None);
        drop(hb);
        assert_ne!(beat(a), old);
        assert_eq!(beat(b), old);
    }
}
