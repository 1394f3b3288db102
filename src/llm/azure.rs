//! Azure OpenAI: the OpenAI protocol at
//! `{endpoint}/openai/deployments/{deployment}/chat/completions?api-version={v}`, with the key
//! in an `api-key` header. Everything else is [`OpenAiProvider`]'s.
//!
//! The configured `llm.model` is served by `llm.azure_deployment` (or a deployment of the same
//! name); the models of the fallback chain are taken as deployment names.

use super::LlmError;
use super::openai::{Flavour, OpenAiOptions, OpenAiProvider, endpoints_from_config};
use crate::config::{LlmConfig, SecretString};
use crate::llm::ErrorKind;

/// Azure's settings beside the endpoints.
#[derive(Debug, Clone)]
pub struct AzureOptions {
    /// The configured model.
    pub model: String,
    /// Its deployment (the model's name when unset).
    pub deployment: Option<String>,
    /// `api-version`.
    pub api_version: String,
}

/// Where Azure requests go, as far as the settings and the environment say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureTarget {
    /// `llm.azure_endpoint`, else `AZURE_OPENAI_ENDPOINT` (`None` with `llm.endpoints`).
    pub endpoint: Option<String>,
    /// The deployment the configured model is served by.
    pub deployment: String,
    /// Where the deployment name came from, for notices.
    pub deployment_from: &'static str,
    /// True when the deployment was named (not taken from the model).
    pub named: bool,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// The endpoint and deployment for `llm`: `llm.azure_deployment`, else `AZURE_OPENAI_DEPLOYMENT`,
/// else the model's own name (what TinyTroupe sends: it uses the model name as the deployment).
pub fn target(llm: &LlmConfig) -> AzureTarget {
    let endpoint = if llm.endpoints.is_empty() {
        non_empty(llm.azure_endpoint.clone()).or_else(|| non_empty(std::env::var("AZURE_OPENAI_ENDPOINT").ok()))
    } else {
        None
    };
    let (deployment, deployment_from, named) = match non_empty(llm.azure_deployment.clone()) {
        Some(d) => (d, "llm.azure_deployment", true),
        None => match non_empty(std::env::var("AZURE_OPENAI_DEPLOYMENT").ok()) {
            Some(d) => (d, "AZURE_OPENAI_DEPLOYMENT", true),
            None => (llm.model.clone(), "the model name, as TinyTroupe does", false),
        },
    };
    AzureTarget { endpoint, deployment, deployment_from, named }
}

/// The chat-completions URL of `deployment` at `endpoint`.
pub fn chat_url(endpoint: &str, deployment: &str, api_version: &str) -> String {
    format!("{endpoint}/openai/deployments/{deployment}/chat/completions?api-version={api_version}")
}

impl OpenAiProvider {
    /// An Azure OpenAI provider; the endpoints' `base_url`s are resource endpoints
    /// (`https://NAME.openai.azure.com`).
    pub fn azure(mut opts: OpenAiOptions, azure: AzureOptions) -> Result<Self, LlmError> {
        if opts.key_hint.contains("OPENAI_API_KEY") {
            opts.key_hint = ".troupe/secrets.toml, AZURE_OPENAI_API_KEY or AZURE_OPENAI_KEY".into();
        }
        let flavour =
            Flavour::Azure { model: azure.model, deployment: azure.deployment, api_version: azure.api_version };
        Self::build("azure", opts, flavour)
    }

    /// The Azure provider `[llm]` describes (`azure_endpoint`, then `AZURE_OPENAI_ENDPOINT`, or
    /// `llm.endpoints`; the deployment as [`target`] says), with the key already resolved.
    pub fn azure_from_config(llm: &LlmConfig, key: Option<SecretString>) -> Result<Self, LlmError> {
        let (opts, azure) = azure_options_from_config(llm, key)?;
        Self::azure(opts, azure)
    }
}

/// The options [`OpenAiProvider::azure_from_config`] builds from, for a caller that adds to them.
pub fn azure_options_from_config(
    llm: &LlmConfig,
    key: Option<SecretString>,
) -> Result<(OpenAiOptions, AzureOptions), LlmError> {
    let t = target(llm);
    let mut opts = match (t.endpoint, llm.endpoints.is_empty()) {
        (Some(e), true) => OpenAiOptions::new(e, key),
        (_, false) => OpenAiOptions::with_endpoints(endpoints_from_config(llm, key)?),
        (None, true) => {
            return Err(LlmError::new(
                ErrorKind::BadRequest,
                "llm.provider = \"azure\" needs llm.azure_endpoint (https://NAME.openai.azure.com) or AZURE_OPENAI_ENDPOINT",
            ));
        }
    };
    opts.endpoints[0].requests_per_minute = opts.endpoints[0].requests_per_minute.or(llm.requests_per_minute);
    opts.endpoints[0].tokens_per_minute = opts.endpoints[0].tokens_per_minute.or(llm.tokens_per_minute);
    opts.stream = llm.stream;
    opts.stop = llm.stop.clone();
    opts.retry_after_max = crate::config::limits::secs(llm.retry_after_max);
    let azure = AzureOptions {
        model: llm.model.clone(),
        deployment: t.named.then_some(t.deployment),
        api_version: llm.azure_api_version.clone(),
    };
    Ok((opts, azure))
}
