//! Where results live on disk, relative to the results database: its default path, each
//! trial's checkpoint folder and the default chart folder. Paths inside the database are
//! relative to its folder, so a results folder can be moved or copied whole.
//!
//! ```text
//! results/results.db                          the database (--db)
//! results/checkpoints/<store_id>/<sweep>/<key>/  a trial's checkpoints (schema v2 on)
//! results/checkpoints/<sweep>/<key>/             the same, recorded before schema v2
//! results/plots/<sweep>/                       `plot`'s charts (--out)
//! ```

use std::path::{Path, PathBuf};

/// The results database when `--db` and `CIFAR_SWEEP_DB` are not given.
pub const DEFAULT_DB: &str = "results/results.db";

/// The folder of every trial's checkpoints, beside the database.
const CHECKPOINTS: &str = "checkpoints";

/// The folder of `plot`'s charts, beside the database.
const PLOTS: &str = "plots";

/// A trial's checkpoint folder as recorded in the database (`trials.checkpoint_dir`),
/// relative to the database's folder. The database's own `store_id` keeps two databases in
/// one folder from sharing (and "resuming") each other's checkpoints (see schema_v2.sql).
/// Joined with `/` on every platform: it is stored, and read back where it was written.
pub fn checkpoint_dir(store_id: &str, sweep: &str, key: &str) -> String {
    format!("{CHECKPOINTS}/{store_id}/{sweep}/{key}")
}

/// Where a trial's checkpoints were before schema version 2 recorded their folder.
pub fn legacy_checkpoint_dir(sweep: &str, key: &str) -> String {
    format!("{CHECKPOINTS}/{sweep}/{key}")
}

/// [`checkpoint_dir`] as an SQL expression, for the statement that fixes a trial's folder at
/// its first claim (the backends' claim is one `UPDATE`, so the folder is built in SQL):
/// `store_id`, `sweep` and `key` are SQL expressions of text, such as a column or a
/// subquery. Made by [`checkpoint_dir`] itself, so the layout is spelled only there.
pub fn checkpoint_dir_sql(store_id: &str, sweep: &str, key: &str) -> String {
    sql_concat(checkpoint_dir(
        &sql_part(store_id),
        &sql_part(sweep),
        &sql_part(key),
    ))
}

/// [`legacy_checkpoint_dir`] as an SQL expression over the SQL expressions `sweep` and
/// `key`: how a version-1 database's trials, which recorded no folder, are read.
pub fn legacy_checkpoint_dir_sql(sweep: &str, key: &str) -> String {
    sql_concat(legacy_checkpoint_dir(&sql_part(sweep), &sql_part(key)))
}

/// The SQL expression `expr` as a part of a path that [`sql_concat`] turns into SQL: it
/// closes the string literal around it, concatenates `expr` and opens a new literal.
fn sql_part(expr: &str) -> String {
    format!("' || {expr} || '")
}

/// A path made of [`sql_part`]s and plain text (the layout's folder names and `/`, which hold
/// no quote) as one SQL string concatenation, without the empty literals at its ends.
fn sql_concat(path: String) -> String {
    debug_assert!(!CHECKPOINTS.contains('\''));
    let sql = format!("'{path}'");
    let sql = sql.strip_prefix("'' || ").unwrap_or(&sql);
    sql.strip_suffix(" || ''").unwrap_or(sql).to_string()
}

/// The default folder of a sweep's charts: `plots/<sweep>` beside the database at `db`.
pub fn plots_dir(db: &Path, sweep: &str) -> PathBuf {
    db.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(PLOTS)
        .join(sweep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_beside_the_database() {
        assert_eq!(
            plots_dir(Path::new(DEFAULT_DB), "s"),
            Path::new("results/plots/s")
        );
        assert_eq!(plots_dir(Path::new("r.db"), "s"), Path::new("./plots/s"));
        assert_eq!(
            checkpoint_dir("ab12", "grid", "6f3a"),
            "checkpoints/ab12/grid/6f3a"
        );
        assert_eq!(
            legacy_checkpoint_dir("grid", "6f3a"),
            "checkpoints/grid/6f3a"
        );
    }

    #[test]
    fn checkpoint_folders_as_sql() {
        assert_eq!(
            checkpoint_dir_sql("(SELECT id)", "s.name", "t.trial_key"),
            "'checkpoints/' || (SELECT id) || '/' || s.name || '/' || t.trial_key"
        );
        assert_eq!(
            legacy_checkpoint_dir_sql("s.name", "trial_key"),
            "'checkpoints/' || s.name || '/' || trial_key"
        );
    }
}
