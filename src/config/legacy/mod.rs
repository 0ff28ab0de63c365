//! The original Python do-scaler's configuration: `do-scaler.cfg` (INI), one `conf.d/*.cfg` per
//! group, JSON policies and JSON droplet templates. It is converted into native group files
//! (TOML text) that go through the same validation and model as the native format, so every
//! later stage is shared, and `migrate` writes exactly that text.

pub mod ini;

use super::diagnostic::{Diagnostic, Severity};
use ini::{Ini, Lookup};
use serde::Deserialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One sample of a condition.
#[derive(Debug, Deserialize)]
struct PolicySample {
    #[serde(default)]
    family: String,
    name: String,
}

/// A number or a string holding one.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Threshold {
    Number(f64),
    Text(String),
}

#[derive(Debug, Deserialize)]
struct PolicyCondition {
    #[serde(default)]
    name: String,
    samples: Vec<PolicySample>,
    #[serde(default)]
    reducer: Option<String>,
    function: String,
    operator: String,
    threshold: Threshold,
}

#[derive(Debug, Deserialize)]
struct Policy {
    name: String,
    actions: Vec<String>,
    #[serde(default, rename = "match")]
    match_: Option<String>,
    conditions: Vec<PolicyCondition>,
}

/// Families that have several series per droplet; the old format used the first one.
const MULTI_SERIES: &[&str] = &[
    "node_cpu_seconds",
    "node_filesystem",
    "node_network",
    "node_disk",
    "process_",
];

