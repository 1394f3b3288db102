//! The allowed range of every bounded setting, checked whenever a configuration is built: from
//! its layers, from a run folder's journal, or from a web form. A value from outside (a config
//! file, a shared run folder, a form) can never make the runtime panic, hang or run without end.
//!
//! The bounds are generous for real use and documented in the README's Configuration section;
//! an error names the key, the bound and what to change.

use std::time::Duration;

use super::settings::{
    FaultProfile, LatencyKind, LatencyModel, LlmConfig, LocalConfig, PerformanceConfig, SimulationConfig,
    SimulationSettings, ValidationConfig,
};

/// Longest a whole run may be set to take: 7 days.
pub const MAX_RUN_SECS: f64 = 7.0 * 24.0 * 3600.0;
/// Longest any single wait may be set to (a call's timeout, a backoff, the spacing between
/// calls, a simulated latency, a Retry-After): 1 hour.
pub const MAX_WAIT_SECS: f64 = 3600.0;
/// Most turns in one run.
pub const MAX_TURNS: u32 = 100_000;
/// Most retries of one call.
pub const MAX_RETRIES: u32 = 100;
/// Most personas in one run.
pub const MAX_PERSONAS: usize = 10_000_000;
/// Most concurrent calls (`max_workers`, `batch_size`).
pub const MAX_WORKERS: usize = 10_000;
/// Most runs of an experiment at once.
pub const MAX_PARALLEL_RUNS: usize = 256;
/// Most threads of the async runtime (`runtime_threads`).
pub const MAX_RUNTIME_THREADS: usize = 256;
/// Largest cost budget, USD.
pub const MAX_COST_USD: f64 = 1_000_000.0;
/// Longest reply, tokens.
pub const MAX_REPLY_TOKENS: u32 = 1_000_000;
/// Most memory events kept in a prompt window (`memory_prefix`, `memory_recent`,
/// `consolidate_every`).
pub const MAX_MEMORY_EVENTS: usize = 100_000;
/// Largest growth factor of the backoff.
pub const MAX_BACKOFF_FACTOR: f64 = 100.0;
/// Most questions in a persona check's interview.
pub const MAX_QUESTIONS: usize = 12;
/// Most messages per persona the `in_character` analysis shows the judge.
pub const MAX_IN_CHARACTER_MESSAGES: usize = 40;
/// Most stop sequences (`llm.stop`): OpenAI's API and Azure take at most 4, so a fifth is
/// refused here rather than dropped or left to the server's 400.
pub const MAX_STOP_SEQUENCES: usize = 4;

/// A setting outside its range: the dotted key, the value as text and what to change.
#[derive(Debug, Clone, PartialEq)]
pub struct OutOfRange {
    /// Dotted key.
    pub key: String,
    /// The value, rendered.
    pub value: String,
    /// What to change.
    pub message: String,
}

/// A number of seconds as a `Duration`, never panicking: negative or NaN is zero, anything
/// above [`MAX_RUN_SECS`] is cut to it. Values that passed [`check`] are already in range; this
/// is the belt to its braces wherever a duration is built from a setting.
pub fn secs(v: f64) -> Duration {
    if v.is_nan() || v <= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(v.min(MAX_RUN_SECS)) }
}

/// Checks every bounded setting of `c`. The first value out of range is returned, section by
/// section in this order.
pub fn check(c: &SimulationConfig) -> Result<(), OutOfRange> {
    check_llm(&c.llm)?;
    check_local(&c.llm.local)?;
    check_performance(&c.performance)?;
    check_waits(c)?;
    check_faults(&c.llm.simulated.faults)?;
    check_latency(&c.llm.simulated.latency)?;
    check_simulation(&c.simulation)?;
    check_validation(&c.validation)?;
    check_cluster(&c.cluster)?;
    check_monitoring(&c.monitoring)?;
    check_log_level(&c.monitoring.log_level)
}

/// The socket address `--metrics-addr` names: an IP and a port (`127.0.0.1:9464`,
/// `[::1]:0`), or `localhost:PORT` (taken as 127.0.0.1).
pub fn metrics_socket(addr: &str) -> Option<std::net::SocketAddr> {
    if let Some(port) = addr.strip_prefix("localhost:") {
        return Some(std::net::SocketAddr::from(([127, 0, 0, 1], port.parse::<u16>().ok()?)));
    }
    addr.parse().ok()
}

