//! Checkpoints: tensors in safetensors files and a JSON file (`state.json`) that holds the
//! resolved config, the position in training, the metrics so far, and the names of the
//! tensor files it belongs with.
//!
//! Every file is written to a temporary name, fsynced and renamed, and the JSON is written
//! last and names the tensor files: a crash at any moment leaves either the previous
//! checkpoint or the new one, never a torn mix.

use crate::config::TrainConfig;
use crate::metrics::Running;
use crate::train::EpochRecord;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub epoch: usize,
    pub valid_loss: f64,
    /// The safetensors file holding the weights of that epoch.
    pub file: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub config: TrainConfig,
    pub data_checksum: String,
    /// Completed epochs.
    pub epoch: usize,
    /// Batches of epoch `epoch + 1` already done (0 at an epoch boundary).
    pub next_batch: usize,
    /// Training metrics of the unfinished epoch so far.
    pub partial: Running,
    pub partial_seconds: f64,
    pub opt_step: u64,
    /// One record per completed epoch.
    pub history: Vec<EpochRecord>,
    pub best: Option<Best>,
    /// Weights and optimiser state of this position.
    pub state_file: String,
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

/// Saves named tensors as safetensors, atomically.
pub fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let tmp = tmp_name(path);
    let res = candle_core::safetensors::save(tensors, &tmp)
        .map_err(Error::from)
        .and_then(|_| {
            fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .and_then(|_| fs::rename(&tmp, path))
                .and_then(|_| sync_dir(path))
                .map_err(|e| Error::io(path, e))
        });
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, device).map_err(|e| Error::BadCheckpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Writes the state JSON (after its tensor files) and removes tensor files no longer named.
pub fn commit(dir: &Path, meta: &CheckpointMeta) -> Result<()> {
    let json = serde_json::to_vec_pretty(meta).map_err(|e| Error::Json {
        path: dir.join(STATE_FILE),
        source: e,
    })?;
    atomic_write(&dir.join(STATE_FILE), &json)?;
    let keep: Vec<&str> = std::iter::once(meta.state_file.as_str())
        .chain(meta.best.as_ref().map(|b| b.file.as_str()))
        .collect();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".safetensors") && !keep.contains(&name.as_str()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// Reads the checkpoint in `dir`, if there is one.
pub fn read_meta(dir: &Path) -> Result<Option<CheckpointMeta>> {
    let path = dir.join(STATE_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::BadCheckpoint {
            path,
            reason: e.to_string(),
        })
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
