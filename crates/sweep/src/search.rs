//! The search part of a sweep file: a sampled `[space]`, the objective(s), and `[prune]`.
//!
//! ```toml
//! samples = 40                  # draws from [space] (for every grid point)
//! sampler = "random"            # or "tpe" (see crate::tpe)
//! sampler_seed = 0              # optional: draw i is a pure function of (this, i)
//! objective = "valid_acc"       # or "valid_loss" (default); or
//! objectives = ["valid_acc", "train_seconds"]   # Pareto pruning
//! [space]
//! lr = { log_uniform = [1e-4, 0.3] }
//! momentum = { uniform = [0.0, 0.95] }
//! epochs = { int_uniform = [10, 30] }
//! batch_size = { choice = [32, 64, 128] }
//! [prune]
//! kind = "asha"                 # "asha", "median" or "none"
//! reduction_factor = 3          # asha: keep the best 1/η at each rung
//! grace_epochs = 1              # asha: rungs at grace·η^k epochs
//! warmup_epochs = 1             # median: no stopping up to this epoch
//! startup_trials = 5            # median: no stopping before this many trials finished
//! ```

use crate::prune::{Asha, Direction, Median};
use crate::space::{Distribution, Space};
use crate::spec::{Ctx, Kind, Pos, SpecError};
use serde_json::Value;
use toml_edit::TableLike;

/// The top-level keys this module reads.
pub const KEYS: &[&str] = &[
    "samples",
    "sampler",
    "sampler_seed",
    "objective",
    "objectives",
    "space",
    "prune",
];

/// A metric that pruning and "best" are judged on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    /// Validation accuracy (`valid_acc`): larger is better.
    ValidAcc,
    /// Validation loss (`valid_loss`, the default): smaller is better.
    ValidLoss,
    /// Training seconds so far: with an accuracy, the accuracy-against-time trade-off.
    TrainSeconds,
}

impl Objective {
    const NAMES: &'static [&'static str] = &["valid_acc", "valid_loss", "train_seconds"];

    fn parse(s: &str) -> Option<Self> {
        match s {
            "valid_acc" => Some(Objective::ValidAcc),
            "valid_loss" => Some(Objective::ValidLoss),
            "train_seconds" => Some(Objective::TrainSeconds),
            _ => None,
        }
    }

    /// The objective's name in a sweep file (`valid_acc`, ...).
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Whether larger or smaller values are better.
    pub fn direction(self) -> Direction {
        match self {
            Objective::ValidAcc => Direction::Maximize,
            Objective::ValidLoss | Objective::TrainSeconds => Direction::Minimize,
        }
    }
}

/// How hopeless trials are stopped early.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Prune {
    /// No pruning: every trial runs all its epochs (`kind = "none"`, or no `[prune]`).
    None,
    /// Asynchronous successive halving.
    Asha(Asha),
    /// The median rule.
    Median(Median),
}

/// How the configurations of a `[space]` are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sampler {
    /// Draw `i` is a pure function of (seed, i): see [`crate::space`].
    #[default]
    Random,
    /// Tree-structured Parzen Estimator: the first [`crate::tpe::N_STARTUP`] draws of each
    /// grid point are the random ones, the rest proposed from the results so far.
    Tpe,
}

impl Sampler {
    /// Whether draw `draw` of a grid point is proposed at run time from the results (TPE
    /// after its random start) rather than known in advance.
    pub fn proposes(self, draw: usize) -> bool {
        self == Sampler::Tpe && draw >= crate::tpe::N_STARTUP
    }
}

/// A sampled space and how many draws to take from it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// Draws from the space for every grid point (`samples`).
    pub samples: usize,
    /// How draws are chosen (`sampler`).
    pub sampler: Sampler,
    /// The sampler's seed (`sampler_seed`, 0 by default): draw `i` is a pure function of it and `i`.
    pub seed: u64,
    /// The `[space]`: one distribution per key.
    pub space: Space,
    /// Where each dimension was written (same order as `space.dims`).
    pub pos: Vec<Pos>,
}

/// Everything search-related in a sweep file.
#[derive(Clone, Debug, PartialEq)]
pub struct Search {
    /// The sampled `[space]` and its draws; `None` for a plain grid.
    pub sampling: Option<Sampling>,
    /// One objective, or several (Pareto).
    pub objectives: Vec<Objective>,
    /// The early stopping rule (`[prune]`).
    pub prune: Prune,
}

