//! Text and JSON output for the CLI.

use anyhow::Result;
use serde::Serialize;

/// Prints a value as pretty JSON on stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Renders rows as an aligned text table with a header line.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// Prints `items` as JSON, or as a table with one row per item (or `empty` when there
/// are none): the shape of every list command.
pub fn list<T: Serialize>(
    items: &[T],
    as_json: bool,
    empty: &str,
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> Result<()> {
    if as_json {
        return json(items);
    }
    if items.is_empty() {
        println!("{empty}");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    print!("{}", table(headers, &rows));
    Ok(())
}

/// Formats Unix milliseconds as UTC: `2026-11-21 12:00:00.000Z`.
pub fn ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Formats an optional timestamp.
pub fn ts_opt(ms: Option<i64>) -> String {
    ms.map(ts).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align() {
        let t = super::table(
            &["id", "name"],
            &[
                vec!["1".into(), "acme".into()],
                vec!["100".into(), "b".into()],
            ],
        );
        assert_eq!(t, "id   name\n1    acme\n100  b\n");
    }

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(super::ts(1_795_262_400_123), "2026-11-21 12:00:00.123Z");
    }
}
