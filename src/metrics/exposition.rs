//! A parser for the Prometheus text exposition format 0.0.4, tolerant of the OpenMetrics text
//! form. Zero-copy: names and label values borrow from the input unless a value has escapes,
//! and the label buffer is reused from sample to sample, so parsing allocates almost nothing.
//!
//! A malformed line is an error `SOURCE:LINE:COLUMN: reason`; callers treat the whole scrape
//! as failed rather than use half of it.

use std::borrow::Cow;
use std::fmt;

/// One sample as parsed, borrowing from the input.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRef<'a> {
    /// Metric name.
    pub name: &'a str,
    /// Label pairs in the order written (values unescaped).
    pub labels: &'a [(&'a str, Cow<'a, str>)],
    /// The value.
    pub value: f64,
    /// The sample's own timestamp in milliseconds, if it has one.
    pub timestamp_ms: Option<i64>,
}

/// A sample that owns its data.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Label pairs in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
    /// Timestamp in milliseconds, if given.
    pub timestamp_ms: Option<i64>,
}

impl From<&SampleRef<'_>> for Sample {
    fn from(sample: &SampleRef<'_>) -> Self {
        Sample {
            name: sample.name.to_string(),
            labels: sample
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value: sample.value,
            timestamp_ms: sample.timestamp_ms,
        }
    }
}

/// A malformed exposition, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input}:{line}:{column}: {reason}")]
pub struct ParseError {
    /// The file or URL the text came from.
    pub input: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub reason: String,
}

/// The blanks of the format: spaces and tabs (not Unicode white space).
const BLANK: [char; 2] = [' ', '\t'];

/// Parses `text`, calling `on_sample` for every sample. `source` names the input in errors.
pub fn parse_with<'t>(
    text: &'t str,
    source: &str,
    mut on_sample: impl FnMut(&SampleRef<'_>),
) -> Result<usize, ParseError> {
    let mut labels: Vec<(&'t str, Cow<'t, str>)> = Vec::with_capacity(8);
    let mut count = 0;
    for (index, raw_line) in text.split('\n').enumerate() {
        let line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
        let fail = |offset: usize, reason: String| {
            let mut offset = offset.min(line.len());
            while !line.is_char_boundary(offset) {
                offset -= 1;
            }
            ParseError {
                input: source.to_string(),
                line: index + 1,
                column: line[..offset].chars().count() + 1,
                reason,
            }
        };
        let trimmed_start = line.len() - line.trim_start_matches(BLANK).len();
        let body = &line[trimmed_start..];
        if body.is_empty() {
            continue;
        }
        if let Some(comment) = body.strip_prefix('#') {
            if comment.trim() == "EOF" {
                break;
            }
            check_comment(comment).map_err(|(at, reason)| fail(trimmed_start + 1 + at, reason))?;
            continue;
        }
        labels.clear();
        let mut cursor = Cursor {
            text: line,
            at: trimmed_start,
        };
        let sample =
            parse_sample(&mut cursor, &mut labels).map_err(|reason| fail(cursor.at, reason))?;
        on_sample(&SampleRef {
            name: sample.0,
            labels: &labels,
            value: sample.1,
            timestamp_ms: sample.2,
        });
        count += 1;
    }
    Ok(count)
}

/// Parses `text` into owned samples.
pub fn parse(text: &str, source: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    parse_with(text, source, |s| samples.push(Sample::from(s)))?;
    Ok(samples)
}

