//! The built-in simulated provider: persona-flavoured synthetic text, offline and free.
//!
//! It reads the request the way a model would: the persona's name, role, traits, goals and style
//! from the system prompt, and the topic and recent conversation from the last user message
//! (the layout written by `prompt`). From those it composes a short contribution that
//! addresses earlier speakers by name, agrees or disagrees, and sometimes asks a question.
//! Everything it draws is seeded by the run seed and the request fingerprint, so the same
//! request in the same run always gets the same answer, whatever the timing.
//!
//! Persona checks' interviews and judge verdicts are answered by the rules of `simulated/check.rs`.
//!
//! Latency and faults come from `[llm.simulated]` and are drawn per attempt.

pub(crate) mod check;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use super::tokens::count_tokens;
use super::{
    BoxFuture, CallContext, ChatRequest, ChatResponse, ErrorKind, FinishReason, LlmError, Provider, Purpose, Role,
    Usage,
};
use crate::config::{FaultProfile, LatencyKind, LatencyModel, SimulatedConfig};
use crate::rng::{self, SplitMix64, Stream, hash_bytes, mix};

/// The simulated provider.
#[derive(Debug)]
pub struct SimulatedProvider {
    cfg: SimulatedConfig,
    // Parsed system prompts, keyed by their hash: each persona's prompt is parsed once, not per
    // call. Shared by every concurrent call, hence a concurrent map.
    profiles: DashMap<u64, Arc<Profile>>,
    // The topic-and-context vocabulary, by hash of the two lines; it changes only when an
    // intervention changes the context.
    vocabularies: DashMap<u64, Arc<Vec<String>>>,
}

#[derive(Debug, Default)]
pub(crate) struct Profile {
    pub(crate) name: String,
    pub(crate) role: String,
    pub(crate) traits: Vec<String>,
    pub(crate) goals: Vec<String>,
    lean: i32,
}

/// What the simulated provider decided for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally.
    None,
    /// 429 with Retry-After.
    RateLimited,
    /// 500.
    Server,
    /// Never answer.
    Timeout,
    /// Unreadable body.
    Malformed,
    /// Empty text.
    Empty,
}

impl SimulatedProvider {
    /// A provider with this latency and fault profile.
    pub fn new(cfg: SimulatedConfig) -> Self {
        SimulatedProvider { cfg, profiles: DashMap::new(), vocabularies: DashMap::new() }
    }

    /// The fault drawn for an attempt (pure; exposed for tests).
    pub fn draw_fault(f: &FaultProfile, rng: &mut SplitMix64) -> Fault {
        let u = rng.next_f64();
        let mut acc = 0.0;
        for (p, fault) in [
            (f.rate_limited, Fault::RateLimited),
            (f.server_error, Fault::Server),
            (f.timeout, Fault::Timeout),
            (f.malformed, Fault::Malformed),
            (f.empty, Fault::Empty),
        ] {
            acc += p;
            if u < acc {
                return fault;
            }
        }
        Fault::None
    }

    /// A latency drawn from the model (pure; exposed for tests).
    pub fn draw_latency(m: &LatencyModel, rng: &mut SplitMix64) -> Duration {
        let ms = match m.kind {
            LatencyKind::Fixed => m.ms,
            LatencyKind::Uniform => m.min_ms + (m.max_ms - m.min_ms) * rng.next_f64(),
            LatencyKind::LogNormal => {
                let (p50_ms, p99_ms) = (m.p50_ms, m.p99_ms);
                // z(0.99) = 2.3263: sigma puts p99 where asked.
                let sigma = (p99_ms.ln() - p50_ms.ln()) / 2.326_347_9;
                let (u1, u2) = (rng.next_f64().max(f64::MIN_POSITIVE), rng.next_f64());
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                (p50_ms.ln() + sigma * z).exp()
            }
        };
        crate::config::limits::secs(ms / 1000.0)
    }

    fn profile(&self, system: &str) -> Arc<Profile> {
        let key = hash_bytes(system.as_bytes());
        if let Some(p) = self.profiles.get(&key) {
            return p.clone();
        }
        let p = Arc::new(parse_profile(system));
        self.profiles.insert(key, p.clone());
        p
    }

