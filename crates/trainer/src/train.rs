//! The training loop: epochs of SGD/Adam over the training split, validation after each
//! epoch, the weights with the lowest validation loss kept and evaluated on the test set.
//!
//! Randomness is derived, not carried: the shuffle of epoch `e` ([`data::epoch_order`]) and
//! the dropout masks and augmentation of batch `b` are drawn from generators seeded with
//! `(seed, e, b)`. So a run resumed from any checkpoint, even one written mid-epoch, repeats
//! the uninterrupted run bit for bit on the CPU, without saving generator states. Every
//! generator is [`SplitMix64`], written out in the data module rather than taken from
//! `rand`, so the numbers also survive dependency upgrades.

use crate::checkpoint::{self, Best, CheckpointMeta};
use crate::config::{FlipKind, TrainConfig, TtaKind};
use crate::data::{self, Cifar10, ImageSet, Normalization, SplitMix64};
use crate::metrics::{Confusion, EpochRecord, Running, TestReport};
use crate::models::{self, Model};
use crate::optim::Optimizer;
use crate::schedule;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// Every epoch ran; the best weights were evaluated on the test set.
    Finished {
        /// The epoch with the lowest validation loss (1-based).
        best_epoch: usize,
        /// Its validation loss.
        best_valid_loss: f64,
        /// The test evaluation of its weights.
        test: TestReport,
        /// Training time over all epochs (suspensions left out).
        train_seconds: f64,
    },
    /// The loss became NaN or infinite during `epoch`; `last_good_epoch` is the last
    /// epoch that completed with finite losses (0 if none).
    Diverged {
        /// The epoch that diverged (1-based).
        epoch: usize,
        /// The last epoch with finite losses.
        last_good_epoch: usize,
    },
    /// Stopped on request; the checkpoint holds the exact position.
    Interrupted {
        /// The epoch being trained (1-based), or just finished when `batch` is 0.
        epoch: usize,
        /// Batches of `epoch` done (0: at the end of `epoch`).
        batch: usize,
    },
}

/// Progress inside an epoch, for progress bars.
#[derive(Clone, Copy, Debug)]
pub struct BatchProgress {
    /// The epoch (1-based).
    pub epoch: usize,
    /// Epochs in the run.
    pub epochs: usize,
    /// Batches done in this epoch (1-based: the one just trained).
    pub batch: usize,
    /// Batches per epoch.
    pub batches: usize,
    /// Mean training loss of the epoch so far.
    pub loss: f64,
    /// Training accuracy of the epoch so far.
    pub accuracy: f64,
    /// Training throughput of the epoch so far.
    pub images_per_sec: f64,
}

/// How the trainer reports. The sweep crate persists epochs from `on_epoch`; the trainer
/// itself never touches a database.
pub trait Observer {
    /// Called after every training batch (for progress bars; cheap, may be ignored).
    fn on_batch(&mut self, _p: &BatchProgress) {}
    /// Called after the epoch's checkpoint is on disk. An error ends the run with
    /// [`Error::Observer`]-like failure (the message is kept).
    fn on_epoch(&mut self, record: &EpochRecord) -> std::result::Result<(), String>;
    /// Called once before training with the epochs the run resumes from (empty for a fresh
    /// start). The checkpoint may be ahead of what was recorded (a crash between the two
    /// writes), or behind it (a damaged checkpoint fell back to an older one): epochs after
    /// these are trained again and reported through `on_epoch`.
    fn on_resume(&mut self, _history: &[EpochRecord]) -> std::result::Result<(), String> {
        Ok(())
    }
    /// Polled after every batch; `true` saves a checkpoint and returns `Interrupted`.
    fn should_stop(&self) -> bool {
        false
    }
}

/// Where and how often to checkpoint.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The run's own folder of checkpoints (created if missing).
    pub checkpoint_dir: PathBuf,
    /// Resume from the checkpoint in `checkpoint_dir` when it matches the config.
    pub resume: bool,
    /// A mid-epoch checkpoint at most this often (so a hard kill loses little work).
    pub checkpoint_every: Duration,
    /// Read the batches' loss and correct count in groups on the CPU too, as off the CPU
    /// (see [`train_step_deferred`]); for tests of that path on a machine without a GPU.
    pub defer_reads: bool,
    /// Keep the training set on the device as bytes and assemble the training batches
    /// there ([`data::ResidentSet`]) on the CPU too, as off the CPU; for tests of that path.
    pub resident_data: bool,
}

impl RunOptions {
    /// Checkpoints in `checkpoint_dir`, resuming, one mid-epoch checkpoint a minute at most.
    pub fn new(checkpoint_dir: impl Into<PathBuf>) -> Self {
        Self {
            checkpoint_dir: checkpoint_dir.into(),
            resume: true,
            checkpoint_every: Duration::from_secs(60),
            defer_reads: false,
            resident_data: false,
        }
    }
}

/// Loss and accuracy of one batch.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Mean loss over the batch (NaN or infinite when it diverged: no update was applied).
    pub loss: f64,
    /// Correct predictions in the batch.
    pub correct: u64,
}

/// The seed of one generator of a run: `stream` 2 is the dropout masks, 3 augmentation (1
/// was the epoch shuffle, now [`data::epoch_order`]'s own derivation).
fn mix(seed: u64, epoch: usize, batch: usize, stream: u64) -> u64 {
    // SplitMix64 finaliser over the packed coordinates: distinct, well-spread seeds.
    let mut z = seed
        ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (batch as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9)
        ^ stream.wrapping_mul(0x94d0_49bb_1331_11eb);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Cross-entropy over logits `[B, C]` and labels `[B]`, with optional label smoothing.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, smoothing: f64) -> Result<Tensor> {
    let log_sm = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = candle_nn::loss::nll(&log_sm, labels)?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    let uniform = log_sm.mean(D::Minus1)?.mean_all()?.neg()?;
    Ok(((nll * (1.0 - smoothing))? + (uniform * smoothing)?)?)
}

fn correct(logits: &Tensor, labels: &Tensor) -> Result<u64> {
    Ok(correct_on_device(logits, labels)?.to_scalar::<u32>()? as u64)
}

fn correct_on_device(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(logits
        .argmax(D::Minus1)?
        .eq(labels)?
        .to_dtype(DType::U32)?
        .sum_all()?)
}

/// One optimisation step on a batch: forward, loss, backward, update.
pub fn train_step(
    model: &dyn Model,
    opt: &mut Optimizer,
    x: &Tensor,
    y: &Tensor,
    label_smoothing: f64,
) -> Result<StepStats> {
    train_step_micro(model, opt, x, y, label_smoothing, 0)
}

/// The forward and backward passes of one step over the micro-batches of `x` (`micro`
/// images each; 0, or not below the batch: one pass), each loss weighted by its share of
/// the batch, then one update from the summed gradients. `seen(logits, labels, loss)` is
/// called after each forward pass; when it returns false nothing more is done (no update).
fn micro_step(
    model: &dyn Model,
    opt: &mut Optimizer,
    (x, y): (&Tensor, &Tensor),
    label_smoothing: f64,
    micro: usize,
    mut seen: impl FnMut(&Tensor, &Tensor, &Tensor) -> Result<bool>,
) -> Result<()> {
    let n = x.dim(0)?;
    let micro = if micro == 0 || micro >= n { n } else { micro };
    let mut grads: Option<candle_core::backprop::GradStore> = None;
    for start in (0..n).step_by(micro) {
        let len = micro.min(n - start);
        let (xs, ys) = if len == n {
            (x.clone(), y.clone())
        } else {
            (x.narrow(0, start, len)?, y.narrow(0, start, len)?)
        };
        let logits = model.forward_t(&xs, true)?;
        let loss = cross_entropy(&logits, &ys, label_smoothing)?;
        let loss = if len == n {
            loss
        } else {
            (loss * (len as f64 / n as f64))?
        };
        if !seen(&logits, &ys, &loss)? {
            return Ok(());
        }
        let g = loss.backward()?;
        match grads.as_mut() {
            None => grads = Some(g),
            Some(acc) => opt.accumulate(acc, &g)?,
        }
    }
    opt.step(&grads.expect("at least one micro-batch"))
}

/// [`train_step`] with the batch split into micro-batches of `micro` images (0, or not
/// below the batch: one pass): each is forward and backward on its own, its loss weighted
/// by its share of the batch, and the summed gradients make one update. The loss and the
/// update are the batch's; batch norm sees the micro-batches' statistics (and updates its
/// running statistics once per micro-batch). Smaller working sets run faster on the CPU.
/// A non-finite loss is returned before any update is applied.
pub fn train_step_micro(
    model: &dyn Model,
    opt: &mut Optimizer,
    x: &Tensor,
    y: &Tensor,
    label_smoothing: f64,
    micro: usize,
) -> Result<StepStats> {
    let mut st = StepStats {
        loss: 0.0,
        correct: 0,
    };
    micro_step(
        model,
        opt,
        (x, y),
        label_smoothing,
        micro,
        |logits, ys, loss| {
            let v = loss.to_scalar::<f32>()? as f64;
            if !v.is_finite() {
                // Do not apply a NaN update: the caller records the divergence.
                st = StepStats {
                    loss: v,
                    correct: 0,
                };
                return Ok(false);
            }
            st.loss += v;
            st.correct += correct(logits, ys)?;
            Ok(true)
        },
    )?;
    Ok(st)
}

/// A training step's loss and correct count still on the device (see
/// [`train_step_deferred`]): reading them waits for the device to finish the step.
pub struct DeviceStats {
    /// The batch's mean loss, an f32 scalar.
    loss: Tensor,
    /// The batch's correct predictions, a u32 scalar.
    correct: Tensor,
}

