//! `[drain]`: what happens to a droplet between being chosen to go and being destroyed. Its
//! drain actions run first (take it out of a load balancer, tell it to stop taking work), then
//! the group waits until its `busy` expression is false or `timeout` passes, and only then runs
//! the group's `down` actions on it. `on_timeout = "keep"` returns it to service instead.

use super::schema::DrainFile;
use super::validate::{GroupContext, Report, duration_or, span_of};
use std::time::Duration;

/// What happens when a drain times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// Destroy the droplet anyway.
    Destroy,
    /// Return it to service.
    Keep,
}

/// `[drain]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Drain {
    /// Actions run when droplets start draining.
    pub actions: Vec<String>,
    /// Actions run when draining droplets return to service.
    pub return_actions: Vec<String>,
    /// Per-droplet expression true while a draining droplet works.
    pub busy: Option<String>,
    /// The longest a drain lasts.
    pub timeout: Duration,
    /// What a timeout does.
    pub on_timeout: OnTimeout,
}

/// Checks `[drain]`: known actions, a valid expression, a known `on_timeout`.
pub(super) fn build_drain(
    ctx: &GroupContext<'_>,
    file: &DrainFile,
    report: &mut Report<'_>,
) -> Drain {
    let actions = super::validate::action_list(ctx, &file.actions, report);
    let return_actions = super::validate::action_list(ctx, &file.return_actions, report);
    if let Some(busy) = &file.busy {
        super::validate::check_expression(report, "drain.busy", busy);
        // It is judged on one scrape of each draining droplet: a range has nothing to cover.
        if let Ok(expression) = crate::query::compile(busy.get_ref())
            && !expression.longest_range().is_zero()
        {
            report.warning(
                span_of(busy),
                "drain.busy reads a range (such as rate(...[2m])), but it is judged on one scrape of each draining droplet, where a range has no value: every drain would wait for its timeout; use an instant expression such as 'sim_jobs_running > 0'",
            );
        }
    }
    let timeout = duration_or(&file.timeout, Duration::from_secs(300));
    if timeout.is_zero() {
        report.error(
            file.timeout.as_ref().and_then(span_of),
            "drain.timeout is 0: a drain could never wait; remove [drain] to destroy at once",
        );
    }
    let on_timeout = match file.on_timeout.as_ref().map(|v| v.get_ref().as_str()) {
        None | Some("destroy") => OnTimeout::Destroy,
        Some("keep") => OnTimeout::Keep,
        Some(other) => {
            report.error(
                file.on_timeout.as_ref().and_then(span_of),
                format!("unknown drain.on_timeout `{other}`: use \"destroy\" or \"keep\""),
            );
            OnTimeout::Destroy
        }
    };
    Drain {
        actions,
        return_actions,
        busy: file.busy.as_ref().map(|b| b.get_ref().clone()),
        timeout,
        on_timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::MINIMAL_GROUP as BASE;

    #[test]
    fn a_drain_is_read_with_its_defaults_and_its_mistakes_are_named() {
        let group =
            crate::config::group_from_toml("web", &format!("{BASE}[drain]\nbusy = 'x > 0'\n"))
                .unwrap();
        assert_eq!(
            group.drain,
            Some(Drain {
                actions: Vec::new(),
                return_actions: Vec::new(),
                busy: Some("x > 0".into()),
                timeout: Duration::from_secs(300),
                on_timeout: OnTimeout::Destroy,
            })
        );
        let broken = format!(
            "{BASE}[drain]\nactions = [\"no_such_action\"]\nbusy = 'x >'\ntimeout = \"0s\"\non_timeout = \"later\"\n"
        );
        let errors: Vec<String> = crate::config::group_from_toml("web", &broken)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        let all = errors.join("\n");
        for expected in [
            "unknown action `no_such_action`",
            "drain.busy:",
            "drain.timeout is 0",
            "unknown drain.on_timeout `later`",
        ] {
            assert!(all.contains(expected), "{expected} not in:\n{all}");
        }
        assert!(
            errors.iter().all(|e| e.starts_with("conf.d/web.toml:")),
            "{all}"
        );
    }

    #[test]
    fn a_drain_busy_over_a_range_is_warned_about() {
        let text = format!(
            "{BASE}[drain]\nbusy = 'rate(node_cpu_seconds_total{{mode=\"user\"}}[1m]) > 0.1'\n"
        );
        let actions: std::collections::BTreeSet<String> = ["digitalocean_destroy_droplet"]
            .into_iter()
            .map(String::from)
            .collect();
        let ctx = GroupContext {
            name: "web",
            file: std::path::Path::new("conf.d/web.toml"),
            source: &text,
            default_interval: Duration::from_secs(30),
            base_dir: std::path::Path::new("."),
            known_actions: &actions,
        };
        let (group, diagnostics) =
            super::super::validate::validate_group(&ctx, toml::from_str(&text).unwrap());
        assert!(group.is_some());
        assert!(
            diagnostics
                .iter()
                .any(|d| d.to_string().contains("drain.busy reads a range")),
            "{diagnostics:?}"
        );
    }
}
