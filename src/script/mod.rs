//! The Rhai host: one sandboxed engine, the action scripts compiled once per configuration
//! (shipped ones embedded in the binary, overridable by `actions/`), the host functions that
//! enforce the invariants, and the runner that executes a decision's actions off the tick.

pub mod convert;
pub mod haproxy;
pub mod host;
pub mod memory;
pub mod runner;
pub mod webhook;

use crate::config::diagnostic::{Diagnostic, Severity};
use rhai::{AST, Engine};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The scripts shipped inside the binary: (name, source).
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "digitalocean_create_droplet",
        include_str!("../../actions/digitalocean_create_droplet.rhai"),
    ),
    (
        "digitalocean_destroy_droplet",
        include_str!("../../actions/digitalocean_destroy_droplet.rhai"),
    ),
    (
        "digitalocean_load_balancer",
        include_str!("../../actions/digitalocean_load_balancer.rhai"),
    ),
    (
        "haproxy_backend",
        include_str!("../../actions/haproxy_backend.rhai"),
    ),
    (
        "health_check_tcp",
        include_str!("../../actions/health_check_tcp.rhai"),
    ),
    (
        "notify_webhook",
        include_str!("../../actions/notify_webhook.rhai"),
    ),
];

/// The engine, built once: no module resolver (`import` cannot read files), limits on
/// operations, call depth, strings, arrays and maps, `print`/`debug` into the log, and a
/// progress check that stops a script past its run's deadline or its memory limit.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut engine = Engine::new();
        engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
        engine.set_max_operations(2_000_000_000);
        engine.set_max_call_levels(32);
        engine.set_max_expr_depths(64, 32);
        engine.set_max_string_size(1 << 20);
        engine.set_max_array_size(10_000);
        engine.set_max_map_size(10_000);
        engine.on_print(|text| tracing::info!(target: "do_scaler::script", "{text}"));
        engine.on_debug(|text, source, pos| tracing::debug!(target: "do_scaler::script", ?source, %pos, "{text}"));
        engine.on_progress(|_| host::over_limits().map(rhai::Dynamic::from));
        host::register(&mut engine);
        engine
    })
}

/// A compiled script.
#[derive(Debug, Clone)]
pub struct Script {
    /// Its name (file stem).
    pub name: String,
    /// Where it came from: a path, or "shipped".
    pub origin: String,
    /// The compiled AST.
    pub ast: Arc<AST>,
    /// The text that was compiled, so a reload compares what runs with what is on disk.
    pub source: String,
}

/// Every script of a configuration, by name.
pub type Scripts = BTreeMap<String, Script>;

fn compile_one(name: &str, origin: &str, source: &str) -> Result<Script, Diagnostic> {
    engine()
        .compile(source)
        .map(|ast| Script {
            name: name.to_string(),
            origin: origin.to_string(),
            ast: Arc::new(ast),
            source: source.to_string(),
        })
        .map_err(|error| {
            let position = error.position();
            Diagnostic {
                severity: Severity::Error,
                file: Path::new(origin).to_path_buf(),
                line: position.line().unwrap_or(1),
                column: position.position().unwrap_or(1),
                message: format!("script error: {}", error.err_type()),
            }
        })
}

/// Compiles the shipped scripts and every `*.rhai` in `actions_dir` (which overrides a
/// shipped script of the same name). A missing folder is fine. Every syntax error is returned.
pub fn compile_all(actions_dir: &Path) -> Result<Scripts, Vec<Diagnostic>> {
    let mut scripts = Scripts::new();
    let mut errors = Vec::new();
    for (name, source) in SHIPPED {
        match compile_one(name, &format!("(shipped) {name}.rhai"), source) {
            Ok(script) => {
                scripts.insert(name.to_string(), script);
            }
            Err(error) => errors.push(error),
        }
    }
    if let Ok(entries) = std::fs::read_dir(actions_dir) {
        let mut paths: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
            .collect();
        paths.sort();
        for path in paths {
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let origin = path.display().to_string();
            match crate::config::files::read_config(&path) {
                Ok(source) => match compile_one(name, &origin, &source) {
                    Ok(script) => {
                        scripts.insert(name.to_string(), script);
                    }
                    Err(error) => errors.push(error),
                },
                Err(e) => errors.push(Diagnostic::for_file(
                    Severity::Error,
                    &path,
                    format!("cannot read this script: {e}"),
                )),
            }
        }
    }
    if errors.is_empty() {
        Ok(scripts)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_scripts_compile() {
        let scripts = compile_all(Path::new("/nonexistent")).unwrap();
        assert_eq!(scripts.len(), SHIPPED.len());
        let names: Vec<&str> = SHIPPED.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, crate::config::load::SHIPPED_ACTIONS);
    }

    #[test]
    fn a_syntax_error_has_its_position() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("broken.rhai"),
            "let x = 1;\nlet y = (2 + ;\n",
        )
        .unwrap();
        let errors = compile_all(dir.path()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 2);
        assert!(
            errors[0].to_string().contains("broken.rhai:2:"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn import_cannot_read_files() {
        let ast = engine().compile("import \"/etc/passwd\" as p; p").unwrap();
        assert!(engine().run_ast(&ast).is_err());
    }
}
