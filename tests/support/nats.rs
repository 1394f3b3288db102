//! A `nats-server -js` on loopback for a test: a port the server picks itself (`-p -1`, read
//! back from its log), a temporary store, stopped on drop. Without `nats-server` a test skips
//! with a note, unless `TROUPE_REQUIRE_NATS=1` (CI sets it), when it fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running NATS server.
pub struct Nats {
    child: Option<Child>,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    port: String,
    store: tempfile::TempDir,
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts one, or `None` (after a note) when `nats-server` is missing and not required.
pub fn start() -> Option<Nats> {
    start_with("")
}

/// Starts one with these lines of server configuration (`max_payload: 32768`, say).
pub fn start_with(config: &str) -> Option<Nats> {
    if Command::new("nats-server").arg("--version").output().is_err() {
        assert!(
            std::env::var("TROUPE_REQUIRE_NATS").as_deref() != Ok("1"),
            "TROUPE_REQUIRE_NATS=1 but nats-server is not installed (apt-get install nats-server)"
        );
        eprintln!("note: nats-server not found; skipping (apt-get install nats-server)");
        return None;
    }
    let store = tempfile::tempdir().unwrap();
    std::fs::write(store.path().join("server.conf"), config).unwrap();
    let (child, port) = spawn(store.path(), "-1");
    Some(Nats { child: Some(child), url: format!("nats://127.0.0.1:{port}"), port, store })
}

fn spawn(store: &std::path::Path, port: &str) -> (Child, String) {
    let mut child = Command::new("nats-server")
        .arg("-c")
        .arg(store.join("server.conf"))
        .args(["-js", "-a", "127.0.0.1", "-p", port, "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
            let port = addr.trim().rsplit(':').next().unwrap_or_default().to_string();
            // Keep draining the log so the server never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (child, port);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("nats-server did not start");
}

impl Nats {
    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        let (child, _) = spawn(self.store.path(), &self.port);
        self.child = Some(child);
    }
}
