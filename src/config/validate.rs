//! Checks a parsed group file and builds the typed `Group`, collecting every problem it finds
//! (not just the first) as diagnostics that point at the offending value.

use super::diagnostic::Diagnostic;
use super::model::{
    ActionLists, Actions, AddressKind, Change, Condition, DropletTemplate, Group, Image, OnMissing,
    Rule, RuleKind, Saturation, ScaleIn, ScaleInChoice, Schedule, Scrape, SshKey, UpDown,
};
use super::schema::{
    ActionListsFile, ChangeFile, GroupFile, ImageFile, OnMissingFile, RuleFile, ScheduleFile,
    SshKeyFile,
};
use crate::query;
use std::collections::{BTreeSet, HashSet};
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;
use toml::Spanned;

/// The default tag that protects a droplet from scale-in.
pub const DEFAULT_PROTECT_TAG: &str = "do-scaler-protect";

/// What validation of one group needs besides its file.
pub struct GroupContext<'a> {
    /// The group's name (file stem).
    pub name: &'a str,
    /// The group file as the user would name it.
    pub file: &'a Path,
    /// The file's text (for line and column).
    pub source: &'a str,
    /// The base file's interval, used when the group sets none.
    pub default_interval: Duration,
    /// The folder relative paths resolve against.
    pub base_dir: &'a Path,
    /// Every action name that exists (shipped and in `actions/`).
    pub known_actions: &'a BTreeSet<String>,
}

/// Collects diagnostics for one file.
pub(super) struct Report<'a> {
    file: &'a Path,
    source: &'a str,
    diagnostics: Vec<Diagnostic>,
}

impl Report<'_> {
    pub(super) fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::error_at(self.file, self.source, span, message));
    }
    pub(super) fn warning(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::warning_at(
            self.file,
            self.source,
            span,
            message,
        ));
    }
}

/// Validates a tag against DigitalOcean's tag pattern `^[a-zA-Z0-9_\-:]+$` (at most 255).
pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("a tag cannot be empty".into());
    }
    if tag.len() > 255 {
        return Err(format!("tag `{tag}` is longer than 255 characters"));
    }
    if let Some(bad) = tag
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':')))
    {
        return Err(format!(
            "tag `{tag}` contains `{bad}`: DigitalOcean tags allow only letters, digits, `_`, `-` and `:`"
        ));
    }
    Ok(())
}

/// Validates a droplet name prefix: new names are `<prefix>-<suffix>` and must match
/// DigitalOcean's `^[a-zA-Z0-9]?[a-z0-9A-Z.\-]*[a-z0-9A-Z]$`.
pub fn check_name_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("name_prefix cannot be empty".into());
    }
    if prefix.len() > 48 {
        return Err(format!(
            "name_prefix `{prefix}` is longer than 48 characters: names must stay valid host names"
        ));
    }
    if let Some(bad) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-')))
    {
        let fix = if bad == '_' {
            format!(": use `-` instead, as in \"{}\"", prefix.replace('_', "-"))
        } else {
            String::new()
        };
        return Err(format!(
            "name_prefix `{prefix}` contains `{bad}`, which DigitalOcean droplet names do not allow (letters, digits, `.` and `-` only){fix}"
        ));
    }
    if !prefix.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "name_prefix `{prefix}` must start with a letter or digit"
        ));
    }
    Ok(())
}

/// Compiles a five-field cron pattern (minute hour day-of-month month day-of-week).
pub fn compile_cron(text: &str) -> Result<croner::Cron, String> {
    let fields = text.split_whitespace().count();
    if text.trim_start().starts_with('@') {
        return Err(format!(
            "cron `{text}`: nicknames such as @yearly or @daily are not read; write the five fields, as in \"0 0 1 1 *\" for @yearly"
        ));
    }
    if fields != 5 {
        let hint = if fields == 6 {
            ": do-scaler's cron has no seconds field, drop the first one"
        } else {
            ": write minute hour day-of-month month day-of-week, as in \"0 8 * * 1-5\""
        };
        return Err(format!("cron `{text}` has {fields} fields, not 5{hint}"));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("cron `{text}` is not valid: {e}"))
        .and_then(|cron| {
            // A pattern that never fires (30 February) would be a schedule that silently never
            // opens. Every possible date recurs within eight years (29 February included).
            let start = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|e| e.to_string())?;
            match cron.find_next_occurrence(&start, false) {
                Ok(next) if next < start + chrono::TimeDelta::days(366 * 8) => Ok(cron),
                _ => Err(format!(
                    "cron `{text}` never fires (no such date): check its day-of-month and month"
                )),
            }
        })
}

