//! The status web page in a real headless browser (Debian's `chromium`, spoken to over the
//! DevTools protocol): it renders without errors, follows a scale event on its own, and a
//! pause without the token is refused by the daemon while one with it is carried out.

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::{Browser, chromium};
use common::{API_TOKEN, config_dir, daemon, eventually, serve_daemon, sim};
use do_scaler::sim::Demand;
use std::time::Duration;

/// One 2-vCPU droplet, a CPU rule over 5 s, reads open so the page shows without a token.
const GROUP: &str = r#"tag = "web"
min = 1
max = 4
warmup = "0s"
[droplet]
region = "nyc3"
size = "s-2vcpu-4gb"
image = "ubuntu-24-04-x64"
[cooldown]
up = "2s"
down = "60s"
[scale_in]
min_age = "0s"
[[rule]]
name = "cpu"
expr = '1 - avg(rate(node_cpu_seconds_total{mode="idle"}[5s]))'
target = 0.5
"#;

/// The group's interval in this test: the page must follow within two of them.
const INTERVAL: Duration = Duration::from_secs(2);

/// Runs blocking browser work without stalling the daemon's tasks on this worker.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

/// A JavaScript expression: the text of `selector` in the `web` group's section.
fn text_of(selector: &str) -> String {
    format!("((document.querySelector('#group-web {selector}') || {{}}).textContent || '')")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_a_scale_event_and_a_pause_needs_the_token() {
    let Some(binary) = chromium() else {
        common::skip_unless_ci("chromium (a headless browser)", "apt-get install chromium");
        return;
    };
    // A fifth of one droplet's CPU: the group stays at 1 until the demand rises.
    let sim = sim(1, Demand::Constant(0.4), Duration::from_millis(500)).await;
    let dir = config_dir(GROUP);
    std::fs::write(
        dir.path().join("do-scaler.toml"),
        format!(
            "interval = \"{}s\"\nstate = \"state.db\"\nlisting_lag = \"0s\"\n[status_api]\ntoken_file = \"api-token\"\nopen_reads = true\n",
            INTERVAL.as_secs()
        ),
    )
    .unwrap();
    let daemon = daemon(dir.path(), &sim).await.unwrap();
    // Paused from the start, so the size the page must show holds still while it is checked.
    daemon.store.set_paused("web", true).unwrap();
    let running = serve_daemon(daemon.clone()).await;
    let size = |daemon: &do_scaler::daemon::run::Daemon| {
        daemon
            .group_status("web")
            .and_then(|s| s.last_decision)
            .and_then(|d| d["current"].as_u64())
    };
    eventually(Duration::from_secs(30), "a first decision", || {
        size(&daemon).is_some()
    })
    .await;

    let url = running.url.clone();
    let mut page = blocking(|| {
        let mut page = Browser::start(&binary);
        page.navigate(&url);
        page
    });
    // The page draws the group: its size, bounds, pause, chart, droplets and last decision.
    let shown = blocking(|| {
        page.wait_for(
            &format!("{} === '1'", text_of(".size")),
            Duration::from_secs(20),
        )
    });
    assert!(
        shown.is_some(),
        "the page never showed size 1: {}",
        blocking(|| page.eval("document.body.innerText"))
    );
    assert_eq!(blocking(|| page.eval(&text_of(".bounds"))), "1..4");
    assert_eq!(blocking(|| page.eval(&text_of(".paused-state"))), "yes");
    assert_eq!(
        blocking(
            || page.eval("document.querySelectorAll('#group-web svg.chart path.current').length")
        ),
        1,
        "the day's size chart"
    );
    assert_eq!(
        blocking(|| page.eval("document.querySelectorAll('#group-web tr[data-droplet]').length")),
        1,
        "one droplet row"
    );
    assert!(
        blocking(|| page.eval(&text_of(".last-decision")))
            .as_str()
            .is_some_and(|s| !s.is_empty() && s != "no decision yet"),
        "the last decision and why"
    );

    // Without the token, neither resume nor pause is carried out: the daemon refuses, the
    // page says so.
    for (button, paused) in [("resume", true), ("pause", false)] {
        if !paused {
            // Resumed with the token, then the token forgotten.
            blocking(|| {
                page.eval(&format!(
                    "document.getElementById('token').value = '{API_TOKEN}'; document.getElementById('use-token').click()"
                ))
            });
            blocking(|| {
                page.wait_for(
                    &format!("{} === 'yes'", text_of(".paused-state")),
                    Duration::from_secs(5),
                )
            });
            blocking(|| page.eval("document.querySelector('#group-web button.resume').click()"));
            let resumed = blocking(|| {
                page.wait_for(
                    &format!("{} === 'no'", text_of(".paused-state")),
                    Duration::from_secs(10),
                )
            });
            assert!(resumed.is_some(), "the page never showed the resume");
            assert!(!daemon.store.is_paused("web"));
            blocking(|| page.eval("document.getElementById('forget-token').click()"));
            blocking(|| {
                page.wait_for(
                    "document.getElementById('token-state').textContent === 'no token'",
                    Duration::from_secs(5),
                )
            });
        }
        blocking(|| {
            page.eval(&format!(
                "document.querySelector('#group-web button.{button}').click()"
            ))
        });
        let refused = blocking(|| {
            page.wait_for(
                &format!("{}.startsWith('Refused: to {button}')", text_of(".notice")),
                Duration::from_secs(10),
            )
        });
        assert!(
            refused.is_some(),
            "{button} without the token: no refusal shown: {}",
            blocking(|| page.eval(&text_of(".notice")))
        );
        assert_eq!(
            daemon.store.is_paused("web"),
            paused,
            "{button} was refused"
        );
    }
    let refusals = blocking(|| page.errors());
    assert!(
        refusals.len() == 2 && refusals.iter().all(|e| e.contains("401")),
        "only the two refusals are errors: {refusals:#?}"
    );
    let expected_errors = refusals.len();

    // A scale event: the page shows the new size within two intervals, without a reload.
    let before = size(&daemon).unwrap();
    sim.set_demand(Demand::Constant(6.0));
    eventually(Duration::from_secs(60), "a scale-up", || {
        size(&daemon).is_some_and(|s| s > before)
    })
    .await;
    let new_size = size(&daemon).unwrap();
    let followed = blocking(|| {
        page.wait_for(
            &format!("Number({}) >= {new_size}", text_of(".size")),
            INTERVAL * 2,
        )
    });
    assert!(
        followed.is_some(),
        "the daemon is at {new_size}, the page still shows {} after two intervals",
        blocking(|| page.eval(&text_of(".size")))
    );

    // Nothing but the refused pause was an error: no console error, no exception, no failed load.
    let errors = blocking(|| page.errors());
    assert_eq!(errors.len(), expected_errors, "{errors:#?}");
    drop(page);
    running.stop().await;
}
