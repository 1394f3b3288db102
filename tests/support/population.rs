//! A population for whole-process measurements: `n` native personas (distinct ids and names,
//! about 400 bytes each), a hearing graph where each persona is related to its `degree` nearest
//! neighbours on a ring (a small-world lattice: `degree / 2` on each side), and a scenario that
//! runs them with the simulated provider at 0 ms, saving on. Shared by the growth test
//! (`tests/scale.rs`) and the front-door benchmark (`benches/front_door.rs`), so both measure
//! the same thing.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

const FIRST: [&str; 16] = [
    "Amara", "Ben", "Carla", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Keiko", "Luis", "Maya",
    "Nikhil", "Olga", "Pedro",
];
const ROLES: [&str; 8] =
    ["Nurse", "Shop owner", "Teacher", "Bus driver", "Retired engineer", "Student", "Farmer", "City clerk"];
const TRAITS: [&str; 8] = ["practical", "curious", "cautious", "outspoken", "patient", "sceptical", "warm", "frugal"];

/// What a population run needs.
#[derive(Debug, Clone)]
pub struct Population {
    /// The scenario file.
    pub scenario: PathBuf,
    /// The persona file.
    pub personas: PathBuf,
    /// How many personas.
    pub n: usize,
}

/// The shape of a run.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Personas.
    pub n: usize,
    /// Turns.
    pub turns: u32,
    /// Neighbours per persona (`None`: everyone hears everyone).
    pub degree: Option<usize>,
    /// Share of personas acting each turn (`None`: all).
    pub active: Option<f64>,
    /// Turn policy (`"Parallel"`, `"RoundRobin"`).
    pub policy: &'static str,
}

/// Writes the persona file, the graph file and the scenario into `dir`.
pub fn write(dir: &Path, shape: Shape) -> Population {
    let personas = dir.join(format!("population-{}.json", shape.n));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&personas).unwrap());
    f.write_all(b"[\n").unwrap();
    for i in 0..shape.n {
        let p = serde_json::json!({
            "type": "TinyPerson",
            "id": format!("p{i}"),
            "name": format!("{} P{i}", FIRST[i % FIRST.len()]),
            "role": ROLES[i % ROLES.len()],
            "description": format!("Lives in district {} of the town and has opinions about its budget.", i % 97),
            "personality": {
                "traits": [TRAITS[i % TRAITS.len()], TRAITS[(i / 8) % TRAITS.len()]],
                "goals": ["Keep the town affordable"],
                "style": "Short and plain",
                "communication": "direct", "decisions": "intuitive", "approach": "pragmatic"
            },
            "activity": 1 + (i % 4)
        });
        if i > 0 {
            f.write_all(b",\n").unwrap();
        }
        serde_json::to_writer(&mut f, &p).unwrap();
    }
    f.write_all(b"\n]\n").unwrap();
    f.flush().unwrap();
    let hearing = match shape.degree {
        Some(d) => {
            let graph = dir.join(format!("graph-{}.csv", shape.n));
            let mut g = std::io::BufWriter::new(std::fs::File::create(&graph).unwrap());
            writeln!(g, "source,target").unwrap();
            for i in 0..shape.n {
                for k in 1..=(d / 2) {
                    let j = (i + k) % shape.n;
                    if j != i {
                        writeln!(g, "p{i},p{j}").unwrap();
                    }
                }
            }
            g.flush().unwrap();
            format!("RelationsFile(\"{}\")", graph.display())
        }
        None => "Everyone".into(),
    };
    let activation = match shape.active {
        Some(s) => format!("activation: (share: {s}, weight: \"activity\"),"),
        None => String::new(),
    };
    let scenario = dir.join(format!("population-{}.ron", shape.n));
    std::fs::write(
        &scenario,
        format!(
            r#"Scenario(
    name: "population",
    world: (name: "Town hall", context: "The town must cut its budget by a tenth.", policy: {policy}, hearing: {hearing}),
    personas: [File("{personas}")],
    seed: "Which service should the town cut first?",
    turns: {turns},
    {activation}
    provider: "simulated",
    config: {{
        "performance": {{"rate_limit_delay": 0.0, "max_workers": 64, "batch_size": 1024}},
        "simulation": {{"max_personas": 10000000}},
        "llm": {{"simulated": {{"latency": {{"kind": "fixed", "ms": 0.0}}}}}},
    }},
)
"#,
            policy = shape.policy,
            personas = personas.display(),
            turns = shape.turns,
        ),
    )
    .unwrap();
    Population { scenario, personas, n: shape.n }
}
