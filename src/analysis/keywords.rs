//! Distinctive keywords by TF-IDF.
//!
//! Per persona, each persona's messages together are one document: a term scores
//! `tf · idf` with `tf` its share of the persona's terms and the smoothed
//! `idf = ln((1 + N) / (1 + df)) + 1` over the N personas, so words every persona uses sink and
//! words one persona keeps using rise. Overall, each message is a document and a term scores
//! its total count times the same idf over messages: frequent but not ubiquitous terms.
//! Terms are lower-cased content words (no stop words, no participants' names).

use foldhash::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// One keyword with its score and how often it occurs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keyword {
    /// The term, lower-cased.
    pub term: String,
    /// TF-IDF score.
    pub score: f64,
    /// Occurrences.
    pub count: u64,
}

fn idf(n_docs: usize, df: usize) -> f64 {
    ((1.0 + n_docs as f64) / (1.0 + df as f64)).ln() + 1.0
}

fn top(mut v: Vec<Keyword>, k: usize) -> Vec<Keyword> {
    // Highest score first; ties by count, then alphabetically, so the order is stable.
    v.sort_by(|a, b| b.score.total_cmp(&a.score).then(b.count.cmp(&a.count)).then(a.term.cmp(&b.term)));
    v.truncate(k);
    v
}

/// The top `k` keywords of each document (one document per persona, as term lists).
/// Terms are counted in hash maps (foldhash: fast, seeded per process); the order of the
/// result is [`top`]'s, whatever the maps' order.
pub fn per_document(docs: &[Vec<String>], k: usize) -> Vec<Vec<Keyword>> {
    let mut df: HashMap<&str, usize> = HashMap::default();
    // Each document's term counts, made once: its distinct terms give the document frequency.
    let counts: Vec<HashMap<&str, u64>> = docs
        .iter()
        .map(|d| {
            let mut tf: HashMap<&str, u64> = HashMap::default();
            for t in d {
                *tf.entry(t.as_str()).or_default() += 1;
            }
            tf
        })
        .collect();
    for tf in &counts {
        for t in tf.keys() {
            *df.entry(t).or_default() += 1;
        }
    }
    docs.iter()
        .zip(counts)
        .map(|(d, tf)| {
            let len = d.len().max(1) as f64;
            let v = tf
                .into_iter()
                .map(|(t, c)| Keyword { term: t.to_string(), score: c as f64 / len * idf(docs.len(), df[t]), count: c })
                .collect();
            top(v, k)
        })
        .collect()
}

/// The top `k` keywords of a corpus of messages (term lists): count × idf over messages.
pub fn overall(messages: &[Vec<String>], k: usize) -> Vec<Keyword> {
    let mut df: HashMap<&str, usize> = HashMap::default();
    let mut count: HashMap<&str, u64> = HashMap::default();
    let mut uniq: HashSet<&str> = HashSet::default();
    for m in messages {
        uniq.clear();
        uniq.extend(m.iter().map(String::as_str));
        for t in uniq.drain() {
            *df.entry(t).or_default() += 1;
        }
        for t in m {
            *count.entry(t.as_str()).or_default() += 1;
        }
    }
    let total: u64 = count.values().sum::<u64>().max(1);
    let v = count
        .into_iter()
        .map(|(t, c)| Keyword {
            term: t.to_string(),
            score: c as f64 / total as f64 * idf(messages.len(), df[t]),
            count: c,
        })
        .collect();
    top(v, k)
}
