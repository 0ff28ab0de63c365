//! Recordings of what a group's ticks observe, for measuring a rule set against real traffic
//! later: each tick's listing (only when it changed), the new points of the series the group's
//! rules and scale-in read, and the decision. One gzip stream of JSON lines, flushed after each
//! tick, so a recording cut short (a crash, a full disk) is read up to its last whole tick.
//!
//! Lines, each an object with `k`: `header` (once), `series` (a series' droplet and labels,
//! before its first point), `tick` (time in ms; `listing` when it changed; `samples` as
//! `[series, ms after the tick, value]`; `decision`). Values that are not finite (NaN, the
//! staleness marker, infinities) are written as the hex of their bits, so every point comes
//! back bit for bit.

pub mod replay;
pub mod rotate;

use crate::digitalocean::Droplet;
use crate::metrics::history::NewPoint;
use crate::policy::Decision;
use crate::query::Labels;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// The format's version, in each header.
pub const VERSION: u32 = 1;

/// Why a recording could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file could not be created, written or read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// The file is not a recording this version reads.
    #[error("{path}: {why}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// What a recording is of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The format's version.
    pub version: u32,
    /// The group's name.
    pub group: String,
    /// The group's tag.
    pub tag: String,
    /// The group's interval, in seconds.
    pub interval_s: f64,
    /// When recording started.
    pub started: chrono::DateTime<chrono::Utc>,
    /// The group file's text as it was recorded (what `replay` runs when given no other).
    pub group_file: String,
}

/// The header of a recording of `group` started `at`.
pub fn header_for(group: &crate::config::Group, at: chrono::DateTime<chrono::Utc>) -> Header {
    Header {
        version: VERSION,
        group: group.name.clone(),
        tag: group.tag.clone(),
        interval_s: group.interval.as_secs_f64(),
        started: at,
        group_file: group.source.clone(),
    }
}

/// The decision of a recorded tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedDecision {
    /// Droplets counted toward the size.
    pub current: u32,
    /// Of those, active.
    pub active: u32,
    /// The size decided.
    pub desired: u32,
    /// The bounds in force.
    pub min: u32,
    /// The bounds in force.
    pub max: u32,
    /// The rule that decided, if one did.
    pub winner: Option<String>,
    /// The reason, as the last step of the explanation says it.
    pub reason: String,
}

impl RecordedDecision {
    /// What a decision records.
    pub fn of(decision: &Decision) -> RecordedDecision {
        RecordedDecision {
            current: decision.current,
            active: decision.active,
            desired: decision.desired,
            min: decision.bounds.min,
            max: decision.bounds.max,
            winner: decision.winner.clone(),
            reason: decision.steps.last().cloned().unwrap_or_default(),
        }
    }
}

/// One recorded tick, read back.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedTick {
    /// When it ran (ms since the epoch).
    pub at_ms: i64,
    /// The group's listing then.
    pub listing: Vec<Droplet>,
    /// The new points of the series the rules read.
    pub points: Vec<NewPoint>,
    /// Its decision.
    pub decision: RecordedDecision,
}

/// A recording read back.
#[derive(Debug, Clone)]
pub struct Recording {
    /// What it is of.
    pub header: Header,
    /// Its ticks, oldest first.
    pub ticks: Vec<RecordedTick>,
    /// Whether the file ended mid-line or mid-stream (cut short): the ticks before are kept.
    pub truncated: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "lowercase")]
enum Line {
    Header(Header),
    Series {
        id: u64,
        droplet: u64,
        labels: Vec<(String, String)>,
    },
    Tick {
        t: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        listing: Option<Vec<Droplet>>,
        samples: Vec<(u64, i64, Value)>,
        decision: RecordedDecision,
    },
}

/// A value: a number when finite, else the hex of its bits.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Value {
    Number(f64),
    Bits(String),
}

impl Value {
    fn of(v: f64) -> Value {
        if v.is_finite() {
            Value::Number(v)
        } else {
            Value::Bits(format!("{:x}", v.to_bits()))
        }
    }

    fn get(&self) -> Option<f64> {
        match self {
            Value::Number(v) => Some(*v),
            Value::Bits(hex) => u64::from_str_radix(hex, 16).ok().map(f64::from_bits),
        }
    }
}

/// Writes one recording.
pub struct Recorder {
    path: PathBuf,
    out: GzEncoder<BufWriter<std::fs::File>>,
    series: HashMap<(u64, Labels), u64>,
    last_listing: Option<Vec<Droplet>>,
}

