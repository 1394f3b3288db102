//! The persona database (issue 2): one test per validation rule, the shipped data, TinyTroupe
//! agent files and fragments, the four source kinds, adversarial inputs, atomic saving, and
//! property tests for lossless round trips and panic-free parsing.
//!
//! Files are written one persona per line (`[` on line 1, persona `i` on line `i + 2` from
//! column 3) so each test can say exactly which `line:col` a finding must name.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tempfile::TempDir;
use troupe_sim::persona::json::{PositionIndex, parse_strict};
use troupe_sim::persona::load::{Layout, persona_from_value};
use troupe_sim::persona::validate::MAX_FIELD_BYTES;
use troupe_sim::persona::{
    Finding, Fragment, LineCol, Origin, PersonaDatabase, PersonaError, PersonaSpec, SaveTarget, Severity,
    ValidationReport, add_personas, apply_fragment, load_personas_by_tags, save_personas, validate_database,
};

mod support {
    pub mod cli;
}

use support::cli::{ROOT, troupe_in};

fn shipped(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

/// A native persona that passes every rule, completeness warnings included.
fn valid(id: &str, name: &str) -> Value {
    json!({
        "type": "TinyPerson",
        "id": id,
        "name": name,
        "role": "Systems Architect",
        "description": "Sixteen years of distributed systems work, mostly storage and replication.",
        "personality": {
            "traits": ["analytical", "patient"],
            "goals": ["Find the failure modes first", "Keep the design simple"],
            "style": "Measured and professional; asks for numbers",
            "communication": "structured",
            "decisions": "data-driven",
            "approach": "systematic"
        },
        "model": "gpt-4o-mini",
        "temperature": 0.4,
        "prompting": {"format": "markdown", "role": "You are a careful architect."},
        "validation_rules": {
            "required_traits": ["Analytical"],
            "max_goals": 2,
            "style_constraints": ["PROFESSIONAL"]
        },
        "tags": ["engineering"]
    })
}

/// Writes personas one per line and returns the text.
fn write_lines(path: &Path, personas: &[Value]) -> String {
    let body: Vec<String> = personas.iter().map(|p| format!("  {p}")).collect();
    let text = format!("[\n{}\n]\n", body.join(",\n"));
    fs::write(path, &text).unwrap();
    text
}

/// Where the value reached by `keys` starts in persona `i` of a `write_lines` file; the persona
/// object itself when `keys` is empty.
fn at(text: &str, i: usize, keys: &[&str]) -> LineCol {
    let line = text.lines().nth(i + 1).unwrap();
    let mut col = 2; // 0-based: the persona's `{`
    for k in keys {
        let needle = format!("\"{k}\":");
        col += line[col..].find(&needle).unwrap_or_else(|| panic!("{k} not in {line}")) + needle.len();
    }
    LineCol { line: i + 2, col: col + 1 }
}

/// One broken persona after a valid one, in a file of its own, validated.
struct Case {
    _dir: TempDir,
    path: PathBuf,
    text: String,
    report: ValidationReport,
}

fn case(break_it: impl FnOnce(&mut Map<String, Value>)) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("personas.json");
    let mut broken = valid("broken_one", "Broken One");
    break_it(broken.as_object_mut().unwrap());
    let text = write_lines(&path, &[valid("good_one", "Good One"), broken]);
    let db = PersonaDatabase::load(&path).unwrap();
    let report = validate_database(&db);
    Case { _dir: dir, path, text, report }
}

fn personality(p: &mut Map<String, Value>) -> &mut Map<String, Value> {
    p["personality"].as_object_mut().unwrap()
}

impl Case {
    /// Asserts the report holds exactly `n` findings.
    #[track_caller]
    fn count(&self, n: usize) -> &Self {
        assert_eq!(self.report.findings.len(), n, "{:#?}", self.report.findings);
        self
    }

    /// Asserts exactly one finding on `field`, with this severity and persona, naming this file
    /// at the start of the value reached by `keys` in the broken persona (line 3).
    #[track_caller]
    fn one(&self, severity: Severity, field: &str, persona: &str, keys: &[&str]) -> Finding {
        let hits: Vec<&Finding> = self.report.findings.iter().filter(|f| f.field == field).collect();
        assert_eq!(hits.len(), 1, "one finding on `{field}` expected: {:#?}", self.report.findings);
        let f = hits[0].clone();
        assert_eq!(f.severity, severity, "{f}");
        assert_eq!(f.persona, persona, "{f}");
        assert_eq!(f.file, self.path, "{f}");
        let pos = at(&self.text, 1, keys);
        assert_eq!(f.position, Some(pos), "{f}");
        assert!(!f.hint.trim().is_empty(), "a finding says how to fix it: {f}");
        let shown = f.to_string();
        assert!(shown.contains(&format!("{}:{pos}", self.path.display())), "{shown}");
        f
    }
}

// ---------------------------------------------------------------- the baseline

#[test]
fn the_baseline_persona_has_no_findings() {
    let c = case(|_| {});
    c.count(0);
    assert_eq!(c.report.personas, 2);
    assert!(c.report.is_valid());
}

// ---------------------------------------------------------------- required fields

#[test]
fn rule_id_is_required() {
    let c = case(|p| {
        p.remove("id");
    });
    c.count(1).one(Severity::Error, "id", "#1", &[]);
    let c = case(|p| p["id"] = json!(""));
    c.count(1).one(Severity::Error, "id", "#1", &["id"]);
    assert!(!c.report.is_valid());
}

#[test]
fn rule_name_is_required() {
    case(|p| {
        p.remove("name");
    })
    .count(1)
    .one(Severity::Error, "name", "broken_one", &[]);
    case(|p| p["name"] = json!("   ")).count(1).one(Severity::Error, "name", "broken_one", &["name"]);
}

#[test]
fn rule_role_is_required() {
    case(|p| {
        p.remove("role");
    })
    .count(1)
    .one(Severity::Error, "role", "broken_one", &[]);
    case(|p| p["role"] = json!("")).count(1).one(Severity::Error, "role", "broken_one", &["role"]);
}

#[test]
fn rule_description_is_required() {
    case(|p| {
        p.remove("description");
    })
    .count(1)
    .one(Severity::Error, "description", "broken_one", &[]);
    case(|p| p["description"] = json!("\n\t")).count(1).one(
        Severity::Error,
        "description",
        "broken_one",
        &["description"],
    );
}

#[test]
fn rule_personality_is_required() {
    let c = case(|p| {
        p.remove("personality");
        p.remove("validation_rules");
    });
    c.one(Severity::Error, "personality", "broken_one", &[]);
    // Without a personality the completeness fields are missing too, as warnings.
    assert_eq!((c.report.errors(), c.report.warnings()), (1, 3), "{:#?}", c.report.findings);
}

// ---------------------------------------------------------------- id, temperature

#[test]
fn rule_id_allows_only_letters_digits_underscore_dash() {
    for bad in ["sarah chen", "sarah.chen", "a/b", "zoë", "x;drop", "tab\there"] {
        let c = case(|p| p["id"] = json!(bad));
        let f = c.count(1).one(Severity::Error, "id", bad, &["id"]);
        assert!(f.message.contains("letters, digits"), "{f}");
    }
    case(|p| p["id"] = json!("Ok-id_09")).count(0);
}

#[test]
fn rule_temperature_is_within_0_and_2() {
    for bad in [2.0001, -0.1, 7.0] {
        let f = case(|p| p["temperature"] = json!(bad)).count(1).one(
            Severity::Error,
            "temperature",
            "broken_one",
            &["temperature"],
        );
        assert!(f.message.contains(&bad.to_string()), "{f}");
    }
    for edge in [0.0, 2.0] {
        case(|p| p["temperature"] = json!(edge)).count(0);
    }
    case(|p| {
        p.remove("temperature");
    })
    .count(0);
}

// ---------------------------------------------------------------- personality contents

#[test]
fn rule_traits_are_not_empty() {
    for empty in [json!([]), json!(["", "  "])] {
        case(|p| {
            personality(p)["traits"] = empty;
            p.remove("validation_rules");
        })
        .count(1)
        .one(Severity::Error, "personality.traits", "broken_one", &["personality", "traits"]);
    }
}

#[test]
fn rule_goals_are_not_empty() {
    case(|p| personality(p)["goals"] = json!([])).count(1).one(
        Severity::Error,
        "personality.goals",
        "broken_one",
        &["personality", "goals"],
    );
}

#[test]
fn rule_style_is_not_empty() {
    case(|p| {
        personality(p)["style"] = json!(" ");
        p.remove("validation_rules");
    })
    .count(1)
    .one(Severity::Error, "personality.style", "broken_one", &["personality", "style"]);
}

#[test]
fn rule_completeness_warns_on_communication_decisions_approach() {
    for field in ["communication", "decisions", "approach"] {
        let c = case(|p| {
            personality(p).remove(field);
        });
        // A missing field points at the personality block that should hold it.
        let f = c.count(1).one(Severity::Warning, &format!("personality.{field}"), "broken_one", &["personality"]);
        assert!(f.message.contains("less complete"), "{f}");
        assert!(c.report.is_valid(), "warnings do not make the database invalid");
        // An empty string counts as unset.
        case(|p| personality(p)[field] = json!("")).count(1).one(
            Severity::Warning,
            &format!("personality.{field}"),
            "broken_one",
            &["personality", field],
        );
    }
}

// ---------------------------------------------------------------- the persona's own rules

#[test]
fn rule_required_traits_are_present() {
    let f = case(|p| p["validation_rules"]["required_traits"] = json!(["analytical", "curious"])).count(1).one(
        Severity::Error,
        "personality.traits",
        "broken_one",
        &["personality", "traits"],
    );
    assert!(f.message.contains("\"curious\""), "{f}");
}

