//! Health checks (`troupe doctor`, and the web app's Settings page): the configuration loads,
//! personas validate, the output folder is writable and has room, prices load, the API key is
//! found (never shown) and the provider answers.
//!
//! Every check is a [`Check`] row; a [`Status::Fail`] means a run would not work, a
//! [`Status::Warn`] that it would, with a risk worth knowing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{KeySource, LoadedConfig, ProviderKind, SimulationConfig, source_of};
use crate::cost::Pricing;
use crate::llm::{LlmError, Provider, provider_from_config, server_configured};
use crate::persona::{PersonaDatabase, validate_database};

/// Free space under which the disk check warns.
pub const LOW_DISK_BYTES: u64 = 1 << 30;

/// How a check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, with a risk worth knowing.
    Warn,
    /// A run would fail.
    Fail,
    /// Not run because an earlier check failed.
    Skip,
}

impl Status {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// How it went.
    pub status: Status,
    /// What was found and, when it is not ok, what to do.
    pub detail: String,
}

impl Check {
    fn new(name: &str, status: Status, detail: impl Into<String>) -> Self {
        Check { name: name.into(), status, detail: detail.into() }
    }
}

/// Where the checks look besides the config.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// The secrets file (`.troupe/secrets.toml`).
    pub secrets_file: PathBuf,
    /// Longest wait for the provider's answer.
    pub provider_timeout: Duration,
}

impl DoctorOptions {
    /// The defaults: the usual secrets file, the config's `persona_timeout`.
    pub fn for_config(cfg: &SimulationConfig) -> Self {
        DoctorOptions {
            secrets_file: PathBuf::from(crate::config::secrets::SECRETS_FILE),
            provider_timeout: Duration::from_secs_f64(cfg.performance.persona_timeout.clamp(1.0, 120.0)),
        }
    }
}

