//! Reading the configuration from disk: the base file, every group file in `conf.d/`, the
//! action names in `actions/`, and the checks that span several files.

use super::diagnostic::{Diagnostic, Severity};
use super::duration::ConfigDuration;
use super::model::{Base, Config, Group, StatusApi};
use super::schema::{BaseFile, GroupFile};
use super::validate::{GroupContext, validate_group};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The default base file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/do-scaler/do-scaler.toml";
/// The default DigitalOcean API base URL.
pub const DEFAULT_API_URL: &str = "https://api.digitalocean.com";
/// The default state database.
pub const DEFAULT_STATE_PATH: &str = "/var/lib/do-scaler/state.db";
/// The default status API address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9797";

/// The action scripts shipped inside the binary (the `actions/` folder can override them).
pub const SHIPPED_ACTIONS: &[&str] = &[
    "digitalocean_create_droplet",
    "digitalocean_destroy_droplet",
    "digitalocean_load_balancer",
    "haproxy_backend",
    "health_check_tcp",
    "notify_webhook",
];

/// Reads `state`: a file path, or a PostgreSQL URL (`postgres://…`, `postgresql://…`) without
/// a password. Any other URL is refused: read as a path it would silently make a local file.
pub fn parse_state(text: &str) -> Result<Option<String>, String> {
    match text.split_once("://") {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            if !matches!(scheme, "postgres" | "postgresql") {
                return Err(format!(
                    "state `{scheme}://…` is a URL do-scaler cannot use: give a file path such as \"/var/lib/do-scaler/state.db\" or a PostgreSQL URL (postgres://user@host:25060/db?sslmode=verify-full&sslrootcert=/etc/do-scaler/ca.crt)"
                ));
            }
            let parsed = url::Url::parse(text)
                .map_err(|e| format!("state `{scheme}://…` is not a valid URL: {e}"))?;
            let has_password = parsed.password().is_some()
                || parsed.query_pairs().any(|(key, _)| key == "password");
            if has_password {
                return Err(format!(
                    "state `{scheme}://…` holds a password, and this file may be read by others: remove it and give the password as the systemd credential `{}` (LoadCredential=) or in a passfile (mode 0600)",
                    crate::state::postgres::PASSWORD_CREDENTIAL
                ));
            }
            Ok(Some(text.to_string()))
        }
        _ => Ok(None),
    }
}

/// Values from the command line or environment that replace the base file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replaces `api_url` (`--api-url`, `DIGITALOCEAN_API_URL`).
    pub api_url: Option<String>,
    /// Replaces `state` (`--state`, `DO_SCALER_STATE`).
    pub state: Option<PathBuf>,
    /// Replaces `status_api.listen` (`--listen`).
    pub listen: Option<SocketAddr>,
}

/// A configuration that loaded: the config, its warnings, and the files that were skipped.
#[derive(Debug)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Warnings (never errors).
    pub warnings: Vec<Diagnostic>,
    /// Files in `conf.d/` that are not group files (backups, `.disabled`, `.example`).
    pub ignored: Vec<PathBuf>,
}

/// A configuration that did not load: every diagnostic found, errors and warnings.
#[derive(Debug, thiserror::Error)]
#[error("{}", render(.diagnostics))]
pub struct LoadError {
    /// Every problem found, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// Files in `conf.d/` that were skipped.
    pub ignored: Vec<PathBuf>,
}

