//! A simulated DigitalOcean on one machine: the API emulator, droplets that boot and serve
//! do-agent metrics on loopback addresses, a closed-loop load model, and fault injection.
//!
//! Product code: the demo, every integration test and the benchmarks run against it, and a
//! user runs it (`do-scaler sim`) to try rules before pointing the daemon at a real account.
//! Each sim takes a free 127.S.0.0/16 for its droplets, so several sims never collide.

pub mod agent;
pub mod api;
pub mod catalog;
pub mod load;
pub mod queue;
pub mod state;

use crate::clock::{Clock, SystemClock};
use crate::digitalocean::types::{Droplet, LoadBalancer};
pub use load::Demand;
use state::Activated;
pub use state::{Faults, RecordedRequest, State};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How to start a sim.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Where the API listens (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The bearer token the API accepts.
    pub token: String,
    /// Droplets that exist at start, already active.
    pub seed_droplets: u32,
    /// Their tag.
    pub seed_tag: String,
    /// Their age at start.
    pub seed_age: Duration,
    /// A managed-by tag to give them (as if do-scaler had made them).
    pub seed_managed_tag: Option<String>,
    /// Their size slug.
    pub seed_size: String,
    /// Time from create to active.
    pub boot_delay: Duration,
    /// Seed of the fault randomness.
    pub seed: u64,
    /// API rate limits (per minute, per hour); `None` turns them off.
    pub rate_limit: Option<(u32, u32)>,
    /// Port of each droplet's metrics endpoint.
    pub agent_port: u16,
    /// Ports each droplet accepts TCP connections on.
    pub open_ports: Vec<u16>,
    /// Total demand in vCPUs.
    pub demand: Demand,
    /// The account's droplet limit.
    pub droplet_limit: u64,
    /// Faults at start.
    pub faults: Faults,
    /// The sim's clock.
    pub clock: Arc<dyn Clock>,
    /// Whether links (pagination, create actions) name the real API's host, as the real API
    /// does, instead of the address the request came to: a client that follows links without
    /// rebasing them would leave the machine, so this keeps a client's own rebasing tested.
    pub public_links: bool,
    /// The queue workload: `demand` is then jobs arriving per second, each running
    /// `job_seconds` on a droplet that takes `concurrency` at once. `None`: demand is vCPUs.
    pub queue: Option<queue::QueueSettings>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: "sim-token".into(),
            seed_droplets: 0,
            seed_tag: "web".into(),
            seed_age: Duration::from_secs(3600),
            seed_managed_tag: None,
            seed_size: "s-2vcpu-4gb".into(),
            boot_delay: Duration::from_secs(5),
            seed: 1,
            rate_limit: Some((250, 5000)),
            agent_port: 9110,
            open_ports: vec![22, 80],
            demand: Demand::Constant(1.0),
            droplet_limit: 10_000,
            faults: Faults::default(),
            clock: Arc::new(SystemClock),
            public_links: false,
            queue: None,
        }
    }
}

/// Why a sim could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The API address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        reason: std::io::Error,
    },
    /// No free /16 in 127/8 for the droplets.
    #[error("no free 127.S.0.0/16 for droplet addresses on port {0}: too many sims running?")]
    NoFreeSubnet(u16),
    /// Demand or another option was invalid.
    #[error("{0}")]
    Options(String),
}

/// State shared by the API, the endpoints and the handle.
pub struct Shared {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    token: String,
    rate_limit: Option<(u32, u32)>,
    agent_port: u16,
    open_ports: Vec<u16>,
    public_links: bool,
    agents: Mutex<HashMap<u64, Vec<JoinHandle<()>>>>,
    this: std::sync::Weak<Shared>,
}

