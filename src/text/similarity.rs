//! The near-duplicate measure: word 3-shingles compared by Jaccard similarity.
//!
//! Each text becomes the set of its lower-cased 3-word sequences (a text of one or two words is
//! one shingle). Two texts whose sets overlap by at least the threshold (|A ∩ B| / |A ∪ B|) are
//! near duplicates. `analysis::repetition` pairs a run's messages with it; the local model's
//! provider checks a reply against the room's recent lines with it.

use super::tokens;
use crate::rng::hash_bytes;

/// Default similarity at or above which two messages are near duplicates.
pub const DEFAULT_THRESHOLD: f64 = 0.6;

/// The sorted, de-duplicated shingle hashes of a text.
pub fn shingles(text: &str) -> Vec<u64> {
    shingles_of(&tokens(text))
}

/// [`shingles`] of a text already split by [`tokens`](super::tokens).
pub fn shingles_of(t: &[String]) -> Vec<u64> {
    let mut v: Vec<u64> = if t.len() < 3 {
        if t.is_empty() { Vec::new() } else { vec![hash_bytes(t.join(" ").as_bytes())] }
    } else {
        let mut buf = Vec::with_capacity(64);
        t.windows(3)
            .map(|w| {
                buf.clear();
                for (k, word) in w.iter().enumerate() {
                    if k > 0 {
                        buf.push(b' ');
                    }
                    buf.extend_from_slice(word.as_bytes());
                }
                hash_bytes(&buf)
            })
            .collect()
    };
    v.sort_unstable();
    v.dedup();
    v
}

/// Jaccard similarity of two sorted, de-duplicated sets; 0 when both are empty.
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 0.0;
    }
    let inter = overlap_at_least(a, b, 0).unwrap_or(0);
    inter as f64 / (a.len() + b.len() - inter) as f64
}

/// |A ∩ B| of two sets sorted the same way, or `None` as soon as what is left of either cannot
/// bring it to `need`.
pub fn overlap_at_least<T: Ord>(a: &[T], b: &[T], need: usize) -> Option<usize> {
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        if inter + (a.len() - i).min(b.len() - j) < need {
            return None;
        }
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    (inter >= need).then_some(inter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shingles_and_jaccard() {
        assert_eq!(jaccard(&shingles("a b c d"), &shingles("a b c d")), 1.0);
        assert_eq!(jaccard(&shingles("A b, c d!"), &shingles("a b c d")), 1.0, "case and punctuation aside");
        assert_eq!(shingles("two words").len(), 1);
        assert!(shingles("").is_empty());
        assert_eq!(jaccard(&[], &[]), 0.0);
        assert_eq!(jaccard(&shingles("a b c d"), &shingles("a b c e")), 1.0 / 3.0);
    }
}
