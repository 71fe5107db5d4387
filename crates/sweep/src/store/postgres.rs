//! The PostgreSQL backend of the store (issue 14): one database shared by workers on several
//! machines. Same tables, columns and views as SQLite (schema_pg.sql), the schema version in
//! `meta`. The synchronous `postgres` client keeps the CLI free of an async runtime.
//!
//! - Claiming is one `UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1)`:
//!   two workers can never get the same row, and none waits for another's claim. A trial
//!   left running is taken over when its heartbeat is older than the limit; there is no
//!   process check, since its worker may be on another machine.
//! - Every operation is one transaction, run again after a lost connection (server restart,
//!   `pg_terminate_backend`, a network blip) once a new one is made, with backoff, for a
//!   bounded time ([`retry_limit`]). Writes are idempotent so that a transaction that did
//!   commit but whose answer was lost does no harm when repeated: an epoch is an upsert on
//!   (trial_id, epoch), and a claim first takes back a trial this worker already holds.

use super::*;
use ::postgres::error::SqlState;
use ::postgres::{Client, GenericClient, NoTls, Row};
use std::cell::RefCell;
use std::time::Instant;
use trainer::metrics::EpochRecord;

/// The time now as SQLite's `datetime('now')` writes it (UTC, to the second), so that both
/// stores hold and print times alike and text comparisons order them.
const NOW: &str = "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')";

/// The schema, created in one transaction in an empty database.
const SCHEMA: &str = include_str!("schema_pg.sql");

/// An advisory lock key held while the schema is checked and created, so that workers
/// started together on an empty database create it once.
const SCHEMA_LOCK: i64 = 0x6369_6661_725f_7377; // "cifar_sw"

/// An advisory lock key held while a sweep row is created or updated: two workers starting
/// the same new sweep would otherwise both insert it.
const SWEEPS_LOCK: i64 = SCHEMA_LOCK + 1;

/// Whether `db` (a `--db` value) names a PostgreSQL server rather than a SQLite file.
pub fn is_url(db: &Path) -> bool {
    db.to_str()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

/// `url` as shown in messages: without its password.
pub fn display_url(url: &str) -> String {
    // postgres://user:password@host... -> postgres://user@host...
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_string(),
    }
}

/// How long a lost connection is retried before the operation fails:
/// `CIFAR_SWEEP_PG_RETRY_SECS` seconds, 60 by default.
pub fn retry_limit() -> Duration {
    std::env::var("CIFAR_SWEEP_PG_RETRY_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(60))
}

/// The wait before reconnection attempt `n` (0-based): doubling from 100 ms, at most 5 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << n.min(6))).min(Duration::from_secs(5))
}

