//! Metrics: the exposition-format parser, the concurrent scraper, and the per-droplet sample
//! history that expressions are evaluated over.

pub mod exposition;
pub mod history;
pub mod scrape;

pub use history::{DropletIdentity, History};
pub use scrape::{MissingReason, Scraper, Target};
