//! A string that never shows itself: `Debug`, `Display` and `Serialize` all print `[redacted]`;
//! and [`Redactor`], which takes keys back out of text a server sent.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

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

/// Length of the pieces of a key [`Redactor`] looks for: any run of this many characters of a
/// key is redacted, so a key quoted in halves, or with its start cut off, is still caught.
pub const REDACT_WINDOW: usize = 8;

/// Shortest run of key characters after `sk-` that counts as an OpenAI-style key of unknown value.
const SK_MIN: usize = 8;

/// Removes API keys from text a server sent back (model replies, error bodies), so they never
/// reach a transcript, journal, result, export, log or error message.
///
/// - Letter case is ignored (ASCII: keys are ASCII), so an upper-cased echo (`SK-...`) is caught.
/// - Any run of [`REDACT_WINDOW`] (8) or more consecutive characters of a key is replaced, so a
///   key split across a reply, or with a suffix left over after a cut, is caught too. A key
///   shorter than that is replaced where it appears whole.
/// - Anything shaped like an OpenAI key (`sk-` at the start of a word, then 8 or more of
///   letters, digits, `-` and `_`) is replaced even when it is no key this process holds.
///
/// Each run becomes one [`REDACTED`]. The text is read once: every 8-byte window of every key
/// (lower-cased) is held as a `u64` in a hash set, and a rolling window over the text is looked
/// up byte by byte; no regular expression, no search per key. Replacements are widened to
/// character boundaries, so the result is always valid UTF-8. A key made of ordinary words
/// (`sk-no-key-required`) also takes those words out of model text; a random key does not.
#[derive(Clone, Default)]
pub struct Redactor {
    windows: HashSet<u64, BuildHasherDefault<WindowHasher>>,
    short: Vec<Vec<u8>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor").field("windows", &self.windows.len()).field("short_keys", &self.short.len()).finish()
    }
}

impl Redactor {
    /// A redactor for `keys` (trimmed; empty ones ignored).
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a SecretString>) -> Self {
        let mut r = Redactor::default();
        for k in keys {
            let k = k.expose().trim().as_bytes();
            if k.is_empty() {
                continue;
            }
            if k.len() < REDACT_WINDOW {
                r.short.push(k.to_ascii_lowercase());
                continue;
            }
            for w in k.windows(REDACT_WINDOW) {
                r.windows.insert(w.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(b.to_ascii_lowercase())));
            }
        }
        r
    }

    /// `text` with every key (whole, in part, in any letter case) and OpenAI-shaped key replaced
    /// by [`REDACTED`]; borrowed when there was nothing to replace.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let spans = self.spans(text.as_bytes());
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        // `at`: where the text not yet copied starts; always a character boundary.
        let mut at = 0;
        for (i, (mut start, mut end)) in spans.into_iter().enumerate() {
            start = start.max(at);
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            while !text.is_char_boundary(end) {
                end += 1;
            }
            // Widened to touch the previous replacement: that one grows instead.
            if i == 0 || start > at {
                out.push_str(&text[at..start]);
                out.push_str(REDACTED);
            }
            at = end.max(at);
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }

    /// [`Redactor::redact`] for an owned string, which is handed back unchanged (not copied)
    /// when there was nothing to replace.
    pub fn redact_string(&self, text: String) -> String {
        match self.redact(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(s) => s,
        }
    }

    /// Byte ranges to replace, sorted, overlapping and touching ones merged.
    fn spans(&self, b: &[u8]) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        if !self.windows.is_empty() && b.len() >= REDACT_WINDOW {
            let mut w = 0u64;
            for (i, byte) in b.iter().enumerate() {
                w = (w << 8) | u64::from(byte.to_ascii_lowercase());
                if i + 1 >= REDACT_WINDOW && self.windows.contains(&w) {
                    spans.push((i + 1 - REDACT_WINDOW, i + 1));
                }
            }
        }
        for k in &self.short {
            let mut i = 0;
            while i + k.len() <= b.len() {
                if b[i..i + k.len()].eq_ignore_ascii_case(k) {
                    spans.push((i, i + k.len()));
                    i += k.len();
                } else {
                    i += 1;
                }
            }
        }
        openai_shaped(b, &mut spans);
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (s, e) in spans {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        merged
    }
}

fn key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Pushes the spans of `sk-` + 8 or more key characters at the start of a word.
fn openai_shaped(b: &[u8], spans: &mut Vec<(usize, usize)>) {
    let mut i = 0;
    while i + 3 <= b.len() {
        if b[i..i + 3].eq_ignore_ascii_case(b"sk-") && (i == 0 || !key_char(b[i - 1])) {
            let end = i + 3 + b[i + 3..].iter().take_while(|c| key_char(**c)).count();
            if end - i - 3 >= SK_MIN {
                spans.push((i, end));
            }
            i = end.max(i + 3);
        } else {
            i += 1;
        }
    }
}

/// The windows are already well-mixed bytes of random keys; one multiply spreads them over the
/// table (FxHash's step), far cheaper than SipHash for a lookup per byte of text.
#[derive(Default)]
struct WindowHasher(u64);

