//! The sweep orchestrator: sweep files, grid expansion, the results database, the run loop
//! and the reports. The `cifar-sweep` binary is a thin layer over this crate.

pub mod compare;
pub mod estimate;
pub mod grid;
pub mod html;
pub mod plot;
pub mod proposer;
pub mod prune;
pub mod pruner;
pub mod replay;
pub mod report;
pub mod runner;
pub mod search;
pub mod slurm;
pub mod space;
pub mod spec;
pub mod store;
pub mod table;
pub mod tpe;

/// The orchestrator's errors. Their `Display` is the message a user sees; [`exit_code`]
/// maps them to the process's exit status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(transparent)]
    Db(#[from] store::DbError),
    #[error(transparent)]
    Trainer(#[from] trainer::Error),
    #[error(transparent)]
    Data(#[from] trainer::data::DataError),
    #[error("corrupt database content: {0}")]
    Corrupt(String),
    /// A command-line value the library refuses (the message names the flag).
    #[error("{0}")]
    BadArgument(String),
    #[error(transparent)]
    Slurm(#[from] slurm::SlurmError),
}

/// Exit statuses: 2 for input the user must fix, 1 for other failures.
pub fn exit_code(e: &Error) -> i32 {
    match e {
        Error::Spec(_) | Error::BadArgument(_) => 2,
        Error::Db(
            store::DbError::NotADatabase { .. }
            | store::DbError::TooNew { .. }
            | store::DbError::Foreign { .. }
            | store::DbError::Empty { .. }
            | store::DbError::Folder { .. }
            | store::DbError::Missing { .. }
            | store::DbError::BadPath { .. }
            | store::DbError::SweepConflict { .. }
            | store::DbError::PgUrl { .. }
            | store::DbError::PgConnect { .. }
            | store::DbError::NoCheckpointDir { .. },
        ) => 2,
        Error::Db(
            store::DbError::NoSuchSweep(_)
            | store::DbError::NoSuchTrial(_)
            | store::DbError::AmbiguousTrial { .. },
        ) => 2,
        Error::Trainer(trainer::Error::Device(..) | trainer::Error::Config(_)) => 2,
        Error::Slurm(e) => e.exit_code(),
        Error::Data(d) | Error::Trainer(trainer::Error::Data(d)) if d.is_user_error() => 2,
        _ => 1,
    }
}

/// An error and its causes on one line (`a: b: c`), for the database's error column.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
