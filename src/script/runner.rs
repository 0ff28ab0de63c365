//! Running a decision's actions: each script in turn on a blocking thread (calling back into
//! the async runtime for I/O), under a wall-clock deadline. A failing action stops the rest,
//! except `notify_webhook`, which still runs to report the failure.

use super::host::{RunContext, with_context};
use super::{Scripts, convert, engine};
use crate::config::Group;
use crate::digitalocean::{Client, Droplet};
use crate::policy::Decision;
use crate::state::Journal;
use rhai::{Dynamic, EvalAltResult, Scope};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The action that still runs after a failure, to report it.
pub const NOTIFY_ACTION: &str = "notify_webhook";

/// Why a run happens, as scripts see it in `decision.direction`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Purpose {
    /// Carrying out a decision: "up" or "down" (the decision's own direction).
    #[default]
    Decision,
    /// Draining `decision.victims` before their destroy (`[drain] actions`): "drain".
    Drain,
    /// Returning draining `decision.victims` to service (`[drain] return_actions`): "return".
    Return,
    /// Launching the replacement of an unhealthy droplet (`[health]`): "up", with the old
    /// droplet in `decision.replacing`. Its one create takes the name journaled for it, may go
    /// one past `max`, and is not a scale event (the spend guard does not count it).
    Replace {
        /// The unhealthy droplet.
        old: u64,
        /// The replacement's name, journaled before the run.
        name: String,
    },
}

/// What to run.
pub struct ActionRequest {
    /// Why it runs.
    pub purpose: Purpose,
    /// The group.
    pub group: Group,
    /// The daemon's managed-by tag.
    pub managed_tag: String,
    /// The decision to carry out.
    pub decision: Decision,
    /// The group's droplets when it was made.
    pub droplets: Vec<Droplet>,
    /// Where the decision placed each droplet (active, booting, draining, replacing, …);
    /// scripts see it as each droplet's `state`.
    pub states: std::collections::BTreeMap<u64, crate::policy::MemberState>,
    /// Action names, in order.
    pub actions: Vec<String>,
    /// Wall-clock limit of the whole run.
    pub deadline: Duration,
    /// Droplets the group created in the last hour before this run (the spend guard counts
    /// on from there).
    pub creates_last_hour: u32,
}

/// How one action went.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionResult {
    /// The action.
    pub name: String,
    /// `Ok`, or the error with the script's name and the limit it hit.
    pub outcome: Result<(), String>,
    /// How long it ran.
    pub took: Duration,
}

/// How a run went.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Every action that ran.
    pub results: Vec<ActionResult>,
    /// Droplets created.
    pub created: Vec<Droplet>,
    /// Droplet ids deleted.
    pub deleted: Vec<u64>,
    /// Droplets that may have been created (created, or asked for with an unknown outcome):
    /// what the spend guard counts.
    pub create_attempts: u32,
}

impl RunReport {
    /// A run that failed as a whole before or outside its scripts (`reason` says how).
    pub fn failed(reason: String) -> RunReport {
        RunReport {
            results: vec![ActionResult {
                name: "(runner)".into(),
                outcome: Err(reason),
                took: Duration::ZERO,
            }],
            created: Vec::new(),
            deleted: Vec::new(),
            create_attempts: 0,
        }
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<&str> {
        self.results
            .iter()
            .find_map(|r| r.outcome.as_ref().err().map(String::as_str))
    }
}

/// Runs actions with one configuration's scripts.
#[derive(Clone)]
pub struct Runner {
    scripts: Arc<Scripts>,
    client: Client,
    journal: Arc<dyn Journal>,
    http: Result<reqwest::Client, super::webhook::WebhookError>,
    credentials_dir: Option<std::path::PathBuf>,
    leadership: Option<Arc<crate::state::lease::Leadership>>,
    clock: Arc<dyn crate::clock::Clock>,
}

fn describe(name: &str, error: &EvalAltResult, deadline: Duration) -> String {
    match error {
        EvalAltResult::ErrorTerminated(why, _)
            if why.is_string() && why.to_string().contains("memory") =>
        {
            format!("{name}: {why}")
        }
        EvalAltResult::ErrorTerminated(..) => format!(
            "{name}: stopped at its deadline of {}",
            crate::config::duration::format_duration(deadline)
        ),
        EvalAltResult::ErrorTooManyOperations(_) => format!("{name}: stopped: too many operations"),
        EvalAltResult::ErrorStackOverflow(_) => format!("{name}: stopped: calls nested too deep"),
        EvalAltResult::ErrorDataTooLarge(what, _) => format!("{name}: stopped: {what} too large"),
        other => format!("{name}: {other}"),
    }
}

impl Runner {
    /// A runner.
    pub fn new(scripts: Arc<Scripts>, client: Client, journal: Arc<dyn Journal>) -> Runner {
        Runner {
            scripts,
            client,
            journal,
            http: super::webhook::client(super::webhook::GuardedResolver::system()),
            credentials_dir: None,
            leadership: None,
            clock: Arc::new(crate::clock::SystemClock),
        }
    }

    /// The daemon's clock: scripts' `now()` reads it, and their `sleep` and `wait_active`
    /// wait its time (at a sim's speed, N times less on the wall).
    pub fn with_clock(mut self, clock: Arc<dyn crate::clock::Clock>) -> Runner {
        self.clock = clock;
        self
    }

    /// The daemon's leases (PostgreSQL state): every DigitalOcean write first checks that the
    /// group's lease has room for it.
    pub fn with_leadership(mut self, leadership: Arc<crate::state::lease::Leadership>) -> Runner {
        self.leadership = Some(leadership);
        self
    }