impl Shared {
    /// The state. Never held across an await.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as consistent as any single update;
        // keep serving rather than poisoning every later request.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings the model up to the clock and starts the endpoints of droplets that booted.
    pub fn sync(&self) {
        let now = self.clock.now();
        let (activated, broken) = {
            let mut state = self.lock();
            (state.advance_to(now), state.faults.new_droplets_unhealthy)
        };
        if broken {
            // Booted, listed active, and silent: a broken image.
            let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
            for (id, _) in activated {
                agents.insert(id, Vec::new());
            }
            return;
        }
        self.serve(activated);
    }

    fn serve(&self, activated: Activated) {
        let Some(this) = self.this.upgrade() else {
            return;
        };
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        for (id, address) in activated {
            agents.insert(id, agent::serve(&this, id, address));
        }
    }

    /// See [`Sim::set_healthy`].
    pub fn set_healthy(&self, id: u64, healthy: bool) -> bool {
        let address = {
            let state = self.lock();
            match state.droplets.get(&id) {
                Some(d) if d.droplet.status == crate::digitalocean::DropletStatus::Active => {
                    d.address
                }
                _ => None,
            }
        };
        let Some(address) = address else {
            return false;
        };
        self.stop_agent(id);
        if healthy {
            self.serve(vec![(id, address)]);
        }
        true
    }

    /// Stops a deleted droplet's endpoints.
    pub fn stop_agent(&self, id: u64) {
        if let Some(tasks) = self
            .agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
        {
            for task in tasks {
                task.abort();
            }
        }
    }

    /// What `GET /v2/_sim/stats` shows.
    pub fn stats_json(&self) -> serde_json::Value {
        let state = self.lock();
        let elapsed = (self.clock.now() - state.started)
            .to_std()
            .unwrap_or_default();
        serde_json::json!({
            "api": state.stats.api,
            "scrapes": { "total": state.stats.scrapes_total, "per_droplet": state.stats.scrapes },
            "droplets": state.by_status(),
            "created_names": state.stats.created_names,
            "demand": state.demand.at(elapsed),
            "subnet": format!("127.{}.0.0/16", state.subnet),
            "queue": state.queue.as_ref().map(queue::Queue::counts),
        })
    }
}

/// A running sim. Dropping it stops everything.
pub struct Sim {
    shared: Arc<Shared>,
    api_addr: SocketAddr,
    subnet: u8,
    tasks: Vec<JoinHandle<()>>,
    _subnet_claim: std::net::TcpListener,
}

pub use crate::limits::raise_file_limit;

/// Claims a free 127.S.0.0/16 by binding 127.S.0.1 on the agent port for the sim's life.
fn claim_subnet(agent_port: u16, seed: u64) -> Result<(u8, std::net::TcpListener), SimError> {
    let mut rng =
        fastrand::Rng::with_seed(seed ^ u64::from(std::process::id()) ^ fastrand::u64(..));
    for _ in 0..64 {
        let subnet = rng.u8(1..=254);
        if let Ok(listener) =
            std::net::TcpListener::bind((Ipv4Addr::new(127, subnet, 0, 1), agent_port))
        {
            return Ok((subnet, listener));
        }
    }
    Err(SimError::NoFreeSubnet(agent_port))
}

