//! Personas: the `PersonaSpec` type, loading (native schema and TinyTroupe agent files and
//! fragments), validation and saving.

pub mod facts;
pub mod json;
pub mod load;
pub mod save;
pub mod spec;
pub mod tinytroupe;
pub mod validate;

use std::path::PathBuf;

pub use json::LineCol;
pub use load::{Fragment, PersonaDatabase, apply_fragment, load_personas_by_tags};
pub use save::{SaveReport, SaveTarget, add_personas, check_add, save_personas};
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
    /// A save into an existing database the loader cannot read: writing it would replace what
    /// it holds, so it is refused and the file left as it is.
    #[error(
        "{}: not saved, and the file was left untouched: it cannot be read back as a persona database, so saving would replace what it holds with only the new personas. Fix it or move it away (troupe's earlier copies are in backups/ beside it), then save again.\n  why: {cause}",
        path.display()
    )]
    Unreadable {
        /// The database file or folder.
        path: PathBuf,
        /// The loader's error (file, `line:col`, hint). Not a `source`: the message holds it,
        /// so a cause chain does not print it twice.
        cause: Box<PersonaError>,
    },
    /// A file holding one object (one agent, one persona, one fragment) would have to hold
    /// several: refused rather than turning it into a list.
    #[error(
        "{}: not saved, and the file was left untouched: it holds one {kind} (one per file), and {count} personas would have to go into it. Point simulation.personas_file at the folder that holds it (each new persona then gets a file of its own there) or at a JSON array file, and save again",
        path.display()
    )]
    SingleFile {
        /// The file.
        path: PathBuf,
        /// `agent`, `persona` or `fragment`.
        kind: &'static str,
        /// How many objects the file would have had to hold.
        count: usize,
    },
    /// `save_personas` was given a folder.
    #[error(
        "{}: not saved: this is a folder and save_personas writes one file; add_personas gives each new persona a file of its own in a folder",
        path.display()
    )]
    IsFolder {
        /// The folder.
        path: PathBuf,
    },
    /// Adding a persona whose id the database already has.
    #[error(
        "{}: not saved: a persona with id `{id}` is already in the database (adding never replaces one); give the new persona another id",
        path.display()
    )]
    DuplicateId {
        /// The database.
        path: PathBuf,
        /// The id.
        id: String,
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