/// `monitoring.*`: an address that parses, a bounded linger, an OTLP/HTTP URL.
fn check_monitoring(m: &super::settings::MonitoringConfig) -> Result<(), OutOfRange> {
    if let Some(a) = &m.metrics_addr
        && metrics_socket(a).is_none()
    {
        return bad(
            "monitoring.metrics_addr",
            format!("{a:?}"),
            "give an IP address and a port from 0 to 65535 (--metrics-addr), e.g. 127.0.0.1:9464, \
             localhost:9464, [::1]:9464, or 0.0.0.0:9464 to be scraped from elsewhere; port 0 picks a free one"
                .into(),
        );
    }
    let l = m.metrics_linger_seconds;
    if !(l.is_finite() && (0.0..=3600.0).contains(&l)) {
        return bad("monitoring.metrics_linger_seconds", l.to_string(), "use 0 to 3600 seconds".into());
    }
    if let Some(e) = &m.otlp_endpoint {
        let ok = e.len() <= 2048
            && reqwest::Url::parse(e).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        if !ok {
            return bad(
                "monitoring.otlp_endpoint",
                format!("{e:?}"),
                "give the collector's OTLP/HTTP URL, e.g. http://127.0.0.1:4318 (a port from 1 to 65535; \
                 /v1/traces is added)"
                    .into(),
            );
        }
    }
    let name = &m.otlp_service_name;
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return bad("monitoring.otlp_service_name", format!("{name:?}"), "use 1 to 128 printable characters".into());
    }
    Ok(())
}

/// The most workers `cluster.workers` may name.
pub const MAX_CLUSTER_WORKERS: u32 = 10_000;

/// `cluster.*`: names NATS accepts in stream and subject names, and bounded waits.
fn check_cluster(c: &super::settings::ClusterConfig) -> Result<(), OutOfRange> {
    let ns = &c.namespace;
    if ns.is_empty() || ns.len() > 32 || !ns.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-') {
        return bad(
            "cluster.namespace",
            format!("{ns:?}"),
            "use 1 to 32 letters, digits, `_` or `-` (it names NATS streams and subjects)".into(),
        );
    }
    if !(c.lease_seconds.is_finite() && (1.0..=3600.0).contains(&c.lease_seconds)) {
        return bad("cluster.lease_seconds", c.lease_seconds.to_string(), "use 1 to 3600 seconds".into());
    }
    if !(c.shard_deadline_seconds.is_finite() && (1.0..=600.0).contains(&c.shard_deadline_seconds)) {
        let v = c.shard_deadline_seconds.to_string();
        return bad("cluster.shard_deadline_seconds", v, "use 1 to 600 seconds (shards beat twice a second)".into());
    }
    if !(1..=100).contains(&c.max_deliveries) {
        return bad("cluster.max_deliveries", c.max_deliveries.to_string(), "use 1 to 100".into());
    }
    if let Some(w) = c.workers
        && !(1..=MAX_CLUSTER_WORKERS).contains(&w)
    {
        return bad(
            "cluster.workers",
            w.to_string(),
            format!(
                "use 1 to {MAX_CLUSTER_WORKERS} (the workers sharing the provider's rate limits), or leave it unset"
            ),
        );
    }
    Ok(())
}

/// The error for `key`.
fn bad(key: &str, value: String, message: String) -> Result<(), OutOfRange> {
    Err(OutOfRange { key: key.into(), value, message })
}

/// `llm.*`: sampling, reply length, budgets and stop sequences.
fn check_llm(l: &LlmConfig) -> Result<(), OutOfRange> {
    if !(0.0..=2.0).contains(&l.temperature) {
        return bad("llm.temperature", l.temperature.to_string(), "use a value between 0.0 and 2.0".into());
    }
    if let Some(tp) = l.top_p
        && !(0.0..=1.0).contains(&tp)
    {
        return bad("llm.top_p", tp.to_string(), "use a value between 0.0 and 1.0".into());
    }
    if !(1..=MAX_REPLY_TOKENS).contains(&l.max_tokens) {
        return bad(
            "llm.max_tokens",
            l.max_tokens.to_string(),
            format!("use a number of tokens between 1 and {MAX_REPLY_TOKENS}"),
        );
    }
    if let Some(m) = l.max_cost_usd
        && !(m.is_finite() && (0.0..=MAX_COST_USD).contains(&m))
    {
        return bad(
            "llm.max_cost_usd",
            m.to_string(),
            format!("use a budget between 0 and {MAX_COST_USD} USD, or leave it unset for no budget"),
        );
    }
    if let Some(b) = l.persona_budget_tokens
        && !(64..=1_000_000).contains(&b)
    {
        return bad(
            "llm.persona_budget_tokens",
            b.to_string(),
            "use a number of tokens between 64 and 1000000, or leave it unset for a quarter of the model's context"
                .into(),
        );
    }
    for (k, v) in [("llm.requests_per_minute", l.requests_per_minute), ("llm.tokens_per_minute", l.tokens_per_minute)] {
        if v == Some(0) {
            return bad(k, "0".into(), "use a positive budget per minute, or leave it unset for none".into());
        }
    }
    if l.stop.len() > MAX_STOP_SEQUENCES {
        return bad(
            "llm.stop",
            format!("{} sequences", l.stop.len()),
            format!("use at most {MAX_STOP_SEQUENCES} stop sequences (OpenAI's and Azure's limit)"),
        );
    }
    if l.stop.iter().any(String::is_empty) {
        return bad("llm.stop", "an empty string".into(), "remove the empty stop sequence".into());
    }
    Ok(())
}

