//! How a persona's requests are written, and how replies are read back.
//!
//! The system prompt is rendered once per persona and shared by every call. The user message
//! holds the world, the topic, the bounded memory window and the instruction for this turn.

pub mod generate;

use std::fmt::Write;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::llm::tokens::{MESSAGE_OVERHEAD, REQUEST_OVERHEAD, count_tokens};
use crate::llm::{ChatMessage, ChatRequest, Purpose, ReplyContext, RequestMeta, ResponseFormat, Role};
use crate::memory::{EpisodicMemory, MemoryEvent};
use crate::persona::PersonaSpec;

/// Renders the persona's system prompt with every fact it holds (no budget).
pub fn system_prompt(p: &PersonaSpec) -> Arc<str> {
    persona_prompt(p, u64::MAX).text
}

/// A persona's system prompt, and what was left out of it to fit its token budget.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonaPrompt {
    /// The prompt.
    pub text: Arc<str>,
    /// Its tokens (as `llm::tokens` counts), when they were counted: only a prompt that might
    /// not fit its budget is (one whose bytes exceed it; a token is never shorter than a byte).
    pub tokens: Option<u64>,
    /// The budget it was written for.
    pub budget: u64,
    /// The dotted paths of the facts left out (`preferences.likes.3`), least important first.
    pub dropped: Vec<String>,
}

/// How many tokens a persona's system prompt may take: `llm.persona_budget_tokens` when set,
/// else a quarter of the model's context window (the rest holds the conversation and the reply),
/// between 256 and 8,000 tokens; 8,192 tokens of context are assumed for a model nobody knows.
pub fn prompt_budget(configured: Option<u32>, context_window: Option<u32>) -> u64 {
    match configured {
        Some(n) => n as u64,
        None => (context_window.unwrap_or(8_192) as u64 / 4).clamp(256, 8_000),
    }
}

const CLOSING: &str = "Stay in character. Speak in the first person, in 2-4 sentences, and react to what others said.";

/// Renders the persona's system prompt within `budget` tokens. Every fact of the persona is in
/// it (see [`crate::persona::facts`]) unless the budget is too small: then facts are left out from the
/// least important section up ([`crate::persona::facts::Priority`]), the last of a section first, and
/// listed in `dropped`; a heading or label left with nothing under it goes too. The first lines
/// (the role and "You are NAME, ROLE.") and the closing instruction are always kept.
pub fn persona_prompt(p: &PersonaSpec, budget: u64) -> PersonaPrompt {
    let markdown = p.prompting.as_ref().is_none_or(|pr| pr.format != "text");
    let mut head = String::with_capacity(128);
    match p.prompting.as_ref().map(|pr| pr.role.trim()).filter(|r| !r.is_empty()) {
        Some(role) => {
            let _ = writeln!(head, "{}", crate::persona::facts::one_line(role));
        }
        None => head.push_str("You are taking part in a simulated group discussion.\n"),
    }
    let _ = writeln!(head, "You are {}, {}.", p.name, p.role);
    let facts = crate::persona::facts::fact_lines(p, markdown);
    let bytes = head.len() + facts.text().len() + CLOSING.len();
    let mut dropped = Vec::new();
    let mut tokens = None;
    let mut s = String::with_capacity(bytes);
    s.push_str(&head);
    // Counting tokens is most of the work; a prompt with fewer bytes than the budget fits anyway.
    if bytes as u64 > budget {
        let fixed = count_tokens(&head) + count_tokens(CLOSING);
        let costs: Vec<u64> = (0..facts.lines.len()).map(|i| count_tokens(facts.line(i))).collect();
        let mut total = fixed + costs.iter().sum::<u64>();
        let mut kept = vec![true; facts.lines.len()];
        trim(&facts, &costs, budget, &mut total, &mut kept, &mut dropped);
        tokens = Some(total);
        for (i, _) in kept.iter().enumerate().filter(|(_, k)| **k) {
            s.push_str(facts.line(i));
            s.push('\n');
        }
    } else {
        s.push_str(facts.text());
    }
    s.push_str(CLOSING);
    PersonaPrompt { text: s.into(), tokens, budget, dropped }
}

