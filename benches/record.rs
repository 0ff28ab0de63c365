//! How big a recording is: a day of a 50-droplet group at a 30 s interval, with the series the
//! example web group's rules read (each droplet's idle CPU seconds for 2 vCPUs, and its
//! available and total memory: 4 series), counters growing with noise as do-agent's do, and
//! the listing changing once an hour (a droplet replaced). Also how long writing and reading it
//! take, and how long replaying it through the example group takes. Run:
//! `cargo bench --bench record`.

use do_scaler::digitalocean::Droplet;
use do_scaler::query::Labels;
use do_scaler::record::{Header, RecordedDecision, Recorder, VERSION, read};
use std::time::Instant;

const DROPLETS: u64 = 50;
const TICKS: i64 = 2_880;

fn droplet(id: u64) -> Droplet {
    serde_json::from_value(serde_json::json!({
        "id": id, "name": format!("web-{id}"), "memory": 4096, "vcpus": 2, "disk": 80,
        "locked": false, "status": "active", "created_at": "2026-12-03T00:00:00Z",
        "features": ["monitoring", "private_networking"], "backup_ids": [], "next_backup_window": null,
        "snapshot_ids": [], "image": {"id": 1, "slug": "ubuntu-24-04-x64"}, "volume_ids": [],
        "size": {"slug": "s-2vcpu-4gb"}, "size_slug": "s-2vcpu-4gb",
        "networks": { "v4": [{"ip_address": format!("10.110.0.{}", id % 250), "type": "private", "netmask": "255.255.240.0", "gateway": "10.110.0.1"}], "v6": [] },
        "region": { "slug": "fra1", "name": "Frankfurt 1", "sizes": [], "available": true, "features": [] },
        "tags": ["web", "do-scaler:default"], "vpc_uuid": "3b1c1f2a-0000-4000-8000-000000000000"
    }))
    .unwrap()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("day.rec.gz");
    let header = Header {
        version: VERSION,
        group: "web".into(),
        tag: "web".into(),
        interval_s: 30.0,
        started: chrono::Utc::now(),
        group_file: std::fs::read_to_string("conf.d/web.toml").unwrap_or_default(),
    };
    let started = Instant::now();
    let mut recorder = Recorder::create(&path, &header).unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut idle = vec![[1_000.0f64; 2]; DROPLETS as usize];
    let mut first = 1u64;
    for tick in 0..TICKS {
        if tick > 0 && tick % 120 == 0 {
            first += 1; // one droplet replaced an hour
        }
        let ids: Vec<u64> = (first..first + DROPLETS).collect();
        let listing: Vec<Droplet> = ids.iter().map(|id| droplet(*id)).collect();
        let at = 1_764_720_000_000 + tick * 30_000;
        let mut points = Vec::new();
        for (index, id) in ids.iter().enumerate() {
            let t = at - 40 + (index as i64 % 80);
            for (cpu, counter) in idle[index].iter_mut().enumerate() {
                *counter += 30.0 * (0.3 + 0.4 * rng.f64());
                let labels = Labels::new([
                    ("__name__", "node_cpu_seconds_total".to_string()),
                    ("cpu", cpu.to_string()),
                    ("droplet_id", id.to_string()),
                    ("mode", "idle".to_string()),
                    ("source", "droplets".to_string()),
                ]);
                points.push((*id, labels, t, (*counter * 100.0).round() / 100.0));
            }
            for (name, value) in [
                (
                    "node_memory_MemAvailable_bytes",
                    2_000_000_000.0 + (rng.u32(..) % 500_000_000) as f64,
                ),
                ("node_memory_MemTotal_bytes", 4_116_000_768.0),
            ] {
                let labels = Labels::new([
                    ("__name__", name.to_string()),
                    ("droplet_id", id.to_string()),
                    ("source", "droplets".to_string()),
                ]);
                points.push((*id, labels, t, value));
            }
        }
        let decision = RecordedDecision {
            current: 50,
            active: 50,
            desired: 50,
            min: 2,
            max: 60,
            winner: Some("cpu".into()),
            reason: "decision: stay at 50".into(),
        };
        recorder.tick(at, &listing, &points, &decision).unwrap();
    }
    recorder.finish().unwrap();
    let wrote = started.elapsed();
    let size = std::fs::metadata(&path).unwrap().len();
    let started = Instant::now();
    let recording = read(&path).unwrap();
    let read_in = started.elapsed();
    assert_eq!(recording.ticks.len(), TICKS as usize);
    println!(
        "a day of {DROPLETS} droplets at 30 s ({TICKS} ticks, {} points): {:.1} MB; written in {:.1} s, read in {:.1} s",
        recording
            .ticks
            .iter()
            .map(|t| t.points.len())
            .sum::<usize>(),
        size as f64 / 1e6,
        wrote.as_secs_f64(),
        read_in.as_secs_f64()
    );
    // Replaying that day through the example's rules (the shipped group, max raised so 50
    // droplets fit): every tick decided by the real code over synthesized scrapes.
    let group_file = do_scaler::quality::example(|_| {})
        .unwrap()
        .replacen("max = 20", "max = 80", 1);
    let group = do_scaler::config::load::group_for_replay(
        std::path::Path::new("conf.d/web.toml"),
        &group_file,
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    let started = Instant::now();
    let replayed = do_scaler::record::replay::replay(
        &recording,
        group,
        "do-scaler:bench",
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    println!(
        "replayed it through the example group in {:.1} s ({} ticks; replayed {:.0} droplet-hours against {:.0} recorded)",
        started.elapsed().as_secs_f64(),
        replayed.ticks,
        replayed.replayed.droplet_hours,
        replayed.recorded.droplet_hours
    );
}
