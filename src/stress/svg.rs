//! `stress.svg`: throughput (calls/s, left axis) and p99 latency (ms, right axis) against
//! workers on a log2 axis, drawn with plotters' SVG backend.

use plotters::prelude::*;

use super::{Exporter, StressError, StressReport};

/// Name of the throughput series (also its legend entry).
pub const THROUGHPUT: &str = "throughput (calls/s)";
/// Name of the latency series (also its legend entry).
pub const P99: &str = "p99 latency (ms)";

const SIZE: (u32, u32) = (900, 540);

/// Draws the chart as SVG.
#[derive(Debug, Clone, Copy, Default)]
pub struct SvgExporter;

impl Exporter for SvgExporter {
    fn file_name(&self) -> &'static str {
        "stress.svg"
    }

    fn render(&self, report: &StressReport) -> Result<Vec<u8>, StressError> {
        let mut buf = String::new();
        draw(report, &mut buf).map_err(|message| StressError::Render { file: self.file_name(), message })?;
        Ok(buf.into_bytes())
    }
}

fn draw(report: &StressReport, buf: &mut String) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    let rows = &report.settings;
    let xs: Vec<f64> = rows.iter().map(|r| (r.workers.max(1) as f64).log2()).collect();
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (x0, x1) = if !lo.is_finite() || hi - lo < 1.0 {
        let mid = if lo.is_finite() { lo } else { 0.0 };
        (mid - 0.5, mid + 0.5)
    } else {
        (lo.floor(), hi.ceil())
    };
    let headroom = |v: f64| if v > 0.0 { v * 1.15 } else { 1.0 };
    let y_max = headroom(rows.iter().map(|r| r.calls_per_s).fold(0.0, f64::max));
    let p_max = headroom(rows.iter().map(|r| r.p99_ms).fold(0.0, f64::max));
    let best = report.best_workers.map(|w| format!(", best: {w} workers")).unwrap_or_default();
    let title = format!("troupe stress: {} ({}, {}){best}", report.scenario, report.provider, report.model);

    let root = SVGBackend::with_string(buf, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        .build_cartesian_2d(x0..x1, 0f64..y_max)
        .map_err(e)?
        .set_secondary_coord(x0..x1, 0f64..p_max);
    let ticks = ((x1 - x0).round() as usize + 1).max(2);
    chart
        .configure_mesh()
        .x_desc("workers (performance.max_workers, log2 scale)")
        .y_desc(THROUGHPUT)
        .x_labels(ticks)
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-6 { format!("{}", 2f64.powf(x.round()) as u64) } else { String::new() }
        })
        .draw()
        .map_err(e)?;
    chart.configure_secondary_axes().y_desc(P99).draw().map_err(e)?;

    let blue = RGBColor(31, 119, 180);
    let red = RGBColor(214, 39, 40);
    let thr: Vec<(f64, f64)> = xs.iter().zip(rows).map(|(x, r)| (*x, r.calls_per_s)).collect();
    let lat: Vec<(f64, f64)> = xs.iter().zip(rows).map(|(x, r)| (*x, r.p99_ms)).collect();
    chart
        .draw_series(LineSeries::new(thr.clone(), blue.stroke_width(2)))
        .map_err(e)?
        .label(THROUGHPUT)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2)));
    chart.draw_series(thr.iter().map(|p| Circle::new(*p, 4, blue.filled()))).map_err(e)?;
    chart
        .draw_secondary_series(LineSeries::new(lat.clone(), red.stroke_width(2)))
        .map_err(e)?
        .label(P99)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(2)));
    chart.draw_secondary_series(lat.iter().map(|p| TriangleMarker::new(*p, 5, red.filled()))).map_err(e)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}
