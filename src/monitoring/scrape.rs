//! Reading a `/metrics` endpoint from outside, as `troupe top` does: a bounded HTTP GET, the
//! Prometheus text format (0.0.4) parsed into a [`Scrape`], sums over label sets, and
//! histogram quantiles estimated from the buckets exactly as Prometheus' `histogram_quantile`
//! does. Nothing here trusts the other end: bodies are bounded, every line is checked, and
//! malformed input is an error naming its line, never a panic.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::actors::monitor::{RECENT_MESSAGES, RECENT_TEXT_CHARS, RecentMessage};

/// The largest body read from an endpoint: a troupe `/metrics` is a few kilobytes, so anything
/// near this is something else.
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// Samples kept from one scrape (the body bound already limits them; this keeps a pathological
/// one from growing the maps).
pub const MAX_SAMPLES: usize = 100_000;

/// Why a scrape gave nothing to show.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Nothing answers at the address (yet): refused, unreachable, or the connect timed out.
    #[error("cannot connect to {addr}: {why}")]
    Unreachable {
        /// host:port.
        addr: String,
        /// What the connect said.
        why: String,
    },
    /// The connection broke or timed out after it was made.
    #[error("{url}: {why}")]
    Http {
        /// What was asked for.
        url: String,
        /// What went wrong.
        why: String,
    },
    /// An answer that is not 200.
    #[error("{url} answered HTTP {status}; is this a troupe --metrics-addr?")]
    Status {
        /// What was asked for.
        url: String,
        /// The status code.
        status: u16,
    },
    /// A body over [`MAX_BODY_BYTES`].
    #[error("{url} sent more than {limit} bytes; is this a troupe --metrics-addr?")]
    TooLarge {
        /// What was asked for.
        url: String,
        /// The bound.
        limit: usize,
    },
    /// A body that is not UTF-8 text.
    #[error("{url} sent a body that is not UTF-8 text")]
    NotText {
        /// What was asked for.
        url: String,
    },
    /// A line the text format does not allow.
    #[error("line {line} of the metrics is not in the Prometheus text format: {why}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        why: &'static str,
    },
    /// More than [`MAX_SAMPLES`] samples.
    #[error("the metrics hold more than {MAX_SAMPLES} samples")]
    TooManySamples,
    /// `/messages` is not the JSON array expected.
    #[error("the messages are not a JSON array of lines: {0}")]
    Messages(String),
}

impl ScrapeError {
    /// True when nothing answers at the address: the view says it is waiting for it.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ScrapeError::Unreachable { .. })
    }
}

/// Label pairs of one sample, in the order they were given.
pub type Labels = Vec<(String, String)>;

/// One scrape: every sample's value by metric name (a histogram's are under `NAME_bucket`,
/// `NAME_sum` and `NAME_count`, as the text format names them). `# HELP`, `# TYPE` and
/// timestamps are not kept: the names say what `troupe top` needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    samples: BTreeMap<String, Vec<(Labels, f64)>>,
}

