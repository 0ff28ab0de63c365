//! Every key the configuration loader accepts is documented in the README's configuration
//! reference. The keys come from the deserialized structs in `src/config/schema.rs` (each one
//! denies unknown fields, so its fields are exactly the accepted keys).

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
