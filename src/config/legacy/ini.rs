//! INI files as Python's `configparser.ConfigParser(interpolation=ExtendedInterpolation())`
//! reads them, which is how the original do-scaler read its configuration:
//!
//! - `[section]` headers; keys before any header are an error; `[DEFAULT]` is not a section but
//!   the defaults every section sees;
//! - `key = value` or `key: value`; keys are case-insensitive (lowercased), values stripped;
//! - values continue on lines indented deeper than their key (joined with newlines; blank lines
//!   inside a value are kept, trailing ones dropped);
//! - lines whose first non-blank character is `#` or `;` are comments, anywhere;
//! - `${key}` (same section, then `[DEFAULT]`), `${section:key}` and `$$` are interpolated, up
//!   to ten levels deep; a reference to nothing is an error, as in Python.
//!
//! One difference, on purpose: an inline comment after ` ;` or ` #` is dropped (configparser
//! keeps it as part of the value unless told otherwise), because the old tool's own examples
//! wrote them.
//!
//! Values may hold a token (`do_token`), so `Debug` shows sections and keys, never values.

use crate::config::diagnostic::{Diagnostic, Severity};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The section whose keys every other section sees.
pub const DEFAULT_SECTION: &str = "DEFAULT";

/// Python's `MAX_INTERPOLATION_DEPTH`.
const MAX_DEPTH: usize = 10;

/// One value as written, with the line its key is on.
#[derive(Clone)]
struct Raw {
    value: String,
    line: usize,
}

/// A parsed INI file.
#[derive(Default)]
pub struct Ini {
    file: PathBuf,
    defaults: BTreeMap<String, Raw>,
    sections: BTreeMap<String, BTreeMap<String, Raw>>,
}

impl std::fmt::Debug for Ini {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = |map: &BTreeMap<String, Raw>| map.keys().cloned().collect::<Vec<_>>();
        f.debug_struct("Ini")
            .field("file", &self.file)
            .field("defaults", &keys(&self.defaults))
            .field(
                "sections",
                &self
                    .sections
                    .iter()
                    .map(|(name, keys_of)| (name.clone(), keys(keys_of)))
                    .collect::<BTreeMap<_, _>>(),
            )
            .finish()
    }
}

fn error_at(file: &Path, line: usize, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: file.to_path_buf(),
        line,
        column: 1,
        message: message.into(),
    }
}

/// Drops an inline comment (` ;` or ` #` and what follows; a value that is only a comment is
/// empty).
fn without_inline_comment(value: &str) -> &str {
    if value.starts_with(';') || value.starts_with('#') {
        return "";
    }
    let mut end = value.len();
    for marker in [" ;", " #", "\t;", "\t#"] {
        if let Some(at) = value.find(marker) {
            end = end.min(at);
        }
    }
    &value[..end]
}

