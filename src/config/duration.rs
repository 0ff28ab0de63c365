//! Human durations in configuration files: `"30s"`, `"2m"`, `"1h30m"`, `"500ms"`.
//!
//! A bare number is refused on purpose: `interval = 30` could mean seconds or minutes, and an
//! autoscaler that guesses wrong buys droplets sixty times too fast.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use std::fmt;
use std::time::Duration;

/// A duration written as a string of number-unit pairs (`ms`, `s`, `m`, `h`, `d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ConfigDuration(pub Duration);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string was empty.
    #[error("empty duration: write a number and a unit, such as \"30s\" or \"2m\"")]
    Empty,
    /// A number had no unit after it.
    #[error("`{0}` has a number without a unit: add one of ms, s, m, h, d (\"30s\", \"2m\")")]
    MissingUnit(String),
    /// A unit was not one of the known ones.
    #[error("`{text}` has the unknown unit `{unit}`: use ms, s, m, h or d")]
    UnknownUnit {
        /// The whole string.
        text: String,
        /// The unit that was not understood.
        unit: String,
    },
    /// Something other than digits and units.
    #[error("`{0}` is not a duration: write number-unit pairs such as \"90s\" or \"1h30m\"")]
    Malformed(String),
    /// The value does not fit.
    #[error("`{0}` is too long a duration")]
    Overflow(String),
}

/// Parses `"1h30m"`, `"45s"`, `"250ms"`, `"0s"`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(DurationError::Malformed(text.to_string()));
        }
        let number: u64 = rest[..digits_end]
            .parse()
            .map_err(|_| DurationError::Overflow(text.to_string()))?;
        rest = &rest[digits_end..];
        let unit_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        if unit_end == 0 {
            return Err(if rest.is_empty() {
                DurationError::MissingUnit(text.to_string())
            } else {
                DurationError::Malformed(text.to_string())
            });
        }
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => {
                return Err(DurationError::UnknownUnit {
                    text: text.to_string(),
                    unit: other.to_string(),
                });
            }
        };
        let millis = number
            .checked_mul(millis_per_unit)
            .ok_or_else(|| DurationError::Overflow(text.to_string()))?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(|| DurationError::Overflow(text.to_string()))?;
    }
    Ok(total)
}

/// Renders a duration the way a user would write it (`"1h30m"`, `"45s"`, `"250ms"`).
pub fn format_duration(duration: Duration) -> String {
    let mut millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if millis >= size {
            out.push_str(&format!("{}{unit}", millis / size));
            millis %= size;
        }
    }
    out
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"30s\", \"2m\" or \"1h30m\"")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<ConfigDuration, E> {
                parse_duration(value).map(ConfigDuration).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<ConfigDuration, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{value}s\" for seconds or \"{value}m\" for minutes"
                )))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<ConfigDuration, E> {
                self.visit_i64(value as i64)
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<ConfigDuration, E> {
                Err(E::custom(format!(
                    "a duration is a string with a unit, not the number {value}: write \"90s\" or \"1m30s\""
                )))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compound_durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
    }

    #[test]
    fn refuses_unclear_durations() {
        assert_eq!(
            parse_duration("30"),
            Err(DurationError::MissingUnit("30".into()))
        );
        assert!(matches!(
            parse_duration("3 weeks"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("3w"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("99999999999999999999s"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn formats_back_to_what_a_user_writes() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