/// Parses an IANA time zone name.
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, String> {
    chrono_tz::Tz::from_str(name).map_err(|_| {
        format!("unknown time zone `{name}`: use an IANA name such as \"Europe/Berlin\" or \"UTC\"")
    })
}

fn on_missing(file: OnMissingFile) -> OnMissing {
    match file {
        OnMissingFile::Hold => OnMissing::Hold,
        OnMissingFile::ScaleUp => OnMissing::ScaleUp,
        OnMissingFile::Desired(n) => OnMissing::Desired(n),
    }
}

pub(super) fn span_of<T>(value: &Spanned<T>) -> Option<Range<usize>> {
    Some(value.span())
}

/// Validates one parsed group file. Returns the group when there are no errors, and every
/// diagnostic (errors and warnings) either way.
pub fn validate_group(ctx: &GroupContext<'_>, file: GroupFile) -> (Option<Group>, Vec<Diagnostic>) {
    let mut report = Report {
        file: ctx.file,
        source: ctx.source,
        diagnostics: Vec::new(),
    };
    let group = build_group(ctx, file, &mut report);
    let has_error = report.diagnostics.iter().any(Diagnostic::is_error);
    (group.filter(|_| !has_error), report.diagnostics)
}

/// The prefix of the managed-by tag (`do-scaler:<instance>`): no group may be defined by it
/// or hand it out, or one daemon's droplets would join another group.
pub const RESERVED_TAG_PREFIX: &str = "do-scaler:";

/// Refuses a name (a group's file stem, a rule's or a schedule's name) that could not be shown
/// safely: control characters (a newline, a terminal escape) or more than 64 characters.
pub fn check_display_name(what: &str, name: &str) -> Result<(), String> {
    if name.chars().any(char::is_control) {
        return Err(format!(
            "{what} `{}` holds control characters (newlines, terminal escapes): use letters, digits, `-` and `_`",
            name.escape_default()
        ));
    }
    if name.chars().count() > 64 {
        return Err(format!("{what} is longer than 64 characters"));
    }
    Ok(())
}