#[test]
fn rule_max_goals_is_respected() {
    let f = case(|p| p["validation_rules"]["max_goals"] = json!(1)).count(1).one(
        Severity::Error,
        "personality.goals",
        "broken_one",
        &["personality", "goals"],
    );
    assert!(f.message.contains("max_goals = 1"), "{f}");
    case(|p| p["validation_rules"]["max_goals"] = json!(0)).count(1);
}

#[test]
fn rule_style_constraints_are_met() {
    let f = case(|p| p["validation_rules"]["style_constraints"] = json!(["professional", "formal"])).count(1).one(
        Severity::Error,
        "personality.style",
        "broken_one",
        &["personality", "style"],
    );
    assert!(f.message.contains("\"formal\""), "{f}");
}

#[test]
fn rule_fields_have_a_size_limit() {
    let long = "x".repeat(MAX_FIELD_BYTES + 1);
    case(|p| p["description"] = json!(long)).count(1).one(
        Severity::Error,
        "description",
        "broken_one",
        &["description"],
    );
    case(|p| p["description"] = json!("y".repeat(MAX_FIELD_BYTES))).count(0);
    // List items have the same limit; `item_positions_are_exact` checks where they point.
    let c = case(|p| personality(p)["traits"] = json!(["analytical", long]));
    c.count(1);
    assert_eq!(c.report.findings[0].field, "personality.traits.1");
}

#[test]
fn every_broken_rule_is_reported_not_just_the_first() {
    let c = case(|p| {
        p.remove("role");
        p["id"] = json!("bad id");
        p["temperature"] = json!(9.5);
        personality(p)["goals"] = json!([]);
        personality(p).remove("approach");
    });
    let fields: Vec<&str> = c.report.findings.iter().map(|f| f.field.as_str()).collect();
    for want in ["role", "id", "temperature", "personality.goals", "personality.approach"] {
        assert!(fields.contains(&want), "{want} missing from {fields:?}");
    }
    assert_eq!((c.report.errors(), c.report.warnings()), (4, 1));
}

// ---------------------------------------------------------------- duplicates

/// Two files in a folder (one nested), each holding one persona; returns the report and paths.
fn two_files(a: Value, b: Value) -> (TempDir, PathBuf, PathBuf, ValidationReport) {
    let dir = tempfile::tempdir().unwrap();
    let pa = dir.path().join("a.json");
    fs::create_dir(dir.path().join("team")).unwrap();
    let pb = dir.path().join("team").join("b.json");
    write_lines(&pa, &[valid("filler_a", "Filler A"), a]);
    write_lines(&pb, &[b]);
    let db = PersonaDatabase::load(dir.path()).unwrap();
    let r = validate_database(&db);
    (dir, pa, pb, r)
}

#[test]
fn rule_ids_are_unique_across_files_naming_both_places() {
    let (_d, pa, pb, r) = two_files(valid("sarah_chen", "Sarah Chen"), valid("sarah_chen", "Someone Else"));
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    let f = &r.findings[0];
    assert_eq!((f.severity, f.field.as_str(), f.persona.as_str()), (Severity::Error, "id", "sarah_chen"));
    // This place: the second file, at the id value.
    assert_eq!(f.file, pb);
    assert_eq!(f.position, Some(at(&fs::read_to_string(&pb).unwrap(), 0, &["id"])));
    // The other place: the first file, at the persona.
    assert!(f.message.contains(&format!("{}:3:3", pa.display())), "{}", f.message);
}

#[test]
fn rule_names_are_unique_ignoring_case_naming_both_places() {
    let (_d, pa, pb, r) = two_files(valid("sarah_a", "Dr. Sarah Chen"), valid("sarah_b", "DR. SARAH CHEN"));
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    let f = &r.findings[0];
    assert_eq!((f.severity, f.field.as_str(), f.persona.as_str()), (Severity::Error, "name", "sarah_b"));
    assert_eq!(f.file, pb);
    let text = fs::read_to_string(&pb).unwrap();
    assert_eq!(f.position, Some(at(&text, 0, &["name"])));
    assert!(f.message.contains(&format!("{}:3:3", pa.display())), "{}", f.message);
    assert!(f.message.contains("sarah_a"), "{}", f.message);
}

#[test]
fn duplicates_within_one_file_are_found_too() {
    let c = case(|p| {
        p["id"] = json!("good_one");
        p["name"] = json!("good ONE");
    });
    c.count(2);
    c.one(Severity::Error, "id", "good_one", &["id"]);
    let f = c.one(Severity::Error, "name", "good_one", &["name"]);
    assert!(f.message.contains(&format!("{}:2:3", c.path.display())), "{}", f.message);
}

// ---------------------------------------------------------------- positions

#[test]
fn item_positions_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    let mut p = valid("items", "Items");
    p["personality"]["traits"] = json!(["analytical", "x".repeat(MAX_FIELD_BYTES + 1)]);
    let text = write_lines(&path, &[p]);
    let r = validate_database(&PersonaDatabase::load(&path).unwrap());
    let f = r.findings.iter().find(|f| f.field == "personality.traits.1").unwrap();
    let line = text.lines().nth(1).unwrap();
    let col = line.find(",\"xxx").unwrap() + 2;
    assert_eq!(f.position, Some(LineCol { line: 2, col }));
}

#[test]
fn tinytroupe_findings_point_into_the_agent_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody.agent.json");
    let text = "{\n  \"type\": \"TinyPerson\",\n  \"persona\": {\n    \"name\": \"No Style\",\n    \"occupation\": {\"title\": \"Clerk\", \"description\": \"Files things.\"},\n    \"long_term_goals\": [\"Retire\"],\n    \"personality\": {\"traits\": []}\n  }\n}\n";
    fs::write(&path, text).unwrap();
    let r = validate_database(&PersonaDatabase::load(&path).unwrap());
    // Neither a style nor traits to build one from: TinyTroupe does not require a style, so a
    // warning (issue 13).
    let style = r.findings.iter().find(|f| f.field == "personality.style").unwrap();
    assert_eq!(style.severity, Severity::Warning);
    assert_eq!(style.persona, "no_style");
    assert_eq!(style.file, path);
    // No `style` key: the finding points at the `persona` object that should hold it.
    assert_eq!(style.position, Some(LineCol { line: 3, col: 14 }));
    // Without big_five, the completeness fields are warnings that say how to derive them.
    let warn = r.findings.iter().find(|f| f.field == "personality.approach").unwrap();
    assert_eq!(warn.severity, Severity::Warning);
    assert!(warn.hint.contains("big_five"), "{warn}");
}

// ---------------------------------------------------------------- shipped data

#[test]
fn shipped_native_database_is_clean() {
    let db = PersonaDatabase::load(&shipped("data/personas.agents.json")).unwrap();
    assert!(db.personas.len() >= 10, "at least 10 personas ship");
    assert_eq!(db.files[0].layout, Layout::Array);
    let r = validate_database(&db);
    assert_eq!((r.errors(), r.warnings()), (0, 0), "{:#?}", r.findings);
    let mut roles: Vec<&str> = db.personas.iter().map(|p| p.role.as_str()).collect();
    roles.sort_unstable();
    roles.dedup();
    assert_eq!(roles.len(), db.personas.len(), "each shipped persona has its own role");
    for p in &db.personas {
        assert!(p.description.len() > 200, "{} has a real background", p.id);
        assert!(!p.tags.is_empty(), "{} has tags", p.id);
    }
}

#[test]
fn shipped_tinytroupe_agents_and_fragments_are_clean() {
    let db = PersonaDatabase::load(&shipped("data/agents")).unwrap();
    assert!(db.personas.len() >= 3);
    assert!(db.fragments.len() >= 2);
    assert!(db.personas.iter().all(|p| matches!(p.origin, Origin::TinyTroupe { .. })));
    let r = validate_database(&db);
    assert_eq!((r.errors(), r.warnings()), (0, 0), "{:#?}", r.findings);
}

#[test]
fn shipped_agents_save_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = PersonaDatabase::load(&shipped("data/agents")).unwrap();
    let out = dir.path().join("agents.json");
    save_personas(&out, &db.personas, &dir.path().join("backups")).unwrap();
    let saved = parse_strict(&fs::read(&out).unwrap()).unwrap();
    let saved = saved.as_array().unwrap();
    let mut originals = db.files.iter().filter(|f| f.layout == Layout::Single);
    for item in saved {
        let original = parse_strict(&fs::read(&originals.next().unwrap().path).unwrap()).unwrap();
        assert_eq!(item.to_string(), original.to_string(), "byte-equal, key order included");
    }
}

// ---------------------------------------------------------------- TinyTroupe files

fn loose_agent() -> Value {
    json!({
        "type": "TinyPerson",
        "persona": {
            "name": "Rosa Delgado-Ng",
            "age": "mid forties",
            "gender": "Female",
            "nationality": "Mexican-American",
            "residence": ["Tucson", "Arizona"],
            "education": {"degree": "B.Ed.", "school": "University of Arizona"},
            "occupation": "Third-grade teacher",
            "long_term_goals": "Get every student reading at grade level by June.",
            "style": ["Warm", "plain-spoken"],
            "personality": {
                "traits": "You are patient but firm.",
                "big_five": {
                    "openness": "High. Tries new lesson plans every term.",
                    "conscientiousness": "High. Grades on time.",
                    "extraversion": "Low. Recharges alone.",
                    "agreeableness": "Very high. Avoids conflict.",
                    "neuroticism": ["Medium", "worries before report cards"]
                }
            },
            "preferences": {"interests": "Gardening", "likes": ["Quiet mornings"], "dislikes": {"food": ["cilantro"]}},
            "skills": "Classroom management",
            "beliefs": {"education": ["Every child can learn to read."]},
            "behaviors": {
                "debate": ["Asks for an example.", "Summarises the other side first."],
                "general": "Keeps a paper notebook."
            },
            "health": null,
            "relationships": [{"name": "Tomás", "description": "Her brother, a civil engineer."}],
            "other_facts": {"hobbies": ["chess"], "pets": "a one-eyed cat"},
            "favourite_number": 7
        },
        "mental_faculties": [{"type": "RecallFaculty"}],
        "_version": 3
    })
}

