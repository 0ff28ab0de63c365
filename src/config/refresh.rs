//! `[refresh]`: replacing droplets that are out of date — made from an older droplet template
//! (their fingerprint tag differs), or older than `max_lifetime` — by the same launch-first
//! replacement as `[health]`, inside an optional window and a few at a time.

use super::model::Schedule;
use super::schema::RefreshFile;
use super::validate::{Report, compile_cron, parse_timezone, span_of};
use std::time::Duration;

/// How many droplets may be replaced at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// This many.
    Count(u32),
    /// This percent of desired, rounded down (at least one).
    Percent(u32),
}

impl Unavailable {
    /// The count for `desired`.
    pub fn of(self, desired: u32) -> u32 {
        match self {
            Unavailable::Count(n) => n,
            Unavailable::Percent(p) => ((u64::from(desired) * u64::from(p) / 100) as u32).max(1),
        }
    }
}

/// `[refresh]`, checked.
#[derive(Debug, Clone)]
pub struct Refresh {
    /// Droplets older than this are replaced.
    pub max_lifetime: Option<Duration>,
    /// The window refreshes may start in (any time without one).
    pub window: Option<Schedule>,
    /// Replacements in progress at most (refresh starts no more).
    pub max_unavailable: Unavailable,
}

/// The prefix of the tag that records which template a droplet was made from.
pub const FINGERPRINT_PREFIX: &str = "do-scaler-fp:";

/// The tag naming the fingerprint of the group `group_tag`'s `template`: a stable hash (FNV-1a,
/// 64 bits, the same in every build) of what makes a droplet what it is — image, size, region,
/// user data, VPC and tags — and of the group's tag, so two groups with the same template never
/// share a fingerprint tag (deleting one group's unused tag would strip the other's droplets).
/// Names, SSH keys and monitoring are left out: changing them does not make a droplet stale.
pub fn fingerprint(group_tag: &str, template: &super::model::DropletTemplate) -> String {
    let mut tags = template.tags.clone();
    tags.sort();
    let image = match &template.image {
        super::model::Image::Slug(slug) => format!("slug:{slug}"),
        super::model::Image::Id(id) => format!("id:{id}"),
    };
    let canonical = [
        group_tag.to_string(),
        image,
        template.size.clone(),
        template.region.clone(),
        template.user_data.clone().unwrap_or_default(),
        template.vpc_uuid.clone().unwrap_or_default(),
        tags.join(","),
    ]
    .join("\u{1f}");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in canonical.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{FINGERPRINT_PREFIX}{hash:016x}")
}

