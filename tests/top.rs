//! `troupe top` as a person sees it: the binary runs in a detached tmux session of a fixed size
//! (its own server socket, so nothing else's tmux is touched) and the tests read the pane as
//! text. One watches a simulated run to its end and checks the view against `results.json`,
//! then quits with `q` and checks the terminal was given back; others point it at a closed
//! port and at something that is not a metrics endpoint. Without tmux they skip with a note,
//! unless `TROUPE_REQUIRE_TMUX=1` (CI sets it), when they fail.

mod support {
    pub mod cli;
    pub mod prometheus;
}

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::cli::{ROOT, scrub, troupe};
use support::prometheus::{free_port, get};
use troupe_sim::monitoring::scrape::Scrape;

/// True when tmux runs; else skips with a note (or fails when required).
fn tmux_available() -> bool {
    if Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(
        std::env::var("TROUPE_REQUIRE_TMUX").as_deref() != Ok("1"),
        "TROUPE_REQUIRE_TMUX=1 but tmux is not installed (apt-get install tmux)"
    );
    eprintln!("note: tmux not found; skipping (apt-get install tmux)");
    false
}

/// A detached tmux session on a server of its own, killed (and its socket file removed) on drop.
struct Tmux {
    socket: String,
    session: String,
    socket_path: Option<String>,
}

impl Tmux {
    /// Starts `script` (run by `sh -c`, in the repository's root) in a 120x40 session.
    fn start(script: &str) -> Tmux {
        static N: AtomicUsize = AtomicUsize::new(0);
        let id = format!("troupe-top-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let mut t = Tmux { socket: id.clone(), session: id, socket_path: None };
        let out = t
            .cmd()
            .args(["new-session", "-d", "-s", &t.session, "-x", "120", "-y", "40", "-c", ROOT])
            .args(["sh", "-c", script])
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
        let path = t.cmd().args(["display-message", "-p", "#{socket_path}"]).output().unwrap();
        t.socket_path = Some(String::from_utf8_lossy(&path.stdout).trim().to_string()).filter(|p| !p.is_empty());
        t
    }

    /// tmux on this session's server, with no config file and a scrubbed environment (the
    /// server, and so `troupe top`, inherits it).
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        scrub(&mut c);
        c.env_remove("TMUX").env("TERM", "xterm-256color");
        c.args(["-f", "/dev/null", "-L", &self.socket]);
        c
    }

