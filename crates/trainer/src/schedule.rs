//! Learning-rate schedules. The rate is set per batch, from the fractional epoch, so warm-up
//! and one-cycle are smooth and a resumed run gets the same rates.

use crate::config::{ScheduleKind, TrainConfig};

/// The learning rate at `epoch` (fractional: 2.5 is half-way through the third epoch).
pub fn lr_at(cfg: &TrainConfig, epoch: f64) -> f64 {
    let total = cfg.epochs as f64;
    let warmup = cfg.warmup;
    if warmup > 0.0 && epoch < warmup {
        // Linear warm-up from lr/warm-up-length (never 0) to lr.
        return cfg.lr * ((epoch + 1e-3).min(warmup) / warmup).max(1e-3);
    }
    match cfg.schedule {
        ScheduleKind::Constant => cfg.lr,
        ScheduleKind::Step => {
            cfg.lr
                * cfg
                    .gamma
                    .powi((epoch / cfg.step_size as f64).floor() as i32)
        }
        ScheduleKind::Cosine => {
            let t = ((epoch - warmup) / (total - warmup)).clamp(0.0, 1.0);
            cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
        ScheduleKind::Onecycle => {
            let t = ((epoch - warmup) / (total - warmup)).clamp(0.0, 1.0);
            cfg.lr * (1.0 - t)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(schedule: ScheduleKind, warmup: f64) -> TrainConfig {
        TrainConfig {
            lr: 0.1,
            epochs: 10,
            schedule,
            warmup,
            step_size: 3,
            gamma: 0.5,
            ..Default::default()
        }
    }

    #[test]
    fn schedules() {
        let c = cfg(ScheduleKind::Constant, 0.0);
        assert_eq!(lr_at(&c, 0.0), 0.1);
        assert_eq!(lr_at(&c, 9.9), 0.1);
        let s = cfg(ScheduleKind::Step, 0.0);
        assert_eq!(lr_at(&s, 2.9), 0.1);
        assert_eq!(lr_at(&s, 3.0), 0.05);
        assert_eq!(lr_at(&s, 6.5), 0.025);
        let k = cfg(ScheduleKind::Cosine, 0.0);
        assert!((lr_at(&k, 0.0) - 0.1).abs() < 1e-12);
        assert!((lr_at(&k, 5.0) - 0.05).abs() < 1e-12);
        assert!(lr_at(&k, 10.0).abs() < 1e-12);
        let o = cfg(ScheduleKind::Onecycle, 2.0);
        assert!(lr_at(&o, 0.0) < 0.001);
        assert!((lr_at(&o, 1.0) - 0.05).abs() < 1e-3);
        assert!((lr_at(&o, 2.0) - 0.1).abs() < 1e-12);
        assert!((lr_at(&o, 6.0) - 0.05).abs() < 1e-12);
        assert!(lr_at(&o, 10.0).abs() < 1e-12);
    }
}