impl LoadError {
    /// Only the errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Turns a TOML parse error into a diagnostic at its position.
fn toml_diagnostic(file: &Path, source: &str, error: &toml::de::Error) -> Diagnostic {
    Diagnostic::error_at(
        file,
        source,
        error.span(),
        explain_toml_error(error.message()),
    )
}

/// Rewrites serde's wording into a user's: key names, whole numbers, and a likely fix.
fn explain_toml_error(message: &str) -> String {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((key, expected)) = rest.split_once("`, expected ")
    {
        let known: Vec<&str> = expected
            .trim_start_matches("one of ")
            .split(", ")
            .map(|k| k.trim_matches('`'))
            .collect();
        let suggestion = known
            .iter()
            .map(|k| (super::collect::edit_distance(key, k), *k))
            .filter(|(distance, _)| *distance <= 2)
            .min()
            .map(|(_, k)| format!("did you mean `{k}`? "))
            .unwrap_or_default();
        return format!(
            "unknown key `{key}`: {suggestion}the keys allowed here are {}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    message
        .replace("expected u32", "expected a whole number, 0 or more")
        .replace("expected u16", "expected a whole number from 0 to 65535")
        .replace("expected u64", "expected a whole number, 0 or more")
        .replace("expected f64", "expected a number")
        .replace("missing field", "missing key")
}

fn resolve(base_dir: &Path, value: &str) -> PathBuf {
    let path = Path::new(value);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

fn string_or<'a>(value: &'a Option<Spanned<String>>, default: &'a str) -> &'a str {
    value
        .as_ref()
        .map(|v| v.get_ref().as_str())
        .unwrap_or(default)
}

/// Loads and validates the base file, every group file and the cross-file rules.
pub fn load(config_path: &Path, overrides: &Overrides) -> Result<Loaded, LoadError> {
    if is_legacy(config_path) {
        return load_legacy(config_path, overrides);
    }
    let mut diagnostics = Vec::new();
    let source = match crate::config::files::read_config(config_path) {
        Ok(source) => source,
        Err(_) => {
            // Unreadable: load_base says why; there is nothing to go on.
            load_base(config_path, overrides, &mut diagnostics);
            return Err(LoadError {
                diagnostics,
                ignored: Vec::new(),
            });
        }
    };
    // A base file with errors still leads to its group files, so that one run of `check`
    // reports every error of every file; the load fails all the same. One that cannot be
    // parsed at all is replaced by the defaults (conf.d beside it) for that purpose.
    let base = match build_base(config_path, &source, overrides, &mut diagnostics) {
        Some((base, _)) => base,
        None => match build_base(config_path, "", overrides, &mut Vec::new()) {
            Some((base, _)) => base,
            None => {
                return Err(LoadError {
                    diagnostics,
                    ignored: Vec::new(),
                });
            }
        },
    };
    let known_actions = known_actions(&base.actions_dir);
    let (files, ignored) = match list_group_files(&base.conf_dir) {
        Ok(listing) => listing,
        Err(message) => {
            diagnostics.push(Diagnostic::for_file(Severity::Error, config_path, message));
            return Err(LoadError {
                diagnostics,
                ignored: Vec::new(),
            });
        }
    };
    if files.is_empty() {
        diagnostics.push(Diagnostic::for_file(
            Severity::Warning,
            config_path,
            format!(
                "{} holds no *.toml group file: the daemon has nothing to scale",
                base.conf_dir.display()
            ),
        ));
    }
    let base_dir = parent_dir(config_path);
    let mut groups = Vec::new();
    let mut identities = Vec::new();
    for file in &files {
        if let Some(group) = load_group(
            file,
            &base,
            &base_dir,
            &known_actions,
            &mut diagnostics,
            &mut identities,
        ) {
            groups.push(group);
        }
    }
    check_across_groups(&identities, &mut diagnostics);
    if let Err(message) = check_lease(&base, &groups) {
        diagnostics.push(Diagnostic::for_file(Severity::Error, config_path, message));
    }
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(LoadError {
            diagnostics,
            ignored,
        });
    }
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    let mut inputs = vec![config_path.to_path_buf()];
    inputs.extend(files.iter().cloned());
    inputs.extend(
        groups
            .iter()
            .filter_map(|g| g.template.user_data_file.clone()),
    );
    Ok(Loaded {
        config: Config {
            base,
            groups,
            inputs,
        },
        warnings: diagnostics,
        ignored,
    })
}

/// The lease timings of a configuration (PostgreSQL state): the base file's `lease`, or twice
/// the longest group interval plus the request timeout.
pub fn lease_timings(base: &Base, groups: &[Group]) -> crate::state::lease::Timings {
    let longest = groups
        .iter()
        .map(|g| g.interval)
        .max()
        .unwrap_or(base.interval);
    crate::state::lease::Timings {
        lease: base.lease.unwrap_or_else(|| {
            crate::state::lease::Timings::default_lease(longest, base.request_timeout)
        }),
        longest_request: base.request_timeout,
    }
}

/// Refuses a `lease` too short for a group's interval: its leader could never write.
fn check_lease(base: &Base, groups: &[Group]) -> Result<(), String> {
    if !matches!(base.state, crate::state::Location::Postgres(_)) {
        return Ok(());
    }
    let timings = lease_timings(base, groups);
    for group in groups {
        timings
            .check(group.interval)
            .map_err(|why| format!("lease: {why} (group `{}`)", group.name))?;
    }
    Ok(())
}

/// A size such as "500MB", "2GB" or "1GiB" (decimal and binary units; a bare number is bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size: write it as \"500MB\" or \"2GB\""))?;
    let scale: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "`{other}` is not a size unit: use B, KB, MB, GB, KiB, MiB or GiB"
            ));
        }
    };
    Ok((number * scale) as u64)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::new(),
    }
}

