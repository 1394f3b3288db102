//! Deterministic randomness and hashing that never change between versions or platforms,
//! so a run seed reproduces a run.
//!
//! # Streams
//! Everything random in a run draws from a stream derived from the run seed by
//! [`stream`] (a generator) or [`derive()`] (a seed), named by a [`Stream`]; no other code mixes
//! the run seed with a salt of its own. Each stream drives one thing, so adding draws to one
//! never shifts another:
//!
//! | Stream | Drives | Used in |
//! |---|---|---|
//! | `SupervisorJitter` | the jitter of the supervisor's retry backoff | `actors::supervisor` |
//! | `Activation { turn }` | which personas a scenario's activation lets speak in a turn | `actors::world` |
//! | `TurnOrder { turn }` | the speaking order of a turn under `RandomOrder` | `actors::world` |
//! | `PersonaSampling { persona }` | the sampling seed sent with a persona's calls (`llm.send_seed`) | `actors::world` |
//! | `ScenarioSample` | the personas a scenario's `Sample` references pick | `scenario::check` |
//! | `ProviderText { request }` | the text of an in-process provider (simulated, local) for a request without a seed | `llm::simulated`, `llm::local` |
//! | `SimulatedFaults { request, attempt }` | the simulated provider's fault and latency for one attempt | `llm::simulated` |
//! | `ExtractJitter { request }` | the backoff jitter of an extraction call's retries | `experiment::extract` |
//! | `ValidationJitter { request }` | the backoff jitter of a persona check's or judge's retries | `validation` |
//! | `ExperimentRun { variant, k }` | the run seed of run `k` of a variant, from the experiment seed | `experiment` |
//! | `BlindLabels` | the order of the blinded labels A, B, ... of an experiment | `experiment` |
//! | `Assignment` | the shuffle of an experiment's random persona assignment | `experiment` |
//! | `PersonaCheck { persona, expectations }` | the questions and sampling of a persona check | `validation::check` |
//! | `InCharacter { run_id }` | the judge's sampling seed in the `in_character` analysis | `validation::in_character` |
//! | `PersonaDrafts { context }` | persona drafts made without a model | `persona::generate` |
//! | `RunId { instance, micros }` | the suffix of a run's id (not reproducible: it holds the clock) | `engine` |
//!
//! The values are fixed: `streams_are_stable` pins them, since a change would alter every
//! recorded run. Each formula is the one its site used before the streams were named, so runs
//! made before reproduce byte for byte; the only one changed is `ExtractJitter`, which was the
//! same value as `ProviderText` for the same request and drives nothing but a delay.

/// SplitMix64: tiny, fast, and good enough for shuffles, sampling and simulated text.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// An index in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// FNV-1a over bytes: a stable 64-bit hash.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A fast stable 64-bit hash of bytes, 8 bytes at a time (little-endian on every platform).
/// Not for adversarial inputs; used for request fingerprints and caches.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0x7472_6f75_7065_2d73 ^ (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ v).wrapping_mul(K).rotate_left(29);
    }
    let mut tail = [0u8; 8];
    let rest = chunks.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(K).rotate_left(29);
    // Final avalanche (SplitMix64's finalizer).
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// Mixes several values into one seed.
pub fn mix(parts: &[u64]) -> u64 {
    let mut r = SplitMix64::new(0x7472_6f75_7065);
    let mut acc = 0u64;
    for p in parts {
        r.0 ^= p.wrapping_add(acc);
        acc = r.next_u64();
    }
    acc
}

/// A named random stream of a run; see the [module docs](self) for what each drives. The
/// fields tell draws of one stream apart (one per turn, per request, per persona, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream<'a> {
    /// The jitter of the supervisor's retry backoff.
    SupervisorJitter,
    /// Which personas a scenario's activation lets speak in `turn`.
    Activation {
        /// 1-based turn.
        turn: u32,
    },
    /// The speaking order of `turn` under the `RandomOrder` policy.
    TurnOrder {
        /// 1-based turn.
        turn: u32,
    },
    /// The sampling seed sent with a persona's calls.
    PersonaSampling {
        /// Persona id.
        persona: &'a str,
    },
    /// The picks of a scenario's `Sample` persona references.
    ScenarioSample,
    /// The text an in-process provider writes for a request that carries no seed.
    ProviderText {
        /// The request's fingerprint.
        request: u64,
    },
    /// The simulated provider's fault and latency for one attempt of a request.
    SimulatedFaults {
        /// The request's fingerprint.
        request: u64,
        /// 1-based attempt.
        attempt: u32,
    },
    /// The backoff jitter of an extraction call's retries.
    ExtractJitter {
        /// The request's fingerprint.
        request: u64,
    },
    /// The backoff jitter of a persona check's or a judge's retries.
    ValidationJitter {
        /// The request's fingerprint.
        request: u64,
    },
    /// The run seed of run `k` (1-based) of `variant`; derived from the experiment's seed.
    ExperimentRun {
        /// Variant name.
        variant: &'a str,
        /// 1-based run number within the variant.
        k: usize,
    },
    /// The order of an experiment's blinded labels.
    BlindLabels,
    /// The shuffle of an experiment's random persona assignment.
    Assignment,
    /// The questions and sampling of a persona check.
    PersonaCheck {
        /// Persona id.
        persona: &'a str,
        /// The expectations checked against (empty when none).
        expectations: &'a str,
    },
    /// The judge's sampling seed in a run's `in_character` analysis.
    InCharacter {
        /// The judged run's id.
        run_id: &'a str,
    },
    /// Persona drafts made without a model from a description.
    PersonaDrafts {
        /// The description.
        context: &'a str,
    },
    /// The suffix of a new run's id; holds the clock, so it is unique rather than reproducible.
    RunId {
        /// The engine's instance counter in this process.
        instance: u64,
        /// Start time, microseconds since the epoch.
        micros: u64,
    },
}

