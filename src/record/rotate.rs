//! Continuous recording (`[record]`): one file per group and UTC hour,
//! `<dir>/<group>/<YYYY-MM-DDTHH>.rec.gz`. When the hour turns the file is finished and a new
//! one begins; then files older than `keep` are deleted, and the oldest go while the folder
//! holds more than `max_size`. A write that fails is logged and the group goes on.

use super::{Header, RecordError, RecordedDecision, Recorder};
use crate::config::RecordSettings;
use crate::digitalocean::Droplet;
use crate::metrics::history::NewPoint;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};

/// A group's continuous recording.
pub struct Rotating {
    settings: RecordSettings,
    header: Header,
    /// The hour being written, and its file.
    current: Option<(String, Recorder)>,
}

impl Rotating {
    /// A recording of the group `header` describes, under `settings`.
    pub fn new(settings: RecordSettings, header: Header) -> Rotating {
        Rotating {
            settings,
            header,
            current: None,
        }
    }

    fn folder(&self) -> PathBuf {
        self.settings.dir.join(&self.header.group)
    }

    /// Writes one tick into its hour's file (starting that file, and pruning, when the hour
    /// turned).
    pub fn tick(
        &mut self,
        at: DateTime<Utc>,
        listing: &[Droplet],
        points: &[NewPoint],
        decision: &RecordedDecision,
    ) -> Result<(), RecordError> {
        let hour = at.format("%Y-%m-%dT%H").to_string();
        if self.current.as_ref().is_none_or(|(h, _)| *h != hour) {
            if let Some((_, done)) = self.current.take() {
                done.finish()?;
            }
            // A restart within the hour (or a second daemon recording here) starts a file of
            // its own beside the hour's: an existing recording is never overwritten.
            let mut path = self.folder().join(format!("{hour}.rec.gz"));
            let mut attempt = 1;
            while path.exists() {
                path = self.folder().join(format!("{hour}.{attempt}.rec.gz"));
                attempt += 1;
            }
            let header = Header {
                started: at,
                ..self.header.clone()
            };
            self.current = Some((hour, Recorder::create(&path, &header)?));
            prune(&self.folder(), at, &self.settings, &path)?;
        }
        match &mut self.current {
            Some((_, recorder)) => recorder.tick(at.timestamp_millis(), listing, points, decision),
            None => Ok(()),
        }
    }

    /// Finishes the file being written (a clean stop).
    pub fn finish(mut self) -> Result<(), RecordError> {
        match self.current.take() {
            Some((_, recorder)) => recorder.finish(),
            None => Ok(()),
        }
    }
}

/// When a recording's hour began, from its name (`<YYYY-MM-DDTHH>…rec.gz`).
fn hour_of(path: &Path) -> Option<DateTime<Utc>> {
    let name = path.file_name()?.to_str()?;
    if !name.ends_with(".rec.gz") {
        return None;
    }
    let hour = name.get(..13)?;
    chrono::NaiveDateTime::parse_from_str(&format!("{hour}:00"), "%Y-%m-%dT%H:%M")
        .ok()
        .map(|t| t.and_utc())
}

/// Deletes the folder's recordings whose hour ended more than `keep` ago, then the oldest
/// while the folder holds more than `max_size`. `writing` (the file being written) is never
/// deleted.
pub fn prune(
    folder: &Path,
    now: DateTime<Utc>,
    settings: &RecordSettings,
    writing: &Path,
) -> Result<(), RecordError> {
    let io = |error| RecordError::Io {
        path: folder.to_path_buf(),
        error,
    };
    let mut files: Vec<(DateTime<Utc>, u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let Some(hour) = hour_of(&path) else {
            continue;
        };
        files.push((hour, entry.metadata().map_err(io)?.len(), path));
    }
    files.sort();
    let keep = chrono::Duration::from_std(settings.keep).unwrap_or(chrono::Duration::MAX);
    let mut total: u64 = files.iter().map(|(_, size, _)| size).sum();
    for (hour, size, path) in files {
        if path == writing {
            continue;
        }
        let ended = hour + chrono::Duration::hours(1);
        if now - ended > keep || total > settings.max_size {
            std::fs::remove_file(&path).map_err(|error| RecordError::Io {
                path: path.clone(),
                error,
            })?;
            total -= size;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_recorder_in_the_same_hour_never_overwrites_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let settings = RecordSettings {
            dir: dir.path().to_path_buf(),
            keep: std::time::Duration::from_secs(86_400),
            max_size: 1_000_000_000,
        };
        let header = Header {
            version: super::super::VERSION,
            group: "web".into(),
            tag: "web".into(),
            interval_s: 30.0,
            started: Utc::now(),
            group_file: String::new(),
        };
        let decision = RecordedDecision {
            current: 1,
            active: 1,
            desired: 1,
            min: 1,
            max: 2,
            winner: None,
            reason: "stay".into(),
        };
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-03T10:15:00Z")
            .unwrap()
            .with_timezone(&Utc);
        // A restart within the hour (twice): each recorder keeps a file of its own.
        for _ in 0..3 {
            let mut recording = Rotating::new(settings.clone(), header.clone());
            recording.tick(at, &[], &[], &decision).unwrap();
            recording.finish().unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("web"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "2026-12-03T10.1.rec.gz",
                "2026-12-03T10.2.rec.gz",
                "2026-12-03T10.rec.gz"
            ]
        );
        for name in names {
            let read = super::super::read(&dir.path().join("web").join(name)).unwrap();
            assert_eq!(read.ticks.len(), 1, "each file kept its tick");
        }
    }
}
