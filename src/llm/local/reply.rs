//! What the local provider does around a persona's reply so a 135M model reads like a person in
//! the room (issue 14.3): it primes the reply with a first-person opening, lowers the other
//! speakers' recent words, and checks the result before the room hears it.
//!
//! The checks are [`crate::text`]'s rules, the same ones `analysis::text_quality` counts on a
//! saved run: a reply that opens as someone else (an invented speaker), that nearly repeats the
//! persona's own or another's recent line (the analysis' near-duplicate measure), or that speaks
//! of the persona in the third person is written once more, with another seed and a stronger
//! penalty, and the better of the two is kept; a later line written as another speaker is cut;
//! an opening label that survives is cut. All of it applies only to requests that carry a
//! [`ReplyContext`] (a persona's plain-style act requests), and all of it is pure text work here:
//! the provider runs the model.

use std::collections::HashSet;

use crate::llm::{ChatResponse, LlmError, ReplyContext};
use crate::text::lines::{NameForms, QuestionTerms, invented_line_at, invented_opening, third_person, without_opening};
use crate::text::similarity::{DEFAULT_THRESHOLD, jaccard, shingles};
use crate::text::{content_terms, first_name, tokens};

/// How much the other speakers' recent words are lowered (logit units): enough to make a small
/// model pick its own words, little enough that a word the answer needs still comes.
pub const OTHERS_WORDS_BIAS: f32 = -1.0;

/// The same on the second try, with the words of the line it repeated.
pub const RETRY_BIAS: f32 = -3.0;

/// How much stronger the repeat penalty is on the second try.
pub const RETRY_PENALTY_FACTOR: f32 = 1.15;

/// Extra tokens a reply cut by `max_tokens` may take to finish its sentence.
pub const FINISH_SENTENCE_TOKENS: usize = 24;

/// First-person openings a reply is primed with, picked by seed so personas and turns vary,
/// each leading into an answer to the question's form ("Should ...?": a recommendation; "Would
/// you ...?": the persona's own choice). Openings that invite a self-portrait ("As I see it, I
/// am a support manager who...") are not among them.
const OPENINGS_SHOULD: &[&str] = &["I think we should", "In my view, we should", "Honestly, I think we should"];
const OPENINGS_WOULD: &[&str] = &["I would", "Honestly, I would", "For me, I would"];
const OPENINGS: &[&str] = &["I think", "In my view,", "Honestly, I think", "For me,"];

/// What a reply does wrong, by the rules of [`crate::text::lines`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Review {
    /// The first line opens as another speaker.
    pub invented_opening: bool,
    /// Where what the persona says ends (a byte offset), when more follows: a later line that
    /// opens with a speaker's label (its own name's too), or a blank line.
    pub invented_line: Option<usize>,
    /// The highest similarity to the persona's own earlier lines and the others' recent ones.
    pub repeats: f64,
    /// Index in `own_lines` then `other_lines` (own first) of the line it repeats most.
    pub repeated: Option<usize>,
    /// It speaks of the persona in the third person.
    pub third_person: bool,
}

impl Review {
    /// True when the reply is worth writing again: an invented speaker at the start, a near
    /// repeat, or the third person (a later invented line is simply cut).
    pub fn worth_another_try(&self) -> bool {
        self.invented_opening || self.third_person || self.repeats >= DEFAULT_THRESHOLD
    }

    /// How bad the reply is, to keep the better of two: invented and third-person openings
    /// weigh most, then a near repeat, then how similar it is.
    fn badness(&self) -> (u8, u8, u8, u64) {
        (
            self.invented_opening as u8,
            self.third_person as u8,
            (self.repeats >= DEFAULT_THRESHOLD) as u8,
            (self.repeats * 1e6) as u64,
        )
    }

    /// True when `self` is no worse than `other`.
    pub fn no_worse_than(&self, other: &Review) -> bool {
        self.badness() <= other.badness()
    }
}

/// The room as [`crate::text::lines`] reads names: the speaker and the names it has heard.
fn names(rc: &ReplyContext) -> (NameForms, Vec<NameForms>) {
    let own = NameForms::new(&rc.speaker);
    let mut room: Vec<NameForms> = rc.room.iter().map(|n| NameForms::new(n)).collect();
    room.push(own.clone());
    (own, room)
}

