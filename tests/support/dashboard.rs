//! Renders the Grafana dashboard's panels (`config/grafana/troupe.json`) from a real
//! Prometheus: each query asked over a time range through its HTTP API and drawn as SVG lines
//! in a static HTML page, which headless Chromium turns into a PNG. Not Grafana, but the same
//! queries over the same data, so the picture shows what the dashboard would.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::Path;

use super::prometheus::Prometheus;

const COLOURS: [&str; 6] = ["#2f6fdf", "#e0702a", "#2a9d5b", "#c0392b", "#8e44ad", "#7f8c8d"];

/// Writes `index.html` (and, with Chromium at `chromium`, `dashboard.png`) into `out`, over the
/// last `seconds` of data. Returns how many series were drawn.
pub fn render(
    prom: &Prometheus,
    dashboard: &serde_json::Value,
    seconds: u64,
    out: &Path,
    chromium: Option<&str>,
) -> usize {
    std::fs::create_dir_all(out).unwrap();
    let end = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let start = end - seconds;
    let mut html = String::from(
        "<!doctype html><meta charset=utf-8><title>troupe-sim dashboard</title><style>body{font:13px sans-serif;\
         background:#111217;color:#ccd;margin:12px}h1{font-size:16px}.g{display:grid;grid-template-columns:1fr 1fr;\
         gap:10px}.p{background:#181b1f;border:1px solid #2c3235;padding:8px}.p h2{font-size:13px;margin:0 0 4px}\
         .l span{margin-right:10px}.stat{font-size:28px;margin:30px 0}</style><h1>troupe-sim (config/grafana/troupe.json)\
         </h1><div class=g>",
    );
    let mut drawn = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap_or("");
        let mut series = Vec::new();
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let legend = t["legendFormat"].as_str().unwrap_or("");
            for (labels, points) in prom.query_range(expr, start, end) {
                let name = legend_of(legend, &labels);
                series.push((name, points));
            }
        }
        drawn += series.len();
        let _ = write!(html, "<div class=p><h2>{}</h2>", escape(title));
        if panel["type"] == "stat" {
            for (name, pts) in &series {
                let v = pts.last().map_or(0.0, |p| p.1);
                let _ = write!(html, "<div class=stat>{} <small>{}</small></div>", short(v), escape(name));
            }
        } else {
            html.push_str(&chart(&series));
        }
        html.push_str("</div>");
    }
    html.push_str("</div>");
    let page = out.join("index.html");
    std::fs::write(&page, html).unwrap();
    if let Some(c) = chromium {
        let status = std::process::Command::new(c)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1300,1900"])
            .arg(format!("--screenshot={}", out.join("dashboard.png").display()))
            .arg(format!("file://{}", page.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "chromium could not take the dashboard's screenshot");
    }
    drawn
}

fn legend_of(format: &str, labels: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut s = format.to_string();
    for (k, v) in labels {
        s = s.replace(&format!("{{{{{k}}}}}"), v.as_str().unwrap_or(""));
    }
    s
}

fn chart(series: &[(String, Vec<(f64, f64)>)]) -> String {
    let (w, h) = (600.0, 200.0);
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut t0, mut t1, mut hi) = (f64::MAX, f64::MIN, 0.0f64);
    for (t, v) in pts {
        t0 = t0.min(*t);
        t1 = t1.max(*t);
        hi = hi.max(*v);
    }
    let mut svg = format!("<svg width={w} height={} viewBox='0 0 {w} {}'>", h + 14.0, h + 14.0);
    let _ =
        write!(svg, "<line x1=0 y1={h} x2={w} y2={h} stroke='#444'/><text x=2 y=11 fill='#889'>{}</text>", short(hi));
    if t1 > t0 && hi > 0.0 {
        for (i, (_, pts)) in series.iter().enumerate() {
            let line: Vec<String> = pts
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", (t - t0) / (t1 - t0) * w, h - v / hi * (h - 14.0)))
                .collect();
            let _ = write!(
                svg,
                "<polyline fill=none stroke='{}' stroke-width=2 points='{}'/>",
                COLOURS[i % COLOURS.len()],
                line.join(" ")
            );
        }
        let _ = write!(svg, "<text x=2 y={} fill='#889'>{:.0} s</text>", h + 12.0, t1 - t0);
    } else {
        let _ = write!(svg, "<text x={} y={} fill='#889'>no data</text>", w / 2.0 - 25.0, h / 2.0);
    }
    svg.push_str("</svg><div class=l>");
    for (i, (name, _)) in series.iter().enumerate() {
        let _ = write!(svg, "<span style='color:{}'>&#9632; {}</span>", COLOURS[i % COLOURS.len()], escape(name));
    }
    svg.push_str("</div>");
    svg
}

fn short(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v.abs() >= 1.0 || v == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
