//! The configuration files exactly as a user writes them: `do-scaler.toml` and `conf.d/*.toml`.
//!
//! Every struct here rejects unknown keys, and every field says why it exists: the README's
//! configuration reference is written from these comments, and a test checks that every key
//! accepted here is documented there. Positions (`Spanned`) are kept wherever a later check
//! needs to point at a value. `validate` turns these into the typed model in `model`.

use super::duration::ConfigDuration;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use toml::Spanned;

/// The base file, `do-scaler.toml`: settings shared by every group.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BaseFile {
    /// How often a group ticks when its own file sets no `interval`. Default "30s".
    pub interval: Option<Spanned<ConfigDuration>>,
    /// Names this daemon in the managed-by tag (`do-scaler:<instance>`), so a staging and a
    /// production daemon on one account never touch each other's droplets. Default "default".
    pub instance: Option<Spanned<String>>,
    /// Base URL of the DigitalOcean API; point it at `do-scaler sim` to try rules safely.
    /// Default "https://api.digitalocean.com". Overridden by `--api-url` / `DIGITALOCEAN_API_URL`.
    pub api_url: Option<Spanned<String>>,
    /// A file holding the DigitalOcean API token, used when neither `DIGITALOCEAN_TOKEN` nor the
    /// systemd credential `digitalocean-token` is set. Keeps the token out of the config itself.
    pub token_file: Option<Spanned<String>>,
    /// Where the state lives (decisions, cooldown clocks, intent journal): a SQLite file for
    /// one daemon, or `postgres://user@host:port/db?sslmode=…` shared by two or three daemons
    /// that elect one leader per group. Default "/var/lib/do-scaler/state.db". Overridden by
    /// `--state`.
    pub state: Option<Spanned<String>>,
    /// With PostgreSQL state: how long a group's leader holds its lease after each renewal (one
    /// per tick). A follower takes over when it runs out. Default: twice the longest group
    /// interval plus `request_timeout`.
    pub lease: Option<Spanned<ConfigDuration>>,
    /// How long one DigitalOcean API request may take before it is abandoned. A leader sends a
    /// write only with this much lease left, and a new leader waits this long past the old
    /// lease before it acts. Default "30s".
    pub request_timeout: Option<Spanned<ConfigDuration>>,
    /// The folder of group files, one group per `*.toml`. Default "conf.d".
    pub conf_dir: Option<Spanned<String>>,
    /// The folder of action scripts; a script here overrides a shipped one of the same name.
    /// Default "actions"; a missing folder is fine.
    pub actions_dir: Option<Spanned<String>>,
    /// How long the API's listings may lag a create: a droplet asked for with an unknown
    /// outcome (an ambiguous answer, a crash mid-create) counts as booting until a listing
    /// taken this long after the request does not show it. Default "1m"; "0s" for an API whose
    /// listings are current (the simulator without `--list-lag`).
    pub listing_lag: Option<Spanned<ConfigDuration>>,
    /// The status API: health, metrics, decisions, pause and reload.
    #[serde(default)]
    pub status_api: StatusApiFile,
    /// Continuous recording of every group's observations (`do-scaler replay` measures a rule
    /// set against them). Absent: nothing is recorded.
    pub record: Option<Spanned<RecordFile>>,
}

/// `[record]` in the base file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordFile {
    /// The folder recordings go to: one file per group and hour, `<group>/<hour>.rec.gz`.
    /// Required.
    pub dir: Spanned<String>,
    /// How long recordings are kept; older files are deleted. Default "7d".
    pub keep: Option<Spanned<ConfigDuration>>,
    /// The most the folder may hold, as "500MB" or "2GB"; the oldest files go first. Default
    /// "1GB".
    pub max_size: Option<Spanned<String>>,
}

