//! What makes a persona's line readable, as rules on its text: it speaks as the persona (no
//! invented speaker, not in the third person), it ends at a sentence, and it takes up the
//! question's own words. `analysis::text_quality` counts them in a run; the local model's
//! provider checks each reply with them before the room hears it.
//!
//! - **invented speaker**: the line opens by naming a speaker instead of speaking: a label
//!   (`Mike:`, `Raj Patel (Engineer):`, `[turn 2] ...`) naming anyone but the persona itself; a
//!   name followed by a title (`Mike, Product Manager, ...`) that is not the persona's; or a
//!   name nobody in the room has, followed by a comma (`Mike, I think ...`); or a later line of
//!   the reply opens with such a label (the model writing the next speaker's line); or the line
//!   introduces someone else's speech (`Mike responds, "..."`). Addressing
//!   someone who is in the room (`Raj, I agree.`) is speech, not an invented speaker; a few
//!   heading words (`Summary:`, `Pros:`) are not names, nor is a phrase opening with a
//!   determiner (`The CEO, a seasoned engineer, ...` is narration).
//! - **third person**: the persona's own name (full or first) as the subject of a sentence
//!   (`Marcus is asking whether ...`, `Marcus's team`), or a line that opens with he/she/his/her
//!   (nobody else has been named for it to refer to).
//! - **mid-sentence**: the line does not end with `.`, `!`, `?` or `…` (closing quotes and
//!   brackets aside).
//! - **takes up the question**: the line uses at least a quarter (and at least two) of the
//!   question's distinct content words ([`super::content_terms`], participants' names left
//!   out), matched loosely (a plural `s` dropped, then the same first five letters: `covered`
//!   takes up `cover`).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{content_terms, first_name, tokens};

/// What one line does wrong (or right).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineFlags {
    /// Opens as a speaker other than the persona.
    pub invented_speaker: bool,
    /// Speaks of the persona in the third person.
    pub third_person: bool,
    /// Ends mid-sentence.
    pub mid_sentence: bool,
    /// Takes up the question's own words.
    pub takes_up_question: bool,
}

/// A participant's name in the forms a line may use: the full name, the first name (titles
/// skipped) and the last word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameForms {
    forms: Vec<String>,
}

impl NameForms {
    /// The forms of `full` ("Dr. Sarah Chen": "Dr. Sarah Chen", "Sarah Chen", "Sarah", "Chen").
    pub fn new(full: &str) -> Self {
        let full = full.trim();
        let mut forms = vec![full.to_string()];
        let first = first_name(full);
        if let Some(at) = full.find(first) {
            forms.push(full[at..].to_string());
        }
        forms.push(first.to_string());
        if let Some(last) = full.split_whitespace().last() {
            forms.push(last.to_string());
        }
        forms.retain(|f| !f.is_empty());
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        NameForms { forms }
    }

    /// True when `words` (as written) is one of the forms, ignoring case.
    pub fn is(&self, words: &str) -> bool {
        self.forms.iter().any(|f| f.eq_ignore_ascii_case(words.trim()))
    }

    /// The forms, longest first.
    pub fn forms(&self) -> &[String] {
        &self.forms
    }
}

/// The question's content words, stemmed loosely, for [`LineFlags::takes_up_question`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuestionTerms {
    stems: Vec<String>,
}

impl QuestionTerms {
    /// The distinct content words of `question`, leaving out `names` (the participants').
    pub fn new(question: &str, names: &[NameForms]) -> Self {
        let exclude: HashSet<String> =
            names.iter().flat_map(|n| n.forms().iter().flat_map(|f| tokens(f))).collect::<HashSet<_>>();
        let mut stems: Vec<String> = content_terms(question, &exclude).iter().map(|t| stem(t)).collect();
        stems.sort();
        stems.dedup();
        QuestionTerms { stems }
    }

    /// The stems.
    pub fn stems(&self) -> &[String] {
        &self.stems
    }

    /// How many of the question's words `text` uses.
    pub fn used_in(&self, text: &str) -> usize {
        let words: HashSet<String> = tokens(text).iter().map(|t| stem(t)).collect();
        self.stems.iter().filter(|s| words.contains(*s)).count()
    }

    /// True when `text` uses at least a quarter (and at least two) of the question's words, or
    /// all of them when the question has fewer than two.
    pub fn taken_up_by(&self, text: &str) -> bool {
        let need = self.stems.len().div_ceil(4).max(2).min(self.stems.len());
        need > 0 && self.used_in(text) >= need
    }
}