#[test]
fn tinytroupe_loose_shapes_load_and_map_sensibly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rosa.agent.json");
    fs::write(&path, serde_json::to_string_pretty(&loose_agent()).unwrap()).unwrap();
    let db = PersonaDatabase::load(&path).unwrap();
    assert_eq!(db.files[0].layout, Layout::Single);
    assert!(db.load_findings.is_empty(), "{:#?}", db.load_findings);
    let p = &db.personas[0];
    assert_eq!(p.id, "rosa_delgado_ng", "id from the name");
    assert_eq!(p.name, "Rosa Delgado-Ng");
    assert_eq!(p.role, "Third-grade teacher", "role from a string occupation");
    assert_eq!(p.personality.goals, ["Get every student reading at grade level by June."]);
    assert_eq!(p.personality.traits, ["You are patient but firm."]);
    assert_eq!(p.personality.style, "Warm; plain-spoken");
    for part in [
        "age: mid forties",
        "residence: Tucson; Arizona",
        "school: University of Arizona",
        "hobbies: chess",
        "pets: a one-eyed cat",
    ] {
        assert!(p.description.contains(part), "{part:?} not in {:?}", p.description);
    }
    assert_eq!(
        (p.personality.communication.as_str(), p.personality.decisions.as_str(), p.personality.approach.as_str()),
        ("structured", "collaborative", "creative"),
        "derived from big_five"
    );
    assert!(p.has_tag("tinytroupe"));
    let r = validate_database(&db);
    assert_eq!((r.errors(), r.warnings()), (0, 0), "{:#?}", r.findings);
}

#[test]
fn tinytroupe_occupation_object_maps_role_and_description() {
    let agent = json!({"type": "TinyPerson", "persona": {
        "name": "Lisa", "occupation": {"title": "Data Scientist", "organization": "Microsoft",
        "description": ["Analyses search logs.", "Builds ranking models."]}}});
    let p = persona_from_value(agent).unwrap();
    assert_eq!((p.id.as_str(), p.role.as_str()), ("lisa", "Data Scientist"));
    assert!(
        p.description.contains("Works at Microsoft. Analyses search logs. Builds ranking models."),
        "{}",
        p.description
    );
}

#[test]
fn tinytroupe_agent_saves_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rosa.agent.json");
    fs::write(&path, serde_json::to_string_pretty(&loose_agent()).unwrap()).unwrap();
    let db = PersonaDatabase::load(&path).unwrap();
    let out = dir.path().join("saved.json");
    save_personas(&out, &db.personas, &dir.path().join("backups")).unwrap();
    let saved = parse_strict(&fs::read(&out).unwrap()).unwrap();
    assert_eq!(saved[0], loose_agent());
    assert_eq!(saved[0].to_string(), loose_agent().to_string(), "key order kept too");
}

// ---------------------------------------------------------------- issue 13: TinyTroupe files as users have them

/// A TinyTroupe agent with `persona` fields as given.
fn agent(persona: Value) -> Value {
    json!({"type": "TinyPerson", "persona": persona})
}

/// Writes `value` pretty-printed as `name` in a fresh folder and validates it.
fn load_one(name: &str, value: &Value) -> (TempDir, PathBuf, String, ValidationReport, PersonaDatabase) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    let text = serde_json::to_string_pretty(value).unwrap();
    fs::write(&path, &text).unwrap();
    let db = PersonaDatabase::load(&path).unwrap();
    let r = validate_database(&db);
    (dir, path, text, r, db)
}

/// The 1-based `line:col` where `needle` starts in `text`.
fn where_in(text: &str, needle: &str) -> LineCol {
    let off = text.find(needle).unwrap_or_else(|| panic!("{needle} not in {text}"));
    let line = text[..off].matches('\n').count() + 1;
    let col = off - text[..off].rfind('\n').map_or(0, |i| i + 1) + 1;
    LineCol { line, col }
}

#[test]
fn ids_from_names_transliterate_latin_letters() {
    for (name, id) in [
        ("Tomás Ferreira", "tomas_ferreira"),
        ("Zoë Ångström", "zoe_angstrom"),
        ("Łukasz Żółć", "lukasz_zolc"),
        ("José Müller-Straße", "jose_muller_strasse"),
        ("Søren Kierkegaard-Æbelø", "soren_kierkegaard_aebelo"),
        ("Nguyễn Thị Minh Khai", "nguyen_thi_minh_khai"),
        ("Ольга Петренко", "olga_petrenko"),
        ("Δήμητρα Παπαδοπούλου", "dimitra_papadopoulou"),
    ] {
        let p = persona_from_value(agent(json!({"name": name, "occupation": "Clerk"}))).unwrap();
        assert_eq!(p.id, id, "{name}");
    }
}

