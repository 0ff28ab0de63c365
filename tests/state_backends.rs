//! One storage suite, run against both back ends: SQLite (a file) and PostgreSQL (a throwaway
//! cluster). Everything the daemon keeps goes in and comes back the same on either; on
//! PostgreSQL, a journal write from a daemon whose lease another took is refused, and a pause
//! set through one daemon is seen by the other.

use chrono::Utc;
use do_scaler::policy::{GroupMemory, MemoryStore};
use do_scaler::state::lease::{Leadership, Role, Timings};
use do_scaler::state::{Ended, Intent, Journal, Location, Phase, SizePoint, Store, Unlisted};
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::postgres as pg;

fn timings() -> Timings {
    Timings {
        lease: Duration::from_secs(4),
        longest_request: Duration::from_secs(1),
    }
}

/// Everything the daemon keeps, written and read back through `store` (leading `web`).
fn exercise(store: &Arc<Store>) {
    let leadership = Leadership::new(store.clone(), "suite".into(), timings());
    assert_eq!(leadership.renew("web"), Role::Leader);
    // The journal: an entry, settled; another left pending.
    let made = store
        .intend(
            "web",
            &Intent::Create {
                names: vec!["web-a".into(), "web-b".into()],
            },
        )
        .unwrap();
    let gone = store
        .intend("web", &Intent::Destroy { ids: vec![7, 8] })
        .unwrap();
    assert!(gone > made, "entry ids grow");
    store.settle(made, "created 2").unwrap();
    let pending = store.pending().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].intent, Intent::Destroy { ids: vec![7, 8] });
    assert!(
        store
            .intended_names("web", Utc::now() - chrono::Duration::minutes(1))
            .unwrap()
            .contains("web-b")
    );
    // Deleted and unlisted droplets.
    store.mark_deleted("web", &[7, 8]).unwrap();
    store.mark_deleted("web", &[7]).unwrap();
    store.forget_deleted("web", &[8]).unwrap();
    assert_eq!(
        store
            .deleted("web")
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [7]
    );
    let since = Utc::now();
    let unlisted = [
        Unlisted {
            name: "web-a".into(),
            id: Some(11),
            since,
        },
        Unlisted {
            name: "web-b".into(),
            id: None,
            since,
        },
    ];
    store.mark_created("web", &unlisted).unwrap();
    store.mark_created("web", &unlisted[..1]).unwrap();
    store.forget_unlisted("web", &["web-b".into()]).unwrap();
    let left = store.unlisted("web").unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].name.as_str(), left[0].id), ("web-a", Some(11)));
    // Memory, decisions, pauses.
    let mut memory = GroupMemory::default();
    memory.up_failed(Utc::now());
    store.save("web", &memory);
    assert_eq!(store.load("web").up_failures, 1);
    for i in 0..3 {
        store
            .record_decision("web", "now", &format!("{{\"n\": {i}}}"))
            .unwrap();
    }
    assert_eq!(
        store.decisions("web", 2).unwrap(),
        [serde_json::json!({"n": 2}), serde_json::json!({"n": 1})]
    );
    store.set_paused("web", true).unwrap();
    store.set_paused("web", true).unwrap();
    assert!(store.is_paused("web") && !store.is_paused("db"));
    assert_eq!(store.pause_reason("web"), None);
    store.pause_because("web", "another daemon").unwrap();
    assert_eq!(store.pause_reason("web").as_deref(), Some("another daemon"));
    store.set_paused("web", false).unwrap();
    assert!(!store.is_paused("web"));
    // The sample history, bit for bit (NaN included).
    let labels = do_scaler::query::Labels::new([("__name__", "up"), ("droplet_id", "1")]);
    let points = [
        (1u64, labels.clone(), 1_000i64, 1.5f64),
        (1, labels.clone(), 2_000, f64::NAN),
        (2, labels.clone(), 2_000, -0.25),
    ];
    store.append_samples("web", &points).unwrap();
    let mut kept = Vec::new();
    let droplets = store
        .load_samples("web", 0, |_, _, series| kept.extend(series))
        .unwrap();
    assert_eq!(droplets, 2);
    let bits: Vec<u64> = kept.iter().map(|(_, v)| v.to_bits()).collect();
    let want: Vec<u64> = points.iter().map(|(_, _, _, v)| v.to_bits()).collect();
    assert_eq!(bits, want);
    store.prune_samples("web", 1_500).unwrap();
    let mut left = 0;
    store
        .load_samples("web", 0, |_, _, series| left += series.len())
        .unwrap();
    assert_eq!(left, 2);
    // A large tick goes in batches; every point comes back, in order.
    let many: Vec<_> = (0..1_201)
        .map(|i| (3u64, labels.clone(), 10_000 + i as i64, i as f64))
        .collect();
    store.append_samples("web", &many).unwrap();
    let mut back = Vec::new();
    store
        .load_samples("web", 10_000, |_, _, series| back.extend(series))
        .unwrap();
    assert_eq!(back.len(), 1_201);
    assert!(
        back.iter()
            .enumerate()
            .all(|(i, (t, v))| *t == 10_000 + i as i64 && *v == i as f64)
    );
    // Sizes, drains, replacements, refresh pauses.
    let at = Utc::now();
    store
        .record_size(
            "web",
            SizePoint {
                at,
                current: 2,
                desired: 3,
                min: 1,
                max: 5,
            },
        )
        .unwrap();
    let sizes = store
        .sizes("web", at - chrono::Duration::minutes(2))
        .unwrap();
    assert_eq!(
        (sizes[0].current, sizes[0].desired, sizes[0].max),
        (2, 3, 5)
    );
    store
        .start_drain("web", &[7, 9], at, at + chrono::Duration::minutes(5), false)
        .unwrap();
    store.drain_prepared("web", &[9]).unwrap();
    store.end_drain("web", &[7]).unwrap();
    let drains = store.draining("web").unwrap();
    assert_eq!(
        (drains.len(), drains[0].id, drains[0].prepared),
        (1, 9, true)
    );
    store
        .start_replacement("web", 9, "web-new", "failed 3 checks", at)
        .unwrap();
    store
        .set_replacement_phase("web", 9, Phase::Retiring, None)
        .unwrap();
    assert_eq!(store.replacements("web").unwrap()[0].phase, Phase::Retiring);
    store
        .end_replacement("web", 9, &Ended::Failed("never passed".into()), at)
        .unwrap();
    assert_eq!(
        store.failed_replacements_in_a_row("web").unwrap(),
        ["never passed"]
    );
    assert_eq!(
        store
            .replacements_since("web", at - chrono::Duration::hours(1))
            .unwrap(),
        1
    );
    store.acknowledge_failed_replacements("web").unwrap();
    assert!(
        store
            .failed_replacements_in_a_row("web")
            .unwrap()
            .is_empty()
    );
    store.set_refresh_paused("web", true).unwrap();
    assert!(store.is_refresh_paused("web") && !store.is_refresh_paused("db"));
    assert!(
        store.failures().is_empty(),
        "no operation failed: {:?}",
        store.failures()
    );
}

