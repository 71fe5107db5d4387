//! Checkpoints: tensors in safetensors files and a JSON file (`state.json`) that holds the
//! resolved config, the position in training, the metrics so far, and the names, sizes and
//! SHA-256 of the tensor files it belongs with.
//!
//! Every file is written to a temporary name, fsynced and renamed, and the JSON is written
//! last and names the tensor files: a crash at any moment leaves either the previous
//! checkpoint or the new one, never a torn mix. The previous position is kept too
//! (`state.prev.json` and its tensor files), so a checkpoint damaged after the fact (a disk
//! that lost writes, a file truncated or zeroed by hand) still leaves an intact one to resume
//! from: see [`crate::train::run`], which tries `state.json`, then `state.prev.json`, then
//! starts afresh, moving damaged files aside rather than deleting them.

use crate::config::TrainConfig;
use crate::metrics::{EpochRecord, Running};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The current checkpoint, written last, so it only ever names complete tensor files.
pub const STATE_FILE: &str = "state.json";
/// The checkpoint before the current one, the fallback when `state.json` is damaged.
pub const PREV_STATE_FILE: &str = "state.prev.json";

/// The epoch with the lowest validation loss so far: its weights are the ones tested.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Best {
    /// 1-based.
    pub epoch: usize,
    /// Its validation loss (the selection criterion).
    pub valid_loss: f64,
    /// The safetensors file holding the weights of that epoch.
    pub file: String,
}

/// Size and SHA-256 (hex) of a tensor file as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    /// Length in bytes: a truncated file fails this before it is hashed.
    pub bytes: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
}

impl FileSum {
    /// The sum of `bytes` (as they are written, so the check covers what reached the disk).
    pub fn of(bytes: &[u8]) -> FileSum {
        FileSum {
            bytes: bytes.len() as u64,
            sha256: Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }
}

/// `state.json`: where a run stands and which files hold it. A checkpoint is only resumed
/// by the same config on the same data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// The run's resolved configuration.
    pub config: TrainConfig,
    /// The data set's checksum ([`crate::data::Cifar10::checksum`]).
    pub data_checksum: String,
    /// Completed epochs.
    pub epoch: usize,
    /// Batches of epoch `epoch + 1` already done (0 at an epoch boundary).
    pub next_batch: usize,
    /// Training metrics of the unfinished epoch so far.
    pub partial: Running,
    /// Training time of the unfinished epoch so far (its record counts it).
    pub partial_seconds: f64,
    /// The optimiser's step count (Adam's bias correction needs it).
    pub opt_step: u64,
    /// One record per completed epoch.
    pub history: Vec<EpochRecord>,
    /// The best epoch so far, `None` before the first.
    pub best: Option<Best>,
    /// Weights and optimiser state of this position.
    pub state_file: String,
    /// Size and checksum of every tensor file named above. Checkpoints written before the
    /// checksums existed have none; their tensor files are then only checked by parsing.
    #[serde(default)]
    pub files: BTreeMap<String, FileSum>,
}

