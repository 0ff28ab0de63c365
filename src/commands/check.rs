//! `do-scaler check`: validate the configuration without the network.
//!
//! stdout gets one summary line per group and one line per ignored file; stderr gets every
//! warning and error as `file:line:column: reason`. Exit code 0 when the configuration loads,
//! 1 otherwise.

use crate::config::credentials::{self, CredentialError, EnvLookup};
use crate::config::duration::format_duration;
use crate::config::{Base, LoadError, Loaded};
use crate::config::{Change, Condition, Group, Overrides, RuleKind, load};
use crate::digitalocean::preflight::{Level, preflight};
use crate::digitalocean::{Client, ClientOptions};
use std::fmt::Write as _;
use std::path::Path;

/// What `check` prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The result, for stdout.
    pub stdout: String,
    /// Diagnostics, for stderr.
    pub stderr: String,
    /// The process exit code.
    pub exit_code: i32,
}

/// Runs `check` on the base file at `config_path`.
pub fn check(config_path: &Path, overrides: &Overrides, env: EnvLookup<'_>) -> CommandOutput {
    let mut stdout = String::new();
    let mut stderr = String::new();
    // Scripts are compiled whether or not the group files load, so every error shows at once.
    let script_errors = crate::config::load_base(config_path, overrides, &mut Vec::new())
        .map(|base| {
            crate::script::compile_all(&base.actions_dir)
                .err()
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let loaded = load(config_path, overrides).and_then(|loaded| {
        if script_errors.is_empty() {
            Ok(loaded)
        } else {
            Err(LoadError {
                diagnostics: loaded
                    .warnings
                    .into_iter()
                    .chain(script_errors.iter().cloned())
                    .collect(),
                ignored: loaded.ignored,
            })
        }
    });
    let loaded = loaded.map_err(|mut failure| {
        for error in &script_errors {
            if !failure.diagnostics.contains(error) {
                failure.diagnostics.push(error.clone());
            }
        }
        failure
    });
    match loaded {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                let _ = writeln!(stderr, "{warning}");
            }
            match credentials::digitalocean_token_for(env, &loaded.config.base) {
                Ok((_, source)) => {
                    if let Some(warning) = credentials::exposure_warning(&source) {
                        let _ = writeln!(stderr, "warning: {warning}");
                    }
                }
                Err(CredentialError::Missing) => {
                    let _ = writeln!(
                        stderr,
                        "warning: no DigitalOcean token found (check needs none; run and plan will): set DIGITALOCEAN_TOKEN, the systemd credential `digitalocean-token`, or token_file"
                    );
                }
                Err(other) => {
                    let _ = writeln!(
                        stderr,
                        "warning: {other} (check needs no token; run and plan will)"
                    );
                }
            }
            if let Ok((_, source)) = credentials::status_api_token(
                env,
                loaded.config.base.status_api.token_file.as_deref(),
            ) && let Some(warning) = credentials::exposure_warning(&source)
            {
                let _ = writeln!(stderr, "warning: {warning}");
            }
            if !loaded.config.base.status_api.listen.ip().is_loopback() {
                let _ = writeln!(
                    stderr,
                    "warning: status_api.listen {} is not loopback: anyone who can reach it reads the groups and decisions unless status_api.open_reads = false; prefer 127.0.0.1 behind a proxy or firewall",
                    loaded.config.base.status_api.listen
                );
            }
            let credentials_dir = env("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from);
            for group in &loaded.config.groups {
                if let Some(text) = &group.template.user_data
                    && let Err(error) =
                        crate::config::user_data::check_available(text, credentials_dir.as_deref())
                {
                    let _ = writeln!(
                        stderr,
                        "{}: warning: {error} (check needs none; run and any command that creates droplets refuse to start without it)",
                        group.file.display()
                    );
                }
            }
            for group in &loaded.config.groups {
                for warning in source_secret_warnings(group, credentials_dir.as_deref()) {
                    let _ = writeln!(stderr, "{}: warning: {warning}", group.file.display());
                }
            }
            for group in &loaded.config.groups {
                let _ = writeln!(stdout, "{}", summarize(group));
            }
            for path in &loaded.ignored {
                let _ = writeln!(
                    stdout,
                    "ignored {} (not a *.toml group file)",
                    crate::config::diagnostic::printable(&path.display().to_string())
                );
            }
            CommandOutput {
                stdout,
                stderr,
                exit_code: 0,
            }
        }
        Err(failure) => {
            for diagnostic in &failure.diagnostics {
                let _ = writeln!(stderr, "{diagnostic}");
            }
            let errors: Vec<_> = failure.errors().collect();
            let mut files: Vec<_> = errors.iter().map(|d| &d.file).collect();
            files.sort();
            files.dedup();
            let _ = writeln!(
                stderr,
                "{} error{} in {} file{}; nothing was changed",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" },
                files.len(),
                if files.len() == 1 { "" } else { "s" },
            );
            for path in &failure.ignored {
                let _ = writeln!(
                    stdout,
                    "ignored {} (not a *.toml group file)",
                    crate::config::diagnostic::printable(&path.display().to_string())
                );
            }
            CommandOutput {
                stdout,
                stderr,
                exit_code: 1,
            }
        }
    }
}

/// One line describing a group: what it scales, within which bounds, on what.
pub fn summarize(group: &Group) -> String {
    let rules: Vec<String> = group
        .rules
        .iter()
        .map(|rule| match &rule.kind {
            RuleKind::Target {
                target,
                per_droplet,
                ..
            } => {
                let per = if *per_droplet { " per droplet" } else { "" };
                format!("{} (target {target}{per})", rule.name)
            }
            RuleKind::Desired { .. } => format!("{} (desired)", rule.name),
            RuleKind::Threshold {
                condition,
                change,
                hold_for,
            } => {
                let change = match change {
                    Change::Count(n) => format!("{n:+}"),
                    Change::Percent(p) => format!("{p:+}%"),
                };
                let kind = match condition {
                    Condition::One(_) => "when",
                    Condition::All(_) => "when_all",
                    Condition::Any(_) => "when_any",
                };
                format!(
                    "{} ({kind} for {} → {change})",
                    rule.name,
                    format_duration(*hold_for)
                )
            }
        })
        .collect();
    let sources: Vec<String> = group
        .sources
        .iter()
        .skip(1)
        .map(|s| {
            let kind = match &s.kind {
                crate::config::SourceKind::Droplets(_) => "droplets",
                crate::config::SourceKind::Target(_) => "target",
                crate::config::SourceKind::Prometheus(_) => "prometheus",
            };
            format!(", {} ({kind})", s.name)
        })
        .collect();
    let idle = group
        .idle
        .as_ref()
        .map(|i| format!(" idle={}", i.count))
        .unwrap_or_default();
    format!(
        "{}: {} tag={} min={} max={}{idle} interval={} rules: {}; sources: droplets{}; schedules: {}; up: {}; down: {}",
        group.name,
        group.file.display(),
        group.tag,
        group.min,
        group.max,
        format_duration(group.interval),
        if rules.is_empty() {
            "none".to_string()
        } else {
            rules.join(", ")
        },
        sources.join(","),
        group.schedules.len(),
        group.actions.lists.up.join(" → "),
        group.actions.lists.down.join(" → "),
    )
}

/// Builds a DigitalOcean client for the configured API with the token from the environment,
/// the systemd credential or the token file. Commands that call the API fail without one.
pub fn client_for(base: &Base, env: EnvLookup<'_>) -> Result<Client, String> {
    client_at_speed(base, env, 1.0)
}

/// [`client_for`], for a command keeping a clock `speed` times faster than the wall (`--clock`
/// on a sim at `--speed`): the rate limits count on that clock.
pub fn client_at_speed(base: &Base, env: EnvLookup<'_>, speed: f64) -> Result<Client, String> {
    Client::new(options_for(base, env)?.at_speed(speed)).map_err(|e| e.to_string())
}

/// The client settings for the base file's API with the token found in `env`.
fn options_for(base: &Base, env: EnvLookup<'_>) -> Result<ClientOptions, String> {
    let (token, source) =
        credentials::digitalocean_token_for(env, base).map_err(|e| e.to_string())?;
    tracing::debug!(source = %source, "DigitalOcean token found");
    Ok(ClientOptions::new(base.api_url.clone(), token))
}

/// Why the API cannot be reached, from one attempt with short timeouts (`None`: it answered,
/// whatever it answered; the checks say the rest).
async fn unreachable(mut options: ClientOptions) -> Option<String> {
    options.retry.attempts = 1;
    options.connect_timeout = std::time::Duration::from_secs(3);
    options.request_timeout = std::time::Duration::from_secs(8);
    let probe = Client::new(options).ok()?;
    match probe.account().await {
        Err(crate::digitalocean::ApiError::Transport { reason, .. }) => Some(reason),
        Err(crate::digitalocean::ApiError::Timeout { after, .. }) => Some(format!(
            "no answer within {}",
            crate::config::duration::format_duration(after)
        )),
        _ => None,
    }
}

/// Runs `check --online`: everything `check` does, then the preflight against the account.
pub async fn check_online(
    config_path: &Path,
    overrides: &Overrides,
    env: EnvLookup<'_>,
) -> CommandOutput {
    let offline = check(config_path, overrides, env);
    if offline.exit_code != 0 {
        return offline;
    }
    let loaded: Result<Loaded, LoadError> = load(config_path, overrides);
    let Ok(loaded) = loaded else {
        return offline;
    };
    let mut stdout = offline.stdout;
    let mut stderr = String::new();
    for warning in &loaded.warnings {
        let _ = writeln!(stderr, "{warning}");
    }
    let options = options_for(&loaded.config.base, env);
    let client = match options
        .clone()
        .and_then(|o| Client::new(o).map_err(|e| e.to_string()))
    {
        Ok(client) => client,
        Err(reason) => {
            let _ = writeln!(
                stderr,
                "{}: token: {reason}",
                loaded.config.base.path.display()
            );
            return CommandOutput {
                stdout,
                stderr,
                exit_code: 1,
            };
        }
    };
    // One quick look before the checks: an API that cannot be reached is one line, at once,
    // not every check's retries (the daemon itself keeps retrying; a person at a terminal
    // wants the answer).
    if let Some(reason) = match options {
        Ok(options) => unreachable(options).await,
        Err(_) => None,
    } {
        let _ = writeln!(
            stderr,
            "cannot reach the DigitalOcean API at {}: {reason}",
            loaded.config.base.api_url
        );
        return CommandOutput {
            stdout,
            stderr,
            exit_code: 1,
        };
    }
    let findings = preflight(&client, &loaded.config, true).await;
    let errors = findings.iter().filter(|f| f.level == Level::Error).count();
    for finding in &findings {
        let _ = writeln!(stderr, "{finding}");
    }
    if errors == 0 {
        let _ = writeln!(
            stdout,
            "online checks passed against {}",
            loaded.config.base.api_url
        );
    } else {
        let _ = writeln!(
            stderr,
            "{errors} problem{} found against {}",
            if errors == 1 { "" } else { "s" },
            loaded.config.base.api_url
        );
    }
    CommandOutput {
        stdout,
        stderr,
        exit_code: i32::from(errors > 0),
    }
}

/// What `check` says about the secrets a group's sources read each tick: one that cannot be
/// read (the source will be missing data: its rules hold), or a file others may read.
fn source_secret_warnings(
    group: &crate::config::Group,
    credentials_dir: Option<&std::path::Path>,
) -> Vec<String> {
    use crate::config::{Auth, Secret, SourceKind};
    let mut warnings = Vec::new();
    for source in &group.sources {
        let auth = match &source.kind {
            SourceKind::Target(target) => target.auth.as_ref(),
            SourceKind::Prometheus(server) => server.auth.as_ref(),
            SourceKind::Droplets(_) => None,
        };
        let secret = match auth {
            Some(Auth::Bearer(secret))
            | Some(Auth::Basic {
                password: secret, ..
            }) => secret,
            None => continue,
        };
        if let Err(reason) = crate::daemon::sources::read_secret(secret, credentials_dir) {
            warnings.push(format!(
                "source `{}`: {reason} (check needs none; without it the source answers nothing and the rules reading it hold)",
                source.name
            ));
        } else if let Secret::File(path) = secret
            && let Some(warning) =
                credentials::exposure_warning(&credentials::TokenSource::File(path.clone()))
        {
            warnings.push(format!("source `{}`: {warning}", source.name));
        }
    }
    warnings
}
