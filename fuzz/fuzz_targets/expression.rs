//! Fuzzes the expression compiler and evaluator: any text compiles or is refused, and what
//! compiles evaluates over a small history without panicking or overflowing the stack. Besides
//! each input itself, the input repeated thousands of times (`0+` becomes `0+0+…+0`) and wrapped
//! in thousands of parentheses, so the size and depth caps are exercised past libFuzzer's
//! usual input length.
#![no_main]

use do_scaler::query::{EvalOptions, Labels, MemorySource, compile, evaluate};
use libfuzzer_sys::fuzz_target;

fn check(text: &str) {
    let Ok(expression) = compile(text) else { return };
    let mut source = MemorySource::new();
    for (name, droplet) in [("node_load1", "1"), ("node_load1", "2"), ("node_cpu_seconds_total", "1")] {
        let labels = Labels::new([("__name__", name), ("droplet_id", droplet), ("mode", "idle")]);
        for i in 0..10 {
            source.push(&labels, i * 15_000, (i * 7 % 5) as f64);
        }
    }
    let _ = evaluate(&expression.node, &source, 150_000, EvalOptions::default());
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    check(text);
    if !text.is_empty() && text.len() < 64 {
        let times = 20_000 / text.len();
        check(&format!("{}0", text.repeat(times)));
        check(&format!("{}{text}{}", "(".repeat(times), ")".repeat(times)));
    }
});
