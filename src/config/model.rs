//! The validated configuration every later stage reads: plain values, defaults filled in,
//! durations parsed, cron and time zones compiled. Nothing here can be invalid.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration: the base file and every group.
#[derive(Debug, Clone)]
pub struct Config {
    /// Shared settings from the base file.
    pub base: Base,
    /// The groups, sorted by name.
    pub groups: Vec<Group>,
    /// Every file this configuration was read from (base file, group files, user data files,
    /// the old format's files): a reload watches and compares all of them.
    pub inputs: Vec<PathBuf>,
}

/// Shared settings from `do-scaler.toml`, with command-line overrides applied.
#[derive(Debug, Clone)]
pub struct Base {
    /// The base file itself.
    pub path: PathBuf,
    /// The text this was read from (for a legacy file, its translation), so a reload compares
    /// what runs with what is on disk without reading the file a second time.
    pub source: String,
    /// Default tick interval for groups that set none.
    pub interval: Duration,
    /// The instance name in the managed-by tag.
    pub instance: String,
    /// DigitalOcean API base URL, without a trailing slash.
    pub api_url: String,
    /// Token file named in the base file, resolved against its folder.
    pub token_file: Option<PathBuf>,
    /// Where the state lives: a SQLite file, or a PostgreSQL database shared by several daemons.
    pub state: crate::state::Location,
    /// With PostgreSQL state, the lease a group's leader holds after each renewal (`None`: the
    /// default, twice the longest interval plus the request timeout).
    pub lease: Option<Duration>,
    /// How long one DigitalOcean API request may take.
    pub request_timeout: Duration,
    /// Folder of group files.
    pub conf_dir: PathBuf,
    /// Folder of action scripts (may not exist).
    pub actions_dir: PathBuf,
    /// How long listings may lag a create (droplets with an unknown outcome count as booting
    /// that long).
    pub listing_lag: Duration,
    /// Status API settings.
    pub status_api: StatusApi,
    /// Continuous recording (`[record]`), if configured.
    pub record: Option<RecordSettings>,
    /// A token written in the original tool's files (`do_token`), used only when no other
    /// source has one.
    pub inline_token: Option<super::credentials::ApiToken>,
}

impl Base {
    /// The tag do-scaler puts on every droplet it creates: `do-scaler:<instance>`.
    pub fn managed_by_tag(&self) -> String {
        format!("do-scaler:{}", self.instance)
    }
}

/// Where and how long the daemon keeps recordings (`[record]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSettings {
    /// The folder (one subfolder per group, one file per hour).
    pub dir: PathBuf,
    /// How long files are kept.
    pub keep: Duration,
    /// The most bytes the folder may hold.
    pub max_size: u64,
}

/// Status API settings.
#[derive(Debug, Clone)]
pub struct StatusApi {
    /// Listen address.
    pub listen: SocketAddr,
    /// Token file for POST endpoints, if configured.
    pub token_file: Option<PathBuf>,
    /// Whether GETs are open without the token.
    pub open_reads: bool,
}

/// What a rule does when its expression has no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMissing {
    /// Keep the current size.
    Hold,
    /// Add one droplet per up-cooldown.
    ScaleUp,
    /// Go to this size (within bounds, never below the current size through missing data).
    Desired(u32),
}

/// One group: every droplet with `tag`.
#[derive(Debug, Clone)]
pub struct Group {
    /// The group's name (its file stem).
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// The exact text it was parsed from, so a reload tells a changed group by what actually
    /// runs (a second read could see a newer edit than the one parsed).
    pub source: String,
    /// The tag that defines membership.
    pub tag: String,
    /// Lower bound, counting booting droplets.
    pub min: u32,
    /// Upper bound, counting booting droplets.
    pub max: u32,
    /// Tick interval.
    pub interval: Duration,
    /// Deadline of one tick.
    pub tick_timeout: Duration,
    /// Group default for rules without data.
    pub on_missing: OnMissing,
    /// Time after `active` before a droplet's metrics count.
    pub warmup: Duration,
    /// Droplets with this tag are never destroyed.
    pub protect_tag: String,
    /// Whether droplets without the managed-by tag may be destroyed.
    pub allow_unmanaged: bool,
    /// Tags that make a droplet count as managed.
    pub adopt_tags: Vec<String>,
    /// Spend guard: creates allowed per hour.
    pub max_creates_per_hour: u32,
    /// Template for new droplets.
    pub template: DropletTemplate,
    /// Scrape settings of the implicit `droplets` source.
    pub scrape: Scrape,
    /// Every source the rules may read, the implicit `droplets` first, then the `[[source]]`
    /// tables in file order.
    pub sources: Vec<Source>,
    /// Idle headroom, if configured.
    pub idle: Option<Idle>,
    /// Cooldown after an up and after a down.
    pub cooldown: UpDown,
    /// Stabilization windows for up and down.
    pub stabilization: UpDown,
    /// Scale-in choice.
    pub scale_in: ScaleIn,
    /// Drain before destroy, if configured.
    pub drain: Option<super::drain::Drain>,
    /// Health checks and replacement of the unhealthy, if configured.
    pub health: Option<super::health::Health>,
    /// Replacement of out-of-date droplets, if configured.
    pub refresh: Option<super::refresh::Refresh>,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
    /// The schedules, in file order (the last matching one wins).
    pub schedules: Vec<Schedule>,
    /// Default action lists and every action's parameters.
    pub actions: Actions,
}

