//! `troupe serve`: the web app.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;
use troupe_sim::config::MonitoringConfig;
use troupe_sim::web::security::is_loopback;
use troupe_sim::web::state::random_token;
use troupe_sim::web::{AppState, LogBuffer, ServeLimits, ServeSettings};

use super::{GlobalArgs, UsageError};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; any address outside loopback (127.0.0.0/8, ::1) requires the access
    /// token
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    pub bind: SocketAddr,
    /// Access token every request must carry (16 characters or more). Other users of this
    /// machine see it in the process list (ps): prefer --token-file or the TROUPE_WEB_TOKEN
    /// environment variable [default: TROUPE_WEB_TOKEN, else a random one, printed once, when
    /// bound beyond loopback]
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// File holding the access token (surrounding whitespace ignored); keep it private
    /// (chmod 600)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Folder of scenario files the New run page offers
    #[arg(long, default_value = "scenarios", value_name = "DIR")]
    pub scenarios: PathBuf,
    /// Seconds a client has to send a request's headers (also how long an idle kept-alive
    /// connection stays open)
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = seconds)]
    pub header_timeout: Duration,
    /// Seconds a request body may pause before the request ends with 408
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = seconds)]
    pub body_timeout: Duration,
    /// Connections served at once; more wait their turn (lowered to fit the open-file limit)
    #[arg(long, default_value = "256", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections: u32,
    /// Runs going at once; starting one more answers 429 until one ends
    #[arg(long, default_value = "4", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_runs: u32,
    #[command(flatten)]
    pub metrics: super::metrics::MetricsArgs,
}

/// The token given, and where from: `--token-file`, else `--token`, else `TROUPE_WEB_TOKEN`
/// (`env`); blank counts as none. A token file others may read is used, with a warning.
fn given_token(a: &ServeArgs, env: Option<String>) -> Result<Option<(String, String)>, UsageError> {
    if let Some(path) = &a.token_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            UsageError(format!("--token-file {}: cannot read it ({e}); give a file holding the token", path.display()))
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(UsageError(format!(
                "--token-file {}: the file is empty; put the token (16 characters or more) in it",
                path.display()
            )));
        }
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o044 != 0 {
                eprintln!(
                    "warning: --token-file {p} is readable by other users of this machine; make it private \
                     with `chmod 600 {p}`",
                    p = path.display()
                );
            }
        }
        return Ok(Some((format!("--token-file {}", path.display()), token.to_string())));
    }
    let from_flag = a.token.as_deref().map(|t| ("--token", t));
    let from_env = env.as_deref().map(|t| ("TROUPE_WEB_TOKEN", t));
    Ok(from_flag
        .or(from_env)
        .map(|(from, t)| (from, t.trim()))
        .filter(|(_, t)| !t.is_empty())
        .map(|(from, t)| (from.to_string(), t.to_string())))
}

