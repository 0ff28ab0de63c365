//! The original Python do-scaler's configuration (tests/legacy, its example layout written from
//! its description): loaded unchanged, migrated, and scaling against the sim.

use chrono::{DateTime, Utc};
use do_scaler::clock::ManualClock;
use do_scaler::commands::check::check;
use do_scaler::commands::migrate::migrate;
use do_scaler::config::{ApiToken, Overrides, load};
use do_scaler::daemon::GroupRuntime;
use do_scaler::digitalocean::{Client, ClientOptions};
use do_scaler::metrics::scrape::Scraper;
use do_scaler::policy::{Direction, GroupMemory, InMemoryStore};
use do_scaler::script::compile_all;
use do_scaler::script::runner::{ActionRequest, Runner};
use do_scaler::sim::{Demand, Sim, SimOptions};
use do_scaler::state::MemoryJournal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn old_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/legacy/do-scaler.cfg")
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn the_old_configuration_loads_into_the_native_model() {
    let output = check(&old_config(), &Overrides::default(), &no_env);
    assert_eq!(output.exit_code, 0, "{}", output.stderr);
    assert!(
        output.stderr.contains("do_token is read from this file"),
        "{}",
        output.stderr
    );
    let config = load(&old_config(), &Overrides::default()).unwrap().config;
    let web = &config.groups[0];
    assert_eq!((web.tag.as_str(), web.min, web.max), ("web", 2, 8));
    assert_eq!(web.interval, Duration::from_secs(30));
    assert_eq!(web.adopt_tags, ["autoscaled"]);
    assert_eq!(web.template.name_prefix, "web");
    assert_eq!(web.scrape.port, 9110);
    let names: Vec<&str> = web.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["mem_avail", "loadavg", "down"]);
    assert_eq!(
        config.base.inline_token.as_ref().map(ApiToken::expose),
        Some("dop_v1_0123456789abcdef0123456789abcdef")
    );
}

#[test]
fn old_format_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("do-scaler.cfg"),
        "[scheduler]\ninterval = 30\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("conf.d/policies")).unwrap();
    std::fs::write(dir.path().join("conf.d/web.cfg"), "[scaler]\ntag_name = web\npolicy_files = p.json\n[digitalocean_create_droplet]\nmax = eight\ndroplet = web.json\n").unwrap();
    let output = check(
        &dir.path().join("do-scaler.cfg"),
        &Overrides::default(),
        &no_env,
    );
    assert_eq!(output.exit_code, 1);
    assert!(
        output
            .stderr
            .contains("web.cfg:5:1: `max` must be a whole number, found `eight`"),
        "{}",
        output.stderr
    );
}

