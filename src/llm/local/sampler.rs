//! Picks the next token from the model's logits: a logit bias, the repeat penalty, then greedy
//! at temperature 0, else temperature, nucleus (top_p) and a draw from a seeded generator, so a
//! seed reproduces a reply.

use crate::rng::SplitMix64;

/// Sampling settings of one reply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 (or less) picks the most likely token every time.
    pub temperature: f64,
    /// Keep the smallest set of tokens whose probabilities add up to this (1.0: all).
    pub top_p: f64,
    /// Logits of recently seen tokens are divided (if positive) or multiplied (if negative) by
    /// this; 1.0 turns it off.
    pub repeat_penalty: f32,
    /// How many of the last tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// Seed of the draws.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_p: 1.0, repeat_penalty: 1.0, repeat_last_n: 64, seed: 0 }
    }
}

/// A sampler for one reply.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: SplitMix64,
    order: Vec<u32>,
    bias: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler seeded with `params.seed`.
    pub fn new(params: SamplingParams) -> Self {
        Sampler { rng: SplitMix64::new(params.seed), params, order: Vec::new(), bias: Vec::new() }
    }

    /// Adds `bias` to the logits of its tokens before every draw (as OpenAI's `logit_bias`: a
    /// negative value makes a token rarer); ids outside the vocabulary are ignored. The local
    /// provider lowers the other speakers' recent words and the persona's own name with it.
    pub fn with_bias(mut self, bias: &[(u32, f32)]) -> Self {
        self.bias = bias.iter().copied().filter(|(_, b)| b.is_finite()).collect();
        self
    }

    /// Leaves in `self.order[..kept]` the most likely tokens, most likely first (ties by id), up
    /// to the first whose running sum reaches `need`, and returns `kept` and that sum. The same
    /// prefix as sorting the whole vocabulary, found by sorting only the best `k` (64 first,
    /// then 4x more while they do not reach `need`): with a small model's peaked distribution a
    /// reply no longer sorts 49,152 probabilities per token.
    fn nucleus(&mut self, p: &[f32], need: f64) -> (usize, f64) {
        let better = |a: &u32, b: &u32| p[*b as usize].total_cmp(&p[*a as usize]).then(a.cmp(b));
        let mut k = 64.min(p.len());
        loop {
            self.order.clear();
            self.order.extend(0..p.len() as u32);
            if k < p.len() {
                self.order.select_nth_unstable_by(k, better);
            }
            let top = &mut self.order[..k];
            top.sort_unstable_by(better);
            let mut mass = 0f64;
            for (i, &id) in top.iter().enumerate() {
                mass += p[id as usize] as f64;
                if mass >= need {
                    return (i + 1, mass);
                }
            }
            if k == p.len() {
                return (k, mass);
            }
            k = (k * 4).min(p.len());
        }
    }

    /// Picks a token. `logits` is changed in place. `recent` are the tokens the repeat penalty
    /// applies to (control tokens already left out by the caller).
    pub fn sample(&mut self, logits: &mut [f32], recent: &[u32]) -> u32 {
        for &(id, b) in &self.bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += b;
            }
        }
        let n = self.params.repeat_last_n.min(recent.len());
        apply_repeat_penalty(logits, self.params.repeat_penalty, &recent[recent.len() - n..]);
        if self.params.temperature <= 0.0 || !self.params.temperature.is_finite() {
            return argmax(logits);
        }
        let max = logits.iter().copied().filter(|l| !l.is_nan()).fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return argmax(logits);
        }
        let inv_t = (1.0 / self.params.temperature) as f32;
        let mut total = 0f64;
        for l in logits.iter_mut() {
            let p = if l.is_nan() { 0.0 } else { ((*l - max) * inv_t).exp() };
            *l = p;
            total += p as f64;
        }
        if !(total.is_finite() && total > 0.0) {
            return argmax(logits);
        }
        let top_p = self.params.top_p;
        if top_p < 1.0 && top_p > 0.0 {
            let (kept, mass) = self.nucleus(logits, top_p * total);
            let target = self.rng.next_f64() * mass;
            let mut acc = 0f64;
            for &id in &self.order[..kept] {
                acc += logits[id as usize] as f64;
                if acc > target {
                    return id;
                }
            }
            return self.order[kept - 1];
        }
        let target = self.rng.next_f64() * total;
        let mut acc = 0f64;
        let mut last = 0u32;
        for (id, &p) in logits.iter().enumerate() {
            if p > 0.0 {
                acc += p as f64;
                last = id as u32;
                if acc > target {
                    return id as u32;
                }
            }
        }
        last
    }
}

