//! The run journal: `journal.jsonl` in a run's folder, written as the run goes.
//!
//! It opens with a header (the plan, the merged config without secrets, the run seed, versions)
//! and then records each event as it happens: turn starts, every paid LLM exchange (the
//! request's key and the response with its usage), messages, thoughts, passes, skips, retries,
//! fallbacks, interventions and the end. Each record is one line, written straight to the file;
//! the file is fsynced at least once per turn (or after every record, or never, by
//! `output.journal_fsync`). After a crash the last line may be torn: the reader ignores it.
//!
//! `troupe resume` rebuilds a run from its journal: the recorded exchanges answer the same
//! requests again without calling the provider, so the personas' memories and the world come
//! back to the exact point where the run stopped, and the run goes on from there.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{FsyncPolicy, SimulationConfig};
use crate::llm::ChatResponse;
use crate::record::transcript::{FinalState, RunEvent, TranscriptEntry};
use crate::scenario::RunPlan;

/// The journal format's version.
pub const FORMAT: u32 = 1;
/// The journal's file name in a run folder.
pub const FILE_NAME: &str = "journal.jsonl";
/// The largest journal read (a run folder is untrusted input).
pub const MAX_JOURNAL_BYTES: u64 = 4 << 30;

/// The first record: everything needed to run the same simulation again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Journal format.
    pub format: u32,
    /// troupe-sim version that wrote it.
    pub troupe_version: String,
    /// The run's id (its folder name).
    pub run_id: String,
    /// Provider name, part of every exchange's key.
    pub provider: String,
    /// Where the provider's calls went (base URLs, never keys); empty for in-process providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// The merged config, the API key removed.
    pub config: SimulationConfig,
    /// The plan.
    pub plan: RunPlan,
    /// When the run started.
    pub started_at: chrono::DateTime<chrono::Utc>,
}

/// One paid LLM exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// Persona id.
    pub persona: String,
    /// Turn.
    pub turn: u32,
    /// Why the call was made; written as the lowercase word ("act", "summary", ...), as
    /// journals always held it.
    pub purpose: crate::llm::Purpose,
    /// The request's key (hex): provider, model and normalized request.
    pub key: String,
    /// The answer.
    pub response: ChatResponse,
    /// Attempts it took.
    pub attempts: u32,
    /// True when the answer came from a recording (resume, replay, fork), not from the provider.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

/// The header's line: `{"header": {...}}`. Every other line is a [`RunEvent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct HeaderLine {
    header: Header,
}

/// Errors reading or writing a journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal could not be read or written.
    #[error("{}: {source}; check that the run folder is writable and the disk has space", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line in the middle is not a record (only the last line may be torn).
    #[error("{}:{line}: not a journal record ({message}); the journal is damaged before its last line", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// serde_json's message.
        message: String,
    },
    /// The first line is not a header.
    #[error("{}: the journal has no header; is this a troupe-sim run folder?", path.display())]
    NoHeader {
        /// The file.
        path: PathBuf,
    },
    /// The first line is a header, but not of the expected shape (a damaged or hand-made file).
    #[error(
        "{}:{line}: the journal header is not of the expected shape: {message}; the run folder is damaged or was not written by this troupe-sim",
        path.display()
    )]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The field path and what is wrong with it.
        message: String,
    },
    /// The journal file is larger than a journal this troupe-sim reads.
    #[error("{}: {size} bytes, more than the {MAX_JOURNAL_BYTES} bytes a journal may hold; is this a journal?", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Written by a newer troupe-sim.
    #[error("{}: journal format {found} is newer than this troupe-sim understands ({FORMAT}); upgrade troupe-sim", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The format found.
        found: u32,
    },
}

/// Appends records to a journal file.
#[derive(Debug)]
pub struct JournalWriter {
    path: PathBuf,
    file: File,
    fsync: FsyncPolicy,
    tap: Option<JournalTap>,
    /// Lines queued and not yet written (see [`JournalWriter::queue`]).
    pending: Vec<u8>,
}

