//! Experiments on several workers (issue 17): 300 short runs (2 personas x 1 turn, simulated
//! provider at a fixed 200 ms per call, `max_parallel_runs = 2` per worker) made by the release
//! `troupe` binary locally, then on 1 and on 3 `troupe worker` processes through a
//! `nats-server -js` on loopback. Prints wall time, the speed-up of 3 workers over 1, and the
//! queue's own CPU per run: everything the cluster path spends (coordinator, workers and
//! nats-server, each measured by the kernel with `wait4`) minus what the same runs cost in one
//! local `troupe experiment --parallel --max-parallel 2`, divided by the runs.
//!
//! ```text
//! cargo bench --bench cluster            # about 2 minutes; needs nats-server (apt)
//! CLUSTER_RUNS=60 cargo bench --bench cluster
//! ```

#[path = "../tests/support/cli.rs"]
mod cli;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli::{Usage, measure, troupe, usage_of};

const SCENARIO: &str = r#"Scenario(
    name: "bench_cluster",
    topic: "Should the library open on Sundays?",
    turns: 1,
    world: (policy: Parallel),
    personas: [Id("sarah_chen"), Id("marcus_rivera")],
    variants: {"other": (topic: "Should the pool open at six?")},
)"#;

fn main() {
    let runs: usize = std::env::var("CLUSTER_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let per_variant = runs / 2;
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let scenario = tmp.path().join("bench_cluster.ron");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let common = |c: &mut Command| {
        c.env("TROUPE_LLM__PROVIDER", "simulated")
            .env("TROUPE_LLM__SIMULATED__LATENCY__KIND", "fixed")
            .env("TROUPE_LLM__SIMULATED__LATENCY__MS", "200")
            .env("TROUPE_PERFORMANCE__RATE_LIMIT_DELAY", "0");
    };
    let experiment = |out: &Path, extra: &[&str]| {
        let mut c = troupe();
        c.arg("experiment").arg(&scenario).args(["--variants", "baseline,other", "--runs", &per_variant.to_string()]);
        c.args(["--quiet", "--output-dir"]).arg(out).args(extra);
        common(&mut c);
        c
    };
    println!("cluster: {runs} runs of 2 personas x 1 turn, simulated at 200 ms per call, 2 runs at once per worker");
    println!("| setup | wall | speed-up over 1 worker | CPU, all processes | queue CPU per run |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let local = measure(&mut experiment(&tmp.path().join("local"), &["--parallel", "--max-parallel", "2"]));
    assert_eq!(local.code, Some(0), "the local experiment failed");
    println!("| local, one process | {:.1} s | - | {:.2} s | - |", local.wall.as_secs_f64(), local.cpu.as_secs_f64());
    let mut one = None;
    for workers in [1usize, 3] {
        let (wall, cpu) = on_cluster(tmp.path(), workers, &|out, url| experiment(out, &["--cluster", url]), &common);
        let speed =
            one.map(|w: Duration| format!("{:.2}x", w.as_secs_f64() / wall.as_secs_f64())).unwrap_or("1.00x".into());
        one.get_or_insert(wall);
        let queue = (cpu.as_secs_f64() - local.cpu.as_secs_f64()) / runs as f64 * 1000.0;
        println!(
            "| {workers} worker(s) | {:.1} s | {speed} | {:.2} s | {queue:.2} ms |",
            wall.as_secs_f64(),
            cpu.as_secs_f64()
        );
    }
}

/// Runs the experiment on `workers` workers through a fresh nats-server; returns the
/// coordinator's wall time and the CPU of every process involved.
fn on_cluster(
    dir: &Path,
    workers: usize,
    experiment: &dyn Fn(&Path, &str) -> Command,
    common: &dyn Fn(&mut Command),
) -> (Duration, Duration) {
    let store = dir.join(format!("nats-{workers}"));
    std::fs::create_dir_all(&store).unwrap();
    let t0 = Instant::now();
    let mut nats = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-l"])
        .arg(store.join("log"))
        .arg("-sd")
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server (apt-get install nats-server)");
    let url = wait_for_port(&store.join("log"), &mut nats);
    let ws: Vec<(Child, Instant)> = (0..workers)
        .map(|i| {
            let mut c = troupe();
            c.args(["worker", "--nats", &url, "--max-parallel", "2", "--name", &format!("w{i}"), "--work-dir"])
                .arg(dir.join(format!("work-{workers}-{i}")));
            common(&mut c);
            (c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap(), Instant::now())
        })
        .collect();
    let coord: Usage = measure(&mut experiment(&dir.join(format!("cluster-{workers}")), &url));
    assert_eq!(coord.code, Some(0), "the cluster experiment failed");
    let mut cpu = coord.cpu;
    let mut worker_cpu = Duration::ZERO;
    for (w, t) in ws {
        terminate(&w);
        worker_cpu += usage_of(w, t).cpu;
    }
    terminate(&nats);
    let nats_cpu = usage_of(nats, t0).cpu;
    cpu += worker_cpu + nats_cpu;
    eprintln!(
        "  {workers} worker(s): CPU coordinator {:.2} s, workers {:.2} s, nats-server {:.2} s",
        coord.cpu.as_secs_f64(),
        worker_cpu.as_secs_f64(),
        nats_cpu.as_secs_f64()
    );
    (coord.wall, cpu)
}

fn terminate(c: &Child) {
    // SAFETY: signals our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
}

fn wait_for_port(log: &Path, nats: &mut Child) -> String {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text.split("Listening for client connections on ").nth(1) {
            return format!("nats://{}", addr.lines().next().unwrap_or_default().trim());
        }
        assert!(nats.try_wait().unwrap().is_none(), "nats-server exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nats-server did not start; see {}", log.display());
}