#[test]
fn ids_from_names_in_other_scripts_are_stable_and_distinct() {
    let id = |name: &str| persona_from_value(agent(json!({"name": name, "occupation": "Clerk"}))).unwrap().id;
    let (a, b) = (id("王小明"), id("李华"));
    for x in [&a, &b] {
        assert!(x.starts_with("persona_") && x.len() > "persona_".len(), "{x}");
        assert!(x.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{x}");
    }
    assert_ne!(a, b, "two names never share an id");
    assert_eq!(a, id("王小明"), "the same name gives the same id on every load");
    // Part of the name is kept when part can be written in ASCII; the rest still tells it apart.
    let (c, d) = (id("Wei 王"), id("Wei 李"));
    assert!(c.starts_with("wei_") && d.starts_with("wei_") && c != d, "{c} {d}");
    // Run ids and other slugs transliterate too.
    assert_eq!(troupe_sim::persona::tinytroupe::slug("Café Ölmühle"), "cafe_olmuhle");
}

#[test]
fn a_json_file_with_a_byte_order_mark_loads_with_exact_positions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bom.json");
    let mut broken = valid("bom_two", "Bom Two");
    broken["temperature"] = json!(9.5);
    let text = format!("[\n  {},\n  {}\n]\n", valid("bom_one", "Bom One"), broken);
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(text.as_bytes());
    fs::write(&path, &bytes).unwrap();
    let db = PersonaDatabase::load(&path).unwrap();
    assert_eq!(db.personas.len(), 2);
    let r = validate_database(&db);
    let f = r.findings.iter().find(|f| f.field == "temperature").expect("the bad temperature is found");
    // Columns count what an editor shows: the invisible mark takes none.
    assert_eq!(f.position, Some(at(&text, 1, &["temperature"])), "{f}");

    // An agent file and a fragment with a mark load too.
    let agent_path = dir.path().join("lisa.agent.json");
    let mut a = b"\xEF\xBB\xBF".to_vec();
    a.extend_from_slice(&fs::read(shipped("data/agents/lisa_carter.agent.json")).unwrap());
    fs::write(&agent_path, &a).unwrap();
    let frag_path = dir.path().join("skeptic.fragment.json");
    let mut fr = b"\xEF\xBB\xBF".to_vec();
    fr.extend_from_slice(br#"{"type": "Fragment", "persona": {"personality": {"traits": ["sceptical"]}}}"#);
    fs::write(&frag_path, &fr).unwrap();
    let mut db = PersonaDatabase::load(&agent_path).unwrap();
    db.add_source(&frag_path).unwrap();
    assert_eq!((db.personas.len(), db.fragments.len()), (1, 1));
    assert_eq!(db.personas[0].id, "lisa_carter");

    // A syntax error after the mark is still placed where an editor shows it.
    let bad = dir.path().join("bad.json");
    fs::write(&bad, b"\xEF\xBB\xBF[\n  {\"id\": }\n]\n").unwrap();
    let e = PersonaDatabase::load(&bad).unwrap_err().to_string();
    assert!(e.contains(&format!("{}:2:", bad.display())), "{e}");
    // A file of only a mark is an empty file.
    let empty = dir.path().join("empty.json");
    fs::write(&empty, b"\xEF\xBB\xBF\n").unwrap();
    assert!(matches!(PersonaDatabase::load(&empty), Err(PersonaError::Empty { .. })));
    // Inline JSON (scenario personas) may carry one as well.
    let inline = format!("\u{feff}{}", valid("inline_bom", "Inline Bom"));
    assert_eq!(troupe_sim::persona::load::persona_from_json_str(&inline).unwrap().id, "inline_bom");
}

#[test]
fn roles_come_from_any_occupation_shape() {
    let role = |occupation: Value| {
        persona_from_value(agent(json!({"name": "Ann Lee", "occupation": occupation}))).unwrap().role
    };
    assert_eq!(role(json!({"title": "Nurse", "current_status": "On leave"})), "Nurse");
    assert_eq!(
        role(json!({"current_status": "Retired", "former_roles": ["Head nurse", "Midwife"]})),
        "Retired (former Head nurse)"
    );
    assert_eq!(role(json!({"current_status": "Unemployed"})), "Unemployed");
    assert_eq!(role(json!({"current_role": "Shift lead"})), "Shift lead");
    assert_eq!(role(json!({"position": "Treasurer"})), "Treasurer");
    assert_eq!(role(json!({"job": "Bus driver"})), "Bus driver");
    assert_eq!(role(json!({"former_roles": ["Teacher", "Principal"]})), "former Teacher");
    assert_eq!(
        role(json!({"former_roles": [{"title": "Welder", "organization": "Acme", "years": "1990-2010"}]})),
        "former Welder"
    );
    assert_eq!(role(json!("Carpenter")), "Carpenter");
    assert_eq!(
        role(
            json!({"organization": "City Hall", "description": "You are a clerk at the records office. You like order."})
        ),
        "Clerk at the records office"
    );
    // Nothing to go on: validation still reports the missing role, pointing into the file.
    let v = agent(json!({"name": "No Role", "occupation": {"organization": "Acme"}, "long_term_goals": ["x"],
                         "style": "plain", "personality": {"traits": ["calm"]}}));
    let (_d, path, text, r, _db) = load_one("norole.agent.json", &v);
    let f = r.findings.iter().find(|f| f.field == "role").expect("a role finding");
    assert_eq!(f.severity, Severity::Error);
    assert_eq!(f.file, path);
    assert_eq!(f.position, Some(where_in(&text, "{\n      \"organization\"")), "{f}");
}

#[test]
fn a_real_population_file_with_current_status_and_former_roles_loads_clean() {
    // Shaped like a TinyTroupe population export: retired people have no title.
    let pop = json!([
        agent(json!({"name": "Walter Brandt", "age": 71,
            "occupation": {"current_status": "Retired", "former_roles": ["Machinist", "Union steward"],
                           "description": "Forty years at a tool-and-die shop."},
            "long_term_goals": ["Keep the community garden open"], "style": "Gruff, short sentences",
            "personality": {"traits": ["stubborn", "loyal"],
                            "big_five": {"openness": "Low", "conscientiousness": "High", "extraversion": "Low",
                                         "agreeableness": "High", "neuroticism": "Low"}}})),
        agent(json!({"name": "Tomás Ferreira", "age": 34,
            "occupation": {"title": "Line cook", "organization": "Casa Lume"},
            "long_term_goals": "Open a food truck", "style": "Quick and joking",
            "personality": {"traits": ["energetic"],
                            "big_five": {"openness": "High", "conscientiousness": "Medium", "extraversion": "High",
                                         "agreeableness": "Medium", "neuroticism": "Low"}}}))
    ]);
    let (_d, _p, _t, r, db) = load_one("population.json", &pop);
    assert_eq!((r.errors(), r.warnings()), (0, 0), "{:#?}", r.findings);
    assert_eq!(db.personas[0].role, "Retired (former Machinist)");
    assert_eq!(db.personas[1].id, "tomas_ferreira");
}

#[test]
fn imported_agents_derive_goals_and_style_where_the_file_allows() {
    let base = |extra: Value| {
        let mut p = json!({"name": "Ivy Park", "occupation": {"title": "Pharmacist"},
                           "personality": {"traits": ["You are meticulous.", "You are warm with customers."]}});
        p.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        persona_from_value(agent(p)).unwrap()
    };
    // Goals: long_term_goals, else goals / objectives / aspirations.
    assert_eq!(base(json!({"long_term_goals": ["Own a pharmacy"]})).personality.goals, ["Own a pharmacy"]);
    assert_eq!(base(json!({"goals": "Cut waiting times"})).personality.goals, ["Cut waiting times"]);
    assert_eq!(base(json!({"objectives": ["Pass the audit"]})).personality.goals, ["Pass the audit"]);
    assert_eq!(base(json!({"aspirations": ["Teach"]})).personality.goals, ["Teach"]);
    // Interests are not goals: nothing is made up from them.
    assert!(base(json!({"preferences": {"interests": ["hiking"]}})).personality.goals.is_empty());
    // Style: style, else communication.style / speech / voice, else a sentence from the traits.
    assert_eq!(base(json!({"style": "Dry humour"})).personality.style, "Dry humour");
    assert_eq!(base(json!({"communication": {"style": "Formal, precise"}})).personality.style, "Formal, precise");
    assert_eq!(base(json!({"speech": "Soft-spoken"})).personality.style, "Soft-spoken");
    assert_eq!(base(json!({"voice": "Loud and cheerful"})).personality.style, "Loud and cheerful");
    let derived = base(json!({})).personality.style;
    assert!(derived.contains("meticulous") && derived.contains("warm with customers"), "{derived}");
    assert!(!derived.contains("You are"), "{derived}");
}

#[test]
fn imported_agents_without_goals_or_style_warn_naming_the_tinytroupe_field() {
    let v = agent(json!({"name": "Bare Agent", "occupation": {"title": "Courier"}}));
    let (_d, path, text, r, _db) = load_one("bare.agent.json", &v);
    for (field, tt) in [("personality.goals", "persona.long_term_goals"), ("personality.style", "persona.style")] {
        let f = r.findings.iter().find(|f| f.field == field).unwrap_or_else(|| panic!("{field}: {:#?}", r.findings));
        assert_eq!(f.severity, Severity::Warning, "{f}");
        assert!(f.hint.contains(tt), "the hint names the TinyTroupe field: {f}");
        assert!(!f.hint.contains("big_five"), "{f}");
        assert_eq!(f.file, path);
        assert_eq!(f.position, Some(where_in(&text, "{\n    \"name\"")), "the persona object: {f}");
    }
    // No traits at all is still an error, in TinyTroupe's words.
    let traits = r.findings.iter().find(|f| f.field == "personality.traits").expect("a traits finding");
    assert_eq!(traits.severity, Severity::Error);
    assert!(traits.hint.contains("persona.personality.traits"), "{traits}");

    // Native personas keep the strict rules.
    let mut native = valid("strict", "Strict One");
    native["personality"]["goals"] = json!([]);
    native["personality"]["style"] = json!("");
    let p = persona_from_value(native).unwrap();
    let issues = troupe_sim::persona::validate::check_persona(&p);
    for field in ["personality.goals", "personality.style"] {
        let i = issues.iter().find(|i| i.field == field).unwrap();
        assert_eq!(i.severity, Severity::Error, "{field}");
    }
}

// ---------------------------------------------------------------- fragments

fn fragment(persona: Value) -> Fragment {
    Fragment { name: "test_fragment".into(), persona: persona.as_object().unwrap().clone() }
}

#[test]
fn fragments_merge_into_tinytroupe_agents() {
    let db = PersonaDatabase::load(&shipped("data/agents")).unwrap();
    let lisa = db.get("lisa_carter").unwrap();
    let before = lisa.to_saved_value();
    let skeptic = db.fragment("skeptic").expect("the skeptic fragment ships");
    let remote = db.fragment("remote_worker").expect("the remote_worker fragment ships");

    let merged = apply_fragment(&apply_fragment(lisa, skeptic).unwrap(), remote).unwrap();
    let after = merged.to_saved_value();
    let (b, a) = (&before["persona"], &after["persona"]);
    // Lists append.
    let traits = a["personality"]["traits"].as_array().unwrap();
    assert_eq!(traits.len(), b["personality"]["traits"].as_array().unwrap().len() + 1);
    assert_eq!(traits.last().unwrap(), &skeptic.persona["personality"]["traits"][0]);
    assert_eq!(merged.personality.traits.last().unwrap(), "You question claims until you see evidence.");
    assert_eq!(merged.personality.goals.len(), lisa.personality.goals.len() + 1);
    // Maps merge: the agent's own behaviours stay, the fragment's are added.
    for k in b["behaviors"].as_object().unwrap().keys() {
        assert_eq!(a["behaviors"][k], b["behaviors"][k], "kept {k}");
    }
    assert_eq!(a["behaviors"]["debate"], skeptic.persona["behaviors"]["debate"]);
    assert_eq!(a["personality"]["big_five"], b["personality"]["big_five"]);
    let likes = a["preferences"]["likes"].as_array().unwrap();
    assert_eq!(likes.len(), b["preferences"]["likes"].as_array().unwrap().len() + 3);
    // Scalars replace.
    assert_eq!(a["residence"], remote.persona["residence"]);
    assert_ne!(a["residence"], b["residence"]);
    // The input is untouched and the result still validates.
    assert_eq!(lisa.to_saved_value(), before);
    assert!(troupe_sim::persona::validate::check_persona(&merged).iter().all(|i| i.severity != Severity::Error));
}

#[test]
fn fragments_merge_into_native_personas() {
    let mut v = valid("native", "Native Persona");
    v["preferences"] = json!({"likes": ["tea"], "dislikes": ["noise"]});
    let p = persona_from_value(v).unwrap();
    let f = fragment(json!({
        "personality": {"traits": ["curious"], "style": "Blunt but professional"},
        "long_term_goals": ["Ship the pilot"],
        "preferences": {"likes": ["coffee"], "hobbies": ["chess"]},
        "model": "gpt-4o",
        "beliefs": ["Measure twice."]
    }));
    let m = apply_fragment(&p, &f).unwrap();
    assert_eq!(m.personality.traits, ["analytical", "patient", "curious"]);
    assert_eq!(m.personality.goals.last().unwrap(), "Ship the pilot", "long_term_goals land in goals");
    assert_eq!(m.personality.style, "Blunt but professional");
    assert_eq!(m.model.as_deref(), Some("gpt-4o"));
    assert_eq!(m.personality.communication, "structured", "untouched fields stay");
    assert_eq!(
        m.extra["preferences"],
        json!({"likes": ["tea", "coffee"], "dislikes": ["noise"], "hobbies": ["chess"]})
    );
    assert_eq!(m.extra["beliefs"], json!(["Measure twice."]));
    assert!(!m.extra.contains_key("long_term_goals"));
}

#[test]
fn a_fragment_that_breaks_the_schema_is_an_error_naming_both() {
    let p = persona_from_value(valid("native", "Native Persona")).unwrap();
    let err = apply_fragment(&p, &fragment(json!({"temperature": "hot"}))).unwrap_err();
    let s = err.to_string();
    assert!(matches!(err, PersonaError::Fragment { .. }), "{s}");
    assert!(s.contains("test_fragment") && s.contains("native") && s.contains("temperature"), "{s}");
}

// ---------------------------------------------------------------- sources

#[test]
fn source_json_array_file() {
    let db = PersonaDatabase::load(&shipped("data/personas.agents.json")).unwrap();
    assert_eq!(db.files.len(), 1);
    assert_eq!(db.files[0].layout, Layout::Array);
    assert_eq!(db.locations[3].pointer, "/3");
}

#[test]
fn source_object_with_personas_array() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrapped.json");
    let mut bad = valid("second", "Second");
    bad["temperature"] = json!(4.0);
    let text =
        format!("{{\n  \"version\": 2,\n  \"personas\": [\n    {},\n    {}\n  ]\n}}\n", valid("first", "First"), bad);
    fs::write(&path, &text).unwrap();
    let db = PersonaDatabase::load(&path).unwrap();
    assert_eq!(db.files[0].layout, Layout::Wrapped);
    assert_eq!(db.personas.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["first", "second"]);
    let r = validate_database(&db);
    let f = &r.findings[0];
    assert_eq!(f.field, "temperature");
    let line = text.lines().nth(4).unwrap();
    let col = line.find("\"temperature\":").unwrap() + "\"temperature\":".len() + 1;
    assert_eq!(f.position, Some(LineCol { line: 5, col }));
}

