//! The trainer's typed errors. Only the binary turns them into `anyhow` reports.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error("unknown architecture `{name}` (known: {known})")]
    UnknownArch { name: String, known: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("checkpoint {path} is unusable: {reason}")]
    BadCheckpoint { path: PathBuf, reason: String },
    #[error("device `{0}` is not available: {1}")]
    Device(String, String),
    #[error("interrupted")]
    Interrupted,
    #[error("recording the epoch failed: {0}")]
    Observer(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
