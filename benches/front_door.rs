//! The front door: the release `troupe` binary run the way a user runs it (a scenario file, the
//! whole process, results saved), timed by the kernel (`wait4`: wall, user + system CPU, peak
//! RSS). Every figure in the README's Performance table comes from here.
//!
//! ```text
//! cargo bench --bench front_door                       # everything (1M personas: about 1 min, 6 GB)
//! FRONT_DOOR=1k,10k,http cargo bench --bench front_door # a subset
//! ```
//!
//! Workloads (simulated provider at 0 ms unless HTTP; the population of
//! `tests/support/population.rs`, the same generator the growth test uses):
//! - `panel`: 100 personas x 20 turns, everyone hears everyone, saving on: CPU per call.
//! - `1k`, `10k`: personas x 3 turns on a ring graph of degree 8, everyone acting.
//! - `10k5`, `100k`: x 3 turns, degree 8, 5% acting each turn (weighted by a persona field): the
//!   growth from 10k to 100k at the same shape.
//! - `1m`: 1,000,000 personas x 1 turn, degree 8, 1% acting.
//! - `metrics`: 100 personas x 100 turns (10,000 calls) with and without `--metrics-addr`,
//!   scraped every 100 ms while it runs (a Prometheus scrapes every 15 s by default): what
//!   exporting costs per call, as the median of 12 alternating pairs (`FRONT_DOOR_PAIRS`): this
//!   machine's noise between two runs is larger than the cost.
//! - `traces`: the same 10,000 calls with and without `monitoring.otlp_endpoint`, exported to an
//!   OTLP/HTTP receiver in this bench process: what tracing costs per call, as the median of 12
//!   alternating pairs (`FRONT_DOOR_PAIRS`).
//! - `sharded`: 100,000 personas x 3 turns, degree 8, everyone acting, over 3 `troupe shard`
//!   processes and a `nats-server -js` on this machine, then the same run in one process: the
//!   coordinator's wall time, CPU per persona-turn and bytes sent per persona-turn, and the
//!   shards' CPU (all on the same 2 cores, so the wall time is the whole machine's work).
//! - `http`: 50 personas x 60 turns = 3,000 calls against a loopback OpenAI-compatible mock
//!   served by a process of its own (its CPU is not counted), with and without saving (median
//!   of 7 runs each); and bare reqwest on one tokio worker making 3,000 requests (50 at a
//!   time) from a child process, the floor: once with 300-byte bodies, once with bodies the
//!   size troupe sent.

#[path = "../tests/support/cli.rs"]
mod cli;
#[path = "../tests/support/mock_openai.rs"]
mod mock_openai;
#[path = "../tests/support/nats.rs"]
mod nats;
#[path = "../tests/support/otlp.rs"]
mod otlp;
#[path = "../tests/support/population.rs"]
mod population;

use std::path::Path;
use std::time::Duration;

use cli::{Usage, measure, troupe};
use population::{Shape, write};

/// The request bare reqwest sends: the shape of a persona's act request.
const BARE_ENV: &str = "FRONT_DOOR_BARE_URL";
/// `system,user`: the mean lengths of the system and user messages troupe sent, so the floor
/// sends bodies of the same size (unset: the 300-byte request the issue was measured with).
const BARE_SIZES_ENV: &str = "FRONT_DOOR_BARE_SIZES";
const HTTP_PERSONAS: usize = 50;
const HTTP_TURNS: u32 = 60;
/// Rounds of the `http` workload's four commands (`FRONT_DOOR_ROUNDS` changes it).
const HTTP_ROUNDS: usize = 9;

