//! Helpers: run the binary, build temporary sweep files, read the database.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cifar-sweep"));
    c.env("RUST_LOG", "warn").env_remove("CIFAR_SWEEP_DB");
    default_signals(&mut c);
    c
}

/// The binary keeps stop signals that it inherits as ignored (`nohup`, background jobs); a
/// test suite started that way must still be able to interrupt it, so children start with
/// the default dispositions unless a test says otherwise.
pub fn default_signals(c: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
}

/// The real data for tests (imported once into target/cifar10-cache), or None to skip.
pub fn data_args() -> Option<Vec<String>> {
    let src = trainer::data::test_data_source()?;
    Some(vec![
        "--data-dir".into(),
        src.data_dir.display().to_string(),
        "--archive".into(),
        src.archive.unwrap().display().to_string(),
        "--url".into(),
        String::new(),
    ])
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn query_i64(db: &Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// `cifar-sweep run FILE --db DB --device cpu <data args>`, not started yet.
pub fn sweep_command(file: &Path, db: &Path, data: &[String]) -> Command {
    let mut c = bin();
    c.args([
        "run",
        file.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--device",
        "cpu",
    ])
    .args(data);
    c
}

/// [`sweep_command`], run to the end.
pub fn run_sweep(file: &Path, db: &Path, data: &[String]) -> Output {
    sweep_command(file, db, data).output().unwrap()
}

/// A tiny real search: 7 lenet configurations on 480 images, ASHA (η = 3) at epoch 1.
pub const TINY_SEARCH: &str = r#"name = "search"
samples = 7
sampler_seed = 3
objective = "valid_acc"
[data]
train_subset = 480
test_subset = 200
[base]
arch = "lenet"
epochs = 3
batch_size = 16
[space]
lr = { log_uniform = [1e-3, 0.3] }
momentum = { uniform = [0.0, 0.9] }
[prune]
kind = "asha"
reduction_factor = 3
grace_epochs = 1
"#;