#[test]
fn source_single_agent_file() {
    let db = PersonaDatabase::load(&shipped("data/agents/lisa_carter.agent.json")).unwrap();
    assert_eq!(db.personas.len(), 1);
    assert_eq!(db.files[0].layout, Layout::Single);
    assert_eq!(db.personas[0].id, "lisa_carter");
    // A single native persona object works the same way.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.json");
    fs::write(&path, valid("solo", "Solo").to_string()).unwrap();
    let db = PersonaDatabase::load(&path).unwrap();
    assert_eq!((db.files[0].layout, db.personas[0].id.as_str()), (Layout::Single, "solo"));
}

#[test]
fn source_folder_is_read_recursively() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("teams").join("ops");
    fs::create_dir_all(&deep).unwrap();
    write_lines(&dir.path().join("core.json"), &[valid("a1", "A One"), valid("a2", "A Two")]);
    fs::copy(shipped("data/agents/mei_tanaka.agent.json"), deep.join("mei.agent.json")).unwrap();
    fs::copy(shipped("data/agents/fragments/skeptic.fragment.json"), deep.join("skeptic.fragment.json")).unwrap();
    fs::write(dir.path().join("notes.txt"), "not a persona").unwrap();
    let db = PersonaDatabase::load(dir.path()).unwrap();
    let ids: Vec<&str> = db.personas.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["a1", "a2", "mei_tanaka"]);
    assert_eq!(db.fragments.len(), 1);
    assert_eq!(db.fragments[0].name, "skeptic");
    assert_eq!(db.files.len(), 3, "notes.txt is skipped");
    assert_eq!(db.files[db.locations[2].file].path, deep.join("mei.agent.json"));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(PersonaDatabase::load(empty.path()), Err(PersonaError::EmptyFolder { .. })));
}

#[test]
fn load_personas_by_tags_returns_only_matching_personas() {
    let path = shipped("data/personas.agents.json");
    let all = load_personas_by_tags(&path, &[]).unwrap();
    assert_eq!(all.len(), PersonaDatabase::load(&path).unwrap().personas.len());
    let ids = |tags: &[&str]| -> Vec<String> {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        load_personas_by_tags(&path, &tags).unwrap().into_iter().map(|p| p.id).collect()
    };
    assert_eq!(ids(&["security"]), ["omar_haddad"]);
    assert_eq!(ids(&["SECURITY"]), ["omar_haddad"], "tags match ignoring case");
    assert!(ids(&["no-such-tag"]).is_empty());
    // Any of several tags, in database order, each persona once.
    let wanted = ["civic", "ml"];
    let got = ids(&wanted);
    let expected: Vec<String> =
        all.iter().filter(|p| wanted.iter().any(|t| p.has_tag(t))).map(|p| p.id.clone()).collect();
    assert_eq!(got, expected);
    assert!(got.len() >= 3);
    // The tag index agrees.
    let db = PersonaDatabase::load(&path).unwrap();
    let idx = db.tag_index();
    for (tag, members) in &idx {
        let by = db.by_tags(std::slice::from_ref(tag));
        assert_eq!(by.len(), members.len(), "{tag}");
    }
}

// ---------------------------------------------------------------- adversarial inputs

/// Everything in a folder, by relative path, with its size and modification time (a write
/// changes the time even when it leaves the size alone).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = fs::metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), (meta.len(), meta.modified().unwrap()));
        }
    }
    out
}

/// Loads `bytes` as `name` in a fresh folder, validates when it loads, and checks that nothing
/// in the folder was written. Returns the error text (or the report) and the file path.
fn adversarial(name: &str, bytes: &[u8]) -> (Result<ValidationReport, String>, PathBuf, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    fs::write(&path, bytes).unwrap();
    let before = snapshot(dir.path());
    let out = PersonaDatabase::load(&path).map(|db| validate_database(&db)).map_err(|e| e.to_string());
    assert_eq!(snapshot(dir.path()), before, "loading wrote into the folder");
    (out, path, dir)
}

#[track_caller]
fn expect_error_at(name: &str, bytes: &[u8], line: usize, col: usize, words: &str) -> String {
    let (out, path, _dir) = adversarial(name, bytes);
    let msg = out.expect_err("a malformed file is an error");
    let at = format!("{}:{line}:{col}", path.display());
    assert!(msg.contains(&at), "expected {at} in: {msg}");
    assert!(msg.contains(words), "expected {words:?} in: {msg}");
    msg
}

#[test]
fn truncated_json_is_an_error_with_position() {
    let full = format!("[\n  {},\n  {}\n]\n", valid("a", "A"), valid("b", "B"));
    let cut = &full.as_bytes()[..full.len() - 40];
    let line = full[..cut.len()].lines().count();
    let col = full[..cut.len()].lines().last().unwrap().len();
    let msg = expect_error_at("cut.json", cut, line, col, "EOF");
    assert!(msg.contains("truncated"), "the hint names the likely cause: {msg}");
}

#[test]
fn wrong_types_are_findings_with_field_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("types.json");
    let mut traits5 = valid("traits_five", "Traits Five");
    traits5["personality"]["traits"] = json!(5);
    let mut hot = valid("hot", "Hot");
    hot["temperature"] = json!("hot");
    let mut tags = valid("tagged", "Tagged");
    tags["tags"] = json!({"a": 1});
    let text = write_lines(&path, &[valid("fine", "Fine"), traits5, hot, tags, json!(42)]);
    let before = snapshot(dir.path());
    let db = PersonaDatabase::load(&path).unwrap();
    assert_eq!(db.personas.len(), 1, "only the well-typed persona loads");
    let r = validate_database(&db);
    assert_eq!(snapshot(dir.path()), before);
    let find = |persona: &str| {
        r.findings.iter().find(|f| f.persona == persona).unwrap_or_else(|| panic!("{persona}: {:#?}", r.findings))
    };
    let cases = [
        ("traits_five", "personality.traits", at(&text, 1, &["personality", "traits"]), "integer `5`"),
        ("hot", "temperature", at(&text, 2, &["temperature"]), "string \"hot\""),
        ("tagged", "tags", at(&text, 3, &["tags"]), "map"),
        ("#4", "", at(&text, 4, &[]), "found a number"),
    ];
    for (persona, field, pos, words) in cases {
        let f = find(persona);
        assert_eq!((f.severity, f.field.as_str(), f.position), (Severity::Error, field, Some(pos)), "{f}");
        assert_eq!(f.file, path);
        assert!(f.message.contains(words), "{f}");
        assert!(f.to_string().contains(&format!("{}:{pos}", path.display())), "{f}");
    }
    assert_eq!(r.errors(), 4);
}

#[test]
fn invalid_utf8_is_an_error_with_position() {
    let msg = expect_error_at("latin1.json", b"[\n  {\"id\": \"caf\xe9\"}\n]\n", 2, 14, "invalid unicode");
    assert!(msg.contains("UTF-8"), "{msg}");
    expect_error_at("bare.json", b"[\xff]", 1, 2, "expected value");
}

#[test]
fn a_50_mb_string_is_a_finding_not_a_crash() {
    let mut p = valid("huge", "Huge");
    p["description"] = json!("@BIG@");
    let small = format!("[\n  {p}\n]\n");
    let text = small.replace("@BIG@", &"a".repeat(50 * 1024 * 1024));
    let (out, path, _dir) = adversarial("huge.json", text.as_bytes());
    let r = out.unwrap();
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings.iter().map(|f| &f.message).collect::<Vec<_>>());
    let f = &r.findings[0];
    assert_eq!((f.severity, f.field.as_str()), (Severity::Error, "description"));
    assert_eq!(f.position, Some(at(&small, 0, &["description"])));
    assert!(f.message.len() < 200, "the message does not quote the string");
    assert_eq!(f.file, path);
}

#[test]
fn a_file_that_is_one_50_mb_string_is_an_error() {
    let s = format!("\"{}\"", "b".repeat(50 * 1024 * 1024));
    expect_error_at("string.json", s.as_bytes(), 1, 1, "found a string");
}