    /// The pane's text now (empty once the session ended).
    fn pane(&self) -> String {
        let out = self.cmd().args(["capture-pane", "-p", "-t", &self.session]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the pane satisfies `ok`, failing with the last pane after `limit`.
    fn wait_for(&self, limit: Duration, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        let mut pane = String::new();
        while Instant::now() < deadline {
            pane = self.pane();
            if ok(&pane) {
                return pane;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the pane did not show {what} within {limit:?}:\n{pane}");
    }

    fn keys(&self, keys: &str) {
        let out = self.cmd().args(["send-keys", "-t", &self.session, keys]).output().unwrap();
        assert!(out.status.success(), "tmux send-keys: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn alive(&self) -> bool {
        self.cmd().args(["has-session", "-t", &self.session]).output().is_ok_and(|o| o.status.success())
    }

    /// Waits for the session to end (its command exited).
    fn ended_within(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !self.alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
        // tmux leaves its socket file behind.
        if let Some(p) = &self.socket_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `troupe top --metrics-addr ADDR` and, after it, one line with its exit status and whether
/// the terminal is back in cooked mode (raw mode turns `icanon` off), kept on screen for a few
/// seconds.
fn top_script(addr: &str) -> String {
    let bin = assert_cmd::cargo::cargo_bin("troupe");
    let bin = bin.to_string_lossy().replace('\'', r"'\''");
    format!(
        "'{bin}' top --metrics-addr {addr}; code=$?; \
         if stty -a | grep -q -- -icanon; then t='left raw'; else t=cooked; fi; \
         echo \"top exited $code, terminal $t\"; sleep 3"
    )
}

/// The brief's simulated run: 5 personas x 8 turns at 300 ms a call, `/metrics` on any port.
fn start_run(out: &Path) -> Child {
    troupe()
        .args(["run", "scenarios/product_launch.ron", "-q", "--rate-limit-delay", "0", "--turns", "8"])
        .arg("--output-dir")
        .arg(out)
        .args(["--metrics-addr", "127.0.0.1:0", "--metrics-linger", "60"])
        .args(["--set", "llm.provider=simulated"])
        .args(["--set", "llm.simulated.latency.kind=fixed", "--set", "llm.simulated.latency.ms=300"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The words after `label` on the first pane line holding it.
fn after<'a>(pane: &'a str, label: &str) -> Vec<&'a str> {
    let Some(line) = pane.lines().find(|l| l.contains(label)) else { return Vec::new() };
    let rest = &line[line.find(label).unwrap() + label.len()..];
    rest.split(['│', ' ']).filter(|w| !w.is_empty()).collect()
}

fn first_number(pane: &str, label: &str) -> Option<f64> {
    after(pane, label).first()?.parse().ok()
}

/// `497.5ms` as seconds.
fn duration(text: &str) -> Option<f64> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse::<f64>().ok().map(|v| v / 1e3);
    }
    text.strip_suffix('s')?.parse().ok()
}

#[test]
fn top_follows_a_simulated_run_to_its_end_and_quits_on_q() {
    if !tmux_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut run = start_run(tmp.path());
    let addr = support::cli::served_metrics_addr(&mut run);
    let tmux = Tmux::start(&top_script(&addr));
    tmux.wait_for(Duration::from_secs(30), "the run going", |p| p.contains("calls total") && p.contains("live"));
    let results = support::cli::wait_for_results(tmp.path(), Duration::from_secs(120));
    let calls = results["metrics"]["api_calls"].as_f64().unwrap();
    assert!(calls >= 40.0, "5 personas x 8 turns make at least 40 calls: {calls}");
    let pane = tmux.wait_for(Duration::from_secs(30), "the finished run's calls", |p| {
        first_number(p, "calls total") == Some(calls) && p.contains("completed 1")
    });

    assert!(pane.contains(&format!("troupe top   {addr}")), "{pane}");
    assert!(after(&pane, "calls/s").first().is_some_and(|v| v.ends_with("/s")), "{pane}");
    assert_eq!(first_number(&pane, "running"), Some(0.0), "{pane}");
    assert_eq!(first_number(&pane, "errors total"), results["metrics"]["errors"].as_f64(), "{pane}");
    assert_eq!(first_number(&pane, "429s"), Some(0.0), "{pane}");
    // The overall latency row: p50, p90, p99, mean, calls (then the next panel's words). The
    // p99 is histogram_quantile's over what is served (final now: the run is over), and every
    // call took 300 ms or more, so it lies above the 0.25 s bound.
    let overall = after(&pane, "overall");
    assert!(overall.len() >= 5, "{pane}");
    let p99 = duration(overall[2]).unwrap_or_else(|| panic!("p99 {:?}\n{pane}", overall[2]));
    let served = get(&addr, "/metrics").expect("/metrics answers during the linger");
    let hist = Scrape::parse(&served).unwrap().histogram("troupe_llm_request_duration_seconds").unwrap();
    let want = hist.quantile(0.99).unwrap();
    assert!((p99 - want).abs() < 1e-4 && p99 >= 0.25, "p99 {p99} on screen, {want} from /metrics\n{pane}");
    assert_eq!(overall[4].parse::<f64>().ok(), Some(calls), "{pane}");
    assert!(pane.contains("latency buckets") && pane.contains("500ms"), "{pane}");
    assert_eq!(first_number(&pane, "messages total"), Some(results["transcript"].as_array().unwrap().len() as f64));
    // The last line said is the last of the transcript.
    let last = results["transcript"].as_array().unwrap().last().unwrap();
    let said = troupe_sim::text::one_line(last["text"].as_str().unwrap(), 12);
    let said = said.trim_end_matches('…');
    assert!(pane.contains(last["speaker"].as_str().unwrap()) && pane.contains(said), "{said:?}\n{pane}");

    tmux.keys("q");
    let after_quit = tmux.wait_for(Duration::from_secs(10), "top's exit", |p| p.contains("top exited"));
    assert!(after_quit.contains("top exited 0, terminal cooked"), "{after_quit}");
    assert!(!after_quit.contains("calls total"), "the alternate screen was not left: {after_quit}");
    assert!(tmux.ended_within(Duration::from_secs(15)), "the tmux session did not end");
    support::cli::terminate(run, Duration::from_secs(20));
}

#[test]
fn top_waits_for_a_closed_port_and_quits_on_escape() {
    if !tmux_available() {
        return;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let tmux = Tmux::start(&top_script(&addr));
    // Before the first scrape's answer the line also says "waiting for"; after it, why and when.
    tmux.wait_for(Duration::from_secs(30), "waiting", |p| {
        p.contains(&format!("waiting for {addr} (")) && p.contains("retrying every 1.00s")
    });
    std::thread::sleep(Duration::from_millis(2500));
    assert!(tmux.pane().contains("waiting for"), "still waiting after a few tries");
    tmux.keys("Escape");
    let after_quit = tmux.wait_for(Duration::from_secs(10), "top's exit", |p| p.contains("top exited"));
    assert!(after_quit.contains("top exited 0, terminal cooked"), "{after_quit}");
}

#[test]
fn top_shows_an_error_line_for_what_is_not_a_metrics_endpoint() {
    if !tmux_available() {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n<html><body>a web page</body></html>\n");
        }
    });
    let tmux = Tmux::start(&top_script(&addr));
    let pane = tmux.wait_for(Duration::from_secs(30), "an error", |p| p.contains("error: line 1 of the metrics"));
    assert!(pane.contains("calls total"), "the view stays up: {pane}");
    tmux.keys("q");
    let after_quit = tmux.wait_for(Duration::from_secs(10), "top's exit", |p| p.contains("top exited"));
    assert!(after_quit.contains("top exited 0, terminal cooked"), "{after_quit}");
}

#[test]
fn top_needs_a_terminal_and_checks_its_flags() {
    let out = troupe().args(["top", "--metrics-addr", "127.0.0.1:9"]).stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("terminal"), "{err}");
    let out = troupe().args(["top", "--interval", "0"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--interval 0") && err.contains("0.1 to 60"), "{err}");
    let out = troupe().args(["top", "--metrics-addr", "localhost"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("host:port"), "{err}");
}
