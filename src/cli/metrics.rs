//! `--metrics-addr` and `--metrics-linger`, which `run`, `experiment`, `stress`, `serve` and
//! `worker` share: serve Prometheus metrics while the command works.

use std::time::Duration;

use clap::Args;
use troupe_sim::config::MonitoringConfig;
use troupe_sim::monitoring::MetricsExporter;

use super::Flags;

#[derive(Debug, Clone, Default, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics while working, e.g. 127.0.0.1:9464
    /// (monitoring.metrics_addr)
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Seconds /metrics keeps serving after the work ends, so a scraper sees the final figures
    /// (monitoring.metrics_linger_seconds)
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub metrics_linger: Option<f64>,
}

impl MetricsArgs {
    /// Puts these flags into the command line's config layer.
    pub fn apply(&self, f: &mut Flags) {
        f.monitoring.metrics_addr = self.metrics_addr.clone();
        f.monitoring.metrics_linger_seconds = self.metrics_linger;
    }
}

/// Starts serving when `monitoring.metrics_addr` is set.
pub async fn start(m: &MonitoringConfig) -> anyhow::Result<Option<MetricsExporter>> {
    let Some(addr) = &m.metrics_addr else {
        if m.metrics_linger_seconds > 0.0 {
            eprintln!("note: monitoring.metrics_linger_seconds (--metrics-linger) does nothing without --metrics-addr");
        }
        return Ok(None);
    };
    let linger = Duration::from_secs_f64(m.metrics_linger_seconds.clamp(0.0, 3600.0));
    let e = MetricsExporter::start(addr, linger).await?;
    eprintln!("metrics: http://{}/metrics", e.local_addr());
    Ok(Some(e))
}

/// Lingers (when asked to), then stops serving.
pub async fn finish(e: Option<MetricsExporter>) {
    if let Some(e) = e {
        e.finish().await;
    }
}
