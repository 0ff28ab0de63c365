//! Crash safety: the binary is killed at each named failpoint (`DO_SCALER_FAILPOINT`) during a
//! scale-up, a scale-down, a paginated listing and a restart's reconciliation, then restarted.
//! After the restart no journal row is unsettled, the sim accepted each droplet name once, and
//! the group is at the size the restart decided. The README's list of points, the product's
//! `POINTS` and the points these tests reached are one set.

use do_scaler::sim::{Demand, Sim};
use do_scaler::state::{Journal, Store};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

mod common;
use common::*;

/// What the group looks like when the killed run starts.
#[derive(Clone, Copy, Debug)]
enum Scenario {
    /// No droplets, `min = 3`: one create of three.
    ScaleUp,
    /// No droplets, `min = 12`: two create calls (ten names per call).
    ScaleUpInChunks,
    /// Five managed droplets, `max = 2`: three deletes.
    ScaleDown,
    /// 205 managed droplets, `max = 203`: the listing takes two pages, then two deletes.
    TwoPages,
    /// A scale-up killed after its journal write, then a restart killed while reconciling.
    Reconcile,
    /// Five managed droplets, `max = 2`, `[drain]` without busy: three drain, then go.
    Drain,
    /// Three managed droplets at `max = 3`, one unhealthy (`[health]`, one failed tick is
    /// enough): its replacement launches, passes, and the unhealthy one goes.
    Replace,
    /// As `Replace`, killed on the run after the launch (when the replacement passes).
    ReplaceRetire,
    /// As `Replace`, with a load balancer action after the create whose balancer does not
    /// exist yet: the launch run fails after making its droplet, and the replacement is
    /// abandoned (the balancer exists for the restarts).
    ReplaceBroken,
}

/// The load balancer of `Scenario::ReplaceBroken`.
const LB: &str = "4de7ac8b-495b-4884-9a69-1050c6793cd6";

/// Three droplets wanted; one failed health check makes a droplet unhealthy.
const REPLACE_GROUP: &str = r#"tag = "web"
min = 1
max = 3
warmup = "0s"
[droplet]
region = "nyc3"
size = "s-2vcpu-4gb"
image = "ubuntu-24-04-x64"
[health]
unhealthy_after = 1
grace = "0s"
[[rule]]
name = "wanted"
desired = '3'
"#;

/// Every failpoint with the scenario that reaches it.
const CASES: &[(&str, Scenario)] = &[
    ("list.between_pages", Scenario::TwoPages),
    ("tick.after_list", Scenario::ScaleUp),
    ("tick.after_scrape", Scenario::ScaleDown),
    ("decision.before_record", Scenario::ScaleUp),
    ("decision.after_record", Scenario::ScaleDown),
    ("action.before_run", Scenario::ScaleUp),
    ("create.before_journal", Scenario::ScaleUp),
    ("create.after_journal", Scenario::ScaleUp),
    ("create.answer_unread", Scenario::ScaleUp),
    ("create.after_answer", Scenario::ScaleUp),
    ("create.between_chunks", Scenario::ScaleUpInChunks),
    ("create.after_settle", Scenario::ScaleUp),
    ("destroy.before_journal", Scenario::ScaleDown),
    ("destroy.after_journal", Scenario::ScaleDown),
    ("destroy.between_deletes", Scenario::ScaleDown),
    ("destroy.after_deletes", Scenario::ScaleDown),
    ("destroy.after_settle", Scenario::ScaleDown),
    ("drain.before_journal", Scenario::Drain),
    ("drain.after_journal", Scenario::Drain),
    ("replace.before_journal", Scenario::Replace),
    ("replace.after_journal", Scenario::Replace),
    ("replace.before_retire", Scenario::ReplaceRetire),
    ("replace.after_retire", Scenario::ReplaceRetire),
    ("replace.before_abandon", Scenario::ReplaceBroken),
    ("action.after_run", Scenario::ScaleDown),
    ("memory.before_save", Scenario::ScaleUp),
    ("reconcile.before_settle", Scenario::Reconcile),
];

impl Scenario {
    fn seeded(self) -> u32 {
        match self {
            Scenario::ScaleUp | Scenario::ScaleUpInChunks | Scenario::Reconcile => 0,
            Scenario::ScaleDown | Scenario::Drain => 5,
            Scenario::TwoPages => 205,
            Scenario::Replace | Scenario::ReplaceRetire | Scenario::ReplaceBroken => 3,
        }
    }

    fn replaces(self) -> bool {
        matches!(
            self,
            Scenario::Replace | Scenario::ReplaceRetire | Scenario::ReplaceBroken
        )
    }

    /// How long a new droplet boots: a replacement must boot to pass; the others never need
    /// theirs to.
    fn boot(self) -> Duration {
        if self.replaces() {
            Duration::ZERO
        } else {
            Duration::from_secs(3600)
        }
    }

