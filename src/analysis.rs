//! Conversation analysis: what a run's transcript and metrics say about who spoke, to whom, how,
//! and at what cost. [`analyze_conversation`] returns a typed [`ConversationAnalysis`], saved as
//! `analysis.json`; [`save_analysis`] also draws the SVG charts of [`charts`].
//!
//! - [`text`]: words, terms, questions, name matching (the crate's `text` module, shared with
//!   the local model's reply check).
//! - [`sentiment`]: VADER's rules over a compact lexicon (why not the crate: see there).
//! - [`keywords`]: TF-IDF keywords per persona and overall.
//! - [`markers`]: agreement and disagreement phrases.
//! - [`repetition`]: near-duplicate messages (shingled Jaccard).
//! - [`text_quality`]: how readable persona lines are (invented speakers, third person,
//!   repeats, mid-sentence endings, the question taken up): the local model's text check.
//! - [`stats`]: means, confidence intervals, Welch / Mann-Whitney / Cohen's d, Gini.
//! - [`charts`]: SVG charts with plotters.
//! - [`in_character`]: the optional `in_character` section (a judge model's score of each
//!   persona's messages against its facts, filled by `validation::in_character`) and the
//!   judge's verdict type.
//!
//! Moderator messages (the opening, broadcasts) count in the overview but not in any persona
//! figure, the participation balance, turn-taking or keywords.
//!
//! Every step is linear in personas and messages, so a million-persona run is analysed too. Above
//! [`PERSONA_FIGURES_LIMIT`] personas, `personas` lists those who spoke (the overview still counts
//! everyone); turn-taking covers the [`TURN_TAKING_PERSONAS`] most active personas; at most
//! [`DUPLICATE_PAIRS_KEPT`] near-duplicate pairs are listed (all are counted).

pub mod charts;
pub mod in_character;
pub mod keywords;
pub mod markers;
pub mod repetition;
pub mod sentiment;
pub mod stats;
pub use crate::text;
pub mod text_quality;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;
use crate::record::results::SimulationResults;
use crate::record::transcript::TranscriptEntry;
pub use keywords::Keyword;
pub use markers::Stance;
pub use repetition::DuplicatePair;

/// The speaker id of the world's own messages (the opening, broadcasts).
pub const MODERATOR_ID: &str = "moderator";

/// Keywords kept per persona and overall.
pub const KEYWORDS_KEPT: usize = 10;

/// Personas above which `personas` lists only those who spoke.
pub const PERSONA_FIGURES_LIMIT: usize = 10_000;

/// The most active personas the turn-taking matrix covers.
pub const TURN_TAKING_PERSONAS: usize = 40;

/// Near-duplicate pairs listed (the first ones in transcript order); all are counted.
pub const DUPLICATE_PAIRS_KEPT: usize = 1_000;

/// Everything [`analyze_conversation`] finds in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationAnalysis {
    /// The run analysed.
    pub run_id: String,
    /// Its scenario.
    pub scenario: String,
    /// Its variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// True when the text is synthetic (simulated provider).
    pub synthetic: bool,
    /// Headline counts.
    pub overview: Overview,
    /// Figures per persona, in the order they were listed (then by first message).
    pub personas: Vec<PersonaFigures>,
    /// How evenly personas took part.
    pub participation: Participation,
    /// Who speaks after whom.
    pub turn_taking: TurnTaking,
    /// Who addresses or names whom.
    pub mentions: MentionGraph,
    /// Distinctive terms of the whole conversation.
    pub keywords: Vec<Keyword>,
    /// Sentiment per message, per turn and overall.
    pub sentiment: SentimentFigures,
    /// Agreement and disagreement markers.
    pub agreement: AgreementFigures,
    /// Near-duplicate messages.
    pub repetition: Repetition,
    /// Tokens per turn (from the transcript's per-message figures).
    pub tokens_per_turn: Vec<TurnTokens>,
    /// Latency figures.
    pub latency: LatencyFigures,
    /// How well each persona's messages match its own facts, by a judge model: present only
    /// when asked for (`validation.in_character`, `troupe analyze --in-character`), since it
    /// costs one call per persona.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_character: Option<in_character::InCharacter>,
}

/// Headline counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    /// All transcript messages (moderator included).
    pub messages: u64,
    /// Messages by personas.
    pub persona_messages: u64,
    /// Messages by the moderator (opening, broadcasts).
    pub moderator_messages: u64,
    /// Words in all messages.
    pub words: u64,
    /// Words in persona messages.
    pub persona_words: u64,
    /// Mean words per persona message.
    pub words_per_message: f64,
    /// Questions asked by personas.
    pub questions: u64,
    /// Highest turn reached.
    pub turns: u32,
    /// Wall time of the run, seconds.
    pub duration_s: f64,
    /// Personas listed or heard.
    pub personas: usize,
    /// Personas who said something.
    pub speakers: usize,
}

/// A value for one turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnValue {
    /// Turn.
    pub turn: u32,
    /// Value.
    pub value: f64,
}

/// Latency of one persona's messages (from the transcript).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PersonaLatency {
    /// Messages with a latency.
    pub samples: u64,
    /// Mean, milliseconds.
    pub mean_ms: f64,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
    /// The metrics actor's mean response time (retries included), when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_mean_ms: Option<f64>,
}

