//! The resolved configuration of one training run. It is saved next to every checkpoint and,
//! serialised as JSON, is what the sweep crate hashes into a trial's identity.

use serde::{Deserialize, Serialize};

/// The optimiser, with PyTorch's update rules (see [`crate::optim`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD, with optional momentum, Nesterov and weight decay.
    Sgd,
    /// Adam, weight decay added to the gradient (L2).
    Adam,
    /// AdamW: weight decay applied to the weights (decoupled).
    Adamw,
}

/// The learning-rate schedule over the run (see [`crate::schedule`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// The same learning rate every epoch.
    Constant,
    /// Multiply by `gamma` every `step_size` epochs.
    Step,
    /// Cosine annealing from `lr` to 0 over the run (after the warm-up, if any).
    Cosine,
    /// Linear warm-up for `warmup` epochs, then linear decay to 0.
    Onecycle,
}

/// Every hyperparameter of a run. Defaults follow the tutorial: SGD, lr 0.01, batch 20,
/// 30 epochs, a 20% validation split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The architecture, a name in [`crate::models::ARCHS`].
    pub arch: String,
    /// Epochs to train.
    pub epochs: usize,
    /// Training images per batch (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// The peak learning rate (the schedule scales it).
    pub lr: f64,
    /// Which optimiser.
    pub optimizer: OptimizerKind,
    /// SGD momentum; Adam's beta1 is fixed at 0.9.
    pub momentum: f64,
    /// SGD: Nesterov momentum (needs `momentum > 0`).
    pub nesterov: bool,
    /// L2 penalty (SGD, Adam) or decoupled decay (AdamW).
    pub weight_decay: f64,
    /// The learning-rate schedule.
    pub schedule: ScheduleKind,
    /// Warm-up length in epochs (may be fractional), for every schedule.
    pub warmup: f64,
    /// `step` schedule: epochs between decays.
    pub step_size: usize,
    /// `step` schedule: the decay factor (see `step_size`).
    pub gamma: f64,
    /// Weight of the uniform distribution mixed into the targets, in `[0, 1)`.
    pub label_smoothing: f64,
    /// Dropout probability of the architectures that have dropout layers.
    pub dropout: f64,
    /// Random crop (4 px padding) and horizontal flip on training batches.
    pub augment: bool,
    /// Seeds everything random in a run: split, initial weights, order, masks, crops.
    pub seed: u64,
    /// Fraction of the training set held out for validation (model selection).
    pub valid_fraction: f64,
    /// Train on only the first N images of the (shuffled) training part; for smoke runs.
    pub train_subset: Option<usize>,
    /// Evaluate on only the first N test images; for smoke runs.
    pub test_subset: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            arch: "lenet".into(),
            epochs: 30,
            batch_size: 20,
            lr: 0.01,
            optimizer: OptimizerKind::Sgd,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            schedule: ScheduleKind::Constant,
            warmup: 0.0,
            step_size: 10,
            gamma: 0.1,
            label_smoothing: 0.0,
            dropout: 0.0,
            augment: false,
            seed: 0,
            valid_fraction: 0.2,
            train_subset: None,
            test_subset: None,
        }
    }
}

impl TrainConfig {
    /// Checks every value that would otherwise fail (or silently misbehave) mid-run, except
    /// `arch`: the architecture is checked against the models registry by whoever builds
    /// the model ([`crate::train::Session::new`], the sweep file parser), so that the
    /// configuration does not depend on the models. Returns `(field, message)` so callers can
    /// point at the offending key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let finite_pos = |v: f64| v.is_finite() && v > 0.0;
        if self.epochs == 0 {
            return Err(("epochs", "epochs must be at least 1".into()));
        }
        if self.batch_size == 0 {
            return Err(("batch_size", "batch_size must be at least 1".into()));
        }
        if !finite_pos(self.lr) {
            return Err(("lr", format!("lr must be > 0, got {}", self.lr)));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err((
                "momentum",
                format!("momentum must be in [0, 1), got {}", self.momentum),
            ));
        }
        if self.nesterov && self.momentum == 0.0 {
            return Err(("nesterov", "nesterov needs momentum > 0".into()));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err((
                "weight_decay",
                format!("weight_decay must be >= 0, got {}", self.weight_decay),
            ));
        }
        if !(self.warmup.is_finite() && self.warmup >= 0.0 && self.warmup < self.epochs as f64) {
            return Err((
                "warmup",
                format!(
                    "warmup must be in [0, epochs) = [0, {}), got {}",
                    self.epochs, self.warmup
                ),
            ));
        }
        if self.step_size == 0 {
            return Err(("step_size", "step_size must be at least 1".into()));
        }
        if !(self.gamma > 0.0 && self.gamma <= 1.0) {
            return Err((
                "gamma",
                format!("gamma must be in (0, 1], got {}", self.gamma),
            ));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err((
                "label_smoothing",
                format!(
                    "label_smoothing must be in [0, 1), got {}",
                    self.label_smoothing
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err((
                "dropout",
                format!("dropout must be in [0, 1), got {}", self.dropout),
            ));
        }
        if !(self.valid_fraction > 0.0 && self.valid_fraction < 1.0) {
            return Err((
                "valid_fraction",
                format!(
                    "valid_fraction must be in (0, 1), got {}",
                    self.valid_fraction
                ),
            ));
        }
        if self.train_subset == Some(0) {
            return Err(("train_subset", "train_subset must be at least 1".into()));
        }
        crate::data::split_sizes(
            crate::data::TRAIN_IMAGES,
            self.valid_fraction,
            self.train_subset,
            self.batch_size,
        )?;
        if self.test_subset == Some(0) {
            return Err(("test_subset", "test_subset must be at least 1".into()));
        }
        Ok(())
    }
}
