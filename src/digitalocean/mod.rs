//! The DigitalOcean API v2: typed requests and answers, the client (retries, rate limits,
//! pagination, safe creates), and its errors.

pub mod client;
pub mod error;
pub mod path;
pub mod preflight;
pub mod ratelimit;
pub mod types;

pub use client::{ApiProblem, Client, ClientOptions, CreateReport, DeleteOutcome, RetryPolicy};
pub use error::ApiError;
pub use path::{ApiPath, PathError};
pub use types::*;
