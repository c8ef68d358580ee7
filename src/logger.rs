//! The server's diagnostic lines on stderr (not the write-ahead log, which
//! is [`crate::log`]).
//!
//! Every line starts with an RFC 3339 UTC timestamp with milliseconds, a
//! level, and the node id, then the message:
//!
//! ```text
//! 2026-12-01T19:12:03.123Z INFO node=12347 leadership won: epoch 3, ...
//! ```
//!
//! With `--log-format json` each line is one JSON object instead, with
//! `ts`, `level`, `node` and `msg`, and for the core's events (and a few of
//! the reactor's) `event` and that event's fields:
//!
//! ```text
//! {"ts":"2026-12-01T19:12:03.123Z","level":"INFO","node":12347,"event":"leadership_won","msg":"...","epoch":3}
//! ```
//!
//! Levels: `ERROR` the server stops, cannot start, or an operation failed
//! that needs the operator (a snapshot the disk refused); `WARN` something
//! an operator may need to act on (a limit hit, a peer lost, a slow disk,
//! damage repaired at start-up, a possible attack); `INFO` the life of the
//! node (start, stop, elections, leadership, snapshots, peers connected);
//! `DEBUG` each attempt behind those (reconnects, election retries).
//!
//! The settings are process-global and set once at start ([`init`]): a
//! process is one node. Until then (tests, the client tools) lines carry no
//! node id, at level `INFO`, as text. Each line is formatted whole and
//! written with one write(2), so the lines of nodes sharing a terminal or a
//! pipe never interleave. Control characters in a text message are escaped
//! (`\n`), so one line is always one record, whatever a peer or client sent.
//!
//! Never: buffers lines, blocks on anything but the write, or is called by
//! the core (`node` hands its events to the driver, which logs them).

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// How much a line matters; a setting shows its level and those above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.as_str().to_ascii_lowercase())
    }
}

/// How a line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `<ts> <LEVEL> node=<id> <message>`.
    Text,
    /// One JSON object per line.
    Json,
}

impl fmt::Display for Format {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Format::Text => "text",
            Format::Json => "json",
        })
    }
}

/// What the process logs and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The node id every line names; `None` before a server knows it.
    pub node: Option<u64>,
    /// Lines below this level are not written (nor formatted).
    pub level: Level,
    pub format: Format,
}

impl Settings {
    /// Lines of no node, `INFO` and above, as text: before [`init`].
    pub const DEFAULT: Settings = Settings {
        node: None,
        level: Level::Info,
        format: Format::Text,
    };

    /// Whether a line of `level` is written under these settings.
    pub fn enables(&self, level: Level) -> bool {
        level <= self.level
    }
}

/// One field of a JSON line beside the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    U64(u64),
    Bool(bool),
    Str(&'a str),
    /// Bytes that may not be UTF-8: written lossily (U+FFFD for each
    /// invalid sequence).
    Bytes(&'a [u8]),
    Null,
}

impl From<u64> for Value<'_> {
    fn from(value: u64) -> Self {
        Value::U64(value)
    }
}

impl From<Option<u64>> for Value<'_> {
    fn from(value: Option<u64>) -> Self {
        value.map_or(Value::Null, Value::U64)
    }
}

impl From<bool> for Value<'_> {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(value: &'a str) -> Self {
        Value::Str(value)
    }
}

/// A named field of a line.
pub type Field<'a> = (&'static str, Value<'a>);

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Sets the process's settings; once (a second call is refused, returning
/// the settings it brought).
pub fn init(settings: Settings) -> Result<(), Settings> {
    SETTINGS.set(settings)
}

/// The process's settings ([`Settings::DEFAULT`] before [`init`]).
pub fn settings() -> &'static Settings {
    SETTINGS.get().unwrap_or(&Settings::DEFAULT)
}

/// Whether a line of `level` would be written (checked before formatting).
pub fn enabled(level: Level) -> bool {
    settings().enables(level)
}

