//! The subcommands' logic. Each returns its result as text for stdout and its diagnostics for
//! stderr, so that `main` only prints and tests can compare the output.

pub mod check;
pub mod demo;
pub mod demo_queue;
pub mod migrate;
pub mod plan;
pub mod query;
pub mod record;
pub mod remote;
pub mod replay;
pub mod sim;
