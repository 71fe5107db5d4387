//! The results store: one typed API over the database, with every SQL statement inside this
//! module.
//!
//! - `mod.rs` (this file): the API. [`Store`] is what callers hold: it opens a database and
//!   hands out the operations of [`Backend`], each typed (ids, [`TrialStatus`], record
//!   structs), never SQL text or status strings. A second backend (PostgreSQL, issue 14)
//!   implements [`Backend`] and adds an `open` of its own; no caller changes.
//! - `sqlite.rs`: the SQLite backend (WAL, migrations `schema_v*.sql`, probing files without
//!   writing them).
//! - `postgres.rs`: the PostgreSQL backend (`--db postgres://...`, `schema_pg.sql`), shared by
//!   workers on several machines; lost connections are retried.
//! - `heartbeat.rs`: who runs a trial ([`Worker`]) and the heartbeat that keeps its claim.
//!
//! Every write is one short transaction, so several processes can share a store; claiming a
//! trial (and [`Backend::propose_and_claim`]) is a single write transaction.

mod heartbeat;
mod postgres;
mod sqlite;

pub use self::postgres::{display_url, is_url as is_postgres, PgBackend};
pub use heartbeat::{hostname, Heartbeat, Worker};
pub use sqlite::{SqliteBackend, SCHEMA_VERSION};

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use trainer::metrics::{EpochRecord, TestReport};

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
    #[error("{server}: not a valid PostgreSQL URL ({error}); the form is postgres://USER@HOST:PORT/DATABASE")]
    PgUrl { server: String, error: String },
    #[error("{server}: cannot connect to the PostgreSQL server: {error}")]
    PgConnect { server: String, error: String },
    #[error(
        "{server}: the connection to the PostgreSQL server was lost and could not be made \
         again within {seconds} s (CIFAR_SWEEP_PG_RETRY_SECS): {error}"
    )]
    PgLost {
        server: String,
        seconds: f64,
        error: String,
    },
    #[error("{server}: {error}")]
    Postgres { server: String, error: String },
    #[error(
        "{server}: a PostgreSQL store has no folder of its own for checkpoints; pass \
         --checkpoint-dir DIR (a folder every worker can reach)"
    )]
    NoCheckpointDir { server: String },
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

/// A trial's state, stored as its lower-case name (the `status` column's CHECK constraint
/// lists the same words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrialStatus {
    Pending,
    Running,
    Done,
    Failed,
    Diverged,
    Interrupted,
    Pruned,
}

impl TrialStatus {
    pub const ALL: [TrialStatus; 7] = [
        TrialStatus::Pending,
        TrialStatus::Running,
        TrialStatus::Done,
        TrialStatus::Failed,
        TrialStatus::Diverged,
        TrialStatus::Interrupted,
        TrialStatus::Pruned,
    ];

    /// The statuses a run does not come back to (without `--retry-failed`): the trial has
    /// its answer, or has failed in a way running it again would repeat.
    pub const SETTLED: [TrialStatus; 4] = [
        TrialStatus::Done,
        TrialStatus::Failed,
        TrialStatus::Diverged,
        TrialStatus::Pruned,
    ];

    /// The word stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TrialStatus::Pending => "pending",
            TrialStatus::Running => "running",
            TrialStatus::Done => "done",
            TrialStatus::Failed => "failed",
            TrialStatus::Diverged => "diverged",
            TrialStatus::Interrupted => "interrupted",
            TrialStatus::Pruned => "pruned",
        }
    }

    pub fn is_settled(self) -> bool {
        Self::SETTLED.contains(&self)
    }

    /// The statuses that are not [`SETTLED`](Self::SETTLED): still to run, or running.
    pub fn open() -> impl Iterator<Item = TrialStatus> {
        Self::ALL.into_iter().filter(|s| !s.is_settled())
    }
}

impl std::fmt::Display for TrialStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status word that is none of [`TrialStatus`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown trial status {0:?}")]
pub struct UnknownStatus(pub String);

impl std::str::FromStr for TrialStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> std::result::Result<Self, UnknownStatus> {
        TrialStatus::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
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

/// A trial to add to a sweep: its identity (`key`, unique in the sweep), its position and
/// its resolved configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTrial {
    pub key: String,
    pub ordinal: usize,
    pub config: Value,
}

/// A trial taken by this worker ([`Backend::claim_next`], [`Backend::propose_and_claim`]).
#[derive(Debug)]
pub struct Claimed {
    pub id: i64,
    pub key: String,
    /// The stored configuration, JSON.
    pub config: String,
    pub previous_status: TrialStatus,
    /// Where this trial's checkpoints live: this database's own folder for it.
    pub checkpoint_dir: PathBuf,
}

/// A finished trial's results ([`Backend::finish_trial`]).
pub struct Finished<'a> {
    pub best_epoch: usize,
    pub best_valid_loss: f64,
    pub test: &'a TestReport,
    pub train_seconds: f64,
    /// Class names by index, for the per-class rows.
    pub classes: &'a [String],
    /// The checkpoint folder, as shown to the user.
    pub checkpoint: &'a str,
}