/// Figures for one persona (moderator messages excluded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonaFigures {
    /// Persona id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Messages said.
    pub messages: u64,
    /// Words said.
    pub words: u64,
    /// Mean words per message.
    pub average_words: f64,
    /// Questions asked.
    pub questions: u64,
    /// Share of persona messages, 0..1.
    pub share: f64,
    /// Share of persona words, 0..1.
    pub word_share: f64,
    /// First turn spoken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_turn: Option<u32>,
    /// Last turn spoken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_turn: Option<u32>,
    /// Mean compound sentiment of its messages.
    pub sentiment_mean: f64,
    /// Mean compound sentiment per turn it spoke in.
    pub sentiment_by_turn: Vec<TurnValue>,
    /// Messages with an agreement marker.
    pub agreements: u64,
    /// Messages with a disagreement marker.
    pub disagreements: u64,
    /// Messages addressing or naming another persona.
    pub mentions_made: u64,
    /// Messages of others addressing or naming this persona.
    pub mentions_received: u64,
    /// Distinctive terms (TF-IDF across personas).
    pub keywords: Vec<Keyword>,
    /// Latency of its calls.
    pub latency: PersonaLatency,
    /// Tokens sent for its messages.
    pub prompt_tokens: u64,
    /// Tokens received for its messages.
    pub completion_tokens: u64,
}

/// How evenly personas took part.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Participation {
    /// Gini coefficient of messages per persona: 0 perfectly even, towards 1 one voice.
    pub gini_messages: f64,
    /// Gini coefficient of words per persona.
    pub gini_words: f64,
    /// Id of the persona with the most messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub most_active: Option<String>,
    /// Id of the persona with the fewest messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub least_active: Option<String>,
}

/// Who speaks right after whom: `matrix[i][j]` counts persona messages by `personas[j]` that
/// directly follow one by `personas[i]` (moderator messages skipped). With more than
/// [`TURN_TAKING_PERSONAS`] personas, rows and columns are the most active ones (in persona order)
/// and `others` counts the transitions from or to anyone else.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnTaking {
    /// Persona ids, the order of rows and columns.
    pub personas: Vec<String>,
    /// Their display names, same order.
    pub names: Vec<String>,
    /// Counts: row = previous speaker, column = next speaker.
    pub matrix: Vec<Vec<u64>>,
    /// All transitions counted.
    pub transitions: u64,
    /// Transitions from or to a persona outside the matrix.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub others: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl TurnTaking {
    /// How often `next` spoke right after `prev` (ids); 0 when either is unknown.
    pub fn count(&self, prev: &str, next: &str) -> u64 {
        let i = self.personas.iter().position(|p| p == prev);
        let j = self.personas.iter().position(|p| p == next);
        match (i, j) {
            (Some(i), Some(j)) => self.matrix[i][j],
            _ => 0,
        }
    }
}

/// One directed edge of the mention graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MentionEdge {
    /// Speaker id.
    pub from: String,
    /// Id of the persona addressed or named.
    pub to: String,
    /// Messages addressed to them (the `to` field).
    pub addressed: u64,
    /// Messages naming them in the text (first or full name).
    pub named: u64,
    /// Messages doing either.
    pub total: u64,
}

/// Who addresses or names whom.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MentionGraph {
    /// Edges with at least one message, sorted by `from`, then `to`.
    pub edges: Vec<MentionEdge>,
}

impl MentionGraph {
    /// The edge from one id to another, if any.
    pub fn edge(&self, from: &str, to: &str) -> Option<&MentionEdge> {
        self.edges.iter().find(|e| e.from == from && e.to == to)
    }
}

/// The sentiment of one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageSentiment {
    /// Position in the transcript.
    pub seq: u64,
    /// Turn.
    pub turn: u32,
    /// Speaker id.
    pub speaker_id: String,
    /// Scores.
    #[serde(flatten)]
    pub score: sentiment::Sentiment,
}

/// Sentiment of the conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SentimentFigures {
    /// Mean compound score of persona messages.
    pub mean: f64,
    /// Mean compound score of persona messages per turn.
    pub by_turn: Vec<TurnValue>,
    /// Every message (moderator included, marked by its speaker id).
    pub messages: Vec<MessageSentiment>,
}

/// One marker found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkerHit {
    /// Position in the transcript.
    pub seq: u64,
    /// Speaker id.
    pub speaker_id: String,
    /// Side.
    pub stance: Stance,
    /// The phrase.
    pub marker: String,
}

/// Agreement and disagreement across persona messages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgreementFigures {
    /// Messages with an agreement marker.
    pub agreements: u64,
    /// Messages with a disagreement marker.
    pub disagreements: u64,
    /// agreements / (agreements + disagreements); none when neither occurs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement_ratio: Option<f64>,
    /// Every marker found.
    pub markers: Vec<MarkerHit>,
}

