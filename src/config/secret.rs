//! A string that never shows itself: `Debug`, `Display` and `Serialize` all print `[redacted]`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An API key or other secret. Read it with [`SecretString::expose`], only where it is sent.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretString(String);

/// What every rendering of a secret prints.
pub const REDACTED: &str = "[redacted]";

impl SecretString {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        SecretString(s.into())
    }
    /// The secret itself. Call only where it is sent to a provider.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// True when the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretString)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows() {
        let s = SecretString::new("sk-canary-123");
        assert_eq!(format!("{s:?} {s} {s:#?}"), "[redacted] [redacted] [redacted]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
        assert_eq!(s.expose(), "sk-canary-123");
    }
}