    /// Writes the reply for a request (pure given the seed).
    pub fn compose(&self, req: &ChatRequest, seed: u64) -> String {
        let system = req.messages.iter().find(|m| m.role == Role::System).map(|m| &*m.content).unwrap_or("");
        let user = req.messages.iter().rev().find(|m| m.role == Role::User).map(|m| &*m.content).unwrap_or("");
        let profile = self.profile(system);
        let mut rng = SplitMix64::new(seed);
        match req.meta.purpose {
            Purpose::Summary => return summarize(user, &mut rng),
            Purpose::Extract => return extract_answer(&profile, user, &mut rng),
            Purpose::Interview => return check::interview_answer(system, user, &mut rng),
            Purpose::Judge => return check::judge_verdict(&req.messages),
            Purpose::Act | Purpose::Generate | Purpose::Health => {}
        }
        let conv = parse_conversation(user);
        let topic = conv.topic.unwrap_or("the question in front of us");
        let key = mix(&[hash_bytes(topic.as_bytes()), hash_bytes(conv.context.as_bytes())]);
        let vocabulary = match self.vocabularies.get(&key) {
            Some(v) => v.clone(),
            None => {
                let v = Arc::new(vocabulary(topic, conv.context));
                self.vocabularies.insert(key, v.clone());
                v
            }
        };
        let reply = compose_reply(&profile, &conv, &vocabulary, &mut rng);
        // Asked for a JSON action (in the closing instruction), answer with one, as a model
        // following the prompt would.
        let closing = user.trim_end().rsplit('\n').next().unwrap_or("");
        if closing.contains("with one JSON object") { json_action(&reply) } else { reply }
    }
}

impl Provider for SimulatedProvider {
    fn name(&self) -> &str {
        "simulated"
    }

    fn synthetic(&self) -> bool {
        true
    }

    fn chat(&self, req: Arc<ChatRequest>, ctx: CallContext) -> BoxFuture<Result<ChatResponse, LlmError>> {
        let fp = req.fingerprint();
        let mut attempt_rng = rng::stream(ctx.run_seed, Stream::SimulatedFaults { request: fp, attempt: ctx.attempt });
        let fault = Self::draw_fault(&self.cfg.faults, &mut attempt_rng);
        let latency = Self::draw_latency(&self.cfg.latency, &mut attempt_rng);
        let retry_after = crate::config::limits::secs(self.cfg.faults.retry_after_secs);
        // The text is composed before the wait so the future holds no borrow of `self`.
        let text = match fault {
            Fault::None => Some(self.compose(&req, rng::derive(ctx.run_seed, Stream::ProviderText { request: fp }))),
            _ => None,
        };
        Box::pin(async move {
            let wait = |d: Duration| async move {
                if !d.is_zero() {
                    tokio::time::sleep(d).await;
                }
            };
            match fault {
                Fault::RateLimited => {
                    wait(latency / 10).await;
                    return Err(LlmError::new(ErrorKind::RateLimited, "simulated 429 Too Many Requests")
                        .with_status(429)
                        .with_retry_after(retry_after));
                }
                Fault::Server => {
                    wait(latency / 2).await;
                    return Err(
                        LlmError::new(ErrorKind::Server, "simulated 500 Internal Server Error").with_status(500)
                    );
                }
                Fault::Timeout => std::future::pending::<()>().await,
                Fault::Malformed => {
                    wait(latency).await;
                    return Err(LlmError::new(
                        ErrorKind::Malformed,
                        "simulated malformed response: body was not the expected JSON: {\"choices\": [{\"mess",
                    )
                    .with_status(200));
                }
                Fault::Empty | Fault::None => wait(latency).await,
            }
            let mut text = text.unwrap_or_default();
            let mut finish_reason = FinishReason::Stop;
            if let Some(max) = req.max_tokens {
                finish_reason = truncate_to_tokens(&mut text, max as u64);
            }
            let usage = Usage::new(super::tokens::prompt_tokens(&req), count_tokens(&text));
            Ok(ChatResponse { text, usage, model: req.model.clone(), finish_reason })
        })
    }
}

fn json_action(reply: &str) -> String {
    let v = if reply == "PASS" {
        serde_json::json!({"action": "pass"})
    } else if let Some(t) = reply.strip_prefix("THINK: ") {
        serde_json::json!({"action": "think", "text": t})
    } else if let Some((to, text)) = reply.strip_prefix('@').and_then(|r| r.split_once(": ")) {
        serde_json::json!({"action": "speak", "to": to, "text": text})
    } else {
        serde_json::json!({"action": "speak", "to": null, "text": reply})
    };
    v.to_string()
}

