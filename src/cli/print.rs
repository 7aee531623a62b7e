//! Printing an answer: a table with a header row for people, the API's JSON for scripts
//! (`--json`). Times are RFC 3339 in tables; the JSON keeps the API's Unix seconds.
//!
//! A new secret (`keys create`, `keys rotate`) goes alone to stdout, so `KEY=$(keygate keys
//! create …)` captures just the secret; the warning that it is shown once, and the key's row, go
//! to stderr. So does a new user's id (`users create`).

use std::io::Write;

use serde_json::Value;

use crate::model::MAX_TIME;

/// The columns of a table of keys, users, projects or orgs: (header, field).
const KEY_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("KEY", "display"),
    ("NAME", "name"),
    ("STATUS", "status"),
    ("SCOPES", "scopes"),
    ("PROJECTS", "project_ids"),
    ("EXPIRES", "expires_at"),
    ("LAST USED", "last_used_at"),
];
const USER_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("ORG", "org_id"),
    ("ROLE", "role"),
    ("STATUS", "status"),
];
const PROJECT_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("STATUS", "status"),
    ("VISIBILITY", "visibility"),
    ("MEMBERS", "members"),
];
const ACCOUNT_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("STATUS", "status"),
    ("ORGS", "org_ids"),
];
const ORG_COLUMNS: &[(&str, &str)] = &[("ID", "id"), ("NAME", "name"), ("CREATED", "created_at")];

/// Writes to stdout; a closed stdout (`keygate keys list | head -1`) ends the process quietly,
/// where `print!` would panic.
pub(crate) fn write_out(text: std::fmt::Arguments<'_>) {
    if let Err(e) = std::io::stdout().lock().write_fmt(text) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write the answer: {e}");
        std::process::exit(1);
    }
}

/// `print!` through [`write_out`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::print::write_out(format_args!($($arg)*)) };
}

/// `println!` through [`write_out`].
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::print::write_out(format_args!("{}\n", format_args!($($arg)*))) };
}
pub(crate) use outln;

/// Prints a successful answer.
pub fn answer(value: &Value, as_json: bool) {
    if let Some(secret) = value["secret"].as_str() {
        eprintln!("Store this key now: it is shown only once and cannot be recovered.");
        if as_json {
            outln!("{}", pretty(value));
        } else {
            outln!("{secret}");
            eprint!("{}", table(std::slice::from_ref(value)));
        }
        return;
    }
    if as_json {
        if !value.is_null() {
            outln!("{}", pretty(value));
        }
        return;
    }
    match (value, value["items"].as_array()) {
        (_, Some(items)) if items.is_empty() => outln!("(none)"),
        (_, Some(items)) => out!("{}", table(items)),
        (Value::Null, _) => outln!("done"),
        (Value::Object(map), _) if !map.contains_key("name") => {
            for (name, v) in map {
                outln!("{name}: {}", cell(name, v));
            }
        }
        _ => out!("{}", table(std::slice::from_ref(value))),
    }
}

/// A new user: the id (made by keygate unless the platform chose it) alone on stdout, so that
/// `ID=$(keygate users create --name Bob)` captures it; the row on stderr.
pub fn created_user(value: &Value) {
    outln!("{}", value["id"].as_str().unwrap_or_default());
    eprint!("{}", table(std::slice::from_ref(value)));
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("JSON values serialize")
}

/// Rows of one kind of record, columns padded to their widest cell, under a header row.
fn table(rows: &[Value]) -> String {
    let first = &rows[0];
    let columns = if first.get("scopes").is_some() {
        KEY_COLUMNS
    } else if first.get("role").is_some() {
        USER_COLUMNS
    } else if first.get("visibility").is_some() {
        PROJECT_COLUMNS
    } else if first.get("org_ids").is_some() {
        ACCOUNT_COLUMNS
    } else {
        ORG_COLUMNS
    };
    let mut lines: Vec<Vec<String>> = vec![columns.iter().map(|(h, _)| (*h).to_owned()).collect()];
    lines.extend(
        rows.iter()
            .map(|row| columns.iter().map(|(_, f)| cell(f, &row[*f])).collect()),
    );
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let padded: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// One field as a table shows it.
fn cell(field: &str, v: &Value) -> String {
    match v {
        Value::Null if field == "expires_at" => "never".into(),
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(","),
        Value::Number(n) if field.ends_with("_at") => match n.as_u64() {
            // Past the year 9999 no date can show it (the store refuses such records anyway).
            Some(secs) if secs <= MAX_TIME => {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
                humantime::format_rfc3339_seconds(at).to_string()
            }
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_have_a_header_and_readable_times() {
        let keys = [
            json!({"id": "key_1", "display": "kg_AbCd…wxyz", "name": "laptop", "status": "active",
                   "scopes": ["predict"], "project_ids": [], "expires_at": 86400,
                   "last_used_at": null}),
            json!({"id": "key_22", "display": "kg_EfGh…stuv", "name": "ci", "status": "revoked",
                   "scopes": ["predict", "models:read"], "project_ids": ["p1"],
                   "expires_at": null, "last_used_at": 0}),
        ];
        let text = table(&keys);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID      KEY"), "{text}");
        assert!(lines[1].contains("1970-01-02T00:00:00Z"), "{text}");
        assert!(lines[2].contains("predict,models:read") && lines[2].contains("never"));
        assert_eq!(cell("last_used_at", &Value::Null), "-");
    }
}
