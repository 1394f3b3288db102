//! 8-bit rows (llama.cpp's Q8_0: per 32 values one scale and 32 signed bytes) and their
//! products, for writing replies one token per sequence at a time.
//!
//! The bits are those of candle's AVX2 `vec_dot` for Q8_0 x Q8_0 (eight lanes, each the
//! integer sum of four byte products, one fused multiply-add per block with the product of
//! the two scales, then the lanes added in one fixed order), on every CPU: the scalar path
//! repeats the same lanes. What is faster than calling that `vec_dot` once per output:
//! - a tile of weight rows times a tile of activation rows shares every load (a weight row's
//!   bytes are loaded once for up to four sequences of a batch, and one activation for four
//!   rows when decoding alone), with independent accumulators instead of one dependency chain;
//! - scales are kept as `f32` (the value of their `f16`), not converted per block;
//! - on CPUs with AVX-VNNI or AVX-512 VNNI one instruction makes each lane's integer sum
//!   (exact: the AVX2 path's 16-bit pairs never saturate, and the VNNI path's offset sums fit
//!   easily in 32 bits).
//!
//! Bytes lie within -127..=127, except in a block whose largest magnitude is so small (below
//! about 4e-37) that its reciprocal overflows: there -128 can occur, but the block's `f16`
//! scale is 0, so every path multiplies its sum by 0 and the bits still agree.

use half::f16;

/// Values per block.
pub const BLOCK: usize = 32;

/// How far ahead of use the weights' bytes are fetched. The hardware prefetcher alone left a
/// product of four sequences at half the memory bandwidth (measured on an AMD EPYC: 38 GMAC/s
/// per core from memory without, 65 with 8 KiB; 30 against 18 for one sequence).
const PREFETCH_BYTES: usize = 8192;

/// Rows of `cols` values (a multiple of [`BLOCK`]) as 8-bit blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct Q8 {
    cols: usize,
    /// One scale per block, row after row: the `f32` value of the `f16` scale.
    d: Vec<f32>,
    /// `BLOCK` bytes per block (see the module's note on their range).
    qs: Vec<i8>,
    /// Activations only: per block and lane of four bytes, -128 times their sum (the VNNI
    /// path multiplies the weights' bytes offset by 128 and starts each lane from this).
    offsets: Vec<i32>,
}

impl Q8 {
    /// Weight rows, quantized once when the model loads: the rows of `x` (each `cols` wide, a
    /// multiple of [`BLOCK`]) as llama.cpp and candle quantize them. Per block the scale is the
    /// largest magnitude / 127 (rounded to `f16`), and each value `round(x / scale)` with the
    /// unrounded scale.
    pub fn weights(x: &[f32], cols: usize) -> Q8 {
        assert!(cols.is_multiple_of(BLOCK) && cols > 0, "Q8 rows must be a positive multiple of {BLOCK} wide");
        let blocks = x.len() / BLOCK;
        let mut d = Vec::with_capacity(blocks);
        let mut qs = vec![0i8; blocks * BLOCK];
        for (src, dst) in x.chunks_exact(BLOCK).zip(qs.chunks_exact_mut(BLOCK)) {
            let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
            d.push(f16::from_f32(scale).to_f32());
            for (q, v) in dst.iter_mut().zip(src) {
                *q = (v * inv).round() as i8;
            }
        }
        Q8 { cols, d, qs, offsets: Vec::new() }
    }

    /// Activation rows, quantized for each product as [`Q8::weights`] does, with the sums the
    /// VNNI path starts from.
    pub fn activations(x: &[f32], cols: usize) -> Q8 {
        let mut q = Q8::weights(x, cols);
        q.offsets = q.qs.chunks_exact(4).map(|b| -128 * b.iter().map(|&v| i32::from(v)).sum::<i32>()).collect();
        q
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.d.len() * BLOCK / self.cols
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.qs.len() + 4 * self.d.len()
    }

    fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK
    }
}

