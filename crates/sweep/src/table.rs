//! A small table type rendered as aligned text, Markdown, CSV or JSON.

use serde_json::{Map, Value};

/// How a [`Table`] is printed (`--format`): `Table`, aligned columns under a title and a rule,
/// for a terminal; `Markdown`, a Markdown table under a `###` heading; `Csv`, the typed values
/// as CSV (a header line, no title; absent values are empty fields); `Json`, an object
/// `{"title": ..., "rows": [{header: value, ...}, ...]}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
// The variants are described above, not in doc comments of their own: clap turns a
// variant's doc comment into help text for `--format`, which would change `--help`.
#[allow(missing_docs)]
pub enum Format {
    Table,
    Markdown,
    Csv,
    Json,
}

/// A titled table of rows, each cell kept both as display text and as a typed JSON value.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Printed above the table (the heading in Markdown).
    pub title: String,
    /// Column names; also the keys of each row in JSON.
    pub headers: Vec<String>,
    /// Cells as display text; `json` keeps typed values for the JSON format.
    pub rows: Vec<Vec<String>>,
    /// The same cells as typed values (numbers stay numbers; `null` for absent), one row per
    /// row of `rows`.
    pub json: Vec<Vec<Value>>,
    /// Right-align these columns (numbers).
    pub right: Vec<bool>,
}

impl Table {
    /// An empty table with these column names, every column left-aligned.
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Self {
            title: title.into(),
            headers: headers.iter().map(|s| s.to_string()).collect(),
            right: vec![false; headers.len()],
            ..Default::default()
        }
    }

    /// Adds a row of (display text, typed value) cells, as [`text`], [`int`] and [`num`] make
    /// them; a column with a number in it becomes right-aligned.
    pub fn push(&mut self, cells: Vec<(String, Value)>) {
        for (i, (_, v)) in cells.iter().enumerate() {
            if v.is_number() && i < self.right.len() {
                self.right[i] = true;
            }
        }
        let (text, json) = cells.into_iter().unzip();
        self.rows.push(text);
        self.json.push(json);
    }

    /// The table as text in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table => self.text(),
            Format::Markdown => self.markdown(),
            Format::Csv => self.csv(),
            Format::Json => self.to_json().to_string(),
        }
    }

    /// The table as the JSON value [`Format::Json`] prints.
    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .json
            .iter()
            .map(|r| {
                let m: Map<String, Value> = self
                    .headers
                    .iter()
                    .cloned()
                    .zip(r.iter().cloned())
                    .collect();
                Value::Object(m)
            })
            .collect();
        serde_json::json!({ "title": self.title, "rows": rows })
    }

    fn widths(&self) -> Vec<usize> {
        (0..self.headers.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.headers[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    fn text(&self) -> String {
        let w = self.widths();
        let line = |cells: &[String]| -> String {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if self.right[i] {
                        format!("{c:>width$}", width = w[i])
                    } else {
                        format!("{c:<width$}", width = w[i])
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let mut out = format!("{}\n", self.title);
        out += &line(&self.headers);
        out.push('\n');
        out += &w
            .iter()
            .map(|n| "-".repeat(*n))
            .collect::<Vec<_>>()
            .join("  ");
        out.push('\n');
        for r in &self.rows {
            out += &line(r);
            out.push('\n');
        }
        out
    }

    fn markdown(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|");
        let mut out = format!("### {}\n\n| {} |\n|", self.title, self.headers.join(" | "));
        for r in &self.right {
            out += if *r { "---:|" } else { "---|" };
        }
        out.push('\n');
        for r in &self.rows {
            out += &format!(
                "| {} |\n",
                r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
            );
        }
        out
    }

    fn csv(&self) -> String {
        let field = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut out = self
            .headers
            .iter()
            .map(|h| field(h))
            .collect::<Vec<_>>()
            .join(",");
        out.push('\n');
        for r in &self.json {
            let cells: Vec<String> = r
                .iter()
                .map(|v| match v {
                    Value::Null => String::new(),
                    Value::String(s) => field(s),
                    v => field(&v.to_string()),
                })
                .collect();
            out += &cells.join(",");
            out.push('\n');
        }
        out
    }
}

/// A cell from a number with a display format.
pub fn num(v: Option<f64>, text: impl Fn(f64) -> String) -> (String, Value) {
    match v {
        Some(x) => (text(x), Value::from(x)),
        None => ("-".into(), Value::Null),
    }
}

/// A text cell.
pub fn text(s: impl Into<String>) -> (String, Value) {
    let s = s.into();
    (s.clone(), Value::from(s))
}

/// An integer cell; `-` (and `null`) when absent.
pub fn int(v: Option<i64>) -> (String, Value) {
    match v {
        Some(x) => (x.to_string(), Value::from(x)),
        None => ("-".into(), Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_format() {
        let mut t = Table::new("T", &["name", "acc"]);
        t.push(vec![
            text("a,b"),
            num(Some(0.5), |x| format!("{:.1}%", x * 100.0)),
        ]);
        assert_eq!(
            t.render(Format::Table),
            "T\nname    acc\n----  -----\na,b   50.0%\n"
        );
        assert_eq!(
            t.render(Format::Markdown),
            "### T\n\n| name | acc |\n|---|---:|\n| a,b | 50.0% |\n"
        );
        assert_eq!(t.render(Format::Csv), "name,acc\n\"a,b\",0.5\n");
        assert_eq!(
            t.render(Format::Json),
            r#"{"rows":[{"acc":0.5,"name":"a,b"}],"title":"T"}"#
        );
    }
}
