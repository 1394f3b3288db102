//! Writing a persona database back: atomic, with a backup of the previous file.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::PersonaError;
use super::spec::PersonaSpec;
use crate::fsutil::write_atomic;

/// Saves `personas` to `path` as a JSON array (native personas in the native schema, TinyTroupe
/// ones as their original objects). The previous file, if any, is first copied to
/// `backup_root/<timestamp>/<file name>`. Returns the backup path when one was made.
///
/// The write is atomic: on any failure the old file is left as it was.
pub fn save_personas(
    path: &Path,
    personas: &[PersonaSpec],
    backup_root: &Path,
) -> Result<Option<PathBuf>, PersonaError> {
    let values: Vec<Value> = personas.iter().map(PersonaSpec::to_saved_value).collect();
    let mut bytes = serde_json::to_vec_pretty(&values)
        .map_err(|e| PersonaError::Invalid { field: String::new(), message: e.to_string() })?;
    bytes.push(b'\n');
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| PersonaError::Io { path: p, source }
    };
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