impl Default for Search {
    fn default() -> Self {
        Search {
            sampling: None,
            objectives: vec![Objective::ValidLoss],
            prune: Prune::None,
        }
    }
}

const DISTRIBUTIONS: &[&str] = &["uniform", "log_uniform", "int_uniform", "choice"];
const PRUNE_KEYS: &[&str] = &[
    "kind",
    "reduction_factor",
    "grace_epochs",
    "warmup_epochs",
    "startup_trials",
];

fn number(v: &toml_edit::Value) -> Option<f64> {
    v.as_float().or_else(|| v.as_integer().map(|i| i as f64))
}

/// Reads the search keys of a parsed sweep file. `taken(key)` says where else (`[base]`,
/// `[grid]`, `[data]`) a hyperparameter is already set, for conflicts.
pub(crate) fn parse(
    cx: &Ctx,
    root: &toml_edit::Table,
    taken: &dyn Fn(&str) -> Option<String>,
) -> Result<Search, SpecError> {
    let at = |key: &str| root.key(key).and_then(|k| k.span());
    let mut search = Search::default();

    // Objectives.
    let one = |item: &toml_edit::Item, path: &str| -> Result<Objective, SpecError> {
        let s = item
            .as_str()
            .ok_or_else(|| cx.err(item.span(), path, "expected a string"))?;
        Objective::parse(s).ok_or_else(|| {
            cx.err(
                item.span(),
                path,
                crate::spec::unknown_key(s, Objective::NAMES, "objective"),
            )
        })
    };
    match (root.get("objective"), root.get("objectives")) {
        (Some(_), Some(_)) => {
            return Err(cx.err(
                at("objectives"),
                "objectives",
                "`objective` and `objectives` cannot both be set; keep one",
            ))
        }
        (Some(item), None) => {
            let o = one(item, "objective")?;
            if o == Objective::TrainSeconds {
                return Err(cx.err(
                    item.span(),
                    "objective",
                    "train_seconds alone is not a useful objective; pair it with an accuracy: \
                     objectives = [\"valid_acc\", \"train_seconds\"]",
                ));
            }
            search.objectives = vec![o];
        }
        (None, Some(item)) => {
            let arr = item.as_array().ok_or_else(|| {
                cx.err(
                    item.span(),
                    "objectives",
                    "expected a list, e.g. objectives = [\"valid_acc\", \"train_seconds\"]",
                )
            })?;
            let mut out = Vec::new();
            for (i, v) in arr.iter().enumerate() {
                let path = format!("objectives[{i}]");
                let o = one(&toml_edit::Item::Value(v.clone()), &path).map_err(|e| SpecError {
                    pos: Pos::of(cx.text, v.span()),
                    ..e
                })?;
                if out.contains(&o) {
                    return Err(cx.err(v.span(), &path, format!("{} is listed twice", o.name())));
                }
                out.push(o);
            }
            if out.len() < 2 {
                return Err(cx.err(
                    item.span(),
                    "objectives",
                    "give two or more objectives (or one with `objective = ...`)",
                ));
            }
            search.objectives = out;
        }
        (None, None) => {}
    }

    // The space.
    let samples = match root.get("samples") {
        None => None,
        Some(item) => match item.as_integer() {
            Some(n) if n > 0 => Some(n as usize),
            _ => {
                return Err(cx.err(
                    item.span(),
                    "samples",
                    "expected a positive integer (how many configurations to draw)",
                ))
            }
        },
    };
    let mut sampler = Sampler::Random;
    if let Some(item) = root.get("sampler") {
        match item.as_str() {
            Some("random") => {}
            Some("tpe") => {
                // MOTPE is not implemented: one objective or the random sampler.
                if search.objectives.len() > 1 {
                    return Err(cx.err(
                        item.span(),
                        "sampler",
                        "the `tpe` sampler models one objective; with `objectives` use \
                         \"random\" (pareto-asha keeps the trade-off front)",
                    ));
                }
                sampler = Sampler::Tpe;
            }
            Some(s) => {
                return Err(cx.err(
                    item.span(),
                    "sampler",
                    crate::spec::unknown_key(s, &["random", "tpe"], "sampler"),
                ))
            }
            None => return Err(cx.err(item.span(), "sampler", "expected a string")),
        }
    }
    let seed = match root.get("sampler_seed") {
        None => 0,
        Some(item) => match item.as_integer() {
            Some(n) if n >= 0 => n as u64,
            _ => {
                return Err(cx.err(
                    item.span(),
                    "sampler_seed",
                    "expected a non-negative integer",
                ))
            }
        },
    };
    match (root.get("space"), samples) {
        (Some(item), Some(samples)) => {
            let table = item
                .as_table_like()
                .ok_or_else(|| cx.err(item.span(), "space", "expected a table `[space]`"))?;
            let (space, pos) = parse_space(cx, table, taken)?;
            if space.dims.is_empty() {
                return Err(cx.err(item.span(), "space", "an empty [space]"));
            }
            if let Some(n) = space.size() {
                if (samples as u128) > n {
                    return Err(cx.err(
                        at("samples"),
                        "samples",
                        format!(
                            "the space has only {n} different configurations, fewer than \
                             samples = {samples}; lower samples or use a [grid]"
                        ),
                    ));
                }
            }
            search.sampling = Some(Sampling {
                samples,
                sampler,
                seed,
                space,
                pos,
            });
        }
        (Some(item), None) => {
            return Err(cx.err(
                item.span(),
                "space",
                "a [space] needs `samples = N` (how many configurations to draw)",
            ))
        }
        (None, Some(_)) => {
            return Err(cx.err(
                at("samples"),
                "samples",
                "`samples` without a [space] to draw from",
            ))
        }
        (None, None) => {
            for k in ["sampler", "sampler_seed"] {
                if root.contains_key(k) {
                    return Err(cx.err(at(k), k, format!("`{k}` without a [space] to draw from")));
                }
            }
        }
    }

    // Pruning.
    if let Some(item) = root.get("prune") {
        let table = item
            .as_table_like()
            .ok_or_else(|| cx.err(item.span(), "prune", "expected a table `[prune]`"))?;
        search.prune = parse_prune(cx, table, item)?;
        if search.objectives.len() > 1 && matches!(search.prune, Prune::Median(_)) {
            return Err(cx.err(
                item.span(),
                "prune",
                "the median rule takes one objective; use kind = \"asha\" with several",
            ));
        }
    }
    Ok(search)
}

