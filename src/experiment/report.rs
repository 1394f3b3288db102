//! The experiment report, in Markdown (`report.md`) and as one self-contained HTML page
//! (`report.html`, inline CSS and SVG charts of each metric's mean and 95% CI, no scripts).
//! Variants appear under their labels; a blinded report reveals the labels in its last section.
//!
//! The HTML page is a maud template on the run export's document (see [`crate::export::html`]
//! for why maud): every value is escaped unless marked `PreEscaped` (only plotters' SVG).

use std::fmt::Write;

use maud::{Markup, PreEscaped, html};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{ExperimentSummary, METRICS, fmt_num, fmt_p};
use crate::analysis::stats::{Summary, effect_size_label};
use crate::export::escape_markdown;
use crate::export::html::{document, inline_svg};

fn ci(s: &Summary) -> String {
    match (s.ci95_low, s.ci95_high) {
        (Some(l), Some(h)) => format!("{} .. {}", fmt_num(l), fmt_num(h)),
        _ => "n/a".into(),
    }
}

fn stat(t: &Option<crate::analysis::stats::TestResult>) -> (String, String) {
    match t {
        Some(t) => (t.statistic.map_or("∞".into(), |v| format!("{v:.3}")), fmt_p(t.p_value)),
        None => ("n/a".into(), "n/a".into()),
    }
}

/// The smallest two-sided exact Mann-Whitney p-value for samples of these sizes: `2 / C(n1+n2, n1)`.
fn min_mw_p(n1: usize, n2: usize) -> f64 {
    let mut c = 1.0f64;
    for i in 0..n1 {
        c = c * (n2 + n1 - i) as f64 / (i + 1) as f64;
    }
    (2.0 / c).min(1.0)
}

fn intro_lines(s: &ExperimentSummary) -> Vec<String> {
    let mut v = vec![
        format!("experiment {}, seed {}", s.id, s.seed),
        format!(
            "{} variant(s) × {} run(s), {} at a time; personas: {}",
            s.variants.len(),
            s.runs_per_variant,
            s.parallelism,
            match s.assignment {
                crate::scenario::Assignment::AllPersonas => "every variant uses all of the scenario's personas",
                crate::scenario::Assignment::Random => "dealt at random to the variants (each persona in one variant)",
            }
        ),
    ];
    if s.blind {
        v.push("variants are blinded: their labels are revealed in the last section".into());
    }
    if s.synthetic {
        v.push(
            "the text of these runs is synthetic (simulated provider); its statistics describe the simulator".into(),
        );
    }
    if s.stopped {
        v.push(format!(
            "the experiment was stopped early: {} of {} runs were made (runs stopped mid-way count as failed)",
            s.runs.len(),
            s.runs_per_variant * s.variants.len()
        ));
    }
    v
}

fn small_sample_note(s: &ExperimentSummary) -> Option<String> {
    let n = s.runs_per_variant;
    let p = min_mw_p(n, n);
    (p >= super::ALPHA).then(|| {
        format!(
            "With {n} run(s) per variant the smallest possible two-sided Mann-Whitney p is {}, so that test cannot reach p < 0.05; run {} or more per variant for it.",
            fmt_p(p),
            (1..).find(|k| min_mw_p(*k, *k) < super::ALPHA).unwrap_or(4)
        )
    })
}

/// `report.md`.
pub fn markdown(s: &ExperimentSummary) -> String {
    let e = escape_markdown;
    let mut m = String::with_capacity(8192);
    let _ = writeln!(m, "# Experiment: {}\n", e(&s.scenario));
    for l in intro_lines(s) {
        let _ = writeln!(m, "- {}", e(&l));
    }
    md_variants(&mut m, s);
    md_results(&mut m, s);
    md_comparisons(&mut m, s);
    md_findings(&mut m, s);
    md_extraction(&mut m, s);
    md_runs(&mut m, s);
    m
}

/// The variants and what ran of each.
fn md_variants(m: &mut String, s: &ExperimentSummary) {
    let e = escape_markdown;
    m.push_str("\n## Variants\n\n| variant | runs | completed | personas |\n| --- | ---: | ---: | --- |\n");
    for v in &s.variants {
        let _ = writeln!(m, "| **{}** | {} | {} | {} |", e(&v.label), v.runs, v.succeeded, e(&v.personas.join(", ")));
    }
}