/// A sweep row.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepRecord {
    pub id: i64,
    pub name: String,
    pub description: String,
    /// The sweep file's text.
    pub spec: String,
    pub spec_path: Option<String>,
    pub host: Option<String>,
    pub git_rev: Option<String>,
    pub device: Option<String>,
    pub data_checksum: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// A trial row as the readers use it (the config stays JSON text: each reader decides how
/// strict to be with one that no longer decodes).
#[derive(Clone, Debug, PartialEq)]
pub struct TrialRecord {
    pub id: i64,
    pub key: String,
    pub ordinal: i64,
    pub status: TrialStatus,
    pub config: String,
    pub error: Option<String>,
    pub device: Option<String>,
    pub best_epoch: Option<i64>,
    pub test_acc: Option<f64>,
    pub test_loss: Option<f64>,
    pub train_seconds: Option<f64>,
    pub images_per_sec: Option<f64>,
    /// The checkpoint folder recorded when the trial finished.
    pub checkpoint: Option<String>,
    /// The trial's own checkpoint folder, relative to the database's folder (see
    /// [`Store::beside`]); a version-1 database's trials used `checkpoints/<sweep>/<key>`.
    pub checkpoint_dir: Option<String>,
    /// The last epoch of a pruned trial (schema 3 on).
    pub pruned_epoch: Option<i64>,
}

/// A claimed trial and the worker that ran it last, from [`Backend::worker_trials`].
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerTrial {
    /// The trial's id.
    pub id: i64,
    /// Its position in the sweep (0-based).
    pub ordinal: i64,
    /// Its key (the hash of its configuration).
    pub key: String,
    /// Where it stands now.
    pub status: TrialStatus,
    /// `host:pid:start` of the process that claimed it last ([`Worker`]'s id).
    pub worker: Option<String>,
    /// The device it ran on (`cpu`, `cuda:0`).
    pub device: Option<String>,
    /// Seconds since the worker's last heartbeat, by the database server's clock (the
    /// workers' clocks may differ from the reader's).
    pub heartbeat_age: Option<f64>,
    /// How many times a worker has claimed it.
    pub attempts: i64,
    /// The last epoch recorded (0 before the first).
    pub epochs_done: i64,
    /// The epochs its configuration asks for.
    pub epochs: Option<i64>,
}

/// One trial found by [`Backend::find_trials`], with its sweep's name.
#[derive(Clone, Debug, PartialEq)]
pub struct TrialDetail {
    pub sweep: String,
    pub trial: TrialRecord,
}

/// How a user names a trial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrialRef {
    Id(i64),
    /// The start of its key (taken literally: no wildcards).
    KeyPrefix(String),
}

/// One recorded epoch. A value SQLite could not keep (NaN is stored as NULL) is `None`.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRow {
    pub epoch: i64,
    pub train_loss: Option<f64>,
    pub train_acc: Option<f64>,
    pub valid_loss: Option<f64>,
    pub valid_acc: Option<f64>,
    pub lr: Option<f64>,
    pub seconds: Option<f64>,
    pub images_per_sec: Option<f64>,
}

/// A trial's test accuracy on one class.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassRow {
    pub class_index: i64,
    pub class_name: String,
    pub correct: i64,
    pub total: i64,
    pub accuracy: f64,
}

/// One cell of a trial's confusion matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfusionCell {
    pub true_class: i64,
    pub predicted_class: i64,
    pub count: i64,
}

/// A class accuracy of one trial of a sweep, with what the per-class table shows beside it
/// ([`Backend::sweep_class_accuracy`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SweepClassRow {
    pub trial_id: i64,
    pub arch: Option<String>,
    pub test_acc: Option<f64>,
    pub class_index: i64,
    pub accuracy: f64,
}

