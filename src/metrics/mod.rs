//! Metrics: the exposition-format parser, the concurrent scraper, and the per-droplet sample
//! history that expressions are evaluated over.

pub mod exposition;
