//! Bad input on reload: twenty broken edits of group files and action scripts, each written
//! while the daemon serves. Every time the error is reported with the file at fault, the last
//! good generation keeps running (same generation, same rules, still ticking), and putting the
//! good file back clears the error without a new generation.

use do_scaler::sim::Demand;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::*;

const HELLO: &str = "log_info(\"hello from the up list\");\n";

fn good_group() -> String {
    format!("{GROUP}\n[actions]\nup = [\"hello\", \"digitalocean_create_droplet\"]\n")
}

/// One broken edit: which file, what it becomes (`None` removes it), and a fragment the
/// reported error must contain.
struct Broken {
    file: &'static str,
    content: Option<Vec<u8>>,
    says: &'static str,
}

fn group_edit(from: &str, to: &str, says: &'static str) -> Broken {
    let good = good_group();
    assert!(good.contains(from), "the good group has `{from}`");
    Broken {
        file: "conf.d/web.toml",
        content: Some(good.replacen(from, to, 1).into_bytes()),
        says,
    }
}

fn file(file: &'static str, content: &str, says: &'static str) -> Broken {
    Broken {
        file,
        content: Some(content.as_bytes().to_vec()),
        says,
    }
}

fn twenty_broken_edits() -> Vec<Broken> {
    let good = good_group();
    vec![
        // Group files.
        file(
            "conf.d/web.toml",
            &good[..good.len() / 3],
            "web.toml:9:4: unclosed table",
        ),
        group_edit("min = 1", "min = = 1", "web.toml:2"),
        group_edit("max = 5", "maxx = 5", "maxx"),
        group_edit("max = 5", "max = \"five\"", "web.toml:3"),
        group_edit("min = 1", "min = 9", "min"),
        group_edit("[3s]))'", "[3s])'", "unclosed left parenthesis"),
        group_edit("up = \"3s\"", "up = \"3 parsecs\"", "3 parsecs"),
        group_edit("\"hello\", ", "\"no_such_script\", ", "no_such_script"),
        group_edit(
            "tag = \"web\"",
            "tag = \"web\"\ninterval = \"100ms\"",
            "interval",
        ),
        group_edit("tag = \"web\"", "tag = \"has space\"", "tag"),
        group_edit("target = 0.5", "", "neither `target`, `when` nor `desired`"),
        group_edit(
            "[[rule]]",
            "[[schedule]]\ncron = \"61 * * * *\"\nduration = \"1h\"\nmax = 9\n[[rule]]",
            "cron",
        ),
        group_edit(
            "[[rule]]",
            "[[schedule]]\ncron = \"0 9 * * *\"\ntimezone = \"Mars/Olympus\"\nduration = \"1h\"\n[[rule]]",
            "Mars/Olympus",
        ),
        file("conf.d/web.toml", "", "web.toml:1:1: missing key `tag`"),
        // A second file claiming the same tag.
        file("conf.d/copy.toml", &good, "already the tag of group"),
        // Action scripts.
        file(
            "actions/hello.rhai",
            "let x = ;\n",
            "hello.rhai:1:9: script error",
        ),
        file(
            "actions/hello.rhai",
            "if true {\n  log_info(\"open\");\n",
            "hello.rhai:3:1: script error",
        ),
        Broken {
            file: "actions/hello.rhai",
            content: None,
            says: "unknown action `hello`",
        },
        file("actions/other.rhai", "fn (x) { x }\n", "other.rhai:1:4"),
        Broken {
            file: "actions/hello.rhai",
            content: Some(vec![0xff, 0xfe, b'l', b'o', b'g', 0x80, b'\n']),
            says: "hello.rhai:1:1: cannot read this script",
        },
    ]
}