impl DeviceStats {
    /// Reads both values (one wait for the device).
    pub fn read(&self) -> Result<StepStats> {
        Ok(StepStats {
            loss: self.loss.to_scalar::<f32>()? as f64,
            correct: self.correct.to_scalar::<u32>()? as u64,
        })
    }
}

/// [`train_step_micro`] without reading anything back: the loss and correct count stay on
/// the device until [`DeviceStats::read`], so a GPU is never made to wait for the host
/// between batches (issue 15). The price: a diverged batch's update is applied (there is
/// no loss on the host to refuse it by); the caller finds the NaN when it reads, and the
/// trial ends as diverged all the same. On the CPU, where a read costs nothing, the trainer
/// keeps to [`train_step_micro`].
pub fn train_step_deferred(
    model: &dyn Model,
    opt: &mut Optimizer,
    x: &Tensor,
    y: &Tensor,
    label_smoothing: f64,
    micro: usize,
) -> Result<DeviceStats> {
    let mut sums: Option<(Tensor, Tensor)> = None;
    micro_step(
        model,
        opt,
        (x, y),
        label_smoothing,
        micro,
        |logits, ys, loss| {
            let (loss, right) = (loss.detach(), correct_on_device(logits, ys)?);
            sums = Some(match sums.take() {
                None => (loss, right),
                Some((l, c)) => ((l + loss)?, (c + right)?),
            });
            Ok(true)
        },
    )?;
    let (loss, correct) = sums.expect("at least one micro-batch");
    Ok(DeviceStats { loss, correct })
}

/// One training batch of epoch `epoch` (1-based) with the configured augmentation: `augment`
/// ([`data::make_batch`]'s crop and flip), or `translate` and `flip`
/// ([`data::make_batch_translated`]), or none; random draws from `rng`.
pub fn training_batch(
    cfg: &TrainConfig,
    set: &ImageSet,
    idx: &[usize],
    norm: &Normalization,
    epoch: usize,
    rng: &mut SplitMix64,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let flip = flip_of(cfg, epoch);
    Ok(if cfg.translate > 0 || flip != data::Flip::None {
        data::make_batch_translated(set, idx, norm, cfg.translate, flip, rng, device)?
    } else {
        data::make_batch(set, idx, norm, cfg.augment.then_some(rng), device)?
    })
}

/// [`training_batch`] from a training set resident on the device: the same batch, bit for
/// bit, from the same draws.
pub fn training_batch_resident(
    cfg: &TrainConfig,
    set: &data::ResidentSet,
    idx: &[usize],
    epoch: usize,
    rng: &mut SplitMix64,
) -> Result<(Tensor, Tensor)> {
    let flip = flip_of(cfg, epoch);
    Ok(if cfg.translate > 0 || flip != data::Flip::None {
        set.batch_translated(idx, cfg.translate, flip, rng)?
    } else {
        set.batch(idx, cfg.augment.then_some(rng))?
    })
}

fn flip_of(cfg: &TrainConfig, epoch: usize) -> data::Flip {
    match cfg.flip {
        FlipKind::None => data::Flip::None,
        FlipKind::Random => data::Flip::Random,
        FlipKind::Alternate => data::Flip::Alternate {
            seed: cfg.seed,
            epoch,
        },
    }
}

const EVAL_BATCH: usize = 500;

/// `x` (`[B, C, H, W]`) mirrored left-right.
fn mirror(x: &Tensor) -> Result<Tensor> {
    let w = x.dim(3)?;
    let idx: Vec<u32> = (0..w as u32).rev().collect();
    Ok(x.index_select(&Tensor::new(idx.as_slice(), x.device())?, 3)?)
}

/// `x` (`[B, C, H, W]`) shifted by `s` pixels in both directions with reflection padding:
/// output pixel (y, x) is input pixel (reflect(y + s), reflect(x + s)).
fn shift(x: &Tensor, s: isize) -> Result<Tensor> {
    let along = |t: &Tensor, dim: usize| -> Result<Tensor> {
        let n = t.dim(dim)?;
        let idx: Vec<u32> = (0..n as isize)
            .map(|i| data::reflect(i + s, n) as u32)
            .collect();
        Ok(t.index_select(&Tensor::new(idx.as_slice(), t.device())?, dim)?)
    };
    along(&along(x, 2)?, 3)
}

/// The eval-mode logits of `x` with test-time augmentation `tta` (airbench's levels):
/// `none` the logits of `x`; `flip` the mean of those of `x` and its mirror image;
/// `flip_translate` half the `flip` logits of `x` plus a quarter each of the `flip` logits
/// of `x` shifted by -1 and by +1 pixel (reflection padding).
pub fn tta_logits(model: &dyn Model, x: &Tensor, tta: TtaKind) -> Result<Tensor> {
    let mirrored = |x: &Tensor| -> Result<Tensor> {
        let a = model.forward_t(x, false)?;
        let b = model.forward_t(&mirror(x)?, false)?;
        Ok(((a + b)? * 0.5)?)
    };
    Ok(match tta {
        TtaKind::None => model.forward_t(x, false)?,
        TtaKind::Flip => mirrored(x)?,
        TtaKind::FlipTranslate => {
            let m = mirrored(x)?;
            let up = mirrored(&shift(x, -1)?)?;
            let down = mirrored(&shift(x, 1)?)?;
            ((m * 0.5)? + ((up + down)? * 0.25)?)?
        }
    })
}

/// Mean loss and the confusion matrix of `model` over `idx` of `set`, in eval mode, with
/// test-time augmentation `tta` ([`tta_logits`]).
pub fn evaluate(
    model: &dyn Model,
    set: &ImageSet,
    idx: &[usize],
    norm: &Normalization,
    classes: usize,
    device: &Device,
    tta: TtaKind,
) -> Result<(f64, Confusion)> {
    let mut running = Running::default();
    let mut confusion = Confusion::new(classes);
    for chunk in idx.chunks(EVAL_BATCH) {
        let (x, y) = data::make_batch(set, chunk, norm, None, device)?;
        let logits = tta_logits(model, &x, tta)?;
        let loss = cross_entropy(&logits, &y, 0.0)?.to_scalar::<f32>()? as f64;
        let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let truth = y.to_vec1::<u32>()?;
        let hits = pred.iter().zip(&truth).filter(|(p, t)| p == t).count() as u64;
        running.update(loss, hits, chunk.len() as u64);
        confusion.update(&truth, &pred);
    }
    Ok((running.loss(), confusion))
}

/// A model with its variables, ready to train or evaluate.
pub struct Session {
    /// The configuration it was built from.
    pub cfg: TrainConfig,
    /// Where its variables live.
    pub device: Device,
    /// The variables by name, sorted (the order of the optimiser's state and checkpoints).
    pub vars: Vec<(String, Var)>,
    /// The network.
    pub model: Box<dyn Model>,
    /// The optimiser over `vars`.
    pub opt: Optimizer,
    /// The lookahead's averaged weights, in the order of `vars` (`cfg.lookahead > 0` only;
    /// set by [`Session::start_lookahead`], saved in checkpoints).
    lookahead: Option<Vec<Tensor>>,
}

impl Session {
    /// Builds `cfg.arch` on `device` with weights seeded from `cfg.seed`, and its optimiser;
    /// a config that fails [`models::validate`] is an [`Error::Config`] naming the field.
    pub fn new(cfg: &TrainConfig, device: &Device) -> Result<Self> {
        models::validate(cfg).map_err(|(field, msg)| Error::Config(format!("{field}: {msg}")))?;
        if device.is_cuda() {
            // candle keeps this switch per process, not per tensor; one process trains one
            // trial at a time (`run --jobs` gives each worker its own), so setting it for
            // every session on the GPU is exact. The CPU ignores it.
            candle_core::cuda::set_gemm_reduced_precision_f32(
                cfg.precision == crate::config::Precision::Tf32,
            );
        }
        let (varmap, model) = models::instantiate(cfg, device)?;
        let vars = models::sorted_vars(&varmap);
        let mut opt = Optimizer::new(cfg, vars.iter().map(|(_, v)| v.clone()).collect())?;
        if cfg.bn_bias_lr_scale != 1.0 {
            for i in bn_biases(&vars) {
                opt.set_lr_scale(i, cfg.bn_bias_lr_scale);
            }
        }
        Ok(Self {
            cfg: cfg.clone(),
            device: device.clone(),
            vars,
            model,
            opt,
            lookahead: None,
        })
    }

    /// Freezes the variables the model trains for fewer epochs than `epoch` (1-based; see
    /// [`Model::frozen_after`]) and thaws the others; set before every epoch's first batch,
    /// so a resumed epoch is set like the interrupted one.
    pub fn freeze_for_epoch(&mut self, epoch: usize) {
        for &(name, epochs) in self.model.frozen_after() {
            if let Some(i) = self.vars.iter().position(|(k, _)| k == name) {
                self.opt.set_frozen(i, epoch > epochs);
            }
        }
    }

    /// Starts the lookahead average at the current weights (when `cfg.lookahead > 0`).
    pub fn start_lookahead(&mut self) -> Result<()> {
        self.lookahead = if self.cfg.lookahead > 0.0 {
            Some(
                self.vars
                    .iter()
                    .map(|(_, v)| v.as_tensor().copy())
                    .collect::<candle_core::Result<_>>()?,
            )
        } else {
            None
        };
        Ok(())
    }

