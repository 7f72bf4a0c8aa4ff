//! The `generate` task's input, checked before any work is done.

use serde::{Deserialize, Serialize};

use exec::ExecError;

/// What a `generate` task asks for (its `data`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerateInput {
    /// The model's name, as the worker advertises it.
    pub model: String,
    /// Raw text to continue. Give this or `messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// A chat, formatted with the model's own chat template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    /// The most tokens to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// 0 picks the likeliest token every time (greedy); default 0.8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling, in (0, 1]; default 0.95.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Sample among the k likeliest tokens; 0 turns it off; default 40.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// The sampler's seed: the same seed and input give the same tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u32>,
    /// Text that ends the generation (not included in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// One stop string or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// What to feed the model.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Text {
    Prompt(String),
    Chat(Vec<Message>),
}

/// How to pick each next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Sampling {
    Greedy,
    Random { temperature: f32, top_p: f32, top_k: u32, seed: u32 },
}

/// An input that passed every check that needs no model.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Checked {
    pub model: String,
    pub text: Text,
    pub max_tokens: Option<u32>,
    pub sampling: Sampling,
    pub stop: Vec<String>,
}

/// Limits on inputs.
pub(crate) const MAX_PROMPT_BYTES: usize = 4 * 1024 * 1024;
pub(crate) const MAX_MESSAGES: usize = 1024;
pub(crate) const MAX_STOPS: usize = 4;
pub(crate) const MAX_STOP_BYTES: usize = 256;
const MAX_ROLE_BYTES: usize = 64;
const MAX_TEMPERATURE: f64 = 2.0;

/// llama.cpp's "pick a seed for me".
const RANDOM_SEED: u32 = 0xFFFF_FFFF;

impl GenerateInput {
    /// Checks the input against `max_tokens_limit` and fills in defaults.
    pub(crate) fn check(self, max_tokens_limit: u32) -> Result<Checked, ExecError> {
        let invalid = |m: &str| Err(ExecError::InvalidInput(m.to_owned()));
        if self.model.is_empty() {
            return invalid("`model` must name a model");
        }
        let text = match (self.prompt, self.messages) {
            (Some(_), Some(_)) => return invalid("give `prompt` or `messages`, not both"),
            (None, None) => return invalid("give a `prompt` or `messages`"),
            (Some(prompt), None) => Text::Prompt(prompt),
            (None, Some(messages)) => Text::Chat(check_messages(messages)?),
        };
        let bytes = match &text {
            Text::Prompt(p) => p.len(),
            Text::Chat(m) => m.iter().map(|m| m.content.len() + m.role.len()).sum(),
        };
        if bytes > MAX_PROMPT_BYTES {
            return Err(ExecError::LimitExceeded(format!(
                "the prompt is {bytes} bytes; at most {MAX_PROMPT_BYTES} are accepted"
            )));
        }
        let max_tokens = match self.max_tokens {
            Some(0) => return invalid("`max_tokens` must be at least 1"),
            Some(n) if n > max_tokens_limit => {
                return Err(ExecError::LimitExceeded(format!(
                    "`max_tokens` is {n}; this worker generates at most {max_tokens_limit} tokens"
                )));
            }
            other => other,
        };
        Ok(Checked {
            model: self.model,
            text,
            max_tokens,
            sampling: sampling(self.temperature, self.top_p, self.top_k, self.seed)?,
            stop: check_stop(self.stop)?,
        })
    }
}

fn check_messages(messages: Vec<Message>) -> Result<Vec<Message>, ExecError> {
    if messages.is_empty() {
        return Err(ExecError::InvalidInput("`messages` must not be empty".into()));
    }
    if messages.len() > MAX_MESSAGES {
        return Err(ExecError::LimitExceeded(format!(
            "{} messages; at most {MAX_MESSAGES} are accepted",
            messages.len()
        )));
    }
    for (i, m) in messages.iter().enumerate() {
        if m.role.is_empty() || m.role.len() > MAX_ROLE_BYTES {
            return Err(ExecError::InvalidInput(format!(
                "messages[{i}].role must be 1 to {MAX_ROLE_BYTES} bytes (e.g. `system`, `user`, `assistant`)"
            )));
        }
    }
    Ok(messages)
}

fn sampling(
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<u32>,
    seed: Option<u32>,
) -> Result<Sampling, ExecError> {
    let temperature = temperature.unwrap_or(0.8);
    if !temperature.is_finite() || !(0.0..=MAX_TEMPERATURE).contains(&temperature) {
        return Err(ExecError::InvalidInput(format!(
            "`temperature` must be between 0 and {MAX_TEMPERATURE} (got {temperature})"
        )));
    }
    let top_p = top_p.unwrap_or(0.95);
    if !top_p.is_finite() || top_p <= 0.0 || top_p > 1.0 {
        return Err(ExecError::InvalidInput(format!(
            "`top_p` must be above 0 and at most 1 (got {top_p})"
        )));
    }
    if temperature == 0.0 {
        return Ok(Sampling::Greedy);
    }
    Ok(Sampling::Random {
        temperature: temperature as f32,
        top_p: top_p as f32,
        top_k: top_k.unwrap_or(40),
        // A seed the caller chose is never llama.cpp's "random": its
        // value is taken as the one below it.
        seed: seed.map_or(RANDOM_SEED, |s| s.min(RANDOM_SEED - 1)),
    })
}

