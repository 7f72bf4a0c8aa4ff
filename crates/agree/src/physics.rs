//! `physics`: results agree when they are the same state.
//!
//! The executor runs rapier with enhanced determinism, so that the same
//! scene gives bit-identical bodies on every peer, and `checksum` is xxh3
//! over every body's state (docs/tasks/physics.md). Equal checksums alone
//! would not do: the submitter receives the bodies, and a peer could send
//! made-up ones beside an honest checksum. So everything but the run's
//! timing (`elapsed_ms`) must be equal, checksum included.

use serde_json::{Map, Value};

use crate::TypeRule;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Physics;

/// A result without its timing, when it carries a checksum.
fn state(result: &str) -> Option<Map<String, Value>> {
    let mut fields: Map<String, Value> = serde_json::from_str(result).ok()?;
    fields.remove("elapsed_ms");
    fields.get("checksum")?.as_str().filter(|c| !c.is_empty())?;
    Some(fields)
}

impl TypeRule for Physics {
    fn agree(&self, _: &str, a: &str, b: &str) -> bool {
        matches!((state(a), state(b)), (Some(a), Some(b)) if a == b)
    }
}