/// Weight rows `first..` (as many as `dst` holds, `n = x.rows()` values each) times the
/// activation rows `x`: `dst[j * n + r] = w[first + j] . x[r]`. Each output element has the
/// same bits whatever the tile, the batch or the CPU.
pub fn q8_rows(w: &Q8, x: &Q8, first: usize, dst: &mut [f32]) {
    assert_eq!(w.cols, x.cols, "weight and activation rows differ in width");
    assert_eq!(x.offsets.len(), x.qs.len() / 4, "activation rows come from Q8::activations");
    let n = x.rows();
    assert!(n > 0 && dst.len().is_multiple_of(n), "the output holds whole rows of {n} values");
    assert!(first <= w.rows() && dst.len() / n <= w.rows() - first, "rows outside the weight");
    #[cfg(target_arch = "x86_64")]
    if let Some(level) = simd::level() {
        // SAFETY: the CPU has the features of `level` (checked at run time).
        unsafe { simd::rows(level, w, x, first, dst) };
        return;
    }
    let kb = w.blocks_per_row();
    for (j, col) in dst.chunks_exact_mut(n).enumerate() {
        for (r, v) in col.iter_mut().enumerate() {
            *v = dot_lanes(w, first + j, x, r, kb);
        }
    }
}

/// One output element in the AVX2 path's lanes and order, in scalar code.
fn dot_lanes(w: &Q8, wr: usize, x: &Q8, xr: usize, kb: usize) -> f32 {
    let mut acc = [0f32; 8];
    for b in 0..kb {
        let (wb, xb) = (wr * kb + b, xr * kb + b);
        let d = w.d[wb] * x.d[xb];
        let wq = &w.qs[wb * BLOCK..(wb + 1) * BLOCK];
        let xq = &x.qs[xb * BLOCK..(xb + 1) * BLOCK];
        for (l, a) in acc.iter_mut().enumerate() {
            let q: i32 = (4 * l..4 * l + 4).map(|i| i32::from(wq[i]) * i32::from(xq[i])).sum();
            *a = d.mul_add(q as f32, *a);
        }
    }
    hsum(acc)
}

