//! Configuration: the base file `do-scaler.toml`, one group file per `conf.d/*.toml`, their
//! validation with `file:line:column` diagnostics, and where the API token comes from.
//!
//! Flow: `schema` (what the user writes, with positions) → `validate` (every problem at once)
//! → `model` (plain, typed, defaults applied), driven by `load`.

pub mod collect;
pub mod credentials;
pub mod diagnostic;
pub mod drain;
pub mod duration;
pub mod files;
pub mod health;
pub mod legacy;
pub mod load;
pub mod model;
pub mod refresh;
pub mod schema;
pub mod sources;
pub mod user_data;
pub mod validate;

pub use credentials::{ApiToken, CredentialError, TokenSource};
pub use diagnostic::{Diagnostic, Severity};
pub use load::{LoadError, Loaded, Overrides, group_from_toml, load, load_base};
pub use model::*;

/// The smallest valid group file, which the sections' tests extend with their own table.
#[cfg(test)]
pub(crate) const MINIMAL_GROUP: &str = r#"tag = "web"
min = 1
max = 5
[droplet]
region = "nyc3"
size = "s-1vcpu-1gb"
image = "ubuntu-24-04-x64"
"#;