/// `llm.local.*`: the embedded model's sampling, threads and cache.
fn check_local(l: &LocalConfig) -> Result<(), OutOfRange> {
    let rp = l.repeat_penalty;
    if !(rp.is_finite() && rp > 0.0 && rp <= 10.0) {
        return bad(
            "llm.local.repeat_penalty",
            rp.to_string(),
            "use a value above 0 and at most 10 (1.0 turns it off)".into(),
        );
    }
    if l.repeat_last_n > 1_000_000 {
        return bad("llm.local.repeat_last_n", l.repeat_last_n.to_string(), "use at most 1000000 tokens".into());
    }
    if l.threads > 1024 {
        return bad("llm.local.threads", l.threads.to_string(), "use at most 1024 (0: one per free core)".into());
    }
    if l.prefix_cache_mb > 1 << 20 {
        return bad(
            "llm.local.prefix_cache_mb",
            l.prefix_cache_mb.to_string(),
            "use at most 1048576 MB (0 turns the prefix cache off)".into(),
        );
    }
    let mt = l.max_temperature;
    if !(0.0..=2.0).contains(&mt) {
        return bad("llm.local.max_temperature", mt.to_string(), "use a value between 0.0 and 2.0".into());
    }
    Ok(())
}

/// `performance.*` counts, timeouts and the backoff factor.
fn check_performance(p: &PerformanceConfig) -> Result<(), OutOfRange> {
    for (k, v) in [("performance.max_workers", p.max_workers), ("performance.batch_size", p.batch_size)] {
        if !(1..=MAX_WORKERS).contains(&v) {
            return bad(k, v.to_string(), format!("use a number between 1 and {MAX_WORKERS}"));
        }
    }
    if !(1..=MAX_PARALLEL_RUNS).contains(&p.max_parallel_runs) {
        return bad(
            "performance.max_parallel_runs",
            p.max_parallel_runs.to_string(),
            format!("use a number between 1 and {MAX_PARALLEL_RUNS}"),
        );
    }
    if p.runtime_threads > MAX_RUNTIME_THREADS {
        return bad(
            "performance.runtime_threads",
            p.runtime_threads.to_string(),
            format!("use 0 (chosen for the provider) or a number between 1 and {MAX_RUNTIME_THREADS}"),
        );
    }
    if p.max_retries > MAX_RETRIES {
        return bad(
            "performance.max_retries",
            p.max_retries.to_string(),
            format!("use at most {MAX_RETRIES} retries per call"),
        );
    }
    if p.fallback_after > MAX_RETRIES {
        return bad(
            "performance.fallback_after",
            p.fallback_after.to_string(),
            format!("use at most {MAX_RETRIES} failed attempts"),
        );
    }
    if !(p.timeout_seconds.is_finite() && p.timeout_seconds > 0.0 && p.timeout_seconds <= MAX_RUN_SECS) {
        return bad(
            "performance.timeout_seconds",
            p.timeout_seconds.to_string(),
            format!("use a positive number of seconds, at most {MAX_RUN_SECS} (7 days)"),
        );
    }
    if !(p.persona_timeout.is_finite() && p.persona_timeout > 0.0 && p.persona_timeout <= MAX_WAIT_SECS) {
        return bad(
            "performance.persona_timeout",
            p.persona_timeout.to_string(),
            format!("use a positive number of seconds, at most {MAX_WAIT_SECS} (1 hour)"),
        );
    }
    if !(p.backoff_factor.is_finite() && p.backoff_factor > 0.0 && p.backoff_factor <= MAX_BACKOFF_FACTOR) {
        return bad(
            "performance.backoff_factor",
            p.backoff_factor.to_string(),
            format!("use a positive factor, at most {MAX_BACKOFF_FACTOR}"),
        );
    }
    Ok(())
}

