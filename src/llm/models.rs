//! What troupe-sim knows about models by name: their context windows, for the prompt budget.
//! A provider that knows better (the embedded local model reads it from its file) says so
//! through `Provider::context_window`.

/// The context window of a hosted model, by name prefix; `None` for a model not known here.
pub fn context_window(model: &str) -> Option<u32> {
    let m = model.trim().to_ascii_lowercase();
    // Longest prefixes first: "gpt-4o" before "gpt-4".
    const KNOWN: &[(&str, u32)] = &[
        ("gpt-4.1", 1_047_576),
        ("gpt-4o", 128_000),
        ("gpt-4-turbo", 128_000),
        ("gpt-4-32k", 32_768),
        ("gpt-4", 8_192),
        ("gpt-3.5-turbo", 16_385),
        ("gpt-5", 400_000),
        ("o1", 200_000),
        ("o3", 200_000),
        ("o4", 200_000),
        ("claude", 200_000),
        ("llama3", 8_192),
        ("llama-3", 8_192),
        ("mistral", 32_768),
        ("qwen2", 32_768),
        ("smollm2", 8_192),
    ];
    KNOWN.iter().find(|(prefix, _)| m.starts_with(prefix) || m.contains(&format!("/{prefix}"))).map(|(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_models_by_prefix() {
        assert_eq!(context_window("gpt-4o-mini"), Some(128_000));
        assert_eq!(context_window("gpt-4-0613"), Some(8_192));
        assert_eq!(context_window("GPT-3.5-turbo"), Some(16_385));
        assert_eq!(context_window("meta-llama/llama3-8b"), Some(8_192));
        assert_eq!(context_window("my-finetune"), None);
    }
}
