//! Why a run could not start or finish, each saying what to change.

use std::path::PathBuf;

/// Errors that stop a run from starting or finishing.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Personas could not be loaded or are invalid.
    #[error(transparent)]
    Persona(#[from] crate::persona::PersonaError),
    /// A persona id is not in the database.
    #[error("unknown persona id `{id}`{hint}")]
    UnknownPersona {
        /// The id.
        id: String,
        /// A suggestion.
        hint: String,
    },
    /// The pricing table is unreadable.
    #[error(transparent)]
    Pricing(#[from] crate::cost::PricingError),
    /// A journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] crate::record::journal::JournalError),
    /// `resume` on a run that already finished.
    #[error("{} already ran to its last turn; nothing to resume (use `troupe run --replay` to re-run it)", .0.display())]
    AlreadyComplete(PathBuf),
    /// A fork that cannot be made.
    #[error("cannot fork: {0}")]
    Fork(String),
    /// Nothing to simulate.
    #[error("no persona takes part; name at least one (--personas a,b or a scenario)")]
    NoPersonas,
    /// The output folder cannot be used.
    #[error("cannot write the run's output in {}: {source}; check output.output_dir", path.display())]
    Output {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Saving failed.
    #[error(transparent)]
    Save(#[from] crate::record::results::SaveError),
    /// An actor could not start.
    #[error("the runtime failed to start: {0}")]
    Spawn(String),
    /// The configured provider cannot be set up.
    #[error("cannot set up the language-model provider: {0}")]
    Provider(#[from] crate::llm::LlmError),
    /// Another process owns the run folder.
    #[error(transparent)]
    Busy(#[from] crate::fsutil::LockError),
    /// A resume would send new calls elsewhere than the recorded ones.
    #[error(
        "{0}; check llm.provider and llm.base_url (or --set them), or pass --allow-provider-change to continue with the current configuration"
    )]
    ProviderChanged(String),
}
