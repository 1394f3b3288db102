//! troupe-sim: an actor-based runtime for persona-based multi-agent LLM simulations.
//!
//! # Map of the modules, as layers
//! Imports point down only; `tests/architecture.rs` fails on one that points up or sideways.
//! ```text
//! faces        web                        (the `troupe` binary's src/cli sits above it all)
//! distributed  cluster                    NATS JetStream: workers, queue, leases, journals, budget
//! tools        experiment  stress  doctor
//! after a run  review                     analysis + in-character judge, called by the faces
//! runtime      engine  monitoring         plan -> actors -> events -> journal -> results; /metrics
//! checks       export  validation
//! actors       actors  analysis           analysis reads saved records only
//! planning     estimate
//! records      record  prompt             what a run saves; where a persona meets a request
//! accounting   cost  memory
//! providers    llm                        the Provider trait and every provider
//! scenario     scenario                   scenario files, hearing graphs, the RunPlan
//! data         persona  model
//! settings     config
//! foundation   text
//! base         rng  fsutil
//! ```
//! - [`engine`]: runs one simulation: spawns the actors, collects their events, builds
//!   [`record::results::SimulationResults`]; resume, replay and forks from a journal
//!   (`engine::resume`). Start here.
//! - [`actors`]: one actor per file: `world` (turn loop), `persona` (mailbox + memory),
//!   `supervisor` (every LLM call: workers, spacing, timeout, retry, fallback; supervises the
//!   personas), `metrics` (HDR histograms and counters).
//! - [`llm`]: the `Provider` trait, provider-neutral request/response types, the token counter,
//!   the one retry policy (`llm::retry`), the response cache, the built-in simulated provider,
//!   the embedded local model (`llm::local`: tokenizer, template, sampler, its own llama network
//!   on candle, the blocking-thread queue).
//! - [`prompt`]: the one place a persona meets a chat request: system prompts, the turn's user
//!   message, reading replies back; persona generation (`prompt::generate`).
//! - [`record`]: what a run emits and saves: transcript events, the crash-safe journal,
//!   `results.json`, the metrics snapshot, the saved estimate.
//! - [`review`]: after a run: `analysis.json`, charts and the in-character judge.
//! - [`model`]: the local model's file: cache folder, `troupe model fetch` (pip), checksums.
//! - [`persona`]: `PersonaSpec`; loading native and TinyTroupe files, fragments, validation,
//!   atomic saving with backups; the facts a prompt is written from.
//! - [`memory`]: a persona's episodic memory and its bounded prompt window.
//! - [`scenario`]: the RON scenario format, resolving it against the database, `scenario check`,
//!   hearing graphs from files, the [`scenario::RunPlan`] a run executes.
//! - [`config`]: `SimulationConfig` and its layers (defaults, `config/troupe.toml`, a TinyTroupe
//!   `config.ini`, scenario overrides, `TROUPE_*` environment, CLI flags) with provenance; the
//!   API key as a secret.
//! - [`cost`], [`estimate`]: prices per model, live cost and `max_cost_usd`; estimates before a
//!   run.
//! - [`analysis`]: conversation analysis (`analysis.json`) and SVG charts; [`export`]: one
//!   exporter per format (json, jsonl, csv, markdown, html); [`experiment`]: variants × runs
//!   with statistics, blinding and per-persona extraction.
//! - [`cluster`]: experiments and stress sweeps on several machines through NATS JetStream: the
//!   coordinator queues runs, `troupe worker`s make them (leases, journals streamed for resume,
//!   files back in the report), and one GCRA rate budget per key holds across every worker;
//!   sharded runs: the world on the coordinator (`cluster::sharding`), persona actors on
//!   `troupe shard`s (`cluster::shard`, the `actors::host` actor standing in for the world).
//! - [`monitoring`]: `/metrics` in the Prometheus text format (`--metrics-addr`), served from
//!   the metrics actors' own figures through the process' `MonitorActor`, and the last
//!   transcript lines at `/messages`; reading them back from outside (`monitoring::scrape`,
//!   `monitoring::figures`: rates and quantiles) for `troupe top`; traces over OTLP/HTTP
//!   (`monitoring::traces`, the `tracing` layer; `monitoring::otlp`, the exporter thread).
//! - [`validation`]: persona checks (`troupe personas check`): a seeded interview through the
//!   run's provider, then a judge model's JSON verdict against expectations and the persona's
//!   facts; the same judge scores a run's messages (`in_character`).
//! - [`rng`], [`fsutil`]: stable seeded randomness and hashing (every random stream of a run is
//!   derived in one place, `rng::stream` with a named `rng::Stream`); atomic writes.
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
//! MonitorActor (one per process, with --metrics-addr) ◂── every run's MetricsActor
//!
//! sharded run: coordinator WorldActor ──(cluster::sharding, NATS)──▸ troupe shard:
//!              MetricsActor, SupervisorActor ── PersonaActor × its share, HostActor (the world's stand-in)
//! ```
#![warn(missing_docs, missing_debug_implementations)]

pub mod actors;
pub mod analysis;
pub mod cluster;
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
pub mod monitoring;
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