#[test]
fn nesting_10000_deep_is_an_error_with_position() {
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    let msg = expect_error_at("deep.json", deep.as_bytes(), 1, 128, "recursion limit");
    assert!(msg.contains("nests deeper"), "{msg}");
    let inside = format!("[\n  {{\"id\": \"x\", \"x\": {}{}}}\n]", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    expect_error_at("deep2.json", inside.as_bytes(), 2, 645, "recursion limit");
}

#[test]
fn duplicate_keys_are_an_error_with_position() {
    let msg = expect_error_at("dup.json", b"[\n  {\"id\": \"a\",\n   \"id\": \"b\"}\n]\n", 3, 7, "duplicate key `id`");
    assert!(msg.contains("remove one"), "{msg}");
}

#[test]
fn an_empty_file_is_an_error() {
    expect_error_at("empty.json", b"", 1, 1, "empty");
    expect_error_at("blank.json", b" \n\t\n", 1, 1, "empty");
}

#[test]
fn a_top_level_scalar_is_an_error() {
    expect_error_at("number.json", b"42", 1, 1, "found a number");
    expect_error_at("null.json", b"null", 1, 1, "found null");
    expect_error_at("bool.json", b"\n true", 1, 1, "found a boolean");
}

#[test]
fn trailing_garbage_is_an_error_with_position() {
    expect_error_at("trail.json", b"[]\n]", 2, 1, "trailing characters");
}

// ---------------------------------------------------------------- saving

fn db_file(dir: &Path, personas: &[Value]) -> (PathBuf, String) {
    let path = dir.join("personas.json");
    let text = write_lines(&path, personas);
    (path, text)
}

fn specs(vals: &[Value]) -> Vec<PersonaSpec> {
    vals.iter().cloned().map(|v| persona_from_value(v).unwrap()).collect()
}

/// Names in `dir` other than `keep` (temp files a save might leave behind).
fn stray_files(dir: &Path, keep: &[&str]) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

#[test]
fn save_replaces_the_file_and_backs_up_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let (path, old) = db_file(dir.path(), &[valid("old", "Old")]);
    let backups = dir.path().join("backups");
    let new = specs(&[valid("new1", "New One"), valid("new2", "New Two")]);
    let backup = save_personas(&path, &new, &backups).unwrap().expect("a backup of the old file");
    assert_eq!(fs::read_to_string(&backup).unwrap(), old);
    // backups/<timestamp>/personas.json
    assert_eq!(backup.file_name().unwrap(), "personas.json");
    let stamp = backup.parent().unwrap();
    assert_eq!(stamp.parent().unwrap(), backups);
    let stamp = stamp.file_name().unwrap().to_str().unwrap();
    assert!(stamp.starts_with(&chrono::Utc::now().format("%Y").to_string()), "{stamp}");
    let db = PersonaDatabase::load(&path).unwrap();
    assert_eq!(db.personas, new);
    assert!(stray_files(dir.path(), &["personas.json", "backups"]).is_empty());
}

#[test]
fn save_without_an_old_file_makes_no_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.json");
    let backups = dir.path().join("backups");
    assert_eq!(save_personas(&path, &specs(&[valid("a", "A")]), &backups).unwrap(), None);
    assert!(!backups.exists());
}

#[test]
fn quick_successive_saves_keep_every_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = db_file(dir.path(), &[valid("v0", "V0")]);
    let backups = dir.path().join("backups");
    let mut made = Vec::new();
    for i in 1..=5 {
        let b = save_personas(&path, &specs(&[valid(&format!("v{i}"), &format!("V{i}"))]), &backups).unwrap();
        made.push(b.unwrap());
    }
    let mut contents: Vec<String> = made.iter().map(|b| fs::read_to_string(b).unwrap()).collect();
    for (i, c) in contents.iter().enumerate() {
        assert!(c.contains(&format!("\"v{i}\"")), "backup {i} holds version {i}: {c}");
    }
    contents.dedup();
    assert_eq!(contents.len(), 5, "no backup overwrote another");
}

#[test]
fn a_backup_never_overwrites_an_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = db_file(dir.path(), &[valid("v0", "V0")]);
    let backups = dir.path().join("backups");
    for attempt in 1..=20 {
        // Earlier backups stamped with each millisecond of the next 200 ms, so the save's own
        // stamp is most likely taken already.
        let now = chrono::Utc::now();
        let mut taken = Vec::new();
        for ms in 0..200 {
            let stamp = (now + chrono::TimeDelta::milliseconds(ms)).format("%Y%m%dT%H%M%S%.3fZ");
            let d = backups.join(stamp.to_string());
            if fs::create_dir(&d).is_ok() {
                fs::write(d.join("personas.json"), "an earlier backup").unwrap();
                taken.push(stamp.to_string());
            }
        }
        let old = fs::read_to_string(&path).unwrap();
        let new = specs(&[valid(&format!("v{attempt}"), "V")]);
        let made = save_personas(&path, &new, &backups).unwrap().unwrap();
        assert_eq!(fs::read_to_string(&made).unwrap(), old, "the backup holds the old file");
        for stamp in &taken {
            let earlier = backups.join(stamp).join("personas.json");
            assert_eq!(fs::read_to_string(earlier).unwrap(), "an earlier backup", "{stamp} overwritten");
        }
        let name = made.parent().unwrap().file_name().unwrap().to_str().unwrap().to_owned();
        if taken.iter().any(|t| name.starts_with(t.as_str()) && name != *t) {
            return; // The save met a taken stamp and went around it.
        }
    }
    panic!("no save landed on a taken stamp in 20 attempts");
}

#[test]
fn failed_save_when_backups_cannot_be_made_leaves_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, old) = db_file(dir.path(), &[valid("old", "Old")]);
    let blocker = dir.path().join("backups");
    fs::write(&blocker, "a file where the backup folder should go").unwrap();
    let err = save_personas(&path, &specs(&[valid("new", "New")]), &blocker).unwrap_err();
    assert!(err.to_string().contains("backups"), "{err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), old);
    assert!(stray_files(dir.path(), &["personas.json", "backups"]).is_empty());
}

#[test]
fn failed_save_when_the_parent_is_a_file_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (file, old) = db_file(dir.path(), &[valid("old", "Old")]);
    let target = file.join("personas.json");
    let err = save_personas(&target, &specs(&[valid("new", "New")]), &dir.path().join("backups")).unwrap_err();
    assert!(matches!(err, PersonaError::Io { .. }), "{err}");
    assert_eq!(fs::read_to_string(&file).unwrap(), old);
    assert!(stray_files(dir.path(), &["personas.json"]).is_empty());
}

#[test]
fn failed_write_step_leaves_the_old_file_intact() {
    // Occupy every temp-file name this process could pick, so the write fails after the
    // backup even when running as root (where read-only folders do not stop writes).
    let dir = tempfile::tempdir().unwrap();
    let (path, old) = db_file(dir.path(), &[valid("old", "Old")]);
    for n in 0..2000 {
        fs::create_dir(dir.path().join(format!(".personas.json.tmp.{}.{n}", std::process::id()))).unwrap();
    }
    let before: Vec<String> = stray_files(dir.path(), &["backups"]);
    let err = save_personas(&path, &specs(&[valid("new", "New")]), &dir.path().join("backups"));
    assert!(err.is_err(), "the write must fail");
    assert_eq!(fs::read_to_string(&path).unwrap(), old, "the old file is intact");
    assert_eq!(stray_files(dir.path(), &["backups"]).len(), before.len(), "no temp file left");
}

#[cfg(unix)]
#[test]
fn failed_save_in_a_read_only_folder_leaves_the_old_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    fs::create_dir(&ro).unwrap();
    let (path, old) = db_file(&ro, &[valid("old", "Old")]);
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    // Root ignores folder permissions; then there is nothing to show here.
    let root = fs::write(ro.join("probe"), "x").is_ok();
    if !root {
        let err = save_personas(&path, &specs(&[valid("new", "New")]), &dir.path().join("backups"));
        assert!(err.is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), old);
        assert!(stray_files(&ro, &["personas.json"]).is_empty());
    }
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
}

// ---------------------------------------------------------------- saving never loses data (issue 12)

/// A database file the loader cannot read: a save into it is refused, naming the file and what
/// to do, and the file is left byte for byte (nothing written beside it either).
#[track_caller]
fn assert_save_refused(name: &str, bytes: &[u8], words: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    fs::write(&path, bytes).unwrap();
    let err = save_personas(&path, &specs(&[valid("new", "New")]), &dir.path().join("backups"))
        .expect_err("a save into an unreadable database is refused");
    assert!(matches!(err, PersonaError::Unreadable { .. }), "{err:?}");
    let err = err.to_string();
    assert_eq!(fs::read(&path).unwrap(), bytes, "the file was changed: {err}");
    assert!(stray_files(dir.path(), &[name]).is_empty(), "{:?}", stray_files(dir.path(), &[name]));
    for w in [path.display().to_string().as_str(), "left untouched", "move it away"].iter().chain(words) {
        assert!(err.contains(w), "expected {w:?} in: {err}");
    }
}

fn two_personas_text() -> String {
    let dir = tempfile::tempdir().unwrap();
    write_lines(&dir.path().join("x.json"), &[valid("a1", "A One"), valid("a2", "A Two")])
}

#[test]
fn save_refuses_a_truncated_database() {
    let text = two_personas_text();
    let cut = &text.as_bytes()[..text.len() * 2 / 3];
    assert_save_refused("personas.json", cut, &["truncated", ":3:"]);
}

#[test]
fn save_refuses_an_invalid_utf8_database() {
    let mut bytes = two_personas_text().into_bytes();
    let at = bytes.windows(5).position(|w| w == b"A One").unwrap();
    bytes[at + 2] = 0xff;
    assert_save_refused("personas.json", &bytes, &["UTF-8", ":2:"]);
}

