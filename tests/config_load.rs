//! Loading the example configuration into the typed model: values, defaults and overrides.

use do_scaler::config::{
    AddressKind, Change, Condition, Image, OnMissing, Overrides, RuleKind, ScaleInChoice, load,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("do-scaler.toml")
}

#[test]
fn the_example_loads_with_its_values_and_defaults() {
    let loaded = load(&example(), &Overrides::default()).unwrap();
    let config = loaded.config;
    assert_eq!(config.base.interval, Duration::from_secs(30));
    assert_eq!(config.base.managed_by_tag(), "do-scaler:default");
    assert_eq!(config.base.api_url, "https://api.digitalocean.com");
    assert_eq!(config.base.status_api.listen.to_string(), "127.0.0.1:9797");
    assert!(config.base.conf_dir.ends_with("conf.d"));
    let names: Vec<_> = config.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["web", "worker"]);

    let web = &config.groups[0];
    assert_eq!((web.tag.as_str(), web.min, web.max), ("web", 2, 12));
    assert_eq!(
        web.tick_timeout,
        Duration::from_secs(24),
        "80 % of the interval"
    );
    assert_eq!(web.on_missing, OnMissing::Hold);
    assert_eq!(web.max_creates_per_hour, 24, "2 × max by default");
    assert_eq!(web.template.image, Image::Slug("ubuntu-24-04-x64".into()));
    assert!(
        web.template
            .user_data
            .as_deref()
            .unwrap()
            .contains("do-agent")
    );
    assert_eq!(web.scrape.address, AddressKind::Private);
    assert_eq!(web.scrape.port, 9110);
    assert_eq!(web.cooldown.down, Duration::from_secs(600));
    assert!(matches!(web.scale_in.choose, ScaleInChoice::LeastBusy(_)));
    assert!(
        matches!(web.rules[0].kind, RuleKind::Target { target, max_step_up: Some(4), .. } if target == 0.6)
    );
    match &web.rules[1].kind {
        RuleKind::Threshold {
            condition: Condition::One(_),
            hold_for,
            change,
        } => {
            assert_eq!(*hold_for, Duration::from_secs(120));
            assert_eq!(*change, Change::Count(2));
        }
        other => panic!("memory rule is a threshold rule, got {other:?}"),
    }
    assert_eq!(web.schedules[0].timezone, chrono_tz::Europe::Berlin);
    assert_eq!(web.schedules[0].min, Some(4));
    assert_eq!(
        web.actions.lists.up,
        ["digitalocean_create_droplet", "health_check_tcp"]
    );
    assert!(web.actions.params.contains_key("health_check_tcp"));

    let worker = &config.groups[1];
    assert_eq!(worker.interval, Duration::from_secs(60));
    assert!(matches!(
        worker.rules[0].kind,
        RuleKind::Threshold {
            change: Change::Percent(50),
            ..
        }
    ));
    assert_eq!(worker.protect_tag, "do-scaler-protect");
}

#[test]
fn command_line_overrides_replace_the_base_file() {
    let overrides = Overrides {
        api_url: Some("http://127.0.0.1:4321/".into()),
        state: Some(PathBuf::from("/tmp/state.db")),
        listen: Some("127.0.0.1:0".parse().unwrap()),
    };
    let config = load(&example(), &overrides).unwrap().config;
    assert_eq!(config.base.api_url, "http://127.0.0.1:4321");
    assert_eq!(
        config.base.state,
        do_scaler::state::Location::File(PathBuf::from("/tmp/state.db"))
    );
    assert_eq!(config.base.status_api.listen.port(), 0);
}

#[test]
fn plain_http_to_a_remote_api_is_refused() {
    let overrides = Overrides {
        api_url: Some("http://api.example.com".into()),
        ..Overrides::default()
    };
    let error = load(&example(), &overrides).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("token would cross the network unencrypted"),
        "{error}"
    );
}

