//! Parsing a configuration file into its schema while collecting every schema error, not only
//! the first: serde stops at the first wrong key or value, so each error's lines are blanked
//! (byte offsets kept, so every later `line:column` is still the file's own) and the file is
//! parsed again, until it parses or nothing more can be learned (a TOML syntax error, a table
//! header, an error without a place, a required key that was itself wrong).

use super::diagnostic::Diagnostic;
use serde::de::DeserializeOwned;
use std::path::Path;

/// At most this many schema errors are collected from one file.
const MAX_ERRORS_PER_FILE: usize = 20;

/// What a lenient parse gives: the value when the file parses once its wrong lines are
/// blanked, and the text it was parsed from (the original when nothing was wrong).
pub struct Collected<T> {
    /// The parsed file, `None` when it could not be parsed at all.
    pub value: Option<T>,
    /// The text `value` was parsed from; byte offsets match the original file.
    pub text: String,
    /// How many schema errors were found (each pushed as a diagnostic).
    pub errors: usize,
}

/// Parses `source` as `T`, pushing one diagnostic per schema error (through `explain` for the
/// wording) onto `diagnostics`.
pub fn parse<T: DeserializeOwned>(
    file: &Path,
    source: &str,
    explain: fn(&str) -> String,
    diagnostics: &mut Vec<Diagnostic>,
) -> Collected<T> {
    let mut text = source.to_string();
    let mut blanked_keys: Vec<String> = Vec::new();
    let mut errors = 0;
    loop {
        let error = match toml::from_str::<T>(&text) {
            Ok(value) => {
                return Collected {
                    value: Some(value),
                    text,
                    errors,
                };
            }
            Err(error) => error,
        };
        let message = error.message().trim().to_string();
        // A key that was blanked for its own error is now missing: already said. So is a
        // required key whose misspelling was blanked (`regoin` for `region`).
        let consequence = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .is_some_and(|missing| {
                blanked_keys
                    .iter()
                    .any(|key| key == missing || edit_distance(key, missing) <= 2)
            });
        if !consequence {
            diagnostics.push(Diagnostic::error_at(
                file,
                source,
                error.span(),
                explain(&message),
            ));
            errors += 1;
        }
        let syntax = toml::from_str::<toml::Table>(&text).is_err();
        let Some(span) = error.span().filter(|_| !syntax && !consequence) else {
            break;
        };
        if errors >= MAX_ERRORS_PER_FILE {
            break;
        }
        match blank_lines(&text, span) {
            // Blanking changed nothing (the error sits on lines already set aside): no
            // further parse can learn more.
            Some((blanked, _)) if blanked == text => break,
            Some((blanked, keys)) => {
                text = blanked;
                blanked_keys.extend(keys);
            }
            None => break,
        }
    }
    Collected {
        value: None,
        text,
        errors,
    }
}

/// `text` with every line the byte `span` touches turned into spaces (newlines kept), and the
/// keys those lines defined. `None` when a line is a table header (blanking it would move its
/// keys into the table above) or inside a multi-line string.
fn blank_lines(text: &str, span: std::ops::Range<usize>) -> Option<(String, Vec<String>)> {
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let end = text[span.end.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| span.end + i);
    let lines = &text[start..end];
    if lines
        .lines()
        .any(|l| l.trim_start().starts_with('[') || l.contains("'''") || l.contains("\"\"\""))
    {
        return None;
    }
    let keys = lines
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(key, _)| key.trim().trim_matches('"').to_string())
        .collect();
    let mut blanked = String::with_capacity(text.len());
    blanked.push_str(&text[..start]);
    blanked.extend(lines.chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
    blanked.push_str(&text[end..]);
    Some((blanked, keys))
}

/// Levenshtein distance, for "did you mean" on misspelt keys.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct File {
        min: u32,
        max: u32,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        a: Option<u32>,
    }

    fn run(text: &str) -> (Vec<String>, bool) {
        let mut diagnostics = Vec::new();
        let collected: Collected<File> = parse(
            Path::new("f.toml"),
            text,
            |m| m.to_string(),
            &mut diagnostics,
        );
        (
            diagnostics.iter().map(|d| d.to_string()).collect(),
            collected.value.is_some(),
        )
    }

    #[test]
    fn every_wrong_key_and_value_is_reported_at_its_own_place() {
        let (found, parsed) =
            run("min = 1\nmax = 2\nbogus = 3\nname = 4\n[inner]\na = \"x\"\nb = 1\n");
        assert!(parsed, "{found:?}");
        let mut places: Vec<&str> = found
            .iter()
            .map(|f| f.split(": ").next().unwrap())
            .collect();
        places.sort();
        assert_eq!(
            places,
            ["f.toml:3:1", "f.toml:4:8", "f.toml:6:5", "f.toml:7:1"],
            "{found:?}"
        );
    }

    #[test]
    fn a_required_key_that_is_wrong_is_said_once() {
        let (found, parsed) = run("min = \"one\"\nmax = 2\n");
        assert!(!parsed);
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn a_syntax_error_stops_that_file() {
        let (found, parsed) = run("min = = 1\nmax = \"x\"\n");
        assert!(!parsed);
        assert_eq!(found.len(), 1, "{found:?}");
    }
}

#[cfg(test)]
mod misspelt {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct File {
        region: String,
    }

    #[test]
    fn a_misspelt_required_key_is_one_error_not_two() {
        let mut diagnostics = Vec::new();
        let collected: Collected<File> = parse(
            Path::new("f.toml"),
            "regoin = \"nyc3\"\n",
            |m| m.to_string(),
            &mut diagnostics,
        );
        assert!(collected.value.is_none());
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    }
}
