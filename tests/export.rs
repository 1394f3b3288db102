//! Exports: CSV and JSONL round trips of any text, HTML that shows `<script>` as text, the
//! Markdown report, and the `troupe analyze` / `troupe export` commands on a real run.

use std::path::Path;

use proptest::prelude::*;
use troupe_sim::analysis::analyze_conversation;
use troupe_sim::export::{self, Exporter, csv::read_csv, csv::write_csv, jsonl::read_jsonl};
use troupe_sim::record::results::SimulationResults;
use troupe_sim::record::transcript::TranscriptEntry;

mod support {
    pub mod cli;
    pub mod results;
}

use support::cli::troupe;

fn moderator(text: &str) -> TranscriptEntry {
    let mut e = entry(0, "Moderator", text, None);
    e.speaker_id = "moderator".into();
    e.role = "moderator".into();
    e
}

fn entry(seq: u64, speaker: &str, text: &str, to: Option<String>) -> TranscriptEntry {
    TranscriptEntry {
        seq,
        turn: seq as u32,
        speaker: speaker.into(),
        speaker_id: speaker.to_lowercase().replace(' ', "_"),
        role: "Role, with \"quotes\"".into(),
        text: text.into(),
        to,
        timestamp: chrono::DateTime::from_timestamp(1_700_000_000 + seq as i64, 123_456_789).unwrap(),
        model: Some("gpt-4o-mini".into()),
        prompt_tokens: Some(seq * 10),
        completion_tokens: None,
        latency_ms: Some(seq as f64 * 1.25 + 0.1),
        attempts: Some(1),
    }
}

/// A run to export: `transcript` with its speakers as the agents.
fn results(transcript: Vec<TranscriptEntry>) -> SimulationResults {
    let mut agents: Vec<(String, String)> = Vec::new();
    for e in transcript.iter().filter(|e| e.speaker_id != "moderator") {
        if !agents.iter().any(|a| a.0 == e.speaker_id) {
            agents.push((e.speaker_id.clone(), e.speaker.clone()));
        }
    }
    let refs: Vec<(&str, &str)> = agents.iter().map(|(i, n)| (i.as_str(), n.as_str())).collect();
    support::results::results_with(&refs, transcript)
}

fn tricky_text() -> impl Strategy<Value = String> {
    // Commas, quotes, CR/LF, tabs, emoji and other scripts, leading/trailing spaces.
    prop::collection::vec(
        prop_oneof![
            Just(",".to_string()),
            Just("\"".to_string()),
            Just("\"\"".to_string()),
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just("\r".to_string()),
            Just(" ".to_string()),
            Just("\t".to_string()),
            Just("é漢字🙂".to_string()),
            Just("<script>".to_string()),
            Just("=".to_string()),
            Just("+".to_string()),
            Just("-".to_string()),
            Just("@".to_string()),
            Just("'".to_string()),
            "[a-zA-Z0-9 ]{0,8}",
            "\\PC{0,6}",
        ],
        0..12,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn csv_round_trips_any_text(texts in prop::collection::vec((tricky_text(), prop::option::of("[A-Z][a-z]{1,6} [A-Z][a-z]{1,6}")), 0..8)) {
        let t: Vec<TranscriptEntry> = texts.iter().enumerate().map(|(i, (text, to))| entry(i as u64, "Ann O'Neil, PhD", text, to.clone())).collect();
        let bytes = write_csv(&t).unwrap();
        let back = read_csv(&bytes).unwrap();
        prop_assert_eq!(back, t);
    }

    #[test]
    fn jsonl_round_trips_any_text(texts in prop::collection::vec(tricky_text(), 0..8)) {
        let t: Vec<TranscriptEntry> = texts.iter().enumerate().map(|(i, text)| entry(i as u64, "Bo \"B\" Ek", text, None)).collect();
        let r = results(t.clone());
        let a = analyze_conversation(&r);
        let bytes = export::exporter("jsonl").unwrap().export(&r, &a).unwrap();
        prop_assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), t.len(), "one message per line");
        prop_assert_eq!(read_jsonl(&bytes).unwrap(), t);
    }
}

#[test]
fn csv_is_rfc_4180() {
    let t = vec![entry(0, "A", "plain", None), entry(1, "B", "a, \"quoted\"\nsecond line", Some("A".into()))];
    let s = String::from_utf8(write_csv(&t).unwrap()).unwrap();
    let mut lines = s.split("\r\n");
    assert_eq!(
        lines.next().unwrap(),
        "seq,turn,speaker,speaker_id,role,to,text,timestamp,model,prompt_tokens,completion_tokens,latency_ms,attempts"
    );
    assert!(s.contains("\"a, \"\"quoted\"\"\nsecond line\""), "{s}");
    assert!(s.ends_with("\r\n"));
    assert_eq!(read_csv(write_csv(&[]).unwrap().as_slice()).unwrap(), vec![]);
}

