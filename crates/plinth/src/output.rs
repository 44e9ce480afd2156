//! Rendering for the CLI: human tables by default, the server's JSON with `--json`.

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;
use time::OffsetDateTime;

/// Prints `value` as pretty JSON.
pub fn json(value: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into()));
}

/// Prints a table with a header row.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    println!("{t}");
}

/// Prints `key: value` lines.
pub fn fields(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        println!("{k:width$}  {v}");
    }
}

/// A moment for people: to the second, in UTC (`2026-12-06 17:55:45 UTC`); `--json` keeps
/// the server's RFC 3339 with its fractions.
pub fn time(t: &OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    t.to_offset(time::UtcOffset::UTC).format(&format).unwrap_or_default()
}

pub fn opt_time(t: &Option<OffsetDateTime>) -> String {
    t.as_ref().map(time).unwrap_or_else(|| "-".into())
}

pub fn more(next: &Option<String>) {
    if let Some(cursor) = next {
        eprintln!("(more results: pass --cursor {cursor})");
    }
}

/// A state as people write it: a serialized enum's name with its underscores as spaces
/// (`approved_for_production` reads "approved for production").
pub fn words(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s.replace('_', " "),
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// A size for people: bytes, then KB, MB, GB (powers of 1,000, one decimal).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(super::size(999), "999 bytes");
        assert_eq!(super::size(71_500), "71.5 KB");
        assert_eq!(super::size(536_870_912), "536.9 MB");
        assert_eq!(super::size(2_000_000_000_000_000), "2000.0 TB");
    }
}