fn build_group(ctx: &GroupContext<'_>, file: GroupFile, report: &mut Report<'_>) -> Option<Group> {
    if let Err(reason) = check_display_name("the group's name (its file name)", ctx.name) {
        report.error(None, reason);
    }
    if let Err(reason) = check_tag(file.tag.get_ref()) {
        report.error(span_of(&file.tag), reason);
    } else if file
        .tag
        .get_ref()
        .to_ascii_lowercase()
        .starts_with(RESERVED_TAG_PREFIX)
    {
        report.error(
            span_of(&file.tag),
            format!(
                "tag `{}` starts with `{RESERVED_TAG_PREFIX}`, the managed-by tag's prefix: such a group would take in droplets of every group its daemon manages; choose the group's own tag",
                file.tag.get_ref()
            ),
        );
    }
    let (min, max) = (*file.min.get_ref(), *file.max.get_ref());
    if min > max {
        report.error(
            span_of(&file.min),
            format!("min ({min}) is greater than max ({max}): lower min or raise max"),
        );
    }
    if max == 0 {
        report.warning(
            span_of(&file.max),
            "max is 0: this group will never have a droplet",
        );
    }

    let interval = file
        .interval
        .as_ref()
        .map(|d| d.get_ref().0)
        .unwrap_or(ctx.default_interval);
    if interval < Duration::from_secs(1) {
        let span = file.interval.as_ref().and_then(span_of);
        report.error(span, "interval is shorter than 1s: use at least \"1s\"");
    }
    let tick_timeout = match &file.tick_timeout {
        Some(timeout) => {
            let value = timeout.get_ref().0;
            if value.is_zero() || value > interval {
                report.error(
                    span_of(timeout),
                    format!(
                        "tick_timeout must be above 0s and at most the interval ({}): a tick may not outlast the next one",
                        super::duration::format_duration(interval)
                    ),
                );
            }
            value
        }
        None => interval.mul_f64(0.8),
    };

    let mut adopt_tags = Vec::new();
    for tag in file.adopt_tags.iter().flatten() {
        if let Err(reason) = check_tag(tag.get_ref()) {
            report.error(span_of(tag), format!("in adopt_tags: {reason}"));
        }
        adopt_tags.push(tag.get_ref().clone());
    }
    let protect_tag = match &file.protect_tag {
        Some(tag) => {
            if let Err(reason) = check_tag(tag.get_ref()) {
                report.error(span_of(tag), format!("protect_tag: {reason}"));
            }
            tag.get_ref().clone()
        }
        None => DEFAULT_PROTECT_TAG.to_string(),
    };
    let max_creates_per_hour = match &file.max_creates_per_hour {
        Some(limit) => {
            if *limit.get_ref() == 0 && max > 0 {
                report.error(
                    span_of(limit),
                    "max_creates_per_hour is 0, so the group could never grow: raise it or remove the key",
                );
            }
            *limit.get_ref()
        }
        // Filled in below, once the schedules are known.
        None => 0,
    };

    let template = build_template(ctx, &file, report);
    let scrape = build_scrape(&file, report);
    let sources = super::sources::build_sources(
        &file,
        &scrape,
        (interval, tick_timeout),
        ctx.base_dir,
        report,
    );
    let scale_in = build_scale_in(&file, &sources, report);
    let idle = file
        .idle
        .as_ref()
        .map(|idle| super::sources::build_idle(idle, &sources, report));
    let actions = build_actions(ctx, &file, report);
    let drain = file
        .drain
        .as_ref()
        .map(|drain| super::drain::build_drain(ctx, drain, report));
    let health = file
        .health
        .as_ref()
        .map(|health| super::health::build_health(health, max, tick_timeout, report));
    let refresh = file
        .refresh
        .as_ref()
        .and_then(|refresh| super::refresh::build_refresh(refresh, health.is_some(), report));

    let mut rules = Vec::new();
    let mut rule_names = HashSet::new();
    for rule in &file.rules {
        let name = rule.get_ref().name.get_ref();
        if !rule_names.insert(name.clone()) {
            report.error(
                span_of(&rule.get_ref().name),
                format!("a second rule is named `{name}`: rule names must be unique in a group"),
            );
        }
        if let Some(rule) = build_rule(ctx, rule, &sources, interval, report) {
            rules.push(rule);
        }
    }
    if rules.is_empty() && file.rules.is_empty() && idle.is_none() {
        report.warning(
            None,
            "this group has no [[rule]]: it only keeps its size within min, max and schedules",
        );
    }

    let mut schedules = Vec::new();
    for (index, schedule) in file.schedules.iter().enumerate() {
        if schedule.get_ref().idle_count.is_some() && idle.is_none() {
            report.error(
                schedule.get_ref().idle_count.as_ref().and_then(span_of),
                "idle_count in a schedule needs an [idle] table in the group: add [idle] with count and busy",
            );
        }
        if let Some(schedule) = build_schedule(index, schedule, min, max, report) {
            schedules.push(schedule);
        }
    }

    // The default spend guard follows the largest max the group may ever have, a schedule's
    // included: a window that raises max must not be throttled by the everyday max.
    let max_creates_per_hour = if file.max_creates_per_hour.is_some() {
        max_creates_per_hour
    } else {
        schedules
            .iter()
            .filter_map(|s: &Schedule| s.max)
            .fold(max, u32::max)
            .saturating_mul(2)
    };

    let cooldown = UpDown {
        up: duration_or(&file.cooldown.up, Duration::from_secs(120)),
        down: duration_or(&file.cooldown.down, Duration::from_secs(300)),
    };
    let stabilization = UpDown {
        up: duration_or(&file.stabilization.up, Duration::ZERO),
        down: duration_or(&file.stabilization.down, Duration::from_secs(300)),
    };

    Some(Group {
        name: ctx.name.to_string(),
        file: ctx.file.to_path_buf(),
        source: ctx.source.to_string(),
        tag: file.tag.into_inner(),
        min,
        max,
        interval,
        tick_timeout,
        on_missing: file
            .on_missing
            .map(|m| on_missing(m.into_inner()))
            .unwrap_or(OnMissing::Hold),
        warmup: duration_or(&file.warmup, Duration::from_secs(120)),
        protect_tag,
        allow_unmanaged: file.allow_unmanaged.unwrap_or(false),
        adopt_tags,
        max_creates_per_hour,
        template: template?,
        scrape,
        sources,
        idle,
        cooldown,
        stabilization,
        scale_in,
        drain,
        health,
        refresh,
        rules,
        schedules,
        actions,
    })
}

pub(super) fn duration_or(
    value: &Option<Spanned<super::duration::ConfigDuration>>,
    default: Duration,
) -> Duration {
    value.as_ref().map(|d| d.get_ref().0).unwrap_or(default)
}