impl Hasher for WindowHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "sk-canary-7f3a9c2e4b81d6f0a5c9e3b7";

    fn redactor(keys: &[&str]) -> Redactor {
        let keys: Vec<SecretString> = keys.iter().map(|k| SecretString::new(*k)).collect();
        Redactor::new(&keys)
    }

    /// Any 8 characters of `KEY`, in any case, found in `text`.
    fn leak(text: &str) -> Option<&'static str> {
        let lower = text.to_ascii_lowercase();
        (0..=KEY.len() - 8).map(|i| &KEY[i..i + 8]).find(|w| lower.contains(w))
    }

    #[test]
    fn whole_upper_cased_and_split_keys_are_redacted() {
        let r = redactor(&[KEY]);
        let (head, tail) = KEY.split_at(17);
        for (text, want) in [
            (format!("key {KEY} end"), "key [redacted] end".to_string()),
            (format!("KEY {} END", KEY.to_uppercase()), "KEY [redacted] END".into()),
            (format!("Bearer {KEY}"), "Bearer [redacted]".into()),
            (format!("a {head} b {tail} c"), "a [redacted] b [redacted] c".into()),
            (format!("cut: {}", &KEY[..12]), "cut: [redacted]".into()),
            (format!("suffix: {}", &KEY[KEY.len() - 8..]), "suffix: [redacted]".into()),
            (format!("{KEY}{KEY}"), "[redacted]".into()),
        ] {
            assert_eq!(r.redact(&text), want, "{text}");
        }
        // Seven characters of the key are not a key.
        let seven = &KEY[20..27];
        assert_eq!(r.redact(&format!("x{seven}x")), format!("x{seven}x"));
    }

    #[test]
    fn clean_text_is_borrowed_and_unchanged() {
        let r = redactor(&[KEY]);
        for text in
            ["", "short", "I think we should start small and measure what happens.", "ask-questions", "sk-learn"]
        {
            assert!(matches!(r.redact(text), Cow::Borrowed(t) if t == text), "{text}");
        }
        let s = String::from("nothing here");
        let p = s.as_ptr();
        let back = r.redact_string(s);
        assert_eq!(back.as_ptr(), p, "not copied");
    }

    #[test]
    fn short_keys_match_only_whole_ignoring_case() {
        let r = redactor(&["abc123", "  "]);
        assert_eq!(r.redact("key ABC123 or abc123!"), "key [redacted] or [redacted]!");
        assert_eq!(r.redact("abc12 bc123"), "abc12 bc123", "parts of a short key are not redacted");
    }

    #[test]
    fn openai_shaped_tokens_are_redacted_without_knowing_the_key() {
        let r = Redactor::default();
        assert_eq!(r.redact("use 'sk-proj-AbC123xyz_789' here"), "use '[redacted]' here");
        assert_eq!(r.redact("SK-ABCDEFGH12"), "[redacted]");
        assert_eq!(r.redact("risk-assessment and sk-short"), "risk-assessment and sk-short");
    }

    #[test]
    fn replacements_respect_character_boundaries() {
        let key = "ключ-secret-42";
        let r = redactor(&[key]);
        for text in [format!("«{key}»"), format!("漢{}字", &key[2..]), format!("{}🙂", &key[..12])] {
            let out = r.redact(&text);
            assert!(out.contains(REDACTED), "{text} -> {out}");
            assert!(!out.contains("secret-") && !out.contains("юч-"), "{out}");
        }
        // U+06BA ends in the byte `к` ends in, so a window of the key starts inside it: the
        // replacement widens to the whole character instead of cutting it.
        assert_eq!(r.redact(&format!("\u{6BA}{}", &key[2..])), REDACTED);
    }

    #[test]
    fn debug_shows_no_key() {
        let r = redactor(&[KEY]);
        assert!(leak(&format!("{r:?} {r:#?}")).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn no_eight_characters_of_the_key_survive(
            before in "\\PC{0,20}",
            after in "\\PC{0,20}",
            from in 0usize..KEY.len() - 8,
            len in 8usize..=34,
            upper in any::<bool>(),
            between in "\\PC{0,4}",
        ) {
            let r = redactor(&[KEY]);
            let piece = &KEY[from..(from + len).min(KEY.len())];
            let piece = if upper { piece.to_uppercase() } else { piece.to_string() };
            let text = format!("{before}{piece}{between}{piece}{after}");
            let out = r.redact(&text);
            prop_assert!(leak(&out).is_none(), "{:?} -> {:?}", text, out);
        }

        #[test]
        fn text_without_the_key_is_left_alone(text in "\\PC{0,80}") {
            let r = redactor(&[KEY]);
            prop_assume!(leak(&text).is_none() && !text.to_ascii_lowercase().contains("sk-"));
            prop_assert_eq!(r.redact(&text), text.as_str());
        }
    }

    #[test]
    fn never_shows() {
        let s = SecretString::new("sk-canary-123");
        assert_eq!(format!("{s:?} {s} {s:#?}"), "[redacted] [redacted] [redacted]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
        assert_eq!(s.expose(), "sk-canary-123");
    }
}
