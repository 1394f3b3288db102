//! Descriptive statistics and two-sample tests for experiments: mean, standard deviation and a
//! 95% confidence interval (Student's t), Welch's t-test, the Mann-Whitney U test and Cohen's d;
//! and the Gini coefficient for participation.
//!
//! Conventions follow SciPy so results can be checked against it: sample standard deviations
//! (n - 1), Welch's test with the Welch-Satterthwaite degrees of freedom, and Mann-Whitney's U
//! of the first sample with an exact two-sided p-value when both samples have fewer than 8
//! values and no ties, else the normal approximation with tie and continuity corrections.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// Mean, spread and 95% confidence interval of one sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Values.
    pub n: usize,
    /// Arithmetic mean (0 for no values).
    pub mean: f64,
    /// Sample standard deviation (n - 1); 0 for fewer than two values.
    pub std_dev: f64,
    /// Lower end of the 95% confidence interval of the mean (Student's t); none below two values.
    pub ci95_low: Option<f64>,
    /// Upper end of the 95% confidence interval.
    pub ci95_high: Option<f64>,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// Summarises `xs` (non-finite values are ignored).
    pub fn of(xs: &[f64]) -> Self {
        let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Summary::default();
        }
        let (m, sd) = (mean(&v), std_dev(&v));
        let (lo, hi) = match ci95(&v) {
            Some((lo, hi)) => (Some(lo), Some(hi)),
            None => (None, None),
        };
        Summary {
            n: v.len(),
            mean: m,
            std_dev: sd,
            ci95_low: lo,
            ci95_high: hi,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Arithmetic mean; 0 for an empty slice.
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() { 0.0 } else { xs.iter().sum::<f64>() / xs.len() as f64 }
}

/// Sample variance (n - 1); 0 for fewer than two values.
pub fn variance(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let m = mean(xs);
    xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len() - 1) as f64
}

/// Sample standard deviation (n - 1).
pub fn std_dev(xs: &[f64]) -> f64 {
    variance(xs).sqrt()
}

/// The 95% confidence interval of the mean, `mean ± t(0.975, n-1) · sd / √n`; `None` below two
/// values.
pub fn ci95(xs: &[f64]) -> Option<(f64, f64)> {
    let n = xs.len();
    if n < 2 {
        return None;
    }
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64).ok()?.inverse_cdf(0.975);
    let half = t * std_dev(xs) / (n as f64).sqrt();
    let m = mean(xs);
    Some((m - half, m + half))
}

/// The result of a two-sample test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// The statistic (t or U); `None` when infinite (no variance in either sample but
    /// different means).
    pub statistic: Option<f64>,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Degrees of freedom, for t-tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub df: Option<f64>,
}

/// Welch's unequal-variances t-test of `a` against `b` (two-sided). `None` when a sample has
/// fewer than two values.
pub fn welch_t_test(a: &[f64], b: &[f64]) -> Option<TestResult> {
    let (na, nb) = (a.len() as f64, b.len() as f64);
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let (va, vb) = (variance(a) / na, variance(b) / nb);
    let diff = mean(a) - mean(b);
    let se2 = va + vb;
    if se2 <= 0.0 {
        // Both samples are constant: the difference is certain, or there is none.
        return Some(if diff == 0.0 {
            TestResult { statistic: Some(0.0), p_value: 1.0, df: None }
        } else {
            TestResult { statistic: None, p_value: 0.0, df: None }
        });
    }
    let t = diff / se2.sqrt();
    let df = se2 * se2 / (va * va / (na - 1.0) + vb * vb / (nb - 1.0));
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    let p = (2.0 * (1.0 - dist.cdf(t.abs()))).clamp(0.0, 1.0);
    Some(TestResult { statistic: Some(t), p_value: p, df: Some(df) })
}

/// Ranks (1-based) with ties given their average rank, and the tie-group sizes.
fn ranks(all: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..all.len()).collect();
    idx.sort_by(|&i, &j| all[i].total_cmp(&all[j]));
    let mut r = vec![0.0; all.len()];
    let mut ties = Vec::new();
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && all[idx[j + 1]] == all[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in &idx[i..=j] {
            r[*k] = avg;
        }
        if j > i {
            ties.push(j - i + 1);
        }
        i = j + 1;
    }
    (r, ties)
}

/// Number of ways to get each U (0..=n1·n2) for samples of sizes n1 and n2 without ties.
fn u_counts(n1: usize, n2: usize) -> Vec<f64> {
    // f[i][j][u]: arrangements of i values of the first sample and j of the second with U = u,
    // built by adding the largest value to one sample or the other.
    let max_u = n1 * n2;
    let mut f = vec![vec![vec![0.0f64; max_u + 1]; n2 + 1]; n1 + 1];
    for row in f.iter_mut() {
        row[0][0] = 1.0;
    }
    for cell in f[0].iter_mut() {
        cell[0] = 1.0;
    }
    for i in 1..=n1 {
        for j in 1..=n2 {
            for u in 0..=max_u {
                // The largest value in the first sample beats all j of the second.
                let a = if u >= j { f[i - 1][j][u - j] } else { 0.0 };
                let b = f[i][j - 1][u];
                f[i][j][u] = a + b;
            }
        }
    }
    f[n1][n2].clone()
}

