//! The OpenAI requests this API reads, checked and turned into the data of
//! a `generate` task (docs/OPENAI.md lists the fields: supported, ignored,
//! refused).

use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::OpenAiError;

/// `POST /v1/chat/completions`. Fields not named here are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct ChatRequest {
    #[schema(min_length = 1, pattern = r"\S")]
    pub model: String,
    #[schema(min_items = 1)]
    pub messages: Vec<ChatMessage>,
    #[serde(flatten)]
    pub options: Options,
    /// The newer name of `max_tokens`.
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<u32>,
    /// Not supported: false or absent.
    #[schema(schema_with = crate::http::schemas::unsupported_flag)]
    pub logprobs: Option<bool>,
    /// Not supported: empty or absent.
    #[schema(value_type = Option<Vec<Object>>, max_items = 0)]
    pub tools: Option<Vec<Value>>,
}

/// `POST /v1/completions`. Fields not named here are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct CompletionRequest {
    #[schema(min_length = 1, pattern = r"\S")]
    pub model: String,
    #[schema(schema_with = crate::http::schemas::prompt)]
    pub prompt: Prompt,
    #[serde(flatten)]
    pub options: Options,
    /// Not supported: false or absent.
    #[schema(schema_with = crate::http::schemas::unsupported_flag)]
    pub echo: Option<bool>,
    /// Not supported: empty or absent.
    #[schema(max_length = 0)]
    pub suffix: Option<String>,
    #[schema(minimum = 1, maximum = 1)]
    pub best_of: Option<u32>,
    /// Not supported: 0 or absent.
    #[schema(maximum = 0)]
    pub logprobs: Option<u32>,
}

/// What both requests share.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(super) struct Options {
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    /// Not OpenAI's, but llama.cpp's server and others take it.
    pub top_k: Option<u32>,
    pub seed: Option<i64>,
    pub stop: Option<StopField>,
    #[schema(minimum = 1, maximum = 1)]
    pub n: Option<u32>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub(super) struct StreamOptions {
    pub include_usage: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct ChatMessage {
    pub role: String,
    /// A string, or a list of content parts (only `text` parts are read).
    #[serde(default)]
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub(super) enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct Part {
    #[serde(rename = "type")]
    #[schema(schema_with = crate::http::schemas::text_part)]
    pub kind: String,
    #[schema(required = true, value_type = String)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Prompt {
    One(String),
    Many(Vec<Value>),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub(super) enum StopField {
    One(String),
    Many(Vec<String>),
}

/// A request, checked: what the task runs and how to answer.
#[derive(Debug)]
pub(crate) struct Generate {
    pub model: String,
    /// The `generate` task's data.
    pub data: Value,
    pub stream: bool,
    pub include_usage: bool,
}

fn invalid(param: &str, message: impl ToString) -> OpenAiError {
    OpenAiError::invalid(message).param(param)
}

impl ChatRequest {
    pub fn check(self) -> Result<Generate, OpenAiError> {
        if self.messages.is_empty() {
            return Err(invalid("messages", "`messages` must hold at least one message"));
        }
        if self.logprobs == Some(true) {
            return Err(invalid("logprobs", "`logprobs` is not supported"));
        }
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(invalid("tools", "tools (function calling) are not supported"));
        }
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(text)) => text,
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(invalid(
                                    &format!("messages[{i}].content"),
                                    format!(
                                        "content parts of type `{kind}` are not supported (only text)"
                                    ),
                                ));
                            }
                        }
                    }
                    text
                }
            };
            // OpenAI's newer name for the system role; chat templates know `system`.
            let role = if m.role == "developer" { "system".to_owned() } else { m.role };
            messages.push(json!({"role": role, "content": content}));
        }
        let mut options = self.options;
        if options.max_tokens.is_none() {
            options.max_tokens = self.max_completion_tokens;
        }
        generate(self.model, ("messages", Value::Array(messages)), options)
    }
}

impl CompletionRequest {
    pub fn check(self) -> Result<Generate, OpenAiError> {
        let prompt = match self.prompt {
            Prompt::One(p) => p,
            Prompt::Many(mut list) if list.len() == 1 && list[0].is_string() => {
                list.pop().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
            }
            Prompt::Many(_) => {
                return Err(invalid(
                    "prompt",
                    "`prompt` must be one string (lists of prompts and token arrays are not supported)",
                ));
            }
        };
        if self.echo == Some(true) {
            return Err(invalid("echo", "`echo` is not supported"));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(invalid("suffix", "`suffix` is not supported"));
        }
        if self.best_of.is_some_and(|b| b != 1) {
            return Err(invalid("best_of", "only `best_of: 1` is supported"));
        }
        if self.logprobs.is_some_and(|l| l > 0) {
            return Err(invalid("logprobs", "`logprobs` is not supported"));
        }
        generate(self.model, ("prompt", Value::String(prompt)), self.options)
    }
}

