//! The one internal persona type, `PersonaSpec`, and its native JSON schema.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A persona as troupe-sim uses it, whatever file format it came from.
///
/// Serialises to the native ("enhanced") schema; fields it does not know are kept in `extra`
/// so a load/save round trip loses nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonaSpec {
    /// Always `"TinyPerson"` in the native schema.
    #[serde(rename = "type", default = "tiny_person")]
    pub kind: String,
    /// Stable identifier: letters, digits, `_` and `-`.
    #[serde(default)]
    pub id: String,
    /// Display name, unique across a database (case-insensitively).
    #[serde(default)]
    pub name: String,
    /// Job or function in the simulation.
    #[serde(default)]
    pub role: String,
    /// Background and expertise.
    #[serde(default)]
    pub description: String,
    /// Traits, goals and communication habits.
    #[serde(default)]
    pub personality: Personality,
    /// Model override for this persona.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Temperature override for this persona (0.0..=2.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// How the system prompt is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompting: Option<Prompting>,
    /// Rules this persona must satisfy, checked by `troupe validate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_rules: Option<ValidationRules>,
    /// Labels used to select personas (`--tags`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Fields this schema does not know, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Where the persona came from and, for TinyTroupe files, the original object.
    #[serde(skip)]
    pub origin: Origin,
}

fn tiny_person() -> String {
    "TinyPerson".to_string()
}

/// The personality block of the native schema.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Personality {
    /// Adjectives such as "analytical".
    #[serde(default)]
    pub traits: Vec<String>,
    /// What the persona wants out of the conversation.
    #[serde(default)]
    pub goals: Vec<String>,
    /// Communication style in words.
    #[serde(default)]
    pub style: String,
    /// structured | visual | direct (free text accepted).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub communication: String,
    /// data-driven | intuitive | collaborative (free text accepted).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub decisions: String,
    /// systematic | creative | pragmatic (free text accepted).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub approach: String,
    /// Unknown personality fields, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Prompt layout hints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Prompting {
    /// `markdown` or `text`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub format: String,
    /// A system role definition placed at the top of the prompt.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    /// Unknown fields, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Per-persona validation rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValidationRules {
    /// Traits that must appear in `personality.traits` (case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_traits: Vec<String>,
    /// The most goals allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_goals: Option<usize>,
    /// Words that must appear in `personality.style` (case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub style_constraints: Vec<String>,
    /// Unknown fields, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The file format a persona was read from; decides how it is written back.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Origin {
    /// The native schema (or built in code).
    #[default]
    Native,
    /// A TinyTroupe `*.agent.json` object; `original` is the whole top-level object, written back
    /// unchanged on save.
    TinyTroupe {
        /// The top-level object as read.
        original: Map<String, Value>,
    },
}

impl PersonaSpec {
    /// A native persona with the required fields; set `personality` and the rest afterwards.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        role: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        PersonaSpec {
            kind: tiny_person(),
            id: id.into(),
            name: name.into(),
            role: role.into(),
            description: description.into(),
            personality: Personality::default(),
            model: None,
            temperature: None,
            prompting: None,
            validation_rules: None,
            tags: Vec::new(),
            extra: Map::new(),
            origin: Origin::Native,
        }
    }

    /// The JSON value written when saving: the native schema, or the original TinyTroupe object.
    pub fn to_saved_value(&self) -> Value {
        match &self.origin {
            Origin::Native => serde_json::to_value(self).unwrap_or(Value::Null),
            Origin::TinyTroupe { original } => Value::Object(original.clone()),
        }
    }

    /// True when the persona carries `tag` (case-insensitive).
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t.eq_ignore_ascii_case(tag))
    }
}
