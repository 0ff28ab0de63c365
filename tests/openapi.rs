//! Schema conformance: every request the client sends, and the sim's answers, are checked
//! against DigitalOcean's official API description (tests/fixtures/openapi-droplets.yaml), read
//! here; no schema is copied by hand. The checker must also reject known-bad requests.

use do_scaler::config::ApiToken;
use do_scaler::digitalocean::{Client, ClientOptions, CreateDroplets, ImageRef, SshKeyRef};
use do_scaler::sim::{RecordedRequest, Sim, SimOptions};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openapi-droplets.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        serde_norway::from_str(&text).unwrap()
    })
}

fn resolve(value: &Value) -> &Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            resolve(
                spec()
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {reference}")),
            )
        }
        None => value,
    }
}

fn type_matches(kind: &str, value: &Value) -> bool {
    match kind {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

/// Validates `value` against an OpenAPI 3.0 schema; pushes one message per violation.
fn validate(schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(schema);
    if value.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) == Some(true) {
            return;
        }
        if schema.get("type").is_some() || schema.get("properties").is_some() {
            errors.push(format!("{at}: null is not allowed"));
            return;
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for part in all {
            validate(part, value, at, errors);
        }
    }
    for (key, exactly_one) in [("oneOf", true), ("anyOf", false)] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let outcomes: Vec<Vec<String>> = options
                .iter()
                .map(|option| {
                    let mut inner = Vec::new();
                    validate(option, value, at, &mut inner);
                    inner
                })
                .collect();
            let matching = outcomes.iter().filter(|inner| inner.is_empty()).count();
            if matching == 0 || (exactly_one && matching > 1) {
                errors.push(format!(
                    "{at}: matches {matching} of the {key} alternatives"
                ));
            }
            if matching == 0 {
                // Show why the closest alternative failed.
                if let Some(closest) = outcomes.into_iter().min_by_key(Vec::len) {
                    errors.extend(closest);
                }
            }
        }
    }
    if let Some(kind) = schema.get("type").and_then(Value::as_str)
        && !type_matches(kind, value)
    {
        errors.push(format!("{at}: expected {kind}, got {value}"));
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {options:?}"));
    }
    if let Some(text) = value.as_str() {
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
            && !regex::Regex::new(pattern).unwrap().is_match(text)
        {
            errors.push(format!("{at}: `{text}` does not match {pattern}"));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && text.chars().count() as u64 > max
        {
            errors.push(format!("{at}: longer than {max}"));
        }
    }
    if let Some(number) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && number < min
        {
            errors.push(format!("{at}: {number} is below {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && number > max
        {
            errors.push(format!("{at}: {number} is above {max}"));
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (index, item) in array.iter().enumerate() {
            validate(items, item, &format!("{at}[{index}]"), errors);
        }
    }
    if let Some(object) = value.as_object() {
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for key in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(key) {
                    errors.push(format!("{at}: missing required `{key}`"));
                }
            }
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (key, item) in object {
                if let Some(property) = properties.get(key) {
                    validate(property, item, &format!("{at}.{key}"), errors);
                }
            }
        }
    }
}

/// The operation for a method and a concrete path, with the path's template.
fn operation(method: &str, path: &str) -> Option<(&'static Value, &'static Value)> {
    let paths = spec()["paths"].as_object()?;
    for (template, item) in paths {
        let t: Vec<&str> = template.split('/').collect();
        let p: Vec<&str> = path.split('/').collect();
        let matches =
            t.len() == p.len() && t.iter().zip(&p).all(|(a, b)| a.starts_with('{') || a == b);
        if matches {
            return Some((item.get(method.to_lowercase())?, item));
        }
    }
    None
}

/// Validates a request (query, path parameters and body) against its operation.
fn validate_request(request: &RecordedRequest) -> Vec<String> {
    let mut errors = Vec::new();
    let Some((operation, _)) = operation(&request.method, &request.path) else {
        return vec![format!(
            "{} {} is not in the API description",
            request.method, request.path
        )];
    };
    let parameters: Vec<&Value> = operation["parameters"]
        .as_array()
        .map(|list| list.iter().map(resolve).collect())
        .unwrap_or_default();
    for (name, raw) in &request.query {
        let Some(parameter) = parameters
            .iter()
            .find(|p| p["in"] == "query" && p["name"] == name.as_str())
        else {
            errors.push(format!("query parameter `{name}` is not defined"));
            continue;
        };
        let schema = &parameter["schema"];
        let value = match resolve(schema)["type"].as_str() {
            Some("integer") => raw
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or(Value::String(raw.clone())),
            _ => Value::String(raw.clone()),
        };
        validate(schema, &value, &format!("query {name}"), &mut errors);
    }
    for parameter in &parameters {
        if parameter["in"] == "query"
            && parameter["required"] == true
            && !request
                .query
                .iter()
                .any(|(k, _)| parameter["name"] == k.as_str())
        {
            errors.push(format!(
                "required query parameter `{}` is missing",
                parameter["name"]
            ));
        }
    }
    match (
        operation.pointer("/requestBody/content/application~1json/schema"),
        &request.body,
    ) {
        (Some(schema), Some(body)) => validate(schema, body, "body", &mut errors),
        (Some(_), None)
            if operation.pointer("/requestBody/required") == Some(&Value::Bool(true)) =>
        {
            errors.push("the body is required".into())
        }
        _ => {}
    }
    errors
}

fn recorded(
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: Option<Value>,
) -> RecordedRequest {
    RecordedRequest {
        method: method.into(),
        path: path.into(),
        query: query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body,
    }
}

fn good_create() -> Value {
    json!({
        "name": "web-a1", "region": "nyc3", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64",
        "ssh_keys": [289794], "ipv6": false, "monitoring": true, "tags": ["web"],
        "vpc_uuid": "5a4981aa-9653-4bd1-bef5-d6bff5200001"
    })
}

/// FNV-1a, 64 bits: a digest that is the same on every machine and Rust version.
fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The vendored copy of DigitalOcean's description is the official one: byte for byte against
/// `../shared` when it is there, and always against the digest recorded when it was vendored
/// (so a fresh clone without `../shared` still checks something, and an edited copy fails).
#[test]
fn the_vendored_description_is_the_official_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let vendored = std::fs::read(root.join("tests/fixtures/openapi-droplets.yaml")).unwrap();
    let recorded =
        std::fs::read_to_string(root.join("tests/fixtures/openapi-droplets.yaml.fnv64")).unwrap();
    assert_eq!(
        format!("{:016x}", fnv64(&vendored)),
        recorded.trim(),
        "tests/fixtures/openapi-droplets.yaml was edited: vendor the official file again"
    );
    let shared = root.join("../shared/digitalocean/openapi-droplets.yaml");
    match std::fs::read(&shared) {
        Ok(official) => assert!(
            official == vendored,
            "tests/fixtures/openapi-droplets.yaml differs from {}",
            shared.display()
        ),
        Err(_) => eprintln!(
            "{} is not beside this clone: checked the vendored copy against its recorded digest only",
            shared.display()
        ),
    }
}

