//! SVG charts of an analysis, drawn with plotters (no browser, no fonts needed: text stays
//! text in the SVG). Every chart has a title, labelled axes, persona names and, where series
//! are several, a legend.
//!
//! - `participation`: messages and words per persona (bars);
//! - `sentiment`: mean sentiment per turn, one line per persona;
//! - `turn_taking`: who speaks after whom (heatmap, persona names on both axes);
//! - `latency`: call latency histogram (the metrics' buckets, else the transcript's latencies);
//! - `tokens`: prompt and completion tokens per turn (stacked bars).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{AnalysisError, ConversationAnalysis};
use crate::record::results::SimulationResults;

/// One rendered chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// File stem (`participation`, `sentiment`, `turn_taking`, `latency`, `tokens`).
    pub name: &'static str,
    /// Its title.
    pub title: String,
    /// The SVG document.
    pub svg: String,
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

const FONT: &str = "sans-serif";

fn render(
    name: &'static str,
    title: &str,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> DrawResult,
) -> Result<Chart, AnalysisError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let res = root.fill(&WHITE).map_err(|e| e.into()).and_then(|_| draw(&root)).and_then(|_| {
            root.present()?;
            Ok(())
        });
        res.map_err(|e| AnalysisError::Chart { chart: name.to_string(), message: e.to_string() })?;
    }
    Ok(Chart { name, title: title.to_string(), svg })
}

fn color(i: usize) -> RGBColor {
    // Okabe-Ito: distinguishable for colour-blind readers.
    const C: [RGBColor; 8] = [
        RGBColor(0, 114, 178),
        RGBColor(230, 159, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(86, 180, 233),
        RGBColor(213, 94, 0),
        RGBColor(240, 228, 66),
        RGBColor(0, 0, 0),
    ];
    C[i % C.len()]
}

/// The most personas a chart shows (the most active ones; the title says so).
pub const CHART_PERSONAS: usize = 30;

/// A chart title that says when only the most active of many personas are shown.
fn of_total(title: &str, shown: usize, total: usize) -> String {
    if shown < total { format!("{title} (the {shown} most active of {total})") } else { title.to_string() }
}

/// Renders every chart.
pub fn render_all(a: &ConversationAnalysis, results: &SimulationResults) -> Result<Vec<Chart>, AnalysisError> {
    Ok(vec![participation(a)?, sentiment(a)?, turn_taking(a)?, latency(a, results)?, tokens(a)?])
}

/// Category indexes 0..=n-1 (plotters' integer ranges include their end; one category still
/// needs a non-empty range).
fn cats(n: i32) -> std::ops::Range<i32> {
    if n <= 1 { 0..1 } else { 0..n - 1 }
}

fn width_for(n: usize) -> u32 {
    (n as u32 * 120 + 200).clamp(640, 2400)
}

fn bar_panel(area: &Area<'_>, title: &str, y_desc: &str, names: &[String], values: &[f64], c: RGBColor) -> DrawResult {
    let n = names.len().max(1) as i32;
    let max = values.iter().copied().fold(0.0f64, f64::max).max(1.0) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(cats(n).into_segmented(), 0.0..max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(names.len().max(1))
        .x_desc("Persona")
        .y_desc(y_desc)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            SegmentValue::Last => String::new(),
        })
        .draw()?;
    chart.draw_series(values.iter().enumerate().map(|(i, v)| {
        let i = i as i32;
        let mut r = Rectangle::new([(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), *v)], c.filled());
        r.set_margin(0, 0, 14, 14);
        r
    }))?;
    chart.draw_series(values.iter().enumerate().map(|(i, v)| {
        Text::new(
            format!("{v:.0}"),
            (SegmentValue::CenterOf(i as i32), *v),
            (FONT, 13).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom)),
        )
    }))?;
    Ok(())
}

