//! Learning-rate schedules. The rate is set per batch, from the fractional epoch, so warm-up
//! and one-cycle are smooth and a resumed run gets the same rates.

use crate::config::{ScheduleKind, TrainConfig};

/// The learning rate at `epoch` (fractional: 2.5 is half-way through the third epoch).
pub fn lr_at(cfg: &TrainConfig, epoch: f64) -> f64 {
    let total = cfg.epochs as f64;
    let warmup = cfg.warmup;
    if warmup > 0.0 && epoch < warmup {
        if cfg.warmup_from > 0.0 {
            // Linear from lr * warmup_from to lr.
            let f = cfg.warmup_from;
            return cfg.lr * (f + (1.0 - f) * epoch / warmup);
        }
        // Linear warm-up from lr/warm-up-length (never 0) to lr.
        return cfg.lr * ((epoch + 1e-3).min(warmup) / warmup).max(1e-3);
    }
    // The decaying schedules end at lr * anneal_to; at 0 the arithmetic is the original's.
    let a = cfg.anneal_to;
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
            let c = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
            if a > 0.0 {
                cfg.lr * (a + (1.0 - a) * c)
            } else {
                cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
        ScheduleKind::Onecycle => {
            let t = ((epoch - warmup) / (total - warmup)).clamp(0.0, 1.0);
            if a > 0.0 {
                cfg.lr * (1.0 - (1.0 - a) * t)
            } else {
                cfg.lr * (1.0 - t)
            }
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
        // airbench's triangle: from 0.2 of the peak, up at 2.3 epochs, down to 0.07.
        let tri = TrainConfig {
            warmup: 2.3,
            warmup_from: 0.2,
            anneal_to: 0.07,
            ..o.clone()
        };
        assert!((lr_at(&tri, 0.0) - 0.02).abs() < 1e-12);
        assert!((lr_at(&tri, 1.15) - 0.06).abs() < 1e-12);
        assert!((lr_at(&tri, 2.3) - 0.1).abs() < 1e-12);
        assert!((lr_at(&tri, 6.15) - 0.1 * (1.0 - 0.93 * 0.5)).abs() < 1e-12);
        assert!((lr_at(&tri, 10.0) - 0.007).abs() < 1e-12);
        let cos = TrainConfig {
            anneal_to: 0.1,
            ..k.clone()
        };
        assert!((lr_at(&cos, 5.0) - 0.1 * (0.1 + 0.9 * 0.5)).abs() < 1e-12);
        assert!((lr_at(&cos, 10.0) - 0.01).abs() < 1e-12);
    }
}