/// `[status_api]` in the base file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StatusApiFile {
    /// Address the status API listens on. Loopback by default so that nothing is exposed by
    /// accident. Default "127.0.0.1:9797". Overridden by `--listen`.
    pub listen: Option<Spanned<String>>,
    /// A file holding the token that POST endpoints (pause, resume, reload) require. Used when the
    /// systemd credential `api-token` is absent. Without either, every POST answers 401.
    pub token_file: Option<Spanned<String>>,
    /// Whether GET endpoints answer without the token. Default true (the API binds to loopback);
    /// set false when the API listens on a shared network.
    pub open_reads: Option<bool>,
}

/// One group file, `conf.d/<group>.toml`; the group's name is the file stem.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    /// Every droplet carrying this tag belongs to the group. Required; unique across groups.
    pub tag: Spanned<String>,
    /// The fewest droplets the group may have, counting those still booting. Required.
    pub min: Spanned<u32>,
    /// The most droplets the group may have, counting those still booting. Required.
    pub max: Spanned<u32>,
    /// How often this group ticks. Default: the base file's `interval`.
    pub interval: Option<Spanned<ConfigDuration>>,
    /// How long one tick may take (listing, scraping, deciding) before it ends as failed.
    /// Default 80 % of the interval.
    pub tick_timeout: Option<Spanned<ConfigDuration>>,
    /// What a rule does when its expression has no data: "hold" (default), "scale_up"
    /// (at most +1 per up-cooldown), or `{ desired = N }`. Missing data never scales down.
    pub on_missing: Option<Spanned<OnMissingFile>>,
    /// How long after a droplet turns active before its metrics count; until then it counts
    /// as booting, so the group does not keep adding capacity while it boots. Default "2m".
    pub warmup: Option<Spanned<ConfigDuration>>,
    /// Droplets with this tag are never destroyed by do-scaler. Default "do-scaler-protect".
    pub protect_tag: Option<Spanned<String>>,
    /// Allow scale-in to destroy droplets that do-scaler did not create (no managed-by tag).
    /// Default false: a droplet a human made is never destroyed.
    pub allow_unmanaged: Option<bool>,
    /// Droplets carrying any of these tags count as managed, as if do-scaler had made them
    /// (for droplets created by another tool, such as the Python do-scaler). Default none.
    pub adopt_tags: Option<Vec<Spanned<String>>>,
    /// Spend guard: the most droplets this group may create in any hour. Default 2 × `max`.
    pub max_creates_per_hour: Option<Spanned<u32>>,
    /// The template for new droplets.
    pub droplet: DropletFile,
    /// How the droplets' metrics are scraped: the implicit source named `droplets`.
    #[serde(default)]
    pub scrape: ScrapeFile,
    /// More places the rules read, as `[[source]]` tables: another endpoint on each droplet,
    /// static targets (a CI server's or a queue exporter's `/metrics`), or a Prometheus server.
    #[serde(default, rename = "source")]
    pub sources: Vec<Spanned<SourceFile>>,
    /// Idle headroom, as GitLab Runner's IdleCount and IdleTime: droplets kept ready beyond
    /// those doing work.
    pub idle: Option<Spanned<IdleFile>>,
    /// Minimum time between scale events in each direction.
    #[serde(default)]
    pub cooldown: CooldownFile,
    /// Windows that smooth the recommendations before they are acted on.
    #[serde(default)]
    pub stabilization: StabilizationFile,
    /// Which droplets go first when the group shrinks.
    #[serde(default)]
    pub scale_in: ScaleInFile,
    /// Drain droplets before they are destroyed. Default: destroy at once.
    pub drain: Option<DrainFile>,
    /// Replace droplets that fail their health check. Default: never replaced.
    pub health: Option<HealthFile>,
    /// Replace droplets made from an older template or past their lifetime. Default: never.
    pub refresh: Option<RefreshFile>,
    /// The rules, as `[[rule]]` tables. Scale-up beats no change beats scale-down.
    #[serde(default, rename = "rule")]
    pub rules: Vec<Spanned<RuleFile>>,
    /// Time-based overrides of `min` and `max`, as `[[schedule]]` tables.
    #[serde(default, rename = "schedule")]
    pub schedules: Vec<Spanned<ScheduleFile>>,
    /// The action scripts run when the group scales, and their parameters.
    #[serde(default)]
    pub actions: ActionsFile,
}

