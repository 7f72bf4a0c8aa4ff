//! The open sets: named constants for the codes this build uses, and room
//! for codes it does not know (from peers, or from a newer coordinator).

use std::borrow::{Borrow, Cow};
use std::fmt;

/// Declares an open set: a newtype over the name with constants.
macro_rules! open_set {
    (
        $(#[$doc:meta])*
        $name:ident {
            $( $(#[$cdoc:meta])* $konst:ident = $wire:literal ),+ $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Cow<'static, str>);

        impl $name {
            $( $(#[$cdoc])* pub const $konst: $name = $name(Cow::Borrowed($wire)); )+

            /// Every code this build names, for documentation and validation.
            pub const KNOWN: &'static [$name] = &[$($name::$konst),+];

            /// A code by name: one of the constants when it is one, else kept as given.
            pub fn new(name: impl Into<String> + AsRef<str>) -> $name {
                match Self::KNOWN.iter().find(|k| k.as_str() == name.as_ref()) {
                    Some(known) => known.clone(),
                    None => $name(Cow::Owned(name.into())),
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Whether this build names the code.
            pub fn is_known(&self) -> bool {
                Self::KNOWN.contains(self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> $name {
                $name::new(s)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> $name {
                $name::new(s)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
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
                String::deserialize(d).map($name::new)
            }
        }
    };
}

open_set! {
    /// Why a run or a task failed. Executors, the scheduler and peers all
    /// speak these; a peer may send a code of its own, which is kept.
    FailureCode {
        /// The task's input is malformed or out of range.
        INVALID_INPUT = "invalid_input",
        /// The task asks for more than the executor's limits allow.
        LIMIT_EXCEEDED = "limit_exceeded",
        /// The peer lacks what the task needs (a model, a GPU).
        UNAVAILABLE = "unavailable",
        /// A run stopped at its time limit on the peer.
        TIMED_OUT = "timed_out",
        CANCELLED = "cancelled",
        /// The executor failed for a reason of its own (a driver error).
        INTERNAL = "internal",
        EXECUTOR_PANICKED = "executor_panicked",
        /// The peer has no executor for the task type.
        UNSUPPORTED_TASK_TYPE = "unsupported_task_type",
        /// The attempt's peer died, disconnected or did not reclaim it.
        PEER_LOST = "peer_lost",
        /// The peer gave the task back unfinished.
        RETURNED = "returned",
        /// Too many failed attempts.
        ATTEMPTS_EXHAUSTED = "attempts_exhausted",
        /// The task waited longer than its queue timeout.
        QUEUE_TIMEOUT = "queue_timeout",
        /// The task ran longer than its run timeout.
        RUN_TIMEOUT = "run_timeout",
        /// A streamed task lost its peer after output had reached the client.
        STREAM_INTERRUPTED = "stream_interrupted",
        /// Replicas of a verified task did not agree.
        NO_QUORUM = "no_quorum",
        /// The coordinator has no record of the task.
        UNKNOWN_TASK = "unknown_task",
        /// A failure whose code was not recorded.
        FAILED = "failed",
    }
}

impl FailureCode {
    /// Whether a failure with this code is retried when the peer does not
    /// say: only the peer's own trouble is worth another peer's attempt.
    pub fn retryable_by_default(&self) -> bool {
        [FailureCode::UNAVAILABLE, FailureCode::INTERNAL].contains(self)
    }

    /// Whether a failure with this code ends the task as timed out rather than failed.
    pub fn is_timeout(&self) -> bool {
        [FailureCode::TIMED_OUT, FailureCode::QUEUE_TIMEOUT, FailureCode::RUN_TIMEOUT]
            .contains(self)
    }
}

open_set! {
    /// Why the coordinator refused a message or a request (the wire's `error`
    /// messages and the HTTP API's `error_code`).
    ErrorCode {
        MALFORMED_JSON = "malformed_json",
        MISSING_MSG_TYPE = "missing_msg_type",
        UNKNOWN_MSG_TYPE = "unknown_msg_type",
        INVALID_MESSAGE = "invalid_message",
        UNSUPPORTED_FRAME = "unsupported_frame",
        /// A frame over the size limit (the connection is closed with 1009).
        FRAME_TOO_LARGE = "frame_too_large",
        NOT_REGISTERED = "not_registered",
        ALREADY_REGISTERED = "already_registered",
        WRONG_ROLE = "wrong_role",
        PEER_ID_MISMATCH = "peer_id_mismatch",
        UNKNOWN_TASK = "unknown_task",
        DUPLICATE_TASK_ID = "duplicate_task_id",
        /// Out of room (queue, store, budget); `retry_after_s` says when to retry.
        BUSY = "busy",
        TASK_FINISHED = "task_finished",
        UNAUTHORIZED = "unauthorized",
        /// The id is bound to another credential.
        ID_TAKEN = "id_taken",
        /// A worker's own credential was revoked.
        REVOKED = "revoked",
        /// The coordinator is a standby; the leader's address is given.
        NOT_LEADER = "not_leader",
    }
}