fn parse_space(
    cx: &Ctx,
    table: &dyn TableLike,
    taken: &dyn Fn(&str) -> Option<String>,
) -> Result<(Space, Vec<Pos>), SpecError> {
    let mut space = Space::default();
    let mut positions = Vec::new();
    for (k, item) in table.iter() {
        let path = format!("space.{k}");
        let key_span = table.key(k).and_then(|key| key.span());
        let Some(kind) = crate::spec::kind_of(k) else {
            return Err(cx.err(
                key_span,
                &path,
                crate::spec::unknown_key(k, &crate::spec::hyper_keys(), "hyperparameter"),
            ));
        };
        if let Some(other) = taken(k) {
            return Err(cx.err(
                key_span,
                &path,
                format!("`{k}` is set in both {other} and [space]; keep one"),
            ));
        }
        let example = "e.g. lr = { log_uniform = [1e-4, 0.3] }";
        let Some(spec) = item.as_table_like() else {
            return Err(cx.err(
                item.span().or(key_span),
                &path,
                format!("expected a distribution, {example}"),
            ));
        };
        let entries: Vec<(&str, &toml_edit::Item)> = spec.iter().collect();
        let [(dist, value)] = entries[..] else {
            return Err(cx.err(
                item.span().or(key_span),
                &path,
                format!(
                    "expected exactly one distribution ({}), {example}",
                    DISTRIBUTIONS.join(", ")
                ),
            ));
        };
        let dpath = format!("{path}.{dist}");
        if !DISTRIBUTIONS.contains(&dist) {
            return Err(cx.err(
                spec.key(dist).and_then(|d| d.span()),
                &dpath,
                crate::spec::unknown_key(dist, DISTRIBUTIONS, "distribution"),
            ));
        }
        let Some(arr) = value.as_array() else {
            return Err(cx.err(value.span(), &dpath, "expected a list of values"));
        };
        let vspan = value.span();
        let bounds = |ints: bool| -> Result<(f64, f64), SpecError> {
            let vals: Vec<&toml_edit::Value> = arr.iter().collect();
            let [lo, hi] = vals[..] else {
                return Err(cx.err(
                    vspan.clone(),
                    &dpath,
                    "expected two bounds, [low, high] (as values, not exponents)",
                ));
            };
            let read = |v: &toml_edit::Value| -> Result<f64, SpecError> {
                let x = if ints {
                    v.as_integer().map(|i| i as f64)
                } else {
                    number(v)
                };
                x.ok_or_else(|| {
                    cx.err(
                        v.span(),
                        &dpath,
                        if ints {
                            "expected an integer bound"
                        } else {
                            "expected a number"
                        },
                    )
                })
            };
            Ok((read(lo)?, read(hi)?))
        };
        let d = match (dist, kind) {
            ("uniform", Kind::Float) => {
                let (low, high) = bounds(false)?;
                Distribution::Uniform { low, high }
            }
            ("log_uniform", Kind::Float) => {
                let (low, high) = bounds(false)?;
                Distribution::LogUniform { low, high }
            }
            ("int_uniform", Kind::Int) => {
                let (low, high) = bounds(true)?;
                if low < 0.0 {
                    return Err(cx.err(vspan, &dpath, format!("`{k}` must be >= 0")));
                }
                Distribution::IntUniform {
                    low: low as i64,
                    high: high as i64,
                }
            }
            ("choice", _) => {
                let mut values: Vec<Value> = Vec::new();
                for (i, v) in arr.iter().enumerate() {
                    let value = crate::spec::convert(v, kind)
                        .map_err(|m| cx.err(v.span(), &format!("{dpath}[{i}]"), m))?;
                    values.push(value);
                }
                Distribution::Choice(values)
            }
            ("int_uniform", _) => {
                return Err(cx.err(
                    spec.key(dist).and_then(|d| d.span()),
                    &dpath,
                    format!("`{k}` is not an integer; use uniform, log_uniform or choice"),
                ))
            }
            (_, Kind::Int) => {
                return Err(cx.err(
                    spec.key(dist).and_then(|d| d.span()),
                    &dpath,
                    format!("`{k}` is an integer; use int_uniform or choice"),
                ))
            }
            _ => {
                return Err(cx.err(
                    spec.key(dist).and_then(|d| d.span()),
                    &dpath,
                    format!("`{k}` is not a number; use choice"),
                ))
            }
        };
        d.check().map_err(|m| cx.err(vspan, &dpath, m))?;
        positions.push(Pos::of(cx.text, item.span().or(key_span)));
        space.dims.push((k.to_string(), d));
    }
    Ok((space, positions))
}

