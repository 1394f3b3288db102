//! Writing a persona database back without losing anything in it.
//!
//! Before a file is written it is read back with the loader: a file the loader cannot read
//! (truncated, invalid UTF-8, empty, not JSON, not a persona container) is refused and left as
//! it is, because writing it would replace what it holds with only what the caller has. The
//! file keeps its shape: an array stays an array; an object with a `personas` array keeps its
//! other keys, in order; a single-persona (or single-agent) file stays one object and is never
//! turned into a list. Items the caller did not get from the loader (fragments, items that are
//! not readable personas) stay where they are. Writes are atomic, after a backup of the old file.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::PersonaError;
use super::load::{Layout, PersonaDatabase};
use super::spec::{Origin, PersonaSpec};
use super::tinytroupe;
use crate::fsutil::write_atomic;

/// Where [`add_personas`] put the new personas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveTarget {
    /// There was no file: a new JSON array file was made.
    NewFile,
    /// An existing file, saved in its own shape.
    File(Layout),
    /// A folder: one new file per persona, every existing file untouched.
    Folder,
}

/// What [`add_personas`] did, for callers to report it truthfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveReport {
    /// How the database was written.
    pub target: SaveTarget,
    /// The files written: the database file, or the new files in the folder.
    pub written: Vec<PathBuf>,
    /// The copy of the previous file (`backup_root/<timestamp>/<name>`), when one was made.
    pub backup: Option<PathBuf>,
    /// Personas added.
    pub added: usize,
    /// Personas in the database after the save.
    pub total: usize,
}

/// Saves `personas` to the file `path`: they become the file's personas, in the file's own
/// shape (see the module docs); a missing file becomes a JSON array. The previous file, if any,
/// is first copied to `backup_root/<timestamp>/<file name>`. Returns the backup path when one
/// was made.
///
/// Refused, with the file left untouched: an existing file the loader cannot read
/// ([`PersonaError::Unreadable`]); a single-persona file that would have to hold other than one
/// ([`PersonaError::SingleFile`]); a folder ([`PersonaError::IsFolder`]; see [`add_personas`]).
/// The write is atomic: on any failure the old file is left as it was.
pub fn save_personas(
    path: &Path,
    personas: &[PersonaSpec],
    backup_root: &Path,
) -> Result<Option<PathBuf>, PersonaError> {
    if path.is_dir() {
        return Err(PersonaError::IsFolder { path: path.to_path_buf() });
    }
    let existing = read_back(path)?;
    let value = match existing {
        None => Value::Array(personas.iter().map(PersonaSpec::to_saved_value).collect()),
        Some(e) => e.merged(path, personas)?,
    };
    let mut bytes = serde_json::to_vec_pretty(&value)
        .map_err(|e| PersonaError::Invalid { field: String::new(), message: e.to_string() })?;
    bytes.push(b'\n');
    let backup = if path.exists() {
        let dir = new_backup_dir(backup_root).map_err(io(backup_root))?;
        let name = path.file_name().unwrap_or_else(|| "personas.json".as_ref());
        let dest = dir.join(name);
        std::fs::copy(path, &dest).map_err(io(&dest))?;
        Some(dest)
    } else {
        None
    };
    write_atomic(path, &bytes).map_err(io(path))?;
    Ok(backup)
}

/// Reads the database at `path` back the way [`add_personas`] will, and fails now when adding
/// `count` personas would be refused: an unreadable file or folder, or a single-persona file.
/// Lets a caller check before doing costly work (asking a model for drafts). `Ok(None)` when
/// nothing is there yet.
pub fn check_add(path: &Path, count: usize) -> Result<Option<PersonaDatabase>, PersonaError> {
    let unreadable = |cause| PersonaError::Unreadable { path: path.to_path_buf(), cause: Box::new(cause) };
    match std::fs::metadata(path) {
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            return Ok(None);
        }
        Err(e) => return Err(PersonaError::Io { path: path.to_path_buf(), source: e }),
        Ok(m) if m.is_dir() => {
            return match PersonaDatabase::load(path) {
                // New files are all an empty folder needs.
                Err(PersonaError::EmptyFolder { .. }) => Ok(Some(PersonaDatabase::default())),
                other => other.map(Some).map_err(unreadable),
            };
        }
        Ok(_) => {}
    }
    let db = PersonaDatabase::load(path).map_err(unreadable)?;
    if let Some(kind) = single_kind(&db) {
        // The file's one object stays (a persona or not), so any addition makes two or more.
        if count > 0 {
            return Err(PersonaError::SingleFile { path: path.to_path_buf(), kind, count: 1 + count });
        }
    }
    Ok(Some(db))
}