fn truncate_to_tokens(text: &mut String, max: u64) -> FinishReason {
    if count_tokens(text) <= max {
        return FinishReason::Stop;
    }
    let words: Vec<&str> = text.split(' ').collect();
    let mut out = String::new();
    for w in words {
        let candidate = if out.is_empty() { w.to_string() } else { format!("{out} {w}") };
        if count_tokens(&candidate) > max {
            break;
        }
        out = candidate;
    }
    *text = out;
    FinishReason::Length
}

const TRAIT_LEAN: &[(&str, i32)] = &[
    ("skeptic", -2),
    ("critical", -2),
    ("blunt", -1),
    ("cautious", -1),
    ("analytical", -1),
    ("rigorous", -1),
    ("direct", -1),
    ("collaborative", 2),
    ("empathetic", 2),
    ("diplomatic", 2),
    ("optimistic", 2),
    ("supportive", 1),
    ("pragmatic", 0),
];

/// Reads name, role, traits and goals from a persona's system prompt: its sections
/// (`## Goals`, or `Goals:` in the text layout) and labelled lists (`- Traits:` then items);
/// the one-line forms `Traits: a, b` and `Goals: x; y` are read too.
pub(crate) fn parse_profile(system: &str) -> Profile {
    let mut p = Profile::default();
    // The section and the label the current list items belong to.
    let mut section = String::new();
    let mut label = String::new();
    for raw in system.lines() {
        let heading = raw.starts_with("## ") || (!raw.starts_with(['-', ' ']) && raw.ends_with(':'));
        let item = raw.trim_start().starts_with("- ");
        let line = raw.trim_start_matches(['-', ' ', '*', '#']).replace("**", "");
        if heading {
            section = line.trim_end_matches(':').to_lowercase();
            label.clear();
            continue;
        }
        if let Some(rest) = line.strip_prefix("You are ") {
            if let Some((name, role)) = rest.split_once(", ") {
                p.name = name.to_string();
                p.role = role.trim_end_matches('.').to_string();
            }
        } else if let Some(rest) = line.strip_prefix("Traits: ") {
            p.traits = rest.split(", ").map(str::to_string).collect();
        } else if let Some(rest) = line.strip_prefix("Goals: ") {
            p.goals = rest.split("; ").map(str::to_string).collect();
        } else if item && line.ends_with(':') && !raw.starts_with("  ") {
            label = line.trim_end_matches(':').to_lowercase();
        } else if item {
            let text = line.trim().to_string();
            if label == "traits" {
                p.traits.push(text);
            } else if section == "goals" {
                p.goals.push(text);
            }
        }
    }
    let all = p.traits.join(" ").to_lowercase();
    p.lean = TRAIT_LEAN.iter().filter(|(k, _)| all.contains(k)).map(|(_, v)| v).sum();
    p
}

struct Heard<'a> {
    speaker: &'a str,
    text: &'a str,
}

struct Conversation<'a> {
    topic: Option<&'a str>,
    context: &'a str,
    heard: Vec<Heard<'a>>,
}

fn parse_conversation(user: &str) -> Conversation<'_> {
    let mut topic = None;
    let mut context = "";
    let mut heard = Vec::new();
    for line in user.lines() {
        if let Some(t) = line.strip_prefix("Topic: ") {
            topic = Some(t);
        } else if let Some(c) = line.strip_prefix("Context: ") {
            context = c;
        } else if let Some(rest) = line.strip_prefix("[turn ") {
            let Some((_, rest)) = split_at_pair(rest, b']', b' ') else {
                continue;
            };
            let Some((who, text)) = split_at_pair(rest, b':', b' ') else {
                continue;
            };
            if who.starts_with("You") || who.starts_with("(") {
                continue;
            }
            let speaker = split_at_pair(who, b' ', b'(').map_or(who, |(s, _)| s);
            let speaker = speaker.find(" to ").map_or(speaker, |i| &speaker[..i]);
            heard.push(Heard { speaker, text });
        }
    }
    Conversation { topic, context, heard }
}

