//! The layering of `src/`: every `crate::` path in the library's code (imports, paths in
//! expressions, test modules included; comments and strings excluded) must point down the
//! layers below. A path that points up or sideways fails with its file:line and the rule.
//!
//! ```text
//! faces        web                       (and the `troupe` binary, src/cli, above it all)
//! tools        experiment  stress  doctor
//! after a run  review                    (analysis + in-character judge, called by the faces)
//! runtime      engine
//! checks       export  validation
//! actors       actors  analysis          (analysis reads saved records only)
//! planning     estimate
//! records      record  prompt
//! accounting   cost  memory
//! providers    llm
//! scenario     scenario
//! data         persona  model
//! settings     config
//! foundation   text
//! base         rng  fsutil
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first. A module may import modules of lower layers only.
const LAYERS: &[(&str, &[&str])] = &[
    ("base", &["rng", "fsutil"]),
    ("foundation", &["text"]),
    ("settings", &["config"]),
    ("data", &["persona", "model"]),
    ("scenario", &["scenario"]),
    ("providers", &["llm"]),
    ("accounting", &["cost", "memory"]),
    ("records", &["record", "prompt"]),
    ("planning", &["estimate"]),
    ("actors", &["actors", "analysis"]),
    ("checks", &["export", "validation"]),
    ("runtime", &["engine", "monitoring"]),
    ("after a run", &["review"]),
    ("tools", &["experiment", "stress", "doctor"]),
    ("distributed", &["cluster"]),
    ("faces", &["web"]),
];

/// The rules the issue named, said in their own words when broken (the layers imply them).
const NEVER: &[(&[&str], &[&str], &str)] = &[
    (
        &["llm"],
        &["actors", "engine", "review", "prompt", "validation", "experiment", "stress", "web"],
        "providers know nothing of the runtime or of personas' prompts",
    ),
    (
        &["persona", "scenario", "config"],
        &["llm", "actors", "engine", "prompt", "memory", "record", "review"],
        "data knows no runtime and no provider",
    ),
    (&["actors"], &["web", "engine", "review", "experiment", "stress", "doctor"], "actors never import what runs them"),
    (
        &["analysis", "export"],
        &["actors", "engine", "review", "validation", "experiment", "stress", "web"],
        "analysis and exports read saved records only, so they work on old runs too",
    ),
];

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS.iter().enumerate().find(|(_, (_, mods))| mods.contains(&module)).map(|(i, (name, _))| (i, *name))
}

/// One `crate::<module>` path: where, from which top-level module, to which.
#[derive(Debug, Clone)]
struct Edge {
    file: PathBuf,
    line: usize,
    from: String,
    to: String,
}

/// The code of a Rust file with comments, strings and char literals blanked out (newlines kept,
/// so line numbers stay right).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[u8]| {
        for &c in s {
            out.push(if c == b'\n' { '\n' } else { ' ' });
        }
    };
    while i < b.len() {
        let rest = &b[i..];
        let end = if rest.starts_with(b"//") {
            rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len())
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            let mut j = 0;
            loop {
                if j + 1 >= rest.len() {
                    break rest.len();
                }
                if rest[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break j;
                    }
                } else {
                    j += 1;
                }
            }
        } else if let Some(n) = raw_string_len(rest) {
            n
        } else if rest[0] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(rest.len())
        } else if rest[0] == b'\'' && char_literal_len(rest).is_some() {
            char_literal_len(rest).unwrap_or(1)
        } else {
            out.push(rest[0] as char);
            i += 1;
            continue;
        };
        blank(&mut out, &rest[..end]);
        i += end;
    }
    out
}

/// `r"..."`, `r#"..."#`, `br"..."` at the start of `s` (not an identifier ending in r).
fn raw_string_len(s: &[u8]) -> Option<usize> {
    let start = if s.starts_with(b"br") {
        2
    } else if s.starts_with(b"r") {
        1
    } else {
        return None;
    };
    let hashes = s[start..].iter().take_while(|&&c| c == b'#').count();
    if s.get(start + hashes) != Some(&b'"') {
        return None;
    }
    let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
    let body = start + hashes + 1;
    let end = s[body..].windows(close.len()).position(|w| w == close.as_slice())?;
    Some(body + end + close.len())
}

/// `'a'`, `'\n'`, `'\u{1F600}'` at the start of `s`; `None` for a lifetime (`'a`).
fn char_literal_len(s: &[u8]) -> Option<usize> {
    if s.get(1) == Some(&b'\\') {
        let close = s[2..].iter().position(|&c| c == b'\'')?;
        return Some(close + 3);
    }
    let text = std::str::from_utf8(&s[1..s.len().min(6)]).ok().or_else(|| std::str::from_utf8(&s[1..2]).ok())?;
    let c = text.chars().next()?;
    (s.get(1 + c.len_utf8()) == Some(&b'\'')).then_some(c.len_utf8() + 2)
}