/// Near-duplicate persona messages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Repetition {
    /// Jaccard similarity at or above which a pair counts.
    pub threshold: f64,
    /// Pairs found (the first [`DUPLICATE_PAIRS_KEPT`]).
    pub pairs: Vec<DuplicatePair>,
    /// All pairs found, listed or not.
    #[serde(default)]
    pub pairs_found: u64,
    /// Messages that nearly repeat an earlier one.
    pub repeated_messages: u64,
    /// repeated_messages / persona messages.
    pub repetition_rate: f64,
}

/// Tokens of one turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnTokens {
    /// Turn.
    pub turn: u32,
    /// Messages in it.
    pub messages: u64,
    /// Tokens sent.
    pub prompt_tokens: u64,
    /// Tokens received.
    pub completion_tokens: u64,
}

/// Latency of the run's calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyFigures {
    /// Messages with a latency.
    pub samples: u64,
    /// Mean over messages, milliseconds.
    pub mean_ms: f64,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile, milliseconds.
    pub p90_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
    /// Every call attempt, bucketed (upper bound ms, count), from the metrics.
    pub buckets: Vec<(f64, u64)>,
}

/// Errors reading a run or writing its analysis.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// The run folder or its `results.json` cannot be read.
    #[error("cannot read the run at {}: {message}; give a run folder holding results.json (outputs/conversations/<run-id>/)", path.display())]
    Read {
        /// The path given.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A file could not be written.
    #[error("could not write {}: {source}; check that the run folder is writable", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A chart could not be drawn.
    #[error("could not draw the {chart} chart: {message}")]
    Chart {
        /// Which chart.
        chart: String,
        /// What went wrong.
        message: String,
    },
}

/// Files written by [`save_analysis`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnalysisFiles {
    /// `analysis.json`.
    pub analysis: PathBuf,
    /// The SVG charts (`charts/*.svg`), when drawn.
    pub charts: Vec<PathBuf>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn is_moderator(e: &TranscriptEntry) -> bool {
    e.speaker_id == MODERATOR_ID
}

/// Analyses a run: see [`ConversationAnalysis`]. Pure: reads only `results` (its transcript,
/// agents and full metrics).
pub fn analyze_conversation(results: &SimulationResults) -> ConversationAnalysis {
    let t = &results.transcript;
    let roster = Roster::of(results);
    let lookup = Lookup::new(&roster);
    let mut tally = Tally::new(roster.len(), t.len());
    for e in t {
        tally.add(e, &lookup);
    }
    let totals = Totals::of(&tally.personas);
    let distinctive = persona_keywords(&mut tally.personas);
    let personas = persona_figures(results, &roster, &tally.personas, distinctive, &totals);
    let participation = participation(&roster, &tally.personas, &totals);
    let turn_taking = turn_taking(&roster, &tally.personas, &tally.pairs_taken, tally.transitions);
    let repetition = repetition_figures(t, std::mem::take(&mut tally.shingles), &totals);
    ConversationAnalysis {
        run_id: results.run_id.clone(),
        scenario: results.scenario.clone(),
        variant: results.variant.clone(),
        synthetic: results.synthetic,
        overview: overview(results, &roster, &tally, &totals),
        personas,
        participation,
        turn_taking,
        mentions: mention_graph(&roster, tally.mentions),
        keywords: keywords::overall(&tally.message_terms, KEYWORDS_KEPT),
        sentiment: sentiment_figures(tally.sentiments, tally.turn_sentiment, &totals),
        agreement: AgreementFigures {
            agreements: tally.agreements,
            disagreements: tally.disagreements,
            agreement_ratio: (tally.agreements + tally.disagreements > 0)
                .then(|| tally.agreements as f64 / (tally.agreements + tally.disagreements) as f64),
            markers: tally.marker_hits,
        },
        repetition,
        tokens_per_turn: tally.turn_tokens.into_values().collect(),
        latency: latency_figures(tally.latencies_ms, results),
        in_character: None,
    }
}

/// `part / whole`, or 0 when `whole` is 0.
fn ratio(part: u64, whole: u64) -> f64 {
    if whole > 0 { part as f64 / whole as f64 } else { 0.0 }
}

/// The personas of a run, by index: those listed, then anyone else who spoke (joined by an
/// intervention), in the order of their first message.
struct Roster {
    ids: Vec<String>,
    names: Vec<String>,
    roles: Vec<String>,
}