/// `s` around the first place where ASCII `a` is followed by ASCII `b`, both left out: what
/// `s.split_once("ab")` gives, without building a substring searcher for every prompt line.
fn split_at_pair(s: &str, a: u8, b: u8) -> Option<(&str, &str)> {
    let bytes = s.as_bytes();
    let i = bytes.windows(2).position(|w| w[0] == a && w[1] == b)?;
    // Both are ASCII, so both ends are character boundaries.
    Some((&s[..i], &s[i + 2..]))
}

const STOP: &[&str] = &[
    "should",
    "would",
    "could",
    "about",
    "their",
    "there",
    "these",
    "those",
    "which",
    "where",
    "while",
    "because",
    "before",
    "after",
    "think",
    "really",
    "point",
    "being",
    "other",
    "every",
    "something",
    "people",
    "whether",
    "agree",
    "respect",
    "evidence",
    "building",
    "underestimating",
    "convinced",
    "differently",
    "months",
    "years",
    "weeks",
    "today",
    "tomorrow",
    "going",
    "doing",
    "having",
    "makes",
    "matters",
    "decide",
    "decides",
    "start",
    "first",
    "second",
    "third",
    "right",
    "wrong",
    "still",
    "again",
    "never",
    "always",
    "often",
    "since",
    "until",
    "within",
    "without",
    "against",
    "between",
    "through",
    "during",
    "around",
    "already",
    "another",
    "anything",
    "everyone",
    "someone",
    "nothing",
    "maybe",
    "perhaps",
    "actually",
    "probably",
    "simply",
    "rather",
    "quite",
    "covered",
    "celebrate",
    "answer",
    "practice",
    "version",
    "further",
    "thing",
    "things",
    "words",
    "speaking",
    "priority",
    "handle",
    "measure",
    "change",
    "owns",
    "ships",
    "affected",
    "whatever",
    "person",
    "coming",
];

fn is_stop(w: &str) -> bool {
    static SET: std::sync::OnceLock<std::collections::HashSet<&'static str>> = std::sync::OnceLock::new();
    SET.get_or_init(|| STOP.iter().copied().collect()).contains(w)
}

/// Content words (5+ letters, not in the stop list), lower-cased, in order, without repeats.
fn keywords(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in text.split(|c: char| !c.is_alphanumeric() && c != '-') {
        let w = w.trim_matches('-');
        let lw = w.to_lowercase();
        if lw.chars().count() >= 5 && lw.chars().any(char::is_alphabetic) && !is_stop(&lw) && !out.contains(&lw) {
            out.push(lw);
        }
    }
    out
}

/// Keywords, with a hyphenated word joined to the short word after it ("four-day week").
fn phrases(text: &str) -> Vec<String> {
    let words: Vec<&str> =
        text.split_whitespace().map(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '-')).collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i].to_lowercase();
        let next = words.get(i + 1).map(|n| n.to_lowercase());
        let phrase = match next {
            Some(n) if w.contains('-') && n.len() <= 8 && n.chars().all(char::is_alphabetic) && !is_stop(&n) => {
                i += 1;
                Some(format!("{w} {n}"))
            }
            _ => keywords(&w).into_iter().next(),
        };
        if let Some(p) = phrase
            && !out.contains(&p)
        {
            out.push(p);
        }
        i += 1;
    }
    out
}

/// A rough noun test for context words: common noun endings or a hyphenated term.
fn nounish(w: &str) -> bool {
    const ENDINGS: &[&str] = &[
        "tion", "sion", "ment", "ness", "ity", "ance", "ence", "ship", "age", "ure", "ics", "ism", "ist", "ets",
        "cost", "costs", "work", "load", "rate", "time", "plan",
    ];
    w.contains(' ') || w.contains('-') || ENDINGS.iter().any(|e| w.ends_with(e))
}