    /// Unarmed runs after the killed one (each `run --once` is one tick and one step).
    fn restarts(self) -> usize {
        match self {
            Scenario::Drain => 2,
            // Killed after the journal: one run calls the unmade replacement off, the next
            // launches again, one retires, one settles.
            Scenario::Replace | Scenario::ReplaceRetire | Scenario::ReplaceBroken => 4,
            _ => 1,
        }
    }

    fn group(self) -> String {
        match self {
            Scenario::ScaleUp | Scenario::Reconcile => GROUP.replace("min = 1", "min = 3"),
            Scenario::ScaleUpInChunks => GROUP
                .replace("min = 1", "min = 12")
                .replace("max = 5", "max = 15"),
            Scenario::ScaleDown => GROUP.replace("max = 5", "max = 2"),
            Scenario::Drain => format!(
                "{}[drain]\ntimeout = \"5m\"\n",
                GROUP.replace("max = 5", "max = 2")
            ),
            Scenario::TwoPages => GROUP.replace("max = 5", "max = 203"),
            Scenario::Replace | Scenario::ReplaceRetire => REPLACE_GROUP.to_string(),
            Scenario::ReplaceBroken => format!(
                "{REPLACE_GROUP}[actions]\nup = [\"digitalocean_create_droplet\", \"digitalocean_load_balancer\"]\n[actions.params.digitalocean_load_balancer]\nload_balancer_id = \"{LB}\"\n"
            ),
        }
    }

    /// The size the group must end at.
    fn expected(self) -> usize {
        match self {
            Scenario::ScaleUp | Scenario::Reconcile => 3,
            Scenario::ScaleUpInChunks => 12,
            Scenario::ScaleDown | Scenario::Drain => 2,
            Scenario::TwoPages => 203,
            Scenario::Replace | Scenario::ReplaceRetire | Scenario::ReplaceBroken => 3,
        }
    }
}

/// Runs the binary with `point` armed and checks it died there, at once, like a kill -9.
fn run_killed(dir: &Path, sim: &Sim, point: &str) {
    let killed = run_binary(dir, &sim.api_url(), sim.token(), Some(point));
    let stderr = String::from_utf8_lossy(&killed.stderr);
    assert!(
        stderr.contains(&format!("FAILPOINT {point}: exiting")),
        "{point}: the run did not reach its point:\n{stderr}"
    );
    assert_eq!(killed.status.code(), Some(137), "{point}:\n{stderr}");
}

