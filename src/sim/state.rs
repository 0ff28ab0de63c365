//! The simulated account's state: droplets, their lifecycle and load, faults, rate limits,
//! and the counts a test reads to see what really happened.

use super::catalog;
use super::load::{Demand, MachineMetrics};
use crate::digitalocean::types::{
    CreateDroplets, Droplet, DropletStatus, LoadBalancer, NetworkV4, Networks, Region,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Faults to inject; every field can be changed while the sim runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Share (0–1) of API answers replaced by a 500 or 503.
    pub error_rate: f64,
    /// Share (0–1) of API answers replaced by a 429 with `retry-after: 1`.
    pub throttle_rate: f64,
    /// The next this many API requests answer 429 (a burst).
    pub throttle_next: u32,
    /// The next this many API requests answer 503.
    pub fail_next: u32,
    /// Added to every API answer.
    pub latency: Duration,
    /// The next this many creates make their droplets but answer 500.
    pub create_succeeds_then_500: u32,
    /// Deletes are carried out, then the answer is held back this long.
    pub delete_hang: Option<Duration>,
    /// Share (0–1) of droplets whose metrics endpoint never answers.
    pub scrape_hang_share: f64,
    /// Share (0–1) of droplets whose metrics endpoint answers garbage.
    pub scrape_garbage_share: f64,
    /// How long listings lag the truth, as the real API's do: a new droplet appears in
    /// listings only this long after its create, and a deleted one leaves them only this long
    /// after its delete (a GET by id is current).
    pub list_lag: Duration,
    /// Droplets that boot from now on never answer (their metrics endpoint and open ports
    /// stay closed), as with a broken image or user data.
    pub new_droplets_unhealthy: bool,
}

/// One simulated droplet.
#[derive(Debug, Clone)]
pub struct SimDroplet {
    /// What the API shows.
    pub droplet: Droplet,
    /// When it turns active.
    pub ready_at: DateTime<Utc>,
    /// From when listings show it (its create plus the listing lag).
    pub listed_from: DateTime<Utc>,
    /// Its address in the sim's loopback /16, once active.
    pub address: Option<Ipv4Addr>,
    /// Its machine.
    pub machine: MachineMetrics,
    /// The user data it was created with (a real droplet's metadata service serves it).
    pub user_data: Option<String>,
}

/// One request the API saw, for conformance tests.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Query pairs.
    pub query: Vec<(String, String)>,
    /// JSON body, if any.
    pub body: Option<serde_json::Value>,
}

/// Counts of what the sim saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// API requests by `METHOD /path/{template}`.
    pub api: BTreeMap<String, u64>,
    /// Scrapes in all.
    pub scrapes_total: u64,
    /// Scrapes per droplet id.
    pub scrapes: BTreeMap<u64, u64>,
    /// Every droplet name a create accepted, in order (duplicates show here).
    pub created_names: Vec<String>,
}

/// Why the sim refused a create.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateRefusal {
    /// 422 with DigitalOcean's droplet-limit message.
    DropletLimit,
    /// 422 for an invalid request, with the message.
    Invalid(String),
}

/// The whole simulated account.
#[derive(Debug)]
pub struct State {
    /// Droplets by id.
    pub droplets: BTreeMap<u64, SimDroplet>,
    next_id: u64,
    next_host: u32,
    /// The second octet of the sim's 127.S.0.0/16.
    pub subnet: u8,
    /// Demand in vCPUs.
    pub demand: Demand,
    /// When the sim started (demand curves count from here).
    pub started: DateTime<Utc>,
    last_advance: DateTime<Utc>,
    /// Whether the machines have taken their first step.
    primed: bool,
    /// Boot time of new droplets.
    pub boot_delay: Duration,
    /// The account's droplet limit.
    pub droplet_limit: u64,
    /// Injected faults.
    pub faults: Faults,
    /// Seeded randomness for faults.
    pub rng: fastrand::Rng,
    /// Counts.
    pub stats: Stats,
    /// Requests seen (the last 10,000).
    pub requests: VecDeque<RecordedRequest>,
    /// Request times in the last hour, for rate limiting.
    pub request_times: VecDeque<DateTime<Utc>>,
    /// Tags that exist.
    pub tags: BTreeSet<String>,
    /// Load balancers by id.
    pub load_balancers: BTreeMap<String, LoadBalancer>,
    /// Droplets whose metrics endpoint a test made hang.
    pub hung: BTreeSet<u64>,
    /// Deleted droplets that listings still show, until when.
    pub departed: Vec<(Droplet, DateTime<Utc>)>,
    /// The share of demand per active droplet at the last advance.
    current_share: f64,
    /// The queue workload, when the demand is jobs per second rather than vCPUs.
    pub queue: Option<super::queue::Queue>,
}

