//! Where secrets come from, and the type that keeps them out of logs.
//!
//! The DigitalOcean token is looked up, first to last, in `DIGITALOCEAN_TOKEN`, the systemd
//! credential `$CREDENTIALS_DIRECTORY/digitalocean-token`, and the base file's `token_file`.
//! It is held in [`ApiToken`], whose `Debug` and `Display` never show it.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret token. Printing it in any way shows `[redacted]`; only [`ApiToken::expose`] reads it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// Wraps a token (surrounding white space, such as a file's final newline, is dropped).
    pub fn new(token: impl Into<String>) -> Self {
        ApiToken(token.into().trim().to_string())
    }

    /// The token itself, for building an `Authorization` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken([redacted])")
    }
}

impl fmt::Display for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a token was found (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// An environment variable.
    Environment(&'static str),
    /// A systemd credential file.
    Credential(PathBuf),
    /// A token file named in the base file.
    File(PathBuf),
    /// `do_token` in the original tool's configuration.
    OldConfiguration,
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Environment(name) => write!(f, "environment variable {name}"),
            TokenSource::Credential(path) => write!(f, "systemd credential {}", path.display()),
            TokenSource::File(path) => write!(f, "token file {}", path.display()),
            TokenSource::OldConfiguration => f.write_str("do_token in the old configuration"),
        }
    }
}

/// Why a token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// No source holds a token.
    #[error(
        "no DigitalOcean token: set DIGITALOCEAN_TOKEN, load the systemd credential `digitalocean-token` (the packaged unit loads /etc/do-scaler/credentials/digitalocean-token: write the token there, mode 0600), or set token_file in the base file"
    )]
    Missing,
    /// A named file could not be read.
    #[error("cannot read the {what} {}: {reason}", path.display())]
    Unreadable {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        reason: super::files::FileError,
    },
    /// A source exists but is empty.
    #[error("the {0} is empty")]
    Empty(TokenSource),
}

/// The environment as a lookup function, so tests need not change the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The environment as a shared lookup function, for tasks that outlive a call.
pub type SharedEnv = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn read_secret(
    what: &'static str,
    path: &Path,
    source: TokenSource,
) -> Result<(ApiToken, TokenSource), CredentialError> {
    let text = super::files::read_text(path, super::files::MAX_SECRET_BYTES).map_err(|reason| {
        CredentialError::Unreadable {
            what,
            path: path.to_path_buf(),
            reason,
        }
    })?;
    let token = ApiToken::new(text);
    if token.expose().is_empty() {
        return Err(CredentialError::Empty(source));
    }
    Ok((token, source))
}

/// Where the packaged unit loads credentials from (every file, see
/// [`DIRECTORY_CREDENTIAL_PREFIX`]); the commands for people read the status token here when
/// run by hand, outside the unit.
pub const PACKAGED_CREDENTIALS_DIR: &str = "/etc/do-scaler/credentials";

/// The prefix of credentials the unit loads as a directory: `LoadCredential=do-scaler:DIR`
/// loads every file of DIR as `do-scaler_<file>` (systemd 252 has no `ImportCredential=`, and a
/// missing `LoadCredential=` file fails the unit, so optional credentials come this way).
pub const DIRECTORY_CREDENTIAL_PREFIX: &str = "do-scaler_";

/// Where the systemd credential `name` is in `dir`: `name` itself when loaded on its own, else
/// the copy the unit's directory load made (`do-scaler_<name>`); `dir/name` when neither exists.
pub fn credential_path(dir: &Path, name: &str) -> PathBuf {
    let own = dir.join(name);
    if own.exists() {
        return own;
    }
    let loaded_with_directory = dir.join(format!("{DIRECTORY_CREDENTIAL_PREFIX}{name}"));
    if loaded_with_directory.exists() {
        return loaded_with_directory;
    }
    own
}

/// Finds a secret: an environment variable, then a systemd credential, then a file.
fn find_secret(
    env: EnvLookup<'_>,
    variable: Option<&'static str>,
    credential: &str,
    file: Option<&Path>,
    what: &'static str,
) -> Result<(ApiToken, TokenSource), CredentialError> {
    if let Some(variable) = variable
        && let Some(value) = env(variable)
    {
        let token = ApiToken::new(value);
        if token.expose().is_empty() {
            return Err(CredentialError::Empty(TokenSource::Environment(variable)));
        }
        return Ok((token, TokenSource::Environment(variable)));
    }
    if let Some(dir) = env("CREDENTIALS_DIRECTORY") {
        let path = credential_path(Path::new(&dir), credential);
        if path.exists() {
            match read_secret(what, &path, TokenSource::Credential(path.clone())) {
                // An empty credential (the package installs `api-token` empty) is no credential:
                // the next source is used.
                Err(CredentialError::Empty(_)) => {}
                other => return other,
            }
        }
    }
    if let Some(path) = file {
        return read_secret(what, path, TokenSource::File(path.to_path_buf()));
    }
    Err(CredentialError::Missing)
}