/// `[droplet]`: the template every new droplet is made from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropletFile {
    /// New droplets are named `<name_prefix>-<unique suffix>`; names are never reused.
    /// Letters, digits, `.` and `-` only. Default: the group's name.
    pub name_prefix: Option<Spanned<String>>,
    /// Region slug, such as "nyc3". Required.
    pub region: Spanned<String>,
    /// Size slug, such as "s-2vcpu-4gb". Required.
    pub size: Spanned<String>,
    /// Image slug ("ubuntu-24-04-x64") or numeric image id (a snapshot). Required.
    pub image: Spanned<ImageFile>,
    /// SSH keys to install: fingerprints (strings) or numeric ids. Default none.
    pub ssh_keys: Option<Vec<Spanned<SshKeyFile>>>,
    /// The VPC the droplets join; the region's default VPC when absent.
    pub vpc_uuid: Option<Spanned<String>>,
    /// Extra tags for new droplets. The group tag and the managed-by tag are always added.
    pub tags: Option<Vec<Spanned<String>>>,
    /// Cloud-init user data, inline. Redacted wherever the template is shown.
    pub user_data: Option<Spanned<String>>,
    /// Cloud-init user data read from a file (relative to the base file's folder).
    pub user_data_file: Option<Spanned<String>>,
    /// Install the DigitalOcean metrics agent (do-agent), whose endpoint the rules read.
    /// Default true.
    pub monitoring: Option<bool>,
    /// Give new droplets a public IPv6 address. Default false.
    pub ipv6: Option<bool>,
}

/// `[scrape]`: where each droplet's do-agent endpoint is.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ScrapeFile {
    /// Which address to scrape: "private" (default), "public" or "ipv6".
    pub address: Option<Spanned<String>>,
    /// The endpoint's port. Default 9110 (do-agent with `--web.listen-address=IP:9110`).
    pub port: Option<Spanned<u16>>,
    /// The endpoint's path. Default "/metrics" (do-agent answers on every path).
    pub path: Option<Spanned<String>>,
    /// How long one scrape may take before the droplet counts as missing. Default "3s".
    pub timeout: Option<Spanned<ConfigDuration>>,
}

/// `[cooldown]`: time after a completed scale before another in the same direction.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CooldownFile {
    /// After a scale-up, wait this long before scaling up again. Default "2m".
    pub up: Option<Spanned<ConfigDuration>>,
    /// After a scale-down, wait this long before scaling down again. Default "5m".
    pub down: Option<Spanned<ConfigDuration>>,
}

/// `[stabilization]`: windows over recent recommendations, as in the Kubernetes HPA.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StabilizationFile {
    /// Scale up to the lowest recommendation of this window. Default "0s" (react at once).
    pub up: Option<Spanned<ConfigDuration>>,
    /// Scale down to the highest recommendation of this window, so a dip does not shed
    /// capacity that is needed again a minute later. Default "5m".
    pub down: Option<Spanned<ConfigDuration>>,
}

/// `[drain]`: draining droplets before they are destroyed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainFile {
    /// Actions run once for the droplets that start draining (they see `decision.direction`
    /// "drain" and the droplets in `decision.victims`). Default none.
    #[serde(default)]
    pub actions: Vec<Spanned<String>>,
    /// Actions run for droplets returned to service (a scale-up while they drain, or
    /// `on_timeout = "keep"`): `decision.direction` "return". Default none.
    #[serde(default)]
    pub return_actions: Vec<Spanned<String>>,
    /// A per-droplet expression true while a draining droplet still works; the drain ends
    /// when it is false. Evaluated on each tick's scrape of the draining droplets alone, so
    /// instant expressions (`sim_jobs_running > 0`, `http_connections > 0`) work and a range
    /// function has no value (it waits for the timeout). Default none: the drain ends once
    /// the drain actions succeeded.
    pub busy: Option<Spanned<String>>,
    /// How long a drain may last. Default "5m".
    pub timeout: Option<Spanned<ConfigDuration>>,
    /// "destroy" (default): destroy at the timeout, still busy or not; "keep": cancel the
    /// drain and return the droplet to service.
    pub on_timeout: Option<Spanned<String>>,
}