/// True when no check failed (warnings allowed).
pub fn healthy(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// The report when the configuration itself does not load: that failure, and every other
/// check skipped (they all depend on it).
pub fn config_failed(error: &str) -> Vec<Check> {
    let mut out = vec![Check::new("configuration", Status::Fail, error)];
    for name in CHECK_NAMES.iter().skip(1) {
        out.push(Check::new(name, Status::Skip, "needs a configuration that loads"));
    }
    out
}

/// The checks, in report order.
pub const CHECK_NAMES: [&str; 7] =
    ["configuration", "personas", "output folder", "disk space", "pricing", "api key", "provider"];

/// Runs every check against a loaded configuration.
pub async fn run_checks(loaded: &LoadedConfig, opts: &DoctorOptions) -> Vec<Check> {
    let cfg = &loaded.config;
    // Built once, as a run builds it: the key row says what this provider will do with the key
    // (or without one), and the provider row calls it.
    let provider = provider_from_config(cfg);
    vec![
        check_config(loaded),
        check_personas(&cfg.simulation.personas_file),
        check_output(&cfg.output.output_dir),
        check_disk(&cfg.output.output_dir),
        check_pricing(cfg),
        check_key(loaded, &opts.secrets_file, provider.as_ref().ok().map(|(p, _)| p.as_ref())),
        check_provider(cfg, provider, opts.provider_timeout).await,
    ]
}

/// Which layers were read and how many keys each set; notes turn it into a warning.
pub fn check_config(loaded: &LoadedConfig) -> Check {
    let entries = loaded.entries();
    let mut layers = Vec::new();
    for m in loaded.figment.metadata() {
        let label = match &m.source {
            Some(s) => format!("{} ({s})", m.name),
            None => m.name.to_string(),
        };
        if layers.iter().any(|(l, _)| *l == label) {
            continue;
        }
        let n = entries.iter().filter(|e| e.source == label).count();
        layers.push((label, n));
    }
    let mut detail = layers
        .iter()
        .map(|(l, n)| format!("{l}: {n} key{}", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join("; ");
    let names = env_names();
    if !names.is_empty() {
        detail.push_str(&format!("; environment: {}", names.join(", ")));
    }
    if loaded.notes.is_empty() {
        return Check::new("configuration", Status::Ok, detail);
    }
    detail.push_str(&format!("; {}", loaded.notes.join("; ")));
    Check::new("configuration", Status::Warn, detail)
}

// Names only: the values may hold a key.
fn env_names() -> Vec<String> {
    let mut v: Vec<String> = std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .filter(|k| k.starts_with("TROUPE_") && k.contains("__"))
        .collect();
    v.sort();
    v
}

/// The persona database loads and validates.
pub fn check_personas(path: &Path) -> Check {
    let db = match PersonaDatabase::load(path) {
        Ok(db) => db,
        Err(e) => {
            return Check::new(
                "personas",
                Status::Fail,
                format!("{e}; fix the file or point simulation.personas_file at another one"),
            );
        }
    };
    let r = validate_database(&db);
    let summary = format!(
        "{}: {} persona(s) in {} file(s), {} error(s), {} warning(s)",
        path.display(),
        r.personas,
        r.files,
        r.errors(),
        r.warnings()
    );
    match (r.errors(), r.warnings()) {
        (0, 0) => Check::new("personas", Status::Ok, summary),
        (0, _) => Check::new("personas", Status::Warn, format!("{summary}; `troupe validate` lists them")),
        _ => Check::new("personas", Status::Fail, format!("{summary}; `troupe validate` lists what to fix")),
    }
}

/// The output folder exists (created if missing) and takes a file.
pub fn check_output(dir: &Path) -> Check {
    let hint = "set output.output_dir (or --output-dir) to a folder you can write";
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Check::new("output folder", Status::Fail, format!("cannot create {}: {e}; {hint}", dir.display()));
    }
    let probe = dir.join(format!(".troupe-doctor-{}", std::process::id()));
    if let Err(e) = std::fs::write(&probe, b"probe") {
        return Check::new("output folder", Status::Fail, format!("cannot write in {}: {e}; {hint}", dir.display()));
    }
    if let Err(e) = std::fs::remove_file(&probe) {
        return Check::new(
            "output folder",
            Status::Warn,
            format!("{} is writable but the probe {} could not be removed: {e}", dir.display(), probe.display()),
        );
    }
    Check::new("output folder", Status::Ok, format!("{} is writable", dir.display()))
}

/// Free space where runs are saved; warns under [`LOW_DISK_BYTES`].
pub fn check_disk(dir: &Path) -> Check {
    // The folder may not exist (the output check failed): measure its nearest existing parent.
    let mut at = dir.to_path_buf();
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p.to_path_buf(),
            _ => {
                at = PathBuf::from(".");
                break;
            }
        }
    }
    // What an unprivileged user may still write (statvfs's f_bavail), not the root reserve.
    match fs4::available_space(&at) {
        Ok(free) => {
            let text = format!("{} free at {}", human_bytes(free), at.display());
            if free < LOW_DISK_BYTES {
                Check::new("disk space", Status::Warn, format!("{text}; under 1 GiB: long runs may not fit"))
            } else {
                Check::new("disk space", Status::Ok, text)
            }
        }
        Err(e) => Check::new("disk space", Status::Warn, format!("cannot measure free space at {}: {e}", at.display())),
    }
}

/// "12.3 GiB".
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// The pricing table loads and prices the model.
pub fn check_pricing(cfg: &SimulationConfig) -> Check {
    let path = &cfg.llm.pricing_file;
    if !path.exists() {
        return Check::new(
            "pricing",
            Status::Warn,
            format!("{} not found: every cost counts as 0; restore it or set llm.pricing_file", path.display()),
        );
    }
    match Pricing::load(path) {
        Err(e) => Check::new("pricing", Status::Fail, e.to_string()),
        Ok(p) => {
            let model = &cfg.llm.model;
            match p.price(model) {
                Some(pr) => Check::new(
                    "pricing",
                    Status::Ok,
                    format!(
                        "{}: {} model(s); {model} costs ${} in / ${} out per million tokens",
                        path.display(),
                        p.models.len(),
                        pr.input,
                        pr.output
                    ),
                ),
                None => Check::new(
                    "pricing",
                    Status::Warn,
                    format!(
                        "{}: {} model(s), none for {model}: its cost counts as 0 and max_cost_usd cannot stop it; add [models.\"{model}\"] input = ... output = ...",
                        path.display(),
                        p.models.len()
                    ),
                ),
            }
        }
    }
}

