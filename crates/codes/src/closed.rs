//! The closed sets: every value is known, and an unknown name is an error.

use std::fmt;
use std::str::FromStr;

use crate::UnknownCode;

/// Declares a closed set: the enum, its wire names, `ALL`, `as_str`,
/// `Display`, `FromStr` (with aliases) and, with the `serde` feature, serde.
macro_rules! closed_set {
    (
        $(#[$doc:meta])*
        $name:ident, $kind:literal {
            $( $(#[$vdoc:meta])* $variant:ident = $wire:literal $(| $alias:literal)* ),+ $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vdoc])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownCode;

            fn from_str(s: &str) -> Result<$name, UnknownCode> {
                match s {
                    $($wire $(| $alias)* => Ok($name::$variant),)+
                    _ => Err(UnknownCode { kind: $kind, value: s.to_owned() }),
                }
            }
        }

        #[cfg(feature = "serde")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        #[cfg(feature = "serde")]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                name.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

closed_set! {
    /// Where a task is in its life.
    TaskState, "task state" {
        /// Waiting for a peer (or for its retry back-off to pass).
        Queued = "queued",
        /// Sent to a peer, which has not said it started.
        Assigned = "assigned",
        /// The peer said it started.
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
        TimedOut = "timed_out",
    }
}

impl TaskState {
    /// Whether the task has ended.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Cancelled | TaskState::TimedOut
        )
    }
}

closed_set! {
    /// How one attempt (one assignment to a peer) ended.
    AttemptEnd, "attempt end" {
        Completed = "completed",
        /// The run failed (the attempt's error says why).
        Failed = "failed",
        /// Its peer died or disconnected.
        PeerLost = "peer_lost",
        /// Its peer gave it back unfinished.
        Returned = "returned",
        /// After a coordinator restart its peer did not claim it in time.
        Unclaimed = "unclaimed",
        Cancelled = "cancelled",
        TimedOut = "timed_out",
        /// Its peer's result came after the attempt was no longer current.
        Stale = "stale",
    }
}

closed_set! {
    /// What a worker (peer) is doing, as operators see it.
    WorkerStatus, "worker status" {
        /// Heartbeating on time and taking work.
        Healthy = "healthy",
        /// Heartbeats more than two intervals late (it is declared dead only
        /// at the heartbeat timeout). The dashboard calls it late.
        Unhealthy = "unhealthy" | "late",
        /// An operator paused it: it keeps its connection and running tasks
        /// and gets nothing new.
        Paused = "paused",
        /// It finishes what it runs and then leaves; it gets nothing new.
        Draining = "draining",
        /// Its results were found wrong too often: it gets nothing new until
        /// an operator clears it.
        Quarantined = "quarantined",
    }
}

closed_set! {
    /// Where a verified task's verification stands (see `sched::verify`).
    VerifyStatus, "verification status" {
        /// Replicas are running.
        Pending = "pending",
        /// A quorum of replicas agreed.
        Agreed = "agreed",
        /// One result passed its check on its own (Freivalds' for a matmul).
        SelfChecked = "self_checked",
        /// One result was accepted from a trusted worker (adaptive replication).
        Trusted = "trusted",
        /// Its type cannot be verified (sampled output): it ran once.
        Unverifiable = "unverifiable",
        /// No quorum within the bound of replicas: the task failed.
        NoQuorum = "no_quorum",
        /// The task ended without a verdict (a replica's failure, a cancel).
        Ended = "ended",
    }
}

closed_set! {
    /// How one replica's result was judged.
    Verdict, "replica verdict" {
        /// Not judged yet.
        Pending = "pending",
        /// In the quorum, or passed its check.
        Valid = "valid",
        /// Outside the quorum, or failed its check.
        Invalid = "invalid",
        /// Accepted without a check, on its worker's trust.
        Unverified = "unverified",
        /// Not judged: the task ended first.
        Unjudged = "unjudged",
    }
}

closed_set! {
    /// Why the coordinator closed a WebSocket connection. Each has its close
    /// code (RFC 6455 § 7.4, and 4000–4999 for our own).
    CloseReason, "close reason" {
        /// The coordinator is shutting down (1001).
        GoingAway = "shutdown",
        /// The peer broke the WebSocket protocol (1002).
        ProtocolError = "protocol error",
        /// A text frame that is not UTF-8 (1007).
        InvalidPayload = "invalid payload",
        /// A missing or wrong token or credential (1008).
        Unauthorized = "unauthorized",
        /// A frame or message over the size limit (1009).
        TooBig = "message too big",
        /// A newer session registered with the same id (4000).
        Replaced = "replaced by a new session",
        /// No heartbeat within the timeout (4001).
        HeartbeatTimeout = "heartbeat timeout",
        /// The connection did not finish its handshake or register in time,
        /// or went silent for the idle timeout (4002).
        Idle = "registration timeout",
        /// The coordinator holds too many partly received messages: retry
        /// later (1013).
        TryAgainLater = "try again later",
        /// This coordinator is a standby: the `error` before the close names
        /// the leader (4003).
        NotLeader = "not leader",
        /// An operator drained the worker and it finished its work: it
        /// leaves and does not reconnect (4004).
        Drained = "drained by an operator",
    }
}

impl CloseReason {
    /// The WebSocket close code.
    pub const fn code(self) -> u16 {
        match self {
            CloseReason::GoingAway => 1001,
            CloseReason::ProtocolError => 1002,
            CloseReason::InvalidPayload => 1007,
            CloseReason::Unauthorized => 1008,
            CloseReason::TooBig => 1009,
            CloseReason::Replaced => 4000,
            CloseReason::HeartbeatTimeout => 4001,
            CloseReason::Idle => 4002,
            CloseReason::TryAgainLater => 1013,
            CloseReason::NotLeader => 4003,
            CloseReason::Drained => 4004,
        }
    }
}
