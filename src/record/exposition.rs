//! Metrics in the Prometheus text format (version 0.0.4): families of counters, gauges and
//! histograms with bounded label sets, added together across runs and rendered for `/metrics`.
//!
//! The metrics actors fill one [`Exposition`] each from their own counters and HDR histograms
//! (no second bookkeeping); the process' monitor adds them up. Histograms are cumulative
//! counts at fixed bounds in seconds, read from the HDR histograms at their 3 significant
//! figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Upper bounds of the histogram buckets, seconds (`+Inf` is added when rendering). They span
/// a loopback mock's microseconds to a slow local model's minutes.
pub const BUCKETS_SECONDS: [f64; 20] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// One histogram series: cumulative counts at [`BUCKETS_SECONDS`], plus count and sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSample {
    /// Observations at or below each bound (same length as [`BUCKETS_SECONDS`]).
    pub cumulative: Vec<u64>,
    /// All observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of the observations, seconds.
    pub sum_seconds: f64,
}

impl HistogramSample {
    /// Reads an HDR histogram of microseconds whose exact sum is `sum_us`.
    pub fn from_hdr(h: &Histogram<u64>, sum_us: u64) -> Self {
        let cumulative = BUCKETS_SECONDS
            .iter()
            .map(|b| if h.is_empty() { 0 } else { h.count_between(0, (b * 1e6).round() as u64) })
            .collect();
        HistogramSample { cumulative, count: h.len(), sum_seconds: sum_us as f64 / 1e6 }
    }

    fn add(&mut self, o: &HistogramSample) {
        if self.cumulative.len() < o.cumulative.len() {
            self.cumulative.resize(o.cumulative.len(), 0);
        }
        for (a, b) in self.cumulative.iter_mut().zip(&o.cumulative) {
            *a += b;
        }
        self.count += o.count;
        self.sum_seconds += o.sum_seconds;
    }
}

/// What a family is, and how two processes' or runs' values of it combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; values add.
    Counter,
    /// A level (calls in flight); values add.
    Gauge,
    /// A setting (a configured limit); the largest value is kept.
    Setting,
    /// Distribution; buckets, counts and sums add.
    Histogram,
}

/// The value of one series.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A counter's or gauge's number.
    Number(f64),
    /// A histogram.
    Histogram(HistogramSample),
}

/// Label pairs, sorted by name.
pub type Labels = Vec<(&'static str, String)>;

/// One metric family: name, help, kind and its series.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Help text.
    pub help: &'static str,
    /// Kind.
    pub kind: Kind,
    /// Series by label set.
    pub series: BTreeMap<Labels, Value>,
}

/// A set of metric families, ready to add to another or render.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    families: BTreeMap<&'static str, Family>,
}

