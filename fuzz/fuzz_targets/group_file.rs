//! Fuzzes the group-file loader: any text loads or fails with diagnostics, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = do_scaler::config::group_from_toml("fuzz", text);
});
