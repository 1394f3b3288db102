//! Finding the API key: `.troupe/secrets.toml`, then the environment, then the config file.

use std::path::{Path, PathBuf};

use super::secret::SecretString;
use super::settings::SimulationConfig;

/// Where the key was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `.troupe/secrets.toml` (or the given secrets file).
    SecretsFile(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// The layered config (`llm.api_key`): the least safe place.
    Config,
    /// No key anywhere.
    Missing,
}

/// The key and where it came from, plus warnings about how safely it is stored.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// The key, when found.
    pub key: Option<SecretString>,
    /// Where.
    pub source: KeySource,
    /// Warnings (file readable by others, key in the config file).
    pub warnings: Vec<String>,
}

/// The default secrets file.
pub const SECRETS_FILE: &str = ".troupe/secrets.toml";

/// Looks for the key in the documented order. `env_var` is `OPENAI_API_KEY` or
/// `AZURE_OPENAI_API_KEY`.
pub fn resolve_api_key(cfg: &SimulationConfig, secrets_file: &Path, env_var: &'static str) -> ApiKey {
    resolve_api_key_from(cfg, secrets_file, &[env_var])
}

/// The environment variables that hold OpenAI's key.
pub const OPENAI_KEY_VARS: &[&str] = &["OPENAI_API_KEY"];
/// The environment variables that hold Azure OpenAI's key: the Azure SDK's name, then the one
/// TinyTroupe reads.
pub const AZURE_KEY_VARS: &[&str] = &["AZURE_OPENAI_API_KEY", "AZURE_OPENAI_KEY"];

/// As [`resolve_api_key`], trying each of `env_vars` in turn (Azure's key has two names).
pub fn resolve_api_key_from(cfg: &SimulationConfig, secrets_file: &Path, env_vars: &[&'static str]) -> ApiKey {
    let mut warnings = Vec::new();
    if let Ok(text) = crate::fsutil::read_input(secrets_file, crate::fsutil::MAX_CONFIG_BYTES, "a secrets file")
        .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
    {
        #[derive(serde::Deserialize)]
        struct Secrets {
            api_key: Option<SecretString>,
        }
        match toml::from_str::<Secrets>(&text) {
            Ok(Secrets { api_key: Some(k) }) if !k.is_empty() => {
                if readable_by_others(secrets_file) {
                    warnings.push(format!(
                        "{} is readable by other users; run `chmod 600 {}`",
                        secrets_file.display(),
                        secrets_file.display()
                    ));
                }
                return ApiKey { key: Some(k), source: KeySource::SecretsFile(secrets_file.to_path_buf()), warnings };
            }
            Ok(_) => {}
            // The parse error could quote the key's line, so only the position is reported.
            Err(e) => warnings.push(format!(
                "{}: not valid TOML ({}); expected api_key = \"...\"",
                secrets_file.display(),
                e.span().map(|s| format!("at byte {}", s.start)).unwrap_or_default()
            )),
        }
    }
    for &env_var in env_vars {
        if let Ok(k) = std::env::var(env_var)
            && !k.trim().is_empty()
        {
            return ApiKey { key: Some(SecretString::new(k)), source: KeySource::Env(env_var), warnings };
        }
    }
    if let Some(k) = cfg.llm.api_key.clone().filter(|k| !k.is_empty()) {
        warnings
            .push("the API key is in the config file, the least safe place; move it to .troupe/secrets.toml".into());
        return ApiKey { key: Some(k), source: KeySource::Config, warnings };
    }
    ApiKey { key: None, source: KeySource::Missing, warnings }
}

#[cfg(unix)]
fn readable_by_others(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.permissions().mode() & 0o077 != 0).unwrap_or(false)
}

#[cfg(not(unix))]
fn readable_by_others(_: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_file_wins_and_warns_when_open() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secrets.toml");
        std::fs::write(&f, "api_key = \"sk-file\"\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let k = resolve_api_key(&SimulationConfig::default(), &f, "TROUPE_TEST_NO_SUCH_VAR");
        assert_eq!(k.key.unwrap().expose(), "sk-file");
        #[cfg(unix)]
        assert!(k.warnings[0].contains("chmod 600"));
    }

    #[test]
    fn config_key_is_last_and_warned() {
        let mut c = SimulationConfig::default();
        c.llm.api_key = Some(SecretString::new("sk-cfg"));
        let k = resolve_api_key(&c, Path::new("/nonexistent/secrets.toml"), "TROUPE_TEST_NO_SUCH_VAR");
        assert_eq!(k.source, KeySource::Config);
        assert!(!k.warnings.is_empty());
    }
}
