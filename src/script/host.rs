//! Host functions: everything a script can do to the world, each enforcing the invariants in
//! Rust whatever the script asks. A run's context (its group, decision, deadline, and what it
//! created and deleted) is bound to the blocking thread the script runs on.

use super::convert;
use crate::config::Group;
use crate::digitalocean::{
    ApiPath, Client, CreateDroplets, Droplet, DropletStatus, ImageRef, SshKeyRef,
};
use crate::policy::Decision;
use crate::state::{Intent, Journal};
use rhai::{Array, Dynamic, Engine, EvalAltResult, Map};
use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a host function returns to the script.
pub(super) type HostResult<T> = Result<T, Box<EvalAltResult>>;

/// Everything a run's host functions need.
pub struct RunContext {
    /// The group.
    pub group: Group,
    /// The managed-by tag of this daemon.
    pub managed_tag: String,
    /// The decision being carried out.
    pub decision: Decision,
    /// The group's droplets when the decision was made.
    pub droplets: Vec<Droplet>,
    /// The DigitalOcean client.
    pub client: Client,
    /// The intent journal.
    pub journal: Arc<dyn Journal>,
    /// The runtime to run async calls on.
    pub handle: tokio::runtime::Handle,
    /// When the run must stop.
    pub deadline: Instant,
    /// Droplets this run created.
    pub created: Mutex<Vec<Droplet>>,
    /// Droplet ids this run deleted.
    pub deleted: Mutex<Vec<u64>>,
    /// Droplets the group created in the hour before this run (the spend guard's start).
    pub creates_before: u32,
    /// Names this run asked for that may exist: created, or sent with an unknown outcome.
    pub spent: Mutex<u32>,
    /// HTTP client for webhooks (guarded resolver, no proxy), or why it could not be built.
    pub http: Result<reqwest::Client, super::webhook::WebhookError>,
    /// Which script is running (for errors and logs).
    pub script: Mutex<String>,
    /// Where the systemd credentials that user data names are.
    pub credentials_dir: Option<std::path::PathBuf>,
    /// The daemon's leases (PostgreSQL state): checked before a create or destroy is
    /// journaled; the client's write gate checks them again as each request is sent.
    pub leadership: Option<Arc<crate::state::lease::Leadership>>,
    /// The name journaled for a replacement's one create (`[health]`), when the run
    /// launches one.
    pub replacement: Option<String>,
    /// The daemon's clock: `now()` reads it; `sleep` and `wait_active` wait its time.
    pub clock: Arc<dyn crate::clock::Clock>,
}

impl RunContext {
    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// `wanted`, capped at the time left in the run.
    fn cap(&self, wanted: Duration) -> Duration {
        wanted.min(self.remaining())
    }

    /// How long `span` of the daemon's clock is on the wall (less at a sim's speed).
    fn wall(&self, span: Duration) -> Duration {
        crate::clock::wall(self.clock.as_ref(), span)
    }

    fn is_protected(&self, droplet: &Droplet) -> bool {
        droplet.has_tag(&self.group.protect_tag)
    }

    fn is_managed(&self, droplet: &Droplet) -> bool {
        droplet.has_tag(&self.managed_tag)
            || self.group.adopt_tags.iter().any(|t| droplet.has_tag(t))
    }

