//! Failpoints: named places in the product where `DO_SCALER_FAILPOINT=name` makes the process
//! print a marker line and exit at once, as if killed, so crash safety is tested at exact
//! points rather than by sleeping. Inert unless the variable names the point.

use std::io::Write;
use std::sync::OnceLock;

/// Every failpoint in the product.
pub const POINTS: &[&str] = &[
    "create.after_journal",
    "create.after_answer",
    "destroy.after_journal",
];

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var("DO_SCALER_FAILPOINT").ok())
        .as_deref()
}

/// Exits the process at once when `name` is the armed failpoint.
pub fn hit(name: &str) {
    if armed() == Some(name) {
        let _ = writeln!(std::io::stderr(), "FAILPOINT {name}: exiting as if killed");
        let _ = std::io::stderr().flush();
        // SAFETY: _exit ends the process without running destructors or flushing buffers,
        // exactly what a kill -9 at this point would do; nothing here needs cleaning up.
        unsafe { libc::_exit(137) };
    }
}