/// Receives a copy of every line a journal writes (the header first), each ending in `\n`, as
/// soon as it is queued for the file: how a cluster worker sends its journal elsewhere while it
/// runs.
pub type JournalTap = tokio::sync::mpsc::UnboundedSender<Vec<u8>>;

impl JournalWriter {
    /// Creates (or truncates) the journal at `path` and writes the header.
    pub fn create(path: &Path, header: &Header, fsync: FsyncPolicy) -> Result<Self, JournalError> {
        Self::create_tapped(path, header, fsync, None)
    }

    /// [`JournalWriter::create`], also sending every line to `tap`.
    pub fn create_tapped(
        path: &Path,
        header: &Header,
        fsync: FsyncPolicy,
        tap: Option<JournalTap>,
    ) -> Result<Self, JournalError> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(|source| JournalError::Io { path: path.to_path_buf(), source })?;
        let mut w = JournalWriter { path: path.to_path_buf(), file, fsync, tap, pending: Vec::new() };
        w.line(&HeaderLine { header: header.clone() });
        w.flush()?;
        w.sync()?;
        Ok(w)
    }

    /// Appends one event as one line, written straight to the file.
    pub fn append(&mut self, e: &RunEvent) -> Result<(), JournalError> {
        self.queue(e)?;
        self.flush()
    }

    /// Adds one event to the lines the next [`JournalWriter::flush`] writes in one go, which is
    /// how a run's collector writes the events that arrived together. A turn's or the run's end
    /// (every event with `journal_fsync = "record"`) is written and forced to disk at once.
    pub fn queue(&mut self, e: &RunEvent) -> Result<(), JournalError> {
        self.line(e);
        let boundary = matches!(e, RunEvent::TurnEnded { .. } | RunEvent::Finished(_));
        if self.fsync == FsyncPolicy::Record || (self.fsync == FsyncPolicy::Turn && boundary) {
            self.flush()?;
            self.sync()?;
        }
        Ok(())
    }

    fn line(&mut self, v: &impl Serialize) {
        let start = self.pending.len();
        // Serializing these plain types cannot fail.
        if serde_json::to_writer(&mut self.pending, v).is_err() {
            self.pending.truncate(start);
            return;
        }
        self.pending.push(b'\n');
        if let Some(tap) = &self.tap
            && tap.send(self.pending[start..].to_vec()).is_err()
        {
            self.tap = None;
        }
    }

    /// Writes the queued lines.
    pub fn flush(&mut self) -> Result<(), JournalError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(&self.pending);
        self.pending.clear();
        written.map_err(|source| JournalError::Io { path: self.path.clone(), source })
    }

    /// Forces the file to disk.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.file.sync_data().map_err(|source| JournalError::Io { path: self.path.clone(), source })
    }
}

impl Drop for JournalWriter {
    /// Lines still queued are written (a writer dropped on an error path keeps what it had).
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// A journal as read back.
#[derive(Debug, Clone)]
pub struct Journal {
    /// The header.
    pub header: Header,
    /// The events after it, in order.
    pub records: Vec<RunEvent>,
    /// True when a torn last line was ignored.
    pub torn_tail: bool,
}

impl Journal {
    /// The recorded exchanges.
    pub fn exchanges(&self) -> impl Iterator<Item = &Exchange> {
        self.records.iter().filter_map(|r| if let RunEvent::Exchange(e) = r { Some(e) } else { None })
    }

    /// The transcript messages.
    pub fn messages(&self) -> impl Iterator<Item = &TranscriptEntry> {
        self.records.iter().filter_map(|r| if let RunEvent::Message(m) = r { Some(m) } else { None })
    }

    /// How the run ended, when it did.
    pub fn end(&self) -> Option<&FinalState> {
        self.records.iter().rev().find_map(|r| if let RunEvent::Finished(f) = r { Some(f) } else { None })
    }