fn main() {
    if std::env::var_os("FRONT_DOOR_MOCK").is_some() {
        serve_mock();
        return;
    }
    if let Ok(url) = std::env::var(BARE_ENV) {
        let sizes = std::env::var(BARE_SIZES_ENV).ok().and_then(|v| {
            let (a, b) = v.split_once(',')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        });
        bare_reqwest(&url, HTTP_PERSONAS * HTTP_TURNS as usize, HTTP_PERSONAS, sizes);
        return;
    }
    let only = std::env::var("FRONT_DOOR").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o.split(',').any(|w| w.trim() == name));
    let tmp = tempfile::tempdir().expect("a temporary folder");
    println!("front door: the release troupe binary, whole process, saving on; {}", machine());
    println!("| workload | calls | wall | CPU (user+sys) | peak RSS | CPU per call |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let mut growth = (None, None);
    let shapes: [(&str, Shape); 6] = [
        ("panel", Shape { n: 100, turns: 20, degree: None, active: None, policy: "Parallel" }),
        ("1k", Shape { n: 1_000, turns: 3, degree: Some(8), active: None, policy: "Parallel" }),
        ("10k", Shape { n: 10_000, turns: 3, degree: Some(8), active: None, policy: "Parallel" }),
        ("10k5", Shape { n: 10_000, turns: 3, degree: Some(8), active: Some(0.05), policy: "Parallel" }),
        ("100k", Shape { n: 100_000, turns: 3, degree: Some(8), active: Some(0.05), policy: "Parallel" }),
        ("1m", Shape { n: 1_000_000, turns: 1, degree: Some(8), active: Some(0.01), policy: "Parallel" }),
    ];
    for (name, shape) in shapes {
        if !wanted(name) {
            continue;
        }
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let pop = write(&dir, shape);
        let runs = if shape.n >= 100_000 { 1 } else { 3 };
        let u = best_of(runs, || {
            let out = dir.join("out");
            let _ = std::fs::remove_dir_all(&out);
            let mut c = troupe();
            c.arg("run").arg(&pop.scenario).arg("-q").arg("--output-dir").arg(&out);
            c
        });
        let calls = calls_of(shape);
        row(&format!("{name}: {} personas x {} turns{}", shape.n, shape.turns, describe(shape)), calls, u);
        match name {
            "10k5" => growth.0 = Some(u),
            "100k" => growth.1 = Some(u),
            _ => {}
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let (Some(a), Some(b)) = growth {
        println!(
            "figure: growth 10k -> 100k personas (3 turns, degree 8, 5% acting): wall {:.1}x, CPU {:.1}x",
            b.wall.as_secs_f64() / a.wall.as_secs_f64(),
            b.cpu.as_secs_f64() / a.cpu.as_secs_f64()
        );
    }
    if wanted("metrics") {
        metrics_overhead(tmp.path());
    }
    if wanted("traces") {
        traces_overhead(tmp.path());
    }
    if wanted("sharded") {
        sharded(tmp.path());
    }
    if wanted("http") {
        http(tmp.path());
    }
}

/// CPU seconds a live process has used so far (`/proc/PID/stat`, user + system).
fn cpu_so_far(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// 100,000 personas x 3 turns over 3 shards, and the same in one process.
fn sharded(dir: &Path) {
    let Some(n) = nats::start() else { return };
    let dir = dir.join("sharded");
    std::fs::create_dir_all(&dir).unwrap();
    let shape = Shape { n: 100_000, turns: 3, degree: Some(8), active: None, policy: "Parallel" };
    let pop = write(&dir, shape);
    let acts = calls_of(shape);
    let shards: Vec<std::process::Child> = (1..=3)
        .map(|i| {
            let mut c = troupe();
            c.args(["shard", "--nats", &n.url, "--id", &format!("bench{i}")]).env("TROUPE_LLM__PROVIDER", "simulated");
            c.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            c.spawn().unwrap()
        })
        .collect();
    for save in [true, false] {
        let err = dir.join("coordinator.log");
        let mut c = run_saving(&pop.scenario, &dir.join("out-sharded"));
        c.args(["--policy", "parallel", "--cluster", &n.url, "--shards", "3"]);
        if !save {
            c.arg("--no-save");
        }
        c.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
        c.stderr(std::fs::File::create(&err).unwrap());
        let before: f64 = shards.iter().map(|s| cpu_so_far(s.id())).sum();
        let t0 = std::time::Instant::now();
        let u = cli::usage_of(c.spawn().unwrap(), t0);
        let shard_cpu = shards.iter().map(|s| cpu_so_far(s.id())).sum::<f64>() - before;
        let log = std::fs::read_to_string(&err).unwrap_or_default();
        assert_eq!(u.code, Some(0), "the sharded run failed:\n{log}");
        let saving = if save { "saving on" } else { "--no-save" };
        row(
            &format!(
                "sharded: {} personas x {} turns, degree 8, 3 shards, coordinator, {saving}",
                shape.n, shape.turns
            ),
            acts,
            u,
        );
        let sent = log.split(" bytes per persona act").next().and_then(|l| l.rsplit('(').next()).unwrap_or("?");
        println!(
            "figure: sharded ({saving}): coordinator CPU per persona-turn {:.1} µs, bytes sent per persona-turn {sent}, shards' CPU {:.1} s ({:.1} µs per persona-turn)",
            u.cpu.as_secs_f64() * 1e6 / acts as f64,
            shard_cpu,
            shard_cpu * 1e6 / acts as f64
        );
    }
    for s in shards {
        cli::terminate(s, Duration::from_secs(10));
    }
    let one = best_of(1, || run_saving(&pop.scenario, &dir.join("out-one")));
    row(
        &format!("the same in one process: {} personas x {} turns, degree 8, saving on", shape.n, shape.turns),
        acts,
        one,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The panel at 100 turns (10,000 calls) in `dir/name`: the folder, the population, the calls.
fn long_panel(dir: &Path, name: &str) -> (std::path::PathBuf, population::Population, u64) {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let shape = Shape { n: 100, turns: 100, degree: None, active: None, policy: "Parallel" };
    let pop = write(&dir, shape);
    (dir, pop, calls_of(shape))
}

/// `troupe run SCENARIO -q --output-dir OUT`, `OUT` emptied first.
fn run_saving(scenario: &Path, out: &Path) -> std::process::Command {
    let _ = std::fs::remove_dir_all(out);
    let mut c = troupe();
    c.arg("run").arg(scenario).arg("-q").arg("--output-dir").arg(out);
    c
}

/// The panel at 100 turns, alternately without and with its spans exported over OTLP: the median
/// difference over `FRONT_DOOR_PAIRS` pairs (12), and the least CPU of each.
fn traces_overhead(dir: &Path) {
    let (dir, pop, calls) = long_panel(dir, "traces");
    let rx = otlp::start_counting();
    let cmd = |traced: bool| {
        let mut c = run_saving(&pop.scenario, &dir.join("out"));
        if traced {
            c.args(["--set", &format!("monitoring.otlp_endpoint={}", rx.endpoint)]);
        }
        c
    };
    let pairs: usize = std::env::var("FRONT_DOOR_PAIRS").ok().and_then(|p| p.parse().ok()).unwrap_or(12);
    let per = |u: Usage| u.cpu.as_secs_f64() * 1e6 / calls as f64;
    let (mut off, mut on, mut diffs) = (None::<Usage>, None::<Usage>, Vec::new());
    for _ in 0..pairs {
        let a = measure(&mut cmd(false));
        let u = measure(&mut cmd(true));
        assert!(a.code == Some(0) && u.code == Some(0), "a run failed");
        off = Some(off.map_or(a, |b| if a.cpu < b.cpu { a } else { b }));
        on = Some(on.map_or(u, |b| if u.cpu < b.cpu { u } else { b }));
        diffs.push(per(u) - per(a));
    }
    let (off, on) = (off.unwrap(), on.unwrap());
    let spans = rx.count();
    row("traces: 100 personas x 100 turns, saving on, no tracing (least CPU)", calls, off);
    row("traces: the same exported over OTLP/HTTP (least CPU)", calls, on);
    diffs.sort_by(f64::total_cmp);
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let sd = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (diffs.len().max(2) - 1) as f64).sqrt();
    println!(
        "figure: exporting traces costs {:+.2} µs CPU per call, median of {pairs} alternating pairs (mean {mean:+.2}, \
         ±{:.2} on the mean; least-CPU runs {:+.2}; {spans} spans received, {:.1} per call)",
        diffs[diffs.len() / 2],
        sd / (diffs.len() as f64).sqrt(),
        per(on) - per(off),
        spans as f64 / (pairs as u64 * calls) as f64
    );
}

/// The panel at 100 turns, alternately without and with `/metrics` served and scraped every
/// 100 ms: the median difference over `FRONT_DOOR_PAIRS` pairs (12), and the least CPU of each.
fn metrics_overhead(dir: &Path) {
    let (dir, pop, calls) = long_panel(dir, "metrics");
    let cmd = |addr: Option<&str>| {
        let mut c = run_saving(&pop.scenario, &dir.join("out"));
        if let Some(a) = addr {
            c.args(["--metrics-addr", a]);
        }
        c
    };
    let pairs: usize = std::env::var("FRONT_DOOR_PAIRS").ok().and_then(|p| p.parse().ok()).unwrap_or(12);
    let per = |u: Usage| u.cpu.as_secs_f64() * 1e6 / calls as f64;
    let (mut off, mut on, mut diffs, mut scrapes) = (None::<Usage>, None::<Usage>, Vec::new(), 0);
    for _ in 0..pairs {
        let a = measure(&mut cmd(None));
        assert_eq!(a.code, Some(0), "the run failed");
        off = Some(off.map_or(a, |b| if a.cpu < b.cpu { a } else { b }));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let scraper = {
            let (stop, addr) = (stop.clone(), addr.clone());
            std::thread::spawn(move || scrape_until(&addr, &stop))
        };
        let u = measure(&mut cmd(Some(&addr)));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        scrapes += scraper.join().unwrap();
        assert_eq!(u.code, Some(0), "the run with --metrics-addr failed");
        on = Some(on.map_or(u, |b| if u.cpu < b.cpu { u } else { b }));
        diffs.push(per(u) - per(a));
    }
    let (off, on) = (off.unwrap(), on.unwrap());
    row("metrics: 100 personas x 100 turns, saving on, no /metrics (least CPU)", calls, off);
    row("metrics: the same with --metrics-addr, scraped every 100 ms (least CPU)", calls, on);
    diffs.sort_by(f64::total_cmp);
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let sd = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (diffs.len().max(2) - 1) as f64).sqrt();
    println!(
        "figure: exporting metrics costs {:+.2} µs CPU per call, median of {pairs} alternating pairs (mean {mean:+.2}, \
         ±{:.2} on the mean; least-CPU runs {:+.2}; {scrapes} scrapes answered)",
        diffs[diffs.len() / 2],
        sd / (diffs.len() as f64).sqrt(),
        per(on) - per(off)
    );
}

/// GETs `/metrics` every 100 ms until `stop`; how many answered.
fn scrape_until(addr: &str, stop: &std::sync::atomic::AtomicBool) -> usize {
    let mut answered = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        answered += usize::from(cli::http_get(addr, "/metrics").is_some());
        std::thread::sleep(Duration::from_millis(100));
    }
    answered
}

/// Expected calls: every acting persona once per turn.
fn calls_of(s: Shape) -> u64 {
    let per_turn = s.active.map_or(s.n as f64, |a| (a * s.n as f64).ceil());
    (per_turn * s.turns as f64) as u64
}

fn describe(s: Shape) -> String {
    let mut d = match s.degree {
        Some(k) => format!(", degree {k}"),
        None => ", everyone hears everyone".into(),
    };
    if let Some(a) = s.active {
        d.push_str(&format!(", {}% acting", a * 100.0));
    }
    d
}

/// The run with the least CPU of `runs` (the others were disturbed by something else).
fn best_of(runs: usize, mut cmd: impl FnMut() -> std::process::Command) -> Usage {
    let mut best: Option<Usage> = None;
    for _ in 0..runs {
        let u = measure(&mut cmd());
        assert_eq!(u.code, Some(0), "the run failed; run the same command by hand to see why");
        if best.is_none_or(|b| u.cpu < b.cpu) {
            best = Some(u);
        }
    }
    best.expect("at least one run")
}

/// Each command's run of median CPU among `rounds`, the commands run in turn in each round.
fn medians<const N: usize>(rounds: usize, cmds: [&mut dyn FnMut() -> std::process::Command; N]) -> [Usage; N] {
    let mut all: Vec<Vec<Usage>> = vec![Vec::new(); N];
    let mut cmds = cmds;
    for _ in 0..rounds {
        for (k, cmd) in cmds.iter_mut().enumerate() {
            let u = measure(&mut cmd());
            assert_eq!(u.code, Some(0), "the run failed; run the same command by hand to see why");
            all[k].push(u);
        }
    }
    std::array::from_fn(|k| {
        all[k].sort_by_key(|u| u.cpu);
        all[k][rounds / 2]
    })
}

fn row(name: &str, calls: u64, u: Usage) {
    println!(
        "| {name} | {calls} | {:.2} s | {:.2} s | {:.0} MiB | {:.1} µs |",
        u.wall.as_secs_f64(),
        u.cpu.as_secs_f64(),
        u.max_rss as f64 / (1024.0 * 1024.0),
        u.cpu.as_secs_f64() * 1e6 / calls.max(1) as f64
    );
}

fn machine() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, load average {}", load.split_whitespace().next().unwrap_or("?"))
}

/// 50 personas x 60 turns against the mock: troupe without and with saving, then bare reqwest.
fn http(dir: &Path) {
    let mut mock = MockProcess::start();
    let base_url = mock.base_url().to_string();
    let pop = write(dir, Shape { n: HTTP_PERSONAS, turns: HTTP_TURNS, degree: None, active: None, policy: "Parallel" });
    let text =
        std::fs::read_to_string(&pop.scenario).unwrap().replace("provider: \"simulated\"", "provider: \"openai\"");
    std::fs::write(&pop.scenario, text).unwrap();
    let calls = (HTTP_PERSONAS * HTTP_TURNS as usize) as u64;
    let run = |save: bool| {
        let out = dir.join("http-out");
        let _ = std::fs::remove_dir_all(&out);
        let mut c = troupe();
        c.arg("run").arg(&pop.scenario).arg("-q").arg("--output-dir").arg(&out);
        c.args(["--set", &format!("llm.base_url={base_url}"), "--set", "llm.model=gpt-4o-mini"]);
        if !save {
            c.arg("--no-save");
        }
        c.env("OPENAI_API_KEY", "sk-front-door-bench-0000000000");
        c
    };
    let bare_run = |sizes: Option<(usize, usize)>| {
        let mut c = std::process::Command::new(std::env::current_exe().unwrap());
        c.env(BARE_ENV, format!("{base_url}/chat/completions"));
        if let Some((system, user)) = sizes {
            c.env(BARE_SIZES_ENV, format!("{system},{user}"));
        }
        c
    };
    let rounds = std::env::var("FRONT_DOOR_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(HTTP_ROUNDS).max(1);
    // The sizes troupe's requests have, from one run, then the four commands in turn (so a
    // drift in the machine's speed touches each alike), the median of each.
    let first = measure(&mut run(false));
    assert_eq!(first.code, Some(0), "the run failed; run the same command by hand to see why");
    let sizes = mock.mean_message_sizes();
    let [unsaved, saved, bare, same] =
        medians(rounds, [&mut || run(false), &mut || run(true), &mut || bare_run(None), &mut || bare_run(Some(sizes))]);
    row("http: 50 x 60 against the loopback mock, no saving", calls, unsaved);
    row("http: the same, saving on (journal, transcript, results, analysis)", calls, saved);
    row("http: bare reqwest (one tokio worker), the same 3,000 requests, 50 at a time, 300-byte bodies", calls, bare);
    let label = format!(
        "http: bare reqwest (one tokio worker), 3,000 requests, 50 at a time, bodies the size troupe sent ({} + {} bytes of messages)",
        sizes.0, sizes.1
    );
    row(&label, calls, same);
    let per = |u: Usage| u.cpu.as_secs_f64() * 1e6 / calls as f64;
    println!(
        "figure: HTTP CPU per call above bare reqwest (300-byte bodies): +{:.1} µs without saving, +{:.1} µs saving",
        per(unsaved) - per(bare),
        per(saved) - per(bare)
    );
    println!(
        "figure: HTTP CPU per call above bare reqwest sending bodies of troupe's size: +{:.1} µs without saving, +{:.1} µs saving",
        per(unsaved) - per(same),
        per(saved) - per(same)
    );
}

/// The loopback mock in a process of its own (this bench with `FRONT_DOOR_MOCK=1`). Not in this
/// process: a child's peak RSS, as the kernel reports it, starts from the peak of the process
/// that spawned it, and the mock keeps every request it received.
struct MockProcess {
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    url: String,
}

impl MockProcess {
    fn start() -> MockProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .env("FRONT_DOOR_MOCK", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the mock starts");
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut url = String::new();
        stdout.read_line(&mut url).unwrap();
        MockProcess { child, stdout, url: url.trim().to_string() }
    }

    fn base_url(&self) -> &str {
        &self.url
    }

    /// The mean lengths of the system and user messages of the requests received so far.
    fn mean_message_sizes(&mut self) -> (usize, usize) {
        use std::io::{BufRead, Write};
        writeln!(self.child.stdin.as_mut().unwrap(), "sizes").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let (a, b) = line.trim().split_once(',').expect("system,user");
        (a.parse().unwrap(), b.parse().unwrap())
    }
}

impl Drop for MockProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// `FRONT_DOOR_MOCK=1`: serves the loopback mock and prints its URL; a line `sizes` on stdin
/// answers with the mean message sizes received so far; it stops at the end of stdin. Also
/// for measuring by hand (for instance with `farm-bench`) what the `http` workload measures.
fn serve_mock() {
    use std::io::BufRead;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mock = rt.block_on(mock_openai::MockServer::start(mock_openai::MockConfig::default()));
    println!("{}", mock.base_url());
    for line in std::io::stdin().lock().lines() {
        if line.unwrap().trim() == "sizes" {
            let (system, user) = mean_message_sizes(&mock.requests());
            println!("{system},{user}");
        }
    }
}

/// The mean lengths of the system and user messages of the requests the mock received.
fn mean_message_sizes(requests: &[mock_openai::Recorded]) -> (usize, usize) {
    let (mut system, mut user) = (0, 0);
    for r in requests {
        for m in r.body["messages"].as_array().into_iter().flatten() {
            let len = m["content"].as_str().map_or(0, str::len);
            if m["role"] == "system" { system += len } else { user += len }
        }
    }
    let n = requests.len().max(1);
    (system / n, user / n)
}

/// A conversation of about `len` bytes in the lines a persona hears (`[turn 3] Name (Role): ...`).
fn conversation(len: usize, turn: usize) -> String {
    let mut s = String::with_capacity(len + 120);
    let mut k = 0;
    while s.len() < len {
        s.push_str(&format!("[turn {turn}] Speaker P{k} (Nurse): I think we should keep the library open and cut the parade budget instead.\n"));
        k += 1;
    }
    s.truncate(len);
    s
}

/// The floor: `total` chat requests with reqwest alone, `width` at a time, each body parsed.
/// With `sizes`, each request's system and user messages have those lengths, and the user
/// message is built for each request, as a client builds a prompt.
fn bare_reqwest(url: &str, total: usize, width: usize, sizes: Option<(usize, usize)>) {
    // One worker, as troupe runs against a server: the floor with two is higher (about 1.2x).
    let threads = std::env::var("FRONT_DOOR_BARE_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..width {
            let (client, next, url) = (client.clone(), next.clone(), url.to_string());
            tasks.push(tokio::spawn(async move {
                let system = match sizes {
                    Some((len, _)) => {
                        "You are Amara P0, a Nurse. Keep the town affordable.\n".repeat(len / 53 + 1)[..len].to_string()
                    }
                    None => "You are Amara P0, a Nurse. Keep the town affordable.".to_string(),
                };
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let user = match sizes {
                        Some((_, len)) => conversation(len, i / width),
                        None => "Which service should the town cut first? Say what you think.".to_string(),
                    };
                    let body = serde_json::json!({
                        "model": "gpt-4o-mini",
                        "messages": [
                            {"role": "system", "content": system},
                            {"role": "user", "content": user}
                        ],
                        "temperature": 0.7,
                        "max_tokens": 200
                    });
                    let r = client.post(&url).bearer_auth("sk-front-door-bench").json(&body).send().await.unwrap();
                    let v: serde_json::Value = r.json().await.unwrap();
                    assert!(v["choices"][0]["message"]["content"].is_string());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}
