//! Small file-system helpers: atomic writes, reads with a size limit, and the lock that makes
//! one process the owner of a run folder.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `path`'s folder and a fresh hidden temporary name in it.
fn temp_beside(path: &Path) -> (&Path, PathBuf) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (dir, dir.join(format!(".{name}.tmp.{}.{n}", std::process::id())))
}

/// Replaces `path` with `bytes` through a temporary file and a rename, so a reader never sees a
/// half-written file, but without forcing anything to disk: for many files made durable
/// together afterwards with [`sync_filesystem`].
pub fn write_replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (_, tmp) = temp_beside(path);
    let result = fs::write(&tmp, bytes).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Forces everything written to the filesystem holding `dir` to disk: one `syncfs` on Linux,
/// else every file under `dir`, then `dir` itself.
pub fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let d = File::open(dir)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: `d` is an open descriptor for the whole call.
        if unsafe { libc::syncfs(d.as_raw_fd()) } == 0 {
            return Ok(());
        }
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in fs::read_dir(&p)?.flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else {
                File::open(&path)?.sync_all()?;
            }
        }
    }
    d.sync_all()
}

/// Writes `bytes` to `path` atomically: a temp file in the same folder, fsync, rename, fsync of
/// the folder. A failure at any step leaves the old file untouched and removes the temp file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (dir, tmp) = temp_beside(path);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // Make the rename itself durable; not every platform can open a directory.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Why a limited read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file holds more than the limit (or never ends, like `/dev/zero`).
    #[error("larger than {size} bytes")]
    TooLarge {
        /// The limit that was passed.
        size: u64,
    },
    /// The OS refused.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The most read from something that is not a regular file (a pipe, a device).
const NON_FILE_LIMIT: u64 = 16 << 20;

/// Reads a whole file, refusing one larger than `limit` bytes. Reads at most `limit + 1` bytes,
/// so an endless file (`/dev/zero`, a pipe that never closes its end) cannot grow memory.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let f = File::open(path)?;
    let meta = f.metadata()?;
    // A device or a pipe has no size to check up front, and may never end: it gets a smaller
    // limit, so `/dev/zero` is refused after 16 MiB rather than after gigabytes.
    let limit = if meta.is_file() { limit } else { limit.min(NON_FILE_LIMIT) };
    let hint = meta.len();
    if hint > limit {
        return Err(ReadError::TooLarge { size: hint });
    }
    let mut bytes = Vec::with_capacity(hint.min(limit) as usize);
    f.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { size: bytes.len() as u64 });
    }
    Ok(bytes)
}

/// The most a config file (TOML, `config.ini`, secrets, pricing) may hold.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The most a scenario file may hold.
pub const MAX_SCENARIO_BYTES: u64 = 16 << 20;
/// The most one persona file may hold (a database of a million personas fits).
pub const MAX_PERSONA_FILE_BYTES: u64 = 2 << 30;
/// The most a saved run's file (`results.json`, `metrics.json`, `analysis.json`) may hold.
pub const MAX_RUN_FILE_BYTES: u64 = 4 << 30;

/// Reads an input file of kind `what` ("a scenario file") with a size limit, as an
/// `io::Error` that says what the limit is and what to do, so callers keep their error types.
pub fn read_input(path: &Path, limit: u64, what: &str) -> io::Result<Vec<u8>> {
    read_limited(path, limit).map_err(|e| match e {
        ReadError::Io(e) => e,
        ReadError::TooLarge { .. } => io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "larger than {}, the most {what} may hold (an endless or huge file?); check that this is the right file",
                human_bytes(limit)
            ),
        ),
    })
}

/// The size limit of an input file, in words for an error: "16 MiB".
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// The name of the lock file in a run folder.
pub const LOCK_FILE: &str = ".lock";

/// An exclusive lock on a run folder, held by this process until dropped (or until it dies:
/// the OS releases the lock with the process, so a crash never leaves a folder locked).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

/// Another process owns the folder.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Held by another process.
    #[error(
        "{} is in use by another troupe process{}; wait for it to finish or stop it, then try again",
        dir.display(),
        holder.as_deref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    Busy {
        /// The folder.
        dir: PathBuf,
        /// What the holder wrote into the lock file: its pid and command.
        holder: Option<String>,
    },
    /// The lock file cannot be made.
    #[error("cannot lock {}: {source}; check that the folder is writable", dir.display())]
    Io {
        /// The folder.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl DirLock {
    /// Takes the folder's lock without waiting; `what` (the command) is written beside the pid
    /// for whoever finds the folder busy.
    pub fn acquire(dir: &Path, what: &str) -> Result<DirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io { dir: dir.to_path_buf(), source };
        let mut f =
            fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(io)?;
        match f.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = (&f).take(256).read_to_string(&mut text);
                let holder = Some(text.trim().to_string()).filter(|t| !t.is_empty());
                return Err(LockError::Busy { dir: dir.to_path_buf(), holder });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let what: String = what.chars().filter(|c| !c.is_control()).take(80).collect();
        f.set_len(0).map_err(io)?;
        f.write_all(format!("pid {}, {what}", std::process::id()).as_bytes()).map_err(io)?;
        Ok(DirLock { _file: f, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failure_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing_dir").join("a.json");
        assert!(write_atomic(&p, b"x").is_err());
    }

    #[test]
    fn limited_reads_refuse_endless_and_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        fs::write(&p, vec![b'x'; 100]).unwrap();
        assert_eq!(read_limited(&p, 100).unwrap().len(), 100);
        assert!(matches!(read_limited(&p, 99), Err(ReadError::TooLarge { .. })));
        // An endless file: at most limit + 1 bytes are read.
        assert!(matches!(read_limited(Path::new("/dev/zero"), 1 << 20), Err(ReadError::TooLarge { .. })));
        assert_eq!(human_bytes(16 << 20), "16 MiB");
    }

    #[test]
    fn a_folder_has_one_owner_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), "troupe resume").unwrap();
        // Another open file description in this process conflicts just like another process.
        let e = DirLock::acquire(dir.path(), "troupe run").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("pid {}", std::process::id())) && msg.contains("troupe resume"), "{msg}");
        drop(first);
        DirLock::acquire(dir.path(), "troupe run").unwrap();
    }
}
