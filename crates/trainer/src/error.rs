//! The trainer's typed errors. Only the binary turns them into `anyhow` reports.

use std::path::PathBuf;

/// The trainer's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the trainer can fail with. [`Error::Config`] and user errors of
/// [`Error::Data`] are the caller's to fix (the binary exits 2 for them); the rest are faults.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed (shapes, device, out of memory).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Loading, importing or downloading the data set failed.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// No architecture of that name in [`crate::models::ARCHS`].
    #[error("unknown architecture `{name}` (known: {known})")]
    UnknownArch {
        /// The name asked for.
        name: String,
        /// The registered names, comma-separated.
        known: String,
    },
    /// A configuration the trainer refuses, as `field: message`.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (a checkpoint) did not parse.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Where and why it did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// A checkpoint file is damaged or does not fit the run; resuming sets it aside.
    #[error("checkpoint {path} is unusable: {reason}")]
    BadCheckpoint {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The device asked for (`--device`) and why it cannot be used.
    #[error("device `{0}` is not available: {1}")]
    Device(String, String),
    /// Stopped on request.
    #[error("interrupted")]
    Interrupted,
    /// [`crate::train::Observer::on_epoch`] failed (the sweep crate could not record the
    /// epoch); its message.
    #[error("recording the epoch failed: {0}")]
    Observer(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