/// Every wait in seconds: the spacing between calls, the backoff, a Retry-After.
fn check_waits(c: &SimulationConfig) -> Result<(), OutOfRange> {
    let p = &c.performance;
    for (k, v) in [
        ("performance.rate_limit_delay", p.rate_limit_delay),
        ("performance.backoff_base", p.backoff_base),
        ("performance.backoff_max", p.backoff_max),
        ("llm.simulated.faults.retry_after_secs", c.llm.simulated.faults.retry_after_secs),
        ("llm.retry_after_max", c.llm.retry_after_max),
    ] {
        if !(v.is_finite() && (0.0..=MAX_WAIT_SECS).contains(&v)) {
            return bad(
                k,
                v.to_string(),
                format!("use zero or a positive number of seconds, at most {MAX_WAIT_SECS} (1 hour)"),
            );
        }
    }
    Ok(())
}

/// `llm.simulated.faults`: each share, and their sum.
fn check_faults(f: &FaultProfile) -> Result<(), OutOfRange> {
    for (k, v) in [
        ("llm.simulated.faults.rate_limited", f.rate_limited),
        ("llm.simulated.faults.server_error", f.server_error),
        ("llm.simulated.faults.timeout", f.timeout),
        ("llm.simulated.faults.malformed", f.malformed),
        ("llm.simulated.faults.empty", f.empty),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return bad(k, v.to_string(), "use a share between 0.0 and 1.0".into());
        }
    }
    let total = f.rate_limited + f.server_error + f.timeout + f.malformed + f.empty;
    if total > 1.0 {
        return bad("llm.simulated.faults", total.to_string(), "the fault shares add up to more than 1.0".into());
    }
    Ok(())
}

/// `llm.simulated.latency`: each figure, and that the distribution's bounds are in order.
fn check_latency(l: &LatencyModel) -> Result<(), OutOfRange> {
    let max_ms = MAX_WAIT_SECS * 1000.0;
    let ok = |v: f64| v.is_finite() && (0.0..=max_ms).contains(&v);
    let range = format!("at most {max_ms} ms (1 hour)");
    for (k, v) in [
        ("llm.simulated.latency.ms", l.ms),
        ("llm.simulated.latency.min_ms", l.min_ms),
        ("llm.simulated.latency.max_ms", l.max_ms),
        ("llm.simulated.latency.p50_ms", l.p50_ms),
        ("llm.simulated.latency.p99_ms", l.p99_ms),
    ] {
        if !ok(v) {
            return bad(k, v.to_string(), format!("use zero or more milliseconds, {range}"));
        }
    }
    match l.kind {
        LatencyKind::Uniform if l.max_ms < l.min_ms => {
            bad("llm.simulated.latency", format!("{}..{}", l.min_ms, l.max_ms), "use min_ms <= max_ms".into())
        }
        LatencyKind::LogNormal if !(l.p50_ms > 0.0 && l.p99_ms >= l.p50_ms) => bad(
            "llm.simulated.latency",
            format!("p50 {}, p99 {}", l.p50_ms, l.p99_ms),
            "use 0 < p50_ms <= p99_ms".into(),
        ),
        _ => Ok(()),
    }
}

/// `simulation.*`: turns, personas and the memory window.
fn check_simulation(s: &SimulationSettings) -> Result<(), OutOfRange> {
    if s.max_turns > MAX_TURNS {
        return bad("simulation.max_turns", s.max_turns.to_string(), format!("use at most {MAX_TURNS} turns"));
    }
    if !(1..=MAX_PERSONAS).contains(&s.max_personas) {
        return bad(
            "simulation.max_personas",
            s.max_personas.to_string(),
            format!("use a number between 1 and {MAX_PERSONAS}"),
        );
    }
    for (k, v) in [
        ("simulation.memory_prefix", s.memory_prefix),
        ("simulation.memory_recent", s.memory_recent),
        ("simulation.consolidate_every", s.consolidate_every),
    ] {
        if v > MAX_MEMORY_EVENTS {
            return bad(k, v.to_string(), format!("use at most {MAX_MEMORY_EVENTS} events"));
        }
    }
    Ok(())
}

