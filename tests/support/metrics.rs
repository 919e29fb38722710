//! Reading metrics: the OpenMetrics text of `GET /metrics` (or of an in-process
//! [`portcullis::metrics::Metrics`]), parsed once, read by series.
//!
//! A series that is not there is an error, never a silent 0: a renamed metric or label
//! must fail the test that reads it. Absence is asserted only on purpose, with
//! [`Scrape::assert_absent`]. (A metric family with no series yet is not exposed at all,
//! so absence cannot tell a renamed metric from an unused one: assert it only where the
//! same series is also read present, in that test or another.)

use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One scrape of the metrics text.
#[derive(Debug, Clone)]
pub struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    /// Parses OpenMetrics text; panics on a sample line it cannot read.
    pub fn parse(text: impl Into<String>) -> Scrape {
        let text = text.into();
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_sample(l).unwrap_or_else(|| panic!("unreadable metrics line {l:?}")))
            .collect();
        Scrape { text, samples }
    }

    /// What an in-process registry exposes right now.
    pub fn of(metrics: &portcullis::metrics::Metrics) -> Scrape {
        Scrape::parse(metrics.encode())
    }

    /// The whole text, for messages.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value of the series `name` with exactly these labels, if it is exposed.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    /// The value of the series `name{labels}`; panics with the whole text when it is not
    /// exposed.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or_else(|| {
            panic!(
                "metric {name}{labels:?} is not exposed; the metrics were:\n{}",
                self.text
            )
        })
    }

    /// [`Scrape::value`] of a counter (or a gauge holding a count).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let value = self.value(name, labels);
        assert!(
            value >= 0.0 && value.fract() == 0.0,
            "{name}{labels:?} = {value} is not a count"
        );
        value as u64
    }

    /// Asserts that there is no series `name{labels}`: nothing was ever counted there.
    pub fn assert_absent(&self, name: &str, labels: &[(&str, &str)]) {
        if let Some(value) = self.find(name, labels) {
            panic!("{name}{labels:?} = {value}, expected no such series");
        }
    }

    /// `portcullis_token_events_total{event}`.
    pub fn token_event(&self, event: &str) -> u64 {
        self.counter(TOKEN_EVENTS, &[("event", event)])
    }

    /// Asserts that no token event `event` was ever counted.
    pub fn assert_no_token_event(&self, event: &str) {
        self.assert_absent(TOKEN_EVENTS, &[("event", event)])
    }

    /// `portcullis_user_events_total{event}`.
    pub fn user_event(&self, event: &str) -> u64 {
        self.counter(USER_EVENTS, &[("event", event)])
    }

    /// Asserts that no user event `event` was ever counted.
    pub fn assert_no_user_event(&self, event: &str) {
        self.assert_absent(USER_EVENTS, &[("event", event)])
    }

    /// Every `portcullis_decisions_total` series, by `(outcome, reason)` (none before the
    /// first decision).
    pub fn all_decisions(&self) -> BTreeMap<(String, String), u64> {
        self.samples
            .iter()
            .filter(|s| s.name == DECISIONS)
            .map(|s| {
                let label = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
                ((label("outcome"), label("reason")), s.value as u64)
            })
            .collect()
    }

    /// `portcullis_check_duration_seconds_count`.
    pub fn checks(&self) -> u64 {
        self.counter("portcullis_check_duration_seconds_count", &[])
    }
}

const TOKEN_EVENTS: &str = "portcullis_token_events_total";
const USER_EVENTS: &str = "portcullis_user_events_total";
const DECISIONS: &str = "portcullis_decisions_total";

/// A token event counter of an in-process registry (see [`Scrape::token_event`]).
pub fn token_event(metrics: &portcullis::metrics::Metrics, event: &str) -> u64 {
    Scrape::of(metrics).token_event(event)
}

/// `name{k="v",...} value`, label values with OpenMetrics escapes.
fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.trim().parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        None => (series.trim(), BTreeMap::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(mut rest: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_string(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}
