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
        group_edit("target = 0.5", "", "neither `target` nor `when`"),
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
