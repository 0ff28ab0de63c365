//! do-scaler keeps pools of DigitalOcean droplets at the right size.
//!
//! A group is every droplet with one tag. Each tick lists the group, scrapes do-agent on each
//! droplet, evaluates the group's rules, decides a size and runs action scripts.
//!
//! # Layout
//!
//! - [`config`]: the base file and `conf.d/` group files, validation with `file:line:column`
//!   diagnostics, credentials.
//! - [`digitalocean`]: the API v2 client: retries, rate limits, pagination, safe creates.
//! - [`metrics`]: the exposition parser, the scraper and the sample history.
//! - [`query`]: the PromQL-subset expression language.
//! - [`policy`]: the decision: rules, bounds, schedules, cooldowns, stabilization, victims.
//! - [`sim`]: the simulated DigitalOcean: API emulator, droplets serving metrics, load model.
//! - [`clock`]: injected time.
//! - [`script`]: the Rhai host: sandbox, host functions, shipped action scripts, runner.
//! - [`state`]: the intent journal, memories and history on SQLite or PostgreSQL, and the
//!   leases that give each group one leader when several daemons share PostgreSQL.
//! - [`record`]: recordings of what a group's ticks observe (`record`, `[record]`).
//! - [`quality`]: the decision-quality harness: demand traces through the sim at speed,
//!   controllers scored on under- and over-provisioning.
//! - [`daemon`]: one tick of a group (list, scrape, evaluate, decide), and the loop around it.
//! - [`failpoint`]: named crash points for the crash-safety tests, inert unless armed.
//! - [`limits`]: the process's open-file limit.
//! - [`api`]: the status API and the daemon's own metrics.
//! - [`commands`]: the subcommands' logic (`check`, …), producing what `main` prints.
//!
//! `main.rs` only parses the command line and wires these together.

/// Counts memory per thread so an action script's total can be bounded (see
/// [`script::memory`]).
#[global_allocator]
static ALLOCATOR: script::memory::CountingAllocator = script::memory::CountingAllocator;

pub mod api;
pub mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod digitalocean;
pub mod failpoint;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod quality;
pub mod query;
pub mod record;
pub mod script;
pub mod sim;
pub mod state;
