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

/// Why a store could not be opened, read or written. The `Display` text is what the user sees:
/// it names the database (or server) and, where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The file at `path` is not a SQLite database, or is one whose header is damaged.
    #[error(
        "{path}: not a SQLite database (or it is corrupt); move it aside or pass another --db"
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// The database's schema is newer than [`SCHEMA_VERSION`]: a newer cifar-sweep wrote it.
    #[error(
        "{path}: schema version {found} is newer than this build understands ({SCHEMA_VERSION}); \
         use a newer cifar-sweep or another --db"
    )]
    TooNew {
        /// The database file, or the PostgreSQL server's URL.
        path: PathBuf,
        /// The schema version it records.
        found: i64,
    },
    /// The folder that would hold the database could not be created.
    #[error("{path}: cannot create the database folder: {source}")]
    Folder {
        /// The folder (or the path in it that is in the way).
        path: PathBuf,
        /// Why it could not be created.
        #[source]
        source: std::io::Error,
    },
    /// A database (SQLite or PostgreSQL) that is not ours: we never add our tables to it.
    #[error(
        "{path}: a SQLite database of another program (tables: {tables}), not a cifar-sweep \
         results database; pass another --db"
    )]
    Foreign {
        /// The database file, or the PostgreSQL server's URL.
        path: PathBuf,
        /// What was found instead (the table names), to help the user recognise it.
        tables: String,
    },
    /// A database without any tables, opened by a command that only reads.
    #[error(
        "{path}: empty, not a cifar-sweep results database yet (only `run` and `train` create \
         one); pass another --db"
    )]
    Empty {
        /// The database file, or the PostgreSQL server's URL.
        path: PathBuf,
    },
    /// A file system error on the database's file or folder, other than SQLite's own.
    #[error("{path}: {source}")]
    Io {
        /// The path the operation was on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    // The SQLite error is part of the message and deliberately not a `source`: rusqlite's error
    // repeats its own source's text, so a chain printer (`{:#}`) said it three times.
    /// An error from SQLite itself.
    #[error("{path}: {error}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error, shown in the message (see the comment above).
        error: rusqlite::Error,
    },
    /// The database file does not exist, for a command that only reads.
    #[error("{path}: no results database yet; run a sweep first")]
    Missing {
        /// The path given as `--db`.
        path: PathBuf,
    },
    /// A path stored in the database (a trial's checkpoint folder) is absolute or leaves its
    /// folder, so it is not used (see [`Store::beside`]).
    #[error("{path}: {what} is {value:?}, which is not a plain relative path; was the database edited by hand?")]
    BadPath {
        /// The database file, or the PostgreSQL server's URL.
        path: PathBuf,
        /// Which value it was, such as `trial 12: checkpoint_dir`.
        what: String,
        /// The stored text.
        value: String,
    },
    /// Sweep `name` is already recorded from another sweep file with other trials
    /// (see [`Backend::upsert_sweep`]).
    #[error(
        "{path}: sweep `{name}` was recorded from {stored_path} and {new_path} describes other \
         trials under the same name; run it under another name (--name NAME) or use another --db"
    )]
    SweepConflict {
        /// The database file, or the PostgreSQL server's URL.
        path: PathBuf,
        /// The sweep's name, as given by the file or `--name`.
        name: String,
        /// The sweep file the recorded sweep came from.
        stored_path: String,
        /// The sweep file of this run.
        new_path: String,
    },
    /// `--db` looks like a PostgreSQL URL but does not parse as one.
    #[error("{server}: not a valid PostgreSQL URL ({error}); the form is postgres://USER@HOST:PORT/DATABASE")]
    PgUrl {
        /// The URL as given, without its password.
        server: String,
        /// Why it does not parse.
        error: String,
    },
    /// The PostgreSQL server could not be reached, or refused us, on the first connection.
    #[error("{server}: cannot connect to the PostgreSQL server: {error}")]
    PgConnect {
        /// The server's URL, without its password.
        server: String,
        /// The connection error.
        error: String,
    },
    /// The connection was lost and every reconnection failed until the retry window
    /// (`CIFAR_SWEEP_PG_RETRY_SECS`) ran out.
    #[error(
        "{server}: the connection to the PostgreSQL server was lost and could not be made \
         again within {seconds} s (CIFAR_SWEEP_PG_RETRY_SECS): {error}"
    )]
    PgLost {
        /// The server's URL, without its password.
        server: String,
        /// How long reconnecting was tried, in seconds.
        seconds: f64,
        /// The last connection error.
        error: String,
    },
    /// An error the PostgreSQL server answered a statement with (or a value it returned that we
    /// cannot read, such as an unknown status word).
    #[error("{server}: {error}")]
    Postgres {
        /// The server's URL, without its password.
        server: String,
        /// The server's error, or what could not be read.
        error: String,
    },
    /// A PostgreSQL store was asked to claim a trial without `--checkpoint-dir`: the database has
    /// no folder that every worker shares.
    #[error(
        "{server}: a PostgreSQL store has no folder of its own for checkpoints; pass \
         --checkpoint-dir DIR (a folder every worker can reach)"
    )]
    NoCheckpointDir {
        /// The server's URL, without its password.
        server: String,
    },
    /// A sweep name that is not in the database.
    #[error("no sweep named `{0}` in the database")]
    NoSuchSweep(String),
    /// A trial reference ([`TrialRef`]) that matches no trial.
    #[error("no trial `{0}` in the database (give its id, or key:PREFIX of its key)")]
    NoSuchTrial(String),
    /// A key prefix that matches several trials.
    #[error("`{given}` is the start of several trials' keys: {matches}; give more of the key")]
    AmbiguousTrial {
        /// The prefix as the user gave it.
        given: String,
        /// The first ten matching trials (id, key, sweep), comma-separated.
        matches: String,
    },
}

