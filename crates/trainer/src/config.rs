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

/// The nonlinearity after the convolutions and hidden linear layers (see
/// [`crate::models::activate`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `max(x, 0)`, fused into the preceding op on the CPU.
    #[default]
    Relu,
    /// `x * Phi(x)` with the exact (erf) normal CDF, PyTorch's `nn.GELU()`.
    Gelu,
}

/// The arithmetic of the convolutions and linear layers (see [`crate::models::Conv2d`]).
/// Everything else (batch norm, activations, the loss, the optimiser and the weights
/// themselves) stays in fp32 in every mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// IEEE single precision throughout, PyTorch's default dtype (and its default for
    /// matrix multiplications since 1.12). The default: what every earlier result used.
    #[default]
    Fp32,
    /// fp32 tensors, with CUDA's matrix multiplications (and so candle's im2col
    /// convolutions) allowed to round their inputs to TF32 on GPUs with tensor cores:
    /// PyTorch's default for cuDNN convolutions. Identical to `fp32` on the CPU.
    Tf32,
    /// Autocast-style mixed precision: convolutions and linear layers take bf16 copies of
    /// their input and weights and return fp32; the fp32 weights are the ones trained.
    Bf16,
}

/// Horizontal flips of the training images (beside `augment`'s own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlipKind {
    /// No flip.
    #[default]
    None,
    /// Each image mirrored with probability 1/2, drawn afresh every time.
    Random,
    /// airbench's alternating flip: each image has a seeded bit; it is mirrored in odd
    /// epochs (1, 3, ...) when the bit is set and in even epochs when it is not, so every
    /// two epochs see both versions.
    Alternate,
}

/// Test-time augmentation of the final test evaluation (see [`crate::train::tta_logits`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TtaKind {
    /// The images as they are.
    #[default]
    None,
    /// The mean of the logits of the image and its mirror image.
    Flip,
    /// airbench's level 2: half the `flip` logits of the image, a quarter each of those of
    /// the image shifted by one pixel diagonally, one way and the other (reflection
    /// padding).
    FlipTranslate,
}

/// `serde(skip_serializing_if)`: the fields added after the first results were recorded are
/// left out of the serialised config while they hold their default, so the JSON (and so the
/// trial identity the sweep crate hashes from it) of every configuration that does not use
/// them is what it was before they existed.
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// `serde(skip_serializing_if)` for the optional fields whose default is 1.
fn is_one(v: &f64) -> bool {
    *v == 1.0
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
    /// The activation function of every model (`relu` is the tutorial's; airbench's airnet
    /// recipe uses `gelu`).
    #[serde(skip_serializing_if = "is_default")]
    pub activation: Activation,
    /// Random translation of training images by up to this many pixels in x and y, with
    /// reflection padding (airbench's 2); 0 = off. Not with `augment`.
    #[serde(skip_serializing_if = "is_default")]
    pub translate: usize,
    /// Horizontal flips of training images (`none`, `random`, `alternate`). Not with
    /// `augment`, which flips at random itself.
    #[serde(skip_serializing_if = "is_default")]
    pub flip: FlipKind,
    /// Test-time augmentation of the final test evaluation (`none`, `flip`,
    /// `flip_translate`); validation is always plain.
    #[serde(skip_serializing_if = "is_default")]
    pub tta: TtaKind,
    /// airbench's lookahead, in `[0, 1)` (0 = off; airbench's 0.95): every
    /// [`crate::train::LOOKAHEAD_EVERY`] optimiser steps the averaged weights move toward
    /// the weights, `avg += (w - avg) * (1 - d)` with `d = lookahead^5 * (step / steps)^3`,
    /// and the weights are set to the average; after the last step they are set to it once
    /// more. Batch-norm running statistics are averaged too.
    #[serde(skip_serializing_if = "is_default")]
    pub lookahead: f64,
    /// Learning-rate multiplier of the batch-norm biases (their weight decay is divided by
    /// it, so the decay per step stays): airbench's `bias_scaler`, 64. 1 = off.
    #[serde(skip_serializing_if = "is_one")]
    pub bn_bias_lr_scale: f64,
    /// The fraction of `lr` the warm-up starts from, in `[0, 1)` (airbench's 0.2); at 0
    /// the warm-up starts from `lr / 1000`, as it always has.
    #[serde(skip_serializing_if = "is_default")]
    pub warmup_from: f64,
    /// The fraction of `lr` the `onecycle` and `cosine` schedules end at, in `[0, 1)`
    /// (airbench's triangle ends at 0.07); 0 = they decay to 0.
    #[serde(skip_serializing_if = "is_default")]
    pub anneal_to: f64,
    /// Split each training batch into micro-batches of this many images, forward and
    /// backward one at a time, and update once from their summed gradients (0 = off): the
    /// same step in a smaller working set, faster on the CPU for large batches. Batch norm
    /// then normalises by the micro-batches' statistics.
    #[serde(skip_serializing_if = "is_default")]
    pub micro_batch: usize,
    /// The arithmetic of convolutions and linear layers: `fp32`, `tf32` or `bf16` (see
    /// [`Precision`]).
    #[serde(skip_serializing_if = "is_default")]
    pub precision: Precision,
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
            activation: Activation::Relu,
            translate: 0,
            flip: FlipKind::None,
            tta: TtaKind::None,
            lookahead: 0.0,
            bn_bias_lr_scale: 1.0,
            warmup_from: 0.0,
            anneal_to: 0.0,
            micro_batch: 0,
            precision: Precision::Fp32,
        }
    }
}

