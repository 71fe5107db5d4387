//! Grid expansion: a pure function from a parsed sweep to its list of trial configs.

use crate::search::Sampling;
use crate::spec::{Pos, Setting, SpecError, SweepSpec};
use serde_json::{Map, Value};
use trainer::TrainConfig;

/// One trial of a sweep, before it has an identity in the database.
#[derive(Clone, Debug, PartialEq)]
pub struct TrialPlan {
    /// 0-based position in the sweep.
    pub ordinal: usize,
    /// The trial's full training configuration (the sweep's defaults with its settings applied).
    pub config: TrainConfig,
    /// The keys that vary across the sweep and their values here, in grid order.
    pub swept: Vec<(String, Value)>,
    /// A draw the TPE sampler proposes at run time from the results so far: `config` holds
    /// the random draw at this index, a stand-in of the same distribution for estimates,
    /// and is never recorded as a trial.
    pub proposed: bool,
}

/// How many trials `spec` expands to, computed without expanding it (saturating: a grid of
/// 10^30 points must be refused, not allocated).
pub fn count(spec: &SweepSpec) -> u128 {
    let grid_points = if spec.grid.is_empty() && !spec.trials.is_empty() {
        0
    } else {
        spec.grid
            .iter()
            .fold(1u128, |n, a| n.saturating_mul(a.values.len() as u128))
    };
    grid_points
        .saturating_mul(samples(spec) as u128)
        .saturating_add(spec.trials.len() as u128)
        .saturating_mul(spec.seeds.len().max(1) as u128)
}

/// Draws from the sampled space per grid point (1 without a space).
fn samples(spec: &SweepSpec) -> usize {
    spec.search.sampling.as_ref().map_or(1, |s| s.samples)
}

/// Refuses a sweep that expands to more than its `max_trials`, before anything is built.
pub fn check_size(spec: &SweepSpec) -> Result<usize, SpecError> {
    let total = count(spec);
    if total > spec.max_trials as u128 {
        return Err(spec.error(
            Pos { line: 1, col: 1 },
            None,
            format!(
                "the sweep expands to {total} trials, more than the limit of {}; \
                 pass --yes or raise `max_trials` to run it",
                spec.max_trials
            ),
        ));
    }
    Ok(total as usize)
}

/// Expands `spec`: the cartesian product of `[grid]` over `[data]`+`[base]` (the last grid key
/// varies fastest), each grid point with `samples` draws from `[space]` when there is one
/// (the same draws for every grid point, so grid values are compared on equal footing),
/// then each `[[trials]]`, each repeated once per entry of `seeds`.
/// Every resulting config is validated; an invalid value is reported where it was written.
pub fn expand(spec: &SweepSpec) -> Result<Vec<TrialPlan>, SpecError> {
    let total = check_size(spec)?;
    let mut out = Vec::with_capacity(total);
    for plan in plans(spec)? {
        out.push(plan?);
    }
    Ok(out)
}

/// [`expand`] one trial at a time, for sweeps too large to hold at once. The size limit is
/// checked first; each item is validated as it is produced, and a configuration that
/// repeats an earlier one (a `[[trials]]` entry equal to a grid point) is an error, since
/// the database would silently record it once.
pub fn plans(spec: &SweepSpec) -> Result<Plans<'_>, SpecError> {
    let total = check_size(spec)?;
    let grid_points = if spec.grid.is_empty() && !spec.trials.is_empty() {
        0
    } else {
        spec.grid.iter().map(|a| a.values.len()).product::<usize>() * samples(spec)
    };
    Ok(Plans {
        spec,
        grid_points,
        total,
        next: 0,
        seen: std::collections::HashMap::new(),
    })
}

/// The iterator behind [`plans`].
pub struct Plans<'a> {
    spec: &'a SweepSpec,
    grid_points: usize,
    total: usize,
    next: usize,
    /// A digest of each configuration so far and the ordinal that produced it.
    seen: std::collections::HashMap<[u8; 16], usize>,
}

impl<'a> Plans<'a> {
    /// The settings of layer `i`: grid point `i / samples` in mixed radix (last axis
    /// fastest) with draw `i % samples` from the space, or the `[[trials]]` entry after them.
    fn layer(&self, i: usize) -> Vec<Setting> {
        let spec: &'a SweepSpec = self.spec;
        if i < self.grid_points {
            let n = samples(spec);
            let (point, draw) = (i / n, i % n);
            let mut out: Vec<Setting> = self.point(point).into_iter().cloned().collect();
            if let Some(s) = &spec.search.sampling {
                out.extend(drawn(s, draw, s.space.draw(s.seed, draw as u64)));
            }
            out
        } else {
            spec.trials[i - self.grid_points].to_vec()
        }
    }