/// Whether `e` means the connection is gone (worth a new one), not that the statement was
/// wrong.
fn connection_lost(e: &::postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        return [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
        ]
        .contains(code)
            || code.code().starts_with("08");
    }
    // I/O errors (a reset connection) have an io::Error as their source.
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// The error's text with its causes (the client's `Display` of a server error says only
/// "db error").
fn describe(e: &::postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// A PostgreSQL results database: [`Backend`] over one connection (one per worker process).
pub struct PgBackend {
    client: RefCell<Client>,
    config: ::postgres::Config,
    /// The URL without its password, for messages.
    pub(super) server: String,
    pub(super) version: i64,
    /// Sessions are read-only (`report`, `show`, ...): nothing can be written by mistake.
    read_only: bool,
    /// Where trials' checkpoint folders go; `None` for the readers.
    checkpoints: Option<PathBuf>,
}

/// What [`PgBackend::connect`] found in the database.
enum Found {
    Empty,
    Ours(i64),
}

impl PgBackend {
    /// Connects to `url` and checks what the database holds; no retry: a server that cannot
    /// be reached at the start is a mistake in the URL far more often than a blip.
    fn connect(url: &str, read_only: bool) -> Result<(PgBackend, Found)> {
        let server = display_url(url);
        let config: ::postgres::Config =
            url.parse().map_err(|e: ::postgres::Error| DbError::PgUrl {
                server: server.clone(),
                error: describe(&e),
            })?;
        let client = Self::session(&config, read_only).map_err(|e| DbError::PgConnect {
            server: server.clone(),
            error: describe(&e),
        })?;
        let db = PgBackend {
            client: RefCell::new(client),
            config,
            server,
            version: SCHEMA_VERSION,
            read_only,
            checkpoints: None,
        };
        let found = db.classify()?;
        Ok((db, found))
    }

    fn session(config: &::postgres::Config, read_only: bool) -> Result<Client, ::postgres::Error> {
        let mut c = config.connect(NoTls)?;
        // Times are written as UTC text by `NOW`; the session settings only make sure that
        // a reader's session cannot write.
        if read_only {
            c.batch_execute("SET default_transaction_read_only = on")?;
        }
        Ok(c)
    }

    /// Opens (creating the schema in an empty database) for `run` and `train`; trials'
    /// checkpoint folders go under `checkpoints`.
    pub fn open(url: &str, checkpoints: Option<&Path>) -> Result<PgBackend> {
        let (mut db, found) = Self::connect(url, false)?;
        db.checkpoints = checkpoints.map(Path::to_path_buf);
        if let Found::Empty = found {
            db.create_schema()?;
        }
        Ok(db)
    }

    /// Opens a database that has the schema already, for writing (the heartbeat's own
    /// connection, the report after a run).
    pub fn open_existing(url: &str) -> Result<PgBackend> {
        Self::open_ours(url, false)
    }

    /// Opens a database that has the schema, in read-only sessions.
    pub fn open_read_only(url: &str) -> Result<PgBackend> {
        Self::open_ours(url, true)
    }

    fn open_ours(url: &str, read_only: bool) -> Result<PgBackend> {
        let (mut db, found) = Self::connect(url, read_only)?;
        match found {
            Found::Ours(v) => {
                db.version = v;
                Ok(db)
            }
            Found::Empty => Err(DbError::Empty {
                path: PathBuf::from(&db.server),
            }),
        }
    }

    /// What the database at `url` holds, without writing.
    pub fn probe(url: &str) -> Result<Probe> {
        let (_, found) = Self::connect(url, true)?;
        Ok(match found {
            Found::Empty => Probe::Empty,
            Found::Ours(version) => Probe::Ours { version },
        })
    }

    /// Our schema's version, from `meta`; a database without our tables is empty (a
    /// PostgreSQL database is often shared with other programs' tables: ours go beside
    /// them), but `sweeps` or `trials` without our `meta` are another program's.
    fn classify(&self) -> Result<Found> {
        let row = self.with_retry(|c| {
            c.query_one(
                "SELECT to_regclass('meta') IS NOT NULL, to_regclass('sweeps') IS NOT NULL,
                        to_regclass('trials') IS NOT NULL",
                &[],
            )
        })?;
        let (meta, sweeps, trials): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
        if !meta {
            if sweeps || trials {
                return Err(DbError::Foreign {
                    path: PathBuf::from(&self.server),
                    tables: "sweeps/trials without cifar-sweep's meta table".into(),
                });
            }
            return Ok(Found::Empty);
        }
        let version: Option<String> = self.with_retry(|c| {
            c.query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
                .map(|r| r.map(|r| r.get(0)))
        })?;
        let version = version.and_then(|v| v.parse::<i64>().ok());
        match version {
            Some(v) if v > SCHEMA_VERSION => Err(DbError::TooNew {
                path: PathBuf::from(&self.server),
                found: v,
            }),
            Some(v) if v > 0 && sweeps && trials => Ok(Found::Ours(v)),
            _ => Err(DbError::Foreign {
                path: PathBuf::from(&self.server),
                tables: "a `meta` table without a cifar-sweep schema version".into(),
            }),
        }
    }

    /// Creates the schema under an advisory lock, checking again inside it: another worker
    /// started at the same moment may have created it meanwhile.
    fn create_schema(&self) -> Result<()> {
        self.transaction(|tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
            // Read from pg_tables with this statement's snapshot, not with to_regclass: the
            // latter may answer from this session's catalog cache, filled before the lock
            // was granted, and miss the schema another worker just committed.
            let exists: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables
                                    WHERE schemaname = current_schema() AND tablename = 'meta')",
                    &[],
                )?
                .get(0);
            if !exists {
                tx.batch_execute(SCHEMA)?;
            }
            Ok(())
        })?;
        // Whatever won the race, the result must be ours and not newer.
        match self.classify()? {
            Found::Ours(_) => Ok(()),
            Found::Empty => Err(DbError::Empty {
                path: PathBuf::from(&self.server),
            }),
        }
    }

    /// Runs `f` on the connection; when the connection is lost, makes a new one (retrying
    /// with backoff up to [`retry_limit`]) and runs `f` again.
    fn with_retry<T>(
        &self,
        mut f: impl FnMut(&mut Client) -> Result<T, ::postgres::Error>,
    ) -> Result<T> {
        let mut started: Option<Instant> = None;
        let mut attempt = 0;
        loop {
            let result = f(&mut self.client.borrow_mut());
            match result {
                Ok(v) => return Ok(v),
                Err(e) if connection_lost(&e) => {
                    let t0 = *started.get_or_insert_with(Instant::now);
                    let limit = retry_limit();
                    tracing::warn!(
                        "{}: connection lost ({}); reconnecting",
                        self.server,
                        describe(&e)
                    );
                    loop {
                        if t0.elapsed() >= limit {
                            return Err(DbError::PgLost {
                                server: self.server.clone(),
                                seconds: limit.as_secs_f64(),
                                error: describe(&e),
                            });
                        }
                        std::thread::sleep(
                            backoff(attempt).min(limit.saturating_sub(t0.elapsed())),
                        );
                        attempt += 1;
                        match Self::session(&self.config, self.read_only) {
                            Ok(c) => {
                                *self.client.borrow_mut() = c;
                                break;
                            }
                            Err(e) => {
                                tracing::debug!("{}: reconnect: {}", self.server, describe(&e))
                            }
                        }
                    }
                }
                Err(e) => return Err(self.err(e)),
            }
        }
    }

    /// Runs `f` in one transaction (committed when it returns Ok), with [`with_retry`]: a
    /// transaction cut off by a lost connection was rolled back by the server, so running it
    /// again is safe.
    fn transaction<T>(
        &self,
        mut f: impl FnMut(&mut ::postgres::Transaction) -> Result<T, ::postgres::Error>,
    ) -> Result<T> {
        self.with_retry(|c| {
            let mut tx = c.transaction()?;
            let v = f(&mut tx)?;
            tx.commit()?;
            Ok(v)
        })
    }

    fn err(&self, e: ::postgres::Error) -> DbError {
        DbError::Postgres {
            server: self.server.clone(),
            error: describe(&e),
        }
    }

    fn rows<T>(
        &self,
        sql: &str,
        params: &[&(dyn ::postgres::types::ToSql + Sync)],
        f: impl Fn(&Row) -> Result<T, ::postgres::Error>,
    ) -> Result<Vec<T>> {
        self.with_retry(|c| c.query(sql, params)?.iter().map(&f).collect())
    }

    fn execute(&self, sql: &str, params: &[&(dyn ::postgres::types::ToSql + Sync)]) -> Result<u64> {
        self.with_retry(|c| c.execute(sql, params))
    }

    /// A status word from the database as a [`TrialStatus`].
    fn status(&self, s: &str) -> Result<TrialStatus> {
        s.parse().map_err(|e: UnknownStatus| DbError::Postgres {
            server: self.server.clone(),
            error: e.to_string(),
        })
    }

    /// Claims the trial that `pick` (a query of one trial's `id, status, worker` whose
    /// parameters are $1 = worker, $2 = device and then its own) chooses, on `c`, and
    /// returns `(id, key, config, checkpoint_dir, previous status, previous worker)`.
    fn take<C: GenericClient>(
        c: &mut C,
        pick: &str,
        params: &[&(dyn ::postgres::types::ToSql + Sync)],
    ) -> Result<Option<Row>, ::postgres::Error> {
        // The folder is fixed at the first claim, as in SQLite (schema_v2.sql).
        let dir = crate::layout::checkpoint_dir_sql(
            "(SELECT value FROM meta WHERE key = 'store_id')",
            "(SELECT name FROM sweeps s WHERE s.id = t.sweep_id)",
            "t.trial_key",
        );
        let sql = format!(
            "WITH pick AS ({pick})
             UPDATE trials t SET status = 'running', worker = $1, device = $2,
                 heartbeat = {NOW}, attempts = t.attempts + 1,
                 started_at = COALESCE(t.started_at, {NOW}),
                 checkpoint_dir = COALESCE(t.checkpoint_dir, {dir})
             FROM pick WHERE t.id = pick.id
             RETURNING t.id, t.trial_key, t.config, t.checkpoint_dir, pick.status, pick.worker"
        );
        c.query_opt(&sql, params)
    }

    fn claimed(&self, row: Row) -> Result<Claimed> {
        let id: i64 = row.get(0);
        let dir: String = row.get(3);
        let previous_status = self.status(&row.get::<_, String>(4))?;
        let root = self
            .checkpoints
            .as_deref()
            .ok_or_else(|| DbError::NoCheckpointDir {
                server: self.server.clone(),
            })?;
        let checkpoint_dir = super::under(root, &dir).ok_or_else(|| DbError::BadPath {
            path: PathBuf::from(&self.server),
            what: format!("trial {id}: checkpoint_dir"),
            value: dir.clone(),
        })?;
        if previous_status == TrialStatus::Running {
            tracing::warn!(
                trial = id,
                "trial was left running by {} whose heartbeat stopped; taking it over",
                row.get::<_, Option<String>>(5)
                    .as_deref()
                    .unwrap_or("an unknown worker")
            );
        }
        Ok(Claimed {
            id,
            key: row.get(1),
            config: row.get(2),
            previous_status,
            checkpoint_dir,
        })
    }

    /// The id of sweep `name` if it exists and may take this spec (see `upsert_sweep`).
    fn check_sweep_on<C: GenericClient>(
        &self,
        c: &mut C,
        name: &str,
        spec: &str,
        configs: &dyn Fn() -> ConfigSet,
    ) -> Result<SweepCheck, ::postgres::Error> {
        let Some(row) = c.query_opt(
            "SELECT id, spec, spec_path FROM sweeps WHERE name = $1",
            &[&name],
        )?
        else {
            return Ok(Ok(None));
        };
        let (id, stored_spec, stored_path): (i64, String, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        if stored_spec == spec {
            return Ok(Ok(Some(id)));
        }
        let stored: Vec<String> = c
            .query("SELECT config FROM trials WHERE sweep_id = $1", &[&id])?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // Through `Value`, so both sides print the same way (sorted keys, same floats).
        let stored = ConfigSet::new(
            stored
                .into_iter()
                .map(|c| serde_json::from_str::<Value>(&c).unwrap_or(Value::String(c))),
        );
        if stored == configs() {
            Ok(Ok(Some(id)))
        } else {
            Ok(Err(stored_path))
        }
    }

    fn conflict(&self, name: &str, stored_path: Option<String>, new_path: &str) -> DbError {
        DbError::SweepConflict {
            path: PathBuf::from(&self.server),
            name: name.to_string(),
            stored_path: stored_path.unwrap_or_else(|| "an unknown file".into()),
            new_path: new_path.to_string(),
        }
    }

    /// The sweep's trials with their epochs, read on `c`.
    fn history_on<C: GenericClient>(
        &self,
        c: &mut C,
        sweep_id: i64,
    ) -> Result<Result<SearchHistory, String>, ::postgres::Error> {
        let mut trials = Vec::new();
        for r in c.query(
            "SELECT id, trial_key, ordinal, status, config FROM trials WHERE sweep_id = $1
             ORDER BY ordinal",
            &[&sweep_id],
        )? {
            let status: String = r.get(3);
            let Ok(status) = status.parse() else {
                return Ok(Err(status));
            };
            trials.push(HistoryTrial {
                id: r.get(0),
                key: r.get(1),
                ordinal: r.get(2),
                status,
                config: r.get(4),
                epochs: Vec::new(),
            });
        }
        let index: std::collections::HashMap<i64, usize> =
            trials.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
        for r in c.query(
            "SELECT e.epoch, e.train_loss, e.train_acc, e.valid_loss, e.valid_acc, e.lr,
                    e.seconds, e.images_per_sec, e.trial_id
             FROM epochs e JOIN trials t ON t.id = e.trial_id WHERE t.sweep_id = $1
             ORDER BY e.trial_id, e.epoch",
            &[&sweep_id],
        )? {
            if let Some(&i) = index.get(&r.get::<_, i64>(8)) {
                trials[i].epochs.push(epoch_row(&r, 0)?);
            }
        }
        let next_ordinal = trials
            .iter()
            .map(|t| t.ordinal + 1)
            .max()
            .unwrap_or(0)
            .max(0) as usize;
        Ok(Ok(SearchHistory {
            sweep_id,
            trials,
            next_ordinal,
        }))
    }

    /// The root of the trials' checkpoint folders, when one was given.
    pub(super) fn checkpoints(&self) -> Option<&Path> {
        self.checkpoints.as_deref()
    }
}

