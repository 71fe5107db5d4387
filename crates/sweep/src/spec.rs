//! Sweep files: TOML parsed with spans, so every error names the file, line, column and key.
//!
//! ```toml
//! name = "lr_batch"            # required
//! description = "..."          # optional
//! seeds = [0, 1, 2]            # optional: every trial once per seed
//! max_trials = 500             # optional: refuse larger sweeps unless --yes
//! [data]                       # optional: data settings every trial shares
//! [base]                       # optional: hyperparameters every trial shares
//! [grid]                       # optional: the cartesian product of these lists
//! [[trials]]                   # optional: extra trials, each [base] plus its own keys
//! ```

use serde_json::Value;
use std::fmt;
use std::path::Path;
use toml_edit::{ImDocument, TableLike};

/// The type of a hyperparameter, for checking values before anything runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// Any string (`arch`).
    Str,
    /// A non-negative integer.
    Int,
    /// A finite number (an integer is accepted too).
    Float,
    /// `true` or `false`.
    Bool,
    /// One of the listed words.
    Choice(&'static [&'static str]),
}

/// Every key a trial can set, with its type. Mirrors `trainer::TrainConfig`.
pub const HYPERPARAMETERS: &[(&str, Kind)] = &[
    ("arch", Kind::Str),
    ("epochs", Kind::Int),
    ("batch_size", Kind::Int),
    ("lr", Kind::Float),
    ("optimizer", Kind::Choice(&["sgd", "adam", "adamw"])),
    ("momentum", Kind::Float),
    ("nesterov", Kind::Bool),
    ("weight_decay", Kind::Float),
    (
        "schedule",
        Kind::Choice(&["constant", "step", "cosine", "onecycle"]),
    ),
    ("warmup", Kind::Float),
    ("step_size", Kind::Int),
    ("gamma", Kind::Float),
    ("label_smoothing", Kind::Float),
    ("dropout", Kind::Float),
    ("augment", Kind::Bool),
    ("seed", Kind::Int),
    ("valid_fraction", Kind::Float),
    ("train_subset", Kind::Int),
    ("test_subset", Kind::Int),
    ("activation", Kind::Choice(&["relu", "gelu"])),
    ("translate", Kind::Int),
    ("flip", Kind::Choice(&["none", "random", "alternate"])),
    ("tta", Kind::Choice(&["none", "flip", "flip_translate"])),
    ("lookahead", Kind::Float),
    ("bn_bias_lr_scale", Kind::Float),
    ("warmup_from", Kind::Float),
    ("anneal_to", Kind::Float),
    ("micro_batch", Kind::Int),
    ("precision", Kind::Choice(&["fp32", "tf32", "bf16"])),
];

/// The keys `[data]` accepts.
pub const DATA_KEYS: &[&str] = &["valid_fraction", "train_subset", "test_subset", "augment"];

const TOP_KEYS: &[&str] = &[
    "name",
    "description",
    "seeds",
    "max_trials",
    "data",
    "base",
    "grid",
    "trials",
];

/// Sweeps larger than this need `--yes` (or a `max_trials` in the file).
pub const DEFAULT_MAX_TRIALS: usize = 500;

/// A position in the sweep file (1-based).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    /// 1-based; 0 when the error is about no place in the file (it could not be read).
    pub line: usize,
    /// 1-based, in bytes from the start of the line.
    pub col: usize,
}

impl Pos {
    pub(crate) fn of(text: &str, span: Option<std::ops::Range<usize>>) -> Pos {
        let offset = span.map(|s| s.start).unwrap_or(0).min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(offset, |i| offset - i - 1) + 1;
        Pos { line, col }
    }
}