    /// The lookahead after optimiser step `step` of `steps` (see `TrainConfig::lookahead`):
    /// every [`LOOKAHEAD_EVERY`] steps the average moves toward the weights with decay
    /// `lookahead^5 * (step / steps)^3` and the weights are set to it; `decay = 1` (the end
    /// of training) sets the weights to the average as it is.
    pub fn lookahead_step(&mut self, step: u64, steps: u64) -> Result<()> {
        if !step.is_multiple_of(LOOKAHEAD_EVERY) && step != steps {
            return Ok(());
        }
        let decay = if step.is_multiple_of(LOOKAHEAD_EVERY) {
            self.cfg.lookahead.powi(LOOKAHEAD_EVERY as i32)
                * (step as f64 / steps.max(1) as f64).powi(3)
        } else {
            1.0
        };
        self.lookahead_update(decay)
    }

    /// `avg += (w - avg) * (1 - decay)`, then `w = avg`, for every variable.
    fn lookahead_update(&mut self, decay: f64) -> Result<()> {
        let Some(avg) = self.lookahead.as_mut() else {
            return Ok(());
        };
        for ((_, var), a) in self.vars.iter().zip(avg.iter_mut()) {
            let w = var.as_tensor();
            let next = (&*a + ((w - &*a)? * (1.0 - decay))?)?;
            var.set(&next)?;
            *a = next;
        }
        Ok(())
    }

    fn weights(&self) -> HashMap<String, Tensor> {
        self.vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// Sets the model's variables from `tensors` (every variable must be present).
    pub fn load_weights(&self, tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
        for (name, var) in &self.vars {
            let t = tensors.get(name).ok_or_else(|| Error::BadCheckpoint {
                path: path.to_path_buf(),
                reason: format!("missing tensor `{name}`"),
            })?;
            if t.shape() != var.shape() {
                return Err(Error::BadCheckpoint {
                    path: path.to_path_buf(),
                    reason: format!("tensor `{name}` has shape {:?}", t.dims()),
                });
            }
            var.set(&t.to_device(&self.device)?)?;
        }
        Ok(())
    }

    /// Loads weights saved by a run (for example a trial's best checkpoint).
    pub fn load_weights_file(&self, path: &Path) -> Result<()> {
        let tensors = checkpoint::load_tensors(path, &self.device)?;
        self.load_weights(&tensors, path)
    }

    fn save_state(&self, dir: &Path, file: &str) -> Result<checkpoint::FileSum> {
        let mut tensors = self.weights();
        let (opt_state, _) = self.opt.state()?;
        for (k, t) in opt_state {
            tensors.insert(format!("__opt.{k}"), t);
        }
        if let Some(avg) = &self.lookahead {
            for ((name, _), t) in self.vars.iter().zip(avg) {
                tensors.insert(format!("__lookahead.{name}"), t.clone());
            }
        }
        checkpoint::save_tensors(&dir.join(file), &tensors)
    }

    fn restore_state(&mut self, dir: &Path, meta: &CheckpointMeta) -> Result<()> {
        let path = dir.join(&meta.state_file);
        let tensors = checkpoint::load_tensors_checked(
            &path,
            meta.files.get(&meta.state_file),
            &self.device,
        )?;
        self.load_weights(&tensors, &path)?;
        if self.cfg.lookahead > 0.0 {
            let avg = self
                .vars
                .iter()
                .map(
                    |(name, v)| match tensors.get(&format!("__lookahead.{name}")) {
                        Some(t) if t.shape() == v.shape() => Ok(t.copy()?),
                        _ => Err(Error::BadCheckpoint {
                            path: path.clone(),
                            reason: format!("missing lookahead tensor `{name}`"),
                        }),
                    },
                )
                .collect::<Result<Vec<_>>>()?;
            self.lookahead = Some(avg);
        }
        let opt: Vec<(String, Tensor)> = tensors
            .iter()
            .filter_map(|(k, t)| Some((k.strip_prefix("__opt.")?.to_string(), t.clone())))
            .collect();
        self.opt.load_state(&opt, meta.opt_step)
    }
}

/// The positions in `vars` of the batch-norm biases: the `P.bias` variables beside a
/// `P.running_mean`.
pub fn bn_biases(vars: &[(String, Var)]) -> Vec<usize> {
    let names: std::collections::HashSet<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    vars.iter()
        .enumerate()
        .filter_map(|(i, (k, _))| {
            let prefix = k.strip_suffix(".bias")?;
            names
                .contains(format!("{prefix}.running_mean").as_str())
                .then_some(i)
        })
        .collect()
}

/// What a few timed steps of a configuration measured (see [`time_steps`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepTimes {
    /// Wall time of one training step (batch, forward, backward, update), per image.
    pub train_per_image: Duration,
    /// Wall time of one evaluation forward pass, per image.
    pub eval_per_image: Duration,
    /// How many training steps were timed (after the warm-up).
    pub timed_steps: usize,
}

/// Times training steps of `cfg` on `device` over a synthetic batch, for estimating a run's
/// length before any epoch of it was recorded. The first steps are warm-up (allocation,
/// kernel selection) and not counted; then up to `steps` steps are timed, fewer once
/// `budget` is spent (at least one), so a big model on a slow device costs about `budget`,
/// not `steps` of its slow steps. One evaluation forward pass is timed too. Nothing is
/// written and no data set is needed.
pub fn time_steps(
    cfg: &TrainConfig,
    device: &Device,
    steps: usize,
    budget: Duration,
) -> Result<StepTimes> {
    let start = Instant::now();
    let mut s = Session::new(cfg, device)?;
    let batch = cfg.batch_size;
    // The real batch path (u8 images normalised per batch), so its cost is in the figure.
    let set = ImageSet::synthetic(batch, 10, cfg.seed);
    let idx: Vec<usize> = (0..batch).collect();
    let norm = Normalization::default();
    let mut rng = SplitMix64::new(mix(cfg.seed, 0, 0, 3));
    let mut step = |s: &mut Session, b: usize| -> Result<()> {
        s.model.reseed(mix(cfg.seed, 0, b, 2));
        let (x, y) = training_batch(cfg, &set, &idx, &norm, 1, &mut rng, device)?;
        train_step(s.model.as_ref(), &mut s.opt, &x, &y, cfg.label_smoothing)?;
        Ok(())
    };
    // Two warm-up steps, one when the first already took a quarter of the budget.
    step(&mut s, 0)?;
    if start.elapsed() < budget / 4 {
        step(&mut s, 1)?;
    }
    let timed = Instant::now();
    let mut n = 0;
    while n < steps.max(1) && (n == 0 || start.elapsed() < budget) {
        step(&mut s, 2 + n)?;
        n += 1;
    }
    let train = timed.elapsed() / n as u32;
    let (x, _) = data::make_batch(&set, &idx, &norm, None, device)?;
    let t = Instant::now();
    // A scalar read back, so a device that queues work (CUDA, Metal) has finished it.
    s.model
        .forward_t(&x, false)?
        .sum_all()?
        .to_scalar::<f32>()?;
    let eval = t.elapsed();
    Ok(StepTimes {
        train_per_image: train / batch as u32,
        eval_per_image: eval / batch as u32,
        timed_steps: n,
    })
}

/// Trains `cfg` on `data` and evaluates the best weights on the test set: a [`Trainer`]
/// driven from start (or its checkpoint) to end, reporting to `obs`.
pub fn run(
    cfg: &TrainConfig,
    data: &Cifar10,
    device: &Device,
    opts: &RunOptions,
    obs: &mut dyn Observer,
) -> Result<Outcome> {
    let mut t = Trainer::new(cfg, data, device, opts)?;
    if opts.resume {
        t.resume()?;
    }
    obs.on_resume(t.history()).map_err(Error::Observer)?;
    for epoch in t.epochs_left() {
        let record = match t.train_epoch(epoch, obs)? {
            EpochEnd::Trained(record) => record,
            EpochEnd::Ended(outcome) => return Ok(outcome),
        };
        // The checkpoint first: an epoch the observer has recorded is always on disk.
        t.checkpoint()?;
        obs.on_epoch(&record).map_err(Error::Observer)?;
        if obs.should_stop() && epoch < cfg.epochs {
            return Ok(Outcome::Interrupted { epoch, batch: 0 });
        }
    }
    t.finish()
}

/// How [`Trainer::train_epoch`] ended.
#[derive(Clone, Debug, PartialEq)]
pub enum EpochEnd {
    /// The epoch was trained and validated; its record is in the history and the best
    /// weights are updated, but nothing of it is committed until [`Trainer::checkpoint`].
    Trained(EpochRecord),
    /// The run ends here: it diverged, or it was stopped mid-epoch (the checkpoint of that
    /// position is already committed).
    Ended(Outcome),
}

/// One training run, step by step (the learner / epoch split of burn): [`Trainer::new`]
/// prepares the split, [`Trainer::resume`] restores a checkpoint, [`Trainer::train_epoch`]
/// trains and validates one epoch, [`Trainer::checkpoint`] commits the position, and
/// [`Trainer::finish`] evaluates the best weights on the test set. [`run`] drives them in
/// that order; the steps keep no state outside the checkpoint that a resumed run could miss.
pub struct Trainer<'a> {
    s: Session,
    data: &'a Cifar10,
    opts: &'a RunOptions,
    norm: Normalization,
    train_idx: Vec<usize>,
    valid_idx: Vec<usize>,
    test_idx: Vec<usize>,
    batches: usize,
    /// The position and history: exactly what the next checkpoint will say.
    meta: CheckpointMeta,
    /// The weights of the best epoch so far, for the test evaluation at the end.
    best_weights: Option<Weights>,
    /// The sum of the best weights' file, carried into every later checkpoint.
    best_sum: Option<checkpoint::FileSum>,
    /// The training set on the device (off the CPU, or with `opts.resident_data`).
    resident: Option<data::ResidentSet>,
}