/// The store's results: [`DbError`] unless said otherwise.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// What a database path holds, as [`probe`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Nothing at the path.
    Missing,
    /// A 0-byte file, or a SQLite database without tables: `run` may create the schema in it.
    Empty,
    /// A cifar-sweep database at schema `version` (at most [`SCHEMA_VERSION`]).
    Ours {
        /// The schema version recorded in the file.
        version: i64,
    },
}

/// A trial's state, stored as its lower-case name (the `status` column's CHECK constraint
/// lists the same words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrialStatus {
    /// Not run yet.
    Pending,
    /// Claimed by a worker, which keeps a heartbeat on it.
    Running,
    /// Trained and evaluated on the test set.
    Done,
    /// Training stopped with an error (kept in the trial's `error`).
    Failed,
    /// The loss became NaN or infinite.
    Diverged,
    /// Its worker stopped before it finished (Ctrl-C, a signal, a lost claim); a later run resumes
    /// it from its checkpoint.
    Interrupted,
    /// Stopped early by a pruning rule (see [`crate::prune`]); not evaluated on the test set.
    Pruned,
}

impl TrialStatus {
    /// Every status, in the order used by status counts and listings.
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

    /// Whether the status is one of [`SETTLED`](Self::SETTLED).
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
    /// The set of the given configurations (each digested as its JSON text).
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
    /// The sweep's name: its identity in the database.
    pub name: String,
    /// The sweep file's `description` (empty when it has none).
    pub description: String,
    /// The sweep file's text, kept as it was.
    pub spec: String,
    /// The sweep file's path, as given on the command line.
    pub spec_path: String,
    /// The host that runs the sweep (see [`hostname`]).
    pub host: String,
    /// The git revision (12 hex digits) of the working folder, when it is a git checkout.
    pub git_rev: Option<String>,
    /// The device the sweep runs on, as [`trainer::device::name`] spells it.
    pub device: String,
    /// The SHA-256 of the data set's files, so results on other data can be told apart.
    pub data_checksum: String,
}

/// A trial to add to a sweep: its identity (`key`, unique in the sweep), its position and
/// its resolved configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTrial {
    /// A hash of the resolved config and the data checksum: unique in the sweep, the same on a
    /// re-run, so a trial is never added twice.
    pub key: String,
    /// Its position in the expanded sweep (claims go in this order).
    pub ordinal: usize,
    /// The resolved training configuration, as stored (JSON).
    pub config: Value,
}

/// A trial taken by this worker ([`Backend::claim_next`], [`Backend::propose_and_claim`]).
#[derive(Debug)]
pub struct Claimed {
    /// The trial's row id.
    pub id: i64,
    /// The trial's key (see [`NewTrial::key`]).
    pub key: String,
    /// The stored configuration, JSON.
    pub config: String,
    /// The status before the claim: `pending` for a fresh start, else a resume from checkpoint.
    pub previous_status: TrialStatus,
    /// Where this trial's checkpoints live: this database's own folder for it.
    pub checkpoint_dir: PathBuf,
}

