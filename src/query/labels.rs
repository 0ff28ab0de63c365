//! Label sets: sorted name/value pairs, `__name__` included, cheap to clone.

use std::fmt;
use std::sync::Arc;

/// The label holding the metric name.
pub const METRIC_NAME: &str = "__name__";

/// A sorted set of labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Labels(Arc<[(Box<str>, Box<str>)]>);

impl Labels {
    /// Builds a set from pairs in any order (later duplicates win).
    pub fn new<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut list: Vec<(Box<str>, Box<str>)> = pairs
            .into_iter()
            .map(|(k, v)| (k.as_ref().into(), v.as_ref().into()))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                std::mem::swap(&mut later.1, &mut earlier.1);
                true
            } else {
                false
            }
        });
        list.retain(|(_, v)| !v.is_empty());
        Labels(list.into())
    }

    /// The value of a label ("" when absent, as in Prometheus).
    pub fn get(&self, name: &str) -> &str {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .map(|i| &*self.0[i].1)
            .unwrap_or("")
    }

    /// The metric name.
    pub fn name(&self) -> &str {
        self.get(METRIC_NAME)
    }

    /// The pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Only the named labels.
    pub fn keep(&self, names: &[String]) -> Labels {
        Labels::new(self.iter().filter(|(k, _)| names.iter().any(|n| n == k)))
    }

    /// Without the named labels.
    pub fn without(&self, names: &[String]) -> Labels {
        Labels::new(self.iter().filter(|(k, _)| !names.iter().any(|n| n == k)))
    }

    /// Without the metric name.
    pub fn drop_name(&self) -> Labels {
        if self.get(METRIC_NAME).is_empty() {
            return self.clone();
        }
        Labels::new(self.iter().filter(|(k, _)| *k != METRIC_NAME))
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Labels {
    /// `name{a="1", b="2"}` as Prometheus prints a series.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        let rest: Vec<String> = self
            .iter()
            .filter(|(k, _)| *k != METRIC_NAME)
            .map(|(k, v)| {
                format!(
                    "{k}=\"{}\"",
                    v.replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n")
                )
            })
            .collect();
        write!(f, "{{{}}}", rest.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_deduplicated_and_empty_values_dropped() {
        let labels = Labels::new([
            ("b", "2"),
            ("a", "1"),
            ("__name__", "up"),
            ("c", ""),
            ("a", "3"),
        ]);
        assert_eq!(labels.get("a"), "3");
        assert_eq!(labels.get("c"), "");
        assert_eq!(labels.to_string(), "up{a=\"3\", b=\"2\"}");
        assert_eq!(labels.drop_name().to_string(), "{a=\"3\", b=\"2\"}");
        assert_eq!(labels.keep(&["b".into()]).to_string(), "{b=\"2\"}");
    }
}
