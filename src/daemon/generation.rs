//! A generation: one loaded, validated and compiled configuration, swapped in whole. It knows
//! what it was built from (every input file, for the watcher), how to tell a changed group from
//! an unchanged one (by everything that runs, not only the group file's text), and which keys
//! cannot change without a restart.

use crate::config::{Base, Config, Group, Overrides, load};
use crate::script::Scripts;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// A loaded configuration and its compiled scripts.
pub struct Generation {
    /// Increases with every reload that changed something.
    pub number: u64,
    /// The configuration.
    pub config: Config,
    /// The scripts.
    pub scripts: Arc<Scripts>,
    /// Each group's identity: a digest of everything its task runs with (its file, the base
    /// file's defaults it inherits, its user data), to tell which groups changed.
    pub groups: BTreeMap<String, u64>,
    /// A digest of everything the generation was built from: equal digests mean a reload
    /// would change nothing.
    pub fingerprint: u64,
    /// When it was built: a reloaded generation is not acted on until it has settled.
    pub loaded_at: Instant,
}

fn digest(value: &impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// What a group's task runs with, as one digest. `Debug` of the validated group covers every
/// effective value (an interval inherited from the base file, user data read from a file).
pub fn group_identity(group: &Group) -> u64 {
    digest(&format!("{group:?}"))
}

/// The digest of a configuration and its scripts: exactly what was parsed and compiled.
fn fingerprint(config: &Config, groups: &BTreeMap<String, u64>, scripts: &Scripts) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    format!("{:?}", config.base).hash(&mut hasher);
    groups.hash(&mut hasher);
    for (name, script) in scripts {
        (name, &script.origin, &script.source).hash(&mut hasher);
    }
    hasher.finish()
}

/// Loads, validates and compiles a whole generation; every error as one text.
pub fn build(path: &Path, overrides: &Overrides, number: u64) -> Result<Generation, String> {
    let loaded = load(path, overrides).map_err(|e| e.to_string())?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let scripts =
        crate::script::compile_all(&loaded.config.base.actions_dir).map_err(|errors| {
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })?;
    for group in &loaded.config.groups {
        super::tick::GroupRuntime::new(group.clone(), loaded.config.base.managed_by_tag())
            .map_err(|e| format!("{}: {e}", group.file.display()))?;
    }
    let groups: BTreeMap<String, u64> = loaded
        .config
        .groups
        .iter()
        .map(|g| (g.name.clone(), group_identity(g)))
        .collect();
    Ok(Generation {
        number,
        fingerprint: fingerprint(&loaded.config, &groups, &scripts),
        groups,
        config: loaded.config,
        scripts: Arc::new(scripts),
        loaded_at: Instant::now(),
    })
}

/// The base-file keys a running daemon cannot take on: the error that refuses the reload,
/// naming each key, or `None`.
pub fn needs_restart(running: &Base, next: &Base) -> Option<String> {
    let mut changed = Vec::new();
    if running.instance != next.instance {
        changed.push(format!(
            "instance (from `{}` to `{}`: droplets are owned through the managed-by tag)",
            running.instance, next.instance
        ));
    }
    if running.state != next.state {
        changed.push(format!(
            "state (from {} to {}: the journal and cooldowns live there)",
            running.state.describe(),
            next.state.describe()
        ));
    }
    if running.lease != next.lease || running.request_timeout != next.request_timeout {
        changed.push("lease or request_timeout (every leader's timing depends on them)".into());
    }
    if running.status_api.listen != next.status_api.listen {
        changed.push(format!(
            "status_api.listen (from {} to {})",
            running.status_api.listen, next.status_api.listen
        ));
    }
    (!changed.is_empty()).then(|| {
        format!(
            "{}: {} cannot change while the daemon runs; restart it (systemctl restart do-scaler) to use the new value",
            running.path.display(),
            changed.join(", ")
        )
    })
}