/// Leaves facts out until `total` fits `budget`: least important section first, the last fact of
/// a section first; a heading or label left with nothing under it goes too.
fn trim(
    facts: &crate::persona::facts::Facts,
    costs: &[u64],
    budget: u64,
    total: &mut u64,
    kept: &mut [bool],
    dropped: &mut Vec<String>,
) {
    let lines = &facts.lines;
    let mut total_now = *total;
    if total_now > budget {
        let mut children = vec![0usize; lines.len()];
        for l in lines {
            if let Some(parent) = l.parent {
                children[parent] += 1;
            }
        }
        // Least important section first; within it, the last fact first.
        let mut order: Vec<usize> = (0..lines.len()).filter(|&i| facts.path(i).is_some()).collect();
        order.sort_by_key(|&i| (lines[i].priority, std::cmp::Reverse(i)));
        for i in order {
            if total_now <= budget {
                break;
            }
            kept[i] = false;
            total_now -= costs[i];
            dropped.extend(facts.path(i).map(str::to_owned));
            // Headings and labels left with nothing under them go too.
            let mut up = lines[i].parent;
            while let Some(parent) = up {
                children[parent] -= 1;
                if children[parent] > 0 || !kept[parent] {
                    break;
                }
                kept[parent] = false;
                total_now -= costs[parent];
                up = lines[parent].parent;
            }
        }
    }
    *total = total_now;
}

/// The fixed facts of the world a persona lives in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldFacts {
    /// World name.
    pub world: Arc<str>,
    /// Discussion topic.
    pub topic: Arc<str>,
}

/// Sampling settings for a persona (its own overrides already applied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// Model.
    pub model: String,
    /// Temperature.
    pub temperature: f64,
    /// top_p.
    pub top_p: Option<f64>,
    /// Longest reply.
    pub max_tokens: u32,
    /// Seed sent to providers that support one.
    pub seed: Option<u64>,
    /// Ask for a JSON action instead of plain text (`llm.json_actions`).
    #[serde(default)]
    pub json_actions: bool,
    /// Plain instructions for small models: no reply protocol, the question last
    /// (`llm.prompt_style = "plain"`).
    #[serde(default)]
    pub plain: bool,
}

/// The request asking a persona to act in `turn`.
pub fn act_request(
    system: &Arc<str>,
    persona: &PersonaSpec,
    memory: &EpisodicMemory,
    world: &WorldFacts,
    context: &str,
    turn: u32,
    sampling: &Sampling,
) -> ChatRequest {
    let name = &persona.name;
    let instruction = if sampling.json_actions {
        format!(
            "Turn {turn}: reply as {name} with one JSON object and nothing else: {{\"action\": \"speak\", \"to\": null, \"text\": \"2-4 sentences\"}}. Set \"to\" to a name to speak to one person, \"action\" to \"think\" for a private thought or \"pass\" to stay silent."
        )
    } else if sampling.plain {
        let instruction = format!(
            "The question: {}\nWhat do you think, {name}? Answer the question in 2-3 sentences, in the first person, with your own reasons.",
            world.topic
        );
        let user = plain_situation(persona, memory, world, context, &instruction);
        let tokens = count_tokens(&user);
        let mut req = request(system, user, tokens, persona, turn, Purpose::Act, sampling);
        req.meta.reply = Some(Arc::new(reply_context(persona, memory, world)));
        return req;
    } else {
        format!(
            "Turn {turn}: reply as {name} with one short contribution (2-4 sentences). To speak to one person, start with \"@Their Name:\". To keep a private thought, start with \"THINK:\". To stay silent, reply \"PASS\"."
        )
    };
    let (user, tokens) = situation_then(memory, world, context, &instruction);
    request(system, user, tokens, persona, turn, Purpose::Act, sampling)
}