impl Roster {
    fn of(results: &SimulationResults) -> Self {
        let mut ids: Vec<String> = results.agents.iter().map(|a| a.id.clone()).collect();
        let mut names: Vec<String> = results.agents.iter().map(|a| a.name.clone()).collect();
        let mut roles: Vec<String> = results.agents.iter().map(|a| a.role.clone()).collect();
        let mut seen: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut joined = Vec::new();
        for e in results.transcript.iter().filter(|e| !is_moderator(e)) {
            if seen.insert(e.speaker_id.as_str()) {
                joined.push(e);
            }
        }
        for e in joined {
            ids.push(e.speaker_id.clone());
            names.push(e.speaker.clone());
            roles.push(e.role.clone());
        }
        Roster { ids, names, roles }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// What the pass over the transcript looks speakers and names up in.
struct Lookup<'a> {
    /// Persona id -> its index in the roster.
    index: HashMap<&'a str, usize>,
    finder: NameFinder<'a>,
    /// Words of persona names, which are not keywords.
    name_tokens: HashSet<String>,
}

impl<'a> Lookup<'a> {
    fn new(roster: &'a Roster) -> Self {
        let index = roster.ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        let mut name_tokens: HashSet<String> = HashSet::new();
        for nm in &roster.names {
            for tok in text::tokens(nm) {
                name_tokens.insert(tok);
            }
        }
        Lookup { index, finder: NameFinder::new(&roster.ids, &roster.names), name_tokens }
    }
}

/// What the pass counts for one persona (moderator messages excluded).
#[derive(Default)]
struct PersonaTally {
    messages: u64,
    words: u64,
    questions: u64,
    first_turn: Option<u32>,
    last_turn: Option<u32>,
    sentiment_sum: f64,
    /// Turn -> (sum of compound scores, messages).
    sentiment_by_turn: BTreeMap<u32, (f64, u64)>,
    agreements: u64,
    disagreements: u64,
    mentions_made: u64,
    mentions_received: u64,
    latencies_ms: Vec<f64>,
    prompt_tokens: u64,
    completion_tokens: u64,
    /// Content terms of its messages, for its keywords.
    terms: Vec<String>,
}

impl PersonaTally {
    /// Counts one of its messages, of `words` words and this compound sentiment.
    fn add_message(&mut self, e: &TranscriptEntry, words: u64, compound: f64) {
        self.messages += 1;
        self.words += words;
        self.questions += text::question_count(&e.text) as u64;
        self.first_turn = Some(self.first_turn.map_or(e.turn, |f| f.min(e.turn)));
        self.last_turn = Some(self.last_turn.map_or(e.turn, |l| l.max(e.turn)));
        self.sentiment_sum += compound;
        let b = self.sentiment_by_turn.entry(e.turn).or_default();
        b.0 += compound;
        b.1 += 1;
        if let Some(l) = e.latency_ms {
            self.latencies_ms.push(l);
        }
        self.prompt_tokens += e.prompt_tokens.unwrap_or(0);
        self.completion_tokens += e.completion_tokens.unwrap_or(0);
    }

    /// Its latency figures; `response_mean_ms` comes from the metrics actor.
    fn latency(&self, response_mean_ms: Option<f64>) -> PersonaLatency {
        let mut l = self.latencies_ms.clone();
        l.sort_by(f64::total_cmp);
        PersonaLatency {
            samples: l.len() as u64,
            mean_ms: stats::mean(&l),
            p50_ms: percentile(&l, 0.5),
            max_ms: l.last().copied().unwrap_or(0.0),
            response_mean_ms,
        }
    }
}

/// Everything one pass over the transcript counts: per persona (by roster index) and for the
/// whole conversation.
struct Tally {
    personas: Vec<PersonaTally>,
    /// Content terms of each persona message, for the overall keywords.
    message_terms: Vec<Vec<String>>,
    /// Each persona message's shingles (every message but the moderator's, in order), for the
    /// near duplicates: made while the message is split into words for its terms.
    shingles: Vec<Vec<u64>>,
    /// (speaker, persona addressed or named) -> (addressed, named, either).
    mentions: BTreeMap<(usize, usize), (u64, u64, u64)>,
    /// (previous speaker, next speaker) -> times.
    pairs_taken: HashMap<(usize, usize), u64>,
    transitions: u64,
    previous: Option<usize>,
    /// Every message's sentiment, moderator included.
    sentiments: Vec<MessageSentiment>,
    /// Turn -> (sum of persona compound scores, persona messages).
    turn_sentiment: BTreeMap<u32, (f64, u64)>,
    turn_tokens: BTreeMap<u32, TurnTokens>,
    marker_hits: Vec<MarkerHit>,
    agreements: u64,
    disagreements: u64,
    /// Every message's latency, moderator included.
    latencies_ms: Vec<f64>,
    /// Words of every message, moderator included.
    words: u64,
    /// The mentions of the message being counted (reused).
    hits: Vec<(usize, bool, bool)>,
}

impl Tally {
    fn new(personas: usize, messages: usize) -> Self {
        Tally {
            personas: std::iter::repeat_with(PersonaTally::default).take(personas).collect(),
            message_terms: Vec::new(),
            shingles: Vec::new(),
            mentions: BTreeMap::new(),
            pairs_taken: HashMap::new(),
            transitions: 0,
            previous: None,
            sentiments: Vec::with_capacity(messages),
            turn_sentiment: BTreeMap::new(),
            turn_tokens: BTreeMap::new(),
            marker_hits: Vec::new(),
            agreements: 0,
            disagreements: 0,
            latencies_ms: Vec::new(),
            words: 0,
            hits: Vec::new(),
        }
    }