/// Where the API key is, how safely it is kept, and what the run will do with it (or without
/// one): which server it is sent to, or that the server is called without a key, or which
/// offline provider `auto` chose. `provider` is the one a run would build (`None` when it
/// cannot be built: the provider row says why). Never shows the key.
pub fn check_key(loaded: &LoadedConfig, secrets_file: &Path, provider: Option<&dyn Provider>) -> Check {
    let cfg = &loaded.config;
    // The key of the provider the config selects (Azure's has two names).
    let choice = crate::llm::choose_provider(cfg);
    let var = choice.key_vars.join(" or ");
    let k = crate::config::secrets::resolve_api_key_from(cfg, secrets_file, choice.key_vars);
    let mut warnings = k.warnings.clone();
    let put_it = format!("put api_key = \"...\" in {} (chmod 600) or set {var}", secrets_file.display());
    let kind = provider.map(|p| p.name());
    let (status, mut detail) = match (&k.source, kind) {
        (KeySource::Missing, _) if cfg.llm.provider == ProviderKind::Simulated => {
            (Status::Ok, "none needed: the simulated provider runs offline".to_string())
        }
        (KeySource::Missing, _) if cfg.llm.provider == ProviderKind::Local => {
            (Status::Ok, "none needed: the local model runs in-process".to_string())
        }
        (KeySource::Missing, Some("local")) => (
            Status::Ok,
            format!(
                "no key and no server: auto runs the embedded local model in-process; for OpenAI {put_it}, or set llm.base_url for a server"
            ),
        ),
        (KeySource::Missing, Some("simulated")) => (
            Status::Warn,
            format!(
                "no key and no server: auto runs the built-in simulated provider, whose text is synthetic (the provider row says why the local model is not used); for real text run `troupe model fetch`, {put_it}, or set llm.base_url"
            ),
        ),
        (KeySource::Missing, Some(name @ ("openai" | "azure"))) => {
            let targets = provider.map(|p| p.endpoints()).unwrap_or_default();
            without_key(cfg, name, &targets, &put_it)
        }
        (KeySource::Missing, _) => match cfg.llm.provider {
            ProviderKind::Azure => (Status::Fail, format!("none found: Azure OpenAI needs one; {put_it}")),
            _ => (Status::Warn, format!("none found (the provider cannot be set up: see its row); {put_it}")),
        },
        (source, kind) => {
            let shape = k.key.as_ref().map_or("…", key_shape);
            let (status, mut found) = found_key(loaded, source, &var, shape, &mut warnings);
            match (kind, provider) {
                (Some("openai" | "azure"), Some(p)) => {
                    found.push_str(&format!("; sent to {}", targets_text(&p.endpoints())));
                }
                (Some(other), _) => found.push_str(&format!("; not used: the {other} provider needs none")),
                (None, _) => {}
            }
            (status, found)
        }
    };
    let named: Vec<&str> = cfg.llm.endpoints.iter().filter_map(|e| e.api_key_env.as_deref()).collect();
    if !named.is_empty() {
        detail.push_str(&format!("; endpoints also read {}", named.join(", ")));
    }
    if !warnings.is_empty() {
        detail.push_str(&format!("; {}", warnings.join("; ")));
    }
    let status = if status == Status::Ok && !warnings.is_empty() { Status::Warn } else { status };
    Check::new("api key", status, detail)
}

/// Where a found key is and how safe that place is.
/// `shape` is what may be shown of the key (`sk-…`).
fn found_key(
    loaded: &LoadedConfig,
    source: &KeySource,
    var: &str,
    shape: &str,
    warnings: &mut Vec<String>,
) -> (Status, String) {
    match source {
        KeySource::SecretsFile(p) => {
            let mode = file_mode(p).map(|m| format!(", mode {m:o}")).unwrap_or_default();
            let status = if warnings.is_empty() { Status::Ok } else { Status::Warn };
            (status, format!("found in {} ({shape}redacted){mode}: the safest place", p.display()))
        }
        KeySource::Env(v) => (
            Status::Ok,
            format!(
                "found in the environment variable {v} ({shape}redacted); .troupe/secrets.toml (chmod 600) keeps it out of shell history"
            ),
        ),
        KeySource::Config => {
            // resolve_api_key's own warning says the same less precisely.
            warnings.retain(|w| !w.contains("least safe"));
            (
                Status::Warn,
                format!(
                    "found in {}: the least safe place (it can end up in shell history, a shared file or a commit); move it to .troupe/secrets.toml (chmod 600) or {var}",
                    source_of(&loaded.figment, "llm.api_key")
                ),
            )
        }
        KeySource::Missing => (Status::Ok, String::new()),
    }
}

