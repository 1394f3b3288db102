//! A real Prometheus on loopback for a test: a free port, a temporary TSDB, one scrape job at a
//! 1 s interval, stopped on drop. Without `prometheus` a test skips with a note, unless
//! `TROUPE_REQUIRE_PROMETHEUS=1` (CI sets it), when it fails.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    /// `127.0.0.1:PORT` of its HTTP API.
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when `tool --version` runs; else skips with a note (or fails when required).
pub fn available(tool: &str) -> bool {
    if Command::new(tool).arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var("TROUPE_REQUIRE_PROMETHEUS").as_deref() != Ok("1"),
        "TROUPE_REQUIRE_PROMETHEUS=1 but {tool} is not installed (apt-get install prometheus)"
    );
    eprintln!("note: {tool} not found; skipping (apt-get install prometheus)");
    false
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts Prometheus scraping `target` (`127.0.0.1:PORT`) every second.
pub fn start(target: &str) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: troupe\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Prometheus { child, addr, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if get(&p.addr, "/-/ready").is_some_and(|b| b.contains("Ready")) {
            return p;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("prometheus did not become ready on {} within 30 s", p.addr);
}

impl Prometheus {
    /// The first sample of an instant query's result, if any.
    pub fn query(&self, q: &str) -> Option<f64> {
        let body = get(&self.addr, &format!("/api/v1/query?query={}", encode(q)))?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

/// One series of a range query: its labels and `(time, value)` points.
pub type Series = (serde_json::Map<String, serde_json::Value>, Vec<(f64, f64)>);

impl Prometheus {
    /// A range query (1 s steps): each series' labels and `(time, value)` points.
    pub fn query_range(&self, q: &str, start: u64, end: u64) -> Vec<Series> {
        let path = format!("/api/v1/query_range?query={}&start={start}&end={end}&step=1", encode(q));
        // A busy machine (other tests running) can make one request fail: try a few times.
        let Some(body) = (0..5).find_map(|i| {
            std::thread::sleep(Duration::from_millis(200 * i));
            get(&self.addr, &path).filter(|b| b.contains("\"status\":\"success\""))
        }) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let Some(result) = v["data"]["result"].as_array() else { return Vec::new() };
        result
            .iter()
            .map(|r| {
                let labels = r["metric"].as_object().cloned().unwrap_or_default();
                let points = r["values"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| Some((p[0].as_f64()?, p[1].as_str()?.parse::<f64>().ok()?)))
                            .filter(|p| p.1.is_finite())
                            .collect()
                    })
                    .unwrap_or_default();
                (labels, points)
            })
            .collect()
    }
}

/// `GET path`: the body when the answer is 200 (the one HTTP helper the tests share).
pub use super::cli::http_get as get;

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