/// Checks `# HELP name …` and `# TYPE name type`; other comments are free text.
fn check_comment(comment: &str) -> Result<(), (usize, String)> {
    let rest = comment.trim_start_matches(BLANK);
    let offset = comment.len() - rest.len();
    let (keyword, after) = match rest.split_once(BLANK) {
        Some(pair) => pair,
        None => (rest, ""),
    };
    if keyword != "HELP" && keyword != "TYPE" {
        return Ok(());
    }
    let after_trim = after.trim_start_matches(BLANK);
    let name_offset = offset + keyword.len() + 1 + (after.len() - after_trim.len());
    let (name, kind) = match after_trim.split_once(BLANK) {
        Some((name, kind)) => (name, kind.trim_matches(BLANK)),
        None => (after_trim, ""),
    };
    if !is_metric_name(name) {
        return Err((
            name_offset,
            format!("`# {keyword}` needs a metric name, found `{name}`"),
        ));
    }
    if keyword == "TYPE" {
        const TYPES: [&str; 9] = [
            "counter",
            "gauge",
            "histogram",
            "summary",
            "untyped",
            "unknown",
            "info",
            "stateset",
            "gaugehistogram",
        ];
        if !TYPES.contains(&kind) {
            return Err((
                name_offset + name.len() + 1,
                format!(
                    "unknown metric type `{kind}`: expected counter, gauge, histogram, summary or untyped"
                ),
            ));
        }
    }
    Ok(())
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

struct Cursor<'t> {
    text: &'t str,
    at: usize,
}

impl<'t> Cursor<'t> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'t str {
        let start = self.at;
        let bytes = self.text.as_bytes();
        while self.at < bytes.len() && keep(bytes[self.at]) {
            self.at += 1;
        }
        &self.text[start..self.at]
    }
}

type ParsedSample<'t> = (&'t str, f64, Option<i64>);

fn parse_sample<'t>(
    cursor: &mut Cursor<'t>,
    labels: &mut Vec<(&'t str, Cow<'t, str>)>,
) -> Result<ParsedSample<'t>, String> {
    let name = cursor.take_while(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
    if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
        return Err("expected a metric name".into());
    }
    let mut before_value = cursor.at;
    cursor.skip_spaces();
    if cursor.peek() == Some(b'{') {
        cursor.at += 1;
        parse_labels(cursor, labels)?;
        before_value = cursor.at;
        cursor.skip_spaces();
    }
    if cursor.at == before_value {
        return Err(match cursor.peek() {
            None => format!("`{name}` has no value"),
            Some(_) => "expected a space before the value".into(),
        });
    }
    let value_text = cursor.take_while(|b| b != b' ' && b != b'\t');
    if value_text.is_empty() {
        return Err(format!("`{name}` has no value"));
    }
    let value = parse_value(value_text).ok_or_else(|| {
        cursor.at -= value_text.len();
        format!("`{value_text}` is not a number")
    })?;
    cursor.skip_spaces();
    let mut timestamp = None;
    match cursor.peek() {
        None => {}
        Some(b'#') => {} // an OpenMetrics exemplar follows: ignored
        Some(_) => {
            let text = cursor.take_while(|b| b != b' ' && b != b'\t');
            timestamp = Some(parse_timestamp(text).ok_or_else(|| {
                cursor.at -= text.len();
                format!("`{text}` is not a timestamp (integer milliseconds)")
            })?);
            cursor.skip_spaces();
            if !matches!(cursor.peek(), None | Some(b'#')) {
                return Err("unexpected text after the timestamp".into());
            }
        }
    }
    Ok((name, value, timestamp))
}

fn parse_labels<'t>(
    cursor: &mut Cursor<'t>,
    labels: &mut Vec<(&'t str, Cow<'t, str>)>,
) -> Result<(), String> {
    loop {
        cursor.skip_spaces();
        match cursor.peek() {
            Some(b'}') => {
                cursor.at += 1;
                return Ok(());
            }
            None => return Err("unterminated label set: expected `}`".into()),
            _ => {}
        }
        let name = cursor.take_while(|b| b.is_ascii_alphanumeric() || b == b'_');
        if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
            return Err("expected a label name".into());
        }
        cursor.skip_spaces();
        if cursor.peek() != Some(b'=') {
            return Err(format!("expected `=` after label `{name}`"));
        }
        cursor.at += 1;
        cursor.skip_spaces();
        if cursor.peek() != Some(b'"') {
            return Err(format!("expected `\"` to open the value of label `{name}`"));
        }
        cursor.at += 1;
        let value = parse_label_value(cursor)?;
        labels.push((name, value));
        cursor.skip_spaces();
        match cursor.peek() {
            Some(b',') => cursor.at += 1,
            Some(b'}') => {}
            None => return Err("unterminated label set: expected `}`".into()),
            Some(_) => return Err("expected `,` or `}` after a label value".into()),
        }
    }
}