impl Sim {
    /// Starts a sim: the API on `options.listen`, seeded droplets serving metrics.
    pub async fn start(options: SimOptions) -> Result<Sim, SimError> {
        let limit = raise_file_limit();
        let needed = u64::from(options.seed_droplets) * (1 + options.open_ports.len() as u64) + 256;
        if let Some(limit) = limit
            && limit < needed
        {
            tracing::warn!(
                limit,
                needed,
                "sim: the open-file limit is too low for this many droplets; raise it (ulimit -n)"
            );
        }
        let (subnet, claim) = claim_subnet(options.agent_port, options.seed)?;
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|reason| SimError::Bind {
                addr: options.listen,
                reason,
            })?;
        let api_addr = listener.local_addr().map_err(|reason| SimError::Bind {
            addr: options.listen,
            reason,
        })?;
        let now = options.clock.now();
        let mut state = State::new(
            subnet,
            now,
            options.demand.clone(),
            options.boot_delay,
            options.droplet_limit,
            options.seed,
        );
        state.faults = options.faults.clone();
        state.queue = options.queue.map(queue::Queue::new);
        let mut activated = Vec::new();
        let mut tags = vec![options.seed_tag.clone()];
        tags.extend(options.seed_managed_tag.clone());
        for index in 1..=options.seed_droplets {
            let name = format!("{}-{index:02}", options.seed_tag);
            activated.extend(state.seed(
                name,
                tags.clone(),
                &options.seed_size,
                options.seed_age,
                now,
            ));
        }
        let shared = Arc::new_cyclic(|this| Shared {
            state: Mutex::new(state),
            clock: options.clock.clone(),
            token: options.token.clone(),
            rate_limit: options.rate_limit,
            agent_port: options.agent_port,
            open_ports: options.open_ports.clone(),
            public_links: options.public_links,
            agents: Mutex::new(HashMap::new()),
            this: this.clone(),
        });
        shared.serve(activated);
        let router = api::router(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let ticker_shared = shared.clone();
        // 200 ms of wall time between model steps, or less at speed so that a step stays
        // under a simulated second (and never below 10 ms of wall time).
        let step = Duration::from_millis(200)
            .div_f64(options.clock.speed().max(1.0))
            .max(Duration::from_millis(10));
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(step);
            loop {
                interval.tick().await;
                ticker_shared.sync();
            }
        });
        tracing::info!(api = %api_addr, droplets = %format!("127.{subnet}.0.0/16"), "sim: listening");
        Ok(Sim {
            shared,
            api_addr,
            subnet,
            tasks: vec![server, ticker],
            _subnet_claim: claim,
        })
    }

    /// The API base URL, such as `http://127.0.0.1:41234`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// The URL of the sim's clock, for `--clock` (and [`crate::clock::follow`]).
    pub fn clock_url(&self) -> String {
        format!("{}/v2/_sim/clock", self.api_url())
    }

    /// The token the API accepts.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// The second octet of the droplets' 127.S.0.0/16.
    pub fn subnet(&self) -> u8 {
        self.subnet
    }

    /// Brings the model up to the clock now (after a test moved the clock).
    pub fn sync(&self) {
        self.shared.sync();
    }

    /// Changes the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults = faults;
    }

    /// Edits the injected faults in place.
    pub fn update_faults(&self, edit: impl FnOnce(&mut Faults)) {
        edit(&mut self.shared.lock().faults);
    }

    /// Makes a droplet's endpoints unreachable (connections refused) while it stays listed,
    /// as when its firewall or do-agent breaks.
    pub fn make_unreachable(&self, id: u64) {
        self.shared.stop_agent(id);
    }

    /// Makes a droplet fail its checks (`healthy = false`: its metrics endpoint and open ports
    /// stop answering, connections refused) or pass them again. `false` for an unknown or not
    /// yet active droplet.
    pub fn set_healthy(&self, id: u64, healthy: bool) -> bool {
        self.shared.set_healthy(id, healthy)
    }

    /// Tags a droplet, as an operator does in the control panel (`do-scaler-protect`, say).
    pub fn add_tag(&self, id: u64, tag: &str) {
        if let Some(droplet) = self.shared.lock().droplets.get_mut(&id)
            && !droplet.droplet.tags.iter().any(|t| t == tag)
        {
            droplet.droplet.tags.push(tag.to_string());
        }
    }

    /// Makes a droplet's metrics endpoint accept connections and never answer.
    pub fn make_hang(&self, id: u64) {
        self.shared.lock().hung.insert(id);
    }

    /// Adds `count` active droplets tagged `tag` (and `managed_tag`, if given), an hour old,
    /// serving metrics like the seeded ones; returns their ids.
    pub fn seed(&self, count: u32, tag: &str, managed_tag: Option<&str>) -> Vec<u64> {
        let now = self.shared.clock.now();
        let mut tags = vec![tag.to_string()];
        tags.extend(managed_tag.map(str::to_string));
        let activated: Vec<(u64, std::net::Ipv4Addr)> = {
            let mut state = self.shared.lock();
            (1..=count)
                .flat_map(|index| {
                    state.seed(
                        format!("{tag}-{index:02}"),
                        tags.clone(),
                        "s-2vcpu-4gb",
                        Duration::from_secs(3600),
                        now,
                    )
                })
                .collect()
        };
        let ids = activated.iter().map(|(id, _)| *id).collect();
        self.shared.serve(activated);
        ids
    }

    /// Deletes a droplet as if through the API (its endpoints stop at once).
    pub fn delete(&self, id: u64) -> bool {
        let now = self.shared.clock.now();
        let existed = self.shared.lock().remove(id, now);
        self.shared.stop_agent(id);
        existed
    }

    /// Changes the demand curve (its time still counts from the sim's start).
    pub fn set_demand(&self, demand: Demand) {
        self.shared.sync();
        self.shared.lock().demand = demand;
    }

    /// Sets the account's droplet limit.
    pub fn set_droplet_limit(&self, limit: u64) {
        self.shared.lock().droplet_limit = limit;
    }

    /// Adds a load balancer that tests and scripts can change.
    pub fn add_load_balancer(&self, balancer: LoadBalancer) {
        self.shared
            .lock()
            .load_balancers
            .insert(balancer.id.clone(), balancer);
    }

    /// A load balancer as it is now.
    pub fn load_balancer(&self, id: &str) -> Option<LoadBalancer> {
        self.shared.lock().load_balancers.get(id).cloned()
    }

    /// Every droplet, as the API would show it.
    pub fn droplets(&self) -> Vec<Droplet> {
        self.shared.lock().list(None).into_iter().cloned().collect()
    }

    /// The stats as `GET /v2/_sim/stats` shows them.
    pub fn stats(&self) -> serde_json::Value {
        self.shared.stats_json()
    }

    /// The user data a droplet was created with, as its metadata service would serve it.
    pub fn user_data_of(&self, id: u64) -> Option<String> {
        self.shared
            .lock()
            .droplets
            .get(&id)
            .and_then(|d| d.user_data.clone())
    }

    /// Every droplet name creates accepted, in order (a duplicate name shows twice).
    pub fn created_names(&self) -> Vec<String> {
        self.shared.lock().stats.created_names.clone()
    }

    /// API requests seen, by `METHOD /template`.
    pub fn api_counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.shared.lock().stats.api.clone()
    }

    /// Scrapes per droplet id.
    pub fn scrapes(&self) -> std::collections::BTreeMap<u64, u64> {
        self.shared.lock().stats.scrapes.clone()
    }

    /// The last requests seen (up to 10,000), for conformance tests.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.iter().cloned().collect()
    }

    /// The queue workload's counts now (`None` without `--workload queue`).
    pub fn queue(&self) -> Option<queue::QueueCounts> {
        self.shared.sync();
        self.shared.lock().queue.as_ref().map(queue::Queue::counts)
    }

    /// Jobs a droplet runs now under the queue workload.
    pub fn jobs_on(&self, id: u64) -> u32 {
        self.shared
            .lock()
            .queue
            .as_ref()
            .map_or(0, |q| q.running_on(id))
    }

    /// CPU utilisation each active droplet carries now (share / vcpus, capped at 1).
    pub fn utilisation(&self, id: u64) -> Option<f64> {
        self.shared.sync();
        let state = self.shared.lock();
        let droplet = state.droplets.get(&id)?;
        Some(droplet.machine.utilisation(droplet.machine.last_share))
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let mut agents = self.shared.agents.lock().unwrap_or_else(|e| e.into_inner());
        for (_, tasks) in agents.drain() {
            for task in tasks {
                task.abort();
            }
        }
    }
}
