//! Health checks of a group's active droplets (`[health]`), run inside each tick: a TCP
//! connection or an HTTP GET to each droplet's scrape address, or its scrape's own outcome
//! ("metrics"). A check the tick's deadline cut off proves nothing and counts neither way; a
//! droplet fails its check only by its own fault. [`HealthCounts`] turns the verdicts into
//! consecutive failed ticks, the evidence a replacement needs.

use crate::config::health::{Health, HealthCheck};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One droplet's check this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It passed.
    Pass,
    /// It failed, with why.
    Fail(String),
    /// Not judged (the deadline came first, no address, or nothing to compare with).
    Unjudged(String),
}

/// The most of an HTTP answer read to find its status line.
const STATUS_LINE_LIMIT: usize = 1024;

/// Checks `targets` (droplet id, `host:port`-less address) concurrently; each check gets
/// `timeout`, all of them end at `deadline` (checks still running then are unjudged).
pub async fn probe_all(
    health: &Health,
    targets: Vec<(u64, String)>,
    deadline: tokio::time::Instant,
) -> HashMap<u64, Verdict> {
    let mut set = tokio::task::JoinSet::new();
    for (id, address) in targets {
        let (check, timeout) = (health.check.clone(), health.timeout);
        set.spawn(async move {
            let probe = tokio::time::timeout(timeout, probe(&check, &address));
            let verdict = match tokio::time::timeout_at(deadline, probe).await {
                Err(_) => {
                    Verdict::Unjudged("the tick's deadline came before the check ended".into())
                }
                Ok(Err(_)) => Verdict::Fail(format!(
                    "no answer within {}",
                    crate::config::duration::format_duration(timeout)
                )),
                Ok(Ok(Ok(()))) => Verdict::Pass,
                Ok(Ok(Err(why))) => Verdict::Fail(why),
            };
            (id, verdict)
        });
    }
    let mut all = HashMap::new();
    while let Some(joined) = set.join_next().await {
        // A check that panicked proves nothing about its droplet: it stays unjudged.
        if let Ok((id, verdict)) = joined {
            all.insert(id, verdict);
        }
    }
    all
}

/// One check of one droplet.
async fn probe(check: &HealthCheck, address: &str) -> Result<(), String> {
    let (port, path) = match check {
        // Judged from the scrape, never probed.
        HealthCheck::Metrics => return Ok(()),
        HealthCheck::Tcp { port } => (*port, None),
        HealthCheck::Http { port, path } => (*port, Some(path.as_str())),
    };
    let target = format!("{address}:{port}");
    let mut stream = tokio::net::TcpStream::connect(&target)
        .await
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    let Some(path) = path else {
        return Ok(());
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: do-scaler health check\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send to {target}: {e}"))?;
    let mut answer = Vec::with_capacity(128);
    let mut buffer = [0u8; 256];
    while !answer.contains(&b'\n') && answer.len() < STATUS_LINE_LIMIT {
        let read = stream
            .read(&mut buffer)
            .await
            .map_err(|e| format!("{target}: {e}"))?;
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
    }
    let line = String::from_utf8_lossy(&answer);
    let line = line.lines().next().unwrap_or("");
    let status: Option<u16> = line
        .strip_prefix("HTTP/")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok());
    match status {
        Some(code) if (200..400).contains(&code) => Ok(()),
        Some(code) => Err(format!("GET http://{target}{path} answered {code}")),
        None => Err(format!("GET http://{target}{path}: not an HTTP answer")),
    }
}

/// The "metrics" check from the scrape outcomes of the active droplets (`"ok"` or `kind:
/// why`): a droplet whose scrape failed fails, but only while another droplet answered, and
/// never for a scrape the deadline did not reach or an address it does not have.
pub fn judge_by_scrape(outcomes: &HashMap<u64, &str>) -> HashMap<u64, Verdict> {
    let someone_answered = outcomes.values().any(|o| *o == "ok");
    outcomes
        .iter()
        .map(|(id, outcome)| {
            let verdict = if *outcome == "ok" {
                Verdict::Pass
            } else if outcome.starts_with("not_reached") || outcome.starts_with("no_address") {
                Verdict::Unjudged((*outcome).to_string())
            } else if !someone_answered {
                Verdict::Unjudged(
                    "no droplet of the group answered: the fault is not this droplet's".into(),
                )
            } else {
                Verdict::Fail(format!("its scrape failed: {outcome}"))
            };
            (*id, verdict)
        })
        .collect()
}

/// One droplet's health as a tick reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthMark {
    /// Whether it passed its check this tick.
    pub passed: bool,
    /// Consecutive failed ticks that count (past warmup and grace).
    pub failed_ticks: u32,
    /// Why it failed or was not judged this tick.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether it is still inside its grace period (failures do not count).
    pub in_grace: bool,
}

impl HealthMark {
    /// One line for `plan` and the status API: "ok", "failing 2/3: why", "in grace: why".
    pub fn describe(&self, unhealthy_after: u32) -> String {
        match (&self.reason, self.passed) {
            (_, true) => "ok".into(),
            (Some(why), false) if self.in_grace => format!("in grace: {why}"),
            (Some(why), false) => format!("failing {}/{unhealthy_after}: {why}", self.failed_ticks),
            (None, false) => "unknown".into(),
        }
    }
}