/// `[health]`: replacing droplets that fail their health check, launch first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    /// "metrics" (default: the droplet's scrape fails while others of the group answer),
    /// "tcp" (a connection to `port`) or "http" (a GET of `path` on `port` answering 2xx or
    /// 3xx).
    pub check: Option<Spanned<String>>,
    /// The port a "tcp" or "http" check connects to, on the scrape address.
    pub port: Option<Spanned<u16>>,
    /// The path an "http" check asks for. Default "/".
    pub path: Option<Spanned<String>>,
    /// How long one check may take. Default "2s".
    pub timeout: Option<Spanned<ConfigDuration>>,
    /// Consecutive failed ticks before a droplet is replaced. Default 3.
    pub unhealthy_after: Option<Spanned<u32>>,
    /// Time after `warmup` during which failures do not count (AWS's health check grace
    /// period). Default "5m".
    pub grace: Option<Spanned<ConfigDuration>>,
    /// The most droplets billed during replacements, as a percent of desired (rounded down,
    /// at least desired + 1). Default 150.
    pub max_percent: Option<Spanned<u32>>,
    /// Replacements started in any hour at most. Default: the group's `max`.
    pub max_replacements_per_hour: Option<Spanned<u32>>,
}

/// `[refresh]`: replacing out-of-date droplets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshFile {
    /// Droplets older than this are replaced (such as "14d"). Default: no limit.
    pub max_lifetime: Option<Spanned<ConfigDuration>>,
    /// Five-field cron opening each window refreshes may start in. Default: any time.
    pub cron: Option<Spanned<String>>,
    /// The IANA time zone `cron` is read in. Default "UTC".
    pub timezone: Option<Spanned<String>>,
    /// How long each window stays open. Required with `cron`.
    pub duration: Option<Spanned<ConfigDuration>>,
    /// Replacements in progress at most: a count, or a percent of desired ("25%"). Default 1.
    pub max_unavailable: Option<Spanned<toml::Value>>,
}

/// `[scale_in]`: choosing the droplets to remove.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ScaleInFile {
    /// "newest" (default), "oldest", or "least_busy" (lowest value of `by`).
    pub choose: Option<Spanned<String>>,
    /// The per-droplet expression ranked by "least_busy", grouped `by (droplet_id)`.
    pub by: Option<Spanned<String>>,
    /// Droplets younger than this are never removed. Default "5m".
    pub min_age: Option<Spanned<ConfigDuration>>,
    /// A per-droplet expression true where a droplet is doing work (a CI job, a queue item):
    /// such a droplet is never a victim, nor one whose value is missing. Default none.
    pub busy: Option<Spanned<String>>,
    /// The source `by` and `busy` read. Default "droplets".
    pub source: Option<Spanned<String>>,
}