/// A sweep file that cannot be used, located in the file.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct SpecError {
    /// The sweep file's path, as given.
    pub file: String,
    /// Where in the file (line 0: nowhere in particular).
    pub pos: Pos,
    /// The key the error is about, as a path (`grid.lr[1]`), if any.
    pub key: Option<String>,
    /// What is wrong, and where it helps, what to write instead.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pos.line == 0 {
            // Not about a place in the file (it could not be read at all).
            write!(f, "{}: ", self.file)?;
        } else {
            write!(f, "{}:{}:{}: ", self.file, self.pos.line, self.pos.col)?;
        }
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// One `key = value` with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    /// The hyperparameter's name (a key of [`HYPERPARAMETERS`]).
    pub key: String,
    /// The key as a path in the file, for messages (`base.lr`, `grid.lr[1]`).
    pub path: String,
    /// The value as written, type-checked.
    pub value: Value,
    /// Where the value was written.
    pub pos: Pos,
}

/// One `[grid]` key and its list of values: the grid is the cartesian product of its axes.
#[derive(Clone, Debug, PartialEq)]
pub struct GridAxis {
    /// The hyperparameter's name.
    pub key: String,
    /// Its values, in the order written (each with its own position).
    pub values: Vec<Setting>,
}

/// A parsed, type-checked sweep file (not yet expanded; see [`crate::grid::expand`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SweepSpec {
    /// The sweep file's path, as given (used in messages and stored with the sweep).
    pub file: String,
    /// The file's text, stored with the sweep.
    pub text: String,
    /// The sweep's name (`name`, required): its identity in the database unless `--name` says
    /// otherwise.
    pub name: String,
    /// `description`, empty when absent.
    pub description: String,
    /// `[data]` then `[base]` settings, in that order (later wins).
    pub base: Vec<Setting>,
    /// The `[grid]` axes, in the order written (the last varies fastest).
    pub grid: Vec<GridAxis>,
    /// The `[[trials]]` tables: extra trials, each `[base]` plus its own settings.
    pub trials: Vec<Vec<Setting>>,
    /// `seeds`: every trial runs once per seed (empty: each trial's own `seed`).
    pub seeds: Vec<Setting>,
    /// `max_trials` ([`DEFAULT_MAX_TRIALS`] when absent): a larger sweep needs `--yes`.
    pub max_trials: usize,
    /// A sampled space, the objective(s) and pruning (see [`crate::search`]).
    pub search: crate::search::Search,
}

impl SweepSpec {
    /// A [`SpecError`] in this sweep's file at `pos`, about `key` (a path such as `grid.lr[1]`)
    /// when given; for checks made after parsing (grid expansion).
    pub fn error(&self, pos: Pos, key: Option<&str>, message: impl Into<String>) -> SpecError {
        SpecError {
            file: self.file.clone(),
            pos,
            key: key.map(str::to_string),
            message: message.into(),
        }
    }
}

/// The nearest of `candidates` to `word`, when it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

pub(crate) fn unknown_key(word: &str, candidates: &[&str], what: &str) -> String {
    match suggest(word, candidates) {
        Some(s) => format!("unknown {what} `{word}`; did you mean `{s}`?"),
        None => format!(
            "unknown {what} `{word}` (expected one of: {})",
            candidates.join(", ")
        ),
    }
}

/// The type of hyperparameter `key`; `None` when no trial setting has that name.
pub fn kind_of(key: &str) -> Option<Kind> {
    HYPERPARAMETERS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, kind)| *kind)
}

pub(crate) fn hyper_keys() -> Vec<&'static str> {
    HYPERPARAMETERS.iter().map(|(k, _)| *k).collect()
}

fn type_name(v: &toml_edit::Value) -> &'static str {
    match v {
        toml_edit::Value::String(_) => "a string",
        toml_edit::Value::Integer(_) => "an integer",
        toml_edit::Value::Float(_) => "a float",
        toml_edit::Value::Boolean(_) => "a boolean",
        toml_edit::Value::Datetime(_) => "a date",
        toml_edit::Value::Array(_) => "a list",
        toml_edit::Value::InlineTable(_) => "a table",
    }
}

