//! `troupe top`: a live view, in the terminal, of a troupe command serving `--metrics-addr`.
//!
//! A task scrapes `/metrics` and `/messages` every interval and posts what it got; the view
//! runs on a blocking thread, reads keys, and draws the figures
//! (`troupe_sim::monitoring::figures`) of the scrapes it was given. A scrape that fails never
//! ends the view: an address where nothing answers is waited for, anything else is shown as
//! an error line, and the last figures stay on screen. The terminal is restored on every exit,
//! a panic included (ratatui's `init` hook, and a guard for early returns).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Bar, BarChart, Block, Paragraph};
use tokio::sync::mpsc;
use troupe_sim::actors::monitor::RecentMessage;
use troupe_sim::monitoring::figures::{Figures, History, Quantiles};
use troupe_sim::monitoring::scrape::{self, Buckets, MAX_BODY_BYTES, Scrape, ScrapeError};

use super::{GlobalArgs, UsageError};

/// The largest `/messages` body read (20 cut lines are a few kilobytes).
const MAX_MESSAGES_BYTES: usize = 256 << 10;

#[derive(Debug, Args)]
pub struct TopArgs {
    /// The address a troupe command serves metrics on (its --metrics-addr)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,
    /// Seconds between scrapes, from 0.1 to 60
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub interval: f64,
}

/// The checked arguments.
#[derive(Debug, Clone)]
struct Settings {
    addr: String,
    interval: Duration,
}

fn settings(a: TopArgs) -> Result<Settings, UsageError> {
    if !(0.1..=60.0).contains(&a.interval) {
        return Err(UsageError(format!(
            "--interval {} is out of range: give seconds from 0.1 to 60, e.g. --interval 1",
            a.interval
        )));
    }
    let url = reqwest::Url::parse(&format!("http://{}/metrics", a.metrics_addr));
    let plain = url.is_ok_and(|u| u.port().is_some() && u.path() == "/metrics" && u.username().is_empty());
    if !plain {
        return Err(UsageError(format!(
            "--metrics-addr {:?} is not host:port: give the address a troupe command serves metrics on, \
             e.g. --metrics-addr 127.0.0.1:9464",
            a.metrics_addr
        )));
    }
    Ok(Settings { addr: a.metrics_addr, interval: Duration::from_secs_f64(a.interval) })
}

pub fn run(_g: &GlobalArgs, a: TopArgs) -> anyhow::Result<ExitCode> {
    let s = settings(a)?;
    if !std::io::stdout().is_terminal() {
        return Err(UsageError(
            "troupe top draws in a terminal and its output is not one; run it in a terminal, or read \
             http://ADDR/metrics directly"
                .into(),
        )
        .into());
    }
    super::block_on(watch(s))??;
    Ok(ExitCode::SUCCESS)
}

/// Scrapes in a task and shows them on a blocking thread until a quit key.
async fn watch(s: Settings) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(4);
    let scraper = tokio::spawn(scrape_loop(s.clone(), tx));
    let ui = tokio::task::spawn_blocking(move || ui_loop(s, rx)).await;
    scraper.abort();
    match ui {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(e.into()),
    }
}

/// What one scrape brought.
struct Update {
    at: Instant,
    metrics: Result<Scrape, ScrapeError>,
    /// Asked only when the metrics came.
    messages: Option<Result<Vec<RecentMessage>, ScrapeError>>,
}

async fn scrape_loop(s: Settings, tx: mpsc::Sender<Update>) {
    let timeout = Duration::from_secs_f64((2.0 * s.interval.as_secs_f64()).clamp(1.0, 10.0));
    let client = scrape::client(timeout);
    let mut tick = tokio::time::interval(s.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let metrics =
            scrape::fetch(&client, &s.addr, "/metrics", MAX_BODY_BYTES).await.and_then(|text| Scrape::parse(&text));
        let at = Instant::now();
        let messages = match metrics {
            Ok(_) => Some(
                scrape::fetch(&client, &s.addr, "/messages", MAX_MESSAGES_BYTES)
                    .await
                    .and_then(|body| scrape::parse_messages(&body)),
            ),
            Err(_) => None,
        };
        if tx.send(Update { at, metrics, messages }).await.is_err() {
            return;
        }
    }
}