/// `[[source]]`: a named place rules read. `kind` decides which other keys apply.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    /// The source's name, as rules name it (`source = "..."`) and as its series carry it
    /// (`source="..."`). Required; "droplets" is the group's `[scrape]`.
    pub name: Spanned<String>,
    /// "droplets" (an endpoint on every droplet), "target" (fixed URLs) or "prometheus" (a
    /// server that evaluates the rules naming it). Required.
    pub kind: Spanned<String>,
    /// droplets: which address to scrape, "private" (default), "public" or "ipv6".
    pub address: Option<Spanned<String>>,
    /// droplets: the endpoint's port on each droplet. Required for this kind.
    pub port: Option<Spanned<u16>>,
    /// droplets: the endpoint's path. Default "/metrics".
    pub path: Option<Spanned<String>>,
    /// target: the URLs to scrape (`http://` or `https://`, TLS verified). Required.
    pub urls: Option<Vec<Spanned<String>>>,
    /// target: how often the URLs are scraped (at most once per tick). Default: the group's
    /// interval; it must stay under the 5-minute lookback.
    pub interval: Option<Spanned<ConfigDuration>>,
    /// prometheus: the server's base URL, such as "http://127.0.0.1:9090". Required.
    pub url: Option<Spanned<String>>,
    /// How long one scrape or query may take before its answer counts as missing.
    /// Default "3s" (droplets, target) or "10s" (prometheus).
    pub timeout: Option<Spanned<ConfigDuration>>,
    /// target, prometheus: a file holding a bearer token (never the token inline).
    pub token_file: Option<Spanned<String>>,
    /// target, prometheus: the systemd credential holding a bearer token.
    pub token_credential: Option<Spanned<String>>,
    /// prometheus: the user name of HTTP basic authentication (with `password_credential` or
    /// `password_file`).
    pub username: Option<Spanned<String>>,
    /// prometheus: the systemd credential holding the basic-authentication password.
    pub password_credential: Option<Spanned<String>>,
    /// prometheus: a file holding the basic-authentication password.
    pub password_file: Option<Spanned<String>>,
}

/// `[idle]`: droplets kept ready beyond the busy ones (GitLab Runner's IdleCount/IdleTime).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleFile {
    /// How many idle droplets to keep ready: desired is at least the busy droplets plus this.
    /// Required (a `[[schedule]]` may change it with `idle_count`).
    pub count: Spanned<u32>,
    /// A per-droplet expression true where a droplet is doing work. Required. Booting
    /// droplets and droplets whose value is missing count as idle here, and as busy when
    /// victims are chosen.
    pub busy: Spanned<String>,
    /// Only a droplet idle at least this long may be removed (GitLab's IdleTime). Default "0s".
    pub time: Option<Spanned<ConfigDuration>>,
    /// The source `busy` reads. Default "droplets".
    pub source: Option<Spanned<String>>,
}

/// `[[rule]]`: a threshold rule (`when`, `for`, `change`), a target rule (`expr`, `target`)
/// or a desired rule (`desired`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// The rule's name, shown in plans, logs and metrics. Required, unique in the group.
    pub name: Spanned<String>,
    /// The source the rule's expressions read (a `[[source]]` name). Default "droplets". A
    /// rule naming a "prometheus" source is evaluated by that server.
    pub source: Option<Spanned<String>>,
    /// Desired rule: an expression whose value is the number of droplets wanted (rounded up),
    /// then bounded and braked like any other rule's proposal.
    pub desired: Option<Spanned<String>>,
    /// Target rule: the expression kept near `target` (an average over active droplets, or a
    /// group total with `per_droplet = true`).
    pub expr: Option<Spanned<String>>,
    /// Target rule: the value to keep `expr` near.
    pub target: Option<Spanned<f64>>,
    /// Target rule: `expr` is a group total and `target` is what one droplet handles, so
    /// desired = ceil(total / target). Default false.
    pub per_droplet: Option<bool>,
    /// Target rule: no change while |desired / current − 1| is at most this. Default 0.1.
    pub tolerance: Option<Spanned<f64>>,
    /// Target rule: the most droplets one decision adds. Default unlimited.
    pub max_step_up: Option<Spanned<u32>>,
    /// Target rule: the most droplets one decision removes. Default unlimited.
    pub max_step_down: Option<Spanned<u32>>,
    /// Target rule: the highest value `expr` can take (1 for CPU utilisation). With it, while
    /// the value is within 2 % of the ceiling the rule asks for `saturated_step` more than
    /// the active droplets, not limited by `max_step_up`. Default none.
    pub ceiling: Option<Spanned<f64>>,
    /// Target rule with `ceiling`: the growth while saturated, "+100%" (double) or "+N".
    /// Default "+100%".
    pub saturated_step: Option<Spanned<ChangeFile>>,
    /// Threshold rule: a comparison that is true, false or missing.
    pub when: Option<Spanned<String>>,
    /// Threshold rule: comparisons that must all hold (three-valued: any false is false).
    pub when_all: Option<Spanned<Vec<Spanned<String>>>>,
    /// Threshold rule: comparisons of which one must hold (three-valued: any true is true).
    pub when_any: Option<Spanned<Vec<Spanned<String>>>>,
    /// Threshold rule: how long the condition must hold before the rule fires. Default "0s".
    #[serde(rename = "for")]
    pub hold_for: Option<Spanned<ConfigDuration>>,
    /// Threshold rule: the change when it fires: "+2", "-1", "+50%", "-25%" (or an integer).
    pub change: Option<Spanned<ChangeFile>>,
    /// What this rule does without data; overrides the group's `on_missing`.
    pub on_missing: Option<Spanned<OnMissingFile>>,
    /// Actions for this rule instead of the group's `[actions]` lists.
    pub actions: Option<ActionListsFile>,
}