impl Recorder {
    /// Creates `path` (replacing it) and writes the header.
    pub fn create(path: &Path, header: &Header) -> Result<Recorder, RecordError> {
        let io = |error| RecordError::Io {
            path: path.to_path_buf(),
            error,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = std::fs::File::create(path).map_err(io)?;
        let mut recorder = Recorder {
            path: path.to_path_buf(),
            out: GzEncoder::new(BufWriter::new(file), Compression::default()),
            series: HashMap::new(),
            last_listing: None,
        };
        recorder.line(&Line::Header(header.clone()))?;
        recorder.flush()?;
        Ok(recorder)
    }

    /// Where it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn line(&mut self, line: &Line) -> Result<(), RecordError> {
        let mut text = serde_json::to_string(line).map_err(|e| RecordError::Format {
            path: self.path.clone(),
            why: e.to_string(),
        })?;
        text.push('\n');
        self.out
            .write_all(text.as_bytes())
            .map_err(|error| RecordError::Io {
                path: self.path.clone(),
                error,
            })
    }

    fn flush(&mut self) -> Result<(), RecordError> {
        self.out.flush().map_err(|error| RecordError::Io {
            path: self.path.clone(),
            error,
        })
    }

    /// Writes one tick and flushes it to the file.
    pub fn tick(
        &mut self,
        at_ms: i64,
        listing: &[Droplet],
        points: &[NewPoint],
        decision: &RecordedDecision,
    ) -> Result<(), RecordError> {
        let mut samples = Vec::with_capacity(points.len());
        for (droplet, labels, t, value) in points {
            let key = (*droplet, labels.clone());
            let id = match self.series.get(&key) {
                Some(id) => *id,
                None => {
                    let id = self.series.len() as u64;
                    self.line(&Line::Series {
                        id,
                        droplet: *droplet,
                        labels: labels
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    })?;
                    self.series.insert(key, id);
                    id
                }
            };
            samples.push((id, t - at_ms, Value::of(*value)));
        }
        let changed = self.last_listing.as_deref() != Some(listing);
        if changed {
            self.last_listing = Some(listing.to_vec());
        }
        self.line(&Line::Tick {
            t: at_ms,
            listing: changed.then(|| listing.to_vec()),
            samples,
            decision: decision.clone(),
        })?;
        self.flush()
    }

    /// Ends the gzip stream (a recording not finished is still read up to its last tick).
    pub fn finish(self) -> Result<(), RecordError> {
        let path = self.path.clone();
        self.out
            .finish()
            .and_then(|mut out| out.flush())
            .map_err(|error| RecordError::Io { path, error })
    }
}