fn first_name(full: &str) -> &str {
    let mut parts = full.split_whitespace().filter(|p| !p.ends_with('.'));
    parts.next().unwrap_or(full)
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// The topic's key phrases, then the context's noun-like ones: what replies talk about.
fn vocabulary(topic: &str, context: &str) -> Vec<String> {
    let mut domain = phrases(topic);
    for k in phrases(context).into_iter().filter(|k| nounish(k)) {
        if !domain.contains(&k) {
            domain.push(k);
        }
    }
    if domain.is_empty() {
        domain.push("this decision".into());
    }
    domain
}

fn compose_reply(p: &Profile, conv: &Conversation<'_>, domain: &[String], rng: &mut SplitMix64) -> String {
    let others: Vec<&Heard<'_>> =
        conv.heard.iter().filter(|h| h.speaker != p.name && h.speaker != "Moderator").collect();
    let last = others.last();
    // Replies stay on topic: from the last message only words of the vocabulary are picked up.
    let echoed: Vec<String> =
        last.map(|h| phrases(h.text).into_iter().filter(|k| domain.contains(k)).collect()).unwrap_or_default();
    let kw = if echoed.is_empty() { rng.pick(domain).clone() } else { rng.pick(&echoed).clone() };
    let kw2 = rng.pick(domain).clone();
    let roll = rng.next_f64();
    if !others.is_empty() && roll < 0.02 {
        return "PASS".into();
    }
    let mut parts: Vec<String> = Vec::new();
    match last {
        Some(h) => {
            let who = first_name(h.speaker);
            // lean < 0 disagrees more often, lean > 0 agrees more often.
            let agree_p = (0.5 + 0.1 * p.lean as f64).clamp(0.15, 0.85);
            let r = rng.next_f64();
            let opener = if r < agree_p * 0.8 {
                match rng.below(3) {
                    0 => format!("{who}, I agree with you on {kw}."),
                    1 => format!("That's a fair point about {kw}, {who}."),
                    _ => format!("Building on what {who} said about {kw}: yes, and we can go further."),
                }
            } else if r < 0.85 {
                match rng.below(3) {
                    0 => format!("I'm not convinced, {who}: {kw} is not the whole story."),
                    1 => format!("{who}, I see {kw} differently."),
                    _ => format!("With respect, {who}, I think we're underestimating {kw}."),
                }
            } else {
                format!("{who}, what evidence do we actually have on {kw}?")
            };
            parts.push(opener);
        }
        None => parts.push(match rng.below(3) {
            0 => format!("Let me start with {kw}."),
            1 => format!("On {kw}, here is where I stand."),
            _ => format!("I want to put {kw} on the table first."),
        }),
    }
    if !p.role.is_empty() && rng.next_f64() < 0.7 {
        let goal = if p.goals.is_empty() {
            format!("get {kw2} right")
        } else {
            lower_first(rng.pick(&p.goals).trim_end_matches('.'))
        };
        parts.push(match rng.below(3) {
            0 => format!("As a {}, my priority here is to {goal}.", p.role),
            1 => format!("From where I sit as a {}, what matters is that we {goal}.", p.role),
            _ => format!("Speaking as a {}, I'd want us to {goal}.", p.role),
        });
    }
    parts.push(trait_sentence(p, &kw2, rng));
    if rng.next_f64() < 0.35 {
        parts.push(match rng.below(4) {
            0 => format!("How would we handle {kw2} if it goes wrong?"),
            1 => format!("Who owns {kw2} once this ships?"),
            2 => format!("What would change your mind on {kw}?"),
            _ => format!("Can we agree on how we'd measure {kw2}?"),
        });
    }
    let text = parts.join(" ");
    if rng.next_f64() < 0.04 {
        return format!("THINK: I should watch how the others react to {kw} before committing.");
    }
    if let Some(h) = last
        && rng.next_f64() < 0.12
    {
        return format!("@{}: {text}", h.speaker);
    }
    text
}

fn trait_sentence(p: &Profile, kw: &str, rng: &mut SplitMix64) -> String {
    let traits = p.traits.join(" ").to_lowercase();
    let has = |k: &str| traits.contains(k);
    let bank: &[&str] = if has("analytic") || has("data") || has("rigorous") {
        &[
            "Before we commit to {kw}, let's run a two-week pilot with clear success metrics.",
            "I'd like to see numbers on {kw}: baseline, target, and what we do if we miss.",
            "The data on {kw} is thinner than it sounds; we should size the risk first.",
        ]
    } else if has("empath") || has("caring") || has("compassion") {
        &[
            "We need to think about the people who live with {kw} every day.",
            "Whatever we decide on {kw}, the people affected should hear it from us first.",
            "I keep coming back to how {kw} feels for the person on the other end.",
        ]
    } else if has("skeptic") || has("critical") || has("cautious") {
        &[
            "I've seen {kw} promised before, and the hidden costs showed up a year later.",
            "Let's name the failure modes of {kw} before we celebrate it.",
            "If {kw} goes wrong, who carries the cost? That answer decides it for me.",
        ]
    } else if has("creative") || has("curious") || has("visionary") || has("innovative") {
        &[
            "What if we treated {kw} as an experiment and designed it to be reversible?",
            "There's a bolder version of {kw} that nobody has tried yet.",
            "I'd sketch three very different takes on {kw} before picking one.",
        ]
    } else if has("pragmatic") || has("practical") || has("decisive") {
        &[
            "Let's pick the smallest version of {kw} we can ship this quarter.",
            "On {kw}, good enough now beats perfect next year.",
            "Budget and time decide {kw} in practice, so let's start there.",
        ]
    } else {
        &[
            "On {kw}, I think we should be clear about the trade-offs.",
            "{Kw} deserves a decision, not another round of discussion.",
            "I'd like us to agree on one next step for {kw} today.",
        ]
    };
    let t = *rng.pick(bank);
    let mut cap = kw.to_string();
    if let Some(f) = cap.get_mut(0..1) {
        f.make_ascii_uppercase();
    }
    t.replace("{kw}", kw).replace("{Kw}", &cap)
}

/// Answers an extraction request (`Purpose::Extract`, written by
/// `experiment::extract`): one JSON object with the fields the prompt lists as
/// `- "name": one of "a", "b"` or `- "name": free text ...`. A choice is drawn from the seed,
/// leaning with the persona (supportive traits pick an approving answer more often, sceptical
/// ones an opposing one); free text names the topic's phrase the persona mentioned most.
fn extract_answer(p: &Profile, user: &str, rng: &mut SplitMix64) -> String {
    const YES: &[&str] = &["support", "agree", "yes", "approve", "launch", "favour", "favor", "accept", "for"];
    const NO: &[&str] = &["oppose", "against", "no", "reject", "drop", "disagree", "refuse"];
    let conv = parse_conversation(user);
    // Own lines first (they carry the persona's name), then everyone's.
    let mine: Vec<&str> = conv.heard.iter().filter(|h| h.speaker == p.name).map(|h| h.text).collect();
    let pool: Vec<&str> = if mine.is_empty() { conv.heard.iter().map(|h| h.text).collect() } else { mine };
    // The topic's phrases, ranked by how often the persona's lines mention them.
    let domain = vocabulary(conv.topic.unwrap_or("the question in front of us"), "");
    let lower: Vec<String> = pool.iter().map(|t| t.to_lowercase()).collect();
    let counts: Vec<(String, usize)> =
        domain.iter().map(|k| (k.clone(), lower.iter().map(|t| t.matches(k.as_str()).count()).sum())).collect();
    let mut obj = serde_json::Map::new();
    for line in user.lines() {
        let Some((name, spec)) = line.strip_prefix("- \"").and_then(|r| r.split_once("\": ")) else {
            continue;
        };
        let value = match spec.strip_prefix("one of ") {
            Some(list) => {
                let choices: Vec<&str> = list.split('"').skip(1).step_by(2).collect();
                if choices.is_empty() {
                    continue;
                }
                let weights: Vec<f64> = choices
                    .iter()
                    .map(|c| {
                        let c = c.to_lowercase();
                        let lean = p.lean as f64 * 0.4;
                        let w = if YES.iter().any(|y| c.split(|ch: char| !ch.is_alphanumeric()).any(|t| t == *y)) {
                            1.0 + lean
                        } else if NO.iter().any(|n| c.split(|ch: char| !ch.is_alphanumeric()).any(|t| t == *n)) {
                            1.0 - lean
                        } else {
                            1.0
                        };
                        w.max(0.1)
                    })
                    .collect();
                let mut x = rng.next_f64() * weights.iter().sum::<f64>();
                let mut pick = choices.len() - 1;
                for (i, w) in weights.iter().enumerate() {
                    if x < *w {
                        pick = i;
                        break;
                    }
                    x -= w;
                }
                choices[pick].to_string()
            }
            None => {
                let top = counts.iter().map(|c| c.1).max().unwrap_or(0);
                let best: Vec<&String> = counts.iter().filter(|c| c.1 == top).map(|c| &c.0).collect();
                if best.is_empty() { "the open questions".to_string() } else { (*rng.pick(&best)).clone() }
            }
        };
        obj.insert(name.to_string(), serde_json::Value::String(value));
    }
    serde_json::Value::Object(obj).to_string()
}

fn summarize(user: &str, rng: &mut SplitMix64) -> String {
    let Conversation { topic, heard, .. } = parse_conversation(user);
    let mut speakers: Vec<&str> = heard.iter().map(|h| h.speaker).collect();
    speakers.dedup();
    let kws: Vec<String> = heard.iter().flat_map(|h| keywords(h.text)).take(12).collect();
    let focus = if kws.is_empty() { "the topic".to_string() } else { rng.pick(&kws).clone() };
    format!("So far {} people discussed {}; the main thread was {focus}.", speakers.len(), topic.unwrap_or("the topic"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ChatMessage;

    fn req(user: &str) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![
                ChatMessage::new(
                    Role::System,
                    "You are Dr. Sarah Chen, Systems Architect.\nTraits: analytical, direct\nGoals: Ensure systems scale",
                ),
                ChatMessage::new(Role::User, user),
            ],
            temperature: Some(0.7),
            top_p: None,
            max_tokens: None,
            seed: None,
            stop: vec![],
            response_format: crate::llm::ResponseFormat::Text,
            meta: Default::default(),
        }
    }

    #[test]
    fn same_request_same_text_and_it_addresses_speakers() {
        let p = SimulatedProvider::new(SimulatedConfig::default());
        let r = req(
            "Topic: Evaluate AI-powered content moderation\n[turn 1] Marcus Rivera (Product Manager): Moderation latency hurts engagement.\nTurn 2: reply",
        );
        let a = p.compose(&r, 7);
        assert_eq!(a, p.compose(&r, 7));
        let many: Vec<String> = (0..40).map(|s| p.compose(&r, s)).collect();
        assert!(many.iter().any(|t| t.contains("Marcus")), "{many:?}");
        let distinct: std::collections::HashSet<_> = many.iter().collect();
        assert!(distinct.len() > 20);
    }

    #[test]
    fn fault_rates_follow_the_profile() {
        let f = FaultProfile { rate_limited: 0.2, server_error: 0.05, timeout: 0.02, ..FaultProfile::default() };
        let mut rng = SplitMix64::new(1);
        let n = 20_000;
        let rl = (0..n).filter(|_| SimulatedProvider::draw_fault(&f, &mut rng) == Fault::RateLimited).count();
        assert!((rl as f64 / n as f64 - 0.2).abs() < 0.02, "{rl}");
    }

    #[test]
    fn lognormal_percentiles() {
        let m = LatencyModel::log_normal(100.0, 1000.0);
        let mut rng = SplitMix64::new(3);
        let mut v: Vec<f64> =
            (0..20_000).map(|_| SimulatedProvider::draw_latency(&m, &mut rng).as_secs_f64() * 1e3).collect();
        v.sort_by(f64::total_cmp);
        assert!((v[10_000] - 100.0).abs() < 10.0, "p50 {}", v[10_000]);
        assert!((v[19_800] - 1000.0).abs() < 200.0, "p99 {}", v[19_800]);
    }

    #[test]
    fn extraction_requests_get_a_json_object_with_declared_choices() {
        let p = SimulatedProvider::new(SimulatedConfig::default());
        let mut r = req(
            "Topic: Evaluate AI-powered content moderation\n[turn 1] Dr. Sarah Chen (Systems Architect): Content moderation needs a pilot.\nThe discussion is over. Answer as Dr. Sarah Chen with one JSON object and nothing else, with exactly these fields:\n- \"final_stance\": one of \"support\", \"oppose\", \"undecided\"\n- \"top_concern\": free text (a few words)\n",
        );
        r.meta.purpose = Purpose::Extract;
        let mut seen = std::collections::HashSet::new();
        for seed in 0..30 {
            let v: serde_json::Value = serde_json::from_str(&p.compose(&r, seed)).unwrap();
            let stance = v["final_stance"].as_str().unwrap().to_string();
            assert!(["support", "oppose", "undecided"].contains(&stance.as_str()), "{v}");
            assert!(!v["top_concern"].as_str().unwrap().is_empty());
            seen.insert(stance);
        }
        assert_eq!(seen.len(), 3, "every choice is drawn for some seed");
        assert_eq!(p.compose(&r, 5), p.compose(&r, 5));
    }

    #[test]
    fn max_tokens_truncates() {
        let mut s = "one two three four five six".to_string();
        assert_eq!(truncate_to_tokens(&mut s, 3), FinishReason::Length);
        assert_eq!(s, "one two three");
    }
}