/// Messages and words per persona.
pub fn participation(a: &ConversationAnalysis) -> Result<Chart, AnalysisError> {
    let shown = a.most_active(CHART_PERSONAS);
    let title = "Participation: messages and words per persona";
    let heading = of_total(title, shown.len(), a.overview.personas);
    let names: Vec<String> = shown.iter().map(|p| p.name.clone()).collect();
    let msgs: Vec<f64> = shown.iter().map(|p| p.messages as f64).collect();
    let words: Vec<f64> = shown.iter().map(|p| p.words as f64).collect();
    render("participation", title, (width_for(names.len()), 760), |root| {
        let (top, rest) = root.split_vertically(40);
        top.titled(&heading, (FONT, 22))?;
        let (upper, lower) = rest.split_vertically(360);
        bar_panel(&upper, "Messages per persona", "Messages", &names, &msgs, color(0))?;
        bar_panel(&lower, "Words per persona", "Words", &names, &words, color(1))?;
        Ok(())
    })
}

/// Mean sentiment per turn, one line per persona.
pub fn sentiment(a: &ConversationAnalysis) -> Result<Chart, AnalysisError> {
    let title = "Sentiment over turns (VADER-style compound score)";
    let shown = a.most_active(CHART_PERSONAS);
    let heading = of_total(title, shown.len(), a.overview.personas);
    let max_turn = a.overview.turns.max(1);
    render("sentiment", title, (900, 520), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&heading, (FONT, 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(0u32..max_turn, -1.0f64..1.0)?;
        chart
            .configure_mesh()
            .x_labels((max_turn as usize + 1).min(30))
            .x_desc("Turn")
            .y_desc("Mean sentiment (-1 negative .. +1 positive)")
            .draw()?;
        chart.draw_series(LineSeries::new([(0, 0.0), (max_turn, 0.0)], BLACK.mix(0.3)))?;
        for (i, p) in shown.iter().enumerate().filter(|(_, p)| !p.sentiment_by_turn.is_empty()) {
            let c = color(i);
            let pts: Vec<(u32, f64)> = p.sentiment_by_turn.iter().map(|t| (t.turn, t.value)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
                .label(p.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            chart.draw_series(PointSeries::of_element(pts, 4, c.filled(), &|pt, s, st| Circle::new(pt, s, st)))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 13))
            .draw()?;
        Ok(())
    })
}

/// Who speaks right after whom.
pub fn turn_taking(a: &ConversationAnalysis) -> Result<Chart, AnalysisError> {
    let title = "Turn-taking: who speaks after whom";
    let tt = &a.turn_taking;
    let heading = of_total(title, tt.personas.len(), a.overview.personas);
    let n = tt.names.len().max(1) as i32;
    let max = tt.matrix.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    let side = (n as u32 * 90 + 260).clamp(560, 2000);
    render("turn_taking", title, (side + 80, side), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&heading, (FONT, 22))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(150)
            .build_cartesian_2d(cats(n).into_segmented(), cats(n).into_segmented())?;
        let name = |i: i32| tt.names.get(i as usize).cloned().unwrap_or_default();
        let x_label = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => name(*i),
            SegmentValue::Last => String::new(),
        };
        // Rows run top-down in persona order: row i sits at y = n - 1 - i.
        let y_label = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => name(n - 1 - *i),
            SegmentValue::Last => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(tt.names.len().max(1))
            .y_labels(tt.names.len().max(1))
            .x_desc("Next speaker")
            .y_desc("Previous speaker")
            .x_label_formatter(&x_label)
            .y_label_formatter(&y_label)
            .draw()?;
        let mut cells = Vec::new();
        for (i, row) in tt.matrix.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                cells.push((n - 1 - i as i32, j as i32, *v));
            }
        }
        chart.draw_series(cells.iter().map(|(i, j, v)| {
            let t = *v as f64 / max;
            // White (0) to deep blue (max).
            let c = RGBColor((255.0 - 255.0 * t) as u8, (255.0 - 141.0 * t) as u8, (255.0 - 77.0 * t) as u8);
            Rectangle::new(
                [
                    (SegmentValue::Exact(*j), SegmentValue::Exact(*i)),
                    (SegmentValue::Exact(j + 1), SegmentValue::Exact(i + 1)),
                ],
                c.filled(),
            )
        }))?;
        chart.draw_series(cells.iter().map(|(i, j, v)| {
            let fg = if (*v as f64 / max) > 0.6 { WHITE } else { BLACK };
            Text::new(
                v.to_string(),
                (SegmentValue::CenterOf(*j), SegmentValue::CenterOf(*i)),
                (FONT, 14).into_font().color(&fg).pos(Pos::new(HPos::Center, VPos::Center)),
            )
        }))?;
        Ok(())
    })
}

