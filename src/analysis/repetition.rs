//! Near-duplicate messages: word 3-shingles compared by Jaccard similarity.
//!
//! Each message becomes the set of its lower-cased 3-word sequences (a message of one or two
//! words is one shingle). Two messages whose sets overlap by at least the threshold
//! (|A ∩ B| / |A ∪ B|) are near duplicates. Every pair is compared when there are at most
//! [`FULL_COMPARISON_LIMIT`] messages; beyond that each message is compared with the
//! [`WINDOW`] messages before it, which keeps the work linear on long runs.

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

/// Near-duplicate pairs among `(seq, speaker id, text)` messages, in transcript order.
pub fn near_duplicates(messages: &[(u64, &str, &str)], threshold: f64) -> Vec<DuplicatePair> {
    let sh: Vec<Vec<u64>> = messages.iter().map(|m| shingles(m.2)).collect();
    let window = if messages.len() <= FULL_COMPARISON_LIMIT { usize::MAX } else { WINDOW };
    let mut out = Vec::new();
    for j in 0..messages.len() {
        for i in j.saturating_sub(window)..j {
            let s = jaccard(&sh[i], &sh[j]);
            if s >= threshold {
                out.push(DuplicatePair {
                    first_seq: messages[i].0,
                    second_seq: messages[j].0,
                    first_speaker: messages[i].1.to_string(),
                    second_speaker: messages[j].1.to_string(),
                    similarity: s,
                });
            }
        }
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
    }
}