#[test]
fn defaults_fill_a_minimal_group() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("do-scaler.toml"), "").unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    std::fs::write(
        dir.path().join("conf.d/api.toml"),
        "tag = \"api\"\nmin = 0\nmax = 3\n[droplet]\nregion = \"fra1\"\nsize = \"s-1vcpu-1gb\"\nimage = 12345\nssh_keys = [1, \"aa:bb\"]\n",
    )
    .unwrap();
    let loaded = load(&dir.path().join("do-scaler.toml"), &Overrides::default()).unwrap();
    let group = &loaded.config.groups[0];
    assert_eq!(group.template.name_prefix, "api");
    assert_eq!(group.template.image, Image::Id(12345));
    assert_eq!(group.interval, Duration::from_secs(30));
    assert_eq!(group.cooldown.up, Duration::from_secs(120));
    assert_eq!(group.stabilization.down, Duration::from_secs(300));
    assert_eq!(group.scale_in.choose, ScaleInChoice::Newest);
    assert!(group.template.monitoring);
    assert_eq!(
        loaded.config.base.state,
        do_scaler::state::Location::File(PathBuf::from("/var/lib/do-scaler/state.db"))
    );
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.message.contains("no [[rule]]")),
        "a group without rules deserves a warning"
    );
}

#[test]
fn the_default_spend_guard_follows_the_largest_max_a_schedule_allows() {
    let group = do_scaler::config::group_from_toml(
        "batch",
        "tag = \"batch\"\nmin = 1\nmax = 4\n[droplet]\nregion = \"nyc3\"\nsize = \"s-1vcpu-1gb\"\nimage = \"ubuntu-24-04-x64\"\n[[schedule]]\ncron = \"0 1 * * *\"\nduration = \"2h\"\nmax = 30\n",
    )
    .unwrap();
    assert_eq!(group.max_creates_per_hour, 60);
}

#[test]
fn a_state_url_with_a_password_or_another_scheme_is_refused_and_the_password_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("do-scaler.toml"),
        "interval = \"10s\"\nstate = \"postgres://scaler:hunter2@db.example.com/scaler\"\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    let error = load(&dir.path().join("do-scaler.toml"), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("do-scaler.toml:2:9"),
        "names the place: {error}"
    );
    assert!(
        error.contains("state `postgres://…` holds a password"),
        "{error}"
    );
    assert!(
        error.contains("postgres-password"),
        "says where it goes: {error}"
    );
    assert!(
        !error.contains("hunter2"),
        "never shows the password: {error}"
    );
    // Without a password it is the shared state; the lease must fit the intervals.
    std::fs::write(
        dir.path().join("do-scaler.toml"),
        "interval = \"10s\"\nstate = \"postgresql://scaler@db.example.com:25060/scaler?sslmode=require\"\n",
    )
    .unwrap();
    let loaded = load(&dir.path().join("do-scaler.toml"), &Overrides::default()).unwrap();
    assert!(matches!(
        loaded.config.base.state,
        do_scaler::state::Location::Postgres(_)
    ));
    let timings =
        do_scaler::config::load::lease_timings(&loaded.config.base, &loaded.config.groups);
    assert_eq!(timings.lease, Duration::from_secs(80), "2 × (10s + 30s)");
    let error = load(&with_lease(&dir, "20s"), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("lease: a lease of 20s is too short"),
        "{error}"
    );
    let overrides = Overrides {
        state: Some(PathBuf::from("sqlite:///var/lib/x.db")),
        ..Overrides::default()
    };
    let error = load(&example(), &overrides).unwrap_err().to_string();
    assert!(error.contains("--state: state `sqlite://…`"), "{error}");
    // A path with a colon in it is still a path.
    std::fs::write(
        dir.path().join("do-scaler.toml"),
        "state = \"data/state:1.db\"\n",
    )
    .unwrap();
    assert!(load(&dir.path().join("do-scaler.toml"), &Overrides::default()).is_ok());
}

/// A shared-state base file with `lease` and one group ticking every 10 s.
fn with_lease(dir: &tempfile::TempDir, lease: &str) -> PathBuf {
    let base = dir.path().join("do-scaler.toml");
    std::fs::write(
        &base,
        format!(
            "interval = \"10s\"\nlease = \"{lease}\"\nstate = \"postgres://scaler@db.example.com/scaler\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("conf.d/web.toml"),
        "tag = \"web\"\nmin = 1\nmax = 2\n[droplet]\nregion = \"nyc3\"\nsize = \"s-1vcpu-1gb\"\nimage = \"ubuntu-24-04-x64\"\n",
    )
    .unwrap();
    base
}
