//! `physics`: results agree when their checksums are equal.
//!
//! The executor runs rapier with enhanced determinism, so that the same
//! scene gives bit-identical bodies on every peer, and `checksum` is xxh3
//! over every body's state (docs/tasks/physics.md): equal checksums are
//! equal results, and a peer cannot make one up without the state it hashes.

use serde::Deserialize;

use crate::TypeRule;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Physics;

#[derive(Deserialize)]
struct Summary {
    checksum: String,
}

fn checksum(result: &str) -> Option<String> {
    serde_json::from_str::<Summary>(result).ok().map(|s| s.checksum).filter(|c| !c.is_empty())
}

impl TypeRule for Physics {
    fn agree(&self, _: &str, a: &str, b: &str) -> bool {
        matches!((checksum(a), checksum(b)), (Some(a), Some(b)) if a == b)
    }
}
