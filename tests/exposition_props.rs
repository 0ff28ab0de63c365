//! Property: rendering any sample set in the text format and parsing it back gives the same set.

use do_scaler::metrics::exposition::{Sample, parse, render};
use proptest::prelude::*;

fn metric_name() -> impl Strategy<Value = String> {
    "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}"
}

fn label_name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_]{0,12}"
}

fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,16}",
        "[,={}\"\\\\\n a-z]{0,12}",
        any::<String>().prop_map(|s| s.chars().filter(|c| *c != '\r').take(12).collect()),
    ]
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::NAN),
        (-1e6f64..1e6),
    ]
}

fn sample() -> impl Strategy<Value = Sample> {
    (
        metric_name(),
        prop::collection::vec((label_name(), label_value()), 0..5),
        value(),
        prop::option::of(any::<i64>()),
    )
        .prop_map(|(name, labels, value, timestamp_ms)| Sample {
            name,
            labels,
            value,
            timestamp_ms,
        })
}

fn same(a: &Sample, b: &Sample) -> bool {
    a.name == b.name
        && a.labels == b.labels
        && a.timestamp_ms == b.timestamp_ms
        && (a.value == b.value && a.value.is_sign_negative() == b.value.is_sign_negative()
            || (a.value.is_nan() && b.value.is_nan()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn render_then_parse_gives_the_same_samples(samples in prop::collection::vec(sample(), 0..20)) {
        let text = render(&samples);
        let parsed = parse(&text, "generated").map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(parsed.len(), samples.len());
        for (a, b) in samples.iter().zip(&parsed) {
            prop_assert!(same(a, b), "{:?} != {:?}\n{}", a, b, text);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse(&text, "fuzz");
    }
}
