//! The daemon: one tick of a group as a pipeline of plain calls (`tick`), the group tasks that
//! schedule it (`group`), the shared state, reload and reconciliation (`run`), the ways it runs
//! (`serve`).

pub mod conflict;
pub mod generation;
pub mod group;
pub mod health;
pub mod refresh;
pub mod reload;
pub mod run;
pub mod serve;
pub mod sources;
pub mod tick;

pub use run::{Daemon, DaemonError, RunOptions};
pub use tick::{GroupRuntime, TickError, TickReport};