#[test]
fn the_checker_accepts_a_good_create_and_rejects_known_bad_requests() {
    assert_eq!(
        validate_request(&recorded("POST", "/v2/droplets", &[], Some(good_create()))),
        Vec::<String>::new()
    );

    let mut no_image = good_create();
    no_image.as_object_mut().unwrap().remove("image");
    let errors = validate_request(&recorded("POST", "/v2/droplets", &[], Some(no_image)));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("missing required `image`")),
        "{errors:?}"
    );

    let mut underscore = good_create();
    underscore["name"] = json!("web_1");
    let errors = validate_request(&recorded("POST", "/v2/droplets", &[], Some(underscore)));
    assert!(!errors.is_empty(), "a name with `_` must be rejected");

    let errors = validate_request(&recorded(
        "GET",
        "/v2/droplets",
        &[("per_page", "500"), ("tag_name", "web")],
        None,
    ));
    assert!(errors.iter().any(|e| e.contains("above 200")), "{errors:?}");

    let mut null_vpc = good_create();
    null_vpc["vpc_uuid"] = Value::Null;
    let errors = validate_request(&recorded("POST", "/v2/droplets", &[], Some(null_vpc)));
    assert!(
        errors.iter().any(|e| e.contains("null is not allowed")),
        "{errors:?}"
    );

    let errors = validate_request(&recorded("DELETE", "/v2/droplets", &[], None));
    assert!(
        errors.iter().any(|e| e.contains("tag_name")),
        "delete by tag needs tag_name: {errors:?}"
    );
}

