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
            let path = self.folder().join(format!("{hour}.rec.gz"));
            // A restart within the hour starts the hour's file afresh under a new name.
            let path = if path.exists() {
                self.folder()
                    .join(format!("{hour}.{}.rec.gz", at.format("%M%S")))
            } else {
                path
            };
            let header = Header {
                started: at,
                ..self.header.clone()
            };
            self.current = Some((hour, Recorder::create(&path, &header)?));
            prune(&self.folder(), at, &self.settings)?;
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
/// while the folder holds more than `max_size`. The newest file (the one being written) is
/// never deleted.
pub fn prune(
    folder: &Path,
    now: DateTime<Utc>,
    settings: &RecordSettings,
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
    let newest = files.last().map(|(_, _, path)| path.clone());
    for (hour, size, path) in files {
        if Some(&path) == newest.as_ref() {
            break;
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