/// Checks `text` (the whole reply, opening included) against `rc`.
pub fn review(text: &str, rc: &ReplyContext) -> Review {
    let (own, room) = names(rc);
    let sh = shingles(text);
    let (mut repeats, mut repeated) = (0.0, None);
    for (i, line) in rc.own_lines.iter().chain(&rc.other_lines).enumerate() {
        let s = jaccard(&sh, &shingles(line));
        if s > repeats {
            (repeats, repeated) = (s, Some(i));
        }
    }
    // A later line labelled with any name, the persona's own included, is the model writing
    // the next turn of a transcript; a blank line ends what it says.
    let nobody = NameForms::new("");
    let invented_line = [invented_line_at(text, &nobody, &room), text.trim_end().find("\n\n"), bare_label_at(text)]
        .into_iter()
        .flatten()
        .filter(|&at| !text[..at].trim().is_empty())
        .min();
    Review {
        invented_opening: invented_opening(text, &own, &room),
        invented_line,
        repeats,
        repeated,
        third_person: third_person(text, &own),
    }
}

/// Where a later line that is only a label (`Marcus:`) starts: the model opening the next turn.
fn bare_label_at(text: &str) -> Option<usize> {
    let mut at = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let l = line.trim().trim_matches('*');
        if n > 0
            && let Some(head) = l.strip_suffix(':')
            && (1..=3).contains(&head.split_whitespace().count())
            && head.split_whitespace().all(|w| w.chars().next().is_some_and(char::is_uppercase))
        {
            return Some(at);
        }
        at += line.len();
    }
    None
}

/// The reply as the room hears it: cut where the persona's speech ends (see
/// [`Review::invented_line`]), without an opening label naming someone else (kept whole if
/// nothing would be left), ending at its last whole sentence when it has one.
pub fn tidy(text: &str, r: &Review) -> String {
    let mut t = text;
    if let Some(at) = r.invented_line {
        t = t[..at].trim_end();
    }
    if r.invented_opening {
        let rest = without_opening(t);
        if !rest.is_empty() {
            t = rest;
        }
    }
    // What is left ends at a sentence when it has one.
    let t = t.trim();
    crate::llm::local::whole_sentences(t, crate::text::lines::mid_sentence(t)).to_string()
}

/// A reply written with `first`, reviewed against `rc`, written once more with `again(review)`
/// when [`Review::worth_another_try`], the better of the two kept (the second on a tie: it had
/// the stronger penalty), and tidied. Usage counts both.
/// `ask` runs the model.
pub async fn checked<P, Fut>(
    rc: &ReplyContext,
    first: P,
    again: impl FnOnce(&Review) -> P,
    mut ask: impl FnMut(P) -> Fut,
) -> Result<ChatResponse, LlmError>
where
    Fut: std::future::Future<Output = Result<ChatResponse, LlmError>>,
{
    let mut best = ask(first).await?;
    let mut r = review(&best.text, rc);
    if r.worth_another_try() {
        tracing::debug!(review = ?r, "writing the reply again");
        let second = ask(again(&r)).await?;
        let second_review = review(&second.text, rc);
        let usage = best.usage + second.usage;
        if second_review.no_worse_than(&r) {
            (best, r) = (second, second_review);
        }
        best.usage = usage;
    }
    best.text = tidy(&best.text, &r);
    Ok(best)
}

/// The first-person opening of a reply to `question` with sampling seed `seed`.
pub fn opening(question: &str, seed: u64) -> &'static str {
    let first = question.split_whitespace().next().unwrap_or("").to_lowercase();
    let set = match first.as_str() {
        "should" => OPENINGS_SHOULD,
        "would" | "will" | "do" | "could" => OPENINGS_WOULD,
        _ => OPENINGS,
    };
    set[(seed % set.len() as u64) as usize]
}