impl CheckpointMeta {
    /// The tensor files this checkpoint needs.
    pub fn file_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.state_file.as_str()).chain(self.best.as_ref().map(|b| b.file.as_str()))
    }

    /// Checks that the file names are plain names inside the checkpoint folder.
    pub fn check_names(&self) -> std::result::Result<(), String> {
        for name in self.file_names() {
            check_file_name(name)?;
        }
        for name in self.files.keys() {
            check_file_name(name)?;
        }
        Ok(())
    }

    /// Checks that the position read back is one this config can reach with `batches`
    /// batches per epoch. A checkpoint claiming more than that would otherwise end the run
    /// at once (epoch 99 of 4 "finished" without training) or index past the data.
    pub fn validate(&self, batches: usize) -> std::result::Result<(), String> {
        self.check_names()?;
        let epochs = self.config.epochs;
        if self.epoch > epochs {
            return Err(format!("epoch {} is beyond the run's {epochs}", self.epoch));
        }
        if self.history.len() != self.epoch {
            return Err(format!(
                "{} epoch records for {} completed epochs",
                self.history.len(),
                self.epoch
            ));
        }
        if let Some((i, r)) = self
            .history
            .iter()
            .enumerate()
            .find(|(i, r)| r.epoch != i + 1)
        {
            return Err(format!("epoch record {} is numbered {}", i + 1, r.epoch));
        }
        if self.next_batch > 0 && (self.next_batch >= batches || self.epoch >= epochs) {
            return Err(format!(
                "batch {} of epoch {} is not inside the run ({batches} batches, {epochs} epochs)",
                self.next_batch,
                self.epoch + 1
            ));
        }
        match &self.best {
            None if self.epoch > 0 => {
                return Err(format!("{} epochs completed but no best epoch", self.epoch))
            }
            Some(b) if b.epoch == 0 || b.epoch > self.epoch => {
                return Err(format!(
                    "best epoch {} is not a completed epoch (1..={})",
                    b.epoch, self.epoch
                ))
            }
            Some(b) if self.history[b.epoch - 1].valid_loss.to_bits() != b.valid_loss.to_bits() => {
                return Err(format!(
                    "best valid loss {} is not epoch {}'s ({})",
                    b.valid_loss,
                    b.epoch,
                    self.history[b.epoch - 1].valid_loss
                ))
            }
            _ => {}
        }
        if self.state_file.is_empty() {
            return Err("names no state file".into());
        }
        if !self.files.is_empty() {
            if let Some(missing) = self.file_names().find(|n| !self.files.contains_key(*n)) {
                return Err(format!("no checksum for {missing}"));
            }
        }
        Ok(())
    }
}

/// A tensor file named in `state.json` must be a plain file name: anything else could make a
/// resume read (or a commit delete) outside the checkpoint folder.
fn check_file_name(name: &str) -> std::result::Result<(), String> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !Path::new(name).is_absolute();
    if plain {
        Ok(())
    } else {
        Err(format!(
            "tensor file name {name:?} is not a plain file name in the checkpoint folder"
        ))
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync of the folder).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_name(path);
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

fn tmp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        // Directories cannot be opened for fsync everywhere; it is best effort.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Saves named tensors as safetensors, atomically; returns the file's size and checksum.
///
/// The file is serialised in memory and written with [`atomic_write`] (rather than by
/// candle's `save`) so that the checksum is of exactly the bytes written and a write error
/// (a full disk) names the file.
pub fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<FileSum> {
    let bytes = safetensors::tensor::serialize(tensors, None).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    atomic_write(path, &bytes)?;
    Ok(FileSum::of(&bytes))
}

/// Loads a tensor file without a checksum to check it against (a best-weights file named by
/// hand, for example).
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    load_tensors_checked(path, None, device)
}

/// Loads a tensor file, first checking its size and checksum against `expected` if given.
pub fn load_tensors_checked(
    path: &Path,
    expected: Option<&FileSum>,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let bad = |reason: String| Error::BadCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = fs::read(path).map_err(|e| bad(e.to_string()))?;
    if let Some(want) = expected {
        if bytes.len() as u64 != want.bytes {
            return Err(bad(format!(
                "{} bytes, {} were written (truncated or overwritten)",
                bytes.len(),
                want.bytes
            )));
        }
        let got = FileSum::of(&bytes);
        if got.sha256 != want.sha256 {
            return Err(bad(format!(
                "SHA-256 {} does not match the {} recorded when it was written",
                got.sha256, want.sha256
            )));
        }
    }
    candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| bad(e.to_string()))
}

/// Writes the state JSON (after its tensor files), keeping the state it replaces as
/// `state.prev.json`, and removes tensor files neither of them names.
pub fn commit(dir: &Path, meta: &CheckpointMeta) -> Result<()> {
    let path = dir.join(STATE_FILE);
    let prev = dir.join(PREV_STATE_FILE);
    let json = serde_json::to_vec_pretty(meta).map_err(|e| Error::Json {
        path: path.clone(),
        source: e,
    })?;
    // A crash between the rename and the write leaves only state.prev.json, which a resume
    // falls back to: an older position, never a wrong one.
    match fs::rename(&path, &prev) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&path, e)),
    }
    atomic_write(&path, &json)?;
    let mut keep: Vec<String> = meta.file_names().map(String::from).collect();
    if let Ok(Some(p)) = read_meta_file(&prev) {
        keep.extend(p.file_names().map(String::from));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".safetensors") && !keep.contains(&name) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// Reads the checkpoint in `dir`, if there is one (only its JSON and names are checked).