/// A pruning decision as recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionRow {
    pub trial_id: i64,
    pub epoch: i64,
    pub rule: String,
    pub rung: Option<i64>,
    /// The trial's (first) objective then.
    pub value: Option<f64>,
    pub compared_with: i64,
    pub cutoff: Option<f64>,
    pub stop: bool,
}

/// A pruned trial with the decision that stopped it (absent when none was recorded at its
/// last epoch).
#[derive(Clone, Debug, PartialEq)]
pub struct PrunedRow {
    pub trial_id: i64,
    pub pruned_epoch: Option<i64>,
    /// The epochs it was planned to run.
    pub epochs: Option<i64>,
    pub rule: Option<String>,
    pub rung: Option<i64>,
    pub value: Option<f64>,
    pub cutoff: Option<f64>,
    pub compared_with: Option<i64>,
}

/// A sweep's training, in epochs: run so far, and planned without pruning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochWork {
    pub ran: i64,
    pub planned: Option<i64>,
}

/// A finished trial's point for the accuracy-against-time front.
#[derive(Clone, Debug, PartialEq)]
pub struct ParetoRow {
    pub trial_id: i64,
    /// The validation accuracy of its best epoch.
    pub valid_acc: Option<f64>,
    pub train_seconds: f64,
    pub test_acc: Option<f64>,
    pub best_epoch: Option<i64>,
}

/// A sweep's trials with their epochs, as a sampler that learns from results sees them
/// inside [`Backend::propose_and_claim`]'s transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchHistory {
    pub sweep_id: i64,
    /// Every trial of the sweep, whatever its status, in ordinal order: the sampler chooses
    /// (typically `done` and `pruned` as observations, `running` as points being evaluated).
    pub trials: Vec<HistoryTrial>,
    /// One more than the largest ordinal in the sweep (0 for an empty sweep).
    pub next_ordinal: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HistoryTrial {
    pub id: i64,
    pub key: String,
    pub ordinal: i64,
    pub status: TrialStatus,
    /// The stored configuration, JSON.
    pub config: String,
    /// Its recorded epochs in order (the objective per epoch is computed from these; the
    /// training seconds up to an epoch are the sum of `seconds`).
    pub epochs: Vec<EpochRow>,
}

/// The operations of a results store. Every backend implements all of them with the same
/// meaning; the SQLite one is [`SqliteBackend`]. Reads of an older schema (a read-only open
/// leaves it as it is) answer as if the newer tables were empty.
pub trait Backend {
    // --- Sweeps.

    /// Creates the sweep if it is new, else updates its spec. Returns its id.
    ///
    /// A name already recorded from a *different* sweep is refused
    /// ([`DbError::SweepConflict`]): the two would share one trial queue. "Different" means:
    /// the spec text differs *and* the set of resolved trial configs (`configs`) differs from
    /// the stored trials'. The same text is a re-run or resume (even after an upgrade changed
    /// how configs are resolved), and the same trials under edited text (a comment, the
    /// description, the file moved) is still the same experiment; anything else (a grid point
    /// added, removed or changed) is another sweep and needs its own `--name`.
    fn upsert_sweep(&self, s: &NewSweep, configs: &dyn Fn() -> ConfigSet) -> Result<i64>;

    /// The check [`Backend::upsert_sweep`] makes, without writing: `Err(SweepConflict)` when
    /// sweep `name` is recorded from other trials, so a `run` can refuse before it loads data
    /// (works on a read-only store).
    fn check_sweep(
        &self,
        name: &str,
        spec: &str,
        spec_path: &str,
        configs: &dyn Fn() -> ConfigSet,
    ) -> Result<()>;

    fn finish_sweep(&self, sweep_id: i64) -> Result<()>;

    /// The id of sweep `name` ([`DbError::NoSuchSweep`] when there is none).
    fn sweep_id(&self, name: &str) -> Result<i64>;

    /// The most recently started sweep, for `report` without a name.
    fn latest_sweep(&self) -> Result<Option<String>>;

    /// The greatest sweep name below `name` that starts with `prefix` (the run before it in
    /// a series such as `nightly-<date>`).
    fn sweep_before(&self, name: &str, prefix: &str) -> Result<Option<String>>;

    fn sweep(&self, sweep_id: i64) -> Result<Option<SweepRecord>>;

    // --- Trials: the run loop's writes.

    /// Adds the trials that are not in the sweep yet (identified by key); returns how many.
    fn insert_trials(&self, sweep_id: i64, trials: &[NewTrial]) -> Result<usize>;

