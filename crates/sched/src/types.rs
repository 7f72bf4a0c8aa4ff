//! Time, ids and outcomes: the small value types the scheduler speaks in.

use std::fmt;
use std::ops::Add;
use std::str::FromStr;
use std::sync::Arc;

pub use codes::{FailureCode, TaskState};
use std::time::Duration;

/// A point in time, in microseconds since an epoch the shell chooses (its
/// start). The scheduler never reads a clock: every input carries `now`, and
/// time only moves forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    pub const ZERO: Time = Time(0);

    pub const fn from_micros(us: u64) -> Time {
        Time(us)
    }

    pub const fn from_millis(ms: u64) -> Time {
        Time(ms.saturating_mul(1000))
    }

    pub const fn from_secs(s: u64) -> Time {
        Time(s.saturating_mul(1_000_000))
    }

    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The time elapsed since `earlier`, zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;

    fn add(self, d: Duration) -> Time {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Time(self.0.saturating_add(us))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// The cluster-wide id of a task, made by the scheduler. Shown as `t-<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t-{}", self.0)
    }
}

impl TaskId {
    /// Reads a cluster id, `t-42`, and nothing else.
    pub fn parse_cluster(s: &str) -> Option<TaskId> {
        let digits = s.strip_prefix("t-")?;
        if digits.starts_with('+') {
            return None;
        }
        digits.parse().ok().map(TaskId)
    }
}

impl FromStr for TaskId {
    type Err = std::num::ParseIntError;

    /// Reads `t-42` (or a bare `42`).
    fn from_str(s: &str) -> Result<TaskId, Self::Err> {
        s.strip_prefix("t-").unwrap_or(s).parse().map(TaskId)
    }
}

/// The number of an assignment of a task: 1 for the first, then 2, 3, …
/// A result is accepted only for the task's current attempt (fencing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempt(pub u32);

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One connection of the shell. A peer or gamer that reconnects gets a new
/// `ConnId`, which is how the scheduler tells sessions apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(name: impl Into<Arc<str>>) -> $name {
                $name(name.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> $name {
                $name(Arc::from(s))
            }
        }
    };
}

name_id!(
    /// A peer's id, as it registered.
    PeerId
);
name_id!(
    /// A gamer's (client's) id, as it registered.
    GamerId
);

/// Who submitted a task, and so who receives its result.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// A WebSocket client: results are pushed to it, and kept for it while
    /// it is away.
    Gamer(GamerId),
    /// The REST API without a client key (an operator): results are
    /// fetched, not pushed, and it may act on any task.
    Api,
    /// The REST API under one API key, named by the key's fingerprint:
    /// results are fetched, not pushed, and its holder acts on its own
    /// tasks only.
    Key(Arc<str>),
}

impl Owner {
    /// Whether results are pushed to this owner (a gamer) rather than
    /// fetched (the API, with or without a key).
    pub fn is_gamer(&self) -> bool {
        matches!(self, Owner::Gamer(_))
    }

    /// Whether this requester may act on (cancel, read) a task of `owner`:
    /// its own, or any when it is the operator.
    pub fn may_act_on(&self, owner: &Owner) -> bool {
        self == &Owner::Api || self == owner
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Gamer(g) => write!(f, "gamer:{g}"),
            Owner::Api => f.write_str("api"),
            Owner::Key(k) => write!(f, "key:{k}"),
        }
    }
}

/// An owner name that is none of `api`, `gamer:ID` and `key:FINGERPRINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownOwner(pub String);

impl fmt::Display for UnknownOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not an owner (api, gamer:ID or key:FINGERPRINT)", self.0)
    }
}

impl std::error::Error for UnknownOwner {}

impl std::str::FromStr for Owner {
    type Err = UnknownOwner;

    /// Reads what `Display` writes.
    fn from_str(s: &str) -> Result<Owner, UnknownOwner> {
        if s == "api" {
            return Ok(Owner::Api);
        }
        match s.split_once(':') {
            Some(("gamer", g)) => Ok(Owner::Gamer(GamerId::from(g))),
            Some(("key", k)) if !k.is_empty() => Ok(Owner::Key(Arc::from(k))),
            _ => Err(UnknownOwner(s.to_owned())),
        }
    }
}

/// Why a run failed: a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: FailureCode,
    pub message: Arc<str>,
}

impl Failure {
    pub fn new(code: impl Into<FailureCode>, message: impl Into<Arc<str>>) -> Failure {
        Failure { code: code.into(), message: message.into() }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// How a task ended. Exactly one outcome is delivered per task.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<P> {
    Completed {
        result: P,
        attempt: Attempt,
        peer: PeerId,
    },
    /// The task failed: a non-retryable error, or `max_attempts` failures.
    Failed(Failure),
    Cancelled,
    /// The task waited longer than its queue timeout, or ran longer than its
    /// run timeout.
    TimedOut(Failure),
}

impl<P> Outcome<P> {
    pub fn status(&self) -> TaskState {
        match self {
            Outcome::Completed { .. } => TaskState::Completed,
            Outcome::Failed(_) => TaskState::Failed,
            Outcome::Cancelled => TaskState::Cancelled,
            Outcome::TimedOut(_) => TaskState::TimedOut,
        }
    }

    /// The failure's code and message, for outcomes without a result.
    pub fn failure(&self) -> Option<Failure> {
        match self {
            Outcome::Completed { .. } => None,
            Outcome::Failed(f) | Outcome::TimedOut(f) => Some(f.clone()),
            Outcome::Cancelled => {
                Some(Failure::new(FailureCode::CANCELLED, "the task was cancelled"))
            }
        }
    }
}

/// What a peer reports for an assignment.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome<P> {
    Completed(P),
    /// The run failed; `retryable` says whether another attempt could succeed.
    Failed {
        failure: Failure,
        retryable: bool,
    },
    /// The peer gives the task back unfinished (it is shutting down); the
    /// task is requeued without counting a failure.
    Returned,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_read_back_what_they_print_and_refuse_the_rest() {
        for owner in [Owner::Api, Owner::Gamer(GamerId::from("g:1")), Owner::Key(Arc::from("ab12"))]
        {
            assert_eq!(owner.to_string().parse::<Owner>(), Ok(owner));
        }
        for bad in ["", "API", "key:", "peer:p1", "gamer"] {
            assert!(bad.parse::<Owner>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_operator_acts_on_tasks_not_its_own() {
        let (a, b) = (Owner::Key(Arc::from("a")), Owner::Key(Arc::from("b")));
        assert!(Owner::Api.may_act_on(&a));
        assert!(a.may_act_on(&a));
        assert!(!a.may_act_on(&b));
        assert!(!a.may_act_on(&Owner::Api));
        assert!(!Owner::Gamer(GamerId::from("g")).may_act_on(&a));
    }
}
