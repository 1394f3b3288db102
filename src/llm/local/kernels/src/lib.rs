//! The embedded local model's inner loops (troupe-sim's `llm::local::llama`), in a crate of
//! their own for one reason: troupe-sim's `Cargo.toml` builds this crate optimized in debug
//! builds too (`[profile.dev.package.troupe-kernels]`), so `cargo test` runs the model at
//! nearly release speed without optimizing the whole of troupe-sim. Unoptimized, these loops
//! write about one token per second.
//!
//! Every function works on plain `f32` slices and computes each output element in one fixed
//! order of additions, so its bits never depend on how the caller splits work between
//! threads or which sequences share a batch.

#![deny(missing_docs)]

pub mod q8;

/// A dot product in a fixed order: 16 running sums over the elements by position modulo 16,
/// then added up in order. Vectorizes without changing the result (no reassociation, no fused
/// multiply-add), and with AVX2 where the CPU has it; both paths give the same bits.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd::avx2() {
        // SAFETY: the CPU supports AVX2 (checked at run time).
        return unsafe { simd::dot_avx2(a, b) };
    }
    dot_lanes(a, b)
}

#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..L {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = 0f32;
    for (x, y) in ta.iter().zip(tb) {
        s += x * y;
    }
    for v in acc {
        s += v;
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::sync::OnceLock;

    pub(super) fn avx2() -> bool {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("avx2"))
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        super::dot_lanes(a, b)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn attend_avx2(q: &[f32], keys: &[f32], vals: &[f32], hd: usize, scale: f32, out: &mut [f32]) {
        super::attend_lanes(q, keys, vals, hd, scale, out);
    }
}

/// The query heads that share one key/value head (grouped-query attention; `q` holds them one
/// after another, each `hd` wide) against the cached keys and values (`len x hd` each):
/// `out[h] = softmax(q[h] . k * scale) . v`. Each key and value is read once for all the
/// heads of the group; each head gets the bits it gets alone.
pub fn attend(q: &[f32], keys: &[f32], vals: &[f32], hd: usize, scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd::avx2() {
        // SAFETY: the CPU supports AVX2 (checked at run time).
        return unsafe { simd::attend_avx2(q, keys, vals, hd, scale, out) };
    }
    attend_lanes(q, keys, vals, hd, scale, out);
}

/// Keys and values are fetched this many positions ahead of use: a sequence's attention cache
/// outgrows the CPU caches (about 46 KB a position for SmolLM2-135M), and the hardware
/// prefetcher alone leaves the scores waiting on memory.
const AHEAD: usize = 16;

/// Asks for the cache lines of `v[at..]` (a row of up to 64 values) ahead of use; past the
/// end it does nothing.
#[inline(always)]
fn prefetch(v: &[f32], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if at < v.len() {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = v[at..].as_ptr() as *const i8;
        // SAFETY: a prefetch only hints the cache and never faults: `p` points into `v`, and
        // the lines after it (made with `wrapping_add`, defined past the end) may lie beyond.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(128));
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(192));
        }
    }
}

#[inline(always)]
fn attend_lanes(q: &[f32], keys: &[f32], vals: &[f32], hd: usize, scale: f32, out: &mut [f32]) {
    let len = keys.len() / hd;
    if len == 0 {
        out.fill(0.0); // nothing to attend to
        return;
    }
    let mut scores = vec![0f32; q.len() / hd * len];
    for (p, k) in keys.chunks_exact(hd).enumerate() {
        prefetch(keys, (p + AHEAD) * hd);
        for (h, qh) in q.chunks_exact(hd).enumerate() {
            scores[h * len + p] = dot_lanes(qh, k);
        }
    }
    for row in scores.chunks_exact_mut(len) {
        softmax_prefix(row, len, scale);
    }
    out.fill(0.0);
    for (p, v) in vals.chunks_exact(hd).enumerate() {
        prefetch(vals, (p + AHEAD) * hd);
        for (h, o) in out.chunks_exact_mut(hd).enumerate() {
            let w = scores[h * len + p];
            for (o, x) in o.iter_mut().zip(v) {
                *o += w * x;
            }
        }
    }
}

/// Softmax of `row[..visible] * scale` in place; the positions after `visible` (the future)
/// get 0.
pub fn softmax_prefix(row: &mut [f32], visible: usize, scale: f32) {
    let (seen, future) = row.split_at_mut(visible);
    future.fill(0.0);
    let max = seen.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
    let mut sum = 0f32;
    for v in seen.iter_mut() {
        *v = (*v * scale - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in seen.iter_mut() {
        *v *= inv;
    }
}

/// RMS norm of each row of `x` (rows as wide as `w`), scaled by `w`, into `out`.
pub fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    for (src, dst) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let mean = dot(src, src) / dim as f32;
        let inv = 1.0 / (mean + eps).sqrt();
        for ((d, s), g) in dst.iter_mut().zip(src).zip(w) {
            *d = s * inv * g;
        }
    }
}