impl<'a> Trainer<'a> {
    /// A fresh run of `cfg` on `data`: the model built and seeded, the checkpoint folder
    /// created, the validation split drawn. Refuses a config that fails validation, and a
    /// data set too small for the split (validation only knows the standard 50,000 images).
    pub fn new(
        cfg: &TrainConfig,
        data: &'a Cifar10,
        device: &Device,
        opts: &'a RunOptions,
    ) -> Result<Self> {
        let mut s = Session::new(cfg, device)?;
        let dir = &opts.checkpoint_dir;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        // Validation checked the split against the standard 50,000 images; the data may be
        // smaller (an image-folder set).
        data::split_sizes(
            data.train.len(),
            cfg.valid_fraction,
            cfg.train_subset,
            cfg.batch_size,
        )
        .map_err(|(field, msg)| Error::Config(format!("{field}: {msg} ({})", data.source)))?;
        let (mut train_idx, valid_idx) = data::split(&data.train, cfg.valid_fraction, cfg.seed);
        if let Some(n) = cfg.train_subset {
            train_idx.truncate(n);
        }
        let test_idx: Vec<usize> =
            (0..data.test.len().min(cfg.test_subset.unwrap_or(usize::MAX))).collect();
        let batches = train_idx.len().div_ceil(cfg.batch_size);
        init_from_data(&mut s, data, &train_idx)?;
        let norm = Normalization::default();
        // Off the CPU the training batches are assembled on the device (issue 15): one
        // upload of the bytes per run instead of a copy of floats per batch.
        let resident = if !device.is_cpu() || opts.resident_data {
            Some(data::ResidentSet::new(&data.train, &norm, device)?)
        } else {
            None
        };
        let meta = CheckpointMeta {
            config: cfg.clone(),
            data_checksum: data.checksum.clone(),
            epoch: 0,
            next_batch: 0,
            partial: Running::default(),
            partial_seconds: 0.0,
            opt_step: 0,
            history: Vec::new(),
            best: None,
            state_file: String::new(),
            files: Default::default(),
        };
        Ok(Self {
            s,
            data,
            opts,
            norm,
            train_idx,
            valid_idx,
            test_idx,
            batches,
            meta,
            best_weights: None,
            best_sum: None,
            resident,
        })
    }

    /// Continues from the newest intact checkpoint in the checkpoint folder that belongs to
    /// this config and data set, if any: `state.json`, else `state.prev.json`; a damaged one
    /// is moved aside with a warning. Returns whether one was found; without one the run
    /// stays a fresh start.
    pub fn resume(&mut self) -> Result<bool> {
        let dir = &self.opts.checkpoint_dir;
        let Some((meta, best)) = resume(&mut self.s, dir, self.data, self.batches)? else {
            // A damaged checkpoint may have rebuilt the session: the data-dependent weights
            // again, as a fresh start has them (the same images, the same values).
            init_from_data(&mut self.s, self.data, &self.train_idx)?;
            return Ok(false);
        };
        // A checkpoint written before checksums existed has no sum for its best weights:
        // take it from the file just loaded.
        self.best_sum = match &meta.best {
            Some(b) => match meta.files.get(&b.file) {
                Some(sum) => Some(sum.clone()),
                None => {
                    let path = dir.join(&b.file);
                    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                    Some(checkpoint::FileSum::of(&bytes))
                }
            },
            None => None,
        };
        self.meta = meta;
        self.best_weights = best;
        Ok(true)
    }

    /// The epochs completed so far (after [`Trainer::resume`], those of the checkpoint).
    pub fn history(&self) -> &[EpochRecord] {
        &self.meta.history
    }

    /// The epochs still to train, 1-based: after the last completed one, to the config's
    /// last. The first may be partly done (a mid-epoch checkpoint).
    pub fn epochs_left(&self) -> std::ops::RangeInclusive<usize> {
        self.meta.epoch + 1..=self.s.cfg.epochs
    }

    /// Trains epoch `epoch` (the next one, see [`Trainer::epochs_left`]) from where the
    /// position says, then validates it and keeps its weights if they are the best so far.
    /// Between batches it reports to `obs`, and commits a mid-epoch checkpoint when
    /// [`RunOptions::checkpoint_every`] has passed or `obs` asks to stop (then it ends).
    ///
    /// Every random draw is derived from `(seed, epoch, batch)` (see the module docs), so a
    /// resumed epoch draws what the interrupted one would have.
    pub fn train_epoch(&mut self, epoch: usize, obs: &mut dyn Observer) -> Result<EpochEnd> {
        let cfg = self.s.cfg.clone();
        let device = self.s.device.clone();
        let batches = self.batches;
        // Running time only: a Ctrl-Z or SIGSTOP is not training time (see `clock`).
        let start = crate::clock::Stopwatch::start();
        let order = data::epoch_order(&self.train_idx, cfg.seed, epoch as u64);
        let epoch_lr = schedule::lr_at(&cfg, (epoch - 1) as f64);
        let (first_batch, mut running, prior_secs) = if self.meta.next_batch > 0 {
            (
                self.meta.next_batch,
                self.meta.partial,
                self.meta.partial_seconds,
            )
        } else {
            (0, Running::default(), 0.0)
        };
        self.s.freeze_for_epoch(epoch);
        let mut last_ckpt = Instant::now();
        // Off the CPU the batches' statistics stay on the device until read in groups (see
        // `train_step_deferred`); on the CPU reading them costs nothing.
        let defer = !device.is_cpu() || self.opts.defer_reads;
        let mut pending: Vec<(DeviceStats, u64)> = Vec::new();
        let mut last_read = Instant::now();
        for b in first_batch..batches {
            let idx = &order[b * cfg.batch_size..((b + 1) * cfg.batch_size).min(order.len())];
            self.s.opt.set_learning_rate(schedule::lr_at(
                &cfg,
                (epoch - 1) as f64 + b as f64 / batches as f64,
            ));
            self.s.model.reseed(mix(cfg.seed, epoch, b, 2));
            let mut aug_rng = SplitMix64::new(mix(cfg.seed, epoch, b, 3));
            let (x, y) = match &self.resident {
                Some(set) => training_batch_resident(&cfg, set, idx, epoch, &mut aug_rng)?,
                None => training_batch(
                    &cfg,
                    &self.data.train,
                    idx,
                    &self.norm,
                    epoch,
                    &mut aug_rng,
                    &device,
                )?,
            };
            let steps = (cfg.epochs * batches) as u64;
            if defer {
                pending.push((
                    train_step_deferred(
                        self.s.model.as_ref(),
                        &mut self.s.opt,
                        &x,
                        &y,
                        cfg.label_smoothing,
                        cfg.micro_batch,
                    )?,
                    idx.len() as u64,
                ));
                self.s.lookahead_step(self.s.opt.steps(), steps)?;
            } else {
                let st = train_step_micro(
                    self.s.model.as_ref(),
                    &mut self.s.opt,
                    &x,
                    &y,
                    cfg.label_smoothing,
                    cfg.micro_batch,
                )?;
                if !st.loss.is_finite() {
                    tracing::warn!(epoch, batch = b, loss = st.loss, "loss diverged");
                    return Ok(diverged(epoch));
                }
                self.s.lookahead_step(self.s.opt.steps(), steps)?;
                running.update(st.loss, st.correct, idx.len() as u64);
            }
            // Deferred statistics are read at the end of the epoch, before a checkpoint (which
            // saves them) and every few seconds for the progress display.
            if !pending.is_empty()
                && (b + 1 == batches
                    || last_read.elapsed() >= READ_EVERY
                    || last_ckpt.elapsed() >= self.opts.checkpoint_every
                    || obs.should_stop())
            {
                if let Some(end) = read_pending(&mut pending, &mut running, epoch)? {
                    return Ok(end);
                }
                last_read = Instant::now();
            }
            let secs = prior_secs + start.elapsed().as_secs_f64();
            if pending.is_empty() {
                obs.on_batch(&BatchProgress {
                    epoch,
                    epochs: cfg.epochs,
                    batch: b + 1,
                    batches,
                    loss: running.loss(),
                    accuracy: running.accuracy(),
                    images_per_sec: running.seen as f64 / secs.max(1e-9),
                });
            }
            let stop = obs.should_stop();
            if b + 1 < batches && (stop || last_ckpt.elapsed() >= self.opts.checkpoint_every) {
                // A stop request that came after the read above: the checkpoint must hold
                // every trained batch's statistics.
                if let Some(end) = read_pending(&mut pending, &mut running, epoch)? {
                    return Ok(end);
                }
                self.meta.next_batch = b + 1;
                self.meta.partial = running;
                self.meta.partial_seconds = secs;
                self.checkpoint()?;
                last_ckpt = Instant::now();
                if stop {
                    return Ok(EpochEnd::Ended(Outcome::Interrupted {
                        epoch,
                        batch: b + 1,
                    }));
                }
            }
        }
        let train_secs = prior_secs + start.elapsed().as_secs_f64();
        let (valid_loss, valid_conf) = evaluate(
            self.s.model.as_ref(),
            &self.data.train,
            &self.valid_idx,
            &self.norm,
            self.data.classes.len(),
            &device,
            TtaKind::None,
        )?;
        if !valid_loss.is_finite() {
            return Ok(EpochEnd::Ended(Outcome::Diverged {
                epoch,
                last_good_epoch: epoch - 1,
            }));
        }
        let record = EpochRecord {
            epoch,
            train_loss: running.loss(),
            train_acc: running.accuracy(),
            valid_loss,
            valid_acc: valid_conf.accuracy(),
            lr: epoch_lr,
            seconds: prior_secs + start.elapsed().as_secs_f64(),
            images_per_sec: running.seen as f64 / train_secs.max(1e-9),
        };
        if self
            .meta
            .best
            .as_ref()
            .is_none_or(|b| valid_loss < b.valid_loss)
        {
            self.keep_best(epoch, valid_loss)?;
        }
        self.meta.epoch = epoch;
        self.meta.next_batch = 0;
        self.meta.partial = Running::default();
        self.meta.partial_seconds = 0.0;
        self.meta.history.push(record.clone());
        Ok(EpochEnd::Trained(record))
    }

