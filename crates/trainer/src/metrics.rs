//! Small metric types with update/compute, as in burn's examples, and the records a run
//! reports (per epoch, and the test evaluation): plain data shared by the training loop, the
//! checkpoints and the sweep crate.

use serde::{Deserialize, Serialize};

/// Running mean loss and accuracy over batches. Sums are f64 so the order of additions,
/// not the batch size, decides the last bits (and a resumed epoch continues them exactly).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Running {
    /// Sum over samples of the loss (batch mean times batch size).
    pub loss_sum: f64,
    /// Correct predictions so far.
    pub correct: u64,
    /// Samples so far.
    pub seen: u64,
}

impl Running {
    /// `mean_loss` is the batch's mean loss over `n` samples.
    pub fn update(&mut self, mean_loss: f64, correct: u64, n: u64) {
        self.loss_sum += mean_loss * n as f64;
        self.correct += correct;
        self.seen += n;
    }

    /// Mean loss per sample (0 before any).
    pub fn loss(&self) -> f64 {
        if self.seen == 0 {
            0.0
        } else {
            self.loss_sum / self.seen as f64
        }
    }

    /// Fraction correct (0 before any sample).
    pub fn accuracy(&self) -> f64 {
        if self.seen == 0 {
            0.0
        } else {
            self.correct as f64 / self.seen as f64
        }
    }
}

/// A confusion matrix: `cells[true][predicted]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    /// `classes x classes` counts.
    pub cells: Vec<Vec<u64>>,
}

impl Confusion {
    /// An empty matrix for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self {
            cells: vec![vec![0; classes]; classes],
        }
    }

    /// Counts each `(truth, predicted)` pair.
    pub fn update(&mut self, truth: &[u32], predicted: &[u32]) {
        for (&t, &p) in truth.iter().zip(predicted) {
            self.cells[t as usize][p as usize] += 1;
        }
    }

    /// `(correct, total)` for each true class.
    pub fn per_class(&self) -> Vec<(u64, u64)> {
        self.cells
            .iter()
            .enumerate()
            .map(|(i, row)| (row[i], row.iter().sum()))
            .collect()
    }

    /// Fraction on the diagonal (0 when empty).
    pub fn accuracy(&self) -> f64 {
        let (c, t) = self
            .per_class()
            .iter()
            .fold((0, 0), |(c, t), (ci, ti)| (c + ci, t + ti));
        if t == 0 {
            0.0
        } else {
            c as f64 / t as f64
        }
    }
}

/// What one finished epoch measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches (with dropout and augmentation on).
    pub train_loss: f64,
    /// Training accuracy over the same batches.
    pub train_acc: f64,
    /// Validation loss after the epoch (eval mode).
    pub valid_loss: f64,
    /// Validation accuracy after the epoch.
    pub valid_acc: f64,
    /// The learning rate at the start of the epoch.
    pub lr: f64,
    /// Wall time of the epoch, training and validation.
    pub seconds: f64,
    /// Training images per second (training part only).
    pub images_per_sec: f64,
}

/// The test-set evaluation of the best weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestReport {
    /// Mean test loss.
    pub loss: f64,
    /// Test accuracy.
    pub accuracy: f64,
    /// Test confusion matrix.
    pub confusion: Confusion,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_means() {
        let mut r = Running::default();
        r.update(2.0, 1, 2);
        r.update(1.0, 3, 4);
        assert!((r.loss() - 8.0 / 6.0).abs() < 1e-12);
        assert!((r.accuracy() - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(Running::default().loss(), 0.0);
    }

    #[test]
    fn confusion_matrix() {
        let mut c = Confusion::new(3);
        c.update(&[0, 0, 1, 2, 2, 2], &[0, 1, 1, 2, 0, 2]);
        assert_eq!(c.cells, vec![vec![1, 1, 0], vec![0, 1, 0], vec![1, 0, 2]]);
        assert_eq!(c.per_class(), vec![(1, 2), (1, 1), (2, 3)]);
        assert!((c.accuracy() - 4.0 / 6.0).abs() < 1e-12);
    }
}