// ---------------------------------------------------------------------------------------------
// CSV injection (issue 12): OWASP's rule, a text cell starting with `=`, `+`, `-`, `@`, a tab or a
// carriage return gets a leading `'`, so a spreadsheet shows it as text instead of running it.

/// The first characters a spreadsheet reads as the start of a formula (OWASP, "CSV Injection").
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// `payload` as every text column of a row: each cell reads back as `'payload`, no field of the
/// file starts a formula, numbers are untouched, and `read_csv` gives the original back.
#[track_caller]
fn assert_csv_neutralized(payload: &str) {
    let mut e = entry(3, payload, payload, Some(payload.to_string()));
    e.speaker_id = payload.into();
    e.role = payload.into();
    e.model = Some(payload.into());
    let t = vec![entry(1, "Ann", "a plain line", None), e];
    let bytes = write_csv(&t).unwrap();
    let mut r = csv::Reader::from_reader(bytes.as_slice());
    let headers = r.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    let cell = |row: usize, col: &str| rows[row][headers.iter().position(|h| h == col).unwrap()].to_string();
    for col in ["speaker", "speaker_id", "role", "to", "text", "model"] {
        assert_eq!(cell(1, col), format!("'{payload}"), "{col} of {payload:?}");
    }
    assert_eq!(cell(0, "text"), "a plain line", "ordinary text is left alone");
    assert_eq!((cell(1, "seq"), cell(1, "latency_ms")), ("3".into(), "3.85".into()), "numbers are untouched");
    for row in &rows {
        for field in row {
            assert!(!field.starts_with(FORMULA_STARTS), "a field starts a formula: {field:?}");
        }
    }
    assert_eq!(read_csv(&bytes).unwrap(), t, "the export still round-trips");
}

#[test]
fn csv_neutralizes_an_equals_formula() {
    assert_csv_neutralized("=HYPERLINK(\"http://x\",\"y\")");
}

#[test]
fn csv_neutralizes_a_plus_dde_command() {
    assert_csv_neutralized("+cmd|' /C calc'!A0");
}

#[test]
fn csv_neutralizes_a_minus_formula() {
    assert_csv_neutralized("-2+3");
}

#[test]
fn csv_neutralizes_an_at_function() {
    assert_csv_neutralized("@SUM(A1)");
}

#[test]
fn csv_neutralizes_a_leading_tab() {
    assert_csv_neutralized("\t=1");
}

#[test]
fn csv_neutralizes_a_leading_carriage_return() {
    assert_csv_neutralized("\r=1");
}

#[test]
fn csv_text_that_already_starts_with_a_quote_round_trips() {
    // `'=1` must not read back as `=1`, nor `''=1` as `'=1`.
    for text in ["'=1", "''=1", "'plain", "'", "''", "it's", "'-"] {
        let t = vec![entry(1, "Ann", text, None)];
        assert_eq!(read_csv(&write_csv(&t).unwrap()).unwrap(), t, "{text:?}");
    }
}

#[test]
fn html_is_one_self_contained_page_with_text_escaped() {
    let t = vec![
        moderator("Welcome"),
        entry(1, "Eve <img src=x onerror=alert(1)>", "<script>alert('pwned')</script> & \"friends\"", None),
        entry(2, "Mallory", "</div><style>body{display:none}</style>", Some("Eve".into())),
        entry(3, "<script>alert(1)</script>\"'&", "I agree.", None),
    ];
    let r = results(t);
    let a = analyze_conversation(&r);
    let html = String::from_utf8(export::exporter("html").unwrap().export(&r, &a).unwrap()).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    // Quotes are escaped where they could end an attribute; `'` needs no escaping, as every
    // attribute is double-quoted.
    assert!(html.contains("&lt;script&gt;alert('pwned')&lt;/script&gt; &amp; &quot;friends&quot;"));
    // The hostile persona's name in the persona list, the persona table and the transcript.
    let name = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;'&amp;";
    assert_eq!(html.matches(&format!("<td>{name}</td>")).count(), 2, "the list and the 13-column table");
    assert!(html.contains(&format!("<span class=\"who\">{name}</span>")), "the transcript");
    assert!(html.contains("Eve &lt;img src=x onerror=alert(1)&gt;"));
    assert!(html.contains("&lt;/div&gt;&lt;style&gt;"));
    let lower = html.to_lowercase();
    assert!(!lower.contains("<script"), "no script element at all");
    assert!(!lower.contains("<img"));
    assert_eq!(lower.matches("<style>").count(), 1, "only the page's own inline style");
    for external in ["src=\"http", "href=\"http", "@import", "url(", "<link", "<iframe"] {
        assert!(!lower.contains(external), "{external}");
    }
    assert_eq!(lower.matches("<svg").count(), 5, "the five charts are inline");
    for section in ["Personas", "Analysis", "Charts", "Transcript", "Metrics"] {
        assert!(html.contains(&format!("<h2>{section}</h2>")), "{section}");
    }
}