/// The lanes added as `_mm256_extractf128_ps` / `movehl` / `movehdup` add them.
fn hsum(a: [f32; 8]) -> f32 {
    let r = [a[4] + a[0], a[5] + a[1], a[6] + a[2], a[7] + a[3]];
    (r[0] + r[2]) + (r[1] + r[3])
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::Q8;
    use std::sync::OnceLock;

    /// What the CPU offers beyond AVX2 and FMA.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub(super) enum Level {
        Avx2,
        /// AVX-512 VNNI on 256-bit registers (Ice Lake and later servers, AMD Zen 4).
        Avx512Vnni,
        /// The VEX-encoded AVX-VNNI (Alder Lake and later, AMD Zen 5).
        AvxVnni,
    }

    /// The level the products run at: the best this CPU offers.
    pub(super) fn level() -> Option<Level> {
        static LEVEL: OnceLock<Option<Level>> = OnceLock::new();
        *LEVEL.get_or_init(|| levels().last().copied())
    }

    /// Every level this CPU can run, best last (the tests try each).
    pub(super) fn levels() -> Vec<Level> {
        let mut all = Vec::new();
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            all.push(Level::Avx2);
            if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
                all.push(Level::Avx512Vnni);
            }
            if is_x86_feature_detected!("avxvnni") {
                all.push(Level::AvxVnni);
            }
        }
        all
    }

    /// # Safety
    /// The CPU must have the features of `level`.
    pub(super) unsafe fn rows(level: Level, w: &Q8, x: &Q8, first: usize, dst: &mut [f32]) {
        unsafe {
            match level {
                Level::Avx2 => avx2::rows(w, x, first, dst),
                Level::Avx512Vnni => vnni512::rows(w, x, first, dst),
                Level::AvxVnni => vnni::rows(w, x, first, dst),
            }
        }
    }

    /// The same kernel compiled for a set of CPU features (every function carries them, so
    /// the intrinsics inline). Each lane's integer sum of four byte products is made from
    /// `$prep(weight bytes)` once per weight block and `$pair(prepared, weight bytes,
    /// activation bytes, activation offsets)` per pair of blocks.
    macro_rules! kernel {
        ($name:ident, $features:literal, |$w:ident| $prep:expr, |$pw:ident, $wv:ident, $x:ident, $off:ident| $pair:expr) => {
            mod $name {
                use super::super::{BLOCK, Q8};
                use std::arch::x86_64::*;

                #[target_feature(enable = $features)]
                #[inline]
                fn prep($w: __m256i) -> __m256i {
                    $prep
                }

                #[target_feature(enable = $features)]
                #[inline]
                #[allow(unused_variables)]
                fn pair($pw: __m256i, $wv: __m256i, $x: __m256i, $off: __m256i) -> __m256i {
                    $pair
                }

                /// Tiles: four weight rows per activation row when decoding one sequence, two
                /// weight rows by up to four sequences in a batch.
                #[target_feature(enable = $features)]
                pub(in super::super) unsafe fn rows(w: &Q8, x: &Q8, first: usize, dst: &mut [f32]) {
                    let n = x.rows();
                    let rows = dst.len() / n;
                    let mut j = 0;
                    unsafe {
                        if n == 1 {
                            while j + 4 <= rows {
                                let t = tile::<4, 1>(w, first + j, x, 0);
                                for i in 0..4 {
                                    dst[j + i] = t[i][0];
                                }
                                j += 4;
                            }
                        } else {
                            while j + 2 <= rows {
                                cols::<2>(w, first + j, x, &mut dst[j * n..(j + 2) * n]);
                                j += 2;
                            }
                        }
                        while j < rows {
                            cols::<1>(w, first + j, x, &mut dst[j * n..(j + 1) * n]);
                            j += 1;
                        }
                    }
                }

                /// `R` weight rows from `wr` times every activation row, four at a time.
                #[target_feature(enable = $features)]
                #[inline]
                unsafe fn cols<const R: usize>(w: &Q8, wr: usize, x: &Q8, dst: &mut [f32]) {
                    let n = x.rows();
                    let mut r = 0;
                    macro_rules! put {
                        ($c:literal) => {{
                            let t = unsafe { tile::<R, $c>(w, wr, x, r) };
                            for i in 0..R {
                                for c in 0..$c {
                                    dst[i * n + r + c] = t[i][c];
                                }
                            }
                            r += $c;
                        }};
                    }
                    while r + 4 <= n {
                        put!(4);
                    }
                    match n - r {
                        3 => put!(3),
                        2 => put!(2),
                        1 => put!(1),
                        _ => {}
                    }
                    debug_assert_eq!(r, n);
                }

                /// `R` weight rows from `wr` times `C` activation rows from `xr`.
                #[target_feature(enable = $features)]
                #[inline]
                unsafe fn tile<const R: usize, const C: usize>(w: &Q8, wr: usize, x: &Q8, xr: usize) -> [[f32; C]; R] {
                    let kb = w.blocks_per_row();
                    assert!((wr + R) * kb <= w.d.len() && (xr + C) * kb <= x.d.len());
                    let mut out = [[0f32; C]; R];
                    unsafe {
                        let mut acc = [[_mm256_setzero_ps(); C]; R];
                        let wq = w.qs.as_ptr();
                        let xq = x.qs.as_ptr();
                        let xo = x.offsets.as_ptr();
                        for b in 0..kb {
                            let mut wv = [_mm256_setzero_si256(); R];
                            let mut pw = [_mm256_setzero_si256(); R];
                            let mut wd = [_mm256_setzero_ps(); R];
                            for i in 0..R {
                                let wb = (wr + i) * kb + b;
                                wv[i] = _mm256_loadu_si256(wq.add(wb * BLOCK) as *const __m256i);
                                // The weights stream from memory: ask for them ahead of use.
                                _mm_prefetch::<_MM_HINT_T0>(
                                    wq.wrapping_add(wb * BLOCK + super::super::PREFETCH_BYTES) as *const i8
                                );
                                pw[i] = prep(wv[i]);
                                wd[i] = _mm256_set1_ps(*w.d.get_unchecked(wb));
                            }
                            for c in 0..C {
                                let xb = (xr + c) * kb + b;
                                let xv = _mm256_loadu_si256(xq.add(xb * BLOCK) as *const __m256i);
                                let off = _mm256_loadu_si256(xo.add(xb * 8) as *const __m256i);
                                let xd = _mm256_set1_ps(*x.d.get_unchecked(xb));
                                for i in 0..R {
                                    let q = _mm256_cvtepi32_ps(pair(pw[i], wv[i], xv, off));
                                    // The product of the two scales in every lane: the bits of
                                    // the scalar product.
                                    let d = _mm256_mul_ps(wd[i], xd);
                                    acc[i][c] = _mm256_fmadd_ps(d, q, acc[i][c]);
                                }
                            }
                        }
                        for i in 0..R {
                            for c in 0..C {
                                out[i][c] = hsum(acc[i][c]);
                            }
                        }
                    }
                    out
                }

                /// The lanes added in candle's order.
                #[target_feature(enable = $features)]
                #[inline]
                fn hsum(x: __m256) -> f32 {
                    let res = _mm256_extractf128_ps(x, 1);
                    let res = _mm_add_ps(res, _mm256_castps256_ps128(x));
                    let res = _mm_add_ps(res, _mm_movehl_ps(res, res));
                    let res = _mm_add_ss(res, _mm_movehdup_ps(res));
                    _mm_cvtss_f32(res)
                }
            }
        };
    }

    // AVX2: |w| times x with w's sign, in 16-bit pairs (at most 2 * 127 * 127, no saturation),
    // then pairs of pairs.
    kernel!(avx2, "avx2,fma", |w| _mm256_sign_epi8(w, w), |aw, w, x, off| {
        _mm256_madd_epi16(_mm256_set1_epi16(1), _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w)))
    });
    // VNNI: (w + 128) as unsigned bytes times x in one instruction, starting from -128 * sum(x).
    kernel!(vnni, "avx2,fma,avxvnni", |w| _mm256_xor_si256(w, _mm256_set1_epi8(-128)), |wu, w, x, off| {
        _mm256_dpbusd_avx_epi32(off, wu, x)
    });
    // The same with AVX-512 VNNI's encoding of the instruction, on 256-bit registers.
    kernel!(
        vnni512,
        "avx2,fma,avx512f,avx512vl,avx512vnni",
        |w| _mm256_xor_si256(w, _mm256_set1_epi8(-128)),
        |wu, w, x, off| _mm256_dpbusd_epi32(off, wu, x)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::k_quants::{BlockQ8_0, GgmlType};

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 * 0.7311 + seed).sin() * 3.0) * (1.0 + (i % 7) as f32)).collect()
    }

    fn candle_dot(w: &[f32], x: &[f32]) -> f32 {
        let q = |v: &[f32]| {
            let mut b = vec![BlockQ8_0::zeros(); v.len() / BLOCK];
            BlockQ8_0::from_float(v, &mut b);
            b
        };
        BlockQ8_0::vec_dot(w.len(), &q(w), &q(x))
    }

    #[test]
    fn every_tile_and_every_path_give_candles_bits() {
        // candle's own `vec_dot` has these bits only on its AVX2 path; elsewhere the scalar
        // lanes stand for them.
        #[cfg(target_arch = "x86_64")]
        let candle_avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let candle_avx2 = false;
        let cols = 96;
        let rows = 11;
        let wv = values(rows * cols, 0.3);
        let w = Q8::weights(&wv, cols);
        for n in 1..=6 {
            let xv = values(n * cols, 1.7 + n as f32);
            let x = Q8::activations(&xv, cols);
            let mut want = vec![0f32; (rows - 1) * n];
            for j in 0..rows - 1 {
                for r in 0..n {
                    want[j * n + r] = dot_lanes(&w, j + 1, &x, r, cols / BLOCK);
                    if candle_avx2 {
                        let theirs = candle_dot(&wv[(j + 1) * cols..(j + 2) * cols], &xv[r * cols..(r + 1) * cols]);
                        assert_eq!(want[j * n + r].to_bits(), theirs.to_bits(), "scalar row {j}, sequence {r} of {n}");
                    }
                }
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let mut dst = vec![0f32; (rows - 1) * n];
            q8_rows(&w, &x, 1, &mut dst);
            assert_eq!(bits(&dst), bits(&want), "{n} sequence(s)");
            #[cfg(target_arch = "x86_64")]
            for level in simd::levels() {
                let mut dst = vec![0f32; (rows - 1) * n];
                // SAFETY: `levels` lists only what this CPU runs.
                unsafe { simd::rows(level, &w, &x, 1, &mut dst) };
                assert_eq!(bits(&dst), bits(&want), "{level:?}, {n} sequence(s)");
            }
        }
    }

    #[test]
    #[should_panic(expected = "rows outside the weight")]
    fn rows_past_the_weight_panic_instead_of_reading_past_it() {
        let w = Q8::weights(&values(2 * 32, 0.1), 32);
        let x = Q8::activations(&values(32, 0.2), 32);
        q8_rows(&w, &x, usize::MAX, &mut [0.0]);
    }

    #[test]
    fn quantizing_matches_candle() {
        let v = values(128, 0.9);
        let q = Q8::activations(&v, 64);
        let mut b = vec![BlockQ8_0::zeros(); 4];
        BlockQ8_0::from_float(&v, &mut b);
        let mut back = vec![0f32; 128];
        BlockQ8_0::to_float(&b, &mut back);
        let ours: Vec<f32> = (0..128).map(|i| q.d[i / BLOCK] * f32::from(q.qs[i])).collect();
        assert_eq!(ours, back);
        assert_eq!(q.rows(), 2);
    }
}
