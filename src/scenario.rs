//! Scenarios: the RON format ([`schema`]), reading with `file:line:col` errors, resolving
//! personas against the database, and `troupe scenario check` ([`check`]).

pub mod check;
pub mod edges;
pub mod plan;
pub mod schema;

use std::path::{Path, PathBuf};

pub use check::{
    ResolvedAction, ResolvedIntervention, ResolvedScenario, check_scenario, database_for, resolve, uses_database,
};
pub use plan::{Fork, RunPlan};
pub use schema::*;

/// Errors from reading or resolving a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The RON is malformed or does not fit the schema.
    #[error("{}:{line}:{col}: {message}{hint}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// ron's message.
        message: String,
        /// A "did you mean" or how to fix it, with its leading separator.
        hint: String,
    },
    /// The scenario refers to things that do not exist (one line per problem).
    #[error("{} has {} problem(s):\n{}", path.display(), problems.len(), problems.join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<String>,
    },
    /// Personas could not be loaded.
    #[error(transparent)]
    Persona(#[from] crate::persona::PersonaError),
    /// The scenario names personas of the database (`Id`, `Sample`) and the database could not
    /// be read.
    #[error(
        "{}: the scenario takes personas from the database (simulation.personas_file = {}), which could not be read: {source}\n  hint: point simulation.personas_file at your persona file or folder (config file, TROUPE_SIMULATION__PERSONAS_FILE, or --set simulation.personas_file=PATH; a relative path is read from the current folder), or give the personas in the scenario with File(\"...\") or inline",
        scenario.display(),
        database.display()
    )]
    Database {
        /// The scenario file.
        scenario: PathBuf,
        /// `simulation.personas_file`.
        database: PathBuf,
        /// Why it could not be read.
        #[source]
        source: Box<crate::persona::PersonaError>,
    },
}

/// Reads and parses a scenario file.
pub fn load_scenario(path: &Path) -> Result<Scenario, ScenarioError> {
    let bytes = crate::fsutil::read_input(path, crate::fsutil::MAX_SCENARIO_BYTES, "a scenario file")
        .map_err(|e| ScenarioError::Io { path: path.to_path_buf(), source: e })?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let (line, col) = line_col_of(&bytes, e.valid_up_to());
        ScenarioError::Parse {
            path: path.to_path_buf(),
            line,
            col,
            message: "the file is not valid UTF-8".into(),
            hint: "\n  hint: re-save the file as UTF-8".into(),
        }
    })?;
    parse_scenario(path, text)
}

/// Parses scenario text; `path` only names the file in errors.
pub fn parse_scenario(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
    if text.trim().is_empty() {
        return Err(ScenarioError::Parse {
            path: path.to_path_buf(),
            line: 1,
            col: 1,
            message: "the scenario file is empty".into(),
            hint: "\n  hint: start from scenarios/quickstart.ron".into(),
        });
    }
    let opts = ron::Options::default()
        .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
        .with_recursion_limit(128);
    let mut s = opts.from_str::<Scenario>(text).map_err(|e| {
        let hint = match &e.code {
            ron::Error::NoSuchStructField { expected, found, .. }
            | ron::Error::NoSuchEnumVariant { expected, found, .. } => match did_you_mean(found, expected) {
                Some(s) => format!("\n  hint: did you mean `{s}`?"),
                None => format!("\n  hint: expected one of: {}", expected.join(", ")),
            },
            ron::Error::ExceededRecursionLimit => "\n  hint: the file nests deeper than any scenario needs".into(),
            _ => String::new(),
        };
        ScenarioError::Parse {
            path: path.to_path_buf(),
            line: e.span.start.line,
            col: e.span.start.col,
            message: e.code.to_string(),
            hint,
        }
    })?;
    fold_old_topic(&mut s).map_err(|problems| ScenarioError::Invalid { path: path.to_path_buf(), problems })?;
    Ok(s)
}

/// Reads `seed`, the replaced engine's name for the topic, as `topic` (in the scenario and in
/// each variant); both given with different values is a problem naming both.
fn fold_old_topic(s: &mut Scenario) -> Result<(), Vec<String>> {
    let both = |at: &str| {
        format!("{at}`topic` and `seed` (its old name) are both given, with different values; keep `topic` only")
    };
    let mut problems = Vec::new();
    if let Some(old) = s.seed.take() {
        if s.topic.is_empty() || s.topic == old {
            s.topic = old;
        } else {
            problems.push(both(""));
        }
    }
    for (name, v) in &mut s.variants {
        if let Some(old) = v.seed.take() {
            match &v.topic {
                Some(t) if *t != old => problems.push(both(&format!("variants.{name}: "))),
                _ => v.topic = Some(old),
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// The closest of `candidates` to `word`, when close enough to suggest.
pub fn did_you_mean<'a, S: AsRef<str>>(word: &str, candidates: &'a [S]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c.as_ref()), c.as_ref()))
        .filter(|(s, _)| *s > 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn line_col_of(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let col = offset - before.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"Scenario(
    name: "t",
    personas: [Id("a"), Sample(tags: ["x"], count: 2), Inline({"id": "z", "name": "Z"})],
    world: (context: "c", policy: Parallel, hearing: Relations({"a": ["z"]})),
    turns: 3,
    opening: "hello",
    config: {"llm": {"temperature": 0.2}},
    interventions: [(turn: 2, action: Broadcast("news"))],
    variants: {"hot": (config: {"llm": {"temperature": 1.2}})},
)"#;

    #[test]
    fn parses_the_documented_shapes() {
        let s = parse_scenario(Path::new("t.ron"), MINIMAL).unwrap();
        assert_eq!(s.turns, Some(3));
        assert_eq!(s.opening.as_deref(), Some("hello"));
        assert!(matches!(&s.personas[2], PersonaRef::Inline(v) if v["id"] == "z"));
        assert_eq!(s.config.unwrap()["llm"]["temperature"], 0.2);
        assert!(s.variants.contains_key("hot"));
    }

    #[test]
    fn unknown_field_gets_position_and_suggestion() {
        let e = parse_scenario(Path::new("t.ron"), "Scenario(\n  name: \"t\",\n  persnas: [],\n)").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("t.ron:3:"), "{s}");
        assert!(s.contains("did you mean `personas`"), "{s}");
    }

    #[test]
    fn empty_and_deep_inputs_are_errors() {
        assert!(parse_scenario(Path::new("e.ron"), "  ").is_err());
        let deep = format!("Scenario(name: \"x\", personas: [], config: {}{})", "[".repeat(5000), "]".repeat(5000));
        assert!(parse_scenario(Path::new("d.ron"), &deep).is_err());
    }
}