#[tokio::test]
async fn every_request_the_client_sends_is_valid() {
    let sim = Sim::start(SimOptions {
        seed_droplets: 250,
        open_ports: Vec::new(),
        rate_limit: None,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let mut options = ClientOptions::new(sim.api_url(), ApiToken::new(sim.token()));
    options.rate_limits = None;
    options.retry.base_delay = Duration::from_millis(5);
    let client = Client::new(options).unwrap();

    client.list_droplets_by_tag("web").await.unwrap();
    client.count_droplets().await.unwrap();
    let id = sim.droplets()[0].id;
    client.get_droplet(id).await.unwrap();
    let mut create = CreateDroplets {
        name: None,
        names: Some(vec!["web-x1".into(), "web-x2".into()]),
        region: Some("nyc3".into()),
        size: "s-2vcpu-4gb".into(),
        image: ImageRef::Slug("ubuntu-24-04-x64".into()),
        ssh_keys: vec![
            SshKeyRef::Id(289_794),
            SshKeyRef::Fingerprint("3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa".into()),
        ],
        ipv6: true,
        monitoring: true,
        tags: vec!["web".into(), "do-scaler:default".into()],
        user_data: Some("#cloud-config\n".into()),
        vpc_uuid: None,
    };
    assert!(
        client
            .create_droplets(&create, "web")
            .await
            .failure
            .is_none()
    );
    create.image = ImageRef::Id(160_000_001);
    create.vpc_uuid = Some("5a4981aa-9653-4bd1-bef5-d6bff5200001".into());
    let single = create.with_names(&["web-x3".to_string()]);
    assert!(
        client
            .create_droplets(&single, "web")
            .await
            .failure
            .is_none()
    );
    client.delete_droplet(id).await.unwrap();
    client.delete_droplet(id).await.unwrap();

    let requests: Vec<RecordedRequest> = sim
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v2/droplets"))
        .collect();
    assert!(requests.len() >= 7, "{requests:?}");
    for request in &requests {
        let errors = validate_request(request);
        assert!(
            errors.is_empty(),
            "{} {} {:?}: {errors:?}",
            request.method,
            request.path,
            request.query
        );
    }
}

#[tokio::test]
async fn the_sims_answers_match_the_description() {
    let sim = Sim::start(SimOptions {
        seed_droplets: 3,
        open_ports: Vec::new(),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let get = |path: String| {
        let request = http
            .get(format!("{}{path}", sim.api_url()))
            .bearer_auth(sim.token());
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let list = get("/v2/droplets?tag_name=web&per_page=2".into()).await;
    let schema = resolve(&spec()["paths"]["/v2/droplets"]["get"]["responses"]["200"])["content"]["application/json"]["schema"].clone();
    let mut errors = Vec::new();
    validate(&schema, &list, "list", &mut errors);
    assert!(errors.is_empty(), "{errors:#?}");
    // Links name the address the request came to (a client that follows them stays on this
    // machine); with `public_links` they name the real API's host, as the real API does.
    assert!(
        list.pointer("/links/pages/next")
            .and_then(Value::as_str)
            .unwrap()
            .starts_with(&format!("{}/v2/droplets?", sim.api_url())),
        "{list}"
    );
    // A trailing slash is the same endpoint.
    let slashed = get("/v2/droplets/?tag_name=web&per_page=2".into()).await;
    assert_eq!(slashed["meta"], list["meta"]);
    // Creates link their actions, which can be polled.
    let created: Value = http
        .post(format!("{}/v2/droplets", sim.api_url()))
        .bearer_auth(sim.token())
        .json(&good_create())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let href = created
        .pointer("/links/actions/0/href")
        .and_then(Value::as_str)
        .unwrap()
        .to_string();
    assert!(href.starts_with(&sim.api_url()), "{href}");
    let action: Value = http
        .get(&href)
        .bearer_auth(sim.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(action["action"]["type"], "create", "{action}");
    assert!(
        ["in-progress", "completed"].contains(&action["action"]["status"].as_str().unwrap()),
        "{action}"
    );
    let public = Sim::start(SimOptions {
        seed_droplets: 3,
        open_ports: Vec::new(),
        public_links: true,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let listed: Value = http
        .get(format!("{}/v2/droplets?per_page=2", public.api_url()))
        .bearer_auth(public.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed
            .pointer("/links/pages/next")
            .and_then(Value::as_str)
            .unwrap()
            .starts_with("https://api.digitalocean.com/v2/droplets?")
    );

    let id = sim.droplets()[0].id;
    let one = get(format!("/v2/droplets/{id}")).await;
    let schema = resolve(&spec()["paths"]["/v2/droplets/{droplet_id}"]["get"]["responses"]["200"])
        ["content"]["application/json"]["schema"]
        .clone();
    let mut errors = Vec::new();
    validate(&schema, &one, "droplet", &mut errors);
    assert!(errors.is_empty(), "{errors:#?}");
}
