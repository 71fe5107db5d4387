//! How long a sweep should take: from epochs already recorded for the same architecture,
//! batch size and device when there are any, else from a few timed training steps
//! ([`trainer::train::time_steps`]), scaled by each trial's images and epochs; and what ASHA
//! pruning is expected to save.

use crate::prune::Asha;
use crate::store::{DbError, Store};
use std::collections::HashMap;
use std::time::Duration;
use trainer::data::{split_sizes, valid_count, TEST_IMAGES, TRAIN_IMAGES};
use trainer::TrainConfig;

/// Evaluating an image (forward only) costs about a third of training on it (forward and a
/// backward about twice as dear): how history, which records whole epochs, is split.
pub const EVAL_SHARE: f64 = 1.0 / 3.0;
/// The most a `plan` or `run` spends timing steps, all configurations together.
pub const CALIBRATION_BUDGET: Duration = Duration::from_secs(3);
/// Timed steps per configuration (after the warm-up), when the budget allows.
const CALIBRATION_STEPS: usize = 3;

/// Seconds per image for one (architecture, batch size) on one device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    /// Seconds per training image (forward and backward).
    pub train: f64,
    /// Seconds per evaluated image (forward only: validation and test).
    pub eval: f64,
    /// Whether the rate was measured from recorded epochs or from timed steps.
    pub source: Source,
}

/// Where a rate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Epochs already recorded in the database.
    History,
    /// Training steps timed just now.
    Timed,
}

/// The images a trial trains on and validates on per epoch, and tests on once.
pub fn trial_images(cfg: &TrainConfig) -> (usize, usize, usize) {
    let (train, valid) = split_sizes(
        TRAIN_IMAGES,
        cfg.valid_fraction,
        cfg.train_subset,
        cfg.batch_size,
    )
    .unwrap_or_else(|_| {
        // A config the trainer will refuse: still an estimate, never a panic.
        let valid = valid_count(TRAIN_IMAGES, cfg.valid_fraction);
        let train = (TRAIN_IMAGES - valid).min(cfg.train_subset.unwrap_or(usize::MAX));
        (train, valid)
    });
    let test = TEST_IMAGES.min(cfg.test_subset.unwrap_or(usize::MAX));
    (train, valid, test)
}

/// Seconds `cfg` should take over `epochs` epochs at `rates`: each epoch trains on the
/// training images and validates on the held-out ones; a trial that runs all its epochs is
/// tested once at the end.
pub fn trial_seconds(cfg: &TrainConfig, rates: &Rates, epochs: f64) -> f64 {
    let (train, valid, test) = trial_images(cfg);
    let epoch = train as f64 * rates.train + valid as f64 * rates.eval;
    epochs * epoch + test as f64 * rates.eval
}

/// The expected number of epochs a trial of `epochs` runs under ASHA when every rung keeps
/// the top 1/η: it passes rung k (0-based) with probability 1/η^(k+1). A rung at the last
/// epoch prunes nothing. An expectation over many trials: with fewer than η trials at a rung
/// all continue, so a small sweep runs more.
pub fn asha_expected_epochs(rule: &Asha, epochs: usize) -> f64 {
    let eta = rule.reduction_factor.max(2) as f64;
    let mut expected = 0.0;
    let (mut from, mut alive) = (0usize, 1.0f64);
    let mut rung = rule.grace_epochs.max(1);
    while rung < epochs {
        expected += (rung - from) as f64 * alive;
        alive /= eta;
        from = rung;
        rung = match rung.checked_mul(rule.reduction_factor.max(2)) {
            Some(r) => r,
            None => break,
        };
    }
    expected + (epochs - from.min(epochs)) as f64 * alive
}

/// Seconds per image from the epochs recorded for `arch` at `batch` on `device` (any batch
/// size when none at this one), or `None` when nothing is recorded. An epoch's seconds cover
/// training and validation: they are shared out with validation images at [`EVAL_SHARE`].
pub fn history_rates(
    db: &Store,
    arch: &str,
    batch: usize,
    device: &str,
) -> Result<Option<Rates>, DbError> {
    for b in [Some(batch), None] {
        if let Some(per_image) = db.seconds_per_image(arch, device, b, EVAL_SHARE, TRAIN_IMAGES)? {
            return Ok(Some(Rates {
                train: per_image,
                eval: per_image * EVAL_SHARE,
                source: Source::History,
            }));
        }
    }
    Ok(None)
}

/// Rates for every distinct (architecture, batch size) of `configs`: recorded history when
/// `db` has some, else timed steps, shared out of [`CALIBRATION_BUDGET`]. Timing happens
/// once per pair, never per trial.
pub fn rates_for<'a>(
    configs: impl IntoIterator<Item = &'a TrainConfig>,
    db: Option<&Store>,
    device: &trainer::Device,
) -> Result<HashMap<(String, usize), Rates>, crate::Error> {
    let name = trainer::device::name(device);
    let mut rates = HashMap::new();
    let mut untimed: Vec<&TrainConfig> = Vec::new();
    for cfg in configs {
        let key = (cfg.arch.clone(), cfg.batch_size);
        if rates.contains_key(&key)
            || untimed
                .iter()
                .any(|c| (&c.arch, c.batch_size) == (&key.0, key.1))
        {
            continue;
        }
        match db
            .map(|db| history_rates(db, &cfg.arch, cfg.batch_size, &name))
            .transpose()?
        {
            Some(Some(r)) => {
                rates.insert(key, r);
            }
            _ => untimed.push(cfg),
        }
    }
    let each = CALIBRATION_BUDGET / untimed.len().max(1) as u32;
    for cfg in untimed {
        let t = trainer::train::time_steps(cfg, device, CALIBRATION_STEPS, each)?;
        rates.insert(
            (cfg.arch.clone(), cfg.batch_size),
            Rates {
                train: t.train_per_image.as_secs_f64(),
                eval: t.eval_per_image.as_secs_f64(),
                source: Source::Timed,
            },
        );
    }
    Ok(rates)
}

