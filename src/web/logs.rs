//! A small tracing layer that keeps the last log lines in a ring buffer, for the Settings
//! page's debug view.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Lines kept by default.
pub const DEFAULT_LINES: usize = 500;

/// The last log lines, oldest first. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct LogBuffer {
    // A std mutex: held only to push or copy lines, never across an await.
    lines: Arc<Mutex<VecDeque<String>>>,
    cap: usize,
}

impl Default for LogBuffer {
    fn default() -> Self {
        LogBuffer::new(DEFAULT_LINES)
    }
}

impl LogBuffer {
    /// A buffer keeping at most `cap` lines.
    pub fn new(cap: usize) -> Self {
        LogBuffer { lines: Arc::new(Mutex::new(VecDeque::with_capacity(cap.min(4096)))), cap: cap.max(1) }
    }

    /// Adds a line, dropping the oldest when full.
    pub fn push(&self, line: String) {
        let mut l = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() == self.cap {
            l.pop_front();
        }
        l.push_back(line);
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// A tracing layer writing into this buffer.
    pub fn layer(&self) -> LogLayer {
        LogLayer { buf: self.clone() }
    }
}

/// The tracing layer behind [`LogBuffer`].
#[derive(Debug, Clone)]
pub struct LogLayer {
    buf: LogBuffer,
}

struct Fields(String);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let m = event.metadata();
        let mut f = Fields(format!("{} {:5} {}:", chrono::Utc::now().format("%H:%M:%S%.3f"), m.level(), m.target()));
        event.record(&mut f);
        self.buf.push(f.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines() {
        let b = LogBuffer::new(2);
        for i in 0..5 {
            b.push(i.to_string());
        }
        assert_eq!(b.lines(), vec!["3", "4"]);
    }
}
