//! What a tokex's `/metrics` serves, read from its OpenMetrics text.

use std::collections::{BTreeMap, BTreeSet};

/// Label names a scrape adds to every series (the PodMonitor's target labels); queries may
/// group and filter by them although `/metrics` never carries them.
pub const SCRAPE_LABELS: [&str; 5] = ["namespace", "pod", "container", "job", "instance"];

/// The samples of one scrape.
#[derive(Debug, Default)]
pub struct Served {
    /// Sample name (`tokex_requests_total`, `tokex_request_duration_seconds_bucket`) to
    /// label name to the values seen.
    samples: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// The metric names a reference lists: counters with `_total`, info with `_info`,
    /// the rest (histograms too) as declared by `# TYPE`.
    metrics: BTreeSet<String>,
}

impl Served {
    pub fn parse(text: &str) -> Self {
        let mut served = Self::default();
        for line in text.lines() {
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                let (name, kind) = declared.split_once(' ').unwrap();
                let suffix = match kind {
                    "counter" => "_total",
                    "info" => "_info",
                    _ => "",
                };
                served.metrics.insert(format!("{name}{suffix}"));
            } else if !line.starts_with('#') && !line.is_empty() {
                let (name, labels) = sample(line);
                let entry = served.samples.entry(name).or_default();
                for (label, value) in labels {
                    entry.entry(label).or_default().insert(value);
                }
            }
        }
        served
    }

    /// The label names and values of the samples named `name`, if any is served.
    pub fn sample(&self, name: &str) -> Option<&BTreeMap<String, BTreeSet<String>>> {
        self.samples.get(name)
    }

    /// The label names of metric `name` as a reference lists it (a histogram's are those
    /// of its `_count`, without `le`).
    pub fn labels_of(&self, name: &str) -> Option<BTreeSet<&str>> {
        let sample = self
            .samples
            .get(name)
            .or_else(|| self.samples.get(&format!("{name}_count")))?;
        Some(sample.keys().map(String::as_str).collect())
    }

    pub fn metrics(&self) -> &BTreeSet<String> {
        &self.metrics
    }
}

/// One sample line's name and labels: `name{a="x",b="y"} value`.
fn sample(line: &str) -> (String, Vec<(String, String)>) {
    let Some((name, rest)) = line.split_once('{') else {
        let name = line.split(' ').next().unwrap();
        return (name.to_string(), Vec::new());
    };
    let mut labels = Vec::new();
    let mut chars = rest.chars();
    loop {
        let label: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let label = label.trim_start_matches(',').to_string();
        if label.starts_with('}') || label.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "a quoted value in {line}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((label, value));
        if chars.clone().next() == Some('}') {
            break;
        }
    }
    (name.to_string(), labels)
}

/// Sample lines parse into names, label names and unescaped values.
#[test]
fn parses_sample_lines() {
    let served = Served::parse(
        "# TYPE tokex_requests counter\n\
         tokex_requests_total{route=\"a\",status=\"200\",code=\"\"} 1\n\
         # TYPE tokex_cache_entries gauge\n\
         tokex_cache_entries 3\n\
         tokex_build_info{version=\"1 \\\"q\\\"\"} 1\n",
    );
    let requests = served.sample("tokex_requests_total").unwrap();
    assert_eq!(
        requests.keys().collect::<Vec<_>>(),
        ["code", "route", "status"]
    );
    assert!(requests["code"].contains(""));
    assert!(served.sample("tokex_build_info").unwrap()["version"].contains("1 \"q\""));
    assert!(served.sample("tokex_cache_entries").unwrap().is_empty());
    assert!(served.metrics().contains("tokex_requests_total"));
}