/// Lines of what was said that a plain-style prompt shows: a small model follows a short
/// window better than a long one, and copies whatever it reads last.
pub const PLAIN_WINDOW: usize = 4;

/// Own and others' lines a reply is checked against (see [`ReplyContext`]).
const CHECKED_LINES: usize = 12;

/// The plain style's user message: the situation, the last [`PLAIN_WINDOW`] lines said as
/// reported speech (`Raj Patel said: "..."`, `You said: "..."`, never the `[turn 2] Name
/// (Role):` transcript lines a small model goes on writing as the next speaker), then
/// `instruction`.
fn plain_situation(
    persona: &PersonaSpec,
    memory: &EpisodicMemory,
    world: &WorldFacts,
    context: &str,
    instruction: &str,
) -> String {
    let mut u = String::with_capacity(512 + instruction.len());
    if let Some(gist) = gist(persona) {
        let _ = writeln!(u, "{gist}");
    }
    if !world.world.is_empty() {
        let _ = writeln!(u, "World: {}", world.world);
    }
    if !context.is_empty() {
        let _ = writeln!(u, "Context: {context}");
    }
    if let Some(s) = memory.window().summary {
        let _ = writeln!(u, "Summary of earlier events: {s}");
    }
    let said: Vec<&crate::memory::Utterance> = memory
        .events()
        .iter()
        .filter_map(|e| match e {
            MemoryEvent::Heard(u) | MemoryEvent::Said(u) => Some(&**u),
            _ => None,
        })
        .collect();
    let shown = &said[said.len().saturating_sub(PLAIN_WINDOW)..];
    if !shown.is_empty() {
        u.push_str("What was said last:\n");
    }
    let events = memory.events();
    for line in shown {
        let own = events.iter().any(|e| matches!(e, MemoryEvent::Said(s) if std::ptr::eq(&**s, *line)));
        let who: &str = if own { "You" } else { &line.speaker };
        let _ = writeln!(u, "{who} said: \"{}\"", line.text.trim());
    }
    u.push('\n');
    u.push_str(instruction);
    u
}

/// The persona's most distinctive facts in one line, first in a plain-style message (a small
/// model loses a long system prompt): `You: Ann Lee, Analyst; careful, blunt. You want to cut
/// the audit backlog.` `None` when the persona has no traits and no goals.
fn gist(p: &PersonaSpec) -> Option<String> {
    let traits: Vec<&str> = p.personality.traits.iter().map(|t| t.trim()).filter(|t| !t.is_empty()).take(4).collect();
    let goal = p.personality.goals.iter().map(|g| g.trim().trim_end_matches('.')).find(|g| !g.is_empty());
    if traits.is_empty() && goal.is_none() {
        return None;
    }
    let mut s = format!("You: {}, {}", p.name, p.role);
    if !traits.is_empty() {
        let _ = write!(s, "; {}", traits.join(", "));
    }
    s.push('.');
    if let Some(g) = goal {
        let mut chars = g.chars();
        let first = chars.next().map(|c| c.to_lowercase().to_string()).unwrap_or_default();
        let _ = write!(s, " You want to {first}{}.", chars.as_str());
    }
    Some(s)
}

/// What the persona's reply is checked against: its name, the names heard, its own lines and
/// the others' latest lines (the last [`CHECKED_LINES`] of each), and the topic.
fn reply_context(persona: &PersonaSpec, memory: &EpisodicMemory, world: &WorldFacts) -> ReplyContext {
    let mut room: Vec<Arc<str>> = Vec::new();
    let (mut own_lines, mut other_lines) = (Vec::new(), Vec::new());
    for e in memory.events() {
        match e {
            MemoryEvent::Said(u) => own_lines.push(u.text.clone()),
            MemoryEvent::Heard(u) => {
                other_lines.push(u.text.clone());
                if &*u.speaker_id != "moderator" && !room.contains(&u.speaker) {
                    room.push(u.speaker.clone());
                }
            }
            _ => {}
        }
    }
    let last = |v: Vec<Arc<str>>| v[v.len().saturating_sub(CHECKED_LINES)..].to_vec();
    ReplyContext {
        speaker: persona.name.as_str().into(),
        role: persona.role.as_str().into(),
        room,
        own_lines: last(own_lines),
        other_lines: last(other_lines),
        question: world.topic.clone(),
    }
}