/// The most likely token; the lowest id among equals. NaN counts as the least likely.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// The repeat penalty as llama.cpp and candle apply it: once per distinct token in `context`.
pub fn apply_repeat_penalty(logits: &mut [f32], penalty: f32, context: &[u32]) {
    if penalty == 1.0 || !penalty.is_finite() || penalty <= 0.0 {
        return;
    }
    let mut seen: Vec<u32> = context.to_vec();
    seen.sort_unstable();
    seen.dedup();
    for id in seen {
        if let Some(l) = logits.get_mut(id as usize) {
            *l = if *l >= 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f64, top_p: f64, seed: u64) -> SamplingParams {
        SamplingParams { temperature, top_p, seed, ..Default::default() }
    }

    #[test]
    fn temperature_zero_is_greedy() {
        let mut s = Sampler::new(params(0.0, 1.0, 7));
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.9, f32::NAN], &[]), 1);
        assert_eq!(argmax(&[1.0, 1.0]), 0, "ties go to the lowest id");
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
    }

    #[test]
    fn a_seed_reproduces_the_draws() {
        let logits = [1.0f32, 1.2, 0.8, 1.1, 0.3, 0.9];
        let draw = |seed| {
            let mut s = Sampler::new(params(1.0, 0.9, seed));
            (0..50).map(|_| s.sample(&mut logits.clone(), &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        let all = draw(3);
        assert!(all.iter().collect::<std::collections::BTreeSet<_>>().len() > 2, "the draws vary: {all:?}");
    }

    #[test]
    fn the_nucleus_is_the_prefix_a_full_sort_gives() {
        // Flat, peaked and tied distributions, and nuclei from one token to all of them.
        let shapes: Vec<Vec<f32>> = vec![
            (0..5000).map(|i| ((i * 7919) % 997) as f32 / 997.0).collect(),
            (0..5000).map(|i| (-(((i * 31) % 5000) as f32) / 50.0).exp()).collect(),
            (0..5000).map(|i| if i % 3 == 0 { 0.5 } else { 0.25 }).collect(),
            vec![1.0; 40],
        ];
        for p in &shapes {
            let total: f64 = p.iter().map(|&v| v as f64).sum();
            let mut full: Vec<u32> = (0..p.len() as u32).collect();
            full.sort_unstable_by(|&a, &b| p[b as usize].total_cmp(&p[a as usize]).then(a.cmp(&b)));
            for top_p in [1e-9, 0.1, 0.5, 0.9, 0.999, 1.0] {
                let mut want = (full.len(), 0f64);
                let mut mass = 0f64;
                for (i, &id) in full.iter().enumerate() {
                    mass += p[id as usize] as f64;
                    if mass >= top_p * total {
                        want = (i + 1, mass);
                        break;
                    }
                    want.1 = mass;
                }
                let mut s = Sampler::new(params(0.5, top_p, 1));
                let got = s.nucleus(p, top_p * total);
                assert_eq!((got.0, got.1.to_bits()), (want.0, want.1.to_bits()), "top_p {top_p}");
                assert_eq!(&s.order[..got.0], &full[..want.0], "top_p {top_p}");
            }
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Probabilities about 0.64, 0.24, 0.09, 0.03: top_p 0.7 keeps the first two.
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let mut s = Sampler::new(params(1.0, 0.7, 9));
        for _ in 0..500 {
            let t = s.sample(&mut logits.clone(), &[]);
            assert!(t < 2, "token {t} is outside the nucleus");
        }
        // A tiny top_p keeps only the best token.
        let mut s = Sampler::new(params(1.0, 1e-6, 9));
        assert!((0..100).all(|_| s.sample(&mut logits.clone(), &[]) == 0));
    }

    #[test]
    fn low_temperature_sharpens() {
        let logits = [2.0f32, 1.0];
        let mut s = Sampler::new(params(0.05, 1.0, 4));
        assert!((0..200).all(|_| s.sample(&mut logits.clone(), &[]) == 0));
    }

    #[test]
    fn a_bias_moves_logits_before_the_draw() {
        let mut s = Sampler::new(params(0.0, 1.0, 0)).with_bias(&[(0, -2.0), (9, -5.0), (1, f32::NAN)]);
        assert_eq!(s.sample(&mut [2.0, 1.5, 0.0], &[]), 1, "token 0 lowered below token 1; 9 is ignored");
        let mut s = Sampler::new(params(0.0, 1.0, 0)).with_bias(&[(2, 3.0)]);
        assert_eq!(s.sample(&mut [2.0, 1.5, 0.0], &[]), 2);
        // Sampled: a token pushed far down is never drawn.
        let mut s = Sampler::new(params(1.0, 1.0, 5)).with_bias(&[(0, -100.0)]);
        assert!((0..300).all(|_| s.sample(&mut [1.0, 1.0, 1.0], &[]) != 0));
    }

    #[test]
    fn repeat_penalty_lowers_seen_tokens_once() {
        let mut l = [2.0f32, -1.0, 1.5];
        apply_repeat_penalty(&mut l, 2.0, &[0, 1, 0, 0]);
        assert_eq!(l, [1.0, -2.0, 1.5]);
        // Greedy with a penalty over the recent tokens: the repeated token loses.
        let mut s = Sampler::new(SamplingParams { repeat_penalty: 2.0, ..params(0.0, 1.0, 0) });
        assert_eq!(s.sample(&mut [2.0, 1.5], &[0]), 1);
        // Only the last `repeat_last_n` tokens count.
        let mut s = Sampler::new(SamplingParams { repeat_penalty: 2.0, repeat_last_n: 1, ..params(0.0, 1.0, 0) });
        assert_eq!(s.sample(&mut [2.0, 1.5], &[0, 1]), 0);
    }
}