/// Each metric per variant: mean, spread and confidence interval.
fn md_results(m: &mut String, s: &ExperimentSummary) {
    let e = escape_markdown;
    m.push_str("\n## Results per variant (mean, standard deviation, 95% confidence interval)\n");
    for (key, desc, unit) in METRICS {
        let unit = if unit.is_empty() { String::new() } else { format!(" ({unit})") };
        let _ = writeln!(
            m,
            "\n### {}{unit}\n\n| variant | n | mean | std dev | 95% CI | min | max |\n| --- | ---: | ---: | ---: | --- | ---: | ---: |",
            e(desc)
        );
        for v in &s.variants {
            let x = v.metrics.get(*key).cloned().unwrap_or_default();
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} |",
                e(&v.label),
                x.n,
                fmt_num(x.mean),
                fmt_num(x.std_dev),
                ci(&x),
                fmt_num(x.min),
                fmt_num(x.max)
            );
        }
    }
}

/// Each pair of variants, metric by metric, with the tests and effect sizes.
fn md_comparisons(m: &mut String, s: &ExperimentSummary) {
    let e = escape_markdown;
    m.push_str("\n## Comparisons\n");
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for c in &s.comparisons {
        if !pairs.contains(&(c.a.as_str(), c.b.as_str())) {
            pairs.push((c.a.as_str(), c.b.as_str()));
        }
    }
    for (a, b) in pairs {
        let _ = writeln!(
            m,
            "\n### {} vs {}\n\n| metric | mean {} | mean {} | Welch t | p | Mann-Whitney U | p | Cohen's d | |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            e(a),
            e(b),
            e(a),
            e(b)
        );
        for c in s.comparisons.iter().filter(|c| c.a == a && c.b == b) {
            let (wt, wp) = stat(&c.welch);
            let (mu, mp) = stat(&c.mann_whitney);
            let d = c.cohens_d.map_or("∞".to_string(), |d| format!("{d:.2}"));
            let desc = METRICS.iter().find(|(k, _, _)| *k == c.metric).map_or(c.metric.as_str(), |x| x.1);
            let _ = writeln!(
                m,
                "| {} | {} | {} | {wt} | {wp} | {mu} | {mp} | {d} ({}) | {} |",
                e(desc),
                fmt_num(c.mean_a),
                fmt_num(c.mean_b),
                effect_size_label(c.cohens_d),
                if c.significant { "**p < 0.05**" } else { "" }
            );
        }
    }
}

/// What reached significance, and a note when samples are small.
fn md_findings(m: &mut String, s: &ExperimentSummary) {
    let e = escape_markdown;
    m.push_str("\n## Findings\n\n");
    if s.findings.is_empty() {
        m.push_str("No difference reached p < 0.05.\n");
    }
    for f in &s.findings {
        let _ = writeln!(m, "- {}", e(f));
    }
    if let Some(n) = small_sample_note(s) {
        let _ = writeln!(m, "\n_{}_", e(&n));
    }
}

/// The extracted answers, counted per variant.
fn md_extraction(m: &mut String, s: &ExperimentSummary) {
    let e = escape_markdown;
    if !s.extract.is_empty() {
        m.push_str("\n## Extraction (answers of every persona after each run)\n");
        for v in &s.variants {
            let _ = writeln!(m, "\n### {}\n", e(&v.label));
            for f in &v.extraction {
                let counts: Vec<String> = f.counts.iter().map(|(c, n)| format!("{} {n}", e(c))).collect();
                let invalid = if f.invalid > 0 { format!("; no valid answer: {}", f.invalid) } else { String::new() };
                let _ = writeln!(
                    m,
                    "- **{}**: {}{invalid}",
                    e(&f.field),
                    if counts.is_empty() { "-".into() } else { counts.join(", ") }
                );
            }
        }
    }
}