/// A word's loose stem: lower case, a plural `s` dropped, at most five letters.
pub fn stem(word: &str) -> String {
    let w = word.to_lowercase();
    let w = w.strip_suffix("'s").unwrap_or(&w);
    let w = if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") { &w[..w.len() - 1] } else { w };
    w.chars().take(5).collect()
}

/// Words that open a sentence with a comma after them without being a name.
const OPENERS: &[&str] = &[
    "absolutely",
    "actually",
    "additionally",
    "agreed",
    "again",
    "alright",
    "also",
    "besides",
    "certainly",
    "clearly",
    "exactly",
    "finally",
    "first",
    "firstly",
    "frankly",
    "furthermore",
    "good",
    "great",
    "hello",
    "hi",
    "honestly",
    "however",
    "indeed",
    "instead",
    "interesting",
    "look",
    "meanwhile",
    "moreover",
    "no",
    "now",
    "ok",
    "okay",
    "overall",
    "personally",
    "right",
    "second",
    "secondly",
    "so",
    "still",
    "sure",
    "thanks",
    "then",
    "therefore",
    "third",
    "true",
    "ultimately",
    "well",
    "yes",
];

/// True when `w` could be a word of a name: a capital first letter, then letters (and `.'-`).
fn name_word(w: &str) -> bool {
    w.chars().next().is_some_and(char::is_uppercase)
        && w.chars().all(|c| c.is_alphabetic() || matches!(c, '.' | '\'' | '-' | '’'))
}

/// The opening of a line that names a speaker, if any: the name and what follows it.
/// `[turn 2] Raj Patel (Engineer): ...` gives `Raj Patel`.
fn opening_name(text: &str) -> Option<(&str, char, &str)> {
    let mut t = text.trim_start().trim_start_matches(['*', '"', '“', '\'', '-', ' ']);
    if let Some(rest) = t.strip_prefix("[turn") {
        t = rest.split_once(']').map_or("", |(_, r)| r).trim_start();
    }
    // Up to three name words, then `:`, `,` or ` (`.
    let mut end = 0;
    for (n, w) in t.split(' ').enumerate() {
        let bare = w.trim_end_matches('*').trim_end_matches([':', ',']);
        if n >= 3 || !name_word(bare) {
            break;
        }
        end += w.len();
        if bare.len() < w.len() {
            let sep = w[bare.len()..].chars().next()?;
            let name = t[..end - (w.len() - bare.len())].trim();
            return Some((name, sep, &t[end..]));
        }
        if t[end..].starts_with(" (") {
            // `Name (Role):` is a label; `Name (anything else` is not.
            let close = t[end..].find(')')?;
            let after = &t[end + close + 1..];
            return after.starts_with(':').then(|| (t[..end].trim(), ':', &after[1..]));
        }
        end += 1;
    }
    None
}

/// Words that end in a colon at the start of a line without being a speaker's name.
const HEADINGS: &[&str] = &[
    "answer",
    "conclusion",
    "cons",
    "example",
    "note",
    "option",
    "options",
    "pros",
    "question",
    "recommendation",
    "reply",
    "response",
    "summary",
    "update",
];

/// True when `text` opens as a speaker other than `own`, or a later line of it does (a label
/// only: `\nRaj Patel: ...`): see the module's rules.
pub fn invented_speaker(text: &str, own: &NameForms, room: &[NameForms]) -> bool {
    opens_as_other(text, own, room, true) || text.lines().skip(1).any(|l| opens_as_other(l, own, room, false))
}

/// Where the first later line of `text` that opens as another speaker's label starts (a byte
/// offset; the model went on to write the next speaker's line), if one does.
pub fn invented_line_at(text: &str, own: &NameForms, room: &[NameForms]) -> Option<usize> {
    let mut at = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if n > 0 && opens_as_other(line, own, room, false) {
            return Some(at);
        }
        at += line.len();
    }
    None
}

/// True when the first line of `text` opens as a speaker other than `own`.
pub fn invented_opening(text: &str, own: &NameForms, room: &[NameForms]) -> bool {
    opens_as_other(text, own, room, true)
}

/// `text` without an opening that names another speaker: a label (`Mike:`, `Mike, Product
/// Manager, 3rd year:`) goes up to its colon; an opening without a colon (`Mike Turner, I
/// disagree. ...`) goes up to the end of its first sentence. Empty when nothing is left.
pub fn without_opening(text: &str) -> &str {
    let t = text.trim_start();
    let first_line = t.lines().next().unwrap_or("");
    // A label's colon comes early, before any sentence end.
    let head = &first_line[..first_line.len().min(80)];
    let sentence_end = head.find(['.', '!', '?']).unwrap_or(head.len());
    if let Some(colon) = head.find(':').filter(|c| *c < sentence_end) {
        return t[colon + 1..].trim_start_matches(['*', ' ']);
    }
    match t.find(". ").or_else(|| t.find("! ")).or_else(|| t.find("? ")) {
        Some(end) => t[end + 2..].trim_start(),
        None => "",
    }
}