#[test]
fn sqlite_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("state.db")).unwrap());
    assert!(!store.is_shared());
    exercise(&store);
}

#[test]
fn postgresql_keeps_everything_and_fences_a_deposed_leader() {
    let Some(cluster) = pg::Postgres::start() else {
        return;
    };
    let url = cluster.database("suite");
    let location = Location::Postgres(url.clone());
    let store = Arc::new(Store::open_location(&location, None).unwrap());
    assert!(store.is_shared());
    assert!(!store.describe().contains('?'), "{}", store.describe());
    exercise(&store);
    // Opening again (a second daemon, a restart) finds the schema and the same rows.
    let other = Arc::new(Store::open_location(&location, None).unwrap());
    assert_eq!(other.decisions("web", 10).unwrap().len(), 3);
    assert!(other.is_refresh_paused("web"));
    // A pause set through one daemon is what the other reads.
    other.set_paused("web", true).unwrap();
    assert!(store.is_paused("web"));

    // Two daemons: the first leads; the second follows until the first's lease runs out.
    let first = Leadership::new(store.clone(), "first".into(), timings());
    let second = Leadership::new(other.clone(), "second".into(), timings());
    assert_eq!(first.renew("db"), Role::Leader);
    assert!(first.may_write("db").is_ok());
    assert_eq!(
        second.renew("db"),
        Role::Follower {
            holder: "first".into()
        }
    );
    assert!(second.may_write("db").is_err(), "a follower never writes");
    let refused = other
        .intend("db", &Intent::Destroy { ids: vec![1] })
        .unwrap_err()
        .to_string();
    assert!(refused.contains("leads this group"), "{refused}");
    // The first stops renewing (stopped, cut off): once its lease has run out, the second
    // takes it with a newer token and waits out the longest request before acting.
    std::thread::sleep(timings().lease + Duration::from_millis(200));
    assert!(
        first.may_write("db").is_err(),
        "the first counts its own lease as lost"
    );
    let role = second.renew("db");
    assert!(
        matches!(&role, Role::TakingOver { from } if from == "first"),
        "{role:?}"
    );
    assert!(second.token("db") > Some(1));
    assert!(second.may_write("db").is_err(), "not before the wait");
    // The first's journal write is refused now: its token is old.
    let refused = store
        .intend("db", &Intent::Destroy { ids: vec![1] })
        .unwrap_err()
        .to_string();
    assert!(refused.contains("second leads this group"), "{refused}");
    std::thread::sleep(timings().longest_request);
    assert_eq!(second.renew("db"), Role::Leader);
    assert!(second.may_write("db").is_ok());
    other
        .intend("db", &Intent::Destroy { ids: vec![1] })
        .unwrap();
    // The first comes back: it follows, and its writes stay refused.
    assert_eq!(
        first.renew("db"),
        Role::Follower {
            holder: "second".into()
        }
    );
    // A clean stop hands over at once (after the longest request).
    second.release("db");
    let role = first.renew("db");
    assert!(matches!(role, Role::TakingOver { .. }), "{role:?}");
    drop(cluster);
}