/// Kills a run at `point`, restarts, and checks what a user would: nothing left half done,
/// nothing created twice, the group at the restart's desired size. Returns the point reached.
async fn kill_and_restart(point: &'static str, scenario: Scenario) -> &'static str {
    let sim = sim(scenario.seeded(), Demand::Constant(0.5), scenario.boot()).await;
    let original: BTreeSet<u64> = sim.droplets().iter().map(|d| d.id).collect();
    let sick = original.iter().next().copied();
    if scenario.replaces() {
        assert!(sim.set_healthy(sick.unwrap(), false));
    }
    let dir = config_dir(&scenario.group());
    let path = dir.path().to_path_buf();
    let sim = std::sync::Arc::new(sim);
    let for_runs = sim.clone();
    tokio::task::spawn_blocking(move || {
        if let Scenario::Reconcile = scenario {
            run_killed(&path, &for_runs, "create.after_journal");
            let store = Store::open(&path.join("state.db")).unwrap();
            assert_eq!(store.pending().unwrap().len(), 1, "the create is unsettled");
        }
        if let Scenario::ReplaceRetire = scenario {
            let launched = run_binary(&path, &for_runs.api_url(), for_runs.token(), None);
            assert!(launched.status.success(), "{point}: the launch run failed");
            assert_eq!(
                for_runs.created_names().len(),
                1,
                "{point}: the replacement launched"
            );
        }
        run_killed(&path, &for_runs, point);
        if let Scenario::ReplaceBroken = scenario {
            for_runs.add_load_balancer(do_scaler::sim::api::new_load_balancer(LB, "lb"));
        }
        for _ in 0..scenario.restarts() {
            let restarted = run_binary(&path, &for_runs.api_url(), for_runs.token(), None);
            assert!(
                restarted.status.success(),
                "{point}: the restart failed:\n{}",
                String::from_utf8_lossy(&restarted.stderr)
            );
        }
    })
    .await
    .unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    assert_eq!(
        store.pending().unwrap(),
        vec![],
        "{point}: a journal row is unsettled after the restart"
    );
    let names = sim.created_names();
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(
        unique.len(),
        names.len(),
        "{point}: a name was created twice: {names:?}"
    );
    let decided = &store.decisions("web", 1).unwrap()[0];
    let desired = decided["desired"].as_u64().unwrap() as usize;
    assert_eq!(desired, scenario.expected(), "{point}: {decided}");
    assert_eq!(
        sim.droplets().len(),
        desired,
        "{point}: the group is not at the restart's desired size"
    );
    if scenario.replaces() {
        let now: BTreeSet<u64> = sim.droplets().iter().map(|d| d.id).collect();
        let sick = sick.unwrap();
        assert!(
            !now.contains(&sick),
            "{point}: the unhealthy droplet stayed"
        );
        assert!(
            original.iter().all(|id| *id == sick || now.contains(id)),
            "{point}: a healthy droplet went: {original:?} → {now:?}"
        );
        assert!(
            store.replacements("web").unwrap().is_empty(),
            "{point}: a replacement is still open"
        );
    }
    point
}

/// The failpoint names the README lists under "Crash points".
fn readme_points() -> BTreeSet<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("\n### Crash points")
        .nth(1)
        .expect("the README has a `### Crash points` section");
    let section = section.split("\n#").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|line| line.strip_prefix("- `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_every_failpoint_then_a_restart_leaves_nothing_half_done() {
    let product: BTreeSet<String> = do_scaler::failpoint::POINTS
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(product.len(), 27, "twenty-seven named points");
    assert_eq!(
        readme_points(),
        product,
        "README's list vs the product's POINTS"
    );
    let mut reached = BTreeSet::new();
    // Two at a time: each case is its own sim and state directory.
    for pair in CASES.chunks(2) {
        let runs: Vec<_> = pair
            .iter()
            .map(|(point, scenario)| tokio::spawn(kill_and_restart(point, *scenario)))
            .collect();
        for run in runs {
            reached.insert(run.await.unwrap().to_string());
        }
    }
    assert_eq!(reached, product, "the points the tests reached vs POINTS");
}

/// The binary serving (not `--once`), with `point` armed if given.
fn serve_binary(dir: &Path, sim: &Sim, point: Option<&str>) -> std::process::Child {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_do-scaler"));
    command
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.join("do-scaler.toml"))
        .env("DIGITALOCEAN_API_URL", sim.api_url())
        .env("DIGITALOCEAN_TOKEN", sim.token())
        .env_remove("DO_SCALER_FAILPOINT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(point) = point {
        // Only the killed run's stderr is read (for its marker line).
        command
            .env("DO_SCALER_FAILPOINT", point)
            .stderr(std::process::Stdio::piped());
    }
    command.spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_daemon_killed_mid_scale_converges_after_a_restart() {
    // Points on the serving path (the group task records decisions and saves memory itself).
    for (point, scenario) in [
        ("decision.after_record", Scenario::ScaleUp),
        ("create.answer_unread", Scenario::ScaleUp),
        ("memory.before_save", Scenario::ScaleDown),
        ("destroy.between_deletes", Scenario::ScaleDown),
    ] {
        let sim = std::sync::Arc::new(
            sim(
                scenario.seeded(),
                Demand::Constant(0.5),
                Duration::from_secs(3600),
            )
            .await,
        );
        let dir = config_dir(&scenario.group());
        let path = dir.path().to_path_buf();
        let for_run = sim.clone();
        let killed = tokio::task::spawn_blocking(move || {
            serve_binary(&path, &for_run, Some(point))
                .wait_with_output()
                .unwrap()
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&killed.stderr);
        assert!(
            stderr.contains(&format!("FAILPOINT {point}: exiting")),
            "{point}: {stderr}"
        );
        assert_eq!(killed.status.code(), Some(137), "{point}");
        let decisions = |dir: &Path| {
            Store::open_read_only(&dir.join("state.db"))
                .and_then(|s| s.decisions("web", 1000))
                .map_or(0, |d| d.len())
        };
        let before = decisions(dir.path());
        let mut restarted = serve_binary(dir.path(), &sim, None);
        // Two ticks recorded: the daemon is serving (and handles SIGTERM) by then.
        eventually(Duration::from_secs(20), "the group at its size", || {
            sim.droplets().len() == scenario.expected() && decisions(dir.path()) >= before + 2
        })
        .await;
        // A clean stop (SIGTERM), as systemd does.
        // SAFETY: kill only sends a signal to the child this test started.
        unsafe { libc::kill(restarted.id() as i32, libc::SIGTERM) };
        let stopped = tokio::task::spawn_blocking(move || restarted.wait().unwrap())
            .await
            .unwrap();
        assert!(
            stopped.success(),
            "{point}: the restarted daemon stopped with {stopped}"
        );
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        assert!(
            store.pending().unwrap().is_empty(),
            "{point}: unsettled rows"
        );
        let names = sim.created_names();
        let unique: BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{point}: {names:?}");
        assert_eq!(sim.droplets().len(), scenario.expected(), "{point}");
    }
}
