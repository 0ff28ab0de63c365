//! Issue 22, part 2: `do-scaler replay` runs a group file's real decisions over a recording,
//! conserving the recorded work, and compares them with what the recorded group did. The
//! recording is made the way an operator makes one: a daemon with `[record]`, here on a fast
//! sim under a step of demand.

use do_scaler::quality;
use std::path::Path;
use std::process::Command;

fn replay(args: &[&str], files: &Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_do-scaler"))
        .arg("replay")
        .arg(files)
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn json(args: &[&str], files: &Path) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = replay(&all, files);
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn figure(report: &serde_json::Value, side: &str, name: &str) -> f64 {
    report[side][name]
        .as_f64()
        .unwrap_or_else(|| panic!("{side}.{name} in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_conserves_the_work_and_tells_configurations_apart() {
    let dir = tempfile::tempdir().unwrap();
    let play = dir.path().join("play");
    // 2.4 vCPUs for 3 minutes, then 14 for 27, on the shipped example.
    let trace = quality::step(3.0, 30.0);
    let example = &quality::controllers().unwrap()[0];
    quality::play_recorded(&trace, example, 150.0, &play, true)
        .await
        .unwrap();
    let recordings = play.join("recordings/web");

    // The recorded configuration, replayed: the same decisions on the same work, so about the
    // same size over time (boots and tick phases differ a little).
    let same = json(&[], &recordings);
    for side in ["recorded", "replayed"] {
        for name in [
            "scale_events",
            "droplet_hours",
            "minutes_above_target",
            "unserved_vcpu_minutes",
        ] {
            assert!(figure(&same, side, name) >= 0.0);
        }
    }
    assert_eq!(same["work_spread"], true, "{same}");
    assert!(same["ticks"].as_u64().unwrap() >= 50, "{same}");
    let (recorded, replayed) = (
        figure(&same, "recorded", "droplet_hours"),
        figure(&same, "replayed", "droplet_hours"),
    );
    assert!(
        (replayed / recorded - 1.0).abs() < 0.35,
        "the same configuration replays close to what it did: {same}"
    );
    assert!(figure(&same, "replayed", "scale_events") >= 2.0, "{same}");
    assert!(
        figure(&same, "recorded", "minutes_above_target") > 1.0,
        "the step overloads the group for a while: {same}"
    );

    // Twelve droplets from the start: more droplet-hours, never short of capacity.
    let example_file = play.join("conf.d/web.toml");
    let text = std::fs::read_to_string(&example_file).unwrap();
    let generous = dir.path().join("generous.toml");
    std::fs::write(&generous, text.replacen("min = 2", "min = 12", 1)).unwrap();
    let more = json(&["--config", generous.to_str().unwrap()], &recordings);
    assert!(
        figure(&more, "replayed", "droplet_hours") > recorded * 1.2,
        "{more}"
    );
    assert_eq!(
        figure(&more, "replayed", "unserved_vcpu_minutes"),
        0.0,
        "{more}"
    );
    assert!(
        figure(&more, "replayed", "minutes_above_target")
            < figure(&more, "recorded", "minutes_above_target"),
        "{more}"
    );

    // At most 3 droplets: the work that does not fit is unserved, which the recorded group
    // (which grew) did not leave.
    let stingy = dir.path().join("stingy.toml");
    std::fs::write(&stingy, text.replacen("max = 20", "max = 3", 1)).unwrap();
    let less = json(&["--config", stingy.to_str().unwrap()], &recordings);
    eprintln!("same: {same}\nmore: {more}\nless: {less}");
    assert!(
        figure(&less, "replayed", "unserved_vcpu_minutes")
            > figure(&less, "recorded", "unserved_vcpu_minutes") + 50.0,
        "14 vCPUs on 6 for 27 minutes: {less}"
    );
    assert!(
        figure(&less, "replayed", "droplet_hours") < recorded,
        "{less}"
    );

    // The report for people, and the chart.
    let chart = dir.path().join("replay.svg");
    let (code, stdout, stderr) = replay(&["--chart", chart.to_str().unwrap()], &recordings);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("unserved vCPU-minutes"), "{stdout}");
    assert!(stdout.contains("work spread"), "{stdout}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("replayed size"),
        "{svg:.200}"
    );

    // A bad group file: its place and nothing replayed.
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, text.replacen("target = 0.6", "target = -1", 1)).unwrap();
    let (code, stdout, stderr) = replay(&["--config", broken.to_str().unwrap()], &recordings);
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("broken.toml:") && stderr.contains("target must be a number above 0"),
        "{stderr}"
    );
    // The base file given where a group file belongs.
    let base = play.join("do-scaler.toml");
    let (code, _, stderr) = replay(&["--config", base.to_str().unwrap()], &recordings);
    assert_eq!(code, 1);
    assert!(stderr.contains("this is a base file"), "{stderr}");
    // Not a recording.
    let (code, _, stderr) = replay(&[], &broken);
    assert_eq!(code, 1);
    assert!(stderr.contains("not a do-scaler recording"), "{stderr}");
}