/// The Mann-Whitney U test of `a` against `b` (two-sided); the statistic is U of `a`. `None`
/// when a sample is empty.
pub fn mann_whitney_u(a: &[f64], b: &[f64]) -> Option<TestResult> {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let all: Vec<f64> = a.iter().chain(b).copied().collect();
    let (r, ties) = ranks(&all);
    let r1: f64 = r[..n1].iter().sum();
    let u1 = r1 - (n1 * (n1 + 1)) as f64 / 2.0;
    let (f1, f2) = (n1 as f64, n2 as f64);
    let mu = f1 * f2 / 2.0;
    let p = if n1 < 8 && n2 < 8 && ties.is_empty() {
        let counts = u_counts(n1, n2);
        let total: f64 = counts.iter().sum();
        // P(U >= max(U1, U2)) doubled: the distribution is symmetric.
        let u_hi = u1.max(f1 * f2 - u1).round() as usize;
        let tail: f64 = counts[u_hi.min(counts.len() - 1)..].iter().sum();
        (2.0 * tail / total).min(1.0)
    } else {
        let n = f1 + f2;
        let tie_term: f64 = ties.iter().map(|&t| (t * t * t - t) as f64).sum::<f64>() / (n * (n - 1.0));
        let sigma = (f1 * f2 / 12.0 * ((n + 1.0) - tie_term)).sqrt();
        if sigma <= 0.0 {
            1.0
        } else {
            let z = ((u1 - mu).abs() - 0.5).max(0.0) / sigma;
            let normal = Normal::new(0.0, 1.0).ok()?;
            (2.0 * (1.0 - normal.cdf(z))).clamp(0.0, 1.0)
        }
    };
    Some(TestResult { statistic: Some(u1), p_value: p, df: None })
}

/// Cohen's d of `a` against `b` with the pooled standard deviation. `None` when a sample has
/// fewer than two values, or when both are constant but differ (d is infinite).
pub fn cohens_d(a: &[f64], b: &[f64]) -> Option<f64> {
    let (na, nb) = (a.len() as f64, b.len() as f64);
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let pooled = (((na - 1.0) * variance(a) + (nb - 1.0) * variance(b)) / (na + nb - 2.0)).sqrt();
    let diff = mean(a) - mean(b);
    if pooled == 0.0 {
        return if diff == 0.0 { Some(0.0) } else { None };
    }
    Some(diff / pooled)
}

/// Cohen's names for effect sizes: negligible (< 0.2), small, medium (≥ 0.5), large (≥ 0.8).
pub fn effect_size_label(d: Option<f64>) -> &'static str {
    match d.map(f64::abs) {
        None => "total (no overlap, no variance)",
        Some(x) if x < 0.2 => "negligible",
        Some(x) if x < 0.5 => "small",
        Some(x) if x < 0.8 => "medium",
        Some(_) => "large",
    }
}

/// The Gini coefficient of non-negative amounts: 0 when everyone has the same, towards 1 when
/// one has everything. `Σ|xi - xj| / (2 n² mean)`; 0 for no values or a zero total.
pub fn gini(xs: &[f64]) -> f64 {
    let n = xs.len();
    let total: f64 = xs.iter().sum();
    if n == 0 || total <= 0.0 {
        return 0.0;
    }
    // Sorted form of the same sum: Σ (2i - n - 1) x_(i), i = 1..n.
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let weighted: f64 = v.iter().enumerate().map(|(i, x)| (2.0 * (i as f64 + 1.0) - n as f64 - 1.0) * x).sum();
    weighted / (n as f64 * total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gini_matches_the_pairwise_definition() {
        let xs: [f64; 4] = [1.0, 2.0, 3.0, 10.0];
        let n = xs.len() as f64;
        let pair: f64 = xs.iter().flat_map(|a| xs.iter().map(move |b| (a - b).abs())).sum();
        let want = pair / (2.0 * n * n * mean(&xs));
        assert!((gini(&xs) - want).abs() < 1e-12);
        assert_eq!(gini(&[5.0, 5.0, 5.0]), 0.0);
        assert!((gini(&[0.0, 0.0, 0.0, 4.0]) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn exact_u_distribution_sums_to_the_binomial() {
        let c = u_counts(3, 4);
        assert_eq!(c.iter().sum::<f64>(), 35.0);
        assert_eq!(c[0], 1.0);
        assert_eq!(c[12], 1.0);
    }
}