fn build_template(
    ctx: &GroupContext<'_>,
    file: &GroupFile,
    report: &mut Report<'_>,
) -> Option<DropletTemplate> {
    let droplet = &file.droplet;
    let name_prefix = match &droplet.name_prefix {
        Some(prefix) => {
            if let Err(reason) = check_name_prefix(prefix.get_ref()) {
                report.error(span_of(prefix), reason);
            }
            prefix.get_ref().clone()
        }
        None => {
            if let Err(reason) = check_name_prefix(ctx.name) {
                report.error(
                    None,
                    format!(
                        "the group name `{}` is used as the droplet name prefix, but {reason}: set droplet.name_prefix",
                        ctx.name
                    ),
                );
            }
            ctx.name.to_string()
        }
    };
    for (key, value) in [("region", &droplet.region), ("size", &droplet.size)] {
        if value.get_ref().trim().is_empty() {
            report.error(span_of(value), format!("droplet.{key} cannot be empty"));
        }
    }
    let image = match droplet.image.get_ref() {
        ImageFile::Slug(slug) if slug.trim().is_empty() => {
            report.error(span_of(&droplet.image), "droplet.image cannot be empty");
            Image::Slug(String::new())
        }
        ImageFile::Slug(slug) => Image::Slug(slug.clone()),
        ImageFile::Id(id) => Image::Id(*id),
    };
    let mut tags = Vec::new();
    for tag in droplet.tags.iter().flatten() {
        if let Err(reason) = check_tag(tag.get_ref()) {
            report.error(span_of(tag), format!("in droplet.tags: {reason}"));
        } else if tag
            .get_ref()
            .to_ascii_lowercase()
            .starts_with(RESERVED_TAG_PREFIX)
        {
            report.error(
                span_of(tag),
                format!(
                    "in droplet.tags: `{}` starts with `{RESERVED_TAG_PREFIX}`: the managed-by tag is added by do-scaler itself, and another instance's would hand it these droplets",
                    tag.get_ref()
                ),
            );
        }
        tags.push(tag.get_ref().clone());
    }
    let user_data_file = droplet
        .user_data_file
        .as_ref()
        .map(|path| ctx.base_dir.join(path.get_ref()));
    let user_data = match (&droplet.user_data, &droplet.user_data_file) {
        (Some(_), Some(path)) => {
            report.error(
                span_of(path),
                "both user_data and user_data_file are set: keep one",
            );
            None
        }
        (Some(inline), None) => Some(inline.get_ref().clone()),
        (None, Some(path)) => {
            let full = ctx.base_dir.join(path.get_ref());
            match crate::config::files::read_config(&full) {
                Ok(text) => Some(text),
                Err(e) => {
                    report.error(
                        span_of(path),
                        format!(
                            "cannot read user_data_file {}: {e} (relative paths start at the base file's folder)",
                            full.display()
                        ),
                    );
                    None
                }
            }
        }
        (None, None) => None,
    };
    if let Some(data) = &user_data
        && let Err(reason) = super::user_data::credential_names(data)
    {
        report.error(
            droplet
                .user_data
                .as_ref()
                .or(droplet.user_data_file.as_ref())
                .and_then(span_of),
            reason.to_string(),
        );
    }
    if let Some(data) = &user_data
        && data.len() > 64 * 1024
    {
        report.error(
            droplet
                .user_data
                .as_ref()
                .or(droplet.user_data_file.as_ref())
                .and_then(span_of),
            "user data is larger than DigitalOcean's 64 KiB limit",
        );
    }
    if let Some(vpc) = &droplet.vpc_uuid
        && !is_uuid(vpc.get_ref())
    {
        report.error(
            span_of(vpc),
            format!(
                "vpc_uuid `{}` is not a UUID such as \"760e09ef-dc84-11e8-981e-3cfdfeaae000\"",
                vpc.get_ref()
            ),
        );
    }
    Some(DropletTemplate {
        name_prefix,
        region: droplet.region.get_ref().clone(),
        size: droplet.size.get_ref().clone(),
        image,
        ssh_keys: droplet
            .ssh_keys
            .iter()
            .flatten()
            .map(|key| match key.get_ref() {
                SshKeyFile::Fingerprint(f) => SshKey::Fingerprint(f.clone()),
                SshKeyFile::Id(id) => SshKey::Id(*id),
            })
            .collect(),
        vpc_uuid: droplet.vpc_uuid.as_ref().map(|v| v.get_ref().clone()),
        tags,
        user_data,
        user_data_file,
        monitoring: droplet.monitoring.unwrap_or(true),
        ipv6: droplet.ipv6.unwrap_or(false),
    })
}

fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn build_scrape(file: &GroupFile, report: &mut Report<'_>) -> Scrape {
    let scrape = &file.scrape;
    let address = match scrape.address.as_ref().map(|a| a.get_ref().as_str()) {
        None | Some("private") => AddressKind::Private,
        Some("public") => AddressKind::Public,
        Some("ipv6") => AddressKind::Ipv6,
        Some(other) => {
            report.error(
                scrape.address.as_ref().and_then(span_of),
                format!(
                    "unknown scrape.address `{other}`: use \"private\", \"public\" or \"ipv6\""
                ),
            );
            AddressKind::Private
        }
    };
    let path = scrape
        .path
        .as_ref()
        .map(|p| p.get_ref().clone())
        .unwrap_or_else(|| "/metrics".to_string());
    if !path.starts_with('/') {
        report.error(
            scrape.path.as_ref().and_then(span_of),
            format!("scrape.path `{path}` must start with `/`"),
        );
    }
    if let Some(port) = &scrape.port
        && *port.get_ref() == 0
    {
        report.error(
            span_of(port),
            "scrape.port cannot be 0: do-agent's usual port is 9110",
        );
    }
    let timeout = duration_or(&scrape.timeout, Duration::from_secs(3));
    if timeout.is_zero() {
        report.error(
            scrape.timeout.as_ref().and_then(span_of),
            "scrape.timeout cannot be 0s",
        );
    }
    Scrape {
        address,
        port: scrape.port.as_ref().map(|p| *p.get_ref()).unwrap_or(9110),
        path,
        timeout,
    }
}

/// Warns about a range that holds too few of the droplets' samples: scraped once an
/// interval, a range under 3 intervals holds at most two, so one late tick or failed scrape
/// leaves one and the rule has no value (it holds, and blocks scale-downs).
fn warn_short_ranges(
    report: &mut Report<'_>,
    what: &str,
    expr: &Spanned<String>,
    interval: Duration,
) {
    let Ok(compiled) = query::compile(expr.get_ref()) else {
        return;
    };
    let shortest = compiled
        .node
        .selectors()
        .into_iter()
        .map(|(_, range)| range)
        .filter(|range| !range.is_zero())
        .min();
    if let Some(range) = shortest
        && range < interval * 3
    {
        let format = super::duration::format_duration;
        report.warning(
            span_of(expr),
            format!(
                "{what}: the range [{}] holds at most {} sample(s) at the {} interval: one late tick or failed scrape leaves too few and the rule has no value (it holds): use at least 3 intervals ([{}]); Prometheus advises 4 ([{}])",
                format(range),
                (range.as_millis() / interval.as_millis().max(1)).max(1),
                format(interval),
                format(interval * 3),
                format(interval * 4)
            ),
        );
    }
}

pub(super) fn check_expression(report: &mut Report<'_>, what: &str, expr: &Spanned<String>) {
    if let Err(reason) = query::check_syntax(expr.get_ref()) {
        report.error(span_of(expr), format!("{what}: {reason}"));
    }
}

fn build_scale_in(
    file: &GroupFile,
    sources: &[super::model::Source],
    report: &mut Report<'_>,
) -> ScaleIn {
    let scale_in = &file.scale_in;
    let expressions: Vec<(String, &Spanned<String>)> = scale_in
        .by
        .iter()
        .map(|e| ("scale_in.by".to_string(), e))
        .chain(
            scale_in
                .busy
                .iter()
                .map(|e| ("scale_in.busy".to_string(), e)),
        )
        .collect();
    let source =
        super::sources::resolve_source(sources, &scale_in.source, "scale_in", &expressions, report);
    let choose = match scale_in.choose.as_ref().map(|c| c.get_ref().as_str()) {
        None | Some("newest") => ScaleInChoice::Newest,
        Some("oldest") => ScaleInChoice::Oldest,
        Some("least_busy") => match &scale_in.by {
            Some(by) => ScaleInChoice::LeastBusy(by.get_ref().clone()),
            None => {
                report.error(
                    scale_in.choose.as_ref().and_then(span_of),
                    "choose = \"least_busy\" needs `by`, a per-droplet expression such as '1 - avg by (droplet_id) (rate(node_cpu_seconds_total{mode=\"idle\"}[2m]))'",
                );
                ScaleInChoice::Newest
            }
        },
        Some(other) => {
            report.error(
                scale_in.choose.as_ref().and_then(span_of),
                format!("unknown scale_in.choose `{other}`: use \"newest\", \"oldest\" or \"least_busy\""),
            );
            ScaleInChoice::Newest
        }
    };
    if let Some(by) = &scale_in.by
        && !matches!(choose, ScaleInChoice::LeastBusy(_))
    {
        report.warning(
            span_of(by),
            "scale_in.by is only used with choose = \"least_busy\"",
        );
    }
    ScaleIn {
        choose,
        min_age: duration_or(&scale_in.min_age, Duration::from_secs(300)),
        busy: scale_in.busy.as_ref().map(|b| b.get_ref().clone()),
        source,
    }
}

