//! Near-duplicate messages: word 3-shingles compared by Jaccard similarity.
//!
//! Each message becomes the set of its lower-cased 3-word sequences (a message of one or two
//! words is one shingle). Two messages whose sets overlap by at least the threshold
//! (|A ∩ B| / |A ∪ B|) are near duplicates. Every pair is compared when there are at most
//! [`FULL_COMPARISON_LIMIT`] messages; beyond that each message is compared with the
//! [`WINDOW`] messages before it, which keeps the work linear on long runs.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::text::similarity::overlap_at_least;
pub use crate::text::similarity::{DEFAULT_THRESHOLD, jaccard, shingles, shingles_of};

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

/// Overlap two sets of `sizes` elements together need for a Jaccard similarity of at least `t`:
/// |A ∩ B| >= t (|A| + |B|) / (1 + t), rounded down on float noise (a lower bar is always safe:
/// verification decides).
fn needed_overlap(sizes: usize, t: f64) -> usize {
    ((t * sizes as f64 / (1.0 + t) - 1e-9).ceil().max(0.0)) as usize
}

/// The Jaccard similarity of two sets sorted the same way when it is at least `t`, else `None`.
/// Stops as soon as what is left of either set cannot bring the overlap to `need`.
fn verify(a: &[u32], b: &[u32], t: f64, need: usize) -> Option<f64> {
    if a.is_empty() && b.is_empty() {
        // As `jaccard` has it: two empty sets are 0 similar.
        return (t <= 0.0).then_some(0.0);
    }
    if a == b {
        // The same words (a model or a template repeating itself): no merge needed.
        return Some(1.0);
    }
    let inter = overlap_at_least(a, b, need)?;
    let s = inter as f64 / (a.len() + b.len() - inter) as f64;
    (s >= t).then_some(s)
}

/// Each message's shingles as dense ids ordered rarest first (ties by hash), the order prefix
/// filtering needs; also how many distinct shingles there are.
fn ranked(sh: Vec<Vec<u64>>) -> (Vec<Vec<u32>>, usize) {
    let mut freq: HashMap<u64, u32> = HashMap::new();
    for h in sh.iter().flatten() {
        *freq.entry(*h).or_default() += 1;
    }
    let mut order: Vec<(u32, u64)> = freq.iter().map(|(h, f)| (*f, *h)).collect();
    order.sort_unstable();
    let rank: HashMap<u64, u32> = order.iter().enumerate().map(|(r, (_, h))| (*h, r as u32)).collect();
    let sets = sh
        .into_iter()
        .map(|s| {
            let mut v: Vec<u32> = s.iter().map(|h| rank[h]).collect();
            v.sort_unstable();
            v
        })
        .collect();
    (sets, order.len())
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
    let sets = messages.iter().map(|m| shingles(m.2)).collect();
    near_duplicates_of(messages, sets, threshold, keep)
}