/// A positive number of seconds, at most an hour.
fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of seconds; e.g. 10 or 0.5"))?;
    if !(v.is_finite() && v > 0.0 && v <= 3600.0) {
        return Err(format!("`{s}`: use more than 0 and at most 3600 seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// File descriptors kept for everything but clients: runs' journals and files, provider
/// connections, the runtime.
const FD_RESERVE: u64 = 32;

/// The connection cap that fits the open-file limit `nofile`, and a note when it is lowered.
fn fit_connections(wanted: usize, nofile: Option<u64>) -> (usize, Option<String>) {
    let Some(nofile) = nofile else { return (wanted, None) };
    let room = nofile.saturating_sub(FD_RESERVE).max(nofile / 2).max(1);
    if wanted as u64 <= room {
        return (wanted, None);
    }
    let fit = room as usize;
    let note = format!(
        "note: the open-file limit is {nofile}, so at most {fit} connections are served at once instead of \
         {wanted}; raise it with `ulimit -n {}` before `troupe serve`",
        (wanted as u64 + FD_RESERVE).next_power_of_two()
    );
    (fit, Some(note))
}

/// The soft limit on open files, where there is one.
fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit only writes the struct it is given.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        if rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY {
            #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every Unix
            return Some(lim.rlim_cur as u64);
        }
    }
    None
}

pub fn run(g: &GlobalArgs, a: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut flags = super::Flags::default();
    a.metrics.apply(&mut flags);
    let loaded = super::load_config(g, None, &flags)?;
    let logs = LogBuffer::default();
    init_logging(&loaded.config.monitoring, &logs)?;
    let generated;
    let given = given_token(&a, std::env::var("TROUPE_WEB_TOKEN").ok())?;
    let token = match given {
        Some((from, t)) if t.len() < 16 => {
            return Err(
                UsageError(format!("{from}: use at least 16 characters (or give no token for a random one)")).into()
            );
        }
        Some((_, t)) => {
            generated = false;
            Some(t)
        }
        None if is_loopback(a.bind.ip()) => {
            generated = false;
            None
        }
        None => {
            generated = true;
            Some(random_token(24))
        }
    };
    let (max_connections, note) = fit_connections(a.max_connections as usize, open_file_limit());
    if let Some(n) = note {
        eprintln!("{n}");
    }
    let limits = ServeLimits {
        header_timeout: a.header_timeout,
        body_timeout: a.body_timeout,
        max_connections,
        max_runs: a.max_runs as usize,
        ..ServeLimits::default()
    };
    super::block_on(async move {
        let state = AppState::new(ServeSettings {
            loaded,
            access_token: token.clone(),
            logs,
            scenarios_dir: a.scenarios,
            limits,
        })?;
        let listener = tokio::net::TcpListener::bind(a.bind).await.with_context(|| {
            format!("cannot listen on {}; is another server using the port? try --bind 127.0.0.1:0", a.bind)
        })?;
        let addr = listener.local_addr()?;
        eprintln!("troupe web app: http://{addr}/  (Ctrl-C stops it)");
        match (&token, generated) {
            (Some(t), true) => eprintln!("access token (shown once): open http://{addr}/?token={t}"),
            (Some(_), false) => eprintln!("access token required: open http://{addr}/?token=YOUR_TOKEN"),
            (None, _) => {}
        }
        let app = state.clone();
        let exporter = super::metrics::start(&app.config().monitoring).await?;
        troupe_sim::web::serve(listener, state, async {
            // Ctrl-C and SIGTERM (systemd, a container runtime) stop it the same way.
            let mut term = super::Terminate::new();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await
        .context("the web server failed")?;
        save_live_runs(&app).await;
        super::metrics::finish(exporter).await;
        Ok(ExitCode::SUCCESS)
    })?
}

/// Stops the runs still going and waits (a little) for each to save its results, as a run in a
/// terminal does on Ctrl-C: a server stopped mid-run loses nothing its journal holds.
async fn save_live_runs(st: &AppState) {
    let running: Vec<_> = st.live_runs().into_iter().filter(|r| r.is_running()).collect();
    if running.is_empty() {
        return;
    }
    eprintln!("stopping: saving {} run(s) still going", running.len());
    for r in &running {
        r.cancel();
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while running.iter().any(|r| r.is_running()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Logs to stderr at `monitoring.log_level` (or `RUST_LOG`), and into the ring buffer the
/// Settings page shows, at debug for troupe itself.
/// Traces, when exported, are flushed at exit (`logging::flush_traces`).
fn init_logging(m: &MonitoringConfig, logs: &LogBuffer) -> anyhow::Result<()> {
    let level = match m.log_level.to_uppercase().as_str() {
        "WARNING" => "warn".to_string(),
        other => other.to_lowercase(),
    };
    let stderr_filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("{level},ractor=warn")));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(stderr_filter);
    let ring = logs.layer().with_filter(EnvFilter::new("info,troupe_sim=debug,ractor=warn"));
    let (otel, traces) = super::logging::trace_layer(m)?;
    let _ = tracing_subscriber::registry().with(stderr).with(ring).with(otel).try_init();
    super::logging::keep_traces(traces);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_fits_the_file_limit() {
        assert_eq!(fit_connections(256, None), (256, None));
        assert_eq!(fit_connections(256, Some(1024)), (256, None));
        let (n, note) = fit_connections(256, Some(64));
        assert_eq!(n, 32);
        assert!(note.is_some_and(|t| t.contains("ulimit -n 512")));
        assert_eq!(fit_connections(256, Some(10)).0, 5);
        assert_eq!(fit_connections(256, Some(0)).0, 1);
    }

    #[derive(Debug, clap::Parser)]
    struct Cmd {
        #[command(flatten)]
        a: ServeArgs,
    }

    fn args(argv: &[&str]) -> Result<ServeArgs, clap::Error> {
        use clap::Parser;
        Cmd::try_parse_from(std::iter::once("serve").chain(argv.iter().copied())).map(|c| c.a)
    }

    #[test]
    fn the_token_comes_from_the_file_the_flag_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  from-the-file-0123456789\n").unwrap();
        let f = file.display().to_string();
        let env = || Some("from-the-env-0123456789".to_string());
        let got = |argv: &[&str], env: Option<String>| given_token(&args(argv).unwrap(), env).unwrap().map(|t| t.1);
        assert_eq!(got(&["--token-file", &f], env()).as_deref(), Some("from-the-file-0123456789"));
        assert_eq!(got(&["--token", "from-the-flag-0123456789"], env()).as_deref(), Some("from-the-flag-0123456789"));
        assert_eq!(got(&[], env()).as_deref(), Some("from-the-env-0123456789"));
        assert_eq!(got(&[], Some("  ".into())), None);
        assert_eq!(got(&[], None), None);
        assert!(args(&["--token", "x", "--token-file", &f]).is_err(), "one or the other");
        std::fs::write(&file, "\n").unwrap();
        let err = given_token(&args(&["--token-file", &f]).unwrap(), None).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let missing = dir.path().join("missing").display().to_string();
        let err = given_token(&args(&["--token-file", &missing]).unwrap(), None).unwrap_err();
        assert!(err.to_string().contains(&missing), "{err}");
    }

    #[test]
    fn seconds_are_positive_and_bounded() {
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "nan", "inf", "x", "3601"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }
}