#[test]
fn markdown_report_has_every_section_and_escapes_html() {
    let r = results(vec![
        moderator("Welcome"),
        entry(1, "Ann", "<script>x</script> costs | 5 *stars*", None),
        entry(2, "Ben", "I agree with Ann.", Some("Ann".into())),
    ]);
    let a = analyze_conversation(&r);
    let md = String::from_utf8(export::exporter("markdown").unwrap().export(&r, &a).unwrap()).unwrap();
    for h in ["## Personas", "## Transcript", "## Analysis", "## Metrics", "### Turn-taking", "### Mentions"] {
        assert!(md.contains(h), "{h}");
    }
    assert!(md.contains("&lt;script&gt;x&lt;/script&gt; costs \\| 5 \\*stars\\*"), "{md}");
    assert!(!md.contains("<script>"));
}

#[test]
fn every_format_has_an_exporter_and_json_is_the_results_shape() {
    let names: Vec<&str> = export::exporters().iter().map(|e| e.name()).collect();
    assert_eq!(names, ["json", "jsonl", "csv", "markdown", "html"]);
    let exts: Vec<&str> = export::exporters().iter().map(|e| e.extension()).collect();
    assert_eq!(exts, ["json", "jsonl", "csv", "md", "html"]);
    let r = results(vec![entry(1, "Ann", "hello, world", None)]);
    let a = analyze_conversation(&r);
    let json = export::json::JsonExporter.export(&r, &a).unwrap();
    let back: SimulationResults = serde_json::from_slice(&json).unwrap();
    assert_eq!(back.transcript, r.transcript);
    assert_eq!(back.run_id, r.run_id);
    let e = export::exporter("docx").unwrap_err().to_string();
    assert!(e.contains("json, jsonl, csv, markdown, html"), "{e}");
}

#[test]
fn analyze_and_export_commands_work_on_a_saved_run() {
    let out = tempfile::tempdir().unwrap();
    let o = troupe()
        .args(["run", "scenarios/quickstart.ron", "--quiet", "--turns", "2", "--rate-limit-delay", "0"])
        .args(["--set", "llm.provider=simulated", "--set", "output.auto_analysis=false", "--output-dir"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let conv = out.path().join("conversations");
    let run = std::fs::read_dir(&conv).unwrap().next().unwrap().unwrap().path();
    assert!(!run.join("analysis.json").exists(), "auto_analysis = false");

    let o = troupe().arg("analyze").arg(&run).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("participation: Gini"), "{stdout}");
    assert!(run.join("analysis.json").exists());
    assert_eq!(std::fs::read_dir(run.join("charts")).unwrap().count(), 5);

    for (fmt, ext) in [("json", "json"), ("jsonl", "jsonl"), ("csv", "csv"), ("markdown", "md"), ("html", "html")] {
        let o = troupe().arg("export").arg(&run).args(["--format", fmt]).output().unwrap();
        assert!(o.status.success(), "{fmt}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(run.join(format!("export.{ext}")).exists(), "{fmt}");
    }
    let target = out.path().join("t.csv");
    let o = troupe().arg("export").arg(&run).args(["--format", "csv", "--out"]).arg(&target).output().unwrap();
    assert!(o.status.success());
    let t = read_csv(&std::fs::read(&target).unwrap()).unwrap();
    let saved = troupe_sim::analysis::load_run(&run).unwrap();
    assert_eq!(t, saved.transcript);
    let o = troupe().arg("export").arg(&run).args(["--format", "jsonl", "--out", "-"]).output().unwrap();
    assert_eq!(read_jsonl(&o.stdout).unwrap(), saved.transcript);

    // A folder without a run is a usage error (exit 2) that says what to give.
    let o = troupe().arg("analyze").arg(out.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("results.json"));
    assert!(!Path::new(&out.path().join("analysis.json")).exists());
}
