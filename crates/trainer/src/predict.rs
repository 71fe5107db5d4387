//! Inference from a saved run: a [`Session`] holding a checkpoint's best weights, and the
//! classes it predicts for images. The sweep crate's sample-image chart uses it, so that
//! models, normalisation and checkpoint files stay the trainer's business.

use crate::checkpoint::{self, STATE_FILE};
use crate::data::{make_batch, ImageSet, Normalization};
use crate::train::Session;
use crate::{Error, Result};
use candle_core::{Device, D};
use std::path::Path;

/// Images per forward pass: memory stays flat however many images are asked for.
const PREDICT_BATCH: usize = 500;

impl Session {
    /// A session with the best weights (lowest validation loss) of the checkpoint in `dir`,
    /// on `device`. The weights file is checked against the size and SHA-256 recorded with
    /// it (where the checkpoint records them), so damaged weights are refused, not used.
    pub fn from_checkpoint(dir: &Path, device: &Device) -> Result<Session> {
        let meta = checkpoint::read_meta(dir)?.ok_or_else(|| Error::BadCheckpoint {
            path: dir.join(STATE_FILE),
            reason: "no checkpoint state".into(),
        })?;
        let best = meta.best.as_ref().ok_or_else(|| Error::BadCheckpoint {
            path: dir.to_path_buf(),
            reason: "the checkpoint has no best weights".into(),
        })?;
        let session = Session::new(&meta.config, device)?;
        let path = dir.join(&best.file);
        let tensors = checkpoint::load_tensors_checked(&path, meta.files.get(&best.file), device)?;
        session.load_weights(&tensors, &path)?;
        Ok(session)
    }

    /// The predicted class of the images `idx` of `set`, in eval mode (no dropout),
    /// normalised as in training, with the run's test-time augmentation (`tta`).
    pub fn predict(&self, set: &ImageSet, idx: &[usize]) -> Result<Vec<u32>> {
        let norm = Normalization::default();
        let mut classes = Vec::with_capacity(idx.len());
        for chunk in idx.chunks(PREDICT_BATCH) {
            let (x, _) = make_batch(set, chunk, &norm, None, &self.device)?;
            let logits = crate::train::tta_logits(self.model.as_ref(), &x, self.cfg.tta)?;
            classes.extend(logits.argmax(D::Minus1)?.to_vec1::<u32>()?);
        }
        Ok(classes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{Best, CheckpointMeta};
    use crate::data::testutil::synthetic_records;
    use crate::TrainConfig;
    use candle_core::Tensor;
    use std::collections::HashMap;

    /// Writes `session`'s weights as the best weights of a checkpoint in `dir`.
    fn save(session: &Session, dir: &Path, best: bool) {
        let tensors: HashMap<String, Tensor> = session
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let file = "best-1.safetensors".to_string();
        let sum = checkpoint::save_tensors(&dir.join(&file), &tensors).unwrap();
        let meta = CheckpointMeta {
            config: session.cfg.clone(),
            data_checksum: "synthetic".into(),
            epoch: 1,
            next_batch: 0,
            partial: Default::default(),
            partial_seconds: 0.0,
            opt_step: 0,
            history: Vec::new(),
            best: best.then(|| Best {
                epoch: 1,
                valid_loss: 1.0,
                file: file.clone(),
            }),
            state_file: file.clone(),
            files: [(file, sum)].into(),
        };
        checkpoint::commit(dir, &meta).unwrap();
    }

    #[test]
    fn a_checkpoint_predicts_what_its_model_computed() {
        let cfg = TrainConfig {
            dropout: 0.5,
            ..TrainConfig::default()
        };
        let device = Device::Cpu;
        let trained = Session::new(&cfg, &device).unwrap();
        // Weights unlike the seeded initialisation, so that only loading them can match.
        for (_, v) in &trained.vars {
            v.set(&v.as_tensor().affine(1.7, 0.01).unwrap()).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        save(&trained, dir.path(), true);

        let set = synthetic_records(37, 10, 5);
        let idx: Vec<usize> = (0..set.len()).rev().collect();
        let (x, _) = make_batch(&set, &idx, &Normalization::default(), None, &device).unwrap();
        let expected: Vec<u32> = trained
            .model
            .forward_t(&x, false)
            .unwrap()
            .argmax(D::Minus1)
            .unwrap()
            .to_vec1()
            .unwrap();

        let loaded = Session::from_checkpoint(dir.path(), &device).unwrap();
        assert_eq!(loaded.cfg, cfg);
        let got = loaded.predict(&set, &idx).unwrap();
        assert_eq!(got, expected);
        // Every image gets a class, and a fresh session (the seeded initialisation) does not
        // stand in for the checkpoint's weights.
        assert_eq!(got.len(), 37);
        let fresh = Session::new(&cfg, &device).unwrap();
        let differ = |s: &Session| {
            s.vars[0]
                .1
                .as_tensor()
                .sub(trained.vars[0].1.as_tensor())
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert_eq!(differ(&loaded), 0.0);
        assert!(differ(&fresh) > 0.0);
        // Chunked: more images than one forward pass takes give the same classes.
        let many: Vec<usize> = (0..PREDICT_BATCH + 3).map(|i| i % set.len()).collect();
        let classes = loaded.predict(&set, &many).unwrap();
        assert!(many.iter().zip(&classes).all(|(&i, &c)| c == got[36 - i]));
    }

    #[test]
    fn a_missing_or_damaged_checkpoint_is_refused() {
        let device = Device::Cpu;
        let dir = tempfile::tempdir().unwrap();
        let err = Session::from_checkpoint(dir.path(), &device).err().unwrap();
        assert!(err.to_string().contains("no checkpoint state"), "{err}");

        let session = Session::new(&TrainConfig::default(), &device).unwrap();
        save(&session, dir.path(), false);
        let err = Session::from_checkpoint(dir.path(), &device).err().unwrap();
        assert!(err.to_string().contains("no best weights"), "{err}");

        // Best weights whose bytes changed after they were written (same length).
        save(&session, dir.path(), true);
        let path = dir.path().join("best-1.safetensors");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(&path, bytes).unwrap();
        let err = Session::from_checkpoint(dir.path(), &device).err().unwrap();
        assert!(matches!(err, Error::BadCheckpoint { .. }), "{err}");
        assert!(err.to_string().contains("SHA-256"), "{err}");
    }
}