/// `validation.*`: persona checks and the `in_character` analysis.
fn check_validation(v: &ValidationConfig) -> Result<(), OutOfRange> {
    if !(1..=MAX_QUESTIONS).contains(&v.questions) {
        return bad(
            "validation.questions",
            v.questions.to_string(),
            format!("use between 1 and {MAX_QUESTIONS} questions"),
        );
    }
    if !(v.min_score.is_finite() && (0.0..=1.0).contains(&v.min_score)) {
        return bad("validation.min_score", v.min_score.to_string(), "use a score between 0.0 and 1.0".into());
    }
    if !(1..=MAX_IN_CHARACTER_MESSAGES).contains(&v.in_character_messages) {
        return bad(
            "validation.in_character_messages",
            v.in_character_messages.to_string(),
            format!("use between 1 and {MAX_IN_CHARACTER_MESSAGES} messages"),
        );
    }
    Ok(())
}

/// `monitoring.log_level`.
fn check_log_level(level: &str) -> Result<(), OutOfRange> {
    if !matches!(level.to_uppercase().as_str(), "ERROR" | "WARN" | "WARNING" | "INFO" | "DEBUG" | "TRACE") {
        return bad("monitoring.log_level", level.to_string(), "use ERROR, WARN, INFO, DEBUG or TRACE".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_in_range() {
        assert_eq!(check(&SimulationConfig::default()), Ok(()));
    }

    #[test]
    fn huge_and_odd_numbers_are_refused_by_key() {
        type Edit = Box<dyn Fn(&mut SimulationConfig)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("performance.timeout_seconds", Box::new(|c| c.performance.timeout_seconds = 1e300)),
            ("performance.persona_timeout", Box::new(|c| c.performance.persona_timeout = 1e300)),
            ("performance.backoff_base", Box::new(|c| c.performance.backoff_base = 1e300)),
            ("performance.backoff_max", Box::new(|c| c.performance.backoff_max = f64::INFINITY)),
            ("performance.rate_limit_delay", Box::new(|c| c.performance.rate_limit_delay = 1e300)),
            ("llm.simulated.latency.ms", Box::new(|c| c.llm.simulated.latency.ms = 1e300)),
            ("llm.simulated.latency.p99_ms", Box::new(|c| c.llm.simulated.latency.p99_ms = 1e300)),
            ("llm.simulated.faults.retry_after_secs", Box::new(|c| c.llm.simulated.faults.retry_after_secs = 1e300)),
            ("simulation.max_turns", Box::new(|c| c.simulation.max_turns = u32::MAX)),
            ("performance.max_retries", Box::new(|c| c.performance.max_retries = u32::MAX)),
            ("llm.max_cost_usd", Box::new(|c| c.llm.max_cost_usd = Some(-1.0))),
            ("llm.max_cost_usd", Box::new(|c| c.llm.max_cost_usd = Some(f64::NAN))),
            ("performance.max_workers", Box::new(|c| c.performance.max_workers = usize::MAX)),
            ("performance.runtime_threads", Box::new(|c| c.performance.runtime_threads = usize::MAX)),
            ("simulation.max_personas", Box::new(|c| c.simulation.max_personas = usize::MAX)),
            ("simulation.memory_recent", Box::new(|c| c.simulation.memory_recent = usize::MAX)),
            ("validation.questions", Box::new(|c| c.validation.questions = 0)),
            ("validation.min_score", Box::new(|c| c.validation.min_score = 1.5)),
            ("validation.min_score", Box::new(|c| c.validation.min_score = f64::NAN)),
            ("validation.in_character_messages", Box::new(|c| c.validation.in_character_messages = usize::MAX)),
            ("llm.stop", Box::new(|c| c.llm.stop = vec!["x".into(); 5])),
        ];
        for (key, set) in cases {
            let mut c = SimulationConfig::default();
            set(&mut c);
            let e = check(&c).expect_err(key);
            assert_eq!(e.key, key);
            assert!(e.message.contains("at most") || e.message.contains("between"), "{e:?}");
        }
    }

    #[test]
    fn secs_never_panics() {
        for v in [f64::NAN, f64::INFINITY, -1.0, 1e300, f64::MAX, 0.0] {
            assert!(secs(v) <= Duration::from_secs_f64(MAX_RUN_SECS));
        }
        assert_eq!(secs(1.5), Duration::from_millis(1500));
    }
}
