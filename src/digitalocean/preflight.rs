//! Preflight: what can be checked against the account before the daemon scales anything —
//! the token's rights, every group's size, region, image, SSH keys and VPC, room under the
//! droplet limit, and the API budget the configured intervals need.

use super::client::{Client, PER_PAGE};
use super::error::ApiError;
use super::types::{ImageRef, SshKeyRef};
use crate::config::{Config, Group, Image, SshKey};
use std::fmt;
use std::path::PathBuf;

/// DigitalOcean's hourly request limit per token.
pub const HOURLY_LIMIT: u64 = 5_000;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The configuration cannot work against this account.
    Error,
    /// It works, but something deserves a look.
    Warning,
    /// Good to know.
    Info,
}

/// One preflight result, naming the file and key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error, warning or info.
    pub level: Level,
    /// The file concerned (a group file or the base file).
    pub file: PathBuf,
    /// The key concerned, such as `droplet.size`.
    pub key: String,
    /// What was found and what to do.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Error => "",
            Level::Warning => "warning: ",
            Level::Info => "note: ",
        };
        write!(
            f,
            "{}: {}: {level}{}",
            self.file.display(),
            self.key,
            self.message
        )
    }
}

struct Findings {
    list: Vec<Finding>,
}

impl Findings {
    fn push(
        &mut self,
        level: Level,
        file: &std::path::Path,
        key: &str,
        message: impl Into<String>,
    ) {
        self.list.push(Finding {
            level,
            file: file.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        });
    }
}

/// Daemons counted in the API budget when the state is shared: followers list every tick too,
/// and the high-availability guide runs at most three.
pub const SHARED_STATE_DAEMONS: u64 = 3;

/// How many daemons list the groups with one token: one, or [`SHARED_STATE_DAEMONS`] when the
/// state is PostgreSQL (every follower lists and scrapes, read-only).
pub fn listing_daemons(config: &Config) -> u64 {
    match config.base.state {
        crate::state::Location::Postgres(_) => SHARED_STATE_DAEMONS,
        crate::state::Location::File(_) => 1,
    }
}

/// Calls per hour the configuration needs in steady state: one list call per 200 droplets
/// of each group's `max`, every tick, by every daemon that lists.
pub fn projected_calls_per_hour(config: &Config) -> u64 {
    let one: u64 = config
        .groups
        .iter()
        .map(|group| {
            let ticks = 3600.0 / group.interval.as_secs_f64().max(1.0);
            let pages = (u64::from(group.max).max(1)).div_ceil(u64::from(PER_PAGE));
            (ticks * pages as f64).ceil() as u64
        })
        .sum();
    one * listing_daemons(config)
}

/// Runs every preflight check. API failures become findings; nothing here changes the
/// account except creating the managed-by tag (idempotent), and only when `may_write` (a dry
/// run writes nothing).
pub async fn preflight(client: &Client, config: &Config, may_write: bool) -> Vec<Finding> {
    let mut findings = Findings { list: Vec::new() };
    let base_file = config.base.path.clone();

    let account = match client.account().await {
        Ok(account) => Some(account),
        Err(error) => {
            let hint = if matches!(error, ApiError::Unauthorized { .. }) {
                "the token does not work: create a new one with read and write scopes"
            } else {
                "cannot read the account"
            };
            findings.push(
                Level::Error,
                &base_file,
                "token",
                format!("{hint}: {error}"),
            );
            if matches!(error, ApiError::Unauthorized { .. }) {
                return findings.list;
            }
            None
        }
    };
    let existing = match client.count_droplets().await {
        Ok(count) => Some(count),
        Err(error) => {
            findings.push(
                Level::Error,
                &base_file,
                "token",
                format!("the token cannot read droplets (droplet:read): {error}"),
            );
            None
        }
    };
    let managed_tag = config.base.managed_by_tag();
    if !may_write {
        // A dry run proves nothing about write scopes, and says so below.
    } else if let Err(error) = client.ensure_tag(&managed_tag).await {
        findings.push(
            Level::Error,
            &base_file,
            "token",
            format!("the token cannot write tags (tag:create), needed to mark droplets `{managed_tag}`: {error}"),
        );
    }
    findings.push(
        Level::Info,
        &base_file,
        "token",
        "droplet create and delete rights cannot be verified without creating a droplet; the first scale event will show them",
    );

    let sizes = client.sizes().await;
    let regions = client.regions().await;
    if let Err(error) = &sizes {
        findings.push(
            Level::Error,
            &base_file,
            "api_url",
            format!("cannot list sizes: {error}"),
        );
    }
    if let Err(error) = &regions {
        findings.push(
            Level::Error,
            &base_file,
            "api_url",
            format!("cannot list regions: {error}"),
        );
    }

    let mut headroom = Vec::new();
    for group in &config.groups {
        if let (Ok(sizes), Ok(regions)) = (&sizes, &regions) {
            check_size_and_region(&mut findings, group, sizes, regions);
        }
        check_image_keys_vpc(&mut findings, client, group).await;
        match client.list_droplets_by_tag(&group.tag).await {
            // A group that replaces unhealthy droplets launches one past max meanwhile.
            Ok(members) => headroom.push((
                group,
                (u64::from(group.max) + u64::from(group.health.is_some()))
                    .saturating_sub(members.len() as u64),
            )),
            Err(error) => findings.push(
                Level::Error,
                &group.file,
                "tag",
                format!("cannot list the group's droplets: {error}"),
            ),
        }
    }

    if let (Some(account), Some(existing)) = (&account, existing) {
        let growth: u64 = headroom.iter().map(|(_, room)| room).sum();
        let room = account.droplet_limit.saturating_sub(existing);
        if growth > room {
            let parts: Vec<String> = headroom
                .iter()
                .filter(|(_, r)| *r > 0)
                .map(|(g, r)| format!("{} +{r}", g.name))
                .collect();
            for (group, grow) in headroom.iter().filter(|(_, r)| *r > 0) {
                findings.push(
                    Level::Error,
                    &group.file,
                    "max",
                    format!(
                        "the account's droplet limit is {} and {existing} droplets exist, leaving room for {room}, but the groups may add {growth} ({}); this group may add {grow}: lower max or ask DigitalOcean for a higher limit",
                        account.droplet_limit,
                        parts.join(", ")
                    ),
                );
            }
        }
    }

    let calls = projected_calls_per_hour(config);
    if calls > HOURLY_LIMIT * 8 / 10 {
        findings.push(
            if calls > HOURLY_LIMIT { Level::Error } else { Level::Warning },
            &base_file,
            "interval",
            format!(
                "the configured intervals need about {calls} API calls an hour for listing alone{}; DigitalOcean allows {HOURLY_LIMIT} per token: lengthen the intervals",
                match listing_daemons(config) {
                    1 => String::new(),
                    n => format!(" (by {n} daemons sharing the state: followers list too)"),
                }
            ),
        );
    }
    findings.list
}