    /// Saves the current weights as the best ones (of `epoch`, at `valid_loss`): to their
    /// own file, which later checkpoints name, and in memory for [`Trainer::finish`].
    fn keep_best(&mut self, epoch: usize, valid_loss: f64) -> Result<()> {
        let file = format!("best-e{epoch}.safetensors");
        let weights = self.s.weights();
        self.best_sum = Some(checkpoint::save_tensors(
            &self.opts.checkpoint_dir.join(&file),
            &weights,
        )?);
        // A copy, not the variables' storage, which the next steps update in place.
        self.best_weights = Some(
            weights
                .into_iter()
                .map(|(k, t)| (k, t.copy().unwrap_or(t)))
                .collect(),
        );
        self.meta.best = Some(Best {
            epoch,
            valid_loss,
            file,
        });
        Ok(())
    }

    /// Commits the current position (an epoch boundary, or mid-epoch as
    /// [`Trainer::train_epoch`] sets it): the weights and optimiser state to a new state
    /// file, then the checkpoint that names it and the best weights' file (see
    /// [`checkpoint::commit`] for why a crash at any moment leaves an intact one).
    pub fn checkpoint(&mut self) -> Result<()> {
        let dir = &self.opts.checkpoint_dir;
        let meta = &mut self.meta;
        meta.opt_step = self.s.opt.steps();
        meta.state_file = if meta.next_batch > 0 {
            format!("state-e{}-b{}.safetensors", meta.epoch + 1, meta.next_batch)
        } else {
            format!("state-e{}.safetensors", meta.epoch)
        };
        let sum = self.s.save_state(dir, &meta.state_file)?;
        meta.files = file_sums(meta, sum, self.best_sum.clone());
        checkpoint::commit(dir, meta)
    }

    /// Evaluates the best weights on the test set and reports the finished run. Call it
    /// after the last epoch (a resumed finished run may call it at once); it panics when no
    /// epoch was trained.
    pub fn finish(self) -> Result<Outcome> {
        let best = self.meta.best.clone().expect("at least one epoch ran");
        if let Some(w) = &self.best_weights {
            self.s
                .load_weights(w, &self.opts.checkpoint_dir.join(&best.file))?;
        }
        let (test_loss, confusion) = evaluate(
            self.s.model.as_ref(),
            &self.data.test,
            &self.test_idx,
            &self.norm,
            self.data.classes.len(),
            &self.s.device,
            self.s.cfg.tta,
        )?;
        Ok(Outcome::Finished {
            best_epoch: best.epoch,
            best_valid_loss: best.valid_loss,
            test: TestReport {
                loss: test_loss,
                accuracy: confusion.accuracy(),
                confusion,
            },
            train_seconds: self.meta.history.iter().map(|r| r.seconds).sum(),
        })
    }
}

/// How many of the training split's first images [`Model::init_from_data`] sees.
pub const INIT_IMAGES: usize = 5000;

/// Gives the model the first [`INIT_IMAGES`] images of the training split (normalised, not
/// augmented) for its data-dependent initialisation ([`Model::init_from_data`]).
/// Then starts the lookahead average (if any) at the initial weights.
fn init_from_data(s: &mut Session, data: &Cifar10, train_idx: &[usize]) -> Result<()> {
    if s.model.wants_data() {
        let idx = &train_idx[..train_idx.len().min(INIT_IMAGES)];
        let norm = Normalization::default();
        let (x, _) = data::make_batch(&data.train, idx, &norm, None, &s.device)?;
        s.model.init_from_data(&x)?;
    }
    s.start_lookahead()
}

/// How often the deferred statistics of the batches are read for the progress display
/// (see [`train_step_deferred`]).
const READ_EVERY: Duration = Duration::from_secs(2);

/// Reads the deferred statistics of the batches trained since the last read into
/// `running`; a non-finite loss ends the epoch as diverged.
fn read_pending(
    pending: &mut Vec<(DeviceStats, u64)>,
    running: &mut Running,
    epoch: usize,
) -> Result<Option<EpochEnd>> {
    for (d, n) in pending.drain(..) {
        let st = d.read()?;
        if !st.loss.is_finite() {
            tracing::warn!(epoch, loss = st.loss, "loss diverged");
            return Ok(Some(diverged(epoch)));
        }
        running.update(st.loss, st.correct, n);
    }
    Ok(None)
}

fn diverged(epoch: usize) -> EpochEnd {
    EpochEnd::Ended(Outcome::Diverged {
        epoch,
        last_good_epoch: epoch - 1,
    })
}

/// How often (in optimiser steps) the lookahead averages (airbench's 5).
pub const LOOKAHEAD_EVERY: u64 = 5;

/// The checksums a checkpoint records: its state file's and its best file's.
fn file_sums(
    meta: &CheckpointMeta,
    state: checkpoint::FileSum,
    best: Option<checkpoint::FileSum>,
) -> std::collections::BTreeMap<String, checkpoint::FileSum> {
    let mut files = std::collections::BTreeMap::from([(meta.state_file.clone(), state)]);
    if let (Some(b), Some(sum)) = (&meta.best, best) {
        files.insert(b.file.clone(), sum);
    }
    files
}

/// Named tensors, as a safetensors file holds them.
type Weights = HashMap<String, Tensor>;

/// Finds the newest intact checkpoint in `dir` for this run and restores `s` from it;
/// returns its state and best weights, or `None` to start afresh.
///
/// `state.json` is tried first, then `state.prev.json`. One that is unreadable, claims a
/// position the run cannot reach, or names tensor files that are missing, truncated or fail
/// their checksum is reported (with its path), moved aside and skipped: a damaged checkpoint
/// costs the work since the previous one, never the trial.
fn resume(
    s: &mut Session,
    dir: &Path,
    data: &Cifar10,
    batches: usize,
) -> Result<Option<(CheckpointMeta, Option<Weights>)>> {
    let mut touched = false;
    for name in [checkpoint::STATE_FILE, checkpoint::PREV_STATE_FILE] {
        let path = dir.join(name);
        let meta = match checkpoint::read_meta_file(&path) {
            Ok(None) => continue,
            Ok(Some(m)) => m,
            Err(Error::BadCheckpoint { reason, .. }) => {
                damaged(dir, &path, &reason, &[name]);
                continue;
            }
            Err(e) => return Err(e),
        };
        if meta.config != s.cfg || meta.data_checksum != data.checksum {
            tracing::warn!(
                "checkpoint {} is for another config or data set; starting afresh",
                path.display()
            );
            break;
        }
        if let Err(reason) = meta.validate(batches) {
            damaged(dir, &path, &reason, &[name]);
            continue;
        }
        touched = true;
        let restored = s.restore_state(dir, &meta).and_then(|()| match &meta.best {
            Some(b) => checkpoint::load_tensors_checked(
                &dir.join(&b.file),
                meta.files.get(&b.file),
                &s.device,
            )
            .map(Some),
            None => Ok(None),
        });
        match restored {
            Ok(best) => {
                tracing::info!(
                    epoch = meta.epoch,
                    batch = meta.next_batch,
                    "resuming from checkpoint {}",
                    path.display()
                );
                return Ok(Some((meta, best)));
            }
            Err(Error::BadCheckpoint { path: file, reason }) => {
                let file_name = file.file_name().and_then(|f| f.to_str()).unwrap_or("");
                damaged(
                    dir,
                    &path,
                    &format!("{}: {reason}", file.display()),
                    &[name, file_name],
                );
            }
            Err(e) => return Err(e),
        }
    }
    if touched {
        // A failed restore may have set some variables or optimiser state: start from the
        // seeded initialisation, exactly as a fresh run does.
        *s = Session::new(&s.cfg.clone(), &s.device.clone())?;
    }
    Ok(None)
}