/// Restores the terminal when the view returns early.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn ui_loop(s: Settings, mut rx: mpsc::Receiver<Update>) -> anyhow::Result<()> {
    // The guard first: a failed init may have changed the terminal already.
    let _restore = Restore;
    let mut terminal = ratatui::try_init().context("cannot take over the terminal")?;
    let mut app = App::new(s);
    let mut drawn: Option<Instant> = None;
    loop {
        let mut dirty = drawn.is_none_or(|t| t.elapsed() >= Duration::from_millis(500));
        while let Ok(u) = rx.try_recv() {
            app.apply(u);
            dirty = true;
        }
        if dirty {
            terminal.draw(|f| draw(f, &app)).context("cannot draw")?;
            drawn = Some(Instant::now());
        }
        if !event::poll(Duration::from_millis(100)).context("cannot read the keyboard")? {
            continue;
        }
        match event::read().context("cannot read the keyboard")? {
            Event::Key(k) if k.kind == KeyEventKind::Press => {
                if quits(&k) {
                    return Ok(());
                }
                if matches!(k.code, KeyCode::Char('p' | 'P')) {
                    app.paused = !app.paused;
                }
                drawn = None;
            }
            Event::Resize(..) => drawn = None,
            _ => {}
        }
    }
}

/// q, Esc and Ctrl-C (raw mode turns Ctrl-C into a key).
fn quits(k: &KeyEvent) -> bool {
    matches!(k.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc)
        || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL))
}

/// Where the scrapes stand.
enum Status {
    Starting,
    Live,
    Waiting(String),
    Failed(String),
}

/// What the view shows.
struct App {
    s: Settings,
    t0: Instant,
    history: History,
    figures: Option<Figures>,
    messages: Vec<RecentMessage>,
    messages_error: Option<String>,
    status: Status,
    last_ok: Option<Instant>,
    paused: bool,
}

impl App {
    fn new(s: Settings) -> App {
        App {
            s,
            t0: Instant::now(),
            history: History::default(),
            figures: None,
            messages: Vec::new(),
            messages_error: None,
            status: Status::Starting,
            last_ok: None,
            paused: false,
        }
    }

    /// Takes a scrape in, unless paused (the next one after a pause is measured against the
    /// last one before it, so its rates are the pause's averages).
    fn apply(&mut self, u: Update) {
        if self.paused {
            return;
        }
        match u.metrics {
            Ok(scrape) => {
                self.history.push(u.at.duration_since(self.t0).as_secs_f64(), scrape);
                self.figures = self.history.figures();
                self.status = Status::Live;
                self.last_ok = Some(u.at);
            }
            Err(ScrapeError::Unreachable { why, .. }) => self.status = Status::Waiting(why),
            Err(e) => self.status = Status::Failed(e.to_string()),
        }
        match u.messages {
            Some(Ok(m)) => (self.messages, self.messages_error) = (m, None),
            Some(Err(e)) => self.messages_error = Some(e.to_string()),
            None => {}
        }
    }
}

fn draw(f: &mut Frame, app: &App) {
    let [head, status, top, chart, bottom, said] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(9),
        Constraint::Length(10),
        Constraint::Length(5),
        Constraint::Min(3),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(header(app)), head);
    f.render_widget(Paragraph::new(status_line(app)), status);
    let empty = Figures::default();
    let fig = app.figures.as_ref().unwrap_or(&empty);
    let [calls, latency, errors] =
        Layout::horizontal([Constraint::Length(25), Constraint::Length(53), Constraint::Min(20)]).areas(top);
    f.render_widget(panel("calls", calls_lines(fig)), calls);
    f.render_widget(panel("latency", latency_lines(fig, app.s.interval)), latency);
    f.render_widget(panel("errors and budget", error_lines(fig)), errors);
    draw_buckets(f, chart, fig, app.s.interval);
    let [tokens, runs, messages] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(30), Constraint::Percentage(30)])
            .areas(bottom);
    f.render_widget(panel("tokens and cost", token_lines(fig)), tokens);
    f.render_widget(panel("runs", run_lines(fig)), runs);
    f.render_widget(panel("messages", message_count_lines(fig)), messages);
    f.render_widget(panel("last messages", said_lines(app, said.height.saturating_sub(2))), said);
}

fn panel<'a>(title: &'a str, lines: Vec<Line<'a>>) -> Paragraph<'a> {
    Paragraph::new(lines).block(Block::bordered().title(Span::styled(title, Style::new().bold())))
}

