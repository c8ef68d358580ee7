//! Prometheus's text exposition format (version 0.0.4), written by hand:
//! a family's `# HELP` and `# TYPE` lines, then its samples, each
//! `name{label="value",...} value`.
//!
//! The writer keeps what the format requires: a family is announced once,
//! before its samples, and its samples follow it without another family
//! between; names match `[a-zA-Z_:][a-zA-Z0-9_:]*` (asserted: names are
//! constants); label values escape `\`, `"` and newlines; HELP text
//! escapes `\` and newlines; infinities are `+Inf`/`-Inf`. Pure: it only
//! appends to a string.

use std::fmt::Write as _;

use super::metrics::Histogram;

/// The `Content-Type` of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample's value: integers print exactly, floats as Rust prints them
/// (never in exponent form), infinities as Prometheus spells them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Integer(i128),
    Float(f64),
}

macro_rules! integer_values {
    ($($type:ty),*) => {$(
        impl From<$type> for Value {
            fn from(value: $type) -> Value {
                Value::Integer(value as i128)
            }
        }
    )*};
}
integer_values!(u8, u16, u32, u64, usize, i64);

impl From<f64> for Value {
    fn from(value: f64) -> Value {
        Value::Float(value)
    }
}

/// The text of one scrape being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
    /// The family whose samples may follow.
    family: Option<&'static str>,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Announces family `name`: its help text and type.
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &str) {
        debug_assert!(is_metric_name(name), "{name} is not a metric name");
        let _ = write!(self.text, "# HELP {name} ");
        push_escaped(&mut self.text, help, false);
        let _ = writeln!(self.text, "\n# TYPE {name} {}", kind.name());
        self.family = Some(name);
    }

    /// One sample of the family announced last: `name` is the family's (a
    /// histogram's samples add `_bucket`, `_sum` and `_count`).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        debug_assert!(
            self.family.is_some_and(|family| name.starts_with(family)),
            "{name} sampled outside its family"
        );
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (position, (label, label_value)) in labels.iter().enumerate() {
                debug_assert!(is_label_name(label), "{label} is not a label name");
                if position > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"");
                push_escaped(&mut self.text, label_value, true);
                self.text.push('"');
            }
            self.text.push('}');
        }
        self.text.push(' ');
        push_value(&mut self.text, value.into());
        self.text.push('\n');
    }

    /// A family of one counter without labels.
    pub fn counter(&mut self, name: &'static str, help: &str, value: impl Into<Value>) {
        debug_assert!(name.ends_with("_total"), "a counter's name ends in _total");
        self.family(name, Kind::Counter, help);
        self.sample(name, &[], value);
    }

    /// A family of one gauge without labels.
    pub fn gauge(&mut self, name: &'static str, help: &str, value: impl Into<Value>) {
        self.family(name, Kind::Gauge, help);
        self.sample(name, &[], value);
    }

    /// A family of one histogram without labels.
    pub fn histogram(&mut self, name: &'static str, help: &str, histogram: &Histogram) {
        self.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        let mut bound_text = String::new();
        for (bound, count) in histogram.cumulative() {
            bound_text.clear();
            push_value(&mut bound_text, Value::Float(bound));
            self.sample(&bucket, &[("le", &bound_text)], count);
        }
        self.sample(&format!("{name}_sum"), &[], histogram.sum());
        self.sample(&format!("{name}_count"), &[], histogram.count());
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.text
    }
}

fn push_value(text: &mut String, value: Value) {
    let _ = match value {
        Value::Integer(integer) => write!(text, "{integer}"),
        Value::Float(float) if float == f64::INFINITY => write!(text, "+Inf"),
        Value::Float(float) if float == f64::NEG_INFINITY => write!(text, "-Inf"),
        Value::Float(float) if float.is_nan() => write!(text, "NaN"),
        Value::Float(float) => write!(text, "{float}"),
    };
}

/// Appends `raw`, escaping `\` and newlines, and `"` in a label value.
fn push_escaped(text: &mut String, raw: &str, label_value: bool) {
    for character in raw.chars() {
        match character {
            '\\' => text.push_str("\\\\"),
            '\n' => text.push_str("\\n"),
            '"' if label_value => text.push_str("\\\""),
            other => text.push(other),
        }
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_metric_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && characters.all(|rest| rest.is_ascii_alphanumeric() || rest == '_' || rest == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(name: &str) -> bool {
    is_metric_name(name) && !name.contains(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_samples_are_written_exactly() {
        let mut exposition = Exposition::new();
        exposition.counter("kvstore_things_total", "Things, counted.", 3u64);
        exposition.family("kvstore_peer_up", Kind::Gauge, "Whether a peer\nis up.");
        let address = "a\"b\\c\nd";
        exposition.sample(
            "kvstore_peer_up",
            &[("peer", "2"), ("address", address)],
            1u8,
        );
        exposition.gauge("kvstore_ratio", "A float.", 0.25);
        assert_eq!(
            exposition.finish(),
            "# HELP kvstore_things_total Things, counted.\n\
             # TYPE kvstore_things_total counter\n\
             kvstore_things_total 3\n\
             # HELP kvstore_peer_up Whether a peer\\nis up.\n\
             # TYPE kvstore_peer_up gauge\n\
             kvstore_peer_up{peer=\"2\",address=\"a\\\"b\\\\c\\nd\"} 1\n\
             # HELP kvstore_ratio A float.\n\
             # TYPE kvstore_ratio gauge\n\
             kvstore_ratio 0.25\n"
        );
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_then_sum_and_count() {
        static BOUNDS: [f64; 2] = [0.0001, 1.0];
        let mut histogram = Histogram::new(&BOUNDS);
        histogram.observe(0.00005);
        histogram.observe(3.0);
        let mut exposition = Exposition::new();
        exposition.histogram("kvstore_wait_seconds", "Waits.", &histogram);
        assert_eq!(
            exposition.finish(),
            "# HELP kvstore_wait_seconds Waits.\n\
             # TYPE kvstore_wait_seconds histogram\n\
             kvstore_wait_seconds_bucket{le=\"0.0001\"} 1\n\
             kvstore_wait_seconds_bucket{le=\"1\"} 1\n\
             kvstore_wait_seconds_bucket{le=\"+Inf\"} 2\n\
             kvstore_wait_seconds_sum 3.00005\n\
             kvstore_wait_seconds_count 2\n"
        );
    }

    #[test]
    fn names_follow_the_charset() {
        assert!(is_metric_name("kvstore_a:b_1"));
        assert!(!is_metric_name("1abc"));
        assert!(!is_metric_name("a-b"));
        assert!(!is_metric_name(""));
        assert!(is_label_name("le"));
        assert!(!is_label_name("a:b"));
    }
}