fn check_stop(stop: Option<Stop>) -> Result<Vec<String>, ExecError> {
    let stops = match stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(list)) => list,
    };
    if stops.len() > MAX_STOPS {
        return Err(ExecError::InvalidInput(format!("at most {MAX_STOPS} `stop` strings")));
    }
    if stops.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES) {
        return Err(ExecError::InvalidInput(format!(
            "each `stop` string must be 1 to {MAX_STOP_BYTES} bytes"
        )));
    }
    Ok(stops)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(v: serde_json::Value) -> Result<Checked, ExecError> {
        let input: GenerateInput = serde_json::from_value(v).map_err(ExecError::invalid)?;
        input.check(100)
    }

    fn code(v: serde_json::Value) -> String {
        check(v).map_or_else(|e| e.code().to_string(), |_| "ok".to_owned())
    }

    #[test]
    fn good_inputs_get_their_defaults() {
        let c = check(json!({"model": "m", "prompt": "hi"})).unwrap();
        assert_eq!(c.text, Text::Prompt("hi".into()));
        assert_eq!(c.max_tokens, None);
        assert_eq!(
            c.sampling,
            Sampling::Random { temperature: 0.8, top_p: 0.95, top_k: 40, seed: RANDOM_SEED }
        );
        let c = check(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                             "temperature": 0, "max_tokens": 5, "stop": "\n"}))
        .unwrap();
        assert_eq!(c.sampling, Sampling::Greedy);
        assert_eq!((c.max_tokens, c.stop), (Some(5), vec!["\n".to_owned()]));
        let c = check(json!({"model": "m", "prompt": "", "seed": 3, "top_k": 0, "top_p": 1,
                             "stop": ["a", "b"], "unknown_field": true}))
        .unwrap();
        assert_eq!(
            c.sampling,
            Sampling::Random { temperature: 0.8, top_p: 1.0, top_k: 0, seed: 3 }
        );
        // The largest seed is a seed, not llama.cpp's "pick one".
        let c = check(json!({"model": "m", "prompt": "", "seed": u32::MAX})).unwrap();
        let Sampling::Random { seed, .. } = c.sampling else { panic!("{:?}", c.sampling) };
        assert_ne!(seed, RANDOM_SEED);
    }

    #[test]
    fn bad_inputs_get_clear_errors() {
        let cases = [
            (json!({"prompt": "hi"}), "invalid_input"),
            (json!({"model": "", "prompt": "hi"}), "invalid_input"),
            (json!({"model": "m"}), "invalid_input"),
            (json!({"model": "m", "prompt": "a", "messages": []}), "invalid_input"),
            (json!({"model": "m", "messages": []}), "invalid_input"),
            (json!({"model": "m", "messages": [{"role": "", "content": "x"}]}), "invalid_input"),
            (json!({"model": "m", "messages": [{"role": "user"}]}), "invalid_input"),
            (json!({"model": "m", "messages": "hi"}), "invalid_input"),
            (json!({"model": "m", "prompt": 5}), "invalid_input"),
            (json!({"model": "m", "prompt": "a", "temperature": -0.1}), "invalid_input"),
            (json!({"model": "m", "prompt": "a", "temperature": "NaN"}), "invalid_input"),
            (json!({"model": "m", "prompt": "a", "temperature": 1e300}), "invalid_input"),
            (json!({"model": "m", "prompt": "a", "top_p": 0}), "invalid_input"),
            (json!({"model": "m", "prompt": "a", "top_p": 1.5}), "invalid_input"),
            (json!({"model": "m", "prompt": "a", "top_k": -1}), "invalid_input"),
            (json!({"model": "m", "prompt": "a", "max_tokens": 0}), "invalid_input"),
            (json!({"model": "m", "prompt": "a", "max_tokens": -5}), "invalid_input"),
            (json!({"model": "m", "prompt": "a", "max_tokens": 101}), "limit_exceeded"),
            (json!({"model": "m", "prompt": "a", "stop": ""}), "invalid_input"),
            (
                json!({"model": "m", "prompt": "a", "stop": ["a", "b", "c", "d", "e"]}),
                "invalid_input",
            ),
            (json!({"model": "m", "prompt": "a", "stop": 3}), "invalid_input"),
            (json!({"model": "m", "prompt": "a", "seed": 1.5}), "invalid_input"),
        ];
        for (input, expected) in cases {
            assert_eq!(code(input.clone()), expected, "{input}");
        }
        let huge = "x".repeat(MAX_PROMPT_BYTES + 1);
        assert_eq!(code(json!({"model": "m", "prompt": huge})), "limit_exceeded");
        let many: Vec<_> =
            (0..=MAX_MESSAGES).map(|_| json!({"role": "user", "content": ""})).collect();
        assert_eq!(code(json!({"model": "m", "messages": many})), "limit_exceeded");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = check(json!({"model": "m", "prompt": "a", "temperature": -1})).unwrap_err();
        assert!(e.to_string().contains("`temperature` must be between 0 and 2"), "{e}");
        let e = check(json!({"model": "m", "prompt": "a", "max_tokens": 500})).unwrap_err();
        assert!(e.to_string().contains("at most 100 tokens"), "{e}");
    }
}