    /// Puts failed and diverged trials of the sweep back in the queue.
    fn requeue_failed(&self, sweep_id: i64) -> Result<usize>;

    /// Atomically takes the next trial to run, in ordinal order: pending, interrupted, or
    /// running under a worker that is gone (its process no longer exists on this host, or its
    /// heartbeat is older than `stale`).
    fn claim_next(
        &self,
        sweep_id: i64,
        worker: &Worker,
        device: &str,
        stale: Duration,
    ) -> Result<Option<Claimed>>;

    /// In one write transaction: reads the sweep's trials with their epochs, asks `propose`
    /// for new trials (a configuration once per seed), inserts them and claims the first for
    /// `worker` (running, as after [`Backend::claim_next`]; the others pending). Nothing is
    /// written when `propose` returns none. For
    /// samplers that learn from results (TPE): no other process can claim or propose between
    /// the read and the insert, so two workers never propose from the same history.
    ///
    /// `propose` runs while the store's write lock is held (other workers' epoch writes
    /// wait): it must be quick and must not touch the store. Its trial's key must be new in
    /// the sweep (an existing key is an error and nothing is written).
    fn propose_and_claim(
        &self,
        sweep_id: i64,
        worker: &Worker,
        device: &str,
        propose: &mut dyn FnMut(&SearchHistory) -> Vec<NewTrial>,
    ) -> Result<Option<Claimed>>;

    /// Tells other workers the trial's worker is alive.
    fn heartbeat(&self, trial_id: i64) -> Result<()>;

    /// Records one finished epoch, and a heartbeat (one transaction).
    fn record_epoch(&self, trial_id: i64, r: &EpochRecord) -> Result<()>;

    /// Makes the trial's epoch rows equal `history` (one transaction): used when its epochs
    /// are final, and rows an earlier attempt recorded past them must go.
    fn sync_epochs(&self, trial_id: i64, history: &[EpochRecord]) -> Result<()>;

    /// Records a finished trial with its test evaluation, per-class accuracy and confusion
    /// matrix (one transaction); its status becomes `done`.
    fn finish_trial(&self, trial_id: i64, f: &Finished) -> Result<()>;

    /// Sets a trial's status (failed, diverged, interrupted, ...) with an optional error text;
    /// failed and diverged trials get a finishing time.
    fn set_status(
        &self,
        trial_id: i64,
        status: TrialStatus,
        error: Option<&str>,
        best_epoch: Option<usize>,
    ) -> Result<()>;

    /// Marks a trial stopped by a pruning rule after `epoch`; its epochs stay, it is not
    /// evaluated on the test set.
    fn prune_trial(&self, trial_id: i64, epoch: usize) -> Result<()>;

    /// Records a decision (once: a replayed one is already there).
    fn record_decision(
        &self,
        trial_id: i64,
        rule: &str,
        value: f64,
        d: &crate::prune::Decision,
    ) -> Result<()>;

    // --- What the pruner reads.

    /// The other trials' results at `epoch` of sweep `sweep_id` (not `trial_id`'s): per
    /// trial `[valid_acc, valid_loss, training seconds up to that epoch]`.
    fn results_at(&self, sweep_id: i64, trial_id: i64, epoch: usize) -> Result<Vec<[f64; 3]>>;

    /// A trial's own training seconds up to `epoch`.
    fn seconds_to(&self, trial_id: i64, epoch: usize) -> Result<f64>;

    /// Trials of the sweep that have finished (done or pruned), for the median rule's start-up.
    fn finished_count(&self, sweep_id: i64) -> Result<usize>;

    /// The decision already taken for `trial_id` at `epoch`, if any (a resumed trial replays
    /// it rather than deciding again against results that have changed since).
    fn decision(&self, trial_id: i64, epoch: usize) -> Result<Option<crate::prune::Decision>>;

    /// The epoch at which a rule stopped `trial_id`, if one did.
    fn stopped_at(&self, trial_id: i64) -> Result<Option<usize>>;

    // --- Readers (report, compare, plot, html, estimate).

    /// Calls `f` with each trial of the sweep in ordinal order, one row at a time (a sweep
    /// may hold a great many); an error from `f` stops the walk and is returned.
    fn for_each_trial(
        &self,
        sweep_id: i64,
        f: &mut dyn FnMut(TrialRecord) -> Result<()>,
    ) -> Result<()>;