/// Loads only the base file (no groups): enough for commands that need the API URL or state.
pub fn load_base(
    config_path: &Path,
    overrides: &Overrides,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Base> {
    if is_legacy(config_path) {
        let converted = super::legacy::convert(config_path)
            .map_err(|e| diagnostics.extend(e))
            .ok()?;
        let mut base = base_from_text(config_path, &converted.base, overrides, diagnostics)?;
        base.inline_token = converted.token;
        return Some(base);
    }
    let source = match crate::config::files::read_config(config_path) {
        Ok(source) => source,
        Err(e) => {
            diagnostics.push(Diagnostic::for_file(
                Severity::Error,
                config_path,
                format!("cannot read the base file: {e}; pass its path with --config"),
            ));
            return None;
        }
    };
    base_from_text(config_path, &source, overrides, diagnostics)
}

/// Whether a base file is the original Python tool's (`*.cfg`).
pub fn is_legacy(config_path: &Path) -> bool {
    config_path.extension().is_some_and(|e| e == "cfg")
}

/// Builds the base settings from the base file's text.
fn base_from_text(
    config_path: &Path,
    source: &str,
    overrides: &Overrides,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Base> {
    build_base(config_path, source, overrides, diagnostics)
        .and_then(|(base, ok)| ok.then_some(base))
}

/// The base file as far as it can be read, and whether it is free of errors (each error is in
/// `diagnostics`): `check` goes on to the group files with a base that has errors, so one run
/// reports everything. `None` when the file cannot be parsed at all.
fn build_base(
    config_path: &Path,
    source: &str,
    overrides: &Overrides,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(Base, bool)> {
    let source = source.to_string();
    let collected =
        super::collect::parse::<BaseFile>(config_path, &source, explain_toml_error, diagnostics);
    let schema_errors = collected.errors;
    let file: BaseFile = collected.value?;
    let errors_before = diagnostics.iter().filter(|d| d.is_error()).count();
    let mut error = |span: Option<std::ops::Range<usize>>, message: String| {
        diagnostics.push(Diagnostic::error_at(config_path, &source, span, message));
    };
    let base_dir = parent_dir(config_path);
    let interval = file
        .interval
        .as_ref()
        .map(|d| d.get_ref().0)
        .unwrap_or(Duration::from_secs(30));
    if interval < Duration::from_secs(1) {
        error(
            file.interval.as_ref().map(Spanned::span),
            "interval is shorter than 1s: use at least \"1s\"".into(),
        );
    }
    let instance = string_or(&file.instance, "default").to_string();
    if let Err(reason) = super::validate::check_tag(&format!("do-scaler:{instance}")) {
        error(
            file.instance.as_ref().map(Spanned::span),
            format!("instance becomes part of a tag, and {reason}"),
        );
    }
    let api_url = overrides
        .api_url
        .clone()
        .unwrap_or_else(|| string_or(&file.api_url, DEFAULT_API_URL).to_string());
    let api_url = api_url.trim_end_matches('/').to_string();
    if let Err(reason) = check_api_url(&api_url) {
        if overrides.api_url.is_some() {
            error(None, format!("--api-url / DIGITALOCEAN_API_URL: {reason}"));
        } else {
            error(file.api_url.as_ref().map(Spanned::span), reason);
        }
    }
    let listen = match overrides.listen {
        Some(addr) => addr,
        None => {
            let text = string_or(&file.status_api.listen, DEFAULT_LISTEN);
            match text.parse::<SocketAddr>() {
                Ok(addr) => addr,
                Err(_) => {
                    error(
                        file.status_api.listen.as_ref().map(Spanned::span),
                        format!(
                            "status_api.listen `{text}` is not an address:port such as \"127.0.0.1:9797\""
                        ),
                    );
                    // Unreachable in a returned Base: an error was recorded above.
                    SocketAddr::from(([127, 0, 0, 1], 9797))
                }
            }
        }
    };
    // A URL is not a file: `postgres://…` must never become a SQLite file of that name.
    let state_text = overrides
        .state
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| string_or(&file.state, DEFAULT_STATE_PATH).to_string());
    let state = match parse_state(&state_text) {
        Ok(Some(url)) => crate::state::Location::Postgres(url),
        Ok(None) => crate::state::Location::File(
            overrides
                .state
                .clone()
                .unwrap_or_else(|| resolve(&base_dir, string_or(&file.state, DEFAULT_STATE_PATH))),
        ),
        Err(reason) => {
            match overrides.state {
                Some(_) => error(None, format!("--state: {reason}")),
                None => error(file.state.as_ref().map(Spanned::span), reason),
            }
            crate::state::Location::File(PathBuf::from(DEFAULT_STATE_PATH))
        }
    };
    let request_timeout = file
        .request_timeout
        .as_ref()
        .map(|d| d.get_ref().0)
        .unwrap_or(Duration::from_secs(30));
    if request_timeout.is_zero() {
        error(
            file.request_timeout.as_ref().map(Spanned::span),
            "request_timeout must be more than 0s: try \"30s\"".into(),
        );
    }
    let lease = file.lease.as_ref().map(|d| d.get_ref().0);
    let record = file.record.as_ref().map(|spanned| {
        let record = spanned.get_ref();
        let max_size = match &record.max_size {
            None => 1_000_000_000,
            Some(text) => parse_size(text.get_ref()).unwrap_or_else(|why| {
                error(Some(text.span()), format!("record.max_size: {why}"));
                1_000_000_000
            }),
        };
        crate::config::RecordSettings {
            dir: resolve(&base_dir, record.dir.get_ref()),
            keep: record
                .keep
                .as_ref()
                .map(|d| d.get_ref().0)
                .unwrap_or(Duration::from_secs(7 * 86_400)),
            max_size,
        }
    });
    let base = Base {
        path: config_path.to_path_buf(),
        source: source.to_string(),
        interval,
        instance,
        api_url,
        token_file: file
            .token_file
            .as_ref()
            .map(|f| resolve(&base_dir, f.get_ref())),
        state,
        lease,
        request_timeout,
        conf_dir: resolve(&base_dir, string_or(&file.conf_dir, "conf.d")),
        actions_dir: resolve(&base_dir, string_or(&file.actions_dir, "actions")),
        listing_lag: file
            .listing_lag
            .as_ref()
            .map(|d| d.get_ref().0)
            .unwrap_or(Duration::from_secs(60)),
        status_api: StatusApi {
            listen,
            token_file: file
                .status_api
                .token_file
                .as_ref()
                .map(|f| resolve(&base_dir, f.get_ref())),
            open_reads: file.status_api.open_reads.unwrap_or(true),
        },
        inline_token: None,
        record,
    };
    let errors_after = diagnostics.iter().filter(|d| d.is_error()).count();
    Some((base, schema_errors == 0 && errors_after == errors_before))
}

fn check_api_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| {
        format!("api_url `{url}` is not a URL ({e}): use \"https://api.digitalocean.com\"")
    })?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => match parsed.host() {
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => Ok(()),
            Some(url::Host::Ipv6(ip)) if ip.is_loopback() => Ok(()),
            Some(url::Host::Domain("localhost")) => Ok(()),
            _ => Err(format!(
                "api_url `{url}` is plain http to a host that is not loopback: the token would cross the network unencrypted; use https"
            )),
        },
        other => Err(format!(
            "api_url `{url}` has the scheme `{other}`: use https"
        )),
    }
}

