//! `[health]`: which droplets are unhealthy and how they are replaced. A droplet that fails
//! its check for `unhealthy_after` consecutive ticks, once past `warmup` and `grace`, is
//! replaced launch first: a new droplet is created (one past `max` if need be), and only once
//! it passes its own check is the old one drained and destroyed.

use super::schema::HealthFile;
use super::validate::{Report, duration_or, span_of};
use std::time::Duration;

/// How a droplet's health is judged each tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// Its scrape fails while another droplet of the group answers (a failing network or
    /// scraper fails them all, and proves nothing about one droplet).
    Metrics,
    /// A TCP connection to this port on its scrape address.
    Tcp {
        /// The port.
        port: u16,
    },
    /// An HTTP GET of `path` on this port answering 2xx or 3xx.
    Http {
        /// The port.
        port: u16,
        /// The path, starting with `/`.
        path: String,
    },
}

/// `[health]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// The check.
    pub check: HealthCheck,
    /// How long one check may take.
    pub timeout: Duration,
    /// Consecutive failed ticks before a replacement.
    pub unhealthy_after: u32,
    /// After `warmup`, how long failures do not count.
    pub grace: Duration,
    /// The most droplets billed during replacements, percent of desired.
    pub max_percent: u32,
    /// Replacements started in any hour at most.
    pub max_replacements_per_hour: u32,
}

impl Health {
    /// The most droplets billed while replacing, for `desired`: `max_percent` of it rounded
    /// down, at least `desired + 1` (or no replacement could ever launch).
    pub fn max_billed(&self, desired: u32) -> u32 {
        let by_percent = (u64::from(desired) * u64::from(self.max_percent) / 100) as u32;
        by_percent.max(desired.saturating_add(1))
    }
}

/// Consecutive failed replacements after which replacement pauses itself (a broken template
/// or image would otherwise create and destroy droplets forever).
pub const FAILED_REPLACEMENTS_PAUSE: usize = 3;