/// Writes one line of `level`, if enabled (what the `log_*!` macros call).
pub fn log(level: Level, message: fmt::Arguments<'_>) {
    log_event(level, None, &message, &[]);
}

/// Writes one line of `level` for the event named `event` (`None`: a plain
/// line) with `fields` beside the message in JSON, if enabled.
pub fn log_event(level: Level, event: Option<&str>, message: &dyn fmt::Display, fields: &[Field]) {
    let settings = settings();
    if !settings.enables(level) {
        return;
    }
    let line = format_line(settings, now_unix_ms(), level, event, message, fields);
    // Nothing sensible is left to do if stderr is gone.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Milliseconds since the Unix epoch by the system clock (0 before it).
fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// One whole line, `\n` included.
pub fn format_line(
    settings: &Settings,
    unix_ms: u64,
    level: Level,
    event: Option<&str>,
    message: &dyn fmt::Display,
    fields: &[Field],
) -> String {
    let message = message.to_string();
    let mut line = String::with_capacity(64 + message.len());
    match settings.format {
        Format::Text => {
            write_timestamp(&mut line, unix_ms);
            line.push(' ');
            line.push_str(level.as_str());
            if let Some(node) = settings.node {
                let _ = write!(line, " node={node}");
            }
            line.push(' ');
            push_text_escaped(&mut line, &message);
        }
        Format::Json => {
            line.push_str("{\"ts\":\"");
            write_timestamp(&mut line, unix_ms);
            line.push_str("\",\"level\":\"");
            line.push_str(level.as_str());
            line.push('"');
            if let Some(node) = settings.node {
                let _ = write!(line, ",\"node\":{node}");
            }
            if let Some(event) = event {
                push_json_field(&mut line, "event", Value::Str(event));
            }
            push_json_field(&mut line, "msg", Value::Str(&message));
            for (name, value) in fields {
                push_json_field(&mut line, name, *value);
            }
            line.push('}');
        }
    }
    line.push('\n');
    line
}

/// Writes `unix_ms` as RFC 3339 UTC with milliseconds:
/// `2026-12-01T19:12:03.123Z`.
pub fn write_timestamp(out: &mut String, unix_ms: u64) {
    let days = unix_ms / 86_400_000;
    let ms_of_day = unix_ms % 86_400_000;
    let (year, month, day) = civil_from_days(days);
    let (hours, minutes) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
    let (seconds, millis) = (ms_of_day / 1000 % 60, ms_of_day % 1000);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{millis:03}Z"
    );
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch): eras of 400 years
/// (146,097 days) counted from 0000-03-01, so that the leap day ends a year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468; // days from 0000-03-01
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    debug_assert!((1..=12).contains(&month) && (1..=31).contains(&day));
    (year, month, day)
}

/// A text message on one line: control characters escaped (`\n`, `\r`,
/// `\t`, `\u{1b}`), everything else as it is.
fn push_text_escaped(out: &mut String, text: &str) {
    for character in text.chars() {
        match character {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            character if character.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", character as u32);
            }
            character => out.push(character),
        }
    }
}

fn push_json_field(out: &mut String, name: &str, value: Value<'_>) {
    out.push(',');
    push_json_string(out, name);
    out.push(':');
    match value {
        Value::U64(number) => {
            let _ = write!(out, "{number}");
        }
        Value::Bool(flag) => out.push_str(if flag { "true" } else { "false" }),
        Value::Str(text) => push_json_string(out, text),
        Value::Bytes(bytes) => push_json_string(out, &String::from_utf8_lossy(bytes)),
        Value::Null => out.push_str("null"),
    }
}

/// A JSON string (RFC 8259): quotes, backslashes and control characters
/// escaped.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            character if (character as u32) < 0x20 || character == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", character as u32);
            }
            character => out.push(character),
        }
    }
    out.push('"');
}