/// Droplets activated by an advance, whose endpoints must now be served.
pub type Activated = Vec<(u64, Ipv4Addr)>;

impl State {
    /// An empty account.
    pub fn new(
        subnet: u8,
        now: DateTime<Utc>,
        demand: Demand,
        boot_delay: Duration,
        droplet_limit: u64,
        seed: u64,
    ) -> Self {
        State {
            droplets: BTreeMap::new(),
            next_id: 300_000_001,
            next_host: 2,
            subnet,
            demand,
            started: now,
            last_advance: now,
            primed: false,
            boot_delay,
            droplet_limit,
            faults: Faults::default(),
            rng: fastrand::Rng::with_seed(seed),
            stats: Stats::default(),
            requests: VecDeque::new(),
            request_times: VecDeque::new(),
            tags: BTreeSet::new(),
            load_balancers: BTreeMap::new(),
            hung: BTreeSet::new(),
            departed: Vec::new(),
            current_share: 0.0,
            queue: None,
        }
    }

    fn next_address(&mut self) -> Ipv4Addr {
        let host = self.next_host;
        self.next_host += 1;
        Ipv4Addr::new(127, self.subnet, (host / 254) as u8, (host % 254 + 1) as u8)
    }

    /// Validates a create the way the API does.
    pub fn check_create(&self, request: &CreateDroplets) -> Result<(), CreateRefusal> {
        let names = request.all_names();
        if names.is_empty() {
            return Err(CreateRefusal::Invalid("name is required".into()));
        }
        if names.len() > 10 {
            return Err(CreateRefusal::Invalid(
                "you can create at most 10 droplets at once".into(),
            ));
        }
        for name in &names {
            let valid = !name.is_empty()
                && name.len() <= 255
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                && name.ends_with(|c: char| c.is_ascii_alphanumeric());
            if !valid {
                return Err(CreateRefusal::Invalid(format!(
                    "name `{name}` is invalid: only a-z, A-Z, 0-9, . and - are allowed"
                )));
            }
        }
        let Some(size) = catalog::size(&request.size) else {
            return Err(CreateRefusal::Invalid(format!(
                "size `{}` is not available",
                request.size
            )));
        };
        let region = request.region.clone().unwrap_or_else(|| "nyc3".into());
        if catalog::region(&region).is_none() || !size.regions.contains(&region) {
            return Err(CreateRefusal::Invalid(format!(
                "size `{}` is not available in region `{region}`",
                request.size
            )));
        }
        let image_key = match &request.image {
            crate::digitalocean::ImageRef::Id(id) => id.to_string(),
            crate::digitalocean::ImageRef::Slug(slug) => slug.clone(),
        };
        if catalog::image(&image_key).is_none() {
            return Err(CreateRefusal::Invalid(format!(
                "image `{image_key}` does not exist"
            )));
        }
        if (self.droplets.len() + names.len()) as u64 > self.droplet_limit {
            return Err(CreateRefusal::DropletLimit);
        }
        Ok(())
    }

