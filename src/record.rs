//! What a run emits and saves: plain data and the files it lives in, knowing nothing of the
//! runtime that made it, so analysis, exports and resume read old runs as well as new ones.
//!
//! - [`transcript`]: the events a run emits (messages, skips, exchanges) and its final state.
//! - [`journal`]: the crash-safe, append-only record of a run (header, events, exchanges).
//! - [`results`]: `results.json` (the old engine's shape) and the run folder's other files.
//! - [`metrics`]: counters and latency percentiles (`metrics.json`, live snapshots).
//! - [`estimate`]: the pre-run estimate as saved, and its accuracy.
//! - [`exposition`]: metrics in the Prometheus text format, added up across runs.

pub mod estimate;
pub mod exposition;
pub mod journal;
pub mod metrics;
pub mod results;
pub mod transcript;
