//! Experiments on a NATS JetStream cluster (issue 17), through the binary: a real `nats-server
//! -js` on 127.0.0.1 (random port, temporary store), `troupe worker` processes and the
//! coordinator `troupe experiment --cluster`. Without `nats-server` the tests skip with a note,
//! unless `TROUPE_REQUIRE_NATS=1` (CI sets it), when they fail.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support {
    pub mod cli;
    pub mod mock_openai;
    pub mod nats;
}

use support::cli::{ROOT, run_within, troupe};
use support::mock_openai::{MockConfig, MockServer};
use support::nats;

/// A run's transcript as `(turn, speaker, text)` lines.
type Lines = Vec<(u64, String, String)>;

/// The environment of every troupe process of a test: short leases, and the provider.
fn env(cmd: &mut Command, provider: &[(&str, String)]) {
    cmd.env("TROUPE_CLUSTER__LEASE_SECONDS", "2");
    for (k, v) in provider {
        cmd.env(k, v);
    }
}

fn simulated() -> Vec<(&'static str, String)> {
    vec![("TROUPE_LLM__PROVIDER", "simulated".into())]
}

fn worker(url: &str, dir: &Path, name: &str, provider: &[(&str, String)]) -> Child {
    let mut cmd = troupe();
    cmd.args(["worker", "--nats", url, "--name", name, "--max-parallel", "2", "--work-dir"]).arg(dir.join(name));
    env(&mut cmd, provider);
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

/// SIGTERM: the worker finishes what it runs, prints its tally and exits.
fn stop(c: Child) {
    support::cli::terminate(c, Duration::from_secs(30));
}

/// Runs the workers' logs say they resumed from another worker's journal.
fn resumed(dir: &Path, names: &[&str]) -> (u64, String) {
    let mut n = 0;
    let mut all = String::new();
    for name in names {
        let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        for line in log.lines() {
            if let Some(rest) = line.split(" run(s) reported (").nth(1) {
                n += rest.split(' ').next().and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            }
        }
        all.push_str(&log);
    }
    (n, all)
}

/// The one experiment folder under `<out>/experiments`.
fn experiment_dir(out: &Path) -> PathBuf {
    std::fs::read_dir(out.join("experiments")).unwrap().next().unwrap().unwrap().path()
}

fn summary(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(experiment_dir(out).join("summary.json")).unwrap()).unwrap()
}

