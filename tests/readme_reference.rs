//! Every key the configuration loader accepts is documented in the README's configuration
//! reference. The keys come from the deserialized structs in `src/config/schema.rs` (each one
//! denies unknown fields, so its fields are exactly the accepted keys). Every default the
//! reference writes as a literal is what the loader uses when the key is left out.

use std::collections::BTreeMap;

const SCHEMA: &str = include_str!("../src/config/schema.rs");
const README: &str = include_str!("../README.md");

/// struct name → [(key, type)]
fn structs() -> BTreeMap<String, Vec<(String, String)>> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, Vec<(String, String)>)> = None;
    let mut rename: Option<String> = None;
    for line in SCHEMA.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("pub struct ") {
            if let Some(name) = rest.strip_suffix(" {") {
                current = Some((name.to_string(), Vec::new()));
            }
            continue;
        }
        let Some((_, fields)) = current.as_mut() else {
            continue;
        };
        if line == "}" {
            let (name, fields) = current.take().unwrap();
            out.insert(name, fields);
            continue;
        }
        if line.starts_with("#[serde(") {
            if let Some(start) = line.find("rename = \"") {
                let rest = &line[start + 10..];
                rename = Some(rest[..rest.find('"').unwrap()].to_string());
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("pub ") {
            let (name, ty) = rest.split_once(": ").unwrap();
            let key = rename.take().unwrap_or_else(|| name.to_string());
            fields.push((key, ty.trim_end_matches(',').to_string()));
        }
    }
    out
}

fn keys(root: &str) -> Vec<String> {
    let structs = structs();
    let mut keys = Vec::new();
    fn walk(
        structs: &BTreeMap<String, Vec<(String, String)>>,
        name: &str,
        prefix: &str,
        keys: &mut Vec<String>,
    ) {
        for (key, ty) in &structs[name] {
            let path = format!("{prefix}{key}");
            let nested = structs.keys().find(|candidate| {
                ty.split(|c: char| !c.is_alphanumeric())
                    .any(|part| part == candidate.as_str())
            });
            match nested {
                Some(child) => walk(structs, child, &format!("{path}."), keys),
                None => keys.push(path),
            }
        }
    }
    walk(&structs, root, "", &mut keys);
    keys
}

fn section(heading: &str) -> &'static str {
    let start = README
        .find(heading)
        .unwrap_or_else(|| panic!("README has no `{heading}`"));
    let rest = &README[start + heading.len()..];
    let end = rest
        .find("\n### ")
        .or_else(|| rest.find("\n## "))
        .unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn every_base_file_key_is_in_the_readme() {
    let keys = keys("BaseFile");
    assert!(keys.contains(&"status_api.listen".to_string()), "{keys:?}");
    let text = section("### Base file reference");
    let missing: Vec<_> = keys
        .iter()
        .filter(|k| !text.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README's base file reference lacks {missing:?}"
    );
}

#[test]
fn every_group_file_key_is_in_the_readme() {
    let keys = keys("GroupFile");
    for expected in [
        "droplet.region",
        "rule.for",
        "rule.actions.up",
        "schedule.cron",
        "actions.params",
    ] {
        assert!(
            keys.contains(&expected.to_string()),
            "{expected} not found in {keys:?}"
        );
    }
    let text = section("### Group file reference");
    let missing: Vec<_> = keys
        .iter()
        .filter(|k| !text.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README's group file reference lacks {missing:?}"
    );
}

/// `(key, default)` for each row of a README reference table whose default is a TOML literal
/// written as code (`` `"3s"` ``, `` `9110` ``, `` `[]` ``).
fn literal_defaults(heading: &str) -> Vec<(String, toml::Value)> {
    section(heading)
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let key = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let default = cells.get(3)?.strip_prefix('`')?.strip_suffix('`')?;
            let value: toml::Table = toml::from_str(&format!("v = {default}")).ok()?;
            Some((key.to_string(), value.get("v")?.clone()))
        })
        .collect()
}

/// Sets `value` at the dotted `key`; `rule.`, `schedule.` and `source.` go into the first of
/// each.
fn set(table: &mut toml::Table, key: &str, value: toml::Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap();
    let mut at = table;
    for part in parts {
        let next = at
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = match next {
            toml::Value::Array(items) => items[0].as_table_mut().unwrap(),
            other => other.as_table_mut().unwrap(),
        };
    }
    at.insert(last.to_string(), value);
}

#[test]
fn every_literal_default_in_the_group_reference_is_the_loaders_default() {
    let minimal: toml::Table = toml::from_str(
        r#"
tag = "web"
min = 1
max = 5
[droplet]
region = "nyc3"
size = "s-1vcpu-1gb"
image = "ubuntu-24-04-x64"
[[rule]]
name = "cpu"
expr = "avg(x)"
target = 0.5
[[schedule]]
cron = "0 9 * * 1-5"
duration = "9h"
max = 9
[[source]]
name = "app"
kind = "droplets"
port = 8080
[idle]
count = 1
busy = "x > 0"
[drain]
[health]
[refresh]
"#,
    )
    .unwrap();
    let load = |table: &toml::Table| {
        let mut group = do_scaler::config::group_from_toml("web", &toml::to_string(table).unwrap())
            .unwrap_or_else(|e| panic!("{e:?}"));
        group.source.clear();
        format!("{group:?}")
    };
    let implicit = load(&minimal);
    let defaults = literal_defaults("### Group file reference");
    let mut checked = Vec::new();
    for (key, value) in defaults {
        // `for` belongs to condition rules, which this minimal group does not have; a
        // schedule's default name is a pattern (`schedule-N`), not a literal; `health.path`
        // belongs to http checks, and the minimal group checks metrics; `refresh.timezone`
        // belongs to a refresh window, which the minimal group does not have;
        // `rule.saturated_step` needs a `ceiling` (its default, doubling, is checked in
        // tests/policy.rs).
        if [
            "rule.for",
            "rule.saturated_step",
            "schedule.name",
            "health.path",
            "refresh.timezone",
        ]
        .contains(&key.as_str())
        {
            continue;
        }
        let mut explicit = minimal.clone();
        set(&mut explicit, &key, value.clone());
        assert!(
            load(&explicit) == implicit,
            "README says `{key}` defaults to {value}, the loader disagrees"
        );
        checked.push(key);
    }
    assert!(checked.len() >= 20, "only {checked:?} were checked");
}

#[test]
fn every_literal_default_in_the_base_reference_is_the_loaders_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("do-scaler.toml");
    let load = |table: &toml::Table| {
        std::fs::write(&path, toml::to_string(table).unwrap()).unwrap();
        let mut diagnostics = Vec::new();
        let mut base = do_scaler::config::load::load_base(
            &path,
            &do_scaler::config::Overrides::default(),
            &mut diagnostics,
        )
        .unwrap_or_else(|| panic!("{diagnostics:?}"));
        base.source.clear();
        format!("{base:?}")
    };
    let implicit = load(&toml::Table::new());
    let mut checked = Vec::new();
    for (key, value) in literal_defaults("### Base file reference") {
        // `record.keep` and `record.max_size` belong to a `[record]` table (which needs its
        // `dir`), and the default base file records nothing.
        if key.starts_with("record.") {
            continue;
        }
        let mut explicit = toml::Table::new();
        set(&mut explicit, &key, value.clone());
        assert!(
            load(&explicit) == implicit,
            "README says `{key}` defaults to {value}, the loader disagrees"
        );
        checked.push(key);
    }
    assert!(checked.len() >= 8, "only {checked:?} were checked");
}