/// Writes `content` to `path` as an editor would: a new file renamed over the old one.
fn write(path: &Path, content: &[u8]) {
    let temp = path.with_extension("swp");
    std::fs::write(&temp, content).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_broken_edits_of_group_files_and_scripts_keep_the_last_good_generation() {
    let sim = sim(1, Demand::Constant(1.0), Duration::from_millis(300)).await;
    let dir = config_dir(&good_group());
    std::fs::write(dir.path().join("actions/hello.rhai"), HELLO).unwrap();
    let daemon = daemon(dir.path(), &sim).await.unwrap();
    let running = serve_daemon(daemon.clone()).await;
    let generation = daemon.generation().number;
    let ticks = || daemon.group_status("web").map_or(0, |s| s.ticks);
    // The watcher is set up as the status API starts serving: one answer means it is there.
    get(&format!("{}/api/v1/groups/web", running.url)).await;
    eventually(Duration::from_secs(5), "the first tick", || ticks() > 0).await;
    let edits = twenty_broken_edits();
    assert_eq!(edits.len(), 20);
    for (index, edit) in edits.iter().enumerate() {
        let path = dir.path().join(edit.file);
        let before = std::fs::read(&path).ok();
        match &edit.content {
            Some(content) => write(&path, content),
            None => std::fs::remove_file(&path).unwrap(),
        }
        let started = Instant::now();
        let error = loop {
            let error = daemon.reload_error.lock().unwrap().clone();
            if let Some(error) = error {
                break error;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "edit {index} ({}) was not reported",
                edit.file
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            error.contains(edit.says),
            "edit {index} ({}): the error should say `{}`:\n{error}",
            edit.file,
            edit.says
        );
        let status = get(&format!("{}/api/v1/groups/web", running.url)).await;
        assert_eq!(
            status["reload_error"].as_str(),
            Some(error.as_str()),
            "edit {index}: the status shows it"
        );
        assert!(
            daemon
                .metrics
                .render()
                .contains("do_scaler_config_last_reload_success 0"),
            "edit {index}: the metric shows it"
        );
        assert_eq!(
            daemon.generation().number,
            generation,
            "edit {index}: the last good generation keeps running"
        );
        assert_eq!(daemon.generation().config.groups[0].max, 5);
        let from = ticks();
        eventually(
            Duration::from_secs(5),
            &format!("edit {index}: ticks go on"),
            || ticks() > from,
        )
        .await;
        // Put the good file back: the error clears, and nothing new is started.
        match before {
            Some(content) => write(&path, &content),
            None => std::fs::remove_file(&path).unwrap(),
        }
        eventually(
            Duration::from_secs(5),
            &format!("edit {index}: the error to clear"),
            || daemon.reload_error.lock().unwrap().is_none(),
        )
        .await;
        assert_eq!(daemon.generation().number, generation);
    }
    running.stop().await;
}

/// Trust at the edges (2): reading the configuration is not changing it. A hundred reads of
/// every watched file start no reload; one saved edit starts exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_start_no_reload_and_one_edit_starts_exactly_one() {
    let sim = sim(1, Demand::Constant(1.0), Duration::from_millis(300)).await;
    let dir = config_dir(&good_group());
    std::fs::write(dir.path().join("actions/hello.rhai"), HELLO).unwrap();
    let daemon = daemon(dir.path(), &sim).await.unwrap();
    let running = serve_daemon(daemon.clone()).await;
    get(&format!("{}/api/v1/groups/web", running.url)).await;
    let reloaded_at = || {
        metric(
            &daemon.metrics.render(),
            "do_scaler_config_last_reload_timestamp_seconds",
        )
    };
    let generation = || metric(&daemon.metrics.render(), "do_scaler_config_generation");
    let before = (reloaded_at(), generation());
    let watched = [
        "do-scaler.toml",
        "conf.d/web.toml",
        "actions/hello.rhai",
        "api-token",
    ];
    for _ in 0..100 {
        for file in watched {
            let _ = std::fs::read(dir.path().join(file)).unwrap();
        }
    }
    // Absence can only be shown by waiting: longer than a debounce plus a settle time.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        (reloaded_at(), generation()),
        before,
        "reads started a reload"
    );
    assert!(daemon.reload_error.lock().unwrap().is_none());

    let edited = good_group().replace("max = 5", "max = 6");
    write(&dir.path().join("conf.d/web.toml"), edited.as_bytes());
    eventually(Duration::from_secs(5), "the edit to load", || {
        generation() == before.1.map(|g| g + 1.0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        generation(),
        before.1.map(|g| g + 1.0),
        "one edit, one reload"
    );
    assert_eq!(daemon.generation().config.groups[0].max, 6);
    running.stop().await;
}

/// Trust at the edges (2): a file written in two pieces with a pause, whose first piece reads
/// `max = 1`, is never loaded half-written, so nothing is destroyed for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_in_pieces_is_loaded_only_once_it_has_settled() {
    use std::io::Write;
    let sim = sim(3, Demand::Constant(1.5), Duration::from_millis(300)).await;
    // Only root keys with inline tables, `max` last: the first piece is a whole, valid file
    // with `max = 1`.
    let head = r#"tag = "web"
min = 1
warmup = "0s"
droplet = { region = "nyc3", size = "s-2vcpu-4gb", image = "ubuntu-24-04-x64" }
cooldown = { up = "3s", down = "1s" }
stabilization = { down = "0s" }
scale_in = { min_age = "0s" }
"#;
    let group = format!("{head}max = 1");
    let full = format!("{group}2\n");
    let dir = config_dir(&format!("{full}# before the edit\n"));
    let options = do_scaler::daemon::RunOptions::new(Duration::from_secs(20));
    let daemon = daemon_with_options(dir.path(), &sim, options)
        .await
        .unwrap();
    let running = serve_daemon(daemon.clone()).await;
    get(&format!("{}/api/v1/groups/web", running.url)).await;
    let generation = daemon.generation().number;
    eventually(Duration::from_secs(5), "the first tick", || {
        daemon.group_status("web").is_some_and(|s| s.ticks > 0)
    })
    .await;
    let path = dir.path().join("conf.d/web.toml");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.write_all(group.as_bytes()).unwrap();
    file.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    file.write_all(b"2\n").unwrap();
    drop(file);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), full);
    eventually(Duration::from_secs(6), "the whole file to load", || {
        daemon.generation().number == generation + 1
    })
    .await;
    assert_eq!(daemon.generation().config.groups[0].max, 12);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(daemon.generation().number, generation + 1, "loaded once");
    assert_eq!(sim.droplets().len(), 3, "nothing destroyed");
    assert!(!sim.api_counts().keys().any(|k| k.starts_with("DELETE")));
    running.stop().await;
}