impl Scrape {
    /// Parses the Prometheus text format; the first bad line is an error naming it.
    pub fn parse(text: &str) -> Result<Scrape, ScrapeError> {
        let mut s = Scrape::default();
        let mut n = 0;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, labels, value) = sample(line).map_err(|why| ScrapeError::Malformed { line: i + 1, why })?;
            n += 1;
            if n > MAX_SAMPLES {
                return Err(ScrapeError::TooManySamples);
            }
            s.samples.entry(name.to_string()).or_default().push((labels, value));
        }
        Ok(s)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.values().map(Vec::len).sum()
    }

    /// True when no sample was read.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The sum over every label set of `name`; `None` when no sample has that name.
    pub fn sum(&self, name: &str) -> Option<f64> {
        self.samples.get(name).map(|v| v.iter().map(|(_, x)| x).sum())
    }

    /// The sum over the samples of `name` whose `label` is `value`.
    pub fn sum_where(&self, name: &str, label: &str, value: &str) -> Option<f64> {
        let v = self.samples.get(name)?;
        let mut hits = v.iter().filter(|(l, _)| label_value(l, label) == Some(value)).peekable();
        hits.peek()?;
        Some(hits.map(|(_, x)| x).sum())
    }

    /// The sums of `name` by the value of `label` (samples without it are left out).
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (labels, x) in self.samples.get(name).into_iter().flatten() {
            if let Some(v) = label_value(labels, label) {
                *out.entry(v.to_string()).or_insert(0.0) += x;
            }
        }
        out
    }

    /// The value of `label` on the first sample of `name` (the version of `troupe_build_info`).
    pub fn label(&self, name: &str, label: &str) -> Option<&str> {
        self.samples.get(name)?.iter().find_map(|(l, _)| label_value(l, label))
    }

    /// The histogram `name` with every label set's buckets added up, as
    /// `sum by (le) (NAME_bucket)` gives it; `None` when it has no buckets.
    pub fn histogram(&self, name: &str) -> Option<Buckets> {
        let series = self.samples.get(&format!("{name}_bucket"))?;
        let mut by_bound: Vec<(f64, f64)> = Vec::new();
        for (labels, x) in series {
            let Some(le) = label_value(labels, "le").and_then(parse_number) else { continue };
            if le.is_nan() {
                continue;
            }
            match by_bound.iter_mut().find(|(b, _)| *b == le) {
                Some((_, c)) => *c += x,
                None => by_bound.push((le, *x)),
            }
        }
        if by_bound.is_empty() {
            return None;
        }
        by_bound.sort_by(|a, b| a.0.total_cmp(&b.0));
        let sum = self.sum(&format!("{name}_sum")).unwrap_or(0.0);
        Some(Buckets { cumulative: by_bound, sum })
    }
}

fn label_value<'a>(labels: &'a Labels, name: &str) -> Option<&'a str> {
    labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// One sample line: `name{label="value",...} value [timestamp]`.
fn sample(line: &str) -> Result<(&str, Labels, f64), &'static str> {
    let end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(line.len());
    let name = &line[..end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("a sample must start with a metric name");
    }
    let mut rest = &line[end..];
    let mut labels = Labels::new();
    if let Some(r) = rest.strip_prefix('{') {
        let (l, after) = label_set(r)?;
        labels = l;
        rest = after;
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("a space must separate the name and labels from the value");
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().and_then(parse_number).ok_or("the value is not a number")?;
    if let Some(ts) = fields.next()
        && ts.parse::<i64>().is_err()
    {
        return Err("the timestamp is not an integer");
    }
    if fields.next().is_some() {
        return Err("text after the value and timestamp");
    }
    Ok((name, labels, value))
}

/// The label pairs after `{`, and what follows the closing `}`.
fn label_set(mut r: &str) -> Result<(Labels, &str), &'static str> {
    let mut labels = Labels::new();
    loop {
        r = r.trim_start();
        if let Some(after) = r.strip_prefix('}') {
            return Ok((labels, after));
        }
        let end = r.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(r.len());
        let name = &r[..end];
        if name.is_empty() {
            return Err("a label name is missing");
        }
        r = r[end..].trim_start().strip_prefix('=').ok_or("a label name must be followed by =")?;
        r = r.trim_start().strip_prefix('"').ok_or("a label value must be quoted")?;
        let (value, after) = quoted(r)?;
        labels.push((name.to_string(), value));
        r = after.trim_start();
        if let Some(after) = r.strip_prefix(',') {
            r = after;
        } else if !r.starts_with('}') {
            return Err("labels must be separated by commas and closed by }");
        }
    }
}

/// A label value after its opening quote, unescaped, and what follows the closing quote.
fn quoted(r: &str) -> Result<(String, &str), &'static str> {
    let mut value = String::new();
    let mut chars = r.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &r[i + 1..])),
            '\\' => match chars.next().map(|(_, c)| c) {
                Some('n') => value.push('\n'),
                Some(c @ ('\\' | '"')) => value.push(c),
                _ => return Err("a label value has an unknown escape"),
            },
            c => value.push(c),
        }
    }
    Err("a label value is not closed")
}

/// A sample value: a float, `+Inf`, `-Inf` or `NaN` (Rust's parser accepts the same words).
fn parse_number(s: &str) -> Option<f64> {
    s.parse::<f64>().ok()
}

/// A histogram's cumulative counts by upper bound (ascending, the last normally `+Inf`), and
/// the sum of what it observed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    /// `(le, observations at or below le)`, ascending by `le`.
    pub cumulative: Vec<(f64, f64)>,
    /// The `_sum` series: the observations added up (seconds, for durations).
    pub sum: f64,
}

