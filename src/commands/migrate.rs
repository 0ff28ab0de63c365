//! `do-scaler migrate`: writes the native configuration equivalent to the original tool's,
//! and says what changed in meaning.

use super::check::CommandOutput;
use crate::config::legacy::convert;
use std::fmt::Write as _;
use std::path::Path;

/// Writes a secret into a file that is mode 0600 from its creation (never briefly readable by
/// others); an existing file is narrowed to 0600 before it is written.
fn write_secret(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let failed = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(failed)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(failed)?;
    }
    file.write_all(text.as_bytes()).map_err(failed)
}

/// Converts `cfg` into `out` (`do-scaler.toml`, `conf.d/<group>.toml`, and the old token in
/// `digitalocean-token`, mode 0600).
pub fn migrate(cfg: &Path, out: &Path) -> CommandOutput {
    let mut stdout = String::new();
    let mut stderr = String::new();
    let converted = match convert(cfg) {
        Ok(converted) => converted,
        Err(errors) => {
            for error in errors {
                let _ = writeln!(stderr, "{error}");
            }
            return CommandOutput {
                stdout,
                stderr,
                exit_code: 1,
            };
        }
    };
    for warning in &converted.warnings {
        let _ = writeln!(stderr, "{warning}");
    }
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    let result = (|| -> Result<(), String> {
        std::fs::create_dir_all(out.join("conf.d"))
            .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
        let mut base = converted.base.clone();
        if let Some(token) = converted.token.as_ref().filter(|t| !t.expose().is_empty()) {
            let path = out.join("digitalocean-token");
            // The one place the old token is written out: into a 0600 file, never an empty one.
            write_secret(&path, &format!("{}\n", token.expose()))?;
            base.push_str("# The old do_token, moved out of the group files. Better: a systemd credential\n# (/etc/do-scaler/credentials/digitalocean-token), then delete this line and the file.\ntoken_file = \"digitalocean-token\"\n");
        }
        write(&out.join("do-scaler.toml"), &base)?;
        for (name, text, _) in &converted.groups {
            write(&out.join("conf.d").join(format!("{name}.toml")), text)?;
        }
        Ok(())
    })();
    if let Err(error) = result {
        let _ = writeln!(stderr, "{error}");
        return CommandOutput {
            stdout,
            stderr,
            exit_code: 1,
        };
    }
    let _ = writeln!(stdout, "wrote {}", out.join("do-scaler.toml").display());
    for (name, _, old) in &converted.groups {
        let _ = writeln!(
            stdout,
            "wrote {} (from {})",
            out.join("conf.d").join(format!("{name}.toml")).display(),
            old.display()
        );
    }
    if converted.token.is_some() {
        let _ = writeln!(
            stdout,
            "wrote {} (mode 0600): move it to a systemd credential",
            out.join("digitalocean-token").display()
        );
    }
    let _ = writeln!(stdout, "what changes in meaning:");
    for note in &converted.notes {
        let _ = writeln!(stdout, "  - {note}");
    }
    CommandOutput {
        stdout,
        stderr,
        exit_code: 0,
    }
}