/// Every run, and the blinding key when labels were blinded.
fn md_runs(m: &mut String, s: &ExperimentSummary) {
    let e = escape_markdown;
    m.push_str("\n## Runs\n\n| run | seed | run id | completed | messages | error |\n| --- | ---: | --- | --- | ---: | --- |\n");
    for r in &s.runs {
        let _ = writeln!(
            m,
            "| {}-{} | {} | `{}` | {} | {} | {} |",
            e(&r.label),
            r.k,
            r.run_seed,
            r.run_id,
            if r.success { "yes" } else { "no" },
            r.metrics.get("messages").copied().unwrap_or(0.0),
            e(r.error.as_deref().unwrap_or(""))
        );
    }
    if s.blind {
        m.push_str("\n## Unblinding\n\n| label | variant |\n| --- | --- |\n");
        for (l, v) in &s.labels {
            let _ = writeln!(m, "| {} | {} |", e(l), e(v));
        }
    }
}

fn metric_chart(s: &ExperimentSummary, key: &str, desc: &str) -> Option<String> {
    let rows: Vec<(String, Summary)> =
        s.variants.iter().map(|v| (v.label.clone(), v.metrics.get(key).cloned().unwrap_or_default())).collect();
    let top = rows.iter().map(|(_, x)| x.ci95_high.unwrap_or(x.mean).max(x.max)).fold(0.0f64, f64::max);
    let bottom = rows.iter().map(|(_, x)| x.ci95_low.unwrap_or(x.mean).min(x.min)).fold(0.0f64, f64::min);
    let pad = ((top - bottom).abs() * 0.15).max(1e-6);
    let (lo, hi) = (if bottom < 0.0 { bottom - pad } else { 0.0 }, top + pad);
    let n = rows.len().max(1) as i32;
    let mut svg = String::new();
    let res: Result<(), Box<dyn std::error::Error>> = (|| {
        let root = SVGBackend::with_string(&mut svg, ((n as u32 * 110 + 160).max(360), 300)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(desc, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d((0..(n - 1).max(1)).into_segmented(), lo..hi)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(rows.len().max(1))
            .x_desc("Variant")
            .y_desc("Mean and 95% CI")
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    rows.get(*i as usize).map(|r| r.0.clone()).unwrap_or_default()
                }
                SegmentValue::Last => String::new(),
            })
            .draw()?;
        chart.draw_series(rows.iter().enumerate().map(|(i, (_, x))| {
            let i = i as i32;
            let mut r = Rectangle::new(
                [(SegmentValue::Exact(i), 0.0f64.max(lo)), (SegmentValue::Exact(i + 1), x.mean)],
                RGBColor(0, 114, 178).mix(0.75).filled(),
            );
            r.set_margin(0, 0, 18, 18);
            r
        }))?;
        for (i, (_, x)) in rows.iter().enumerate() {
            if let (Some(l), Some(h)) = (x.ci95_low, x.ci95_high) {
                let c = SegmentValue::CenterOf(i as i32);
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(c.clone(), l), (c, h)],
                    BLACK.stroke_width(2),
                )))?;
            }
            chart.draw_series(std::iter::once(Text::new(
                fmt_num(x.mean),
                (SegmentValue::CenterOf(i as i32), x.mean),
                ("sans-serif", 12).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Bottom)),
            )))?;
        }
        root.present()?;
        Ok(())
    })();
    res.ok().map(|_| svg)
}

/// `report.html`.
pub fn html(s: &ExperimentSummary) -> String {
    let body = html! {
        h1 { "Experiment: " (s.scenario) }
        ul { @for l in intro_lines(s) { li { (l) } } }
        h2 { "Variants" }
        table {
            tr { th { "variant" } th { "runs" } th { "completed" } th { "personas" } }
            @for v in &s.variants {
                tr {
                    td { strong { (v.label) } }
                    td.n { (v.runs) }
                    td.n { (v.succeeded) }
                    td { (v.personas.join(", ")) }
                }
            }
        }
        h2 { "Findings" }
        ul {
            @if s.findings.is_empty() { li { "No difference reached p < 0.05." } }
            @for f in &s.findings { li.sig { (f) } }
        }
        @if let Some(n) = small_sample_note(s) { p.note { (n) } }
        h2 { "Results per variant" }
        @for (key, desc, unit) in METRICS { (metric_section(s, key, desc, unit)) }
        (comparisons_table(s))
        @if !s.extract.is_empty() { (extraction(s)) }
        (runs_table(s))
        @if s.blind {
            h2 { "Unblinding" }
            table {
                tr { th { "label" } th { "variant" } }
                @for (l, v) in &s.labels { tr { td { (l) } td { (v) } } }
            }
        }
    };
    document(&format!("Experiment: {}", s.scenario), body).into_string()
}