    /// How many of the sweep's trials have one of `statuses`.
    fn count_trials(&self, sweep_id: i64, statuses: &[TrialStatus]) -> Result<usize> {
        Ok(self
            .status_counts(sweep_id)?
            .into_iter()
            .filter(|(s, _)| statuses.contains(s))
            .map(|(_, n)| n)
            .sum())
    }

    /// The sweep's trial counts per status, in the order of the status words.
    fn status_counts(&self, sweep_id: i64) -> Result<Vec<(TrialStatus, usize)>>;

    /// The trials `by` names, in id order, at most `limit`.
    fn find_trials(&self, by: &TrialRef, limit: usize) -> Result<Vec<TrialDetail>>;

    /// A trial's epochs in order.
    fn epochs(&self, trial_id: i64) -> Result<Vec<EpochRow>>;

    /// A trial's per-class test accuracy, by class index.
    fn class_accuracy(&self, trial_id: i64) -> Result<Vec<ClassRow>>;

    /// A trial's confusion matrix cells, row (true class) by row.
    fn confusion(&self, trial_id: i64) -> Result<Vec<ConfusionCell>>;

    /// The class names of the sweep's per-class rows, by class index.
    fn class_names(&self, sweep_id: i64) -> Result<Vec<String>>;

    /// The sweep's per-class accuracies, best test accuracy first (then trial id, class
    /// index), at most `limit` rows.
    fn sweep_class_accuracy(&self, sweep_id: i64, limit: usize) -> Result<Vec<SweepClassRow>>;

    /// Every decision a pruning rule took on the sweep's trials, by trial and epoch.
    fn sweep_decisions(&self, sweep_id: i64) -> Result<Vec<DecisionRow>>;

    /// The sweep's pruned trials with the decision that stopped each, latest stop first
    /// (then highest objective, then trial id).
    fn pruned_trials(&self, sweep_id: i64) -> Result<Vec<PrunedRow>>;

    /// The epochs the sweep ran, and those its trials would run without pruning.
    fn epoch_work(&self, sweep_id: i64) -> Result<EpochWork>;

    /// The sweep's finished (done) trials with a training time, by id: each with the
    /// validation accuracy of its best epoch.
    fn pareto_inputs(&self, sweep_id: i64) -> Result<Vec<ParetoRow>>;

    /// The sweep's trials that some worker has claimed (running, finished or stopped), in
    /// ordinal order, with who ran them last and how long ago that worker's heartbeat was:
    /// `cifar-sweep status`.
    fn worker_trials(&self, sweep_id: i64) -> Result<Vec<WorkerTrial>>;

    /// Average seconds per image of the epochs recorded for `arch` on `device` (at batch size
    /// `batch`, or any with `None`), counting a validation image as `eval_share` of a
    /// training one; each trial's images come from its config over a training set of
    /// `train_images`. `None` when nothing is recorded.
    fn seconds_per_image(
        &self,
        arch: &str,
        device: &str,
        batch: Option<usize>,
        eval_share: f64,
        train_images: usize,
    ) -> Result<Option<f64>>;

    /// The SQLite backend, when this is it (its own tests edit the file behind the API).
    fn as_sqlite(&self) -> Option<&SqliteBackend> {
        None
    }
}

/// An open results store: the backend's operations ([`Backend`], reached through `Deref`),
/// where it lives, and its schema version.
pub struct Store {
    backend: Box<dyn Backend>,
    /// The database file, or a PostgreSQL server's URL (without its password).
    pub path: PathBuf,
    /// The schema version as opened: a read-only open leaves an older database as it is.
    pub version: i64,
    /// The folder trials' checkpoint folders are relative to: beside a SQLite file unless
    /// `--checkpoint-dir` says otherwise; a PostgreSQL store has one only when given.
    checkpoints: Option<PathBuf>,
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;
    fn deref(&self) -> &(dyn Backend + 'static) {
        &*self.backend
    }
}

/// `--db` as a PostgreSQL URL, when it is one.
fn url_of(db: &Path) -> Option<&str> {
    self::postgres::is_url(db).then(|| db.to_str()).flatten()
}

/// What `db` holds, found out without writing anything: a SQLite file (see
/// [`sqlite::probe`]) or a PostgreSQL database (connecting to it).
pub fn probe(db: &Path) -> Result<Probe> {
    match url_of(db) {
        Some(url) => PgBackend::probe(url),
        None => sqlite::probe(db),
    }
}

/// Whether `run` could use or create the store `db`, without writing: see
/// [`sqlite::check_creatable`]; a PostgreSQL database must be reachable, and empty or ours.
pub fn check_creatable(db: &Path) -> Result<()> {
    match url_of(db) {
        Some(url) => PgBackend::probe(url).map(drop),
        None => sqlite::check_creatable(db),
    }
}

