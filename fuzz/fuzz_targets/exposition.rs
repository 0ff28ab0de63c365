//! Fuzzes the exposition parser: any input parses or fails with a located error, never panics,
//! and what parses renders back to the same samples.
#![no_main]

use do_scaler::metrics::exposition::{parse, render};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(samples) = parse(text, "fuzz") {
        let again = parse(&render(&samples), "rendered").expect("rendered samples parse");
        assert_eq!(again.len(), samples.len());
    }
});
