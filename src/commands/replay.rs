//! `do-scaler replay FILE [--config GROUP_FILE] [--boot 60s] [--chart OUT.svg] [--json]`: runs
//! a group file's decisions over a recording (see [`crate::record::replay`]) and compares them
//! with what the recorded group did.

use super::check::CommandOutput;
use crate::record::replay::{Replay, SizePoint, Totals, replay};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `replay` was asked.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// The recordings: files, or folders of `.rec.gz` files (as `[record]` writes them, one
    /// an hour), of one group, played in time order.
    pub files: Vec<PathBuf>,
    /// A group file to replay instead of the one the recording holds.
    pub config: Option<PathBuf>,
    /// How long a replayed create takes to become active.
    pub boot: Duration,
    /// Where to draw recorded against replayed size.
    pub chart: Option<PathBuf>,
    /// JSON on stdout instead of the report.
    pub json: bool,
}

fn fail(stderr: String) -> CommandOutput {
    CommandOutput {
        stdout: String::new(),
        stderr,
        exit_code: 1,
    }
}

/// The recording files `paths` name: files as given, folders as their `.rec.gz` files in
/// name order (hour order, for `[record]`'s names).
fn recording_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("{}: cannot read: {e}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.to_string_lossy().ends_with(".rec.gz"))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{}: no .rec.gz recording in this folder",
                    path.display()
                ));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Reads every file and joins their ticks in time order; they must be of one group.
fn read_all(files: &[PathBuf]) -> Result<crate::record::Recording, String> {
    let mut joined: Option<crate::record::Recording> = None;
    for file in files {
        let next = crate::record::read(file).map_err(|e| e.to_string())?;
        match &mut joined {
            None => joined = Some(next),
            Some(all) => {
                if next.header.group != all.header.group {
                    return Err(format!(
                        "{}: a recording of group `{}`, not `{}`: replay one group at a time",
                        file.display(),
                        next.header.group,
                        all.header.group
                    ));
                }
                all.truncated |= next.truncated;
                all.ticks.extend(next.ticks);
            }
        }
    }
    let mut all = joined.ok_or_else(|| "no recording given".to_string())?;
    all.ticks.sort_by_key(|t| t.at_ms);
    all.ticks.dedup_by_key(|t| t.at_ms);
    Ok(all)
}

/// Replays and reports.
pub fn run(request: &ReplayRequest) -> CommandOutput {
    let files = match recording_files(&request.files) {
        Ok(files) => files,
        Err(error) => return fail(format!("{error}\n")),
    };
    let recording = match read_all(&files) {
        Ok(recording) => recording,
        Err(error) => return fail(format!("{error}\n")),
    };
    let first_file = files.first().cloned().unwrap_or_default();
    let interval = Duration::from_secs_f64(recording.header.interval_s.max(1.0));
    let (path, text) = match &request.config {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => (path.clone(), text),
            Err(error) => return fail(format!("{}: cannot read: {error}\n", path.display())),
        },
        None => (
            PathBuf::from(format!(
                "{} (the group file recorded in it)",
                first_file.display()
            )),
            recording.header.group_file.clone(),
        ),
    };
    // A tired operator's slip: the base file instead of a group file.
    if let Ok(table) = text.parse::<toml::Table>()
        && ["conf_dir", "state", "api_url", "status_api", "actions_dir"]
            .iter()
            .any(|key| table.contains_key(*key))
    {
        return fail(format!(
            "{}: this is a base file (it sets conf_dir, state or api_url); --config takes a group file, such as conf.d/web.toml\n",
            path.display()
        ));
    }
    let mut group = match crate::config::load::group_for_replay(&path, &text, interval) {
        Ok(group) => group,
        Err(diagnostics) => {
            let mut stderr: String = diagnostics.iter().map(|d| format!("{d}\n")).collect();
            stderr.push_str("replay: the group file is not valid; nothing replayed\n");
            return fail(stderr);
        }
    };
    // The replay ticks when the recording did, whatever interval the file says.
    group.interval = interval;
    let managed = format!("do-scaler:{}", "replay");
    let result = match replay(&recording, group, &managed, request.boot) {
        Ok(result) => result,
        Err(error) => return fail(format!("{}: {error}\n", first_file.display())),
    };
    let mut stderr = String::new();
    if recording.truncated {
        stderr.push_str(&format!(
            "a recording was cut short (a crash or a full disk?): replayed its {} whole ticks\n",
            result.ticks
        ));
    }
    if let Some(chart) = &request.chart {
        // The file's name, not its folder: the caption is read beside the chart.
        let name = match &request.config {
            Some(config) => config.file_name().map_or_else(
                || config.display().to_string(),
                |n| n.to_string_lossy().into(),
            ),
            None => "as recorded".to_string(),
        };
        let caption = format!(
            "{}: recorded and replayed size ({name})",
            recording.header.group
        );
        if let Err(error) = draw(chart, &result.sizes, &caption) {
            return fail(format!(
                "{stderr}{}: cannot draw: {error}\n",
                chart.display()
            ));
        }
        stderr.push_str(&format!("chart: {}\n", chart.display()));
    }
    let stdout = if request.json {
        let mut json = serde_json::json!({
            "recorded": result.recorded,
            "replayed": result.replayed,
            "ticks": result.ticks,
            "work_spread": result.work_spread,
            "notes": result.notes,
        });
        json["config"] = serde_json::Value::String(path.display().to_string());
        format!("{json:#}\n")
    } else {
        report(&result, &recording.header.group, &path)
    };
    CommandOutput {
        stdout,
        stderr,
        exit_code: 0,
    }
}