fn check_size_and_region(
    findings: &mut Findings,
    group: &Group,
    sizes: &[super::types::Size],
    regions: &[super::types::Region],
) {
    let template = &group.template;
    let region = regions.iter().find(|r| r.slug == template.region);
    match region {
        None => findings.push(
            Level::Error,
            &group.file,
            "droplet.region",
            format!(
                "region `{}` does not exist; regions: {}",
                template.region,
                regions
                    .iter()
                    .map(|r| r.slug.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Some(region) if !region.available => findings.push(
            Level::Error,
            &group.file,
            "droplet.region",
            format!("region `{}` does not accept new droplets", template.region),
        ),
        Some(_) => {}
    }
    match sizes.iter().find(|s| s.slug == template.size) {
        None => findings.push(
            Level::Error,
            &group.file,
            "droplet.size",
            format!(
                "size `{}` does not exist: see `doctl compute size list`",
                template.size
            ),
        ),
        Some(size) if !size.available => findings.push(
            Level::Error,
            &group.file,
            "droplet.size",
            format!("size `{}` is not available", template.size),
        ),
        Some(size) if region.is_some() && !size.regions.contains(&template.region) => findings
            .push(
                Level::Error,
                &group.file,
                "droplet.size",
                format!(
                    "size `{}` is not offered in region `{}`; it is offered in {}",
                    template.size,
                    template.region,
                    size.regions.join(", ")
                ),
            ),
        Some(_) => {}
    }
}

async fn check_image_keys_vpc(findings: &mut Findings, client: &Client, group: &Group) {
    let template = &group.template;
    let image = match &template.image {
        Image::Slug(slug) => ImageRef::Slug(slug.clone()),
        Image::Id(id) => ImageRef::Id(*id),
    };
    match client.image(&image).await {
        Ok(Some(found)) => {
            if !found.regions.is_empty() && !found.regions.contains(&template.region) {
                findings.push(
                    Level::Error,
                    &group.file,
                    "droplet.image",
                    format!(
                        "image `{}` is not available in region `{}`",
                        found.name, template.region
                    ),
                );
            }
        }
        Ok(None) => findings.push(
            Level::Error,
            &group.file,
            "droplet.image",
            format!("image `{image}` does not exist (or the token cannot see it)"),
        ),
        Err(error) => findings.push(
            Level::Error,
            &group.file,
            "droplet.image",
            format!("cannot look up the image: {error}"),
        ),
    }
    for key in &template.ssh_keys {
        let reference = match key {
            SshKey::Fingerprint(f) => SshKeyRef::Fingerprint(f.clone()),
            SshKey::Id(id) => SshKeyRef::Id(*id),
        };
        match client.ssh_key(&reference).await {
            Ok(Some(_)) => {}
            Ok(None) => findings.push(
                Level::Error,
                &group.file,
                "droplet.ssh_keys",
                format!("SSH key `{reference}` is not in the account: add it or remove it from the template"),
            ),
            Err(error) => findings.push(Level::Error, &group.file, "droplet.ssh_keys", format!("cannot look up SSH key `{reference}`: {error}")),
        }
    }
    if let Some(vpc) = &template.vpc_uuid {
        match client.vpc(vpc).await {
            Ok(Some(found)) if !found.region.is_empty() && found.region != template.region => {
                findings.push(
                    Level::Error,
                    &group.file,
                    "droplet.vpc_uuid",
                    format!(
                        "VPC `{vpc}` is in region `{}`, not `{}`",
                        found.region, template.region
                    ),
                )
            }
            Ok(Some(_)) => {}
            Ok(None) => findings.push(
                Level::Error,
                &group.file,
                "droplet.vpc_uuid",
                format!("VPC `{vpc}` does not exist"),
            ),
            Err(error) => findings.push(
                Level::Error,
                &group.file,
                "droplet.vpc_uuid",
                format!("cannot look up VPC `{vpc}`: {error}"),
            ),
        }
    }
}