#[tokio::test]
async fn migrate_writes_a_configuration_that_checks_and_plans_the_same() {
    let out = tempfile::tempdir().unwrap();
    let migrated = migrate(&old_config(), out.path());
    assert_eq!(migrated.exit_code, 0, "{}", migrated.stderr);
    assert!(migrated.stdout.contains("what changes in meaning"));
    let token = out.path().join("digitalocean-token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Over a token file others could read, migrating again narrows it first.
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(migrate(&old_config(), out.path()).exit_code, 0);
        assert_eq!(
            std::fs::metadata(&token).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let native = out.path().join("do-scaler.toml");
    let checked = check(&native, &Overrides::default(), &no_env);
    assert_eq!(checked.exit_code, 0, "{}", checked.stderr);

    // Both forms plan the same decision for the same sim state.
    let sim = Sim::start(SimOptions {
        seed_droplets: 3,
        seed_managed_tag: Some("autoscaled".into()),
        open_ports: Vec::new(),
        demand: Demand::Constant(12.0),
        seed_age: Duration::from_secs(3 * 3600),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let sim_token = sim.token().to_string();
    let env = move |name: &str| (name == "DIGITALOCEAN_TOKEN").then(|| sim_token.clone());
    let mut plans = Vec::new();
    for config in [old_config(), native] {
        let request = do_scaler::commands::plan::PlanRequest {
            config,
            overrides: Overrides {
                api_url: Some(sim.api_url()),
                state: Some(out.path().join("none.db")),
                ..Overrides::default()
            },
            group: None,
            json: true,
            wait: Some(Duration::ZERO),
            clock: std::sync::Arc::new(do_scaler::clock::SystemClock),
        };
        let output =
            do_scaler::commands::plan::run(&request, &env, &InMemoryStore::default()).await;
        assert_eq!(output.exit_code, 0, "{}", output.stderr);
        let plan: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
        let group = &plan["groups"][0];
        let verdicts: Vec<String> = group["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{}={}", r["name"], r["value"]))
            .collect();
        plans.push((group["desired"].clone(), verdicts));
    }
    assert_eq!(plans[0], plans[1]);
    assert_eq!(
        plans[0].0, 4,
        "memory is short on every droplet: +1 ({:?})",
        plans[0]
    );
}

fn at(clock: &ManualClock) -> DateTime<Utc> {
    do_scaler::clock::Clock::now(clock)
}

#[tokio::test]
async fn the_old_example_scales_up_under_load_and_down_when_idle_within_its_bounds() {
    let clock = ManualClock::new(
        DateTime::parse_from_rfc3339("2026-06-10T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
    );
    // Two droplets the old tool made (tag "autoscaled"), ten vCPUs of work for ten minutes,
    // then almost none.
    let sim = Sim::start(SimOptions {
        seed_droplets: 2,
        seed_managed_tag: Some("autoscaled".into()),
        demand: Demand::Step {
            before: 10.0,
            after: 0.1,
            at: Duration::from_secs(600),
        },
        boot_delay: Duration::ZERO,
        seed_age: Duration::from_secs(3600),
        clock: Arc::new(clock.clone()),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let config = load(&old_config(), &Overrides::default()).unwrap().config;
    let group = config.groups[0].clone();
    let mut options = ClientOptions::new(sim.api_url(), ApiToken::new(sim.token()));
    options.rate_limits = None;
    let client = Client::new(options).unwrap();
    let scraper = Scraper::new(8, 1 << 20).unwrap();
    let runner = Runner::new(
        Arc::new(compile_all(Path::new("/nonexistent")).unwrap()),
        client.clone(),
        Arc::new(MemoryJournal::default()),
    );
    let mut runtime = GroupRuntime::new(group.clone(), "do-scaler:default".into()).unwrap();
    let mut memory = GroupMemory::default();
    let mut sizes = Vec::new();
    // 45 simulated minutes at the old interval of 30 s: long enough for load15 to rise and fall.
    for _ in 0..90 {
        let now = at(&clock);
        let report = runtime
            .tick(&client, &scraper, &mut memory, &Default::default(), now)
            .await
            .unwrap();
        if let Some(direction) = report.decision.direction {
            let run = runner
                .run(ActionRequest {
                    purpose: Default::default(),
                    group: group.clone(),
                    managed_tag: "do-scaler:default".into(),
                    decision: report.decision.clone(),
                    droplets: report.listing.clone(),
                    states: Default::default(),
                    actions: report.actions.clone(),
                    deadline: Duration::from_secs(30),
                    creates_last_hour: 0,
                })
                .await;
            assert_eq!(run.failure(), None, "{:?}", run.results);
            memory.created(run.created.len() as u32, now);
            memory.scaled(direction, now);
        }
        clock.advance(Duration::from_secs(30));
        sim.sync();
        let size = sim.droplets().len();
        assert!((2..=8).contains(&size), "size {size} outside 2..8");
        sizes.push(size);
    }
    let peak = *sizes.iter().max().unwrap();
    assert!(peak > 2, "it scaled up under load: {sizes:?}");
    assert!(
        *sizes.last().unwrap() < peak,
        "it scaled down when idle: {sizes:?}"
    );
    let names = sim.created_names();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "a name was reused: {names:?}");
    let _ = Direction::Up;
}

/// A copy of the old example with `edit` applied to its folder.
fn variant(edit: impl FnOnce(&Path)) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap().flatten() {
            let target = to.join(entry.file_name());
            if entry.path().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(old_config().parent().unwrap(), dir.path());
    edit(dir.path());
    dir
}

fn edit_file(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no `{from}`", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// The decision `plan` shows for a configuration against `sim` (desired size and each rule's
/// value), with `env` as the environment.
async fn planned(
    config: PathBuf,
    sim: &Sim,
    env: &dyn Fn(&str) -> Option<String>,
) -> (serde_json::Value, Vec<String>) {
    let state = tempfile::tempdir().unwrap();
    let request = do_scaler::commands::plan::PlanRequest {
        config,
        overrides: Overrides {
            api_url: Some(sim.api_url()),
            state: Some(state.path().join("none.db")),
            ..Overrides::default()
        },
        group: None,
        json: true,
        wait: Some(Duration::ZERO),
        clock: std::sync::Arc::new(do_scaler::clock::SystemClock),
    };
    let output = do_scaler::commands::plan::run(&request, env, &InMemoryStore::default()).await;
    assert_eq!(output.exit_code, 0, "{}", output.stderr);
    let plan: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    let group = &plan["groups"][0];
    let verdicts = group["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}={}", r["name"], r["value"]))
        .collect();
    (group["desired"].clone(), verdicts)
}

/// Issue 16: four legitimate configurations of the original tool — a token in `[DEFAULT]`,
/// values continued on indented lines, templates in a `droplet_dir`, a custom Python action —
/// load and decide as the original tool would (the last once it is ported to Rhai).
#[tokio::test]
async fn the_old_tools_other_legitimate_configurations_load_and_decide_alike() {
    let sim = Sim::start(SimOptions {
        seed_droplets: 3,
        seed_managed_tag: Some("autoscaled".into()),
        open_ports: Vec::new(),
        demand: Demand::Constant(12.0),
        seed_age: Duration::from_secs(3 * 3600),
        token: "dop_v1_from_default_section".into(),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let sim_token = sim.token().to_string();
    let env = move |name: &str| (name == "DIGITALOCEAN_TOKEN").then(|| sim_token.clone());
    let baseline = planned(old_config(), &sim, &env).await;

    // 1. The token in [DEFAULT], referred to as ${scaler:do_token} (configparser looks a
    //    section's keys up in [DEFAULT] too). No token in the environment: the file's is used.
    let default_token = variant(|dir| {
        edit_file(
            &dir.join("conf.d/web.cfg"),
            "[scaler]\ndo_token = dop_v1_0123456789abcdef0123456789abcdef   ; the old tool kept the token here\n",
            "[DEFAULT]\ndo_token = dop_v1_from_default_section\n\n[scaler]\n",
        );
    });
    let cfg = default_token.path().join("do-scaler.cfg");
    let loaded = load(&cfg, &Overrides::default()).unwrap();
    assert_eq!(
        loaded.config.base.inline_token.as_ref().unwrap().expose(),
        "dop_v1_from_default_section"
    );
    assert_eq!(planned(cfg.clone(), &sim, &no_env).await, baseline);
    let out = tempfile::tempdir().unwrap();
    assert_eq!(migrate(&cfg, out.path()).exit_code, 0);
    assert_eq!(
        std::fs::read_to_string(out.path().join("digitalocean-token")).unwrap(),
        "dop_v1_from_default_section\n"
    );

    // An empty token is never written: migrate says so and writes no token file.
    let empty = variant(|dir| {
        edit_file(
            &dir.join("conf.d/web.cfg"),
            "do_token = dop_v1_0123456789abcdef0123456789abcdef",
            "do_token =",
        );
    });
    let out = tempfile::tempdir().unwrap();
    let migrated = migrate(&empty.path().join("do-scaler.cfg"), out.path());
    assert!(
        migrated.stderr.contains("do_token is empty"),
        "{}",
        migrated.stderr
    );
    assert!(!out.path().join("digitalocean-token").exists());

    // 2. Values continued on indented lines.
    let multiline = variant(|dir| {
        let path = dir.join("conf.d/web.cfg");
        edit_file(
            &path,
            "policy_files = mem_avail.json loadavg.json down.json",
            "policy_files = mem_avail.json\n    loadavg.json\n\n    down.json",
        );
        edit_file(&path, "ports = 22 80", "ports = 22\n  80");
    });
    let cfg = multiline.path().join("do-scaler.cfg");
    let group = &load(&cfg, &Overrides::default()).unwrap().config.groups[0];
    assert_eq!(group.rules.len(), 3);
    assert_eq!(
        group.actions.params["health_check_tcp"]["ports"],
        toml::Value::Array(vec![22.into(), 80.into()])
    );
    assert_eq!(planned(cfg, &sim, &env).await, baseline);

    // 3. Droplet templates in a `droplet_dir`.
    let droplet_dir = variant(|dir| {
        std::fs::create_dir(dir.join("conf.d/templates")).unwrap();
        std::fs::rename(
            dir.join("conf.d/droplets/web.json"),
            dir.join("conf.d/templates/web.json"),
        )
        .unwrap();
        edit_file(
            &dir.join("conf.d/web.cfg"),
            "tag_name = web\n",
            "tag_name = web\ndroplet_dir = templates\n",
        );
    });
    let cfg = droplet_dir.path().join("do-scaler.cfg");
    let original = load(&old_config(), &Overrides::default())
        .unwrap()
        .config
        .groups[0]
        .template
        .clone();
    assert_eq!(
        load(&cfg, &Overrides::default()).unwrap().config.groups[0].template,
        original
    );
    assert_eq!(planned(cfg, &sim, &env).await, baseline);

    // 4. A custom Python action class: refused with what to do, then accepted once ported.
    let custom = variant(|dir| {
        edit_file(
            &dir.join("conf.d/policies/loadavg.json"),
            "\"actions\": [\"digitalocean_create_droplet\", \"health_check_tcp\"]",
            "\"actions\": [\"digitalocean_create_droplet\", \"notify_slack\"]",
        );
        // The class's own settings, as the old tool kept them.
        let path = dir.join("conf.d/web.cfg");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            format!("{text}\n[notify_slack]\nurl = http://127.0.0.1:9/hook\n"),
        )
        .unwrap();
    });
    let cfg = custom.path().join("do-scaler.cfg");
    let error = load(&cfg, &Overrides::default()).unwrap_err().to_string();
    assert!(
        error.contains("notify_slack")
            && error.contains("Rhai")
            && error.contains("Porting a custom Python action"),
        "{error}"
    );
    std::fs::create_dir(custom.path().join("actions")).unwrap();
    std::fs::write(
        custom.path().join("actions/notify_slack.rhai"),
        "log_info(`scaled ${decision.direction}`);\n",
    )
    .unwrap();
    let group = &load(&cfg, &Overrides::default()).unwrap().config.groups[0];
    assert_eq!(
        group.actions.params["notify_slack"]["url"].as_str(),
        Some("http://127.0.0.1:9/hook"),
        "the old section becomes the action's parameters"
    );
}
