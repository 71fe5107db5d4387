//! The exit statuses of `cifar-sweep` (README, "Exit status") and the one place an error
//! becomes one.

use crate::spec::SpecError;
use crate::store::DbError;
use crate::Error;
use trainer::data::DataError;

/// What the process tells its caller. The numbers are part of the interface: scripts and CI
/// gates test them, so a variant's value never changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for was done.
    Success = 0,
    /// Anything that is not the user's input to fix: I/O, the database engine, a bug.
    Failure = 1,
    /// Input the user must fix: a sweep file, a flag, a database, a device, a data folder.
    BadInput = 2,
    /// The sweep ran, but some trials failed (they are named on stderr).
    TrialsFailed = 3,
    /// `compare` found a regression.
    Regression = 4,
    /// Stopped by a signal after saving the current trial; running again resumes it.
    Interrupted = 130,
}

impl Exit {
    /// The number the process exits with.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// The exit status of a failure: the first error in `e`'s chain (`e`, then its
/// [`source`](std::error::Error::source)s) whose type this crate knows decides. The outermost
/// wins because it is the most specific about whose fault the failure is; errors behind
/// `anyhow` context or a foreign wrapper are still found. Unknown errors are failures.
pub fn of(e: &(dyn std::error::Error + 'static)) -> Exit {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(x) = typed(e) {
            return x;
        }
        cur = e.source();
    }
    Exit::Failure
}

/// The status of one error of a type this crate knows, else `None`.
fn typed(e: &(dyn std::error::Error + 'static)) -> Option<Exit> {
    if let Some(e) = e.downcast_ref::<Error>() {
        // Checked variant by variant: `transparent` variants forward `source()` past the
        // error they wrap, so a walk from here would skip it.
        return Some(match e {
            Error::Spec(_) | Error::BadArgument(_) => Exit::BadInput,
            Error::Db(d) => db(d),
            Error::Trainer(t) => trainer(t),
            Error::Data(d) => data(d),
            Error::Corrupt(_) => Exit::Failure,
            Error::Slurm(e) => e.exit(),
        });
    }
    if let Some(e) = e.downcast_ref::<crate::slurm::SlurmError>() {
        return Some(e.exit());
    }
    if e.is::<SpecError>() {
        return Some(Exit::BadInput);
    }
    if let Some(d) = e.downcast_ref::<DbError>() {
        return Some(db(d));
    }
    if let Some(t) = e.downcast_ref::<trainer::Error>() {
        return Some(trainer(t));
    }
    e.downcast_ref::<DataError>().map(data)
}

fn db(e: &DbError) -> Exit {
    match e {
        // A file that is not ours, too new, a path that cannot be a database, another
        // sweep under the name, or a sweep or trial that is not there.
        DbError::NotADatabase { .. }
        | DbError::TooNew { .. }
        | DbError::Foreign { .. }
        | DbError::Empty { .. }
        | DbError::Folder { .. }
        | DbError::Missing { .. }
        | DbError::BadPath { .. }
        | DbError::SweepConflict { .. }
        | DbError::NoSuchSweep(_)
        | DbError::NoSuchTrial(_)
        | DbError::AmbiguousTrial { .. }
        | DbError::PgUrl { .. }
        | DbError::PgConnect { .. }
        | DbError::NoCheckpointDir { .. } => Exit::BadInput,
        _ => Exit::Failure,
    }
}

fn trainer(e: &trainer::Error) -> Exit {
    match e {
        trainer::Error::Device(..) | trainer::Error::Config(_) => Exit::BadInput,
        trainer::Error::Data(d) => data(d),
        _ => Exit::Failure,
    }
}

fn data(e: &DataError) -> Exit {
    if e.is_user_error() {
        Exit::BadInput
    } else {
        Exit::Failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A foreign error that wraps a typed one, as `anyhow` context or an I/O layer would.
    #[derive(Debug, thiserror::Error)]
    #[error("while doing something")]
    struct Wrapper(#[source] Box<dyn std::error::Error + Send + Sync>);

    #[test]
    fn the_documented_numbers() {
        let codes: Vec<i32> = [
            Exit::Success,
            Exit::Failure,
            Exit::BadInput,
            Exit::TrialsFailed,
            Exit::Regression,
            Exit::Interrupted,
        ]
        .iter()
        .map(|e| e.code())
        .collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 130]);
    }

    #[test]
    fn typed_causes_map_wherever_they_sit_in_the_chain() {
        let missing = || DbError::NoSuchSweep("s".into());
        assert_eq!(of(&missing()), Exit::BadInput);
        assert_eq!(of(&Error::from(missing())), Exit::BadInput);
        assert_eq!(of(&Wrapper(Box::new(missing()))), Exit::BadInput);
        let ctx = anyhow::Error::from(missing()).context("reading the sweep");
        assert_eq!(of(ctx.as_ref()), Exit::BadInput);
        let device = trainer::Error::Device("cuda:9".into(), "no such GPU".into());
        assert_eq!(of(&Wrapper(Box::new(device))), Exit::BadInput);
        assert_eq!(
            of(&Error::BadArgument("--max-drop nan".into())),
            Exit::BadInput
        );
    }

    #[test]
    fn failures_of_the_machine_are_not_the_users() {
        let io = std::io::Error::other("disk on fire");
        assert_eq!(of(&io), Exit::Failure);
        assert_eq!(of(&Error::Corrupt("x".into())), Exit::Failure);
        let io_err = DbError::Io {
            path: PathBuf::from("r.db"),
            source: std::io::Error::other("disk on fire"),
        };
        assert_eq!(of(&Wrapper(Box::new(io_err))), Exit::Failure);
        assert_eq!(of(anyhow::anyhow!("untyped").as_ref()), Exit::Failure);
    }
}
