//! Personas: the `PersonaSpec` type, loading (native schema and TinyTroupe agent files and
//! fragments), validation and saving.

pub mod generate;
pub mod json;
pub mod load;
pub mod prompt;
pub mod save;
pub mod spec;
pub mod tinytroupe;
pub mod validate;

use std::path::PathBuf;

pub use json::LineCol;
pub use load::{Fragment, PersonaDatabase, apply_fragment, load_personas_by_tags};
pub use save::save_personas;
pub use spec::{Origin, PersonaSpec, Personality, Prompting, ValidationRules};
pub use validate::{Finding, Severity, ValidationReport, validate_database};

/// Errors from reading or writing persona files.
#[derive(Debug, thiserror::Error)]
pub enum PersonaError {
    /// The file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("{}:1:1: the file is empty; it should hold a JSON array of personas, an object with a \"personas\" array, or one agent", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A folder held no `*.json` file.
    #[error("{}: the folder holds no *.json persona files", path.display())]
    EmptyFolder {
        /// The folder.
        path: PathBuf,
    },
    /// The JSON is malformed.
    #[error("{}:{at}: {message}\n  hint: {hint}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// Where.
        at: LineCol,
        /// serde_json's message.
        message: String,
        /// How to fix it.
        hint: String,
    },
    /// The top-level value is not a persona container.
    #[error("{}:1:1: expected a JSON array of personas, an object with a \"personas\" array, or one agent object, found {found}", path.display())]
    Shape {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        found: &'static str,
    },
    /// A persona value does not fit the schema.
    #[error("invalid persona{}: {message}", if field.is_empty() { String::new() } else { format!(" field `{field}`") })]
    Invalid {
        /// Field path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A fragment could not be applied.
    #[error("fragment {fragment:?} applied to persona {persona:?} gives an invalid persona: {message}")]
    Fragment {
        /// Fragment name.
        fragment: String,
        /// Persona id.
        persona: String,
        /// What is wrong.
        message: String,
    },
    /// The database has validation errors.
    #[error(
        "{errors} validation error(s) in the persona database; run `troupe validate` for the full report. First: {first}"
    )]
    Validation {
        /// How many errors.
        errors: usize,
        /// The first error, rendered.
        first: String,
    },
}