/// Adds `new` personas to the database at `path` and says what it did:
///
/// - nothing there: a new JSON array file;
/// - a file: read back first, then saved in its own shape with the new personas at the end
///   (as [`save_personas`]: atomic, with a backup); a single-persona file is refused;
/// - a folder: each new persona gets a file of its own, `<id>.json` (`<id>.agent.json` for a
///   TinyTroupe agent; `-2`, `-3`, ... when the name is taken), so no existing file is touched.
///
/// An id already in the database (or twice in `new`) is refused: adding never replaces.
pub fn add_personas(path: &Path, new: &[PersonaSpec], backup_root: &Path) -> Result<SaveReport, PersonaError> {
    let db = check_add(path, new.len())?;
    let mut seen: HashSet<&str> = db.iter().flat_map(|d| &d.personas).map(|p| p.id.as_str()).collect();
    if let Some(p) = new.iter().find(|p| !seen.insert(p.id.as_str())) {
        return Err(PersonaError::DuplicateId { path: path.to_path_buf(), id: p.id.clone() });
    }
    let before = db.as_ref().map_or(0, |d| d.personas.len());
    if path.is_dir() {
        let written = add_to_folder(path, new)?;
        return Ok(SaveReport {
            target: SaveTarget::Folder,
            written,
            backup: None,
            added: new.len(),
            total: before + new.len(),
        });
    }
    let target = match &db {
        None => SaveTarget::NewFile,
        Some(d) => SaveTarget::File(d.files.first().map_or(Layout::Array, |f| f.layout)),
    };
    let mut all = db.map(|d| d.personas).unwrap_or_default();
    all.extend(new.iter().cloned());
    let backup = save_personas(path, &all, backup_root)?;
    Ok(SaveReport { target, written: vec![path.to_path_buf()], backup, added: new.len(), total: all.len() })
}

/// The file as read back: its JSON, its shape, and which items the loader read as which persona.
struct Existing {
    layout: Layout,
    value: Value,
    /// Item index (in the array, the `personas` array, or 0 for a single object) -> persona id.
    ids: HashMap<usize, String>,
    single: Option<&'static str>,
}

/// Reads an existing database file back with the loader; `None` when there is no file.
fn read_back(path: &Path) -> Result<Option<Existing>, PersonaError> {
    let unreadable = |cause| PersonaError::Unreadable { path: path.to_path_buf(), cause: Box::new(cause) };
    match std::fs::symlink_metadata(path) {
        // Nothing there (or a parent that is not a folder): the write will say what is wrong.
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            return Ok(None);
        }
        Err(e) => return Err(PersonaError::Io { path: path.to_path_buf(), source: e }),
        Ok(_) => {}
    }
    let db = PersonaDatabase::load(path).map_err(unreadable)?;
    let Some(file) = db.files.first() else {
        return Err(unreadable(PersonaError::Empty { path: path.to_path_buf() }));
    };
    let value = super::load::parse_json_file(path, file.text()).map_err(unreadable)?;
    let ids = db
        .locations
        .iter()
        .zip(&db.personas)
        .filter_map(|(loc, p)| {
            let index = match loc.pointer.rsplit_once('/') {
                None => 0,
                Some((_, i)) => i.parse().ok()?,
            };
            Some((index, p.id.clone()))
        })
        .collect();
    Ok(Some(Existing { layout: file.layout, value, ids, single: single_kind(&db) }))
}

impl Existing {
    /// The file's JSON with `personas` as its personas: each item the loader read as a persona
    /// takes the caller's persona of the same id (or goes, when the caller has none), every
    /// other item stays where it is, and the caller's other personas follow at the end.
    fn merged(self, path: &Path, personas: &[PersonaSpec]) -> Result<Value, PersonaError> {
        match (self.layout, self.value) {
            (Layout::Array, Value::Array(items)) => Ok(Value::Array(merge(items, &self.ids, personas))),
            (Layout::Wrapped, Value::Object(mut o)) => {
                if let Some(slot) = o.get_mut("personas") {
                    let items = match slot.take() {
                        Value::Array(items) => items,
                        _ => Vec::new(),
                    };
                    *slot = Value::Array(merge(items, &self.ids, personas));
                }
                Ok(Value::Object(o))
            }
            (_, v) => {
                let mut items = merge(vec![v], &self.ids, personas);
                let kind = self.single.unwrap_or("persona");
                match items.len() {
                    1 => Ok(items.remove(0)),
                    count => Err(PersonaError::SingleFile { path: path.to_path_buf(), kind, count }),
                }
            }
        }
    }
}