/// Words that open a noun phrase, never a person's name.
const DETERMINERS: &[&str] = &["The", "A", "An", "This", "That", "These", "Those", "Our", "My", "Your", "Their", "Its"];

/// Verbs that introduce someone's speech: `Mike responds, "..."`.
const SPEECH_VERBS: &[&str] =
    &["says", "said", "responds", "responded", "replies", "replied", "asks", "adds", "answers", "writes", "explains"];

/// The name in an opening that introduces someone's speech (`Mike responds, "..."`, `Raj
/// Patel says: ...`): one to three name words, then a speech verb.
fn speech_intro(line: &str) -> Option<&str> {
    let t = line.trim_start().trim_start_matches(['*', '"', '“', ' ']);
    let mut end = 0;
    for (n, w) in t.split(' ').enumerate() {
        let bare = w.trim_end_matches([',', ':']);
        if n > 0 && SPEECH_VERBS.contains(&bare) {
            let name = t[..end].trim();
            return (!DETERMINERS.contains(&name.split(' ').next().unwrap_or("")) && name != "I").then_some(name);
        }
        if n >= 3 || !name_word(w) {
            return None;
        }
        end += w.len() + 1;
    }
    None
}

/// Whether one line opens as a speaker other than `own`; `first`: the reply's first line, where
/// `Name, Title,` and an unknown `Name,` count too.
fn opens_as_other(line: &str, own: &NameForms, room: &[NameForms], first: bool) -> bool {
    if line.trim_start().starts_with("[turn") {
        // A transcript line copied or invented, whoever it names.
        return opening_name(line).is_none_or(|(name, _, _)| !own.is(name));
    }
    if first && let Some(name) = speech_intro(line) {
        return !own.is(name);
    }
    let Some((name, sep, rest)) = opening_name(line) else { return false };
    let lower = name.to_lowercase();
    // `The CEO, a seasoned engineer, ...` is narration, not a speaker's name.
    if sep != ':' && name.split_whitespace().next().is_some_and(|w| DETERMINERS.contains(&w)) {
        return false;
    }
    if own.is(name) || name == "I" || OPENERS.contains(&lower.as_str()) || HEADINGS.contains(&lower.as_str()) {
        return false;
    }
    match sep {
        ':' => !rest.trim().is_empty(),
        _ if first => {
            let next = rest.split_whitespace().next().unwrap_or("");
            let titled = name_word(next.trim_end_matches([',', '.'])) && next != "I";
            titled || !room.iter().any(|r| r.is(name))
        }
        _ => false,
    }
}

/// True when `text` speaks of `own` in the third person: see the module's rules.
pub fn third_person(text: &str, own: &NameForms) -> bool {
    let first = text.trim_start().trim_start_matches(['*', '"', '“']).split_whitespace().next().unwrap_or("");
    if matches!(first.trim_end_matches([',', '\'']), "He" | "She" | "His" | "Her") {
        return true;
    }
    for form in own.forms() {
        let mut from = 0;
        while let Some(pos) = text[from..].find(form.as_str()) {
            let start = from + pos;
            let end = start + form.len();
            from = end;
            let before_ok = text[..start].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
            if !before_ok {
                continue;
            }
            let after = &text[end..];
            if after.starts_with("'s ") || after.starts_with("’s ") {
                return true;
            }
            // A subject: the name, then a lower-case word (`Marcus is`, `Marcus believes`).
            if let Some(rest) = after.strip_prefix(' ') {
                let next = rest.split_whitespace().next().unwrap_or("");
                if next.chars().next().is_some_and(char::is_lowercase) && !matches!(next, "and" | "or" | "to") {
                    return true;
                }
            }
        }
    }
    false
}

/// True when `text` ends mid-sentence.
pub fn mid_sentence(text: &str) -> bool {
    let t = text.trim_end().trim_end_matches(['"', '\'', ')', ']', '”', '’', '*']);
    !t.ends_with(['.', '!', '?', '…'])
}