    /// The last turn that was fully completed.
    pub fn completed_turns(&self) -> u32 {
        self.records
            .iter()
            .filter_map(|r| if let RunEvent::TurnEnded { turn } = r { Some(*turn) } else { None })
            .max()
            .unwrap_or(0)
    }
}

/// Reads a journal. A torn last line (a crash mid-write) is ignored; a bad line anywhere else
/// is an error.
pub fn read_journal(path: &Path) -> Result<Journal, JournalError> {
    let bytes = crate::fsutil::read_limited(path, MAX_JOURNAL_BYTES).map_err(|e| match e {
        crate::fsutil::ReadError::TooLarge { size } => JournalError::TooLarge { path: path.to_path_buf(), size },
        crate::fsutil::ReadError::Io(source) => JournalError::Io { path: path.to_path_buf(), source },
    })?;
    parse_journal(path, &bytes)
}

/// Reads only a journal's header (the run's config and plan), not its records.
pub fn read_header(path: &Path) -> Result<Header, JournalError> {
    use std::io::{BufRead, Read};
    let io = |source| JournalError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io)?;
    let mut reader = std::io::BufReader::new(file.take(MAX_JOURNAL_BYTES));
    let mut line = Vec::new();
    let mut line_no = 0;
    loop {
        line.clear();
        line_no += 1;
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
            return Err(JournalError::NoHeader { path: path.to_path_buf() });
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            break;
        }
    }
    let header = parse_header(path, line_no, &line)?;
    if header.format > FORMAT {
        return Err(JournalError::Format { path: path.to_path_buf(), found: header.format });
    }
    Ok(header)
}

/// Parses journal bytes (`path` only names the file in errors).
pub fn parse_journal(path: &Path, bytes: &[u8]) -> Result<Journal, JournalError> {
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // A complete file ends with a newline, so the last piece is empty; anything else there is a
    // line the crash cut short.
    let mut torn_tail = false;
    if let Some(last) = lines.pop()
        && !last.iter().all(u8::is_ascii_whitespace)
    {
        torn_tail = true;
    }
    let n = lines.len();
    let mut header = None;
    let mut records = Vec::with_capacity(n);
    for (i, line) in lines.into_iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if header.is_none() {
            header = Some(parse_header(path, i + 1, line)?);
            continue;
        }
        match serde_json::from_slice::<RunEvent>(line) {
            Ok(r) => records.push(r),
            // An unreadable last line is what a crash leaves (a zero-filled tail, say).
            Err(_) if i + 1 == n => torn_tail = true,
            Err(e) => {
                return Err(JournalError::Corrupt { path: path.to_path_buf(), line: i + 1, message: e.to_string() });
            }
        }
    }
    let Some(header) = header else {
        return Err(JournalError::NoHeader { path: path.to_path_buf() });
    };
    if header.format > FORMAT {
        return Err(JournalError::Format { path: path.to_path_buf(), found: header.format });
    }
    Ok(Journal { header, records, torn_tail })
}

/// Reads the header line: a line that is not a `{"header": ...}` object is no header; one that
/// is but does not fit the expected shape is an error naming the field.
fn parse_header(path: &Path, line_no: usize, line: &[u8]) -> Result<Header, JournalError> {
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|_| JournalError::NoHeader { path: path.to_path_buf() })?;
    let Some(h) = v.get("header") else {
        return Err(JournalError::NoHeader { path: path.to_path_buf() });
    };
    let header: Header = serde_path_to_error::deserialize(h).map_err(|e| {
        let at = e.path().to_string();
        let message = if at == "." { e.inner().to_string() } else { format!("`header.{at}`: {}", e.inner()) };
        JournalError::BadHeader { path: path.to_path_buf(), line: line_no, message }
    })?;
    Ok(header)
}