pub fn read_meta(dir: &Path) -> Result<Option<CheckpointMeta>> {
    read_meta_file(&dir.join(STATE_FILE))
}

/// Reads a state JSON file: `None` if it does not exist, [`Error::BadCheckpoint`] if it is
/// not a state (unreadable JSON, or tensor file names that leave the folder).
pub fn read_meta_file(path: &Path) -> Result<Option<CheckpointMeta>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let meta: CheckpointMeta =
        serde_json::from_slice(&bytes).map_err(|e| Error::BadCheckpoint {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    meta.check_names().map_err(|reason| Error::BadCheckpoint {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(Some(meta))
}

/// Moves damaged checkpoint files out of the way (renamed with a `.damaged-<time>` suffix,
/// which no resume or clean-up reads or removes), so that they can be inspected; returns the
/// new names.
pub fn set_aside(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut moved = Vec::new();
    for name in names {
        if check_file_name(name).is_err() {
            continue;
        }
        let from = dir.join(name);
        let to = dir.join(format!("{name}.damaged-{stamp}"));
        match fs::rename(&from, &to) {
            Ok(()) => moved.push(to),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("could not move {} aside: {e}", from.display()),
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let bad = dir.path().join("missing/a.json");
        assert!(atomic_write(&bad, b"x").is_err());
    }

    #[test]
    fn tensors_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let t = Tensor::new(&[1f32, 2.0, 3.0], &Device::Cpu).unwrap();
        let map = HashMap::from([("w".to_string(), t)]);
        save_tensors(&p, &map).unwrap();
        let back = load_tensors(&p, &Device::Cpu).unwrap();
        assert_eq!(back["w"].to_vec1::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
        fs::write(&p, b"garbage").unwrap();
        let e = load_tensors(&p, &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("w.safetensors is unusable"), "{e}");
    }

    #[test]
    fn a_failed_tensor_write_names_the_file() {
        // What a full disk does too: the write fails, and the error must say which file.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gone/state-e1.safetensors");
        let t = Tensor::new(&[1f32], &Device::Cpu).unwrap();
        let e = save_tensors(&p, &HashMap::from([("w".to_string(), t)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("gone/state-e1.safetensors"), "{e}");
    }

    #[test]
    fn checksums_catch_truncated_and_zeroed_tensor_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let t = Tensor::new(&[1f32, 2.0, 3.0], &Device::Cpu).unwrap();
        let sum = save_tensors(&p, &HashMap::from([("w".to_string(), t)])).unwrap();
        assert_eq!(sum, FileSum::of(&fs::read(&p).unwrap()));
        assert!(load_tensors_checked(&p, Some(&sum), &Device::Cpu).is_ok());
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
        let e = load_tensors_checked(&p, Some(&sum), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
        fs::write(&p, vec![0u8; bytes.len()]).unwrap();
        let e = load_tensors_checked(&p, Some(&sum), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("SHA-256"), "{e}");
    }

    fn meta(epoch: usize) -> CheckpointMeta {
        let record = |e: usize| EpochRecord {
            epoch: e,
            train_loss: 1.0,
            train_acc: 0.5,
            valid_loss: 2.0 - e as f64 / 10.0,
            valid_acc: 0.5,
            lr: 0.1,
            seconds: 1.0,
            images_per_sec: 1.0,
        };
        CheckpointMeta {
            config: TrainConfig {
                epochs: 4,
                ..Default::default()
            },
            data_checksum: "x".into(),
            epoch,
            next_batch: 0,
            partial: Running::default(),
            partial_seconds: 0.0,
            opt_step: 0,
            history: (1..=epoch).map(record).collect(),
            best: (epoch > 0).then(|| Best {
                epoch,
                valid_loss: record(epoch).valid_loss,
                file: format!("best-e{epoch}.safetensors"),
            }),
            state_file: format!("state-e{epoch}.safetensors"),
            files: Default::default(),
        }
    }

    #[test]
    fn impossible_positions_and_foreign_paths_are_refused() {
        for e in 0..=4 {
            assert_eq!(meta(e).validate(10), Ok(()), "epoch {e}");
        }
        let bad = |m: CheckpointMeta, want: &str| {
            let e = m.validate(10).unwrap_err();
            assert!(e.contains(want), "{e} (wanted {want})");
        };
        bad(
            CheckpointMeta {
                epoch: 99,
                ..meta(4)
            },
            "epoch 99 is beyond the run's 4",
        );
        bad(
            CheckpointMeta {
                epoch: 3,
                ..meta(2)
            },
            "2 epoch records for 3",
        );
        let mut m = meta(3);
        m.history[1].epoch = 7;
        bad(m, "epoch record 2 is numbered 7");
        bad(
            CheckpointMeta {
                next_batch: 10,
                ..meta(2)
            },
            "batch 10 of epoch 3",
        );
        bad(
            CheckpointMeta {
                next_batch: 1,
                ..meta(4)
            },
            "batch 1 of epoch 5",
        );
        bad(
            CheckpointMeta {
                best: None,
                ..meta(2)
            },
            "no best epoch",
        );
        let mut m = meta(2);
        m.best.as_mut().unwrap().epoch = 3;
        bad(m, "best epoch 3");
        let mut m = meta(2);
        m.best.as_mut().unwrap().valid_loss = 0.0;
        bad(m, "best valid loss");
        for name in ["../x.safetensors", "/tmp/x", "a\\b", "..", ""] {
            bad(
                CheckpointMeta {
                    state_file: name.into(),
                    ..meta(1)
                },
                "not a plain file name",
            );
        }
        let mut m = meta(1);
        m.files
            .insert("state-e1.safetensors".into(), FileSum::of(b"x"));
        bad(m, "no checksum for best-e1.safetensors");
    }

    #[test]
    fn commit_keeps_the_previous_state_and_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for e in 1..=3 {
            let m = meta(e);
            for f in m.file_names() {
                fs::write(d.join(f), b"t").unwrap();
            }
            commit(d, &m).unwrap();
        }
        assert_eq!(read_meta(d).unwrap().unwrap().epoch, 3);
        assert_eq!(
            read_meta_file(&d.join(PREV_STATE_FILE))
                .unwrap()
                .unwrap()
                .epoch,
            2
        );
        let mut left: Vec<String> = fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".safetensors"))
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "best-e2.safetensors",
                "best-e3.safetensors",
                "state-e2.safetensors",
                "state-e3.safetensors"
            ]
        );
        // Moved aside, never deleted, and out of the clean-up's way.
        let moved = set_aside(d, &["state.json", "../escape", "missing"]);
        assert_eq!(moved.len(), 1);
        assert!(moved[0].exists() && !d.join(STATE_FILE).exists());
    }

    #[test]
    fn metric_floats_survive_the_json_round_trip_bit_for_bit() {
        // A valid loss whose bits serde_json's default (fast, inexact) float parser got wrong
        // by one unit in the last place: a resumed run then reported a different loss than
        // an uninterrupted one.
        let v = f64::from_bits(4612359453676457165);
        let best = Best {
            epoch: 1,
            valid_loss: v,
            file: "best.safetensors".into(),
        };
        let back: Best = serde_json::from_str(&serde_json::to_string(&best).unwrap()).unwrap();
        assert_eq!(back.valid_loss.to_bits(), v.to_bits());
        for i in 0..10_000u64 {
            let x = f64::from_bits(0x3FF0_0000_0000_0000 + i * 0x0000_1234_5678_9ABD);
            let y: f64 = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
            assert_eq!(x.to_bits(), y.to_bits(), "{x}");
        }
    }
}