impl Store {
    fn sqlite(b: SqliteBackend) -> Store {
        Store {
            path: b.path.clone(),
            version: b.version,
            checkpoints: Some(b.checkpoints.clone()),
            backend: Box::new(b),
        }
    }

    fn postgres(b: PgBackend) -> Store {
        Store {
            path: PathBuf::from(&b.server),
            version: b.version,
            checkpoints: b.checkpoints().map(Path::to_path_buf),
            backend: Box::new(b),
        }
    }

    /// Opens (creating if needed) and migrates the store `db`: for `run` and `train` only.
    /// Another program's database is refused, never given our tables.
    pub fn open(db: &Path) -> Result<Store> {
        Self::open_with_checkpoints(db, None)
    }

    /// [`Store::open`], with trials' checkpoint folders under `checkpoints` (by default
    /// beside a SQLite file; a PostgreSQL store needs it to claim a trial).
    pub fn open_with_checkpoints(db: &Path, checkpoints: Option<&Path>) -> Result<Store> {
        match url_of(db) {
            Some(url) => PgBackend::open(url, checkpoints).map(Store::postgres),
            None => SqliteBackend::open(db, checkpoints).map(Store::sqlite),
        }
    }

    /// Opens an existing cifar-sweep database for writing, without creating, migrating or
    /// changing its journal mode (a second connection of a running sweep: the heartbeat).
    pub fn open_existing(db: &Path) -> Result<Store> {
        match url_of(db) {
            Some(url) => PgBackend::open_existing(url).map(Store::postgres),
            None => SqliteBackend::open_existing(db).map(Store::sqlite),
        }
    }

    /// Opens an existing cifar-sweep database read-only (report, show, plot, compare): the
    /// store is never created, migrated or written, and an older schema is read as it is.
    pub fn open_read_only(db: &Path) -> Result<Store> {
        match url_of(db) {
            Some(url) => PgBackend::open_read_only(url).map(Store::postgres),
            None => SqliteBackend::open_read_only(db).map(Store::sqlite),
        }
    }

    /// Whether this store is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        self.backend.as_sqlite().is_none()
    }

    /// `rel` (read from the database) as a path in the checkpoints' folder; `None` when it is
    /// absolute or leaves the folder (`..`), or there is no such folder: a hand-edited or
    /// foreign database must not make us write, or read, anywhere else.
    pub fn beside(&self, rel: &str) -> Option<PathBuf> {
        under(self.checkpoints.as_deref()?, rel)
    }
}

/// The folder a SQLite database's checkpoint folders are relative to: its own.
fn db_folder(db_path: &Path) -> PathBuf {
    db_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// `rel` inside `root`, when it is a plain relative path (see [`Store::beside`]).
fn under(root: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    let plain = !rel.as_os_str().is_empty()
        && rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    plain.then(|| root.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_words_round_trip_and_match_the_schema() {
        for s in TrialStatus::ALL {
            assert_eq!(s.as_str().parse::<TrialStatus>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
            // The CHECK constraint of the current schema lists every word.
            let schema = include_str!("schema_v3.sql");
            assert!(schema.contains(&format!("'{}'", s.as_str())), "{s}");
        }
        assert_eq!(
            "Done".parse::<TrialStatus>(),
            Err(UnknownStatus("Done".into()))
        );
        let open: Vec<TrialStatus> = TrialStatus::open().collect();
        assert_eq!(
            open,
            [
                TrialStatus::Pending,
                TrialStatus::Running,
                TrialStatus::Interrupted
            ]
        );
    }

    /// `rel` in the folder of the SQLite database `db_path`, as [`Store::beside`] places it.
    fn beside(db_path: &Path, rel: &str) -> Option<PathBuf> {
        under(&db_folder(db_path), rel)
    }

    #[test]
    fn beside_keeps_paths_in_the_database_folder() {
        let db = Path::new("/runs/results.db");
        assert_eq!(
            beside(db, "checkpoints/a/b"),
            Some(PathBuf::from("/runs/checkpoints/a/b"))
        );
        assert_eq!(
            beside(Path::new("results.db"), "x"),
            Some(PathBuf::from("./x"))
        );
        for bad in ["", "/etc", "../x", "a/../../b"] {
            assert_eq!(beside(db, bad), None, "{bad}");
        }
    }
}
