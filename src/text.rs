//! Text rules that need nothing but the text: words, content terms, questions and name
//! matching ([`similarity`]: the near-duplicate measure; [`lines`]: what makes a persona's line
//! readable). The analysis reports them on saved runs (`analysis::text` is this module); the
//! embedded local model's provider acts on the same rules while it writes a reply, so both see
//! one definition and neither imports the other.

use std::collections::HashSet;
use std::sync::OnceLock;

pub mod lines;
pub mod similarity;

/// Words as a reader counts them: runs of non-whitespace that hold a letter or digit.
pub fn word_count(text: &str) -> usize {
    text.split_whitespace().filter(|w| w.chars().any(char::is_alphanumeric)).count()
}

/// Lower-cased word tokens: letters and digits, keeping inner apostrophes and hyphens
/// ("don't", "four-day").
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’' || c == '-'))
        .map(|w| w.trim_matches(|c: char| c == '\'' || c == '’' || c == '-'))
        .filter(|w| !w.is_empty())
        .map(|w| {
            let lower = w.to_lowercase();
            if lower.contains('’') { lower.replace('’', "'") } else { lower }
        })
        .collect()
}

/// Content terms for keywords: tokens of 3+ characters that hold a letter and are neither a
/// stop word nor in `exclude` (participants' names).
pub fn content_terms(text: &str, exclude: &HashSet<String>) -> Vec<String> {
    content_terms_of(tokens(text), exclude)
}

/// [`content_terms`] of a text already split by [`tokens`].
pub fn content_terms_of(tokens: Vec<String>, exclude: &HashSet<String>) -> Vec<String> {
    tokens
        .into_iter()
        .filter(|t| {
            t.chars().count() >= 3
                && t.chars().any(char::is_alphabetic)
                && !is_stop_word(t)
                && !exclude.contains(t)
                && !t.contains('\'')
        })
        .collect()
}

/// Sentences that end with a question mark.
pub fn question_count(text: &str) -> usize {
    let mut n = 0;
    let mut in_question_run = false;
    for c in text.chars() {
        if c == '?' {
            if !in_question_run {
                n += 1;
            }
            in_question_run = true;
        } else if !c.is_whitespace() {
            in_question_run = false;
        }
    }
    n
}

/// The first name of a display name: its first word that is not a title ("Dr. Sarah Chen" →
/// "Sarah").
pub fn first_name(full: &str) -> &str {
    const TITLES: &[&str] = &["dr", "mr", "mrs", "ms", "prof", "sir", "dame"];
    full.split_whitespace().find(|w| !w.ends_with('.') && !TITLES.contains(&w.to_lowercase().as_str())).unwrap_or(full)
}

/// True when `needle` occurs in `hay` as whole words (no letter or digit on either side).
pub fn contains_name(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let mut from = 0;
    while let Some(pos) = hay[from..].find(needle) {
        let start = from + pos;
        let end = start + needle.len();
        let before_ok = hay[..start].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
        let after_ok = hay[end..].chars().next().is_none_or(|c| !c.is_alphanumeric());
        if before_ok && after_ok {
            return true;
        }
        from = start + needle.chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// Common English function words, left out of keywords.
const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "cannot",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "don",
    "down",
    "during",
    "each",
    "either",
    "else",
    "even",
    "ever",
    "every",
    "few",
    "for",
    "from",
    "further",
    "get",
    "gets",
    "got",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "however",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "let",
    "lets",
    "like",
    "may",
    "me",
    "might",
    "more",
    "most",
    "much",
    "must",
    "my",
    "myself",
    "need",
    "needs",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "one",
    "only",
    "or",
    "other",
    "others",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "per",
    "put",
    "rather",
    "really",
    "same",
    "say",
    "says",
    "see",
    "shall",
    "she",
    "should",
    "since",
    "so",
    "some",
    "still",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "things",
    "think",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "upon",
    "us",
    "very",
    "want",
    "was",
    "way",
    "we",
    "well",
    "were",
    "what",
    "when",
    "where",
    "whether",
    "which",
    "while",
    "who",
    "whom",
    "whose",
    "why",
    "will",
    "with",
    "within",
    "without",
    "would",
    "yes",
    "yet",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
    "going",
    "make",
    "makes",
    "made",
    "take",
    "first",
    "sure",
    "that's",
    "it's",
    "i'm",
    "i'd",
    "we're",
    "let's",
    "don't",
    "there's",
    "actually",
    "around",
    "something",
    "anything",
    "everything",
    "nothing",
    "someone",
    "everyone",
    "anyone",
    "maybe",
    "perhaps",
    "point",
    "right",
    "good",
    "able",
    "many",
    "two",
    "three",
    "next",
    "last",
    "new",
    "lot",
    "lots",
    "another",
    "again",
    "already",
    "always",
    "never",
    "often",
    "quite",
    "said",
    "says",
    "tell",
    "told",
];

/// True for a stop word.
pub fn is_stop_word(w: &str) -> bool {
    static SET: OnceLock<foldhash::HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| STOP_WORDS.iter().copied().collect()).contains(w)
}

/// `text` as one line of at most `max_chars` characters, for a view that shows many lines:
/// whitespace and control characters (newlines, escape sequences' ESC) become single spaces,
/// and a longer text is cut at a character boundary and ends with `…`.
pub fn one_line(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    if max_chars == 0 {
        return out;
    }
    let mut n = 0;
    let words = text.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty());
    for (i, w) in words.enumerate() {
        for c in (i > 0).then_some(' ').into_iter().chain(w.chars()) {
            if n == max_chars {
                out.pop();
                out.truncate(out.trim_end().len());
                out.push('…');
                return out;
            }
            out.push(c);
            n += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_collapses_and_cuts_at_a_character() {
        assert_eq!(one_line("  a\nb\t\u{1b}[2Jc  ", 80), "a b [2Jc");
        assert_eq!(one_line("héllo wörld", 11), "héllo wörld");
        assert_eq!(one_line("héllo wörld", 10), "héllo wör…");
        assert_eq!(one_line("ab cd", 3), "ab…");
        assert_eq!(one_line("ab cd", 4), "ab…");
        assert_eq!(one_line("abc", 0), "");
        assert_eq!(one_line(&"x".repeat(1_000_000), 5).chars().count(), 5);
    }

    #[test]
    fn words_tokens_questions_names() {
        assert_eq!(word_count("Hello, world — it's 3 p.m. !"), 5);
        assert_eq!(tokens("Don't ship the four-day week!"), ["don't", "ship", "the", "four-day", "week"]);
        assert_eq!(question_count("Why? Really?? Fine. How so?"), 3);
        assert_eq!(first_name("Dr. Sarah Chen"), "Sarah");
        assert_eq!(first_name("Prof Ana Ruiz"), "Ana");
        assert!(contains_name("Thanks, Sarah.", "Sarah"));
        assert!(!contains_name("Sarahs", "Sarah"));
        assert!(contains_name("Ask Sarah Chen", "Sarah Chen"));
        assert!(!contains_name("", "x"));
    }
}