/// A sweep name checked against a spec: its id when it exists and may take the spec, else
/// (a conflict) the path its spec was recorded from.
type SweepCheck = Result<Option<i64>, Option<String>>;

const TRIAL_COLUMNS: &str = "t.id, t.trial_key, t.ordinal, t.status, t.config, t.error, t.device,
     t.best_epoch, t.test_acc, t.test_loss, t.train_seconds, t.images_per_sec, t.checkpoint,
     t.checkpoint_dir, t.pruned_epoch";

/// Inserts `t` as pending; `ON CONFLICT DO NOTHING` when `skip_existing`. Returns the new
/// row's id (None when skipped).
fn insert_trial<C: GenericClient>(
    c: &mut C,
    sweep_id: i64,
    t: &NewTrial,
    skip_existing: bool,
) -> Result<Option<i64>, ::postgres::Error> {
    let sql = format!(
        "INSERT INTO trials (sweep_id, trial_key, ordinal, config, status)
         VALUES ($1, $2, $3, $4, 'pending') {} RETURNING id",
        if skip_existing {
            "ON CONFLICT (sweep_id, trial_key) DO NOTHING"
        } else {
            ""
        }
    );
    c.query_opt(
        &sql,
        &[
            &sweep_id,
            &t.key,
            &(t.ordinal as i64),
            &t.config.to_string(),
        ],
    )
    .map(|r| r.map(|r| r.get(0)))
}