/// One metric: its chart and a table of each variant's summary.
fn metric_section(s: &ExperimentSummary, key: &str, desc: &str, unit: &str) -> Markup {
    let title = if unit.is_empty() { desc.to_string() } else { format!("{desc} ({unit})") };
    html! {
        h3 { (title) }
        @if let Some(svg) = metric_chart(s, key, &title) {
            // plotters escapes the labels it writes into the SVG.
            figure { (PreEscaped(inline_svg(&svg))) }
        }
        table {
            tr { @for c in ["variant", "n", "mean", "std dev", "95% CI", "min", "max"] { th { (c) } } }
            @for v in &s.variants {
                @let x = v.metrics.get(key).cloned().unwrap_or_default();
                tr {
                    td { (v.label) }
                    td.n { (x.n) }
                    td.n { (fmt_num(x.mean)) }
                    td.n { (fmt_num(x.std_dev)) }
                    td.n { (ci(&x)) }
                    td.n { (fmt_num(x.min)) }
                    td.n { (fmt_num(x.max)) }
                }
            }
        }
    }
}

/// Every pair of variants on every metric, significant rows marked.
fn comparisons_table(s: &ExperimentSummary) -> Markup {
    const COLUMNS: [&str; 9] =
        ["variants", "metric", "mean", "mean", "Welch t", "p", "Mann-Whitney U", "p", "Cohen's d"];
    html! {
        h2 { "Comparisons" }
        table {
            tr { @for c in COLUMNS { th { (c) } } }
            @for c in &s.comparisons {
                @let (wt, wp) = stat(&c.welch);
                @let (mu, mp) = stat(&c.mann_whitney);
                @let d = c.cohens_d.map_or("∞".to_string(), |d| format!("{d:.2}"));
                @let desc = METRICS.iter().find(|(k, _, _)| *k == c.metric).map_or(c.metric.as_str(), |x| x.1);
                tr class=[c.significant.then_some("sig")] {
                    td { (c.a) " vs " (c.b) }
                    td { (desc) }
                    td.n { (fmt_num(c.mean_a)) }
                    td.n { (fmt_num(c.mean_b)) }
                    td.n { (wt) }
                    td.n { (wp) }
                    td.n { (mu) }
                    td.n { (mp) }
                    td.n { (d) " (" (effect_size_label(c.cohens_d)) ")" }
                }
            }
        }
    }
}

/// Each variant's extraction answers, counted per field.
fn extraction(s: &ExperimentSummary) -> Markup {
    html! {
        h2 { "Extraction" }
        @for v in &s.variants {
            h3 { (v.label) }
            table {
                tr { th { "field" } th { "answers" } th { "no valid answer" } }
                @for f in &v.extraction {
                    @let counts = f.counts.iter().map(|(c, n)| format!("{c} {n}")).collect::<Vec<_>>().join(", ");
                    tr { td { (f.field) } td { (counts) } td.n { (f.invalid) } }
                }
            }
        }
    }
}

/// Every run: label, seed, id, outcome.
fn runs_table(s: &ExperimentSummary) -> Markup {
    html! {
        h2 { "Runs" }
        table {
            tr { @for c in ["run", "seed", "run id", "completed", "messages", "error"] { th { (c) } } }
            @for r in &s.runs {
                tr {
                    td { (r.label) "-" (r.k) }
                    td.n { (r.run_seed) }
                    td { code { (r.run_id) } }
                    td { (if r.success { "yes" } else { "no" }) }
                    td.n { (r.metrics.get("messages").copied().unwrap_or(0.0)) }
                    td { (r.error.as_deref().unwrap_or("")) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_mann_whitney_p() {
        assert!((min_mw_p(3, 3) - 0.1).abs() < 1e-12);
        assert!((min_mw_p(4, 4) - 2.0 / 70.0).abs() < 1e-12);
    }
}
