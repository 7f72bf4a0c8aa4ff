//! `generate`: text from a language model. At temperature 0 decoding is
//! greedy — the likeliest token every time — so two peers with the same
//! model give the same text, and results agree when their text (and token
//! count and finish reason, when both say) are equal. Sampled text (any
//! other temperature; the default is 0.8) differs by nature between peers:
//! it cannot be verified by replication, and runs once.

use serde::Deserialize;

use crate::TypeRule;
use sched::verify::Rule;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Generate;

#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    temperature: Option<f64>,
}

/// Equal when both say.
fn same<T: PartialEq>(x: &Option<T>, y: &Option<T>) -> bool {
    x.is_none() || y.is_none() || x == y
}

#[derive(Deserialize, PartialEq)]
struct Output {
    text: String,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

impl TypeRule for Generate {
    fn rule(&self, payload: &str) -> Rule {
        let temperature = serde_json::from_str::<Input>(payload).ok().and_then(|i| i.temperature);
        if temperature == Some(0.0) { Rule::Replicate } else { Rule::Unverifiable }
    }

    fn agree(&self, _: &str, a: &str, b: &str) -> bool {
        let (Ok(a), Ok(b)) = (serde_json::from_str::<Output>(a), serde_json::from_str::<Output>(b))
        else {
            return false;
        };
        a.text == b.text
            && same(&a.finish_reason, &b.finish_reason)
            && same(&a.completion_tokens, &b.completion_tokens)
    }
}