/// SiLU(gate) * up for rows laid out `[gate (hidden) | up (hidden)]`.
pub fn swiglu_rows(gu: &[f32], hidden: usize, out: &mut [f32]) {
    for (src, dst) in gu.chunks_exact(2 * hidden).zip(out.chunks_exact_mut(hidden)) {
        let (gate, up) = src.split_at(hidden);
        for ((d, g), u) in dst.iter_mut().zip(gate).zip(up) {
            *d = g / (1.0 + (-g).exp()) * u;
        }
    }
}

/// `x += y`, element by element.
pub fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Rotates interleaved pairs of every head of `row` (heads `2 * cos.len()` wide) by the angles
/// whose cosines and sines are given (llama.cpp's "normal" rope, which llama GGUF files use).
pub fn rope(row: &mut [f32], cos: &[f32], sin: &[f32]) {
    for head in row.chunks_exact_mut(2 * cos.len()) {
        for (i, pair) in head.chunks_exact_mut(2).enumerate() {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * cos[i] - b * sin[i];
            pair[1] = a * sin[i] + b * cos[i];
        }
    }
}

/// [`q8::q8_rows`] with f32 weights and activations, with [`dot`].
pub fn f32_rows(values: &[f32], cols: usize, x: &[f32], n: usize, first: usize, dst: &mut [f32]) {
    for (j, col) in dst.chunks_exact_mut(n).enumerate() {
        let wr = &values[(first + j) * cols..(first + j + 1) * cols];
        for (r, v) in col.iter_mut().enumerate() {
            *v = dot(wr, &x[r * cols..(r + 1) * cols]);
        }
    }
}

/// `out (n x rows)` from the column-major `t (rows x n)`.
pub fn transpose_into(t: &[f32], rows: usize, n: usize, out: &mut [f32]) {
    if n == 1 {
        out[..rows].copy_from_slice(&t[..rows]);
        return;
    }
    for j in 0..rows {
        for r in 0..n {
            out[r * rows + j] = t[j * n + r];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vector_dot_product_matches_the_scalar_order() {
        let a: Vec<f32> = (0..71).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..71).map(|i| (i as f32 * 0.91).cos()).collect();
        assert_eq!(dot(&a, &b).to_bits(), dot_lanes(&a, &b).to_bits());
        let plain: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - plain).abs() < 1e-4);
    }

    #[test]
    fn a_group_of_heads_gets_the_bits_of_each_head_alone() {
        let (hd, len, heads) = (64, 37, 3);
        let wave = |n: usize, f: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * f).sin()).collect() };
        let (q, keys, vals) = (wave(heads * hd, 0.37), wave(len * hd, 0.11), wave(len * hd, 0.53));
        let mut together = vec![0f32; heads * hd];
        attend(&q, &keys, &vals, hd, 0.125, &mut together);
        for h in 0..heads {
            let qh = &q[h * hd..(h + 1) * hd];
            let mut scores: Vec<f32> = keys.chunks_exact(hd).map(|k| dot(qh, k)).collect();
            softmax_prefix(&mut scores, len, 0.125);
            let mut alone = vec![0f32; hd];
            for (p, v) in scores.iter().zip(vals.chunks_exact(hd)) {
                for (o, x) in alone.iter_mut().zip(v) {
                    *o += p * x;
                }
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&together[h * hd..(h + 1) * hd]), bits(&alone), "head {h}");
            let mut scalar = vec![0f32; hd];
            attend_lanes(qh, &keys, &vals, hd, 0.125, &mut scalar);
            assert_eq!(bits(&scalar), bits(&alone), "head {h}, scalar");
        }
    }

    #[test]
    fn softmax_hides_the_future_and_sums_to_one() {
        let mut row = vec![1.0, 2.0, 3.0, 100.0];
        softmax_prefix(&mut row, 3, 1.0);
        assert_eq!(row[3], 0.0);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(row[2] > row[1] && row[1] > row[0]);
    }

    #[test]
    fn rope_at_angle_zero_changes_nothing_and_a_quarter_turn_swaps() {
        let mut row = vec![1.0, 2.0, 3.0, 4.0];
        rope(&mut row, &[1.0, 1.0], &[0.0, 0.0]);
        assert_eq!(row, [1.0, 2.0, 3.0, 4.0]);
        rope(&mut row, &[0.0, 0.0], &[1.0, 1.0]);
        assert_eq!(row, [-2.0, 1.0, -4.0, 3.0]);
    }

    #[test]
    fn a_transpose_puts_each_value_in_place() {
        let t = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 3 rows x 2
        let mut out = [0.0; 6];
        transpose_into(&t, 3, 2, &mut out);
        assert_eq!(out, [1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
    }
}