/// Counts this tick's verdicts into consecutive failed ticks per droplet (`failed`, kept in
/// the group's memory). `first_active` says since when each droplet is active: failures count
/// only once `settle` (warmup + grace) has passed since then. Droplets without a verdict (not
/// active any more) are forgotten; an unjudged tick changes nothing.
pub fn count_failures(
    failed: &mut BTreeMap<u64, u32>,
    verdicts: &HashMap<u64, Verdict>,
    first_active: &HashMap<u64, DateTime<Utc>>,
    settle: Duration,
    now: DateTime<Utc>,
) -> HashMap<u64, HealthMark> {
    let settle = chrono::Duration::from_std(settle).unwrap_or_default();
    failed.retain(|id, _| verdicts.contains_key(id));
    let mut marks = HashMap::with_capacity(verdicts.len());
    for (id, verdict) in verdicts {
        let in_grace = first_active
            .get(id)
            .is_none_or(|since| now - *since < settle);
        let count = failed.entry(*id).or_insert(0);
        let (passed, reason) = match verdict {
            Verdict::Pass => {
                *count = 0;
                (true, None)
            }
            Verdict::Fail(why) => {
                if in_grace {
                    *count = 0;
                } else {
                    *count += 1;
                }
                (false, Some(why.clone()))
            }
            Verdict::Unjudged(why) => (false, Some(format!("not judged: {why}"))),
        };
        marks.insert(
            *id,
            HealthMark {
                passed,
                failed_ticks: *count,
                reason,
                in_grace,
            },
        );
    }
    marks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(check: HealthCheck) -> Health {
        Health {
            check,
            timeout: Duration::from_millis(500),
            unhealthy_after: 3,
            grace: Duration::ZERO,
            max_percent: 150,
            max_replacements_per_hour: 5,
        }
    }

    #[tokio::test]
    async fn tcp_and_http_checks_pass_and_fail_as_a_droplet_would() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut served = 0;
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buffer = [0u8; 512];
                let read = stream.read(&mut buffer).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buffer[..read]).to_string();
                let status = if request.starts_with("GET /healthz ") {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = stream
                    .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
                served += 1;
            }
            served
        });
        // A port nothing listens on: bound, then closed.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let targets = vec![(1, "127.0.0.1".to_string())];
        let tcp = probe_all(
            &health(HealthCheck::Tcp { port }),
            targets.clone(),
            deadline,
        )
        .await;
        assert_eq!(tcp[&1], Verdict::Pass);
        let refused = probe_all(
            &health(HealthCheck::Tcp { port: closed_port }),
            targets.clone(),
            deadline,
        )
        .await;
        assert!(matches!(&refused[&1], Verdict::Fail(why) if why.contains("cannot connect")));
        let http = |path: &str| HealthCheck::Http {
            port,
            path: path.into(),
        };
        let ok = probe_all(&health(http("/healthz")), targets.clone(), deadline).await;
        assert_eq!(ok[&1], Verdict::Pass);
        let bad = probe_all(&health(http("/other")), targets, deadline).await;
        assert!(
            matches!(&bad[&1], Verdict::Fail(why) if why.contains("answered 503")),
            "{bad:?}"
        );
    }

    #[tokio::test]
    async fn a_check_cut_by_the_tick_deadline_is_not_judged() {
        // Accepts and never answers: an HTTP check waits.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let mut slow = health(HealthCheck::Http {
            port,
            path: "/".into(),
        });
        slow.timeout = Duration::from_secs(10);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        let verdicts = probe_all(&slow, vec![(1, "127.0.0.1".into())], deadline).await;
        assert!(matches!(verdicts[&1], Verdict::Unjudged(_)), "{verdicts:?}");
    }

    #[test]
    fn a_failed_scrape_fails_only_while_another_droplet_answers() {
        let outcomes: HashMap<u64, &str> = [
            (1, "ok"),
            (2, "unreachable: connection refused"),
            (3, "not_reached: the tick's scrape phase ended"),
        ]
        .into_iter()
        .collect();
        let verdicts = judge_by_scrape(&outcomes);
        assert_eq!(verdicts[&1], Verdict::Pass);
        assert!(matches!(verdicts[&2], Verdict::Fail(_)));
        assert!(matches!(verdicts[&3], Verdict::Unjudged(_)));
        let all_down: HashMap<u64, &str> = [(1, "timeout: 2s"), (2, "timeout: 2s")]
            .into_iter()
            .collect();
        assert!(
            judge_by_scrape(&all_down)
                .values()
                .all(|v| matches!(v, Verdict::Unjudged(_)))
        );
    }

    #[test]
    fn failures_count_in_a_row_after_grace_and_unjudged_ticks_change_nothing() {
        let now = Utc::now();
        let mut counts = BTreeMap::new();
        let since: HashMap<u64, DateTime<Utc>> =
            [(1, now - chrono::Duration::minutes(10)), (2, now)]
                .into_iter()
                .collect();
        let settle = Duration::from_secs(300);
        let fail = |ids: &[u64]| -> HashMap<u64, Verdict> {
            ids.iter()
                .map(|id| (*id, Verdict::Fail("down".into())))
                .collect()
        };
        count_failures(&mut counts, &fail(&[1, 2]), &since, settle, now);
        let marks = count_failures(&mut counts, &fail(&[1, 2]), &since, settle, now);
        assert_eq!(marks[&1].failed_ticks, 2);
        assert_eq!(marks[&2].failed_ticks, 0, "inside its grace");
        assert!(marks[&2].in_grace);
        let unjudged: HashMap<u64, Verdict> = [(1, Verdict::Unjudged("deadline".into()))]
            .into_iter()
            .collect();
        assert_eq!(
            count_failures(&mut counts, &unjudged, &since, settle, now)[&1].failed_ticks,
            2
        );
        let pass: HashMap<u64, Verdict> = [(1, Verdict::Pass)].into_iter().collect();
        assert_eq!(
            count_failures(&mut counts, &pass, &since, settle, now)[&1].failed_ticks,
            0
        );
    }
}