/// A finished trial's results ([`Backend::finish_trial`]).
pub struct Finished<'a> {
    /// The epoch (1-based) with the lowest validation loss, whose weights were tested.
    pub best_epoch: usize,
    /// That epoch's validation loss.
    pub best_valid_loss: f64,
    /// The evaluation of the best epoch's weights on the test set.
    pub test: &'a TestReport,
    /// The sum of its epochs' wall times (training and validation), in seconds.
    pub train_seconds: f64,
    /// Class names by index, for the per-class rows.
    pub classes: &'a [String],
    /// The checkpoint folder, as shown to the user.
    pub checkpoint: &'a str,
}

/// A sweep row.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepRecord {
    /// The sweep's row id.
    pub id: i64,
    /// The sweep's name.
    pub name: String,
    /// The sweep file's `description`.
    pub description: String,
    /// The sweep file's text.
    pub spec: String,
    /// The sweep file's path as given on the command line (`None` for rows older than the column).
    pub spec_path: Option<String>,
    /// The host that last ran the sweep.
    pub host: Option<String>,
    /// The git revision that last ran it, when it ran from a git checkout.
    pub git_rev: Option<String>,
    /// The device the sweep last ran on.
    pub device: Option<String>,
    /// The SHA-256 of the data it last ran on.
    pub data_checksum: Option<String>,
    /// When the sweep was first recorded, UTC, as `YYYY-MM-DD HH:MM:SS`.
    pub created_at: String,
    /// When a run of it last started (same format).
    pub started_at: Option<String>,
    /// When a run left none of its trials open ([`Backend::finish_sweep`]); `None` until then.
    pub finished_at: Option<String>,
}

/// A trial row as the readers use it (the config stays JSON text: each reader decides how
/// strict to be with one that no longer decodes).
#[derive(Clone, Debug, PartialEq)]
pub struct TrialRecord {
    /// The trial's row id (what users give to `show`).
    pub id: i64,
    /// The trial's key (see [`NewTrial::key`]).
    pub key: String,
    /// Its position in the expanded sweep.
    pub ordinal: i64,
    /// Where the trial stands.
    pub status: TrialStatus,
    /// The resolved configuration, JSON.
    pub config: String,
    /// Why it failed or diverged, when it did.
    pub error: Option<String>,
    /// The device it last ran on.
    pub device: Option<String>,
    /// The epoch (1-based) with the lowest validation loss, once known.
    pub best_epoch: Option<i64>,
    /// Test accuracy (a fraction, 0 to 1) of the best epoch's weights; only for `done` trials.
    pub test_acc: Option<f64>,
    /// Test loss of the best epoch's weights; only for `done` trials.
    pub test_loss: Option<f64>,
    /// The sum of its epochs' wall times, in seconds; only for finished (done or pruned)
    /// trials.
    pub train_seconds: Option<f64>,
    /// The mean of its epochs' training images per second; only for finished (done or
    /// pruned) trials.
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
    /// The name of the sweep the trial belongs to.
    pub sweep: String,
    /// The trial itself.
    pub trial: TrialRecord,
}

/// How a user names a trial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrialRef {
    /// Its row id.
    Id(i64),
    /// The start of its key (taken literally: no wildcards).
    KeyPrefix(String),
}

/// One recorded epoch. A value SQLite could not keep (NaN is stored as NULL) is `None`.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRow {
    /// 1-based.
    pub epoch: i64,
    /// Mean training loss over the epoch.
    pub train_loss: Option<f64>,
    /// Training accuracy over the epoch (a fraction).
    pub train_acc: Option<f64>,
    /// Validation loss after the epoch.
    pub valid_loss: Option<f64>,
    /// Validation accuracy after the epoch (a fraction).
    pub valid_acc: Option<f64>,
    /// The learning rate at the start of the epoch.
    pub lr: Option<f64>,
    /// Wall time of the epoch, training and validation.
    pub seconds: Option<f64>,
    /// Training images per second.
    pub images_per_sec: Option<f64>,
}

/// A trial's test accuracy on one class.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassRow {
    /// The class's index in the data set (0 to 9 for CIFAR-10).
    pub class_index: i64,
    /// The class's name, such as `airplane`.
    pub class_name: String,
    /// Test images of the class predicted correctly.
    pub correct: i64,
    /// Test images of the class.
    pub total: i64,
    /// `correct / total`.
    pub accuracy: f64,
}

/// One cell of a trial's confusion matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfusionCell {
    /// Row: the image's label.
    pub true_class: i64,
    /// Column: what the model predicted.
    pub predicted_class: i64,
    /// Test images with that label and that prediction.
    pub count: i64,
}