/// No key, and an HTTP provider: which server is called without one, and whether that can work.
fn without_key(cfg: &SimulationConfig, name: &str, targets: &[String], put_it: &str) -> (Status, String) {
    let setting = if !cfg.llm.endpoints.is_empty() {
        "llm.endpoints"
    } else if name == "azure" {
        if cfg.llm.azure_endpoint.as_deref().is_some_and(|e| !e.trim().is_empty()) {
            "llm.azure_endpoint"
        } else {
            "AZURE_OPENAI_ENDPOINT"
        }
    } else if cfg.llm.base_url.as_deref().is_some_and(|u| !u.trim().is_empty()) {
        "llm.base_url"
    } else if server_configured(cfg) {
        "OPENAI_BASE_URL"
    } else {
        ""
    };
    let urls = targets_text(targets);
    if name == "azure" {
        return (Status::Fail, format!("none found: Azure OpenAI ({setting} = {urls}) needs one; {put_it}"));
    }
    if setting.is_empty() {
        return (
            Status::Fail,
            format!(
                "no key found, and llm.provider = \"openai\" with no llm.base_url calls OpenAI's API ({urls}), which refuses calls without one: {put_it}, or set llm.base_url to a server that needs none"
            ),
        );
    }
    let called = if setting == "llm.endpoints" {
        format!("llm.endpoints = {urls}: those without api_key_env are called without a key")
    } else {
        format!("{setting} = {urls} will be called without a key")
    };
    (
        Status::Ok,
        format!(
            "no key found; {called} (fine for Ollama, vLLM or llama.cpp's server; one that needs a key answers 401: {put_it})"
        ),
    )
}

/// The start of a key that says what kind it is without saying anything of the key itself:
/// `sk-…` for OpenAI-style keys, else `…`.
fn key_shape(key: &crate::config::SecretString) -> &'static str {
    if key.expose().trim_start().starts_with("sk-") { "sk-…" } else { "…" }
}

/// Base URLs as shown (`openai::display_url`: no credentials).
fn targets_text(targets: &[String]) -> String {
    let shown: Vec<String> = targets.iter().map(|t| crate::llm::openai::display_url(t)).collect();
    if shown.is_empty() { "(no endpoint)".into() } else { shown.join(", ") }
}

#[cfg(unix)]
fn file_mode(p: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).ok().map(|m| m.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn file_mode(_: &Path) -> Option<u32> {
    None
}

/// The provider the config selects (`provider_from_config`'s answer, built by the caller) is
/// built and answers, with its latency.
pub async fn check_provider(
    cfg: &SimulationConfig,
    built: Result<(Arc<dyn Provider>, Option<String>), LlmError>,
    timeout: Duration,
) -> Check {
    let (provider, notice) = match built {
        Ok(p) => p,
        Err(e) => return Check::new("provider", Status::Fail, format!("cannot be set up: {e}")),
    };
    let name = provider.name().to_string();
    let t0 = Instant::now();
    let answer = tokio::time::timeout(timeout, provider.health(&cfg.llm.model)).await;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let mut detail = match answer {
        Ok(Ok(what)) => format!("{name}: {what} in {ms:.0} ms"),
        Ok(Err(e)) => {
            return Check::new("provider", Status::Fail, format!("{name} did not answer after {ms:.0} ms: {e}"));
        }
        Err(_) => {
            return Check::new(
                "provider",
                Status::Fail,
                format!(
                    "{name}: no answer within {:.0} s; check llm.base_url and the network (performance.persona_timeout sets the wait)",
                    timeout.as_secs_f64()
                ),
            );
        }
    };
    if provider.synthetic() {
        detail.push_str(" (synthetic text, no network)");
    }
    detail.push_str(&format!("; chosen because {}", crate::llm::choose_provider(cfg).why));
    if let Some(n) = notice {
        detail.push_str(&format!("; {n}"));
    }
    Check::new("provider", Status::Ok, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn an_output_folder_under_a_file_fails_and_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let c = check_output(&file.join("out"));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("plain/out"), "{}", c.detail);
        // Disk space is still measured, at the nearest existing parent.
        let disk = check_disk(&file.join("out"));
        assert_ne!(disk.status, Status::Fail);
        assert!(disk.detail.contains(" free at ") && disk.detail.ends_with("plain"), "{}", disk.detail);
    }

    #[test]
    fn a_writable_folder_is_left_clean() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("new");
        assert_eq!(check_output(&out).status, Status::Ok);
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    }

    #[test]
    fn warnings_do_not_make_it_unhealthy() {
        let rows = vec![Check::new("a", Status::Ok, ""), Check::new("b", Status::Warn, "")];
        assert!(healthy(&rows));
        assert!(!healthy(&config_failed("bad")));
        assert_eq!(config_failed("bad").len(), CHECK_NAMES.len());
    }
}
