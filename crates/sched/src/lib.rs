//! The pure scheduler core of legacygpu.
//!
//! [`Scheduler`] is a sans-IO state machine in the style of `quinn-proto`: the
//! shell feeds it inputs — `handle_*(now, …)` for a peer joining, leaving or
//! heartbeating, a task submitted, cancelled or finished, a gamer connecting,
//! and [`Scheduler::handle_timeout`] when the time from
//! [`Scheduler::poll_timeout`] comes — and drains its outputs with
//! [`Scheduler::poll_command`] (assign, cancel, deliver, close) and
//! [`Scheduler::poll_event`] (what happened, for the store, metrics and the
//! event stream).
//!
//! The core has no tokio, no sockets, no serde and never reads a clock: time
//! is an input ([`Time`]) that only moves forward, and the one source of
//! randomness (back-off jitter) is seeded from the [`Config`]. That is what
//! lets `crates/sim` run thousands of seeded failure scenarios in seconds.
//!
//! Task payloads and results are opaque: the scheduler is generic over their
//! type `P` and only clones them (the shell uses a reference-counted JSON
//! text).
//!
//! The rules of placement — which queued task goes to which free peer — are
//! in [`placement`]; those of verification — replicas, quorum, canaries,
//! reputation and quarantine — in [`verify`].

mod config;
mod output;
mod peer;
pub mod placement;
mod query;
pub mod queue;
mod recovery;
mod scheduler;
mod task;
mod timers;
mod types;
pub mod verify;

#[cfg(test)]
mod tests;

pub use crate::config::{Backoff, Config, VerifyConfig};
pub use crate::output::{Command, Event, LeaveReason, RequeueReason};
pub use crate::peer::{Ewma, Peer, PeerCaps, PeerJoin, PeerStatus, ServedModels};
pub use crate::placement::Strategy;
pub use crate::query::Stats;
pub use crate::recovery::{Recovered, RecoveredState};
pub use crate::scheduler::{
    Accepted, CancelError, ClearError, Counters, Joined, MAX_TALLIES, PeerError, Progress,
    ResultAck, RetryError, Scheduler, SubmitError, Tally, VerifyCounters,
};
pub use crate::task::{
    AttemptEnd, AttemptRecord, Requirements, Submission, Task, TaskKind, TaskSpec,
};
pub use crate::types::{
    Attempt, ConnId, Failure, FailureCode, GamerId, Outcome, Owner, PeerId, RunOutcome, TaskId,
    TaskState, Time,
};
