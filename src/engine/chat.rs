//! Chat templates: the model's `tokenizer.chat_template` (Jinja) rendered with minijinja.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model::Arch;

/// One turn of a conversation.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// ChatML, the template llama.cpp uses for a model that carries none.
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Gemma's turn format, for Gemma files without a template.
const GEMMA: &str = "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}";

/// A model's chat template with the strings it refers to.
pub struct ChatTemplate {
    source: String,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// The template of `file`, or a default for its architecture.
    pub fn from_gguf(file: &GgufFile, arch: Arch, bos: &str, eos: &str) -> Result<ChatTemplate> {
        let source = match file.metadata().opt_str("tokenizer.chat_template")? {
            Some(s) => s.to_string(),
            None if arch == Arch::Gemma3 => GEMMA.to_string(),
            None => CHATML.to_string(),
        };
        Ok(ChatTemplate {
            source,
            bos: bos.to_string(),
            eos: eos.to_string(),
        })
    }

    /// Renders `messages`, ending with the assistant's turn opened when `add_generation_prompt`.
    pub fn apply(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut env = minijinja::Environment::new();
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let err = |e: minijinja::Error| Error::Invalid(format!("chat template: {e:#}"));
        env.add_template("chat", &self.source).map_err(err)?;
        let t = env.get_template("chat").map_err(err)?;
        t.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        })
        .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_renders() {
        let t = ChatTemplate {
            source: CHATML.into(),
            bos: String::new(),
            eos: String::new(),
        };
        let s = t.apply(&[Message::new("user", "Hi")], true).unwrap();
        assert_eq!(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn gemma_renders() {
        let t = ChatTemplate {
            source: GEMMA.into(),
            bos: "<bos>".into(),
            eos: String::new(),
        };
        let s = t
            .apply(
                &[
                    Message::new("user", "Hi"),
                    Message::new("assistant", "Hello"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            s,
            "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n<start_of_turn>model\n"
        );
    }
}