pub(super) fn action_list(
    ctx: &GroupContext<'_>,
    list: &[Spanned<String>],
    report: &mut Report<'_>,
) -> Vec<String> {
    for name in list {
        if !ctx.known_actions.contains(name.get_ref()) {
            let known: Vec<&str> = ctx.known_actions.iter().map(String::as_str).collect();
            report.error(
                span_of(name),
                format!(
                    "unknown action `{}`: add actions/{}.rhai or use one of: {}",
                    name.get_ref(),
                    name.get_ref(),
                    known.join(", ")
                ),
            );
        }
    }
    list.iter().map(|n| n.get_ref().clone()).collect()
}

fn build_action_lists(
    ctx: &GroupContext<'_>,
    file: &ActionListsFile,
    report: &mut Report<'_>,
) -> ActionLists {
    ActionLists {
        up: file
            .up
            .as_ref()
            .map(|l| action_list(ctx, l, report))
            .unwrap_or_default(),
        down: file
            .down
            .as_ref()
            .map(|l| action_list(ctx, l, report))
            .unwrap_or_default(),
    }
}

fn build_actions(ctx: &GroupContext<'_>, file: &GroupFile, report: &mut Report<'_>) -> Actions {
    let up = match &file.actions.up {
        Some(list) => action_list(ctx, list, report),
        None => vec!["digitalocean_create_droplet".to_string()],
    };
    let down = match &file.actions.down {
        Some(list) => action_list(ctx, list, report),
        None => vec!["digitalocean_destroy_droplet".to_string()],
    };
    let mut params = std::collections::BTreeMap::new();
    for (name, table) in &file.actions.params {
        if !ctx.known_actions.contains(name) {
            report.error(
                span_of(table),
                format!(
                    "parameters for unknown action `{name}`: check the name under [actions.params]"
                ),
            );
        }
        params.insert(name.clone(), table.get_ref().clone());
    }
    Actions {
        lists: ActionLists { up, down },
        params,
    }
}

