//! The actors of a simulation, one per file.
//!
//! ```text
//! engine (plain async code, not an actor)
//!  ├── MetricsActor      aggregates latency histograms and counters
//!  ├── SupervisorActor   every LLM call: workers, spacing, timeout, retry, fallback
//!  │    └── PersonaActor × N   (linked: a panicking persona is restarted with its memory)
//!  └── WorldActor        the clock and the turn loop; delivers messages, applies interventions
//! ```
//! Transcript events flow from the world to the engine on an unbounded channel.
//!
//! With `--metrics-addr`, one `MonitorActor` per process hears every run's metrics actor
//! start and stop, and answers `/metrics` scrapes with all of them added up.
//!
//! In a sharded run (`troupe run --cluster`) the personas live in `troupe shard` processes:
//! the world speaks [`remote`] messages to the cluster layer instead of asking local persona
//! actors, and on each shard a `HostActor` stands in for the world: it makes the persona
//! actors it is given (under its own supervisor) and gathers what they do.

pub mod host;
pub mod metrics;
pub mod monitor;
pub mod persona;
pub mod remote;
pub mod supervisor;
pub mod world;
