//! The JSON shapes of the DigitalOcean API v2 that do-scaler reads and writes, as in the
//! official API description. Shared by the client and the simulated DigitalOcean, so both
//! speak exactly the same wire format.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A droplet's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DropletStatus {
    /// Being created; no addresses yet.
    New,
    /// Running.
    Active,
    /// Powered off.
    Off,
    /// Archived.
    Archive,
    /// A status this version does not know.
    #[serde(other)]
    Unknown,
}

impl fmt::Display for DropletStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropletStatus::New => "new",
            DropletStatus::Active => "active",
            DropletStatus::Off => "off",
            DropletStatus::Archive => "archive",
            DropletStatus::Unknown => "unknown",
        })
    }
}

/// One IPv4 interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkV4 {
    /// The address.
    pub ip_address: String,
    /// Its netmask.
    pub netmask: String,
    /// The gateway (absent on private interfaces).
    pub gateway: Option<String>,
    /// "public" or "private".
    #[serde(rename = "type")]
    pub kind: String,
}

/// One IPv6 interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkV6 {
    /// The address.
    pub ip_address: String,
    /// Prefix length.
    pub netmask: u32,
    /// The gateway.
    pub gateway: String,
    /// Always "public".
    #[serde(rename = "type")]
    pub kind: String,
}

/// A droplet's interfaces.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Networks {
    /// IPv4 interfaces.
    #[serde(default)]
    pub v4: Vec<NetworkV4>,
    /// IPv6 interfaces.
    #[serde(default)]
    pub v6: Vec<NetworkV6>,
}

/// A region as embedded in a droplet or listed by `/v2/regions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Region {
    /// Slug such as "nyc3".
    pub slug: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Size slugs available here.
    #[serde(default)]
    pub sizes: Vec<String>,
    /// Whether new droplets can be created here.
    #[serde(default)]
    pub available: bool,
    /// Features of the region.
    #[serde(default)]
    pub features: Vec<String>,
}

/// A droplet size as listed by `/v2/sizes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Size {
    /// Slug such as "s-2vcpu-4gb".
    pub slug: String,
    /// Memory in MiB.
    pub memory: u64,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Disk in GiB.
    pub disk: u64,
    /// Transfer in TiB.
    #[serde(default)]
    pub transfer: f64,
    /// Monthly price in USD.
    #[serde(default)]
    pub price_monthly: f64,
    /// Hourly price in USD.
    #[serde(default)]
    pub price_hourly: f64,
    /// Regions offering it.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Whether it can be created.
    #[serde(default)]
    pub available: bool,
    /// Description.
    #[serde(default)]
    pub description: String,
}

/// An image as returned by `/v2/images/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// Numeric id.
    pub id: u64,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Slug, for public images.
    #[serde(default)]
    pub slug: Option<String>,
    /// Distribution.
    #[serde(default)]
    pub distribution: String,
    /// Regions it is available in.
    #[serde(default)]
    pub regions: Vec<String>,
    /// "available", "pending", …
    #[serde(default)]
    pub status: String,
}

/// A droplet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Droplet {
    /// Unique id.
    pub id: u64,
    /// Name (not unique in DigitalOcean; unique among droplets do-scaler makes).
    pub name: String,
    /// Memory in MiB.
    #[serde(default)]
    pub memory: u64,
    /// Virtual CPUs.
    #[serde(default)]
    pub vcpus: u32,
    /// Disk in GiB.
    #[serde(default)]
    pub disk: u64,
    /// Whether it is locked by an event.
    #[serde(default)]
    pub locked: bool,
    /// Lifecycle state.
    pub status: DropletStatus,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Features such as "monitoring".
    #[serde(default)]
    pub features: Vec<String>,
    /// Backup ids.
    #[serde(default)]
    pub backup_ids: Vec<u64>,
    /// Next backup window (unused, kept for shape).
    #[serde(default)]
    pub next_backup_window: Option<serde_json::Value>,
    /// Snapshot ids.
    #[serde(default)]
    pub snapshot_ids: Vec<u64>,
    /// The image it was made from (kept as JSON: only shown, never interpreted).
    #[serde(default)]
    pub image: serde_json::Value,
    /// Attached volumes.
    #[serde(default)]
    pub volume_ids: Vec<String>,
    /// The size object (kept as JSON).
    #[serde(default)]
    pub size: serde_json::Value,
    /// The size slug.
    #[serde(default)]
    pub size_slug: String,
    /// Addresses.
    #[serde(default)]
    pub networks: Networks,
    /// Region.
    pub region: Region,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// VPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_uuid: Option<String>,
}

impl Droplet {
    fn address(&self, kind: &str) -> Option<&str> {
        self.networks
            .v4
            .iter()
            .find(|n| n.kind == kind)
            .map(|n| n.ip_address.as_str())
    }

