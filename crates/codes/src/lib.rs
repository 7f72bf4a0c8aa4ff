//! The names legacygpu's crates share.
//!
//! A task's state, how an attempt ended, why a task failed, what a worker is
//! doing, why a connection was closed: each is one type here, used by the
//! scheduler, the store, the executors, the coordinator, the HTTP API and the
//! CLI alike, so that no crate compares strings another crate wrote.
//!
//! Two shapes, after h2's `frame/reason.rs`:
//! - **closed sets** ([`TaskState`], [`AttemptEnd`], [`WorkerStatus`],
//!   [`CloseReason`], [`VerifyStatus`], [`Verdict`]) are enums. Reading a name that is not in the set is an
//!   error ([`UnknownCode`]), never a silent default: a store row with a state
//!   this build does not know is refused, not guessed.
//! - **open sets** ([`FailureCode`], [`ErrorCode`]) are newtypes over the name
//!   with named constants: peers and newer coordinators may send codes this
//!   build has not heard of, and those must travel through unchanged.
//!
//! With the `serde` feature every code serializes as its wire name.

mod closed;
mod open;

pub use closed::{AttemptEnd, CloseReason, TaskState, Verdict, VerifyStatus, WorkerStatus};
pub use open::{ErrorCode, FailureCode};

use std::fmt;

/// A name that is not one of a closed set's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCode {
    /// What was being read, e.g. `task state`.
    pub kind: &'static str,
    pub value: String,
}

impl fmt::Display for UnknownCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} `{}`", self.kind, self.value)
    }
}

impl std::error::Error for UnknownCode {}

#[cfg(test)]
mod tests;