/// The request asking a persona to summarize its memory (consolidation).
pub fn summary_request(
    system: &Arc<str>,
    persona: &PersonaSpec,
    memory: &EpisodicMemory,
    world: &WorldFacts,
    context: &str,
    turn: u32,
    sampling: &Sampling,
) -> ChatRequest {
    const ASK: &str = "Summarize what has happened so far in 2-3 sentences, from your point of view, keeping names and open questions.";
    let (user, tokens) = situation_then(memory, world, context, ASK);
    request(system, user, tokens, persona, turn, Purpose::Summary, sampling)
}

/// The user message: the situation and memory window, then `instruction`; with its tokens.
fn situation_then(memory: &EpisodicMemory, world: &WorldFacts, context: &str, instruction: &str) -> (String, u64) {
    let mut u = String::with_capacity(capacity(memory) + instruction.len());
    let tokens = render_situation(&mut u, memory, world, context) + count_tokens(instruction);
    u.push_str(instruction);
    (u, tokens)
}

fn capacity(memory: &EpisodicMemory) -> usize {
    let w = memory.window();
    512 + w.prefix.iter().chain(w.recent).map(|e| e.text_len()).sum::<usize>() + w.summary.map_or(0, str::len)
}

/// Writes the situation and memory window; returns their tokens (counted piecewise: every piece
/// ends with a newline, so the pieces' counts add up to the count of the whole).
fn render_situation(u: &mut String, memory: &EpisodicMemory, world: &WorldFacts, context: &str) -> u64 {
    let mut head_start = u.len();
    let mut tokens = 0;
    if !world.world.is_empty() {
        let _ = writeln!(u, "World: {}", world.world);
    }
    if !context.is_empty() {
        let _ = writeln!(u, "Context: {context}");
    }
    let _ = writeln!(u, "Topic: {}", world.topic);
    let w = memory.window();
    if let Some(s) = w.summary {
        let _ = writeln!(u, "Summary of earlier events: {s}");
    }
    u.push_str("Conversation so far:\n");
    tokens += count_tokens(&u[head_start..]);
    for e in w.prefix {
        tokens += e.render(u);
    }
    if w.omitted > 0 {
        head_start = u.len();
        let _ = writeln!(u, "(... {} earlier events omitted ...)", w.omitted);
        tokens += count_tokens(&u[head_start..]);
    }
    for e in w.recent {
        tokens += e.render(u);
    }
    tokens
}

#[allow(clippy::too_many_arguments)]
fn request(
    system: &Arc<str>,
    user: String,
    user_tokens: u64,
    p: &PersonaSpec,
    turn: u32,
    purpose: Purpose,
    s: &Sampling,
) -> ChatRequest {
    // The system prompt is the same for every call of a persona; counting it is cheap next to
    // the rest, but it could be cached per persona if prompts grow.
    let prompt_tokens = count_tokens(system) + user_tokens + 2 * MESSAGE_OVERHEAD + REQUEST_OVERHEAD;
    ChatRequest {
        model: s.model.clone(),
        messages: vec![ChatMessage { role: Role::System, content: system.clone() }, ChatMessage::new(Role::User, user)],
        temperature: Some(s.temperature),
        top_p: s.top_p,
        max_tokens: Some(s.max_tokens),
        seed: s.seed,
        stop: Vec::new(),
        // A persona asked for a JSON action gets JSON mode where the server has one.
        response_format: if s.json_actions && purpose == Purpose::Act {
            ResponseFormat::JsonObject
        } else {
            ResponseFormat::Text
        },
        meta: RequestMeta { persona: p.id.clone(), turn, purpose, prompt_tokens, reply: None },
    }
}