impl Exposition {
    /// Adds `v` to a counter series.
    pub fn counter(&mut self, name: &'static str, help: &'static str, labels: &[(&'static str, &str)], v: f64) {
        self.put(name, help, Kind::Counter, labels, Value::Number(v));
    }

    /// Adds `v` to a gauge series.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, labels: &[(&'static str, &str)], v: f64) {
        self.put(name, help, Kind::Gauge, labels, Value::Number(v));
    }

    /// Sets a setting series (the largest value given wins).
    pub fn setting(&mut self, name: &'static str, help: &'static str, labels: &[(&'static str, &str)], v: f64) {
        self.put(name, help, Kind::Setting, labels, Value::Number(v));
    }

    /// Adds a histogram series.
    pub fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        h: HistogramSample,
    ) {
        self.put(name, help, Kind::Histogram, labels, Value::Histogram(h));
    }

    fn put(&mut self, name: &'static str, help: &'static str, kind: Kind, labels: &[(&'static str, &str)], v: Value) {
        let mut labels: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect();
        labels.sort();
        let fam = self.families.entry(name).or_insert_with(|| Family { help, kind, series: BTreeMap::new() });
        match fam.series.get_mut(&labels) {
            Some(old) => combine(kind, old, &v),
            None => {
                fam.series.insert(labels, v);
            }
        }
    }

    /// Adds every series of `other` to this one's.
    pub fn merge(&mut self, other: &Exposition) {
        for (name, fam) in &other.families {
            let mine = self.families.entry(name).or_insert_with(|| Family {
                help: fam.help,
                kind: fam.kind,
                series: BTreeMap::new(),
            });
            for (labels, v) in &fam.series {
                match mine.series.get_mut(labels) {
                    Some(old) => combine(fam.kind, old, v),
                    None => {
                        mine.series.insert(labels.clone(), v.clone());
                    }
                }
            }
        }
    }

    /// The value of a number series, for tests and the live view.
    pub fn number(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let fam = self.families.get(name)?;
        fam.series.iter().find_map(|(l, v)| match v {
            Value::Number(n) if labels.iter().all(|(k, want)| l.iter().any(|(lk, lv)| lk == k && lv == want)) => {
                Some(*n)
            }
            _ => None,
        })
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        for (name, fam) in &self.families {
            let kind = match fam.kind {
                Kind::Counter => "counter",
                Kind::Gauge | Kind::Setting => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in &fam.series {
                match v {
                    Value::Number(n) => {
                        let _ = writeln!(out, "{name}{} {}", label_text(labels, None), number(*n));
                    }
                    Value::Histogram(h) => render_histogram(&mut out, name, labels, h),
                }
            }
        }
        out
    }
}

fn combine(kind: Kind, old: &mut Value, new: &Value) {
    match (old, new) {
        (Value::Number(a), Value::Number(b)) => match kind {
            Kind::Setting => *a = a.max(*b),
            _ => *a += b,
        },
        (Value::Histogram(a), Value::Histogram(b)) => a.add(b),
        _ => {}
    }
}

fn render_histogram(out: &mut String, name: &str, labels: &Labels, h: &HistogramSample) {
    for (bound, n) in BUCKETS_SECONDS.iter().zip(&h.cumulative) {
        let _ = writeln!(out, "{name}_bucket{} {n}", label_text(labels, Some(&number(*bound))));
    }
    let _ = writeln!(out, "{name}_bucket{} {}", label_text(labels, Some("+Inf")), h.count);
    let _ = writeln!(out, "{name}_sum{} {}", label_text(labels, None), number(h.sum_seconds));
    let _ = writeln!(out, "{name}_count{} {}", label_text(labels, None), h.count);
}

fn label_text(labels: &Labels, le: Option<&str>) -> String {
    if labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut s = String::from("{");
    let pairs = labels.iter().map(|(k, v)| (*k, v.as_str())).chain(le.map(|le| ("le", le)));
    for (i, (k, v)) in pairs.enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"{}\"", escape(v));
    }
    s.push('}');
    s
}

/// Label values escape backslash, double quote and newline (the text format's rules).
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Integers without a fraction; others in Rust's shortest round-trip form; NaN and infinities
/// as the format spells them.
fn number(n: f64) -> String {
    if n.is_nan() {
        "NaN".into()
    } else if n.is_infinite() {
        if n > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_add_across_runs_and_render_in_the_text_format() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for us in [300, 700, 40_000, 2_000_000] {
            h.record(us).unwrap();
        }
        let mut a = Exposition::default();
        a.counter("troupe_x_total", "X.", &[("model", "m\"1")], 2.0);
        a.setting("troupe_limit", "L.", &[], 60.0);
        a.histogram("troupe_d_seconds", "D.", &[("model", "m")], HistogramSample::from_hdr(&h, 2_041_000));
        let mut b = a.clone();
        b.setting("troupe_limit", "L.", &[], 600.0);
        a.merge(&b);
        assert_eq!(a.number("troupe_x_total", &[("model", "m\"1")]), Some(4.0));
        assert_eq!(a.number("troupe_limit", &[]), Some(600.0));
        let text = a.render();
        assert!(text.contains("# TYPE troupe_x_total counter\ntroupe_x_total{model=\"m\\\"1\"} 4\n"), "{text}");
        assert!(text.contains("troupe_d_seconds_bucket{model=\"m\",le=\"0.0005\"} 2\n"), "{text}");
        assert!(text.contains("troupe_d_seconds_bucket{model=\"m\",le=\"0.05\"} 6\n"), "{text}");
        assert!(text.contains("troupe_d_seconds_bucket{model=\"m\",le=\"+Inf\"} 8\n"), "{text}");
        assert!(text.contains("troupe_d_seconds_sum{model=\"m\"} 4.082\n"), "{text}");
        assert!(text.contains("troupe_d_seconds_count{model=\"m\"} 8\n"), "{text}");
    }
}
