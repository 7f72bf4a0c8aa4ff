//! OpenAI's answers: a completion, and a stream of chunks as server-sent
//! events ending in `data: [DONE]`.
//!
//! A stream sends only text that is certainly the answer's: deltas in `seq`
//! order from the one attempt that streams (the scheduler never runs a
//! streamed task again once output went out). When a delta is missing (this
//! follower lagged), no later delta is sent; the rest of the text comes from
//! the final result instead, so the client's text is never spliced. A task
//! that fails after output went out (its worker died: `stream_interrupted`)
//! ends the stream with an error event, `data: {"error": {…}}`, and no
//! `[DONE]`.

use std::collections::VecDeque;

use axum::response::sse::Event;
use serde_json::{Value, json};
use tracing::warn;

use super::OpenAiError;
use crate::core::requests::Finished;
use crate::core::stream::Delta;
use crate::http::follow::{Follower, Lost, Step};

/// Which endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Chat,
    Completion,
}

/// What every answer to one request repeats.
#[derive(Debug, Clone)]
pub(super) struct Meta {
    pub kind: Kind,
    /// `chatcmpl-t-42` or `cmpl-t-42`: the task's cluster id inside.
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    pub model: String,
}

/// A generation's result, as the `generate` executor reports it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Generated {
    pub text: String,
    pub finish_reason: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Generated {
    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// The generation a finished task holds, or the error it ended with.
pub(super) fn generated(done: Finished) -> Result<Generated, OpenAiError> {
    match done.outcome {
        sched::Outcome::Completed { result, .. } => {
            let r: Value = serde_json::from_str(result.get()).unwrap_or(Value::Null);
            let Some(text) = r["text"].as_str() else {
                return Err(OpenAiError::server("the worker's result has no `text`"));
            };
            Ok(Generated {
                text: text.to_owned(),
                finish_reason: r["finish_reason"].as_str().unwrap_or("stop").to_owned(),
                prompt_tokens: r["prompt_tokens"].as_u64().unwrap_or(0),
                completion_tokens: r["completion_tokens"].as_u64().unwrap_or(0),
            })
        }
        other => Err(OpenAiError::from_outcome(&other)),
    }
}

impl Meta {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    /// The whole answer (not streamed).
    pub fn completion(&self, g: &Generated) -> Value {
        let choice = match self.kind {
            Kind::Chat => json!({"index": 0, "logprobs": null, "finish_reason": g.finish_reason,
                                 "message": {"role": "assistant", "content": g.text}}),
            Kind::Completion => {
                json!({"index": 0, "logprobs": null, "finish_reason": g.finish_reason,
                                       "text": g.text})
            }
        };
        json!({"id": self.id, "object": self.object(false), "created": self.created,
               "model": self.model, "choices": [choice], "usage": g.usage()})
    }

    /// One chunk: the first (`role`) of a chat, text, or the last (`finish`).
    fn chunk(&self, text: &str, role: bool, finish: Option<&str>, usage: bool) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let mut delta = serde_json::Map::new();
                if role {
                    delta.insert("role".into(), json!("assistant"));
                }
                if !text.is_empty() || role {
                    delta.insert("content".into(), json!(text));
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Kind::Completion => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
            }
        };
        let mut chunk = json!({"id": self.id, "object": self.object(true), "created": self.created,
                               "model": self.model, "choices": [choice]});
        if usage {
            // With `include_usage`, every chunk but the last has `usage: null`.
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    fn usage_chunk(&self, g: &Generated) -> Value {
        json!({"id": self.id, "object": self.object(true), "created": self.created,
               "model": self.model, "choices": [], "usage": g.usage()})
    }
}

fn data(v: &Value) -> Event {
    Event::default().data(v.to_string())
}

/// The chunks of one streamed answer.
pub(super) struct Chunks {
    follower: Follower,
    meta: Meta,
    include_usage: bool,
    /// The text sent so far.
    streamed: String,
    next_seq: u64,
    /// A delta was missed: send no more deltas, only the final tail.
    gap: bool,
    queue: VecDeque<Event>,
    done: bool,
}

impl Chunks {
    /// The stream, with the step that came before the response started.
    pub fn new(follower: Follower, meta: Meta, include_usage: bool, first: Step) -> Chunks {
        let mut chunks = Chunks::start(follower, meta, include_usage);
        chunks.step(first);
        chunks
    }

    /// The stream of a task that finished before any delta reached it.
    pub fn finished(follower: Follower, meta: Meta, include_usage: bool, g: &Generated) -> Chunks {
        let mut chunks = Chunks::start(follower, meta, include_usage);
        chunks.done = true;
        chunks.finish(g);
        chunks
    }

    fn start(follower: Follower, meta: Meta, include_usage: bool) -> Chunks {
        let mut chunks = Chunks {
            follower,
            meta,
            include_usage,
            streamed: String::new(),
            next_seq: 0,
            gap: false,
            queue: VecDeque::new(),
            done: false,
        };
        if chunks.meta.kind == Kind::Chat {
            let first = chunks.meta.chunk("", true, None, include_usage);
            chunks.queue.push_back(data(&first));
        }
        chunks
    }

    /// The next event to send; `None` at the end.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            match self.follower.next().await {
                Ok(Some(step)) => self.step(step),
                Ok(None) => self.done = true,
                Err(lost) => self.lost(lost),
            }
        }
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Delta(d) => self.delta(d),
            Step::Finished(done) => {
                self.done = true;
                match generated(done) {
                    Ok(g) => self.finish(&g),
                    Err(e) => self.queue.push_back(data(&e.body())),
                }
            }
        }
    }

    fn delta(&mut self, d: Delta) {
        if self.gap || d.seq != self.next_seq {
            self.gap = true;
            return;
        }
        self.next_seq += 1;
        if d.text.is_empty() {
            return;
        }
        self.streamed.push_str(&d.text);
        let chunk = self.meta.chunk(&d.text, false, None, self.include_usage);
        self.queue.push_back(data(&chunk));
    }

    fn finish(&mut self, g: &Generated) {
        match g.text.strip_prefix(self.streamed.as_str()) {
            Some("") => {}
            Some(tail) => {
                let chunk = self.meta.chunk(tail, false, None, self.include_usage);
                self.queue.push_back(data(&chunk));
            }
            // Cannot happen (deltas concatenated are the text), but if it
            // did, what was sent cannot be taken back.
            None => warn!(id = %self.meta.id, "streamed text is not a prefix of the result"),
        }
        let last = self.meta.chunk("", false, Some(&g.finish_reason), self.include_usage);
        self.queue.push_back(data(&last));
        if self.include_usage {
            self.queue.push_back(data(&self.meta.usage_chunk(g)));
        }
        self.queue.push_back(Event::default().data("[DONE]"));
    }

    fn lost(&mut self, lost: Lost) {
        self.done = true;
        let e = OpenAiError::from_lost(lost);
        self.queue.push_back(data(&e.body()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: Kind) -> Meta {
        Meta { kind, id: "chatcmpl-t-1".into(), created: 7, model: "tiny".into() }
    }

    #[test]
    fn chat_chunks_have_openai_shapes() {
        let m = meta(Kind::Chat);
        let first = m.chunk("", true, None, false);
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        let text = m.chunk("Hel", false, None, true);
        assert_eq!(text["choices"][0]["delta"], json!({"content": "Hel"}));
        assert!(text["usage"].is_null() && text.get("usage").is_some());
        let last = m.chunk("", false, Some("length"), false);
        assert_eq!(last["choices"][0]["delta"], json!({}));
        assert_eq!(last["choices"][0]["finish_reason"], "length");
        let g = Generated {
            text: "Hello".into(),
            finish_reason: "stop".into(),
            prompt_tokens: 3,
            completion_tokens: 2,
        };
        let usage = m.usage_chunk(&g);
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 5);
        let whole = m.completion(&g);
        assert_eq!(whole["object"], "chat.completion");
        assert_eq!(whole["choices"][0]["message"]["content"], "Hello");
    }

    #[test]
    fn completion_chunks_carry_text() {
        let m = meta(Kind::Completion);
        let c = m.chunk("ab", false, None, false);
        assert_eq!(c["object"], "text_completion");
        assert_eq!(c["choices"][0]["text"], "ab");
        assert!(c.get("usage").is_none());
    }
}
