//! Prices per model (`config/pricing.toml`) and what calls cost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::llm::Usage;

/// Input and output price, USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million prompt tokens.
    pub input: f64,
    /// Per million completion tokens.
    pub output: f64,
}

/// The pricing table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    /// Prices by model name (prefix-matched, longest first).
    #[serde(default)]
    pub models: BTreeMap<String, Price>,
}

/// Errors reading the pricing file.
#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has a wrong shape.
    #[error("{}: {message}\n  hint: each model needs `input` and `output` prices in USD per million tokens, e.g. [models.\"gpt-4o-mini\"] input = 0.15 output = 0.60", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message (with line and column).
        message: String,
    },
    /// A price is negative or not a number.
    #[error("{}: model {model:?}: prices must be zero or positive numbers", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The model.
        model: String,
    },
}

impl Pricing {
    /// Reads a pricing file. A missing file gives an empty table (every model unpriced).
    pub fn load(path: &Path) -> Result<Self, PricingError> {
        let text = match crate::fsutil::read_input(path, crate::fsutil::MAX_CONFIG_BYTES, "a pricing file")
            .and_then(|b| String::from_utf8(b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
        {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Pricing::default()),
            Err(source) => return Err(PricingError::Io { path: path.to_path_buf(), source }),
        };
        let p: Pricing = toml::from_str(&text)
            .map_err(|e| PricingError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        for (model, price) in &p.models {
            let ok = |v: f64| v.is_finite() && v >= 0.0;
            if !ok(price.input) || !ok(price.output) {
                return Err(PricingError::Invalid { path: path.to_path_buf(), model: model.clone() });
            }
        }
        Ok(p)
    }

    /// The price of `model`: an exact entry, else the longest entry it starts with.
    pub fn price(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.models.get(model) {
            return Some(*p);
        }
        self.models.iter().filter(|(k, _)| model.starts_with(k.as_str())).max_by_key(|(k, _)| k.len()).map(|(_, p)| *p)
    }

    /// What `usage` costs on `model`, or `None` when the model has no price.
    pub fn cost(&self, model: &str, usage: Usage) -> Option<f64> {
        self.price(model)
            .map(|p| (usage.prompt_tokens as f64 * p.input + usage.completion_tokens as f64 * p.output) / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let p: Pricing = toml::from_str(
            "[models.\"gpt-4o\"]\ninput = 2.5\noutput = 10.0\n[models.\"gpt-4o-mini\"]\ninput = 0.15\noutput = 0.6\n",
        )
        .unwrap();
        assert_eq!(p.price("gpt-4o-mini-2024-07-18").unwrap().input, 0.15);
        assert_eq!(p.price("gpt-4o-2024-08-06").unwrap().input, 2.5);
        assert!(p.price("llama3").is_none());
        let c = p.cost("gpt-4o-mini", Usage::new(1_000_000, 500_000)).unwrap();
        assert!((c - 0.45).abs() < 1e-9);
    }

    #[test]
    fn shipped_table_loads() {
        let p = Pricing::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/pricing.toml"))).unwrap();
        assert!(p.price("gpt-4o-mini").is_some());
    }

    #[test]
    fn bad_files_say_what_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.toml");
        std::fs::write(&f, "[models.\"x\"]\ninput = \"cheap\"\n").unwrap();
        assert!(Pricing::load(&f).unwrap_err().to_string().contains("USD per million"));
        std::fs::write(&f, "[models.\"x\"]\ninput = -1.0\noutput = 1.0\n").unwrap();
        assert!(matches!(Pricing::load(&f), Err(PricingError::Invalid { .. })));
    }
}