impl Ini {
    /// Parses INI text; every line that is not a header, a key, a continuation, a comment or
    /// blank is an error.
    pub fn parse(file: &Path, text: &str) -> Result<Ini, Vec<Diagnostic>> {
        let mut ini = Ini {
            file: file.to_path_buf(),
            ..Ini::default()
        };
        let mut errors = Vec::new();
        // The section being read (`Some("DEFAULT")` for the defaults), the key being read, its
        // value's lines, and the indent of the key's line.
        let mut section: Option<String> = None;
        let mut key: Option<(String, usize)> = None;
        let mut lines: Vec<String> = Vec::new();
        let mut key_indent = usize::MAX;
        let finish = |ini: &mut Ini,
                      section: &Option<String>,
                      key: &mut Option<(String, usize)>,
                      lines: &mut Vec<String>| {
            if let (Some(section), Some((name, line))) = (section, key.take()) {
                while lines.last().is_some_and(String::is_empty) {
                    lines.pop();
                }
                let raw = Raw {
                    value: lines.join("\n"),
                    line,
                };
                let map = if section == DEFAULT_SECTION {
                    &mut ini.defaults
                } else {
                    ini.sections.entry(section.clone()).or_default()
                };
                map.insert(name, raw);
            }
            lines.clear();
        };
        for (index, raw_line) in text.lines().enumerate() {
            let line_no = index + 1;
            let stripped = raw_line.trim();
            let is_comment = stripped.starts_with('#') || stripped.starts_with(';');
            if stripped.is_empty() || is_comment {
                // A blank line inside a value is part of it; a comment line is not.
                if stripped.is_empty() && key.is_some() {
                    lines.push(String::new());
                }
                continue;
            }
            let indent = raw_line.len() - raw_line.trim_start().len();
            if key.is_some() && indent > key_indent {
                lines.push(without_inline_comment(stripped).trim().to_string());
                continue;
            }
            finish(&mut ini, &section, &mut key, &mut lines);
            key_indent = indent;
            if let Some(name) = stripped
                .strip_prefix('[')
                .and_then(|rest| rest.find(']').map(|end| &rest[..end]))
                .filter(|name| !name.is_empty())
            {
                let name = name.to_string();
                if name != DEFAULT_SECTION && ini.sections.contains_key(&name) {
                    errors.push(error_at(
                        file,
                        line_no,
                        format!("section [{name}] appears twice: merge the two"),
                    ));
                }
                if name != DEFAULT_SECTION {
                    ini.sections.entry(name.clone()).or_default();
                }
                section = Some(name);
                continue;
            }
            let Some(current) = &section else {
                errors.push(error_at(
                    file,
                    line_no,
                    "a key before any [section]: put it under a section header",
                ));
                continue;
            };
            let Some(split) = stripped.find(['=', ':']) else {
                errors.push(error_at(
                    file,
                    line_no,
                    format!(
                        "expected `key = value` (or a value continued on a line indented deeper than its key), found `{}`",
                        stripped.escape_default()
                    ),
                ));
                continue;
            };
            let name = stripped[..split].trim().to_lowercase();
            if name.is_empty() {
                errors.push(error_at(file, line_no, "a value without a key"));
                continue;
            }
            let map = if current == DEFAULT_SECTION {
                &ini.defaults
            } else {
                &ini.sections[current]
            };
            if map.contains_key(&name) {
                errors.push(error_at(
                    file,
                    line_no,
                    format!("`{name}` is set twice in [{current}]: keep one"),
                ));
            }
            let value = without_inline_comment(stripped[split + 1..].trim()).trim();
            lines.push(value.to_string());
            key = Some((name, line_no));
        }
        finish(&mut ini, &section, &mut key, &mut lines);
        if errors.is_empty() {
            Ok(ini)
        } else {
            Err(errors)
        }
    }

    fn raw(&self, section: &str, key: &str) -> Option<&Raw> {
        let key = key.to_lowercase();
        self.sections
            .get(section)
            .and_then(|s| s.get(&key))
            .or_else(|| self.defaults.get(&key))
    }

    /// A value with interpolation resolved, and its line; `Ok(None)` when the key is in
    /// neither the section nor `[DEFAULT]`. A bad reference is an error naming its line.
    pub fn get(&self, section: &str, key: &str) -> Result<Option<(String, usize)>, Diagnostic> {
        let Some(raw) = self.raw(section, key) else {
            return Ok(None);
        };
        let value = self.interpolate(section, &raw.value, raw.line, 1)?;
        Ok(Some((value, raw.line)))
    }