#[test]
fn a_postgresql_url_with_a_bad_sslmode_or_a_password_is_refused_before_connecting() {
    for (url, expect) in [
        (
            "postgres://u@127.0.0.1:1/db?sslmode=sometimes",
            "sslmode `sometimes`",
        ),
        ("postgres://u:pw@127.0.0.1:1/db", "postgres-password"),
        (
            "postgres://u@127.0.0.1:1/db?sslmode=verify-full",
            "sslrootcert",
        ),
    ] {
        let error = Store::open_location(&Location::Postgres(url.into()), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains(expect), "{url}: {error}");
        assert!(!error.contains(":pw@"), "{error}");
    }
    // Reachable in form but not in fact: the error names the server, not a password.
    let error = Store::open_location(
        &Location::Postgres("postgres://u@127.0.0.1:1/db?sslmode=disable".into()),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("cannot connect to postgres://u@127.0.0.1:1/db"),
        "{error}"
    );
}

#[test]
fn state_migrate_copies_a_sqlite_state_into_an_empty_postgresql_once() {
    let Some(cluster) = pg::Postgres::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.db");
    {
        let store = Arc::new(Store::open(&file).unwrap());
        exercise(&store);
    }
    let url = cluster.database("migrated");
    let migrate = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_do-scaler"))
            .args(["state", "migrate", "--from"])
            .arg(&file)
            .args(["--to", &url])
            .output()
            .unwrap()
    };
    let out = migrate();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("decisions: 3 rows"), "{stdout}");
    let copied = Arc::new(Store::open_location(&Location::Postgres(url.clone()), None).unwrap());
    assert_eq!(
        copied.pending().unwrap()[0].intent,
        Intent::Destroy { ids: vec![7, 8] }
    );
    assert_eq!(copied.load("web").up_failures, 1);
    assert_eq!(copied.decisions("web", 10).unwrap().len(), 3);
    assert_eq!(copied.draining("web").unwrap().len(), 1);
    assert!(copied.is_refresh_paused("web"));
    let mut points = 0;
    copied
        .load_samples("web", 0, |_, _, series| points += series.len())
        .unwrap();
    assert_eq!(points, 2 + 1_201);
    // New rows go on after the copied ids.
    let leadership = Leadership::new(copied.clone(), "after".into(), timings());
    assert_eq!(leadership.renew("web"), Role::Leader);
    let next = copied
        .intend("web", &Intent::Destroy { ids: vec![3] })
        .unwrap();
    assert!(next > 2, "{next}");
    // A second copy into a database that holds state is refused.
    let again = migrate();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds do-scaler state"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn sslmode_verifies_the_server_as_libpq_does() {
    let Some(cluster) = pg::Postgres::start_with_tls() else {
        return;
    };
    cluster.database("tls");
    let ca = cluster.path().join("ca.crt").display().to_string();
    // Another CA, which signed nothing the server has.
    let stranger = tempfile::tempdir().unwrap();
    let other_ca = stranger.path().join("other.crt");
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(stranger.path().join("other.key"))
        .arg("-out")
        .arg(&other_ca)
        .args(["-days", "2", "-subj", "/CN=stranger"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let other_ca = other_ca.display().to_string();
    let port = cluster.port;
    let open = |host: &str, query: &str| {
        Store::open_location(
            &Location::Postgres(format!("postgres://postgres@{host}:{port}/tls?{query}")),
            None,
        )
    };
    // Encrypted without checking who answers: the default (prefer), require.
    for query in ["", "sslmode=require"] {
        assert!(open("127.0.0.1", query).is_ok(), "{query}");
    }
    // verify-full: the chain and the name; verify-ca: the chain only.
    assert!(
        open(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}")
        )
        .is_ok()
    );
    let wrong_name = open(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    )
    .unwrap_err()
    .to_string();
    assert!(wrong_name.contains("cannot connect"), "{wrong_name}");
    assert!(open("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")).is_ok());
    for mode in ["verify-ca", "verify-full", "require"] {
        let refused = open(
            "localhost",
            &format!("sslmode={mode}&sslrootcert={other_ca}"),
        );
        assert!(
            refused.is_err(),
            "{mode} with a CA that signed nothing passed"
        );
    }
}
