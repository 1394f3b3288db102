//! Fuzzing (issue 6): the five parsers that read outside input — the persona loader, the
//! scenario parser, the config.ini reader, the SSE stream parser and the journal reader — get
//! arbitrary bytes and mutated valid inputs, and must never panic.
//!
//! These are proptest-based fuzz targets: each runs `FUZZ_CASES` cases (default 1,500; CI uses
//! the default, a run of a few seconds per target). proptest keeps any failing input in
//! `tests/fuzz.proptest-regressions`, so a crash found once is re-tested on every run.

use std::path::Path;

use proptest::prelude::*;
use troupe_sim::config::IniProvider;
use troupe_sim::llm::sse::SseParser;
use troupe_sim::persona::load::{parse_json_file, persona_from_value};
use troupe_sim::persona::validate::check_persona;
use troupe_sim::record::journal::parse_journal;
use troupe_sim::scenario::parse_scenario;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1500)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() }
}

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn seed_file(rel: &str) -> Vec<u8> {
    std::fs::read(Path::new(ROOT).join(rel)).unwrap()
}

/// A valid input with random damage: bytes flipped, a slice cut out, junk inserted, truncated.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len().max(1);
    (
        prop::collection::vec((0..len, any::<u8>()), 0..8),
        prop::option::of((0..len, 0..64usize)),
        prop::option::of((0..len, prop::collection::vec(any::<u8>(), 0..32))),
        prop::option::of(0..len),
    )
        .prop_map(move |(flips, cut, insert, truncate)| {
            let mut b = seed.clone();
            for (i, v) in flips {
                if i < b.len() {
                    b[i] = v;
                }
            }
            if let Some((at, n)) = cut
                && at < b.len()
            {
                let end = (at + n).min(b.len());
                b.drain(at..end);
            }
            if let Some((at, junk)) = insert {
                let at = at.min(b.len());
                b.splice(at..at, junk);
            }
            if let Some(t) = truncate {
                b.truncate(t);
            }
            b
        })
}

fn load_personas(bytes: &[u8]) {
    if let Ok(v) = parse_json_file(Path::new("fuzz.json"), bytes) {
        let items = match v {
            serde_json::Value::Array(a) => a,
            other => vec![other],
        };
        for item in items {
            if let Ok(p) = persona_from_value(item) {
                let _ = check_persona(&p);
                let _ = p.to_saved_value();
            }
        }
    }
}

fn sse(bytes: &[u8], split: usize) {
    let mut p = SseParser::new();
    let cut = split.min(bytes.len());
    let mut events = p.feed(&bytes[..cut]);
    events.extend(p.feed(&bytes[cut..]));
    events.extend(p.finish());
    for e in events {
        let _ = e.is_done();
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn persona_loader_arbitrary(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        load_personas(&bytes);
    }

    #[test]
    fn persona_loader_mutated(bytes in mutated(seed_file("data/personas.agents.json"))) {
        load_personas(&bytes);
    }

    #[test]
    fn tinytroupe_agent_mutated(bytes in mutated(seed_file("data/agents/lisa_carter.agent.json"))) {
        load_personas(&bytes);
    }

    #[test]
    fn scenario_parser_arbitrary(text in "\\PC{0,400}") {
        let _ = parse_scenario(Path::new("fuzz.ron"), &text);
    }

    #[test]
    fn scenario_parser_mutated(bytes in mutated(seed_file("scenarios/city_budget.ron"))) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_scenario(Path::new("fuzz.ron"), &text);
    }

    #[test]
    fn config_ini_arbitrary(text in "(\\[[A-Za-z]{0,12}\\]\\n|[A-Za-z_ ]{0,16}[=:][^\\n]{0,20}\\n|[;#][^\\n]{0,10}\\n|\\PC{0,20}\\n){0,20}") {
        let _ = IniProvider::parse(Path::new("fuzz.ini"), &text);
    }

    #[test]
    fn config_ini_mutated(bytes in mutated(seed_file("config/config.ini.example"))) {
        let _ = IniProvider::parse(Path::new("fuzz.ini"), &String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn sse_parser_arbitrary(bytes in prop::collection::vec(any::<u8>(), 0..512), split in 0..512usize) {
        sse(&bytes, split);
    }

    #[test]
    fn sse_parser_mutated(
        bytes in mutated(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n: keep-alive\r\n\r\ndata: [DONE]\n\n".to_vec()),
        split in 0..128usize,
    ) {
        sse(&bytes, split);
    }

    #[test]
    fn journal_reader_arbitrary(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_journal(Path::new("journal.jsonl"), &bytes);
    }

    #[test]
    fn journal_reader_mutated(bytes in mutated(sample_journal())) {
        if let Ok(j) = parse_journal(Path::new("journal.jsonl"), &bytes) {
            let _ = (j.completed_turns(), j.end(), j.exchanges().count(), j.messages().count());
        }
    }
}

/// A real journal, written by a short simulated run, as the seed for mutations.
fn sample_journal() -> Vec<u8> {
    static SAMPLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    SAMPLE
        .get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let tmp = tempfile::tempdir().unwrap();
            let mut cfg = troupe_sim::config::SimulationConfig::default();
            cfg.llm.provider = troupe_sim::config::ProviderKind::Simulated;
            cfg.simulation.max_turns = 2;
            cfg.performance.rate_limit_delay = 0.0;
            cfg.simulation.personas_file = Path::new(ROOT).join("data/personas.agents.json");
            cfg.llm.pricing_file = Path::new(ROOT).join("config/pricing.toml");
            let engine = troupe_sim::engine::SimulationEngine::new(cfg).unwrap();
            let r = rt
                .block_on(async {
                    let h = engine
                        .start(
                            troupe_sim::engine::RunPlan::ad_hoc(
                                "Fuzz the journal",
                                vec![
                                    troupe_sim::persona::PersonaDatabase::load(
                                        &Path::new(ROOT).join("data/personas.agents.json"),
                                    )
                                    .unwrap()
                                    .personas[0]
                                        .clone(),
                                ],
                            ),
                            troupe_sim::engine::RunOptions {
                                save_under: Some(tmp.path().to_path_buf()),
                                ..Default::default()
                            },
                        )
                        .await
                        .unwrap();
                    h.wait().await
                })
                .unwrap();
            std::fs::read(r.run_dir.unwrap().join("journal.jsonl")).unwrap()
        })
        .clone()
}