/// The droplet template.
#[derive(Debug, Clone, PartialEq)]
pub struct DropletTemplate {
    /// Name prefix; names are `<prefix>-<suffix>`.
    pub name_prefix: String,
    /// Region slug.
    pub region: String,
    /// Size slug.
    pub size: String,
    /// Image slug or id.
    pub image: Image,
    /// SSH key fingerprints or ids.
    pub ssh_keys: Vec<SshKey>,
    /// VPC to join.
    pub vpc_uuid: Option<String>,
    /// Extra tags (the group and managed-by tags are added at creation).
    pub tags: Vec<String>,
    /// Cloud-init user data (inline or read from `user_data_file`); never shown.
    pub user_data: Option<String>,
    /// The file the user data was read from, if any (watched for changes on reload).
    pub user_data_file: Option<PathBuf>,
    /// Install do-agent.
    pub monitoring: bool,
    /// Enable IPv6.
    pub ipv6: bool,
}

/// An image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// A slug.
    Slug(String),
    /// A numeric id.
    Id(u64),
}

/// An SSH key reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshKey {
    /// A fingerprint.
    Fingerprint(String),
    /// A numeric id.
    Id(u64),
}

/// Which address of a droplet is scraped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    /// The private (VPC) IPv4 address.
    Private,
    /// The public IPv4 address.
    Public,
    /// The public IPv6 address.
    Ipv6,
}

impl std::fmt::Display for AddressKind {
    /// As written in the configuration.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AddressKind::Private => "private",
            AddressKind::Public => "public",
            AddressKind::Ipv6 => "ipv6",
        })
    }
}

/// Scrape settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Scrape {
    /// Which address to use.
    pub address: AddressKind,
    /// Port of the endpoint.
    pub port: u16,
    /// Path of the endpoint.
    pub path: String,
    /// Timeout of one scrape.
    pub timeout: Duration,
}

/// A pair of durations, one per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpDown {
    /// For scale-ups.
    pub up: Duration,
    /// For scale-downs.
    pub down: Duration,
}

/// How victims are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleInChoice {
    /// Youngest first.
    Newest,
    /// Oldest first.
    Oldest,
    /// Lowest value of the expression first.
    LeastBusy(String),
}

/// Scale-in settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleIn {
    /// The ordering.
    pub choose: ScaleInChoice,
    /// Droplets younger than this are not removed.
    pub min_age: Duration,
    /// Per-droplet expression true where a droplet works: never a victim (nor when missing).
    pub busy: Option<String>,
    /// The source `by` and `busy` read.
    pub source: String,
}

/// The name of the implicit source, the group's `[scrape]`.
pub const DROPLETS_SOURCE: &str = "droplets";

/// A named place rules read.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// Its name, as rules and series name it.
    pub name: String,
    /// What it is.
    pub kind: SourceKind,
}

impl Source {
    /// Whether its series belong to droplets (and so count for the partial-data guard).
    pub fn is_per_droplet(&self) -> bool {
        matches!(self.kind, SourceKind::Droplets(_))
    }

    /// Whether rules naming it are evaluated by a remote server.
    pub fn is_remote(&self) -> bool {
        matches!(self.kind, SourceKind::Prometheus(_))
    }
}

/// The three kinds of source.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// An endpoint on every active droplet.
    Droplets(Scrape),
    /// Fixed URLs scraped on their own interval.
    Target(TargetSource),
    /// A Prometheus-compatible server that evaluates the rules naming it.
    Prometheus(PrometheusSource),
}

/// A `target` source.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSource {
    /// The URLs, each its own `instance` (host:port).
    pub urls: Vec<String>,
    /// How often they are scraped (at most once per tick).
    pub interval: Duration,
    /// Timeout of one scrape.
    pub timeout: Duration,
    /// Authentication, if any.
    pub auth: Option<Auth>,
}

/// A `prometheus` source.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusSource {
    /// Base URL, without a trailing slash.
    pub url: String,
    /// Timeout of one query.
    pub timeout: Duration,
    /// Authentication, if any.
    pub auth: Option<Auth>,
}

