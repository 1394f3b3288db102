//! `troupe doctor`: is everything in place for a run? One row per check; exit 0 when no check
//! failed (warnings allowed), 1 otherwise.

use std::process::ExitCode;

use clap::Args;
use troupe_sim::doctor::{self, Check, DoctorOptions, Status};

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the checks as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &GlobalArgs, a: DoctorArgs) -> anyhow::Result<ExitCode> {
    let checks = match super::load_config_quiet(g, None, &super::Flags::default()) {
        Ok(loaded) => {
            let opts = DoctorOptions::for_config(&loaded.config);
            super::block_on(doctor::run_checks(&loaded, &opts))?
        }
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            doctor::config_failed(&chain.join(": "))
        }
    };
    let healthy = doctor::healthy(&checks);
    if a.json {
        let out = serde_json::json!({ "healthy": healthy, "checks": checks });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_table(&checks, healthy);
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_table(checks: &[Check], healthy: bool) {
    let w = checks.iter().map(|c| c.name.len()).max().unwrap_or(5).max(5);
    println!("{:<w$}  {:<6}  DETAIL", "CHECK", "STATUS");
    for c in checks {
        let status = match c.status {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        println!("{:<w$}  {status:<6}  {}", c.name, c.detail);
    }
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    let (fails, warns) = (count(Status::Fail), count(Status::Warn));
    if healthy {
        println!("\nhealthy: {} check(s) ok, {warns} warning(s)", count(Status::Ok));
    } else {
        println!("\nNOT healthy: {fails} check(s) failed, {warns} warning(s); fix the FAIL rows above");
    }
}