/// Every journal segment of a run folder, oldest first: `journal.1.jsonl`, `journal.2.jsonl`,
/// ... (kept by earlier resumes) and then `journal.jsonl`.
pub fn segments(run_dir: &Path) -> Vec<PathBuf> {
    let mut numbered: Vec<(u32, PathBuf)> = std::fs::read_dir(run_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: u32 = name.strip_prefix("journal.")?.strip_suffix(".jsonl")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    numbered.sort();
    let mut out: Vec<PathBuf> = numbered.into_iter().map(|(_, p)| p).collect();
    let main = run_dir.join(FILE_NAME);
    if main.exists() {
        out.push(main);
    }
    out
}

/// Moves `journal.jsonl` aside as the next numbered segment, so a resume can write a fresh one
/// without losing anything if it is itself interrupted.
pub fn rotate(run_dir: &Path) -> Result<Option<PathBuf>, JournalError> {
    let main = run_dir.join(FILE_NAME);
    if !main.exists() {
        return Ok(None);
    }
    let next = (1..).map(|n| run_dir.join(format!("journal.{n}.jsonl"))).find(|p| !p.exists()).unwrap_or_default();
    std::fs::rename(&main, &next).map_err(|source| JournalError::Io { path: main.clone(), source })?;
    Ok(Some(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            format: FORMAT,
            troupe_version: "t".into(),
            run_id: "r".into(),
            provider: "simulated".into(),
            endpoints: Vec::new(),
            config: SimulationConfig::default(),
            plan: RunPlan::ad_hoc("topic", vec![]),
            started_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let mut w = JournalWriter::create(&p, &header(), FsyncPolicy::Turn).unwrap();
        w.append(&RunEvent::TurnStarted { turn: 1 }).unwrap();
        w.append(&RunEvent::TurnEnded { turn: 1 }).unwrap();
        drop(w);
        let j = read_journal(&p).unwrap();
        assert_eq!(j.records.len(), 2);
        assert!(!j.torn_tail);
        assert_eq!(j.completed_turns(), 1);
        // A crash mid-line.
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.extend_from_slice(b"{\"event\":\"turn_sta");
        let j = parse_journal(&p, &bytes).unwrap();
        assert!(j.torn_tail);
        assert_eq!(j.records.len(), 2);
    }

    /// Queued events reach the file together at a flush; a turn's end is written at once, and a
    /// dropped writer writes what it still held.
    #[test]
    fn queued_events_are_written_together() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let lines = || std::fs::read_to_string(&p).unwrap().lines().count();
        let mut w = JournalWriter::create(&p, &header(), FsyncPolicy::Turn).unwrap();
        w.queue(&RunEvent::TurnStarted { turn: 1 }).unwrap();
        w.queue(&RunEvent::Passed { turn: 1, persona: "a".into() }).unwrap();
        assert_eq!(lines(), 1, "only the header before the flush");
        w.flush().unwrap();
        assert_eq!(lines(), 3);
        w.queue(&RunEvent::TurnEnded { turn: 1 }).unwrap();
        assert_eq!(lines(), 4, "a turn's end is written at once");
        w.queue(&RunEvent::TurnStarted { turn: 2 }).unwrap();
        drop(w);
        assert_eq!(read_journal(&p).unwrap().records.len(), 4);
    }

    #[test]
    fn damage_before_the_end_is_an_error_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let mut w = JournalWriter::create(&p, &header(), FsyncPolicy::Never).unwrap();
        w.append(&RunEvent::TurnStarted { turn: 1 }).unwrap();
        w.append(&RunEvent::TurnEnded { turn: 1 }).unwrap();
        drop(w);
        let text = std::fs::read_to_string(&p).unwrap().replacen("turn_started", "nonsense", 1);
        let e = parse_journal(&p, text.as_bytes()).unwrap_err();
        assert!(e.to_string().contains(":2:"), "{e}");
        assert!(matches!(parse_journal(&p, b""), Err(JournalError::NoHeader { .. })));
    }

    #[test]
    fn segments_are_ordered_and_rotation_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "x\n").unwrap();
        assert_eq!(rotate(dir.path()).unwrap(), Some(dir.path().join("journal.1.jsonl")));
        std::fs::write(dir.path().join(FILE_NAME), "y\n").unwrap();
        rotate(dir.path()).unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "z\n").unwrap();
        let names: Vec<String> =
            segments(dir.path()).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, vec!["journal.1.jsonl", "journal.2.jsonl", "journal.jsonl"]);
    }
}
