#![warn(missing_docs)]

//! The sweep orchestrator: sweep files, grid expansion, the results database, the run loop
//! and the reports. The `cifar-sweep` binary is a thin layer over this crate.

pub mod compare;
pub mod estimate;
pub mod exit;
pub mod grid;
pub mod html;
pub mod layout;
pub mod plan;
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
pub mod status;
pub mod store;
pub mod table;
pub mod tpe;

/// The orchestrator's errors. Their `Display` is the message a user sees; [`exit::of`]
/// maps them to the process's exit status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A sweep file that does not parse or check.
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    /// The results store failed or refused (see [`store::DbError`]).
    #[error(transparent)]
    Db(#[from] store::DbError),
    /// Training or evaluating a trial failed.
    #[error(transparent)]
    Trainer(#[from] trainer::Error),
    /// The CIFAR-10 data could not be found, read or verified.
    #[error(transparent)]
    Data(#[from] trainer::data::DataError),
    /// Content of the database that a reader cannot use, such as a stored config that no longer
    /// decodes or a sweep that vanished between two reads.
    #[error("corrupt database content: {0}")]
    Corrupt(String),
    /// A command-line value or a named thing the command refuses (the message says which).
    #[error("{0}")]
    BadArgument(String),
    /// Submitting the workers to Slurm failed (`slurm`).
    #[error(transparent)]
    Slurm(#[from] slurm::SlurmError),
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