/// `[[schedule]]`: bounds that apply while a cron window is open.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFile {
    /// A name for plans and logs. Default "schedule-N".
    pub name: Option<Spanned<String>>,
    /// Five-field cron (minute hour day-of-month month day-of-week) opening the window.
    pub cron: Spanned<String>,
    /// The IANA time zone the cron is read in, such as "Europe/Berlin". Default "UTC".
    pub timezone: Option<Spanned<String>>,
    /// How long the window stays open after each start (elapsed time). Required.
    pub duration: Spanned<ConfigDuration>,
    /// The group's `min` while the window is open.
    pub min: Option<Spanned<u32>>,
    /// The group's `max` while the window is open.
    pub max: Option<Spanned<u32>>,
    /// `[idle] count` while the window is open (GitLab's off-peak periods).
    pub idle_count: Option<Spanned<u32>>,
}

/// `[actions]`: which scripts run on a scale-up and a scale-down.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ActionsFile {
    /// Scripts run in order on a scale-up. Default ["digitalocean_create_droplet"].
    pub up: Option<Vec<Spanned<String>>>,
    /// Scripts run in order on a scale-down. Default ["digitalocean_destroy_droplet"].
    pub down: Option<Vec<Spanned<String>>>,
    /// Each script's own parameters, as `[actions.params.<script>]` tables (free-form;
    /// each shipped script documents its keys).
    #[serde(default)]
    pub params: BTreeMap<String, Spanned<toml::Table>>,
}

/// `[rule.actions]`: a rule's own action lists.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ActionListsFile {
    /// Scripts run in order when this rule scales up.
    pub up: Option<Vec<Spanned<String>>>,
    /// Scripts run in order when this rule scales down.
    pub down: Option<Vec<Spanned<String>>>,
}

/// `on_missing` as written: a word or `{ desired = N }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMissingFile {
    /// Keep the current size.
    Hold,
    /// Add one droplet per up-cooldown.
    ScaleUp,
    /// Go to this size (within bounds).
    Desired(u32),
}

impl<'de> Deserialize<'de> for OnMissingFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OnMissingVisitor;
        impl<'de> Visitor<'de> for OnMissingVisitor {
            type Value = OnMissingFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"hold\", \"scale_up\" or { desired = N }")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<OnMissingFile, E> {
                match value {
                    "hold" => Ok(OnMissingFile::Hold),
                    "scale_up" => Ok(OnMissingFile::ScaleUp),
                    other => Err(E::custom(format!(
                        "unknown on_missing `{other}`: use \"hold\", \"scale_up\" or {{ desired = N }}"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OnMissingFile, A::Error> {
                let mut desired = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "desired" {
                        return Err(de::Error::custom(format!(
                            "unknown key `{key}` in on_missing: the only key is `desired`, as in {{ desired = 2 }}"
                        )));
                    }
                    desired = Some(map.next_value::<u32>()?);
                }
                desired.map(OnMissingFile::Desired).ok_or_else(|| {
                    de::Error::custom("on_missing table needs `desired`, as in { desired = 2 }")
                })
            }
        }
        deserializer.deserialize_any(OnMissingVisitor)
    }
}

/// `image` as written: a slug or a numeric id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageFile {
    /// A public image slug such as "ubuntu-24-04-x64".
    Slug(String),
    /// A numeric image id (snapshots, custom images).
    Id(u64),
}

