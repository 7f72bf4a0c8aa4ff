//! Product bugs the simulation found that are not fixed yet.
//!
//! The world runs the product's code as it is; for each bug here, the check
//! that catches it accepts exactly the deviation the bug causes (and no
//! other), so that the suite stays green while the fix is pending. With a
//! flag off the check is strict again: `tests/known_bugs.rs` searches seeds
//! for each bug that way (`cargo test -p sim --test known_bugs --
//! --ignored`); once a fix lands, its flag and its search go.

/// Which known bugs the checks accept. [`KnownBugs::ALL`] is what the suite
/// runs; [`KnownBugs::NONE`] accepts none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownBugs {
    /// A peer that reconnected without claiming its runs (as a seed-literal
    /// peer does) and later answers one of them by the id it saw — the only
    /// id such a peer has — is taken to answer whatever live task holds that
    /// wire id now: a newer task of any gamer that reused the id and was
    /// assigned to the same peer gets the old run's result. The id was
    /// released when the old task ended elsewhere (`peer_ids.rs` holds an id
    /// only while its task lives or a cancelled run is unconfirmed).
    pub wire_ids_of_lost_runs: bool,
}

impl KnownBugs {
    pub const ALL: KnownBugs = KnownBugs { wire_ids_of_lost_runs: true };

    pub const NONE: KnownBugs = KnownBugs { wire_ids_of_lost_runs: false };
}