/// Checks `v` against `kind`, returning it as JSON.
pub(crate) fn convert(v: &toml_edit::Value, kind: Kind) -> Result<Value, String> {
    use toml_edit::Value as T;
    match (kind, v) {
        (Kind::Str, T::String(s)) => Ok(Value::from(s.value().as_str())),
        (Kind::Int, T::Integer(i)) if *i.value() >= 0 => Ok(Value::from(*i.value() as u64)),
        (Kind::Int, T::Integer(i)) => Err(format!("must be >= 0, got {}", i.value())),
        // NaN and infinities are valid TOML but never a valid hyperparameter (and JSON, the
        // stored form, has no spelling for them).
        (Kind::Float, T::Float(f)) if !f.value().is_finite() => {
            Err(format!("must be a finite number, got {}", f.value()))
        }
        (Kind::Float, T::Float(f)) => Ok(Value::from(*f.value())),
        (Kind::Float, T::Integer(i)) => Ok(Value::from(*i.value() as f64)),
        (Kind::Bool, T::Boolean(b)) => Ok(Value::from(*b.value())),
        (Kind::Choice(choices), T::String(s)) => {
            let s = s.value();
            if choices.contains(&s.as_str()) {
                Ok(Value::from(s.as_str()))
            } else {
                Err(match suggest(s, choices) {
                    Some(c) => format!("unknown value `{s}`; did you mean `{c}`?"),
                    None => format!(
                        "unknown value `{s}` (expected one of: {})",
                        choices.join(", ")
                    ),
                })
            }
        }
        (kind, v) => {
            let want = match kind {
                Kind::Str | Kind::Choice(_) => "a string",
                Kind::Int => "a non-negative integer",
                Kind::Float => "a number",
                Kind::Bool => "true or false",
            };
            Err(format!("expected {want}, found {}", type_name(v)))
        }
    }
}

pub(crate) struct Ctx<'a> {
    pub(crate) file: &'a str,
    pub(crate) text: &'a str,
}

impl Ctx<'_> {
    pub(crate) fn err(
        &self,
        span: Option<std::ops::Range<usize>>,
        key: &str,
        msg: impl Into<String>,
    ) -> SpecError {
        SpecError {
            file: self.file.to_string(),
            pos: Pos::of(self.text, span),
            key: (!key.is_empty()).then(|| key.to_string()),
            message: msg.into(),
        }
    }

    /// Reads a table of hyperparameters (`[base]`, `[data]`, one `[[trials]]`).
    fn settings(
        &self,
        table: &dyn TableLike,
        prefix: &str,
        allowed: &[&str],
    ) -> Result<Vec<Setting>, SpecError> {
        let mut out = Vec::new();
        for (k, item) in table.iter() {
            let path = format!("{prefix}.{k}");
            let key_span = table.key(k).and_then(|key| key.span());
            if !allowed.contains(&k) {
                let msg = if prefix == "data" && kind_of(k).is_some() {
                    format!("`{k}` is a hyperparameter, not a data setting: put it under [base] or [grid]")
                } else if prefix == "data" {
                    unknown_key(k, allowed, "data setting")
                } else {
                    unknown_key(k, allowed, "hyperparameter")
                };
                return Err(self.err(key_span, &path, msg));
            }
            let Some(v) = item.as_value() else {
                return Err(self.err(
                    item.span().or(key_span),
                    &path,
                    "expected a value, found a table",
                ));
            };
            let kind = kind_of(k).expect("allowed keys are hyperparameters");
            let value = convert(v, kind).map_err(|m| self.err(v.span(), &path, m))?;
            out.push(Setting {
                key: k.to_string(),
                path,
                value,
                pos: Pos::of(self.text, v.span()),
            });
        }
        Ok(out)
    }
}

/// Reads and checks the sweep file at `path`.
pub fn load(path: &Path) -> Result<SweepSpec, SpecError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SpecError {
        file: file.clone(),
        pos: Pos { line: 0, col: 0 },
        key: None,
        message: format!("cannot read the sweep file: {e}"),
    })?;
    parse(&file, &text)
}