/// [`near_duplicates_counted`] with each message's [`shingles`] already made (`sets[k]` of
/// `messages[k]`), as the analysis makes them while it reads each message once.
pub fn near_duplicates_of(
    messages: &[(u64, &str, &str)],
    sets: Vec<Vec<u64>>,
    threshold: f64,
    keep: usize,
) -> Duplicates {
    // Sets that do not match the messages one for one are made again from the texts.
    let sets = if sets.len() == messages.len() { sets } else { messages.iter().map(|m| shingles(m.2)).collect() };
    let (sets, distinct) = ranked(sets);
    let window = if messages.len() <= FULL_COMPARISON_LIMIT { usize::MAX } else { WINDOW };
    let mut out = Duplicates::default();
    let mut record = |j: usize, similar: &[(usize, f64)]| {
        out.repeated += !similar.is_empty() as u64;
        for &(i, s) in similar {
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
    };
    if threshold <= 0.0 {
        // Every pair is similar enough: compare them all.
        let mut similar = Vec::new();
        for j in 0..sets.len() {
            similar.clear();
            let earlier = j.saturating_sub(window)..j;
            similar.extend(earlier.filter_map(|i| verify(&sets[i], &sets[j], threshold, 0).map(|s| (i, s))));
            record(j, &similar);
        }
    } else if window == usize::MAX {
        grouped(sets, distinct, threshold, record);
    } else {
        ppjoin(&sets, distinct, Order::Transcript { window }, threshold, record);
    }
    out
}

/// [`ppjoin`] over every pair, with messages whose shingles are identical (a small model
/// repeating itself, a template) compared once: each different set is joined with the others,
/// and the pairs of messages are made from where each set occurs.
fn grouped(mut sets: Vec<Vec<u32>>, distinct: usize, threshold: f64, mut each: impl FnMut(usize, &[(usize, f64)])) {
    let (group, first) = groups(&sets);
    let unique: Vec<Vec<u32>> = first.iter().map(|&j| std::mem::take(&mut sets[j])).collect();
    // Which other groups each group is similar to, and how much: joined shortest first, which
    // lets the join index shorter prefixes.
    let mut by_size: Vec<usize> = (0..unique.len()).collect();
    by_size.sort_by_key(|&g| unique[g].len());
    let sorted: Vec<&[u32]> = by_size.iter().map(|&g| unique[g].as_slice()).collect();
    let mut like: Vec<Vec<(usize, f64)>> = vec![Vec::new(); unique.len()];
    ppjoin(&sorted, distinct, Order::BySize, threshold, |v, similar| {
        let v = by_size[v];
        for &(u, s) in similar {
            let u = by_size[u];
            like[v].push((u, s));
            like[u].push((v, s));
        }
    });
    let mut seen: Vec<Vec<usize>> = vec![Vec::new(); unique.len()];
    let mut similar = Vec::new();
    for (j, &g) in group.iter().enumerate() {
        let g = g as usize;
        similar.clear();
        if !unique[g].is_empty() && threshold <= 1.0 {
            // Identical non-empty sets are 1.0 similar.
            similar.extend(seen[g].iter().map(|&i| (i, 1.0)));
        }
        for &(u, s) in &like[g] {
            similar.extend(seen[u].iter().map(|&i| (i, s)));
        }
        similar.sort_unstable_by_key(|(i, _)| *i);
        each(j, &similar);
        seen[g].push(j);
    }
}

/// Which different set each of `sets` has (numbered in order of first occurrence), and where
/// each different set first occurs.
fn groups<S: AsRef<[u32]>>(sets: &[S]) -> (Vec<u32>, Vec<usize>) {
    let mut ids: HashMap<&[u32], u32> = HashMap::new();
    let mut first = Vec::new();
    let group = sets
        .iter()
        .enumerate()
        .map(|(j, s)| {
            let next = ids.len() as u32;
            let g = *ids.entry(s.as_ref()).or_insert(next);
            if g == next {
                first.push(j);
            }
            g
        })
        .collect();
    (group, first)
}

/// The overlap needed by the sum of two sizes, and the sizes a set of each size can pair with
/// (|B| within [t |A|, |A| / t]), worked out once rather than per candidate.
struct Bounds {
    need: Vec<usize>,
    sizes: Vec<(usize, usize)>,
}

impl Bounds {
    fn new(max_len: usize, threshold: f64) -> Bounds {
        let need = (0..=2 * max_len).map(|sum| needed_overlap(sum, threshold)).collect();
        let sizes = (0..=max_len)
            .map(|l| {
                let shortest = (threshold * l as f64 - 1e-9).ceil().max(0.0) as usize;
                (shortest, ((l as f64 + 1e-9) / threshold).floor() as usize)
            })
            .collect();
        Bounds { need, sizes }
    }
}

/// The order [`ppjoin`] takes sets in.
#[derive(Clone, Copy)]
enum Order {
    /// The transcript's, each compared with at most `window` before it; a set repeating one
    /// still in the window takes its pairs ([`Repeats`]).
    Transcript { window: usize },
    /// Shortest first, all pairs, no set twice: then an earlier set is never the longer of a
    /// pair, and each set needs only its first |A| - ceil(2t / (1 + t) |A|) + 1 shingles in the
    /// index (PPJoin's indexing prefix), not the |A| - ceil(t |A|) + 1 it probes with.
    BySize,
}

/// For each set in turn, the earlier ones at least `threshold` > 0 similar to it (within the
/// window, in transcript order), in order, given to `each`.
fn ppjoin<S: AsRef<[u32]>>(
    sets: &[S],
    distinct: usize,
    order: Order,
    threshold: f64,
    mut each: impl FnMut(usize, &[(usize, f64)]),
) {
    // PPJoin (Xiao et al., 2008). With every set ordered rarest shingle first, two sets with
    // Jaccard >= t > 0 share a shingle among the first |A| - ceil(t |A|) + 1 of each (the
    // prefix). Only messages sharing a prefix shingle are candidates; while the prefixes are
    // matched, a candidate whose overlap so far plus what could still follow the matched
    // positions cannot reach the overlap needed is dropped (the positional filter). The result is
    // the same pairs as comparing all of them (a property test checks it), for a fraction of the
    // work on transcripts that repeat themselves.
    let mut index: Vec<Vec<(u32, u32)>> = vec![Vec::new(); distinct];
    // Per earlier message: prefix overlap with the current one, or `PRUNED`.
    const PRUNED: u32 = u32::MAX;
    let mut overlap = vec![0u32; sets.len()];
    let mut touched: Vec<usize> = Vec::new();
    let Bounds { need, sizes } = Bounds::new(sets.iter().map(|s| s.as_ref().len()).max().unwrap_or(0), threshold);
    let (window, mut repeats) = match order {
        Order::Transcript { window } => (window, Some(Repeats::new(sets))),
        Order::BySize => (usize::MAX, None),
    };
    let indexed = |l: usize, prefix: usize| match order {
        Order::Transcript { .. } => prefix,
        Order::BySize => {
            let overlap = (2.0 * threshold / (1.0 + threshold) * l as f64 - 1e-9).ceil().max(0.0) as usize;
            (l + 1 - overlap.min(l)).min(prefix)
        }
    };
    for (j, x) in sets.iter().enumerate() {
        let x = x.as_ref();
        let lo = j.saturating_sub(window);
        if lo > 0
            && let Some(r) = repeats.as_mut()
        {
            r.leaves(lo - 1);
        }
        let lx = x.len();
        let (shortest, longest) = sizes[lx];
        let prefix = lx + 1 - shortest.min(lx);
        let index_prefix = indexed(lx, prefix);
        if let Some(similar) = repeats.as_mut().and_then(|r| r.repeated(j, lo)) {
            // The same shingles as a message still in the window: its pairs are known.
            for (p, &w) in x.iter().enumerate().take(index_prefix) {
                index[w as usize].push((j as u32, p as u32));
            }
            each(j, &similar);
            if let Some(r) = repeats.as_mut() {
                r.found(j, similar);
            }
            continue;
        }
        for (p, &w) in x.iter().enumerate().take(prefix) {
            let postings = &mut index[w as usize];
            let from = postings.partition_point(|(i, _)| (*i as usize) < lo);
            for &(i, q) in &postings[from..] {
                let i = i as usize;
                let o = overlap[i];
                if o == PRUNED {
                    continue;
                }
                if o == 0 {
                    touched.push(i);
                }
                let ly = sets[i].as_ref().len();
                let bound = o as usize + 1 + (lx - p - 1).min(ly - q as usize - 1);
                let fits = (shortest..=longest).contains(&ly);
                overlap[i] = if fits && bound >= need[lx + ly] { o + 1 } else { PRUNED };
            }
            if p < index_prefix {
                postings.push((j as u32, p as u32));
            }
        }
        let mut similar = Vec::new();
        for &i in &touched {
            let y = sets[i].as_ref();
            if overlap[i] != PRUNED
                && let Some(s) = verify(y, x, threshold, need[lx + y.len()])
            {
                similar.push((i, s));
            }
            overlap[i] = 0;
        }
        touched.clear();
        similar.sort_unstable_by_key(|(i, _)| *i);
        each(j, &similar);
        if let Some(r) = repeats.as_mut() {
            r.found(j, similar);
        }
    }
}

/// Earlier messages and their similarity to one message, in transcript order.
type Pairs = Vec<(usize, f64)>;

/// What [`ppjoin`] knows of messages whose shingles repeat (a model or a template saying the
/// same thing again), so a repeat is not compared again. For each set whose latest occurrence
/// `k` is in the window: the pairs found for `k`, and the later messages found similar to it.
/// A repeat `j` of it pairs with the first ones still in the window, with `k` itself and with
/// the later ones: the same pairs as comparing, because a later message compared with `k`.
struct Repeats {
    /// Which different set each message has.
    group: Vec<u32>,
    /// Each set's latest occurrence, `u32::MAX` before the first.
    latest: Vec<u32>,
    /// For each set whose latest occurrence is in the window: its pairs, and the later messages
    /// similar to it.
    known: HashMap<u32, (Pairs, Pairs)>,
    /// Whether each set is empty (an empty set is similar to nothing).
    empty: Vec<bool>,
}

impl Repeats {
    fn new<S: AsRef<[u32]>>(sets: &[S]) -> Repeats {
        let (group, first) = groups(sets);
        let empty = first.iter().map(|&j| sets[j].as_ref().is_empty()).collect();
        Repeats { group, latest: vec![u32::MAX; first.len()], known: HashMap::new(), empty }
    }

    /// Message `i` leaves the window: when its set has no later occurrence, forget it.
    fn leaves(&mut self, i: usize) {
        let g = self.group[i];
        if self.latest[g as usize] == i as u32 {
            self.known.remove(&g);
        }
    }

    /// Message `j`'s pairs among those from `lo`, when its set's latest occurrence is there.
    fn repeated(&mut self, j: usize, lo: usize) -> Option<Pairs> {
        let g = self.group[j];
        let k = self.latest[g as usize];
        if k == u32::MAX || (k as usize) < lo {
            return None;
        }
        let (mut pairs, later) = self.known.remove(&g)?;
        let gone = pairs.partition_point(|(i, _)| *i < lo);
        pairs.drain(..gone);
        if !self.empty[g as usize] {
            pairs.push((k as usize, 1.0));
        }
        pairs.extend(later);
        Some(pairs)
    }

    /// Message `j` was found similar to `pairs`: it is now its set's latest occurrence, and a
    /// later message similar to each set's latest occurrence among them.
    fn found(&mut self, j: usize, pairs: Pairs) {
        let g = self.group[j];
        for &(i, s) in &pairs {
            let gi = self.group[i];
            if gi != g
                && self.latest[gi as usize] == i as u32
                && let Some((_, later)) = self.known.get_mut(&gi)
            {
                later.push((j, s));
            }
        }
        self.latest[g as usize] = j as u32;
        self.known.insert(g, (pairs, Vec::new()));
    }
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

    /// Beyond [`FULL_COMPARISON_LIMIT`] messages each is compared with the [`WINDOW`] before it:
    /// the same pairs as comparing each with those, one by one.
    #[test]
    fn long_runs_compare_within_the_window() {
        const WORDS: [&str; 5] = ["we", "pilot", "budget", "cut", "bus"];
        let mut x: u64 = 7;
        let owned: Vec<String> = (0..FULL_COMPARISON_LIMIT + 400)
            .map(|_| {
                (0..6)
                    .map(|_| {
                        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                        WORDS[(x >> 33) as usize % WORDS.len()]
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let m: Vec<(u64, &str, &str)> = owned.iter().enumerate().map(|(i, s)| (i as u64, "a", s.as_str())).collect();
        let sh: Vec<Vec<u64>> = m.iter().map(|x| shingles(x.2)).collect();
        let mut want = Vec::new();
        for j in 0..m.len() {
            for i in j.saturating_sub(WINDOW)..j {
                if jaccard(&sh[i], &sh[j]) >= 0.6 {
                    want.push((i as u64, j as u64));
                }
            }
        }
        let got = near_duplicates_counted(&m, 0.6, usize::MAX);
        assert!(!want.is_empty());
        assert_eq!(got.pairs.iter().map(|p| (p.first_seq, p.second_seq)).collect::<Vec<_>>(), want);
        assert_eq!(got.found, want.len() as u64);
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

        /// Within a window, with messages that repeat each other (found without comparing
        /// them again): the same pairs and similarities as comparing each with those before it.
        #[test]
        fn windowed_join_with_repeats_finds_every_pair(
            texts in proptest::collection::vec(proptest::collection::vec(0usize..4, 0..6), 0..80),
            window in 1usize..12,
            t in proptest::sample::select(vec![0.2, 0.34, 0.5, 0.6, 0.75, 1.0]),
        ) {
            const WORDS: [&str; 4] = ["we", "pilot", "cut", "bus"];
            let owned: Vec<String> =
                texts.iter().map(|w| w.iter().map(|i| WORDS[*i]).collect::<Vec<_>>().join(" ")).collect();
            let sh: Vec<Vec<u64>> = owned.iter().map(|x| shingles(x)).collect();
            let mut want = Vec::new();
            for j in 0..sh.len() {
                for i in j.saturating_sub(window)..j {
                    let s = jaccard(&sh[i], &sh[j]);
                    if s >= t {
                        want.push((i, j, s));
                    }
                }
            }
            let (sets, distinct) = ranked(sh);
            let mut got = Vec::new();
            ppjoin(&sets, distinct, Order::Transcript { window }, t, |j, similar| got.extend(similar.iter().map(|&(i, s)| (i, j, s))));
            proptest::prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                proptest::prop_assert_eq!((g.0, g.1), (w.0, w.1));
                proptest::prop_assert!((g.2 - w.2).abs() < 1e-12);
            }
        }
    }
}