    /// Creates the droplets a (checked) request names, in state `new`.
    pub fn create(&mut self, request: &CreateDroplets, now: DateTime<Utc>) -> Vec<Droplet> {
        let size = catalog::size(&request.size);
        let (vcpus, memory, disk) = size
            .as_ref()
            .map(|s| (s.vcpus, s.memory, s.disk))
            .unwrap_or((1, 1024, 25));
        let region_slug = request.region.clone().unwrap_or_else(|| "nyc3".into());
        let mut made = Vec::new();
        for name in request.all_names() {
            let id = self.next_id;
            self.next_id += 1;
            for tag in &request.tags {
                self.tags.insert(tag.clone());
            }
            let droplet = Droplet {
                id,
                name: name.clone(),
                memory,
                vcpus,
                disk,
                locked: false,
                status: DropletStatus::New,
                created_at: now,
                features: if request.monitoring {
                    vec!["monitoring".into()]
                } else {
                    Vec::new()
                },
                backup_ids: Vec::new(),
                next_backup_window: None,
                snapshot_ids: Vec::new(),
                image: serde_json::to_value(catalog::image(&match &request.image {
                    crate::digitalocean::ImageRef::Id(id) => id.to_string(),
                    crate::digitalocean::ImageRef::Slug(slug) => slug.clone(),
                }))
                .unwrap_or_default(),
                volume_ids: Vec::new(),
                size: serde_json::to_value(&size).unwrap_or_default(),
                size_slug: request.size.clone(),
                networks: Networks::default(),
                region: catalog::region(&region_slug).unwrap_or(Region {
                    slug: region_slug.clone(),
                    name: region_slug.clone(),
                    sizes: Vec::new(),
                    available: true,
                    features: Vec::new(),
                }),
                tags: request.tags.clone(),
                vpc_uuid: Some(
                    request
                        .vpc_uuid
                        .clone()
                        .unwrap_or_else(|| catalog::default_vpc_id(&region_slug)),
                ),
            };
            self.stats.created_names.push(name);
            self.droplets.insert(
                id,
                SimDroplet {
                    droplet: droplet.clone(),
                    ready_at: now + chrono::Duration::from_std(self.boot_delay).unwrap_or_default(),
                    listed_from: now
                        + chrono::Duration::from_std(self.faults.list_lag).unwrap_or_default(),
                    address: None,
                    machine: MachineMetrics::new(vcpus, memory, disk, Duration::ZERO),
                    user_data: request.user_data.clone(),
                },
            );
            made.push(droplet);
        }
        made
    }

    /// Adds an already-running droplet (for `--droplets N`).
    pub fn seed(
        &mut self,
        name: String,
        tags: Vec<String>,
        size: &str,
        age: Duration,
        now: DateTime<Utc>,
    ) -> Activated {
        let request = CreateDroplets {
            name: Some(name),
            names: None,
            region: Some("nyc3".into()),
            size: size.to_string(),
            image: crate::digitalocean::ImageRef::Slug("ubuntu-24-04-x64".into()),
            ssh_keys: Vec::new(),
            ipv6: false,
            monitoring: true,
            tags,
            user_data: None,
            vpc_uuid: None,
        };
        let created_at = now - chrono::Duration::from_std(age).unwrap_or_default();
        let mut activated = Vec::new();
        for droplet in self.create(&request, created_at) {
            self.stats.created_names.pop();
            if let Some(sim) = self.droplets.get_mut(&droplet.id) {
                sim.ready_at = created_at;
                sim.listed_from = created_at;
                sim.machine = MachineMetrics::new(droplet.vcpus, droplet.memory, droplet.disk, age);
            }
            activated.extend(self.activate(droplet.id));
        }
        activated
    }

