//! The daemon: one tick of a group as a pipeline of plain calls (`tick`); the scheduler, reload
//! and run loop build on it.

pub mod failpoint;
pub mod tick;

pub use tick::{GroupRuntime, TickError, TickReport};