/// Checks `[health]` against the group's `max` and `tick_timeout`.
pub(super) fn build_health(
    file: &HealthFile,
    max: u32,
    tick_timeout: Duration,
    report: &mut Report<'_>,
) -> Health {
    let kind = file.check.as_ref().map(|c| c.get_ref().as_str());
    let port = file.port.as_ref().map(|p| *p.get_ref());
    let needs_port = |report: &mut Report<'_>, kind: &str| match port {
        Some(0) => {
            report.error(
                file.port.as_ref().and_then(span_of),
                "health.port is 0: name the port the check connects to",
            );
            0
        }
        Some(port) => port,
        None => {
            report.error(
                file.check.as_ref().and_then(span_of),
                format!("health.check = \"{kind}\" needs health.port: add port = 80 (or the port the droplets serve on)"),
            );
            0
        }
    };
    let check = match kind {
        None | Some("metrics") => {
            if file.port.is_some() || file.path.is_some() {
                report.error(
                    file.port
                        .as_ref()
                        .and_then(span_of)
                        .or_else(|| file.path.as_ref().and_then(span_of)),
                    "health.port and health.path belong to check = \"tcp\" or \"http\": the default check (\"metrics\") reads the droplet's scrape",
                );
            }
            HealthCheck::Metrics
        }
        Some("tcp") => HealthCheck::Tcp {
            port: needs_port(report, "tcp"),
        },
        Some("http") => {
            let path = file
                .path
                .as_ref()
                .map(|p| p.get_ref().clone())
                .unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                report.error(
                    file.path.as_ref().and_then(span_of),
                    format!(
                        "health.path `{}` must start with `/` and hold no spaces: such as \"/healthz\"",
                        path.escape_default()
                    ),
                );
            }
            HealthCheck::Http {
                port: needs_port(report, "http"),
                path,
            }
        }
        Some(other) => {
            report.error(
                file.check.as_ref().and_then(span_of),
                format!("unknown health.check `{other}`: use \"metrics\", \"tcp\" or \"http\""),
            );
            HealthCheck::Metrics
        }
    };
    // The default fits any tick: 2 s, or half the tick's time when that is shorter.
    let timeout = match &file.timeout {
        None => Duration::from_secs(2).min(tick_timeout / 2),
        Some(timeout) => {
            let value = timeout.get_ref().0;
            if value.is_zero() || value >= tick_timeout {
                report.error(
                    span_of(timeout),
                    format!(
                        "health.timeout must be above 0s and below the tick's time ({}): the checks run inside the tick",
                        super::duration::format_duration(tick_timeout)
                    ),
                );
            }
            value
        }
    };
    let unhealthy_after = file.unhealthy_after.as_ref().map_or(3, |n| *n.get_ref());
    if unhealthy_after == 0 {
        report.error(
            file.unhealthy_after.as_ref().and_then(span_of),
            "health.unhealthy_after is 0: a droplet needs at least one failed tick to be unhealthy",
        );
    }
    let max_percent = file.max_percent.as_ref().map_or(150, |n| *n.get_ref());
    if max_percent < 100 {
        report.error(
            file.max_percent.as_ref().and_then(span_of),
            format!(
                "health.max_percent is {max_percent}: it must be at least 100, or a replacement could never launch before its old droplet goes"
            ),
        );
    }
    Health {
        check,
        timeout,
        unhealthy_after,
        grace: duration_or(&file.grace, Duration::from_secs(300)),
        max_percent,
        max_replacements_per_hour: file
            .max_replacements_per_hour
            .as_ref()
            .map_or(max, |n| *n.get_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::MINIMAL_GROUP as BASE;

    #[test]
    fn health_is_read_with_its_defaults_and_its_mistakes_are_named() {
        let group = crate::config::group_from_toml("web", &format!("{BASE}[health]\n")).unwrap();
        let health = group.health.unwrap();
        assert_eq!(health.check, HealthCheck::Metrics);
        assert_eq!(health.unhealthy_after, 3);
        assert_eq!(health.grace, Duration::from_secs(300));
        assert_eq!(health.max_replacements_per_hour, 5, "defaults to max");
        assert_eq!(health.max_percent, 150);

        let http = crate::config::group_from_toml(
            "web",
            &format!("{BASE}[health]\ncheck = \"http\"\nport = 80\npath = \"/healthz\"\n"),
        )
        .unwrap();
        assert_eq!(
            http.health.unwrap().check,
            HealthCheck::Http {
                port: 80,
                path: "/healthz".into()
            }
        );

        let broken = format!(
            "{BASE}[health]\ncheck = \"tcp\"\nunhealthy_after = 0\nmax_percent = 90\ntimeout = \"1h\"\n"
        );
        let errors: Vec<String> = crate::config::group_from_toml("web", &broken)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        let all = errors.join("\n");
        for expected in [
            "needs health.port",
            "health.unhealthy_after is 0",
            "health.max_percent is 90",
            "health.timeout must be above 0s",
        ] {
            assert!(all.contains(expected), "{expected} not in:\n{all}");
        }
        assert!(
            errors.iter().all(|e| e.starts_with("conf.d/web.toml:")),
            "{all}"
        );
        let unknown =
            crate::config::group_from_toml("web", &format!("{BASE}[health]\ncheck = \"ping\"\n"))
                .unwrap_err();
        assert!(
            unknown[0]
                .to_string()
                .contains("unknown health.check `ping`")
        );
    }

    #[test]
    fn the_limits_round_as_documented() {
        let health = Health {
            check: HealthCheck::Metrics,
            timeout: Duration::from_secs(2),
            unhealthy_after: 3,
            grace: Duration::ZERO,
            max_percent: 150,
            max_replacements_per_hour: 5,
        };
        assert_eq!(
            health.max_billed(3),
            4,
            "floor(4.5), and at least desired + 1"
        );
        assert_eq!(health.max_billed(1), 2, "floor(1.5) = 1 would never launch");
        assert_eq!(health.max_billed(10), 15);
    }
}