/// Trust at the edges (2): every file a generation is built from is watched (user data, the
/// base file's defaults), and keys that need a restart are refused on reload with the key's
/// name, the last good generation running on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_input_is_watched_and_restart_only_keys_are_refused() {
    let sim = sim(1, Demand::Constant(1.0), Duration::from_millis(300)).await;
    // No interval of its own: the base file's applies.
    let group = GROUP.replace(
        "image = \"ubuntu-24-04-x64\"\n",
        "image = \"ubuntu-24-04-x64\"\nuser_data_file = \"cloud-init.yaml\"\n",
    );
    let dir = config_dir(&group);
    std::fs::write(dir.path().join("cloud-init.yaml"), "#cloud-config\n# one\n").unwrap();
    let daemon = daemon(dir.path(), &sim).await.unwrap();
    let running = serve_daemon(daemon.clone()).await;
    get(&format!("{}/api/v1/groups/web", running.url)).await;
    let number = || daemon.generation().number;
    let user_data = || {
        daemon.generation().config.groups[0]
            .template
            .user_data
            .clone()
    };

    let first = number();
    write(
        &dir.path().join("cloud-init.yaml"),
        b"#cloud-config\n# two\n",
    );
    eventually(Duration::from_secs(5), "the user data edit to load", || {
        number() == first + 1
    })
    .await;
    assert!(user_data().unwrap().contains("# two"));

    let base = dir.path().join("do-scaler.toml");
    let text = std::fs::read_to_string(&base).unwrap();
    write(
        &base,
        text.replace("interval = \"1s\"", "interval = \"2s\"")
            .as_bytes(),
    );
    eventually(
        Duration::from_secs(5),
        "the base interval edit to load",
        || number() == first + 2,
    )
    .await;
    assert_eq!(
        daemon.generation().config.groups[0].interval,
        Duration::from_secs(2)
    );

    for (edit, key) in [
        ("instance = \"other\"\n", "instance"),
        ("state = \"elsewhere.db\"\n", "state"),
    ] {
        let current = std::fs::read_to_string(&base).unwrap();
        let changed = if key == "state" {
            current.replace("state = \"state.db\"\n", edit)
        } else {
            format!("{edit}{current}")
        };
        write(&base, changed.as_bytes());
        eventually(
            Duration::from_secs(5),
            &format!("{key} to be refused"),
            || {
                daemon
                    .reload_error
                    .lock()
                    .unwrap()
                    .as_deref()
                    .is_some_and(|e| e.contains(key) && e.contains("restart"))
            },
        )
        .await;
        assert_eq!(number(), first + 2, "the last good generation runs on");
        write(&base, current.as_bytes());
        eventually(Duration::from_secs(5), "the error to clear", || {
            daemon.reload_error.lock().unwrap().is_none()
        })
        .await;
    }
    running.stop().await;
}