/// Parses and type-checks a sweep file's text. `file` is used in messages only.
pub fn parse(file: &str, text: &str) -> Result<SweepSpec, SpecError> {
    let cx = Ctx { file, text };
    let doc = ImDocument::parse(text).map_err(|e| {
        let msg = e.message().trim().to_string();
        cx.err(e.span(), "", format!("invalid TOML: {msg}"))
    })?;
    let root = doc.as_table();
    let root_err = |key: &str, msg: String| cx.err(root.key(key).and_then(|k| k.span()), key, msg);

    let top_keys: Vec<&str> = TOP_KEYS
        .iter()
        .chain(crate::search::KEYS)
        .copied()
        .collect();
    for (k, _) in root.iter() {
        if !top_keys.contains(&k) {
            let mut msg = unknown_key(k, &top_keys, "key");
            if kind_of(k).is_some() {
                msg = format!("`{k}` is a hyperparameter: put it under [base] or [grid]");
            }
            return Err(root_err(k, msg));
        }
    }

    let name = match root.get("name") {
        None => return Err(cx.err(Some(0..0), "name", "missing required key `name`")),
        Some(item) => match item.as_str() {
            Some(s) if valid_name(s) => s.to_string(),
            Some(s) => {
                return Err(cx.err(
                    item.span(),
                    "name",
                    format!("`{s}` is not a valid sweep name: {NAME_RULE}"),
                ))
            }
            None => return Err(cx.err(item.span(), "name", "expected a string")),
        },
    };
    let description = match root.get("description") {
        None => String::new(),
        Some(item) => item
            .as_str()
            .ok_or_else(|| cx.err(item.span(), "description", "expected a string"))?
            .to_string(),
    };
    let max_trials = match root.get("max_trials") {
        None => DEFAULT_MAX_TRIALS,
        Some(item) => match item.as_integer() {
            Some(n) if n > 0 => n as usize,
            _ => return Err(cx.err(item.span(), "max_trials", "expected a positive integer")),
        },
    };

    let section = |key: &str| -> Result<Option<&dyn TableLike>, SpecError> {
        match root.get(key) {
            None => Ok(None),
            Some(item) => item
                .as_table_like()
                .map(Some)
                .ok_or_else(|| cx.err(item.span(), key, format!("expected a table `[{key}]`"))),
        }
    };

    let mut base = Vec::new();
    if let Some(t) = section("data")? {
        base.extend(cx.settings(t, "data", DATA_KEYS)?);
    }
    let hyper = hyper_keys();
    if let Some(t) = section("base")? {
        for s in cx.settings(t, "base", &hyper)? {
            // A key in both [data] and [base] would silently take [base]'s value.
            if let Some(d) = base.iter().find(|d: &&Setting| d.key == s.key) {
                return Err(cx.err(
                    t.key(&s.key).and_then(|k| k.span()),
                    &s.path,
                    format!(
                        "`{}` is set in both [data] (line {}) and [base]; keep one",
                        s.key, d.pos.line
                    ),
                ));
            }
            base.push(s);
        }
    }

    let mut grid = Vec::new();
    if let Some(t) = section("grid")? {
        for (k, item) in t.iter() {
            let path = format!("grid.{k}");
            let key_span = t.key(k).and_then(|key| key.span());
            if !hyper.contains(&k) {
                return Err(cx.err(key_span, &path, unknown_key(k, &hyper, "hyperparameter")));
            }
            if let Some(b) = base.iter().find(|s| s.key == k) {
                return Err(cx.err(
                    key_span,
                    &path,
                    format!(
                        "`{k}` is set in both {} (line {}) and [grid]; keep one",
                        b.path.split('.').next().unwrap_or("base"),
                        b.pos.line
                    ),
                ));
            }
            let Some(arr) = item.as_array() else {
                return Err(cx.err(
                    item.span(),
                    &path,
                    format!("expected a list of values, e.g. {k} = [...]"),
                ));
            };
            if arr.is_empty() {
                return Err(cx.err(
                    arr.span(),
                    &path,
                    "empty list: a grid axis needs at least one value",
                ));
            }
            let kind = kind_of(k).expect("checked above");
            let mut values = Vec::new();
            for (i, v) in arr.iter().enumerate() {
                let p = format!("{path}[{i}]");
                let value = convert(v, kind).map_err(|m| cx.err(v.span(), &p, m))?;
                if values.iter().any(|s: &Setting| s.value == value) {
                    return Err(cx.err(v.span(), &p, format!("duplicate value {value}")));
                }
                values.push(Setting {
                    key: k.to_string(),
                    path: p,
                    value,
                    pos: Pos::of(text, v.span()),
                });
            }
            grid.push(GridAxis {
                key: k.to_string(),
                values,
            });
        }
    }

    let mut trials = Vec::new();
    if let Some(item) = root.get("trials") {
        let Some(aot) = item.as_array_of_tables() else {
            return Err(cx.err(item.span(), "trials", "expected [[trials]] tables"));
        };
        for (i, t) in aot.iter().enumerate() {
            let settings = cx.settings(t, &format!("trials[{i}]"), &hyper)?;
            if settings.is_empty() {
                return Err(cx.err(t.span(), &format!("trials[{i}]"), "empty [[trials]] table"));
            }
            trials.push(settings);
        }
    }

    let mut seeds = Vec::new();
    if let Some(item) = root.get("seeds") {
        let Some(arr) = item.as_array() else {
            return Err(cx.err(
                item.span(),
                "seeds",
                "expected a list of integers, e.g. seeds = [0, 1, 2]",
            ));
        };
        if arr.is_empty() {
            return Err(cx.err(arr.span(), "seeds", "empty list"));
        }
        if grid.iter().any(|a| a.key == "seed") || base.iter().any(|s| s.key == "seed") {
            return Err(root_err(
                "seeds",
                "`seeds` and `seed` cannot both be set".into(),
            ));
        }
        // `seeds` repeats every trial once per seed, so a [[trials]] seed would be dropped.
        if let Some(s) = trials.iter().flatten().find(|s| s.key == "seed") {
            return Err(SpecError {
                file: file.to_string(),
                pos: s.pos,
                key: Some(s.path.clone()),
                message: "`seed` in [[trials]] cannot be combined with `seeds` (which repeats \
                          every trial once per seed); remove one"
                    .into(),
            });
        }
        for (i, v) in arr.iter().enumerate() {
            let p = format!("seeds[{i}]");
            let value = convert(v, Kind::Int).map_err(|m| cx.err(v.span(), &p, m))?;
            if seeds.iter().any(|s: &Setting| s.value == value) {
                return Err(cx.err(v.span(), &p, format!("duplicate seed {value}")));
            }
            seeds.push(Setting {
                key: "seed".into(),
                path: p,
                value,
                pos: Pos::of(text, v.span()),
            });
        }
    }

    let taken = |k: &str| -> Option<String> {
        if let Some(b) = base.iter().find(|s| s.key == k) {
            let section = b.path.split('.').next().unwrap_or("base");
            return Some(format!("[{section}] (line {})", b.pos.line));
        }
        if grid.iter().any(|a| a.key == k) {
            return Some("[grid]".into());
        }
        if k == "seed" && !seeds.is_empty() {
            return Some("`seeds`".into());
        }
        None
    };
    let search = crate::search::parse(&cx, root, &taken)?;

    Ok(SweepSpec {
        file: file.to_string(),
        text: text.to_string(),
        name,
        description,
        base,
        grid,
        trials,
        seeds,
        max_trials,
        search,
    })
}