/// Logs at `ERROR`: the server stops or cannot start, or an operation
/// failed that needs the operator.
#[macro_export]
macro_rules! log_error {
    ($($argument:tt)*) => {
        $crate::log_at!($crate::logger::Level::Error, $($argument)*)
    };
}

/// Logs at `WARN`: something an operator may need to act on.
#[macro_export]
macro_rules! log_warn {
    ($($argument:tt)*) => {
        $crate::log_at!($crate::logger::Level::Warn, $($argument)*)
    };
}

/// Logs at `INFO`: the life of the node.
#[macro_export]
macro_rules! log_info {
    ($($argument:tt)*) => {
        $crate::log_at!($crate::logger::Level::Info, $($argument)*)
    };
}

/// Logs at `DEBUG`: each attempt behind what `INFO` says.
#[macro_export]
macro_rules! log_debug {
    ($($argument:tt)*) => {
        $crate::log_at!($crate::logger::Level::Debug, $($argument)*)
    };
}

/// Logs one line at a level given as a value; the arguments are not even
/// evaluated when the level is off.
#[macro_export]
macro_rules! log_at {
    ($level:expr, $($argument:tt)*) => {{
        let level = $level;
        if $crate::logger::enabled(level) {
            $crate::logger::log(level, format_args!($($argument)*));
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timestamp(unix_ms: u64) -> String {
        let mut out = String::new();
        write_timestamp(&mut out, unix_ms);
        out
    }

    fn seconds(unix_s: u64) -> String {
        timestamp(unix_s * 1000)
    }

    #[test]
    fn timestamps_of_known_instants() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1), "1970-01-01T00:00:00.001Z");
        assert_eq!(
            timestamp(1_796_152_323_123),
            "2026-12-01T19:12:03.123Z",
            "the example in the issue"
        );
        assert_eq!(seconds(946_684_799), "1999-12-31T23:59:59.000Z");
        assert_eq!(timestamp(946_684_800_000), "2000-01-01T00:00:00.000Z");
    }

    #[test]
    fn timestamps_at_the_ends_of_months_and_years() {
        assert_eq!(seconds(949_363_199), "2000-01-31T23:59:59.000Z");
        assert_eq!(seconds(949_363_200), "2000-02-01T00:00:00.000Z");
        assert_eq!(timestamp(1_704_067_199_999), "2023-12-31T23:59:59.999Z");
        assert_eq!(timestamp(1_704_067_200_000), "2024-01-01T00:00:00.000Z");
    }

    #[test]
    fn timestamps_across_leap_days() {
        // 2000 is a leap year (divisible by 400).
        assert_eq!(seconds(951_827_696), "2000-02-29T12:34:56.000Z");
        // 2024 is one (divisible by 4).
        assert_eq!(timestamp(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(timestamp(1_709_251_200_000), "2024-03-01T00:00:00.000Z");
        // 2100 is not (divisible by 100, not by 400).
        assert_eq!(seconds(4_107_542_399), "2100-02-28T23:59:59.000Z");
        assert_eq!(seconds(4_107_542_400), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn every_day_of_four_centuries_follows_the_one_before() {
        let days_in_month = |year: u64, month: u64| match month {
            2 if year.is_multiple_of(4)
                && (!year.is_multiple_of(100) || year.is_multiple_of(400)) =>
            {
                29
            }
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut expected = (1970, 1, 1);
        for days in 0..146_097 {
            assert_eq!(civil_from_days(days), expected, "day {days}");
            let (year, month, day) = expected;
            expected = if day < days_in_month(year, month) {
                (year, month, day + 1)
            } else if month < 12 {
                (year, month + 1, 1)
            } else {
                (year + 1, 1, 1)
            };
        }
    }

    const NODE_TEXT: Settings = Settings {
        node: Some(12347),
        level: Level::Info,
        format: Format::Text,
    };
    const NODE_JSON: Settings = Settings {
        format: Format::Json,
        ..NODE_TEXT
    };

    #[test]
    fn a_text_line_has_the_time_the_level_the_node_and_the_message() {
        let line = format_line(
            &NODE_TEXT,
            1_796_152_323_123,
            Level::Warn,
            Some("ignored_in_text"),
            &"lost peer 127.0.0.1:12345",
            &[("epoch", Value::U64(3))],
        );
        assert_eq!(
            line,
            "2026-12-01T19:12:03.123Z WARN node=12347 lost peer 127.0.0.1:12345\n"
        );
        let anonymous = format_line(&Settings::DEFAULT, 0, Level::Error, None, &"bad flag", &[]);
        assert_eq!(anonymous, "1970-01-01T00:00:00.000Z ERROR bad flag\n");
    }

    #[test]
    fn a_text_line_stays_one_line_whatever_the_message_holds() {
        let line = format_line(
            &NODE_TEXT,
            0,
            Level::Info,
            None,
            &"a\nb\r\tc\u{1b}[31m",
            &[],
        );
        assert_eq!(
            line,
            "1970-01-01T00:00:00.000Z INFO node=12347 a\\nb\\r\\tc\\u{1b}[31m\n"
        );
    }

    #[test]
    fn a_json_line_is_one_object_with_the_events_fields() {
        let line = format_line(
            &NODE_JSON,
            1_796_152_323_123,
            Level::Info,
            Some("leadership_won"),
            &"leadership won",
            &[
                ("epoch", Value::U64(3)),
                ("adopted_from", Value::Null),
                ("installed", Value::Bool(true)),
                ("reason", Value::Str("leader lost")),
            ],
        );
        assert_eq!(
            line,
            "{\"ts\":\"2026-12-01T19:12:03.123Z\",\"level\":\"INFO\",\"node\":12347,\
             \"event\":\"leadership_won\",\"msg\":\"leadership won\",\"epoch\":3,\
             \"adopted_from\":null,\"installed\":true,\"reason\":\"leader lost\"}\n"
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["node"], 12347);
        assert_eq!(parsed["epoch"], 3);
    }

    #[test]
    fn json_escapes_quotes_backslashes_control_characters_and_bad_utf8() {
        let message = "say \"hi\" \\ to\n\u{0}\u{1f}\u{7f} é ✓";
        let bytes = b"key\xff\xfe\"\\\x01";
        let line = format_line(
            &NODE_JSON,
            0,
            Level::Warn,
            None,
            &message,
            &[("key", Value::Bytes(bytes))],
        );
        assert!(
            line.ends_with("}\n") && line.matches('\n').count() == 1,
            "{line}"
        );
        assert!(
            line.contains(r#""msg":"say \"hi\" \\ to\n\u0000\u001f\u007f é ✓""#),
            "{line}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["msg"], message);
        assert_eq!(parsed["key"], "key\u{fffd}\u{fffd}\"\\\u{1}");
        assert_eq!(parsed.get("node"), Some(&serde_json::json!(12347)));
        let anonymous = format_line(
            &Settings {
                format: Format::Json,
                ..Settings::DEFAULT
            },
            0,
            Level::Info,
            None,
            &"x",
            &[],
        );
        let parsed: serde_json::Value = serde_json::from_str(&anonymous).unwrap();
        assert_eq!(parsed.get("node"), None, "no node id before init");
    }

    #[test]
    fn a_level_shows_itself_and_those_above() {
        let at = |level| Settings { level, ..NODE_TEXT };
        let shown = |setting: Level| {
            [Level::Error, Level::Warn, Level::Info, Level::Debug]
                .into_iter()
                .filter(|level| at(setting).enables(*level))
                .collect::<Vec<_>>()
        };
        assert_eq!(shown(Level::Error), [Level::Error]);
        assert_eq!(shown(Level::Warn), [Level::Error, Level::Warn]);
        assert_eq!(shown(Level::Info), [Level::Error, Level::Warn, Level::Info]);
        assert_eq!(shown(Level::Debug).len(), 4);
        assert!(!Settings::DEFAULT.enables(Level::Debug));
    }
}
