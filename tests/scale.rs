//! Every stage linear (issue 15): the same population scenario at 2,000 and 8,000 personas,
//! one turn, a relation graph of degree 8, run through the `troupe` binary with saving on. Four
//! times the personas may take at most six times the CPU: a quadratic stage anywhere on the
//! path a user runs (loading, validation, resolution, the hearing graph, the estimate, the run,
//! the journal, the results, the analysis) would take sixteen.

mod support {
    pub mod cli;
    pub mod population;
}

use support::cli::{measure, troupe};
use support::population::{Shape, write};

fn cpu_of(n: usize, dir: &std::path::Path) -> f64 {
    let pop = write(dir, Shape { n, turns: 1, degree: Some(8), active: None, policy: "Parallel" });
    let mut c = troupe();
    c.arg("run").arg(&pop.scenario).args(["-q", "--output-dir"]).arg(dir.join(format!("out-{n}")));
    let u = measure(&mut c);
    assert_eq!(u.code, Some(0), "the {n}-persona run failed");
    u.cpu.as_secs_f64()
}

#[cfg(unix)]
#[test]
fn four_times_the_personas_cost_at_most_six_times_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    // A first run warms the disk cache and the binary's pages.
    cpu_of(500, tmp.path());
    let small = cpu_of(2_000, tmp.path());
    let large = cpu_of(8_000, tmp.path());
    let ratio = large / small;
    eprintln!("2,000 personas: {small:.2} s CPU; 8,000: {large:.2} s; ratio {ratio:.2}");
    assert!(
        ratio <= 6.0,
        "CPU grew {ratio:.1}x for 4x the personas ({small:.2} s -> {large:.2} s): a stage is quadratic"
    );
}
