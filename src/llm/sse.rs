//! An incremental server-sent-events parser.
//!
//! Feed it the body's byte chunks as they arrive, wherever the network split them; it returns
//! each event once its terminating blank line has been seen. It follows the WHATWG event-stream
//! rules that matter for chat completions: `data:` lines (several make one multi-line event),
//! `event:` names, `:` comments, and `\n`, `\r\n` or `\r` line endings. It never panics: bytes
//! that are not UTF-8 are replaced, unknown fields are ignored.

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name, when one was given.
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

impl SseEvent {
    /// True for OpenAI's end-of-stream marker `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data.trim() == "[DONE]"
    }
}

/// The parser's state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line not yet terminated.
    line: Vec<u8>,
    /// The last chunk ended in `\r`: a `\n` opening the next chunk belongs to that line end.
    after_cr: bool,
    /// The first line has not been seen yet (a UTF-8 byte-order mark there is dropped).
    at_start: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        SseParser { at_start: true, ..Default::default() }
    }

    /// Parses `chunk` and appends every event it completes to `out`.
    pub fn feed_into(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) {
        let mut rest = chunk;
        // An empty chunk must not forget a pending CR: the LF may still open the next one.
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some(r) = rest.strip_prefix(b"\n") {
                rest = r;
            }
        }
        while let Some(i) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..i]);
            let is_cr = rest[i] == b'\r';
            rest = &rest[i + 1..];
            if is_cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let line = std::mem::take(&mut self.line);
            if let Some(ev) = self.line_done(&line) {
                out.push(ev);
            }
        }
        self.line.extend_from_slice(rest);
    }

    /// Parses `chunk` and returns the events it completes.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        self.feed_into(chunk, &mut out);
        out
    }

    /// The end of the stream: an unterminated last line and event are taken as complete
    /// (lenient: some servers close without the final blank line).
    pub fn finish(&mut self) -> Option<SseEvent> {
        let line = std::mem::take(&mut self.line);
        let mut ev = None;
        if !line.is_empty() {
            ev = self.line_done(&line);
        }
        ev.or_else(|| self.dispatch())
    }

    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        let mut line = line;
        if self.at_start {
            self.at_start = false;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            return self.dispatch();
        }
        if line.first() == Some(&b':') {
            return None;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        Some(SseEvent { event, data: std::mem::take(&mut self.data) })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed_into(c, &mut out);
        }
        out.extend(p.finish());
        out
    }

    fn data(s: &str) -> SseEvent {
        SseEvent { event: None, data: s.into() }
    }

    #[test]
    fn basics() {
        let s = b": keep-alive\n\ndata: {\"a\":1}\n\ndata: line one\ndata:line two\n\nevent: ping\ndata: x\n\ndata: [DONE]\n\n";
        let ev = parse_all(&[s]);
        assert_eq!(ev.len(), 4);
        assert_eq!(ev[0], data("{\"a\":1}"));
        assert_eq!(ev[1], data("line one\nline two"));
        assert_eq!(ev[2].event.as_deref(), Some("ping"));
        assert!(ev[3].is_done());
    }

    #[test]
    fn line_endings_and_bom() {
        let crlf = parse_all(&[b"\xEF\xBB\xBFdata: a\r\n\r\ndata: b\r\rdata: c\n\n"]);
        assert_eq!(crlf, vec![data("a"), data("b"), data("c")]);
        // A CR at the end of one chunk and the LF opening the next are one line end.
        assert_eq!(parse_all(&[b"data: a\r", b"\n\r", b"\n"]), vec![data("a")]);
        // ... even with an empty chunk between them.
        assert_eq!(parse_all(&[b"data: a\r", b"", b"\ndata: b\r", b"", b"\n\n"]), vec![data("a\nb")]);
    }

    #[test]
    fn unterminated_tail_and_empty_data() {
        assert_eq!(parse_all(&[b"data: a\n\ndata: b"]), vec![data("a"), data("b")]);
        assert_eq!(parse_all(&[b"data\n\n"]), vec![data("")]);
        assert_eq!(parse_all(&[b"event: x\n\n:only a comment\n\n"]), vec![]);
    }

    #[derive(Debug, Clone)]
    struct Stream {
        events: Vec<SseEvent>,
        bytes: Vec<u8>,
    }

    fn stream() -> impl Strategy<Value = Stream> {
        let line = "[^\r\n]{0,12}";
        let ev = (proptest::option::of("[a-z]{1,6}"), proptest::collection::vec(line, 1..4), any::<bool>());
        (proptest::collection::vec(ev, 0..6), 0..3usize).prop_map(|(evs, eol)| {
            let eol = ["\n", "\r\n", "\r"][eol];
            let mut bytes = String::new();
            let mut events = Vec::new();
            for (name, lines, comment) in evs {
                if comment {
                    bytes.push_str(&format!(": note{eol}"));
                }
                if let Some(n) = &name {
                    bytes.push_str(&format!("event: {n}{eol}"));
                }
                for l in &lines {
                    bytes.push_str(&format!("data: {l}{eol}"));
                }
                bytes.push_str(eol);
                events.push(SseEvent { event: name, data: lines.join("\n") });
            }
            Stream { events, bytes: bytes.into_bytes() }
        })
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(
            s in stream(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(s.bytes.len() + 1)).collect();
            at.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut from = 0;
            for c in at {
                chunks.push(&s.bytes[from..c]);
                from = c;
            }
            chunks.push(&s.bytes[from..]);
            prop_assert_eq!(parse_all(&chunks), s.events);
        }

        #[test]
        fn never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8)) {
            let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let _ = parse_all(&refs);
        }
    }
}