fn build_rule(
    ctx: &GroupContext<'_>,
    spanned: &Spanned<RuleFile>,
    sources: &[super::model::Source],
    interval: Duration,
    report: &mut Report<'_>,
) -> Option<Rule> {
    let rule = spanned.get_ref();
    let name = rule.name.get_ref().clone();
    let rule_span = span_of(&rule.name);
    if name.trim().is_empty() {
        report.error(rule_span.clone(), "rule name cannot be empty");
    }
    if let Err(reason) = check_display_name("rule name", &name) {
        report.error(rule_span.clone(), reason);
    }
    let conditions = [
        rule.when.is_some(),
        rule.when_all.is_some(),
        rule.when_any.is_some(),
    ]
    .iter()
    .filter(|set| **set)
    .count();
    let label = |key: &str| format!("rule `{name}` {key}");
    let expressions: Vec<(String, &Spanned<String>)> = rule
        .expr
        .iter()
        .map(|e| (label("expr"), e))
        .chain(rule.when.iter().map(|e| (label("when"), e)))
        .chain(
            rule.when_all
                .iter()
                .flat_map(|l| l.get_ref().iter().map(|e| (label("when_all"), e))),
        )
        .chain(
            rule.when_any
                .iter()
                .flat_map(|l| l.get_ref().iter().map(|e| (label("when_any"), e))),
        )
        .chain(rule.desired.iter().map(|e| (label("desired"), e)))
        .collect();
    let source = super::sources::resolve_source(
        sources,
        &rule.source,
        &format!("rule `{name}`"),
        &expressions,
        report,
    );
    if source == super::model::DROPLETS_SOURCE {
        for (what, expr) in &expressions {
            warn_short_ranges(report, what, expr, interval);
        }
    }
    let kind = if let Some(desired) = &rule.desired {
        for (key, set) in [
            ("expr", rule.expr.is_some()),
            ("target", rule.target.is_some()),
            ("per_droplet", rule.per_droplet.is_some()),
            ("tolerance", rule.tolerance.is_some()),
            ("when", rule.when.is_some()),
            ("when_all", rule.when_all.is_some()),
            ("when_any", rule.when_any.is_some()),
            ("for", rule.hold_for.is_some()),
            ("change", rule.change.is_some()),
            ("max_step_up", rule.max_step_up.is_some()),
            ("max_step_down", rule.max_step_down.is_some()),
            ("ceiling", rule.ceiling.is_some()),
            ("saturated_step", rule.saturated_step.is_some()),
        ] {
            if set {
                report.error(
                    span_of(desired),
                    format!("rule `{name}` has `desired` and `{key}`: a desired rule's expression is the number of droplets wanted; split it into two rules"),
                );
            }
        }
        RuleKind::Desired {
            expr: desired.get_ref().clone(),
        }
    } else if let Some(target) = &rule.target {
        for (key, set) in [
            ("when", rule.when.is_some()),
            ("when_all", rule.when_all.is_some()),
            ("when_any", rule.when_any.is_some()),
            ("for", rule.hold_for.is_some()),
            ("change", rule.change.is_some()),
        ] {
            if set {
                report.error(
                    rule_span.clone(),
                    format!("rule `{name}` has `target` and `{key}`: a target rule keeps `expr` near `target`; a threshold rule uses when/for/change. Split it into two rules"),
                );
            }
        }
        let value = *target.get_ref();
        if !(value.is_finite() && value > 0.0) {
            report.error(
                span_of(target),
                format!("rule `{name}`: target must be a number above 0"),
            );
        }
        let tolerance = rule.tolerance.as_ref().map(|t| *t.get_ref()).unwrap_or(0.1);
        if !(0.0..1.0).contains(&tolerance) {
            report.error(
                rule.tolerance.as_ref().and_then(span_of),
                format!("rule `{name}`: tolerance must be at least 0 and below 1, such as 0.1"),
            );
        }
        let expr = match &rule.expr {
            Some(expr) => expr.get_ref().clone(),
            None => {
                report.error(rule_span.clone(), format!("rule `{name}` has `target` but no `expr`: add the expression to keep near the target"));
                String::new()
            }
        };
        RuleKind::Target {
            expr,
            target: value,
            per_droplet: rule.per_droplet.unwrap_or(false),
            tolerance,
            max_step_up: rule.max_step_up.as_ref().map(|s| *s.get_ref()),
            max_step_down: rule.max_step_down.as_ref().map(|s| *s.get_ref()),
            saturation: saturation(rule, &name, report),
        }
    } else if conditions > 0 {
        if conditions > 1 {
            report.error(
                rule_span.clone(),
                format!(
                    "rule `{name}` sets more than one of when, when_all and when_any: keep one"
                ),
            );
        }
        for (key, set) in [
            ("expr", rule.expr.is_some()),
            ("per_droplet", rule.per_droplet.is_some()),
            ("tolerance", rule.tolerance.is_some()),
            ("max_step_up", rule.max_step_up.is_some()),
            ("max_step_down", rule.max_step_down.is_some()),
            ("ceiling", rule.ceiling.is_some()),
            ("saturated_step", rule.saturated_step.is_some()),
        ] {
            if set {
                report.error(rule_span.clone(), format!("rule `{name}` is a threshold rule (it has `when`), so `{key}` does not apply: remove it, or make a target rule with expr and target"));
            }
        }
        let condition = if let Some(when) = &rule.when {
            Condition::One(when.get_ref().clone())
        } else {
            let (key, list) = match (&rule.when_all, &rule.when_any) {
                (Some(list), _) => ("when_all", list),
                (None, Some(list)) => ("when_any", list),
                (None, None) => return None,
            };
            if list.get_ref().is_empty() {
                report.error(
                    span_of(list),
                    format!("rule `{name}`: {key} is empty: list at least one comparison"),
                );
            }
            let exprs = list.get_ref().iter().map(|e| e.get_ref().clone()).collect();
            if key == "when_all" {
                Condition::All(exprs)
            } else {
                Condition::Any(exprs)
            }
        };
        let change = match &rule.change {
            Some(change) => match change.get_ref() {
                ChangeFile::Count(n) => Change::Count(*n),
                ChangeFile::Percent(p) => Change::Percent(*p),
            },
            None => {
                report.error(rule_span.clone(), format!("rule `{name}` has a condition but no `change`: add change = \"+1\" or \"-1\""));
                Change::Count(0)
            }
        };
        RuleKind::Threshold {
            condition,
            hold_for: rule
                .hold_for
                .as_ref()
                .map(|d| d.get_ref().0)
                .unwrap_or(Duration::ZERO),
            change,
        }
    } else {
        report.error(
            rule_span,
            format!("rule `{name}` has neither `target`, `when` nor `desired`: add expr + target (keep a value near a target), when + change (act on a condition) or desired (the number of droplets wanted)"),
        );
        return None;
    };
    Some(Rule {
        name,
        kind,
        on_missing: rule.on_missing.as_ref().map(|m| on_missing(*m.get_ref())),
        actions: rule
            .actions
            .as_ref()
            .map(|a| build_action_lists(ctx, a, report)),
        source,
    })
}