/// `(variant, k)` → the run's transcript as `(turn, speaker, text)` lines.
fn transcripts(out: &Path) -> HashMap<(String, u64), Lines> {
    let s = summary(out);
    let mut m = HashMap::new();
    for r in s["runs"].as_array().unwrap() {
        let dir = PathBuf::from(r["dir"].as_str().unwrap());
        let text = std::fs::read_to_string(dir.join("transcript.jsonl")).unwrap();
        let lines: Lines = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["text"].is_string())
            .map(|v| {
                (
                    v["turn"].as_u64().unwrap_or(0),
                    v["speaker"].as_str().or(v["agent"].as_str()).unwrap_or("").to_string(),
                    v["text"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let key = (r["variant"].as_str().unwrap().to_string(), r["k"].as_u64().unwrap());
        assert!(m.insert(key.clone(), lines).is_none(), "run {key:?} reported twice");
    }
    m
}

fn experiment(args: &[&str], out: &Path, provider: &[(&str, String)]) -> Command {
    let mut cmd = troupe();
    cmd.arg("experiment")
        .arg(Path::new(ROOT).join("scenarios/content_moderation.ron"))
        .args(["--variants", "baseline,creative", "--run-seed", "42", "--turns", "2", "--quiet"])
        .args(["--set", "performance.rate_limit_delay=0", "--output-dir"])
        .arg(out)
        .args(args);
    env(&mut cmd, provider);
    cmd
}

/// 60 simulated runs over 3 workers: every run's result exactly once, and each run's transcript
/// and compared metrics equal a local experiment's with the same seed.
#[test]
fn sixty_runs_over_three_workers_equal_a_local_experiment() {
    let Some(n) = nats::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let workers: Vec<Child> = (1..=3).map(|i| worker(&n.url, tmp.path(), &format!("w{i}"), &simulated())).collect();
    let (local, remote) = (tmp.path().join("local"), tmp.path().join("remote"));
    let d =
        run_within(&mut experiment(&["--runs", "30", "--parallel"], &local, &simulated()), Duration::from_secs(600));
    assert_eq!(d.code, Some(0), "{}", d.both());
    let d = run_within(
        &mut experiment(&["--runs", "30", "--cluster", &n.url], &remote, &simulated()),
        Duration::from_secs(600),
    );
    for w in workers {
        stop(w);
    }
    assert_eq!(d.code, Some(0), "{}", d.both());
    let (a, b) = (transcripts(&local), transcripts(&remote));
    assert_eq!(b.len(), 60);
    assert_eq!(a, b, "the cluster's transcripts differ from the local experiment's");
    let (sa, sb) = (summary(&local), summary(&remote));
    let metrics = |s: &Value| -> Vec<(String, u64, Value)> {
        let mut v: Vec<(String, u64, Value)> = s["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let mut m = r["metrics"].clone();
                m.as_object_mut().unwrap().remove("latency_ms");
                (r["variant"].as_str().unwrap().to_string(), r["k"].as_u64().unwrap(), m)
            })
            .collect();
        v.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
        v
    };
    assert_eq!(metrics(&sa), metrics(&sb));
    assert!(sb["runs"].as_array().unwrap().iter().all(|r| r["success"] == true));
    // The report is written like a local one.
    let dir = experiment_dir(&remote);
    assert!(dir.join("report.html").exists() && dir.join("report.md").exists());
}

/// How long after an answer its journal line may still be on its way to JetStream: a few
/// milliseconds on an idle machine; a busy CI machine has shown more than 50 ms. A worker that
/// streamed nothing, or a resume that reused nothing, would pay again exchanges answered
/// seconds before the kill, far outside this window.
const JOURNAL_WINDOW: Duration = Duration::from_millis(500);

/// A worker killed with SIGKILL in the middle of its runs: they are handed to the other
/// workers after the lease, resumed from the journal it streamed, and no exchange answered
/// before the kill is sent to the provider again (counted at a loopback OpenAI-compatible mock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_runs_finish_elsewhere_and_nothing_is_paid_twice() {
    let Some(n) = nats::start() else { return };
    let delay = Duration::from_millis(150);
    let mock = MockServer::start(MockConfig { delay, ..MockConfig::default() }).await;
    let provider = vec![
        ("TROUPE_LLM__PROVIDER", "openai".to_string()),
        ("TROUPE_LLM__BASE_URL", mock.base_url()),
        ("OPENAI_API_KEY", "sk-test-cluster".to_string()),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let victim = worker(&n.url, tmp.path(), "victim", &provider);
    let out = tmp.path().join("out");
    let mut coord = experiment(&["--runs", "3", "--cluster", &n.url], &out, &provider);
    let coord = std::thread::spawn(move || run_within(&mut coord, Duration::from_secs(300)));
    // Kill once the victim has paid for a good part of its runs.
    let t0 = Instant::now();
    while mock.request_count() < 25 && t0.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut victim = victim;
    victim.kill().unwrap();
    let killed_at = Instant::now();
    victim.wait().unwrap();
    let paid_before = mock.request_count();
    assert!(paid_before >= 25, "the victim made {paid_before} calls");
    let others: Vec<Child> = (1..=2).map(|i| worker(&n.url, tmp.path(), &format!("w{i}"), &provider)).collect();
    let d = tokio::task::spawn_blocking(move || coord.join().unwrap()).await.unwrap();
    for w in others {
        stop(w);
    }
    assert_eq!(d.code, Some(0), "{}", d.both());
    let s = summary(&out);
    assert_eq!(s["runs"].as_array().unwrap().len(), 6);
    assert!(s["runs"].as_array().unwrap().iter().all(|r| r["success"] == true), "{s}");
    // Paid twice: a request body (it holds the run's seed) seen again, whose first copy was
    // answered before the kill (arrived more than the mock's delay before it).
    let mut first: HashMap<String, Instant> = HashMap::new();
    let mut twice = Vec::new();
    for r in mock.requests() {
        let body = r.body.to_string();
        match first.get(&body) {
            Some(&at) if at + delay + JOURNAL_WINDOW < killed_at => twice.push(body),
            Some(_) => {}
            None => {
                first.insert(body, r.at.into());
            }
        }
    }
    assert!(
        twice.is_empty(),
        "{} exchange(s) paid twice, e.g. {}",
        twice.len(),
        twice[0].chars().take(300).collect::<String>()
    );
    let (n, logs) = resumed(tmp.path(), &["w1", "w2"]);
    assert!(n >= 1, "no run was resumed from the victim's journal:\n{logs}");
}

fn signal(c: &Child, sig: i32) {
    unsafe { libc::kill(c.id() as i32, sig) };
}

/// The tally a worker prints when it stops: (reported, resumed, discarded).
fn tally(dir: &Path, name: &str) -> (u64, u64, u64) {
    let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let line = log
        .lines()
        .find(|l| l.contains(" run(s) reported ("))
        .unwrap_or_else(|| panic!("{name}: no tally (it did not stop on SIGTERM within 30 s?):\n{log}"));
    let nums: Vec<u64> =
        line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    // "worker NAME: R run(s) reported (M resumed ...), D discarded as stale, H handed back"; the
    // name may hold digits, so count from the end.
    let n = nums.len();
    (nums[n - 4], nums[n - 3], nums[n - 2])
}

/// Simulated runs that take a few seconds each (300 ms per call).
fn slow() -> Vec<(&'static str, String)> {
    vec![
        ("TROUPE_LLM__PROVIDER", "simulated".into()),
        ("TROUPE_LLM__SIMULATED__LATENCY__KIND", "fixed".into()),
        ("TROUPE_LLM__SIMULATED__LATENCY__MS", "300".into()),
    ]
}

/// A worker stopped (SIGSTOP) for longer than its lease loses its runs to another worker; when
/// it continues (SIGCONT) and finishes them, its results are discarded, and every run is in the
/// report exactly once.
#[test]
fn a_stalled_worker_loses_its_runs_and_its_late_results_are_discarded() {
    let Some(n) = nats::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let stalled = worker(&n.url, tmp.path(), "stalled", &slow());
    let out = tmp.path().join("out");
    let mut coord = experiment(&["--runs", "2", "--cluster", &n.url], &out, &slow());
    let coord = std::thread::spawn(move || run_within(&mut coord, Duration::from_secs(300)));
    // Stop it once it is making a run.
    let log = tmp.path().join("stalled.log");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("run started") {
        assert!(t0.elapsed() < Duration::from_secs(60), "the worker never started a run");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    signal(&stalled, libc::SIGSTOP);
    let other = worker(&n.url, tmp.path(), "other", &slow());
    // Well past the 2 s lease: the other worker takes the stalled one's runs.
    std::thread::sleep(Duration::from_secs(6));
    signal(&stalled, libc::SIGCONT);
    let d = coord.join().unwrap();
    // Let the stalled worker finish what it was doing before it is asked to stop.
    std::thread::sleep(Duration::from_secs(3));
    stop(stalled);
    stop(other);
    let logs = || {
        ["stalled", "other"]
            .iter()
            .map(|n| {
                format!("--- {n}\n{}", std::fs::read_to_string(tmp.path().join(format!("{n}.log"))).unwrap_or_default())
            })
            .collect::<String>()
    };
    assert_eq!(d.code, Some(0), "{}\n{}", d.both(), logs());
    let runs = transcripts(&out);
    assert_eq!(runs.len(), 4);
    let (_, _, discarded) = tally(tmp.path(), "stalled");
    let (_, resumed, _) = tally(tmp.path(), "other");
    assert!(discarded >= 1, "the stalled worker's late result was not discarded\n{}", logs());
    assert!(resumed >= 1, "the other worker did not resume the stalled worker's runs\n{}", logs());
}

/// The broker killed (SIGKILL) and restarted on the same store mid-experiment: every run
/// completes, none twice, and no worker hangs (each stops on SIGTERM and prints its tally).
#[test]
fn a_broker_killed_and_restarted_mid_experiment_loses_no_run() {
    let Some(mut n) = nats::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let workers: Vec<Child> = (1..=2).map(|i| worker(&n.url, tmp.path(), &format!("w{i}"), &slow())).collect();
    let out = tmp.path().join("out");
    let mut coord = experiment(&["--runs", "3", "--cluster", &n.url], &out, &slow());
    let coord = std::thread::spawn(move || run_within(&mut coord, Duration::from_secs(300)));
    std::thread::sleep(Duration::from_millis(2500));
    n.kill();
    std::thread::sleep(Duration::from_secs(2));
    n.restart();
    let d = coord.join().unwrap();
    for w in workers {
        stop(w);
    }
    assert_eq!(d.code, Some(0), "{}", d.both());
    let runs = transcripts(&out);
    assert_eq!(runs.len(), 6);
    let (mut reported, _, _) = tally(tmp.path(), "w1");
    reported += tally(tmp.path(), "w2").0;
    assert!(reported >= 6, "{reported} runs reported");
}

/// A stress sweep whose every setting is made by two workers at the same moment: both workers
/// take a shard of each setting, the rows add their calls up, and the report says how it was
/// made.
#[test]
fn a_stress_sweep_spreads_each_setting_over_two_workers() {
    let Some(n) = nats::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let workers: Vec<Child> = (1..=2).map(|i| worker(&n.url, tmp.path(), &format!("w{i}"), &simulated())).collect();
    let out = tmp.path().join("stress");
    let mut cmd = troupe();
    cmd.arg("stress")
        .arg(Path::new(ROOT).join("scenarios/stress.ron"))
        .args(["--workers", "2,4", "--turns", "2", "--json", "--cluster", &n.url, "--machines", "2", "--out"])
        .arg(&out)
        .args(["--set", "llm.simulated.faults.server_error=0", "--set", "llm.simulated.faults.rate_limited=0"]);
    env(&mut cmd, &simulated());
    let d = run_within(&mut cmd, Duration::from_secs(300));
    let logs: Vec<String> = ["w1", "w2"]
        .iter()
        .map(|w| std::fs::read_to_string(tmp.path().join(format!("{w}.log"))).unwrap_or_default())
        .collect();
    for w in workers {
        stop(w);
    }
    assert_eq!(d.code, Some(0), "{}", d.both());
    let report: Value = serde_json::from_str(&d.stdout).unwrap();
    let rows = report["settings"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    // stress.ron has 10 personas, Parallel: 2 turns make 20 calls per machine.
    for r in rows {
        assert_eq!(r["calls"], 40, "{r}");
        assert_eq!(r["completed"], true);
    }
    assert!(report["notes"].to_string().contains("made by 2 worker(s) at once"), "{report}");
    for (i, log) in logs.iter().enumerate() {
        assert_eq!(log.matches("stress shard started").count(), 2, "worker {} made the wrong shards:\n{log}", i + 1);
    }
}

/// A server that takes only small messages (`max_payload: 32768`): the runs' files go through
/// the object store, journal lines longer than a message are sent in pieces, and the result is
/// the local experiment's.
#[test]
fn a_server_with_small_messages_gets_files_through_the_object_store() {
    let Some(n) = nats::start_with("max_payload: 32768\n") else { return };
    let tmp = tempfile::tempdir().unwrap();
    // This worker also serves its metrics (its runs by state).
    let mut metrics = simulated();
    metrics.push(("TROUPE_MONITORING__METRICS_ADDR", "127.0.0.1:0".into()));
    let w = worker(&n.url, tmp.path(), "w1", &metrics);
    let (local, remote) = (tmp.path().join("local"), tmp.path().join("remote"));
    let d = run_within(&mut experiment(&["--runs", "2"], &local, &simulated()), Duration::from_secs(300));
    assert_eq!(d.code, Some(0), "{}", d.both());
    let d = run_within(
        &mut experiment(&["--runs", "2", "--cluster", &n.url], &remote, &simulated()),
        Duration::from_secs(300),
    );
    let log = std::fs::read_to_string(tmp.path().join("w1.log")).unwrap_or_default();
    let addr = log.lines().find_map(|l| l.strip_prefix("metrics: http://")).map(|a| a.trim_end_matches("/metrics"));
    // The worker counts a run once its report is stored, a moment after the coordinator saw it.
    let mut scraped = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !scraped.contains("troupe_worker_runs_total{outcome=\"reported\"} 4\n") {
        scraped = addr.and_then(|a| support::cli::http_get(a, "/metrics")).unwrap_or_default();
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(w);
    let log = std::fs::read_to_string(tmp.path().join("w1.log")).unwrap_or_default();
    assert_eq!(d.code, Some(0), "{}\n{log}", d.both());
    // 2 variants x 2 runs, all made by this worker.
    assert!(scraped.contains("troupe_worker_runs_total{outcome=\"reported\"} 4\n"), "{scraped}\n{log}");
    assert!(scraped.contains("troupe_runs_finished_total{outcome=\"completed\"} 4\n"), "{scraped}");
    assert!(log.contains("through the object store"), "the files were sent inline: {log}");
    assert!(!log.contains("not stored yet"), "a journal message was refused: {log}");
    assert_eq!(transcripts(&local), transcripts(&remote));
    let dir = experiment_dir(&remote);
    assert!(dir.join("report.html").exists());
}

/// A queued run no worker can read (a worker of another version, a corrupted message) is handed
/// back until its last delivery, then reported failed with the reason: the coordinator ends at
/// once with the other runs done, instead of waiting for it until `--wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_no_worker_can_read_is_reported_failed_and_the_experiment_ends() {
    let Some(n) = nats::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut provider = simulated();
    provider.push(("TROUPE_CLUSTER__MAX_DELIVERIES", "2".into()));
    let out = tmp.path().join("out");
    let mut coord = experiment(&["--runs", "1", "--cluster", &n.url, "--wait", "240"], &out, &provider);
    let coord = tokio::task::spawn_blocking(move || run_within(&mut coord, Duration::from_secs(300)));
    // Once both runs are queued (no worker yet), one is replaced by a message no worker reads.
    let pending = loop {
        let p = std::fs::read_dir(out.join("experiments"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read(e.ok()?.path().join("cluster.json")).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        if let Some(p) =
            p.filter(|p| p["queued"].as_array().is_some_and(|q| q.iter().all(|r| r["seq"].as_u64() > Some(0))))
        {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (exp, run) = (pending["id"].as_str().unwrap(), &pending["queued"][0]);
    let run_id = run["run_id"].as_str().unwrap();
    let client = async_nats::connect(&n.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("troupe_runs").await.unwrap();
    assert!(stream.delete_message(run["seq"].as_u64().unwrap()).await.unwrap());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Troupe-Run", run_id);
    headers.insert("Nats-Msg-Id", format!("{exp}.{run_id}.unreadable").as_str());
    let body = br#"{"kind":"a_kind_from_a_later_version","x":1}"#.to_vec();
    js.publish_with_headers(format!("troupe.runs.{exp}"), headers, body.into()).await.unwrap().await.unwrap();
    let w = worker(&n.url, tmp.path(), "w1", &provider);
    let started = Instant::now();
    let d = coord.await.unwrap();
    let took = started.elapsed();
    stop(w);
    let log = std::fs::read_to_string(tmp.path().join("w1.log")).unwrap_or_default();
    assert!(took < Duration::from_secs(120), "the coordinator waited {took:?} for the unreadable run\n{log}");
    let s = summary(&out);
    let runs = s["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{s}\n{}\n{log}", d.both());
    let bad = runs.iter().find(|r| r["run_id"] == run_id).unwrap_or_else(|| panic!("{s}"));
    assert_eq!(bad["success"], false);
    let why = bad["error"].as_str().unwrap_or_default();
    assert!(why.contains("could not read this run's queued work") && why.contains("w1"), "{why}");
    // It keeps its place in the experiment: variant and seed from the coordinator's queue.
    assert_eq!(bad["variant"], run["variant"]);
    assert_eq!(bad["run_seed"], run["seed"]);
    let good = runs.iter().find(|r| r["run_id"] != run_id).unwrap();
    assert_eq!(good["success"], true, "{s}");
    // Handed back once (another worker might have read it), reported on the last delivery.
    assert!(log.contains("cannot read, handed back"), "{log}");
}
