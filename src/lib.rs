//! troupe-sim: an actor-based runtime for persona-based multi-agent LLM simulations.
//!
//! # Map of the modules
//! - [`persona`]: the `PersonaSpec` type; loading native and TinyTroupe files, fragments,
//!   validation, atomic saving with backups.
//! - [`config`]: `SimulationConfig` and its layering (defaults, `config/troupe.toml`, a
//!   TinyTroupe `config.ini`, scenario overrides, `TROUPE_*` environment, CLI flags), with where
//!   each value came from; the API key as a secret.
//! - [`scenario`]: the RON scenario format and `troupe scenario check`.
//! - [`fsutil`]: atomic writes.
#![warn(missing_docs, missing_debug_implementations)]

pub mod actors;
pub mod config;
pub mod engine;
pub mod fsutil;
pub mod llm;
pub mod memory;
pub mod persona;
pub mod results;
pub mod rng;
pub mod scenario;
pub mod transcript;