// The salts and layouts below are the ones each site used before the streams were named;
// changing any of them changes every run made with that stream.
const EXTRACT_SALT: u64 = 0xe7_7ac7;

/// The seed of `stream` for `run_seed` (for an experiment's streams, the experiment seed).
pub fn derive(run_seed: u64, stream: Stream<'_>) -> u64 {
    match stream {
        Stream::SupervisorJitter => run_seed ^ 0x6a17_7e42,
        Stream::Activation { turn } => mix(&[run_seed, u64::from(turn), 0xac71_7a7e]),
        Stream::TurnOrder { turn } => mix(&[run_seed, u64::from(turn), 0x07d3]),
        Stream::PersonaSampling { persona } => mix(&[run_seed, fnv1a(persona.as_bytes())]),
        Stream::ScenarioSample => run_seed ^ 0x5a4d_504c_4500_0001,
        Stream::ProviderText { request } => mix(&[run_seed, request]),
        Stream::SimulatedFaults { request, attempt } => mix(&[run_seed, request, u64::from(attempt), 0xfa17]),
        Stream::ExtractJitter { request } => mix(&[run_seed, request, EXTRACT_SALT]),
        Stream::ValidationJitter { request } => mix(&[run_seed, request, 0xc4ec]),
        Stream::ExperimentRun { variant, k } => mix(&[run_seed, hash_bytes(variant.as_bytes()), k as u64]),
        Stream::BlindLabels => mix(&[run_seed, 0xb11d]),
        Stream::Assignment => mix(&[run_seed, 0xa551]),
        Stream::PersonaCheck { persona, expectations } => mix(&[
            run_seed,
            hash_bytes(b"persona-check"),
            hash_bytes(persona.as_bytes()),
            hash_bytes(expectations.as_bytes()),
        ]),
        Stream::InCharacter { run_id } => mix(&[run_seed, hash_bytes(b"in-character"), hash_bytes(run_id.as_bytes())]),
        Stream::PersonaDrafts { context } => mix(&[hash_bytes(context.as_bytes()), run_seed]),
        Stream::RunId { instance, micros } => mix(&[run_seed, instance, micros]),
    }
}

/// A generator for `stream` of `run_seed`: `SplitMix64::new(derive(run_seed, stream))`.
pub fn stream(run_seed: u64, stream: Stream<'_>) -> SplitMix64 {
    SplitMix64::new(derive(run_seed, stream))
}

