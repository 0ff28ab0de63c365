//! Failpoints: named places in the product where `DO_SCALER_FAILPOINT=name` makes the process
//! print a marker line and exit at once, as if killed, so crash safety is tested at exact
//! points rather than by sleeping. Inert unless the variable names the point.
//!
//! Compiled in only with the `failpoints` cargo feature, which the test build enables (the
//! crate is its own dev-dependency with that feature): a release or packaged binary ignores
//! `DO_SCALER_FAILPOINT`, so nothing in production can be told to exit at once.

#[cfg(feature = "failpoints")]
use std::io::Write;
#[cfg(feature = "failpoints")]
use std::sync::OnceLock;

/// Every failpoint in the product, in the order a scale-up or scale-down passes them. The
/// README's list and the crash tests use exactly these names (a test checks the three agree).
pub const POINTS: &[&str] = &[
    // Every tick.
    "list.between_pages",
    "tick.after_list",
    "tick.after_scrape",
    "decision.before_record",
    "decision.after_record",
    "action.before_run",
    // A scale-up.
    "create.before_journal",
    "create.after_journal",
    "create.answer_unread",
    "create.after_answer",
    "create.between_chunks",
    "create.after_settle",
    // A scale-down.
    "destroy.before_journal",
    "destroy.after_journal",
    "destroy.between_deletes",
    "destroy.after_deletes",
    "destroy.after_settle",
    // A scale-down with `[drain]`.
    "drain.before_journal",
    "drain.after_journal",
    // Replacing an unhealthy droplet (`[health]`).
    "replace.before_journal",
    "replace.after_journal",
    "replace.before_retire",
    "replace.after_retire",
    "replace.before_abandon",
    // After the actions.
    "action.after_run",
    "memory.before_save",
    // A restart that finds an unsettled journal entry.
    "reconcile.before_settle",
];

/// Whether this build can stop at failpoints at all.
pub const COMPILED_IN: bool = cfg!(feature = "failpoints");

#[cfg(feature = "failpoints")]
fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var("DO_SCALER_FAILPOINT").ok())
        .as_deref()
}

/// Exits the process at once when `name` is the armed failpoint (never without the
/// `failpoints` feature).
#[inline]
pub fn hit(name: &str) {
    debug_assert!(
        POINTS.contains(&name),
        "failpoint `{name}` is not in POINTS"
    );
    #[cfg(feature = "failpoints")]
    if armed() == Some(name) {
        let _ = writeln!(std::io::stderr(), "FAILPOINT {name}: exiting as if killed");
        let _ = std::io::stderr().flush();
        // SAFETY: _exit ends the process without running destructors or flushing buffers,
        // exactly what a kill -9 at this point would do; nothing here needs cleaning up.
        unsafe { libc::_exit(137) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_builds_have_failpoints_compiled_in() {
        // The crate's dev-dependency on itself turns the feature on for every test build; the
        // crash tests depend on it.
        const { assert!(super::COMPILED_IN) };
    }
}