impl Buckets {
    /// Observations (the highest bucket's count).
    pub fn count(&self) -> f64 {
        self.cumulative.last().map_or(0.0, |b| b.1)
    }

    /// The mean observation, when there was any.
    pub fn mean(&self) -> Option<f64> {
        let n = self.count();
        (n > 0.0).then(|| self.sum / n)
    }

    /// What was observed after `earlier`: bucket by bucket differences. When a count went down
    /// (the process behind the address restarted), everything now counted is new, as
    /// Prometheus' `increase` takes a counter reset.
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        let count_of = |le: f64| earlier.cumulative.iter().find(|(b, _)| *b == le).map_or(0.0, |b| b.1);
        let reset = self.count() < earlier.count() || self.cumulative.iter().any(|&(le, c)| c < count_of(le));
        if reset {
            return self.clone();
        }
        Buckets {
            cumulative: self.cumulative.iter().map(|&(le, c)| (le, c - count_of(le))).collect(),
            sum: (self.sum - earlier.sum).max(0.0),
        }
    }

    /// Observations in each bucket alone (not cumulative), with its upper bound.
    pub fn counts(&self) -> Vec<(f64, f64)> {
        let mut below = 0.0;
        self.cumulative
            .iter()
            .map(|&(le, c)| {
                let n = (c - below).max(0.0);
                below = c.max(below);
                (le, n)
            })
            .collect()
    }

    /// The `q` quantile as `histogram_quantile(q, ...)` estimates it; `None` where Prometheus
    /// gives NaN (no observations, no `+Inf` bucket, fewer than two buckets).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let v = histogram_quantile(q, &self.cumulative);
        (!v.is_nan()).then_some(v)
    }
}

/// Prometheus' `histogram_quantile` on cumulative `(le, count)` buckets sorted by `le`: the
/// rank `q * count` is found in the first bucket that reaches it and interpolated linearly
/// within it (from 0 for the lowest bucket); a rank in the `+Inf` bucket gives the highest
/// finite bound; `q < 0` is `-Inf`, `q > 1` is `+Inf`. Counts that go down (a scrape between
/// two buckets' updates) are raised to be monotonic first, as Prometheus does.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let Some(&(last_le, _)) = buckets.last() else { return f64::NAN };
    if buckets.len() < 2 || last_le != f64::INFINITY {
        return f64::NAN;
    }
    let mut monotonic = Vec::with_capacity(buckets.len());
    let mut max = 0.0_f64;
    for &(le, c) in buckets {
        max = if c.is_nan() { max } else { max.max(c) };
        monotonic.push((le, max));
    }
    let observations = max;
    if observations <= 0.0 {
        return f64::NAN;
    }
    let rank = q * observations;
    let finite = monotonic.len() - 1;
    let b = monotonic[..finite].iter().position(|&(_, c)| c >= rank).unwrap_or(finite);
    if b == finite {
        return monotonic[finite - 1].0;
    }
    if b == 0 && monotonic[0].0 <= 0.0 {
        return monotonic[0].0;
    }
    let (start, below) = if b == 0 { (0.0, 0.0) } else { monotonic[b - 1] };
    let (end, at) = monotonic[b];
    let in_bucket = at - below;
    if in_bucket <= 0.0 {
        return end;
    }
    start + (end - start) * ((rank - below) / in_bucket)
}

/// Parses `/messages`: the last lines, each cut again to the monitor's bounds (the other end
/// is not trusted to have done it).
pub fn parse_messages(body: &str) -> Result<Vec<RecentMessage>, ScrapeError> {
    let mut lines: Vec<RecentMessage> = serde_json::from_str(body).map_err(|e| ScrapeError::Messages(e.to_string()))?;
    let skip = lines.len().saturating_sub(RECENT_MESSAGES);
    lines.drain(..skip);
    for l in &mut lines {
        l.speaker = crate::text::one_line(&l.speaker, 64);
        l.to = l.to.as_deref().map(|t| crate::text::one_line(t, 64));
        l.text = crate::text::one_line(&l.text, RECENT_TEXT_CHARS);
    }
    Ok(lines)
}

/// The HTTP client for scraping: short connect and total timeouts, and no proxy (a metrics
/// address is a host:port to reach directly; a proxy meant for the internet must not carry it).
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2).min(timeout))
        .timeout(timeout)
        .no_proxy()
        .build()
        .unwrap_or_default()
}