/// The task's data from the shared options, checked as the executor would
/// (so that a bad value is a 400 at once, not a failed task).
fn generate(
    model: String,
    (field, text): (&str, Value),
    o: Options,
) -> Result<Generate, OpenAiError> {
    if model.trim().is_empty() {
        return Err(invalid("model", "`model` must name a model (see GET /v1/models)"));
    }
    if o.n.is_some_and(|n| n != 1) {
        return Err(invalid("n", "only `n: 1` is supported"));
    }
    let mut data = Map::new();
    data.insert("model".into(), json!(model));
    data.insert(field.into(), text);
    if let Some(max) = o.max_tokens {
        if max == 0 {
            return Err(invalid("max_tokens", "`max_tokens` must be at least 1"));
        }
        data.insert("max_tokens".into(), json!(max));
    }
    if let Some(t) = o.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(invalid("temperature", "`temperature` must be between 0 and 2"));
        }
        data.insert("temperature".into(), json!(t));
    }
    if let Some(p) = o.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(invalid("top_p", "`top_p` must be above 0 and at most 1"));
        }
        data.insert("top_p".into(), json!(p));
    }
    if let Some(k) = o.top_k {
        data.insert("top_k".into(), json!(k));
    }
    if let Some(seed) = o.seed {
        // The sampler's seed is 32 bits: larger seeds are folded into it,
        // so that any integer OpenAI accepts is a stable seed here too.
        data.insert("seed".into(), json!((seed as u64 ^ ((seed as u64) >> 32)) as u32));
    }
    match o.stop {
        None => {}
        Some(StopField::One(s)) => {
            data.insert("stop".into(), json!(s));
        }
        Some(StopField::Many(list)) if list.len() > 4 => {
            return Err(invalid("stop", "at most 4 stop strings"));
        }
        Some(StopField::Many(list)) if list.is_empty() => {}
        Some(StopField::Many(list)) => {
            data.insert("stop".into(), json!(list));
        }
    }
    let stream = o.stream.unwrap_or(false);
    let include_usage = o.stream_options.and_then(|s| s.include_usage).unwrap_or(false);
    Ok(Generate { model, data: Value::Object(data), stream, include_usage })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Result<Generate, OpenAiError> {
        serde_json::from_value::<ChatRequest>(body).map_err(OpenAiError::invalid)?.check()
    }

    fn completion(body: Value) -> Result<Generate, OpenAiError> {
        serde_json::from_value::<CompletionRequest>(body).map_err(OpenAiError::invalid)?.check()
    }

    #[test]
    fn a_chat_becomes_generate_data() {
        let g = chat(json!({"model": "tiny", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "developer", "content": "be brief"},
                         {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]}],
            "max_completion_tokens": 8, "temperature": 0, "seed": 42, "stop": ["\n"], "user": "ignored",
            "presence_penalty": 0.5}))
        .unwrap();
        assert!(g.stream && g.include_usage);
        assert_eq!(
            g.data,
            json!({"model": "tiny", "max_tokens": 8, "temperature": 0.0, "seed": 42, "stop": ["\n"],
                   "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]})
        );
    }

    #[test]
    fn a_completion_becomes_generate_data() {
        let g =
            completion(json!({"model": "tiny", "prompt": ["Once"], "max_tokens": 4, "stop": "x"}))
                .unwrap();
        assert!(!g.stream);
        assert_eq!(
            g.data,
            json!({"model": "tiny", "prompt": "Once", "max_tokens": 4, "stop": "x"})
        );
    }

    #[test]
    fn bad_parameters_name_the_parameter() {
        let m = json!([{"role": "user", "content": "x"}]);
        let cases = [
            (json!({"model": "tiny", "messages": []}), "messages"),
            (json!({"model": "tiny", "messages": m, "temperature": 2.5}), "temperature"),
            (json!({"model": "tiny", "messages": m, "temperature": -1}), "temperature"),
            (json!({"model": "tiny", "messages": m, "top_p": 0}), "top_p"),
            (json!({"model": "tiny", "messages": m, "n": 2}), "n"),
            (json!({"model": "tiny", "messages": m, "max_tokens": 0}), "max_tokens"),
            (json!({"model": "tiny", "messages": m, "stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"model": "tiny", "messages": m, "logprobs": true}), "logprobs"),
            (json!({"model": "tiny", "messages": m, "tools": [{"type": "function"}]}), "tools"),
            (json!({"model": " ", "messages": m}), "model"),
            (
                json!({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "messages[0].content",
            ),
        ];
        for (body, param) in cases {
            let e = chat(body.clone()).unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
        }
        for body in [
            json!({"model": "tiny", "prompt": [1, 2, 3]}),
            json!({"model": "tiny", "prompt": ["a", "b"]}),
            json!({"model": "tiny", "prompt": "a", "echo": true}),
            json!({"model": "tiny", "prompt": "a", "best_of": 3}),
        ] {
            assert_eq!(completion(body.clone()).unwrap_err().status.as_u16(), 400, "{body}");
        }
        // Wrong types are refused by decoding.
        assert!(chat(json!({"model": 3, "messages": m})).is_err());
        assert!(chat(json!({"model": "tiny", "messages": "hi"})).is_err());
        assert!(chat(json!({"model": "tiny", "messages": m, "temperature": "hot"})).is_err());
    }
}