/// Reads a label value after its opening quote, up to and including the closing quote.
fn parse_label_value<'t>(cursor: &mut Cursor<'t>) -> Result<Cow<'t, str>, String> {
    let bytes = cursor.text.as_bytes();
    let start = cursor.at;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                cursor.at = i + 1;
                return Ok(Cow::Borrowed(&cursor.text[start..i]));
            }
            b'\\' => break,
            _ => i += 1,
        }
    }
    if i >= bytes.len() {
        cursor.at = i;
        return Err("unterminated label value: expected a closing `\"`".into());
    }
    // Escapes: copy and unescape.
    let mut value = String::with_capacity(i - start + 8);
    value.push_str(&cursor.text[start..i]);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                cursor.at = i + 1;
                return Ok(Cow::Owned(value));
            }
            b'\\' => {
                match bytes.get(i + 1) {
                    Some(b'\\') => value.push('\\'),
                    Some(b'"') => value.push('"'),
                    Some(b'n') => value.push('\n'),
                    Some(_) => {
                        // Prometheus keeps unknown escapes as written.
                        value.push('\\');
                        i += 1;
                        continue;
                    }
                    None => break,
                }
                i += 2;
            }
            _ => {
                let char_len = utf8_len(bytes[i]);
                value.push_str(&cursor.text[i..(i + char_len).min(bytes.len())]);
                i += char_len;
            }
        }
    }
    cursor.at = bytes.len();
    Err("unterminated label value: expected a closing `\"`".into())
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Parses a sample value: decimal, exponent, `NaN`, `+Inf`, `-Inf` (any case, as Go does).
pub fn parse_value(text: &str) -> Option<f64> {
    if let Ok(value) = text.parse::<f64>() {
        return Some(value);
    }
    let lower = text.to_ascii_lowercase();
    match lower.as_str() {
        "nan" | "+nan" | "-nan" => Some(f64::NAN),
        "inf" | "+inf" | "infinity" | "+infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// Integer milliseconds (0.0.4); a number with a fraction or exponent is OpenMetrics seconds.
fn parse_timestamp(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    let seconds: f64 = text.parse().ok()?;
    seconds
        .is_finite()
        .then(|| (seconds * 1000.0).round() as i64)
}

/// Renders samples in the text format (for tests and the sim); the inverse of [`parse`].
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    for sample in samples {
        out.push_str(&sample.name);
        if !sample.labels.is_empty() {
            out.push('{');
            for (index, (name, value)) in sample.labels.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(name);
                out.push_str("=\"");
                for c in value.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '"' => out.push_str("\\\""),
                        '\n' => out.push_str("\\n"),
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        out.push_str(&format_value(sample.value));
        if let Some(ts) = sample.timestamp_ms {
            out.push(' ');
            out.push_str(&ts.to_string());
        }
        out.push('\n');
    }
    out
}

/// Formats a value as Prometheus does (`NaN`, `+Inf`, `-Inf`, shortest round-trip otherwise).
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(render(std::slice::from_ref(self)).trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Sample {
        let samples = parse(text, "t").unwrap();
        assert_eq!(samples.len(), 1, "{samples:?}");
        samples.into_iter().next().unwrap()
    }

    #[test]
    fn reads_names_labels_values_and_timestamps() {
        let s = one("node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 294.18\n");
        assert_eq!(s.name, "node_cpu_seconds_total");
        assert_eq!(
            s.labels,
            [("cpu".into(), "0".into()), ("mode".into(), "idle".into())]
        );
        assert_eq!(s.value, 294.18);
        let s = one("job:rate5m{a=\"b\",} 1.5e+10 1700000000000");
        assert_eq!(
            (s.name.as_str(), s.value, s.timestamp_ms),
            ("job:rate5m", 1.5e10, Some(1_700_000_000_000))
        );
        assert!(one("x NaN").value.is_nan());
        assert_eq!(one("x +Inf").value, f64::INFINITY);
        assert_eq!(one("x -Inf").value, f64::NEG_INFINITY);
        assert_eq!(one("x 1 -5").timestamp_ms, Some(-5));
        assert_eq!(one("x{} 3").labels.len(), 0);
    }

    #[test]
    fn unescapes_label_values_and_keeps_separators_inside_them() {
        let s = one(r#"process{name="a, b=c}{d",cmd="say \"hi\"\nnow \\o/"} 1"#);
        assert_eq!(s.labels[0].1, "a, b=c}{d");
        assert_eq!(s.labels[1].1, "say \"hi\"\nnow \\o/");
        let s = one("x{a=\"é ü\\\\\"} 2");
        assert_eq!(s.labels[0].1, "é ü\\");
    }

    #[test]
    fn tolerates_comments_blank_lines_crlf_no_final_newline_and_openmetrics() {
        let text = "# HELP a An a.\r\n# TYPE a counter\r\n\r\na_total 1\r\n   \n# some comment\nb{x=\"y\"} 2 # {trace_id=\"1\"} 1.0\nc 3 1700000000.5\n# EOF\nignored{ 1";
        let samples = parse(text, "t").unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[2].timestamp_ms, Some(1_700_000_000_500));
        assert_eq!(parse("x 1", "t").unwrap().len(), 1);
    }

    #[test]
    fn errors_name_source_line_and_column() {
        let error = parse("ok 1\nbroken{a=\"1\" 2\n", "http://10.0.0.5:9110/metrics").unwrap_err();
        assert_eq!(
            error.to_string(),
            "http://10.0.0.5:9110/metrics:2:14: expected `,` or `}` after a label value"
        );
        let error = parse("x 12abc", "f.prom").unwrap_err();
        assert_eq!(error.to_string(), "f.prom:1:3: `12abc` is not a number");
        let error = parse("x{a=\"b} 1", "f").unwrap_err();
        assert!(error.reason.contains("unterminated label value"));
        let error = parse("# TYPE x countr\n", "f").unwrap_err();
        assert_eq!((error.line, error.column), (1, 10));
        assert!(parse("x", "f").is_err());
        assert!(parse("1x 2", "f").is_err());
        assert!(parse("x 1 2 3", "f").is_err());
        assert!(parse("x{1a=\"b\"} 1", "f").is_err());
        assert!(parse("<html>502 Bad Gateway</html>", "f").is_err());
    }

    #[test]
    fn fuzz_regressions() {
        // Found by `cargo fuzz`: a multi-byte blank after `# TYPE` put an error column inside a
        // character.
        let found = "# \0#   \0X\\n \n  \n    \u{b}# TYPE\tUn5\u{a0}\u{a0}\u{a0}  ";
        let error = parse(found, "f").unwrap_err();
        assert_eq!(error.line, 3, "{error}");
    }

    #[test]
    fn the_real_captures_parse() {
        for (file, expected) in [
            ("do-agent-3.18.14.prom", 50),
            ("do-agent-3.18.14-with-process.prom", 130),
            ("node-exporter-1.5.0.prom", 500),
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            let samples = parse(&text, file).unwrap();
            assert!(samples.len() >= expected, "{file}: {}", samples.len());
            let cpu = samples
                .iter()
                .filter(|s| s.name == "node_cpu_seconds_total")
                .count();
            assert!(cpu >= 8, "{file}: {cpu} cpu samples");
        }
    }

    #[test]
    fn render_then_parse_is_the_identity() {
        let samples = vec![Sample {
            name: "a:b_c".into(),
            labels: vec![("l".into(), "x\"y\\z\n,}{=".into())],
            value: -0.25,
            timestamp_ms: Some(42),
        }];
        assert_eq!(parse(&render(&samples), "t").unwrap(), samples);
    }
}