/// The top-level modules a `crate::` path at `rest` names: one, or each item of a group.
fn targets(rest: &str) -> Vec<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let Some(group) = rest.strip_prefix('{') else {
        return vec![ident(rest)];
    };
    let mut out = Vec::new();
    let (mut depth, mut item_start) = (1, true);
    let mut chars = group.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => item_start = true,
            c if depth == 1 && item_start && (c.is_alphanumeric() || c == '_') => {
                let name = ident(&group[i..]);
                for _ in 1..name.chars().count() {
                    chars.next();
                }
                out.push(name);
                item_start = false;
            }
            _ => {}
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every `crate::` path of the library, by file and line.
fn edges(src: &Path) -> Vec<Edge> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
        let from = first.trim_end_matches(".rs").to_string();
        // The binary (main.rs, src/cli) is a face above everything; its `crate::` is its own.
        if from == "main" || from == "cli" || from == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = code_only(&text);
        for (n, line) in code.lines().enumerate() {
            let mut at = 0;
            while let Some(i) = line[at..].find("crate::") {
                let start = at + i;
                at = start + "crate::".len();
                let before = line[..start].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                // A group may span lines: read on from here.
                let rest: String = code.lines().skip(n).collect::<Vec<_>>().join("\n");
                let offset = line[..at].len();
                for to in targets(&rest[offset..]) {
                    if !to.is_empty() && to != from {
                        out.push(Edge { file: Path::new("src").join(rel), line: n + 1, from: from.clone(), to });
                    }
                }
            }
        }
    }
    out
}

/// The broken rules, one line each.
fn violations(edges: &[Edge]) -> Vec<String> {
    let mut out = Vec::new();
    for e in edges {
        let (Some((lf, nf)), Some((lt, nt))) = (layer_of(&e.from), layer_of(&e.to)) else {
            let unknown = if layer_of(&e.from).is_none() { &e.from } else { &e.to };
            out.push(format!(
                "{}:{}: module `{unknown}` is in no layer: add it to LAYERS in tests/architecture.rs",
                e.file.display(),
                e.line
            ));
            continue;
        };
        if lt < lf {
            continue;
        }
        let named = NEVER.iter().find(|(from, to, _)| from.contains(&e.from.as_str()) && to.contains(&e.to.as_str()));
        let rule = match named {
            Some((_, _, why)) => why.to_string(),
            None if lt == lf => format!("modules of one layer ({nf}) do not import each other"),
            None => "imports point down the layers".to_string(),
        };
        out.push(format!(
            "{}:{}: `{}` (layer {nf}) imports `{}` (layer {nt}): {rule}",
            e.file.display(),
            e.line,
            e.from,
            e.to
        ));
    }
    out
}

#[test]
fn every_import_points_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = edges(&src);
    assert!(found.len() > 50, "the scan found only {} crate:: paths: is it reading src/?", found.len());
    let bad = violations(&found);
    assert!(bad.is_empty(), "{} import(s) break the layering:\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn every_top_level_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let declared: BTreeSet<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").or_else(|| l.trim().strip_prefix("mod ")))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    let missing: Vec<_> = declared.iter().filter(|m| layer_of(m).is_none()).collect();
    assert!(missing.is_empty(), "modules in no layer of tests/architecture.rs: {missing:?}");
    let stale: Vec<_> = LAYERS.iter().flat_map(|(_, m)| m.iter()).filter(|m| !declared.contains(**m)).collect();
    assert!(stale.is_empty(), "LAYERS names modules src/lib.rs does not declare: {stale:?}");
}

#[test]
fn the_allowed_matrix_has_no_cycle() {
    // Layers are a strict order, so the allowed graph is acyclic by construction; this checks
    // that no module sits in two layers (which would let it import itself round).
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (layer, mods) in LAYERS {
        for m in *mods {
            if let Some(first) = seen.insert(m, layer) {
                panic!("`{m}` is in two layers: {first} and {layer}");
            }
        }
    }
}

#[test]
fn the_scanner_reads_groups_and_skips_comments_and_strings() {
    let code = code_only(
        "use crate::{a::X, b::{Y, Z}};\n// crate::c\nlet s = \"crate::d\"; let r = r#\"crate::e\"#;\nlet c = '\"'; fn f<'a>() -> crate::g::H {}\n/* crate::i */ x",
    );
    assert!(!code.contains("crate::c") && !code.contains("crate::d") && !code.contains("crate::e"));
    assert!(!code.contains("crate::i") && code.contains("crate::g::H"), "{code}");
    assert_eq!(targets("{a::X, b::{Y, Z}, c}"), ["a", "b", "c"]);
    assert_eq!(targets("engine::RunPlan;"), ["engine"]);
    let e = |from: &str, to: &str| Edge { file: "src/x.rs".into(), line: 3, from: from.into(), to: to.into() };
    let bad = violations(&[e("llm", "engine"), e("engine", "llm"), e("cost", "memory"), e("llm", "nowhere")]);
    assert_eq!(bad.len(), 3, "{bad:#?}");
    assert!(bad[0].starts_with("src/x.rs:3: `llm` (layer providers) imports `engine` (layer runtime): providers know"));
    assert!(bad[1].contains("modules of one layer (accounting)"));
    assert!(bad[2].contains("`nowhere` is in no layer"));
}