/// The action names available: the shipped ones plus every `*.rhai` in `actions_dir`.
pub fn known_actions(actions_dir: &Path) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = SHIPPED_ACTIONS.iter().map(|s| s.to_string()).collect();
    if let Ok(entries) = std::fs::read_dir(actions_dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "rhai")
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            {
                names.insert(stem.to_string());
            }
        }
    }
    names
}

/// Lists `*.toml` files (sorted) and the other files that are ignored.
fn list_group_files(conf_dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), String> {
    let entries = std::fs::read_dir(conf_dir).map_err(|e| {
        format!(
            "cannot read the group folder {}: {e}; create it or set conf_dir in the base file",
            conf_dir.display()
        )
    })?;
    let mut files = Vec::new();
    let mut ignored = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.extension().is_some_and(|e| e == "toml") && !name.starts_with('.') {
            files.push(path);
        } else {
            ignored.push(path);
        }
    }
    files.sort();
    ignored.sort();
    Ok((files, ignored))
}

fn load_group(
    file: &Path,
    base: &Base,
    base_dir: &Path,
    known_actions: &BTreeSet<String>,
    diagnostics: &mut Vec<Diagnostic>,
    identities: &mut Vec<Identity>,
) -> Option<Group> {
    let source = match crate::config::files::read_config(file) {
        Ok(source) => source,
        Err(e) => {
            diagnostics.push(Diagnostic::for_file(
                Severity::Error,
                file,
                format!("cannot read this group file: {e}"),
            ));
            return None;
        }
    };
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    identities.extend(Identity::of(name, file, &source));
    let collected =
        super::collect::parse::<GroupFile>(file, &source, explain_toml_error, diagnostics);
    let parsed = collected.value?;
    let ctx = GroupContext {
        name,
        file,
        source: &source,
        default_interval: base.interval,
        base_dir,
        known_actions,
    };
    let (group, found) = validate_group(&ctx, parsed);
    diagnostics.extend(found);
    group.filter(|_| collected.errors == 0)
}

