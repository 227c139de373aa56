//! Shared output helpers.

use serde::Serialize;

use docker_delta::{Error, Result};

/// Writes a line to stdout, returning an error where `println!` would panic (stdout on a
/// full disk, a closed file). Used through `outln!`.
pub fn write_line(args: std::fmt::Arguments<'_>) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{args}")
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("standard output", e))
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Other(format!("cannot encode JSON: {e}")))?;
    write_line(format_args!("{s}"))
}

/// A size in bytes, as people read it (1000-based, like docker).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Prints `e` as one `error` document (docs/JSON.md) on one line of stderr: what every
/// command does instead of its text message when `--json` was given.
pub fn print_error_json(e: &Error) {
    let doc = docker_delta::report::ErrorDocument::of(e);
    match serde_json::to_string(&doc) {
        Ok(s) => eprintln!("{s}"),
        // Cannot happen (the document is strings and numbers); the text still goes out.
        Err(_) => eprintln!("docker-delta: error: {e}"),
    }
}

/// Whether the arguments ask for JSON, read before (or without) parsing them: for a usage
/// error, which leaves no parsed `--json` to look at. Arguments after `--` are values.
pub fn json_requested_in_args() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// A usage error (bad or missing arguments, as clap reports them) as the library's
/// `invalid_option` error: exit code 3, as without `--json`.
pub fn usage_error(e: &clap::Error) -> Error {
    use clap::error::{ContextKind, ContextValue};
    let option = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        Some(ContextValue::Strings(v)) => v.join(", "),
        _ => "arguments".to_string(),
    };
    let rendered = e.render().to_string();
    let reason = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_string();
    Error::InvalidOption { option, reason }
}