/// Trust at the edges (1): a FIFO or a link to /dev/zero named like a group file is refused
/// without blocking: the status API answers, ticks go on, and the next reload answers too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_or_device_in_conf_d_blocks_neither_reloads_nor_ticks() {
    let sim = sim(1, Demand::Constant(1.0), Duration::from_millis(300)).await;
    let dir = config_dir(GROUP);
    let daemon = daemon(dir.path(), &sim).await.unwrap();
    let running = serve_daemon(daemon.clone()).await;
    get(&format!("{}/api/v1/groups/web", running.url)).await;
    let fifo = dir.path().join("conf.d/evil.toml");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("conf.d/zero.toml")).unwrap();
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            client
                .post(format!("{}/api/v1/reload", running.url))
                .bearer_auth(API_TOKEN)
                .send(),
        )
        .await
        .expect("the reload answers")
        .unwrap();
        assert_eq!(answer.status(), 422);
        let text = answer.text().await.unwrap();
        assert!(
            text.contains("FIFO") && text.contains("character device"),
            "{text}"
        );
        let health = tokio::time::timeout(
            Duration::from_secs(2),
            client.get(format!("{}/healthz", running.url)).send(),
        )
        .await
        .expect("healthz answers")
        .unwrap();
        assert_eq!(health.status(), 200);
    }
    let ticks = daemon.group_status("web").unwrap().ticks;
    eventually(Duration::from_secs(5), "ticks to go on", || {
        daemon.group_status("web").unwrap().ticks > ticks
    })
    .await;
    running.stop().await;
}

/// Copies a folder tree.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Trust at the edges (2): the original tool's layout is watched too: an edit of its group
/// `.cfg`, of a JSON policy or of the base `.cfg` each reloads once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_of_the_old_tools_files_reload() {
    let sim = sim(2, Demand::Constant(1.0), Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/legacy"),
        dir.path(),
    );
    let token = sim.token().to_string();
    let daemon = do_scaler::daemon::run::prepare(
        dir.path().join("do-scaler.cfg"),
        do_scaler::config::Overrides {
            api_url: Some(sim.api_url()),
            state: Some(dir.path().join("state.db")),
            listen: None,
        },
        std::sync::Arc::new(move |name: &str| {
            (name == "DIGITALOCEAN_TOKEN").then(|| token.clone())
        }),
        std::sync::Arc::new(do_scaler::clock::SystemClock),
        do_scaler::daemon::RunOptions {
            settle: Duration::from_millis(300),
            dry_run: true,
            ..do_scaler::daemon::RunOptions::new(Duration::from_secs(20))
        },
    )
    .await
    .unwrap();
    let running = serve_daemon(daemon.clone()).await;
    get(&format!("{}/api/v1/groups/web", running.url)).await;
    let start = daemon.generation().number;
    let edits: [(&str, &str, &str); 3] = [
        ("conf.d/web.cfg", "max = 8", "max = 6"),
        ("conf.d/policies/loadavg.json", "", ""),
        ("do-scaler.cfg", "interval = 30", "interval = 20"),
    ];
    for (index, (file, from, to)) in edits.iter().enumerate() {
        let path = dir.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let edited = if from.is_empty() {
            // A policy: change its threshold number, whatever it is, by appending a digit.
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            let mut value = value;
            let threshold = &mut value["conditions"][0]["threshold"];
            *threshold = match threshold.as_f64() {
                Some(n) => (n + 1.0).into(),
                None => threshold
                    .as_str()
                    .and_then(|t| t.parse::<f64>().ok())
                    .map(|n| (n + 1.0).to_string().into())
                    .unwrap_or_else(|| "1".into()),
            };
            serde_json::to_string_pretty(&value).unwrap()
        } else {
            assert!(text.contains(from), "{file} has `{from}`");
            text.replace(from, to)
        };
        write(&path, edited.as_bytes());
        let expected = start + index as u64 + 1;
        eventually(
            Duration::from_secs(5),
            &format!("the edit of {file} to load"),
            || daemon.generation().number == expected,
        )
        .await;
        assert!(daemon.reload_error.lock().unwrap().is_none());
    }
    assert_eq!(daemon.generation().config.groups[0].max, 6);
    assert_eq!(
        daemon.generation().config.base.interval,
        Duration::from_secs(20)
    );
    running.stop().await;
}
