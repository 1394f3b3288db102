//! Hearing graphs from files: one pair of persona ids per line, for graphs too large to write in
//! a scenario (`hearing: RelationsFile("town.csv")`). Read in one pass, in linear time, into a
//! compact [`EdgeList`] (two `u32` per pair).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::schema::EdgeList;

/// Why a graph file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EdgeFileError {
    /// The file cannot be read (or is too large).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a pair of ids.
    #[error("{}:{line}: {message}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong and what to write instead.
        message: String,
    },
}

/// The largest graph file read (a million personas with 8 neighbours each is about 150 MB).
pub const MAX_EDGE_FILE_BYTES: u64 = 2 << 30;

/// Reads `a,b` lines (comma, tab or spaces between the ids; `#` starts a comment; a first line
/// `source,target`, `listener,speaker` or `from,to` is a header and skipped). A pair of a persona with
/// itself is left out.
pub fn read_edges(path: &Path, directed: bool) -> Result<EdgeList, EdgeFileError> {
    let bytes = crate::fsutil::read_input(path, MAX_EDGE_FILE_BYTES, "a hearing graph file")
        .map_err(|source| EdgeFileError::Io { path: path.to_path_buf(), source })?;
    let text = String::from_utf8(bytes).map_err(|e| EdgeFileError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8 text: {e}")),
    })?;
    parse_edges(path, text.trim_start_matches('\u{feff}'), directed)
}

/// Parses the text of a graph file (`path` names it in errors).
pub fn parse_edges(path: &Path, text: &str, directed: bool) -> Result<EdgeList, EdgeFileError> {
    let mut index: HashMap<&str, u32> = HashMap::new();
    let mut ids: Vec<String> = Vec::new();
    let mut pairs = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split([',', '\t', ' ']).map(str::trim).filter(|p| !p.is_empty());
        let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(EdgeFileError::Line {
                path: path.to_path_buf(),
                line: n + 1,
                message: format!(
                    "expected two persona ids, like `sarah_chen,marcus_rivera`; found {:?}",
                    line.chars().take(80).collect::<String>()
                ),
            });
        };
        if pairs.is_empty()
            && ids.is_empty()
            && matches!(
                (a.to_ascii_lowercase().as_str(), b.to_ascii_lowercase().as_str()),
                ("source", "target") | ("listener", "speaker") | ("from", "to")
            )
        {
            continue;
        }
        if a == b {
            continue;
        }
        let mut id_of = |s: &str| -> Result<u32, EdgeFileError> {
            if let Some(&i) = index.get(s) {
                return Ok(i);
            }
            let i = u32::try_from(ids.len()).map_err(|_| EdgeFileError::Line {
                path: path.to_path_buf(),
                line: n + 1,
                message: "more than 4 billion persona ids".into(),
            })?;
            ids.push(s.to_string());
            Ok(i)
        };
        let (ia, ib) = (id_of(a)?, id_of(b)?);
        // The map borrows from the text, which outlives it: no copy per lookup.
        index.insert(a, ia);
        index.insert(b, ib);
        pairs.push((ia, ib));
    }
    Ok(EdgeList { directed, ids, pairs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_comments_headers_and_separators() {
        let text = "source,target\n# a comment\na,b\nb\tc  # trailing\n c  a \n\nd,d\n";
        let e = parse_edges(Path::new("g.csv"), text, false).unwrap();
        assert_eq!(e.ids, ["a", "b", "c"]);
        assert_eq!(e.pairs, [(0, 1), (1, 2), (2, 0)]);
        assert!(!e.directed);
    }

    #[test]
    fn a_bad_line_is_named() {
        let e = parse_edges(Path::new("g.csv"), "a,b\na,b,c\n", true).unwrap_err();
        assert!(e.to_string().starts_with("g.csv:2: expected two persona ids"), "{e}");
        let e = parse_edges(Path::new("g.csv"), "lonely\n", true).unwrap_err();
        assert!(e.to_string().contains("g.csv:1:"), "{e}");
    }
}