    /// Counts one transcript message.
    fn add(&mut self, e: &TranscriptEntry, lookup: &Lookup<'_>) {
        let w = text::word_count(&e.text) as u64;
        self.words += w;
        let s = sentiment::score(&e.text);
        self.sentiments.push(MessageSentiment { seq: e.seq, turn: e.turn, speaker_id: e.speaker_id.clone(), score: s });
        let tt = self.turn_tokens.entry(e.turn).or_insert(TurnTokens {
            turn: e.turn,
            messages: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
        });
        tt.messages += 1;
        tt.prompt_tokens += e.prompt_tokens.unwrap_or(0);
        tt.completion_tokens += e.completion_tokens.unwrap_or(0);
        if let Some(l) = e.latency_ms {
            self.latencies_ms.push(l);
        }
        if is_moderator(e) {
            return;
        }
        // One split into words serves the near duplicates and the keywords.
        let words = text::tokens(&e.text);
        self.shingles.push(repetition::shingles_of(&words));
        let Some(&i) = lookup.index.get(e.speaker_id.as_str()) else { return };
        self.personas[i].add_message(e, w, s.compound);
        let ts = self.turn_sentiment.entry(e.turn).or_default();
        ts.0 += s.compound;
        ts.1 += 1;
        let mt = text::content_terms_of(words, &lookup.name_tokens);
        self.personas[i].terms.extend(mt.iter().cloned());
        self.message_terms.push(mt);
        self.add_markers(i, e);
        self.add_mentions(i, e, &lookup.finder);
        self.add_turn(i);
    }

    /// Agreement and disagreement markers of persona `i`'s message.
    fn add_markers(&mut self, i: usize, e: &TranscriptEntry) {
        let (mut a, mut d) = (false, false);
        for (stance, m) in markers::find(&e.text) {
            match stance {
                Stance::Agree => a = true,
                Stance::Disagree => d = true,
            }
            self.marker_hits.push(MarkerHit {
                seq: e.seq,
                speaker_id: e.speaker_id.clone(),
                stance,
                marker: m.to_string(),
            });
        }
        self.personas[i].agreements += a as u64;
        self.personas[i].disagreements += d as u64;
        self.agreements += a as u64;
        self.disagreements += d as u64;
    }

    /// Whom persona `i`'s message addresses (the `to` field, a name or an id) or names.
    fn add_mentions(&mut self, i: usize, e: &TranscriptEntry, finder: &NameFinder<'_>) {
        finder.mentions(e.to.as_deref(), &e.text, &mut self.hits);
        let mut any = false;
        for &(j, addressed, named) in self.hits.iter().filter(|h| h.0 != i) {
            any = true;
            self.personas[j].mentions_received += 1;
            let edge = self.mentions.entry((i, j)).or_default();
            edge.0 += addressed as u64;
            edge.1 += named as u64;
            edge.2 += 1;
        }
        self.personas[i].mentions_made += any as u64;
    }