#[test]
fn save_refuses_an_empty_database() {
    assert_save_refused("personas.json", b"", &["empty"]);
    assert_save_refused("personas.json", b"  \n\t\n", &["empty"]);
}

#[test]
fn save_refuses_a_database_that_is_not_json_or_not_personas() {
    assert_save_refused("personas.json", b"name,role\nAnn,nurse\n", &[":1:2", "JSON syntax"]);
    assert_save_refused("personas.json", b"42\n", &["found a number"]);
    assert_save_refused("personas.json", b"\"just a string\"", &["found a string"]);
}

/// `{"personas": [...], ...}` keeps its other keys, in their order, and their values.
#[test]
fn save_keeps_a_wrapped_files_other_keys_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.json");
    let original = json!({
        "version": 2,
        "personas": [valid("first", "First")],
        "db_meta": {"owner": "research team", "schema": "enhanced", "notes": ["keep me"]}
    });
    fs::write(&path, serde_json::to_string_pretty(&original).unwrap()).unwrap();
    let mut all = PersonaDatabase::load(&path).unwrap().personas;
    all.extend(specs(&[valid("second", "Second")]));
    save_personas(&path, &all, &dir.path().join("backups")).unwrap();
    let saved = parse_strict(&fs::read(&path).unwrap()).unwrap();
    let keys: Vec<&str> = saved.as_object().expect("still an object").keys().map(String::as_str).collect();
    assert_eq!(keys, ["version", "personas", "db_meta"]);
    assert_eq!(saved["version"], original["version"]);
    assert_eq!(saved["db_meta"], original["db_meta"]);
    assert_eq!(saved["personas"], json!([valid("first", "First"), valid("second", "Second")]));
    let db = PersonaDatabase::load(&path).unwrap();
    assert_eq!(db.files[0].layout, Layout::Wrapped);
}

/// A single TinyTroupe agent file saved with its one persona stays one agent object.
#[test]
fn save_keeps_a_single_agent_file_one_agent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rosa.agent.json");
    fs::write(&path, serde_json::to_string_pretty(&loose_agent()).unwrap()).unwrap();
    let db = PersonaDatabase::load(&path).unwrap();
    save_personas(&path, &db.personas, &dir.path().join("backups")).unwrap();
    let saved = parse_strict(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(saved.to_string(), loose_agent().to_string(), "the same agent object, key order included");
    assert_eq!(PersonaDatabase::load(&path).unwrap().files[0].layout, Layout::Single);
}

/// Two personas cannot go into a one-agent file: refused, the file untouched, and the message
/// says where they can go instead.
#[test]
fn save_refuses_more_than_one_persona_into_a_single_agent_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rosa.agent.json");
    let text = serde_json::to_string_pretty(&loose_agent()).unwrap();
    fs::write(&path, &text).unwrap();
    let mut all = PersonaDatabase::load(&path).unwrap().personas;
    all.extend(specs(&[valid("second", "Second")]));
    let err = save_personas(&path, &all, &dir.path().join("backups")).expect_err("refused").to_string();
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
    for w in [path.display().to_string().as_str(), "one agent", "2 personas", "left untouched", "folder"] {
        assert!(err.contains(w), "expected {w:?} in: {err}");
    }
    assert!(stray_files(dir.path(), &["rosa.agent.json"]).is_empty());
}

/// Fragments and items the loader could not read as personas are not in `db.personas`; saving
/// the database back must not drop them.
#[test]
fn save_keeps_fragments_and_unreadable_items_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.json");
    let frag = json!({"type": "Fragment", "id": "night_shift", "persona": {"other_facts": ["works nights"]}});
    let mut bad = valid("bad", "Bad");
    bad["personality"] = json!("not an object yet");
    let items = [valid("a1", "A One"), frag.clone(), bad.clone(), valid("a2", "A Two")];
    write_lines(&path, &items);
    let db = PersonaDatabase::load(&path).unwrap();
    assert_eq!(db.personas.len(), 2);
    assert_eq!(db.load_findings.len(), 1, "the unreadable item is a finding");
    let mut all = db.personas.clone();
    all.extend(specs(&[valid("new", "New")]));
    save_personas(&path, &all, &dir.path().join("backups")).unwrap();
    let saved = parse_strict(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(saved, json!([valid("a1", "A One"), frag, bad, valid("a2", "A Two"), valid("new", "New")]));
}

#[test]
fn add_personas_never_replaces_and_never_writes_into_a_folder_as_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, old) = db_file(dir.path(), &[valid("a1", "A One")]);
    let backups = dir.path().join("backups");
    let err = add_personas(&path, &specs(&[valid("a1", "Another")]), &backups).unwrap_err();
    assert!(matches!(&err, PersonaError::DuplicateId { id, .. } if id == "a1"), "{err}");
    let err = add_personas(&path, &specs(&[valid("n", "N"), valid("n", "M")]), &backups).unwrap_err();
    assert!(matches!(&err, PersonaError::DuplicateId { id, .. } if id == "n"), "{err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), old);
    let r = add_personas(&path, &specs(&[valid("a2", "A Two")]), &backups).unwrap();
    assert_eq!((r.target, r.added, r.total), (SaveTarget::File(Layout::Array), 1, 2));
    assert_eq!(fs::read_to_string(r.backup.unwrap()).unwrap(), old);

    // A folder: save_personas refuses it; add_personas gives each persona its own file, and an
    // empty folder is fine.
    let folder = dir.path().join("folder");
    fs::create_dir(&folder).unwrap();
    let err = save_personas(&folder, &specs(&[valid("x", "X")]), &backups).unwrap_err();
    assert!(matches!(err, PersonaError::IsFolder { .. }), "{err}");
    fs::write(folder.join("x.json"), "not mine").unwrap();
    let r = add_personas(&folder, &specs(&[valid("x", "X")]), &backups).unwrap_err();
    assert!(matches!(r, PersonaError::Unreadable { .. }), "a folder holding an unreadable file: {r}");
    fs::remove_file(folder.join("x.json")).unwrap();
    let r = add_personas(&folder, &specs(&[valid("x", "X"), valid("y", "Y")]), &backups).unwrap();
    assert_eq!(r.target, SaveTarget::Folder);
    assert_eq!(r.written, [folder.join("x.json"), folder.join("y.json")]);
    assert_eq!(PersonaDatabase::load(&folder).unwrap().personas, specs(&[valid("x", "X"), valid("y", "Y")]));
    // A taken file name gets a suffix rather than being overwritten.
    fs::rename(folder.join("x.json"), folder.join("keep.json")).unwrap();
    fs::write(folder.join("z.json"), valid("other", "Other").to_string()).unwrap();
    let r = add_personas(&folder, &specs(&[valid("z", "Z")]), &backups).unwrap();
    assert_eq!(r.written, [folder.join("z-2.json")]);
    assert_eq!(parse_strict(&fs::read(folder.join("z.json")).unwrap()).unwrap(), valid("other", "Other"));
}

/// `troupe personas generate --simulated --save --count N` into `personas_file`.
fn generate_save(dir: &Path, personas_file: &Path, count: usize) -> (Option<i32>, String, String) {
    let o = troupe_in(dir)
        .args(["personas", "generate", "--context", "rural nurses", "--simulated", "--save", "--count"])
        .arg(count.to_string())
        .arg("--set")
        .arg(format!("simulation.personas_file={}", personas_file.display()))
        .output()
        .unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[track_caller]
fn assert_cli_refuses(name: &str, bytes: &[u8], words: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    fs::write(&path, bytes).unwrap();
    let (code, _, stderr) = generate_save(dir.path(), &path, 1);
    assert_eq!(code, Some(2), "an unreadable database is an input error: {stderr}");
    assert_eq!(fs::read(&path).unwrap(), bytes, "the file was changed: {stderr}");
    assert!(!stderr.contains("saved 1") && !stderr.contains("added"), "{stderr}");
    for w in [path.display().to_string().as_str(), "left untouched"].iter().chain(words) {
        assert!(stderr.contains(w), "expected {w:?} in: {stderr}");
    }
    assert!(stray_files(dir.path(), &[name]).is_empty(), "{:?}", stray_files(dir.path(), &[name]));
}

#[test]
fn cli_generate_save_refuses_a_truncated_database() {
    let text = two_personas_text();
    assert_cli_refuses("personas.json", &text.as_bytes()[..text.len() / 2], &["truncated"]);
}

#[test]
fn cli_generate_save_refuses_an_invalid_utf8_database() {
    let mut bytes = two_personas_text().into_bytes();
    let at = bytes.windows(5).position(|w| w == b"A One").unwrap();
    bytes[at + 2] = 0xff;
    assert_cli_refuses("personas.json", &bytes, &["UTF-8"]);
}

#[test]
fn cli_generate_save_refuses_an_empty_database() {
    assert_cli_refuses("personas.json", b"", &["empty"]);
}

#[test]
fn cli_generate_save_keeps_a_wrapped_files_shape_and_says_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.json");
    let original = json!({"personas": [valid("first", "First")], "db_meta": {"owner": "research team"}});
    fs::write(&path, serde_json::to_string_pretty(&original).unwrap()).unwrap();
    let (code, _, stderr) = generate_save(dir.path(), &path, 2);
    assert_eq!(code, Some(0), "{stderr}");
    let saved = parse_strict(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(saved["db_meta"], original["db_meta"], "{stderr}");
    assert_eq!(saved["personas"].as_array().unwrap().len(), 3);
    assert_eq!(saved["personas"][0], valid("first", "First"));
    assert!(stderr.contains("added 2 persona(s)") && stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("backup"), "{stderr}");
}

#[test]
fn cli_generate_save_into_a_single_agent_file_is_refused_before_generating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lisa.agent.json");
    fs::copy(shipped("data/agents/lisa_carter.agent.json"), &path).unwrap();
    let before = fs::read(&path).unwrap();
    let (code, stdout, stderr) = generate_save(dir.path(), &path, 1);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(fs::read(&path).unwrap(), before);
    assert!(stdout.trim().is_empty(), "refused before the model drafted anything: {stdout}");
    for w in ["one agent", "left untouched", "folder"] {
        assert!(stderr.contains(w), "expected {w:?} in: {stderr}");
    }
    assert!(stray_files(dir.path(), &["lisa.agent.json"]).is_empty());
}