impl<'de> Deserialize<'de> for ImageFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ImageVisitor;
        impl Visitor<'_> for ImageVisitor {
            type Value = ImageFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an image slug such as \"ubuntu-24-04-x64\" or a numeric image id")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<ImageFile, E> {
                Ok(ImageFile::Slug(value.to_string()))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<ImageFile, E> {
                u64::try_from(value)
                    .map(ImageFile::Id)
                    .map_err(|_| E::custom("an image id is a positive number"))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<ImageFile, E> {
                Ok(ImageFile::Id(value))
            }
        }
        deserializer.deserialize_any(ImageVisitor)
    }
}

/// One entry of `ssh_keys`: a fingerprint or a numeric id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshKeyFile {
    /// An MD5 fingerprint such as "3b:16:bf:…".
    Fingerprint(String),
    /// A numeric key id.
    Id(u64),
}

impl<'de> Deserialize<'de> for SshKeyFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = SshKeyFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an SSH key fingerprint (a string) or a numeric key id")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<SshKeyFile, E> {
                Ok(SshKeyFile::Fingerprint(value.to_string()))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<SshKeyFile, E> {
                u64::try_from(value)
                    .map(SshKeyFile::Id)
                    .map_err(|_| E::custom("an SSH key id is a positive number"))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<SshKeyFile, E> {
                Ok(SshKeyFile::Id(value))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

/// `change` as written: a signed count or a signed percentage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeFile {
    /// Add (positive) or remove (negative) this many droplets.
    Count(i64),
    /// Add or remove this percentage of the current size (rounded away from zero, at least 1).
    Percent(i64),
}

/// Parses "+2", "-1", "+50%", "-25%".
pub fn parse_change(text: &str) -> Result<ChangeFile, String> {
    let fix = "write a signed change such as \"+2\", \"-1\", \"+50%\" or \"-25%\"";
    let trimmed = text.trim();
    let (number, percent) = match trimmed.strip_suffix('%') {
        Some(number) => (number.trim(), true),
        None => (trimmed, false),
    };
    if !number.starts_with('+') && !number.starts_with('-') {
        return Err(format!("change `{text}` has no sign: {fix}"));
    }
    let value: i64 = number
        .parse()
        .map_err(|_| format!("change `{text}` is not a number: {fix}"))?;
    if value == 0 {
        return Err(format!("change `{text}` changes nothing: {fix}"));
    }
    if percent && value.abs() > 1000 {
        return Err(format!("change `{text}` is more than 1000%: {fix}"));
    }
    Ok(if percent {
        ChangeFile::Percent(value)
    } else {
        ChangeFile::Count(value)
    })
}

impl<'de> Deserialize<'de> for ChangeFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChangeVisitor;
        impl Visitor<'_> for ChangeVisitor {
            type Value = ChangeFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a signed change such as \"+2\", \"-1\" or \"+50%\"")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<ChangeFile, E> {
                parse_change(value).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<ChangeFile, E> {
                if value == 0 {
                    Err(E::custom(
                        "change 0 changes nothing: write \"+1\" or \"-1\"",
                    ))
                } else {
                    Ok(ChangeFile::Count(value))
                }
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<ChangeFile, E> {
                i64::try_from(value)
                    .map_err(|_| E::custom("change is too large"))
                    .and_then(|v| self.visit_i64(v))
            }
        }
        deserializer.deserialize_any(ChangeVisitor)
    }
}