/// GETs `http://addr{path}` and returns its body, read up to `limit` bytes.
pub async fn fetch(client: &reqwest::Client, addr: &str, path: &str, limit: usize) -> Result<String, ScrapeError> {
    let url = format!("http://{addr}{path}");
    let http = |e: reqwest::Error| ScrapeError::Http { url: url.clone(), why: cause_chain(&e) };
    let mut resp = client.get(&url).send().await.map_err(|e| {
        if e.is_connect() { ScrapeError::Unreachable { addr: addr.to_string(), why: cause_chain(&e) } } else { http(e) }
    })?;
    if !resp.status().is_success() {
        return Err(ScrapeError::Status { url, status: resp.status().as_u16() });
    }
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ScrapeError::TooLarge { url, limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(http)? {
        if body.len() + chunk.len() > limit {
            return Err(ScrapeError::TooLarge { url, limit });
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| ScrapeError::NotText { url })
}

/// The innermost cause of an error, which says what happened ("Connection refused").
fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::metrics::{MetricsArgs, MetricsMsg, MetricsState};
    use crate::llm::{ErrorKind, Usage};
    use proptest::prelude::*;

    /// What a run's metrics actor serves after 100 calls of 1..100 ms and two 429s.
    fn served() -> String {
        let args = MetricsArgs { provider: "simulated".into(), requests_per_minute: Some(600), ..Default::default() };
        let mut m = MetricsState::with_args(args);
        for i in 1..=100u64 {
            m.apply(MetricsMsg::CallStarted { queued_us: 10, mailbox_us: None });
            m.apply(MetricsMsg::CallSucceeded {
                model: if i % 2 == 0 { "a".into() } else { "b\"q".into() },
                persona: 0,
                latency_us: i * 1000,
                usage: Usage::new(10, 5),
                cost_usd: Some(0.001),
                cost_usd_estimated: 0.0,
                response_us: i * 1000,
            });
        }
        for _ in 0..2 {
            m.apply(MetricsMsg::CallStarted { queued_us: 0, mailbox_us: None });
            m.apply(MetricsMsg::CallFailed { model: "a".into(), kind: ErrorKind::RateLimited, latency_us: 500 });
        }
        m.export().render()
    }

    #[test]
    fn what_troupe_serves_parses_back_into_its_figures() {
        let s = Scrape::parse(&served()).unwrap();
        assert_eq!(s.sum("troupe_llm_requests_total"), Some(102.0));
        assert_eq!(s.sum_where("troupe_llm_tokens_total", "direction", "prompt"), Some(1000.0));
        assert_eq!(s.by_label("troupe_llm_request_errors_total", "kind")["rate_limited"], 2.0);
        assert_eq!(s.sum("troupe_budget_requests_per_minute"), Some(600.0));
        assert_eq!(s.sum("troupe_stress_workers"), None);
        assert_eq!(s.by_label("troupe_llm_request_duration_seconds_count", "model").len(), 2);
        assert!(s.by_label("troupe_llm_request_duration_seconds_count", "model").contains_key("b\"q"));
        let h = s.histogram("troupe_llm_request_duration_seconds").unwrap();
        assert_eq!(h.count(), 102.0);
        assert_eq!(h.cumulative.last().unwrap().0, f64::INFINITY);
        assert!((h.sum - 5.051).abs() < 1e-9, "{}", h.sum);
        // 102 observations: 2 at 0.5 ms, 1..100 ms. Rank 51 falls in (0.025, 0.05]: 25 ms at
        // or below 0.025 s (+2) and 50 at or below 0.05 s (+2), so 0.025 + 0.025 * 24/25.
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 - 0.049).abs() < 1e-9, "{p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!(p99 > 0.05 && p99 <= 0.1, "{p99}");
        assert_eq!(h.counts().iter().map(|c| c.1).sum::<f64>(), 102.0);
    }

    #[test]
    fn quantiles_are_prometheus_histogram_quantile() {
        let b = [(0.1, 10.0), (0.5, 20.0), (1.0, 30.0), (f64::INFINITY, 30.0)];
        assert!((histogram_quantile(0.5, &b) - 0.3).abs() < 1e-12);
        assert!((histogram_quantile(0.99, &b) - 0.985).abs() < 1e-12);
        assert!((histogram_quantile(0.1, &b) - 0.03).abs() < 1e-12, "within the lowest bucket, from 0");
        // A rank in the +Inf bucket gives the highest finite bound.
        assert_eq!(histogram_quantile(0.9, &[(0.1, 1.0), (f64::INFINITY, 10.0)]), 0.1);
        // A non-positive lowest bound is returned as it is.
        assert_eq!(histogram_quantile(0.1, &[(-1.0, 5.0), (0.0, 8.0), (f64::INFINITY, 10.0)]), -1.0);
        // Counts that go down are made monotonic first.
        assert!((histogram_quantile(0.5, &[(1.0, 10.0), (2.0, 4.0), (f64::INFINITY, 10.0)]) - 0.5).abs() < 1e-12);
        assert!(histogram_quantile(0.5, &[(1.0, 1.0), (2.0, 2.0)]).is_nan(), "no +Inf bucket");
        assert!(histogram_quantile(0.5, &[(f64::INFINITY, 2.0)]).is_nan(), "one bucket");
        assert!(histogram_quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]).is_nan(), "nothing observed");
        assert!(histogram_quantile(f64::NAN, &b).is_nan());
        assert_eq!(histogram_quantile(-0.5, &b), f64::NEG_INFINITY);
        assert_eq!(histogram_quantile(1.5, &b), f64::INFINITY);
    }

    #[test]
    fn an_interval_is_the_difference_and_a_restart_counts_all_as_new() {
        let at =
            |c: [f64; 3], sum: f64| Buckets { cumulative: vec![(0.1, c[0]), (1.0, c[1]), (f64::INFINITY, c[2])], sum };
        let d = at([5.0, 9.0, 10.0], 3.0).since(&at([2.0, 4.0, 4.0], 1.0));
        assert_eq!(d, at([3.0, 5.0, 6.0], 2.0));
        assert_eq!(d.counts(), vec![(0.1, 3.0), (1.0, 2.0), (f64::INFINITY, 1.0)]);
        let restarted = at([1.0, 1.0, 1.0], 0.2);
        assert_eq!(restarted.since(&at([2.0, 4.0, 4.0], 1.0)), restarted);
        assert_eq!(at([0.0, 0.0, 0.0], 0.0).mean(), None);
        assert_eq!(at([1.0, 2.0, 4.0], 2.0).mean(), Some(0.5));
    }

    #[test]
    fn the_text_format_with_its_escapes_timestamps_and_specials() {
        let s = Scrape::parse(
            "# HELP x X.\n# TYPE x counter\nx{a=\"1\",b=\"q\\\"\\n\\\\\",} 1.5 1712345678000\n\n\
             x{a=\"2\"} +Inf\ny NaN\nz -3e2\nw{ } 4\n",
        )
        .unwrap();
        assert_eq!(s.sum_where("x", "b", "q\"\n\\"), Some(1.5));
        assert_eq!(s.sum("x"), Some(f64::INFINITY));
        assert!(s.sum("y").unwrap().is_nan());
        assert_eq!((s.sum("z"), s.sum("w"), s.len()), (Some(-300.0), Some(4.0), 5));
        assert_eq!(Scrape::parse("").unwrap(), Scrape::default());
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        for (bad, line) in [
            ("ok 1\n{a=\"b\"} 1", 2),
            ("x", 1),
            ("x{a=\"b\"}1", 1),
            ("x{a=\"b} 1", 1),
            ("x{a=b} 1", 1),
            ("x{a=\"b\" c=\"d\"} 1", 1),
            ("x{=\"b\"} 1", 1),
            ("x{a=\"\\t\"} 1", 1),
            ("x one", 1),
            ("x 1 2.5", 1),
            ("x 1 2 3", 1),
            ("9x 1", 1),
            ("<html><body>not metrics</body></html>", 1),
        ] {
            match Scrape::parse(bad) {
                Err(ScrapeError::Malformed { line: l, .. }) => assert_eq!(l, line, "{bad:?}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        let err = Scrape::parse("x{a=\"b} 1").unwrap_err().to_string();
        assert!(err.starts_with("line 1 of the metrics"), "{err}");
    }

    #[test]
    fn messages_are_bounded_again_on_arrival() {
        let many: Vec<serde_json::Value> = (0..50)
            .map(|i| serde_json::json!({"turn": i, "speaker": "A\u{1b}[31m", "text": "x ".repeat(10_000)}))
            .collect();
        let lines = parse_messages(&serde_json::to_string(&many).unwrap()).unwrap();
        assert_eq!(lines.len(), RECENT_MESSAGES);
        assert_eq!((lines[0].turn, lines[0].speaker.as_str()), (30, "A [31m"));
        assert!(lines.iter().all(|l| l.text.chars().count() <= RECENT_TEXT_CHARS));
        assert!(parse_messages("{\"not\": \"a list\"}").is_err());
        assert!(parse_messages("[").is_err());
    }

    proptest! {
        #[test]
        fn any_text_parses_or_fails_without_panicking(text in "\\PC{0,400}") {
            let _ = Scrape::parse(&text);
        }

        #[test]
        fn served_text_cut_or_changed_anywhere_never_panics(cut in 0usize..6000, at in 0usize..6000, c in any::<char>()) {
            let text = served();
            let mut chars: Vec<char> = text.chars().collect();
            let at = at % chars.len();
            chars[at] = c;
            let changed: String = chars.into_iter().take(cut).collect();
            if let Ok(s) = Scrape::parse(&changed)
                && let Some(h) = s.histogram("troupe_llm_request_duration_seconds")
            {
                let _ = (h.quantile(0.99), h.counts(), h.since(&Buckets::default()));
            }
        }

        #[test]
        fn a_quantile_lies_within_the_finite_bounds(
            counts in proptest::collection::vec(0.0f64..1e6, 1..25),
            q in 0.0f64..=1.0,
        ) {
            let mut buckets: Vec<(f64, f64)> =
                counts.iter().enumerate().map(|(i, c)| ((i + 1) as f64 * 0.5, *c)).collect();
            let top = buckets.iter().map(|b| b.1).fold(0.0, f64::max);
            buckets.push((f64::INFINITY, top));
            let v = histogram_quantile(q, &buckets);
            let highest = buckets[buckets.len() - 2].0;
            prop_assert!(v.is_nan() || (0.0..=highest).contains(&v), "{v} outside 0..={highest}");
            prop_assert_eq!(v.is_nan(), top == 0.0);
        }
    }

    /// A one-shot HTTP server on loopback that answers every connection with `reply`.
    async fn answering(reply: Vec<u8>) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let reply = reply.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(&reply).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn fetching_is_bounded_and_every_failure_is_an_error() {
        let c = client(Duration::from_secs(2));
        let ok = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nx 1\n".to_vec()).await;
        assert_eq!(fetch(&c, &ok, "/metrics", 100).await.unwrap(), "x 1\n");
        let mut big = b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n".to_vec();
        big.resize(big.len() + 5_000_000, b'x');
        let huge = answering(big).await;
        assert!(matches!(fetch(&c, &huge, "/metrics", MAX_BODY_BYTES).await, Err(ScrapeError::TooLarge { .. })));
        let mut chunked = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        chunked.resize(chunked.len() + 300, b'x');
        let unsized_body = answering(chunked).await;
        assert!(matches!(fetch(&c, &unsized_body, "/metrics", 200).await, Err(ScrapeError::TooLarge { .. })));
        let binary = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n\xff\xfe".to_vec()).await;
        assert!(matches!(fetch(&c, &binary, "/metrics", 100).await, Err(ScrapeError::NotText { .. })));
        let missing = answering(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()).await;
        assert!(matches!(fetch(&c, &missing, "/metrics", 100).await, Err(ScrapeError::Status { status: 404, .. })));
        let garbage = answering(b"SSH-2.0-OpenSSH\r\n".to_vec()).await;
        let e = fetch(&c, &garbage, "/metrics", 100).await.unwrap_err();
        assert!(!e.is_unreachable(), "{e}");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let e = fetch(&c, &closed, "/metrics", 100).await.unwrap_err();
        assert!(e.is_unreachable(), "{e}");
        assert!(e.to_string().contains(&closed), "{e}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let _held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let t0 = std::time::Instant::now();
        let e = fetch(&client(Duration::from_millis(300)), &addr, "/metrics", 100).await.unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(matches!(e, ScrapeError::Http { .. }), "{e}");
    }
}