    fn interpolate(
        &self,
        section: &str,
        value: &str,
        line: usize,
        depth: usize,
    ) -> Result<String, Diagnostic> {
        if depth > MAX_DEPTH {
            return Err(error_at(
                &self.file,
                line,
                format!("interpolation nests deeper than {MAX_DEPTH} levels (a reference loop?)"),
            ));
        }
        let mut out = String::new();
        let mut rest = value;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
                continue;
            }
            let Some(inner) = after.strip_prefix('{') else {
                return Err(error_at(
                    &self.file,
                    line,
                    format!(
                        "`$` must be followed by `$` or `{{`, in `{}`",
                        value.escape_default()
                    ),
                ));
            };
            let Some(end) = inner.find('}') else {
                return Err(error_at(
                    &self.file,
                    line,
                    format!("`${{` is not closed, in `{}`", value.escape_default()),
                ));
            };
            let reference = &inner[..end];
            let (other, key) = match reference.split(':').collect::<Vec<_>>().as_slice() {
                [key] => (section, *key),
                [other, key] => (*other, *key),
                _ => {
                    return Err(error_at(
                        &self.file,
                        line,
                        format!("`${{{reference}}}` has more than one `:`"),
                    ));
                }
            };
            let Some(target) = self.raw(other, key) else {
                return Err(error_at(
                    &self.file,
                    line,
                    format!(
                        "`${{{reference}}}` refers to `{}` in [{other}] (or [DEFAULT]), which is not set",
                        key.to_lowercase()
                    ),
                ));
            };
            out.push_str(&self.interpolate(other, &target.value, line, depth + 1)?);
            rest = &inner[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The keys set in a section (not those it sees from `[DEFAULT]`).
    pub fn keys(&self, section: &str) -> Vec<String> {
        self.sections
            .get(section)
            .map(|keys| keys.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether a section exists (`[DEFAULT]` is not a section).
    pub fn has(&self, section: &str) -> bool {
        self.sections.contains_key(section)
    }

    /// An error at a line of this file.
    pub fn error(&self, line: usize, message: impl Into<String>) -> Diagnostic {
        error_at(&self.file, line, message)
    }
}

/// Lookups that collect interpolation errors instead of stopping at the first, so one run
/// reports every bad reference of a file.
pub struct Lookup<'a> {
    ini: &'a Ini,
    errors: std::cell::RefCell<Vec<Diagnostic>>,
}

impl<'a> Lookup<'a> {
    /// Lookups in `ini`.
    pub fn new(ini: &'a Ini) -> Self {
        Lookup {
            ini,
            errors: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// The value and its line, or `None` when not set (or when its interpolation failed,
    /// which is recorded).
    pub fn get(&self, section: &str, key: &str) -> Option<(String, usize)> {
        match self.ini.get(section, key) {
            Ok(found) => found,
            Err(error) => {
                self.errors.borrow_mut().push(error);
                None
            }
        }
    }

    /// The value and its line; a missing key is recorded as an error.
    pub fn need(&self, section: &str, key: &str) -> Option<(String, usize)> {
        let found = self.get(section, key);
        if found.is_none() && self.ini.raw(section, key).is_none() {
            self.errors
                .borrow_mut()
                .push(self.ini.error(1, format!("[{section}] needs `{key}`")));
        }
        found
    }

    /// Whether a section exists.
    pub fn has(&self, section: &str) -> bool {
        self.ini.has(section)
    }

    /// An error at a line of the file.
    pub fn error(&self, line: usize, message: impl Into<String>) -> Diagnostic {
        self.ini.error(line, message)
    }

    /// The errors recorded so far.
    pub fn take_errors(&self) -> Vec<Diagnostic> {
        std::mem::take(&mut *self.errors.borrow_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Ini {
        Ini::parse(Path::new("x.cfg"), text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn defaults_interpolation_and_continuations_follow_configparser() {
        let ini = parse(
            "[DEFAULT]\ntoken = dop_v1_secret\nregion = nyc3\n\n[scaler]\ndo_token = ${token}\nPolicy_Files = a.json\n    b.json\n\n    c.json\n\n[other]\nfrom = ${scaler:do_token}\nmoney = $$5\nuse = ${region}-x\n",
        );
        let get = |s: &str, k: &str| ini.get(s, k).unwrap().unwrap().0;
        assert_eq!(get("scaler", "do_token"), "dop_v1_secret");
        assert_eq!(get("other", "from"), "dop_v1_secret");
        assert_eq!(
            get("scaler", "token"),
            "dop_v1_secret",
            "DEFAULT is seen everywhere"
        );
        assert_eq!(get("scaler", "policy_files"), "a.json\nb.json\n\nc.json");
        assert_eq!(get("other", "money"), "$5");
        assert_eq!(get("other", "use"), "nyc3-x");
        assert!(!ini.has("DEFAULT"));
        assert!(
            !format!("{ini:?}").contains("secret"),
            "Debug never shows values"
        );
    }

    #[test]
    fn bad_references_and_lines_are_errors_with_their_lines() {
        let ini = parse("[a]\nx = ${nope}\ny = ${b:z}\nw = $oops\nloop = ${loop}\n");
        for key in ["x", "y", "w", "loop"] {
            assert!(ini.get("a", key).is_err(), "{key}");
        }
        assert_eq!(ini.get("a", "y").unwrap_err().line, 3);
        let errors = Ini::parse(Path::new("x.cfg"), "key = 1\n[a]\njust words\n").unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!((errors[0].line, errors[1].line), (1, 3));
    }
}
