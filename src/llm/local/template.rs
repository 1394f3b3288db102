//! The chat template: ChatML, the format SmolLM2 was tuned on and that its GGUF file carries
//! (`tokenizer.chat_template`):
//!
//! ```text
//! <|im_start|>system
//! ...<|im_end|>
//! <|im_start|>user
//! ...<|im_end|>
//! <|im_start|>assistant
//! ```

use crate::llm::{ChatMessage, Role};

/// How requests become the model's prompt text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    /// The system message the model's template adds when a conversation has none.
    pub default_system: Option<String>,
}

impl ChatTemplate {
    /// ChatML without a default system message.
    pub fn chatml() -> Self {
        ChatTemplate { default_system: None }
    }

    /// The template a GGUF file describes (its `tokenizer.chat_template`, a Jinja text).
    /// Only ChatML is supported; `None` (no template in the file) means ChatML. Returns the
    /// template's own words when it is something else.
    pub fn from_jinja(jinja: Option<&str>) -> Result<Self, String> {
        let Some(j) = jinja else { return Ok(ChatTemplate::chatml()) };
        if !j.contains("<|im_start|>") {
            let head: String = j.chars().take(80).collect();
            return Err(head);
        }
        // SmolLM2's template adds `<|im_start|>system\n{default}<|im_end|>` before a first
        // message that is not a system message.
        const OPEN: &str = "<|im_start|>system\n";
        let default_system = j.find(OPEN).and_then(|at| {
            let rest = &j[at + OPEN.len()..];
            let end = rest.find("<|im_end|>")?;
            let text = &rest[..end];
            // A placeholder such as `' + message['content'] + '` is no default text.
            (!text.contains('\'') && !text.contains("{{") && !text.is_empty()).then(|| text.to_string())
        });
        Ok(ChatTemplate { default_system })
    }

    /// The prompt for `messages`, ending with the opening of the assistant's reply.
    pub fn render(&self, messages: &[ChatMessage]) -> String {
        let mut s = String::with_capacity(64 + messages.iter().map(|m| m.content.len() + 32).sum::<usize>());
        if let Some(d) = &self.default_system
            && messages.first().is_none_or(|m| m.role != Role::System)
        {
            push(&mut s, "system", d);
        }
        for m in messages {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            push(&mut s, role, &m.content);
        }
        s.push_str("<|im_start|>assistant\n");
        s
    }
}

fn push(s: &mut String, role: &str, content: &str) {
    s.push_str("<|im_start|>");
    s.push_str(role);
    s.push('\n');
    s.push_str(content);
    s.push_str("<|im_end|>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml() {
        let t = ChatTemplate::from_jinja(Some(SMOLLM2)).unwrap();
        let msgs = [ChatMessage::new(Role::System, "Be brief."), ChatMessage::new(Role::User, "Hi!")];
        assert_eq!(
            t.render(&msgs),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn adds_the_models_default_system_message() {
        let t = ChatTemplate::from_jinja(Some(SMOLLM2)).unwrap();
        assert_eq!(
            t.default_system.as_deref(),
            Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        );
        let msgs = [ChatMessage::new(Role::User, "Hi"), ChatMessage::new(Role::Assistant, "Hello")];
        assert_eq!(
            t.render(&msgs),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(ChatTemplate::chatml().render(&[]), "<|im_start|>assistant\n");
    }

    #[test]
    fn other_templates_are_refused() {
        let llama3 = "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>{% endfor %}";
        assert!(ChatTemplate::from_jinja(Some(llama3)).unwrap_err().starts_with("{% for m"));
        assert_eq!(ChatTemplate::from_jinja(None).unwrap(), ChatTemplate::chatml());
    }
}