/// The rate for `cfg` out of [`rates_for`]'s map.
pub fn rate_of<'a>(
    rates: &'a HashMap<(String, usize), Rates>,
    cfg: &TrainConfig,
) -> Option<&'a Rates> {
    rates.get(&(cfg.arch.clone(), cfg.batch_size))
}

/// A sweep's estimate, summed over its trials.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Total {
    /// How many trials the estimate covers.
    pub trials: usize,
    /// Expected seconds for all trials run in full.
    pub seconds: f64,
    /// Trials estimated from recorded epochs (the others from timed steps).
    pub from_history: usize,
    /// Seconds expected with the sweep's ASHA pruning, when it has some.
    pub pruned_seconds: Option<f64>,
    /// Epochs of all trials run in full.
    pub epochs: f64,
    /// Expected epochs with the sweep's ASHA pruning (0 without it).
    pub pruned_epochs: f64,
}

impl Total {
    /// Adds one trial that takes `seconds` in full.
    pub fn add(&mut self, cfg: &TrainConfig, rates: &Rates, asha: Option<&Asha>) {
        self.trials += 1;
        self.seconds += trial_seconds(cfg, rates, cfg.epochs as f64);
        self.epochs += cfg.epochs as f64;
        if rates.source == Source::History {
            self.from_history += 1;
        }
        if let Some(rule) = asha {
            let e = asha_expected_epochs(rule, cfg.epochs);
            // A pruned trial is never tested; the test pass is a small part, kept for all.
            *self.pruned_seconds.get_or_insert(0.0) += trial_seconds(cfg, rates, e);
            self.pruned_epochs += e;
        }
    }

    /// Where the figures came from, for a person.
    pub fn basis(&self) -> String {
        match (self.from_history, self.trials - self.from_history) {
            (0, _) => "estimated from a few timed training steps".into(),
            (_, 0) => "estimated from recorded epochs".into(),
            (h, t) => format!(
                "estimated from recorded epochs for {h} trials, timed training steps for {t}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(train: f64, eval: f64) -> Rates {
        Rates {
            train,
            eval,
            source: Source::Timed,
        }
    }

    #[test]
    fn images_follow_the_split_and_the_subsets() {
        assert_eq!(
            trial_images(&TrainConfig::default()),
            (40_000, 10_000, 10_000)
        );
        let small = TrainConfig {
            train_subset: Some(100),
            test_subset: Some(50),
            batch_size: 10,
            ..TrainConfig::default()
        };
        assert_eq!(trial_images(&small), (100, 10_000, 50));
    }

    #[test]
    fn seconds_are_epochs_of_training_and_validation_plus_one_test() {
        let cfg = TrainConfig {
            epochs: 30,
            ..TrainConfig::default()
        };
        // 30 × (40,000 × 1 ms + 10,000 × 0.5 ms) + 10,000 × 0.5 ms = 30 × 45 s + 5 s.
        let s = trial_seconds(&cfg, &rates(1e-3, 5e-4), 30.0);
        assert!((s - 1355.0).abs() < 1e-9, "{s}");
    }

    #[test]
    fn asha_expected_epochs_halve_at_each_rung() {
        let rule = |eta, grace| Asha {
            reduction_factor: eta,
            grace_epochs: grace,
        };
        // Rungs 1, 3, 9 before 27: 1 + 2/3 + 6/9 + 18/27.
        let e = asha_expected_epochs(&rule(3, 1), 27);
        assert!(
            (e - (1.0 + 2.0 / 3.0 + 6.0 / 9.0 + 18.0 / 27.0)).abs() < 1e-12,
            "{e}"
        );
        // A rung at the last epoch prunes nothing; no rung before the end: every epoch.
        assert_eq!(asha_expected_epochs(&rule(3, 1), 1), 1.0);
        assert_eq!(asha_expected_epochs(&rule(3, 5), 5), 5.0);
        assert_eq!(asha_expected_epochs(&rule(3, 5), 3), 3.0);
        // η = 2, grace 2, 8 epochs: rungs 2, 4: 2 + 2/2 + 4/4.
        assert_eq!(asha_expected_epochs(&rule(2, 2), 8), 4.0);
    }

    #[test]
    fn totals_add_up_and_say_where_they_came_from() {
        let cfg = TrainConfig {
            epochs: 27,
            train_subset: Some(1000),
            valid_fraction: 0.02,
            test_subset: Some(0),
            ..TrainConfig::default()
        };
        let rule = Asha {
            reduction_factor: 3,
            grace_epochs: 1,
        };
        let mut t = Total::default();
        t.add(&cfg, &rates(1e-3, 0.0), Some(&rule));
        t.add(
            &cfg,
            &Rates {
                source: Source::History,
                ..rates(1e-3, 0.0)
            },
            Some(&rule),
        );
        assert_eq!((t.trials, t.from_history, t.epochs), (2, 1, 54.0));
        assert!((t.seconds - 54.0).abs() < 1e-9, "{}", t.seconds);
        let pruned = t.pruned_seconds.unwrap();
        assert!((pruned - 2.0 * asha_expected_epochs(&rule, 27)).abs() < 1e-9);
        assert!(t.basis().contains("1 trials"), "{}", t.basis());
    }
}
