//! Converting between Rust values and Rhai's: droplets, decisions, groups and parameters as
//! maps a script reads, and JSON both ways for HTTP and API bodies.

use crate::config::Group;
use crate::digitalocean::Droplet;
use crate::policy::{Decision, Direction};
use rhai::{Array, Dynamic, Map};

/// A droplet as scripts see it.
pub fn droplet(droplet: &Droplet, managed: bool, protected: bool) -> Dynamic {
    let mut map = Map::new();
    map.insert("id".into(), (droplet.id as i64).into());
    map.insert("name".into(), droplet.name.clone().into());
    map.insert("status".into(), droplet.status.to_string().into());
    map.insert(
        "private_ip".into(),
        droplet.private_ipv4().unwrap_or("").to_string().into(),
    );
    map.insert(
        "public_ip".into(),
        droplet.public_ipv4().unwrap_or("").to_string().into(),
    );
    map.insert("created_at".into(), droplet.created_at.to_rfc3339().into());
    map.insert(
        "tags".into(),
        Dynamic::from_array(
            droplet
                .tags
                .iter()
                .map(|t| Dynamic::from(t.clone()))
                .collect(),
        ),
    );
    map.insert("managed".into(), managed.into());
    map.insert("protected".into(), protected.into());
    Dynamic::from_map(map)
}

/// The decision as scripts see it.
pub fn decision(decision: &Decision, purpose: &super::runner::Purpose) -> Dynamic {
    let mut map = Map::new();
    map.insert("current".into(), i64::from(decision.current).into());
    map.insert("desired".into(), i64::from(decision.desired).into());
    map.insert(
        "delta".into(),
        (i64::from(decision.desired) - i64::from(decision.current)).into(),
    );
    let direction = match (purpose, decision.direction) {
        (super::runner::Purpose::Drain, _) => "drain",
        (super::runner::Purpose::Return, _) => "return",
        (_, Some(Direction::Up)) => "up",
        (_, Some(Direction::Down)) => "down",
        (_, None) => "none",
    };
    map.insert("direction".into(), direction.into());
    // The unhealthy droplet a replacement's launch stands in for (empty otherwise).
    let replacing: rhai::Array = match purpose {
        super::runner::Purpose::Replace { old, .. } => vec![Dynamic::from(*old as i64)],
        _ => Vec::new(),
    };
    map.insert("replacing".into(), replacing.into());
    // What decided it, said once: the winning rule with its value and verdict, else the step
    // that decided (a bound, a schedule); never the move itself again.
    let winner = decision
        .winner
        .as_ref()
        .and_then(|name| decision.rules.iter().find(|r| &r.name == name));
    let reason = match winner {
        Some(rule) => format!("rule `{}` = {}: {}", rule.name, rule.value, rule.verdict),
        None => {
            let steps: Vec<&str> = decision.steps.iter().map(String::as_str).collect();
            let line = crate::policy::outcome_with_reason(&steps);
            line.split_once(": ")
                .map(|(_, why)| why.to_string())
                .unwrap_or_default()
        }
    };
    map.insert("reason".into(), reason.into());
    map.insert(
        "rule".into(),
        winner.map(|r| r.name.clone()).unwrap_or_default().into(),
    );
    map.insert(
        "value".into(),
        winner.map(|r| r.value.clone()).unwrap_or_default().into(),
    );
    map.insert(
        "victims".into(),
        Dynamic::from_array(
            decision
                .victims
                .iter()
                .map(|v| Dynamic::from(*v as i64))
                .collect(),
        ),
    );
    Dynamic::from_map(map)
}

/// The group as scripts see it (user data redacted), with the daemon's `instance`.
pub fn group(group: &Group, instance: &str, min: u32, max: u32) -> Dynamic {
    let template = &group.template;
    let mut t = Map::new();
    t.insert("name_prefix".into(), template.name_prefix.clone().into());
    t.insert("region".into(), template.region.clone().into());
    t.insert("size".into(), template.size.clone().into());
    t.insert(
        "image".into(),
        match &template.image {
            crate::config::Image::Slug(s) => s.clone().into(),
            crate::config::Image::Id(id) => (*id as i64).into(),
        },
    );
    t.insert(
        "tags".into(),
        Dynamic::from_array(
            template
                .tags
                .iter()
                .map(|s| Dynamic::from(s.clone()))
                .collect(),
        ),
    );
    t.insert(
        "user_data".into(),
        if template.user_data.is_some() {
            "[redacted]".into()
        } else {
            Dynamic::UNIT
        },
    );
    let mut map = Map::new();
    map.insert("name".into(), group.name.clone().into());
    map.insert("instance".into(), instance.to_string().into());
    map.insert("tag".into(), group.tag.clone().into());
    map.insert("min".into(), i64::from(min).into());
    map.insert("max".into(), i64::from(max).into());
    map.insert("template".into(), Dynamic::from_map(t));
    Dynamic::from_map(map)
}

/// A TOML value (an action's parameters) as a Rhai value.
pub fn toml_value(value: &toml::Value) -> Dynamic {
    match value {
        toml::Value::String(s) => s.clone().into(),
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Float(f) => (*f).into(),
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Datetime(d) => d.to_string().into(),
        toml::Value::Array(items) => Dynamic::from_array(items.iter().map(toml_value).collect()),
        toml::Value::Table(table) => Dynamic::from_map(
            table
                .iter()
                .map(|(k, v)| (k.as_str().into(), toml_value(v)))
                .collect(),
        ),
    }
}

/// JSON as a Rhai value.
pub fn from_json(value: &serde_json::Value) -> Dynamic {
    match value {
        serde_json::Value::Null => Dynamic::UNIT,
        serde_json::Value::Bool(b) => (*b).into(),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or(f64::NAN).into(),
        },
        serde_json::Value::String(s) => s.clone().into(),
        serde_json::Value::Array(items) => {
            Dynamic::from_array(items.iter().map(from_json).collect())
        }
        serde_json::Value::Object(map) => Dynamic::from_map(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), from_json(v)))
                .collect(),
        ),
    }
}

/// A Rhai value as JSON (unit becomes null; other types their text).
pub fn to_json(value: &Dynamic) -> serde_json::Value {
    if value.is_unit() {
        serde_json::Value::Null
    } else if let Some(b) = value.clone().try_cast::<bool>() {
        b.into()
    } else if let Some(i) = value.clone().try_cast::<i64>() {
        i.into()
    } else if let Some(f) = value.clone().try_cast::<f64>() {
        f.into()
    } else if let Some(array) = value.clone().try_cast::<Array>() {
        serde_json::Value::Array(array.iter().map(to_json).collect())
    } else if let Some(map) = value.clone().try_cast::<Map>() {
        serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| (k.to_string(), to_json(v)))
                .collect(),
        )
    } else {
        value.to_string().into()
    }
}