    /// Turn-taking: persona `i` spoke after the previous persona message's speaker.
    fn add_turn(&mut self, i: usize) {
        if let Some(p) = self.previous {
            *self.pairs_taken.entry((p, i)).or_default() += 1;
            self.transitions += 1;
        }
        self.previous = Some(i);
    }
}

/// Messages and words of all personas together.
struct Totals {
    messages: u64,
    words: u64,
}

impl Totals {
    fn of(personas: &[PersonaTally]) -> Self {
        Totals { messages: personas.iter().map(|p| p.messages).sum(), words: personas.iter().map(|p| p.words).sum() }
    }
}

fn overview(results: &SimulationResults, roster: &Roster, tally: &Tally, totals: &Totals) -> Overview {
    let t = &results.transcript;
    Overview {
        messages: t.len() as u64,
        persona_messages: totals.messages,
        moderator_messages: t.len() as u64 - totals.messages,
        words: tally.words,
        persona_words: totals.words,
        words_per_message: ratio(totals.words, totals.messages),
        questions: tally.personas.iter().map(|p| p.questions).sum(),
        turns: t.iter().map(|e| e.turn).max().unwrap_or(0).max(results.completed_turns),
        duration_s: results.metrics.duration,
        personas: roster.len(),
        speakers: tally.personas.iter().filter(|p| p.messages > 0).count(),
    }
}

/// Each persona's distinctive terms (TF-IDF across personas); their terms are used up.
fn persona_keywords(personas: &mut [PersonaTally]) -> Vec<Vec<Keyword>> {
    let terms: Vec<Vec<String>> = personas.iter_mut().map(|p| std::mem::take(&mut p.terms)).collect();
    keywords::per_document(&terms, KEYWORDS_KEPT)
}

/// The figures of every persona listed (above [`PERSONA_FIGURES_LIMIT`] personas, of those who
/// spoke).
fn persona_figures(
    results: &SimulationResults,
    roster: &Roster,
    tallies: &[PersonaTally],
    keywords: Vec<Vec<Keyword>>,
    totals: &Totals,
) -> Vec<PersonaFigures> {
    let listed = |i: usize| roster.len() <= PERSONA_FIGURES_LIMIT || tallies[i].messages > 0;
    keywords
        .into_iter()
        .enumerate()
        .filter(|(i, _)| listed(*i))
        .map(|(i, keywords)| {
            let p = &tallies[i];
            // The metrics actor keys personas by their index in the plan (the agents).
            let response_mean_ms =
                (i < results.agents.len()).then(|| results.full_metrics.persona_mean_ms.get(&i).copied()).flatten();
            PersonaFigures {
                id: roster.ids[i].clone(),
                name: roster.names[i].clone(),
                role: roster.roles[i].clone(),
                messages: p.messages,
                words: p.words,
                average_words: ratio(p.words, p.messages),
                questions: p.questions,
                share: ratio(p.messages, totals.messages),
                word_share: ratio(p.words, totals.words),
                first_turn: p.first_turn,
                last_turn: p.last_turn,
                sentiment_mean: if p.messages > 0 { p.sentiment_sum / p.messages as f64 } else { 0.0 },
                sentiment_by_turn: p
                    .sentiment_by_turn
                    .iter()
                    .map(|(turn, (s, c))| TurnValue { turn: *turn, value: s / *c as f64 })
                    .collect(),
                agreements: p.agreements,
                disagreements: p.disagreements,
                mentions_made: p.mentions_made,
                mentions_received: p.mentions_received,
                keywords,
                latency: p.latency(response_mean_ms),
                prompt_tokens: p.prompt_tokens,
                completion_tokens: p.completion_tokens,
            }
        })
        .collect()
}

fn participation(roster: &Roster, tallies: &[PersonaTally], totals: &Totals) -> Participation {
    let messages = |i: usize| tallies[i].messages;
    let counts: Vec<f64> = tallies.iter().map(|p| p.messages as f64).collect();
    let wcounts: Vec<f64> = tallies.iter().map(|p| p.words as f64).collect();
    let most = (0..tallies.len()).max_by(|a, b| messages(*a).cmp(&messages(*b)).then(b.cmp(a)));
    let least = (0..tallies.len()).min_by(|a, b| messages(*a).cmp(&messages(*b)).then(a.cmp(b)));
    Participation {
        gini_messages: stats::gini(&counts),
        gini_words: stats::gini(&wcounts),
        most_active: most.filter(|_| totals.messages > 0).map(|i| roster.ids[i].clone()),
        least_active: least.filter(|_| totals.messages > 0).map(|i| roster.ids[i].clone()),
    }
}

fn mention_graph(roster: &Roster, mentions: BTreeMap<(usize, usize), (u64, u64, u64)>) -> MentionGraph {
    MentionGraph {
        edges: mentions
            .into_iter()
            .map(|((i, j), (a, nm, tot))| MentionEdge {
                from: roster.ids[i].clone(),
                to: roster.ids[j].clone(),
                addressed: a,
                named: nm,
                total: tot,
            })
            .collect(),
    }
}

fn sentiment_figures(
    messages: Vec<MessageSentiment>,
    by_turn: BTreeMap<u32, (f64, u64)>,
    totals: &Totals,
) -> SentimentFigures {
    let mean = if totals.messages > 0 {
        messages.iter().filter(|m| m.speaker_id != MODERATOR_ID).map(|m| m.score.compound).sum::<f64>()
            / totals.messages as f64
    } else {
        0.0
    };
    SentimentFigures {
        mean,
        by_turn: by_turn.into_iter().map(|(turn, (s, c))| TurnValue { turn, value: s / c as f64 }).collect(),
        messages,
    }
}

/// Near-duplicate persona messages.
fn repetition_figures(transcript: &[TranscriptEntry], shingles: Vec<Vec<u64>>, totals: &Totals) -> Repetition {
    let persona_msgs: Vec<(u64, &str, &str)> = transcript
        .iter()
        .filter(|e| !is_moderator(e))
        .map(|e| (e.seq, e.speaker_id.as_str(), e.text.as_str()))
        .collect();
    let dups =
        repetition::near_duplicates_of(&persona_msgs, shingles, repetition::DEFAULT_THRESHOLD, DUPLICATE_PAIRS_KEPT);
    Repetition {
        threshold: repetition::DEFAULT_THRESHOLD,
        repeated_messages: dups.repeated,
        repetition_rate: ratio(dups.repeated, totals.messages),
        pairs_found: dups.found,
        pairs: dups.pairs,
    }
}

/// Latency over every message with one, and the metrics' buckets of every call attempt.
fn latency_figures(mut all: Vec<f64>, results: &SimulationResults) -> LatencyFigures {
    all.sort_by(f64::total_cmp);
    LatencyFigures {
        samples: all.len() as u64,
        mean_ms: stats::mean(&all),
        p50_ms: percentile(&all, 0.5),
        p90_ms: percentile(&all, 0.9),
        max_ms: all.last().copied().unwrap_or(0.0),
        buckets: results.full_metrics.latency_buckets.clone(),
    }
}

impl ConversationAnalysis {
    /// The `k` personas with the most messages (ties to the first listed), in listed order:
    /// what a chart or a table of personas can show legibly.
    pub fn most_active(&self, k: usize) -> Vec<&PersonaFigures> {
        let mut idx: Vec<usize> = (0..self.personas.len()).collect();
        if idx.len() > k && k > 0 {
            let m = |i: usize| self.personas[i].messages;
            idx.select_nth_unstable_by(k - 1, |a, b| m(*b).cmp(&m(*a)).then(a.cmp(b)));
            idx.truncate(k);
            idx.sort_unstable();
        }
        idx.truncate(k);
        idx.into_iter().map(|i| &self.personas[i]).collect()
    }
}

/// The turn-taking matrix over the personas (the [`TURN_TAKING_PERSONAS`] most active of them,
/// ties to the first listed, when there are more), from the counted `(previous, next)` pairs.
fn turn_taking(
    roster: &Roster,
    tallies: &[PersonaTally],
    pairs: &HashMap<(usize, usize), u64>,
    transitions: u64,
) -> TurnTaking {
    let mut shown: Vec<usize> = (0..roster.len()).collect();
    if shown.len() > TURN_TAKING_PERSONAS {
        let by_activity = |a: &usize, b: &usize| tallies[*b].messages.cmp(&tallies[*a].messages).then(a.cmp(b));
        shown.select_nth_unstable_by(TURN_TAKING_PERSONAS - 1, by_activity);
        shown.truncate(TURN_TAKING_PERSONAS);
        shown.sort_unstable();
    }
    let pos: HashMap<usize, usize> = shown.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let mut matrix = vec![vec![0u64; shown.len()]; shown.len()];
    let mut others = 0;
    for (&(p, i), &c) in pairs {
        match (pos.get(&p), pos.get(&i)) {
            (Some(&a), Some(&b)) => matrix[a][b] += c,
            _ => others += c,
        }
    }
    TurnTaking {
        personas: shown.iter().map(|&i| roster.ids[i].clone()).collect(),
        names: shown.iter().map(|&i| roster.names[i].clone()).collect(),
        matrix,
        transitions,
        others,
    }
}

/// Finds whom a message addresses (`to`: a name or an id) or names in its text (the full name,
/// or the first name when no other persona shares it; whole words, case-sensitive). Names are
/// looked up by their first word, so a message costs the same with ten personas or a million.
struct NameFinder<'a> {
    /// First word of a name form -> (persona, the whole form).
    by_word: HashMap<&'a str, Vec<(usize, &'a str)>>,
    /// Forms that do not start with a letter or digit (rare), checked one by one.
    odd: Vec<(usize, &'a str)>,
    /// Name or id -> personas, for the `to` field.
    to: HashMap<&'a str, Vec<usize>>,
}