    /// The private (VPC) IPv4 address, once the droplet has one.
    pub fn private_ipv4(&self) -> Option<&str> {
        self.address("private")
    }

    /// The public IPv4 address.
    pub fn public_ipv4(&self) -> Option<&str> {
        self.address("public")
    }

    /// The public IPv6 address.
    pub fn public_ipv6(&self) -> Option<&str> {
        self.networks.v6.first().map(|n| n.ip_address.as_str())
    }

    /// Whether the droplet carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// An image named by slug or id in a create request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageRef {
    /// Numeric id.
    Id(u64),
    /// Slug.
    Slug(String),
}

impl std::fmt::Display for ImageRef {
    /// As written in the template: the slug, or the id.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Id(id) => write!(f, "{id}"),
            ImageRef::Slug(slug) => f.write_str(slug),
        }
    }
}

/// An SSH key named by fingerprint or id in a create request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SshKeyRef {
    /// Numeric id.
    Id(u64),
    /// Fingerprint.
    Fingerprint(String),
}

impl std::fmt::Display for SshKeyRef {
    /// As written in the template: the fingerprint, or the id.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SshKeyRef::Id(id) => write!(f, "{id}"),
            SshKeyRef::Fingerprint(fingerprint) => f.write_str(fingerprint),
        }
    }
}

/// The body of `POST /v2/droplets` for one or several droplets (`names`, at most 10).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateDroplets {
    /// One droplet's name (single create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Several names (multi create, at most 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// Region slug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Size slug.
    pub size: String,
    /// Image slug or id.
    pub image: ImageRef,
    /// SSH keys.
    #[serde(default)]
    pub ssh_keys: Vec<SshKeyRef>,
    /// Public IPv6.
    #[serde(default)]
    pub ipv6: bool,
    /// Install do-agent.
    #[serde(default)]
    pub monitoring: bool,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Cloud-init user data; redacted in `Debug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// VPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_uuid: Option<String>,
}

impl CreateDroplets {
    /// The names this request creates.
    pub fn all_names(&self) -> Vec<String> {
        match (&self.name, &self.names) {
            (_, Some(names)) => names.clone(),
            (Some(name), None) => vec![name.clone()],
            (None, None) => Vec::new(),
        }
    }

    /// The same request for other names (one name → `name`, several → `names`).
    pub fn with_names(&self, names: &[String]) -> CreateDroplets {
        let mut request = self.clone();
        if names.len() == 1 {
            request.name = Some(names[0].clone());
            request.names = None;
        } else {
            request.name = None;
            request.names = Some(names.to_vec());
        }
        request
    }
}

impl fmt::Debug for CreateDroplets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateDroplets")
            .field("names", &self.all_names())
            .field("region", &self.region)
            .field("size", &self.size)
            .field("image", &self.image)
            .field("ssh_keys", &self.ssh_keys)
            .field("ipv6", &self.ipv6)
            .field("monitoring", &self.monitoring)
            .field("tags", &self.tags)
            .field("user_data", &self.user_data.as_ref().map(|_| "[redacted]"))
            .field("vpc_uuid", &self.vpc_uuid)
            .finish()
    }
}

/// Pagination links.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PageLinks {
    /// First page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    /// Previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    /// Next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
}

/// The `links` object of a list answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Links {
    /// Page links, when there are several pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<PageLinks>,
}

/// The `meta` object of a list answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Items in the whole listing.
    pub total: u64,
}

/// `GET /v2/droplets`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DropletList {
    /// This page's droplets.
    pub droplets: Vec<Droplet>,
    /// Pagination.
    #[serde(default)]
    pub links: Links,
    /// Totals.
    #[serde(default)]
    pub meta: Meta,
}

/// The account, for `droplet_limit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// How many droplets the account may have.
    pub droplet_limit: u64,
    /// Account e-mail (shown by preflight only as a name of the account).
    #[serde(default)]
    pub email: String,
    /// Account status ("active", "warning", "locked").
    #[serde(default)]
    pub status: String,
}

/// An SSH key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SshKey {
    /// Numeric id.
    pub id: u64,
    /// Fingerprint.
    pub fingerprint: String,
    /// Name.
    #[serde(default)]
    pub name: String,
}

/// A VPC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vpc {
    /// UUID.
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Region slug.
    #[serde(default)]
    pub region: String,
}

/// A load balancer (only what the actions need).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadBalancer {
    /// UUID.
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Member droplets (for balancers that are not tag-based).
    #[serde(default)]
    pub droplet_ids: Vec<u64>,
    /// The tag, for tag-based balancers.
    #[serde(default)]
    pub tag: String,
    /// Status.
    #[serde(default)]
    pub status: String,
}

/// DigitalOcean's error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Short id such as "not_found".
    pub id: String,
    /// Human message.
    pub message: String,
    /// Request id for support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}