    /// How many layers (grid point × draw) come from the grid and the space, before the
    /// `[[trials]]` entries; each layer is one trial per seed.
    pub fn grid_layers(&self) -> usize {
        self.grid_points
    }

    /// Whether layer `i` is a draw TPE proposes at run time.
    fn proposed(&self, i: usize) -> bool {
        match &self.spec.search.sampling {
            Some(s) if i < self.grid_points => s.sampler.proposes(i % s.samples),
            _ => false,
        }
    }

    /// Grid point `i` in mixed radix (last axis fastest).
    pub(crate) fn point(&self, i: usize) -> Vec<&'a Setting> {
        let spec: &'a SweepSpec = self.spec;
        {
            let mut rest = i;
            let mut picked: Vec<&Setting> = spec
                .grid
                .iter()
                .rev()
                .map(|a| {
                    let v = &a.values[rest % a.values.len()];
                    rest /= a.values.len();
                    v
                })
                .collect();
            picked.reverse();
            picked
        }
    }

    /// Where layer `i` was written, for the duplicate message.
    fn describe(&self, ordinal: usize) -> String {
        let seeds = self.spec.seeds.len().max(1);
        let i = ordinal / seeds;
        if i < self.grid_points {
            let point = self
                .layer(i)
                .iter()
                .map(|s| format!("{}={}", s.key, s.value))
                .collect::<Vec<_>>()
                .join(" ");
            if point.is_empty() {
                "the [base] trial".into()
            } else {
                format!("the grid point {point}")
            }
        } else {
            format!("trials[{}]", i - self.grid_points)
        }
    }
}