/// Records an epoch; the same epoch again replaces it, so a transaction repeated after a
/// lost connection never doubles it.
fn insert_epoch<C: GenericClient>(
    c: &mut C,
    trial_id: i64,
    r: &EpochRecord,
) -> Result<u64, ::postgres::Error> {
    c.execute(
        "INSERT INTO epochs (trial_id, epoch, train_loss, train_acc, valid_loss, valid_acc, lr,
         seconds, images_per_sec) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (trial_id, epoch) DO UPDATE SET train_loss = EXCLUDED.train_loss,
         train_acc = EXCLUDED.train_acc, valid_loss = EXCLUDED.valid_loss,
         valid_acc = EXCLUDED.valid_acc, lr = EXCLUDED.lr, seconds = EXCLUDED.seconds,
         images_per_sec = EXCLUDED.images_per_sec",
        &[
            &trial_id,
            &(r.epoch as i64),
            &r.train_loss,
            &r.train_acc,
            &r.valid_loss,
            &r.valid_acc,
            &r.lr,
            &r.seconds,
            &r.images_per_sec,
        ],
    )
}

fn epoch_row(r: &Row, at: usize) -> Result<EpochRow, ::postgres::Error> {
    Ok(EpochRow {
        epoch: r.try_get(at)?,
        train_loss: r.try_get(at + 1)?,
        train_acc: r.try_get(at + 2)?,
        valid_loss: r.try_get(at + 3)?,
        valid_acc: r.try_get(at + 4)?,
        lr: r.try_get(at + 5)?,
        seconds: r.try_get(at + 6)?,
        images_per_sec: r.try_get(at + 7)?,
    })
}

/// A [`TrialRecord`] from [`TRIAL_COLUMNS`] starting at `at`, with its status still a word.
fn trial_record(r: &Row, at: usize) -> Result<(TrialRecord, String), ::postgres::Error> {
    let status: String = r.try_get(at + 3)?;
    Ok((
        TrialRecord {
            id: r.try_get(at)?,
            key: r.try_get(at + 1)?,
            ordinal: r.try_get(at + 2)?,
            // Replaced by the caller, who can report a bad word as an error.
            status: TrialStatus::Pending,
            config: r.try_get(at + 4)?,
            error: r.try_get(at + 5)?,
            device: r.try_get(at + 6)?,
            best_epoch: r.try_get(at + 7)?,
            test_acc: r.try_get(at + 8)?,
            test_loss: r.try_get(at + 9)?,
            train_seconds: r.try_get(at + 10)?,
            images_per_sec: r.try_get(at + 11)?,
            checkpoint: r.try_get(at + 12)?,
            checkpoint_dir: r.try_get(at + 13)?,
            pruned_epoch: r.try_get(at + 14)?,
        },
        status,
    ))
}

impl PgBackend {
    fn record(&self, (mut t, status): (TrialRecord, String)) -> Result<TrialRecord> {
        t.status = self.status(&status)?;
        Ok(t)
    }
}

