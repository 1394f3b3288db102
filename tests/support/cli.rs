//! Running the `troupe` binary from a test: one `troupe()` for every test file, with the
//! environment scrubbed of everything that would change what a run does or where its requests
//! go (see [`scrubbed`]), started in the repository's root; and a way to wait for it with a
//! deadline, so a hang fails the test instead of stalling the suite.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The repository's root.
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Environment variables a test must not inherit from the machine it runs on:
/// - `TROUPE_*`: the config's environment layer (`TROUPE_LLM__PROVIDER`, ...), the web token,
///   the model folder;
/// - `OPENAI_*`, `AZURE_*`, `ANTHROPIC_*` and any `*_API_KEY`: keys, base URLs, Azure
///   endpoints and deployments (`OPENAI_BASE_URL` alone sends every OpenAI call elsewhere);
/// - the proxy variables, which would route a test's loopback calls through another host;
/// - `RUST_LOG`, which changes what the binary prints.
pub fn scrubbed(name: &str) -> bool {
    const PREFIXES: [&str; 4] = ["TROUPE_", "OPENAI_", "AZURE_", "ANTHROPIC_"];
    const PROXIES: [&str; 3] = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"];
    PREFIXES.iter().any(|p| name.starts_with(p))
        || name.ends_with("_API_KEY")
        || PROXIES.contains(&name.to_ascii_uppercase().as_str())
        || name == "RUST_LOG"
}

/// Removes every [`scrubbed`] variable the test process has from `cmd`'s environment.
pub fn scrub(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if scrubbed(&k) {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// The `troupe` binary, in the repository's root, with a clean environment.
pub fn troupe() -> Command {
    troupe_in(Path::new(ROOT))
}

/// The `troupe` binary, in `dir`, with a clean environment.
pub fn troupe_in(dir: &Path) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("troupe"));
    c.current_dir(dir);
    scrub(&mut c);
    c
}

/// SIGTERM, then SIGKILL if `c` is still running after `limit` (a worker finishes its runs,
/// prints its tally and exits on SIGTERM).
#[cfg(unix)]
pub fn terminate(mut c: std::process::Child, limit: Duration) {
    // SAFETY: signals our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if c.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// What a finished command left.
#[derive(Debug)]
pub struct Done {
    /// Exit code (`None` when a signal ended it).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// How long it took.
    pub took: Duration,
}

impl Done {
    /// Both outputs, for assertion messages.
    pub fn both(&self) -> String {
        format!("exit {:?}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs `cmd` to the end, killing it (and failing the test) after `limit`.
pub fn run_within(cmd: &mut Command, limit: Duration) -> Done {
    let t0 = Instant::now();
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let (out, err) = (read(Box::new(out)), read(Box::new(err)));
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Done {
                code: status.code(),
                stdout: out.join().unwrap(),
                stderr: err.join().unwrap(),
                took: t0.elapsed(),
            };
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the command did not finish within {limit:?} (killed):\n--- stderr\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The run folders under `<out>/conversations`, sorted.
pub fn run_dirs(out: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(out.join("conversations"))
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// A command's resource use: wall time, CPU time (user + system) and peak memory.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Exit code (`None` when a signal ended it).
    pub code: Option<i32>,
    /// Wall time.
    pub wall: Duration,
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Peak resident memory, bytes.
    pub max_rss: u64,
}

/// Runs `cmd` (output discarded) and reports its wall time, CPU time and peak memory, read from
/// the kernel (`wait4`), so nothing but the process itself is measured.
#[cfg(unix)]
pub fn measure(cmd: &mut Command) -> Usage {
    let t0 = Instant::now();
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    usage_of(child, t0)
}

/// Waits for `child` (started at `t0`) and reports what it used, from the kernel (`wait4`).
#[cfg(unix)]
pub fn usage_of(child: std::process::Child, t0: Instant) -> Usage {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, once; `child` is not waited for elsewhere.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4 failed");
    std::mem::forget(child);
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Usage { code, wall: t0.elapsed(), cpu: tv(ru.ru_utime) + tv(ru.ru_stime), max_rss: ru.ru_maxrss as u64 * 1024 }
}

/// The address a command started with `--metrics-addr` says it serves metrics on (it prints
/// `metrics: http://ADDR/metrics` on stderr); the rest of stderr is drained.
pub fn served_metrics_addr(child: &mut std::process::Child) -> String {
    use std::io::{BufRead, BufReader};
    let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("metrics: http://") {
            let addr = rest.trim_end_matches("/metrics").to_string();
            std::thread::spawn(move || lines.for_each(drop));
            return addr;
        }
    }
    panic!("the binary never said where it serves metrics");
}

/// Waits for the first run folder's `results.json` under `out` and reads it.
pub fn wait_for_results(out: &Path, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(dir) = run_dirs(out).into_iter().next()
            && let Ok(text) = std::fs::read_to_string(dir.join("results.json"))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no results.json within {limit:?}");
}

/// `GET path` from `addr` over HTTP/1.0: the body when the answer is 200.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")).then(|| body.to_string())
}