fn damaged(dir: &Path, state: &Path, reason: &str, names: &[&str]) {
    let moved = checkpoint::set_aside(dir, names);
    tracing::warn!(
        "damaged checkpoint {}: {reason}; moved aside ({}), resuming from an older checkpoint or from the start",
        state.display(),
        moved
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScheduleKind;

    #[test]
    fn time_steps_times_at_least_one_step_and_stops_at_the_budget() {
        let cfg = TrainConfig {
            batch_size: 4,
            ..TrainConfig::default()
        };
        // A spent budget still times one step: an estimate needs a figure.
        let t = time_steps(&cfg, &Device::Cpu, 3, Duration::ZERO).unwrap();
        assert_eq!(t.timed_steps, 1);
        let t = time_steps(&cfg, &Device::Cpu, 2, Duration::from_secs(3600)).unwrap();
        assert_eq!(t.timed_steps, 2);
        assert!(t.train_per_image > Duration::ZERO && t.eval_per_image > Duration::ZERO);
        // A config the trainer refuses is refused here too, with its field.
        let bad = TrainConfig {
            arch: "nope".into(),
            ..cfg
        };
        assert!(time_steps(&bad, &Device::Cpu, 1, Duration::ZERO).is_err());
    }

    /// Records epochs; optionally asks to stop after a given (epoch, batch).
    #[derive(Default)]
    struct Recorder {
        epochs: Vec<EpochRecord>,
        stop_at: Option<(usize, usize)>,
        seen: (usize, usize),
    }

    impl Observer for Recorder {
        fn on_batch(&mut self, p: &BatchProgress) {
            self.seen = (p.epoch, p.batch);
        }
        fn on_epoch(&mut self, r: &EpochRecord) -> std::result::Result<(), String> {
            self.epochs.push(r.clone());
            Ok(())
        }
        fn should_stop(&self) -> bool {
            self.stop_at.is_some_and(|s| self.seen >= s)
        }
    }

    /// The parts of a record that must repeat exactly (timings never do).
    fn exact(r: &[EpochRecord]) -> Vec<[u64; 6]> {
        r.iter()
            .map(|r| {
                [
                    r.epoch as u64,
                    r.train_loss.to_bits(),
                    r.train_acc.to_bits(),
                    r.valid_loss.to_bits(),
                    r.valid_acc.to_bits(),
                    r.lr.to_bits(),
                ]
            })
            .collect()
    }

    fn small_cfg() -> TrainConfig {
        TrainConfig {
            arch: "cnn3".into(),
            epochs: 2,
            batch_size: 16,
            lr: 0.05,
            momentum: 0.9,
            dropout: 0.3,
            augment: true,
            schedule: ScheduleKind::Cosine,
            seed: 3,
            ..Default::default()
        }
    }

    fn finished(o: &Outcome) -> (usize, f64, f64) {
        match o {
            Outcome::Finished {
                best_epoch,
                test,
                best_valid_loss,
                ..
            } => (*best_epoch, *best_valid_loss, test.loss),
            other => panic!("not finished: {other:?}"),
        }
    }

    #[test]
    fn same_seed_same_losses_bit_for_bit_and_resume_is_exact() {
        let data = Cifar10::synthetic(160, 40, 1);
        let cfg = small_cfg();
        let dev = Device::Cpu;
        let run_in = |dir: &Path, obs: &mut Recorder| {
            let mut opts = RunOptions::new(dir);
            opts.resume = true;
            run(&cfg, &data, &dev, &opts, obs).unwrap()
        };
        let (d1, d2, d3) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let mut a = Recorder::default();
        let oa = run_in(d1.path(), &mut a);
        let mut b = Recorder::default();
        let ob = run_in(d2.path(), &mut b);
        assert_eq!(exact(&a.epochs), exact(&b.epochs));
        assert_eq!(a.epochs.len(), 2);
        let (ea, la, ta) = finished(&oa);
        let (eb, lb, tb) = finished(&ob);
        assert_eq!(
            (ea, la.to_bits(), ta.to_bits()),
            (eb, lb.to_bits(), tb.to_bits())
        );

        // Interrupted mid-epoch 2, then resumed: the same numbers as the run above.
        let mut c = Recorder {
            stop_at: Some((2, 3)),
            ..Default::default()
        };
        match run_in(d3.path(), &mut c) {
            Outcome::Interrupted { epoch: 2, batch: 3 } => {}
            other => panic!("expected an interruption, got {other:?}"),
        }
        let meta = checkpoint::read_meta(d3.path()).unwrap().unwrap();
        assert_eq!((meta.epoch, meta.next_batch), (1, 3));
        let mut d = Recorder::default();
        let od = run_in(d3.path(), &mut d);
        let mut all = c.epochs.clone();
        all.extend(d.epochs.clone());
        assert_eq!(exact(&all), exact(&a.epochs));
        let (ed, ld, td) = finished(&od);
        assert_eq!(
            (ed, ld.to_bits(), td.to_bits()),
            (ea, la.to_bits(), ta.to_bits())
        );

        // A finished run's checkpoint resumes to the end at once, with the same test result.
        let mut e = Recorder::default();
        let oe = run_in(d1.path(), &mut e);
        assert!(e.epochs.is_empty());
        assert_eq!(finished(&oe).2.to_bits(), ta.to_bits());

        // Another seed, other numbers.
        let other = TrainConfig {
            seed: 4,
            ..cfg.clone()
        };
        let d4 = tempfile::tempdir().unwrap();
        let mut f = Recorder::default();
        run(&other, &data, &dev, &RunOptions::new(d4.path()), &mut f).unwrap();
        assert_ne!(exact(&f.epochs), exact(&a.epochs));
    }

    /// Runs `cfg` to its end on the CPU with checkpoints in a temporary folder.
    fn run_in_temp_dir(cfg: &TrainConfig, data: &Cifar10) -> (Outcome, Recorder) {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Recorder::default();
        let out = run(
            cfg,
            data,
            &Device::Cpu,
            &RunOptions::new(dir.path()),
            &mut r,
        )
        .unwrap();
        (out, r)
    }

    #[test]
    fn nan_loss_ends_the_trial_as_diverged() {
        let data = Cifar10::synthetic(64, 16, 2);
        let cfg = TrainConfig {
            arch: "lenet".into(),
            epochs: 3,
            batch_size: 16,
            lr: 1e12,
            ..Default::default()
        };
        let (out, r) = run_in_temp_dir(&cfg, &data);
        match out {
            Outcome::Diverged {
                epoch,
                last_good_epoch,
            } => {
                assert_eq!(last_good_epoch, epoch - 1);
                assert_eq!(r.epochs.len(), last_good_epoch);
            }
            other => panic!("expected divergence, got {other:?}"),
        }
    }

    /// The GPU's way of assembling batches (the training set resident on the device, batches
    /// gathered and augmented there) and of reading statistics, run on the CPU: the same
    /// records and test result bit for bit as the host path, for both kinds of augmentation.
    #[test]
    fn resident_data_gives_the_same_run_bit_for_bit() {
        let data = Cifar10::synthetic(160, 40, 6);
        let dev = Device::Cpu;
        let translated = TrainConfig {
            augment: false,
            translate: 2,
            flip: FlipKind::Alternate,
            ..small_cfg()
        };
        for cfg in [small_cfg(), translated] {
            let go = |gpu_way: bool| {
                let dir = tempfile::tempdir().unwrap();
                let mut opts = RunOptions::new(dir.path());
                opts.resident_data = gpu_way;
                opts.defer_reads = gpu_way;
                let mut r = Recorder::default();
                let out = run(&cfg, &data, &dev, &opts, &mut r).unwrap();
                (out, r)
            };
            let ((oa, a), (ob, b)) = (go(false), go(true));
            assert_eq!(exact(&a.epochs), exact(&b.epochs), "{cfg:?}");
            assert_eq!(finished(&oa).2.to_bits(), finished(&ob).2.to_bits());
        }
    }

    /// The GPU's way of reading the statistics (grouped, deferred), run on the CPU: the same
    /// numbers bit for bit, with and without micro-batches, an interruption and resume
    /// included, and a diverging run still ends as diverged.
    #[test]
    fn deferred_reads_give_the_same_numbers_and_still_catch_divergence() {
        let data = Cifar10::synthetic(160, 40, 1);
        let dev = Device::Cpu;
        for micro in [0, 5] {
            let cfg = TrainConfig {
                micro_batch: micro,
                ..small_cfg()
            };
            let go = |defer: bool, stop_at: Option<(usize, usize)>, dir: &Path| {
                let mut opts = RunOptions::new(dir);
                opts.defer_reads = defer;
                let mut r = Recorder {
                    stop_at,
                    ..Default::default()
                };
                let out = run(&cfg, &data, &dev, &opts, &mut r).unwrap();
                (out, r)
            };
            let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (oa, a) = go(false, None, d1.path());
            let (_, c) = go(true, Some((2, 3)), d2.path());
            let (ob, d) = go(true, None, d2.path());
            let mut b = c.epochs.clone();
            b.extend(d.epochs);
            if micro == 0 {
                assert_eq!(exact(&a.epochs), exact(&b), "micro {micro}");
            } else {
                // Micro-batch losses are summed on the device in f32, on the host in f64.
                for (x, y) in a.epochs.iter().zip(&b) {
                    assert!((x.train_loss - y.train_loss).abs() < 1e-6, "micro {micro}");
                    assert_eq!(
                        (x.train_acc, x.valid_loss.to_bits(), x.valid_acc),
                        (y.train_acc, y.valid_loss.to_bits(), y.valid_acc)
                    );
                }
            }
            assert_eq!(finished(&oa).2.to_bits(), finished(&ob).2.to_bits());
        }
        let cfg = TrainConfig {
            arch: "lenet".into(),
            epochs: 3,
            batch_size: 16,
            lr: 1e12,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut opts = RunOptions::new(dir.path());
        opts.defer_reads = true;
        let mut r = Recorder::default();
        match run(&cfg, &Cifar10::synthetic(64, 16, 2), &dev, &opts, &mut r).unwrap() {
            Outcome::Diverged {
                last_good_epoch, ..
            } => {
                assert_eq!(r.epochs.len(), last_good_epoch)
            }
            other => panic!("expected divergence, got {other:?}"),
        }
    }

    #[test]
    fn a_data_set_too_small_for_the_split_is_refused() {
        // The config passed validation against the standard 50,000 images; this set has 20.
        let data = Cifar10::synthetic(20, 4, 1);
        let cfg = TrainConfig {
            batch_size: 32,
            epochs: 1,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let e = run(
            &cfg,
            &data,
            &Device::Cpu,
            &RunOptions::new(dir.path()),
            &mut Recorder::default(),
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::Config(_)) && e.to_string().contains("fewer than one batch of 32"),
            "{e}"
        );
    }

    #[test]
    fn a_damaged_state_falls_back_to_the_previous_one_exactly() {
        let data = Cifar10::synthetic(96, 20, 4);
        let cfg = TrainConfig {
            epochs: 3,
            ..small_cfg()
        };
        let dir = tempfile::tempdir().unwrap();
        let opts = RunOptions::new(dir.path());
        let mut a = Recorder::default();
        let oa = run(&cfg, &data, &Device::Cpu, &opts, &mut a).unwrap();
        std::fs::write(dir.path().join(checkpoint::STATE_FILE), b"{").unwrap();
        let mut b = Recorder::default();
        let ob = run(&cfg, &data, &Device::Cpu, &opts, &mut b).unwrap();
        // Resumed after epoch 2 (state.prev.json): epoch 3 again, the same numbers.
        assert_eq!(exact(&b.epochs), exact(&a.epochs[2..]));
        assert_eq!(finished(&oa).2.to_bits(), finished(&ob).2.to_bits());
    }

    #[test]
    fn airnet_whitening_comes_from_the_training_split_and_resume_is_exact() {
        let data = Cifar10::synthetic(64, 16, 5);
        let cfg = TrainConfig {
            arch: "airnet".into(),
            activation: crate::config::Activation::Gelu,
            epochs: 2,
            batch_size: 16,
            lr: 0.05,
            momentum: 0.9,
            nesterov: true,
            seed: 2,
            translate: 2,
            flip: FlipKind::Alternate,
            lookahead: 0.95,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let opts = RunOptions::new(dir.path());
        let t = Trainer::new(&cfg, &data, &Device::Cpu, &opts).unwrap();
        let (x, _) = data::make_batch(
            &data.train,
            &t.train_idx,
            &Normalization::default(),
            None,
            &Device::Cpu,
        )
        .unwrap();
        let want = models::whiten::whitening_filters(&x, 2, models::whiten::EPS).unwrap();
        let whiten = |s: &Session| -> Vec<f32> {
            let v = &s.vars.iter().find(|(k, _)| k == "whiten.weight").unwrap().1;
            v.flatten_all().unwrap().to_vec1().unwrap()
        };
        assert_eq!(
            whiten(&t.s),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        drop(t);
        let mut a = Recorder::default();
        let oa = run(&cfg, &data, &Device::Cpu, &opts, &mut a).unwrap();
        // Interrupted mid-epoch 2 and resumed: the same numbers.
        let d2 = tempfile::tempdir().unwrap();
        let opts2 = RunOptions::new(d2.path());
        let mut c = Recorder {
            stop_at: Some((2, 1)),
            ..Default::default()
        };
        assert!(matches!(
            run(&cfg, &data, &Device::Cpu, &opts2, &mut c).unwrap(),
            Outcome::Interrupted { epoch: 2, batch: 1 }
        ));
        let mut d = Recorder::default();
        let od = run(&cfg, &data, &Device::Cpu, &opts2, &mut d).unwrap();
        let mut all = c.epochs.clone();
        all.extend(d.epochs.clone());
        assert_eq!(exact(&all), exact(&a.epochs));
        assert_eq!(finished(&oa).2.to_bits(), finished(&od).2.to_bits());
    }

    #[test]
    fn tta_averages_the_mirrored_and_shifted_logits() {
        let cfg = TrainConfig {
            arch: "cnn3".into(),
            ..Default::default()
        };
        let s = Session::new(&cfg, &Device::Cpu).unwrap();
        let model = s.model.as_ref();
        let x = Tensor::randn(0f32, 1., (2, 3, 32, 32), &Device::Cpu).unwrap();
        // The transformed images built by hand from the values.
        let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let build = |f: &dyn Fn(usize, usize) -> (usize, usize)| -> Tensor {
            let mut out = vec![0f32; v.len()];
            for bc in 0..6 {
                for y in 0..32 {
                    for xx in 0..32 {
                        let (sy, sx) = f(y, xx);
                        out[bc * 1024 + y * 32 + xx] = v[bc * 1024 + sy * 32 + sx];
                    }
                }
            }
            Tensor::from_vec(out, (2, 3, 32, 32), &Device::Cpu).unwrap()
        };
        let logits = |t: &Tensor| -> Vec<f32> {
            let l = model.forward_t(t, false).unwrap();
            l.flatten_all().unwrap().to_vec1().unwrap()
        };
        let r = |i: usize, s: isize| data::reflect(i as isize + s, 32);
        let plain = logits(&x);
        let flipped = logits(&build(&|y, xx| (y, 31 - xx)));
        let up = logits(&build(&|y, xx| (r(y, -1), r(xx, -1))));
        let up_flipped = logits(&build(&|y, xx| (r(y, -1), r(31 - xx, -1))));
        let down = logits(&build(&|y, xx| (r(y, 1), r(xx, 1))));
        let down_flipped = logits(&build(&|y, xx| (r(y, 1), r(31 - xx, 1))));
        let got = |tta| -> Vec<f32> {
            let l = tta_logits(model, &x, tta).unwrap();
            l.flatten_all().unwrap().to_vec1().unwrap()
        };
        let close = |a: &[f32], b: &[f32]| {
            assert_eq!(a.len(), b.len());
            for (p, q) in a.iter().zip(b) {
                assert!((p - q).abs() < 1e-5, "{a:?} vs {b:?}");
            }
        };
        assert_eq!(got(TtaKind::None), plain);
        let want: Vec<f32> = (0..20).map(|i| (plain[i] + flipped[i]) / 2.0).collect();
        close(&got(TtaKind::Flip), &want);
        let want: Vec<f32> = (0..20)
            .map(|i| {
                0.25 * (plain[i] + flipped[i])
                    + 0.125 * (up[i] + up_flipped[i] + down[i] + down_flipped[i])
            })
            .collect();
        close(&got(TtaKind::FlipTranslate), &want);
    }

    #[test]
    fn lookahead_matches_a_hand_computation() {
        let cfg = TrainConfig {
            lookahead: 0.9,
            ..Default::default()
        };
        let mut s = Session::new(&cfg, &Device::Cpu).unwrap();
        let get = |s: &Session| -> Vec<f32> {
            let v = &s.vars.iter().find(|(k, _)| k == "fc3.bias").unwrap().1;
            v.to_vec1().unwrap()
        };
        let set = |s: &Session, x: &[f32]| {
            let v = &s.vars.iter().find(|(k, _)| k == "fc3.bias").unwrap().1;
            v.set(&Tensor::new(x, &Device::Cpu).unwrap()).unwrap();
        };
        let a0: Vec<f32> = (0..10).map(|i| i as f32).collect();
        set(&s, &a0);
        s.start_lookahead().unwrap();
        let w: Vec<f32> = (0..10).map(|i| 10.0 - i as f32).collect();
        set(&s, &w);
        // Steps that are not multiples of 5 (and not the last) change nothing.
        s.lookahead_step(3, 20).unwrap();
        assert_eq!(get(&s), w);
        // Step 10 of 20: decay = 0.9^5 * (1/2)^3; avg = a0 + (w - a0) * (1 - decay).
        s.lookahead_step(10, 20).unwrap();
        let d = 0.9f64.powi(5) / 8.0;
        let avg: Vec<f64> = (0..10)
            .map(|i| a0[i] as f64 + (w[i] as f64 - a0[i] as f64) * (1.0 - d))
            .collect();
        for (g, a) in get(&s).iter().zip(&avg) {
            assert!((*g as f64 - a).abs() < 1e-5, "{g} vs {a}");
        }
        // The last step (not a multiple of 5): the weights become the average as it is.
        set(&s, &a0);
        s.lookahead_step(23, 23).unwrap();
        for (g, a) in get(&s).iter().zip(&avg) {
            assert!((*g as f64 - a).abs() < 1e-5, "{g} vs {a}");
        }
        // Off: nothing moves.
        let mut off = Session::new(&TrainConfig::default(), &Device::Cpu).unwrap();
        off.start_lookahead().unwrap();
        set(&off, &w);
        off.lookahead_step(10, 10).unwrap();
        assert_eq!(get(&off), w);
    }

    #[test]
    fn micro_batches_make_the_whole_batch_step() {
        // lenet has no batch norm, so the step is the same up to float summation order;
        // micro-batches of 3 split a batch of 8 unevenly (3, 3, 2).
        let cfg = TrainConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
            label_smoothing: 0.1,
            ..Default::default()
        };
        let x = Tensor::randn(0f32, 1., (8, 3, 32, 32), &Device::Cpu).unwrap();
        let y = Tensor::new(&[0u32, 1, 2, 3, 4, 5, 6, 7], &Device::Cpu).unwrap();
        let mut whole = Session::new(&cfg, &Device::Cpu).unwrap();
        let mut micro = Session::new(&cfg, &Device::Cpu).unwrap();
        for _ in 0..2 {
            let a = train_step(whole.model.as_ref(), &mut whole.opt, &x, &y, 0.1).unwrap();
            let b = train_step_micro(micro.model.as_ref(), &mut micro.opt, &x, &y, 0.1, 3).unwrap();
            assert!((a.loss - b.loss).abs() < 1e-6, "{} vs {}", a.loss, b.loss);
            assert_eq!(a.correct, b.correct);
        }
        for ((k, v), (_, w)) in whole.vars.iter().zip(&micro.vars) {
            let (v, w): (Vec<f32>, Vec<f32>) = (
                v.flatten_all().unwrap().to_vec1().unwrap(),
                w.flatten_all().unwrap().to_vec1().unwrap(),
            );
            let err = v
                .iter()
                .zip(&w)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err < 1e-5, "{k}: {err}");
        }
        assert_eq!(micro.opt.steps(), 2);
    }

    #[test]
    fn airnet_trains_its_whitening_bias_for_three_epochs_only() {
        let cfg = TrainConfig {
            arch: "airnet".into(),
            activation: crate::config::Activation::Gelu,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
            ..Default::default()
        };
        let mut s = Session::new(&cfg, &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1., (4, 3, 32, 32), &Device::Cpu).unwrap();
        let y = Tensor::new(&[0u32, 1, 2, 3], &Device::Cpu).unwrap();
        s.model.init_from_data(&x).unwrap();
        let get = |s: &Session, name: &str| -> Vec<f32> {
            let v = &s.vars.iter().find(|(k, _)| k == name).unwrap().1;
            v.flatten_all().unwrap().to_vec1().unwrap()
        };
        let moved = |s: &mut Session, epoch: usize| -> (bool, bool) {
            s.freeze_for_epoch(epoch);
            let (bias, head) = (get(s, "whiten.bias"), get(s, "head.weight"));
            let loss = cross_entropy(&s.model.forward_t(&x, true).unwrap(), &y, 0.0).unwrap();
            s.opt.backward_step(&loss).unwrap();
            (get(s, "whiten.bias") != bias, get(s, "head.weight") != head)
        };
        assert_eq!(moved(&mut s, 1), (true, true));
        assert_eq!(moved(&mut s, 3), (true, true));
        // Epoch 4 on: frozen (momentum and decay included), the rest trains on.
        assert_eq!(moved(&mut s, 4), (false, true));
        assert_eq!(moved(&mut s, 10), (false, true));
        // A resumed run sets the epoch's state again.
        assert_eq!(moved(&mut s, 2), (true, true));
    }

    #[test]
    fn bn_biases_are_found_by_their_running_statistics() {
        let names = |arch: &str| -> Vec<String> {
            let s = Session::new(
                &TrainConfig {
                    arch: arch.into(),
                    ..Default::default()
                },
                &Device::Cpu,
            )
            .unwrap();
            bn_biases(&s.vars)
                .into_iter()
                .map(|i| s.vars[i].0.clone())
                .collect()
        };
        assert_eq!(
            names("vgg6"),
            ["block1.bn.bias", "block2.bn.bias", "block3.bn.bias"]
        );
        assert!(names("cnn3").is_empty());
        let a = names("airnet");
        assert_eq!(a.len(), 6);
        assert!(
            a.iter()
                .all(|k| k.contains(".norm") && k.ends_with(".bias")),
            "{a:?}"
        );
    }

    #[test]
    fn label_smoothing_matches_its_definition() {
        let logits = Tensor::new(&[[2f32, 0.0, -1.0], [0.5, 0.5, 0.0]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
        let plain = cross_entropy(&logits, &y, 0.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let smooth = cross_entropy(&logits, &y, 0.1)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // By hand: log-softmax rows, nll = mean(-lp[y]), uniform = mean over rows and classes.
        let lsm = |r: [f64; 3]| {
            let m = r.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = r.iter().map(|x| (x - m).exp()).sum::<f64>().ln() + m;
            r.map(|x| x - z)
        };
        let (a, b) = (lsm([2.0, 0.0, -1.0]), lsm([0.5, 0.5, 0.0]));
        let nll = -(a[0] + b[2]) / 2.0;
        let uni = -(a.iter().sum::<f64>() + b.iter().sum::<f64>()) / 6.0;
        assert!((plain as f64 - nll).abs() < 1e-6);
        assert!((smooth as f64 - (0.9 * nll + 0.1 * uni)).abs() < 1e-6);
    }

    #[test]
    fn airnet_learns_from_a_slice_of_the_real_data() {
        let Some(src) = data::test_data_source() else {
            return;
        };
        let data = data::load(&src).unwrap();
        // sweeps/airnet.toml's recipe, scaled to batch 64 (lr 1.5 * 64 / 1024).
        let cfg = TrainConfig {
            arch: "airnet".into(),
            epochs: 2,
            batch_size: 64,
            lr: 0.1,
            momentum: 0.85,
            nesterov: true,
            weight_decay: 1.33e-3,
            label_smoothing: 0.2,
            schedule: ScheduleKind::Onecycle,
            warmup: 0.5,
            activation: crate::config::Activation::Gelu,
            translate: 2,
            flip: FlipKind::Alternate,
            lookahead: 0.95,
            tta: TtaKind::Flip,
            valid_fraction: 0.02,
            train_subset: Some(640),
            test_subset: Some(200),
            seed: 1,
            ..Default::default()
        };
        let (out, r) = run_in_temp_dir(&cfg, &data);
        let (_, _, _) = finished(&out);
        eprintln!("airnet on 640 real images: {:?}", r.epochs);
        let (first, last) = (&r.epochs[0], &r.epochs[1]);
        assert!(last.train_loss < first.train_loss, "{:?}", r.epochs);
        assert!(last.valid_loss < first.valid_loss, "{:?}", r.epochs);
        // The initial loss is about ln 10 = 2.30.
        assert!(last.valid_loss < 2.25, "{:?}", r.epochs);
    }

    /// `precision = "bf16"` on every model: the logits are those of fp32 to bf16's
    /// rounding but not equal to them (the layers did compute in bf16), every gradient
    /// reaches the fp32 weights as fp32 and points where fp32's does, and lenet still
    /// learns.
    #[test]
    fn bf16_autocast_stays_close_to_fp32_on_every_model() {
        let set = ImageSet::synthetic(8, 10, 5);
        let idx: Vec<usize> = (0..8).collect();
        let norm = data::Normalization::default();
        let (x, y) = data::make_batch(&set, &idx, &norm, None, &Device::Cpu).unwrap();
        for arch in models::arch_names() {
            let cfg32 = TrainConfig {
                arch: arch.into(),
                seed: 4,
                ..Default::default()
            };
            let cfg16 = TrainConfig {
                precision: crate::config::Precision::Bf16,
                ..cfg32.clone()
            };
            let pass = |cfg: &TrainConfig| {
                let s = Session::new(cfg, &Device::Cpu).unwrap();
                if s.model.wants_data() {
                    s.model.init_from_data(&x).unwrap();
                }
                // Evaluation mode: batch norm over 8 images would amplify the rounding
                // differences and measure that instead.
                let logits = s.model.forward_t(&x, false).unwrap();
                let loss = cross_entropy(&logits, &y, 0.0).unwrap();
                let grads = loss.backward().unwrap();
                let g: Vec<Vec<f32>> = s
                    .vars
                    .iter()
                    .filter_map(|(_, v)| grads.get(v.as_tensor()))
                    .map(|g| {
                        assert_eq!(g.dtype(), DType::F32, "{arch}");
                        g.flatten_all().unwrap().to_vec1().unwrap()
                    })
                    .collect();
                let l: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
                (l, g)
            };
            let ((l32, g32), (l16, g16)) = (pass(&cfg32), pass(&cfg16));
            let scale = l32.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
            let diff = l32
                .iter()
                .zip(&l16)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                diff > 0.0,
                "{arch}: bf16 logits equal fp32's: no bf16 layer ran"
            );
            // Measured: the logits within 1% of their scale (airnet 0.99%, the others
            // under 0.4%), gradient cosines 0.998-0.9996 (airnet 0.982).
            assert!(
                diff < 0.02 * scale,
                "{arch}: logits differ by {diff} (scale {scale})"
            );
            assert_eq!(g32.len(), g16.len(), "{arch}");
            let (mut dot, mut n32, mut n16) = (0f64, 0f64, 0f64);
            for (a, b) in g32.iter().flatten().zip(g16.iter().flatten()) {
                dot += (*a as f64) * (*b as f64);
                n32 += (*a as f64).powi(2);
                n16 += (*b as f64).powi(2);
            }
            let cos = dot / (n32.sqrt() * n16.sqrt());
            assert!(cos > 0.97, "{arch}: gradient cosine {cos}");
        }
        let data = Cifar10::synthetic(160, 40, 2);
        let cfg = TrainConfig {
            arch: "lenet".into(),
            epochs: 3,
            batch_size: 16,
            lr: 0.05,
            momentum: 0.9,
            precision: crate::config::Precision::Bf16,
            seed: 2,
            ..Default::default()
        };
        let (out, r) = run_in_temp_dir(&cfg, &data);
        finished(&out);
        let (first, last) = (&r.epochs[0], r.epochs.last().unwrap());
        assert!(last.train_loss < first.train_loss, "{:?}", r.epochs);
    }

    #[test]
    fn lenet_learns_from_a_slice_of_the_real_data() {
        let Some(src) = data::test_data_source() else {
            return;
        };
        let data = data::load(&src).unwrap();
        let cfg = TrainConfig {
            arch: "lenet".into(),
            epochs: 3,
            batch_size: 32,
            lr: 0.02,
            momentum: 0.9,
            train_subset: Some(6000),
            test_subset: Some(2000),
            seed: 1,
            ..Default::default()
        };
        let (out, r) = run_in_temp_dir(&cfg, &data);
        let (_, _, _) = finished(&out);
        let Outcome::Finished { test, .. } = out else {
            unreachable!()
        };
        let first = &r.epochs[0];
        let last = r.epochs.last().unwrap();
        eprintln!("lenet on 6,000 real images: {:?}", r.epochs);
        assert!(last.train_loss < first.train_loss - 0.1, "{:?}", r.epochs);
        assert!(last.valid_loss < first.valid_loss, "{:?}", r.epochs);
        // Chance is 10%; three short epochs reach well past 30%.
        assert!(test.accuracy > 0.30, "test accuracy {}", test.accuracy);
        assert_eq!(
            test.confusion.per_class().iter().map(|c| c.1).sum::<u64>(),
            2000
        );
    }
}