/// What the cross-file checks need of a group file, read from any file that names a tag,
/// whether or not the rest of it is valid (so a shared tag is reported in the same run as the
/// file's other errors).
pub(super) struct Identity {
    name: String,
    file: PathBuf,
    tag: (String, (usize, usize)),
    template_tags: Vec<(String, (usize, usize))>,
}

impl Identity {
    fn of(name: &str, file: &Path, source: &str) -> Option<Identity> {
        /// Only what the cross-file checks point at; serde skips every other key here.
        #[derive(serde::Deserialize)]
        struct Places {
            tag: Spanned<String>,
            #[serde(default)]
            droplet: Option<DropletPlaces>,
        }
        #[derive(serde::Deserialize)]
        struct DropletPlaces {
            #[serde(default)]
            tags: Vec<Spanned<String>>,
        }
        let places = toml::from_str::<Places>(source).ok()?;
        let at = |s: &Spanned<String>| {
            (
                s.get_ref().clone(),
                super::diagnostic::line_column(source, s.span().start),
            )
        };
        Some(Identity {
            name: name.to_string(),
            file: file.to_path_buf(),
            tag: at(&places.tag),
            template_tags: places
                .droplet
                .map(|d| d.tags.iter().map(at).collect())
                .unwrap_or_default(),
        })
    }
}

/// Checks what no single group file can: each group's tag is its own (DigitalOcean tag names
/// are one tag whatever their case), and no group's template hands new droplets another
/// group's tag.
fn check_across_groups(groups: &[Identity], diagnostics: &mut Vec<Diagnostic>) {
    let mut by_tag: BTreeMap<String, &Identity> = BTreeMap::new();
    for group in groups {
        let (tag, (line, column)) = &group.tag;
        let key = tag.to_ascii_lowercase();
        if let Some(first) = by_tag.get(&key) {
            let same = if first.tag.0 == *tag {
                String::new()
            } else {
                format!(" (`{}`: tag names ignore case)", first.tag.0)
            };
            diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: group.file.clone(),
                line: *line,
                column: *column,
                message: format!(
                    "tag `{tag}` is already the tag of group `{}`{same} ({}): each group needs its own tag",
                    first.name,
                    first.file.display()
                ),
            });
        } else {
            by_tag.insert(key, group);
        }
    }
    for group in groups {
        for (tag, (line, column)) in &group.template_tags {
            let Some(other) = by_tag.get(&tag.to_ascii_lowercase()) else {
                continue;
            };
            if other.name == group.name {
                continue;
            }
            diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: group.file.clone(),
                line: *line,
                column: *column,
                message: format!(
                    "droplet.tags gives new droplets `{tag}`, the tag of group `{}` ({}): they would belong to both groups; remove it",
                    other.name,
                    other.file.display()
                ),
            });
        }
    }
}

/// A base-file interval, exposed for summaries.
pub fn describe_interval(duration: Duration) -> String {
    ConfigDuration(duration).to_string()
}

/// Builds one group from TOML text, as if it were `conf.d/<name>.toml` next to a default base
/// file (interval 30s, the shipped actions). For tests, the demo and the old-format importer.
pub fn group_from_toml(name: &str, text: &str) -> Result<Group, Vec<Diagnostic>> {
    let file = PathBuf::from(format!("conf.d/{name}.toml"));
    let actions: BTreeSet<String> = SHIPPED_ACTIONS.iter().map(|s| s.to_string()).collect();
    group_from_text(
        name,
        &file,
        text,
        Duration::from_secs(30),
        Path::new("."),
        &actions,
    )
}