/// The report for people.
fn report(result: &Replay, group: &str, config: &Path) -> String {
    let hours = result.sizes.last().map_or(0.0, |p| p.seconds / 3600.0);
    let mut out = format!(
        "replayed {} ticks ({hours:.1} h) of {group} through {}\n\n",
        result.ticks,
        config.display()
    );
    out.push_str(&format!(
        "{:<26} {:>10} {:>10}\n",
        "", "recorded", "replayed"
    ));
    let row = |name: &str, get: fn(&Totals) -> f64, digits: usize| {
        format!(
            "{name:<26} {:>10.digits$} {:>10.digits$}\n",
            get(&result.recorded),
            get(&result.replayed)
        )
    };
    out.push_str(&row("scale events", |t| f64::from(t.scale_events), 0));
    out.push_str(&row("droplet-hours", |t| t.droplet_hours, 1));
    out.push_str(&row("minutes above target", |t| t.minutes_above_target, 1));
    out.push_str(&row(
        "unserved vCPU-minutes",
        |t| t.unserved_vcpu_minutes,
        1,
    ));
    out.push('\n');
    for note in &result.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

/// Draws the recorded size, the replayed size and the recorded work (in droplets' worth of
/// vCPUs at their count) over hours.
fn draw(path: &Path, points: &[SizePoint], caption: &str) -> Result<(), String> {
    use plotters::prelude::*;
    let error = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::new(path, (960, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(&e))?;
    let hours = |p: &SizePoint| p.seconds / 3600.0;
    let end = points.last().map(hours).unwrap_or(1.0).max(0.01);
    let top = points
        .iter()
        .map(|p| f64::from(p.recorded.max(p.replayed)).max(p.busy_vcpus.unwrap_or(0.0)))
        .fold(1.0f64, f64::max)
        + 1.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(44)
        .build_cartesian_2d(0f64..end, 0f64..top)
        .map_err(|e| error(&e))?;
    chart
        .configure_mesh()
        .x_desc("hours")
        .y_desc("droplets / busy vCPUs")
        .draw()
        .map_err(|e| error(&e))?;
    let (orange, gray, blue) = (
        RGBColor(200, 120, 0),
        RGBColor(120, 120, 120),
        RGBColor(30, 90, 200),
    );
    let stepped = |get: fn(&SizePoint) -> u32| {
        let mut line = Vec::with_capacity(points.len() * 2);
        for (i, p) in points.iter().enumerate() {
            if let Some(previous) = i.checked_sub(1).map(|j| &points[j]) {
                line.push((hours(p), f64::from(get(previous))));
            }
            line.push((hours(p), f64::from(get(p))));
        }
        line
    };
    if points.iter().any(|p| p.busy_vcpus.is_some()) {
        chart
            .draw_series(LineSeries::new(
                points
                    .iter()
                    .filter_map(|p| p.busy_vcpus.map(|b| (hours(p), b))),
                orange.stroke_width(1),
            ))
            .map_err(|e| error(&e))?
            .label("recorded work (busy vCPUs)")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], orange.stroke_width(1))
            });
    }
    chart
        .draw_series(LineSeries::new(
            stepped(|p| p.recorded),
            gray.stroke_width(3),
        ))
        .map_err(|e| error(&e))?
        .label("recorded size")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], gray.stroke_width(3)));
    chart
        .draw_series(LineSeries::new(
            stepped(|p| p.replayed),
            blue.stroke_width(2),
        ))
        .map_err(|e| error(&e))?
        .label("replayed size")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| error(&e))?;
    root.present().map_err(|e| error(&e))?;
    Ok(())
}