/// `k` distinct indexes of `weights`, drawn without replacement with probability proportional
/// to their weight (Efraimidis and Spirakis: each item gets the key `ln(u) / w` for a uniform
/// `u`, and the `k` largest keys win), in linear time. A weight of zero or less (or not a
/// number) is never drawn; when fewer than `k` items can be drawn, all of them are returned.
pub fn weighted_sample(weights: &[f64], k: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut keyed: Vec<(f64, usize)> = Vec::with_capacity(weights.len());
    for (i, &w) in weights.iter().enumerate() {
        // Draw for every item, so which items are drawable does not shift the others' draws.
        let u = rng.next_f64().max(f64::MIN_POSITIVE);
        if w.is_finite() && w > 0.0 {
            keyed.push((u.ln() / w, i));
        }
    }
    if k < keyed.len() {
        keyed.select_nth_unstable_by(k, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        keyed.truncate(k);
    }
    keyed.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_samples_follow_the_weights() {
        let mut rng = SplitMix64::new(7);
        let w = [1.0, 4.0, 0.0, 1.0, f64::NAN];
        let mut counts = [0usize; 5];
        for _ in 0..4000 {
            let s = weighted_sample(&w, 1, &mut rng);
            counts[s[0]] += 1;
        }
        assert_eq!((counts[2], counts[4]), (0, 0), "zero and NaN weights are never drawn");
        let ratio = counts[1] as f64 / counts[0] as f64;
        assert!((3.0..5.3).contains(&ratio), "{counts:?}");
        // Distinct, and all when asked for more than can be drawn.
        let mut s = weighted_sample(&w, 10, &mut rng);
        s.sort_unstable();
        assert_eq!(s, [0, 1, 3]);
        let s = weighted_sample(&[1.0; 100], 10, &mut SplitMix64::new(1));
        let set: std::collections::HashSet<_> = s.iter().collect();
        assert_eq!((s.len(), set.len()), (10, 10));
    }

    #[test]
    fn stable_values() {
        // Fixed outputs: a change here breaks reproducibility of every recorded run.
        assert_eq!(fnv1a(b"troupe"), fnv1a(b"troupe"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        let mut r = SplitMix64::new(1);
        assert_eq!(r.next_u64(), 0x910a_2dec_8902_5cc1);
    }

    /// One of each stream, with distinct fields where a stream has them.
    fn every_stream() -> Vec<Stream<'static>> {
        vec![
            Stream::SupervisorJitter,
            Stream::Activation { turn: 1 },
            Stream::TurnOrder { turn: 1 },
            Stream::PersonaSampling { persona: "sarah_chen" },
            Stream::ScenarioSample,
            Stream::ProviderText { request: 7 },
            Stream::SimulatedFaults { request: 7, attempt: 1 },
            Stream::ExtractJitter { request: 7 },
            Stream::ValidationJitter { request: 7 },
            Stream::ExperimentRun { variant: "baseline", k: 1 },
            Stream::BlindLabels,
            Stream::Assignment,
            Stream::PersonaCheck { persona: "sarah_chen", expectations: "" },
            Stream::InCharacter { run_id: "run-1" },
            Stream::PersonaDrafts { context: "nurses" },
            Stream::RunId { instance: 0, micros: 0 },
        ]
    }

    #[test]
    fn streams_are_stable() {
        // Fixed outputs for run seed 42, each the value its site derived before the streams
        // were named (ExtractJitter excepted, see the module docs). A change here changes every
        // recorded run that uses the stream.
        let want: [u64; 16] = [
            0x0000_0000_6a17_7e68,
            0xcbf7_9b7c_f5a0_c7fe,
            0x6b70_7ebc_7387_ce29,
            0x6aeb_1ff3_cd86_c46d,
            0x5a4d_504c_4500_002b,
            0x1cbe_38fb_373d_0657,
            0x2ed3_ea23_d860_2f6c,
            0x63c0_4a95_424b_21d5,
            0x0cac_dd8e_7e67_450e,
            0x5971_75ba_0ad6_ae6d,
            0x526a_9161_8c08_0aa5,
            0xf90d_46eb_6f24_eb01,
            0x4582_d848_644b_2294,
            0x3d48_34ed_5f81_14da,
            0x93d6_6513_a82c_5c48,
            0xe442_3049_956f_b1ee,
        ];
        let got: Vec<u64> = every_stream().into_iter().map(|s| derive(42, s)).collect();
        assert_eq!(got, want, "{:#x?}", got);
        assert_eq!(stream(42, Stream::BlindLabels).next_u64(), SplitMix64::new(want[10]).next_u64());
    }

    #[test]
    fn streams_are_independent() {
        // For the same run seed, no two streams (nor two turns, requests or attempts of one
        // stream) start with the same draws.
        let mut streams = every_stream();
        streams.extend([
            Stream::Activation { turn: 2 },
            Stream::TurnOrder { turn: 2 },
            Stream::PersonaSampling { persona: "marcus_webb" },
            Stream::ProviderText { request: 8 },
            Stream::SimulatedFaults { request: 7, attempt: 2 },
            Stream::ExperimentRun { variant: "baseline", k: 2 },
            Stream::ExperimentRun { variant: "pair", k: 1 },
        ]);
        for run_seed in [0, 1, 42, u64::MAX] {
            let mut seen = std::collections::HashMap::new();
            for s in &streams {
                let mut r = stream(run_seed, *s);
                let draws = [r.next_u64(), r.next_u64(), r.next_u64()];
                for d in draws {
                    if let Some(other) = seen.insert(d, *s) {
                        panic!("run seed {run_seed}: {s:?} and {other:?} share a draw");
                    }
                }
            }
        }
    }

    #[test]
    fn hash_bytes_is_stable_and_spreads() {
        assert_eq!(hash_bytes(b"abc"), hash_bytes(b"abc"));
        assert_ne!(hash_bytes(b"abc"), hash_bytes(b"abd"));
        assert_ne!(hash_bytes(b""), hash_bytes(b"\0"));
        assert_ne!(hash_bytes(b"12345678a"), hash_bytes(b"12345678b"));
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<u32> = (0..100).collect();
        SplitMix64::new(7).shuffle(&mut v);
        let mut s = v.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_ne!(v, s);
    }
}
