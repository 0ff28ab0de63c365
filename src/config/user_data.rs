//! Credentials in user data: `{{ credential "name" }}` in `user_data` or `user_data_file` is
//! replaced, at create time only, by the systemd credential `name`, so an agent's
//! registration secret never sits in a configuration file. The filled-in text lives only in
//! the create request (whose `Debug` redacts it): it is never logged, shown by `plan` or the
//! status API, or stored. Any other `{{ ... }}` (a cloud-init Jinja template) is left as is.

use std::path::Path;

/// Why user data could not be filled in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserDataError {
    /// A reference is malformed.
    #[error("user data: {0}")]
    Malformed(String),
    /// A named credential is not there.
    #[error(
        "user data names the credential `{name}`, which is not loaded ({reason}): put it in /etc/do-scaler/credentials/{name} (the packaged unit loads every file there), or add LoadCredential={name}:<file> to your unit"
    )]
    Missing {
        /// The credential.
        name: String,
        /// Why it could not be read.
        reason: String,
    },
}

/// One `{{ credential "name" }}` in the text: its byte range and the name.
fn references(text: &str) -> Result<Vec<(std::ops::Range<usize>, String)>, UserDataError> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find("{{").map(|i| from + i) {
        let Some(close) = text[open..].find("}}").map(|i| open + i + 2) else {
            break;
        };
        let inner = text[open + 2..close - 2].trim();
        if let Some(rest) = inner.strip_prefix("credential")
            && rest.starts_with(char::is_whitespace)
        {
            let quoted = rest.trim();
            let name = quoted
                .strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .ok_or_else(|| {
                    UserDataError::Malformed(format!(
                        "`{{{{ {inner} }}}}`: write the name in double quotes, as in {{{{ credential \"drone-rpc-secret\" }}}}"
                    ))
                })?;
            super::sources::check_credential_name(name).map_err(UserDataError::Malformed)?;
            found.push((open..close, name.to_string()));
        }
        from = close;
    }
    Ok(found)
}

/// The credentials the text names, in order, each once.
pub fn credential_names(text: &str) -> Result<Vec<String>, UserDataError> {
    let mut names: Vec<String> = references(text)?.into_iter().map(|(_, n)| n).collect();
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    Ok(names)
}

/// The text with every reference replaced by its credential from `credentials_dir` (trailing
/// newlines of the credential file dropped).
pub fn fill_in(text: &str, credentials_dir: Option<&Path>) -> Result<String, UserDataError> {
    let found = references(text)?;
    if found.is_empty() {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (range, name) in found {
        let value = read(&name, credentials_dir)?;
        out.push_str(&text[last..range.start]);
        out.push_str(&value);
        last = range.end;
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// Checks that every credential the text names can be read.
pub fn check_available(text: &str, credentials_dir: Option<&Path>) -> Result<(), UserDataError> {
    for name in credential_names(text)? {
        read(&name, credentials_dir)?;
    }
    Ok(())
}

fn read(name: &str, credentials_dir: Option<&Path>) -> Result<String, UserDataError> {
    let Some(dir) = credentials_dir else {
        return Err(UserDataError::Missing {
            name: name.to_string(),
            reason: "no CREDENTIALS_DIRECTORY".into(),
        });
    };
    let text = super::files::read_text(
        &super::credentials::credential_path(dir, name),
        super::files::MAX_SECRET_BYTES,
    )
    .map_err(|e| UserDataError::Missing {
        name: name.to_string(),
        reason: e.to_string(),
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_filled_in_and_other_templates_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("drone-rpc-secret"), "hunter2\n").unwrap();
        let text = "## template: jinja\nhost: {{ v1.local_hostname }}\nsecret: {{ credential \"drone-rpc-secret\" }}\nagain: {{credential \"drone-rpc-secret\"}}\n";
        assert_eq!(
            credential_names(text).unwrap(),
            vec!["drone-rpc-secret".to_string()]
        );
        let filled = fill_in(text, Some(dir.path())).unwrap();
        assert_eq!(
            filled,
            "## template: jinja\nhost: {{ v1.local_hostname }}\nsecret: hunter2\nagain: hunter2\n"
        );
        assert_eq!(fill_in("no refs", None).unwrap(), "no refs");
    }

    #[test]
    fn a_missing_or_malformed_reference_is_an_error_that_names_it() {
        let missing = fill_in("{{ credential \"absent\" }}", None).unwrap_err();
        assert!(missing.to_string().contains("absent"), "{missing}");
        assert!(missing.to_string().contains("LoadCredential"), "{missing}");
        for bad in [
            "{{ credential absent }}",
            "{{ credential \"../etc/shadow\" }}",
        ] {
            assert!(credential_names(bad).is_err(), "{bad}");
        }
    }
}
