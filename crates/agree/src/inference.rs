//! `inference`: results agree when they name the same top-k labels with
//! scores within 10⁻³. The order of labels whose scores are that close may
//! differ between machines (floating-point sums in another order), so the
//! labels are compared as a set, each with its score.

use serde::Deserialize;

use crate::{TypeRule, close};

/// How far two peers' scores for one label may be apart.
const SCORE_TOLERANCE: f64 = 1e-3;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Inference;

#[derive(Deserialize)]
struct Output {
    #[serde(default)]
    model: Option<String>,
    top_k: Vec<Label>,
}

#[derive(Deserialize)]
struct Label {
    label: String,
    #[serde(default)]
    index: Option<u64>,
    score: f64,
}

impl TypeRule for Inference {
    fn agree(&self, _: &str, a: &str, b: &str) -> bool {
        let (Ok(a), Ok(b)) = (serde_json::from_str::<Output>(a), serde_json::from_str::<Output>(b))
        else {
            return false;
        };
        a.model == b.model
            && a.top_k.len() == b.top_k.len()
            && a.top_k.iter().all(|x| {
                b.top_k.iter().any(|y| {
                    x.label == y.label
                        && x.index == y.index
                        && x.score.is_finite()
                        && close(x.score, y.score, SCORE_TOLERANCE)
                })
            })
    }
}