/// How a source authenticates: secrets are named, never held in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <secret>`.
    Bearer(Secret),
    /// HTTP basic authentication.
    Basic {
        /// The user name.
        username: String,
        /// Where the password is.
        password: Secret,
    },
}

/// Where a secret is read from, at the moment it is used (so a rotated file is picked up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// A file.
    File(PathBuf),
    /// A systemd credential (`$CREDENTIALS_DIRECTORY/<name>`).
    Credential(String),
}

/// Idle headroom.
#[derive(Debug, Clone, PartialEq)]
pub struct Idle {
    /// Idle droplets to keep ready (a schedule may override it).
    pub count: u32,
    /// Per-droplet expression true where a droplet works.
    pub busy: String,
    /// How long a droplet must have been idle before it may go.
    pub time: Duration,
    /// The source `busy` reads.
    pub source: String,
}

/// One rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its name.
    pub name: String,
    /// Threshold or target.
    pub kind: RuleKind,
    /// Override of the group's `on_missing`.
    pub on_missing: Option<OnMissing>,
    /// Override of the group's action lists.
    pub actions: Option<ActionLists>,
    /// The source its expressions read.
    pub source: String,
}

/// The three kinds of rule.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// Fires a fixed change when a condition holds long enough.
    Threshold {
        /// The condition.
        condition: Condition,
        /// How long it must hold.
        hold_for: Duration,
        /// The change when it fires.
        change: Change,
    },
    /// Keeps an expression near a target value.
    Target {
        /// The expression.
        expr: String,
        /// The target value.
        target: f64,
        /// Whether `expr` is a group total.
        per_droplet: bool,
        /// The dead band.
        tolerance: f64,
        /// Largest step up.
        max_step_up: Option<u32>,
        /// Largest step down.
        max_step_down: Option<u32>,
        /// What to do while `expr` sits at its ceiling (`ceiling`, `saturated_step`).
        saturation: Option<Saturation>,
    },
    /// An expression whose value is the number of droplets wanted.
    Desired {
        /// The expression.
        expr: String,
    },
}

impl RuleKind {
    /// Every expression the rule evaluates.
    pub fn expressions(&self) -> Vec<&str> {
        match self {
            RuleKind::Threshold { condition, .. } => condition.expressions(),
            RuleKind::Target { expr, .. } | RuleKind::Desired { expr } => vec![expr.as_str()],
        }
    }
}

/// A target rule's saturation policy. A value that cannot rise above a ceiling (CPU
/// utilisation stops at 1) hides how much work is waiting, so the proportional step
/// (active × ceiling / target) is the most it can ever ask for; while the value is at the
/// ceiling the rule asks for at least `step` more than the droplets it measured, as HPA's
/// `scaleUp` policies do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Saturation {
    /// The highest value the expression can take.
    pub ceiling: f64,
    /// The growth, from the active droplets, while the value is within 2 % of the ceiling.
    pub step: Change,
}

impl Saturation {
    /// Share of the ceiling from which a value counts as at it (real machines rarely show a
    /// utilisation of exactly 1).
    pub const BAND: f64 = 0.02;

    /// Whether `value` is at the ceiling.
    pub fn holds(&self, value: f64) -> bool {
        value.is_finite() && value >= self.ceiling - Self::BAND * self.ceiling.abs()
    }
}

/// A threshold rule's condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// One comparison.
    One(String),
    /// All must hold.
    All(Vec<String>),
    /// One must hold.
    Any(Vec<String>),
}

impl Condition {
    /// The comparisons, in order.
    pub fn expressions(&self) -> Vec<&str> {
        match self {
            Condition::One(expr) => vec![expr.as_str()],
            Condition::All(list) | Condition::Any(list) => {
                list.iter().map(String::as_str).collect()
            }
        }
    }
}

/// A threshold rule's change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Plus or minus this many droplets.
    Count(i64),
    /// Plus or minus this percentage of the current size.
    Percent(i64),
}

/// A time window overriding the bounds.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Its name.
    pub name: String,
    /// The cron text as written.
    pub cron_text: String,
    /// The compiled cron.
    pub cron: croner::Cron,
    /// The zone the cron is read in.
    pub timezone: chrono_tz::Tz,
    /// How long the window stays open.
    pub duration: Duration,
    /// `min` while open.
    pub min: Option<u32>,
    /// `max` while open.
    pub max: Option<u32>,
    /// `[idle] count` while open.
    pub idle_count: Option<u32>,
}

/// Action lists for each direction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActionLists {
    /// Run on a scale-up.
    pub up: Vec<String>,
    /// Run on a scale-down.
    pub down: Vec<String>,
}

/// The group's actions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Actions {
    /// Default lists.
    pub lists: ActionLists,
    /// Parameters per action name.
    pub params: BTreeMap<String, toml::Table>,
}