/// What a persona did with its turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Said something, to everyone or to one named persona.
    Speak {
        /// The text.
        text: String,
        /// Addressee name as written.
        to: Option<String>,
    },
    /// Kept a thought.
    Think(String),
    /// Stayed silent.
    Pass,
}

/// Reads a JSON action (`{"action": "speak"|"think"|"pass", "to": null|"Name", "text": "..."}`),
/// tolerating code fences, prose around it, single quotes and trailing commas; text that holds
/// no usable JSON is read as a plain reply.
pub fn parse_json_reply(raw: &str, own_name: &str) -> Reply {
    let Some(v) = crate::llm::json_action::parse_json_tolerant(raw) else {
        return parse_reply(raw, own_name);
    };
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::trim).filter(|s| !s.is_empty());
    let text = field("text").or_else(|| field("message")).or_else(|| field("content"));
    match field("action").map(str::to_lowercase).as_deref() {
        Some("pass") | Some("silent") | Some("none") => Reply::Pass,
        Some("think") => Reply::Think(text.unwrap_or_default().to_string()),
        _ => match text {
            Some(t) => Reply::Speak { text: t.to_string(), to: field("to").map(str::to_owned) },
            None => parse_reply(raw, own_name),
        },
    }
}

/// Reads a reply to a plain prompt (no protocol): speech, without a leading speaker label
/// ("Mike:", "Raj Patel:") that small models put before their line.
pub fn parse_plain_reply(raw: &str) -> Reply {
    let mut t = raw.trim();
    // A short first line that only introduces the speech ("Mike Turner, Product Manager,
    // responds:") goes too.
    const SPEECH: [&str; 9] =
        ["says", "responds", "replies", "answers", "writes", "adds", "asks", "continues", "explains"];
    if let Some((first, rest)) = t.split_once('\n')
        && let Some(intro) = first.trim_end().strip_suffix(':')
        && intro.split_whitespace().count() <= 8
        && intro.split_whitespace().last().is_some_and(|w| SPEECH.contains(&w.to_lowercase().as_str()))
        && !rest.trim().is_empty()
    {
        t = rest.trim();
    }
    let label = t.split_once(':').filter(|(head, rest)| {
        let words: Vec<&str> = head.split_whitespace().collect();
        (1..=3).contains(&words.len())
            && words.iter().all(|w| {
                w.chars().next().is_some_and(char::is_uppercase)
                    && w.chars().all(|c| c.is_alphabetic() || c == '.' || c == '\'' || c == '-')
            })
            && rest.starts_with(' ')
            && !rest.trim().is_empty()
    });
    Reply::Speak { text: label.map_or(t, |(_, rest)| rest.trim()).to_string(), to: None }
}