    fn script_name(&self) -> String {
        self.script.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Refuses a create or destroy before it is journaled unless this daemon leads the group
    /// with enough lease left for the request (always allowed on a SQLite state). The client's
    /// write gate asks again immediately before each request it sends.
    fn may_write(&self, what: &str) -> HostResult<()> {
        match &self.leadership {
            Some(leadership) => leadership
                .may_write(&self.group.name)
                .or_else(|why| fail(format!("{what}: {why}"))),
            None => Ok(()),
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<RunContext>>> = const { RefCell::new(None) };
    /// This thread's memory count when the run started.
    static MEMORY_BASELINE: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// Binds `context` to this thread while `run` runs.
pub fn with_context<T>(context: Arc<RunContext>, run: impl FnOnce() -> T) -> T {
    CURRENT.with(|current| *current.borrow_mut() = Some(context));
    MEMORY_BASELINE.with(|b| b.set(super::memory::thread_net_bytes()));
    let result = run();
    CURRENT.with(|current| *current.borrow_mut() = None);
    result
}

pub(super) fn context() -> HostResult<Arc<RunContext>> {
    CURRENT
        .with(|current| current.borrow().clone())
        .ok_or_else(|| "host functions work only inside an action run".into())
}

/// A message when the current run is past its deadline or holds more memory than a run may
/// (the engine's progress check, called between operations).
pub fn over_limits() -> Option<String> {
    CURRENT.with(|current| {
        current.borrow().as_ref().and_then(|ctx| {
            if Instant::now() >= ctx.deadline {
                return Some(format!(
                    "script `{}` ran past its deadline",
                    ctx.script_name()
                ));
            }
            let held = super::memory::thread_net_bytes() - MEMORY_BASELINE.with(|b| b.get());
            (held > super::memory::SCRIPT_MEMORY_LIMIT).then(|| {
                format!(
                    "script `{}` stopped: it holds more than {} MiB of memory",
                    ctx.script_name(),
                    super::memory::SCRIPT_MEMORY_LIMIT >> 20
                )
            })
        })
    })
}

pub(super) fn fail<T>(message: impl Into<String>) -> HostResult<T> {
    Err(message.into().into())
}

/// Runs a future on the runtime from the script's blocking thread, cut at the run's deadline.
fn block_on<T>(
    ctx: &RunContext,
    what: &str,
    future: impl std::future::Future<Output = T>,
) -> HostResult<T> {
    let remaining = ctx.remaining();
    if remaining.is_zero() {
        return fail(format!(
            "{what}: script `{}` ran past its deadline",
            ctx.script_name()
        ));
    }
    ctx.handle
        .block_on(async { tokio::time::timeout(remaining, future).await })
        .or_else(|_| {
            fail(format!(
                "{what}: script `{}` ran past its deadline",
                ctx.script_name()
            ))
        })
}

/// A unique droplet name: `<prefix>-<time in base 36><counter><random>`; never reused.
pub fn unique_name(prefix: &str, index: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut millis = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let mut stamp = Vec::new();
    while millis > 0 {
        stamp.push(DIGITS[(millis % 36) as usize]);
        millis /= 36;
    }
    stamp.reverse();
    let random: String = (0..3)
        .map(|_| DIGITS[fastrand::usize(..36)] as char)
        .collect();
    format!(
        "{prefix}-{}{index:x}{random}",
        String::from_utf8_lossy(&stamp)
    )
}

/// The most droplets one `create_droplets` call may ask for (the API takes ten per request;
/// the host sends as many requests as needed).
const MAX_CREATE_COUNT: i64 = 1000;

fn create_droplets(count: i64) -> HostResult<Array> {
    let ctx = context()?;
    if !(1..=MAX_CREATE_COUNT).contains(&count) {
        return fail(format!(
            "create_droplets({count}): ask for 1 to {MAX_CREATE_COUNT} droplets: nothing was created"
        ));
    }
    let created_so_far = ctx.created.lock().map(|c| c.len()).unwrap_or(0) as i64;
    let deleted_so_far = ctx.deleted.lock().map(|d| d.len()).unwrap_or(0) as i64;
    // Draining droplets and those being replaced are billed until destroyed: they count
    // toward max here.
    let would_be = i64::from(ctx.decision.current)
        + i64::from(ctx.decision.draining)
        + i64::from(ctx.decision.replacing)
        + created_so_far
        - deleted_so_far
        + count;
    // A journaled replacement launches before its old droplet goes: exactly one past max.
    let allowance = i64::from(ctx.replacement.is_some());
    let max = i64::from(ctx.decision.bounds.max) + allowance;
    if would_be > max {
        return fail(format!(
            "create_droplets({count}) would make {would_be} droplets (counting those booting, draining and being replaced), past the group's max {max}: nothing was created"
        ));
    }
    if ctx.replacement.is_some() && (count != 1 || created_so_far > 0) {
        return fail(format!(
            "create_droplets({count}): a replacement's run creates exactly one droplet, once: nothing was created"
        ));
    }
    // The spend guard binds here, where droplets are made, not only in the decision: a script
    // that creates, destroys and creates again still spends. A replacement is not a scale
    // event: `[health] max_replacements_per_hour` limits it instead.
    let spent = ctx.spent.lock().map(|s| *s).unwrap_or(u32::MAX);
    let limit = i64::from(ctx.group.max_creates_per_hour);
    let used = i64::from(ctx.creates_before) + i64::from(spent);
    if ctx.replacement.is_none() && used + count > limit {
        return fail(format!(
            "create_droplets({count}): {used} droplets were created in the last hour (this run included) of max_creates_per_hour {limit}: nothing was created"
        ));
    }
    let template = &ctx.group.template;
    // Credentials in the user data are filled in now, and only into the request.
    let user_data = match &template.user_data {
        Some(text) => match crate::config::user_data::fill_in(text, ctx.credentials_dir.as_deref())
        {
            Ok(filled) => Some(filled),
            Err(error) => {
                return fail(format!("create_droplets: {error}: nothing was created"));
            }
        },
        None => None,
    };
    let names: Vec<String> = match &ctx.replacement {
        Some(name) => vec![name.clone()],
        None => (0..count as usize)
            .map(|i| unique_name(&template.name_prefix, i))
            .collect(),
    };
    let mut tags = vec![ctx.group.tag.clone(), ctx.managed_tag.clone()];
    for tag in &template.tags {
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    // With `[refresh]`, the droplet records the template it is made from.
    if ctx.group.refresh.is_some() {
        tags.push(crate::config::refresh::fingerprint(
            &ctx.group.tag,
            template,
        ));
    }
    let request = CreateDroplets {
        name: None,
        names: Some(names.clone()),
        region: Some(template.region.clone()),
        size: template.size.clone(),
        image: match &template.image {
            crate::config::Image::Slug(s) => ImageRef::Slug(s.clone()),
            crate::config::Image::Id(id) => ImageRef::Id(*id),
        },
        ssh_keys: template
            .ssh_keys
            .iter()
            .map(|k| match k {
                crate::config::SshKey::Fingerprint(f) => SshKeyRef::Fingerprint(f.clone()),
                crate::config::SshKey::Id(id) => SshKeyRef::Id(*id),
            })
            .collect(),
        ipv6: template.ipv6,
        monitoring: template.monitoring,
        tags,
        user_data,
        vpc_uuid: template.vpc_uuid.clone(),
    };
    ctx.may_write("create_droplets")?;
    crate::failpoint::hit("create.before_journal");
    let entry = ctx
        .journal
        .intend(
            &ctx.group.name,
            &Intent::Create {
                names: names.clone(),
            },
        )
        .or_else(|e| {
            fail(format!(
                "create_droplets: cannot journal the create, so nothing was created: {e}"
            ))
        })?;
    crate::failpoint::hit("create.after_journal");
    let report = match block_on(
        &ctx,
        "create_droplets",
        ctx.client.create_droplets(&request, &ctx.group.tag),
    ) {
        Ok(report) => report,
        Err(error) => {
            // Cut at the deadline: whether the droplets exist is unknown here, and the next
            // tick's listing (by tag) counts whatever landed; the names are never asked again.
            // Every name counts as spent, and as booting until a listing settles it.
            if let Ok(mut spent) = ctx.spent.lock() {
                *spent += count as u32;
            }
            mark_created(&ctx, names.iter().map(|n| (n.clone(), None)));
            let outcome = format!("outcome unknown, the next listing shows it: {error}");
            if let Err(e) = ctx.journal.settle(entry, &outcome) {
                tracing::error!(group = %ctx.group.name, error = %e, "cannot settle a journal entry");
            }
            return Err(error);
        }
    };
    crate::failpoint::hit("create.after_answer");
    if let Ok(mut spent) = ctx.spent.lock() {
        *spent += (report.created.len() + report.uncertain.len()) as u32;
    }
    // Listings lag creates: until one shows them, these count as booting.
    mark_created(
        &ctx,
        report
            .created
            .iter()
            .map(|d| (d.name.clone(), Some(d.id)))
            .chain(report.uncertain.iter().map(|n| (n.clone(), None))),
    );
    let ids: Vec<String> = report.created.iter().map(|d| d.id.to_string()).collect();
    let outcome = match &report.failure {
        None => format!("created {}", ids.join(",")),
        Some(error) => format!(
            "created [{}], missing [{}]: {error}",
            ids.join(","),
            report
                .missing
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    if let Err(e) = ctx.journal.settle(entry, &outcome) {
        tracing::error!(group = %ctx.group.name, error = %e, "cannot settle a journal entry");
    }
    crate::failpoint::hit("create.after_settle");
    if let Ok(mut created) = ctx.created.lock() {
        created.extend(report.created.iter().cloned());
    }
    tracing::info!(group = %ctx.group.name, names = ?names, created = report.created.len(), "droplets created");
    if let Some(error) = report.failure {
        return fail(format!(
            "create_droplets: {} of {count} created: {error}",
            report.created.len()
        ));
    }
    Ok(report
        .created
        .iter()
        .map(|d| convert::droplet(d, true, false))
        .collect())
}

/// Records droplets created (or maybe created) as unlisted for the group.
fn mark_created(ctx: &RunContext, made: impl Iterator<Item = (String, Option<u64>)>) {
    let since = chrono::Utc::now();
    let entries: Vec<crate::state::Unlisted> = made
        .map(|(name, id)| crate::state::Unlisted { name, id, since })
        .collect();
    if entries.is_empty() {
        return;
    }
    if let Err(e) = ctx.journal.mark_created(&ctx.group.name, &entries) {
        tracing::error!(group = %ctx.group.name, error = %e, "cannot record created droplets");
    }
}

fn destroy_droplets(ids: Array) -> HostResult<Array> {
    let ctx = context()?;
    let mut wanted = Vec::new();
    for id in ids {
        match id.as_int() {
            Ok(id) if id > 0 => wanted.push(id as u64),
            _ => return fail("destroy_droplets: ids must be positive integers"),
        }
    }
    let created: Vec<u64> = ctx
        .created
        .lock()
        .map(|c| c.iter().map(|d| d.id).collect())
        .unwrap_or_default();
    let already: Vec<u64> = ctx.deleted.lock().map(|d| d.clone()).unwrap_or_default();
    let mut own_remaining = 0i64;
    for id in &wanted {
        if created.contains(id) {
            continue;
        }
        if !ctx.decision.victims.contains(id) {
            return fail(format!(
                "destroy_droplets: refusing droplet {id}: it is not among the decision's victims: nothing was destroyed"
            ));
        }
        if let Some(droplet) = ctx.droplets.iter().find(|d| d.id == *id) {
            if ctx.is_protected(droplet) {
                return fail(format!(
                    "destroy_droplets: refusing droplet {id}: it carries the protect tag `{}`",
                    ctx.group.protect_tag
                ));
            }
            if !ctx.is_managed(droplet) && !ctx.group.allow_unmanaged {
                return fail(format!(
                    "destroy_droplets: refusing droplet {id}: do-scaler did not create it (no `{}` tag)",
                    ctx.managed_tag
                ));
            }
        }
        own_remaining += 1;
    }
    let remaining = i64::from(ctx.decision.current) + created.len() as i64
        - already.len() as i64
        - own_remaining;
    if own_remaining > 0 && remaining < i64::from(ctx.decision.bounds.min) {
        return fail(format!(
            "destroy_droplets would leave {remaining} droplets, below the group's min {}: nothing was destroyed",
            ctx.decision.bounds.min
        ));
    }
    ctx.may_write("destroy_droplets")?;
    crate::failpoint::hit("destroy.before_journal");
    let entry = ctx
        .journal
        .intend(
            &ctx.group.name,
            &Intent::Destroy {
                ids: wanted.clone(),
            },
        )
        .or_else(|e| {
            fail(format!(
                "destroy_droplets: cannot journal the destroy, so nothing was destroyed: {e}"
            ))
        })?;
    crate::failpoint::hit("destroy.after_journal");
    let mut gone = Array::new();
    let mut failure = None;
    for (index, id) in wanted.iter().enumerate() {
        if index > 0 {
            crate::failpoint::hit("destroy.between_deletes");
        }
        let answer = match block_on(&ctx, "destroy_droplets", ctx.client.delete_droplet(*id)) {
            Ok(answer) => answer.map_err(|e| e.to_string()),
            Err(deadline) => Err(deadline.to_string()),
        };
        match answer {
            Ok(_) => {
                gone.push(Dynamic::from(*id as i64));
                if let Ok(mut deleted) = ctx.deleted.lock() {
                    deleted.push(*id);
                }
                // Listings lag deletes: until it has left them, it counts toward nothing.
                if let Err(e) = ctx.journal.mark_deleted(&ctx.group.name, &[*id]) {
                    tracing::error!(group = %ctx.group.name, droplet = id, error = %e, "cannot record a deleted droplet");
                }
                // Made and destroyed in this run (a failed health check): no listing will
                // ever show it, so it must not count as booting until the hour is out.
                let name = ctx.created.lock().ok().and_then(|created| {
                    created.iter().find(|d| d.id == *id).map(|d| d.name.clone())
                });
                if let Some(name) = name
                    && let Err(e) = ctx.journal.forget_unlisted(&ctx.group.name, &[name])
                {
                    tracing::error!(group = %ctx.group.name, droplet = id, error = %e, "cannot forget a destroyed droplet's create");
                }
            }
            Err(error) => {
                failure = Some(format!("droplet {id}: {error}"));
                break;
            }
        }
    }
    crate::failpoint::hit("destroy.after_deletes");
    let wanted_list = wanted
        .iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let outcome = match &failure {
        None => format!("destroyed [{wanted_list}]"),
        Some(error) => format!("destroyed {} of [{wanted_list}]: {error}", gone.len()),
    };
    if let Err(e) = ctx.journal.settle(entry, &outcome) {
        tracing::error!(group = %ctx.group.name, error = %e, "cannot settle a journal entry");
    }
    crate::failpoint::hit("destroy.after_settle");
    tracing::info!(group = %ctx.group.name, ids = ?wanted, "droplets destroyed");
    match failure {
        Some(error) => fail(format!("destroy_droplets: {error}")),
        None => Ok(gone),
    }
}

fn list_droplets() -> HostResult<Array> {
    let ctx = context()?;
    let droplets = block_on(
        &ctx,
        "list_droplets",
        ctx.client.list_droplets_by_tag(&ctx.group.tag),
    )?
    .or_else(|e| fail(format!("list_droplets: {e}")))?;
    Ok(droplets
        .iter()
        .map(|d| convert::droplet(d, ctx.is_managed(d), ctx.is_protected(d)))
        .collect())
}

fn wait_active(ids: Array, timeout_ms: i64) -> HostResult<Array> {
    let ctx = context()?;
    let ids: Vec<u64> = ids
        .iter()
        .filter_map(|d| d.as_int().ok())
        .map(|i| i as u64)
        .collect();
    let limit = ctx.cap(ctx.wall(Duration::from_millis(timeout_ms.max(0) as u64)));
    let started = Instant::now();
    let mut polls = 0u32;
    loop {
        // One listing of the group per poll (a call per 200 droplets), not a GET per droplet:
        // waiting for 25 new droplets must not spend the account's rate limit.
        let listing = block_on(
            &ctx,
            "wait_active",
            ctx.client.list_droplets_by_tag(&ctx.group.tag),
        )?
        .or_else(|e| fail(format!("wait_active: {e}")))?;
        let mut ready = Vec::new();
        for id in &ids {
            match listing.iter().find(|d| d.id == *id) {
                Some(d) if d.status == DropletStatus::Active && d.private_ipv4().is_some() => {
                    ready.push(d.clone())
                }
                Some(_) => {}
                None => {
                    return fail(format!(
                        "wait_active: droplet {id} is not in the group (deleted, or never made)"
                    ));
                }
            }
        }
        if ready.len() == ids.len() {
            return Ok(ready
                .iter()
                .map(|d| convert::droplet(d, true, false))
                .collect());
        }
        if started.elapsed() >= limit {
            if ctx.remaining().is_zero() {
                return fail(format!(
                    "wait_active: script `{}` ran past its deadline",
                    ctx.script_name()
                ));
            }
            return fail(format!(
                "wait_active: {} of {} droplets active after {} ms",
                ready.len(),
                ids.len(),
                limit.as_millis()
            ));
        }
        // Quick at first (a sim or a fast boot), then every 2 s: a boot takes tens of seconds.
        polls += 1;
        let pause = if polls < 5 {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(2)
        };
        let pause = ctx.wall(pause).max(Duration::from_millis(5));
        let pause = ctx.cap(pause).min(limit.saturating_sub(started.elapsed()));
        std::thread::sleep(pause);
    }
}

fn tcp_check(host: &str, port: i64, timeout_ms: i64) -> HostResult<bool> {
    let ctx = context()?;
    let Ok(port) = u16::try_from(port) else {
        return fail(format!("tcp_check: {port} is not a port"));
    };
    let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() else {
        return fail(format!("tcp_check: `{host}` is not an IP address"));
    };
    if let Some(reason) = super::webhook::forbidden(ip) {
        return fail(format!("tcp_check: {ip} is {reason}: refused"));
    }
    let timeout = ctx.cap(Duration::from_millis(timeout_ms.max(1) as u64));
    if timeout.is_zero() {
        return fail(format!(
            "tcp_check: script `{}` ran past its deadline",
            ctx.script_name()
        ));
    }
    Ok(std::net::TcpStream::connect_timeout(&SocketAddr::new(ip, port), timeout).is_ok())
}

fn http_call(
    method: reqwest::Method,
    url: &str,
    body: Option<serde_json::Value>,
    timeout_ms: i64,
) -> HostResult<Map> {
    let ctx = context()?;
    let client = match &ctx.http {
        Ok(client) => client.clone(),
        Err(error) => return fail(error.to_string()),
    };
    let timeout = ctx.cap(Duration::from_millis(timeout_ms.max(1) as u64));
    let answer = block_on(
        &ctx,
        "http",
        super::webhook::send(&client, method, url, body, timeout),
    )?
    .or_else(|e| fail(e.to_string()))?;
    let mut map = Map::new();
    map.insert("status".into(), i64::from(answer.status).into());
    map.insert("body".into(), answer.body.into());
    map.insert("truncated".into(), answer.truncated.into());
    Ok(map)
}

/// Whether a script may make this call. Judged on the canonical path, which is also what is
/// sent. Droplet writes go only through `create_droplets` and `destroy_droplets`; a load
/// balancer id must look like one (a UUID's hex digits and dashes).
fn allowed(method: &str, path: &ApiPath) -> bool {
    let segments = path.segments();
    let uuid_like =
        |id: &str| !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    match (method, segments.as_slice()) {
        ("GET", ["v2", "load_balancers", ..]) => true,
        ("POST" | "DELETE", ["v2", "load_balancers", id, "droplets"]) => uuid_like(id),
        ("GET", ["v2", "tags", ..]) | ("GET", ["v2", "actions", ..]) => true,
        ("GET", ["v2", "droplets", ..]) => true,
        _ => false,
    }
}

fn digitalocean(method: &str, path: &str, body: Dynamic) -> HostResult<Map> {
    let ctx = context()?;
    let method = method.to_uppercase();
    let canonical = ApiPath::parse(path).or_else(|e| fail(format!("digitalocean: {e}")))?;
    if !allowed(&method, &canonical) {
        return fail(format!(
            "digitalocean: {method} {canonical} is not allowed from scripts (only load balancers, reading tags, actions and droplets; create and destroy droplets with create_droplets and destroy_droplets)"
        ));
    }
    let parsed_method = reqwest::Method::from_bytes(method.as_bytes())
        .or_else(|_| fail(format!("digitalocean: bad method {method}")))?;
    let json = if body.is_unit() {
        None
    } else {
        Some(convert::to_json(&body))
    };
    let (status, value) = block_on(
        &ctx,
        "digitalocean",
        ctx.client.call(parsed_method, &canonical, json.as_ref()),
    )?
    .or_else(|e| fail(format!("digitalocean: {e}")))?;
    let mut map = Map::new();
    map.insert("status".into(), i64::from(status).into());
    map.insert("body".into(), convert::from_json(&value));
    Ok(map)
}

fn sleep_ms(ms: i64) -> HostResult<()> {
    let ctx = context()?;
    let wanted = ctx.wall(Duration::from_millis(ms.max(0) as u64));
    let capped = ctx.cap(wanted);
    std::thread::sleep(capped);
    if capped < wanted {
        return fail(format!(
            "sleep: script `{}` ran past its deadline",
            ctx.script_name()
        ));
    }
    Ok(())
}

fn parse_duration_ms(text: &str) -> HostResult<i64> {
    crate::config::duration::parse_duration(text)
        .map(|d| d.as_millis() as i64)
        .or_else(|e| fail(format!("parse_duration: {e}")))
}

/// Registers every host function on the engine.
pub fn register(engine: &mut Engine) {
    // Test builds only: a host function that panics, so the tests can show that a panic inside
    // an action run ends that run as failed instead of leaving it "running".
    #[cfg(feature = "failpoints")]
    engine.register_fn("__panic_for_tests", || -> () {
        panic!("a host function panicked (test)");
    });
    engine.register_fn("create_droplets", create_droplets);
    engine.register_fn("destroy_droplets", destroy_droplets);
    engine.register_fn("list_droplets", list_droplets);
    engine.register_fn("wait_active", wait_active);
    engine.register_fn("tcp_check", tcp_check);
    engine.register_fn("http_get", |url: &str, timeout_ms: i64| {
        http_call(reqwest::Method::GET, url, None, timeout_ms)
    });
    engine.register_fn(
        "http_post_json",
        |url: &str, body: Dynamic, timeout_ms: i64| {
            http_call(
                reqwest::Method::POST,
                url,
                Some(convert::to_json(&body)),
                timeout_ms,
            )
        },
    );
    engine.register_fn("digitalocean", |method: &str, path: &str| {
        digitalocean(method, path, Dynamic::UNIT)
    });
    engine.register_fn("digitalocean", digitalocean);
    engine.register_fn("log_info", |message: &str| {
        let group = context().map(|c| c.group.name.clone()).unwrap_or_default();
        tracing::info!(target: "do_scaler::script", group = %group, "{message}");
    });
    engine.register_fn("log_warn", |message: &str| {
        let group = context().map(|c| c.group.name.clone()).unwrap_or_default();
        tracing::warn!(target: "do_scaler::script", group = %group, "{message}");
    });
    engine.register_fn("sleep", sleep_ms);
    engine.register_fn("now", || match context() {
        Ok(ctx) => ctx.clock.now().timestamp(),
        Err(_) => chrono::Utc::now().timestamp(),
    });
    engine.register_fn("parse_duration", parse_duration_ms);
    engine.register_fn("parse_duration", |ms: i64| ms);
    super::haproxy::register(engine);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_may_not_write_droplets_through_the_generic_call() {
        let judge = |method: &str, raw: &str| {
            ApiPath::parse(raw)
                .map(|p| allowed(method, &p))
                .unwrap_or(false)
        };
        assert!(!judge("POST", "/v2/droplets"));
        assert!(!judge("DELETE", "/v2/droplets?tag_name=web"));
        assert!(!judge("DELETE", "/v2/droplets/123"));
        assert!(!judge("POST", "/v2/droplets/123/actions"));
        assert!(!judge("GET", "/v2/account"));
        assert!(!judge(
            "DELETE",
            "/v2/load_balancers/%2e%2e/droplets?tag_name=web"
        ));
        assert!(!judge("POST", "/v2/load_balancers/%2e%2e/droplets"));
        assert!(!judge("GET", "/v2/load_balancers/%2e%2e/account"));
        assert!(!judge("POST", "/v2/load_balancers/not_an_id/droplets"));
        assert!(judge("POST", "/v2/load_balancers/4de7ac8b-495b/droplets"));
        assert!(judge("GET", "/v2/load_balancers/abc"));
        assert!(!judge("DELETE", "/v2/load_balancers/abc"));
    }

    #[test]
    fn names_are_unique_and_valid() {
        let a = unique_name("web", 0);
        let b = unique_name("web", 1);
        assert_ne!(a, b);
        assert!(a.starts_with("web-") && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