fn merge(items: Vec<Value>, ids: &HashMap<usize, String>, personas: &[PersonaSpec]) -> Vec<Value> {
    let mut by_id: HashMap<&str, VecDeque<usize>> = HashMap::new();
    for (j, p) in personas.iter().enumerate() {
        by_id.entry(p.id.as_str()).or_default().push_back(j);
    }
    let mut used = vec![false; personas.len()];
    let mut out = Vec::with_capacity(items.len().max(personas.len()));
    for (i, item) in items.into_iter().enumerate() {
        match ids.get(&i) {
            // A fragment, or an item the loader could not read as a persona: the caller never
            // had it, so it stays as it is.
            None => out.push(item),
            Some(id) => {
                if let Some(j) = by_id.get_mut(id.as_str()).and_then(VecDeque::pop_front) {
                    used[j] = true;
                    out.push(personas[j].to_saved_value());
                }
            }
        }
    }
    out.extend(personas.iter().zip(&used).filter(|(_, u)| !**u).map(|(p, _)| p.to_saved_value()));
    out
}

/// What a one-object file holds (`agent`, `fragment`, `persona`); `None` for a list.
fn single_kind(db: &PersonaDatabase) -> Option<&'static str> {
    match db.files.first().map(|f| f.layout) {
        Some(Layout::Fragment) => Some("fragment"),
        Some(Layout::Single) => Some(match db.personas.first().map(|p| &p.origin) {
            Some(Origin::TinyTroupe { .. }) => "agent",
            _ => "persona",
        }),
        _ => None,
    }
}

/// Writes each persona to a new file in `dir`; on failure removes the ones already written.
fn add_to_folder(dir: &Path, new: &[PersonaSpec]) -> Result<Vec<PathBuf>, PersonaError> {
    let mut written: Vec<PathBuf> = Vec::with_capacity(new.len());
    for p in new {
        let result = (|| {
            let value = p.to_saved_value();
            let agent = value.as_object().is_some_and(tinytroupe::is_agent);
            let dest = free_name(dir, &file_stem(&p.id), if agent { ".agent.json" } else { ".json" }, &written);
            let mut bytes = serde_json::to_vec_pretty(&value)
                .map_err(|e| PersonaError::Invalid { field: String::new(), message: e.to_string() })?;
            bytes.push(b'\n');
            write_atomic(&dest, &bytes).map_err(io(&dest))?;
            Ok(dest)
        })();
        match result {
            Ok(dest) => written.push(dest),
            Err(e) => {
                for w in &written {
                    let _ = std::fs::remove_file(w);
                }
                return Err(e);
            }
        }
    }
    Ok(written)
}

/// A file name from an id: letters, digits, `_` and `-` kept, anything else `_`.
fn file_stem(id: &str) -> String {
    let stem: String =
        id.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    if stem.is_empty() { "persona".into() } else { stem }
}

/// `dir/stem.ext`, or `dir/stem-2.ext`, ... when that name is taken.
fn free_name(dir: &Path, stem: &str, ext: &str, taken: &[PathBuf]) -> PathBuf {
    let mut n = 1u32;
    loop {
        let name = if n == 1 { format!("{stem}{ext}") } else { format!("{stem}-{n}{ext}") };
        let p = dir.join(name);
        if !taken.contains(&p) && std::fs::symlink_metadata(&p).is_err() {
            return p;
        }
        n += 1;
    }
}

fn io(p: &Path) -> impl Fn(std::io::Error) -> PersonaError {
    let p = p.to_path_buf();
    move |source| PersonaError::Io { path: p.clone(), source }
}

/// Creates `backup_root/<timestamp>/`, adding `-2`, `-3`, ... when a save in the same millisecond
/// already took the name, so one backup never overwrites another.
fn new_backup_dir(backup_root: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(backup_root)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let mut n = 1u32;
    loop {
        let dir = if n == 1 { backup_root.join(&stamp) } else { backup_root.join(format!("{stamp}-{n}")) };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 10_000 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stems_are_safe_names() {
        assert_eq!(file_stem("nurse_ana-2"), "nurse_ana-2");
        assert_eq!(file_stem("../etc/passwd"), "___etc_passwd");
        assert_eq!(file_stem(""), "persona");
        assert_eq!(file_stem("é").len(), 1);
    }
}
