//! `report --html`: one self-contained HTML file with a sweep's description, its sweep file,
//! the comparison tables and the charts (PNG data URIs: no network, no side files).

use crate::plot::Charts;
use crate::report;
use crate::store::Store;
use crate::table::Table;
use crate::Error;
use base64::Engine;
use std::fmt::Write;

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A table as HTML; numeric columns right-aligned.
pub fn table(t: &Table) -> String {
    let mut s = String::from("<table>\n");
    let _ = writeln!(s, "<caption>{}</caption>", escape(&t.title));
    s.push_str("<thead><tr>");
    for (i, h) in t.headers.iter().enumerate() {
        let class = if t.right.get(i).copied().unwrap_or(false) {
            " class=\"num\""
        } else {
            ""
        };
        let _ = write!(s, "<th{class}>{}</th>", escape(h));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    for row in &t.rows {
        s.push_str("<tr>");
        for (i, c) in row.iter().enumerate() {
            let class = if t.right.get(i).copied().unwrap_or(false) {
                " class=\"num\""
            } else {
                ""
            };
            let _ = write!(s, "<td{class}>{}</td>", escape(c));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody>\n</table>\n");
    s
}

const STYLE: &str = r#"
body { font-family: "DejaVu Sans", system-ui, sans-serif; margin: 24px auto; max-width: 1240px;
       padding: 0 16px; color: #222; line-height: 1.4; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 1.8em; }
.meta td { padding: 2px 14px 2px 0; }
.meta td:first-child { color: #666; }
pre { background: #f6f8fa; border: 1px solid #e1e4e8; padding: 12px; overflow-x: auto;
      font-size: 0.9em; }
table { border-collapse: collapse; margin: 12px 0 24px; font-size: 0.9em; }
caption { text-align: left; font-weight: bold; padding: 4px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; }
th { background: #f3f3f3; }
tbody tr:nth-child(even) { background: #fafafa; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 18px 0 30px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; margin-top: 4px; }
.note { color: #8a6d3b; }
"#;

/// The report of `sweep` with `charts` (drawn by [`crate::plot::charts`]).
pub fn report(db: &Store, sweep: &str, charts: &Charts) -> Result<String, Error> {
    let sweep_id = db.sweep_id(sweep)?;
    let row = db
        .sweep(sweep_id)?
        .ok_or_else(|| Error::Corrupt(format!("sweep `{sweep}` vanished")))?;
    let counts = db
        .status_counts(sweep_id)?
        .iter()
        .map(|(status, n)| format!("{n} {status}"))
        .collect::<Vec<_>>()
        .join(", ");

    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Sweep {} — cifar-sweep report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(sweep)
    );
    let _ = writeln!(h, "<h1>Sweep <code>{}</code></h1>", escape(sweep));
    if !row.description.is_empty() {
        let _ = writeln!(h, "<p>{}</p>", escape(&row.description));
    }
    h.push_str("<table class=\"meta\">\n");
    let meta = [
        ("trials", Some(&counts)),
        ("device", row.device.as_ref()),
        ("host", row.host.as_ref()),
        ("git revision", row.git_rev.as_ref()),
        ("data checksum", row.data_checksum.as_ref()),
        ("created", Some(&row.created_at)),
        ("started", row.started_at.as_ref()),
        ("finished", row.finished_at.as_ref()),
        ("sweep file", row.spec_path.as_ref()),
    ];
    for (label, v) in meta {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td></tr>",
                escape(label),
                escape(v)
            );
        }
    }
    h.push_str("</table>\n");

    h.push_str("<h2 id=\"results\">Results</h2>\n");
    for t in report::sweep_tables(db, sweep)? {
        h.push_str(&table(&t));
    }

    h.push_str("<h2 id=\"charts\">Charts</h2>\n");
    let b64 = base64::engine::general_purpose::STANDARD;
    for c in &charts.charts {
        let _ = writeln!(
            h,
            "<figure id=\"chart-{name}\">\n<img src=\"data:image/png;base64,{data}\" \
             width=\"{w}\" height=\"{hh}\" alt=\"{title}\">\n<figcaption>{title}</figcaption>\n</figure>",
            name = c.name,
            data = b64.encode(&c.png),
            w = c.width,
            hh = c.height,
            title = escape(&c.title),
        );
    }
    for (name, why) in &charts.skipped {
        let _ = writeln!(
            h,
            "<p class=\"note\">No <code>{}</code> chart: {}</p>",
            escape(name),
            escape(why)
        );
    }

    h.push_str("<h2 id=\"spec\">Sweep file</h2>\n");
    let _ = writeln!(h, "<pre>{}</pre>", escape(&row.spec));
    let _ = writeln!(
        h,
        "<p class=\"note\">Written by cifar-sweep {}.</p>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION")
    );
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_renders_tables() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let mut t = Table::new("T <1>", &["name", "acc"]);
        t.push(vec![
            crate::table::text("a&b"),
            crate::table::num(Some(0.5), |x| format!("{x}")),
        ]);
        let s = table(&t);
        assert!(s.contains("<caption>T &lt;1&gt;</caption>"), "{s}");
        assert!(
            s.contains("<td>a&amp;b</td><td class=\"num\">0.5</td>"),
            "{s}"
        );
    }
}