    fn activate(&mut self, id: u64) -> Option<(u64, Ipv4Addr)> {
        let address = self.next_address();
        let sim = self.droplets.get_mut(&id)?;
        sim.droplet.status = DropletStatus::Active;
        sim.address = Some(address);
        let ip = address.to_string();
        sim.droplet.networks.v4 = vec![
            NetworkV4 {
                ip_address: ip.clone(),
                netmask: "255.255.0.0".into(),
                // What the real API answers for a private interface: the string "nil".
                gateway: Some("nil".into()),
                kind: "private".into(),
            },
            // The public address is the same loopback address, so `address = "public"` works
            // against the sim too.
            NetworkV4 {
                ip_address: ip,
                netmask: "255.255.0.0".into(),
                gateway: Some(format!("127.{}.0.1", self.subnet)),
                kind: "public".into(),
            },
        ];
        Some((id, address))
    }

    /// The id the next droplet will get.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// When the machines were last advanced.
    pub fn last_advance(&self) -> DateTime<Utc> {
        self.last_advance
    }

    /// The vCPUs of work each active droplet carried at the last advance (what a scrape
    /// projects forward: cheap, unlike [`State::share`], which counts the droplets).
    pub fn current_share(&self) -> f64 {
        self.current_share
    }

    /// The vCPUs of work droplet `id` carried at the last advance: its running jobs (one vCPU
    /// each) under the queue workload, else the even share.
    pub fn share_of(&self, id: u64) -> f64 {
        match &self.queue {
            Some(queue) => f64::from(queue.running_on(id)),
            None => self.current_share,
        }
    }

    /// The vCPUs of work each active droplet carries at `at`.
    pub fn share(&self, at: DateTime<Utc>) -> f64 {
        let active = self
            .droplets
            .values()
            .filter(|d| d.droplet.status == DropletStatus::Active)
            .count();
        let elapsed = (at - self.started).to_std().unwrap_or_default();
        if active == 0 {
            0.0
        } else {
            self.demand.at(elapsed) / active as f64
        }
    }

    /// Moves the model forward to `now` in steps of at most a second: boots droplets whose
    /// time has come and advances every active droplet's counters.
    pub fn advance_to(&mut self, now: DateTime<Utc>) -> Activated {
        let mut activated = Vec::new();
        let step = chrono::Duration::seconds(1);
        // Machines move in steps of at least 20 ms: every API call syncs, and a tick's
        // paginated listing must not step every machine once per page (quadratic in the
        // group's size); a counter at most 20 ms behind its scrape is within a rate's noise.
        let smallest = chrono::Duration::milliseconds(20);
        // The first step is taken whatever its length: it sets the machines' initial load.
        while now > self.last_advance && (now - self.last_advance >= smallest || !self.primed) {
            self.primed = true;
            let next = (self.last_advance + step).min(now);
            let ready: Vec<u64> = self
                .droplets
                .iter()
                .filter(|(_, d)| d.droplet.status == DropletStatus::New && d.ready_at <= next)
                .map(|(id, _)| *id)
                .collect();
            for id in ready {
                activated.extend(self.activate(id));
            }
            let dt = (next - self.last_advance).to_std().unwrap_or_default();
            if let Some(queue) = &mut self.queue {
                // The demand is jobs per second; each running job keeps one vCPU busy.
                let since_start = (next - self.started).to_std().unwrap_or_default();
                let active: Vec<u64> = self
                    .droplets
                    .iter()
                    .filter(|(_, d)| d.droplet.status == DropletStatus::Active)
                    .map(|(id, _)| *id)
                    .collect();
                queue.step(
                    since_start.as_secs_f64(),
                    dt.as_secs_f64(),
                    self.demand.at(since_start),
                    &active,
                    &mut self.rng,
                );
                for (id, droplet) in self.droplets.iter_mut() {
                    if droplet.droplet.status == DropletStatus::Active {
                        droplet
                            .machine
                            .advance(dt, f64::from(queue.running_on(*id)));
                    }
                }
            } else {
                let share = self.share(next);
                self.current_share = share;
                for droplet in self.droplets.values_mut() {
                    if droplet.droplet.status == DropletStatus::Active {
                        droplet.machine.advance(dt, share);
                    }
                }
            }
            self.last_advance = next;
        }
        // Droplets due now (a zero boot delay, or a clock that has not moved) boot at once.
        let due: Vec<u64> = self
            .droplets
            .iter()
            .filter(|(_, d)| d.droplet.status == DropletStatus::New && d.ready_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            activated.extend(self.activate(id));
        }
        activated
    }