/// Checks `[refresh]`; it needs `[health]`, whose check a replacement must pass.
pub(super) fn build_refresh(
    file: &RefreshFile,
    has_health: bool,
    report: &mut Report<'_>,
) -> Option<Refresh> {
    if !has_health {
        report.error(
            None,
            "[refresh] needs [health]: a replacement must pass a health check before the droplet it replaces goes (add [health], even empty)",
        );
    }
    let max_lifetime = file.max_lifetime.as_ref().map(|d| d.get_ref().0);
    if max_lifetime.is_some_and(|d| d < Duration::from_secs(3600)) {
        report.error(
            file.max_lifetime.as_ref().and_then(span_of),
            "refresh.max_lifetime is shorter than 1h: droplets would be replaced as fast as they boot",
        );
    }
    let window = match (&file.cron, &file.duration) {
        (None, None) => {
            if let Some(tz) = &file.timezone {
                report.error(
                    span_of(tz),
                    "refresh.timezone needs refresh.cron and refresh.duration",
                );
            }
            None
        }
        (Some(cron), Some(duration)) => {
            let compiled = compile_cron(cron.get_ref())
                .map_err(|reason| report.error(span_of(cron), format!("refresh.cron: {reason}")))
                .ok();
            let timezone = match &file.timezone {
                Some(tz) => parse_timezone(tz.get_ref())
                    .map_err(|reason| report.error(span_of(tz), reason))
                    .ok(),
                None => Some(chrono_tz::UTC),
            };
            if duration.get_ref().0.is_zero() {
                report.error(span_of(duration), "refresh.duration cannot be 0s");
            }
            Some(Schedule {
                name: "refresh".into(),
                cron_text: cron.get_ref().clone(),
                cron: compiled?,
                timezone: timezone?,
                duration: duration.get_ref().0,
                min: None,
                max: None,
                idle_count: None,
            })
        }
        (Some(cron), None) => {
            report.error(
                span_of(cron),
                "refresh.cron needs refresh.duration: how long each window stays open",
            );
            None
        }
        (None, Some(duration)) => {
            report.error(
                span_of(duration),
                "refresh.duration needs refresh.cron: when each window opens",
            );
            None
        }
    };
    let max_unavailable = match file.max_unavailable.as_ref().map(|v| (v.get_ref(), v)) {
        None => Unavailable::Count(1),
        Some((toml::Value::Integer(n), _)) if (1..=i64::from(u32::MAX)).contains(n) => {
            Unavailable::Count(*n as u32)
        }
        Some((toml::Value::String(text), spanned)) => {
            match text
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<u32>().ok())
            {
                Some(p) if (1..=100).contains(&p) => Unavailable::Percent(p),
                _ => {
                    report.error(
                        span_of(spanned),
                        format!("refresh.max_unavailable `{text}`: use a count (2) or a percent of desired (\"25%\")"),
                    );
                    Unavailable::Count(1)
                }
            }
        }
        Some((_, spanned)) => {
            report.error(
                span_of(spanned),
                "refresh.max_unavailable: use a count of at least 1 (2) or a percent of desired (\"25%\")",
            );
            Unavailable::Count(1)
        }
    };
    Some(Refresh {
        max_lifetime,
        window,
        max_unavailable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::MINIMAL_GROUP as BASE;

    #[test]
    fn refresh_is_read_and_its_mistakes_are_named() {
        let group = crate::config::group_from_toml(
            "web",
            &format!("{BASE}[health]\n[refresh]\nmax_lifetime = \"14d\"\ncron = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\nduration = \"4h\"\nmax_unavailable = \"50%\"\n"),
        )
        .unwrap();
        let refresh = group.refresh.unwrap();
        assert_eq!(refresh.max_lifetime, Some(Duration::from_secs(14 * 86400)));
        assert_eq!(refresh.max_unavailable, Unavailable::Percent(50));
        assert_eq!(refresh.max_unavailable.of(5), 2);
        assert_eq!(Unavailable::Percent(10).of(3), 1, "at least one");
        assert_eq!(refresh.window.unwrap().timezone, chrono_tz::Europe::Berlin);
        let tag = fingerprint(&group.tag, &group.template);
        assert_eq!(tag.len(), FINGERPRINT_PREFIX.len() + 16);
        let mut changed = group.template.clone();
        changed.image = crate::config::Image::Slug("ubuntu-22-04-x64".into());
        assert_ne!(
            fingerprint(&group.tag, &changed),
            tag,
            "a new image is a new template"
        );
        assert_ne!(
            fingerprint("api", &group.template),
            tag,
            "another group's droplets never share the tag"
        );
        let mut renamed = group.template.clone();
        renamed.name_prefix = "other".into();
        assert_eq!(
            fingerprint(&group.tag, &renamed),
            tag,
            "a name does not make a droplet stale"
        );

        let broken = format!(
            "{BASE}[refresh]\nmax_lifetime = \"10m\"\ncron = \"0 2 * * *\"\nmax_unavailable = \"150%\"\n"
        );
        let all = crate::config::group_from_toml("web", &broken)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        for expected in [
            "[refresh] needs [health]",
            "refresh.max_lifetime is shorter than 1h",
            "refresh.cron needs refresh.duration",
            "refresh.max_unavailable `150%`",
        ] {
            assert!(all.contains(expected), "{expected} not in:\n{all}");
        }
    }
}