fn header(app: &App) -> Line<'static> {
    let version = app.figures.as_ref().and_then(|f| f.version.clone()).unwrap_or_default();
    let version = if version.is_empty() { String::new() } else { format!("   troupe-sim {version}") };
    Line::from(vec![
        Span::styled(" troupe top ", Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)),
        Span::raw(format!("  {}  every {}{version}", app.s.addr, seconds(app.s.interval.as_secs_f64()))),
        Span::styled("    q quit   p pause", Style::new().fg(Color::DarkGray)),
    ])
}

fn status_line(app: &App) -> Line<'static> {
    let every = seconds(app.s.interval.as_secs_f64());
    let ago = app.last_ok.map(|t| format!("; last figures {} ago", seconds(t.elapsed().as_secs_f64())));
    let (text, color) = match &app.status {
        _ if app.paused => ("paused: p resumes".to_string(), Color::Cyan),
        Status::Starting => (format!("waiting for {} (first scrape)", app.s.addr), Color::Yellow),
        Status::Live => {
            let ago = app.last_ok.map(|t| seconds(t.elapsed().as_secs_f64())).unwrap_or_default();
            (format!("live: scraped {ago} ago"), Color::Green)
        }
        Status::Waiting(why) => (
            format!("waiting for {} ({why}); retrying every {every}{}", app.s.addr, ago.unwrap_or_default()),
            Color::Yellow,
        ),
        Status::Failed(why) => (format!("error: {why}; retrying every {every}"), Color::Red),
    };
    Line::styled(troupe_sim::text::one_line(&text, 400), Style::new().fg(color))
}

fn row(name: &str, value: String) -> Line<'static> {
    Line::from(vec![Span::styled(format!("{name:<15}"), Style::new().fg(Color::DarkGray)), Span::raw(value)])
}

fn calls_lines(f: &Figures) -> Vec<Line<'static>> {
    let mut out = vec![
        row("calls total", count(f.calls)),
        row("calls/s", per_second(f.calls_per_second)),
        row("in flight", count(f.in_flight)),
    ];
    if let Some(w) = f.stress_workers {
        out.push(row("stress workers", count(w)));
    }
    out.push(row("retries", count(f.retries)));
    out.push(row("fallbacks", count(f.fallbacks)));
    out
}

fn latency_lines(f: &Figures, interval: Duration) -> Vec<Line<'static>> {
    let cells = |name: String, q: Option<&Quantiles>| {
        let d = |v: Option<f64>| format!("{:>8}", v.map_or("—".into(), seconds));
        let (p50, p90, p99, mean, n) = match q {
            Some(q) => (d(q.p50), d(q.p90), d(q.p99), d(q.mean), count(q.count)),
            None => (d(None), d(None), d(None), d(None), "—".into()),
        };
        Line::raw(format!("{name:<12}{p50}{p90}{p99}{mean}{n:>7}"))
    };
    let head = format!("{:<12}{:>8}{:>8}{:>8}{:>8}{:>7}", "", "p50", "p90", "p99", "mean", "calls");
    vec![
        Line::styled(head, Style::new().fg(Color::DarkGray)),
        cells(format!("last {}", seconds(interval.as_secs_f64())), f.latency_recent.as_ref()),
        cells("overall".into(), Some(&f.latency)),
        Line::raw(""),
        Line::styled("LLM call attempts, estimated from the buckets", Style::new().fg(Color::DarkGray)),
        Line::styled("as Prometheus' histogram_quantile does", Style::new().fg(Color::DarkGray)),
    ]
}

fn error_lines(f: &Figures) -> Vec<Line<'static>> {
    let mut out = vec![row("errors total", count(f.errors))];
    for (kind, n) in &f.errors_by_kind {
        out.push(row(&format!("  {}", troupe_sim::text::one_line(kind, 14)), count(*n)));
    }
    out.push(row("429s", format!("{}  ({})", count(f.rate_limited), per_second(f.rate_limited_per_second))));
    out.push(budget_row("requests/min", f.requests_per_minute, f.budget_requests_per_minute));
    out.push(budget_row("tokens/min", f.tokens_per_minute, f.budget_tokens_per_minute));
    out
}