/// A target rule's `ceiling` and `saturated_step`.
fn saturation(rule: &RuleFile, name: &str, report: &mut Report<'_>) -> Option<Saturation> {
    let Some(ceiling) = &rule.ceiling else {
        if let Some(step) = &rule.saturated_step {
            report.error(
                span_of(step),
                format!("rule `{name}`: saturated_step needs `ceiling`, the highest value expr can take (1 for CPU utilisation)"),
            );
        }
        return None;
    };
    let value = *ceiling.get_ref();
    if rule.per_droplet == Some(true) {
        report.error(
            span_of(ceiling),
            format!("rule `{name}`: ceiling does not apply to a per_droplet rule, whose group total has no fixed ceiling: remove it"),
        );
    }
    if !(value.is_finite() && value > 0.0) {
        report.error(
            span_of(ceiling),
            format!(
                "rule `{name}`: ceiling must be a number above 0, such as 1 for CPU utilisation"
            ),
        );
    }
    if let Some(target) = &rule.target
        && *target.get_ref() >= value
    {
        report.error(
            span_of(ceiling),
            format!(
                "rule `{name}`: ceiling {value} is not above the target {}: the value could never exceed its target; lower the target or raise the ceiling",
                target.get_ref()
            ),
        );
    }
    let step = match rule.saturated_step.as_ref().map(|s| (s, s.get_ref())) {
        None => Change::Percent(100),
        Some((_, ChangeFile::Count(n))) if *n > 0 => Change::Count(*n),
        Some((_, ChangeFile::Percent(p))) if *p > 0 => Change::Percent(*p),
        Some((spanned, _)) => {
            report.error(
                span_of(spanned),
                format!(
                    "rule `{name}`: saturated_step must grow the group, such as \"+100%\" or \"+4\""
                ),
            );
            Change::Percent(100)
        }
    };
    Some(Saturation {
        ceiling: value,
        step,
    })
}

fn build_schedule(
    index: usize,
    spanned: &Spanned<ScheduleFile>,
    group_min: u32,
    group_max: u32,
    report: &mut Report<'_>,
) -> Option<Schedule> {
    let schedule = spanned.get_ref();
    let name = schedule
        .name
        .as_ref()
        .map(|n| n.get_ref().clone())
        .unwrap_or_else(|| format!("schedule-{}", index + 1));
    if let Err(reason) = check_display_name("schedule name", &name) {
        report.error(schedule.name.as_ref().and_then(span_of), reason);
    }
    let cron = match compile_cron(schedule.cron.get_ref()) {
        Ok(cron) => Some(cron),
        Err(reason) => {
            report.error(span_of(&schedule.cron), reason);
            None
        }
    };
    let timezone = match &schedule.timezone {
        Some(tz) => match parse_timezone(tz.get_ref()) {
            Ok(tz) => Some(tz),
            Err(reason) => {
                report.error(span_of(tz), reason);
                None
            }
        },
        None => Some(chrono_tz::UTC),
    };
    let duration = schedule.duration.get_ref().0;
    if duration.is_zero() {
        report.error(
            span_of(&schedule.duration),
            format!("schedule `{name}`: duration cannot be 0s"),
        );
    }
    if schedule.min.is_none() && schedule.max.is_none() && schedule.idle_count.is_none() {
        report.error(
            Some(spanned.span()),
            format!("schedule `{name}` sets neither min, max nor idle_count: add at least one"),
        );
    }
    let min = schedule.min.as_ref().map(|m| *m.get_ref());
    let max = schedule.max.as_ref().map(|m| *m.get_ref());
    let (effective_min, effective_max) = (min.unwrap_or(group_min), max.unwrap_or(group_max));
    if effective_min > effective_max {
        let span = schedule
            .min
            .as_ref()
            .or(schedule.max.as_ref())
            .and_then(span_of);
        report.error(
            span,
            format!("schedule `{name}` makes min ({effective_min}) greater than max ({effective_max}) while it is open: set both min and max in the schedule"),
        );
    }
    Some(Schedule {
        name,
        cron_text: schedule.cron.get_ref().clone(),
        cron: cron?,
        timezone: timezone?,
        duration,
        min,
        max,
        idle_count: schedule.idle_count.as_ref().map(|c| *c.get_ref()),
    })
}

#[cfg(test)]
mod cron_tests {
    use super::compile_cron;

    #[test]
    fn impossible_dates_and_nicknames_are_refused() {
        for text in ["0 0 30 2 *", "0 0 31 4 *", "@yearly", "@daily"] {
            assert!(compile_cron(text).is_err(), "{text} was accepted");
        }
        for text in ["0 0 29 2 *", "0 8 * * 1-5", "*/5 * * * *", "0 0 31 * *"] {
            assert!(compile_cron(text).is_ok(), "{text} was refused");
        }
    }
}