/// The words to make rarer: the content words of the others' recent lines, leaving out the
/// question's own words (a reply should take those up) and the names in the room; on a second
/// try (`repeated`) also the words of the line it repeated, own or not.
pub fn words_to_lower(rc: &ReplyContext, repeated: Option<usize>) -> Vec<String> {
    let (_, room) = names(rc);
    let question = QuestionTerms::new(&rc.question, &room);
    let mut exclude: HashSet<String> = tokens(&rc.question).into_iter().collect();
    for n in rc.room.iter().chain(std::iter::once(&rc.speaker)) {
        exclude.extend(tokens(n));
        exclude.insert(first_name(n).to_lowercase());
    }
    let mut lines: Vec<&str> = rc.other_lines.iter().map(|l| &**l).collect();
    if let Some(i) = repeated
        && let Some(line) = rc.own_lines.iter().chain(&rc.other_lines).nth(i)
    {
        lines.push(line);
    }
    let mut seen = HashSet::new();
    let mut words = Vec::new();
    for line in lines {
        for w in content_terms(line, &exclude) {
            if w.len() >= 3 && question.used_in(&w) == 0 && seen.insert(w.clone()) {
                words.push(w);
            }
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn room() -> ReplyContext {
        ReplyContext {
            speaker: "Marcus Rivera".into(),
            role: "Product Manager".into(),
            room: vec!["Raj Patel".into(), "Dr. Hannah Wright".into()],
            own_lines: vec!["I think the pilot can work if we stagger the fifth day across the support team.".into()],
            other_lines: vec![
                Arc::from("Should Slotwise pilot a 32-hour, four-day week, and how are support and on-call covered?"),
                Arc::from(
                    "The payments rotation has six engineers; a seventh hire would keep the availability target.",
                ),
            ],
            question: "Should Slotwise pilot a 32-hour, four-day week, and how are support and on-call covered?".into(),
        }
    }

    #[test]
    fn replies_seen_in_runs_are_flagged() {
        let rc = room();
        // The first example: an invented speaker with a title.
        let r = review("Mike, Product Manager, 3rd year: I think flexible payment plans help.", &rc);
        assert!(r.invented_opening && r.worth_another_try());
        // The second: the persona in the third person.
        let r = review("Marcus is asking whether he should pilot the program.", &rc);
        assert!(r.third_person && !r.invented_opening && r.worth_another_try());
        // Turn 2 repeating turn 1 almost word for word.
        let r = review("I think the pilot can work if we stagger the fifth day across the support team!", &rc);
        assert!(r.repeats > 0.9 && r.repeated == Some(0) && r.worth_another_try(), "{r:?}");
        // Paraphrasing the moderator's question back.
        let r = review("Should Slotwise pilot a 32-hour, four-day week, and how are support and on-call covered?", &rc);
        assert_eq!(r.repeated, Some(1));
        assert!(r.worth_another_try());
        // A fine reply, addressing someone in the room, with the model going on as Raj.
        let text = "Raj, I agree the rotation is thin. We need cover on Fridays.\nRaj Patel: Exactly, a seventh hire.";
        let r = review(text, &rc);
        assert!(!r.worth_another_try(), "{r:?}");
        assert_eq!(tidy(text, &r), "Raj, I agree the rotation is thin. We need cover on Fridays.");
        let text = "I think we should pilot it. It needs a rota.\nMarcus:";
        assert_eq!(tidy(text, &review(text, &rc)), "I think we should pilot it. It needs a rota.", "a bare label");
        let text = "I think we should pilot it. The rota covers\n\nMore";
        assert_eq!(tidy(text, &review(text, &rc)), "I think we should pilot it.", "cut, then whole sentences");
        let text = "I think we should pilot it.\nMarcus: And then?\n\n## Notes";
        assert_eq!(tidy(text, &review(text, &rc)), "I think we should pilot it.", "its own label, later");
        let text = "I think we should pilot it.\n\n## What did you ask?\nYou asked me.";
        assert_eq!(tidy(text, &review(text, &rc)), "I think we should pilot it.");
    }

    #[test]
    fn the_better_of_two_tries_is_kept_and_tidied() {
        let rc = room();
        let first = review("Mike: I think we should try it.", &rc);
        let second = review("I think we should try it, with Raj covering on-call.", &rc);
        assert!(second.no_worse_than(&first) && !first.no_worse_than(&second));
        assert_eq!(tidy("Mike: I think we should try it.", &first), "I think we should try it.");
        // An opening that cannot be cut without leaving nothing stays.
        let r = review("Mike Turner, we should", &rc);
        assert!(r.invented_opening);
        assert_eq!(tidy("Mike Turner, we should", &r), "Mike Turner, we should");
        let a = review("I agree with the plan for the support desk.", &rc);
        let b = review("I think the pilot can work if we stagger the fifth day across the support team.", &rc);
        assert!(a.no_worse_than(&b) && !b.no_worse_than(&a), "a near repeat loses");
    }

    fn answer(text: &str) -> Result<ChatResponse, LlmError> {
        Ok(ChatResponse {
            text: text.into(),
            usage: crate::llm::Usage::new(100, 20),
            model: "m".into(),
            finish_reason: crate::llm::FinishReason::Stop,
        })
    }

    /// Runs [`checked`] with canned model answers; returns the reply and the settings asked with.
    fn run(answers: &[&str]) -> (ChatResponse, Vec<u32>) {
        let rc = room();
        let mut asked = Vec::new();
        let mut canned = answers.iter();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let r = rt
            .block_on(checked(
                &rc,
                1u32,
                |r: &Review| if r.repeated.is_some() { 3 } else { 2 },
                |p| {
                    asked.push(p);
                    let a = answer(canned.next().expect("asked more often than expected"));
                    async move { a }
                },
            ))
            .unwrap();
        (r, asked)
    }

    #[test]
    fn a_failed_reply_is_written_once_more_and_the_better_kept() {
        // Fine the first time: asked once, tidied (the next speaker's line cut).
        let (r, asked) = run(&["I agree the rotation is thin.\nRaj Patel: A seventh hire."]);
        assert_eq!((asked, r.text.as_str(), r.usage.completion_tokens), (vec![1], "I agree the rotation is thin.", 20));
        // An invented speaker, then a fine reply: the second is kept, usage counts both.
        let (r, asked) = run(&["Mike, Product Manager: we should.", "I think Raj is right about cover."]);
        assert_eq!(asked, [1, 2]);
        assert_eq!(
            (r.text.as_str(), r.usage.completion_tokens, r.usage.prompt_tokens),
            ("I think Raj is right about cover.", 40, 200)
        );
        // A near repeat asks again with the repeated line known; both repeat, the less similar wins.
        let own = "I think the pilot can work if we stagger the fifth day across the support team.";
        let (r, asked) = run(&[own, "I think the pilot can work if we stagger the fifth day for the support desk."]);
        assert_eq!(asked, [1, 3]);
        assert!(r.text.ends_with("for the support desk."), "{}", r.text);
        // Worse the second time (an invented speaker weighs more than a repeat): the first stays.
        let (r, _) = run(&[own, "Mike: I think so."]);
        assert_eq!(r.text, own);
    }

    #[test]
    fn the_others_words_are_lowered_but_not_the_questions() {
        let rc = room();
        let w = words_to_lower(&rc, None);
        for expected in ["payments", "rotation", "engineers", "seventh", "availability"] {
            assert!(w.iter().any(|x| x == expected), "{expected} in {w:?}");
        }
        for kept in ["pilot", "support", "covered", "slotwise", "raj", "patel", "marcus"] {
            assert!(!w.iter().any(|x| x == kept), "{kept} lowered: {w:?}");
        }
        assert!(!w.iter().any(|x| x == "stagger"), "own words only on a retry");
        assert!(words_to_lower(&rc, Some(0)).iter().any(|x| x == "stagger"));
        assert_eq!(opening("Should we pilot it?", 0), "I think we should");
        assert_eq!(opening("Would you pay $29 a month?", 1), "Honestly, I would");
        assert_eq!(opening("How do we cover Fridays?", 3), "For me,");
        for q in ["Should we?", "Would you?", "What now?"] {
            assert!((0..6).all(|s| opening(q, s).split_whitespace().any(|w| matches!(w, "I" | "we" | "me," | "my"))));
        }
    }
}