/// The flags of one line of `own`, in a room of `room`, asked `question`.
pub fn line_flags(text: &str, own: &NameForms, room: &[NameForms], question: &QuestionTerms) -> LineFlags {
    LineFlags {
        invented_speaker: invented_speaker(text, own, room),
        third_person: third_person(text, own),
        mid_sentence: mid_sentence(text),
        takes_up_question: question.taken_up_by(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> Vec<NameForms> {
        ["Marcus Rivera", "Raj Patel", "Dr. Hannah Wright"].iter().map(|n| NameForms::new(n)).collect()
    }

    #[test]
    fn invented_speakers_are_openings_as_someone_else() {
        let room = room();
        let me = &room[0];
        let bad = [
            "Mike, Product Manager, 3rd year: I think we should.",
            "Mike: I think so.",
            "Raj Patel: We need a seventh engineer.",
            "Raj Patel (Senior Engineer): We need a seventh engineer.",
            "[turn 2] Hannah Wright (Researcher): Retention matters.",
            "Mike Turner, I disagree.",
            "Raj, Senior Engineer, thinks the rotation is thin.",
            "**Mike:** Yes.",
            "I agree with the pilot.\nRaj Patel: We need a seventh engineer.",
            "Mike responds, \"That's a great idea.\"",
            "Raj Patel says: we need a seventh engineer.",
        ];
        for t in bad {
            assert!(invented_speaker(t, me, &room), "{t}");
        }
        let good = [
            "Raj, I agree with you.",
            "Hannah, you are right about retention.",
            "Marcus Rivera: I think we should.",
            "However, I think the pilot is risky.",
            "Well, Slotwise should try it.",
            "I think we should pilot it.",
            "Here is my view: yes.",
            "We meet at 10:30 today.",
            "The support desk: who covers it?",
            "Summary: we pilot it.",
            "The CEO, a seasoned engineer, wants a pilot.",
            "Our support desk, which opens at 7, needs cover.",
            "Marcus Rivera says: I think we should.",
            "I say we pilot it.",
            "I see two options.\nPros: retention.\nRaj, you disagree?",
            "",
        ];
        for t in good {
            assert!(!invented_speaker(t, me, &room), "{t}");
        }
    }

    #[test]
    fn invented_speakers_can_be_cut() {
        let room = room();
        let me = &room[0];
        let t = "I agree with the pilot.\nRaj Patel: We need a seventh engineer.\nMore.";
        assert_eq!(invented_line_at(t, me, &room), Some("I agree with the pilot.\n".len()));
        assert_eq!(invented_line_at("I agree.\nRaj, you disagree?", me, &room), None, "addressing is speech");
        assert!(invented_opening("Mike, Product Manager, 3rd year: I think so.", me, &room));
        assert!(!invented_opening("I agree.\nRaj Patel: no.", me, &room), "only the first line");
        assert_eq!(without_opening("Mike, Product Manager, 3rd year: I think so."), "I think so.");
        assert_eq!(without_opening("**Mike:** Yes, we can."), "Yes, we can.");
        assert_eq!(without_opening("Mike Turner, I disagree. The pilot is risky."), "The pilot is risky.");
        assert_eq!(without_opening("Mike Turner, I disagree"), "");
    }

    #[test]
    fn third_person_is_the_own_name_as_subject_or_an_opening_pronoun() {
        let me = NameForms::new("Marcus Rivera");
        assert!(third_person("Marcus is asking whether he should pilot it.", &me));
        assert!(third_person("As a manager, Marcus Rivera believes support needs cover.", &me));
        assert!(third_person("Marcus's team would carry the fifth day.", &me));
        assert!(third_person("He thinks the pilot is a good idea.", &me));
        assert!(!third_person("I think Raj is right.", &me));
        assert!(!third_person("Thanks, Marcus. I agree.", &NameForms::new("Raj Patel")));
        assert!(!third_person("Call me Marcus.", &me), "a name as an object is not the subject");
        assert!(!third_person("Marcusville is a town.", &me));
        assert!(third_person("Hannah believes in data.", &NameForms::new("Dr. Hannah Wright")));
    }

    #[test]
    fn sentence_ends_and_question_terms() {
        assert!(!mid_sentence("We should pilot it."));
        assert!(!mid_sentence("Who covers on-call?\" "));
        assert!(!mid_sentence("Maybe…"));
        assert!(mid_sentence("We should pilot it, but the support desk"));
        assert!(mid_sentence("Three things:"));
        assert!(mid_sentence(""));
        let q = QuestionTerms::new(
            "Should Slotwise pilot a 32-hour, four-day week at full pay, and how are support and on-call covered?",
            &room(),
        );
        assert!(q.stems().contains(&"cover".to_string()) && q.stems().contains(&"suppo".to_string()), "{q:?}");
        assert!(q.taken_up_by("Support and on-call cover the fifth day; the pilot needs a rota."));
        assert!(!q.taken_up_by("We should offer flexible payment plans to customers."));
        assert_eq!(stem("Months"), "month");
        assert_eq!(stem("class"), "class");
        assert!(!QuestionTerms::new("", &[]).taken_up_by("anything"));
    }
}