impl<'a> NameFinder<'a> {
    fn new(ids: &'a [String], names: &'a [String]) -> Self {
        let firsts: Vec<&str> = names.iter().map(|n| text::first_name(n)).collect();
        let mut first_count: HashMap<&str, usize> = HashMap::new();
        for f in &firsts {
            *first_count.entry(f).or_default() += 1;
        }
        let mut by_word: HashMap<&str, Vec<(usize, &str)>> = HashMap::new();
        let mut odd = Vec::new();
        let mut to: HashMap<&str, Vec<usize>> = HashMap::new();
        for (j, name) in names.iter().enumerate() {
            let f = firsts[j];
            let unique_first = f != name && first_count.get(f) == Some(&1);
            for form in std::iter::once(name.as_str()).chain(unique_first.then_some(f)) {
                let lead = form.find(|c: char| !c.is_alphanumeric()).map_or(form, |e| &form[..e]);
                if form.is_empty() {
                    continue;
                } else if lead.is_empty() {
                    odd.push((j, form));
                } else {
                    by_word.entry(lead).or_default().push((j, form));
                }
            }
            to.entry(name.as_str()).or_default().push(j);
            if ids[j] != *name {
                to.entry(ids[j].as_str()).or_default().push(j);
            }
        }
        NameFinder { by_word, odd, to }
    }

    /// Fills `out` with `(persona, addressed, named)`, one entry per persona, sorted.
    fn mentions(&self, to: Option<&str>, msg: &str, out: &mut Vec<(usize, bool, bool)>) {
        out.clear();
        if let Some(js) = to.and_then(|t| self.to.get(t)) {
            out.extend(js.iter().map(|&j| (j, true, false)));
        }
        let mut start = None;
        for (k, c) in msg.char_indices().chain(std::iter::once((msg.len(), ' '))) {
            match (c.is_alphanumeric(), start) {
                (true, None) => start = Some(k),
                (false, Some(s)) => {
                    start = None;
                    for &(j, form) in self.by_word.get(&msg[s..k]).into_iter().flatten() {
                        let whole = msg[s..].starts_with(form)
                            && msg[s + form.len()..].chars().next().is_none_or(|c| !c.is_alphanumeric());
                        if whole {
                            out.push((j, false, true));
                        }
                    }
                }
                _ => {}
            }
        }
        for &(j, form) in &self.odd {
            if text::contains_name(msg, form) {
                out.push((j, false, true));
            }
        }
        out.sort_unstable_by_key(|h| h.0);
        out.dedup_by(|later, first| {
            let same = later.0 == first.0;
            if same {
                first.1 |= later.1;
                first.2 |= later.2;
            }
            same
        });
    }
}

