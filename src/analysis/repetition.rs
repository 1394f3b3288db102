//! Near-duplicate messages: word 3-shingles compared by Jaccard similarity.
//!
//! Each message becomes the set of its lower-cased 3-word sequences (a message of one or two
//! words is one shingle). Two messages whose sets overlap by at least the threshold
//! (|A ∩ B| / |A ∪ B|) are near duplicates. Every pair is compared when there are at most
//! [`FULL_COMPARISON_LIMIT`] messages; beyond that each message is compared with the
//! [`WINDOW`] messages before it, which keeps the work linear on long runs.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub use crate::text::similarity::{DEFAULT_THRESHOLD, jaccard, shingles};

/// Messages up to which every pair is compared.
pub const FULL_COMPARISON_LIMIT: usize = 2_000;
/// On longer runs, how many earlier messages each one is compared with.
pub const WINDOW: usize = 300;

/// Two messages that nearly repeat each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicatePair {
    /// Earlier message's position in the transcript.
    pub first_seq: u64,
    /// Later message's position.
    pub second_seq: u64,
    /// Earlier speaker's id.
    pub first_speaker: String,
    /// Later speaker's id.
    pub second_speaker: String,
    /// Jaccard similarity of their shingles, 0..1.
    pub similarity: f64,
}

/// The Jaccard similarity of two sorted sets when it is at least `t`, else `None`; a set less
/// than `t` times the other's size cannot reach it (|A ∩ B| <= min, |A ∪ B| >= max) and is not
/// compared.
fn jaccard_at_least(a: &[u64], b: &[u64], t: f64) -> Option<f64> {
    let (short, long) = if a.len() <= b.len() { (a.len(), b.len()) } else { (b.len(), a.len()) };
    if t > 0.0 && (short as f64) < t * long as f64 - 1e-9 {
        return None;
    }
    Some(jaccard(a, b)).filter(|s| *s >= t)
}

/// Near-duplicate pairs among `(seq, speaker id, text)` messages, in transcript order.
pub fn near_duplicates(messages: &[(u64, &str, &str)], threshold: f64) -> Vec<DuplicatePair> {
    near_duplicates_counted(messages, threshold, usize::MAX).pairs
}

/// Near-duplicates found in a run: the first `keep` pairs, and how many there were in all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Duplicates {
    /// The first pairs found, in transcript order.
    pub pairs: Vec<DuplicatePair>,
    /// All pairs found.
    pub found: u64,
    /// Messages that nearly repeat an earlier one.
    pub repeated: u64,
}

/// Like [`near_duplicates`], keeping only the first `keep` pairs (a long synthetic run can have
/// millions) while counting all of them and the messages that repeat an earlier one.
pub fn near_duplicates_counted(messages: &[(u64, &str, &str)], threshold: f64, keep: usize) -> Duplicates {
    let sh: Vec<Vec<u64>> = messages.iter().map(|m| shingles(m.2)).collect();
    let window = if messages.len() <= FULL_COMPARISON_LIMIT { usize::MAX } else { WINDOW };
    let mut out = Duplicates::default();
    // Prefix filtering (as in PPJoin): with the shingles of every message ordered rarest first,
    // two sets with Jaccard >= t > 0 share a shingle among the first |A| - ceil(t |A|) + 1 of
    // either. Only messages sharing such a prefix shingle are compared: the same pairs as
    // comparing all, and on real transcripts a small fraction of the work.
    let filter = threshold > 0.0;
    let mut freq: HashMap<u64, u32> = HashMap::new();
    for h in sh.iter().flatten() {
        *freq.entry(*h).or_default() += 1;
    }
    let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut candidates = Vec::new();
    for j in 0..messages.len() {
        let lo = j.saturating_sub(window);
        candidates.clear();
        if filter {
            let mut order = sh[j].clone();
            order.sort_unstable_by_key(|h| (freq[h], *h));
            // ceil(t |A|), rounded down on float noise (a longer prefix is always safe).
            let needed = ((threshold * order.len() as f64 - 1e-9).ceil().max(0.0) as usize).min(order.len());
            let prefix = order.len() + 1 - needed;
            for h in order.iter().take(prefix) {
                let earlier = index.entry(*h).or_default();
                let from = earlier.partition_point(|i| *i < lo);
                candidates.extend_from_slice(&earlier[from..]);
                earlier.push(j);
            }
            candidates.sort_unstable();
            candidates.dedup();
        } else {
            candidates.extend(lo..j);
        }
        let mut repeats = false;
        for &i in &candidates {
            let Some(s) = jaccard_at_least(&sh[i], &sh[j], threshold) else { continue };
            repeats = true;
            out.found += 1;
            if out.pairs.len() < keep {
                out.pairs.push(DuplicatePair {
                    first_seq: messages[i].0,
                    second_seq: messages[j].0,
                    first_speaker: messages[i].1.to_string(),
                    second_speaker: messages[j].1.to_string(),
                    similarity: s,
                });
            }
        }
        out.repeated += repeats as u64;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_messages_pair_up() {
        let m = [
            (1, "a", "We should run a two-week pilot with clear success metrics."),
            (2, "b", "Honestly, we should run a two-week pilot with clear success metrics."),
            (3, "c", "Budget decides this in practice."),
        ];
        let d = near_duplicates(&m, 0.6);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].first_seq, d[0].second_seq), (1, 2));
        assert!(jaccard(&shingles("a b c d"), &shingles("a b c d")) == 1.0);
        assert_eq!(jaccard(&[], &[]), 0.0);
        let c = near_duplicates_counted(&m, 0.6, 0);
        assert_eq!((c.pairs.len(), c.found, c.repeated), (0, 1, 1));
        assert_eq!(near_duplicates_counted(&m, 0.6, 5).pairs, d);
    }

    /// Every pair compared, the plain way.
    fn brute(m: &[(u64, &str, &str)], t: f64) -> Vec<(u64, u64)> {
        let sh: Vec<Vec<u64>> = m.iter().map(|x| shingles(x.2)).collect();
        let mut v = Vec::new();
        for j in 0..m.len() {
            for i in 0..j {
                if jaccard(&sh[i], &sh[j]) >= t {
                    v.push((m[i].0, m[j].0));
                }
            }
        }
        v
    }

    proptest::proptest! {
        /// Prefix filtering finds exactly the pairs that comparing every pair finds.
        #[test]
        fn prefix_filter_finds_every_pair(
            texts in proptest::collection::vec(proptest::collection::vec(0usize..6, 0..12), 0..40),
            t in proptest::sample::select(vec![0.0, 0.2, 0.34, 0.5, 0.6, 0.75, 1.0]),
        ) {
            const WORDS: [&str; 6] = ["we", "pilot", "budget", "cut", "the", "bus"];
            let owned: Vec<String> =
                texts.iter().map(|w| w.iter().map(|i| WORDS[*i]).collect::<Vec<_>>().join(" ")).collect();
            let m: Vec<(u64, &str, &str)> = owned.iter().enumerate().map(|(i, s)| (i as u64, "a", s.as_str())).collect();
            let got: Vec<(u64, u64)> =
                near_duplicates(&m, t).iter().map(|p| (p.first_seq, p.second_seq)).collect();
            proptest::prop_assert_eq!(got, brute(&m, t));
        }
    }
}