    /// The droplets with `tag` (all droplets without a tag), by id.
    pub fn list(&self, tag: Option<&str>) -> Vec<&Droplet> {
        self.droplets
            .values()
            .map(|d| &d.droplet)
            .filter(|d| tag.is_none_or(|t| d.has_tag(t)))
            .collect()
    }

    /// What a listing shows at `now`: droplets past their listing lag, and deleted ones whose
    /// departure has not reached the listings yet, in id order.
    pub fn list_visible(&self, tag: Option<&str>, now: DateTime<Utc>) -> Vec<&Droplet> {
        let mut shown: Vec<&Droplet> = self
            .droplets
            .values()
            .filter(|d| d.listed_from <= now)
            .map(|d| &d.droplet)
            .chain(
                self.departed
                    .iter()
                    .filter(|(_, until)| *until > now)
                    .map(|(d, _)| d),
            )
            .filter(|d| tag.is_none_or(|t| d.has_tag(t)))
            .collect();
        shown.sort_by_key(|d| d.id);
        shown
    }

    /// Deletes a droplet; listings keep showing it for the listing lag. Returns whether it
    /// existed.
    pub fn remove(&mut self, id: u64, now: DateTime<Utc>) -> bool {
        let Some(gone) = self.droplets.remove(&id) else {
            return false;
        };
        if let Some(queue) = &mut self.queue {
            queue.remove(id);
        }
        self.departed.retain(|(_, until)| *until > now);
        if !self.faults.list_lag.is_zero() {
            let until = now + chrono::Duration::from_std(self.faults.list_lag).unwrap_or_default();
            self.departed.push((gone.droplet, until));
        }
        true
    }

    /// Counts of droplets by status.
    pub fn by_status(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for droplet in self.droplets.values() {
            *counts
                .entry(droplet.droplet.status.to_string())
                .or_insert(0) += 1;
        }
        counts
    }

    /// Whether a droplet's endpoint hangs or answers garbage (a stable choice per droplet, or
    /// a droplet whose endpoint a test made hang).
    pub fn scrape_fault(&self, id: u64) -> (bool, bool) {
        let bucket = (id.wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0;
        (
            bucket < self.faults.scrape_hang_share || self.hung.contains(&id),
            bucket >= 1.0 - self.faults.scrape_garbage_share,
        )
    }

    /// Records a request time; returns the hour count and, if over a limit, the retry-after.
    pub fn rate_check(
        &mut self,
        now: DateTime<Utc>,
        per_minute: u32,
        per_hour: u32,
    ) -> (u64, DateTime<Utc>, Option<u64>) {
        let hour_ago = now - chrono::Duration::hours(1);
        while self.request_times.front().is_some_and(|t| *t <= hour_ago) {
            self.request_times.pop_front();
        }
        let minute_ago = now - chrono::Duration::minutes(1);
        let in_minute = self
            .request_times
            .iter()
            .rev()
            .take_while(|t| **t > minute_ago)
            .count();
        let reset = self
            .request_times
            .front()
            .map(|t| *t + chrono::Duration::hours(1))
            .unwrap_or(now);
        if in_minute >= per_minute as usize {
            let oldest_in_minute = self.request_times[self.request_times.len() - in_minute];
            let wait = (oldest_in_minute + chrono::Duration::minutes(1) - now)
                .num_seconds()
                .max(1) as u64;
            return (self.request_times.len() as u64, reset, Some(wait));
        }
        if self.request_times.len() >= per_hour as usize {
            let wait = (reset - now).num_seconds().max(1) as u64;
            return (self.request_times.len() as u64, reset, Some(wait));
        }
        self.request_times.push_back(now);
        (self.request_times.len() as u64, reset, None)
    }
}