/// The DigitalOcean API token, from the first source that has one.
pub fn digitalocean_token(
    env: EnvLookup<'_>,
    token_file: Option<&Path>,
) -> Result<(ApiToken, TokenSource), CredentialError> {
    find_secret(
        env,
        Some("DIGITALOCEAN_TOKEN"),
        "digitalocean-token",
        token_file,
        "DigitalOcean token file",
    )
}

/// The DigitalOcean token for a configuration: the usual sources, then a `do_token` from the
/// original tool's files.
pub fn digitalocean_token_for(
    env: EnvLookup<'_>,
    base: &super::Base,
) -> Result<(ApiToken, TokenSource), CredentialError> {
    match digitalocean_token(env, base.token_file.as_deref()) {
        Err(CredentialError::Missing) => match &base.inline_token {
            Some(token) => Ok((token.clone(), TokenSource::OldConfiguration)),
            None => Err(CredentialError::Missing),
        },
        other => other,
    }
}

/// A warning when a token file can be read by users other than its owner: a token in such a
/// file is a token anyone on the machine may use.
pub fn exposure_warning(source: &TokenSource) -> Option<String> {
    let TokenSource::File(path) = source else {
        return None;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Some(format!(
                "the token file {} can be read by other users (mode {mode:04o}): run `chmod 600 {}`, or better, use a systemd credential",
                path.display(),
                path.display()
            ));
        }
    }
    None
}

/// The status API token (for POST endpoints): the systemd credential `api-token`, then the
/// base file's `status_api.token_file`. Never the DigitalOcean token.
pub fn status_api_token(
    env: EnvLookup<'_>,
    token_file: Option<&Path>,
) -> Result<(ApiToken, TokenSource), CredentialError> {
    find_secret(env, None, "api-token", token_file, "status API token file")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn token_never_prints() {
        let token = ApiToken::new("dop_v1_secret\n");
        assert_eq!(token.expose(), "dop_v1_secret");
        assert!(!format!("{token:?} {token}").contains("secret"));
    }

    #[test]
    fn environment_beats_credential_beats_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("digitalocean-token"), "from-credential\n").unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file").unwrap();
        let creds = dir.path().to_str().unwrap();

        let env = env_of(&[
            ("DIGITALOCEAN_TOKEN", "from-env"),
            ("CREDENTIALS_DIRECTORY", creds),
        ]);
        let (token, source) = digitalocean_token(&env, Some(&file)).unwrap();
        assert_eq!(
            (token.expose(), source),
            ("from-env", TokenSource::Environment("DIGITALOCEAN_TOKEN"))
        );

        let env = env_of(&[("CREDENTIALS_DIRECTORY", creds)]);
        let (token, _) = digitalocean_token(&env, Some(&file)).unwrap();
        assert_eq!(token.expose(), "from-credential");

        let env = env_of(&[]);
        let (token, _) = digitalocean_token(&env, Some(&file)).unwrap();
        assert_eq!(token.expose(), "from-file");
        assert!(matches!(
            digitalocean_token(&env, None),
            Err(CredentialError::Missing)
        ));
    }

    #[test]
    fn credentials_loaded_as_a_directory_are_found_by_their_own_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("do-scaler_digitalocean-token"),
            "from-dir\n",
        )
        .unwrap();
        let env = env_of(&[("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap())]);
        let (token, source) = digitalocean_token(&env, None).unwrap();
        assert_eq!(token.expose(), "from-dir");
        assert_eq!(
            source,
            TokenSource::Credential(dir.path().join("do-scaler_digitalocean-token"))
        );
        // A credential loaded on its own wins over the directory's copy.
        std::fs::write(dir.path().join("digitalocean-token"), "own").unwrap();
        assert_eq!(digitalocean_token(&env, None).unwrap().0.expose(), "own");
        // An optional credential absent from the directory is simply absent.
        assert_eq!(
            credential_path(dir.path(), "api-token"),
            dir.path().join("api-token")
        );
    }

    #[test]
    fn unreadable_or_empty_sources_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_of(&[]);
        let missing = dir.path().join("nope");
        assert!(matches!(
            digitalocean_token(&env, Some(&missing)),
            Err(CredentialError::Unreadable { .. })
        ));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(matches!(
            digitalocean_token(&env, Some(&empty)),
            Err(CredentialError::Empty(_))
        ));
    }

    #[test]
    fn an_empty_credential_falls_through_and_open_files_are_flagged() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api-token"), "").unwrap();
        let file = dir.path().join("status-token");
        std::fs::write(&file, "from-file\n").unwrap();
        let env = env_of(&[("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap())]);
        let (token, source) = status_api_token(&env, Some(&file)).unwrap();
        assert_eq!(token.expose(), "from-file");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(exposure_warning(&source).unwrap().contains("chmod 600"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(exposure_warning(&source), None);
    }

    #[test]
    fn status_token_ignores_the_digitalocean_variable() {
        let env = env_of(&[("DIGITALOCEAN_TOKEN", "do-token")]);
        assert!(matches!(
            status_api_token(&env, None),
            Err(CredentialError::Missing)
        ));
    }
}
