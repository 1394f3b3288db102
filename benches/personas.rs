//! The 100,000-persona benchmark (issue 2): load the database, index it by tags and validate
//! it; the three together must take under a second.
//!
//! The personas are generated once into a temp file: distinct ids and names, about 500 bytes
//! each, varied roles, traits and tags, every one passing every rule.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use troupe_sim::persona::{PersonaDatabase, validate_database};

const COUNT: usize = 100_000;

const FIRST: [&str; 64] = [
    "Amara", "Ben", "Carla", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Keiko", "Luis", "Maya",
    "Nikhil", "Olga", "Pedro", "Quinn", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wei", "Ximena", "Yusuf", "Zoe",
    "Aditi", "Bruno", "Chloe", "Diego", "Emeka", "Fatima", "Gustav", "Hana", "Ivan", "Jade", "Kofi", "Lena", "Mateo",
    "Nora", "Oscar", "Priya", "Rafael", "Sofia", "Tomas", "Ulla", "Victor", "Wanda", "Xavier", "Yara", "Zain", "Alice",
    "Bilal", "Carmen", "David", "Esther", "Felix", "Gita", "Hugo", "Iris", "Jamal", "Kira", "Leo", "Mina",
];
const LAST: [&str; 64] = [
    "Okafor",
    "Chen",
    "Rivera",
    "Petrova",
    "Kim",
    "Haddad",
    "Wright",
    "Moreno",
    "Patel",
    "Becker",
    "Tanaka",
    "Alvarez",
    "Nguyen",
    "Schmidt",
    "Costa",
    "Ivanova",
    "Mensah",
    "Larsen",
    "Kowalski",
    "Dubois",
    "Rossi",
    "Sato",
    "Oliveira",
    "Novak",
    "Murphy",
    "Fischer",
    "Ali",
    "Santos",
    "Yilmaz",
    "Jansen",
    "Eriksson",
    "Popescu",
    "Horvat",
    "Silva",
    "Khan",
    "Park",
    "Lopez",
    "Muller",
    "Bianchi",
    "Svensson",
    "Adeyemi",
    "Gomez",
    "Ortiz",
    "Hansen",
    "Rahman",
    "Walsh",
    "Kaur",
    "Cohen",
    "Lindqvist",
    "Mbeki",
    "Nakamura",
    "Sharma",
    "Torres",
    "Vargas",
    "Weber",
    "Zhou",
    "Abbott",
    "Brennan",
    "Castillo",
    "Delgado",
    "Fontaine",
    "Gallagher",
    "Ibrahim",
    "Jovanovic",
];
const ROLES: [&str; 16] = [
    "Systems Architect",
    "Product Manager",
    "Trust and Safety Lead",
    "ML Engineer",
    "Ethicist",
    "Small Business Owner",
    "UX Researcher",
    "City Council Member",
    "Community Organizer",
    "Site Reliability Engineer",
    "Support Team Lead",
    "Security Engineer",
    "Data Journalist",
    "Nurse Practitioner",
    "Procurement Officer",
    "High School Teacher",
];
const TRAITS: [&str; 16] = [
    "analytical",
    "pragmatic",
    "empathetic",
    "skeptical",
    "curious",
    "patient",
    "decisive",
    "methodical",
    "optimistic",
    "blunt",
    "diplomatic",
    "creative",
    "cautious",
    "energetic",
    "detail-oriented",
    "candid",
];
const TAGS: [&str; 20] = [
    "engineering",
    "product",
    "policy",
    "research",
    "design",
    "operations",
    "security",
    "civic",
    "finance",
    "community",
    "consumer",
    "health",
    "education",
    "media",
    "legal",
    "leadership",
    "support",
    "ml",
    "reliability",
    "advocacy",
];
const STYLES: [&str; 4] = [
    "Concise and professional; leads with the conclusion",
    "Warm and professional; asks questions before judging",
    "Direct and professional; quotes numbers and sources",
    "Story-driven but professional; uses concrete examples",
];
const COMMUNICATION: [&str; 3] = ["structured", "visual", "direct"];
const DECISIONS: [&str; 3] = ["data-driven", "intuitive", "collaborative"];
const APPROACH: [&str; 3] = ["systematic", "creative", "pragmatic"];

fn persona(i: usize) -> Value {
    let first = FIRST[i % 64];
    let initial = (b'A' + ((i / 64) % 26) as u8) as char;
    let last = LAST[(i / (64 * 26)) % 64];
    let role = ROLES[i % 16];
    let t = |k: usize| TRAITS[(i * 7 + k * 5) % 16];
    let tag = |k: usize| TAGS[(i * 3 + k * 7) % 20];
    let tags: Vec<&str> = (0..2 + i % 3).map(tag).collect();
    let years = 3 + i % 25;
    json!({
        "type": "TinyPerson",
        "id": format!("{}_{}_{}", first.to_lowercase(), last.to_lowercase(), i),
        "name": format!("{first} {initial}. {last}"),
        "role": role,
        "description": format!(
            "{first} has worked for {years} years as a {role}; cares about how decisions land on the people doing the work."
        ),
        "personality": {
            "traits": [t(0), t(1), t(2)],
            "goals": [
                format!("Make sure the {} view is heard", tags[0]),
                "Leave with a decision and an owner",
            ],
            "style": STYLES[i % 4],
            "communication": COMMUNICATION[i % 3],
            "decisions": DECISIONS[(i / 3) % 3],
            "approach": APPROACH[(i / 9) % 3]
        },
        "temperature": 0.2 + (i % 10) as f64 / 10.0,
        "validation_rules": {"required_traits": [t(0)], "max_goals": 3, "style_constraints": ["professional"]},
        "tags": tags
    })
}

fn load_index_validate(path: &Path) -> usize {
    let db = PersonaDatabase::load(path).unwrap();
    let idx = db.tag_index();
    let report = validate_database(&db);
    black_box(&idx);
    report.findings.len()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("personas.json");
    // One persona per line, as a tool exporting 100,000 personas would write them.
    let lines: Vec<String> = (0..COUNT).map(|i| persona(i).to_string()).collect();
    std::fs::write(&path, format!("[\n{}\n]\n", lines.join(",\n"))).unwrap();
    drop(lines);
    let bytes = std::fs::metadata(&path).unwrap().len();
    let db = PersonaDatabase::load(&path).unwrap();
    let report = validate_database(&db);
    assert_eq!((db.personas.len(), report.findings.len()), (COUNT, 0), "{:?}", report.findings.first());
    eprintln!("{COUNT} personas, {:.1} MB ({} bytes per persona)", bytes as f64 / 1e6, bytes as usize / COUNT);

    let mut g = c.benchmark_group("personas_100k");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(6));
    g.bench_function("load", |b| b.iter(|| PersonaDatabase::load(black_box(&path)).unwrap()));
    g.bench_function("tag_index", |b| b.iter(|| black_box(&db).tag_index()));
    g.bench_function("validate", |b| b.iter(|| validate_database(black_box(&db))));
    g.bench_function("load+index+validate", |b| b.iter(|| load_index_validate(black_box(&path))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
