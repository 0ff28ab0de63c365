//! HAProxy for the `haproxy_backend` action, through two narrow host functions: `haproxy(cmd)`
//! sends one runtime-API command to the stats socket named in the group's
//! `[actions.params.haproxy_backend] socket`, and only commands about servers of the configured
//! `backend` (show, add, enable, disable, set state, delete); `haproxy_write_server_list(text)`
//! replaces the file named in `server_list`, and no other. A script can name neither another
//! socket nor another path, nor chain commands (`;` and newlines are refused).

use super::host::{HostResult, context, fail};
use rhai::Engine;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

/// The action whose parameters configure HAProxy.
pub const ACTION: &str = "haproxy_backend";

/// The longest one runtime-API command may take (capped by the run's deadline).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of an answer read (`show stat` of a large backend is a few hundred KiB).
const ANSWER_LIMIT: u64 = 4 << 20;

/// Where HAProxy is, from the group's parameters of the action.
struct Settings {
    socket: PathBuf,
    backend: String,
    server_list: Option<PathBuf>,
}

fn settings() -> HostResult<Settings> {
    let ctx = context()?;
    let Some(params) = ctx.group.actions.params.get(ACTION) else {
        return fail(format!(
            "haproxy: the group has no [actions.params.{ACTION}] with socket and backend"
        ));
    };
    let text = |key: &str| params.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let (Some(socket), Some(backend)) = (text("socket"), text("backend")) else {
        return fail(format!(
            "haproxy: [actions.params.{ACTION}] needs socket (HAProxy's stats socket, level admin) and backend (its name)"
        ));
    };
    if !is_name(&backend) {
        return fail(format!(
            "haproxy: [actions.params.{ACTION}] backend `{}` is not a backend name (letters, digits, `.`, `_`, `-`)",
            backend.escape_default()
        ));
    }
    Ok(Settings {
        socket: PathBuf::from(socket),
        backend,
        server_list: text("server_list").map(PathBuf::from),
    })
}

/// A server name or backend as HAProxy takes it: letters, digits, `.`, `_`, `-`.
fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `backend/server` of the configured backend.
fn is_our_server(text: &str, backend: &str) -> bool {
    text.split_once('/')
        .is_some_and(|(b, server)| b == backend && is_name(server))
}

/// An `address:port` (IPv4, or IPv6 in brackets).
fn is_address(text: &str) -> bool {
    text.parse::<std::net::SocketAddr>().is_ok()
}

/// The command as it is sent, when it is one the action may send about `backend`: its words
/// joined by single spaces, so HAProxy reads exactly the words judged here. `Err` says why not.
pub fn check_command(command: &str, backend: &str) -> Result<String, String> {
    if command.chars().any(|c| c == ';' || c.is_control()) {
        return Err("one command at a time: `;` and control characters are refused".into());
    }
    // HAProxy splits on ASCII spaces and tabs only; other whitespace would be read differently.
    if !command.is_ascii() {
        return Err("commands are ASCII: other characters are refused".into());
    }
    let words: Vec<&str> = command.split_whitespace().collect();
    let ours = |i: usize| words.get(i).is_some_and(|w| is_our_server(w, backend));
    let allowed = match words.as_slice() {
        ["show", "servers", "state"] | ["show", "stat"] => true,
        ["show", "servers", "state", b] => *b == backend,
        ["add", "server", _, address] => ours(2) && is_address(address),
        ["add", "server", _, address, "check"] => ours(2) && is_address(address),
        ["del" | "enable" | "disable", "server", _] => ours(2),
        ["enable" | "disable", "health", _] => ours(2),
        ["set", "server", _, "state", "ready" | "drain" | "maint"] => ours(2),
        _ => false,
    };
    if allowed {
        Ok(words.join(" "))
    } else {
        Err(format!(
            "`{command}` is not a command haproxy_backend may send: show servers state, show stat, and add/del/enable/disable server, enable/disable health, set server … state ready|drain|maint, on servers of backend `{backend}`"
        ))
    }
}

/// `haproxy(command)`: the runtime API's answer to one command.
fn haproxy(command: &str) -> HostResult<String> {
    let ctx = context()?;
    let settings = settings()?;
    let command = match check_command(command, &settings.backend) {
        Ok(canonical) => canonical,
        Err(why) => return fail(format!("haproxy: {why}")),
    };
    let timeout = COMMAND_TIMEOUT.min(
        ctx.deadline
            .saturating_duration_since(std::time::Instant::now()),
    );
    if timeout.is_zero() {
        return fail("haproxy: the run is past its deadline");
    }
    let socket = &settings.socket;
    let exchange = || -> std::io::Result<String> {
        let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(format!("{command}\n").as_bytes())?;
        // Not in interactive mode, HAProxy answers one command and closes.
        let mut answer = String::new();
        stream.take(ANSWER_LIMIT).read_to_string(&mut answer)?;
        Ok(answer)
    };
    exchange().or_else(|e| {
        fail(format!(
            "haproxy: {} ({}): {e}; is HAProxy running with `stats socket {} level admin`, and may do-scaler use it (SupplementaryGroups=haproxy)?",
            command,
            socket.display(),
            socket.display()
        ))
    })
}

/// `haproxy_write_server_list(text)`: replaces the configured `server_list` file at once
/// (written beside it, then renamed, so HAProxy never reads half of it).
fn write_server_list(text: &str) -> HostResult<()> {
    let settings = settings()?;
    let Some(path) = settings.server_list else {
        return fail(format!(
            "haproxy_write_server_list: [actions.params.{ACTION}] has no server_list path"
        ));
    };
    let temporary = path.with_extension("do-scaler-tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        // HAProxy (another user) reads it; it holds addresses, nothing secret. The unit's
        // UMask=0077 would make it unreadable.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)
    };
    write().or_else(|e| {
        let _ = std::fs::remove_file(&temporary);
        fail(format!(
            "haproxy_write_server_list: cannot write {}: {e}; the unit needs ReadWritePaths= for its folder",
            path.display()
        ))
    })
}

/// Registers the HAProxy host functions.
pub fn register(engine: &mut Engine) {
    engine.register_fn("haproxy", haproxy);
    engine.register_fn("haproxy_write_server_list", write_server_list);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_commands_about_the_configured_backend_pass() {
        for ok in [
            "show servers state",
            "show servers state web",
            "show stat",
            "add server web/web-1 10.0.0.5:80",
            "add server web/web-1 10.0.0.5:80 check",
            "enable server web/web-1",
            "set server web/web-1 state drain",
            "set server web/web-1 state maint",
            "del server web/web-1",
            "enable health web/web-1",
        ] {
            assert_eq!(check_command(ok, "web"), Ok(ok.to_string()), "{ok}");
        }
        for refused in [
            "show servers state other",
            "add server other/x 10.0.0.5:80",
            "del server web/web-1; shutdown sessions server web/web-2",
            "del server web/web-1\nshow info",
            "set server web/web-1 addr 10.0.0.9",
            "set server web/web-1 state ready extra",
            "add server web/web-1 10.0.0.5:80 ssl verify none",
            "add server web/../x 10.0.0.5:80",
            "add server web/web-1 not-an-address",
            "shutdown frontend fe",
            "set ssl cert x",
            "del\u{a0}server web/web-1",
            "del server\tweb/web-1",
            "del server web/web\u{2028}-1",
            "",
        ] {
            assert!(check_command(refused, "web").is_err(), "{refused}");
        }
        // What is sent is what was judged: single spaces, nothing around it.
        assert_eq!(
            check_command("  show   servers state  web ", "web").as_deref(),
            Ok("show servers state web")
        );
    }
}