/// The result of converting an old configuration.
#[derive(Debug, Default)]
pub struct Converted {
    /// The native base file.
    pub base: String,
    /// Native group files: (name, TOML text, the old file it came from).
    pub groups: Vec<(String, String, PathBuf)>,
    /// The old `do_token`, if one was in the files (held as a secret: never printed).
    pub token: Option<super::credentials::ApiToken>,
    /// What changed in meaning, for the user.
    pub notes: Vec<String>,
    /// Warnings about the old files.
    pub warnings: Vec<Diagnostic>,
    /// Every file read, so a reload notices an edit of any of them.
    pub inputs: Vec<PathBuf>,
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn seconds(value: &str) -> String {
    let trimmed = value.trim();
    match trimmed.parse::<f64>() {
        Ok(n) if n.fract() == 0.0 => format!("\"{}s\"", n as u64),
        Ok(n) => format!("\"{}ms\"", (n * 1000.0).round() as u64),
        Err(_) => toml_string(trimmed),
    }
}

/// Converts the old configuration at `cfg` (the base `do-scaler.cfg`).
pub fn convert(cfg: &Path) -> Result<Converted, Vec<Diagnostic>> {
    let text = crate::config::files::read_config(cfg).map_err(|e| {
        vec![Diagnostic::for_file(
            Severity::Error,
            cfg,
            format!("cannot read the old base file: {e}"),
        )]
    })?;
    let parsed = Ini::parse(cfg, &text)?;
    let base = Lookup::new(&parsed);
    let dir = cfg
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let interval = base
        .get("scheduler", "interval")
        .map(|(v, _)| v)
        .unwrap_or_else(|| "60".into());
    let confd = base
        .get("scheduler", "confd_dir")
        .map(|(v, _)| dir.join(v))
        .unwrap_or_else(|| dir.join("conf.d"));
    let lookup_errors = base.take_errors();
    if !lookup_errors.is_empty() {
        return Err(lookup_errors);
    }
    let mut out = Converted {
        base: format!(
            "# Converted from {} by do-scaler.\ninterval = {}\nconf_dir = \"conf.d\"\n",
            cfg.display(),
            seconds(&interval)
        ),
        inputs: vec![cfg.to_path_buf()],
        ..Converted::default()
    };
    let mut errors = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&confd)
        .map_err(|e| {
            vec![Diagnostic::for_file(
                Severity::Error,
                cfg,
                format!("cannot read {}: {e}", confd.display()),
            )]
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cfg"))
        .collect();
    files.sort();
    // Scripts in the folder the converted configuration reads (`actions/` beside the base file)
    // stand in for the old tool's custom Python action classes of the same name.
    let actions = super::load::known_actions(&dir.join("actions"));
    for file in files {
        match convert_group(&file, &confd, &interval, &actions, &mut out) {
            Ok(()) => {}
            Err(mut found) => errors.append(&mut found),
        }
    }
    out.notes.extend(
        [
            "policies are combined as native rules (a scale-up beats no change beats a scale-down, one step per tick) instead of each firing policy acting in turn",
            "new droplet names are unique (<prefix>-<suffix>) instead of name-{count+1}, which repeated after a scale-down",
            "only droplets do-scaler manages are destroyed; droplets the old tool made count as managed through adopt_tags (the template's extra tags)",
            "droplets that are not active are skipped instead of crashing the run; a missing metric holds instead of crashing",
            "scrapes and API calls have timeouts; cooldowns (2m up, 5m down) and a 5m scale-down stabilization window apply",
            "the token may come from DIGITALOCEAN_TOKEN or a systemd credential instead of the files",
            "private_networking is dropped (droplets always have a private network now)",
        ]
        .map(String::from),
    );
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn convert_group(
    file: &Path,
    confd: &Path,
    interval: &str,
    actions: &std::collections::BTreeSet<String>,
    out: &mut Converted,
) -> Result<(), Vec<Diagnostic>> {
    out.inputs.push(file.to_path_buf());
    let text = crate::config::files::read_config(file).map_err(|e| {
        vec![Diagnostic::for_file(
            Severity::Error,
            file,
            format!("cannot read: {e}"),
        )]
    })?;
    let parsed = Ini::parse(file, &text)?;
    let ini = Lookup::new(&parsed);
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("group")
        .to_string();
    let tag = ini.need("scaler", "tag_name");
    if let Some((token, line)) = ini
        .get("scaler", "do_token")
        .or_else(|| ini.get("digitalocean_create_droplet", "do_token"))
    {
        let token = super::credentials::ApiToken::new(token);
        if token.expose().is_empty() {
            out.warnings.push(Diagnostic {
                severity: Severity::Warning,
                file: file.to_path_buf(),
                line,
                column: 1,
                message: "do_token is empty here: set DIGITALOCEAN_TOKEN or the systemd credential `digitalocean-token` instead".into(),
            });
        } else if out.token.is_none() {
            out.token = Some(token);
        }
        out.warnings.push(Diagnostic {
            severity: Severity::Warning,
            file: file.to_path_buf(),
            line,
            column: 1,
            message: "do_token is read from this file: keep it readable by root only, or move it to a systemd credential (see `do-scaler migrate`)".into(),
        });
    }
    let max = ini.need("digitalocean_create_droplet", "max");
    let min = ini.get("digitalocean_destroy_droplet", "min");
    let template_file = ini.need("digitalocean_create_droplet", "droplet");
    let policies = ini.need("scaler", "policy_files");
    let errors = ini.take_errors();
    if !errors.is_empty() {
        return Err(errors);
    }
    let (
        Some((tag, _)),
        Some((max, max_line)),
        Some((template_file, template_line)),
        Some((policies, _)),
    ) = (tag, max, template_file, policies)
    else {
        return Err(errors);
    };
    let number = |value: &str, line: usize, key: &str| -> Result<u32, Diagnostic> {
        value.trim().parse::<u32>().map_err(|_| {
            ini.error(
                line,
                format!("`{key}` must be a whole number, found `{value}`"),
            )
        })
    };
    let max = number(&max, max_line, "max").map_err(|e| vec![e])?;
    let min = match min {
        Some((value, line)) => number(&value, line, "min").map_err(|e| vec![e])?,
        None => 0,
    };
    let mut toml = format!(
        "# Converted from {} by do-scaler.\ntag = {}\nmin = {min}\nmax = {max}\ninterval = {}\n",
        file.display(),
        toml_string(&tag),
        seconds(interval)
    );

    // The droplet template, in `droplet_dir` (default `droplets`, beside the policies).
    let droplet_dir = ini
        .get("scaler", "droplet_dir")
        .map(|(v, _)| confd.join(v.trim()))
        .unwrap_or_else(|| confd.join("droplets"));
    let template_path = droplet_dir.join(template_file.trim());
    out.inputs.push(template_path.clone());
    let template_text = crate::config::files::read_config(&template_path).map_err(|e| {
        vec![ini.error(
            template_line,
            format!(
                "cannot read the droplet template {}: {e}",
                template_path.display()
            ),
        )]
    })?;
    let template: serde_json::Value = serde_json::from_str(&template_text).map_err(|e| {
        vec![Diagnostic {
            severity: Severity::Error,
            file: template_path.clone(),
            line: e.line(),
            column: e.column(),
            message: format!("not JSON: {e}"),
        }]
    })?;
    let get = |key: &str| template.get(key);
    let extra_tags: Vec<String> = get("tags")
        .and_then(|t| t.as_array())
        .map(|t| {
            t.iter()
                .filter_map(|v| v.as_str())
                .filter(|t| *t != tag)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if !extra_tags.is_empty() {
        let _ = writeln!(
            toml,
            "adopt_tags = [{}]",
            extra_tags
                .iter()
                .map(|t| toml_string(t))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let prefix = get("name")
        .and_then(|n| n.as_str())
        .unwrap_or(&name)
        .replace("{}", "")
        .trim_end_matches(['-', '.'])
        .to_string();
    let _ = writeln!(
        toml,
        "\n[droplet]\nname_prefix = {}",
        toml_string(if prefix.is_empty() { &name } else { &prefix })
    );
    for (key, keys) in [
        ("region", ["region", "region"]),
        ("size", ["size_slug", "size"]),
    ] {
        if let Some(value) = keys.iter().find_map(|k| get(k).and_then(|v| v.as_str())) {
            let _ = writeln!(toml, "{key} = {}", toml_string(value));
        }
    }
    match get("image") {
        Some(serde_json::Value::Number(n)) => {
            let _ = writeln!(toml, "image = {n}");
        }
        Some(serde_json::Value::String(s)) => {
            let _ = writeln!(toml, "image = {}", toml_string(s));
        }
        _ => {}
    }
    if let Some(keys) = get("ssh_keys").and_then(|k| k.as_array()) {
        let keys: Vec<String> = keys
            .iter()
            .map(|k| {
                if let Some(s) = k.as_str() {
                    toml_string(s)
                } else {
                    k.to_string()
                }
            })
            .collect();
        let _ = writeln!(toml, "ssh_keys = [{}]", keys.join(", "));
    }
    if !extra_tags.is_empty() {
        let _ = writeln!(
            toml,
            "tags = [{}]",
            extra_tags
                .iter()
                .map(|t| toml_string(t))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(data) = get("user_data").and_then(|d| d.as_str()) {
        let _ = writeln!(toml, "user_data = {}", toml_string(data));
    }
    for key in ["monitoring", "ipv6"] {
        if let Some(flag) = get(key).and_then(|v| v.as_bool()) {
            let _ = writeln!(toml, "{key} = {flag}");
        }
    }
    if let Some(vpc) = get("vpc_uuid").and_then(|v| v.as_str()) {
        let _ = writeln!(toml, "vpc_uuid = {}", toml_string(vpc));
    }

    // Scrape settings.
    let address = match ini
        .get("scaler.metrics", "address")
        .map(|(v, _)| v)
        .as_deref()
    {
        Some("ip_address" | "public_ip_address") => "public",
        Some("ip_v6_address") => "ipv6",
        _ => "private",
    };
    let port = ini
        .get("scaler.metrics", "port")
        .map(|(v, _)| v)
        .unwrap_or_else(|| "9100".into());
    let _ = writeln!(
        toml,
        "\n[scrape]\naddress = \"{address}\"\nport = {}",
        port.trim()
    );

    // Policies become rules.
    let policy_dir = ini
        .get("scaler", "policy_dir")
        .map(|(v, _)| confd.join(v))
        .unwrap_or_else(|| confd.join("policies"));
    let mut errors = Vec::new();
    let mut ported = std::collections::BTreeSet::new();
    for policy_file in policies.split_whitespace() {
        let path = policy_dir.join(policy_file);
        out.inputs.push(path.clone());
        match read_policy(&path) {
            Ok(policy) => match policy_rule(&policy, &path, actions, &mut out.warnings) {
                Ok(rule) => {
                    toml.push_str(&rule);
                    ported.extend(
                        policy
                            .actions
                            .iter()
                            .filter(|a| !OLD_TOOL_ACTIONS.contains(&a.as_str()))
                            .cloned(),
                    );
                }
                Err(error) => errors.push(error),
            },
            Err(error) => errors.push(error),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let health = ini.has("health_check_tcp");
    let up = if health {
        "[\"digitalocean_create_droplet\", \"health_check_tcp\"]"
    } else {
        "[\"digitalocean_create_droplet\"]"
    };
    let _ = writeln!(
        toml,
        "\n[actions]\nup = {up}\ndown = [\"digitalocean_destroy_droplet\"]"
    );
    if health {
        let _ = writeln!(toml, "\n[actions.params.health_check_tcp]");
        if let Some((ports, _)) = ini.get("health_check_tcp", "ports") {
            let _ = writeln!(
                toml,
                "ports = [{}]",
                ports.split_whitespace().collect::<Vec<_>>().join(", ")
            );
        }
        for (key, native) in [("timeout", "timeout"), ("interval", "interval")] {
            if let Some((value, _)) = ini.get("health_check_tcp", key) {
                let _ = writeln!(toml, "{native} = {}", seconds(&value));
            }
        }
        if let Some((tries, _)) = ini.get("health_check_tcp", "max_tries") {
            let _ = writeln!(toml, "tries = {}", tries.trim());
        }
        if let Some((address, _)) = ini.get("health_check_tcp", "address") {
            let kind = if address.contains("private") {
                "private"
            } else {
                "public"
            };
            let _ = writeln!(toml, "address = \"{kind}\"");
        }
    }
    // A custom action's own section (its settings in the old tool) becomes its parameters.
    for action in &ported {
        let keys = parsed.keys(action);
        if keys.is_empty() {
            continue;
        }
        let _ = writeln!(toml, "\n[actions.params.{}]", toml_string(action));
        for key in keys {
            if let Some((value, _)) = ini.get(action, &key) {
                let _ = writeln!(toml, "{} = {}", toml_string(&key), toml_string(&value));
            }
        }
    }
    let errors = ini.take_errors();
    if !errors.is_empty() {
        return Err(errors);
    }
    out.groups.push((name, toml, file.to_path_buf()));
    Ok(())
}

/// The actions the original tool shipped; any other name in a policy was a custom Python
/// class.
const OLD_TOOL_ACTIONS: &[&str] = &[
    "digitalocean_create_droplet",
    "digitalocean_destroy_droplet",
    "health_check_tcp",
];

fn read_policy(path: &Path) -> Result<Policy, Diagnostic> {
    let text = crate::config::files::read_config(path).map_err(|e| {
        Diagnostic::for_file(
            Severity::Error,
            path,
            format!("cannot read this policy: {e}"),
        )
    })?;
    serde_json::from_str(&text).map_err(|e| Diagnostic {
        severity: Severity::Error,
        file: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: format!("not a policy: {e}"),
    })
}

/// One condition as a PromQL comparison: per droplet, the samples folded with the reducer;
/// across the group, the function; then the comparison with the threshold.
fn condition_expr(
    condition: &PolicyCondition,
    path: &Path,
    warnings: &mut Vec<Diagnostic>,
) -> Result<String, Diagnostic> {
    let fail = |message: String| {
        Diagnostic::for_file(
            Severity::Error,
            path,
            format!("condition `{}`: {message}", condition.name),
        )
    };
    if condition.samples.is_empty() {
        return Err(fail("has no samples".into()));
    }
    let reducer = match condition.reducer.as_deref() {
        None if condition.samples.len() == 1 => "+",
        None => return Err(fail("several samples need a reducer (+, -, * or /)".into())),
        Some(r @ ("+" | "-" | "*" | "/")) => r,
        Some(other) => return Err(fail(format!("unknown reducer `{other}`: use +, -, * or /"))),
    };
    for sample in &condition.samples {
        if MULTI_SERIES
            .iter()
            .any(|m| sample.family.starts_with(m) || sample.name.starts_with(m))
        {
            warnings.push(Diagnostic::for_file(
                Severity::Warning,
                path,
                format!(
                    "`{}` has several series per droplet; the old format did not match labels (it used the first), the converted rule sums them per droplet",
                    sample.name
                ),
            ));
        }
    }
    let per_droplet = condition
        .samples
        .iter()
        .map(|s| format!("sum by (droplet_id) ({})", s.name))
        .collect::<Vec<_>>()
        .join(&format!(" {reducer} "));
    let aggregate = match condition.function.as_str() {
        "mean" => format!("avg({per_droplet})"),
        "median" => format!("quantile(0.5, {per_droplet})"),
        "min" => format!("min({per_droplet})"),
        "max" => format!("max({per_droplet})"),
        other => {
            return Err(fail(format!(
                "unknown function `{other}`: use min, max, median or mean"
            )));
        }
    };
    let operator = match condition.operator.as_str() {
        op @ ("<" | "<=" | ">" | ">=" | "==") => op,
        other => return Err(fail(format!("unknown operator `{other}`"))),
    };
    let threshold = match &condition.threshold {
        Threshold::Number(n) => *n,
        Threshold::Text(text) => text
            .trim()
            .parse()
            .map_err(|_| fail(format!("threshold `{text}` is not a number")))?,
    };
    Ok(format!("{aggregate} {operator} {threshold}"))
}

fn policy_rule(
    policy: &Policy,
    path: &Path,
    actions: &std::collections::BTreeSet<String>,
    warnings: &mut Vec<Diagnostic>,
) -> Result<String, Diagnostic> {
    if let Some(custom) = policy.actions.iter().find(|a| !actions.contains(*a)) {
        return Err(Diagnostic::for_file(
            Severity::Error,
            path,
            format!(
                "policy `{}` runs `{custom}`, a custom Python action class of the original tool: do-scaler runs Rhai actions, not Python. Port it to actions/{custom}.rhai beside the base file (see \"Porting a custom Python action\" in the README), or remove it from the policy's actions",
                policy.name
            ),
        ));
    }
    let creates = policy
        .actions
        .iter()
        .any(|a| a == "digitalocean_create_droplet");
    let destroys = policy
        .actions
        .iter()
        .any(|a| a == "digitalocean_destroy_droplet");
    let (change, direction) = match (creates, destroys) {
        (true, false) => ("+1", "up"),
        (false, true) => ("-1", "down"),
        _ => {
            return Err(Diagnostic::for_file(
                Severity::Error,
                path,
                format!(
                    "policy `{}` must name exactly one of digitalocean_create_droplet and digitalocean_destroy_droplet",
                    policy.name
                ),
            ));
        }
    };
    let mut exprs = Vec::new();
    for condition in &policy.conditions {
        exprs.push(condition_expr(condition, path, warnings)?);
    }
    let quoted: Vec<String> = exprs.iter().map(|e| toml_string(e)).collect();
    let condition = match (exprs.len(), policy.match_.as_deref().unwrap_or("all")) {
        (1, _) => format!("when = {}", quoted[0]),
        (_, "any") => format!("when_any = [\n    {},\n]", quoted.join(",\n    ")),
        (_, _) => format!("when_all = [\n    {},\n]", quoted.join(",\n    ")),
    };
    let actions: Vec<String> = policy.actions.iter().map(|a| toml_string(a)).collect();
    Ok(format!(
        "\n[[rule]]  # from {}\nname = {}\n{condition}\nchange = \"{change}\"\n[rule.actions]\n{direction} = [{}]\n",
        path.file_name().and_then(|n| n.to_str()).unwrap_or(""),
        toml_string(&policy.name),
        actions.join(", ")
    ))
}