    /// Where the systemd credentials that user data names are (`$CREDENTIALS_DIRECTORY`).
    pub fn with_credentials_dir(mut self, dir: Option<std::path::PathBuf>) -> Runner {
        self.credentials_dir = dir;
        self
    }

    /// Runs the request's actions to the end (or the first failure) and reports.
    pub async fn run(&self, request: ActionRequest) -> RunReport {
        crate::failpoint::hit("action.before_run");
        let context = Arc::new(RunContext {
            group: request.group.clone(),
            managed_tag: request.managed_tag.clone(),
            decision: request.decision.clone(),
            droplets: request.droplets.clone(),
            client: match &self.leadership {
                // Every write the run sends (each chunk, each retry) asks the lease first.
                Some(leadership) => self
                    .client
                    .clone()
                    .with_write_gate(leadership.write_gate(&request.group.name)),
                None => self.client.clone(),
            },
            journal: self.journal.clone(),
            handle: tokio::runtime::Handle::current(),
            deadline: Instant::now() + request.deadline,
            created: Mutex::new(Vec::new()),
            deleted: Mutex::new(Vec::new()),
            creates_before: request.creates_last_hour,
            spent: Mutex::new(0),
            http: self.http.clone(),
            script: Mutex::new(String::new()),
            credentials_dir: self.credentials_dir.clone(),
            leadership: self.leadership.clone(),
            clock: self.clock.clone(),
            replacement: match &request.purpose {
                Purpose::Replace { name, .. } => Some(name.clone()),
                _ => None,
            },
        });
        let scripts = self.scripts.clone();
        let for_thread = context.clone();
        let results = tokio::task::spawn_blocking(move || {
            with_context(for_thread.clone(), || {
                run_all(&scripts, &for_thread, &request)
            })
        })
        .await
        .unwrap_or_else(|e| {
            vec![ActionResult {
                name: "(runner)".into(),
                outcome: Err(format!("the action thread failed: {e}")),
                took: Duration::ZERO,
            }]
        });
        crate::failpoint::hit("action.after_run");
        RunReport {
            results,
            created: context
                .created
                .lock()
                .map(|c| c.clone())
                .unwrap_or_default(),
            deleted: context
                .deleted
                .lock()
                .map(|d| d.clone())
                .unwrap_or_default(),
            create_attempts: context.spent.lock().map(|s| *s).unwrap_or(0),
        }
    }
}

fn run_all(scripts: &Scripts, context: &RunContext, request: &ActionRequest) -> Vec<ActionResult> {
    let mut results = Vec::new();
    let mut failure: Option<String> = None;
    for name in &request.actions {
        if failure.is_some() && name != NOTIFY_ACTION {
            continue;
        }
        let started = Instant::now();
        let outcome = match scripts.get(name) {
            None => Err(format!("{name}: no such action")),
            Some(script) => {
                if let Ok(mut current) = context.script.lock() {
                    current.clone_from(name);
                }
                let mut scope = Scope::new();
                let bounds = &context.decision.bounds;
                scope.push_constant(
                    "group",
                    convert::group(
                        &context.group,
                        context
                            .managed_tag
                            .strip_prefix(crate::config::validate::RESERVED_TAG_PREFIX)
                            .unwrap_or(&context.managed_tag),
                        bounds.min,
                        bounds.max,
                    ),
                );
                let droplets: rhai::Array = context
                    .droplets
                    .iter()
                    .map(|d| {
                        let managed = d.has_tag(&context.managed_tag)
                            || context.group.adopt_tags.iter().any(|t| d.has_tag(t));
                        let mut droplet =
                            convert::droplet(d, managed, d.has_tag(&context.group.protect_tag));
                        if let Some(state) = request.states.get(&d.id)
                            && let Some(mut map) = droplet.write_lock::<rhai::Map>()
                        {
                            map.insert("state".into(), state.to_string().into());
                        }
                        droplet
                    })
                    .collect();
                scope.push_constant("droplets", droplets);
                scope.push_constant(
                    "decision",
                    convert::decision(&context.decision, &request.purpose),
                );
                let params = context
                    .group
                    .actions
                    .params
                    .get(name)
                    .map(|t| convert::toml_value(&toml::Value::Table(t.clone())))
                    .unwrap_or_else(|| Dynamic::from_map(rhai::Map::new()));
                scope.push_constant("params", params);
                let created: rhai::Array = context
                    .created
                    .lock()
                    .map(|c| c.iter().map(|d| convert::droplet(d, true, false)).collect())
                    .unwrap_or_default();
                scope.push_constant("created", created);
                let deleted: rhai::Array = context
                    .deleted
                    .lock()
                    .map(|d| d.iter().map(|id| Dynamic::from(*id as i64)).collect())
                    .unwrap_or_default();
                scope.push_constant("deleted", deleted);
                scope.push_constant(
                    "failure",
                    failure.clone().map(Dynamic::from).unwrap_or(Dynamic::UNIT),
                );
                engine()
                    .run_ast_with_scope(&mut scope, &script.ast)
                    .map_err(|e| describe(name, &e, request.deadline))
            }
        };
        if let Err(error) = &outcome {
            tracing::warn!(group = %context.group.name, action = %name, %error, "action failed");
            failure.get_or_insert_with(|| error.clone());
        } else {
            tracing::info!(group = %context.group.name, action = %name, "action done");
        }
        results.push(ActionResult {
            name: name.clone(),
            outcome,
            took: started.elapsed(),
        });
    }
    results
}