/// Use per minute against the budget, with a bar when there is one.
fn budget_row(name: &str, used: Option<f64>, budget: Option<f64>) -> Line<'static> {
    let used_text = used.map_or("—".into(), compact);
    match budget {
        Some(b) if b > 0.0 => {
            let frac = used.unwrap_or(0.0) / b;
            let filled = ((frac.clamp(0.0, 1.0) * 8.0).round()) as usize;
            let color = if frac >= 0.9 { Color::Red } else { Color::Green };
            Line::from(vec![
                Span::styled(format!("{name:<15}"), Style::new().fg(Color::DarkGray)),
                Span::raw(format!("{used_text} of {} ({:.0}%) ", compact(b), frac * 100.0)),
                Span::styled("█".repeat(filled), Style::new().fg(color)),
                Span::styled("░".repeat(8 - filled), Style::new().fg(Color::DarkGray)),
            ])
        }
        _ => row(name, format!("{used_text} (no budget set)")),
    }
}

fn token_lines(f: &Figures) -> Vec<Line<'static>> {
    vec![
        row("tokens", format!("{} prompt, {} completion", count(f.prompt_tokens), count(f.completion_tokens))),
        row("cost", format!("${:.4}", f.cost_usd)),
        row("per minute", f.tokens_per_minute.map_or("—".into(), |t| format!("{} tokens", compact(t)))),
    ]
}

fn run_lines(f: &Figures) -> Vec<Line<'static>> {
    let done: Vec<String> =
        f.runs_finished.iter().filter(|(_, n)| **n > 0.0).map(|(k, n)| format!("{k} {}", count(*n))).collect();
    vec![
        row("running", count(f.runs_running)),
        row("started", count(f.runs_started)),
        row("finished", if done.is_empty() { "0".into() } else { done.join(", ") }),
    ]
}

fn message_count_lines(f: &Figures) -> Vec<Line<'static>> {
    vec![row("messages total", count(f.messages)), row("messages/s", per_second(f.messages_per_second))]
}

/// The newest lines that fit, oldest first.
fn said_lines(app: &App, rows: u16) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    if let Some(e) = &app.messages_error {
        out.push(Line::styled(format!("cannot read /messages: {e}"), Style::new().fg(Color::Red)));
    } else if app.messages.is_empty() {
        out.push(Line::styled("none yet", Style::new().fg(Color::DarkGray)));
    }
    let room = usize::from(rows).saturating_sub(out.len());
    let skip = app.messages.len().saturating_sub(room);
    for m in &app.messages[skip..] {
        let to = m.to.as_deref().map(|t| format!(" → {t}")).unwrap_or_default();
        out.push(Line::from(vec![
            Span::styled(format!("t{:<3} ", m.turn), Style::new().fg(Color::DarkGray)),
            Span::styled(format!("{}{to}: ", m.speaker), Style::new().bold()),
            Span::raw(m.text.clone()),
        ]));
    }
    out
}

/// The latency buckets as bars: the last interval's when it saw calls, else all of them.
fn draw_buckets(f: &mut Frame, area: Rect, fig: &Figures, interval: Duration) {
    let recent = fig.buckets_recent.as_ref().filter(|b| b.count() > 0.0);
    let (b, title) = match recent {
        Some(b) => (b, format!("latency buckets, last {}", seconds(interval.as_secs_f64()))),
        None => (&fig.buckets, "latency buckets, overall".to_string()),
    };
    let block = Block::bordered().title(Span::styled(title, Style::new().bold()));
    let inner = block.inner(area);
    let shown = shown_buckets(b, usize::from(inner.width) / 4);
    if shown.is_empty() {
        f.render_widget(Paragraph::new("no calls yet").block(block), area);
        return;
    }
    let n = shown.len() as u16;
    let width = ((inner.width + 1) / n).saturating_sub(1).clamp(1, 8);
    let bars: Vec<Bar> = shown
        .iter()
        .map(|&(le, c)| Bar::new(c.round() as u64).label(Line::from(bound(le))).text_value(count(c)))
        .collect();
    f.render_widget(BarChart::new(bars).block(block).bar_width(width).bar_gap(1), area);
}

/// The buckets around those that saw calls (at least 7 when there are, at most `max`).
fn shown_buckets(b: &Buckets, max: usize) -> Vec<(f64, f64)> {
    let counts = b.counts();
    let Some(first) = counts.iter().position(|c| c.1 > 0.0) else { return Vec::new() };
    let last = counts.iter().rposition(|c| c.1 > 0.0).unwrap_or(first);
    let (mut lo, mut hi) = (first, last);
    while hi - lo + 1 < 7 && (lo > 0 || hi + 1 < counts.len()) {
        lo = lo.saturating_sub(1);
        hi = (hi + 1).min(counts.len() - 1);
    }
    hi = hi.min(lo + max.max(1) - 1);
    counts[lo..=hi].to_vec()
}