impl Backend for PgBackend {
    fn upsert_sweep(&self, s: &NewSweep, configs: &dyn Fn() -> ConfigSet) -> Result<i64> {
        let r = self.transaction(|tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SWEEPS_LOCK])?;
            let existing = match self.check_sweep_on(tx, &s.name, &s.spec, configs)? {
                Ok(e) => e,
                Err(conflict) => return Ok(Err(conflict)),
            };
            let id: i64 = match existing {
                Some(id) => {
                    tx.execute(
                        &format!(
                            "UPDATE sweeps SET description = $2, spec = $3, spec_path = $4,
                             host = $5, git_rev = $6, device = $7, started_at = {NOW},
                             finished_at = NULL WHERE id = $1"
                        ),
                        &[
                            &id,
                            &s.description,
                            &s.spec,
                            &s.spec_path,
                            &s.host,
                            &s.git_rev,
                            &s.device,
                        ],
                    )?;
                    id
                }
                None => tx
                    .query_one(
                        &format!(
                            "INSERT INTO sweeps (name, description, spec, spec_path, host, git_rev,
                             device, data_checksum, started_at)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {NOW}) RETURNING id"
                        ),
                        &[
                            &s.name,
                            &s.description,
                            &s.spec,
                            &s.spec_path,
                            &s.host,
                            &s.git_rev,
                            &s.device,
                            &s.data_checksum,
                        ],
                    )?
                    .get(0),
            };
            Ok(Ok(id))
        })?;
        r.map_err(|stored_path| self.conflict(&s.name, stored_path, &s.spec_path))
    }

    fn check_sweep(
        &self,
        name: &str,
        spec: &str,
        spec_path: &str,
        configs: &dyn Fn() -> ConfigSet,
    ) -> Result<()> {
        self.with_retry(|c| self.check_sweep_on(c, name, spec, configs))?
            .map(drop)
            .map_err(|stored_path| self.conflict(name, stored_path, spec_path))
    }

    fn finish_sweep(&self, sweep_id: i64) -> Result<()> {
        self.execute(
            &format!("UPDATE sweeps SET finished_at = {NOW} WHERE id = $1"),
            &[&sweep_id],
        )
        .map(drop)
    }

    fn sweep_id(&self, name: &str) -> Result<i64> {
        self.with_retry(|c| c.query_opt("SELECT id FROM sweeps WHERE name = $1", &[&name]))?
            .map(|r| r.get(0))
            .ok_or_else(|| DbError::NoSuchSweep(name.to_string()))
    }

    fn latest_sweep(&self) -> Result<Option<String>> {
        self.with_retry(|c| {
            c.query_opt(
                "SELECT name FROM sweeps ORDER BY started_at DESC NULLS LAST, id DESC LIMIT 1",
                &[],
            )
        })
        .map(|r| r.map(|r| r.get(0)))
    }

    fn sweep_before(&self, name: &str, prefix: &str) -> Result<Option<String>> {
        // COLLATE "C": byte order, as SQLite compares, whatever the database's locale.
        self.with_retry(|c| {
            c.query_opt(
                "SELECT name FROM sweeps
                 WHERE substr(name, 1, length($2)) = $2 AND name COLLATE \"C\" < $1
                 ORDER BY name COLLATE \"C\" DESC LIMIT 1",
                &[&name, &prefix],
            )
        })
        .map(|r| r.map(|r| r.get(0)))
    }

    fn sweep(&self, sweep_id: i64) -> Result<Option<SweepRecord>> {
        let rows = self.rows(
            "SELECT id, name, description, spec, spec_path, host, git_rev, device,
                    data_checksum, created_at, started_at, finished_at
             FROM sweeps WHERE id = $1",
            &[&sweep_id],
            |r| {
                Ok(SweepRecord {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    description: r.try_get(2)?,
                    spec: r.try_get(3)?,
                    spec_path: r.try_get(4)?,
                    host: r.try_get(5)?,
                    git_rev: r.try_get(6)?,
                    device: r.try_get(7)?,
                    data_checksum: r.try_get(8)?,
                    created_at: r.try_get(9)?,
                    started_at: r.try_get(10)?,
                    finished_at: r.try_get(11)?,
                })
            },
        )?;
        Ok(rows.into_iter().next())
    }

    fn insert_trials(&self, sweep_id: i64, trials: &[NewTrial]) -> Result<usize> {
        self.transaction(|tx| {
            let mut added = 0;
            for t in trials {
                added += insert_trial(tx, sweep_id, t, true)?.is_some() as usize;
            }
            Ok(added)
        })
    }

    fn requeue_failed(&self, sweep_id: i64) -> Result<usize> {
        self.execute(
            "UPDATE trials SET status = 'pending', error = NULL
             WHERE sweep_id = $1 AND status IN ('failed', 'diverged')",
            &[&sweep_id],
        )
        .map(|n| n as usize)
    }

    fn claim_next(
        &self,
        sweep_id: i64,
        worker: &Worker,
        device: &str,
        stale: Duration,
    ) -> Result<Option<Claimed>> {
        // A trial running under this very worker comes first: it is one whose claim
        // committed but whose answer was lost with the connection (a worker claims only
        // when it runs nothing).
        let pick = "SELECT id, status, worker FROM trials
             WHERE sweep_id = $3 AND (status IN ('pending', 'interrupted')
                OR (status = 'running' AND (worker = $1 OR heartbeat IS NULL
                    OR heartbeat < to_char((now() - make_interval(secs => $4))
                                           AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'))))
             ORDER BY (status = 'running' AND worker = $1) DESC, ordinal
             LIMIT 1 FOR UPDATE SKIP LOCKED";
        let secs = stale.as_secs_f64();
        let row =
            self.with_retry(|c| Self::take(c, pick, &[&worker.id, &device, &sweep_id, &secs]))?;
        row.map(|r| self.claimed(r)).transpose()
    }

    fn propose_and_claim(
        &self,
        sweep_id: i64,
        worker: &Worker,
        device: &str,
        propose: &mut dyn FnMut(&SearchHistory) -> Vec<NewTrial>,
    ) -> Result<Option<Claimed>> {
        let row = self.transaction(|tx| {
            // Serialises proposals for this sweep: the history read below cannot change
            // (by another proposal) before our insert commits.
            tx.execute(
                "SELECT id FROM sweeps WHERE id = $1 FOR UPDATE",
                &[&sweep_id],
            )?;
            let history = match self.history_on(tx, sweep_id)? {
                Ok(h) => h,
                Err(bad) => return Ok(Err(bad)),
            };
            let new = propose(&history);
            let Some((first, rest)) = new.split_first() else {
                return Ok(Ok(None));
            };
            // A plain INSERT: a key already in the sweep fails (and rolls back) rather than
            // claiming a trial the sampler did not mean.
            let id = insert_trial(tx, sweep_id, first, false)?.unwrap_or_default();
            for t in rest {
                insert_trial(tx, sweep_id, t, false)?;
            }
            Self::take(
                tx,
                "SELECT id, status, worker FROM trials WHERE id = $3",
                &[&worker.id, &device, &id],
            )
            .map(Ok)
        })?;
        match row {
            Ok(Some(r)) => self.claimed(r).map(Some),
            Ok(None) => Ok(None),
            Err(bad) => Err(DbError::Postgres {
                server: self.server.clone(),
                error: UnknownStatus(bad).to_string(),
            }),
        }
    }

    fn heartbeat(&self, trial_id: i64) -> Result<()> {
        self.execute(
            &format!("UPDATE trials SET heartbeat = {NOW} WHERE id = $1"),
            &[&trial_id],
        )
        .map(drop)
    }

    fn record_epoch(&self, trial_id: i64, r: &EpochRecord) -> Result<()> {
        self.transaction(|tx| {
            insert_epoch(tx, trial_id, r)?;
            tx.execute(
                &format!("UPDATE trials SET heartbeat = {NOW} WHERE id = $1"),
                &[&trial_id],
            )
        })
        .map(drop)
    }

    fn sync_epochs(&self, trial_id: i64, history: &[EpochRecord]) -> Result<()> {
        self.transaction(|tx| {
            tx.execute(
                "DELETE FROM epochs WHERE trial_id = $1 AND epoch > $2",
                &[&trial_id, &(history.len() as i64)],
            )?;
            for r in history {
                insert_epoch(tx, trial_id, r)?;
            }
            Ok(())
        })
    }

    fn finish_trial(&self, trial_id: i64, f: &Finished) -> Result<()> {
        let (test, classes) = (f.test, f.classes);
        self.transaction(|tx| {
            tx.execute(
                &format!(
                    "UPDATE trials SET status = 'done', error = NULL, best_epoch = $2,
                     best_valid_loss = $3, test_loss = $4, test_acc = $5, train_seconds = $6,
                     images_per_sec = (SELECT AVG(images_per_sec) FROM epochs WHERE trial_id = $1),
                     checkpoint = $7, finished_at = {NOW}, heartbeat = {NOW}
                     WHERE id = $1"
                ),
                &[
                    &trial_id,
                    &(f.best_epoch as i64),
                    &f.best_valid_loss,
                    &test.loss,
                    &test.accuracy,
                    &f.train_seconds,
                    &f.checkpoint,
                ],
            )?;
            tx.execute(
                "DELETE FROM class_accuracy WHERE trial_id = $1",
                &[&trial_id],
            )?;
            tx.execute("DELETE FROM confusion WHERE trial_id = $1", &[&trial_id])?;
            for (i, (correct, total)) in test.confusion.per_class().into_iter().enumerate() {
                let name = classes.get(i).cloned().unwrap_or_else(|| i.to_string());
                let acc = if total == 0 {
                    0.0
                } else {
                    correct as f64 / total as f64
                };
                tx.execute(
                    "INSERT INTO class_accuracy (trial_id, class_index, class_name, correct,
                     total, accuracy) VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &trial_id,
                        &(i as i64),
                        &name,
                        &(correct as i64),
                        &(total as i64),
                        &acc,
                    ],
                )?;
            }
            for (t, row) in test.confusion.cells.iter().enumerate() {
                for (p, n) in row.iter().enumerate() {
                    tx.execute(
                        "INSERT INTO confusion (trial_id, true_class, predicted_class, count)
                         VALUES ($1, $2, $3, $4)",
                        &[&trial_id, &(t as i64), &(p as i64), &(*n as i64)],
                    )?;
                }
            }
            Ok(())
        })
    }

    fn set_status(
        &self,
        trial_id: i64,
        status: TrialStatus,
        error: Option<&str>,
        best_epoch: Option<usize>,
    ) -> Result<()> {
        self.execute(
            &format!(
                "UPDATE trials SET status = $2, error = $3,
                 best_epoch = COALESCE($4, best_epoch), heartbeat = {NOW},
                 finished_at = CASE WHEN $2 IN ('failed', 'diverged') THEN {NOW} END
                 WHERE id = $1"
            ),
            &[
                &trial_id,
                &status.as_str(),
                &error,
                &best_epoch.map(|e| e as i64),
            ],
        )
        .map(drop)
    }

    fn prune_trial(&self, trial_id: i64, epoch: usize) -> Result<()> {
        self.execute(
            &format!(
                "UPDATE trials SET status = 'pruned', pruned_epoch = $2, error = NULL,
                 heartbeat = {NOW}, finished_at = {NOW},
                 train_seconds = (SELECT SUM(seconds) FROM epochs WHERE trial_id = $1),
                 images_per_sec = (SELECT AVG(images_per_sec) FROM epochs WHERE trial_id = $1)
                 WHERE id = $1"
            ),
            &[&trial_id, &(epoch as i64)],
        )
        .map(drop)
    }

    fn record_decision(
        &self,
        trial_id: i64,
        rule: &str,
        value: f64,
        d: &crate::prune::Decision,
    ) -> Result<()> {
        self.execute(
            "INSERT INTO decisions (trial_id, epoch, rule, rung, value, compared_with, cutoff, stop)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (trial_id, epoch) DO NOTHING",
            &[
                &trial_id,
                &(d.epoch as i64),
                &rule,
                &d.rung.map(|r| r as i64),
                &value,
                &(d.compared_with as i64),
                &d.cutoff,
                &(d.stop as i64),
            ],
        )
        .map(drop)
    }

    fn results_at(&self, sweep_id: i64, trial_id: i64, epoch: usize) -> Result<Vec<[f64; 3]>> {
        self.rows(
            "SELECT e.valid_acc, e.valid_loss,
                    (SELECT SUM(p.seconds) FROM epochs p
                     WHERE p.trial_id = e.trial_id AND p.epoch <= e.epoch)
             FROM epochs e JOIN trials t ON t.id = e.trial_id
             WHERE t.sweep_id = $1 AND e.epoch = $2 AND e.trial_id != $3",
            &[&sweep_id, &(epoch as i64), &trial_id],
            |r| Ok([r.try_get(0)?, r.try_get(1)?, r.try_get(2)?]),
        )
    }

    fn seconds_to(&self, trial_id: i64, epoch: usize) -> Result<f64> {
        self.with_retry(|c| {
            c.query_one(
                "SELECT COALESCE(SUM(seconds), 0)::double precision FROM epochs
                 WHERE trial_id = $1 AND epoch <= $2",
                &[&trial_id, &(epoch as i64)],
            )?
            .try_get(0)
        })
    }

    fn finished_count(&self, sweep_id: i64) -> Result<usize> {
        self.with_retry(|c| {
            c.query_one(
                "SELECT COUNT(*) FROM trials WHERE sweep_id = $1 AND status IN ('done', 'pruned')",
                &[&sweep_id],
            )?
            .try_get::<_, i64>(0)
        })
        .map(|n| n as usize)
    }

    fn decision(&self, trial_id: i64, epoch: usize) -> Result<Option<crate::prune::Decision>> {
        let rows = self.rows(
            "SELECT epoch, rung, compared_with, cutoff, stop FROM decisions
             WHERE trial_id = $1 AND epoch = $2",
            &[&trial_id, &(epoch as i64)],
            |r| {
                Ok(crate::prune::Decision {
                    epoch: r.try_get::<_, i64>(0)? as usize,
                    rung: r.try_get::<_, Option<i64>>(1)?.map(|x| x as usize),
                    compared_with: r.try_get::<_, i64>(2)? as usize,
                    cutoff: r.try_get(3)?,
                    stop: r.try_get::<_, i64>(4)? != 0,
                })
            },
        )?;
        Ok(rows.into_iter().next())
    }

    fn stopped_at(&self, trial_id: i64) -> Result<Option<usize>> {
        self.with_retry(|c| {
            c.query_one(
                "SELECT MIN(epoch) FROM decisions WHERE trial_id = $1 AND stop <> 0",
                &[&trial_id],
            )?
            .try_get::<_, Option<i64>>(0)
        })
        .map(|e| e.map(|e| e as usize))
    }

    fn for_each_trial(
        &self,
        sweep_id: i64,
        f: &mut dyn FnMut(TrialRecord) -> Result<()>,
    ) -> Result<()> {
        // Read whole, then handed out: a callback that fails must not leave a half-read
        // portal on the connection, and a report holds the trials' rows anyway.
        let rows = self.rows(
            &format!(
                "SELECT {TRIAL_COLUMNS} FROM trials t WHERE t.sweep_id = $1 ORDER BY t.ordinal"
            ),
            &[&sweep_id],
            |r| trial_record(r, 0),
        )?;
        for r in rows {
            f(self.record(r)?)?;
        }
        Ok(())
    }

    fn status_counts(&self, sweep_id: i64) -> Result<Vec<(TrialStatus, usize)>> {
        let rows = self.rows(
            "SELECT status, COUNT(*) FROM trials WHERE sweep_id = $1 GROUP BY status
             ORDER BY status COLLATE \"C\"",
            &[&sweep_id],
            |r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, i64>(1)? as usize)),
        )?;
        rows.into_iter()
            .map(|(s, n)| Ok((self.status(&s)?, n)))
            .collect()
    }

    fn find_trials(&self, by: &TrialRef, limit: usize) -> Result<Vec<TrialDetail>> {
        let (condition, value): (&str, Box<dyn ::postgres::types::ToSql + Sync>) = match by {
            TrialRef::Id(id) => ("t.id = $1", Box::new(*id)),
            // substr, not LIKE: `%` and `_` in the prefix are not wildcards.
            TrialRef::KeyPrefix(p) => (
                "substr(t.trial_key, 1, length($1)) = $1",
                Box::new(p.clone()),
            ),
        };
        let rows = self.rows(
            &format!(
                "SELECT s.name, {TRIAL_COLUMNS} FROM trials t JOIN sweeps s ON s.id = t.sweep_id
                 WHERE {condition} ORDER BY t.id LIMIT $2"
            ),
            &[value.as_ref(), &(limit as i64)],
            |r| Ok((r.try_get::<_, String>(0)?, trial_record(r, 1)?)),
        )?;
        rows.into_iter()
            .map(|(sweep, t)| {
                Ok(TrialDetail {
                    sweep,
                    trial: self.record(t)?,
                })
            })
            .collect()
    }

    fn epochs(&self, trial_id: i64) -> Result<Vec<EpochRow>> {
        self.rows(
            "SELECT epoch, train_loss, train_acc, valid_loss, valid_acc, lr, seconds,
                    images_per_sec
             FROM epochs WHERE trial_id = $1 ORDER BY epoch",
            &[&trial_id],
            |r| epoch_row(r, 0),
        )
    }

    fn class_accuracy(&self, trial_id: i64) -> Result<Vec<ClassRow>> {
        self.rows(
            "SELECT class_index, class_name, correct, total, accuracy FROM class_accuracy
             WHERE trial_id = $1 ORDER BY class_index",
            &[&trial_id],
            |r| {
                Ok(ClassRow {
                    class_index: r.try_get(0)?,
                    class_name: r.try_get(1)?,
                    correct: r.try_get(2)?,
                    total: r.try_get(3)?,
                    accuracy: r.try_get(4)?,
                })
            },
        )
    }

    fn confusion(&self, trial_id: i64) -> Result<Vec<ConfusionCell>> {
        self.rows(
            "SELECT true_class, predicted_class, count FROM confusion WHERE trial_id = $1
             ORDER BY true_class, predicted_class",
            &[&trial_id],
            |r| {
                Ok(ConfusionCell {
                    true_class: r.try_get(0)?,
                    predicted_class: r.try_get(1)?,
                    count: r.try_get(2)?,
                })
            },
        )
    }

    fn class_names(&self, sweep_id: i64) -> Result<Vec<String>> {
        self.rows(
            "SELECT DISTINCT c.class_index, c.class_name FROM class_accuracy c
             JOIN trials t ON t.id = c.trial_id WHERE t.sweep_id = $1 ORDER BY c.class_index",
            &[&sweep_id],
            |r| r.try_get(1),
        )
    }

    fn sweep_class_accuracy(&self, sweep_id: i64, limit: usize) -> Result<Vec<SweepClassRow>> {
        // NULLS LAST: SQLite puts NULL lowest, so last in a descending order.
        self.rows(
            "SELECT t.id, t.arch, t.test_acc, c.class_index, c.accuracy FROM trials t
             JOIN class_accuracy c ON c.trial_id = t.id
             WHERE t.sweep_id = $1 ORDER BY t.test_acc DESC NULLS LAST, t.id, c.class_index
             LIMIT $2",
            &[&sweep_id, &(limit as i64)],
            |r| {
                Ok(SweepClassRow {
                    trial_id: r.try_get(0)?,
                    arch: r.try_get(1)?,
                    test_acc: r.try_get(2)?,
                    class_index: r.try_get(3)?,
                    accuracy: r.try_get(4)?,
                })
            },
        )
    }

    fn sweep_decisions(&self, sweep_id: i64) -> Result<Vec<DecisionRow>> {
        self.rows(
            "SELECT d.trial_id, d.epoch, d.rule, d.rung, d.value, d.compared_with, d.cutoff,
                    d.stop
             FROM decisions d JOIN trials t ON t.id = d.trial_id WHERE t.sweep_id = $1
             ORDER BY d.trial_id, d.epoch",
            &[&sweep_id],
            |r| {
                Ok(DecisionRow {
                    trial_id: r.try_get(0)?,
                    epoch: r.try_get(1)?,
                    rule: r.try_get(2)?,
                    rung: r.try_get(3)?,
                    value: r.try_get(4)?,
                    compared_with: r.try_get(5)?,
                    cutoff: r.try_get(6)?,
                    stop: r.try_get::<_, i64>(7)? != 0,
                })
            },
        )
    }

    fn pruned_trials(&self, sweep_id: i64) -> Result<Vec<PrunedRow>> {
        self.rows(
            "SELECT t.id, t.pruned_epoch, t.epochs, d.rule, d.rung, d.value, d.cutoff,
                    d.compared_with
             FROM trials t LEFT JOIN decisions d ON d.trial_id = t.id AND d.epoch = t.pruned_epoch
             WHERE t.sweep_id = $1 AND t.status = 'pruned'
             ORDER BY t.pruned_epoch DESC NULLS LAST, d.value DESC NULLS LAST, t.id",
            &[&sweep_id],
            |r| {
                Ok(PrunedRow {
                    trial_id: r.try_get(0)?,
                    pruned_epoch: r.try_get(1)?,
                    epochs: r.try_get(2)?,
                    rule: r.try_get(3)?,
                    rung: r.try_get(4)?,
                    value: r.try_get(5)?,
                    cutoff: r.try_get(6)?,
                    compared_with: r.try_get(7)?,
                })
            },
        )
    }

    fn epoch_work(&self, sweep_id: i64) -> Result<EpochWork> {
        self.with_retry(|c| {
            let r = c.query_one(
                "SELECT (SELECT COUNT(*) FROM epochs e JOIN trials t ON t.id = e.trial_id
                         WHERE t.sweep_id = $1),
                        (SELECT SUM(epochs)::bigint FROM trials WHERE sweep_id = $1)",
                &[&sweep_id],
            )?;
            Ok(EpochWork {
                ran: r.try_get(0)?,
                planned: r.try_get(1)?,
            })
        })
    }

    fn pareto_inputs(&self, sweep_id: i64) -> Result<Vec<ParetoRow>> {
        self.rows(
            "SELECT t.id, e.valid_acc, t.train_seconds, t.test_acc, t.best_epoch
             FROM trials t LEFT JOIN epochs e ON e.trial_id = t.id AND e.epoch = t.best_epoch
             WHERE t.sweep_id = $1 AND t.status = 'done' AND t.train_seconds IS NOT NULL
             ORDER BY t.id",
            &[&sweep_id],
            |r| {
                Ok(ParetoRow {
                    trial_id: r.try_get(0)?,
                    valid_acc: r.try_get(1)?,
                    train_seconds: r.try_get(2)?,
                    test_acc: r.try_get(3)?,
                    best_epoch: r.try_get(4)?,
                })
            },
        )
    }

    fn worker_trials(&self, sweep_id: i64) -> Result<Vec<WorkerTrial>> {
        let rows = self.rows(
            "SELECT t.id, t.ordinal, t.trial_key, t.status, t.worker, t.device,
                    EXTRACT(EPOCH FROM (now() AT TIME ZONE 'UTC')
                                       - t.heartbeat::timestamp)::float8,
                    t.attempts,
                    (SELECT COALESCE(MAX(e.epoch), 0) FROM epochs e WHERE e.trial_id = t.id),
                    t.epochs
             FROM trials t WHERE t.sweep_id = $1 AND t.worker IS NOT NULL
             ORDER BY t.ordinal",
            &[&sweep_id],
            |r| {
                Ok((
                    r.try_get::<_, String>(3)?,
                    WorkerTrial {
                        id: r.try_get(0)?,
                        ordinal: r.try_get(1)?,
                        key: r.try_get(2)?,
                        status: TrialStatus::Pending,
                        worker: r.try_get(4)?,
                        device: r.try_get(5)?,
                        heartbeat_age: r.try_get(6)?,
                        attempts: r.try_get(7)?,
                        epochs_done: r.try_get(8)?,
                        epochs: r.try_get(9)?,
                    },
                ))
            },
        )?;
        rows.into_iter()
            .map(|(status, t)| {
                Ok(WorkerTrial {
                    status: self.status(&status)?,
                    ..t
                })
            })
            .collect()
    }

    fn seconds_per_image(
        &self,
        arch: &str,
        device: &str,
        batch: Option<usize>,
        eval_share: f64,
        train_images: usize,
    ) -> Result<Option<f64>> {
        // floor(x + 0.5): SQLite's ROUND (halves away from zero) for these positive counts.
        let n = train_images as f64;
        self.with_retry(|c| {
            c.query_one(
                "SELECT AVG(e.seconds / (t.train_images + $4 * t.valid_images))
                 FROM epochs e JOIN (
                     SELECT id,
                            floor($5 * cifar_sweep_json_number(config, 'valid_fraction') + 0.5)
                                AS valid_images,
                            LEAST(COALESCE(cifar_sweep_json_number(config, 'train_subset'), 1e18),
                                  $5 - floor($5 * cifar_sweep_json_number(config, 'valid_fraction')
                                             + 0.5))
                                AS train_images
                     FROM trials
                     WHERE arch = $1 AND device = $2 AND ($3::bigint IS NULL OR batch_size = $3)
                 ) t ON t.id = e.trial_id",
                &[&arch, &device, &batch.map(|b| b as i64), &eval_share, &n],
            )?
            .try_get(0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_select_postgres_and_paths_sqlite() {
        for url in [
            "postgres://u@h:5432/d",
            "postgresql://h/d",
            "postgres://u:secret@h/d",
        ] {
            assert!(is_url(Path::new(url)), "{url}");
        }
        for path in [
            "results.db",
            "results/postgres://x",
            "/tmp/postgres.db",
            "Postgres://h/d",
            "",
        ] {
            assert!(!is_url(Path::new(path)), "{path}");
        }
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            display_url("postgres://alice:s3cret@db.example:5433/sweeps"),
            "postgres://alice@db.example:5433/sweeps"
        );
        assert_eq!(
            display_url("postgres://alice@db/s"),
            "postgres://alice@db/s"
        );
        assert_eq!(display_url("postgresql://db/s"), "postgresql://db/s");
    }

    #[test]
    fn backoff_doubles_up_to_a_ceiling() {
        let waits: Vec<u64> = (0..9).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn the_schema_lists_every_status_and_the_same_columns_as_sqlite() {
        for s in TrialStatus::ALL {
            assert!(SCHEMA.contains(&format!("'{}'", s.as_str())), "{s}");
        }
        let sqlite = include_str!("schema_v3.sql");
        // Every column of SQLite's trials table (its lines `    name  TYPE ...`) is here.
        let table = sqlite
            .split("CREATE TABLE trials_v3 (")
            .nth(1)
            .and_then(|t| t.split(");").next())
            .unwrap();
        for line in table.lines() {
            let Some(col) = line.split_whitespace().next() else {
                continue;
            };
            if col.chars().all(|c| c.is_ascii_lowercase() || c == '_') && col != "unique" {
                assert!(
                    SCHEMA.contains(&format!("\n    {col} ")),
                    "column {col} missing from schema_pg.sql"
                );
            }
        }
        for view in ["trial_summary", "best_per_arch", "class_accuracy_wide"] {
            assert!(SCHEMA.contains(&format!("CREATE VIEW {view} AS")), "{view}");
        }
    }
}
