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

/// The chat-completions URL of `deployment` at `endpoint`.
pub fn chat_url(endpoint: &str, deployment: &str, api_version: &str) -> String {
    format!("{endpoint}/openai/deployments/{deployment}/chat/completions?api-version={api_version}")
}

impl OpenAiProvider {
    /// An Azure OpenAI provider; the endpoints' `base_url`s are resource endpoints
    /// (`https://NAME.openai.azure.com`).
    pub fn azure(mut opts: OpenAiOptions, azure: AzureOptions) -> Result<Self, LlmError> {
        if opts.key_hint.contains("OPENAI_API_KEY") {
            opts.key_hint = ".troupe/secrets.toml or AZURE_OPENAI_API_KEY".into();
        }
        let flavour =
            Flavour::Azure { model: azure.model, deployment: azure.deployment, api_version: azure.api_version };
        Self::build("azure", opts, flavour)
    }

    /// The Azure provider `[llm]` describes (`azure_endpoint`, then `AZURE_OPENAI_ENDPOINT`, or
    /// `llm.endpoints`), with the key already resolved.
    pub fn azure_from_config(llm: &LlmConfig, key: Option<SecretString>) -> Result<Self, LlmError> {
        let endpoint = llm
            .azure_endpoint
            .clone()
            .or_else(|| std::env::var("AZURE_OPENAI_ENDPOINT").ok())
            .filter(|e| !e.trim().is_empty());
        let mut opts = match (endpoint, llm.endpoints.is_empty()) {
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
        opts.json_actions = llm.json_actions;
        opts.stop = llm.stop.clone();
        let azure = AzureOptions {
            model: llm.model.clone(),
            deployment: llm.azure_deployment.clone().filter(|d| !d.trim().is_empty()),
            api_version: llm.azure_api_version.clone(),
        };
        Self::azure(opts, azure)
    }
}