/// A bucket's upper bound, short: `250µs`, `2.5ms`, `10s`, `+Inf`.
fn bound(le: f64) -> String {
    if le.is_infinite() {
        "+Inf".into()
    } else if le < 1e-3 {
        format!("{}µs", trim(le * 1e6))
    } else if le < 1.0 {
        format!("{}ms", trim(le * 1e3))
    } else {
        format!("{}s", trim(le))
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Seconds for people: `420µs`, `12.5ms`, `1.50s`, `2m05s`.
fn seconds(s: f64) -> String {
    if !s.is_finite() {
        "—".into()
    } else if s < 1e-3 {
        format!("{:.0}µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1}ms", s * 1e3)
    } else if s < 120.0 {
        format!("{s:.2}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// A count: whole numbers without a fraction (and no `-0`).
fn count(v: f64) -> String {
    let v = if v == 0.0 { 0.0 } else { v };
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { format!("{v:.1}") }
}

/// A large figure, short: `950`, `12.3k`, `10M`.
fn compact(v: f64) -> String {
    let (x, unit) = match v.abs() {
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e4 => (v / 1e3, "k"),
        _ => return format!("{v:.0}"),
    };
    format!("{}{unit}", format!("{x:.1}").trim_end_matches(".0"))
}

fn per_second(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.1}/s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_with(text: &str) -> App {
        let mut app = App::new(Settings { addr: "127.0.0.1:9".into(), interval: Duration::from_secs(1) });
        let at = Instant::now();
        app.apply(Update { at, metrics: Scrape::parse(text), messages: Some(Ok(Vec::new())) });
        app
    }

    #[test]
    fn the_view_draws_into_any_size_without_panicking() {
        let text = "troupe_llm_requests_total 5\n\
                    troupe_stress_workers 8\n\
                    troupe_llm_request_duration_seconds_bucket{le=\"0.5\"} 5\n\
                    troupe_llm_request_duration_seconds_bucket{le=\"+Inf\"} 5\n";
        let app = app_with(text);
        for (w, h) in [(120, 40), (1, 1), (20, 5), (300, 100), (0, 0)] {
            let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(w, h)).unwrap();
            t.draw(|f| draw(f, &app)).unwrap();
        }
        let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(120, 40)).unwrap();
        t.draw(|f| draw(f, &app)).unwrap();
        let screen: String = t.backend().buffer().content().iter().map(|c| c.symbol()).collect();
        assert!(screen.contains("calls total    5"), "{screen}");
        assert!(screen.contains("errors total   0 "), "an empty sum is 0, not -0: {screen}");
        assert!(screen.contains("500ms"), "{screen}");
        assert!(screen.contains("stress workers 8"), "{screen}");
    }

    #[test]
    fn arguments_are_checked() {
        let a = |addr: &str, interval: f64| TopArgs { metrics_addr: addr.into(), interval };
        assert!(settings(a("127.0.0.1:9464", 1.0)).is_ok());
        assert!(settings(a("localhost:9464", 0.1)).is_ok());
        assert!(settings(a("[::1]:9464", 60.0)).is_ok());
        for bad in ["127.0.0.1", "x:1/metrics", "u@h:1", "", "h:notaport"] {
            assert!(settings(a(bad, 1.0)).is_err(), "{bad}");
        }
        assert!(settings(a("127.0.0.1:9464", 0.05)).unwrap_err().0.contains("--interval"));
        assert!(settings(a("127.0.0.1:9464", f64::NAN)).is_err());
        assert_eq!(
            (bound(0.00025), bound(0.0025), bound(2.5), bound(f64::INFINITY)),
            ("250µs".into(), "2.5ms".into(), "2.5s".into(), "+Inf".into())
        );
        assert_eq!((seconds(0.3), seconds(0.0004), seconds(125.0)), ("300.0ms".into(), "400µs".into(), "2m05s".into()));
        assert_eq!(
            (compact(950.4), compact(865_087.0), compact(10_000_000.0)),
            ("950".into(), "865.1k".into(), "10M".into())
        );
    }
}