#[test]
fn cli_generate_save_into_a_folder_adds_one_file_per_persona() {
    let dir = tempfile::tempdir().unwrap();
    let agents = dir.path().join("agents");
    fs::create_dir(&agents).unwrap();
    for f in ["lisa_carter.agent.json", "oscar_alvarez.agent.json"] {
        fs::copy(shipped(&format!("data/agents/{f}")), agents.join(f)).unwrap();
    }
    let before = snapshot(&agents);
    let (code, _, stderr) = generate_save(dir.path(), &agents, 2);
    assert_eq!(code, Some(0), "{stderr}");
    let after = snapshot(&agents);
    for (p, meta) in &before {
        assert_eq!(after.get(p), Some(meta), "{} was touched", p.display());
    }
    let new: Vec<PathBuf> = after.keys().filter(|p| !before.contains_key(*p)).map(|p| agents.join(p)).collect();
    assert_eq!(new.len(), 2, "{new:?}");
    for p in &new {
        assert!(stderr.contains(&p.display().to_string()), "{} not named in: {stderr}", p.display());
        let db = PersonaDatabase::load(p).unwrap();
        assert_eq!((db.personas.len(), db.files[0].layout), (1, Layout::Single));
    }
    assert_eq!(PersonaDatabase::load(&agents).unwrap().personas.len(), 4);
}

// ---------------------------------------------------------------- properties

const TOP_KEYS: &[&str] = &[
    "type",
    "id",
    "name",
    "role",
    "description",
    "personality",
    "model",
    "temperature",
    "prompting",
    "validation_rules",
    "tags",
    "persona",
];
const PERSONALITY_KEYS: &[&str] = &["traits", "goals", "style", "communication", "decisions", "approach"];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn extras(reserved: &'static [&'static str]) -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::vec(
        (
            "[a-zA-Z_][a-zA-Z0-9_ -]{0,10}".prop_filter("not a known field", move |k| !reserved.contains(&k.as_str())),
            any_json(),
        ),
        0..4,
    )
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{1,24}"
}

/// A native persona as JSON, with random unknown fields at the top and inside `personality`.
/// Optional fields are either absent or hold a value that serialises back (skip-if-empty).
fn native_persona() -> impl Strategy<Value = Value> {
    let personality = (
        prop::collection::vec(text(), 0..4),
        prop::collection::vec(text(), 0..4),
        "\\PC{0,20}",
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        extras(PERSONALITY_KEYS),
    )
        .prop_map(|(traits, goals, style, c, d, a, extra)| {
            let mut m = Map::new();
            m.insert("traits".into(), json!(traits));
            m.insert("goals".into(), json!(goals));
            m.insert("style".into(), json!(style));
            for (k, v) in [("communication", c), ("decisions", d), ("approach", a)] {
                if let Some(v) = v {
                    m.insert(k.into(), json!(v));
                }
            }
            m.extend(extra);
            Value::Object(m)
        });
    let optional = (
        prop::option::of("\\PC{0,12}"),
        prop::option::of(any::<f64>().prop_filter("finite", |f| f.is_finite())),
        prop::option::of((prop::option::of(text()), prop::option::of(text()), extras(&["format", "role"]))),
        prop::option::of((
            prop::collection::vec(text(), 1..3),
            prop::option::of(0usize..10),
            extras(&["required_traits", "max_goals", "style_constraints"]),
        )),
        prop::collection::vec("[a-z-]{1,10}", 0..4),
    );
    ("[A-Za-z0-9_-]{0,16}", "\\PC{0,24}", "\\PC{0,24}", "\\PC{0,40}", personality, optional, extras(TOP_KEYS)).prop_map(
        |(id, name, role, description, personality, (model, temperature, prompting, rules, tags), extra)| {
            let mut m = Map::new();
            m.insert("type".into(), json!("TinyPerson"));
            m.insert("id".into(), json!(id));
            m.insert("name".into(), json!(name));
            m.insert("role".into(), json!(role));
            m.insert("description".into(), json!(description));
            m.insert("personality".into(), personality);
            if let Some(model) = model {
                m.insert("model".into(), json!(model));
            }
            if let Some(t) = temperature {
                m.insert("temperature".into(), json!(t));
            }
            if let Some((format, role, extra)) = prompting {
                let mut p = Map::new();
                if let Some(f) = format {
                    p.insert("format".into(), json!(f));
                }
                if let Some(r) = role {
                    p.insert("role".into(), json!(r));
                }
                p.extend(extra);
                m.insert("prompting".into(), Value::Object(p));
            }
            if let Some((required, max, extra)) = rules {
                let mut r = Map::new();
                r.insert("required_traits".into(), json!(required));
                if let Some(max) = max {
                    r.insert("max_goals".into(), json!(max));
                }
                r.extend(extra);
                m.insert("validation_rules".into(), Value::Object(r));
            }
            if !tags.is_empty() {
                m.insert("tags".into(), json!(tags));
            }
            m.extend(extra);
            Value::Object(m)
        },
    )
}

/// Bytes that look like JSON often enough to reach the scanner's corner cases.
fn jsonish_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![prop::sample::select(b"{}[]\":,\\ \n\tae0-.tfnul".to_vec()), any::<u8>(),],
        0..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn persona_json_round_trips_losslessly(original in native_persona()) {
        let spec: PersonaSpec = serde_json::from_value(original.clone()).unwrap();
        prop_assert_eq!(&spec.to_saved_value(), &original);
        let via_loader = persona_from_value(original.clone()).unwrap();
        prop_assert_eq!(&via_loader, &spec);
        // Through text too, as a file would go.
        let text = serde_json::to_string_pretty(&spec.to_saved_value()).unwrap();
        let again = persona_from_value(parse_strict(text.as_bytes()).unwrap()).unwrap();
        prop_assert_eq!(again.to_saved_value(), original);
    }

    #[test]
    fn parse_strict_and_position_index_never_panic(bytes in jsonish_bytes(), pointer in "(/[a-z0-9]{0,3}){0,4}") {
        let _ = parse_strict(&bytes);
        let idx = PositionIndex::build(&bytes);
        let _ = idx.locate(&pointer);
    }

    #[test]
    fn position_index_never_panics_on_random_bytes(bytes in any::<Vec<u8>>()) {
        let _ = parse_strict(&bytes);
        let _ = PositionIndex::build(&bytes).locate("/0/a");
    }

    #[test]
    fn positions_point_at_the_values(items in prop::collection::vec(any_json(), 0..6)) {
        let text = serde_json::to_string_pretty(&items).unwrap();
        let idx = PositionIndex::build(text.as_bytes());
        let starts: Vec<usize> = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        for (i, item) in items.iter().enumerate() {
            let at = idx.locate(&format!("/{i}")).unwrap();
            let offset = starts[at.line - 1] + at.col - 1;
            let mut de = serde_json::Deserializer::from_str(&text[offset..]).into_iter::<Value>();
            prop_assert_eq!(&de.next().unwrap().unwrap(), item);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn saved_databases_reload_to_the_same_personas(personas in prop::collection::vec(native_persona(), 1..4)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.json");
        fs::write(&path, serde_json::to_vec(&personas).unwrap()).unwrap();
        let db = PersonaDatabase::load(&path).unwrap();
        prop_assert!(db.load_findings.is_empty());
        let out = dir.path().join("out.json");
        save_personas(&out, &db.personas, &dir.path().join("backups")).unwrap();
        let saved = parse_strict(&fs::read(&out).unwrap()).unwrap();
        prop_assert_eq!(saved, Value::Array(personas));
    }

    #[test]
    fn array_files_read_as_each_persona_alone_would(personas in prop::collection::vec(native_persona(), 1..4)) {
        // A plain array takes a typed fast path; it must agree with the item-by-item reading.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.json");
        fs::write(&path, serde_json::to_vec_pretty(&personas).unwrap()).unwrap();
        let db = PersonaDatabase::load(&path).unwrap();
        let one_by_one: Vec<PersonaSpec> = personas.into_iter().map(|v| persona_from_value(v).unwrap()).collect();
        prop_assert_eq!(db.personas, one_by_one);
        let pointers: Vec<String> = (0..db.locations.len()).map(|i| format!("/{i}")).collect();
        prop_assert_eq!(db.locations.iter().map(|l| l.pointer.clone()).collect::<Vec<_>>(), pointers);
    }

    #[test]
    fn loading_mangled_files_never_panics(cut in 0usize..2000, flip in 0usize..2000, byte in any::<u8>()) {
        let mut bytes = fs::read(shipped("data/agents/oscar_alvarez.agent.json")).unwrap();
        let i = flip % bytes.len();
        bytes[i] = byte;
        bytes.truncate(bytes.len() - cut % bytes.len());
        let (out, path, _dir) = adversarial("mangled.json", &bytes);
        if let Err(msg) = out {
            prop_assert!(msg.contains(&path.display().to_string()), "{}", msg);
        }
    }
}