impl Iterator for Plans<'_> {
    type Item = Result<TrialPlan, SpecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.total {
            return None;
        }
        let ordinal = self.next;
        self.next += 1;
        let seeds = self.spec.seeds.len().max(1);
        let layer = self.layer(ordinal / seeds);
        let (config, swept) = match build(self.spec, ordinal, &layer) {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        let digest = config_digest(&config);
        if let Some(&first) = self.seen.get(&digest) {
            let at = layer.first().map_or(Pos { line: 1, col: 1 }, |s| s.pos);
            let msg = format!(
                "{} is the same configuration as {} (trial #{}); the database would record it \
                 once: remove one",
                self.describe(ordinal),
                self.describe(first),
                first + 1
            );
            return Some(Err(self.spec.error(at, None, msg)));
        }
        self.seen.insert(digest, ordinal);
        Some(Ok(TrialPlan {
            ordinal,
            config,
            swept,
            proposed: self.proposed(ordinal / seeds),
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.total - self.next;
        (left, Some(left))
    }
}

/// The settings a draw from the space makes, named after it for error messages.
fn drawn(s: &Sampling, draw: usize, values: Vec<(String, Value)>) -> Vec<Setting> {
    values
        .into_iter()
        .zip(&s.pos)
        .map(|((key, value), pos)| Setting {
            path: format!("space.{key} (draw {draw})"),
            key,
            value,
            pos: *pos,
        })
        .collect()
}

/// Trial `ordinal`'s config and swept values, from its layer's settings and its seed.
fn build(
    spec: &SweepSpec,
    ordinal: usize,
    layer: &[Setting],
) -> Result<(TrainConfig, Vec<(String, Value)>), SpecError> {
    let seeds = spec.seeds.len().max(1);
    let seed = spec.seeds.get(ordinal % seeds);
    let settings: Vec<&Setting> = spec.base.iter().chain(layer.iter()).chain(seed).collect();
    let config = resolve(spec, &settings)?;
    let mut swept: Vec<(String, Value)> = layer
        .iter()
        .map(|s| (s.key.clone(), s.value.clone()))
        .collect();
    if let Some(s) = seed {
        swept.push(("seed".into(), s.value.clone()));
    }
    Ok((config, swept))
}

/// Where a TPE proposal stands in the sweep: grid point `layer / samples`, draw
/// `layer % samples`. The trials of `layer` (one per seed) with the space's dimensions set to
/// `values` (in the space's order), validated like every other trial.
pub fn proposal(
    spec: &SweepSpec,
    layer: usize,
    values: &[Value],
) -> Result<Vec<TrialPlan>, SpecError> {
    let s = spec
        .search
        .sampling
        .as_ref()
        .expect("proposals come from a sampled space");
    let plans = plans(spec)?;
    let mut settings: Vec<Setting> = plans
        .point(layer / s.samples)
        .into_iter()
        .cloned()
        .collect();
    let named = s
        .space
        .dims
        .iter()
        .map(|(k, _)| k.clone())
        .zip(values.iter().cloned());
    settings.extend(drawn(s, layer % s.samples, named.collect()));
    let seeds = spec.seeds.len().max(1);
    (layer * seeds..(layer + 1) * seeds)
        .map(|ordinal| {
            let (config, swept) = build(spec, ordinal, &settings)?;
            Ok(TrialPlan {
                ordinal,
                config,
                swept,
                proposed: true,
            })
        })
        .collect()
}

/// 128 bits of SHA-256 of the config's JSON: enough to tell configurations apart, small
/// enough to keep one per trial of a million-trial sweep.
fn config_digest(config: &TrainConfig) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let full = Sha256::digest(serde_json::to_vec(config).expect("config serialises"));
    let mut d = [0u8; 16];
    d.copy_from_slice(&full[..16]);
    d
}

/// Applies `settings` (later wins) over the defaults and validates the result.
fn resolve(spec: &SweepSpec, settings: &[&Setting]) -> Result<TrainConfig, SpecError> {
    let mut map = match serde_json::to_value(TrainConfig::default()) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for s in settings {
        map.insert(s.key.clone(), s.value.clone());
    }
    // The parser type-checks every value, so this only fails on a bug; still name the keys.
    let config: TrainConfig = serde_json::from_value(Value::Object(map)).map_err(|e| {
        let at = settings.last().map_or(Pos { line: 1, col: 1 }, |s| s.pos);
        spec.error(
            at,
            None,
            format!("internal: cannot build the configuration: {e}"),
        )
    })?;
    if let Err((field, msg)) = trainer::models::validate(&config) {
        // Point at the setting that produced the field; a cross-field rule (warmup vs
        // epochs) may be caused by a default, then the first line of the file is named.
        let at = settings.iter().rev().find(|s| s.key == field);
        let (pos, key) = match at {
            Some(s) => (s.pos, s.path.clone()),
            None => (Pos { line: 1, col: 1 }, field.to_string()),
        };
        return Err(spec.error(pos, Some(&key), msg));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse;

    fn plans(text: &str) -> Vec<TrialPlan> {
        expand(&parse("t.toml", text).unwrap()).unwrap()
    }

    /// The sweep files the repository ships (README and justfile point at them) must stay
    /// valid as the hyperparameters evolve.
    #[test]
    fn every_committed_sweep_file_parses_and_expands() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sweeps");
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let spec =
                crate::spec::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let trials = expand(&spec).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!trials.is_empty(), "{}: no trials", path.display());
            files += 1;
        }
        assert!(
            files >= 6,
            "found only {files} sweep files in {}",
            dir.display()
        );
    }

    fn err(text: &str) -> String {
        match parse("t.toml", text) {
            Err(e) => e.to_string(),
            Ok(spec) => expand(&spec).unwrap_err().to_string(),
        }
    }

    #[test]
    fn product_order_last_key_fastest() {
        let p = plans(
            r#"name = "g"
[base]
arch = "cnn3"
epochs = 2
[grid]
lr = [0.1, 0.01]
batch_size = [20, 64, 128]
"#,
        );
        let got: Vec<(f64, usize)> = p
            .iter()
            .map(|t| (t.config.lr, t.config.batch_size))
            .collect();
        assert_eq!(
            got,
            vec![
                (0.1, 20),
                (0.1, 64),
                (0.1, 128),
                (0.01, 20),
                (0.01, 64),
                (0.01, 128)
            ]
        );
        assert!(p
            .iter()
            .all(|t| t.config.arch == "cnn3" && t.config.epochs == 2));
        assert_eq!(p[4].ordinal, 4);
        assert_eq!(
            p[4].swept,
            vec![
                ("lr".into(), Value::from(0.01)),
                ("batch_size".into(), Value::from(64u64))
            ]
        );
    }

    #[test]
    fn extra_trials_override_base_and_seeds_repeat_everything() {
        let p = plans(
            r#"name = "g"
seeds = [1, 2]
[data]
valid_fraction = 0.1
[base]
arch = "vgg6"
lr = 0.001
[grid]
dropout = [0.0, 0.5]
[[trials]]
arch = "lenet"
lr = 0.01
"#,
        );
        assert_eq!(p.len(), 6);
        let summary: Vec<(String, f64, f64, u64)> = p
            .iter()
            .map(|t| {
                (
                    t.config.arch.clone(),
                    t.config.lr,
                    t.config.dropout,
                    t.config.seed,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("vgg6".into(), 0.001, 0.0, 1),
                ("vgg6".into(), 0.001, 0.0, 2),
                ("vgg6".into(), 0.001, 0.5, 1),
                ("vgg6".into(), 0.001, 0.5, 2),
                ("lenet".into(), 0.01, 0.0, 1),
                ("lenet".into(), 0.01, 0.0, 2),
            ]
        );
        assert!(p.iter().all(|t| t.config.valid_fraction == 0.1));
    }

    #[test]
    fn no_grid_is_one_trial_and_only_trials_is_just_those() {
        assert_eq!(plans("name = \"a\"\n[base]\nepochs = 1\n").len(), 1);
        let p = plans("name = \"a\"\n[[trials]]\narch = \"cnn3\"\n[[trials]]\narch = \"vgg6\"\n");
        assert_eq!(
            p.iter().map(|t| t.config.arch.as_str()).collect::<Vec<_>>(),
            vec!["cnn3", "vgg6"]
        );
        // Defaults are the tutorial's.
        assert_eq!(p[0].config.lr, 0.01);
        assert_eq!(p[0].config.epochs, 30);
    }

    #[test]
    fn invalid_values_are_located() {
        assert_eq!(
            err("name = \"a\"\n[grid]\nlr = [0.1, -0.5]\n"),
            "t.toml:3:12: grid.lr[1]: lr must be > 0, got -0.5"
        );
        assert_eq!(
            err("name = \"a\"\n[base]\narch = \"resnet\"\n"),
            "t.toml:3:8: base.arch: unknown architecture `resnet` (known: lenet, cnn3, vgg6, airnet)"
        );
        assert_eq!(
            err("name = \"a\"\n[[trials]]\ndropout = 1.0\n"),
            "t.toml:3:11: trials[0].dropout: dropout must be in [0, 1), got 1"
        );
    }

    #[test]
    fn too_many_trials_is_refused() {
        let e = err("name = \"a\"\nmax_trials = 3\n[grid]\nlr = [0.1, 0.2]\nbatch_size = [1, 2]\n");
        assert_eq!(
            e,
            "t.toml:1:1: the sweep expands to 4 trials, more than the limit of 3; pass --yes or raise `max_trials` to run it"
        );
    }

    const SEARCH: &str = r#"name = "s"
samples = 6
sampler_seed = 11
objective = "valid_acc"
[base]
arch = "cnn3"
epochs = 3
[grid]
batch_size = [32, 64]
[space]
lr = { log_uniform = [1e-4, 0.3] }
momentum = { uniform = [0.0, 0.95] }
label_smoothing = { choice = [0.0, 0.1] }
[prune]
kind = "asha"
reduction_factor = 3
"#;

    #[test]
    fn a_sampled_space_gives_every_grid_point_the_same_draws() {
        let p = plans(SEARCH);
        assert_eq!(p.len(), 12);
        let (a, b) = p.split_at(6);
        for (x, y) in a.iter().zip(b) {
            assert_eq!((x.config.batch_size, y.config.batch_size), (32, 64));
            assert_eq!(x.config.lr.to_bits(), y.config.lr.to_bits());
            assert_eq!(x.config.momentum.to_bits(), y.config.momentum.to_bits());
        }
        assert!(a.iter().all(|t| (1e-4..=0.3).contains(&t.config.lr)));
        let lrs: std::collections::HashSet<u64> = a.iter().map(|t| t.config.lr.to_bits()).collect();
        assert_eq!(lrs.len(), 6);
        // The sampled keys are part of what varies.
        let keys: Vec<&str> = a[0].swept.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec!["batch_size", "lr", "momentum", "label_smoothing"]
        );
        // Reproducible: the same file, the same trials; another seed, others.
        assert_eq!(plans(SEARCH), p);
        let other = plans(&SEARCH.replace("sampler_seed = 11", "sampler_seed = 12"));
        assert_ne!(other[0].config.lr, p[0].config.lr);
        let spec = parse("t.toml", SEARCH).unwrap();
        assert_eq!(count(&spec), 12);
        assert_eq!(
            spec.search.prune,
            crate::search::Prune::Asha(crate::prune::Asha {
                reduction_factor: 3,
                grace_epochs: 1
            })
        );
    }

    #[test]
    fn search_mistakes_are_located() {
        let cases: &[(&str, &str)] = &[
            ("name = \"a\"\n[space]\nlr = { log_uniform = [1e-4, 0.3] }\n", "t.toml:2:1: space: a [space] needs `samples = N` (how many configurations to draw)"),
            ("name = \"a\"\nsamples = 3\n", "t.toml:2:1: samples: `samples` without a [space] to draw from"),
            ("name = \"a\"\nsamples = 3\n[space]\nlr = { log_uniform = [-4, -1] }\n", "t.toml:4:22: space.lr.log_uniform: log_uniform needs bounds > 0 (got -4); bounds are values, not exponents: write [1e-4, 0.3], not [-4, -0.5]"),
            ("name = \"a\"\nsamples = 3\n[space]\nlr = { gaussian = [0, 1] }\n", "t.toml:4:8: space.lr.gaussian: unknown distribution `gaussian` (expected one of: uniform, log_uniform, int_uniform, choice)"),
            ("name = \"a\"\nsamples = 3\n[space]\nbatch_size = { choice = [] }\n", "t.toml:4:25: space.batch_size.choice: an empty choice: give at least one value"),
            ("name = \"a\"\nsamples = 3\n[space]\nbatch_size = { uniform = [16, 64] }\n", "t.toml:4:16: space.batch_size.uniform: `batch_size` is an integer; use int_uniform or choice"),
            ("name = \"a\"\nsamples = 3\n[base]\nlr = 0.1\n[space]\nlr = { uniform = [0.1, 0.2] }\n", "t.toml:6:1: space.lr: `lr` is set in both [base] (line 4) and [space]; keep one"),
            ("name = \"a\"\nsamples = 5\n[space]\nbatch_size = { choice = [16, 32] }\n", "t.toml:2:1: samples: the space has only 2 different configurations, fewer than samples = 5; lower samples or use a [grid]"),
            ("name = \"a\"\nsamples = 3\nsampler = \"tpe\"\nobjectives = [\"valid_acc\", \"train_seconds\"]\n[space]\nlr = { uniform = [0.1, 0.2] }\n", "t.toml:3:11: sampler: the `tpe` sampler models one objective; with `objectives` use \"random\" (pareto-asha keeps the trade-off front)"),
            ("name = \"a\"\n[prune]\nkind = \"asha\"\nwarmup_epochs = 2\n", "t.toml:4:1: prune.warmup_epochs: `warmup_epochs` does not apply to kind = \"asha\""),
            ("name = \"a\"\n[prune]\nkind = \"hyperband\"\n", "t.toml:3:8: prune.kind: unknown pruner `hyperband` (expected one of: asha, median, none)"),
            ("name = \"a\"\n[prune]\nkind = \"asha\"\nreduction_factor = 1\n", "t.toml:4:20: prune.reduction_factor: expected an integer >= 2"),
            ("name = \"a\"\nobjective = \"accuracy\"\n", "t.toml:2:13: objective: unknown objective `accuracy` (expected one of: valid_acc, valid_loss, train_seconds)"),
            ("name = \"a\"\nobjectives = [\"valid_acc\"]\n", "t.toml:2:14: objectives: give two or more objectives (or one with `objective = ...`)"),
            ("name = \"a\"\nobjectives = [\"valid_acc\", \"train_seconds\"]\n[prune]\nkind = \"median\"\n", "t.toml:3:1: prune: the median rule takes one objective; use kind = \"asha\" with several"),
            ("name = \"a\"\nsamples = 4\n[space]\nmomentum = { uniform = [0.5, 1.5] }\n", "t.toml:4:12: space.momentum (draw 1): momentum must be in [0, 1), got 1.037"),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.starts_with(want), "\n got: {got}\nwant: {want}");
        }
    }
}