/// The largest `translate`: reflection padding needs it below the image side (32), and
/// larger shifts leave little of the image.
pub const MAX_TRANSLATE: usize = 16;

impl TrainConfig {
    /// The fields serialised only when they differ from their default (see `is_default`),
    /// in declaration order. [`TrainConfig::to_json_full`] adds them back.
    pub const OPTIONAL_FIELDS: &'static [&'static str] = &[
        "activation",
        "translate",
        "flip",
        "tta",
        "lookahead",
        "bn_bias_lr_scale",
        "warmup_from",
        "anneal_to",
        "micro_batch",
        "precision",
    ];

    /// The config as a JSON object with every field, the [`TrainConfig::OPTIONAL_FIELDS`]
    /// included even at their defaults (for readers that look fields up by name; the
    /// trial identity uses the plain serialised form).
    pub fn to_json_full(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        if let serde_json::Value::Object(m) = &mut v {
            let mut put = |k: &str, x: serde_json::Value| {
                m.entry(k.to_string()).or_insert(x);
            };
            put("activation", serde_json::json!(self.activation));
            put("translate", serde_json::json!(self.translate));
            put("flip", serde_json::json!(self.flip));
            put("tta", serde_json::json!(self.tta));
            put("lookahead", serde_json::json!(self.lookahead));
            put("bn_bias_lr_scale", serde_json::json!(self.bn_bias_lr_scale));
            put("warmup_from", serde_json::json!(self.warmup_from));
            put("anneal_to", serde_json::json!(self.anneal_to));
            put("micro_batch", serde_json::json!(self.micro_batch));
            put("precision", serde_json::json!(self.precision));
        }
        v
    }

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
        if !(0.0..1.0).contains(&self.lookahead) {
            return Err((
                "lookahead",
                format!("lookahead must be in [0, 1), got {}", self.lookahead),
            ));
        }
        for (field, v) in [
            ("warmup_from", self.warmup_from),
            ("anneal_to", self.anneal_to),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err((field, format!("{field} must be in [0, 1), got {v}")));
            }
        }
        if !finite_pos(self.bn_bias_lr_scale) {
            return Err((
                "bn_bias_lr_scale",
                format!(
                    "bn_bias_lr_scale must be > 0, got {}",
                    self.bn_bias_lr_scale
                ),
            ));
        }
        if self.translate > MAX_TRANSLATE {
            return Err((
                "translate",
                format!(
                    "translate must be in [0, {MAX_TRANSLATE}] pixels, got {}",
                    self.translate
                ),
            ));
        }
        for (field, on) in [
            ("translate", self.translate > 0),
            ("flip", self.flip != FlipKind::None),
        ] {
            if on && self.augment {
                return Err((
                    field,
                    format!(
                        "{field} cannot be combined with augment (its own crop and flip); \
                         set augment = false"
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every optional field set away from its default.
    fn all_optional_set() -> TrainConfig {
        TrainConfig {
            activation: Activation::Gelu,
            translate: 2,
            flip: FlipKind::Alternate,
            tta: TtaKind::FlipTranslate,
            lookahead: 0.95,
            bn_bias_lr_scale: 64.0,
            warmup_from: 0.2,
            anneal_to: 0.07,
            micro_batch: 256,
            precision: Precision::Bf16,
            ..Default::default()
        }
    }

    #[test]
    fn optional_fields_are_left_out_at_their_default_and_kept_otherwise() {
        let keys = |v: serde_json::Value| -> Vec<String> {
            let serde_json::Value::Object(m) = v else {
                panic!("an object")
            };
            m.keys().cloned().collect()
        };
        let plain = keys(serde_json::to_value(TrainConfig::default()).unwrap());
        for f in TrainConfig::OPTIONAL_FIELDS {
            assert!(
                !plain.iter().any(|k| k == f),
                "{f} serialised at its default"
            );
        }
        // The JSON of a default config is the one recorded before the optional fields
        // existed, byte for byte, so trial identities (a hash of it) do not change.
        assert_eq!(plain.len(), 19);
        assert_eq!(
            serde_json::to_string(&TrainConfig::default()).unwrap(),
            r#"{"arch":"lenet","epochs":30,"batch_size":20,"lr":0.01,"optimizer":"sgd","momentum":0.0,"nesterov":false,"weight_decay":0.0,"schedule":"constant","warmup":0.0,"step_size":10,"gamma":0.1,"label_smoothing":0.0,"dropout":0.0,"augment":false,"seed":0,"valid_fraction":0.2,"train_subset":null,"test_subset":null}"#
        );
        let set = keys(serde_json::to_value(all_optional_set()).unwrap());
        let full = keys(TrainConfig::default().to_json_full());
        assert_eq!(set.len(), plain.len() + TrainConfig::OPTIONAL_FIELDS.len());
        let mut a = set.clone();
        let mut b = full.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "to_json_full names every field");
        // Both forms read back to the same config, and an old config (without the fields)
        // reads as their defaults.
        for c in [TrainConfig::default(), all_optional_set()] {
            let back: TrainConfig = serde_json::from_value(c.to_json_full()).unwrap();
            assert_eq!(back, c);
            let back: TrainConfig =
                serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
            assert_eq!(back, c);
        }
        let old: TrainConfig = serde_json::from_str(r#"{"arch": "cnn3", "lr": 0.1}"#).unwrap();
        assert_eq!(old.activation, Activation::Relu);
        let e = serde_json::from_str::<TrainConfig>(r#"{"activation": "tanh"}"#).unwrap_err();
        assert!(
            e.to_string().contains("relu") && e.to_string().contains("gelu"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod validate_tests {
    use super::*;

    #[test]
    fn translate_and_flip_are_checked_and_exclude_augment() {
        let ok = TrainConfig {
            translate: 2,
            flip: FlipKind::Alternate,
            ..Default::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let far = TrainConfig {
            translate: 17,
            ..Default::default()
        };
        assert_eq!(far.validate().unwrap_err().0, "translate");
        let both = TrainConfig {
            augment: true,
            ..ok.clone()
        };
        let (field, msg) = both.validate().unwrap_err();
        assert_eq!(field, "translate");
        assert!(msg.contains("augment"), "{msg}");
        let flip = TrainConfig {
            augment: true,
            flip: FlipKind::Random,
            ..Default::default()
        };
        assert_eq!(flip.validate().unwrap_err().0, "flip");
        for bad in [1.0, -0.1, f64::NAN] {
            let la = TrainConfig {
                lookahead: bad,
                ..Default::default()
            };
            assert_eq!(la.validate().unwrap_err().0, "lookahead", "{bad}");
        }
        for bad in [0.0, -1.0, f64::INFINITY] {
            let sc = TrainConfig {
                bn_bias_lr_scale: bad,
                ..Default::default()
            };
            assert_eq!(sc.validate().unwrap_err().0, "bn_bias_lr_scale", "{bad}");
        }
        for bad in [1.0, -0.1, f64::NAN] {
            let w = TrainConfig {
                warmup_from: bad,
                ..Default::default()
            };
            assert_eq!(w.validate().unwrap_err().0, "warmup_from", "{bad}");
            let a = TrainConfig {
                anneal_to: bad,
                ..Default::default()
            };
            assert_eq!(a.validate().unwrap_err().0, "anneal_to", "{bad}");
        }
    }
}