fn parse_prune(
    cx: &Ctx,
    table: &dyn TableLike,
    item: &toml_edit::Item,
) -> Result<Prune, SpecError> {
    for (k, _) in table.iter() {
        if !PRUNE_KEYS.contains(&k) {
            return Err(cx.err(
                table.key(k).and_then(|key| key.span()),
                &format!("prune.{k}"),
                crate::spec::unknown_key(k, PRUNE_KEYS, "[prune] key"),
            ));
        }
    }
    let int = |k: &str, default: usize, min: i64| -> Result<usize, SpecError> {
        match table.get(k) {
            None => Ok(default),
            Some(v) => match v.as_integer() {
                Some(n) if n >= min => Ok(n as usize),
                _ => Err(cx.err(
                    v.span(),
                    &format!("prune.{k}"),
                    format!("expected an integer >= {min}"),
                )),
            },
        }
    };
    let only = |allowed: &[&str], kind: &str| -> Result<(), SpecError> {
        for k in PRUNE_KEYS {
            if *k != "kind" && !allowed.contains(k) && table.contains_key(k) {
                return Err(cx.err(
                    table.key(k).and_then(|key| key.span()),
                    &format!("prune.{k}"),
                    format!("`{k}` does not apply to kind = \"{kind}\""),
                ));
            }
        }
        Ok(())
    };
    let kind_item = table.get("kind").ok_or_else(|| {
        cx.err(
            item.span(),
            "prune.kind",
            "missing `kind` (asha, median or none)",
        )
    })?;
    match kind_item.as_str() {
        Some("none") => {
            only(&[], "none")?;
            Ok(Prune::None)
        }
        Some("asha") => {
            only(&["reduction_factor", "grace_epochs"], "asha")?;
            Ok(Prune::Asha(Asha {
                reduction_factor: int("reduction_factor", 3, 2)?,
                grace_epochs: int("grace_epochs", 1, 1)?,
            }))
        }
        Some("median") => {
            only(&["warmup_epochs", "startup_trials"], "median")?;
            Ok(Prune::Median(Median {
                warmup_epochs: int("warmup_epochs", 0, 0)?,
                startup_trials: int("startup_trials", 5, 0)?,
            }))
        }
        Some(s) => Err(cx.err(
            kind_item.span(),
            "prune.kind",
            crate::spec::unknown_key(s, &["asha", "median", "none"], "pruner"),
        )),
        None => Err(cx.err(kind_item.span(), "prune.kind", "expected a string")),
    }
}