/// Reads a reply: `PASS`, `THINK: ...`, `@Name: ...`, or plain speech. Strips a leading
/// "Name:" echo of the persona's own name, which models often add.
pub fn parse_reply(raw: &str, own_name: &str) -> Reply {
    let mut t = raw.trim();
    if let Some(rest) = t.strip_prefix(own_name).and_then(|r| r.strip_prefix(':')) {
        t = rest.trim();
    }
    let upper: String = t.chars().take(8).collect::<String>().to_uppercase();
    if upper.trim_end_matches(['.', '!']) == "PASS" {
        return Reply::Pass;
    }
    if upper.starts_with("THINK:") {
        return Reply::Think(t[6..].trim().to_string());
    }
    if let Some(rest) = t.strip_prefix('@')
        && let Some((name, text)) = rest.split_once(':')
        && !name.is_empty()
        && name.len() <= 80
        && !text.trim().is_empty()
    {
        return Reply::Speak { text: text.trim().to_string(), to: Some(name.trim().to_string()) };
    }
    Reply::Speak { text: t.to_string(), to: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piecewise_token_count_is_exact() {
        use crate::memory::{MemoryEvent, Utterance};
        let p = PersonaSpec::new("ann", "Ann Lee", "Analyst", "Ten years in audits.");
        let mut m = EpisodicMemory::new(2, 3);
        for i in 0..9u64 {
            let u = Utterance::new(
                i,
                1 + i as u32 / 3,
                "b".into(),
                "Bo Ng".into(),
                "Analyst".into(),
                (i % 2 == 0).then(|| "Ann Lee".into()),
                format!("Point {i}: costs, risks & (maybe) 42% gains?").into(),
            );
            m.push(if i % 4 == 0 { MemoryEvent::Said(u.into()) } else { MemoryEvent::Heard(u.into()) });
        }
        m.push(MemoryEvent::thought(3, "Hmm... wait".into()));
        m.push(MemoryEvent::context(3, "The budget doubled.".into()));
        let facts = WorldFacts { world: "Board room".into(), topic: "Should we ship?".into() };
        let s = Sampling {
            model: "m".into(),
            temperature: 0.5,
            top_p: None,
            max_tokens: 50,
            seed: None,
            json_actions: false,
            plain: false,
        };
        let plain = Sampling { plain: true, ..s.clone() };
        let system = system_prompt(&p);
        for req in [
            act_request(&system, &p, &m, &facts, "ctx here", 3, &s),
            act_request(&system, &p, &m, &facts, "ctx here", 3, &plain),
            summary_request(&system, &p, &m, &facts, "", 3, &s),
        ] {
            assert_eq!(req.meta.prompt_tokens, crate::llm::tokens::count_request(&req));
        }
        // The plain style drops the reply protocol and ends with the question.
        let full = act_request(&system, &p, &m, &facts, "", 3, &s).messages[1].content.to_string();
        let plain = act_request(&system, &p, &m, &facts, "", 3, &plain).messages[1].content.to_string();
        assert!(full.contains("THINK:") && full.contains("@Their Name:"));
        assert!(!plain.contains("THINK:") && !plain.contains('@'), "{plain}");
        assert!(
            plain.ends_with(
                "What do you think, Ann Lee? Answer the question in 2-3 sentences, in the first person, with your own reasons."
            ),
            "{plain}"
        );
        assert!(plain.contains("The question: Should we ship?"));
        // A short window of reported speech, not transcript lines to continue.
        assert!(!plain.contains("[turn"), "{plain}");
        assert_eq!(plain.matches(" said: \"").count(), PLAIN_WINDOW, "{plain}");
        assert!(plain.contains("You said: \"Point 8: costs"), "{plain}");
        assert!(plain.contains("Bo Ng said: \"Point 7: costs"), "{plain}");
        assert!(!plain.contains("Point 4:"), "older lines are left out: {plain}");
        let mut q = p.clone();
        q.personality.traits = vec!["careful".into(), " blunt ".into()];
        q.personality.goals = vec!["Cut the audit backlog.".into()];
        let with_gist = act_request(&system, &q, &m, &facts, "", 3, &Sampling { plain: true, ..s.clone() });
        assert!(
            with_gist.messages[1]
                .content
                .starts_with("You: Ann Lee, Analyst; careful, blunt. You want to cut the audit backlog.\n"),
            "{}",
            with_gist.messages[1].content
        );
        // What the reply is checked against: the whole memory, not the window.
        let req = act_request(&system, &p, &m, &facts, "", 3, &Sampling { plain: true, ..s.clone() });
        let rc = req.meta.reply.expect("a plain act request carries its reply context");
        assert_eq!(rc.room, vec![Arc::<str>::from("Bo Ng")]);
        assert_eq!(rc.own_lines.len(), 3);
        assert!(rc.own_lines[2].starts_with("Point 8:") && rc.other_lines[5].starts_with("Point 7:"));
        assert_eq!((&*rc.speaker, &*rc.question), ("Ann Lee", "Should we ship?"));
        assert!(act_request(&system, &p, &m, &facts, "", 3, &s).meta.reply.is_none(), "only the plain style");
    }

    #[test]
    fn json_replies_are_read_tolerantly() {
        let r = parse_json_reply("```json\n{'action': 'speak', 'to': 'Bo', 'text': 'Hi there',}\n```", "A");
        assert_eq!(r, Reply::Speak { text: "Hi there".into(), to: Some("Bo".into()) });
        assert_eq!(parse_json_reply("Sure! {\"action\": \"pass\"}", "A"), Reply::Pass);
        assert_eq!(parse_json_reply("{\"action\": \"think\", \"text\": \"hm\"}", "A"), Reply::Think("hm".into()));
        // No JSON at all: read as plain text.
        assert_eq!(parse_json_reply("Just words.", "A"), Reply::Speak { text: "Just words.".into(), to: None });
    }

    #[test]
    fn plain_replies_lose_a_speaker_label_only() {
        let speak = |t: &str| Reply::Speak { text: t.into(), to: None };
        assert_eq!(parse_plain_reply("Mike: I'm glad."), speak("I'm glad."));
        assert_eq!(parse_plain_reply(" Raj Patel: We need a seventh engineer. "), speak("We need a seventh engineer."));
        assert_eq!(parse_plain_reply("Dr. O'Neil: Yes."), speak("Yes."));
        assert_eq!(parse_plain_reply("Mike Turner, Product Manager, responds:\n\"Right.\""), speak("\"Right.\""));
        assert_eq!(parse_plain_reply("My three points:\n- cost\n- risk"), speak("My three points:\n- cost\n- risk"));
        // Not labels: a sentence before the colon, a time, a lowercase word, nothing after it.
        assert_eq!(parse_plain_reply("Here is my view: yes."), speak("Here is my view: yes."));
        assert_eq!(parse_plain_reply("We meet at 10:30 today."), speak("We meet at 10:30 today."));
        assert_eq!(parse_plain_reply("Note:"), speak("Note:"));
        assert_eq!(parse_plain_reply("PASS"), speak("PASS"));
    }

    #[test]
    fn replies() {
        assert_eq!(parse_reply(" PASS ", "A"), Reply::Pass);
        assert_eq!(parse_reply("THINK: hmm", "A"), Reply::Think("hmm".into()));
        assert_eq!(
            parse_reply("@Marcus Rivera: yes", "A"),
            Reply::Speak { text: "yes".into(), to: Some("Marcus Rivera".into()) }
        );
        assert_eq!(parse_reply("A: hello", "A"), Reply::Speak { text: "hello".into(), to: None });
        assert_eq!(parse_reply("Passionate words", "A"), Reply::Speak { text: "Passionate words".into(), to: None });
    }

    /// The simulated provider reads the persona back from the prompt this module writes.
    #[test]
    fn profiles_are_read_from_the_sectioned_prompt() {
        let mut p = crate::persona::PersonaSpec::new("sc", "Dr. Sarah Chen", "Systems Architect", "Builds things.");
        p.personality.traits = vec!["analytical".into(), "direct".into()];
        p.personality.goals = vec!["Ensure systems scale".into(), "Cut costs".into()];
        p.personality.style = "Concise".into();
        for text in [false, true] {
            if text {
                p.prompting = Some(crate::persona::Prompting { format: "text".into(), ..Default::default() });
            }
            let prof = crate::llm::simulated::parse_profile(&system_prompt(&p));
            assert_eq!((prof.name.as_str(), prof.role.as_str()), ("Dr. Sarah Chen", "Systems Architect"));
            assert_eq!(prof.traits, ["analytical", "direct"], "text layout: {text}");
            assert_eq!(prof.goals, ["Ensure systems scale", "Cut costs"]);
        }
    }
}