/// Sweep names become directory names and CLI arguments: keep them plain. A leading `.`
/// would make `..` (a path out of the results folder) or a hidden folder; a leading `-` a
/// name that every later command reads as a flag (`report -rf`).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !s.starts_with(['.', '-'])
}

/// What [`valid_name`] demands, for messages.
pub const NAME_RULE: &str = "use letters, digits, `-`, `_` and `.`, not starting with `.` or `-`";

/// The one-trial sweep of `cifar-sweep train -s KEY=VALUE ...`, built from the assignments
/// directly (never by pasting them into TOML text, where a value holding a newline or a
/// quote would become more keys). A value is read as a TOML value when it is one (`0.01`,
/// `true`, `"quoted"`), else as a bare string (`cnn3`, `sgd`); errors name the `-s` argument.
/// The stored spec text is TOML generated from the parsed values, so it reads back the same.
pub fn from_assignments(name: &str, assignments: &[String]) -> Result<SweepSpec, SpecError> {
    let flag_err = |arg: &str, key: Option<&str>, message: String| SpecError {
        file: format!("-s {arg}"),
        pos: Pos { line: 0, col: 0 },
        key: key.map(str::to_string),
        message,
    };
    if !valid_name(name) {
        return Err(flag_err(
            name,
            Some("name"),
            format!("`{name}` is not a valid sweep name: {NAME_RULE}"),
        ));
    }
    let mut doc = toml_edit::DocumentMut::new();
    doc["name"] = toml_edit::value(name);
    let mut base = toml_edit::Table::new();
    let mut settings: Vec<Setting> = Vec::new();
    for arg in assignments {
        let Some((k, v)) = arg.split_once('=') else {
            return Err(flag_err(arg, None, "expected KEY=VALUE".into()));
        };
        let (k, v) = (k.trim(), v.trim());
        let Some(kind) = kind_of(k) else {
            return Err(flag_err(
                arg,
                None,
                unknown_key(k, &hyper_keys(), "hyperparameter"),
            ));
        };
        if let Some(prev) = settings.iter().find(|s| s.key == k) {
            return Err(flag_err(
                arg,
                Some(k),
                format!("`{k}` is set twice (also `{}`)", prev.path),
            ));
        }
        // A whole TOML value, or else the text itself as a string: never a fragment of TOML.
        let parsed = v
            .parse::<toml_edit::Value>()
            .ok()
            .filter(|p| {
                !matches!(
                    p,
                    toml_edit::Value::Array(_) | toml_edit::Value::InlineTable(_)
                )
            })
            .unwrap_or_else(|| toml_edit::Value::from(v));
        let value = convert(&parsed, kind).map_err(|m| flag_err(arg, Some(k), m))?;
        base.insert(k, toml_edit::value(parsed.decorated("", "")));
        settings.push(Setting {
            key: k.to_string(),
            path: format!("-s {arg}"),
            value,
            pos: Pos { line: 0, col: 0 },
        });
    }
    doc["base"] = toml_edit::Item::Table(base);
    Ok(SweepSpec {
        file: "-s".into(),
        text: doc.to_string(),
        name: name.to_string(),
        description: String::new(),
        base: settings,
        grid: Vec::new(),
        trials: Vec::new(),
        seeds: Vec::new(),
        max_trials: DEFAULT_MAX_TRIALS,
        search: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_cannot_inject_keys_or_trials() {
        let s = from_assignments(
            "t",
            &[
                "arch=cnn3".into(),
                "lr=0.01".into(),
                "optimizer=sgd\n[grid]\nlr = [1, 2, 3]".into(),
            ],
        )
        .unwrap_err();
        assert!(s.to_string().contains("optimizer"), "{s}");
        let spec = from_assignments("t", &["arch=cnn3".into(), "lr=0.01".into()]).unwrap();
        assert!(spec.grid.is_empty() && spec.trials.is_empty());
        // The stored text parses back to the same settings.
        let back = parse("t.toml", &spec.text).unwrap();
        let kv = |s: &SweepSpec| -> Vec<(String, Value)> {
            s.base
                .iter()
                .map(|x| (x.key.clone(), x.value.clone()))
                .collect()
        };
        assert_eq!(kv(&back), kv(&spec));
        // A quoted value with a newline stays one string (and is then refused as an arch).
        let e = from_assignments("t", &["arch=\"a\\n[grid]\"".into()]);
        assert!(e.is_ok(), "a string is a valid arch at parse time: {e:?}");
    }

    #[test]
    fn assignment_errors_name_the_flag() {
        let e = from_assignments("t", &["lr=fast".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "-s lr=fast: lr: expected a number, found a string"
        );
        let e = from_assignments("t", &["lr".into()]).unwrap_err();
        assert_eq!(e.to_string(), "-s lr: expected KEY=VALUE");
        let e = from_assignments("t", &["learning_rate=0.1".into()]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("-s learning_rate=0.1: unknown hyperparameter"),
            "{e}"
        );
        let e = from_assignments("t", &["lr=0.1".into(), "lr=0.2".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "-s lr=0.2: lr: `lr` is set twice (also `-s lr=0.1`)"
        );
        let e = from_assignments("t", &["lr=nan".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "-s lr=nan: lr: must be a finite number, got NaN"
        );
    }

    /// `TrainConfig` over its defaults with `key` set to `value`, as the trainer would read it.
    fn config_with(key: &str, value: Value) -> Result<trainer::TrainConfig, serde_json::Error> {
        let mut v = serde_json::to_value(trainer::TrainConfig::default()).unwrap();
        v[key] = value;
        serde_json::from_value(v)
    }

    #[test]
    fn hyperparameters_are_exactly_the_train_config_fields_with_their_types() {
        // Every field, those serialised only when not at their default included.
        let Value::Object(fields) = trainer::TrainConfig::default().to_json_full() else {
            panic!("TrainConfig serialises to an object");
        };
        let mut fields: Vec<&str> = fields.keys().map(String::as_str).collect();
        let mut keys = hyper_keys();
        fields.sort_unstable();
        keys.sort_unstable();
        assert_eq!(
            keys, fields,
            "spec::HYPERPARAMETERS against TrainConfig's fields"
        );
        for (key, kind) in HYPERPARAMETERS {
            let (accepted, refused): (&[Value], &[Value]) = match kind {
                Kind::Str => (&[Value::from("x")], &[Value::from(3)]),
                Kind::Int => (&[Value::from(3)], &[Value::from(0.5), Value::from("x")]),
                Kind::Float => (&[Value::from(0.5)], &[Value::from("x")]),
                Kind::Bool => (&[Value::from(true)], &[Value::from(1), Value::from("x")]),
                Kind::Choice(_) => (&[], &[Value::from(3)]),
            };
            for v in accepted {
                assert!(config_with(key, v.clone()).is_ok(), "{key} = {v}: {kind:?}");
            }
            for v in refused {
                assert!(
                    config_with(key, v.clone()).is_err(),
                    "{key} = {v}: {kind:?}"
                );
            }
            if let Kind::Choice(choices) = kind {
                // serde names every variant it knows when it refuses one it does not.
                let e = config_with(key, Value::from("no-such-choice"))
                    .unwrap_err()
                    .to_string();
                let expected = &e[e.find("expected").expect(&e)..];
                let mut variants: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
                let mut choices = choices.to_vec();
                variants.sort_unstable();
                choices.sort_unstable();
                assert_eq!(choices, variants, "{key}: the choices against the enum");
            }
        }
    }

    #[test]
    fn the_schemas_generated_columns_are_hyperparameters_of_their_type() {
        // The schema as the migrations leave it, not as one file says.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.db");
        drop(crate::store::Store::open(&path).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        let sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'trials'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let mut columns = Vec::new();
        for line in sql.lines().filter(|l| l.contains("GENERATED")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let path = line
                .split("json_extract(config, '$.")
                .nth(1)
                .and_then(|rest| rest.split('\'').next())
                .unwrap_or_else(|| panic!("not a config column: {line}"));
            assert_eq!(
                words[0], path,
                "a column named after its config key: {line}"
            );
            let kind = kind_of(path).unwrap_or_else(|| panic!("not a hyperparameter: {line}"));
            let sql_type = match kind {
                Kind::Str | Kind::Choice(_) => "TEXT",
                Kind::Float => "REAL",
                Kind::Int | Kind::Bool => "INTEGER",
            };
            assert_eq!(words[1], sql_type, "{line}");
            columns.push(path.to_string());
        }
        // The columns reports and queries rely on.
        for key in ["arch", "lr", "batch_size", "epochs", "optimizer", "seed"] {
            assert!(columns.iter().any(|c| c == key), "{key} in {columns:?}");
        }
    }

    #[test]
    fn names_that_read_as_flags_or_paths_are_refused() {
        for bad in ["-rf", "..", "../x", ".hidden", "a/b", "", "a b"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        for good in ["lr_batch", "nightly-2026-01-01", "a.b", "x-"] {
            assert!(valid_name(good), "{good:?}");
        }
    }
}
