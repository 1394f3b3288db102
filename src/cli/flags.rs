//! The config keys that named flags set (`--run-seed`, `--turns`, `--model`, ...), as one typed
//! value: each flag keeps the type clap parsed it into and is serialized straight into the
//! "command line" config layer, so no value is written out as text and guessed back (a run seed
//! above `i64::MAX` stays a `u64`). `--set KEY=VALUE` goes over it in the same layer.
//!
//! figment's own `Serialized` provider names its layer after the Rust type; the config's
//! [`Layer`] is the same serialized value under the name `troupe config show` prints.

use std::path::PathBuf;

use serde::Serialize;
use troupe_sim::config::{ConfigError, Layer, TurnPolicy};

/// The name `troupe config show` gives values from flags.
pub const COMMAND_LINE: &str = "command line";

/// Config keys set by flags, shaped like the config; what no flag sets is left out, so it
/// never hides a lower layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Flags {
    #[serde(skip_serializing_if = "is_unset")]
    pub simulation: SimulationFlags,
    #[serde(skip_serializing_if = "is_unset")]
    pub llm: LlmFlags,
    #[serde(skip_serializing_if = "is_unset")]
    pub performance: PerformanceFlags,
    #[serde(skip_serializing_if = "is_unset")]
    pub output: OutputFlags,
    #[serde(skip_serializing_if = "is_unset")]
    pub monitoring: MonitoringFlags,
}

/// `[simulation]` keys with flags.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SimulationFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_policy: Option<TurnPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_seed: Option<u64>,
}

/// `[llm]` keys with flags.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LlmFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u32>,
}

/// `[performance]` keys with flags.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PerformanceFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_workers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_delay: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parallel_runs: Option<usize>,
}

/// `[output]` keys with flags.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OutputFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_dir: Option<PathBuf>,
}

/// `[monitoring]` keys with flags.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MonitoringFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_linger_seconds: Option<f64>,
}

fn is_unset<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl Flags {
    /// The "command line" layer: these flags, then every `--set` over them (`None` when the
    /// command line sets nothing).
    pub fn layer(&self, sets: &[String]) -> Result<Option<Layer>, ConfigError> {
        if *self == Flags::default() && sets.is_empty() {
            return Ok(None);
        }
        Ok(Some(Layer::new(COMMAND_LINE, None, self)?.with_sets(sets)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_flags_and_sections_are_left_out() {
        let mut f = Flags::default();
        assert!(f.layer(&[]).unwrap().is_none());
        f.simulation.run_seed = Some(u64::MAX);
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v, serde_json::json!({"simulation": {"run_seed": u64::MAX}}));
        assert!(!f.layer(&[]).unwrap().unwrap().is_empty());
    }

    #[test]
    fn flags_are_typed_and_named_command_line_and_set_goes_over_them() {
        let mut f = Flags::default();
        f.simulation.run_seed = Some(u64::MAX);
        f.llm.temperature = Some(0.25);
        f.simulation.turn_policy = Some(TurnPolicy::RandomOrder);
        let sources = troupe_sim::config::ConfigSources {
            cli: f.layer(&["llm.temperature=0.5".to_string()]).unwrap(),
            ..Default::default()
        };
        let loaded = troupe_sim::config::load_config(&sources).unwrap();
        assert_eq!(loaded.config.simulation.run_seed, u64::MAX);
        assert_eq!(loaded.config.simulation.policy(), TurnPolicy::RandomOrder);
        assert_eq!(loaded.config.llm.temperature, 0.5, "--set is applied after the flags");
        for key in ["simulation.run_seed", "llm.temperature", "simulation.turn_policy"] {
            assert_eq!(troupe_sim::config::source_of(&loaded.figment, key), COMMAND_LINE, "{key}");
        }
    }
}