/// Reads a recording, up to its last whole tick when it was cut short.
pub fn read(path: &Path) -> Result<Recording, RecordError> {
    let file = std::fs::File::open(path).map_err(|error| RecordError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let bad = |why: String| RecordError::Format {
        path: path.to_path_buf(),
        why,
    };
    let mut lines = BufReader::new(GzDecoder::new(file)).lines();
    let header = match lines.next() {
        Some(Ok(text)) => match serde_json::from_str::<Line>(&text) {
            Ok(Line::Header(header)) => header,
            _ => return Err(bad("not a do-scaler recording (no header line)".into())),
        },
        _ => return Err(bad("not a do-scaler recording (not gzip, or empty)".into())),
    };
    if header.version > VERSION {
        return Err(bad(format!(
            "recorded by a newer do-scaler (format {}, this one reads {VERSION}): upgrade",
            header.version
        )));
    }
    let mut series: HashMap<u64, (u64, Labels)> = HashMap::new();
    let mut listing: Vec<Droplet> = Vec::new();
    let mut ticks = Vec::new();
    let mut truncated = false;
    for (number, line) in lines.enumerate() {
        let Ok(text) = line else {
            truncated = true;
            break;
        };
        match serde_json::from_str::<Line>(&text) {
            Ok(Line::Series {
                id,
                droplet,
                labels,
            }) => {
                series.insert(id, (droplet, Labels::new(labels)));
            }
            Ok(Line::Tick {
                t,
                listing: changed,
                samples,
                decision,
            }) => {
                if let Some(changed) = changed {
                    listing = changed;
                }
                let mut points = Vec::with_capacity(samples.len());
                for (id, dt, value) in samples {
                    let (droplet, labels) = series
                        .get(&id)
                        .ok_or_else(|| bad(format!("line {}: unknown series {id}", number + 2)))?;
                    let value = value
                        .get()
                        .ok_or_else(|| bad(format!("line {}: a bad value", number + 2)))?;
                    points.push((*droplet, labels.clone(), t + dt, value));
                }
                ticks.push(RecordedTick {
                    at_ms: t,
                    listing: listing.clone(),
                    points,
                    decision,
                });
            }
            Ok(Line::Header(_)) => {
                return Err(bad(format!("line {}: a second header", number + 2)));
            }
            // A line cut short by a crash ends the recording.
            Err(_) => {
                truncated = true;
                break;
            }
        }
    }
    Ok(Recording {
        header,
        ticks,
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            version: VERSION,
            group: "web".into(),
            tag: "web".into(),
            interval_s: 30.0,
            started: chrono::Utc::now(),
            group_file: "tag = \"web\"\n".into(),
        }
    }

    fn droplet(id: u64) -> Droplet {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": format!("web-{id}"), "memory": 1024, "vcpus": 1, "disk": 25,
            "locked": false, "status": "active", "created_at": "2026-12-03T10:00:00Z",
            "features": [], "backup_ids": [], "next_backup_window": null, "snapshot_ids": [],
            "image": {}, "volume_ids": [], "size": {}, "size_slug": "s-1vcpu-1gb",
            "networks": { "v4": [], "v6": [] },
            "region": { "slug": "nyc3", "name": "nyc3", "sizes": [], "available": true, "features": [] },
            "tags": ["web"], "vpc_uuid": null
        }))
        .unwrap()
    }

    fn decision(desired: u32) -> RecordedDecision {
        RecordedDecision {
            current: 2,
            active: 2,
            desired,
            min: 1,
            max: 5,
            winner: Some("cpu".into()),
            reason: "stay".into(),
        }
    }

    #[test]
    fn ticks_come_back_bit_for_bit_and_a_cut_tail_keeps_the_whole_ticks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.rec.gz");
        let labels = Labels::new([("__name__", "node_cpu_seconds_total"), ("mode", "idle")]);
        let stale = crate::query::eval::STALE;
        let ticks: Vec<(i64, Vec<Droplet>, Vec<NewPoint>)> = vec![
            (
                1_000,
                vec![droplet(1), droplet(2)],
                vec![
                    (1, labels.clone(), 990, 12.5),
                    (2, labels.clone(), 995, f64::NAN),
                ],
            ),
            (
                31_000,
                vec![droplet(1), droplet(2)],
                vec![
                    (1, labels.clone(), 30_990, stale),
                    (2, labels.clone(), 30_995, -0.0),
                ],
            ),
            (
                61_000,
                vec![droplet(2)],
                vec![(2, labels.clone(), 61_002, 1e300)],
            ),
        ];
        let mut recorder = Recorder::create(&path, &header()).unwrap();
        for (index, (at, listing, points)) in ticks.iter().enumerate() {
            recorder
                .tick(*at, listing, points, &decision(index as u32))
                .unwrap();
        }
        // Not finished: as after a crash, every flushed tick is there.
        let read_back = read(&path).unwrap();
        assert_eq!(read_back.header.group, "web");
        assert_eq!(read_back.ticks.len(), 3);
        for (got, (at, listing, points)) in read_back.ticks.iter().zip(&ticks) {
            assert_eq!(got.at_ms, *at);
            assert_eq!(
                &got.listing, listing,
                "the listing is carried over when unchanged"
            );
            let bits: Vec<(u64, i64, u64)> = got
                .points
                .iter()
                .map(|(d, _, t, v)| (*d, *t, v.to_bits()))
                .collect();
            let want: Vec<(u64, i64, u64)> = points
                .iter()
                .map(|(d, _, t, v)| (*d, *t, v.to_bits()))
                .collect();
            assert_eq!(bits, want);
        }
        recorder.finish().unwrap();
        assert!(!read(&path).unwrap().truncated);
        // Cut in the middle of the last tick: the ticks before it are read.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 30]).unwrap();
        let cut = read(&path).unwrap();
        assert!(cut.truncated);
        assert!(!cut.ticks.is_empty() && cut.ticks.len() <= 3);
        // Not a recording at all.
        std::fs::write(&path, "hello").unwrap();
        assert!(
            read(&path)
                .unwrap_err()
                .to_string()
                .contains("not a do-scaler recording")
        );
    }
}