/// Call latency histogram.
pub fn latency(a: &ConversationAnalysis, results: &SimulationResults) -> Result<Chart, AnalysisError> {
    let title = "Latency of LLM calls";
    // The metrics' buckets hold every attempt; without them, the transcript's per-message values.
    let (labels, counts, source): (Vec<String>, Vec<f64>, &str) = if !a.latency.buckets.is_empty() {
        let mut lo = 0.0;
        let mut labels = Vec::new();
        for (hi, _) in &a.latency.buckets {
            labels.push(format!("{}-{} ms", fmt_ms(lo), fmt_ms(*hi)));
            lo = *hi;
        }
        (labels, a.latency.buckets.iter().map(|b| b.1 as f64).collect(), "all call attempts (metrics)")
    } else {
        let lat: Vec<f64> = results.transcript.iter().filter_map(|e| e.latency_ms).collect();
        let max = lat.iter().copied().fold(0.0f64, f64::max);
        let bins = 10usize;
        let width = (max / bins as f64).max(1.0);
        let mut counts = vec![0.0; bins];
        for l in &lat {
            counts[((l / width) as usize).min(bins - 1)] += 1.0;
        }
        let labels =
            (0..bins).map(|i| format!("{}-{} ms", fmt_ms(i as f64 * width), fmt_ms((i + 1) as f64 * width))).collect();
        (labels, counts, "messages (transcript)")
    };
    let n = labels.len().max(1) as i32;
    let max = counts.iter().copied().fold(0.0f64, f64::max).max(1.0) * 1.15;
    let caption = format!("{title}: {source}");
    render("latency", title, ((n as u32 * 90 + 200).clamp(700, 2400), 480), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&caption, (FONT, 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(cats(n).into_segmented(), 0.0..max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(labels.len().max(1))
            .x_desc("Latency")
            .y_desc("Calls")
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    labels.get(*i as usize).cloned().unwrap_or_default()
                }
                SegmentValue::Last => String::new(),
            })
            .draw()?;
        chart.draw_series(
            Histogram::vertical(&chart)
                .style(color(4).filled())
                .margin(4)
                .data(counts.iter().enumerate().map(|(i, c)| (i as i32, *c))),
        )?;
        Ok(())
    })
}

fn fmt_ms(v: f64) -> String {
    if v >= 1000.0 { format!("{:.1}k", v / 1000.0) } else { format!("{v:.0}") }
}

/// Prompt and completion tokens per turn.
pub fn tokens(a: &ConversationAnalysis) -> Result<Chart, AnalysisError> {
    let title = "Tokens per turn";
    let turns: Vec<u32> = a.tokens_per_turn.iter().map(|t| t.turn).collect();
    let n = turns.len().max(1) as i32;
    let max =
        a.tokens_per_turn.iter().map(|t| t.prompt_tokens + t.completion_tokens).max().unwrap_or(0).max(1) as f64 * 1.15;
    render("tokens", title, ((n as u32 * 60 + 220).clamp(700, 2400), 480), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(cats(n).into_segmented(), 0.0..max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(turns.len().clamp(1, 40))
            .x_desc("Turn")
            .y_desc("Tokens")
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    turns.get(*i as usize).map(|t| t.to_string()).unwrap_or_default()
                }
                SegmentValue::Last => String::new(),
            })
            .draw()?;
        let bar = |i: i32, lo: f64, hi: f64, c: RGBColor| {
            let mut r = Rectangle::new([(SegmentValue::Exact(i), lo), (SegmentValue::Exact(i + 1), hi)], c.filled());
            r.set_margin(0, 0, 6, 6);
            r
        };
        let (cp, cc) = (color(0), color(1));
        chart
            .draw_series(
                a.tokens_per_turn.iter().enumerate().map(|(i, t)| bar(i as i32, 0.0, t.prompt_tokens as f64, cp)),
            )?
            .label("prompt tokens")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], cp.filled()));
        chart
            .draw_series(a.tokens_per_turn.iter().enumerate().map(|(i, t)| {
                let lo = t.prompt_tokens as f64;
                bar(i as i32, lo, lo + t.completion_tokens as f64, cc)
            }))?
            .label("completion tokens")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], cc.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 13))
            .draw()?;
        Ok(())
    })
}