/// A class accuracy of one trial of a sweep, with what the per-class table shows beside it
/// ([`Backend::sweep_class_accuracy`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SweepClassRow {
    /// The trial's row id.
    pub trial_id: i64,
    /// The trial's architecture, from its config.
    pub arch: Option<String>,
    /// The trial's overall test accuracy.
    pub test_acc: Option<f64>,
    /// The class's index in the data set.
    pub class_index: i64,
    /// The trial's test accuracy on that class (a fraction).
    pub accuracy: f64,
}

/// A pruning decision as recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionRow {
    /// The trial's row id.
    pub trial_id: i64,
    /// The epoch (1-based) after which the rule decided.
    pub epoch: i64,
    /// The rule's name: `asha`, `median` or `asha-pareto`.
    pub rule: String,
    /// The ASHA rung (0-based); `None` for the median rule.
    pub rung: Option<i64>,
    /// The trial's (first) objective then.
    pub value: Option<f64>,
    /// How many trials' results at that epoch (this one included) the decision used.
    pub compared_with: i64,
    /// The value to beat (ASHA: the worst value still kept; median: the median); `None` when
    /// there were too few results to compare.
    pub cutoff: Option<f64>,
    /// Whether the trial was stopped.
    pub stop: bool,
}

/// A pruned trial with the decision that stopped it (absent when none was recorded at its
/// last epoch).
#[derive(Clone, Debug, PartialEq)]
pub struct PrunedRow {
    /// The trial's row id.
    pub trial_id: i64,
    /// The last epoch it ran.
    pub pruned_epoch: Option<i64>,
    /// The epochs it was planned to run.
    pub epochs: Option<i64>,
    /// The rule that stopped it, as in [`DecisionRow::rule`].
    pub rule: Option<String>,
    /// As in [`DecisionRow::rung`].
    pub rung: Option<i64>,
    /// As in [`DecisionRow::value`].
    pub value: Option<f64>,
    /// As in [`DecisionRow::cutoff`].
    pub cutoff: Option<f64>,
    /// As in [`DecisionRow::compared_with`].
    pub compared_with: Option<i64>,
}

/// A sweep's training, in epochs: run so far, and planned without pruning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochWork {
    /// Epochs recorded over all the sweep's trials.
    pub ran: i64,
    /// The sum of the trials' configured `epochs`; `None` when no trial has one.
    pub planned: Option<i64>,
}

/// A finished trial's point for the accuracy-against-time front.
#[derive(Clone, Debug, PartialEq)]
pub struct ParetoRow {
    /// The trial's row id.
    pub trial_id: i64,
    /// The validation accuracy of its best epoch.
    pub valid_acc: Option<f64>,
    /// Training time over all its epochs, in seconds.
    pub train_seconds: f64,
    /// Its test accuracy (a fraction).
    pub test_acc: Option<f64>,
    /// The epoch (1-based) whose weights were tested.
    pub best_epoch: Option<i64>,
}

/// A sweep's trials with their epochs, as a sampler that learns from results sees them
/// inside [`Backend::propose_and_claim`]'s transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchHistory {
    /// The sweep's row id.
    pub sweep_id: i64,
    /// Every trial of the sweep, whatever its status, in ordinal order: the sampler chooses
    /// (typically `done` and `pruned` as observations, `running` as points being evaluated).
    pub trials: Vec<HistoryTrial>,
    /// One more than the largest ordinal in the sweep (0 for an empty sweep).
    pub next_ordinal: usize,
}

/// One trial of a [`SearchHistory`].
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryTrial {
    /// The trial's row id.
    pub id: i64,
    /// The trial's key (see [`NewTrial::key`]).
    pub key: String,
    /// Its position in the sweep.
    pub ordinal: i64,
    /// Where it stands: a sampler learns from `done` and `pruned` ones.
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

    /// Marks the sweep finished now (its `finished_at`): the run loop calls it when no trial of
    /// the sweep is left open.
    fn finish_sweep(&self, sweep_id: i64) -> Result<()>;

    /// The id of sweep `name` ([`DbError::NoSuchSweep`] when there is none).
    fn sweep_id(&self, name: &str) -> Result<i64>;

    /// The most recently started sweep, for `report` without a name.
    fn latest_sweep(&self) -> Result<Option<String>>;

    /// The greatest sweep name below `name` that starts with `prefix` (the run before it in
    /// a series such as `nightly-<date>`).
    fn sweep_before(&self, name: &str, prefix: &str) -> Result<Option<String>>;

    /// Sweep `sweep_id`'s row; `None` when there is none.
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