/// Parses and validates one group file's `text` as `file`; only its errors come back.
fn group_from_text(
    name: &str,
    file: &Path,
    text: &str,
    default_interval: Duration,
    base_dir: &Path,
    known_actions: &BTreeSet<String>,
) -> Result<Group, Vec<Diagnostic>> {
    let parsed: GroupFile =
        toml::from_str(text).map_err(|e| vec![toml_diagnostic(file, text, &e)])?;
    let ctx = GroupContext {
        name,
        file,
        source: text,
        default_interval,
        base_dir,
        known_actions,
    };
    let (group, diagnostics) = validate_group(&ctx, parsed);
    group.ok_or_else(|| {
        diagnostics
            .into_iter()
            .filter(Diagnostic::is_error)
            .collect()
    })
}

/// A group file checked for `replay`, which decides but never runs an action or creates a
/// droplet: every action name the file lists counts as known (the scripts are not needed),
/// and relative paths resolve beside the file. Diagnostics name `file`.
pub fn group_for_replay(
    file: &Path,
    text: &str,
    default_interval: Duration,
) -> Result<Group, Vec<Diagnostic>> {
    let mut actions: BTreeSet<String> = SHIPPED_ACTIONS.iter().map(|s| s.to_string()).collect();
    if let Ok(value) = toml::from_str::<toml::Value>(text) {
        listed_actions(&value, false, &mut actions);
    }
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("group");
    let base_dir = file
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    group_from_text(name, file, text, default_interval, base_dir, &actions)
}

/// Every string in a list under a key that holds action names (`up`, `down`, `actions`,
/// `return_actions`), anywhere in `value`.
fn listed_actions(value: &toml::Value, names: bool, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::String(text) if names => {
            out.insert(text.clone());
        }
        toml::Value::Array(items) => {
            for item in items {
                listed_actions(item, names, out);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table {
                let holds = matches!(key.as_str(), "up" | "down" | "actions" | "return_actions");
                listed_actions(item, holds, out);
            }
        }
        _ => {}
    }
}

/// Loads the original Python tool's configuration through the native model: each old group is
/// converted into a native group file's text and validated like one.
fn load_legacy(config_path: &Path, overrides: &Overrides) -> Result<Loaded, LoadError> {
    let mut diagnostics = Vec::new();
    let converted = match super::legacy::convert(config_path) {
        Ok(converted) => converted,
        Err(errors) => {
            return Err(LoadError {
                diagnostics: errors,
                ignored: Vec::new(),
            });
        }
    };
    diagnostics.extend(converted.warnings.iter().cloned());
    let Some(mut base) = base_from_text(config_path, &converted.base, overrides, &mut diagnostics)
    else {
        return Err(LoadError {
            diagnostics,
            ignored: Vec::new(),
        });
    };
    base.inline_token = converted.token.clone();
    let known_actions = known_actions(&base.actions_dir);
    let base_dir = parent_dir(config_path);
    let mut groups = Vec::new();
    let mut identities = Vec::new();
    for (name, text, old_file) in &converted.groups {
        let file = PathBuf::from(format!("{} (converted)", old_file.display()));
        let parsed: GroupFile = match toml::from_str(text) {
            Ok(parsed) => parsed,
            Err(e) => {
                diagnostics.push(toml_diagnostic(&file, text, &e));
                continue;
            }
        };
        let ctx = GroupContext {
            name,
            file: &file,
            source: text,
            default_interval: base.interval,
            base_dir: &base_dir,
            known_actions: &known_actions,
        };
        identities.extend(Identity::of(name, &file, text));
        let (group, found) = validate_group(&ctx, parsed);
        diagnostics.extend(found);
        groups.extend(group);
    }
    check_across_groups(&identities, &mut diagnostics);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(LoadError {
            diagnostics,
            ignored: Vec::new(),
        });
    }
    let mut inputs = converted.inputs.clone();
    inputs.extend(
        groups
            .iter()
            .filter_map(|g| g.template.user_data_file.clone()),
    );
    Ok(Loaded {
        config: Config {
            base,
            groups,
            inputs,
        },
        warnings: diagnostics,
        ignored: Vec::new(),
    })
}