/// Reads a saved run: `results.json` from `path` (a run folder, or the file itself), with
/// `metrics.json` beside it when present (it holds the latency buckets).
pub fn load_run(path: &Path) -> Result<SimulationResults, AnalysisError> {
    let (dir, file) = if path.is_dir() {
        (path.to_path_buf(), path.join("results.json"))
    } else {
        (path.parent().map(Path::to_path_buf).unwrap_or_default(), path.to_path_buf())
    };
    if !file.exists() {
        return Err(AnalysisError::Read { path: path.to_path_buf(), message: format!("{} not found", file.display()) });
    }
    let mut results = crate::record::results::load_results(&file)
        .map_err(|message| AnalysisError::Read { path: path.to_path_buf(), message })?;
    let metrics = dir.join("metrics.json");
    if let Ok(bytes) = crate::fsutil::read_input(&metrics, crate::fsutil::MAX_RUN_FILE_BYTES, "metrics.json") {
        match serde_json::from_slice(&bytes) {
            Ok(m) => results.full_metrics = m,
            Err(e) => {
                tracing::warn!(file = %metrics.display(), error = %e, "metrics.json unreadable; latency buckets left out")
            }
        }
    }
    results.run_dir = Some(dir);
    Ok(results)
}

/// Writes `analysis.json` into `dir` and, with `charts`, the SVG charts into `dir/charts/`.
/// Every file is written atomically. Library users call it after
/// [`crate::record::results::save_results`]; [`crate::review`] does when `output.auto_analysis` is on.
pub fn save_analysis(
    results: &SimulationResults,
    dir: &Path,
    charts: bool,
) -> Result<(ConversationAnalysis, AnalysisFiles), AnalysisError> {
    let mut analysis = analyze_conversation(results);
    // A judged section already paid for survives a new analysis (the web app's "Analyse", a
    // plain `troupe analyze`); `troupe analyze --in-character` replaces it.
    analysis.in_character = saved_in_character(dir);
    let files = write_analysis(&analysis, results, dir, charts)?;
    Ok((analysis, files))
}

/// Writes an analysis already made (see [`save_analysis`]).
pub fn write_analysis(
    analysis: &ConversationAnalysis,
    results: &SimulationResults,
    dir: &Path,
    charts: bool,
) -> Result<AnalysisFiles, AnalysisError> {
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AnalysisError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(werr(dir))?;
    let path = dir.join("analysis.json");
    let mut bytes = serde_json::to_vec_pretty(analysis).unwrap_or_default();
    bytes.push(b'\n');
    write_atomic(&path, &bytes).map_err(werr(&path))?;
    let mut files = AnalysisFiles { analysis: path, charts: Vec::new() };
    if charts {
        let cdir = dir.join("charts");
        std::fs::create_dir_all(&cdir).map_err(werr(&cdir))?;
        for chart in charts::render_all(analysis, results)? {
            let p = cdir.join(format!("{}.svg", chart.name));
            write_atomic(&p, chart.svg.as_bytes()).map_err(werr(&p))?;
            files.charts.push(p);
        }
    }
    Ok(files)
}

/// A few lines for a terminal: headline counts, balance, the most active persona, sentiment.
pub fn summary_lines(a: &ConversationAnalysis) -> Vec<String> {
    let o = &a.overview;
    let mut v = vec![format!(
        "{} messages ({} by personas, {} by the moderator), {} words, {} turn(s), {:.1} s",
        o.messages, o.persona_messages, o.moderator_messages, o.words, o.turns, o.duration_s
    )];
    v.push(format!(
        "participation: Gini {:.2} by messages ({}), {:.1} words per message, {} question(s)",
        a.participation.gini_messages,
        balance_word(a.participation.gini_messages),
        o.words_per_message,
        o.questions
    ));
    for p in &a.personas {
        let kws: Vec<&str> = p.keywords.iter().take(3).map(|k| k.term.as_str()).collect();
        v.push(format!(
            "  {}: {} msg ({:.0}%), {:.1} words/msg, sentiment {:+.2}, keywords: {}",
            p.name,
            p.messages,
            p.share * 100.0,
            p.average_words,
            p.sentiment_mean,
            if kws.is_empty() { "-".into() } else { kws.join(", ") }
        ));
    }
    v.push(format!(
        "sentiment {:+.2}; {} agreeing and {} disagreeing message(s); {} near-duplicate message(s)",
        a.sentiment.mean, a.agreement.agreements, a.agreement.disagreements, a.repetition.repeated_messages
    ));
    if let Some(ic) = &a.in_character {
        v.extend(in_character::summary_lines(ic));
    }
    v
}

/// The `in_character` section of the `analysis.json` already in `dir`, if it has one: a new
/// analysis of the run keeps it rather than lose what was paid for.
pub fn saved_in_character(dir: &Path) -> Option<in_character::InCharacter> {
    let bytes =
        crate::fsutil::read_input(&dir.join("analysis.json"), crate::fsutil::MAX_RUN_FILE_BYTES, "analysis.json")
            .ok()?;
    // Only that section is built; the rest of the file is skipped over, not turned into values
    // (a 10,000-persona analysis.json made this a third of `troupe analyze`).
    #[derive(serde::Deserialize)]
    struct Saved {
        in_character: Option<in_character::InCharacter>,
    }
    serde_json::from_slice::<Saved>(&bytes).ok()?.in_character
}

/// A word for a Gini value.
pub fn balance_word(g: f64) -> &'static str {
    match g {
        g if g < 0.1 => "even",
        g if g < 0.25 => "fairly even",
        g if g < 0.4 => "uneven",
        _ => "dominated by a few",
    }
}
